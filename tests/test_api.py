"""The control API over a fake server (tests/fake_control.py): every route, every kind of bad
input, the token, the OpenAPI document and the event streams, through a real uvicorn listening on
a free loopback port inside the test's own event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sipagent.api.app import create_app
from sipagent.api.config import ApiConfig
from sipagent.api.models import CallEventModel, CallInfoModel
from sipagent.api.server import ApiBindError, ApiServer
from sipagent.product.control import MAX_SPEAK_CHARS, CallEvent, PlaceCall, Turn
from tests.fake_control import FakeControl

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    """A running API over a fake, and an HTTP client for it."""

    def __init__(self, fake: FakeControl, server: ApiServer, http: httpx.AsyncClient) -> None:
        self.fake, self.server, self.http = fake, server, http

    @property
    def ws(self) -> str:
        return self.server.url.replace("http://", "ws://")

    async def subscribed(self, count: int = 1) -> None:
        """Until the server side of ``count`` event streams has subscribed."""
        async with asyncio.timeout(10):
            while len(self.fake.subscriptions) < count:
                await asyncio.sleep(0.005)


async def _start(fake: FakeControl, config: ApiConfig) -> AsyncIterator[Api]:
    server = ApiServer(fake, config)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as http:
            yield Api(fake, server, http)
    finally:
        await server.stop()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async for running in _start(FakeControl(max_calls=2), ApiConfig(port=0, token=TOKEN)):
        yield running


async def _place(api: Api, **body: Any) -> dict[str, Any]:
    response = await api.http.post("/v1/calls", json={"target": "+15551234567", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _error(response: httpx.Response, status: int, field: str | None) -> str:
    """The error's message, once its status, its one shape and its field are as expected."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"field", "message"}
    assert body["error"]["field"] == field, body
    message: str = body["error"]["message"]
    assert message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------------------- routes


async def test_healthz_needs_no_token_and_counts_calls_in_progress(api: Api) -> None:
    await _place(api)
    ended = await _place(api)
    api.fake.end(ended["id"])
    response = await api.http.get("/healthz", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "calls": 1}


async def test_place_call_answers_201_with_the_call_and_passes_every_option(api: Api) -> None:
    response = await api.http.post(
        "/v1/calls",
        json={
            "target": "+15551234567",
            "mode": "notify",
            "message": "Your order is ready.",
            "repeat": 2,
            "from": "+15550001111",
            "max_duration": 60,
            "ring_timeout": 20.5,
        },
    )
    assert response.status_code == 201
    call = response.json()
    assert call["state"] == "ringing" and call["to"].endswith("4567") and call["mode"] == "notify"
    assert response.headers["location"] == f"/v1/calls/{call['id']}"
    assert api.fake.requests == [
        (
            "place_call",
            PlaceCall(
                target="+15551234567",
                mode="notify",
                message="Your order is ready.",
                repeat=2,
                from_number="+15550001111",
                max_duration=60.0,
                ring_timeout=20.5,
            ),
        )
    ]
    conversation = await _place(api, task="Book a table for two.")
    assert api.fake.requests[-1] == (
        "place_call",
        PlaceCall(target="+15551234567", mode="conversation", task="Book a table for two."),
    )
    assert conversation["mode"] == "conversation"


async def test_list_and_get_calls(api: Api) -> None:
    first = await _place(api)
    second = await _place(api)
    api.fake.answer(first["id"])
    api.fake.end(first["id"], turns=(Turn("Hi?", "Hello!", latency_ms=400.0),))
    listing = (await api.http.get("/v1/calls")).json()
    assert [call["id"] for call in listing["calls"]] == [second["id"], first["id"]]  # newest first
    call = (await api.http.get(f"/v1/calls/{first['id']}")).json()
    assert call["state"] == "ended" and call["outcome"] == "answered" and call["sip_status"] == 200
    assert call["turns"] == [{"caller": "Hi?", "agent": "Hello!", "interrupted": False, "latency_ms": 400.0}]
    assert call["duration"] is not None and call["duration"] >= 0
    # The documented schema is exactly what the server's as_json produces.
    CallInfoModel.model_validate(call)
    assert CallInfoModel.model_validate(call).model_dump(by_alias=True) == call


