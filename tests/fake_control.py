"""A fake of the running server as the control API sees it (:class:`CallControl`), for the API and
CLI tests: it records every request, raises what the real server raises (UnknownCall,
ControlError naming the field, CallLimitReached), and streams events that tests push.

Outbound calls stay ``ringing`` until a test moves them on (:meth:`FakeControl.answer`,
:meth:`FakeControl.end`), or, with ``script``, move on by themselves after a few loop iterations:
the target picks the story (see :data:`SCRIPTED`).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from sipagent.product.control import (
    CallEvent,
    CallInfo,
    CallLimitReached,
    ControlError,
    PlaceCall,
    Turn,
    UnknownCall,
)

_E164 = re.compile(r"\+[1-9]\d{6,14}")

#: With ``script=True``: how a call to each target turns out (outcome, SIP status, end reason).
SCRIPTED: dict[str, tuple[str, int, str]] = {
    "+15550000200": ("answered", 200, "agent ended the call"),
    "+15550000486": ("busy", 486, "busy"),
    "+15550000408": ("no-answer", 487, "ring timeout"),
    "+15550000603": ("rejected", 603, "declined"),
}
#: Turns of a scripted answered call.
SCRIPTED_TURNS = (
    Turn(caller="Hello?", agent="Hi, this is the pharmacy: your order is ready.", latency_ms=410.0),
    Turn(caller="Thanks, bye.", agent="Goodbye!", latency_ms=380.0),
)


class Subscription:
    """One subscriber's bounded queue of events, an async iterator closed by :meth:`aclose`."""

    def __init__(self, owner: FakeControl, call_id: str | None, size: int) -> None:
        self.owner = owner
        self.call_id = call_id
        self.queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(size)
        self.dropped = 0
        self.closed = False

    def offer(self, event: CallEvent) -> None:
        if self.call_id is not None and event.call_id != self.call_id:
            return
        if self.queue.full():  # the oldest goes, as the real server's queues do
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)
        if self.call_id is not None and event.type == "call_ended":
            if self.queue.full():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> CallEvent:
        if self.closed:
            raise StopAsyncIteration
        event = await self.queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self.closed = True
        if self in self.owner.subscriptions:
            self.owner.subscriptions.remove(self)


class FakeControl:
    """See the module docstring. ``requests`` lists ``(method, args…)`` in the order received."""

    def __init__(self, *, max_calls: int = 10, script: bool = False, queue_size: int = 100) -> None:
        self.max_calls = max_calls
        self.script = script
        self.queue_size = queue_size
        self.calls: dict[str, CallInfo] = {}
        self.requests: list[tuple[Any, ...]] = []
        self.subscriptions: list[Subscription] = []
        self.fail_with: Exception | None = None  # raised by every method (a server bug)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ CallControl

    async def place_call(self, request: PlaceCall) -> CallInfo:
        self.requests.append(("place_call", request))
        self._maybe_fail()
        if not (_E164.fullmatch(request.target) or request.target.startswith("sip:")):
            raise ControlError(
                f"{request.target!r} is not a phone number (E.164, +15551234567) or a SIP URI",
                field="target",
            )
        if request.from_number is not None and not _E164.fullmatch(request.from_number):
            raise ControlError(f"{request.from_number!r} is not an E.164 number", field="from_number")
        if sum(1 for info in self.calls.values() if info.state != "ended") >= self.max_calls:
            raise CallLimitReached(self.max_calls)
        call_id = f"c{next(self._ids)}"
        info = CallInfo(
            id=call_id,
            direction="outbound",
            state="ringing",
            from_="+1555***0100",
            to=_mask(request.target),
            route="default",
            mode=request.mode,
            started_at=time.time(),
        )
        self.calls[call_id] = info
        self.publish("call_started", call_id)
        if self.script:
            asyncio.get_running_loop().call_soon(self._play, call_id, request.target)
        return info

    def list_calls(self) -> list[CallInfo]:
        self.requests.append(("list_calls",))
        self._maybe_fail()
        return list(reversed(self.calls.values()))

    def get_call(self, call_id: str) -> CallInfo:
        self.requests.append(("get_call", call_id))
        self._maybe_fail()
        return self._call(call_id)

    def speak(self, call_id: str, text: str, *, interrupt: bool = False) -> None:
        self.requests.append(("speak", call_id, text, interrupt))
        self._answered(call_id)

    def send_dtmf(self, call_id: str, digits: str) -> None:
        self.requests.append(("send_dtmf", call_id, digits))
        self._answered(call_id)

    def hang_up(self, call_id: str) -> None:
        self.requests.append(("hang_up", call_id))
        info = self._call(call_id)
        if info.state != "ended":
            self.end(call_id, outcome="answered" if info.state == "answered" else "failed")

    def subscribe(self, call_id: str | None = None) -> AsyncIterator[CallEvent]:
        self.requests.append(("subscribe", call_id))
        if call_id is not None:
            self._call(call_id)
        subscription = Subscription(self, call_id, self.queue_size)
        self.subscriptions.append(subscription)
        return subscription

    # ------------------------------------------------------------ moving calls on

    def publish(self, kind: str, call_id: str, **data: Any) -> CallEvent:
        """Send an event to every matching subscriber (on the loop's thread)."""
        event = CallEvent(type=kind, call_id=call_id, at=time.time(), data=data)
        for subscription in list(self.subscriptions):
            subscription.offer(event)
        return event

    def answer(self, call_id: str) -> None:
        self.calls[call_id] = replace(self._call(call_id), state="answered", answered_at=time.time())
        self.publish("answered", call_id)

    def end(
        self,
        call_id: str,
        *,
        outcome: str = "answered",
        sip_status: int | None = 200,
        reason: str = "caller hung up",
        turns: tuple[Turn, ...] = (),
    ) -> None:
        info = self._call(call_id)
        self.calls[call_id] = replace(
            info,
            state="ended",
            ended_at=time.time(),
            outcome=outcome,  # type: ignore[arg-type]
            sip_status=sip_status,
            end_reason=reason,
            turns=turns or info.turns,
        )
        self.publish("call_ended", call_id, outcome=outcome, reason=reason)

    def _play(self, call_id: str, target: str) -> None:
        outcome, status, reason = SCRIPTED.get(target, ("failed", 503, "trunk unavailable"))
        loop = asyncio.get_running_loop()
        if outcome == "answered":
            self.answer(call_id)
            loop.call_soon(
                lambda: self.end(
                    call_id, outcome=outcome, sip_status=status, reason=reason, turns=SCRIPTED_TURNS
                )
            )
        else:
            loop.call_soon(lambda: self.end(call_id, outcome=outcome, sip_status=status, reason=reason))

    # ------------------------------------------------------------------ helpers

    def _call(self, call_id: str) -> CallInfo:
        try:
            return self.calls[call_id]
        except KeyError:
            raise UnknownCall(call_id) from None

    def _answered(self, call_id: str) -> None:
        self._maybe_fail()
        if self._call(call_id).state != "answered":
            raise ControlError("the call is not answered", field="call_id", status=409)

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with


def _mask(number: str) -> str:
    return number if len(number) <= 4 else "*" * (len(number) - 4) + number[-4:]
