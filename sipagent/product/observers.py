"""What watches the call book: Prometheus metrics and the lifecycle webhooks, fed from the same
events the control API streams (``call_started``, ``answered``, ``turn_latency``, ``barge_in``,
``tool_call``, ``amd``, ``call_ended``…), so the three never disagree. Runs on the server's loop;
nothing here blocks (the webhooks queue their deliveries)."""

from __future__ import annotations

from typing import Any, Literal

from .calls import CallBook
from .control import CallEvent
from .lifecycle import LifecycleWebhooks, call_payload, end_of_call_report
from .metrics import Metrics
from .store import CallStore


class CallObserver:
    """Turns call events into metrics and lifecycle webhooks (either may be absent)."""

    def __init__(self, book: CallBook, metrics: Metrics | None, webhooks: LifecycleWebhooks | None) -> None:
        self.book = book
        self.metrics = metrics
        self.webhooks = webhooks
        self._directions: dict[str, str] = {}
        self._tools: dict[str, list[dict[str, Any]]] = {}
        self._amd: dict[str, str] = {}
        book.observers.append(self.on_event)

    def on_event(self, event: CallEvent) -> None:
        data, call_id, metrics = event.data, event.call_id, self.metrics
        if event.type == "call_started":
            direction = str(data.get("direction", "inbound"))
            self._directions[call_id] = direction
            if metrics is not None:
                metrics.call_started(direction)
            self._emit("call.started", call_id, call_payload)
        elif event.type == "answered":
            self._emit("call.answered", call_id, call_payload)
        elif event.type == "turn_latency" and metrics is not None:
            metrics.turn(wire_ms=data.get("wire_ms"))
        elif event.type == "barge_in" and metrics is not None:
            metrics.barge_in()
        elif event.type == "tool_call":
            self._tools.setdefault(call_id, []).append(dict(data))
            if metrics is not None:
                metrics.tool_call(str(data.get("name")), bool(data.get("ok")))
        elif event.type == "amd":
            self._amd[call_id] = str(data.get("result"))
            if metrics is not None:
                metrics.amd(self._amd[call_id])
        elif event.type == "call_ended":
            direction = self._directions.pop(call_id, "inbound")
            if metrics is not None:
                metrics.call_ended(direction, str(data.get("outcome")))
            tools, amd = self._tools.pop(call_id, []), self._amd.pop(call_id, None)
            self._emit("call.ended", call_id, lambda info: end_of_call_report(
                info, tool_calls=tools, amd=amd, recording_path=info.recording))  # fmt: skip

    def _emit(self, kind: str, call_id: str, payload: Any) -> None:
        if self.webhooks is None:
            return
        try:
            info = self.book.get(call_id)
        except Exception:  # forgotten already (an old ended call): nothing to report
            return
        self.webhooks.emit(kind, payload(info))


class StoreObserver:
    """Writes each call's record to the call store as its events happen (the turns themselves come
    from the phone service, which has the whole turn record). Every write is queued: nothing waits
    for the disk on the call's loop."""

    def __init__(self, book: CallBook, store: CallStore) -> None:
        self.store = store
        book.observers.append(self.on_event)

    def on_event(self, event: CallEvent) -> None:
        data, call_id, store = event.data, event.call_id, self.store
        if event.type == "call_started":
            direction: Literal["inbound", "outbound"] = (
                "outbound" if data.get("direction") == "outbound" else "inbound"
            )
            store.call_started(
                call_id,
                direction=direction,
                caller=str(data.get("from")),
                callee=str(data.get("to")),
                route=data.get("route"),
                mode=data.get("mode"),
            )
        elif event.type == "answered":
            store.call_answered(call_id)
        elif event.type == "dtmf":
            store.dtmf(call_id, str(data.get("digit")))
        elif event.type == "amd":
            store.amd(call_id, str(data.get("result")), after_ms=data.get("after_ms"))
        elif event.type == "tool_call":
            store.tool_call(
                call_id,
                str(data.get("name")),
                arguments=data.get("arguments"),
                ok=data.get("ok"),
                status=data.get("status"),
                duration_ms=data.get("duration_ms"),
                error=data.get("error"),
                result=data.get("result"),
            )
        elif event.type == "transfer":
            state = data.get("state")
            if state not in ("requested", "succeeded", "failed"):
                return
            store.transfer(call_id, state=state, target=data.get("target"),
                           sip_status=data.get("sip_status"), reason=data.get("reason"))  # fmt: skip
        elif event.type == "call_ended":
            store.call_ended(call_id, reason=str(data.get("reason")), sip_status=data.get("sip_status"),
                             outcome=str(data.get("outcome")))  # fmt: skip


__all__ = ["CallObserver", "StoreObserver"]
