"""The SIP user agent core, sans-IO (aioquic ``QuicConnection`` style).

Feed it datagrams with :meth:`SipEndpoint.receive_datagram`, collect what to send with
:meth:`datagrams_to_send`, arm one timer at :meth:`get_timer` and call :meth:`handle_timer`, and
drain application events with :meth:`next_event`. It never reads a clock or opens a socket.

Dispatch of a request, in order (RFC 3261 §8.2, §17.2.3, §12.2.2):

1. malformed → best-effort 4xx/5xx built from the raw header lines; the endpoint carries on;
2. top Via stamped with ``received``/``rport`` (RFC 3581);
3. a retransmission of a request with a live server transaction → that transaction;
4. ACK → a non-2xx ACK matches the INVITE transaction; a 2xx ACK goes to its call by Call-ID;
5. CANCEL → 200 and, if the INVITE is still pending, 487 to it; 481 when nothing matches;
6. Max-Forwards 0 → 483; unsupported ``Require`` → 420 with ``Unsupported``;
7. with a To tag → the dialog's call (481 if none); otherwise INVITE creates a call (100 Trying
   at once), OPTIONS gets 200 with Allow, BYE and NOTIFY 481 (no dialog, no subscription),
   everything else (REFER included: decision 0022) 405 with Allow.

Once a server transaction exists, a request found malformed deeper in (a bad Contact, a tel:
Request-URI…) is answered through it, so the transaction ends normally. Every INVITE server
transaction a call answers, re-INVITEs included, is mapped to its call: the call hears of its
ACK (even one reusing the INVITE's branch) and of Timer L when none comes.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable

from .address import Address, Outgoing, as_transport, response_address, stamp_via, uri_address
from .auth import RequestAuthenticator
from .context import ALLOWED_METHODS, SUPPORTED_OPTIONS, EndpointConfig, TransactionOwner
from .digest import Credentials
from .errors import LocalProtocolError, RemoteProtocolError
from .events import Event, IncomingCall
from .message import Headers, Request, Response, error_response_for, parse_message
from .offer_answer import MediaSession, NegotiatedMedia
from .refer import DEFAULT_TRANSFER_TIMEOUT
from .registration import Registration, RegistrationConfig
from .session import CallState, InviteSession
from .transaction import (
    AckReceived,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    ServerTransaction,
    TransactionState,
    TransactionTimedOut,
    cancel_target_key,
    client_key,
    new_branch,
    server_key,
)
from .uri import NameAddr, SipUri

#: Identity headers carriers use for the real caller, most trusted first (sip-trunks.md).
_IDENTITY_HEADERS = ("P-Preferred-Identity", "P-Asserted-Identity", "Remote-Party-ID")


class PingStatus:
    """Outcome of the latest OPTIONS keepalive: the trunk's health as we last saw it."""

    def __init__(self) -> None:
        self.last_status: int | None = None
        self.last_at: float | None = None

    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        """Any final answer, even 404 or 405, proves the path is alive."""
        if response.status >= 200:
            self.last_status, self.last_at = response.status, now

    def on_timeout(self, transaction: ClientTransaction, now: float) -> None:
        """No answer at all."""
        self.last_status, self.last_at = 408, now


def _default_token() -> str:
    return secrets.token_hex(8)


