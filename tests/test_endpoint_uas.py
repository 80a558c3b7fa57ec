"""What the endpoint answers on its own, and the inbound-call edge cases carriers produce.

A scripted carrier (:class:`tests.ua_pair.Peer`) sends hand-built requests to Bob's endpoint; the
tests check the responses on the wire and Bob's events (RFC 3261 §8.2, §12–§14, sip-trunks.md).
"""

from __future__ import annotations

import pytest

from sipagent.sip.errors import OfferRejected
from sipagent.sip.events import CallConfirmed, CallEnded, Event, IncomingCall
from sipagent.sip.message import Request, Response, parse_message
from sipagent.sip.sdp import parse_sdp
from sipagent.sip.uri import NameAddr
from tests.sip_pair import Link, Network, delay, is_request
from tests.ua_pair import BOB, CARRIER, Node, Peer, RawDialog, ack_for_error, reply, sdp_body, via_branch

BOB_RTP = 30000


def setup(app=None) -> tuple[Network, Node, Peer, RawDialog]:
    net = Network(Link(latency=0.01))
    bob = Node(BOB, seed=2, app=app)
    carrier = Peer(CARRIER)
    net.add(bob, carrier)
    return net, bob, carrier, RawDialog(me=CARRIER, target="sip:+15552223333@192.0.2.2")


def send(net: Network, carrier: Peer, request: Request, until: float = 0.1) -> list[Response]:
    """Send ``request`` and collect the responses that arrive within ``until`` (before Timer G)."""
    before = len(carrier.received)
    carrier.send(request, BOB)
    net.run(until=net.now + until)
    return [m for _, m in carrier.received[before:] if isinstance(m, Response)]


def statuses(responses: list[Response]) -> list[int]:
    return [r.status for r in responses]


def offer() -> bytes:
    return sdp_body(CARRIER.host, 40000)


def answer_calls(node: Node, event: Event, now: float) -> None:
    if isinstance(event, IncomingCall):
        node.endpoint.answer(event.call_id, now, rtp_port=BOB_RTP)


# ---------------------------------------------------------------------------------------------
# Answered by the endpoint itself
# ---------------------------------------------------------------------------------------------
def test_require_100rel_is_refused_with_420_unsupported() -> None:
    net, bob, carrier, dialog = setup()
    responses = send(net, carrier, dialog.request("INVITE", body=offer(), headers=[("Require", "100rel")]))
    assert statuses(responses) == [420]
    assert responses[0].headers.get("Unsupported") == "100rel"
    assert bob.events == []


