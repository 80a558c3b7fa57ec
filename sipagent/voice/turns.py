"""Turn-taking for the phone agent: one voiced/unvoiced decision per 20 ms frame in, turn events out.

Pure: no I/O, no threads, no clock. Each frame comes with its time ``now`` (float seconds on the
caller's monotonic clock, e.g. when the frame was taken from the jitter buffer) and with whether the
agent is speaking at that moment. Every time in an event is one of those ``now`` values.

Rules
=====

States
------
* ``LISTENING``: nobody holds the turn (the agent may be talking).
* ``ONSET``: voiced frames that may start a turn, or may be a blip (click, cough, "mm").
* ``SPEAKING``: the caller holds the turn.
* ``PAUSED``: the caller went quiet; the turn either resumes or ends.
* ``CLOSED``: after :meth:`TurnDetector.close`; pushing a frame then raises.

Mostly voiced
-------------
Speech is "mostly voiced", not "all voiced": VADs drop a frame or two between syllables. A stretch
counts as ``required`` ms of speech when the last ``required / voiced_ratio`` ms hold at least
``required`` ms of voiced frames (with the defaults: 6 of the last 8 frames for a turn, 12 of the
last 16 for a barge-in). A candidate dies once its trailing silence is longer than the slack
``required / voiced_ratio - required`` (no later window could then reach ``required``).

Transitions (the table below is the single source; anything else raises :class:`TurnStateError`)
-------------------------------------------------------------------------------------------------
* LISTENING --voice--> ONSET on any voiced frame.
* ONSET --speech--> SPEAKING when ``min_speech_ms`` of mostly-voiced frames accumulate while the
  agent is silent: :class:`CallerStarted`. Shorter stretches are noise (clicks, line hits).
* ONSET --barge_in--> SPEAKING when, while the agent is speaking, ``min_barge_in_ms`` of
  mostly-voiced frames accumulate (only frames during agent speech count): :class:`BargeIn` then
  :class:`CallerStarted`, in that order (the interruption has priority: the pipeline flushes the
  outbound audio before anything else).
* ONSET --blip--> LISTENING when the candidate dies. A blip never produces any event, so it can
  never produce :class:`EndOfTurn` either.
* SPEAKING --pause--> PAUSED after ``pause_ms`` without a voiced frame: :class:`PauseStarted`
  (the pipeline starts speculative STT and LLM on the audio so far).
* SPEAKING --barge_in--> SPEAKING when the agent starts talking over a turn already in progress
  and the caller keeps talking for ``min_barge_in_ms``: :class:`BargeIn` (once per stretch of agent
  speech).
* PAUSED --resume--> SPEAKING when ``min_speech_ms`` (``min_barge_in_ms`` if the agent is
  speaking) of mostly-voiced frames follow the pause: :class:`CallerResumed` (cancel speculation),
  then :class:`BargeIn` if the agent is speaking.
* PAUSED --end_of_turn--> LISTENING once ``end_of_turn_ms`` have passed since the last voiced frame
  of the turn (or the wait :meth:`TurnDetector.set_end_of_turn` gave this pause, e.g. from an
  end-of-turn model's verdict on the words so far): :class:`EndOfTurn`. Voiced frames that have
  not (yet) made a resumption do not reset that silence, so a click in the pause does not delay
  the end of the turn; a live resumption candidate defers it, by at most one candidate window, so
  a caller who resumes right at the deadline is not cut in two. If that candidate is still live at
  the end, it carries on as an ONSET of the next turn.
* any --close--> CLOSED.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..errors import SipAgentError
from ..rtp.frames import PTIME_MS

#: Two frame times closer than this are the same instant (float sums of 0.02 drift by ~1e-15).
_EPS = 1e-6


class TurnState(enum.Enum):
    """Where the caller's turn stands (see the module docstring for the rules)."""

    LISTENING = "listening"
    ONSET = "onset"
    SPEAKING = "speaking"
    PAUSED = "paused"
    CLOSED = "closed"


