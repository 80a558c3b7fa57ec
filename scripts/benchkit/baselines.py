"""Part 3 of the media benchmark: per-sample Python G.711 against the lookup tables.

:func:`python_ulaw_encode` and :func:`python_ulaw_decode` are G.711 μ-law the way one would write
it first, one sample at a time in Python (the Sun reference algorithm); :func:`codec_baseline`
times them against :mod:`sipagent.rtp.g711`'s tables on the same speech frames, after checking
that both agree. (The other baseline, a naive ``sleep(0.02)`` pacer, has to run beside the calls
on their event loop, so it lives in :mod:`benchkit.media_realtime`.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sipagent.rtp.g711 import ulaw_decode, ulaw_encode

_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def python_ulaw_encode(samples: Sequence[int]) -> bytes:
    """G.711 μ-law one sample at a time in Python (the Sun reference algorithm): the baseline."""
    out = bytearray(len(samples))
    for index, sample in enumerate(samples):
        value = sample >> 2
        if value < 0:
            value, mask = -value, 0x7F
        else:
            mask = 0xFF
        value = min(value, 8159) + 33
        segment = 0
        while segment < 8 and value > _ULAW_SEGMENT_ENDS[segment]:
            segment += 1
        code = 0x7F if segment >= 8 else (segment << 4) | ((value >> (segment + 1)) & 0x0F)
        out[index] = code ^ mask
    return bytes(out)


def python_ulaw_decode(payload: bytes) -> list[int]:
    """G.711 μ-law decoding one byte at a time in Python: the baseline."""
    out = []
    for byte in payload:
        code = ~byte & 0xFF
        magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
        out.append(0x84 - magnitude if code & 0x80 else magnitude - 0x84)
    return out


@dataclass
class CodecBaseline:
    """µs per 20 ms frame, decode + encode, medians."""

    python_us: float
    table_us: float

    @property
    def ratio(self) -> float:
        return self.python_us / self.table_us


def codec_baseline(speech: Sequence[bytes], *, frames: int = 200, repeats: int = 5) -> CodecBaseline:
    """Per-sample Python G.711 against the lookup tables, on the same speech frames."""
    payloads = [speech[index % len(speech)] for index in range(frames)]
    pcm = [ulaw_decode(payload) for payload in payloads]
    lists = [frame.tolist() for frame in pcm]
    if python_ulaw_encode(lists[0]) != ulaw_encode(pcm[0]) or python_ulaw_decode(payloads[0]) != lists[0]:
        raise AssertionError("the Python G.711 baseline disagrees with the tables")

    def python_way() -> None:
        for payload in payloads:
            python_ulaw_encode(python_ulaw_decode(payload))

    def table_way() -> None:
        for payload in payloads:
            ulaw_encode(ulaw_decode(payload))

    def timed(work: Callable[[], None]) -> float:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            runs.append((time.perf_counter() - start) * 1e6 / frames)
        return statistics.median(runs)

    return CodecBaseline(python_us=timed(python_way), table_us=timed(table_way))
