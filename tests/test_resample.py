"""Resampling between 8 kHz and the models' rates: lengths, pitch, level, anti-aliasing, clipping."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from sipagent.voice.resample import (
    float32_to_int16,
    int16_to_float32,
    resample_float,
    resample_int16,
    telephone_to_whisper,
    to_telephone,
    upsample_8k_to_16k,
)


def _tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: npt.NDArray[np.floating], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.argmax(spectrum) * rate / audio.size)


def _rms(audio: npt.NDArray[np.floating]) -> float:
    middle = audio[audio.size // 10 : -audio.size // 10]  # away from the filter's edge ramps
    return float(np.sqrt(np.mean(np.square(middle, dtype=np.float64))))


def test_8k_to_16k_keeps_pitch_level_and_doubles_length() -> None:
    pcm = float32_to_int16(_tone(1000, 8000, 0.5))
    up = upsample_8k_to_16k(pcm)
    assert up.dtype == np.int16 and up.size == 2 * pcm.size
    assert _peak_hz(up.astype(np.float32), 16000) == pytest.approx(1000, abs=5)
    assert _rms(int16_to_float32(up)) == pytest.approx(_rms(int16_to_float32(pcm)), rel=0.02)


def test_whisper_input_is_float32_at_16k_in_unit_range() -> None:
    pcm = float32_to_int16(_tone(440, 8000, 0.25, amplitude=0.9))
    audio = telephone_to_whisper(pcm)
    assert audio.dtype == np.float32 and audio.size == 2 * pcm.size
    assert 0.8 < float(np.max(np.abs(audio))) <= 1.0


def test_piper_rate_to_telephone_keeps_speech_band_and_removes_what_would_alias() -> None:
    rate = 22050
    voice = to_telephone(_tone(1000, rate, 1.0), rate)
    assert voice.dtype == np.int16
    assert voice.size == round(rate * 1.0 * 8000 / rate)
    assert _peak_hz(voice.astype(np.float32), 8000) == pytest.approx(1000, abs=5)
    assert _rms(int16_to_float32(voice)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    # 5 kHz cannot be carried at 8 kHz; without the low-pass it would fold down to 3 kHz at full level.
    folded = to_telephone(_tone(5000, rate, 1.0), rate)
    attenuation_db = 20 * np.log10(_rms(int16_to_float32(folded)) / (0.5 / np.sqrt(2)))
    assert attenuation_db < -50


def test_int16_edges_clip_instead_of_wrapping() -> None:
    square = np.where(np.arange(2205) % 50 < 25, 32767, -32768).astype(np.int16)
    out = resample_int16(square, 22050, 8000)  # the filter rings past full scale at every edge
    assert out.dtype == np.int16
    assert out.max() == 32767 and out.min() == -32768
    # A wrapped sample would show up as a jump of nearly the whole range between neighbours.
    assert np.max(np.abs(np.diff(out.astype(np.int32)))) < 60000


def test_conversions_round_trip_and_scale() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    assert np.array_equal(float32_to_int16(int16_to_float32(pcm)), pcm)
    assert int16_to_float32(pcm).dtype == np.float32
    assert float32_to_int16(np.array([2.0, -2.0])).tolist() == [32767, -32768]


def test_same_rate_empty_and_bad_input() -> None:
    audio = _tone(300, 8000, 0.1)
    same = resample_float(audio, 8000, 8000)
    assert np.array_equal(same, audio) and same is not audio
    assert resample_float(np.zeros(0, dtype=np.float32), 8000, 16000).size == 0
    with pytest.raises(ValueError, match="positive"):
        resample_float(audio, 0, 8000)
    with pytest.raises(ValueError, match="mono"):
        resample_float(np.zeros((2, 10), dtype=np.float32), 8000, 16000)
