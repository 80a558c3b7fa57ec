"""Blind transfer with REFER (RFC 3515) in the sans-IO core, with no sockets.

Bob (our :class:`SipEndpoint`) answers a call from a scripted carrier (:class:`Transferee`), then
sends REFER; the carrier answers it as told and reports the transfer with NOTIFYs carrying
``message/sipfrag`` bodies, as Twilio's edge does. Also: the sipfrag reader, the Refer-To writer,
a REFER we receive (refused with 405), and a REFER on our own outbound call answering a 407.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from sipagent.sip.address import Address
from sipagent.sip.digest import Credentials, verify_authorization
from sipagent.sip.errors import LocalProtocolError, RemoteProtocolError
from sipagent.sip.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    Event,
    IncomingCall,
    TransferAccepted,
    TransferFailed,
    TransferProgress,
    TransferSucceeded,
)
from sipagent.sip.message import Request, Response
from sipagent.sip.refer import parse_sipfrag, refer_to_value
from sipagent.sip.session import CallState
from sipagent.sip.uri import SipUri
from tests.sip_pair import Datagram, Link, Network, duplicate, is_request
from tests.ua_pair import (
    ALICE,
    BOB,
    CARRIER,
    PROXY,
    Node,
    Peer,
    RawDialog,
    RecordRouteProxy,
    reply,
    sdp_body,
    sent_by,
    wire,
)

TARGET = SipUri.parse("sip:+15557654321@198.51.100.7")
AGENT = SipUri.parse("sip:agent@192.0.2.2")
#: Twilio style: two Record-Routes on the carrier's edge and a Contact on a private address.
EDGE_RR = ("<sip:198.51.100.7;lr;r=edge1>", "<sip:198.51.100.7:5060;lr;r=edge2>")
PRIVATE_CONTACT = "<sip:carrier@10.20.30.40:5070>"
TRYING = b"SIP/2.0 100 Trying\r\n"
OK = b"SIP/2.0 200 OK\r\n"
TERMINATED = "terminated;reason=noresource"

Sipfrag = tuple[float, bytes, str]  # (seconds after the REFER arrived, body, Subscription-State)


def answer_calls(node: Node, event: Event, now: float) -> None:
    if isinstance(event, IncomingCall):
        node.endpoint.answer(event.call_id, now, rtp_port=30000)


def hang_up_after_transfer(node: Node, event: Event, now: float) -> None:
    """The application's part (decision 0022): BYE once the transfer succeeded, never before."""
    answer_calls(node, event, now)
    if isinstance(event, TransferSucceeded):
        node.endpoint.hangup(event.call_id, now)


