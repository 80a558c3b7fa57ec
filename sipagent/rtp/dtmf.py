"""RFC 4733 telephone-events (DTMF) in both directions, and RFC 3389 comfort noise.

Sans-IO: the receiver takes packets and ``now``; the sender only builds payloads, which the
pacer (:meth:`sipagent.rtp.pacer.Pacer.enqueue_event`) sends in place of audio. Payload (one
event, 4 octets)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Rules (RFC 4733 §2.5):

* One event = one RTP timestamp (the instant the event began); ``duration`` grows with every
  update, in RTP timestamp units. The first packet carries the marker bit.
* The final packet has the E bit and is sent three times, one per update interval (§2.5.1.4);
  every copy is a separate RTP packet with its own sequence number (RFC 3550 §5.1 increments
  the sequence number per packet sent, which is what lets the receiver count loss). Some
  senders (sipp's RFC 2833 captures) repeat the sequence number instead; the receiver does not
  care either way because it keys events on (SSRC, timestamp, event code).
* Receiver: report a digit once, when the first E packet arrives, whatever was lost before it.
  If every E packet is lost, report it when a later event starts or when no update came for
  ``timeout`` seconds (:meth:`DtmfReceiver.tick`), with the last duration seen. A long event
  split into segments (new timestamp, no marker, contiguous with the last) is joined back.
* Events 16 and above (flash hook, tones, modem/fax events of RFC 4734) are tracked so they end
  the previous digit, but produce no :class:`DtmfReceived`: nothing above this layer uses them.
  Only the first event of a packet carrying several is read: the RTP timestamp is its start.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from sipagent.rtp.events import DTMF_DIGITS, DtmfReceived
from sipagent.rtp.frames import SAMPLES_PER_FRAME, Pcm
from sipagent.rtp.packet import RtpPacket

__all__ = [
    "CN_PAYLOAD_TYPE",
    "DEFAULT_TIMEOUT",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
    "build_cn",
    "comfort_noise_frame",
    "packets_for",
    "parse_cn",
]

#: The static RTP payload type of RFC 3389 comfort noise at 8 kHz.
CN_PAYLOAD_TYPE = 13
#: Seconds without an update after which an unfinished event is reported anyway.
DEFAULT_TIMEOUT = 0.2
#: Largest value of the 16-bit duration field.
MAX_DURATION = 0xFFFF

_EVENT = struct.Struct("!BBH")  # event, E/R/volume, duration
_U32 = 0xFFFFFFFF
_EVENT_CODES = {digit: code for code, digit in enumerate(DTMF_DIGITS)}
# Completed events remembered to drop late retransmissions; a handful covers any reordering.
_FINISHED_MEMORY = 16


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event report. ``volume`` is the power level in −dBm0 (0-63)."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent | None:
        """The first event in ``payload``, or None if it is shorter than 4 octets."""
        if len(payload) < 4:
            return None
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        """The 4-octet payload; raise :class:`ValueError` for an out-of-range field."""
        if not 0 <= self.event <= 255:
            raise ValueError(f"event code {self.event} is not 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} is not 0-63 (−dBm0)")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"duration {self.duration} does not fit 16 bits")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


def _ts_before(timestamp: int, reference: int) -> bool:
    """Whether ``timestamp`` precedes ``reference`` in 32-bit serial arithmetic."""
    return timestamp != reference and ((reference - timestamp) & _U32) < 0x80000000


class _Event:
    """The event being received (mutable, one per receiver)."""

    __slots__ = ("base", "duration", "event", "last_seen", "ssrc", "start", "timestamp")

    def __init__(self, ssrc: int, timestamp: int, event: int, start: float) -> None:
        self.ssrc = ssrc
        self.timestamp = timestamp
        self.event = event
        self.duration = 0  # of the current segment, timestamp units
        self.base = 0  # duration of earlier segments of a long event
        self.start = start
        self.last_seen = start


class DtmfReceiver:
    """Turns telephone-event packets into :class:`DtmfReceived`, one per key press.

    ``clock_rate`` is the telephone-event rate from the SDP (8000 for narrowband calls). A
    digit's ``start`` is when the first packet we saw of it arrived (later than the key press if
    the first packets were lost). Call :meth:`tick` at :meth:`get_timer` for the timeout path.
    """

    def __init__(self, payload_type: int, clock_rate: int = 8000, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: _Event | None = None
        self._finished: deque[tuple[int, int, int]] = deque(maxlen=_FINISHED_MEMORY)

    def receive(self, packet: RtpPacket, now: float) -> list[DtmfReceived]:
        """Take one RTP packet; returns the digits it completes (usually none, at most two).

        Packets of another payload type and payloads too short to hold an event are ignored.
        """
        payload = packet.payload
        if packet.payload_type != self.payload_type or len(payload) < 4:
            return []
        event, flags, duration = _EVENT.unpack_from(payload)
        ssrc = packet.ssrc
        timestamp = packet.timestamp
        key = (ssrc, timestamp, event)
        if key in self._finished:
            return []  # a retransmitted end packet, or a straggler of a reported event
        out: list[DtmfReceived] = []
        current = self._current
        if current is not None and (current.ssrc, current.timestamp, current.event) != key:
            if current.ssrc == ssrc and _ts_before(timestamp, current.timestamp):
                return []  # reordered packet of an earlier event: never split the current one
            if (
                not packet.marker
                and current.ssrc == ssrc
                and current.event == event
                and timestamp == (current.timestamp + current.duration) & _U32
            ):
                # The next segment of a long event (RFC 4733 §2.5.1): the same key press goes on.
                self._finished.append((ssrc, current.timestamp, event))
                current.base += current.duration
                current.timestamp = timestamp
                current.duration = 0
            else:
                out.extend(self._finish(current))  # its end packets were all lost
                current = None
        if current is None:
            current = self._current = _Event(ssrc, timestamp, event, now)
        if duration > current.duration:  # a reordered update must not shorten the event
            current.duration = duration
        current.last_seen = now
        if flags & 0x80:
            out.extend(self._finish(current))
        return out

    def tick(self, now: float) -> list[DtmfReceived]:
        """Report an event whose end packets never came, ``timeout`` after its last update."""
        current = self._current
        if current is not None and now - current.last_seen > self.timeout:
            return self._finish(current)
        return []

    def get_timer(self) -> float | None:
        """When :meth:`tick` may next have something to report (None: nothing pending)."""
        current = self._current
        return None if current is None else current.last_seen + self.timeout

    def _finish(self, current: _Event) -> list[DtmfReceived]:
        self._current = None
        self._finished.append((current.ssrc, current.timestamp, current.event))
        if current.event >= len(DTMF_DIGITS):
            return []
        duration_ms = (current.base + current.duration) * 1000 // self.clock_rate
        return [DtmfReceived(DTMF_DIGITS[current.event], duration_ms, current.start)]


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One telephone-event packet to send in one tick, before sequence number and SSRC."""

    payload: bytes
    timestamp: int
    marker: bool
    end: bool
    #: The second or third copy of the final packet (RFC 4733 §2.5.1.4).
    retransmission: bool = False

    def to_rtp(self, payload_type: int, sequence_number: int, ssrc: int) -> RtpPacket:
        """The RTP packet, once the pacer has given it the next sequence number."""
        return RtpPacket(payload_type, sequence_number, self.timestamp, ssrc, self.payload, self.marker)


