"""Speech to text: one finished caller utterance (8 kHz int16) in, its text out.

:class:`Transcriber` is the interface the pipeline uses; :class:`WhisperTranscriber` runs
faster-whisper (CTranslate2) in-process and :class:`FakeTranscriber` answers from a script for tests of
timing and control flow.

The pipeline segments speech itself (WebRTC VAD and end-of-turn), so each call here is one utterance:
Whisper's own VAD is off, there is no previous text to condition on, and no timestamps are decoded.
``transcribe`` blocks for the whole utterance (Whisper tiny.en encodes a fixed 30 s window, about
0.4 s on 2 cores); call it from a worker thread. CTranslate2 releases the GIL while it runs, and one
loaded model may be shared by every call: concurrent calls queue inside CTranslate2 (or run in
parallel with ``num_workers`` > 1, at the cost of a copy of the model's working memory per worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from .resample import TELEPHONE_RATE, telephone_to_whisper

if TYPE_CHECKING:
    from ..config import SttSettings

# Whisper's own rule for "this window is silence": both must hold (openai/whisper transcribe.py).
_NO_SPEECH_THRESHOLD = 0.6
_LOGPROB_THRESHOLD = -1.0


@dataclass(frozen=True)
class Transcript:
    """What was said in one utterance, with Whisper's confidence in it."""

    text: str
    """The words, stripped; empty when nothing was recognised."""
    no_speech_prob: float
    """Whisper's probability that the audio holds no speech (the highest over its segments)."""
    avg_logprob: float
    """Mean log-probability per decoded token (closer to 0 is more confident)."""
    duration: float
    """Seconds of audio transcribed."""

    @property
    def likely_silence(self) -> bool:
        """Whisper's own test for noise it would otherwise caption ("Thank you."): the pipeline should
        treat such a turn as no turn."""
        if not self.text:
            return True
        return self.no_speech_prob > _NO_SPEECH_THRESHOLD and self.avg_logprob < _LOGPROB_THRESHOLD


class Transcriber(Protocol):
    """Turns one utterance of call audio into text. Safe to call from worker threads."""

    def transcribe(self, pcm_8k: npt.NDArray[np.int16]) -> Transcript:
        """Transcribe mono 8 kHz int16 samples (one utterance)."""
        ...


def _check_pcm(pcm_8k: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    pcm = np.asarray(pcm_8k)
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"expected 1-D int16 samples at 8 kHz, got {pcm.dtype} with shape {pcm.shape}")
    return pcm


class WhisperTranscriber:
    """faster-whisper on a local CTranslate2 model folder, loaded once per process."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        num_workers: int = 1,
        beam_size: int = 1,
        language: str | None = "en",
        prompt: str | None = None,
    ) -> None:
        """Load the model in ``model_dir`` (a faster-whisper/CTranslate2 folder with ``model.bin``).

        ``device`` is "cpu", "cuda" or "auto"; ``compute_type`` e.g. "int8" (CPU), "float16" (GPU);
        ``cpu_threads`` 0 lets CTranslate2 choose. ``prompt`` is a domain prompt (names, jargon) given
        to Whisper as its initial prompt. Never downloads: a missing folder is an error.
        """
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            # faster-whisper would take a missing path for a model *name* and fetch it from a hub.
            raise FileNotFoundError(
                f"no faster-whisper model in {model_dir} (model.bin missing); "
                "run `make install` (scripts/fetch_models.py) or set stt.model"
            )
        # Imported here so that the fakes, the config and the tests of control flow need no
        # CTranslate2 (and its start-up cost) at all.
        from faster_whisper import WhisperModel

        self.model_dir = model_dir
        self.beam_size = beam_size
        self.language = language
        self.prompt = prompt or None
        self._model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )

    @classmethod
    def from_settings(cls, settings: SttSettings) -> WhisperTranscriber:
        """Build from the ``[stt]`` configuration section."""
        return cls(
            settings.model,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.num_workers,
            beam_size=settings.beam_size,
            language=settings.language,
            prompt=settings.prompt,
        )

    def transcribe(self, pcm_8k: npt.NDArray[np.int16]) -> Transcript:
        """Transcribe one utterance; upsampled once to 16 kHz, decoded greedily by default."""
        pcm = _check_pcm(pcm_8k)
        duration = pcm.size / TELEPHONE_RATE
        if pcm.size == 0:
            return Transcript("", 1.0, 0.0, 0.0)
        audio = telephone_to_whisper(pcm)
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            # One temperature: the fallback ladder (0.2 … 1.0) re-decodes hard audio up to five more
            # times, which would multiply the turn's latency exactly when the caller is hardest to hear.
            temperature=0.0,
            initial_prompt=self.prompt,
            vad_filter=False,  # the pipeline's VAD already cut this utterance
            without_timestamps=True,
            condition_on_previous_text=False,  # each utterance stands alone
            # Keep every segment and report its no-speech probability rather than dropping it here:
            # the pipeline decides (Transcript.likely_silence).
            no_speech_threshold=None,
        )
        return _collect(segments, duration)


def _collect(segments: Iterable[Any], duration: float) -> Transcript:
    """Run the lazy segment generator to the end (that is where decoding happens) and summarise."""
    texts: list[str] = []
    no_speech = 0.0
    logprob_sum = 0.0
    token_count = 0
    for segment in segments:
        texts.append(segment.text.strip())
        no_speech = max(no_speech, float(segment.no_speech_prob))
        tokens = max(len(segment.tokens), 1)
        logprob_sum += float(segment.avg_logprob) * tokens
        token_count += tokens
    text = " ".join(part for part in texts if part)
    avg_logprob = logprob_sum / token_count if token_count else 0.0
    return Transcript(text, no_speech if texts else 1.0, avg_logprob, duration)


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
