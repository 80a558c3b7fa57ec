"""In-dialog behaviour of :class:`SipEndpoint`: re-INVITE hold/unhold, offerless re-INVITE, route
sets (Record-Route through a proxy and from a carrier edge), target refresh and 491 glare.

The far side is either our own endpoint or a scripted carrier (:class:`tests.ua_pair.Peer`) whose
requests are built by hand, so it can send exactly what carriers send (sip-trunks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sipagent.sip.address import Address
from sipagent.sip.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    Event,
    IncomingCall,
    MediaUpdated,
)
from sipagent.sip.message import Request, Response
from sipagent.sip.sdp import Direction, parse_sdp
from sipagent.sip.uri import NameAddr, SipUri
from tests.sip_pair import Link, Network
from tests.ua_pair import (
    ALICE,
    BOB,
    CARRIER,
    PROXY,
    Node,
    Peer,
    RawDialog,
    RecordRouteProxy,
    ack_for_error,
    config_for,
    reply,
    sdp_body,
    sent_by,
    via_branch,
    wire,
)

BOB_RTP = 30000
CARRIER_RTP = 40000


def answer_calls(node: Node, event: Event, now: float) -> None:
    if isinstance(event, IncomingCall):
        node.endpoint.answer(event.call_id, now, rtp_port=BOB_RTP)


class CarrierUac:
    """A scripted carrier placing a call to Bob and then poking the dialog by hand."""

    def __init__(
        self,
        net: Network,
        *,
        record_route: tuple[str, ...] = (),
        contact: str = "<sip:carrier@198.51.100.7:5060>",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.net = net
        self.dialog = RawDialog(me=CARRIER, target="sip:+15552223333@192.0.2.2", contact=contact)
        self.peer = Peer(CARRIER, self.handle)
        self.record_route = record_route
        self.headers = headers
        #: How to answer Bob's in-dialog INVITE/UPDATE (default: 200 with a fixed answer).
        self.on_request: Callable[[Request, float], Response | None] | None = None
        #: Body to put in the ACK of the next 2xx (an answer to Bob's offer).
        self.ack_body: bytes = b""
        self.sdp_version = 1
        #: Our requests by branch, to ACK a non-2xx to an INVITE as its transaction would.
        self.sent: dict[str, Request] = {}
        net.add(self.peer)

    def invite(self, body: bytes | None = None) -> Request:
        headers = [("Record-Route", rr) for rr in self.record_route]
        headers += [*self.headers, ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")]
        invite = self.dialog.request(
            "INVITE", body=sdp_body(CARRIER.host, CARRIER_RTP) if body is None else body, headers=headers
        )
        self.transmit(invite)
        return invite

    def send(self, method: str, *, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> Request:
        request = self.dialog.request(method, body=body, headers=headers)
        self.transmit(request)
        return request

    def transmit(self, request: Request) -> None:
        self.sent[via_branch(request)] = request
        self.peer.send(request, BOB)

    def handle(self, peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if isinstance(message, Response):
            if message.cseq().method == "INVITE" and 200 <= message.status < 300:
                if self.dialog.to_tag is None:
                    self.dialog.learn(message)
                ack = self.dialog.ack(message)
                if self.ack_body:
                    ack.headers.add("Content-Type", "application/sdp")
                    ack.body, self.ack_body = self.ack_body, b""
                peer.send(ack, BOB)
            elif message.cseq().method == "INVITE" and message.status >= 300:
                peer.send(ack_for_error(self.sent[via_branch(message)], message), BOB)
            return
        if message.method in ("BYE", "OPTIONS"):
            peer.send(reply(message, 200), source)
        elif message.method in ("INVITE", "UPDATE"):
            response = self.on_request(message, now) if self.on_request else None
            if response is None:
                response = self.default_answer(message)
            peer.send(response, source)

    def default_answer(self, request: Request) -> Response:
        body = b""
        if request.body:
            body = sdp_body(CARRIER.host, CARRIER_RTP, rtpmaps=("0 PCMU/8000", "101 telephone-event/8000"))
        return reply(request, 200, contact=self.dialog.contact, body=body)

    def offer(
        self, direction: str = "sendrecv", *, connection: str | None = None, bump: bool = True
    ) -> bytes:
        if bump:
            self.sdp_version += 1
        return sdp_body(
            CARRIER.host, CARRIER_RTP, version=self.sdp_version, direction=direction, connection=connection
        )


def carrier_call(link: Link | None = None, **kwargs: Any) -> tuple[Network, Node, CarrierUac, str]:
    net = Network(link or Link(latency=0.01))
    bob = Node(BOB, seed=2, app=answer_calls)
    net.add(bob)
    carrier = CarrierUac(net, **kwargs)
    carrier.invite()
    net.run(until=1.0)
    (confirmed,) = bob.of(CallConfirmed)
    return net, bob, carrier, confirmed.call_id


def bob_responses(net: Network, status: int, method: str) -> list[Response]:
    return [
        m
        for m in wire(net.link, sent_by(BOB))
        if isinstance(m, Response) and m.status == status and m.cseq().method == method
    ]


def o_version(message: Request | Response) -> int:
    return parse_sdp(message.body).origin.sess_version


def direction_of(message: Request | Response) -> Direction:
    sdp = parse_sdp(message.body)
    return sdp.media_direction(sdp.media[0])


# ---------------------------------------------------------------------------------------------
# 4. re-INVITE: hold, unhold, refresh, offerless
# ---------------------------------------------------------------------------------------------
def test_hold_unhold_and_refresh_reinvites_are_answered_and_reported() -> None:
    net, bob, carrier, call_id = carrier_call()
    (initial_ok,) = bob_responses(net, 200, "INVITE")
    v0 = o_version(initial_ok)

    carrier.send("INVITE", body=carrier.offer("sendonly"))
    net.run(until=2.0)
    hold_ok = bob_responses(net, 200, "INVITE")[-1]
    assert direction_of(hold_ok) is Direction.RECVONLY
    assert o_version(hold_ok) == v0 + 1
    (held,) = bob.of(MediaUpdated)
    assert held.media.on_hold and not held.media.send and held.media.receive

    carrier.send("INVITE", body=carrier.offer("sendrecv"))
    net.run(until=3.0)
    unhold_ok = bob_responses(net, 200, "INVITE")[-1]
    assert direction_of(unhold_ok) is Direction.SENDRECV and o_version(unhold_ok) == v0 + 2
    resumed = bob.of(MediaUpdated)[-1]
    assert not resumed.media.on_hold and resumed.media.send

    # The same SDP again (a session refresh): same answer, same o= version, no event.
    carrier.send("INVITE", body=carrier.offer("sendrecv", bump=False))
    net.run(until=4.0)
    refresh_ok = bob_responses(net, 200, "INVITE")[-1]
    assert refresh_ok.body == unhold_ok.body
    assert len(bob.of(MediaUpdated)) == 2

    # RFC 2543 hold: c=0.0.0.0 — we must not send, and we say recvonly.
    carrier.send("INVITE", body=carrier.offer("sendrecv", connection="0.0.0.0"))
    net.run(until=5.0)
    old_hold = bob.of(MediaUpdated)[-1]
    assert old_hold.media.on_hold and not old_hold.media.send
    assert direction_of(bob_responses(net, 200, "INVITE")[-1]) is Direction.RECVONLY

    assert bob.of(CallEnded) == []
    assert bob.endpoint.call_state(call_id) is not None
    # Every 2xx was ACKed and the ACK reached the session: nothing is retransmitted later.
    sent = len(bob_responses(net, 200, "INVITE"))
    net.run(until=40.0)
    assert len(bob_responses(net, 200, "INVITE")) == sent and bob.of(CallEnded) == []


def test_offerless_reinvite_gets_our_offer_and_the_ack_carries_the_answer() -> None:
    net, bob, carrier, _ = carrier_call()
    v0 = o_version(bob_responses(net, 200, "INVITE")[0])
    carrier.ack_body = sdp_body(
        CARRIER.host, 40002, version=9, rtpmaps=("8 PCMA/8000", "101 telephone-event/8000")
    )
    carrier.send("INVITE")
    net.run(until=2.0)
    ok = bob_responses(net, 200, "INVITE")[-1]
    offer = parse_sdp(ok.body)
    assert offer.media[0].payload_types()[:2] == [0, 8]  # a full offer, not our old answer
    assert o_version(ok) == v0 + 1
    (updated,) = bob.of(MediaUpdated)
    assert (updated.media.codec, updated.media.remote_port) == ("PCMA", 40002)
    assert bob.of(CallEnded) == []


def test_offerless_reinvite_whose_ack_has_no_answer_ends_the_call_with_bye() -> None:
    net, bob, carrier, call_id = carrier_call()
    carrier.send("INVITE")  # the ACK will come without SDP
    net.run(until=5.0)
    assert bob.of(CallEnded) == [CallEnded(call_id, "bad-answer-in-ack", by_remote=False)]
    byes = [m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Request) and m.method == "BYE"]
    assert len(byes) == 1
    # re-INVITE at 1.0, 200 at 1.01, the answerless ACK at 1.02 arrives at 1.03: BYE right then.
    assert net.link.sent_times(lambda dg: dg.source == BOB and dg.first_line.startswith("BYE")) == [
        pytest.approx(1.03)
    ]
    net.run(until=60.0)
    assert len(carrier.peer.requests("BYE")) == 1  # answered at once, not retried


def test_reinvite_2xx_never_acked_ends_the_session_with_bye() -> None:
    net, bob, carrier, call_id = carrier_call()
    # From now on the carrier never ACKs a 2xx to INVITE.
    original = carrier.handle

    def no_ack(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if isinstance(message, Response) and message.cseq().method == "INVITE" and message.status == 200:
            return
        original(peer, message, source, now)

    carrier.peer.handler = no_ack
    carrier.send("INVITE", body=carrier.offer("sendonly"))
    net.run(until=45.0)
    # §13.3.1.4: a 2xx never ACKed within 64·T1 ends the session with BYE.
    assert len(bob_responses(net, 200, "INVITE")) == 1 + 11
    assert bob.of(CallEnded) == [CallEnded(call_id, "ack-timeout", by_remote=False)]
    assert bob.times(CallEnded) == [pytest.approx(1.01 + 32)]
    assert len(carrier.peer.requests("BYE")) == 1
    net.run()
    assert bob.endpoint.calls == {}


def test_reinvite_while_the_previous_one_is_unacked_gets_500_with_retry_after() -> None:
    net, _bob, carrier, _ = carrier_call(link=Link(latency=0.01))
    original = carrier.handle

    def no_ack(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if isinstance(message, Response) and message.cseq().method == "INVITE" and message.status == 200:
            return
        original(peer, message, source, now)

    carrier.peer.handler = no_ack
    carrier.send("INVITE", body=carrier.offer("sendonly"))
    net.run(until=1.1)
    carrier.send("INVITE", body=carrier.offer("sendrecv"))
    net.run(until=1.2)
    (busy,) = bob_responses(net, 500, "INVITE")
    assert busy.headers.get("Retry-After") is not None


def test_update_with_an_offer_is_answered_and_reported() -> None:
    net, bob, carrier, _ = carrier_call()
    carrier.send("UPDATE", body=carrier.offer("sendonly"))
    net.run(until=2.0)
    (ok,) = bob_responses(net, 200, "UPDATE")
    assert direction_of(ok) is Direction.RECVONLY and ok.headers.get("Contact")
    (held,) = bob.of(MediaUpdated)
    assert held.media.on_hold
    assert bob.of(CallEnded) == []


# ---------------------------------------------------------------------------------------------
# 4. Route sets and target refresh
# ---------------------------------------------------------------------------------------------
EDGE_RR = ("<sip:198.51.100.7;lr;r=edge1>", "<sip:198.51.100.7:5060;lr;r=edge2>")


def test_uas_route_set_is_record_route_in_order_and_survives_reinvites() -> None:
    # Twilio style: two Record-Routes and a Contact on a private address we cannot reach directly.
    net, bob, carrier, call_id = carrier_call(record_route=EDGE_RR, contact="<sip:carrier@10.20.30.40:5070>")
    (ok,) = bob_responses(net, 200, "INVITE")
    assert ok.headers.get_all("Record-Route") == list(EDGE_RR)
    trying = next(m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Response))
    assert trying.status == 100 and trying.headers.get("Record-Route") is None  # not a dialog response

    # A re-INVITE moving the Contact (target refresh) and carrying a different Record-Route.
    carrier.dialog.contact = "<sip:carrier@10.20.30.41:5070>"
    carrier.send(
        "INVITE", body=carrier.offer("sendrecv"), headers=(("Record-Route", "<sip:203.0.113.9;lr>"),)
    )
    net.run(until=2.0)
    bob.endpoint.hangup(call_id, net.now)
    net.run(until=3.0)
    (bye,) = [m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Request) and m.method == "BYE"]
    assert bye.uri == "sip:carrier@10.20.30.41:5070"  # the refreshed remote target
    assert bye.headers.get_all("Route") == list(EDGE_RR)  # the original route set, in order
    assert [dg.destination for dg in net.link.sent if dg.first_line.startswith("BYE")] == [CARRIER]
    assert net.undeliverable == []
    assert bob.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]


def test_strict_router_gets_the_request_uri_and_the_target_rides_last_in_route() -> None:
    net, bob, _, call_id = carrier_call(
        record_route=("<sip:198.51.100.7;r=strict>",), contact="<sip:carrier@10.20.30.40:5070>"
    )
    bob.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)
    (bye,) = [m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Request) and m.method == "BYE"]
    # §12.2.1.1: no ;lr, so the first route is the Request-URI and the remote target goes last.
    assert SipUri.parse(bye.uri).host == "198.51.100.7"
    assert bye.headers.get_all("Route") == ["<sip:carrier@10.20.30.40:5070>"]
    assert net.undeliverable == []


def test_calls_through_a_record_routing_proxy_follow_the_route_set_both_ways() -> None:
    link = Link(latency=0.01)
    net = Network(link)
    alice = Node(ALICE, seed=1)
    bob = Node(BOB, seed=2, app=answer_calls)
    proxy = RecordRouteProxy(PROXY)
    net.add(alice, bob, proxy)
    call_id = alice.endpoint.invite(
        SipUri.parse("sip:bob@192.0.2.2"),
        0.0,
        rtp_port=20000,
        outbound_proxy=SipUri.parse("sip:192.0.2.50;lr"),
    )
    net.run(until=1.0)
    assert len(alice.of(CallAnswered)) == 1 and len(bob.of(CallConfirmed)) == 1
    rr_a, rr_b = "<sip:192.0.2.50;lr;r=a>", "<sip:192.0.2.50;lr;r=b>"
    ok = next(m for m in wire(link, sent_by(BOB)) if isinstance(m, Response) and m.status == 200)
    assert ok.headers.get_all("Record-Route") == [rr_a, rr_b]
    # The caller's route set is the Record-Route reversed; the ACK travels it (§12.1.2, §13.2.2.4).
    ack = next(m for m in wire(link, sent_by(ALICE)) if isinstance(m, Request) and m.method == "ACK")
    assert ack.headers.get_all("Route") == [rr_b, rr_a]
    assert ack.uri == "sip:sipagent@192.0.2.2:5060"
    assert [dg.destination for dg in link.sent if dg.source == ALICE] == [PROXY, PROXY]

    bob.endpoint.hangup(call_id, net.now)
    net.run(until=2.0)
    bye = next(m for m in wire(link, sent_by(BOB)) if isinstance(m, Request) and m.method == "BYE")
    assert bye.headers.get_all("Route") == [rr_a, rr_b] and bye.uri == "sip:sipagent@192.0.2.1:5060"
    assert alice.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]
    assert all(dg.destination in (PROXY, ALICE, BOB) for dg in link.sent) and net.undeliverable == []


def test_uac_route_set_is_not_replaced_by_a_reinvite_2xx() -> None:
    """Alice refreshes with re-INVITE; the carrier's 2xx to it carries a new Contact (target
    refresh, honoured) and a different Record-Route (ignored: the route set is fixed, §12.2)."""
    rr = ("<sip:198.51.100.7;lr;r=near-bob>", "<sip:198.51.100.7;lr;r=near-alice>")
    contacts = iter(["<sip:callee@10.0.0.5:5062>", "<sip:callee@10.0.0.6:5062>"])

    def carrier_uas(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if not isinstance(message, Request):
            return
        if message.method == "INVITE":
            response = reply(
                message,
                200,
                to_tag="cr1",
                contact=next(contacts),
                body=sdp_body(CARRIER.host, CARRIER_RTP, rtpmaps=("0 PCMU/8000",)),
                record_route=False,
                headers=[("Session-Expires", "90;refresher=uac")],
            )
            values = rr if message.to().tag is None else ("<sip:203.0.113.66;lr>",)
            for value in values:
                response.headers.add("Record-Route", value)
            peer.send(response, source)
        elif message.method == "BYE":
            peer.send(reply(message, 200), source)

    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1, config=config_for(ALICE, session_expires=90, prefer_update_refresh=False))
    carrier = Peer(CARRIER, carrier_uas)
    net.add(alice, carrier)
    call_id = alice.endpoint.invite(SipUri.parse("sip:+15559990000@198.51.100.7"), 0.0, rtp_port=20000)
    net.run(until=50.0)
    invites = carrier.requests("INVITE")
    assert len(invites) == 2  # the refresh at 45 s
    refresh = invites[1]
    assert refresh.headers.get_all("Route") == [rr[1], rr[0]] and refresh.uri == "sip:callee@10.0.0.5:5062"
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=55.0)
    (bye,) = carrier.requests("BYE")
    assert bye.headers.get_all("Route") == [rr[1], rr[0]]
    assert bye.uri == "sip:callee@10.0.0.6:5062"
    acks = carrier.requests("ACK")
    assert [a.headers.get_all("Route") for a in acks] == [[rr[1], rr[0]]] * 2
    assert alice.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]


# ---------------------------------------------------------------------------------------------
# 5. Glare
# ---------------------------------------------------------------------------------------------
def glare_call(method: str) -> tuple[Network, Node, CarrierUac, str, list[float]]:
    """Bob is the session refresher (the carrier asked ``refresher=uas`` and has no UPDATE), so Bob
    re-INVITEs 60 s after the ACK; the carrier sends its own ``method`` at that very instant."""
    net, bob, carrier, call_id = carrier_call(
        headers=(("Supported", "timer"), ("Session-Expires", "120;refresher=uas"))
    )
    confirmed_at = bob.times(CallConfirmed)[0]
    glare_at = confirmed_at + 60.0
    pending: list[Request] = []  # the carrier's own request while it awaits a final response
    rejected_at: list[float] = []

    def on_request(request: Request, now: float) -> Response | None:
        # The carrier's own request is still waiting for its final response: 491 (§14.2).
        if pending:
            rejected_at.append(now)
            return reply(request, 491)
        return None

    def send_own(now: float) -> None:
        # Keeping Bob the refresher (a refresh without Session-Expires would turn the timer off).
        headers = (("Session-Expires", "120;refresher=uas"),)
        request = carrier.dialog.request(method, body=carrier.offer("sendonly"), headers=headers)
        pending.append(request)
        carrier.transmit(request)

    original = carrier.handle

    def track(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        original(peer, message, source, now)
        mine = isinstance(message, Response) and pending and via_branch(message) == via_branch(pending[0])
        if mine and isinstance(message, Response) and message.status >= 200:
            pending.clear()
            if message.status == 491:
                peer.call_at(now + 3.0, send_own)  # we own the Call-ID: retry after 2.1–4 s

    carrier.peer.handler = track
    carrier.on_request = on_request
    carrier.peer.call_at(glare_at, send_own)
    net.run(until=glare_at + 10.0)
    return net, bob, carrier, call_id, rejected_at


def test_reinvite_glare_gets_491_both_ways_and_both_retries_succeed() -> None:
    net, bob, carrier, _, rejected_at = glare_call("INVITE")
    glare_at = bob.times(CallConfirmed)[0] + 60.0
    bob_invites = [m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Request) and m.method == "INVITE"]
    assert len(bob_invites) == 2, "Bob's refresh and its retry after the 491"
    assert bob_invites[1].cseq().seq > bob_invites[0].cseq().seq
    retry_at = net.link.sent_times(lambda dg: dg.source == BOB and dg.first_line.startswith("INVITE"))[1]
    assert glare_at < retry_at <= glare_at + 0.01 + 2.0  # not the Call-ID owner: 0–2 s
    assert len(rejected_at) == 1  # the carrier refused Bob's first attempt only
    assert [r.status for r in bob_responses(net, 491, "INVITE")] == [491]
    # The carrier's retry (3 s later) is answered 200 with our hold answer.
    hold_ok = bob_responses(net, 200, "INVITE")[-1]
    assert direction_of(hold_ok) is Direction.RECVONLY
    assert bob.of(MediaUpdated)[-1].media.on_hold
    assert bob.of(CallEnded) == []
    # The session timer goes on: the next refresh comes 60 s after the last refresh (the carrier's).
    last_refresh = bob_responses(net, 200, "INVITE")[-1]
    assert last_refresh.headers.get("Session-Expires") == "120;refresher=uas"
    net.run(until=net.now + 60.0)
    assert len(carrier.peer.requests("INVITE")) == 3
    assert bob.of(CallEnded) == []


def test_update_with_offer_during_our_reinvite_gets_491() -> None:
    net, bob, _carrier, _call_id, _rejected = glare_call("UPDATE")
    assert [r.cseq().method for r in bob_responses(net, 491, "UPDATE")] == ["UPDATE"]
    assert bob_responses(net, 200, "UPDATE")  # the retry went through
    assert bob.of(CallEnded) == []


def test_remote_reinvite_shortly_after_our_refresh_completed_is_not_491() -> None:
    """Our refresh got its 200: a re-INVITE from the peer 1 s later is not glare."""
    net, bob, carrier, _ = carrier_call(
        headers=(("Supported", "timer"), ("Session-Expires", "120;refresher=uas"))
    )
    refresh_at = bob.times(CallConfirmed)[0] + 60.0
    net.run(until=refresh_at + 1.0)
    assert len(carrier.peer.requests("INVITE")) == 1
    carrier.send("INVITE", body=carrier.offer("sendonly"))
    net.run(until=refresh_at + 2.0)
    assert bob_responses(net, 491, "INVITE") == []
    assert bob.of(MediaUpdated)[-1].media.on_hold


def test_contact_of_in_dialog_requests_is_ours() -> None:
    net, _bob, _carrier, _call_id = carrier_call()
    (ok,) = bob_responses(net, 200, "INVITE")
    assert NameAddr.parse(ok.headers.get("Contact") or "").uri == SipUri.parse("sip:sipagent@192.0.2.2:5060")
    assert via_branch(ok).startswith("z9hG4bK")
