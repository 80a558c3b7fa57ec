"""RTCP (RFC 3550 §6): compound packet codec, reception/sending statistics and the report timer.

Sans-IO: nothing here opens a socket or reads a clock. Two clocks are passed in, kept apart:
``now``/``arrival`` is the caller's monotonic clock in seconds (jitter, the report schedule and
DLSR are differences on it); ``ntp_now`` is wall-clock time in **seconds since 1900-01-01** (NTP
era 0; from Unix time, ``ntp_from_unix(time.time())``), used only for our SR's NTP timestamp
and the RTT.

* Compound packets we build are SR or RR (an empty RR if nothing to report), then SDES CNAME
  (§6.1). SR if we sent RTP since the last report or the one before (§6.4, §6.3.8), else RR.
* Parsing is lenient where strict A.2 checks buy nothing: the first packet need not be SR/RR
  (RFC 5506), padding is accepted on any packet, a profile extension after the report blocks is
  ignored, unknown types (APP, RTPFB, PSFB, XR...) are skipped. Broken framing (version, a
  length past the datagram, trailing bytes, truncated blocks) raises :class:`RtcpParseError`.
* Reception statistics follow A.1 (probation, wrap cycles), A.3 (loss) and A.8 (jitter), except
  that a packet repeating the previous RTP timestamp (RFC 4733 event updates and end repeats)
  gives no jitter sample, or a 100 ms digit would read as tens of ms of jitter.
* Timing (§6.3 for two parties): at telephone bitrates the computed interval is below the 5 s
  minimum, so it is 5 s × U[0.5, 1.5], the first from half the minimum (§6.3.5). No timer
  reconsideration, hence no e−3/2 compensation.

Layouts, in 32-bit words: header ``V=2|P|RC/SC (5)|PT (8)|length in words − 1 (16)``; SR (200) =
header · SSRC · NTP (64) · RTP ts · packets · octets · blocks; RR (201) = header · SSRC · blocks;
block = SSRC · fraction lost (8)|cumulative lost (24, signed) · ext. highest seq · jitter · LSR ·
DLSR; SDES (202) = header · chunks (SSRC · items (type, length, text) · END · pad to 32 bits);
BYE (203) = header · SSRCs · [length, reason, pad].
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipagent.errors import SipAgentError
from sipagent.rtp.packet import RtpPacket

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
SDES_CNAME = 1

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix)
MIN_INTERVAL = 5.0  # RFC 3550 §6.2 minimum report interval, seconds
MAX_DROPOUT = 3000  # RFC 3550 A.1 constants
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2

_SEQ_MOD = 1 << 16
_U32 = 0xFFFFFFFF
_LOST_MIN = -(1 << 23)
_LOST_MAX = (1 << 23) - 1
_MAX_COUNT = 31  # the 5-bit RC/SC field

_HEADER = struct.Struct("!BBH")  # V/P/RC, PT, length in words minus one
_WORD = struct.Struct("!I")
_SENDER = struct.Struct("!IQIII")  # SSRC, NTP timestamp, RTP timestamp, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|lost, highest seq, jitter, LSR, DLSR

_Buffer = bytes | bytearray | memoryview


class RtcpParseError(SipAgentError, ValueError):
    """The datagram is not a well-formed RTCP compound packet."""


def ntp_from_unix(unix_time: float) -> float:
    """Seconds since the Unix epoch → seconds since the NTP epoch (1900)."""
    return unix_time + NTP_UNIX_OFFSET


def ntp_timestamp(ntp_seconds: float) -> int:
    """Seconds since 1900 → the 64-bit NTP timestamp (32.32 fixed point), modulo 2^64."""
    return int(ntp_seconds * 4294967296.0) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp64: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (16.16 seconds), the LSR format."""
    return (ntp64 >> 16) & _U32


def _signed32(value: int) -> int:
    return ((value + 0x80000000) & _U32) - 0x80000000


def _pack(layout: struct.Struct, what: str, *values: int) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error as exc:  # struct names the format, not the field
        raise ValueError(f"{what} field out of range: {exc}") from None


