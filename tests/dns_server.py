"""A tiny authoritative DNS server on 127.0.0.1 for resolver tests (dnspython's message API).

It serves one zone from a dict of record texts, answers NXDOMAIN for names it does not hold and an
empty NOERROR ("no data") for a held name without the asked type, both with the zone's SOA in the
authority section as a real server would. It counts questions (so a test can see the cache at work)
and can be told to stay silent for a name (so a test can see a timeout)::

    async with DnsServer("trunk.example.test", {("trunk.example.test", "A"): ["192.0.2.1"]}) as dns:
        resolver = SipResolver(nameservers=["127.0.0.1"], port=dns.port)

Record texts are in zone-file form (``"10 60 5060 a.trunk.example.test."`` for SRV); names are
relative to nothing, so write them in full.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = Mapping[tuple[str, str], Iterable[str]]


def _key(name: dns.name.Name | str) -> str:
    text = name.to_text() if isinstance(name, dns.name.Name) else name
    return text.lower().rstrip(".")


class DnsServer(asyncio.DatagramProtocol):
    """Authoritative for ``origin`` with ``records``: ``{(name, type): [rdata text, ...]}``."""

    def __init__(self, origin: str, records: Zone, *, ttl: int = 300) -> None:
        self.origin = _key(origin)
        self.ttl = ttl
        self.records: dict[tuple[str, str], list[str]] = {}
        self.set_records(records)
        #: ``(name, type)`` of every question received, in order.
        self.questions: list[tuple[str, str]] = []
        #: Names (any type) the server receives questions for but never answers.
        self.silent: set[str] = set()
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    def set_records(self, records: Zone) -> None:
        """Replace the zone's data (the names held change with it)."""
        self.records = {
            (_key(name), rdtype.upper()): list(texts) for (name, rdtype), texts in records.items()
        }

    def counts(self) -> Counter[tuple[str, str]]:
        """How many times each ``(name, type)`` was asked."""
        return Counter(self.questions)

    async def __aenter__(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = _key(question.name)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.questions.append((name, rdtype))
        if name in self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        texts = self.records.get((name, rdtype))
        if texts:
            response.answer.append(
                dns.rrset.from_text_list(question.name, self.ttl, dns.rdataclass.IN, rdtype, texts)
            )
        else:
            held = any(n == name for n, _ in self.records)
            if not held:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa())
        assert self._transport is not None
        self._transport.sendto(response.to_wire(), addr)

    def _soa(self) -> dns.rrset.RRset:
        origin = dns.name.from_text(self.origin)
        soa = f"ns.{self.origin}. hostmaster.{self.origin}. 1 3600 600 86400 {self.ttl}"
        return dns.rrset.from_text(origin, self.ttl, dns.rdataclass.IN, dns.rdatatype.SOA, soa)
