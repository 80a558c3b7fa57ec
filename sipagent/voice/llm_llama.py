"""llama.cpp in this process: one GGUF model shared by every call, a KV cache per call (see
:mod:`.llm`'s docstring for how the cache is kept, and why the chat template must be known).

Tools (decision 0021): speak first, then decide. The tools are described at the end of the system
prompt (:func:`.llm_tools.text_messages`; no chat template we ship knows tools) and the speech streams
exactly as without tools, through a guard that keeps call syntax from being spoken. Once it ends, a
short question about the caller's last words is evaluated after it and the answer is sampled
greedily under a llama.cpp grammar: a tool's name or ``none``, then the arguments under the tool's
JSON Schema. So the first words come as fast as without tools, the decision costs a few tokens
while the words already play, and a call's name and arguments are always well formed. The system
prompt with the tools is evaluated once per tool set and kept, like the default one.
"""

from __future__ import annotations

import codecs
import ctypes
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_SYSTEM_PROMPT
from .llm import (
    ChatSession,
    ChatTemplateError,
    LlmError,
    ReplyPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    TurnStats,
    _ChatBase,
    _Snapshot,
)
from .llm_tools import (
    ToolSyntaxGuard,
    arguments_schema,
    constrained_text,
    decision_grammar,
    decision_question,
    new_call_id,
    schema_grammar,
    text_messages,
)

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import ChatFormatter

    from ..config import LlmSettings

_log = logging.getLogger("sipagent.voice.llm")

