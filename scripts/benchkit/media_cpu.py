"""Part 1 of the media benchmark: CPU cost per call, simulated clock (sans-IO).

``calls`` :class:`RtpSession` s, each fed its own restamped loop of the caller's speech in
``fixtures/speech-librivox-0870.pcap`` (optionally through :class:`Impairments`), each echoing what
it hears back out (so every tick encodes and sends a real audio frame). One 20 ms round is:
``receive_rtp`` of the packets that arrived, ``handle_timer`` (jitter pop, decode/conceal, pacer
encode and header) plus draining the datagrams, draining ``next_tick`` and running WebRTC VAD on
the inbound frame, and queueing the echo with ``send_frames``. Each stage is timed with
``time.process_time`` around the whole batch of calls (four clock reads per round, never per
call, so the timer does not distort what it measures). A *frame* is one call's 20 ms both ways;
``calls/core = 20 ms / cost per frame``. :func:`cpu_benchmark` takes medians over ``repeats`` runs.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchkit.common import FRAME, FRAME_US, HOST, PORT_MIN, CallStream, Clock, negotiate, new_session
from sipagent.replay.impair import Impairments
from sipagent.rtp.frames import PTIME_MS, FrameKind, Pcm
from sipagent.rtp.session import RtpSession
from sipagent.voice.vad import WebRtcVad

STAGE_LABELS = {
    "receive_rtp": "receive_rtp (parse, jitter push, RTCP stats)",
    "handle_timer": "handle_timer (pop/decode, encode, pacer, RTCP)",
    "vad": "next_tick + WebRTC VAD (VAD-ready frames)",
    "send_frames": "send_frames (queue the echo)",
}
CPU_STAGES = tuple(STAGE_LABELS)
_CALLER = (HOST, 40000)


@dataclass
class CpuRun:
    """One run of the simulated-clock benchmark (times in µs per frame)."""

    calls: int
    seconds: float
    frames: int
    per_frame_us: float
    stages_us: dict[str, float]
    packets_in: int
    packets_out: int
    voice_frames: int
    concealed_frames: int
    voiced_frames: int

    @property
    def calls_per_core(self) -> float:
        """Calls one core could carry at 100 % if this were all it did."""
        return FRAME_US / self.per_frame_us if self.per_frame_us > 0 else math.inf


def run_cpu(
    speech: Sequence[bytes],
    *,
    calls: int,
    seconds: float,
    impairments: Impairments | None = None,
    seed: int = 1,
    clock: Clock = time.process_time,
) -> CpuRun:
    """``calls`` sessions for ``seconds`` of simulated time; see the module docstring (part 1)."""
    rng = random.Random(seed)
    ticks = max(1, round(seconds / FRAME))
    media = negotiate(PORT_MIN, _CALLER[1], 0)
    sessions: list[RtpSession] = []
    arrivals: list[list[tuple[float, bytes]]] = []
    for index in range(calls):
        session = new_session(rng, index, 0.0)
        session.configure(media)
        session.start(0.0)
        sessions.append(session)
        stream = CallStream.draw(rng, len(speech))
        # Packets are sent on the caller's own 20 ms clock (a random phase against ours) and, past
        # the end of the run, not at all.
        phase = rng.uniform(0.0, FRAME)
        sent = [(phase + k * FRAME, stream.packet(speech, k)) for k in range(ticks)]
        if impairments is not None and impairments.active:
            sent = Impairments(
                loss=impairments.loss,
                jitter_ms=impairments.jitter_ms,
                reorder=impairments.reorder,
                duplicate=impairments.duplicate,
                seed=impairments.seed + index,
            ).apply(sent)
        arrivals.append(sent)
    vads = [WebRtcVad() for _ in range(calls)]
    positions = [0] * calls
    echo: list[list[Pcm]] = [[] for _ in range(calls)]
    spent = dict.fromkeys(CPU_STAGES, 0.0)
    packets_in = packets_out = voice = concealed = voiced = 0
    voice_kind, concealed_kind = FrameKind.VOICE, FrameKind.CONCEALED

    for tick in range(ticks):
        now = tick * PTIME_MS / 1000
        t0 = clock()
        for index in range(calls):
            queue, position, session = arrivals[index], positions[index], sessions[index]
            end = len(queue)
            while position < end and queue[position][0] <= now:
                arrival, data = queue[position]
                session.receive_rtp(data, _CALLER, arrival)
                position += 1
            packets_in += position - positions[index]
            positions[index] = position
        t1 = clock()
        for session in sessions:
            session.handle_timer(now)
            packets_out += len(session.datagrams_to_send(now))
        t2 = clock()
        for index in range(calls):
            session, vad, pending = sessions[index], vads[index], echo[index]
            while (heard := session.next_tick()) is not None:
                frame = heard.inbound
                voiced += vad.is_speech(frame.samples)
                pending.append(frame.samples)
                if frame.kind is voice_kind:
                    voice += 1
                elif frame.kind is concealed_kind:
                    concealed += 1
            while session.next_event() is not None:
                pass
        t3 = clock()
        for index in range(calls):
            pending = echo[index]
            sessions[index].send_frames(pending)
            pending.clear()
        t4 = clock()
        spent["receive_rtp"] += t1 - t0
        spent["handle_timer"] += t2 - t1
        spent["vad"] += t3 - t2
        spent["send_frames"] += t4 - t3

    frames = calls * ticks
    stages = {name: value * 1e6 / frames for name, value in spent.items()}
    return CpuRun(
        calls=calls,
        seconds=ticks * FRAME,
        frames=frames,
        per_frame_us=sum(stages.values()),
        stages_us=stages,
        packets_in=packets_in,
        packets_out=packets_out,
        voice_frames=voice,
        concealed_frames=concealed,
        voiced_frames=voiced,
    )


@dataclass
class CpuSummary:
    """Medians over the runs of part 1."""

    calls: int
    seconds: float
    repeats: int
    loss: float
    jitter_ms: float
    per_frame_us: float
    per_frame_us_runs: list[float]
    stages_us: dict[str, float]
    calls_per_core: float
    voice_fraction: float
    concealed_fraction: float
    voiced_fraction: float


def cpu_benchmark(
    speech: Sequence[bytes],
    *,
    calls: int,
    seconds: float,
    repeats: int,
    loss: float = 0.0,
    jitter_ms: float = 0.0,
) -> CpuSummary:
    """Part 1, ``repeats`` times with the same seeds; medians."""
    impairments = Impairments(loss=loss, jitter_ms=jitter_ms, seed=7)
    runs = [run_cpu(speech, calls=calls, seconds=seconds, impairments=impairments) for _ in range(repeats)]
    per_frame = statistics.median(run.per_frame_us for run in runs)
    last = runs[-1]
    return CpuSummary(
        calls=calls,
        seconds=last.seconds,
        repeats=repeats,
        loss=loss,
        jitter_ms=jitter_ms,
        per_frame_us=per_frame,
        per_frame_us_runs=[run.per_frame_us for run in runs],
        stages_us={name: statistics.median(run.stages_us[name] for run in runs) for name in CPU_STAGES},
        calls_per_core=FRAME_US / per_frame,
        voice_fraction=last.voice_frames / last.frames,
        concealed_fraction=last.concealed_frames / last.frames,
        voiced_fraction=last.voiced_frames / last.frames,
    )
