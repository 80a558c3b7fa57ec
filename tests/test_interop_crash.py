"""``kill -9`` of a real ``sipagent serve`` in the middle of a call's third turn loses no finished turn.

sipp calls the agent and speaks three times (human speech fixtures, each followed by long enough a
pause for a reply). As soon as the call store holds turn 2 (read through a read-only connection, as a
report would, while the server writes) and the caller has begun its third utterance, the server
process gets SIGKILL: no shutdown, no flush. The database must then hold turns 1 and 2 with what was
said, pass ``PRAGMA integrity_check``, and open in the call store again (which replays the WAL).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peers.audio import write_g711_pcap
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import SippProcess, scenario_path
from sipagent.product.store import CallStore
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from tests.model_gate import require_models

pytestmark = pytest.mark.peer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: The caller's three utterances, each followed by this many seconds of faint line noise. The third
#: is the long one: the window in which the server is killed.
UTTERANCES = (("speech-cards-001.pcap", 14.0), ("speech-librivox-0880.pcap", 14.0),
              ("speech-librivox-0870.pcap", 10.0))  # fmt: skip


def _speech(name: str) -> np.ndarray:
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])


def _caller_audio() -> tuple[np.ndarray, float]:
    """Three utterances with pauses, and where (seconds from the start) the third one begins."""
    rng = np.random.default_rng(11)
    parts: list[np.ndarray] = []
    third_at = 0.0
    for index, (name, pause) in enumerate(UTTERANCES):
        if index == 2:
            third_at = sum(part.size for part in parts) / 8000
        parts += [_speech(name), rng.normal(0, 20, round(pause * 8000)).astype(np.int16)]
    return np.concatenate(parts), third_at


def _stored_turns(db: Path) -> list[int]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return [row[0] for row in conn.execute("SELECT turn FROM turns ORDER BY turn")]
    except sqlite3.OperationalError:
        return []  # not created yet, or busy for a moment: ask again


def _logged_turn(log: str, turn: int) -> dict[str, Any]:
    """The turn record the server logged (``call … turn N: {...}``, the record as a dict)."""
    match = re.search(rf" turn {turn}: (\{{'turn': {turn}, .*\}})$", log, re.MULTILINE)
    assert match is not None, f"turn {turn} not logged:\n{log[-4000:]}"
    logged: dict[str, Any] = ast.literal_eval(match.group(1))
    return logged


def test_kill_9_during_the_third_turn_keeps_turns_one_and_two(tmp_path: Path) -> None:
    require_models(
        resolve_model_path(DEFAULT_STT_MODEL) / "model.bin",
        resolve_model_path(DEFAULT_LLM_MODEL),
        resolve_model_path(DEFAULT_TTS_VOICE),
    )
    audio, third_at = _caller_audio()
    pcap = tmp_path / "caller.pcap"
    write_g711_pcap(pcap, audio)
    server = SipagentServer(tmp_path / "server", mode="agent")
    db = server.workdir / "calls.db"
    with server:
        sipp = SippProcess(
            scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp",
            media_port=free_port_block(4), service="agent", keys={"pcap": str(pcap)},
            duration_ms=round(audio.size / 8000 * 1000) + 500, timeout=120,
        )  # fmt: skip
        sipp.start()
        try:
            started = time.monotonic()
            # Turn 2 on disk and the third utterance under way (the caller's clock is sipp's: it
            # plays from the answer, a moment after it starts, so this errs on the late side).
            deadline = started + third_at + 60
            while not (2 in _stored_turns(db) and time.monotonic() - started > third_at + 1.0):
                assert time.monotonic() < deadline, f"turn 2 never reached the store:\n{server.log()[-4000:]}"
                time.sleep(0.05)
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            killed_with = server.process.returncode
            log = server.log()
        finally:
            sipp.stop()
    assert killed_with == -signal.SIGKILL

    # The database as the crash left it (WAL and all): sound, and the finished turns are in it.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT turn, caller, agent_heard FROM turns ORDER BY turn").fetchall()
        (ended_at,) = conn.execute("SELECT ended_at FROM calls").fetchone()
    turns = [turn for turn, _, _ in rows]
    assert turns[:2] == [1, 2] and 3 not in turns, rows  # the third was cut short by the kill
    # Exactly what the server reported of each finished turn before it died (its log line per turn;
    # the words themselves are Whisper's business, which a loaded box can make a mess of).
    for turn, caller, heard in rows[:2]:
        logged = _logged_turn(log, turn)
        assert (caller, heard) == (logged["transcript"], logged["reply"]), (rows, logged)
        assert caller.strip() and heard.strip(), rows  # the caller spoke and heard a reply
    assert ended_at is None  # nobody lived to write the end
    with CallStore(db) as store:  # and the store opens it again as ever
        (call,) = store.calls()
        assert [turn.turn for turn in store.call(call.id).turns][:2] == [1, 2]  # type: ignore[union-attr]
