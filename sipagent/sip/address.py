"""Where datagrams come from and go to, as the sans-IO core sees it.

The core never touches a socket; it names a peer by transport and address and the network
adapter maps that to a UDP socket or an existing TCP/TLS connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .message import Request, Response
from .uri import SipUri

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")
DEFAULT_PORTS: dict[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}


def as_transport(name: str) -> Transport:
    """Validate a transport name (case-insensitive) from a URI, Via or config."""
    lowered = name.lower()
    for transport in TRANSPORTS:
        if transport == lowered:
            return transport
    raise ValueError(f"unsupported transport {name!r}")


@dataclass(frozen=True)
class Address:
    """A transport plus host and port: one UDP peer or one stream connection's far end."""

    transport: Transport
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """Stream transports deliver in order without loss, so retransmit timers do not run."""
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


@dataclass(frozen=True)
class Outgoing:
    """Bytes the core wants sent, and where. ``message`` is kept for logging and tests."""

    destination: Address
    message: Request | Response
    data: bytes


def uri_address(uri: SipUri) -> Address:
    """Where to send a request for ``uri`` (RFC 3263 without DNS SRV/NAPTR: host, port, transport).

    Name resolution is the adapter's job; the core only says host, port and transport.
    """
    transport = as_transport(uri.transport)
    return Address(transport, uri.host.strip("[]"), uri.port or DEFAULT_PORTS[transport])


def stamp_via(request: Request, source: Address) -> None:
    """Add ``received``/``rport`` to the top Via per RFC 3261 §18.2.1 and RFC 3581 §4.

    Responses are then routed back to where the request really came from, through any NAT.
    """
    top = request.top_via()
    params: dict[str, str | None] = {}
    if top.host.strip("[]") != source.host:
        params["received"] = source.host
    if "rport" in top.params:
        params["rport"] = str(source.port)
        params.setdefault("received", source.host)
    if params:
        request.headers.replace_top("Via", str(top.with_params(**params)))


def response_address(response: Response, connection: Address | None) -> Address:
    """Where a UAS sends a response (§18.2.2, RFC 3581 §4).

    Over a stream the response goes back on the connection the request arrived on. Over UDP it
    goes to ``received`` (or the Via host) and ``rport`` (or the Via port).
    """
    via = response.top_via()
    if connection is not None and connection.reliable:
        return connection
    host = via.params.get("received") or via.host.strip("[]")
    rport = via.params.get("rport")
    port = int(rport) if rport and rport.isdigit() else via.port or DEFAULT_PORTS["udp"]
    return Address("udp", host, port)
