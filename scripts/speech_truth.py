"""Ground truth of where a caller's utterance starts and ends, from its clean 16 kHz source.

Turn latency "as the caller hears it" runs from the moment the caller stops talking to the agent's
first voiced packet. That moment is measured here once, on the clean recording (before any
background noise, resampling or G.711), and written into ``fixtures/manifest.json`` per turn.

**Primary: the energy envelope.** The clip is cut into 10 ms frames (160 samples) and each frame's
level taken in dBFS (RMS against a full-scale sine's peak, as everywhere in the fixtures):

* *Noise floor* ``F``: the lowest mean power over any 100 ms (10 frames) of the clip. Every clip
  holds at least that much pause, and a percentile would not do: in a dense clip (librivox-0870)
  the 10th percentile of the frames is still speech, 4-5 dB above the pauses. Averaging 10 frames
  keeps the floor off the single quiet frames (a 10 ms background frame swings ±6 dB). Digital
  silence (espeak-ng) would give -inf, so ``F`` is never below -70 dBFS, under anything audible on
  a G.711 line.
* *Threshold* ``T = F + 10 dB``. Outside the utterances of the shared clips the background's
  10 ms frames sit a median 0-4 dB above ``F``, their 95th percentile 7-10 dB (12-13 dB in the
  three clips whose pauses hold a breath or a click, which the gap rule below keeps out), so 10 dB
  keeps the background out of the speech while catching a decaying tail to within a frame or two:
  a last phoneme falls through its last 10 dB above the floor in 10-30 ms.
* *Speech core*: frames at least 20 dB above ``F`` in runs of 50 ms or more (voiced speech; a
  click or a single loud frame is not). The utterance runs from the first core frame back, and from
  the last core frame on, through frames above ``T``; a dip of 30 ms or more below ``T`` ends it.
  Shorter dips are bridged (the 10-20 ms troughs of a decaying nasal, a short stop closure). So a
  trailing fricative (the /s/ of "clubs", almost all above 4 kHz: the analysis is full band, 16 kHz)
  stays in, and a breath, a lip smack or a click after a 30 ms pause stays out, unless it holds a
  50 ms run at core level (none of the shared clips' does: numbers' 130 ms burst peaks 22 dB over
  its floor for 20 ms only).

``speech_end_s`` is the end of the last frame above ``T`` reached that way, ``speech_start_s`` the
start of the first.

**Cross-check: a forced alignment.** faster-whisper (Whisper tiny.en, CTranslate2 int8, the model in
``models/``) transcribes the same clean 16 kHz clip with word timestamps (beam 5, temperature 0 with
no sampling fallback, no VAD filter: the same words and times on every run); its first word's start
and last word's end are ``aligned_start_s`` and ``aligned_end_s``. Whisper's word times come from its
cross-attention, aligned on a 20 ms grid, and are loose: the first word usually "starts" at 0.00 (the
leading pause is given to it), and the last word's end can miss a final fricative or syllable, or
run on into the pause, by 100-450 ms on these clips. Where the two ends differ by more than
:data:`DISAGREE_S` the manifest says why (:data:`CLIP_NOTES`, written after looking at each clip's
envelope, the share of its energy above 4 kHz and the periodicity of its frames); the energy
envelope is the one trusted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Signal = npt.NDArray[np.float64]

REPO = Path(__file__).resolve().parent.parent
#: Whisper tiny.en (faster-whisper / CTranslate2 int8), installed by ``make install`` (models/README.md).
ALIGNER_MODEL = REPO / "models" / "whisper-tiny.en"

SOURCE_RATE = 16000
STEP = SOURCE_RATE // 100  # 10 ms frames
FULL_SCALE = 32767.0
FLOOR_WINDOW = 10  # frames: the quietest 100 ms
FLOOR_MIN_DBFS = -70.0
MARGIN_DB = 10.0  # T = F + MARGIN_DB
CORE_DB = 20.0  # speech core: F + CORE_DB ...
CORE_RUN = 5  # ... for at least 50 ms
GAP_FRAMES = 3  # a 30 ms dip below T ends the utterance
#: Beyond this the aligner and the envelope are said to disagree, and the manifest says why.
DISAGREE_S = 0.12

METHOD = (
    "speech_start_s/speech_end_s: clean 16 kHz source, 10 ms frames; floor F = quietest 100 ms mean "
    "power (>= -70 dBFS); threshold F + 10 dB; from the first/last 50 ms run 20 dB above F, out through "
    "frames above the threshold until a 30 ms dip (scripts/speech_truth.py). aligned_*: faster-whisper "
    "tiny.en int8 word timestamps on the same clean source (first word's start, last word's end); "
    "aligned_end_diff_s = aligned_end_s - speech_end_s. The energy envelope is the ground truth."
)

#: Why the aligner's last word ends elsewhere than the energy, per clip (checked by eye on the envelope,
#: the share of energy above 4 kHz and the periodicity of each 10 ms frame).
CLIP_NOTES = {
    "librivox-0870": "the last word 'them' decays into the room by 6.75 s (its last frames at -34 to "
    "-39 dBFS, 10 dB over the pause); Whisper stretches it over the pause after it, where there is only "
    "the recording's background (-40 to -55 dBFS)",
    "cards-001": "Whisper ends 'clubs' on its vowel; the voiced /bz/ and its frication go on at -23 to "
    "-33 dBFS until 0.94 s",
    "cards-003": "Whisper ends 'clubs' on its vowel; the /s/ (almost all its energy above 4 kHz) runs "
    "to 1.24 s and its voicing, periodic and below 1 kHz, to 1.34 s",
    "goforward": "Whisper ends 'meters' in its first syllable; the 'ters' (-20 to -35 dBFS) runs to "
    "2.24 s, then a low voiced tail (-38 to -52 dBFS, 20 dB over this quiet recording's floor) to 2.40 s",
    "numbers": "Whisper ends the last number within its vowel; the vowel decays smoothly (-26 to -44 "
    "dBFS) until 3.32 s; a 130 ms low-frequency burst after a 40 ms pause (3.36-3.49 s) is left out "
    "as a click/breath",
    "espeak-ng": "espeak-ng stops dead at 5.11 s (-29 dBFS, then digital silence), so the energy end "
    "is exact; Whisper ends the last word ('4567') within 'seven', whose '-ven' runs at -17 to -29 "
    "dBFS from 4.93 s to the end",
}
GENERIC_NOTE = "Whisper's word timestamps are loose at a clip's end; the energy envelope is trusted"


@dataclass(frozen=True)
class EnergySpan:
    """Where the utterance is by its energy envelope, seconds from the clip's start."""

    start_s: float
    end_s: float
    floor_dbfs: float
    threshold_dbfs: float


