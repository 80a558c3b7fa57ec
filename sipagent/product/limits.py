"""Load limits: how many calls at once, and how often one caller may call. Pure: ``now`` is an argument.

:class:`CallAdmission` is asked before a call gets anything (after the inbound policy, before a
port, a conversation or a model job), and told when the call is over:

* ``max_calls`` counts calls in progress, inbound and outbound together. An INVITE beyond it gets
  ``503 Service Unavailable`` with ``Retry-After``: the box is full, not the caller's fault, and a
  proxy or carrier with other targets should try the next one (RFC 3261 §21.5.4). An outbound call
  beyond it is refused (the server raises :class:`.control.CallLimitReached`), never queued.
* ``calls_per_minute`` counts the calls one caller (its number, else its address) was admitted in
  the last 60 s, a sliding window. Beyond it the INVITE gets ``486 Busy Here``: the caller hears
  busy, and RFC 3261 asks a client to try another server on a 503 but not on a 486, so a
  redialling script is slowed down rather than spread around. Refused attempts are not counted:
  the limit is on calls that get through, and a flood of refused INVITEs costs no memory.

Memory stays bounded whatever callers do: a window holds at most ``calls_per_minute`` times, a
window older than 60 s is dropped, and at most ``max_tracked_callers`` windows are kept (beyond
it the least recently admitted caller is forgotten first). Times are seconds on one monotonic clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from .numbers import mask

__all__ = ["Admission", "CallAdmission", "LimitsConfig"]

#: The per-caller window (seconds): "calls per minute".
WINDOW_S = 60.0
#: The box is full: try later (Retry-After) or elsewhere.
SERVICE_UNAVAILABLE = 503
#: This caller has called too often: busy, here.
BUSY_HERE = 486


@dataclass(frozen=True)
class LimitsConfig:
    """How many calls, how often, how long (``[limits]``)."""

    #: Calls at once, inbound and outbound together.
    max_calls: int = 20
    #: Calls admitted per caller in any 60 s; 0: no per-caller limit.
    calls_per_minute: int = 6
    #: The Retry-After (seconds) sent with a 503.
    retry_after_s: int = 30
    #: Longest answered call (seconds); enforced by the server, carried here with the other limits.
    max_call_duration_s: float = 3600.0
    #: Outbound: give up ringing after this many seconds; enforced by the server.
    ring_timeout_s: float = 45.0
    #: Per-caller windows kept at most (memory bound under a flood of distinct callers).
    max_tracked_callers: int = 10_000

    def __post_init__(self) -> None:
        if self.max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {self.max_calls}")
        if self.calls_per_minute < 0:
            raise ValueError(
                f"calls_per_minute must not be negative (0: no limit), got {self.calls_per_minute}"
            )
        if self.retry_after_s < 1:
            raise ValueError(f"retry_after_s must be at least 1, got {self.retry_after_s}")
        if not (self.max_call_duration_s > 0 and self.ring_timeout_s > 0):
            raise ValueError("max_call_duration_s and ring_timeout_s must be positive")
        if self.max_tracked_callers < 1:
            raise ValueError(f"max_tracked_callers must be at least 1, got {self.max_tracked_callers}")


@dataclass(frozen=True)
class Admission:
    """Whether a call may proceed."""

    admitted: bool
    #: The SIP status that refuses an INVITE: 503 (max_calls), 486 (calls_per_minute). None when
    #: admitted, and for a refused outbound call (no INVITE to answer: it raises CallLimitReached).
    status: int | None
    #: One line for the log (a caller key in it is masked).
    reason: str
    #: Seconds for a Retry-After header: with 503, ``retry_after_s``; with 486, when the caller's
    #: oldest counted call leaves the window (RFC 3261 §20.33 allows it on both). None otherwise.
    retry_after: int | None = None


class CallAdmission:
    """Calls in progress and recent calls per caller, against :class:`LimitsConfig` (module docstring)."""

    def __init__(self, config: LimitsConfig | None = None) -> None:
        self.config = config or LimitsConfig()
        self._active: set[str] = set()
        #: caller key → admission times in the window, oldest first; least recently admitted first.
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()

    @property
    def active(self) -> int:
        """Calls in progress (admitted, not yet released)."""
        return len(self._active)

    @property
    def tracked_callers(self) -> int:
        """Per-caller windows held (at most ``max_tracked_callers``)."""
        return len(self._windows)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._active

    def admit_inbound(self, call_id: str, caller_key: str, now: float) -> Admission:
        """Admit an INVITE, or say how to refuse it.

        ``caller_key`` is the caller's E.164 number, else its source address. Admitting a call id
        that is already in progress admits it again without counting it twice.
        """
        if call_id in self._active:
            return Admission(True, None, f"call {call_id} already admitted")
        self._forget_stale(now)
        limit = self.config.calls_per_minute
        window = self._windows.get(caller_key)
        if window is not None:
            _expire(window, now)
        if limit and window is not None and len(window) >= limit:
            # At least 1: a Retry-After of 0 would invite an immediate retry that is refused again.
            retry = max(1, math.ceil(window[0] + WINDOW_S - now))
            reason = f"limits.calls_per_minute ({limit}) reached by {mask(caller_key)}"
            return Admission(False, BUSY_HERE, reason, retry)
        if len(self._active) >= self.config.max_calls:
            return self._full(SERVICE_UNAVAILABLE)
        self._active.add(call_id)
        if limit:
            self._record(caller_key, now)
        return Admission(True, None, self._admitted())

    def admit_outbound(self, call_id: str, now: float) -> Admission:
        """Admit a call we place (``max_calls`` only). Refused: the caller raises CallLimitReached.

        ``now`` is taken so both admissions read alike; the outbound check does not depend on time.
        """
        del now
        if call_id in self._active:
            return Admission(True, None, f"call {call_id} already admitted")
        if len(self._active) >= self.config.max_calls:
            return self._full(None)
        self._active.add(call_id)
        return Admission(True, None, self._admitted())

    def release(self, call_id: str) -> bool:
        """The call is over: its slot is free. False (and nothing happens) if it was not in progress,
        so every path that ends a call may release it."""
        if call_id not in self._active:
            return False
        self._active.remove(call_id)
        return True

    # -- helpers -------------------------------------------------------------------------------------
    def _full(self, status: int | None) -> Admission:
        retry = self.config.retry_after_s if status is not None else None
        return Admission(False, status, f"limits.max_calls ({self.config.max_calls}) calls are up", retry)

    def _admitted(self) -> str:
        return f"admitted ({len(self._active)}/{self.config.max_calls} calls)"

    def _record(self, caller_key: str, now: float) -> None:
        window = self._windows.get(caller_key)
        if window is None:
            window = self._windows[caller_key] = deque(maxlen=self.config.calls_per_minute)
            if len(self._windows) > self.config.max_tracked_callers:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(caller_key)
        window.append(now)

    def _forget_stale(self, now: float) -> None:
        """Drop windows whose newest call has left the window. The dict is ordered by last admission,
        so the stale ones are at the front and this costs O(1) per window ever created."""
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window and window[-1] > now - WINDOW_S:
                break
            del self._windows[key]


def _expire(window: deque[float], now: float) -> None:
    """Drop the times that have left the 60 s window (a call at t counts until t + 60, exclusive)."""
    while window and window[0] <= now - WINDOW_S:
        window.popleft()
