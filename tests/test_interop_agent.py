"""sipp (a real UAC) calls ``sipagent serve --mode agent`` on loopback and hears the agent answer.

The caller's audio is human speech (the LibriVox fixture, decoded and re-sent by sipp from a pcap),
then a few seconds of faint line noise while it waits. On the wire (a loopback capture) the agent's
RTP must stay silent while the caller talks and carry a voiced reply after the caller stops; the
server logs the turn with its transcript and latency. Real models, real SIP peer, real sockets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from peers.audio import write_g711_pcap
from peers.capture import LoopbackCapture
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, resolve_model_path
from tests.model_gate import require_models

pytestmark = pytest.mark.peer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
_RTP_HEADER = 12


def _speech_then_noise(seconds_after: float) -> tuple[np.ndarray, float]:
    leg = load_caller_leg(FIXTURES / "speech-librivox-0880.pcap")
    table = decode_table(leg.codec)
    speech = np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])
    noise = np.random.default_rng(7).normal(0, 20, round(seconds_after * 8000)).astype(np.int16)
    return np.concatenate([speech, noise]), speech.size / 8000


def test_sipp_caller_hears_the_agent_reply_after_speaking(tmp_path: Path) -> None:
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_LLM_MODEL))
    audio, speech_s = _speech_then_noise(6.0)
    pcap = tmp_path / "caller.pcap"
    write_g711_pcap(pcap, audio)
    with SipagentServer(tmp_path / "server", mode="agent") as server:
        media_port = free_port_block(4)
        with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
            result = run_sipp(
                scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp",
                media_port=media_port, service="agent", keys={"pcap": str(pcap)},
                duration_ms=round(audio.size / 8000 * 1000) + 500, timeout=60,
            )  # fmt: skip
        result.assert_ok()
        log = server.log()
    replies = capture.rtp_packets(dst_port=media_port)
    assert len(replies) > 200, capture.describe()  # silence fill keeps the line alive from the start
    first = capture.rtp_packets(src_port=media_port)[0].timestamp  # the caller starts talking
    peaks = [(p.timestamp - first, int(np.abs(table_decode(p.payload)).max())) for p in replies]
    while_caller_talks = [peak for at, peak in peaks if at < speech_s - 0.2]
    after = [at for at, peak in peaks if at >= speech_s and peak > 2000]
    assert max(while_caller_talks) < 200, "the agent talked over the caller"
    assert len(after) >= 25, "no voiced reply (half a second at least) after the caller stopped"
    assert after[0] - speech_s < 3.0, after[0] - speech_s  # answered promptly, even under test load
    assert "turn 1 latency" in log, log[-3000:]
    assert "young man" in log.lower(), log[-3000:]  # the transcript, logged with the turn


def table_decode(packet: bytes) -> np.ndarray:
    return decode_table("PCMU").take(np.frombuffer(packet[_RTP_HEADER:], np.uint8))