def test_options_gets_200_with_an_accurate_allow() -> None:
    net, bob, carrier, dialog = setup()
    (ok,) = send(net, carrier, dialog.request("OPTIONS"))
    assert ok.status == 200 and ok.to().tag
    allow = {m.strip() for m in (ok.headers.get("Allow") or "").split(",")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE"} <= allow
    assert "application/sdp" in (ok.headers.get("Accept") or "")
    assert bob.events == []


@pytest.mark.parametrize("to_tag", [None, "nosuchtag"])
def test_bye_outside_any_dialog_gets_481(to_tag: str | None) -> None:
    net, _, carrier, dialog = setup()
    dialog.to_tag = to_tag
    assert statuses(send(net, carrier, dialog.request("BYE"))) == [481]


def test_cancel_matching_nothing_gets_481() -> None:
    net, _, carrier, dialog = setup()
    assert statuses(send(net, carrier, dialog.request("CANCEL"))) == [481]


@pytest.mark.parametrize("method", ["MESSAGE", "SUBSCRIBE", "FROBNICATE"])
def test_unknown_method_gets_405_with_allow(method: str) -> None:
    net, _, carrier, dialog = setup()
    (response,) = send(net, carrier, dialog.request(method))
    assert response.status == 405
    assert "INVITE" in (response.headers.get("Allow") or "")


def test_max_forwards_zero_gets_483() -> None:
    net, bob, carrier, dialog = setup()
    request = dialog.request("INVITE", body=offer())
    request.headers.set("Max-Forwards", "0")
    assert statuses(send(net, carrier, request)) == [483]
    assert bob.events == []


def test_malformed_datagram_gets_400_and_the_endpoint_serves_the_next_invite() -> None:
    net, bob, carrier, dialog = setup(app=answer_calls)
    garbage = (
        b"INVITE sip:+15552223333@192.0.2.2 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKbroken;rport\r\n"
        b"From: <sip:+15550001111@198.51.100.7>;tag=bad1\r\n"
        b"To: <sip:+15552223333@192.0.2.2>\r\n"
        b"Call-ID: broken-1@198.51.100.7\r\n"
        b"CSeq: one INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    carrier.send_bytes(garbage, BOB)
    net.run(until=0.5)
    # The 400 echoes the raw Via, From, To, Call-ID and CSeq lines so the sender can match it.
    assert carrier.received == []
    ((_, bad),) = carrier.unparseable
    assert bad.startswith(b"SIP/2.0 400 ")
    for line in garbage.split(b"\r\n")[1:6]:
        assert line in bad
    assert bob.events == []
    responses = send(net, carrier, dialog.request("INVITE", body=offer()))
    assert statuses(responses) == [100, 200]
    assert len(bob.of(IncomingCall)) == 1


def test_invite_with_an_unparseable_contact_gets_400_and_leaves_nothing_behind() -> None:
    net, bob, carrier, dialog = setup(app=answer_calls)
    request = dialog.request("INVITE", body=offer())
    request.headers.set("Contact", "<sip:carrier@198.51.100.7")
    responses = send(net, carrier, request)
    assert 400 in statuses(responses)
    assert bob.events == []
    # The final answer went through the INVITE transaction, so the ACK ends it and nothing is
    # left running: a retransmitted INVITE is answered from the transaction, not anew.
    carrier.send(ack_for_error(request, responses[-1]), BOB)
    net.run(until=60.0)
    assert bob.endpoint.get_timer() is None and bob.endpoint.calls == {}
    assert bob.endpoint._server_txs == {}  # the leak this test is about


def test_retransmitted_invite_is_absorbed_and_a_merged_one_gets_482() -> None:
    net, bob, carrier, dialog = setup(
        app=lambda n, e, t: n.endpoint.ring(e.call_id, t) if isinstance(e, IncomingCall) else None
    )
    invite = dialog.request("INVITE", body=offer())
    assert statuses(send(net, carrier, invite)) == [100, 180]
    assert statuses(send(net, carrier, invite)) == [180]  # the latest provisional again
    merged = dialog.request("INVITE", body=offer())  # same Call-ID, no To tag, new branch
    assert statuses(send(net, carrier, merged)) == [482]
    assert len(bob.of(IncomingCall)) == 1


# ---------------------------------------------------------------------------------------------
# Inbound calls
# ---------------------------------------------------------------------------------------------
def test_invite_without_sdp_gets_our_offer_and_the_ack_answer_confirms_with_media() -> None:
    net, bob, carrier, dialog = setup(app=answer_calls)
    responses = send(net, carrier, dialog.request("INVITE"))
    ok = responses[-1]
    assert ok.status == 200 and ok.headers.get("Content-Type") == "application/sdp"
    ours = parse_sdp(ok.body)
    assert ours.media[0].port == BOB_RTP and ours.media[0].payload_types() == [0, 8, 101]
    dialog.learn(ok)
    ack = dialog.ack(ok)
    ack.headers.add("Content-Type", "application/sdp")
    ack.body = sdp_body(CARRIER.host, 40000, rtpmaps=("8 PCMA/8000", "101 telephone-event/8000"))
    carrier.send(ack, BOB)
    net.run(until=2.0)
    (confirmed,) = bob.of(CallConfirmed)
    assert confirmed.media is not None
    assert (confirmed.media.codec, confirmed.media.remote_port) == ("PCMA", 40000)
    assert statuses([m for _, m in carrier.received if isinstance(m, Response)]).count(200) == 1


def test_offer_with_no_common_codec_is_rejected_488_through_answer() -> None:
    raised: list[OfferRejected] = []

    def try_answer(node: Node, event: Event, now: float) -> None:
        if isinstance(event, IncomingCall):
            try:
                node.endpoint.answer(event.call_id, now, rtp_port=BOB_RTP)
            except OfferRejected as exc:
                raised.append(exc)

    net, bob, carrier, dialog = setup(app=try_answer)
    body = sdp_body(CARRIER.host, 40000, rtpmaps=("18 G729/8000",))
    responses = send(net, carrier, dialog.request("INVITE", body=body))
    assert statuses(responses) == [100, 488]
    assert len(raised) == 1 and raised[0].status == 488
    assert "304" in (responses[-1].headers.get("Warning") or "")
    (ended,) = bob.of(CallEnded)
    assert ended.reason == "rejected-488" and not ended.by_remote


def test_compact_headers_telnyx_style_are_understood() -> None:
    net, bob, carrier, _ = setup(app=answer_calls)
    body = offer()
    raw = (
        "INVITE sip:+15552223333@192.0.2.2 SIP/2.0\r\n"
        "v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKtelnyx1;rport\r\n"
        "Max-Forwards: 69\r\n"
        'f: "Caller" <sip:+15550001111@sip.telnyx.com>;tag=tx1\r\n'
        "t: <sip:+15552223333@192.0.2.2>\r\n"
        "i: telnyx-call-1\r\n"
        "CSeq: 10 INVITE\r\n"
        "m: <sip:+15550001111@198.51.100.7:5060>\r\n"
        "k: timer\r\n"
        "x: 1800\r\n"
        "c: application/sdp\r\n"
        f"l: {len(body)}\r\n\r\n"
    ).encode() + body
    carrier.send_bytes(raw, BOB)
    net.run(until=1.0)
    (incoming,) = bob.of(IncomingCall)
    assert incoming.call_id == "telnyx-call-1" and incoming.caller.display_name == "Caller"
    ok = next(m for _, m in carrier.received if isinstance(m, Response) and m.status == 200)
    assert ok.to().tag and ok.call_id() == "telnyx-call-1" and ok.cseq().seq == 10
    assert (ok.headers.get("Session-Expires") or "").startswith("1800")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("P-Asserted-Identity", '"Real Caller" <sip:+15551112222@carrier.example>')], "+15551112222"),
        (
            [
                ("P-Asserted-Identity", "<sip:+15551112222@carrier.example>"),
                ("P-Preferred-Identity", "<sip:+15553334444@carrier.example>"),
            ],
            "+15553334444",
        ),
        ([("Remote-Party-ID", '"X" <sip:+15557778888@carrier.example>;party=calling')], "+15557778888"),
        ([], "+15550001111"),
    ],
)
def test_asserted_identity_becomes_asserted_caller(headers: list[tuple[str, str]], expected: str) -> None:
    net, bob, carrier, dialog = setup()
    send(net, carrier, dialog.request("INVITE", body=offer(), headers=headers))
    (incoming,) = bob.of(IncomingCall)
    assert incoming.asserted_caller.uri.user == expected
    assert incoming.caller.uri.user == "+15550001111"


