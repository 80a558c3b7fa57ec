"""Transactions end to end over an in-memory lossy link (h11 ConnectionPair style, no sockets).

The two endpoints here are the thinnest possible TU + transport around the transaction machines:
the UAC ACKs every 2xx (new branch, as §13.2.2.4 says), the UAS matches requests by
:func:`server_key`, hands a 2xx ACK to its INVITE transaction by Call-ID, and answers new
requests with a scripted list of statuses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sipagent.sip.address import Address, Outgoing, stamp_via
from sipagent.sip.message import Headers, Request, Response, parse_message
from sipagent.sip.transaction import (
    AckReceived,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    ServerTransaction,
    TransactionEvent,
    TransactionState,
    TransactionTimedOut,
    client_key,
    new_branch,
    server_key,
)
from tests.sip_pair import Datagram, Link, Network, drop, duplicate, is_request, is_response

CLIENT = Address("udp", "192.0.2.1", 5060)
SERVER = Address("udp", "192.0.2.2", 5060)


def make_request(method: str, branch: str, *, cseq: int = 1, transport: str = "UDP") -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/{transport} {CLIENT.host}:{CLIENT.port};branch={branch};rport")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=a1")
    headers.add("To", "<sip:bob@example.com>")
    headers.add("Call-ID", "pair-call@192.0.2.1")
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", f"<sip:alice@{CLIENT.host}:{CLIENT.port}>")
    return Request(method, f"sip:bob@{SERVER.host}:{SERVER.port}", headers)


def ack_for_2xx(invite: Request, response: Response, branch: str) -> Request:
    """The TU's ACK for a 2xx: a transaction of its own, with a new branch (§13.2.2.4)."""
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP {CLIENT.host}:{CLIENT.port};branch={branch};rport")
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id())
    headers.add("CSeq", f"{invite.cseq().seq} ACK")
    return Request("ACK", invite.uri, headers)