async def test_speak_dtmf_and_hangup_answer_202_and_reach_the_server(api: Api) -> None:
    call_id = (await _place(api))["id"]
    api.fake.answer(call_id)
    speak = await api.http.post(f"/v1/calls/{call_id}/speak", json={"text": "One moment.", "interrupt": True})
    assert speak.status_code == 202 and speak.json() == {"call_id": call_id, "action": "speak"}
    dtmf = await api.http.post(f"/v1/calls/{call_id}/dtmf", json={"digits": "0123456789*#ABCD"})
    assert dtmf.status_code == 202 and dtmf.json()["action"] == "dtmf"
    hangup = await api.http.post(f"/v1/calls/{call_id}/hangup")
    assert hangup.status_code == 202 and hangup.json()["action"] == "hangup"
    assert api.fake.requests[1:] == [
        ("speak", call_id, "One moment.", True),
        ("send_dtmf", call_id, "0123456789*#ABCD"),
        ("hang_up", call_id),
    ]
    assert api.fake.calls[call_id].state == "ended"


# ------------------------------------------------------------------------------ bad input


async def test_what_only_the_server_can_judge_comes_back_naming_the_field(api: Api) -> None:
    message = _error(await api.http.post("/v1/calls", json={"target": "bob"}), 422, "target")
    assert "'bob'" in message
    # The server names PlaceCall.from_number; the request spells it "from".
    body = {"target": "+15551234567", "from": "nobody"}
    _error(await api.http.post("/v1/calls", json=body), 422, "from")


async def test_a_call_beyond_the_limit_is_429(api: Api) -> None:
    await _place(api)
    await _place(api)
    message = _error(await api.http.post("/v1/calls", json={"target": "+15551234567"}), 429, None)
    assert "max_calls" in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "+15551234567", "mode": "notify"}, "message"),
        ({"target": "+15551234567", "mode": "notify", "message": "Hi", "task": "x"}, "task"),
        ({"target": "+15551234567", "message": "Hi"}, "message"),
        ({"target": "+15551234567", "mode": "notify", "message": "Hi", "repeat": 6}, "repeat"),
        ({"target": "+15551234567", "mode": "shout"}, "mode"),
        ({"target": "+15551234567", "max_duration": 0}, "max_duration"),
        ({"target": "+15551234567", "ring_timeout": "soon"}, "ring_timeout"),
        ({"target": ""}, "target"),
        ({"mode": "conversation"}, "target"),
        ({"target": "+15551234567", "mesage": "typo"}, "mesage"),
    ],
)
async def test_bad_place_call_bodies_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    _error(await api.http.post("/v1/calls", json=body), 422, field)
    assert not any(request[0] == "place_call" for request in api.fake.requests[1:])


async def test_an_unknown_call_is_404_on_every_route(api: Api) -> None:
    for method, path, body in [
        ("GET", "/v1/calls/nope", None),
        ("POST", "/v1/calls/nope/speak", {"text": "hi"}),
        ("POST", "/v1/calls/nope/dtmf", {"digits": "1"}),
        ("POST", "/v1/calls/nope/hangup", None),
    ]:
        message = _error(await api.http.request(method, path, json=body), 404, "call_id")
        assert "nope" in message


async def test_dtmf_takes_only_dtmf_digits(api: Api) -> None:
    call_id = (await _place(api))["id"]
    url = f"/v1/calls/{call_id}/dtmf"
    assert "'X'" in _error(await api.http.post(url, json={"digits": "12X"}), 422, "digits")
    _error(await api.http.post(url, json={"digits": ""}), 422, "digits")
    _error(await api.http.post(url, json={"digits": "1" * 33}), 422, "digits")
    assert _error(await api.http.post(url, json={}), 422, "digits") == "required"
    assert not any(request[0] == "send_dtmf" for request in api.fake.requests)


async def test_speak_text_is_bounded(api: Api) -> None:
    call_id = (await _place(api))["id"]
    url = f"/v1/calls/{call_id}/speak"
    message = _error(await api.http.post(url, json={"text": "x" * (MAX_SPEAK_CHARS + 1)}), 422, "text")
    assert str(MAX_SPEAK_CHARS) in message
    _error(await api.http.post(url, json={"text": "   "}), 422, "text")
    _error(await api.http.post(url, json={"text": "hi", "interrupt": "maybe"}), 422, "interrupt")
    # Within bounds, the server judges: this call rings, so it cannot speak yet.
    assert "not answered" in _error(await api.http.post(url, json={"text": "hi"}), 409, "call_id")


async def test_malformed_or_missing_bodies(api: Api) -> None:
    headers = {"Content-Type": "application/json"}
    message = _error(await api.http.post("/v1/calls", content=b'{"target": ', headers=headers), 400, "body")
    assert message.startswith("malformed JSON")
    _error(await api.http.post("/v1/calls", content=b"[1, 2]", headers=headers), 422, "body")
    _error(await api.http.post("/v1/calls"), 422, "body")
    big = {"target": "+15551234567", "task": "x" * 70_000}
    _error(await api.http.post("/v1/calls", json=big), 413, "body")