@dataclass
class Transferee:
    """A scripted carrier that called Bob and carries out his REFER as the test says."""

    net: Network
    #: Where its requests go first: Bob, or a proxy (then the INVITE names it in a Route).
    first_hop: Address = BOB
    record_route: tuple[str, ...] = ()
    contact: str = "<sip:carrier@198.51.100.7:5060>"
    #: The answer to the REFER (None: never answer), and extra headers on it.
    refer_status: int | None = 202
    refer_headers: tuple[tuple[str, str], ...] = ()
    #: NOTIFYs sent after the REFER arrives (before the answer when the delay is negative).
    notifies: list[Sipfrag] = field(default_factory=list)
    dialog: RawDialog = field(init=False)
    peer: Peer = field(init=False)
    #: Bob's answers to our in-dialog requests, by CSeq method.
    answers: dict[str, list[Response]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dialog = RawDialog(me=CARRIER, target="sip:+15552223333@192.0.2.2", contact=self.contact)
        self.peer = Peer(CARRIER, self.handle)
        self.net.add(self.peer)

    def call(self) -> None:
        headers = [("Record-Route", rr) for rr in self.record_route]
        if self.first_hop != BOB:
            headers.append(("Route", f"<sip:{self.first_hop.host};lr>"))
        body = sdp_body(CARRIER.host, 40000)
        self.peer.send(self.dialog.request("INVITE", body=body, headers=headers), self.first_hop)

    def notify(
        self,
        body: bytes,
        state: str = "active;expires=60",
        *,
        event: str | None = "refer",
        content_type: str | None = "message/sipfrag;version=2.0",
    ) -> Request:
        headers = [("Subscription-State", state), ("Contact", self.contact)]
        if event is not None:
            headers.insert(0, ("Event", event))
        request = self.dialog.request("NOTIFY", headers=headers)
        request.body = body
        if content_type is not None:
            request.headers.set("Content-Type", content_type)
        return request

    def send(self, request: Request) -> None:
        self.peer.send(request, self.first_hop)

    def send_notify_at(self, when: float, body: bytes, state: str) -> None:
        self.peer.call_at(when, lambda now: self.send(self.notify(body, state)))

    def handle(self, peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if isinstance(message, Response):
            method = message.cseq().method
            if method == "INVITE" and message.status == 200:
                if self.dialog.to_tag is None:
                    self.dialog.learn(message)
                peer.send(self.dialog.ack(message), self.first_hop)
            elif message.status >= 200:
                self.answers.setdefault(method, []).append(message)
            return
        if message.method == "BYE":
            peer.send(reply(message, 200), source)
        elif message.method == "REFER":
            for delay, body, state in self.notifies:
                self.send_notify_at(now + max(delay, 0.0), body, state)
            if self.refer_status is not None:
                response = reply(message, self.refer_status, headers=self.refer_headers)
                # The 202 after any NOTIFY scheduled "before" it (a negative delay).
                late = any(delay < 0 for delay, _, _ in self.notifies)
                peer.send_at(now + (0.05 if late else 0.0), response, source)


def transfer_call(
    *,
    app: Callable[[Node, Event, float], None] = answer_calls,
    link: Link | None = None,
    **kwargs: object,
) -> tuple[Network, Node, Transferee, str]:
    net = Network(link or Link(latency=0.01))
    bob = Node(BOB, seed=2, app=app)
    net.add(bob)
    carrier = Transferee(net, **kwargs)  # type: ignore[arg-type]
    carrier.call()
    net.run(until=1.0)
    (confirmed,) = bob.of(CallConfirmed)
    return net, bob, carrier, confirmed.call_id


def transfer_events(node: Node) -> list[Event]:
    kinds = (TransferAccepted, TransferProgress, TransferSucceeded, TransferFailed)
    return [e for _, e in node.events if isinstance(e, kinds)]


def bob_requests(net: Network, method: str) -> list[Request]:
    return [m for m in wire(net.link, sent_by(BOB)) if isinstance(m, Request) and m.method == method]


def from_carrier(start: str) -> Callable[[Datagram], bool]:
    """Matches what the carrier sent whose first line starts with ``start``."""
    return lambda dg: dg.source == CARRIER and dg.first_line.startswith(start)


# ---------------------------------------------------------------------------------------------
# The whole transfer
# ---------------------------------------------------------------------------------------------
def test_accepted_progress_success_in_order_then_the_app_hangs_up_along_the_route_set() -> None:
    net, bob, carrier, call_id = transfer_call(
        app=hang_up_after_transfer,
        record_route=EDGE_RR,
        contact=PRIVATE_CONTACT,
        notifies=[(0.2, TRYING, "active;expires=60"), (2.0, OK, TERMINATED)],
    )
    bob.endpoint.refer(call_id, TARGET, net.now, referred_by=AGENT)
    net.run(until=10.0)

    (refer,) = bob_requests(net, "REFER")
    assert refer.uri == "sip:carrier@10.20.30.40:5070"  # the remote target…
    assert refer.headers.get_all("Route") == list(EDGE_RR)  # …through the route set, in order
    assert refer.headers.get("Refer-To") == "<sip:+15557654321@198.51.100.7>"
    assert refer.headers.get("Referred-By") == "<sip:agent@192.0.2.2>"
    assert refer.headers.get("Contact") == "<sip:sipagent@192.0.2.2:5060>"
    assert refer.cseq().seq == 1 and refer.to().tag == carrier.dialog.from_tag
    assert [dg.destination for dg in net.link.sent if dg.first_line.startswith("REFER")] == [CARRIER]

    assert transfer_events(bob) == [
        TransferAccepted(call_id),
        TransferProgress(call_id, 100, "Trying"),
        TransferSucceeded(call_id, 200),
    ]
    refer_at = bob.times(TransferAccepted)[0] - 0.01  # the 202 left the carrier at once
    assert bob.times(TransferProgress) == [pytest.approx(refer_at + 0.2 + 0.01)]
    # Every NOTIFY got 200; the BYE came from the application, right after the final one.
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 200]
    (bye,) = bob_requests(net, "BYE")
    assert bye.headers.get_all("Route") == list(EDGE_RR) and bye.cseq().seq == 2
    assert bob.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]
    ok_sent = net.link.sent_times(lambda dg: dg.source == BOB and dg.first_line.startswith("SIP/2.0 200"))
    bye_sent = net.link.sent_times(lambda dg: dg.source == BOB and dg.first_line.startswith("BYE"))
    assert ok_sent[-1] <= bye_sent[0]  # our 200 to the final NOTIFY first, then the BYE
    net.run()
    assert bob.endpoint.calls == {}


