"""What watches the call book: Prometheus metrics and the lifecycle webhooks, fed from the same
events the control API streams (``call_started``, ``answered``, ``turn_latency``, ``barge_in``,
``tool_call``, ``amd``, ``call_ended``…), so the three never disagree. Runs on the server's loop;
nothing here blocks (the webhooks queue their deliveries)."""

from __future__ import annotations

from typing import Any

from .calls import CallBook
from .control import CallEvent
from .lifecycle import LifecycleWebhooks, call_payload, end_of_call_report
from .metrics import Metrics


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
            self._emit(
                "call.ended", call_id, lambda info: end_of_call_report(info, tool_calls=tools, amd=amd)
            )

    def _emit(self, kind: str, call_id: str, payload: Any) -> None:
        if self.webhooks is None:
            return
        try:
            info = self.book.get(call_id)
        except Exception:  # forgotten already (an old ended call): nothing to report
            return
        self.webhooks.emit(kind, payload(info))


__all__ = ["CallObserver"]
