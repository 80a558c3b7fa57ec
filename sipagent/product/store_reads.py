"""Reading the call store (see :mod:`sipagent.product.store`) without ever writing to it.

The reports (``sipagent calls``, ``show``, ``latency``) and :class:`~sipagent.product.store.CallStore`'s
own reads go through :class:`StoreReader`. It opens the file as SQLite's read-only URI
(``file:…?mode=ro``): a report never creates a database, never runs a migration, and reads what is
committed while a server writes (WAL readers never wait for the writer, nor it for them).

**No side files.** A read-only connection to a WAL database whose ``-wal`` file is absent (the
server is stopped: its last close checkpointed and deleted it) would create ``-wal`` and ``-shm``
and, being read-only, could not remove them. So when there is no ``-wal`` the reader opens the file
as ``immutable`` (no locks, no side files): without a ``-wal`` every commit is in the main file.
A server that starts while we read writes to a new ``-wal`` and leaves the main file alone until a
checkpoint; to be sure, the read is done again the ordinary way if afterwards a ``-wal`` exists or
the file changed (its size, inode or time).

**Versions.** A file whose schema is newer than this sipagent's is refused
(:class:`StoreSchemaError`); an older one is read as it is (every step so far adds to the first: the
columns read here are all in step 1). A file that is not a call store, or that is missing, is a
:class:`StoreError` naming it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ..errors import SipAgentError
from .store_schema import SCHEMA_VERSION

__all__ = [
    "STAGES",
    "StoreError",
    "StoreReader",
    "StoreSchemaError",
    "StoredCall",
    "StoredTurn",
]

T = TypeVar("T")

#: How long a connection waits for another's lock (a purge, a second process) before failing (ms).
BUSY_TIMEOUT_MS = 5000
#: The oldest schema the reads here understand (a step that adds a column they read raises it).
MIN_READABLE_VERSION = 1
#: A turn's stage timings, in pipeline order (columns ``<stage>_ms``).
STAGES = ("end_of_turn_wait", "stt", "llm_first_token", "first_sentence", "tts_first_audio")
_BATCH = 500


class StoreError(SipAgentError):
    """The call store cannot be opened or used (names the file and what failed)."""


class StoreSchemaError(StoreError):
    """The database was written by a newer sipagent (its schema version is beyond this one's)."""


@dataclass(frozen=True)
class StoredTurn:
    """One turn of a stored call (times in Unix seconds, durations in ms)."""

    turn: int
    at: float
    caller: str
    agent_said: str | None
    agent_heard: str
    outcome: str
    interrupted: bool
    speculative: bool
    scripted: bool
    error: str | None
    end_of_turn_wait_ms: float | None
    stt_ms: float | None
    llm_first_token_ms: float | None
    first_sentence_ms: float | None
    tts_first_audio_ms: float | None
    latency_ms: float | None
    holds: int
    turn_complete_probability: float | None


@dataclass(frozen=True)
class StoredCall:
    """A stored call; :meth:`StoreReader.call` fills in what happened in it (the list reads do not)."""

    id: str
    direction: str
    from_number: str | None
    to_number: str | None
    route: str | None
    trunk: str | None
    mode: str | None
    started_at: float
    answered_at: float | None
    ended_at: float | None
    end_reason: str | None
    sip_status: int | None
    outcome: str | None
    amd_result: str | None
    amd_after_ms: float | None
    recording: str | None
    turns: tuple[StoredTurn, ...] = ()
    tool_calls: tuple[dict[str, Any], ...] = ()
    dtmf: tuple[dict[str, Any], ...] = ()
    barge_ins: tuple[dict[str, Any], ...] = ()
    transfers: tuple[dict[str, Any], ...] = ()


CALL_COLUMNS = (
    "id, direction, from_number, to_number, route, trunk, mode, started_at, answered_at, ended_at, "
    "end_reason, sip_status, outcome, amd_result, amd_after_ms, recording"
)
TURN_COLUMNS = (
    "turn, at, caller, agent_said, agent_heard, outcome, interrupted, speculative, scripted, error, "
    "end_of_turn_wait_ms, stt_ms, llm_first_token_ms, first_sentence_ms, tts_first_audio_ms, latency_ms, "
    "holds, turn_complete_probability"
)


class StoreReader:
    """Read-only access to the store at ``path`` (see the module docstring). Each read opens its own
    connection and sees one committed state; the methods block on the disk."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"call store {self.path} does not exist")
        if not self.path.is_file():
            raise StoreError(f"call store {self.path} is not a file")
        self.schema_version = self._read(_schema_version)
        if self.schema_version > SCHEMA_VERSION:
            raise StoreSchemaError(
                f"call store {self.path} has schema version {self.schema_version}, newer than this "
                f"sipagent's {SCHEMA_VERSION}: it was written by a newer release (upgrade sipagent)"
            )
        if self.schema_version < MIN_READABLE_VERSION:
            raise StoreError(f"call store {self.path} is not a sipagent call store (no schema in it)")

    def calls(self, since: float | None = None, limit: int = 50) -> list[StoredCall]:
        """Calls begun at or after ``since`` (Unix seconds; None: any), newest first, at most ``limit``."""
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {CALL_COLUMNS} FROM calls WHERE started_at >= ? "
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (float("-inf") if since is None else since, limit),
            ).fetchall()
        )
        return [StoredCall(*row) for row in rows]

    def turn_counts(self, call_ids: list[str]) -> dict[str, int]:
        """How many turns each of ``call_ids`` has (absent: none)."""

        def count(conn: sqlite3.Connection) -> dict[str, int]:
            counts: dict[str, int] = {}
            for start in range(0, len(call_ids), _BATCH):  # SQLite caps the parameters of a statement
                batch = call_ids[start : start + _BATCH]
                counts.update(
                    conn.execute(
                        f"SELECT call_id, count(*) FROM turns WHERE call_id IN ({_marks(len(batch))}) "
                        "GROUP BY call_id",
                        batch,
                    ).fetchall()
                )
            return counts

        return self._read(count) if call_ids else {}

    def ids_starting_with(self, prefix: str, limit: int = 20) -> list[str]:
        """The ids of the calls that begin with ``prefix`` (case as stored), newest first."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT id FROM calls WHERE substr(id, 1, ?) = ? ORDER BY started_at DESC, rowid DESC "
                "LIMIT ?",
                (len(prefix), prefix, limit),
            ).fetchall()
        )
        return [row[0] for row in rows]

    def call(self, call_id: str) -> StoredCall | None:
        """One call with its turns, tool calls, key presses, barge-ins and transfers (None: no such call)."""
        return self._read(lambda conn: _call(conn, call_id))

    def measured_turns(self, last: int = 100) -> list[StoredTurn]:
        """The ``last`` turns of any call that have a wire latency, oldest first."""
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {TURN_COLUMNS} FROM turns WHERE latency_ms IS NOT NULL "
                "ORDER BY at DESC, rowid DESC LIMIT ?",
                (last,),
            ).fetchall()
        )
        return [_turn(row) for row in reversed(rows)]

    def turn_latencies(self, last: int = 100) -> list[float]:
        """The wire latency (ms) of the ``last`` measured turns of any call, oldest first."""
        return [t.latency_ms for t in self.measured_turns(last) if t.latency_ms is not None]

    # -- inside ---------------------------------------------------------------------------------
    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one read transaction, with no side file created (see the module docstring)."""
        wal = Path(f"{self.path}-wal")
        if not wal.exists():
            before = _identity(self.path)
            try:
                with self._connection(immutable=True) as conn:
                    result = work(conn)
            except StoreError:
                if wal.exists() or _identity(self.path) != before:
                    return self._read_shared(work)  # a server wrote meanwhile: what we read may be torn
                raise
            if not wal.exists() and _identity(self.path) == before:
                return result
        return self._read_shared(work)

    def _read_shared(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._connection(immutable=False) as conn:
            return work(conn)

    @contextmanager
    def _connection(self, *, immutable: bool) -> Iterator[sqlite3.Connection]:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro{'&immutable=1' if immutable else ''}"
        try:
            with closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("BEGIN")  # one snapshot for every statement of the read
                yield conn
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"call store {self.path} cannot be read: {exc}") from exc


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _schema_version(conn: sqlite3.Connection) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version >= MIN_READABLE_VERSION:
        # A file another program versioned would fail later, on the first report: fail here.
        conn.execute("SELECT 1 FROM calls LIMIT 0")
    return version


def _call(conn: sqlite3.Connection, call_id: str) -> StoredCall | None:
    row = conn.execute(f"SELECT {CALL_COLUMNS} FROM calls WHERE id = ?", (call_id,)).fetchone()
    if row is None:
        return None
    turns = conn.execute(
        f"SELECT {TURN_COLUMNS} FROM turns WHERE call_id = ? ORDER BY turn", (call_id,)
    ).fetchall()
    events = {
        table: _dicts(conn.execute(f"SELECT * FROM {table} WHERE call_id = ? ORDER BY at, rowid", (call_id,)))
        for table in ("tool_calls", "dtmf", "barge_ins", "transfers")
    }
    tool_calls = tuple(
        {**item, "ok": None if item["ok"] is None else bool(item["ok"]),
         "arguments": None if item["arguments"] is None else json.loads(item["arguments"])}
        for item in events["tool_calls"]
    )  # fmt: skip
    return replace(
        StoredCall(*row),
        turns=tuple(_turn(t) for t in turns),
        tool_calls=tool_calls,
        dtmf=events["dtmf"],
        barge_ins=events["barge_ins"],
        transfers=events["transfers"],
    )


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _dicts(cursor: sqlite3.Cursor) -> tuple[dict[str, Any], ...]:
    names = [d[0] for d in cursor.description]
    return tuple(dict(zip(names, row, strict=True)) for row in cursor.fetchall())


def _turn(row: tuple[Any, ...]) -> StoredTurn:
    values = list(row)
    for i in (6, 7, 8):  # interrupted, speculative, scripted
        values[i] = bool(values[i])
    return StoredTurn(*values)
