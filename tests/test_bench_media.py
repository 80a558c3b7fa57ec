"""Smoke test of scripts/bench_media.py: tiny parameters, sane positive numbers, no timing claims."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from sipagent.rtp.g711 import ulaw_decode, ulaw_encode

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SCRIPT = SCRIPTS / "bench_media.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # Run as a command, the script has scripts/ first on sys.path (that is how it imports its
    # benchkit package); loaded by file path here, it needs the same.
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("bench_media", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_media"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speech(bench: ModuleType) -> list[bytes]:
    payloads: list[bytes] = bench.load_speech()
    return payloads


def test_cpu_part_counts_every_frame_and_every_stage(bench: ModuleType, speech: list[bytes]) -> None:
    run = bench.run_cpu(speech, calls=2, seconds=1.0, impairments=bench.Impairments(loss=0.1, seed=3))
    assert run.frames == 2 * 50
    assert run.packets_in > 0 and run.packets_out >= run.frames  # one RTP packet per tick, plus RTCP
    assert all(value > 0 for value in run.stages_us.values())
    assert run.per_frame_us == pytest.approx(sum(run.stages_us.values()))
    assert run.calls_per_core > 0 and run.voice_frames > 0


def test_cpu_summary_takes_medians(bench: ModuleType, speech: list[bytes]) -> None:
    summary = bench.cpu_benchmark(speech, calls=2, seconds=1.0, repeats=3, jitter_ms=5.0)
    assert len(summary.per_frame_us_runs) == 3
    assert summary.per_frame_us == sorted(summary.per_frame_us_runs)[1]
    assert summary.calls_per_core == pytest.approx(20_000 / summary.per_frame_us)


@pytest.mark.parametrize("sink", ["loop", "process"])
def test_realtime_part_measures_send_errors(bench: ModuleType, speech: list[bytes], sink: str) -> None:
    run = bench.run_realtime(speech, calls=2, seconds=1.0, sink=sink, warmup=0.3)
    assert run.ticks >= 2 * 40  # ~50 ticks a second per call
    assert math.isfinite(run.send_error_p99_ms) and run.send_error_max_ms >= run.send_error_p50_ms
    assert run.cpu_util > 0 and run.per_frame_us > 0 and run.wakeups_per_tick > 0
    assert run.peer["received"] > 0 and run.peer["sent"] > 0
    assert run.naive_rate_pps > 0


def test_python_g711_baseline_matches_the_tables(bench: ModuleType, speech: list[bytes]) -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert bench.python_ulaw_encode(every.tolist()) == ulaw_encode(every)
    codes = bytes(range(256))
    assert bench.python_ulaw_decode(codes) == ulaw_decode(codes).tolist()
    baseline = bench.codec_baseline(speech, frames=5, repeats=1)
    assert baseline.python_us > 0 and baseline.table_us > 0


def test_command_line_prints_json_and_a_table(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--calls", "2", "--seconds", "1", "--repeat", "1", "--rt-calls", "2", "--rt-seconds", "1"]
    assert bench.main([*argv, "--sink", "loop", "--loop", "asyncio", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["cpu"]["per_frame_us"] > 0 and results["realtime"][0]["ticks"] > 0
    table = bench.render(results)
    assert "calls per core" in table and "Targets" in table


def test_api_load_is_served_on_the_media_loop(bench: ModuleType, speech: list[bytes]) -> None:
    run = bench.run_realtime(speech, calls=2, seconds=1.0, sink="loop", warmup=0.3, api_rps=10)
    assert run.work == "api" and run.ticks >= 2 * 40
    assert run.api["sent"] > 0 and run.api["served"] > 0 and run.api["failed"] == 0
    assert 0 < run.api["p50_ms"] <= run.api["p99_ms"]
    lines = bench.api_summary([dataclasses.asdict(run)])
    assert "Control API on the same loop" in "\n".join(lines)
