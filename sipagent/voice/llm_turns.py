"""The vocabulary of a call's conversation with the language model: turns, tools and tool calls.

Plain frozen data (picklable: jobs carry it to the inference process), with no behaviour, so the
sessions (:mod:`.llm`), the backends and their helpers (:mod:`.llm_tools`) all build on it without
leaning on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant", "tool"]
#: ``tool_choice`` as in OpenAI's API: "auto" (the model decides), "required" (some tool), or a name.
ToolChoice = str


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it is for, and its arguments as a JSON Schema
    (an ``object`` schema, as JSON text: frozen, picklable, sent as it is)."""

    name: str
    description: str
    parameters: str = '{"type": "object", "properties": {}}'


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool by the model: ``arguments`` is the JSON text it produced (checked against
    the tool's schema by whoever runs it, never trusted)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Turn:
    """One utterance in a call's history: the caller's words, the agent's (with the tools it called
    after them), or a tool's result (``role = "tool"``, answering ``tool_call_id``)."""

    role: Role
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


#: What a reply with tools streams: pieces of speech, and each tool call once it is complete.
ReplyPart = str | ToolCall


__all__ = ["ReplyPart", "Role", "ToolCall", "ToolChoice", "ToolSpec", "Turn"]
