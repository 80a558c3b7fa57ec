"""Memory per caller against a real server, real speech and a real SIP peer.

``sipagent serve`` answers on a route with ``memory = "per-caller"``; its language model is a local
OpenAI-compatible stub (peers/openai_server.py) so each request's instructions can be read. sipp
calls three times, speaking human speech each time: twice from +15550001111, once from
+15550002222. The second call's instructions carry what was said in the first (Whisper's
transcript as the store kept it, and the agent's reply); the other number's call carries nothing of
it; and the database file never holds either full number.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from peers.audio import write_g711_pcap
from peers.openai_server import OpenAIServer, Text
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.models import DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from tests.model_gate import require_models

pytestmark = pytest.mark.peer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIRST, OTHER = "+15550001111", "+15550002222"
REPLY = "Noted, your card is the ten of clubs."


def _speech_pcap(path: Path, name: str) -> float:
    """The fixture's speech and 6 s of faint line noise as a PCMU pcap; its length in seconds."""
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    speech = np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])
    noise = np.random.default_rng(3).normal(0, 20, 6 * 8000).astype(np.int16)
    audio = np.concatenate([speech, noise])
    write_g711_pcap(path, audio)
    return audio.size / 8000


def _call(server: SipagentServer, workdir: Path, number: str, fixture: str) -> None:
    seconds = _speech_pcap(workdir.with_suffix(".pcap"), fixture)
    run_sipp(
        scenario_path("uac_call_identity_speak"), server.address, workdir=workdir, service="agent",
        media_port=free_port_block(4), duration_ms=round(seconds * 1000) + 500, timeout=60,
        keys={"from_user": number, "identity": "X-Test: none", "pcap": str(workdir.with_suffix(".pcap"))},
    ).assert_ok()  # fmt: skip


def _ended_calls(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM calls WHERE ended_at IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _wait_ended(db: Path, count: int) -> None:
    deadline = time.monotonic() + 20
    while _ended_calls(db) < count:
        assert time.monotonic() < deadline, f"{count} calls never ended in the store"
        time.sleep(0.1)


def test_a_caller_who_rings_back_is_remembered_and_no_one_else(tmp_path: Path) -> None:
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_TTS_VOICE))
    with OpenAIServer(default=(Text(REPLY),)) as llm:
        config = f"""
[llm]
backend = "openai"
temperature = 0
[llm.openai]
base_url = "{llm.url}"
model = "test-model"

[[routes]]
instructions = "You are the card shop's assistant."
memory = "per-caller"
"""
        server = SipagentServer(tmp_path / "server", mode="agent", config_text=config)
        db = server.workdir / "calls.db"
        with server:
            _call(server, tmp_path / "first", FIRST, "speech-cards-001.pcap")
            _wait_ended(db, 1)  # only a finished call is remembered
            asked_first = len(llm.requests)
            _call(server, tmp_path / "again", FIRST, "speech-cards-002.pcap")
            _wait_ended(db, 2)
            asked_again = len(llm.requests)
            _call(server, tmp_path / "other", OTHER, "speech-cards-003.pcap")
            _wait_ended(db, 3)
            requests = list(llm.requests)
    assert 0 < asked_first < asked_again < len(requests), (asked_first, asked_again, len(requests))

    def system(index: int) -> str:
        return str(requests[index].messages[0]["content"])

    with sqlite3.connect(db) as conn:
        (first_said,) = conn.execute(
            "SELECT caller FROM turns JOIN calls ON calls.id = turns.call_id "
            "WHERE turns.caller != '' ORDER BY calls.started_at, turns.turn LIMIT 1"
        ).fetchone()
    assert first_said.strip(), first_said  # the first caller was heard
    # The first call: the route's instructions, nothing remembered.
    assert system(0).startswith("You are the card shop's assistant.") and first_said not in system(0)
    # Ringing back: the first call's words and the agent's reply come with the instructions.
    again = system(asked_first)
    assert first_said in again and REPLY in again, again
    # Another number: nothing of the first caller.
    other = system(asked_again)
    assert first_said not in other and REPLY not in other, other
    data = b"".join(path.read_bytes() for path in db.parent.glob("calls.db*"))
    assert FIRST.encode() not in data and OTHER.encode() not in data  # neither full number kept
