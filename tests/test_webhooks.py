"""Webhook tools against a real HTTP server: a Starlette app on uvicorn, listening on a free loopback
port inside the test's own event loop. What reaches the server (body, query, headers), what never
does (invalid arguments, a tool whose credential is missing), what the model is told for every kind
of answer or failure, and what the log says (no header value, masked arguments)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from sipagent.product.tools import END_CALL, KeyAction, RouteTools, WebhookTool, end_call_spec
from sipagent.product.webhooks import (
    MAX_CONTENT_CHARS,
    MAX_RESPONSE_BYTES,
    WebhookRunner,
    masked_arguments,
    missing_environment,
)
from sipagent.voice.llm import ToolCall

SECRET = "Bearer sk_live_4f9a1c77e2"
ENV = {"ORDERS_AUTH": SECRET, "ORDERS_TENANT": "acme"}
ORDER_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "pattern": "^[A-Z0-9]{6}$"},
            "phone": {"type": "string"},
            "api_token": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "urgent": {"type": "boolean"},
            "filter": {"type": "object"},
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }
)


@dataclass
class Seen:
    """What the server received, one entry per request."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _app(seen: Seen) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        body = await request.body()
        entry = {
            "method": request.method,
            "path": request.url.path,
            "query": list(request.query_params.multi_items()),
            "headers": dict(request.headers),
            "json": json.loads(body) if body else None,
        }
        seen.requests.append(entry)
        return entry

    async def echo(request: Request) -> Response:
        entry = await record(request)
        return JSONResponse({"status": "shipped", "eta": "Tuesday", "got": entry["json"] or entry["query"]})

    async def slow(request: Request) -> Response:
        await record(request)
        # Held until the test is over (not a fixed sleep): only the client's timeout can end it first.
        await seen.release.wait()
        return JSONResponse({"late": True})

    async def fail(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("Traceback (most recent call last): database password=hunter2", 500)

    async def missing(request: Request) -> Response:
        await record(request)
        return JSONResponse({"error": "order not found"}, 404)

    async def bad_json(request: Request) -> Response:
        await record(request)
        return Response(b'{"status": "shipp', media_type="application/json")

    async def text(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("Your order ships on Tuesday.")

    async def untyped(request: Request) -> Response:
        await record(request)
        return Response(b'{"status": "shipped"}')  # JSON with no Content-Type

    async def empty(request: Request) -> Response:
        await record(request)
        return Response(status_code=204)

    async def big(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("x" * (MAX_RESPONSE_BYTES + 1))

    async def long_text(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("y" * (MAX_CONTENT_CHARS * 2))

    async def image(request: Request) -> Response:
        await record(request)
        return Response(b"\x89PNG\r\n", media_type="image/png")

    async def redirect(request: Request) -> Response:
        await record(request)
        return RedirectResponse("/echo", 302)

    routes = {
        "/echo": echo,
        "/slow": slow,
        "/fail": fail,
        "/missing": missing,
        "/bad-json": bad_json,
        "/text": text,
        "/untyped": untyped,
        "/empty": empty,
        "/big": big,
        "/long": long_text,
        "/image": image,
        "/redirect": redirect,
    }
    return Starlette(
        routes=[Route(path, handler, methods=["GET", "POST"]) for path, handler in routes.items()]
    )


@dataclass
class Service:
    """The running server and a runner whose environment holds :data:`ENV`."""

    url: str
    seen: Seen
    runner: WebhookRunner

    def tool(self, path: str = "/echo", **fields: Any) -> WebhookTool:
        values: dict[str, Any] = {
            "name": "lookup_order",
            "description": "Look up an order.",
            "parameters": ORDER_SCHEMA,
            "url": self.url + path,
            "headers": (("Authorization", "ORDERS_AUTH"), ("X-Tenant", "ORDERS_TENANT")),
            "timeout_s": 5.0,
            **fields,
        }
        return WebhookTool(**values)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    seen = Seen()
    config = uvicorn.Config(
        _app(seen), log_level="warning", log_config=None, lifespan="off", http="h11", access_log=False,
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    # startup/main_loop/shutdown rather than serve(), which would take over the process's signals.
    await server.startup(sockets=[sock])
    main = asyncio.create_task(server.main_loop())
    runner = WebhookRunner(environ=ENV)
    try:
        yield Service(f"http://127.0.0.1:{sock.getsockname()[1]}", seen, runner)
    finally:
        await runner.aclose()
        seen.release.set()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await server.shutdown(sockets=None)
        sock.close()


async def test_post_sends_the_arguments_as_json_with_the_headers(service: Service) -> None:
    arguments = {"order_id": "AB12CD", "urgent": True}
    outcome = await service.runner.run(service.tool(), arguments, call_id="call-1")
    assert outcome.ok and outcome.status == 200 and outcome.error is None
    assert json.loads(outcome.content) == {"status": "shipped", "eta": "Tuesday", "got": arguments}
    assert " " not in outcome.content  # compact: the model's context is small
    assert outcome.duration_ms >= 0
    [request] = service.seen.requests
    assert (request["method"], request["json"]) == ("POST", arguments)
    headers = request["headers"]
    assert headers["authorization"] == SECRET and headers["x-tenant"] == "acme"
    assert headers["x-sipagent-call-id"] == "call-1" and headers["x-sipagent-tool"] == "lookup_order"
    assert headers["content-type"] == "application/json"


async def test_get_sends_the_arguments_as_query_parameters(service: Service) -> None:
    arguments = {"order_id": "AB12CD", "urgent": False, "tags": ["a", "b"], "filter": {"since": 3}}
    outcome = await service.runner.run(service.tool(method="GET"), arguments, call_id="call-2")
    assert outcome.ok, outcome
    [request] = service.seen.requests
    assert request["method"] == "GET" and request["json"] is None
    assert request["query"] == [
        ("order_id", "AB12CD"),
        ("urgent", "false"),
        ("tags", "a"),
        ("tags", "b"),
        ("filter", '{"since":3}'),
    ]
    assert request["headers"]["authorization"] == SECRET


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"order_id": "short"}, "order_id: 'short' does not match"),
        ({}, "'order_id' is a required property"),
        ({"order_id": "AB12CD", "admin": True}, "Additional properties are not allowed"),
        ({"order_id": 123456}, "123456 is not of type 'string'"),
    ],
)
async def test_invalid_arguments_never_reach_the_service(
    service: Service, arguments: dict[str, Any], words: str
) -> None:
    outcome = await service.runner.run(service.tool(), arguments, call_id="call-3")
    assert not outcome.ok and outcome.status is None and outcome.error == "invalid arguments (not sent)"
    assert words in outcome.content and "lookup_order" in outcome.content
    assert service.seen.requests == []


async def test_header_values_are_sent_but_never_logged(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipagent.tools")
    arguments = {"order_id": "AB12CD", "phone": "+15551234567", "api_token": "tok-998877"}
    for path in ("/echo", "/fail", "/missing"):
        await service.runner.run(service.tool(path), arguments, call_id="call-4")
    assert [r["headers"]["authorization"] for r in service.seen.requests] == [SECRET] * 3
    records = [r for r in caplog.records if r.name == "sipagent.tools"]
    assert len(records) == 3 and all(r.levelno == logging.INFO for r in records)
    text = caplog.text
    assert "sk_live" not in text and "acme" not in text  # no header value, whatever the outcome
    assert "tok-998877" not in text and '"api_token": "***"' in text  # a secret-looking argument
    assert "+15551234567" not in text and "+*******4567" in text  # a phone number, masked
    assert "AB12CD" in text  # the rest as it was
    first = records[0].getMessage()
    assert "lookup_order" in first and "call-4" in first and "ok (HTTP 200" in first
    assert "failed (HTTP 500)" in records[1].getMessage() and "failed (HTTP 404)" in records[2].getMessage()


async def test_a_get_query_is_not_logged_by_httpx_either(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # every logger: httpx logs each request's URL at INFO
    arguments = {"order_id": "AB12CD", "phone": "+15551234567", "api_token": "tok-998877"}
    outcome = await service.runner.run(service.tool(method="GET"), arguments, call_id="call-7")
    assert outcome.ok and ("phone", "+15551234567") in service.seen.requests[0]["query"]
    assert "HTTP Request: GET" in caplog.text  # httpx still says what it did, without the query
    assert "15551234567" not in caplog.text and "tok-998877" not in caplog.text


async def test_a_missing_environment_variable_is_an_error_outcome(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipagent.tools")
    tool = service.tool(headers=(("Authorization", "ORDERS_AUTH"), ("X-Key", "NOT_SET_ANYWHERE")))
    outcome = await service.runner.run(tool, {"order_id": "AB12CD"}, call_id="call-5")
    assert not outcome.ok and outcome.status is None
    assert outcome.error == "environment variable NOT_SET_ANYWHERE (header X-Key) is not set"
    assert "NOT_SET_ANYWHERE" not in outcome.content  # the model need not know the server's setup
    assert service.seen.requests == []
    assert "NOT_SET_ANYWHERE" in caplog.text and "sk_live" not in caplog.text
    assert missing_environment([tool], ENV) == [
        "tool lookup_order: header X-Key reads environment variable NOT_SET_ANYWHERE, which is not set"
    ]


async def test_a_header_value_with_a_line_break_is_never_sent(service: Service) -> None:
    runner = WebhookRunner(environ={**ENV, "ORDERS_AUTH": SECRET + "\r\nX-Evil: 1"})
    try:
        outcome = await runner.run(service.tool(), {"order_id": "AB12CD"}, call_id="call-6")
    finally:
        await runner.aclose()
    assert not outcome.ok and "holds characters a header cannot" in (outcome.error or "")
    assert "sk_live" not in (outcome.error or "") + outcome.content
    assert service.seen.requests == []


async def test_a_service_slower_than_the_timeout_times_out(service: Service) -> None:
    outcome = await service.runner.run(
        service.tool("/slow", timeout_s=0.3), {"order_id": "AB12CD"}, call_id="c"
    )
    assert not outcome.ok and outcome.status is None
    assert "timed out" in outcome.content and outcome.error == "timed out after 0.3 s"
    assert len(service.seen.requests) == 1  # it was sent; the answer never came in time


async def test_a_server_error_is_an_error_outcome_with_its_status(service: Service) -> None:
    outcome = await service.runner.run(service.tool("/fail"), {"order_id": "AB12CD"}, call_id="c")
    assert (outcome.ok, outcome.status, outcome.error) == (False, 500, "HTTP 500")
    assert "HTTP 500" in outcome.content and "hunter2" not in outcome.content  # no stack trace to the model


async def test_a_refusal_shows_the_model_its_status_and_reason(service: Service) -> None:
    outcome = await service.runner.run(service.tool("/missing"), {"order_id": "AB12CD"}, call_id="c")
    assert (outcome.ok, outcome.status, outcome.error) == (False, 404, "HTTP 404")
    assert "HTTP 404" in outcome.content and "order not found" in outcome.content


async def test_an_answer_that_claims_json_and_is_not_is_an_error_outcome(service: Service) -> None:
    outcome = await service.runner.run(service.tool("/bad-json"), {"order_id": "AB12CD"}, call_id="c")
    assert (outcome.ok, outcome.status, outcome.error) == (False, 200, "invalid JSON in the response")
    assert "could not be read" in outcome.content and "shipp" not in outcome.content


@pytest.mark.parametrize(
    ("path", "ok", "content"),
    [
        ("/text", True, "Your order ships on Tuesday."),  # plain words go to the model as they are
        ("/untyped", True, '{"status":"shipped"}'),  # no Content-Type: JSON if it parses
        ("/empty", True, "Done: lookup_order succeeded with no content."),
        ("/image", False, "lookup_order sent an answer that is not text (image/png)."),
        (
            "/redirect",
            False,
            "The lookup_order service answered with a redirect (HTTP 302), which is not followed.",
        ),
    ],
)
async def test_each_kind_of_answer(service: Service, path: str, ok: bool, content: str) -> None:
    outcome = await service.runner.run(service.tool(path), {"order_id": "AB12CD"}, call_id="c")
    assert (outcome.ok, outcome.content) == (ok, content)
    assert [r["path"] for r in service.seen.requests] == [path]  # the redirect was not followed


async def test_answers_are_bounded(service: Service) -> None:
    long = await service.runner.run(service.tool("/long"), {"order_id": "AB12CD"}, call_id="c")
    assert long.ok and len(long.content) == MAX_CONTENT_CHARS and long.content.endswith("…")
    big = await service.runner.run(service.tool("/big"), {"order_id": "AB12CD"}, call_id="c")
    assert not big.ok and big.error == f"response over {MAX_RESPONSE_BYTES} bytes"


async def test_connection_refused_is_an_error_outcome() -> None:
    # A bound socket that does not listen: connecting to it is refused, and no one else can take the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        runner = WebhookRunner(environ=ENV)
        try:
            tool = Service(f"http://127.0.0.1:{closed.getsockname()[1]}", Seen(), runner).tool()
            outcome = await runner.run(tool, {"order_id": "AB12CD"}, call_id="c")
        finally:
            await runner.aclose()
    assert not outcome.ok and outcome.status is None
    assert outcome.content == "The lookup_order service could not be reached."
    assert (outcome.error or "").startswith("ConnectError")


async def test_a_tool_call_runs_end_to_end_on_its_route(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipagent.tools")
    tool = service.tool()
    tools = RouteTools(specs=(end_call_spec(), tool.spec), webhooks={tool.name: tool})
    runner = service.runner
    good = await runner.run_call(tools, ToolCall("t1", "lookup_order", '{"order_id": "AB12CD"}'), call_id="c")
    assert good.ok and json.loads(good.content)["got"] == {"order_id": "AB12CD"}
    bad_json = await runner.run_call(tools, ToolCall("t2", "lookup_order", '{"order_id": '), call_id="c")
    assert not bad_json.ok and "not valid JSON" in bad_json.content
    wrong = ToolCall("t3", "lookup_order", '{"order_id": "AB12CD", "phone": "+15551234567", "x": 1}')
    bad_args = await runner.run_call(tools, wrong, call_id="c")
    assert not bad_args.ok and bad_args.error == "invalid arguments (not sent)"
    unknown = await runner.run_call(tools, ToolCall("t4", "drop_tables", "{}"), call_id="c")
    assert (
        not unknown.ok
        and "no tool named 'drop_tables'" in unknown.content
        and "lookup_order" in unknown.content
    )
    # A built-in is the conversation's to carry out, never a request.
    builtin = await runner.run_call(tools, ToolCall("t5", END_CALL, "{}"), call_id="c")
    assert not builtin.ok and builtin.error == "unknown tool 'end_call'"
    assert len(service.seen.requests) == 1
    assert "(not a JSON object)" in caplog.text and "+*******4567" in caplog.text
    assert "15551234567" not in caplog.text


def test_key_actions_read_back_as_written() -> None:
    keys = {
        "0": KeyAction("transfer", target="sales", uri="+15550001234"),
        "9": KeyAction("end_call"),
        "*": KeyAction("say", text="Open nine to five."),
    }
    assert RouteTools(keys=keys).key_actions == (
        ("0", "transfer:sales"),
        ("9", "end_call"),
        ("*", "say:Open nine to five."),
    )


def test_arguments_are_masked_for_the_log() -> None:
    masked = masked_arguments(
        {
            "order_id": "AB12CD",
            "Password": "pw",
            "auth": {"authorization": "x", "refresh_token": ["a"]},
            "caller": "+1 (555) 123-4567",
            "callback": "sip:+15551234567@carrier.example",
            "numbers": ["+442079460958", "tiny"],
            "raw_phone": 15551234567,
            "count": 3,
            "note": "n" * 500,
        }
    )
    assert masked["order_id"] == "AB12CD" and masked["count"] == 3
    assert masked["Password"] == "***" and masked["auth"] == {"authorization": "***", "refresh_token": "***"}
    assert masked["caller"].endswith("4567") and "555" not in masked["caller"]
    assert masked["callback"] == "sip:+*******4567@carrier.example"
    assert masked["numbers"] == ["+********0958", "tiny"]
    assert masked["raw_phone"] == "*******4567"
    assert len(masked["note"]) == 101
