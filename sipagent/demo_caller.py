"""The caller of ``sipagent demo``: a SIP user agent on loopback, made of the server's own engine.

It is the same sans-IO :class:`~sipagent.sip.endpoint.SipEndpoint` behind the same asyncio adapter
(:class:`~sipagent.net.sip_transport.SipNetwork`) the server runs, so the demo's call crosses real
sockets with real SIP (INVITE with a G.711 offer, 100/180/200, ACK, BYE) and real RTP. The media
side is a plain phone: one UDP socket, a 20 ms frame at a time on an absolute schedule (a late
wake-up sends its frames at once, never drifts), sequence numbers and timestamps as RFC 3550 wants.

Like a phone's microphone the line is never silent: between utterances the caller sends faint noise
(the agent's end-of-turn detection measures each call's noise floor, and real phones send RTP all
the time). What comes back is decoded and its loud frames counted: that is how the demo knows the
agent's voice really arrived, and when it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .net.sip_transport import SipNetwork
from .replay.capture import load_caller_leg
from .rtp.frames import Pcm
from .rtp.g711 import decode, encode
from .rtp.packet import RtpPacket, RtpParseError
from .sip.context import EndpointConfig
from .sip.endpoint import SipEndpoint
from .sip.events import CallAnswered, CallEnded, CallFailed, Event
from .sip.offer_answer import NegotiatedMedia
from .sip.uri import SipUri

#: G.711 at 8 kHz, 20 ms a packet.
SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
#: A frame whose peak is above this carries the agent's voice (its silence fill and PLC stay far
#: below; the same threshold as tests/test_agent_e2e.py).
VOICED_PEAK = 200
#: The noise between utterances: about -64 dBFS, a quiet room through a handset.
NOISE_RMS = 20.0


def load_utterance(path: Path) -> Pcm:
    """The caller's audio of a capture (its RTP caller leg, decoded): what the demo's caller says."""
    leg = load_caller_leg(path)
    payloads = [p.packet.payload for p in leg.packets if p.packet.payload_type == leg.payload_type]
    return decode(b"".join(payloads), leg.codec)


@dataclass(frozen=True)
class Answered:
    """The call is up: its Call-ID and the media both ends agreed on."""

    call_id: str
    media: NegotiatedMedia


class _RtpSocket(asyncio.DatagramProtocol):
    def __init__(self, caller: DemoCaller) -> None:
        self.caller = caller

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.caller._on_rtp(data)


class DemoCaller:
    """Dials the server, says utterances into the call, listens to the agent, hangs up."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.network: SipNetwork | None = None
        self.endpoint: SipEndpoint | None = None
        self.call_id: str | None = None
        #: Set once the call is over (a CallEnded or CallFailed arrived), with that event.
        self.ended = asyncio.Event()
        self.end: CallEnded | CallFailed | None = None
        #: 20 ms frames of the agent's voice that arrived, and when the last one did (loop time).
        self.voiced_frames = 0
        self.last_voiced_at: float | None = None
        self._settled: asyncio.Future[CallAnswered | CallFailed | CallEnded] | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._speech: deque[tuple[Pcm, asyncio.Future[None]]] = deque()
        self._noise = np.random.default_rng(8000).normal(0, NOISE_RMS, SAMPLE_RATE).astype(np.int16)

    @property
    def sip_port(self) -> int:
        assert self.network is not None
        return self.network.bound["udp"]

    @property
    def voiced_seconds(self) -> float:
        """How much of the agent's voice came back over RTP."""
        return self.voiced_frames * FRAME_SECONDS

    async def start(self) -> None:
        """Bind the SIP and RTP sockets (any free ports on ``host``)."""
        loop = asyncio.get_running_loop()
        network = SipNetwork(self._on_event)
        port = await network.listen_udp(self.host, 0)
        self.endpoint = SipEndpoint(
            EndpointConfig(
                public_host=self.host,
                ports={"udp": port},
                contact_user="demo-caller",
                user_agent="sipagent-demo-caller",
                session_expires=None,
            )
        )
        network.attach(self.endpoint)
        self.network = network
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpSocket(self), local_addr=(self.host, 0)
        )
        self._rtp = transport

    async def dial(self, target: SipUri, timeout: float) -> Answered | CallFailed | CallEnded:
        """INVITE ``target`` and wait for the answer (then start the media) or the failure."""
        assert self.endpoint is not None and self.network is not None and self._rtp is not None
        self._settled = asyncio.get_running_loop().create_future()
        rtp_port = int(self._rtp.get_extra_info("sockname")[1])
        self.call_id = self.endpoint.invite(
            target, self.network.now(), rtp_port=rtp_port, from_uri=SipUri(host=self.host, user="demo-caller")
        )
        self.network.pump()
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self._settled), timeout)
        except TimeoutError:
            self.hang_up()
            return CallFailed(self.call_id, 408, f"no answer in {timeout:g} s")
        if isinstance(outcome, CallAnswered):
            if outcome.media is None:  # the endpoint always negotiates an answer to our offer
                self.hang_up()
                return CallFailed(outcome.call_id, 488, "the answer carried no media")
            self._sender = asyncio.get_running_loop().create_task(self._send(outcome.media))
            return Answered(outcome.call_id, outcome.media)
        return outcome

    async def say(self, audio: Pcm) -> None:
        """Send ``audio`` into the call (after anything queued before it); returns once it is sent."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._speech.append((audio, done))
        await done

    async def wait_quiet(self, quiet: float, timeout: float) -> bool:
        """Wait until no voiced frame of the agent has arrived for ``quiet`` seconds (False: it was
        still talking after ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not self.ended.is_set():
            last = self.last_voiced_at
            if last is None or loop.time() - last >= quiet:
                return True
            await asyncio.sleep(min(quiet, deadline - loop.time()))
        return self.ended.is_set()

    def hang_up(self) -> None:
        """BYE (or CANCEL before the answer); the end comes as :attr:`ended`."""
        if self.endpoint is None or self.network is None or self.call_id is None or self.ended.is_set():
            return
        with contextlib.suppress(Exception):  # the call may be over already
            self.endpoint.hangup(self.call_id, self.network.now())
        self.network.pump()

    async def close(self) -> None:
        """Stop the media and close every socket."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for _, done in self._speech:
            if not done.done():
                done.cancel()
        if self._rtp is not None:
            self._rtp.close()
        if self.network is not None:
            await self.network.close()

    # -- inside ------------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        settled = self._settled
        if isinstance(event, CallAnswered | CallFailed | CallEnded) and settled and not settled.done():
            settled.set_result(event)
        if isinstance(event, CallFailed | CallEnded):
            self.end = event
            self.ended.set()

    def _on_rtp(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            return  # RTCP on the RTP port, or noise
        if packet.payload_type in (0, 8) and packet.payload:
            pcm = decode(packet.payload, "PCMU" if packet.payload_type == 0 else "PCMA")
            if int(np.abs(pcm.astype(np.int32)).max()) > VOICED_PEAK:
                self.voiced_frames += 1
                self.last_voiced_at = asyncio.get_running_loop().time()

    def _next_frame(self, noise_at: int) -> Pcm:
        """The next 20 ms: the utterance being said, else the room's noise."""
        while self._speech:
            audio, done = self._speech[0]
            if audio.size:
                frame = audio[:FRAME_SAMPLES]
                self._speech[0] = (audio[FRAME_SAMPLES:], done)
                if frame.size < FRAME_SAMPLES:
                    frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - frame.size, np.int16)])
                return frame
            self._speech.popleft()
            if not done.done():
                done.set_result(None)
        start = noise_at % (self._noise.size - FRAME_SAMPLES)
        return self._noise[start : start + FRAME_SAMPLES]

    async def _send(self, media: NegotiatedMedia) -> None:
        """One packet every 20 ms on an absolute schedule, from the answer to the hang-up."""
        assert self._rtp is not None
        loop = asyncio.get_running_loop()
        ssrc, sequence, timestamp = secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
        destination = (media.remote_address, media.remote_port)
        start = loop.time()
        n = 0
        try:
            while not self.ended.is_set():
                frame = self._next_frame(n * FRAME_SAMPLES)
                packet = RtpPacket(
                    payload_type=media.payload_type,
                    sequence_number=(sequence + n) & 0xFFFF,
                    timestamp=(timestamp + n * FRAME_SAMPLES) & 0xFFFFFFFF,
                    ssrc=ssrc,
                    payload=encode(frame, media.codec),
                    marker=n == 0,
                )
                if media.send:
                    self._rtp.sendto(packet.serialize(), destination)
                n += 1
                delay = start + n * FRAME_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            # The call is over: whatever was still to be said never will be.
            while self._speech:
                _, done = self._speech.popleft()
                if not done.done():
                    done.set_result(None)
