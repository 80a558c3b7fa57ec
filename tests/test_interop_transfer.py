"""Blind transfer through the whole server (issue 15): a caller behind Kamailio presses a key that the
route's keypad menu maps to ``transfer:operator``; ``sipagent serve`` sends REFER to the configured
target, the caller (sipp) accepts and reports it with NOTIFYs, and our BYE follows. When the REFER is
refused (403) the call goes on and the caller hears why (transcribed from a loopback capture).

The sans-IO transfer itself is tested in tests/test_refer.py and against sipp/Kamailio with the bare
endpoint in tests/test_interop_refer.py; this is the product path: keys → conversation →
TransferCall → the route's named target → REFER → events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from peers import skips
from peers.capture import LoopbackCapture
from peers.kamailio import Kamailio
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path
from sipagent.rtp.g711 import decode_table
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, resolve_model_path
from sipagent.voice.stt import WhisperTranscriber
from tests.model_gate import require_models

pytestmark = pytest.mark.peer

OPERATOR = "sip:operator@127.0.0.1:5999"
KEY_0 = "/usr/share/sip-tester/dtmf_2833_0.pcap"
CONFIG = (
    '[[routes]]\ngreeting = "Hello."\n'
    f'transfer_targets = {{ operator = "{OPERATOR}" }}\n'
    'keys = { "0" = "transfer:operator" }\n'
)


def _server(tmp_path: Path) -> SipagentServer:
    return SipagentServer(tmp_path / "server", mode="agent", config_text=CONFIG)


def test_a_key_transfers_the_caller_through_kamailio_and_our_bye_follows(tmp_path: Path) -> None:
    skips.require("sipp", "kamailio")
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_LLM_MODEL))
    with _server(tmp_path) as server:
        with Kamailio(tmp_path / "kamailio", role="proxy", target=server.address) as kamailio:
            result = run_sipp(
                scenario_path("uac_key_refer"), kamailio.address, workdir=tmp_path / "sipp", service="agent",
                keys={"d1": KEY_0}, timeout=30,
            )  # fmt: skip
            refers = kamailio.dialog_requests("REFER")
        log = server.log()
    result.assert_ok()  # REFER accepted, both NOTIFYs answered 200, then our BYE
    (refer,) = [m for m in result.received() if not m.is_response and m.method == "REFER"]
    assert refer.header("Refer-To") == f"<{OPERATOR}>"
    assert result.requests_received() == ["REFER", "BYE"]
    assert refers, "the REFER did not go through Kamailio"
    assert "transfer succeeded (200)" in log
    assert "ended: transferred to operator" in log


def test_a_refused_transfer_keeps_the_call_and_the_caller_hears_why(tmp_path: Path) -> None:
    skips.require("sipp")
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_LLM_MODEL))
    with _server(tmp_path) as server:
        media_port = free_port_block(4)
        with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
            result = run_sipp(
                scenario_path("uac_key_refer_403"), server.address, workdir=tmp_path / "sipp",
                service="agent", media_port=media_port, keys={"d1": KEY_0}, timeout=30,
            )  # fmt: skip
        log = server.log()
    result.assert_ok()  # the caller hung up itself 1.5 s after refusing: we neither hung up nor retried
    assert result.requests_received() == ["REFER"]
    assert "transfer failed: 403 Forbidden" in log
    table = decode_table("PCMU")
    packets = capture.rtp_packets(dst_port=media_port)
    audio = np.concatenate([table.take(np.frombuffer(p.payload[12:], np.uint8)) for p in packets])
    heard = (
        WhisperTranscriber(resolve_model_path(DEFAULT_STT_MODEL), cpu_threads=2)
        .transcribe(audio)
        .text.lower()
    )
    assert "transfer" in heard and ("sorry" in heard or "could not" in heard or "couldn't" in heard), heard
