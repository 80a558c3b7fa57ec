"""Sockets-free networks for sans-IO pair tests (h11 ``ConnectionPair``, aioquic ``roundtrip``).

Endpoints are any objects with the sans-IO surface (:class:`Endpoint`): ``receive_datagram(data,
source, now)``, ``datagrams_to_send(now)``, ``get_timer()``, ``handle_timer(now)``. A
:class:`Network` joins them through one :class:`Link` and drives them on a :class:`VirtualClock`:
each step jumps to the earliest of "next datagram due" and "next endpoint deadline", delivers what
is due, fires what is due and moves whatever the endpoints queued onto the link. Nothing sleeps,
and a run is fully deterministic: losses and delays come from rules or from a seeded RNG.

Typical use::

    link = Link(latency=0.01, rules=[drop(is_request("OPTIONS"), times=2)])
    net = Network(link)
    net.add(client, server)
    client.send(make_request("OPTIONS"), net.now)
    net.run(until=40.0)
    assert link.sent_times(is_request("OPTIONS")) == [0.0, 0.5, 1.5]
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sipagent.sip.address import Address, Outgoing
from sipagent.sip.message import Request, Response, parse_message


class VirtualClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance_to(self, when: float) -> None:
        """Jump forward to ``when`` (never backwards)."""
        if when < self.now:
            raise ValueError(f"the clock cannot go back from {self.now} to {when}")
        self.now = when


@dataclass(frozen=True)
class Datagram:
    """One datagram handed to the link."""

    source: Address
    destination: Address
    data: bytes
    sent_at: float
    #: Order in which the link received it (ties in delivery time keep this order).
    seq: int

    def message(self) -> Request | Response:
        """The parsed SIP message (rules and assertions match on it)."""
        return parse_message(self.data)

    @property
    def first_line(self) -> str:
        """``INVITE sip:… SIP/2.0`` or ``SIP/2.0 486 Busy Here``."""
        return self.data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


Predicate = Callable[[Datagram], bool]
#: A rule inspects a datagram and returns the delays after which copies of it arrive: ``[]`` drops
#: it, ``[0.01]`` delivers it once, ``[0.01, 3.0]`` duplicates it. ``None`` defers to later rules
#: and then to the link's default (random loss, then ``latency`` plus random jitter).
Rule = Callable[[Datagram], Sequence[float] | None]


def is_request(method: str | None = None) -> Predicate:
    """Matches requests (of ``method``, when given)."""

    def match(dg: Datagram) -> bool:
        message = dg.message()
        return isinstance(message, Request) and (method is None or message.method == method)

    return match


def is_response(status: int | None = None, method: str | None = None) -> Predicate:
    """Matches responses (with ``status`` and to ``method``, when given)."""

    def match(dg: Datagram) -> bool:
        message = dg.message()
        return (
            isinstance(message, Response)
            and (status is None or message.status == status)
            and (method is None or message.cseq().method == method)
        )

    return match


def _limited(predicate: Predicate, times: int | None) -> Predicate:
    """``predicate``, but true for its first ``times`` matches only (every match when None)."""
    seen = 0

    def match(dg: Datagram) -> bool:
        nonlocal seen
        if not predicate(dg) or (times is not None and seen >= times):
            return False
        seen += 1
        return True

    return match


def drop(predicate: Predicate, *, times: int | None = None) -> Rule:
    """Lose the first ``times`` datagrams matching ``predicate`` (all of them when None)."""
    hit = _limited(predicate, times)
    return lambda dg: [] if hit(dg) else None


def delay(predicate: Predicate, by: float, *, times: int | None = None) -> Rule:
    """Deliver the first ``times`` matches ``by`` seconds late (instead of the normal latency)."""
    hit = _limited(predicate, times)
    return lambda dg: [by] if hit(dg) else None


def duplicate(predicate: Predicate, after: float, *, latency: float = 0.01, times: int | None = 1) -> Rule:
    """Deliver matches normally and again ``after`` seconds later (a delayed network copy)."""
    hit = _limited(predicate, times)
    return lambda dg: [latency, after] if hit(dg) else None


class Link:
    """A lossy, delaying, duplicating datagram network between any number of addresses."""

    def __init__(
        self,
        *,
        latency: float = 0.01,
        rules: Iterable[Rule] = (),
        loss: float = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.rules = list(rules)
        self.loss = loss
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, int, Datagram]] = []
        self._seq = 0
        #: Every datagram handed to the link, in order.
        self.sent: list[Datagram] = []
        #: Datagrams no copy of which will arrive.
        self.dropped: list[Datagram] = []
        #: ``(arrival time, datagram)`` for every copy delivered.
        self.delivered: list[tuple[float, Datagram]] = []

    def send(self, outgoing: Outgoing, now: float, *, source: Address) -> None:
        """Hand one datagram to the network at ``now``."""
        dg = Datagram(source, outgoing.destination, outgoing.data, now, self._seq)
        self._seq += 1
        self.sent.append(dg)
        delays = self._delays(dg)
        if not delays:
            self.dropped.append(dg)
        for copy, extra in enumerate(delays):
            heapq.heappush(self._queue, (now + extra, dg.seq, copy, dg))

    def _delays(self, dg: Datagram) -> Sequence[float]:
        for rule in self.rules:
            decided = rule(dg)
            if decided is not None:
                return decided
        if self.loss and self._rng.random() < self.loss:
            return []
        return [self.latency + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)]

    def next_delivery(self) -> float | None:
        """When the next copy arrives, or None when nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def deliver_due(self, now: float) -> list[Datagram]:
        """Pop every copy due at or before ``now``, in arrival order."""
        out: list[Datagram] = []
        while self._queue and self._queue[0][0] <= now:
            at, _, _, dg = heapq.heappop(self._queue)
            self.delivered.append((at, dg))
            out.append(dg)
        return out

    def sent_times(self, predicate: Predicate) -> list[float]:
        """When each datagram matching ``predicate`` was sent (retransmission schedules)."""
        return [dg.sent_at for dg in self.sent if predicate(dg)]

    def delivered_times(self, predicate: Predicate) -> list[float]:
        """When each copy matching ``predicate`` arrived."""
        return [at for at, dg in self.delivered if predicate(dg)]


