"""The phone service: the product's rules around every call, and the :class:`CallControl` the API
drives.

Data flow::

    INVITE in ─► server: trunk.allow_from ─► admit_incoming: policy (403) ─► limits (503, 486)
                 ─► route by dialled number ─► ring, answer ─► ACK ─► answered(): the conversation
                 starts (disclosure, greeting) ─► turns, DTMF ─► the book (events) ─► BYE ─► ended()
    place_call ─► target and caller ID checked ─► limits ─► telephony.dial (INVITE out) ─► ringing
                 ─► 200 OK ─► answered(): notify says its message and hangs up; conversation runs the
                 agent on the task ─► ended(): outcome (answered, busy, no-answer, rejected, failed)

Each call's plan (what it does once answered; an outbound request's every field checked) is made
by :mod:`~sipagent.product.plans`. It owns no sockets: the server (:class:`Telephony`) places and
ends calls and reports what SIP said; timers (ring timeout, maximum duration) run on the loop the
server runs on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..call import Call
from ..voice.amd import AmdAction, AmdEvent, AmdResult
from ..voice.beep import Beep
from ..voice.conversation import RunTool, SendDigits, TransferCall, TurnRecord
from .calls import CallBook
from .control import (
    DTMF_CHARACTERS,
    MAX_SPEAK_CHARS,
    CallEvent,
    CallInfo,
    CallLimitReached,
    CallOutcome,
    ControlError,
    PlaceCall,
)
from .limits import CallAdmission
from .memory import CallerMemory, recall_for_call, with_memory
from .numbers import mask
from .plans import CallPlan, Planner
from .policy import InboundPolicy
from .ports import Admitted, Dial, Telephony
from .recordings import RecordingPolicy, create_recording_file
from .routes import Route, RouteTable
from .store import CallStore, StoreError
from .tools import RouteTools
from .webhooks import WebhookRunner, masked_arguments

log = logging.getLogger("sipagent.calls")

#: After the goodbye at max_call_duration, the BYE follows at the latest this much later (s).
GOODBYE_GRACE_S = 15.0


class PhoneService:
    """Policy, routes, limits, outbound jobs and the call book (see the module docstring)."""

    def __init__(
        self,
        telephony: Telephony,
        *,
        policy: InboundPolicy,
        routes: RouteTable,
        admission: CallAdmission,
        default_country: str,
        outbound_disclosure: str | None,
        outbound_route: Route,
        goodbye: str,
        book: CallBook | None = None,
        tools: dict[str, RouteTools] | None = None,
        webhooks: WebhookRunner | None = None,
        recordings: RecordingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.telephony = telephony
        self.policy = policy
        self.routes = routes
        self.admission = admission
        self.book = book or CallBook()
        self.planner = Planner(
            telephony, limits=admission.config, default_country=default_country,
            outbound_disclosure=outbound_disclosure, outbound_route=outbound_route, tools=tools or {},
        )  # fmt: skip
        self._goodbye = goodbye
        self._clock = clock
        self._plans: dict[str, CallPlan] = {}
        self._pending = 0
        self.webhooks = webhooks or WebhookRunner()
        self._tasks: set[asyncio.Task[None]] = set()
        self._store: CallStore | None = None
        #: Callers' earlier calls, in the store's file (set with the store).
        self.memory: CallerMemory | None = None
        #: Which calls are recorded and where (None: none is).
        self.recordings = recordings

    @property
    def store(self) -> CallStore | None:
        """The call store (set by the server when [store] is on)."""
        return self._store

    @store.setter
    def store(self, store: CallStore | None) -> None:
        # The callers' memory reads the file's secret now, where the store is opened (start-up), so
        # no call's start waits for the disk.
        self._store, self.memory = store, None
        if store is not None:
            try:
                self.memory = CallerMemory(store.path)
            except StoreError as exc:
                log.warning("%s: calls are stored without caller keys, no route remembers callers", exc)

    # -- inbound ---------------------------------------------------------------------------------
    def admit_incoming(self, call_id: str, *, caller: str, dialled: str | None, source_host: str) -> Admitted:
        """Policy, then limits, then the route: before any port or model work is spent on the call."""
        decision = self.policy.decide(caller, source_host)
        if not decision.allowed:
            log.warning("refusing call %s: %s", call_id, decision.reason)
            return Admitted(status=decision.status)
        # The rate is per caller: its number, else its URI (never the source address, which a
        # trunk shares between all its callers).
        key = decision.number or caller
        admission = self.admission.admit_inbound(call_id, key, self._clock())
        if not admission.admitted:
            log.warning("refusing call %s: %s", call_id, admission.reason)
            headers = () if admission.retry_after is None else (("Retry-After", str(admission.retry_after)),)
            return Admitted(status=admission.status, headers=headers)
        route = self.routes.match(dialled)
        self._plans[call_id] = self.planner.inbound(route, record=self._records(route))
        number = decision.number or caller
        self.book.started(call_id, direction="inbound", caller=number, callee=dialled or "", route=route.name,
                          mode="conversation")  # fmt: skip
        self._remember(call_id, decision.number, route)
        log.info("incoming call %s from %s to %s: route %s", call_id, mask(number), mask(dialled or ""),
                 route.name)  # fmt: skip
        return Admitted(route=route)

    def not_answered(self, call_id: str, reason: str) -> None:
        """An admitted incoming call could not be answered (no port, a bad offer, CANCEL)."""
        self.ended(call_id, status=None, reason=reason, by_remote=False)

    # -- outbound --------------------------------------------------------------------------------
    async def place_call(self, request: PlaceCall) -> CallInfo:
        dial, plan, callee = self.planner.outbound(request)
        limit = self.admission.config.max_calls
        pending = f"pending-{self._pending}"
        self._pending += 1
        if not self.admission.admit_outbound(pending, self._clock()).admitted:
            raise CallLimitReached(limit)
        try:
            call_id = await self.telephony.dial(dial)
        except ControlError:
            raise
        finally:
            self.admission.release(pending)
        self.admission.admit_outbound(call_id, self._clock())  # counted from now on, whatever the limit
        plan.amd = request.amd
        plan.record = self._records(self.planner.outbound_route)
        self._plans[call_id] = plan
        caller = dial.from_uri.user if dial.from_uri is not None and dial.from_uri.user else "sipagent"
        info = self.book.started(call_id, direction="outbound", caller=caller, callee=callee,
                                 route=self.planner.outbound_route.name, mode=request.mode)  # fmt: skip
        self._remember(call_id, callee, self.planner.outbound_route)  # the "caller" is the number called
        log.info("calling %s (call %s, %s)", mask(callee), call_id, request.mode)
        if plan.ring_timeout is not None:
            self._after(call_id, plan.ring_timeout, self._ring_timeout)
        return info

    # -- what SIP reports ------------------------------------------------------------------------
    def ringing(self, call_id: str, status: int) -> None:
        self.book.ringing(call_id, status)

    def answered(self, call_id: str) -> None:
        """Our 200 OK was acknowledged (inbound) or the callee's 200 OK came (outbound): only now does
        the agent speak (never on early media)."""
        plan = self._plans.get(call_id)
        call = self.telephony.call(call_id)
        if plan is None or call is None or plan.answered:
            return
        plan.answered = True
        for timer in plan.timers:
            timer.cancel()  # the ring timeout
        plan.timers.clear()
        self.book.answered(call_id)
        if plan.record:  # before the agent's first word: the recording holds the whole call
            self._record(call_id, call)
        call.on_turn = lambda record: self._turn(call_id, record)
        call.on_dtmf = lambda digit: self.book.dtmf(call_id, digit)
        call.on_action = lambda command: self._act(call_id, command)
        self._after(call_id, plan.max_duration, self._time_up)
        if plan.amd is not None:  # the agent stays silent until the detector has decided
            call.start_amd(plan.amd, lambda event: self._amd_event(call_id, event))
        else:
            self._begin(call_id, call, plan)

    def _begin(self, call_id: str, call: Call, plan: CallPlan) -> None:
        """The agent starts: its conversation (with the caller's memory on a per-caller route), and
        what the call says first."""
        if plan.memory is not None and not plan.memory.done():
            # Read since the admission and bounded by its timeout: the agent waits for it.
            task = asyncio.get_running_loop().create_task(self._begin_remembering(call_id, plan))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        conversation = plan.conversation
        if plan.memory is not None and conversation is not None and not plan.memory.cancelled():
            conversation = with_memory(conversation, plan.memory.result())
        call.start_agent(conversation)
        for i, text in enumerate(plan.says):
            last = i == len(plan.says) - 1
            call.say(text, hang_up_after=plan.hang_up_after if last else None)

    async def _begin_remembering(self, call_id: str, plan: CallPlan) -> None:
        assert plan.memory is not None
        await asyncio.wait({plan.memory})  # recall_for_call never raises; its timeout bounds this
        call = self.telephony.call(call_id)
        if self._plans.get(call_id) is plan and call is not None:
            self._begin(call_id, call, plan)

    def _remember(self, call_id: str, number: str | None, route: Route) -> None:
        """Mark the call with its caller's key (memory.py: a keyed hash, never the number) and, on a
        per-caller route, start reading the caller's earlier calls, off the loop."""
        plan, memory, store = self._plans.get(call_id), self.memory, self._store
        key = None if memory is None else memory.key(number)
        if plan is None or memory is None or store is None or key is None:
            return  # no store, or a caller with no number: nothing to remember by
        store.caller_key(call_id, key)
        if route.memory == "per-caller" and plan.mode == "conversation" and plan.conversation is not None:
            recall = recall_for_call(memory, key, route, call_id=call_id)
            plan.memory = asyncio.get_running_loop().create_task(recall)

    def _amd_event(self, call_id: str, event: AmdEvent) -> None:
        """What answering-machine detection found, and what the call does about it."""
        plan = self._plans.get(call_id)
        call = self.telephony.call(call_id)
        if plan is None or call is None:
            return
        if isinstance(event, AmdResult):
            log.info("call %s: answered by a %s (%s, after %.0f ms)", call_id, event.kind, event.reason,
                     event.after_ms)  # fmt: skip
            self.book.note(call_id, "amd", result=event.kind, after_ms=event.after_ms, reason=event.reason)
        elif isinstance(event, Beep):
            self.book.note(call_id, "beep", at_ms=event.at_ms, freq_hz=round(event.freq_hz))
        elif isinstance(event, AmdAction):
            if event.action == "hang_up":
                plan.end_reason = f"answering machine ({event.reason})"
                self.telephony.hang_up(call_id)
            else:
                self._begin(call_id, call, plan)

    def closing(self, call_id: str, reason: str) -> None:
        """We are ending the call for ``reason`` (the agent's EndCall reason, media-timeout…)."""
        plan = self._plans.get(call_id)
        if plan is not None:
            plan.end_reason = _REASONS.get(reason, reason)

    def ended(self, call_id: str, *, status: int | None, reason: str, by_remote: bool) -> None:
        """The call is over, however it ended (``status``: the INVITE's final error, if it failed)."""
        plan = self._plans.pop(call_id, None)
        self.admission.release(call_id)
        if plan is None:
            return
        for timer in plan.timers:
            timer.cancel()
        if plan.memory is not None:
            plan.memory.cancel()  # a read still under way is no longer wanted
        info = self.book.get(call_id) if call_id in {c.id for c in self.book.list()} else None
        answered = info is not None and info.answered_at is not None
        if status is None and reason.startswith("rejected-") and reason[9:].isdigit():
            status = int(reason[9:])  # we refused it ourselves (a 488 offer, a 503 without ports)
        outcome = "answered" if answered else _outcome(status, plan.end_reason or reason)
        if answered:
            who = "caller" if plan.direction == "inbound" else "callee"
            why = f"{who} hung up" if by_remote else (plan.end_reason or reason)
        else:
            why = plan.end_reason or reason
        self.book.ended(call_id, reason=why, sip_status=status, outcome=outcome)
        log.info("call %s ended: %s (%s)", call_id, why, outcome)

    # -- CallControl -----------------------------------------------------------------------------
    def list_calls(self) -> list[CallInfo]:
        return self.book.list()

    def get_call(self, call_id: str) -> CallInfo:
        return self.book.get(call_id)

    def speak(self, call_id: str, text: str, *, interrupt: bool = False) -> None:
        call = self._live_call(call_id)
        if not text.strip():
            raise ControlError("nothing to say", field="text")
        if len(text) > MAX_SPEAK_CHARS:
            raise ControlError(f"longer than {MAX_SPEAK_CHARS} characters", field="text")
        if not call.say(text, interrupt=interrupt):
            raise ControlError("the call has no agent to speak (not answered yet, or echo mode)", status=409)

    def send_dtmf(self, call_id: str, digits: str) -> None:
        call = self._live_call(call_id)
        bad = sorted(set(digits) - DTMF_CHARACTERS)
        if not digits or bad:
            raise ControlError(f"only 0-9 * # A-D (got {''.join(bad) or 'nothing'})", field="digits")
        if not call.send_dtmf(digits):
            raise ControlError("the call has no telephone-event (RFC 4733) stream", status=409)

    def hang_up(self, call_id: str) -> None:
        self._live_call(call_id, answered=False)
        plan = self._plans.get(call_id)
        if plan is not None:
            plan.end_reason = "hung up by the API"
        self.telephony.hang_up(call_id)

    def subscribe(self, call_id: str | None = None) -> AsyncIterator[CallEvent]:
        return self.book.subscribe(call_id)

    # -- what the agent does beyond speaking ------------------------------------------------------
    def _act(self, call_id: str, command: RunTool | TransferCall | SendDigits) -> None:
        """Carry out a tool call or menu key of the call's conversation."""
        plan = self._plans.get(call_id)
        call = self.telephony.call(call_id)
        if plan is None or call is None:
            return
        if isinstance(command, SendDigits):
            sent = call.send_dtmf(command.digits)
            self.book.note(call_id, "tool_call", name="send_dtmf", ok=sent, digits=command.digits)
        elif isinstance(command, TransferCall):
            target = plan.tools.transfer_targets.get(command.target)
            self.book.note(call_id, "transfer", target=command.target, state="requested")
            try:
                if target is None:
                    raise ControlError(f"{command.target!r} is not one of this route's transfer targets")
                self.telephony.transfer(call_id, target)
            except ControlError as exc:
                log.warning("call %s: transfer to %s not asked: %s", call_id, command.target, exc)
                self.transfer_failed(call_id, 0, str(exc))
            else:
                plan.end_reason = f"transferred to {command.target}"
        else:
            task = asyncio.get_running_loop().create_task(self._run_tool(call_id, plan, command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_tool(self, call_id: str, plan: CallPlan, command: RunTool) -> None:
        outcome = await self.webhooks.run_call(plan.tools, command.call, call_id=call_id)
        try:
            arguments = masked_arguments(json.loads(command.call.arguments or "{}"))
        except json.JSONDecodeError:
            arguments = "(not JSON)"
        self.book.note(call_id, "tool_call", name=command.call.name, arguments=arguments, ok=outcome.ok,
                       status=outcome.status, duration_ms=round(outcome.duration_ms, 1), error=outcome.error,
                       result=outcome.content[:500])  # fmt: skip
        call = self.telephony.call(call_id)
        if call is not None:
            call.tool_result(command.call.id, outcome.content)

    def transfer_succeeded(self, call_id: str) -> None:
        """The transfer target answered: our part of the call is over (BYE)."""
        self.book.note(call_id, "transfer", state="succeeded")
        self.telephony.hang_up(call_id)

    def transfer_failed(self, call_id: str, status: int, reason: str) -> None:
        """The transfer did not happen: the caller is told and the call goes on."""
        plan = self._plans.get(call_id)
        if plan is not None:
            plan.end_reason = None
        self.book.note(call_id, "transfer", state="failed", sip_status=status or None, reason=reason)
        call = self.telephony.call(call_id)
        if call is not None:
            call.transfer_failed(reason if not status else f"{status} {reason}")

    # -- inside ----------------------------------------------------------------------------------
    def _live_call(self, call_id: str, *, answered: bool = True) -> Call:
        info = self.book.get(call_id)
        call = self.telephony.call(call_id)
        if info.state == "ended" or call is None:
            raise ControlError(f"call {call_id!r} has ended", field="call_id", status=409)
        if answered and info.state != "answered":
            raise ControlError(f"call {call_id!r} is not answered yet", field="call_id", status=409)
        return call

    def _records(self, route: Route) -> bool:
        return self.recordings is not None and self.recordings.records(route.record)

    def _record(self, call_id: str, call: Call) -> None:
        """Start the call's recording and link it from the call's record (the book: the API and the
        end-of-call report; the store). A file that cannot be made costs the recording, not the call."""
        assert self.recordings is not None
        made: Path | None = None
        try:
            made = create_recording_file(self.recordings.directory, call_id)
            path = call.start_recording(made)
        except OSError as exc:
            log.warning("call %s: not recorded: %s", call_id, exc)
            path = None
        if path is None:
            if made is not None:
                made.unlink(missing_ok=True)
            return
        log.info("call %s: recording to %s", call_id, path)
        self.book.recording(call_id, str(path))
        if self.store is not None:
            self.store.recording(call_id, str(path))

    def _turn(self, call_id: str, record: TurnRecord) -> None:
        self.book.turn(call_id, record)
        if self.store is not None:
            self.store.turn(call_id, record)  # queued: committed as it completes, off the loop

    def _after(self, call_id: str, delay: float, action: Callable[[str], None]) -> None:
        plan = self._plans.get(call_id)
        if plan is not None:
            plan.timers.append(asyncio.get_running_loop().call_later(delay, action, call_id))

    def _ring_timeout(self, call_id: str) -> None:
        plan = self._plans.get(call_id)
        if plan is not None:
            plan.end_reason = "no answer"
            log.info("call %s: no answer in %g s, cancelling", call_id, plan.ring_timeout or 0)
            self.telephony.hang_up(call_id)

    def _time_up(self, call_id: str) -> None:
        plan = self._plans.get(call_id)
        call = self.telephony.call(call_id)
        if plan is None:
            return
        plan.end_reason = "max duration"
        log.info("call %s: maximum duration (%g s) reached", call_id, plan.max_duration)
        if call is not None and call.say(self._goodbye, interrupt=True, hang_up_after="max duration"):
            self._after(call_id, GOODBYE_GRACE_S, self.telephony.hang_up)
        else:
            self.telephony.hang_up(call_id)


#: Why the server hangs up, as a call's end reason says it.
_REASONS = {"media-timeout": "media stopped"}


def _outcome(status: int | None, end_reason: str | None) -> CallOutcome:
    """How an unanswered call turned out, from the INVITE's final status."""
    if end_reason in ("no answer", "cancelled") or status in (408, 480, 487):
        return "no-answer"
    if status in (486, 600):
        return "busy"
    if (status is not None and 400 <= status < 500) or status in (603, 604, 606):
        return "rejected"
    return "failed"


__all__ = ["Admitted", "Dial", "PhoneService", "Telephony"]
