"""Lifecycle webhooks: ``call.started``, ``call.answered`` and ``call.ended`` (with an end-of-call
report) POSTed to the one URL the operator configured (``[webhooks] url``), signed, retried, and never
in a call's way.

:meth:`LifecycleWebhooks.emit` is a plain function (it cannot await, so it cannot block the media
loop): it puts the event on a bounded queue and returns. One background task delivers the queue in
order, one event at a time, so a receiver sees a call's events in the order they happened. A queue
that fills (a receiver down for long) loses its *oldest* event, which is counted as ``dropped``.

**Delivery.** A JSON body ``{"id", "type", "created_at", "data"}`` (``id`` is the same on every
retry of an event: a receiver dedupes on it), with the headers:

* ``X-Sipagent-Event``: the event type; ``X-Sipagent-Delivery``: the event id;
* ``X-Sipagent-Timestamp``: Unix seconds when this attempt was signed;
* ``X-Sipagent-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed by the shared secret, of
  ``f"{timestamp}.".encode() + body`` (the exact bytes sent).

A 2xx answer delivers it. Connection errors, timeouts, 408, 429 and 5xx are retried after the
back-off (``backoff[i]`` seconds before attempt ``i + 2``; the last value repeats) up to
``max_attempts`` in all; any other answer (3xx: redirects are not followed; 4xx: the receiver refused
this body, and will again) fails at once. Each final result is counted (``delivered``, ``failed``,
``dropped``) and passed to the ``on_result`` hook (:meth:`Metrics.webhook_delivery
<sipagent.product.metrics.Metrics.webhook_delivery>`); failures are logged at WARNING on the logger
``sipagent.lifecycle`` with the event, the call and the reason, never the secret nor the URL's query.

**Verifying, at the receiver** (what :func:`verify_signature` does): read the raw body *before*
parsing it; recompute ``hmac_sha256(secret, timestamp + "." + body)``; compare it to the header in
constant time (``hmac.compare_digest``); refuse a timestamp more than a few minutes from your clock
(a replayed request); dedupe on ``X-Sipagent-Delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from ..config import ConfigError
from .control import CallInfo

__all__ = [
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryResult",
    "LifecycleWebhooks",
    "call_payload",
    "end_of_call_report",
    "sign",
    "verify_signature",
]

log = logging.getLogger("sipagent.lifecycle")

EventType = Literal["call.started", "call.answered", "call.ended"]
EVENT_TYPES: tuple[EventType, ...] = ("call.started", "call.answered", "call.ended")
DeliveryResult = Literal["delivered", "failed", "dropped"]

TIMESTAMP_HEADER = "X-Sipagent-Timestamp"
SIGNATURE_HEADER = "X-Sipagent-Signature"
#: Seconds between attempts (the last repeats): 0.5 + 1 + 2 + 4 s before the fifth attempt.
DEFAULT_BACKOFF = (0.5, 1.0, 2.0, 4.0)
#: Events waiting for delivery before the oldest is dropped (a few hundred calls' worth).
DEFAULT_QUEUE_SIZE = 1000
#: How far a receiver should let a timestamp be from its clock (seconds).
DEFAULT_TOLERANCE_S = 300.0
#: Answers that mean "try again later".
_RETRY_STATUSES = frozenset({408, 429})


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Sipagent-Signature`` value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """A receiver's check: ``signature`` (the header) is ours for these raw ``body`` bytes and
    ``timestamp`` (the header), and the timestamp is within ``tolerance_s`` of ``now`` (default: this
    machine's clock). Constant-time; False for anything malformed, never an exception."""
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature.strip())


@dataclass(frozen=True)
class _Event:
    id: str
    type: str
    call_id: str | None
    body: bytes


