"""The media clock: one event-loop timer per millisecond slot, shared by every call on the loop.

Every call ticks every 20 ms at its own phase, so a loop carrying 250 calls would otherwise create,
heap-push, pop and run 12 500 timer handles a second. Calls whose deadlines fall in the same
millisecond share one handle here: a slot is armed once (``loop.call_at``) and, when it fires,
runs each call that is still waiting on it. That is cheaper per call-tick and keeps a busy loop's
wake-ups to at most one per millisecond.

Deadlines are rounded *up* to the slot after arming 1 ms early, so a slot fires between 1 ms
before and exactly at a call's deadline; the session accepts a tick 1 ms early
(:data:`sipagent.rtp.session._EARLY_S`) and the loop's millisecond-rounded epoll timeouts only
ever wake late. The send-time error stays centred on zero instead of trailing by ~1 ms.

**Sends come first, across slots too.** A slot runs every call's send pass before any call's
inbound work (jitter buffer, VAD, the pipeline's callbacks). And while a slot does its inbound work,
the clock checks after each call whether a later slot has come due meanwhile; if so, that slot's
packets are sent right then (:meth:`ClockClient.on_send`), before the rest of the inbound work, and
its timer later finds them sent. Without this a busy slot delayed the next slots' packets by its
whole inbound work, and backlogs of a few milliseconds formed whenever the random phases of the calls
put more of them than average into neighbouring slots: at 250 calls on one core the send-time p99
over a whole run was ~20 ms with the median second at 1.4 ms (docs/benchmarks.md). Inbound work may
run a few milliseconds late without harm: it only feeds the jitter buffer's next pop and the VAD.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Protocol

from ..rtp.frames import FRAME_SECONDS

log = logging.getLogger("sipagent.rtp")

#: How far ahead of a deadline a slot may fire (the session's early tolerance).
ARM_EARLY_S = 0.001
#: Millisecond slots per 20 ms tick: the phases a call's clock can run at.
PHASES = round(FRAME_SECONDS * 1000)


class ClockClient(Protocol):
    """What the clock calls: a call's media adapter."""

    #: The slot the client waits on (None: not scheduled); owned by the clock.
    clock_slot: int | None

    def on_send(self, now: float) -> None:
        """First pass over a slot: send what is due (cheap, so every packet leaves on time)."""

    def on_clock(self, now: float, wall_offset: float) -> None:
        """Second pass: the rest of the client's work; ``wall_offset`` turns loop time into
        wall-clock time."""


class MediaClock:
    """Shared millisecond-slot timers for the media of every call on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._slots: dict[int, list[ClockClient]] = {}
        #: The latest slot whose send pass has run (slots up to it sent ahead of their timers).
        self._sent_through = -1
        #: Loop wake-ups (slots fired), client runs and send passes run ahead of their slot's
        #: timer (because an earlier slot's inbound work was still running), for the benchmarks.
        self.wakeups = 0
        self.runs = 0
        self.sent_ahead = 0
        #: Calls started on each millisecond phase of the 20 ms tick (see :meth:`claim_start`).
        self._phase_calls = [0] * PHASES

    def claim_start(self, now: float) -> float:
        """When a call starting at ``now`` should start its 20 ms clock: within the next 20 ms,
        in the middle of the millisecond phase that the fewest running calls tick in.

        Calls answered at random instants put, by chance, twice the average number of calls into
        some millisecond slots of the 20 ms cycle (a Poisson spread: 22 where the mean is 12.5
        at 250 calls); those slots overran into the next ones. Our send schedule is ours to choose
        (the RTP timestamp of the first packet is random anyway), and starting a call's audio up
        to 20 ms later is inaudible, so every call gets the least-loaded phase and each slot
        carries the same share of the work. Pair it with :meth:`release_start` when the call ends.
        """
        first = math.ceil((now - ARM_EARLY_S) * 1000.0)
        loads = self._phase_calls
        offset = min(range(1, PHASES + 1), key=lambda step: (loads[(first + step) % PHASES], step))
        # Half a millisecond inside the slot, so rounding can never move a tick to its neighbour.
        start = (first + offset - 0.5) / 1000.0 + ARM_EARLY_S
        loads[self._phase(start)] += 1
        return start

    def release_start(self, start: float) -> None:
        """A call that :meth:`claim_start` placed at ``start`` ended."""
        phase = self._phase(start)
        if self._phase_calls[phase] > 0:
            self._phase_calls[phase] -= 1

    @staticmethod
    def _phase(start: float) -> int:
        return math.ceil((start - ARM_EARLY_S) * 1000.0) % PHASES

    @property
    def phase_calls(self) -> list[int]:
        """Running calls per millisecond phase (for tests and benchmarks)."""
        return list(self._phase_calls)

    def schedule(self, client: ClockClient, deadline: float | None) -> None:
        """Wake ``client`` at ``deadline`` (loop time) instead of whatever it waited for; None
        unschedules it."""
        if deadline is None:
            client.clock_slot = None
            return
        slot = math.ceil((deadline - ARM_EARLY_S) * 1000.0)
        if client.clock_slot == slot:
            return
        client.clock_slot = slot
        waiting = self._slots.get(slot)
        if waiting is None:
            self._slots[slot] = [client]
            self.loop.call_at(slot / 1000.0, self._fire, slot)
        else:
            # A client that moved to another slot stays listed in the old one; _fire skips it.
            waiting.append(client)

    def _fire(self, slot: int) -> None:
        clients = self._slots.pop(slot, None)
        if not clients:
            return
        self.wakeups += 1
        loop_time = self.loop.time
        # The loop may run a timer a clock resolution early; the slot's time is the floor.
        now = max(loop_time(), slot / 1000.0)
        wall_offset = time.time() - loop_time()
        due = [client for client in clients if client.clock_slot == slot]
        # Two passes: every call's packet goes out before any call's inbound work (jitter buffer,
        # VAD, the pipeline's callbacks), so the last call in a busy slot is not late for them.
        self._send(due, slot, now)
        if slot > self._sent_through:
            self._sent_through = slot
        self._send_ahead(now)
        for client in due:
            if client.clock_slot != slot:
                continue  # rescheduled by another client's callback (e.g. a call ended)
            client.clock_slot = None
            self.runs += 1
            try:
                client.on_clock(now, wall_offset)
            except Exception:
                # One call's bug must not silence every other call on the loop.
                log.exception("media tick failed")
            # One clock read per call (~0.1 µs): the later slots' packets must not wait for the
            # rest of this slot's inbound work.
            current = loop_time()
            if current * 1000.0 >= self._sent_through + 1:
                self._send_ahead(current)

    def _send_ahead(self, now: float) -> None:
        """Run the send pass of every slot due by ``now`` whose own timer has not fired yet."""
        last = math.floor(now * 1000.0)
        for slot in range(self._sent_through + 1, last + 1):
            waiting = self._slots.get(slot)
            if waiting:
                self.sent_ahead += 1
                self._send(waiting, slot, max(now, slot / 1000.0))
        if last > self._sent_through:
            self._sent_through = last

    @staticmethod
    def _send(clients: list[ClockClient], slot: int, now: float) -> None:
        for client in clients:
            if client.clock_slot != slot:
                continue
            try:
                client.on_send(now)
            except Exception:
                log.exception("media send failed")

    @property
    def pending_slots(self) -> int:
        """Slots armed on the loop (for tests: at most one per millisecond)."""
        return len(self._slots)
