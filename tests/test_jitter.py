"""The adaptive jitter buffer and its concealment, on simulated clocks and networks (no sleeping).

Speech is real (LibriVox, 16 kHz) decimated to 8 kHz and packetised as a sender would; the
network is a seeded simulation of loss, delay, reordering and duplication; ``pop`` is ticked
every 20 ms on an absolute schedule, as the media pacer does.
"""

from __future__ import annotations

import functools
import itertools
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.rtp import g711
from sipagent.rtp.events import SourceChanged
from sipagent.rtp.frames import SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from sipagent.rtp.jitter import JitterBuffer
from sipagent.rtp.packet import RtpPacket
from sipagent.rtp.plc import Concealer

SPEECH = "/work/shared/speech/librivox-0870.wav"
TICK = 0.02
VOICE, CONCEALED, SILENCE = FrameKind.VOICE, FrameKind.CONCEALED, FrameKind.SILENCE


@functools.cache
def speech_8k() -> Pcm:
    """The LibriVox clip at 8 kHz: windowed-sinc low-pass at 3.6 kHz, then every other sample.

    (scipy is not a dependency, so no ``resample_poly``; a 127-tap FIR is plenty here.)
    """
    with wave.open(SPEECH) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (16000, 2, 1)
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float64)
    taps = np.arange(-63, 64)
    kernel = 0.45 * np.sinc(0.45 * taps) * np.hamming(taps.size)
    filtered = np.convolve(audio, kernel / kernel.sum(), mode="same")[::2]
    return np.clip(np.rint(filtered), -32768, 32767).astype(np.int16)


