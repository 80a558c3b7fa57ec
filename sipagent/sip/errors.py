"""Errors raised by the sans-IO SIP core (the SIP branch of :mod:`sipagent.errors`' tree).

Every error says who broke the rule and, where a peer did, which status to answer with
(the ``status_hint`` idea from h11)::

    SipError
    ├── ProtocolError                 status_hint: the SIP status that answers it
    │   ├── RemoteProtocolError       the peer sent something malformed or unacceptable;
    │   │                             the adapter answers ``status_hint`` (400, 413, 513…) and carries on
    │   └── LocalProtocolError        our own code asked for something the protocol forbids (a bug)
    ├── OfferRejected                 an SDP offer/answer we cannot accept (488 by default)
    └── TransactionStateError         an impossible transition in a state machine; names role,
                                      state and event
"""

from __future__ import annotations

from ..errors import SipAgentError


class SipError(SipAgentError):
    """Base of every error raised by :mod:`sipagent.sip`."""


class ProtocolError(SipError):
    """A violation of RFC 3261 (or a companion RFC).

    ``status_hint`` is the response code a UAS should send when the violation is in a request.
    """

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint

    @property
    def reason(self) -> str:
        """A short reason phrase for the status line: the message itself, single-line and capped."""
        text = " ".join(str(self).split())
        return text[:100] or "Bad Request"


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or unacceptable; answer with ``status_hint``."""


class LocalProtocolError(ProtocolError):
    """Our own caller asked for something the protocol forbids."""

    def __init__(self, message: str, *, status_hint: int = 500) -> None:
        super().__init__(message, status_hint=status_hint)


class OfferRejected(SipError):
    """An SDP offer or answer that cannot be accepted; answer with ``status`` (488 by default)."""

    def __init__(self, message: str, *, status: int = 488) -> None:
        super().__init__(message)
        self.status = status


class TransactionStateError(SipError):
    """An event arrived that the state machine does not allow in its current state."""

    def __init__(self, role: str, state: str, event: str) -> None:
        super().__init__(f"{role} in state {state} cannot handle {event}")
        self.role = role
        self.state = state
        self.event = event
