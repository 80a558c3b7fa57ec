"""The agent acts, through the whole server (issue 15): ``sipagent serve`` with the OpenAI-compatible
backend pointed at a local scripted server (peers/openai_server.py) that streams ``tool_calls``, a
local webhook on loopback, and sipp as the caller pressing 4 2 #.

* The caller's keys reach the model as its turn ("The caller pressed 4 2 #.").
* The model says a few words and calls ``lookup_order``: the webhook gets schema-valid arguments; its
  result (or its failure: a 500, a timeout) goes back to the model in the next request, and the
  agent speaks from it; a slow webhook makes the agent say the filler (that none is said for a quick
  one is tests/test_conversation_actions.py's, on virtual time).
* The model then calls ``send_dtmf`` (RFC 4733 events on the wire, decoded from a capture) and
  ``end_call``: its words play, then our BYE.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peers.capture import LoopbackCapture
from peers.openai_server import Call, OpenAIServer, Text
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path
from sipagent.rtp.g711 import decode_table
from sipagent.voice.models import DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from sipagent.voice.stt import WhisperTranscriber
from tests.model_gate import require_models

pytestmark = pytest.mark.peer

KEYS = {
    f"d{i}": f"/usr/share/sip-tester/dtmf_2833_{key}.pcap" for i, key in ((1, "4"), (2, "2"), (3, "pound"))
}


@contextmanager
def webhook(behaviour: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A lookup service on loopback: ``ok``, ``slow`` (answers after 4 s: well past the 700 ms filler
    and the agent's first words, however slow a busy box speaks them), ``fail`` (500) or ``hang``
    (never within the tool's 6 s timeout). Yields its URL and the JSON bodies it received."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            if behaviour == "slow":
                time.sleep(4.0)
            if behaviour == "hang":
                time.sleep(8.0)
            status, body = (
                (500, b'{"error": "down"}') if behaviour == "fail" else (200, b'{"status": "shipped"}')
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/orders", received
    finally:
        server.shutdown()
        server.server_close()


def _config(llm_url: str, hook_url: str) -> str:
    return f"""
[llm]
backend = "openai"
[llm.openai]
base_url = "{llm_url}"
model = "test-model"

[[tools]]
name = "lookup_order"
description = "Find an order by its number."
url = "{hook_url}"
timeout = 6
[tools.parameters]
type = "object"
required = ["order"]
[tools.parameters.properties.order]
type = "string"
pattern = "^[0-9]+$"

[[routes]]
tools = ["lookup_order", "send_dtmf", "end_call"]
"""


def _events(capture: LoopbackCapture, port: int) -> list[int]:
    """RFC 4733 event codes we sent to ``port`` (each key once, however many packets carried it)."""
    codes: list[int] = []
    last: tuple[int, int] | None = None
    for packet in capture.rtp_packets(dst_port=port):
        payload = packet.payload
        if payload[1] & 0x7F != 101:
            continue
        timestamp = int.from_bytes(payload[4:8], "big")
        if (timestamp, payload[12]) != last:
            codes.append(payload[12])
            last = (timestamp, payload[12])
    return codes


@pytest.mark.parametrize("behaviour", ["ok", "slow", "fail", "hang"])
def test_keys_tools_and_the_end_of_the_call(tmp_path: Path, behaviour: str) -> None:
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_TTS_VOICE))
    with OpenAIServer() as llm, webhook(behaviour) as (hook_url, received):
        llm.script(Text("Checking."), Call("lookup_order", {"order": "42"}))
        llm.script(Text("Thank you, goodbye."), Call("send_dtmf", {"digits": "9"}), Call("end_call", {}))
        server = SipagentServer(tmp_path / "server", mode="agent", config_text=_config(llm.url, hook_url))
        with server:
            media_port = free_port_block(4)
            with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
                result = run_sipp(
                    scenario_path("uac_call_keys_wait_bye"), server.address, workdir=tmp_path / "sipp",
                    service="agent", media_port=media_port, keys=KEYS, timeout=40,
                )  # fmt: skip
            log = server.log()
        requests = llm.requests
    result.assert_ok()  # the caller got our BYE: end_call ended the call after its words
    first, second = requests[0], requests[1]
    assert first.tool_names == ["lookup_order", "send_dtmf", "end_call"]
    assert first.messages[-1] == {"role": "user", "content": "The caller pressed 4 2 #."}
    assert received == [{"order": "42"}]  # schema-valid arguments reached the webhook
    tool_message = second.messages[-1]
    assert tool_message["role"] == "tool"
    if behaviour in ("ok", "slow"):
        assert "shipped" in tool_message["content"]
    elif behaviour == "fail":
        assert "500" in tool_message["content"]
    else:
        assert "timed out" in tool_message["content"]
    assert _events(capture, media_port) == [9]  # send_dtmf: the key 9 on the wire
    table = decode_table("PCMU")
    audio = np.concatenate(
        [table.take(np.frombuffer(p.payload[12:], np.uint8)) for p in capture.rtp_packets(dst_port=media_port)
         if p.payload[1] & 0x7F == 0]
    )  # fmt: skip
    heard = (
        WhisperTranscriber(resolve_model_path(DEFAULT_STT_MODEL), cpu_threads=2)
        .transcribe(audio)
        .text.lower()
    )
    assert "check" in heard and "bye" in heard, heard
    if behaviour in ("slow", "hang"):
        assert "one moment" in heard, heard  # the filler kept the line alive while the tool was out
    assert "ended: agent ended the call" in log
    assert "lookup_order" in log  # the tool call is on the record