def _check_count(count: int, what: str) -> None:
    if count > _MAX_COUNT:
        raise ValueError(f"at most {_MAX_COUNT} {what} fit in one RTCP packet, got {count}")


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (§6.4.1). ``fraction_lost``: lost/expected × 256 since the last
    report; ``cumulative_lost``: signed 24-bit; ``jitter``: RTP timestamp units; ``lsr``: middle
    32 bits of the NTP time of the last SR from ``ssrc``; ``dlsr``: delay since, 1/65536 s."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def serialize(self) -> bytes:
        """The 24-byte block; raise :class:`ValueError` if a field is out of range."""
        if not (0 <= self.fraction_lost <= 0xFF and _LOST_MIN <= self.cumulative_lost <= _LOST_MAX):
            got = f"fraction lost {self.fraction_lost}, cumulative lost {self.cumulative_lost}"
            raise ValueError(f"{got}: they must fit 8 unsigned and 24 signed bits")
        lost = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        fields = (self.ssrc, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr)
        return _pack(_BLOCK, "report block", *fields)


def _blocks(data: _Buffer, offset: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for index in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset + 24 * index)
        lost = ((lost_word & 0xFFFFFF) ^ 0x800000) - 0x800000  # sign-extend 24 bits
        blocks.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _serialize_blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    _check_count(len(reports), "report blocks")
    return b"".join(block.serialize() for block in reports)


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """The sender-info section of an SR: a wall clock ↔ RTP clock pair plus what was sent."""

    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (PT 200): sender info from ``ssrc`` plus its reception reports."""

    ssrc: int
    sender_info: SenderInfo
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        """Encode; raise :class:`ValueError` if a field is out of range."""
        info = self.sender_info
        fields = (self.ssrc, info.ntp_timestamp, info.rtp_timestamp, info.packet_count, info.octet_count)
        body = _pack(_SENDER, "sender report", *fields) + _serialize_blocks(self.reports)
        return _header(RTCP_SR, len(self.reports), body)

    @classmethod
    def parse(cls, body: _Buffer, count: int) -> SenderReport:
        """Decode the body after the common header; ``count`` is the RC field."""
        if len(body) < _SENDER.size + 24 * count:
            raise RtcpParseError(f"SR with {count} report blocks truncated at {len(body)} bytes")
        ssrc, ntp, rtp, packets, octets = _SENDER.unpack_from(body)
        return cls(ssrc, SenderInfo(ntp, rtp, packets, octets), _blocks(body, _SENDER.size, count))


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (PT 201): reception reports from ``ssrc``, a participant that has not sent lately."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        """Encode; raise :class:`ValueError` if a field is out of range."""
        body = _pack(_WORD, "receiver report SSRC", self.ssrc) + _serialize_blocks(self.reports)
        return _header(RTCP_RR, len(self.reports), body)

    @classmethod
    def parse(cls, body: _Buffer, count: int) -> ReceiverReport:
        """Decode the body after the common header; ``count`` is the RC field."""
        if len(body) < 4 + 24 * count:
            raise RtcpParseError(f"RR with {count} report blocks truncated at {len(body)} bytes")
        return cls(_WORD.unpack_from(body)[0], _blocks(body, 4, count))


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: an SSRC and its ``(item type, value)`` items (1 = CNAME, 2 = NAME...)."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        """The CNAME item as text, if present (undecodable bytes replaced)."""
        return next(
            (value.decode("utf-8", "replace") for kind, value in self.items if kind == SDES_CNAME), None
        )

    def serialize(self) -> bytes:
        """The chunk, END-terminated and padded to 32 bits."""
        parts = [_pack(_WORD, "SDES SSRC", self.ssrc)]
        for item_type, value in self.items:
            if not 1 <= item_type <= 255 or len(value) > 255:
                raise ValueError(f"SDES item type {item_type} with {len(value)} bytes (max 255)")
            parts.append(bytes((item_type, len(value))) + value)
        data = b"".join(parts)
        return data + bytes(4 - len(data) % 4)  # at least one null octet: END, then padding


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (PT 202)."""

    chunks: tuple[SdesChunk, ...] = ()

    def serialize(self) -> bytes:
        """Encode; raise :class:`ValueError` if an item does not fit."""
        _check_count(len(self.chunks), "SDES chunks")
        return _header(RTCP_SDES, len(self.chunks), b"".join(chunk.serialize() for chunk in self.chunks))

    @classmethod
    def parse(cls, body: _Buffer, count: int) -> SourceDescription:
        """Decode the body after the common header; ``count`` is the SC field."""
        size = len(body)
        pos = 0
        chunks = []
        for _ in range(count):
            if pos + 4 > size:
                raise RtcpParseError("SDES chunk truncated before its SSRC")
            ssrc = _WORD.unpack_from(body, pos)[0]
            pos += 4
            items = []
            while True:
                if pos >= size:
                    raise RtcpParseError("SDES chunk without END item")
                if body[pos] == 0:
                    pos = min(size, (pos + 4) & ~3)  # END, then nulls to the next 32-bit boundary
                    break
                end = pos + 2 + (body[pos + 1] if pos + 1 < size else size)
                if end > size:
                    raise RtcpParseError("SDES item runs past the packet")
                items.append((body[pos], bytes(body[pos + 2 : end])))
                pos = end
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))


