"""Part 2 of the media benchmark: real time, real sockets (and the naive pacer baseline).

``calls`` :class:`MediaTransport` s on one event loop in one process, bound on 127.0.0.1, each
echoing the speech a *peer* replays to it every 20 ms. The peer's one socket pair feeds every call
and, because sipagent answers symmetric RTP to where the packets come from, also receives (counts
and discards) every packet the calls send. The peer runs either in a second process (the server
process does only the server's work: the realistic figure) or in the same event loop (the server
pays for the peer's 2 × calls × 50 packets/s too). Send-time error is
:attr:`MediaTransport.send_errors`: when each tick's packet really left minus when it was due.
Calls start at random phases within 20 ms, as real calls do. A ``work none`` run
(:class:`_BareCall`) measures the loop and sockets alone (one timer and one readiness callback
per call, the way the media adapter worked before the shared clock).

Beside the calls, on the same loop, runs the baseline for pacing: a naive
``await asyncio.sleep(0.02)`` pacer, whose lateness against the absolute schedule
``t0 + n·20 ms`` only grows.

The event loop is ``asyncio``'s own or, by name, any module with a ``new_event_loop`` (uvloop,
which is not a project dependency: see :func:`uvloop_available`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import math
import multiprocessing
import os
import random
import resource
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

from benchkit.api_load import ApiLoad
from benchkit.common import (
    FRAME,
    FRAME_US,
    HOST,
    PORT_MAX,
    PORT_MIN,
    CallStream,
    bind_pair,
    machine_busy,
    negotiate,
    new_session,
    percentile,
)
from sipagent.net.media import MediaTransport
from sipagent.net.media_clock import MediaClock
from sipagent.rtp.events import MediaEvent
from sipagent.rtp.frames import PTIME_MS
from sipagent.rtp.session import RtpSession, Tick
from sipagent.rtp.window import FloatWindow
from sipagent.voice.vad import WebRtcVad

_TS_SSRC = struct.Struct("!II")
_SO_TIMESTAMPNS = 35  # Linux (asm-generic), as sipagent.net.media uses it
_TIMESPEC = struct.Struct("@qq")
#: The naive sleep(0.02) pacer's stream, which the peer leaves out of its arrival statistics.
NAIVE_SSRC = 0x0BADCAFE
_SILENCE = (bytes([0xFF]) * 160,)


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
        return percentile(spread, 0.50), percentile(spread, 0.99)


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


def _peer_process(
    conn: Connection, speech: Sequence[bytes], seed: int, cpus: set[int] | None, priority: bool
) -> None:
    """The peer in its own process: sends on schedule and drains its sockets on its own timer.

    The peer never waits *on* its sockets. Over loopback the sender's ``sendto`` delivers the
    datagram itself and, if a process sleeps on that socket, wakes it: with the peer in
    ``epoll_wait`` on its RTP socket, each of the server's 12 500 packets a second at 250 calls
    would pay for waking the peer on the other core (an inter-processor interrupt, costly in a
    VM), a cost no real peer behind a NIC puts on the server. So the peer sleeps until its next
    send (every millisecond) and reads what arrived then, with the kernel's arrival timestamps
    (``SO_TIMESTAMPNS``) keeping the arrival times exact.
    """
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    if priority:
        _realtime_priority()
    rtp, rtcp = bind_pair()
    for sock in (rtp, rtcp):
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    stamped = _enable_timestamps(rtp)
    ancillary_size = socket.CMSG_SPACE(_TIMESPEC.size) if stamped else 0
    conn.send(rtp.getsockname()[1])
    ports, duration, measure_after = conn.recv()
    feeder = _Feeder(speech, ports, seed)
    stats = _PeerStats()
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
            time.sleep(wait)
        wall_offset = time.time() - time.monotonic()
        while True:
            try:
                data, ancillary, _flags, _source = rtp.recvmsg(2048, ancillary_size)
            except BlockingIOError:
                break
            arrival = time.monotonic()
            if ancillary:
                seconds, nanoseconds = _TIMESPEC.unpack_from(ancillary[0][2])
                arrival = min(arrival, seconds + nanoseconds * 1e-9 - wall_offset)
            stats.on_rtp(data, arrival)
        while True:
            try:
                rtcp.recv(2048)
            except BlockingIOError:
                break
            stats.rtcp_received += 1
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


def _enable_timestamps(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return sys.platform == "linux"


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


def _bench_transport(
    session: RtpSession, on_tick: Callable[[Tick], None], clock: MediaClock
) -> MediaTransport:
    """A :class:`MediaTransport` whose events the benchmark ignores (a function: the class is
    compiled, and compiled classes take no interpreted subclasses)."""
    return MediaTransport(session, on_tick, _ignore_media_event, clock)


def _ignore_media_event(event: MediaEvent) -> None:
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
        self.send_errors = FloatWindow(3000)
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
    sent_ahead: float = 0.0  # per second: slots whose packets went out before their own timer fired
    runqueue_wait: float = 0.0  # share of the wall time the server was runnable but not running
    pinned: str = ""  # "server 0, peer 1": the CPUs each process was pinned to ("" not pinned)
    #: work "inf-proc"/"inf-thre": the voice jobs that ran meanwhile (stt, llm, tts counts).
    inference_jobs: dict[str, int] = field(default_factory=dict)
    priority: str = ""  # "SCHED_RR 10": the scheduling class with --rt-priority ("" normal)
    #: work "api": the control API load served on the same loop meanwhile (benchkit.api_load).
    api: dict[str, float] = field(default_factory=dict)


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
    api: ApiLoad | None = None,
) -> tuple[RealtimeRun, _PeerStats | None]:
    """Run ``calls`` transports; with ``peer_port`` None the peer runs on this same loop."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    peer: _PeerProtocol | None = None
    peer_stats: _PeerStats | None = None
    closers: list[Callable[[], None]] = []
    if peer_port is None:
        rtp_sock, rtcp_sock = bind_pair()
        peer_port = rtp_sock.getsockname()[1]
        peer_stats = _PeerStats()
        rtp_end, peer = await loop.create_datagram_endpoint(lambda: _PeerProtocol(peer_stats), sock=rtp_sock)
        rtcp_end, _ = await loop.create_datagram_endpoint(lambda: _PeerProtocol(None), sock=rtcp_sock)
        closers += [rtp_end.close, rtcp_end.close]
    transports: list[MediaTransport | _BareCall] = []
    clock = MediaClock(loop)
    for index in range(calls):
        if bare:
            factory = functools.partial(_BareCall, CallStream.draw(rng, 1), (HOST, peer_port))
            _, bare_call = await loop.create_datagram_endpoint(factory, local_addr=(HOST, 0))
            transports.append(bare_call)
        else:
            session = new_session(rng, index, loop.time())
            media = _bench_transport(session, _echo_and_listen(session, WebRtcVad()), clock)
            session.configure(negotiate(await media.bind(HOST, PORT_MIN, PORT_MAX, rng), peer_port, index))
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
    if api is not None:  # the API's requests start with the warm-up, as the peer's packets do
        await api.start(calls, duration=warmup + seconds + 0.5, measure_after=warmup)

    await asyncio.sleep(warmup)
    # Every tick of the measured run stays in its call's window (sized for the run), and the
    # 1 s windows are cut afterwards from counts noted each second: copying and sorting the
    # samples inside the loop every second would stall it for milliseconds and show up as the
    # very lateness being measured.
    capacity = int((seconds + 2.0) * 1.1 / FRAME) + 64
    for transport in transports:
        transport.send_errors = FloatWindow(capacity)
        if isinstance(transport, _BareCall):
            transport.wakeups = 0
    clock.wakeups = clock.sent_ahead = 0
    naive_errors: list[float] = []
    tasks.append(asyncio.create_task(_naive_pacer(peer_port, naive_errors)))
    counts: list[list[int]] = []
    usage0, busy0, wall0 = resource.getrusage(resource.RUSAGE_SELF), machine_busy(), time.perf_counter()
    wait0 = _runqueue_wait()
    if api is not None:
        api.mark()
    remaining = seconds
    while remaining > 0:
        await asyncio.sleep(min(1.0, remaining))
        remaining -= 1.0
        counts.append([len(transport.send_errors) for transport in transports])
    usage1, busy1, wall1 = resource.getrusage(resource.RUSAGE_SELF), machine_busy(), time.perf_counter()
    wait1 = _runqueue_wait()
    samples = [transport.send_errors.values() for transport in transports]
    errors: list[float] = []
    window_p99: list[float] = []
    previous = [0] * len(transports)
    for marks in counts:
        window = [value for held, a, b in zip(samples, previous, marks, strict=True) for value in held[a:b]]
        window_p99.append(percentile(sorted(window), 0.99))
        errors.extend(window)
        previous = marks
    wakeups = clock.wakeups + sum(t.wakeups for t in transports if isinstance(t, _BareCall))
    jitter = [t.session.jitter.stats for t in transports if isinstance(t, MediaTransport)]
    api_report = await api.stop() if api is not None else {}
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
            work="none" if bare else "api" if api is not None else "media",
            sink="same loop" if peer is not None else "process",
            calls=calls,
            seconds=wall,
            ticks=ticks,
            send_error_p50_ms=percentile(errors, 0.50) * 1000,
            send_error_p99_ms=percentile(errors, 0.99) * 1000,
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
            naive_p50_ms=percentile(naive_errors_sorted, 0.50) * 1000,
            naive_p99_ms=percentile(naive_errors_sorted, 0.99) * 1000,
            naive_drift_ms=naive_errors[-1] * 1000 if naive_errors else 0.0,
            naive_rate_pps=len(naive_errors) / wall,
            concealed_fraction=sum(j.lost for j in jitter) / max(1, sum(j.received for j in jitter)),
            late_fraction=sum(j.late for j in jitter) / max(1, sum(j.received for j in jitter)),
            jitter_delay_ms=statistics.median(j.delay_ms for j in jitter) if jitter else 0.0,
            peer={},
            sent_ahead=clock.sent_ahead / wall,
            runqueue_wait=(wait1 - wait0) / wall,
            api=api_report,
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