def speech_frames(count: int, codec: str = "PCMU") -> bytes:
    """``count`` frames of G.711 speech (the clip repeated as needed)."""
    clip = speech_8k()
    repeats = -(-count * SAMPLES_PER_FRAME // clip.size)
    return g711.encode(np.tile(clip, repeats)[: count * SAMPLES_PER_FRAME], codec)


def packetise(
    payload: bytes,
    *,
    samples: int = SAMPLES_PER_FRAME,
    seq: int = 1000,
    ts: int = 50000,
    ssrc: int = 0x1234,
    pt: int = 0,
) -> list[RtpPacket]:
    """Cut a G.711 payload stream into packets of ``samples`` each (the first has the marker)."""
    return [
        RtpPacket(
            payload_type=pt,
            sequence_number=(seq + i) & 0xFFFF,
            timestamp=(ts + i * samples) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=payload[i * samples : (i + 1) * samples],
            marker=i == 0,
        )
        for i in range(len(payload) // samples)
    ]


@dataclass
class Network:
    """A seeded lossy link: loss, a delay spread, extra reordering and duplicates."""

    seed: int
    loss: float = 0.0
    base_delay: float = 0.030
    jitter: float = 0.0  # mean of the gamma(2) variable delay (s); its 99th percentile is ~3.3x
    reorder: float = 0.0  # chance a packet is held back 25 ms extra (behind its successor)
    duplicate: float = 0.0
    lost: set[int] = field(default_factory=set)

    def deliver(
        self, packets: Sequence[RtpPacket], send_times: Sequence[float]
    ) -> list[tuple[float, RtpPacket]]:
        rng = np.random.default_rng(self.seed)
        arrivals: list[tuple[float, RtpPacket]] = []
        for index, (packet, sent) in enumerate(zip(packets, send_times, strict=True)):
            if rng.random() < self.loss:
                self.lost.add(index)
                continue
            copies = 2 if rng.random() < self.duplicate else 1
            for _ in range(copies):
                delay = self.base_delay + rng.gamma(2.0, self.jitter / 2)
                if rng.random() < self.reorder:
                    delay += 0.025
                arrivals.append((sent + delay, packet))
        arrivals.sort(key=lambda item: item[0])
        return arrivals


def run(
    buffer: JitterBuffer, arrivals: Sequence[tuple[float, RtpPacket]], start: float, ticks: int
) -> list[tuple[float, AudioFrame]]:
    """Tick ``pop`` every 20 ms from ``start``, pushing each packet that arrived by then first."""
    frames: list[tuple[float, AudioFrame]] = []
    pending = iter(arrivals)
    upcoming = next(pending, None)
    for n in range(ticks):
        now = start + n * TICK
        while upcoming is not None and upcoming[0] <= now:
            buffer.push(upcoming[1], upcoming[0])
            upcoming = next(pending, None)
        frames.append((now, buffer.pop(now)))
    return frames


def ts_steps(frames: Iterator[AudioFrame] | Sequence[AudioFrame]) -> list[int]:
    """Differences (mod 2**32) between consecutive timestamped frames."""
    stamps = [frame.timestamp for frame in frames if frame.timestamp is not None]
    return [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)]


def segmental_snr(clean: Pcm, output: Pcm) -> float:
    """Mean per-frame SNR (dB, each clamped to [-10, 35]) over frames where the clean one is active."""
    reference = clean.astype(np.float64).reshape(-1, SAMPLES_PER_FRAME)
    error = reference - output.astype(np.float64).reshape(-1, SAMPLES_PER_FRAME)
    signal = (reference**2).sum(axis=1)
    active = signal > SAMPLES_PER_FRAME * 300.0**2
    snr = 10 * np.log10(signal[active] / np.maximum((error[active] ** 2).sum(axis=1), 1e-3))
    return float(np.clip(snr, -10, 35).mean())


def log_spectral_distance(clean: Pcm, output: Pcm) -> float:
    """Mean per-frame RMS difference (dB) of Hann-windowed power spectra, over active frames."""
    window = np.hanning(SAMPLES_PER_FRAME)
    reference = clean.astype(np.float64).reshape(-1, SAMPLES_PER_FRAME)
    active = (reference**2).sum(axis=1) > SAMPLES_PER_FRAME * 300.0**2
    spectra = [
        np.abs(np.fft.rfft(frames[active] * window, axis=1)) ** 2 + 1e3
        for frames in (reference, output.astype(np.float64).reshape(-1, SAMPLES_PER_FRAME))
    ]
    distance = np.sqrt(np.mean((10 * np.log10(spectra[0] / spectra[1])) ** 2, axis=1))
    return float(distance.mean())


def steady(
    packets: Sequence[RtpPacket], start: float, *, delay: float = 0.03, every: float = TICK
) -> list[tuple[float, RtpPacket]]:
    """A perfect network: packet ``i`` arrives at ``start + i·every + delay``."""
    return [(start + i * every + delay, packet) for i, packet in enumerate(packets)]


def index_of(frame: AudioFrame, ts0: int = 50000, samples: int = SAMPLES_PER_FRAME) -> int:
    assert frame.timestamp is not None
    return ((frame.timestamp - ts0) & 0xFFFFFFFF) // samples


# -- the must-show: real speech through 5 % loss, 60 ms jitter, reordering and duplicates --------


def test_speech_through_a_lossy_jittery_network() -> None:
    frames_sent = 1000  # 20 s: the 7 s clip three times
    payload = speech_frames(frames_sent)
    clean = g711.decode(payload, "PCMU")
    packets = packetise(payload)
    start = 1000.0
    # Variable delay gamma(k=2, θ=10 ms): mean 20 ms, 99th percentile 66 ms (the "60 ms
    # spread"), on top of 30 ms; 2 % held back 25 ms more; 2 % duplicated; 5 % lost.
    network = Network(seed=1, loss=0.05, jitter=0.020, reorder=0.02, duplicate=0.02)
    arrivals = network.deliver(packets, [start + i * TICK for i in range(frames_sent)])
    buffer = JitterBuffer()
    ticks = frames_sent + 10
    out = run(buffer, arrivals, start, ticks)

    # Continuous: one 160-sample frame per tick.
    assert len(out) == ticks
    assert all(frame.samples.shape == (SAMPLES_PER_FRAME,) for _, frame in out)

    # In order: once playing, timestamps step by 160, by 320 only where a frame was dropped
    # to shrink the delay, and untimestamped frames after the start are inserted ones.
    first = next(n for n, (_, frame) in enumerate(out) if frame.timestamp is not None)
    assert all(frame.kind is SILENCE for _, frame in out[:first])
    played = [frame for _, frame in out[first:]]
    steps = ts_steps(played)
    assert set(steps) <= {160, 320}
    stats = buffer.stats
    assert steps.count(320) == stats.frames_dropped_for_drift
    assert sum(frame.timestamp is None for frame in played) == stats.frames_inserted
    assert stats.resyncs == 0 and stats.source_changes == 0

    # Concealed exactly where the packet was lost or not there by its tick; voice otherwise.
    first_arrival: dict[int, float] = {}
    for arrival, packet in arrivals:
        first_arrival.setdefault((packet.timestamp - 50000) // SAMPLES_PER_FRAME, arrival)
    output = np.zeros_like(clean)
    zero_filled = np.zeros_like(clean)
    covered = np.zeros(frames_sent, dtype=bool)
    late_expected = 0
    for now, frame in out[first:]:
        if frame.timestamp is None:
            continue
        index = index_of(frame)
        if index >= frames_sent:
            continue  # the stream's end, concealed then silent
        on_time = first_arrival.get(index, np.inf) <= now
        assert frame.kind is (VOICE if on_time else CONCEALED), (index, frame.kind)
        if index in network.lost:
            assert frame.kind is CONCEALED
        late_expected += not on_time and index in first_arrival
        block = slice(index * SAMPLES_PER_FRAME, (index + 1) * SAMPLES_PER_FRAME)
        output[block] = frame.samples
        zero_filled[block] = frame.samples if frame.kind is VOICE else 0
        covered[index] = True
    concealed = sum(frame.kind is CONCEALED and frame.timestamp is not None for frame in played)
    assert concealed == stats.lost
    assert late_expected <= stats.late <= late_expected + stats.frames_dropped_for_drift
    assert stats.duplicates == len(arrivals) - len(first_arrival)
    assert stats.received == len(arrivals)
    assert 40 <= stats.target_delay_ms <= 80  # ≈ the 97th percentile of the delay spread

    # Quality against the clean decode, aligned by timestamp. Voice frames are bit-exact but
    # for the resume cross-fades; the figure is the segmental SNR over active speech, and
    # over the concealed frames alone, where filling with zeros would score exactly 0 dB.
    # Measured (seed 1: 42 packets lost, 3 late, 1 frame dropped, target 57 ms): 32.3 dB
    # overall; on the 45 concealed frames (their active ones) 1.7 dB, and a log-spectral
    # distance of 11.6 dB where zero fill scores 33.3 dB.
    mask = np.repeat(covered, SAMPLES_PER_FRAME)
    assert segmental_snr(clean[mask], output[mask]) > 30.0
    assert segmental_snr(clean[mask], output[mask]) > segmental_snr(clean[mask], zero_filled[mask])
    lost_frames = [
        index_of(frame)
        for frame in played
        if frame.kind is CONCEALED and frame.timestamp is not None and index_of(frame) < frames_sent
    ]
    lost_mask = np.zeros(frames_sent, dtype=bool)
    lost_mask[lost_frames] = True
    lost_mask = np.repeat(lost_mask, SAMPLES_PER_FRAME)
    assert segmental_snr(clean[lost_mask], output[lost_mask]) > 1.0
    assert log_spectral_distance(clean[lost_mask], output[lost_mask]) < 14.0
    assert log_spectral_distance(clean[lost_mask], zero_filled[lost_mask]) > 25.0


# -- timeline ------------------------------------------------------------------------------------


def test_clean_stream_is_bit_exact_after_the_start_delay() -> None:
    payload = speech_frames(100)
    clean = g711.decode(payload, "PCMU").reshape(-1, SAMPLES_PER_FRAME)
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, steady(packetise(payload), 10.0), 10.0, 100)]
    # First packet at 10.03; playout starts once 60 ms have passed: ticks 10.00-10.08 are silent.
    assert [frame.kind for frame in out[:5]] == [SILENCE] * 5
    assert all(frame.timestamp is None and not frame.samples.any() for frame in out[:5])
    assert all(frame.kind is VOICE for frame in out[5:])
    for frame in out[5:]:
        np.testing.assert_array_equal(frame.samples, clean[index_of(frame)])
    assert set(ts_steps(out)) == {160}
    stats = buffer.stats
    assert (stats.lost, stats.late, stats.duplicates, stats.reordered) == (0, 0, 0, 0)
    assert buffer.playing and buffer.ssrc == 0x1234


