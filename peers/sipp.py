"""Run sipp (Debian package sip-tester, 3.6.1) as a scripted UAC or UAS against loopback peers.

Two entry points:

* :func:`run_sipp` runs a scenario to completion (a UAC, or a UAS expecting a known number of calls)
  and returns a :class:`SippResult`.
* :class:`SippProcess` starts sipp in the background (usually a UAS) and gives a result after it exits.

Every run writes its traces into its own directory: ``messages.log`` (``-trace_msg``), ``errors.log``
(``-trace_err``), ``stats.csv`` (``-trace_stat``, parsed into :class:`SippStats`) and ``actions.log``
(``<log>`` actions, ``-trace_logs``). sipp is run with ``-nostdin``, so it needs no terminal.

Scenario conventions (see the header comment of each file in ``peers/scenarios/``):

* ``-s SERVICE`` fills ``[service]``, the Request-URI user of a UAC's INVITE/OPTIONS.
* ``play_pcap_audio="[pcap]"`` takes the pcap from ``-key pcap PATH``; when a scenario contains
  ``[pcap]`` and no key is given, a PCMU tone pcap of ``audio_seconds`` is written into the run's
  directory and ``-d`` (the length of ``<pause/>``) is set to the audio length plus 500 ms.
* ``[authentication]`` uses ``-au``/``-ap`` (``auth=(user, password)``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from peers.audio import write_test_pcap
from peers.ports import HOST, free_port_block, free_sip_port, is_port_bound
from peers.proc import Lifecycle, ManagedProcess, ProcessError
from peers.sipmsg import SipMessage, parse_sipp_message_log

SIPP = "sipp"
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

Transport = Literal["udp", "tcp"]
_TRANSPORT_FLAG: dict[str, str] = {"udp": "u1", "tcp": "t1"}

# sipp's documented exit codes.
EXIT_ALL_OK = 0
EXIT_SOME_FAILED = 1
EXIT_INTERNAL_COMMAND = 97
EXIT_NO_CALLS = 99


def scenario_path(name: str) -> Path:
    """Path of a scenario in ``peers/scenarios`` (``.xml`` may be omitted)."""
    path = SCENARIO_DIR / (name if name.endswith(".xml") else name + ".xml")
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


@dataclass(frozen=True)
class SippStats:
    """Cumulative counters from the last line of sipp's ``-trace_stat`` CSV."""

    counters: Mapping[str, str]

    def count(self, name: str) -> int:
        """Cumulative value of counter ``name`` (e.g. ``"FailedUnexpectedMessage"``), 0 if absent."""
        value = self.counters.get(f"{name}(C)", self.counters.get(name, "0"))
        try:
            return int(float(value))
        except ValueError:
            return 0

    @property
    def successful(self) -> int:
        """Calls that reached the end of the scenario."""
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        """Calls that failed for any reason."""
        return self.count("FailedCall")

    @property
    def created(self) -> int:
        """Calls created (incoming + outgoing)."""
        return self.count("TotalCallCreated")

    def failure_reasons(self) -> dict[str, int]:
        """Non-zero ``Failed*`` counters, e.g. ``{"FailedRegexpDoesntMatch": 1}``."""
        reasons: dict[str, int] = {}
        for key in self.counters:
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
                value = self.count(key[:-3])
                if value:
                    reasons[key[:-3]] = value
        return reasons


