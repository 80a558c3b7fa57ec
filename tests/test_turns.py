"""Turn-taking: blips, turns, pauses, resumption, end of turn and barge-in, stepped by hand."""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.rtp.frames import SAMPLES_PER_FRAME
from sipagent.voice.turns import (
    TRANSITIONS,
    BargeIn,
    CallerResumed,
    CallerStarted,
    EndOfTurn,
    PauseStarted,
    TurnConfig,
    TurnDetector,
    TurnEvent,
    TurnState,
    TurnStateError,
)
from sipagent.voice.vad import WebRtcVad

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
T0 = 1234.5  # a start far from zero, so float drift in the frame times shows up if it matters
F = 0.02


def t(index: int) -> float:
    return T0 + index * F


def run(
    pattern: str, agent: str | None = None, detector: TurnDetector | None = None
) -> list[tuple[int, TurnEvent]]:
    """``x`` voiced, ``.`` unvoiced; ``agent`` is ``a`` (agent speaking) or ``-`` per frame."""
    detector = detector or TurnDetector()
    agent = agent or "-" * len(pattern)
    assert len(agent) == len(pattern)
    out: list[tuple[int, TurnEvent]] = []
    for index, (mark, talking) in enumerate(zip(pattern, agent, strict=True)):
        for event in detector.push(mark == "x", t(index), agent_speaking=talking == "a"):
            out.append((index, event))
    return out


def kinds(events: list[tuple[int, TurnEvent]]) -> list[str]:
    return [type(e).__name__ for _, e in events]


