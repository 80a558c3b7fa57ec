"""What a conversation runner asks of the models: submit a job, get its results on the event loop.

:class:`InferenceService` is the part both homes of the models share (:class:`.process.ProcessInference`,
:class:`.local.LocalInference`): it numbers jobs uniquely across calls (each conversation numbers its
own from 1), routes each result back to whoever submitted the job, under that job's own number, as a
call on the event loop — an event that wakes the loop, never a poll — and keeps how long results
took from existing to being handed over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Callable

from ...logs import call_scope, current_call
from ..jobs import Job, JobFailed, JobResult, TextPiece, ToolCallRequested

Deliver = Callable[[JobResult], None]
#: Results a job may send several of before its final one (TextDone, or any other result).
_PARTIAL = (TextPiece, ToolCallRequested)
#: Results whose hand-over time is kept (for the percentiles).
_DELIVERY_WINDOW = 4096


class Ticket:
    """A submitted job; :meth:`cancel` stops it (its late results are dropped)."""

    __slots__ = ("_id", "_service")

    def __init__(self, service: InferenceService, job_id: int) -> None:
        self._service = service
        self._id = job_id

    def cancel(self) -> None:
        """Stop the job (nothing if it is over)."""
        self._service._cancel(self._id)


class InferenceService:
    """Routing and bookkeeping on the event loop; subclasses move the jobs (see the module docstring)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        #: job id → (the asker's own job number, its delivery, the call it asked for: results are
        #: delivered as that call's work, so what they log carries its Call-ID; sipagent/logs.py).
        self._pending: dict[int, tuple[int, Deliver, str | None]] = {}
        #: Seconds from a result existing to its hand-over, most recent last.
        self.delivery: deque[float] = deque(maxlen=_DELIVERY_WINDOW)

    def submit(self, job: Job, deliver: Deliver) -> Ticket:
        """Run ``job``; each of its results is passed to ``deliver`` on the loop, numbered as ``job``
        is. A job that cannot be started fails (``JobFailed``), also through ``deliver``."""
        job_id = next(self._ids)
        self._pending[job_id] = (job.job, deliver, current_call())
        try:
            self._send_job(dataclasses.replace(job, job=job_id))
        except OSError as exc:
            self._fail(job_id, f"the inference process is gone ({exc})")
        return Ticket(self, job_id)

    async def run(self, job: Job) -> list[JobResult]:
        """Every result of ``job`` up to its final one (a convenience for tools and tests; a call's
        conversation submits and is delivered to instead)."""
        results: list[JobResult] = []
        done = self._loop.create_future()

        def deliver(result: JobResult) -> None:
            results.append(result)
            if not isinstance(result, _PARTIAL) and not done.done():
                done.set_result(None)

        self.submit(job, deliver)
        await done
        return results

    def release(self, conversation: int) -> None:
        """The call ``conversation`` is over: the models may forget what they kept for it."""

    def delivery_ms(self) -> tuple[float, float] | None:
        """p50 and p95 of the hand-over time (ms), or None before any result."""
        if not self.delivery:
            return None
        ordered = sorted(self.delivery)

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] * 1000

        return at(0.5), at(0.95)

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished."""
        return len(self._pending)

    # -- for subclasses --------------------------------------------------------------------------
    def _send_job(self, job: Job) -> None:
        raise NotImplementedError

    def _send_cancel(self, job_id: int) -> None:
        raise NotImplementedError

    def _cancel(self, job_id: int) -> None:
        if self._pending.pop(job_id, None) is not None:
            self._send_cancel(job_id)

    def _route(self, result: JobResult, made_at: float) -> None:
        """On the loop: hand ``result`` (made at ``made_at``, ``time.monotonic()``) to its asker."""
        entry = self._pending.get(result.job)
        if entry is None:
            return  # cancelled, or the asker gave up: a late answer
        if not isinstance(result, _PARTIAL):
            del self._pending[result.job]
        job, deliver, call = entry
        self.delivery.append(time.monotonic() - made_at)
        with call_scope(call):
            deliver(dataclasses.replace(result, job=job))

    def _fail(self, job_id: int, reason: str) -> None:
        """Fail one job, delivered on the loop's next turn (never from inside ``submit``)."""
        entry = self._pending.pop(job_id, None)
        if entry is not None:
            job, deliver, call = entry
            self._loop.call_soon(_deliver_in_call, call, deliver, JobFailed(job, reason))

    def _fail_all(self, reason: str) -> None:
        for job_id in list(self._pending):
            self._fail(job_id, reason)


def _deliver_in_call(call: str | None, deliver: Deliver, result: JobResult) -> None:
    with call_scope(call):
        deliver(result)


__all__ = ["Deliver", "InferenceService", "Ticket"]
