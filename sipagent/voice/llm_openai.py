"""Streaming chat completions from an OpenAI-compatible server (vLLM, llama.cpp server, Ollama).

With tools, the request carries ``tools`` and ``tool_choice`` and the server's streamed
``delta.tool_calls`` fragments are assembled into calls (:class:`.llm_tools.ToolCallAssembler`). The
server must be started with tool-call parsing on: vLLM ``--enable-auto-tool-choice
--tool-call-parser hermes`` (Qwen2.5) or ``llama3_json`` (Llama 3.1), llama.cpp ``llama-server
--jinja``; Ollama always parses. Without it the call arrives as text in the content, which the
guard keeps from being spoken and reads as a call when it can.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_SYSTEM_PROMPT
from .llm import ChatSession, LlmError, ReplyPart, ToolChoice, ToolSpec, TurnStats, _ChatBase
from .llm_tools import ToolCallAssembler, ToolSyntaxGuard, openai_tools

if TYPE_CHECKING:
    import httpx

    from ..config import LlmSettings


class OpenAIChat(_ChatBase):
    """Streaming chat completions from an OpenAI-compatible server (vLLM, llama.cpp server, Ollama).
    The API key (from the variable ``api_key_env`` names) goes only into the Authorization header."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        max_tokens: int = 96,
        temperature: float = 0.3,
        timeout: float = 30.0,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Connect lazily to ``base_url`` (e.g. ``http://gpu-box:8000/v1``); ``transport`` is for tests."""
        import httpx

        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if key is None:
                raise LlmError(f"llm.openai.api_key_env: environment variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.base_url = base_url.rstrip("/")
        self.system_prompt = system_prompt
        self._params = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "stream": True}
        self._client = httpx.Client(
            base_url=self.base_url + "/", headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> OpenAIChat:
        """Build from the ``[llm]`` section (its ``[llm.openai]`` table must be set)."""
        if (remote := settings.openai) is None:
            raise LlmError("llm.openai: the openai backend needs base_url and model")
        shared = settings.model_dump(include={"max_tokens", "temperature", "system_prompt"})
        return cls(
            remote.base_url, remote.model, api_key_env=remote.api_key_env, timeout=remote.timeout, **shared
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _stream(self, session: ChatSession, cancel: threading.Event | None) -> Generator[str, None, None]:
        for part in self._run(session, cancel, (), "auto"):
            if isinstance(part, str):
                yield part

    def _stream_tools(
        self,
        session: ChatSession,
        cancel: threading.Event | None,
        tools: tuple[ToolSpec, ...],
        tool_choice: ToolChoice,
    ) -> Generator[ReplyPart, None, None]:
        return self._run(session, cancel, tools, tool_choice)

    def _run(
        self,
        session: ChatSession,
        cancel: threading.Event | None,
        tools: tuple[ToolSpec, ...],
        tool_choice: ToolChoice,
    ) -> Generator[ReplyPart, None, None]:
        """One streamed completion: content pieces as they come; with tools, each assembled call at
        the chunk whose ``finish_reason`` ends the choice (or at the end of the stream), and any call
        syntax a server left in the content (no tool parser configured) held back by the guard."""
        import httpx

        started = time.perf_counter()
        body: dict[str, Any] = {**self._params, "messages": session.messages()}
        if tools:
            body["tools"] = openai_tools(tools)
            body["tool_choice"] = (
                tool_choice
                if tool_choice in ("auto", "required")
                else {"type": "function", "function": {"name": tool_choice}}
            )
        url = f"{self.base_url}/chat/completions"
        guard = ToolSyntaxGuard(tools) if tools else None
        assembler = ToolCallAssembler()
        first_token_s: float | None = None
        pieces = 0
        cancelled = False

        def finish() -> Iterator[ReplyPart]:
            """The end of the choice: the speech held back, then the calls (never after a cancel)."""
            if guard is not None:
                if tail := guard.flush():
                    yield tail
                yield from guard.calls
                guard.calls.clear()
            if tools:
                yield from assembler.take()

        try:
            # Leaving this block closes the connection, which is how a cancelled turn tells the
            # server to stop generating.
            with self._client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    detail = response.read().decode("utf-8", "replace")[:300]
                    raise LlmError(f"{url} answered {response.status_code}: {detail}")
                for line in response.iter_lines():
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        break
                    delta = _sse_delta(line, url)
                    if delta is None:
                        break
                    assembler.add(delta.tool_calls)
                    piece = guard.push(delta.content) if guard is not None else delta.content
                    if piece:
                        first_token_s = first_token_s or time.perf_counter() - started
                        pieces += 1
                        yield piece
                    if delta.finish_reason:
                        yield from finish()
                if not cancelled:
                    yield from finish()
        except httpx.HTTPError as exc:
            raise LlmError(f"{url}: {type(exc).__name__}: {exc}") from None
        finally:
            session.last_stats = TurnStats(
                None, None, None, pieces, first_token_s, time.perf_counter() - started, cancelled
            )


@dataclass(frozen=True)
class _Delta:
    content: str
    tool_calls: Any
    finish_reason: str | None


_EMPTY = _Delta("", None, None)


def _sse_delta(line: str, url: str) -> _Delta | None:
    """What one server-sent-events line carries: an empty delta for lines without any, None at
    ``[DONE]``."""
    if not line.startswith("data:"):
        return _EMPTY  # blank separators, comments (": keep-alive"), event names
    if (data := line[5:].strip()) == "[DONE]":
        return None
    try:
        chunk: Any = json.loads(data)
    except json.JSONDecodeError:
        raise LlmError(f"{url} sent a stream chunk that is not JSON: {data[:100]!r}") from None
    if isinstance(chunk, dict) and "error" in chunk:
        raise LlmError(f"{url} reported an error: {str(chunk['error'])[:300]}")
    try:
        if not chunk.get("choices"):
            return _EMPTY  # a usage chunk
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        finish = choice.get("finish_reason")
        return _Delta(
            content if isinstance(content, str) else "",
            delta.get("tool_calls"),
            finish if isinstance(finish, str) else None,
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LlmError(f"{url} sent an unexpected stream chunk: {data[:100]!r}") from None


__all__ = ["OpenAIChat"]
