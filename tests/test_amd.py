"""Answering-machine detection (sipagent/voice/amd.py): Asterisk's rules on scripted voice, the
transcript hook, the per-call policies, and the fixture set's accuracy (fixtures/amd, Silero VAD).

The synthetic cases drive the detector with a scripted ``is_speech`` (voice where the script says),
so each rule is tested on exact times; tones are real samples, so the tone gate is the real one.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sipagent.errors import SipAgentError
from sipagent.replay.amd_replay import AmdReplay, load_far_leg, silero_vad_factory
from sipagent.replay.impair import Impairments
from sipagent.rtp.frames import SAMPLES_PER_FRAME
from sipagent.voice.amd import (
    AmdAction,
    AmdConfig,
    AmdConfigError,
    AmdResult,
    AmdSession,
    AnsweringMachineDetector,
    EnergyGate,
    machine_phrase,
)
from sipagent.voice.beep import Beep, Sit
from sipagent.voice.silero_vad import DEFAULT_SILERO_MODEL
from tests.model_gate import require_models

AMD_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "amd"
RATE = 8000
FRAME_S = 0.02
Pcm = npt.NDArray[np.int16]


class Script:
    """``is_speech`` that says voice inside the given [start, end) seconds (frame start times)."""

    def __init__(self, spans: Sequence[tuple[float, float]], answered_at: float = 0.0) -> None:
        self.spans = [(answered_at + a, answered_at + b) for a, b in spans]
        self.now = 0.0

    def __call__(self, frame: Pcm) -> bool:
        return any(a - 1e-9 <= self.now < b - 1e-9 for a, b in self.spans)


def loud_frame() -> Pcm:
    """A frame loud enough for any threshold (noise-like, so never a tone)."""
    return (np.random.RandomState(3).standard_normal(SAMPLES_PER_FRAME) * 3000).astype(np.int16)


def run(spans: Sequence[tuple[float, float]], seconds: float = 6.0, config: AmdConfig | None = None,
        answered_at: float = 0.0) -> AmdResult | None:  # fmt: skip
    script = Script(spans, answered_at)
    detector = AnsweringMachineDetector(config, answered_at=answered_at, is_speech=script)
    frame = loud_frame()
    for index in range(round(seconds / FRAME_S)):
        script.now = index * FRAME_S
        result = detector.push(frame, script.now)
        if result is not None:
            return result
    return detector.result


def test_a_short_hello_then_silence_is_a_human() -> None:
    result = run([(0.4, 0.9)])
    assert result is not None and result.kind == "human"
    # Decided when 800 ms of silence have followed the greeting (the frame at 1.68 s makes it).
    assert result.after_ms == pytest.approx(900 + 780, abs=1)
    assert result.reason == "HUMAN-800-800"


def test_no_word_at_all_is_a_machine_after_the_initial_silence() -> None:
    result = run([])
    assert result is not None and result.kind == "machine" and result.reason.startswith("INITIALSILENCE")
    assert result.after_ms == pytest.approx(2480, abs=1)
    # A blip shorter than a word does not end the initial silence.
    result = run([(1.0, 1.06)])
    assert result is not None and result.reason.startswith("INITIALSILENCE")


def test_a_long_greeting_is_a_machine() -> None:
    # One unbroken stretch: 1200 ms of voice in the greeting.
    result = run([(0.5, 4.0)])
    assert result is not None and result.kind == "machine"
    assert result.reason == "LONGGREETING-1200-1200"
    assert result.after_ms == pytest.approx(500 + 1180, abs=1)


def test_many_words_are_a_machine() -> None:
    # Four 200 ms words with 100 ms gaps: the fourth word makes it (more than three).
    words = [(0.5 + 0.3 * k, 0.7 + 0.3 * k) for k in range(6)]
    result = run(words)
    assert result is not None and result.kind == "machine" and result.reason == "MAXWORDS-4-3"
    # Asterisk's own default (two words) decides at the third.
    result = run(words, config=AmdConfig(maximum_number_of_words=2))
    assert result is not None and result.reason == "MAXWORDS-3-2"


def test_a_word_too_long_and_the_total_analysis_time() -> None:
    config = AmdConfig(greeting_ms=60000, maximum_word_length_ms=900)
    result = run([(0.3, 5.0)], config=config)
    assert result is not None and result.reason == "MAXWORDLENGTH-900"
    # Nothing decides within the analysis time: uncertain.
    patient = AmdConfig(initial_silence_ms=10000, total_analysis_time_ms=3000)
    result = run([], config=patient)
    assert result is not None and result.kind == "uncertain" and result.reason == "TOOLONG-3000"
    assert result.after_ms == pytest.approx(2980, abs=1)


def test_time_counts_from_the_answer_and_frames_before_it_are_ignored() -> None:
    # Voice during early media (before the 200 OK at 5 s) is not a greeting.
    script = Script([(-3.0, -1.0), (0.4, 0.9)], answered_at=5.0)
    detector = AnsweringMachineDetector(answered_at=5.0, is_speech=script)
    frame = loud_frame()
    result = None
    for index in range(round(9.0 / FRAME_S)):
        script.now = index * FRAME_S
        result = detector.push(frame, script.now) or result
    assert result is not None and result.kind == "human"
    assert result.after_ms == pytest.approx(1680, abs=1)
    assert detector.push(frame, 9.0) is None, "decides once"


def tone(freq: float, seconds: float, dbfs: float = -14.0) -> npt.NDArray[np.float64]:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.asarray(np.sin(2 * np.pi * freq * t) * 32767 * 10 ** (dbfs / 20), dtype=np.float64)


def frames_of(parts: Sequence[npt.NDArray[np.float64]], seed: int = 5) -> list[Pcm]:
    x = np.concatenate(parts)
    x = np.concatenate([x, np.zeros(-len(x) % SAMPLES_PER_FRAME)])
    x = x + np.random.RandomState(seed).standard_normal(len(x)) * 20
    pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return [pcm[i : i + SAMPLES_PER_FRAME] for i in range(0, len(pcm), SAMPLES_PER_FRAME)]


def babble(seconds: float, seed: int = 9) -> npt.NDArray[np.float64]:
    """Speech-like noise bursts (syllables of 120-250 ms) at -20 dBFS: energy says voice."""
    rng = np.random.RandomState(seed)
    out: list[npt.NDArray[np.float64]] = []
    while sum(len(p) for p in out) < seconds * RATE:
        out.append(rng.standard_normal(int(rng.randint(960, 2000))) * 3000)
        out.append(np.zeros(int(rng.randint(400, 900))))
    return np.concatenate(out)[: round(seconds * RATE)]


def quiet(seconds: float) -> npt.NDArray[np.float64]:
    return np.zeros(round(seconds * RATE))


def session_events(session: AmdSession, frames: Sequence[Pcm], start: float = 0.0) -> list[object]:
    events: list[object] = []
    for index, frame in enumerate(frames):
        events.extend(session.push(frame, start + index * FRAME_S))
    return events


def test_a_beep_is_not_voice_and_decides_machine_after_a_short_greeting() -> None:
    # A one-word greeting, 0.5 s, then a 0.6 s beep: without the tone gate the beep would be a
    # word, and the silence around it would run out into "human" first.
    frames = frames_of([quiet(0.4), babble(0.5), quiet(0.5), tone(1000.0, 0.6), quiet(1.0)])
    session = AmdSession("continue")
    events = session_events(session, frames)
    results = [e for e in events if isinstance(e, AmdResult)]
    beeps = [e for e in events if isinstance(e, Beep)]
    assert len(beeps) == 1 and beeps[0].at_ms == pytest.approx(1400, abs=20)
    assert [r.kind for r in results] == ["machine"]
    assert results[0].reason == "BEEP-1000Hz"


def test_the_energy_gate_follows_the_line_noise() -> None:
    gate = EnergyGate()
    rng = np.random.RandomState(1)
    hiss = [(rng.standard_normal(SAMPLES_PER_FRAME) * 100).astype(np.int16) for _ in range(50)]
    assert not any(gate.is_speech(f) for f in hiss)  # -50 dBFS of steady noise: the floor
    assert gate.is_speech((rng.standard_normal(SAMPLES_PER_FRAME) * 3000).astype(np.int16))
    quiet_gate = EnergyGate(threshold_dbfs=-20.0)
    assert not quiet_gate.is_speech((rng.standard_normal(SAMPLES_PER_FRAME) * 1000).astype(np.int16))


def test_the_transcript_hook() -> None:
    assert (
        machine_phrase("Hi, you've reached Sam. Please leave a message after the tone.") == "leave a message"
    )
    assert machine_phrase("The number you have dialed is not in service.") is not None
    assert machine_phrase("Hello? Who is this?") is None
    detector = AnsweringMachineDetector(is_speech=Script([(0.3, 0.8)]))
    assert detector.on_transcript("Hi, this is the voicemail of", 0.5) is not None
    assert detector.result is not None and detector.result.kind == "machine"
    assert detector.result.reason == "TRANSCRIPT-voicemail"
    # "Hello?" alone decides human only once the line has gone quiet after it.
    script = Script([(0.3, 0.8)])
    detector = AnsweringMachineDetector(is_speech=script)
    frame = loud_frame()
    for index in range(round(1.0 / FRAME_S)):
        script.now = index * FRAME_S
        detector.push(frame, script.now)
    assert detector.on_transcript("Hello", 0.7) is None, "still talking"
    for index in range(round(1.0 / FRAME_S), round(1.25 / FRAME_S)):
        script.now = index * FRAME_S
        detector.push(frame, script.now)
    result = detector.on_transcript("Hello?", 1.25)
    assert result is not None and result.kind == "human" and result.reason == "TRANSCRIPT-hello"
    assert detector.on_transcript("leave a message", 1.3) is None, "decides once"


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(AmdConfigError, match=r"amd\.greeting_ms") as caught:
        AmdConfig(greeting_ms=0)
    assert isinstance(caught.value, SipAgentError) and isinstance(caught.value, ValueError)
    with pytest.raises(AmdConfigError, match="maximum_number_of_words"):
        AmdConfig(maximum_number_of_words=0)
    with pytest.raises(AmdConfigError, match="policy"):
        AmdSession("voicemail")  # type: ignore[arg-type]


def _greeting_and_beep() -> list[Pcm]:
    # A 2 s greeting of syllables, a beep 0.4 s after, then the recording's silence.
    return frames_of([quiet(0.3), babble(2.0, seed=4), quiet(0.4), tone(1000.0, 0.5), quiet(2.0)])


def actions(events: Sequence[object]) -> list[AmdAction]:
    return [e for e in events if isinstance(e, AmdAction)]


def test_policies_on_a_machine() -> None:
    frames = _greeting_and_beep()
    continued = actions(session_events(AmdSession("continue"), frames))
    assert [a.action for a in continued] == ["proceed"]
    hung_up = actions(session_events(AmdSession("hangup"), frames))
    assert [a.action for a in hung_up] == ["hang_up"]
    assert hung_up[0].at < 2.4, "at the decision, before the greeting is over"
    session = AmdSession("leave-message")
    events = session_events(session, frames)
    beep = next(e for e in events if isinstance(e, Beep))
    left = actions(events)
    assert [a.action for a in left] == ["leave_message"] and left[0].reason == "after the beep"
    # The message starts 200 ms after the beep was reported (its end plus the gap frames).
    assert beep.end < left[0].at <= beep.end + 0.35


def test_leave_message_without_a_beep_and_on_a_carrier() -> None:
    frames = frames_of([quiet(0.3), babble(2.5, seed=6), quiet(3.0)])
    session = AmdSession("leave-message")
    events = session_events(session, frames)
    left = actions(events)
    assert [a.action for a in left] == ["leave_message"] and left[0].reason == "greeting over, no beep"
    # Its greeting's last syllable ends by 2.8 s; 1.5 s of quiet later the message starts.
    assert 3.9 <= left[0].at <= 4.4
    segments = [tone(f, s, -18.0) for f, s in ((913.8, 0.274), (1370.6, 0.274), (1776.7, 0.380))]
    carrier = frames_of([quiet(0.2), *segments, quiet(0.3), babble(2.0), quiet(1.0)])
    events = session_events(AmdSession("leave-message"), carrier)
    assert any(isinstance(e, Sit) for e in events)
    assert [(a.action, a.reason) for a in actions(events)] == [("hang_up", "carrier message: nobody records")]
    transcript = AmdSession("leave-message")
    session_events(transcript, frames_of([quiet(0.3), babble(0.6)]))
    done = transcript.on_transcript("The number you have dialed is not in service", 1.0)
    assert [a.action for a in actions(done)] == ["hang_up"]


def test_a_human_proceeds_under_every_policy() -> None:
    frames = frames_of([quiet(0.4), babble(0.4, seed=2), quiet(2.0)])
    for policy in ("hangup", "leave-message", "continue"):
        events = session_events(AmdSession(policy), frames)
        results = [e for e in events if isinstance(e, AmdResult)]
        assert [r.kind for r in results] == ["human"]
        assert [a.action for a in actions(events)] == ["proceed"]


# --- the fixture set ----------------------------------------------------------------------------


def _manifest() -> list[dict[str, object]]:
    return list(json.loads((AMD_FIXTURES / "manifest.json").read_text())["fixtures"])


def test_the_fixture_set_is_labelled_and_small() -> None:
    entries = _manifest()
    assert len(entries) >= 30
    labels = [e["label"] for e in entries]
    assert labels.count("human") >= 20 and labels.count("machine") >= 20
    assert {e["kind"] for e in entries} == {"live-answer", "voicemail", "carrier"}
    for entry in entries:
        assert (AMD_FIXTURES / str(entry["file"])).is_file()
    total = sum((AMD_FIXTURES / str(e["file"])).stat().st_size for e in entries)
    assert total < 5_000_000


def test_the_fixture_set_meets_its_targets() -> None:
    """≥ 95 % of machines and of humans right, every beep within 100 ms, median decision ≤ 2.5 s."""
    require_models(DEFAULT_SILERO_MODEL)
    vad = silero_vad_factory()
    right = {"human": 0, "machine": 0}
    count = {"human": 0, "machine": 0}
    times = []
    for entry in _manifest():
        events = AmdReplay(load_far_leg(AMD_FIXTURES / str(entry["file"])), Impairments(), vad=vad).run()
        amd = [e.fields for e in events if e.event == "amd"]
        assert len(amd) == 1
        label = str(entry["label"])
        count[label] += 1
        right[label] += amd[0]["result"] == label
        times.append(float(amd[0]["after_ms"]))
        beeps = [float(e.fields["at_ms"]) for e in events if e.event == "beep"]
        truth = entry["beep"]
        if isinstance(truth, dict):
            assert len(beeps) == 1 and abs(beeps[0] - float(truth["at_s"]) * 1000) <= 100, entry["file"]
        else:
            assert beeps == [], entry["file"]
    assert right["machine"] >= 0.95 * count["machine"]
    assert right["human"] >= 0.95 * count["human"]
    assert statistics.median(times) <= 2500


def test_make_amd_fixtures_rebuilds_them(tmp_path: Path) -> None:
    """A recorded clip in a busy room, and Piper over early ringback, rebuilt to the same bytes."""
    speech_dir = AMD_FIXTURES.parents[2] / "shared" / "speech"
    if not (speech_dir / "cards-003.wav").is_file():
        pytest.skip(f"no shared speech in {speech_dir}")
    voice = AMD_FIXTURES.parents[1] / "models" / "piper" / "en_US-joe-medium.onnx"
    require_models(voice)
    script = AMD_FIXTURES.parents[1] / "scripts" / "make_amd_fixtures.py"
    names = ["h-busy-cards-003", "m-vm-ringback-beep"]
    argv = [sys.executable, str(script), "--out", str(tmp_path), "--speech-dir", str(speech_dir)]
    for name in names:
        argv += ["--only", name]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    rebuilt = {e["file"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["fixtures"]}
    committed = {e["file"]: e for e in _manifest()}
    # The recorded clip is numpy all the way: the same bytes anywhere. Piper runs on onnxruntime,
    # whose float kernels may round differently on another CPU (AVX2, AVX-512): its fixture must
    # come out the same to the ear, not to the bit (a CI host is not the machine that made it).
    recorded = "h-busy-cards-003.pcap"
    assert (tmp_path / recorded).read_bytes() == (AMD_FIXTURES / recorded).read_bytes(), f"{recorded} differs"
    assert rebuilt[recorded] == committed[recorded]
    synthetic = "m-vm-ringback-beep.pcap"
    ours, theirs = (_pcm(folder / synthetic) for folder in (tmp_path, AMD_FIXTURES))
    assert ours.size == theirs.size
    error = ours.astype(np.float64) - theirs
    snr_db = 10 * np.log10(np.sum(theirs.astype(np.float64) ** 2) / max(float(np.sum(error**2)), 1.0))
    assert snr_db > 30, f"{synthetic}: rebuilt {snr_db:.1f} dB from the committed one"
    assert rebuilt[synthetic]["beep"] == committed[synthetic]["beep"]
    assert rebuilt[synthetic]["label"] == committed[synthetic]["label"]


def _pcm(path: Path) -> np.ndarray:
    from sipagent.replay.capture import load_caller_leg
    from sipagent.rtp.g711 import decode_table

    leg = load_caller_leg(path)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, np.uint8)) for p in leg.packets])
