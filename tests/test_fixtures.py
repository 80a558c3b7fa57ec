"""The whole-call captures in ``fixtures/`` are what ``fixtures/manifest.json`` says they are.

Each fixture is read with :func:`sipagent.pcapio.read_udp` and checked against its manifest entry:
the INVITE's SDP names the caller RTP endpoint, the caller leg has the stated packet count, strictly
increasing sequence numbers and 20 ms timestamp spacing, DTMF calls carry their digits (RFC 4733
payloads parsed here, independently of sipagent's DTMF code), speech is audible over a quiet but
non-zero noise floor, and ``scripts/make_fixtures.py`` rebuilds a fixture byte for byte.

Every speech-bearing fixture carries per-turn ground truth (``speech_start_s``/``speech_end_s``,
measured on the clean 16 kHz source by ``scripts/speech_truth.py``): checked here against the audio
in the capture (speech up to the end, the line's noise floor after it), and, for the noisy fixtures,
their SNR is measured in the capture against their clean twin's.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from peers.audio import ulaw_decode
from sipagent.pcapio import UdpDatagram, read_udp
from sipagent.rtp.packet import RtpPacket, is_rtcp_packet
from sipagent.sip.errors import RemoteProtocolError
from sipagent.sip.message import Request, Response, parse_message
from sipagent.sip.sdp import parse_sdp
from tests.model_gate import require_models

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
SCRIPT = REPO / "scripts" / "make_fixtures.py"
SPEECH_DIR = REPO.parent / "shared" / "speech"
ALIGNER_MODEL = REPO / "models" / "whisper-tiny.en"  # scripts/speech_truth.py's cross-check
MAX_TOTAL_BYTES = 15 * 1024 * 1024
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
DTMF_DIGITS = "0123456789*#ABCD"


def _manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    return entries


ENTRIES = _manifest()
BY_FILE = {e["file"]: e for e in ENTRIES}


def _endpoint(entry: dict[str, Any], key: str) -> tuple[str, int]:
    return entry[key]["address"], int(entry[key]["port"])


@cache
def _datagrams(file: str) -> tuple[UdpDatagram, ...]:
    return tuple(read_udp(FIXTURES / file))


@dataclass(frozen=True)
class Sent:
    time: float
    packet: RtpPacket


def _leg(file: str, src: tuple[str, int], dst: tuple[str, int]) -> list[Sent]:
    return [
        Sent(d.time, RtpPacket.parse(d.payload))
        for d in _datagrams(file)
        if d.src == src and d.dst == dst and not is_rtcp_packet(d.payload)
    ]


def _caller_leg(entry: dict[str, Any]) -> list[Sent]:
    return _leg(entry["file"], _endpoint(entry, "caller_rtp"), _endpoint(entry, "agent_rtp"))


def _sip(file: str) -> list[tuple[UdpDatagram, Request | Response]]:
    messages = []
    for d in _datagrams(file):
        if not d.payload or d.payload[0] & 0xC0 == 0x80:  # RTP/RTCP version 2; SIP starts with ASCII
            continue
        try:
            messages.append((d, parse_message(d.payload)))
        except RemoteProtocolError:
            continue
    return messages


def _unwrap(values: list[int], modulus: int) -> list[int]:
    """Extended sequence numbers / timestamps (RFC 3550 A.1), so a wrap is not a step back."""
    out = values[:1]
    for value in values[1:]:
        step = (value - out[-1]) % modulus
        out.append(out[-1] + (step - modulus if step > modulus // 2 else step))
    return out


@dataclass(frozen=True)
class Event:
    digit: str
    end: bool
    duration: int


def _event(payload: bytes) -> Event:
    """RFC 4733 §2.3: event (8 bits), E R volume (1+1+6), duration (16)."""
    assert len(payload) == 4, payload
    return Event(DTMF_DIGITS[payload[0]], bool(payload[1] & 0x80), int.from_bytes(payload[2:4], "big"))


def _pcm(packets: list[Sent]) -> npt.NDArray[np.float64]:
    audio = [s.packet.payload for s in packets if s.packet.payload_type == 0]
    return ulaw_decode(b"".join(audio)).astype(np.float64)


def _frame_dbfs(pcm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    frames = pcm[: len(pcm) // SAMPLES_PER_PACKET * SAMPLES_PER_PACKET].reshape(-1, SAMPLES_PER_PACKET)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-3) / 32767), dtype=np.float64)


# --- the set as a whole ---------------------------------------------------------------------------


def test_manifest_lists_existing_files_and_the_set_is_small() -> None:
    files = [e["file"] for e in ENTRIES]
    assert len(files) == len(set(files))
    for file in files:
        assert (FIXTURES / file).is_file(), file
    on_disk = {p.name for p in FIXTURES.glob("*.pcap")}
    assert on_disk == set(files), "a pcap in fixtures/ without a manifest entry, or the reverse"
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())  # noise/ too
    assert total < MAX_TOTAL_BYTES


def test_every_fixture_the_script_makes_is_in_the_manifest_and_readme() -> None:
    listed = subprocess.run(
        [sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    made = {line.split()[0] + ".pcap" for line in listed if line.strip()}
    synthetic = {e["file"] for e in ENTRIES if not e["recorded"]}
    assert made == synthetic
    readme = (FIXTURES / "README.md").read_text()
    for entry in ENTRIES:
        assert f"`{entry['file']}`" in readme, f"{entry['file']} missing from fixtures/README.md"


# --- per fixture ----------------------------------------------------------------------------------


@pytest.mark.parametrize("file", sorted(BY_FILE))
def test_invite_offers_the_caller_leg_and_the_call_completes(file: str) -> None:
    entry = BY_FILE[file]
    messages = _sip(file)
    invites = [(d, m) for d, m in messages if isinstance(m, Request) and m.method == "INVITE"]
    assert invites, "no INVITE"
    datagram, invite = invites[0]
    assert (datagram.src, datagram.dst) == (_endpoint(entry, "caller_sip"), _endpoint(entry, "agent_sip"))
    assert invite.call_id() == entry["call_id"]
    offer = parse_sdp(invite.body)
    audio = next(m for m in offer.media if m.media == "audio")
    connection = offer.media_connection(audio)
    assert connection is not None
    assert (connection.address, audio.port) == _endpoint(entry, "caller_rtp")
    assert {0, 101} <= set(audio.payload_types())
    answers = [m for _, m in messages if isinstance(m, Response) and m.status == 200]
    assert [a.cseq().method for a in answers][:1] == ["INVITE"]
    answer = parse_sdp(answers[0].body)
    answer_connection = answer.media_connection(answer.media[0])
    assert answer_connection is not None
    assert (answer_connection.address, answer.media[0].port) == _endpoint(entry, "agent_rtp")
    methods = [m.method for _, m in messages if isinstance(m, Request)]
    assert "ACK" in methods and "BYE" in methods
    assert answers[-1].cseq().method == "BYE"


@pytest.mark.parametrize("file", sorted(BY_FILE))
def test_caller_leg_count_sequence_and_20ms_clock(file: str) -> None:
    entry = BY_FILE[file]
    leg = _caller_leg(entry)
    assert len(leg) == entry["packet_count"]
    assert len({s.packet.ssrc for s in leg}) == 1
    event_pt = entry.get("event_payload_type")
    sequence = _unwrap([s.packet.sequence_number for s in leg], 1 << 16)
    for i in range(1, len(leg)):
        if sequence[i] > sequence[i - 1]:
            continue
        # sipp's RFC 2833 pcaps resend the end packet with the same sequence number.
        repeat = leg[i].packet.payload == leg[i - 1].packet.payload and leg[i].packet.payload_type == event_pt
        assert entry.get("rtp_end_retransmit_same_seq") and repeat, f"sequence step back at packet {i}"
        assert _event(leg[i].packet.payload).end
    timestamps = _unwrap([s.packet.timestamp for s in leg], 1 << 32)
    audio = [(s, ts) for s, ts in zip(leg, timestamps, strict=True) if s.packet.payload_type != event_pt]
    events = [(s, ts) for s, ts in zip(leg, timestamps, strict=True) if s.packet.payload_type == event_pt]
    first_time, first_ts = leg[0].time, timestamps[0]
    # Within a recording, scheduling jitter of the real peer; in a synthetic call, < 1 ms by construction.
    tolerance = 0.060 if entry["recorded"] else 0.002
    for (prev, prev_ts), (cur, cur_ts) in itertools.pairwise(audio):
        step = cur_ts - prev_ts
        assert step > 0 and step % SAMPLES_PER_PACKET == 0, f"timestamp step {step}"
        if cur.packet.sequence_number == (prev.packet.sequence_number + 1) & 0xFFFF:
            assert step == SAMPLES_PER_PACKET  # no event in between: exactly 20 ms
    for sent, ts in audio:  # RTP time follows the capture clock
        assert abs((sent.time - first_time) - (ts - first_ts) / 8000) < tolerance
    for _, ts in events:  # an event starts on the 20 ms grid of the audio
        assert (ts - first_ts) % SAMPLES_PER_PACKET == 0
    if audio:
        assert audio[0][0].packet.marker  # start of the first talkspurt
    if not entry["recorded"]:
        gaps = [b.time - a.time for a, b in itertools.pairwise(leg)]
        assert min(gaps) > 0.018 and max(gaps) < 0.022


@pytest.mark.parametrize("file", sorted(f for f, e in BY_FILE.items() if "digits" in e))
def test_dtmf_fixtures_carry_their_digits(file: str) -> None:
    entry = BY_FILE[file]
    leg = _caller_leg(entry)
    event_pt = entry["event_payload_type"]
    groups: dict[int, list[tuple[int, Event]]] = {}
    for index, sent in enumerate(leg):
        if sent.packet.payload_type == event_pt:
            groups.setdefault(sent.packet.timestamp, []).append((index, _event(sent.packet.payload)))
    digits = ""
    for packets in groups.values():
        events = [e for _, e in packets]
        assert len({e.digit for e in events}) == 1
        durations = [e.duration for e in events]
        assert durations == sorted(durations) and durations[0] >= 0
        ends = [e for e in events if e.end]
        assert len(ends) == 3 and events[-3:] == ends, "the end packet is sent 3 times, last"
        assert leg[packets[0][0]].packet.marker  # RFC 4733 §2.5.1.3: marker on an event's first packet
        digits += events[0].digit
        if not entry["recorded"]:
            spec = next(s for s in entry["events"] if s["digit"] == events[0].digit)
            assert ends[0].duration == spec["duration_ms"] * 8
            first, last = packets[0][0], packets[-1][0]
            # Audio pauses during the event: its packets are consecutive on the leg.
            assert last - first + 1 == len(packets)
            assert leg[first].time - leg[0].time == pytest.approx(spec["at_s"], abs=0.002)
    assert digits == entry["digits"]


SPEECH = sorted(f for f, e in BY_FILE.items() if "transcript" in e and "digits" not in e)


@pytest.mark.parametrize("file", SPEECH)
def test_speech_fixtures_are_audible_over_a_nonzero_noise_floor(file: str) -> None:
    entry = BY_FILE[file]
    levels = _frame_dbfs(_pcm(_caller_leg(entry)))
    assert levels.max() > -30, "no loud frame: silent capture?"
    assert (levels > -40).sum() * 0.02 >= 0.4, "less than 0.4 s of speech-level audio"
    if "speech_at_s" in entry:
        lead = levels[: round(entry["speech_at_s"][0] / 0.02)]
        # Silence-level, except under the real background of a noisy fixture (checked below).
        assert len(lead) and lead.max() < (-20 if "snr_db" in entry else -40), "the lead-in is too loud"
        assert lead.min() > -75, "the lead-in is noise, not digital zeros"


def test_two_turns_has_a_quiet_pause_between_two_loud_turns() -> None:
    entry = BY_FILE["two-turns.pcap"]
    levels = _frame_dbfs(_pcm(_caller_leg(entry)))
    first, second = entry["turns"]
    pause = levels[round(first["voice_activity_s"][1] / 0.02) : round(second["voice_activity_s"][0] / 0.02)]
    assert len(pause) * 0.02 >= entry["pause_s"]
    assert pause.max() < -40 and pause.min() > -75
    for turn in entry["turns"]:
        start, end = (round(t / 0.02) for t in turn["voice_activity_s"])
        assert levels[start:end].max() > -30


def test_tone_sweep_tones_are_at_their_frequency_and_level() -> None:
    entry = BY_FILE["tone-sweep.pcap"]
    pcm = _pcm(_caller_leg(entry))
    for segment in entry["segments"]:
        part = pcm[round(segment["start_s"] * 8000) : round(segment["end_s"] * 8000)]
        if segment["kind"] == "silence":
            assert not part.any()
        elif segment["kind"] == "tone":
            inner = part[400:-400]  # past the 10 ms fades
            spectrum = np.abs(np.fft.rfft(inner * np.hanning(len(inner))))
            peak_hz = np.argmax(spectrum) * 8000 / len(inner)
            assert peak_hz == pytest.approx(segment["freq_hz"], abs=5)
            level = 20 * math.log10(np.sqrt(2) * np.sqrt(np.mean(inner * inner)) / 32767)
            assert level == pytest.approx(segment["level_dbfs"], abs=0.5)


# --- turns and the phone agent's fixtures -----------------------------------------------------------

FRAME_S = 0.02
VOICE_DBFS = -40.0  # the manifest's voice activity: 20 ms frames above this


@cache
def _levels(file: str) -> npt.NDArray[np.float64]:
    return _frame_dbfs(_pcm(_caller_leg(BY_FILE[file])))


def _voiced(file: str, start_s: float, end_s: float) -> list[float]:
    """[start, end] of the frames above VOICE_DBFS between two times of the capture's audio."""
    first = max(round(start_s / FRAME_S), 0)
    loud = np.flatnonzero(_levels(file)[first : round(end_s / FRAME_S)] > VOICE_DBFS)
    assert len(loud), f"nothing above {VOICE_DBFS} dBFS in {start_s}-{end_s} s"
    return [round((first + loud[0]) * FRAME_S, 2), round((first + loud[-1] + 1) * FRAME_S, 2)]


