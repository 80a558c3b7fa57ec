"""Tests for the RTP header codec (RFC 3550 §5.1) and the RFC 5761 RTP/RTCP demux test."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipagent.rtp.packet import RtpHeaderExtension, RtpPacket, RtpParseError, is_rtcp_packet

# A PCMU packet as a softphone sends it: V=2, no P/X/CC, M=1, PT=0, seq 0x1234,
# ts 0xDEADBEEF, SSRC 0x01020304, then 160 bytes of µ-law silence.
PCMU_HEADER = bytes.fromhex("8080 1234 deadbeef 01020304")
PCMU = PCMU_HEADER + b"\xff" * 160


def test_parse_known_pcmu_packet() -> None:
    packet = RtpPacket.parse(PCMU)
    assert packet == RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"\xff" * 160,
        marker=True,
    )
    assert packet.serialize() == PCMU


def test_serialize_known_bytes_without_marker() -> None:
    packet = RtpPacket(payload_type=8, sequence_number=1, timestamp=160, ssrc=7, payload=b"\xd5\xd5")
    assert packet.serialize() == bytes.fromhex("8008 0001 000000a0 00000007 d5d5")


def test_header_only_packet_round_trips() -> None:
    packet = RtpPacket(payload_type=13, sequence_number=65535, timestamp=0xFFFFFFFF, ssrc=0)
    data = packet.serialize()
    assert len(data) == 12
    assert RtpPacket.parse(data) == packet


def test_csrc_round_trip() -> None:
    packet = RtpPacket(
        payload_type=96, sequence_number=5, timestamp=6, ssrc=7, payload=b"x", csrc=(1, 2, 0xFFFFFFFF)
    )
    data = packet.serialize()
    assert data[0] == 0x83  # V=2, CC=3
    assert data[12:24] == struct.pack("!III", 1, 2, 0xFFFFFFFF)
    assert RtpPacket.parse(data) == packet


def test_fifteen_csrcs_round_trip() -> None:
    packet = RtpPacket(payload_type=0, sequence_number=0, timestamp=0, ssrc=0, csrc=tuple(range(15)))
    assert RtpPacket.parse(packet.serialize()) == packet


def test_extension_round_trip() -> None:
    extension = RtpHeaderExtension(profile=0xBEDE, data=bytes.fromhex("10ff0000"))
    packet = RtpPacket(
        payload_type=111, sequence_number=9, timestamp=10, ssrc=11, payload=b"opus", extension=extension
    )
    data = packet.serialize()
    assert data[0] == 0x90  # V=2, X=1
    assert data[12:16] == bytes.fromhex("bede 0001")
    assert RtpPacket.parse(data) == packet


def test_empty_extension_round_trip() -> None:
    packet = RtpPacket(
        payload_type=0, sequence_number=0, timestamp=0, ssrc=0, extension=RtpHeaderExtension(0x1000)
    )
    data = packet.serialize()
    assert len(data) == 16
    assert RtpPacket.parse(data) == packet


def test_csrc_and_extension_together() -> None:
    packet = RtpPacket(
        payload_type=0,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        payload=b"abc",
        csrc=(4, 5),
        extension=RtpHeaderExtension(1, b"12345678"),
    )
    data = packet.serialize()
    assert data[20:24] == bytes.fromhex("0001 0002")
    assert RtpPacket.parse(data) == packet


def test_padding_round_trip_and_wire_form() -> None:
    packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=2, ssrc=3, payload=b"abc", padding=5)
    data = packet.serialize()
    assert data[0] & 0x20
    assert data[-5:] == b"\x00\x00\x00\x00\x05"
    assert RtpPacket.parse(data) == packet


def test_padding_with_nonzero_filler_is_stripped() -> None:
    # Padding octets other than the last are "don't care" (RFC 3550 §5.1).
    data = bytes.fromhex("a000 0001 00000002 00000003") + b"abc" + b"\xaa\xbb\x03"
    packet = RtpPacket.parse(data)
    assert packet.payload == b"abc"
    assert packet.padding == 3


def test_padding_of_one_byte_is_just_the_count() -> None:
    packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=2, ssrc=3, payload=b"ab", padding=1)
    assert packet.serialize().endswith(b"ab\x01")
    assert RtpPacket.parse(packet.serialize()) == packet


def test_padding_may_consume_whole_payload() -> None:
    data = bytes.fromhex("a000 0001 00000002 00000003 00000004")
    packet = RtpPacket.parse(data)
    assert packet.payload == b""
    assert packet.padding == 4


def test_marker_bit_is_separate_from_payload_type() -> None:
    packet = RtpPacket(payload_type=101, sequence_number=1, timestamp=2, ssrc=3, marker=True)
    data = packet.serialize()
    assert data[1] == 0x80 | 101
    parsed = RtpPacket.parse(data)
    assert parsed.marker is True
    assert parsed.payload_type == 101


def test_parse_accepts_bytearray_and_memoryview_and_copies() -> None:
    buffer = bytearray(PCMU)
    from_bytearray = RtpPacket.parse(buffer)
    from_view = RtpPacket.parse(memoryview(buffer))
    buffer[12:] = b"\x00" * 160  # the receive buffer gets reused
    assert from_bytearray.payload == b"\xff" * 160
    assert from_view.payload == b"\xff" * 160
    assert type(from_view.payload) is bytes


def test_packets_are_immutable_and_replace_works() -> None:
    packet = RtpPacket.parse(PCMU)
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.sequence_number = 1  # type: ignore[misc]
    following = dataclasses.replace(packet, sequence_number=0x1235, timestamp=0xDEADBEEF + 160, marker=False)
    assert RtpPacket.parse(following.serialize()) == following


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than"),
        (PCMU_HEADER[:11], "shorter than"),
        (bytes([0x00]) + PCMU[1:], "version 0"),
        (bytes([0x40]) + PCMU[1:], "version 1"),
        (bytes([0xC0]) + PCMU[1:], "version 3"),
        (bytes([0x82]) + PCMU_HEADER[1:] + b"\x00\x00\x00\x01", "CSRC"),  # CC=2, one CSRC present
        (bytes([0x8F]) + PCMU_HEADER[1:], "CSRC"),  # CC=15, none present
        (bytes([0x90]) + PCMU_HEADER[1:] + b"\xbe\xde", "extension header"),
        (bytes([0x90]) + PCMU_HEADER[1:] + b"\xbe\xde\x00\x02" + b"\x00" * 7, "overruns"),
        (bytes([0xA0]) + PCMU_HEADER[1:], "padding"),  # P set, nothing after header
        (bytes([0xA0]) + PCMU_HEADER[1:] + b"abc\x00", "padding count 0"),
        (bytes([0xA0]) + PCMU_HEADER[1:] + b"abc\x05", "padding count 5"),
        (bytes([0xB0]) + PCMU_HEADER[1:] + b"\x00\x01\x00\x00" + b"\x09", "padding count 9"),
    ],
)
def test_malformed_packets_raise(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        RtpPacket.parse(data)


def test_rtp_parse_error_is_a_value_error() -> None:
    assert issubclass(RtpParseError, ValueError)


@pytest.mark.parametrize(
    "changes",
    [
        {"payload_type": 128},
        {"payload_type": -1},
        {"sequence_number": 65536},
        {"sequence_number": -1},
        {"timestamp": 1 << 32},
        {"ssrc": -1},
        {"csrc": tuple(range(16))},
        {"csrc": (1 << 32,)},
        {"padding": 256},
        {"padding": -1},
        {"extension": RtpHeaderExtension(0x10000)},
        {"extension": RtpHeaderExtension(1, b"abc")},
    ],
)
def test_serialize_rejects_out_of_range_fields(changes: dict[str, object]) -> None:
    packet = dataclasses.replace(RtpPacket.parse(PCMU), **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        packet.serialize()


@pytest.mark.parametrize(
    ("second_byte", "expected"),
    [
        (200, True),  # SR
        (201, True),  # RR
        (202, True),  # SDES
        (203, True),  # BYE
        (204, True),  # APP
        (205, True),  # RTPFB
        (206, True),  # PSFB
        (192, True),  # low edge of the RFC 5761 range (PT 64 with M set)
        (223, True),  # high edge (PT 95 with M set)
        (64, True),  # PT 64, M clear: reserved for RTCP by RFC 5761
        (0, False),  # PCMU
        (0x80, False),  # PCMU with marker
        (8, False),  # PCMA
        (96, False),  # first dynamic PT
        (101, False),  # telephone-event
        (0x80 | 101, False),  # telephone-event with marker (229)
        (63, False),
        (127, False),
    ],
)
def test_is_rtcp_packet(second_byte: int, expected: bool) -> None:
    assert is_rtcp_packet(bytes([0x80, second_byte, 0, 1])) is expected


def test_is_rtcp_packet_short_data() -> None:
    assert is_rtcp_packet(b"") is False
    assert is_rtcp_packet(b"\x80") is False
    assert is_rtcp_packet(memoryview(b"\x81\xc8")) is True


def test_rtcp_sender_report_is_not_mistaken_for_rtp_by_demux() -> None:
    sender_report = bytes.fromhex("80c8 0006 01020304") + bytes(20)
    assert is_rtcp_packet(sender_report)
    assert not is_rtcp_packet(PCMU)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_rtp_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    # Whatever parses re-encodes to something that parses the same (padding filler is zeroed).
    assert RtpPacket.parse(packet.serialize()) == packet
    if not data[0] & 0x20:
        assert packet.serialize() == data


@given(st.binary(min_size=12, max_size=200))
def test_random_bytes_with_version_two_raise_only_rtp_parse_error(data: bytes) -> None:
    # Force V=2 so the fuzzer gets past the version check into CSRC/extension/padding parsing.
    data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert RtpPacket.parse(packet.serialize()) == packet


_u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(min_value=0, max_value=127),
    sequence_number=st.integers(min_value=0, max_value=0xFFFF),
    timestamp=_u32,
    ssrc=_u32,
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(_u32, max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpHeaderExtension,
        profile=st.integers(min_value=0, max_value=0xFFFF),
        data=st.integers(min_value=0, max_value=8).flatmap(
            lambda n: st.binary(min_size=4 * n, max_size=4 * n)
        ),
    ),
    padding=st.integers(min_value=0, max_value=255),
)


@given(_packets)
def test_valid_packets_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet
