"""The narrow interface an INVITE session or registration uses to reach the endpoint.

Sessions never build transactions or touch the outgoing queue directly: they ask the endpoint,
which owns transaction matching, Via/Contact construction and the event queue. Keeping this a
Protocol lets session logic be read (and faked) without the endpoint's dispatch code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .address import Address, Transport
from .events import Event
from .message import Request, Response
from .transaction import ClientTransaction, ServerTransaction


@dataclass(frozen=True)
class EndpointConfig:
    """What the UA says about itself on the wire. ``public_host`` goes in Via, Contact and SDP."""

    public_host: str
    #: Advertised port per transport (the listener's, or the NAT's public mapping).
    ports: dict[Transport, int]
    contact_user: str = "sipagent"
    user_agent: str = "sipagent/0.1"
    #: RFC 4028 session interval we ask for on outbound calls (None: do not ask).
    session_expires: int | None = 1800
    #: The smallest session interval we accept (RFC 4028 Min-SE, at least 90).
    min_se: int = 90
    #: Re-INVITE rather than UPDATE for session refresh unless the peer allows UPDATE.
    prefer_update_refresh: bool = True
    #: SRTP-SDES policy for calls: "off", "optional" or "required" (see :mod:`.sdes`).
    srtp: str = "off"

    def contact_for(self, transport: Transport) -> str:
        """Our Contact for requests and responses on ``transport``."""
        port = self.ports.get(transport) or self.ports.get("udp") or 5060
        tparam = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{self.contact_user}@{self.public_host}:{port}{tparam}>"

    def via_for(self, transport: Transport, branch: str) -> str:
        """Our Via with ``rport`` (RFC 3581) so NATed responses find their way back."""
        port = self.ports.get(transport) or self.ports.get("udp") or 5060
        return f"SIP/2.0/{transport.upper()} {self.public_host}:{port};rport;branch={branch}"


#: What we accept. NOTIFY: the reports on our own REFERs. REFER itself is absent: we are never a
#: transferee (decision 0022), so a REFER sent to us gets 405 with this list.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO", "NOTIFY")
SUPPORTED_OPTIONS = frozenset({"timer"})


class TransactionOwner(Protocol):
    """Whoever sent a request and wants its responses."""

    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        """A response (provisional or final, retransmitted 2xx for INVITE included) arrived."""

    def on_timeout(self, transaction: ClientTransaction, now: float) -> None:
        """Timer B/F fired: treat as 408."""


class EndpointContext(Protocol):
    """Services the endpoint offers to sessions and registrations."""

    config: EndpointConfig

    def new_token(self) -> str:
        """A fresh random token for tags, branches and Call-IDs."""

    def new_branch(self) -> str:
        """A fresh RFC 3261 magic-cookie branch."""

    def send_request(
        self, request: Request, destination: Address, owner: TransactionOwner, now: float
    ) -> ClientTransaction:
        """Send ``request`` in a new client transaction whose events go to ``owner``."""

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        """Send ``response`` within ``transaction``."""

    def send_stateless(self, request: Request, destination: Address) -> None:
        """Send a request outside any transaction (the ACK for a 2xx)."""

    def emit(self, event: Event) -> None:
        """Queue an event for the application."""