TURNS = sorted(f for f, e in BY_FILE.items() if "turns" in e)
#: Over the line's own (Gaussian) noise only: no real background mixed in.
CLEAN_TURNS = sorted(f for f in TURNS if "snr_db" not in BY_FILE[f])


@pytest.mark.parametrize("file", CLEAN_TURNS)
def test_turns_and_interjections_are_the_only_audio_above_the_noise(file: str) -> None:
    entry = BY_FILE[file]
    levels = _levels(file)
    assert len(levels) * FRAME_S == pytest.approx(entry["duration_s"])
    loud = np.zeros(len(levels), dtype=bool)
    clips = np.zeros(len(levels), dtype=bool)
    for part in [*entry["turns"], *entry.get("interjections", [])]:
        start, end = part["voice_activity_s"]
        loud[max(round((start - 0.03) / FRAME_S), 0) : round((end + 0.03) / FRAME_S)] = True
        if "speech_at_s" not in part:
            continue
        # A turn: voice activity is its clip's first and last frame above -40 dBFS on the clip's own
        # 20 ms grid, which is the capture's only if the clip starts on it (hence 30 ms tolerances).
        clip_at, clip_end = part["speech_at_s"]
        assert _voiced(file, clip_at, clip_end)[0] == pytest.approx(start, abs=0.03)
        assert _voiced(file, clip_at, end + 0.03)[1] == pytest.approx(end, abs=0.03)
        assert levels[round(start / FRAME_S) : round(end / FRAME_S)].max() > -30
        clips[round(clip_at / FRAME_S) : round(clip_end / FRAME_S) + 1] = True
    quiet = ~loud
    assert levels[quiet & ~clips].max() < VOICE_DBFS, "above the noise outside the turns/interjections"
    # A clip's own recorded background, off the capture's grid, may graze -40 dBFS: never speech.
    assert levels[quiet & clips].max(initial=-99.0) < -35
    assert levels.min() > -75, "the noise is never digital zeros"


