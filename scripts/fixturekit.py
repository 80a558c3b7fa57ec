"""What the fixture builders share: signal helpers, the caller's audio, a fixture and its inputs.

``scripts/make_fixtures.py`` (the call around the audio, the manifest, the command line) and
``scripts/agent_fixtures.py`` (the phone agent's fixtures) both build on this module, and neither
imports the other. Everything here is deterministic: noise comes from numpy's legacy
``RandomState``, seeded by the caller.
"""

from __future__ import annotations

import math
import wave
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from speech_truth import SOURCE_RATE, ClipTruth, clip_truth

Pcm = npt.NDArray[np.int16]
Signal = npt.NDArray[np.float64]

RATE = 8000
PTIME_MS = 20
FRAME = RATE * PTIME_MS // 1000  # 160 samples per packet
FULL_SCALE = 32767.0
LEAD_S = TRAIL_S = 0.5


# --- signals ----------------------------------------------------------------------------------------


def resample(x: Signal, rate_in: int, rate_out: int) -> Signal:
    """Band-limited resampling by Kaiser-windowed sinc interpolation (no scipy in the venv).

    Low-pass at 3.65 kHz for an 8 kHz output (inside the 4 kHz Nyquist limit, ~340 Hz transition
    band, ~80 dB stop band), so 16 kHz → 8 kHz is an anti-aliased decimation and espeak-ng's
    22.05 kHz works the same way.
    """
    if rate_in == rate_out:
        return x.copy()
    cutoff = min(rate_in, rate_out) / 2 * 0.9125  # Hz
    half = math.ceil(0.008 * rate_in)  # input samples each side (8 ms)
    beta = 8.0
    fc = cutoff / rate_in  # cycles per input sample
    n_out = len(x) * rate_out // rate_in
    padded = np.concatenate([np.zeros(half + 1), x, np.zeros(half + 2)])
    offsets = np.arange(-half, half + 1)
    out = np.empty(n_out, dtype=np.float64)
    for start in range(0, n_out, 4096):
        n = np.arange(start, min(start + 4096, n_out))
        # Exact rational positions: output n sits at input n·rate_in/rate_out.
        base = (n * rate_in) // rate_out
        frac = (n * rate_in - base * rate_out) / rate_out
        dist = frac[:, None] - offsets[None, :]
        window = np.i0(beta * np.sqrt(np.clip(1 - (dist / (half + 1)) ** 2, 0, None))) / np.i0(beta)
        kernel = 2 * fc * np.sinc(2 * fc * dist) * window
        taps = padded[(base + half + 1)[:, None] + offsets[None, :]]
        out[n] = np.sum(taps * kernel, axis=1)
    return out


def to_pcm(x: Signal) -> Pcm:
    """Round and clip to 16-bit."""
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def frame_rms(x: Signal) -> Signal:
    """RMS of each whole 20 ms frame."""
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    return np.asarray(np.sqrt(np.mean(frames * frames, axis=1)), dtype=np.float64)


def noise_floor(x: Signal) -> float:
    """The clip's background level: 10th percentile of its frame RMS, kept within -65…-45 dBFS."""
    floor = float(np.percentile(frame_rms(x), 10))
    return float(np.clip(floor, FULL_SCALE * 10 ** (-65 / 20), FULL_SCALE * 10 ** (-45 / 20)))


def noise(rng: np.random.RandomState, seconds: float, rms: float) -> Signal:
    """Gaussian noise of ``rms``: a line's background hiss, never digital zeros (VAD realism)."""
    return np.asarray(rng.standard_normal(round(seconds * RATE)) * rms, dtype=np.float64)


def dbfs(rms: float) -> float:
    """RMS in 16-bit units to dB relative to a full-scale sine's peak."""
    return round(20 * math.log10(max(rms, 1e-9) / FULL_SCALE), 1)


def read_source(path: Path) -> tuple[int, Signal]:
    """A mono 16-bit clip as recorded: its rate and samples (WAV, or raw 16 kHz little-endian)."""
    if path.suffix == ".wav":
        with wave.open(str(path), "rb") as src:
            if (src.getnchannels(), src.getsampwidth()) != (1, 2):
                raise SystemExit(f"{path}: expected mono 16-bit WAV")
            rate, raw = src.getframerate(), src.readframes(src.getnframes())
    else:
        rate, raw = 16000, path.read_bytes()
    return rate, np.frombuffer(raw, dtype="<i2").astype(np.float64)


def load_speech(path: Path) -> Signal:
    """A 16 kHz mono 16-bit clip (WAV, or raw little-endian) resampled to 8 kHz."""
    rate, x = read_source(path)
    return resample(x, rate, RATE)


def pad_to_frames(x: Signal, rng: np.random.RandomState, rms: float) -> Signal:
    """Extend with noise to a whole number of 20 ms frames."""
    missing = -len(x) % FRAME
    return np.concatenate([x, noise(rng, missing / RATE, rms)]) if missing else x


