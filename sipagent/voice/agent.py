"""One call's phone agent: caller frames in, the agent's speech out, inference off the event loop.

Data flow (every 20 ms tick, on the event loop, cheap)::

    Tick.inbound ─► WebRtcVad ─► EchoGuard (is it us?) ─► TurnDetector ─► events
    Tick.outbound ─► EchoGuard.note_outbound; pacer queue ─► Playback.sync_sent (what the caller heard)
    Playback.take ─► RtpSession.send_frames (the pacer holds at most two of our frames)

    PauseStarted ─► Responder (speculative): STT ─► LLM tokens ─► SpokenFilter ─► SentenceChunker
                                             ─► TTS per chunk ─► Playback (plays once committed)
    CallerResumed ─► cancel the speculation      EndOfTurn ─► commit it (or start one, committed)
    caller voice over the agent ─► hold (line silent, place kept)    BargeIn ─► stop + cancel
    RtpSession.newest_inbound ─► ArrivalWatch (VAD + echo guard of its own) ─► hold, before it plays

Inference (faster-whisper, llama.cpp, Piper) is called from worker threads; the models themselves
run in the inference process by default (:mod:`.inference_process`, decision 0011) or in those
threads, so RTP pacing never waits on a model. Each reply is one asyncio task; cancelling it sets the
LLM's cancel event (it stops before the next token), and :meth:`CallAgent.aclose` waits for every
worker job of the call to return, so a call that ends mid-turn leaves nothing running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from ..rtp.frames import FRAME_SECONDS, SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from ..rtp.session import Tick
from .arrival_watch import ArrivalWatch
from .echo_guard import EchoConfig, EchoGuard
from .llm import ChatModel, ChatSession
from .playback import Playback
from .spoken import ChunkerConfig, SentenceChunker, SpokenFilter
from .stt import Transcriber
from .tts import Synthesizer, synthesize_whole, trim_leading_silence
from .turns import BargeIn, CallerResumed, EndOfTurn, PauseStarted, TurnConfig, TurnDetector
from .vad import WebRtcVad

log = logging.getLogger("sipagent.agent")
T = TypeVar("T")

#: Outbound frames quieter than this peak are not the agent's voice (the pacer's silence fill).
_VOICED_PEAK = 200
_SILENCE = np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)


class MediaOut(Protocol):
    """What the agent needs of the call's media engine (:class:`~sipagent.rtp.session.RtpSession`)."""

    def send_frames(self, frames: list[Pcm]) -> None: ...
    def flush_output(self) -> int: ...
    def newest_inbound(self) -> AudioFrame | None: ...
    @property
    def queued_output(self) -> int: ...


_FIRST_WORDS_FAST = ChunkerConfig(first_min_words=3, first_max_chars=28)


