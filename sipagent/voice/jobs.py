"""Model jobs and their results: the vocabulary between the conversation engine and the models.

The conversation engine (:mod:`sipagent.voice.conversation`) asks for work by returning a job among
its commands; whoever runs the models (:mod:`sipagent.voice.inference`: a process of their own, or
worker threads) answers with results carrying the same ``job`` number, which go back into the
engine as inputs. Nothing here runs anything: frozen data, validated when built, picklable (jobs and
results cross the pipe to the inference process as they are).

::

    engine ──► Transcribe(job, audio)         ──► Transcribed(job, transcript)
           ──► Generate(job, key, prompt, turns, tools) ──► TextPiece(job, text) …
                                               [ToolCallRequested(job, call) …] TextDone(job, stats)
           ──► Synthesize(job, text)          ──► Synthesized(job, audio)
           ──► PredictTurnEnd(job, audio)     ──► TurnEndPredicted(job, probability)
           ──► CancelJob(job)                     (any job may instead end in JobFailed(job, reason))

A cancelled job may still answer (its result was on its way); the engine ignores results of jobs it
no longer waits for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rtp.frames import Pcm
from .llm import ToolCall, ToolSpec, Turn, TurnStats
from .stt import Transcript


def _check_job(kind: str, job: int) -> None:
    if isinstance(job, bool) or not isinstance(job, int) or job < 1:
        raise ValueError(f"{kind}.job must be a positive integer, got {job!r}")


def _check_pcm(kind: str, audio: Pcm) -> None:
    if not isinstance(audio, np.ndarray) or audio.dtype != np.int16 or audio.ndim != 1:
        raise ValueError(f"{kind}.audio must be 1-D int16 samples at 8 kHz")


# -- jobs (engine → models) -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class Transcribe:
    """Transcribe one caller utterance (8 kHz int16)."""

    job: int
    audio: Pcm

    def __post_init__(self) -> None:
        _check_job("Transcribe", self.job)
        _check_pcm("Transcribe", self.audio)


@dataclass(frozen=True, slots=True)
class Generate:
    """Stream the agent's reply to ``turns`` (the last one the caller's, or a tool's result) under
    ``system_prompt``, with ``tools`` the model may call.

    ``conversation`` names the call, so a backend that keeps state per call (llama.cpp's KV cache)
    finds it again; the turns are the whole history every time, so no backend has to remember it.
    """

    job: int
    conversation: int
    system_prompt: str
    turns: tuple[Turn, ...]
    tools: tuple[ToolSpec, ...] = ()

    def __post_init__(self) -> None:
        _check_job("Generate", self.job)
        if not self.turns or self.turns[-1].role not in ("user", "tool"):
            raise ValueError("Generate.turns must end with the caller's turn or a tool's result")


@dataclass(frozen=True, slots=True)
class Synthesize:
    """Speak ``text`` (one chunk of a reply) in ``voice`` (a loaded voice's path; None: the default)."""

    job: int
    text: str
    voice: str | None = None

    def __post_init__(self) -> None:
        _check_job("Synthesize", self.job)
        if not self.text.strip():
            raise ValueError("Synthesize.text must not be empty")


@dataclass(frozen=True, slots=True, eq=False)
class PredictTurnEnd:
    """How likely the caller's turn so far (8 kHz int16) is complete (an end-of-turn model)."""

    job: int
    audio: Pcm

    def __post_init__(self) -> None:
        _check_job("PredictTurnEnd", self.job)
        _check_pcm("PredictTurnEnd", self.audio)


Job = Transcribe | Generate | Synthesize | PredictTurnEnd


# -- results (models → engine) --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transcribed:
    """What the caller said in a :class:`Transcribe` job's audio."""

    job: int
    transcript: Transcript


@dataclass(frozen=True, slots=True)
class TextPiece:
    """The next piece of a :class:`Generate` job's reply (a token or a few)."""

    job: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequested:
    """The model called a tool in a :class:`Generate` job's reply (its syntax is never among the
    text pieces: nothing of it is spoken). Sent once the call is complete, before :class:`TextDone`."""

    job: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class TextDone:
    """A :class:`Generate` job's reply is complete (or stopped after a cancel)."""

    job: int
    stats: TurnStats | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Synthesized:
    """A :class:`Synthesize` job's audio (8 kHz int16; empty when there was nothing to say)."""

    job: int
    audio: Pcm


@dataclass(frozen=True, slots=True)
class TurnEndPredicted:
    """A :class:`PredictTurnEnd` job's answer: the probability that the turn is complete."""

    job: int
    probability: float


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The job could not be done (a model error, or the inference process is gone)."""

    job: int
    reason: str


JobResult = (
    Transcribed | TextPiece | ToolCallRequested | TextDone | Synthesized | TurnEndPredicted | JobFailed
)

__all__ = [
    "Generate",
    "Job",
    "JobFailed",
    "JobResult",
    "PredictTurnEnd",
    "Synthesize",
    "Synthesized",
    "TextDone",
    "TextPiece",
    "ToolCallRequested",
    "Transcribe",
    "Transcribed",
    "TurnEndPredicted",
]
