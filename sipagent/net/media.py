"""asyncio adapter for one call's media: the RTP and RTCP sockets around an :class:`RtpSession`.

RTP binds an even port from the configured range and RTCP the odd port above it (RFC 3550 §11);
both send from the port we advertise (symmetric RTP).

**RTP is read on the tick, not on readiness.** The jitter buffer hands out one frame per 20 ms
tick, so a packet is of no use before the next tick; instead of a selector callback per packet
(epoll, a handle, ``recvfrom`` and a protocol call, about half the per-call cost at load), each
tick first drains the non-blocking RTP socket and then runs the session, as FreeSWITCH's media
loop does. What a packet's arrival *time* means to the jitter buffer (transit, jitter, late or
not) is kept exact by the kernel's receive timestamp (``SO_TIMESTAMPNS``), not the time of the
read. DTMF and media-timeout detection move by at most one tick. RTCP, a few packets a second,
stays on an ordinary asyncio endpoint.

The tick timers come from a shared :class:`MediaClock` (one loop timer per millisecond slot for
all calls). The send-time error of every tick (when its packet really left minus when it was due)
is kept for the benchmarks and the call's summary: it is the figure callers' ears judge.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import platform
import random
import socket
import struct
import sys
from collections.abc import Callable

from ..rtp.events import MediaEvent
from ..rtp.session import MediaDatagram, RtpSession, Tick
from ..rtp.window import FloatWindow
from .media_clock import MediaClock
from .media_sockets import Addr, PortRangeExhausted, RtcpSocket

log = logging.getLogger("sipagent.rtp")

#: How many recent ticks the send-time error percentiles cover.
_ERROR_WINDOW = 3000
#: Packets read per tick at most: a flood waits in the kernel instead of starving other calls.
_MAX_READ_PER_TICK = 64
_MAX_DATAGRAM = 2048
# Linux's SO_TIMESTAMPNS (the asm-generic value, which these 64-bit architectures use, with a
# 64-bit timespec). The kernel stamps each datagram with CLOCK_REALTIME when it arrives;
# elsewhere the read time stands in.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_STAMPED = sys.platform == "linux" and platform.machine() in {"x86_64", "aarch64", "riscv64"}
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if _STAMPED else 0


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MediaTransport:
    """Sockets, tick and delivery for one :class:`RtpSession`."""

    def __init__(
        self,
        session: RtpSession,
        on_tick: Callable[[Tick], None],
        on_event: Callable[[MediaEvent], None],
        clock: MediaClock | None = None,
    ) -> None:
        self.session = session
        self.on_tick = on_tick
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.clock = clock or MediaClock(self.loop)
        self.clock_slot: int | None = None
        #: Where each datagram read from the RTP socket goes (with its source and arrival time).
        self.deliver_rtp: Callable[[bytes, Addr, float], None] = session.receive_rtp
        self._rtp: socket.socket | None = None
        self._stamped = False
        self.rtcp = RtcpSocket(self._on_rtcp)
        self.port = 0
        self.send_errors = FloatWindow(_ERROR_WINDOW)
        #: Datagrams the kernel refused (full buffer, unreachable network): UDP drops them.
        self.send_failures = 0
        self.closed = False
        self._started_at: float | None = None

    async def bind(self, host: str, port_min: int, port_max: int, rng: random.Random | None = None) -> int:
        """Bind RTP on a free even port in ``[port_min, port_max)`` and RTCP on the next one."""
        first = port_min + (port_min % 2)
        candidates = range(first, port_max - 1, 2)
        picks = (rng or random.Random()).sample(candidates, min(256, len(candidates)))
        for port in picks:
            try:
                rtp = _udp_socket(host, port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            try:
                rtcp = _udp_socket(host, port + 1)
            except OSError as exc:
                rtp.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            await self.loop.create_datagram_endpoint(lambda: self.rtcp, sock=rtcp)
            self._rtp = rtp
            self._stamped = _STAMPED and self._enable_timestamps(rtp)
            self.port = port
            return port
        raise PortRangeExhausted(f"no free RTP/RTCP port pair in {port_min}-{port_max}")

    @staticmethod
    def _enable_timestamps(sock: socket.socket) -> bool:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return False
        return True

    def start(self) -> None:
        """Start the 20 ms clock, within the next 20 ms at the least busy phase of the shared clock
        (:meth:`MediaClock.claim_start`)."""
        if self._started_at is not None:
            raise RuntimeError("the media clock has already been started")
        self._started_at = self.clock.claim_start(self.loop.time())
        self.session.start(self._started_at)
        self.pump()

    # ------------------------------------------------------------------ input
    def _read_rtp(self, now: float, wall_offset: float) -> None:
        """Hand every datagram waiting on the RTP socket to the session, with its arrival time."""
        sock = self._rtp
        if sock is None:
            return
        receive = self.deliver_rtp
        for _ in range(_MAX_READ_PER_TICK):
            try:
                if self._stamped:
                    data, ancillary, _flags, source = sock.recvmsg(_MAX_DATAGRAM, _ANCILLARY)
                else:
                    data, source = sock.recvfrom(_MAX_DATAGRAM)
                    ancillary = []
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Unconnected UDP sockets rarely report errors; never spin on one that does.
                log.debug("RTP socket error: %s", exc)
                return
            arrival = now
            if ancillary:
                _level, _kind, stamp = ancillary[0]
                seconds, nanoseconds = _TIMESPEC.unpack_from(stamp)
                arrival = min(now, seconds + nanoseconds * 1e-9 - wall_offset)
            if len(source) > 2:  # IPv6: (host, port, flowinfo, scope_id)
                source = (source[0], source[1])
            receive(data, source, arrival)

    def _on_rtcp(self, data: bytes, source: Addr) -> None:
        self.session.receive_rtcp(data, source, self.loop.time())
        self.pump()

    # ------------------------------------------------------------------ the tick
    def on_send(self, now: float) -> None:
        """The clock's first pass: send the packets of the ticks due, and note how late they left."""
        if self.closed:
            return
        session = self.session
        ticks = session.send_due(now)
        if ticks:
            self._send(session.datagrams_to_send(now))
            sent_at = self.loop.time()
            for tick_time in ticks:
                self.send_errors.append(sent_at - tick_time)

    def on_clock(self, now: float, wall_offset: float) -> None:
        """The clock says the session's deadline is due: read, tick, send, deliver, re-arm."""
        if self.closed:
            return
        try:
            self.on_send(now)  # done already when the clock ran its first pass
            self._read_rtp(now, wall_offset)
            self.session.handle_timer(now)
        finally:
            self.pump()

    def pump(self) -> None:
        """Send what the session queued, deliver ticks and events, re-arm the clock."""
        if self.closed:
            return
        session = self.session
        self._send(session.datagrams_to_send(self.loop.time()))
        if session.has_ticks:
            on_tick = self.on_tick
            while (tick := session.next_tick()) is not None:
                on_tick(tick)
        while (event := session.next_event()) is not None:
            self.on_event(event)
        self.clock.schedule(self, session.get_timer())

    def _send(self, datagrams: list[MediaDatagram]) -> None:
        for datagram in datagrams:
            try:
                if datagram.rtcp:
                    if self.rtcp.transport is not None:
                        self.rtcp.transport.sendto(datagram.data, datagram.destination)
                elif self._rtp is not None:
                    self._rtp.sendto(datagram.data, datagram.destination)
            except OSError as exc:
                # A full socket buffer or an unreachable peer: UDP drops it, the next tick goes on.
                self.send_failures += 1
                if self.send_failures == 1:
                    log.warning("media send to %s failed: %s", datagram.destination, exc)

    def close(self) -> None:
        """Send the RTCP BYE, stop the clock and release both ports."""
        if self.closed:
            return
        self.session.close(self.loop.time())
        self._send(self.session.datagrams_to_send(self.loop.time()))
        self.closed = True
        self.clock.schedule(self, None)
        if self._started_at is not None:
            self.clock.release_start(self._started_at)
        if self._rtp is not None:
            self._rtp.close()
            self._rtp = None
        if self.rtcp.transport is not None:
            self.rtcp.transport.close()
            self.rtcp.transport = None

    def send_error_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of recent send-time errors, in milliseconds."""
        if not self.send_errors:
            return (0.0, 0.0)
        ordered = self.send_errors.sorted()
        return (
            ordered[len(ordered) // 2] * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        )
