"""Run a capture's caller leg through the media engine and report what it heard.

The caller's packets go through the same :class:`~sipagent.rtp.session.RtpSession` a live call
uses (jitter buffer, DTMF, concealment), on a simulated clock as fast as possible, or paced in real
time. Each 20 ms tick's inbound frame goes to the VAD segmenter; DTMF digits and speech segments
come out as events, in order of when they were heard.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..rtp.events import DtmfReceived
from ..rtp.frames import FRAME_SECONDS, FrameKind
from ..rtp.session import RtpSession, RtpSessionConfig, Tick
from ..voice.vad import SpeechEnded, SpeechSegmenter, SpeechStarted, WebRtcVad
from .capture import CallerLeg
from .impair import Impairments

#: Ticks to keep running after the last packet, so the jitter buffer drains and segments close.
_TAIL_SECONDS = 1.0
_CALLER = ("192.0.2.1", 40000)


@dataclass(frozen=True)
class ReplayEvent:
    """One thing replay heard; ``as_json`` gives the JSON Lines object (``event`` field first)."""

    event: str
    time: float
    fields: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        """One JSON object, ``event`` first, times rounded to the millisecond."""
        body: dict[str, Any] = {"event": self.event, "time": round(self.time, 3)}
        body.update(self.fields)
        return json.dumps(body, separators=(",", ":"))

    def as_text(self) -> str:
        """A line for people."""
        details = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.time:8.3f}s  {self.event:<13} {details}".rstrip()


@dataclass(frozen=True)
class _Negotiated:
    """The replayed leg's media as if negotiated (RtpSession.configure reads these)."""

    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    receive_dtmf_payload_type: int | None = None
    cn_payload_type: int | None = 13
    remote_address: str = _CALLER[0]
    remote_port: int = _CALLER[1]
    remote_rtcp_address: str = _CALLER[0]
    remote_rtcp_port: int = _CALLER[1] + 1
    send: bool = False
    receive: bool = True
    srtp: None = None


@dataclass
class ReplaySummary:
    """Counters printed at the end (and as a final ``summary`` event)."""

    packets: int = 0
    delivered: int = 0
    frames: int = 0
    voice_frames: int = 0
    concealed_frames: int = 0
    digits: str = ""
    segments: int = 0


class Replay:
    """One replay run over a caller leg."""

    def __init__(
        self,
        leg: CallerLeg,
        impairments: Impairments,
        *,
        vad_aggressiveness: int = 2,
        answer: bool = False,
    ) -> None:
        """``answer``: the replayed call sends too (silence fill and whatever is queued), as an
        answered call does; the media-only replay just listens."""
        self.leg = leg
        self.impairments = impairments
        self.t0 = 0.0
        self.session = RtpSession(
            ssrc=0x5A5A5A5A,
            first_sequence=1,
            first_timestamp=0,
            cname="replay",
            rng=random.Random(impairments.seed),
            now=0.0,
            wall_offset=0.0,
            config=RtpSessionConfig(fill_silence=answer, media_timeout=0),
        )
        self.session.configure(
            _Negotiated(
                leg.codec, leg.payload_type, leg.dtmf_payload_type, leg.dtmf_payload_type, send=answer
            )
        )
        self.vad = WebRtcVad(vad_aggressiveness)
        self.segmenter = SpeechSegmenter()
        self.summary = ReplaySummary(packets=len(leg.packets))
        self._arrivals = impairments.apply([(p.time, p.packet.serialize()) for p in leg.packets])
        self.summary.delivered = len(self._arrivals)

    @property
    def duration(self) -> float:
        """Seconds of simulated time the replay covers."""
        last = self._arrivals[-1][0] if self._arrivals else 0.0
        return last + _TAIL_SECONDS

    def run_fast(self, emit: Callable[[ReplayEvent], None]) -> ReplaySummary:
        """As fast as possible on a simulated clock (deterministic)."""
        self.session.start(0.0)
        index = 0
        now = 0.0
        end = self.duration
        while now <= end:
            while index < len(self._arrivals) and self._arrivals[index][0] <= now:
                self.session.receive_rtp(self._arrivals[index][1], _CALLER, self._arrivals[index][0])
                index += 1
            self.session.handle_timer(now)
            self._drain(emit)
            now = round(now + FRAME_SECONDS, 9)
        return self._finish(emit)

    async def run_realtime(self, emit: Callable[[ReplayEvent], None]) -> ReplaySummary:
        """Paced in real time on the loop's clock, as a live caller would send."""
        loop = asyncio.get_running_loop()
        t0 = self.t0 = loop.time()
        self.session.start(t0)
        index = 0
        while True:
            now = loop.time() - t0
            while index < len(self._arrivals) and self._arrivals[index][0] <= now:
                self._deliver(self._arrivals[index][1], t0 + self._arrivals[index][0])
                index += 1
            self.session.handle_timer(loop.time())
            self._drain(emit, offset=t0)
            if now > self.duration and self._may_end():
                break
            deadline = self.session.get_timer()
            if index < len(self._arrivals):
                next_arrival = t0 + self._arrivals[index][0]
                deadline = next_arrival if deadline is None else min(deadline, next_arrival)
            await asyncio.sleep(max(0.0, (deadline or loop.time() + FRAME_SECONDS) - loop.time()))
        return await self._finish_realtime(emit)

    def _deliver(self, data: bytes, at: float) -> None:
        """One caller packet arrives (loop time ``at``)."""
        self.session.receive_rtp(data, _CALLER, at)

    def _may_end(self) -> bool:
        """Past the last packet's tail: whether the run may stop now."""
        return True

    async def _finish_realtime(self, emit: Callable[[ReplayEvent], None]) -> ReplaySummary:
        return self._finish(emit)

    def _drain(self, emit: Callable[[ReplayEvent], None], offset: float = 0.0) -> None:
        while (tick := self.session.next_tick()) is not None:
            self._on_tick(tick)
            self.summary.frames += 1
            kind = tick.inbound.kind
            if kind is FrameKind.VOICE:
                self.summary.voice_frames += 1
            elif kind is FrameKind.CONCEALED:
                self.summary.concealed_frames += 1
            voiced = kind is not FrameKind.SILENCE and self.vad.is_speech(tick.inbound.samples)
            for segment in self.segmenter.push(voiced, tick.time - offset):
                self._emit_segment(segment, emit)
        while (event := self.session.next_event()) is not None:
            if isinstance(event, DtmfReceived):
                self.summary.digits += event.digit
                emit(
                    ReplayEvent(
                        "dtmf", event.start - offset, {"digit": event.digit, "duration_ms": event.duration_ms}
                    )
                )

    def _on_tick(self, tick: Tick) -> None:
        """Each tick, before the VAD segmenter sees it (the pipeline hooks in here)."""

    def _emit_segment(
        self, segment: SpeechStarted | SpeechEnded, emit: Callable[[ReplayEvent], None]
    ) -> None:
        if isinstance(segment, SpeechStarted):
            emit(ReplayEvent("speech_start", segment.time))
        else:
            self.summary.segments += 1
            emit(ReplayEvent("speech_end", segment.time, {"duration": round(segment.duration, 3)}))

    def _finish(self, emit: Callable[[ReplayEvent], None]) -> ReplaySummary:
        for segment in self.segmenter.finish():
            self._emit_segment(segment, emit)
        stats = self.session.jitter.stats
        emit(
            ReplayEvent(
                "summary",
                self.duration,
                {
                    **asdict(self.summary),
                    "late": stats.late,
                    "duplicates": stats.duplicates,
                    "target_delay_ms": round(stats.target_delay_ms, 1),
                },
            )
        )
        return self.summary
