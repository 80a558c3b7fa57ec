"""The conversation's asyncio runner with fake models on threads (LocalInference) and real caller
speech: jobs reach the models, results come back as loop events, commands reach the pacer, and a
call that ends leaves nothing running.

No timing is asserted. After every tick the test lets every job out finish (:func:`settle`), so the
models are "infinitely fast" and each run goes the same way on any machine; the engine's own timing
is stepped tick by tick in test_conversation.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from sipagent.net.conversation import ConversationRunner
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.frames import FRAME_SECONDS, SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from sipagent.rtp.g711 import decode_table
from sipagent.rtp.session import Tick
from sipagent.voice.conversation import Conversation, ConversationConfig, Outcome, TurnRecord
from sipagent.voice.inference import LoadedModels, LocalInference
from tests.fakes import FakeChat, FakeSynthesizer, FakeTranscriber

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _caller_frames(name: str) -> list[Pcm]:
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return [table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets]


def _noise(count: int, seed: int = 1) -> list[Pcm]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 30, SAMPLES_PER_FRAME)).astype(np.int16) for _ in range(count)]


def _rms(frame: Pcm) -> float:
    return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))


class FakeMedia:
    """The pacer's side: frames queued by the runner, one sent per tick, flushable."""

    def __init__(self) -> None:
        self.queue: list[Pcm] = []
        self.sent: list[Pcm | None] = []

    def send_frames(self, frames: list[Pcm]) -> None:
        self.queue.extend(frames)

    def flush_output(self) -> int:
        dropped, self.queue = len(self.queue), []
        return dropped

    def newest_inbound(self) -> AudioFrame | None:
        return None  # no jitter buffer: every frame plays as it arrives

    @property
    def queued_output(self) -> int:
        return len(self.queue)

    def next_outbound(self) -> Pcm | None:
        out = self.queue.pop(0) if self.queue else None
        self.sent.append(out)
        return out

    def voiced_ticks(self) -> list[int]:
        return [i for i, out in enumerate(self.sent) if out is not None and int(np.abs(out).max()) > 200]


async def settle(inference: LocalInference) -> None:
    """Let every job out finish and its results arrive (fakes answer at once on their threads)."""
    for _ in range(10_000):
        if not inference.pending:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{inference.pending} model jobs never finished")


class Call:
    def __init__(self, inference: LocalInference, media: FakeMedia, config: ConversationConfig) -> None:
        self.inference, self.media = inference, media
        self.records: list[TurnRecord] = []
        self.ended: list[str] = []
        self.conversation = Conversation(config, key=1)
        self.tick = 0
        self.runner = ConversationRunner(
            "test",
            self.conversation,
            media,
            inference,
            on_turn=self.records.append,
            on_end_call=self.ended.append,
            clock=lambda: self.tick * FRAME_SECONDS,  # the ticks' own time base
        )

    async def play(self, frames: list[Pcm], *, settled: bool = True) -> None:
        for frame in frames:
            out = self.media.next_outbound()
            inbound = AudioFrame(frame, FrameKind.VOICE, self.tick * SAMPLES_PER_FRAME)
            self.runner.on_tick(Tick(self.tick * FRAME_SECONDS, inbound, out))
            self.tick += 1
            if settled:
                await settle(self.inference)


@pytest.fixture
async def make_call() -> AsyncIterator[Callable[..., Call]]:
    services: list[LocalInference] = []

    def make(
        transcripts: list[str] | Callable[[Pcm], str],
        replies: list[str],
        *,
        token_delay: float = 0.0,
        config: ConversationConfig | None = None,
    ) -> Call:
        models = LoadedModels(FakeTranscriber(transcripts), FakeChat(replies, token_delay=token_delay),
                              FakeSynthesizer(seconds_per_char=0.02))  # fmt: skip
        inference = LocalInference(models, workers=3)
        services.append(inference)
        return Call(inference, FakeMedia(), config or ConversationConfig())

    yield make
    for service in services:
        await service.aclose()


