"""The conversation engine on virtual time: exact ticks and exact commands, no sleeping, no threads.

A :class:`Line` plays the pacer's part (one queued frame leaves per tick, a flush empties it) and the
test plays the models' part, answering each job at a moment it chooses. The caller's voice is
Gaussian noise judged by a level VAD, so every turn event falls on a tick that follows from the
test's :class:`~sipagent.voice.turns.TurnConfig` alone (6 voiced frames start a turn, 5 silent ones
are a pause, 15 end the turn, 12 over the agent barge in, 3 hold the line). The test pins its own
pause (100 ms) and first TTS chunk (3 words / 28 characters), so its ticks do not move with the
product's defaults.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sipagent.rtp.frames import FRAME_SECONDS, SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from sipagent.voice.chunker import ChunkerConfig
from sipagent.voice.conversation import (
    CancelJob,
    Command,
    Conversation,
    ConversationConfig,
    EndCall,
    FlushOutput,
    Frame,
    Outcome,
    PlayFrames,
    ReplyState,
    ReplyStateError,
    TurnFinished,
)
from sipagent.voice.conversation.record import TurnRecord
from sipagent.voice.conversation.reply import TRANSITIONS, Reply
from sipagent.voice.jobs import (
    Generate,
    JobFailed,
    JobResult,
    PredictTurnEnd,
    Synthesize,
    Synthesized,
    TextDone,
    TextPiece,
    Transcribe,
    Transcribed,
)
from sipagent.voice.llm import Turn
from sipagent.voice.stt import Transcript
from sipagent.voice.turns import TurnConfig

GREETING = "Hello, how can I help?"
_RNG = np.random.RandomState(7)


class LevelVad:
    """Voice is anything louder than RMS 300 (the test's caller speaks at 3000, its line hiss is 10)."""

    def is_speech(self, frame: Pcm) -> bool:
        return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > 300


def voice(frames: int = 1) -> list[Pcm]:
    return [(_RNG.standard_normal(SAMPLES_PER_FRAME) * 3000).astype(np.int16) for _ in range(frames)]


def hiss(frames: int = 1) -> list[Pcm]:
    return [(_RNG.standard_normal(SAMPLES_PER_FRAME) * 10).astype(np.int16) for _ in range(frames)]


def speech_audio(frames: int) -> Pcm:
    """The agent's "voice": noise too, uncorrelated with the caller's (a tone would fool the echo guard)."""
    return (np.random.RandomState(frames).standard_normal(frames * SAMPLES_PER_FRAME) * 4000).astype(np.int16)


def heard(text: str) -> Transcript:
    return Transcript(text, 0.01, -0.2, 1.0)


class Line:
    """The call's media as the engine sees it: a pacer queue, one frame out per tick."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.tick = 0
        self.queue: list[Pcm] = []
        self.sent: list[Pcm | None] = []
        self.log: list[tuple[int, Command]] = []

    @property
    def now(self) -> float:
        return self.tick * FRAME_SECONDS

    def run(self, commands: list[Command]) -> list[Command]:
        for command in commands:
            self.log.append((self.tick, command))
            if isinstance(command, PlayFrames):
                self.queue.extend(command.frames)
            elif isinstance(command, FlushOutput):
                self.queue.clear()
        return commands

    def play(self, frames: list[Pcm]) -> None:
        """One tick per caller frame."""
        for samples in frames:
            out = self.queue.pop(0) if self.queue else None
            self.sent.append(out)
            inbound = AudioFrame(samples, FrameKind.VOICE, self.tick * SAMPLES_PER_FRAME)
            self.run(self.conversation.on_frame(Frame(inbound, out, len(self.queue)), self.now))
            self.tick += 1

    def until(self, tick: int) -> None:
        """Line hiss up to (not including) ``tick``."""
        self.play(hiss(tick - self.tick))

    def answer(self, result: JobResult) -> list[Command]:
        """A model's result, arriving half a tick before the next tick."""
        return self.run(self.conversation.on_result(result, self.now - FRAME_SECONDS / 2))

    def events(self) -> list[tuple[int, str]]:
        """Everything but the per-tick PlayFrames, summarised."""
        return [(tick, _summary(c)) for tick, c in self.log if not isinstance(c, PlayFrames)]

    def voiced_ticks(self) -> list[int]:
        return [i for i, out in enumerate(self.sent) if out is not None and int(np.abs(out).max()) > 200]


def _summary(command: Command) -> str:
    if isinstance(command, Transcribe):
        return f"transcribe {command.job} ({command.audio.size // SAMPLES_PER_FRAME} frames)"
    if isinstance(command, Generate):
        return f"generate {command.job}"
    if isinstance(command, Synthesize):
        return f"synthesize {command.job} {command.text!r}"
    if isinstance(command, CancelJob):
        return f"cancel {command.job}"
    if isinstance(command, FlushOutput):
        return "flush"
    if isinstance(command, TurnFinished):
        r = command.record
        return f"turn {r.turn} {r.outcome.value} {r.reply!r}"
    if isinstance(command, EndCall):
        return f"end call {command.reason}"
    if isinstance(command, PredictTurnEnd):
        return f"predict turn end {command.job}"
    raise AssertionError(command)


TURN = TurnConfig(pause_ms=100)
CHUNKS = ChunkerConfig(first_min_words=3, first_max_chars=28)


def _conversation(**config: object) -> tuple[Conversation, Line]:
    config = {"turn": TURN, "chunker": CHUNKS, **config}
    conversation = Conversation(ConversationConfig(**config), key=9, vad=LevelVad)  # type: ignore[arg-type]
    return conversation, Line(conversation)


def test_a_whole_call_step_by_step() -> None:
    conversation, line = _conversation(greeting=GREETING)
    line.run(conversation.start(line.now))
    line.answer(Synthesized(1, speech_audio(20)))

    # The greeting plays on ticks 1-20 (two frames queued at tick 0, one topped up per tick).
    line.until(30)
    assert line.voiced_ticks() == list(range(1, 21))

    # Turn 1: voice on ticks 30-49. Pause (5 silent frames) at 54: speculative STT of the turn so
    # far (10 frames of pre-roll ending at tick 30, then 31-54). Its reply is made before the end of
    # the turn (15 silent frames) at 64 and waits for it.
    line.play(voice(20))
    line.until(58)
    generate = line.answer(Transcribed(2, heard("ten of clubs")))
    turns = (Turn("assistant", GREETING), Turn("user", "ten of clubs"))
    assert generate == [Generate(3, 9, conversation.config.system_prompt, turns)]
    line.answer(TextPiece(3, "You said"))
    line.answer(TextPiece(3, " ten of clubs."))
    line.answer(TextDone(3))
    line.until(62)
    line.answer(Synthesized(4, speech_audio(15)))
    line.until(90)
    first = conversation.records[1]
    assert first.end_of_turn_wait_ms == pytest.approx(300)
    assert first.speech_end_at == pytest.approx(49 * FRAME_SECONDS)
    assert first.first_voiced_out_at == pytest.approx(65 * FRAME_SECONDS)
    assert first.latency_ms == pytest.approx((65 - 49 - 1) * 20)
    assert first.speculative and first.stt_ms == pytest.approx(3.5 * 20)
    assert line.voiced_ticks()[20:] == list(range(65, 80))  # not a tick before the end of turn

    # Turn 2: voice 90-104, a 160 ms gap (pause at 109: speculation), voice again 113-127 (resumed
    # at 118: the speculation is cancelled), pause at 132, end of turn at 142 before STT answers.
    line.play(voice(15))
    line.until(113)
    line.play(voice(15))
    line.until(145)
    assert line.answer(Transcribed(5, heard("what about"))) == []  # the cancelled job's late answer
    generate = line.answer(Transcribed(6, heard("what about hearts")))
    assert [turn.text for turn in generate[0].turns] == [  # type: ignore[union-attr]
        GREETING,
        "ten of clubs",
        "You said ten of clubs.",
        "what about hearts",
    ]
    line.answer(TextPiece(7, "Hearts are red,"))
    line.answer(TextPiece(7, " and they talk a lot about it."))
    line.answer(TextDone(7))
    line.until(150)
    line.answer(Synthesized(8, speech_audio(30)))
    line.answer(Synthesized(9, speech_audio(30)))

    # The caller talks over it from tick 170: held at the third voiced frame (172), barge-in at the
    # twelfth (181). The caller heard 22 of the first chunk's 30 frames: two of its three words.
    line.until(170)
    line.play(voice(20))
    line.until(200)
    line.answer(Transcribed(10, heard("stop")))
    line.until(206)
    line.run(conversation.close(line.now))

    assert line.events() == [
        (0, f"synthesize 1 {GREETING!r}"),
        (20, f"turn 1 answered {GREETING!r}"),
        (54, "transcribe 2 (34 frames)"),
        (58, "generate 3"),
        (58, "synthesize 4 'You said ten of clubs.'"),
        (79, "turn 2 answered 'You said ten of clubs.'"),
        (109, "transcribe 5 (29 frames)"),
        (118, "cancel 5"),
        (132, "transcribe 6 (52 frames)"),
        (145, "generate 7"),
        (145, "synthesize 8 'Hearts are red,'"),
        (150, "synthesize 9 'and they talk a lot about it.'"),
        (172, "flush"),
        (181, "flush"),
        (181, "turn 3 interrupted 'Hearts are'"),
        (194, "transcribe 10 (34 frames)"),
        (200, "generate 11"),
        (206, "cancel 11"),
        (206, "turn 4 interrupted ''"),
    ]
    assert line.voiced_ticks()[35:] == list(range(151, 173))  # silent from the hold on
    assert [(t.role, t.text) for t in conversation.history] == [
        ("assistant", GREETING),
        ("user", "ten of clubs"),
        ("assistant", "You said ten of clubs."),
        ("user", "what about hearts"),
        ("assistant", "Hearts are"),
        ("user", "stop"),
    ]
    barged = conversation.records[2]
    assert barged.stop_decided_at == pytest.approx(172 * FRAME_SECONDS)
    assert barged.caller_onset_at == pytest.approx(170 * FRAME_SECONDS)
    assert barged.holds == 1
    assert not conversation.busy and conversation.closed
    assert conversation.on_frame(Frame(AudioFrame(hiss()[0], FrameKind.VOICE, 0), None, 0), 5.0) == []


def _answered_turn(line: Line, conversation: Conversation, reply: str = "Fine.") -> None:
    """Voice now, then the models answer the speculation at once."""
    start = line.tick
    line.play(voice(10))
    line.until(start + 15)  # pause at start + 14
    stt = next(c for _, c in reversed(line.log) if isinstance(c, Transcribe))
    generate = line.answer(Transcribed(stt.job, heard("hello")))
    job = generate[0].job  # type: ignore[union-attr]
    line.answer(TextPiece(job, reply))
    synthesize = line.answer(TextDone(job))
    line.answer(Synthesized(synthesize[0].job, speech_audio(40)))  # type: ignore[union-attr]


def test_a_blip_over_the_agent_holds_it_then_it_resumes_where_it_stopped() -> None:
    conversation, line = _conversation()
    _answered_turn(line, conversation, "One two three four five six.")
    line.until(40)
    before = len(line.voiced_ticks())
    line.play(voice(4))  # 80 ms: a cough, under the 240 ms that interrupts
    line.until(100)
    record = conversation.records[0]
    assert record.outcome is Outcome.ANSWERED and record.holds == 1
    assert record.reply == "One two three four five six."
    # Quiet from the third voiced frame until the blip was over, then the rest: all 40 frames.
    assert len(line.voiced_ticks()) == 40 and before < 40
    assert [e for e in line.events() if e[1] == "flush"] == [(42, "flush")]


def test_noise_heard_as_silence_is_not_answered() -> None:
    conversation, line = _conversation()
    line.play(voice(10))
    line.until(24)
    line.answer(Transcribed(1, Transcript("Thank you.", 0.9, -1.5, 0.5)))  # Whisper's noise caption
    line.until(40)
    assert line.events() == [(14, "transcribe 1 (15 frames)"), (24, "turn 1 unanswered ''")]
    assert conversation.records[0].transcript == "Thank you."
    assert conversation.history == []


def test_a_model_that_never_answers_fails_the_turn_at_its_deadline() -> None:
    conversation, line = _conversation(job_timeout_s=2.0)
    line.play(voice(10))
    line.until(24)
    assert conversation.next_deadline() == pytest.approx(14 * FRAME_SECONDS + 2.0)
    line.until(40)
    line.run(conversation.handle_timer(conversation.next_deadline() or 0))
    assert line.events()[-2:] == [(40, "cancel 1"), (40, "turn 1 failed ''")]
    assert conversation.records[0].error is not None and "2 s" in conversation.records[0].error
    assert conversation.next_deadline() is None


def test_a_reply_whose_llm_fails_midway_says_its_finished_clauses() -> None:
    conversation, line = _conversation()
    line.play(voice(10))
    line.until(24)
    line.answer(Transcribed(1, heard("hi")))
    line.answer(TextPiece(2, "Sure thing, I can help with that. Let me"))
    assert line.answer(JobFailed(2, "the inference process exited")) == []
    line.answer(Synthesized(3, speech_audio(10)))  # "Sure thing,", then the whole next sentence
    line.answer(Synthesized(4, speech_audio(20)))
    line.until(60)
    assert [e for e in line.events() if e[0] == 24] == [
        (24, "generate 2"),
        (24, "synthesize 3 'Sure thing,'"),
        (24, "synthesize 4 'I can help with that.'"),  # "Let me" never becomes speech
    ]
    record = conversation.records[0]
    assert record.outcome is Outcome.ANSWERED and record.reply == "Sure thing, I can help with that."
    assert record.error == "the inference process exited"


def test_a_reply_with_nothing_to_say_when_its_llm_fails_is_a_failed_turn() -> None:
    conversation, line = _conversation()
    line.play(voice(10))
    line.until(20)
    line.answer(Transcribed(1, heard("hi")))
    line.answer(TextPiece(2, "Let me"))
    line.answer(JobFailed(2, "out of memory"))
    line.until(40)
    assert line.events()[-1] == (24, "turn 1 failed ''")
    assert conversation.history == [Turn("user", "hi")]  # the caller did say it


def test_words_said_from_outside_wait_their_turn_then_the_call_ends() -> None:
    conversation, line = _conversation(greeting=GREETING)
    line.run(conversation.start(line.now))
    line.run(conversation.say("Your table is booked.", line.now, hang_up_after="notified"))
    line.answer(Synthesized(1, speech_audio(5)))
    line.until(10)
    line.answer(Synthesized(2, speech_audio(5)))
    line.until(20)
    assert line.events() == [
        (0, f"synthesize 1 {GREETING!r}"),
        (0, "synthesize 2 'Your table is booked.'"),
        (5, f"turn 1 answered {GREETING!r}"),
        (15, "turn 2 answered 'Your table is booked.'"),
        (15, "end call notified"),
    ]


def test_text_said_with_interrupt_cuts_the_reply_on_the_line_and_goes_first() -> None:
    conversation, line = _conversation(greeting=GREETING)
    line.run(conversation.start(line.now))
    line.run(conversation.say("Queued after.", line.now))
    line.answer(Synthesized(1, speech_audio(10)))
    line.until(4)
    line.run(conversation.say("Stop, news.", line.now, interrupt=True))
    line.answer(Synthesized(3, speech_audio(5)))
    line.answer(Synthesized(2, speech_audio(5)))
    line.until(20)
    events = line.events()
    assert events[:3] == [
        (0, f"synthesize 1 {GREETING!r}"),
        (0, "synthesize 2 'Queued after.'"),
        (4, "flush"),
    ]
    assert (4, "synthesize 3 'Stop, news.'") in events
    turns = [event for event in events if event[1].startswith("turn")]
    assert [text for _, text in turns] == [
        "turn 1 interrupted 'Hello,'",
        "turn 2 answered 'Stop, news.'",
        "turn 3 answered 'Queued after.'",
    ]


def test_a_call_that_does_not_listen_neither_replies_nor_stops_for_the_caller() -> None:
    conversation, line = _conversation(listen=False)
    line.run(conversation.say("Your table is booked.", line.now, hang_up_after="message played"))
    line.answer(Synthesized(1, speech_audio(20)))
    line.play(voice(30))  # the callee talks all through the message
    line.until(40)
    assert line.events() == [
        (0, "synthesize 1 'Your table is booked.'"),
        (20, "turn 1 answered 'Your table is booked.'"),
        (20, "end call message played"),
    ]
    assert not any(isinstance(command, Transcribe | FlushOutput) for _, command in line.log)


def test_the_reply_table_allows_nothing_else() -> None:
    reply = Reply(TurnRecord(turn=1), ConversationConfig(), now=0.0)
    assert reply.state is ReplyState.TRANSCRIBING
    with pytest.raises(ReplyStateError, match="TRANSCRIBING cannot handle played"):
        reply.fire("played")
    reply.fire("cancel")
    for event in ("transcribed", "cancel", "interrupt"):
        with pytest.raises(ReplyStateError):
            reply.fire(event)
    finals = [state for state, moves in TRANSITIONS.items() if not moves]
    assert set(finals) == {ReplyState.DONE, ReplyState.UNANSWERED, ReplyState.CANCELLED,
                           ReplyState.INTERRUPTED, ReplyState.FAILED}  # fmt: skip


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="job_timeout_s"):
        ConversationConfig(job_timeout_s=0)
    with pytest.raises(ValueError, match="greeting"):
        ConversationConfig(greeting="  ")


