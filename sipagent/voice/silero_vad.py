"""Silero VAD v5 on our 20 ms telephone frames: a speech probability and a voiced decision per frame.

The model (``models/silero_vad.onnx``, MIT, from the ``silero-vad`` wheel; run on onnxruntime, no
torch) is recurrent. At 8 kHz it takes 256-sample windows (32 ms), each preceded by the last 32
samples of the window before it (its *context*; zeros at the start), plus a ``(2, 1, 128)`` state
that it returns updated. This follows upstream's ``OnnxWrapper.__call__`` (``silero_vad/utils_vad.py``
in silero-vad 6.2.3) exactly: inputs ``input`` ``(1, 32 + 256)`` float32 in [-1, 1), ``state`` and
``sr`` (int64 8000); outputs the probability ``(1, 1)`` and the new state.

Frames to windows
=================
A frame is 160 samples and a window 256, so frames are queued and a window runs as soon as 256
samples are waiting: 0 or 1 window per frame (5 windows per 8 frames), never more. The windows are
consecutive and do not overlap, as in training; a frame's decision is the latest window's.

**Added delay.** Frame *k* ends at sample ``160 (k + 1)``; the latest window ends at the multiple of
256 at or before that, so the decision lags the frame's end by ``160 (k + 1) mod 256`` samples: each
of 0, 4, 8, 12, 16, 20, 24 and 28 ms once every 8 frames, **14 ms on average, 28 ms at most** (the
very first frame has no window yet and reads 0, unvoiced). Running one window per frame ending at
the frame's end would remove the lag, but the windows would then overlap and the recurrent state
would see audio twice, which the model was not trained on, at 1.6 times the cost. The lag is small next to the
model's own smoothing (measured in docs/decisions/0015-endpointing.md).

**Voiced.** A frame is voiced when the probability reaches ``threshold``, 0.7 by default, and
unvoiced when it falls below ``neg_threshold`` (default: the same, no hysteresis). Upstream's
``VADIterator`` uses 0.5 and ``threshold - 0.15``; on our telephone recordings that ends speech
25-50 ms later than 0.7/0.7 at no gain (the turn detector already bridges short dips), and a noise
burst just after the speech is called speech more often (docs/decisions/0015-endpointing.md).

One :class:`SileroModel` (an onnxruntime session, safe to call from several threads) can serve many
streams; each stream has its own :class:`SileroVad` holding its state, context and queued samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..model_paths import resolve_model_path
from ..rtp.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm

#: The model, installed by ``scripts/fetch_models.py`` (see ``sipagent.voice.models.MANIFEST``).
DEFAULT_SILERO_MODEL = Path("models/silero_vad.onnx")
#: Samples per window at 8 kHz (upstream: 256 at 8 kHz, 512 at 16 kHz).
WINDOW = 256
#: Samples of the previous window put in front of each window (upstream: 32 at 8 kHz, 64 at 16 kHz).
CONTEXT = 32
#: Shape of the recurrent state (upstream's ``reset_states``: ``zeros((2, batch, 128))``).
STATE_SHAPE = (2, 1, 128)
#: Voiced from this probability up (and, by default, unvoiced below it): decision 0015.
DEFAULT_THRESHOLD = 0.7
#: Upstream's hysteresis (``neg_threshold = threshold - 0.15``), for callers who want it.
UPSTREAM_HYSTERESIS = 0.15

_INT16_SCALE = 32768.0
_SR = np.array(SAMPLE_RATE, dtype=np.int64)

Float32Array = npt.NDArray[np.float32]


class WindowModel(Protocol):
    """What :class:`SileroVad` runs: :class:`SileroModel`, or a fake in tests of the buffering."""

    def run(self, windows: Float32Array, state: Float32Array) -> tuple[Float32Array, Float32Array]:
        """``(batch, CONTEXT + WINDOW)`` windows and a ``(2, batch, 128)`` state in; probabilities
        ``(batch,)`` and the next state out."""
        ...


class SileroModel:
    """The loaded Silero VAD network: one 32 ms window (with its context) and a state in, a speech
    probability and the next state out. Stateless itself; share it between streams."""

    def __init__(self, model_path: Path = DEFAULT_SILERO_MODEL, *, threads: int = 1) -> None:
        path = resolve_model_path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no Silero VAD model {path}; run `make install` (scripts/fetch_models.py)"
            )
        # Imported here so that importing this module (and the WebRTC default) needs no onnxruntime.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # A pool thread spinning between operators would take a core from the other calls (tts.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.model_path = path

    def run(self, windows: Float32Array, state: Float32Array) -> tuple[Float32Array, Float32Array]:
        """``windows`` ``(batch, CONTEXT + WINDOW)`` float32 and ``state`` ``(2, batch, 128)`` in;
        the probabilities ``(batch,)`` and the new state out."""
        if windows.ndim != 2 or windows.shape[1] != CONTEXT + WINDOW:
            raise ValueError(f"windows must be (batch, {CONTEXT + WINDOW}), got {windows.shape}")
        if state.shape != (2, windows.shape[0], 128):
            raise ValueError(f"state must be (2, {windows.shape[0]}, 128), got {state.shape}")
        out, new_state = self._session.run(None, {"input": windows, "state": state, "sr": _SR})
        probabilities: Float32Array = np.asarray(out, dtype=np.float32).reshape(-1)
        return probabilities, np.asarray(new_state, dtype=np.float32)


class SileroVad:
    """Silero VAD for one audio stream of 20 ms frames; the same ``is_speech`` as ``WebRtcVad``.

    Feed every frame of the stream, in order, to exactly one of :meth:`is_speech` or
    :meth:`probability` (each consumes the frame). :attr:`last_probability` and :attr:`voiced` hold
    the latest decision either way.
    """

    def __init__(
        self,
        model: WindowModel | Path = DEFAULT_SILERO_MODEL,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        neg_threshold: float | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"Silero threshold must be in (0, 1), got {threshold}")
        low = threshold if neg_threshold is None else neg_threshold
        if not 0.0 < low <= threshold:
            raise ValueError(f"Silero neg_threshold must be in (0, threshold], got {low}")
        self.model: WindowModel = SileroModel(model) if isinstance(model, Path) else model
        self.threshold = threshold
        self.neg_threshold = low
        #: Samples waiting for a window: fewer than WINDOW between frames, WINDOW + 160 at most.
        self._queue = np.zeros(WINDOW + SAMPLES_PER_FRAME, dtype=np.float32)
        self._queued = 0
        #: The model's input: context then window (one row), rebuilt in place for every window.
        self._input = np.zeros((1, CONTEXT + WINDOW), dtype=np.float32)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        #: Probability of the latest window (0 before the first).
        self.last_probability = 0.0
        #: The latest decision (with hysteresis).
        self.voiced = False
        #: Windows run since the start or the last :meth:`reset`.
        self.windows = 0

    def reset(self) -> None:
        """Forget the stream: zero state and context, drop queued samples (a new call or stream)."""
        self._queued = 0
        self._input.fill(0.0)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self.last_probability = 0.0
        self.voiced = False
        self.windows = 0

    def probability(self, frame: Pcm) -> float:
        """Consume one 20 ms frame; the speech probability of the latest complete window."""
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.int16
            or frame.shape != (SAMPLES_PER_FRAME,)
        ):
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"a frame is {SAMPLES_PER_FRAME} int16 samples (8 kHz, 20 ms), got {got}")
        end = self._queued + SAMPLES_PER_FRAME
        self._queue[self._queued : end] = frame
        self._queued = end
        if self._queued >= WINDOW:
            # Context (the previous window's last CONTEXT samples) stays at the front of _input.
            self._input[0, CONTEXT:] = self._queue[:WINDOW]
            self._input[0, CONTEXT:] /= _INT16_SCALE
            probabilities, self._state = self.model.run(self._input, self._state)
            self.last_probability = float(probabilities[0])
            self.windows += 1
            self._input[0, :CONTEXT] = self._input[0, -CONTEXT:]
            rest = self._queued - WINDOW
            self._queue[:rest] = self._queue[WINDOW : self._queued]
            self._queued = rest
        if self.voiced:
            self.voiced = self.last_probability >= self.neg_threshold
        else:
            self.voiced = self.last_probability >= self.threshold
        return self.last_probability

    def is_speech(self, frame: Pcm) -> bool:
        """Consume one 20 ms frame; True while it is voiced (see the module docstring)."""
        self.probability(frame)
        return self.voiced


__all__ = [
    "CONTEXT",
    "DEFAULT_SILERO_MODEL",
    "DEFAULT_THRESHOLD",
    "STATE_SHAPE",
    "UPSTREAM_HYSTERESIS",
    "WINDOW",
    "SileroModel",
    "SileroVad",
    "WindowModel",
]
