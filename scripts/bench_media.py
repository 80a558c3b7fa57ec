#!/usr/bin/env python3
"""Media-engine benchmark: what one core costs per call, and how on time the packets leave.

Run it (defaults take about two minutes on a 2-core box)::

    .venv/bin/python scripts/bench_media.py [--calls N] [--seconds S] [--loss L] [--jitter-ms J] [--json]

Three parts, one run, one table:

1. **CPU cost, simulated clock (sans-IO).** ``--calls`` :class:`RtpSession` s, each fed its own
   restamped loop of the caller's speech in ``fixtures/speech-librivox-0870.pcap`` (optionally
   through :class:`Impairments`), each echoing what it hears back out (so every tick encodes and
   sends a real audio frame). One 20 ms round is: ``receive_rtp`` of the packets that arrived,
   ``handle_timer`` (jitter pop, decode/conceal, pacer encode and header) plus draining the
   datagrams, draining ``next_tick`` and running WebRTC VAD on the inbound frame, and queueing the
   echo with ``send_frames``. Each stage is timed with ``time.process_time`` around the whole batch
   of calls (four clock reads per round, never per call, so the timer does not distort what it
   measures). A *frame* is one call's 20 ms both ways; ``calls/core = 20 ms / cost per frame``.
   Medians over ``--repeat`` runs.
2. **Real time, real sockets.** ``--rt-calls`` :class:`MediaTransport` s on one event loop in one
   process, bound on 127.0.0.1, each echoing the speech a *peer* replays to it every 20 ms. The
   peer's one socket pair feeds every call and, because sipagent answers symmetric RTP to where
   the packets come from, also receives (counts and discards) every packet the calls send. The peer
   runs either in a second process (the server process does only the server's work: the realistic
   figure) or in the same event loop (the server pays for the peer's 2 × calls × 50 packets/s
   too). Send-time error is :attr:`MediaTransport.send_errors`: when each tick's packet really
   left minus when it was due. Calls start at random phases within 20 ms, as real calls do. A
   ``work none`` run (:class:`_BareCall`) measures the loop and sockets alone (one timer and one
   readiness callback per call, the way the media adapter worked before the shared clock).
3. **Baselines, same run.** A naive ``await asyncio.sleep(0.02)`` pacer running beside the calls
   on the same loop (its lateness against the absolute schedule ``t0 + n·20 ms`` only grows), and
   per-sample Python G.711 against the lookup tables.

``--loop uvloop`` (or ``both``, the default, which runs uvloop when it can be imported) measures
the real-time part on uvloop as well; uvloop is not a project dependency (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import select
import socket
import statistics
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import numpy as np

from sipagent.net.media import MediaTransport
from sipagent.net.media_clock import MediaClock
from sipagent.replay.capture import load_caller_leg
from sipagent.replay.impair import Impairments
from sipagent.rtp.events import MediaEvent
from sipagent.rtp.frames import PTIME_MS, FrameKind, Pcm
from sipagent.rtp.g711 import ulaw_decode, ulaw_encode
from sipagent.rtp.session import RtpSession, RtpSessionConfig, Tick
from sipagent.sip.offer_answer import MediaSession, NegotiatedMedia
from sipagent.voice.vad import WebRtcVad

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "speech-librivox-0870.pcap"
FRAME = PTIME_MS / 1000
#: The budget of one call per tick at 100 % of one core.
FRAME_US = PTIME_MS * 1000.0
TARGET_CALLS_PER_CORE = 250
TARGET_P99_MS = 2.0
HOST = "127.0.0.1"
#: Our RTP ports: below Linux's ephemeral range (32768+), where the peer's socket lands.
PORT_MIN, PORT_MAX = 20000, 32000
_HEADER = struct.Struct("!BBHII")
_TS_SSRC = struct.Struct("!II")
_PCMU = 0
#: The naive sleep(0.02) pacer's stream, which the peer leaves out of its arrival statistics.
NAIVE_SSRC = 0x0BADCAFE
_MARKER = 0x80
_SILENCE = (bytes([0xFF]) * 160,)

Clock = Callable[[], float]


# ---------------------------------------------------------------------------------- the speech


def load_speech(path: Path = FIXTURE) -> list[bytes]:
    """The caller's PCMU payloads (160 bytes, 20 ms each) from a capture, in order."""
    leg = load_caller_leg(path)
    if leg.codec != "PCMU":
        raise SystemExit(f"{path}: the benchmark replays PCMU, the capture carries {leg.codec}")
    payloads = [
        timed.packet.payload
        for timed in leg.packets
        if timed.packet.payload_type == leg.payload_type and len(timed.packet.payload) == 160
    ]
    if not payloads:
        raise SystemExit(f"{path}: no 20 ms PCMU packets in the caller leg")
    return payloads


