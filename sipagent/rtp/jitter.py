"""Adaptive jitter buffer for G.711 RTP, sans-IO: packets and times in, one 20 ms frame per tick out.

Like aiortc's ``jitterbuffer.py`` it is a synchronous class taking timestamps: :meth:`push`
gets each packet with its arrival time on the receiver's monotonic clock, :meth:`pop` is called
once per 20 ms tick on the caller's absolute schedule (pass the tick's *scheduled* time,
``t0 + n·0.02``, not the wake-up time) and always returns exactly one :class:`AudioFrame`.

The rules, top to bottom:

**Timeline.** Packets are placed by RTP timestamp, extended past 32 bits by unwrapping against
the highest timestamp seen (sequence numbers likewise past 16 bits, RFC 3550 A.1), into a ring
of 64 blocks of 10 ms holding the G.711 codes (decoded at pop, one ``take`` per frame). Any
packet length that is a multiple of 10 ms fits (10-60 ms; other lengths fill blocks partially).
The play position advances 160 samples per pop. A frame whose audio is all there is VOICE;
one with any block missing is CONCEALED by :class:`~sipagent.rtp.plc.Concealer` (G.711
Appendix I pitch repetition) and counted in ``stats.lost``. A packet whose samples are all
behind the play position is ``late`` and dropped; a repeated sequence number is a
``duplicate``; one below the highest sequence number so far is ``reordered``.

**Silence, not endless concealment.** Before the first packet, and while (re-)buffering, pop
returns SILENCE with ``timestamp=None``. A missing frame with nothing buffered after it is
concealed for at most 3 frames (the concealment has faded out by 60 ms), then SILENCE with
its timestamp (hold, DTX, or the far end stopped); a missing frame with later audio already
buffered is a loss and stays CONCEALED. A timestamp gap with no sequence number missing (or
opened by a marker) is DTX: it plays as SILENCE, and the frames concealed at its start before
that was known are taken back out of ``lost``.

**Adaptive delay.** Each packet's transit ``arrival - timestamp/8000`` goes into a window of
the last 256. Every 10 pops (and at once after a late packet) the goal for the deadline
transit ``O_target`` is the larger of the window's ``quantile`` (default 0.97) and the 90th
percentile of its last 50 (so a spike shows within a second), bounded to ``[min, max]_delay``
above the window's 2nd-percentile transit, the *floor* (the fastest path; a percentile so a
few early packets cannot drag it down). ``O_target`` rises to the goal at once and falls
toward it with time constant ``release_seconds`` (default 8 s). Playing position *P* at time
*now*, a packet is on time iff its transit <= ``now - P/8000``, the actual deadline; the
buffer keeps that within ``[O_target - 5 ms, O_target + 25 ms]`` by **inserting** a frame
(concealment that does not advance *P*: CONCEALED, ``timestamp=None``) or **dropping** one
(*P* skips 20 ms: the next timestamp steps by 320). It waits for a quiet frame (mean
magnitude below 300) or a missing one to do so, up to 100 ms for an insert and 1 s for a drop,
and acts at once when the deadline is off by more than 15 ms (short) / 60 ms (long). The same
rule absorbs sender clock drift: a ±500 ppm sender clock moves transits by 0.5 ms/s, so the
buffer drops or inserts a frame every ~40 s. ``stats.delay_ms`` is the actual deadline above
the floor, ``stats.target_delay_ms`` the target's.

**Re-anchoring.** The timeline restarts at a packet, which then plays when its deadline
``O_target`` comes (at once if already past), on: a new SSRC (a :class:`SourceChanged` event
is returned; also for the very first packet, with ``old_ssrc=None``); a marker bit with a
timestamp jump once the buffered audio has played out (the start of a talkspurt is where a new
delay costs nothing); any packet that does not fit while SILENCE plays for lack of packets
(a hold with the sender's clock stopped); or, mid-stream, two consecutive packets more than a
ring length ahead or 2 s behind the play position (a sender restart). If the packet's transit
is implausible next to the window (a new source's random timestamp base), the window is
shifted to match, as if it came by the fastest path. Packets of the previous SSRC within 1 s
of a change are dropped as late rather than switching back. While audio is still queued, a
marker only marks the gap before it as DTX.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from .events import SourceChanged
from .frames import SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from .g711 import decode_table, encode_table
from .packet import RtpPacket
from .plc import Concealer

__all__ = ["JitterBuffer", "JitterStats"]

_RATE = 8000
_BLOCK = 80  # 10 ms: the unit the ring tracks
_SLOTS = 64  # ring of 64 blocks = 640 ms
_MASK = _SLOTS - 1
_RING = _SLOTS * _BLOCK
_FRAME = SAMPLES_PER_FRAME
_WINDOW = 256  # transits kept for the delay statistics (~5 s of 20 ms packets)
_RECENT = 50  # the most recent of them (~1 s), whose 90th percentile lets the target jump early
_RECENT_QUANTILE = 0.9
_FLOOR_QUANTILE = 0.02  # the "fastest path" transit: 2nd percentile of the window
_MIN_SAMPLES = 10  # transits needed before the target follows the measurements
_EVALUATE_EVERY = 10  # pops between target updates (200 ms)
_SEEN = 512  # sequence numbers remembered for duplicate detection
_CONCEAL_FRAMES = 3  # missing frames with nothing after them concealed before SILENCE
_INSERT_BELOW = -0.005  # deadline below target by this (s): insert a frame
_DROP_ABOVE = 0.025  # above by this: drop a frame (> 20 ms, so one drop cannot overshoot)
_INSERT_NOW = -0.015
_DROP_NOW = 0.060
_INSERT_PATIENCE = 5  # pops waiting for a quiet frame before inserting anyway
_DROP_PATIENCE = 50
_QUIET = 300.0  # mean |sample| below this (about -40 dBFS) counts as quiet
_SWITCH_GUARD = 1.0  # seconds after an SSRC change during which the old SSRC is ignored
_FAR_BEHIND = 2 * _RATE  # samples behind the play position beyond which a packet is a stray

_WAITING, _BUFFERING, _PLAYING = 0, 1, 2

_VOICE = FrameKind.VOICE
_CONCEALED = FrameKind.CONCEALED
_SILENCE = FrameKind.SILENCE
_NO_EVENTS: tuple[SourceChanged, ...] = ()


@dataclass(slots=True)
class JitterStats:
    """Counters and delay figures of one stream (updated in place; read any time)."""

    received: int = 0  # packets pushed, duplicates and late ones included
    duplicates: int = 0
    late: int = 0  # arrived after their audio was due, dropped
    lost: int = 0  # frames concealed because (part of) their audio never came in time
    reordered: int = 0  # arrived after a higher sequence number
    resyncs: int = 0  # timeline restarts (marker + jump, stream jump, SSRC change)
    source_changes: int = 0  # SSRC changes after the first
    frames_dropped_for_drift: int = 0  # frames skipped to shrink the delay (drift or target)
    frames_inserted: int = 0  # frames synthesised to grow the delay (drift or target)
    target_delay_ms: float = 0.0  # target deadline above the fastest transit
    delay_ms: float = 0.0  # actual deadline above the fastest transit (at the last pop)
    jitter_ms: float = 0.0  # RFC 3550 A.8 interarrival jitter estimate


class JitterBuffer:
    """Reorders, times and conceals one G.711 RTP stream; see the module docstring for the rules."""

    def __init__(
        self,
        codec: str = "PCMU",
        *,
        min_delay_ms: float = 20.0,
        max_delay_ms: float = 200.0,
        start_delay_ms: float = 60.0,
        quantile: float = 0.97,
        release_seconds: float = 8.0,
    ) -> None:
        if not 0 <= min_delay_ms <= start_delay_ms <= max_delay_ms <= 400:
            raise ValueError(
                "jitter buffer delays need 0 <= min_delay_ms <= start_delay_ms <= max_delay_ms <= 400,"
                f" got {min_delay_ms}, {start_delay_ms}, {max_delay_ms}"
            )
        if not 0.5 <= quantile < 1 or release_seconds <= 0:
            raise ValueError(
                f"quantile must be in [0.5, 1) and release_seconds > 0, got {quantile}, {release_seconds}"
            )
        self._table: Pcm = decode_table(codec)
        self._codec = codec.upper()
        self._min_delay = min_delay_ms / 1000
        self._max_delay = max_delay_ms / 1000
        self._start_delay = start_delay_ms / 1000
        self._quantile = quantile
        self._release = release_seconds
        self.stats = JitterStats(target_delay_ms=start_delay_ms)
        self._plc = Concealer()
        self._raw = bytearray(_RING)
        self._codes = np.frombuffer(self._raw, dtype=np.uint8)  # a view: writes to _raw show here
        self._ids = [-1] * _SLOTS  # block number held by each ring slot
        self._partial: dict[int, int] = {}  # block -> samples so far, for packets not 10 ms aligned
        self._transits = np.zeros(_WINDOW, dtype=np.float64)
        self._transit_count = 0
        self._last_transit: float | None = None
        self._floor = 0.0  # fastest-path transit: the window's 2nd percentile (s)
        self._target = 0.0  # O_target: deadline transit (s)
        self._last_evaluation: float | None = None
        self._evaluate_now = False
        self._state = _WAITING
        self._ssrc: int | None = None
        self._old_ssrc: int | None = None
        self._switched_at = 0.0
        self._seen = array("q", [-1]) * _SEEN
        self._max_seq = 0
        self._max_ts = 0
        self._base = 0  # extended timestamp of block 0
        self._block = 0  # next block to play
        self._end = 0  # end (samples from _base) of the furthest audio received
        self._dtx: tuple[int, int] | None = None  # [from, to) samples known to be DTX, not loss
        self._stray: tuple[RtpPacket, int, int, float] | None = None
        self._missing_run = 0  # consecutive frames concealed
        self._gap_concealed = 0  # of those, concealed with nothing buffered after them
        self._idle = False  # playing SILENCE for lack of packets
        self._pops = 0
        self._pending = 0  # pops a wanted insert/drop has waited for a quiet frame
        self._last_samples: Pcm | None = None

    # -- public API ----------------------------------------------------------------------------

    @property
    def codec(self) -> str:
        """The G.711 law payloads are decoded with ("PCMU" or "PCMA")."""
        return self._codec

    @property
    def source_changes(self) -> int:
        """SSRC changes seen after the first packet."""
        return self.stats.source_changes

    @property
    def ssrc(self) -> int | None:
        """The SSRC being played, or None before the first packet."""
        return self._ssrc

    @property
    def playing(self) -> bool:
        """Whether the buffer is past its initial (or re-anchor) fill and playing the timeline."""
        return self._state == _PLAYING

    def set_codec(self, codec: str) -> None:
        """Decode later packets with ``codec``; audio already buffered is transcoded to match."""
        table = decode_table(codec)
        codec = codec.upper()
        if codec != self._codec:
            self._codes[:] = encode_table(codec).take(self._table.take(self._codes).view(np.uint16))
            self._table = table
            self._codec = codec

    def push(self, packet: RtpPacket, arrival: float) -> tuple[SourceChanged, ...]:
        """Buffer one audio packet of the negotiated codec; returns the events it caused.

        The only event is :class:`SourceChanged` (first packet, or a new SSRC); the common
        case returns an empty tuple without allocating.
        """
        stats = self.stats
        stats.received += 1
        events = _NO_EVENTS
        if packet.ssrc != self._ssrc:
            if packet.ssrc == self._old_ssrc and arrival - self._switched_at < _SWITCH_GUARD:
                stats.late += 1
                return _NO_EVENTS
            events = (SourceChanged(self._ssrc, packet.ssrc),)
            self._new_source(packet, arrival)
        seq = packet.sequence_number
        step = ((seq - self._max_seq + 0x8000) & 0xFFFF) - 0x8000
        ext_seq = self._max_seq + step
        slot = ext_seq & (_SEEN - 1)
        if self._seen[slot] == ext_seq:
            stats.duplicates += 1
            return events
        self._seen[slot] = ext_seq
        if step > 0:
            self._max_seq = ext_seq
        else:
            stats.reordered += 1
        shift = ((packet.timestamp - self._max_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        ext_ts = self._max_ts + shift
        count = len(packet.payload)
        if not count:
            return events
        start = ext_ts - self._base
        if self._state == _WAITING:
            self._anchor(ext_ts, arrival)
        elif start > self._end and (packet.marker or step == 1):
            # Time skipped with no sequence number missing (or a marker): silence suppression,
            # or a jump in the sender's timeline. What was concealed meanwhile was not loss.
            if step == 1:
                stats.lost -= self._gap_concealed
                self._gap_concealed = 0
            if packet.marker and self._end <= self._block * _BLOCK:
                self._anchor(ext_ts, arrival)  # a new talkspurt: start it at the target delay
            elif start + count <= (self._block + _SLOTS) * _BLOCK:
                self._dtx = (self._end, start)  # play the skipped time as silence, not loss
        elif step == 1 and self._idle:
            stats.lost -= self._gap_concealed  # resuming from a pause with the clock stopped
            self._gap_concealed = 0
        start = ext_ts - self._base
        play = self._block * _BLOCK
        end = start + count
        if end > play + _RING or end <= play - _FAR_BEHIND or (self._idle and end <= play):
            if not self._stray_resync(packet, ext_seq, ext_ts, arrival):
                return events
            start = ext_ts - self._base
        elif self._state == _BUFFERING and start < play and self._end - start <= _RING - _FRAME:
            self._block = start // _BLOCK  # an earlier packet came second: start the play there
        if ext_ts > self._max_ts:
            self._max_ts = ext_ts
        self._record_transit(arrival - ext_ts / _RATE)
        self._place(packet.payload, start)
        return events

    def pop(self, now: float) -> AudioFrame:
        """The next 20 ms frame, due at ``now`` (the tick's scheduled time on the arrival clock)."""
        state = self._state
        if state != _PLAYING:
            if state == _WAITING:
                return AudioFrame(np.zeros(_FRAME, dtype=np.int16), _SILENCE, None)
            if now - (self._base + self._block * _BLOCK) / _RATE < self._target + _INSERT_BELOW:
                return self._silence(None)
            self._state = _PLAYING
        self._pops += 1
        if self._evaluate_now or self._pops % _EVALUATE_EVERY == 0:
            self._evaluate(now)
        block = self._block
        deadline = now - (self._base + block * _BLOCK) / _RATE
        self.stats.delay_ms = (deadline - self._floor) * 1000
        excess = deadline - self._target
        if excess < _INSERT_BELOW or excess > _DROP_ABOVE:
            frame = self._adjust(excess, block)
            if frame is not None:
                return frame
        else:
            self._pending = 0
        return self._play(self._block)

    def newest(self) -> AudioFrame | None:
        """The latest 20 ms that has arrived and not played yet (VOICE, with its RTP timestamp), or
        None when everything that arrived has played. Decisions that cannot wait out the buffer's
        delay look here: on a jittery line caller voice waits ~100 ms before it plays, and the
        agent should fall silent when it arrives. Does not move the play position."""
        if self._state == _WAITING:
            return None
        first = self._end // _BLOCK - 2
        if first < self._block or not (self._have(first) and self._have(first + 1)):
            return None
        return AudioFrame(self._decode(first, _FRAME), _VOICE, (self._base + first * _BLOCK) & 0xFFFFFFFF)

    # -- timeline ------------------------------------------------------------------------------

    def _new_source(self, packet: RtpPacket, arrival: float) -> None:
        if self._ssrc is not None:
            self.stats.source_changes += 1
            self._old_ssrc = self._ssrc
            self._switched_at = arrival
        self._ssrc = packet.ssrc
        self._seen = array("q", [-1]) * _SEEN
        self._max_seq = packet.sequence_number - 1  # so this packet is one step ahead
        self._max_ts = packet.timestamp
        if self._state != _WAITING:
            self._state = _WAITING  # the push below anchors on this packet
            self.stats.resyncs += 1

    def _anchor(self, ext_ts: int, arrival: float) -> None:
        """Restart the timeline at this packet: it plays once its deadline comes."""
        transit = arrival - ext_ts / _RATE
        if self._transit_count == 0:
            self._floor = transit
            self._target = transit + self._start_delay
        elif not self._floor - 0.1 <= transit <= self._target + 0.5:
            # The sender's timeline moved (new source, restart): move the statistics with it,
            # as if this packet came by the fastest path.
            delta = transit - self._floor
            self._transits += delta
            self._floor += delta
            self._target += delta
        if self._state != _WAITING:
            self.stats.resyncs += 1
        self._last_transit = None
        self._state = _BUFFERING
        self._base = ext_ts
        self._max_ts = ext_ts
        self._block = 0
        self._end = 0
        self._ids = [-1] * _SLOTS
        self._partial.clear()
        self._dtx = None
        self._stray = None
        self._idle = False
        self._missing_run = 0
        self._gap_concealed = 0

    def _stray_resync(self, packet: RtpPacket, ext_seq: int, ext_ts: int, arrival: float) -> bool:
        """A packet far from the play position: restart the timeline on it, or hold it as a stray.

        Returns whether the packet should now be placed.
        """
        stray = self._stray
        if self._idle or (self._state == _BUFFERING and ext_ts - self._base > 0):
            self._anchor(ext_ts, arrival)
            self._max_seq = ext_seq
            return True
        if (
            stray is not None
            and ext_seq == stray[1] + 1
            and 0 < ext_ts - stray[2] <= _RING // 2
            and arrival - stray[3] < 0.2
        ):
            self.stats.late -= 1  # the held stray is played after all
            self._anchor(stray[2], stray[3])
            self._max_seq = ext_seq
            self._record_transit(stray[3] - stray[2] / _RATE)
            self._place(stray[0].payload, 0)
            return True
        self._stray = (packet, ext_seq, ext_ts, arrival)
        self.stats.late += 1
        return False

    def _place(self, payload: bytes, start: int) -> None:
        """Store a payload starting ``start`` samples after the base, and mark its blocks."""
        count = len(payload)
        play = self._block * _BLOCK
        if start < play:  # partly late: keep what can still be played
            if start + count <= play:
                self.stats.late += 1
                self._evaluate_now = True  # a late packet: the target may be too short
                return
            payload = memoryview(payload)[play - start :].tobytes()
            count -= play - start
            start = play
        index = start % _RING
        raw = self._raw
        if index + count <= _RING:
            raw[index : index + count] = payload
        else:
            first = _RING - index
            raw[index:] = payload[:first]
            raw[: count - first] = payload[first:]
        ids = self._ids
        if start % _BLOCK == 0 and count % _BLOCK == 0:
            block = start // _BLOCK
            for number in range(block, block + count // _BLOCK):
                ids[number & _MASK] = number
        else:
            partial = self._partial
            for number in range(start // _BLOCK, (start + count - 1) // _BLOCK + 1):
                covered = min(start + count, (number + 1) * _BLOCK) - max(start, number * _BLOCK)
                total = partial.get(number, 0) + covered
                if total >= _BLOCK:
                    ids[number & _MASK] = number
                    partial.pop(number, None)
                else:
                    partial[number] = total
        if start + count > self._end:
            self._end = start + count

    # -- delay statistics ----------------------------------------------------------------------

    def _record_transit(self, transit: float) -> None:
        self._transits[self._transit_count % _WINDOW] = transit
        self._transit_count += 1
        last = self._last_transit
        if last is not None:  # RFC 3550 A.8: J += (|D| - J) / 16
            jitter = self.stats.jitter_ms
            self.stats.jitter_ms = jitter + (abs(transit - last) * 1000 - jitter) / 16
        self._last_transit = transit

    def _evaluate(self, now: float) -> None:
        """Move the target deadline toward the window's quantile: up at once, down slowly."""
        self._evaluate_now = False
        count = min(self._transit_count, _WINDOW)
        previous = self._last_evaluation
        self._last_evaluation = now
        if count < _MIN_SAMPLES:
            return
        window = self._transits[:count]
        # The floor is a low percentile, not the minimum, so a few packets that came early
        # (a sender bursting ahead) cannot drag the whole timeline down.
        floor_rank = int(_FLOOR_QUANTILE * count)
        rank = min(count - 1, int(self._quantile * count))
        ranked = np.partition(window, (floor_rank, rank))
        floor = float(ranked[floor_rank])
        goal = float(ranked[rank])
        if count >= _RECENT:
            # A jitter spike fills the long window slowly; the last second shows it at once.
            end = self._transit_count % _WINDOW
            recent = (
                self._transits[end - _RECENT : end]
                if end >= _RECENT
                else np.concatenate([self._transits[end - _RECENT :], self._transits[:end]])
            )
            rank = int(_RECENT_QUANTILE * _RECENT)
            goal = max(goal, float(np.partition(recent, rank)[rank]))
        low = floor + self._min_delay
        high = floor + self._max_delay
        goal = min(max(goal, low), high)
        target = self._target
        if goal >= target:
            target = goal
        elif previous is not None:
            target = goal + (target - goal) * math.exp(-(now - previous) / self._release)
        self._target = min(max(target, low), high)
        self._floor = floor
        self.stats.target_delay_ms = (self._target - floor) * 1000

    # -- playout -------------------------------------------------------------------------------

    def _have(self, block: int) -> bool:
        return self._ids[block & _MASK] == block

    def _decode(self, block: int, count: int) -> Pcm:
        index = (block & _MASK) * _BLOCK
        if index + count <= _RING:
            return self._table.take(self._codes[index : index + count])
        return self._table.take(np.concatenate([self._codes[index:], self._codes[: index + count - _RING]]))

    def _play(self, block: int) -> AudioFrame:
        """Play the frame at ``block`` (two blocks) and advance."""
        ids = self._ids
        first = ids[block & _MASK] == block
        second = ids[(block + 1) & _MASK] == block + 1
        self._block = block + 2
        if self._partial:
            for number in [n for n in self._partial if n < block + 2]:
                del self._partial[number]
        timestamp = (self._base + block * _BLOCK) & 0xFFFFFFFF
        if first and second:
            self._missing_run = 0
            self._gap_concealed = 0
            self._idle = False
            samples = self._plc.good(self._decode(block, _FRAME))
            self._last_samples = samples
            return AudioFrame(samples, _VOICE, timestamp)
        start = block * _BLOCK
        nothing_after = self._end <= start
        if not (first or second):
            dtx = self._dtx
            if dtx is not None and dtx[0] <= start < dtx[1]:
                return self._silence(timestamp)
            if nothing_after and self._missing_run >= _CONCEAL_FRAMES:
                self._idle = True
                return self._silence(timestamp)
            samples = self._plc.conceal(_FRAME)
        elif first:
            samples = np.concatenate([self._plc.good(self._decode(block, _BLOCK)), self._plc.conceal(_BLOCK)])
        else:
            samples = np.concatenate(
                [self._plc.conceal(_BLOCK), self._plc.good(self._decode(block + 1, _BLOCK))]
            )
        self._missing_run += 1
        if nothing_after:
            self._gap_concealed += 1
        self.stats.lost += 1
        self._last_samples = samples
        return AudioFrame(samples, _CONCEALED, timestamp)

    def _silence(self, timestamp: int | None) -> AudioFrame:
        samples = np.zeros(_FRAME, dtype=np.int16)
        self._plc.good(samples)  # fades out of any concealment in progress (in place)
        self._last_samples = samples
        return AudioFrame(samples, _SILENCE, timestamp)

    def _adjust(self, excess: float, block: int) -> AudioFrame | None:
        """Insert or drop a frame to bring the deadline back to the target (None: play as usual)."""
        self._pending += 1
        present = self._have(block) and self._have(block + 1)
        if excess < 0:
            if not (
                self._idle
                or not present
                or excess < _INSERT_NOW
                or self._pending > _INSERT_PATIENCE
                or self._quiet(self._last_samples)
            ):
                return None
            self._pending = 0
            self.stats.frames_inserted += 1
            if self._idle:
                return self._silence(None)
            samples = self._plc.conceal(_FRAME)
            self._last_samples = samples
            return AudioFrame(samples, _CONCEALED, None)
        if not (
            self._idle
            or not present
            or excess > _DROP_NOW
            or self._pending > _DROP_PATIENCE
            or self._quiet(self._decode(block, _FRAME))
        ):
            return None
        self._pending = 0
        self.stats.frames_dropped_for_drift += 1
        self._block = block + 2
        if present:
            self._plc.discontinuity()
        return None

    @staticmethod
    def _quiet(samples: Pcm | None) -> bool:
        return samples is None or float(np.abs(samples.astype(np.float32)).mean()) < _QUIET
