"""The answering machine's beep: a pure detector of one sustained tone, and of SIT tones.

A voicemail system says its greeting, then beeps once and records: a single tone somewhere in
400-2000 Hz (1000 Hz is common), 120 ms to a second or two long, loud and clean. A message left
for it should start right after that tone. :class:`BeepDetector` is fed one 20 ms frame at a time
with its time ``now`` (the frame's first sample, on the caller's clock), as the rest of the voice
engine is, and reports

* :class:`Beep` once the tone has ended (it cannot know the beep is over sooner), with its onset
  ``at`` (to a millisecond or so: the frame before the first tone frame is searched for where the
  tone rose), its end, frequency and level;
* :class:`Sit` for the Special Information Tones a carrier plays before "the number you have
  dialled is not in service" (three rising segments, 913.8 or 985.2 Hz, 1370.6 or 1428.5 Hz,
  1776.7 Hz, each 274 or 380 ms, back to back): a carrier, not a mailbox.

What is a beep (each frame by :func:`sipagent.voice.tones.analyse`, 80 % of its energy in one peak
with a flat envelope):

* the same frequency (frame to frame within 2.5 Hz or 0.25 %, over the whole tone within 6 Hz or
  0.6 %) for ``min_ms`` (100 ms: a 120 ms beep less its ramps) to ``max_ms`` (3 s), allowing
  ``max_gap_frames`` odd frames inside (a lost packet concealed, a codec glitch);
* **isolated**: no other tone within ``isolation_ms`` before or after it. SIT segments and the
  notes of a jingle follow one another without a pause, so they are sequences, not beeps.

What is never a beep: speech (its energy is spread over harmonics, its pitch moves), DTMF (two
peaks: half the energy each), US and UK ringback (two tones 40-50 Hz apart that beat: the envelope
test), chords and notes with harmonics. A single 425 Hz tone of European ringback *is* one, but
ringback comes before the 200 OK, when nothing listens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..rtp.frames import FRAME_SECONDS, SAMPLES_PER_FRAME, Pcm
from .tones import DEFAULT_TONE_CONFIG, ToneConfig, ToneConfigError, ToneFrame, ToneKind, analyse, same_tone

#: The SIT segments' frequencies (ANSI T1.401 / ITU-T Q.35): the first, second and third segment.
SIT_FREQUENCIES: tuple[tuple[float, ...], ...] = ((913.8, 985.2), (1370.6, 1428.5), (1776.7,))
#: How far a segment may be from its nominal frequency (a carrier's tone generator, our estimate).
_SIT_TOLERANCE = 0.03
_SIT_SEGMENT_MS = (200.0, 450.0)
#: Tone frames in a row before a run counts as a tone at all (shorter ones are forgotten).
_MIN_RUN_FRAMES = 3
#: A beep's frequency over its whole length: a tone generator's is steady, a held vowel's drifts.
_MAX_SPREAD_HZ = 6.0
_MAX_SPREAD = 0.006
#: Onset search: 1 ms blocks of the frames before the first tone frame at half the tone's level.
_ONSET_BLOCK = 8
_ONSET_SHARE = 0.5
_BLOCKS_PER_SECOND = SAMPLES_PER_FRAME / _ONSET_BLOCK / FRAME_SECONDS


@dataclass(frozen=True)
class BeepConfig:
    """What counts as a beep (see the module docstring)."""

    min_hz: float = 400.0
    max_hz: float = 2000.0
    #: A beep lasts 120 ms or more; its ramps take a few ms of that below half its level.
    min_ms: float = 100.0
    max_ms: float = 3000.0
    #: Frames inside a beep that may fail the test (a concealed packet): more ends it.
    max_gap_frames: int = 2
    #: Another tone closer than this before or after makes it part of a sequence.
    isolation_ms: float = 60.0
    tone: ToneConfig = field(default_factory=lambda: DEFAULT_TONE_CONFIG)

    def __post_init__(self) -> None:
        if not 0 < self.min_hz < self.max_hz < 4000:
            raise ToneConfigError(f"need 0 < min_hz < max_hz < 4000, got {self.min_hz}, {self.max_hz}")
        if not 0 < self.min_ms < self.max_ms:
            raise ToneConfigError(f"need 0 < min_ms < max_ms, got {self.min_ms}, {self.max_ms}")
        if self.max_gap_frames < 0 or self.isolation_ms < 0:
            raise ToneConfigError("max_gap_frames and isolation_ms must not be negative")


@dataclass(frozen=True)
class Beep:
    """A beep: its onset ``at`` and ``end`` on the caller's clock (seconds, as ``now``), and
    ``at_ms`` after the detector's ``started_at`` (the 200 OK)."""

    at: float
    end: float
    at_ms: float
    freq_hz: float
    level_dbfs: float

    @property
    def duration_ms(self) -> float:
        """How long the tone lasted."""
        return (self.end - self.at) * 1000


