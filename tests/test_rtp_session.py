"""The media engine end to end, sans-IO: two RtpSessions back to back on a virtual clock.

Media parameters come from a real offer/answer between two MediaSessions (with SRTP when asked),
so these tests exercise the same path a call does: negotiate, configure, tick every 20 ms.
"""

from __future__ import annotations

import itertools
import os
import random
from typing import Any

import numpy as np
import pytest

from sipagent.rtp.events import DtmfReceived, MediaEvent, MediaTimeout, SrtpRejected
from sipagent.rtp.frames import SAMPLES_PER_FRAME, FrameKind, Pcm
from sipagent.rtp.session import MediaDatagram, RtpSession, RtpSessionConfig, Tick
from sipagent.sip.offer_answer import MediaSession, NegotiatedMedia

A_ADDR, B_ADDR = ("10.0.0.1", 20000), ("10.0.0.2", 30000)


def _negotiate(srtp: str = "off") -> tuple[NegotiatedMedia, NegotiatedMedia]:
    kwargs = {"srtp": srtp, "srtp_rng": os.urandom} if srtp != "off" else {}
    alice = MediaSession(A_ADDR[0], A_ADDR[1], session_id=1, **kwargs)  # type: ignore[arg-type]
    bob = MediaSession(B_ADDR[0], B_ADDR[1], session_id=2, **kwargs)  # type: ignore[arg-type]
    answer, bob_media = bob.answer(alice.create_offer())
    return alice.process_answer(answer), bob_media


def _session(seed: int, now: float, **config: Any) -> RtpSession:
    rng = random.Random(seed)
    return RtpSession(
        ssrc=rng.getrandbits(32), first_sequence=rng.getrandbits(16), first_timestamp=rng.getrandbits(32),
        cname=f"s{seed}", rng=rng, now=now, wall_offset=1.7e9, config=RtpSessionConfig(**config),
    )  # fmt: skip


class Pair:
    """Alice and Bob's media engines joined by a perfect (or tampering) network."""

    def __init__(self, srtp: str = "off", **config: Any) -> None:
        self.now = 100.0
        alice_media, bob_media = _negotiate(srtp)
        self.alice, self.bob = _session(1, self.now, **config), _session(2, self.now, **config)
        self.alice.configure(alice_media)
        self.bob.configure(bob_media)
        self.alice.start(self.now)
        self.bob.start(self.now + 0.007)  # clocks need not be aligned
        self.tamper = False
        self.wire: list[tuple[str, MediaDatagram]] = []

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            for name, session, other, addr in (
                ("alice", self.alice, self.bob, A_ADDR),
                ("bob", self.bob, self.alice, B_ADDR),
            ):
                timer = session.get_timer()
                if timer is not None and timer <= self.now:
                    session.handle_timer(self.now)
                for datagram in session.datagrams_to_send(self.now):
                    self.wire.append((name, datagram))
                    data = datagram.data
                    if self.tamper and not datagram.rtcp:
                        data = data[:-1] + bytes([data[-1] ^ 1])
                    source = (addr[0], addr[1] + 1) if datagram.rtcp else addr
                    if datagram.rtcp:
                        other.receive_rtcp(data, source, self.now + 0.01)
                    else:
                        other.receive_rtp(data, source, self.now + 0.01)
            self.now += 0.001


def _tone(frames: int, freq: float = 440.0) -> list[Pcm]:
    t = np.arange(frames * SAMPLES_PER_FRAME) / 8000
    x = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)
    return [x[i : i + SAMPLES_PER_FRAME] for i in range(0, len(x), SAMPLES_PER_FRAME)]


def _ticks(session: RtpSession) -> list[Tick]:
    out = []
    while (tick := session.next_tick()) is not None:
        out.append(tick)
    return out


def _events(session: RtpSession) -> list[MediaEvent]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


@pytest.mark.parametrize("srtp", ["off", "required"])
def test_audio_crosses_with_one_packet_per_tick_and_one_frame_per_tick(srtp: str) -> None:
    pair = Pair(srtp)
    pair.alice.send_frames(_tone(50))
    pair.run(2.0)
    alice_rtp = [d for name, d in pair.wire if name == "alice" and not d.rtcp]
    # Silence before and after the tone keeps RTP flowing: one packet every 20 ms, all call long.
    assert 99 <= len(alice_rtp) <= 101
    ticks = _ticks(pair.bob)
    assert 99 <= len(ticks) <= 101
    assert all(b.time - a.time == pytest.approx(0.020) for a, b in itertools.pairwise(ticks))
    voiced = [
        t for t in ticks if t.inbound.kind is FrameKind.VOICE and np.abs(t.inbound.samples).max() > 4000
    ]
    assert 48 <= len(voiced) <= 50
    # What Alice's ticks say went out is the tone, frame for frame.
    sent = [t.outbound for t in _ticks(pair.alice) if t.outbound is not None]
    assert len(sent) == 50 and np.array_equal(sent[0], _tone(1)[0])
    if srtp == "required":
        assert pair.alice.srtp is not None and pair.bob.srtp is not None
        assert pair.bob.srtp.stats.unprotected >= 99


