"""Whole calls between two :class:`SipEndpoint` instances over an in-memory lossy link.

Alice (192.0.2.1) places calls, Bob (192.0.2.2) takes them; both are the real UA core, stepped on
a virtual clock with no sockets and no sleeping. Each test asserts the application events on both
sides and the messages on the wire (RFC 3261 §13–§17, sip-trunks.md "Failure signatures").
"""

from __future__ import annotations

import pytest

from sipagent.sip.address import Address
from sipagent.sip.errors import LocalProtocolError
from sipagent.sip.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    EarlyMedia,
    Event,
    IncomingCall,
)
from sipagent.sip.message import Request, Response
from sipagent.sip.uri import SipUri
from tests.sip_pair import Link, Network, delay, drop, is_request, is_response
from tests.ua_pair import (
    ALICE,
    BOB,
    CARRIER,
    Node,
    Peer,
    RawDialog,
    config_for,
    first_lines,
    reply,
    sdp_body,
    sent_by,
    via_branch,
    wire,
)

BOB_URI = SipUri.parse("sip:+15552223333@192.0.2.2")
ALICE_RTP, BOB_RTP = 20000, 30000


def ring_and_answer(node: Node, event: Event, now: float) -> None:
    """Bob's app: ring and answer every call at once."""
    if isinstance(event, IncomingCall):
        node.endpoint.ring(event.call_id, now)
        node.endpoint.answer(event.call_id, now, rtp_port=BOB_RTP)


def ring_only(node: Node, event: Event, now: float) -> None:
    if isinstance(event, IncomingCall):
        node.endpoint.ring(event.call_id, now)


def make_pair(link: Link, bob_app=ring_and_answer) -> tuple[Network, Node, Node]:
    alice = Node(ALICE, seed=1)
    bob = Node(BOB, seed=2, app=bob_app)
    net = Network(link)
    net.add(alice, bob)
    return net, alice, bob


def call(net: Network, alice: Node) -> str:
    return alice.endpoint.invite(BOB_URI, net.now, rtp_port=ALICE_RTP)


def requests_from(link: Link, source, method: str) -> list[Request]:
    return [m for m in wire(link, sent_by(source)) if isinstance(m, Request) and m.method == method]


def responses_from(link: Link, source, status: int, method: str = "INVITE") -> list[Response]:
    return [
        m
        for m in wire(link, sent_by(source))
        if isinstance(m, Response) and m.status == status and m.cseq().method == method
    ]


def assert_quiet(net: Network, *nodes: Node) -> None:
    """Run to quiescence; every call and transaction is gone (nothing leaks)."""
    net.run()
    for node in nodes:
        assert node.endpoint.calls == {}
        assert node.endpoint.get_timer() is None


# ---------------------------------------------------------------------------------------------
# 1. The basic call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("who_hangs_up", ["alice", "bob"])
def test_basic_call_ring_answer_ack_bye(who_hangs_up: str) -> None:
    link = Link(latency=0.01)
    net, alice, bob = make_pair(link, bob_app=None)
    call_id = call(net, alice)
    net.run(until=0.015)
    # 100 Trying goes out the moment the INVITE arrives, with IncomingCall.
    assert first_lines(link, BOB) == ["100 INVITE"]
    (incoming,) = bob.of(IncomingCall)
    assert incoming.call_id == call_id and incoming.callee == BOB_URI
    assert str(incoming.caller.uri) == "sip:sipagent@192.0.2.1"

    bob.endpoint.ring(call_id, net.now)
    net.run(until=0.5)
    assert alice.of(CallProgress) == [CallProgress(call_id, 180, "Ringing")]

    bob_media = bob.endpoint.answer(call_id, net.now, rtp_port=BOB_RTP)
    assert bob_media is not None and bob_media.remote_port == ALICE_RTP and bob_media.codec == "PCMU"
    net.run(until=1.0)
    (answered,) = alice.of(CallAnswered)
    media = answered.media
    assert media is not None
    assert (media.codec, media.payload_type, media.remote_address, media.remote_port) == (
        "PCMU",
        0,
        "192.0.2.2",
        BOB_RTP,
    )
    assert media.dtmf_payload_type == 101 and media.send and media.receive and not media.on_hold
    assert bob.of(CallConfirmed) == [CallConfirmed(call_id, None)]
    assert alice.times(CallAnswered) == [pytest.approx(0.51)]
    assert bob.times(CallConfirmed) == [pytest.approx(0.52)]

    (invite,) = requests_from(link, ALICE, "INVITE")
    (ok,) = responses_from(link, BOB, 200)
    (ack,) = requests_from(link, ALICE, "ACK")
    # §13.2.2.4: the 2xx ACK is its own transaction (new branch), same CSeq number, To with tag,
    # sent to the Contact of the 2xx (no Record-Route here).
    assert via_branch(ack) != via_branch(invite)
    assert ack.cseq().seq == invite.cseq().seq == 1 and ack.cseq().method == "ACK"
    assert ack.to().tag == ok.to().tag is not None
    assert ack.uri == str(ok.contacts()[0].uri) == "sip:sipagent@192.0.2.2:5060"
    assert ack.from_() == invite.from_()
    assert ok.headers.get("Content-Type") == "application/sdp"

    hanger, other = (alice, bob) if who_hangs_up == "alice" else (bob, alice)
    hanger.endpoint.hangup(call_id, net.now)
    hanger.drain(net.now)
    net.run(until=2.0)
    assert hanger.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]
    assert other.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]
    (bye,) = requests_from(link, hanger.address, "BYE")
    assert responses_from(link, other.address, 200, "BYE")
    if who_hangs_up == "alice":
        assert bye.cseq().seq == 2 and bye.uri == "sip:sipagent@192.0.2.2:5060"
    else:
        # The callee's first request in the dialog: its own CSeq space, to the caller's Contact.
        assert bye.cseq().seq == 1 and bye.uri == "sip:sipagent@192.0.2.1:5060"
        assert bye.from_().tag == ok.to().tag and bye.to().tag == invite.from_().tag
    assert_quiet(net, alice, bob)


