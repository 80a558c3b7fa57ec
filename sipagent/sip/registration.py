"""The registration client (RFC 3261 §10, RFC 5626 §4.5 back-off), for registration-mode trunks.

Rules (sip-trunks.md):

* one Call-ID and From tag for the life of the binding; CSeq grows by one per REGISTER;
* the expiry the registrar *grants* wins over the one we asked for (Telnyx: ask 3600, get 3457):
  the ``expires`` param of our Contact in the 200, else its Expires header;
* refresh before expiry: at half the grant for short grants, 60 s early for long ones;
* 401/407: answer the challenge (no qop and qop=auth both occur); a second challenge that is not
  ``stale`` means the credentials are wrong and counts as a failure;
* 423 Interval Too Brief: retry at once with the registrar's Min-Expires;
* any other failure or a timeout: back off (30 s doubling to 30 min, or the 503 Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .address import Address, uri_address
from .auth import RequestAuthenticator
from .context import ALLOWED_METHODS, EndpointContext
from .digest import Credentials
from .events import RegistrationFailed, RegistrationSucceeded
from .message import Headers, Request, Response
from .transaction import ClientTransaction
from .uri import NameAddr, SipUri


@dataclass(frozen=True)
class RegistrationConfig:
    """What to register, where, and how."""

    registrar: SipUri
    aor: SipUri
    credentials: Credentials | None = None
    expires: int = 3600
    #: Send REGISTERs here instead of the registrar's address (an outbound proxy).
    outbound_proxy: SipUri | None = None
    retry_base: float = 30.0
    retry_max: float = 1800.0
    extra_headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    #: Where the REGISTERs (refreshes included) go when the adapter located the registrar (or the
    #: outbound proxy) by RFC 3263; None sends to that URI's own host, port and transport.
    destination: Address | None = None


def refresh_delay(granted: int) -> float:
    """How long after a successful REGISTER to refresh it: half of a short grant, 60 s early on a
    long one, so a lost refresh still has time for a retry before the binding lapses."""
    return max(granted / 2, granted - 60.0)


class Registration:
    """One binding kept alive with a registrar."""

    def __init__(self, ctx: EndpointContext, config: RegistrationConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.call_id = f"{ctx.new_token()}@{ctx.config.public_host}"
        self.from_tag = ctx.new_token()
        self.cseq = 0
        self.expires_requested = config.expires
        self.granted: int | None = None
        self.registered_until: float | None = None
        self._next_at: float | None = None
        self._failures = 0
        self._tx: ClientTransaction | None = None
        self._auth = RequestAuthenticator(config.credentials) if config.credentials else None
        self._unregistering = False

    @property
    def aor(self) -> str:
        """The address-of-record as text."""
        return str(self.config.aor)

    def destination(self) -> Address:
        """Where REGISTERs go: the located address when the config has one."""
        if self.config.destination is not None:
            return self.config.destination
        return uri_address(self.config.outbound_proxy or self.config.registrar)

    # -- TransactionOwner-style entry points, via the endpoint ---------------------------------
    def start(self, now: float) -> None:
        """Send the first REGISTER now."""
        self._send(self._build(self.expires_requested), now)

    def stop(self, now: float) -> None:
        """Remove the binding (Expires: 0) and stop refreshing."""
        self._next_at = None
        if self.granted is None:
            return
        self._unregistering = True
        self._send(self._build(0), now)

    def get_timer(self) -> float | None:
        """When the next refresh or retry is due."""
        return self._next_at

    def handle_timer(self, now: float) -> None:
        """Send the refresh or retry that is due."""
        if self._next_at is not None and now >= self._next_at:
            self._next_at = None
            self._send(self._build(self.expires_requested), now)

    def on_response(self, transaction: ClientTransaction, response: Response, now: float) -> None:
        """A response to one of our REGISTERs."""
        if transaction is not self._tx or response.status < 200:
            return
        status = response.status
        if status not in (401, 407) and self._auth is not None:
            # Any other final answer (a 423, a 5xx…) ends this round of challenges: the next
            # challenge is a fresh one, not a sign of wrong credentials.
            self._auth.succeeded()
        if 200 <= status < 300:
            self._on_success(response, now)
        elif status in (401, 407) and self._auth is not None:
            retry = self._auth.retry(self._tx.request, response, self.ctx.new_branch())
            if retry is None:
                self._fail(status, "authentication failed", now)
                return
            self.cseq = retry.cseq().seq
            self._send(retry, now)
        elif status == 423:
            minimum = (response.headers.get("Min-Expires") or "").strip()
            if minimum.isdigit() and int(minimum) > self.expires_requested:
                self.expires_requested = int(minimum)
                self._send(self._build(self.expires_requested), now)
            else:
                self._fail(status, response.reason, now)
        else:
            self._fail(status, response.reason, now, retry_after=response.headers.get("Retry-After"))

    def on_timeout(self, transaction: ClientTransaction, now: float) -> None:
        """Timer F: the registrar did not answer."""
        if transaction is self._tx:
            self._fail(408, "Request Timeout", now)

    # -- internals ------------------------------------------------------------------------------
    def _build(self, expires: int) -> Request:
        self.cseq += 1
        destination = self.destination()
        headers = Headers()
        headers.add("Via", self.ctx.config.via_for(destination.transport, self.ctx.new_branch()))
        headers.add("Max-Forwards", "70")
        if self.config.outbound_proxy is not None:
            headers.add("Route", f"<{self.config.outbound_proxy.with_params(lr=None)}>")
        aor = NameAddr(self.config.aor)
        headers.add("From", str(aor.with_params(tag=self.from_tag)))
        headers.add("To", str(aor))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", self._contact())
        headers.add("Expires", str(expires))
        headers.add("Allow", ", ".join(ALLOWED_METHODS))
        headers.add("User-Agent", self.ctx.config.user_agent)
        for name, value in self.config.extra_headers:
            headers.add(name, value)
        registrar = self.config.registrar
        request_uri = SipUri(host=registrar.host, port=registrar.port, scheme=registrar.scheme)
        if registrar.params.get("transport"):
            request_uri = request_uri.with_params(transport=registrar.params["transport"])
        return Request(method="REGISTER", uri=str(request_uri), headers=headers)

    def _contact(self) -> str:
        return self.ctx.config.contact_for(self.destination().transport)

    def _send(self, request: Request, now: float) -> None:
        self._tx = self.ctx.send_request(request, self.destination(), self, now)

    def _granted_expiry(self, response: Response) -> int:
        ours = NameAddr.parse(self._contact()).uri
        for contact in response.contacts():
            same = contact.uri.host == ours.host and (contact.uri.port or 5060) == (ours.port or 5060)
            value = contact.params.get("expires")
            if same and contact.uri.user == ours.user and value and value.isdigit():
                return int(value)
        header = (response.headers.get("Expires") or "").strip()
        if header.isdigit():
            return int(header)
        return self.expires_requested

    def _on_success(self, response: Response, now: float) -> None:
        if self._auth is not None:
            self._auth.succeeded()
        self._failures = 0
        if self._unregistering:
            self.granted = None
            self.registered_until = None
            return
        granted = self._granted_expiry(response)
        self.granted = granted
        self.registered_until = now + granted
        self._next_at = now + refresh_delay(granted) if granted > 0 else None
        self.ctx.emit(RegistrationSucceeded(self.aor, granted))

    def _fail(self, status: int, reason: str, now: float, *, retry_after: str | None = None) -> None:
        if self._auth is not None:
            self._auth.succeeded()  # the next attempt starts with a clean slate
        if self._unregistering:
            return
        self._failures += 1
        delay = min(self.config.retry_max, self.config.retry_base * 2 ** (self._failures - 1))
        if retry_after is not None:
            seconds = retry_after.split(";")[0].strip()
            if seconds.isdigit():
                delay = max(1.0, float(seconds))
        self._next_at = now + delay
        self.ctx.emit(RegistrationFailed(self.aor, status, reason, self._next_at))
