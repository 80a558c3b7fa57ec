"""Test audio: WAV files for baresip, G.711 RTP pcaps for sipp, and measurements of what came back.

Everything here is plain Python plus numpy: the tone WAV that baresip plays as its microphone
(8 kHz mono 16-bit), the PCMU pcap that sipp's ``play_pcap_audio`` sends, and ``wav_stats`` that tells
whether a recording holds real audio (duration, RMS, dominant frequency) rather than silence.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from peers.pcap import write_udp_pcap

SAMPLE_RATE = 8000
PTIME_MS = 20
SAMPLES_PER_PACKET = SAMPLE_RATE * PTIME_MS // 1000  # 160
PT_PCMU = 0
PT_PCMA = 8

# The tone sequence used by default: distinct frequencies so an echo can be recognised.
DEFAULT_TONES_HZ: tuple[float, ...] = (440.0, 660.0, 880.0, 550.0)


# --- G.711 (ITU-T G.711, the classic Sun reference algorithm) ------------------------------------------


def _ulaw_encode_sample(sample: int) -> int:
    value = sample >> 2  # 14-bit magnitude, as in the reference implementation
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + 0x21
    segment = 0
    while segment < 8 and value > (0x40 << segment) - 1:
        segment += 1
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _ulaw_decode_byte(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


def _alaw_encode_sample(sample: int) -> int:
    sign = 0x00 if sample < 0 else 0x80
    magnitude = min(-sample - 1 if sample < 0 else sample, 32767) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_decode_byte(byte: int) -> int:
    byte ^= 0x55
    exponent, mantissa = (byte >> 4) & 0x07, byte & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if byte & 0x80 else -magnitude


_ULAW_TABLE = np.array([_ulaw_decode_byte(b) for b in range(256)], dtype=np.int16)
_ALAW_TABLE = np.array([_alaw_decode_byte(b) for b in range(256)], dtype=np.int16)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode 16-bit linear PCM to G.711 μ-law bytes."""
    return bytes(_ulaw_encode_sample(int(s)) for s in pcm)


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode G.711 μ-law bytes to 16-bit linear PCM."""
    return _ULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode 16-bit linear PCM to G.711 A-law bytes."""
    return bytes(_alaw_encode_sample(int(s)) for s in pcm)


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode G.711 A-law bytes to 16-bit linear PCM."""
    return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


# --- signals -------------------------------------------------------------------------------------------


def tone_sequence(
    seconds: float,
    *,
    tones_hz: Sequence[float] = DEFAULT_TONES_HZ,
    amplitude: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
) -> npt.NDArray[np.int16]:
    """A signal cycling through ``tones_hz``, each held for 0.5 s, ``amplitude`` of full scale."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    segment = (t // 0.5).astype(np.int64) % len(tones_hz)
    freqs = np.asarray(tones_hz, dtype=np.float64)[segment]
    # Integrate the frequency so segment boundaries have no phase jumps (no clicks).
    phase = 2 * np.pi * np.cumsum(freqs) / sample_rate
    return (np.sin(phase) * amplitude * 32767).astype(np.int16)


def write_wav(path: Path, pcm: npt.NDArray[np.int16], *, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit little-endian PCM as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.astype("<i2").tobytes())
    return path


def write_test_wav(
    path: Path,
    seconds: float = 3.0,
    *,
    tones_hz: Sequence[float] = DEFAULT_TONES_HZ,
    amplitude: float = 0.3,
) -> Path:
    """Write the standard test signal (8 kHz mono 16-bit tone sequence) to ``path``."""
    return write_wav(path, tone_sequence(seconds, tones_hz=tones_hz, amplitude=amplitude))