def test_each_call_gets_a_fresh_call_id_and_from_tag() -> None:
    net, alice, _ = make_pair(Link(latency=0.01))
    first, second = call(net, alice), call(net, alice)
    net.run(until=1.0)
    invites = requests_from(net.link, ALICE, "INVITE")
    assert first != second
    assert len({i.call_id() for i in invites}) == 2 and len({i.from_().tag for i in invites}) == 2
    assert len(alice.of(CallAnswered)) == 2


# ---------------------------------------------------------------------------------------------
# 2. Loss
# ---------------------------------------------------------------------------------------------
def test_lost_200_is_retransmitted_by_timer_g_until_the_ack() -> None:
    link = Link(latency=0.01, rules=[drop(is_response(200, "INVITE"), times=2)])
    net, alice, bob = make_pair(link)
    call_id = call(net, alice)
    net.run(until=5.0)
    # Timer G: T1, then 2·T1 after that; the ACK stops it.
    assert link.sent_times(is_response(200, "INVITE")) == pytest.approx([0.01, 0.51, 1.51])
    assert alice.times(CallAnswered) == [pytest.approx(1.52)]
    assert link.sent_times(is_request("ACK")) == pytest.approx([1.52])
    assert bob.of(CallConfirmed) == [CallConfirmed(call_id, None)]
    assert link.sent_times(is_request("INVITE")) == [0.0]  # the 100 stopped Timer A


def test_lost_ack_gets_the_2xx_again_and_is_resent_without_a_second_answer() -> None:
    link = Link(latency=0.01, rules=[drop(is_request("ACK"), times=1)])
    net, alice, bob = make_pair(link)
    call(net, alice)
    net.run(until=5.0)
    assert link.sent_times(is_response(200, "INVITE")) == pytest.approx([0.01, 0.51])
    acks = requests_from(link, ALICE, "ACK")
    assert [a.serialize() for a in acks] == [acks[0].serialize()] * 2  # the same ACK again
    assert len(alice.of(CallAnswered)) == 1
    assert bob.times(CallConfirmed) == [pytest.approx(0.53)]


def test_no_ack_at_all_ends_the_call_with_bye_after_64_t1() -> None:
    link = Link(latency=0.01, rules=[drop(is_request("ACK"))])
    net, alice, bob = make_pair(link)
    call_id = call(net, alice)
    net.run(until=40.0)
    assert len(link.sent_times(is_response(200, "INVITE"))) == 11  # 0.01 … 31.51
    assert len(alice.of(CallAnswered)) == 1 and bob.of(CallConfirmed) == []
    assert bob.of(CallEnded) == [CallEnded(call_id, "ack-timeout", by_remote=False)]
    assert bob.times(CallEnded) == [pytest.approx(0.01 + 32)]
    assert link.sent_times(is_request("BYE")) == pytest.approx([32.01])
    assert alice.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]
    assert_quiet(net, alice, bob)


