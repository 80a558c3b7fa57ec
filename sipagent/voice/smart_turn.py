"""Smart Turn v3: the probability that the caller's turn is complete, from the turn's audio alone.

The model (``models/smart-turn-v3.2-cpu.onnx``, BSD-2, Daily; the int8 CPU export pipecat bundles,
taken from the ``pipecat-ai`` wheel without installing pipecat) is a Whisper-tiny encoder with a
classifier head. It hears the end of a turn (intonation, a final word that closes a sentence or one
that leaves it hanging) and says whether the speaker has finished: a complete sentence can end the
turn sooner, an unfinished one waits.

Preprocessing, as pipecat 1.14.0 does it (``LocalSmartTurnAnalyzerV3._predict_endpoint`` and its
base ``BaseSmartTurn._process_speech_segment``):

1. the turn's audio as float32 in [-1, 1) (int16 / 32768), at most its last 8 s;
2. resampled to 16 kHz (pipecat: soxr; here :mod:`sipagent.voice.resample`'s polyphase filter);
3. its last 8 s (128 000 samples) kept, or zeros put **in front** to make 8 s, so the end of the
   turn is always at the end of the window;
4. normalised to zero mean and unit variance over that padded window (``do_normalize=True``, in
   float32, variance + 1e-7);
5. Whisper log-mel features with ``chunk_length`` 8: 80 mels, n_fft 400, hop 160, 800 frames,
   log10 clamped 8 below the maximum, then ``(x + 4) / 4``. Computed by faster-whisper's numpy
   ``FeatureExtractor`` (``padding=0``: its default pads 160 zeros and yields 801 frames), whose
   output matches pipecat's vendored ``compute_whisper_log_mel_features`` to within 5e-6;
6. ``input_features`` ``(1, 80, 800)`` in, one probability out (the graph ends in a sigmoid, though
   its output is named ``logits``); complete when above 0.5.

What audio to pass: pipecat passes the turn from 500 ms before the VAD's speech start up to the
moment it asks, which includes the silence so far after the last word (the VAD's stop time, 200 ms
in pipecat's recommended setup). The model was trained on turns with that trailing silence.

An inference costs tens of milliseconds (docs/decisions/0015-endpointing.md): call it from the
inference process as a job when the caller pauses, never on the media event loop.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..model_paths import resolve_model_path
from .resample import TELEPHONE_RATE, WHISPER_RATE, resample_float

#: The model, installed by ``scripts/fetch_models.py`` (see ``sipagent.voice.models.MANIFEST``).
DEFAULT_SMART_TURN_MODEL = Path("models/smart-turn-v3.2-cpu.onnx")
#: The model's window (seconds) and rate.
WINDOW_S = 8
MODEL_RATE = WHISPER_RATE
#: pipecat's decision: complete when the probability is above this.
DEFAULT_THRESHOLD = 0.5
#: Audio before the speech start that pipecat includes in a turn (``SmartTurnParams.pre_speech_ms``).
PRE_SPEECH_S = 0.5

_N_MELS = 80
_FRAMES = WINDOW_S * MODEL_RATE // 160
_NORM_EPS = 1e-7
_INT16_SCALE = 32768.0

Float32Array = npt.NDArray[np.float32]


@cache
def _extractor() -> Any:
    # Built once (its mel filter bank is the costly part); it keeps no state between calls.
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=_N_MELS, sampling_rate=MODEL_RATE, chunk_length=WINDOW_S)


def turn_features(audio: npt.NDArray[np.int16], rate: int = TELEPHONE_RATE) -> Float32Array:
    """Smart Turn's input for a turn: ``(80, 800)`` log-mel features of its last 8 s (steps 1-5 of
    the module docstring). ``audio`` is int16 mono at ``rate`` (8 kHz from the line)."""
    if not isinstance(audio, np.ndarray) or audio.dtype != np.int16 or audio.ndim != 1:
        got = f"{audio.dtype} {audio.shape}" if isinstance(audio, np.ndarray) else type(audio).__name__
        raise ValueError(f"a turn's audio is 1-D int16 samples, got {got}")
    if audio.size == 0:
        raise ValueError("a turn's audio is empty")
    tail = audio[-WINDOW_S * rate :].astype(np.float32) / _INT16_SCALE
    wave = resample_float(tail, rate, MODEL_RATE)[-WINDOW_S * MODEL_RATE :]
    window = np.zeros(WINDOW_S * MODEL_RATE, dtype=np.float32)
    window[window.size - wave.size :] = wave
    # float32 throughout, as transformers (and pipecat after it) normalise the padded buffer.
    window = (window - window.mean()) / np.sqrt(window.var() + np.float32(_NORM_EPS))
    features = np.asarray(_extractor()(window.astype(np.float32), padding=0), dtype=np.float32)
    if features.shape != (_N_MELS, _FRAMES):
        raise AssertionError(f"Whisper features came out {features.shape}, not {(_N_MELS, _FRAMES)}")
    return features


class SmartTurn:
    """The loaded Smart Turn v3 model; :meth:`probability` of a turn's 8 kHz audio being complete.

    Holds no per-call state: one instance may serve every call (onnxruntime sessions may be run
    from several threads at once).
    """

    def __init__(
        self,
        model_path: Path = DEFAULT_SMART_TURN_MODEL,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        threads: int = 1,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"Smart Turn threshold must be in (0, 1), got {threshold}")
        path = resolve_model_path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no Smart Turn model {path}; run `make install` (scripts/fetch_models.py)"
            )
        # Imported here so that importing this module needs no onnxruntime.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A pool thread spinning between operators would take a core from STT and the LLM (tts.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.threshold = threshold
        self.model_path = path

    def features(self, audio: npt.NDArray[np.int16], rate: int = TELEPHONE_RATE) -> Float32Array:
        """The model's input for a turn (see :func:`turn_features`)."""
        return turn_features(audio, rate)

    def probability(self, audio: npt.NDArray[np.int16], rate: int = TELEPHONE_RATE) -> float:
        """The probability (0-1) that the turn whose audio this is, up to now, is complete."""
        features = self.features(audio, rate)
        (out,) = self._session.run(None, {"input_features": features[np.newaxis]})
        return float(np.asarray(out).reshape(-1)[0])

    def is_complete(self, audio: npt.NDArray[np.int16], rate: int = TELEPHONE_RATE) -> bool:
        """True when :meth:`probability` is above the threshold (0.5 by default, as pipecat)."""
        return self.probability(audio, rate) > self.threshold


__all__ = [
    "DEFAULT_SMART_TURN_MODEL",
    "DEFAULT_THRESHOLD",
    "MODEL_RATE",
    "PRE_SPEECH_S",
    "WINDOW_S",
    "SmartTurn",
    "turn_features",
]
