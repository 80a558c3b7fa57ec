"""The outbound RTP clock, sans-IO: our SSRC, sequence numbers and timestamps, one tick per 20 ms.

The pacer owns everything we send on a call's RTP stream. The net layer arms a timer for
:meth:`Pacer.get_timer`, calls :meth:`Pacer.handle_timer` with the loop's monotonic ``now`` and
sends the datagrams it gets back; the voice pipeline calls :meth:`Pacer.enqueue` with 20 ms frames
and :meth:`Pacer.flush` on barge-in. Nothing here reads a clock, sleeps or touches a socket.

Decisions, and why:

* **Absolute schedule.** Tick *n* is due at ``t0 + n·20 ms``, computed from *n* each time as
  ``t0 + (n * 20) / 1000`` (one exactly rounded division, one addition), never by adding 20 ms to
  the previous deadline, so neither a late loop nor floating-point error can accumulate drift.
  A tick counts as due up to :data:`EARLY_TOLERANCE` (1 ms) before its deadline, because
  millisecond-granularity timers (uvloop/libuv) may fire a hair early and re-arming for a
  deadline 0.3 ms away only costs another wake-up.
* **The RTP timestamp is the clock.** Tick *n* carries timestamp ``first_timestamp + 160·n``
  (mod 2^32) whether or not anything is sent on it, so idle periods, hold and skipped ticks show
  up at the receiver as gaps of the right length (RFC 3550 §5.1: the timestamp is the sampling
  instant). Sequence numbers advance only per packet actually sent, so the receiver never counts
  a packet we chose not to send as lost.
* **Late loop.** Ticks missed by a late wake-up are sent back-to-back, each with its own
  timestamp, as long as the oldest is at most ``max_catch_up`` (200 ms) late: a jitter buffer
  absorbs a short burst. Later than that, the burst would arrive after the receiver has played
  out concealment anyway, so every missed tick but the newest is skipped (``skipped_ticks``) and
  the newest goes out with the marker bit: the receiver sees a timestamp gap, not a burst.
  Skipped ticks consume no audio: a stall delays the agent's words rather than eating them.
* **Silence fill.** With ``fill_silence`` an idle tick sends a precomputed silence payload, so
  carriers that tear calls down on RTP timeout (Telnyx) never see a gap; without it (echo mode)
  an idle tick sends nothing.
* **Marker bit (RFC 3551 §4.1).** Set on the first packet after ticks on which this stream
  sent no audio-stream packet: the first packet of the call, after idle ticks (``fill_silence``
  off), after hold, after skipped ticks, and on the first audio packet after a DTMF event. Not set
  when audio follows *transmitted* silence-fill packets: §4.1 defines a talkspurt as following
  "a silence period during which packets have not been transmitted contiguously" and says
  "applications without silence suppression MUST set the marker bit to zero"; a receiver that
  resynchronises its jitter buffer on M would otherwise do so at every agent utterance.
* **Barge-in.** :meth:`Pacer.flush` drops every queued frame and queued event in one call; the
  next tick sends silence (or nothing). The one thing it does not cut is a DTMF event already
  on the wire: stopping one without its end packet leaves the far end's tone on until it times
  out, so it plays out (at most its own duration, typically 100-250 ms).
* **DTMF (RFC 4733).** :meth:`Pacer.enqueue_event` takes the event's per-tick payloads with
  their end flags (built by :mod:`sipagent.rtp.dtmf` or anyone else) and plays them in queue
  order, in place of audio: one payload per tick, all with the RTP timestamp of the tick the
  event started on (§2.5.1.2), the first with the marker bit (§2.5.1.2), each with its own
  sequence number (§2.5.1.6). The final packet's repeats go out one per tick on the ticks after
  it, because §2.5.1.4 asks for them "at the interval used by the source for updates" (three
  copies in one burst are lost together by the same queue overflow). Audio resumes on the tick
  whose timestamp is ``start + duration`` (the duration field of the final packet, RFC 4733 §2.3
  layout, rounded to whole ticks), while the repeats are still going out; so with durations
  counted to the end of each tick (160, 320, 480 ...) the first repeat shares a tick with the
  first audio packet after the digit, and with durations counted from 0 the final packet does.
  Events are not separated by the pacer: enqueue silence frames between digits for a gap.
* **Hold.** :meth:`Pacer.pause` stops all sending (RFC 3264 sendonly/inactive towards us) while
  ticks, timestamps and the queue keep running: queued audio and events are consumed unheard,
  so the queue keeps meaning "what the caller has yet to hear, in wall-clock time", and
  :meth:`Pacer.resume` continues on the same timeline with the marker bit.
* **Speed.** The 12-byte header is packed directly with one precompiled :class:`struct.Struct`
  (the layout of :class:`sipagent.rtp.packet.RtpPacket`, whose ``serialize`` validates every
  field); fields are validated once when configured instead of on every packet.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .frames import PTIME_MS, SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm, silence
from .window import FloatWindow

__all__ = ["DEFAULT_MAX_CATCH_UP", "EARLY_TOLERANCE", "Encoder", "Pacer", "PacerStats"]

Encoder = Callable[[Pcm], bytes]

#: A tick may be handled this long before its deadline (see the module docstring).
EARLY_TOLERANCE = 0.001
#: Ticks later than this are skipped rather than sent in a burst.
DEFAULT_MAX_CATCH_UP = 0.2
_FRAME_SECONDS = PTIME_MS / 1000
_RTP_V2 = 0x80
_MARKER = 0x80
_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF
_EVENT_DURATION = struct.Struct("!H")  # RFC 4733 §2.3: event, E/R/volume, then duration


@dataclass(frozen=True, slots=True)
class PacerStats:
    """A snapshot of one stream's counters.

    ``octets_sent`` counts payload octets, as the RTCP sender report does (RFC 3550 §6.4.1).
    ``late_ticks`` are ticks sent a whole frame or more after their deadline (caught up in a
    burst); ``send_error_*`` describe ``now - deadline`` over the last ``error_window`` ticks
    (max over the whole stream), in milliseconds, negative when handled within the early
    tolerance.
    """

    packets_sent: int
    octets_sent: int
    audio_packets: int
    silence_packets: int
    event_packets: int
    flushed_frames: int
    flushed_events: int
    late_ticks: int
    skipped_ticks: int
    paused_ticks: int
    send_error_p50_ms: float
    send_error_p99_ms: float
    send_error_max_ms: float


class _Event:
    """One queued telephone-event: ``body`` up to and including the first end packet, then
    ``repeats`` of that end packet."""

    __slots__ = ("body", "payload_type", "repeats", "resume_after", "sent", "start_tick", "timestamp")

    def __init__(self, payload_type: int, body: list[bytes], repeats: list[bytes]) -> None:
        self.payload_type = payload_type
        self.body = body
        self.repeats = repeats
        self.sent = 0
        self.start_tick = 0
        self.timestamp = 0
        final = body[-1]
        if len(final) >= 4:
            duration = _EVENT_DURATION.unpack_from(final, 2)[0]
            ticks = math.ceil(duration / SAMPLES_PER_FRAME)
        else:  # not the RFC 4733 layout: assume one tick per body packet
            ticks = len(body)
        # Audio resumes no earlier than the final packet's own tick and no later than the tick
        # after it, whatever the duration field says: it can neither rewind the stream nor
        # hold it silent with nothing on the wire.
        self.resume_after = min(max(ticks, len(body) - 1, 1), len(body))


class _Repeats:
    """The end-packet repeats of an event whose final packet has been sent: one per tick."""

    __slots__ = ("payload_type", "payloads", "timestamp")

    def __init__(self, payload_type: int, timestamp: int, payloads: list[bytes]) -> None:
        self.payload_type = payload_type
        self.timestamp = timestamp
        self.payloads = deque(payloads)


class Pacer:
    """Our outbound RTP stream, paced against an absolute 20 ms schedule.

    ``ssrc``, ``first_sequence`` and ``first_timestamp`` should be random (RFC 3550 §5.1,
    §8.1); ``encode`` turns a 160-sample frame into the payload of ``payload_type`` (G.711).
    """

    def __init__(
        self,
        *,
        ssrc: int,
        first_sequence: int,
        first_timestamp: int,
        payload_type: int,
        encode: Encoder,
        fill_silence: bool = True,
        max_catch_up: float = DEFAULT_MAX_CATCH_UP,
        error_window: int = 3000,
    ) -> None:
        if not 0 <= ssrc <= _TS_MASK:
            raise ValueError(f"SSRC {ssrc} is not a 32-bit unsigned integer")
        if not 0 <= first_sequence <= _SEQ_MASK:
            raise ValueError(f"first sequence number {first_sequence} is not 0-65535")
        if not 0 <= first_timestamp <= _TS_MASK:
            raise ValueError(f"first timestamp {first_timestamp} is not a 32-bit unsigned integer")
        if max_catch_up < 0:
            raise ValueError(f"max_catch_up must not be negative, got {max_catch_up}")
        if error_window < 1:
            raise ValueError(f"error_window must be at least 1, got {error_window}")
        self._ssrc = ssrc
        self._sequence = first_sequence
        self._ts0 = first_timestamp
        self.fill_silence = fill_silence
        self._max_catch_up = max_catch_up
        self._payload_type = 0
        self._encode: Encoder = encode
        self._silence_payload = b""
        self.set_codec(payload_type, encode)

        self._t0: float | None = None
        self._stopped = False
        self._next_tick = 0
        self._paused = False
        # True when the next audio-stream packet follows ticks that sent none (marker bit).
        self._gap = True
        self._queue: deque[Pcm | _Event] = deque()
        self._queued_frames = 0
        self._event: _Event | None = None
        self._repeats: list[_Repeats] = []

        self._errors = FloatWindow(error_window)
        self._error_max = -math.inf
        self._packets_sent = 0
        self._octets_sent = 0
        self._audio_packets = 0
        self._silence_packets = 0
        self._event_packets = 0
        self._flushed_frames = 0
        self._flushed_events = 0
        self._late_ticks = 0
        self._skipped_ticks = 0
        self._paused_ticks = 0

    # -- configuration -------------------------------------------------------------------------

    def set_codec(self, payload_type: int, encode: Encoder) -> None:
        """Switch the audio payload type and encoder (a re-INVITE changed codec)."""
        if not 0 <= payload_type <= 0x7F:
            raise ValueError(f"RTP payload type {payload_type} is not 0-127")
        silence_payload = encode(silence())
        if not isinstance(silence_payload, bytes):
            raise TypeError(f"encode() must return bytes, got {type(silence_payload).__name__}")
        self._payload_type = payload_type
        self._encode = encode
        self._silence_payload = silence_payload

    @property
    def ssrc(self) -> int:
        """Our synchronisation source identifier."""
        return self._ssrc

    @property
    def next_sequence(self) -> int:
        """The sequence number the next packet sent will carry."""
        return self._sequence

    def timestamp_at(self, now: float) -> int:
        """The RTP timestamp of instant ``now`` on our timeline (for RTCP sender reports)."""
        if self._t0 is None:
            raise RuntimeError("the pacer has not been started")
        return (self._ts0 + round((now - self._t0) * SAMPLE_RATE)) & _TS_MASK

    # -- clock ---------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start the clock: tick 0 is due at ``now``."""
        if self._t0 is not None:
            raise RuntimeError("the pacer has already been started")
        self._t0 = now

    def stop(self) -> None:
        """End the stream: no more timers, no more packets."""
        self._stopped = True

    def get_timer(self) -> float | None:
        """When the next tick is due, or None before :meth:`start` and after :meth:`stop`."""
        if self._t0 is None or self._stopped:
            return None
        return self._t0 + (self._next_tick * PTIME_MS) / 1000

    def handle_timer(self, now: float) -> list[bytes]:
        """The serialized RTP packets for every tick due by ``now``, in sending order.

        Returns an empty list when called early (a timer firing more than
        :data:`EARLY_TOLERANCE` before the deadline) or after :meth:`stop`.
        """
        t0 = self._t0
        if t0 is None:
            raise RuntimeError("handle_timer() before start()")
        if self._stopped:
            return []
        first = self._next_tick
        first_deadline = t0 + (first * PTIME_MS) / 1000
        horizon = now + EARLY_TOLERANCE
        if first_deadline > horizon:
            return []
        out: list[bytes] = []
        if t0 + ((first + 1) * PTIME_MS) / 1000 > horizon:
            # The common case, once per tick: exactly one tick is due.
            error = now - first_deadline
            self._errors.append(error)
            if error > self._error_max:
                self._error_max = error
            self._tick(first, out)
            self._next_tick = first + 1
            return out
        # Several are due (a late timer): the last one, from a float estimate corrected against
        # the exact deadlines.
        last = max(first, int((horizon - t0) / _FRAME_SECONDS))
        while t0 + ((last + 1) * PTIME_MS) / 1000 <= horizon:
            last += 1
        while last > first and t0 + (last * PTIME_MS) / 1000 > horizon:
            last -= 1
        if last > first and now - first_deadline > self._max_catch_up:
            self._skipped_ticks += last - first
            self._gap = True
            first = last
        for tick in range(first, last + 1):
            error = now - (t0 + (tick * PTIME_MS) / 1000)
            self._errors.append(error)
            if error > self._error_max:
                self._error_max = error
            if error >= _FRAME_SECONDS:
                self._late_ticks += 1
            self._tick(tick, out)
        self._next_tick = last + 1
        return out

    # -- hold ----------------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop sending (hold) while the clock and the queue keep running."""
        self._paused = True

    def resume(self) -> None:
        """Send again, on the same timeline; the first packet carries the marker bit."""
        self._paused = False

    @property
    def paused(self) -> bool:
        """Whether the stream is on hold."""
        return self._paused

    # -- queue ---------------------------------------------------------------------------------

    def enqueue(self, frames: Iterable[Pcm]) -> None:
        """Append 20 ms frames (160 int16 samples each) to play after what is queued."""
        checked: list[Pcm] = []
        for frame in frames:
            if frame.shape != (SAMPLES_PER_FRAME,) or frame.dtype != np.int16:
                raise ValueError(
                    f"the pacer plays frames of {SAMPLES_PER_FRAME} int16 samples, "
                    f"got {frame.dtype} {frame.shape}"
                )
            checked.append(frame)
        self._queue.extend(checked)
        self._queued_frames += len(checked)

    def enqueue_event(self, payloads: Sequence[tuple[bytes, bool]], payload_type: int) -> None:
        """Queue one RFC 4733 telephone-event: its per-tick payloads with their end (E) flags.

        ``payloads`` lists what to send on consecutive ticks: updates, the final packet (the
        first with the end flag) and its repeats (RFC 4733 §2.5.1.4 asks for three copies in
        all, so normally two). Once the end flag is set it must stay set (§2.5.1.4).
        """
        if not 0 <= payload_type <= 0x7F:
            raise ValueError(f"RTP payload type {payload_type} is not 0-127")
        if payload_type == self._payload_type:
            raise ValueError(f"telephone-event payload type {payload_type} is the audio payload type")
        if not payloads:
            raise ValueError("a telephone-event needs at least one packet")
        ends = [end for _, end in payloads]
        if True not in ends:
            raise ValueError("a telephone-event must end with a packet that has the end flag set")
        final = ends.index(True)
        if not all(ends[final:]):
            raise ValueError("RFC 4733 §2.5.1.4: once the end flag is set it stays set")
        body = [bytes(payload) for payload, _ in payloads[: final + 1]]
        repeats = [bytes(payload) for payload, _ in payloads[final + 1 :]]
        self._queue.append(_Event(payload_type, body, repeats))

    def flush(self) -> int:
        """Barge-in: drop every queued frame and queued event; returns the frames dropped.

        An event already on the wire plays out (see the module docstring).
        """
        dropped = self._queued_frames
        self._flushed_events += len(self._queue) - dropped
        self._flushed_frames += dropped
        self._queue.clear()
        self._queued_frames = 0
        return dropped

    @property
    def queued_frames(self) -> int:
        """Audio frames waiting to be played (queued events not counted)."""
        return self._queued_frames

    @property
    def is_idle(self) -> bool:
        """Nothing queued and no event in progress: the next tick sends silence (or nothing)."""
        return not self._queue and self._event is None and not self._repeats

    # -- statistics ----------------------------------------------------------------------------

    def totals(self) -> tuple[int, int]:
        """(packets, payload octets) sent so far: what an RTCP sender report needs, without the
        percentile sort :meth:`stats` does."""
        return self._packets_sent, self._octets_sent

    def stats(self) -> PacerStats:
        """A snapshot of the counters, with send-error percentiles over the recent window."""
        errors = self._errors.sorted()

        def percentile(fraction: float) -> float:
            if not errors:
                return 0.0
            # Nearest rank: the smallest value with at least ``fraction`` of samples at or below.
            rank = max(1, math.ceil(fraction * len(errors)))
            return errors[rank - 1] * 1000

        return PacerStats(
            packets_sent=self._packets_sent,
            octets_sent=self._octets_sent,
            audio_packets=self._audio_packets,
            silence_packets=self._silence_packets,
            event_packets=self._event_packets,
            flushed_frames=self._flushed_frames,
            flushed_events=self._flushed_events,
            late_ticks=self._late_ticks,
            skipped_ticks=self._skipped_ticks,
            paused_ticks=self._paused_ticks,
            send_error_p50_ms=percentile(0.50),
            send_error_p99_ms=percentile(0.99),
            send_error_max_ms=self._error_max * 1000 if errors else 0.0,
        )

    # -- the tick ------------------------------------------------------------------------------

    def _tick(self, tick: int, out: list[bytes]) -> None:
        """Everything tick ``tick`` sends: pending end repeats, then an event packet or audio."""
        timestamp = (self._ts0 + tick * SAMPLES_PER_FRAME) & _TS_MASK
        paused = self._paused
        if paused:
            self._paused_ticks += 1
            self._gap = True
        if self._repeats:
            for repeat in self._repeats:
                payload = repeat.payloads.popleft()
                if not paused:
                    self._send_event(out, repeat.payload_type, False, repeat.timestamp, payload)
            self._repeats = [repeat for repeat in self._repeats if repeat.payloads]
        queue = self._queue
        while True:
            event = self._event
            if event is None:
                if not queue or not isinstance(queue[0], _Event):
                    break
                item = queue.popleft()
                assert isinstance(item, _Event)
                event = item
                event.start_tick = tick
                event.timestamp = timestamp
                self._event = event
            if event.sent < len(event.body):
                payload = event.body[event.sent]
                if not paused:
                    self._send_event(out, event.payload_type, event.sent == 0, event.timestamp, payload)
                event.sent += 1
                if event.sent == len(event.body) and event.repeats:
                    self._repeats.append(_Repeats(event.payload_type, event.timestamp, event.repeats))
            if event.sent < len(event.body) or tick < event.start_tick + event.resume_after:
                self._gap = True  # the event holds the audio back this tick
                return
            # The event ended on or before this tick: the tick belongs to what comes next.
            self._event = None

        if queue:
            frame = queue.popleft()
            assert not isinstance(frame, _Event)
            self._queued_frames -= 1
            if paused:
                return
            payload = self._encode(frame)
            self._audio_packets += 1
        elif self.fill_silence and not paused:
            payload = self._silence_payload
            self._silence_packets += 1
        else:
            self._gap = True
            return
        second = self._payload_type | _MARKER if self._gap else self._payload_type
        self._gap = False
        out.append(_HEADER.pack(_RTP_V2, second, self._sequence, timestamp, self._ssrc) + payload)
        self._sequence = (self._sequence + 1) & _SEQ_MASK
        self._packets_sent += 1
        self._octets_sent += len(payload)

    def _send_event(
        self, out: list[bytes], payload_type: int, marker: bool, timestamp: int, payload: bytes
    ) -> None:
        second = payload_type | _MARKER if marker else payload_type
        out.append(_HEADER.pack(_RTP_V2, second, self._sequence, timestamp, self._ssrc) + payload)
        self._sequence = (self._sequence + 1) & _SEQ_MASK
        self._packets_sent += 1
        self._octets_sent += len(payload)
        self._event_packets += 1
