"""Echo guard: tell the caller's voice from the agent's own voice coming back down the line.

A phone line returns part of what the agent says: the far end's hybrid (2-wire/4-wire) and
acoustic coupling in handsets reflect it, attenuated by the echo return loss (ERL: typically
6-12 dB or more on the PSTN, less on some lines) and delayed by the network round trip plus our
jitter buffer (0-300 ms here). A VAD cannot tell that echo from speech, so without this guard the
agent would barge in on itself. Pure and per call: no clock (times are passed in), no threads.

How a voiced inbound frame is judged
====================================
1. **The agent was silent within the tail** (nothing above ``silence_peak`` sent in the last
   ``tail_ms``): caller. Nothing can be echoing.
2. **The echo path is not known yet**: the best normalized cross-correlation of the frame
   against every 160-sample stretch of the outbound history in the tail decides, with a frame-level
   Geigel double-talk detector setting how sure it must be. A frame whose peak exceeds the loudest
   outbound peak in the tail less ``erl_margin_db`` is echo at ``echo_correlation`` or more; a
   quieter one, which Geigel alone would call echo, already at ``quiet_echo_correlation``. Geigel
   alone would make a caller who speaks more softly than the agent (a quiet phone against TTS at
   -6 dBFS) unable to interrupt until an echo had been heard, which on a 4-wire line never happens.
3. **Learning the path**: a frame correlated at ``learn_correlation`` or more is echo alone and
   gives the path: its delay (in samples; tracked in outbound frames so that the order of calls
   within a tick does not move it) and its gain. Geigel-quiet frames are searched now and then
   (once per ``hold_ms``) for this, even though they need no search to be judged.
4. **The echo path is known**: the echo in a frame is predicted (gain × the outbound audio at the
   delay, the best of ±``search_samples``) and subtracted. The frame is the caller when what is
   left is louder than the predicted echo times a threshold that follows the line: it starts at
   ``residual_margin_db`` and, on a line the one-tap model explains well (measured on clear echo:
   see :meth:`EchoGuard._track_model_error`), drops to as low as -15 dB. This hears a caller who
   talks while the agent pauses between words, or below the agent's peaks, which Geigel's
   comparison against the loudest sound of the last 300 ms cannot.
5. **Confirming a caller verdict** (the path may have moved: jitter buffers re-size) by the same
   full-tail search: a frame correlated at ``echo_correlation`` at any delay is echo after all.
   Once confirmed, double talk is trusted for ``hold_ms`` without searching again.

Cost
====
A full-tail search is one ``np.correlate`` of 160 samples over 2,880 (40-80 µs on the 2-core
dev box). It runs only on frames that look like the caller outside an established double talk,
and once per ``hold_ms`` to learn, so the guard averages about 20 µs per frame (outbound and
inbound together; measured in ``tests/test_echo_guard.py``).

Limits
======
The path model is one tap: a strongly dispersive hybrid leaves residuals close to the echo level,
and the threshold then stays at ``residual_margin_db`` (a caller quieter than the echo is missed
while the agent talks). Before any echo has been heard, every voiced frame over the agent costs a
full-tail search until double talk is established.
Non-linear echo (a clipping handset) is not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from ..rtp.frames import PTIME_MS, SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm

_Float = npt.NDArray[np.float64]
_N = SAMPLES_PER_FRAME

#: First-difference pre-emphasis before the full-tail search. Voiced speech is dominated by a
#: few strong low harmonics, so two unrelated voices correlate well by chance somewhere in 300 ms
#: (0.5 typically, 0.9 at worst on the recorded fixtures); flattening the spectrum brings that to
#: 0.35 and 0.65, while an echo (the same waveform) still correlates near 1.
PRE_EMPHASIS = 0.9
#: The caller threshold sits this far above the floor of the echo model's error on the line
#: (single frames of clear echo reach 15-20 dB above the floor)...
_ERROR_HEADROOM_DB = 20.0
#: ...but never lower than this relative to the predicted echo.
_MOST_SENSITIVE_DB = -15.0
#: A jitter buffer re-sizes by whole frames: a plain-correlation peak this far (or farther) from the
#: learnt delay is the path having moved, while nearer ones are a dispersive hybrid's smear around it.
_MOVED_PATH = _N // 2
#: A learnt gain above this is no echo (louder than the agent by 6 dB), whatever the correlation.
_MAX_GAIN = 2.0


@dataclass(frozen=True, slots=True)
class EchoConfig:
    """Tunables of :class:`EchoGuard`, validated when built.

    * ``tail_ms`` = 300: longest echo delay looked for (network round trip + jitter buffer +
      far-end hybrid). Longer tails cost search time and raise the odds of a chance correlation.
    * ``erl_margin_db`` = 6: the Geigel threshold, the echo return loss assumed until the path is
      learnt (G.168's usual 6 dB: PSTN hybrids give 6-12 dB or more).
    * ``echo_correlation`` = 0.6: a frame this correlated (pre-emphasized) with some stretch of the
      agent's audio is mostly echo. A caller's frame reaches 0.35 by chance typically and 0.65 at
      worst on the fixtures; an echo through a dispersive hybrid 0.65 or more in 99 frames of 100.
    * ``quiet_echo_correlation`` = 0.5: the same for a frame quiet enough to be echo by Geigel's
      rule (while no path is known): a caller's frame passes it in most frames (0.35 typically), so
      a soft caller still interrupts within a few frames more; echo rarely falls below it.
    * ``learn_correlation`` = 0.8: a frame this correlated is echo alone; it teaches the path.
    * ``residual_margin_db`` = 0: the caller threshold on a line not (yet) shown to be clean: what
      the echo model cannot explain must be louder than the predicted echo itself.
    * ``hold_ms`` = 100: double talk, once confirmed by a search, is trusted this long without
      another (Geigel's hangover, used here to bound cost); also the learning search interval.
    * ``silence_peak`` = 64: outbound frames whose peak is under this (about -54 dBFS) are silence.
    * ``search_samples`` = 4: how far around the learnt delay the per-frame check looks (far-end
      clock drift, G.711 alignment).
    """

    tail_ms: float = 300.0
    erl_margin_db: float = 6.0
    echo_correlation: float = 0.6
    quiet_echo_correlation: float = 0.5
    learn_correlation: float = 0.8
    residual_margin_db: float = 0.0
    hold_ms: float = 100.0
    silence_peak: float = 64.0
    search_samples: int = 4
    frame_ms: float = PTIME_MS

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"EchoConfig.{field.name} must be a finite number, got {value!r}")
        for name in ("tail_ms", "frame_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EchoConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("erl_margin_db", "hold_ms", "silence_peak", "search_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"EchoConfig.{name} must not be negative, got {getattr(self, name)!r}")
        for name in ("echo_correlation", "quiet_echo_correlation", "learn_correlation"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"EchoConfig.{name} must be in (0, 1], got {getattr(self, name)!r}")
        if self.learn_correlation < self.echo_correlation:
            raise ValueError(
                f"EchoConfig.learn_correlation ({self.learn_correlation}) must be at least "
                f"echo_correlation ({self.echo_correlation}): only clear echo may teach the path"
            )
        if not isinstance(self.search_samples, int):
            raise ValueError(f"EchoConfig.search_samples must be an int, got {self.search_samples!r}")
        if self.residual_margin_db < _MOST_SENSITIVE_DB:
            raise ValueError(
                f"EchoConfig.residual_margin_db must be at least {_MOST_SENSITIVE_DB} dB, "
                f"got {self.residual_margin_db!r}"
            )
        if abs(self.frame_ms * SAMPLE_RATE / 1000 - _N) > 1e-9:
            raise ValueError(f"EchoConfig.frame_ms must match {_N}-sample frames, got {self.frame_ms!r}")


class EchoGuard:
    """Per-call echo guard: feed every outbound frame and ask about every voiced inbound frame.

    ``now`` is on one clock for both directions (the media tick). Use it as
    ``voiced = vad.is_speech(frame) and guard.inbound_is_caller(frame, now)``.
    """

    def __init__(self, config: EchoConfig | None = None, history: OutboundHistory | None = None) -> None:
        self.config = config or EchoConfig()
        c = self.config
        if history is not None and (history.tail_ms, history.frame_ms) != (c.tail_ms, c.frame_ms):
            raise ValueError(
                f"a shared OutboundHistory must have this guard's tail and frame "
                f"({c.tail_ms} ms, {c.frame_ms} ms), got ({history.tail_ms} ms, {history.frame_ms} ms)"
            )
        #: What the agent sent within the tail; guards judging two inbound streams of one call
        #: (played and arrived) share it, so each outbound frame is written once.
        self.history = history if history is not None else OutboundHistory(c.tail_ms, c.frame_ms)
        self._frame = c.frame_ms / 1000
        self._tail = c.tail_ms / 1000
        self._geigel = 10 ** (-c.erl_margin_db / 20)
        self._hold = c.hold_ms / 1000
        #: Residual-to-echo power ratio above which a frame is the caller (see _track_model_error).
        self._threshold = 10 ** (c.residual_margin_db / 10)
        self._error_floor_db: float | None = None
        #: The learnt echo path: delay in samples behind the newest outbound frame, counted as if
        #: that frame had been sent in the inbound frame's tick; gain (signed: some lines invert).
        self.delay_samples: int | None = None
        self.gain = 0.0
        self._double_talk_until = -math.inf
        #: Full-tail searches so far (for tests and the benchmark).
        self.searches = 0

    # -- public ---------------------------------------------------------------------------------
    def note_outbound(self, pcm: Pcm, now: float) -> None:
        """The agent sent this frame at ``now``; call for every frame sent, silence included
        (once per call: guards sharing a history share this too)."""
        self.history.note(pcm, now)

    def inbound_is_caller(self, pcm: Pcm, now: float) -> bool:
        """Whether a voiced inbound frame received at ``now`` is the caller, not only our echo."""
        if pcm.shape != (_N,):
            raise ValueError(f"an inbound frame holds {_N} samples, got shape {pcm.shape}")
        h = self.history
        if h.last_out is None or now - h.last_out > self._tail + self._frame:
            return True
        far_peak = max(h.peaks)
        if far_peak < self.config.silence_peak:
            return True
        x = pcm.astype(np.float64)
        # Outbound ticks since the newest frame held (the agent stopped, or the call order).
        ticks = max(0, round((now - h.last_out) / self._frame))
        # Geigel: quiet enough, against the loudest thing we sent within the tail, to be echo.
        quiet = float(np.abs(x).max()) <= far_peak * self._geigel
        if self.delay_samples is None:
            return self._confirm(x, ticks, now, quiet)
        return self._known_path(x, ticks, now, quiet)

    @property
    def threshold_db(self) -> float:
        """The current caller threshold, residual over predicted echo (see the module docstring)."""
        return 10 * math.log10(self._threshold)

    # -- decisions ------------------------------------------------------------------------------
    def _known_path(self, x: _Float, ticks: int, now: float, quiet: bool) -> bool:
        assert self.delay_samples is not None
        c, h = self.config, self.history
        lag = h.size - _N - (self.delay_samples - ticks * _N)
        lo = max(0, lag - c.search_samples)
        hi = min(h.size - _N, lag + c.search_samples)
        if lo <= hi:
            # The echo predicted at each lag near the learnt delay; keep the lag that explains
            # most (smallest residual): a correlation peak would drift to a louder or
            # lower-pitched neighbour and take the learnt delay with it.
            near = h.ring[h.pos + lo : h.pos + hi + _N]
            dots = np.correlate(near, x, "valid")
            powers = np.correlate(near * near, _ONES, "valid")
            signal = float(np.dot(x, x))
            residuals = signal - 2 * self.gain * dots + self.gain**2 * powers
            k = int(np.argmin(residuals))
            error, dot, power = float(residuals[k]), float(dots[k]), float(powers[k])
            echo = self.gain**2 * power
            if dot * dot >= c.learn_correlation**2 * power * signal > 0:
                self._learn(x, lo + k, ticks)  # clear echo: follow the gain and any drift
                if echo > 0 and now >= self._double_talk_until:
                    self._track_model_error(error / echo)
            if error <= echo * self._threshold:
                return False
        return self._confirm(x, ticks, now, quiet)

    def _confirm(self, x: _Float, ticks: int, now: float, quiet: bool) -> bool:
        """The frame may be the caller: unless double talk is established, search to be sure
        (a Geigel-quiet frame by the stricter test of :meth:`_search_is_echo`)."""
        if now < self._double_talk_until:
            self._double_talk_until = now + self._hold
            return True
        if self._search_is_echo(x, ticks, quiet=quiet):
            return False
        self._double_talk_until = now + self._hold
        return True

    def _search_is_echo(self, x: _Float, ticks: int, *, quiet: bool = False) -> bool:
        """Full-tail search: is ``x`` correlated with any stretch of the outbound history?

        A frame correlated at ``learn_correlation`` also teaches the path. A ``quiet`` frame is echo
        at ``quiet_echo_correlation`` already (no path learnt yet), or when its plain (not
        pre-emphasized) correlation reaches ``learn_correlation`` at a delay half a frame or more
        from the learnt one: a faint echo's high band drowns in line noise and G.711 quantization,
        which pre-emphasis amplifies, while its waveform still matches, typically just after a
        jitter buffer re-sized and moved the path.
        (At the learnt delay the path model has already judged it: a caller under the echo.)
        """
        self.searches += 1
        size = self.history.size
        history = self.history.oldest_first()
        # emphasized[k] pairs history[k + 1] with history[k], as probe[i] does x[i + 1] with x[i]:
        # if x[i] = g * history[m + i] then probe[i] = g * emphasized[m + i], same lag m.
        emphasized = history[1:] - PRE_EMPHASIS * history[:-1]
        probe = x[1:] - PRE_EMPHASIS * x[:-1]
        n = len(probe)
        scores = np.correlate(emphasized, probe, "valid")
        energy = np.cumsum(emphasized * emphasized)
        window = energy[n - 1 :] - np.concatenate(([0.0], energy[:-n]))
        # Silent stretches have no energy: a tiny denominator must not win the maximum.
        floor = 1e-3 * float(window.max(initial=0.0)) + 1.0
        rho = scores / np.sqrt(np.maximum(window, floor) * (float(np.dot(probe, probe)) + 1e-9))
        lag = int(np.argmax(np.abs(rho)))
        correlation = abs(float(rho[lag]))
        if correlation >= self.config.learn_correlation and lag <= size - _N:
            self._learn(x, lag, ticks)
        if not quiet:
            return correlation >= self.config.echo_correlation
        # With a learnt path, the model has judged the frame already: only the moved-path check
        # below is added (a lower bar here would mishear a caller mixed with a dispersive echo).
        c = self.config
        if correlation >= (c.quiet_echo_correlation if self.delay_samples is None else c.echo_correlation):
            return True
        plain = np.correlate(history, x, "valid")
        power = np.cumsum(history * history)
        stretch = power[_N - 1 :] - np.concatenate(([0.0], power[:-_N]))
        floor = 1e-3 * float(stretch.max(initial=0.0)) + 1.0
        rho_plain = np.abs(plain / np.sqrt(np.maximum(stretch, floor) * (float(np.dot(x, x)) + 1e-9)))
        best = int(np.argmax(rho_plain))
        if float(rho_plain[best]) < self.config.learn_correlation:
            return False
        delay = size - _N - best + ticks * _N
        if self.delay_samples is not None and abs(delay - self.delay_samples) < _MOVED_PATH:
            return False
        self._learn(x, best, ticks)
        return True

    # -- the path -------------------------------------------------------------------------------
    def _learn(self, x: _Float, lag: int, ticks: int) -> None:
        segment = self.history.frame_at(lag)
        gain = float(np.dot(x, segment) / (np.dot(segment, segment) + 1e-9))
        if abs(gain) > _MAX_GAIN:
            return
        delay = self.history.size - _N - lag + ticks * _N
        if self.delay_samples is None or abs(delay - self.delay_samples) > self.config.search_samples:
            self.gain = gain  # a new path: start over rather than average with the old one
        else:
            self.gain = 0.75 * self.gain + 0.25 * gain
        self.delay_samples = delay

    def _track_model_error(self, ratio: float) -> None:
        """Follow how well the one-tap model explains clear echo on this line.

        The floor of the residual-to-echo ratio falls fast and rises slowly (as a noise-floor
        tracker does), so a caller murmuring under the echo barely lifts it. On a line that is a
        delay and a gain (plus G.711) it sits 30 dB or more below the echo; on a dispersive hybrid
        15-20 dB, with single frames up to 20 dB above the floor. The caller threshold is the floor
        plus ``_ERROR_HEADROOM_DB`` within [``_MOST_SENSITIVE_DB``, ``residual_margin_db``]: a
        clean line hears a caller well below the echo, a dispersive one falls back to the margin.
        """
        error_db = 10 * math.log10(max(ratio, 1e-6))
        if self._error_floor_db is None:
            self._error_floor_db = error_db
        else:
            rate = 0.3 if error_db < self._error_floor_db else 0.02
            self._error_floor_db += rate * (error_db - self._error_floor_db)
        threshold_db = self._error_floor_db + _ERROR_HEADROOM_DB
        threshold_db = min(self.config.residual_margin_db, max(_MOST_SENSITIVE_DB, threshold_db))
        self._threshold = 10 ** (threshold_db / 10)


class OutboundHistory:
    """The agent's last ``tail_ms`` of outbound audio (plus two frames), oldest first, and each
    frame's peak: what an :class:`EchoGuard` searches for its echo.

    A ring written twice (at ``i`` and ``i + size``) so the history, oldest first, is always the
    contiguous slice ``ring[pos : pos + size]``: no copying per frame.
    """

    def __init__(self, tail_ms: float = 300.0, frame_ms: float = PTIME_MS) -> None:
        self.tail_ms, self.frame_ms = tail_ms, frame_ms
        self._frame = frame_ms / 1000
        #: Frames of history: every delay up to the tail, plus one frame because an echo delayed
        #: by a fraction of a frame straddles two, plus one for either call order within a tick.
        self.frames = math.ceil(tail_ms / frame_ms - 1e-9) + 2
        self.size = self.frames * _N
        self.ring: _Float = np.zeros(2 * self.size)
        self.pos = 0
        self.peaks = [0.0] * self.frames
        #: When the newest frame was sent (None: nothing yet).
        self.last_out: float | None = None

    def note(self, pcm: Pcm, now: float) -> None:
        """The agent sent this frame at ``now``; ticks skipped since the last one were silence."""
        if pcm.shape != (_N,):
            raise ValueError(f"an outbound frame holds {_N} samples, got shape {pcm.shape}")
        if self.last_out is not None:
            missing = min(round((now - self.last_out) / self._frame) - 1, self.frames)
            for _ in range(max(0, missing)):
                self._write(None)
        self._write(pcm)
        self.last_out = now

    def oldest_first(self) -> _Float:
        """The whole history as one contiguous view, oldest sample first."""
        return self.ring[self.pos : self.pos + self.size]

    def frame_at(self, lag: int) -> _Float:
        """The frame-long stretch starting ``lag`` samples into :meth:`oldest_first`."""
        return self.ring[self.pos + lag : self.pos + lag + _N]

    def _write(self, pcm: Pcm | None) -> None:
        pos, size = self.pos, self.size
        if pcm is None:
            self.ring[pos : pos + _N] = 0.0
            self.ring[pos + size : pos + size + _N] = 0.0
            peak = 0.0
        else:
            self.ring[pos : pos + _N] = pcm
            self.ring[pos + size : pos + size + _N] = pcm
            peak = float(max(int(pcm.max()), -int(pcm.min())))
        self.peaks[pos // _N] = peak
        self.pos = (pos + _N) % size


_ONES: _Float = np.ones(_N)
