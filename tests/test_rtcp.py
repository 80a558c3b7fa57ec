"""Tests for RTCP (RFC 3550 §6, appendix A.1/A.3/A.8): codec, statistics, report scheduling."""

from __future__ import annotations

import contextlib
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipagent.rtp.packet import RtpPacket
from sipagent.rtp.rtcp import (
    NTP_UNIX_OFFSET,
    Goodbye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpParseError,
    RtcpScheduler,
    SdesChunk,
    SenderInfo,
    SenderReport,
    SendStats,
    SourceDescription,
    ntp_from_unix,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
    serialize_compound,
)

# ---------------------------------------------------------------------------------------------
# Known byte strings, written by hand from the RFC 3550 §6.4.1, §6.4.2, §6.5, §6.6 layouts.
# ---------------------------------------------------------------------------------------------

SR_BYTES = bytes.fromhex(
    "81c8000c"  # V=2 P=0 RC=1, PT=200, length 12 (13 words)
    "11223344"  # SSRC of sender
    "e53a1c0080000000"  # NTP timestamp: 0xe53a1c00 s + 0.5 s
    "0001e240"  # RTP timestamp 123456
    "00000064"  # sender's packet count 100
    "00003e80"  # sender's octet count 16000
    "55667788"  # report block: SSRC_1
    "19000005"  # fraction lost 25/256, cumulative lost 5
    "0001000a"  # extended highest sequence 65546 (one wrap)
    "00000020"  # jitter 32
    "3a1c8000"  # LSR
    "00018000"  # DLSR 1.5 s
)
SR = SenderReport(
    ssrc=0x11223344,
    sender_info=SenderInfo(0xE53A1C0080000000, 123456, 100, 16000),
    reports=(ReportBlock(0x55667788, 25, 5, 65546, 32, 0x3A1C8000, 0x18000),),
)

SDES_BYTES = bytes.fromhex(
    "81ca0004"  # V=2 SC=1, PT=202, length 4
    "11223344"  # SSRC
    "0109" + b"user@host".hex() + "00"  # CNAME item (type 1, length 9), END; chunk = 16 bytes
)
SDES = SourceDescription((SdesChunk(0x11223344, ((1, b"user@host"),)),))

RR_EMPTY_BYTES = bytes.fromhex("80c90001 11223344")
RR_EMPTY = ReceiverReport(0x11223344)

BYE_BYTES = bytes.fromhex("81cb0003 11223344 04" + b"bye!".hex() + "000000")
BYE = Goodbye((0x11223344,), "bye!")

APP_BYTES = bytes.fromhex("80cc0002 11223344" + b"name".hex())  # PT=204 APP: skipped


def test_sender_report_known_bytes() -> None:
    assert SR.serialize() == SR_BYTES
    assert parse_compound(SR_BYTES) == [SR]


def test_sdes_cname_known_bytes() -> None:
    assert SDES.serialize() == SDES_BYTES
    [parsed] = parse_compound(SDES_BYTES)
    assert parsed == SDES
    assert isinstance(parsed, SourceDescription)
    assert parsed.chunks[0].cname == "user@host"


def test_empty_receiver_report_and_bye_known_bytes() -> None:
    assert RR_EMPTY.serialize() == RR_EMPTY_BYTES
    assert BYE.serialize() == BYE_BYTES
    assert parse_compound(RR_EMPTY_BYTES + BYE_BYTES) == [RR_EMPTY, BYE]


def test_compound_round_trip_skips_unknown_types() -> None:
    data = SR_BYTES + SDES_BYTES + APP_BYTES + BYE_BYTES
    assert parse_compound(data) == [SR, SDES, BYE]
    assert serialize_compound([SR, SDES, BYE]) == SR_BYTES + SDES_BYTES + BYE_BYTES


def test_rtpfb_and_xr_are_skipped() -> None:
    nack = bytes.fromhex("81cd0003 11223344 55667788 00640001")  # PT=205 generic NACK
    xr = bytes.fromhex("80cf0002 11223344 04000001")  # PT=207 XR, one 4-byte block header
    assert parse_compound(RR_EMPTY_BYTES + nack + xr + SDES_BYTES) == [RR_EMPTY, SDES]


