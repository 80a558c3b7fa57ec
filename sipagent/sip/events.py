"""Events the SIP endpoint hands to the application (h11 ``_events.py`` style).

Frozen dataclasses, validated when built. ``call_id`` is the SIP Call-ID of the call, which is
also the handle the application passes back to :class:`~sipagent.sip.endpoint.SipEndpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .address import Address
from .message import Request
from .offer_answer import NegotiatedMedia
from .uri import NameAddr, SipUri


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE arrived and was answered with 100 Trying; the app rings, answers or rejects."""

    call_id: str
    caller: NameAddr
    callee: SipUri
    source: Address
    request: Request
    #: Caller identity as carriers assert it: P-Preferred-Identity, P-Asserted-Identity,
    #: Remote-Party-ID, then From (sip-trunks.md).
    asserted_caller: NameAddr


@dataclass(frozen=True)
class CallProgress:
    """Outbound call: a provisional response (180, 183…) arrived."""

    call_id: str
    status: int
    reason: str


@dataclass(frozen=True)
class EarlyMedia:
    """Outbound call: a 183 (or 180) carried SDP; media may flow before the answer."""

    call_id: str
    media: NegotiatedMedia


@dataclass(frozen=True)
class CallAnswered:
    """Outbound call: the callee answered (2xx) and we sent the ACK."""

    call_id: str
    media: NegotiatedMedia | None


@dataclass(frozen=True)
class CallConfirmed:
    """Inbound call: the caller's ACK arrived; ``media`` is set when the ACK carried the answer."""

    call_id: str
    media: NegotiatedMedia | None


@dataclass(frozen=True)
class MediaUpdated:
    """A re-INVITE or UPDATE changed the media (hold, unhold, new address or codec)."""

    call_id: str
    media: NegotiatedMedia


@dataclass(frozen=True)
class CallFailed:
    """Outbound call: a final non-2xx response, a timeout (408) or an auth failure."""

    call_id: str
    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 300 <= self.status <= 699:
            raise ValueError(f"CallFailed needs a final error status, got {self.status}")


@dataclass(frozen=True)
class CallEnded:
    """The call is over. ``reason`` names why (``remote-bye``, ``local-bye``, ``cancelled``,
    ``ack-timeout``, ``session-expired``…); ``by_remote`` tells who ended it."""

    call_id: str
    reason: str
    by_remote: bool


@dataclass(frozen=True)
class TransferAccepted:
    """Our REFER (blind transfer) was accepted: a 2xx to it, or a first NOTIFY that overtook it.

    The transfer is under way, not done: :class:`TransferProgress` may follow, then exactly one of
    :class:`TransferSucceeded` or :class:`TransferFailed` (unless the call ends first).
    """

    call_id: str


@dataclass(frozen=True)
class TransferProgress:
    """A NOTIFY reported a provisional status of the transfer target (its sipfrag: 100, 180…)."""

    call_id: str
    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 199:
            raise ValueError(f"TransferProgress needs a 1xx status, got {self.status}")


@dataclass(frozen=True)
class TransferSucceeded:
    """A NOTIFY reported that the transfer target answered (a 2xx sipfrag).

    The call is still up: the application ends it with ``hangup``, as the transferor does in RFC
    5589's blind transfer (Twilio expects our BYE once the subscription ends). The core never hangs
    up by itself.
    """

    call_id: str
    status: int

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 299:
            raise ValueError(f"TransferSucceeded needs a 2xx status, got {self.status}")


@dataclass(frozen=True)
class TransferFailed:
    """The transfer did not happen; the call goes on and the caller should be told.

    ``status`` is the final error to our REFER (403, 405, 501…; 408 when it went unanswered),
    the error a NOTIFY reported (486, 503…), 408 when no final NOTIFY came in time, or 487 when
    the peer ended the subscription without a final status.
    """

    call_id: str
    status: int
    reason: str

    def __post_init__(self) -> None:
        if not 300 <= self.status <= 699:
            raise ValueError(f"TransferFailed needs a final error status, got {self.status}")


@dataclass(frozen=True)
class RegistrationSucceeded:
    """The registrar accepted (or refreshed) our binding for ``expires`` seconds."""

    aor: str
    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    """A REGISTER failed; ``retry_at`` is when the client will try again (on the caller's clock)."""

    aor: str
    status: int
    reason: str
    retry_at: float


Event = (
    IncomingCall
    | CallProgress
    | EarlyMedia
    | CallAnswered
    | CallConfirmed
    | MediaUpdated
    | CallFailed
    | CallEnded
    | TransferAccepted
    | TransferProgress
    | TransferSucceeded
    | TransferFailed
    | RegistrationSucceeded
    | RegistrationFailed
)