def test_lost_invite_is_retransmitted_by_timer_a() -> None:
    link = Link(latency=0.01, rules=[drop(is_request("INVITE"), times=2)])
    net, alice, bob = make_pair(link)
    call(net, alice)
    net.run(until=5.0)
    assert link.sent_times(is_request("INVITE")) == [0.0, 0.5, 1.5]
    assert bob.times(IncomingCall) == [pytest.approx(1.51)]
    assert len(alice.of(CallAnswered)) == 1 and len(bob.of(CallConfirmed)) == 1


def test_no_answer_at_all_fails_with_408_on_timer_b() -> None:
    link = Link(latency=0.01, loss=1.0)
    net, alice, _ = make_pair(link)
    call_id = call(net, alice)
    net.run()
    assert link.sent_times(is_request("INVITE")) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert alice.of(CallFailed) == [CallFailed(call_id, 408, "Request Timeout")]
    assert alice.times(CallFailed) == [32.0]
    assert alice.endpoint.calls == {}


# ---------------------------------------------------------------------------------------------
# 3. CANCEL
# ---------------------------------------------------------------------------------------------
def test_cancel_after_180_ends_both_sides_and_the_call_cannot_be_answered() -> None:
    link = Link(latency=0.01)
    net, alice, bob = make_pair(link, bob_app=ring_only)
    call_id = call(net, alice)
    net.run(until=1.0)
    assert alice.of(CallProgress) == [CallProgress(call_id, 180, "Ringing")]
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)

    (invite,) = requests_from(link, ALICE, "INVITE")
    (cancel,) = requests_from(link, ALICE, "CANCEL")
    # §9.1: the CANCEL matches the INVITE's transaction (same branch) and request.
    assert via_branch(cancel) == via_branch(invite) and cancel.uri == invite.uri
    assert cancel.cseq().seq == 1 and cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.from_() == invite.from_() and cancel.call_id() == invite.call_id()
    assert bob.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=True)]
    assert responses_from(link, BOB, 200, "CANCEL") and responses_from(link, BOB, 487)
    assert alice.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=False)]
    assert alice.of(CallFailed) == []
    # The INVITE transaction ACKs the 487 itself, on the INVITE's branch.
    (ack,) = requests_from(link, ALICE, "ACK")
    assert via_branch(ack) == via_branch(invite) and ack.cseq().seq == 1

    # The app's answer, late: refused, and nothing goes out.
    before = len(link.sent)
    with pytest.raises(LocalProtocolError):
        bob.endpoint.answer(call_id, net.now, rtp_port=BOB_RTP)
    with pytest.raises(LocalProtocolError):
        bob.endpoint.ring(call_id, net.now)
    net.run(until=3.0)
    assert len(link.sent) == before
    assert responses_from(link, BOB, 200) == []
    assert_quiet(net, alice, bob)
    with pytest.raises(LocalProtocolError):
        bob.endpoint.answer(call_id, net.now, rtp_port=BOB_RTP)


def test_hangup_before_any_provisional_cancels_only_after_the_first_1xx() -> None:
    link = Link(latency=0.01, rules=[delay(is_response(100), 0.3)])
    net, alice, bob = make_pair(link, bob_app=None)
    call_id = call(net, alice)
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=0.2)
    assert requests_from(link, ALICE, "CANCEL") == []  # §9.1: not before a provisional
    net.run(until=2.0)
    assert link.sent_times(is_request("CANCEL")) == [pytest.approx(0.31)]
    assert bob.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=True)]
    assert alice.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=False)]
    assert_quiet(net, alice, bob)


def test_cancel_crossing_the_200_is_acked_then_byed() -> None:
    link = Link(latency=0.01)
    net, alice, bob = make_pair(link, bob_app=ring_only)
    call_id = call(net, alice)
    net.run(until=1.0)
    bob.endpoint.answer(call_id, net.now, rtp_port=BOB_RTP)  # the 200 leaves at 1.0 …
    net.run(until=1.005)
    alice.endpoint.hangup(call_id, net.now)  # … and the CANCEL at 1.005
    net.run(until=3.0)
    # Too late for the CANCEL: Bob answers it 200 and no 487; Alice ACKs the 2xx and BYEs.
    assert responses_from(link, BOB, 200, "CANCEL") and not responses_from(link, BOB, 487)
    assert first_lines(link, ALICE) == ["INVITE", "CANCEL", "ACK", "BYE"]
    assert alice.of(CallAnswered) == []
    assert alice.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=False)]
    assert bob.of(CallConfirmed) == [CallConfirmed(call_id, None)]
    assert bob.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]
    assert_quiet(net, alice, bob)


