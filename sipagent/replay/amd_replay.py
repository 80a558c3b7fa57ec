"""``sipagent replay CAPTURE --amd``: answering-machine detection on a recorded call.

The far end's packets go through the same :class:`~sipagent.rtp.session.RtpSession` a live call
uses (jitter buffer, concealment), on a simulated clock as fast as possible, and from the 200 OK on
each 20 ms tick's frame goes to an :class:`~sipagent.voice.amd.AmdSession`, as the conversation
engine of an outbound call feeds it. Early media (ringback before the answer) is never analysed.

Which leg: for a call we placed (what AMD is for) the callee's, found as the RTP sent from the
audio address of the 200 OK's SDP; otherwise the caller leg as ``sipagent replay`` finds it (or the
flow with ``--ssrc``). The answer is the capture time of the first 2xx to the INVITE (none: the
first packet).

Two clocks, both counted from the 200 OK: ``after_ms`` of the decision is on the tick clock (when a
live call would know: the jitter buffer's delay included), ``at_ms`` of a beep on the callee's audio
timeline (where the tone sits in what the callee sent: each frame's RTP timestamp against the
earliest-arriving packet), so it compares with a fixture's truth.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..pcapio import read_udp
from ..rtp.frames import SAMPLE_RATE, Pcm
from ..rtp.session import Tick
from ..sip.errors import RemoteProtocolError
from ..sip.message import Response, parse_message
from ..sip.sdp import parse_sdp
from ..voice.amd import AmdConfig, AmdResult, AmdSession
from ..voice.beep import Beep, Sit
from .capture import CallerLeg, load_caller_leg
from .impair import Impairments
from .runner import Replay, ReplayEvent

#: The replay's voice decision: made per call (a stateful VAD), or None for the energy gate.
VadFactory = Callable[[], Callable[[Pcm], bool]]


@dataclass(frozen=True)
class AmdReplayEvent:
    """One line of output: ``amd``, ``beep`` or ``sit``, its fields in a fixed order."""

    event: str
    fields: dict[str, Any]

    def as_json(self) -> str:
        """``{"event": …, …}`` on one line."""
        return json.dumps({"event": self.event, **self.fields}, separators=(",", ":"))

    def as_text(self) -> str:
        """A line for people."""
        return f"{self.event:<5} " + " ".join(f"{k}={v}" for k, v in self.fields.items())


@dataclass(frozen=True)
class FarLeg:
    """The leg to analyse, where its 200 OK falls (seconds from its first packet), and notes."""

    leg: CallerLeg
    answered_at: float
    notes: list[str] = field(default_factory=list)


def _answer(path: Path) -> tuple[float | None, tuple[str, int] | None]:
    """Capture time of the first 2xx to an INVITE, and its SDP's audio address."""
    for datagram in read_udp(path):
        head = datagram.payload[:8]
        if not head.startswith(b"SIP/2.0"):
            continue
        try:
            message = parse_message(datagram.payload)
        except RemoteProtocolError:
            continue
        if not isinstance(message, Response) or not 200 <= message.status < 300:
            continue
        if not (message.headers.get("CSeq") or "").upper().endswith("INVITE"):
            continue
        endpoint = None
        if message.body:
            try:
                sdp = parse_sdp(message.body)
            except RemoteProtocolError:
                sdp = None
            for media in sdp.media if sdp is not None else []:
                connection = sdp.media_connection(media) if sdp is not None else None
                if media.media == "audio" and media.port and connection is not None:
                    endpoint = (connection.address, media.port)
                    break
        return datagram.time, endpoint
    return None, None


def load_far_leg(path: Path, *, ssrc: int | None = None) -> FarLeg:
    """The leg AMD listens to and its answer time (see the module docstring)."""
    ok_time, answerer = _answer(path)
    notes: list[str] = []
    if ssrc is None and answerer is not None:
        from_answerer = [
            d for d in read_udp(path) if d.src == answerer and len(d.payload) >= 12 and d.payload[0] >> 6 == 2
        ]
        if from_answerer:
            ssrc = int.from_bytes(from_answerer[0].payload[8:12], "big")
            notes.append(f"the callee's leg, from the 200 OK's SDP: {answerer[0]}:{answerer[1]}")
    leg = load_caller_leg(path, ssrc=ssrc)
    notes.extend(leg.notes)
    if ok_time is None or not leg.packets:
        notes.append("no 200 OK in the capture: analysing from the first packet")
        return FarLeg(leg, 0.0, notes)
    wanted = leg.packets[0].packet.ssrc
    first = min(
        d.time
        for d in read_udp(path)
        if len(d.payload) >= 12
        and int.from_bytes(d.payload[8:12], "big") == wanted
        and d.payload[0] >> 6 == 2
    )
    return FarLeg(leg, ok_time - first, notes)