@dataclass(frozen=True, slots=True)
class Goodbye:
    """BYE (PT 203): ``sources`` are leaving, with an optional reason."""

    sources: tuple[int, ...] = ()
    reason: str = ""

    def serialize(self) -> bytes:
        """Encode; raise :class:`ValueError` if too many sources or the reason is too long."""
        _check_count(len(self.sources), "BYE sources")
        body = b"".join(_pack(_WORD, "BYE SSRC", source) for source in self.sources)
        if self.reason:
            text = self.reason.encode()
            if len(text) > 255:
                raise ValueError(f"BYE reason of {len(text)} bytes exceeds 255")
            tail = bytes((len(text),)) + text
            body += tail + bytes(-len(tail) % 4)
        return _header(RTCP_BYE, len(self.sources), body)

    @classmethod
    def parse(cls, body: _Buffer, count: int) -> Goodbye:
        """Decode the body after the common header; ``count`` is the SC field."""
        size = len(body)
        if size < 4 * count:
            raise RtcpParseError(f"BYE with {count} sources truncated at {size} bytes")
        sources = tuple(_WORD.unpack_from(body, 4 * index)[0] for index in range(count))
        pos = 4 * count
        if pos == size:
            return cls(sources)
        end = pos + 1 + body[pos]
        if end > size:
            raise RtcpParseError("BYE reason runs past the packet")
        return cls(sources, bytes(body[pos + 1 : end]).decode("utf-8", "replace"))


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye
"""The RTCP packets this module understands."""


_PARSERS: dict[int, Callable[[_Buffer, int], RtcpPacket]] = {
    RTCP_SR: SenderReport.parse,
    RTCP_RR: ReceiverReport.parse,
    RTCP_SDES: SourceDescription.parse,
    RTCP_BYE: Goodbye.parse,
}