async def test_a_turn_is_transcribed_answered_and_played(make_call: Callable[..., Call]) -> None:
    call = make_call(["ten of clubs"], ["You said ten of clubs. Anything else?"])
    await call.play(_caller_frames("speech-cards-001.pcap") + _noise(200))
    audio = call.media.voiced_ticks()
    assert audio, "the agent never spoke"
    assert len(call.records) == 1
    record = call.records[0]
    assert record.transcript == "ten of clubs" and record.outcome is Outcome.ANSWERED
    assert record.reply == "You said ten of clubs. Anything else?"
    # Nothing before the end of the caller's turn (the speculation is not played early) ...
    assert record.last_voiced_at is not None and audio[0] * FRAME_SECONDS > record.last_voiced_at
    assert record.end_of_turn_wait_ms == pytest.approx(300, abs=20)
    assert record.speculative and record.latency_ms is not None and record.latency_ms > 0
    # ... and the reply plays without a gap once it starts (every tick sends one of its frames).
    played = [i for i, out in enumerate(call.media.sent) if out is not None]
    assert played == list(range(played[0], played[0] + len(played)))
    assert [(t.role, t.text) for t in call.conversation.history] == [
        ("user", "ten of clubs"),
        ("assistant", "You said ten of clubs. Anything else?"),
    ]
    chat = call.inference.models.chat
    assert isinstance(chat, FakeChat) and len(chat.sessions) == 1  # one session for the call's turns
    delivery = call.inference.delivery_ms()
    assert delivery is not None and delivery[0] >= 0
    call.runner.close()
    assert not call.runner.busy


async def test_a_resumed_turn_cancels_the_speculation_and_answers_the_whole_turn(
    make_call: Callable[..., Call],
) -> None:
    call = make_call(
        lambda pcm: "he was not" if pcm.size < 3 * 8000 else "he was not an ill disposed young man",
        ["Noted.", "I see."],
    )
    speech = _caller_frames("speech-librivox-0880.pcap")
    # A 160 ms gap in the middle: a pause (speculation starts), shorter than the 300 ms end of turn.
    loud = [i for i in range(4, len(speech) - 4) if all(_rms(f) > 1000 for f in speech[i - 4 : i + 4])]
    middle = loud[len(loud) // 2]
    await call.play(speech[:middle] + _noise(8) + speech[middle:] + _noise(250))
    assert [t.text for t in call.conversation.history if t.role == "user"] == [
        "he was not an ill disposed young man"
    ]
    assert len(call.records) == 1 and call.records[0].reply
    stt = call.inference.models.transcriber
    assert isinstance(stt, FakeTranscriber) and len(stt.calls) >= 2  # the speculation did transcribe
    call.runner.close()


async def test_closing_mid_reply_cancels_its_jobs_and_leaves_nothing_running(
    make_call: Callable[..., Call],
) -> None:
    call = make_call(["ten of clubs"], [" ".join(["word"] * 200)], token_delay=0.01)
    threads_before = threading.active_count()
    await call.play(_caller_frames("speech-cards-001.pcap") + _noise(20), settled=False)
    for _ in range(1000):  # until the reply is being generated (a word every 10 ms)
        if call.inference.models.chat.sessions and call.runner.busy:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.005)
    assert call.runner.busy, "nothing was running mid-turn: the test would prove nothing"
    call.runner.close()
    assert not call.runner.busy and call.conversation.closed
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await settle(call.inference)  # the cancelled generation stops at its next word
    assert threading.active_count() <= threads_before + 3  # at most the pool's own workers


async def test_a_failing_model_fails_the_turn_and_the_call_goes_on(make_call: Callable[..., Call]) -> None:
    answers = iter(["", "ten of clubs", "ten of clubs", "ten of clubs"])  # (a speculation may retry)

    def transcribe(pcm: Pcm) -> str:
        text = next(answers)
        if not text:
            raise RuntimeError("CUDA out of memory")
        return text

    call = make_call(transcribe, ["Yes."] * 3)
    turn = _caller_frames("speech-cards-001.pcap")
    await call.play(turn + _noise(60) + turn + _noise(200))
    assert [r.outcome for r in call.records] == [Outcome.FAILED, Outcome.ANSWERED]
    assert call.records[0].error == "RuntimeError: CUDA out of memory"
    assert call.records[1].reply == "Yes."
    call.runner.close()


async def test_words_said_into_the_call_then_hang_up(make_call: Callable[..., Call]) -> None:
    call = make_call([], [])
    call.runner.say("Your order has shipped.", hang_up_after="notified")
    await settle(call.inference)
    await call.play(_noise(150))
    assert call.records[0].reply == "Your order has shipped." and call.records[0].scripted
    assert call.ended == ["notified"]
    call.runner.close()
