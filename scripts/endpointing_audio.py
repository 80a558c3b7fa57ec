"""The audio scripts/eval_endpointing.py measures on: human recordings as telephone calls, clean
and under a real restaurant's background, with each utterance's ground truth.

A call is the recording at 8 kHz with ``LEAD_S`` of its own room tone before it and ``TAIL_S`` after
it, through µ-law. The room tone is Gaussian noise shaped to the spectrum and level of the
recording's own background, joined by 20 ms equal-power crossfades: the committed fixtures pad with
white line noise instead, and the step from the room's coloured background to it, 0.15-0.7 s after
every end, is something Silero at 0.5 calls speech for up to ~200 ms; a real line has no such step (the
fixtures are measured too, as they are, to show it). The noisy calls add the restaurant
recording (``fixtures/noise/restaurant-ambience.wav``, a room of people talking, public domain)
over the whole call at an SNR defined as ``scripts/noisy_fixtures.py`` does: speech over background
power across the turn's true speech, at 8 kHz, before G.711. The truth is each turn's ``speech_start_s`` /
``speech_end_s`` in ``fixtures/manifest.json`` (the clean 16 kHz source's energy envelope).

Deterministic: every random draw comes from a ``RandomState`` seeded by a name.
"""

from __future__ import annotations

import json
import math
import wave
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm
from sipagent.rtp.g711 import decode, ulaw_decode, ulaw_encode
from sipagent.voice.resample import resample_float

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SPEECH = ROOT.parent / "shared" / "speech"
NOISE = FIXTURES / "noise" / "restaurant-ambience.wav"
#: The human recordings with a ground truth (numbers.raw has no transcript but has its truth).
CLIPS = (
    "librivox-0870",
    "librivox-0880",
    "librivox-0890",
    "cards-001",
    "cards-002",
    "cards-003",
    "goforward",
    "numbers",
)
SNRS = (20.0, 15.0, 10.0)
#: Room tone before and after each recording in a call (seconds).
LEAD_S = 0.5
TAIL_S = 1.5

Float = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Utterance:
    """One recording as a call's audio (see :func:`load_utterance`) and its truth, in call time."""

    clip: str
    audio: Pcm
    start: float
    end: float
    #: Where the recording starts in the call audio.
    speech_at: float


@dataclass(frozen=True)
class Case:
    """Audio to run a VAD over, with the truth (start = end = inf: no speech at all)."""

    name: str
    condition: str
    audio: Pcm
    start: float
    end: float


def manifest() -> dict[str, Any]:
    """The fixtures' manifest entries by file name."""
    entries = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    return {entry["file"]: entry for entry in entries}


def capture_audio(path: Path) -> Pcm:
    """The caller's audio in a capture, decoded, one 20 ms frame per packet (checked contiguous)."""
    leg = load_caller_leg(path)
    first = leg.packets[0].packet.timestamp
    for i, timed in enumerate(leg.packets):
        if (timed.packet.timestamp - first) % (1 << 32) != i * SAMPLES_PER_FRAME:
            raise SystemExit(f"{path.name}: packet {i} is not contiguous; this script assumes no gaps")
    return np.concatenate([decode(timed.packet.payload, leg.codec) for timed in leg.packets])


def seeded(*key: object) -> np.random.RandomState:
    """A RandomState seeded by a name (numpy's legacy streams never change)."""
    return np.random.RandomState(zlib.crc32("/".join(map(str, key)).encode()))


def source(clip: str) -> Float:
    """The clean 16 kHz recording at 8 kHz (int16 units, float)."""
    wav_path = SPEECH / f"{clip}.wav"
    if wav_path.exists():
        with wave.open(str(wav_path)) as wav:
            rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    else:
        rate, raw = 16000, (SPEECH / f"{clip}.raw").read_bytes()
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32)
    return resample_float(x, rate, SAMPLE_RATE).astype(np.float64)


