"""The call store: every call, turn, tool call, key press, barge-in and transfer, in one SQLite file.

**Off the media path.** The server's loop never touches the disk: :meth:`CallStore.call_started`,
:meth:`~CallStore.turn` and the other writes copy their arguments and put them on a queue that one
writer thread drains. Each write is its own transaction, committed at once, so a finished turn is
in the file as soon as the thread gets to it (microseconds to milliseconds later).

**Crash safety.** The file is in WAL mode with ``synchronous=NORMAL``: a commit appends its pages
to the ``-wal`` file with ``write()`` and returns; only checkpoints fsync. ``write()`` hands the
bytes to the kernel's page cache, which outlives the process, so ``kill -9`` (or any crash of the
process) loses no committed transaction, and a transaction cut in the middle is never seen (its
frames lack the commit marker; the WAL's checksums make the next opener ignore them). Only a crash of
the *machine* can lose the last commits before a checkpoint, never corrupt the file; ``fsync=True``
(``synchronous=FULL``) closes that window at one fsync per write.

**Schema.** :mod:`sipagent.product.store_schema` lists the steps; ``PRAGMA user_version`` counts
those a file has had. Opening an older file upgrades it; a newer one is refused
(:class:`StoreSchemaError`).

**Permissions.** Whatever the umask: a directory the store creates is 0700; the database and its
``-wal``/``-shm`` files are 0600 (an existing file with other bits is set back to 0600, an existing
directory open to others is tightened to 0700 unless it is the working directory, which is only
warned about).

**Phone numbers** are stored as the service passes them: the masking rule of the issue is about
logs, and the service decides whether the store keeps full numbers (say, for call-backs) or masked
ones.

Reads (:meth:`~CallStore.calls`, :meth:`~CallStore.call`, :meth:`~CallStore.turn_latencies`) go
through :class:`~sipagent.product.store_reads.StoreReader`, read-only and on their own connection:
WAL readers never wait for the writer, and the CLI reads a file a running server is writing (what
is committed) through the same class.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..voice.conversation import Outcome, TurnRecord
from .recordings import recordings_of
from .store_reads import TURN_COLUMNS, StoredCall, StoredTurn, StoreError, StoreReader, StoreSchemaError
from .store_schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "CallStore",
    "StoreError",
    "StoreSchemaError",
    "StoredCall",
    "StoredTurn",
    "recording_files",
    "recording_prefix",
]

log = logging.getLogger("sipagent.store")

DIR_MODE = 0o700
FILE_MODE = 0o600
#: How long the writer waits for another's lock (a purge, a second process) before failing (ms).
BUSY_TIMEOUT_MS = 5000
_DAY = 86400.0
#: The files a recording is made of (sipagent/rtp/recorder.py): ``<prefix>-<leg>.wav``.
RECORDING_LEGS = ("caller", "agent", "both")


@dataclass
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    done: Future[Any] | None = None


class CallStore:
    """The store (see the module docstring). Writes may come from any thread and never block; reads
    block on the disk (run them off the loop: the CLI, ``asyncio.to_thread``)."""

    def __init__(
        self, path: Path | str, *, fsync: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._synchronous = "FULL" if fsync else "NORMAL"
        #: Writes that failed (logged; the call goes on).
        self.failed_writes = 0
        self._prepare_directory()
        self._create_file()
        with closing(self._connect()) as conn:
            _migrate(conn, self.path)
        self._fix_permissions()
        self._reader = StoreReader(self.path)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="sipagent-store", daemon=True)
        self._thread.start()

    # -- writes (any thread, never block) ------------------------------------------------------
    def call_started(
        self,
        call_id: str,
        *,
        direction: Literal["inbound", "outbound"],
        caller: str | None,
        callee: str | None,
        route: str | None = None,
        trunk: str | None = None,
        mode: str | None = None,
        recording: str | None = None,
        at: float | None = None,
    ) -> None:
        """A call began (``caller``/``callee`` stored as given: see the module docstring)."""
        values = (call_id, direction, caller, callee, route, trunk, mode, self._at(at), recording)
        self._write(
            "INSERT OR REPLACE INTO calls (id, direction, from_number, to_number, route, trunk, mode, "
            "started_at, recording) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )

    def caller_key(self, call_id: str, key: str) -> None:
        """The keyed hash of the call's caller number (:mod:`sipagent.product.memory`; never the number)."""
        self._write("UPDATE calls SET caller_key = ? WHERE id = ?", (key, call_id))

    def call_answered(self, call_id: str, *, at: float | None = None) -> None:
        self._write("UPDATE calls SET answered_at = ? WHERE id = ?", (self._at(at), call_id))

    def amd(self, call_id: str, result: str, *, after_ms: float | None = None) -> None:
        """The answering-machine detector's verdict."""
        self._write(
            "UPDATE calls SET amd_result = ?, amd_after_ms = ? WHERE id = ?", (result, after_ms, call_id)
        )

    def recording(self, call_id: str, path: str) -> None:
        """The call is recorded to ``path``, its stereo WAV (decision 0031; rows of earlier releases
        hold the prefix of ``-caller.wav``, ``-agent.wav``…: :func:`recording_files` knows both)."""
        self._write("UPDATE calls SET recording = ? WHERE id = ?", (path, call_id))

    def rename(self, old: str, new: str) -> None:
        """A call placed before its Call-ID was known gets it (its rows follow)."""
        self._write("UPDATE calls SET id = ? WHERE id = ?", (new, old))

    def turn(
        self, call_id: str, record: TurnRecord, *, said: str | None = None, at: float | None = None
    ) -> None:
        """A finished turn: ``record`` is copied now (it may change after); ``said`` is the agent's
        whole reply (default ``record.said``; ``record.reply`` is what the caller heard)."""
        when = self._at(at)
        said = said if said is not None else (record.said or None)
        interrupted = record.outcome is Outcome.INTERRUPTED
        turn_row = (
            call_id, record.turn, when, "" if record.scripted else record.transcript, said, record.reply,
            record.outcome.value, interrupted, record.speculative, record.scripted, record.error,
            record.end_of_turn_wait_ms, record.stt_ms, record.llm_first_token_ms, record.first_sentence_ms,
            record.tts_first_audio_ms, record.latency_ms, record.holds, record.turn_complete_probability,
        )  # fmt: skip
        barge_in: tuple[Any, ...] | None = None
        if interrupted and record.caller_onset_at is not None:
            decision_ms = None
            if record.stop_decided_at is not None:
                decision_ms = (record.stop_decided_at - record.caller_onset_at) * 1000
            barge_in = (call_id, record.turn, when, decision_ms)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO turns (call_id, {TURN_COLUMNS}) VALUES ({_marks(19)})", turn_row
            )
            if barge_in is not None:
                conn.execute(
                    "INSERT INTO barge_ins (call_id, turn, at, decision_ms) VALUES (?, ?, ?, ?)", barge_in
                )

        self._submit(run)

    def tool_call(
        self,
        call_id: str,
        name: str,
        *,
        arguments: Any = None,
        ok: bool | None = None,
        status: int | None = None,
        duration_ms: float | None = None,
        error: str | None = None,
        result: str | None = None,
        at: float | None = None,
    ) -> None:
        """A tool the agent called (``arguments`` as JSON-able data, masked as the service masks it)."""
        args = None if arguments is None else json.dumps(arguments, ensure_ascii=False, default=str)
        self._write(
            "INSERT INTO tool_calls (call_id, at, name, arguments, ok, status, duration_ms, error, result) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (call_id, self._at(at), name, args, ok, status, duration_ms, error, result),
        )

    def dtmf(
        self,
        call_id: str,
        digit: str,
        *,
        direction: Literal["received", "sent"] = "received",
        at: float | None = None,
    ) -> None:
        self._write(
            "INSERT INTO dtmf (call_id, at, digit, direction) VALUES (?, ?, ?, ?)",
            (call_id, self._at(at), digit, direction),
        )

    def transfer(
        self,
        call_id: str,
        *,
        state: Literal["requested", "succeeded", "failed"],
        target: str | None = None,
        sip_status: int | None = None,
        reason: str | None = None,
        at: float | None = None,
    ) -> None:
        self._write(
            "INSERT INTO transfers (call_id, at, state, target, sip_status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (call_id, self._at(at), state, target, sip_status, reason),
        )

    def call_ended(
        self,
        call_id: str,
        *,
        reason: str,
        sip_status: int | None,
        outcome: str,
        at: float | None = None,
    ) -> None:
        self._write(
            "UPDATE calls SET ended_at = ?, end_reason = ?, sip_status = COALESCE(?, sip_status), "
            "outcome = ? WHERE id = ?",
            (self._at(at), reason, sip_status, outcome, call_id),
        )

    # -- the queue ------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Block until every write queued so far is committed (tests, shut-down; not on the loop)."""
        done: Future[Any] = Future()
        self._put(_Job(lambda conn: None, done))
        done.result(timeout)

    def purge(self, older_than_days: float, recordings_dir: Path | str | None = None) -> int:
        """Delete the calls that ended (or, never ended, began) more than ``older_than_days`` ago, with
        everything recorded of them and their recording files; returns how many calls went. Blocks
        until done (run it off the loop); runs on the writer thread, after the writes queued before."""
        cutoff = self._clock() - older_than_days * _DAY
        directory = None if recordings_dir is None else Path(recordings_dir)
        done: Future[int] = Future()
        self._put(_Job(lambda conn: _purge(conn, cutoff, directory), done))
        return done.result()

    def close(self) -> None:
        """Commit what is queued and stop the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads (block on the disk; see store_reads) ----------------------------------------------
    def calls(self, since: float | None = None, limit: int = 50) -> list[StoredCall]:
        """Calls begun at or after ``since`` (Unix seconds; None: any), newest first, at most ``limit``."""
        return self._reader.calls(since, limit)

    def call(self, call_id: str) -> StoredCall | None:
        """One call with its turns, tool calls, key presses, barge-ins and transfers (None: no such call)."""
        return self._reader.call(call_id)

    def turn_latencies(self, last: int = 100) -> list[float]:
        """The wire latency (ms) of the ``last`` measured turns of any call, oldest first."""
        return self._reader.turn_latencies(last)

    # -- inside ---------------------------------------------------------------------------------
    def _at(self, at: float | None) -> float:
        return self._clock() if at is None else at

    def _write(self, sql: str, values: tuple[Any, ...]) -> None:
        self._submit(lambda conn: conn.execute(sql, values))

    def _submit(self, run: Callable[[sqlite3.Connection], Any]) -> None:
        self._put(_Job(run))

    def _put(self, job: _Job) -> None:
        if self._closed:
            raise StoreError(f"call store {self.path} is closed")
        self._queue.put(job)

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error:
            log.exception("call store %s: cannot open for writing; calls will not be stored", self.path)
        while True:
            job = self._queue.get()
            if job is None:
                break
            if conn is None:
                self.failed_writes += 1
                if job.done is not None:
                    job.done.set_exception(StoreError(f"call store {self.path} could not be opened"))
                continue
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = job.run(conn)
                conn.execute("COMMIT")
            except Exception as exc:  # one bad write must not stop the others
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self.failed_writes += 1
                if job.done is not None:
                    job.done.set_exception(exc)
                else:
                    log.exception("call store %s: a write failed", self.path)
            else:
                if job.done is not None:
                    job.done.set_result(result)
        if conn is not None:
            conn.close()
        try:
            self._fix_permissions()
        except StoreError:
            log.exception("call store %s: on closing", self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"call store {self.path}: the file cannot be put in WAL mode (it is {mode})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"call store {self.path} cannot be opened: {exc}") from exc
        return conn

    def _prepare_directory(self) -> None:
        directory = self.path.parent
        missing: list[Path] = []
        at = directory
        while not at.exists():
            missing.append(at)
            at = at.parent
        try:
            for created in reversed(missing):
                created.mkdir(mode=DIR_MODE)
                os.chmod(created, DIR_MODE)  # mkdir's mode is masked by the umask
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & 0o077:
                if directory.resolve() == Path.cwd().resolve():
                    log.warning("call store %s: its directory is the working directory, open to others (%o)",
                                self.path, mode)  # fmt: skip
                else:
                    log.warning("call store %s: its directory was %o; set to 700", self.path, mode)
                    os.chmod(directory, DIR_MODE)
        except OSError as exc:
            raise StoreError(f"call store {self.path}: cannot prepare its directory: {exc}") from exc

    def _create_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            os.close(fd)
        except OSError as exc:
            raise StoreError(f"call store {self.path} cannot be created: {exc}") from exc
        self._fix_permissions()

    def _fix_permissions(self) -> None:
        """The database and its -wal/-shm files: 0600 (SQLite gives the side files the database's mode)."""
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
                if mode != FILE_MODE:
                    os.chmod(path, FILE_MODE)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"call store: cannot set {path} to 0600: {exc}") from exc


