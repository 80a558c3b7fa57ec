"""RFC 3261 §17 transactions (with the RFC 6026 fixes), sans-IO: the public import point.

Four machines, each a transition table plus the actions on it. They never open a socket or read a
clock: the caller passes ``now`` (seconds on a monotonic clock) and collects
:meth:`~TransactionMachine.datagrams_to_send`, :meth:`~TransactionMachine.get_timer` and calls
:meth:`~TransactionMachine.handle_timer`, as with aioquic. Client machines live here; server
machines in :mod:`sipagent.sip.transaction_server`; timer values, events and the clockwork in
:mod:`sipagent.sip.timers`. Everything is re-exported from this module.

Rules
=====

All machines
------------
* Timers: T1 = 0.5 s, T2 = 4 s, T4 = 5 s (:class:`TimerConfig` overrides them). Reliable
  transports (``Address.reliable``) run no retransmission timer (A, E, G) but do run the overall
  timeouts (B, F, H, L, M); the linger timers D, I, J, K are zero there, so the machine ends at once.
* Retransmission timers re-arm from their own deadline (an absolute schedule, like RTP pacing).
* An event the table does not list for the current state raises :class:`TransactionStateError`
  naming role, state and event. Those are TU bugs (a second ``start``, a response routed to the
  wrong transaction, a CANCEL before any provisional). Messages from the network never raise:
  whatever a live or terminated machine does not need is absorbed, as listed in the tables.

INVITE client transaction (§17.1.1, RFC 6026 §8.4)
--------------------------------------------------
* ``start``: send the INVITE, CALLING. Timer A (T1, doubling without cap; unreliable only)
  retransmits; Timer B (64·T1) → :class:`TransactionTimedOut` (the TU treats it as 408).
* 1xx: PROCEEDING, passed up; A and B stop (the TU bounds the wait, e.g. with CANCEL).
* 300-699: the transaction sends the ACK itself (§17.1.1.3: same Request-URI, Call-ID, From,
  CSeq number and Route as the INVITE, its top Via as the only Via, To from the response) and goes
  COMPLETED; Timer D (32 s unreliable, 0 reliable). Copies of the final response are re-ACKed and
  absorbed.
* 2xx: ACCEPTED, Timer M (64·T1). Every 2xx is passed up, whatever the state — retransmissions and
  2xx from other forks included — because only the TU can ACK a 2xx (and BYE an unwanted fork).
* A CANCEL (§9.1) is built by :meth:`InviteClientTransaction.cancel_request` or
  :func:`build_cancel` and sent by the TU in its own non-INVITE transaction. The transaction allows
  it only in PROCEEDING: §9.1 forbids a CANCEL before a provisional response, and after a final
  one it is pointless.

Non-INVITE client transaction (§17.1.2)
---------------------------------------
* ``start``: send, TRYING. Timer E (T1, doubling up to T2; unreliable only) retransmits; Timer F
  (64·T1) → :class:`TransactionTimedOut`.
* 1xx: PROCEEDING, passed up; from then on Timer E re-arms at T2.
* 200-699: COMPLETED, passed up; Timer K (T4 unreliable, 0 reliable). Copies are absorbed.

Keys (§17.1.3, §17.2.3)
-----------------------
* :func:`client_key`: ``(top Via branch, CSeq method)`` of a response;
  ``ClientTransaction.key`` is the same pair taken from the request.
* :func:`server_key`: ``(branch, sent-by, method)`` with ACK mapped to INVITE;
  :func:`cancel_target_key` gives the INVITE transaction a CANCEL refers to.
"""

from __future__ import annotations

from typing import ClassVar

