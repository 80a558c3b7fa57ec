#!/usr/bin/env python3
"""Turn latency as the caller hears it, and how fast the agent yields.

Run it (a few minutes on a 2-core box with the embedded models)::

    .venv/bin/python scripts/bench_latency.py [--repeat N] [--config FILE] [--json]

Every human-speech fixture with ground truth (``fixtures/manifest.json``: each turn's
``speech_end_s``, the true end of the caller's speech from the clean source audio), clean recordings
and the ones with real background noise mixed in, is replayed into the real conversation
(:class:`sipagent.replay.agent_replay.AgentReplay`: the caller's packets arrive in real time on the
loop's clock, go through the media engine, the models run in their own process exactly as in
``serve``), once over a clean network and once impaired (``--loss``, ``--jitter-ms``, ``--reorder``).
Per turn it takes:

* ``wire``: arrival of the packet carrying the true end of the caller's speech → departure of the
  agent's first voiced RTP packet: the silence the caller hears;
* ``from vad``: the same, from the VAD's last voiced frame instead (what the server used to count
  from: on noisy lines the VAD's hangover hides part of the wait);
* the stages: end-of-turn wait, STT, LLM first token, first sentence (from the LLM's start), TTS
  first audio (of the first sentence); and how far the server's own estimate of the end of speech
  (against the call's noise floor) was from the truth;
* the word error rate of the transcripts against the fixtures' references.

The barge-in fixture is replayed ``--barge-runs`` times per network condition (different impairment
seeds): ``stop`` is the arrival of the interrupting voice's first packet → the first outbound packet
without the agent's voice; ``decision`` is the agent's decision (hold or barge-in) → that packet.
The inference process's hand-over time (a result existing there → the engine acting on it) is
printed at the end. Medians and percentiles are over all turns of all runs of a row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jiwer  # noqa: E402

from sipagent.config import Settings, load_settings  # noqa: E402
from sipagent.layers import conversation_config, inference_config, vad_factory  # noqa: E402
from sipagent.replay.agent_replay import AgentReplay  # noqa: E402
from sipagent.replay.capture import load_caller_leg  # noqa: E402
from sipagent.replay.impair import Impairments  # noqa: E402
from sipagent.rtp.frames import SAMPLE_RATE  # noqa: E402
from sipagent.voice.conversation import TurnRecord  # noqa: E402
from sipagent.voice.inference import Inference, start_inference  # noqa: E402
from sipagent.voice.vad import Vad  # noqa: E402

FIXTURES = ROOT / "fixtures"
MANIFEST = {f["file"]: f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}


def _human_speech() -> list[str]:
    """The human-speech fixtures whose turns carry the true end of speech (clean and noisy)."""
    return sorted(
        name
        for name, entry in MANIFEST.items()
        if (name.startswith("speech-") or name == "two-turns.pcap")
        and entry.get("turns")
        and all(turn.get("speech_end_s") is not None and turn.get("transcript") for turn in entry["turns"])
    )


SPEECH = _human_speech()
BARGE_IN = "agent-barge-in.pcap"
#: Said at the start of the barge-in replays: the caller talks over it at 0.76 s (and over whatever
#: the agent says at 6.17 s), so there is always speech to interrupt, whatever the LLM replies.
GREETING = (
    "Thank you for calling the sipagent demo line. I can tell you about our opening hours, our prices "
    "and deliveries, and I can take a message for the team. How can I help you today?"
)
STAGES = ["end_of_turn_wait_ms", "stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms",
          "end_estimate_error_ms"]  # fmt: skip
_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
            "7": "seven", "8": "eight", "9": "nine", "10": "ten"}  # fmt: skip


def normalise(text: str) -> str:
    """Lower case, no punctuation, hyphens split, small numbers as words, "Mr." as read aloud."""
    text = text.lower().replace("-", " ").replace("mr.", "mister")
    words = re.sub(r"[^a-z0-9' ]", " ", text).split()
    out: list[str] = []
    for word in words:
        if word.isdigit() and word not in _NUMBERS:
            out.extend(_NUMBERS[d] for d in word)  # "456" read as digits on these clips
        else:
            out.append(_NUMBERS.get(word, word))
    return " ".join(out)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (values need not be sorted)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Condition:
    name: str
    impairments: Impairments
    noisy: bool | None = None  # None: every fixture
    turns: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the fixture of each ref/hyp
    unanswered: int = 0


def _audio_s(runner: AgentReplay, rtp_ts: int | None) -> float | None:
    """Seconds into the caller's audio of an RTP timestamp."""
    if rtp_ts is None or not runner.leg.packets:
        return None
    return ((rtp_ts - runner.leg.packets[0].packet.timestamp) & 0xFFFFFFFF) / SAMPLE_RATE


