"""The agent's language model: one loaded model per process, one :class:`ChatSession` per call.

A :class:`ChatModel` (:class:`LlamaCppChat` in-process, :class:`OpenAIChat` against a server, a
fake in ``tests/fakes.py``) hands out sessions. A session keeps the call's (role, text) history and
streams each reply in pieces, checking a ``threading.Event`` between tokens (barge-in);
:meth:`ChatSession.record_spoken` then cuts the assistant turn to what the caller heard.

KV cache per call (llama.cpp; docs/decisions/0006). One model serves every call under a lock. A
call's rendered history only grows, so ``Llama.generate``'s prefix match skips what the cache holds
and a turn evaluates only the caller's new words. When another call takes the model, the owner's KV
cells are copied out (``llama_state_seq_get_data``; ``Llama.save_state()`` would also copy a 100 MB
score buffer) and back in when it next speaks. The default system prompt is evaluated at load.

The chat template is the GGUF's ``tokenizer.chat_template``, else ``chat_format``: never
llama-cpp-python's silent fallback to Llama-2's format, in which a model answers nonsense.
"""

from __future__ import annotations

import codecs
import ctypes
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..config import DEFAULT_SYSTEM_PROMPT
from ..errors import SipAgentError

if TYPE_CHECKING:
    import httpx
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import ChatFormatter

    from ..config import LlmSettings

_log = logging.getLogger(__name__)

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One utterance in a call's history."""

    role: Role
    text: str


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

    def add_assistant(self, text: str) -> None:
        """Record something the agent said that the model did not write (a greeting)."""
        text = text.strip()
        if not text:
            raise ValueError("empty assistant turn")
        self._turns.append(Turn("assistant", text))

    def stream_reply(self, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the assistant's reply in pieces; ``cancel`` stops it before the next token. The text
        becomes an assistant turn. Exhaust or ``close()`` the iterator: while open it holds the model."""
        if self.closed:
            raise LlmError("session is closed")
        if self._replying:
            raise LlmError("a reply is already being generated for this session")
        if not self._turns or self._turns[-1].role != "user":
            raise LlmError("a reply needs a user turn last in the history")
        self._replying = True
        parts: list[str] = []
        stream = self._backend._stream(self, cancel)
        try:
            for piece in stream:
                parts.append(piece)
                yield piece
        finally:
            # Close the backend's generator now (not at garbage collection): it holds the model lock.
            stream.close()
            self._replying = False
            text = "".join(parts).strip()
            if text:
                self._turns.append(Turn("assistant", text))

    def reply(self, cancel: threading.Event | None = None) -> str:
        """The whole reply as one string (tests, tools)."""
        return "".join(self.stream_reply(cancel)).strip()

    def record_spoken(self, text: str) -> None:
        """After a barge-in the caller heard only ``text`` of the last reply: keep just that (an empty
        ``text``, interrupted before any audio played, removes the turn)."""
        if not self._turns or self._turns[-1].role != "assistant":
            raise LlmError("no assistant reply to cut short")
        text = text.strip()
        if text:
            self._turns[-1] = Turn("assistant", text)
        else:
            self._turns.pop()

    def rewind(self, turns: int) -> None:
        """Forget every turn after the first ``turns`` (a cancelled speculative exchange)."""
        if self._replying:
            raise LlmError("cannot rewind while a reply is being generated")
        del self._turns[max(0, turns) :]

    def messages(self) -> list[dict[str, str]]:
        """The conversation as OpenAI-style messages, system prompt first."""
        return [{"role": "system", "content": self.system_prompt}] + [
            {"role": turn.role, "content": turn.text} for turn in self._turns
        ]

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


# llama.cpp in-process ------------------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    tokens: tuple[int, ...]
    data: bytes


#: llama-cpp-python's built-in formats usable as ``chat_format`` (name → formatter function).
_NAMED_FORMATS = {
    name: "format_" + name.replace("-instruct", "_instruct").replace("-", "")
    for name in (
        "chatml",
        "llama-2",
        "llama-3",
        "mistral-instruct",
        "gemma",
        "zephyr",
        "qwen",
        "alpaca",
        "openchat",
    )
}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False)))


class _StopFilter:
    """Cuts text at a stop string, holding back a tail that might be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if not self._stops:
            return text
        self._pending += text
        for stop in self._stops:
            index = self._pending.find(stop)
            if index >= 0:
                out, self._pending, self.stopped = self._pending[:index], "", True
                return out
        ends = (
            size
            for stop in self._stops
            for size in range(1, len(stop))
            if self._pending.endswith(stop[:size])
        )
        cut = len(self._pending) - max(ends, default=0)
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out


def _make_formatter(llama: Llama, chat_format: str | None, model_name: str) -> ChatFormatter:
    from llama_cpp import llama_chat_format

    if chat_format is None:
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ChatTemplateError(
                f"{model_name} has no tokenizer.chat_template in its GGUF metadata; set llm.chat_format "
                f"to one of {', '.join(sorted(_NAMED_FORMATS))} or to a Jinja2 template file (.jinja)"
            )
        source = template
    elif chat_format in _NAMED_FORMATS:
        formatter: ChatFormatter = getattr(llama_chat_format, _NAMED_FORMATS[chat_format])
        return formatter
    elif chat_format.endswith(".jinja"):
        try:
            source = Path(chat_format).expanduser().read_text()
        except OSError as exc:
            raise ChatTemplateError(f"llm.chat_format: cannot read template {chat_format}: {exc}") from None
    else:
        raise ChatTemplateError(
            f"llm.chat_format: unknown format {chat_format!r}; use one of "
            f"{', '.join(sorted(_NAMED_FORMATS))} or a Jinja2 template file (.jinja)"
        )
    eos, bos = llama.token_eos(), llama.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=source,
        eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
    )