def test_silence_before_the_first_packet() -> None:
    buffer = JitterBuffer()
    for n in range(50):
        frame = buffer.pop(n * TICK)
        assert frame.kind is SILENCE and frame.timestamp is None and not frame.samples.any()
    assert not buffer.playing


def test_sequence_and_timestamp_wraparound() -> None:
    payload = speech_frames(300)
    clean = g711.decode(payload, "PCMU").reshape(-1, SAMPLES_PER_FRAME)
    ts0 = 2**32 - 160 * 100  # the timestamp wraps after 100 packets, the sequence after 36
    packets = packetise(payload, seq=65500, ts=ts0)
    network = Network(seed=5, jitter=0.010, reorder=0.05)
    arrivals = network.deliver(packets, [i * TICK for i in range(300)])
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, arrivals, 0.0, 305)]
    playing = [frame for frame in out if frame.timestamp is not None]
    assert set(ts_steps(playing)) <= {160, 320}
    for frame in playing:
        index = index_of(frame, ts0)
        if frame.kind is VOICE and index < 300:
            np.testing.assert_array_equal(frame.samples, clean[index])
    stats = buffer.stats
    assert stats.reordered > 0 and stats.resyncs == 0 and stats.duplicates == 0
    assert stats.lost == stats.late + 3 * (out[-1].kind is not VOICE)  # only late ones (and the end)
    assert sum(frame.kind is VOICE for frame in playing) >= 280


