"""Tests for the outbound RTP pacer, on a virtual clock (no sleeping, no sockets)."""

from __future__ import annotations

import struct
from fractions import Fraction

import numpy as np
import pytest

from sipagent.rtp.frames import SAMPLES_PER_FRAME, Pcm, silence
from sipagent.rtp.pacer import EARLY_TOLERANCE, Pacer
from sipagent.rtp.packet import RtpPacket

T0 = 12345.678  # an awkward start, as loop.time() is: repeated addition of 0.02 drifts from it
PT = 0
EVENT_PT = 101
SSRC = 0x1234ABCD
TS0 = 1_000_000
SEQ0 = 4000


def encode(pcm: Pcm) -> bytes:
    """Stub codec: one byte per sample, the low byte, so a frame full of k encodes to k*160."""
    return (pcm.astype(np.int32) & 0xFF).astype(np.uint8).tobytes()


def tone(k: int) -> Pcm:
    """A recognisable frame: every sample k (1-255, so it never encodes like silence)."""
    return np.full(SAMPLES_PER_FRAME, k, dtype=np.int16)


def make(**kwargs: object) -> Pacer:
    options: dict[str, object] = {
        "ssrc": SSRC,
        "first_sequence": SEQ0,
        "first_timestamp": TS0,
        "payload_type": PT,
        "encode": encode,
    }
    options.update(kwargs)
    pacer = Pacer(**options)  # type: ignore[arg-type]
    pacer.start(T0)
    return pacer


def deadline(n: int) -> float:
    return T0 + (n * 20) / 1000


def step(pacer: Pacer) -> list[RtpPacket]:
    """Handle exactly the next tick, on time."""
    timer = pacer.get_timer()
    assert timer is not None
    return [RtpPacket.parse(data) for data in pacer.handle_timer(timer)]


def steps(pacer: Pacer, count: int) -> list[list[RtpPacket]]:
    return [step(pacer) for _ in range(count)]


def event_payloads(durations: list[int], event: int = 5, volume: int = 10) -> list[tuple[bytes, bool]]:
    """RFC 4733 payloads: updates with ``durations``, the last one ending and sent 3 times."""
    *updates, final = durations
    out = [(struct.pack("!BBH", event, volume, d), False) for d in updates]
    end = struct.pack("!BBH", event, 0x80 | volume, final)
    return [*out, (end, True), (end, True), (end, True)]


# -- the schedule ------------------------------------------------------------------------------


def test_ten_thousand_ticks_on_an_absolute_schedule_without_drift() -> None:
    pacer = make()
    naive = T0
    for n in range(10_000):
        timer = pacer.get_timer()
        assert timer is not None
        # Computed from n: within half an ulp of the exact rational deadline, every time.
        exact = Fraction(T0) + Fraction(n * 20, 1000)
        assert abs(Fraction(timer) - exact) <= Fraction(np.spacing(timer)) / 2
        assert timer == deadline(n)
        packets = pacer.handle_timer(timer)
        assert len(packets) == 1
        assert RtpPacket.parse(packets[0]).timestamp == TS0 + n * 160
        if n:
            naive += 0.02
    # 200 s in, the deadline is still exact, where "previous + 20 ms" has drifted by microseconds.
    assert pacer.get_timer() == T0 + 200.0
    assert abs(naive - (T0 + 199.98)) > 1e-9
    stats = pacer.stats()
    assert stats.packets_sent == 10_000
    assert stats.send_error_p50_ms == stats.send_error_p99_ms == stats.send_error_max_ms == 0.0
    assert stats.late_ticks == stats.skipped_ticks == 0


def test_no_timer_before_start_and_after_stop() -> None:
    pacer = Pacer(ssrc=1, first_sequence=0, first_timestamp=0, payload_type=PT, encode=encode)
    assert pacer.get_timer() is None
    with pytest.raises(RuntimeError):
        pacer.handle_timer(0.0)
    pacer.start(5.0)
    assert pacer.get_timer() == 5.0
    with pytest.raises(RuntimeError):
        pacer.start(6.0)
    pacer.stop()
    assert pacer.get_timer() is None
    assert pacer.handle_timer(10.0) == []


