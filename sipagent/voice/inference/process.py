"""The models in a process of their own (``[agent] inference = "process"``, the default).

Why a process: the models' native kernels release the GIL, but their Python parts do not
(llama-cpp-python's per-token loop, the tokenizers, Piper's glue); each holds the GIL for up to
CPython's 5 ms switch interval, which every call's 20 ms tick would wait out (decision 0011).

The wire is one duplex :func:`multiprocessing.Pipe` carrying tuples of the job types themselves::

    server → worker   ("job", job)  ("cancel", job_id)  ("release", conversation)  ("stop",)
    worker → server   ("ready", pid)  ("load_failed", message)  ("result", result, made_at)

**No polling on either side.** The server reads the pipe on its event loop (``add_reader``: the
loop wakes when a result is written); the worker's main thread blocks in ``recv`` and hands each job
to its pool at once, and a cancel sets the job's event, which a reply checks before its next token.
``made_at`` (``time.monotonic()``, one clock for every process of the machine) lets the server
measure the hand-over.

**Priority.** The worker loads its models at normal priority, so start-up is quick whatever else
runs, and the server accepts no call before they are ready. Then every thread of the worker drops
to ``nice`` (default 5, decision 0017): the media loop wins a contended core, the models still get
a bounded share of it, so a busy box slows replies down instead of silencing them (SCHED_IDLE,
still available as ``sched = "idle"``, gives them nothing while anything else runs). A worker that
dies (a crash, the OOM killer) fails its jobs at once and is started again with a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ...logs import LogSetup, install_logging
from ..jobs import Job, JobResult
from .loading import InferenceConfig, ModelLoadError, load_models, set_process_nice
from .service import InferenceService
from .worker import JobWorker

log = logging.getLogger("sipagent.voice.inference")

#: How long the server waits at shutdown for the worker to finish its jobs and exit.
_STOP_TIMEOUT_S = 10.0
#: The longest wait before starting a worker again after one died (0.5 s at first, doubling).
_RESTART_MAX_DELAY_S = 30.0


class ProcessInference(InferenceService):
    """The server's end (see the module docstring). Make it with :meth:`start`."""

    def __init__(self, config: InferenceConfig) -> None:
        super().__init__()
        self.config = config
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._closing = False
        self._restart: asyncio.Task[None] | None = None
        #: Workers started after one died.
        self.restarts = 0

    @classmethod
    async def start(cls, config: InferenceConfig) -> ProcessInference:
        """Start the worker and wait until its models are loaded and warm (seconds). Raises
        :class:`~.loading.ModelLoadError` if it cannot load them."""
        service = cls(config)
        await service._spawn()
        return service

    @property
    def pid(self) -> int | None:
        """The worker's process id (None while none runs)."""
        return self._process.pid if self._process is not None else None

    # -- the worker's life -----------------------------------------------------------------------
    async def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked threads
        conn, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=_worker_main, args=(child_end, self.config), name="sipagent-inference", daemon=True
        )
        process.start()
        child_end.close()  # the worker's death now reads as end-of-file here
        ready: asyncio.Future[None] = self._loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(conn.fileno(), readable)
        try:
            await ready
            first = conn.recv()
        except (EOFError, OSError):
            await asyncio.to_thread(process.join, 2.0)
            raise ModelLoadError(
                f"the inference process exited (code {process.exitcode}) while loading the models; "
                "its log is above"
            ) from None
        except BaseException:
            process.kill()
            raise
        finally:
            self._loop.remove_reader(conn.fileno())
            if not ready.done():
                conn.close()
        if first[0] != "ready":
            conn.close()
            await asyncio.to_thread(process.join, _STOP_TIMEOUT_S)
            raise ModelLoadError(str(first[1]))
        self._conn, self._process = conn, process
        self._loop.add_reader(conn.fileno(), self._readable)
        log.info("inference process %d serves the models", process.pid)

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "result":
                    self._route(message[1], message[2])
        except (EOFError, OSError):
            self._gone()

    def _gone(self) -> None:
        """The worker's end of the pipe closed: fail what waits for it, start another."""
        self._disconnect()
        process, self._process = self._process, None
        code = process.exitcode if process is not None else None
        reason = f"the inference process exited (code {code})"
        self._fail_all(reason)
        if self._closing:
            return
        delay = min(_RESTART_MAX_DELAY_S, 0.5 * 2 ** min(self.restarts, 6))
        log.error("%s; starting another in %.1f s", reason, delay)
        self._restart = self._loop.create_task(self._start_again(delay, process))

    async def _start_again(self, delay: float, dead: BaseProcess | None) -> None:
        if dead is not None:
            await asyncio.to_thread(dead.join, 2.0)
        await asyncio.sleep(delay)
        if self._closing:
            return
        try:
            await self._spawn()
        except ModelLoadError as exc:
            log.error("the inference process cannot be restarted: %s", exc)
            return
        self.restarts += 1

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(conn.fileno())
            conn.close()

    # -- jobs ------------------------------------------------------------------------------------
    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise OSError("no inference process is running")
        self._conn.send(message)

    def _send_job(self, job: Job) -> None:
        self._send(("job", job))

    def _send_cancel(self, job_id: int) -> None:
        with contextlib.suppress(OSError):
            self._send(("cancel", job_id))

    def release(self, conversation: int) -> None:
        """Free the call's chat session in the worker."""
        with contextlib.suppress(OSError):
            self._send(("release", conversation))

    async def aclose(self) -> None:
        """Stop the worker (it finishes its jobs' current steps and exits), or kill it."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
        process = self._process
        with contextlib.suppress(OSError):
            self._send(("stop",))
        self._fail_all("the models were shut down")
        if process is not None:
            await asyncio.to_thread(process.join, _STOP_TIMEOUT_S)
            if process.is_alive():
                log.warning("the inference process did not stop in %.0f s; killing it", _STOP_TIMEOUT_S)
                process.kill()
                await asyncio.to_thread(process.join)
        self._disconnect()
        self._process = None


# -- the worker -------------------------------------------------------------------------------------
def _leave_the_media_class(cpus: tuple[int, ...] | None) -> None:
    """The worker inherits the scheduling of the server's thread that started it, the media loop's:
    a real-time class or a raised nice value (``rtp.loop_nice``) would let the models starve the
    media. It loads in the normal class at nice 0 (threads inherit it), on ``cpus``."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: run as is
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if os.getpriority(os.PRIO_PROCESS, 0) < 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)  # lowering one's own priority needs no privilege
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)  # validated against this machine's CPUs with the settings


