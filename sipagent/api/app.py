"""The control API: FastAPI routes over :class:`~sipagent.product.control.CallControl`.

Every route is ``async def``: FastAPI runs plain ``def`` routes on worker threads, and the server's
methods must run on its own loop. Bodies are checked by the models in :mod:`.models`; every error
answer, whoever finds the problem, has one shape (:func:`~.middleware.error_body`)::

    {"error": {"field": "digits", "message": "only 0-9, *, #, A-D are DTMF digits, not 'X'"}}

=====================================  ========================================================
401                                    missing or wrong bearer token (same body on every path)
400 ``body``                           the body is not JSON
413 ``body``                           the body is over 64 KiB
422 ``<field>``                        a field fails its constraints (or is missing, or unknown)
404 ``call_id`` / 422 / 429            what the server answers (``ControlError.status``)
500                                    a failure inside the server: logged there, told to no one
=====================================  ========================================================

The OpenAPI document (``/openapi.json``) and ``/docs`` are open when the API listens on loopback
only (everyone who can reach them can already read the code); bound beyond it they need the token
like everything else. ``/healthz`` is always open: it says that the server is up and how many calls
it has, nothing about them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..product.control import CallControl, ControlError
from .config import ApiConfig
from .events import stream_events
from .middleware import BearerAuth, Guard, error_body
from .models import (
    AcceptedModel,
    CallInfoModel,
    CallListModel,
    DtmfRequest,
    ErrorModel,
    HealthModel,
    PlaceCallRequest,
    SpeakRequest,
)

log = logging.getLogger("sipagent.api")

DESCRIPTION = """\
Place, follow and steer the calls of a running `sipagent serve`.

**Authentication**: `Authorization: Bearer <token>`, the token being the value of the environment
variable named by `[api] token_env` (default `SIPAGENT_API_TOKEN`) when the server started. Without
one the API is open, which the server allows only on loopback. `/healthz` needs no token, nor do
this document and `/docs` while the API listens on loopback only.

**Errors** all have one shape: `{"error": {"field": "<dotted field or null>", "message": "..."}}`.

**Events** (WebSocket, not listed below): `/v1/events` streams every call's events,
`/v1/calls/{call_id}/events` one call's (closed with 1000 after its `call_ended`, with 4404 if
there is no such call). Each text frame is one JSON object: `type` (`call_started`, `ringing`,
`answered`, `transcript`, `agent_text`, `dtmf`, `turn_latency`, `barge_in`, `call_ended`),
`call_id`, `at` (Unix time) and the fields of that type. Send the token in the `Authorization`
header, or as `?token=` where a client (a browser) cannot set headers; a wrong one is refused
with HTTP 401 at the handshake. A client that stops reading loses its oldest events, never
the calls' pace.
"""

#: Names of the server's fields (PlaceCall's) as the request spells them.
_REQUEST_FIELDS = {"from_number": "from"}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers, all in the one shape."""
    text = {
        400: "The body is not JSON (field `body`).",
        401: "Missing or wrong bearer token.",
        404: "No such call (field `call_id`).",
        409: "The call cannot do that now (not answered, no agent…).",
        422: "A field is missing, unknown or out of bounds, or the server refuses its value.",
        429: "`limits.max_calls` calls are up; try again when one ends.",
    }
    return {status: {"model": ErrorModel, "description": text[status]} for status in statuses}


