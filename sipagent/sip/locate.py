"""RFC 3263 §4 server location for a SIP URI, sans-IO: which DNS questions to ask, and the ordered
list of addresses to try once they are answered.

The core never resolves a name. :class:`LocatePlan` says what to query next and assembles the result;
the asyncio adapter (``net/sip_resolver.py``) only runs the queries::

    plan = LocatePlan(uri, ("udp", "tcp"), rng=random.Random())
    while queries := plan.next_queries():
        for query in queries:            # one batch may be asked in parallel
            plan.answer(query, records)  # () for NXDOMAIN, no data or a failed query
    addresses = plan.result()            # [] when nothing is usable; plan.tried says why

The rules, in the order they are tested (RFC 3263 §4.1, §4.2; RFC 2782):

1. a ``sips:`` URI is reached over TLS only (``_sips._tcp``, ``SIPS+D2T``);
2. a numeric host is not looked up: the URI's transport (UDP for sip:, TLS for sips:) and its port
   or the transport's default port;
3. an explicit port: A (and AAAA when asked for) of the host, on that port, same transport rule;
4. an explicit ``transport`` parameter: SRV for that transport, else A on its default port;
5. otherwise NAPTR of the host: records with flag ``s`` whose service is ``SIP+D2U``, ``SIP+D2T`` or
   ``SIPS+D2T`` for a transport we are configured to use (only ``SIPS+D2T`` for sips:), by order
   then preference; SRV of each one's replacement, tried in that order;
6. no usable NAPTR: SRV of ``_sip._udp``, ``_sip._tcp``, ``_sips._tcp`` in *our* preference order;
7. no SRV either: A of the host on the default port, over UDP (TLS for sips:).

SRV records are tried by priority, and within one priority in RFC 2782's weighted random order
drawn from the injected ``random.Random``; a target of ``.`` means "not offered here". A query that
fails (timeout, SERVFAIL) counts as empty, so location falls through exactly as for NXDOMAIN.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .address import DEFAULT_PORTS, Address, Transport, as_transport
from .uri import SipUri

RecordType = Literal["NAPTR", "SRV", "A", "AAAA"]

#: NAPTR service field (RFC 3263 §4.1) for each transport we speak.
NAPTR_SERVICES: dict[str, Transport] = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
#: SRV owner-name prefix (RFC 3263 §4.1) for each transport.
SRV_PREFIXES: dict[Transport, str] = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


@dataclass(frozen=True)
class Query:
    """One DNS question: an absolute name (no trailing dot) and a record type."""

    name: str
    rdtype: RecordType

    def __str__(self) -> str:
        return f"{self.rdtype} {self.name}"


@dataclass(frozen=True)
class NaptrRecord:
    """The NAPTR fields RFC 3263 uses (the regexp is always empty for SIP)."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True)
