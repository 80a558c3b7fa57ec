"""Voice activity: WebRTC VAD per 20 ms frame, and a pure segmenter that turns frame decisions
into speech segments with times.

The segmenter is the start of turn-taking (issue 4 builds end-of-turn on it): it declares speech
after ``start_frames`` voiced frames within a short window (so a click does not start a segment)
and ends it after ``hangover_ms`` of unvoiced frames (so the pauses between words do not split
it). Time is passed in; it never reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import webrtcvad

from ..rtp.frames import FRAME_SECONDS, SAMPLE_RATE, Pcm

#: Below about -60 dBFS nothing is speech, whatever the floor says (digital silence, hold).
_ABSOLUTE_FLOOR = 33.0


class Vad(Protocol):
    """A per-frame voice decision with state of its own (one instance per audio stream)."""

    def is_speech(self, frame: Pcm) -> bool:
        """True when the 20 ms frame (160 samples at 8 kHz) holds voice."""
        ...


class WebRtcVad:
    """WebRTC's GMM voice detector on 8 kHz, 20 ms frames, behind an adaptive energy gate.

    On telephone lines WebRTC VAD fires on steady background noise (measured on the fixtures:
    line noise at -50 dBFS is "speech" in most frames even at aggressiveness 3). So a frame only
    counts as voice when it is also ``gate_db`` above the noise floor, which follows quiet frames
    down at once and creeps up ``floor_rise_db_per_s`` so steady noise becomes the new floor while
    speech (which dips between syllables) never does. About 4 µs a frame in all.
    """

    def __init__(
        self, aggressiveness: int = 2, *, gate_db: float = 9.0, floor_rise_db_per_s: float = 3.0
    ) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"VAD aggressiveness must be 0-3, got {aggressiveness}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._gate = 10 ** (gate_db / 20)
        self._rise = 10 ** (floor_rise_db_per_s * FRAME_SECONDS / 20)
        #: RMS of the noise floor (linear, int16 units); None until the first frame.
        self.floor: float | None = None

    def is_speech(self, frame: Pcm) -> bool:
        """True when the frame holds voice."""
        samples = frame.astype(np.float32)
        rms = float(np.sqrt(np.dot(samples, samples) / len(samples))) + 1.0
        floor = self.floor
        if floor is None or rms < floor:
            floor = rms
        else:
            floor *= self._rise
        self.floor = floor
        if rms < floor * self._gate or rms < _ABSOLUTE_FLOOR:
            return False
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))


@dataclass(frozen=True)
class SpeechStarted:
    """A speech segment began at ``time`` (the first voiced frame of it)."""

    time: float


@dataclass(frozen=True)
class SpeechEnded:
    """A speech segment ended at ``time`` (after its last voiced frame); it lasted ``duration``."""

    time: float
    duration: float


SpeechEvent = SpeechStarted | SpeechEnded


class SpeechSegmenter:
    """Frame-by-frame voiced/unvoiced decisions in, speech segment events out."""

    def __init__(self, *, start_frames: int = 3, window_frames: int = 5, hangover_ms: float = 300.0) -> None:
        if not 1 <= start_frames <= window_frames:
            raise ValueError("start_frames must be between 1 and window_frames")
        self.start_frames = start_frames
        self.hangover = hangover_ms / 1000.0
        self._window: deque[tuple[float, bool]] = deque(maxlen=window_frames)
        self.in_speech = False
        self._started_at = 0.0
        self._last_voiced_end = 0.0

    def push(self, voiced: bool, time: float) -> list[SpeechEvent]:
        """One frame's decision; ``time`` is the frame's start on the caller's clock."""
        self._window.append((time, voiced))
        events: list[SpeechEvent] = []
        if voiced:
            self._last_voiced_end = time + FRAME_SECONDS
        if not self.in_speech:
            voiced_times = [t for t, v in self._window if v]
            if len(voiced_times) >= self.start_frames:
                self.in_speech = True
                self._started_at = voiced_times[0]
                events.append(SpeechStarted(self._started_at))
        elif time + FRAME_SECONDS - self._last_voiced_end >= self.hangover:
            self.in_speech = False
            self._window.clear()
            events.append(SpeechEnded(self._last_voiced_end, self._last_voiced_end - self._started_at))
        return events

    def finish(self) -> list[SpeechEvent]:
        """End of stream: close an open segment."""
        if not self.in_speech:
            return []
        self.in_speech = False
        return [SpeechEnded(self._last_voiced_end, self._last_voiced_end - self._started_at)]
