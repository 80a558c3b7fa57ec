"""Unit tests for the four RFC 3261 §17 transaction machines, stepping time by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.sip.address import Address, Outgoing
from sipagent.sip.errors import LocalProtocolError, TransactionStateError
from sipagent.sip.message import Headers, Request, Response, parse_message
from sipagent.sip.transaction import (
    DEFAULT_TIMERS,
    T1,
    T2,
    T4,
    AckReceived,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionState,
    TransactionTimedOut,
    build_ack,
    build_cancel,
    cancel_target_key,
    client_key,
    new_branch,
    server_key,
)

S = TransactionState
UAC = Address("udp", "192.0.2.1", 5060)
UAS = Address("udp", "192.0.2.2", 5060)
UAS_TCP = Address("tcp", "192.0.2.2", 5060)
UAC_TCP = Address("tcp", "192.0.2.1", 40000)
ROUTES = ("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>")


def make_request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKinv1",
    cseq: int = 1,
    transport: str = "UDP",
    routes: tuple[str, ...] = (),
    extra_vias: tuple[str, ...] = (),
    to_tag: str | None = None,
    body: bytes = b"",
) -> Request:
    via = f"SIP/2.0/{transport} 192.0.2.1:5060" + (f";branch={branch}" if branch else "") + ";rport"
    headers = Headers()
    headers.add("Via", via)
    for extra in extra_vias:
        headers.add("Via", extra)
    headers.add("Max-Forwards", "70")
    for route in routes:
        headers.add("Route", route)
    headers.add("From", '"Alice" <sip:alice@example.com>;tag=a1')
    headers.add("To", "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    headers.add("Call-ID", "call-1@192.0.2.1")
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", "<sip:alice@192.0.2.1:5060>")
    if body:
        headers.add("Content-Type", "application/sdp")
    return Request(method=method, uri="sip:bob@192.0.2.2:5060", headers=headers, body=body)


def reply(request: Request, status: int, tag: str = "b1") -> Response:
    return request.response(status, to_tag=tag if status > 100 else None)


def sent(tx: ClientTransaction | ServerTransaction) -> list[Request | Response]:
    return [out.message for out in tx.datagrams_to_send()]


def state(tx: ClientTransaction | ServerTransaction) -> TransactionState:
    """The state, read through a call so mypy does not narrow it across steps."""
    return tx.state


def statuses(tx: ClientTransaction | ServerTransaction) -> list[int]:
    return [m.status for m in sent(tx) if isinstance(m, Response)]


def run_timers(tx: ClientTransaction | ServerTransaction, until: float) -> list[tuple[float, object]]:
    """Step ``tx`` deadline by deadline up to ``until``; log (time, sent message or event)."""
    log: list[tuple[float, object]] = []
    while (deadline := tx.get_timer()) is not None and deadline <= until:
        events = tx.handle_timer(deadline)
        log.extend((deadline, message) for message in sent(tx))
        log.extend((deadline, event) for event in events)
    return log


def times_of(log: list[tuple[float, object]], kind: type) -> list[float]:
    return [t for t, item in log if isinstance(item, kind)]


# =============================================================================================
# INVITE client transaction
# =============================================================================================
def started_ict(destination: Address = UAS, timers: TimerConfig = DEFAULT_TIMERS) -> InviteClientTransaction:
    tx = InviteClientTransaction(make_request(routes=ROUTES), destination, timers=timers)
    tx.start(0.0)
    return tx


def test_ict_start_sends_invite_and_arms_timer_a() -> None:
    tx = started_ict()
    out = tx.datagrams_to_send()
    assert [o.destination for o in out] == [UAS]
    invite = parse_message(out[0].data)
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert state(tx) is S.CALLING
    assert tx.get_timer() == T1
    assert tx.key == ("z9hG4bKinv1", "INVITE")
    assert tx.datagrams_to_send() == []  # popped


def test_ict_timer_a_doubles_without_cap_and_timer_b_times_out_at_64_t1() -> None:
    tx = started_ict()
    tx.datagrams_to_send()
    log = run_timers(tx, until=100.0)
    assert times_of(log, Request) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert times_of(log, TransactionTimedOut) == [32.0]
    timeout = next(item for _, item in log if isinstance(item, TransactionTimedOut))
    assert timeout == TransactionTimedOut(tx)
    assert timeout.timer == "B"
    assert tx.terminated and tx.get_timer() is None
    assert tx.handle_timer(1000.0) == []


def test_ict_handle_timer_early_or_late_is_deadline_driven() -> None:
    tx = started_ict()
    tx.datagrams_to_send()
    assert tx.handle_timer(0.49) == [] and tx.datagrams_to_send() == []
    # A late wake-up at 1.6 catches up on A@0.5 and A@1.5; the schedule stays absolute.
    tx.handle_timer(1.6)
    assert len(tx.datagrams_to_send()) == 2
    assert tx.get_timer() == 3.5


def test_ict_provisional_stops_a_and_b() -> None:
    tx = started_ict()
    tx.datagrams_to_send()
    invite = tx.request
    ringing = reply(invite, 180)
    assert tx.receive_response(ringing, 0.2) == [ResponseReceived(tx, ringing)]
    assert state(tx) is S.PROCEEDING
    assert tx.get_timer() is None  # the TU bounds the wait from here (CANCEL)
    assert tx.handle_timer(40.0) == [] and tx.datagrams_to_send() == []
    again = reply(invite, 183)
    assert tx.receive_response(again, 0.3) == [ResponseReceived(tx, again)]


def test_ict_non_2xx_final_builds_and_sends_ack() -> None:
    tx = started_ict()
    tx.datagrams_to_send()
    busy = reply(tx.request, 486, tag="busy-tag")
    assert tx.receive_response(busy, 1.0) == [ResponseReceived(tx, busy)]
    assert state(tx) is S.COMPLETED
    (out,) = tx.datagrams_to_send()
    assert out.destination == UAS
    ack = parse_message(out.data)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == tx.request.uri
    assert ack.headers.get_all("Via") == [tx.request.headers.get_all("Via")[0]]
    assert ack.top_via().branch == "z9hG4bKinv1"
    assert ack.headers.get_all("Route") == list(ROUTES)
    assert ack.to().tag == "busy-tag"
    assert ack.from_().tag == "a1"
    assert ack.call_id() == tx.request.call_id()
    assert str(ack.cseq()) == "1 ACK"
    assert ack.body == b""
    # The server transaction matches it to the INVITE.
    assert server_key(ack) == server_key(tx.request)
    assert tx.get_timer() == 1.0 + 32.0  # Timer D


def test_ict_retransmitted_final_is_reacked_and_absorbed_then_timer_d() -> None:
    tx = started_ict()
    tx.datagrams_to_send()
    busy = reply(tx.request, 486)
    tx.receive_response(busy, 1.0)
    first_ack = tx.datagrams_to_send()
    assert tx.receive_response(busy, 1.5) == []
    assert tx.datagrams_to_send() == first_ack
    assert tx.receive_response(reply(tx.request, 180), 1.6) == []  # late provisional
    assert tx.handle_timer(32.9) == [] and not tx.terminated
    assert tx.handle_timer(33.0) == []
    assert tx.terminated


def test_ict_2xx_goes_accepted_and_every_2xx_is_passed_up() -> None:
    tx = started_ict()
    tx.datagrams_to_send()
    ok = reply(tx.request, 200, tag="fork1")
    assert tx.receive_response(ok, 2.0) == [ResponseReceived(tx, ok)]
    assert state(tx) is S.ACCEPTED
    assert tx.datagrams_to_send() == []  # the TU ACKs a 2xx, not the transaction
    assert tx.get_timer() == 2.0 + 64 * T1  # Timer M
    fork = reply(tx.request, 200, tag="fork2")
    assert tx.receive_response(ok, 2.5) == [ResponseReceived(tx, ok)]
    assert tx.receive_response(fork, 2.6) == [ResponseReceived(tx, fork)]
    assert tx.receive_response(reply(tx.request, 180), 2.7) == []
    assert tx.receive_response(reply(tx.request, 486), 2.8) == []
    assert tx.datagrams_to_send() == []
    assert tx.handle_timer(34.0) == []
    assert tx.terminated
    # Even after Timer M a 2xx still goes up: only the TU can ACK it.
    assert tx.receive_response(ok, 40.0) == [ResponseReceived(tx, ok)]
    assert tx.receive_response(reply(tx.request, 486), 40.0) == []


def test_ict_2xx_after_non_2xx_goes_up_for_ack_and_bye() -> None:
    tx = started_ict()
    tx.receive_response(reply(tx.request, 486), 1.0)
    ok = reply(tx.request, 200, tag="late-fork")
    assert tx.receive_response(ok, 1.1) == [ResponseReceived(tx, ok)]
    assert state(tx) is S.COMPLETED


def test_ict_reliable_arms_b_only_and_ends_at_once_after_non_2xx() -> None:
    tx = started_ict(UAS_TCP)
    tx.datagrams_to_send()
    assert tx.get_timer() == 64 * T1  # B, no A
    log = run_timers(tx, until=100.0)
    assert times_of(log, Request) == []
    assert times_of(log, TransactionTimedOut) == [32.0]

    tx = started_ict(UAS_TCP)
    tx.datagrams_to_send()
    events = tx.receive_response(reply(tx.request, 603), 1.0)
    assert [type(e) for e in events] == [ResponseReceived]
    assert [m.method for m in sent(tx) if isinstance(m, Request)] == ["ACK"]
    assert tx.terminated  # Timer D = 0


def test_ict_reliable_2xx_still_arms_timer_m() -> None:
    tx = started_ict(UAS_TCP)
    tx.receive_response(reply(tx.request, 200), 1.0)
    assert state(tx) is S.ACCEPTED and tx.get_timer() == 33.0


def test_ict_timer_config_scales_a_and_b() -> None:
    tx = started_ict(timers=TimerConfig(t1=0.1, t2=1.0, t4=1.0))
    tx.datagrams_to_send()
    log = run_timers(tx, until=10.0)
    assert times_of(log, Request) == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert times_of(log, TransactionTimedOut) == pytest.approx([6.4])


def test_ict_cancel_only_after_provisional() -> None:
    tx = started_ict()
    assert not tx.cancellable
    with pytest.raises(TransactionStateError) as err:
        tx.cancel_request()
    assert (err.value.role, err.value.state, err.value.event) == (
        "INVITE client transaction",
        "CALLING",
        "cancel_request",
    )
    tx.receive_response(reply(tx.request, 180), 0.3)
    assert tx.cancellable
    cancel = tx.cancel_request()
    assert cancel.method == "CANCEL" and str(cancel.cseq()) == "1 CANCEL"
    assert state(tx) is S.PROCEEDING
    tx.receive_response(reply(tx.request, 487), 0.5)
    with pytest.raises(TransactionStateError, match="COMPLETED cannot handle cancel_request"):
        tx.cancel_request()


def test_ict_misuse_raises() -> None:
    tx = InviteClientTransaction(make_request(), UAS)
    with pytest.raises(TransactionStateError) as err:
        tx.receive_response(reply(tx.request, 180), 0.0)
    assert err.value.event == "1xx before start"
    tx.start(0.0)
    with pytest.raises(TransactionStateError) as err:
        tx.start(1.0)
    assert (err.value.role, err.value.state, err.value.event) == (
        "INVITE client transaction",
        "CALLING",
        "start",
    )
    other = reply(make_request(branch="z9hG4bKother"), 200)
    with pytest.raises(LocalProtocolError):
        tx.receive_response(other, 1.0)
    with pytest.raises(LocalProtocolError):
        InviteClientTransaction(make_request("OPTIONS"), UAS)
    with pytest.raises(LocalProtocolError):
        InviteClientTransaction(make_request(branch="1234"), UAS)  # no magic cookie


# =============================================================================================
# Non-INVITE client transaction
# =============================================================================================
def started_nict(destination: Address = UAS) -> NonInviteClientTransaction:
    tx = NonInviteClientTransaction(make_request("OPTIONS", branch="z9hG4bKopt"), destination)
    tx.start(0.0)
    tx.datagrams_to_send()
    return tx


def test_nict_timer_e_doubles_to_t2_then_timer_f() -> None:
    tx = started_nict()
    assert state(tx) is S.TRYING
    log = run_timers(tx, until=100.0)
    assert times_of(log, Request) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert times_of(log, TransactionTimedOut) == [32.0]
    assert tx.terminated


def test_nict_provisional_moves_timer_e_to_t2() -> None:
    tx = started_nict()
    run_timers(tx, until=0.5)  # E@0.5, next at 1.5
    trying = reply(tx.request, 100)
    assert tx.receive_response(trying, 0.7) == [ResponseReceived(tx, trying)]
    assert state(tx) is S.PROCEEDING
    log = run_timers(tx, until=100.0)
    assert times_of(log, Request) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert times_of(log, TransactionTimedOut) == [32.0]


def test_nict_final_completes_absorbs_copies_and_timer_k() -> None:
    tx = started_nict()
    ok = reply(tx.request, 200)
    assert tx.receive_response(ok, 0.2) == [ResponseReceived(tx, ok)]
    assert state(tx) is S.COMPLETED
    assert tx.get_timer() == 0.2 + T4  # K
    assert tx.receive_response(ok, 0.3) == []
    assert tx.receive_response(reply(tx.request, 180), 0.4) == []
    assert tx.datagrams_to_send() == []
    assert tx.handle_timer(5.2) == []
    assert tx.terminated
    assert tx.receive_response(ok, 6.0) == []  # late copy after termination: absorbed


def test_nict_reliable_no_timer_e_and_k_is_zero() -> None:
    tx = started_nict(UAS_TCP)
    assert tx.get_timer() == 64 * T1
    tx.receive_response(reply(tx.request, 404), 0.1)
    assert tx.terminated and tx.get_timer() is None


def test_nict_rejects_invite_and_ack() -> None:
    for method in ("INVITE", "ACK"):
        with pytest.raises(LocalProtocolError):
            NonInviteClientTransaction(make_request(method), UAS)


# =============================================================================================
# INVITE server transaction
# =============================================================================================
def new_ist(source: Address = UAC) -> InviteServerTransaction:
    return InviteServerTransaction(make_request(), source)


def test_ist_provisional_and_request_copies() -> None:
    tx = new_ist()
    assert state(tx) is S.PROCEEDING and tx.get_timer() is None
    assert tx.receive_request(make_request(), 0.1) == []
    assert tx.datagrams_to_send() == []  # nothing to resend yet
    tx.send_response(reply(tx.request, 100), 0.1)
    tx.send_response(reply(tx.request, 180), 0.2)
    assert statuses(tx) == [100, 180]
    assert tx.receive_request(make_request(), 0.3) == []
    assert statuses(tx) == [180]
    assert tx.last_response is not None and tx.last_response.status == 180


def test_ist_responses_go_to_received_and_rport() -> None:
    request = make_request()
    request.headers.replace_top(
        "Via", str(request.top_via().with_params(received="198.51.100.7", rport="61000"))
    )
    tx = InviteServerTransaction(request, Address("udp", "198.51.100.7", 61000))
    tx.send_response(reply(request, 100), 0.0)
    assert tx.datagrams_to_send()[0].destination == Address("udp", "198.51.100.7", 61000)
    tcp = InviteServerTransaction(make_request(transport="TCP"), UAC_TCP)
    tcp.send_response(reply(tcp.request, 100), 0.0)
    assert tcp.datagrams_to_send()[0].destination == UAC_TCP


def test_ist_timer_g_retransmits_non_2xx_capped_at_t2_and_timer_h() -> None:
    tx = new_ist()
    tx.send_response(reply(tx.request, 486), 0.0)
    assert state(tx) is S.COMPLETED
    assert statuses(tx) == [486]
    log = run_timers(tx, until=100.0)
    assert times_of(log, Response) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert times_of(log, TransactionTimedOut) == [32.0]
    timeout = next(item for _, item in log if isinstance(item, TransactionTimedOut))
    assert timeout.timer == "H" and timeout == TransactionTimedOut(tx)
    assert tx.terminated


def test_ist_ack_confirms_then_timer_i() -> None:
    tx = new_ist()
    busy = reply(tx.request, 486)
    tx.send_response(busy, 0.0)
    sent(tx)
    run_timers(tx, until=0.5)
    ack = build_ack(tx.request, busy)
    assert tx.receive_request(ack, 0.6) == []
    assert state(tx) is S.CONFIRMED
    assert tx.get_timer() == pytest.approx(0.6 + T4)  # I; G and H are gone
    assert tx.receive_request(ack, 0.7) == []  # ACK copies absorbed
    assert tx.receive_request(make_request(), 0.8) == []  # late INVITE copy absorbed
    assert tx.datagrams_to_send() == []
    assert tx.handle_timer(5.6) == []
    assert tx.terminated
    assert tx.receive_request(ack, 6.0) == []  # even after termination


def test_ist_invite_copy_in_completed_resends_final() -> None:
    tx = new_ist()
    tx.send_response(reply(tx.request, 486), 0.0)
    sent(tx)
    assert tx.receive_request(make_request(), 0.2) == []
    assert statuses(tx) == [486]


def test_ist_reliable_no_timer_g_but_h_and_i_zero() -> None:
    tx = new_ist(UAC_TCP)
    busy = reply(tx.request, 486)
    tx.send_response(busy, 0.0)
    sent(tx)
    assert tx.get_timer() == 64 * T1  # H only
    tx.receive_request(build_ack(tx.request, busy), 0.1)
    assert tx.terminated


def test_ist_2xx_retransmitted_on_timer_g_until_ack_received() -> None:
    tx = new_ist()
    ok = reply(tx.request, 200)
    tx.send_response(ok, 0.0)
    assert state(tx) is S.ACCEPTED
    sent(tx)
    log = run_timers(tx, until=4.0)
    assert times_of(log, Response) == [0.5, 1.5, 3.5]
    assert tx.receive_request(make_request(), 4.0) == []  # INVITE copy: resend 2xx, not to TU
    assert statuses(tx) == [200]
    ack = make_request("ACK", branch="z9hG4bKack2xx", to_tag="b1")
    tx.ack_received(ack, 4.2)
    assert tx.datagrams_to_send() == []
    assert state(tx) is S.CONFIRMED
    assert tx.get_timer() == pytest.approx(4.2 + T4)
    tx.ack_received(ack, 4.3)  # an ACK for a retransmitted 2xx: absorbed
    assert run_timers(tx, until=100.0) == []
    assert tx.terminated
    with pytest.raises(TransactionStateError, match="TERMINATED cannot handle ack_received"):
        tx.ack_received(ack, 20.0)


def test_ist_2xx_without_ack_times_out_on_timer_l() -> None:
    tx = new_ist()
    tx.send_response(reply(tx.request, 200), 1.0)
    sent(tx)
    log = run_timers(tx, until=100.0)
    assert times_of(log, Response) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert times_of(log, TransactionTimedOut) == [33.0]
    assert next(item for _, item in log if isinstance(item, TransactionTimedOut)).timer == "L"


def test_ist_reliable_2xx_no_retransmit_but_timer_l_and_quick_end() -> None:
    tx = new_ist(UAC_TCP)
    tx.send_response(reply(tx.request, 200), 0.0)
    sent(tx)
    assert tx.get_timer() == 64 * T1
    tx.ack_received(make_request("ACK", branch="z9hG4bKack", to_tag="b1"), 0.1)
    assert tx.terminated


def test_ist_same_branch_ack_for_2xx_is_passed_up() -> None:
    tx = new_ist()
    tx.send_response(reply(tx.request, 200), 0.0)
    ack = make_request("ACK", to_tag="b1")  # an old stack reusing the INVITE branch
    assert tx.receive_request(ack, 0.1) == [AckReceived(tx, ack)]
    assert state(tx) is S.CONFIRMED


def test_ist_tu_misuse_raises_with_role_state_event() -> None:
    tx = new_ist()
    with pytest.raises(TransactionStateError) as err:
        tx.ack_received(make_request("ACK", branch="z9hG4bKx", to_tag="b1"), 0.0)
    assert (err.value.role, err.value.state, err.value.event) == (
        "INVITE server transaction",
        "PROCEEDING",
        "ack_received",
    )
    tx.send_response(reply(tx.request, 486), 0.0)
    with pytest.raises(TransactionStateError) as err:
        tx.send_response(reply(tx.request, 200), 0.1)
    assert (err.value.state, err.value.event) == ("COMPLETED", "send 2xx")
    with pytest.raises(TransactionStateError, match="cannot handle send 1xx"):
        tx.send_response(reply(tx.request, 180), 0.1)
    with pytest.raises(LocalProtocolError):
        tx.send_response(reply(make_request("OPTIONS"), 200), 0.1)
    with pytest.raises(LocalProtocolError):
        tx.receive_request(make_request(branch="z9hG4bKother"), 0.1)
    with pytest.raises(LocalProtocolError):
        InviteServerTransaction(make_request("BYE"), UAC)


def test_ist_accepted_allows_tu_2xx_retransmission() -> None:
    tx = new_ist()
    ok = reply(tx.request, 200)
    tx.send_response(ok, 0.0)
    tx.send_response(ok, 0.3)
    assert statuses(tx) == [200, 200]
    assert tx.get_timer() == 0.5  # the transaction's own schedule is unchanged


# =============================================================================================
# Non-INVITE server transaction
# =============================================================================================
def new_nist(source: Address = UAC) -> NonInviteServerTransaction:
    return NonInviteServerTransaction(make_request("BYE", branch="z9hG4bKbye", cseq=2), source)


def test_nist_copies_before_any_response_are_absorbed() -> None:
    tx = new_nist()
    assert state(tx) is S.TRYING and tx.get_timer() is None
    assert tx.receive_request(tx.request, 0.1) == []
    assert tx.datagrams_to_send() == []


def test_nist_provisional_final_timer_j() -> None:
    tx = new_nist()
    tx.send_response(reply(tx.request, 100), 0.1)
    assert state(tx) is S.PROCEEDING
    sent(tx)
    tx.receive_request(tx.request, 0.2)
    assert statuses(tx) == [100]
    tx.send_response(reply(tx.request, 200), 0.3)
    assert state(tx) is S.COMPLETED
    sent(tx)
    assert tx.get_timer() == pytest.approx(0.3 + 64 * T1)  # J
    tx.receive_request(tx.request, 1.0)
    assert statuses(tx) == [200]
    with pytest.raises(TransactionStateError) as err:
        tx.send_response(reply(tx.request, 500), 1.0)
    assert (err.value.role, err.value.state, err.value.event) == (
        "non-INVITE server transaction",
        "COMPLETED",
        "send 200-699",
    )
    assert run_timers(tx, until=100.0) == []
    assert tx.terminated
    assert tx.receive_request(tx.request, 40.0) == []
    assert tx.datagrams_to_send() == []


def test_nist_reliable_j_is_zero() -> None:
    tx = new_nist(UAC_TCP)
    tx.send_response(reply(tx.request, 200), 0.0)
    assert tx.terminated
    assert len(tx.datagrams_to_send()) == 1


def test_nist_rejects_invite_and_ack() -> None:
    for method in ("INVITE", "ACK"):
        with pytest.raises(LocalProtocolError):
            NonInviteServerTransaction(make_request(method), UAC)


# =============================================================================================
# Keys, builders, events, config
# =============================================================================================
def test_build_cancel_follows_section_9_1() -> None:
    invite = make_request(
        routes=ROUTES,
        extra_vias=("SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdownstream",),
        body=b"v=0\r\n",
    )
    invite.headers.add("Require", "timer")
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == [invite.headers.get_all("Via")[0]]
    assert cancel.headers.get_all("Route") == list(ROUTES)
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.call_id() == invite.call_id()
    assert str(cancel.cseq()) == "1 CANCEL"
    assert cancel.headers.get("Max-Forwards") == "70"
    assert cancel.body == b"" and cancel.headers.get("Require") is None
    # It round-trips and points at the INVITE's server transaction.
    parsed = parse_message(cancel.serialize())
    assert isinstance(parsed, Request)
    assert cancel_target_key(parsed) == server_key(invite)
    assert server_key(parsed) != server_key(invite)  # the CANCEL has its own transaction
    with pytest.raises(LocalProtocolError):
        build_cancel(make_request("BYE"))
    with pytest.raises(LocalProtocolError):
        cancel_target_key(invite)


def test_build_ack_rejects_non_invite() -> None:
    bye = make_request("BYE")
    with pytest.raises(LocalProtocolError):
        build_ack(bye, reply(bye, 486))


def test_client_key_matches_transaction_key_and_separates_cancel() -> None:
    tx = InviteClientTransaction(make_request(), UAS)
    assert client_key(reply(tx.request, 180)) == tx.key
    cancel = build_cancel(tx.request)
    assert client_key(reply(cancel, 200)) == ("z9hG4bKinv1", "CANCEL") != tx.key


def test_server_key_maps_ack_to_invite_and_defaults_port() -> None:
    invite = make_request()
    assert server_key(invite) == ("z9hG4bKinv1", "192.0.2.1:5060", "INVITE")
    assert server_key(make_request("ACK", to_tag="x")) == server_key(invite)
    no_port = make_request()
    no_port.headers.replace_top("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKinv1")
    assert server_key(no_port) == server_key(invite)
    tls = make_request()
    tls.headers.replace_top("Via", "SIP/2.0/TLS host.example;branch=z9hG4bKinv1")
    assert server_key(tls)[1] == "host.example:5061"
    other_host = make_request()
    other_host.headers.replace_top("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKinv1")
    assert server_key(other_host) != server_key(invite)


def test_server_key_rfc2543_fallback() -> None:
    invite = make_request(branch=None)
    key = server_key(invite)
    assert key[0].startswith("rfc2543|")
    assert server_key(make_request("ACK", branch=None, to_tag="b1")) == key
    assert cancel_target_key(build_cancel(invite)) == key
    assert server_key(make_request(branch=None, cseq=2)) != key
    old = make_request(branch="1234")  # a branch without the magic cookie is not trusted either
    assert server_key(old) == key


def test_new_branch() -> None:
    assert new_branch("a1b2c3") == "z9hG4bKa1b2c3"
    for bad in ("", "a b", "x;y"):
        with pytest.raises(LocalProtocolError):
            new_branch(bad)


def test_events_and_config() -> None:
    tx = InviteServerTransaction(make_request(), UAC)
    with pytest.raises(ValueError):
        AckReceived(tx, make_request())
    assert TransactionTimedOut(tx, "H") == TransactionTimedOut(tx)
    assert TimerConfig() == TimerConfig(T1, T2, T4)
    assert TimerConfig().timeout == 32.0
    for bad in ({"t1": 0.0}, {"t1": 1.0, "t2": 0.5}, {"t4": -1.0}):
        with pytest.raises(ValueError):
            TimerConfig(**bad)


def test_repr_names_the_machine() -> None:
    tx = InviteClientTransaction(make_request(), UAS)
    assert repr(tx) == "<InviteClientTransaction INVITE z9hG4bKinv1 CALLING>"
    assert "NonInviteServerTransaction" in repr(new_nist())


# =============================================================================================
# Network input never raises: whatever arrives, in whatever order, at whatever time
# =============================================================================================
STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 487, 500, 603])
STEPS = st.lists(st.tuples(st.booleans(), STATUSES, st.floats(0.0, 10.0)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, invite=st.booleans(), reliable=st.booleans())
def test_client_machines_absorb_any_response_sequence(
    steps: list[tuple[bool, int, float]], invite: bool, reliable: bool
) -> None:
    destination = UAS_TCP if reliable else UAS
    tx: ClientTransaction
    if invite:
        tx = InviteClientTransaction(make_request(), destination)
    else:
        tx = NonInviteClientTransaction(make_request("OPTIONS"), destination)
    tx.start(0.0)
    now = 0.0
    finals_up = 0
    for is_timer, status, dt in steps:
        now += dt
        if is_timer:
            tx.handle_timer(now)
            continue
        response = reply(tx.request, status)
        events = tx.receive_response(response, now)
        passed = [e for e in events if isinstance(e, ResponseReceived)]
        if invite and 200 <= status < 300:
            assert len(passed) == 1  # every 2xx reaches the TU
        if status >= 300 or (not invite and status >= 200):
            finals_up += len(passed)
        assert all(isinstance(o, Outgoing) for o in tx.datagrams_to_send())
    assert finals_up <= 1
    if tx.terminated:
        assert tx.get_timer() is None


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.sampled_from(["INVITE", "ACK", "timer"]), st.floats(0.0, 10.0)), max_size=25),
    final=st.sampled_from([200, 486]),
    reliable=st.booleans(),
)
def test_ist_absorbs_any_request_copies(steps: list[tuple[str, float]], final: int, reliable: bool) -> None:
    tx = new_ist(UAC_TCP if reliable else UAC)
    tx.send_response(reply(tx.request, 100), 0.0)
    tx.send_response(reply(tx.request, final), 0.0)
    now = 0.0
    for what, dt in steps:
        now += dt
        if what == "timer":
            tx.handle_timer(now)
        else:
            request = make_request(what, to_tag="b1" if what == "ACK" else None)
            events = tx.receive_request(request, now)
            assert all(isinstance(e, AckReceived) for e in events)
        assert tx.state in (S.COMPLETED, S.ACCEPTED, S.CONFIRMED, S.TERMINATED)
