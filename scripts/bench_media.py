#!/usr/bin/env python3
"""Media-engine benchmark: what one core costs per call, and how on time the packets leave.

Run it (defaults take about two minutes on a 2-core box)::

    .venv/bin/python scripts/bench_media.py [--calls N] [--seconds S] [--loss L] [--jitter-ms J] [--json]

Three parts, one run, one table (each part's method is in its module's docstring):

1. **CPU cost, simulated clock (sans-IO)** (:mod:`benchkit.media_cpu`). ``--calls``
   :class:`RtpSession` s, each fed its own loop of the caller's speech in
   ``fixtures/speech-librivox-0870.pcap`` and echoing it back; each stage of a 20 ms round is timed
   around the whole batch of calls. A *frame* is one call's 20 ms both ways;
   ``calls/core = 20 ms / cost per frame``. Medians over ``--repeat`` runs.
2. **Real time, real sockets** (:mod:`benchkit.media_realtime`). ``--rt-calls``
   :class:`MediaTransport` s on one event loop in one process, bound on 127.0.0.1, echoing the
   speech a *peer* replays to them every 20 ms; the peer runs in a second process or in the same
   event loop (``--sink``). Send-time error is when each tick's packet really left minus when it
   was due. A ``work none`` run measures the loop and sockets alone.
3. **Baselines, same run.** A naive ``await asyncio.sleep(0.02)`` pacer running beside the calls
   on the same loop (its lateness against the absolute schedule ``t0 + n·20 ms`` only grows;
   :mod:`benchkit.media_realtime`), and per-sample Python G.711 against the lookup tables
   (:mod:`benchkit.baselines`).

``--api-rps N`` repeats each asyncio media run (peer in its own process) with the control API
served on the same event loop under N requests a second from a client process
(:mod:`benchkit.api_load`): does a steady stream of API requests move the media p99?

``--loop uvloop`` (or ``both``, the default, which runs uvloop when it can be imported) measures
the real-time part on uvloop as well; uvloop is not a project dependency (see docs/benchmarks.md).

This file is the command (arguments, the table, the targets); the parts live in the
``benchkit`` package beside it, whose names it re-exports for the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from benchkit.api_load import api_summary
from benchkit.baselines import CodecBaseline, codec_baseline, python_ulaw_decode, python_ulaw_encode
from benchkit.common import (
    FIXTURE,
    FRAME,
    FRAME_US,
    HOST,
    PORT_MAX,
    PORT_MIN,
    ROOT,
    CallStream,
    Clock,
    load_speech,
    machine,
)
from benchkit.inference_load import InferenceLoad
from benchkit.media_cpu import CPU_STAGES, STAGE_LABELS, CpuRun, CpuSummary, cpu_benchmark, run_cpu
from benchkit.media_realtime import NAIVE_SSRC, RealtimeRun, run_realtime, uvloop_available

from sipagent.config import load_settings
from sipagent.replay.impair import Impairments

__all__ = [
    "CPU_STAGES",
    "FIXTURE",
    "FRAME",
    "FRAME_US",
    "HOST",
    "NAIVE_SSRC",
    "PORT_MAX",
    "PORT_MIN",
    "ROOT",
    "STAGE_LABELS",
    "TARGET_CALLS_PER_CORE",
    "TARGET_P99_MS",
    "CallStream",
    "Clock",
    "CodecBaseline",
    "CpuRun",
    "CpuSummary",
    "Impairments",
    "RealtimeRun",
    "api_summary",
    "codec_baseline",
    "cpu_benchmark",
    "load_speech",
    "machine",
    "main",
    "python_ulaw_decode",
    "python_ulaw_encode",
    "render",
    "run_cpu",
    "run_realtime",
    "uvloop_available",
]

TARGET_CALLS_PER_CORE = 250
TARGET_P99_MS = 2.0


# ----------------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    """The human table."""
    info, cpu, codec, verdict = results["machine"], results["cpu"], results["codec"], results["targets"]
    out = [f"sipagent media benchmark: {info['nproc']} cores, {info['cpu']}, Python {info['python']}", ""]
    out.append(
        f"1. CPU cost, simulated clock (sans-IO): {cpu['calls']} calls x {cpu['seconds']:g} s, loss "
        f"{cpu['loss']:.0%}, jitter {cpu['jitter_ms']:g} ms; median of {cpu['repeats']} runs"
    )
    out.append(f"   {'stage':<46}{'us/frame':>9}{'share':>7}")
    for name, label in STAGE_LABELS.items():
        value = cpu["stages_us"][name]
        out.append(f"   {label:<46}{value:>9.2f}{value / cpu['per_frame_us']:>7.0%}")
    runs = ", ".join(f"{value:.1f}" for value in cpu["per_frame_us_runs"])
    out.append(f"   {'per frame, both ways (runs: ' + runs + ')':<46}{cpu['per_frame_us']:>9.2f}")
    out.append(f"   {'calls per core at 100 % (20 ms / frame)':<46}{cpu['calls_per_core']:>9.0f}")
    out.append(
        f"   inbound: {cpu['voice_fraction']:.0%} voice, {cpu['concealed_fraction']:.1%} concealed; "
        f"VAD says voiced {cpu['voiced_fraction']:.0%}"
    )
    out += ["", "2. Real time: 127.0.0.1 sockets, one process, one event loop; send error = left - due (ms)"]
    out.append(
        f"   {'loop':<8}{'work':<9}{'peer':<10}{'calls':>6}{'p50':>7}{'p99':>7}{'p99/s':>7}"
        f"{'max':>7}{'>2ms':>7}{'CPU':>6}{'us/fr':>7}{'calls/core':>11}{'wake/tick':>10}{'peer p99':>9}"
        f"{'other':>7}{'rq wait':>8}"
    )
    for run in results["realtime"]:
        out.append(
            f"   {run['loop']:<8}{run['work']:<9}{run['sink']:<10}{run['calls']:>6}"
            f"{run['send_error_p50_ms']:>7.2f}{run['send_error_p99_ms']:>7.2f}{run['window_p99_median_ms']:>7.2f}"
            f"{run['send_error_max_ms']:>7.1f}{run['late_over_2ms']:>7.1%}{run['cpu_util']:>6.0%}"
            f"{run['per_frame_us']:>7.1f}{run['calls_per_core']:>11.0f}{run['wakeups_per_tick']:>10.2f}"
            f"{run['peer'].get('spread_p99_ms', math.nan):>9.2f}{run['other_load']:>7.2f}"
            f"{run['runqueue_wait']:>8.1%}"
        )
    out += api_summary(results["realtime"])
    out += [f"   {skipped}" for skipped in results["skipped"]]
    pinned = sorted({run["pinned"] for run in results["realtime"]})
    priority = sorted({run["priority"] for run in results["realtime"]})
    out.append(
        f"   pinned: {'; '.join(p for p in pinned if p) or 'no'}; "
        f"scheduling: {'; '.join(p for p in priority if p) or 'normal (SCHED_OTHER)'}"
    )
    out += [
        "   work none: the loop and sockets alone; work inf-proc / inf-thre: media while STT, LLM and",
        "   TTS turns run back to back in the inference process / on worker threads of this process",
        "   (CPU counts the models too when they are threads here);",
        "   p99/s: median of the per-second p99s; CPU: server",
        "   process, of one core; peer p99: arrival spread the peer saw (its own lateness included);",
        "   other: cores busy with other programs meanwhile (the box may be shared); rq wait: share",
        "   of the time the server was ready to run but waited for its core",
        "",
        "3. Ratios and baselines, same run",
    ]
    media = [run for run in results["realtime"] if run["work"] == "media"]
    for run in media:
        out.append(
            f"   pacing ({run['loop']}, peer {run['sink']}, {run['calls']} calls): sleep(0.02) loop p99 "
            f"{run['naive_p99_ms']:.0f} ms, {run['naive_drift_ms']:.0f} ms behind after "
            f"{run['seconds']:.0f} s "
            f"({run['naive_rate_pps']:.1f} packets/s, not 50); absolute schedule p99 "
            f"{run['send_error_p99_ms']:.2f} ms, no drift"
        )
    for run in media:
        bare = [b for b in results["realtime"] if b["work"] == "none" and b["loop"] == run["loop"]]
        if run["sink"] == "process" and bare:
            out.append(
                f"   CPU per frame ({run['loop']}, {run['calls']} calls): with sockets "
                f"{run['per_frame_us']:.1f} us = {run['per_frame_us'] / cpu['per_frame_us']:.1f}x the "
                f"sans-IO {cpu['per_frame_us']:.1f} us; "
                f"loop and sockets alone {bare[0]['per_frame_us']:.1f} us"
            )
    for run in results["realtime"]:
        if not run["work"].startswith("inf-"):
            continue
        alone = [m for m in media if m["calls"] == run["calls"] and m["sink"] == run["sink"]]
        if alone:
            out.append(
                f"   inference, {'its own process' if run['work'] == 'inf-proc' else 'threads here'} "
                f"({run['calls']} calls, {run.get('inference_jobs', {})} jobs meanwhile): "
                f"send error p99 {run['send_error_p99_ms']:.2f} ms against "
                f"{alone[0]['send_error_p99_ms']:.2f} ms without ({TARGET_P99_MS:g} ms target: "
                f"{_verdict(run['send_error_p99_ms'] < TARGET_P99_MS)})"
            )
    out.append(
        f"   G.711 decode+encode of one frame: per-sample Python {codec['python_us']:.1f} us, lookup "
        f"tables {codec['table_us']:.2f} us ({codec['ratio']:.0f}x)"
    )
    out += [
        "",
        f"Targets (issue): >= {TARGET_CALLS_PER_CORE} calls/core: "
        f"sans-IO {verdict['calls_per_core_sans_io']:.0f}, "
        f"with sockets {verdict['calls_per_core_realtime']:.0f} -> {_verdict(verdict['calls_per_core_ok'])}; "
        f"p99 send error < {TARGET_P99_MS:g} ms at {verdict['calls']} calls: {verdict['p99_ms']:.2f} ms -> "
        f"{_verdict(verdict['p99_ok'])}",
    ]
    return "\n".join(out)


def _targets(cpu: CpuSummary, realtime: list[RealtimeRun]) -> dict[str, Any]:
    """The issue's targets, judged on the largest asyncio run with the peer in another process."""
    candidates = [
        run for run in realtime if run.loop == "asyncio" and run.sink == "process" and run.work == "media"
    ]
    primary = max(candidates or realtime, key=lambda run: run.calls) if realtime else None
    per_core = primary.calls_per_core if primary is not None else cpu.calls_per_core
    p99 = primary.send_error_p99_ms if primary is not None else math.nan
    return {
        "calls": primary.calls if primary is not None else 0,
        "calls_per_core_sans_io": cpu.calls_per_core,
        "calls_per_core_realtime": per_core,
        "calls_per_core_ok": min(cpu.calls_per_core, per_core) >= TARGET_CALLS_PER_CORE,
        "p99_ms": p99,
        "p99_ok": p99 < TARGET_P99_MS,
    }


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("call counts must be positive")
    return counts