def test_the_core_does_not_hang_up_by_itself_after_success() -> None:
    net, bob, _, call_id = transfer_call(notifies=[(0.1, OK, TERMINATED)])
    bob.endpoint.refer(call_id, "tel:+15557654321", net.now)
    net.run(until=100.0)
    assert transfer_events(bob)[-1] == TransferSucceeded(call_id, 200)
    assert bob_requests(net, "BYE") == [] and bob.of(CallEnded) == []
    assert bob.endpoint.call_state(call_id) is CallState.CONFIRMED
    assert bob_requests(net, "REFER")[0].headers.get("Refer-To") == "<tel:+15557654321>"
    bob.endpoint.hangup(call_id, net.now)
    net.run(until=101.0)
    assert len(bob_requests(net, "BYE")) == 1


@pytest.mark.parametrize("status", [403, 405, 501, 603])
def test_a_refused_refer_fails_the_transfer_and_the_call_goes_on(status: int) -> None:
    net, bob, carrier, call_id = transfer_call(refer_status=status, notifies=[])
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=60.0)
    (failed,) = transfer_events(bob)
    assert failed.call_id == call_id and failed.status == status  # type: ignore[union-attr]
    assert bob.endpoint.call_state(call_id) is CallState.CONFIRMED
    assert bob_requests(net, "BYE") == [] and bob.of(CallEnded) == []
    # No subscription came of it: a NOTIFY now is for nothing we know.
    carrier.send(carrier.notify(OK, TERMINATED))
    net.run(until=61.0)
    assert [r.status for r in carrier.answers["NOTIFY"]] == [481]
    # The caller may hang up later, as usual.
    carrier.send(carrier.dialog.request("BYE"))
    net.run(until=62.0)
    assert bob.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]


@pytest.mark.parametrize(("sipfrag", "status", "reason"), [(b"SIP/2.0 486 Busy Here", 486, "Busy Here"),
                                                         (b"SIP/2.0 503 Service Unavailable\r\n", 503,
                                                          "Service Unavailable")])  # fmt: skip
def test_a_notify_reporting_an_error_fails_the_transfer(sipfrag: bytes, status: int, reason: str) -> None:
    net, bob, carrier, call_id = transfer_call(notifies=[(0.1, TRYING, "active"), (3.0, sipfrag, TERMINATED)])
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=10.0)
    assert transfer_events(bob) == [
        TransferAccepted(call_id),
        TransferProgress(call_id, 100, "Trying"),
        TransferFailed(call_id, status, reason),
    ]
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 200]
    assert bob.endpoint.call_state(call_id) is CallState.CONFIRMED and bob_requests(net, "BYE") == []