def recording_files(prefix: str | Path) -> list[Path]:
    """The files of a recording: a ``.wav`` path is the file itself (decision 0031); else the legs made
    to ``prefix`` by earlier releases, ``<prefix>-caller.wav``, ``-agent.wav``, ``-both.wav``."""
    prefix = Path(prefix)
    if prefix.suffix == ".wav":
        return [prefix] if prefix.is_file() else []
    candidates = (prefix.with_name(f"{prefix.name}-{leg}.wav") for leg in RECORDING_LEGS)
    return [p for p in candidates if p.exists()]


def recording_prefix(recordings_dir: Path, call_id: str) -> Path:
    """Where the server records a call (sipagent/call.py names the files after its Call-ID so)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id)[:80]
    return recordings_dir / safe


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Run the steps the file lacks, each in its own transaction (see store_schema)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreSchemaError(
            f"call store {path} has schema version {version}, newer than this sipagent's {SCHEMA_VERSION}: "
            "it was written by a newer release (upgrade sipagent, or point [store] path elsewhere)"
        )
    while version < SCHEMA_VERSION:
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have run it
            if version < SCHEMA_VERSION:
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"call store {path}: schema step {version + 1} failed: {exc}") from exc
        log.info("call store %s: schema at version %d", path, version)


def _statements(script: str) -> Iterable[str]:
    # The steps hold no ';' inside a statement (store_schema keeps it so).
    return [s.strip() for s in script.split(";") if s.strip()]


def _purge(conn: sqlite3.Connection, cutoff: float, recordings_dir: Path | None) -> int:
    # The files go first: a crash between leaves a row naming missing files, never a kept recording.
    rows = conn.execute(
        "SELECT id, recording FROM calls WHERE COALESCE(ended_at, started_at) < ?", (cutoff,)
    ).fetchall()
    for call_id, recording in rows:
        prefixes: list[Path] = []
        if recording:
            prefixes.append(Path(recording))
        if recordings_dir is not None:
            prefixes.append(recording_prefix(recordings_dir, call_id))
            prefixes.extend(recordings_of(recordings_dir, call_id))  # a row that lost its path
        for prefix in prefixes:
            for file in recording_files(prefix):
                with suppress(FileNotFoundError):
                    file.unlink()
        conn.execute("DELETE FROM calls WHERE id = ?", (call_id,))
    return len(rows)


def _marks(n: int) -> str:
    return ", ".join("?" * n)
