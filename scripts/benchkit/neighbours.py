"""``bench_neighbours.py``'s core: the real server under CPU-bound neighbours, called by a softphone.

One *run* is one priority setting of the inference process (:class:`Setting`: ``inference_nice`` in
the normal class, or ``inference_sched = "idle"``) with a number of neighbours, and goes:

1. :class:`Neighbours` starts the neighbours: each a plain ``python3 -c "while True: pass"`` at nice
   0, the kind of program that keeps a core busy and that the issue says starved the models;
2. ``sipagent serve --mode agent`` starts on loopback (argv, ports and config file from
   :class:`peers.sipagent_proc.SipagentServer`) and :func:`run_setting` takes the seconds from the
   spawn to its "listening on" log line (it loads the models before it listens);
3. :func:`measure_call`, as many times as asked, one call after another: baresip dials the agent and
   plays :func:`caller_audio` (a fixture's human speech, then ~8 s of that recording's own room
   tone) as its microphone while dumpcap captures loopback RTP. :func:`wire_latency` finds, on the
   wire, the caller's packet carrying the true end of speech (``fixtures/manifest.json``, by RTP
   timestamp from the caller's first packet) and the agent's first voiced packet after it; the
   server's per-call media summary (``Call.close``: "send error p50 X ms p99 Y ms") gives the media
   p99 of that call;
4. the server stops, then the neighbours.

Nothing here raises for a slow or failed run: a server that never listens, a call that is never
established or never answered, a missing media summary, all end up as fields of :class:`RunResult`
(``error``, ``CallResult.error``, ``answered=False``), so a table can always be printed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from benchkit.common import ROOT, machine, machine_busy
from peers.audio import write_wav
from peers.baresip import Baresip
from peers.capture import LoopbackCapture, is_rtp
from peers.pcap import UdpPacket
from peers.proc import Lifecycle, ManagedProcess, ProcessError
from peers.sipagent_proc import SipagentServer
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table

FIXTURES = ROOT / "fixtures"
DEFAULT_FIXTURE = "speech-librivox-0880.pcap"
#: What a neighbour runs: one core kept busy in pure Python, at nice 0, as any batch job would.
NEIGHBOUR_CODE = "while True: pass"
#: A decoded sample above this in an agent packet means the agent is talking (the interop tests' bar).
VOICED_PEAK = 2000
#: A reply is at least half a second of voiced packets after the end of speech: one click is none.
MIN_REPLY_PACKETS = 25
#: The room tone after the speech starts this long after the true end (the word's decay is past).
_ROOM_AFTER_END_S = 0.3
_RATE = 8000
_RTP_HEADER = 12
_CODECS = {0: "PCMU", 8: "PCMA"}
_LISTENING = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*listening on", re.MULTILINE)
_MEDIA = re.compile(r"call (\S+) media: .*send error p50 (\S+) ms p99 (\S+) ms")
_TURN_LATENCY = re.compile(r"call \S+ turn (\d+) latency: (\S+) ms")
_INFERENCE_PID = re.compile(r"inference process (\d+) serves the models")


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """The inference process's serving priority: the normal class at ``nice``, or SCHED_IDLE."""

    sched: Literal["normal", "idle"] = "normal"
    nice: int = 5

    @property
    def label(self) -> str:
        """``nice 5`` or ``idle`` (SCHED_IDLE ignores the nice value, so it is not shown)."""
        return "idle" if self.sched == "idle" else f"nice {self.nice}"

    def config_text(self) -> str:
        """The server's config file: only the priority, everything else at its default."""
        return f'[agent]\ninference_sched = "{self.sched}"\ninference_nice = {self.nice}\n'


#: The server's default (decision 0015), and what the test runs.
DEFAULT_SETTING = Setting("normal", 5)
DEFAULT_NICES = (0, 5, 10, 19)


# ---------------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class CallerAudio:
    """The caller's microphone: a WAV of speech then room tone, and where the speech truly ends."""

    wav: Path
    fixture: str
    speech_end_s: float
    seconds: float