@dataclass(frozen=True)
class CallStream:
    """One simulated caller: its own SSRC, sequence and timestamp bases, and where in the loop of
    speech it starts, so the calls are neither identical nor in step."""

    ssrc: int
    first_sequence: int
    first_timestamp: int
    offset: int

    @classmethod
    def draw(cls, rng: random.Random, length: int) -> CallStream:
        """A stream with random bases (RFC 3550 §5.1) and a random starting point in the speech."""
        return cls(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32), rng.randrange(length))

    def packet(self, speech: Sequence[bytes], index: int) -> bytes:
        """Serialized RTP packet ``index`` of this stream (the speech loops seamlessly)."""
        return (
            _HEADER.pack(
                0x80,
                _PCMU | (_MARKER if index == 0 else 0),
                (self.first_sequence + index) & 0xFFFF,
                (self.first_timestamp + 160 * index) & 0xFFFFFFFF,
                self.ssrc,
            )
            + speech[(self.offset + index) % len(speech)]
        )


def _negotiate(local_port: int, remote_port: int, session_id: int) -> NegotiatedMedia:
    """Our side of a real offer/answer with a caller at ``HOST:remote_port`` (PCMU, DTMF)."""
    caller = MediaSession(HOST, remote_port, session_id=2 * session_id + 1, codecs=("PCMU",))
    ours = MediaSession(HOST, local_port, session_id=2 * session_id + 2)
    _, media = ours.answer(caller.create_offer())
    return media


def _new_session(rng: random.Random, index: int, now: float) -> RtpSession:
    return RtpSession(
        ssrc=rng.getrandbits(32),
        first_sequence=rng.getrandbits(16),
        first_timestamp=rng.getrandbits(32),
        cname=f"bench-{index}",
        rng=random.Random(rng.getrandbits(64)),
        now=now,
        wall_offset=time.time() - time.monotonic(),
        config=RtpSessionConfig(media_timeout=0),
    )


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


# ---------------------------------------------------------------- part 1: CPU, simulated clock

STAGE_LABELS = {
    "receive_rtp": "receive_rtp (parse, jitter push, RTCP stats)",
    "handle_timer": "handle_timer (pop/decode, encode, pacer, RTCP)",
    "vad": "next_tick + WebRTC VAD (VAD-ready frames)",
    "send_frames": "send_frames (queue the echo)",
}
CPU_STAGES = tuple(STAGE_LABELS)
_CALLER = (HOST, 40000)


@dataclass
class CpuRun:
    """One run of the simulated-clock benchmark (times in µs per frame)."""

    calls: int
    seconds: float
    frames: int
    per_frame_us: float
    stages_us: dict[str, float]
    packets_in: int
    packets_out: int
    voice_frames: int
    concealed_frames: int
    voiced_frames: int

    @property
    def calls_per_core(self) -> float:
        """Calls one core could carry at 100 % if this were all it did."""
        return FRAME_US / self.per_frame_us if self.per_frame_us > 0 else math.inf


def run_cpu(
    speech: Sequence[bytes],
    *,
    calls: int,
    seconds: float,
    impairments: Impairments | None = None,
    seed: int = 1,
    clock: Clock = time.process_time,
) -> CpuRun:
    """``calls`` sessions for ``seconds`` of simulated time; see the module docstring (part 1)."""
    rng = random.Random(seed)
    ticks = max(1, round(seconds / FRAME))
    media = _negotiate(PORT_MIN, _CALLER[1], 0)
    sessions: list[RtpSession] = []
    arrivals: list[list[tuple[float, bytes]]] = []
    for index in range(calls):
        session = _new_session(rng, index, 0.0)
        session.configure(media)
        session.start(0.0)
        sessions.append(session)
        stream = CallStream.draw(rng, len(speech))
        # Packets are sent on the caller's own 20 ms clock (a random phase against ours) and, past
        # the end of the run, not at all.
        phase = rng.uniform(0.0, FRAME)
        sent = [(phase + k * FRAME, stream.packet(speech, k)) for k in range(ticks)]
        if impairments is not None and impairments.active:
            sent = Impairments(
                loss=impairments.loss,
                jitter_ms=impairments.jitter_ms,
                reorder=impairments.reorder,
                duplicate=impairments.duplicate,
                seed=impairments.seed + index,
            ).apply(sent)
        arrivals.append(sent)
    vads = [WebRtcVad() for _ in range(calls)]
    positions = [0] * calls
    echo: list[list[Pcm]] = [[] for _ in range(calls)]
    spent = dict.fromkeys(CPU_STAGES, 0.0)
    packets_in = packets_out = voice = concealed = voiced = 0
    voice_kind, concealed_kind = FrameKind.VOICE, FrameKind.CONCEALED

    for tick in range(ticks):
        now = tick * PTIME_MS / 1000
        t0 = clock()
        for index in range(calls):
            queue, position, session = arrivals[index], positions[index], sessions[index]
            end = len(queue)
            while position < end and queue[position][0] <= now:
                arrival, data = queue[position]
                session.receive_rtp(data, _CALLER, arrival)
                position += 1
            packets_in += position - positions[index]
            positions[index] = position
        t1 = clock()
        for session in sessions:
            session.handle_timer(now)
            packets_out += len(session.datagrams_to_send(now))
        t2 = clock()
        for index in range(calls):
            session, vad, pending = sessions[index], vads[index], echo[index]
            while (heard := session.next_tick()) is not None:
                frame = heard.inbound
                voiced += vad.is_speech(frame.samples)
                pending.append(frame.samples)
                if frame.kind is voice_kind:
                    voice += 1
                elif frame.kind is concealed_kind:
                    concealed += 1
            while session.next_event() is not None:
                pass
        t3 = clock()
        for index in range(calls):
            pending = echo[index]
            sessions[index].send_frames(pending)
            pending.clear()
        t4 = clock()
        spent["receive_rtp"] += t1 - t0
        spent["handle_timer"] += t2 - t1
        spent["vad"] += t3 - t2
        spent["send_frames"] += t4 - t3

    frames = calls * ticks
    stages = {name: value * 1e6 / frames for name, value in spent.items()}
    return CpuRun(
        calls=calls,
        seconds=ticks * FRAME,
        frames=frames,
        per_frame_us=sum(stages.values()),
        stages_us=stages,
        packets_in=packets_in,
        packets_out=packets_out,
        voice_frames=voice,
        concealed_frames=concealed,
        voiced_frames=voiced,
    )


