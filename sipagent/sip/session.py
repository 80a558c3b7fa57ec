"""One call's INVITE usage, both roles (RFC 3261 §13–15, RFC 3264, RFC 4028, RFC 6026).

Rules, as carriers test them (sip-trunks.md):

UAS
* 100 Trying is sent by the endpoint the moment an INVITE arrives; 180 and 200 come from the app.
* the 2xx carries Record-Route copied from the INVITE and is retransmitted (by the INVITE server
  transaction) until the ACK, which arrives with a new branch and is matched here by dialog.
* CANCEL before the final response: 200 to the CANCEL (endpoint), 487 to the INVITE (here), and
  the call can no longer be answered.
* hanging up before the ACK for our 2xx arrives ends the call for the app at once, but the BYE
  waits for that ACK or for Timer L (§15: it could overtake the 2xx).
* a 2xx (initial or re-INVITE) never ACKed within Timer L ends the session with BYE (§13.3.1.4).
* an INVITE without SDP gets our offer in the 200 and the answer comes in the ACK.
* re-INVITE / UPDATE: answered automatically from the media session; a re-INVITE (or an UPDATE
  carrying an offer) while ours has no final response yet gets 491; while an earlier incoming one
  is unanswered, 500 with Retry-After (§14.2).

UAC: see :mod:`.session_uac` (challenges, CANCEL rules, 422). Shared state: :mod:`.session_core`.
Blind transfer (our REFER, the NOTIFYs about it): :mod:`.session_refer`; a REFER sent to us gets
405, as every method we do not take does.

Both
* session timers: the refresher sends a re-INVITE (or UPDATE when the peer allows it) at half the
  interval; the other side sends BYE if no refresh arrives by ``interval - min(32, interval/3)``.
"""

from __future__ import annotations

from .context import ALLOWED_METHODS
from .dialog import Dialog
from .errors import LocalProtocolError, OfferRejected, RemoteProtocolError
from .events import (
    CallConfirmed,
    CallFailed,
    MediaUpdated,
)
from .message import Request, Response
from .offer_answer import NegotiatedMedia
from .session_core import IN_PROGRESS, SDP_TYPE, CallState, PendingOffer
from .session_refer import ReferSession
from .session_uac import UacSession
from .transaction import (
    ClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
)

__all__ = ["SDP_TYPE", "CallState", "InviteSession"]