def parse_stat_file(path: Path) -> SippStats | None:
    """Parse the final line of a sipp ``-trace_stat`` CSV (``;``-separated), or None if absent/empty."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=";") if row]
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    return SippStats(dict(zip(header, last, strict=False)))


@dataclass
class SippResult:
    """Outcome of one sipp run: exit status, output, trace files and parsed statistics."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    message_log: Path
    error_log: Path
    stat_file: Path
    actions_log: Path
    expected_calls: int
    stats: SippStats | None = field(default=None)

    @property
    def ok(self) -> bool:
        """Exit status 0 *and* as many successful calls as expected and none failed.

        sipp exits 0 in some error cases (e.g. ``-t l1`` without TLS support, no call made), so the
        exit status alone is not enough.
        """
        return (
            self.returncode == EXIT_ALL_OK
            and self.stats is not None
            and self.stats.failed == 0
            and self.stats.successful >= self.expected_calls
        )

    def messages(self) -> list[SipMessage]:
        """All SIP messages sipp sent and received, in order, from ``-trace_msg``."""
        try:
            return parse_sipp_message_log(self.message_log.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def received(self) -> list[SipMessage]:
        """Messages sipp received."""
        return [m for m in self.messages() if m.direction == "received"]

    def sent(self) -> list[SipMessage]:
        """Messages sipp sent (retransmissions included)."""
        return [m for m in self.messages() if m.direction == "sent"]

    def statuses_received(self, method: str | None = None) -> list[int]:
        """Status codes of received responses (optionally only those whose CSeq method is ``method``)."""
        return [
            m.status
            for m in self.received()
            if m.status is not None and (method is None or m.method == method.upper())
        ]

    def requests_received(self) -> list[str]:
        """Methods of received requests, in order."""
        return [m.method for m in self.received() if not m.is_response]

    def errors_text(self) -> str:
        """Contents of ``-trace_err`` (unexpected messages, regexp failures, ...)."""
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def actions_text(self) -> str:
        """Contents of the ``<log>`` action file."""
        try:
            return self.actions_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """Human summary for assertion messages."""
        stats = self.stats
        flow = [
            f"{m.direction[:4]} {m.start_line if not m.is_response else f'{m.status} ({m.method})'}"
            for m in self.messages()
        ]
        return (
            f"sipp exit {self.returncode}; "
            + (
                f"successful={stats.successful} failed={stats.failed} reasons={stats.failure_reasons()}"
                if stats
                else "no stats"
            )
            + f"\ncommand: {' '.join(self.argv)}\nflow:\n  "
            + "\n  ".join(flow[-40:])
            + f"\nerrors:\n{self.errors_text()[-3000:]}\nstderr:\n{self.stderr[-2000:]}"
        )

    def assert_ok(self) -> None:
        """Raise AssertionError with :meth:`describe` unless :attr:`ok`."""
        if not self.ok:
            raise AssertionError(self.describe())


def build_sipp_argv(
    scenario: Path | str,
    remote: str | None,
    *,
    workdir: Path,
    local_port: int,
    media_port: int,
    transport: Transport = "udp",
    calls: int = 1,
    rate: float | None = None,
    service: str | None = None,
    keys: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    rtp_echo: bool = False,
    duration_ms: int | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Assemble a non-interactive sipp command line (see :func:`run_sipp` for the arguments).

    ``scenario`` is a path to an XML file, or ``"sn:NAME"`` for a built-in scenario (``sn:uas``).
    """
    argv = [SIPP]
    if remote:
        argv.append(remote)
    if isinstance(scenario, str) and scenario.startswith("sn:"):
        argv += ["-sn", scenario[3:]]
    else:
        argv += ["-sf", str(scenario)]
    argv += [
        "-i",
        HOST,
        "-mi",
        HOST,
        "-bind_local",
        "-p",
        str(local_port),
        "-mp",
        str(media_port),
        "-t",
        _TRANSPORT_FLAG[transport],
        "-m",
        str(calls),
        "-timeout",
        f"{max(1, round(timeout))}s",
        "-timeout_error",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(workdir / "messages.log"),
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-trace_stat",
        "-stf",
        str(workdir / "stats.csv"),
        "-fd",
        "1",
        "-trace_logs",
        "-log_file",
        str(workdir / "actions.log"),
    ]
    if rate is not None:
        argv += ["-r", str(rate), "-rp", "1000"]
    if service is not None:
        argv += ["-s", service]
    for key, value in (keys or {}).items():
        argv += ["-key", key, value]
    if auth is not None:
        argv += ["-au", auth[0], "-ap", auth[1]]
    if rtp_echo:
        argv.append("-rtp_echo")
    if duration_ms is not None:
        argv += ["-d", str(duration_ms)]
    argv += list(extra_args)
    return argv


def _prepare_keys(
    scenario: Path | str,
    workdir: Path,
    keys: Mapping[str, str] | None,
    audio_seconds: float,
    duration_ms: int | None,
) -> tuple[dict[str, str], int | None]:
    """Write the tone pcap for scenarios that use ``[pcap]`` and derive ``-d`` from its length."""
    merged = dict(keys or {})
    if (
        isinstance(scenario, Path)
        and "[pcap]" in scenario.read_text(errors="replace")
        and "pcap" not in merged
    ):
        pcap = workdir / "tone_pcmu.pcap"
        write_test_pcap(pcap, audio_seconds)
        merged["pcap"] = str(pcap)
        if duration_ms is None:
            duration_ms = round(audio_seconds * 1000) + 500
    return merged, duration_ms


class SippProcess(Lifecycle):
    """sipp running in the background; use as a context manager (stopped with SIGUSR1, then killed).

    Ports default to fresh free ones: ``local_port`` (SIP, free on UDP and TCP) and ``media_port``
    (start of 4 free UDP ports: sipp binds the audio port and audio+2 for video).
    """

    def __init__(
        self,
        scenario: Path | str,
        remote: str | None = None,
        *,
        workdir: Path,
        local_port: int | None = None,
        media_port: int | None = None,
        transport: Transport = "udp",
        calls: int = 1,
        rate: float | None = None,
        service: str | None = None,
        keys: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        rtp_echo: bool = False,
        audio_seconds: float = 3.0,
        duration_ms: int | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        name: str = "sipp",
    ) -> None:
        if shutil.which(SIPP) is None:
            raise ProcessError("sipp not installed (Debian package sip-tester)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.local_port = local_port if local_port is not None else free_sip_port()
        self.media_port = media_port if media_port is not None else free_port_block(4)
        self.transport: Transport = transport
        self.calls = calls
        self.timeout = timeout
        self.rtp_echo = rtp_echo
        merged_keys, duration_ms = _prepare_keys(scenario, workdir, keys, audio_seconds, duration_ms)
        self.argv = build_sipp_argv(
            scenario,
            remote,
            workdir=workdir,
            local_port=self.local_port,
            media_port=self.media_port,
            transport=transport,
            calls=calls,
            rate=rate,
            service=service,
            keys=merged_keys,
            auth=auth,
            rtp_echo=rtp_echo,
            duration_ms=duration_ms,
            timeout=timeout,
            extra_args=extra_args,
        )
        self.process = ManagedProcess(
            self.argv, name=name, logdir=workdir, cwd=workdir, stop_signal=signal.SIGUSR1, stop_timeout=3.0
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:<local_port>``, what a peer sends SIP to."""
        return f"{HOST}:{self.local_port}"

    def uri(self, user: str = "service") -> str:
        """A SIP URI reaching this sipp (with ``;transport=tcp`` when it listens on TCP)."""
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@{self.address}{suffix}"

    def start(self, *, ready_timeout: float = 10.0) -> None:
        """Start sipp and wait until its SIP port (and echo port, if any) is bound."""
        self.process.start()
        deadline = time.monotonic() + ready_timeout
        proto = "udp" if self.transport == "udp" else "tcp"
        while True:
            ready = is_port_bound(self.local_port, proto) and (
                not self.rtp_echo or is_port_bound(self.media_port, "udp")
            )
            if ready:
                return
            if not self.process.is_running():
                raise ProcessError(f"sipp exited early:\n{self.result().describe()}")
            if time.monotonic() > deadline:
                self.process.stop()
                raise ProcessError(f"sipp did not bind {proto} port {self.local_port} in {ready_timeout}s")
            time.sleep(0.02)

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to finish by itself (default: its ``-timeout`` plus 10 s) and return the result."""
        try:
            self.process.wait(timeout=timeout if timeout is not None else self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.process.stop()
            raise AssertionError(f"sipp did not exit in time:\n{self.result().describe()}") from None
        return self.result()

    def stop(self) -> SippResult:
        """Stop sipp if still running and return the result."""
        self.process.stop()
        return self.result()

    def result(self) -> SippResult:
        """The result as of now (complete once sipp has exited)."""
        code = self.process.returncode
        return SippResult(
            argv=self.argv,
            returncode=-1 if code is None else code,
            stdout=self.process.stdout_text(),
            stderr=self.process.stderr_text(),
            workdir=self.workdir,
            message_log=self.workdir / "messages.log",
            error_log=self.workdir / "errors.log",
            stat_file=self.workdir / "stats.csv",
            actions_log=self.workdir / "actions.log",
            expected_calls=self.calls,
            stats=parse_stat_file(self.workdir / "stats.csv"),
        )


def run_sipp(
    scenario: Path | str,
    remote: str | None,
    *,
    workdir: Path,
    local_port: int | None = None,
    media_port: int | None = None,
    transport: Transport = "udp",
    calls: int = 1,
    rate: float | None = None,
    service: str | None = None,
    keys: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    rtp_echo: bool = False,
    audio_seconds: float = 3.0,
    duration_ms: int | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> SippResult:
    """Run sipp until it exits (``-m calls``, ``-timeout timeout`` with ``-timeout_error``).

    ``remote`` is ``host:port`` of the peer (None for a UAS). ``service`` fills ``[service]``; ``keys``
    are ``-key`` keywords; ``auth`` gives ``-au``/``-ap`` for ``[authentication]``; ``rate`` is calls
    per second. ``workdir`` receives the traces (one directory per run). Returns a :class:`SippResult`
    whatever the outcome: call :meth:`SippResult.assert_ok` to require success.
    """
    proc = SippProcess(
        scenario,
        remote,
        workdir=workdir,
        local_port=local_port,
        media_port=media_port,
        transport=transport,
        calls=calls,
        rate=rate,
        service=service,
        keys=keys,
        auth=auth,
        rtp_echo=rtp_echo,
        audio_seconds=audio_seconds,
        duration_ms=duration_ms,
        timeout=timeout,
        extra_args=extra_args,
    )
    # On a hang the context exit stops sipp; the result then shows how far it got.
    with proc.process, contextlib.suppress(subprocess.TimeoutExpired):
        proc.process.wait(timeout=timeout + 10)
    return proc.result()
