#!/usr/bin/env python3
"""Endpointing on human telephone speech: WebRTC VAD against Silero VAD, and Smart Turn v3.

Run it (under a minute on a 2-core box; the embedded models must be installed)::

    .venv/bin/python scripts/eval_endpointing.py [--draws N] [--skip-smart-turn] [--skip-costs]

Audio (built by ``scripts/endpointing_audio.py``, whose docstring has the details). The eight human
recordings with a ground truth in ``fixtures/manifest.json`` (LibriVox 0870/0880/0890, cards 001-003,
goforward, numbers) as calls: 8 kHz, µ-law, with the recording's own room tone around it. *Clean*
is that; *N dB* adds a real restaurant's background (``fixtures/noise/restaurant-ambience.wav``)
over the whole call at N dB SNR, ``--draws`` excerpts per recording and level. *Noise only*: the
whole background excerpt at the three mixes' levels. *Fixtures*: the committed ``speech-*``
captures as they are (their padding has a step in the background that Silero reacts to; see that
docstring).

VAD. Each VAD decides every 20 ms frame in order; its decisions drive the real
:class:`~sipagent.voice.turns.TurnDetector` (default config: 120 ms to start, 300 ms of silence to
end), once as a caller's turn and once as a barge-in over the agent. Per utterance:

* **end error**: the end of the last voiced frame of the turn, as the detector's ``EndOfTurn`` has
  it (so whatever hangover the VAD implies) minus the true end; the server's end-of-turn clock
  starts there;
* **premature**: a turn overlapping the speech ended before the true end (the VAD went quiet for
  300 ms inside the speech, or stopped early for good): the agent would answer mid-sentence;
* **held**: no end of turn within the audio after the speech (noise kept the turn open);
* **gaps**: unvoiced runs of 100 ms / 300 ms or more between the first and last voiced frames inside
  the true speech (read speech has few real pauses that long within one sentence);
* **after end**: the share of frames from 300 ms after the true end on that the VAD calls voiced;
  **false turns** (and false barge-ins) started by noise, per utterance or per minute of noise only;
* **onset**: first voiced frame of the turn minus the true start; **barge-in**: when the barge-in
  detector decides (240 ms of voice needed), after the true start.

Smart Turn. For each transcribed clip: the whole utterance (complete) and the same utterance cut
after each word inside it (incomplete; words from faster-whisper tiny.en word timestamps on the
clean source, each cut moved to the quietest 10 ms within 50 ms of the word's end), each from 0.5 s
before the speech (pipecat's pre-speech) and followed by ``trail`` seconds of the call's own
background taken from after the true end; noisy ones mixed like the VAD cases (first excerpt).
Then the policy "after X ms of silence end the turn if P(complete) ≥ t, else wait up to Y ms".

Costs: per 20 ms frame (WebRTC; Silero amortised, with its per-window run), per Smart Turn
inference: medians over many repetitions on one thread, on a shared 2-core machine.

Deterministic: the excerpts are drawn from ``RandomState`` seeded by name; Whisper decodes
greedily at temperature 0. Only the timings vary between runs.
"""

from __future__ import annotations

import os

# One thread for numpy's BLAS too, so the costs are those of one core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import wave  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import webrtcvad  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from endpointing_audio import (  # noqa: E402  (beside this script)
    CLIPS,
    FIXTURES,
    SNRS,
    SPEECH,
    Case,
    Utterance,
    build_cases,
    capture_audio,
    frames,
    load_utterance,
    manifest,
    mixed,
    on_the_line,
)

from sipagent.rtp.frames import FRAME_SECONDS, SAMPLE_RATE, Pcm  # noqa: E402
from sipagent.voice.models import DEFAULT_STT_MODEL, missing_models_message, resolve_model_path  # noqa: E402
from sipagent.voice.silero_vad import (  # noqa: E402
    DEFAULT_SILERO_MODEL,
    UPSTREAM_HYSTERESIS,
    SileroModel,
    SileroVad,
)
from sipagent.voice.smart_turn import DEFAULT_SMART_TURN_MODEL, PRE_SPEECH_S, SmartTurn  # noqa: E402
from sipagent.voice.turns import BargeIn, EndOfTurn, TurnDetector  # noqa: E402
from sipagent.voice.vad import Vad, WebRtcVad  # noqa: E402