from .address import Address, Outgoing
from .errors import LocalProtocolError, TransactionStateError
from .message import Headers, Request, Response
from .timers import (
    DEFAULT_TIMERS,
    T1,
    T2,
    T4,
    TIMER_D,
    AckReceived,
    ResponseReceived,
    TimerConfig,
    TimerTable,
    TransactionEvent,
    TransactionMachine,
    TransactionState,
    TransactionTimedOut,
    Transitions,
)
from .transaction_server import (
    MAGIC_COOKIE,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    cancel_target_key,
    server_key,
)
from .uri import is_token

__all__ = [
    "DEFAULT_TIMERS",
    "MAGIC_COOKIE",
    "T1",
    "T2",
    "T4",
    "TIMER_D",
    "AckReceived",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ResponseReceived",
    "ServerTransaction",
    "TimerConfig",
    "TransactionEvent",
    "TransactionState",
    "TransactionStateError",
    "TransactionTimedOut",
    "build_ack",
    "build_cancel",
    "cancel_target_key",
    "client_key",
    "new_branch",
    "server_key",
]

_S = TransactionState

# ---------------------------------------------------------------------------------------------
# Transition tables. Event names: "1xx"/"2xx"/"300-699"/"200-699" (responses from the network),
# "cancel_request" (TU), "timer X".
# ---------------------------------------------------------------------------------------------
ICT_TRANSITIONS: Transitions = {
    _S.CALLING: {
        "1xx": _S.PROCEEDING,
        "2xx": _S.ACCEPTED,
        "300-699": _S.COMPLETED,
        "timer A": _S.CALLING,
        "timer B": _S.TERMINATED,
    },
    _S.PROCEEDING: {
        "1xx": _S.PROCEEDING,
        "2xx": _S.ACCEPTED,
        "300-699": _S.COMPLETED,
        "cancel_request": _S.PROCEEDING,
    },
    # A 2xx after our ACKed non-2xx (a misbehaving fork) still goes up so the TU can ACK and BYE it.
    _S.COMPLETED: {
        "1xx": _S.COMPLETED,
        "2xx": _S.COMPLETED,
        "300-699": _S.COMPLETED,
        "timer D": _S.TERMINATED,
    },
    _S.ACCEPTED: {"1xx": _S.ACCEPTED, "2xx": _S.ACCEPTED, "300-699": _S.ACCEPTED, "timer M": _S.TERMINATED},
    _S.TERMINATED: {"1xx": _S.TERMINATED, "2xx": _S.TERMINATED, "300-699": _S.TERMINATED},
}
ICT_TIMERS: TimerTable = {
    _S.CALLING: frozenset({"A", "B"}),
    _S.COMPLETED: frozenset({"D"}),
    _S.ACCEPTED: frozenset({"M"}),
}

NICT_TRANSITIONS: Transitions = {
    _S.TRYING: {
        "1xx": _S.PROCEEDING,
        "200-699": _S.COMPLETED,
        "timer E": _S.TRYING,
        "timer F": _S.TERMINATED,
    },
    _S.PROCEEDING: {
        "1xx": _S.PROCEEDING,
        "200-699": _S.COMPLETED,
        "timer E": _S.PROCEEDING,
        "timer F": _S.TERMINATED,
    },
    _S.COMPLETED: {"1xx": _S.COMPLETED, "200-699": _S.COMPLETED, "timer K": _S.TERMINATED},
    _S.TERMINATED: {"1xx": _S.TERMINATED, "200-699": _S.TERMINATED},
}
NICT_TIMERS: TimerTable = {
    _S.TRYING: frozenset({"E", "F"}),
    _S.PROCEEDING: frozenset({"E", "F"}),
    _S.COMPLETED: frozenset({"K"}),
}


# ---------------------------------------------------------------------------------------------
# Keys and builders
# ---------------------------------------------------------------------------------------------
def client_key(response: Response) -> tuple[str, str]:
    """``(top Via branch, CSeq method)``: the client transaction a response belongs to (§17.1.3)."""
    return (response.top_via().branch or "", response.cseq().method)


