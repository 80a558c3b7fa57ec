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

UAC
* 401/407 are retried once per challenge with the same Call-ID and From tag, CSeq + 1 and a new
  branch; ``stale=true`` allows one more try.
* CANCEL only after a provisional response to the INVITE transaction now in flight (a 100 to
  an INVITE that was then challenged does not count); a 2xx that races our CANCEL is ACKed and
  BYEd; no final response 64·T1 after the CANCEL ends the call anyway (§9.1). Once the app hung
  up, a challenge is not answered and any final error ends the call as cancelled.
* 422 (Session Interval Too Small) is retried with the Min-SE the peer asked for.

Both
* session timers: the refresher sends a re-INVITE (or UPDATE when the peer allows it) at half the
  interval; the other side sends BYE if no refresh arrives by ``interval - min(32, interval/3)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .address import Address
from .auth import RequestAuthenticator
from .context import ALLOWED_METHODS, SUPPORTED_OPTIONS, EndpointContext
from .dialog import Dialog
from .errors import LocalProtocolError, OfferRejected, RemoteProtocolError
from .events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    EarlyMedia,
    MediaUpdated,
)
from .message import Request, Response
from .offer_answer import MediaSession, NegotiatedMedia
from .sdp import SessionDescription, parse_sdp
from .session_timer import SessionTimer
from .transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
    TransactionState,
)

#: Client transaction states before the final response: our request is still "in progress".
_IN_PROGRESS = frozenset({TransactionState.CALLING, TransactionState.TRYING, TransactionState.PROCEEDING})

SDP_TYPE = "application/sdp"


class CallState(enum.Enum):
    """Where a call stands, for either role."""

    INITIAL = "initial"  # UAS: INVITE received. UAC: INVITE sent, nothing back yet.
    EARLY = "early"  # a provisional response was sent/received
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass
class _PendingOffer:
    """An offer we made in a 2xx (offerless INVITE) whose answer will come in the ACK."""

    is_initial: bool


