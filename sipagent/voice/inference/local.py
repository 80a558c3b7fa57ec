"""The models in this process, on worker threads (``[agent] inference = "threads"``).

Results reach the event loop with ``call_soon_threadsafe``, which wakes it at once. The models'
Python parts then share the media loop's GIL (decision 0011 has what that costs the packets); the
process mode is the default. Tests run fakes of the models this way.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from ..jobs import Job, JobResult
from .loading import InferenceConfig, LoadedModels, load_models, set_thread_nice
from .service import InferenceService
from .worker import JobWorker


class LocalInference(InferenceService):
    """See the module docstring; :meth:`load` loads the configured models, or pass any."""

    def __init__(
        self, models: LoadedModels, *, workers: int = 4, nice: int = 0, owns_models: bool = False
    ) -> None:
        super().__init__()
        self.models = models
        self._owns = owns_models
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="sipagent-infer",
            initializer=set_thread_nice,
            initargs=(nice,),
        )
        self._worker = JobWorker(models, self._executor, self._from_thread)
        self.closed = False

    @classmethod
    async def load(cls, config: InferenceConfig) -> LocalInference:
        """Load the configured models here (in a thread: seconds) and serve them."""
        models = await asyncio.to_thread(load_models, config)
        return cls(models, workers=config.workers, nice=config.nice, owns_models=True)

    def _from_thread(self, result: JobResult) -> None:
        if not self.closed:
            self._loop.call_soon_threadsafe(self._route, result, time.monotonic())

    def _send_job(self, job: Job) -> None:
        self._worker.submit(job)

    def _send_cancel(self, job_id: int) -> None:
        self._worker.cancel(job_id)

    def release(self, conversation: int) -> None:
        """Free the call's chat session once its last reply has returned (on a worker thread)."""
        self._executor.submit(self._worker.release, conversation)

    async def aclose(self) -> None:
        """Cancel every job, wait for the threads to return, free the models (if loaded here)."""
        self._worker.close()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self.closed = True
        self._fail_all("the models were shut down")
        if self._owns:
            self.models.close()


__all__ = ["LocalInference"]
