"""Replay a capture's caller leg into the voice pipeline, in real time, and measure it on the wire.

The caller's packets arrive on the loop's clock at their capture times (plus any impairments), go
through the same :class:`~sipagent.rtp.session.RtpSession` a live call uses, and every 20 ms tick
goes to the same conversation a live call has (:class:`~sipagent.net.conversation.ConversationRunner`
around :class:`~sipagent.voice.conversation.Conversation`), whose replies leave through the
session's pacer. Nothing is simulated but the network: the models run where the configuration puts
them (their own process by default) while the loop keeps pacing, exactly as in ``serve``.

Per turn it emits ``transcript``, ``agent_text`` and ``turn_latency``; the latency is measured on
the wire: from the arrival of the caller's last voiced RTP packet to the departure of the agent's
first voiced one (``wire_ms``), with the pipeline's stages beside it. A reply cut short by the
caller also gets a ``barge_in`` event: from the arrival of the interrupting voice's first packet to
the first outbound packet without the agent's voice (``stop_ms``), and from the agent's decision to
that packet (``decision_ms``). An :class:`~sipagent.replay.echo_line.EchoLine` can return the agent's
own voice on the caller leg, as a far-end hybrid does.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..net.conversation import ConversationRunner, new_conversation_key
from ..rtp.frames import SAMPLE_RATE
from ..rtp.session import Tick
from ..voice.conversation import Conversation, ConversationConfig, TurnRecord
from ..voice.inference import InferenceService
from ..voice.vad import Vad
from .capture import CallerLeg
from .echo_line import EchoLine
from .impair import Impairments
from .runner import Replay, ReplayEvent, ReplaySummary

#: Outbound frames with a peak under this are not the agent's voice (the pacer's silence fill).
VOICED_PEAK = 200
#: After the last packet, wait at most this long for the agent to finish its last reply (a reply
#: of ``llm.max_tokens`` tokens can take half a minute to say; one still playing then is cut).
_REPLY_GRACE_S = 40.0


@dataclass
class AgentReplaySummary(ReplaySummary):
    """The media counters plus the conversation's."""

    turns: int = 0
    replies: int = 0  # turns the caller heard an answer to
    interrupted: int = 0
    agent_voiced_frames: int = 0