def test_callee_hanging_up_before_the_ack_waits_for_it_to_send_bye() -> None:
    """§15: the callee must not send BYE on a dialog until the ACK for its 2xx arrives."""
    net = Network(Link(latency=0.01, rules=[delay(is_request("ACK"), 0.5)]))
    bob = Node(BOB, seed=2, app=answer_calls)
    carrier = Peer(CARRIER)
    dialog = RawDialog(me=CARRIER, target="sip:+15552223333@192.0.2.2")
    net.add(bob, carrier)
    carrier.send(dialog.request("INVITE", body=offer()), BOB)
    net.run(until=0.03)
    ok = carrier.responses(200)[0]
    dialog.learn(ok)
    carrier.send(dialog.ack(ok), BOB)  # arrives at 0.53
    call_id = bob.of(IncomingCall)[0].call_id
    net.run(until=0.1)
    bob.endpoint.hangup(call_id, net.now)
    bob.drain(net.now)
    assert bob.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]
    net.run(until=0.4)
    assert carrier.requests("BYE") == []
    net.run(until=1.0)
    (bye,) = carrier.requests("BYE")
    assert [t for t, m in carrier.received if m is bye] == [pytest.approx(0.54)]
    carrier.send(reply(bye, 200), BOB)
    net.run()
    assert bob.endpoint.calls == {}


def test_callee_hanging_up_with_its_2xx_never_acked_sends_bye_at_timer_l() -> None:
    net, bob, carrier, dialog = setup(app=answer_calls)
    carrier.send(dialog.request("INVITE", body=offer()), BOB)  # and never an ACK
    net.run(until=1.0)
    call_id = bob.of(IncomingCall)[0].call_id
    bob.endpoint.hangup(call_id, net.now)
    net.run(until=40.0)
    assert bob.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]  # once
    byes = carrier.requests("BYE")  # one BYE (retransmitted: nobody answers it yet)
    assert len({via_branch(b) for b in byes}) == 1
    assert [t for t, m in carrier.received if m is byes[0]] == [pytest.approx(0.01 + 32 + 0.01)]
    carrier.send(reply(byes[0], 200), BOB)
    net.run()
    assert bob.endpoint.calls == {} and bob.endpoint.get_timer() is None


def test_asserted_caller_with_garbage_falls_back_to_from() -> None:
    net, bob, carrier, dialog = setup()
    send(net, carrier, dialog.request("INVITE", body=offer(), headers=[("P-Asserted-Identity", "<<<")]))
    (incoming,) = bob.of(IncomingCall)
    assert incoming.asserted_caller == NameAddr.parse("<sip:+15550001111@198.51.100.7>;tag=rawtag1")


def test_responses_to_udp_requests_go_to_the_source_port_with_rport() -> None:
    net, _, carrier, dialog = setup()
    request = dialog.request("OPTIONS")
    request.headers.replace_top("Via", "SIP/2.0/UDP 10.0.0.9:5999;branch=z9hG4bKnat1;rport")
    (ok,) = send(net, carrier, request)
    via = ok.top_via()
    assert via.params.get("received") == CARRIER.host and via.params.get("rport") == str(CARRIER.port)
    assert [dg.destination for dg in net.link.sent if dg.source == BOB] == [CARRIER]
    assert parse_message(ok.serialize()).headers.get("Server")