def room_tone(x: Float, quiet: npt.NDArray[np.bool_], n: int, rng: np.random.RandomState) -> Float:
    """``n`` samples of Gaussian noise with the spectrum and level of the recording's own background
    (the quieter half of its 32 ms windows outside the speech)."""
    hop, size = 128, 256
    windows = np.array([x[i : i + size] for i in range(0, len(x) - size, hop) if quiet[i : i + size].all()])
    energy = np.mean(windows * windows, axis=1)
    windows = windows[energy <= np.median(energy)]
    psd = np.mean(np.abs(np.fft.rfft(windows * np.hanning(size), axis=1)) ** 2, axis=0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    gain = np.sqrt(np.interp(np.linspace(0, 1, len(spectrum)), np.linspace(0, 1, len(psd)), psd))
    y = np.fft.irfft(spectrum * gain, n)
    return y * math.sqrt(float(np.mean(windows * windows)) / float(np.mean(y * y)))


def load_utterance(clip: str, entries: dict[str, Any]) -> Utterance:
    """The recording as a call: ``LEAD_S`` of its own room tone, the recording, ``TAIL_S`` of room
    tone, joined by 20 ms equal-power crossfades; through µ-law. The truth is the manifest's.

    Not the committed fixture's audio: there the recording is padded with white line noise, and the
    step from the room's coloured background to it, 0.15-0.7 s after every end, is something Silero
    at 0.5 calls speech for up to ~200 ms (the fixtures' rows show it); a real line has no such step.
    """
    (turn,) = entries[f"speech-{clip}.pcap"]["turns"]
    x = source(clip)
    at = turn["speech_at_s"][0]
    start, end = turn["speech_start_s"] - at, turn["speech_end_s"] - at
    t = np.arange(len(x)) / SAMPLE_RATE
    quiet = (t < start - 0.05) | (t > end + 0.1)
    rng = seeded("room", clip)
    fade = SAMPLES_PER_FRAME
    lead = room_tone(x, quiet, round(LEAD_S * SAMPLE_RATE) + fade, rng)
    tail = room_tone(x, quiet, round(TAIL_S * SAMPLE_RATE) + fade, rng)
    up = np.sin(np.linspace(0, np.pi / 2, fade))
    down = up[::-1]
    audio = np.concatenate(
        [
            lead[:-fade],
            lead[-fade:] * down + x[:fade] * up,
            x[fade:-fade],
            x[-fade:] * down + tail[:fade] * up,
            tail[fade:],
        ]
    )
    audio = audio[: len(audio) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME]
    return Utterance(clip, on_the_line(audio), start + LEAD_S, end + LEAD_S, LEAD_S)


@cache
def background() -> Float:
    """The background recording at 8 kHz (int16 units, float)."""
    with wave.open(str(NOISE)) as wav:
        rate = wav.getframerate()
        x = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32)
    return resample_float(x, rate, SAMPLE_RATE).astype(np.float64)


def noise_excerpt(length: int, *key: object) -> Float:
    """``length`` samples of the background recording from a seeded offset (never its first/last 50 ms)."""
    bg = background()
    edge = SAMPLE_RATE // 20
    offset = int(seeded(*key).randint(edge, len(bg) - edge - length))
    return bg[offset : offset + length]


def snr_gain(clean: Pcm, noise: Float, start: float, end: float, snr_db: float) -> float:
    """The noise gain that puts speech over noise at ``snr_db`` across [start, end)."""
    a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
    speech = clean[a:b].astype(np.float64)
    p_speech, p_noise = float(np.mean(speech * speech)), float(np.mean(noise[a:b] ** 2))
    return math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))


def on_the_line(x: Float) -> Pcm:
    """Samples through µ-law and back, clipped to 16 bits first."""
    pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(pcm))


def mixed(utt: Utterance, snr_db: float, draw: int) -> tuple[Pcm, Float, float]:
    """The utterance with the restaurant background at ``snr_db``; also the excerpt and its gain."""
    noise = noise_excerpt(len(utt.audio), "mix", utt.clip, snr_db, draw)
    gain = snr_gain(utt.audio, noise, utt.start, utt.end, snr_db)
    return on_the_line(utt.audio + gain * noise), noise, gain


def build_cases(utts: Sequence[Utterance], draws: int, entries: dict[str, Any]) -> list[Case]:
    """Clean, each SNR (``draws`` excerpts each), noise only, and the committed fixtures as they are."""
    cases = [Case(u.clip, "clean", u.audio, u.start, u.end) for u in utts]
    gains: dict[float, list[float]] = {snr: [] for snr in SNRS}
    for snr in SNRS:
        for u in utts:
            for draw in range(draws):
                audio, _, gain = mixed(u, snr, draw)
                gains[snr].append(gain)
                cases.append(Case(f"{u.clip}#{draw}", f"{snr:.0f} dB", audio, u.start, u.end))
    line = seeded("line").standard_normal(len(background())) * 32768 * 10 ** (-47 / 20)
    for snr in SNRS:
        gain = float(np.median(gains[snr]))
        audio = on_the_line(line + gain * background())
        cases.append(Case("pub", f"noise only ({snr:.0f} dB level)", audio, math.inf, math.inf))
    for name, entry in sorted(entries.items()):
        if (
            name.startswith("speech-")
            and name.removesuffix(".pcap").split("-", 1)[1].removeprefix("noisy-") in CLIPS
        ):
            (turn,) = entry["turns"]
            condition = "fixtures, noisy" if "snr_db" in entry else "fixtures, clean"
            audio = capture_audio(FIXTURES / name)
            cases.append(Case(name, condition, audio, turn["speech_start_s"], turn["speech_end_s"]))
    return cases


def frames(audio: Pcm) -> list[Pcm]:
    """The audio as whole 20 ms frames."""
    n = len(audio) // SAMPLES_PER_FRAME
    return [audio[i * SAMPLES_PER_FRAME : (i + 1) * SAMPLES_PER_FRAME] for i in range(n)]