def test_cancel_never_answered_with_487_gives_up_after_64_t1() -> None:
    """§9.1: with no final response 64·T1 after the CANCEL, the INVITE is considered cancelled."""

    def deaf_after_ringing(peer: Peer, message: Request | Response, source, now: float) -> None:
        if isinstance(message, Request) and message.method == "INVITE":
            peer.send(reply(message, 180, to_tag="c1", contact="<sip:c@198.51.100.7>"), source)
        elif isinstance(message, Request) and message.method == "CANCEL":
            peer.send(reply(message, 200), source)  # … and the 487 never comes

    link = Link(latency=0.01)
    alice = Node(ALICE, seed=1)
    carrier = Peer(CARRIER, deaf_after_ringing)
    net = Network(link)
    net.add(alice, carrier)
    call_id = alice.endpoint.invite(SipUri.parse("sip:+1555@198.51.100.7"), 0.0, rtp_port=ALICE_RTP)
    net.run(until=1.0)
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=40.0)
    assert alice.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=False)]
    assert alice.times(CallEnded) == [pytest.approx(1.0 + 32)]
    assert_quiet(net, alice)


# ---------------------------------------------------------------------------------------------
# Early media, forks, streams
# ---------------------------------------------------------------------------------------------
def scripted_callee(*answers: tuple[int, str, bytes]) -> Peer:
    """A carrier answering each INVITE with ``(status, to_tag, body)`` in order, and BYE with 200."""

    def handle(peer: Peer, message: Request | Response, source, now: float) -> None:
        if isinstance(message, Request) and message.method == "INVITE" and message.to().tag is None:
            for status, tag, body in answers:
                contact = f"<sip:{tag}@198.51.100.7>"
                peer.send(reply(message, status, to_tag=tag, contact=contact, body=body), source)
        elif isinstance(message, Request) and message.method == "BYE":
            peer.send(reply(message, 200), source)

    return Peer(CARRIER, handle)


def test_183_with_sdp_starts_early_media_and_the_200_answers() -> None:
    body = sdp_body(CARRIER.host, 40000, rtpmaps=("8 PCMA/8000", "101 telephone-event/8000"))
    carrier = scripted_callee((183, "c1", body), (200, "c1", body))
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    net.add(alice, carrier)
    call_id = alice.endpoint.invite(SipUri.parse("sip:+1555@198.51.100.7"), 0.0, rtp_port=ALICE_RTP)
    net.run(until=1.0)
    assert alice.kinds() == ["CallProgress", "EarlyMedia", "CallAnswered"]
    (early,) = alice.of(EarlyMedia)
    (answered,) = alice.of(CallAnswered)
    assert early.media.codec == "PCMA" and early.media.remote_port == 40000
    assert answered.media == early.media and answered.call_id == call_id


def test_a_2xx_from_a_second_fork_is_acked_and_byed() -> None:
    body = sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000",))
    carrier = scripted_callee((200, "fork1", body), (200, "fork2", body))
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    net.add(alice, carrier)
    call_id = alice.endpoint.invite(SipUri.parse("sip:+1555@198.51.100.7"), 0.0, rtp_port=ALICE_RTP)
    net.run(until=1.0)
    assert len(alice.of(CallAnswered)) == 1
    acks, byes = carrier.requests("ACK"), carrier.requests("BYE")
    assert sorted(a.to().tag or "" for a in acks) == ["fork1", "fork2"]
    assert [(b.to().tag, b.uri) for b in byes] == [("fork2", "sip:fork2@198.51.100.7")]
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)
    assert [b.to().tag for b in carrier.requests("BYE")] == ["fork2", "fork1"]