class Endpoint(Protocol):
    """What a :class:`Network` needs from an endpoint (the aioquic-style sans-IO surface)."""

    @property
    def address(self) -> Address: ...

    def receive_datagram(self, data: bytes, source: Address, now: float) -> object: ...

    def datagrams_to_send(self, now: float) -> list[Outgoing]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> object: ...


class Network:
    """Endpoints joined by one :class:`Link`, stepped on a :class:`VirtualClock`.

    A step at time *t* first delivers every datagram due by *t* (in arrival order), then fires each
    endpoint whose deadline is at or before *t*; whatever an endpoint queues is put on the link at
    *t* right after it acts. Datagrams for an address no endpoint has are kept in
    :attr:`undeliverable`.
    """

    def __init__(self, link: Link | None = None, clock: VirtualClock | None = None) -> None:
        self.link = link if link is not None else Link()
        self.clock = clock if clock is not None else VirtualClock()
        self.endpoints: dict[Address, Endpoint] = {}
        self.undeliverable: list[Datagram] = []

    @property
    def now(self) -> float:
        """The virtual time."""
        return self.clock.now

    def add(self, *endpoints: Endpoint) -> None:
        """Attach endpoints; each receives what is sent to its ``address``."""
        for endpoint in endpoints:
            self.endpoints[endpoint.address] = endpoint

    def flush(self) -> None:
        """Move everything the endpoints queued onto the link, stamped with the current time."""
        for endpoint in list(self.endpoints.values()):
            self._flush_one(endpoint)

    def _flush_one(self, endpoint: Endpoint) -> None:
        for outgoing in endpoint.datagrams_to_send(self.now):
            self.link.send(outgoing, self.now, source=endpoint.address)

    def next_event_time(self) -> float | None:
        """The earliest of the next delivery and every endpoint's deadline."""
        times = [t for t in (ep.get_timer() for ep in self.endpoints.values()) if t is not None]
        delivery = self.link.next_delivery()
        if delivery is not None:
            times.append(delivery)
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next event and process it; False when nothing is left to happen."""
        self.flush()
        when = self.next_event_time()
        if when is None:
            return False
        self.clock.advance_to(max(when, self.now))
        now = self.now
        for dg in self.link.deliver_due(now):
            endpoint = self.endpoints.get(dg.destination)
            if endpoint is None:
                self.undeliverable.append(dg)
                continue
            endpoint.receive_datagram(dg.data, dg.source, now)
            self._flush_one(endpoint)
        for endpoint in list(self.endpoints.values()):
            deadline = endpoint.get_timer()
            if deadline is not None and deadline <= now:
                endpoint.handle_timer(now)
                self._flush_one(endpoint)
        return True

    def run(
        self,
        *,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        max_steps: int = 100_000,
    ) -> None:
        """Step until nothing is left, ``stop()`` holds, or the next event lies after ``until``.

        With ``until`` the clock ends exactly there, so the caller can act "at" that time.
        """
        self.flush()
        for _ in range(max_steps):
            if stop is not None and stop():
                return
            when = self.next_event_time()
            if when is None or (until is not None and when > until):
                if until is not None and until > self.now:
                    self.clock.advance_to(until)
                return
            self.step()
        raise RuntimeError(f"no quiescence after {max_steps} steps (an endpoint keeps a due timer?)")
