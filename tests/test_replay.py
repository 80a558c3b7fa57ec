"""Replaying fixtures: the jitter buffer under impairments, and the ``sipagent replay`` contract."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sipagent.pcapio import read_udp, write_udp
from sipagent.replay.capture import load_caller_leg
from sipagent.replay.impair import Impairments
from sipagent.replay.runner import Replay
from sipagent.rtp import g711
from sipagent.rtp.frames import SAMPLES_PER_FRAME, AudioFrame, FrameKind
from sipagent.rtp.session import Tick

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IMPAIRED = Impairments(loss=0.05, jitter_ms=60.0, reorder=0.02, duplicate=0.02, seed=7)


def _frames_under(
    impairments: Impairments, name: str = "speech-librivox-0870.pcap"
) -> tuple[list[Tick], dict[int, bytes]]:
    leg = load_caller_leg(FIXTURES / name)
    replay = Replay(leg, impairments)
    session = replay.session
    session.start(0.0)
    arrivals = replay._arrivals
    ticks: list[Tick] = []
    index, now = 0, 0.0
    while now <= replay.duration:
        while index < len(arrivals) and arrivals[index][0] <= now:
            session.receive_rtp(arrivals[index][1], ("192.0.2.1", 4000), arrivals[index][0])
            index += 1
        session.handle_timer(now)
        while (tick := session.next_tick()) is not None:
            ticks.append(tick)
        now = round(now + 0.02, 9)
    sent = {p.packet.timestamp: p.packet.payload for p in leg.packets}
    return ticks, sent


def test_jitter_buffer_on_a_fixture_with_loss_jitter_reorder_and_duplicates() -> None:
    ticks, sent = _frames_under(IMPAIRED)
    # Continuous: exactly one frame per 20 ms tick, whatever the network did.
    assert all(abs(b.time - a.time - 0.02) < 1e-9 for a, b in itertools.pairwise(ticks))
    played = [t.inbound for t in ticks if t.inbound.timestamp is not None]
    stamps = [f.timestamp for f in played]
    # In order: sender timestamps only move forward (160 a frame; 320 where a frame was dropped to
    # follow drift, counted by the buffer).
    steps = np.diff(np.array(stamps, dtype=np.int64))
    assert np.all(steps > 0)
    kinds = {t.inbound.kind for t in ticks}
    assert FrameKind.CONCEALED in kinds, "5 % loss must be concealed, not played as silence"
    concealed = [f for f in played if f.kind is FrameKind.CONCEALED]
    voice = [f for f in played if f.kind is FrameKind.VOICE]
    # Concealment covers lost packets: every concealed frame's packet was lost or too late.
    delivered = {ts for ts in sent}
    assert all(f.timestamp in delivered for f in voice)
    # Quality against the clean decode, frame by frame by sender timestamp. Waveform SNR punishes
    # the phase of a concealed frame more than the ear does, so two figures: segmental SNR over
    # all played frames, and the log-spectral distance of concealed frames (zero fill as baseline).
    # Keyed by the frame timestamps the buffer reports (None never matches a sent packet).
    clean: dict[int | None, npt.NDArray[np.float64]] = {
        ts: g711.decode(payload, "PCMU").astype(np.float64) for ts, payload in sent.items()
    }
    scored = [f for f in played if f.timestamp in clean and len(clean[f.timestamp]) == SAMPLES_PER_FRAME]

    def segment_snr(frame: AudioFrame) -> float:
        reference = clean[frame.timestamp]
        error = float(np.sum((reference - frame.samples) ** 2))
        return float(np.clip(10 * np.log10((np.sum(reference**2) + 1) / (error + 1)), -10, 35))

    def lsd(reference: np.ndarray, heard: np.ndarray) -> float:
        window = np.hanning(SAMPLES_PER_FRAME)
        floor = 32.768  # -60 dBFS keeps silent bins from dominating
        a = 20 * np.log10(np.abs(np.fft.rfft(reference * window)) + floor)
        b = 20 * np.log10(np.abs(np.fft.rfft(heard * window)) + floor)
        return float(np.sqrt(np.mean((a - b) ** 2)))

    seg_snr = float(np.mean([segment_snr(f) for f in scored]))
    concealed = [f for f in scored if f.kind is FrameKind.CONCEALED]
    concealed_lsd = float(np.mean([lsd(clean[f.timestamp], f.samples.astype(np.float64)) for f in concealed]))
    zero_fill_lsd = float(np.mean([lsd(clean[f.timestamp], np.zeros(SAMPLES_PER_FRAME)) for f in concealed]))
    # Measured over seeds 1-7: segmental SNR 28.6-30.3 dB; concealed LSD 9-11 dB vs 31-33 dB for
    # zero fill (silence holes).
    assert seg_snr > 26.0, seg_snr
    assert concealed_lsd < 14.0 and zero_fill_lsd > 25.0, (concealed_lsd, zero_fill_lsd)
    assert len(concealed) >= 0.02 * len(played)
    # A voice frame is the decoded packet exactly, except where the buffer smoothed a join: the
    # first frame after a concealment, and frames next to a delay adjustment (crossfaded so the
    # step does not click). Measured: 3 of ~330 on this seed.
    after_voice = [b for a, b in itertools.pairwise(played) if a.kind is b.kind is FrameKind.VOICE]
    exact = sum(np.array_equal(f.samples, clean[f.timestamp]) for f in after_voice)
    assert exact >= 0.97 * len(after_voice), (exact, len(after_voice))


def _replay_json(*args: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "sipagent", "replay", "--media-only", "--json", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("name", ["dtmf-1234.pcap", "recorded-sipp-dtmf.pcap"])
def test_replay_json_lines_report_dtmf_digits(name: str) -> None:
    events = _replay_json(str(FIXTURES / name))
    assert all("event" in e for e in events)
    assert "".join(str(e["digit"]) for e in events if e["event"] == "dtmf") == "1234#"
    assert events[-1]["event"] == "summary"


def test_replay_reports_speech_segments_with_times() -> None:
    events = _replay_json(str(FIXTURES / "two-turns.pcap"))
    starts = [e for e in events if e["event"] == "speech_start"]
    ends = [e for e in events if e["event"] == "speech_end"]
    assert len(starts) == len(ends) >= 2
    long_segments = [e for e in ends if float(str(e["duration"])) > 2.0]
    assert len(long_segments) == 2, ends  # the two turns, each several seconds of speech
    assert all(float(str(s["time"])) < float(str(e["time"])) for s, e in zip(starts, ends, strict=True))


def test_replay_with_impairments_is_deterministic() -> None:
    args = [str(FIXTURES / "speech-cards-001.pcap"), "--loss", "0.05", "--jitter-ms", "60", "--seed", "3"]
    assert _replay_json(*args) == _replay_json(*args)


def test_replay_rtp_only_capture_by_ssrc(tmp_path: Path) -> None:
    rtp_only = [d for d in read_udp(FIXTURES / "dtmf-1234.pcap") if d.payload[:1] == b"\x80"]
    write_udp(tmp_path / "rtp.pcap", rtp_only)
    ssrc = int.from_bytes(rtp_only[0].payload[8:12], "big")
    events = _replay_json(str(tmp_path / "rtp.pcap"), "--ssrc", hex(ssrc))
    assert "".join(str(e["digit"]) for e in events if e["event"] == "dtmf") == "1234#"
    missing = subprocess.run(
        [sys.executable, "-m", "sipagent", "replay", str(tmp_path / "rtp.pcap"), "--ssrc", "0x1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode != 0 and "no RTP with SSRC" in missing.stderr


def test_replay_refuses_files_that_are_not_captures(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.pcap"
    bogus.write_text("not a capture")
    result = subprocess.run(
        [sys.executable, "-m", "sipagent", "replay", str(bogus)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "not a pcap file" in result.stderr


def test_realtime_replay_hears_the_same_as_fast() -> None:
    name = str(FIXTURES / "dtmf-1234.pcap")
    fast = _replay_json(name)
    real = _replay_json(name, "--realtime")
    digits = ["".join(str(e["digit"]) for e in run if e["event"] == "dtmf") for run in (fast, real)]
    assert digits == ["1234#", "1234#"]