@dataclass
class CpuSummary:
    """Medians over the runs of part 1."""

    calls: int
    seconds: float
    repeats: int
    loss: float
    jitter_ms: float
    per_frame_us: float
    per_frame_us_runs: list[float]
    stages_us: dict[str, float]
    calls_per_core: float
    voice_fraction: float
    concealed_fraction: float
    voiced_fraction: float


def cpu_benchmark(
    speech: Sequence[bytes],
    *,
    calls: int,
    seconds: float,
    repeats: int,
    loss: float = 0.0,
    jitter_ms: float = 0.0,
) -> CpuSummary:
    """Part 1, ``repeats`` times with the same seeds; medians."""
    impairments = Impairments(loss=loss, jitter_ms=jitter_ms, seed=7)
    runs = [run_cpu(speech, calls=calls, seconds=seconds, impairments=impairments) for _ in range(repeats)]
    per_frame = statistics.median(run.per_frame_us for run in runs)
    last = runs[-1]
    return CpuSummary(
        calls=calls,
        seconds=last.seconds,
        repeats=repeats,
        loss=loss,
        jitter_ms=jitter_ms,
        per_frame_us=per_frame,
        per_frame_us_runs=[run.per_frame_us for run in runs],
        stages_us={name: statistics.median(run.stages_us[name] for run in runs) for name in CPU_STAGES},
        calls_per_core=FRAME_US / per_frame,
        voice_fraction=last.voice_frames / last.frames,
        concealed_fraction=last.concealed_frames / last.frames,
        voiced_fraction=last.voiced_frames / last.frames,
    )


# ------------------------------------------------------------------ part 2: real time, sockets


class _PeerStats:
    """What the peer saw: packets in and out, and each stream's arrival spread.

    The spread of ``arrival - timestamp / 8000`` within one stream, above its smallest value, is
    how unevenly the packets arrived: the send-time error as a receiver sees it, plus the peer's
    own lateness in reading them (so an upper bound).
    """

    def __init__(self) -> None:
        self.received = 0
        self.rtcp_received = 0
        self.sent = 0
        self._transits: dict[int, list[float]] = {}
        self._first_ts: dict[int, int] = {}
        self.measure_from = math.inf

    def on_rtp(self, data: bytes, now: float) -> None:
        self.received += 1
        if now < self.measure_from or len(data) < 12:
            return
        timestamp, ssrc = _TS_SSRC.unpack_from(data, 4)
        if ssrc == NAIVE_SSRC:
            return
        first = self._first_ts.setdefault(ssrc, timestamp)
        self._transits.setdefault(ssrc, []).append(now - ((timestamp - first) & 0xFFFFFFFF) / 8000)

    def spread_ms(self) -> tuple[float, float]:
        """(p50, p99) over all streams of each packet's transit above its stream's fastest."""
        spread = sorted(
            (transit - low) * 1000
            for transits in self._transits.values()
            if transits
            for low in (min(transits),)
            for transit in transits
        )
        return _percentile(spread, 0.50), _percentile(spread, 0.99)


