"""asyncio adapter between SIP sockets and the sans-IO :class:`SipEndpoint`.

The only place signalling touches the OS. It

* listens on UDP, TCP and TLS and feeds every datagram / framed message to the endpoint with
  the loop's monotonic time;
* sends what the endpoint queues: UDP from the listening socket (symmetric signalling, which is
  what NATs and carriers expect), TCP/TLS over an existing connection to that address when there
  is one (in-dialog requests reuse the flow the call arrived on) or a new one (SNI = host name);
* arms exactly one timer at ``endpoint.get_timer()`` with ``loop.call_at``;
* answers RFC 5626 CRLFCRLF pings with a CRLF pong and can send pings itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable

from ..logs import outside_calls_context
from ..sip.address import Address, Outgoing, Transport
from ..sip.endpoint import SipEndpoint
from ..sip.errors import RemoteProtocolError
from ..sip.events import Event
from ..sip.message import (
    Keepalive,
    MalformedMessage,
    Request,
    Response,
    StreamFramer,
    StreamItem,
    error_response_for,
)
from ..sip.sdes import redact_crypto_keys

log = logging.getLogger("sipagent.sip")

_REDACTED_HEADERS = ("authorization:", "proxy-authorization:")


def _trace(data: bytes) -> str:
    """A message for the debug log with digest answers and SDES keys blanked out."""
    lines = redact_crypto_keys(data.decode("utf-8", "replace")).split("\r\n")
    return "\n".join(
        line.split(":", 1)[0] + ": <redacted>" if line.lower().startswith(_REDACTED_HEADERS) else line
        for line in lines
    )


def default_local_address() -> str:
    """The address of the interface that holds the default route, or 127.0.0.1 without one.

    Connecting a UDP socket only asks the kernel for a route: no packet is sent. 192.0.2.1 is
    TEST-NET-1, so the answer is the route to "anywhere", not to a real host.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, network: SipNetwork) -> None:
        self.network = network

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.network.on_datagram(data, Address("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers will notice the silence.
        log.debug("UDP error: %s", exc)


class _Connection:
    """One TCP/TLS connection (accepted or opened), framed by Content-Length."""

    def __init__(self, network: SipNetwork, address: Address) -> None:
        self.network = network
        self.address = address
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self.writer is None:
            self.pending.append(data)
        else:
            self.writer.write(data)

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        for data in self.pending:
            writer.write(data)
        self.pending.clear()
        framer = StreamFramer()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    items = framer.feed(data)
                except RemoteProtocolError as exc:
                    log.warning("closing %s: %s", self.address, exc)
                    break
                for item in items:
                    self._dispatch(item)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("connection %s ended: %s", self.address, exc)
        finally:
            self.network.forget(self)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _dispatch(self, item: StreamItem) -> None:
        if isinstance(item, Keepalive):
            if item.ping and self.writer is not None:
                self.writer.write(b"\r\n")
            return
        if isinstance(item, MalformedMessage):
            response = error_response_for(item.data, item.error)
            if response is not None and self.writer is not None:
                self.writer.write(response.serialize())
            return
        self.network.on_message(item, self.address)


class SipNetwork:
    """Sockets, connections and the timer around one endpoint."""

    def __init__(
        self,
        on_event: Callable[[Event], None],
        *,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        # The endpoint is attached after binding: its Via/Contact need the bound ports.
        self.endpoint: SipEndpoint | None = None
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.client_ssl = client_ssl or ssl.create_default_context()
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Address, _Connection] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._pumping = False
        self._resolved: dict[str, str] = {}
        #: TLS peers found by RFC 3263 under a name: the certificate must match that SIP domain
        #: (RFC 5922 §4), not the address it resolved to.
        self.tls_names: dict[Address, str] = {}
        self.bound: dict[Transport, int] = {}

    def attach(self, endpoint: SipEndpoint) -> None:
        """Start feeding ``endpoint``; traffic before this is dropped."""
        self.endpoint = endpoint

    def now(self) -> float:
        """The clock the endpoint runs on."""
        return self.loop.time()

    # -- listeners -------------------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int) -> int:
        """Bind the UDP listener; returns the bound port (useful with port 0)."""
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port)
        )
        self._udp = transport
        self.bound["udp"] = int(transport.get_extra_info("sockname")[1])
        return self.bound["udp"]

    async def listen_stream(
        self, transport: Transport, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> int:
        """Bind a TCP (or, with ``ssl_context``, TLS) listener; returns the bound port."""

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            address = Address(transport, str(peer[0]), int(peer[1]))
            connection = _Connection(self, address)
            self._connections[address] = connection
            await connection.run(reader, writer)

        server = await asyncio.start_server(accepted, host, port, ssl=ssl_context)
        self._servers.append(server)
        self.bound[transport] = int(server.sockets[0].getsockname()[1])
        return self.bound[transport]

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._timer is not None:
            self._timer.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            if connection.writer is not None:
                connection.writer.close()
            if connection.task is not None:
                connection.task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    # -- input -----------------------------------------------------------------------------------
    def on_datagram(self, data: bytes, source: Address) -> None:
        """A UDP datagram arrived."""
        if data in (b"\r\n\r\n", b"\r\n"):
            return  # a NAT keepalive some phones send over UDP
        if self.endpoint is None:
            return
        log.debug("recv %s\n%s", source, _trace(data))
        self.endpoint.receive_datagram(data, source, self.now())
        self.pump()

    def on_message(self, message: Request | Response, source: Address) -> None:
        """A framed message arrived on a stream."""
        if self.endpoint is None:
            return
        log.debug("recv %s\n%s", source, _trace(message.serialize()))
        self.endpoint.receive_message(message, source, self.now())
        self.pump()

    def forget(self, connection: _Connection) -> None:
        """A connection closed."""
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]

    # -- output and timer -------------------------------------------------------------------------
    def pump(self) -> None:
        """Send what the endpoint queued, hand events to the app, re-arm the timer.

        Event handlers may call endpoint commands, which queue more; loop until quiet.
        """
        if self._pumping or self.endpoint is None:
            return
        self._pumping = True
        try:
            while True:
                outgoing = self.endpoint.datagrams_to_send(self.now())
                for out in outgoing:
                    self.send(out)
                event = self.endpoint.next_event()
                if event is not None:
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("event handler failed on %s", type(event).__name__)
                elif not outgoing:
                    break
        finally:
            self._pumping = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        assert self.endpoint is not None
        deadline = self.endpoint.get_timer()
        if self._timer is not None:
            if deadline is not None and abs(self._timer.when() - deadline) < 1e-6:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            # Every call's transactions share this timer: it must not run as the work of whichever
            # call's event re-armed it (the log lines' call_id, sipagent/logs.py).
            self._timer = self.loop.call_at(deadline, self._on_timer, context=outside_calls_context())

    def _on_timer(self) -> None:
        self._timer = None
        if self.endpoint is not None:
            self.endpoint.handle_timer(self.now())
        self.pump()

    def send(self, out: Outgoing) -> None:
        """Put one message on the wire."""
        destination = out.destination
        log.debug("send %s\n%s", destination, _trace(out.data))
        if destination.transport == "udp":
            self._send_udp(out.data, destination)
            return
        connection = self._connections.get(destination)
        if connection is None:
            connection = self._connect(destination)
        connection.write(out.data)

    def send_keepalive(self, destination: Address) -> None:
        """RFC 5626 CRLFCRLF ping on a stream flow (opened if needed)."""
        connection = self._connections.get(destination) or self._connect(destination)
        connection.write(b"\r\n\r\n")

    def _send_udp(self, data: bytes, destination: Address) -> None:
        if self._udp is None:
            log.error("no UDP listener to send to %s", destination)
            return
        host = destination.host if _is_ip(destination.host) else self._resolved.get(destination.host)
        if host is not None:
            self._udp.sendto(data, (host, destination.port))
            return
        self.loop.create_task(self._resolve_and_send(data, destination))

    async def _resolve_and_send(self, data: bytes, destination: Address) -> None:
        try:
            infos = await self.loop.getaddrinfo(destination.host, destination.port, type=2)  # SOCK_DGRAM
        except OSError as exc:
            log.warning("cannot resolve %s: %s", destination.host, exc)
            return
        host = str(infos[0][4][0])
        self._resolved[destination.host] = host
        if self._udp is not None:
            self._udp.sendto(data, (host, destination.port))

    def _connect(self, destination: Address) -> _Connection:
        connection = _Connection(self, destination)
        self._connections[destination] = connection

        async def open_and_run() -> None:
            tls = destination.transport == "tls"
            try:
                # With ssl set, asyncio uses server_hostname (else the host) as SNI and for the
                # certificate check.
                reader, writer = await asyncio.open_connection(
                    destination.host,
                    destination.port,
                    ssl=self.client_ssl if tls else None,
                    server_hostname=self.tls_names.get(destination) if tls else None,
                )
            except (OSError, ssl.SSLError) as exc:
                log.warning("cannot connect to %s: %s", destination, exc)
                self.forget(connection)
                return
            await connection.run(reader, writer)

        # The connection carries every call's messages, not the one whose request opened it.
        connection.task = self.loop.create_task(open_and_run(), context=outside_calls_context())
        return connection
