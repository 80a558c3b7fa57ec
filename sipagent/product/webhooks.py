"""Webhook tools: one HTTP request per call the model makes, whose answer goes back to the model.

:class:`WebhookRunner` holds one ``httpx.AsyncClient`` (bounded connection pool, no redirects
followed) shared by every call, and runs on the server's event loop: a request is awaited, never a
thread. :meth:`WebhookRunner.run` never raises into the call (only cancellation passes through, as
when the call ends): whatever happens comes back as a :class:`ToolOutcome` whose ``content`` is what
the model reads next.

* The arguments are checked against the tool's schema first; invalid ones are never sent.
* ``POST`` sends them as a JSON body, ``GET`` as query parameters (arrays repeat the parameter,
  objects go as JSON text). Every request carries ``X-Sipagent-Call-Id`` and ``X-Sipagent-Tool``.
* Header values are read from the environment at each call; a variable that is not set is an error
  outcome naming it, and no value is ever logged.
* ``timeout`` bounds the whole request, connection to last byte; past it the model hears that the
  lookup timed out. 4xx and 5xx answers are error outcomes with their status (a 4xx's body is shown
  to the model, which can often act on "order not found"; a 5xx's is not).
* The answer: JSON is passed on compactly re-encoded; plain text as it is (a service may answer in
  words); a body that says it is JSON and is not, or is neither text nor JSON, is an error outcome;
  either way ``content`` is cut to :data:`MAX_CONTENT_CHARS`. Bodies over :data:`MAX_RESPONSE_BYTES`
  are not read to the end.

Every run is logged at INFO (logger ``sipagent.tools``): the tool, the call, the arguments with
secret-looking keys and phone numbers masked, and the outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..voice.llm import ToolCall
from .numbers import mask
from .tools import RouteTools, WebhookTool, check_arguments, validate_arguments

__all__ = [
    "MAX_CONTENT_CHARS",
    "MAX_RESPONSE_BYTES",
    "ToolOutcome",
    "WebhookRunner",
    "masked_arguments",
    "missing_environment",
]

log = logging.getLogger("sipagent.tools")

#: Longest ``content`` handed back to the model (characters): a tool's answer shares a small
#: model's context with the whole call.
MAX_CONTENT_CHARS = 2000
#: Largest body read (bytes); a longer one is an error outcome, not a memory spike on the media loop.
MAX_RESPONSE_BYTES = 256 * 1024
#: How much of a 4xx body the model sees beside the status.
_MAX_REFUSAL_CHARS = 300
#: Connections kept to all webhook hosts together: tools are called a few times a turn, and a slow
#: service must not open a socket per waiting call.
MAX_CONNECTIONS = 20
#: Keys whose values are never logged (substring match, case-insensitive).
_SECRET_KEY = re.compile(r"token|passw|secret|key|authori[sz]ation|credential", re.IGNORECASE)
#: A value that reads as a phone number (7-15 digits with separators) or a URI that may carry one.
_PHONE_LIKE = re.compile(r"\+?[0-9][0-9 .\-()/]{5,24}[0-9]")
_URI_LIKE = re.compile(r"(sips?|tel):", re.IGNORECASE)
#: Longest argument value logged (characters).
_MAX_LOGGED_CHARS = 100
#: What a header value may hold (visible ASCII, spaces and tabs): anything else could split the
#: request's headers, and httpx's error for it would quote the secret.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")


@dataclass(frozen=True)
class ToolOutcome:
    """What one webhook call came to. ``content`` is what the model reads next (a tool turn), in
    every case; ``error`` says what went wrong, for logs and the call's record (None when ok)."""

    ok: bool
    content: str
    #: The HTTP status, when an answer came.
    status: int | None = None
    duration_ms: float = 0.0
    error: str | None = None