def measure_turns(runner: AgentReplay, name: str) -> list[dict[str, Any]]:
    """One row per turn of the fixture's ground truth: the reply that answered it and its figures."""
    records = [r for r in runner.records if not r.scripted]
    rows = []
    for truth in MANIFEST[name]["turns"]:
        end = float(truth["speech_end_s"])
        record = _answering(runner, records, end)
        row: dict[str, Any] = {"fixture": name, "truth_end_s": end, "answered": record is not None}
        if record is not None:
            row["wire_ms"] = runner.wire_ms_from(end, record)
            vad_end = _audio_s(runner, record.last_voiced_rtp_ts)
            row["from_vad_ms"] = None if vad_end is None else runner.wire_ms_from(vad_end, record)
            estimate = _audio_s(runner, record.speech_end_rtp_ts)
            row["end_estimate_error_ms"] = None if estimate is None else (estimate + 0.02 - end) * 1000
            row.update({stage: getattr(record, stage) for stage in STAGES[:-1]})
            row["transcript"] = record.transcript
        rows.append(row)
    return rows


def _answering(runner: AgentReplay, records: list[TurnRecord], end: float) -> TurnRecord | None:
    """The turn whose caller speech ended at ``end`` (its VAD end within -0.3 … +1.5 s of it)."""
    for record in records:
        vad_end = _audio_s(runner, record.last_voiced_rtp_ts)
        if vad_end is not None and -0.3 <= vad_end - end <= 1.5 and record.first_voiced_out_at is not None:
            return record
    return None