#: Smart Turn needs words; numbers.raw has no reference and is a list, not a sentence.
SENTENCES = CLIPS[:-1]
#: Whole utterances after which the reader goes on: librivox-0880 ends at a comma ("He was not an
#: ill-disposed young man, unless to be rather cold hearted ...", Sense and Sensibility, ch. 1; 0890 is
#: the rest of the clause, up to a colon). The one natural mid-sentence stop in the set.
CONTINUES = frozenset({"librivox-0880"})
#: Frames after the true end this long are past any honest hangover: voiced there is noise.
AFTER_END_S = 0.3
TRAILS = (0.1, 0.2, 0.3)
#: Pauses (ms) of a speaker who goes on, for the wait policies.
PAUSES = (250, 400, 1000)
#: Words that cannot end an English sentence: a cut after one is incomplete beyond doubt.
FUNCTION_WORDS = frozenset(
    {"a", "an", "the", "to", "of", "and", "or", "but", "in", "at", "for", "with", "his", "her", "my", "than"}
)
F = FRAME_SECONDS


# ---------------------------------------------------------------------------------------------
# VAD
# ---------------------------------------------------------------------------------------------
@dataclass
class Turn:
    """A turn as the detector saw it."""

    start: float
    last_end: float
    eot_at: float


@dataclass
class VadResult:
    """One VAD on one case (see the module docstring for the definitions)."""

    end_err: float | None = None
    eot_after: float | None = None
    premature: bool = False
    held: bool = False
    missed: bool = False
    gaps100: int = 0
    gaps300: int = 0
    after_voiced: float = 0.0
    false_turns: int = 0
    false_barge_ins: int = 0
    onset_err: float | None = None
    barge_after: float | None = None
    noise_minutes: float = 0.0


def detect(voiced: Sequence[bool], *, agent: bool) -> tuple[list[Turn], list[BargeIn]]:
    """Run the real TurnDetector over the decisions; the turns (open at the end: eot_at inf)."""
    detector = TurnDetector()
    turns: list[Turn] = []
    barge_ins: list[BargeIn] = []
    for i, v in enumerate(voiced):
        for event in detector.push(v, i * F, agent_speaking=agent):
            if isinstance(event, BargeIn):
                barge_ins.append(event)
            elif isinstance(event, EndOfTurn):
                turns.append(Turn(event.speech_started_at, event.last_voiced_at + F, event.at))
    if detector.speech_started_at is not None and detector.state.value in ("speaking", "paused"):
        assert detector.last_voiced_at is not None
        turns.append(Turn(detector.speech_started_at, detector.last_voiced_at + F, math.inf))
    return turns, barge_ins


def gaps(voiced: Sequence[bool], start: float, end: float) -> tuple[int, int]:
    """Unvoiced runs of >= 100 ms and >= 300 ms between the first and last voiced frames in speech."""
    inside = [v for i, v in enumerate(voiced) if start <= i * F < end]
    if True not in inside:
        return 0, 0
    first, last = inside.index(True), len(inside) - 1 - inside[::-1].index(True)
    runs, run = [], 0
    for v in inside[first : last + 1]:
        if v:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    return sum(r * F >= 0.1 - 1e-9 for r in runs), sum(r * F >= 0.3 - 1e-9 for r in runs)


