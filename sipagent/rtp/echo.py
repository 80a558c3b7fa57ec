"""The echo service's media logic, sans-IO: caller audio in, the same audio back out.

The returned stream is ours, not a reflection: our own SSRC, our own sequence numbers from a
random start, and timestamps that keep the caller's spacing (so silence suppression and DTMF
durations survive) on our own random base (RFC 3550 §5.1). Only the negotiated codec, the
negotiated telephone-event type and comfort noise (13) are echoed; anything else is counted
and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from .packet import RtpPacket, RtpParseError

COMFORT_NOISE_PT = 13


@dataclass
class EchoStats:
    """Packet counters for one call."""

    received: int = 0
    sent: int = 0
    dropped: int = 0
    malformed: int = 0


class EchoStream:
    """Re-stamps received RTP as our own outbound stream."""

    def __init__(self, *, ssrc: int, first_sequence: int, first_timestamp: int) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self._sequence = first_sequence & 0xFFFF
        self._timestamp_base = first_timestamp & 0xFFFFFFFF
        self._remote_base: int | None = None
        self._remote_ssrc: int | None = None
        self.payload_types: frozenset[int] = frozenset()
        self.sending = True
        self.stats = EchoStats()

    def configure(self, payload_types: frozenset[int], sending: bool) -> None:
        """Apply negotiated media: which payload types to echo, and whether we may send (hold)."""
        self.payload_types = payload_types | {COMFORT_NOISE_PT}
        self.sending = sending

    def receive(self, data: bytes) -> bytes | None:
        """One inbound datagram; returns the packet to send back, if any."""
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self.stats.malformed += 1
            return None
        self.stats.received += 1
        if packet.payload_type not in self.payload_types or not self.sending:
            self.stats.dropped += 1
            return None
        if packet.ssrc != self._remote_ssrc:
            # New source (first packet, or the far end changed SSRC): keep our timeline
            # continuous by rebasing, and mark the discontinuity for the receiver's jitter buffer.
            if self._remote_ssrc is not None:
                self._timestamp_base = (self._last_timestamp + 160) & 0xFFFFFFFF
            self._remote_ssrc = packet.ssrc
            self._remote_base = packet.timestamp
            marker = True
        else:
            marker = packet.marker
        assert self._remote_base is not None
        timestamp = (self._timestamp_base + packet.timestamp - self._remote_base) & 0xFFFFFFFF
        self._last_timestamp = timestamp
        out = RtpPacket(
            payload_type=packet.payload_type,
            sequence_number=self._sequence,
            timestamp=timestamp,
            ssrc=self.ssrc,
            payload=packet.payload,
            marker=marker,
        )
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.stats.sent += 1
        return out.serialize()

    _last_timestamp = 0