def test_negative_cumulative_lost_is_sign_extended() -> None:
    block = ReportBlock(1, 0, -1, 10, 0)
    data = ReceiverReport(2, (block,)).serialize()
    assert data[12:16] == bytes.fromhex("00ffffff")
    [parsed] = parse_compound(data)
    assert isinstance(parsed, ReceiverReport)
    assert parsed.reports == (block,)


def test_padding_on_last_packet() -> None:
    padded = bytes.fromhex("a0c90002 11223344 00000004")  # P=1, 4 padding octets
    assert parse_compound(SDES_BYTES + padded) == [SDES, RR_EMPTY]


def test_report_with_profile_extension_is_accepted() -> None:
    # A profile-specific extension after the blocks (§6.4.1) makes the packet longer: ignored.
    data = bytes.fromhex("80c90002 11223344 deadbeef")
    assert parse_compound(data) == [RR_EMPTY]


def test_sdes_multiple_items_and_chunks() -> None:
    sdes = SourceDescription(
        (
            SdesChunk(1, ((1, b"a@b"), (2, b"Alice"), (6, b"sipagent"))),
            SdesChunk(2, ((1, b"12345678"),)),  # 4 + 10 bytes of item: END + 1 pad
            SdesChunk(3, ()),
        )
    )
    data = sdes.serialize()
    assert len(data) % 4 == 0
    assert parse_compound(data) == [sdes]
    assert sdes.chunks[1].cname == "12345678"
    assert sdes.chunks[2].cname is None


def test_bye_without_reason_and_many_sources() -> None:
    bye = Goodbye((1, 2, 3))
    assert bye.serialize() == bytes.fromhex("83cb0003 00000001 00000002 00000003")
    assert parse_compound(bye.serialize()) == [bye]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter"),
        (b"\x80\xc9\x00", "shorter"),
        (bytes.fromhex("40c90001 11223344"), "version"),
        (bytes.fromhex("80c90002 11223344"), "overruns"),
        (RR_EMPTY_BYTES + b"\x00\x00", "trailing"),
        (bytes.fromhex("81c90001 11223344"), "truncated"),  # RC=1 but no block
        (bytes.fromhex("80c80001 11223344"), "truncated"),  # SR without sender info
        (bytes.fromhex("81ca0002 11223344 01050000"), "past"),  # SDES item longer than packet
        (bytes.fromhex("81ca0002 11223344 01024142"), "END"),  # no END item
        (bytes.fromhex("81cb0000"), "truncated"),  # BYE SC=1, no SSRC
        (bytes.fromhex("80cb0002 11223344 09414243"), "reason"),
        (bytes.fromhex("a0c90002 11223344 00000000"), "padding"),
        (bytes.fromhex("a0c90001 11223344"), "padding"),  # count 0x44 > body
    ],
)
def test_malformed_raises_parse_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtcpParseError, match=reason):
        parse_compound(data)


def test_serialize_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="fraction lost 256"):
        ReportBlock(1, 256, 0, 0, 0).serialize()
    with pytest.raises(ValueError, match="24 signed"):
        ReportBlock(1, 0, 1 << 23, 0, 0).serialize()
    with pytest.raises(ValueError, match="report blocks"):
        ReceiverReport(1, tuple(ReportBlock(n, 0, 0, 0, 0) for n in range(32))).serialize()
    with pytest.raises(ValueError, match="255"):
        SdesChunk(1, ((1, b"x" * 256),)).serialize()
    with pytest.raises(ValueError):
        ReceiverReport(1 << 32).serialize()


@given(st.binary(max_size=200))
def test_fuzz_random_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(RtcpParseError):
        parse_compound(data)


_VALID = SR_BYTES + SDES_BYTES + APP_BYTES + BYE_BYTES


@given(
    st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(_VALID)),
)
def test_fuzz_mutated_compound_raises_only_parse_error(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID)
    for index, value in edits:
        data[index] = value
    try:
        packets = parse_compound(bytes(data[:cut]))
    except RtcpParseError:
        return
    for packet in packets:  # whatever parsed must re-serialize (fields are in range)
        packet.serialize()


# ---------------------------------------------------------------------------------------------
# Reception statistics
# ---------------------------------------------------------------------------------------------


def rtp(seq: int, ts: int = 0, ssrc: int = 0xABCD) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"\xff" * 160)


