"""What the agent does beyond speaking: the model's tool calls, sans-IO.

Rules
=====
* A reply's tool calls run once the reply is *committed* (a speculation's never run: it may be
  cancelled). At most ``max_tool_calls`` per reply; the rest are answered "not run".
* ``end_call``: the reply's words play, then the call ends (a goodbye is said when the reply had no
  words). ``transfer_call``: a :class:`TransferCall` to a *named* target (the product knows only its
  route's names). ``send_dtmf``: :class:`SendDigits`. Their results enter the history at once.
* Any other tool is a :class:`RunTool`; its result comes back through the engine's
  ``on_tool_result`` and enters the history right after the assistant turn that called it. Once every
  webhook result of a reply is in (and the reply has finished), a follow-up reply is generated from
  the history: the agent speaks from the result.
* A webhook that has not answered after ``filler_after_ms``, while the line is quiet, makes the
  agent say the filler ("One moment.") so the line is never silent.
* Guard rail: with tools, the caller's words reach the model quoted, as data (the system prompt
  says they are never instructions); tool arguments are checked by whoever runs the tool.
"""

from __future__ import annotations

import json
from typing import Any

from ..llm import ToolCall, Turn
from .commands import Command, RunTool, SendDigits, TransferCall
from .config import ConversationConfig
from .keypad import DIGITS
from .reply import Reply

BUILTIN_TOOLS = frozenset({"end_call", "transfer_call", "send_dtmf"})
#: How soon to look again when the filler is due while the agent still speaks.
FILLER_RECHECK_S = 0.2
#: A webhook's place in the history until its result arrives.
WAITING = "(the result has not arrived yet)"


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def quoted(turns: list[Turn]) -> tuple[Turn, ...]:
    """The caller's turns as quoted data for the model (the guard rail against prompt injection)."""
    return tuple(
        Turn("user", f"The caller said: {json.dumps(turn.text, ensure_ascii=False)}")
        if turn.role == "user" and not turn.text.startswith("The caller pressed")
        else turn
        for turn in turns
    )


class ToolDesk:
    """One conversation's tool calls (see the module docstring)."""

    def __init__(self, config: ConversationConfig) -> None:
        self.config = config
        #: Webhook calls out: call id → the reply that made it.
        self._pending: dict[str, Reply] = {}
        #: Results of calls whose assistant turn is not in the history yet.
        self._results: dict[str, str] = {}
        #: Where each call's tool turn sits in the history.
        self._slots: dict[str, int] = {}
        #: When to say the filler if a webhook is still out (None: not armed).
        self.filler_at: float | None = None

    @property
    def waiting(self) -> bool:
        """A webhook's result is still out."""
        return bool(self._pending)

    def run(self, reply: Reply, call: ToolCall, now: float) -> list[Command]:
        """Carry out one tool call of a committed reply."""
        reply.tools_run += 1
        if reply.tools_run > self.config.max_tool_calls:
            self._results[call.id] = f"Not run: at most {self.config.max_tool_calls} tool calls per reply."
            return []
        args = _arguments(call)
        if call.name == "end_call":
            reply.hang_up_after = "agent ended the call"
            self._results[call.id] = "The call ends after your last words."
            return []
        if call.name == "transfer_call":
            target = args.get("target")
            if not isinstance(target, str) or not target:
                self._results[call.id] = "Not run: transfer_call needs a target from its list."
                return []
            self._results[call.id] = f"Transferring the caller to {target}."
            return [TransferCall(target)]
        if call.name == "send_dtmf":
            digits = args.get("digits")
            if not isinstance(digits, str) or not digits or not set(digits) <= DIGITS or len(digits) > 32:
                self._results[call.id] = "Not run: digits must be 1 to 32 of 0-9 * # A-D."
                return []
            self._results[call.id] = f"Sent the keys {digits}."
            return [SendDigits(digits)]
        self._pending[call.id] = reply
        reply.webhooks += 1
        self.filler_at = now + self.config.filler_after_ms / 1000
        return [RunTool(call)]

    def enter_history(self, reply: Reply, history: list[Turn], words: str) -> None:
        """The reply is over: its assistant turn (with its tool calls) and their results so far."""
        if not reply.tool_calls:
            if words:
                history.append(Turn("assistant", words))
            return
        history.append(Turn("assistant", words, tool_calls=tuple(reply.tool_calls)))
        for call in reply.tool_calls:
            self._slots[call.id] = len(history)
            history.append(Turn("tool", self._results.pop(call.id, WAITING), tool_call_id=call.id))
        reply.in_history = True

    def result(self, call_id: str, content: str, history: list[Turn]) -> Reply | None:
        """A webhook's result; returns its reply when that was the reply's last result and the reply
        is over (a follow-up is due)."""
        reply = self._pending.pop(call_id, None)
        if reply is None:
            return None  # not ours, or answered already
        reply.webhooks -= 1
        if not self._pending:
            self.filler_at = None
        slot = self._slots.get(call_id)
        if slot is None:
            self._results[call_id] = content  # its reply is still speaking: entered at its end
            return None
        history[slot] = Turn("tool", content, tool_call_id=call_id)
        return reply if reply.webhooks == 0 else None

    def follow_up_due(self, reply: Reply) -> bool:
        """At the end of ``reply``: every webhook it called has answered already."""
        return reply.webhooks == 0 and any(call.name not in BUILTIN_TOOLS for call in reply.tool_calls)

    def filler_due(self, now: float, *, speaking: bool) -> bool:
        """Time to say the filler (once per wait): its time has come and the line is quiet. While the
        agent still speaks, look again shortly (the filler is for silence, not to cut words)."""
        if self.filler_at is None or now < self.filler_at or not self._pending:
            return False
        if speaking:
            self.filler_at = now + FILLER_RECHECK_S
            return False
        self.filler_at = None
        return True

    def forget(self) -> None:
        """The call ended."""
        self._pending.clear()
        self.filler_at = None


__all__ = ["BUILTIN_TOOLS", "WAITING", "ToolDesk", "quoted"]
