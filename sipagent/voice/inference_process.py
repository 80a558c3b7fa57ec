"""The models in a process of their own (``[agent] inference = "process"``, the default).

Why a process: the models' native kernels release the GIL, but their Python parts do not
(llama-cpp-python's per-token loop, the tokenizers, Piper's phonemizer glue, faster-whisper's
segment loop). Each holds the GIL for up to CPython's 5 ms switch interval, and every call's 20 ms
tick on the event loop waits that out: with the models busy, the media loop's p99 send error went
from 0.9 ms to 2.6 ms (decision 0011). In a child process the models have a GIL of their own, run at
a lower priority as a whole (``agent.inference_nice``, and never in the real-time class the media
process may be in), and what the media process does for them is unpickling a message now and then.

The wire is one duplex :func:`multiprocessing.Pipe` carrying tuples; request ids tie answers to
requests, so any number of calls share it::

    parent → worker   ("stt", id, pcm)  ("tts", id, text)  ("llm", id, key, system_prompt, turns)
                      ("cancel", id)  ("release", key)  ("stop",)
    worker → parent   ("ready", what)  ("load_failed", message)
                      ("result", id, value)  ("piece", id, text)  ("done", id, stats)
                      ("failed", id, message)

The parent keeps every call's history (:class:`~sipagent.voice.llm.ChatSession`, as in thread mode);
each reply request carries it, and the worker keeps a mirror session per call so the llama.cpp
backend keeps that call's KV cache between turns. The worker is started with ``spawn`` (a fresh
interpreter: forking a process that already runs threads is unsafe) and ends when the parent's end
of the pipe closes, so a killed server leaves no orphan holding a GPU.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import weakref
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import Settings
from .agent import Models
from .llm import ChatSession, LlmError, _ChatBase
from .pipeline import ModelLoadError, close_models, load_models_here, lower_thread_priority
from .stt import Transcript
from .tts import synthesize_whole

log = logging.getLogger("sipagent.voice.inference")

#: How often a waiting reply looks at its cancel flag (a barge-in reaches the worker this late, at most).
_CANCEL_POLL_S = 0.010
#: How long the server waits at shutdown for the worker to finish its jobs and exit.
_STOP_TIMEOUT_S = 10.0
#: The longest wait before starting a worker again after one died (0.5 s at first, doubling).
_RESTART_MAX_DELAY_S = 30.0


class InferenceError(RuntimeError):
    """The inference process failed a job, or is gone; the message says which and why."""


class _Client:
    """The parent's end of the pipe: sends requests (from any thread) and routes every answer to the
    queue of the request it answers, from one reader thread."""

    def __init__(
        self,
        conn: Connection,
        process: multiprocessing.process.BaseProcess,
        nice: int,
        restart: Callable[[], _Spawned] | None = None,
    ) -> None:
        self._conn = conn
        self._nice = nice
        self._process = process
        self._restart = restart
        #: Workers started after one died (a crash, the kernel's OOM killer).
        self.restarts = 0
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self._lock = threading.Lock()
        self._gone: str | None = None
        self._close_lock = threading.Lock()
        self._join_lock = threading.Lock()
        self._closing = threading.Event()  # set: an exit from here on is the one close() asked for
        self._reader = threading.Thread(target=self._read, name="sipagent-inference-reader", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            if self._gone is not None:
                raise InferenceError(self._gone)
            try:
                self._conn.send(message)
            except (OSError, ValueError) as exc:  # the worker died; the reader reports why
                raise InferenceError(f"the inference process is gone ({exc})") from exc

    def request(self, kind: str, *args: Any) -> tuple[int, queue.SimpleQueue[tuple[Any, ...]]]:
        """Send a job; its answers arrive on the returned queue as ``(kind, *values)``."""
        rid = next(self._ids)
        answers: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        with self._lock:
            self._pending[rid] = answers
        try:
            self.send((kind, rid, *args))
        except BaseException:
            self.finish(rid)
            raise
        return rid, answers

    def finish(self, rid: int) -> None:
        """The request needs no more answers."""
        with self._lock:
            self._pending.pop(rid, None)

    def call(self, kind: str, *args: Any) -> Any:
        """One job, one result (blocking: run it on a worker thread)."""
        rid, answers = self.request(kind, *args)
        try:
            return _value(answers.get())
        finally:
            self.finish(rid)

    def _read(self) -> None:
        lower_thread_priority(self._nice)
        while True:
            self._route_answers()
            reason = self._worker_gone()
            if self._closing.is_set() or self._restart is None:
                return
            # A crash (or the OOM killer) ends the worker, not the service: start another. Jobs
            # asked for meanwhile fail at once (that turn goes unanswered) rather than wait.
            delay = min(_RESTART_MAX_DELAY_S, 0.5 * 2 ** min(self.restarts, 6))
            log.error("%s; starting another in %.1f s", reason, delay)
            if self._closing.wait(delay):
                return
            try:
                conn, process, _ = self._restart()
            except ModelLoadError as exc:
                log.error("the inference process cannot be restarted: %s", exc)
                return
            with self._send_lock, self._lock:
                if self._closing.is_set():
                    process.kill()
                    conn.close()
                    return
                self._conn, self._process, self._gone = conn, process, None
            self.restarts += 1

    def _route_answers(self) -> None:
        conn = self._conn
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            with self._lock:
                answers = self._pending.get(message[1])
            if answers is not None:  # else: a job given up on (the call ended), its late answer
                answers.put((message[0], *message[2:]))

    def _join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the worker to exit; whether it has. One thread at a time:
        two waiting at once race in waitpid(), and the loser's ECHILD reads as "still running"
        (close() then warned and sent SIGKILL to a pid that was already reaped)."""
        with self._join_lock:
            self._process.join(timeout=timeout)
            return not self._process.is_alive()

    def _worker_gone(self) -> str:
        """The worker's end of the pipe closed: fail everything waiting for it."""
        self._join(1.0)
        reason = f"the inference process exited (code {self._process.exitcode})"
        with self._send_lock, self._lock:
            self._gone = reason
            pending, self._pending = self._pending, {}
        self._close_connection()
        for answers in pending.values():
            answers.put(("gone", reason))
        return reason

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(InferenceError):
            self.send(("stop",))
        if not self._join(_STOP_TIMEOUT_S):
            log.warning("the inference process did not stop in %.0f s; killing it", _STOP_TIMEOUT_S)
            with self._join_lock:
                self._process.kill()
                self._process.join()
        # The worker is gone, so the reader sees the pipe end and closes it; closing it here first
        # would not wake a reader blocked in recv().
        self._reader.join(timeout=2.0)
        self._close_connection()

    def _close_connection(self) -> None:
        # The reader and close() may both get here: close the descriptor once (twice could close
        # a descriptor the process has since opened for something else).
        with self._close_lock:
            if not self._conn.closed:
                self._conn.close()