AGENT = sorted(f for f in BY_FILE if f.startswith("agent-"))


@pytest.mark.parametrize("file", AGENT)
def test_agent_fixtures_expect_the_reply_after_the_first_turn(file: str) -> None:
    entry = BY_FILE[file]
    end = entry["turns"][0]["voice_activity_s"][1]
    assert entry["agent_reply_expected_s"] == pytest.approx([end + 0.8, end + 1.3])
    assert entry["legs"] == ["caller"] and not entry["recorded"]


def test_barge_in_starts_while_the_agent_talks() -> None:
    file = "agent-barge-in.pcap"
    entry = BY_FILE[file]
    first, second = entry["turns"]
    barge_in = entry["barge_in_at_s"]
    assert barge_in == second["voice_activity_s"][0]  # where B's voice activity starts
    assert second["speech_at_s"][0] == pytest.approx(first["speech_at_s"][1] + entry["pause_s"], abs=0.001)
    # An energy VAD on the capture finds B's onset there, over a second into the agent's reply.
    onset = _voiced(file, first["voice_activity_s"][1] + 0.1, entry["duration_s"])[0]
    assert onset == pytest.approx(barge_in, abs=0.03)
    assert barge_in - entry["agent_reply_expected_s"][1] >= 1.0
    assert entry["duration_s"] - second["voice_activity_s"][1] >= 4.0  # room for the answer to B