def feed(stats: ReceptionStats, seqs: list[int], start: float = 0.0) -> list[bool]:
    """Packets with nominal timing: seq n at n·20 ms, timestamp n·160 (no jitter)."""
    return [stats.update(rtp(seq, seq * 160), start + seq * 0.02) for seq in seqs]


def test_probation_discards_until_two_in_sequence() -> None:
    stats = ReceptionStats(0xABCD)
    assert stats.update(rtp(100), 0.0) is False
    assert not stats.valid
    assert stats.update(rtp(101), 0.02) is True
    assert stats.valid
    assert stats.received == 1
    assert stats.expected == 1
    assert stats.cumulative_lost == 0


def test_probation_restarts_on_gap() -> None:
    stats = ReceptionStats(1)
    assert feed(stats, [10, 12, 14, 15, 16]) == [False, False, False, True, True]
    assert stats.expected == 2
    assert stats.received == 2


def test_no_probation_counts_first_packet() -> None:
    stats = ReceptionStats(1, probation=0)
    assert stats.update(rtp(7), 0.0) is True
    assert (stats.expected, stats.received) == (1, 1)


def test_loss_counting_across_sequence_wrap() -> None:
    stats = ReceptionStats(1)
    # 65530..65535 then 0..10 with 65534 and 3 lost.
    seqs = [s for s in [*range(65530, 65536), *range(0, 11)] if s not in (65534, 3)]
    feed(stats, seqs)
    # Base is 65531 (the packet that ended probation); highest is 65536 + 10.
    assert stats.extended_highest_sequence == 65536 + 10
    assert stats.expected == 65536 + 10 - 65531 + 1 == 16
    assert stats.received == 14
    assert stats.cumulative_lost == 2
    block = stats.report_block(now=1.0)
    assert block.highest_sequence == 65546
    assert block.cumulative_lost == 2
    assert block.fraction_lost == 2 * 256 // 16


def test_reorder_is_not_loss_and_does_not_count_a_wrap_twice() -> None:
    stats = ReceptionStats(1)
    feed(stats, [65533, 65534, 0, 65535, 1, 3, 2, 4])
    assert stats.extended_highest_sequence == 65536 + 4
    assert stats.cumulative_lost == 0
    assert stats.report_block(1.0).fraction_lost == 0


def test_duplicates_make_loss_negative() -> None:
    stats = ReceptionStats(1)
    feed(stats, [1, 2, 3, 3, 3, 4])
    assert stats.cumulative_lost == -2
    block = stats.report_block(1.0)
    assert block.cumulative_lost == -2
    assert block.fraction_lost == 0  # negative interval loss reports as zero (A.3)
    assert ReceiverReport(9, (block,)).serialize()  # and fits the wire


def test_fraction_lost_is_per_interval() -> None:
    stats = ReceptionStats(1)
    feed(stats, [s for s in range(0, 101) if s % 10 != 5])  # base 1; 10 of 100 lost
    first = stats.report_block(5.0)
    assert first.fraction_lost == 10 * 256 // 100
    assert first.cumulative_lost == 10
    feed(stats, list(range(101, 151)))  # no loss in the next interval
    second = stats.report_block(10.0)
    assert second.fraction_lost == 0
    assert second.cumulative_lost == 10
    feed(stats, [s for s in range(151, 201) if s % 2 or s == 200])  # 152..198 lost: 24 of 50
    third = stats.report_block(15.0)
    assert third.fraction_lost == 24 * 256 // 50
    assert third.cumulative_lost == 34


def test_big_jump_needs_two_sequential_packets_to_resync() -> None:
    stats = ReceptionStats(1)
    feed(stats, [1, 2, 3])
    assert stats.update(rtp(40000, 1000), 1.0) is False  # a stray: ignored
    assert stats.extended_highest_sequence == 3
    assert stats.update(rtp(4, 4 * 160), 1.02) is True
    assert stats.update(rtp(50000), 2.0) is False
    assert stats.update(rtp(50001), 2.02) is True  # the sender restarted: re-sync
    assert (stats.extended_highest_sequence, stats.expected, stats.received) == (50001, 1, 1)


