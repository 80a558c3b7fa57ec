"""Timer values, states, events and the clockwork shared by the four RFC 3261 §17 transactions.

The machines themselves live in :mod:`sipagent.sip.transaction` (client side, and the public
import point for everything) and :mod:`sipagent.sip.transaction_server`. This module holds what
both sides need, so neither imports the other at run time:

* the timer constants (RFC 3261 §17.1.1.1 and Table 4) and :class:`TimerConfig`;
* :class:`TransactionState` and the three events a transaction hands to its TU;
* :class:`TransactionMachine`, the sans-IO clockwork: named deadlines on a caller-supplied
  monotonic clock, a queue of :class:`Outgoing` datagrams, and a transition-table lookup that
  raises :class:`TransactionStateError` naming role, state and event.

Nothing here reads a clock: every deadline is an absolute time computed from a ``now`` argument.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .address import Outgoing
from .errors import TransactionStateError
from .message import Request, Response

if TYPE_CHECKING:
    from .transaction import ClientTransaction
    from .transaction_server import InviteServerTransaction, ServerTransaction

#: RTT estimate: first retransmission interval (RFC 3261 §17.1.1.1).
T1 = 0.5
#: Cap on the retransmission interval of non-INVITE requests and INVITE responses.
T2 = 4.0
#: Longest time a message can live in the network; how long a completed transaction lingers.
T4 = 5.0
#: Timer D on unreliable transports: "at least 32 seconds" (§17.1.1.2), independent of T1.
TIMER_D = 32.0


@dataclass(frozen=True)
class TimerConfig:
    """The §17 timer base values. Tests shrink them; production keeps the RFC defaults."""

    t1: float = T1
    t2: float = T2
    t4: float = T4
    #: Timer D for unreliable transports (reliable ones use 0).
    d: float = TIMER_D

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError(f"T1 must be positive, got {self.t1}")
        if self.t2 < self.t1:
            raise ValueError(f"T2 ({self.t2}) must not be below T1 ({self.t1})")
        if self.t4 < 0 or self.d < 0:
            raise ValueError("T4 and Timer D must not be negative")

    @property
    def timeout(self) -> float:
        """64·T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


DEFAULT_TIMERS = TimerConfig()


class TransactionState(enum.Enum):
    """States of the four machines; each machine uses a subset (see its transition table)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class ResponseReceived:
    """A response the client transaction passes up to its TU."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True)
class TransactionTimedOut:
    """Timer B/F (the TU treats it as a 408), or Timer H/L on an INVITE server transaction.

    H: nobody ACKed our non-2xx final. L: nobody ACKed our 2xx, so the TU ends the dialog with BYE
    (§13.3.1.4). ``timer`` names which one; it is left out of equality so
    ``TransactionTimedOut(tx)`` compares equal to any timeout of ``tx``.
    """

    transaction: ClientTransaction | ServerTransaction
    timer: str = field(default="", compare=False)


@dataclass(frozen=True)
class AckReceived:
    """An ACK for our 2xx that reached the INVITE server transaction itself.

    That happens only when the peer reused the INVITE's branch for its 2xx ACK (older stacks do);
    an RFC 3261 ACK for a 2xx has a new branch, the TU matches it by dialog and hands it over with
    :meth:`InviteServerTransaction.ack_received`, and no event is emitted for it.
    """

    transaction: InviteServerTransaction
    request: Request

    def __post_init__(self) -> None:
        if self.request.method != "ACK":
            raise ValueError(f"AckReceived needs an ACK, got {self.request.method}")


TransactionEvent = ResponseReceived | TransactionTimedOut | AckReceived

#: ``{state: {event name: next state}}``: every (state, event) pair not listed is impossible.
Transitions = Mapping[TransactionState, Mapping[str, TransactionState]]
#: ``{state: timer names that may run in it}``: leaving a state cancels timers the next one lacks.
TimerTable = Mapping[TransactionState, frozenset[str]]


class TransactionMachine:
    """Clockwork shared by the four machines.

    A subclass declares ``ROLE``, ``TRANSITIONS`` and ``TIMERS`` and implements :meth:`_fire`
    (what happens when one of its timers expires). Deadlines are absolute times on the caller's
    monotonic clock; retransmission timers re-arm from their previous deadline, not from ``now``,
    so a late wake-up does not stretch the RFC schedule.
    """

    ROLE: ClassVar[str]
    TRANSITIONS: ClassVar[Transitions]
    TIMERS: ClassVar[TimerTable]

    def __init__(self, state: TransactionState, config: TimerConfig, reliable: bool) -> None:
        self.state = state
        self.config = config
        #: Stream transports neither lose nor duplicate, so retransmission timers never run.
        self.reliable = reliable
        self._deadlines: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._outbox: list[Outgoing] = []

    # -- the I/O surface every machine shares ------------------------------------------------------
    @property
    def terminated(self) -> bool:
        """True once the machine is done; the TU drops it from its tables."""
        return self.state is TransactionState.TERMINATED

    def get_timer(self) -> float | None:
        """The earliest pending deadline, or None (always None once terminated)."""
        if self.terminated or not self._deadlines:
            return None
        return min(self._deadlines.values())

    def handle_timer(self, now: float) -> list[TransactionEvent]:
        """Fire every timer whose deadline is at or before ``now``, earliest first.

        Calling it early, twice, or after termination is harmless: nothing is due, nothing happens.
        """
        events: list[TransactionEvent] = []
        while not self.terminated:
            due = [(at, name) for name, at in self._deadlines.items() if at <= now]
            if not due:
                break
            at, name = min(due)
            del self._deadlines[name]
            events.extend(self._fire(name, at))
        return events

    def datagrams_to_send(self) -> list[Outgoing]:
        """Pop everything queued for the transport, oldest first."""
        out, self._outbox = self._outbox, []
        return out

    # -- helpers for subclasses --------------------------------------------------------------------
    def _fire(self, name: str, at: float) -> list[TransactionEvent]:
        """Timer ``name``, due at ``at``, expired."""
        raise NotImplementedError

    def _advance(self, event: str) -> TransactionState:
        """Look ``event`` up in the table, move to the next state and return the previous one.

        Raises :class:`TransactionStateError` for a pair the table does not list. Timers that the
        new state does not run are cancelled here, so no handler has to remember to.
        """
        allowed = self.TRANSITIONS[self.state]
        if event not in allowed:
            raise TransactionStateError(self.ROLE, self.state.name, event)
        previous = self.state
        self.state = allowed[event]
        if self.state is not previous:
            keep = self.TIMERS.get(self.state, frozenset())
            for name in [n for n in self._deadlines if n not in keep]:
                del self._deadlines[name]
                self._intervals.pop(name, None)
        return previous

    def _arm(self, name: str, at: float) -> None:
        self._deadlines[name] = at

    def _arm_retransmit(self, name: str, at: float, interval: float) -> None:
        """(Re)arm retransmission timer ``name`` to fire ``interval`` after ``at``."""
        self._intervals[name] = interval
        self._arm(name, at + interval)

    def _interval(self, name: str) -> float:
        return self._intervals.get(name, self.config.t1)

    def _linger(self, name: str, now: float, duration: float) -> list[TransactionEvent]:
        """Arm the timer that ends a state; a zero duration (reliable transport) fires it now."""
        if duration > 0:
            self._arm(name, now + duration)
            return []
        return self._fire(name, now)

    def _queue(self, outgoing: Outgoing) -> None:
        self._outbox.append(outgoing)
