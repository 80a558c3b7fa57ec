"""Tones are not speech: a per-frame spectral look at telephone audio, and a classifier that keeps
beeps, ringback, SIT and in-band DTMF away from the VAD and the speech recogniser.

A voicemail beep played to Whisper comes back as words ("F- F- F-"), and a VAD calls a loud tone
speech. Both are cheap to tell apart from speech by their spectrum: a tone puts nearly all of a
frame's energy into one or two narrow peaks that hold still from frame to frame, while voice spreads
it over a series of harmonics whose pitch wanders.

:func:`analyse` looks at one 20 ms frame (with the frame before it, for a 40 ms window: 25 Hz
resolution, enough to find a peak to a few Hz) and returns a :class:`ToneFrame`:

* ``single``: at least ``concentration`` (80 %) of the energy within ±62 Hz of one peak, and a flat
  envelope over the frame's four 5 ms blocks (within 3.5 dB). Two tones a few tens of Hz apart (US
  ringback 440 + 480 Hz, UK 400 + 450 Hz) fall in one peak at this resolution, but they beat, so
  their envelope dips and rises within the frame: that test keeps ringback from looking like a beep.
  A frame whose envelope only rises or only falls holds a tone's start or end: neither kind.
* ``dual``: not single, and 80 % of the energy in two peaks that are not neighbouring harmonics of
  one voice (DTMF, dial and busy tones), or one peak that beats (ringback).

:class:`ToneClassifier` adds time: a frame is a tone once the same peaks have held for
``min_frames`` frames in a row (60 ms), which no speech sound does at telephone pitch resolution.
It is per stream and pure (frames in, decisions out; no clock). The conversation engine feeds it
every inbound frame next to the VAD and treats a tone frame as unvoiced, and leaves it out of the
audio it sends to STT (:attr:`ToneClassifier.run_frames` says how many frames back the tone
started, so the first ones, heard before it was confirmed, can be dropped too).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import SipAgentError
from ..rtp.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm

#: FFT size of the analysis: 320 samples (two frames) zero-padded, bins of 7.8 Hz.
_NFFT = 1024
_BIN_HZ = SAMPLE_RATE / _NFFT
#: Half-width of a peak: a 40 ms Hann window's main lobe is ±50 Hz; 8 bins is ±62.5 Hz.
_PEAK_HALF_BINS = 8
#: Peaks are searched for in the telephone band only (a mains hum or DC is no tone we care about).
_SEARCH_HZ = (250.0, 3400.0)
_WINDOW = np.hanning(2 * SAMPLES_PER_FRAME)
_BLOCKS = 4  # 5 ms envelope blocks per frame
_FULL_SCALE = 32768.0
_SEARCH = (int(_SEARCH_HZ[0] / _BIN_HZ), int(_SEARCH_HZ[1] / _BIN_HZ))

FloatArray = npt.NDArray[np.float64]


class ToneConfigError(SipAgentError, ValueError):
    """A tone or beep detection setting out of range; names the setting."""


class ToneKind(enum.Enum):
    """What kind of tone a frame holds."""

    SINGLE = "single"  # one stable frequency: a beep, one SIT segment, 425 Hz ringback
    DUAL = "dual"  # two: DTMF, US/UK ringback (beating), dial and busy tones


@dataclass(frozen=True, slots=True)
class ToneFrame:
    """One frame's spectral look (see the module docstring for the rules)."""

    kind: ToneKind | None
    #: Peak frequencies in Hz, strongest first (one for a single tone, two for a dual one).
    freqs: tuple[float, ...]
    level_dbfs: float
    #: Share of the energy near the strongest peak, and near the two strongest.
    concentration: float
    concentration2: float
    #: Loudest over quietest 5 ms block RMS in the frame (1.0: perfectly flat).
    envelope_ratio: float

    @property
    def is_tone(self) -> bool:
        """True when the frame alone looks like a tone (a classifier still wants it to last)."""
        return self.kind is not None