def packets_for(
    digit: str,
    *,
    start_timestamp: int,
    duration_ms: int = 100,
    volume: int = 10,
    ptime_ms: int = 20,
    clock_rate: int = 8000,
) -> list[DtmfPacket]:
    """The packets of one key press, one per ``ptime_ms`` tick, all at ``start_timestamp``.

    ``ceil(duration / ptime)`` updates whose duration grows by one tick (the last one capped at
    the full duration and carrying the E bit), then two more copies of that final packet: for
    100 ms at 20 ms, durations 160, 320, 480, 640, 800, 800, 800. Audio is held back for the
    ``ceil(duration / ptime)`` ticks of the event; the two repeats may go out alongside the
    audio that follows. Raise :class:`ValueError` for a non-DTMF character or an out-of-range
    duration or volume (no segmentation: at most 65535 timestamp units, 8.19 s at 8 kHz).
    """
    code = _EVENT_CODES.get(digit)
    if code is None or len(digit) != 1:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    total = duration_ms * clock_rate // 1000
    step = ptime_ms * clock_rate // 1000
    if step <= 0 or not 0 < total <= MAX_DURATION:
        raise ValueError(f"DTMF duration {duration_ms} ms / ptime {ptime_ms} ms out of range")
    count = math.ceil(total / step)
    start_timestamp &= _U32
    packets = []
    for index in range(count):
        last = index == count - 1
        payload = TelephoneEvent(code, last, volume, min(total, (index + 1) * step)).serialize()
        packets.append(DtmfPacket(payload, start_timestamp, index == 0, last))
    final = packets[-1]
    # Retransmissions are copies of the final packet (a one-packet event keeps its marker).
    repeat = DtmfPacket(final.payload, start_timestamp, final.marker, True, retransmission=True)
    packets.extend((repeat, repeat))
    return packets