@dataclass(frozen=True)
class Sit:
    """Special Information Tones (a carrier's intercept message follows): onset, end, frequencies."""

    at: float
    end: float
    at_ms: float
    freqs: tuple[float, ...]


ToneEvent = Beep | Sit


@dataclass
class _Run:
    """A single tone being heard: one frequency, frame after frame."""

    onset: float
    freq: float
    last_end: float  # end of the latest tone frame
    preceded: bool  # another tone ended just before this one started
    freqs: list[float] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    gap: int = 0
    tail: float = 0.0  # seconds of the tone inside the first frame after its last tone frame


def _rms(frame: Pcm | None) -> float:
    if frame is None:
        return 0.0
    samples = frame.astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples)))


def _blocks_above(frame: Pcm, tone_rms: float, *, from_end: bool) -> int:
    """1 ms blocks of ``frame`` at half ``tone_rms`` or more, counted from its end (or its start).

    At most one frame: a tone that filled the whole frame would have been a tone frame itself, and
    speech next to a tone is as loud as one, so looking further would only find the speech.
    """
    blocks = frame.astype(np.float64).reshape(-1, _ONSET_BLOCK)
    levels = np.sqrt(np.mean(blocks * blocks, axis=1))
    count = 0
    for value in levels[::-1] if from_end else levels:
        if tone_rms <= 0.0 or value < _ONSET_SHARE * tone_rms:
            break
        count += 1
    return count


@dataclass(frozen=True)
class _Closed:
    onset: float
    end: float
    freq: float