@dataclass(frozen=True)
class Alignment:
    """The aligner's first word start and last word end, seconds from the clip's start."""

    start_s: float
    end_s: float
    last_word: str
    text: str


@dataclass(frozen=True)
class ClipTruth:
    """A clip's energy span and its cross-check."""

    clip: str
    energy: EnergySpan
    alignment: Alignment | None

    def fields(self, at_s: float) -> dict[str, Any]:
        """The manifest fields of a turn whose clip starts ``at_s`` into the caller's RTP audio."""
        out: dict[str, Any] = {
            "speech_start_s": round(at_s + self.energy.start_s, 3),
            "speech_end_s": round(at_s + self.energy.end_s, 3),
        }
        if self.alignment is None:
            out.update(aligned_start_s=None, aligned_end_s=None, aligned_end_diff_s=None)
            out["truth_note"] = "the aligner found no words; the energy envelope stands alone"
            return out
        diff = self.alignment.end_s - self.energy.end_s
        out.update(
            aligned_start_s=round(at_s + self.alignment.start_s, 3),
            aligned_end_s=round(at_s + self.alignment.end_s, 3),
            aligned_end_diff_s=round(diff, 3),
            aligned_last_word=self.alignment.last_word,
        )
        if abs(diff) > DISAGREE_S:
            side = "before" if diff < 0 else "after"
            reason = CLIP_NOTES.get(self.clip, GENERIC_NOTE)
            out["truth_note"] = (
                f"the aligner's last word ends {abs(diff) * 1000:.0f} ms {side} the energy end: {reason}; "
                "the energy end is the truth"
            )
        return out