def test_no_final_notify_fails_the_transfer_at_the_timeout_exactly() -> None:
    net, bob, carrier, call_id = transfer_call(notifies=[(0.1, TRYING, "active")])
    bob.endpoint.refer(call_id, TARGET, net.now, timeout=10.0)
    net.run(until=30.0)
    accepted_at = bob.times(TransferAccepted)[0]
    assert transfer_events(bob) == [
        TransferAccepted(call_id),
        TransferProgress(call_id, 100, "Trying"),
        TransferFailed(call_id, 408, "No final NOTIFY within 10 s"),
    ]
    assert bob.times(TransferFailed) == [accepted_at + 10.0]
    # We gave up on the subscription: a late report gets 481 and tells the notifier so.
    carrier.send(carrier.notify(OK, TERMINATED))
    net.run(until=31.0)
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 481]
    assert len(transfer_events(bob)) == 3 and bob.endpoint.call_state(call_id) is CallState.CONFIRMED


def test_the_timer_is_the_endpoints_next_deadline() -> None:
    net, bob, _, call_id = transfer_call(notifies=[])
    bob.endpoint.refer(call_id, TARGET, net.now, timeout=25.0)
    net.run(until=20.0)  # the REFER's transaction is long over (Timer K: 5 s)
    accepted_at = bob.times(TransferAccepted)[0]
    assert bob.endpoint.get_timer() == pytest.approx(accepted_at + 25.0)


def test_an_unanswered_refer_fails_with_408_at_timer_f() -> None:
    net, bob, _, call_id = transfer_call(refer_status=None)
    start = net.now
    bob.endpoint.refer(call_id, TARGET, start)
    net.run(until=60.0)
    assert transfer_events(bob) == [TransferFailed(call_id, 408, "Request Timeout")]
    assert bob.times(TransferFailed) == [pytest.approx(start + 32.0)]
    assert len(bob_requests(net, "REFER")) == 11  # Timer E: 0.5, 1, 2, 4, 4… up to Timer F
    assert bob.endpoint.call_state(call_id) is CallState.CONFIRMED


def test_a_retransmitted_notify_is_answered_again_and_reported_once() -> None:
    link = Link(latency=0.01, rules=[duplicate(is_request("NOTIFY"), after=0.3, times=2)])
    net, bob, carrier, call_id = transfer_call(
        link=link, notifies=[(0.1, TRYING, "active"), (1.0, OK, TERMINATED)]
    )
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=10.0)
    assert transfer_events(bob) == [
        TransferAccepted(call_id),
        TransferProgress(call_id, 100, "Trying"),
        TransferSucceeded(call_id, 200),
    ]
    # Both copies of each NOTIFY were answered 200 by the same server transaction.
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 200, 200, 200]
    assert len({r.cseq().seq for r in carrier.answers["NOTIFY"]}) == 2


def test_through_a_record_routing_proxy_the_refer_and_notifies_follow_the_route_set() -> None:
    link = Link(latency=0.01)
    net = Network(link)
    proxy = RecordRouteProxy(PROXY)
    net.add(proxy)
    bob = Node(BOB, seed=2, app=hang_up_after_transfer)
    net.add(bob)
    carrier = Transferee(net, first_hop=PROXY, notifies=[(0.1, TRYING, "active"), (0.5, OK, TERMINATED)])
    carrier.call()
    net.run(until=1.0)
    (confirmed,) = bob.of(CallConfirmed)
    bob.endpoint.refer(confirmed.call_id, TARGET, net.now)
    net.run(until=5.0)
    rr_a, rr_b = "<sip:192.0.2.50;lr;r=a>", "<sip:192.0.2.50;lr;r=b>"
    (refer,) = bob_requests(net, "REFER")
    assert refer.headers.get_all("Route") == [rr_a, rr_b] and refer.uri == "sip:carrier@198.51.100.7:5060"
    assert [dg.destination for dg in link.sent if dg.source == BOB] == [PROXY] * len(
        [dg for dg in link.sent if dg.source == BOB]
    )
    # The proxy relayed the REFER to the carrier and its NOTIFYs to Bob.
    relayed = [m.method for m in proxy.seen if isinstance(m, Request)]
    assert relayed.count("REFER") == 1 and relayed.count("NOTIFY") == 2
    assert [type(e) for e in transfer_events(bob)] == [TransferAccepted, TransferProgress, TransferSucceeded]
    assert bob.of(CallEnded) == [CallEnded(confirmed.call_id, "local-bye", by_remote=False)]
    assert carrier.peer.requests("BYE") and net.undeliverable == []