def test_jitter_is_zero_for_constant_delay() -> None:
    stats = ReceptionStats(1)
    for n in range(200):
        stats.update(rtp(n, 1000 + n * 160), 50.0 + n * 0.02 + 0.080)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_converges_for_alternating_delay() -> None:
    # Transit alternates 0 / 5 ms: |D| = 5 ms = 40 timestamp units on every packet, so
    # J -> 40 (J_n = 40·(1 − (15/16)^n)).
    stats = ReceptionStats(1)
    for n in range(300):
        stats.update(rtp(n, n * 160), n * 0.02 + (0.005 if n % 2 else 0.0))
    assert stats.jitter == pytest.approx(40.0, rel=1e-3)
    assert stats.jitter_ms == pytest.approx(5.0, rel=1e-3)
    block = stats.report_block(10.0)
    assert block.jitter == 39 or block.jitter == 40


def test_jitter_matches_uniform_delay_expectation() -> None:
    # Delay uniform in [0, a): D = X_n − X_(n−1), E|D| = a/3. J is an EWMA of |D|.
    rng = random.Random(7)
    a = 0.030
    stats = ReceptionStats(1)
    samples = []
    for n in range(20000):
        stats.update(rtp(n, n * 160), n * 0.02 + rng.uniform(0, a))
        if n > 100:
            samples.append(stats.jitter_ms)
    assert statistics.fmean(samples) == pytest.approx(a / 3 * 1000, rel=0.05)


def test_jitter_survives_timestamp_wrap() -> None:
    stats = ReceptionStats(1)
    base = 0xFFFFFFFF - 5 * 160
    for n in range(20):
        stats.update(rtp(n, base + n * 160), n * 0.02)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_ignores_repeated_timestamps() -> None:
    # A telephone-event keeps the event-start timestamp for 140 ms of packets.
    stats = ReceptionStats(1)
    for n in range(10):
        stats.update(rtp(n, n * 160), n * 0.02)
    for n in range(10, 17):
        stats.update(rtp(n, 10 * 160), n * 0.02)
    for n in range(17, 30):
        stats.update(rtp(n, n * 160), n * 0.02)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_with_48khz_clock() -> None:
    stats = ReceptionStats(1)
    for n in range(300):
        stats.update(rtp(n, n * 960), n * 0.02 + (0.005 if n % 2 else 0.0), clock_rate=48000)
    assert stats.jitter == pytest.approx(240.0, rel=1e-3)
    assert stats.jitter_ms == pytest.approx(5.0, rel=1e-3)


def test_lsr_and_dlsr_in_report_block() -> None:
    stats = ReceptionStats(1)
    feed(stats, [0, 1, 2])
    assert stats.report_block(1.0).lsr == 0
    ntp = ntp_timestamp(3_900_000_000.25)
    stats.last_sr, stats.last_sr_arrival = ntp_middle(ntp), 10.0
    block = stats.report_block(11.5)
    assert block.lsr == ntp_middle(ntp) == ((3_900_000_000 & 0xFFFF) << 16) | 0x4000
    assert block.dlsr == int(1.5 * 65536)


# ---------------------------------------------------------------------------------------------
# NTP and sending side
# ---------------------------------------------------------------------------------------------


def test_ntp_conversions() -> None:
    assert ntp_from_unix(0.0) == NTP_UNIX_OFFSET
    assert ntp_timestamp(1.5) == (1 << 32) | (1 << 31)
    assert ntp_middle(0x0001000280000000) == 0x00028000


def test_send_stats_counts_payload_and_maps_rtp_clock() -> None:
    stats = SendStats(8000)
    assert stats.rtp_timestamp_at(5.0) == 0
    for n in range(50):
        stats.record(RtpPacket(0, n, 1000 + n * 160, 1, b"\x00" * 160, padding=4), 100.0 + n * 0.02)
    assert (stats.packet_count, stats.octet_count) == (50, 8000)
    # Last packet: ts 1000 + 49·160 at t = 100.98; 0.5 s later is 4000 samples later.
    assert stats.rtp_timestamp_at(101.48) == 1000 + 49 * 160 + 4000
    info = stats.sender_info(101.48, ntp_from_unix(1_700_000_000.0))
    assert info.ntp_timestamp == (1_700_000_000 + NTP_UNIX_OFFSET) << 32
    assert info.rtp_timestamp == 1000 + 49 * 160 + 4000
    assert (info.packet_count, info.octet_count) == (50, 8000)