def test_duplicates_only() -> None:
    payload = speech_frames(200)
    clean = g711.decode(payload, "PCMU").reshape(-1, SAMPLES_PER_FRAME)
    packets = packetise(payload)
    arrivals = steady(packets, 0.0) + steady(packets, 0.0, delay=0.035)
    arrivals += [(arrival + 0.5, packet) for arrival, packet in arrivals[::3]]  # and some, way late
    arrivals.sort(key=lambda item: item[0])
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, arrivals, 0.0, 200)]
    # Each packet arrives on time once, then once or twice more.
    pushed = [packet for arrival, packet in arrivals if arrival <= 199 * TICK]
    assert buffer.stats.received == len(pushed)
    assert buffer.stats.duplicates == len(pushed) - len({packet.sequence_number for packet in pushed}) > 250
    assert buffer.stats.lost == buffer.stats.late == 0
    for frame in out:
        if frame.timestamp is not None:
            assert frame.kind is VOICE
            np.testing.assert_array_equal(frame.samples, clean[index_of(frame)])


def test_late_packet_is_counted_and_its_frame_concealed() -> None:
    payload = speech_frames(60)
    packets = packetise(payload)
    arrivals = steady(packets, 0.0)
    arrivals[30] = (arrivals[30][0] + 0.3, packets[30])  # 300 ms late: far past its deadline
    arrivals.sort(key=lambda item: item[0])
    buffer = JitterBuffer(start_delay_ms=40)
    out = {index_of(frame): frame for _, frame in run(buffer, arrivals, 0.0, 60) if frame.timestamp}
    assert out[30].kind is CONCEALED and out[29].kind is VOICE and out[31].kind is VOICE
    assert buffer.stats.late == 1 and buffer.stats.lost == 1 and buffer.stats.reordered == 1


@pytest.mark.parametrize("samples", [80, 160, 240, 320, 480])
def test_packet_sizes_from_10_to_60_ms(samples: int) -> None:
    frames = 150
    payload = speech_frames(frames, "PCMA")
    clean = g711.decode(payload, "PCMA").reshape(-1, SAMPLES_PER_FRAME)
    packets = packetise(payload, samples=samples, pt=8)
    buffer = JitterBuffer("PCMA")
    out = run(buffer, steady(packets, 0.0, every=samples / 8000), 0.0, frames)
    voiced = [frame for _, frame in out if frame.kind is VOICE]
    assert len(voiced) >= frames - 12
    for frame in voiced:
        np.testing.assert_array_equal(frame.samples, clean[index_of(frame)])
    assert buffer.stats.lost == 0 and buffer.stats.late == 0