def test_a_notify_overtaking_the_202_counts_as_the_acceptance() -> None:
    net, bob, carrier, call_id = transfer_call(notifies=[(-1.0, TRYING, "active"), (1.0, OK, TERMINATED)])
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=10.0)
    assert transfer_events(bob) == [
        TransferAccepted(call_id),
        TransferProgress(call_id, 100, "Trying"),
        TransferSucceeded(call_id, 200),
    ]
    (notify_sent, _) = net.link.sent_times(from_carrier("NOTIFY"))
    (accepted_sent,) = net.link.sent_times(from_carrier("SIP/2.0 202"))
    assert notify_sent < accepted_sent
    assert bob.times(TransferAccepted) == bob.times(TransferProgress) == [pytest.approx(notify_sent + 0.01)]
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 200]


def test_a_subscription_ended_without_a_final_status_fails_the_transfer_with_487() -> None:
    net, bob, _, call_id = transfer_call(
        notifies=[(0.1, b"SIP/2.0 180 Ringing", "terminated;reason=timeout")]
    )
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=10.0)
    assert transfer_events(bob) == [
        TransferAccepted(call_id),
        TransferProgress(call_id, 180, "Ringing"),
        TransferFailed(call_id, 487, "Subscription ended without a final status"),
    ]


def test_a_2xx_with_refer_sub_false_promises_no_report_and_counts_as_success() -> None:
    net, bob, _, call_id = transfer_call(refer_headers=(("Refer-Sub", "false"),))
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=100.0)
    assert transfer_events(bob) == [TransferAccepted(call_id), TransferSucceeded(call_id, 202)]


def test_after_success_a_live_subscription_still_gets_200_and_reports_nothing() -> None:
    net, bob, carrier, call_id = transfer_call(
        notifies=[
            (0.1, OK, "active;expires=30"),
            (0.5, b"SIP/2.0 180 Ringing", "active"),
            (1.0, OK, TERMINATED),
        ]
    )
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=5.0)
    assert transfer_events(bob) == [TransferAccepted(call_id), TransferSucceeded(call_id, 200)]
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 200, 200]
    carrier.send(carrier.notify(OK, TERMINATED))  # after the terminated one
    net.run(until=6.0)
    assert carrier.answers["NOTIFY"][-1].status == 481


