"""Outbound INVITE digest authentication against a scripted carrier edge (RFC 3261 §22,
sip-trunks.md): Twilio's 407 with ``qop="auth"`` and ``opaque`` (also after 100 Trying), a 401
without qop, SHA-256, wrong passwords, and CANCEL after a challenge.

The carrier checks every answer with :func:`sipagent.sip.digest.verify_authorization`, i.e. it
recomputes the response from the password, rather than trusting the client's own code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from sipagent.sip.address import Address
from sipagent.sip.digest import Credentials, verify_authorization
from sipagent.sip.events import CallAnswered, CallEnded, CallFailed, CallProgress
from sipagent.sip.message import Request, Response
from sipagent.sip.uri import SipUri
from tests.sip_pair import Link, Network
from tests.ua_pair import ALICE, CARRIER, Node, Peer, reply, sdp_body, via_branch

PASSWORD = "s3cret-pw"
TARGET = SipUri.parse("sip:+15557654321@198.51.100.7")
CREDS = Credentials("alice", PASSWORD)


def digest_params(value: str) -> dict[str, str]:
    """An independent parse of an Authorization value, for assertions."""
    assert value.startswith("Digest ")
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value[len("Digest ") :])}


@dataclass
class ChallengingEdge:
    """A carrier edge that challenges every INVITE lacking valid credentials."""

    status: int = 407
    challenge: str = (
        'Digest realm="sip.twilio.com", nonce="{nonce}", qop="auth", opaque="op-42", algorithm=MD5'
    )
    trying_first: bool = False
    #: Delay (s) before the 100 Trying to an authenticated INVITE; None: answer at once.
    trying_delay_after_auth: float | None = None
    answer: bool = True
    nonces: int = 0
    verdicts: list[bool] = field(default_factory=list)

    @property
    def header(self) -> str:
        return "WWW-Authenticate" if self.status == 401 else "Proxy-Authenticate"

    @property
    def answer_header(self) -> str:
        return "Authorization" if self.status == 401 else "Proxy-Authorization"

    def __call__(self, peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if not isinstance(message, Request):
            return
        if message.method in ("BYE", "CANCEL"):
            peer.send(reply(message, 200), source)
            if message.method == "CANCEL":
                invite = peer.requests("INVITE")[-1]
                peer.send(reply(invite, 487, to_tag="edge1"), source)
            return
        if message.method != "INVITE":
            return
        value = message.headers.get(self.answer_header)
        ok = False
        if value is not None:
            ok = verify_authorization(
                value, method="INVITE", password=PASSWORD, uri=message.uri, nonce=f"n{self.nonces}"
            ) and ('opaque="op-42"' in value or "opaque" not in self.challenge)
            self.verdicts.append(ok)
        if not ok:
            if self.trying_first:
                peer.send(reply(message, 100), source)
            self.nonces += 1
            challenge = reply(message, self.status, to_tag=f"edge{self.nonces}")
            challenge.headers.add(self.header, self.challenge.format(nonce=f"n{self.nonces}"))
            peer.send(challenge, source)
            return
        trying = reply(message, 100)
        ringing = reply(message, 180, to_tag="edge-ok", contact="<sip:callee@198.51.100.7>")
        if self.trying_delay_after_auth is not None:
            peer.send_at(now + self.trying_delay_after_auth, trying, source)
            peer.send_at(now + self.trying_delay_after_auth, ringing, source)
            return
        peer.send(trying, source)
        if self.answer:
            body = sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000",))
            peer.send(
                reply(message, 200, to_tag="edge-ok", contact="<sip:callee@198.51.100.7>", body=body), source
            )
        else:
            peer.send(ringing, source)


def place_call(edge: ChallengingEdge, creds: Credentials = CREDS) -> tuple[Network, Node, Peer, str]:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    carrier = Peer(CARRIER, edge)
    net.add(alice, carrier)
    call_id = alice.endpoint.invite(TARGET, 0.0, rtp_port=20000, credentials=creds)
    return net, alice, carrier, call_id


@pytest.mark.parametrize("trying_first", [False, True], ids=["407", "100-then-407"])
def test_407_with_qop_and_opaque_is_answered_like_twilio_expects(trying_first: bool) -> None:
    edge = ChallengingEdge(trying_first=trying_first)
    net, alice, carrier, call_id = place_call(edge)
    net.run(until=2.0)
    first, second = carrier.requests("INVITE")
    assert edge.verdicts == [True]
    # Same Call-ID and From tag, CSeq + 1, new branch (§22.1, sip-trunks.md).
    assert second.call_id() == first.call_id() == call_id
    assert second.from_().tag == first.from_().tag
    assert second.cseq().seq == first.cseq().seq + 1
    assert via_branch(second) != via_branch(first)
    assert second.uri == first.uri and second.body == first.body
    params = digest_params(second.headers.get("Proxy-Authorization") or "")
    assert params["uri"] == second.uri  # the Request-URI exactly as sent
    assert params["opaque"] == "op-42" and params["qop"] == "auth" and params["nc"] == "00000001"
    assert params["realm"] == "sip.twilio.com" and params["username"] == "alice" and params["cnonce"]
    assert second.headers.get("Authorization") is None
    # The 407 was ACKed by the INVITE transaction (same branch as the first INVITE).
    acks = carrier.requests("ACK")
    assert via_branch(acks[0]) == via_branch(first) and acks[0].cseq().seq == first.cseq().seq
    # The 2xx ACK has the retry's CSeq number.
    assert acks[1].cseq().seq == second.cseq().seq
    assert len(alice.of(CallAnswered)) == 1 and alice.of(CallFailed) == []


def test_wrong_password_fails_with_407_after_one_retry() -> None:
    edge = ChallengingEdge()
    net, alice, carrier, call_id = place_call(edge, Credentials("alice", "not-it"))
    net.run(until=40.0)
    assert len(carrier.requests("INVITE")) == 2  # no loop
    assert edge.verdicts == [False]
    assert alice.of(CallFailed) == [CallFailed(call_id, 407, "Proxy Authentication Required")]
    assert len(carrier.requests("ACK")) == 2  # both 407s ACKed
    net.run()
    assert alice.endpoint.calls == {}


def test_401_without_qop_is_answered_in_rfc2069_form() -> None:
    edge = ChallengingEdge(status=401, challenge='Digest realm="sip.telnyx.com", nonce="{nonce}"')
    net, alice, carrier, _ = place_call(edge)
    net.run(until=2.0)
    assert edge.verdicts == [True]
    second = carrier.requests("INVITE")[1]
    params = digest_params(second.headers.get("Authorization") or "")
    assert "qop" not in params and "nc" not in params and "cnonce" not in params and "opaque" not in params
    assert len(alice.of(CallAnswered)) == 1


def test_sha256_challenge_is_answered_with_sha256() -> None:
    edge = ChallengingEdge(
        challenge='Digest realm="edge", nonce="{nonce}", qop="auth", opaque="op-42", algorithm=SHA-256'
    )
    net, alice, carrier, _ = place_call(edge)
    net.run(until=2.0)
    assert edge.verdicts == [True]
    params = digest_params(carrier.requests("INVITE")[1].headers.get("Proxy-Authorization") or "")
    assert params["algorithm"] == "SHA-256" and len(params["response"]) == 64
    assert len(alice.of(CallAnswered)) == 1


def test_no_credentials_means_the_challenge_fails_the_call() -> None:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    carrier = Peer(CARRIER, ChallengingEdge())
    net.add(alice, carrier)
    call_id = alice.endpoint.invite(TARGET, 0.0, rtp_port=20000)
    net.run(until=2.0)
    assert alice.of(CallFailed) == [CallFailed(call_id, 407, "Proxy Authentication Required")]


def test_hangup_after_a_challenge_cancels_the_retry_only_after_its_own_1xx() -> None:
    """The 100 to the first INVITE does not make the retried INVITE cancellable (§9.1)."""
    edge = ChallengingEdge(trying_first=True, trying_delay_after_auth=1.0, answer=False)
    net, alice, carrier, call_id = place_call(edge)
    net.run(until=0.03)  # 100 + 407 arrived at 0.02, the retry left at once
    assert [dg.first_line.split()[0] for dg in net.link.sent if dg.source == ALICE] == [
        "INVITE",
        "ACK",
        "INVITE",
    ]
    alice.endpoint.hangup(call_id, net.now)
    net.run(until=0.9)
    assert carrier.requests("CANCEL") == []
    net.run(until=3.0)
    (cancel,) = carrier.requests("CANCEL")
    retry = carrier.requests("INVITE")[1]
    assert via_branch(cancel) == via_branch(retry) and cancel.cseq().seq == retry.cseq().seq == 2
    assert alice.of(CallProgress) == [CallProgress(call_id, 180, "Ringing")]
    assert alice.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=False)]


def test_challenge_after_a_422_retry_is_answered_afresh() -> None:
    """407 → authenticated INVITE → 422 (Min-SE) → the retry reuses the old answer, which the
    edge refuses as a replay with a fresh (non-stale) challenge: that is a new challenge to
    answer, not proof of a wrong password."""
    seen: set[str] = set()

    def edge(peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if not isinstance(message, Request) or message.method != "INVITE":
            return
        value = message.headers.get("Proxy-Authorization")
        nonce = f"n{len(seen) + 1}"
        if (
            value is None
            or value in seen
            or not verify_authorization(value, method="INVITE", password=PASSWORD, uri=message.uri)
        ):
            challenge = reply(message, 407, to_tag="e")
            challenge.headers.add("Proxy-Authenticate", f'Digest realm="edge", nonce="{nonce}", qop="auth"')
            peer.send(challenge, source)
            if value is not None:
                seen.add(value)
            return
        seen.add(value)
        if (message.headers.get("Session-Expires") or "") != "3600":
            too_small = reply(message, 422, to_tag="e", headers=[("Min-SE", "3600")])
            peer.send(too_small, source)
            return
        body = sdp_body(CARRIER.host, 40000, rtpmaps=("0 PCMU/8000",))
        peer.send(reply(message, 200, to_tag="ok", contact="<sip:c@198.51.100.7>", body=body), source)

    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    carrier = Peer(CARRIER, edge)
    net.add(alice, carrier)
    alice.endpoint.invite(TARGET, 0.0, rtp_port=20000, credentials=CREDS)
    net.run(until=2.0)
    assert [i.cseq().seq for i in carrier.requests("INVITE")] == [1, 2, 3, 4]
    assert alice.of(CallFailed) == [] and len(alice.of(CallAnswered)) == 1


def test_a_challenge_after_the_app_hung_up_is_not_answered() -> None:
    net, alice, carrier, call_id = place_call(ChallengingEdge())
    alice.endpoint.hangup(call_id, 0.0)  # before anything came back: nothing to CANCEL yet
    net.run(until=2.0)
    assert len(carrier.requests("INVITE")) == 1 and carrier.requests("CANCEL") == []
    assert len(carrier.requests("ACK")) == 1  # the 407 is ACKed by the transaction
    assert alice.of(CallEnded) == [CallEnded(call_id, "cancelled", by_remote=False)]
    assert alice.of(CallFailed) == []