_S = TurnState
TRANSITIONS: Mapping[TurnState, Mapping[str, TurnState]] = {
    _S.LISTENING: {"voice": _S.ONSET, "close": _S.CLOSED},
    _S.ONSET: {"speech": _S.SPEAKING, "barge_in": _S.SPEAKING, "blip": _S.LISTENING, "close": _S.CLOSED},
    _S.SPEAKING: {"barge_in": _S.SPEAKING, "pause": _S.PAUSED, "close": _S.CLOSED},
    _S.PAUSED: {"resume": _S.SPEAKING, "end_of_turn": _S.LISTENING, "close": _S.CLOSED},
    _S.CLOSED: {"close": _S.CLOSED},
}


class TurnStateError(SipAgentError, RuntimeError):
    """An event the transition table does not allow in the current state (a caller bug)."""

    def __init__(self, state: TurnState, event: str) -> None:
        super().__init__(f"turn detector in state {state.name} cannot handle {event}")
        self.state = state
        self.event = event


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------
def _check_times(event: object, *names: str) -> None:
    """Times must be finite and in the order given (earliest first)."""
    kind = type(event).__name__
    for name in names:
        value = getattr(event, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{kind}.{name} must be a finite time, got {value!r}")
    for a, b in itertools.pairwise(names):
        if getattr(event, a) > getattr(event, b) + _EPS:
            raise ValueError(f"{kind}: {a} ({getattr(event, a)}) is after {b} ({getattr(event, b)})")


@dataclass(frozen=True, slots=True)
class CallerStarted:
    """The caller took the turn; decided at ``at``, the speech began at ``speech_started_at``.

    Audio from ``speech_started_at`` on belongs to the turn (keep a little pre-roll for STT).
    """

    at: float
    speech_started_at: float

    def __post_init__(self) -> None:
        _check_times(self, "speech_started_at", "at")


@dataclass(frozen=True, slots=True)
class PauseStarted:
    """The caller went quiet at ``at``: start speculative STT and LLM on the turn so far.

    ``last_voiced_at`` is the last voiced frame of the turn: the audio to transcribe is
    ``speech_started_at`` up to the end of that frame.
    """

    at: float
    speech_started_at: float
    last_voiced_at: float

    def __post_init__(self) -> None:
        _check_times(self, "speech_started_at", "last_voiced_at", "at")


@dataclass(frozen=True, slots=True)
class CallerResumed:
    """The caller spoke again after a pause (decided at ``at``): cancel the speculation."""

    at: float

    def __post_init__(self) -> None:
        _check_times(self, "at")


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The caller's turn is over: reply now (with the speculation if it is still valid).

    ``barged_in`` says the turn interrupted the agent (a :class:`BargeIn` was sent during it),
    which the agent layer may use to tell a short acknowledgement from a real interruption.
    """

    at: float
    speech_started_at: float
    last_voiced_at: float
    barged_in: bool = False

    def __post_init__(self) -> None:
        _check_times(self, "speech_started_at", "last_voiced_at", "at")


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller is talking over the agent: stop playback and cancel LLM/TTS work, this tick."""

    at: float
    speech_started_at: float

    def __post_init__(self) -> None:
        _check_times(self, "speech_started_at", "at")


TurnEvent = CallerStarted | PauseStarted | CallerResumed | EndOfTurn | BargeIn


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TurnConfig:
    """Tunables of :class:`TurnDetector` (milliseconds), validated when built.

    Defaults and why:

    * ``min_speech_ms`` = 120: six voiced frames. Clicks, line hits and key thumps are one to four
      frames after the VAD's energy gate; the shortest real answer ("no", "yes") has 150 ms or
      more of voiced frames.
    * ``min_barge_in_ms`` = 240: long enough that coughs, a breath, a short "mm", "yeah" or "ok"
      (usually 150-250 ms of voiced frames, since a VAD misses the soft onset and tail) do not cut
      the agent off, short enough that a caller who really interrupts is heard within about a
      syllable, which is when people expect a talker to yield. A drawn-out "mm-hmm" (300-400 ms)
      does interrupt at this default: stopping for an acknowledgement costs less on a phone than
      talking over a caller for half a second. Agents that talk in long monologues, where callers
      backchannel a lot, should raise it to 400-500 ms (LiveKit's default is 500 ms), accepting the
      slower interruption. ``EndOfTurn.barged_in`` lets the agent layer resume after a short one.
    * ``voiced_ratio`` = 0.75: "mostly voiced" (tolerates a 1-4 frame VAD dip between syllables).
    * ``pause_ms`` = 60: when the speculative reply starts (STT, then the LLM and the first TTS
      chunk, ~300 ms on 2 cores): 240 ms before the end of turn it is ready when the wait ends.
      100 cost 40-60 ms of turn latency (issue 13); a gap between words that long restarts the
      speculation more often, which costs CPU, not time.
    * ``end_of_turn_ms`` = 300: the silence that ends a turn (at most 300 by design: more feels
      sluggish on a phone; the speculation started at the pause keeps the reply fast anyway).
    """

    frame_ms: float = PTIME_MS
    min_speech_ms: float = 120.0
    min_barge_in_ms: float = 240.0
    voiced_ratio: float = 0.75
    pause_ms: float = 60.0
    end_of_turn_ms: float = 300.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"TurnConfig.{field.name} must be a finite number, got {value!r}")
            if value <= 0:
                raise ValueError(f"TurnConfig.{field.name} must be positive, got {value!r}")
        if self.voiced_ratio > 1:
            raise ValueError(f"TurnConfig.voiced_ratio must be in (0, 1], got {self.voiced_ratio!r}")
        if self.end_of_turn_ms <= self.pause_ms:
            raise ValueError(
                f"TurnConfig.end_of_turn_ms ({self.end_of_turn_ms}) must be longer than "
                f"pause_ms ({self.pause_ms}): the pause is where speculation starts, before the end"
            )