def evaluate_vad(case: Case, vad: Vad) -> VadResult:
    """Run one fresh VAD over one case."""
    voiced = [vad.is_speech(frame) for frame in frames(case.audio)]
    turns, _ = detect(voiced, agent=False)
    _, barge_ins = detect(voiced, agent=True)
    result = VadResult()
    if math.isinf(case.start):  # noise only
        result.noise_minutes = len(voiced) * F / 60
        result.after_voiced = sum(voiced) / len(voiced)
        result.false_turns, result.false_barge_ins = len(turns), len(barge_ins)
        return result
    overlapping = [t for t in turns if t.start < case.end and t.last_end > case.start]
    result.false_turns = len(turns) - len(overlapping)
    result.false_barge_ins = sum(b.at < case.start or b.speech_started_at > case.end for b in barge_ins)
    real = [b for b in barge_ins if case.start - 0.1 <= b.speech_started_at < case.end and b.at >= case.start]
    result.barge_after = real[0].at - case.start if real else None
    result.gaps100, result.gaps300 = gaps(voiced, case.start, case.end)
    after = [v for i, v in enumerate(voiced) if i * F >= case.end + AFTER_END_S]
    result.after_voiced = sum(after) / len(after) if after else 0.0
    if not overlapping:
        result.missed = True
        return result
    result.onset_err = overlapping[0].start - case.start
    result.premature = any(t.eot_at < case.end for t in overlapping)
    last = overlapping[-1]
    result.end_err = last.last_end - case.end
    result.held = math.isinf(last.eot_at)
    result.eot_after = None if result.held else last.eot_at - case.end
    return result


class UngatedWebRtc:
    """WebRTC VAD alone, without vad.py's energy gate (to show what the gate does)."""

    def __init__(self, aggressiveness: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: Pcm) -> bool:
        """True when WebRTC calls the frame voice."""
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))


def vad_configs(model: SileroModel) -> list[tuple[str, Callable[[], Vad]]]:
    """The VADs compared: today's WebRTC (with its energy gate), and Silero at a few thresholds
    (``a/b``: voiced from probability a, unvoiced below b; ``a/up``: upstream's b = a - 0.15)."""
    up = UPSTREAM_HYSTERESIS
    return [
        ("webrtc-2 (today)", lambda: WebRtcVad(2)),
        ("webrtc-3", lambda: WebRtcVad(3)),
        ("webrtc-2 no gate", lambda: UngatedWebRtc(2)),
        ("silero 0.3/up", lambda: SileroVad(model, threshold=0.3, neg_threshold=0.3 - up)),
        ("silero 0.5/up", lambda: SileroVad(model, threshold=0.5, neg_threshold=0.5 - up)),
        ("silero 0.5/0.5", lambda: SileroVad(model, threshold=0.5)),
        ("silero 0.7/up", lambda: SileroVad(model, threshold=0.7, neg_threshold=0.7 - up)),
        ("silero 0.7/0.7", lambda: SileroVad(model, threshold=0.7)),
        ("silero 0.85/0.85", lambda: SileroVad(model, threshold=0.85)),
    ]


def ms(value: float | None) -> str:
    """Seconds as whole milliseconds (with sign), or a dash."""
    return "—" if value is None or math.isnan(value) else f"{value * 1000:+.0f}"


def pct(values: Sequence[float], q: float) -> float:
    """Percentile (linear), NaN for no values."""
    return float(np.percentile(values, q)) if values else math.nan


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def condition_groups(cases: Sequence[Case]) -> list[str]:
    """The conditions in the order they were built, with "noisy (10-20 dB)" after the mixes."""
    seen: list[str] = []
    for case in cases:
        if case.condition not in seen:
            seen.append(case.condition)
    mixes = [c for c in seen if c.endswith(" dB") and not c.startswith("fixture")]
    return [*seen[: 1 + len(mixes)], "noisy (10-20 dB)", *seen[1 + len(mixes) :]]


def in_group(case: Case, group: str) -> bool:
    """Whether a case counts in a table row's condition."""
    if group == "noisy (10-20 dB)":
        return case.condition.endswith(" dB") and not case.condition.startswith("fixture")
    return case.condition == group


Column = tuple[str, Callable[[list[VadResult]], str]]


def _ends(rs: list[VadResult]) -> list[float]:
    return [r.end_err for r in rs if r.end_err is not None and not r.premature]


def _eots(rs: list[VadResult]) -> list[float]:
    return [r.eot_after for r in rs if r.eot_after is not None and not r.premature]


def _onsets(rs: list[VadResult]) -> list[float]:
    return [r.onset_err for r in rs if r.onset_err is not None]


def _count(name: str) -> Callable[[list[VadResult]], str]:
    return lambda rs: str(sum(bool(getattr(r, name)) for r in rs))