class AmdReplay(Replay):
    """One far-end leg through the media engine and answering-machine detection."""

    def __init__(
        self,
        far: FarLeg,
        impairments: Impairments,
        *,
        config: AmdConfig | None = None,
        vad: VadFactory | None = None,
    ) -> None:
        super().__init__(far.leg, impairments)
        self.answered_at = far.answered_at
        self.amd = AmdSession(
            "continue",
            config or AmdConfig(),
            answered_at=far.answered_at,
            is_speech=vad() if vad is not None else None,
        )
        self.events: list[AmdReplayEvent] = []
        self._emit: Callable[[AmdReplayEvent], None] = self.events.append
        self._anchor, self._ts0 = _stream_anchor(far.leg)
        self._feeding = False
        #: Tick time and audio time (None: unknown) of every frame fed, for beep onsets.
        self._fed_ticks: list[float] = []
        self._fed_audio: list[float | None] = []

    def audio_time(self, rtp_ts: int | None) -> float | None:
        """Where the audio with RTP timestamp ``rtp_ts`` sits on the callee's timeline (replay clock)."""
        if rtp_ts is None:
            return None
        return self._anchor + ((rtp_ts - self._ts0) & 0xFFFFFFFF) / SAMPLE_RATE

    def _on_tick(self, tick: Tick) -> None:
        audio = self.audio_time(tick.inbound.timestamp)
        if not self._feeding:
            started = tick.time >= self.answered_at if audio is None else audio >= self.answered_at - 1e-6
            if not started:
                return  # early media, or audio from before the answer still in the jitter buffer
            self._feeding = True
        self._fed_ticks.append(tick.time)
        self._fed_audio.append(audio)
        for event in self.amd.push(tick.inbound.samples, tick.time):
            if isinstance(event, AmdResult):
                self._emit(_amd_line(event))
            elif isinstance(event, Beep):
                fields = {
                    "at_ms": self._audio_ms(event.at),
                    "freq_hz": event.freq_hz,
                    "duration_ms": round(event.duration_ms, 1),
                    "level_dbfs": event.level_dbfs,
                }
                self._emit(AmdReplayEvent("beep", fields))
            elif isinstance(event, Sit):
                self._emit(
                    AmdReplayEvent("sit", {"at_ms": self._audio_ms(event.at), "freqs_hz": list(event.freqs)})
                )

    def _audio_ms(self, at: float) -> float:
        """Tick-clock time ``at`` (inside a fed frame) as ms after the answer on the audio timeline."""
        index = max(bisect.bisect_right(self._fed_ticks, at + 1e-9) - 1, 0)
        audio = self._fed_audio[index]
        if audio is None:
            known = [(t, a) for t, a in zip(self._fed_ticks, self._fed_audio, strict=True) if a is not None]
            delay = known[0][0] - known[0][1] if known else 0.0
            audio = self._fed_ticks[index] - delay
        return round((audio + at - self._fed_ticks[index] - self.answered_at) * 1000, 1)

    def run(self, emit: Callable[[AmdReplayEvent], None] | None = None) -> list[AmdReplayEvent]:
        """The whole leg on the simulated clock; events go to ``emit`` as they happen, and back."""
        if emit is not None:
            forward = emit

            def both(event: AmdReplayEvent) -> None:
                self.events.append(event)
                forward(event)

            self._emit = both

        def ignore(_: ReplayEvent) -> None:
            """The media replay's own events (speech segments, the summary) are not AMD's."""

        self.run_fast(ignore)
        if self.amd.result is None:
            ended = max(self.duration - self.answered_at, 0.0) * 1000
            self._emit(AmdReplayEvent("amd", {"result": "uncertain", "after_ms": round(ended, 1),
                                              "reason": f"ENDED-{ended:.0f}"}))  # fmt: skip
        return self.events


def _amd_line(result: AmdResult) -> AmdReplayEvent:
    return AmdReplayEvent(
        "amd", {"result": result.kind, "after_ms": result.after_ms, "reason": result.reason}
    )


def _stream_anchor(leg: CallerLeg) -> tuple[float, int]:
    """The callee's audio timeline: time of RTP timestamp ``ts0`` from the earliest-arriving packet."""
    if not leg.packets:
        return 0.0, 0
    ts0 = leg.packets[0].packet.timestamp
    anchor = min(p.time - ((p.packet.timestamp - ts0) & 0xFFFFFFFF) / SAMPLE_RATE for p in leg.packets)
    return anchor, ts0


def silero_vad_factory(model: Path | None = None) -> VadFactory:
    """Silero VAD per call, sharing one loaded model (onnxruntime; ``models/silero_vad.onnx``)."""
    from ..voice.silero_vad import DEFAULT_SILERO_MODEL, SileroModel, SileroVad

    loaded = SileroModel(model or DEFAULT_SILERO_MODEL)
    return lambda: SileroVad(loaded).is_speech


__all__ = ["AmdReplay", "AmdReplayEvent", "FarLeg", "VadFactory", "load_far_leg", "silero_vad_factory"]
