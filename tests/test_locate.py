"""RFC 3263 §4 server location, sans-IO: the plan's questions and the order of its answers.

A test feeds a dict of DNS answers to :class:`LocatePlan` (no DNS, no sockets) and checks which
questions were asked, in which batches, and the addresses that come out. Weighted SRV order is drawn
from a seeded ``random.Random``, so it is reproducible.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from sipagent.sip.address import Address, Transport
from sipagent.sip.locate import LocatePlan, NaptrRecord, Query, Record, SrvRecord, order_srv
from sipagent.sip.uri import SipUri

HOST = "trunk.example.test"
Zone = Mapping[Query, Sequence[Record]]


def naptr(order: int, pref: int, service: str, replacement: str, flags: str = "s") -> NaptrRecord:
    return NaptrRecord(order, pref, flags, service, replacement)


def run(
    uri: str,
    zone: Zone,
    transports: tuple[Transport, ...] = ("udp", "tcp", "tls"),
    *,
    seed: int = 0,
    ipv6: bool = False,
) -> tuple[list[Address], list[list[Query]], LocatePlan]:
    """Answer the plan from ``zone`` (missing names: NXDOMAIN); returns addresses, batches, plan."""
    plan = LocatePlan(SipUri.parse(uri), transports, rng=random.Random(seed), ipv6=ipv6)
    batches: list[list[Query]] = []
    while queries := plan.next_queries():
        batches.append(list(queries))
        for query in queries:
            records = zone.get(query, ())
            plan.answer(query, records, note=None if records else "NXDOMAIN")
    assert plan.done
    return plan.result(), batches, plan


# -- no lookup, or A only -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+15551234567@203.0.113.5", Address("udp", "203.0.113.5", 5060)),
        ("sip:203.0.113.5:5070;transport=tcp", Address("tcp", "203.0.113.5", 5070)),
        ("sip:[2001:db8::1]:5080", Address("udp", "2001:db8::1", 5080)),
        ("sips:203.0.113.5", Address("tls", "203.0.113.5", 5061)),
        ("sip:203.0.113.5;transport=TLS", Address("tls", "203.0.113.5", 5061)),
    ],
)
def test_a_numeric_host_is_not_looked_up(uri: str, expected: Address) -> None:
    addresses, batches, plan = run(uri, {})
    assert addresses == [expected]
    assert batches == []
    assert plan.tried == [f"{expected.host} is numeric: no lookup"]


def test_an_explicit_port_asks_for_a_records_only() -> None:
    zone = {Query(HOST, "A"): ["198.51.100.1", "198.51.100.2"]}
    addresses, batches, _ = run(f"sip:{HOST}:5080", zone)
    assert batches == [[Query(HOST, "A")]]
    assert addresses == [Address("udp", "198.51.100.1", 5080), Address("udp", "198.51.100.2", 5080)]


def test_an_explicit_port_with_ipv6_asks_a_and_aaaa_in_one_batch() -> None:
    zone = {Query(HOST, "A"): ["198.51.100.1"], Query(HOST, "AAAA"): ["2001:db8::5"]}
    addresses, batches, _ = run(f"sip:{HOST}:5080;transport=tcp", zone, ipv6=True)
    assert batches == [[Query(HOST, "A"), Query(HOST, "AAAA")]]
    assert addresses == [Address("tcp", "198.51.100.1", 5080), Address("tcp", "2001:db8::5", 5080)]


def test_the_host_name_is_compared_without_case_or_trailing_dot() -> None:
    addresses, batches, _ = run("sip:Trunk.Example.TEST.:5060", {Query(HOST, "A"): ["198.51.100.1"]})
    assert batches == [[Query(HOST, "A")]]
    assert addresses == [Address("udp", "198.51.100.1", 5060)]


# -- explicit transport ---------------------------------------------------------------------------
def test_an_explicit_transport_asks_srv_for_that_transport_only() -> None:
    zone: Zone = {
        Query(f"_sip._tcp.{HOST}", "SRV"): [SrvRecord(10, 0, 5070, "edge1.example.test")],
        Query("edge1.example.test", "A"): ["198.51.100.11"],
    }
    addresses, batches, _ = run(f"sip:{HOST};transport=tcp", zone)
    assert batches == [[Query(f"_sip._tcp.{HOST}", "SRV")], [Query("edge1.example.test", "A")]]
    assert addresses == [Address("tcp", "198.51.100.11", 5070)]


@pytest.mark.parametrize(
    ("uri", "transport", "port"),
    [(f"sip:{HOST};transport=tls", "tls", 5061), (f"sips:{HOST};transport=tcp", "tls", 5061)],
)
def test_an_explicit_transport_without_srv_uses_a_on_its_default_port(
    uri: str, transport: Transport, port: int
) -> None:
    addresses, batches, _ = run(uri, {Query(HOST, "A"): ["198.51.100.1"]})
    assert batches == [[Query(f"_sips._tcp.{HOST}", "SRV")], [Query(HOST, "A")]]
    assert addresses == [Address(transport, "198.51.100.1", port)]


def test_an_explicit_transport_we_do_not_use_gives_nothing_and_says_so() -> None:
    addresses, batches, plan = run(f"sip:{HOST};transport=tcp", {}, ("udp",))
    assert addresses == [] and batches == []
    assert plan.tried == ["transport tcp is not configured"]


def test_an_unsupported_transport_parameter_gives_nothing_and_says_so() -> None:
    addresses, _, plan = run(f"sip:{HOST};transport=ws", {})
    assert addresses == []
    assert plan.tried == ["transport 'ws' is not supported"]


# -- NAPTR ------------------------------------------------------------------------------------------
TELNYX_LIKE: Zone = {
    Query(HOST, "NAPTR"): [
        naptr(30, 10, "SIP+D2U", f"_sip._udp.{HOST}."),
        naptr(10, 20, "SIP+D2T", f"_sip._tcp.{HOST}."),
        naptr(10, 10, "SIPS+D2T", f"_sips._tcp.{HOST}."),
        naptr(5, 10, "E2U+sip", "whatever.example.test.", flags="u"),  # not a SIP transport
    ],
    Query(f"_sips._tcp.{HOST}", "SRV"): [SrvRecord(10, 10, 5061, "a.example.test.")],
    Query(f"_sip._tcp.{HOST}", "SRV"): [
        SrvRecord(20, 10, 5060, "b.example.test."),
        SrvRecord(10, 10, 5060, "a.example.test."),
    ],
    Query(f"_sip._udp.{HOST}", "SRV"): [SrvRecord(10, 10, 5060, "a.example.test.")],
    Query("a.example.test", "A"): ["192.0.2.10"],
    Query("b.example.test", "A"): ["192.0.2.20"],
}


def test_naptr_orders_by_order_then_preference_and_srv_by_priority() -> None:
    addresses, batches, _ = run(f"sip:{HOST}", TELNYX_LIKE)
    assert batches == [
        [Query(HOST, "NAPTR")],
        [
            Query(f"_sips._tcp.{HOST}", "SRV"),
            Query(f"_sip._tcp.{HOST}", "SRV"),
            Query(f"_sip._udp.{HOST}", "SRV"),
        ],
        [Query("a.example.test", "A"), Query("b.example.test", "A")],
    ]
    assert addresses == [
        Address("tls", "192.0.2.10", 5061),
        Address("tcp", "192.0.2.10", 5060),
        Address("tcp", "192.0.2.20", 5060),
        Address("udp", "192.0.2.10", 5060),
    ]


def test_naptr_services_for_transports_we_do_not_use_are_skipped() -> None:
    addresses, batches, _ = run(f"sip:{HOST}", TELNYX_LIKE, ("udp", "tcp"))
    assert batches[1] == [Query(f"_sip._tcp.{HOST}", "SRV"), Query(f"_sip._udp.{HOST}", "SRV")]
    assert [a.transport for a in addresses] == ["tcp", "tcp", "udp"]


def test_a_sips_uri_uses_only_sips_naptr_records_and_tls() -> None:
    addresses, batches, _ = run(f"sips:{HOST}", TELNYX_LIKE)
    assert batches[1] == [Query(f"_sips._tcp.{HOST}", "SRV")]
    assert addresses == [Address("tls", "192.0.2.10", 5061)]


def test_a_sips_uri_without_tls_configured_gives_nothing_and_says_so() -> None:
    addresses, batches, plan = run(f"sips:{HOST}", TELNYX_LIKE, ("udp", "tcp"))
    assert addresses == [] and batches == []
    assert plan.tried == ["sips: URI needs TLS, which is not configured"]


def test_naptr_records_without_the_s_flag_or_for_other_services_are_ignored() -> None:
    zone: Zone = {
        Query(HOST, "NAPTR"): [
            naptr(10, 10, "SIP+D2U", f"_sip._udp.{HOST}.", flags="a"),
            naptr(10, 10, "SIP+D2S", f"_sip._sctp.{HOST}."),
        ],
        Query(f"_sip._udp.{HOST}", "SRV"): [SrvRecord(10, 10, 5062, "a.example.test.")],
        Query("a.example.test", "A"): ["192.0.2.10"],
    }
    addresses, batches, _ = run(f"sip:{HOST}", zone, ("udp",))
    assert batches[1] == [Query(f"_sip._udp.{HOST}", "SRV")]  # the plain SRV fallback
    assert addresses == [Address("udp", "192.0.2.10", 5062)]


def test_naptr_whose_srv_are_all_missing_falls_back_to_a_records() -> None:
    zone: Zone = {
        Query(HOST, "NAPTR"): [naptr(10, 10, "SIP+D2U", f"_sip._udp.{HOST}.")],
        Query(HOST, "A"): ["192.0.2.99"],
    }
    addresses, batches, _ = run(f"sip:{HOST}", zone)
    assert batches[-1] == [Query(HOST, "A")]
    assert addresses == [Address("udp", "192.0.2.99", 5060)]


# -- SRV without NAPTR, then A ------------------------------------------------------------------------
def test_without_naptr_srv_is_asked_for_each_transport_in_our_preference_order() -> None:
    zone: Zone = {
        Query(f"_sip._udp.{HOST}", "SRV"): [SrvRecord(10, 10, 5060, "a.example.test")],
        Query(f"_sip._tcp.{HOST}", "SRV"): [SrvRecord(10, 10, 5060, "b.example.test")],
        Query("a.example.test", "A"): ["192.0.2.10"],
        Query("b.example.test", "A"): ["192.0.2.20"],
    }
    addresses, batches, plan = run(f"sip:{HOST}", zone, ("tcp", "udp"))
    assert batches[:2] == [
        [Query(HOST, "NAPTR")],
        [Query(f"_sip._tcp.{HOST}", "SRV"), Query(f"_sip._udp.{HOST}", "SRV")],
    ]
    assert addresses == [Address("tcp", "192.0.2.20", 5060), Address("udp", "192.0.2.10", 5060)]
    assert plan.tried[0] == f"NAPTR {HOST}: NXDOMAIN"


def test_without_naptr_or_srv_the_host_is_used_on_the_default_port_over_udp() -> None:
    addresses, batches, plan = run(f"sip:{HOST}", {Query(HOST, "A"): ["192.0.2.1", "192.0.2.2"]})
    assert batches == [
        [Query(HOST, "NAPTR")],
        [
            Query(f"_sip._udp.{HOST}", "SRV"),
            Query(f"_sip._tcp.{HOST}", "SRV"),
            Query(f"_sips._tcp.{HOST}", "SRV"),
        ],
        [Query(HOST, "A")],
    ]
    assert addresses == [Address("udp", "192.0.2.1", 5060), Address("udp", "192.0.2.2", 5060)]
    assert plan.tried[-1] == f"A {HOST}: 2 record(s)"


def test_a_box_without_udp_falls_back_to_its_first_transport() -> None:
    addresses, _, _ = run(f"sip:{HOST}", {Query(HOST, "A"): ["192.0.2.1"]}, ("tcp",))
    assert addresses == [Address("tcp", "192.0.2.1", 5060)]


def test_a_sips_uri_without_srv_uses_tls_on_5061() -> None:
    addresses, batches, _ = run(f"sips:{HOST}", {Query(HOST, "A"): ["192.0.2.1"]})
    assert batches[1] == [Query(f"_sips._tcp.{HOST}", "SRV")]
    assert addresses == [Address("tls", "192.0.2.1", 5061)]


def test_an_srv_target_of_dot_means_not_offered_here() -> None:
    zone: Zone = {
        Query(f"_sip._udp.{HOST}", "SRV"): [SrvRecord(0, 0, 0, ".")],
        Query(f"_sip._tcp.{HOST}", "SRV"): [SrvRecord(10, 0, 5060, "b.example.test")],
        Query("b.example.test", "A"): ["192.0.2.20"],
    }
    addresses, _, _ = run(f"sip:{HOST}", zone, ("udp", "tcp"))
    assert addresses == [Address("tcp", "192.0.2.20", 5060)]


def test_an_address_reached_two_ways_is_listed_once() -> None:
    zone: Zone = {
        Query(f"_sip._udp.{HOST}", "SRV"): [
            SrvRecord(10, 0, 5060, "a.example.test"),
            SrvRecord(20, 0, 5060, "alias.example.test"),
        ],
        Query("a.example.test", "A"): ["192.0.2.10"],
        Query("alias.example.test", "A"): ["192.0.2.10", "192.0.2.11"],
    }
    addresses, _, _ = run(f"sip:{HOST}", zone, ("udp",))
    assert addresses == [Address("udp", "192.0.2.10", 5060), Address("udp", "192.0.2.11", 5060)]


def test_a_numeric_srv_target_is_used_without_a_lookup() -> None:
    zone: Zone = {Query(f"_sip._udp.{HOST}", "SRV"): [SrvRecord(10, 0, 5070, "192.0.2.7")]}
    addresses, batches, _ = run(f"sip:{HOST}", zone, ("udp",))
    assert len(batches) == 2
    assert addresses == [Address("udp", "192.0.2.7", 5070)]


def test_nothing_resolves_gives_an_empty_result_with_every_question_listed() -> None:
    addresses, _, plan = run(f"sip:{HOST}", {}, ("udp",))
    assert addresses == []
    assert plan.tried == [
        f"NAPTR {HOST}: NXDOMAIN",
        f"SRV _sip._udp.{HOST}: NXDOMAIN",
        f"A {HOST}: NXDOMAIN",
    ]


# -- RFC 2782 weights -------------------------------------------------------------------------------
def test_srv_priority_is_strict_and_weights_draw_in_proportion() -> None:
    records = [
        SrvRecord(20, 100, 5060, "backup.example.test"),
        SrvRecord(10, 90, 5060, "big.example.test"),
        SrvRecord(10, 10, 5060, "small.example.test"),
        SrvRecord(10, 0, 5060, "zero.example.test"),
    ]
    rng = random.Random(1234)
    firsts: Counter[str] = Counter()
    for _ in range(5000):
        ordered = order_srv(records, rng)
        assert ordered[-1].target == "backup.example.test"  # priority 20 always after 10
        assert sorted(r.target for r in ordered) == sorted(r.target for r in records)
        firsts[ordered[0].target] += 1
    # Draw r in [0, 100]: zero wins on r == 0 (1/101), big on 1..90, small on 91..100.
    assert firsts["big.example.test"] / 5000 == pytest.approx(90 / 101, abs=0.02)
    assert firsts["small.example.test"] / 5000 == pytest.approx(10 / 101, abs=0.02)
    assert 0 < firsts["zero.example.test"] < 150


def test_the_weighted_order_depends_on_the_seed_not_on_the_answer_order() -> None:
    records = [SrvRecord(10, w, 5060, f"h{w}.example.test") for w in (10, 20, 30, 40)]
    one = order_srv(records, random.Random(7))
    assert order_srv(list(reversed(records)), random.Random(7)) == one
    orders = {tuple(r.target for r in order_srv(records, random.Random(seed))) for seed in range(50)}
    assert len(orders) > 5  # the seed really moves it


def test_the_plan_draws_srv_weights_from_its_rng() -> None:
    zone: Zone = {
        Query(f"_sip._udp.{HOST}", "SRV"): [
            SrvRecord(10, 50, 5060, "a.example.test"),
            SrvRecord(10, 50, 5060, "b.example.test"),
        ],
        Query("a.example.test", "A"): ["192.0.2.10"],
        Query("b.example.test", "A"): ["192.0.2.20"],
    }
    seen = {tuple(a.host for a in run(f"sip:{HOST}", zone, ("udp",), seed=s)[0]) for s in range(20)}
    assert seen == {("192.0.2.10", "192.0.2.20"), ("192.0.2.20", "192.0.2.10")}
    assert run(f"sip:{HOST}", zone, ("udp",), seed=3)[0] == run(f"sip:{HOST}", zone, ("udp",), seed=3)[0]


# -- misuse ------------------------------------------------------------------------------------------
def test_answering_a_question_not_asked_or_twice_is_refused() -> None:
    plan = LocatePlan(SipUri.parse(f"sip:{HOST}"), ("udp",), rng=random.Random(0))
    with pytest.raises(ValueError, match="not asked"):
        plan.answer(Query("other.example.test", "A"), ["192.0.2.1"])
    with pytest.raises(ValueError, match="not finished"):
        plan.result()
    plan.answer(Query(HOST, "NAPTR"), [])
    with pytest.raises(ValueError, match="already answered"):
        plan.answer(Query(HOST, "NAPTR"), [])