def parse_compound(data: _Buffer) -> list[RtcpPacket]:
    """Decode a compound RTCP datagram, skipping unknown types; :class:`RtcpParseError` if the
    framing is broken anywhere (A.2 validates the datagram as a whole)."""
    size = len(data)
    if size < 4:
        raise RtcpParseError(f"RTCP datagram of {size} bytes is shorter than one header")
    view = memoryview(data)
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < size:
        if pos + 4 > size:
            raise RtcpParseError(f"{size - pos} trailing bytes after the last RTCP packet")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpParseError(f"RTCP version {first >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > size:
            raise RtcpParseError(f"RTCP packet type {packet_type} of {4 + 4 * words} bytes overruns")
        body_end = end
        if first & 0x20:
            padding = data[end - 1] if words else 0
            if padding == 0 or padding > 4 * words:
                raise RtcpParseError(f"bad RTCP padding count {padding}")
            body_end -= padding
        parser = _PARSERS.get(packet_type)
        if parser is not None:
            packets.append(parser(view[pos + 4 : body_end], first & 0x1F))
        pos = end
    return packets


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram (the caller puts SR/RR first)."""
    return b"".join(packet.serialize() for packet in packets)


class ReceptionStats:
    """What we know about one remote source (A.1, A.3, A.8): feed it every RTP packet of that
    SSRC; :meth:`report_block` closes the "since last report" interval. A new source is on
    probation until ``probation`` consecutive packets arrive (those do not count)."""

    def __init__(self, ssrc: int, probation: int = MIN_SEQUENTIAL) -> None:
        self.ssrc = ssrc
        self.received = 0  # packets counted since the sequence base, duplicates included
        self.clock_rate = 8000  # of the last update, for jitter_ms
        self.jitter = 0.0  # interarrival jitter in RTP timestamp units (A.8)
        # LSR of the last SR from this source (middle 32 bits of its NTP timestamp, 0 = none)
        # and when it arrived (now clock): set by the owner when an SR comes in.
        self.last_sr, self.last_sr_arrival = 0, 0.0
        self._started, self._probation = False, probation
        self._base_seq = self._max_seq = self._cycles = 0
        self._bad_seq = _SEQ_MOD + 1
        self._received_prior = self._expected_prior = 0
        self._last_arrival: float | None = None  # and the RTP timestamp of that packet:
        self._last_timestamp = 0  # the transit reference of the jitter estimator

    def _init_seq(self, seq: int) -> None:
        self._base_seq = self._max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = self.received = self._received_prior = self._expected_prior = 0

    @property
    def valid(self) -> bool:
        """Whether the source has left probation."""
        return self._started and self._probation == 0

    def update(self, packet: RtpPacket, arrival: float, clock_rate: int = 8000) -> bool:
        """Account for a packet that arrived at ``arrival``; whether it counts (A.1 ``update_seq``)."""
        seq = packet.sequence_number
        self.clock_rate = clock_rate
        if not self._started:
            self._started = True
            self._init_seq(seq)
            if self._probation:
                self._max_seq = (seq - 1) & 0xFFFF
        if self._probation:
            if seq != (self._max_seq + 1) & 0xFFFF:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
                return False
            self._probation -= 1
            self._max_seq = seq
            if self._probation:
                return False
            self._init_seq(seq)  # probation passed: this packet is the base (counted below)
        udelta = (seq - self._max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:  # in order, with a permissible gap, wrapped
                self._cycles += _SEQ_MOD
            self._max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq != self._bad_seq:  # a big jump: believe it only if the next packet follows
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
            self._init_seq(seq)  # the sender restarted without telling us: re-sync
            self._last_arrival = None
        # else: a duplicate or reordered packet, counted without moving max_seq
        self.received += 1
        self._jitter_sample(packet.timestamp, arrival, clock_rate)
        return True

    def _jitter_sample(self, timestamp: int, arrival: float, clock_rate: int) -> None:
        last_arrival = self._last_arrival
        if last_arrival is not None:
            if timestamp == self._last_timestamp:
                return  # the same media instant (event update, duplicate): no transit sample
            delta = (arrival - last_arrival) * clock_rate - _signed32(timestamp - self._last_timestamp)
            self.jitter += (abs(delta) - self.jitter) / 16.0
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self.clock_rate

    @property
    def extended_highest_sequence(self) -> int:
        """Highest sequence number seen, extended with the wrap count (A.1 ``cycles``)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the sequence base (A.3)."""
        return self.extended_highest_sequence - self._base_seq + 1 if self.valid else 0

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received, clamped to the 24-bit signed field (A.3)."""
        return max(_LOST_MIN, min(_LOST_MAX, self.expected - self.received))

    @property
    def heard_since_report(self) -> bool:
        """Whether counted packets arrived since the last :meth:`report_block`."""
        return self.valid and self.received != self._received_prior

    def report_block(self, now: float) -> ReportBlock:
        """The report block for this source; starts a new interval for the fraction lost."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        self._expected_prior, self._received_prior = expected, self.received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = min(_U32, max(0, int((now - self.last_sr_arrival) * 65536.0))) if self.last_sr else 0
        highest, jitter = self.extended_highest_sequence & _U32, min(_U32, int(self.jitter))
        return ReportBlock(self.ssrc, fraction, self.cumulative_lost, highest, jitter, self.last_sr, dlsr)


class SendStats:
    """What we sent (``octet_count``: payload only) and where our RTP clock is. The SR's RTP
    timestamp denotes the instant of its NTP timestamp (§6.4.1), extrapolated from the last
    packet that advanced the media clock (telephone-event updates repeat theirs)."""

    __slots__ = ("_anchor_time", "_anchor_timestamp", "clock_rate", "octet_count", "packet_count")

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.packet_count = self.octet_count = 0
        self._anchor_timestamp: int | None = None
        self._anchor_time = 0.0

    def record(self, packet: RtpPacket, now: float) -> None:
        """Account for one RTP packet handed to the network at ``now``."""
        self.packet_count += 1
        self.octet_count += len(packet.payload)
        if packet.timestamp != self._anchor_timestamp:
            self._anchor_timestamp = packet.timestamp
            self._anchor_time = now

    def rtp_timestamp_at(self, now: float) -> int:
        """The RTP timestamp of instant ``now`` on our media clock (0 before any packet)."""
        if self._anchor_timestamp is None:
            return 0
        return (self._anchor_timestamp + round((now - self._anchor_time) * self.clock_rate)) & _U32

    def sender_info(self, now: float, ntp_now: float, rtp_timestamp: int | None = None) -> SenderInfo:
        """SR sender info for ``now`` = ``ntp_now``; ``rtp_timestamp`` overrides the extrapolation
        when the caller knows its timeline exactly (``Pacer.timestamp_at(now)``)."""
        if rtp_timestamp is None:
            rtp_timestamp = self.rtp_timestamp_at(now)
        packets, octets = self.packet_count & _U32, self.octet_count & _U32
        return SenderInfo(ntp_timestamp(ntp_now), rtp_timestamp & _U32, packets, octets)


@dataclass(frozen=True, slots=True)
class RemoteReport:
    """The peer's latest view of our stream, from a report block about our SSRC."""

    reporter_ssrc: int
    fraction_lost: float  # of our packets in the peer's last interval, 0.0-1.0
    cumulative_lost: int
    highest_sequence: int
    jitter: int  # of our stream at the peer, in our RTP timestamp units (and in ms below)
    jitter_ms: float
    rtt: float | None  # seconds, from LSR/DLSR (§6.4.1); None until the peer echoes an SR
    received_at: float


class RtcpScheduler:
    """RTCP for one two-party session. The owner feeds :meth:`on_rtp_received`,
    :meth:`on_rtp_sent` and :meth:`receive`, arms a timer for :attr:`next_time` and, when
    :meth:`due`, sends :meth:`build_report` (which schedules the next). ``rng`` randomises."""

    def __init__(
        self,
        ssrc: int,
        cname: str,
        *,
        rng: random.Random,
        now: float,
        interval: float = MIN_INTERVAL,
        clock_rate: int = 8000,
    ) -> None:
        self.ssrc = ssrc
        self.cname = cname
        self.interval = interval
        self.clock_rate = clock_rate
        self.send_stats = SendStats(clock_rate)
        self.sources: dict[int, ReceptionStats] = {}  # by remote SSRC
        self.remote_report: RemoteReport | None = None  # the peer's view of our stream
        self.remote_sender_info: SenderInfo | None = None  # from the peer's latest SR
        self._rng = rng
        self._sent_at_reports = (0, 0)  # our packet count at the last two reports (§6.3.8)
        self.next_time = now + interval / 2.0 * rng.uniform(0.5, 1.5)

    def due(self, now: float) -> bool:
        """Whether a report should be sent at ``now``."""
        return now >= self.next_time

    def _stats(self, ssrc: int) -> ReceptionStats:
        stats = self.sources.get(ssrc)
        if stats is None:
            stats = self.sources[ssrc] = ReceptionStats(ssrc)
        return stats

    def on_rtp_received(self, packet: RtpPacket, arrival: float) -> bool:
        """Account for a received RTP packet; returns whether its source statistics counted it."""
        return self._stats(packet.ssrc).update(packet, arrival, self.clock_rate)

    def on_rtp_sent(self, packet: RtpPacket, now: float) -> None:
        """Account for an RTP packet we sent."""
        self.send_stats.record(packet, now)

    def receive(self, data: _Buffer, now: float, ntp_now: float) -> list[RtcpPacket]:
        """Take in a compound datagram (:class:`RtcpParseError` if malformed): note SRs for
        LSR/DLSR and blocks about us, forget sources that said BYE; returns the packets."""
        packets = parse_compound(data)
        for packet in packets:
            if isinstance(packet, SenderReport | ReceiverReport):
                if isinstance(packet, SenderReport) and packet.ssrc != self.ssrc:
                    stats = self._stats(packet.ssrc)
                    stats.last_sr, stats.last_sr_arrival = ntp_middle(packet.sender_info.ntp_timestamp), now
                    self.remote_sender_info = packet.sender_info
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self.remote_report = self._remote_report(packet.ssrc, block, now, ntp_now)
            elif isinstance(packet, Goodbye):
                for source in packet.sources:
                    self.sources.pop(source, None)
        return packets

    def _remote_report(self, reporter: int, block: ReportBlock, now: float, ntp_now: float) -> RemoteReport:
        rtt: float | None = None
        if block.lsr:  # RTT = A − LSR − DLSR, all in 1/65536 s on our wall clock (§6.4.1)
            units = _signed32(ntp_middle(ntp_timestamp(ntp_now)) - block.lsr - block.dlsr)
            rtt = max(0, units) / 65536.0  # slightly negative from rounding: zero
        fraction, jitter_ms = block.fraction_lost / 256.0, block.jitter * 1000.0 / self.clock_rate
        lost, highest = block.cumulative_lost, block.highest_sequence
        return RemoteReport(reporter, fraction, lost, highest, block.jitter, jitter_ms, rtt, now)

    def _report_packets(self, now: float, ntp_now: float, rtp_timestamp: int | None) -> list[RtcpPacket]:
        heard = [stats for stats in self.sources.values() if stats.heard_since_report][:_MAX_COUNT]
        blocks = tuple(stats.report_block(now) for stats in heard)
        first: RtcpPacket = ReceiverReport(self.ssrc, blocks)
        if self.send_stats.packet_count != self._sent_at_reports[0]:  # we sent: SR (§6.3.8)
            first = SenderReport(self.ssrc, self.send_stats.sender_info(now, ntp_now, rtp_timestamp), blocks)
        self._sent_at_reports = (self._sent_at_reports[1], self.send_stats.packet_count)
        return [first, SourceDescription((SdesChunk(self.ssrc, ((SDES_CNAME, self.cname.encode()),)),))]

    def build_report(self, now: float, ntp_now: float, rtp_timestamp: int | None = None) -> bytes:
        """SR or RR, then SDES CNAME; schedules the next report. ``rtp_timestamp``: see
        :meth:`SendStats.sender_info`."""
        data = serialize_compound(self._report_packets(now, ntp_now, rtp_timestamp))
        self.next_time = now + self.interval * self._rng.uniform(0.5, 1.5)
        return data

    def build_bye(self, now: float, ntp_now: float, reason: str = "") -> bytes:
        """The last compound packet when we leave (§6.6): report, SDES CNAME, BYE."""
        return serialize_compound([*self._report_packets(now, ntp_now, None), Goodbye((self.ssrc,), reason)])
