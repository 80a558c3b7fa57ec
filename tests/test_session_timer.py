"""RFC 4028 session timers end to end: 422 and Min-SE, who refreshes, re-INVITE vs UPDATE
(Twilio's Allow lacks UPDATE), and the BYE when no refresh arrives.
"""

from __future__ import annotations

import pytest

from sipagent.sip.address import Address
from sipagent.sip.events import CallAnswered, CallConfirmed, CallEnded, Event, IncomingCall, MediaUpdated
from sipagent.sip.message import Request, Response
from sipagent.sip.sdp import parse_sdp
from sipagent.sip.uri import SipUri
from tests.sip_pair import Link, Network, is_request
from tests.ua_pair import (
    ALICE,
    BOB,
    CARRIER,
    Node,
    Peer,
    RawDialog,
    ack_for_error,
    config_for,
    reply,
    sdp_body,
    sent_by,
    wire,
)

BOB_RTP = 30000
NO_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS"
WITH_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"


def answer_calls(node: Node, event: Event, now: float) -> None:
    if isinstance(event, IncomingCall):
        node.endpoint.answer(event.call_id, now, rtp_port=BOB_RTP)


class Carrier:
    """A scripted carrier that calls Bob with the given session-timer headers, ACKs every 2xx and
    answers every in-dialog request 200 (with an SDP answer when offered one)."""

    def __init__(self, net: Network, headers: list[tuple[str, str]], *, refresh_every: float | None = None):
        self.dialog = RawDialog(me=CARRIER, target="sip:+15552223333@192.0.2.2")
        self.peer = Peer(CARRIER, self.handle)
        self.refresh_every = refresh_every
        net.add(self.peer)
        self.invite = self.dialog.request("INVITE", body=sdp_body(CARRIER.host, 40000), headers=headers)
        self.peer.send(self.invite, BOB)

    def handle(self, peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if isinstance(message, Response):
            if message.cseq().method == "INVITE" and 200 <= message.status < 300:
                first = self.dialog.to_tag is None
                if first:
                    self.dialog.learn(message)
                peer.send(self.dialog.ack(message), BOB)
                if first and self.refresh_every is not None:
                    self.schedule_refresh(now)
            elif message.cseq().method == "INVITE" and message.status >= 300:
                peer.send(ack_for_error(self.invite, message), BOB)
            elif message.cseq().method == "UPDATE" and self.refresh_every is not None:
                self.schedule_refresh(now)
            return
        if message.method in ("INVITE", "UPDATE"):
            body = (
                sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000", "101 telephone-event/8000"))
                if message.body
                else b""
            )
            headers = [("Session-Expires", s) for s in [message.headers.get("Session-Expires")] if s]
            peer.send(reply(message, 200, contact=self.dialog.contact, body=body, headers=headers), source)
        elif message.method == "BYE":
            peer.send(reply(message, 200), source)

    def schedule_refresh(self, now: float) -> None:
        assert self.refresh_every is not None
        update = self.dialog.request("UPDATE", headers=[("Session-Expires", "120;refresher=uac")])
        self.peer.send_at(now + self.refresh_every, update, BOB)


def inbound(headers: list[tuple[str, str]], **kwargs: float) -> tuple[Network, Node, Carrier]:
    net = Network(Link(latency=0.01))
    bob = Node(BOB, seed=2, app=answer_calls)
    net.add(bob)
    carrier = Carrier(net, headers, **kwargs)
    return net, bob, carrier


def bob_requests(net: Network, method: str) -> list[Request]:
    return [m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Request) and m.method == method]


def bob_times(net: Network, method: str) -> list[float]:
    return net.link.sent_times(lambda dg: dg.source == BOB and dg.first_line.startswith(method + " "))


def test_interval_below_min_se_is_refused_with_422() -> None:
    net, bob, carrier = inbound([("Supported", "timer"), ("Session-Expires", "60")])
    net.run(until=1.0)
    (too_small,) = carrier.peer.responses(422)
    assert too_small.headers.get("Min-SE") == "90"
    assert [r.status for r in carrier.peer.responses()] == [100, 422]
    assert bob.events == []


@pytest.mark.parametrize(("allow", "method"), [(NO_UPDATE, "INVITE"), (WITH_UPDATE, "UPDATE")])
def test_we_refresh_at_half_the_interval_when_asked_to(allow: str, method: str) -> None:
    headers = [("Supported", "timer"), ("Session-Expires", "120;refresher=uas"), ("Allow", allow)]
    net, bob, carrier = inbound(headers)
    net.run(until=1.0)
    ok = carrier.peer.responses(200, "INVITE")[0]
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"
    assert ok.headers.get("Require") == "timer"
    confirmed_at = bob.times(CallConfirmed)[0]
    net.run(until=confirmed_at + 200.0)
    refreshes = bob_requests(net, method)
    assert bob_times(net, method) == pytest.approx(
        [confirmed_at + 60, confirmed_at + 120.02, confirmed_at + 180.04]
    )
    first = refreshes[0]
    assert first.headers.get("Session-Expires") == "120;refresher=uac"  # we are its UAC: we refresh
    assert [r.cseq().seq for r in refreshes] == [1, 2, 3]
    if method == "INVITE":
        # The refresh re-offers the media already agreed: the codec chosen, not our full list, and
        # the very SDP of our 200 (same o= version), so nothing changes; no event either.
        offer = parse_sdp(first.body)
        answer = parse_sdp(ok.body)
        assert offer.media[0].port == BOB_RTP
        assert offer.media[0].formats == answer.media[0].formats
        assert offer.origin.sess_version == answer.origin.sess_version
        assert all(parse_sdp(r.body).origin.sess_version == answer.origin.sess_version for r in refreshes)
        assert bob.of(MediaUpdated) == []
        assert len(bob_requests(net, "ACK")) == 3  # each refresh 2xx ACKed by us
    else:
        assert first.body == b"" and bob_requests(net, "INVITE") == []
    assert bob.of(CallEnded) == []


