"""sipagent behind Kamailio, the stand-in for a carrier edge (issue 2, items 3 and 4).

* Registration mode: Kamailio is a registrar with digest auth (with and without qop) that grants a
  short expiry; sipagent registers, honours the grant and refreshes on the same Call-ID. A sipp
  caller then reaches sipagent *through* Kamailio (which adds Record-Route) and ACK and BYE, from
  either side, travel the route set.
* Outbound: sipagent places a call through Kamailio, which challenges the INVITE with 407
  (qop=auth and opaque), to a sipp callee; the call is authenticated, answered and hung up cleanly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from peers.kamailio import Kamailio, RegisterRecord
from peers.proc import ManagedProcess
from peers.sipagent_proc import SipagentServer
from peers.sipp import SippProcess, run_sipp, scenario_path

pytestmark = pytest.mark.peer

USER, PASSWORD = "agent", "s3cret-Pa55"


def _register_config(kamailio: Kamailio, *, media_timeout: float = 30) -> str:
    return (
        f"[rtp]\nmedia_timeout = {media_timeout}\n"
        f'[trunk]\nmode = "register"\nuri = "{kamailio.uri()}"\nusername = "{USER}"\n'
        f'password = "{PASSWORD}"\nexpires = 3600\nkeepalive_interval = 0\n'
    )


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ok_registers(kamailio: Kamailio) -> list[RegisterRecord]:
    return [r for r in kamailio.register_log() if r.status == "ok"]


@pytest.mark.parametrize("qop", [True, False], ids=["qop-auth", "no-qop"])
def test_register_with_digest_honours_grant_and_refreshes_on_same_call_id(tmp_path: Path, qop: bool) -> None:
    with Kamailio(tmp_path / "kamailio", users={USER: PASSWORD}, qop=qop, max_expires=10) as kamailio:
        config = _register_config(kamailio)
        with SipagentServer(tmp_path / "server", config_text=config) as server:
            # Granted 10 s (we asked 3600): refresh at half the grant, so two OKs within ~7 s.
            _wait_for(lambda: len(_ok_registers(kamailio)) >= 2, 12, "a registration refresh")
            log = server.log()
            metrics = httpx.get(f"{server.api_url}/metrics", timeout=10).text
        assert 'sipagent_registration_up{trunk="generic"} 1.0' in metrics
        records = kamailio.register_log()
        oks = _ok_registers(kamailio)
        assert records[0].status == "challenge"
        # usrloc keeps an absolute expiry and the log line subtracts the current second from it:
        # a second boundary between save() and the log (a loaded box) reads 9 for a 10 s grant.
        assert oks[0].requested_expires == 3600 and oks[0].granted in (9, 10)
        assert "registered sip:agent@127.0.0.1 for 10 s" in log
        assert len({r.call_id for r in records}) == 1, "every REGISTER must share one Call-ID"
        cseqs = [r.cseq for r in records]
        assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs)
        assert PASSWORD not in log


def test_wrong_password_is_reported_not_looped(tmp_path: Path) -> None:
    with Kamailio(tmp_path / "kamailio", users={USER: "another-password"}, qop=True) as kamailio:
        config = _register_config(kamailio)
        with SipagentServer(tmp_path / "server", config_text=config) as server:
            _wait_for(lambda: "registration of" in server.log(), 10, "the failure report")
            time.sleep(1.0)
            log = server.log()
            metrics = httpx.get(f"{server.api_url}/metrics", timeout=10).text
        assert 'sipagent_registration_up{trunk="generic"} 0.0' in metrics
        # Kamailio refuses a wrong answer with 403; a second 401 would give "authentication failed".
        assert "failed: 403" in log or "authentication failed" in log
        # One challenge, one answer, then back-off: no tight loop of REGISTERs.
        assert len(kamailio.register_log()) <= 3


def _registered_server(tmp_path: Path, kamailio: Kamailio, **kwargs: float) -> SipagentServer:
    server = SipagentServer(tmp_path / "server", config_text=_register_config(kamailio, **kwargs))
    server.__enter__()
    _wait_for(lambda: bool(_ok_registers(kamailio)), 10, "registration")
    return server


def test_call_through_kamailio_with_record_route_caller_hangs_up(tmp_path: Path) -> None:
    with Kamailio(tmp_path / "kamailio", users={USER: PASSWORD}, qop=True, max_expires=60) as kamailio:
        server = _registered_server(tmp_path, kamailio)
        try:
            result = run_sipp(
                scenario_path("uac_call_echo"), kamailio.address, workdir=tmp_path / "sipp", service=USER,
                audio_seconds=1.0,
            )  # fmt: skip
            result.assert_ok()
            _wait_for(lambda: "ended: remote-bye" in server.log(), 5, "the call to end")
        finally:
            server.__exit__(None, None, None)
        # The ACK and BYE from the caller were loose-routed by kamailio (Record-Route honoured).
        assert kamailio.dialog_requests("ACK") and kamailio.dialog_requests("BYE")
        invite_in = [r for r in kamailio.requests("INVITE")]
        assert invite_in, "the INVITE went through kamailio"


def test_call_through_kamailio_sipagent_hangs_up_via_route_set(tmp_path: Path) -> None:
    with Kamailio(tmp_path / "kamailio", users={USER: PASSWORD}, qop=False, max_expires=60) as kamailio:
        server = _registered_server(tmp_path, kamailio, media_timeout=2)
        try:
            result = run_sipp(
                scenario_path("uac_call_wait_bye"), kamailio.address, workdir=tmp_path / "sipp", service=USER,
                timeout=15,
            )  # fmt: skip
            result.assert_ok()
        finally:
            server.__exit__(None, None, None)
        # sipagent's BYE went to kamailio first (Route from Record-Route), not straight to sipp.
        byes = kamailio.dialog_requests("BYE")
        assert byes, kamailio.log_text()[-3000:]
        assert any((r.get("src") or "").endswith(f":{server.sip_port}") for r in byes)
        assert kamailio.dialog_requests("ACK")


@pytest.mark.parametrize("scenario", ["uas_answer", "uas_answer_then_bye"])
def test_outbound_call_through_407_proxy(tmp_path: Path, scenario: str) -> None:
    callee = SippProcess(
        scenario_path(scenario), workdir=tmp_path / "callee", rtp_echo=True, duration_ms=2000, timeout=30
    )
    with callee:
        with Kamailio(
            tmp_path / "kamailio", role="proxy", users={USER: PASSWORD}, qop=True, opaque="0paque-v4lue",
            target=callee.address,
        ) as kamailio:  # fmt: skip
            caller = SipagentServer(
                tmp_path / "caller",
                config_text=(
                    f'[trunk]\nmode = "static"\nuri = "{kamailio.uri()}"\nusername = "{USER}"\n'
                    f'password_env = "TRUNK_PASSWORD"\nkeepalive_interval = 0\n'
                ),
                env={"TRUNK_PASSWORD": PASSWORD},
            )
            target = f"sip:callee@{kamailio.address}"
            with caller:
                # An echo server's outbound call is an echo call (a trunk test) for --max-duration.
                process = ManagedProcess(
                    [sys.executable, "-m", "sipagent", "call", target, "--max-duration", "4", "--json",
                     "--api", caller.api_url],
                    name="sipagent-call", logdir=caller.workdir,
                )  # fmt: skip
                with process:
                    returncode = process.wait(timeout=40)
                log = caller.log() + process.stderr_text() + process.stdout_text()
            callee_result = callee.wait(timeout=15)
        callee_result.assert_ok()
        assert returncode == 0, log[-4000:]
        assert '"outcome": "answered"' in log
        auth = kamailio.records("AUTH")
        assert auth, kamailio.log_text()[-3000:]
        # Challenged once with 407, then the retried INVITE carried the right credentials.
        invites = kamailio.requests("INVITE")
        assert len(invites) == 2 and invites[0].get("ci") == invites[1].get("ci")
        assert int(invites[1].get("cseq") or 0) == int(invites[0].get("cseq") or 0) + 1
        assert kamailio.dialog_requests("ACK") and kamailio.dialog_requests("BYE")
        assert PASSWORD not in log
