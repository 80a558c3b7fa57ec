"""asyncio adapter that runs :class:`~sipagent.sip.locate.LocatePlan`'s DNS questions (RFC 3263).

The plan decides what to ask and how to order the answers; this module only asks, with dnspython's
``dns.asyncresolver`` (decision 0019), and remembers answers for their TTL:

* nameservers are the system's (``/etc/resolv.conf``) unless given, with a port, so tests can point
  it at a DNS server on loopback;
* each question has a time limit; a timeout or SERVFAIL counts as "no records" (not cached), so
  location falls through to the next RFC 3263 step exactly as NXDOMAIN does;
* positive answers are cached for their TTL (capped), negative ones (NXDOMAIN, no data) for a
  short fixed time, on an injected monotonic clock;
* a host that yields no address raises :class:`TrunkResolutionError` naming it and every question.

A numeric host needs no DNS at all, so a box without resolver configuration can still reach
``sip:203.0.113.5``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from ..errors import SipAgentError
from ..sip.address import Address, Transport
from ..sip.locate import LocatePlan, NaptrRecord, Query, Record, SrvRecord
from ..sip.uri import SipUri

log = logging.getLogger("sipagent.sip.dns")


class TrunkResolutionError(SipAgentError):
    """No address to send to for a SIP host: ``host`` and every DNS question ``tried`` are named."""

    def __init__(self, host: str, tried: Sequence[str]) -> None:
        self.host = host
        self.tried = tuple(tried)
        detail = "; ".join(self.tried) if self.tried else "nothing could be asked"
        super().__init__(f"cannot locate SIP server for {host!r} (RFC 3263): {detail}")


@dataclass(frozen=True)
class _Cached:
    records: tuple[Record, ...]
    expires_at: float
    note: str | None


class SipResolver:
    """RFC 3263 server location over real DNS, with a TTL cache.

    ``nameservers``/``port``: where to ask (default: the system resolver configuration).
    ``timeout``: seconds one question may take in all (retries to every nameserver included).
    ``max_ttl`` caps a positive answer's lifetime in the cache; ``negative_ttl`` is how long an
    NXDOMAIN or empty answer is remembered. ``clock`` is monotonic seconds; ``rng`` draws the RFC 2782
    weighted order. ``ipv6`` asks AAAA beside A.
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 3.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        ipv6: bool = False,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._ipv6 = ipv6
        self._clock = clock
        self._rng = rng or random.Random()
        self._cache: dict[Query, _Cached] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._setup_error: str | None = None
        try:
            resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        except dns.resolver.NoResolverConfiguration as exc:
            # Kept for later: numeric hosts still work, and a named one says why it cannot.
            self._setup_error = f"no DNS resolver configuration ({exc})"
        else:
            if nameservers is not None:
                resolver.nameservers = list(nameservers)
                resolver.port = port
            resolver.lifetime = timeout
            resolver.timeout = min(resolver.timeout, timeout)
            # Cached here, on our clock; dnspython's own cache runs on wall time.
            resolver.cache = None
            self._resolver = resolver

    async def resolve(self, uri: SipUri, transports: tuple[Transport, ...]) -> list[Address]:
        """The addresses to try for ``uri``, in order, over the ``transports`` we use (most
        preferred first). Raises :class:`TrunkResolutionError` when there is none."""
        plan = LocatePlan(uri, transports, rng=self._rng, ipv6=self._ipv6)
        while queries := plan.next_queries():
            answers = await asyncio.gather(*(self._lookup(query) for query in queries))
            for query, (records, note) in zip(queries, answers, strict=True):
                plan.answer(query, records, note=note)
        addresses = plan.result()
        if not addresses:
            raise TrunkResolutionError(uri.host, plan.tried)
        log.debug("located %s: %s (%s)", uri, [str(a) for a in addresses], "; ".join(plan.tried))
        return addresses

    def clear_cache(self) -> None:
        """Forget every cached answer (after a network change, or a failover that wants fresh data)."""
        self._cache.clear()

    async def _lookup(self, query: Query) -> tuple[tuple[Record, ...], str | None]:
        now = self._clock()
        cached = self._cache.get(query)
        if cached is not None and cached.expires_at > now:
            return cached.records, cached.note
        if self._resolver is None:
            return (), self._setup_error
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(query.name), query.rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            self._remember(query, (), self._negative_ttl, "NXDOMAIN")
            return (), "NXDOMAIN"
        except dns.exception.Timeout:
            return (), "timeout"
        except dns.resolver.NoNameservers:
            return (), "no nameserver answered (SERVFAIL or refused)"
        except dns.exception.DNSException as exc:
            return (), f"failed ({type(exc).__name__})"
        if answer.rrset is None:
            self._remember(query, (), self._negative_ttl, "no data")
            return (), "no data"
        records = tuple(_convert(rdata) for rdata in answer.rrset)
        self._remember(query, records, min(float(answer.rrset.ttl), self._max_ttl), None)
        return records, None

    def _remember(self, query: Query, records: tuple[Record, ...], ttl: float, note: str | None) -> None:
        if ttl > 0:
            self._cache[query] = _Cached(records, self._clock() + ttl, note)


def _name(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True)


def _convert(rdata: object) -> Record:
    """dnspython rdata to the plan's records."""
    if isinstance(rdata, NAPTR):
        return NaptrRecord(
            order=rdata.order,
            preference=rdata.preference,
            flags=rdata.flags.decode("ascii", "replace"),
            service=rdata.service.decode("ascii", "replace"),
            replacement=_name(rdata.replacement),
        )
    if isinstance(rdata, SRV):
        return SrvRecord(rdata.priority, rdata.weight, rdata.port, _name(rdata.target))
    address = getattr(rdata, "address", None)
    if isinstance(address, str):
        return address  # A and AAAA
    raise TypeError(f"unexpected record {rdata!r}")
