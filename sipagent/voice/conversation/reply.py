"""One reply of the agent, from the caller's audio (or a fixed text) to the frames the caller heard.

Rules
=====
A reply answers one caller turn (STT, then the LLM streaming into TTS chunk by chunk) or says a
fixed text (a greeting, words spoken into the call from outside: TTS only). Its audio is kept in a
:class:`~sipagent.voice.playback.Playback`, which plays only once the reply is *committed* (the
caller's turn really ended); a *speculative* reply, started at the caller's pause, does all its work
early and is either committed or cancelled.

States (the table below is the single source; anything else raises :class:`ReplyStateError`)
------------------------------------------------------------------------------------------
* ``TRANSCRIBING`` --transcribed--> ``GENERATING``: the caller's words are known; the LLM starts.
* ``TRANSCRIBING`` --heard_nothing--> ``UNANSWERED``: Whisper heard silence or noise.
* ``GENERATING`` --generated--> ``SYNTHESIZING``: the LLM's text is complete (chunks may still be
  waiting for TTS). A fixed text starts here.
* ``SYNTHESIZING`` --synthesized--> ``PLAYING``: all audio is made; it plays (or waits for commit).
* ``PLAYING`` --played--> ``DONE``: the caller heard all of it.
* any working state --cancel--> ``CANCELLED``: a speculation given up (the caller went on talking);
  it leaves no trace in the history.
* any working state --interrupt--> ``INTERRUPTED``: barge-in, a newer turn, or the call's end; the
  history keeps what the caller heard of it.
* ``TRANSCRIBING``/``GENERATING``/``SYNTHESIZING`` --fail--> ``FAILED``: a model failed (or did not
  answer in time) before there was anything to say.

Jobs are sequential within a reply: one STT job, one LLM job, and one TTS job at a time in chunk
order (TTS of chunk *n+1* runs while chunk *n* plays, and the LLM keeps generating meanwhile).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping

from ...errors import SipAgentError
from ...rtp.frames import Pcm
from ..chunker import SentenceChunker
from ..jobs import Synthesize
from ..llm import ToolCall
from ..playback import Playback
from ..spoken import SpokenFilter
from ..tts import trim_leading_silence
from .config import ConversationConfig
from .record import TurnRecord


class ReplyState(enum.Enum):
    """Where a reply stands (see the module docstring for the rules)."""

    TRANSCRIBING = "transcribing"
    GENERATING = "generating"
    SYNTHESIZING = "synthesizing"
    PLAYING = "playing"
    DONE = "done"
    UNANSWERED = "unanswered"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


_R = ReplyState
_STOP = {"cancel": _R.CANCELLED, "interrupt": _R.INTERRUPTED}
TRANSITIONS: Mapping[ReplyState, Mapping[str, ReplyState]] = {
    _R.TRANSCRIBING: {
        "transcribed": _R.GENERATING,
        "heard_nothing": _R.UNANSWERED,
        "fail": _R.FAILED,
        **_STOP,
    },
    _R.GENERATING: {"generated": _R.SYNTHESIZING, "fail": _R.FAILED, **_STOP},
    _R.SYNTHESIZING: {"synthesized": _R.PLAYING, "fail": _R.FAILED, **_STOP},
    _R.PLAYING: {"played": _R.DONE, **_STOP},
    _R.DONE: {},
    _R.UNANSWERED: {},
    _R.CANCELLED: {},
    _R.INTERRUPTED: {},
    _R.FAILED: {},
}
#: States in which a reply has nothing more to do.
FINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)


class ReplyStateError(SipAgentError, RuntimeError):
    """An event the transition table does not allow in the reply's current state (an engine bug)."""

    def __init__(self, state: ReplyState, event: str) -> None:
        super().__init__(f"reply in state {state.name} cannot handle {event}")
        self.state = state
        self.event = event