@pytest.mark.parametrize("side", ["callee", "caller"])
def test_a_contact_on_a_transport_we_lack_is_reached_over_the_dialog_flow(side: str) -> None:
    """A peer's Contact saying ``;transport=ws`` must not crash the endpoint: in-dialog requests
    go back along the flow the dialog came on."""
    ws_contact = "<sip:c@198.51.100.7:8443;transport=ws>"
    body = sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000",))
    dialog = RawDialog(me=CARRIER, target="sip:+15552223333@192.0.2.2", contact=ws_contact)

    def carrier_side(peer: Peer, message: Request | Response, source, now: float) -> None:
        if isinstance(message, Request) and message.method == "INVITE":
            peer.send(reply(message, 200, to_tag="x", contact=ws_contact, body=body), source)
        elif isinstance(message, Request) and message.method == "BYE":
            peer.send(reply(message, 200), source)
        elif isinstance(message, Response) and message.status == 200 and message.cseq().method == "INVITE":
            dialog.learn(message)
            peer.send(dialog.ack(message), source)

    net = Network(Link(latency=0.01))
    carrier = Peer(CARRIER, carrier_side)
    if side == "callee":  # the carrier answers Alice's call with a ws Contact
        node = Node(ALICE, seed=1)
        net.add(node, carrier)
        call_id = node.endpoint.invite(SipUri.parse("sip:+1555@198.51.100.7"), 0.0, rtp_port=ALICE_RTP)
    else:  # the carrier calls Bob with a ws Contact
        node = Node(BOB, seed=2, app=ring_and_answer)
        net.add(node, carrier)
        invite = dialog.request("INVITE", body=body)
        call_id = invite.call_id()
        carrier.send(invite, BOB)
    net.run(until=1.0)
    node.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)
    (bye,) = carrier.requests("BYE")
    assert bye.uri == "sip:c@198.51.100.7:8443;transport=ws"
    ours = [
        dg.destination
        for dg in net.link.sent
        if dg.source == node.address and dg.first_line[:3] in ("ACK", "BYE")
    ]
    assert ours == [CARRIER] * (2 if side == "callee" else 1)
    assert node.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]


def test_call_over_tcp_sends_nothing_twice_and_keeps_to_the_connection() -> None:
    alice_tcp, bob_tcp = Address("tcp", ALICE.host, 5060), Address("tcp", BOB.host, 5060)
    link = Link(latency=0.01)
    alice = Node(alice_tcp, seed=1, config=config_for(alice_tcp))
    bob = Node(bob_tcp, seed=2, app=ring_and_answer, config=config_for(bob_tcp))
    net = Network(link)
    net.add(alice, bob)
    call_id = alice.endpoint.invite(SipUri.parse("sip:bob@192.0.2.2;transport=tcp"), 0.0, rtp_port=ALICE_RTP)
    net.run(until=1.0)
    alice.endpoint.hangup(call_id, net.now)
    net.run()
    assert first_lines(link) == ["INVITE", "100 INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"]
    assert all(dg.destination.transport == "tcp" for dg in link.sent)
    (invite,) = requests_from(link, alice_tcp, "INVITE")
    assert "SIP/2.0/TCP" in (invite.headers.get("Via") or "")
    assert ";transport=tcp" in (invite.headers.get("Contact") or "")
    assert bob.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]
    assert alice.endpoint.calls == {} and bob.endpoint.calls == {}


# ---------------------------------------------------------------------------------------------
# 9. Random loss soak
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_full_call_under_30_percent_loss_ends_cleanly(seed: int) -> None:
    link = Link(latency=0.02, jitter=0.03, loss=0.3, seed=seed)
    net, alice, bob = make_pair(link)
    call_id = call(net, alice)
    # Five seconds after the answer one side hangs up (Alice on even seeds, Bob on odd ones);
    # or the call fails first.
    net.run(stop=lambda: bool(alice.of(CallAnswered) or alice.of(CallFailed)))
    hanger = alice if seed % 2 == 0 else bob
    if alice.of(CallAnswered):
        net.run(until=net.now + 5.0)
        if hanger.endpoint.call_state(call_id) is not None:
            hanger.endpoint.hangup(call_id, net.now)
    net.run()

    answered = alice.of(CallAnswered)
    assert len(answered) <= 1 and len(bob.of(CallConfirmed)) <= 1
    assert len(bob.of(IncomingCall)) <= 1
    alice_end = alice.of(CallEnded) + alice.of(CallFailed)
    assert len(alice_end) == 1, alice.events
    if answered:
        assert len(bob.of(CallEnded)) == 1, bob.events
    if bob.of(IncomingCall):
        assert len(bob.of(CallEnded)) == 1, bob.events
    assert alice.endpoint.calls == {} and bob.endpoint.calls == {}
    assert alice.endpoint.get_timer() is None and bob.endpoint.get_timer() is None
