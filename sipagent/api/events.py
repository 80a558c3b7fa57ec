"""The event stream: ``/v1/events`` (every call) and ``/v1/calls/{call_id}/events`` (one call).

Each :class:`~sipagent.product.control.CallEvent` goes out as one JSON text frame
(:meth:`CallEvent.as_json`). The server's :meth:`CallControl.subscribe` feeds each subscriber
through a bounded queue of its own, so a client that stops reading loses its oldest events (the
server says how many in a ``dropped`` count), never the calls' pace. Frames the client sends are
read and ignored: reading is how a disconnect is noticed while no event comes.

Close codes: 1000 when a one-call stream ends after its ``call_ended``;
:data:`CLOSE_UNKNOWN_CALL` (4404, "404" in the application range 4000-4999) when there is no such
call; 1011 on a failure inside the server. A missing or wrong token is refused at the handshake
with HTTP 401 (:class:`~sipagent.api.middleware.BearerAuth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..product.control import CallControl, CallEvent, UnknownCall

#: Close code when the call to follow does not exist: HTTP's 404 in the application range.
CLOSE_UNKNOWN_CALL = 4404
#: RFC 6455 caps a close reason at 123 bytes.
_MAX_REASON = 120


async def stream_events(websocket: WebSocket, control: CallControl, call_id: str | None) -> None:
    """Accept the handshake, then send every event of ``call_id`` (None: of every call) until the
    subscription ends or the client goes away."""
    await websocket.accept()
    try:
        if call_id is not None:
            # Asked first, so an unknown call is told at once even if subscribe() would only
            # raise when first read (an async generator's body runs at the first event).
            control.get_call(call_id)
        events = control.subscribe(call_id)
    except UnknownCall as exc:
        await websocket.close(CLOSE_UNKNOWN_CALL, str(exc)[:_MAX_REASON])
        return
    sender = asyncio.create_task(_send_events(websocket, events))
    watcher = asyncio.create_task(_until_disconnect(websocket))
    try:
        await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():
            sender.result()  # a failure inside the server goes on to the guard (close 1011)
    finally:
        for task in (sender, watcher):
            task.cancel()
        await asyncio.gather(sender, watcher, return_exceptions=True)
        # Closing the iterator is what frees the server's queue for this subscriber.
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _send_events(websocket: WebSocket, events: AsyncIterator[CallEvent]) -> None:
    try:
        async for event in events:
            await websocket.send_text(json.dumps(event.as_json(), separators=(",", ":")))
    except UnknownCall as exc:
        await websocket.close(CLOSE_UNKNOWN_CALL, str(exc)[:_MAX_REASON])
        return
    except (WebSocketDisconnect, OSError, RuntimeError):
        return  # the client went away while a frame was going out: nothing left to tell it
    # The subscription ended: a one-call stream after its call_ended.
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.close(1000)


async def _until_disconnect(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
