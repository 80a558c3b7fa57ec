"""One call's media and behaviour: the RTP engine, the optional recording, and what the call does
with the caller's audio: ``echo`` mode sends it straight back; ``agent`` mode hands every tick to
the call's conversation (:class:`~sipagent.net.conversation.ConversationRunner` around the sans-IO
:class:`~sipagent.voice.conversation.Conversation`), which queues its replies on the same RTP
session.

The SIP side of the call lives in the endpoint; the server connects the two by Call-ID.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .logs import in_call, outside_calls
from .net.conversation import ConversationRunner, new_conversation_key
from .net.media import MediaTransport
from .net.media_clock import MediaClock
from .rtp.events import DtmfReceived, MediaEvent, MediaTimeout, SourceChanged, SrtpRejected
from .rtp.frames import FrameKind, silence
from .rtp.recorder import CallRecorder
from .rtp.session import NegotiatedStream, RtpSession, RtpSessionConfig, Tick
from .sip.events import Event
from .voice.amd import AmdEvent, AmdPolicy, AmdSession
from .voice.conversation import (
    Conversation,
    ConversationConfig,
    RunTool,
    SendDigits,
    TransferCall,
    TurnRecord,
)
from .voice.inference import InferenceService
from .voice.vad import Vad

log = logging.getLogger("sipagent.call")


@dataclass
class CallOptions:
    """How calls behave; built from the settings by the server."""

    mode: str = "echo"
    bind: str = "0.0.0.0"
    port_min: int = 10000
    port_max: int = 20000
    media_timeout: float = 30.0
    #: Echo mode repeats received DTMF back as RFC 4733 events (so a peer can check ours).
    echo_dtmf: bool = True
    #: Agent mode: the models every call shares, and each call's conversation behaviour.
    inference: InferenceService | None = None
    conversation: ConversationConfig | None = None
    #: Makes each call's voice detectors (None: WebRTC VAD).
    vad: Callable[[], Vad] | None = None


@dataclass(eq=False)  # a live call: identity, not value (the server keeps sets of them)
class Call:
    """Media state of one call."""

    call_id: str
    options: CallOptions
    hangup: Callable[[str], None]
    transport: MediaTransport | None = None
    recorder: CallRecorder | None = None
    digits: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the call was answered or ended (outbound calls wait on it).
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Event | None = None
    started: bool = False
    #: The loop's shared media clock (None: this call arms its own).
    clock: MediaClock | None = None
    #: Agent mode: the conversation, from the answer on (:meth:`start_agent`).
    agent: ConversationRunner | None = None
    #: Told each finished turn of the agent, and each digit the far end pressed.
    on_turn: Callable[[TurnRecord], None] | None = None
    on_dtmf: Callable[[str], None] | None = None
    #: Answering-machine detection between the answer and the agent's start (outbound calls).
    amd: AmdSession | None = None
    on_amd: Callable[[AmdEvent], None] | None = None
    #: Carries out what the agent does beyond speaking (a webhook, a transfer, keys to send).
    on_action: Callable[[RunTool | TransferCall | SendDigits], None] | None = None

    async def open(self) -> int:
        """Bind the media ports; returns the RTP port to put in SDP."""
        loop = asyncio.get_running_loop()
        session = RtpSession(
            ssrc=secrets.randbits(32),
            first_sequence=secrets.randbits(16),
            first_timestamp=secrets.randbits(32),
            cname=f"sipagent-{secrets.token_hex(4)}",
            rng=random.Random(secrets.randbits(64)),
            now=loop.time(),
            wall_offset=time.time() - loop.time(),
            config=RtpSessionConfig(
                # An echo returns exactly what arrives (the caller keeps the line busy); an agent
                # must send silence itself when it has nothing to say.
                fill_silence=self.options.mode != "echo",
                media_timeout=self.options.media_timeout,
            ),
        )
        # The shared media clock runs every call's ticks, in whatever context armed its slot: the
        # callbacks say whose they are, and what the transport arms (clock slots, the RTCP socket's
        # reader) is no call's (the log lines' call_id, sipagent/logs.py).
        on_tick, on_event = in_call(self, self._on_tick), in_call(self, self._on_media_event)
        self.transport = MediaTransport(session, on_tick, on_event, self.clock)
        with outside_calls():
            return await self.transport.bind(self.options.bind, self.options.port_min, self.options.port_max)

    def start_recording(self, path: Path) -> Path | None:
        """From the next tick on, record the call to ``path``: one stereo WAV, the caller's frame on
        the left and ours on the right, tick by tick (decision 0031). Started at the answer, before
        the agent's first word; a second call keeps the first recording. Returns the file recorded
        to (None: the call is over). Raises OSError when the file cannot be written."""
        if self.ended.is_set():
            return None
        if self.recorder is None:
            self.recorder = CallRecorder(path.with_suffix(""), stereo=True, mono=False, both_path=path)
        assert self.recorder.both_path is not None
        return self.recorder.both_path

    @property
    def live_session(self) -> RtpSession | None:
        """The media engine while the call's media is open, else None."""
        if self.transport is None or self.transport.closed:
            return None
        return self.transport.session

    @property
    def session(self) -> RtpSession:
        """The media engine (after :meth:`open`)."""
        assert self.transport is not None
        return self.transport.session

    def apply(self, media: NegotiatedStream) -> None:
        """Follow negotiated media; starts the 20 ms clock the first time (silence until the agent
        starts: early media carries no voice of ours)."""
        if self.transport is None or self.transport.closed:
            return
        self.session.configure(media)
        with outside_calls():  # the clock slots it arms are shared by every call
            if not self.started:
                self.started = True
                self.transport.start()
            else:
                self.transport.pump()

    def start_amd(self, policy: AmdPolicy, on_event: Callable[[AmdEvent], None]) -> None:
        """From now (the 200 OK) the callee's frames go to answering-machine detection, the agent
        silent, until its :class:`~sipagent.voice.amd.AmdAction`; ``on_event`` hears each event."""
        loop = asyncio.get_running_loop()
        vad = self.options.vad() if self.options.vad is not None else None
        self.amd = AmdSession(policy, answered_at=loop.time(), is_speech=vad.is_speech if vad else None)
        self.on_amd = on_event

    def _on_tick(self, tick: Tick) -> None:
        if self.recorder is not None:
            self.recorder.write_inbound(tick.inbound.samples)
            self.recorder.write_outbound(tick.outbound if tick.outbound is not None else silence())
        if self.amd is not None:
            session = self.amd
            events = session.push(tick.inbound.samples, tick.time)
            if session.action is not None:
                self.amd = None  # decided: what comes next is the agent's
            for event in events:
                if self.on_amd is not None:
                    self.on_amd(event)
        if self.agent is not None:
            self.agent.on_tick(tick)
        elif self.options.mode == "echo" and tick.inbound.kind is FrameKind.VOICE:
            self.session.send_frames([tick.inbound.samples])

    def start_agent(self, config: ConversationConfig | None = None) -> None:
        """The call is answered (our 200 OK acknowledged, or the callee's 200 OK): agent mode starts
        the conversation (its greeting) with ``config`` (default: the options'). Once per call."""
        if self.options.mode != "agent" or self.agent is not None or self.ended.is_set():
            return
        inference = self.options.inference
        if inference is None:
            raise RuntimeError("agent mode without loaded models (Server.start loads them)")
        conversation = Conversation(
            config or self.options.conversation, key=new_conversation_key(), vad=self.options.vad
        )
        self.agent = ConversationRunner(
            self.call_id,
            conversation,
            self.session,
            inference,
            on_turn=self.on_turn,
            on_end_call=self.hangup,
            on_action=self.on_action,
        )
        self.agent.start()

    def say(self, text: str, *, interrupt: bool = False, hang_up_after: str | None = None) -> bool:
        """Speak ``text`` into the call; False when the call has no conversation (yet)."""
        if self.agent is None or self.agent.closed:
            return False
        self.agent.say(text, interrupt=interrupt, hang_up_after=hang_up_after)
        return True

    def tool_result(self, call_id: str, content: str) -> None:
        """A tool's result for the conversation (dropped when the call has none)."""
        if self.agent is not None:
            self.agent.tool_result(call_id, content)

    def transfer_failed(self, reason: str) -> None:
        """A transfer did not happen: the conversation tells the caller."""
        if self.agent is not None:
            self.agent.transfer_failed(reason)

    def send_dtmf(self, digits: str) -> bool:
        """Send ``digits`` as RFC 4733 events, one after another; False without a negotiated
        telephone-event payload (or media)."""
        if self.transport is None or self.transport.closed or self.session.dtmf_out is None:
            return False
        for digit in digits:
            self.session.send_dtmf(digit)
        return True

    def _on_media_event(self, event: MediaEvent) -> None:
        if isinstance(event, DtmfReceived):
            log.info("call %s: DTMF %s (%d ms)", self.call_id, event.digit, event.duration_ms)
            self.digits.append(event.digit)
            if self.on_dtmf is not None:
                self.on_dtmf(event.digit)
            if self.agent is not None:
                self.agent.dtmf(event.digit)
            if self.options.mode == "echo" and self.options.echo_dtmf and self.session.dtmf_out is not None:
                self.session.send_dtmf(event.digit, max(40, min(event.duration_ms, 500)))
        elif isinstance(event, MediaTimeout):
            log.warning("call %s: no RTP for %.0f s, hanging up", self.call_id, event.silent_for)
            self.hangup("media-timeout")
        elif isinstance(event, SrtpRejected):
            log.warning(
                "call %s: %d SRTP packets rejected (authentication, replay or malformed)",
                self.call_id,
                event.count,
            )
        elif isinstance(event, SourceChanged):
            log.info("call %s: RTP source changed to %#010x", self.call_id, event.new_ssrc)

    def close(self) -> None:
        """Release media and finish the recording."""
        if self.transport is not None and not self.transport.closed:
            session = self.session
            sent = session.pacer.stats()
            p50, p99 = self.transport.send_error_percentiles()
            log.info(
                "call %s media: received %d, sent %d (audio %d, silence %d, dtmf %d), jitter buffer lost %d"
                " late %d, send error p50 %.2f ms p99 %.2f ms",
                self.call_id,
                session.stats.received,
                sent.packets_sent,
                sent.audio_packets,
                sent.silence_packets,
                sent.event_packets,
                session.jitter.stats.lost,
                session.jitter.stats.late,
                p50,
                p99,
            )
            self.transport.close()
        if self.recorder is not None:
            self.recorder.close()
        if self.agent is not None:
            self.agent.close()  # cancels its model jobs; nothing of the call keeps running
        self.ended.set()
        self.settled.set()