def test_no_refresh_from_the_refresher_ends_the_call_at_interval_minus_32() -> None:
    headers = [("Supported", "timer"), ("Session-Expires", "120;refresher=uac"), ("Allow", WITH_UPDATE)]
    net, bob, carrier = inbound(headers)
    net.run(until=1.0)
    ok = carrier.peer.responses(200, "INVITE")[0]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    confirmed_at = bob.times(CallConfirmed)[0]
    net.run(until=confirmed_at + 100.0)
    call_id = bob.of(CallConfirmed)[0].call_id
    # 120 - min(32, 120/3) = 88 s after the session was established.
    assert bob.of(CallEnded) == [CallEnded(call_id, "session-expired", by_remote=False)]
    assert bob.times(CallEnded) == [pytest.approx(confirmed_at + 88)]
    assert bob_times(net, "BYE") == [pytest.approx(confirmed_at + 88)]
    assert carrier.peer.requests("BYE")


def test_refreshes_from_the_peer_keep_the_call_up() -> None:
    headers = [("Supported", "timer"), ("Session-Expires", "120;refresher=uac"), ("Allow", WITH_UPDATE)]
    net, bob, carrier = inbound(headers, refresh_every=60.0)
    net.run(until=400.0)
    updates = carrier.peer.responses(200, "UPDATE")
    assert len(updates) >= 6
    assert all(u.headers.get("Session-Expires") == "120;refresher=uac" for u in updates)
    assert bob.of(CallEnded) == [] and bob_requests(net, "BYE") == []


def test_outbound_call_refreshes_with_update_and_the_callee_keeps_the_session() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1, config=config_for(ALICE, session_expires=300))
    bob = Node(BOB, seed=2, app=answer_calls)
    net.add(alice, bob)
    call_id = alice.endpoint.invite(SipUri.parse("sip:bob@192.0.2.2"), 0.0, rtp_port=20000)
    net.run(until=1000.0)
    invite = next(
        m for m in wire(net.link, sent_by(ALICE)) if isinstance(m, Request) and m.method == "INVITE"
    )
    assert invite.headers.get("Session-Expires") == "300" and invite.headers.get("Min-SE") == "90"
    updates = net.link.sent_times(is_request("UPDATE"))
    assert updates == pytest.approx(
        [0.02 + 150, 0.02 + 300.02, 0.02 + 450.04, 0.02 + 600.06, 0.02 + 750.08, 0.02 + 900.1]
    )
    assert alice.of(CallEnded) == [] and bob.of(CallEnded) == []
    assert len(alice.of(CallAnswered)) == 1
    alice.endpoint.hangup(call_id, net.now)
    net.run()
    assert bob.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]


def test_422_from_the_callee_is_retried_with_its_min_se() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1, config=config_for(ALICE, session_expires=600))
    bob = Node(BOB, seed=2, app=answer_calls, config=config_for(BOB, min_se=1800))
    net.add(alice, bob)
    alice.endpoint.invite(SipUri.parse("sip:bob@192.0.2.2"), 0.0, rtp_port=20000)
    net.run(until=2.0)
    first, second = [
        m for m in wire(net.link, sent_by(ALICE)) if isinstance(m, Request) and m.method == "INVITE"
    ]
    assert second.headers.get("Session-Expires") == "1800" and second.headers.get("Min-SE") == "1800"
    assert second.cseq().seq == first.cseq().seq + 1 and second.call_id() == first.call_id()
    assert len(alice.of(CallAnswered)) == 1 and len(bob.of(IncomingCall)) == 1


def test_refresh_that_times_out_ends_the_call_with_bye() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1, config=config_for(ALICE, session_expires=90))
    bob = Node(BOB, seed=2, app=answer_calls)
    net.add(alice, bob)
    call_id = alice.endpoint.invite(SipUri.parse("sip:bob@192.0.2.2"), 0.0, rtp_port=20000)
    net.run(until=40.0)
    net.link.loss = 1.0  # Bob vanishes
    net.run(until=100.0)
    assert alice.of(CallEnded) == [CallEnded(call_id, "refresh-timeout", by_remote=False)]
    assert alice.times(CallEnded) == [pytest.approx(0.02 + 45 + 32)]


def test_refresh_asking_for_less_than_min_se_is_refused_with_422() -> None:
    headers = [("Supported", "timer"), ("Session-Expires", "120;refresher=uac"), ("Allow", WITH_UPDATE)]
    net, bob, carrier = inbound(headers)
    net.run(until=1.0)
    update = carrier.dialog.request("UPDATE", headers=[("Session-Expires", "30;refresher=uac")])
    carrier.peer.send(update, BOB)
    net.run(until=2.0)
    refused = carrier.peer.responses(422, "UPDATE")
    assert refused and refused[0].headers.get("Min-SE") == "90"
    # The session keeps its old interval: with no refresh, Bob ends it at 120 - 32 s as before.
    net.run(until=200.0)
    ended = bob.of(CallEnded)
    assert [e.reason for e in ended] == ["session-expired"]
    assert bob.times(CallEnded)[0] == pytest.approx(bob.times(CallConfirmed)[0] + 88, abs=0.1)