def frame_levels(x: Signal) -> Signal:
    """Power of each whole 10 ms frame (16-bit units squared)."""
    frames = x[: len(x) // STEP * STEP].reshape(-1, STEP)
    return np.asarray(np.mean(frames * frames, axis=1), dtype=np.float64)


def _db(power: Signal | float) -> Signal:
    return np.asarray(10 * np.log10(np.maximum(power, 1e-12) / FULL_SCALE**2), dtype=np.float64)


def energy_span(x: Signal) -> EnergySpan:
    """The utterance's span in a clean 16 kHz clip, by the method in this module's docstring."""
    power = frame_levels(x)
    if len(power) < FLOOR_WINDOW:
        raise ValueError(f"clip too short for a noise floor: {len(x)} samples")
    levels = _db(power)
    quietest = float(np.min(np.convolve(power, np.ones(FLOOR_WINDOW) / FLOOR_WINDOW, mode="valid")))
    floor = max(float(_db(quietest)), FLOOR_MIN_DBFS)
    threshold = floor + MARGIN_DB
    hot = levels > floor + CORE_DB
    runs = _runs(hot)
    core = [(a, b) for a, b in runs if b - a >= CORE_RUN]
    if not core:
        raise ValueError(f"no speech: no {CORE_RUN * 10} ms run {CORE_DB} dB above the floor")
    first = _walk(levels, core[0][0], -1, threshold)
    last = _walk(levels, core[-1][1] - 1, 1, threshold)
    return EnergySpan(
        start_s=round(first * STEP / SOURCE_RATE, 3),
        end_s=round((last + 1) * STEP / SOURCE_RATE, 3),
        floor_dbfs=round(floor, 1),
        threshold_dbfs=round(threshold, 1),
    )


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _walk(levels: Signal, frame: int, step: int, threshold: float) -> int:
    """From ``frame`` in direction ``step``, the last frame above ``threshold`` before a long dip."""
    last, below = frame, 0
    k = frame
    while 0 <= k + step < len(levels):
        k += step
        if levels[k] > threshold:
            last, below = k, 0
            continue
        below += 1
        if below >= GAP_FRAMES:
            break
    return last


@cache
def _model(path: Path) -> Any:
    from faster_whisper import WhisperModel  # heavy: only when a fixture needs the cross-check

    if not (path / "model.bin").is_file():
        raise SystemExit(f"{path}: the aligner's model is missing (`make install` fetches it)")
    return WhisperModel(str(path), device="cpu", compute_type="int8", local_files_only=True)


def align(x: Signal, model_dir: Path = ALIGNER_MODEL) -> Alignment | None:
    """Word timestamps of a clean 16 kHz clip: first word's start, last word's end (None: no words)."""
    audio = (x / 32768.0).astype(np.float32)
    segments, _ = _model(model_dir).transcribe(
        audio,
        language="en",
        beam_size=5,
        temperature=0.0,  # no sampling fallback: the same words and times on every run
        condition_on_previous_text=False,
        word_timestamps=True,
        vad_filter=False,
    )
    words = [w for s in segments for w in (s.words or [])]
    if not words:
        return None
    text = " ".join(w.word.strip() for w in words)
    last = re.sub(r"[^\w']", "", words[-1].word).lower()
    return Alignment(
        start_s=round(float(words[0].start), 3),
        end_s=round(float(words[-1].end), 3),
        last_word=last,
        text=text,
    )


def clip_truth(clip: str, x: Signal, model_dir: Path = ALIGNER_MODEL) -> ClipTruth:
    """The energy span of a clean 16 kHz clip and the aligner's cross-check."""
    if len(x) == 0 or not math.isfinite(float(np.max(np.abs(x)))):
        raise ValueError(f"{clip}: empty or non-finite audio")
    return ClipTruth(clip, energy_span(x), align(x, model_dir))