def test_30_ms_packets_with_loss_conceal_only_what_is_missing() -> None:
    frames = 300
    payload = speech_frames(frames)
    clean = g711.decode(payload, "PCMU").reshape(-1, SAMPLES_PER_FRAME)
    packets = packetise(payload, samples=240)
    network = Network(seed=9, loss=0.05, jitter=0.005)
    arrivals = network.deliver(packets, [i * 0.03 for i in range(len(packets))])
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, arrivals, 0.0, frames)]
    # Packet k holds samples [240k, 240k + 240): frame i needs packets 240·i // 240 .. (160·i + 159) // 240.
    for frame in out:
        if frame.timestamp is None:
            continue
        index = index_of(frame)
        needed = {160 * index // 240, (160 * index + 159) // 240}
        if needed & network.lost:
            assert frame.kind is CONCEALED
        else:
            assert frame.kind is VOICE
            if frame.samples[0] == clean[index][0]:  # not cross-faded out of a concealment
                np.testing.assert_array_equal(frame.samples, clean[index])
    assert network.lost and buffer.stats.late == 0
    assert set(ts_steps(out)) <= {160, 320}


# -- re-anchoring ---------------------------------------------------------------------------------


def test_ssrc_change_mid_stream_reanchors_on_the_new_source() -> None:
    first = packetise(speech_frames(100), ssrc=0xAAAA)
    # The new source (a media server stepping in) starts its own random seq and ts bases.
    second = packetise(speech_frames(100), ssrc=0xBBBB, seq=40000, ts=3_000_000_000)
    arrivals = steady(first, 0.0) + steady(second, 2.0)
    arrivals.append((2.1, first[-1]))  # a straggler from the old source, after the switch
    arrivals.sort(key=lambda item: item[0])
    buffer = JitterBuffer()
    events: list[SourceChanged] = []
    out: list[AudioFrame] = []
    pending = iter(arrivals)
    upcoming = next(pending, None)
    for n in range(200):
        now = n * TICK
        while upcoming is not None and upcoming[0] <= now:
            events.extend(buffer.push(upcoming[1], upcoming[0]))
            upcoming = next(pending, None)
        out.append(buffer.pop(now))
    assert events == [SourceChanged(None, 0xAAAA), SourceChanged(0xAAAA, 0xBBBB)]
    assert buffer.source_changes == buffer.stats.source_changes == 1
    assert buffer.ssrc == 0xBBBB and buffer.stats.lost == 0 and buffer.stats.late == 1
    new = [frame for frame in out if frame.timestamp is not None and frame.timestamp >= 3_000_000_000]
    assert len(new) >= 95 and all(frame.kind is VOICE for frame in new)
    assert set(ts_steps(new)) == {160}
    # The new stream starts playing the target delay after its first packet, as the first did.
    first_new = next(n for n, frame in enumerate(out) if frame is new[0])
    first_old = next(n for n, frame in enumerate(out) if frame.timestamp is not None)
    assert first_new - 100 in (first_old - 1, first_old)


def talkspurts(gap_ticks: int, ts_jump: int, *, marker: bool = True) -> list[tuple[float, RtpPacket]]:
    """Two 1 s talkspurts with ``gap_ticks`` of DTX between them; sequence numbers run on."""
    payload = speech_frames(100)
    first = packetise(payload[:8000])
    second = [
        RtpPacket(
            0,
            1050 + i,
            50000 + 50 * 160 + ts_jump + i * 160,
            0x1234,
            payload[8000 + i * 160 :][:160],
            marker=marker and i == 0,
        )
        for i in range(50)
    ]
    return steady(first, 0.0) + steady(second, (50 + gap_ticks) * TICK)


@pytest.mark.parametrize("ts_jump", [100 * 160, 1234567], ids=["timestamps-follow-time", "arbitrary-jump"])
def test_marker_after_dtx_reanchors_and_the_gap_is_not_loss(ts_jump: int) -> None:
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, talkspurts(100, ts_jump), 0.0, 220)]
    kinds = [frame.kind for frame in out]
    first_voice = kinds.index(VOICE)
    assert kinds[first_voice : first_voice + 50] == [VOICE] * 50
    gap = kinds[first_voice + 50 :]
    # The first talkspurt's end: concealed for 60 ms, then silence, no endless concealment.
    assert gap[:3] == [CONCEALED] * 3 and gap[3] is SILENCE
    second_voice = first_voice + 50 + gap.index(VOICE)
    assert all(kind is SILENCE for kind in kinds[first_voice + 53 : second_voice])
    assert kinds[second_voice : second_voice + 50] == [VOICE] * 50
    # Re-anchored at the target delay: as the first talkspurt's (70 ms), or a tick less as
    # the target has come down from its 60 ms start meanwhile.
    assert second_voice - first_voice in (149, 150)
    stats = buffer.stats
    # The 3 frames concealed in the gap were DTX after all; those at the end are still open.
    assert stats.resyncs == 1 and stats.lost == 3
    assert stats.late == 0 and stats.reordered == 0
    second = [frame for frame in out[second_voice:] if frame.kind is VOICE]
    assert set(ts_steps(second)) == {160}
    assert second[0].timestamp == (50000 + 50 * 160 + ts_jump) & 0xFFFFFFFF


def test_long_gap_without_marker_goes_silent_then_resumes() -> None:
    # The sender stops for 2 s (hold, or DTX without the marker) with its timestamps
    # following real time, then carries on.
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, talkspurts(100, 100 * 160, marker=False), 0.0, 220)]
    kinds = [frame.kind for frame in out]
    first_voice = kinds.index(VOICE)
    gap = kinds[first_voice + 50 : first_voice + 150]
    assert gap[:3] == [CONCEALED] * 3 and set(gap[3:]) == {SILENCE}
    assert kinds[first_voice + 150 : first_voice + 200] == [VOICE] * 50  # on its old timeline
    # Sequence numbers ran on: the gap was not loss (the 3 lost frames are at the very end).
    assert buffer.stats.resyncs == 0 and buffer.stats.lost == 3
    silent = out[first_voice + 60]
    assert silent.timestamp is not None and not silent.samples.any()