@dataclass(frozen=True, slots=True)
class ToneConfig:
    """Thresholds of :func:`analyse` and :class:`ToneClassifier`."""

    #: Share of the energy the peak (single) or the two peaks (dual) must hold.
    concentration: float = 0.80
    #: Loudest/quietest 5 ms block of a single tone (1.5: 3.5 dB; a beating pair is far above).
    max_envelope_ratio: float = 1.5
    #: Quieter frames are never tones (line noise cannot be a beep).
    min_level_dbfs: float = -45.0
    #: Frames in a row with the same peaks before the classifier calls them a tone (60 ms).
    min_frames: int = 3
    #: Frames inside a tone that may fail the test without ending it (the classifier's hangover).
    max_gap_frames: int = 1
    #: Two frames in a row hold the same tone when each peak moved less than this (Hz, or the share
    #: below). A tone generator holds its frequency to a fraction of a Hz (our estimate too, under
    #: G.711 and 10 dB of noise); a sung or held vowel drifts 2-5 Hz a frame at 350 Hz.
    freq_tolerance_hz: float = 2.5
    freq_tolerance: float = 0.0025

    def __post_init__(self) -> None:
        if not 0.5 <= self.concentration < 1.0:
            raise ToneConfigError(f"concentration must be in [0.5, 1), got {self.concentration}")
        if self.max_envelope_ratio < 1.0:
            raise ToneConfigError(f"max_envelope_ratio must be at least 1, got {self.max_envelope_ratio}")
        if self.min_frames < 1 or self.max_gap_frames < 0:
            raise ToneConfigError(f"need min_frames >= 1 and max_gap_frames >= 0, got {self.min_frames}, "
                             f"{self.max_gap_frames}")  # fmt: skip


DEFAULT_TONE_CONFIG = ToneConfig()


def level_dbfs(frame: Pcm) -> float:
    """RMS level of ``frame`` in dB below a full-scale square wave (a full-scale sine is -3)."""
    samples = frame.astype(np.float64)
    rms = math.sqrt(float(np.dot(samples, samples)) / max(len(samples), 1))
    return 20 * math.log10(max(rms, 1e-3) / _FULL_SCALE)


def _peak_hz(power: FloatArray, k: int) -> float:
    """The peak's frequency, refined by a parabola through the log power of its bin and neighbours."""
    if 0 < k < len(power) - 1:
        a, b, c = (math.log(max(float(power[i]), 1e-20)) for i in (k - 1, k, k + 1))
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator < 0 else 0.0
        return (k + max(-0.5, min(0.5, offset))) * _BIN_HZ
    return k * _BIN_HZ


def _harmonic_pair(low: float, high: float) -> bool:
    """Two peaks that are neighbouring harmonics of one voice (f0 = their distance, 60-450 Hz).

    DTMF pairs, dial, busy and ringback tones are none of them (the nearest, 941 + 1209 Hz, is 3.5
    times its spacing), so the test only ever excuses speech.
    """
    spacing = high - low
    if not 60.0 <= spacing <= 450.0:
        return False
    ratio = low / spacing
    return round(ratio) >= 1 and abs(ratio - round(ratio)) <= 0.08


def analyse(frame: Pcm, previous: Pcm | None = None, config: ToneConfig = DEFAULT_TONE_CONFIG) -> ToneFrame:
    """The spectral look at ``frame`` (160 int16 samples), windowed together with ``previous``."""
    if frame.shape != (SAMPLES_PER_FRAME,):
        raise ValueError(f"a frame is {SAMPLES_PER_FRAME} samples, got {frame.shape}")
    level = level_dbfs(frame)
    if level < config.min_level_dbfs:
        return ToneFrame(None, (), level, 0.0, 0.0, 0.0)
    before = previous if previous is not None else np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
    window = np.concatenate([before, frame]).astype(np.float64)
    window -= window.mean()
    spectrum = np.fft.rfft(window * _WINDOW, _NFFT)
    power: FloatArray = spectrum.real**2 + spectrum.imag**2
    total = float(power[1:].sum())
    if total <= 0.0:
        return ToneFrame(None, (), level, 0.0, 0.0, 0.0)
    lo, hi = _SEARCH
    k1 = lo + int(np.argmax(power[lo:hi]))
    near1 = slice(max(k1 - _PEAK_HALF_BINS, 1), k1 + _PEAK_HALF_BINS + 1)
    share1 = float(power[near1].sum()) / total
    rest = power.copy()
    rest[near1] = 0.0
    k2 = lo + int(np.argmax(rest[lo:hi]))
    near2 = slice(max(k2 - _PEAK_HALF_BINS, 1), k2 + _PEAK_HALF_BINS + 1)
    share2 = share1 + float(rest[near2].sum()) / total
    blocks = frame.astype(np.float64).reshape(_BLOCKS, -1)
    block_rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    envelope = float(block_rms.max() / max(float(block_rms.min()), 1e-3))
    f1, f2 = _peak_hz(power, k1), _peak_hz(power, k2)
    kind: ToneKind | None = None
    freqs: tuple[float, ...] = ()
    if share1 >= config.concentration:
        # One peak: a pure tone if the envelope is flat, two close tones beating if it dips and
        # rises again (a beat of 40-50 Hz has a peak or a null in every 20 ms), and a tone starting
        # or stopping inside the frame if it only rises or only falls (neither: its neighbours say).
        steps = np.diff(block_rms)
        if envelope <= config.max_envelope_ratio:
            kind = ToneKind.SINGLE
        elif not (np.all(steps >= 0) or np.all(steps <= 0)):
            kind = ToneKind.DUAL
        freqs = (round(f1, 1),) if kind is not None else ()
    elif share2 >= config.concentration and not _harmonic_pair(min(f1, f2), max(f1, f2)):
        kind = ToneKind.DUAL
        freqs = (round(f1, 1), round(f2, 1))
    return ToneFrame(kind, freqs, level, share1, share2, envelope)


