"""What :mod:`.media` needs that cannot be compiled with it (mypyc compiles no subclasses of
Python or most builtin classes): the RTCP socket's asyncio protocol (RTCP is a few packets a
second, so a selector callback per packet is fine, unlike RTP, read on the tick) and the error
for a full port range.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from ..errors import SipAgentError

log = logging.getLogger("sipagent.rtp")

Addr = tuple[str, int]


class PortRangeExhausted(SipAgentError, RuntimeError):
    """No free even/odd port pair is left in the configured RTP range."""


class RtcpSocket(asyncio.DatagramProtocol):
    """Hands every datagram to ``on_datagram``; ``transport`` sends."""

    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("RTCP socket error: %s", exc)