# ---------------------------------------------------------------------------------------------
# NOTIFYs we cannot use
# ---------------------------------------------------------------------------------------------
def accepted_transfer() -> tuple[Network, Node, Transferee, str]:
    net, bob, carrier, call_id = transfer_call(notifies=[])
    bob.endpoint.refer(call_id, TARGET, net.now, timeout=20.0)
    net.run(until=2.0)
    assert transfer_events(bob) == [TransferAccepted(call_id)]
    return net, bob, carrier, call_id


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"body": b"INVITE sip:x@y SIP/2.0\r\n"}, 400),
        ({"body": b""}, 400),
        ({"body": b"SIP/2.0 2000 Huge"}, 400),
        ({"body": b"SIP/2.0 200 OK", "content_type": "text/plain"}, 415),
        ({"body": OK, "event": None}, 400),
        ({"body": OK, "event": "dialog"}, 481),
        ({"body": OK, "event": "refer;id=77"}, 481),
    ],
    ids=["request-line", "no-body", "bad-status", "text-plain", "no-event", "other-package", "unknown-id"],
)
def test_an_unusable_notify_is_answered_with_an_error_and_reports_nothing(
    kwargs: dict[str, object], status: int
) -> None:
    net, bob, carrier, call_id = accepted_transfer()
    carrier.send(carrier.notify(**kwargs))  # type: ignore[arg-type]
    net.run(until=3.0)
    (answer,) = carrier.answers["NOTIFY"]
    assert answer.status == status
    if status == 415:
        assert answer.headers.get("Accept") == "message/sipfrag"
    assert transfer_events(bob) == [TransferAccepted(call_id)]
    # The subscription lives on: a good report still counts, with the REFER's id or none.
    carrier.send(carrier.notify(OK, TERMINATED, event="refer;id=1"))
    net.run(until=4.0)
    assert transfer_events(bob)[-1] == TransferSucceeded(call_id, 200)


def test_an_unreadable_notify_that_ends_the_subscription_fails_the_transfer() -> None:
    net, bob, carrier, call_id = accepted_transfer()
    carrier.send(carrier.notify(b"garbage", TERMINATED))
    net.run(until=3.0)
    assert carrier.answers["NOTIFY"][0].status == 400
    assert transfer_events(bob)[-1] == TransferFailed(
        call_id, 487, "Subscription ended without a final status"
    )


@pytest.mark.parametrize(("method", "status"), [("NOTIFY", 481), ("REFER", 405)])
def test_notify_and_refer_outside_any_dialog_are_refused(method: str, status: int) -> None:
    net = Network(Link(latency=0.01))
    bob = Node(BOB, seed=2)
    peer = Peer(CARRIER)
    net.add(bob, peer)
    dialog = RawDialog(me=CARRIER, target="sip:sipagent@192.0.2.2")
    headers = [("Event", "refer"), ("Subscription-State", "active"), ("Refer-To", "<sip:x@198.51.100.9>")]
    peer.send(dialog.request(method, headers=headers), BOB)
    net.run(until=1.0)
    assert [r.status for r in peer.responses()] == [status]
    assert bob.events == []


# ---------------------------------------------------------------------------------------------
# Asking at the wrong time, and a second transfer
# ---------------------------------------------------------------------------------------------
def test_refer_needs_a_confirmed_call_and_one_transfer_at_a_time() -> None:
    net, bob, _, call_id = transfer_call(notifies=[])
    with pytest.raises(LocalProtocolError, match="transfer target"):
        bob.endpoint.refer(call_id, "mailto:someone@example.com", net.now)
    assert bob_requests(net, "REFER") == []  # nothing sent, no CSeq spent
    bob.endpoint.refer(call_id, TARGET, net.now)
    with pytest.raises(LocalProtocolError, match="under way"):
        bob.endpoint.refer(call_id, TARGET, net.now)
    with pytest.raises(LocalProtocolError, match="no call"):
        bob.endpoint.refer("nosuchcall", TARGET, net.now)
    bob.endpoint.hangup(call_id, net.now)
    with pytest.raises(LocalProtocolError, match="terminated"):
        bob.endpoint.refer(call_id, TARGET, net.now)


def test_refer_before_the_ack_is_refused() -> None:
    net = Network(Link(latency=0.01))
    bob = Node(BOB, seed=2)
    net.add(bob)
    carrier = Transferee(net)
    carrier.call()
    net.run(until=0.05)
    (incoming,) = bob.of(IncomingCall)
    bob.endpoint.answer(incoming.call_id, net.now, rtp_port=30000)
    with pytest.raises(LocalProtocolError, match="answered"):
        bob.endpoint.refer(incoming.call_id, TARGET, net.now)