class _Feeder:
    """Every call's caller: packet ``n`` of call ``i`` leaves at ``t0 + phase_i + n·20 ms``.

    Calls are grouped by their phase into 1 ms slots, so the peer sends a few packets every
    millisecond instead of a burst of all of them every 20 ms.
    """

    SLOTS = 20

    def __init__(self, speech: Sequence[bytes], ports: Sequence[int], seed: int) -> None:
        rng = random.Random(seed)
        self.speech = speech
        self.slots: list[list[tuple[CallStream, tuple[str, int]]]] = [[] for _ in range(self.SLOTS)]
        for port in ports:
            stream = CallStream.draw(rng, len(speech))
            self.slots[rng.randrange(self.SLOTS)].append((stream, (HOST, port)))
        self.step = 0  # slots handled so far

    def next_time(self, t0: float) -> float:
        return t0 + self.step * FRAME / self.SLOTS

    def due(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The packets of the next slot (and advance to the one after)."""
        index, slot = divmod(self.step, self.SLOTS)
        self.step += 1
        return [(stream.packet(self.speech, index), address) for stream, address in self.slots[slot]]


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP socket on a free even port and one on the odd port above it (RTP, RTCP)."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((HOST, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((HOST, port + 1))
            except OSError:
                rtcp.close()
            else:
                return rtp, rtcp
        rtp.close()
    raise RuntimeError("no free even/odd UDP port pair on 127.0.0.1")


def _peer_process(conn: Connection, speech: Sequence[bytes], seed: int) -> None:
    """The peer in its own process: single-threaded epoll loop, sending on schedule, draining."""
    rtp, rtcp = _bind_pair()
    for sock in (rtp, rtcp):
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    conn.send(rtp.getsockname()[1])
    ports, duration, measure_after = conn.recv()
    feeder = _Feeder(speech, ports, seed)
    stats = _PeerStats()
    poller = select.epoll()
    poller.register(rtp.fileno(), select.EPOLLIN)
    poller.register(rtcp.fileno(), select.EPOLLIN)
    t0 = time.monotonic()
    stats.measure_from = t0 + measure_after
    cpu0 = time.process_time()
    end = t0 + duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        wait = feeder.next_time(t0) - now
        if wait > 0:
            poller.poll(wait)
        for sock, on_packet in ((rtp, stats.on_rtp), (rtcp, None)):
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                if on_packet is None:
                    stats.rtcp_received += 1
                else:
                    on_packet(data, time.monotonic())
        while feeder.next_time(t0) <= time.monotonic():
            for packet, address in feeder.due():
                with contextlib.suppress(BlockingIOError):
                    rtp.sendto(packet, address)
                    stats.sent += 1
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    p50, p99 = stats.spread_ms()
    conn.send(
        {
            "received": stats.received,
            "rtcp_received": stats.rtcp_received,
            "sent": stats.sent,
            "cpu_util": cpu / wall,
            "spread_p50_ms": p50,
            "spread_p99_ms": p99,
        }
    )
    conn.close()


class _PeerProtocol(asyncio.DatagramProtocol):
    """The peer inside the server's own event loop (the ``same loop`` sink)."""

    def __init__(self, stats: _PeerStats | None) -> None:
        self.stats = stats
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.stats is not None:
            self.stats.on_rtp(data, time.monotonic())


class _BenchTransport(MediaTransport):
    """A :class:`MediaTransport` whose events the benchmark ignores."""

    def __init__(self, session: RtpSession, on_tick: Callable[[Tick], None], clock: MediaClock) -> None:
        super().__init__(session, on_tick, self._on_media_event, clock)

    def _on_media_event(self, event: MediaEvent) -> None:
        pass


def _echo_and_listen(session: RtpSession, vad: WebRtcVad) -> Callable[[Tick], None]:
    def on_tick(tick: Tick) -> None:
        vad.is_speech(tick.inbound.samples)
        session.send_frames((tick.inbound.samples,))

    return on_tick


class _BareCall(asyncio.DatagramProtocol):
    """The event loop's and the sockets' share of a call, and nothing else: a socket that discards
    what it receives and a timer on the same absolute 20 ms schedule sending one packet a tick."""

    def __init__(self, stream: CallStream, destination: tuple[str, int]) -> None:
        self.loop = asyncio.get_running_loop()
        self.stream, self.destination = stream, destination
        self.transport: asyncio.DatagramTransport | None = None
        self.send_errors: deque[float] = deque(maxlen=3000)
        self.wakeups = self.port = self._tick = 0
        self._t0 = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = int(self.transport.get_extra_info("sockname")[1])

    def start(self) -> None:
        self._t0 = self.loop.time()
        self._timer = self.loop.call_at(self._t0, self._on_timer)

    def _on_timer(self) -> None:
        self.wakeups += 1
        if self.transport is not None:
            self.transport.sendto(self.stream.packet(_SILENCE, self._tick), self.destination)
        self.send_errors.append(self.loop.time() - (self._t0 + self._tick * PTIME_MS / 1000))
        self._tick += 1
        self._timer = self.loop.call_at(self._t0 + self._tick * PTIME_MS / 1000, self._on_timer)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


def _machine_busy() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hertz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle) / hertz, steal / hertz


@dataclass
class RealtimeRun:
    """Part 2 for one event loop and one placement of the peer (times in ms)."""

    loop: str
    work: str  # "media": MediaTransports; "none": the loop and sockets alone (_BareCall)
    sink: str
    calls: int
    seconds: float
    ticks: int
    send_error_p50_ms: float
    send_error_p99_ms: float
    send_error_max_ms: float
    window_p99_median_ms: float  # p99 of each 1 s window, median over the windows
    late_over_2ms: float  # fraction of ticks
    cpu_util: float  # server process, of one core
    per_frame_us: float  # server CPU per call per tick, sockets and loop included
    system_share: float  # of that CPU, the part spent in the kernel
    calls_per_core: float
    wakeups_per_tick: float
    other_load: float  # cores busy with other programs meanwhile (this box is shared)
    steal: float  # cores' worth of time the hypervisor took
    preemptions: float  # per second: the kernel took the core from the server for another task
    naive_p50_ms: float
    naive_p99_ms: float
    naive_drift_ms: float  # how far behind the absolute schedule the naive pacer ended
    naive_rate_pps: float
    concealed_fraction: float  # inbound frames concealed, of packets received (whole run)
    late_fraction: float  # inbound packets that came after their audio was due
    jitter_delay_ms: float  # median over the calls of the jitter buffer's delay at the end
    peer: dict[str, float]