def test_backchannel_and_cough_are_short_and_inside_the_agent_reply() -> None:
    file = "agent-backchannel.pcap"
    entry = BY_FILE[file]
    (turn,) = entry["turns"]
    events = entry["interjections"]
    assert [e["kind"] for e in events] == ["backchannel", "cough"]
    pcm = _pcm(_caller_leg(entry))
    for event in events:
        at, voiced = event["at_s"], event["voiced_s"]
        assert at == pytest.approx(turn["voice_activity_s"][1] + event["after_turn_s"])
        assert at > entry["agent_reply_expected_s"][1], "the agent is talking by then"
        span = _voiced(file, at - 0.1, at + event["duration_s"] + 0.1)
        assert span == pytest.approx(event["voice_activity_s"], abs=0.021)
        assert span[0] == pytest.approx(at, abs=0.021)
        assert span[1] - span[0] == pytest.approx(voiced, abs=0.021)
        assert 0.06 <= voiced <= event["duration_s"] <= 0.2
        assert _levels(file)[round(span[0] / FRAME_S) : round(span[1] / FRAME_S)].max() > -30
        part = pcm[round(at * 8000) : round((at + event["duration_s"]) * 8000)]
        if event["kind"] == "cough":
            assert event["duration_s"] >= 0.15
            peak = 20 * math.log10(np.abs(part).max() / 32767)
            assert peak == pytest.approx(event["peak_dbfs"], abs=1.0)
            power = np.abs(np.fft.rfft(part)) ** 2
            freqs = np.fft.rfftfreq(len(part), 1 / 8000)
            assert power[(freqs >= 150) & (freqs <= 3200)].sum() > 0.9 * power.sum(), "band-limited"
        else:
            assert event["text"] and "shared/speech/" in event["source"]
    last = events[-1]
    assert entry["duration_s"] - (last["at_s"] + last["duration_s"]) >= 5.0 - FRAME_S