END_COLUMNS: list[Column] = [
    ("n", lambda rs: str(len(rs))),
    ("end err p50", lambda rs: ms(pct(_ends(rs), 50))),
    ("p10", lambda rs: ms(pct(_ends(rs), 10))),
    ("p90", lambda rs: ms(pct(_ends(rs), 90))),
    ("EndOfTurn p50", lambda rs: ms(pct(_eots(rs), 50))),
    ("p90", lambda rs: ms(pct(_eots(rs), 90))),
    ("premature", _count("premature")),
    ("held", _count("held")),
    ("missed", _count("missed")),
]
AROUND_COLUMNS: list[Column] = [
    ("gaps ≥100 ms /utt", lambda rs: f"{np.mean([r.gaps100 for r in rs]):.2f}"),
    ("gaps ≥300 ms /utt", lambda rs: f"{np.mean([r.gaps300 for r in rs]):.2f}"),
    ("voiced after end", lambda rs: f"{100 * np.mean([r.after_voiced for r in rs]):.0f} %"),
    ("false turns", lambda rs: str(sum(r.false_turns for r in rs))),
    ("onset p50", lambda rs: ms(pct(_onsets(rs), 50))),
    ("p90", lambda rs: ms(pct(_onsets(rs), 90))),
    ("barge-in p50", lambda rs: ms(pct([r.barge_after for r in rs if r.barge_after is not None], 50))),
    ("no barge-in", lambda rs: str(sum(r.barge_after is None for r in rs))),
    ("false barge-ins", lambda rs: str(sum(r.false_barge_ins for r in rs))),
]
NOISE_COLUMNS: list[Column] = [
    ("voiced frames", lambda rs: f"{100 * np.mean([r.after_voiced for r in rs]):.0f} %"),
    (
        "false turns /min",
        lambda rs: f"{sum(r.false_turns for r in rs) / sum(r.noise_minutes for r in rs):.1f}",
    ),
    (
        "false barge-ins /min",
        lambda rs: f"{sum(r.false_barge_ins for r in rs) / sum(r.noise_minutes for r in rs):.1f}",
    ),
]


def vad_section(cases: Sequence[Case], model: SileroModel) -> None:
    """Run every VAD over every case and print the tables."""
    results = {label: [(c, evaluate_vad(c, make())) for c in cases] for label, make in vad_configs(model)}
    groups = condition_groups(cases)
    speech = [g for g in groups if not g.startswith("noise only")]
    noise = [g for g in groups if g.startswith("noise only")]
    for title, rows_of, columns in (
        ("End of speech (per utterance; ms, + = after the true end)", speech, END_COLUMNS),
        ("Inside and around the speech", speech, AROUND_COLUMNS),
        ("Noise only (the restaurant excerpt, 20 s, at each mix's median level)", noise, NOISE_COLUMNS),
    ):
        print(f"### {title}\n")
        rows = []
        for group in rows_of:
            for label, pairs in results.items():
                rs = [r for c, r in pairs if in_group(c, group)]
                rows.append([group, label, *(cell(rs) for _, cell in columns)])
        table(["audio", "VAD", *(name for name, _ in columns)], rows)


def barge_in_fixtures(entries: dict[str, Any], model: SileroModel) -> None:
    """The agent fixtures, the agent talking from its expected reply on: when the real barge-in is
    decided, and whether the word "ten" and the cough over the reply interrupt it (they must not)."""
    print("### Barge-in fixtures (agent speaking from agent_reply_expected_s on)\n")
    rows = []
    for label, make in vad_configs(model):
        cells = []
        for name in ("agent-barge-in.pcap", "agent-backchannel.pcap"):
            entry = entries[name]
            vad, detector = make(), TurnDetector()
            barge_ins = []
            for i, frame in enumerate(frames(capture_audio(FIXTURES / name))):
                agent = i * F >= entry["agent_reply_expected_s"][0]
                events = detector.push(vad.is_speech(frame), i * F, agent_speaking=agent)
                barge_ins += [e.at for e in events if isinstance(e, BargeIn)]
            if "barge_in_at_s" in entry:
                cells.append(ms(barge_ins[0] - entry["barge_in_at_s"]) if barge_ins else "none")
            else:
                cells.append(", ".join(f"{t:.2f} s" for t in barge_ins) or "none")
        rows.append([label, *cells])
    table(["VAD", "agent-barge-in: decided after the voice starts", "agent-backchannel: barge-ins"], rows)


