"""The reports read from the call store (sipagent/cli_reports.py, sipagent/product/store_reads.py):
``sipagent calls``, ``show`` and ``latency`` through click's test runner, against a store filled with
:class:`CallStore`'s own writes. Every stored time is given by the test; ``--since 2h`` is measured
from a ``now`` the test sets, so nothing depends on the wall clock."""

from __future__ import annotations

import json
import sqlite3
import statistics
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from sipagent import cli_reports
from sipagent.cli import main
from sipagent.latency_report import percentile
from sipagent.product.store import CallStore
from sipagent.product.store_reads import StoreError, StoreReader, StoreSchemaError
from sipagent.product.store_schema import SCHEMA_VERSION
from sipagent.voice.conversation import Outcome, TurnRecord

NOW = 1_750_000_000.0  # 2025-06-15, the reports' "now"
HOUR = 3600.0
STAGE_FIELDS = ("end_of_turn_wait", "stt", "llm_first_token", "first_sentence", "tts_first_audio")


def _turn(n: int, latency: float | None, **kw: Any) -> TurnRecord:
    record = TurnRecord(
        turn=n,
        transcript=f"caller line {n}",
        reply=f"agent line {n}",
        latency_ms=latency,
        end_of_turn_wait_ms=None if latency is None else 200.0 + n,
        stt_ms=None if latency is None else 100.0 + 3 * n,
        llm_first_token_ms=None if latency is None else 150.0 + 7 * n,
        first_sentence_ms=None if latency is None else 260.0 + 11 * n,
        tts_first_audio_ms=None if latency is None else 60.0 + 2 * n,
    )
    for key, value in kw.items():
        setattr(record, key, value)
    return record


#: Wire latencies of the "busy" call's turns, uneven on purpose (percentiles between values).
LATENCIES = [512.0, 640.5, 701.0, 455.0, 980.0, 610.0, 1500.0, 588.0, 733.0, 620.0, 841.0]


def fill(path: Path) -> None:
    """Three calls: an old answered one, a busy outbound one with many turns, events and a
    barge-in, and one still in progress (no end)."""
    with CallStore(path) as store:
        store.call_started(
            "old-call-1",
            direction="inbound",
            caller="+1555***0001",
            callee="+15559870000",
            route="support",
            trunk="main",
            mode="conversation",
            at=NOW - 30 * HOUR,
        )
        store.call_answered("old-call-1", at=NOW - 30 * HOUR + 1)
        store.turn("old-call-1", _turn(1, 400.0), at=NOW - 30 * HOUR + 5)
        store.call_ended("old-call-1", reason="caller hung up", sip_status=None, outcome="answered",
                         at=NOW - 30 * HOUR + 20)  # fmt: skip

        start = NOW - HOUR
        store.call_started("abc-123@host", direction="outbound", caller="+15550000000",
                           callee="+1555***4567", route="sales", mode="conversation", at=start)  # fmt: skip
        store.call_answered("abc-123@host", at=start + 2)
        store.amd("abc-123@host", "human", after_ms=1800.0)
        greeting = TurnRecord(turn=0, reply="Hello, this is the shop.", scripted=True)
        store.turn("abc-123@host", greeting, at=start + 3)
        for i, latency in enumerate(LATENCIES, start=1):
            if i == 3:
                store.tool_call(
                    "abc-123@host",
                    "lookup_order",
                    arguments={"order": "42"},
                    ok=True,
                    status=200,
                    duration_ms=81.0,
                    result="shipped",
                    at=start + 10 * i - 1,
                )
            if i == 4:
                store.dtmf("abc-123@host", "5", at=start + 10 * i - 2)
            if i == 5:
                record = _turn(i, latency, outcome=Outcome.INTERRUPTED, reply="Your order",
                               caller_onset_at=50.0, stop_decided_at=50.3)  # fmt: skip
                store.turn("abc-123@host", record, said="Your order ships today.", at=start + 10 * i)
                continue
            store.turn("abc-123@host", _turn(i, latency), at=start + 10 * i)
        store.turn("abc-123@host", _turn(99, None, outcome=Outcome.FAILED, error="llm: timed out"),
                   at=start + 200)  # fmt: skip
        store.transfer("abc-123@host", state="requested", target="billing", at=start + 210)
        store.transfer("abc-123@host", state="failed", sip_status=486, reason="Busy Here", at=start + 211)
        store.call_ended("abc-123@host", reason="agent ended the call", sip_status=200, outcome="answered",
                         at=start + 240)  # fmt: skip

        store.call_started("abd-999@host", direction="inbound", caller="+1555***0009", callee="+15559870000",
                           at=NOW - 0.5 * HOUR)  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "calls.db"
    fill(path)
    return path


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_reports, "_now", lambda: NOW)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"SIPAGENT_API_URL": None}, catch_exceptions=False)


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    out: str = result.stdout
    return out


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    line: str = lines[0]
    return line


