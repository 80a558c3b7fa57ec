"""The registration client against a scripted registrar (RFC 3261 §10, sip-trunks.md).

The registrar verifies digest answers with :func:`verify_authorization`, grants its own expiry
(Telnyx: ask 3600, get 3457), and can be told to answer 423, 503, nothing at all, or a stale
nonce. Time is virtual, so hour-long refresh intervals run in milliseconds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from sipagent.sip.address import Address
from sipagent.sip.digest import Credentials, verify_authorization
from sipagent.sip.events import RegistrationFailed, RegistrationSucceeded
from sipagent.sip.message import Request, Response
from sipagent.sip.registration import RegistrationConfig, refresh_delay
from sipagent.sip.uri import SipUri
from tests.sip_pair import Link, Network, is_request
from tests.ua_pair import ALICE, REGISTRAR, Node, Peer, reply, via_branch

PASSWORD = "reg-pass"
AOR = "sip:alice@sip.telnyx.com"


@dataclass
class Registrar:
    """Challenges, verifies and grants; ``script`` overrides the answer to the next REGISTERs."""

    grant: int | None = 3457
    grant_in_header: bool = False
    min_expires: int | None = None
    challenge: str = 'Digest realm="sip.telnyx.com", nonce="{nonce}"'
    #: Statuses (or None: stay silent) for the next REGISTERs, before any auth check.
    script: list[tuple[int | None, tuple[tuple[str, str], ...]]] = field(default_factory=list)
    stale_once: bool = False
    nonce: int = 0
    verdicts: list[bool] = field(default_factory=list)
    _silent: set[str] = field(default_factory=set)

    def __call__(self, peer: Peer, message: Request | Response, source: Address, now: float) -> None:
        if not isinstance(message, Request) or message.method != "REGISTER":
            return
        branch = via_branch(message)
        if branch in self._silent:
            return  # a retransmission of a REGISTER we decided to ignore
        if self.script:
            status, headers = self.script.pop(0)
            if status is None:
                self._silent.add(branch)
                return
            peer.send(reply(message, status, to_tag="reg", headers=headers), source)
            return
        value = message.headers.get("Authorization")
        ok = value is not None and verify_authorization(
            value, method="REGISTER", password=PASSWORD, uri=message.uri, nonce=f"nonce{self.nonce}"
        )
        if value is not None:
            self.verdicts.append(ok)
        if ok and self.stale_once:
            self.stale_once = False
            self._challenge(peer, message, source, stale=True)
            return
        if not ok:
            self._challenge(peer, message, source)
            return
        expires = int((message.headers.get("Expires") or "3600").strip())
        if self.min_expires is not None and 0 < expires < self.min_expires:
            peer.send(
                reply(message, 423, to_tag="reg", headers=[("Min-Expires", str(self.min_expires))]), source
            )
            return
        granted = min(expires, self.grant) if self.grant is not None else expires
        contact = message.headers.get("Contact") or ""
        response = reply(message, 200, to_tag="reg")
        if self.grant_in_header:
            response.headers.add("Contact", contact)
            response.headers.add("Expires", str(granted))
        else:
            response.headers.add("Contact", "<sip:someone-else@203.0.113.5>;expires=600")
            response.headers.add("Contact", f"{contact};expires={granted}")
        peer.send(response, source)

    def _challenge(self, peer: Peer, message: Request, source: Address, *, stale: bool = False) -> None:
        self.nonce += 1
        response = reply(message, 401, to_tag="reg")
        text = self.challenge.format(nonce=f"nonce{self.nonce}") + (", stale=true" if stale else "")
        response.headers.add("WWW-Authenticate", text)
        peer.send(response, source)


def start(
    registrar: Registrar, *, expires: int = 3600, password: str = PASSWORD
) -> tuple[Network, Node, Peer]:
    net = Network(Link(latency=0.01))
    alice = Node(ALICE, seed=1)
    peer = Peer(REGISTRAR, registrar)
    net.add(alice, peer)
    config = RegistrationConfig(
        registrar=SipUri.parse("sip:198.51.100.20"),
        aor=SipUri.parse(AOR),
        credentials=Credentials("alice", password),
        expires=expires,
    )
    alice.endpoint.register(config, 0.0)
    return net, alice, peer


def sent_at(net: Network) -> list[float]:
    return net.link.sent_times(is_request("REGISTER"))


@pytest.mark.parametrize("grant", [3457, 20])
def test_challenge_then_the_granted_expiry_drives_the_refreshes(grant: int) -> None:
    registrar = Registrar(grant=grant)
    net, alice, peer = start(registrar)
    horizon = 3 * refresh_delay(grant) + 1.0
    net.run(until=horizon)
    registers = peer.requests("REGISTER")
    # Each round: unauthenticated → 401 → authenticated → 200; three rounds plus the first one.
    assert len(registers) == 8
    assert registrar.verdicts == [True] * 4
    assert len({r.call_id() for r in registers}) == 1  # one Call-ID for the life of the binding
    assert len({r.from_().tag for r in registers}) == 1
    assert [r.cseq().seq for r in registers] == list(range(1, 9))
    assert len({via_branch(r) for r in registers}) == 8
    assert all(r.headers.get("Expires") == "3600" for r in registers)  # we still ask for 3600
    assert all(r.uri == "sip:198.51.100.20" for r in registers)
    auth = registers[1].headers.get("Authorization") or ""
    assert 'uri="sip:198.51.100.20"' in auth and "qop" not in auth
    successes = alice.of(RegistrationSucceeded)
    assert successes == [RegistrationSucceeded(AOR, grant)] * 4
    times = alice.times(RegistrationSucceeded)
    assert times[0] == pytest.approx(0.04)
    for before, after in itertools.pairwise(times):
        # Refreshed at refresh_delay(granted) after each success (+0.04 for the two round trips).
        assert after - before == pytest.approx(refresh_delay(grant) + 0.04)
    assert alice.of(RegistrationFailed) == []
    (registration,) = alice.endpoint.registrations
    assert registration.granted == grant
    assert registration.registered_until == pytest.approx(times[-1] + grant)


def test_granted_expiry_in_the_expires_header_is_honoured() -> None:
    net, alice, _ = start(Registrar(grant=1800, grant_in_header=True))
    net.run(until=10.0)
    assert alice.of(RegistrationSucceeded) == [RegistrationSucceeded(AOR, 1800)]
    assert alice.endpoint.get_timer() == pytest.approx(0.04 + refresh_delay(1800))


def test_423_is_retried_with_min_expires() -> None:
    registrar = Registrar(grant=None, min_expires=7200)
    net, alice, peer = start(registrar)
    net.run(until=10.0)
    registers = peer.requests("REGISTER")
    assert [r.headers.get("Expires") for r in registers] == ["3600", "3600", "7200", "7200"]
    assert [r.cseq().seq for r in registers] == [1, 2, 3, 4]
    assert alice.of(RegistrationSucceeded) == [RegistrationSucceeded(AOR, 7200)]
    assert alice.of(RegistrationFailed) == []


def test_503_with_retry_after_then_success() -> None:
    registrar = Registrar(script=[(503, (("Retry-After", "120"),))])
    net, alice, _ = start(registrar)
    net.run(until=200.0)
    (failed,) = alice.of(RegistrationFailed)
    assert failed.status == 503 and failed.retry_at == pytest.approx(0.02 + 120)
    assert sent_at(net)[:2] == [0.0, pytest.approx(120.02)]
    assert alice.of(RegistrationSucceeded) == [RegistrationSucceeded(AOR, 3457)]


def test_timeouts_back_off_doubling_and_success_resets_the_back_off() -> None:
    silent = (None, ())
    registrar = Registrar(script=[silent, silent, silent])
    net, alice, peer = start(registrar)
    net.run(until=400.0)
    failures = alice.of(RegistrationFailed)
    assert [f.status for f in failures] == [408, 408, 408]
    # Timer F (32 s) after each attempt, then 30, 60, 120 s of back-off.
    assert [f.retry_at for f in failures] == pytest.approx([32 + 30, 62 + 32 + 60, 154 + 32 + 120])
    assert alice.times(RegistrationFailed) == pytest.approx([32, 94, 186])
    assert len(alice.of(RegistrationSucceeded)) == 1
    registers = peer.requests("REGISTER")
    assert len({r.call_id() for r in registers}) == 1
    attempts = list({via_branch(r): r.cseq().seq for r in registers}.values())  # retransmissions out
    assert attempts == list(range(1, len(attempts) + 1))
    # A later failure starts the back-off from the base again.
    registrar.script = [silent]
    net.run(until=306.04 + refresh_delay(3457) + 40)
    assert alice.of(RegistrationFailed)[-1].retry_at == pytest.approx(
        alice.times(RegistrationFailed)[-1] + 30
    )


def test_stale_nonce_is_answered_again_without_counting_as_a_failure() -> None:
    registrar = Registrar(stale_once=True)
    net, alice, peer = start(registrar)
    net.run(until=10.0)
    registers = peer.requests("REGISTER")
    assert len(registers) == 3
    assert registrar.verdicts == [True, True]  # the stale nonce was right, just old
    assert "nonce2" in (registers[2].headers.get("Authorization") or "")
    assert alice.of(RegistrationFailed) == []
    assert alice.of(RegistrationSucceeded) == [RegistrationSucceeded(AOR, 3457)]


def test_wrong_password_fails_once_and_retries_after_the_back_off() -> None:
    registrar = Registrar()
    net, alice, peer = start(registrar, password="wrong")
    net.run(until=20.0)
    assert len(peer.requests("REGISTER")) == 2  # no loop
    (failed,) = alice.of(RegistrationFailed)
    assert failed.status == 401 and failed.retry_at == pytest.approx(0.04 + 30)
    net.run(until=40.0)
    assert len(peer.requests("REGISTER")) == 4  # tried again, once more challenged


def test_unregister_sends_expires_zero_and_stops_refreshing() -> None:
    net, alice, peer = start(Registrar())
    net.run(until=10.0)
    alice.endpoint.unregister_all(net.now)
    net.run(until=10000.0)
    last = peer.requests("REGISTER")[-1]
    assert last.headers.get("Expires") == "0"
    assert [r.headers.get("Expires") for r in peer.requests("REGISTER")][-2:] == ["0", "0"]  # re-authed
    assert len(alice.of(RegistrationSucceeded)) == 1
    assert alice.endpoint.get_timer() is None
