"""Blind transfer against real peers: sipp calls sipagent, sipagent sends REFER (issue 15, item 2).

The application layer that decides to transfer is not part of this test: the sans-IO
:class:`SipEndpoint` runs in the test's own event loop behind the real asyncio adapter
(:class:`SipNetwork`) on a random loopback port, and a small app in the test answers the call,
sends REFER once the ACK is in, and hangs up after :class:`TransferSucceeded` — the part decision
0022 leaves to the application. sipp plays the transferee (``uac_call_refer``: 202, NOTIFY 100
Trying, NOTIFY 200 OK with the subscription terminated, then expects our BYE) or refuses the REFER
(``uac_call_refer_403``/``_405``: the call goes on and sipp hangs up).

Each runs straight and with Kamailio as a Record-Route proxy in between (the carrier edge's
stand-in, ``role="proxy"`` relaying to our port): then the REFER, the NOTIFYs and both sides' BYEs
must all be loose-routed through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peers import skips
from peers.kamailio import Kamailio
from peers.ports import HOST
from peers.sipp import SippResult, run_sipp, scenario_path
from sipagent.net.sip_transport import SipNetwork
from sipagent.sip.context import EndpointConfig
from sipagent.sip.endpoint import SipEndpoint
from sipagent.sip.events import (
    CallConfirmed,
    CallEnded,
    Event,
    IncomingCall,
    TransferFailed,
    TransferProgress,
    TransferSucceeded,
)
from sipagent.sip.uri import SipUri

pytestmark = pytest.mark.peer

TARGET = "sip:+15557654321@transfer.example.com"
REFERRED_BY = SipUri.parse("sip:agent@127.0.0.1")


@pytest.fixture
def media_port() -> Iterator[int]:
    """A bound UDP port to put in our SDP: nothing plays media in these tests, but the port is real."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class TransferorApp:
    """What the application layer will do: answer, REFER once confirmed, BYE after success."""

    media_port: int
    target: str = TARGET
    events: list[Event] = field(default_factory=list)
    network: SipNetwork | None = None
    endpoint: SipEndpoint | None = None

    async def start(self) -> int:
        self.network = SipNetwork(self.on_event)
        port = await self.network.listen_udp(HOST, 0)
        self.endpoint = SipEndpoint(EndpointConfig(public_host=HOST, ports={"udp": port}))
        self.network.attach(self.endpoint)
        return port

    def on_event(self, event: Event) -> None:
        assert self.network is not None and self.endpoint is not None
        self.events.append(event)
        now = self.network.now()
        if isinstance(event, IncomingCall):
            self.endpoint.answer(event.call_id, now, rtp_port=self.media_port)
        elif isinstance(event, CallConfirmed):
            self.endpoint.refer(event.call_id, self.target, now, referred_by=REFERRED_BY, timeout=10.0)
        elif isinstance(event, TransferSucceeded):
            self.endpoint.hangup(event.call_id, now)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    async def close(self) -> None:
        if self.network is not None:
            await self.network.close()


@dataclass
class Run:
    """One finished call: what the app saw, what sipp saw, and the proxy's log when there was one."""

    app: TransferorApp
    result: SippResult
    kamailio: Kamailio | None
    port: int

    def call_id(self) -> str:
        (incoming,) = [e for e in self.app.events if isinstance(e, IncomingCall)]
        return incoming.call_id

    def routed(self, method: str, *, by_us: bool) -> int:
        """How many ``method`` requests Kamailio loose-routed that we (or sipp) sent."""
        assert self.kamailio is not None
        records = self.kamailio.dialog_requests(method)
        return sum((r.get("src") or "").endswith(f":{self.port}") == by_us for r in records)


