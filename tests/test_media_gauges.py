"""Line quality into the metrics: a real media session fed packets with a gap, late packets and
uneven arrival; the sampler reports each increase once, and the jitter the session measured."""

from __future__ import annotations

import random

from sipagent.media_gauges import MediaSampler
from sipagent.product.metrics import Metrics
from sipagent.rtp.packet import RtpPacket
from sipagent.rtp.session import RtpSession, RtpSessionConfig
from sipagent.sip.offer_answer import MediaSession

CALLER = ("127.0.0.1", 40000)


def _session() -> RtpSession:
    caller = MediaSession(CALLER[0], CALLER[1], session_id=1)
    agent = MediaSession("127.0.0.1", 30000, session_id=2)
    _, media = agent.answer(caller.create_offer())
    rng = random.Random(7)
    session = RtpSession(
        ssrc=1, first_sequence=0, first_timestamp=0, cname="agent", rng=rng, now=0.0, wall_offset=1.7e9,
        config=RtpSessionConfig(),
    )  # fmt: skip
    session.configure(media)
    session.start(0.0)
    return session


def _send(session: RtpSession, sequence: int, arrival: float) -> None:
    packet = RtpPacket(payload_type=0, sequence_number=sequence, timestamp=160 * sequence, ssrc=0xCAFE,
                       payload=b"\xff" * 160)  # fmt: skip
    session.receive_rtp(packet.serialize(), CALLER, arrival)


class _Queue:
    pending = 3


def _value(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def test_loss_is_counted_once_and_jitter_observed() -> None:
    session, metrics = _session(), Metrics()
    sampler = MediaSampler(metrics)
    # 0..19 on time, then 20..22 never come, then 23..39 with 5 ms of alternating jitter.
    for seq in range(20):
        _send(session, seq, 0.02 * seq)
    for seq in range(23, 40):
        _send(session, seq, 0.02 * seq + (0.005 if seq % 2 else 0.0))
    sampler.sample([("call-1", session)], _Queue())
    assert _value(metrics, "sipagent_rtp_packets_lost_total") == 3
    assert _value(metrics, "sipagent_inference_queue_depth") == 3
    jitter_count = _value(metrics, "sipagent_rtp_jitter_seconds_count")
    assert jitter_count == 1
    assert 0 < _value(metrics, "sipagent_rtp_jitter_seconds_sum") < 0.01  # a few ms, in seconds

    # Nothing new: no more loss; a second jitter reading.
    sampler.sample([("call-1", session)], None)
    assert _value(metrics, "sipagent_rtp_packets_lost_total") == 3
    assert _value(metrics, "sipagent_rtp_jitter_seconds_count") == 2

    # Two more lost before the call closes: its final reading adds just those.
    for seq in range(42, 50):
        _send(session, seq, 0.02 * seq)
    sampler.closed("call-1", session)
    assert _value(metrics, "sipagent_rtp_packets_lost_total") == 5


def test_late_packets_and_forgotten_calls() -> None:
    session, metrics = _session(), Metrics()
    sampler = MediaSampler(metrics)
    # 0..29 arrive on time except 10, played as they come; then 10 arrives long after its slot.
    for step in range(30):
        now = 0.02 * step
        if step != 10:
            _send(session, step, now)
        session.handle_timer(now)
        while session.next_tick() is not None:
            pass
    _send(session, 10, 0.6)
    late = session.jitter.stats.late
    assert late >= 1
    sampler.sample([("call-2", session)], None)
    assert _value(metrics, "sipagent_rtp_packets_late_total") == late
    # A call gone from the list without its closing reading is forgotten: a new call with the same
    # id starts from zero rather than from the old call's counters.
    sampler.sample([], None)
    fresh = _session()
    _send(fresh, 0, 0.0)
    sampler.sample([("call-2", fresh)], None)
    assert _value(metrics, "sipagent_rtp_packets_late_total") == late
