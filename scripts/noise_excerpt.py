#!/usr/bin/env python3
"""Cut the background-noise excerpt in ``fixtures/noise/`` from its source (once: it is committed).

The source is a real recording of a restaurant's background (a room full of people talking, no
intelligible words, cutlery and dishes): "Restaurant Ambiance" by stephan, released into the
**public domain**, as Debian ships it in the package ``blanket`` 0.7.0-4 (Debian 13 "trixie", main),
whose ``debian/copyright`` states that licence for it. Blanket compiles its sounds into a GResource
bundle; the file is ``/com/rafaelmardojai/Blanket/sounds/coffee-shop.ogg`` in
``/usr/share/blanket/blanket.gresource`` (Ogg Vorbis, 44.1 kHz stereo, 16.66 s)::

    apt-get download blanket=0.7.0-4          # on trixie, or with trixie's main in a source list
    dpkg-deb -x blanket_0.7.0-4_all.deb /tmp/blanket
    gresource extract /tmp/blanket/usr/share/blanket/blanket.gresource \\
        /com/rafaelmardojai/Blanket/sounds/coffee-shop.ogg > /tmp/coffee-shop.ogg
    .venv/bin/python scripts/noise_excerpt.py /tmp/coffee-shop.ogg

This script checks the file's sha256, decodes it with PyAV (the venv has it for faster-whisper) and
checks the decoded samples' sha256 too (another Vorbis decoder could round differently), averages
the two channels, takes :data:`START_S` to :data:`START_S` + :data:`LENGTH_S` (all of it but its
first 0.1 s and last 60 ms), resamples it to 16 kHz with the fixtures' own Kaiser-windowed sinc and writes a
16-bit mono WAV. The output is deterministic, so running it again rewrites the committed file byte
for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import wave
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from fixturekit import resample, to_pcm

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fixtures" / "noise" / "restaurant-ambience.wav"
SOURCE_SHA256 = "397b5d95f06df69ba2989147cf9c37a417b2dc5950c1a16fbe6be6fa372d25ef"
#: sha256 of the decoded samples: planar float32, both channels, little-endian.
DECODED_SHA256 = "fc19b992a6dcd6555ed35312a6b0cd896af1661075de6de38c04349acb3cd2f9"
SOURCE_RATE = 44100
RATE = 16000
START_S = 0.1
LENGTH_S = 16.5
EDGE_S = 0.05  # resampled beyond both ends, then trimmed: no zero-padded edge in the excerpt


def decode(source: Path) -> np.ndarray:
    """The checked source's samples, channels × frames, float32 (full scale ±1)."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{source}: sha256 {digest}, expected {SOURCE_SHA256} (blanket 0.7.0-4)")
    with av.open(str(source)) as container:
        stream = container.streams.audio[0]
        if (stream.codec_context.name, stream.rate, stream.channels) != ("vorbis", SOURCE_RATE, 2):
            raise SystemExit(f"{source}: expected stereo Vorbis at {SOURCE_RATE} Hz")
        frames = [frame.to_ndarray() for frame in container.decode(stream)]
    samples = np.ascontiguousarray(np.concatenate(frames, axis=1), dtype="<f4")
    digest = hashlib.sha256(samples.tobytes()).hexdigest()
    if digest != DECODED_SHA256:
        raise SystemExit(
            f"{source}: decoded samples' sha256 {digest}, expected {DECODED_SHA256}: this PyAV "
            f"({av.__version__}) decodes Vorbis differently, so the excerpt would not be byte-exact"
        )
    return samples


def excerpt(source: Path) -> np.ndarray:
    """The 16 kHz mono excerpt of the checked source recording, as 16-bit samples."""
    samples = decode(source).astype(np.float64)
    x = samples.mean(axis=0) * 32768.0
    lo, hi = round((START_S - EDGE_S) * SOURCE_RATE), round((START_S + LENGTH_S + EDGE_S) * SOURCE_RATE)
    if hi > len(x):
        raise SystemExit(f"{source}: {len(x) / SOURCE_RATE:.2f} s, too short for the excerpt")
    y = resample(x[lo:hi], SOURCE_RATE, RATE)
    edge = round(EDGE_S * RATE)
    return to_pcm(y[edge : edge + round(LENGTH_S * RATE)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("source", type=Path, help="coffee-shop.ogg from Debian's blanket 0.7.0-4")
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
