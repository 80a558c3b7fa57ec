#!/usr/bin/env python3
"""Answering-machine detection over its fixture set: accuracy, beeps, time to decision.

Each capture of ``fixtures/amd/`` (``manifest.json``: label, beep) is replayed as
``sipagent replay CAPTURE --amd`` does it (media engine on a simulated clock, the detector from the
200 OK), and the results are compared with the labels:

* machines / humans right: the share decided as labelled (``uncertain`` counts as wrong for both,
  and is shown on its own);
* beeps: a labelled beep found within ``--beep-tolerance-ms`` (100) of its onset, the onset error,
  and beeps reported where there is none (false);
* time to decision: ``after_ms`` from the 200 OK, median and 90th percentile.

Usage::

    .venv/bin/python scripts/bench_amd.py                    # Silero VAD, every fixture, a table
    .venv/bin/python scripts/bench_amd.py --vad energy -v    # the energy gate; one line per fixture
    .venv/bin/python scripts/bench_amd.py --split tune --json
    .venv/bin/python scripts/bench_amd.py --loss 0.03 --jitter-ms 30     # a worse network on top
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipagent.replay.amd_replay import AmdReplay, VadFactory, load_far_leg, silero_vad_factory
from sipagent.replay.impair import Impairments
from sipagent.voice.amd import AmdConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "fixtures" / "amd"


@dataclass
class Outcome:
    """One fixture's replay against its label."""

    file: str
    label: str
    split: str
    result: str
    after_ms: float
    reason: str
    beep_truth_ms: float | None
    beeps_ms: list[float] = field(default_factory=list)

    @property
    def right(self) -> bool:
        """Decided as labelled."""
        return self.result == self.label

    def beep_error_ms(self) -> float | None:
        """Onset error of the reported beep nearest the labelled one (None: no label or none found)."""
        if self.beep_truth_ms is None or not self.beeps_ms:
            return None
        truth = self.beep_truth_ms
        return min((b - truth for b in self.beeps_ms), key=abs)


def run_one(
    directory: Path, entry: dict[str, Any], vad: VadFactory | None, config: AmdConfig, network: Impairments
) -> Outcome:
    """Replay one fixture with AMD (``network``: impairments on top of the capture's own)."""
    far = load_far_leg(directory / entry["file"])
    events = AmdReplay(far, network, config=config, vad=vad).run()
    amd = next(e.fields for e in events if e.event == "amd")
    beep = entry.get("beep")
    return Outcome(
        entry["file"],
        entry["label"],
        entry.get("split", "tune"),
        amd["result"],
        float(amd["after_ms"]),
        amd["reason"],
        None if beep is None else round(beep["at_s"] * 1000, 1),
        [float(e.fields["at_ms"]) for e in events if e.event == "beep"],
    )


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(outcomes: Sequence[Outcome], tolerance_ms: float) -> dict[str, Any]:
    """The table's numbers for ``outcomes``."""
    machines = [o for o in outcomes if o.label == "machine"]
    humans = [o for o in outcomes if o.label == "human"]
    labelled = [o for o in outcomes if o.beep_truth_ms is not None]
    errors = [e for o in labelled if (e := o.beep_error_ms()) is not None and abs(e) <= tolerance_ms]
    false_beeps = sum(
        len(o.beeps_ms) - (1 if (e := o.beep_error_ms()) is not None and abs(e) <= tolerance_ms else 0)
        for o in outcomes
    )
    times = [o.after_ms for o in outcomes]

    def share(group: Sequence[Outcome]) -> str:
        right = sum(o.right for o in group)
        return f"{right}/{len(group)} ({100 * right / max(len(group), 1):.1f} %)"

    return {
        "fixtures": len(outcomes),
        "machines_right": share(machines),
        "humans_right": share(humans),
        "uncertain": f"{sum(o.result == 'uncertain' for o in outcomes)}/{len(outcomes)}",
        "beeps_found": f"{len(errors)}/{len(labelled)}",
        "beep_error_ms_median_max": (
            f"{statistics.median(errors):+.0f} / {max(errors, key=abs):+.0f}" if errors else "-"
        ),
        "false_beeps": false_beeps,
        "decision_ms_median_p90": f"{statistics.median(times):.0f} / {_pct(times, 0.9):.0f}"
        if times
        else "-",
        "human_decision_ms_median": f"{statistics.median([o.after_ms for o in humans]):.0f}"
        if humans
        else "-",
        "machine_decision_ms_median": (
            f"{statistics.median([o.after_ms for o in machines]):.0f}" if machines else "-"
        ),
    }


COLUMNS = (
    ("set", "set"),
    ("fixtures", "n"),
    ("machines_right", "machines right"),
    ("humans_right", "humans right"),
    ("uncertain", "uncertain"),
    ("beeps_found", "beeps found (±100 ms)"),
    ("beep_error_ms_median_max", "beep onset error median / worst (ms)"),
    ("false_beeps", "false beeps"),
    ("decision_ms_median_p90", "decision median / p90 (ms)"),
    ("human_decision_ms_median", "humans median (ms)"),
    ("machine_decision_ms_median", "machines median (ms)"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="fixtures and manifest.json")
    parser.add_argument("--vad", choices=("silero", "energy"), default="silero", help="voice decision")
    parser.add_argument("--split", choices=("all", "tune", "holdout"), default="all")
    parser.add_argument("--beep-tolerance-ms", type=float, default=100.0)
    parser.add_argument("--loss", type=float, default=0.0, help="more packet loss at replay (0-1)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="more jitter at replay (mean, ms)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replay's impairments")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per fixture")
    args = parser.parse_args(argv)
    manifest = json.loads((args.dir / "manifest.json").read_text())
    entries = [e for e in manifest["fixtures"] if args.split in ("all", e.get("split", "tune"))]
    vad = silero_vad_factory() if args.vad == "silero" else None
    config = AmdConfig()
    network = Impairments(loss=args.loss, jitter_ms=args.jitter_ms, seed=args.seed)
    outcomes = [run_one(args.dir, e, vad, config, network) for e in entries]
    if args.verbose:
        for o in outcomes:
            mark = "ok " if o.right else "BAD"
            error = o.beep_error_ms()
            beep = (
                ""
                if o.beep_truth_ms is None and not o.beeps_ms
                else f" beep truth={o.beep_truth_ms} found={o.beeps_ms}"
            )
            beep += "" if error is None else f" ({error:+.0f} ms)"
            print(f"{mark} {o.file:32} {o.label:8} {o.result:9} {o.after_ms:7.0f} ms {o.reason}{beep}")
    sets = [("all", outcomes)]
    if args.split == "all":
        sets += [(s, [o for o in outcomes if o.split == s]) for s in ("tune", "holdout")]
    rows = [{"set": name, **summary(group, args.beep_tolerance_ms)} for name, group in sets if group]
    if args.json:
        print(json.dumps({"vad": args.vad, "rows": rows}, indent=2))
        return 0
    where = args.dir.relative_to(REPO) if args.dir.is_relative_to(REPO) else args.dir
    extra = (
        f", replayed with {args.loss:.0%} loss and {args.jitter_ms:.0f} ms jitter" if network.active else ""
    )
    print(f"AMD on {where} (VAD: {args.vad}{extra})")
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
