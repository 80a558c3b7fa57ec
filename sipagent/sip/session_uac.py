"""The caller's side of the initial INVITE (RFC 3261 §13.2, §22; RFC 4028 §7.4).

UAC
* 401/407 are retried once per challenge with the same Call-ID and From tag, CSeq + 1 and a new
  branch; ``stale=true`` allows one more try.
* CANCEL only after a provisional response to the INVITE transaction now in flight (a 100 to
  an INVITE that was then challenged does not count); a 2xx that races our CANCEL is ACKed and
  BYEd; no final response 64·T1 after the CANCEL ends the call anyway (§9.1). Once the app hung
  up, a challenge is not answered and any final error ends the call as cancelled.
* 422 (Session Interval Too Small) is retried with the Min-SE the peer asked for.
"""

from __future__ import annotations

from .address import Address
from .auth import RequestAuthenticator
from .dialog import Dialog
from .errors import OfferRejected
from .events import CallAnswered, CallFailed, CallProgress, EarlyMedia
from .message import Request, Response
from .session_core import CallState, SessionCore
from .transaction import InviteClientTransaction


class UacSession(SessionCore):
    """Sending our INVITE and handling what comes back, up to the 2xx and its ACK."""

    def start_uac(
        self, invite: Request, destination: Address, auth: RequestAuthenticator | None, now: float
    ) -> None:
        """Send our INVITE (already carrying our SDP offer)."""
        self.invite = invite
        self._auth = auth
        self._send_invite(destination, now)

    def _send_invite(self, destination: Address, now: float) -> None:
        assert self.invite is not None
        tx = self.ctx.send_request(self.invite, destination, self, now)
        assert isinstance(tx, InviteClientTransaction)
        self.uac_tx = tx

    def _on_invite_response(self, response: Response, now: float) -> None:
        assert self.invite is not None and self.uac_tx is not None
        status = response.status
        if status < 200:
            self._on_provisional(response, now)
        elif status < 300:
            self._on_invite_2xx(response, now)
        elif not self._cancel_wanted and self._retried(response, now):
            return
        elif self.state in (CallState.INITIAL, CallState.EARLY):
            if self._cancel_wanted:
                # The app hung up: a 487, or whatever final error crossed our CANCEL.
                self._end("cancelled", by_remote=False)
            else:
                self.state = CallState.TERMINATED
                self.ctx.emit(CallFailed(self.call_id, status, response.reason))

    def _retried(self, response: Response, now: float) -> bool:
        """Challenges and 422 are answered by resending the INVITE, not by failing the call."""
        if response.status in (401, 407):
            return self._retry_with_auth(response, now)
        if self._auth is not None:
            # Any other final answer ends this round of challenges: a challenge to the retry
            # that follows (after a 422) is a fresh one, not a sign of a wrong password.
            self._auth.succeeded()
        if response.status == 422:
            return self._retry_with_min_se(response, now)
        return False

    def _on_provisional(self, response: Response, now: float) -> None:
        if response.status == 100 or self.state not in (CallState.INITIAL, CallState.EARLY):
            self._maybe_cancel(now)
            return
        self.state = CallState.EARLY
        self.ctx.emit(CallProgress(self.call_id, response.status, response.reason))
        sdp = self._safe_sdp(response)
        if sdp is not None and self.negotiated is None:
            try:
                self.negotiated = self.media.process_answer(sdp)
            except OfferRejected:
                return
            self.ctx.emit(EarlyMedia(self.call_id, self.negotiated))
        self._maybe_cancel(now)

    def _on_invite_2xx(self, response: Response, now: float) -> None:
        assert self.invite is not None
        if self.dialog is None:
            self.dialog = Dialog.as_uac(self.invite, response, self.flow)
        elif not self.dialog.matches(response):
            # A 2xx from a second fork: ACK it and hang that leg up (we keep one dialog).
            fork = Dialog.as_uac(self.invite, response, self.flow)
            self._ack_2xx(fork, now)
            bye, destination = self._in_dialog_request(fork, "BYE")
            self.ctx.send_request(bye, destination, self, now)
            return
        self._ack_2xx(self.dialog, now)
        if self.state is CallState.CONFIRMED or self.state is CallState.TERMINATED:
            return  # retransmitted 2xx: re-ACKed above
        if self._cancel_wanted:
            self.state = CallState.CONFIRMED
            self._send_bye(now)
            self._end("cancelled", by_remote=False)
            return
        sdp = self._safe_sdp(response)
        media = self.negotiated
        if sdp is not None:
            try:
                media = self.negotiated = self.media.process_answer(sdp)
            except OfferRejected:
                self.state = CallState.CONFIRMED
                self._send_bye(now)
                self._end("bad-answer", by_remote=False)
                return
        self.state = CallState.CONFIRMED
        self.timer.negotiate_uac(response, self.ctx.config.session_expires)
        self.timer.start(now)
        self.ctx.emit(CallAnswered(self.call_id, media))

    def _ack_2xx(self, dialog: Dialog, now: float) -> None:
        assert self.invite is not None
        if self._ack is None or dialog is not self.dialog:
            ack, destination = self._in_dialog_request(dialog, "ACK", seq=self.invite.cseq().seq)
            for name in ("Authorization", "Proxy-Authorization"):
                value = self.invite.headers.get(name)
                if value is not None:
                    ack.headers.add(name, value)
            if dialog is not self.dialog:
                self.ctx.send_stateless(ack, destination)
                return
            self._ack = ack
        self.ctx.send_stateless(self._ack, dialog.destination())

    def _retry_with_auth(self, response: Response, now: float) -> bool:
        assert self.invite is not None and self.uac_tx is not None
        if self._auth is None:
            return False
        retry = self._auth.retry(self.invite, response, self.ctx.new_branch())
        if retry is None:
            return False
        self.invite = retry
        self._send_invite(self.uac_tx.destination, now)
        return True

    def _retry_with_min_se(self, response: Response, now: float) -> bool:
        assert self.invite is not None and self.uac_tx is not None
        retry = self.timer.retry_after_422(self.invite, response, self.ctx.new_branch())
        if retry is None:
            return False
        self.invite = retry
        self._send_invite(self.uac_tx.destination, now)
        return True

    def _maybe_cancel(self, now: float) -> None:
        if not self._cancel_wanted or self._cancel_tx is not None or self.uac_tx is None:
            return  # one CANCEL is enough; its transaction retransmits it
        # §9.1: only once *this* INVITE transaction has had a provisional response (a 100 to an
        # INVITE that was then challenged does not make the retry cancellable).
        if not self.uac_tx.cancellable:
            return
        cancel = self.uac_tx.cancel_request()
        self._decorate(cancel)
        self._cancel_tx = self.ctx.send_request(cancel, self.uac_tx.destination, self, now)
        self._cancel_deadline = now + self.uac_tx.config.timeout
