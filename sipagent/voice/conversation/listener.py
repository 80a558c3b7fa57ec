"""The caller's side of the conversation, frame by frame: is this the caller's voice, where do turns
start and end, what audio belongs to the turn, and where did the speech really end.

Pure and per call, like everything the engine holds::

    inbound frame ─► VAD ─► echo guard (while the agent talks: is it our own voice?) ─► voiced?
    voiced ─► TurnDetector ─► turn events          voiced ─► the turn's audio (with pre-roll)
    newest arrived frame ─► ArrivalWatch (while the agent talks) ─► caller voice not yet played
    every frame's level ─► the call's noise floor ─► the estimated end of the caller's speech

The engine (:mod:`.engine`) turns the events and the two voice runs into replies, holds and
barge-ins; this module only listens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from ...rtp.frames import FRAME_SECONDS, SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from ..arrival_watch import ArrivalWatch
from ..echo_guard import EchoGuard
from ..tones import ToneClassifier
from ..turns import TurnDetector, TurnEvent
from ..vad import Vad, WebRtcVad
from .config import ConversationConfig

_SILENCE = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
#: Frames of level history kept for the noise floor (5 s).
_LEVEL_FRAMES = 250
#: The noise floor is this percentile of the recent frame levels: speech rarely fills more than
#: 80 % of five seconds, so the quietest 10 % is the line itself.
_FLOOR_PERCENTILE = 10


def _level_db(samples: Pcm) -> float:
    x = samples.astype(np.float32)
    return 10.0 * float(np.log10(float(np.dot(x, x)) / len(x) + 1.0))


class Listener:
    """One call's caller side (see the module docstring)."""

    def __init__(self, config: ConversationConfig, vad: Callable[[], Vad] | None = None) -> None:
        """``vad`` makes the detector behind turn-taking and barge-in (default: WebRTC VAD at the
        configured aggressiveness). The arrival watch, which only has to notice a voice starting
        and sees only the newest frame each tick, keeps WebRTC VAD: it answers within the frame,
        where Silero's window lag and smoothing add 30-75 ms (decision 0015)."""
        self.config = config
        self.vad = vad() if vad is not None else WebRtcVad(config.vad_aggressiveness)
        #: Tones are not speech: a beep, ringback or DTMF tone the VAD calls voice (WebRTC VAD calls
        #: nearly every beep frame voice; Silero none) must not start a turn or reach STT as words
        #: ("F- F- F-"). Asked only about frames the VAD calls voice: ~36 µs a frame.
        self.tones = ToneClassifier()
        self.echo = EchoGuard(config.echo)
        #: Caller voice that has arrived but not played yet (shares the played guard's history).
        arrival_vad = WebRtcVad(config.vad_aggressiveness)
        self.arrivals = ArrivalWatch(arrival_vad, config.echo, self.echo.history)
        self.turns = TurnDetector(config.turn)
        self._preroll: deque[Pcm] = deque(maxlen=max(1, round(config.preroll_ms / 1000 / FRAME_SECONDS)))
        self._max_frames = round(config.max_turn_s / FRAME_SECONDS)
        self._turn_audio: list[Pcm] = []
        self._turn_open = False
        #: RTP timestamp of the last voiced frame.
        self.last_voiced_ts: int | None = None
        #: Consecutive voiced frames up to this one (0: this frame was not the caller).
        self.voice_run = 0
        #: Tick and RTP timestamp of the first frame of the current run of caller voice.
        self.run_start: tuple[float | None, int | None] = (None, None)
        #: Each frame's (tick, RTP timestamp, level in dB), for the floor and the end of speech.
        self._levels: deque[tuple[float, int | None, float]] = deque(maxlen=_LEVEL_FRAMES)

    def note_outbound(self, samples: Pcm | None, now: float) -> None:
        """What left this tick (None: the silence fill): the echo guards need every frame."""
        self.echo.note_outbound(samples if samples is not None else _SILENCE, now)

    def hear(
        self, frame: AudioFrame, now: float, *, agent_on: bool, newest: AudioFrame | None, watch: bool
    ) -> list[TurnEvent]:
        """One played caller frame at tick ``now``; ``agent_on``: the agent's voice is going out;
        ``watch``: a reply is on (watch the arrived stream too, ``newest`` its newest frame)."""
        samples = frame.samples
        self._levels.append((now, frame.timestamp, _level_db(samples)))
        voiced = (
            frame.kind is not FrameKind.SILENCE
            and self.vad.is_speech(samples)
            and not self.tones.is_tone(samples)
        )
        if voiced and agent_on:
            voiced = self.echo.inbound_is_caller(samples, now)
        self._collect(samples, frame.timestamp, voiced)
        if voiced and self.voice_run == 0:
            self.run_start = (now, frame.timestamp)
        events = self.turns.push(voiced, now, agent_speaking=agent_on)
        if watch:
            self.arrivals.update(newest, now)
        self.voice_run = self.voice_run + 1 if voiced else 0
        return events

    # -- the turn's audio ------------------------------------------------------------------------
    def _collect(self, samples: Pcm, timestamp: int | None, voiced: bool) -> None:
        if voiced:
            self.last_voiced_ts = timestamp
        if self._turn_open:
            self._turn_audio.append(samples)
            if len(self._turn_audio) > self._max_frames:
                del self._turn_audio[: len(self._turn_audio) - self._max_frames]
        else:
            self._preroll.append(samples)
            if voiced:
                # A possible turn starts: keep what came just before it for STT's sake.
                self._turn_open = True
                self._turn_audio = list(self._preroll)
                self._preroll.clear()

    def turn_audio(self) -> Pcm:
        """The current turn's audio so far (with its pre-roll)."""
        return np.concatenate(self._turn_audio) if self._turn_audio else np.zeros(0, dtype=np.int16)

    def end_turn(self) -> None:
        """The turn ended: the next voiced frame opens a new one."""
        self._turn_open = False
        self._turn_audio = []

    # -- where the speech ended ------------------------------------------------------------------
    def speech_end(self, last_voiced_at: float) -> tuple[float, int | None]:
        """Where the caller's speech ended (the end of its last frame louder than the call's noise
        floor by the configured margin, at or before the VAD's last voiced frame): tick, RTP ts."""
        levels = list(self._levels)
        floor = float(np.percentile([level for _, _, level in levels], _FLOOR_PERCENTILE))
        threshold = floor + self.config.speech_end_margin_db
        fallback: tuple[float, int | None] = (last_voiced_at, self.last_voiced_ts)
        for at, timestamp, level in reversed(levels):
            if at > last_voiced_at + 1e-6:
                continue
            if level >= threshold:
                return at, timestamp
        return fallback

    def close(self) -> None:
        """The call ended."""
        self.turns.close()


__all__ = ["Listener"]
