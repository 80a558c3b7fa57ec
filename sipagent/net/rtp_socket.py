"""RTP sockets: port allocation from a fixed range, symmetric RTP and latching.

We send from the port we advertise (symmetric RTP, RFC 4961) and, once a packet arrives, send
to where it really came from rather than to the SDP address: a caller behind NAT advertises a
private address, and carriers' media relays often send from another port than they announce.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Callable
from typing import cast

log = logging.getLogger("sipagent.rtp")

Addr = tuple[str, int]


class PortRangeExhausted(RuntimeError):
    """Every even port in the configured RTP range is in use."""


class RtpSocket(asyncio.DatagramProtocol):
    """One call's RTP port."""

    def __init__(self, on_packet: Callable[[bytes, Addr], None]) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: Addr | None = None
        self.latched = False
        self.port = 0
        self.last_received: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if not self.latched or source != self.remote:
            # Latch on the first packet, and re-latch if the peer's source moves (re-INVITE,
            # NAT rebinding): the newest source is where the caller can hear us.
            self.remote = source
            self.latched = True
        self.last_received = asyncio.get_running_loop().time()
        self.on_packet(data, source)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error on port %d: %s", self.port, exc)

    def set_remote(self, address: str, port: int) -> None:
        """The SDP address; used until the first packet lets us latch."""
        if not self.latched:
            self.remote = (address, port)

    def send(self, data: bytes) -> None:
        """Send to the latched (or SDP) address."""
        if self.transport is not None and self.remote is not None and self.remote[1] != 0:
            self.transport.sendto(data, self.remote)

    def close(self) -> None:
        """Release the port."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def open_rtp_socket(
    bind: str, port_min: int, port_max: int, on_packet: Callable[[bytes, Addr], None]
) -> RtpSocket:
    """Bind an RTP socket on a random free even port in ``[port_min, port_max)``.

    Even ports keep RTP/RTCP pairs (RTCP on port + 1) aligned, as RFC 3550 §11 recommends.
    """
    loop = asyncio.get_running_loop()
    first = port_min + (port_min % 2)
    candidates = list(range(first, port_max, 2))
    random.shuffle(candidates)
    for port in candidates[:200]:
        protocol = RtpSocket(on_packet)
        try:
            await loop.create_datagram_endpoint(lambda p=protocol: p, local_addr=(bind, port))  # type: ignore[misc]
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        protocol.port = port
        return protocol
    raise PortRangeExhausted(f"no free even RTP port in {port_min}-{port_max}")
