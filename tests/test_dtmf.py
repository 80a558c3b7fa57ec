"""Tests for RFC 4733 telephone-events (receiver and sender) and RFC 3389 comfort noise."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipagent.pcapio import read_udp
from sipagent.rtp.dtmf import (
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    build_cn,
    comfort_noise_frame,
    packets_for,
    parse_cn,
)
from sipagent.rtp.events import DTMF_DIGITS, DtmfReceived
from sipagent.rtp.packet import RtpPacket

PT = 101
SSRC = 0x1234
SIPP = Path("/usr/share/sip-tester")
SIPP_FILES = {**{str(n): f"dtmf_2833_{n}.pcap" for n in range(10)}, "*": "dtmf_2833_star.pcap"}
SIPP_FILES["#"] = "dtmf_2833_pound.pcap"


def event(
    code: int, duration: int, *, end: bool = False, ts: int = 8000, seq: int = 0, marker: bool = False
) -> RtpPacket:
    payload = TelephoneEvent(code, end, 10, duration).serialize()
    return RtpPacket(PT, seq & 0xFFFF, ts, SSRC, payload, marker)


def run(receiver: DtmfReceiver, packets: list[RtpPacket], start: float = 0.0) -> list[DtmfReceived]:
    """Deliver packets 20 ms apart, ticking the receiver before each."""
    out: list[DtmfReceived] = []
    for n, packet in enumerate(packets):
        now = start + n * 0.02
        out += receiver.tick(now)
        out += receiver.receive(packet, now)
    return out


def press(code: int, ts: int, seq: int = 0, updates: int = 5) -> list[RtpPacket]:
    """A well-behaved key press: updates growing by 160, the last with E, sent 3 times."""
    packets = [
        event(code, 160 * (n + 1), end=n == updates - 1, ts=ts, seq=seq + n, marker=n == 0)
        for n in range(updates)
    ]
    final = packets[-1].payload
    repeats = [RtpPacket(PT, seq + updates + n, ts, SSRC, final) for n in range(2)]
    return packets + repeats


# ---------------------------------------------------------------------------------------------
# sipp's real RFC 2833 captures
# ---------------------------------------------------------------------------------------------


def telephone_event_pt(packets: list[RtpPacket]) -> int:
    """The dynamic payload type whose payloads all look like 4-octet event reports."""
    by_pt: dict[int, list[RtpPacket]] = {}
    for packet in packets:
        by_pt.setdefault(packet.payload_type, []).append(packet)
    candidates = [
        pt
        for pt, group in by_pt.items()
        if pt >= 96
        and all(len(p.payload) % 4 == 0 and p.payload and p.payload[0] <= 16 for p in group)
        and any(p.payload[1] & 0x80 for p in group)
    ]
    assert len(candidates) == 1, by_pt.keys()
    return candidates[0]


@pytest.mark.parametrize(("digit", "name"), sorted(SIPP_FILES.items()))
def test_sipp_capture_decodes_to_its_digit_once(digit: str, name: str) -> None:
    path = SIPP / name
    if not path.exists():
        pytest.skip(f"{path} not installed (Debian package sip-tester)")
    datagrams = list(read_udp(path))
    packets = [RtpPacket.parse(d.payload) for d in datagrams]
    pt = telephone_event_pt(packets)
    receiver = DtmfReceiver(pt)
    out: list[DtmfReceived] = []
    for datagram, packet in zip(datagrams, packets, strict=True):
        out += receiver.tick(datagram.time)
        out += receiver.receive(packet, datagram.time)
    out += receiver.tick(datagrams[-1].time + 1.0)
    assert [e.digit for e in out] == [digit]
    assert out[0].start == datagrams[0].time
    assert out[0].duration_ms == 280  # sipp's final duration field is 0x08c0 = 2240 units


# ---------------------------------------------------------------------------------------------
# Receiver
# ---------------------------------------------------------------------------------------------


def test_end_packet_retransmissions_are_deduplicated() -> None:
    receiver = DtmfReceiver(PT)
    out = run(receiver, press(5, ts=8000))
    assert out == [DtmfReceived("5", 100, 0.0)]
    assert receiver.get_timer() is None
    assert receiver.tick(10.0) == []


def test_digit_reported_on_first_end_packet() -> None:
    receiver = DtmfReceiver(PT)
    packets = press(1, ts=0)
    assert run(receiver, packets[:4]) == []
    assert receiver.receive(packets[4], 1.0) == [DtmfReceived("1", 100, 0.0)]


def test_lost_start_packets() -> None:
    receiver = DtmfReceiver(PT)
    out = run(receiver, press(9, ts=1600)[2:], start=3.0)
    assert out == [DtmfReceived("9", 100, 3.0)]


def test_only_an_end_packet_arrives() -> None:
    receiver = DtmfReceiver(PT)
    assert receiver.receive(event(10, 640, end=True), 2.0) == [DtmfReceived("*", 80, 2.0)]
    assert receiver.receive(event(10, 640, end=True), 2.02) == []


def test_lost_end_packets_reported_after_timeout() -> None:
    receiver = DtmfReceiver(PT, timeout=0.2)
    out = run(receiver, press(11, ts=0)[:4])  # last update at t = 0.06, duration 640
    assert out == []
    assert receiver.get_timer() == pytest.approx(0.26)
    assert receiver.tick(0.26) == []
    assert receiver.tick(0.27) == [DtmfReceived("#", 80, 0.0)]
    assert receiver.tick(1.0) == []
    # A very late end packet of the same event is not a second press.
    assert receiver.receive(event(11, 800, end=True, ts=0), 1.1) == []


def test_lost_end_packets_reported_when_next_event_starts() -> None:
    receiver = DtmfReceiver(PT)
    first = press(2, ts=0)[:3]  # ends at 480 without any E packet
    second = press(3, ts=2400, seq=10)
    out = run(receiver, first + second)
    assert [(e.digit, e.duration_ms) for e in out] == [("2", 60), ("3", 100)]


def test_back_to_back_same_digit_is_two_presses() -> None:
    receiver = DtmfReceiver(PT)
    out = run(receiver, press(4, ts=0) + press(4, ts=1120, seq=7))
    assert [e.digit for e in out] == ["4", "4"]


def test_back_to_back_same_digit_with_all_end_packets_lost() -> None:
    receiver = DtmfReceiver(PT)
    out = run(receiver, press(4, ts=0)[:4] + press(4, ts=1120, seq=7)[:4])
    out += receiver.tick(10.0)
    assert [e.digit for e in out] == ["4", "4"]


def test_reordered_update_does_not_shorten_or_split() -> None:
    receiver = DtmfReceiver(PT)
    packets = press(6, ts=0)
    packets[1], packets[2] = packets[2], packets[1]
    assert [e.duration_ms for e in run(receiver, packets)] == [100]


def test_late_packet_of_earlier_event_is_ignored() -> None:
    receiver = DtmfReceiver(PT)
    first = press(7, ts=0)
    second = press(8, ts=2000, seq=20)
    # The first event is reported by its E packet; the start of the second event arrives,
    # then a straggler update of the first one: neither a new press nor an end of the second.
    out = run(receiver, [*first[:5], second[0], first[3], *second[1:]])
    assert [e.digit for e in out] == ["7", "8"]


def test_stray_packet_older_than_current_event_does_not_split_it() -> None:
    receiver = DtmfReceiver(PT)
    current = press(8, ts=5000, seq=30)
    stray = event(1, 320, ts=4000, seq=25)  # an earlier event never seen before
    out = run(receiver, [*current[:2], stray, *current[2:]])
    assert out == [DtmfReceived("8", 100, 0.0)]


def test_long_event_segments_are_joined() -> None:
    # RFC 4733 §2.5.1: a long press split into segments; the next segment starts at ts + duration,
    # without the marker bit; only the last segment carries the E bit.
    receiver = DtmfReceiver(PT)
    seg1 = [event(1, d, ts=0, seq=n, marker=n == 0) for n, d in enumerate(range(8000, 64001, 8000))]
    seg2 = [event(1, d, ts=64000, seq=10 + n) for n, d in enumerate(range(8000, 16001, 8000))]
    end = [event(1, 16000, end=True, ts=64000, seq=12 + n) for n in range(3)]
    out = run(receiver, seg1 + seg2 + end)
    assert out == [DtmfReceived("1", 10000, 0.0)]


def test_events_above_15_emit_nothing_but_end_the_digit() -> None:
    receiver = DtmfReceiver(PT)
    assert run(receiver, press(16, ts=0)) == []  # flash hook
    out = run(receiver, [*press(0, ts=2000)[:3], event(32, 160, ts=3000, marker=True)])
    assert [e.digit for e in out] == ["0"]
    assert receiver.tick(100.0) == []


def test_other_payload_types_and_short_payloads_ignored() -> None:
    receiver = DtmfReceiver(PT)
    assert receiver.receive(RtpPacket(0, 1, 0, SSRC, b"\x05\x8a\x03\x20"), 0.0) == []
    assert receiver.receive(RtpPacket(PT, 1, 0, SSRC, b"\x05\x8a\x03"), 0.0) == []
    assert receiver.get_timer() is None


def test_multi_event_packet_reads_the_first() -> None:
    receiver = DtmfReceiver(PT)
    payload = TelephoneEvent(3, True, 10, 800).serialize() + TelephoneEvent(4, False, 10, 160).serialize()
    assert receiver.receive(RtpPacket(PT, 1, 0, SSRC, payload), 0.0) == [DtmfReceived("3", 100, 0.0)]


def test_48khz_clock_duration() -> None:
    receiver = DtmfReceiver(PT, clock_rate=48000)
    assert receiver.receive(event(12, 4800, end=True), 0.0) == [DtmfReceived("A", 100, 0.0)]


@given(
    st.lists(
        st.tuples(st.binary(max_size=12), st.integers(0, 0xFFFFFFFF), st.booleans(), st.integers(0, 2)),
        max_size=40,
    )
)
def test_random_payloads_never_raise(items: list[tuple[bytes, int, bool, int]]) -> None:
    receiver = DtmfReceiver(PT)
    now = 0.0
    for payload, ts, marker, ssrc in items:
        now += 0.02
        receiver.receive(RtpPacket(PT, 0, ts, ssrc, payload, marker), now)
        receiver.tick(now)


# ---------------------------------------------------------------------------------------------
# Sender
# ---------------------------------------------------------------------------------------------


def test_packets_for_default_digit() -> None:
    packets = packets_for("5", start_timestamp=4000)
    decoded = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [e.duration for e in decoded if e] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in decoded if e] == [False] * 4 + [True] * 3
    assert {e.event for e in decoded if e} == {5}
    assert {e.volume for e in decoded if e} == {10}
    assert {p.timestamp for p in packets} == {4000}
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert [p.retransmission for p in packets] == [False] * 5 + [True] * 2
    assert packets[0].payload == bytes.fromhex("050a00a0")
    assert packets[4].payload == bytes.fromhex("058a0320")


def test_packets_for_uneven_duration_caps_the_last_update() -> None:
    packets = packets_for("#", start_timestamp=0, duration_ms=90, volume=6)
    decoded = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [e.duration for e in decoded if e] == [160, 320, 480, 640, 720, 720, 720]
    assert packets[0].payload[:2] == bytes((11, 6))


def test_single_packet_event_keeps_marker_on_retransmissions() -> None:
    packets = packets_for("D", start_timestamp=0, duration_ms=20)
    assert [(p.marker, p.end) for p in packets] == [(True, True)] * 3


def test_packets_for_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="digit"):
        packets_for("E", start_timestamp=0)
    with pytest.raises(ValueError, match="digit"):
        packets_for("12", start_timestamp=0)
    with pytest.raises(ValueError, match="range"):
        packets_for("1", start_timestamp=0, duration_ms=0)
    with pytest.raises(ValueError, match="range"):
        packets_for("1", start_timestamp=0, duration_ms=9000)
    with pytest.raises(ValueError, match="volume"):
        packets_for("1", start_timestamp=0, volume=64)


def test_to_rtp() -> None:
    packet = DtmfPacket(b"\x01\x0a\x00\xa0", 99, True, False)
    assert packet.to_rtp(101, 7, 5) == RtpPacket(101, 7, 99, 5, b"\x01\x0a\x00\xa0", True)


def test_sender_shapes() -> None:
    sender = DtmfSender(PT)
    payloads = sender.payloads_for("7", duration_ms=60, volume=3)
    assert payloads == [
        (bytes.fromhex("070300a0"), False),
        (bytes.fromhex("07030140"), False),
        (bytes.fromhex("078301e0"), True),
        (bytes.fromhex("078301e0"), True),
        (bytes.fromhex("078301e0"), True),
    ]
    packets = sender.packets_for("7", start_timestamp=0xFFFFFFFF + 5, duration_ms=60, volume=3)
    assert [(p.payload, p.end) for p in packets] == payloads
    assert {p.timestamp for p in packets} == {4}  # wrapped into 32 bits
    with pytest.raises(ValueError):
        DtmfSender(128)


def transmit(
    sender: DtmfSender, digits: str, rng: random.Random, *, lose_ends: int = 2, ts0: int = 0xFFFFF000
) -> list[tuple[float, RtpPacket]]:
    """Digits paced one packet per 20 ms tick, on a running timestamp, with loss of E packets.

    Every packet gets its own sequence number; the media clock advances one tick per tick, so
    the next event starts at a later timestamp. Up to ``lose_ends`` of each event's three E
    packets are dropped at random.
    """
    out: list[tuple[float, RtpPacket]] = []
    seq = rng.randrange(65536)
    tick = 0
    for digit in digits:
        packets = sender.packets_for(digit, start_timestamp=ts0 + tick * 160, duration_ms=100)
        ends = [n for n, p in enumerate(packets) if p.end]
        dropped = set(rng.sample(ends, rng.randint(0, lose_ends)))
        for n, packet in enumerate(packets):
            seq = (seq + 1) & 0xFFFF
            if n not in dropped:
                out.append((tick * 0.02, packet.to_rtp(sender.payload_type, seq, SSRC)))
            tick += 1
        tick += 3  # inter-digit audio
    return out


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_all_digits_with_end_loss(seed: int) -> None:
    rng = random.Random(seed)
    receiver = DtmfReceiver(PT)
    out: list[DtmfReceived] = []
    for now, packet in transmit(DtmfSender(PT), DTMF_DIGITS, rng):
        out += receiver.tick(now)
        out += receiver.receive(packet, now)
    out += receiver.tick(100.0)
    assert "".join(e.digit for e in out) == DTMF_DIGITS
    assert {e.duration_ms for e in out} == {100}


def test_round_trip_with_all_end_packets_lost_uses_timeout() -> None:
    sent = transmit(DtmfSender(PT), "*0#", random.Random(1), lose_ends=0)
    updates = [(now, p) for now, p in sent if not p.payload[1] & 0x80]  # every E packet lost
    receiver = DtmfReceiver(PT)
    out: list[DtmfReceived] = []
    for now, packet in updates:
        out += receiver.tick(now)
        out += receiver.receive(packet, now)
    assert [(e.digit, e.duration_ms) for e in out] == [("*", 80), ("0", 80)]  # ended by the next
    last = updates[-1][0]
    assert receiver.tick(last + 0.2) == []
    [pound] = receiver.tick(last + 0.21)
    assert (pound.digit, pound.duration_ms) == ("#", 80)
    assert pound.start == pytest.approx(last - 0.06)


def test_round_trip_through_the_pacer() -> None:
    pacer_module = pytest.importorskip("sipagent.rtp.pacer")
    pacer = pacer_module.Pacer(
        ssrc=SSRC,
        first_sequence=65500,
        first_timestamp=0xFFFFFE00,
        payload_type=0,
        encode=lambda f: bytes(160),
    )
    sender = DtmfSender(PT)
    for digit in "159#":
        pacer.enqueue_event(sender.payloads_for(digit), PT)
        pacer.enqueue([np.zeros(160, dtype=np.int16)] * 3)
    pacer.start(0.0)
    receiver = DtmfReceiver(PT)
    out: list[DtmfReceived] = []
    events: list[RtpPacket] = []
    for tick in range(60):
        now = tick * 0.02
        for datagram in pacer.handle_timer(now):
            packet = RtpPacket.parse(datagram)
            if packet.payload_type == PT:
                events.append(packet)
                out += receiver.receive(packet, now)
        out += receiver.tick(now)
    assert "".join(e.digit for e in out) == "159#"
    seqs = [p.sequence_number for p in events]
    assert len(set(seqs)) == len(seqs) == 4 * 7  # end repeats have their own sequence numbers


def test_telephone_event_codec() -> None:
    assert TelephoneEvent.parse(b"\x0b\x8a\x08\xc0") == TelephoneEvent(11, True, 10, 2240)
    assert TelephoneEvent.parse(b"\x0b\x8a\x08") is None
    assert TelephoneEvent(11, True, 10, 2240).serialize() == b"\x0b\x8a\x08\xc0"
    # The reserved R bit is ignored on receive.
    assert TelephoneEvent.parse(b"\x01\x4a\x00\xa0") == TelephoneEvent(1, False, 10, 160)


# ---------------------------------------------------------------------------------------------
# Comfort noise
# ---------------------------------------------------------------------------------------------


def test_parse_cn_level() -> None:
    assert parse_cn(b"\x28") == -40
    assert parse_cn(b"\x28\x01\x02\x03") == -40  # spectral coefficients ignored
    assert parse_cn(b"\xff") == -127  # reserved MSB ignored
    assert parse_cn(build_cn(-63)) == -63
    with pytest.raises(ValueError):
        parse_cn(b"")
    with pytest.raises(ValueError):
        build_cn(3)


@pytest.mark.parametrize("level", [-30, -50, -70])
def test_comfort_noise_frame_level(level: int) -> None:
    rng = np.random.default_rng(1)
    frames = [comfort_noise_frame(level, rng) for _ in range(50)]
    assert all(f.shape == (160,) and f.dtype == np.int16 for f in frames)
    samples = np.concatenate(frames).astype(np.float64)
    rms = float(np.sqrt(np.mean(samples**2)))
    measured = 20 * np.log10(rms / 32767)
    assert measured == pytest.approx(level, abs=0.6 if level > -70 else 1.5)


def test_comfort_noise_is_not_constant_and_rejects_bad_level() -> None:
    rng = np.random.default_rng(2)
    a = comfort_noise_frame(-40, rng)
    b = comfort_noise_frame(-40, rng)
    assert not np.array_equal(a, b)
    assert Counter(a.tolist()).most_common(1)[0][1] < 40
    with pytest.raises(ValueError):
        comfort_noise_frame(1, rng)