# ---------------------------------------------------------------------------------------------
# Smart Turn
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Word:
    """A word and where it ends (seconds into the fixture's audio)."""

    text: str
    end: float


@dataclass
class TurnSample:
    """One Smart Turn input: a whole utterance (``kind`` "complete", or "continues" when the
    reader goes on after it) or the utterance cut after a word ("cut")."""

    clip: str
    condition: str
    trail: float
    word: str
    kind: str
    function_word: bool
    probability: float = math.nan


def words_of(clip: str, speech_at: float, whisper: Any) -> list[Word]:
    """faster-whisper's words of the clean 16 kHz source, on the fixture's clock."""
    path = SPEECH / (f"{clip}.wav" if (SPEECH / f"{clip}.wav").exists() else f"{clip}.raw")
    if path.suffix == ".wav":
        with wave.open(str(path)) as wav:
            raw = wav.readframes(wav.getnframes())
    else:
        raw = path.read_bytes()
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    segments, _ = whisper.transcribe(
        audio,
        language="en",
        beam_size=5,
        temperature=0.0,
        condition_on_previous_text=False,
        word_timestamps=True,
        vad_filter=False,
    )
    words = [w for s in segments for w in (s.words or [])]
    return [Word(re.sub(r"[^\w']", "", w.word).lower(), speech_at + w.end) for w in words]


def snap(audio: Pcm, t: float) -> float:
    """The start of the quietest 10 ms within 50 ms of ``t`` (a word boundary the energy agrees with)."""
    step = SAMPLE_RATE // 100
    best, best_t = math.inf, t
    for k in range(-5, 6):
        a = round(t * SAMPLE_RATE) + k * step
        seg = audio[a : a + step].astype(np.float64)
        energy = float(np.mean(seg * seg))
        if energy < best:
            best, best_t = energy, a / SAMPLE_RATE
    return best_t


def cut_points(utt: Utterance, words: Sequence[Word]) -> list[tuple[float, Word]]:
    """Where to cut mid-sentence: after each word but the last, well inside the speech."""
    cuts = []
    for word in words[:-1]:
        if utt.start + 0.2 < word.end < utt.end - 0.25:
            cuts.append((snap(utt.audio, word.end), word))
    return cuts


def spliced(audio: Pcm, start: float, cut: float, after: float, trail: float) -> tuple[int, Pcm]:
    """audio[start - pre-speech : cut] then ``trail`` s of the call's background from ``after``;
    also where it starts in ``audio``. A whole utterance is spliced the same way (cut = its end),
    so a cut differs from it only in where the speech stops."""
    s0 = max(0, round((start - PRE_SPEECH_S) * SAMPLE_RATE))
    a = round(after * SAMPLE_RATE)
    return s0, np.concatenate(
        [audio[s0 : round(cut * SAMPLE_RATE)], audio[a : a + round(trail * SAMPLE_RATE)]]
    )


