"""The conversation engine's inputs and moves beyond speech: tool results, failed transfers, the
caller's keys, and the replies they start (a follow-up from a tool's result, a typed entry).

A part of :class:`~sipagent.voice.conversation.engine.Conversation` (it inherits this class), kept
apart so the engine stays readable; the rules are in :mod:`.actions` and :mod:`.keypad`.
"""

from __future__ import annotations

from collections import deque

from ..jobs import Generate
from ..llm import Turn
from .actions import ToolDesk, quoted
from .commands import Command, TransferCall
from .config import ConversationConfig
from .keypad import KeyAction, KeyEntry, Keypad
from .record import TurnRecord
from .reply import Reply


class Acting:
    """Inputs and moves beyond speech (see the module docstring)."""

    # The engine's state these methods use (set by Conversation.__init__).
    config: ConversationConfig
    key: int
    history: list[Turn]
    closed: bool
    tools: ToolDesk
    keypad: Keypad
    _now: float
    _out: list[Command]
    _speaking: Reply | None
    _waiting: deque[Reply]

    # The engine's own moves.
    def _say(self, text: str, now: float, hang_up_after: str | None) -> Reply:
        raise NotImplementedError

    def _take(self) -> list[Command]:
        raise NotImplementedError

    def _interrupt(self, reply: Reply) -> None:
        raise NotImplementedError

    def _enter_history(self, reply: Reply) -> None:
        raise NotImplementedError

    def _new_job(self, reply: Reply, now: float) -> int:
        raise NotImplementedError

    # -- inputs ----------------------------------------------------------------------------------
    def on_tool_result(self, call_id: str, content: str, now: float) -> list[Command]:
        """A :class:`RunTool`'s result (or its error, as text for the model); once a reply's last
        result is in, the agent speaks from it."""
        if not self.closed:
            self._now = now
            reply = self.tools.result(call_id, content, self.history)
            if reply is not None:
                self._follow_up(now)
        return self._take()

    def on_transfer_failed(self, reason: str, now: float) -> list[Command]:
        """A :class:`TransferCall` did not happen (refused, failed, no answer): the caller is told
        and the call goes on."""
        if not self.closed:
            self._now = now
            self.history.append(Turn("user", f"(The transfer did not happen: {reason}.)"))
            self._say(self.config.transfer_failed, now, None)
        return self._take()

    def on_dtmf(self, key: str, now: float) -> list[Command]:
        """A key the caller pressed (RFC 4733): a menu action, or part of an entry for the model."""
        if not self.closed:
            self._now = now
            self._keyed(self.keypad.press(key, now), now)
        return self._take()

    # -- moves -----------------------------------------------------------------------------------
    def _keyed(self, got: KeyAction | KeyEntry | None, now: float) -> None:
        if isinstance(got, KeyAction):
            kind, _, detail = got.action.partition(":")
            if kind == "end_call":
                self._say(self.config.goodbye, now, f"caller pressed {got.key}: end the call")
            elif kind == "transfer":
                self._out.append(TransferCall(detail))
            elif kind == "say":
                self._say(detail, now, None)
        elif isinstance(got, KeyEntry):  # the caller's turn, typed: it moves the conversation on
            reply = Reply(TurnRecord(turn=0), self.config, now=now)
            reply.transcript = reply.record.transcript = got.as_turn()
            reply.fire("transcribed")
            if self._speaking is not None:
                self._interrupt(self._speaking)
            self._start_generating(reply, now)

    def _follow_up(self, now: float) -> None:
        """The agent speaks from tool results now in the history (unless the caller moved on)."""
        if self.history and self.history[-1].role == "tool":
            reply = Reply(TurnRecord(turn=0, scripted=True), self.config, now=now)
            reply.in_history = True
            reply.fire("transcribed")
            self._start_generating(reply, now)

    def _start_generating(self, reply: Reply, now: float) -> None:
        reply.committed = True
        if self._speaking is None:
            self._speaking = reply
        else:
            self._waiting.append(reply)
        self._enter_history(reply)
        job = reply.llm_job = self._new_job(reply, now)
        reply.llm_started = now
        self._out.append(self._generate(job, tuple(self.history)))

    def _generate(self, job: int, turns: tuple[Turn, ...]) -> Generate:
        """With tools the caller's words go to the model quoted, as data (``actions.py``)."""
        tools = self.config.tools
        return Generate(
            job, self.key, self.config.system_prompt, quoted(list(turns)) if tools else turns, tools
        )


__all__ = ["Acting"]
