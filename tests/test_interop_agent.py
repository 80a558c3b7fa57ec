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
    """The fixture's audio, then faint noise; and where its speech truly ends (the manifest's
    ground truth: the fixture runs on 0.7 s past it, and the agent may well answer in that time)."""
    import json

    name = "speech-librivox-0880.pcap"
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    speech = np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])
    noise = np.random.default_rng(7).normal(0, 20, round(seconds_after * 8000)).astype(np.int16)
    manifest = {f["file"]: f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
    return np.concatenate([speech, noise]), float(manifest[name]["turns"][0]["speech_end_s"])


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
    while_caller_talks = [peak for at, peak in peaks if at < speech_s]
    after = [at for at, peak in peaks if at >= speech_s and peak > 2000]
    assert max(while_caller_talks) < 200, "the agent talked over the caller"
    assert len(after) >= 25, "no voiced reply (half a second at least) after the caller stopped"
    assert after[0] - speech_s < 3.0, after[0] - speech_s  # answered promptly, even under test load
    assert "turn 1 latency" in log, log[-3000:]
    assert "young man" in log.lower(), log[-3000:]  # the transcript, logged with the turn


def table_decode(packet: bytes) -> np.ndarray:
    return decode_table("PCMU").take(np.frombuffer(packet[_RTP_HEADER:], np.uint8))


def _rtp_ts(payload: bytes) -> int:
    return int.from_bytes(payload[4:8], "big")


def test_baresip_caller_over_pub_noise_gets_a_spoken_reply(tmp_path: Path) -> None:
    """A real softphone plays human speech with real background noise (15 dB SNR) and the room's
    noise after it; the agent replies, and the wait the caller hears — from the packet carrying the
    true end of the speech to the agent's first voiced packet, on the wire — is logged (its bound is
    scripts/bench_latency.py's business, not a test's)."""
    import json

    from peers import skips
    from peers.audio import write_wav
    from peers.baresip import Baresip

    skips.require("baresip")
    skips.require_capture()
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_LLM_MODEL))
    name = "speech-noisy-librivox-0880.pcap"
    manifest = {f["file"]: f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
    truth = float(manifest[name]["turns"][0]["speech_end_s"])
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    speech = np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])
    room = speech[round((truth + 0.3) * 8000) :]  # the same pub after the speech, for 8 s more
    wav = write_wav(
        tmp_path / "mic.wav", np.concatenate([speech, np.resize(room, 8 * 8000)]), sample_rate=8000
    )
    with SipagentServer(tmp_path / "server", mode="agent") as server:
        baresip = Baresip(tmp_path / "baresip", audio_wav=wav, dial=f"sip:agent@{server.address}")
        ports = [*server.rtp_ports, *range(baresip.rtp_port_min, baresip.rtp_port_max + 1)]
        with LoopbackCapture(tmp_path / "capture", ports) as capture, baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=30)
            baresip.wait_for_event("CALL_CLOSED", timeout=60)  # the file ends, baresip hangs up
        log = server.log()
    caller_port = max(
        range(baresip.rtp_port_min, baresip.rtp_port_max + 1), key=lambda p: capture.rtp_count(src_port=p)
    )
    sent = capture.rtp_packets(src_port=caller_port)
    heard = capture.rtp_packets(dst_port=caller_port)
    assert sent and len(heard) > 200, capture.describe()
    base = _rtp_ts(sent[0].payload)
    end_on_wire = next(p.timestamp for p in sent if (_rtp_ts(p.payload) - base) / 8000 >= truth)
    voiced = [p.timestamp for p in heard if int(np.abs(table_decode(p.payload)).max()) > 2000]
    over_caller = [t for t in voiced if t < end_on_wire - 0.3]
    reply = [t for t in voiced if t >= end_on_wire]
    assert not over_caller, "the agent talked over the caller"
    assert len(reply) >= 25, "no voiced reply (half a second at least) after the caller stopped"
    latency_ms = (reply[0] - end_on_wire) * 1000
    turns = [line for line in log.splitlines() if "turn 1: {" in line]
    print(f"baresip over pub noise: {latency_ms:.0f} ms from the true end of speech to the reply;", *turns)
    assert "turn 1 latency" in log, log[-3000:]
    assert "young man" in log.lower(), log[-3000:]  # the transcript, logged with the turn