#: System prompts with tools whose KV cells are kept (a few MB each for a small model; one per
#: tool set in use, most deployments have one or two).
_TOOL_BASES = 4
#: Tokens at most for a call's arguments (a name, a number, a few digits).
_MAX_ARGUMENT_TOKENS = 96


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
        self._tool_bases: OrderedDict[tuple[int, ...], _Snapshot] = OrderedDict()
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
            self._tool_bases.clear()
            self._llama.close()

    # -- tokens and KV state ---------------------------------------------------------------------

    def _render(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[str]]:
        """Prompt tokens and the format's stop strings."""
        response = self._formatter(messages=messages)  # type: ignore[arg-type]
        prompt = response.prompt.encode("utf-8")
        stop = response.stop
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return self._llama.tokenize(prompt, add_bos=not response.added_special, special=True), stops

    def _prompt(self, session: ChatSession, tools: Sequence[ToolSpec] = ()) -> tuple[list[int], list[str]]:
        """The session's prompt, forgetting its oldest exchanges if the context is full."""
        while True:
            tokens, stops = self._render(text_messages(session.system_prompt, session.history, tools))
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
        for snapshot in (session._snapshot, self._base, *self._tool_bases.values()):
            if snapshot is not None:
                reuse = _common_prefix(snapshot.tokens, prompt[:-1])
                if reuse > keep:
                    best, keep = snapshot, reuse
        if best is not None:
            self._restore(best)
        self._owner = session
        # The cache is about to move on from any snapshot this call had; drop it (memory).
        session._snapshot = None
        if best is not None and tuple(best.tokens) in self._tool_bases:
            self._tool_bases.move_to_end(tuple(best.tokens))
        return best is not None

    def _keep_system_prefix(self, session: ChatSession, prompt: list[int], tools: Sequence[ToolSpec]) -> None:
        """The first call with a tool set evaluates its system prompt alone and keeps the cells, so
        the next call with the same tools starts from them as calls without tools do from the
        default prompt's (see :meth:`_warm_up`)."""
        system, _ = self._render(text_messages(session.system_prompt, (), tools))
        shared = _common_prefix(system, prompt)
        if _common_prefix(self._cached(), prompt[:-1]) >= shared:
            return  # the cache holds it already (this call's own history, or a kept prompt)
        self._llama.n_tokens = _common_prefix(self._cached(), system)
        self._llama.eval(system[self._llama.n_tokens :])
        self._tool_bases[tuple(system)] = self._save()
        while len(self._tool_bases) > _TOOL_BASES:
            self._tool_bases.popitem(last=False)

    def _release(self, session: ChatSession) -> None:
        with self._lock:
            if self._owner is session:
                self._owner = None

    def _stream(self, session: ChatSession, cancel: threading.Event | None) -> Generator[str, None, None]:
        started = time.perf_counter()
        with self._lock:
            yield from self._speak(session, cancel, (), started)

    def _speak(
        self,
        session: ChatSession,
        cancel: threading.Event | None,
        tools: Sequence[ToolSpec],
        started: float,
    ) -> Generator[str, None, None]:
        """The reply's words, streamed (the model lock is held by the caller; ``started`` is when the
        reply was asked for, before waiting for the lock)."""
        import llama_cpp

        prompt, stops = self._prompt(session, tools)
        restored = self._activate(session, prompt)
        cached = _common_prefix(self._cached(), prompt[:-1])
        decoded_before = self._decoded_count()
        if tools:
            self._keep_system_prefix(session, prompt, tools)
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

    def _stream_tools(
        self,
        session: ChatSession,
        cancel: threading.Event | None,
        tools: tuple[ToolSpec, ...],
        tool_choice: ToolChoice,
    ) -> Generator[ReplyPart, None, None]:
        """Speak, then decide on a call (see the module docstring)."""
        started = time.perf_counter()
        with self._lock:
            guard = ToolSyntaxGuard(tools)
            speech: list[str] = []
            words = self._speak(session, cancel, tools, started)
            try:
                for piece in words:
                    if spoken := guard.push(piece):
                        speech.append(spoken)
                        yield spoken
            finally:
                words.close()
            stats = session.last_stats
            if stats is None or stats.cancelled:
                return  # a cancelled reply calls nothing
            if tail := guard.flush():
                speech.append(tail)
                yield tail
            # A model that wrote a call itself (a bigger one, knowing <tool_call>) is taken at its word.
            calls = [c for c in guard.calls if tool_choice in ("auto", "required", c.name)]
            if not calls:
                decided = self._decide(session, "".join(speech).strip(), tools, tool_choice, cancel)
                calls = [decided] if decided is not None else []
            session.last_stats = replace(
                stats, total_s=time.perf_counter() - started, cancelled=cancel is not None and cancel.is_set()
            )
            if not session.last_stats.cancelled:
                yield from calls

    def _decide(
        self,
        session: ChatSession,
        speech: str,
        tools: Sequence[ToolSpec],
        tool_choice: ToolChoice,
        cancel: threading.Event | None,
    ) -> ToolCall | None:
        """Ask which action the caller's last words call for, after the speech; a grammar keeps the
        answer to a tool's name (or ``none``) and then to the tool's arguments."""
        from llama_cpp.llama_grammar import LlamaGrammar

        history = session.history
        messages = text_messages(session.system_prompt, history, tools)
        messages += [
            {"role": "assistant", "content": speech},
            {"role": "user", "content": decision_question(history, tools)},
        ]
        prompt, _ = self._render(messages)
        if len(prompt) + _MAX_ARGUMENT_TOKENS + 8 > self._n_ctx:
            _log.warning("no room left in n_ctx %d to decide on a tool call", self._n_ctx)
            return None
        if tool_choice in ("auto", "required"):
            grammar = LlamaGrammar.from_string(
                decision_grammar(tools, required=tool_choice == "required"), verbose=False
            )
            name = constrained_text(self._llama, prompt, grammar, 32, cancel)
        else:
            name = tool_choice
        tool = next((t for t in tools if t.name == name), None)
        if tool is None:
            return None  # "none", or stopped by a cancel
        schema = arguments_schema(tool)
        arguments = "{}"
        if schema is not None:
            # The answer so far is the name; the arguments follow it on the same line.
            head = self._llama.tokenize((name + " ").encode("utf-8"), add_bos=False, special=False)
            grammar = schema_grammar(schema)
            arguments = constrained_text(
                self._llama, prompt + head, grammar, _MAX_ARGUMENT_TOKENS, cancel
            ).strip()
        return ToolCall(new_call_id(), tool.name, arguments)


__all__ = ["LlamaCppChat"]
