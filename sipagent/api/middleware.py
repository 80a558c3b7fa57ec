"""Two plain ASGI middlewares around the control API's routes: the bearer token, and the guard
that keeps exceptions and oversized bodies from reaching the client as anything but one error.

Plain ASGI (not ``BaseHTTPMiddleware``): they cost a function call per request on the server's
loop, which also paces every call's audio, and they see WebSocket handshakes too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sipagent.api")

#: Requests carry a few hundred bytes; a bigger one is refused before it is read.
MAX_BODY_BYTES = 64 * 1024
#: WebSocket close code for a failure inside the server (RFC 6455 §7.4.1).
CLOSE_INTERNAL_ERROR = 1011
#: WebSocket close code when a handshake is refused and the server cannot answer it with a status.
CLOSE_POLICY_VIOLATION = 1008

_UNAUTHORIZED = "missing or wrong bearer token"


def error_body(field: str | None, message: str) -> dict[str, Any]:
    """The one shape of every error body: ``{"error": {"field": …, "message": …}}``."""
    return {"error": {"field": field, "message": message}}


async def send_error(
    send: Send,
    status: int,
    field: str | None,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    websocket: bool = False,
) -> None:
    """Answer with an error body, as an HTTP response or a WebSocket handshake's denial response."""
    body = json.dumps(error_body(field, message)).encode()
    prefix = "websocket.http.response" if websocket else "http.response"
    await send(
        {
            "type": f"{prefix}.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": f"{prefix}.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class BearerAuth:
    """Demand ``Authorization: Bearer <token>`` on every path but ``public`` ones.

    A WebSocket handshake may carry the token as ``?token=`` instead, since a browser cannot set
    headers on one. A refusal says nothing but 401 (and ``WWW-Authenticate: Bearer``): the same
    body for every path, so it tells no one without the token whether a call exists.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, public: frozenset[str]) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self.token is None or kind not in ("http", "websocket") or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        if self._presented(scope, websocket=kind == "websocket"):
            await self.app(scope, receive, send)
            return
        headers = [(b"www-authenticate", b"Bearer")]
        if kind == "http":
            await send_error(send, 401, None, _UNAUTHORIZED, headers)
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send_error(send, 401, None, _UNAUTHORIZED, headers, websocket=True)
        else:  # the server cannot send a status: a close before accepting it is answered 403
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})

    def _presented(self, scope: Scope, *, websocket: bool) -> bool:
        assert self.token is not None
        candidates: list[bytes] = []
        header = _header(scope, b"authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                candidates.append(credentials.strip())
        if websocket:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            candidates += [value.encode() for value in query.get("token", [])]
        # compare_digest: how long a wrong token took to refuse says nothing about the right one.
        return any(secrets.compare_digest(candidate, self.token) for candidate in candidates)


class Guard:
    """The outermost layer: no traceback and no exception text ever reaches a client.

    An exception escaping a route is logged here, with its traceback, and answered with a generic
    500 (or WebSocket close 1011) in the uniform error shape; Starlette's own last-resort handler
    would log it a second time through uvicorn and re-raise. A body announced bigger than
    :data:`MAX_BODY_BYTES` is refused (413) before it is read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if kind == "http":
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                await send_error(send, 413, "body", f"the body is over {MAX_BODY_BYTES} bytes")
                return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.close") or (
                message["type"] == "websocket.http.response.start"
            ):
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("control API: %s %s failed", scope.get("method", "WEBSOCKET"), scope["path"])
            if kind == "websocket":
                # Closed already, the socket refuses a second close: nothing more to tell the client.
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
            elif not started:  # once the response is under way, the connection just ends
                await send_error(send, 500, None, "internal error; the server's log has the details")