async def test_routes_and_methods_that_do_not_exist_answer_in_the_same_shape(api: Api) -> None:
    _error(await api.http.get("/v1/nothing"), 404, None)
    response = await api.http.delete("/v1/calls")
    _error(response, 405, None)
    assert "allow" in response.headers


async def test_a_failure_inside_the_server_is_a_generic_500_and_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.fake.fail_with = RuntimeError("secret internals")
    with caplog.at_level(logging.ERROR, logger="sipagent.api"):
        response = await api.http.get("/v1/calls")
    message = _error(response, 500, None)
    assert "secret" not in response.text and "internal error" in message
    assert any("secret internals" in (record.exc_text or "") for record in caplog.records)


# ---------------------------------------------------------------------------------- token


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_a_missing_or_wrong_token_is_401_and_tells_nothing(api: Api, authorization: str | None) -> None:
    known = (await _place(api))["id"]
    headers = {"Authorization": authorization} if authorization is not None else {}
    answers = []
    async with httpx.AsyncClient(base_url=api.server.url, headers=headers) as stranger:
        for method, path, body in [
            ("GET", "/v1/calls", None),
            ("GET", f"/v1/calls/{known}", None),
            ("GET", "/v1/calls/unknown", None),
            ("POST", f"/v1/calls/{known}/dtmf", {"digits": "X"}),
            ("POST", "/v1/calls", {"target": "+15551234567"}),
            ("POST", "/v1/calls", None),
        ]:
            response = await stranger.request(method, path, json=body)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            answers.append(response.content)
    assert len(set(answers)) == 1  # a known call and an unknown one look the same
    assert api.fake.requests == [("place_call", PlaceCall(target="+15551234567"))]


async def test_the_token_is_compared_exactly() -> None:
    async for api in _start(FakeControl(), ApiConfig(port=0, token="ü-token")):
        async with httpx.AsyncClient(base_url=api.server.url) as client:
            ok = await client.get("/v1/calls", headers={b"Authorization": "bearer ü-token".encode()})
            assert ok.status_code == 200
            assert (await client.get("/v1/calls", headers={"Authorization": "Bearer"})).status_code == 401


async def test_without_a_token_configured_the_api_is_open() -> None:
    async for api in _start(FakeControl(), ApiConfig(port=0, token=None)):
        async with httpx.AsyncClient(base_url=api.server.url) as client:
            assert (await client.get("/v1/calls")).json() == {"calls": []}


# -------------------------------------------------------------------------------- OpenAPI