def _value(answer: tuple[Any, ...]) -> Any:
    kind = answer[0]
    if kind == "result":
        return answer[1]
    if kind in ("failed", "gone"):
        raise InferenceError(answer[1])
    raise InferenceError(f"unexpected answer from the inference process: {kind!r}")


class RemoteTranscriber:
    """:class:`~sipagent.voice.stt.Transcriber` whose Whisper runs in the inference process."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    def transcribe(self, pcm_8k: npt.NDArray[np.int16]) -> Transcript:
        """Transcribe one utterance (blocking)."""
        result: Transcript = self._client.call("stt", np.ascontiguousarray(pcm_8k, dtype=np.int16))
        return result


class RemoteSynthesizer:
    """:class:`~sipagent.voice.tts.Synthesizer` whose Piper voice runs in the inference process."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    def synthesize(self, text: str) -> Iterator[npt.NDArray[np.int16]]:
        """The audio of ``text`` as one chunk, once made (the agent sends one clause at a time)."""
        audio: npt.NDArray[np.int16] = self._client.call("tts", text)
        if audio.size:
            yield audio


class RemoteChat(_ChatBase):
    """:class:`~sipagent.voice.llm.ChatModel` whose model runs in the inference process: sessions
    (histories) live here, each reply streams back piece by piece."""

    def __init__(self, client: _Client, system_prompt: str) -> None:
        self._client = client
        self.system_prompt = system_prompt
        self._keys: weakref.WeakKeyDictionary[ChatSession, int] = weakref.WeakKeyDictionary()
        self._next_key = itertools.count(1)

    def new_session(self, system_prompt: str | None = None) -> ChatSession:
        """A new call's conversation; the worker makes its mirror on the first reply."""
        session = super().new_session(system_prompt)
        self._keys[session] = next(self._next_key)
        return session

    def _release(self, session: ChatSession) -> None:
        key = self._keys.pop(session, None)
        if key is not None:
            with contextlib.suppress(InferenceError):  # the worker is gone: nothing kept to free
                self._client.send(("release", key))

    def _stream(self, session: ChatSession, cancel: threading.Event | None) -> Generator[str, None, None]:
        turns = tuple((turn.role, turn.text) for turn in session.history)
        rid, answers = self._client.request("llm", self._keys[session], session.system_prompt, turns)
        cancelled = finished = False
        try:
            while True:
                if not cancelled and cancel is not None and cancel.is_set():
                    self._client.send(("cancel", rid))  # the worker stops at its next token
                    cancelled = True
                try:
                    answer = answers.get(timeout=_CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if answer[0] == "piece":
                    if not cancelled:  # what comes after a cancel is not the caller's
                        yield answer[1]
                elif answer[0] == "done":
                    finished = True
                    session.last_stats = answer[1]
                    return
                else:
                    _value(answer)  # raises InferenceError with the worker's reason
                    raise LlmError(f"unexpected answer to a reply: {answer[0]!r}")
        finally:
            if not finished and not cancelled:
                # Closed early by its consumer: stop the worker's generation too.
                with contextlib.suppress(InferenceError):
                    self._client.send(("cancel", rid))
            self._client.finish(rid)


_Spawned = tuple[Connection, multiprocessing.process.BaseProcess, str]


def _spawn(settings: Settings) -> _Spawned:
    """Start a worker and wait until its models are loaded and warm (seconds): its pipe, its
    process and the model's default system prompt. Raises ModelLoadError if it cannot load."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe(duplex=True)
    process = context.Process(
        target=_worker_main, args=(child_end, settings), name="sipagent-inference", daemon=True
    )
    process.start()
    child_end.close()

    def died() -> ModelLoadError:
        process.join(timeout=1.0)
        return ModelLoadError(
            f"the inference process exited (code {process.exitcode}) while loading the models; "
            "its log is above"
        )

    try:
        while not parent_end.poll(0.2):
            if not process.is_alive():
                raise died()
        try:
            first = parent_end.recv()
        except EOFError:  # poll() also returns when it died and its end of the pipe closed
            raise died() from None
    except BaseException:
        process.kill()
        parent_end.close()
        raise
    if first[0] != "ready":
        process.join(timeout=_STOP_TIMEOUT_S)
        parent_end.close()
        raise ModelLoadError(str(first[1]))
    log.info("inference process %d serves the models", process.pid)
    return parent_end, process, str(first[1])


def start_inference_process(settings: Settings) -> Models:
    """Start the inference process, wait until its models are loaded and warm (seconds), and return
    models that talk to it. Raises :class:`~sipagent.voice.pipeline.ModelLoadError` if it cannot load."""
    conn, process, system_prompt = _spawn(settings)
    nice = settings.agent.inference_nice
    client = _Client(conn, process, nice, restart=lambda: _spawn(settings))
    client.start()
    # The jobs' threads here only wait for answers and pass them on; the work is the other
    # process's. They and the reader are niced too: on the media loop's core they come second.
    waiters = ThreadPoolExecutor(
        max_workers=settings.agent.workers,
        thread_name_prefix="sipagent-infer-wait",
        initializer=lower_thread_priority,
        initargs=(nice,),
    )
    return Models(
        transcriber=RemoteTranscriber(client),
        chat=RemoteChat(client, system_prompt=system_prompt),
        synthesizer=RemoteSynthesizer(client),
        executor=waiters,
        stop=client.close,
    )


# The worker ---------------------------------------------------------------------------------------
def _leave_the_media_priority(sched: str, nice: int, cpus: list[int] | None) -> None:
    """The worker inherits the server's scheduling: a real-time class would let the models starve
    the media loop. It goes to the idle class (``sched = "idle"``: any runnable normal task, the
    media loop first, preempts it at once) or the normal one, nicer still, and onto ``cpus``. Done
    on the main thread before any other starts: threads inherit all of it."""
    policy = os.SCHED_IDLE if sched == "idle" and hasattr(os, "SCHED_IDLE") else os.SCHED_OTHER
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: run as is
        if os.sched_getscheduler(0) != policy:
            os.sched_setscheduler(0, policy, os.sched_param(0))
    if nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)  # validated against this machine's CPUs with the settings


def _worker_main(conn: Connection, settings: Settings) -> None:
    """The inference process's whole life: load, announce, serve until told to stop or orphaned."""
    agent = settings.agent
    _leave_the_media_priority(agent.inference_sched, agent.inference_nice, agent.inference_cpus)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s[inference]: %(message)s"
    )
    try:
        models = load_models_here(settings)
    except ModelLoadError as exc:
        conn.send(("load_failed", str(exc)))
        return
    system_prompt = models.chat.new_session().system_prompt
    conn.send(("ready", system_prompt))
    try:
        _Worker(conn, models).serve()
    finally:
        close_models(models)


