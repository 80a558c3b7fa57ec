"""Sample-rate conversion between the telephone rate (8 kHz) and the models' rates.

Whisper wants 16 kHz; Piper voices speak at their own rate (22.05 kHz for the default). Conversion is
polyphase FIR (``scipy.signal.resample_poly``): exact rational ratios (8000→16000 is 2/1,
22050→8000 is 160/441), a linear-phase anti-aliasing filter so nothing above 4 kHz folds into the
phone band, and no FFT-length edge artefacts. Each utterance or sentence is converted in one piece,
once, so no filter state has to be carried between calls.

Samples are int16 at the edges and float32 inside: filtering in integers would overflow or round at
every tap, and float32 is what the models take and give anyway.
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

#: The rate of G.711 RTP audio.
TELEPHONE_RATE = 8000
#: The rate Whisper models take.
WHISPER_RATE = 16000

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

_INT16_SCALE = 32768.0


def int16_to_float32(pcm: npt.NDArray[np.int16]) -> Float32Array:
    """int16 samples as float32 in [-1, 1)."""
    return (np.asarray(pcm, dtype=np.float32) / _INT16_SCALE).astype(np.float32, copy=False)


def float32_to_int16(audio: npt.NDArray[np.floating]) -> Int16Array:
    """float samples in [-1, 1] as int16, clipped (a filter's overshoot must not wrap around)."""
    scaled = np.clip(np.rint(np.asarray(audio, dtype=np.float32) * _INT16_SCALE), -32768, 32767)
    out: Int16Array = scaled.astype(np.int16)
    return out


def resample_float(audio: npt.NDArray[np.floating], src_rate: int, dst_rate: int) -> Float32Array:
    """Resample float audio from ``src_rate`` to ``dst_rate`` (Hz); float32 out."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} and {dst_rate}")
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {samples.shape}")
    if src_rate == dst_rate or samples.size == 0:
        return samples.copy() if src_rate == dst_rate else np.zeros(0, dtype=np.float32)
    divisor = gcd(src_rate, dst_rate)
    out = resample_poly(samples, dst_rate // divisor, src_rate // divisor)
    return np.asarray(out, dtype=np.float32)


def resample_int16(pcm: npt.NDArray[np.int16], src_rate: int, dst_rate: int) -> Int16Array:
    """Resample int16 audio from ``src_rate`` to ``dst_rate`` (Hz); int16 out, float32 inside."""
    return float32_to_int16(resample_float(int16_to_float32(pcm), src_rate, dst_rate))


def telephone_to_whisper(pcm_8k: npt.NDArray[np.int16]) -> Float32Array:
    """8 kHz int16 call audio as the 16 kHz float32 array faster-whisper takes (no int16 round trip)."""
    return resample_float(int16_to_float32(pcm_8k), TELEPHONE_RATE, WHISPER_RATE)


def upsample_8k_to_16k(pcm_8k: npt.NDArray[np.int16]) -> Int16Array:
    """8 kHz int16 to 16 kHz int16."""
    return resample_int16(pcm_8k, TELEPHONE_RATE, WHISPER_RATE)


def to_telephone(audio: npt.NDArray[np.floating], src_rate: int) -> Int16Array:
    """Float audio at a model's rate (e.g. Piper's 22050 Hz) as 8 kHz int16, ready for G.711."""
    return float32_to_int16(resample_float(audio, src_rate, TELEPHONE_RATE))