def test_a_second_transfer_after_a_failed_one_has_its_own_subscription_id() -> None:
    net, bob, carrier, call_id = transfer_call(notifies=[(0.1, b"SIP/2.0 486 Busy Here", TERMINATED)])
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=3.0)
    carrier.notifies = []
    bob.endpoint.refer(call_id, SipUri.parse("sip:+15550009999@198.51.100.7"), net.now)
    net.run(until=4.0)
    second = bob_requests(net, "REFER")[1]
    assert second.cseq().seq == 2
    carrier.send(carrier.notify(OK, TERMINATED, event="refer;id=1"))  # the first one's: over
    carrier.send(carrier.notify(OK, TERMINATED, event="refer;id=2"))
    net.run(until=5.0)
    assert [r.status for r in carrier.answers["NOTIFY"]] == [200, 481, 200]
    assert [type(e).__name__ for e in transfer_events(bob)] == [
        "TransferAccepted",
        "TransferFailed",
        "TransferAccepted",
        "TransferSucceeded",
    ]


def test_a_call_ended_by_the_peer_mid_transfer_ends_the_transfer_silently() -> None:
    net, bob, carrier, call_id = transfer_call(notifies=[(0.1, TRYING, "active")])
    bob.endpoint.refer(call_id, TARGET, net.now, timeout=10.0)
    net.run(until=2.0)
    carrier.send(carrier.dialog.request("BYE"))
    net.run(until=60.0)
    assert [type(e).__name__ for _, e in bob.events][-3:] == [
        "TransferAccepted",
        "TransferProgress",
        "CallEnded",
    ]


# ---------------------------------------------------------------------------------------------
# A REFER sent to us
# ---------------------------------------------------------------------------------------------
def test_a_refer_sent_to_us_is_refused_with_405_and_the_call_goes_on() -> None:
    net, bob, carrier, call_id = transfer_call()
    carrier.send(carrier.dialog.request("REFER", headers=[("Refer-To", "<sip:elsewhere@198.51.100.9>")]))
    net.run(until=2.0)
    (answer,) = carrier.answers["REFER"]
    assert answer.status == 405
    allow = {m.strip() for m in (answer.headers.get("Allow") or "").split(",")}
    assert "REFER" not in allow and {"INVITE", "BYE", "NOTIFY"} <= allow
    assert bob.endpoint.call_state(call_id) is CallState.CONFIRMED and bob.of(CallEnded) == []


# ---------------------------------------------------------------------------------------------
# Our own outbound call: the REFER answers a challenge with the call's credentials
# ---------------------------------------------------------------------------------------------
PASSWORD = "s3cret-pw"


@dataclass
class ChallengingCallee:
    """A carrier that answers Alice's INVITE, challenges her REFER with 407 once, then accepts it."""

    refers: list[Request] = field(default_factory=list)
    verdicts: list[bool] = field(default_factory=list)

    def __call__(self, peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if not isinstance(message, Request):
            return
        if message.method == "INVITE":
            body = sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000",))
            peer.send(
                reply(message, 200, to_tag="cr1", contact="<sip:callee@198.51.100.7>", body=body), source
            )
        elif message.method in ("BYE", "NOTIFY"):
            peer.send(reply(message, 200), source)
        elif message.method == "REFER":
            self.refers.append(message)
            value = message.headers.get("Proxy-Authorization")
            if value is None:
                challenge = 'Digest realm="sip.example", nonce="n1", qop="auth", algorithm=MD5'
                peer.send(reply(message, 407, headers=[("Proxy-Authenticate", challenge)]), source)
                return
            ok = verify_authorization(value, method="REFER", password=PASSWORD, uri=message.uri, nonce="n1")
            self.verdicts.append(ok)
            peer.send(reply(message, 202 if ok else 403), source)


def test_a_challenged_refer_on_our_outbound_call_is_resent_with_credentials() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    callee = ChallengingCallee()
    net.add(alice, Peer(CARRIER, callee))
    call_id = alice.endpoint.invite(TARGET, 0.0, rtp_port=20000, credentials=Credentials("alice", PASSWORD))
    net.run(until=1.0)
    assert len(alice.of(CallAnswered)) == 1
    alice.endpoint.refer(call_id, "sip:+15550009999@198.51.100.7", net.now)
    net.run(until=2.0)
    first, second = callee.refers
    assert callee.verdicts == [True]
    assert second.cseq().seq == first.cseq().seq + 1 and second.call_id() == call_id
    assert second.headers.get("Refer-To") == "<sip:+15550009999@198.51.100.7>"
    assert transfer_events(alice) == [TransferAccepted(call_id)]
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=3.0)
    (bye,) = [m for m in wire(net.link, sent_by(ALICE)) if isinstance(m, Request) and m.method == "BYE"]
    assert bye.cseq().seq == second.cseq().seq + 1  # the dialog's CSeq space stays in order