def caller_audio(workdir: Path, fixture: str = DEFAULT_FIXTURE, *, tail_s: float = 8.0) -> CallerAudio:
    """The fixture's caller leg decoded to PCM, followed by ``tail_s`` of its own trailing room tone
    (looped), as ``tests/test_interop_agent.py`` builds it: the caller goes on "being there" without
    talking, and the call lasts long enough to hear a slow reply (baresip hangs up when the file ends).
    """
    entries = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    manifest = {entry["file"]: entry for entry in entries}
    if fixture not in manifest or not manifest[fixture].get("turns"):
        raise ValueError(f"{fixture}: not a fixture with turns in fixtures/manifest.json")
    truth = float(manifest[fixture]["turns"][0]["speech_end_s"])
    leg = load_caller_leg(FIXTURES / fixture)
    table = decode_table(leg.codec)
    speech = np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])
    # A recording that stops right after its speech still has its last 0.2 s of room to loop.
    start = min(round((truth + _ROOM_AFTER_END_S) * _RATE), speech.size - _RATE // 5)
    room = speech[start:]
    pcm = np.concatenate([speech, np.resize(room, round(tail_s * _RATE))]).astype(np.int16)
    workdir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(workdir / f"mic-{Path(fixture).stem}.wav", pcm, sample_rate=_RATE)
    return CallerAudio(wav=wav, fixture=fixture, speech_end_s=truth, seconds=pcm.size / _RATE)


# ---------------------------------------------------------------------------------- neighbours


class Neighbours(Lifecycle):
    """``count`` CPU-bound processes at nice 0, each in its own process group, killed on stop."""

    def __init__(self, count: int, workdir: Path) -> None:
        self.count = count
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []

    def start(self) -> None:
        """Start them all (they are busy from their first instruction: nothing to wait for)."""
        python = shutil.which("python3") or sys.executable
        for index in range(self.count):
            process = ManagedProcess(
                [python, "-c", NEIGHBOUR_CODE], name=f"neighbour{index}", logdir=self.workdir
            )
            self.processes.append(process)
            process.start()
            # Children inherit our nice value; a neighbour is an ordinary program at 0 whatever we run at.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, process.pid, 0)

    def stop(self) -> None:
        """Kill them (SIGTERM ends a busy loop at once)."""
        for process in self.processes:
            process.stop()

    def cpu_seconds(self) -> float:
        """CPU time they used so far (s), together."""
        return sum(cpu_seconds(process.pid) or 0.0 for process in self.processes)

    def running(self) -> int:
        """How many are still alive (all of them, unless something killed one)."""
        return sum(process.is_running() for process in self.processes)


# ---------------------------------------------------------------------------------- results


@dataclass
class CallResult:
    """One call as the caller heard it, and the server's media summary of it."""

    #: From the capture time of the caller's packet carrying the true end of speech to the agent's
    #: first voiced packet after it (s); None when the agent said nothing voiced after it.
    latency_s: float | None = None
    #: At least :data:`MIN_REPLY_PACKETS` voiced agent packets after the end of speech.
    answered: bool = False
    #: Voiced agent packets after the end of speech, and while the caller was still talking.
    voiced_packets: int = 0
    over_caller_packets: int = 0
    #: The server's "send error p50/p99" of this call (ms): how late its packets left.
    media_p50_ms: float | None = None
    media_p99_ms: float | None = None
    #: The server's own turn latency (from its estimate of the end of speech), ms, when logged.
    server_latency_ms: float | None = None
    #: Why the call could not be measured (not established, no capture, ...), else None.
    error: str | None = None


@dataclass
class RunResult:
    """One setting with its neighbours: start-up, calls, and what was seen of the box meanwhile."""

    setting: str
    sched: str
    nice: int
    neighbours: int
    #: Spawn → "listening on" (s); None when it never listened (``error`` says why).
    listen_s: float | None = None
    calls: list[CallResult] = field(default_factory=list)
    #: The inference process's threads as seen in /proc after the calls ("nice 5", "idle", ...).
    inference_seen: str | None = None
    #: The whole machine's busy share during the calls (all cores; other users' load shows here).
    busy: float | None = None
    #: CPU seconds the inference process and the neighbours (all together) used during the calls:
    #: the share each priority really got.
    inference_cpu_s: float | None = None
    neighbours_cpu_s: float | None = None
    #: CPU seconds the machine spent during the calls outside this benchmark's processes (another
    #: user's job, the kernel): more than a second or two means the run shared the box.
    others_cpu_s: float | None = None
    #: Neighbours still running at the end (a neighbour that died would make the run a lie).
    neighbours_alive: int = 0
    error: str | None = None
    #: The end of the server's log when something failed.
    log_tail: str | None = None

    @property
    def answered(self) -> int:
        """Calls that got a voiced reply."""
        return sum(call.answered for call in self.calls)

    @property
    def median_latency_s(self) -> float | None:
        """Median turn latency over the answered calls."""
        values = [c.latency_s for c in self.calls if c.answered and c.latency_s is not None]
        return statistics.median(values) if values else None

    @property
    def median_media_p99_ms(self) -> float | None:
        """Median over calls of each call's media p99."""
        values = [c.media_p99_ms for c in self.calls if c.media_p99_ms is not None]
        return statistics.median(values) if values else None

    @property
    def max_media_p99_ms(self) -> float | None:
        """The worst call's media p99."""
        values = [c.media_p99_ms for c in self.calls if c.media_p99_ms is not None]
        return max(values) if values else None


# ---------------------------------------------------------------------------------- measuring


def _rtp_ts(payload: bytes) -> int:
    return int.from_bytes(payload[4:8], "big")


def _codec(payload: bytes) -> str | None:
    return _CODECS.get(payload[1] & 0x7F) if len(payload) > _RTP_HEADER else None


def _peak(payload: bytes, codec: str) -> int:
    return int(np.abs(decode_table(codec).take(np.frombuffer(payload[_RTP_HEADER:], np.uint8))).max())


def wire_latency(
    sent: list[UdpPacket], heard: list[UdpPacket], speech_end_s: float
) -> tuple[float | None, int, int]:
    """(latency s, voiced packets after the end, voiced packets over the caller) from the caller's
    ``sent`` and ``heard`` RTP. The end of speech on the wire is the capture time of the first
    caller packet whose RTP timestamp is ``speech_end_s`` past the caller's first packet's."""
    audio = [p for p in sent if _codec(p.payload)]
    if not audio:
        return None, 0, 0
    base = _rtp_ts(audio[0].payload)
    end = next(
        (p.timestamp for p in audio if ((_rtp_ts(p.payload) - base) & 0xFFFFFFFF) / _RATE >= speech_end_s),
        None,
    )
    if end is None:  # the caller hung up before its speech was over: nothing to measure from
        return None, 0, 0
    voiced = [
        p.timestamp
        for p in heard
        if (codec := _codec(p.payload)) is not None and _peak(p.payload, codec) > VOICED_PEAK
    ]
    reply = [t for t in voiced if t >= end]
    # The caller's last syllable may still echo in a reply that started a hair early: 0.3 s grace.
    over = sum(1 for t in voiced if t < end - 0.3)
    return (reply[0] - end if reply else None), len(reply), over


def media_summaries(log: str) -> list[tuple[str, float, float]]:
    """Every ``(call id, p50 ms, p99 ms)`` media summary in a server log, in order."""
    return [(m[1], float(m[2]), float(m[3])) for m in _MEDIA.finditer(log)]


def _server_latency(log: str) -> float | None:
    """The last turn-1 latency the server logged (ms), if any."""
    found = [m[2] for m in _TURN_LATENCY.finditer(log) if m[1] == "1"]
    with contextlib.suppress(IndexError, ValueError):
        return float(found[-1])
    return None


def _wait_for_summary(server: SipagentServer, count: int, timeout: float) -> list[tuple[str, float, float]]:
    """The server logs a call's media summary when it closes the call, just after the BYE."""
    deadline = time.monotonic() + timeout
    while True:
        summaries = media_summaries(server.log())
        if len(summaries) > count or time.monotonic() > deadline:
            return summaries
        time.sleep(0.1)


def measure_call(server: SipagentServer, audio: CallerAudio, workdir: Path) -> CallResult:
    """One softphone call to the agent, measured on the wire and in the server's log."""
    result = CallResult()
    log_before = server.log()
    summaries_before = len(media_summaries(log_before))
    turns_before = len(_TURN_LATENCY.findall(log_before))
    capture: LoopbackCapture | None = None
    caller_ports: list[int] = []
    try:
        baresip = Baresip(
            workdir / "baresip", audio_wav=audio.wav, dial=f"sip:agent@{server.address}", ready_timeout=30.0
        )
        caller_ports = list(range(baresip.rtp_port_min, baresip.rtp_port_max + 1))
        capture = LoopbackCapture(workdir / "capture", [*server.rtp_ports, *caller_ports], ready_timeout=30.0)
        with capture, baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=30)
            baresip.wait_for_event("CALL_CLOSED", timeout=audio.seconds + 30)  # the file ends
    except (RuntimeError, TimeoutError, OSError) as exc:  # ProcessError is a RuntimeError
        result.error = f"{type(exc).__name__}: {exc}"[:500]
    summaries = _wait_for_summary(server, summaries_before, timeout=15.0)
    if len(summaries) > summaries_before:
        _, result.media_p50_ms, result.media_p99_ms = summaries[summaries_before]
    log_after = server.log()
    if len(_TURN_LATENCY.findall(log_after)) > turns_before:
        result.server_latency_ms = _server_latency(log_after)
    try:
        packets = capture.packets() if capture is not None else []
    except RuntimeError:  # the capture never started
        packets = []
    if not packets:
        result.error = result.error or "no RTP captured"
        return result
    caller_port = max(caller_ports, key=lambda p: sum(1 for x in packets if x.src[1] == p))
    sent = [p for p in packets if p.src[1] == caller_port and is_rtp(p.payload)]
    heard = [p for p in packets if p.dst[1] == caller_port and is_rtp(p.payload)]
    result.latency_s, result.voiced_packets, result.over_caller_packets = wire_latency(
        sent, heard, audio.speech_end_s
    )
    result.answered = result.voiced_packets >= MIN_REPLY_PACKETS
    if not sent and result.error is None:
        result.error = "no RTP from the caller on the wire"
    return result


