"""A located first hop (RFC 3263, found by ``net/sip_resolver.py``) handed to the sans-IO core.

``SipEndpoint.invite(destination=...)`` and ``RegistrationConfig.destination`` send to an address the
adapter resolved, while the Request-URI, To and Route keep the trunk's *name* (Twilio drops an INVITE
whose Request-URI host is not ``<trunk>.pstn.twilio.com``). Everything the INVITE transaction sends
(challenge retries, CANCEL, the ACK of an error) follows the same address, and so do REGISTER
refreshes. The hosts here are names no in-memory endpoint answers to, so a message sent to the name
instead of the address shows up in ``Network.undeliverable``.
"""

from __future__ import annotations

from sipagent.sip.address import Address
from sipagent.sip.digest import Credentials
from sipagent.sip.events import CallAnswered, CallEnded, RegistrationSucceeded
from sipagent.sip.message import Request, Response
from sipagent.sip.registration import RegistrationConfig, refresh_delay
from sipagent.sip.uri import SipUri
from tests.sip_pair import Link, Network
from tests.ua_pair import ALICE, CARRIER, REGISTRAR, Handler, Node, Peer, reply, sdp_body

TRUNK_TARGET = SipUri.parse("sip:+15557654321@mytrunk.pstn.twilio.com")
CONTACT = f"<sip:callee@{CARRIER.host}:{CARRIER.port}>"


def carrier(*, challenge: bool = False, answer: bool = True) -> Handler:
    """A carrier edge: optionally one 407 first, then 100/180 and (when ``answer``) a 200."""
    state = {"challenged": False}

    def handle(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if not isinstance(message, Request):
            return
        if message.method in ("BYE", "CANCEL"):
            peer.send(reply(message, 200), source)
            if message.method == "CANCEL":
                peer.send(reply(peer.requests("INVITE")[-1], 487, to_tag="edge"), source)
            return
        if message.method != "INVITE":
            return
        if challenge and not state["challenged"]:
            state["challenged"] = True
            response = reply(message, 407, to_tag="edge0")
            response.headers.add("Proxy-Authenticate", 'Digest realm="edge", nonce="n1", qop="auth"')
            peer.send(response, source)
            return
        peer.send(reply(message, 100), source)
        peer.send(reply(message, 180, to_tag="edge", contact=CONTACT), source)
        if answer:
            body = sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000",))
            peer.send(reply(message, 200, to_tag="edge", contact=CONTACT, body=body), source)

    return handle


def setup(peer_address: Address = CARRIER, **handler: bool) -> tuple[Network, Node, Peer]:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    peer = Peer(peer_address, carrier(**handler))
    net.add(alice, peer)
    return net, alice, peer


def test_the_invite_goes_to_the_located_address_and_keeps_the_trunk_name() -> None:
    net, alice, peer = setup(challenge=True)
    call_id = alice.endpoint.invite(
        TRUNK_TARGET, 0.0, rtp_port=20000, credentials=Credentials("alice", "pw"), destination=CARRIER
    )
    net.run(until=1.0)
    invites = peer.requests("INVITE")
    assert len(invites) == 2  # the 407's retry went to the located address as well
    assert all(i.uri == str(TRUNK_TARGET) for i in invites)
    assert all(i.to().uri == TRUNK_TARGET for i in invites)
    assert "Proxy-Authorization" in invites[1].headers
    assert len(peer.requests("ACK")) == 2  # the 407's (same transaction) and the 2xx's
    assert alice.of(CallAnswered)[0].call_id == call_id
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)
    assert len(peer.requests("BYE")) == 1  # to the carrier's Contact
    assert len(alice.of(CallEnded)) == 1
    assert net.undeliverable == []