class DtmfSender:
    """Builds our telephone-events for one negotiated payload type, RTP clock and ptime.

    Two shapes of the same packets: :meth:`payloads_for` is what
    :meth:`sipagent.rtp.pacer.Pacer.enqueue_event` takes (the pacer owns sequence numbers,
    timestamps, the marker bit and when audio resumes); :meth:`packets_for` adds timestamp and
    marker for a caller that paces by itself. Either way every packet, the two repeats of the
    final one included, is a separate RTP packet sent on its own tick with the next sequence
    number, all stamped with the timestamp of the tick the event started on; the media clock
    keeps running meanwhile, so the first audio packet after the event is stamped at least
    ``start + duration``.
    """

    def __init__(self, payload_type: int, clock_rate: int = 8000, ptime_ms: int = 20) -> None:
        if not 0 <= payload_type <= 0x7F:
            raise ValueError(f"RTP payload type {payload_type} is not 0-127")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ptime_ms = ptime_ms

    def packets_for(
        self, digit: str, *, start_timestamp: int, duration_ms: int = 100, volume: int = 10
    ) -> list[DtmfPacket]:
        """The packets of one key press (see :func:`packets_for`)."""
        return packets_for(
            digit,
            start_timestamp=start_timestamp,
            duration_ms=duration_ms,
            volume=volume,
            ptime_ms=self.ptime_ms,
            clock_rate=self.clock_rate,
        )

    def payloads_for(
        self, digit: str, *, duration_ms: int = 100, volume: int = 10
    ) -> list[tuple[bytes, bool]]:
        """``(payload, end flag)`` per tick, for ``Pacer.enqueue_event(..., self.payload_type)``."""
        packets = self.packets_for(digit, start_timestamp=0, duration_ms=duration_ms, volume=volume)
        return [(packet.payload, packet.end) for packet in packets]


# --------------------------------------------------------------------------------------------
# RFC 3389 comfort noise
# --------------------------------------------------------------------------------------------

# 0 dBov: RFC 3389 §3 takes the overload point of the codec; for 16-bit linear PCM that is a
# full-scale square wave, whose RMS is full scale.
_FULL_SCALE = 32767.0


def parse_cn(payload: bytes) -> int:
    """The noise level of a CN payload in dBov (0 to −127); spectral coefficients are ignored.

    Raise :class:`ValueError` for an empty payload. The MSB of the level octet is reserved.
    """
    if not payload:
        raise ValueError("empty comfort-noise payload")
    return -(payload[0] & 0x7F)


def build_cn(level_dbov: int) -> bytes:
    """A CN payload with only the noise level (no spectral information)."""
    if not -127 <= level_dbov <= 0:
        raise ValueError(f"noise level {level_dbov} dBov is not 0 to -127")
    return bytes((-level_dbov,))


def comfort_noise_frame(level_dbov: int, rng: np.random.Generator) -> Pcm:
    """One 20 ms frame of white Gaussian noise whose RMS is ``level_dbov`` below full scale."""
    if not -127 <= level_dbov <= 0:
        raise ValueError(f"noise level {level_dbov} dBov is not 0 to -127")
    rms = _FULL_SCALE * 10.0 ** (level_dbov / 20.0)
    noise = rng.standard_normal(SAMPLES_PER_FRAME) * rms
    frame: Pcm = np.clip(np.rint(noise), -32768, 32767).astype(np.int16)
    return frame