def test_echo_fixture_suggests_replay_settings_and_leaves_room_for_the_reply() -> None:
    entry = BY_FILE["agent-echo.pcap"]
    assert entry["echo"] == {"return_loss_db": 12, "delay_ms": 120}
    assert "replay" in entry["echo_note"]
    (turn,) = entry["turns"]
    assert entry["duration_s"] - turn["speech_at_s"][1] >= 7.0
    assert entry["duration_s"] - entry["agent_reply_expected_s"][1] >= 5.0


@pytest.mark.parametrize("file", sorted(f for f, e in BY_FILE.items() if e["recorded"]))
def test_recorded_calls_have_the_echo_leg(file: str) -> None:
    entry = BY_FILE[file]
    echo = _leg(file, _endpoint(entry, "agent_rtp"), _endpoint(entry, "caller_rtp"))
    assert len(echo) == entry["echo_packet_count"] > 0
    caller = _caller_leg(entry)
    assert [s.packet.payload for s in echo] == [s.packet.payload for s in caller]
    assert {s.packet.ssrc for s in echo}.isdisjoint({s.packet.ssrc for s in caller})


# --- ground truth of each turn -------------------------------------------------------------------

#: Speech-bearing: a synthetic fixture with a transcript (or a spoken clip without one, numbers).
SPEECH_BEARING = sorted(
    f for f, e in BY_FILE.items() if not e["recorded"] and ("transcript" in e and "digits" not in e)
)
TURN_KEYS = {"clip", "transcript", "speech_at_s", "voice_activity_s", "speech_start_s", "speech_end_s"}
ALIGNED_KEYS = {"aligned_start_s", "aligned_end_s", "aligned_end_diff_s"}
DISAGREE_S = 0.12  # beyond this the manifest must say why aligner and envelope differ


