"""Who may call and how many at once, against real sipp callers on loopback (issue 14).

Each test starts ``sipagent serve`` (echo mode: the product rules do not need the models) with an
``[inbound]`` or ``[limits]`` table, and sipp calls it from chosen numbers with
``peers/scenarios/uac_call_identity.xml`` (From, and a P-Asserted-Identity that overrides it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peers.sipagent_proc import SipagentServer
from peers.sipp import SippResult, run_sipp, scenario_path

pytestmark = pytest.mark.peer

ALLOWED = "+15550001111"
STRANGER = "+15550002222"


def _call(
    server: SipagentServer, workdir: Path, from_user: str, pai: str | None = None, **kwargs: object
) -> SippResult:
    identity = f"P-Asserted-Identity: <sip:{pai}@127.0.0.1>" if pai else "X-Test: no-identity"
    return run_sipp(
        scenario_path("uac_call_identity"), server.address, workdir=workdir, service="+15550003333",
        keys={"from_user": from_user, "identity": identity}, duration_ms=300, timeout=20, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def _final(result: SippResult) -> list[int]:
    return [status for status in result.statuses_received("INVITE") if status >= 200]


def test_allowlist_answers_listed_numbers_and_refuses_strangers_with_403(tmp_path: Path) -> None:
    config = f'[inbound]\npolicy = "allowlist"\nallow = ["{ALLOWED}"]\nallow_loopback = false\n'
    with SipagentServer(tmp_path / "server", config_text=config) as server:
        allowed = _call(server, tmp_path / "allowed", ALLOWED)
        stranger = _call(server, tmp_path / "stranger", STRANGER)
        # P-Asserted-Identity is the number the network vouches for: it overrides From both ways.
        vouched = _call(server, tmp_path / "vouched", STRANGER, pai=ALLOWED)
        spoofed = _call(server, tmp_path / "spoofed", ALLOWED, pai=STRANGER)
        # A national number in the allowlist's country is the same number.
        national = _call(server, tmp_path / "national", "5550001111")
        log = server.log()
    for result in (allowed, stranger, vouched, spoofed, national):
        result.assert_ok()
    assert _final(allowed) == [200]
    assert _final(stranger) == [403]
    assert _final(vouched) == [200]
    assert _final(spoofed) == [403]
    assert _final(national) == [200]
    assert "inbound policy: allowlist (1 number" in log
    # Refused numbers are logged masked (last 4 digits), never in full (outside the debug level's
    # SIP message traces).
    lines = "\n".join(line for line in log.splitlines() if " INFO " in line or " WARNING " in line)
    assert "2222" in lines and STRANGER not in lines and "5550002222" not in lines


def test_a_disabled_policy_answers_no_one(tmp_path: Path) -> None:
    config = f'[inbound]\npolicy = "disabled"\nallow = ["{ALLOWED}"]\n'
    with SipagentServer(tmp_path / "server", config_text=config) as server:
        result = _call(server, tmp_path / "sipp", ALLOWED)
        log = server.log()
    result.assert_ok()
    assert _final(result) == [403]
    assert "inbound policy: disabled" in log


def test_the_default_policy_lets_this_machine_call_but_no_stranger_would(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        result = _call(server, tmp_path / "sipp", STRANGER)
        log = server.log()
    result.assert_ok()
    assert _final(result) == [200]  # sipp runs on loopback: make run's local softphone works
    assert "allowlist (no numbers; loopback callers allowed)" in log


def test_max_calls_refuses_the_third_concurrent_call_with_503_and_retry_after(tmp_path: Path) -> None:
    config = "[limits]\nmax_calls = 2\ncalls_per_minute = 0\nretry_after = 17\n"
    with SipagentServer(tmp_path / "server", config_text=config) as server:
        result = run_sipp(
            scenario_path("uac_call_identity"), server.address, workdir=tmp_path / "sipp", service="echo",
            keys={"from_user": ALLOWED, "identity": "X-Test: none"}, calls=3, rate=50, duration_ms=3000,
            timeout=30,
        )  # fmt: skip
    result.assert_ok()
    finals = sorted(_final(result))
    assert finals == [200, 200, 503], result.describe()
    refusal = next(m for m in result.received() if m.status == 503)
    assert refusal.header("retry-after") == "17"


def test_a_caller_over_calls_per_minute_gets_486(tmp_path: Path) -> None:
    config = "[limits]\ncalls_per_minute = 2\n"
    with SipagentServer(tmp_path / "server", config_text=config) as server:
        finals = [_final(_call(server, tmp_path / f"sipp{i}", ALLOWED)) for i in range(3)]
    assert finals == [[200], [200], [486]]


def test_a_call_over_max_call_duration_ends_with_our_bye(tmp_path: Path) -> None:
    config = "[limits]\nmax_call_duration = 2\n"
    with SipagentServer(tmp_path / "server", config_text=config) as server:
        result = run_sipp(
            scenario_path("uac_call_wait_bye"), server.address, workdir=tmp_path / "sipp", service="echo",
            timeout=15,
        )  # fmt: skip
        log = server.log()
    result.assert_ok()
    assert "BYE" in result.requests_received()
    assert "maximum duration (2 s) reached" in log
    assert "max duration" in log