def test_early_call_within_tolerance_sends_and_earlier_does_not() -> None:
    pacer = make()
    assert len(pacer.handle_timer(T0)) == 1
    assert pacer.handle_timer(deadline(1) - 2 * EARLY_TOLERANCE) == []
    assert len(pacer.handle_timer(deadline(1) - EARLY_TOLERANCE / 2)) == 1
    assert pacer.get_timer() == deadline(2)
    stats = pacer.stats()
    # Sent half a millisecond early: a negative error, not a late tick.
    assert stats.send_error_p50_ms == pytest.approx(-0.5)
    assert stats.send_error_max_ms == pytest.approx(0.0)
    assert stats.late_ticks == 0


# -- sequence numbers and timestamps -----------------------------------------------------------


def test_sequence_and_timestamp_increment_and_wrap() -> None:
    pacer = make(first_sequence=0xFFFE, first_timestamp=0xFFFFFFFF - 319)
    packets = [p for tick in steps(pacer, 4) for p in tick]
    assert [p.sequence_number for p in packets] == [0xFFFE, 0xFFFF, 0, 1]
    assert [p.timestamp for p in packets] == [0xFFFFFFFF - 319, 0xFFFFFFFF - 159, 0, 160]
    assert {p.ssrc for p in packets} == {SSRC}
    assert {p.payload_type for p in packets} == {PT}
    assert pacer.next_sequence == 2


def test_rtcp_timestamp_mapping_follows_the_clock() -> None:
    pacer = make(first_timestamp=0xFFFFFFFF)
    assert pacer.timestamp_at(T0) == 0xFFFFFFFF
    assert pacer.timestamp_at(T0 + 1.0) == (0xFFFFFFFF + 8000) & 0xFFFFFFFF


# -- silence fill and markers ------------------------------------------------------------------


def test_silence_fill_sends_the_precomputed_silence_payload() -> None:
    calls: list[Pcm] = []

    def counting(pcm: Pcm) -> bytes:
        calls.append(pcm)
        return encode(pcm)

    pacer = make(encode=counting)
    assert len(calls) == 1  # silence, encoded once up front
    ticks = steps(pacer, 5)
    assert [len(t) for t in ticks] == [1] * 5
    assert all(t[0].payload == encode(silence()) for t in ticks)
    assert len(calls) == 1
    pacer.enqueue([tone(7)])
    (audio,) = step(pacer)
    assert audio.payload == bytes([7]) * 160
    assert len(calls) == 2
    stats = pacer.stats()
    assert (stats.silence_packets, stats.audio_packets, stats.packets_sent) == (5, 1, 6)
    assert stats.octets_sent == 6 * 160


def test_marker_with_silence_fill_only_on_the_first_packet() -> None:
    # RFC 3551 §4.1: silence-fill packets are transmitted contiguously, so the audio that
    # follows them does not start a talkspurt; only the very first packet does.
    pacer = make()
    first, second = steps(pacer, 2)
    assert first[0].marker and not second[0].marker
    pacer.enqueue([tone(1), tone(2)])
    audio = [t[0] for t in steps(pacer, 3)]
    assert [p.marker for p in audio] == [False, False, False]
    assert [p.payload[0] for p in audio] == [1, 2, 0]


def test_without_silence_fill_idle_ticks_send_nothing_and_talkspurts_are_marked() -> None:
    pacer = make(fill_silence=False)
    assert steps(pacer, 3) == [[], [], []]
    assert pacer.is_idle
    pacer.enqueue([tone(1), tone(2)])
    one, two = (t[0] for t in steps(pacer, 2))
    assert (one.marker, two.marker) == (True, False)
    # Nothing was sent for ticks 0-2: no sequence number spent, but the timestamp kept time.
    assert (one.sequence_number, one.timestamp) == (SEQ0, TS0 + 3 * 160)
    assert (two.sequence_number, two.timestamp) == (SEQ0 + 1, TS0 + 4 * 160)
    assert steps(pacer, 2) == [[], []]
    pacer.enqueue([tone(3)])
    (three,) = step(pacer)
    assert three.marker
    assert (three.sequence_number, three.timestamp) == (SEQ0 + 2, TS0 + 7 * 160)
    assert pacer.stats().silence_packets == 0


# -- the queue and barge-in --------------------------------------------------------------------


def test_flush_drops_everything_in_one_call_and_the_next_tick_is_silence() -> None:
    pacer = make()
    pacer.enqueue(tone(k) for k in range(1, 51))
    assert pacer.queued_frames == 50 and not pacer.is_idle
    played = [t[0].payload[0] for t in steps(pacer, 3)]
    assert played == [1, 2, 3]
    assert pacer.flush() == 47
    assert pacer.queued_frames == 0 and pacer.is_idle
    (after,) = step(pacer)
    assert after.payload == encode(silence())
    assert after.timestamp == TS0 + 3 * 160 and after.sequence_number == SEQ0 + 3
    assert pacer.flush() == 0
    assert pacer.stats().flushed_frames == 47