async def run_call(
    tmp_path: Path, media_port: int, scenario: str, *, through_kamailio: bool = False, target: str = TARGET
) -> Run:
    """One sipp call against a fresh endpoint, straight or through a Record-Routing Kamailio."""
    app = TransferorApp(media_port, target=target)
    port = await app.start()
    kamailio = None
    try:
        with contextlib.ExitStack() as stack:
            remote = f"{HOST}:{port}"
            if through_kamailio:
                kamailio = Kamailio(tmp_path / "kamailio", role="proxy", target=remote)
                stack.enter_context(kamailio)
                remote = kamailio.address
            result = await asyncio.to_thread(
                run_sipp, scenario_path(scenario), remote, workdir=tmp_path / "sipp", service="agent",
                timeout=20,
            )  # fmt: skip
            # sipp is done once it has the answer to the last BYE: let our side see it too.
            for _ in range(50):
                if any(isinstance(e, CallEnded) for e in app.events):
                    break
                await asyncio.sleep(0.05)
    finally:
        await app.close()
    return Run(app, result, kamailio, port)


def refer_sent(result: SippResult) -> list[str]:
    """The Refer-To and Referred-By of the REFER sipp received."""
    (refer,) = [m for m in result.received() if not m.is_response and m.method == "REFER"]
    return [refer.header("Refer-To") or "", refer.header("Referred-By") or ""]


@pytest.mark.parametrize("through_kamailio", [False, True], ids=["direct", "kamailio"])
async def test_transfer_accepted_notified_and_our_bye_follows(
    tmp_path: Path, media_port: int, through_kamailio: bool
) -> None:
    """A caller (through Kamailio: as behind a carrier's edge) is transferred: sipagent sends REFER,
    the caller accepts and reports it, the NOTIFYs are answered and our BYE follows."""
    skips.require("sipp", *(["kamailio"] if through_kamailio else []))
    run = await run_call(tmp_path, media_port, "uac_call_refer", through_kamailio=through_kamailio)
    run.result.assert_ok()
    call_id = run.call_id()
    assert run.app.kinds() == [
        "IncomingCall",
        "CallConfirmed",
        "TransferAccepted",
        "TransferProgress",
        "TransferSucceeded",
        "CallEnded",
    ]
    assert run.app.of(TransferProgress) == [TransferProgress(call_id, 100, "Trying")]
    assert run.app.of(TransferSucceeded) == [TransferSucceeded(call_id, 200)]
    assert run.app.of(CallEnded) == [CallEnded(call_id, "local-bye", by_remote=False)]
    assert refer_sent(run.result) == [f"<{TARGET}>", f"<{REFERRED_BY}>"]
    assert run.result.statuses_received("NOTIFY") == [200, 200]
    assert run.result.requests_received() == ["REFER", "BYE"]
    if through_kamailio:
        # Our REFER and BYE, and sipp's NOTIFYs, were all loose-routed by Kamailio.
        assert run.routed("REFER", by_us=True) == 1 and run.routed("BYE", by_us=True) == 1
        assert run.routed("NOTIFY", by_us=False) == 2


@pytest.mark.parametrize("through_kamailio", [False, True], ids=["direct", "kamailio"])
@pytest.mark.parametrize(("status", "reason"), [(403, "Forbidden"), (405, "Method Not Allowed")])
async def test_refused_transfer_keeps_the_call_until_the_caller_hangs_up(
    tmp_path: Path, media_port: int, status: int, reason: str, through_kamailio: bool
) -> None:
    skips.require("sipp", *(["kamailio"] if through_kamailio else []))
    run = await run_call(tmp_path, media_port, f"uac_call_refer_{status}", through_kamailio=through_kamailio)
    run.result.assert_ok()
    call_id = run.call_id()
    assert run.app.kinds() == ["IncomingCall", "CallConfirmed", "TransferFailed", "CallEnded"]
    assert run.app.of(TransferFailed) == [TransferFailed(call_id, status, reason)]
    assert run.app.of(CallEnded) == [CallEnded(call_id, "remote-bye", by_remote=True)]
    assert run.result.requests_received() == ["REFER"]  # no BYE, no second REFER from us
    if through_kamailio:
        assert run.routed("REFER", by_us=True) == 1 and run.routed("BYE", by_us=False) == 1


async def test_a_tel_target_is_sent_as_a_tel_uri(tmp_path: Path, media_port: int) -> None:
    skips.require("sipp")
    run = await run_call(tmp_path, media_port, "uac_call_refer", target="tel:+15557654321")
    run.result.assert_ok()
    assert refer_sent(run.result)[0] == "<tel:+15557654321>"
    assert run.app.of(TransferSucceeded) == [TransferSucceeded(run.call_id(), 200)]
