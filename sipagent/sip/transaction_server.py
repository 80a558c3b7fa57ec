"""Server transactions (RFC 3261 §17.2 with the RFC 6026 fixes), sans-IO.

Import these from :mod:`sipagent.sip.transaction`, which re-exports them.

Rules
=====

Both machines
-------------
* A server transaction is created by the TU for a request that matched no live transaction
  (:func:`server_key`); it starts with that request already received. Later copies of it
  (retransmissions) go to :meth:`ServerTransaction.receive_request`.
* The TU answers with :meth:`ServerTransaction.send_response`; the response goes to
  :func:`~sipagent.sip.address.response_address` (the connection on a stream, Via
  ``received``/``rport`` on UDP). The last response sent is what a retransmitted request gets.
* A response the state does not allow (a second final response, a 1xx after a final) is a TU
  bug and raises :class:`TransactionStateError`. Requests from the network never raise in a live
  or terminated state: a copy arriving late is absorbed.
* Reliable transports run no retransmission timer (G) but keep the overall timeouts (H, L).

INVITE server transaction (§17.2.1, RFC 6026 §7.1)
---------------------------------------------------
* PROCEEDING on creation. The UAS core sends 100 Trying itself at once (a plain 1xx).
* 1xx: stays PROCEEDING. A retransmitted INVITE gets the latest 1xx again (nothing if none yet).
* 300-699: COMPLETED. Timer G (T1, doubling, capped at T2; unreliable only) resends it; Timer H
  (64·T1) gives up with :class:`TransactionTimedOut`. The ACK (same branch) moves to CONFIRMED,
  where Timer I (T4 unreliable, 0 reliable) absorbs stray ACKs and INVITE copies.
* 2xx: ACCEPTED (RFC 6026). Unlike bare RFC 6026, where the TU retransmits the 2xx, the
  transaction does it here on Timer G (as the UAS core would per §13.3.1.4, unreliable transports
  only), and resends it for each INVITE copy, which is never passed to the TU. The ACK for a 2xx
  has a new branch: the TU matches it by dialog and calls :meth:`~InviteServerTransaction.ack_received`
  → CONFIRMED, Timer I. An ACK that reuses the INVITE's branch (older stacks) arrives through
  ``receive_request`` instead and is passed up as :class:`AckReceived`. No ACK within Timer L
  (64·T1) → :class:`TransactionTimedOut` (``timer="L"``): the TU ends the dialog with BYE.
* Deviation from RFC 6026, which keeps ACCEPTED until Timer L even after the ACK: after the ACK we
  linger only T4, the longest a network copy of the INVITE can still be in flight.

Non-INVITE server transaction (§17.2.2)
---------------------------------------
* TRYING on creation; copies of the request are absorbed until a response exists.
* 1xx: PROCEEDING; 200-699: COMPLETED, Timer J (64·T1 unreliable, 0 reliable) → TERMINATED.
  Copies of the request get the last response again.
"""

from __future__ import annotations

from typing import ClassVar

from .address import Address, Outgoing, response_address
from .errors import LocalProtocolError
from .message import Request, Response
from .timers import (
    DEFAULT_TIMERS,
    AckReceived,
    TimerConfig,
    TimerTable,
    TransactionEvent,
    TransactionMachine,
    TransactionState,
    TransactionTimedOut,
    Transitions,
)
from .uri import Via

_S = TransactionState
MAGIC_COOKIE = "z9hG4bK"

# ---------------------------------------------------------------------------------------------
# Transition tables. Event names: "send 1xx"/"send 2xx"/"send 300-699"/"send 200-699" (TU),
# "INVITE"/"ACK"/"request" (copies from the network), "ack_received" (TU), "timer X".
# ---------------------------------------------------------------------------------------------
IST_TRANSITIONS: Transitions = {
    _S.PROCEEDING: {
        "send 1xx": _S.PROCEEDING,
        "send 2xx": _S.ACCEPTED,
        "send 300-699": _S.COMPLETED,
        "INVITE": _S.PROCEEDING,
        "ACK": _S.PROCEEDING,  # an ACK before any final answer: a confused peer, absorbed
    },
    _S.COMPLETED: {
        "INVITE": _S.COMPLETED,
        "ACK": _S.CONFIRMED,
        "timer G": _S.COMPLETED,
        "timer H": _S.TERMINATED,
    },
    _S.ACCEPTED: {
        "send 2xx": _S.ACCEPTED,  # a TU that retransmits its 2xx itself (RFC 6026 style)
        "INVITE": _S.ACCEPTED,
        "ACK": _S.CONFIRMED,
        "ack_received": _S.CONFIRMED,
        "timer G": _S.ACCEPTED,
        "timer L": _S.TERMINATED,
    },
    _S.CONFIRMED: {
        "INVITE": _S.CONFIRMED,
        "ACK": _S.CONFIRMED,
        "ack_received": _S.CONFIRMED,
        "timer I": _S.TERMINATED,
    },
    _S.TERMINATED: {"INVITE": _S.TERMINATED, "ACK": _S.TERMINATED},
}
IST_TIMERS: TimerTable = {
    _S.COMPLETED: frozenset({"G", "H"}),
    _S.ACCEPTED: frozenset({"G", "L"}),
    _S.CONFIRMED: frozenset({"I"}),
}

