"""Retrying a request that drew a 401/407 (RFC 3261 §22.2, sip-trunks.md).

The retry keeps Call-ID and From tag, increments CSeq, takes a new branch and adds the answer
under Authorization (401) or Proxy-Authorization (407); the digest ``uri`` is the Request-URI
exactly as sent. A second challenge for a realm we already answered means wrong credentials —
unless it says ``stale=true`` (only the nonce expired), which earns one more try.
"""

from __future__ import annotations

from .digest import Credentials, DigestClient, parse_challenges, response_header_name
from .errors import LocalProtocolError, RemoteProtocolError
from .message import Request, Response
from .uri import CSeq, Via

#: Stale nonces can legitimately repeat (a long registration), but not endlessly in a row.
MAX_STALE_RETRIES = 3


class RequestAuthenticator:
    """Answers challenges for one logical request (an INVITE, or one registration)."""

    def __init__(self, credentials: Credentials, client: DigestClient | None = None) -> None:
        self.credentials = credentials
        self.client = client or DigestClient()
        self._answered_realms: set[str] = set()
        self._stale_retries = 0

    def __repr__(self) -> str:
        return f"RequestAuthenticator(username={self.credentials.username!r})"

    def retry(self, request: Request, response: Response, branch: str) -> Request | None:
        """The request to resend for ``response`` (401/407), or None to give up."""
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        values = response.headers.get_lines(header)
        if not values:
            return None
        try:
            challenge = parse_challenges(values, realm=self.credentials.realm)
        except RemoteProtocolError:
            return None
        if challenge.realm in self._answered_realms:
            if not challenge.stale or self._stale_retries >= MAX_STALE_RETRIES:
                return None
            self._stale_retries += 1
        try:
            value = self.client.authorization(
                challenge, self.credentials, method=request.method, uri=request.uri, body=request.body
            )
        except LocalProtocolError:
            return None
        self._answered_realms.add(challenge.realm)
        retry = Request(
            method=request.method, uri=request.uri, headers=request.headers.copy(), body=request.body
        )
        via = Via.parse(retry.headers.get_all("Via")[0])
        retry.headers.replace_top("Via", str(via.with_params(branch=branch)))
        cseq = request.cseq()
        retry.headers.set("CSeq", str(CSeq(cseq.seq + 1, cseq.method)))
        name = response_header_name(response.status)
        # Replace any earlier answer for the same realm; keep answers for other proxies.
        kept = [v for v in retry.headers.get_lines(name) if f'realm="{challenge.realm}"' not in v]
        retry.headers.remove(name)
        for old in kept:
            retry.headers.add(name, old)
        retry.headers.add(name, value)
        return retry

    def succeeded(self) -> None:
        """A final non-challenge response arrived: later challenges (new nonces on refresh) are
        fresh challenges, not signs of bad credentials."""
        self._answered_realms.clear()
        self._stale_retries = 0
