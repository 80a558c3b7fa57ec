"""asyncio adapter for one call's conversation: the engine's commands carried out, nothing decided.

::

    media tick ─► Frame ─► Conversation.on_frame ─┐
    model result (on the loop) ─► on_result ──────┼─► commands ─► jobs to the inference service
    timer at next_deadline() ─► handle_timer ─────┘               PlayFrames / FlushOutput to the pacer
                                                                  EndCall ─► hang up; TurnFinished ─► log

Everything runs on the event loop: the tick callback, the inference service's deliveries (it wakes
the loop with each result, :mod:`sipagent.voice.inference.service`), and one timer. The runner
owns no task and no thread, so a call that ends leaves nothing running: closing it cancels its jobs
and frees what the models kept for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from ..rtp.frames import AudioFrame, Pcm
from ..rtp.session import Tick
from ..voice.conversation import (
    CancelJob,
    Command,
    Conversation,
    EndCall,
    FlushOutput,
    Frame,
    PlayFrames,
    RunTool,
    SendDigits,
    TransferCall,
    TurnFinished,
    TurnRecord,
)
from ..voice.inference import InferenceService, Ticket
from ..voice.jobs import JobResult, TextPiece

log = logging.getLogger("sipagent.agent")

#: Conversation keys, unique in this process (the models keep per-call state under them).
_keys = itertools.count(1)


def new_conversation_key() -> int:
    """A key no other call of this process has."""
    return next(_keys)


class MediaOut(Protocol):
    """What the runner needs of the call's media engine (:class:`~sipagent.rtp.session.RtpSession`)."""

    def send_frames(self, frames: list[Pcm]) -> None: ...
    def flush_output(self) -> int: ...
    def newest_inbound(self) -> AudioFrame | None: ...
    @property
    def queued_output(self) -> int: ...


class ConversationRunner:
    """Runs one call's :class:`~sipagent.voice.conversation.Conversation` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        conversation: Conversation,
        media: MediaOut,
        inference: InferenceService,
        *,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_end_call: Callable[[str], None] | None = None,
        on_action: Callable[[RunTool | TransferCall | SendDigits], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` is the time base of the media's ticks (default: the loop's, as the media
        transport's are); results and timers are stamped with it."""
        self.name = name
        self.conversation = conversation
        self.media = media
        self.inference = inference
        self.on_turn = on_turn
        self.on_end_call = on_end_call
        #: Carries out what the agent does beyond speaking (the call's product layer); without it
        #: such commands are logged and dropped.
        self.on_action = on_action
        self.loop = asyncio.get_running_loop()
        self.clock = clock or self.loop.time
        self._tickets: dict[int, Ticket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = False

    # -- inputs ----------------------------------------------------------------------------------
    def start(self) -> None:
        """The call was answered: the greeting, if any."""
        self._execute(self.conversation.start(self.clock()))

    def say(self, text: str, *, hang_up_after: str | None = None, interrupt: bool = False) -> None:
        """Speak ``text`` into the call: after what the agent is saying now, or cutting it short."""
        self._execute(
            self.conversation.say(text, self.clock(), hang_up_after=hang_up_after, interrupt=interrupt)
        )

    def tool_result(self, call_id: str, content: str) -> None:
        """A :class:`RunTool`'s result (or its error as text)."""
        if not self.closed:
            self._execute(self.conversation.on_tool_result(call_id, content, self.clock()))

    def transfer_failed(self, reason: str) -> None:
        """A :class:`TransferCall` did not happen."""
        if not self.closed:
            self._execute(self.conversation.on_transfer_failed(reason, self.clock()))

    def dtmf(self, key: str) -> None:
        """A key the caller pressed."""
        if not self.closed:
            self._execute(self.conversation.on_dtmf(key, self.clock()))

    def on_tick(self, tick: Tick) -> None:
        """One 20 ms tick of the call (the media transport's callback)."""
        if self.closed:
            return
        media = self.media
        newest = media.newest_inbound() if self.conversation.watching_arrivals else None
        frame = Frame(tick.inbound, tick.outbound, media.queued_output, newest)
        self._execute(self.conversation.on_frame(frame, tick.time))

    def _deliver(self, result: JobResult) -> None:
        if self.closed:
            return
        if not isinstance(result, TextPiece):
            self._tickets.pop(result.job, None)
        self._execute(self.conversation.on_result(result, self.clock()))

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if not self.closed:
            self._execute(self.conversation.handle_timer(self.clock()))

    # -- commands --------------------------------------------------------------------------------
    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, PlayFrames):
                self.media.send_frames(list(command.frames))
            elif isinstance(command, FlushOutput):
                self.media.flush_output()
            elif isinstance(command, CancelJob):
                ticket = self._tickets.pop(command.job, None)
                if ticket is not None:
                    ticket.cancel()
            elif isinstance(command, TurnFinished):
                self._report(command.record)
            elif isinstance(command, EndCall):
                log.info("call %s: the agent ends the call (%s)", self.name, command.reason)
                if self.on_end_call is not None:
                    self.on_end_call(command.reason)
            elif isinstance(command, RunTool | TransferCall | SendDigits):
                if self.on_action is not None:
                    self.on_action(command)
                else:
                    log.warning("call %s: nothing carries out %s", self.name, command)
            else:  # a model job
                self._tickets[command.job] = self.inference.submit(command, self._deliver)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = None if self.closed else self.conversation.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = (
            None if deadline is None else self.loop.call_later(deadline - self.clock(), self._on_timer)
        )

    def _report(self, record: TurnRecord) -> None:
        if record.error is not None:
            log.error("call %s turn %d: %s: %s", self.name, record.turn, record.outcome.value, record.error)
        log.info("call %s turn %d: %s", self.name, record.turn, record.as_dict())
        if not record.scripted:
            latency = "-" if record.latency_ms is None else f"{record.latency_ms:.0f}"
            log.info(
                "call %s turn %d latency: %s ms from the end of the caller's speech to our first voice%s",
                self.name,
                record.turn,
                latency,
                " (interrupted)" if record.interrupted else "",
            )
        if self.on_turn is not None:
            self.on_turn(record)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Model jobs of this call are out."""
        return bool(self._tickets)

    def close(self) -> None:
        """The call ended: cancel its jobs, free what the models kept for it (nothing to wait for)."""
        if self.closed:
            return
        self._execute(self.conversation.close(self.clock()))
        self.closed = True
        self._arm_timer()
        for ticket in self._tickets.values():
            ticket.cancel()
        self._tickets.clear()
        self.inference.release(self.conversation.key)


__all__ = ["ConversationRunner", "MediaOut", "new_conversation_key"]