def near(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


# --- configuration ---------------------------------------------------------------------------
def test_defaults_are_in_the_agreed_ranges() -> None:
    config = TurnConfig()
    assert config.end_of_turn_ms <= 300
    assert 200 <= config.min_barge_in_ms <= 250
    assert 100 <= config.min_speech_ms <= 120
    assert config.pause_ms < config.end_of_turn_ms


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_speech_ms": 0}, "min_speech_ms"),
        ({"min_barge_in_ms": -5}, "min_barge_in_ms"),
        ({"frame_ms": float("nan")}, "frame_ms"),
        ({"pause_ms": float("inf")}, "pause_ms"),
        ({"voiced_ratio": 1.5}, "voiced_ratio"),
        ({"voiced_ratio": True}, "voiced_ratio"),
        ({"end_of_turn_ms": 60}, "end_of_turn_ms"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TurnConfig(**changes)  # type: ignore[arg-type]


def test_events_are_frozen_and_validated() -> None:
    event = EndOfTurn(2.0, 1.0, 1.7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.at = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="speech_started_at"):
        EndOfTurn(2.0, 1.8, 1.7)
    with pytest.raises(ValueError, match="at"):
        CallerStarted(float("nan"), 1.0)
    with pytest.raises(ValueError, match="last_voiced_at"):
        PauseStarted(1.0, 0.5, 1.5)


# --- noise does not start a turn -------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["x", "xx", "xxxxx", "xx.xx", "x.x.x", "xxx..xx"])
def test_blips_start_nothing_and_end_nothing(pattern: str) -> None:
    detector = TurnDetector()
    assert run(pattern + "." * 40, detector=detector) == []
    assert detector.state is TurnState.LISTENING


def test_noise_every_other_frame_never_makes_a_turn() -> None:
    assert run("x." * 100) == []


def test_a_turn_starts_after_min_speech_with_its_true_start_time() -> None:
    events = run("...xxxxxx")
    assert events == [(8, CallerStarted(t(8), t(3)))]


def test_mostly_voiced_is_enough() -> None:
    # Six voiced frames within eight: one VAD dip between syllables does not delay the start.
    events = run("xxx.xxx")
    assert events == [(6, CallerStarted(t(6), t(0)))]


# --- pause, resumption, end of turn ----------------------------------------------------------
def test_pause_then_end_of_turn_timed_from_the_last_voiced_frame() -> None:
    events = run("x" * 20 + "." * 30)
    assert kinds(events) == ["CallerStarted", "PauseStarted", "EndOfTurn"]
    (_, started), (ip, pause), (ie, end) = events
    assert (
        isinstance(started, CallerStarted) and isinstance(pause, PauseStarted) and isinstance(end, EndOfTurn)
    )
    assert near(pause.at - pause.last_voiced_at, 0.060) and ip == 22
    assert near(end.at - end.last_voiced_at, 0.300) and ie == 34
    assert end.speech_started_at == started.speech_started_at == t(0)
    assert end.last_voiced_at == t(19) and not end.barged_in


def test_resumption_cancels_and_the_turn_goes_on() -> None:
    events = run("x" * 10 + "." * 8 + "x" * 10 + "." * 20)
    assert kinds(events) == ["CallerStarted", "PauseStarted", "CallerResumed", "PauseStarted", "EndOfTurn"]
    resumed = events[2]
    assert resumed == (23, CallerResumed(t(23)))
    end = events[-1][1]
    assert isinstance(end, EndOfTurn)
    assert end.speech_started_at == t(0) and end.last_voiced_at == t(27)


def test_a_click_in_the_pause_does_not_delay_the_end_of_turn() -> None:
    events = run("x" * 10 + "." * 10 + "x" + "." * 20)
    assert kinds(events) == ["CallerStarted", "PauseStarted", "EndOfTurn"]
    index, end = events[-1]
    assert isinstance(end, EndOfTurn) and end.last_voiced_at == t(9) and index == 24


def test_a_caller_resuming_at_the_deadline_is_not_cut_in_two() -> None:
    # Voice comes back 280 ms into the silence; it needs 120 ms to count, past the 300 ms mark.
    events = run("x" * 10 + "." * 13 + "x" * 10 + "." * 20)
    assert kinds(events) == ["CallerStarted", "PauseStarted", "CallerResumed", "PauseStarted", "EndOfTurn"]


def test_noise_in_the_pause_defers_the_end_of_turn_only_briefly() -> None:
    events = run("x" * 10 + "." * 5 + "x." * 40)
    ends = [(i, e) for i, e in events if isinstance(e, EndOfTurn)]
    assert len(ends) == 1
    _, end = ends[0]
    assert end.last_voiced_at == t(9)
    assert 0.3 - 1e-9 <= end.at - end.last_voiced_at <= 0.3 + 0.16 + 1e-9


def test_a_resumption_starting_at_the_deadline_is_held_for() -> None:
    # End of turn is due at 200 ms of silence, just as the voice comes back; it needs 120 ms to
    # count, so the deadline is held while that candidate is live, and the turn goes on.
    config = TurnConfig(end_of_turn_ms=200)
    events = run("x" * 10 + "." * 9 + "x" * 12 + "." * 20, detector=TurnDetector(config))
    assert kinds(events) == ["CallerStarted", "PauseStarted", "CallerResumed", "PauseStarted", "EndOfTurn"]
    assert events[2][0] == 24


def test_a_candidate_still_undecided_after_the_hold_becomes_the_next_turn() -> None:
    # Crackle from 240 ms into the silence keeps a candidate alive; the turn ends at most one
    # window late, and the candidate goes on as the onset of the next turn, keeping its start.
    events = run("x" * 10 + "." * 12 + "x." * 6 + "x" * 10 + "." * 20)
    assert kinds(events) == [
        "CallerStarted",
        "PauseStarted",
        "EndOfTurn",
        "CallerStarted",
        "PauseStarted",
        "EndOfTurn",
    ]
    index, end = events[2]
    assert isinstance(end, EndOfTurn) and index == 32 and end.last_voiced_at == t(9)
    assert events[3] == (37, CallerStarted(t(37), t(30)))


# --- barge-in --------------------------------------------------------------------------------
AGENT = "a" * 200


def test_caller_speech_over_the_agent_barges_in_after_min_barge_in() -> None:
    pattern = "." * 10 + "x" * 20 + "." * 30
    events = run(pattern, AGENT[: len(pattern)])
    assert kinds(events)[:2] == ["BargeIn", "CallerStarted"]
    assert events[0] == (21, BargeIn(t(21), t(10)))
    assert events[1] == (21, CallerStarted(t(21), t(10)))
    end = events[-1][1]
    assert isinstance(end, EndOfTurn) and end.barged_in


@pytest.mark.parametrize(
    "burst",
    [
        "x" * 5,  # a cough
        "x" * 11,  # 220 ms "yeah"
        "xxxxx..xxxx",  # "mm-hm" with a gap
        "x.x.x.x.x.x.x.x.x.x.x.x.x.x",  # crackle
    ],
)
def test_short_sounds_over_the_agent_do_not_interrupt(burst: str) -> None:
    pattern = "." * 5 + burst + "." * 40
    assert run(pattern, AGENT[: len(pattern)]) == []


def test_barge_in_tolerates_dips() -> None:
    pattern = "." * 3 + "xxxxx..xxxxxxx" + "." * 5
    events = run(pattern, AGENT[: len(pattern)])
    assert kinds(events)[:2] == ["BargeIn", "CallerStarted"]
    assert events[0][0] == 3 + 13 and events[0][1] == BargeIn(t(16), t(3))


def test_same_speech_without_the_agent_is_an_ordinary_turn() -> None:
    events = run("x" * 11 + "." * 20)
    assert kinds(events) == ["CallerStarted", "PauseStarted", "EndOfTurn"]


def test_agent_starting_over_a_caller_mid_turn_is_a_barge_in_once() -> None:
    pattern = "x" * 60 + "." * 20
    agent = "-" * 20 + "a" * 60
    events = run(pattern, agent)
    assert kinds(events) == ["CallerStarted", "BargeIn", "PauseStarted", "EndOfTurn"]
    index, barge = events[1]
    assert index == 20 + 11 and isinstance(barge, BargeIn) and barge.speech_started_at == t(0)
    end = events[-1][1]
    assert isinstance(end, EndOfTurn) and end.barged_in


def test_resumption_over_the_agent_is_a_barge_in() -> None:
    pattern = "x" * 10 + "." * 8 + "x" * 14 + "." * 20
    agent = "-" * 18 + "a" * 34
    events = run(pattern, agent)
    assert kinds(events)[:4] == ["CallerStarted", "PauseStarted", "CallerResumed", "BargeIn"]
    assert events[2][0] == events[3][0] == 18 + 11


# --- errors ----------------------------------------------------------------------------------
def test_impossible_transition_names_state_and_event() -> None:
    detector = TurnDetector()
    with pytest.raises(TurnStateError, match=r"LISTENING.*pause") as info:
        detector._fire("pause")
    assert info.value.state is TurnState.LISTENING and info.value.event == "pause"


def test_frames_after_close_raise() -> None:
    detector = TurnDetector()
    run("x" * 10, detector=detector)
    detector.close()
    detector.close()  # idempotent: a hang-up may be reported twice
    with pytest.raises(TurnStateError, match=r"CLOSED.*frame"):
        detector.push(True, t(99), agent_speaking=False)


def test_time_must_move_forward() -> None:
    detector = TurnDetector()
    detector.push(False, 1.0, agent_speaking=False)
    with pytest.raises(ValueError, match="increasing"):
        detector.push(False, 1.0, agent_speaking=False)


def test_transition_table_is_closed() -> None:
    for state, moves in TRANSITIONS.items():
        assert "close" in moves
        assert all(isinstance(target, TurnState) for target in moves.values()), state
    assert set(TRANSITIONS) == set(TurnState)


# --- properties ------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), max_size=400),
    st.sampled_from([TurnConfig(), TurnConfig(min_speech_ms=100, end_of_turn_ms=200, pause_ms=60)]),
)
def test_event_grammar_holds_for_any_input(frames: list[tuple[bool, bool]], config: TurnConfig) -> None:
    detector = TurnDetector(config)
    in_turn = paused = False
    pending_barge = False
    for index, (voiced, agent) in enumerate(frames):
        events = detector.push(voiced, t(index), agent_speaking=agent)
        for event in events:
            if isinstance(event, BargeIn):
                assert agent
                pending_barge = not in_turn
            elif isinstance(event, CallerStarted):
                assert not in_turn
                in_turn, paused, pending_barge = True, False, False
                assert event.at - event.speech_started_at >= config.min_speech_ms / 1000 - F - 1e-9
            elif isinstance(event, PauseStarted):
                assert in_turn and not paused
                paused = True
            elif isinstance(event, CallerResumed):
                assert in_turn and paused
                paused = False
            else:
                assert in_turn and paused
                assert event.at - event.last_voiced_at >= config.end_of_turn_ms / 1000 - 1e-9
                assert (
                    event.last_voiced_at - event.speech_started_at >= config.min_speech_ms / 1000 - F - 1e-9
                )
                in_turn = paused = False
        assert not pending_barge, "a BargeIn that starts a turn is followed by its CallerStarted"
    assert detector.state in {TurnState.LISTENING, TurnState.ONSET} or in_turn


# --- real speech -----------------------------------------------------------------------------
def test_recorded_sentence_is_one_turn_ending_300_ms_after_the_voice() -> None:
    with wave.open(str(SPEECH / "librivox-0880.wav"), "rb") as clip:
        audio = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    telephone = audio[::2].astype(np.int16)
    telephone = np.concatenate([telephone, np.zeros(8000, dtype=np.int16)])
    frames = [telephone[i : i + SAMPLES_PER_FRAME] for i in range(0, len(telephone) - 159, SAMPLES_PER_FRAME)]
    vad = WebRtcVad(2)
    detector = TurnDetector()
    events: list[TurnEvent] = []
    for index, frame in enumerate(frames):
        events += detector.push(vad.is_speech(frame), t(index), agent_speaking=False)
    starts = [e for e in events if isinstance(e, CallerStarted)]
    ends = [e for e in events if isinstance(e, EndOfTurn)]
    assert starts and len(ends) == len(starts)
    # "he was not an ill disposed young man": one breath, at most one mid-sentence turn split.
    assert len(starts) <= 2
    assert all(abs(e.at - e.last_voiced_at - 0.3) < 1e-9 for e in ends)
    assert detector.state is TurnState.LISTENING
