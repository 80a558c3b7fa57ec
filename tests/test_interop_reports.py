"""A baresip call with human speech, then the reports: ``calls``, ``show`` and ``latency --plot``.

baresip calls ``sipagent serve --mode agent`` and plays two utterances (LibriVox and a card name,
with pauses for the replies), then hangs up. Meanwhile a WebSocket on the control API (what
``sipagent tail`` reads) records every event streamed. Afterwards the reports read the call store
the server wrote: ``calls`` lists the call, ``show`` prints its turns with what was said and
each latency, ``latency --plot`` prints the percentiles and writes a PNG histogram; and the store
holds exactly what the API streamed: the same call, the same transcripts and replies, the same
latencies, the same end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from peers.audio import write_wav
from peers.sipagent_proc import SipagentServer
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from tests.model_gate import require_models

pytestmark = pytest.mark.peer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOKEN = "reports-token-0123456789"


def _speech(name: str) -> np.ndarray:
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])


def _sipagent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipagent", *args], capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "SIPAGENT_API_TOKEN": TOKEN},
    )  # fmt: skip


def _read_until_ended(socket: ClientConnection, into: list[dict[str, Any]]) -> None:
    for message in socket:
        event = json.loads(message)
        into.append(event)
        if event.get("type") == "call_ended":
            return


def test_a_baresip_call_in_the_reports_matches_the_events_streamed(tmp_path: Path) -> None:
    from peers import skips
    from peers.baresip import Baresip

    skips.require("baresip")
    require_models(
        resolve_model_path(DEFAULT_STT_MODEL) / "model.bin",
        resolve_model_path(DEFAULT_LLM_MODEL),
        resolve_model_path(DEFAULT_TTS_VOICE),
    )
    noise = np.random.default_rng(5).normal(0, 20, 14 * 8000).astype(np.int16)
    mic = np.concatenate(
        [_speech("speech-librivox-0880.pcap"), noise, _speech("speech-cards-001.pcap"), noise]
    )
    wav = write_wav(tmp_path / "mic.wav", mic, sample_rate=8000)
    server = SipagentServer(tmp_path / "server", mode="agent", env={"SIPAGENT_API_TOKEN": TOKEN})
    with server:
        # Subscribed before the call exists, so the stream has all of it (the API's own WebSocket,
        # as `sipagent tail` reads it).
        ws_url = server.api_url.replace("http://", "ws://") + "/v1/events"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with connect(ws_url, additional_headers=headers, open_timeout=10) as events_socket:
            streamed: list[dict[str, Any]] = []
            reader = threading.Thread(target=_read_until_ended, args=(events_socket, streamed), daemon=True)
            reader.start()
            baresip = Baresip(tmp_path / "baresip", audio_wav=wav, dial=f"sip:agent@{server.address}")
            with baresip:
                baresip.wait_for_event("CALL_ESTABLISHED", timeout=30)
                baresip.wait_for_event("CALL_CLOSED", timeout=90)  # the file ends, baresip hangs up
            reader.join(timeout=30)
        assert not reader.is_alive(), streamed
    db = server.workdir / "calls.db"

    # calls: the call is listed (table and JSON).
    listed = _sipagent("calls", "--store", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    (call,) = json.loads(listed.stdout)
    call_id = call["id"]
    table = _sipagent("calls", "--store", str(db))
    assert table.returncode == 0 and call_id[:8] in table.stdout, table.stdout

    # show: the turns, what was said and each latency.
    shown = _sipagent("show", call_id, "--store", str(db))
    assert shown.returncode == 0, shown.stderr
    detail: dict[str, Any] = json.loads(_sipagent("show", call_id, "--store", str(db), "--json").stdout)
    turns = detail["turns"]
    latencies = [turn["latency_ms"] for turn in turns if turn["latency_ms"] is not None]
    assert len(latencies) >= 2, turns
    assert all(f"{round(ms)}" in shown.stdout for ms in latencies), shown.stdout
    for turn in turns:  # each turn's words, as stored, are in the transcript shown
        assert turn["caller"][:30] in shown.stdout and turn["agent_heard"][:30] in shown.stdout, shown.stdout
    assert any("young man" in t["caller"].lower() or "clubs" in t["caller"].lower() for t in turns), turns

    # latency --plot: the percentiles and a PNG with the histogram.
    png = tmp_path / "latency.png"
    latency = _sipagent("latency", "--store", str(db), "--plot", str(png))
    assert latency.returncode == 0, latency.stderr
    assert "p50" in latency.stdout and "p90" in latency.stdout and "p99" in latency.stdout, latency.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # The store holds what the API streamed, no more, no less.
    events = [event for event in streamed if event.get("call_id") == call_id]
    assert events and events[0]["type"] == "call_started" and events[-1]["type"] == "call_ended", events
    by_turn = {turn["turn"]: turn for turn in turns}
    heard = {e["turn"]: e["text"] for e in events if e["type"] == "transcript"}
    said = {e["turn"]: e for e in events if e["type"] == "agent_text"}
    wire = {e["turn"]: e["wire_ms"] for e in events if e["type"] == "turn_latency"}
    assert heard == {n: t["caller"] for n, t in by_turn.items() if t["caller"]}
    assert {n: e["text"] for n, e in said.items()} == {
        n: t["agent_said"] for n, t in by_turn.items() if t["agent_said"]
    }
    assert {n: e["interrupted"] for n, e in said.items()} == {
        n: bool(by_turn[n]["interrupted"]) for n in said
    }
    assert wire == {
        n: pytest.approx(t["latency_ms"], abs=0.06) for n, t in by_turn.items() if t["latency_ms"] is not None
    }
    assert detail["call"]["end_reason"] == events[-1]["reason"]
    assert detail["call"]["direction"] == "inbound" and detail["call"]["outcome"] == "answered"