@dataclass(frozen=True)
class AgentConfig:
    """Per-call behaviour of the agent (the models are shared, see :class:`Models`)."""

    turn: TurnConfig = field(default_factory=TurnConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
    vad_aggressiveness: int = 2
    #: Caller voice (past the echo guard) over the agent for this long silences the line at once,
    #: keeping the place; the turn detector then decides: barge-in (stop) or a blip (resume).
    hold_after_ms: float = 60.0
    #: Audio kept before the detected speech start, so STT hears the soft onset.
    preroll_ms: float = 200.0
    #: Longest caller turn transcribed (older audio is dropped).
    max_turn_s: float = 30.0
    #: Said when the call starts (None: wait for the caller).
    greeting: str | None = None
    #: How replies are cut for TTS. The first chunk ends at a clause after three words, else at a
    #: word by 28 characters (about five words, 1.5 s of speech): every token waited for before it
    #: is ~25 ms more to the first audio, and Piper's time grows with the chunk, while the LLM
    #: (~40 tokens/s on one core) has the next chunk ready long before those words have played.
    chunker: ChunkerConfig = field(
        default_factory=lambda: ChunkerConfig(first_min_words=3, first_max_chars=28)
    )
    system_prompt: str | None = None


@dataclass
class Models:
    """The process-wide models (or their handles in the inference process), loaded once and shared
    by every call, and the worker threads that call them."""

    transcriber: Transcriber
    chat: ChatModel
    synthesizer: Synthesizer
    executor: Executor
    #: What else :func:`~sipagent.voice.pipeline.close_models` ends: the inference process, if any.
    stop: Callable[[], None] | None = None


@dataclass
class TurnRecord:
    """One exchange and how long it took, logged with each turn (milliseconds)."""

    turn: int
    transcript: str
    reply: str  # what the caller heard of it
    interrupted: bool
    speculative: bool  # the reply started at the pause, before the end of turn
    end_of_turn_wait_ms: float | None = None
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    first_sentence_ms: float | None = None
    tts_first_audio_ms: float | None = None
    #: Last voiced caller frame (its tick) to the agent's first voiced frame leaving (its tick).
    tick_latency_ms: float | None = None
    #: RTP timestamp of the caller's last voiced frame, and when the agent's first voiced frame
    #: left: a host that knows packet arrival times turns these into the on-the-wire latency.
    last_voiced_rtp_ts: int | None = None
    first_voiced_out_at: float | None = None
    last_voiced_at: float | None = None
    #: The caller's voice over this reply: when the line was last silenced for it (hold or
    #: barge-in, a tick time), and the first frame of that voice (its tick and RTP timestamp).
    stop_decided_at: float | None = None
    caller_onset_at: float | None = None
    caller_onset_rtp_ts: int | None = None
    #: How often the line was held for caller voice (a hold that resumed was a blip or backchannel).
    holds: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For JSON logs and ``replay --json``."""
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class _Responder:
    """One reply in the making: STT, then LLM tokens to TTS chunks into a :class:`Playback`."""

    def __init__(
        self, agent: CallAgent, audio: Pcm, *, committed: bool, started_at: float, script: str | None = None
    ) -> None:
        self.agent = agent
        self.audio = audio
        #: Fixed words to say instead of answering the audio (the greeting): no STT, no LLM.
        self.script = script
        self.committed = committed
        self.playback = Playback()
        self.cancel = threading.Event()
        self.record = TurnRecord(
            turn=agent.turns_done + 1, transcript="", reply="", interrupted=False, speculative=not committed
        )
        self.started_at = started_at
        self.task: asyncio.Task[None] | None = None
        #: A cancelled speculation: its user turn and reply leave the history when it ends.
        self.discard = False
        #: How long the history was before this reply added its user turn (None: not yet).
        self.history_mark: int | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"agent-reply-{self.agent.name}")

    async def _run(self) -> None:
        agent, record = self.agent, self.record
        clock = time.monotonic
        try:
            if self.script is not None:
                await self._say_script(self.script, clock)
                return
            t0 = clock()
            transcript = await agent.in_worker(agent.models.transcriber.transcribe, self.audio)
            record.stt_ms = (clock() - t0) * 1000
            record.transcript = transcript.text
            if transcript.likely_silence:
                log.info("call %s: turn heard as silence (%r), not answered", agent.name, transcript.text)
                return
            # One reply at a time uses the call's chat history; a cancelled one leaves it first.
            async with agent.history_lock:
                if self.cancel.is_set():
                    return
                session = agent.chat_session
                mark = self.history_mark = len(session.history)
                session.add_user(transcript.text)
                try:
                    await self._speak(session, clock)
                finally:
                    if self.discard:
                        session.rewind(mark)
                    elif self.playback.stopped and session.history[-1].role == "assistant":
                        # Barge-in: the caller heard only part of it; the history keeps that part.
                        session.record_spoken(self.playback.heard_text())
        finally:
            self.playback.finish()

    async def _say_script(self, script: str, clock: Callable[[], float]) -> None:
        async with self.agent.history_lock:
            session = self.agent.chat_session
            self.history_mark = len(session.history)
            session.add_assistant(script)
            try:
                chunker, start = SentenceChunker(self.agent.config.chunker), clock()
                for chunk in chunker.feed(script) + chunker.flush():
                    await self._say(chunk, clock, start)
            finally:
                if self.playback.stopped:
                    session.record_spoken(self.playback.heard_text())

    async def _speak(self, session: ChatSession, clock: Callable[[], float]) -> None:
        agent, record = self.agent, self.record
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        t_llm = clock()

        def generate() -> None:
            try:
                for piece in session.stream_reply(self.cancel):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        generation = agent.in_worker(generate)
        spoken, chunker = SpokenFilter(), SentenceChunker(agent.config.chunker)
        first = True
        try:
            while (piece := await pieces.get()) is not None:
                if first:
                    record.llm_first_token_ms = (clock() - t_llm) * 1000
                    first = False
                for chunk in chunker.feed(spoken.feed(piece)):
                    await self._say(chunk, clock, t_llm)
            for chunk in chunker.feed(spoken.flush()) + chunker.flush():
                await self._say(chunk, clock, t_llm)
        finally:
            self.cancel.set()
            await asyncio.shield(generation)  # the worker returns at the next token

    async def _say(self, chunk: str, clock: Callable[[], float], t_llm: float) -> None:
        record = self.record
        if record.first_sentence_ms is None:
            record.first_sentence_ms = (clock() - t_llm) * 1000
        t_tts = clock()
        audio = await self.agent.in_worker(synthesize_whole, self.agent.models.synthesizer, chunk)
        if record.tts_first_audio_ms is None:
            record.tts_first_audio_ms = (clock() - t_tts) * 1000
        if self.playback.frames_total == 0:
            audio = trim_leading_silence(audio)  # the caller is waiting: start at the first word
        if audio.size:
            self.playback.add(chunk, audio)


class CallAgent:
    """The voice pipeline of one call (see the module docstring)."""

    def __init__(
        self,
        name: str,
        models: Models,
        media: MediaOut,
        config: AgentConfig | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
    ) -> None:
        self.name = name
        self.models = models
        self.media = media
        self.config = config or AgentConfig()
        self.on_turn = on_turn
        self.vad = WebRtcVad(self.config.vad_aggressiveness)
        self.echo = EchoGuard(self.config.echo)
        #: Caller voice that has arrived but not played yet, for the hold (see arrival_watch.py).
        own_vad = WebRtcVad(self.config.vad_aggressiveness)
        self.arrivals = ArrivalWatch(own_vad, self.config.echo, self.echo.history)
        self.turns = TurnDetector(self.config.turn)
        self.chat_session = models.chat.new_session(self.config.system_prompt)
        self.turns_done = 0
        self.records: list[TurnRecord] = []
        self._preroll: deque[tuple[Pcm, int | None]] = deque(
            maxlen=max(1, round(self.config.preroll_ms / 1000 / FRAME_SECONDS))
        )
        self._turn_audio: list[Pcm] = []
        self._turn_open = False
        self._last_voiced_ts: int | None = None
        self._voice_run = 0
        #: The tick and RTP timestamp of the first frame of the current run of caller voice.
        self._run_start: tuple[float | None, int | None] = (None, None)
        self._hold_frames = max(1, round(self.config.hold_after_ms / 1000 / FRAME_SECONDS))
        self._hold_s = self._hold_frames * FRAME_SECONDS
        self._speculation: _Responder | None = None
        self._speaking: _Responder | None = None  # the reply being played (committed)
        self._jobs: set[asyncio.Future[Any]] = set()
        self.history_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    # -- workers ---------------------------------------------------------------------------------
    def in_worker(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``function`` on the shared worker threads; tracked so :meth:`aclose` can wait for it."""
        future = asyncio.get_running_loop().run_in_executor(self.models.executor, function, *args)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)
        return future

    # -- the tick --------------------------------------------------------------------------------
    def on_tick(self, tick: Tick) -> None:
        """One 20 ms tick of the call: what the caller said, what we sent; runs on the loop."""
        if self.closed:
            return
        speaking = self._speaking
        out = tick.outbound
        # The guards need every frame that went out, silence fill included (None here); the
        # arrival watch's guard shares this history.
        self.echo.note_outbound(out if out is not None else _SILENCE, tick.time)
        if speaking is not None:
            speaking.playback.sync_sent(self.media.queued_output)
        if out is not None and speaking is not None:
            record = speaking.record
            if record.first_voiced_out_at is None and int(np.abs(out).max()) >= _VOICED_PEAK:
                self._note_first_audio(record, tick.time)
        frame = tick.inbound
        samples = frame.samples
        voiced = frame.kind is not FrameKind.SILENCE and self.vad.is_speech(samples)
        agent_on = speaking is not None and speaking.playback.playing
        if voiced and agent_on:
            voiced = self.echo.inbound_is_caller(samples, tick.time)
        self._collect(samples, frame.timestamp, voiced)
        if voiced and self._voice_run == 0:
            self._run_start = (tick.time, frame.timestamp)
        for event in self.turns.push(voiced, tick.time, agent_speaking=agent_on):
            self._handle(event, tick.time)
        if speaking is not None and not speaking.playback.done:
            self.arrivals.update(self.media.newest_inbound(), tick.time)
        self._hold_or_resume(voiced, tick.time)
        self._feed()

    def _collect(self, samples: Pcm, timestamp: int | None, voiced: bool) -> None:
        if voiced:
            self._last_voiced_ts = timestamp
        if self._turn_open:
            self._turn_audio.append(samples)
            limit = round(self.config.max_turn_s / FRAME_SECONDS)
            if len(self._turn_audio) > limit:
                del self._turn_audio[: len(self._turn_audio) - limit]
        else:
            self._preroll.append((samples, timestamp))
            if voiced:
                # A possible turn starts: keep what came just before it for STT's sake.
                self._turn_open = True
                self._turn_audio = [pcm for pcm, _ in self._preroll]
                self._preroll.clear()

    def _hold_or_resume(self, voiced: bool, now: float) -> None:
        speaking = self._speaking
        self._voice_run = self._voice_run + 1 if voiced else 0
        if speaking is None or speaking.playback.done:
            return
        playback, arrivals = speaking.playback, self.arrivals
        arrived = arrivals.voiced_s >= self._hold_s
        if not playback.held and (self._voice_run >= self._hold_frames or arrived):
            playback.hold(self.media.flush_output())
            speaking.record.holds += 1
            # The voice's onset as the stream that saw it first saw it.
            self._note_stop(speaking.record, now, self._run_start if self._voice_run else arrivals.onset)
        elif (
            playback.held
            and self.turns.state.name == "LISTENING"
            and self._voice_run == 0
            and not arrivals.voiced_s
        ):
            playback.resume()  # it was a blip, a cough or a short "mm": carry on

    def _feed(self) -> None:
        speaking = self._speaking
        if speaking is None:
            return
        frames = speaking.playback.take(self.media.queued_output)
        if frames:
            self.media.send_frames(frames)
        if speaking.playback.done and speaking.task is not None and speaking.task.done():
            self._finish_turn(speaking)

    # -- turn events -----------------------------------------------------------------------------
    def _handle(self, event: object, now: float) -> None:
        if isinstance(event, BargeIn):
            self._barge_in(now)
        elif isinstance(event, PauseStarted):
            self._start_reply(committed=False, now=now)
        elif isinstance(event, CallerResumed):
            self._cancel_speculation()
        elif isinstance(event, EndOfTurn):
            self._end_of_turn(event, now)

    def _turn_pcm(self) -> Pcm:
        return np.concatenate(self._turn_audio) if self._turn_audio else np.zeros(0, dtype=np.int16)

    def greet(self, now: float) -> None:
        """Say the configured greeting (the call was just answered); the caller may talk over it."""
        if self.config.greeting:
            self._start_reply(committed=True, now=now, script=self.config.greeting)

    def _start_reply(self, *, committed: bool, now: float, script: str | None = None) -> _Responder:
        self._cancel_speculation()
        audio = np.zeros(0, dtype=np.int16) if script is not None else self._turn_pcm()
        responder = _Responder(self, audio, committed=committed, started_at=now, script=script)
        responder.start()
        assert responder.task is not None
        self._tasks.add(responder.task)
        responder.task.add_done_callback(self._reply_ended)
        if committed:
            self._commit(responder)
        else:
            self._speculation = responder
        return responder

    def _reply_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # A model failed (or the inference process is gone): the caller hears nothing for this
            # turn, and the call goes on; the next turn tries again.
            log.error("call %s: reply failed: %s", self.name, error, exc_info=error)

    def _cancel_speculation(self) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            self._cancel(speculation)

    def _cancel(self, responder: _Responder) -> None:
        responder.discard = True
        responder.cancel.set()
        responder.playback.stop()
        if responder.task is None:
            return
        if not responder.task.done():
            responder.task.cancel()  # it rewinds the history itself on the way out
        elif responder.history_mark is not None:
            # It had already finished its reply: undo that exchange here.
            self.chat_session.rewind(responder.history_mark)

    def _end_of_turn(self, event: EndOfTurn, now: float) -> None:
        self._turn_open = False
        speculation, self._speculation = self._speculation, None
        responder = speculation if speculation is not None else self._start_reply(committed=True, now=now)
        if speculation is not None:
            self._commit(speculation)
        record = responder.record
        record.end_of_turn_wait_ms = (event.at - event.last_voiced_at) * 1000
        record.last_voiced_at = event.last_voiced_at
        record.last_voiced_rtp_ts = self._last_voiced_ts
        self._turn_audio = []

    def _commit(self, responder: _Responder) -> None:
        previous = self._speaking
        if previous is not None and previous is not responder:
            self._stop_speaking(previous, interrupted=True)
        responder.committed = True
        self._speaking = responder

    def _barge_in(self, now: float) -> None:
        speaking = self._speaking
        if speaking is None or speaking.playback.done:
            return
        if not speaking.playback.held:
            self._note_stop(speaking.record, now)
        self.media.flush_output()
        self._stop_speaking(speaking, interrupted=True)
        log.info("call %s: barge-in at %.2f s, the agent stopped", self.name, now)

    def _stop_speaking(self, responder: _Responder, *, interrupted: bool) -> None:
        responder.playback.stop()
        responder.cancel.set()
        responder.record.interrupted = interrupted
        if responder.task is not None and not responder.task.done():
            responder.task.cancel()  # it cuts the history to what was heard on its way out
        else:
            # The reply was fully generated and only playing: cut its history entry here.
            self._keep_heard(responder)
        self._finish_turn(responder)

    def _keep_heard(self, responder: _Responder) -> None:
        session, mark = self.chat_session, responder.history_mark
        history = session.history
        # What this responder added: a user turn and its reply, or a script's one assistant turn.
        added = 1 if responder.script is not None else 2
        if mark is not None and len(history) == mark + added and history[-1].role == "assistant":
            session.record_spoken(responder.playback.heard_text())

    def _note_stop(
        self, record: TurnRecord, now: float, onset: tuple[float | None, int | None] | None = None
    ) -> None:
        record.stop_decided_at = now
        record.caller_onset_at, record.caller_onset_rtp_ts = onset or self._run_start

    def _note_first_audio(self, record: TurnRecord, at: float) -> None:
        record.first_voiced_out_at = at
        if record.last_voiced_at is not None:
            record.tick_latency_ms = (at - record.last_voiced_at - FRAME_SECONDS) * 1000

    def _finish_turn(self, responder: _Responder) -> None:
        if self._speaking is responder:
            self._speaking = None
        record = responder.record
        if any(done is record for done in self.records):
            return
        record.reply = responder.playback.heard_text()
        self.turns_done += 1
        self.records.append(record)
        log.info("call %s turn %d: %s", self.name, record.turn, record.as_dict())
        if self.on_turn is not None:
            self.on_turn(record)

    # -- lifecycle -------------------------------------------------------------------------------
    async def aclose(self, timeout: float = 10.0) -> None:
        """End the call's pipeline: cancel every reply, wait for every worker job to return."""
        self.closed = True
        self.turns.close()
        for responder in (self._speculation, self._speaking):
            if responder is not None:
                responder.cancel.set()
                responder.playback.stop()
        for task in list(self._tasks):
            task.cancel()
        pending = [*self._tasks, *self._jobs]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        speaking = self._speaking
        if speaking is not None and speaking.record.first_voiced_out_at is not None:
            # The call ended while the caller was hearing a reply: the turn happened, log it.
            speaking.record.interrupted = True
            self._finish_turn(speaking)
        self.chat_session.close()

    @property
    def speaking(self) -> bool:
        """A reply is being played (or about to be)."""
        return self._speaking is not None

    @property
    def busy(self) -> bool:
        """Reply tasks or worker jobs of this call are still running."""
        return bool(self._tasks or self._jobs)