def _route_llama_logs() -> Any:
    """llama.cpp's log lines to our logger (errors as errors, the rest at debug): llama-cpp-python 0.3.16
    maps ggml's levels off by one and prints warnings to stderr even when quiet. Keep the result."""
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", "replace").rstrip()
        _log.log(logging.ERROR if level == 4 else logging.DEBUG, "llama.cpp: %s", message)

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    return forward


class LlamaCppChat(_ChatBase):
    """A GGUF model run by llama.cpp in this process, shared by every call (see the module docstring)."""

    _log_callback: Any = None  # one per process (llama.cpp has one log callback), kept alive here

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 0,
        n_threads_batch: int = 0,
        n_gpu_layers: int = 0,
        max_tokens: int = 96,
        temperature: float = 0.3,
        chat_format: str | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        seed: int | None = None,
    ) -> None:
        """Load ``model_path`` (``n_gpu_layers`` needs a CUDA build of llama-cpp-python); raises
        :class:`ChatTemplateError` if no chat template is known. ``n_threads`` 0 is half the cores:
        llama.cpp's threads spin at every operator's barrier, so a core taken by Whisper or Piper
        collapses decoding (2 cores: 5 tokens/s with 2 threads next to a transcription, 26 with 1).
        ``n_threads_batch`` (prompt evaluation: the caller's new turn, before the first token) 0 is
        every core: by then the turn's transcription is over and no TTS has started."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"no GGUF at {model_path}: run scripts/fetch_models.py or set llm.model")
        from llama_cpp import LLAMA_DEFAULT_SEED, Llama

        if LlamaCppChat._log_callback is None:
            LlamaCppChat._log_callback = _route_llama_logs()
        started = time.perf_counter()
        threads = n_threads or max(1, (os.cpu_count() or 1) // 2)
        self._llama = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=n_threads_batch or max(1, os.cpu_count() or 1),
            n_gpu_layers=n_gpu_layers,
            seed=LLAMA_DEFAULT_SEED if seed is None else seed,
            verbose=False,
        )
        try:
            self._formatter = _make_formatter(self._llama, chat_format, model_path.name)
        except ChatTemplateError:
            self._llama.close()
            raise
        self.model_path = model_path
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt
        self._n_ctx = self._llama.n_ctx()
        self._lock = threading.Lock()
        self._owner: ChatSession | None = None
        self._base: _Snapshot | None = None
        self._warm_up(system_prompt)
        _log.info("loaded %s in %.2f s (%d threads)", model_path.name, time.perf_counter() - started, threads)

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> LlamaCppChat:
        """Build from the ``[llm]`` configuration section."""
        names = {
            "n_ctx",
            "n_threads",
            "n_threads_batch",
            "n_gpu_layers",
            "max_tokens",
            "temperature",
            "chat_format",
            "system_prompt",
        }
        return cls(settings.model, **settings.model_dump(include=names))

    @property
    def system_prompt_tokens(self) -> int:
        """Tokens of the default system prompt evaluated at load, which every new call reuses."""
        return len(self._base.tokens) if self._base is not None else 0

    def close(self) -> None:
        """Free the model (every session becomes unusable)."""
        with self._lock:
            self._owner, self._base = None, None
            self._llama.close()

    # -- tokens and KV state ---------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        """Prompt tokens and the format's stop strings."""
        response = self._formatter(messages=messages)  # type: ignore[arg-type]
        prompt = response.prompt.encode("utf-8")
        stop = response.stop
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return self._llama.tokenize(prompt, add_bos=not response.added_special, special=True), stops

    def _prompt(self, session: ChatSession) -> tuple[list[int], list[str]]:
        """The session's prompt, forgetting its oldest exchanges if the context is full."""
        while True:
            tokens, stops = self._render(session.messages())
            if len(tokens) + self.max_tokens <= self._n_ctx:
                return tokens, stops
            if not session._drop_oldest_exchange():
                raise LlmError(
                    f"the prompt ({len(tokens)} tokens) and max_tokens ({self.max_tokens}) do not fit "
                    f"in n_ctx {self._n_ctx}"
                )

    def _cached(self) -> tuple[int, ...]:
        return tuple(int(token) for token in self._llama.input_ids[: self._llama.n_tokens])

    def _decoded_count(self) -> int:
        """Tokens llama.cpp has run through the model since load (its perf counters)."""
        import llama_cpp

        data = llama_cpp.llama_perf_context(self._llama.ctx)
        return int(data.n_p_eval) + int(data.n_eval)

    def _save(self) -> _Snapshot:
        import llama_cpp

        ctx = self._llama.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        if written == 0:
            raise LlmError("llama.cpp could not copy the KV cache out")
        return _Snapshot(self._cached(), ctypes.string_at(buffer, written))

    def _restore(self, snapshot: _Snapshot) -> None:
        import llama_cpp

        buffer = (ctypes.c_uint8 * len(snapshot.data)).from_buffer_copy(snapshot.data)
        if llama_cpp.llama_state_seq_set_data(self._llama.ctx, buffer, len(snapshot.data), 0) == 0:
            raise LlmError("llama.cpp could not restore a KV snapshot")
        count = len(snapshot.tokens)
        self._llama.input_ids[:count] = snapshot.tokens
        self._llama.n_tokens = count

    def _warm_up(self, system_prompt: str) -> None:
        """Evaluate the default system prompt once and keep its KV cells for every new call."""
        try:
            tokens, _ = self._render([{"role": "system", "content": system_prompt}])
        except Exception as exc:  # some templates insist on a user turn; then calls start cold
            _log.debug("no system-prompt warm-up: %s", exc)
            return
        self._llama.n_tokens = 0  # Llama.reset(), which is untyped
        # On one thread: llama.cpp's threads spin at every operator's barrier, and at start-up the
        # box may be busy (two CPU-bound neighbours on 2 cores made this 60-token prompt take 6-20 s
        # on two threads, holding the server's start for as long). One thread takes ~0.1 s idle.
        import llama_cpp

        ctx, batch = self._llama.ctx, self._llama.context_params.n_threads_batch
        llama_cpp.llama_set_n_threads(ctx, self._llama.context_params.n_threads, 1)
        try:
            self._llama.eval(tokens)
        finally:
            llama_cpp.llama_set_n_threads(ctx, self._llama.context_params.n_threads, batch)
        self._base = self._save()

    def _activate(self, session: ChatSession, prompt: list[int]) -> bool:
        """Make the KV cache hold the longest available prefix of ``prompt``; True if restored.

        The call that used the model last is saved first, so its next turn finds its history again.
        """
        owner = self._owner
        if owner is not None and owner is not session and not owner.closed and owner._snapshot is None:
            owner._snapshot = self._save()
        keep = _common_prefix(self._cached(), prompt[:-1])  # what Llama.generate would reuse as is
        best: _Snapshot | None = None
        for snapshot in (session._snapshot, self._base):
            if snapshot is not None:
                reuse = _common_prefix(snapshot.tokens, prompt[:-1])
                if reuse > keep:
                    best, keep = snapshot, reuse
        if best is not None:
            self._restore(best)
        self._owner = session
        # The cache is about to move on from any snapshot this call had; drop it (memory).
        session._snapshot = None
        return best is not None

    def _release(self, session: ChatSession) -> None:
        with self._lock:
            if self._owner is session:
                self._owner = None

    def _stream(self, session: ChatSession, cancel: threading.Event | None) -> Generator[str, None, None]:
        import llama_cpp

        started = time.perf_counter()
        with self._lock:
            prompt, stops = self._prompt(session)
            restored = self._activate(session, prompt)
            cached = _common_prefix(self._cached(), prompt[:-1])
            decoded_before = self._decoded_count()
            evaluated: int | None = None
            first_token_s: float | None = None
            generated = 0
            cancelled = cancel is not None and cancel.is_set()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stopper = _StopFilter(stops)
            tokens = self._llama.generate(
                prompt, temp=self.temperature, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1
            )
            try:
                for token in [] if cancelled else tokens:
                    if evaluated is None:
                        # Only the prompt has been through the model when the first token arrives.
                        evaluated = self._decoded_count() - decoded_before
                        first_token_s = time.perf_counter() - started
                    if llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token):
                        break
                    generated += 1
                    piece = stopper.push(decoder.decode(self._llama.detokenize([token])))
                    if piece:
                        yield piece
                    if stopper.stopped or generated >= self.max_tokens:
                        break
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        break
                if not cancelled and not stopper.stopped:
                    tail = stopper.push(decoder.decode(b"", final=True)) + stopper.flush()
                    if tail:
                        yield tail
            finally:
                tokens.close()
                elapsed = time.perf_counter() - started
                session.last_stats = TurnStats(
                    len(prompt), cached, evaluated, generated, first_token_s, elapsed, cancelled, restored
                )


# OpenAI-compatible server ------------------------------------------------------------
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


def chat_model_from_settings(settings: LlmSettings) -> ChatModel:
    """The backend the ``[llm]`` section names, loaded."""
    if settings.backend == "openai":
        return OpenAIChat.from_settings(settings)
    return LlamaCppChat.from_settings(settings)
