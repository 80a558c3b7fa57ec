"""RFC 4028 session timers: who refreshes, when, and when a silent session is dead.

``refresher=uac``/``uas`` always names a role in the transaction that carried it: in a request
we send, ``uac`` is us; in a request we receive, ``uac`` is the peer. The refresher refreshes at
half the interval; the other side gives up at ``interval - min(32, interval / 3)`` and sends BYE.
A refresh (re-INVITE or UPDATE) without Session-Expires turns the timer off.
"""

from __future__ import annotations

from .message import Request, Response
from .uri import CSeq, Via, parse_params

#: RFC 4028 §4: nobody may ask for less than 90 s.
ABSOLUTE_MIN_SE = 90


def _parse_session_expires(message: Request | Response) -> tuple[int, str | None] | None:
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    number, _, params = value.partition(";")
    number = number.strip()
    if not number.isdigit():
        return None
    refresher = parse_params(params).get("refresher")
    return int(number), (refresher.lower() if refresher else None)


def _min_se(message: Request | Response) -> int | None:
    value = (message.headers.get("Min-SE") or "").split(";")[0].strip()
    return int(value) if value.isdigit() else None


class SessionTimer:
    """The session timer of one dialog. Times are on the caller's clock."""

    def __init__(self) -> None:
        self.interval: int | None = None
        self.we_refresh = False
        self.deadline: float | None = None
        self.peer_allows_update = False
        self._peer_supports_timer = False
        self._retried_422 = False

    # -- negotiation ---------------------------------------------------------------------------
    def negotiate_uas(self, invite: Request, min_se: int) -> int | None:
        """Read the caller's INVITE. Returns the Min-SE to demand in a 422, or None if fine."""
        self._learn_peer(invite)
        parsed = _parse_session_expires(invite)
        if parsed is None:
            return None
        interval, refresher = parsed
        floor = max(min_se, ABSOLUTE_MIN_SE)
        if interval < floor:
            return floor
        self.interval = interval
        if refresher is None:
            # We may pick; the caller refreshes when it can (it offered), else we do.
            refresher = "uac" if self._peer_supports_timer else "uas"
        self.we_refresh = refresher == "uas"
        return None

    def decorate_response(self, response: Response) -> None:
        """Add Session-Expires (and Require: timer) to our 2xx for the transaction's request."""
        if self.interval is None:
            return
        role = "uas" if self.we_refresh else "uac"
        response.headers.set("Session-Expires", f"{self.interval};refresher={role}")
        if self._peer_supports_timer:
            response.headers.set("Require", "timer")

    def decorate_request(self, request: Request, interval: int, min_se: int) -> None:
        """What our outbound INVITE asks for."""
        request.headers.set("Supported", "timer")
        request.headers.set("Session-Expires", str(interval))
        request.headers.set("Min-SE", str(max(min_se, ABSOLUTE_MIN_SE)))

    def negotiate_uac(self, response: Response, asked: int | None) -> None:
        """Read the 2xx to our INVITE: no Session-Expires in it means no session timer."""
        self._learn_peer(response)
        parsed = _parse_session_expires(response)
        if parsed is None or asked is None:
            self.interval = None
            return
        self.interval, refresher = parsed
        self.we_refresh = refresher != "uas"

    def retry_after_422(self, request: Request, response: Response, branch: str) -> Request | None:
        """Our INVITE's interval was too small: retry once with the peer's Min-SE."""
        wanted = _min_se(response)
        if wanted is None or self._retried_422:
            return None
        self._retried_422 = True
        retry = Request(
            method=request.method, uri=request.uri, headers=request.headers.copy(), body=request.body
        )
        via = Via.parse(retry.headers.get_all("Via")[0])
        retry.headers.replace_top("Via", str(via.with_params(branch=branch)))
        cseq = request.cseq()
        retry.headers.set("CSeq", str(CSeq(cseq.seq + 1, cseq.method)))
        retry.headers.set("Session-Expires", str(wanted))
        retry.headers.set("Min-SE", str(wanted))
        return retry

    def _learn_peer(self, message: Request | Response) -> None:
        self._peer_supports_timer = "timer" in message.headers.tokens("Supported") or (
            "timer" in message.headers.tokens("Require")
        )
        allow = message.headers.tokens("Allow")
        if allow:
            self.peer_allows_update = "update" in allow

    # -- running -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Arm the timer when the session is established or refreshed."""
        if self.interval is None:
            self.deadline = None
        elif self.we_refresh:
            self.deadline = now + self.interval / 2
        else:
            self.deadline = now + self.interval - min(32, self.interval / 3)

    def stop(self) -> None:
        """Disarm (the call ended)."""
        self.deadline = None

    def due(self, now: float) -> str | None:
        """``refresh`` or ``expire`` when the deadline has passed, else None."""
        if self.deadline is None or now < self.deadline:
            return None
        self.deadline = None
        return "refresh" if self.we_refresh else "expire"

    def decorate_refresh(self, request: Request) -> None:
        """Headers of a refresh we send: we (its UAC) stay the refresher."""
        if self.interval is not None:
            request.headers.set("Session-Expires", f"{self.interval};refresher=uac")
        request.headers.set("Supported", "timer")

    def too_brief(self, request: Request, min_se: int) -> int | None:
        """The Min-SE to demand in a 422 when a refresh asks for less than we accept, else None."""
        parsed = _parse_session_expires(request)
        floor = max(min_se, ABSOLUTE_MIN_SE)
        return floor if parsed is not None and parsed[0] < floor else None

    def on_refresh_request(self, request: Request, response: Response, now: float) -> None:
        """The peer's re-INVITE/UPDATE (already checked by :meth:`too_brief`): it may change the
        interval or the refresher."""
        self._learn_peer(request)
        parsed = _parse_session_expires(request)
        if parsed is None:
            self.interval = None
            self.deadline = None
            return
        self.interval = parsed[0]
        refresher = parsed[1] or "uac"
        # In the peer's request, "uac" is the peer.
        self.we_refresh = refresher == "uas"
        self.decorate_response(response)
        self.start(now)

    def on_refresh_response(self, response: Response, now: float) -> None:
        """2xx to our refresh: the peer may have adjusted the interval."""
        parsed = _parse_session_expires(response)
        if parsed is not None:
            self.interval = parsed[0]
            self.we_refresh = parsed[1] != "uas"
        self.start(now)

    def on_refresh_failed(self, now: float) -> None:
        """Our refresh failed with a recoverable error: try again a quarter-interval later."""
        if self.interval is not None:
            self.deadline = now + self.interval / 4