def test_resume_after_hold_with_frozen_timestamps_reanchors() -> None:
    # Some PBXs stop their RTP clock during hold: after 2 s the timestamps carry on from
    # where they stopped, far behind the play position. Once silent, the buffer restarts there.
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, talkspurts(100, 0, marker=False), 0.0, 220)]
    kinds = [frame.kind for frame in out]
    first_voice = kinds.index(VOICE)
    resumed = first_voice + 50 + kinds[first_voice + 50 :].index(VOICE)
    assert resumed - first_voice in (149, 150)
    assert kinds[resumed : resumed + 50] == [VOICE] * 50
    assert buffer.stats.resyncs == 1 and buffer.stats.late == 0 and buffer.stats.lost == 3


def test_timestamp_jump_without_marker_mid_stream_reanchors_after_two_packets() -> None:
    payload = speech_frames(100)
    packets = packetise(payload)
    jumped = [dataclasses_replace(p, timestamp=(p.timestamp + 80_000_000) & 0xFFFFFFFF) for p in packets[50:]]
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, steady(packets[:50] + jumped, 0.0), 0.0, 100)]
    assert buffer.stats.resyncs == 1
    assert buffer.stats.late == 0  # the first far packet was held, then played
    played_after = [
        frame for frame in out if frame.timestamp is not None and index_of(frame) >= 80_000_000 // 160
    ]
    assert len(played_after) >= 40
    assert all(frame.kind is VOICE for frame in played_after)


# -- delay adaptation and clock drift -------------------------------------------------------------


@pytest.mark.parametrize(("ppm", "drops", "inserts"), [(500, (12, 20), (0, 1)), (-500, (0, 2), (11, 19))])
def test_sender_clock_drift_over_a_10_minute_call(
    ppm: int, drops: tuple[int, int], inserts: tuple[int, int]
) -> None:
    # The sender's 8 kHz clock runs 500 ppm fast (or slow): over 10 minutes it sends 300 ms
    # more (less) audio than we play. Delay must stay bounded by dropping (inserting) ~15 frames.
    frames = 30_000
    packets = packetise(speech_frames(frames))
    network = Network(seed=7, jitter=0.004, loss=0.01)
    arrivals = network.deliver(packets, [i * TICK / (1 + ppm * 1e-6) for i in range(frames)])
    buffer = JitterBuffer()
    delays: list[float] = []
    pending = iter(arrivals)
    upcoming = next(pending, None)
    out: list[AudioFrame] = []
    for n in range(frames - 400):
        now = n * TICK
        while upcoming is not None and upcoming[0] <= now:
            buffer.push(upcoming[1], upcoming[0])
            upcoming = next(pending, None)
        out.append(buffer.pop(now))
        if n >= 50:
            delays.append(buffer.stats.delay_ms)
    stats = buffer.stats
    # Measured: +500 ppm: 16 dropped, 0 inserted, delay 29-71 ms; -500 ppm: 1 dropped (the
    # start), 13 inserted, delay 15-69 ms, 27 of 29,300 packets late (as the delay creeps up).
    assert drops[0] <= stats.frames_dropped_for_drift <= drops[1]
    assert inserts[0] <= stats.frames_inserted <= inserts[1]
    assert min(delays) >= 10 and max(delays) <= 80
    assert stats.late < 0.002 * frames
    assert stats.resyncs == 0
    assert set(ts_steps(out)) <= {160, 320}
    assert len(out) == frames - 400