def test_the_route_names_the_outbound_proxy_while_its_located_address_gets_the_invite() -> None:
    net, alice, peer = setup()
    proxy = SipUri.parse("sip:edge.example.test")
    alice.endpoint.invite(TRUNK_TARGET, 0.0, rtp_port=20000, outbound_proxy=proxy, destination=CARRIER)
    net.run(until=1.0)
    (invite,) = peer.requests("INVITE")
    assert invite.headers.get_all("Route") == ["<sip:edge.example.test;lr>"]
    assert invite.uri == str(TRUNK_TARGET)
    assert net.undeliverable == []


def test_a_tcp_destination_sets_via_and_contact_and_turns_retransmission_off() -> None:
    located = Address("tcp", CARRIER.host, CARRIER.port)
    net, alice, peer = setup(located, answer=False)
    peer.handler = None  # silent: a reliable transport must not retransmit (Timer A off)
    alice.endpoint.invite(TRUNK_TARGET, 0.0, rtp_port=20000, destination=located)
    net.run(until=10.0)
    (invite,) = peer.requests("INVITE")
    assert invite.top_via().transport == "TCP"
    assert ";transport=tcp" in (invite.headers.get("Contact") or "")


def test_cancel_and_the_ack_of_the_487_follow_the_located_address() -> None:
    net, alice, peer = setup(answer=False)
    call_id = alice.endpoint.invite(TRUNK_TARGET, 0.0, rtp_port=20000, destination=CARRIER)
    net.run(until=1.0)
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)
    (cancel,) = peer.requests("CANCEL")
    assert cancel.uri == str(TRUNK_TARGET)
    assert len(peer.requests("ACK")) == 1
    assert net.undeliverable == []


def test_without_a_destination_the_uri_host_itself_is_the_address() -> None:
    net, alice, peer = setup()
    alice.endpoint.invite(TRUNK_TARGET, 0.0, rtp_port=20000)
    net.run(until=0.1)
    assert peer.requests() == []
    assert {dg.destination for dg in net.undeliverable} == {Address("udp", "mytrunk.pstn.twilio.com", 5060)}


def registrar(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
    """Grants 20 s to every REGISTER (no challenge: the destination is what is under test)."""
    if isinstance(message, Request) and message.method == "REGISTER":
        response = reply(message, 200, to_tag="reg")
        response.headers.add("Contact", f"{message.headers.get('Contact')};expires=20")
        peer.send(response, source)


def test_register_and_its_refreshes_go_to_the_located_registrar() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    peer = Peer(REGISTRAR, registrar)
    net.add(alice, peer)
    config = RegistrationConfig(
        registrar=SipUri.parse("sip:sip.telnyx.com"),
        aor=SipUri.parse("sip:alice@sip.telnyx.com"),
        destination=REGISTRAR,
    )
    alice.endpoint.register(config, 0.0)
    net.run(until=3 * refresh_delay(20) + 1.0)
    registers = peer.requests("REGISTER")
    assert len(registers) == 4  # the first and three refreshes
    assert all(r.uri == "sip:sip.telnyx.com" for r in registers)
    assert "Route" not in registers[0].headers
    assert alice.of(RegistrationSucceeded) == [RegistrationSucceeded("sip:alice@sip.telnyx.com", 20)] * 4
    assert net.undeliverable == []


def test_register_through_a_located_outbound_proxy_keeps_the_route() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    peer = Peer(REGISTRAR, registrar)
    net.add(alice, peer)
    config = RegistrationConfig(
        registrar=SipUri.parse("sip:sip.telnyx.com"),
        aor=SipUri.parse("sip:alice@sip.telnyx.com"),
        outbound_proxy=SipUri.parse("sip:edge.example.test"),
        destination=REGISTRAR,
    )
    alice.endpoint.register(config, 0.0)
    net.run(until=1.0)
    (register,) = peer.requests("REGISTER")
    assert register.headers.get_all("Route") == ["<sip:edge.example.test;lr>"]
    assert register.uri == "sip:sip.telnyx.com"
    assert net.undeliverable == []