NIST_TRANSITIONS: Transitions = {
    _S.TRYING: {"send 1xx": _S.PROCEEDING, "send 200-699": _S.COMPLETED, "request": _S.TRYING},
    _S.PROCEEDING: {"send 1xx": _S.PROCEEDING, "send 200-699": _S.COMPLETED, "request": _S.PROCEEDING},
    _S.COMPLETED: {"request": _S.COMPLETED, "timer J": _S.TERMINATED},
    _S.TERMINATED: {"request": _S.TERMINATED},
}
NIST_TIMERS: TimerTable = {_S.COMPLETED: frozenset({"J"})}


# ---------------------------------------------------------------------------------------------
# Matching (§17.2.3)
# ---------------------------------------------------------------------------------------------
def _sent_by(via: Via) -> str:
    port = via.port or (5061 if via.transport.upper() == "TLS" else 5060)
    return f"{via.host}:{port}"


def _branch_id(request: Request, via: Via) -> str:
    """The RFC 3261 branch, or an RFC 2543 stand-in built from the fields §17.2.3 compares.

    The To tag is left out so the ACK for a non-2xx (which carries our tag) and a CANCEL match
    their INVITE; the Request-URI, From tag, Call-ID and CSeq number still tell transactions apart.
    """
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return branch
    return "rfc2543|" + "|".join(
        (request.uri, request.from_().tag or "", request.call_id(), str(request.cseq().seq))
    )


def server_key(request: Request) -> tuple[str, str, str]:
    """``(branch, sent-by host:port, method)`` with ACK counted as INVITE (§17.2.3)."""
    via = request.top_via()
    method = "INVITE" if request.method == "ACK" else request.method
    return (_branch_id(request, via), _sent_by(via), method)


def cancel_target_key(cancel: Request) -> tuple[str, str, str]:
    """The key of the INVITE server transaction that ``cancel`` refers to (§9.2)."""
    if cancel.method != "CANCEL":
        raise LocalProtocolError(f"cancel_target_key needs a CANCEL, got {cancel.method}")
    branch, sent_by, _ = server_key(cancel)
    return (branch, sent_by, "INVITE")


