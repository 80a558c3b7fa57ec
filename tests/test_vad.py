"""VAD and the speech segmenter, on decisions and on real recorded speech."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from sipagent.rtp.frames import SAMPLES_PER_FRAME
from sipagent.voice.vad import SpeechEnded, SpeechSegmenter, SpeechStarted, WebRtcVad

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"


def _decisions(pattern: str) -> list[object]:
    segmenter = SpeechSegmenter(start_frames=3, window_frames=5, hangover_ms=100)
    events: list[object] = []
    for index, mark in enumerate(pattern):
        events += segmenter.push(mark == "x", index * 0.02)
    return events + segmenter.finish()


def test_a_click_does_not_start_speech() -> None:
    assert _decisions("..x.....x....") == []


def test_segment_times_and_hangover_bridging_short_gaps() -> None:
    events = _decisions("....xxxxx..xxxx.........")
    assert events[0] == SpeechStarted(0.08)
    assert isinstance(events[1], SpeechEnded)
    # The two-frame gap is bridged; the segment ends after the last voiced frame (index 14).
    assert abs(events[1].time - 0.30) < 1e-9 and abs(events[1].duration - 0.22) < 1e-9
    assert len(events) == 2


def test_real_speech_is_found_and_silence_is_not() -> None:
    with wave.open(str(SPEECH / "librivox-0870.wav"), "rb") as clip:
        audio = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    telephone = audio[::2].astype(np.int16)  # 16 -> 8 kHz; aliasing is irrelevant to a VAD check
    frames = [telephone[i : i + SAMPLES_PER_FRAME] for i in range(0, len(telephone) - 159, SAMPLES_PER_FRAME)]
    vad = WebRtcVad(2)
    voiced = sum(vad.is_speech(f) for f in frames)
    assert voiced > 0.5 * len(frames)
    silent = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
    assert not vad.is_speech(silent)
    segmenter = SpeechSegmenter()
    events = [e for i, f in enumerate(frames) for e in segmenter.push(vad.is_speech(f), i * 0.02)]
    events += segmenter.finish()
    assert isinstance(events[0], SpeechStarted) and isinstance(events[-1], SpeechEnded)