class SrvRecord:
    """One SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


#: An answer's records: NAPTR or SRV records, or IP addresses (text) for A/AAAA.
Record = NaptrRecord | SrvRecord | str


def is_numeric_host(host: str) -> bool:
    """True for an IPv4 address or a (bracketed or bare) IPv6 address."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _dns_name(name: str) -> str:
    """Names compare and cache case-insensitively and without the root's trailing dot."""
    return name.lower().rstrip(".") or "."


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within a priority, repeatedly pick one at random with
    probability proportional to its weight (zero weights first, so they keep a small chance).

    Records that tie on everything keep a fixed order before the draw (by target and port) so the
    result depends on the RNG alone, not on the order the DNS server happened to answer in.
    """
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted(
            (r for r in records if r.priority == priority), key=lambda r: (r.weight != 0, r.target, r.port)
        )
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


@dataclass(frozen=True)
class _Target:
    """A host name (or IP) to find addresses for, with the transport and port to use on them."""

    transport: Transport
    host: str
    port: int


class LocatePlan:
    """One run of RFC 3263 §4 for one URI: questions out, answers in, addresses at the end.

    ``transports`` are the transports we are configured to use, most preferred first; nothing
    outside them is ever returned. ``ipv6`` adds AAAA questions beside A (off by default: the
    listeners are usually IPv4 only, and an address we cannot send from is worse than none).
    """

    def __init__(
        self, uri: SipUri, transports: Sequence[Transport], *, rng: random.Random, ipv6: bool = False
    ) -> None:
        self.uri = uri
        self.host = _dns_name(uri.host.strip("[]"))
        self._rng = rng
        self._families: tuple[RecordType, ...] = ("A", "AAAA") if ipv6 else ("A",)
        self._batch: list[Query] = []
        self._answers: dict[Query, tuple[Record, ...]] = {}
        self._stage: Literal["naptr", "srv", "address", "done"] = "done"
        self._srv_names: list[tuple[str, Transport]] = []
        self._targets: list[_Target] = []
        self._result: list[Address] = []
        #: What was asked and what came back, in order (for logs and for the error when empty).
        self.tried: list[str] = []
        self.transports = self._usable_transports(transports)
        if self.transports:
            self._begin()

    # -- the caller's surface --------------------------------------------------------------------
    def next_queries(self) -> tuple[Query, ...]:
        """The questions still unanswered in the current step (empty once the plan is done)."""
        return tuple(q for q in self._batch if q not in self._answers)

    def answer(self, query: Query, records: Sequence[Record], *, note: str | None = None) -> None:
        """Record the answer to ``query``: its records, or ``()`` for NXDOMAIN, no data or a failure
        (``note`` says which: ``"NXDOMAIN"``, ``"timeout"``…; it only goes into :attr:`tried`)."""
        if query not in self._batch or query in self._answers:
            raise ValueError(f"{query} was not asked for, or is already answered")
        self._answers[query] = tuple(records)
        self.tried.append(f"{query}: {len(records)} record(s)" if records else f"{query}: {note or 'none'}")
        if not self.next_queries():
            self._advance()

    @property
    def done(self) -> bool:
        """True once no question is left and :meth:`result` is final."""
        return self._stage == "done"

    def result(self) -> list[Address]:
        """The addresses to try, in order (RFC 3263 §4.3: on a transport error or a 503, the next)."""
        if not self.done:
            raise ValueError(f"location of {self.uri} is not finished: {self.next_queries()} unanswered")
        return list(self._result)

    # -- steps -------------------------------------------------------------------------------------
    def _usable_transports(self, configured: Sequence[Transport]) -> tuple[Transport, ...]:
        if self.uri.scheme == "sips":
            if "tls" not in configured:
                self.tried.append("sips: URI needs TLS, which is not configured")
                return ()
            return ("tls",)
        return tuple(dict.fromkeys(configured))

    def _default_transport(self) -> Transport:
        # RFC 3263 §4.1: UDP for sip:, TLS for sips: when nothing else says. A box configured
        # without UDP uses its first transport instead of one it cannot send on.
        if self.uri.scheme == "sips":
            return "tls"
        return "udp" if "udp" in self.transports else self.transports[0]

    def _explicit_transport(self) -> Transport | None:
        name = self.uri.params.get("transport")
        if not name:
            return None  # a sips: URI without one still goes through NAPTR, limited to SIPS+D2T
        if self.uri.scheme == "sips":
            return "tls"  # sips:…;transport=tcp is TLS over TCP (RFC 3261 §26.2.2)
        try:
            return as_transport(name)
        except ValueError:
            return None

    def _begin(self) -> None:
        explicit = self._explicit_transport()
        if self.uri.params.get("transport") and explicit is None:
            self.tried.append(f"transport {self.uri.params['transport']!r} is not supported")
            return
        if explicit is not None and explicit not in self.transports:
            self.tried.append(f"transport {explicit} is not configured")
            return
        transport = explicit or self._default_transport()
        if is_numeric_host(self.host):
            port = self.uri.port or DEFAULT_PORTS[transport]
            self._result = [Address(transport, self.host, port)]
            self.tried.append(f"{self.host} is numeric: no lookup")
            return
        if self.uri.port is not None:
            self._resolve_targets([_Target(transport, self.host, self.uri.port)])
        elif explicit is not None:
            self._query_srv([(f"{SRV_PREFIXES[explicit]}.{self.host}", explicit)])
        else:
            self._ask("naptr", [Query(self.host, "NAPTR")])

    def _ask(self, stage: Literal["naptr", "srv", "address"], queries: list[Query]) -> None:
        self._stage = stage
        self._batch = list(dict.fromkeys(queries))
        self._answers = {}

    def _advance(self) -> None:
        if self._stage == "naptr":
            self._after_naptr()
        elif self._stage == "srv":
            self._after_srv()
        elif self._stage == "address":
            self._after_addresses()

    def _after_naptr(self) -> None:
        records = [r for r in self._answers[self._batch[0]] if isinstance(r, NaptrRecord)]
        usable: list[tuple[NaptrRecord, Transport]] = []
        for record in sorted(records, key=lambda r: (r.order, r.preference)):
            transport = NAPTR_SERVICES.get(record.service.lower())
            # Only "s" records lead straight to SRV; others would need a further NAPTR round.
            if (
                transport is not None
                and transport in self.transports
                and record.flags.lower() == "s"
                and record.replacement
            ):
                usable.append((record, transport))
        if usable:
            self._query_srv([(_dns_name(r.replacement), t) for r, t in usable])
        else:
            self._query_srv([(f"{SRV_PREFIXES[t]}.{self.host}", t) for t in self.transports])

    def _query_srv(self, names: list[tuple[str, Transport]]) -> None:
        self._srv_names = list(dict.fromkeys(names))
        self._ask("srv", [Query(name, "SRV") for name, _ in self._srv_names])

    def _after_srv(self) -> None:
        targets: list[_Target] = []
        for name, transport in self._srv_names:
            records = [r for r in self._answers[Query(name, "SRV")] if isinstance(r, SrvRecord)]
            for record in order_srv(records, self._rng):
                if _dns_name(record.target) != ".":
                    targets.append(_Target(transport, _dns_name(record.target), record.port))
        if not targets:
            # No SRV at all (or every record said "not here"): the host itself on the default port.
            transport = self._explicit_transport() or self._default_transport()
            targets = [_Target(transport, self.host, DEFAULT_PORTS[transport])]
        self._resolve_targets(targets)

    def _resolve_targets(self, targets: list[_Target]) -> None:
        self._targets = targets
        queries = [
            Query(t.host, family) for t in targets if not is_numeric_host(t.host) for family in self._families
        ]
        if queries:
            self._ask("address", queries)
        else:
            self._after_addresses()

    def _after_addresses(self) -> None:
        found: dict[Address, None] = {}
        for target in self._targets:
            if is_numeric_host(target.host):
                hosts: list[str] = [target.host]
            else:
                hosts = [
                    r
                    for family in self._families
                    for r in self._answers.get(Query(target.host, family), ())
                    if isinstance(r, str)
                ]
            for host in hosts:
                found.setdefault(Address(target.transport, host, target.port), None)
        self._result = list(found)
        self._stage = "done"
        self._batch = []
