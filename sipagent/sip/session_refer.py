"""A call's REFER usage: sending blind transfers and hearing how they went (see :mod:`.refer`).

NOTIFY in the dialog (RFC 6665 §4.1.3, RFC 3515 §2.4.4-2.4.6), checked in this order:

* no ``Event`` → 400; a package other than ``refer``, or no live subscription it can belong to
  → 481 (which also tells a notifier we gave up on that we are gone);
* ``Event: refer;id=N`` names the REFER with CSeq N; without ``id`` it is the oldest live one
  (RFC 3515 lets only a dialog's first REFER go without an id);
* a body of another type → 415 with ``Accept: message/sipfrag``; no body, or no readable status
  line → 400, and nothing is reported (the transfer timer still bounds the wait);
* otherwise 200, then its sipfrag status drives the transfer;
* ``Subscription-State: terminated`` (checked even on a NOTIFY answered 400/415) ends the
  subscription; a missing ``Subscription-State`` is read as active, as lenient as we can be.

A retransmitted NOTIFY never gets here: its server transaction repeats our answer. The NOTIFY
does not refresh the dialog's remote target: only INVITE and UPDATE do, so a subscription usage
cannot move the call.

A REFER sent to us is refused by the session with 405 (decision 0022: we are never a transferee).
"""

from __future__ import annotations

from .auth import RequestAuthenticator
from .errors import LocalProtocolError, RemoteProtocolError
from .events import TransferAccepted, TransferFailed, TransferProgress, TransferSucceeded
from .message import Request, Response
from .refer import (
    SIPFRAG_TYPE,
    SUBSCRIPTION_ENDED,
    Transfer,
    notify_input,
    read_notify_sipfrag,
    refer_to_value,
)
from .session_core import CallState, SessionCore
from .transaction import ClientTransaction, ServerTransaction
from .uri import CSeq, SipUri, parse_params


class _TransferOwner:
    """Routes the responses of one REFER's transactions to its transfer."""

    def __init__(self, session: ReferSession, transfer: Transfer) -> None:
        self.session = session
        self.transfer = transfer

    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        """A response to the REFER."""
        self.session._on_refer_response(self.transfer, transaction, response, now)

    def on_timeout(self, transaction: ClientTransaction, now: float) -> None:
        """Timer F: the REFER went unanswered."""
        if transaction is self.transfer.tx:
            self.session._feed(self.transfer, "refer error", now, 408, "Request Timeout")