def test_flush_without_silence_fill_leaves_the_wire_quiet() -> None:
    pacer = make(fill_silence=False)
    pacer.enqueue([tone(1)] * 10)
    steps(pacer, 2)
    pacer.flush()
    assert steps(pacer, 2) == [[], []]
    pacer.enqueue([tone(9)])
    (next_spurt,) = step(pacer)
    assert next_spurt.marker and next_spurt.payload[0] == 9


def test_enqueue_rejects_frames_of_the_wrong_shape_or_type() -> None:
    pacer = make()
    with pytest.raises(ValueError, match="160 int16"):
        pacer.enqueue([np.zeros(320, dtype=np.int16)])
    with pytest.raises(ValueError, match="160 int16"):
        pacer.enqueue([np.zeros(160, dtype=np.float32)])
    assert pacer.queued_frames == 0


def test_constructor_rejects_out_of_range_stream_identifiers() -> None:
    with pytest.raises(ValueError, match="SSRC"):
        Pacer(ssrc=1 << 32, first_sequence=0, first_timestamp=0, payload_type=0, encode=encode)
    with pytest.raises(ValueError, match="sequence"):
        Pacer(ssrc=1, first_sequence=65536, first_timestamp=0, payload_type=0, encode=encode)
    with pytest.raises(ValueError, match="payload type"):
        Pacer(ssrc=1, first_sequence=0, first_timestamp=0, payload_type=128, encode=encode)


# -- a late event loop -------------------------------------------------------------------------


def test_a_late_loop_catches_up_with_back_to_back_packets() -> None:
    pacer = make()
    pacer.enqueue(tone(k) for k in range(1, 11))
    step(pacer)
    # The loop wakes 83 ms late for tick 1: ticks 1-5 are all due now.
    raw = pacer.handle_timer(deadline(5) + 0.003)
    packets = [RtpPacket.parse(d) for d in raw]
    assert [p.timestamp for p in packets] == [TS0 + n * 160 for n in range(1, 6)]
    assert [p.sequence_number for p in packets] == [SEQ0 + n for n in range(1, 6)]
    assert [p.payload[0] for p in packets] == [2, 3, 4, 5, 6]
    assert not any(p.marker for p in packets)
    assert pacer.get_timer() == deadline(6)
    stats = pacer.stats()
    assert stats.late_ticks == 4  # ticks 1-4 went out a frame or more behind; tick 5 only 3 ms
    assert stats.skipped_ticks == 0
    assert stats.send_error_max_ms == pytest.approx(83.0)


def test_a_very_late_loop_skips_ahead_and_leaves_a_gap() -> None:
    pacer = make()
    pacer.enqueue(tone(k) for k in range(1, 11))
    step(pacer)
    # A 1 s stall: bursting 50 stale packets would help nobody.
    raw = pacer.handle_timer(deadline(50) + 0.005)
    (packet,) = (RtpPacket.parse(d) for d in raw)
    assert packet.timestamp == TS0 + 50 * 160  # the timeline jumped: a gap, not a burst
    assert packet.sequence_number == SEQ0 + 1  # nothing was sent for the skipped ticks
    assert packet.marker
    assert packet.payload[0] == 2  # skipped ticks ate no audio: the words are delayed, not lost
    assert pacer.get_timer() == deadline(51)
    stats = pacer.stats()
    assert stats.skipped_ticks == 49
    assert stats.late_ticks == 0
    (following,) = step(pacer)
    assert not following.marker and following.timestamp == TS0 + 51 * 160


def test_the_catch_up_bound_is_configurable() -> None:
    pacer = make(max_catch_up=0.0)
    step(pacer)
    raw = pacer.handle_timer(deadline(3))
    assert len(raw) == 1 and pacer.stats().skipped_ticks == 2


def test_send_error_percentiles() -> None:
    pacer = make()
    for n in range(100):
        late = 0.010 if n == 99 else 0.001  # one tick in a hundred wakes 10 ms late
        pacer.handle_timer(deadline(n) + late)
    stats = pacer.stats()
    assert stats.send_error_p50_ms == pytest.approx(1.0)
    assert stats.send_error_p99_ms == pytest.approx(1.0)
    assert stats.send_error_max_ms == pytest.approx(10.0)
    pacer.handle_timer(deadline(100) + 0.010)
    assert pacer.stats().send_error_p99_ms == pytest.approx(10.0)


