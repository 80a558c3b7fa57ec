"""The voice pipeline's models kept busy while the real-time media part runs (issue 4, item 5).

One *conversation* loops in the background of the benchmark's server process, exactly as a call's
turns would run in ``serve --mode agent``: Whisper transcribes a recorded utterance, SmolLM2
streams a reply to it, Piper speaks each sentence; each job on the pipeline's own worker threads
(:func:`sipagent.voice.pipeline.load_models`: same pool, same thread priorities). The media event loop
meanwhile paces its calls; the send error of its packets is then compared with a run without this
load, in the same benchmark run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sipagent.config import Settings
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.agent import Models
from sipagent.voice.pipeline import close_models, load_models

from .common import ROOT

UTTERANCE = ROOT / "fixtures" / "speech-librivox-0880.pcap"


def _caller_audio(path: Path) -> np.ndarray:
    leg = load_caller_leg(path)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets])


def _speak(models: Models, text: str) -> int:
    return sum(chunk.size for chunk in models.synthesizer.synthesize(text))


class InferenceLoad:
    """STT → LLM → TTS turns, back to back, on the pipeline's worker threads, until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.models: Models = load_models(settings)
        self.audio = _caller_audio(UTTERANCE)
        self.jobs: Counter[str] = Counter()
        self.busy_s = 0.0
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self.jobs.clear()
        self.busy_s = 0.0
        self._driver = threading.Thread(target=self._run, name="bench-inference", daemon=True)
        self._driver.start()

    def stop(self) -> None:
        self._stop.set()
        if self._driver is not None:
            self._driver.join()

    def close(self) -> None:
        self.stop()
        close_models(self.models)

    def _run(self) -> None:
        models, pool = self.models, self.models.executor
        session = models.chat.new_session()
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                text = pool.submit(models.transcriber.transcribe, self.audio).result().text
                self.jobs["stt"] += 1
                if len(session.history) > 6:
                    session.rewind(0)
                session.add_user(text or "Hello?")
                reply = pool.submit(session.reply, self._stop).result()
                self.jobs["llm"] += 1
                for sentence in filter(None, (s.strip() for s in reply.split("."))):
                    if self._stop.is_set():
                        break
                    pool.submit(_speak, models, sentence).result()
                    self.jobs["tts"] += 1
        finally:
            self.busy_s = time.perf_counter() - started
            session.close()