class ReferSession(SessionCore):
    """The transferor's part of a call."""

    def refer(self, target: SipUri | str, now: float, *, referred_by: SipUri | None, timeout: float) -> None:
        """Send an in-dialog REFER asking the peer to call ``target`` (see :mod:`.refer`)."""
        if self.state is not CallState.CONFIRMED or self.dialog is None:
            raise LocalProtocolError(f"call {self.call_id} cannot be transferred in state {self.state.value}")
        if any(t.pending for t in self._transfers):
            raise LocalProtocolError(f"call {self.call_id} already has a transfer under way")
        if not timeout > 0:
            raise LocalProtocolError(f"the transfer timeout must be positive, got {timeout}")
        refer_to = refer_to_value(target)  # checked before the CSeq is spent
        request, destination = self._in_dialog_request(self.dialog, "REFER")
        request.headers.add("Refer-To", refer_to)
        if referred_by is not None:
            request.headers.add("Referred-By", f"<{referred_by}>")
        transfer = Transfer(seq=request.cseq().seq, timeout=timeout)
        self._transfers.append(transfer)
        transfer.tx = self.ctx.send_request(request, destination, _TransferOwner(self, transfer), now)

    # -- the REFER's responses ----------------------------------------------------------------------
    def _on_refer_response(
        self, transfer: Transfer, tx: ClientTransaction, response: Response, now: float
    ) -> None:
        if tx is not transfer.tx or response.status < 200:
            return  # a provisional, or the answer to a REFER we already resent with credentials
        status = response.status
        if status in (401, 407) and self._refer_with_auth(transfer, tx, response, now):
            return
        if status < 300:
            no_sub = (response.headers.get("Refer-Sub") or "").strip().lower() == "false"
            self._feed(transfer, "refer 2xx no-sub" if no_sub else "refer 2xx", now, status, response.reason)
        else:
            self._feed(transfer, "refer error", now, status, response.reason)

    def _refer_with_auth(
        self, transfer: Transfer, tx: ClientTransaction, response: Response, now: float
    ) -> bool:
        """Answer a challenge to the REFER with the call's credentials; False when we cannot."""
        if self._auth is None or self.dialog is None or self.state is not CallState.CONFIRMED:
            return False
        if transfer.auth is None:
            transfer.auth = RequestAuthenticator(self._auth.credentials)
        retry = transfer.auth.retry(tx.request, response, self.ctx.new_branch())
        if retry is None:
            return False
        # The authenticator adds 1 to the REFER's CSeq; the dialog may have spent numbers since
        # (a BYE, a refresh), so take the dialog's next one. The digest does not cover CSeq.
        self.dialog.local_seq += 1
        retry.headers.set("CSeq", str(CSeq(self.dialog.local_seq, "REFER")))
        transfer.seq = self.dialog.local_seq
        transfer.tx = self.ctx.send_request(retry, tx.destination, _TransferOwner(self, transfer), now)
        return True

    # -- NOTIFY -------------------------------------------------------------------------------------
    def _on_notify(self, request: Request, tx: ServerTransaction, now: float) -> None:
        """An in-dialog NOTIFY (the session already checked the dialog and its CSeq)."""
        event = request.headers.get("Event")
        if event is None:
            self._answer(tx, request.response(400, "Missing Event"), now)
            return
        package, _, param_text = event.partition(";")
        transfer = None
        if package.strip().lower() == "refer":
            transfer = self._subscription(parse_params(param_text).get("id"))
        if transfer is None:
            self._answer(tx, request.response(481, "Subscription Does Not Exist"), now)
            return
        state = (request.headers.get("Subscription-State") or "active").split(";")[0]
        terminated = state.strip().lower() == "terminated"
        try:
            status, reason = read_notify_sipfrag(request)
        except RemoteProtocolError as exc:
            response = request.response(exc.status_hint, exc.reason)
            if exc.status_hint == 415:
                response.headers.set("Accept", SIPFRAG_TYPE)
            self._answer(tx, response, now)
        else:
            self._answer(tx, request.response(200), now)
            self._feed(transfer, notify_input(status), now, status, reason)
        if terminated:
            reason = "Subscription ended without a final status"
            self._feed(transfer, "subscription ended", now, SUBSCRIPTION_ENDED, reason)

    def _subscription(self, ident: str | None) -> Transfer | None:
        live = [t for t in self._transfers if t.subscribed]
        if ident is None:
            return live[0] if live else None
        ident = ident.strip()
        return next((t for t in live if ident.isdigit() and t.seq == int(ident)), None)

    def _answer(self, tx: ServerTransaction, response: Response, now: float) -> None:
        self._decorate(response)
        self.ctx.send_response(tx, response, now)

    # -- timers ---------------------------------------------------------------------------------------
    def _transfer_deadline(self) -> float | None:
        deadlines = [t.deadline for t in self._transfers if t.deadline is not None]
        return min(deadlines) if deadlines else None

    def _run_transfer_timers(self, now: float) -> None:
        for transfer in list(self._transfers):
            if transfer.deadline is not None and now >= transfer.deadline:
                reason = f"No final NOTIFY within {transfer.timeout:g} s"
                self._feed(transfer, "timeout", now, 408, reason)

    # -- events ---------------------------------------------------------------------------------------
    def _feed(self, transfer: Transfer, name: str, now: float, status: int, reason: str) -> None:
        """Apply one input to ``transfer`` and emit what it says, unless the call is over."""
        if self.state is CallState.TERMINATED:
            return  # CallEnded was the call's last event; a transfer under way ends with it
        for output in transfer.step(name, now):
            if output == "accepted":
                self.ctx.emit(TransferAccepted(self.call_id))
            elif output == "progress":
                self.ctx.emit(TransferProgress(self.call_id, status, reason))
            elif output == "succeeded":
                self.ctx.emit(TransferSucceeded(self.call_id, status))
            else:
                self.ctx.emit(TransferFailed(self.call_id, status, reason))