class SipEndpoint:
    """A SIP UA serving many calls and registrations over any number of transports."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        token_factory: Callable[[], str] = _default_token,
        srtp_rng: Callable[[int], bytes] | None = None,
    ) -> None:
        """``srtp_rng`` is the CSPRNG our SDES keys come from (``os.urandom``); needed unless
        ``config.srtp`` is ``"off"``."""
        if config.srtp != "off" and srtp_rng is None:
            raise LocalProtocolError(f"srtp={config.srtp!r} needs srtp_rng")
        self._srtp_rng = srtp_rng
        self.config = config
        self._token = token_factory
        self._client_txs: dict[tuple[str, str], tuple[ClientTransaction, TransactionOwner]] = {}
        self._server_txs: dict[tuple[str, str, str], ServerTransaction] = {}
        self._invite_owner: dict[tuple[str, str, str], InviteSession] = {}
        self.calls: dict[str, InviteSession] = {}
        self.registrations: list[Registration] = []
        self._outgoing: list[Outgoing] = []
        self._events: deque[Event] = deque()
        self.pings = PingStatus()

    # ------------------------------------------------------------------ EndpointContext
    def new_token(self) -> str:
        """A fresh random token (tags, Call-IDs)."""
        return self._token()

    def new_branch(self) -> str:
        """A fresh branch with the RFC 3261 magic cookie."""
        return new_branch(self._token())

    def send_request(
        self, request: Request, destination: Address, owner: TransactionOwner, now: float
    ) -> ClientTransaction:
        """Start a client transaction for ``request``; responses go to ``owner``."""
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(request, destination)
        else:
            tx = NonInviteClientTransaction(request, destination)
        self._client_txs[tx.key] = (tx, owner)
        tx.start(now)
        self._drain(tx)
        return tx

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        """Send ``response`` in ``transaction``."""
        transaction.send_response(response, now)
        self._drain(transaction)

    def _drain(self, transaction: ClientTransaction | ServerTransaction) -> None:
        # Collect a transaction's output the moment it is produced, so the wire order is the
        # order things happened in (200 to a CANCEL before the 487 it causes).
        self._outgoing.extend(transaction.datagrams_to_send())

    def send_stateless(self, request: Request, destination: Address) -> None:
        """Send outside any transaction (2xx ACKs)."""
        self._outgoing.append(Outgoing(destination, request, request.serialize()))

    def emit(self, event: Event) -> None:
        """Queue an application event."""
        self._events.append(event)

    # ------------------------------------------------------------------ I/O surface
    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """Handle one datagram (UDP) or one framed message (TCP/TLS)."""
        try:
            message = parse_message(data)
        except RemoteProtocolError as exc:
            self._answer_malformed(data, source, exc)
            return
        self.receive_message(message, source, now)

    def receive_message(self, message: Request | Response, source: Address, now: float) -> None:
        """Handle a parsed message (stream transports frame and parse before calling this)."""
        if isinstance(message, Response):
            self._on_response(message, now)
        else:
            try:
                stamp_via(message, source)
                self._on_request(message, source, now)
            except RemoteProtocolError as exc:
                # A header that parses but makes no sense deeper in (bad Contact, bad SDP…).
                response = message.response(exc.status_hint, exc.reason)
                self._send_response_stateless(response, source)
        # On streams transactions end on a message, not on a timer (Timers I, J, K are zero):
        # forget them now, or an idle endpoint would hold them until its next timer.
        self._collect_garbage()

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        """Everything waiting to go out, in order."""
        out = self._outgoing
        self._outgoing = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline across transactions, calls and registrations."""
        deadlines: list[float] = []
        for tx, _ in self._client_txs.values():
            t = tx.get_timer()
            if t is not None:
                deadlines.append(t)
        for stx in self._server_txs.values():
            t = stx.get_timer()
            if t is not None:
                deadlines.append(t)
        for call in self.calls.values():
            t = call.get_timer()
            if t is not None:
                deadlines.append(t)
        for reg in self.registrations:
            t = reg.get_timer()
            if t is not None:
                deadlines.append(t)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every deadline that has passed."""
        for key, (tx, owner) in list(self._client_txs.items()):
            t = tx.get_timer()
            if t is not None and t <= now:
                events = tx.handle_timer(now)
                self._drain(tx)
                for event in events:
                    if isinstance(event, TransactionTimedOut):
                        owner.on_timeout(tx, now)
            if tx.terminated:
                self._client_txs.pop(key, None)
        for skey, stx in list(self._server_txs.items()):
            t = stx.get_timer()
            if t is not None and t <= now:
                sevents = stx.handle_timer(now)
                self._drain(stx)
                for sevent in sevents:
                    timer_l = isinstance(sevent, TransactionTimedOut) and sevent.timer == "L"
                    if timer_l and isinstance(stx, InviteServerTransaction):
                        owner_call = self._invite_owner.get(skey)
                        if owner_call is not None:
                            owner_call.ack_timed_out(stx, now)
        for call in list(self.calls.values()):
            t = call.get_timer()
            if t is not None and t <= now:
                call.handle_timer(now)
        for reg in self.registrations:
            t = reg.get_timer()
            if t is not None and t <= now:
                reg.handle_timer(now)
        self._collect_garbage()

    def next_event(self) -> Event | None:
        """The next application event, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ application commands
    def ring(self, call_id: str, now: float) -> None:
        """Send 180 Ringing for an incoming call."""
        self._call(call_id).ring(now)

    def answer(self, call_id: str, now: float, *, rtp_port: int) -> NegotiatedMedia | None:
        """Answer an incoming call with our media on ``rtp_port``."""
        call = self._call(call_id)
        call.media.set_local_port(rtp_port)
        return call.answer(now)

    def reject(
        self, call_id: str, status: int, now: float, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Refuse an incoming call with a final error status (``headers``: e.g. Retry-After)."""
        self._call(call_id).reject(status, now, headers=headers)

    def hangup(self, call_id: str, now: float) -> None:
        """End a call: BYE, CANCEL or a final error, whichever its state calls for."""
        self._call(call_id).hangup(now)

    def refer(
        self,
        call_id: str,
        target: SipUri | str,
        now: float,
        *,
        referred_by: SipUri | None = None,
        timeout: float = DEFAULT_TRANSFER_TIMEOUT,
    ) -> None:
        """Blind-transfer a confirmed call: send REFER with ``Refer-To: <target>``.

        ``target`` is a :class:`SipUri` or the text of a ``sip:``/``sips:``/``tel:`` URI. The
        outcome comes as events: :class:`~.events.TransferAccepted`, any number of
        :class:`~.events.TransferProgress`, then :class:`~.events.TransferSucceeded` or
        :class:`~.events.TransferFailed` (also alone, when the REFER is refused). ``timeout`` is how
        long after the acceptance a final NOTIFY may take. The call stays up either way: after
        success the application hangs up. Raises :class:`LocalProtocolError` when the call is not
        confirmed, already has a transfer under way, or ``target`` is no such URI.
        """
        self._call(call_id).refer(target, now, referred_by=referred_by, timeout=timeout)

    def invite(
        self,
        target: SipUri,
        now: float,
        *,
        rtp_port: int,
        from_uri: SipUri | None = None,
        display_name: str | None = None,
        credentials: Credentials | None = None,
        outbound_proxy: SipUri | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
        destination: Address | None = None,
    ) -> str:
        """Place an outbound call; returns its Call-ID (the handle for later commands).

        ``destination`` is where the INVITE goes when the adapter has located the first hop
        (``outbound_proxy or target``) by RFC 3263; without it, that URI's own host, port and
        transport. Its transport is the one named in our Via and Contact.
        """
        if destination is None:
            destination = uri_address(outbound_proxy or target)
        call_id = f"{self.new_token()}@{self.config.public_host}"
        media = self._media_session(rtp_port)
        session = InviteSession(self, call_id=call_id, role="uac", media=media, flow=destination)
        local = from_uri or SipUri(host=self.config.public_host, user=self.config.contact_user)
        headers = Headers()
        headers.add("Via", self.config.via_for(destination.transport, self.new_branch()))
        headers.add("Max-Forwards", "70")
        if outbound_proxy is not None:
            headers.add("Route", f"<{outbound_proxy.with_params(lr=None)}>")
        headers.add("From", str(NameAddr(local, display_name=display_name).with_params(tag=self.new_token())))
        headers.add("To", str(NameAddr(target)))
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.config.contact_for(destination.transport))
        headers.add("Allow", ", ".join(ALLOWED_METHODS))
        headers.add("User-Agent", self.config.user_agent)
        for name, value in extra_headers:
            headers.add(name, value)
        request = Request(method="INVITE", uri=str(target), headers=headers)
        if self.config.session_expires is not None:
            session.timer.decorate_request(request, self.config.session_expires, self.config.min_se)
        else:
            request.headers.set("Supported", "timer")
        request.headers.set("Content-Type", "application/sdp")
        request.body = media.create_offer().serialize()
        auth = RequestAuthenticator(credentials) if credentials is not None else None
        self.calls[call_id] = session
        session.start_uac(request, destination, auth, now)
        return call_id

    def ping(self, target: SipUri, now: float) -> None:
        """Send an out-of-dialog OPTIONS (trunk keepalive / health check)."""
        destination = uri_address(target)
        headers = Headers()
        headers.add("Via", self.config.via_for(destination.transport, self.new_branch()))
        headers.add("Max-Forwards", "70")
        local = NameAddr(SipUri(host=self.config.public_host, user=self.config.contact_user))
        headers.add("From", str(local.with_params(tag=self.new_token())))
        headers.add("To", str(NameAddr(target)))
        headers.add("Call-ID", f"{self.new_token()}@{self.config.public_host}")
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Contact", self.config.contact_for(destination.transport))
        headers.add("User-Agent", self.config.user_agent)
        self.send_request(
            Request(method="OPTIONS", uri=str(target), headers=headers), destination, self.pings, now
        )

    def register(self, config: RegistrationConfig, now: float) -> Registration:
        """Start keeping a registration alive."""
        registration = Registration(self, config)
        self.registrations.append(registration)
        registration.start(now)
        return registration

    def unregister_all(self, now: float) -> None:
        """Remove every binding (on shutdown)."""
        for registration in self.registrations:
            registration.stop(now)

    def call_state(self, call_id: str) -> CallState | None:
        """The state of a call, or None once forgotten."""
        call = self.calls.get(call_id)
        return call.state if call is not None else None

    # ------------------------------------------------------------------ internals
    def _call(self, call_id: str) -> InviteSession:
        call = self.calls.get(call_id)
        if call is None:
            raise LocalProtocolError(f"no call {call_id!r}")
        return call

    def _media_session(self, rtp_port: int) -> MediaSession:
        if self.config.srtp == "off":
            return MediaSession(self.config.public_host, rtp_port, session_id=self._session_id())
        return MediaSession(
            self.config.public_host,
            rtp_port,
            session_id=self._session_id(),
            srtp=self.config.srtp,
            srtp_rng=self._srtp_rng,
        )

    def _session_id(self) -> int:
        return int(self.new_token()[:8], 16)

    def _send_response_stateless(self, response: Response, source: Address) -> None:
        response.headers.set("Server", self.config.user_agent)
        self._outgoing.append(Outgoing(response_address(response, source), response, response.serialize()))

    def _answer_malformed(self, data: bytes, source: Address, exc: RemoteProtocolError) -> None:
        response = error_response_for(data, exc)
        if response is None:
            return  # a malformed response, or no Via to answer along: drop it (§16.3, §18.3)
        destination = source if source.reliable else Address("udp", source.host, source.port)
        self._outgoing.append(Outgoing(destination, response, response.serialize()))

    def _on_response(self, response: Response, now: float) -> None:
        try:
            key = client_key(response)
        except RemoteProtocolError:
            return
        entry = self._client_txs.get(key)
        if entry is None:
            # A 2xx retransmission after the INVITE transaction ended still needs its ACK.
            call = self.calls.get(response.call_id())
            if (
                call is not None
                and key[1] == "INVITE"
                and 200 <= response.status < 300
                and call.uac_tx is not None
            ):
                call.on_response(call.uac_tx, response, now)
            return
        tx, owner = entry
        events = tx.receive_response(response, now)
        self._drain(tx)
        for event in events:
            if isinstance(event, ResponseReceived):
                owner.on_response(tx, event.response, now)

    def _on_request(self, request: Request, source: Address, now: float) -> None:
        key = server_key(request)
        existing = self._server_txs.get(key)
        if existing is not None:
            events = existing.receive_request(request, now)
            self._drain(existing)
            for event in events:
                # Old stacks reuse the INVITE's branch for the 2xx ACK; it still confirms the call.
                if isinstance(event, AckReceived):
                    call = self._invite_owner.get(key)
                    if call is not None:
                        call.on_ack(event.request, now)
            return
        if request.method == "ACK":
            call = self.calls.get(request.call_id())
            if call is not None:
                call.on_ack(request, now)
            return
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = InviteServerTransaction(request, source)
        else:
            tx = NonInviteServerTransaction(request, source)
        self._server_txs[key] = tx
        try:
            self._dispatch(request, tx, source, now)
        except RemoteProtocolError as exc:
            # Malformed deeper in (a bad Contact, an unusable Request-URI…): answer through the
            # transaction, which then ends normally, rather than leave it idling forever.
            if tx.state in (TransactionState.TRYING, TransactionState.PROCEEDING):
                response = request.response(exc.status_hint, exc.reason)
                response.headers.set("Server", self.config.user_agent)
                self.send_response(tx, response, now)

    def _dispatch(self, request: Request, tx: ServerTransaction, source: Address, now: float) -> None:
        """Steps 6 and 7 of the module docstring, for a request with a new server transaction."""
        rejection = self._precheck(request)
        if rejection is not None:
            rejection.headers.set("Server", self.config.user_agent)
            self.send_response(tx, rejection, now)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, tx, now)
        elif request.to().tag is not None:
            call = self.calls.get(request.call_id())
            if call is None or call.dialog is None or not call.dialog.matches(request):
                self.send_response(tx, request.response(481), now)
            else:
                if isinstance(tx, InviteServerTransaction):
                    self._invite_owner[server_key(request)] = call  # its ACK and Timer L
                call.on_request(request, tx, now)
        elif request.method == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            self._on_new_invite(request, tx, source, now)
        elif request.method == "OPTIONS":
            self.send_response(tx, self._options_response(request), now)
        elif request.method in ("BYE", "NOTIFY"):
            self.send_response(tx, request.response(481), now)
        else:
            response = request.response(405)
            response.headers.set("Allow", ", ".join(ALLOWED_METHODS))
            self.send_response(tx, response, now)

    def _precheck(self, request: Request) -> Response | None:
        """Checks every request passes before it reaches a call (§8.2.1–8.2.2, RFC 3261 §16.3)."""
        max_forwards = (request.headers.get("Max-Forwards") or "70").strip()
        if max_forwards.isdigit() and int(max_forwards) == 0 and request.method != "OPTIONS":
            return request.response(483)
        if request.method == "CANCEL":
            return None
        unsupported = sorted(request.headers.tokens("Require") - SUPPORTED_OPTIONS)
        if unsupported:
            response = request.response(420)
            response.headers.set("Unsupported", ", ".join(unsupported))
            return response
        return None

    def _options_response(self, request: Request) -> Response:
        response = request.response(200, to_tag=self.new_token())
        response.headers.set("Allow", ", ".join(ALLOWED_METHODS))
        response.headers.set("Accept", "application/sdp")
        response.headers.set("Supported", ", ".join(sorted(SUPPORTED_OPTIONS)))
        response.headers.set("Server", self.config.user_agent)
        return response

    def _on_cancel(self, cancel: Request, tx: ServerTransaction, now: float) -> None:
        target = cancel_target_key(cancel)
        invite_tx = self._server_txs.get(target)
        call = self._invite_owner.get(target)
        if invite_tx is None or call is None:
            self.send_response(tx, cancel.response(481), now)
            return
        self.send_response(tx, cancel.response(200), now)
        call.on_cancel(now)

    def _on_new_invite(
        self, invite: Request, tx: InviteServerTransaction, source: Address, now: float
    ) -> None:
        call_id = invite.call_id()
        if call_id in self.calls:
            # Same Call-ID, no To tag, new branch: a merged request or a loop (§8.2.2.2).
            self.send_response(tx, invite.response(482), now)
            return
        self.send_response(tx, invite.response(100), now)
        if not invite.contacts():
            self.send_response(tx, invite.response(400, "Missing Contact"), now)
            return
        # Parsed before the call exists, so a bad one (tel:, garbage) leaves no half-made call.
        callee = invite.request_uri()
        # The RTP port is chosen when the app answers; 9 (discard) is a placeholder never sent.
        media = self._media_session(9)
        flow = Address(as_transport(source.transport), source.host, source.port)
        call = InviteSession(self, call_id=call_id, role="uas", media=media, flow=flow)
        if not call.start_uas(invite, tx, now):
            return
        self.calls[call_id] = call
        self._invite_owner[server_key(invite)] = call
        self.emit(
            IncomingCall(
                call_id=call_id,
                caller=invite.from_(),
                callee=callee,
                source=source,
                request=invite,
                asserted_caller=self._asserted_caller(invite),
            )
        )

    @staticmethod
    def _asserted_caller(invite: Request) -> NameAddr:
        for name in _IDENTITY_HEADERS:
            value = invite.headers.get(name)
            if value:
                try:
                    return NameAddr.parse(value.split(",")[0])
                except RemoteProtocolError:
                    continue
        return invite.from_()

    def _collect_garbage(self) -> None:
        for key, stx in list(self._server_txs.items()):
            if stx.terminated:
                del self._server_txs[key]
                self._invite_owner.pop(key, None)
        for ckey, (tx, owner) in list(self._client_txs.items()):
            # An INVITE given up after our CANCEL (§9.1) idles in PROCEEDING with no timer.
            abandoned = tx.get_timer() is None and isinstance(owner, InviteSession) and owner.finished
            if tx.terminated or abandoned:
                del self._client_txs[ckey]
        owned = {id(call) for call in self._invite_owner.values()}  # linear: runs per message
        for call_id, call in list(self.calls.items()):
            if call.finished and id(call) not in owned:
                del self.calls[call_id]