def test_send_stats_anchor_ignores_repeated_timestamps() -> None:
    stats = SendStats(8000)
    stats.record(RtpPacket(101, 1, 8000, 1, b"\x00" * 4), 1.0)  # event start
    stats.record(RtpPacket(101, 2, 8000, 1, b"\x00" * 4), 1.02)  # update, same timestamp
    assert stats.rtp_timestamp_at(1.1) == 8000 + 800


def test_send_stats_timestamp_wraps() -> None:
    stats = SendStats(8000)
    stats.record(RtpPacket(0, 1, 0xFFFFFF00, 1, b""), 0.0)
    assert stats.rtp_timestamp_at(0.1) == (0xFFFFFF00 + 800) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Scheduler
# ---------------------------------------------------------------------------------------------

WALL = 3_900_000_000.0  # a fixed NTP-epoch wall clock offset: ntp_now = WALL + now


def make(ssrc: int, seed: int = 1, now: float = 0.0) -> RtcpScheduler:
    return RtcpScheduler(ssrc, f"{ssrc:x}@test", rng=random.Random(seed), now=now)


def test_first_report_sooner_then_randomised_interval() -> None:
    firsts = [make(1, seed).next_time for seed in range(200)]
    assert all(1.25 <= t <= 3.75 for t in firsts)
    assert max(firsts) - min(firsts) > 2.0  # actually randomised
    scheduler = make(1, seed=3, now=100.0)
    assert not scheduler.due(100.0)
    assert scheduler.due(scheduler.next_time)
    gaps = []
    now = scheduler.next_time
    for _ in range(200):
        scheduler.build_report(now, WALL + now)
        gaps.append(scheduler.next_time - now)
        now = scheduler.next_time
    assert all(2.5 <= gap <= 7.5 for gap in gaps)
    assert statistics.fmean(gaps) == pytest.approx(5.0, rel=0.1)


def test_same_seed_same_schedule() -> None:
    assert make(1, seed=42).next_time == make(2, seed=42).next_time


def test_receiver_only_sends_rr_and_cname_known_bytes() -> None:
    scheduler = make(0x11223344)
    scheduler.cname = "user@host"
    data = scheduler.build_report(3.0, WALL + 3.0)
    assert data == RR_EMPTY_BYTES + SDES_BYTES


def test_sender_sends_sr_until_two_silent_intervals() -> None:
    scheduler = make(7)
    for n in range(100):
        scheduler.on_rtp_sent(RtpPacket(0, n, n * 160, 7, b"\xff" * 160), n * 0.02)
    first = parse_compound(scheduler.build_report(2.5, WALL + 2.5))
    assert isinstance(first[0], SenderReport)
    assert first[0].sender_info.packet_count == 100
    assert first[0].sender_info.octet_count == 16000
    assert first[0].sender_info.rtp_timestamp == 99 * 160 + round((2.5 - 1.98) * 8000)
    assert first[0].sender_info.ntp_timestamp == ntp_timestamp(WALL + 2.5)
    assert isinstance(first[1], SourceDescription)
    assert first[1].chunks[0].cname == "7@test"
    # No RTP since: the next report is still an SR (sent since the report before last, §6.3.8),
    # the one after is an RR.
    second = parse_compound(scheduler.build_report(7.5, WALL + 7.5))
    third = parse_compound(scheduler.build_report(12.5, WALL + 12.5))
    assert isinstance(second[0], SenderReport)
    assert isinstance(third[0], ReceiverReport)


def test_report_blocks_for_heard_sources_only() -> None:
    scheduler = make(1)
    for n in range(50):
        if n != 20:
            scheduler.on_rtp_received(rtp(n, n * 160, ssrc=2), n * 0.02)
    scheduler.on_rtp_received(rtp(0, 0, ssrc=3), 0.5)  # on probation: not reported
    [rr, _] = parse_compound(scheduler.build_report(2.0, WALL + 2.0))
    assert isinstance(rr, ReceiverReport)
    [block] = rr.reports
    assert (block.ssrc, block.cumulative_lost, block.highest_sequence) == (2, 1, 49)
    assert block.fraction_lost == 256 // 49
    # Nothing heard since: no block next time.
    [rr2, _] = parse_compound(scheduler.build_report(7.0, WALL + 7.0))
    assert isinstance(rr2, ReceiverReport)
    assert rr2.reports == ()


