"""The call agent's control flow with fake models and real caller speech: turns, speculation,
hold and resume, barge-in, history, and a clean shutdown mid-turn.

The frames are real: the caller is the human speech of the fixtures (through the jitter-buffer
frame type the media engine hands out), so WebRTC VAD and the turn detector see what they would
on a call. Only the models are fakes (livekit-style): the real ones are tested on real audio in
test_stt/test_llm/test_tts and end to end by replay.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.frames import FRAME_SECONDS, SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from sipagent.rtp.g711 import decode_table
from sipagent.rtp.session import Tick
from sipagent.voice.agent import AgentConfig, CallAgent, Models, TurnRecord
from sipagent.voice.llm import FakeChat
from sipagent.voice.stt import FakeTranscriber
from sipagent.voice.tts import FakeSynthesizer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _caller_frames(name: str) -> list[Pcm]:
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return [table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets]


def _rms(frame: Pcm) -> float:
    return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))


def _noise(count: int, seed: int = 1) -> list[Pcm]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 30, SAMPLES_PER_FRAME)).astype(np.int16) for _ in range(count)]


class SpeechSynthesizer(FakeSynthesizer):
    """Like FakeSynthesizer, but the "voice" is recorded human speech instead of a tone: a tone
    is no test of the echo guard (a pure sinusoid correlates with any voice at some lag)."""

    def __init__(self) -> None:
        super().__init__()
        self.voice = np.concatenate(_caller_frames("speech-librivox-0890.pcap"))

    def synthesize(self, text: str) -> Iterator[Pcm]:
        self.texts.append(text)
        count = min(self.voice.size, round(len(text) * 0.06 * 8000))
        yield self.voice[4000 : 4000 + count].copy()


class FakeMedia:
    """The pacer's side: frames queued by the agent, one sent per tick, flushable."""

    def __init__(self) -> None:
        self.queue: list[Pcm] = []
        self.sent: list[Pcm | None] = []
        self.flushes = 0

    def send_frames(self, frames: list[Pcm]) -> None:
        self.queue.extend(frames)

    def flush_output(self) -> int:
        dropped, self.queue = len(self.queue), []
        self.flushes += 1
        return dropped

    @property
    def queued_output(self) -> int:
        return len(self.queue)

    def newest_inbound(self) -> AudioFrame | None:
        return None  # no jitter buffer: every frame plays as it arrives

    def next_outbound(self) -> Pcm | None:
        out = self.queue.pop(0) if self.queue else None
        self.sent.append(out)
        return out


class Harness:
    def __init__(self, agent: CallAgent, media: FakeMedia) -> None:
        self.agent, self.media = agent, media
        self.now = 0.0
        self.ticks = 0

    async def play(self, frames: list[Pcm], *, realtime_share: float = 0.25) -> None:
        """One tick per frame; the loop gets a share of real time so workers can progress."""
        for frame in frames:
            out = self.media.next_outbound()
            tick = Tick(self.now, AudioFrame(frame, FrameKind.VOICE, self.ticks * SAMPLES_PER_FRAME), out)
            self.agent.on_tick(tick)
            self.now += FRAME_SECONDS
            self.ticks += 1
            await asyncio.sleep(FRAME_SECONDS * realtime_share)

    def agent_audio_ticks(self) -> list[int]:
        return [
            i for i, out in enumerate(self.media.sent) if out is not None and int(np.abs(out).max()) > 200
        ]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="test-agent")
    yield pool
    pool.shutdown(wait=True)


def _agent(
    executor: ThreadPoolExecutor,
    *,
    transcripts: list[str] | Callable[[Pcm], str],
    replies: list[str],
    stt_delay: float = 0.0,
    token_delay: float = 0.0,
    records: list[TurnRecord] | None = None,
) -> tuple[CallAgent, FakeMedia, FakeChat, FakeTranscriber]:
    chat = FakeChat(replies, token_delay=token_delay)
    stt = FakeTranscriber(transcripts, delay=stt_delay)
    models = Models(stt, chat, SpeechSynthesizer(), executor)
    media = FakeMedia()
    agent = CallAgent(
        "test", models, media, AgentConfig(), on_turn=records.append if records is not None else None
    )
    return agent, media, chat, stt


async def test_a_turn_is_transcribed_answered_and_played(executor: ThreadPoolExecutor) -> None:
    records: list[TurnRecord] = []
    agent, media, chat, _ = _agent(
        executor,
        transcripts=["ten of clubs"],
        replies=["You said ten of clubs. Anything else?"],
        records=records,
    )
    harness = Harness(agent, media)
    await harness.play(_caller_frames("speech-cards-001.pcap") + _noise(250))
    audio = harness.agent_audio_ticks()
    assert audio, "the agent never spoke"
    assert len(records) == 1
    record = records[0]
    assert record.transcript == "ten of clubs" and not record.interrupted
    assert record.reply == "You said ten of clubs. Anything else?"
    # Nothing before the end of the caller's turn (the speculation is not played early) ...
    assert record.last_voiced_at is not None and audio[0] * FRAME_SECONDS > record.last_voiced_at
    assert record.end_of_turn_wait_ms is not None and record.end_of_turn_wait_ms <= 320
    assert record.tick_latency_ms is not None and record.tick_latency_ms > 0
    # ... and the reply plays without a gap once it starts (every tick sends one of its frames).
    played = [i for i, out in enumerate(media.sent) if out is not None]
    assert played == list(range(played[0], played[0] + len(played)))
    history = chat.sessions[0].history
    assert [(t.role, t.text) for t in history] == [
        ("user", "ten of clubs"),
        ("assistant", "You said ten of clubs. Anything else?"),
    ]
    await agent.aclose()
    assert not agent.busy