class Reply:
    """One reply in the making (see the module docstring); the engine drives it."""

    def __init__(
        self,
        record: TurnRecord,
        config: ConversationConfig,
        *,
        now: float,
        script: str | None = None,
        hang_up_after: str | None = None,
    ) -> None:
        self.record = record
        self.created_at = now
        self.playback = Playback()
        self.committed = False
        #: The caller's words (None until transcribed; a fixed text has none).
        self.transcript: str | None = None
        #: This reply's caller turn is in the call's history (it was committed once transcribed).
        self.in_history = False
        #: Hang up with this reason once the reply has ended (a goodbye, a notification).
        self.hang_up_after = hang_up_after
        self.state = _R.SYNTHESIZING if script is not None else _R.TRANSCRIBING
        self.script = script
        self.voice = config.voice
        #: Tools the model called in this reply, how many were carried out, webhooks still out.
        self.tool_calls: list[ToolCall] = []
        self.tools_run = 0
        self.webhooks = 0
        #: Said while a tool is slow ("One moment."): not part of the conversation's history.
        self.filler = False
        self._spoken = SpokenFilter()
        self._chunker = SentenceChunker(config.chunker)
        self._chunks: deque[str] = deque(self._chunker.feed(script) + self._chunker.flush() if script else [])
        #: The outstanding jobs of each kind (job number), and when each gives up.
        self.stt_job: int | None = None
        self.llm_job: int | None = None
        self.tts_job: tuple[int, str] | None = None
        self.deadlines: dict[int, float] = {}
        #: When each stage started (for the record).
        self.stt_started: float | None = None
        self.llm_started: float | None = None
        self._tts_started: float | None = None

    # -- the state machine -----------------------------------------------------------------------
    def fire(self, event: str) -> ReplyState:
        """Move along the transition table; returns the new state."""
        allowed = TRANSITIONS[self.state]
        if event not in allowed:
            raise ReplyStateError(self.state, event)
        self.state = allowed[event]
        if self.state is _R.PLAYING or self.state in FINAL:
            self.playback.finish()  # no more audio will come
        if self.state in FINAL:
            self.deadlines.clear()
            if self.state in (_R.CANCELLED, _R.INTERRUPTED, _R.FAILED):
                self.playback.stop()
        return self.state

    @property
    def final(self) -> bool:
        """Nothing more to do: the reply is over (or only waits to be committed and reported)."""
        return self.state in FINAL

    def jobs(self) -> list[int]:
        """Jobs still out."""
        jobs = [self.stt_job, self.llm_job, self.tts_job[0] if self.tts_job else None]
        return [job for job in jobs if job is not None]

    # -- text in ---------------------------------------------------------------------------------
    def add_text(self, piece: str, now: float) -> None:
        """A piece of the LLM's reply: filtered to what can be spoken, cut into TTS chunks."""
        record = self.record
        if record.llm_first_token_ms is None and self.llm_started is not None:
            record.llm_first_token_ms = (now - self.llm_started) * 1000
        self._add_chunks(self._chunker.feed(self._spoken.feed(piece)), now)

    def end_text(self, now: float) -> None:
        """The LLM's reply is complete (or was cut): the rest of the text becomes chunks."""
        self._add_chunks(self._chunker.feed(self._spoken.flush()) + self._chunker.flush(), now)
        self.llm_job = None
        self.fire("generated")

    def _add_chunks(self, chunks: list[str], now: float) -> None:
        if chunks and self.record.first_sentence_ms is None and self.llm_started is not None:
            self.record.first_sentence_ms = (now - self.llm_started) * 1000
        self._chunks.extend(chunks)

    # -- audio in --------------------------------------------------------------------------------
    def next_synthesis(self, new_job: Callable[[], int], now: float) -> Synthesize | None:
        """The next chunk's TTS job, if none is out and a chunk waits."""
        if self.tts_job is not None or not self._chunks or self.final:
            return None
        text = self._chunks.popleft()
        job = new_job()
        self.tts_job = (job, text)
        self._tts_started = now
        return Synthesize(job, text, self.voice)

    def add_audio(self, audio: Pcm, now: float) -> None:
        """The outstanding TTS job's audio."""
        assert self.tts_job is not None
        _, text = self.tts_job
        self.tts_job = None
        if self.record.tts_first_audio_ms is None and self._tts_started is not None:
            self.record.tts_first_audio_ms = (now - self._tts_started) * 1000
        if self.playback.frames_total == 0:
            audio = trim_leading_silence(audio)  # the caller is waiting: start at the first word
        if audio.size:
            self.playback.add(text, audio)

    def drop_text(self) -> None:
        """Give up the chunks not synthesized yet (their TTS failed)."""
        self._chunks.clear()
        self.tts_job = None

    @property
    def audio_complete(self) -> bool:
        """Every chunk of a finished text has its audio."""
        return self.state is _R.SYNTHESIZING and self.tts_job is None and not self._chunks

    def has_something_to_say(self) -> bool:
        """Audio exists or text waits for TTS."""
        return self.playback.frames_total > 0 or bool(self._chunks) or self.tts_job is not None


__all__ = ["FINAL", "TRANSITIONS", "Reply", "ReplyState", "ReplyStateError"]