def _run_at_serving_priority(config: InferenceConfig) -> None:
    """Loaded: every thread down to the serving priority (see the module docstring)."""
    if config.sched == "idle" and hasattr(os, "SCHED_IDLE"):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))
    set_process_nice(config.nice)


def _worker_main(conn: Connection, config: InferenceConfig) -> None:
    """The inference process's whole life: load, announce, serve until told to stop or orphaned."""
    # The server owns this process: it says "stop", or its end of the pipe closes when it dies. A
    # Ctrl-C or a SIGTERM sent to the whole process group (a terminal, a service manager) must not
    # kill it under the server, which would log a crash and start another while shutting down.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _leave_the_media_class(config.cpus)
    # The server's own setup (format, masking, secrets), its lines tagged [inference]: they share
    # the server's stderr.
    install_logging(config.logs or LogSetup(config.log_level), process="inference")
    try:
        models = load_models(config)
    except ModelLoadError as exc:
        conn.send(("load_failed", str(exc)))
        return
    _run_at_serving_priority(config)
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="sipagent-infer")

    lock = threading.Lock()  # Connection.send is not thread-safe: the pool's threads take turns

    def send(result: JobResult) -> None:
        with lock, contextlib.suppress(OSError):  # the server is gone: the loop below ends
            conn.send(("result", result, time.monotonic()))

    worker = JobWorker(models, executor, send)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the server is gone
                break
            kind = message[0]
            if kind == "job":
                worker.submit(message[1])
            elif kind == "cancel":
                worker.cancel(message[1])
            elif kind == "release":
                executor.submit(worker.release, message[1])
            elif kind == "stop":
                break
    finally:
        worker.close()
        executor.shutdown(wait=True, cancel_futures=True)
        models.close()


__all__ = ["ProcessInference"]
