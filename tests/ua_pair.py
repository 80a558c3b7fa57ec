"""Helpers for sans-IO pair tests of whole user agents (:class:`SipEndpoint`) on a :class:`Network`.

* :class:`Node` puts a :class:`SipEndpoint` on the network, records its events with the virtual
  time they came out, and runs an optional *app* callback on each one (ring, answer, hang up…)
  at the same instant, as the real server's event loop would.
* :class:`Peer` is a scripted, deliberately dumb SIP element built from :mod:`message` alone: a
  carrier, a registrar, a challenging proxy or a raw UAC. It keeps no transactions; the test's
  handler decides what to send, so the peer can misbehave on purpose (no ACK, glare, odd headers).
* :class:`RecordRouteProxy` is a stateless loose-routing proxy that Record-Routes dialogs with two
  entries, as Twilio's edge does.
* Builders for raw messages and SDP bodies, independent of the code under test.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sipagent.sip.address import Address, Outgoing, Transport, uri_address
from sipagent.sip.context import EndpointConfig
from sipagent.sip.endpoint import SipEndpoint
from sipagent.sip.errors import RemoteProtocolError
from sipagent.sip.events import Event
from sipagent.sip.message import Headers, Request, Response, parse_message
from sipagent.sip.uri import NameAddr, SipUri, Via
from tests.sip_pair import Datagram, Link

E = TypeVar("E")

ALICE = Address("udp", "192.0.2.1", 5060)  # our UA placing calls
BOB = Address("udp", "192.0.2.2", 5060)  # our UA taking calls
CARRIER = Address("udp", "198.51.100.7", 5060)  # a scripted peer
PROXY = Address("udp", "192.0.2.50", 5060)
REGISTRAR = Address("udp", "198.51.100.20", 5060)

App = Callable[["Node", Event, float], None]


def token_factory(seed: int) -> Callable[[], str]:
    """Deterministic hex tokens (the endpoint parses some of them as hex)."""
    rng = random.Random(seed)
    return lambda: f"{rng.getrandbits(64):016x}"


def config_for(address: Address, **overrides: Any) -> EndpointConfig:
    """An :class:`EndpointConfig` advertising ``address`` (``overrides``: session_expires…)."""
    ports: dict[Transport, int] = {"udp": address.port, address.transport: address.port}
    return replace(EndpointConfig(public_host=address.host, ports=ports), **overrides)


class Node:
    """A :class:`SipEndpoint` on the :class:`Network`, with an app reacting to its events."""

    def __init__(
        self, address: Address, *, seed: int, app: App | None = None, config: EndpointConfig | None = None
    ) -> None:
        self.address = address
        self.endpoint = SipEndpoint(config or config_for(address), token_factory=token_factory(seed))
        self.app = app
        self.events: list[tuple[float, Event]] = []
        self._now = 0.0

    # -- the Network's Endpoint surface ----------------------------------------------------------
    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self._now = now
        self.endpoint.receive_datagram(data, source, now)
        self.drain(now)

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        self.drain(now)
        return self.endpoint.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.endpoint.handle_timer(now)
        self.drain(now)

    # -- events ------------------------------------------------------------------------------------
    def drain(self, now: float) -> None:
        """Move the endpoint's events into :attr:`events`, running the app on each."""
        while (event := self.endpoint.next_event()) is not None:
            self.events.append((now, event))
            if self.app is not None:
                self.app(self, event, now)

    def of(self, kind: type[E]) -> list[E]:
        """Events of one type, in order."""
        return [e for _, e in self.events if isinstance(e, kind)]

    def times(self, kind: type[object]) -> list[float]:
        """When each event of ``kind`` came out."""
        return [t for t, e in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        """Event class names in order (compact assertions)."""
        return [type(e).__name__ for _, e in self.events]


#: Stands in for the parsed message of hand-written bytes (Outgoing wants one; the link ignores it).
_RAW_PLACEHOLDER = Request("RAW", "sip:raw.invalid")

Handler = Callable[["Peer", Request | Response, Address, float], None]


class Peer:
    """A scripted SIP element: records what it receives, sends what its handler or test says."""

    def __init__(self, address: Address, handler: Handler | None = None) -> None:
        self.address = address
        self.handler = handler
        self.received: list[tuple[float, Request | Response]] = []
        #: Datagrams that did not parse (an error response echoing a malformed request's CSeq…).
        self.unparseable: list[tuple[float, bytes]] = []
        self._outbox: list[Outgoing] = []
        self._scheduled: list[tuple[float, int, Outgoing | Callable[[float], None]]] = []
        self._seq = 0

    def send(self, message: Request | Response, destination: Address) -> None:
        """Queue ``message`` to go out at the current step."""
        self._outbox.append(Outgoing(destination, message, message.serialize()))

    def send_bytes(self, data: bytes, destination: Address) -> None:
        """Queue raw bytes (malformed on purpose, or written by hand to the byte)."""
        self._outbox.append(Outgoing(destination, _RAW_PLACEHOLDER, data))

    def send_at(self, when: float, message: Request | Response, destination: Address) -> None:
        """Queue ``message`` to go out at virtual time ``when``."""
        self._seq += 1
        heapq.heappush(
            self._scheduled, (when, self._seq, Outgoing(destination, message, message.serialize()))
        )

    def call_at(self, when: float, action: Callable[[float], None]) -> None:
        """Run ``action(now)`` at virtual time ``when`` (it may :meth:`send`)."""
        self._seq += 1
        heapq.heappush(self._scheduled, (when, self._seq, action))

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        try:
            message = parse_message(data)
        except RemoteProtocolError:
            self.unparseable.append((now, data))
            return
        self.received.append((now, message))
        if self.handler is not None:
            self.handler(self, message, source, now)

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return self._scheduled[0][0] if self._scheduled else None

    def handle_timer(self, now: float) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            item = heapq.heappop(self._scheduled)[2]
            if isinstance(item, Outgoing):
                self._outbox.append(item)
            else:
                item(now)

    def requests(self, method: str | None = None) -> list[Request]:
        """Requests received (of ``method``), in order."""
        return [m for _, m in self.received if isinstance(m, Request) and method in (None, m.method)]

    def responses(self, status: int | None = None, method: str | None = None) -> list[Response]:
        """Responses received, optionally filtered."""
        return [
            m
            for _, m in self.received
            if isinstance(m, Response)
            and status in (None, m.status)
            and (method is None or m.cseq().method == method)
        ]


class RecordRouteProxy:
    """A stateless loose-routing proxy (RFC 3261 §16.11) that Record-Routes initial INVITEs with
    two entries (``r=a`` facing the callee, ``r=b`` facing the caller), as carriers' edges do."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.seen: list[Request | Response] = []
        self._outbox: list[Outgoing] = []

    def _mine(self, uri: SipUri) -> bool:
        return uri.host == self.address.host and (uri.port or 5060) == self.address.port

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        message = parse_message(data)
        self.seen.append(message)
        if isinstance(message, Response):
            message.headers.pop_top("Via")
            via = message.top_via()
            host = via.params.get("received") or via.host
            rport = via.params.get("rport")
            port = int(rport) if rport else via.port or 5060
            self._outbox.append(Outgoing(Address("udp", host, port), message, message.serialize()))
            return
        while message.routes() and self._mine(message.routes()[0].uri):
            message.headers.pop_top("Route")
        routes = message.routes()
        target = routes[0].uri if routes else message.request_uri()
        if message.method == "INVITE" and message.to().tag is None:
            message.headers.insert_first("Record-Route", f"<sip:{self.address.host};lr;r=b>")
            message.headers.insert_first("Record-Route", f"<sip:{self.address.host};lr;r=a>")
        top = message.top_via()
        top_text = str(top.with_params(received=source.host, rport=str(source.port)))
        message.headers.replace_top("Via", top_text)
        branch = f"z9hG4bKsl{abs(hash((top.branch, message.method))) & 0xFFFFFFFF:08x}"
        message.headers.insert_first(
            "Via", f"SIP/2.0/UDP {self.address.host}:{self.address.port};branch={branch}"
        )
        self._outbox.append(Outgoing(uri_address(target), message, message.serialize()))

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Wire inspection
# ---------------------------------------------------------------------------------------------
def wire(link: Link, predicate: Callable[[Datagram], bool] | None = None) -> list[Request | Response]:
    """Every message handed to the link (matching ``predicate``), parsed, in order."""
    return [dg.message() for dg in link.sent if predicate is None or predicate(dg)]


def sent_by(address: Address) -> Callable[[Datagram], bool]:
    """Matches datagrams sent from ``address``."""
    return lambda dg: dg.source == address


def first_lines(link: Link, source: Address | None = None) -> list[str]:
    """``INVITE``/``200 INVITE`` style summaries of what went on the wire, in order."""
    out: list[str] = []
    for dg in link.sent:
        if source is not None and dg.source != source:
            continue
        message = dg.message()
        if isinstance(message, Request):
            out.append(message.method)
        else:
            out.append(f"{message.status} {message.cseq().method}")
    return out


# ---------------------------------------------------------------------------------------------
# Raw message builders
# ---------------------------------------------------------------------------------------------
AUDIO_PCMU_PCMA = ("0 PCMU/8000", "8 PCMA/8000", "101 telephone-event/8000")


def sdp_body(
    host: str,
    port: int,
    *,
    version: int = 1,
    rtpmaps: Iterable[str] = AUDIO_PCMU_PCMA,
    direction: str | None = "sendrecv",
    connection: str | None = None,
) -> bytes:
    """A peer's SDP: one audio stream with the given ``rtpmap`` entries (``"PT name/rate"``)."""
    maps = list(rtpmaps)
    pts = " ".join(m.split()[0] for m in maps)
    lines = [
        "v=0",
        f"o=peer 4242 {version} IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {connection or host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {pts}",
        *(f"a=rtpmap:{m}" for m in maps),
    ]
    if any("telephone-event" in m for m in maps):
        pt = next(m.split()[0] for m in maps if "telephone-event" in m)
        lines.append(f"a=fmtp:{pt} 0-16")
    lines.append("a=ptime:20")
    if direction is not None:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class RawDialog:
    """What a scripted UAC needs to keep to speak in a dialog (built by hand, not by dialog.py)."""

    me: Address
    target: str  # the Request-URI of the initial INVITE
    call_id: str = "raw-call-1@198.51.100.7"
    from_tag: str = "rawtag1"
    to_tag: str | None = None
    from_uri: str = "sip:+15550001111@198.51.100.7"
    to_uri: str = "sip:+15552223333@192.0.2.2"
    contact: str = "<sip:carrier@198.51.100.7:5060>"
    cseq: int = 0
    #: Remote target and route set learnt from the 2xx (Record-Route reversed: we are the UAC).
    remote_target: str | None = None
    route_set: list[str] = field(default_factory=list)
    branches: int = 0

    def branch(self) -> str:
        self.branches += 1
        return f"z9hG4bKraw{self.branches}x{self.call_id.split('@')[0]}"

    def request(
        self,
        method: str,
        *,
        seq: int | None = None,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        branch: str | None = None,
    ) -> Request:
        """A request in this dialog (or the initial INVITE while no To tag is known)."""
        if seq is None:
            self.cseq += 1
            seq = self.cseq
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {self.me.host}:{self.me.port};branch={branch or self.branch()};rport")
        h.add("Max-Forwards", "70")
        for route in self.route_set:
            h.add("Route", route)
        h.add("From", f"<{self.from_uri}>;tag={self.from_tag}")
        h.add("To", f"<{self.to_uri}>" + (f";tag={self.to_tag}" if self.to_tag else ""))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        if method in ("INVITE", "UPDATE"):
            h.add("Contact", self.contact)
        for name, value in headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        uri = self.remote_target if self.to_tag is not None and self.remote_target else self.target
        return Request(method, uri, h, body)

    def learn(self, response: Response) -> None:
        """Take the To tag, remote target and (reversed) route set from a 2xx to the INVITE."""
        self.to_tag = response.to().tag
        contacts = response.contacts()
        if contacts:
            self.remote_target = str(contacts[0].uri)
        self.route_set = list(reversed(response.headers.get_all("Record-Route")))

    def ack(self, response: Response) -> Request:
        """The ACK for a 2xx (new branch, the INVITE's CSeq number)."""
        return self.request("ACK", seq=response.cseq().seq)


def reply(
    request: Request,
    status: int,
    *,
    to_tag: str | None = None,
    contact: str | None = None,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    record_route: bool = True,
) -> Response:
    """A scripted UAS's response; dialog-forming ones copy Record-Route like a real UAS."""
    response = request.response(status, to_tag=to_tag)
    if record_route and 100 < status < 300:
        for value in request.headers.get_lines("Record-Route"):
            response.headers.add("Record-Route", value)
    if contact is not None:
        response.headers.add("Contact", contact)
    for name, value in headers:
        response.headers.add(name, value)
    if body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    return response


def ack_for_error(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a non-2xx final response (§17.1.1.3): the INVITE's
    top Via (same branch), Request-URI, From, Call-ID and CSeq number, To from the response."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_lines("Route"):
        headers.add("Route", route)
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id())
    headers.add("CSeq", f"{invite.cseq().seq} ACK")
    return Request("ACK", invite.uri, headers)


def via_branch(message: Request | Response) -> str:
    """The top Via's branch."""
    branch = Via.parse(message.headers.get_all("Via")[0]).branch
    assert branch is not None
    return branch


def name_addrs(values: list[str]) -> list[str]:
    """Route/Record-Route values normalised for comparison."""
    return [str(NameAddr.parse(v)) for v in values]