def _runqueue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


#: SCHED_RR priority of the server and the peer with ``priority`` (1-99; FreeSWITCH's -rp uses
#: the real-time class too). The kernel keeps 5 % of each second for other tasks
#: (sched_rt_runtime_us), so a runaway loop cannot take the core entirely.
RT_PRIORITY = 10


def _realtime_priority() -> bool:
    """Run this process in the SCHED_RR real-time class; False where that is not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
    except (AttributeError, OSError):
        return False
    return True


def _placement(pin: bool) -> tuple[set[int], set[int]] | None:
    """CPUs for (server, peer): one core each, when pinning is asked for and two are available.

    Unpinned, the kernel's wake-affine placement often runs the peer on the server's core (over
    loopback every packet the server sends wakes the peer from the server's own CPU), and the
    server then waits in the run queue behind the load generator: not "the server on one core".
    """
    if not pin or not hasattr(os, "sched_setaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    return {available[0]}, {available[1]}


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
    pin: bool = True,
    priority: bool = False,
    loop_nice: int = 0,
    api_rps: float = 0.0,
) -> RealtimeRun:
    """Part 2: ``calls`` transports on one ``loop`` for ``seconds`` (after ``warmup``).

    ``sink`` is ``"process"`` (the peer in a second process) or ``"loop"`` (the same event loop);
    ``bare`` replaces the calls by :class:`_BareCall` s: what the loop and sockets cost alone.
    ``pin`` runs the server on one core and a peer process on another (:func:`_placement`);
    ``priority`` runs both in the real-time scheduling class (:data:`RT_PRIORITY`), so that on a
    shared box other programs cannot take the server's core while it has work: deployments of
    media servers do the same, and it is what "on one core" means when the box is not ours alone.
    ``loop_nice`` below 0 raises the loop's thread as ``serve`` does (``rtp.loop_nice``, root).
    ``api_rps`` above 0 serves the control API on the same loop under that many requests a second
    (:mod:`benchkit.api_load`; the load generator runs on the peer's core when pinned).
    """
    if sink not in ("process", "loop"):
        raise ValueError(f"sink must be 'process' or 'loop', got {sink!r}")
    placement = _placement(pin)
    previous_cpus = os.sched_getaffinity(0) if placement is not None else None
    peer: multiprocessing.process.BaseProcess | None = None
    link: Connection | None = None
    start_peer: Callable[[list[int]], None] | None = None
    if sink == "process":
        # Forked before this process has an event loop; the peer gets the ports once bound.
        context = multiprocessing.get_context("fork")
        link, child = context.Pipe()
        peer_cpus = placement[1] if placement is not None else None
        peer = context.Process(
            target=_peer_process, args=(child, speech, seed + 1, peer_cpus, priority), daemon=True
        )
        peer.start()
        parent = link

        def start_peer(ports: list[int]) -> None:
            parent.send((ports, warmup + seconds + 1.0, warmup))

    # Forked before the loop exists too; it gets the API's address once the API listens.
    api = ApiLoad(api_rps, placement[1] if placement is not None else None) if api_rps > 0 else None
    gc.collect()
    gc.freeze()  # as Server.start does once it is up: the startup heap is not walked by the collector
    report: dict[str, float] = {}
    if placement is not None:
        os.sched_setaffinity(0, placement[0])
    prioritised = priority and _realtime_priority()
    thread = threading.get_native_id()
    nice_before = os.getpriority(os.PRIO_PROCESS, thread)
    if loop_nice:
        os.setpriority(os.PRIO_PROCESS, thread, loop_nice)
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
                    api=api,
                )
            )
    finally:
        if loop_nice:
            os.setpriority(os.PRIO_PROCESS, thread, nice_before)
        if prioritised:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if previous_cpus is not None:
            os.sched_setaffinity(0, previous_cpus)
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
    result.priority = f"SCHED_RR {RT_PRIORITY}" if prioritised else (f"nice {loop_nice}" if loop_nice else "")
    if placement is not None:
        server_cpus, peer_cpus = placement
        result.pinned = f"server {min(server_cpus)}"
        if sink == "process":
            result.pinned += f", peer {min(peer_cpus)}"
    return result