def smart_turn_section(utts: Sequence[Utterance], model: SmartTurn) -> None:
    """Probabilities of complete, continuing and cut utterances, and wait policies built on them."""
    from faster_whisper import WhisperModel

    whisper = WhisperModel(
        str(resolve_model_path(DEFAULT_STT_MODEL)),
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
        local_files_only=True,
    )
    samples: list[TurnSample] = []
    listing: dict[str, list[str]] = {}
    conditions: list[tuple[str, float | None]] = [("clean", None), *((f"{s:.0f} dB", s) for s in SNRS)]
    for utt in utts:
        if utt.clip not in SENTENCES:
            continue
        cuts = cut_points(utt, words_of(utt.clip, utt.speech_at, whisper))
        listing[utt.clip] = [f"{w.text}@{t:.2f}" for t, w in cuts]
        whole = "continues" if utt.clip in CONTINUES else "complete"
        for condition, snr in conditions:
            noise, gain = None, 0.0
            if snr is not None:
                _, noise, gain = mixed(utt, snr, 0)
            for trail in TRAILS:
                for cut, word in [(utt.end, None), *cuts]:
                    s0, clean = spliced(utt.audio, utt.start, cut, utt.end + 0.1, trail)
                    audio = clean
                    if noise is not None:
                        # The background runs on unbroken under the splice, as it would on the line.
                        audio = on_the_line(clean + gain * noise[s0 : s0 + len(clean)])
                    text, kind = (word.text, "cut") if word else ("(whole)", whole)
                    sample = TurnSample(utt.clip, condition, trail, text, kind, text in FUNCTION_WORDS)
                    sample.probability = model.probability(audio)
                    samples.append(sample)
    print("### Smart Turn: cut points (word@seconds into the call, after the quietest-10-ms snap)\n")
    for clip, points in listing.items():
        print(f"- {clip}: {', '.join(points)}")
    print()
    print("### Smart Turn: P(complete)\n")
    print("complete: the whole utterance of 6 recordings; continues: librivox-0880 whole, which ends at a")
    print("comma (the reader goes on with 0890); cut: an utterance cut after a word inside it.\n")
    rows = []
    for trail in TRAILS:
        for condition, _ in conditions:
            group = [s for s in samples if s.trail == trail and s.condition == condition]
            comp = [s.probability for s in group if s.kind == "complete"]
            cont = [s.probability for s in group if s.kind == "continues"]
            cut_ps = [s.probability for s in group if s.kind == "cut"]
            fun = [s.probability for s in group if s.function_word]
            cells = [
                f"{np.median(comp):.2f} ({min(comp):.2f})",
                f"{100 * np.mean([p > 0.5 for p in comp]):.0f} %",
                " ".join(f"{p:.2f}" for p in cont),
                f"{np.median(cut_ps):.2f}",
                f"{100 * np.mean([p <= 0.5 for p in cut_ps]):.0f} % of {len(cut_ps)}",
                f"{100 * np.mean([p <= 0.5 for p in fun]):.0f} % of {len(fun)}",
            ]
            rows.append([f"{trail * 1000:.0f} ms", condition, *cells])
    columns = "complete p50 (min)|complete > 0.5|continues|cut p50|cut ≤ 0.5|cut after a function word ≤ 0.5"
    table(["silence after", "audio", *columns.split("|")], rows)
    print("### Smart Turn per clip (clean, 200 ms of silence after): whole, then each cut\n")
    for clip in SENTENCES:
        group = [s for s in samples if s.clip == clip and s.trail == 0.2 and s.condition == "clean"]
        print(f"- {clip}: " + ", ".join(f"{s.word} {s.probability:.2f}" for s in group))
    print()
    policy_section(samples)


def policy_section(samples: Sequence[TurnSample]) -> None:
    """What wait policies give on the samples: wait after the last word, mid-sentence pauses cut."""
    trail = 0.2
    group = [s for s in samples if s.trail == trail]
    comp = [s.probability for s in group if s.kind == "complete"]
    cont = [s.probability for s in group if s.kind == "continues"]
    cut = [s.probability for s in group if s.kind == "cut"]
    print("### End-of-turn wait policies (silence counted from the VAD's last voiced frame)\n")
    print(
        f"Smart Turn on the audio up to {trail * 1000:.0f} ms after the last word (run at the pause, 100 ms"
    )
    print("after a Silero end that is ~80 ms late). Over all four audio conditions: the mean wait after a")
    print(f"complete utterance ({len(comp)}); a speaker who pauses L ms and goes on is cut when P ≥ t and")
    print(f"L > X, or when L > Y: the share of the natural clause pause ({len(cont)}) and of the cuts")
    print(f"({len(cut)}) answered over, for L = {', '.join(map(str, PAUSES))} ms.\n")
    rows = []
    for wait in (300, 500, 800, 1200):
        cut_at = ["100 %" if pause > wait else "0 %" for pause in PAUSES for _ in (0, 1)]
        rows.append([f"fixed {wait} ms", f"{wait}", "—", *cut_at])
    for t in (0.5, 0.7, 0.9):
        for x, y in ((200, 800), (300, 800), (300, 1200)):
            waits = [x if p >= t else y for p in comp]
            slow = 100 * np.mean([p < t for p in comp])
            shares = [
                f"{100 * np.mean([(p >= t and pause > x) or pause > y for p in ps]):.0f} %"
                for pause in PAUSES
                for ps in (cont, cut)
            ]
            rows.append([f"P ≥ {t}: {x} ms, else {y} ms", f"{np.mean(waits):.0f}", f"{slow:.0f} %", *shares])
    columns = [f"{kind}, {pause} ms" for pause in PAUSES for kind in ("clause stop", "cuts")]
    table(["policy", "mean wait, complete (ms)", "complete waiting Y", *columns], rows)


