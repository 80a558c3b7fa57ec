"""baresip 1.0.0 (Debian package baresip) as a scripted softphone on loopback.

:class:`Baresip` writes a config directory in a tmp dir and runs ``baresip -f DIR`` with no terminal UI:

* microphone = a WAV file (``audio_source aufile,<wav>``; 8 kHz mono 16-bit, see
  :func:`peers.audio.write_test_wav`). In 1.0.0 the aufile source **ends the call when the file
  ends** ("aufile: end of file" -> hang-up), so the WAV length bounds the call length;
* what it hears is recorded by the ``sndfile`` audio filter into ``<workdir>/recordings/
  dump-<time>-dec.wav`` (decoded, 8 kHz for G.711; ``-enc.wav`` is what it sent). 1.0.0 has no
  aufile *player* (``audio_player aufile,out.wav`` only exists from baresip 1.1), so the player is
  the ``aubridge`` module writing into a bridge nobody reads;
* control over ``ctrl_tcp`` (JSON in netstrings) on a random port: :meth:`command` runs any baresip
  command (``dial``, ``hangup``, ``quit``, ``answer``, ...) and the events (``CALL_ESTABLISHED``,
  ``CALL_CLOSED``, ...) are collected by a reader thread, see :meth:`wait_for_event`;
* ``dial`` (sent over ctrl_tcp as soon as it is connected; ``exec_commands=["/dial URI"]`` is the
  ``-e`` way, but events before the control connection are lost) and ``quit_after`` (``-t
  SECONDS``) for fully non-interactive runs; ``answer_mode="auto"`` (account parameter
  ``;answermode=auto``) to answer incoming calls;
* ``net_interface lo``: without it baresip puts the machine's first interface address into ``c=``;
* TLS: SIP over TLS needs nothing on the client side in 1.0.0; ``sip_cafile`` is set to the test CA
  but **1.0.0 does not verify the server certificate at all** (libre accepts any peer certificate and
  ``sip_verify_server`` only appeared in later versions). ``sip_certificate`` (cert+key PEM) is only
  needed to *accept* TLS, on port ``sip_port + 1`` (baresip's TLS listener is always SIP port + 1).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peers.ports import HOST, free_port_block, free_tcp_port, is_port_bound
from peers.proc import Lifecycle, ManagedProcess, ProcessError

BARESIP = "baresip"
MODULE_PATH = "/usr/lib/baresip/modules"
AnswerMode = Literal["manual", "early", "auto"]
Transport = Literal["udp", "tcp", "tls"]


@dataclass(frozen=True)
class BaresipEvent:
    """An event or command response from ctrl_tcp."""

    data: Mapping[str, Any]

    @property
    def type(self) -> str:
        """Event type (``CALL_ESTABLISHED``, ``CALL_CLOSED``, ...), or "" for a command response."""
        return str(self.data.get("type", ""))

    @property
    def is_response(self) -> bool:
        """True for the response to a command."""
        return bool(self.data.get("response"))


@dataclass
class _CtrlState:
    messages: list[BaresipEvent] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False


def _free_sip_port_with_tls_neighbour() -> int:
    """A port P free on UDP and TCP with P+1 free on TCP (baresip listens for TLS on P+1)."""
    for _ in range(100):
        port = free_port_block(2, even=False)
        probes = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(sock)
                sock.bind((HOST, p))
            return port
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
    raise RuntimeError("no free port pair for baresip SIP/TLS")


class Baresip(Lifecycle):
    """A baresip instance for one test (context manager).

    Args:
        workdir: config dir, logs and recordings go here.
        user / domain / password: the account AOR ``sip:user@domain``; ``password`` enables digest auth.
        registrar: register to this ``host:port`` (``regint`` seconds); None = no registration.
        transport: transport for the account's requests (``;transport=`` on the AOR/outbound).
        outbound: optional outbound proxy URI (``sip:host:port;transport=...``), all requests go there.
        audio_wav: WAV played as the microphone (None = no source: ``ausine`` is not loaded).
        answer_mode: ``"auto"`` answers incoming calls at once.
        dial: URI dialled right after start (over ctrl_tcp once connected, so no event is missed).
        exec_commands: commands run at start with ``-e`` (e.g. ``"/dial sip:..."``); their events may
            happen before the control connection exists.
        quit_after: ``-t`` seconds after which baresip quits by itself.
        ca_file / certificate: ``sip_cafile`` / ``sip_certificate`` (cert+key PEM, needed to accept TLS).
        extra_config: more ``key value`` lines for the config file.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "alice",
        domain: str = HOST,
        password: str | None = None,
        registrar: str | None = None,
        regint: int = 3600,
        transport: Transport = "udp",
        outbound: str | None = None,
        audio_wav: Path | None = None,
        answer_mode: AnswerMode = "manual",
        dial: str | None = None,
        exec_commands: Sequence[str] = (),
        quit_after: float | None = None,
        ca_file: Path | None = None,
        certificate: Path | None = None,
        extra_config: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 10.0,
    ) -> None:
        if shutil.which(BARESIP) is None:
            raise ProcessError("baresip not installed (Debian package baresip)")
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.recordings_dir = workdir / "recordings"
        self.user = user
        self.domain = domain
        self.password = password
        self.registrar = registrar
        self.regint = regint
        self.transport: Transport = transport
        self.outbound = outbound
        self.audio_wav = audio_wav
        self.answer_mode: AnswerMode = answer_mode
        self.dial_uri = dial
        self.exec_commands = list(exec_commands)
        self.quit_after = quit_after
        self.ca_file = ca_file
        self.certificate = certificate
        self.extra_config = dict(extra_config or {})
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.sip_port = _free_sip_port_with_tls_neighbour()
        self.tls_port = self.sip_port + 1
        self.rtp_port_min = free_port_block(4)
        self.rtp_port_max = self.rtp_port_min + 3
        self.ctrl_port = free_tcp_port()
        self.process: ManagedProcess | None = None
        self._ctrl: socket.socket | None = None
        self._ctrl_state = _CtrlState()
        self._reader: threading.Thread | None = None
        self._token = 0

    # -- config --------------------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        """The account's address of record."""
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact_uri(self) -> str:
        """A URI that reaches this baresip directly over UDP (for a peer calling it)."""
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    def account_line(self) -> str:
        """The line of the ``accounts`` file."""
        transport = f";transport={self.transport}" if self.transport != "udp" else ""
        params = [f"answermode={self.answer_mode}", "audio_codecs=pcmu,pcma", "ptime=20"]
        if self.password is not None:
            params += [f"auth_user={self.user}", f"auth_pass={self.password}"]
        if self.registrar is not None:
            params.append(f"regint={self.regint}")
            params.append(f'outbound="sip:{self.registrar};transport={self.transport}"')
        else:
            params.append("regint=0")
            if self.outbound is not None:
                params.append(f'outbound="{self.outbound}"')
        return f"<{self.aor}{transport}>;" + ";".join(params)

    def config_text(self) -> str:
        """The ``config`` file."""
        lines = {
            "poll_method": "epoll",
            "sip_listen": f"{HOST}:{self.sip_port}",
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "aubridge,sink",
            "audio_alert": "aubridge,sink",
            "audio_source": f"aufile,{self.audio_wav}" if self.audio_wav else "aubridge,silence",
            "audio_level": "no",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "auenc_format": "s16",
            "audec_format": "s16",
            "audio_buffer": "20-160",
            "rtp_tos": "184",
            "rtp_ports": f"{self.rtp_port_min}-{self.rtp_port_max}",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "5-10",
            "rtp_stats": "yes",
            "net_interface": HOST,
            "module_path": MODULE_PATH,
            "snd_path": str(self.recordings_dir),
            "ctrl_tcp_listen": f"{HOST}:{self.ctrl_port}",
        }
        if self.ca_file is not None:
            lines["sip_cafile"] = str(self.ca_file)
        if self.certificate is not None:
            lines["sip_certificate"] = str(self.certificate)
        lines.update(self.extra_config)
        modules = ["g711.so", "aufile.so", "aubridge.so", "sndfile.so"]
        text = [f"{key}\t{value}" for key, value in lines.items()]
        text += [f"module\t{m}" for m in modules]
        text += ["module_tmp\tuuid.so", "module_tmp\taccount.so"]
        text += ["module_app\tmenu.so", "module_app\tctrl_tcp.so"]
        return "# generated by peers/baresip.py\n" + "\n".join(text) + "\n"

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start baresip, wait for "baresip is ready" and connect to ctrl_tcp."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config").write_text(self.config_text())
        (self.config_dir / "accounts").write_text(self.account_line() + "\n")
        (self.config_dir / "contacts").write_text("")
        argv = [BARESIP, "-f", str(self.config_dir)]
        for command in self.exec_commands:
            argv += ["-e", command]
        if self.quit_after is not None:
            argv += ["-t", str(max(1, round(self.quit_after)))]
        argv += self.extra_args
        self.process = ManagedProcess(
            argv, name="baresip", logdir=self.workdir, cwd=self.workdir, stop_timeout=5.0
        )
        self.process.start()
        self.process.wait_for_output("baresip is ready", timeout=self.ready_timeout, stream="stdout")
        deadline = time.monotonic() + self.ready_timeout
        while not is_port_bound(self.ctrl_port, "tcp"):
            if not self.process.is_running() or time.monotonic() > deadline:
                # A run with -e dial and a short -t may have quit already: that is not an error.
                return
            time.sleep(0.02)
        self._connect_ctrl()
        if self.dial_uri is not None:
            # Dialled over ctrl_tcp rather than with -e, so that no call event is missed.
            self.dial(self.dial_uri)

    def _connect_ctrl(self) -> None:
        sock = socket.create_connection((HOST, self.ctrl_port), timeout=5)
        sock.settimeout(None)
        self._ctrl = sock
        self._reader = threading.Thread(target=self._read_ctrl, name="baresip-ctrl", daemon=True)
        self._reader.start()

    def _read_ctrl(self) -> None:
        assert self._ctrl is not None
        buf = b""
        state = self._ctrl_state
        try:
            while True:
                chunk = self._ctrl.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0 or not buf[:colon].isdigit():
                        break
                    length = int(buf[:colon])
                    if len(buf) < colon + 1 + length + 1:
                        break
                    payload = buf[colon + 1 : colon + 1 + length]
                    buf = buf[colon + 1 + length + 1 :]  # skip the trailing ","
                    with contextlib.suppress(ValueError):
                        event = BaresipEvent(json.loads(payload.decode("utf-8", errors="replace")))
                        with state.cond:
                            state.messages.append(event)
                            state.cond.notify_all()
        except OSError:
            pass
        finally:
            with state.cond:
                state.closed = True
                state.cond.notify_all()

    def stop(self) -> None:
        """Ask baresip to quit, then terminate/kill it; close the control connection."""
        if self.process is not None and self.process.is_running() and self._ctrl is not None:
            with contextlib.suppress(OSError, TimeoutError):
                self._send_command("quit", "")
                self.process.wait(timeout=3)
        if self.process is not None:
            self.process.stop_signal = signal.SIGTERM
            self.process.stop()
        if self._ctrl is not None:
            with contextlib.suppress(OSError):
                self._ctrl.close()
        if self._reader is not None:
            self._reader.join(timeout=2)

    def wait(self, timeout: float) -> int:
        """Wait for baresip to exit by itself (after ``quit_after``); returns its exit status."""
        if self.process is None:
            raise ProcessError("baresip not started")
        return self.process.wait(timeout=timeout)

    # -- control -------------------------------------------------------------------------------------

    def _send_command(self, command: str, params: str) -> str:
        if self._ctrl is None:
            raise ProcessError("no ctrl_tcp connection to baresip")
        self._token += 1
        token = f"t{self._token}"
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._ctrl.sendall(str(len(payload)).encode() + b":" + payload + b",")
        return token

    def command(self, command: str, params: str = "", *, timeout: float = 5.0) -> BaresipEvent:
        """Run a baresip command (e.g. ``dial``, ``hangup``, ``answer``) and return its response."""
        token = self._send_command(command, params)
        return self._wait(
            lambda e: e.is_response and e.data.get("token") == token, timeout, f"response to {command}"
        )

    def dial(self, uri: str) -> BaresipEvent:
        """Place a call to ``uri``."""
        return self.command("dial", uri)

    def hangup(self) -> BaresipEvent:
        """Hang up the current call."""
        return self.command("hangup")

    def events(self) -> list[BaresipEvent]:
        """Events (not command responses) received so far."""
        with self._ctrl_state.cond:
            return [e for e in self._ctrl_state.messages if not e.is_response]

    def wait_for_event(self, event_type: str, *, timeout: float = 10.0) -> BaresipEvent:
        """Wait for an event of ``event_type`` (e.g. ``CALL_ESTABLISHED``, ``CALL_CLOSED``)."""
        return self._wait(lambda e: e.type == event_type, timeout, f"event {event_type}")

    def _wait(self, predicate: Any, timeout: float, what: str) -> BaresipEvent:
        state = self._ctrl_state
        deadline = time.monotonic() + timeout
        with state.cond:
            while True:
                for event in state.messages:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or state.closed:
                    seen = [e.type or "response" for e in state.messages]
                    raise TimeoutError(f"baresip: no {what} within {timeout}s (seen: {seen})")
                state.cond.wait(remaining)

    # -- output --------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """baresip's stdout and stderr."""
        if self.process is None:
            return ""
        return self.process.stdout_text() + self.process.stderr_text()

    def recordings(self, kind: Literal["dec", "enc"] = "dec") -> list[Path]:
        """WAV files written by the sndfile filter: ``dec`` = what baresip heard, ``enc`` = what it sent."""
        return sorted(self.recordings_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def recording(self) -> Path:
        """The most recent "heard" recording; raises FileNotFoundError if there is none."""
        files = self.recordings()
        if not files:
            raise FileNotFoundError(
                f"no recording in {self.recordings_dir}; baresip log:\n{self.log_text()[-3000:]}"
            )
        return files[-1]