class Link:
    """Two schedulers joined by a fixed one-way delay (no sockets)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.a = make(0xA, seed=1)
        self.b = make(0xB, seed=2)

    def stream(self, sender: RtcpScheduler, receiver: RtcpScheduler, start: float, count: int) -> None:
        for n in range(count):
            packet = RtpPacket(0, n, n * 160, sender.ssrc, b"\xff" * 160)
            sender.on_rtp_sent(packet, start + n * 0.02)
            receiver.on_rtp_received(packet, start + n * 0.02 + self.delay)


def test_rtt_from_lsr_dlsr() -> None:
    link = Link(delay=0.040)
    link.stream(link.a, link.b, 0.0, 200)
    link.stream(link.b, link.a, 0.0, 200)
    # A reports at t=4, B gets it at 4.04, B reports at 5.3, A gets that at 5.34.
    sr_a = link.a.build_report(4.0, WALL + 4.0)
    link.b.receive(sr_a, 4.04, WALL + 4.04)
    assert link.b.remote_report is not None
    assert link.b.remote_report.rtt is None  # A had not seen an SR from B yet: LSR = 0
    sr_b = link.b.build_report(5.3, WALL + 5.3)
    [report, _] = parse_compound(sr_b)
    assert isinstance(report, SenderReport)
    [block] = report.reports
    assert block.ssrc == 0xA
    assert block.lsr == ntp_middle(ntp_timestamp(WALL + 4.0))
    assert block.dlsr == int(1.26 * 65536)
    link.a.receive(sr_b, 5.34, WALL + 5.34)
    remote = link.a.remote_report
    assert remote is not None
    assert remote.reporter_ssrc == 0xB
    assert remote.rtt == pytest.approx(0.080, abs=2 / 65536)
    assert remote.fraction_lost == 0.0
    assert remote.cumulative_lost == 0
    assert remote.highest_sequence == 199
    assert remote.received_at == 5.34
    assert link.a.remote_sender_info is not None
    assert link.a.remote_sender_info.packet_count == 200


def test_remote_report_from_rr_with_loss_and_jitter() -> None:
    a = make(0xA)
    block = ReportBlock(0xA, 64, 12, 1000, 80, 0, 0)
    other = ReportBlock(0xC, 255, 99, 5, 5, 0, 0)  # about someone else: ignored
    a.receive(ReceiverReport(0xB, (other, block)).serialize() + SDES_BYTES, 9.0, WALL + 9.0)
    remote = a.remote_report
    assert remote is not None
    assert remote.fraction_lost == 0.25
    assert remote.cumulative_lost == 12
    assert remote.jitter == 80
    assert remote.jitter_ms == 10.0
    assert remote.rtt is None


def test_rtt_negative_from_clock_rounding_clamps_to_zero() -> None:
    a = make(0xA)
    lsr = ntp_middle(ntp_timestamp(WALL + 10.0))
    block = ReportBlock(0xA, 0, 0, 0, 0, lsr, int(0.5 * 65536) + 3)
    a.receive(ReceiverReport(0xB, (block,)).serialize(), 10.5, WALL + 10.5)
    assert a.remote_report is not None
    assert a.remote_report.rtt == 0.0


def test_bye_compound_and_receiving_bye_forgets_source() -> None:
    a = make(0xA)
    b = make(0xB)
    for n in range(5):
        a.on_rtp_received(rtp(n, n * 160, ssrc=0xB), n * 0.02)
    assert 0xB in a.sources
    data = b.build_bye(3.0, WALL + 3.0, reason="hangup")
    packets = a.receive(data, 3.01, WALL + 3.01)
    assert isinstance(packets[0], ReceiverReport)
    assert isinstance(packets[1], SourceDescription)
    assert packets[-1] == Goodbye((0xB,), "hangup")
    assert 0xB not in a.sources


def test_receive_malformed_raises_parse_error() -> None:
    with pytest.raises(RtcpParseError):
        make(1).receive(b"\x80\xc9\x00\x05junk", 0.0, WALL)
