"""The agent's language model: one loaded model per process, one :class:`ChatSession` per call.

A :class:`ChatModel` (``LlamaCppChat`` in-process, :mod:`.llm_llama`; ``OpenAIChat`` against a
server, :mod:`.llm_openai`; a fake in ``tests/fakes.py``) hands out sessions. A session keeps the
call's history (:class:`Turn`: the caller's words, the agent's with the tools it called, the tools'
results) and streams each reply in pieces, checking a ``threading.Event`` between tokens (barge-in);
:meth:`ChatSession.record_spoken` then cuts the assistant turn to what the caller heard.

Tools (decision 0021). :meth:`ChatSession.stream_with_tools` streams a reply that may also call the
tools offered: pieces of speech (``str``) and, separately, each complete :class:`ToolCall`, never
any call syntax among the speech. The caller of a tool adds its result with
:meth:`ChatSession.add_tool_result` and asks for the next reply. :mod:`.llm_tools` has the parts the
backends share.

KV cache per call (llama.cpp; docs/decisions/0006). One model serves every call under a lock. A
call's rendered history only grows, so ``Llama.generate``'s prefix match skips what the cache holds
and a turn evaluates only the caller's new words. When another call takes the model, the owner's KV
cells are copied out (``llama_state_seq_get_data``; ``Llama.save_state()`` would also copy a 100 MB
score buffer) and back in when it next speaks. The default system prompt is evaluated at load.

The chat template is the GGUF's ``tokenizer.chat_template``, else ``chat_format``: never
llama-cpp-python's silent fallback to Llama-2's format, in which a model answers nonsense.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..config import DEFAULT_SYSTEM_PROMPT
from ..errors import SipAgentError
from .llm_tools import openai_messages
from .llm_turns import ReplyPart, Role, ToolCall, ToolChoice, ToolSpec, Turn

if TYPE_CHECKING:
    pass

_Part = TypeVar("_Part", str, "str | ToolCall")


@dataclass(frozen=True)
class TurnStats:
    """What one reply cost. Token counts are ``None`` where the backend cannot know them (a server)."""

    prompt_tokens: int | None  # the rendered prompt, system prompt and history included
    cached_tokens: int | None  # prompt tokens found in the KV cache
    evaluated_tokens: int | None  # prompt tokens evaluated for this turn (llama.cpp's own counters)
    generated_tokens: int
    first_token_s: float | None  # request to first text piece; None if nothing was generated
    total_s: float
    cancelled: bool
    restored: bool = False  # the call's KV cells were copied back in (another call had the model)


class LlmError(SipAgentError):
    """The language model cannot answer (bad template, server error, misuse of a session)."""


class ChatTemplateError(LlmError):
    """No usable chat template: the GGUF has none and the configuration names no chat_format."""


class ChatModel(Protocol):
    """A loaded model (or a server connection) shared by every call."""

    def new_session(self, system_prompt: str | None = None) -> ChatSession:
        """A new call's conversation (``system_prompt`` defaults to the model's)."""

    def close(self) -> None:
        """Free the model or the connection."""


class _ChatBase:
    """What the backends share: a default system prompt and the session factory."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def new_session(self, system_prompt: str | None = None) -> ChatSession:
        """A new call's conversation (``system_prompt`` defaults to the model's)."""
        return ChatSession(self, system_prompt or self.system_prompt)

    def close(self) -> None:
        """Free the model or the connection (nothing, unless a backend says otherwise)."""

    def _release(self, session: ChatSession) -> None:
        """Forget what was kept for a closed session."""

    def _stream(self, session: ChatSession, cancel: threading.Event | None) -> Generator[str, None, None]:
        raise NotImplementedError

    def _stream_tools(
        self,
        session: ChatSession,
        cancel: threading.Event | None,
        tools: tuple[ToolSpec, ...],
        tool_choice: ToolChoice,
    ) -> Generator[ReplyPart, None, None]:
        raise LlmError(f"{type(self).__name__} cannot call tools")


