"""The call store's schema, as the list of steps that build it (see :mod:`sipagent.product.store`).

``PRAGMA user_version`` is the number of steps a database has had. Opening a file runs the steps it
lacks, each in its own transaction with the new version, so a crash between two leaves a file at
the earlier version that the next start carries on from. A step is never edited once released: a
change is a new step at the end. A file whose version is beyond :data:`SCHEMA_VERSION` was written
by a newer sipagent and is refused.

Times are Unix seconds (REAL, wall clock); durations are milliseconds.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = """
CREATE TABLE calls (
    id          TEXT PRIMARY KEY,
    direction   TEXT NOT NULL,           -- inbound | outbound
    from_number TEXT,                    -- as the service passed it (masked or not)
    to_number   TEXT,
    route       TEXT,
    trunk       TEXT,
    mode        TEXT,
    started_at  REAL NOT NULL,
    answered_at REAL,
    ended_at    REAL,
    end_reason  TEXT,
    sip_status  INTEGER,
    outcome     TEXT,                    -- answered | busy | no-answer | rejected | failed
    amd_result  TEXT,                    -- human | machine | ... (None: no detection)
    amd_after_ms REAL,
    recording   TEXT                     -- the recording's WAV file, if recorded
);
CREATE TABLE turns (
    call_id     TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE ON UPDATE CASCADE,
    turn        INTEGER NOT NULL,
    at          REAL NOT NULL,
    caller      TEXT NOT NULL,           -- what the caller said (empty for a scripted turn)
    agent_said  TEXT,                    -- the agent's whole reply, when the service knows it
    agent_heard TEXT NOT NULL,           -- what the caller heard of it
    outcome     TEXT NOT NULL,           -- answered | interrupted | unanswered | failed
    interrupted INTEGER NOT NULL,
    speculative INTEGER NOT NULL,
    scripted    INTEGER NOT NULL,
    error       TEXT,
    end_of_turn_wait_ms REAL,
    stt_ms      REAL,
    llm_first_token_ms REAL,
    first_sentence_ms REAL,
    tts_first_audio_ms REAL,
    latency_ms  REAL,                    -- on the wire: end of speech to first voiced packet out
    holds       INTEGER NOT NULL,
    turn_complete_probability REAL,
    PRIMARY KEY (call_id, turn)
);
CREATE TABLE barge_ins (
    call_id     TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE ON UPDATE CASCADE,
    turn        INTEGER NOT NULL,
    at          REAL NOT NULL,
    decision_ms REAL                     -- caller's voice onset to the line silenced
);
CREATE TABLE tool_calls (
    id          INTEGER PRIMARY KEY,
    call_id     TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE ON UPDATE CASCADE,
    at          REAL NOT NULL,
    name        TEXT NOT NULL,
    arguments   TEXT,                    -- JSON, as the service passed it (masked)
    ok          INTEGER,
    status      INTEGER,
    duration_ms REAL,
    error       TEXT,
    result      TEXT
);
CREATE TABLE dtmf (
    id          INTEGER PRIMARY KEY,
    call_id     TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE ON UPDATE CASCADE,
    at          REAL NOT NULL,
    digit       TEXT NOT NULL,
    direction   TEXT NOT NULL            -- received | sent
);
CREATE TABLE transfers (
    id          INTEGER PRIMARY KEY,
    call_id     TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE ON UPDATE CASCADE,
    at          REAL NOT NULL,
    state       TEXT NOT NULL,           -- requested | succeeded | failed
    target      TEXT,
    sip_status  INTEGER,
    reason      TEXT
);
"""

_V2 = """
CREATE INDEX calls_started ON calls(started_at);
CREATE INDEX turns_at ON turns(at);
CREATE INDEX barge_ins_call ON barge_ins(call_id);
CREATE INDEX tool_calls_call ON tool_calls(call_id);
CREATE INDEX dtmf_call ON dtmf(call_id);
CREATE INDEX transfers_call ON transfers(call_id);
"""

# Memory per caller (decision 0028): calls.caller_key is HMAC-SHA256(meta "caller_key_secret", the
# caller's E.164 number) in hex, so a caller's earlier calls can be found with no full number stored;
# the secret is 32 random bytes made once per database here (SQLite's randomblob: ChaCha20 seeded from
# the OS), so keys differ between stores and cannot be looked up in a table of hashed numbers.
_V3 = """
ALTER TABLE calls ADD COLUMN caller_key TEXT;
CREATE INDEX calls_caller_key ON calls(caller_key, route, started_at);
CREATE TABLE meta (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('caller_key_secret', lower(hex(randomblob(32))));
"""

#: Step *n* (from 1) takes a database from version *n - 1* to *n*.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)
