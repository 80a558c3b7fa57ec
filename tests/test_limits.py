"""Load limits: calls at once and calls per caller per minute, on a virtual clock
(sipagent/product/limits.py)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.product.limits import Admission, CallAdmission, LimitsConfig

ALICE = "+15551234567"
BOB = "+15559876543"
T0 = 1000.0  # an arbitrary monotonic time: nothing may assume the clock starts at 0


def _admission(**config: int) -> CallAdmission:
    return CallAdmission(LimitsConfig(**config))


# -- configuration -----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = LimitsConfig()
    assert (config.max_calls, config.calls_per_minute, config.retry_after_s) == (20, 6, 30)
    assert (config.max_call_duration_s, config.ring_timeout_s) == (3600.0, 45.0)
    assert CallAdmission().config == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_calls = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_calls", 0, "max_calls must be at least 1"),
        ("calls_per_minute", -1, "calls_per_minute must not be negative"),
        ("retry_after_s", 0, "retry_after_s must be at least 1"),
        ("max_call_duration_s", 0.0, "must be positive"),
        ("ring_timeout_s", -1.0, "must be positive"),
        ("max_tracked_callers", 0, "max_tracked_callers must be at least 1"),
    ],
)
def test_bad_values_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LimitsConfig(**{field: value})  # type: ignore[arg-type]


# -- max_calls ---------------------------------------------------------------------------------------


def test_inbound_calls_beyond_max_calls_get_503_with_retry_after() -> None:
    admission = _admission(max_calls=2, calls_per_minute=0, retry_after_s=17)
    assert admission.admit_inbound("a", ALICE, T0) == Admission(True, None, "admitted (1/2 calls)")
    assert admission.admit_inbound("b", BOB, T0).admitted
    refused = admission.admit_inbound("c", "198.51.100.7", T0)
    assert refused == Admission(False, 503, "limits.max_calls (2) calls are up", retry_after=17)
    assert admission.active == 2 and "c" not in admission


def test_a_released_slot_is_free_at_once() -> None:
    admission = _admission(max_calls=1)
    assert admission.admit_inbound("a", ALICE, T0).admitted
    assert admission.admit_inbound("b", BOB, T0 + 1).status == 503
    assert admission.release("a") is True
    assert admission.active == 0 and "a" not in admission
    assert admission.admit_inbound("b", BOB, T0 + 1).admitted


def test_release_is_idempotent_and_ignores_unknown_calls() -> None:
    admission = _admission()
    admission.admit_inbound("a", ALICE, T0)
    assert admission.release("a") is True
    assert admission.release("a") is False
    assert admission.release("never") is False
    assert admission.active == 0


def test_inbound_and_outbound_share_max_calls() -> None:
    admission = _admission(max_calls=2)
    assert admission.admit_outbound("out-1", T0) == Admission(True, None, "admitted (1/2 calls)")
    assert admission.admit_inbound("in-1", ALICE, T0).admitted
    refused = admission.admit_outbound("out-2", T0)
    # No INVITE to answer: the server raises CallLimitReached instead, so no status and no Retry-After.
    assert refused == Admission(False, None, "limits.max_calls (2) calls are up")
    assert admission.admit_inbound("in-2", BOB, T0).status == 503
    admission.release("out-1")
    assert admission.admit_outbound("out-2", T0).admitted


def test_outbound_calls_ignore_calls_per_minute() -> None:
    admission = _admission(max_calls=100, calls_per_minute=1)
    assert all(admission.admit_outbound(f"out-{i}", T0).admitted for i in range(50))
    assert admission.tracked_callers == 0


def test_admitting_a_call_again_does_not_count_it_twice() -> None:
    admission = _admission(max_calls=1, calls_per_minute=1)
    assert admission.admit_inbound("a", ALICE, T0).admitted
    again = admission.admit_inbound("a", ALICE, T0 + 1)
    assert again == Admission(True, None, "call a already admitted")
    assert admission.admit_outbound("a", T0 + 1).admitted
    assert admission.active == 1


# -- calls_per_minute --------------------------------------------------------------------------------


def test_a_caller_beyond_calls_per_minute_gets_486_until_the_window_moves_on() -> None:
    admission = _admission(calls_per_minute=3)
    for i, at in enumerate((T0, T0 + 10, T0 + 20)):
        assert admission.admit_inbound(f"c{i}", ALICE, at).admitted
        admission.release(f"c{i}")  # short calls: the limit is on calls made, not calls at once
    busy = admission.admit_inbound("c3", ALICE, T0 + 30)
    assert busy == Admission(
        False, 486, "limits.calls_per_minute (3) reached by +*******4567", retry_after=30
    )
    assert admission.admit_inbound("c3", ALICE, T0 + 59.5).retry_after == 1  # never 0
    assert admission.admit_inbound("c3", ALICE, T0 + 60).admitted  # the call at T0 has left
    assert admission.admit_inbound("c4", ALICE, T0 + 65).status == 486  # T0+10, +20, +60 still in
    assert admission.admit_inbound("c4", ALICE, T0 + 70).admitted


def test_the_limit_is_per_caller() -> None:
    admission = _admission(calls_per_minute=1)
    assert admission.admit_inbound("a1", ALICE, T0).admitted
    assert admission.admit_inbound("b1", BOB, T0).admitted
    assert admission.admit_inbound("a2", ALICE, T0 + 1).status == 486
    assert admission.admit_inbound("x1", "192.0.2.44", T0 + 1).admitted  # an address is a caller too


def test_refused_attempts_are_not_counted() -> None:
    admission = _admission(calls_per_minute=2)
    assert admission.admit_inbound("a", ALICE, T0).admitted
    assert admission.admit_inbound("b", ALICE, T0 + 1).admitted
    for i in range(100):  # a redialling script hammering away
        assert admission.admit_inbound(f"r{i}", ALICE, T0 + 2 + i * 0.5).status == 486
    assert admission.admit_inbound("c", ALICE, T0 + 60).admitted  # as soon as the first call leaves


def test_calls_refused_for_max_calls_do_not_count_against_the_caller() -> None:
    admission = _admission(max_calls=1, calls_per_minute=1)
    assert admission.admit_inbound("a", BOB, T0).admitted
    assert admission.admit_inbound("b", ALICE, T0).status == 503
    admission.release("a")
    assert admission.admit_inbound("b", ALICE, T0 + 1).admitted


def test_the_caller_rate_is_checked_before_capacity() -> None:
    # A redialling caller on a full box hears busy (486), not "try elsewhere" (503).
    admission = _admission(max_calls=1, calls_per_minute=1)
    assert admission.admit_inbound("a", ALICE, T0).admitted
    assert admission.admit_inbound("b", ALICE, T0 + 1).status == 486
    assert admission.admit_inbound("c", BOB, T0 + 1).status == 503


def test_zero_calls_per_minute_means_no_limit_and_no_tracking() -> None:
    admission = _admission(max_calls=1000, calls_per_minute=0)
    assert all(admission.admit_inbound(f"c{i}", ALICE, T0).admitted for i in range(500))
    assert admission.tracked_callers == 0


# -- bounded memory ----------------------------------------------------------------------------------


def test_stale_windows_are_forgotten() -> None:
    admission = _admission(calls_per_minute=2)
    for i in range(50):
        admission.admit_inbound(f"c{i}", f"+1555{i:07d}", T0 + i)
        admission.release(f"c{i}")
    assert admission.tracked_callers == 50
    admission.admit_inbound("late", ALICE, T0 + 49 + 60.5)  # every earlier caller's calls have left
    assert admission.tracked_callers == 1


def test_tracked_callers_are_capped_least_recent_first() -> None:
    admission = _admission(max_calls=10_000, calls_per_minute=1, max_tracked_callers=3)
    for i, caller in enumerate(("+15550000001", "+15550000002", "+15550000003", "+15550000004")):
        assert admission.admit_inbound(f"c{i}", caller, T0 + i).admitted
    assert admission.tracked_callers == 3
    # The first caller was forgotten (so it may call again); the most recent are still limited.
    assert admission.admit_inbound("again-1", "+15550000001", T0 + 5).admitted
    assert admission.admit_inbound("again-4", "+15550000004", T0 + 5).status == 486


def test_a_window_is_touched_on_admission_so_an_active_caller_is_not_evicted_first() -> None:
    admission = _admission(max_calls=10_000, calls_per_minute=5, max_tracked_callers=2)
    admission.admit_inbound("a1", ALICE, T0)
    admission.admit_inbound("b1", BOB, T0 + 1)
    admission.admit_inbound("a2", ALICE, T0 + 2)  # Alice is now the most recent
    admission.admit_inbound("x1", "+15550000009", T0 + 3)  # evicts Bob, not Alice
    for i in range(3):
        assert admission.admit_inbound(f"a{i + 3}", ALICE, T0 + 4).admitted
    assert admission.admit_inbound("a9", ALICE, T0 + 4).status == 486  # all 5 of Alice's calls were kept


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["in", "out", "release"]),
            st.integers(0, 12),  # call id
            st.integers(0, 5),  # caller
            st.floats(0, 20, allow_nan=False),  # time step
        ),
        max_size=60,
    ),
    st.integers(1, 8),
    st.integers(0, 4),
    st.sampled_from([1, 3, 6]),
)
def test_invariants_under_any_sequence(
    ops: list[tuple[str, int, int, float]], max_calls: int, per_minute: int, max_callers: int
) -> None:
    admission = _admission(max_calls=max_calls, calls_per_minute=per_minute, max_tracked_callers=max_callers)
    model: set[str] = set()
    now = T0
    history: dict[str, list[float]] = {}  # admissions per caller, for the rate check
    for op, call, caller_no, step in ops:
        now += step
        call_id, caller = f"call-{call}", f"+1555000{caller_no:04d}"
        if op == "release":
            assert admission.release(call_id) is (call_id in model)
            model.discard(call_id)
            continue
        was_active = call_id in model
        full = len(model) >= max_calls
        result = (
            admission.admit_inbound(call_id, caller, now)
            if op == "in"
            else admission.admit_outbound(call_id, now)
        )
        if was_active:
            assert result.admitted
        elif result.admitted:
            assert not full
            model.add(call_id)
            if op == "in" and per_minute:
                # Never admitted beyond the rate, unless the caller's window was evicted (6 callers).
                if max_callers >= 6:
                    assert len(_recent(history, caller, now)) < per_minute
                history.setdefault(caller, []).append(now)
        else:
            assert result.status in ((486, 503) if op == "in" else (None,))
            assert (result.retry_after is not None) == (result.status is not None)
            if result.retry_after is not None:
                assert result.retry_after >= 1
            if result.status == 503 or op == "out":
                assert full
            if result.status == 486:  # only a caller whose admitted calls fill the window
                assert len(_recent(history, caller, now)) >= per_minute > 0
        assert admission.active == len(model) <= max_calls
        assert admission.tracked_callers <= max_callers


def _recent(history: dict[str, list[float]], caller: str, now: float) -> list[float]:
    return [t for t in history.get(caller, []) if t > now - 60]