@dataclass(frozen=True, slots=True)
class _Frame:
    time: float
    voiced: bool
    agent: bool


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
class TurnDetector:
    """Per-call turn-taking state machine; feed it every inbound frame with :meth:`push`.

    ``voiced`` should already exclude the agent's own echo (``vad.is_speech(frame) and
    echo_guard.inbound_is_caller(frame, now)``).
    """

    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        c = self.config
        self._frame = c.frame_ms / 1000
        self._speech = c.min_speech_ms / 1000
        self._barge = c.min_barge_in_ms / 1000
        self._pause = c.pause_ms / 1000
        self._eot = c.end_of_turn_ms / 1000
        #: Window lengths: ``required`` seconds of voice must sit within ``required / ratio``.
        self._speech_window = self._speech / c.voiced_ratio
        self._barge_window = self._barge / c.voiced_ratio
        keep = math.ceil(max(self._speech_window, self._barge_window) / self._frame) + 2
        self._recent: deque[_Frame] = deque(maxlen=keep)
        self.state = TurnState.LISTENING
        self._last_time = -math.inf
        #: Only frames after this time can start or resume a turn (frames after the last speech).
        self._since = -math.inf
        #: The current (or last) turn.
        self.speech_started_at: float | None = None
        self.last_voiced_at: float | None = None
        self._turn_barged_in = False
        #: A BargeIn was sent for the current stretch of agent speech (one per stretch).
        self._barged = False
        #: The silence that ends the turn in the current pause (s).
        self._pause_eot = self._eot

    # -- public ---------------------------------------------------------------------------------
    def push(self, voiced: bool, now: float, *, agent_speaking: bool) -> list[TurnEvent]:
        """One inbound frame: is it caller voice, its time, and is the agent speaking now."""
        if self.state is TurnState.CLOSED:
            raise TurnStateError(self.state, "frame")
        if not math.isfinite(now) or now <= self._last_time:
            raise ValueError(f"frame times must be finite and increasing: {now!r} after {self._last_time!r}")
        self._last_time = now
        self._recent.append(_Frame(now, voiced, agent_speaking))
        if not agent_speaking:
            self._barged = False
        events: list[TurnEvent] = []
        if self.state is TurnState.SPEAKING:
            self._speaking(voiced, now, agent_speaking, events)
        elif self.state is TurnState.PAUSED:
            self._paused(now, agent_speaking, events)
        if self.state is TurnState.LISTENING and voiced:
            self._fire("voice")
        if self.state is TurnState.ONSET:
            self._onset(now, agent_speaking, events)
        return events

    def set_end_of_turn(self, ms: float) -> None:
        """The silence (ms after the last voiced frame) that ends the turn in *this* pause; the next
        pause starts from ``end_of_turn_ms`` again. Outside a pause (it ended or the caller went on)
        there is nothing to change. At or below the silence already heard, the next frame ends it."""
        if not math.isfinite(ms) or ms <= 0:
            raise ValueError(f"end-of-turn wait must be a positive number of ms, got {ms!r}")
        if self.state is TurnState.PAUSED:
            self._pause_eot = ms / 1000

    def close(self) -> None:
        """The call ended: no more frames. An open turn is dropped without an event."""
        self._fire("close")

    # -- per state ------------------------------------------------------------------------------
    def _onset(self, now: float, agent: bool, events: list[TurnEvent]) -> None:
        required, window = (self._barge, self._barge_window) if agent else (self._speech, self._speech_window)
        voiced, first = self._voiced_since(self._since, window, agent)
        if first is not None and voiced >= required - _EPS:
            self._start_turn(now, first, barge_in=agent, events=events)
            return
        last = self._last_voiced_frame()
        if last is None or now - last > window - required + _EPS:
            self._fire("blip")

    def _speaking(self, voiced: bool, now: float, agent: bool, events: list[TurnEvent]) -> None:
        assert self.speech_started_at is not None and self.last_voiced_at is not None
        if voiced:
            self.last_voiced_at = now
            if agent and not self._barged:
                overlap, _ = self._voiced_since(self.speech_started_at, self._barge_window, True)
                if overlap >= self._barge - _EPS:
                    self._fire("barge_in")
                    self._barged = True
                    self._turn_barged_in = True
                    events.append(BargeIn(now, self.speech_started_at))
        elif now - self.last_voiced_at >= self._pause - _EPS:
            self._fire("pause")
            self._pause_eot = self._eot
            self._since = self.last_voiced_at + _EPS
            events.append(PauseStarted(now, self.speech_started_at, self.last_voiced_at))

    def _paused(self, now: float, agent: bool, events: list[TurnEvent]) -> None:
        assert self.speech_started_at is not None and self.last_voiced_at is not None
        required, window = (self._barge, self._barge_window) if agent else (self._speech, self._speech_window)
        voiced, first = self._voiced_since(self._since, window, agent)
        if first is not None and voiced >= required - _EPS:
            self._fire("resume")
            self.last_voiced_at = now
            events.append(CallerResumed(now))
            if agent and not self._barged:
                self._fire("barge_in")
                self._barged = True
                self._turn_barged_in = True
                events.append(BargeIn(now, self.speech_started_at))
            return
        silence = now - self.last_voiced_at
        if silence < self._pause_eot - _EPS:
            return
        last = self._last_voiced_frame()
        candidate_live = last is not None and last > self._since and now - last <= window - required + _EPS
        if candidate_live and silence < self._pause_eot + window - _EPS:
            return  # a resumption may be under way: give it one window before ending the turn
        self._fire("end_of_turn")
        events.append(EndOfTurn(now, self.speech_started_at, self.last_voiced_at, self._turn_barged_in))
        if candidate_live:
            self._fire("voice")  # the candidate goes on as the onset of the next turn

    # -- helpers --------------------------------------------------------------------------------
    def _start_turn(self, now: float, first: float, *, barge_in: bool, events: list[TurnEvent]) -> None:
        self._fire("barge_in" if barge_in else "speech")
        self.speech_started_at = first
        self.last_voiced_at = self._last_voiced_frame()
        self._turn_barged_in = barge_in
        if barge_in:
            self._barged = True
            events.append(BargeIn(now, first))
        events.append(CallerStarted(now, first))

    def _voiced_since(self, since: float, window: float, agent_only: bool) -> tuple[float, float | None]:
        """Voiced seconds (and the first voiced frame's time) within ``window`` before the newest frame.

        Only frames after ``since`` count, and with ``agent_only`` only frames during agent speech.
        """
        now = self._last_time
        start = max(since, now - window + _EPS)
        count = 0
        first: float | None = None
        for frame in reversed(self._recent):
            if frame.time < start:
                break
            if frame.voiced and (frame.agent or not agent_only):
                count += 1
                first = frame.time
        return count * self._frame, first

    def _last_voiced_frame(self) -> float | None:
        for frame in reversed(self._recent):
            if frame.voiced:
                return frame.time
        return None

    def _fire(self, event: str) -> None:
        allowed = TRANSITIONS[self.state]
        if event not in allowed:
            raise TurnStateError(self.state, event)
        self.state = allowed[event]