async def replay(
    path: Path, impairments: Impairments, inference: Inference, settings: Settings
) -> AgentReplay:
    leg = load_caller_leg(path)
    runner = AgentReplay(
        leg, impairments, inference, conversation_config(settings), vad=vad_factory(settings)
    )
    await runner.run(lambda event: None)
    return runner


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(args.config, {})
    barge_settings = load_settings(args.config, {"agent.greeting": GREETING})
    started = time.perf_counter()
    inference = await start_inference(inference_config(settings))
    load_s = time.perf_counter() - started
    impaired = Impairments(loss=args.loss, jitter_ms=args.jitter_ms, reorder=args.reorder, seed=1)
    networks = [Condition("clean", Impairments())]
    if not args.clean_only:
        networks.append(Condition("impaired", impaired))
    try:
        for condition in networks:
            for repeat in range(args.repeat):
                for name in args.fixtures:
                    imp = condition.impairments
                    if imp.loss or imp.jitter_ms:
                        imp = Impairments(
                            imp.loss, imp.jitter_ms, imp.reorder, imp.duplicate, seed=repeat + 1
                        )
                    runner = await replay(FIXTURES / name, imp, inference, settings)
                    turns = measure_turns(runner, name)
                    condition.turns.extend(turns)
                    condition.unanswered += sum(1 for t in turns if not t["answered"])
                    refs = [turn["transcript"] for turn in MANIFEST[name]["turns"]]
                    texts = [r.transcript for r in runner.records if not r.scripted and r.transcript]
                    condition.refs.append(normalise(" ".join(refs)))
                    condition.hyps.append(normalise(" ".join(texts)))
                    condition.names.append(name)
                    wires = [None if t.get("wire_ms") is None else round(t["wire_ms"]) for t in turns]
                    print(f"  {condition.name} {name}: wire {wires} ms; heard {texts}", file=sys.stderr,
                          flush=True)  # fmt: skip
            for index in range(args.barge_runs):
                imp = condition.impairments
                if imp.loss or imp.jitter_ms:
                    imp = Impairments(imp.loss, imp.jitter_ms, imp.reorder, seed=100 + index)
                runner = await replay(FIXTURES / BARGE_IN, imp, inference, barge_settings)
                found = barge_ins(runner)
                condition.barge_ins.extend(found)
                print(f"  {condition.name} {BARGE_IN}: {found}", file=sys.stderr, flush=True)
        delivery = inference.delivery_ms()
    finally:
        await inference.aclose()
    rows = []
    for network in networks:
        rows.append(network)
        for noisy in (False, True):
            part = Condition(
                f"{network.name} {'noisy' if noisy else 'clean'} audio", network.impairments, noisy
            )
            part.turns = [t for t in network.turns if _noisy(t["fixture"]) is noisy]
            part.unanswered = sum(1 for t in part.turns if not t["answered"])
            mine = [i for i, n in enumerate(network.names) if _noisy(n) is noisy]
            part.refs = [network.refs[i] for i in mine]
            part.hyps = [network.hyps[i] for i in mine]
            rows.append(part)
    return {"load_s": load_s, "conditions": rows, "settings": settings, "delivery_ms": delivery}


_VADS: dict[str, Callable[[], Vad] | None] = {}


def _vads(settings: Settings) -> Callable[[], Vad] | None:
    """The settings' voice detectors (Silero's network loaded once per run)."""
    key = f"{settings.agent.vad} {settings.agent.silero_threshold}"
    if key not in _VADS:
        _VADS[key] = vad_factory(settings)
    return _VADS[key]


def _noisy(name: str) -> bool:
    return name.startswith("speech-noisy-")


def barge_ins(runner: AgentReplay) -> list[dict[str, Any]]:
    """Each reply the caller cut short: how fast the line went quiet."""
    found = []
    for record in runner.records:
        if not record.interrupted or record.stop_decided_at is None:
            continue
        quiet = runner.first_quiet_tick(record.stop_decided_at)
        onset = runner.arrival_of_rtp(record.caller_onset_rtp_ts)
        found.append({
            "stop_ms": None if quiet is None or onset is None else (quiet - onset) * 1000,
            "decision_ms": None if quiet is None else (quiet - record.stop_decided_at) * 1000,
        })  # fmt: skip
    return found


