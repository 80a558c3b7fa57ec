"""Latency of stored turns: percentiles of the wire latency and of each stage, and a PNG of them.

``sipagent latency`` (sipagent/cli_reports.py) reads the turns from the call store and hands them
here. Percentiles interpolate linearly between the two nearest values (numpy's default, and
``statistics.quantiles(method="inclusive")``), so a handful of turns still gives numbers that move
smoothly as turns come in.

The stages are measured one after another on the way from the caller's last word to the reply's
first voiced packet (sipagent/voice/conversation): the end-of-turn wait, transcription, then the
language model's first token and its first sentence (*both counted from the model's start*: the
first sentence includes the first token), then the synthesiser's first audio. The wire latency is
what the caller waited; it also holds what no stage counts (queues, the jitter buffer, packets).

The plot uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .product.store_reads import STAGES, StoredTurn

__all__ = [
    "PERCENTILES",
    "STAGE_LABELS",
    "LatencySummary",
    "Spread",
    "percentile",
    "plot_latency",
    "summarize",
]

PERCENTILES = (50, 90, 99)
STAGE_LABELS = {
    "end_of_turn_wait": "end-of-turn wait",
    "stt": "speech to text",
    "llm_first_token": "LLM first token",
    "first_sentence": "first sentence",
    "tts_first_audio": "TTS first audio",
}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (not empty), interpolating linearly."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """How many values, and their 50th, 90th and 99th percentiles (ms)."""

    n: int
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        p50, p90, p99 = (percentile(values, q) for q in PERCENTILES)
        return cls(len(values), p50, p90, p99)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "p50": round(self.p50, 1), "p90": round(self.p90, 1), "p99": round(self.p99, 1)}


@dataclass(frozen=True)
class LatencySummary:
    """The wire latency and each stage over a set of turns (a stage some turns lack counts the rest)."""

    turns: int
    wire: Spread | None
    stages: dict[str, Spread | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "latency_ms": None if self.wire is None else self.wire.as_dict(),
            "stages_ms": {name: None if s is None else s.as_dict() for name, s in self.stages.items()},
        }


def stage_values(turns: Sequence[StoredTurn], stage: str) -> list[float]:
    """The measured values of ``stage`` (one of :data:`STAGES`) among ``turns``."""
    values = (getattr(turn, f"{stage}_ms") for turn in turns)
    return [float(v) for v in values if v is not None]


def summarize(turns: Sequence[StoredTurn]) -> LatencySummary:
    wire = [float(t.latency_ms) for t in turns if t.latency_ms is not None]
    return LatencySummary(
        turns=len(turns),
        wire=Spread.of(wire),
        stages={stage: Spread.of(stage_values(turns, stage)) for stage in STAGES},
    )


def plot_latency(turns: Sequence[StoredTurn], path: Path) -> None:
    """Write a PNG to ``path``: the histogram of the wire latency with its percentiles, and the
    stages' medians stacked in pipeline order beside the median wire latency."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    summary = summarize(turns)
    wire = [float(t.latency_ms) for t in turns if t.latency_ms is not None]
    figure = Figure(figsize=(12, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    histogram, breakdown = figure.subplots(1, 2, width_ratios=(3, 2))

    bins = max(1, min(40, math.ceil(math.sqrt(len(wire))) * 2))
    histogram.hist(wire, bins=bins, color="#4c72b0", edgecolor="white")
    if summary.wire is not None:
        for q, value, style in zip(
            PERCENTILES, (summary.wire.p50, summary.wire.p90, summary.wire.p99), ("-", "--", ":"), strict=True
        ):
            histogram.axvline(value, color="#c44e52", linestyle=style, label=f"p{q} {value:.0f} ms")
        histogram.legend(loc="upper right")
    histogram.set_title(f"Wire latency, last {len(wire)} measured turns")
    histogram.set_xlabel("caller's last word to the reply's first voiced packet (ms)")
    histogram.set_ylabel("turns")
    histogram.yaxis.set_major_locator(MaxNLocator(integer=True))

    # The first sentence counts from the model's start: only its part after the first token stacks.
    medians = {name: (s.p50 if s is not None else 0.0) for name, s in summary.stages.items()}
    segments = [
        ("end-of-turn wait", medians["end_of_turn_wait"]),
        ("speech to text", medians["stt"]),
        ("LLM first token", medians["llm_first_token"]),
        ("rest of first sentence", max(0.0, medians["first_sentence"] - medians["llm_first_token"])),
        ("TTS first audio", medians["tts_first_audio"]),
    ]
    colours = ("#8172b2", "#64b5cd", "#55a868", "#a8dc9f", "#dd8452")
    left = 0.0
    for (label, width), colour in zip(segments, colours, strict=True):
        breakdown.barh("stages", width, left=left, color=colour, label=f"{label} {width:.0f} ms")
        left += width
    if summary.wire is not None:
        breakdown.barh("wire", summary.wire.p50, color="#4c72b0", label=f"wire p50 {summary.wire.p50:.0f} ms")
    breakdown.set_title("Medians: stages stacked in order, and the wire")
    breakdown.set_xlabel("ms")
    breakdown.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize="small")
    figure.savefig(path, format="png")
