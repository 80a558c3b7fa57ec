"""sipp (a real, scripted UAC) against ``sipagent serve --mode echo`` on loopback (issue 2, item 2).

Every test starts its own server subprocess on random ports and drives it with a scenario from
``peers/scenarios`` whose header says what it checks; RTP is counted from a loopback capture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peers.capture import LoopbackCapture
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path

pytestmark = pytest.mark.peer


def test_echo_call_returns_every_audio_packet(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        media_port = free_port_block(4)
        with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
            result = run_sipp(
                scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp",
                media_port=media_port, service="echo", audio_seconds=3.0,
            )  # fmt: skip
        result.assert_ok()
        sent = capture.rtp_count(src_port=media_port)
        echoed = capture.rtp_count(dst_port=media_port)
        # 3 s of 20 ms packets went out, and every one came back from the port we advertised.
        assert sent >= 145, capture.describe()
        assert echoed == sent, capture.describe()
        echo_sources = {p.src[1] for p in capture.rtp_packets(dst_port=media_port)}
        assert len(echo_sources) == 1 and echo_sources <= set(server.rtp_ports)
        assert f"received {sent}, sent {sent}" in server.log()


def test_server_hangs_up_with_bye_when_media_stops(tmp_path: Path) -> None:
    config = "[rtp]\nmedia_timeout = 2\n"
    with SipagentServer(tmp_path / "server", config_text=config) as server:
        result = run_sipp(
            scenario_path("uac_call_wait_bye"), server.address, workdir=tmp_path / "sipp", service="echo",
            timeout=15,
        )  # fmt: skip
        result.assert_ok()
        assert "BYE" in result.requests_received()
        assert "no RTP for 2 s" in server.log()


def test_cancel_before_answer_gives_487_and_no_call(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server", extra_args=("--answer-delay", "5")) as server:
        result = run_sipp(
            scenario_path("uac_cancel"), server.address, workdir=tmp_path / "sipp", service="echo"
        )
        result.assert_ok()
        statuses = result.statuses_received()
        assert 487 in statuses and 200 in result.statuses_received("CANCEL")
        assert 200 not in result.statuses_received("INVITE")
        log = server.log()
        assert "ended: cancelled" in log
        assert "media: received" not in log  # no RTP session was ever opened for it


def test_options_answered_with_allow(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        result = run_sipp(
            scenario_path("uac_options"), server.address, workdir=tmp_path / "sipp", service="echo"
        )
        result.assert_ok()
        assert result.statuses_received("OPTIONS") == [200]


def test_hold_and_unhold_by_reinvite(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        result = run_sipp(
            scenario_path("uac_hold"), server.address, workdir=tmp_path / "sipp", service="echo"
        )
        result.assert_ok()
        assert result.statuses_received("INVITE").count(200) >= 3


def test_reinvite_without_sdp(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        result = run_sipp(
            scenario_path("uac_reinvite_nosdp"), server.address, workdir=tmp_path / "sipp", service="echo"
        )
        result.assert_ok()
        assert result.statuses_received("BYE") == [200]


def test_echo_over_tcp(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        media_port = free_port_block(4)
        with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
            result = run_sipp(
                scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp", transport="tcp",
                media_port=media_port, service="echo", audio_seconds=2.0,
            )  # fmt: skip
        result.assert_ok()
        sent = capture.rtp_count(src_port=media_port)
        assert sent >= 95 and capture.rtp_count(dst_port=media_port) == sent


def test_public_address_is_advertised_in_contact_and_sdp(tmp_path: Path) -> None:
    """NAT: we bind 127.0.0.1 but must advertise the configured public address (and public port)
    in Contact and SDP; a private address there is the classic one-way-audio failure."""
    public = "127.0.0.2"
    config = "[sip]\npublic_port = 15999\n"
    with SipagentServer(
        tmp_path / "server", extra_args=("--public-address", public), config_text=config
    ) as server:
        result = run_sipp(
            scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp", service="echo",
            audio_seconds=0.5, timeout=6,
        )  # fmt: skip
    answers = [m for m in result.received() if m.status == 200 and m.header("CSeq") == "1 INVITE"]
    assert answers, result.describe()
    answer = answers[0]
    assert f"@{public}:15999" in (answer.header("Contact") or "")
    assert f"c=IN IP4 {public}" in answer.body
    assert f"IN IP4 {public}" in answer.body.split("o=", 1)[1].splitlines()[0]
