"""One call's media, sans-IO: RTP/RTCP datagrams in and out, one 20 ms frame each way per tick.

Data flow::

    receive_rtp ─► SRTP unprotect ─► parse ─► audio PT ─► JitterBuffer ──┐  every tick (t0 + n·20 ms):
                                         ├─► telephone-event ─► DtmfReceiver ─► DtmfReceived
                                         └─► CN / other: counted          ├─► pop one inbound frame
    send_frames / send_dtmf ─► Pacer queue ─► (tick) encode ─► SRTP protect ┴─► one outbound packet
    RTCP: ReceptionStats per source, SR/RR every ~5 s on the RTCP port, the peer's reports kept.

One clock drives both directions: each tick pops exactly one inbound frame (what the caller said in
those 20 ms, concealed if lost) and sends exactly one outbound packet (the agent's audio, silence
when it has nothing, or a DTMF update). The app drains :class:`Tick` objects with :meth:`next_tick`:
the inbound frame and the PCM that went out, time-aligned for VAD, barge-in and recording.

Security (sip-trunks.md, RFC 3711): with SRTP only packets that authenticate latch the peer's
address or reset the media timeout, so forged packets cannot steal the media path.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from .dtmf import DtmfReceiver, DtmfSender
from .events import MediaEvent, MediaTimeout, SourceChanged, SrtpRejected
from .frames import FRAME_SECONDS, AudioFrame, FrameKind, Pcm, silence
from .g711 import encode_table
from .jitter import JitterBuffer
from .pacer import Pacer
from .packet import RtpPacket, RtpParseError
from .rtcp import RtcpParseError, RtcpScheduler
from .srtp import SrtpParams, SrtpSession

Addr = tuple[str, int]
COMFORT_NOISE_PT = 13
#: Ticks handled in one ``handle_timer`` call at most; a longer stall skips ahead (the pacer too).
_MAX_CATCH_UP_TICKS = 10
#: How early a tick may be handled (the pacer allows the same).
_EARLY_S = 0.001
#: Report rejected SRTP packets at most this often (a flood must not flood the app too).
_SRTP_REPORT_INTERVAL = 1.0


class NegotiatedStream(Protocol):
    """What the media engine needs from an offer/answer outcome
    (:class:`sipagent.sip.offer_answer.NegotiatedMedia` has these fields); a Protocol so the RTP
    layer does not depend on the SIP layer."""

    @property
    def codec(self) -> str: ...
    @property
    def payload_type(self) -> int: ...
    @property
    def dtmf_payload_type(self) -> int | None: ...
    @property
    def receive_dtmf_payload_type(self) -> int | None: ...
    @property
    def cn_payload_type(self) -> int | None: ...
    @property
    def remote_address(self) -> str: ...
    @property
    def remote_port(self) -> int: ...
    @property
    def remote_rtcp_address(self) -> str: ...
    @property
    def remote_rtcp_port(self) -> int: ...
    @property
    def send(self) -> bool: ...
    @property
    def receive(self) -> bool: ...
    @property
    def srtp(self) -> SrtpParams | None: ...


@dataclass(frozen=True)
class RtpSessionConfig:
    """Media behaviour of one call."""

    #: Send silence when there is nothing to say (carriers drop calls that go quiet on RTP).
    fill_silence: bool = True
    #: Seconds without any inbound RTP before :class:`MediaTimeout` (0 disables).
    media_timeout: float = 30.0
    jitter_min_ms: float = 20.0
    jitter_max_ms: float = 200.0
    jitter_start_ms: float = 60.0
    rtcp_interval: float = 5.0


# These two are made for every call on every tick: a written-out __init__ is compiled (mypyc),
# a dataclass-generated one is not (see AudioFrame). Treat them as immutable.
@dataclass(slots=True, init=False)
class Tick:
    """What one 20 ms tick carried: the caller's frame and the samples we sent (None: nothing sent)."""

    time: float
    inbound: AudioFrame
    outbound: Pcm | None

    def __init__(self, time: float, inbound: AudioFrame, outbound: Pcm | None) -> None:
        self.time = time
        self.inbound = inbound
        self.outbound = outbound


@dataclass(slots=True, init=False)
class MediaDatagram:
    """Bytes to send; ``rtcp`` says which of the call's two sockets sends them."""

    data: bytes
    destination: Addr
    rtcp: bool

    def __init__(self, data: bytes, destination: Addr, rtcp: bool) -> None:
        self.data = data
        self.destination = destination
        self.rtcp = rtcp


@dataclass
class RtpSessionStats:
    """Counters of the receive side that no sub-component owns."""

    received: int = 0
    malformed: int = 0
    foreign_payload: int = 0
    comfort_noise: int = 0
    rtcp_received: int = 0
    rtcp_malformed: int = 0