def test_the_engine_imports_no_clock_thread_socket_or_event_loop() -> None:
    package = Path(__file__).resolve().parent.parent / "sipagent" / "voice" / "conversation"
    forbidden = {"asyncio", "threading", "socket", "time", "concurrent", "multiprocessing", "selectors"}
    for path in [*package.glob("*.py"), package.parent / "jobs.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in forbidden, (path.name, name)


# -- the hold, on real speech: caller voice holds the agent when it arrives, not when it plays -------
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _caller_frames(name: str) -> list[Pcm]:
    from sipagent.replay.capture import load_caller_leg
    from sipagent.rtp.g711 import decode_table

    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return [table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets]


def _greeting_held_at(caller: list[Pcm], onset: int, *, arrivals: bool) -> tuple[int, TurnRecord]:
    """Play ``caller`` over a greeting behind a 100 ms jitter buffer (each frame arrives five ticks
    before it plays) with the real WebRTC VAD and echo guard; the agent's voice is human speech
    too. Returns the tick at which the agent fell silent, having checked it talked until then."""
    conversation = Conversation(
        ConversationConfig(greeting="Thanks for calling the card shop, how can I help?")
    )
    line = Line(conversation)
    line.run(conversation.start(0.0))
    agent_voice = np.concatenate(_caller_frames("speech-librivox-0890.pcap"))
    line.answer(Synthesized(1, agent_voice[4000:28000].copy()))
    line.answer(Synthesized(2, agent_voice[28000:48000].copy()))
    ahead = 5
    for tick, frame in enumerate(caller):
        played = tick - ahead
        inbound = caller[played] if played >= 0 else hiss()[0]
        out = line.queue.pop(0) if line.queue else None
        line.sent.append(out)
        newest = AudioFrame(frame, FrameKind.VOICE, tick * SAMPLES_PER_FRAME) if arrivals else None
        timestamp = max(played, 0) * SAMPLES_PER_FRAME
        frame_in = Frame(AudioFrame(inbound, FrameKind.VOICE, timestamp), out, len(line.queue), newest)
        line.run(conversation.on_frame(frame_in, line.now))
        line.tick += 1
    line.run(conversation.close(line.now))
    record = conversation.records[0]
    assert record.stop_decided_at is not None
    decided = round(record.stop_decided_at / FRAME_SECONDS)
    sent = [out is not None for out in line.sent]
    assert all(sent[onset - 10 : onset])  # the greeting was playing when the caller started
    assert not any(sent[decided + 1 :])  # silent from the tick after the decision on
    return decided, record


def test_caller_voice_holds_the_agent_when_it_arrives_not_when_it_plays() -> None:
    from sipagent.voice.vad import WebRtcVad

    speech = _caller_frames("speech-cards-002.pcap")
    vad = WebRtcVad(2)
    first_voiced = next(i for i, frame in enumerate(speech) if vad.is_speech(frame))
    lead = 60 - first_voiced  # 1.2 s of line hiss while the greeting plays, then the caller
    caller = hiss(lead) + speech[: first_voiced + 40]
    onset = lead + first_voiced
    early, with_arrivals = _greeting_held_at(caller, onset, arrivals=True)
    late, without = _greeting_held_at(caller, onset, arrivals=False)
    # The caller's voice reaches the agent five ticks before it plays: the hold came once 60 ms of
    # it had arrived (three frames), not once that much had played.
    assert onset <= early <= onset + 3
    assert late >= early + 4
    # Either way the onset logged is the caller's first voiced frame (its RTP timestamp).
    for record in (with_arrivals, without):
        assert record.caller_onset_rtp_ts is not None
        assert abs(record.caller_onset_rtp_ts // SAMPLES_PER_FRAME - onset) <= 1


def test_the_end_of_turn_models_verdict_sets_the_pauses_wait() -> None:
    from sipagent.voice.jobs import TurnEndPredicted

    conversation, line = _conversation(predict_turn_end=True, end_of_turn_complete_ms=200)
    noise = Transcript("", 1.0, 0.0, 0.2)  # (each turn's STT heard nothing: the record comes at once)
    # Turn 1 sounds unfinished: its pause at tick 14 waits 800 ms instead of 300 (tick 24).
    line.play(voice(10))
    line.until(15)
    asks = [c for _, c in line.log if isinstance(c, PredictTurnEnd)]
    assert len(asks) == 1 and asks[0].audio.size == 15 * SAMPLES_PER_FRAME  # the turn so far
    line.answer(TurnEndPredicted(asks[0].job, 0.08))
    line.answer(Transcribed(asks[0].job - 1, noise))
    line.until(49)
    assert conversation.records == []  # still waiting for the caller to go on
    line.until(51)
    # Turn 2 (voice 51-60) sounds finished: it ends 200 ms after its last voiced frame, at 70.
    line.play(voice(10))
    line.until(66)
    ask = [c for _, c in line.log if isinstance(c, PredictTurnEnd)][-1]
    line.answer(TurnEndPredicted(ask.job, 0.97))
    line.answer(Transcribed(ask.job - 1, noise))
    line.until(90)
    assert [tick for tick, event in line.events() if event.startswith("turn")] == [49, 70]
    first, second = conversation.records
    assert first.turn_complete_probability == pytest.approx(0.08)
    assert first.end_of_turn_wait_ms == pytest.approx(800)
    assert second.turn_complete_probability == pytest.approx(0.97)
    assert second.end_of_turn_wait_ms == pytest.approx(200)


def test_a_call_with_a_voice_of_its_own_asks_for_it_in_every_synthesis() -> None:
    conversation, line = _conversation(greeting=GREETING, voice="/models/en_GB-alba-medium.onnx")
    commands = line.run(conversation.start(line.now))
    assert [command for command in commands if isinstance(command, Synthesize)] == [
        Synthesize(1, GREETING, "/models/en_GB-alba-medium.onnx")
    ]
