#!/usr/bin/env python3
"""The agent under CPU-bound neighbours: start-up, turn latency and media p99 per inference priority.

Run it (about a minute per run on a 2-core box: ~6 minutes for the default six runs)::

    .venv/bin/python scripts/bench_neighbours.py [--neighbours 2] [--calls 3] [--nice 0 5 10 19]
        [--no-idle] [--baseline default|all|none] [--fixture speech-librivox-0880.pcap]
        [--workdir DIR] [--json]

It needs the embedded models and the peers (baresip, dumpcap able to capture on ``lo``).

The models run in their own process at ``[agent] inference_nice`` (normal class) or in SCHED_IDLE
(``inference_sched = "idle"``). SCHED_IDLE gives the models only time nothing else wants, which
beside programs that keep every core busy may be none at all (how little depends on the kernel:
the "CPU s models" column shows what they got); a nice value gets them a bounded share while the
media loop still wins its core. Which one is a trade measured here, with the real pieces: for each
setting (default ``nice`` 0, 5, 10, 19 and ``idle``) and ``--neighbours`` CPU-bound processes
(``python3 -c "while True: pass"`` at nice 0, started before the server, killed after it), plus a
baseline with no neighbours (the default setting; ``--baseline all`` runs every setting without),
``scripts/benchkit/neighbours.py``:

* starts ``sipagent serve --mode agent`` on loopback and times spawn → "listening on" (the models
  load first, at normal priority);
* places ``--calls`` calls one after another with baresip playing a fixture's human speech then
  ~8 s of its room tone, captures loopback RTP, and measures the **turn latency** on the wire: the
  caller's packet carrying the true end of speech (``fixtures/manifest.json``) → the agent's first
  voiced packet (peak > 2000); fewer than 0.5 s of voiced reply is "no reply";
* reads each call's **media p99** (how late the server's packets left, its "send error") from the
  server's log.

The table has per run: listen seconds, each call's latency and their median (answered calls),
the median (and worst) media p99, replies/calls, the priority the inference threads were seen at
in /proc, the CPU seconds the inference process and the neighbours used during the calls (the share
each really got) and what the box spent outside this benchmark's processes meanwhile ("others": on
a shared box, another user's job shows there, and that row is not comparable), and how busy the
whole box was.
Failures (no listen, a call not established) are rows too, with the reason and the log's end
below the table. Timing is the point, so the numbers vary from run to run; everything else
(audio, order, settings) is fixed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

#: A server log record worth showing under the table (the debug ones are SIP messages and packets).
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING|ERROR|CRITICAL) ")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # peers/ and sipagent/ from the work tree, wherever we run from

from benchkit.neighbours import (  # noqa: E402
    DEFAULT_FIXTURE,
    DEFAULT_NICES,
    DEFAULT_SETTING,
    CallerAudio,
    CallResult,
    RunResult,
    Setting,
    caller_audio,
    host_facts,
    run_setting,
)


def plan(settings: Sequence[Setting], neighbours: int, baseline: str) -> list[tuple[Setting, int]]:
    """The runs in order: the baseline(s) without neighbours first, then each setting with them."""
    runs: list[tuple[Setting, int]] = []
    if baseline == "all":
        runs += [(setting, 0) for setting in settings]
    elif baseline == "default":
        runs.append((DEFAULT_SETTING, 0))
    runs += [(setting, neighbours) for setting in settings]
    return list(dict.fromkeys(runs))  # --neighbours 0 would repeat the baselines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _call_cell(call: CallResult) -> str:
    if call.error is not None and call.latency_s is None:
        return "fail"
    if not call.answered:
        return "no reply"
    return _seconds(call.latency_s)


def table(runs: Sequence[RunResult]) -> str:
    """The runs as a fixed-width text table, then a note per failure with the server log's end."""
    header = ["setting", "nbrs", "listen s", "latency s per call", "median s", "media p99 ms (max)",
              "replies", "inference seen", "CPU s models/nbrs/others", "box busy"]  # fmt: skip
    rows = [header]
    for run in runs:
        p99 = run.median_media_p99_ms
        worst = run.max_media_p99_ms
        rows.append([
            run.setting,
            str(run.neighbours),
            "never" if run.listen_s is None else f"{run.listen_s:.1f}",
            " ".join(_call_cell(call) for call in run.calls) or "-",
            _seconds(run.median_latency_s),
            "-" if p99 is None or worst is None else f"{p99:.2f} ({worst:.2f})",
            f"{run.answered}/{len(run.calls)}",
            run.inference_seen or "-",
            f"{_cpu(run.inference_cpu_s)}/{_cpu(run.neighbours_cpu_s if run.neighbours else None)}"
            f"/{_cpu(run.others_cpu_s)}",
            "-" if run.busy is None else f"{run.busy:.0%}",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = []
    for run in runs:
        name = f"{run.setting}, {run.neighbours} neighbours"
        if run.error is not None:
            notes.append(f"* {name}: {run.error}")
        for index, call in enumerate(run.calls, 1):
            if call.error is not None:
                notes.append(f"* {name}, call {index}: {call.error}")
            elif not call.answered:
                notes.append(f"* {name}, call {index}: no reply ({call.voiced_packets} voiced packets after)")
        if run.neighbours_alive < run.neighbours and run.listen_s is not None:
            notes.append(f"* {name}: only {run.neighbours_alive} neighbours were still running at the end")
        if run.log_tail:
            # The debug log holds whole SIP messages: only the log records above debug tell the story.
            records = [line for line in run.log_tail.splitlines() if _RECORD.match(line)]
            tail = "\n".join(f"    {line[:300]}" for line in records[-12:])
            notes.append(f"  server log, last lines:\n{tail}")
    return "\n".join(lines + (["", *notes] if notes else []))


def _header(facts: dict[str, Any], settings: Sequence[Setting], args: argparse.Namespace) -> str:
    labels = ", ".join(setting.label for setting in settings)
    return "\n".join([
        f"host: {facts['nproc']} cores, {facts['cpu']}, Python {facts['python']}, "
        f"load average {facts.get('loadavg_1m', float('nan')):.2f} before the runs, "
        f"our nice {facts['our_nice']}",
        f"neighbours: {args.neighbours} x `python3 -c \"while True: pass\"` at nice 0 "
        f"(baseline: {args.baseline}, with none)",
        f"settings: {labels}",
        f"calls: {args.calls} per run, baresip playing {args.fixture} + {args.tail_s:g} s of its room tone",
    ])  # fmt: skip


def _as_json(run: RunResult) -> dict[str, Any]:
    data = asdict(run)
    data["answered"] = run.answered
    data["median_latency_s"] = run.median_latency_s
    data["median_media_p99_ms"] = run.median_media_p99_ms
    data["max_media_p99_ms"] = run.max_media_p99_ms
    return data


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--neighbours", type=int, default=2, help="CPU-bound neighbour processes (2)")
    parser.add_argument("--calls", type=int, default=3, help="calls per run, one after another (3)")
    parser.add_argument("--nice", type=int, nargs="*", default=list(DEFAULT_NICES),
                        help="inference_nice values to run in the normal class (0 5 10 19)")  # fmt: skip
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True,
                        help='also run inference_sched = "idle" (on)')  # fmt: skip
    parser.add_argument("--baseline", choices=["default", "all", "none"], default="default",
                        help="runs without neighbours: the default (nice 5), all, or none")  # fmt: skip
    parser.add_argument("--fixture", default=DEFAULT_FIXTURE, help=f"caller speech ({DEFAULT_FIXTURE})")
    parser.add_argument("--tail-s", type=float, default=8.0, help="room tone after the speech, s (8)")
    parser.add_argument("--listen-timeout", type=float, default=120.0, help="give up on a start-up after (s)")
    parser.add_argument("--workdir", type=Path, help="keep logs and captures here (default: a tmp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.neighbours < 0 or args.calls < 1:
        parser.error("--neighbours must be >= 0 and --calls >= 1")
    if any(not 0 <= nice <= 19 for nice in args.nice):
        parser.error("--nice values must be 0 to 19")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plan, print the table (or JSON). Exit 0 even when runs failed: they are in the table."""
    args = _parse_args(argv)
    settings = [Setting("normal", nice) for nice in args.nice] + ([Setting("idle", 0)] if args.idle else [])
    if not settings:
        print("nothing to run: no --nice values and --no-idle", file=sys.stderr)
        return 2
    runs = plan(settings, args.neighbours, args.baseline)
    facts = host_facts()
    with tempfile.TemporaryDirectory(prefix="bench-neighbours-") as tmp:
        workdir: Path = args.workdir or Path(tmp)
        audio: CallerAudio = caller_audio(workdir, args.fixture, tail_s=args.tail_s)
        if not args.json:
            print(_header(facts, settings, args), flush=True)
        results: list[RunResult] = []
        started = time.monotonic()
        for index, (setting, neighbours) in enumerate(runs, 1):
            name = f"{index:02d}-{setting.label.replace(' ', '')}-n{neighbours}"
            try:
                result = run_setting(
                    setting, neighbours, calls=args.calls, audio=audio, workdir=workdir / name,
                    listen_timeout=args.listen_timeout,
                )  # fmt: skip
            except Exception as exc:  # a bug of ours or a broken peer: a failed row, not a lost table
                result = RunResult(setting.label, setting.sched, setting.nice, neighbours)
                result.error = f"{type(exc).__name__}: {exc}"[:500]
            results.append(result)
            latencies = [_call_cell(call) for call in result.calls]
            print(
                f"[{time.monotonic() - started:5.0f} s] {setting.label}, {neighbours} neighbours: listen "
                f"{_seconds(result.listen_s)} s, latency {' '.join(latencies) or '-'}"
                + (f", {result.error}" if result.error else ""),
                file=sys.stderr,
                flush=True,
            )
    if args.json:
        output = {
            "host": facts,
            "neighbours": args.neighbours,
            "settings": [setting.label for setting in settings],
            "fixture": args.fixture,
            "calls": args.calls,
            "seconds": round(time.monotonic() - started, 1),
            "runs": [_as_json(run) for run in results],
        }
        print(json.dumps(output, indent=2))
    else:
        print()
        print(table(results))
        medians = [r.median_latency_s for r in results if r.median_latency_s is not None]
        spread = f", medians {min(medians):.2f}-{max(medians):.2f} s" if medians else ""
        print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
