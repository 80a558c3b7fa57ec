"""Deterministic network impairments for replay: loss, jitter, reorder, duplication.

Given packets with their send times, produce the arrival schedule a receiver would see. Seeded, so
the same arguments always give the same arrivals (tests and benchmarks compare runs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Impairments:
    """What the network does to the caller's packets."""

    loss: float = 0.0  # probability a packet is dropped
    jitter_ms: float = 0.0  # spread of extra one-way delay (exponential with this mean)
    reorder: float = 0.0  # probability a packet is held back behind its successor
    duplicate: float = 0.0  # probability a packet arrives twice
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value}")
        if self.jitter_ms < 0:
            raise ValueError(f"jitter_ms must not be negative, got {self.jitter_ms}")

    @property
    def active(self) -> bool:
        """True when any impairment is set."""
        return bool(self.loss or self.jitter_ms or self.reorder or self.duplicate)

    def apply(self, sent: list[tuple[float, T]]) -> list[tuple[float, T]]:
        """Arrivals ``(time, item)`` sorted by time, from ``(send_time, item)`` pairs."""
        rng = random.Random(self.seed)
        arrivals: list[tuple[float, T]] = []
        for index, (time, item) in enumerate(sent):
            if rng.random() < self.loss:
                continue
            delay = rng.expovariate(1000.0 / self.jitter_ms) if self.jitter_ms else 0.0
            if rng.random() < self.reorder and index + 1 < len(sent):
                # Held back until just after the next packet's send time.
                delay = max(delay, sent[index + 1][0] - time + 0.001)
            arrivals.append((time + delay, item))
            if rng.random() < self.duplicate:
                arrivals.append((time + delay + rng.uniform(0.0, 0.030), item))
        arrivals.sort(key=lambda pair: pair[0])
        return arrivals