async def test_a_resumed_turn_cancels_the_speculation_and_answers_the_whole_turn(
    executor: ThreadPoolExecutor,
) -> None:
    agent, media, chat, stt = _agent(
        executor,
        transcripts=lambda pcm: (
            "he was not" if pcm.size < 3 * 8000 else "he was not an ill disposed young man"
        ),
        replies=["Noted.", "I see."],
    )
    harness = Harness(agent, media)
    speech = _caller_frames("speech-librivox-0880.pcap")
    # A 200 ms gap in the middle: long enough for a pause (speculation starts), shorter than the
    # 300 ms end of turn.
    loud = [i for i in range(4, len(speech) - 4) if all(_rms(f) > 1000 for f in speech[i - 4 : i + 4])]
    middle = loud[len(loud) // 2]
    await harness.play(speech[:middle] + _noise(8) + speech[middle:] + _noise(250))
    history = chat.sessions[0].history
    assert [t.text for t in history if t.role == "user"] == ["he was not an ill disposed young man"]
    assert agent.records[-1].reply  # answered, once, after the whole turn
    assert len(agent.records) == 1
    assert len(stt.calls) >= 2  # the speculation did transcribe
    await agent.aclose()


async def test_closing_mid_turn_leaves_no_task_or_worker_running(executor: ThreadPoolExecutor) -> None:
    agent, media, _, _ = _agent(
        executor,
        transcripts=["ten of clubs"],
        replies=["one two three four five six seven"],
        token_delay=0.05,
    )
    harness = Harness(agent, media)
    threads_before = threading.active_count()
    await harness.play(_caller_frames("speech-cards-001.pcap") + _noise(20))
    assert agent.busy
    await agent.aclose()
    assert not agent.busy
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("agent-reply")]
    executor.submit(lambda: None).result(timeout=1)  # the pool is idle, not stuck in our work
    assert threading.active_count() <= threads_before + 3  # at most the pool's own workers


class JitteredMedia(FakeMedia):
    """FakeMedia behind a jitter buffer ``ahead`` frames deep: each caller frame has arrived
    (``newest_inbound``) ``ahead`` ticks before the agent's tick plays it."""

    def __init__(self, ahead: int, *, shows_arrivals: bool = True) -> None:
        super().__init__()
        self.ahead = ahead
        self.shows_arrivals = shows_arrivals  # False: a media engine that only hands out what plays
        self.arrived: list[Pcm] = []

    def newest_inbound(self) -> AudioFrame | None:
        if not self.shows_arrivals or not self.arrived:
            return None
        index = len(self.arrived) - 1
        return AudioFrame(self.arrived[index], FrameKind.VOICE, index * SAMPLES_PER_FRAME)


async def _greeting_held_at(
    executor: ThreadPoolExecutor, caller: list[Pcm], onset: int, *, arrivals: bool
) -> tuple[int, TurnRecord]:
    """Play ``caller`` over a greeting, behind a 100 ms jitter buffer: the tick at which the agent
    decided to fall silent, checking that it was talking until the caller's ``onset`` and quiet after."""
    records: list[TurnRecord] = []
    models = Models(FakeTranscriber(["hello"]), FakeChat(["Hi."]), SpeechSynthesizer(), executor)
    media = JitteredMedia(ahead := 5, shows_arrivals=arrivals)
    config = AgentConfig(greeting="Thanks for calling the card shop, how can I help you today?")
    agent = CallAgent("test", models, media, config, on_turn=records.append)
    agent.greet(0.0)
    sent: list[bool] = []
    for tick, frame in enumerate(caller):
        media.arrived.append(frame)
        played = tick - ahead
        inbound = caller[played] if played >= 0 else _noise(1, seed=tick)[0]
        out = media.next_outbound()
        sent.append(out is not None)
        timestamp = max(played, 0) * SAMPLES_PER_FRAME
        agent.on_tick(Tick(tick * FRAME_SECONDS, AudioFrame(inbound, FrameKind.VOICE, timestamp), out))
        await asyncio.sleep(FRAME_SECONDS * 0.25)
    await agent.aclose()
    record = records[0]
    assert record.stop_decided_at is not None
    decided = round(record.stop_decided_at / FRAME_SECONDS)
    assert all(sent[onset - 10 : onset])  # the greeting was playing when the caller started
    assert not any(sent[decided + 2 :])  # silent within two frames of the decision, and after
    return decided, record


async def test_caller_voice_holds_the_agent_when_it_arrives_not_when_it_plays(
    executor: ThreadPoolExecutor,
) -> None:
    from sipagent.voice.vad import WebRtcVad

    speech = _caller_frames("speech-cards-002.pcap")
    vad = WebRtcVad(2)
    first_voiced = next(i for i, frame in enumerate(speech) if vad.is_speech(frame))
    # 1.2 s of line noise while the greeting plays, then the caller talks over it.
    lead = 60 - first_voiced
    caller = _noise(lead) + speech[: first_voiced + 40]
    onset = lead + first_voiced
    early, with_arrivals = await _greeting_held_at(executor, caller, onset, arrivals=True)
    late, without = await _greeting_held_at(executor, caller, onset, arrivals=False)
    # Behind a 100 ms buffer the caller's voice reaches the agent five ticks before it plays: the
    # hold came once 60 ms of it had arrived (three frames), not once that much had played.
    assert onset <= early <= onset + 3  # (this VAD has heard the noise: it may start a frame early)
    assert late >= early + 4
    # Either way the onset logged is the caller's first voiced frame (its RTP timestamp).
    for record in (with_arrivals, without):
        assert record.caller_onset_rtp_ts is not None
        assert abs(record.caller_onset_rtp_ts // SAMPLES_PER_FRAME - onset) <= 1