async def _serve(
    speech: Sequence[bytes],
    *,
    calls: int,
    seconds: float,
    warmup: float,
    bare: bool,
    peer_port: int | None,
    start_peer: Callable[[list[int]], None] | None,
    seed: int,
) -> tuple[RealtimeRun, _PeerStats | None]:
    """Run ``calls`` transports; with ``peer_port`` None the peer runs on this same loop."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    peer: _PeerProtocol | None = None
    peer_stats: _PeerStats | None = None
    closers: list[Callable[[], None]] = []
    if peer_port is None:
        rtp_sock, rtcp_sock = _bind_pair()
        peer_port = rtp_sock.getsockname()[1]
        peer_stats = _PeerStats()
        rtp_end, peer = await loop.create_datagram_endpoint(lambda: _PeerProtocol(peer_stats), sock=rtp_sock)
        rtcp_end, _ = await loop.create_datagram_endpoint(lambda: _PeerProtocol(None), sock=rtcp_sock)
        closers += [rtp_end.close, rtcp_end.close]
    transports: list[_BenchTransport | _BareCall] = []
    clock = MediaClock(loop)
    for index in range(calls):
        if bare:
            factory = functools.partial(_BareCall, CallStream.draw(rng, 1), (HOST, peer_port))
            _, bare_call = await loop.create_datagram_endpoint(factory, local_addr=(HOST, 0))
            transports.append(bare_call)
        else:
            session = _new_session(rng, index, loop.time())
            media = _BenchTransport(session, _echo_and_listen(session, WebRtcVad()), clock)
            session.configure(_negotiate(await media.bind(HOST, PORT_MIN, PORT_MAX, rng), peer_port, index))
            transports.append(media)
        closers.append(transports[-1].close)
    ports = [transport.port for transport in transports]
    if start_peer is not None:
        start_peer(ports)
    base = loop.time() + 0.05
    for transport in transports:  # calls start at random phases, as real calls do
        loop.call_at(base + rng.uniform(0.0, FRAME), transport.start)
    tasks: list[asyncio.Task[None]] = []
    if peer is not None and peer_stats is not None:
        peer_stats.measure_from = time.monotonic() + warmup
        tasks.append(asyncio.create_task(_feed_in_loop(_Feeder(speech, ports, seed + 1), peer, peer_stats)))

    await asyncio.sleep(warmup)
    for transport in transports:
        transport.send_errors.clear()
        if isinstance(transport, _BareCall):
            transport.wakeups = 0
    clock.wakeups = 0
    errors: list[float] = []
    window_p99: list[float] = []
    naive_errors: list[float] = []
    tasks.append(asyncio.create_task(_naive_pacer(peer_port, naive_errors)))
    usage0, busy0, wall0 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy(), time.perf_counter()
    remaining = seconds
    while remaining > 0:  # 1 s windows (the transports keep only their last 3000 ticks)
        await asyncio.sleep(min(1.0, remaining))
        remaining -= 1.0
        window: list[float] = []
        for transport in transports:
            window.extend(transport.send_errors)
            transport.send_errors.clear()
        window_p99.append(_percentile(sorted(window), 0.99))
        errors.extend(window)
    usage1, busy1, wall1 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy(), time.perf_counter()
    wakeups = clock.wakeups + sum(t.wakeups for t in transports if isinstance(t, _BareCall))
    jitter = [t.session.jitter.stats for t in transports if isinstance(t, _BenchTransport)]
    for task in tasks:
        task.cancel()
    for close in closers:
        close()
    await asyncio.sleep(0)

    errors.sort()
    naive_errors_sorted = sorted(naive_errors)
    wall = wall1 - wall0
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    ticks = len(errors)
    per_frame = cpu * 1e6 / ticks if ticks else 0.0
    return (
        RealtimeRun(
            loop=type(loop).__module__.split(".")[0],
            work="none" if bare else "media",
            sink="same loop" if peer is not None else "process",
            calls=calls,
            seconds=wall,
            ticks=ticks,
            send_error_p50_ms=_percentile(errors, 0.50) * 1000,
            send_error_p99_ms=_percentile(errors, 0.99) * 1000,
            send_error_max_ms=errors[-1] * 1000 if errors else 0.0,
            window_p99_median_ms=statistics.median(window_p99) * 1000 if window_p99 else 0.0,
            late_over_2ms=sum(1 for error in errors if error > 0.002) / ticks if ticks else 0.0,
            cpu_util=cpu / wall,
            per_frame_us=per_frame,
            system_share=(usage1.ru_stime - usage0.ru_stime) / cpu if cpu > 0 else 0.0,
            calls_per_core=FRAME_US / per_frame if per_frame else math.inf,
            wakeups_per_tick=wakeups / ticks if ticks else 0.0,
            other_load=(busy1[0] - busy0[0]) / wall - cpu / wall,  # the peer process is taken off later
            steal=(busy1[1] - busy0[1]) / wall,
            preemptions=(usage1.ru_nivcsw - usage0.ru_nivcsw) / wall,
            naive_p50_ms=_percentile(naive_errors_sorted, 0.50) * 1000,
            naive_p99_ms=_percentile(naive_errors_sorted, 0.99) * 1000,
            naive_drift_ms=naive_errors[-1] * 1000 if naive_errors else 0.0,
            naive_rate_pps=len(naive_errors) / wall,
            concealed_fraction=sum(j.lost for j in jitter) / max(1, sum(j.received for j in jitter)),
            late_fraction=sum(j.late for j in jitter) / max(1, sum(j.received for j in jitter)),
            jitter_delay_ms=statistics.median(j.delay_ms for j in jitter) if jitter else 0.0,
            peer={},
        ),
        peer_stats,
    )


async def _feed_in_loop(feeder: _Feeder, peer: _PeerProtocol, stats: _PeerStats) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        delay = feeder.next_time(t0) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while feeder.next_time(t0) <= loop.time():
            for packet, address in feeder.due():
                if peer.transport is not None:
                    peer.transport.sendto(packet, address)
                    stats.sent += 1


async def _naive_pacer(peer_port: int, errors: list[float]) -> None:
    """The way not to pace: send, ``sleep(0.02)``, repeat. Errors against ``t0 + n·20 ms``."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _PeerProtocol(None), local_addr=(HOST, 0))
    stream = CallStream(NAIVE_SSRC, 0, 0, 0)
    t0 = loop.time()
    n = 0
    try:
        while True:
            transport.sendto(stream.packet(_SILENCE, n), (HOST, peer_port))
            errors.append(loop.time() - (t0 + n * PTIME_MS / 1000))
            n += 1
            await asyncio.sleep(FRAME)
    finally:
        transport.close()


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(name).new_event_loop
    return factory


