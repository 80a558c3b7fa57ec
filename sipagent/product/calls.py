"""The book of calls: every call's business record (who, which route, how it went) and the events
it produced, fanned out to subscribers.

The server writes to it as SIP and the conversation report things (``started``, ``ringing``,
``answered``, ``turn``, ``dtmf``, ``ended``); the control API reads :class:`CallInfo` snapshots and
subscribes to :class:`CallEvent` streams. Each subscriber has its own bounded queue: one that stops
reading loses its oldest events, never the call's pace. Ended calls are kept (the newest
``keep_ended``) so ``status`` works after the hang-up.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..voice.conversation import Outcome, TurnRecord
from .control import CallEvent, CallInfo, CallOutcome, Direction, Turn, UnknownCall
from .numbers import mask

#: Events a subscriber may fall behind by before its oldest are dropped.
SUBSCRIBER_QUEUE = 1000


@dataclass
class _Subscriber:
    call_id: str | None
    queue: asyncio.Queue[CallEvent | None] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    dropped: int = 0


class CallBook:
    """Calls in progress and the recently ended (see the module docstring)."""

    def __init__(self, *, keep_ended: int = 200, clock: Callable[[], float] = time.time) -> None:
        self._calls: OrderedDict[str, CallInfo] = OrderedDict()
        self._subscribers: list[_Subscriber] = []
        self._keep_ended = keep_ended
        self._clock = clock
        #: Told every event as it is published (metrics, lifecycle webhooks: observers.py).
        self.observers: list[Callable[[CallEvent], None]] = []

    # -- what the server reports -----------------------------------------------------------------
    def started(
        self, call_id: str, *, direction: Direction, caller: str, callee: str, route: str | None, mode: str
    ) -> CallInfo:
        """A call began (an INVITE came in and was admitted, or we sent one)."""
        info = CallInfo(
            id=call_id,
            direction=direction,
            state="ringing",
            from_=mask(caller),
            to=mask(callee),
            route=route,
            mode=mode,
            started_at=self._clock(),
        )
        self._calls[call_id] = info
        self._publish(call_id, "call_started", direction=direction, **{"from": info.from_, "to": info.to},
                      route=route, mode=mode)  # fmt: skip
        return info

    def ringing(self, call_id: str, status: int) -> None:
        """The callee's phone rings (180/183), or ours does for the caller."""
        if self._live(call_id) is not None:
            self._publish(call_id, "ringing", sip_status=status)

    def answered(self, call_id: str) -> None:
        info = self._live(call_id)
        if info is None or info.state != "ringing":
            return
        self._calls[call_id] = replace(info, state="answered", answered_at=self._clock(), sip_status=200)
        self._publish(call_id, "answered")

    def turn(self, call_id: str, record: TurnRecord) -> None:
        """A finished turn of the conversation: transcript, agent text, latency, barge-in."""
        info = self._calls.get(call_id)
        if info is None:
            return
        interrupted = record.outcome is Outcome.INTERRUPTED
        if not record.scripted and record.transcript:
            self._publish(call_id, "transcript", turn=record.turn, text=record.transcript)
        if record.reply:
            self._publish(call_id, "agent_text", turn=record.turn, text=record.reply, interrupted=interrupted)
        if record.latency_ms is not None:
            self._publish(call_id, "turn_latency", turn=record.turn, wire_ms=round(record.latency_ms, 1))
        if interrupted and record.caller_onset_at is not None and record.stop_decided_at is not None:
            stop_ms = (record.stop_decided_at - record.caller_onset_at) * 1000
            self._publish(call_id, "barge_in", turn=record.turn, decision_ms=round(stop_ms, 1))
        latency = None if record.latency_ms is None else round(record.latency_ms, 1)
        turn = Turn(
            caller="" if record.scripted else record.transcript,
            agent=record.reply,
            interrupted=interrupted,
            latency_ms=latency,
        )
        self._calls[call_id] = replace(info, turns=(*info.turns, turn))

    def dtmf(self, call_id: str, digit: str) -> None:
        if call_id in self._calls:
            self._publish(call_id, "dtmf", digit=digit)

    def ended(self, call_id: str, *, reason: str, sip_status: int | None, outcome: CallOutcome) -> None:
        """The call is over (BYE either way, or never answered: busy, no answer, rejected, failed)."""
        info = self._live(call_id)
        if info is None:
            return
        status = sip_status if sip_status is not None else info.sip_status
        self._calls[call_id] = info = replace(
            info, state="ended", ended_at=self._clock(), end_reason=reason, sip_status=status, outcome=outcome
        )
        self._publish(call_id, "call_ended", reason=reason, outcome=outcome, sip_status=status,
                      duration=None if info.duration is None else round(info.duration, 3))  # fmt: skip
        self._forget_old()

    def recording(self, call_id: str, path: str) -> None:
        """The call is being recorded to ``path`` (its status and end-of-call report say where)."""
        info = self._calls.get(call_id)
        if info is not None:
            self._calls[call_id] = replace(info, recording=path)

    def note(self, call_id: str, type_: str, **data: Any) -> None:
        """Something else the call did (a tool call, a transfer), as an event."""
        if call_id in self._calls:
            self._publish(call_id, type_, **{k: v for k, v in data.items() if v is not None})

    def rename(self, old: str, new: str) -> None:
        """A call placed before its Call-ID was known gets it."""
        if old in self._calls:
            self._calls[new] = replace(self._calls.pop(old), id=new)

    # -- what the API reads ----------------------------------------------------------------------
    def get(self, call_id: str) -> CallInfo:
        info = self._calls.get(call_id)
        if info is None:
            raise UnknownCall(call_id)
        return info

    def list(self) -> list[CallInfo]:
        """Newest first."""
        return list(reversed(self._calls.values()))

    @property
    def active(self) -> int:
        return sum(1 for info in self._calls.values() if info.state != "ended")

    async def subscribe(self, call_id: str | None = None) -> AsyncIterator[CallEvent]:
        """Events from now on, of every call or of one; a one-call stream ends after
        its ``call_ended`` (at once for a call already over). A ``dropped`` count on an event says
        how many older ones this subscriber lost by falling behind."""
        if call_id is not None:
            info = self.get(call_id)
            if info.state == "ended":
                return
        subscriber = _Subscriber(call_id)
        self._subscribers.append(subscriber)
        try:
            while True:
                event = await subscriber.queue.get()
                if event is None:
                    return
                yield event
                if call_id is not None and event.type == "call_ended":
                    return
        finally:
            self._subscribers.remove(subscriber)

    def close(self) -> None:
        """End every subscription (the server stops)."""
        for subscriber in self._subscribers:
            self._offer(subscriber, None)

    # -- inside ----------------------------------------------------------------------------------
    def _live(self, call_id: str) -> CallInfo | None:
        info = self._calls.get(call_id)
        return None if info is None or info.state == "ended" else info

    def _publish(self, call_id: str, type_: str, **data: Any) -> None:
        event = CallEvent(type_, call_id, round(self._clock(), 3), data)
        for observer in self.observers:
            observer(event)
        for subscriber in self._subscribers:
            if subscriber.call_id is None or subscriber.call_id == call_id:
                self._offer(subscriber, event)

    @staticmethod
    def _offer(subscriber: _Subscriber, event: CallEvent | None) -> None:
        queue = subscriber.queue
        if queue.full():
            queue.get_nowait()
            subscriber.dropped += 1
        if event is not None and subscriber.dropped:
            event = replace(event, data={**event.data, "dropped": subscriber.dropped})
        queue.put_nowait(event)

    def _forget_old(self) -> None:
        ended = [key for key, info in self._calls.items() if info.state == "ended"]
        for key in ended[: max(0, len(ended) - self._keep_ended)]:
            del self._calls[key]
