"""Speech to text: one finished caller utterance (8 kHz int16) in, its text out.

:class:`Transcriber` is the interface the pipeline uses; :class:`WhisperTranscriber` runs
faster-whisper (CTranslate2) in-process and ``tests/fakes.py`` has a scripted fake for tests of
timing and control flow.

The pipeline segments speech itself (WebRTC VAD and end-of-turn), so each call here is one utterance:
Whisper's own VAD is off, there is no previous text to condition on, and no timestamps are decoded.
``transcribe`` blocks for the whole utterance; call it from a worker thread. Stock faster-whisper
pads every input to Whisper's 30 s window, and the encoder's cost grows faster than linearly with
it (tiny.en on 2 cores: 30 s 390 ms, 10 s 130 ms per utterance), so we encode a shorter window
(``window_s``, default 5 s, the utterance padded up to a multiple of it) through CTranslate2 directly, with
faster-whisper's features, tokenizer and token suppression (decision 0009). CTranslate2 releases
the GIL while it runs, and one loaded model may be shared by every call: concurrent calls queue
inside CTranslate2 (or run in parallel with ``num_workers`` > 1, at the cost of a copy of the
model's working memory per worker).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from .resample import TELEPHONE_RATE, telephone_to_whisper

if TYPE_CHECKING:
    from ..config import SttSettings

#: Whisper's window, as trained.
_FULL_WINDOW_S = 30
_MAX_TOKENS_PER_S = 12

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
        cpu_threads: int = 1,
        num_workers: int = 1,
        beam_size: int = 1,
        language: str | None = "en",
        prompt: str | None = None,
        window_s: int = 5,
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
        if not 1 <= window_s <= _FULL_WINDOW_S:
            raise ValueError(f"stt.window_s must be 1-{_FULL_WINDOW_S} s, got {window_s}")
        self.window_s = window_s
        #: Utterances re-decoded on the full window because the short one repeated itself.
        self.fallbacks = 0
        #: Utterances whose repeated tail was cut off instead.
        self.collapsed = 0
        self._decoder = _WindowDecoder(self._model, language, prompt or None, beam_size)

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
            window_s=settings.window_s,
        )

    def transcribe(self, pcm_8k: npt.NDArray[np.int16]) -> Transcript:
        """Transcribe one utterance; upsampled once to 16 kHz, decoded greedily by default."""
        pcm = _check_pcm(pcm_8k)
        duration = pcm.size / TELEPHONE_RATE
        if pcm.size == 0:
            return Transcript("", 1.0, 0.0, 0.0)
        audio = telephone_to_whisper(pcm)
        if duration > _FULL_WINDOW_S - 1 or self.window_s >= _FULL_WINDOW_S:
            return self._transcribe_stock(audio, duration)
        # The next multiple of the window, with a second to spare: the utterance must not end at
        # the window's edge, where Whisper expects words cut in two.
        window = min(_FULL_WINDOW_S, self.window_s * math.ceil((duration + 1) / self.window_s))
        transcript = self._decoder.decode(audio, window, duration)
        if window < _FULL_WINDOW_S and _repeats_itself(transcript.text):
            # A short window's known failure: the decoder says the utterance again ("ten of clubs.
            # ten of clubs."). A clean loop is cut back to its first pass, for free; anything
            # messier is decoded again on the window Whisper was trained on (~4x the time).
            collapsed = _without_repeats(transcript.text)
            if collapsed is not None:
                self.collapsed += 1
                return replace(transcript, text=collapsed)
            self.fallbacks += 1
            return self._transcribe_stock(audio, duration)
        return transcript

    def _transcribe_stock(self, audio: npt.NDArray[np.float32], duration: float) -> Transcript:
        """faster-whisper's own path: 30 s windows (and several of them for a longer input)."""
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


class _WindowDecoder:
    """One utterance, one encoder window shorter than 30 s, one greedy (or beam) decode.

    The same request faster-whisper builds for a single window (its tokenizer's start sequence,
    ``<|notimestamps|>``, the initial prompt after ``<|startofprev|>``, its suppressed tokens) sent
    to CTranslate2 with the features padded to ``window`` seconds instead of 30.
    """

    def __init__(self, model: Any, language: str | None, prompt: str | None, beam_size: int) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._model = model
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language or "en"
        )
        self._tokenizer = tokenizer
        prefix: list[int] = []
        if prompt:
            # openai/whisper keeps the last half of the context for the previous text (223 tokens).
            prefix = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-223:]]
        self._prompt = [*prefix, *tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        self._beam_size = beam_size

    def decode(self, audio: npt.NDArray[np.float32], window: int, duration: float) -> Transcript:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_ctranslate2_storage

        extractor = self._model.feature_extractor
        features = pad_or_trim(extractor(audio), window * extractor.sampling_rate // extractor.hop_length)
        result = self._model.model.generate(
            get_ctranslate2_storage(features[np.newaxis]),
            [self._prompt],
            beam_size=self._beam_size,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            # A phone utterance is words at ~3 tokens/s; a cap at several times that stops a
            # repetition loop (a known Whisper failure on short windows) long before 448 tokens.
            max_length=len(self._prompt) + _MAX_TOKENS_PER_S * math.ceil(duration) + 16,
        )[0]
        tokens = result.sequences_ids[0]
        text = self._tokenizer.decode(tokens).strip()
        # CTranslate2 returns the cumulative log probability; Whisper averages it over the tokens + 1.
        avg_logprob = float(result.scores[0]) / (len(tokens) + 1)
        no_speech = float(result.no_speech_prob) if text else 1.0
        return Transcript(text, no_speech, avg_logprob, duration)


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'").lower() for w in text.split()]


def _restart_at(words: list[str]) -> int | None:
    """Where the decoder started the utterance over and was cut off ("a b c d. a b c"): the index
    from which the rest (three words or more, no longer than what came before) repeats the start."""
    count = len(words)
    for start in range((count + 1) // 2, count - 2):
        if words[start:] == words[: count - start]:
            return start
    return None


def _repeats_itself(text: str) -> bool:
    """Whether the text ends with a run of two or more words said twice in a row, or starts over."""
    words = _words(text)
    return _restart_at(words) is not None or any(
        words[-size:] == words[-2 * size : -size] for size in range(2, len(words) // 2 + 1)
    )


def _without_repeats(text: str) -> str | None:
    """``text`` with its tail repetitions removed ("a b c. a b c. a b c." -> "a b c."; a second
    pass cut short, "a b c d. a b c", too), or None when what is left still repeats itself (not a
    clean loop)."""
    tokens = text.split()
    words = _words(text)
    restart = _restart_at(words)
    if restart is not None:
        del tokens[restart:], words[restart:]
    while True:
        for size in range(2, len(words) // 2 + 1):
            if words[-size:] == words[-2 * size : -size]:
                del tokens[-size:], words[-size:]
                break
        else:
            break
    result = " ".join(tokens)
    # A run of three or more words said twice anywhere is a loop that did not end cleanly.
    looped = any(
        words[i : i + size] == words[i + size : i + 2 * size]
        for size in range(3, len(words) // 2 + 1)
        for i in range(len(words) - 2 * size + 1)
    )
    return None if not result or looped or _repeats_itself(result) else result


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