class RtpSession:
    """The media engine of one call (see the module docstring)."""

    def __init__(
        self,
        *,
        ssrc: int,
        first_sequence: int,
        first_timestamp: int,
        cname: str,
        rng: random.Random,
        now: float,
        wall_offset: float,
        config: RtpSessionConfig | None = None,
    ) -> None:
        """``wall_offset`` turns the monotonic ``now`` into wall-clock seconds for RTCP's NTP
        timestamps (``time.time() - loop.time()``, measured by the adapter once)."""
        self.config = config or RtpSessionConfig()
        self._wall_offset = wall_offset
        self._sent_pcm: list[Pcm] = []
        self.codec = "PCMU"
        self.payload_type = 0
        self.pacer = Pacer(
            ssrc=ssrc,
            first_sequence=first_sequence,
            first_timestamp=first_timestamp,
            payload_type=0,
            encode=self._recording_encoder("PCMU"),
            fill_silence=self.config.fill_silence,
        )
        self._sent_pcm.clear()  # the pacer encoded its silence payload once; that was no tick
        self.jitter = JitterBuffer(
            "PCMU",
            min_delay_ms=self.config.jitter_min_ms,
            max_delay_ms=self.config.jitter_max_ms,
            start_delay_ms=self.config.jitter_start_ms,
        )
        self.rtcp = RtcpScheduler(ssrc, cname, rng=rng, now=now, interval=self.config.rtcp_interval)
        self.dtmf_in: DtmfReceiver | None = None
        self.dtmf_out: DtmfSender | None = None
        self.cn_payload_type: int | None = None
        self.srtp: SrtpSession | None = None
        self.remote: Addr | None = None
        self.remote_rtcp: Addr | None = None
        self._latched = False
        self._rtcp_latched = False
        self.receiving = True
        self.stats = RtpSessionStats()
        self._t0: float | None = None
        self._ticks = 0
        #: Ticks whose outbound half ran (send_due), ahead of ``_ticks`` by what awaits handle_timer,
        #: and the PCM each of them sent (None: silence, an event or nothing).
        self._sent_ticks = 0
        self._sent_for_tick: deque[Pcm | None] = deque()
        self._ticks_out: deque[Tick] = deque()
        self._out: list[MediaDatagram] = []
        self._events: deque[MediaEvent] = deque()
        self._last_heard = now
        self._timed_out = False
        self._srtp_reported = 0
        self._srtp_report_at = 0.0

    # ------------------------------------------------------------------ setup
    def _recording_encoder(self, codec: str) -> Callable[[Pcm], bytes]:
        table = encode_table(codec)

        def encode_and_note(pcm: Pcm) -> bytes:
            # The pacer calls this exactly when a queued frame goes out: that is what the far
            # end hears, which is what the recorder and barge-in logic need to know.
            self._sent_pcm.append(pcm)
            return table.take(pcm.view(np.uint16)).tobytes()

        return encode_and_note

    def configure(self, media: NegotiatedStream) -> None:
        """Apply an offer/answer outcome (initial, re-INVITE, hold, codec or address change)."""
        if media.codec != self.codec or media.payload_type != self.payload_type:
            self.codec, self.payload_type = media.codec, media.payload_type
            self.pacer.set_codec(media.payload_type, self._recording_encoder(media.codec))
            self._sent_pcm.clear()
            self.jitter.set_codec(media.codec)
        receive_pt = media.receive_dtmf_payload_type or media.dtmf_payload_type
        if receive_pt is None:
            self.dtmf_in = None
        elif self.dtmf_in is None or self.dtmf_in.payload_type != receive_pt:
            self.dtmf_in = DtmfReceiver(receive_pt)
        self.dtmf_out = DtmfSender(media.dtmf_payload_type) if media.dtmf_payload_type is not None else None
        self.cn_payload_type = media.cn_payload_type
        if not self._latched:
            self.remote = (media.remote_address, media.remote_port)
        if not self._rtcp_latched:
            self.remote_rtcp = (media.remote_rtcp_address, media.remote_rtcp_port)
        if media.send and self.pacer.paused:
            self.pacer.resume()
        elif not media.send and not self.pacer.paused:
            self.pacer.pause()
        self.receiving = media.receive
        if media.srtp is None:
            self.srtp = None
        elif self.srtp is None:
            self.srtp = SrtpSession(media.srtp)
        elif self.srtp.params != media.srtp:
            # Same session, new keys: rebuilding it would reset the rollover counter.
            self.srtp.update(media.srtp)

    def start(self, now: float) -> None:
        """Start the 20 ms clock (call when the call is answered)."""
        self._t0 = now
        self._last_heard = now
        self.pacer.start(now)

    # ------------------------------------------------------------------ input
    def receive_rtp(self, data: bytes, source: Addr, now: float) -> None:
        """A datagram on the RTP port."""
        if self.srtp is not None:
            clear = self.srtp.unprotect(data)
            if clear is None:
                self._note_srtp_rejection(now)
                return
            data = clear
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self.stats.malformed += 1
            return
        self.stats.received += 1
        self._latch(source)
        self._last_heard = now
        self._timed_out = False
        pt = packet.payload_type
        if pt == self.payload_type:
            self.rtcp.on_rtp_received(packet, now)
            for change in self.jitter.push(packet, now):
                self._events.append(change)
        elif self.dtmf_in is not None and pt == self.dtmf_in.payload_type:
            self.rtcp.on_rtp_received(packet, now)
            self._events.extend(self.dtmf_in.receive(packet, now))
            # Senders pause audio during an event (RFC 4733 §2.5.1.2) but its packets use
            # sequence numbers: shown to the jitter buffer without audio, the pause reads as
            # a pause (silence), not as lost packets to conceal.
            self.jitter.push(replace(packet, payload=b""), now)
        elif pt == COMFORT_NOISE_PT or pt == self.cn_payload_type:
            self.stats.comfort_noise += 1
            self.jitter.push(replace(packet, payload=b""), now)  # DTX: the gap is silence
        else:
            self.stats.foreign_payload += 1

    def receive_rtcp(self, data: bytes, source: Addr, now: float) -> None:
        """A datagram on the RTCP port."""
        if self.srtp is not None:
            clear = self.srtp.unprotect_rtcp(data)
            if clear is None:
                self._note_srtp_rejection(now)
                return
            data = clear
        try:
            self.rtcp.receive(data, now, now + self._wall_offset)
        except RtcpParseError:
            self.stats.rtcp_malformed += 1
            return
        self.stats.rtcp_received += 1
        if not self._rtcp_latched or self.remote_rtcp != source:
            self.remote_rtcp, self._rtcp_latched = source, True
        self._last_heard = now

    def _latch(self, source: Addr) -> None:
        # Symmetric RTP: answer where the peer really sends from (NAT, media relays), and follow
        # it if it moves; only authenticated packets get here when SRTP is on.
        if not self._latched or self.remote != source:
            self.remote, self._latched = source, True

    def _note_srtp_rejection(self, now: float) -> None:
        assert self.srtp is not None
        if now >= self._srtp_report_at:
            rejected = self.srtp.stats.rejected
            self._events.append(SrtpRejected(rejected - self._srtp_reported))
            self._srtp_reported = rejected
            self._srtp_report_at = now + _SRTP_REPORT_INTERVAL

    # ------------------------------------------------------------------ app side
    def send_frames(self, frames: Iterable[Pcm]) -> None:
        """Queue audio to send, 160 samples a frame, paced one per tick."""
        self.pacer.enqueue(frames)

    def flush_output(self) -> int:
        """Barge-in: drop every queued outbound frame now; returns how many were dropped."""
        return self.pacer.flush()

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Queue an RFC 4733 key press (after the audio already queued)."""
        if self.dtmf_out is None:
            raise ValueError("the peer did not negotiate telephone-event")
        self.pacer.enqueue_event(
            self.dtmf_out.payloads_for(digit, duration_ms=duration_ms), self.dtmf_out.payload_type
        )

    def newest_inbound(self) -> AudioFrame | None:
        """The caller's newest 20 ms, arrived but not yet played out (see
        :meth:`~sipagent.rtp.jitter.JitterBuffer.newest`); None if there is none."""
        return self.jitter.newest() if self.receiving else None

    @property
    def queued_output(self) -> int:
        """Frames waiting to be sent."""
        return self.pacer.queued_frames

    @property
    def has_ticks(self) -> bool:
        """Whether :meth:`next_tick` has something (saves the adapter a clock read when not)."""
        return bool(self._ticks_out)

    def next_tick(self) -> Tick | None:
        """The oldest tick not yet taken by the app."""
        return self._ticks_out.popleft() if self._ticks_out else None

    def next_event(self) -> MediaEvent | None:
        """The oldest media event not yet taken by the app."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ output and timers
    def datagrams_to_send(self, now: float) -> list[MediaDatagram]:
        """Everything queued for the wire."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """The next deadline: the next tick, an RTCP report or a DTMF end timeout."""
        if self._t0 is None:
            return None
        deadline = self._t0 + self._ticks * FRAME_SECONDS
        rtcp = self.rtcp.next_time
        if rtcp < deadline:
            deadline = rtcp
        if self.dtmf_in is not None:
            dtmf = self.dtmf_in.get_timer()
            if dtmf is not None and dtmf < deadline:
                deadline = dtmf
        return deadline

    def _due(self, done: int, now: float) -> int:
        # A tick may run up to _EARLY_S before it is due: event loops wake on millisecond
        # granularity, so the adapter arms 1 ms early and the packet leaves on time, not late.
        # floor, not int(): before the clock's start (the adapter may start it a few ms ahead,
        # at a quiet phase of the shared clock) nothing is due yet.
        assert self._t0 is not None
        return math.floor((now + _EARLY_S - self._t0) / FRAME_SECONDS + 1e-6) + 1 - done

    def send_due(self, now: float) -> list[float]:
        """The outbound half of every tick due by ``now``: queue its packet; returns the ticks'
        scheduled times.

        :meth:`handle_timer` runs this first if it was not called, so calling it is optional. An
        adapter serving many calls calls it for all of them before any inbound work, so packets
        leave on time however long the inbound halves (VAD, the app's callbacks) take.
        """
        if self._t0 is None:
            return []
        due = self._due(self._sent_ticks, now)
        if due > _MAX_CATCH_UP_TICKS:
            # A long stall (GC, a blocked loop): frames for the skipped time are gone (the pacer
            # skips them too); handle_timer skips the same ticks inbound.
            self._sent_ticks += due - _MAX_CATCH_UP_TICKS
            due = _MAX_CATCH_UP_TICKS
        sent: list[float] = []
        for _ in range(max(0, due)):
            tick_time = self._t0 + self._sent_ticks * FRAME_SECONDS
            self._sent_ticks += 1
            sent_before = len(self._sent_pcm)
            self._send_rtp(self.pacer.handle_timer(max(now, tick_time)), now)
            encoded = len(self._sent_pcm) > sent_before
            self._sent_for_tick.append(self._sent_pcm[sent_before] if encoded else None)
            sent.append(tick_time)
        self._sent_pcm.clear()
        return sent

    def handle_timer(self, now: float) -> None:
        """Run every tick due by ``now`` (bounded catch-up), then RTCP, DTMF and timeout checks."""
        if self._t0 is None:
            return
        self.send_due(now)
        due = self._sent_ticks - self._ticks
        if due > _MAX_CATCH_UP_TICKS:
            self._ticks += due - _MAX_CATCH_UP_TICKS
            due = _MAX_CATCH_UP_TICKS
        # One entry per tick send_due ran, newest last; the ticks it skipped after a long stall
        # have none, and they are always older than the newest _MAX_CATCH_UP_TICKS it sent.
        sent_for_tick = self._sent_for_tick
        while len(sent_for_tick) > due:
            sent_for_tick.popleft()
        unsent = due - len(sent_for_tick)
        for index in range(due):
            tick_time = self._t0 + self._ticks * FRAME_SECONDS
            self._ticks += 1
            inbound = (
                self.jitter.pop(tick_time) if self.receiving else AudioFrame(silence(), FrameKind.SILENCE)
            )
            outbound = sent_for_tick.popleft() if index >= unsent else None
            self._ticks_out.append(Tick(tick_time, inbound, outbound))
        if self.dtmf_in is not None:
            self._events.extend(self.dtmf_in.tick(now))
        if self.rtcp.due(now) and self.remote_rtcp is not None:
            self._send_rtcp(self._report(now))
        timeout = self.config.media_timeout
        if timeout and self.receiving and not self._timed_out and now - self._last_heard >= timeout:
            self._timed_out = True
            self._events.append(MediaTimeout(now - self._last_heard))

    def _send_rtp(self, packets: list[bytes], now: float) -> None:
        if self.remote is None or not packets:
            return
        for data in packets:
            self._out.append(
                MediaDatagram(self.srtp.protect(data) if self.srtp is not None else data, self.remote, False)
            )

    def _report(self, now: float) -> bytes:
        # The pacer knows exactly what went out; RTCP's sender info comes from it.
        send = self.rtcp.send_stats
        send.packet_count, send.octet_count = self.pacer.totals()
        return self.rtcp.build_report(now, now + self._wall_offset, self.pacer.timestamp_at(now))

    def _send_rtcp(self, data: bytes) -> None:
        assert self.remote_rtcp is not None
        payload = self.srtp.protect_rtcp(data) if self.srtp is not None else data
        self._out.append(MediaDatagram(payload, self.remote_rtcp, True))

    def close(self, now: float) -> None:
        """The call ended: queue an RTCP BYE (§6.6) and stop the clock."""
        if self._t0 is not None and self.remote_rtcp is not None:
            self._send_rtcp(self.rtcp.build_bye(now, now + self._wall_offset, "call ended"))
        self._t0 = None
        self.pacer.stop()


__all__ = [
    "MediaDatagram",
    "MediaEvent",
    "RtpSession",
    "RtpSessionConfig",
    "SourceChanged",
    "Tick",
]
