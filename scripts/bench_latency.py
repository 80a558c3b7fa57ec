#!/usr/bin/env python3
"""Voice-pipeline latency on the wire: how long callers wait for the agent, and how fast it yields.

Run it (about four minutes on a 2-core box with the embedded models)::

    .venv/bin/python scripts/bench_latency.py [--repeat N] [--config FILE] [--json]

Every human-speech fixture with a reference transcript is replayed into the real pipeline
(:class:`sipagent.replay.agent_replay.AgentReplay`: the caller's packets arrive in real time on the
loop's clock, go through the media engine, and the models run in their worker threads exactly as in
``serve --mode agent``), once clean and once impaired (``--loss``, ``--jitter-ms``, ``--reorder``).
Per turn it takes:

* ``wire``: arrival of the caller's last voiced RTP packet → departure of the agent's first voiced
  RTP packet: what the caller hears as the agent's hesitation;
* the stages: end-of-turn wait, STT, LLM first token, first sentence (from the LLM's start), TTS
  first audio (of the first sentence);
* the word error rate of the transcripts against the fixtures' references.

The barge-in fixture is replayed ``--barge-runs`` times per condition (different impairment seeds):
``stop`` is the arrival of the interrupting voice's first packet → the first outbound packet without
the agent's voice; ``decision`` is the agent's decision (hold or barge-in) → that packet.

Medians and percentiles are over all turns of all runs of a condition. Compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jiwer  # noqa: E402

from sipagent.config import Settings, load_settings  # noqa: E402
from sipagent.replay.agent_replay import AgentReplay  # noqa: E402
from sipagent.replay.capture import load_caller_leg  # noqa: E402
from sipagent.replay.impair import Impairments  # noqa: E402
from sipagent.replay.runner import ReplayEvent  # noqa: E402
from sipagent.voice.agent import Models  # noqa: E402
from sipagent.voice.pipeline import agent_config, close_models, load_models  # noqa: E402

FIXTURES = ROOT / "fixtures"
#: Human (and one espeak) speech with reference transcripts: one caller turn each (two-turns: two).
SPEECH = [
    "speech-librivox-0870.pcap",
    "speech-librivox-0880.pcap",
    "speech-librivox-0890.pcap",
    "speech-cards-001.pcap",
    "speech-cards-002.pcap",
    "speech-cards-003.pcap",
    "speech-goforward.pcap",
    "synthetic-espeak.pcap",
    "two-turns.pcap",
]
BARGE_IN = "agent-barge-in.pcap"
#: Said at the start of the barge-in replays: the caller talks over it at 0.76 s (and over whatever
#: the agent says at 6.17 s), so there is always speech to interrupt, whatever the LLM replies.
GREETING = (
    "Thank you for calling the sipagent demo line. I can tell you about our opening hours, our prices "
    "and deliveries, and I can take a message for the team. How can I help you today?"
)
STAGES = ["end_of_turn_wait_ms", "stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms"]
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
    turns: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)
    unanswered: int = 0


async def replay(
    path: Path, impairments: Impairments, models: Models, settings: Settings
) -> list[ReplayEvent]:
    events: list[ReplayEvent] = []
    runner = AgentReplay(load_caller_leg(path), impairments, models, agent_config(settings))
    await runner.run(events.append)
    return events


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(args.config, {})
    barge_settings = load_settings(args.config, {"agent.greeting": GREETING})
    manifest = {f["file"]: f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
    started = time.perf_counter()
    models = await asyncio.to_thread(load_models, settings)
    load_s = time.perf_counter() - started
    impaired = Impairments(loss=args.loss, jitter_ms=args.jitter_ms, reorder=args.reorder, seed=1)
    conditions = [Condition("clean", Impairments()), Condition("impaired", impaired)]
    try:
        for condition in conditions:
            for repeat in range(args.repeat):
                for name in args.fixtures:
                    imp = condition.impairments
                    if imp.loss or imp.jitter_ms:
                        imp = Impairments(
                            imp.loss, imp.jitter_ms, imp.reorder, imp.duplicate, seed=repeat + 1
                        )
                    events = await replay(FIXTURES / name, imp, models, settings)
                    turns = [e.fields for e in events if e.event == "turn_latency"]
                    texts = [str(e.fields["text"]) for e in events if e.event == "transcript"]
                    condition.turns.extend(t for t in turns)
                    condition.unanswered += sum(1 for t in turns if t["wire_ms"] is None)
                    refs = [turn["transcript"] for turn in manifest[name]["turns"]] if "turns" in manifest[
                        name] else [manifest[name]["transcript"]]  # fmt: skip
                    condition.refs.append(normalise(" ".join(refs)))
                    condition.hyps.append(normalise(" ".join(texts)))
                    wires = [t["wire_ms"] for t in turns]
                    print(
                        f"  {condition.name} {name}: wire {wires} ms; heard {texts}",
                        file=sys.stderr,
                        flush=True,
                    )
            for index in range(args.barge_runs):
                imp = condition.impairments
                if imp.loss or imp.jitter_ms:
                    imp = Impairments(imp.loss, imp.jitter_ms, imp.reorder, seed=100 + index)
                events = await replay(FIXTURES / BARGE_IN, imp, models, barge_settings)
                found = [e.fields for e in events if e.event == "barge_in"]
                condition.barge_ins.extend(found)
                print(f"  {condition.name} {BARGE_IN}: {found}", file=sys.stderr, flush=True)
    finally:
        await asyncio.to_thread(close_models, models)
    return {"load_s": load_s, "conditions": conditions, "settings": settings}


def summarise(condition: Condition) -> dict[str, Any]:
    wire = [float(t["wire_ms"]) for t in condition.turns if t["wire_ms"] is not None]
    row: dict[str, Any] = {
        "condition": condition.name,
        "turns": len(condition.turns),
        "unanswered": condition.unanswered,
        "wire_p50_ms": statistics.median(wire) if wire else None,
        "wire_p90_ms": percentile(wire, 0.9) if wire else None,
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
    header = ("condition", "turns", "wire p50", "p90", "eot wait", "stt", "llm 1st tok", "1st sentence",
              "tts 1st audio", "WER", "barge-ins", "stop p50", "p95", "decision max")  # fmt: skip
    print("  ".join(f"{h:>12}" for h in header))
    for row in rows:
        cells = [row["condition"], row["turns"], row["wire_p50_ms"], row["wire_p90_ms"],
                 *(row[s] for s in STAGES), row["wer"], row["barge_ins"], row["stop_p50_ms"],
                 row["stop_p95_ms"], row["decision_max_ms"]]  # fmt: skip
        text = [_fmt(c, 3 if i == 9 else 0) for i, c in enumerate(cells)]
        print("  ".join(f"{t:>12}" for t in text))
    print("all times ms, medians unless marked; wire: the caller's last voiced packet in -> "
          "the agent's first voiced packet out")  # fmt: skip
    clean = rows[0]
    ok_wire = clean["wire_p50_ms"] is not None and clean["wire_p50_ms"] <= 700
    stops = [r["stop_p95_ms"] for r in rows if r["stop_p95_ms"] is not None]
    ok_stop = bool(stops) and max(stops) <= 150
    print(f"Targets (issue 4): wire p50 <= 700 ms (clean): {_fmt(clean['wire_p50_ms'])} ms -> "
          f"{'PASS' if ok_wire else 'FAIL'}; barge-in stop p95 <= 150 ms: "
          f"{_fmt(max(stops) if stops else None)} ms -> {'PASS' if ok_stop else 'FAIL'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