def new_branch(random_hex: str) -> str:
    """An RFC 3261 branch: the magic cookie plus caller-supplied randomness (a token)."""
    if not is_token(random_hex):
        raise LocalProtocolError(f"branch randomness must be a non-empty token, got {random_hex!r}")
    return MAGIC_COOKIE + random_hex


def _copy_common(invite: Request, method: str, to_value: str) -> Request:
    """Top Via only, Max-Forwards, Route lines, From, To, Call-ID, CSeq number with ``method``."""
    headers = Headers()
    vias = invite.headers.get_all("Via")
    if not vias:
        raise LocalProtocolError("the INVITE has no Via")
    headers.add("Via", vias[0])
    headers.add("Max-Forwards", (invite.headers.get("Max-Forwards") or "70").strip())
    for route in invite.headers.get_lines("Route"):
        headers.add("Route", route)
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", to_value)
    headers.add("Call-ID", invite.call_id())
    headers.add("CSeq", f"{invite.cseq().seq} {method}")
    return Request(method=method, uri=invite.uri, headers=headers)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a non-2xx final response (§17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE; its top Via as the only Via (so
    the server transaction matches it); its Route headers; To from the response (with the tag).
    """
    if invite.method != "INVITE":
        raise LocalProtocolError(f"only an INVITE is ACKed, not {invite.method}")
    return _copy_common(invite, "ACK", response.headers.get("To") or "")


def build_cancel(invite: Request) -> Request:
    """A CANCEL for ``invite`` (§9.1): same Request-URI, Call-ID, From, To, CSeq number and Route,
    with the INVITE's top Via as its only Via (so it matches the INVITE server transaction)."""
    if invite.method != "INVITE":
        raise LocalProtocolError(f"only an INVITE can be cancelled, not {invite.method}")
    return _copy_common(invite, "CANCEL", invite.headers.get("To") or "")


# ---------------------------------------------------------------------------------------------
# The machines
# ---------------------------------------------------------------------------------------------
class ClientTransaction(TransactionMachine):
    """Base of the two client machines: matching, starting, response dispatch."""

    def __init__(
        self, request: Request, destination: Address, initial: TransactionState, timers: TimerConfig
    ) -> None:
        super().__init__(initial, timers, destination.reliable)
        self.request = request
        self.destination = destination
        branch = request.top_via().branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError(f"a client transaction needs an RFC 3261 branch, got {branch!r}")
        self.key: tuple[str, str] = (branch, request.cseq().method)
        self._request_out = Outgoing(destination, request, request.serialize())
        self._started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key[1]} {self.key[0]} {self.state.name}>"

    def start(self, now: float) -> None:
        """Send the request and arm the first timers. Once only."""
        if self._started:
            raise TransactionStateError(self.ROLE, self.state.name, "start")
        self._started = True
        self._queue(self._request_out)
        if not self.reliable:
            self._arm_retransmit(self._retransmit_timer, now, self.config.t1)
        self._arm(self._timeout_timer, now + self.config.timeout)

    def receive_response(self, response: Response, now: float) -> list[TransactionEvent]:
        """A response whose :func:`client_key` is ours; returns what the TU must see."""
        if client_key(response) != self.key:
            raise LocalProtocolError(f"response {response.status} does not match {self!r}")
        event = self._response_event(response.status)
        if not self._started:
            raise TransactionStateError(self.ROLE, self.state.name, f"{event} before start")
        previous = self._advance(event)
        return self._on_response(response, event, previous, now)

    # -- subclass hooks ------------------------------------------------------------------------------
    _retransmit_timer: ClassVar[str]
    _timeout_timer: ClassVar[str]

    def _response_event(self, status: int) -> str:
        raise NotImplementedError

    def _on_response(
        self, response: Response, event: str, previous: TransactionState, now: float
    ) -> list[TransactionEvent]:
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 with RFC 6026's ACCEPTED state; see the rules at the top of the module."""

    ROLE: ClassVar[str] = "INVITE client transaction"
    TRANSITIONS: ClassVar[Transitions] = ICT_TRANSITIONS
    TIMERS: ClassVar[TimerTable] = ICT_TIMERS
    _retransmit_timer: ClassVar[str] = "A"
    _timeout_timer: ClassVar[str] = "B"

    def __init__(
        self, request: Request, destination: Address, *, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"an INVITE client transaction cannot send {request.method}")
        super().__init__(request, destination, _S.CALLING, timers)
        self._ack: Outgoing | None = None

    @property
    def cancellable(self) -> bool:
        """True when §9.1 allows a CANCEL now: a provisional response came, no final one yet."""
        return self.state is _S.PROCEEDING

    def cancel_request(self) -> Request:
        """The CANCEL for our INVITE, for the TU to send in its own non-INVITE transaction.

        Raises :class:`TransactionStateError` unless :attr:`cancellable`.
        """
        self._advance("cancel_request")
        return build_cancel(self.request)

    def _response_event(self, status: int) -> str:
        if status < 200:
            return "1xx"
        return "2xx" if status < 300 else "300-699"

    def _on_response(
        self, response: Response, event: str, previous: TransactionState, now: float
    ) -> list[TransactionEvent]:
        live = previous in (_S.CALLING, _S.PROCEEDING)
        if event == "2xx":
            if live:
                self._arm("M", now + self.config.timeout)
            return [ResponseReceived(self, response)]
        if event == "1xx":
            return [ResponseReceived(self, response)] if live else []
        # 300-699
        if live:
            ack = build_ack(self.request, response)
            self._ack = Outgoing(self.destination, ack, ack.serialize())
            self._queue(self._ack)
            events: list[TransactionEvent] = [ResponseReceived(self, response)]
            return events + self._linger("D", now, 0 if self.reliable else self.config.d)
        if previous is _S.COMPLETED and self._ack is not None:
            self._queue(self._ack)  # our ACK was lost: the server retransmitted its final response
        return []

    def _fire(self, name: str, at: float) -> list[TransactionEvent]:
        self._advance(f"timer {name}")
        if name == "A":
            self._queue(self._request_out)
            self._arm_retransmit("A", at, 2 * self._interval("A"))
        elif name == "B":
            return [TransactionTimedOut(self, "B")]
        return []


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2; see the rules at the top of the module."""

    ROLE: ClassVar[str] = "non-INVITE client transaction"
    TRANSITIONS: ClassVar[Transitions] = NICT_TRANSITIONS
    TIMERS: ClassVar[TimerTable] = NICT_TIMERS
    _retransmit_timer: ClassVar[str] = "E"
    _timeout_timer: ClassVar[str] = "F"

    def __init__(
        self, request: Request, destination: Address, *, timers: TimerConfig = DEFAULT_TIMERS
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"a non-INVITE client transaction cannot send {request.method}")
        super().__init__(request, destination, _S.TRYING, timers)

    def _response_event(self, status: int) -> str:
        return "1xx" if status < 200 else "200-699"

    def _on_response(
        self, response: Response, event: str, previous: TransactionState, now: float
    ) -> list[TransactionEvent]:
        if previous not in (_S.TRYING, _S.PROCEEDING):
            return []  # a copy of the final response (or a stray 1xx) after completion
        events: list[TransactionEvent] = [ResponseReceived(self, response)]
        if event == "200-699":
            events += self._linger("K", now, 0 if self.reliable else self.config.t4)
        return events

    def _fire(self, name: str, at: float) -> list[TransactionEvent]:
        state = self._advance(f"timer {name}")
        if name == "E":
            self._queue(self._request_out)
            interval = (
                self.config.t2 if state is _S.PROCEEDING else min(2 * self._interval("E"), self.config.t2)
            )
            self._arm_retransmit("E", at, interval)
        elif name == "F":
            return [TransactionTimedOut(self, "F")]
        return []
