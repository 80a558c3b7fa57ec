"""The voice models kept busy while the real-time media part runs (issue 4, item 5; issue 13).

One *conversation* loops in the background of the benchmark's server process, as a call's turns
would in ``serve``: Whisper transcribes a recorded utterance, SmolLM2 streams a reply to it, Piper
speaks each sentence, each a job of the configured inference service (its own process, or threads of
this one: :func:`sipagent.voice.inference.start_inference`, same priorities as ``serve``). The jobs
are driven from an event loop on a thread of their own; the media event loop meanwhile paces its
calls, and the send error of its packets is compared with a run without this load, in the same
benchmark run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sipagent.config import Settings
from sipagent.layers import inference_config
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.inference import Inference, start_inference
from sipagent.voice.jobs import (
    Generate,
    Job,
    JobFailed,
    JobResult,
    Synthesize,
    TextPiece,
    Transcribe,
    Transcribed,
)
from sipagent.voice.llm import Turn

from .common import ROOT

UTTERANCE = ROOT / "fixtures" / "speech-librivox-0880.pcap"


def _caller_audio(path: Path) -> np.ndarray:
    leg = load_caller_leg(path)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets])


async def ask(service: Inference, job: Job) -> list[JobResult]:
    """Every result of ``job`` up to its final one (raises if it failed)."""
    results = await service.run(job)
    if isinstance(results[-1], JobFailed):
        raise RuntimeError(results[-1].reason)
    return results


class InferenceLoad:
    """STT → LLM → TTS turns, back to back, until stopped (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-inference", daemon=True)
        self._thread.start()
        self.service = asyncio.run_coroutine_threadsafe(
            start_inference(inference_config(settings)), self._loop
        ).result()
        self.system_prompt = settings.llm.system_prompt
        self.audio = _caller_audio(UTTERANCE)
        self.jobs: Counter[str] = Counter()
        self.busy_s = 0.0
        self._running: concurrent.futures.Future[None] | None = None
        self._stop = False

    def start(self) -> None:
        self._stop = False
        self.jobs.clear()
        self.busy_s = 0.0
        self._running = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    def stop(self) -> None:
        self._stop = True
        if self._running is not None:
            self._running.result()
            self._running = None

    def close(self) -> None:
        self.stop()
        asyncio.run_coroutine_threadsafe(self.service.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    async def _run(self) -> None:
        service, ids = self.service, iter(range(1, 1 << 62))
        turns: list[Turn] = []
        started = time.perf_counter()
        try:
            while not self._stop:
                heard = (await ask(service, Transcribe(next(ids), self.audio)))[0]
                self.jobs["stt"] += 1
                if len(turns) > 6:
                    turns.clear()
                text = heard.transcript.text if isinstance(heard, Transcribed) else ""
                turns.append(Turn("user", text or "Hello?"))
                pieces = await ask(service, Generate(next(ids), 1, self.system_prompt, tuple(turns)))
                reply = "".join(p.text for p in pieces if isinstance(p, TextPiece)).strip()
                turns.append(Turn("assistant", reply or "Okay."))
                self.jobs["llm"] += 1
                for sentence in filter(None, (s.strip() for s in reply.split("."))):
                    if self._stop:
                        break
                    await ask(service, Synthesize(next(ids), sentence))
                    self.jobs["tts"] += 1
        finally:
            self.busy_s = time.perf_counter() - started
            service.release(1)