def _first_problem(exc: RequestValidationError) -> tuple[int, str | None, str]:
    """(status, field, message) for FastAPI's list of validation errors: the first one, named."""
    errors = list(exc.errors())
    if not errors:
        return 422, None, "invalid request"
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        return 400, "body", f"malformed JSON: {reason}"
    where = loc[0] if loc else ""
    path = loc[1:] if where in ("body", "path", "query", "header") else loc
    field = ".".join(path) or ("body" if where == "body" else None)
    message = str(first.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "a JSON object is required" if field == "body" else "required"
    elif first.get("type") == "extra_forbidden":
        message = "unknown field"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return 422, field, message


def create_app(
    control: CallControl, config: ApiConfig, metrics: Callable[[], tuple[bytes, str]] | None = None
) -> FastAPI:
    """The control API over ``control``, demanding ``config.token`` (None: open); with ``metrics``
    (Prometheus text and its content type), ``GET /metrics`` too, behind the same token."""
    app = FastAPI(
        title="sipagent control API",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    router = APIRouter(prefix="/v1", tags=["calls"])

    @router.post(
        "/calls",
        status_code=201,
        response_model=None,
        summary="Place an outbound call",
        description="Starts the call and answers at once (state `ringing`); follow it with "
        "`GET /v1/calls/{call_id}` or the events. `Location` names the call.",
        responses={
            201: {"model": CallInfoModel, "description": "The call, ringing."},
            **_errors(400, 401, 422, 429),
        },
    )
    async def place_call(body: PlaceCallRequest) -> JSONResponse:
        # What needs two fields together is checked here; each field alone, by the model.
        if body.mode == "notify" and body.message is None:
            raise ControlError("mode notify needs a message to say", field="message")
        if body.mode == "notify" and body.task is not None:
            raise ControlError("a task is for mode conversation; notify says its message", field="task")
        if body.mode == "conversation" and body.message is not None:
            raise ControlError("a message is for mode notify; give a conversation a task", field="message")
        info = await control.place_call(body.to_control())
        return JSONResponse(info.as_json(), status_code=201, headers={"Location": f"/v1/calls/{info.id}"})

    @router.get(
        "/calls",
        response_model=None,
        summary="List calls",
        description="Calls in progress and the most recent ended ones, newest first.",
        responses={200: {"model": CallListModel, "description": "The calls."}, **_errors(401)},
    )
    async def list_calls() -> JSONResponse:
        return JSONResponse({"calls": [info.as_json() for info in control.list_calls()]})

    @router.get(
        "/calls/{call_id}",
        response_model=None,
        summary="One call's status",
        description="State, outcome, SIP status, duration and the transcript's turns so far.",
        responses={200: {"model": CallInfoModel, "description": "The call."}, **_errors(401, 404)},
    )
    async def get_call(call_id: str) -> JSONResponse:
        return JSONResponse(control.get_call(call_id).as_json())

    @router.post(
        "/calls/{call_id}/speak",
        status_code=202,
        summary="Say something in a call",
        description="After the agent's current sentence, or at once cutting it (`interrupt`).",
        responses=_errors(400, 401, 404, 409, 422),
    )
    async def speak(call_id: str, body: SpeakRequest) -> AcceptedModel:
        control.speak(call_id, body.text, interrupt=body.interrupt)
        return AcceptedModel(call_id=call_id, action="speak")

    @router.post(
        "/calls/{call_id}/dtmf",
        status_code=202,
        summary="Send DTMF digits",
        description="As RFC 4733 telephone events, one after the other.",
        responses=_errors(400, 401, 404, 409, 422),
    )
    async def send_dtmf(call_id: str, body: DtmfRequest) -> AcceptedModel:
        control.send_dtmf(call_id, body.digits)
        return AcceptedModel(call_id=call_id, action="dtmf")

    @router.post(
        "/calls/{call_id}/hangup",
        status_code=202,
        summary="End a call",
        description="BYE once answered, CANCEL while it rings; `call_ended` follows in the events.",
        responses=_errors(401, 404),
    )
    async def hang_up(call_id: str) -> AcceptedModel:
        control.hang_up(call_id)
        return AcceptedModel(call_id=call_id, action="hangup")

    @router.websocket("/events")
    async def all_events(websocket: WebSocket) -> None:
        await stream_events(websocket, control, None)

    @router.websocket("/calls/{call_id}/events")
    async def call_events(websocket: WebSocket, call_id: str) -> None:
        await stream_events(websocket, control, call_id)

    app.include_router(router)

    if metrics is not None:
        render = metrics

        @app.get("/metrics", tags=["server"], summary="Prometheus metrics", response_class=Response)
        async def prometheus() -> Response:
            body, content_type = render()
            return Response(body, media_type=content_type)

    @app.get("/healthz", tags=["server"], summary="Liveness (no token needed)")
    async def healthz() -> HealthModel:
        calls = sum(1 for info in control.list_calls() if info.state != "ended")
        return HealthModel(status="ok", calls=calls)

    _install_error_handlers(app)
    _install_openapi(app)
    public = {"/healthz"}
    if config.loopback:
        public |= {"/openapi.json", "/docs", "/docs/oauth2-redirect"}
    # Added last, runs first: the guard wraps the token check, which wraps the routes.
    app.add_middleware(BearerAuth, token=config.token, public=frozenset(public))
    app.add_middleware(Guard)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def control_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ControlError)
        field = _REQUEST_FIELDS.get(exc.field, exc.field) if exc.field is not None else None
        return JSONResponse(error_body(field, str(exc)), status_code=exc.status)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        status, field, message = _first_problem(exc)
        return JSONResponse(error_body(field, message), status_code=status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own answers (no such route 404, wrong method 405), in the one shape.
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            error_body(None, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(ControlError, control_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _install_openapi(app: FastAPI) -> None:
    """FastAPI's document, plus the bearer scheme on every route but /healthz."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of the server's `[api] token_env` variable.",
                }
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if path != "/healthz":
                        operation["security"] = [{"bearer": []}]
                    # FastAPI documents its own 422 body where a route declares none; ours has
                    # the one error shape.
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {}).get("application/json", {})
                        if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                            content["schema"] = {"$ref": "#/components/schemas/ErrorModel"}
                            response["description"] = "A parameter is out of bounds."
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"].get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
