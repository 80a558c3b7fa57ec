"""RTP fixed header codec (RFC 3550 §5.1) and the RTP/RTCP demux test (RFC 5761 §4).

Sans-IO and per packet, so kept lean: one precompiled :class:`struct.Struct` for the fixed
header, precompiled ones for each CSRC count, no validation on the parse path beyond what the
wire format demands. Values a caller builds are validated in :meth:`RtpPacket.serialize`,
where a bad one would otherwise reach the network.

Wire layout::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers             |  CC × 32 bits
    |  extension profile (16) |  extension length in words (16)     |  if X
    |                     extension data                            |
    |                     payload ... [padding ... count]           |  if P
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import SipAgentError

__all__ = ["RTP_VERSION", "RtpHeaderExtension", "RtpPacket", "RtpParseError", "is_rtcp_packet"]

#: The only RTP version in use (RFC 3550).
RTP_VERSION = 2

_FIXED = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_FIXED_SIZE = _FIXED.size  # 12
_EXT_HEADER = struct.Struct("!HH")  # profile, length in 32-bit words
# One Struct per possible CSRC count (CC is 4 bits), built once instead of per packet.
_CSRC = tuple(struct.Struct(f"!{count}I") for count in range(16))

_Buffer = bytes | bytearray | memoryview


class RtpParseError(SipAgentError, ValueError):
    """The datagram is not a well-formed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpHeaderExtension:
    """The RFC 3550 §5.3.1 header extension: a 16-bit profile and opaque data.

    ``data`` must be a multiple of 4 bytes long (the length field counts 32-bit words). RFC 8285
    one-/two-byte element parsing belongs to whoever negotiated the extension.
    """

    profile: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. Immutable; use :func:`dataclasses.replace` to derive the next one.

    ``padding`` is the number of padding bytes at the end, including the final count byte
    (0 = no padding, the P bit clear). ``payload`` excludes padding. The version is always
    :data:`RTP_VERSION`.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpHeaderExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: _Buffer) -> RtpPacket:
        """Decode one RTP packet; raise :class:`RtpParseError` if it is malformed.

        Accepts bytes, bytearray or memoryview; the payload is always copied out as bytes so
        the caller may reuse its receive buffer.
        """
        size = len(data)
        if size < _FIXED_SIZE:
            raise RtpParseError(f"RTP packet of {size} bytes is shorter than the 12-byte header")
        first, second, sequence_number, timestamp, ssrc = _FIXED.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version {first >> 6}, expected {RTP_VERSION}")
        offset = _FIXED_SIZE
        csrc_count = first & 0x0F
        csrc: tuple[int, ...] = ()
        if csrc_count:
            end = offset + 4 * csrc_count
            if end > size:
                raise RtpParseError(f"RTP packet truncated inside its {csrc_count} CSRC identifiers")
            csrc = _CSRC[csrc_count].unpack_from(data, offset)
            offset = end
        extension: RtpHeaderExtension | None = None
        if first & 0x10:
            if offset + 4 > size:
                raise RtpParseError("RTP packet truncated inside its header extension header")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > size:
                raise RtpParseError(f"RTP header extension of {words} words overruns the packet")
            extension = RtpHeaderExtension(profile, bytes(data[offset:end]))
            offset = end
        payload_end = size
        padding = 0
        if first & 0x20:
            # The last octet counts the padding octets, itself included (RFC 3550 §5.1).
            padding = data[size - 1] if size > offset else 0
            if padding == 0 or padding > size - offset:
                raise RtpParseError(f"bad RTP padding count {padding}")
            payload_end = size - padding
        return cls(
            second & 0x7F,
            sequence_number,
            timestamp,
            ssrc,
            bytes(data[offset:payload_end]),
            bool(second & 0x80),
            csrc,
            extension,
            padding,
        )

    def serialize(self) -> bytes:
        """Encode the packet; raise :class:`ValueError` if a field is out of range."""
        csrc_count = len(self.csrc)
        if csrc_count > 15:
            raise ValueError(f"at most 15 CSRC identifiers fit in an RTP header, got {csrc_count}")
        if not 0 <= self.payload_type <= 0x7F:
            raise ValueError(f"RTP payload type {self.payload_type} is not 0-127")
        if not 0 <= self.padding <= 0xFF:
            raise ValueError(f"RTP padding of {self.padding} bytes is not 0-255")
        first = (RTP_VERSION << 6) | csrc_count
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        try:
            parts = [_FIXED.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
            if csrc_count:
                parts.append(_CSRC[csrc_count].pack(*self.csrc))
            if self.extension is not None:
                words, remainder = divmod(len(self.extension.data), 4)
                if remainder:
                    raise ValueError("RTP header extension data must be a multiple of 4 bytes")
                parts.append(_EXT_HEADER.pack(self.extension.profile, words))
                parts.append(self.extension.data)
        except struct.error as exc:
            # struct's message names the format, not the field; say which packet field it was.
            raise ValueError(f"RTP header field out of range: {exc}") from None
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def is_rtcp_packet(data: _Buffer) -> bool:
    """Whether a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4).

    RTCP packet types 192-223 occupy the RTP marker+payload-type octet, and RFC 5761 keeps RTP
    payload types 64-95 free so the two cannot collide. STUN and DTLS must be told apart
    before this, by the first octet (RFC 7983).
    """
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95