def _listen_seconds(log: str, spawned_wall: float) -> float | None:
    """Spawn → the "listening on" line, from the line's own timestamp (written by the server when it
    happened, so our polling's own scheduling under load does not count)."""
    match = _LISTENING.search(log)
    if match is None:
        return None
    stamp = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamp - spawned_wall


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (s); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14-15


def inference_priority(pid: int) -> str | None:
    """How the process's threads are scheduled now: ``nice 5``, ``idle``, or a mix (``nice 0+5``)."""
    try:
        tasks = [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return None
    idle = getattr(os, "SCHED_IDLE", -1)
    seen: set[str] = set()
    for task in tasks:
        with contextlib.suppress(OSError):
            policy = os.sched_getscheduler(task)
            nice = os.getpriority(os.PRIO_PROCESS, task)
            seen.add(
                "idle" if policy == idle else f"nice {nice}" if policy == os.SCHED_OTHER else f"p{policy}"
            )
    if not seen:
        return None
    if len(seen) == 1:
        return seen.pop()
    nices = sorted(int(s.split()[1]) for s in seen if s.startswith("nice "))
    others = sorted(s for s in seen if not s.startswith("nice "))
    return " ".join([*(["nice " + "+".join(map(str, nices))] if nices else []), *others])


def run_setting(
    setting: Setting,
    neighbours: int,
    *,
    calls: int,
    audio: CallerAudio,
    workdir: Path,
    listen_timeout: float = 120.0,
) -> RunResult:
    """One run (see the module docstring); never raises for a slow or failed run."""
    run = RunResult(setting=setting.label, sched=setting.sched, nice=setting.nice, neighbours=neighbours)
    workdir.mkdir(parents=True, exist_ok=True)
    server = SipagentServer(workdir / "server", mode="agent", config_text=setting.config_text())
    server.workdir.mkdir(parents=True, exist_ok=True)
    with Neighbours(neighbours, workdir / "neighbours") as busy:
        process = ManagedProcess(server.argv(), name="sipagent", logdir=server.workdir)
        server.process = process
        try:
            spawned_wall = time.time()
            process.start()
            try:
                process.wait_for_output(r"listening on", timeout=listen_timeout)
            except ProcessError as exc:
                run.error = str(exc).split(";", 1)[0]
                run.log_tail = server.log()[-20000:]
                return run
            run.listen_s = _listen_seconds(server.log(), spawned_wall)
            found = _INFERENCE_PID.search(server.log())
            inference = int(found[1]) if found else None
            before = _cpu_snapshot(busy, process.pid, inference)
            for index in range(calls):
                call = measure_call(server, audio, workdir / f"call{index + 1}")
                run.calls.append(call)
                if not process.is_running():
                    run.error = f"the server exited (status {process.returncode}) during call {index + 1}"
                    break
            _account(run, before, _cpu_snapshot(busy, process.pid, inference))
            if inference is not None:
                run.inference_seen = inference_priority(inference)
            run.neighbours_alive = busy.running()
            if run.error is not None or any(c.error or not c.answered for c in run.calls):
                run.log_tail = server.log()[-20000:]
        finally:
            _stop_server(process)
    return run


def _stop_server(process: ManagedProcess) -> None:
    """SIGTERM to the server alone first: it stops its inference process itself. (Signalling the
    whole group, as :meth:`ManagedProcess.stop` does, kills that process under the server, which
    logs it as a crash and starts another while shutting down.) Then the group, for anything left."""
    if process.is_running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15.0)
    process.stop()