class AgentReplay(Replay):
    """One caller leg against the real voice pipeline (see the module docstring)."""

    def __init__(
        self,
        leg: CallerLeg,
        impairments: Impairments,
        inference: InferenceService,
        config: ConversationConfig | None = None,
        *,
        echo: EchoLine | None = None,
        vad: Callable[[], Vad] | None = None,
    ) -> None:
        """``vad`` makes the conversation's voice detectors (None: WebRTC VAD, as the engine's)."""
        config = config or ConversationConfig()
        super().__init__(leg, impairments, vad_aggressiveness=config.vad_aggressiveness, answer=True)
        self.totals = AgentReplaySummary(packets=self.summary.packets, delivered=self.summary.delivered)
        self.summary = self.totals
        self.inference = inference
        self.conversation = Conversation(config, key=new_conversation_key(), vad=vad)
        #: Made when the run starts (it lives on the loop).
        self.agent: ConversationRunner | None = None
        self.echo = echo
        self.records: list[TurnRecord] = []
        self._emit: Callable[[ReplayEvent], None] = lambda event: None
        #: Arrival (seconds from the start) of each caller packet by RTP timestamp, sorted.
        self._ts_base, self._arrival_ts, self._arrival_at = _arrivals_by_timestamp(self._arrivals)
        #: Tick times, and whether that tick's packet carried the agent's voice.
        self._out_times: list[float] = []
        self._out_voiced: list[bool] = []
        self._end_by = self.duration + _REPLY_GRACE_S

    # -- hooks of Replay -------------------------------------------------------------------------
    def _deliver(self, data: bytes, at: float) -> None:
        if self.echo is not None:
            data = self.echo.mix(data, at)
        super()._deliver(data, at)

    def _on_tick(self, tick: Tick) -> None:
        out = tick.outbound
        voiced = out is not None and int(np.abs(out).max()) >= VOICED_PEAK
        self._out_times.append(tick.time)
        self._out_voiced.append(voiced)
        self.totals.agent_voiced_frames += voiced
        if self.echo is not None:
            self.echo.note_sent(tick.time, out)
        assert self.agent is not None
        self.agent.on_tick(tick)
        self.session.datagrams_to_send(tick.time)  # the packets would leave here; nobody listens

    def _may_end(self) -> bool:
        conversation = self.conversation
        idle = not conversation.busy and self.session.queued_output == 0 and not conversation.speaking
        return idle or self.t0 + self._end_by < asyncio.get_running_loop().time()

    async def _finish_realtime(self, emit: Callable[[ReplayEvent], None]) -> ReplaySummary:
        assert self.agent is not None
        self.agent.close()  # a reply still playing is recorded (interrupted by the hang-up)
        summary = self.totals
        summary.turns = len(self.records)
        summary.replies = sum(1 for r in self.records if r.first_voiced_out_at is not None)
        summary.interrupted = sum(1 for r in self.records if r.interrupted)
        return self._finish(emit)

    async def run(self, emit: Callable[[ReplayEvent], None]) -> AgentReplaySummary:
        """The whole call in real time; events go to ``emit`` as they happen."""
        self._emit = emit
        self.agent = ConversationRunner("replay", self.conversation, self.session, self.inference,
                                        on_turn=self._on_turn)  # fmt: skip
        try:
            self.agent.start()
            await self.run_realtime(emit)
        finally:
            self.agent.close()  # also when cancelled: nothing of the call keeps running
        return self.totals

    # -- measurements ----------------------------------------------------------------------------
    def arrival_of_rtp(self, rtp_ts: int | None) -> float | None:
        """When the packet holding ``rtp_ts`` arrived (loop time), or None."""
        if rtp_ts is None or not self._arrival_ts:
            return None
        unwrapped = self._ts_base + ((rtp_ts - self._ts_base) & 0xFFFFFFFF)
        index = bisect.bisect_right(self._arrival_ts, unwrapped) - 1
        return self.t0 + self._arrival_at[max(index, 0)]

    def first_quiet_tick(self, since: float) -> float | None:
        """The first tick at or after ``since`` whose packet did not carry the agent's voice."""
        start = bisect.bisect_left(self._out_times, since - 1e-6)
        for index in range(start, len(self._out_times)):
            if not self._out_voiced[index]:
                return self._out_times[index]
        return None

    def _on_turn(self, record: TurnRecord) -> None:
        self.records.append(record)
        now = asyncio.get_running_loop().time() - self.t0
        turn = record.turn
        self._emit(ReplayEvent("transcript", now, {"turn": turn, "text": record.transcript}))
        self._emit(
            ReplayEvent(
                "agent_text", now, {"turn": turn, "text": record.reply, "interrupted": record.interrupted}
            )
        )
        last_in = self.arrival_of_rtp(record.last_voiced_rtp_ts)
        out = record.first_voiced_out_at
        wire = None if last_in is None or out is None else round((out - last_in) * 1000, 1)
        stages = {key: value for key, value in record.as_dict().items() if key.endswith("_ms")}
        self._emit(ReplayEvent("turn_latency", now, {"turn": turn, "wire_ms": wire, **stages}))
        if record.interrupted and record.stop_decided_at is not None:
            quiet = self.first_quiet_tick(record.stop_decided_at)
            onset = self.arrival_of_rtp(record.caller_onset_rtp_ts)
            fields: dict[str, Any] = {
                "turn": turn,
                "stop_ms": None if quiet is None or onset is None else round((quiet - onset) * 1000, 1),
                "decision_ms": None if quiet is None else round((quiet - record.stop_decided_at) * 1000, 1),
                "heard": record.reply,
            }
            self._emit(ReplayEvent("barge_in", record.stop_decided_at - self.t0, fields))

    def arrival_of_audio(self, audio_time: float) -> float | None:
        """When the packet carrying the caller's audio at ``audio_time`` (seconds into the caller's
        RTP, as a fixture's manifest counts them) arrived, on the loop's clock."""
        if not self._arrival_ts or not self.leg.packets:
            return None
        first = self.leg.packets[0].packet.timestamp  # audio time 0 (an impaired run may reorder it)
        return self.arrival_of_rtp((first + round(audio_time * SAMPLE_RATE)) & 0xFFFFFFFF)

    def wire_ms_from(self, audio_time: float, record: TurnRecord) -> float | None:
        """From the arrival of the caller's audio at ``audio_time`` (the true end of a turn's speech)
        to the departure of ``record``'s first voiced packet: the wait the caller hears."""
        arrived = self.arrival_of_audio(audio_time)
        out = record.first_voiced_out_at
        return None if arrived is None or out is None else (out - arrived) * 1000

    def agent_voice_at(self, audio_time: float) -> bool:
        """Whether the agent's voice was going out when the caller's audio reached ``audio_time``
        (seconds into the caller's RTP, as a fixture's manifest counts them)."""
        if not self._arrivals:
            return False
        at = self.t0 + self._arrivals[0][0] + audio_time
        index = bisect.bisect_left(self._out_times, at)
        return index < len(self._out_voiced) and self._out_voiced[index]


def _arrivals_by_timestamp(arrivals: list[tuple[float, bytes]]) -> tuple[int, list[int], list[float]]:
    """Earliest arrival per RTP timestamp, sorted by timestamp (unwrapped from the first packet)."""
    first: dict[int, float] = {}
    base: int | None = None
    for at, data in arrivals:
        if len(data) < 12:
            continue
        ts = int.from_bytes(data[4:8], "big")
        base = ts if base is None else base
        unwrapped = base + ((ts - base) & 0xFFFFFFFF)  # a capture spans far less than 2^32 samples
        first[unwrapped] = min(at, first.get(unwrapped, at))
    keys = sorted(first)
    return base or 0, keys, [first[k] for k in keys]


__all__ = ["AgentReplay", "AgentReplaySummary"]
