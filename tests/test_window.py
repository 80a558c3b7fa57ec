"""FloatWindow: the GC-free ring of recent samples behind the send-error percentiles."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipagent.rtp.window import FloatWindow


@given(st.integers(min_value=1, max_value=20), st.lists(st.floats(allow_nan=False, width=64), max_size=60))
def test_keeps_exactly_the_last_capacity_samples_in_order(capacity: int, samples: list[float]) -> None:
    window = FloatWindow(capacity)
    for sample in samples:
        window.append(sample)
    assert window.values() == samples[-capacity:] if samples else window.values() == []
    assert window.sorted() == sorted(samples[-capacity:])
    assert len(window) == min(len(samples), capacity) and bool(window) == bool(samples)


def test_clear_and_bad_capacity() -> None:
    window = FloatWindow(3)
    window.append(1.0)
    window.clear()
    assert not window and window.values() == []
    with pytest.raises(ValueError, match="capacity 0"):
        FloatWindow(0)


def test_the_collector_has_nothing_to_walk() -> None:
    window = FloatWindow(3000)
    for index in range(3000):
        window.append(index * 1e-3)
    assert not any(isinstance(item, float) for item in gc.get_referents(window))