async def test_the_openapi_document_is_valid_and_describes_the_api(api: Api) -> None:
    response = await api.http.get("/openapi.json", headers={"Authorization": ""})  # open on loopback
    assert response.status_code == 200
    document = response.json()
    validate(document)
    paths = document["paths"]
    assert set(paths) == {
        "/v1/calls",
        "/v1/calls/{call_id}",
        "/v1/calls/{call_id}/speak",
        "/v1/calls/{call_id}/dtmf",
        "/v1/calls/{call_id}/hangup",
        "/healthz",
    }
    post = paths["/v1/calls"]["post"]
    assert post["security"] == [{"bearer": []}] and "security" not in paths["/healthz"]["get"]
    assert {"201", "401", "422", "429"} <= set(post["responses"])
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorModel")
    schemas = document["components"]["schemas"]
    assert "from" in schemas["PlaceCallRequest"]["properties"]
    assert schemas["DtmfRequest"]["properties"]["digits"]["maxLength"] == 32
    assert "CallInfoModel" in schemas and "HTTPValidationError" not in schemas
    assert "/v1/events" in document["info"]["description"]  # the WebSocket streams are described
    docs = await api.http.get("/docs", headers={"Authorization": ""})
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_beyond_loopback_the_openapi_document_needs_the_token() -> None:
    # The app decides by its configured bind: driven in memory, nothing listens anywhere.
    app = create_app(FakeControl(), ApiConfig(bind="0.0.0.0", token=TOKEN))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        assert (await client.get("/openapi.json")).status_code == 401
        assert (await client.get("/docs")).status_code == 401
        assert (await client.get("/openapi.json", headers=AUTH)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


# --------------------------------------------------------------------------------- events


async def _frames(socket: Any, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        return [json.loads(await socket.recv()) for _ in range(count)]


async def test_all_events_stream_as_json_objects(api: Api) -> None:
    async with connect(f"{api.ws}/v1/events", additional_headers=AUTH) as socket:
        await api.subscribed()
        call_id = (await _place(api))["id"]
        api.fake.answer(call_id)
        api.fake.publish("transcript", call_id, text="hello there", final=True)
        api.fake.publish("dtmf", "c99", digit="5")
        frames = await _frames(socket, 4)
    assert [frame["type"] for frame in frames] == ["call_started", "answered", "transcript", "dtmf"]
    assert frames[2] == {**frames[2], "call_id": call_id, "text": "hello there", "final": True}
    assert isinstance(frames[0]["at"], float)
    for frame in frames:
        CallEventModel.model_validate(frame)
    await _unsubscribed(api)


async def _unsubscribed(api: Api) -> None:
    """The server side closed the subscription once the client left (its queue is freed)."""
    async with asyncio.timeout(10):
        while api.fake.subscriptions:
            await asyncio.sleep(0.005)


async def test_one_call_stream_ends_after_call_ended(api: Api) -> None:
    first = (await _place(api))["id"]
    other = (await _place(api))["id"]
    async with connect(f"{api.ws}/v1/calls/{first}/events?token={TOKEN}") as socket:  # as a browser
        await api.subscribed()
        api.fake.answer(other)
        api.fake.answer(first)
        api.fake.publish("agent_text", first, text="Hi!")
        api.fake.end(first)
        frames = await _frames(socket, 3)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert [(frame["type"], frame["call_id"]) for frame in frames] == [
        ("answered", first),
        ("agent_text", first),
        ("call_ended", first),
    ]
    assert socket.close_code == 1000
    await _unsubscribed(api)


async def test_an_unknown_call_stream_closes_with_4404(api: Api) -> None:
    async with connect(f"{api.ws}/v1/calls/nope/events", additional_headers=AUTH) as socket:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert socket.close_code == 4404 and "nope" in (socket.close_reason or "")
    assert api.fake.subscriptions == []


@pytest.mark.parametrize("path", ["/v1/events", "/v1/calls/c1/events", "/v1/events?token=wrong"])
async def test_a_stream_without_the_token_is_refused_at_the_handshake(api: Api, path: str) -> None:
    await _place(api)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{api.ws}{path}", additional_headers={"Authorization": "Bearer wrong"}):
            pass
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == "Bearer"
    assert not any(request[0] == "subscribe" for request in api.fake.requests)


async def test_a_slow_reader_loses_old_events_not_the_server(api: Api) -> None:
    api.fake.queue_size = 4
    async with connect(f"{api.ws}/v1/events", additional_headers=AUTH) as socket:
        await api.subscribed()
        subscription = api.fake.subscriptions[0]
        for n in range(50):  # published in one go: the stream cannot take them as they come
            subscription.offer(CallEvent("transcript", "c1", float(n), {"text": str(n)}))
        assert subscription.dropped > 0
        frames = await _frames(socket, 4)
    assert frames[-1]["text"] == "49"


async def test_stopping_the_api_closes_open_streams(api: Api) -> None:
    async with connect(f"{api.ws}/v1/events", additional_headers=AUTH) as socket:
        await api.subscribed()
        async with asyncio.timeout(20):
            await api.server.stop()
            with pytest.raises(ConnectionClosed):
                await socket.recv()
    assert socket.close_code == 1012  # "service restart"
    assert api.fake.subscriptions == []


# --------------------------------------------------------------------------------- server


async def test_a_busy_port_is_an_api_bind_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ApiServer(FakeControl(), ApiConfig(port=port))
        with pytest.raises(ApiBindError, match=rf"cannot serve the control API on 127\.0\.0\.1:{port}: "):
            await server.start()
        with pytest.raises(RuntimeError):
            server.bound_port  # noqa: B018  # not started


async def test_port_0_picks_a_free_port_and_stop_is_idempotent() -> None:
    server = ApiServer(FakeControl(), ApiConfig(port=0))
    await server.start()
    assert server.bound_port > 0 and server.url == f"http://127.0.0.1:{server.bound_port}"
    await server.stop()
    await server.stop()
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.bound_port))


def test_the_config_never_shows_its_token() -> None:
    config = ApiConfig(token="hunter2")
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert ApiConfig(bind="::1").loopback and not ApiConfig(bind="0.0.0.0").loopback


async def test_answers_leave_without_waiting_for_nagle(api: Api) -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto says TCP: without it each body waited
    # for the client's delayed ACK (40 ms) behind its headers.
    assert (await api.http.get("/v1/calls")).status_code == 200
    assert api.server._server is not None
    connections = list(api.server._server.server_state.connections)
    assert connections
    for connection in connections:
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_stopped_api_starts_again() -> None:
    server = ApiServer(FakeControl(), ApiConfig(port=0, token=TOKEN))
    for _ in range(2):
        await server.start()
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok", "calls": 0}
        await server.stop()