class WebhookRunner:
    """Runs webhook tools over one shared HTTP client; :meth:`aclose` at shutdown."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        user_agent: str = "sipagent/0.1",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``environ``: where header values are read (default: the live ``os.environ``);
        ``transport``: for tests."""
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        _hide_httpx_queries()
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            # A redirect could carry the headers' secrets somewhere the configuration never named.
            follow_redirects=False,
            headers={"User-Agent": user_agent},
            transport=transport,
        )

    async def run(self, tool: WebhookTool, arguments: Mapping[str, Any], *, call_id: str) -> ToolOutcome:
        """Call ``tool`` with ``arguments`` for call ``call_id``; never raises (but for cancellation)."""
        started = time.perf_counter()
        outcome = await self._run(tool, arguments, call_id, started)
        _log_outcome(tool, arguments, call_id, outcome)
        return outcome

    async def run_call(self, tools: RouteTools, call: ToolCall, *, call_id: str) -> ToolOutcome:
        """A tool call the model made on a route (the conversation's ``RunTool``), end to end: the
        route's webhook of that name, its JSON arguments parsed and checked, then :meth:`run`. A
        name that is not one of the route's webhooks (a built-in included: the conversation
        carries those out) or arguments that do not fit are error outcomes; nothing is sent."""
        started = time.perf_counter()
        tool = tools.webhooks.get(call.name)
        if tool is None:
            names = ", ".join(tools.webhooks) or "none"
            content = f"There is no tool named {call.name!r} to run here. The tools that run are: {names}."
            outcome = ToolOutcome(
                False, _trim(content), None, _ms_since(started), f"unknown tool {call.name!r}"
            )
            log.info("tool %s (call %s): failed (%s)", call.name[:64], call_id, outcome.error)
            return outcome
        arguments = validate_arguments(tool.spec, call.arguments)
        if isinstance(arguments, str):
            outcome = ToolOutcome(
                False, _trim(arguments), None, _ms_since(started), "invalid arguments (not sent)"
            )
            _log_outcome(tool, _object_or_none(call.arguments), call_id, outcome)
            return outcome
        return await self.run(tool, arguments, call_id=call_id)

    async def _run(
        self, tool: WebhookTool, arguments: Mapping[str, Any], call_id: str, started: float
    ) -> ToolOutcome:
        def failed(content: str, error: str, status: int | None = None) -> ToolOutcome:
            return ToolOutcome(False, _trim(content), status, _ms_since(started), error)

        problem = check_arguments(tool.spec, arguments)
        if problem is not None:
            return failed(problem, "invalid arguments (not sent)")
        headers = {"X-Sipagent-Call-Id": call_id, "X-Sipagent-Tool": tool.name}
        for header, variable in tool.headers:
            value = self._environ.get(variable)
            if value is None:
                return failed(
                    f"{tool.name} is not set up correctly on this server, so it cannot be used now.",
                    f"environment variable {variable} (header {header}) is not set",
                )
            if not _HEADER_VALUE.fullmatch(value):
                return failed(
                    f"{tool.name} is not set up correctly on this server, so it cannot be used now.",
                    f"environment variable {variable} (header {header}) holds characters a header cannot",
                )
            headers[header] = value.strip()
        request: dict[str, Any] = {"headers": headers, "timeout": tool.timeout_s}
        if tool.method == "GET":
            request["params"] = _query(arguments)
        else:
            request["json"] = dict(arguments)
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole request,
            # so a service that trickles its answer still ends at the configured time.
            async with asyncio.timeout(tool.timeout_s):
                async with self._client.stream(tool.method, tool.url, **request) as response:
                    body = await _read(response)
        except (TimeoutError, httpx.TimeoutException):
            return failed(
                f"The lookup timed out: {tool.name} did not answer within {tool.timeout_s:g} s.",
                f"timed out after {tool.timeout_s:g} s",
            )
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            return failed(f"The {tool.name} service could not be reached.", f"{type(exc).__name__}: {exc}")
        except (httpx.HTTPError, OSError) as exc:
            # Not str(exc): httpx quotes what it refused to send, and that could be a header's value.
            return failed(f"The {tool.name} service could not be reached.", type(exc).__name__)
        except Exception as exc:  # never into the call: a tool is worth less than the conversation
            log.exception("tool %s (call %s): unexpected failure", tool.name, call_id)
            return failed(f"{tool.name} failed.", type(exc).__name__)
        if body is None:
            return failed(
                f"{tool.name} sent an answer too large to read.", f"response over {MAX_RESPONSE_BYTES} bytes"
            )
        return _answer(tool, response, body, started)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()