class ChatSession:
    """One call's conversation: its history and a streamed reply per turn (one thread at a time)."""

    def __init__(self, backend: _ChatBase, system_prompt: str) -> None:
        """Made by :meth:`ChatModel.new_session`."""
        self._backend: _ChatBase = backend
        self.system_prompt = system_prompt
        self._turns: list[Turn] = []
        self._replying = False
        self.closed = False
        #: Figures for the last reply (see :class:`TurnStats`).
        self.last_stats: TurnStats | None = None
        # KV snapshot and the token sequence the backend last left in the cache (llama.cpp only).
        self._snapshot: _Snapshot | None = None

    @property
    def history(self) -> tuple[Turn, ...]:
        """The turns so far, oldest first (the system prompt is not a turn)."""
        return tuple(self._turns)

    def add_user(self, text: str) -> None:
        """Record what the caller said (a transcript)."""
        text = text.strip()
        if not text:
            raise ValueError("empty user turn")
        self._turns.append(Turn("user", text))

    def add_assistant(self, text: str, tool_calls: Sequence[ToolCall] = ()) -> None:
        """Record something the agent said that the model did not write (a greeting), or an earlier
        reply with the tools it called (its text may then be empty)."""
        text = text.strip()
        if not text and not tool_calls:
            raise ValueError("empty assistant turn")
        self._turns.append(Turn("assistant", text, tuple(tool_calls)))

    def add_tool_result(self, tool_call_id: str, text: str) -> None:
        """Record what the call ``tool_call_id`` (of an earlier assistant turn) returned."""
        if not any(call.id == tool_call_id for turn in self._turns for call in turn.tool_calls):
            raise ValueError(f"no tool call {tool_call_id!r} in the history")
        self._turns.append(Turn("tool", text, tool_call_id=tool_call_id))

    def add_turn(self, turn: Turn) -> None:
        """Record any :class:`Turn` (a history handed over whole, e.g. a ``Generate`` job's)."""
        if turn.role == "user":
            self.add_user(turn.text)
        elif turn.role == "assistant":
            self.add_assistant(turn.text, turn.tool_calls)
        else:
            self.add_tool_result(turn.tool_call_id or "", turn.text)

    def stream_reply(self, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the assistant's reply in pieces; ``cancel`` stops it before the next token. The text
        becomes an assistant turn. Exhaust or ``close()`` the iterator: while open it holds the model."""
        self._check_can_reply()
        yield from self._record(self._backend._stream(self, cancel))

    def stream_with_tools(
        self,
        tools: Sequence[ToolSpec],
        cancel: threading.Event | None = None,
        *,
        tool_choice: ToolChoice = "auto",
    ) -> Iterator[ReplyPart]:
        """Like :meth:`stream_reply`, with ``tools`` the model may call: yields pieces of speech
        (``str``) and each :class:`ToolCall` once it is complete (after the speech of the same reply
        on every backend here). The speech and the calls become one assistant turn; add each call's
        result with :meth:`add_tool_result`, then ask for the next reply. A cancelled reply calls
        nothing. ``tool_choice``: "auto", "required" (some tool must be called) or a tool's name.
        No tools is :meth:`stream_reply`."""
        self._check_can_reply()
        if not tools:
            yield from self._record(self._backend._stream(self, cancel))
            return
        names = [tool.name for tool in tools]
        if len(set(names)) != len(names):
            raise LlmError(f"tool names must be unique: {names}")
        if tool_choice not in ("auto", "required", *names):
            raise LlmError(f"tool_choice {tool_choice!r} is not auto, required or a tool's name")
        yield from self._record(self._backend._stream_tools(self, cancel, tuple(tools), tool_choice))

    def _check_can_reply(self) -> None:
        if self.closed:
            raise LlmError("session is closed")
        if self._replying:
            raise LlmError("a reply is already being generated for this session")
        if not self._turns or self._turns[-1].role not in ("user", "tool"):
            raise LlmError("a reply needs a user turn last in the history (or a tool's result)")

    def _record(self, stream: Generator[_Part, None, None]) -> Generator[_Part, None, None]:
        """Pass ``stream`` on and make what it said (and called) the assistant turn."""
        self._replying = True
        parts: list[str] = []
        calls: list[ToolCall] = []
        try:
            for part in stream:
                (calls if isinstance(part, ToolCall) else parts).append(part)  # type: ignore[arg-type]
                yield part
        finally:
            # Close the backend's generator now (not at garbage collection): it holds the model lock.
            stream.close()
            self._replying = False
            text = "".join(parts).strip()
            if text or calls:
                self._turns.append(Turn("assistant", text, tuple(calls)))

    def reply(self, cancel: threading.Event | None = None) -> str:
        """The whole reply as one string (tests, tools)."""
        return "".join(self.stream_reply(cancel)).strip()

    def record_spoken(self, text: str) -> None:
        """After a barge-in the caller heard only ``text`` of the last reply: keep just that (an empty
        ``text``, interrupted before any audio played, removes the turn)."""
        if not self._turns or self._turns[-1].role != "assistant":
            raise LlmError("no assistant reply to cut short")
        text, calls = text.strip(), self._turns[-1].tool_calls
        if text or calls:  # the calls it made stand: they were handed over to be run
            self._turns[-1] = Turn("assistant", text, calls)
        else:
            self._turns.pop()

    def rewind(self, turns: int) -> None:
        """Forget every turn after the first ``turns`` (a cancelled speculative exchange)."""
        if self._replying:
            raise LlmError("cannot rewind while a reply is being generated")
        del self._turns[max(0, turns) :]

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as OpenAI chat-completions messages, system prompt first (assistant
        turns with their ``tool_calls``, tool results as ``tool`` messages)."""
        return openai_messages(self.system_prompt, self._turns)

    def _drop_oldest_exchange(self) -> bool:
        """Forget the oldest turns up to the next user turn (context full); False if nothing can go."""
        if len(self._turns) <= 1:
            return False
        del self._turns[0]
        while len(self._turns) > 1 and self._turns[0].role != "user":
            del self._turns[0]
        return True

    def close(self) -> None:
        """End the call's conversation and free what the backend kept for it."""
        if not self.closed:
            self.closed = True
            self._backend._release(self)
            self._snapshot = None

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# llama.cpp's KV snapshot of a call (the backend is voice/llm_llama.py) ------------------
@dataclass(frozen=True)
class _Snapshot:
    tokens: tuple[int, ...]
    data: bytes


__all__ = [
    "ChatModel",
    "ChatSession",
    "ChatTemplateError",
    "LlmError",
    "ReplyPart",
    "Role",
    "ToolCall",
    "ToolChoice",
    "ToolSpec",
    "Turn",
    "TurnStats",
]