def _cpu_snapshot(neighbours: Neighbours, server: int, inference: int | None) -> dict[str, float]:
    """CPU seconds so far: the machine's (busy, less steal), ours (this process and the children it
    reaped: baresip, dumpcap), the server's, the models', the neighbours'; and the wall clock."""
    busy, steal = machine_busy()
    own = os.times()
    snapshot = {
        "wall": time.monotonic(),
        "machine": busy - steal,
        "own": own.user + own.system + own.children_user + own.children_system,
        "server": cpu_seconds(server) or 0.0,
        "neighbours": neighbours.cpu_seconds(),
    }
    models = cpu_seconds(inference) if inference is not None else None
    if models is not None:
        snapshot["inference"] = models
    return snapshot


def _account(run: RunResult, before: dict[str, float], after: dict[str, float]) -> None:
    """The CPU shares of the calls' window into ``run``; whatever the machine spent beyond our own
    processes was someone else's (on a shared box, a run beside another job is not comparable)."""
    delta = {key: after[key] - before[key] for key in before if key in after}
    wall = delta["wall"]
    run.busy = delta["machine"] / (wall * (os.cpu_count() or 1)) if wall > 0 else None
    run.neighbours_cpu_s = delta["neighbours"]
    run.inference_cpu_s = delta.get("inference")
    ours = delta["own"] + delta["server"] + delta["neighbours"] + delta.get("inference", 0.0)
    run.others_cpu_s = max(0.0, delta["machine"] - ours)


def host_facts() -> dict[str, str | int | float]:
    """Cores, CPU model, Python, the load average before we start, and our own nice value."""
    facts: dict[str, str | int | float] = dict(machine())
    with contextlib.suppress(OSError):
        facts["loadavg_1m"] = os.getloadavg()[0]
    facts["our_nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    return facts