def test_a_challenged_refer_on_an_inbound_call_fails_with_the_challenge() -> None:
    net, bob, _, call_id = transfer_call(refer_status=407)
    bob.endpoint.refer(call_id, TARGET, net.now)
    net.run(until=5.0)
    (failed,) = transfer_events(bob)
    assert isinstance(failed, TransferFailed) and failed.status == 407


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"SIP/2.0 200 OK", (200, "OK")),
        (b"SIP/2.0 200 OK\r\n", (200, "OK")),
        (b"\r\nSIP/2.0 100 Trying\r\n\r\n", (100, "Trying")),
        (b"SIP/2.0 180 Ringing\nContact: <sip:x@y>\n", (180, "Ringing")),
        (b"SIP/2.0 183\r\n", (183, "Session Progress")),
        (b"sip/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKa\r\n\r\n", (486, "Busy Here")),
        (b"SIP/2.0 503 Service Unavailable \r\nRetry-After: 5", (503, "Service Unavailable")),
    ],
)
def test_sipfrag_status_lines_are_read_robustly(body: bytes, expected: tuple[int, str]) -> None:
    assert parse_sipfrag(body) == expected


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 99 Low", b"SIP/2.0 abc OK", b"HTTP/1.1 200 OK"],
)
def test_sipfrag_without_a_status_line_is_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_sipfrag(body)
    assert caught.value.status_hint == 400


@pytest.mark.parametrize(
    ("target", "value"),
    [
        (TARGET, "<sip:+15557654321@198.51.100.7>"),
        (SipUri.parse("sips:agent@example.com;transport=tls"), "<sips:agent@example.com;transport=tls>"),
        ("sip:+15557654321@trunk.pstn.twilio.com", "<sip:+15557654321@trunk.pstn.twilio.com>"),
        ("tel:+1-555-765-4321", "<tel:+1-555-765-4321>"),
        ("TEL:+15557654321", "<tel:+15557654321>"),
        ("tel:7042;phone-context=example.com", "<tel:7042;phone-context=example.com>"),
    ],
)
def test_refer_to_is_written_in_angle_brackets(target: SipUri | str, value: str) -> None:
    assert refer_to_value(target) == value


@pytest.mark.parametrize(
    "target",
    ["tel:7042", "tel:+", "tel:+1 555 0100", "tel:+1555<0100>", "mailto:a@b", "sip:", "+15551234567"],
)
def test_a_target_that_is_no_usable_uri_is_refused(target: str) -> None:
    with pytest.raises(LocalProtocolError):
        refer_to_value(target)


@pytest.mark.parametrize(
    ("kind", "status"),
    [(TransferProgress, 200), (TransferSucceeded, 180), (TransferSucceeded, 486), (TransferFailed, 200)],
)
def test_transfer_events_are_validated(kind: type, status: int) -> None:
    args: Iterable[object] = ("c", status) if kind is TransferSucceeded else ("c", status, "r")
    with pytest.raises(ValueError):
        kind(*args)
