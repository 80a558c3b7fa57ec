"""The call store (sipagent/product/store.py): schema and migrations, writes and reads, permissions,
retention with recordings, and a ``kill -9`` in the middle of a call's third turn.

Every time the store records here is given by the test (``at=`` or a fake clock), so nothing
depends on the wall clock; the crash test waits on the child's own "committed" line, not a delay.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from sipagent.product.store import (
    CallStore,
    StoreError,
    StoreSchemaError,
    recording_files,
    recording_prefix,
)
from sipagent.product.store_schema import MIGRATIONS, SCHEMA_VERSION
from sipagent.voice.conversation import Outcome, TurnRecord

DAY = 86400.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _record(n: int, *, latency: float | None = 500.0, **kw: object) -> TurnRecord:
    record = TurnRecord(
        turn=n, transcript=f"caller {n}", reply=f"agent {n}", latency_ms=latency, stt_ms=120.0
    )
    for key, value in kw.items():
        setattr(record, key, value)
    return record


def test_a_new_file_gets_every_step_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    CallStore(path).close()
    with closing(_db(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"calls", "turns", "barge_ins", "tool_calls", "dtmf", "transfers"} <= tables
    assert "calls_started" in indexes


def test_an_older_file_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with closing(_db(path)) as conn:  # what a release with only the first step wrote
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO calls (id, direction, started_at) VALUES ('old', 'inbound', 5.0)")
        conn.commit()
    with CallStore(path) as store:
        assert [c.id for c in store.calls()] == ["old"]
    with closing(_db(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'calls_started'").fetchone()[0] == 1
        )


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with closing(_db(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    with pytest.raises(StoreSchemaError, match=rf"schema version {SCHEMA_VERSION + 1}, newer") as info:
        CallStore(path)
    assert isinstance(info.value, StoreError)
    with closing(_db(path)) as conn:  # left as it was
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        CallStore(path)


def test_writes_are_visible_after_flush(tmp_path: Path) -> None:
    with CallStore(tmp_path / "calls.db", clock=lambda: 1000.0) as store:
        store.call_started("c1", direction="inbound", caller="+15551230001", callee="+15559870002",
                           route="support", trunk="main", mode="conversation", at=100.0)  # fmt: skip
        store.call_answered("c1", at=101.0)
        store.amd("c1", "human", after_ms=1800.0)
        store.turn("c1", _record(1, latency=400.0), said="agent 1, in full")
        interrupted = _record(2, latency=600.0, outcome=Outcome.INTERRUPTED, caller_onset_at=12.0,
                              stop_decided_at=12.25, reply="agent", said="agent two, cut")  # fmt: skip
        store.turn("c1", interrupted, at=110.0)
        store.turn("c1", _record(3, latency=None, scripted=True, transcript="ignored"))
        store.tool_call(
            "c1", "lookup", arguments={"order": "42"}, ok=True, status=200, duration_ms=80.5, result="ok"
        )
        store.dtmf("c1", "5", at=105.0)
        store.dtmf("c1", "#", direction="sent", at=106.0)
        store.transfer("c1", state="requested", target="sales")
        store.transfer("c1", state="failed", sip_status=486, reason="Busy Here")
        store.call_ended("c1", reason="caller hung up", sip_status=None, outcome="answered", at=130.0)
        store.call_started("c2", direction="outbound", caller=None, callee="+1555***0003", at=200.0)
        store.flush()

        assert [c.id for c in store.calls()] == ["c2", "c1"]
        assert [c.id for c in store.calls(since=150.0)] == ["c2"]
        assert [c.id for c in store.calls(limit=1)] == ["c2"]
        assert store.calls()[0].turns == ()  # the list does not load a call's contents
        assert store.call("nope") is None

        call = store.call("c1")
        assert call is not None
        assert (call.direction, call.from_number, call.to_number, call.route, call.trunk, call.mode) == (
            "inbound", "+15551230001", "+15559870002", "support", "main", "conversation",
        )  # fmt: skip
        assert (call.started_at, call.answered_at, call.ended_at) == (100.0, 101.0, 130.0)
        assert (call.end_reason, call.sip_status, call.outcome) == ("caller hung up", None, "answered")
        assert (call.amd_result, call.amd_after_ms) == ("human", 1800.0)

        one, two, three = call.turns
        assert (one.caller, one.agent_said, one.agent_heard, one.interrupted, one.latency_ms) == (
            "caller 1", "agent 1, in full", "agent 1", False, 400.0,
        )  # fmt: skip
        assert (one.at, one.stt_ms, one.outcome) == (1000.0, 120.0, "answered")
        assert (two.interrupted, two.outcome, two.agent_heard, two.agent_said, two.at) == (
            True,
            "interrupted",
            "agent",
            "agent two, cut",  # the record's own whole reply when the service passes none
            110.0,
        )
        assert (three.caller, three.scripted, three.latency_ms) == ("", True, None)
        assert [(b["turn"], b["decision_ms"]) for b in call.barge_ins] == [(2, 250.0)]
        (tool,) = call.tool_calls
        assert (tool["name"], tool["arguments"], tool["ok"], tool["status"], tool["result"]) == (
            "lookup", {"order": "42"}, True, 200, "ok",
        )  # fmt: skip
        assert [(d["digit"], d["direction"]) for d in call.dtmf] == [("5", "received"), ("#", "sent")]
        assert [(t["state"], t["target"], t["sip_status"]) for t in call.transfers] == [
            ("requested", "sales", None), ("failed", None, 486),
        ]  # fmt: skip

        # The last N measured turns, oldest first (turn 3 has no latency).
        assert store.turn_latencies(last=1) == [400.0]  # at 1000.0, after turn 2's 110.0
        assert store.turn_latencies(last=5) == [600.0, 400.0]


def test_a_failed_write_is_counted_and_the_next_ones_go_on(tmp_path: Path) -> None:
    with CallStore(tmp_path / "calls.db") as store:
        store.turn("never-started", _record(1))  # no such call: the foreign key refuses it
        store.call_started("c1", direction="inbound", caller="a", callee="b", at=1.0)
        store.turn("c1", _record(1))
        store.flush()
        assert store.failed_writes == 1
        call = store.call("c1")
        assert call is not None and [t.turn for t in call.turns] == [1]


def test_rename_carries_the_rows(tmp_path: Path) -> None:
    with CallStore(tmp_path / "calls.db") as store:
        store.call_started("pending-1", direction="outbound", caller="a", callee="b", at=1.0)
        store.dtmf("pending-1", "1", at=2.0)
        store.rename("pending-1", "real-call-id")
        store.turn("real-call-id", _record(1))
        store.flush()
        call = store.call("real-call-id")
        assert call is not None and len(call.dtmf) == 1 and len(call.turns) == 1
        assert store.call("pending-1") is None


def test_close_commits_what_is_queued_and_refuses_more(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = CallStore(path)
    store.call_started("c1", direction="inbound", caller="a", callee="b", at=1.0)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.dtmf("c1", "1")
    with CallStore(path) as again:
        assert [c.id for c in again.calls()] == ["c1"]


def test_files_are_0600_and_directories_0700_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "data" / "store" / "calls.db"
    with _umask(0), CallStore(path) as store:
        store.call_started("c1", direction="inbound", caller="a", callee="b", at=1.0)
        store.flush()
        assert _mode(tmp_path / "data") == 0o700
        assert _mode(path.parent) == 0o700
        for name in ("calls.db", "calls.db-wal", "calls.db-shm"):
            assert _mode(path.parent / name) == 0o600, name


def test_existing_loose_permissions_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    os.chmod(directory, 0o755)
    path = directory / "calls.db"
    with closing(_db(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE other (x)")  # -wal and -shm stay while this connection is open
        for name in ("calls.db", "calls.db-wal", "calls.db-shm"):
            os.chmod(directory / name, 0o644)
        CallStore(path).close()
        assert _mode(directory) == 0o700
        for name in ("calls.db", "calls.db-wal", "calls.db-shm"):
            assert _mode(directory / name) == 0o600, name


def test_purge_deletes_old_calls_with_their_recordings(tmp_path: Path) -> None:
    now = 100 * DAY
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def touch(prefix: Path, *legs: str) -> list[Path]:
        files = [prefix.with_name(f"{prefix.name}-{leg}.wav") for leg in legs]
        for file in files:
            file.write_bytes(b"RIFF")
        return files

    old_files = touch(recording_prefix(recordings, "old@host"), "caller", "agent")
    moved_files = touch(elsewhere / "old2", "both")
    new_files = touch(recording_prefix(recordings, "new@host"), "caller", "agent")
    # A neighbour whose name starts like an old call's is not one of its files.
    neighbour = touch(recordings / "old_host-x", "caller")

    with CallStore(tmp_path / "calls.db", clock=lambda: now) as store:
        store.call_started("old@host", direction="inbound", caller="a", callee="b", at=now - 40 * DAY)
        store.turn("old@host", _record(1))
        store.dtmf("old@host", "1")
        store.call_ended("old@host", reason="caller hung up", sip_status=None, outcome="answered",
                         at=now - 40 * DAY + 60)  # fmt: skip
        store.call_started("old2", direction="outbound", caller="a", callee="b", at=now - 31 * DAY,
                           recording=str(elsewhere / "old2"))  # fmt: skip
        store.call_started("new@host", direction="inbound", caller="a", callee="b", at=now - 29 * DAY)
        store.call_ended(
            "new@host", reason="caller hung up", sip_status=None, outcome="answered", at=now - 29 * DAY
        )

        assert store.purge(30, recordings) == 2
        assert [c.id for c in store.calls()] == ["new@host"]
        assert store.call("old@host") is None
        assert store.purge(30, recordings) == 0

    assert recording_files(recording_prefix(recordings, "old@host")) == []
    assert not any(f.exists() for f in old_files + moved_files)
    assert all(f.exists() for f in new_files + neighbour)
    with closing(_db(tmp_path / "calls.db")) as conn:  # the call's rows went with it
        for table in ("turns", "dtmf"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE call_id = 'old@host'").fetchone()[0] == 0


_CRASHING_CALL = textwrap.dedent(
    """
    import sys
    from sipagent.product.store import CallStore
    from sipagent.voice.conversation import TurnRecord

    store = CallStore(sys.argv[1])
    store.call_started("crash", direction="inbound", caller="+15551230001", callee="+15559870002", at=1.0)
    store.call_answered("crash", at=2.0)
    for n in (1, 2):
        record = TurnRecord(turn=n, transcript=f"caller {n}", reply=f"agent {n}", latency_ms=450.0 + n)
        store.turn("crash", record)
    store.flush()
    print("committed", flush=True)
    # The third turn is under way: the caller presses keys and the store keeps writing until killed.
    n = 0
    while True:
        store.dtmf("crash", "0123456789"[n % 10])
        store.flush()
        n += 1
        if n == 50:
            print("third turn", flush=True)
    """
)


def test_kill_9_during_the_third_turn_keeps_turns_1_and_2(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    repo = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_CALL, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "committed"
        assert child.stdout.readline().strip() == "third turn"  # writes are in flight
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    with closing(_db(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT turn, caller, agent_heard, latency_ms FROM turns ORDER BY turn"
        ).fetchall()
        assert rows == [(1, "caller 1", "agent 1", 451.0), (2, "caller 2", "agent 2", 452.0)]
        assert conn.execute("SELECT count(*) FROM dtmf").fetchone()[0] >= 50
    with CallStore(path) as store:  # and the server opens it again
        call = store.call("crash")
        assert call is not None and [t.turn for t in call.turns] == [1, 2] and call.ended_at is None
