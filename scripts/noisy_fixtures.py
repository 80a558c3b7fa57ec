"""Human speech over real background noise: ``speech-noisy-<clip>``, 10 to 20 dB SNR.

Each is its clean twin ``speech-<clip>`` (the same padded 8 kHz audio, sample for sample, with the
same seeded line noise) plus an excerpt of a real recording of a restaurant's background (a room of
people talking, no intelligible words, cutlery and dishes; ``fixtures/noise/restaurant-ambience.wav``,
public domain, see its README for source and licence) over the whole call, scaled so that the
speech-to-background power ratio over the caller's speech, ``[speech_start_s, speech_end_s]`` of the
turn, is the fixture's ``snr_db``. The ratio is taken in the telephone band (both signals at 8 kHz,
before G.711), which is what a listener on the line gets.

The ground truth of the turn comes from the clean 16 kHz source, as for every speech fixture, so a
latency benchmark measures against where the caller really stopped, not where the noise lets an
endpointer think it did. Because the clean twin is in the set too, the background actually in a
capture is its audio minus the twin's: ``tests/test_fixtures.py`` measures the SNR that way.

Which part of the 16.5 s excerpt a fixture hears is drawn from a ``RandomState`` seeded by its name,
so the output is deterministic to the byte like the other fixtures.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from fixturekit import (
    LEAD_S,
    RATE,
    BuildContext,
    CallAudio,
    Fixture,
    Signal,
    dbfs,
    padded_body,
    read_source,
    resample,
    to_pcm,
    turn_record,
)

REPO = Path(__file__).resolve().parent.parent
NOISE = REPO / "fixtures" / "noise" / "restaurant-ambience.wav"
NOISE_SOURCE = (
    "fixtures/noise/restaurant-ambience.wav: a real recording of a restaurant's background (people "
    'talking, no intelligible words, dishes), "Restaurant Ambiance" by stephan, public domain: 0.1-16.6 s '
    "of coffee-shop.ogg from the Debian package blanket 0.7.0-4, channels averaged, resampled to 16 kHz "
    "(fixtures/noise/README.md)"
)
SNR_NOTE = (
    "snr_db: speech power over background power, both over the turn's [speech_start_s, speech_end_s], "
    "in the telephone band (8 kHz, before G.711); the background runs through the whole call"
)
#: The clips and their SNRs (dB): each source at 10, 15 and 20.
NOISY: tuple[tuple[str, float], ...] = (
    ("librivox-0870", 10.0),
    ("librivox-0880", 15.0),
    ("librivox-0890", 20.0),
    ("cards-001", 20.0),
    ("cards-002", 15.0),
    ("cards-003", 10.0),
)
EDGE_S = 0.05  # never the excerpt's first or last 50 ms, where resampling saw zeros beyond its ends


@cache
def background() -> Signal:
    """The whole noise excerpt at 8 kHz (resampled once per run)."""
    rate, x = read_source(NOISE)
    return resample(x, rate, RATE)


def power(x: Signal) -> float:
    """Mean power (16-bit units squared)."""
    return float(np.mean(x * x))


def noisy_builder(clip: str, snr_db: float) -> Callable[[BuildContext], CallAudio]:
    """The builder of ``speech-noisy-<clip>``."""
    name = f"speech-noisy-{clip}"

    def build(ctx: BuildContext) -> CallAudio:
        speech = ctx.speech(clip)
        # The clean twin's audio before rounding: same seed name, so the same line noise.
        body, info = padded_body(f"speech-{clip}", speech)
        turn = turn_record(ctx, clip, speech, LEAD_S)
        span = slice(round(turn["speech_start_s"] * RATE), round(turn["speech_end_s"] * RATE))
        noise = background()
        edge = round(EDGE_S * RATE)
        rng = np.random.RandomState(zlib.crc32(f"offset:{name}".encode()))
        offset = int(rng.randint(edge, len(noise) - len(body) - edge + 1))
        part = noise[offset : offset + len(body)]
        gain = math.sqrt(power(body[span]) / power(part[span]) / 10 ** (snr_db / 10))
        info = {
            "source": f"shared/speech/{ctx.path(clip).name} + fixtures/noise/{NOISE.name}",
            "transcript": ctx.transcript(clip),
            **info,
            "clean_fixture": f"speech-{clip}.pcap",
            "snr_db": snr_db,
            "snr_note": SNR_NOTE,
            "noise_source": NOISE_SOURCE,
            "noise_offset_s": round(offset / RATE, 3),
            "background_dbfs": dbfs(gain * math.sqrt(power(part))),
            "turns": [turn],
        }
        return CallAudio(to_pcm(body + gain * part), manifest=info)

    return build


NOISY_FIXTURES: tuple[Fixture, ...] = tuple(
    Fixture(
        f"speech-noisy-{clip}",
        f"human speech over a real restaurant's background noise at {snr:g} dB SNR: {clip}",
        noisy_builder(clip, snr),
    )
    for clip, snr in NOISY
)