def test_every_speech_bearing_fixture_has_turns() -> None:
    expected = {f for f in BY_FILE if f.startswith(("speech-", "agent-"))}
    expected |= {"two-turns.pcap", "synthetic-espeak.pcap"}
    assert expected <= set(SPEECH_BEARING)
    assert {f for f in SPEECH_BEARING if "turns" not in BY_FILE[f]} == set()


@pytest.mark.parametrize("file", SPEECH_BEARING)
def test_turns_carry_the_truth_inside_the_capture(file: str) -> None:
    entry = BY_FILE[file]
    turns = entry["turns"]
    assert turns
    previous_end = 0.0
    for turn in turns:
        assert set(turn) >= TURN_KEYS | ALIGNED_KEYS, sorted(TURN_KEYS | ALIGNED_KEYS - set(turn))
        start, end = turn["speech_start_s"], turn["speech_end_s"]
        clip_at, clip_end = turn["speech_at_s"]
        assert previous_end <= clip_at <= start < end <= clip_end <= entry["duration_s"]
        assert end - start >= 0.3, "shorter than any of the clips' utterances"
        previous_end = clip_end
        if turn["aligned_end_s"] is None:
            assert turn["truth_note"]
            continue
        diff = turn["aligned_end_diff_s"]
        assert diff == pytest.approx(turn["aligned_end_s"] - end, abs=0.0015)
        assert clip_at <= turn["aligned_start_s"] < turn["aligned_end_s"] <= clip_end
        if abs(diff) > DISAGREE_S:
            assert "energy end is the truth" in turn["truth_note"], "a disagreement needs its reason"
        else:
            assert "truth_note" not in turn
    if len(turns) == 1 and "speech_at_s" in entry:  # the single-utterance fields stay for compatibility
        assert turns[0]["speech_at_s"] == entry["speech_at_s"]
        assert turns[0]["voice_activity_s"] == entry["voice_activity_s"]


def _window(file: str, start_s: float, end_s: float) -> npt.NDArray[np.float64]:
    return _levels(file)[max(round(start_s / FRAME_S), 0) : round(end_s / FRAME_S)]


CLEAN_SPEECH = sorted(f for f in SPEECH_BEARING if "snr_db" not in BY_FILE[f])


@pytest.mark.parametrize("file", CLEAN_SPEECH)
def test_clean_truth_matches_the_audio_on_the_wire(file: str) -> None:
    """Speech reaches speech_end_s; from 100 ms after it the caller leg is back at the line's noise."""
    entry = BY_FILE[file]
    floor = entry["noise_dbfs"]  # the line noise the clip is padded with, at its own background level
    for turn in entry["turns"]:
        start, end = turn["speech_start_s"], turn["speech_end_s"]
        for quiet in (_window(file, end + 0.1, end + 0.6), _window(file, start - 0.5, start - 0.1)):
            assert len(quiet) >= 10
            assert float(np.median(quiet)) == pytest.approx(floor, abs=3.0), "not back at the noise floor"
            # At most a 100 ms click or breath (left out of the truth on purpose) reaches -40 dBFS.
            assert (quiet > VOICE_DBFS).sum() * FRAME_S <= 0.1
        # The speech is there right up to its end and from its start: the truth is not in a pause.
        assert _window(file, end - 0.06, end).max() > floor + 6
        assert _window(file, start, start + 0.06).max() > floor + 6
        assert _window(file, start, end).max() > -30


NOISY = sorted(f for f in SPEECH_BEARING if "snr_db" in BY_FILE[f])


def test_noisy_fixtures_spread_their_snr_over_the_librivox_and_cards_clips() -> None:
    clips = {BY_FILE[f]["turns"][0]["clip"]: BY_FILE[f]["snr_db"] for f in NOISY}
    assert set(clips) == {
        "librivox-0870",
        "librivox-0880",
        "librivox-0890",
        "cards-001",
        "cards-002",
        "cards-003",
    }
    assert all(10 <= snr <= 20 for snr in clips.values())
    assert {10.0, 15.0, 20.0} <= set(clips.values())
    for file in NOISY:
        assert file == f"speech-noisy-{BY_FILE[file]['turns'][0]['clip']}.pcap"


