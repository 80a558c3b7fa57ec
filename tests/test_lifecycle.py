"""Lifecycle webhooks (sipagent/product/lifecycle.py) against a real HTTP receiver on loopback: signed,
in order, retried on 5xx and connection errors with back-off, never on 4xx, never blocking emit."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sipagent.config import ConfigError
from sipagent.errors import SipAgentError
from sipagent.product.control import CallInfo, Turn
from sipagent.product.lifecycle import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryResult,
    LifecycleWebhooks,
    call_payload,
    end_of_call_report,
    sign,
    verify_signature,
)

SECRET = "s3cret-lifecycle-key"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: answers the statuses in ``statuses`` in turn (then 200)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks?token=query-token"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class FakeSleep:
    """Records the back-off instead of waiting it."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _payload(call_id: str, n: int = 0) -> dict[str, object]:
    return {"call_id": call_id, "n": n}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now: connections are refused


async def test_three_events_arrive_in_order_signed(receiver: Receiver) -> None:
    results: list[DeliveryResult] = []
    hooks = LifecycleWebhooks(receiver.url, SECRET, sleep=FakeSleep(), on_result=results.append)
    for event in ("call.started", "call.answered", "call.ended"):
        hooks.emit(event, _payload("abc"))
    await hooks.aclose(deadline_s=10)

    assert [r.headers["x-sipagent-event"] for r in receiver.requests] == [
        "call.started",
        "call.answered",
        "call.ended",
    ]
    for request in receiver.requests:
        timestamp = request.headers[TIMESTAMP_HEADER.lower()]
        signature = request.headers[SIGNATURE_HEADER.lower()]
        assert signature.startswith("sha256=")
        assert verify_signature(SECRET, timestamp, request.body, signature)
        assert not verify_signature("another secret", timestamp, request.body, signature)
        assert not verify_signature(SECRET, timestamp, request.body + b" ", signature)
        body = json.loads(request.body)
        assert body["type"] == request.headers["x-sipagent-event"]
        assert body["id"] == request.headers["x-sipagent-delivery"]
        assert body["data"] == {"call_id": "abc", "n": 0}
        assert request.headers["content-type"] == "application/json"
    assert (hooks.delivered, hooks.failed, hooks.dropped) == (3, 0, 0)
    assert results == ["delivered"] * 3


async def test_a_receiver_that_is_down_does_not_block_emit(caplog: pytest.LogCaptureFixture) -> None:
    assert not inspect.iscoroutinefunction(LifecycleWebhooks.emit)
    sleep = FakeSleep()
    results: list[DeliveryResult] = []
    url = f"http://127.0.0.1:{_closed_port()}/hooks?token=query-token"
    hooks = LifecycleWebhooks(url, SECRET, sleep=sleep, on_result=results.append)

    caplog.set_level(logging.INFO, logger="sipagent.lifecycle")
    # emit is a plain function: it returns without the loop running anything (nothing was tried).
    hooks.emit("call.started", _payload("down"))
    assert (hooks.pending, hooks.delivered, hooks.failed, sleep.delays) == (1, 0, 0, [])

    await hooks.aclose(deadline_s=30)
    assert (hooks.delivered, hooks.failed, hooks.dropped) == (0, 1, 0)
    assert sleep.delays == [0.5, 1.0, 2.0, 4.0]  # five attempts, the back-off between them
    assert results == ["failed"]
    text = caplog.text
    assert "call.started" in text and "down" in text and "5 attempts" in text
    assert SECRET not in text and "query-token" not in text