def uvloop_available() -> bool:
    """Whether ``import uvloop`` works here (it is not a dependency of the project)."""
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return False
    return True


def run_realtime(
    speech: Sequence[bytes],
    *,
    calls: int,
    seconds: float,
    sink: str = "process",
    loop: str = "asyncio",
    bare: bool = False,
    warmup: float = 1.0,
    seed: int = 11,
) -> RealtimeRun:
    """Part 2: ``calls`` transports on one ``loop`` for ``seconds`` (after ``warmup``).

    ``sink`` is ``"process"`` (the peer in a second process) or ``"loop"`` (the same event loop);
    ``bare`` replaces the calls by :class:`_BareCall` s: what the loop and sockets cost alone.
    """
    if sink not in ("process", "loop"):
        raise ValueError(f"sink must be 'process' or 'loop', got {sink!r}")
    peer: multiprocessing.process.BaseProcess | None = None
    link: Connection | None = None
    start_peer: Callable[[list[int]], None] | None = None
    if sink == "process":
        # Forked before this process has an event loop; the peer gets the ports once bound.
        context = multiprocessing.get_context("fork")
        link, child = context.Pipe()
        peer = context.Process(target=_peer_process, args=(child, speech, seed + 1), daemon=True)
        peer.start()
        parent = link

        def start_peer(ports: list[int]) -> None:
            parent.send((ports, warmup + seconds + 1.0, warmup))

    gc.collect()
    report: dict[str, float] = {}
    try:
        with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
            result, stats = runner.run(
                _serve(
                    speech,
                    calls=calls,
                    seconds=seconds,
                    warmup=warmup,
                    bare=bare,
                    peer_port=int(link.recv()) if link is not None else None,
                    start_peer=start_peer,
                    seed=seed,
                )
            )
    finally:
        if peer is not None and link is not None:
            if link.poll(seconds + warmup + 10):
                report = link.recv()
            peer.join(5)
            if peer.is_alive():
                peer.kill()
    if stats is not None:
        p50, p99 = stats.spread_ms()
        report = {"received": stats.received, "sent": stats.sent, "spread_p50_ms": p50, "spread_p99_ms": p99}
    result.other_load = max(0.0, result.other_load - report.get("cpu_util", 0.0))
    result.peer = report
    return result


# ------------------------------------------------------------------------- part 3: baselines

_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def python_ulaw_encode(samples: Sequence[int]) -> bytes:
    """G.711 μ-law one sample at a time in Python (the Sun reference algorithm): the baseline."""
    out = bytearray(len(samples))
    for index, sample in enumerate(samples):
        value = sample >> 2
        if value < 0:
            value, mask = -value, 0x7F
        else:
            mask = 0xFF
        value = min(value, 8159) + 33
        segment = 0
        while segment < 8 and value > _ULAW_SEGMENT_ENDS[segment]:
            segment += 1
        code = 0x7F if segment >= 8 else (segment << 4) | ((value >> (segment + 1)) & 0x0F)
        out[index] = code ^ mask
    return bytes(out)


def python_ulaw_decode(payload: bytes) -> list[int]:
    """G.711 μ-law decoding one byte at a time in Python: the baseline."""
    out = []
    for byte in payload:
        code = ~byte & 0xFF
        magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
        out.append(0x84 - magnitude if code & 0x80 else magnitude - 0x84)
    return out


@dataclass
class CodecBaseline:
    """µs per 20 ms frame, decode + encode, medians."""

    python_us: float
    table_us: float

    @property
    def ratio(self) -> float:
        return self.python_us / self.table_us


