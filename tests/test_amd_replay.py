"""``sipagent replay CAPTURE --amd``: the command's contract, run in-process with click's CliRunner.

The far end's leg of an outbound capture (found from the 200 OK's SDP), analysed from the 200 OK on
(never the early media), on the simulated clock: JSON Lines ``amd`` and ``beep`` events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipagent.cli import main
from sipagent.pcapio import read_udp, write_udp
from sipagent.replay.amd_replay import load_far_leg
from sipagent.voice.silero_vad import DEFAULT_SILERO_MODEL
from tests.model_gate import require_models

AMD_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "amd"
FIXTURES = AMD_FIXTURES.parent


@pytest.fixture(autouse=True)
def _silero() -> None:
    require_models(DEFAULT_SILERO_MODEL)


def manifest(name: str) -> dict[str, object]:
    entries = json.loads((AMD_FIXTURES / "manifest.json").read_text())["fixtures"]
    return next(e for e in entries if e["file"] == f"{name}.pcap")


def replay_json(path: Path, *args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(main, ["replay", str(path), "--amd", "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_a_voicemail_with_a_beep() -> None:
    events = replay_json(AMD_FIXTURES / "m-vm-sam-beep.pcap")
    assert [e["event"] for e in events] == ["amd", "beep"]
    amd, beep = events
    assert list(amd)[:4] == ["event", "result", "after_ms", "reason"]
    assert amd["result"] == "machine"
    assert isinstance(amd["after_ms"], float) and 1000 <= amd["after_ms"] <= 3000
    truth = manifest("m-vm-sam-beep")["beep"]
    assert isinstance(truth, dict)
    assert list(beep)[:2] == ["event", "at_ms"]
    assert abs(float(beep["at_ms"]) - truth["at_s"] * 1000) <= 100  # type: ignore[arg-type]
    assert beep["freq_hz"] == pytest.approx(1000.0, abs=2)


def test_a_live_answer_after_early_media_ringback() -> None:
    # 3 s of ringback before the 200 OK: never analysed; "Hello?" 0.4 s after the answer.
    events = replay_json(AMD_FIXTURES / "h-ringback-hello.pcap")
    assert [e["event"] for e in events] == ["amd"]
    assert events[0]["result"] == "human"
    speech = manifest("h-ringback-hello")["speech_s"]
    assert isinstance(speech, list)
    end_ms = speech[-1][1] * 1000
    # From the 200 OK: the greeting's end plus the 800 ms of silence, give or take the VAD's view of
    # the word's fading tail (the manifest's activity runs to 35 dB under its peak) and the jitter
    # buffer's delay. Counted from the first packet of early media it would be 3 s more.
    after_ms = float(events[0]["after_ms"])  # type: ignore[arg-type]
    assert end_ms + 800 - 150 <= after_ms <= end_ms + 800 + 200


def test_a_carrier_intercept_with_sit_tones() -> None:
    events = replay_json(AMD_FIXTURES / "c-sit-not-in-service.pcap")
    assert [e["event"] for e in events] == ["sit", "amd"]
    assert events[1]["result"] == "machine" and events[1]["reason"] == "SIT"


def test_impairments_apply_and_the_answer_is_found() -> None:
    far = load_far_leg(AMD_FIXTURES / "h-ringback-hello.pcap")
    entry = manifest("h-ringback-hello")
    # The 200 OK sits where the early media ends, measured from the callee's first packet.
    assert far.answered_at == pytest.approx(-float(entry["first_rtp_s"]), abs=0.005)  # type: ignore[arg-type]
    assert any("200 OK's SDP" in note for note in far.notes)
    events = replay_json(
        AMD_FIXTURES / "m-vm-lossy-beep.pcap", "--loss", "0.02", "--jitter-ms", "20", "--seed", "3"
    )
    assert events[0]["result"] == "machine"
    assert [e["event"] for e in events].count("beep") == 1


def test_an_inbound_capture_uses_its_caller_leg(tmp_path: Path) -> None:
    # sipagent answered this one: no RTP from the 200 OK's address, so the caller is analysed.
    events = replay_json(FIXTURES / "speech-cards-001.pcap")
    assert [e["event"] for e in events] == ["amd"]
    assert events[0]["result"] == "human"
    # RTP only (no SIP): analysed from the first packet.
    rtp_only = tmp_path / "rtp-only.pcap"
    write_udp(rtp_only, [d for d in read_udp(AMD_FIXTURES / "h-hello.pcap") if d.src[1] != 5060])
    assert load_far_leg(rtp_only).answered_at == 0.0
    assert replay_json(rtp_only)[0]["result"] == "human"


def test_text_output_and_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["replay", str(AMD_FIXTURES / "m-vm-short-beep.pcap"), "--amd"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "200 OK at" in lines[0]
    assert any(line.startswith("amd ") and "result=machine" in line for line in lines)
    assert any(line.startswith("beep ") for line in lines)
    result = runner.invoke(main, ["replay", str(AMD_FIXTURES / "h-hello.pcap"), "--amd", "--realtime"])
    assert result.exit_code == 2 and "--amd" in result.output
    result = runner.invoke(main, ["replay", str(AMD_FIXTURES / "h-hello.pcap"), "--amd", "--ssrc", "x"])
    assert result.exit_code == 2