class _HideQueries(logging.Filter):
    """Drops the query from httpx's own "HTTP Request: GET <url>" line (INFO): a GET tool's query
    is its arguments, which are logged only masked (phone numbers, tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], httpx.URL) and args[1].query:
            record.args = (args[0], args[1].copy_with(query=None), *args[2:])
        return True


def _hide_httpx_queries() -> None:
    # httpx logs every request's full URL on the logger "httpx"; the filter is added once, and
    # changes nothing for URLs without a query (the control API client's, the LLM client's).
    logger = logging.getLogger("httpx")
    if not any(isinstance(existing, _HideQueries) for existing in logger.filters):
        logger.addFilter(_HideQueries())


def missing_environment(tools: Iterable[WebhookTool], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per header variable that is not set (for a start-up warning: each call of such a
    tool would fail until it is)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    return [
        f"tool {tool.name}: header {header} reads environment variable {variable}, which is not set"
        for tool in tools
        for header, variable in tool.headers
        if variable not in env
    ]


async def _read(response: httpx.Response) -> bytes | None:
    """The body, or None past MAX_RESPONSE_BYTES (what is left of it is not read)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(tool: WebhookTool, response: httpx.Response, body: bytes, started: float) -> ToolOutcome:
    """The outcome of an answer that arrived."""
    status = response.status_code
    elapsed = _ms_since(started)
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if status >= 500:
        content = f"The {tool.name} service failed (HTTP {status})."
        return ToolOutcome(False, content, status, elapsed, f"HTTP {status}")
    if status >= 400:
        detail = " ".join(text.split())[:_MAX_REFUSAL_CHARS]
        said = f": {detail}" if detail else "."
        content = f"The {tool.name} service refused the request (HTTP {status}){said}"
        return ToolOutcome(False, _trim(content), status, elapsed, f"HTTP {status}")
    if status >= 300:
        content = f"The {tool.name} service answered with a redirect (HTTP {status}), which is not followed."
        return ToolOutcome(False, content, status, elapsed, f"HTTP {status} (redirects are not followed)")
    if not body.strip():
        return ToolOutcome(True, f"Done: {tool.name} succeeded with no content.", status, elapsed)
    kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    says_json = kind == "application/json" or kind.endswith("+json")
    if says_json or not kind:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            if says_json:
                content = f"{tool.name} sent an answer that could not be read."
                return ToolOutcome(False, content, status, elapsed, "invalid JSON in the response")
        else:
            compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            return ToolOutcome(True, _trim(compact), status, elapsed)
    if kind and not (kind.startswith("text/") or kind.endswith(("/xml", "+xml"))):
        content = f"{tool.name} sent an answer that is not text ({kind})."
        return ToolOutcome(False, content, status, elapsed, f"unsupported content type {kind}")
    return ToolOutcome(True, _trim(text.strip()), status, elapsed)


def _query(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Arguments as query parameters: scalars as JSON writes them (true, 3.5), strings as they are,
    an array as the parameter repeated, an object (or an array inside one) as JSON text."""

    def scalar(value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    params: list[tuple[str, str]] = []
    for key, value in arguments.items():
        if isinstance(value, list) and not any(isinstance(item, (list, dict)) for item in value):
            params.extend((key, scalar(item)) for item in value)
        else:
            params.append((key, scalar(value)))
    return params


def _trim(text: str) -> str:
    return text if len(text) <= MAX_CONTENT_CHARS else text[: MAX_CONTENT_CHARS - 1] + "…"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def masked_arguments(value: Any, key: str = "") -> Any:
    """``value`` as it may be logged: values under secret-looking keys (token, password, secret,
    key, authorization, credential) replaced by ``***``, phone numbers and SIP/tel URIs masked
    (:func:`sipagent.product.numbers.mask`), long strings cut."""
    if key and _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, Mapping):
        return {str(k): masked_arguments(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked_arguments(item, key) for item in value]
    if isinstance(value, str):
        if _PHONE_LIKE.fullmatch(value.strip()) or _URI_LIKE.match(value.strip()):
            return mask(value)
        return value if len(value) <= _MAX_LOGGED_CHARS else value[:_MAX_LOGGED_CHARS] + "…"
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 7:
        return mask(str(value))  # a number written without quotes is still a number
    return value


def _object_or_none(text: str) -> dict[str, Any] | None:
    """The arguments as a JSON object, to log them masked; None when they are not one."""
    try:
        value = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _log_outcome(
    tool: WebhookTool, arguments: Mapping[str, Any] | None, call_id: str, outcome: ToolOutcome
) -> None:
    """``arguments`` None: they did not parse as a JSON object (their text is not logged: it may hold
    anything, unmasked)."""
    try:
        shown = (
            "(not a JSON object)"
            if arguments is None
            else json.dumps(masked_arguments(arguments), ensure_ascii=False)
        )
    except (TypeError, ValueError):
        shown = "(arguments that are not JSON)"
    # The URL without its query: a GET's query is the arguments, logged masked above.
    parts = urlsplit(tool.url)
    where = f"{tool.method} {parts.scheme}://{parts.netloc}{parts.path}"
    if outcome.ok:
        result = f"ok (HTTP {outcome.status}, {len(outcome.content)} chars)"
    else:
        result = f"failed ({outcome.error})"
    log.info(
        "tool %s (call %s) %s args=%s: %s in %.0f ms",
        tool.name, call_id, where, shown, result, outcome.duration_ms,
    )  # fmt: skip