class InviteSession:
    """A call: its dialog, its media negotiation and its INVITE transactions."""

    def __init__(
        self,
        ctx: EndpointContext,
        *,
        call_id: str,
        role: str,
        media: MediaSession,
        flow: Address,
    ) -> None:
        self.ctx = ctx
        self.call_id = call_id
        self.role = role  # "uas" or "uac"
        self.media = media
        self.flow = flow
        self.state = CallState.INITIAL
        self.dialog: Dialog | None = None
        self.negotiated: NegotiatedMedia | None = None
        self.timer = SessionTimer()
        # UAS side
        self.invite_tx: InviteServerTransaction | None = None
        self._local_tag = ctx.new_token()
        self._pending_offer: _PendingOffer | None = None
        # re-INVITE we received and answered with 2xx, waiting for its ACK
        self._reinvite_tx: InviteServerTransaction | None = None
        # UAC side
        self.invite: Request | None = None
        self.uac_tx: InviteClientTransaction | None = None
        self._auth: RequestAuthenticator | None = None
        self._auth_attempts = 0
        self._cancel_wanted = False
        self._cancel_tx: ClientTransaction | None = None
        #: §9.1: when to give up on a final response to the INVITE we CANCELled.
        self._cancel_deadline: float | None = None
        self._ack: Request | None = None
        #: UAS hung up while its 2xx was unacknowledged: BYE once the ACK (or Timer L) comes.
        self._bye_after_ack = False
        # our own in-dialog INVITE/UPDATE (session refresh), for glare detection
        self._local_reinvite: ClientTransaction | None = None
        self._glare_retry_at: float | None = None
        self._bye_tx: ClientTransaction | None = None

    # ------------------------------------------------------------------ common helpers
    @property
    def finished(self) -> bool:
        """True once nothing more can happen on this call (the endpoint may forget it)."""
        if self.state is not CallState.TERMINATED or self._bye_after_ack:
            return False
        return self._bye_tx is None or self._bye_tx.terminated

    def get_timer(self) -> float | None:
        """The session's own deadline (CANCEL give-up, session refresh/expiry, glare retry)."""
        if self.state in (CallState.INITIAL, CallState.EARLY):
            return self._cancel_deadline
        deadlines = [d for d in (self.timer.deadline, self._glare_retry_at) if d is not None]
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
        action = self.timer.due(now)
        if action == "refresh":
            self._send_refresh(now)
        elif action == "expire":
            self._send_bye(now)
            self._end("session-expired", by_remote=False)

    def _end(self, reason: str, *, by_remote: bool) -> None:
        if self.state is CallState.TERMINATED:
            return
        self.state = CallState.TERMINATED
        self.timer.stop()
        self.ctx.emit(CallEnded(self.call_id, reason, by_remote))

    def _with_sdp(self, message: Request | Response, sdp: SessionDescription) -> None:
        message.headers.set("Content-Type", SDP_TYPE)
        message.body = sdp.serialize()

    def _body_sdp(self, message: Request | Response) -> SessionDescription | None:
        if not message.body:
            return None
        if message.content_type() not in (None, SDP_TYPE):
            raise RemoteProtocolError(f"unsupported body type {message.content_type()}", status_hint=415)
        return parse_sdp(message.body)

    def _decorate(self, message: Request | Response) -> None:
        """Headers every request/response of ours carries; INVITE/UPDATE answers advertise what
        we allow and support (peers pick UPDATE vs re-INVITE for refresh from them)."""
        if isinstance(message, Request):
            message.headers.set("User-Agent", self.ctx.config.user_agent)
            return
        message.headers.set("Server", self.ctx.config.user_agent)
        if message.cseq().method in ("INVITE", "UPDATE"):
            message.headers.set("Allow", ", ".join(ALLOWED_METHODS))
            message.headers.set("Supported", ", ".join(sorted(SUPPORTED_OPTIONS)))

    def _contact(self) -> str:
        return self.ctx.config.contact_for(self.flow.transport)

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
            self._pending_offer = _PendingOffer(is_initial=True)
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

    def reject(self, status: int, now: float, *, reason: str | None = None) -> None:
        """Answer the INVITE with a final error (486, 603, 488…) and end the call."""
        tx = self._require_uas_pending()
        response = self._uas_response(status, reason)
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
        else:
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
        return self._local_reinvite is not None and self._local_reinvite.state in _IN_PROGRESS

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
        response = self._dialog_response(request, 200)
        try:
            media = self._answer_in_dialog(request, response)
        except OfferRejected as exc:
            self._respond(tx, request.response(exc.status, str(exc)[:80]), now)
            return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._respond(tx, request.response(exc.status_hint, exc.reason), now)
            return
        self.dialog.refresh_target(request)
        self.timer.on_refresh_request(request, response, now, self.ctx.config.min_se)
        self._reinvite_tx = tx
        self._respond(tx, response, now)
        if media is not None:
            self.ctx.emit(MediaUpdated(self.call_id, media))

    def _on_update(self, request: Request, tx: ServerTransaction, now: float) -> None:
        assert self.dialog is not None
        response = self._dialog_response(request, 200)
        try:
            media = self._answer_in_dialog(request, response, allow_offerless=False)
        except OfferRejected as exc:
            self._respond(tx, request.response(exc.status, str(exc)[:80]), now)
            return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # LocalProtocolError(491): an offer while ours is outstanding (RFC 3311 §5.2).
            self._respond(tx, request.response(exc.status_hint, exc.reason), now)
            return
        self.dialog.refresh_target(request)
        self.timer.on_refresh_request(request, response, now, self.ctx.config.min_se)
        self._respond(tx, response, now)
        if media is not None:
            self.ctx.emit(MediaUpdated(self.call_id, media))

    def _answer_in_dialog(
        self, request: Request, response: Response, *, allow_offerless: bool = True
    ) -> NegotiatedMedia | None:
        """Fill ``response`` with our SDP; returns new media when the offer changed anything."""
        offer = self._body_sdp(request)
        if offer is None:
            if allow_offerless:
                # Offerless re-INVITE: we offer what we have now; the answer comes in the ACK.
                self._with_sdp(response, self.media.create_offer())
                self._pending_offer = _PendingOffer(is_initial=False)
            return None
        unchanged = self.media.is_unchanged(offer)
        answer, negotiated = self.media.answer(offer)
        self._with_sdp(response, answer)
        self.negotiated = negotiated
        return None if unchanged else negotiated

    # ------------------------------------------------------------------ UAC
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

    def _safe_sdp(self, message: Request | Response) -> SessionDescription | None:
        try:
            return self._body_sdp(message)
        except RemoteProtocolError:
            return None

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

    def _send_bye(self, now: float) -> None:
        if self.dialog is None or self._bye_tx is not None:
            return
        bye, destination = self._in_dialog_request(self.dialog, "BYE")
        self._bye_tx = self.ctx.send_request(bye, destination, self, now)

    def _in_dialog_request(
        self, dialog: Dialog, method: str, *, seq: int | None = None
    ) -> tuple[Request, Address]:
        """A new in-dialog request with our Via for the transport it will travel on."""
        destination = dialog.destination()
        via = self.ctx.config.via_for(destination.transport, self.ctx.new_branch())
        request = dialog.create_request(method, via, seq=seq)
        self._decorate(request)
        return request, destination

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
            direction = self.negotiated.local_direction if self.negotiated is not None else "sendrecv"
            self._with_sdp(request, self.media.create_offer(direction))
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