# -- DTMF --------------------------------------------------------------------------------------


def test_a_digit_plays_in_place_of_audio_and_audio_resumes_at_start_plus_duration() -> None:
    pacer = make()
    pacer.enqueue([tone(1)])
    pacer.enqueue_event(event_payloads([160, 320, 480]), EVENT_PT)
    pacer.enqueue([tone(2), tone(3)])
    ticks = steps(pacer, 6)
    assert [[(p.payload_type, p.timestamp) for p in t] for t in ticks] == [
        [(PT, TS0)],
        [(EVENT_PT, TS0 + 160)],
        [(EVENT_PT, TS0 + 160)],
        [(EVENT_PT, TS0 + 160)],  # the final packet: duration 480 from TS0 + 160 ...
        [(EVENT_PT, TS0 + 160), (PT, TS0 + 160 + 480)],  # ... so audio resumes here, beside
        [(EVENT_PT, TS0 + 160), (PT, TS0 + 160 + 640)],  # the repeats, one per tick (§2.5.1.4)
    ]
    packets = [p for t in ticks for p in t]
    assert [p.sequence_number for p in packets] == list(range(SEQ0, SEQ0 + 8))
    assert [p.marker for p in packets] == [True, True, False, False, False, True, False, False]
    events = [p for p in packets if p.payload_type == EVENT_PT]
    assert [struct.unpack("!BBH", p.payload)[2] for p in events] == [160, 320, 480, 480, 480]
    assert [p.payload[1] & 0x80 for p in events] == [0, 0, 0x80, 0x80, 0x80]
    assert [p.payload[0] for p in packets if p.payload_type == PT] == [1, 2, 3]
    assert pacer.is_idle
    assert pacer.stats().event_packets == 5


def test_a_digit_counted_from_zero_resumes_audio_with_its_final_packet() -> None:
    pacer = make(fill_silence=False)
    pacer.enqueue_event(event_payloads([0, 160, 320, 480]), EVENT_PT)
    pacer.enqueue([tone(4)])
    ticks = steps(pacer, 6)
    assert [[(p.payload_type, p.timestamp) for p in t] for t in ticks] == [
        [(EVENT_PT, TS0)],
        [(EVENT_PT, TS0)],
        [(EVENT_PT, TS0)],
        [(EVENT_PT, TS0), (PT, TS0 + 480)],
        [(EVENT_PT, TS0)],
        [(EVENT_PT, TS0)],
    ]
    assert ticks[3][1].marker
    assert pacer.is_idle
    assert step(pacer) == []


def test_back_to_back_digits_and_a_gap_made_of_silence() -> None:
    pacer = make(fill_silence=False)
    pacer.enqueue_event(event_payloads([160, 320], event=1), EVENT_PT)
    pacer.enqueue_event(event_payloads([160, 320], event=2), EVENT_PT)
    pacer.enqueue([silence()] * 2)
    pacer.enqueue_event(event_payloads([160, 320], event=3), EVENT_PT)
    packets = [p for t in steps(pacer, 10) for p in t]
    starts = [(p.payload[0], p.timestamp) for p in packets if p.marker]
    # Digit 2 starts where digit 1 ended; digit 3 after 40 ms of silence (the inter-digit gap).
    assert starts == [(1, TS0), (2, TS0 + 320), (0, TS0 + 640), (3, TS0 + 960)]
    by_digit: dict[int, set[int]] = {}
    for p in packets:
        if p.payload_type == EVENT_PT:
            by_digit.setdefault(p.payload[0], set()).add(p.timestamp)
    assert by_digit == {1: {TS0}, 2: {TS0 + 320}, 3: {TS0 + 960}}
    assert sum(p.payload_type == EVENT_PT for p in packets) == 12
    assert [p.sequence_number for p in packets] == list(range(SEQ0, SEQ0 + len(packets)))


