"""Text to speech: the real Piper voice gives audible 8 kHz speech of a plausible length, a chunk per
sentence, that Whisper can read back; and the fake's contract."""

from __future__ import annotations

import re
from pathlib import Path

import jiwer
import numpy as np
import numpy.typing as npt
import pytest

from sipagent.config import ConfigError, build_settings
from sipagent.voice.models import (
    DEFAULT_STT_MODEL,
    DEFAULT_TTS_VOICE,
    ROOT,
    resolve_model_path,
)
from sipagent.voice.tts import PiperSynthesizer, synthesize_whole, trim_leading_silence
from tests.fakes import FakeSynthesizer
from tests.model_gate import require_models

VOICE = resolve_model_path(DEFAULT_TTS_VOICE)
WHISPER = resolve_model_path(DEFAULT_STT_MODEL)


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    require_models(VOICE, Path(f"{VOICE}.json"))
    return PiperSynthesizer(VOICE)


def _dbfs(pcm: npt.NDArray[np.int16]) -> float:
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return float(20 * np.log10(max(rms, 1e-9) / 32768))


def test_piper_speaks_audible_8k_int16_of_plausible_length(piper: PiperSynthesizer) -> None:
    text = "Thank you for calling. Your table for two is booked for eight tonight."
    chunks = list(piper.synthesize(text))
    assert len(chunks) == 2  # one per sentence: the first can play while the second is made
    assert all(chunk.dtype == np.int16 and chunk.ndim == 1 for chunk in chunks)
    audio = np.concatenate(chunks)
    seconds = audio.size / 8000
    words = len(text.split())
    # Conversational speech runs at 2–4 words a second; the default voice reads this in about 4 s.
    assert words / 4.5 < seconds < words / 1.5
    assert -30 < _dbfs(audio) < -10  # speech level with headroom: not silence, not clipping
    assert np.max(np.abs(audio.astype(np.int32))) < 32767
    assert piper.voice_rate == 22050


def test_piper_output_is_intelligible_to_whisper(piper: PiperSynthesizer) -> None:
    require_models(WHISPER / "model.bin")
    from sipagent.voice.stt import WhisperTranscriber

    whisper = WhisperTranscriber(WHISPER, cpu_threads=2)
    text = "Your appointment is on Tuesday at three in the afternoon."
    heard = whisper.transcribe(np.concatenate(list(piper.synthesize(text)))).text

    def norm(value: str) -> str:
        return " ".join(re.sub(r"[^a-z ]", " ", value.lower().replace("3", "three")).split())

    assert jiwer.wer(norm(text), norm(heard)) <= 0.2, heard


def test_a_reply_starts_at_its_first_word(piper: PiperSynthesizer) -> None:
    """Piper leads with silence (its length varies from run to run: 60-400 ms for this phrase);
    trimmed, the voice starts 10 ms in, and nothing after that point changes."""
    audio = synthesize_whole(piper, "He was not an old-soped")
    lead = int(np.flatnonzero(np.abs(audio.astype(np.int32)) >= 64)[0])
    assert lead > 80  # the silence this is for: more than the 10 ms kept
    trimmed = trim_leading_silence(audio)
    assert int(np.flatnonzero(np.abs(trimmed.astype(np.int32)) >= 64)[0]) == 80
    assert np.array_equal(trimmed, audio[lead - 80 :])


def test_trimming_keeps_silence_and_audio_that_starts_at_once() -> None:
    silent = np.zeros(800, dtype=np.int16)
    assert trim_leading_silence(silent) is silent
    loud = np.full(400, 1000, dtype=np.int16)
    assert np.array_equal(trim_leading_silence(loud), loud)
    onset = np.concatenate([np.zeros(40, dtype=np.int16), loud])  # 5 ms of silence: under the 10 kept
    assert np.array_equal(trim_leading_silence(onset), onset)
    late = np.concatenate([np.full(1000, 20, dtype=np.int16), loud])  # hiss under -54 dBFS, then voice
    assert np.array_equal(trim_leading_silence(late), late[920:])


def test_piper_says_nothing_for_empty_text(piper: PiperSynthesizer) -> None:
    assert list(piper.synthesize("")) == []
    assert list(piper.synthesize("   \n")) == []


def test_piper_length_scale_slows_speech(piper: PiperSynthesizer) -> None:
    text = "Please hold while I check that for you."
    normal = sum(chunk.size for chunk in piper.synthesize(text))
    slow = sum(chunk.size for chunk in PiperSynthesizer(VOICE, length_scale=1.5).synthesize(text))
    # Not the full 1.5: pauses and Piper's random phoneme durations (noise_w) do not all stretch.
    assert slow > 1.15 * normal


def test_piper_rejects_a_missing_voice_or_speaker(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"voice\.onnx.*fetch_models"):
        PiperSynthesizer(tmp_path / "voice.onnx")
    require_models(VOICE)
    with pytest.raises(ValueError, match=r"tts\.speaker: .* has 1 speaker"):
        PiperSynthesizer(VOICE, speaker=3)


def test_tts_settings() -> None:
    settings = build_settings({})
    assert settings.tts.voice == ROOT / DEFAULT_TTS_VOICE and settings.tts.length_scale is None
    assert settings.stt.model == ROOT / DEFAULT_STT_MODEL and settings.stt.compute_type == "int8"
    with pytest.raises(ConfigError, match=r"tts\.length_scale"):
        build_settings({"tts": {"length_scale": 0}})
    with pytest.raises(ConfigError, match=r"stt\.compute_type"):
        build_settings({"stt": {"compute_type": "int3"}})


def test_fake_synthesizer_makes_a_tone_per_sentence() -> None:
    fake = FakeSynthesizer(seconds_per_char=0.05)
    chunks = list(fake.synthesize("Hello there. How are you?"))
    assert [chunk.size for chunk in chunks] == [round(12 * 0.05 * 8000), round(12 * 0.05 * 8000)]
    assert all(chunk.dtype == np.int16 and np.abs(chunk).max() > 1000 for chunk in chunks)
    assert list(fake.synthesize("  ")) == [] and fake.texts == ["Hello there. How are you?", "  "]
