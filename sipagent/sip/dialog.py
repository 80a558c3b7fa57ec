"""Dialog state (RFC 3261 §12): identifiers, CSeq spaces, remote target and route set.

The rules that trunks break us on (sip-trunks.md):

* the route set is fixed when the dialog is created — UAS: Record-Route in order; UAC: Record-Route
  of the 2xx reversed — and a re-INVITE's 2xx never replaces it;
* a target refresh (re-INVITE, UPDATE and their 2xx) replaces the remote target (Contact);
* in-dialog requests go to the remote target with the route set as Route headers (loose routing);
  a strict router (no ``;lr``) gets the Request-URI and the target moves to the last Route;
* the ACK for a 2xx, and every other in-dialog request, travel the route set;
* a next hop on a transport we do not speak (``;transport=ws``, ``sctp``) is reached over the flow
  the dialog was set up on rather than failing: the peer's Contact must never crash us.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .address import Address, uri_address
from .errors import RemoteProtocolError
from .message import Headers, Request, Response
from .uri import NameAddr, SipUri


@dataclass
class Dialog:
    """One dialog, seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: SipUri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    #: None until the peer sends its first in-dialog request (UAC side).
    remote_seq: int | None = None
    #: The transport flow the dialog was set up on. On TCP/TLS in-dialog requests reuse it.
    flow: Address | None = None
    #: Our Contact, repeated in target-refresh requests (and REFER) and their 2xx.
    local_contact: str = ""

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, local_contact: str, flow: Address) -> Dialog:
        """The dialog a UAS creates when it answers ``invite`` (§12.1.1)."""
        contacts = invite.contacts()
        if not contacts:
            raise RemoteProtocolError("INVITE without Contact")
        return cls(
            call_id=invite.call_id(),
            local_tag=local_tag,
            remote_tag=invite.from_().tag or "",
            local_uri=invite.to().with_params(tag=local_tag),
            remote_uri=invite.from_(),
            remote_target=contacts[0].uri,
            route_set=invite.record_routes(),
            local_seq=0,
            remote_seq=invite.cseq().seq,
            flow=flow,
            local_contact=local_contact,
        )

    @classmethod
    def as_uac(cls, invite: Request, response: Response, flow: Address | None) -> Dialog:
        """The dialog a UAC creates from a 2xx (or a 1xx with a To tag) to ``invite`` (§12.1.2)."""
        contacts = response.contacts()
        if not contacts:
            raise RemoteProtocolError("dialog-creating response without Contact")
        to = response.to()
        return cls(
            call_id=invite.call_id(),
            local_tag=invite.from_().tag or "",
            remote_tag=to.tag or "",
            local_uri=invite.from_(),
            remote_uri=to,
            remote_target=contacts[0].uri,
            route_set=list(reversed(response.record_routes())),
            local_seq=invite.cseq().seq,
            remote_seq=None,
            flow=flow,
            local_contact=invite.headers.get("Contact") or "",
        )

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    def next_hop(self) -> SipUri:
        """The URI whose address the next in-dialog request is sent to."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def destination(self) -> Address:
        """Where to send in-dialog requests: the existing flow on streams (TLS reuse), else the
        next hop's address (the flow again if the next hop names a transport we lack)."""
        if self.flow is not None and self.flow.reliable:
            return self.flow
        try:
            return uri_address(self.next_hop())
        except ValueError:
            if self.flow is None:
                raise RemoteProtocolError(f"no transport to reach {self.next_hop()}") from None
            return self.flow

    def create_request(self, method: str, via: str, *, seq: int | None = None) -> Request:
        """Build an in-dialog request (§12.2.1.1). ``seq`` reuses a CSeq (ACK, CANCEL)."""
        if seq is None:
            self.local_seq += 1
            seq = self.local_seq
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        routes = [str(r) for r in self.route_set]
        if self.route_set and "lr" not in self.route_set[0].uri.params:
            # Strict router: it gets the Request-URI; our real target rides last in Route.
            request_uri = str(self.route_set[0].uri.without_params())
            routes = [*routes[1:], f"<{self.remote_target}>"]
        else:
            request_uri = str(self.remote_target)
        for route in routes:
            headers.add("Route", route)
        headers.add("From", str(self.local_uri))
        headers.add("To", str(self.remote_uri))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{seq} {method}")
        # Target refreshes carry our Contact; so does REFER, which creates a subscription usage.
        if self.local_contact and method in ("INVITE", "UPDATE", "REFER"):
            headers.add("Contact", self.local_contact)
        return Request(method=method, uri=request_uri, headers=headers)

    def check_remote_seq(self, request: Request) -> bool:
        """Accept an in-dialog request's CSeq (§12.2.2): False means answer 500 (out of order)."""
        seq = request.cseq().seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """A target refresh replaces the remote target; the route set never changes (§12.2)."""
        contacts = message.contacts()
        if contacts:
            self.remote_target = contacts[0].uri

    def matches(self, message: Request | Response) -> bool:
        """True when the message's tags identify this dialog from our side."""
        if isinstance(message, Request):
            return message.to().tag == self.local_tag and message.from_().tag == self.remote_tag
        return message.from_().tag == self.local_tag and message.to().tag == self.remote_tag