def codec_baseline(speech: Sequence[bytes], *, frames: int = 200, repeats: int = 5) -> CodecBaseline:
    """Per-sample Python G.711 against the lookup tables, on the same speech frames."""
    payloads = [speech[index % len(speech)] for index in range(frames)]
    pcm = [ulaw_decode(payload) for payload in payloads]
    lists = [frame.tolist() for frame in pcm]
    if python_ulaw_encode(lists[0]) != ulaw_encode(pcm[0]) or python_ulaw_decode(payloads[0]) != lists[0]:
        raise AssertionError("the Python G.711 baseline disagrees with the tables")

    def python_way() -> None:
        for payload in payloads:
            python_ulaw_encode(python_ulaw_decode(payload))

    def table_way() -> None:
        for payload in payloads:
            ulaw_encode(ulaw_decode(payload))

    def timed(work: Callable[[], None]) -> float:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            runs.append((time.perf_counter() - start) * 1e6 / frames)
        return statistics.median(runs)

    return CodecBaseline(python_us=timed(python_way), table_us=timed(table_way))


# ----------------------------------------------------------------------------------- report


def machine() -> dict[str, str | int]:
    """Cores and CPU model, as the docs quote them."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    """The human table."""
    info, cpu, codec, verdict = results["machine"], results["cpu"], results["codec"], results["targets"]
    out = [f"sipagent media benchmark: {info['nproc']} cores, {info['cpu']}, Python {info['python']}", ""]
    out.append(
        f"1. CPU cost, simulated clock (sans-IO): {cpu['calls']} calls x {cpu['seconds']:g} s, loss "
        f"{cpu['loss']:.0%}, jitter {cpu['jitter_ms']:g} ms; median of {cpu['repeats']} runs"
    )
    out.append(f"   {'stage':<46}{'us/frame':>9}{'share':>7}")
    for name, label in STAGE_LABELS.items():
        value = cpu["stages_us"][name]
        out.append(f"   {label:<46}{value:>9.2f}{value / cpu['per_frame_us']:>7.0%}")
    runs = ", ".join(f"{value:.1f}" for value in cpu["per_frame_us_runs"])
    out.append(f"   {'per frame, both ways (runs: ' + runs + ')':<46}{cpu['per_frame_us']:>9.2f}")
    out.append(f"   {'calls per core at 100 % (20 ms / frame)':<46}{cpu['calls_per_core']:>9.0f}")
    out.append(
        f"   inbound: {cpu['voice_fraction']:.0%} voice, {cpu['concealed_fraction']:.1%} concealed; "
        f"VAD says voiced {cpu['voiced_fraction']:.0%}"
    )
    out += ["", "2. Real time: 127.0.0.1 sockets, one process, one event loop; send error = left - due (ms)"]
    out.append(
        f"   {'loop':<8}{'work':<6}{'peer':<10}{'calls':>6}{'p50':>7}{'p99':>7}{'p99/s':>7}"
        f"{'max':>7}{'>2ms':>7}{'CPU':>6}{'us/fr':>7}{'calls/core':>11}{'wake/tick':>10}{'peer p99':>9}"
        f"{'other':>7}"
    )
    for run in results["realtime"]:
        out.append(
            f"   {run['loop']:<8}{run['work']:<6}{run['sink']:<10}{run['calls']:>6}"
            f"{run['send_error_p50_ms']:>7.2f}{run['send_error_p99_ms']:>7.2f}{run['window_p99_median_ms']:>7.2f}"
            f"{run['send_error_max_ms']:>7.1f}{run['late_over_2ms']:>7.1%}{run['cpu_util']:>6.0%}"
            f"{run['per_frame_us']:>7.1f}{run['calls_per_core']:>11.0f}{run['wakeups_per_tick']:>10.2f}"
            f"{run['peer'].get('spread_p99_ms', math.nan):>9.2f}{run['other_load']:>7.2f}"
        )
    out += [f"   {skipped}" for skipped in results["skipped"]]
    out += [
        "   work none: the loop and sockets alone; p99/s: median of the per-second p99s; CPU: server",
        "   process, of one core; peer p99: arrival spread the peer saw (its own lateness included);",
        "   other: cores busy with other programs meanwhile (the box may be shared)",
        "",
        "3. Ratios and baselines, same run",
    ]
    media = [run for run in results["realtime"] if run["work"] == "media"]
    for run in media:
        out.append(
            f"   pacing ({run['loop']}, peer {run['sink']}, {run['calls']} calls): sleep(0.02) loop p99 "
            f"{run['naive_p99_ms']:.0f} ms, {run['naive_drift_ms']:.0f} ms behind after "
            f"{run['seconds']:.0f} s "
            f"({run['naive_rate_pps']:.1f} packets/s, not 50); absolute schedule p99 "
            f"{run['send_error_p99_ms']:.2f} ms, no drift"
        )
    for run in media:
        bare = [b for b in results["realtime"] if b["work"] == "none" and b["loop"] == run["loop"]]
        if run["sink"] == "process" and bare:
            out.append(
                f"   CPU per frame ({run['loop']}, {run['calls']} calls): with sockets "
                f"{run['per_frame_us']:.1f} us = {run['per_frame_us'] / cpu['per_frame_us']:.1f}x the "
                f"sans-IO {cpu['per_frame_us']:.1f} us; "
                f"loop and sockets alone {bare[0]['per_frame_us']:.1f} us"
            )
    out.append(
        f"   G.711 decode+encode of one frame: per-sample Python {codec['python_us']:.1f} us, lookup "
        f"tables {codec['table_us']:.2f} us ({codec['ratio']:.0f}x)"
    )
    out += [
        "",
        f"Targets (issue): >= {TARGET_CALLS_PER_CORE} calls/core: "
        f"sans-IO {verdict['calls_per_core_sans_io']:.0f}, "
        f"with sockets {verdict['calls_per_core_realtime']:.0f} -> {_verdict(verdict['calls_per_core_ok'])}; "
        f"p99 send error < {TARGET_P99_MS:g} ms at {verdict['calls']} calls: {verdict['p99_ms']:.2f} ms -> "
        f"{_verdict(verdict['p99_ok'])}",
    ]
    return "\n".join(out)


def _targets(cpu: CpuSummary, realtime: list[RealtimeRun]) -> dict[str, Any]:
    """The issue's targets, judged on the largest asyncio run with the peer in another process."""
    candidates = [run for run in realtime if run.loop == "asyncio" and run.sink == "process"]
    primary = max(candidates or realtime, key=lambda run: run.calls) if realtime else None
    per_core = primary.calls_per_core if primary is not None else cpu.calls_per_core
    p99 = primary.send_error_p99_ms if primary is not None else math.nan
    return {
        "calls": primary.calls if primary is not None else 0,
        "calls_per_core_sans_io": cpu.calls_per_core,
        "calls_per_core_realtime": per_core,
        "calls_per_core_ok": min(cpu.calls_per_core, per_core) >= TARGET_CALLS_PER_CORE,
        "p99_ms": p99,
        "p99_ok": p99 < TARGET_P99_MS,
    }


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("call counts must be positive")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="sipagent media benchmark (see docs/benchmarks.md)")
    parser.add_argument("--calls", type=int, default=300, help="calls in the CPU part (300)")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per CPU run (20)")
    parser.add_argument("--repeat", type=int, default=5, help="CPU runs to take the median of (5)")
    parser.add_argument("--loss", type=float, default=0.0, help="packet loss probability, CPU part (0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="mean extra network delay, CPU part (0)")
    parser.add_argument(
        "--rt-calls", type=_counts, default=[250], help="concurrent calls in real time, e.g. 150,250 (250)"
    )
    parser.add_argument(
        "--rt-seconds", type=float, default=10.0, help="measured seconds per real-time run (10)"
    )
    parser.add_argument(
        "--sink", choices=("process", "loop", "both"), default="both", help="where the peer runs"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop", "both"), default="both", help="'both' skips a missing uvloop"
    )
    parser.add_argument("--no-realtime", action="store_true", help="skip part 2")
    parser.add_argument("--no-bare", action="store_true", help="skip the loop-and-sockets-alone run")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeat < 1 or args.seconds <= 0 or args.rt_seconds <= 0:
        parser.error("--calls and --repeat must be positive, --seconds and --rt-seconds > 0")
    if not 0 <= args.loss <= 1 or args.jitter_ms < 0:
        parser.error("--loss is a probability and --jitter-ms must not be negative")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    speech = load_speech()
    plan: list[tuple[str, str, int, bool]] = []  # loop, sink, calls, bare
    skipped: list[str] = []
    if not args.no_realtime:
        sinks = ("process", "loop") if args.sink == "both" else (args.sink,)
        for loop_name in ("asyncio", "uvloop") if args.loop == "both" else (args.loop,):
            if loop_name == "uvloop" and not uvloop_available():
                if args.loop == "uvloop":
                    parser.error("uvloop is not importable (pip install uvloop, or PYTHONPATH to it)")
                skipped.append("uvloop: not importable here, skipped (PYTHONPATH=DIR with uvloop installed)")
                continue
            for calls in args.rt_calls:
                for sink in sinks if loop_name == "asyncio" else sinks[:1]:
                    plan.append((loop_name, sink, calls, False))
            if loop_name == "asyncio" and not args.no_bare:
                plan.append((loop_name, sinks[0], max(args.rt_calls), True))
    realtime: list[RealtimeRun] = []
    # The real-time runs go first, before part 1 fills this process with its calls' objects.
    for loop_name, sink, calls, bare in plan:
        say(
            f"real time: {calls} calls on {loop_name}, peer in the {sink}, "
            f"{'no media work' if bare else 'media'} ..."
        )
        realtime.append(
            run_realtime(
                speech,
                calls=calls,
                seconds=args.rt_seconds,
                sink=sink,
                loop=loop_name,
                bare=bare,
            )
        )
    say(f"CPU: {args.calls} calls x {args.seconds:g} s simulated, {args.repeat} runs ...")
    cpu = cpu_benchmark(
        speech,
        calls=args.calls,
        seconds=args.seconds,
        repeats=args.repeat,
        loss=args.loss,
        jitter_ms=args.jitter_ms,
    )
    codec = codec_baseline(speech)
    results: dict[str, Any] = {
        "machine": machine(),
        "cpu": asdict(cpu),
        "realtime": [asdict(run) for run in realtime],
        "skipped": skipped,
        "codec": {**asdict(codec), "ratio": codec.ratio},
        "targets": _targets(cpu, realtime),
    }
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