def read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """Read a 16-bit PCM WAV; returns (first channel samples, sample rate)."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit WAV is supported, got {8 * src.getsampwidth()}-bit")
        channels, rate = src.getnchannels(), src.getframerate()
        frames = src.readframes(src.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.int16)
    return samples[::channels], rate


@dataclass(frozen=True)
class WavStats:
    """What a recording holds: length, loudness and where the energy is."""

    sample_rate: int
    duration_s: float
    rms: float  # over the whole file, in 16-bit sample units
    peak: int
    active_s: float  # total length of 20 ms frames whose RMS exceeds the silence threshold
    dominant_hz: float  # strongest frequency over the active frames (0 when silent)

    @property
    def rms_dbfs(self) -> float:
        """RMS relative to full scale in dB (-inf for digital silence)."""
        return 20 * math.log10(self.rms / 32768) if self.rms > 0 else float("-inf")


def pcm_stats(samples: npt.NDArray[np.int16], sample_rate: int, *, silence_rms: float = 100.0) -> WavStats:
    """Measure ``samples``; frames with RMS above ``silence_rms`` count as active."""
    x = samples.astype(np.float64)
    duration = len(x) / sample_rate if sample_rate else 0.0
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    frame = max(1, sample_rate * PTIME_MS // 1000)
    nframes = len(x) // frame
    active = np.zeros(0, dtype=np.float64)
    active_frames = 0
    if nframes:
        frames = x[: nframes * frame].reshape(nframes, frame)
        frame_rms = np.sqrt(np.mean(frames * frames, axis=1))
        mask = frame_rms > silence_rms
        active_frames = int(mask.sum())
        active = frames[mask].reshape(-1)
    dominant = 0.0
    if len(active) >= 256:
        spectrum = np.abs(np.fft.rfft(active * np.hanning(len(active))))
        spectrum[0] = 0.0
        dominant = float(np.argmax(spectrum) * sample_rate / len(active))
    return WavStats(
        sample_rate=sample_rate,
        duration_s=duration,
        rms=rms,
        peak=int(np.max(np.abs(x))) if len(x) else 0,
        active_s=active_frames * frame / sample_rate if sample_rate else 0.0,
        dominant_hz=dominant,
    )


def wav_stats(path: Path, *, silence_rms: float = 100.0) -> WavStats:
    """Read a WAV file and measure it with :func:`pcm_stats`."""
    samples, rate = read_wav(path)
    return pcm_stats(samples, rate, silence_rms=silence_rms)


# --- RTP and pcaps for sipp ----------------------------------------------------------------------------


def rtp_packet(
    payload: bytes, *, seq: int, timestamp: int, ssrc: int, pt: int, marker: bool = False
) -> bytes:
    """Build an RTP v2 packet with no CSRCs or extensions."""
    return (
        struct.pack(
            "!BBHII",
            0x80,
            (0x80 if marker else 0) | (pt & 0x7F),
            seq & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )


def g711_rtp_stream(
    pcm: npt.NDArray[np.int16], *, pt: int = PT_PCMU, ssrc: int = 0x5AD0_0001, start: float = 1_700_000_000.0
) -> Iterator[tuple[float, bytes]]:
    """Yield ``(send_time, rtp_packet)`` for ``pcm`` packetised as 20 ms G.711 (PCMU or PCMA)."""
    encode = ulaw_encode if pt == PT_PCMU else alaw_encode
    for index in range(len(pcm) // SAMPLES_PER_PACKET):
        chunk = pcm[index * SAMPLES_PER_PACKET : (index + 1) * SAMPLES_PER_PACKET]
        packet = rtp_packet(
            encode(chunk),
            seq=1000 + index,
            timestamp=index * SAMPLES_PER_PACKET,
            ssrc=ssrc,
            pt=pt,
            marker=index == 0,
        )
        yield start + index * PTIME_MS / 1000, packet


def write_g711_pcap(path: Path, pcm: npt.NDArray[np.int16], *, pt: int = PT_PCMU) -> int:
    """Write ``pcm`` as a 20 ms G.711 RTP pcap for sipp's ``play_pcap_audio``; returns packet count.

    sipp rewrites addresses and ports when it plays the file, so the ones written here do not matter.
    """
    return write_udp_pcap(path, g711_rtp_stream(pcm, pt=pt), src=("127.0.0.1", 6000), dst=("127.0.0.1", 6002))


def write_test_pcap(path: Path, seconds: float = 3.0, *, pt: int = PT_PCMU) -> int:
    """Write the standard test tone sequence as a G.711 pcap (PCMU unless ``pt`` is 8); returns count."""
    return write_g711_pcap(path, tone_sequence(seconds), pt=pt)