def same_tone(
    a: tuple[float, ...],
    b: tuple[float, ...],
    config: ToneConfig = DEFAULT_TONE_CONFIG,
    *,
    loose: bool = False,
) -> bool:
    """Whether two frames' peaks are the same tone.

    Strict (a single tone): same count, each within the tolerance. ``loose`` (dual tones): every
    peak of the one with fewer lies within a peak's width of one of the other's, because two tones
    that beat move their one visible peak around (US ringback's wanders over 448-485 Hz) and the
    stronger of a DTMF pair may swap with the twist.
    """
    if not a or not b:
        return False
    if loose:
        short, long = (a, b) if len(a) <= len(b) else (b, a)
        width = (_PEAK_HALF_BINS + 1) * _BIN_HZ
        return all(any(abs(x - y) <= width for y in long) for x in short)
    if len(a) != len(b):
        return False
    return all(
        abs(x - y) <= max(config.freq_tolerance_hz, config.freq_tolerance * max(x, y))
        for x, y in zip(sorted(a), sorted(b), strict=True)
    )


class ToneClassifier:
    """Per stream: is this frame part of a tone? (Feed every frame, in order; see the module docstring.)

    Usage beside the VAD, one instance per call::

        tones = ToneClassifier()
        for frame in frames:
            voiced = not tones.is_tone(frame) and vad.is_speech(frame)
    """

    def __init__(self, config: ToneConfig = DEFAULT_TONE_CONFIG) -> None:
        self.config = config
        self._previous: Pcm | None = None
        #: The latest frame's look.
        self.last: ToneFrame | None = None
        #: Frames in a row holding the current tone candidate (0: none).
        self.run_frames = 0
        self._run_freqs: tuple[float, ...] = ()
        self._run_kind: ToneKind | None = None
        self._gap = 0

    def push(self, frame: Pcm) -> ToneFrame:
        """Consume one 20 ms frame and return its look; :attr:`in_tone` says whether it is a tone."""
        look = analyse(frame, self._previous, self.config)
        self._previous = frame
        self.observe(look)
        return look

    def observe(self, look: ToneFrame) -> None:
        """Account for a frame already analysed (by a beep detector sharing the analysis)."""
        self.last = look
        if look.kind is None:
            if self.run_frames and self._gap < self.config.max_gap_frames:
                # A frame inside the tone that did not look like one (a ramp, a beat's null, a
                # concealed packet): the tone goes on through it.
                self._gap += 1
                return
            self.run_frames = 0
            self._run_freqs = ()
            self._run_kind = None
        elif (
            self.run_frames
            and look.kind is self._run_kind
            and same_tone(look.freqs, self._run_freqs, self.config, loose=look.kind is ToneKind.DUAL)
        ):
            self.run_frames += 1
            self._run_freqs = look.freqs  # frame to frame: a slow drift is not a new tone, a jump is
            self._gap = 0
        else:
            self._gap = 0
            self.run_frames = 1
            self._run_freqs = look.freqs
            self._run_kind = look.kind

    @property
    def in_tone(self) -> bool:
        """True when the latest frame belongs to a tone that has lasted ``min_frames`` frames."""
        return self.run_frames >= self.config.min_frames

    @property
    def tone_kind(self) -> ToneKind | None:
        """The current tone's kind while :attr:`in_tone`."""
        return self._run_kind if self.in_tone else None

    def is_tone(self, frame: Pcm) -> bool:
        """Consume one 20 ms frame; True when it belongs to a confirmed tone (like ``Vad.is_speech``)."""
        self.push(frame)
        return self.in_tone

    def reset(self) -> None:
        """Forget the stream (a new call)."""
        self._previous = None
        self.last = None
        self.run_frames = 0
        self._run_freqs = ()
        self._run_kind = None
        self._gap = 0


__all__ = [
    "DEFAULT_TONE_CONFIG",
    "ToneClassifier",
    "ToneConfig",
    "ToneConfigError",
    "ToneFrame",
    "ToneKind",
    "analyse",
    "level_dbfs",
    "same_tone",
]