def test_target_delay_rises_under_jitter_and_falls_back_slowly() -> None:
    # 10 s calm (2 ms mean jitter), 20 s rough (20 ms mean, 99th percentile 66 ms), 60 s calm.
    frames = 90 * 50
    packets = packetise(speech_frames(frames))
    rng = np.random.default_rng(3)
    arrivals = []
    for i, packet in enumerate(packets):
        mean = 0.020 if 500 <= i < 1500 else 0.002
        arrivals.append((i * TICK + 0.03 + rng.gamma(2.0, mean / 2), packet))
    arrivals.sort(key=lambda item: item[0])
    buffer = JitterBuffer()
    target: dict[int, float] = {}
    pending = iter(arrivals)
    upcoming = next(pending, None)
    for n in range(frames):
        now = n * TICK
        while upcoming is not None and upcoming[0] <= now:
            buffer.push(upcoming[1], upcoming[0])
            upcoming = next(pending, None)
        buffer.pop(now)
        if n % 50 == 0:
            target[n // 50] = buffer.stats.target_delay_ms
    # Measured: 34 ms at 10 s; 54 at 17 s; 60 at 32 s (2 s after the calm returns); 50 at
    # 36 s; 38 at 40 s; 25 at 50 s; 20.1 at 89 s; 14 packets late.
    assert target[10] < 40
    assert target[17] > target[10] + 12  # up within a few seconds of the jitter starting
    assert max(target[n] for n in range(12, 31)) <= 70
    assert target[32] > 50  # still high 2 s after the network calmed down...
    assert target[36] > target[40] > target[50] > target[89]  # ...then comes down gradually
    assert target[89] < 22
    assert buffer.stats.late < 20  # about 1 % of the 1000 rough packets, while the target rises


def test_set_codec_transcodes_what_is_buffered() -> None:
    payload = speech_frames(20, "PCMA")
    clean = g711.decode(payload, "PCMA").reshape(-1, SAMPLES_PER_FRAME)
    buffer = JitterBuffer("pcma")
    assert buffer.codec == "PCMA"
    for arrival, packet in steady(packetise(payload, pt=8), 0.0):
        buffer.push(packet, arrival)
    buffer.set_codec("PCMU")
    assert buffer.codec == "PCMU"
    out = [buffer.pop(0.1 + n * TICK) for n in range(5)]
    assert out[0].kind is VOICE
    for frame in out:
        error = np.abs(frame.samples.astype(np.int32) - clean[index_of(frame)].astype(np.int32))
        assert error.max() <= 64  # μ-law re-quantisation of A-law levels
    with pytest.raises(ValueError, match="G729"):
        buffer.set_codec("G729")


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="min_delay_ms"):
        JitterBuffer(min_delay_ms=100, start_delay_ms=50)
    with pytest.raises(ValueError, match="max_delay_ms"):
        JitterBuffer(max_delay_ms=1000)
    with pytest.raises(ValueError, match="quantile"):
        JitterBuffer(quantile=1.0)
    with pytest.raises(ValueError, match="PCMX"):
        JitterBuffer("PCMX")


# -- concealment ----------------------------------------------------------------------------------


def periodic(period: int, samples: int = 4000) -> Pcm:
    t = np.arange(samples)
    wave_ = sum(amp * np.sin(2 * np.pi * k * t / period + k) for k, amp in ((1, 4000), (2, 2000), (3, 800)))
    return np.rint(wave_).astype(np.int16)


@pytest.mark.parametrize("period", [20, 37, 64, 100, 120])
def test_concealment_continues_a_periodic_signal(period: int) -> None:
    signal = periodic(period)
    concealer = Concealer()
    for start in range(0, 1600, 160):
        concealer.good(signal[start : start + 160].copy())
    out = concealer.conceal(80)
    assert concealer.pitch % period == 0  # the period or a multiple of it (still periodic)
    # The first 10 ms play unattenuated: a periodic signal is continued exactly.
    np.testing.assert_allclose(out, signal[1600:1680], atol=1)


def test_concealment_fades_to_silence_by_60_ms_and_resumes_smoothly() -> None:
    signal = periodic(64)
    concealer = Concealer()
    for start in range(0, 1600, 160):
        concealer.good(signal[start : start + 160].copy())
    peak = int(np.abs(signal).max())
    blocks = [concealer.conceal(80) for _ in range(8)]  # 80 ms
    levels = [int(np.abs(block).max()) for block in blocks]
    assert levels[0] >= 0.95 * peak  # 10 ms at full level, then -20 % per 10 ms
    assert 0.8 * peak <= levels[1] <= peak
    assert levels[1] > levels[2] > levels[3] > levels[4] > levels[5] > 0
    assert levels[6] == levels[7] == 0  # silent from 60 ms
    assert concealer.concealing
    resumed = concealer.good(signal[2240:2400].copy())
    assert not concealer.concealing
    # Fade-in from silence over the first 10 ms, then the real signal untouched.
    assert abs(int(resumed[0])) < 0.05 * peak
    np.testing.assert_array_equal(resumed[80:], signal[2320:2400])


