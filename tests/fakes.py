"""Fast fakes of the models, with the real interfaces, for tests of control flow (livekit's
``fake_stt.py`` is the model). The real models are tested on real audio in test_stt, test_llm and
test_tts, and end to end in test_agent_e2e."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sipagent.config import DEFAULT_SYSTEM_PROMPT
from sipagent.voice.llm import (
    ChatSession,
    ReplyPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Turn,
    TurnStats,
    _ChatBase,
)
from sipagent.voice.resample import TELEPHONE_RATE
from sipagent.voice.stt import Transcript, _check_pcm


@dataclass(frozen=True)
class FakeReply:
    """A scripted reply that also calls tools (streamed after its words, when tools are offered)."""

    text: str
    calls: tuple[ToolCall, ...] = ()


class FakeChat(_ChatBase):
    """Scripted replies streamed word by word, with optional delays; for tests of control flow.

    ``replies`` are used in order (then ``default``), or computed from the history by a callable;
    each is a string or a :class:`FakeReply` with tool calls, which a reply with tools streams after
    the words (a reply without tools drops them). ``token_delay`` is slept before each word, like a
    model's wall time; cancellation is checked between words as the real backends do, and a cancelled
    reply calls nothing. The tools each reply was offered are kept in :attr:`offered`.
    """

    def __init__(
        self,
        replies: Iterable[str | FakeReply] | Callable[[Sequence[Turn]], str | FakeReply] = (),
        *,
        token_delay: float = 0.0,
        default: str = "Okay.",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        """See the class docstring."""
        self._script = None if callable(replies) else list(replies)
        self._compute = replies if callable(replies) else None
        self.token_delay = token_delay
        self.default = default
        self.system_prompt = system_prompt
        self.sessions: list[ChatSession] = []
        #: The tools offered to each reply, in order (``()`` for a reply without tools).
        self.offered: list[tuple[ToolSpec, ...]] = []
        self._lock = threading.Lock()

    def new_session(self, system_prompt: str | None = None) -> ChatSession:
        """A new conversation; every one made is kept in :attr:`sessions` for assertions."""
        self.sessions.append(session := super().new_session(system_prompt))
        return session

    def _stream(self, session: ChatSession, cancel: threading.Event | None) -> Generator[str, None, None]:
        for part in self._script_reply(session, cancel, ()):
            if isinstance(part, str):
                yield part

    def _stream_tools(
        self,
        session: ChatSession,
        cancel: threading.Event | None,
        tools: tuple[ToolSpec, ...],
        tool_choice: ToolChoice,
    ) -> Generator[ReplyPart, None, None]:
        return self._script_reply(session, cancel, tools)

    def _script_reply(
        self, session: ChatSession, cancel: threading.Event | None, tools: tuple[ToolSpec, ...]
    ) -> Generator[ReplyPart, None, None]:
        started = time.perf_counter()
        with self._lock:
            self.offered.append(tools)
            if self._compute is not None:
                scripted = self._compute(session.history)
            else:
                scripted = self._script.pop(0) if self._script else self.default
        if isinstance(scripted, FakeReply):
            reply, calls = scripted.text, scripted.calls
        else:
            reply, calls = scripted, ()
        first_token_s: float | None = None
        sent = 0
        cancelled = False
        try:
            # A reply that only calls tools says nothing (a plain empty reply streams "" as before).
            for index, word in enumerate(reply.split(" ") if reply or not calls else []):
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                if self.token_delay:
                    time.sleep(self.token_delay)
                first_token_s = first_token_s or time.perf_counter() - started
                sent += 1
                yield word if index == 0 else " " + word
            if not cancelled and tools:
                yield from calls
        finally:
            session.last_stats = TurnStats(
                None, None, None, sent, first_token_s, time.perf_counter() - started, cancelled
            )


class FakeTranscriber:
    """Answers from a script (or a function of the audio) after an optional delay; records its inputs.

    For tests of the pipeline's timing and control flow: same interface as the real one, no model.
    """

    def __init__(
        self,
        replies: Iterable[str] | Callable[[npt.NDArray[np.int16]], str] = (),
        *,
        delay: float = 0.0,
        default: str = "",
    ) -> None:
        """``replies`` are returned in order (then ``default``), or computed by a callable."""
        self._script = None if callable(replies) else list(replies)
        self._compute = replies if callable(replies) else None
        self.delay = delay
        self.default = default
        self.calls: list[npt.NDArray[np.int16]] = []
        self._lock = threading.Lock()

    def transcribe(self, pcm_8k: npt.NDArray[np.int16]) -> Transcript:
        """The next scripted text, after ``delay`` seconds (sleeping, like a model's wall time)."""
        pcm = _check_pcm(pcm_8k)
        with self._lock:
            self.calls.append(pcm.copy())
            if self._compute is not None:
                text = self._compute(pcm)
            elif self._script:
                text = self._script.pop(0)
            else:
                text = self.default
        if self.delay:
            time.sleep(self.delay)
        return Transcript(text, 0.0 if text else 1.0, -0.1 if text else 0.0, pcm.size / TELEPHONE_RATE)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class FakeSynthesizer:
    """A 440 Hz tone per sentence, as long as speech of that length would be; records its inputs.

    ``seconds_per_char`` (0.065 s, about 15 characters a second) sets the length, ``delay`` is slept
    before each chunk like a model's wall time.
    """

    def __init__(self, *, seconds_per_char: float = 0.065, delay: float = 0.0, amplitude: int = 8000) -> None:
        """See the class docstring."""
        self.seconds_per_char = seconds_per_char
        self.delay = delay
        self.amplitude = amplitude
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> Iterator[npt.NDArray[np.int16]]:
        """A tone chunk per sentence of ``text``."""
        with self._lock:
            self.texts.append(text)
        for sentence in _SENTENCE_END.split(text.strip()):
            if not sentence:
                continue
            if self.delay:
                time.sleep(self.delay)
            count = max(1, round(len(sentence) * self.seconds_per_char * TELEPHONE_RATE))
            phase = 2 * np.pi * 440.0 * np.arange(count) / TELEPHONE_RATE
            yield (self.amplitude * np.sin(phase)).astype(np.int16)