def test_flush_drops_queued_digits_but_lets_the_one_on_the_wire_finish() -> None:
    pacer = make()
    pacer.enqueue_event(event_payloads([160, 320, 480]), EVENT_PT)
    pacer.enqueue([tone(1)] * 5)
    pacer.enqueue_event(event_payloads([160, 320], event=9), EVENT_PT)
    step(pacer)
    assert pacer.flush() == 5
    ticks = steps(pacer, 5)
    kinds = [[p.payload_type for p in t] for t in ticks]
    assert kinds == [[EVENT_PT], [EVENT_PT], [EVENT_PT, PT], [EVENT_PT, PT], [PT]]
    assert all(p.payload == encode(silence()) for t in ticks for p in t if p.payload_type == PT)
    assert all(p.payload[0] == 5 for t in ticks for p in t if p.payload_type == EVENT_PT)
    assert pacer.stats().flushed_events == 1


def test_enqueue_event_validates_its_input() -> None:
    pacer = make()
    end = struct.pack("!BBH", 1, 0x8A, 320)
    with pytest.raises(ValueError, match="at least one"):
        pacer.enqueue_event([], EVENT_PT)
    with pytest.raises(ValueError, match="end flag"):
        pacer.enqueue_event([(b"\x01\x0a\x00\xa0", False)], EVENT_PT)
    with pytest.raises(ValueError, match="stays set"):
        pacer.enqueue_event([(end, True), (b"\x01\x0a\x00\xa0", False)], EVENT_PT)
    with pytest.raises(ValueError, match="audio payload type"):
        pacer.enqueue_event([(end, True)], PT)
    assert pacer.is_idle


# -- hold --------------------------------------------------------------------------------------


def test_pause_sends_nothing_keeps_time_and_resume_is_seamless() -> None:
    pacer = make()
    pacer.enqueue(tone(k) for k in range(1, 21))
    steps(pacer, 2)
    pacer.pause()
    assert pacer.paused
    assert steps(pacer, 5) == [[]] * 5
    pacer.resume()
    (back,) = step(pacer)
    assert back.timestamp == TS0 + 7 * 160  # the timeline kept running through the hold
    assert back.sequence_number == SEQ0 + 2  # and no sequence number was spent on it
    assert back.marker
    assert back.payload[0] == 8  # the held ticks played their frames to nobody
    assert pacer.queued_frames == 12
    (next_one,) = step(pacer)
    assert not next_one.marker
    assert pacer.stats().paused_ticks == 5


def test_pause_without_silence_fill_and_with_an_empty_queue() -> None:
    pacer = make(fill_silence=False)
    pacer.pause()
    assert steps(pacer, 3) == [[]] * 3
    pacer.enqueue([tone(5)])
    pacer.resume()
    (packet,) = step(pacer)
    assert packet.marker and packet.timestamp == TS0 + 3 * 160
    assert pacer.stats().packets_sent == 1


def test_a_digit_during_hold_is_consumed_unsent() -> None:
    pacer = make()
    pacer.enqueue_event(event_payloads([160, 320]), EVENT_PT)
    pacer.pause()
    assert steps(pacer, 4) == [[]] * 4
    pacer.resume()
    assert pacer.is_idle
    (packet,) = step(pacer)
    assert packet.payload_type == PT and packet.marker
    assert pacer.stats().event_packets == 0


def test_codec_switch_recomputes_silence() -> None:
    pacer = make()
    step(pacer)
    pacer.set_codec(8, lambda pcm: b"\xd5" * 160)
    (packet,) = step(pacer)
    assert packet.payload_type == 8 and packet.payload == b"\xd5" * 160


def test_digits_from_packets_for_reach_a_receiver_as_one_key_press_each() -> None:
    # The pacer takes plain payloads; sipagent.rtp.dtmf builds them and decodes them.
    from sipagent.rtp.dtmf import DtmfReceiver, packets_for

    pacer = make()
    for digit in "19":
        planned = packets_for(digit, start_timestamp=0, duration_ms=100)
        pacer.enqueue_event([(p.payload, p.end) for p in planned], EVENT_PT)
        pacer.enqueue([silence()] * 2)  # the inter-digit gap
    receiver = DtmfReceiver(EVENT_PT)
    digits: list[str] = []
    audio: list[RtpPacket] = []
    for n, tick in enumerate(steps(pacer, 20)):
        for packet in tick:
            if packet.payload_type == EVENT_PT:
                digits.extend(event.digit for event in receiver.receive(packet, deadline(n)))
            else:
                audio.append(packet)
    assert digits == ["1", "9"]
    # 100 ms = 5 ticks per digit, then 2 ticks of gap: digits start at ticks 0 and 7, and the
    # audio after each resumes 800 timestamp units after its start, beside the end repeats.
    assert [p.timestamp for p in audio if p.marker] == [TS0 + 800, TS0 + 1120 + 800]