def voice_span(x: Signal, start_s: float) -> list[float]:
    """[first, last] second (call audio time) of frames above -40 dBFS, for VAD/turn tests."""
    active = np.flatnonzero(frame_rms(x) > FULL_SCALE * 10 ** (-40 / 20))
    if not len(active):
        return []
    return [
        round(start_s + active[0] * PTIME_MS / 1000, 2),
        round(start_s + (active[-1] + 1) * PTIME_MS / 1000, 2),
    ]


def fade(x: Signal, seconds: float = 0.01) -> Signal:
    """Raised-cosine fade-in and fade-out of ``seconds`` at the ends of ``x``."""
    n = round(seconds * RATE)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    x = x.copy()
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


# --- a call's audio and a fixture ---------------------------------------------------------------


@dataclass(frozen=True)
class DtmfEvent:
    """An RFC 4733 event starting at audio frame ``slot``."""

    digit: str
    slot: int


@dataclass
class CallAudio:
    """What the caller sends: PCM (a whole number of frames) and events that replace some frames."""

    pcm: Pcm
    events: list[DtmfEvent] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fixture:
    """One capture: its name, what it is, and how to build its caller audio."""

    name: str
    description: str
    build: Callable[[BuildContext], CallAudio]
    needs: str | None = None  # an external program

    @property
    def file(self) -> str:
        """The capture's file name in fixtures/."""
        return f"{self.name}.pcap"


@dataclass(frozen=True)
class BuildContext:
    """Inputs shared by the builders."""

    speech_dir: Path

    def path(self, clip: str) -> Path:
        """Where a clip of shared/speech is (``.wav``, or ``.raw`` for goforward and numbers)."""
        for path in (self.speech_dir / f"{clip}.wav", self.speech_dir / f"{clip}.raw"):
            if path.is_file():
                return path
        raise SystemExit(f"speech clip {clip!r} not found in {self.speech_dir} (see --speech-dir)")

    def speech(self, clip: str) -> Signal:
        """A clip of shared/speech at 8 kHz."""
        return load_speech(self.path(clip))

    def truth(self, clip: str) -> ClipTruth:
        """Where the clip's speech starts and ends, from its clean 16 kHz source (speech_truth.py)."""
        return _clip_truth(clip, self.path(clip))

    def transcript(self, clip: str) -> str | None:
        """The clip's reference transcript from shared/speech, or None where there is none."""
        if clip == "goforward":
            return "go forward ten meters"  # shared/speech/README.md; there is no .txt for it
        if clip.startswith("cards-"):
            lines = (self.speech_dir / "cards.txt").read_text().splitlines()
            wanted = clip.split("-", 1)[1]
            for line in lines:
                clip_id, _, text = line.strip().partition(" ")
                if clip_id == wanted:
                    return text.strip()
            raise SystemExit(f"no reference for {clip} in cards.txt")
        path = self.speech_dir / f"{clip}.txt"
        return path.read_text().strip() if path.is_file() else None


@cache
def _clip_truth(clip: str, path: Path) -> ClipTruth:
    # Cached: a clip used by several fixtures is measured (and aligned by Whisper) once per run.
    rate, x = read_source(path)
    if rate != SOURCE_RATE:
        raise SystemExit(f"{path}: the speech truth is measured at {SOURCE_RATE} Hz, not {rate}")
    return clip_truth(clip, x)


def padded_body(name: str, speech: Signal) -> tuple[Signal, dict[str, Any]]:
    """``speech`` with LEAD_S/TRAIL_S of noise at the clip's own background level, before rounding."""
    rng = np.random.RandomState(zlib.crc32(f"noise:{name}".encode()))
    floor = noise_floor(speech)
    body = np.concatenate([noise(rng, LEAD_S, floor), speech, noise(rng, TRAIL_S, floor)])
    body = pad_to_frames(body, rng, floor)
    info = {
        "speech_at_s": [LEAD_S, round(LEAD_S + len(speech) / RATE, 3)],
        "voice_activity_s": voice_span(speech, LEAD_S),
        "noise_dbfs": dbfs(floor),
    }
    return body, info


def padded_speech(name: str, speech: Signal) -> tuple[Pcm, dict[str, Any]]:
    """``speech`` with LEAD_S/TRAIL_S of noise at the clip's own background level."""
    body, info = padded_body(name, speech)
    return to_pcm(body), info


def turn_record(ctx: BuildContext, clip: str, samples: Signal, at: float) -> dict[str, Any]:
    """A caller turn's manifest record: ``clip`` (8 kHz ``samples``) starts ``at`` s into the audio.

    ``speech_at_s`` is where the clip sits, ``voice_activity_s`` its 20 ms frames above -40 dBFS, and
    the rest the ground truth of the speech in it (:meth:`ClipTruth.fields`), all in seconds of the
    caller's RTP audio.
    """
    return {
        "clip": clip,
        "transcript": ctx.transcript(clip),
        "speech_at_s": [round(at, 3), round(at + len(samples) / RATE, 3)],
        "voice_activity_s": voice_span(samples, at),
        **ctx.truth(clip).fields(at),
    }