class BeepDetector:
    """One stream's beep and SIT detector (see the module docstring). Pure: frames and times in."""

    def __init__(self, config: BeepConfig | None = None, *, started_at: float = 0.0) -> None:
        """``started_at``: the time ``at_ms`` counts from (the 200 OK, on the clock of ``now``)."""
        self.config = config or BeepConfig()
        self.started_at = started_at
        self._previous: Pcm | None = None
        self._run: _Run | None = None
        self._closed: list[_Closed] = []
        #: The latest frame's spectral look (a :class:`~sipagent.voice.tones.ToneClassifier` may
        #: take it with ``observe`` instead of analysing the frame again).
        self.last: ToneFrame | None = None
        #: Every beep and SIT reported so far.
        self.events: list[ToneEvent] = []

    def push(self, frame: Pcm, now: float) -> ToneEvent | None:
        """One 20 ms frame starting at ``now``; a :class:`Beep` or :class:`Sit` that has just ended."""
        look = analyse(frame, self._previous, self.config.tone)
        self.last = look
        event: ToneEvent | None = None
        freq = look.freqs[0] if look.kind is ToneKind.SINGLE else None
        run = self._run
        if freq is not None:
            if run is not None and same_tone((freq,), (run.freqs[-1],), self.config.tone):
                run.gap = 0
                run.last_end = now + FRAME_SECONDS
                run.freqs.append(freq)
                run.levels.append(look.level_dbfs)
            else:
                preceded = self._recent_tone(now)
                if run is not None and len(run.freqs) < _MIN_RUN_FRAMES:
                    # A frame or two that only looked like a tone (a tone's ragged onset, a vowel):
                    # forget it rather than call what follows part of a sequence.
                    preceded = run.preceded
                elif run is not None:
                    event = self._close(run, followed=True)
                    preceded = True
                self._run = _Run(
                    onset=self._onset(frame, now) if run is None else now,
                    freq=freq,
                    last_end=now + FRAME_SECONDS,
                    preceded=preceded,
                    freqs=[freq],
                    levels=[look.level_dbfs],
                )
        elif run is not None:
            run.gap += 1
            if run.gap == 1:
                # The tone may run on into this frame (it ended inside it): count how far.
                run.tail = _blocks_above(frame, _rms(self._previous), from_end=False) / _BLOCKS_PER_SECOND
            if run.gap > self.config.max_gap_frames:
                if len(run.freqs) < _MIN_RUN_FRAMES:
                    self._run = None  # too short to be any tone: nothing to remember
                else:
                    event = self._close(run, followed=False)
        self._previous = frame
        if event is not None:
            self.events.append(event)
        return event

    @property
    def in_tone(self) -> bool:
        """True while a single tone has been heard for ``_MIN_RUN_FRAMES`` frames (gaps included)."""
        return self._run is not None and len(self._run.freqs) >= _MIN_RUN_FRAMES

    def _recent_tone(self, now: float) -> bool:
        """A tone ended within the isolation time before ``now``."""
        if not self._closed:
            return False
        return now - self._closed[-1].end <= self.config.isolation_ms / 1000 + 1e-9

    def _onset(self, frame: Pcm, now: float) -> float:
        """Where the tone rose: ``now``, or earlier in the frame before at half its level."""
        if self._previous is None:
            return now
        return now - _blocks_above(self._previous, _rms(frame), from_end=True) / _BLOCKS_PER_SECOND

    def _close(self, run: _Run, *, followed: bool) -> ToneEvent | None:
        """The run ended (a different tone came, or quiet): a beep, the end of a SIT, or nothing."""
        self._run = None
        freq = float(np.median(run.freqs))
        end = run.last_end + (0.0 if followed else run.tail)
        closed = _Closed(run.onset, end, freq)
        self._closed = [*self._closed[-2:], closed]
        config = self.config
        duration_ms = (end - run.onset) * 1000
        spread = max(run.freqs) - min(run.freqs)
        if (
            not run.preceded
            and not followed
            and config.min_ms <= duration_ms <= config.max_ms
            and config.min_hz <= freq <= config.max_hz
            and spread <= max(_MAX_SPREAD_HZ, _MAX_SPREAD * freq)
        ):
            at_ms = (run.onset - self.started_at) * 1000
            level = float(np.median(run.levels))
            return Beep(run.onset, end, round(at_ms, 1), round(freq, 1), round(level, 1))
        if not followed:
            return self._sit()
        return None

    def _sit(self) -> Sit | None:
        """The last three tones, back to back, rising through the SIT frequencies."""
        if len(self._closed) < 3:
            return None
        first, second, third = self._closed[-3:]
        gap = self.config.isolation_ms / 1000 + 1e-9
        if second.onset - first.end > gap or third.onset - second.end > gap:
            return None
        for segment, nominal in zip((first, second, third), SIT_FREQUENCIES, strict=True):
            if not any(abs(segment.freq - f) <= _SIT_TOLERANCE * f for f in nominal):
                return None
            if not _SIT_SEGMENT_MS[0] <= (segment.end - segment.onset) * 1000 <= _SIT_SEGMENT_MS[1]:
                return None
        at_ms = round((first.onset - self.started_at) * 1000, 1)
        return Sit(first.onset, third.end, at_ms, (first.freq, second.freq, third.freq))


__all__ = ["SIT_FREQUENCIES", "Beep", "BeepConfig", "BeepDetector", "Sit", "ToneEvent"]
