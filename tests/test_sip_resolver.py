"""RFC 3263 location over real DNS: :class:`SipResolver` against a loopback authoritative server.

``tests/dns_server.py`` serves a fake ``example.test`` zone on 127.0.0.1 on a random UDP port; the
resolver is pointed at it, so these tests send nothing off the box. The clock is a variable the test
moves, so TTL expiry is checked without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from sipagent.errors import SipAgentError
from sipagent.net.sip_resolver import SipResolver, TrunkResolutionError
from sipagent.sip.address import Address
from sipagent.sip.uri import SipUri
from tests.dns_server import DnsServer

ZONE = {
    # NAPTR → SRV → A, as Telnyx publishes for sip.telnyx.com (two addresses behind one name).
    ("trunk.example.test", "NAPTR"): [
        '10 10 "s" "SIP+D2U" "" _sip._udp.trunk.example.test.',
        '20 10 "s" "SIP+D2T" "" _sip._tcp.trunk.example.test.',
        '30 10 "s" "SIPS+D2T" "" _sips._tcp.trunk.example.test.',
    ],
    ("_sip._udp.trunk.example.test", "SRV"): [
        "10 50 5060 edge1.example.test.",
        "10 50 5060 edge2.example.test.",
    ],
    ("_sip._tcp.trunk.example.test", "SRV"): ["10 0 5060 edge1.example.test."],
    ("_sips._tcp.trunk.example.test", "SRV"): ["10 0 5061 edge1.example.test."],
    ("edge1.example.test", "A"): ["192.0.2.11"],
    ("edge2.example.test", "A"): ["192.0.2.12"],
    # SRV only (no NAPTR), on a port of its own.
    ("_sip._udp.srvonly.example.test", "SRV"): ["10 0 5070 edge2.example.test."],
    # A only.
    ("aonly.example.test", "A"): ["192.0.2.30", "192.0.2.31"],
}


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer("example.test", ZONE, ttl=300) as dns:
        yield dns


def make_resolver(server: DnsServer, clock: Clock | None = None, **kwargs: float) -> SipResolver:
    return SipResolver(
        nameservers=["127.0.0.1"],
        port=server.port,
        clock=clock or Clock(),
        rng=random.Random(4),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_the_naptr_path_gives_every_address_in_naptr_then_srv_order(server: DnsServer) -> None:
    resolver = make_resolver(server)
    addresses = await resolver.resolve(SipUri.parse("sip:trunk.example.test"), ("udp", "tcp"))
    udp = [a for a in addresses if a.transport == "udp"]
    assert {a.host for a in udp} == {"192.0.2.11", "192.0.2.12"}  # both, in a weighted order
    assert addresses[:2] == udp
    assert addresses[2:] == [Address("tcp", "192.0.2.11", 5060)]
    assert ("_sips._tcp.trunk.example.test", "SRV") not in server.questions  # TLS not configured
    assert server.questions[0] == ("trunk.example.test", "NAPTR")


async def test_a_sips_uri_is_located_over_tls_only(server: DnsServer) -> None:
    resolver = make_resolver(server)
    addresses = await resolver.resolve(SipUri.parse("sips:trunk.example.test"), ("udp", "tcp", "tls"))
    assert addresses == [Address("tls", "192.0.2.11", 5061)]


async def test_the_srv_only_path(server: DnsServer) -> None:
    resolver = make_resolver(server)
    addresses = await resolver.resolve(SipUri.parse("sip:srvonly.example.test"), ("udp", "tcp"))
    assert addresses == [Address("udp", "192.0.2.12", 5070)]
    assert server.questions[:3] == [
        ("srvonly.example.test", "NAPTR"),
        ("_sip._udp.srvonly.example.test", "SRV"),
        ("_sip._tcp.srvonly.example.test", "SRV"),
    ]


async def test_the_a_record_fallback_on_the_default_port(server: DnsServer) -> None:
    resolver = make_resolver(server)
    addresses = await resolver.resolve(SipUri.parse("sip:+15551234567@aonly.example.test"), ("udp",))
    # An RRset has no order (servers rotate it): both addresses, in whichever order DNS gave.
    assert sorted(addresses, key=str) == [
        Address("udp", "192.0.2.30", 5060),
        Address("udp", "192.0.2.31", 5060),
    ]


async def test_an_explicit_port_asks_only_for_a_records(server: DnsServer) -> None:
    resolver = make_resolver(server)
    addresses = await resolver.resolve(
        SipUri.parse("sip:aonly.example.test:5080;transport=tcp"), ("udp", "tcp")
    )
    assert sorted(addresses, key=str) == [
        Address("tcp", "192.0.2.30", 5080),
        Address("tcp", "192.0.2.31", 5080),
    ]
    assert server.questions == [("aonly.example.test", "A")]


async def test_a_numeric_host_asks_no_question(server: DnsServer) -> None:
    resolver = make_resolver(server)
    assert await resolver.resolve(SipUri.parse("sip:203.0.113.9"), ("udp",)) == [
        Address("udp", "203.0.113.9", 5060)
    ]
    assert server.questions == []


async def test_an_unknown_host_raises_naming_it_and_every_question(server: DnsServer) -> None:
    resolver = make_resolver(server)
    with pytest.raises(TrunkResolutionError) as caught:
        await resolver.resolve(SipUri.parse("sip:missing.example.test"), ("udp",))
    error = caught.value
    assert isinstance(error, SipAgentError)
    assert error.host == "missing.example.test"
    assert error.tried == (
        "NAPTR missing.example.test: NXDOMAIN",
        "SRV _sip._udp.missing.example.test: NXDOMAIN",
        "A missing.example.test: NXDOMAIN",
    )
    assert "missing.example.test" in str(error) and "NXDOMAIN" in str(error)


async def test_answers_are_cached_for_their_ttl(server: DnsServer) -> None:
    clock = Clock()
    resolver = make_resolver(server, clock)
    uri = SipUri.parse("sip:aonly.example.test")
    first = await resolver.resolve(uri, ("udp",))
    asked = len(server.questions)
    assert asked == 3  # NAPTR (NXDOMAIN), SRV (NXDOMAIN), A
    clock.now += 29.0
    assert await resolver.resolve(uri, ("udp",)) == first
    assert len(server.questions) == asked  # everything from the cache, the negatives included
    clock.now += 2.0  # past the 30 s negative TTL, inside the 300 s positive one
    await resolver.resolve(uri, ("udp",))
    assert server.questions[asked:] == [
        ("aonly.example.test", "NAPTR"),
        ("_sip._udp.aonly.example.test", "SRV"),
    ]
    server.set_records({**ZONE, ("aonly.example.test", "A"): ["192.0.2.40"]})
    clock.now += 300.0  # the A record's TTL has run out: the new data is seen
    assert await resolver.resolve(uri, ("udp",)) == [Address("udp", "192.0.2.40", 5060)]
    resolver.clear_cache()
    before = len(server.questions)
    await resolver.resolve(uri, ("udp",))
    assert len(server.questions) == before + 3


async def test_a_ttl_is_capped_by_max_ttl(server: DnsServer) -> None:
    clock = Clock()
    resolver = make_resolver(server, clock, max_ttl=60.0, negative_ttl=1000.0)
    uri = SipUri.parse("sip:aonly.example.test")
    await resolver.resolve(uri, ("udp",))
    clock.now += 61.0
    await resolver.resolve(uri, ("udp",))
    assert server.counts()[("aonly.example.test", "A")] == 2
    assert server.counts()[("aonly.example.test", "NAPTR")] == 1


async def test_a_lookup_that_times_out_falls_through_and_is_not_cached(server: DnsServer) -> None:
    server.silent.add("srvonly.example.test")  # the NAPTR question is never answered
    resolver = make_resolver(server, timeout=0.3)
    uri = SipUri.parse("sip:srvonly.example.test")
    assert await resolver.resolve(uri, ("udp",)) == [Address("udp", "192.0.2.12", 5070)]
    server.silent.clear()
    naptr_asked = server.counts()[("srvonly.example.test", "NAPTR")]
    await resolver.resolve(uri, ("udp",))
    assert server.counts()[("srvonly.example.test", "NAPTR")] == naptr_asked + 1  # asked again


async def test_a_host_whose_every_lookup_times_out_names_the_timeouts(server: DnsServer) -> None:
    server.silent.update({"aonly.example.test", "_sip._udp.aonly.example.test"})
    resolver = make_resolver(server, timeout=0.2)
    with pytest.raises(TrunkResolutionError, match="timeout"):
        await resolver.resolve(SipUri.parse("sip:aonly.example.test"), ("udp",))