def summarise(condition: Condition) -> dict[str, Any]:
    wire = [float(t["wire_ms"]) for t in condition.turns if t.get("wire_ms") is not None]
    from_vad = [float(t["from_vad_ms"]) for t in condition.turns if t.get("from_vad_ms") is not None]
    row: dict[str, Any] = {
        "condition": condition.name,
        "turns": len(condition.turns),
        "unanswered": condition.unanswered,
        "wire_p50_ms": statistics.median(wire) if wire else None,
        "wire_p90_ms": percentile(wire, 0.9) if wire else None,
        "from_vad_p50_ms": statistics.median(from_vad) if from_vad else None,
        "wer": float(jiwer.wer(condition.refs, condition.hyps)) if condition.refs else None,
    }
    for stage in STAGES:
        values = [float(t[stage]) for t in condition.turns if t.get(stage) is not None]
        row[stage] = statistics.median(values) if values else None
    stops = [float(b["stop_ms"]) for b in condition.barge_ins if b.get("stop_ms") is not None]
    decisions = [float(b["decision_ms"]) for b in condition.barge_ins if b.get("decision_ms") is not None]
    row["barge_ins"] = len(condition.barge_ins)
    row["stop_p50_ms"] = statistics.median(stops) if stops else None
    row["stop_p95_ms"] = percentile(stops, 0.95) if stops else None
    row["decision_max_ms"] = max(decisions) if decisions else None
    return row


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="sipagent TOML ([stt] [llm] [tts] [agent])")
    parser.add_argument("--repeat", type=int, default=1, help="replays of each speech fixture per condition")
    parser.add_argument(
        "--barge-runs", type=int, default=4, help="replays of the barge-in fixture per condition"
    )
    parser.add_argument("--fixtures", nargs="+", default=SPEECH, help="speech fixtures (file names)")
    parser.add_argument("--loss", type=float, default=0.03)
    parser.add_argument("--jitter-ms", type=float, default=30.0)
    parser.add_argument("--reorder", type=float, default=0.01)
    parser.add_argument("--clean-only", action="store_true", help="no impaired-network run (a quicker look)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    rows = [summarise(c) for c in result["conditions"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    agent = result["settings"].agent
    print(f"sipagent voice latency: {len(args.fixtures)} fixtures x {args.repeat}, "
          f"barge-in x {args.barge_runs}; end of turn {agent.end_of_turn_ms:g} ms, "
          f"pause {agent.pause_ms:g} ms; models loaded in "
          f"{result['load_s']:.1f} s")  # fmt: skip
    print(f"impaired: loss {args.loss:.0%}, jitter {args.jitter_ms:g} ms (mean, exponential), "
          f"reorder {args.reorder:.0%}")  # fmt: skip
    header = ("condition", "turns", "wire p50", "p90", "from vad", "eot wait", "stt", "llm 1st tok",
              "1st sentence", "tts 1st audio", "end est err", "WER", "barge-ins", "stop p50", "p95",
              "decision max")  # fmt: skip
    width = max(len(str(row["condition"])) for row in rows)
    print(f"{header[0]:<{width}}  " + "  ".join(f"{h:>12}" for h in header[1:]))
    for row in rows:
        cells = [row["turns"], row["wire_p50_ms"], row["wire_p90_ms"], row["from_vad_p50_ms"],
                 *(row[s] for s in STAGES), row["wer"], row["barge_ins"], row["stop_p50_ms"],
                 row["stop_p95_ms"], row["decision_max_ms"]]  # fmt: skip
        text = [_fmt(c, 3 if i == 10 else 0) for i, c in enumerate(cells)]
        print(f"{row['condition']:<{width}}  " + "  ".join(f"{t:>12}" for t in text))
    print(
        "all times ms, medians unless marked; wire: the packet carrying the true end of the caller's "
        "speech in -> the agent's first voiced packet out; from vad: from the VAD's last voiced frame"
    )
    delivery = result["delivery_ms"]
    if delivery is not None:
        print(f"inference hand-over (a result made in the inference process -> the engine acting on it): "
              f"p50 {delivery[0]:.2f} ms, p95 {delivery[1]:.2f} ms")  # fmt: skip
    clean = rows[0]
    ok_wire = (clean["wire_p50_ms"] is not None and clean["wire_p50_ms"] <= 650
               and clean["wire_p90_ms"] is not None and clean["wire_p90_ms"] <= 850)  # fmt: skip
    stops = [r["stop_p95_ms"] for r in rows if r["stop_p95_ms"] is not None]
    ok_stop = bool(stops) and max(stops) <= 100
    print(f"Targets (issue 13), clean network, human speech clean and noisy: wire p50 <= 650 ms and p90 <= "
          f"850 ms: {_fmt(clean['wire_p50_ms'])} / {_fmt(clean['wire_p90_ms'])} ms -> "
          f"{'PASS' if ok_wire else 'FAIL'}; barge-in stop p95 <= 100 ms: "
          f"{_fmt(max(stops) if stops else None)} ms -> {'PASS' if ok_stop else 'FAIL'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