# ---------------------------------------------------------------------------------------------
# The machines
# ---------------------------------------------------------------------------------------------
class ServerTransaction(TransactionMachine):
    """Base of the two server machines: matching, response queueing, request copies."""

    def __init__(
        self, request: Request, source: Address, initial: TransactionState, timers: TimerConfig
    ) -> None:
        super().__init__(initial, timers, source.reliable)
        self.request = request
        #: Where the request came from: the stream connection, or the UDP peer.
        self.source = source
        self.key: tuple[str, str, str] = server_key(request)
        self._last: Outgoing | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key[2]} {self.key[0]} {self.state.name}>"

    @property
    def last_response(self) -> Response | None:
        """The most recent response the TU sent, if any."""
        if self._last is None:
            return None
        assert isinstance(self._last.message, Response)
        return self._last.message

    def send_response(self, response: Response, now: float) -> None:
        """The TU answers; the response is queued for ``response_address(response, source)``."""
        method = response.cseq().method
        if method != self.request.method:
            raise LocalProtocolError(
                f"a {method} response cannot be sent in a {self.request.method} transaction"
            )
        event = self._send_event(response.status)
        previous = self._advance(event)
        out = Outgoing(response_address(response, self.source), response, response.serialize())
        self._last = out
        self._queue(out)
        self._after_send(event, previous, now)

    def receive_request(self, request: Request, now: float) -> list[TransactionEvent]:
        """A request that matched this transaction's key: a copy of ours, or (INVITE) its ACK."""
        if server_key(request) != self.key:
            raise LocalProtocolError(f"{request.method} does not match {self!r}")
        return self._on_request(request, now)

    # -- subclass hooks ------------------------------------------------------------------------------
    def _send_event(self, status: int) -> str:
        raise NotImplementedError

    def _after_send(self, event: str, previous: TransactionState, now: float) -> None:
        raise NotImplementedError

    def _on_request(self, request: Request, now: float) -> list[TransactionEvent]:
        raise NotImplementedError

    def _resend_last(self) -> None:
        if self._last is not None:
            self._queue(self._last)


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 with RFC 6026's ACCEPTED state; see the rules at the top of the module."""

    ROLE: ClassVar[str] = "INVITE server transaction"
    TRANSITIONS: ClassVar[Transitions] = IST_TRANSITIONS
    TIMERS: ClassVar[TimerTable] = IST_TIMERS

    def __init__(self, request: Request, source: Address, *, timers: TimerConfig = DEFAULT_TIMERS) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"an INVITE server transaction cannot serve {request.method}")
        super().__init__(request, source, _S.PROCEEDING, timers)

    def ack_received(self, ack: Request, now: float) -> None:
        """The TU matched an ACK for our 2xx (new branch) to this transaction by dialog.

        Stops the 2xx retransmissions. A second ACK (for a retransmitted 2xx) is absorbed. Raises
        :class:`TransactionStateError` before a 2xx was sent, or once terminated.
        """
        if ack.method != "ACK":
            raise LocalProtocolError(f"ack_received needs an ACK, got {ack.method}")
        if self._advance("ack_received") is _S.ACCEPTED:
            self._linger("I", now, 0 if self.reliable else self.config.t4)

    def _send_event(self, status: int) -> str:
        if status < 200:
            return "send 1xx"
        return "send 2xx" if status < 300 else "send 300-699"

    def _after_send(self, event: str, previous: TransactionState, now: float) -> None:
        if event == "send 1xx" or previous is not _S.PROCEEDING:
            return
        # The first final response: retransmit it until the ACK comes, and give up after 64·T1.
        if not self.reliable:
            self._arm_retransmit("G", now, self.config.t1)
        self._arm("H" if event == "send 300-699" else "L", now + self.config.timeout)

    def _on_request(self, request: Request, now: float) -> list[TransactionEvent]:
        event = "ACK" if request.method == "ACK" else "INVITE"
        previous = self._advance(event)
        if event == "INVITE":
            if previous in (_S.PROCEEDING, _S.COMPLETED, _S.ACCEPTED):
                self._resend_last()
            return []
        if previous is _S.COMPLETED:
            self._linger("I", now, 0 if self.reliable else self.config.t4)
        elif previous is _S.ACCEPTED:
            self._linger("I", now, 0 if self.reliable else self.config.t4)
            return [AckReceived(self, request)]
        return []

    def _fire(self, name: str, at: float) -> list[TransactionEvent]:
        self._advance(f"timer {name}")
        if name == "G":
            self._resend_last()
            self._arm_retransmit("G", at, min(2 * self._interval("G"), self.config.t2))
        elif name in ("H", "L"):
            return [TransactionTimedOut(self, name)]
        return []


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2; see the rules at the top of the module."""

    ROLE: ClassVar[str] = "non-INVITE server transaction"
    TRANSITIONS: ClassVar[Transitions] = NIST_TRANSITIONS
    TIMERS: ClassVar[TimerTable] = NIST_TIMERS

    def __init__(self, request: Request, source: Address, *, timers: TimerConfig = DEFAULT_TIMERS) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"a non-INVITE server transaction cannot serve {request.method}")
        super().__init__(request, source, _S.TRYING, timers)

    def _send_event(self, status: int) -> str:
        return "send 1xx" if status < 200 else "send 200-699"

    def _after_send(self, event: str, previous: TransactionState, now: float) -> None:
        if event == "send 200-699":
            self._linger("J", now, 0 if self.reliable else self.config.timeout)

    def _on_request(self, request: Request, now: float) -> list[TransactionEvent]:
        if self._advance("request") is not _S.TERMINATED:
            self._resend_last()
        return []

    def _fire(self, name: str, at: float) -> list[TransactionEvent]:
        self._advance(f"timer {name}")  # only Timer J runs here
        return []