class _Worker:
    """Runs each request on the models' worker threads and sends its answers back."""

    def __init__(self, conn: Connection, models: Models) -> None:
        self._conn = conn
        self._models = models
        self._send_lock = threading.Lock()
        self._cancels: dict[int, threading.Event] = {}
        self._sessions: dict[int, ChatSession] = {}
        self._sessions_lock = threading.Lock()

    def serve(self) -> None:
        models = self._models
        handlers: dict[str, Callable[..., None]] = {
            "stt": lambda rid, pcm: self._submit(rid, models.transcriber.transcribe, pcm),
            "tts": lambda rid, text: self._submit(rid, synthesize_whole, models.synthesizer, text),
            "llm": self._reply,
            "cancel": self._cancel,
            "release": self._release,
        }
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):  # the server is gone
                return
            if message[0] == "stop":
                return
            handlers[message[0]](*message[1:])

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError):  # the server is gone: serve() returns
            self._conn.send(message)

    def _submit(self, rid: int, function: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                self._send(("result", rid, function(*args)))
            except Exception as exc:  # the parent raises it as InferenceError for this job
                log.exception("inference job %d failed", rid)
                self._send(("failed", rid, f"{type(exc).__name__}: {exc}"))

        self._models.executor.submit(run)

    def _cancel(self, rid: int) -> None:
        cancel = self._cancels.get(rid)
        if cancel is not None:
            cancel.set()

    def _reply(self, rid: int, key: int, system_prompt: str, turns: tuple[tuple[str, str], ...]) -> None:
        self._cancels[rid] = cancel = threading.Event()

        def run() -> None:
            try:
                session = self._session(key, system_prompt)
                session.rewind(0)
                for role, text in turns:
                    (session.add_user if role == "user" else session.add_assistant)(text)
                for piece in session.stream_reply(cancel):
                    self._send(("piece", rid, piece))
                self._send(("done", rid, session.last_stats))
            except Exception as exc:
                log.exception("reply %d failed", rid)
                self._send(("failed", rid, f"{type(exc).__name__}: {exc}"))
            finally:
                self._cancels.pop(rid, None)

        self._models.executor.submit(run)

    def _session(self, key: int, system_prompt: str) -> ChatSession:
        with self._sessions_lock:
            session = self._sessions.get(key)
            if session is None or session.system_prompt != system_prompt:
                session = self._sessions[key] = self._models.chat.new_session(system_prompt)
            return session

    def _release(self, key: int) -> None:
        with self._sessions_lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            self._models.executor.submit(session.close)  # it waits for the model lock