# ---------------------------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------------------------
def timed(call: Callable[[], object], times: int) -> list[float]:
    """Wall time of each of ``times`` calls (seconds)."""
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def costs_section(utts: Sequence[Utterance], silero: SileroModel, smart: SmartTurn, reps: int) -> None:
    """CPU time per 20 ms frame for each VAD and per Smart Turn inference, one thread."""
    stream = [f for u in utts for f in frames(u.audio)]
    print(f"### CPU cost (one thread; {len(stream)} frames of the clean calls x {reps}; shared 2-core box)\n")
    rows = []
    makers: list[tuple[str, Callable[[], Vad]]] = [
        ("webrtc-2 (today)", lambda: WebRtcVad(2)),
        ("silero 0.7/0.7", lambda: SileroVad(silero)),
    ]
    for label, make in makers:
        per_frame: list[float] = []
        for _ in range(reps):
            vad = make()
            for frame in stream:
                t0 = time.perf_counter()
                vad.is_speech(frame)
                per_frame.append(time.perf_counter() - t0)
        us = [float(np.percentile(per_frame, q)) * 1e6 for q in (50, 99)]
        rows.append([label, f"{us[0]:.1f}", f"{float(np.mean(per_frame)) * 1e6:.1f}", f"{us[1]:.1f}"])
    table(["VAD", "per frame p50 (µs)", "mean (µs)", "p99 (µs)"], rows)
    rng, rows = np.random.RandomState(0), []
    for batch in (1, 10, 100):
        x = (rng.standard_normal((batch, 288)) * 0.05).astype(np.float32)
        state = np.zeros((2, batch, 128), dtype=np.float32)
        p50 = float(np.median(timed(partial(silero.run, x, state), max(20, 2000 // batch)))) * 1e6
        rows.append([str(batch), f"{p50:.0f}", f"{p50 / batch:.1f}"])
    table(["Silero windows per run (calls batched)", "run p50 (µs)", "per window (µs)"], rows)
    audio = np.concatenate([u.audio for u in utts])[: 8 * SAMPLE_RATE]
    rows = []
    for label, call in (
        ("features (resample, log-mel)", smart.features),
        ("whole inference", smart.probability),
    ):
        times = timed(partial(call, audio), max(10, reps * 10))
        rows.append([label, *(f"{float(np.percentile(times, q)) * 1e3:.1f}" for q in (50, 90))])
    table(["Smart Turn (8 s window)", "p50 (ms)", "p90 (ms)"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--draws", type=int, default=3, help="background excerpts per clip and SNR (VAD)")
    parser.add_argument("--reps", type=int, default=5, help="passes over the clean calls for the costs")
    parser.add_argument("--skip-smart-turn", action="store_true")
    parser.add_argument("--skip-costs", action="store_true")
    args = parser.parse_args(argv)
    paths = [
        resolve_model_path(p) for p in (DEFAULT_SILERO_MODEL, DEFAULT_SMART_TURN_MODEL, DEFAULT_STT_MODEL)
    ]
    message = missing_models_message(paths)
    if message:
        print(f"eval_endpointing: {message}", file=sys.stderr)
        return 1
    entries = manifest()
    utts = [load_utterance(clip, entries) for clip in CLIPS]
    cases = build_cases(utts, args.draws, entries)
    silero = SileroModel()
    print(f"## Endpointing on human telephone speech ({len(utts)} recordings, {len(cases)} cases)\n")
    vad_section(cases, silero)
    barge_in_fixtures(entries, silero)
    if not args.skip_smart_turn or not args.skip_costs:
        smart = SmartTurn()
    if not args.skip_smart_turn:
        smart_turn_section(utts, smart)
    if not args.skip_costs:
        costs_section(utts, silero, smart, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