@pytest.mark.parametrize("file", NOISY)
def test_noisy_fixture_truth_is_its_clean_twins(file: str) -> None:
    entry = BY_FILE[file]
    twin = BY_FILE[entry["clean_fixture"]]
    assert entry["turns"] == twin["turns"], "the truth comes from the clean source, not the noisy audio"
    assert entry["duration_s"] == twin["duration_s"] and entry["transcript"] == twin["transcript"]


@pytest.mark.parametrize("file", NOISY)
def test_noisy_fixture_snr_measured_on_the_wire(file: str) -> None:
    """The background actually in the capture is its audio minus its clean twin's (same line noise)."""
    entry = BY_FILE[file]
    noisy = _pcm(_caller_leg(entry))
    clean = _pcm(_caller_leg(BY_FILE[entry["clean_fixture"]]))
    assert len(noisy) == len(clean)
    background = noisy - clean  # plus two G.711 quantisations, 15+ dB under the background
    (turn,) = entry["turns"]
    span = slice(round(turn["speech_start_s"] * 8000), round(turn["speech_end_s"] * 8000))
    snr = 10 * math.log10(float(np.mean(clean[span] ** 2)) / float(np.mean(background[span] ** 2)))
    assert snr == pytest.approx(entry["snr_db"], abs=1.5)
    # Through the whole call, at the level the manifest gives ...
    level = 20 * math.log10(math.sqrt(float(np.mean(background**2))) / 32767)
    assert level == pytest.approx(entry["background_dbfs"], abs=1.0)
    # ... and a recording, not a steady hiss: babble's 100 ms level swings by decibels.
    tenths = background[: len(background) // 800 * 800].reshape(-1, 800)
    swings = 10 * np.log10(np.mean(tenths**2, axis=1))
    assert float(np.std(swings)) > 1.0
    source = REPO / entry["noise_source"].split(":")[0]
    assert source.is_file() and source.parent == FIXTURES / "noise"
    # Under a licence an Apache-2.0 repository can take in, stated in the manifest and the README.
    assert "public domain" in entry["noise_source"]
    assert f"| `{source.name}` |" in (source.parent / "README.md").read_text()


# --- the script -----------------------------------------------------------------------------------


def _rebuild(tmp_path: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    argv = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--speech-dir", str(SPEECH_DIR)]
    for name in names:
        argv += ["--only", name]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    for name in names:
        file = f"{name}.pcap"
        assert (tmp_path / file).read_bytes() == (FIXTURES / file).read_bytes(), f"{file} differs"
    return {e["file"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["fixtures"]}


def _without_aligner(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry less the aligner's fields: Whisper's times may move a frame on another CPU."""
    out = dict(entry)
    out["turns"] = [
        {k: v for k, v in t.items() if not k.startswith("aligned_") and k != "truth_note"}
        for t in entry.get("turns", [])
    ]
    return out


def test_make_fixtures_is_deterministic(tmp_path: Path) -> None:
    rebuilt = _rebuild(tmp_path, ["dtmf-1234"])
    assert rebuilt["dtmf-1234.pcap"] == BY_FILE["dtmf-1234.pcap"]


def test_make_fixtures_rebuilds_speech_and_its_truth(tmp_path: Path) -> None:
    if not (SPEECH_DIR / "cards-001.wav").is_file():
        pytest.skip(f"no shared speech in {SPEECH_DIR}")
    require_models(ALIGNER_MODEL / "model.bin")  # the truth's cross-check runs Whisper
    # The resampler and noise floor; scripts/agent_fixtures.py; real noise mixed at a given SNR.
    names = ["speech-cards-001", "agent-backchannel", "speech-noisy-cards-001"]
    rebuilt = _rebuild(tmp_path, names)
    for name in names:
        file = f"{name}.pcap"
        assert _without_aligner(rebuilt[file]) == _without_aligner(BY_FILE[file])
        for new, old in zip(rebuilt[file]["turns"], BY_FILE[file]["turns"], strict=True):
            assert new["aligned_end_s"] == pytest.approx(old["aligned_end_s"], abs=0.06)