async def test_500_is_retried_then_delivered(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    sleep = FakeSleep()
    hooks = LifecycleWebhooks(receiver.url, SECRET, sleep=sleep, backoff=(0.25, 0.75))
    hooks.emit("call.ended", _payload("retry"))
    await hooks.aclose(deadline_s=10)
    assert (hooks.delivered, hooks.failed) == (1, 0)
    assert len(receiver.requests) == 3
    assert len({r.headers["x-sipagent-delivery"] for r in receiver.requests}) == 1  # one event, retried
    assert sleep.delays == [0.25, 0.75]


async def test_429_is_retried_and_the_last_backoff_repeats(receiver: Receiver) -> None:
    receiver.statuses = [429, 429, 429]
    sleep = FakeSleep()
    hooks = LifecycleWebhooks(receiver.url, SECRET, sleep=sleep, backoff=(1.0, 2.0))
    hooks.emit("call.ended", _payload("busy"))
    await hooks.aclose(deadline_s=10)
    assert hooks.delivered == 1 and sleep.delays == [1.0, 2.0, 2.0]


async def test_400_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses = [400]
    sleep = FakeSleep()
    results: list[DeliveryResult] = []
    hooks = LifecycleWebhooks(receiver.url, SECRET, sleep=sleep, on_result=results.append)
    with caplog.at_level(logging.WARNING, logger="sipagent.lifecycle"):
        hooks.emit("call.started", _payload("refused"))
        hooks.emit("call.answered", _payload("refused"))
        await hooks.aclose(deadline_s=10)
    assert len(receiver.requests) == 2 and sleep.delays == []
    assert results == ["failed", "delivered"]
    assert "HTTP 400" in caplog.text and SECRET not in caplog.text and "query-token" not in caplog.text


async def test_overflow_drops_the_oldest_and_counts_it(receiver: Receiver) -> None:
    results: list[DeliveryResult] = []
    hooks = LifecycleWebhooks(receiver.url, SECRET, queue_size=2, sleep=FakeSleep(), on_result=results.append)
    for n in range(5):
        hooks.emit("call.started", _payload(f"call-{n}", n))
    assert (hooks.dropped, hooks.pending) == (3, 2)
    await hooks.aclose(deadline_s=10)
    assert [json.loads(r.body)["data"]["n"] for r in receiver.requests] == [3, 4]
    assert results.count("dropped") == 3 and results.count("delivered") == 2


async def test_emit_after_close_is_dropped(receiver: Receiver) -> None:
    hooks = LifecycleWebhooks(receiver.url, SECRET)
    await hooks.aclose()
    hooks.emit("call.started", _payload("late"))
    assert hooks.dropped == 1 and receiver.requests == []


async def test_close_deadline_drops_what_is_left() -> None:
    async def slow_sleep(delay: float) -> None:
        await asyncio.sleep(3600)

    url = f"http://127.0.0.1:{_closed_port()}/"
    hooks = LifecycleWebhooks(url, SECRET, sleep=slow_sleep)
    hooks.emit("call.started", _payload("a"))
    hooks.emit("call.ended", _payload("a"))
    await hooks.aclose(deadline_s=0.2)
    assert (hooks.delivered, hooks.failed, hooks.dropped) == (0, 0, 2)


def test_signature_helpers() -> None:
    body = b'{"id":"x"}'
    signature = sign(SECRET, 1_700_000_000, body)
    assert verify_signature(SECRET, "1700000000", body, signature, now=1_700_000_100)
    assert not verify_signature(SECRET, "1700000000", body, signature, now=1_700_001_000)  # replayed
    assert verify_signature(SECRET, 1_700_000_000, body, signature, now=1_700_001_000, tolerance_s=1e6)
    assert not verify_signature(SECRET, "yesterday", body, signature)
    assert not verify_signature(SECRET, "1700000000", body, "sha256=00", now=1_700_000_000)
    assert sign(SECRET.encode(), 1_700_000_000, body) == signature


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"webhooks\.url") as info:
        LifecycleWebhooks("ftp://example.com/x", SECRET)
    assert isinstance(info.value, SipAgentError)
    with pytest.raises(ConfigError, match="secret_env"):
        LifecycleWebhooks("https://example.com/x", "")
    with pytest.raises(ConfigError, match="max_attempts"):
        LifecycleWebhooks("https://example.com/x", SECRET, max_attempts=0)


def test_end_of_call_report() -> None:
    latencies = [400.0, 900.0, None, 500.0, 600.0, 700.0]
    info = CallInfo(
        id="call-1",
        direction="inbound",
        state="ended",
        from_="+*******4567",
        to="+*******0000",
        route="support",
        mode="conversation",
        started_at=100.0,
        answered_at=101.0,
        ended_at=161.5,
        end_reason="caller hung up",
        sip_status=200,
        outcome="answered",
        turns=tuple(
            Turn(caller=f"q{n}", agent=f"a{n}", interrupted=n == 2, latency_ms=ms)
            for n, ms in enumerate(latencies)
        ),
    )
    tools = [{"name": "lookup_order", "ok": True, "duration_ms": 120.0}]
    report = end_of_call_report(info, tool_calls=tools, recording_path="/var/rec/call-1.wav", amd=None)
    assert (
        report["call_id"] == "call-1" and report["from"] == "+*******4567" and report["to"] == "+*******0000"
    )
    assert report["duration"] == 60.5 and report["outcome"] == "answered"
    assert report["end_reason"] == "caller hung up" and report["sip_status"] == 200
    assert [t["caller"] for t in report["transcript"]] == [f"q{n}" for n in range(6)]
    assert report["transcript"][2]["interrupted"] is True and report["transcript"][0]["turn"] == 1
    assert report["tool_calls"] == tools
    assert report["latency"] == {"turns": 5, "p50_ms": 600.0, "p90_ms": 900.0, "max_ms": 900.0}
    assert report["recording"] == "/var/rec/call-1.wav"
    json.dumps(report)  # it is what the body carries
    assert call_payload(info).items() <= report.items()

    unanswered = CallInfo("c2", "outbound", "ended", "a", "b", None, "notify", 1.0, outcome="busy")
    empty = end_of_call_report(unanswered)
    assert empty["duration"] is None and empty["latency"] == {
        "turns": 0,
        "p50_ms": None,
        "p90_ms": None,
        "max_ms": None,
    }