class LifecycleWebhooks:
    """Delivers lifecycle events to one URL (see the module docstring). Create it on the server's
    loop or before it; :meth:`emit` from the loop; :meth:`aclose` at shutdown."""

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        max_attempts: int = 5,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        timeout: float = 5.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_result: Callable[[DeliveryResult], None] | None = None,
        user_agent: str = "sipagent/0.1",
    ) -> None:
        """``secret``: the shared HMAC key (read by the caller from ``[webhooks] secret_env``);
        ``client``: an ``httpx.AsyncClient`` to use (not closed here); ``clock``, ``sleep``: for tests;
        ``on_result``: called with each final result (a metric)."""
        problems = []
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            problems.append("webhooks.url must be an http:// or https:// URL")
        if not secret:
            problems.append("webhooks.secret_env must name a variable holding a secret (it is empty)")
        if max_attempts < 1:
            problems.append("webhooks.max_attempts must be at least 1")
        if queue_size < 1:
            problems.append("webhooks.queue_size must be at least 1")
        if any(delay < 0 for delay in backoff):
            problems.append("webhooks.backoff must not be negative")
        if problems:
            raise ConfigError("; ".join(problems))
        self.url = url
        self._secret = _secret_bytes(secret)
        self._max_attempts = max_attempts
        self._backoff = tuple(backoff) or (0.0,)
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._on_result = on_result
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": user_agent}
        )
        self._queue: asyncio.Queue[_Event] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        parts = urlsplit(url)
        #: The URL as logged: no query, no user info (either may hold a token).
        self._where = (
            f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
        )

    # -- the call side ---------------------------------------------------------------------------
    def emit(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """Queue an event (``call.started``, ``call.answered``, ``call.ended``) with its JSON
        ``payload`` and return at once; ``payload["call_id"]``, when there, is logged with failures.
        Never raises into the call: an event that cannot be encoded or arrives after :meth:`aclose`
        is dropped (counted and logged)."""
        call_id = payload.get("call_id")
        call = call_id if isinstance(call_id, str) else None
        if self._closed:
            self._count("dropped")
            log.warning("lifecycle webhook %s (call %s) dropped: closed", event_type, call)
            return
        event_id = uuid.uuid4().hex
        try:
            body = json.dumps(
                {
                    "id": event_id,
                    "type": event_type,
                    "created_at": round(self._clock(), 3),
                    "data": dict(payload),
                },
                ensure_ascii=False,
                separators=(",", ":"),
                default=str,
            ).encode()
        except (TypeError, ValueError) as exc:
            self._count("dropped")
            log.warning("lifecycle webhook %s (call %s) dropped: %s", event_type, call, type(exc).__name__)
            return
        if self._queue.full():
            oldest = self._queue.get_nowait()
            self._queue.task_done()
            self._count("dropped")
            log.warning("lifecycle webhook %s (call %s) dropped: queue full", oldest.type, oldest.call_id)
        self._queue.put_nowait(_Event(event_id, event_type, call, body))
        self._ensure_worker()

    @property
    def pending(self) -> int:
        """Events waiting (not counting one being delivered)."""
        return self._queue.qsize()

    async def aclose(self, deadline_s: float = 5.0) -> None:
        """Deliver what is queued for up to ``deadline_s`` seconds, then stop; events not delivered
        by then are counted as dropped. Closes the HTTP client if this object made it."""
        self._closed = True
        if self._worker is None and not self._queue.empty():
            self._ensure_worker()
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), deadline_s)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            left = self._queue.get_nowait()
            self._queue.task_done()
            self._count("dropped")
            log.warning("lifecycle webhook %s (call %s) dropped: shutting down", left.type, left.call_id)
        if self._own_client:
            await self._client.aclose()

    # -- inside ----------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is not None and not self._worker.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the queue waits for the first emit (or aclose) on one
        self._worker = loop.create_task(self._run(), name="lifecycle-webhooks")

    def _count(self, result: DeliveryResult) -> None:
        setattr(self, result, getattr(self, result) + 1)
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:  # a metric hook must not stop deliveries
                log.exception("lifecycle webhook result hook failed")

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                error = await self._deliver(event)
            except asyncio.CancelledError:
                self._count("dropped")  # cut off mid-delivery by aclose's deadline
                self._queue.task_done()
                raise
            except Exception as exc:  # never let one event stop the rest
                error = f"unexpected {type(exc).__name__}"
                log.exception("lifecycle webhook %s: unexpected failure", event.type)
            if error is None:
                self._count("delivered")
            else:
                self._count("failed")
                log.warning(
                    "lifecycle webhook %s (call %s) to %s failed: %s",
                    event.type, event.call_id, self._where, error,
                )  # fmt: skip
            self._queue.task_done()

    async def _deliver(self, event: _Event) -> str | None:
        """None when delivered, else why not (after every attempt allowed)."""
        error: str | None = "not attempted"
        for attempt in range(self._max_attempts):
            if attempt:
                await self._sleep(self._backoff[min(attempt - 1, len(self._backoff) - 1)])
            error, retry = await self._attempt(event)
            if error is None:
                return None
            if not retry:
                return error
            log.info(
                "lifecycle webhook %s (call %s) attempt %d/%d: %s",
                event.type, event.call_id, attempt + 1, self._max_attempts, error,
            )  # fmt: skip
        return f"{error} after {self._max_attempts} attempts"

    async def _attempt(self, event: _Event) -> tuple[str | None, bool]:
        """(None, _) when delivered; else (why, whether to try again)."""
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "X-Sipagent-Event": event.type,
            "X-Sipagent-Delivery": event.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, event.body),
        }
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(self.url, content=event.body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return f"timed out after {self._timeout:g} s", True
        except (httpx.HTTPError, OSError) as exc:
            # Not str(exc): httpx may quote the request, and the URL's query can hold a token.
            return type(exc).__name__, True
        status = response.status_code
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status >= 500 or status in _RETRY_STATUSES


def call_payload(info: CallInfo) -> dict[str, Any]:
    """The ``data`` of ``call.started`` and ``call.answered``: who, which route, when (numbers
    masked as in the call book)."""
    return {
        "call_id": info.id,
        "direction": info.direction,
        "from": info.from_,
        "to": info.to,
        "route": info.route,
        "mode": info.mode,
        "started_at": info.started_at,
        "answered_at": info.answered_at,
    }


def _percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (a value that occurred), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def end_of_call_report(
    info: CallInfo,
    *,
    tool_calls: Sequence[Mapping[str, Any]] = (),
    recording_path: str | None = None,
    amd: str | None = None,
) -> dict[str, Any]:
    """The ``data`` of ``call.ended``: :func:`call_payload` plus the end (time, duration answered,
    outcome, reason, SIP status), the transcript (one entry per turn), ``tool_calls`` as given (the
    server's record of each: name, ok, duration…), the turn latency summary (nearest-rank p50/p90
    and max of the measured turns, ms), the recording's path and the AMD result, if any."""
    latencies = [t.latency_ms for t in info.turns if t.latency_ms is not None]
    p50, p90 = _percentile(latencies, 50), _percentile(latencies, 90)
    return {
        **call_payload(info),
        "ended_at": info.ended_at,
        "duration": None if info.duration is None else round(info.duration, 3),
        "outcome": info.outcome,
        "end_reason": info.end_reason,
        "sip_status": info.sip_status,
        "transcript": [
            {
                "turn": n,
                "caller": t.caller,
                "agent": t.agent,
                "interrupted": t.interrupted,
                "latency_ms": t.latency_ms,
            }
            for n, t in enumerate(info.turns, 1)
        ],
        "tool_calls": [dict(call) for call in tool_calls],
        "latency": {
            "turns": len(latencies),
            "p50_ms": p50,
            "p90_ms": p90,
            "max_ms": max(latencies) if latencies else None,
        },
        "recording": recording_path,
        "amd": amd,
    }
