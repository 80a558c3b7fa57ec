"""Packet loss concealment for 8 kHz speech, after ITU-T G.711 Appendix I (pitch waveform repetition).

The jitter buffer hands every sample it plays through a :class:`Concealer`: real audio with
:meth:`~Concealer.good`, gaps with :meth:`~Concealer.conceal`. How a gap is filled:

1. **Pitch.** At the start of an erasure, the pitch period *P* is the lag in 2.5–15 ms
   (20–120 samples) that maximises the normalised cross-correlation between the last 20 ms
   of output and the signal *P* samples earlier: one ``np.correlate`` for all 101 lags.
2. **One smooth cycle.** The last *P* samples are the cycle to repeat; its last quarter period
   is cross-faded into the quarter period that preceded its first sample, so the cycle's end
   runs into its start without a step.
3. **The join.** The extension's first sample follows the last real one with the step the
   signal took one period earlier; the offset this leaves (the real signal is never exactly
   periodic) is faded out over the first quarter period. No click, and none of the 3.75 ms
   output delay Appendix I spends on a look-back overlap-add.
4. **Attenuation.** Full level for the first 10 ms, then 20 % less per 10 ms (a linear ramp
   per sample), silent from 60 ms: a held vowel for longer than that sounds worse than silence.
5. **Resume.** The first real samples after an erasure are cross-faded from the synthetic
   continuation: 4 ms after a 10 ms gap, 4 ms more per further 10 ms, at most 10 ms.

Everything is float32 numpy on whole blocks; the only per-frame cost on the good path is one
copy into the history. A history of 400 samples (50 ms) covers the longest lag plus the
correlation window.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .frames import Pcm

__all__ = ["HISTORY", "MAX_PITCH", "MIN_PITCH", "Concealer"]

MIN_PITCH = 20  # 2.5 ms: 400 Hz
MAX_PITCH = 120  # 15 ms: 66 Hz
CORRELATION = 160  # 20 ms of the most recent signal is matched against the past
HISTORY = 400  # >= CORRELATION + MAX_PITCH; 50 ms
_UNATTENUATED = 80  # the first 10 ms of an erasure play at full level
_FADE_OUT = 480  # silent after 60 ms: 1.0 at 80 samples, -0.2 every 80 samples
_MAX_BLOCK = 480  # the longest block asked of conceal() / good() in one call (60 ms)
_SPARE = 32 * 160  # append area: the history is compacted once per 32 frames, not per frame

_F32 = npt.NDArray[np.float32]

# Gain per sample index since the erasure began; zeros past 60 ms (padded for a block read).
_GAIN = np.concatenate(
    [
        np.ones(_UNATTENUATED, dtype=np.float32),
        np.linspace(1.0, 0.0, _FADE_OUT - _UNATTENUATED, endpoint=False, dtype=np.float32),
        np.zeros(_MAX_BLOCK, dtype=np.float32),
    ]
)
_GAIN.flags.writeable = False


def _make_ramp(length: int) -> _F32:
    ramp = np.arange(1, length + 1, dtype=np.float32) / np.float32(length + 1)
    ramp.flags.writeable = False
    return ramp


# Cross-fade weights rising strictly between 0 and 1, for each length up to 10 ms.
_RAMPS = [_make_ramp(length) for length in range(_UNATTENUATED + 1)]


class Concealer:
    """Synthesises audio for lost blocks from the history of what was played.

    One per stream. Call :meth:`good` with each block of real audio as it is played (it returns
    the block, cross-faded if it ends an erasure) and :meth:`conceal` for each missing block.
    Blocks are at most 480 samples.
    """

    def __init__(self) -> None:
        self._buffer = np.zeros(HISTORY + _SPARE, dtype=np.int16)
        self._end = HISTORY  # the history is _buffer[_end - HISTORY:_end]
        self._concealing = False  # between the first concealed block and the next good one
        self._lost = 0  # samples synthesised in the current erasure
        self._pitch = MAX_PITCH
        self._cycles: _F32 = np.zeros(0, dtype=np.float32)  # the cycle repeated, phase 0 first
        self._phase = 0  # next sample's offset into the cycle

    @property
    def concealing(self) -> bool:
        """Whether the last block out was synthetic (an erasure is in progress)."""
        return self._concealing

    @property
    def pitch(self) -> int:
        """The pitch period (samples) estimated at the start of the last erasure."""
        return self._pitch

    def good(self, samples: Pcm) -> Pcm:
        """Record a block of real audio about to be played; returns it (cross-faded on resume).

        The block is modified in place when it ends an erasure: pass an array you own.
        """
        if self._concealing:
            self._resume(samples)
        self._remember(samples)
        return samples

    def conceal(self, count: int) -> Pcm:
        """Synthesise the next ``count`` samples of a gap (a fresh array)."""
        if not self._concealing:
            self._start()
            out = self._synthesise(count)
            # The extension starts with the step the signal took one period earlier; whatever
            # the real signal departed from that period by is faded out over a quarter period.
            history = self._history()
            offset = float(history[-1]) - float(history[-1 - self._pitch])
            overlap = min(max(self._pitch >> 2, 1), count)
            out[:overlap] += offset * (1 - _RAMPS[overlap])
        elif self._lost >= _FADE_OUT:
            pcm = np.zeros(count, dtype=np.int16)
            self._remember(pcm)
            self._lost += count
            return pcm
        else:
            out = self._synthesise(count)
        self._lost += count
        np.rint(out, out=out)
        np.clip(out, -32768, 32767, out=out)  # the onset offset can overshoot
        pcm = out.astype(np.int16)
        self._remember(pcm)
        return pcm

    def discontinuity(self) -> None:
        """The next good block does not follow the last one (a frame was skipped): fade into it.

        The cross-fade starts from the synthetic continuation of the history at full level, as
        at the end of a short erasure.
        """
        if not self._concealing:
            self._start()

    # -- internals ---------------------------------------------------------------------------

    def _history(self) -> Pcm:
        return self._buffer[self._end - HISTORY : self._end]

    def _remember(self, samples: Pcm) -> None:
        end = self._end
        count = samples.shape[0]
        if end + count > self._buffer.shape[0]:
            self._buffer[:HISTORY] = self._buffer[end - HISTORY : end]
            end = HISTORY
        self._buffer[end : end + count] = samples
        self._end = end + count

    def _start(self) -> None:
        """Begin an erasure: estimate the pitch and build the cycle to repeat."""
        history = self._history().astype(np.float32)
        pitch = _estimate_pitch(history)
        overlap = max(pitch >> 2, 1)
        cycle = history[HISTORY - pitch :].copy()
        # The cycle's tail fades into the quarter period that led into its first sample.
        before = history[HISTORY - pitch - overlap : HISTORY - pitch]
        tail = cycle[pitch - overlap :]
        tail += _RAMPS[overlap] * (before - tail)
        repeats = -(-(pitch + _MAX_BLOCK) // pitch)
        self._cycles = np.concatenate([cycle] * repeats)
        self._pitch = pitch
        self._phase = 0
        self._lost = 0
        self._concealing = True

    def _synthesise(self, count: int) -> _F32:
        """The next ``count`` samples of the attenuated periodic extension (advances the phase)."""
        phase = self._phase
        out: _F32 = self._cycles[phase : phase + count] * _GAIN[self._lost : self._lost + count]
        self._phase = (phase + count) % self._pitch
        return out

    def _resume(self, samples: Pcm) -> None:
        """Cross-fade the first real samples after an erasure from the synthetic continuation."""
        extra_blocks = max(self._lost - 1, 0) // 80
        length = min(32 + 32 * extra_blocks, 80, samples.shape[0])
        faded = self._lost >= _FADE_OUT
        synthetic = np.zeros(length, dtype=np.float32) if faded else self._synthesise(length)
        head = samples[:length] - synthetic  # float32
        head *= _RAMPS[length]
        head += synthetic
        samples[:length] = np.rint(head, out=head)
        self._concealing = False
        self._lost = 0


def _estimate_pitch(history: _F32) -> int:
    """The lag (20-120 samples) maximising the normalised correlation of the last 20 ms."""
    recent = history[HISTORY - CORRELATION :]
    # Entry j of the correlation is against the CORRELATION samples ending (MAX_PITCH - j) ago.
    past = history[HISTORY - CORRELATION - MAX_PITCH : HISTORY - MIN_PITCH]
    correlation = np.correlate(past, recent, "valid")
    # Window energies from float64 running sums (float32 ones lose the small windows).
    sums = np.cumsum(np.square(past, dtype=np.float64))
    energy = sums[CORRELATION - 1 :]
    energy[1:] -= sums[: sums.shape[0] - CORRELATION]
    # Only positive correlation counts; the energy floor keeps silence from dividing by zero.
    score = np.maximum(correlation, 0.0) * correlation / np.maximum(energy, 1.0)
    return MAX_PITCH - int(np.argmax(score))