class InviteSession(UacSession, ReferSession):
    """A call: its dialog, its media negotiation and its INVITE transactions."""

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        """The session's own deadline (CANCEL give-up, session refresh/expiry, glare retry,
        a transfer's wait for its final NOTIFY)."""
        if self.state in (CallState.INITIAL, CallState.EARLY):
            return self._cancel_deadline
        candidates = (self.timer.deadline, self._glare_retry_at, self._transfer_deadline())
        deadlines = [d for d in candidates if d is not None]
        if self.state is not CallState.CONFIRMED:
            return None
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run whatever deadline has passed."""
        if self.state in (CallState.INITIAL, CallState.EARLY):
            if self._cancel_deadline is not None and now >= self._cancel_deadline:
                # §9.1: no final response 64·T1 after our CANCEL: consider the INVITE cancelled.
                self._cancel_deadline = None
                self._end("cancelled", by_remote=False)
            return
        if self.state is not CallState.CONFIRMED:
            return
        if self._glare_retry_at is not None and now >= self._glare_retry_at:
            self._glare_retry_at = None
            self._send_refresh(now)
        self._run_transfer_timers(now)
        action = self.timer.due(now)
        if action == "refresh":
            self._send_refresh(now)
        elif action == "expire":
            self._send_bye(now)
            self._end("session-expired", by_remote=False)

    # ------------------------------------------------------------------ UAS: initial INVITE
    def start_uas(self, invite: Request, tx: InviteServerTransaction, now: float) -> bool:
        """Take an incoming INVITE; the endpoint already answered 100 Trying.

        Returns False when the INVITE was refused outright (422: session interval too small).
        """
        self.invite_tx = tx
        self.invite = invite
        needed = self.timer.negotiate_uas(invite, self.ctx.config.min_se)
        if needed is not None:
            response = self._uas_response(422)
            response.headers.set("Min-SE", str(needed))
            self.ctx.send_response(tx, response, now)
            self.state = CallState.TERMINATED
            return False
        return True

    def _uas_response(self, status: int, reason: str | None = None) -> Response:
        assert self.invite is not None
        response = self.invite.response(status, reason, to_tag=self._local_tag)
        if 100 < status < 300:
            # Record-Route is copied into every dialog-forming response (§12.1.1).
            for value in self.invite.headers.get_lines("Record-Route"):
                response.headers.add("Record-Route", value)
            response.headers.add("Contact", self._contact())
        self._decorate(response)
        return response

    def _require_uas_pending(self) -> InviteServerTransaction:
        if self.role != "uas" or self.invite_tx is None:
            raise LocalProtocolError(f"call {self.call_id} is not an inbound call")
        if self.state not in (CallState.INITIAL, CallState.EARLY):
            raise LocalProtocolError(f"call {self.call_id} cannot be answered in state {self.state.value}")
        return self.invite_tx

    def ring(self, now: float, *, status: int = 180) -> None:
        """Send 180 Ringing (or 183 without media)."""
        tx = self._require_uas_pending()
        self.ctx.send_response(tx, self._uas_response(status), now)
        self.state = CallState.EARLY

    def answer(self, now: float) -> NegotiatedMedia | None:
        """Send 200 OK with our SDP answer (or offer, when the INVITE had none).

        Returns the negotiated media when the INVITE carried an offer; otherwise it arrives with
        :class:`CallConfirmed`. Raises :class:`OfferRejected` (after answering its status) when
        the offer cannot be accepted.
        """
        tx = self._require_uas_pending()
        assert self.invite is not None
        response = self._uas_response(200)
        try:
            offer = self._body_sdp(self.invite)
        except RemoteProtocolError as exc:
            self.reject(exc.status_hint, now, reason=exc.reason)
            raise OfferRejected(str(exc), status=exc.status_hint) from exc
        if offer is None:
            self._with_sdp(response, self.media.create_offer())
            self._pending_offer = PendingOffer(is_initial=True)
        else:
            try:
                answer, negotiated = self.media.answer(offer)
            except OfferRejected as exc:
                self.reject(exc.status, now, reason=str(exc))
                raise
            self._with_sdp(response, answer)
            self.negotiated = negotiated
        self.timer.decorate_response(response)
        self.dialog = Dialog.as_uas(self.invite, self._local_tag, self._contact(), self.flow)
        self.ctx.send_response(tx, response, now)
        self.state = CallState.ANSWERED
        return self.negotiated

    def reject(
        self,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer the INVITE with a final error (486, 603, 488…) and end the call; ``headers`` are
        added to the response (a 503's Retry-After)."""
        tx = self._require_uas_pending()
        response = self._uas_response(status, reason)
        for name, value in headers:
            response.headers.add(name, value)
        if status == 488:
            response.headers.set("Warning", '304 sipagent "Media type not available"')
        self.ctx.send_response(tx, response, now)
        self._end(f"rejected-{status}", by_remote=False)

    def on_cancel(self, now: float) -> bool:
        """The caller CANCELled. True if that ended the call (487 sent), False if too late."""
        if self.role != "uas" or self.state not in (CallState.INITIAL, CallState.EARLY):
            return False
        assert self.invite_tx is not None
        self.ctx.send_response(self.invite_tx, self._uas_response(487), now)
        self._end("cancelled", by_remote=True)
        return True

    def on_ack(self, ack: Request, now: float) -> None:
        """An ACK for one of our 2xx (initial INVITE or re-INVITE)."""
        if self.dialog is None or ack.cseq().seq != (self.dialog.remote_seq or 0):
            return  # stray or late ACK; nothing to confirm
        tx = self._reinvite_tx if self._reinvite_tx is not None else self.invite_tx
        if tx is not None and not tx.terminated:
            tx.ack_received(ack, now)
        self._reinvite_tx = None
        if self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye(now)
            return
        media = self._take_ack_answer(ack, now)
        if self.state is CallState.ANSWERED:
            self.state = CallState.CONFIRMED
            self.timer.start(now)
            self.ctx.emit(CallConfirmed(self.call_id, media))
        elif media is not None:
            self.ctx.emit(MediaUpdated(self.call_id, media))

    def _take_ack_answer(self, ack: Request, now: float) -> NegotiatedMedia | None:
        if self._pending_offer is None:
            return None
        self._pending_offer = None
        try:
            sdp = self._body_sdp(ack)
            if sdp is None:
                raise OfferRejected("ACK carried no answer to our offer")
            self.negotiated = self.media.process_answer(sdp)
        except (OfferRejected, RemoteProtocolError):
            # The answer is unusable; RFC 3261 §13.3.1.4 says to end the session with BYE.
            self._send_bye(now)
            self._end("bad-answer-in-ack", by_remote=False)
            return None
        return self.negotiated

    # ------------------------------------------------------------------ in-dialog requests
    def on_request(self, request: Request, tx: ServerTransaction, now: float) -> None:
        """An in-dialog request other than ACK and CANCEL."""
        dialog = self.dialog
        if dialog is None or self.state is CallState.TERMINATED:
            self._respond(tx, request.response(481), now)
            return
        if not dialog.check_remote_seq(request):
            self._respond(tx, request.response(500, "CSeq out of order"), now)
            return
        method = request.method
        if method == "BYE":
            self._respond(tx, request.response(200), now)
            if self.invite_tx is not None and self.state in (CallState.INITIAL, CallState.EARLY):
                self.ctx.send_response(self.invite_tx, self._uas_response(487), now)
            self._end("remote-bye", by_remote=True)
        elif method == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            self._on_reinvite(request, tx, now)
        elif method == "UPDATE":
            self._on_update(request, tx, now)
        elif method in ("OPTIONS", "INFO"):
            self._respond(tx, request.response(200), now)
        elif method == "NOTIFY":
            self._on_notify(request, tx, now)
        else:
            # REFER among them: we are never a transferee (decision 0022).
            response = request.response(405)
            response.headers.set("Allow", ", ".join(ALLOWED_METHODS))
            self._respond(tx, response, now)

    def _respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        self._decorate(response)
        self.ctx.send_response(tx, response, now)

    def _dialog_response(self, request: Request, status: int, reason: str | None = None) -> Response:
        response = request.response(status, reason)
        if 200 <= status < 300:
            response.headers.add("Contact", self._contact())
        return response

    def _local_request_pending(self) -> bool:
        """Our re-INVITE/UPDATE has had no final response yet (the §14.1 glare window).

        Not "its transaction is alive": a completed one lingers (Timer D, K, M) long after.
        """
        return self._local_reinvite is not None and self._local_reinvite.state in IN_PROGRESS

    def _on_reinvite(self, request: Request, tx: InviteServerTransaction, now: float) -> None:
        assert self.dialog is not None
        if self._local_request_pending():
            self._respond(tx, request.response(491), now)
            return
        if self._reinvite_tx is not None or self.state is CallState.ANSWERED:
            response = request.response(500, "Previous INVITE pending")
            response.headers.set("Retry-After", "1")
            self._respond(tx, response, now)
            return
        if self._accept_refresh(request, tx, now, allow_offerless=True):
            self._reinvite_tx = tx  # its 2xx waits for an ACK

    def _on_update(self, request: Request, tx: ServerTransaction, now: float) -> None:
        self._accept_refresh(request, tx, now, allow_offerless=False)

    def _accept_refresh(
        self, request: Request, tx: ServerTransaction, now: float, *, allow_offerless: bool
    ) -> bool:
        """Answer a re-INVITE or UPDATE with 200 and our SDP, or with the error refusing it."""
        assert self.dialog is not None
        floor = self.timer.too_brief(request, self.ctx.config.min_se)
        if floor is not None:
            response = request.response(422)
            response.headers.set("Min-SE", str(floor))
            self._respond(tx, response, now)
            return False
        response = self._dialog_response(request, 200)
        try:
            media = self._answer_in_dialog(request, response, allow_offerless=allow_offerless)
        except OfferRejected as exc:
            self._respond(tx, request.response(exc.status, str(exc)[:80]), now)
            return False
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # LocalProtocolError(491): an offer while ours is outstanding (RFC 3311 §5.2).
            self._respond(tx, request.response(exc.status_hint, exc.reason), now)
            return False
        self.dialog.refresh_target(request)
        self.timer.on_refresh_request(request, response, now)
        self._respond(tx, response, now)
        if media is not None:
            self.ctx.emit(MediaUpdated(self.call_id, media))
        return True

    def _answer_in_dialog(
        self, request: Request, response: Response, *, allow_offerless: bool = True
    ) -> NegotiatedMedia | None:
        """Fill ``response`` with our SDP; returns new media when the offer changed anything."""
        offer = self._body_sdp(request)
        if offer is None:
            if allow_offerless:
                # Offerless re-INVITE: we offer what we have now; the answer comes in the ACK.
                self._with_sdp(response, self.media.create_offer())
                self._pending_offer = PendingOffer(is_initial=False)
            return None
        unchanged = self.media.is_unchanged(offer)
        answer, negotiated = self.media.answer(offer)
        self._with_sdp(response, answer)
        self.negotiated = negotiated
        return None if unchanged else negotiated

    # ------------------------------------------------------------------ responses
    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        """Responses to our INVITE, re-INVITE/UPDATE or BYE."""
        method = response.cseq().method
        if transaction is self.uac_tx:
            self._on_invite_response(response, now)
        elif transaction is self._local_reinvite:
            self._on_refresh_response(response, now)
        elif method == "BYE":
            pass  # any final answer (or none) ends a BYE; the call is already over

    def on_timeout(self, transaction: ClientTransaction, now: float) -> None:
        """Timer B/F: the peer is gone."""
        if transaction is self.uac_tx and self.state in (CallState.INITIAL, CallState.EARLY):
            self.state = CallState.TERMINATED
            self.ctx.emit(CallFailed(self.call_id, 408, "Request Timeout"))
        elif transaction is self._local_reinvite:
            # §14.1: a 408 or 481 to a re-INVITE ends the dialog.
            self._send_bye(now)
            self._end("refresh-timeout", by_remote=False)

    # ------------------------------------------------------------------ hang-up
    def hangup(self, now: float) -> None:
        """End the call from our side, whatever its state."""
        if self.state is CallState.TERMINATED:
            return
        if self.role == "uas" and self.state in (CallState.INITIAL, CallState.EARLY):
            self.reject(480, now)
            return
        if self.role == "uac" and self.state in (CallState.INITIAL, CallState.EARLY):
            self._cancel_wanted = True
            self._maybe_cancel(now)
            return
        if self.state is CallState.ANSWERED:
            # §15: no BYE until the ACK for our 2xx arrives (or Timer L fires); the call is over
            # for the app now all the same.
            self._bye_after_ack = True
            self._end("local-bye", by_remote=False)
            return
        self._send_bye(now)
        self._end("local-bye", by_remote=False)

    def ack_timed_out(self, tx: InviteServerTransaction, now: float) -> None:
        """Timer L: our 2xx in ``tx`` was never ACKed. §13.3.1.4: end the session with BYE."""
        if tx is self._reinvite_tx:
            self._reinvite_tx = None
            self._pending_offer = None
            self._send_bye(now)
            self._end("ack-timeout", by_remote=False)
        elif tx is self.invite_tx and self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye(now)
        elif tx is self.invite_tx and self.state is CallState.ANSWERED:
            self._send_bye(now)
            self._end("ack-timeout", by_remote=False)

    # ------------------------------------------------------------------ session refresh
    def _send_refresh(self, now: float) -> None:
        if self.dialog is None or self._local_request_pending():
            return
        use_update = self.ctx.config.prefer_update_refresh and self.timer.peer_allows_update
        method = "UPDATE" if use_update else "INVITE"
        request, destination = self._in_dialog_request(self.dialog, method)
        self.timer.decorate_refresh(request)
        if method == "INVITE":
            # Same SDP, same o= version: nothing changed, so the peer need not touch media.
            self._with_sdp(request, self.media.refresh_offer())
        self._local_reinvite = self.ctx.send_request(request, destination, self, now)

    def _take_refresh_answer(self, response: Response) -> None:
        if not self.media.has_pending_offer:
            return
        sdp = self._safe_sdp(response)
        if sdp is None:
            self.media.cancel_offer()
            return
        try:
            negotiated = self.media.process_answer(sdp)
        except OfferRejected:
            self.media.cancel_offer()
            return
        changed = negotiated != self.negotiated
        self.negotiated = negotiated
        if changed:
            self.ctx.emit(MediaUpdated(self.call_id, negotiated))

    def _on_refresh_response(self, response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            return
        if response.cseq().method == "INVITE" and 200 <= status < 300 and self.dialog is not None:
            ack, destination = self._in_dialog_request(self.dialog, "ACK", seq=response.cseq().seq)
            self.ctx.send_stateless(ack, destination)
        if 200 <= status < 300:
            if self.dialog is not None:
                self.dialog.refresh_target(response)  # target refresh; route set unchanged
            self._take_refresh_answer(response)
            self.timer.on_refresh_response(response, now)
            return
        self.media.cancel_offer()
        if status == 491:
            # §14.1: retry after a random wait; the Call-ID owner waits 2.1–4 s, the other 0–2 s.
            jitter = int(self.ctx.new_token()[:4], 16) / 0xFFFF
            delay = 2.1 + 1.9 * jitter if self.role == "uac" else 2.0 * jitter
            self._glare_retry_at = now + delay
        elif status in (408, 481):
            self._send_bye(now)
            self._end(f"refresh-{status}", by_remote=False)
        else:
            # Any other failure leaves the session as it was (§14.1); try again at next refresh.
            self.timer.on_refresh_failed(now)
