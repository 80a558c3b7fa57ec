"""asyncio adapter for one call's media: the RTP and RTCP sockets around an :class:`RtpSession`.

RTP binds an even port from the configured range and RTCP the odd port above it (RFC 3550 §11);
both send from the port we advertise (symmetric RTP). One ``loop.call_at`` timer follows
``session.get_timer()``, which is the absolute 20 ms schedule, so lateness never accumulates.
The send-time error of every tick (when its packet really left minus when it was due) is kept
for the benchmarks and the health endpoint: it is the figure callers' ears judge.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import cast

from ..rtp.events import MediaEvent
from ..rtp.session import RtpSession, Tick

log = logging.getLogger("sipagent.rtp")

Addr = tuple[str, int]
_ARM_EARLY_S = 0.001
#: How many recent ticks the send-time error percentiles cover.
_ERROR_WINDOW = 3000


class PortRangeExhausted(RuntimeError):
    """No free even/odd port pair is left in the configured RTP range."""


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("media socket error: %s", exc)


class MediaTransport:
    """Sockets, timer and delivery for one :class:`RtpSession`."""

    def __init__(
        self,
        session: RtpSession,
        on_tick: Callable[[Tick], None],
        on_event: Callable[[MediaEvent], None],
    ) -> None:
        self.session = session
        self.on_tick = on_tick
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.rtp = _Socket(self._on_rtp)
        self.rtcp = _Socket(self._on_rtcp)
        self.port = 0
        self._timer: asyncio.TimerHandle | None = None
        self.send_errors: deque[float] = deque(maxlen=_ERROR_WINDOW)
        self.closed = False

    async def bind(self, host: str, port_min: int, port_max: int, rng: random.Random | None = None) -> int:
        """Bind RTP on a free even port in ``[port_min, port_max)`` and RTCP on the next one."""
        first = port_min + (port_min % 2)
        candidates = list(range(first, port_max - 1, 2))
        (rng or random.Random()).shuffle(candidates)
        for port in candidates[:256]:
            try:
                await self.loop.create_datagram_endpoint(lambda: self.rtp, local_addr=(host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            try:
                await self.loop.create_datagram_endpoint(lambda: self.rtcp, local_addr=(host, port + 1))
            except OSError as exc:
                assert self.rtp.transport is not None
                self.rtp.transport.close()
                self.rtp = _Socket(self._on_rtp)
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            self.port = port
            return port
        raise PortRangeExhausted(f"no free RTP/RTCP port pair in {port_min}-{port_max}")

    def start(self) -> None:
        """Start the 20 ms clock now."""
        self.session.start(self.loop.time())
        self.pump()

    def _on_rtp(self, data: bytes, source: Addr) -> None:
        self.session.receive_rtp(data, source, self.loop.time())
        self.pump()

    def _on_rtcp(self, data: bytes, source: Addr) -> None:
        self.session.receive_rtcp(data, source, self.loop.time())
        self.pump()

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(self.loop.time())
        self.pump()

    def pump(self) -> None:
        """Send what the session queued, deliver ticks and events, re-arm the timer."""
        if self.closed:
            return
        now = self.loop.time()
        for datagram in self.session.datagrams_to_send(now):
            sock = self.rtcp if datagram.rtcp else self.rtp
            if sock.transport is not None:
                sock.transport.sendto(datagram.data, datagram.destination)
        sent_at = self.loop.time()
        while (tick := self.session.next_tick()) is not None:
            self.send_errors.append(sent_at - tick.time)
            self.on_tick(tick)
        while (event := self.session.next_event()) is not None:
            self.on_event(event)
        deadline = self.session.get_timer()
        if deadline is not None:
            # Loop timers fire up to ~1 ms late (millisecond epoll timeouts); the session accepts
            # a tick 1 ms early, so arming early centres the send-time error on zero.
            deadline -= _ARM_EARLY_S
        if self._timer is not None and (deadline is None or abs(self._timer.when() - deadline) > 1e-6):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def close(self) -> None:
        """Send the RTCP BYE, stop the timer and release both ports."""
        if self.closed:
            return
        self.session.close(self.loop.time())
        for datagram in self.session.datagrams_to_send(self.loop.time()):
            sock = self.rtcp if datagram.rtcp else self.rtp
            if sock.transport is not None:
                sock.transport.sendto(datagram.data, datagram.destination)
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for sock in (self.rtp, self.rtcp):
            if sock.transport is not None:
                sock.transport.close()
                sock.transport = None

    def send_error_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of recent send-time errors, in milliseconds."""
        if not self.send_errors:
            return (0.0, 0.0)
        ordered = sorted(self.send_errors)
        return (
            ordered[len(ordered) // 2] * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        )