def test_concealment_join_has_no_step() -> None:
    speech = speech_8k()[8000:9600]
    concealer = Concealer()
    for start in range(0, 1600, 160):
        concealer.good(speech[start : start + 160].copy())
    out = concealer.conceal(160)
    typical_step = np.abs(np.diff(speech.astype(np.int32))).max()
    assert abs(int(out[0]) - int(speech[-1])) <= typical_step


def test_short_dtx_gap_with_audio_still_queued_plays_as_silence() -> None:
    # A 40 ms pause, shorter than the buffered delay: the marker packet arrives before the
    # first talkspurt has finished playing, so the gap plays as silence on the same timeline.
    buffer = JitterBuffer()
    out = [frame for _, frame in run(buffer, talkspurts(2, 2 * 160), 0.0, 107)]  # to the last packet
    kinds = [frame.kind for frame in out]
    first_voice = kinds.index(VOICE)
    assert kinds[first_voice : first_voice + 50] == [VOICE] * 50
    assert kinds[first_voice + 50 : first_voice + 52] == [SILENCE] * 2
    assert [frame.timestamp for frame in out[first_voice + 50 : first_voice + 52]] == [58000, 58160]
    assert kinds[first_voice + 52 : first_voice + 102] == [VOICE] * 50
    assert buffer.stats.resyncs == 0 and buffer.stats.lost == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # ticks before this packet
            st.sampled_from([1, 1, 1, 2, 0, -1, -5, 3000]),  # sequence number step
            st.sampled_from([1, 1, 0, 2, -1, -3, 40, 2**31 // 160, -(2**20)]),  # timestamp step (frames)
            st.sampled_from([0, 40, 80, 160, 160, 240, 333, 480]),  # payload bytes
            st.booleans(),  # marker
            st.sampled_from([1, 1, 1, 2]),  # SSRC
        ),
        max_size=80,
    )
)
def test_any_packet_sequence_yields_one_frame_per_tick(
    steps: list[tuple[int, int, int, int, bool, int]],
) -> None:
    buffer = JitterBuffer()
    now = 0.0
    seq = ts = 0
    for ticks, seq_step, ts_step, size, marker, ssrc in steps:
        for _ in range(ticks):
            frame = buffer.pop(now)
            assert frame.samples.shape == (SAMPLES_PER_FRAME,) and frame.samples.dtype == np.int16
            now += TICK
        seq = (seq + seq_step) & 0xFFFF
        ts = (ts + ts_step * SAMPLES_PER_FRAME) & 0xFFFFFFFF
        events = buffer.push(RtpPacket(0, seq, ts, ssrc, b"\x55" * size, marker), now)
        assert all(isinstance(event, SourceChanged) for event in events)
    for _ in range(60):
        assert buffer.pop(now).samples.shape == (SAMPLES_PER_FRAME,)
        now += TICK
    stats = buffer.stats
    assert min(stats.lost, stats.late, stats.duplicates, stats.received) >= 0


def test_newest_is_the_latest_arrived_frame_ahead_of_the_play_position() -> None:
    payload = speech_frames(200)
    clean = g711.decode(payload, "PCMU").reshape(-1, SAMPLES_PER_FRAME)
    packets = packetise(payload)
    network = Network(seed=3, jitter=0.030)
    arrivals = network.deliver(packets, [10.0 + i * TICK for i in range(len(packets))])
    buffer = JitterBuffer()
    assert buffer.newest() is None  # nothing arrived yet
    pending = iter(arrivals)
    upcoming = next(pending, None)
    ahead_ms = []
    for n in range(220):
        now = 10.0 + n * TICK
        while upcoming is not None and upcoming[0] <= now:
            buffer.push(upcoming[1], upcoming[0])
            upcoming = next(pending, None)
        newest = buffer.newest()
        played = buffer.pop(now)
        if newest is None:
            continue
        assert newest.kind is VOICE
        index = index_of(newest)
        # The newest packet that has arrived, exactly as sent, and not played yet.
        np.testing.assert_array_equal(newest.samples, clean[index])
        assert index == max((p.timestamp - 50000) // SAMPLES_PER_FRAME for t, p in arrivals if t <= now)
        if played.timestamp is not None and newest.timestamp is not None:
            ahead = (newest.timestamp - played.timestamp) & 0xFFFFFFFF
            assert ahead < 0x80000000  # never behind what plays
            ahead_ms.append(ahead / 8)
    # Under 30 ms mean jitter the buffer plays ~100 ms behind the newest arrival: that is the head start.
    assert ahead_ms and 40 <= float(np.median(ahead_ms)) <= 160
    # Everything played: nothing is ahead any more.
    assert buffer.newest() is None