def _side_files(path: Path) -> list[Path]:
    return [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")) if p.exists()]


# ------------------------------------------------------------------------------------- calls


def test_calls_lists_every_call_newest_first(db: Path) -> None:
    rows = ok("calls", "--store", str(db)).splitlines()
    assert rows[0].split() == ["id", "dir", "from", "to", "route", "started", "duration", "turns", "outcome",
                               "end"]  # fmt: skip
    assert [row.split()[0] for row in rows[1:]] == ["abd-999@host", "abc-123@host", "old-call-1"]
    busy = rows[2]
    assert "out" in busy and "+15550000000" in busy and "+1555***4567" in busy and "sales" in busy
    assert "238.0 s" in busy  # answered at +2 s, ended at +240 s
    assert " 13 " in busy  # the greeting, eleven turns and the failed one
    assert "answered (200)" in busy and "agent ended the call" in busy
    assert "not ended" in rows[1]
    assert "caller hung up" in rows[3] and "19.0 s" in rows[3]


def test_calls_since_and_limit(db: Path) -> None:
    rows = ok("calls", "--store", str(db), "--since", "2h").splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["abd-999@host", "abc-123@host"]
    rows = ok("calls", "--store", str(db), "--since", "45m").splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["abd-999@host"]
    rows = ok("calls", "--store", str(db), "--since", "7d", "--limit", "2").splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["abd-999@host", "abc-123@host"]
    # An ISO time with its offset: NOW is 2025-06-15 15:06:40 UTC.
    listing = json.loads(ok("calls", "--store", str(db), "--since", "2025-06-15T14:00+00:00", "--json"))
    assert [c["id"] for c in listing] == ["abd-999@host", "abc-123@host"]
    assert "no calls in" in ok("calls", "--store", str(db), "--since", "1m")
    result = invoke("calls", "--store", str(db), "--since", "yesterday")
    assert result.exit_code == 2 and "30m, 2h, 7d" in result.stderr


def test_calls_json(db: Path) -> None:
    listing = json.loads(ok("calls", "--store", str(db), "--json"))
    assert [c["id"] for c in listing] == ["abd-999@host", "abc-123@host", "old-call-1"]
    busy = listing[1]
    assert (busy["direction"], busy["to_number"], busy["turn_count"], busy["duration"]) == (
        "outbound", "+1555***4567", 13, 238.0,
    )  # fmt: skip
    assert (busy["outcome"], busy["sip_status"], busy["amd_result"]) == ("answered", 200, "human")
    assert "turns" not in busy and "caller_key" not in busy
    assert listing[0]["ended_at"] is None and listing[0]["turn_count"] == 0


def test_an_empty_store_is_a_friendly_line(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    CallStore(path).close()
    assert ok("calls", "--store", str(path)).strip() == f"no calls in {path}"
    assert json.loads(ok("calls", "--store", str(path), "--json")) == []
    assert ok("latency", "--store", str(path)).strip() == f"no measured turns in {path}"


def test_the_store_comes_from_the_config_else_the_default(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sipagent.toml"
    config.write_text(f'[store]\npath = "{db}"\n')
    assert len(json.loads(ok("calls", "--config", str(config), "--json"))) == 3
    monkeypatch.chdir(tmp_path)  # the default is data/calls.db under the working directory
    assert len(json.loads(ok("calls", "--json"))) == 3
    assert "abc-123@host" in ok("show", "abc")


def test_a_missing_store_is_one_line_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "calls.db"
    for command in (["calls"], ["show", "x"], ["latency"]):
        line = one_line_error(invoke(*command, "--store", str(missing)))
        assert line.startswith(f"Error: call store {missing} does not exist") and "--store PATH" in line
    assert not missing.parent.exists()
    line = one_line_error(invoke("calls", "--config", str(tmp_path / "missing.toml")))
    assert "does not exist" in line


def test_a_file_that_is_no_store_or_from_a_newer_release_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all, " * 100)
    assert "cannot be read" in one_line_error(invoke("calls", "--store", str(junk)))
    empty = tmp_path / "empty.db"
    with closing(sqlite3.connect(empty)) as conn:
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
    assert "is not a sipagent call store" in one_line_error(invoke("calls", "--store", str(empty)))
    newer = tmp_path / "newer.db"
    CallStore(newer).close()
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    assert f"schema version {SCHEMA_VERSION + 1}, newer" in one_line_error(
        invoke("latency", "--store", str(newer))
    )
    with pytest.raises(StoreSchemaError):
        StoreReader(newer)


# -------------------------------------------------------------------------------------- show


def test_show_prints_the_transcript_in_order(db: Path) -> None:
    text = ok("show", "abc-123@host", "--store", str(db))
    lines = text.splitlines()
    assert lines[0].startswith("abc-123@host") and "outbound to +1555***4567 from +15550000000" in lines[0]
    assert "route sales" in text and "answered +2.0 s after" in text
    assert "answering-machine detection: human after 1800 ms" in text

    def where(fragment: str) -> int:
        (index,) = [i for i, line in enumerate(lines) if fragment in line]
        return index

    # The greeting, the turns, the events between them, in the order they happened.
    order = [
        where("turn 0 (scripted)"), where("turn 2 "), where("tool lookup_order"), where("turn 3 "),
        where("key 5 from the caller"), where("turn 4 "), where("turn 5 "), where("barge-in in turn 5"),
        where("turn 99 "), where("transfer requested to billing"), where("transfer failed"), where("ended: "),
    ]  # fmt: skip
    assert order == sorted(order)
    assert "Hello, this is the shop." in lines[where("turn 0 (scripted)") + 1]
    turn1 = where("turn 1 ")
    assert "[512 ms · wait 201 · stt 103 · llm 157 · sentence 271 · tts 62]" in lines[turn1]
    assert "caller: caller line 1" in lines[turn1 + 1] and "agent:  agent line 1" in lines[turn1 + 2]
    assert '{"order":"42"} → ok 200 in 81 ms — result: shipped' in lines[where("tool lookup_order")]
    turn5 = where("turn 5 ")
    assert "agent:  Your order  (interrupted)" in lines[turn5 + 2]
    assert "would have said: Your order ships today." in lines[turn5 + 3]
    assert "line silenced 300 ms after the caller's voice began" in lines[where("barge-in in turn 5")]
    turn99 = where("turn 99 ")
    assert lines[turn99].strip() == "+200.0 s  turn 99 (failed)"  # nothing measured: no timings
    assert "error: llm: timed out" in text
    assert "transfer failed (SIP 486) — Busy Here" in text
    assert (
        lines[where("ended: ")].strip().startswith("+240.0 s  ended: answered (200) — agent ended the call")
    )


def test_show_json_has_everything(db: Path) -> None:
    call = json.loads(ok("show", "abc-123", "--store", str(db), "--json"))
    listed = json.loads(ok("calls", "--store", str(db), "--json"))
    assert call["call"] == listed[1]  # the call as `calls --json` lists it
    assert call["call"]["id"] == "abc-123@host" and call["call"]["duration"] == 238.0
    assert [t["turn"] for t in call["turns"]] == [0, *range(1, 12), 99]
    assert call["turns"][5]["interrupted"] is True and call["turns"][5]["agent_heard"] == "Your order"
    assert call["tool_calls"][0]["arguments"] == {"order": "42"} and call["tool_calls"][0]["ok"] is True
    assert [d["digit"] for d in call["dtmf"]] == ["5"]
    assert [b["turn"] for b in call["barge_ins"]] == [5]
    assert [t["state"] for t in call["transfers"]] == ["requested", "failed"]


def test_show_takes_a_unique_prefix(db: Path) -> None:
    assert ok("show", "old", "--store", str(db)).startswith("old-call-1")
    assert ok("show", "abd", "--store", str(db)).startswith("abd-999@host")
    line = one_line_error(invoke("show", "ab", "--store", str(db)))
    assert line == "Error: 'ab' begins 2 call ids: abd-999@host, abc-123@host (give more of it)"
    line = one_line_error(invoke("show", "zzz", "--store", str(db)))
    assert line == (
        f"Error: no call id begins with 'zzz' in {db}; the latest: abd-999@host, abc-123@host, old-call-1"
    )


def test_show_a_call_that_has_not_ended(db: Path) -> None:
    text = ok("show", "abd", "--store", str(db))
    assert "(no turns)" in text and "not ended" in text


# ----------------------------------------------------------------------------------- latency


def _expected(values: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    assert (quantiles[49], quantiles[89], quantiles[98]) == pytest.approx((p50, p90, p99))
    return float(p50), float(p90), float(p99)


def test_latency_percentiles_match_numpy_and_statistics(db: Path) -> None:
    result = json.loads(ok("latency", "--store", str(db), "--json"))
    measured = [400.0, *LATENCIES]  # the old call's turn and the busy call's, not the unmeasured ones
    assert result["turns"] == len(measured) and result["last"] == 100 and result["plot"] is None
    wire = result["latency_ms"]
    assert wire["n"] == len(measured)
    assert (wire["p50"], wire["p90"], wire["p99"]) == pytest.approx(_expected(measured), abs=0.051)
    # Each stage over the same turns: turn n's stage is base + step * n (see _turn).
    numbers = [1, *range(1, 12)]
    for stage, (base, step) in zip(
        STAGE_FIELDS, ((200, 1), (100, 3), (150, 7), (260, 11), (60, 2)), strict=True
    ):
        values = [base + step * n for n in numbers]
        got = result["stages_ms"][stage]
        assert (got["p50"], got["p90"], got["p99"]) == pytest.approx(_expected(values), abs=0.051), stage

    # --last: the most recent measured turns only (the old call's turn is the oldest).
    last5 = json.loads(ok("latency", "--store", str(db), "--last", "5", "--json"))["latency_ms"]
    assert last5["n"] == 5
    assert last5["p90"] == pytest.approx(_expected(LATENCIES[-5:])[1], abs=0.051)


def test_latency_table(db: Path) -> None:
    text = ok("latency", "--store", str(db), "--last", "3")
    lines = text.splitlines()
    assert lines[0] == "the last 3 measured turns (of 3 asked), in ms"
    p50, p90, p99 = _expected(LATENCIES[-3:])
    (wire,) = [line for line in lines if line.startswith("wire latency")]
    assert wire.split()[2:] == [f"{p50:.0f}", f"{p90:.0f}", f"{p99:.0f}", "3"]
    assert any(line.strip().startswith("speech to text") for line in lines)


def test_percentile_matches_numpy_on_awkward_sizes() -> None:
    rng = np.random.default_rng(7)
    for size in (1, 2, 3, 10, 101):
        values = [float(v) for v in rng.gamma(2.0, 300.0, size)]
        for q in (0, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_latency_plot_is_a_png(db: Path, tmp_path: Path) -> None:
    png = tmp_path / "latency.png"
    result = invoke("latency", "--store", str(db), "--plot", str(png))
    assert result.exit_code == 0 and f"wrote {png}" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    image = imread(png)
    assert image.shape[0] >= 400 and image.shape[1] >= 1000  # 12 x 4.8 in at 100 dpi
    assert float(image[..., :3].std()) > 0.05  # drawn on, not a blank canvas

    # With --json, stdout is the JSON alone; few turns still make a plot.
    few = tmp_path / "few.png"
    result = invoke("latency", "--store", str(db), "--last", "1", "--plot", str(few), "--json")
    assert json.loads(result.stdout)["plot"] == str(few) and few.stat().st_size > 10_000


def test_no_measured_turns_writes_no_plot(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with CallStore(path) as store:
        store.call_started("c1", direction="inbound", caller="a", callee="b", at=NOW)
        store.turn("c1", _turn(1, None), at=NOW + 1)
    png = tmp_path / "latency.png"
    result = invoke("latency", "--store", str(path), "--plot", str(png))
    assert result.exit_code == 0 and result.stdout.strip() == f"no measured turns in {path}"
    assert "nothing to plot" in result.stderr and not png.exists()


# --------------------------------------------------------------------------------- read-only


def test_reports_leave_a_stopped_servers_store_untouched(db: Path, tmp_path: Path) -> None:
    assert _side_files(db) == []  # closed: SQLite checkpointed and removed the -wal
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    ok("calls", "--store", str(db))
    ok("show", "abc", "--store", str(db))
    ok("latency", "--store", str(db), "--plot", str(tmp_path / "p.png"), "--json")
    assert _side_files(db) == []
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


def test_reports_read_a_store_while_a_server_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with CallStore(path) as store:
        store.call_started("live-1", direction="inbound", caller="a", callee="b", at=NOW)
        store.turn("live-1", _turn(1, 500.0), at=NOW + 1)
        store.flush()
        assert "live-1" in ok("calls", "--store", str(path))
        store.turn("live-1", _turn(2, 700.0), at=NOW + 2)
        store.flush()  # committed, still in the -wal: the report sees it
        assert Path(f"{path}-wal").exists()
        assert json.loads(ok("latency", "--store", str(path), "--json"))["latency_ms"]["n"] == 2
        store.turn("live-1", _turn(3, 900.0), at=NOW + 3)  # the writer goes on after a report
        store.flush()
        assert store.failed_writes == 0
    assert [t.turn for t in StoreReader(path).measured_turns()] == [1, 2, 3]


def test_the_reader_never_creates_a_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        StoreReader(tmp_path / "calls.db")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- --live


def test_live_options_do_not_mix_with_the_store(db: Path) -> None:
    result = invoke("calls", "--live", "--store", str(db))
    assert result.exit_code == 2 and "--live lists what the server holds" in result.stderr


def test_an_api_url_from_the_environment_does_not_make_calls_live(db: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["calls", "--store", str(db), "--json"],
                           env={"SIPAGENT_API_URL": "http://127.0.0.1:9"})  # fmt: skip
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3


def test_a_server_starting_during_a_read_makes_it_read_again(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with CallStore(path) as store:
        store.call_started("before", direction="inbound", caller="a", callee="b", at=NOW)
    reader = StoreReader(path)
    writers: list[CallStore] = []

    def count(conn: sqlite3.Connection) -> int:
        seen = int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
        if not writers:  # the first pass, on the file alone: a server starts and commits meanwhile
            writers.append(CallStore(path))
            writers[0].call_started("during", direction="inbound", caller="a", callee="b", at=NOW + 1)
            writers[0].flush()
        return seen

    try:
        assert reader._read(count) == 2  # read again, the shared way, seeing the -wal's commit
    finally:
        writers[0].close()
