"""Runs model jobs (:mod:`sipagent.voice.jobs`) on loaded models, in worker threads, and hands each
result to a callback as soon as it exists: the same code in the inference process and in threads.

Each job runs on one of the pool's threads. A cancel sets the job's event: a reply stops before its
next token, a job not started yet never starts, a transcription or synthesis under way finishes
(tens of ms) and its result is dropped by whoever asked. A reply's tool calls are sent as
``ToolCallRequested`` once each is complete, after its text pieces and before its ``TextDone`` (a
cancelled reply calls nothing). Replies of one call run one at a time (a
cancelled speculation ends at its next token before the next reply starts), and each call's chat
session (llama.cpp's KV cache for that call) is kept between turns until the call is released.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor

from ..jobs import (
    Generate,
    Job,
    JobFailed,
    JobResult,
    PredictTurnEnd,
    Synthesize,
    Synthesized,
    TextDone,
    TextPiece,
    ToolCallRequested,
    Transcribe,
    Transcribed,
    TurnEndPredicted,
)
from ..llm import ChatSession, ToolCall
from ..tts import synthesize_whole
from .loading import LoadedModels

log = logging.getLogger("sipagent.voice.inference")


class _Call:
    """One call's chat session and the lock its replies take turns on."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.lock = threading.Lock()


class JobWorker:
    """See the module docstring. ``send`` is called from the worker threads."""

    def __init__(self, models: LoadedModels, executor: Executor, send: Callable[[JobResult], None]) -> None:
        self._models = models
        self._executor = executor
        self._send = send
        self._cancels: dict[int, threading.Event] = {}
        self._calls: dict[int, _Call] = {}
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        """Start ``job`` (its number must be unique among the jobs not finished)."""
        cancel = threading.Event()
        with self._lock:
            self._cancels[job.job] = cancel
        self._executor.submit(self._run, job, cancel)

    def cancel(self, job: int) -> None:
        """Stop job ``job`` (nothing if it is over)."""
        with self._lock:
            cancel = self._cancels.get(job)
        if cancel is not None:
            cancel.set()

    def release(self, conversation: int) -> None:
        """The call ``conversation`` is over: free its chat session (its KV cells)."""
        with self._lock:
            call = self._calls.pop(conversation, None)
        if call is not None:
            with call.lock:  # after its last reply returned
                call.session.close()

    def _run(self, job: Job, cancel: threading.Event) -> None:
        try:
            if cancel.is_set():
                return
            if isinstance(job, Transcribe):
                self._send(Transcribed(job.job, self._models.transcriber.transcribe(job.audio)))
            elif isinstance(job, Synthesize):
                models = self._models
                voice = models.synthesizer if job.voice is None else models.voices.get(job.voice)
                if voice is None:
                    self._send(JobFailed(job.job, f"the voice {job.voice} is not loaded"))
                else:
                    self._send(Synthesized(job.job, synthesize_whole(voice, job.text)))
            elif isinstance(job, Generate):
                self._generate(job, cancel)
            elif isinstance(job, PredictTurnEnd):
                turn = self._models.turn
                if turn is None:
                    self._send(JobFailed(job.job, "no end-of-turn model is loaded"))
                else:
                    self._send(TurnEndPredicted(job.job, turn.probability(job.audio)))
        except Exception as exc:  # the asker hears of it as this job's failure; the worker goes on
            log.exception("inference job %d (%s) failed", job.job, type(job).__name__)
            self._send(JobFailed(job.job, f"{type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self._cancels.pop(job.job, None)

    def _generate(self, job: Generate, cancel: threading.Event) -> None:
        with self._lock:
            call = self._calls.get(job.conversation)
            if call is None or call.session.system_prompt != job.system_prompt:
                call = self._calls[job.conversation] = _Call(self._models.chat.new_session(job.system_prompt))
        with call.lock:
            if cancel.is_set():
                return
            session = call.session
            session.rewind(0)
            for turn in job.turns:
                session.add_turn(turn)
            parts = (
                session.stream_with_tools(job.tools, cancel) if job.tools else session.stream_reply(cancel)
            )
            for part in parts:
                if isinstance(part, ToolCall):
                    self._send(ToolCallRequested(job.job, part))
                else:
                    self._send(TextPiece(job.job, part))
            self._send(TextDone(job.job, session.last_stats))

    def close(self) -> None:
        """Cancel every job and free every call's session."""
        with self._lock:
            cancels, calls = list(self._cancels.values()), list(self._calls)
        for cancel in cancels:
            cancel.set()
        for conversation in calls:
            self.release(conversation)


__all__ = ["JobWorker"]
