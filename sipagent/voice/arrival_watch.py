"""Caller voice as it arrives, before the jitter buffer plays it: for the hold that silences the agent.

The agent's turn logic runs on the frames the jitter buffer plays, which on a jittery line come
out ~100 ms after they arrived (the buffer waits for late packets; 30 ms mean jitter makes its delay
~110 ms). For deciding *what* the caller said and when a turn ends that wait is worth it; for
falling silent when the caller starts talking over the agent it is not: a listener judges how
fast the agent yields from when they started speaking. So while the agent talks, each tick the
newest frame that has arrived (:meth:`~sipagent.rtp.jitter.JitterBuffer.newest`) goes through a
VAD and an echo guard of its own (their state follows this stream, not the played one; the guard
shares the outbound history of the played stream's guard, which is fed once per tick) and the
watch keeps how long the caller has been talking in it. The agent holds its speech when either
stream has seen ``hold_after_ms`` of caller voice; barge-in (which cancels the reply) still waits
for the played frames and the turn detector.

Only the newest frame is looked at each tick, so after a burst of packets the frames in between
are not judged: the run is measured by RTP timestamps (how much audio it spans) and ends at the
first frame judged not the caller.
"""

from __future__ import annotations

from ..rtp.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, AudioFrame
from .echo_guard import EchoConfig, EchoGuard, OutboundHistory
from .vad import Vad

#: A run longer than this (samples) is no run: the RTP timeline jumped between two frames.
_LONGEST_RUN = 10 * SAMPLE_RATE


class ArrivalWatch:
    """How long the caller has been talking in the audio that has arrived (see the module docstring)."""

    def __init__(self, vad: Vad, echo: EchoConfig, outbound: OutboundHistory) -> None:
        """``vad`` is this stream's own (its state follows this stream); ``outbound`` is what the agent
        sent (the played stream's guard's history, fed by it)."""
        self.vad = vad
        self.echo = EchoGuard(echo, history=outbound)
        self._last_ts: int | None = None
        #: Tick time and RTP timestamp of the first frame of the current run of caller voice.
        self.onset: tuple[float | None, int | None] = (None, None)
        self._run_ts: int | None = None
        self._voiced_s = 0.0

    @property
    def voiced_s(self) -> float:
        """Seconds of caller voice in the current run (0: the caller is not talking)."""
        return self._voiced_s

    def update(self, frame: AudioFrame | None, now: float) -> None:
        """Judge the newest arrived frame (None: everything that arrived has played)."""
        if frame is None:
            # The played stream has caught up: it judges the same audio now.
            self._end_run()
            return
        timestamp = frame.timestamp
        if timestamp is None or timestamp == self._last_ts:
            return  # nothing new arrived this tick
        self._last_ts = timestamp
        samples = frame.samples
        if not (self.vad.is_speech(samples) and self.echo.inbound_is_caller(samples, now)):
            self._end_run()
            return
        if self._run_ts is None:
            self._run_ts = timestamp
            self.onset = (now, timestamp)
        span = (timestamp - self._run_ts) & 0xFFFFFFFF
        if span > _LONGEST_RUN:  # the timeline jumped (a new source, a resync): start over here
            self._run_ts, self.onset, span = timestamp, (now, timestamp), 0
        self._voiced_s = (span + SAMPLES_PER_FRAME) / SAMPLE_RATE

    def _end_run(self) -> None:
        self._run_ts = None
        self._voiced_s = 0.0
