"""State and helpers shared by both roles of an INVITE session (see :mod:`.session`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .address import Address
from .auth import RequestAuthenticator
from .context import ALLOWED_METHODS, SUPPORTED_OPTIONS, EndpointContext
from .dialog import Dialog
from .errors import RemoteProtocolError
from .events import CallEnded
from .message import Request, Response
from .offer_answer import MediaSession, NegotiatedMedia
from .refer import Transfer
from .sdp import SessionDescription, parse_sdp
from .session_timer import SessionTimer
from .transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    TransactionState,
)

#: Client transaction states before the final response: our request is still "in progress".
IN_PROGRESS = frozenset({TransactionState.CALLING, TransactionState.TRYING, TransactionState.PROCEEDING})

SDP_TYPE = "application/sdp"


class CallState(enum.Enum):
    """Where a call stands, for either role."""

    INITIAL = "initial"  # UAS: INVITE received. UAC: INVITE sent, nothing back yet.
    EARLY = "early"  # a provisional response was sent/received
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass
class PendingOffer:
    """An offer we made in a 2xx (offerless INVITE) whose answer will come in the ACK."""

    is_initial: bool


class SessionCore:
    """A call's state: dialog, media negotiation, transactions; and the helpers every part uses."""

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
        self._pending_offer: PendingOffer | None = None
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
        #: Our REFERs in this dialog, oldest first (blind transfers, :mod:`.session_refer`).
        self._transfers: list[Transfer] = []

    # -- TransactionOwner: the full session routes responses to the role that sent the request --
    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        """A response to one of our requests."""
        raise NotImplementedError

    def on_timeout(self, transaction: ClientTransaction, now: float) -> None:
        """Timer B/F for one of our requests."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once nothing more can happen on this call (the endpoint may forget it)."""
        if self.state is not CallState.TERMINATED or self._bye_after_ack:
            return False
        return self._bye_tx is None or self._bye_tx.terminated

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

    def _safe_sdp(self, message: Request | Response) -> SessionDescription | None:
        try:
            return self._body_sdp(message)
        except RemoteProtocolError:
            return None

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