@dataclass
class UacEndpoint:
    """A client-side TU plus transport: a list of client transactions and their events."""

    address: Address
    peer: Address
    events: list[tuple[float, TransactionEvent]] = field(default_factory=list)
    transactions: list[ClientTransaction] = field(default_factory=list)
    strays: list[Response] = field(default_factory=list)
    _direct: list[Outgoing] = field(default_factory=list)
    _branches: int = 0

    def send(self, request: Request, now: float) -> ClientTransaction:
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(request, self.peer)
        else:
            tx = NonInviteClientTransaction(request, self.peer)
        self.transactions.append(tx)
        tx.start(now)
        return tx

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        response = parse_message(data)
        assert isinstance(response, Response)
        key = client_key(response)
        tx = next((t for t in self.transactions if t.key == key and not t.terminated), None)
        if tx is None:
            self.strays.append(response)
            return
        for event in tx.receive_response(response, now):
            self.events.append((now, event))
            is_2xx = isinstance(event, ResponseReceived) and 200 <= event.response.status < 300
            if is_2xx and isinstance(tx, InviteClientTransaction):
                self._branches += 1
                ack = ack_for_2xx(tx.request, response, new_branch(f"ack{self._branches}"))
                self._direct.append(Outgoing(self.peer, ack, ack.serialize()))

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        out, self._direct = self._direct, []
        for tx in self.transactions:
            out.extend(tx.datagrams_to_send())
        return out

    def get_timer(self) -> float | None:
        deadlines = [t for t in (tx.get_timer() for tx in self.transactions) if t is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for tx in self.transactions:
            deadline = tx.get_timer()
            if deadline is not None and deadline <= now:
                self.events.extend((now, event) for event in tx.handle_timer(now))

    def responses(self, status: int | None = None) -> list[tuple[float, Response]]:
        return [
            (t, e.response)
            for t, e in self.events
            if isinstance(e, ResponseReceived) and (status is None or e.response.status == status)
        ]

    def timeouts(self) -> list[float]:
        return [t for t, e in self.events if isinstance(e, TransactionTimedOut)]


#: The scripted TU: which statuses to answer a new request with, in order, right away.
Script = Callable[[Request], list[int]]


@dataclass
class UasEndpoint:
    """A server-side TU plus transport: matches requests to server transactions."""

    address: Address
    script: Script
    #: Requests the TU saw: new ones, and 2xx ACKs it matched by dialog.
    seen: list[tuple[float, Request]] = field(default_factory=list)
    events: list[tuple[float, TransactionEvent]] = field(default_factory=list)
    transactions: dict[tuple[str, str, str], ServerTransaction] = field(default_factory=dict)
    stray_acks: list[Request] = field(default_factory=list)

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        request = parse_message(data)
        assert isinstance(request, Request)
        stamp_via(request, source)
        key = server_key(request)
        existing = self.transactions.get(key)
        if existing is not None:
            self.events.extend((now, e) for e in existing.receive_request(request, now))
            return
        if request.method == "ACK":
            self._route_2xx_ack(request, now)
            return
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = InviteServerTransaction(request, source)
        else:
            tx = NonInviteServerTransaction(request, source)
        self.transactions[key] = tx
        self.seen.append((now, request))
        for status in self.script(request):
            tx.send_response(request.response(status, to_tag="b1" if status > 100 else None), now)

    def _route_2xx_ack(self, ack: Request, now: float) -> None:
        # "Dialog matching", reduced to Call-ID and CSeq number for this test.
        for tx in self.transactions.values():
            same_dialog = tx.request.call_id() == ack.call_id() and tx.request.cseq().seq == ack.cseq().seq
            if isinstance(tx, InviteServerTransaction) and same_dialog and not tx.terminated:
                self.seen.append((now, ack))
                tx.ack_received(ack, now)
                return
        self.stray_acks.append(ack)

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        return [out for tx in self.transactions.values() for out in tx.datagrams_to_send()]

    def get_timer(self) -> float | None:
        deadlines = [t for t in (tx.get_timer() for tx in self.transactions.values()) if t is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for tx in self.transactions.values():
            deadline = tx.get_timer()
            if deadline is not None and deadline <= now:
                self.events.extend((now, event) for event in tx.handle_timer(now))

    def seen_methods(self) -> list[str]:
        return [r.method for _, r in self.seen]


def answer(*statuses: int) -> Script:
    return lambda _request: list(statuses)


def make_pair(link: Link, script: Script) -> tuple[Network, UacEndpoint, UasEndpoint]:
    client = UacEndpoint(CLIENT, SERVER)
    server = UasEndpoint(SERVER, script)
    net = Network(link)
    net.add(client, server)
    return net, client, server


def acks(dg: Datagram) -> bool:
    return is_request("ACK")(dg)


# ---------------------------------------------------------------------------------------------
def test_non_invite_survives_two_lost_transmissions() -> None:
    link = Link(latency=0.01, rules=[drop(is_request("OPTIONS"), times=2)])
    net, client, server = make_pair(link, answer(200))
    tx = client.send(make_request("OPTIONS", "z9hG4bKopt1"), net.now)
    net.run()
    assert link.sent_times(is_request("OPTIONS")) == [0.0, 0.5, 1.5]  # Timer E: T1, then 2·T1
    assert link.delivered_times(is_request("OPTIONS")) == [1.51]
    assert [t for t, _ in client.responses(200)] == [1.52]
    assert client.timeouts() == []
    assert server.seen_methods() == ["OPTIONS"]
    # Timer K (T4) ends the client, Timer J (64·T1) the server; then the network is quiet.
    assert tx.terminated and all(s.terminated for s in server.transactions.values())
    assert net.now == pytest.approx(1.51 + 32)


def test_invite_486_lost_once_is_retransmitted_by_timer_g_and_acked() -> None:
    link = Link(latency=0.01, rules=[drop(is_response(486), times=1)])
    net, client, server = make_pair(link, answer(100, 486))
    tx = client.send(make_request("INVITE", "z9hG4bKinv1"), net.now)
    net.run(until=1.0)
    # The 100 stopped Timer A, so the INVITE went out once; Timer G resent the 486 at 0.01 + T1.
    assert link.sent_times(is_request("INVITE")) == [0.0]
    assert link.sent_times(is_response(486)) == [0.01, 0.51]
    assert [r.status for _, r in client.responses()] == [100, 486]
    assert link.sent_times(acks) == [0.52]
    (stx,) = server.transactions.values()
    assert stx.state is TransactionState.CONFIRMED
    assert tx.state is TransactionState.COMPLETED
    net.run()
    assert link.sent_times(is_response(486)) == [0.01, 0.51]  # the ACK stopped Timer G
    assert tx.terminated and stx.terminated
    assert server.events == [] and client.timeouts() == []
    assert server.seen_methods() == ["INVITE"]


def test_invite_486_whose_ack_is_lost_is_reacked_from_completed() -> None:
    link = Link(latency=0.01, rules=[drop(acks, times=1)])
    net, client, server = make_pair(link, answer(486))
    client.send(make_request("INVITE", "z9hG4bKinv2"), net.now)
    net.run()
    assert link.sent_times(is_response(486)) == [0.01, 0.51]
    assert link.sent_times(acks) == [0.02, 0.52]  # the transaction re-ACKs, the TU sees one 486
    assert [r.status for _, r in client.responses()] == [486]
    assert server.events == []


def test_invite_200_with_lost_ack_is_retransmitted_until_the_tu_hands_the_ack() -> None:
    link = Link(latency=0.01, rules=[drop(acks, times=2)])
    net, client, server = make_pair(link, answer(100, 200))
    tx = client.send(make_request("INVITE", "z9hG4bKinv3"), net.now)
    net.run()
    # 2xx at 0.01, then Timer G at +T1 and +3·T1 (each re-ACKed by the UAC TU, the third ACK lands).
    assert link.sent_times(is_response(200)) == [0.01, 0.51, 1.51]
    assert link.sent_times(acks) == [0.02, 0.52, 1.52]
    assert [t for t, _ in client.responses(200)] == [0.02, 0.52, 1.52]  # every 2xx reaches the TU
    assert [(t, m) for t, m in ((t, r.method) for t, r in server.seen)] == [(0.01, "INVITE"), (1.53, "ACK")]
    (stx,) = server.transactions.values()
    assert stx.terminated and tx.terminated
    assert server.events == []  # no Timer L timeout
    assert net.now == pytest.approx(0.02 + 32)  # the last to end is the client's Timer M


def test_invite_200_never_acked_times_out_on_the_server() -> None:
    link = Link(latency=0.01, rules=[drop(acks)])
    net, client, server = make_pair(link, answer(200))
    client.send(make_request("INVITE", "z9hG4bKinv8"), net.now)
    net.run()
    assert link.sent_times(is_response(200)) == pytest.approx(
        [0.01, 0.51, 1.51, 3.51, 7.51, 11.51, 15.51, 19.51, 23.51, 27.51, 31.51]
    )
    ((t, event),) = server.events
    assert isinstance(event, TransactionTimedOut) and event.timer == "L"
    assert t == pytest.approx(0.01 + 32)


def test_total_loss_times_out_non_invite_on_timer_f() -> None:
    link = Link(latency=0.01, loss=1.0)
    net, client, server = make_pair(link, answer(200))
    tx = client.send(make_request("BYE", "z9hG4bKbye", cseq=2), net.now)
    net.run()
    assert link.sent_times(is_request("BYE")) == [
        0.0,
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    assert client.timeouts() == [32.0] and tx.terminated
    assert server.seen == []


def test_total_loss_times_out_invite_on_timer_b() -> None:
    link = Link(latency=0.01, loss=1.0)
    net, client, _ = make_pair(link, answer(200))
    client.send(make_request("INVITE", "z9hG4bKinv4"), net.now)
    net.run()
    assert link.sent_times(is_request("INVITE")) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert client.timeouts() == [32.0]


def test_delayed_duplicate_final_responses_are_absorbed() -> None:
    link = Link(
        latency=0.01,
        rules=[
            duplicate(is_response(200, method="OPTIONS"), after=3.0),
            duplicate(is_response(486), after=2.0),
        ],
    )
    net, client, server = make_pair(link, answer(200))
    client.send(make_request("OPTIONS", "z9hG4bKopt2"), net.now)
    net.run()
    assert link.delivered_times(is_response(200)) == [0.02, 3.01]
    assert len(client.responses(200)) == 1  # the late copy hit COMPLETED (or later) and was absorbed
    assert client.strays == []

    net, client, server = make_pair(link, answer(486))
    client.send(make_request("INVITE", "z9hG4bKinv5"), net.now)
    net.run()
    assert link.delivered_times(is_response(486)) == [0.02, 2.01]
    assert len(client.responses(486)) == 1
    assert link.sent_times(acks) == [0.02, 2.01]  # the copy is re-ACKed, harmlessly absorbed
    assert server.events == [] and server.stray_acks == []


def test_delayed_duplicate_2xx_is_passed_up_and_reacked() -> None:
    link = Link(latency=0.01, rules=[duplicate(is_response(200), after=1.0)])
    net, client, server = make_pair(link, answer(200))
    client.send(make_request("INVITE", "z9hG4bKinv6"), net.now)
    net.run()
    assert [t for t, _ in client.responses(200)] == [0.02, 1.01]
    assert link.sent_times(acks) == [0.02, 1.01]
    # The first ACK confirmed the server transaction; the second one is absorbed by it (I = T4).
    assert server.seen_methods() == ["INVITE", "ACK", "ACK"]
    assert server.stray_acks == [] and server.events == []


def test_reused_branch_2xx_ack_is_passed_up_by_the_server_transaction() -> None:
    link = Link(latency=0.01)
    net, client, server = make_pair(link, answer(200))
    invite = make_request("INVITE", "z9hG4bKinv7")
    client.send(invite, net.now)
    net.run(until=0.015)
    old_style_ack = ack_for_2xx(invite, invite.response(200, to_tag="b1"), "z9hG4bKinv7")
    net.link.send(Outgoing(SERVER, old_style_ack, old_style_ack.serialize()), net.now, source=CLIENT)
    net.run(until=0.1)
    assert [type(e) for _, e in server.events] == [AckReceived]


@pytest.mark.parametrize("seed", range(40))
def test_random_loss_never_breaks_the_invariants(seed: int) -> None:
    # At 75 % loss about a third of these seeds end in Timer B/F/L timeouts, the rest complete.
    link = Link(latency=0.02, jitter=0.05, loss=0.75, seed=seed)
    net, client, server = make_pair(link, answer(100, 200))
    invite = client.send(make_request("INVITE", "z9hG4bKrinv"), net.now)
    options = client.send(make_request("OPTIONS", "z9hG4bKropt", cseq=2), net.now)
    net.run()
    assert invite.terminated and options.terminated
    assert all(tx.terminated for tx in server.transactions.values())
    # Each side sees each request at most once, and either an answer or a timeout, never both.
    assert server.seen_methods().count("INVITE") <= 1 and server.seen_methods().count("OPTIONS") <= 1
    opt_answers = [r for _, r in client.responses(200) if r.cseq().method == "OPTIONS"]
    opt_timeouts = [
        e for _, e in client.events if isinstance(e, TransactionTimedOut) and e.transaction is options
    ]
    assert len(opt_answers) + len(opt_timeouts) == 1
    invite_2xx = [r for _, r in client.responses(200) if r.cseq().method == "INVITE"]
    # A server timeout on the 2xx means no ACK arrived: then the client either never got a 2xx
    # or every ACK it sent was lost.
    l_timeouts = [e for _, e in server.events if isinstance(e, TransactionTimedOut)]
    if l_timeouts:
        assert len(link.delivered_times(acks)) == 0
    else:
        assert not invite_2xx or link.delivered_times(acks)
    assert net.now < 100