def _cpu_list(text: str) -> list[int]:
    cpus = [int(part) for part in text.split(",") if part.strip()]
    if not cpus or any(cpu < 0 for cpu in cpus):
        raise argparse.ArgumentTypeError("CPU numbers are 0 or more, comma-separated")
    return cpus


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="sipagent media benchmark (see docs/benchmarks.md)")
    parser.add_argument("--calls", type=int, default=300, help="calls in the CPU part (300)")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per CPU run (20)")
    parser.add_argument("--repeat", type=int, default=5, help="CPU runs to take the median of (5)")
    parser.add_argument("--loss", type=float, default=0.0, help="packet loss probability, CPU part (0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="mean extra network delay, CPU part (0)")
    parser.add_argument(
        "--rt-calls", type=_counts, default=[250], help="concurrent calls in real time, e.g. 150,250 (250)"
    )
    parser.add_argument(
        "--rt-seconds", type=float, default=10.0, help="measured seconds per real-time run (10)"
    )
    parser.add_argument(
        "--sink", choices=("process", "loop", "both"), default="both", help="where the peer runs"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop", "both"), default="both", help="'both' skips a missing uvloop"
    )
    parser.add_argument("--no-realtime", action="store_true", help="skip part 2")
    parser.add_argument("--no-bare", action="store_true", help="skip the loop-and-sockets-alone run")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server to one core and the peer process to another (pinned by default)",
    )
    parser.add_argument(
        "--rt-priority",
        action="store_true",
        help="run the server and the peer in the SCHED_RR real-time class (root; for shared boxes)",
    )
    parser.add_argument(
        "--inference",
        choices=("process", "threads", "both"),
        nargs="?",
        const="both",
        default=None,
        help="repeat each asyncio media run (peer process) while the voice pipeline's models run "
        "STT, LLM and TTS turns back to back, in the inference process and/or on worker threads of "
        "this one ([agent] inference; both when given alone; needs the embedded models)",
    )
    parser.add_argument(
        "--inference-cpus",
        type=_cpu_list,
        default=None,
        help="CPUs for the inference process, e.g. 1 ([agent] inference_cpus; default: all)",
    )
    parser.add_argument(
        "--loop-nice",
        type=int,
        default=0,
        help="nice value of the server's event loop thread in the real-time runs (serve: rtp.loop_nice)",
    )
    parser.add_argument(
        "--inference-nice", type=int, default=None, help="[agent] inference_nice for the inference load"
    )
    parser.add_argument(
        "--inference-sched",
        choices=("normal", "idle"),
        default=None,
        help="[agent] inference_sched for the inference load",
    )
    parser.add_argument(
        "--api-rps",
        type=float,
        default=0.0,
        help="repeat each asyncio media run (peer process) with the control API on the same loop "
        "answering this many GET /v1/calls and GET /v1/calls/{id} a second, alternately (0: no)",
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeat < 1 or args.seconds <= 0 or args.rt_seconds <= 0:
        parser.error("--calls and --repeat must be positive, --seconds and --rt-seconds > 0")
    if args.api_rps < 0:
        parser.error("--api-rps must not be negative")
    if not 0 <= args.loss <= 1 or args.jitter_ms < 0:
        parser.error("--loss is a probability and --jitter-ms must not be negative")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    speech = load_speech()
    # loop, sink, calls, bare, where the models run meanwhile ("": no inference load), API rps (0: none)
    plan: list[tuple[str, str, int, bool, str, float]] = []
    modes = (
        ()
        if args.inference is None
        else ("process", "threads")
        if args.inference == "both"
        else (args.inference,)
    )
    skipped: list[str] = []
    if not args.no_realtime:
        sinks = ("process", "loop") if args.sink == "both" else (args.sink,)
        for loop_name in ("asyncio", "uvloop") if args.loop == "both" else (args.loop,):
            if loop_name == "uvloop" and not uvloop_available():
                if args.loop == "uvloop":
                    parser.error("uvloop is not importable (pip install uvloop, or PYTHONPATH to it)")
                skipped.append("uvloop: not importable here, skipped (PYTHONPATH=DIR with uvloop installed)")
                continue
            for calls in args.rt_calls:
                for sink in sinks if loop_name == "asyncio" else sinks[:1]:
                    plan.append((loop_name, sink, calls, False, "", 0.0))
                    if loop_name == "asyncio" and sink == "process":
                        plan += [(loop_name, sink, calls, False, mode, 0.0) for mode in modes]
                        if args.api_rps > 0:
                            plan.append((loop_name, sink, calls, False, "", args.api_rps))
            if loop_name == "asyncio" and not args.no_bare:
                plan.append((loop_name, sinks[0], max(args.rt_calls), True, "", 0.0))
    realtime: list[RealtimeRun] = []
    # The real-time runs go first, before part 1 fills this process with its calls' objects.
    loads: dict[str, InferenceLoad] = {}
    for loop_name, sink, calls, bare, inference, api_rps in plan:
        meanwhile = f" with inference ({inference})" if inference else ""
        meanwhile += f" with the control API at {api_rps:g} requests/s" if api_rps else ""
        say(
            f"real time: {calls} calls on {loop_name}, peer in the {sink}, "
            f"{'no media work' if bare else 'media'}{meanwhile} ..."
        )
        load = None
        if inference:
            if inference not in loads:
                say(f"loading the voice models for the inference load ({inference}) ...")
                overrides: dict[str, Any] = {"agent.inference": inference}
                if inference == "process":
                    overrides["agent.inference_cpus"] = args.inference_cpus
                    overrides["agent.inference_nice"] = args.inference_nice
                    overrides["agent.inference_sched"] = args.inference_sched
                loads[inference] = InferenceLoad(load_settings(None, overrides))
            load = loads[inference]
            load.start()
        run = run_realtime(
            speech,
            calls=calls,
            seconds=args.rt_seconds,
            sink=sink,
            loop=loop_name,
            bare=bare,
            pin=not args.no_pin,
            priority=args.rt_priority,
            loop_nice=args.loop_nice,
            api_rps=api_rps,
        )
        if inference and load is not None:
            load.stop()
            run = replace(run, work=f"inf-{inference[:4]}", inference_jobs=dict(load.jobs))
            say(f"   inference meanwhile: {dict(load.jobs)} jobs")
        realtime.append(run)
    for load in loads.values():
        load.close()
    say(f"CPU: {args.calls} calls x {args.seconds:g} s simulated, {args.repeat} runs ...")
    cpu = cpu_benchmark(
        speech,
        calls=args.calls,
        seconds=args.seconds,
        repeats=args.repeat,
        loss=args.loss,
        jitter_ms=args.jitter_ms,
    )
    codec = codec_baseline(speech)
    results: dict[str, Any] = {
        "machine": machine(),
        "cpu": asdict(cpu),
        "realtime": [asdict(run) for run in realtime],
        "skipped": skipped,
        "codec": {**asdict(codec), "ratio": codec.ratio},
        "targets": _targets(cpu, realtime),
    }
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