def test_tampered_srtp_is_rejected_counted_and_never_latched() -> None:
    pair = Pair("required")
    pair.tamper = True
    pair.alice.send_frames(_tone(10))
    pair.run(1.0)
    assert pair.bob.srtp is not None and pair.bob.srtp.stats.rejected_auth >= 45
    assert pair.bob.stats.received == 0
    rejections = [e for e in _events(pair.bob) if isinstance(e, SrtpRejected)]
    assert rejections and sum(e.count for e in rejections) >= 1
    assert all(t.inbound.kind is FrameKind.SILENCE for t in _ticks(pair.bob))


def test_dtmf_sent_by_one_side_is_decoded_once_by_the_other() -> None:
    pair = Pair()
    for digit in "159#":
        pair.alice.send_dtmf(digit, duration_ms=100)
        pair.alice.send_frames([np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)] * 3)  # inter-digit gap
    pair.run(3.0)
    digits = [e.digit for e in _events(pair.bob) if isinstance(e, DtmfReceived)]
    assert digits == list("159#")


def test_flush_stops_outbound_audio_on_the_next_tick() -> None:
    pair = Pair()
    pair.alice.send_frames(_tone(100))
    pair.run(0.5)
    assert pair.alice.queued_output > 50
    dropped = pair.alice.flush_output()
    assert dropped > 50 and pair.alice.queued_output == 0
    _ticks(pair.alice)
    pair.run(0.1)
    assert all(t.outbound is None for t in _ticks(pair.alice))


def test_media_timeout_when_the_peer_goes_quiet() -> None:
    pair = Pair(media_timeout=1.0, fill_silence=False)
    pair.run(1.5)
    assert any(isinstance(e, MediaTimeout) for e in _events(pair.bob))


def test_rtcp_reports_flow_and_measure_round_trip_time() -> None:
    pair = Pair()
    pair.alice.send_frames(_tone(200))
    pair.run(12.0)
    rtcp = [d for _, d in pair.wire if d.rtcp]
    assert len(rtcp) >= 2
    report = pair.alice.rtcp.remote_report
    assert report is not None and report.fraction_lost == 0.0
    assert report.rtt is not None and report.rtt == pytest.approx(0.02, abs=0.01)


def test_symmetric_rtp_latches_to_the_real_source() -> None:
    pair = Pair()
    pair.bob.receive_rtp(b"\x80" + bytes(11) + bytes(160), ("192.0.2.99", 40000), pair.now)
    assert pair.bob.remote == ("192.0.2.99", 40000)


@pytest.mark.parametrize("sent_first", [False, True])
def test_a_stall_longer_than_the_catch_up_skips_ticks_both_ways(sent_first: bool) -> None:
    # A 500 ms stall (a blocked loop, a busy neighbour): the oldest ticks are skipped outbound
    # and inbound alike, and the ticks handed out still pair each frame with what went out.
    pair = Pair()
    alice = pair.alice
    alice.send_frames(_tone(100))
    pair.run(0.1)
    _ticks(alice)
    late = pair.now + 0.5
    if sent_first:
        alice.send_due(late)  # the clock sent ahead of the inbound half, as MediaClock does
    alice.handle_timer(late)
    ticks = _ticks(alice)
    assert len(ticks) == 10  # _MAX_CATCH_UP_TICKS
    assert all(b.time - a.time == pytest.approx(0.020) for a, b in itertools.pairwise(ticks))
    assert ticks[-1].time <= late + 0.001 < ticks[-1].time + 0.020
    # The pacer sends only one packet for ticks later than its catch-up bound (with the marker
    # bit, not a burst): one tick carries its frame, the others say nothing went out.
    assert sum(tick.outbound is not None for tick in ticks) == 1
    pair.now = late + 0.001
    pair.run(0.1)  # and the session goes on, one tick per 20 ms
    assert 4 <= len(_ticks(alice)) <= 6


def test_nothing_is_due_before_a_clock_started_ahead_of_now() -> None:
    session = _session(5, 100.0)
    session.configure(_negotiate()[0])
    session.start(100.010)  # the adapter starts clocks up to 20 ms ahead, at a quiet phase
    assert session.send_due(100.0) == [] and session.datagrams_to_send(100.0) == []
    session.handle_timer(100.0)
    assert _ticks(session) == []
    assert session.send_due(100.0095) == [pytest.approx(100.010)]  # 0.5 ms early is on time
