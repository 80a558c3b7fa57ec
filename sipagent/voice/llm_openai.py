"""Streaming chat completions from an OpenAI-compatible server (vLLM, llama.cpp server, Ollama)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_SYSTEM_PROMPT
from .llm import ChatSession, LlmError, TurnStats, _ChatBase

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
        import httpx

        started = time.perf_counter()
        body = {**self._params, "messages": session.messages()}
        url = f"{self.base_url}/chat/completions"
        first_token_s: float | None = None
        pieces = 0
        cancelled = False
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
                    piece = _sse_content(line, url)
                    if piece is None:
                        break
                    if piece:
                        first_token_s = first_token_s or time.perf_counter() - started
                        pieces += 1
                        yield piece
        except httpx.HTTPError as exc:
            raise LlmError(f"{url}: {type(exc).__name__}: {exc}") from None
        finally:
            session.last_stats = TurnStats(
                None, None, None, pieces, first_token_s, time.perf_counter() - started, cancelled
            )


def _sse_content(line: str, url: str) -> str | None:
    """The text in one server-sent-events line: "" for lines without any, None at ``[DONE]``."""
    if not line.startswith("data:"):
        return ""  # blank separators, comments (": keep-alive"), event names
    if (data := line[5:].strip()) == "[DONE]":
        return None
    try:
        chunk: Any = json.loads(data)
    except json.JSONDecodeError:
        raise LlmError(f"{url} sent a stream chunk that is not JSON: {data[:100]!r}") from None
    if isinstance(chunk, dict) and "error" in chunk:
        raise LlmError(f"{url} reported an error: {str(chunk['error'])[:300]}")
    try:
        content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LlmError(f"{url} sent an unexpected stream chunk: {data[:100]!r}") from None
    return content if isinstance(content, str) else ""


__all__ = ["OpenAIChat"]
