"""Self-tests of the interop harness (peers/, peers/scenarios) against real peers on loopback.

sipagent's own server is not exercised here: every scenario is proven peer to peer (sipp against sipp,
through kamailio, baresip against sipp) so that a failing interop test later points at sipagent, not at
the harness. Negative cases check that each UAC scenario really fails against a misbehaving UAS.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from peers import audio
from peers.baresip import Baresip
from peers.capture import LoopbackCapture, is_rtp
from peers.kamailio import Kamailio, TlsFiles
from peers.pcap import read_udp_packets, write_udp_pcap
from peers.ports import (
    HOST,
    free_port_block,
    free_port_pair,
    free_sip_port,
    free_tcp_port,
    free_udp_port,
    is_port_bound,
)
from peers.sipmsg import SipMessage, parse_sip_message
from peers.sipp import SippProcess, SippResult, Transport, run_sipp, scenario_path
from peers.skips import require, require_capture
from peers.tls import make_test_pki

AUDIO_SECONDS = 3.0
PACKETS = int(AUDIO_SECONDS * 1000 / audio.PTIME_MS)  # 150 packets of 20 ms

peer = pytest.mark.peer


def _branch(msg: SipMessage) -> str:
    via = msg.header("via") or ""
    for param in via.split(";"):
        if param.strip().startswith("branch="):
            return param.strip()[len("branch=") :]
    return ""


def _mutant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of scenario ``name`` with ``old`` replaced by ``new`` (a deliberately broken peer)."""
    text = scenario_path(name).read_text()
    assert old in text, f"{old!r} not in {name}"
    path = tmp_path / f"mutant_{name}.xml"
    path.write_text(text.replace(old, new))
    return path


# --- pure helpers (no peers) ---------------------------------------------------------------------------


def test_free_ports_are_bindable_and_distinct() -> None:
    udp, tcp, sip = free_udp_port(), free_tcp_port(), free_sip_port()
    rtp, rtcp = free_port_pair()
    assert rtp % 2 == 0 and rtcp == rtp + 1
    block = free_port_block(4)
    assert block % 2 == 0
    assert len({udp, tcp, sip, rtp, rtcp, *range(block, block + 4)}) == 9
    socks = []
    try:
        for port, kind in [
            (udp, socket.SOCK_DGRAM),
            (tcp, socket.SOCK_STREAM),
            (sip, socket.SOCK_DGRAM),
            (sip, socket.SOCK_STREAM),
            (rtp, socket.SOCK_DGRAM),
            (rtcp, socket.SOCK_DGRAM),
        ]:
            sock = socket.socket(socket.AF_INET, kind)
            socks.append(sock)
            sock.bind((HOST, port))
        assert is_port_bound(udp, "udp")
        socks[1].listen()
        assert is_port_bound(tcp, "tcp")
    finally:
        for sock in socks:
            sock.close()


def test_g711_round_trip_and_wav_stats(tmp_path: Path) -> None:
    pcm = audio.tone_sequence(2.0, tones_hz=(1000.0,))
    for encode, decode in ((audio.ulaw_encode, audio.ulaw_decode), (audio.alaw_encode, audio.alaw_decode)):
        back = decode(encode(pcm)).astype(np.int32)
        # G.711 is logarithmic: the error stays within a few percent of full scale.
        assert np.max(np.abs(back - pcm.astype(np.int32))) < 0.03 * 32768
    wav = audio.write_wav(tmp_path / "t.wav", pcm)
    stats = audio.wav_stats(wav)
    assert stats.sample_rate == 8000 and stats.duration_s == pytest.approx(2.0)
    assert stats.active_s == pytest.approx(2.0) and stats.dominant_hz == pytest.approx(1000.0, abs=5)
    silent = audio.write_wav(tmp_path / "s.wav", np.zeros(8000, dtype=np.int16))
    assert audio.wav_stats(silent).active_s == 0 and audio.wav_stats(silent).rms == 0


def test_pcap_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    count = audio.write_test_pcap(path, 1.0)
    packets = list(read_udp_packets(path))
    assert count == len(packets) == 50
    assert all(is_rtp(p.payload) and p.payload[1] & 0x7F == audio.PT_PCMU for p in packets)
    assert all(len(p.payload) == 12 + 160 for p in packets)
    assert packets[1].timestamp - packets[0].timestamp == pytest.approx(0.020)
    write_udp_pcap(tmp_path / "u.pcap", [(1.0, b"x")], src=("127.0.0.1", 1), dst=("127.0.0.1", 2))
    (only,) = read_udp_packets(tmp_path / "u.pcap")
    assert only.src == ("127.0.0.1", 1) and only.dst == ("127.0.0.1", 2) and only.payload == b"x"


def test_sip_message_parser_compact_forms() -> None:
    msg = parse_sip_message(
        "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\ni: abc\r\nCSeq: 2 INVITE\r\n"
        "Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\nl: 0\r\n\r\n"
    )
    assert msg.status == 200 and msg.method == "INVITE" and msg.call_id == "abc"
    assert msg.header_all("record-route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert _branch(msg) == "z9hG4bK1"


# --- capture -------------------------------------------------------------------------------------------


@peer
def test_capture_counts_each_direction_exactly(tmp_path: Path) -> None:
    require_capture()
    a_port, b_port = free_udp_port(), free_udp_port()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind((HOST, a_port))
        b.bind((HOST, b_port))
        rtp = audio.rtp_packet(b"\xff" * 160, seq=1, timestamp=0, ssrc=1, pt=0)
        with LoopbackCapture(tmp_path, [a_port]) as cap:
            for _ in range(37):
                a.sendto(rtp, (HOST, b_port))
            for _ in range(11):
                b.sendto(rtp, (HOST, a_port))
            b.sendto(b"\x81\xc8" + b"\x00" * 26, (HOST, a_port))  # an RTCP SR: not RTP
    assert cap.count(a_port, b_port) == 37
    assert cap.count(b_port, a_port) == 12
    assert cap.count(b_port, a_port, rtp_only=True) == 11
    assert cap.rtp_count(src_port=a_port) == 37


# --- sipp against sipp ---------------------------------------------------------------------------------

# (UAC scenario, reference UAS scenario, statuses the UAC must see, requests the UAS must see)
PAIRS = [
    ("uac_call_echo", "uas_answer", [100, 180, 200, 200], ["INVITE", "ACK", "BYE"]),
    ("uac_call_wait_bye", "uas_answer_then_bye", [100, 180, 200], ["INVITE", "ACK"]),
    ("uac_cancel", "ref_uas_cancel", [100, 180, 200, 487], ["INVITE", "CANCEL", "ACK"]),
    ("uac_options", "ref_uas_options", [200], ["OPTIONS"]),
    (
        "uac_hold",
        "ref_uas_hold",
        [100, 200, 200, 200, 200],
        ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"],
    ),
    (
        "uac_reinvite_nosdp",
        "ref_uas_reinvite_nosdp",
        [100, 200, 200, 200],
        ["INVITE", "ACK", "INVITE", "ACK", "BYE"],
    ),
]


@peer
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(("uac", "uas", "statuses", "requests"), PAIRS, ids=[p[0] for p in PAIRS])
def test_sipp_uac_scenario_against_reference_uas(
    tmp_path: Path, uac: str, uas: str, statuses: list[int], requests: list[str], transport: Transport
) -> None:
    require("sipp")
    with SippProcess(
        scenario_path(uas),
        workdir=tmp_path / "uas",
        transport=transport,
        rtp_echo=True,
        duration_ms=500,
        timeout=20,
    ) as server:
        result = run_sipp(
            scenario_path(uac),
            server.address,
            workdir=tmp_path / "uac",
            service="agent",
            transport=transport,
            audio_seconds=1.0,
            timeout=20,
        )
        server_result = server.wait(20)
    result.assert_ok()
    server_result.assert_ok()
    assert result.statuses_received() == statuses
    assert server_result.requests_received() == requests
    if uac == "uac_cancel":
        # CANCEL and the ACK for the 487 reuse the INVITE's branch (same transaction).
        received = {m.method: m for m in server_result.received()}
        assert _branch(received["CANCEL"]) == _branch(received["INVITE"]) == _branch(received["ACK"])
        assert received["ACK"].header("cseq") == "1 ACK"


def _mutant_cases() -> list[tuple[str, str, Callable[[Path], Path], str]]:
    """(UAC scenario, description, factory of a broken UAS, expected failure marker)."""

    def answers_after_cancel(tmp: Path) -> Path:
        text = scenario_path("ref_uas_cancel").read_text()
        start = text.index("  <send>\n    <![CDATA[\n      SIP/2.0 200 OK")
        end = text.index('  <recv request="ACK"/>')
        answer = (
            '  <send retrans="500">\n    <![CDATA[\n      SIP/2.0 200 OK\n      [last_Via:]\n'
            "      [last_From:]\n      [last_To:];tag=[pid]SIPpTag01[call_number]\n      [last_Call-ID:]\n"
            "      CSeq: [last_cseq_number] INVITE\n      Contact: <sip:sipp@[local_ip]:[local_port]>\n"
            "      Content-Length: 0\n\n    ]]>\n  </send>\n"
        )
        path = tmp / "mutant_answers_after_cancel.xml"
        path.write_text(text[:start] + answer + text[end:])
        return path

    return [
        (
            "uac_cancel",
            "UAS answers 200 to a cancelled INVITE",
            answers_after_cancel,
            "FailedUnexpectedMessage",
        ),
        (
            "uac_hold",
            "UAS answers a sendonly offer with sendrecv",
            lambda tmp: _mutant(tmp, "ref_uas_hold", "a=recvonly", "a=sendrecv"),
            "FailedRegexpDoesntMatch",
        ),
        (
            "uac_options",
            "UAS omits Allow",
            lambda tmp: _mutant(
                tmp, "ref_uas_options", "      Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\n", ""
            ),
            "FailedRegexpHdrNotFound",
        ),
        (
            "uac_reinvite_nosdp",
            "UAS answers a body-less re-INVITE without an offer",
            _reinvite_without_offer,
            "FailedRegexpDoesntMatch",
        ),
        (
            "uac_call_echo",
            "UAS answers PCMA only",
            lambda tmp: _mutant(
                tmp,
                "uas_answer",
                "m=audio [media_port] RTP/AVP 0 [$te_pt]",
                "m=audio [media_port] RTP/AVP 8 [$te_pt]",
            ),
            "FailedRegexpDoesntMatch",
        ),
    ]


def _reinvite_without_offer(tmp: Path) -> Path:
    """ref_uas_reinvite_nosdp whose 200 to the re-INVITE carries no SDP."""
    text = scenario_path("ref_uas_reinvite_nosdp").read_text()
    marker = "o=sipp 1 2 IN"
    start = text.rindex("  <send", 0, text.index(marker))
    end = text.index("  </send>", start) + len("  </send>\n")
    empty_200 = (
        '  <send retrans="500">\n    <![CDATA[\n      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n'
        "      [last_To:]\n      [last_Call-ID:]\n      [last_CSeq:]\n"
        "      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>\n"
        "      Content-Length: 0\n\n    ]]>\n  </send>\n"
    )
    path = tmp / "mutant_reinvite_without_offer.xml"
    path.write_text(text[:start] + empty_200 + text[end:])
    return path


MUTANTS = _mutant_cases()


@peer
@pytest.mark.parametrize(("uac", "what", "make_uas", "marker"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_sipp_uac_scenario_fails_against_broken_uas(
    tmp_path: Path, uac: str, what: str, make_uas: Callable[[Path], Path], marker: str
) -> None:
    require("sipp")
    with SippProcess(make_uas(tmp_path), workdir=tmp_path / "uas", timeout=10) as server:
        result = run_sipp(
            scenario_path(uac),
            server.address,
            workdir=tmp_path / "uac",
            service="agent",
            audio_seconds=1.0,
            timeout=10,
        )
    assert not result.ok, f"{uac} passed although {what}:\n{result.describe()}"
    assert result.stats is not None and marker in result.stats.failure_reasons(), result.describe()


@peer
def test_uas_answer_rejects_offer_without_telephone_event(tmp_path: Path) -> None:
    require("sipp")
    caller = _mutant(
        tmp_path, "uac_call_echo", "m=audio [media_port] RTP/AVP 0 8 101", "m=audio [media_port] RTP/AVP 0 8"
    )
    caller.write_text(caller.read_text().replace("      a=rtpmap:101 telephone-event/8000\n", ""))
    with SippProcess(scenario_path("uas_answer"), workdir=tmp_path / "uas", timeout=8) as server:
        run_sipp(
            caller, server.address, workdir=tmp_path / "uac", service="agent", audio_seconds=1.0, timeout=8
        )
        server_result = server.stop()
    assert not server_result.ok
    assert server_result.stats is not None
    assert "FailedRegexpDoesntMatch" in server_result.stats.failure_reasons(), server_result.describe()


@peer
def test_sipp_result_not_ok_when_nobody_answers(tmp_path: Path) -> None:
    require("sipp")
    nobody = f"{HOST}:{free_udp_port()}"
    result = run_sipp(scenario_path("uac_options"), nobody, workdir=tmp_path, service="x", timeout=3)
    assert not result.ok
    assert result.statuses_received() == []


# --- RTP echo: sipp plays, sipp -rtp_echo echoes, the capture counts -----------------------------------


def _assert_echo_counts(cap: LoopbackCapture, caller_media: int, echo_media: int, expected: int) -> None:
    sent = cap.count(caller_media, echo_media, rtp_only=True)
    echoed = cap.count(echo_media, caller_media, rtp_only=True)
    assert sent == expected, f"caller sent {sent} RTP packets, expected {expected}:\n{cap.describe()}"
    assert echoed >= 0.95 * expected, f"only {echoed}/{sent} RTP packets echoed:\n{cap.describe()}"


@peer
def test_sipp_call_with_rtp_echo_counted_by_capture(tmp_path: Path) -> None:
    require("sipp")
    require_capture()
    with SippProcess(
        scenario_path("uas_answer"), workdir=tmp_path / "uas", rtp_echo=True, timeout=20
    ) as server:
        caller_media = free_port_block(4)
        with LoopbackCapture(tmp_path, [caller_media, server.media_port]) as cap:
            result = run_sipp(
                scenario_path("uac_call_echo"),
                server.address,
                workdir=tmp_path / "uac",
                service="echo",
                media_port=caller_media,
                audio_seconds=AUDIO_SECONDS,
            )
        server_result = server.wait(20)
    result.assert_ok()
    server_result.assert_ok()
    _assert_echo_counts(cap, caller_media, server.media_port, PACKETS)
    # What came back is what was sent: PCMU payloads survive the echo byte for byte.
    sent = {p.payload[12:] for p in cap.rtp_packets(src_port=caller_media)}
    back = {p.payload[12:] for p in cap.rtp_packets(src_port=server.media_port)}
    assert back <= sent


# --- kamailio registrar ----------------------------------------------------------------------------------


@peer
@pytest.mark.parametrize("qop", [True, False], ids=["qop-auth", "no-qop"])
def test_kamailio_register_digest(tmp_path: Path, qop: bool) -> None:
    require("sipp", "kamailio")
    with Kamailio(tmp_path / "kamailio", users={"alice": "s3cret"}, qop=qop, max_expires=10) as kam:
        result = run_sipp(
            scenario_path("uac_register"),
            kam.address,
            workdir=tmp_path / "sipp",
            service="alice",
            auth=("alice", "s3cret"),
            timeout=10,
        )
        records = kam.register_log()
    result.assert_ok()
    assert result.statuses_received() == [401, 200]
    challenge = next(m for m in result.received() if m.status == 401).header("www-authenticate") or ""
    credentials = next(m for m in result.sent() if m.header("authorization")).header("authorization") or ""
    assert challenge.startswith("Digest ") and 'realm="sipagent.test"' in challenge
    assert ('qop="auth"' in challenge) is qop
    assert ("qop=auth" in credentials and "cnonce=" in credentials and "nc=00000001" in credentials) is qop
    assert "granted=10" in result.actions_text()
    assert [r.status for r in records] == ["challenge", "ok"]
    first, second = records
    assert first.call_id == second.call_id and (first.cseq, second.cseq) == (1, 2)
    assert second.auth_user == "alice" and second.requested_expires == 3600
    assert second.granted in (9, 10)


@peer
def test_kamailio_register_wrong_password_is_forbidden(tmp_path: Path) -> None:
    require("sipp", "kamailio")
    with Kamailio(tmp_path / "kamailio", users={"alice": "s3cret"}) as kam:
        result = run_sipp(
            scenario_path("uac_register"),
            kam.address,
            workdir=tmp_path / "sipp",
            service="alice",
            auth=("alice", "wrong"),
            timeout=5,
        )
        records = kam.register_log()
    assert not result.ok
    assert 403 in result.statuses_received()
    assert [r.status for r in records] == ["challenge", "forbidden"]


@peer
@pytest.mark.parametrize("qop", [True, False], ids=["qop-auth", "no-qop"])
def test_baresip_refreshes_short_registration(tmp_path: Path, qop: bool) -> None:
    """The registrar grants 4 s; a client that honours the grant refreshes on the same Call-ID."""
    require("kamailio", "baresip")
    with (
        Kamailio(tmp_path / "kamailio", users={"alice": "s3cret"}, qop=qop, max_expires=4) as kam,
        Baresip(
            tmp_path / "baresip",
            user="alice",
            domain=kam.address,
            password="s3cret",
            registrar=kam.address,
            regint=600,
        ) as phone,
    ):
        phone.wait_for_event("REGISTER_OK", timeout=10)
        ok = kam.wait_for_record("REG", status="ok", count=2, timeout=10)
        # Snapshot before baresip quits: it un-registers (expires=0) on the way out.
        records = [r for r in kam.register_log() if r.status == "ok"]
    assert len(ok) >= 2
    assert len({r.call_id for r in records}) == 1, "a refresh must keep the Call-ID"
    assert records[1].cseq > records[0].cseq
    assert all(r.requested_expires == 600 and r.granted in (3, 4) for r in records)


def _register(kam: Kamailio, tmp_path: Path, user: str, password: str, port: int) -> None:
    """Register ``user`` with Contact 127.0.0.1:``port`` (the port a sipp UAS then listens on)."""
    reg = run_sipp(
        scenario_path("uac_register"),
        kam.address,
        workdir=tmp_path / f"register-{user}",
        local_port=port,
        service=user,
        auth=(user, password),
        timeout=10,
    )
    reg.assert_ok()


@peer
def test_call_through_kamailio_registrar_keeps_proxy_in_dialog(tmp_path: Path) -> None:
    require("sipp", "kamailio")
    require_capture()
    with Kamailio(tmp_path / "kamailio", users={"agent": "pw"}, max_expires=60) as kam:
        callee_port = free_sip_port()
        _register(kam, tmp_path, "agent", "pw", callee_port)
        with SippProcess(
            scenario_path("uas_answer"),
            workdir=tmp_path / "uas",
            local_port=callee_port,
            rtp_echo=True,
            timeout=20,
        ) as callee:
            caller_media = free_port_block(4)
            with LoopbackCapture(tmp_path, [caller_media, callee.media_port]) as cap:
                result = run_sipp(
                    scenario_path("uac_call_echo"),
                    kam.address,
                    workdir=tmp_path / "uac",
                    service="agent",
                    media_port=caller_media,
                    audio_seconds=AUDIO_SECONDS,
                )
            callee_result = callee.wait(20)
        call_id = result.received()[0].call_id
        assert call_id is not None
        in_dialog = [(r.get("m"), r.get("src")) for r in kam.dialog_requests() if r.get("ci") == call_id]
    result.assert_ok()
    callee_result.assert_ok()
    invite = next(m for m in callee_result.received() if m.method == "INVITE")
    (record_route,) = invite.header_all("record-route")
    assert record_route.startswith(f"<sip:{kam.address};lr=on")
    assert [m for m, _ in in_dialog] == ["ACK", "BYE"], in_dialog
    # ...and the callee got ACK/BYE from kamailio, not straight from the caller.
    for msg in callee_result.received():
        if msg.method in ("ACK", "BYE"):
            assert len(msg.header_all("via")) == 2, msg
    _assert_echo_counts(cap, caller_media, callee.media_port, PACKETS)


def _dialog_requests(result: SippResult, direction: str) -> set[tuple[str, str]]:
    """(method, CSeq number) of the requests sipp sent or received (retransmissions collapse)."""
    messages = result.sent() if direction == "sent" else result.received()
    return {(m.method, (m.header("cseq") or "").split()[0]) for m in messages if not m.is_response}


@peer
@pytest.mark.parametrize(("uac", "uas", "statuses", "requests"), PAIRS, ids=[p[0] for p in PAIRS])
def test_sipp_pair_through_kamailio_registrar(
    tmp_path: Path, uac: str, uas: str, statuses: list[int], requests: list[str]
) -> None:
    """Every scenario pair also works with kamailio in the path (lookup + Record-Route + loose routing)."""
    require("sipp", "kamailio")
    with Kamailio(tmp_path / "kamailio", users={"agent": "pw"}, max_expires=60) as kam:
        port = free_sip_port()
        _register(kam, tmp_path, "agent", "pw", port)
        with SippProcess(
            scenario_path(uas), workdir=tmp_path / "uas", local_port=port, duration_ms=300, timeout=15
        ) as callee:
            result = run_sipp(
                scenario_path(uac),
                kam.address,
                workdir=tmp_path / "uac",
                service="agent",
                audio_seconds=1.0,
                timeout=15,
            )
            callee_result = callee.wait(15)
        call_id = result.sent()[0].call_id
        expected = _dialog_requests(result, "sent") | _dialog_requests(callee_result, "sent")
        # Kamailio writes its log asynchronously; under load the last lines may trail the peers.
        deadline = time.monotonic() + 5.0
        while True:
            seen = {(r.get("m") or "", r.get("cseq") or "") for r in kam.requests() if r.get("ci") == call_id}
            in_dialog = [r.get("m") or "" for r in kam.dialog_requests() if r.get("ci") == call_id]
            if seen >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    result.assert_ok()
    callee_result.assert_ok()
    # kamailio adds its own 100 Trying to INVITEs; otherwise the caller sees what it saw end to end.
    assert [s for s in result.statuses_received() if s != 100] == [s for s in statuses if s != 100]
    assert callee_result.requests_received() == requests
    # Every request of the call, from either side, went through kamailio...
    assert seen == expected
    # ...and the in-dialog ones were loose-routed on the Record-Route kamailio inserted.
    expected_in_dialog = [m for m in requests[1:] if m != "CANCEL"] + [
        m.method for m in callee_result.sent() if not m.is_response
    ]
    if uac == "uac_cancel":
        expected_in_dialog = []  # the ACK for a 487 is hop-by-hop: kamailio absorbs it
    assert sorted(in_dialog) == sorted(expected_in_dialog)
    if uac == "uac_call_wait_bye":
        bye = next(m for m in result.received() if m.method == "BYE")
        assert bye.header_all("via")[0].startswith(f"SIP/2.0/UDP {kam.address}"), "BYE must come via kamailio"


# --- kamailio outbound proxy with 407 ------------------------------------------------------------------


@peer
@pytest.mark.parametrize(
    ("qop", "opaque"), [(True, "0paque-xyz"), (False, None)], ids=["qop-auth-opaque", "no-qop"]
)
def test_kamailio_proxy_challenges_invite_then_relays(tmp_path: Path, qop: bool, opaque: str | None) -> None:
    require("sipp", "kamailio")
    with (
        SippProcess(scenario_path("uas_answer"), workdir=tmp_path / "uas", timeout=15) as callee,
        Kamailio(
            tmp_path / "kamailio",
            role="proxy",
            users={"trunk": "pw"},
            qop=qop,
            opaque=opaque,
            target=callee.address,
        ) as kam,
    ):
        result = run_sipp(
            scenario_path("ref_uac_invite_auth"),
            kam.address,
            workdir=tmp_path / "uac",
            service="+15551234567",
            auth=("trunk", "pw"),
            duration_ms=300,
            timeout=15,
        )
        callee_result = callee.wait(15)
        auth = [r.get("status") for r in kam.records("AUTH")]
        in_dialog = [r.get("m") for r in kam.dialog_requests()]
    result.assert_ok()
    callee_result.assert_ok()
    statuses = result.statuses_received()
    assert statuses[0] == 407 and statuses[-2:] == [200, 200]
    challenge = next(m for m in result.received() if m.status == 407).header("proxy-authenticate") or ""
    assert ('qop="auth"' in challenge) is qop
    assert (f'opaque="{opaque}"' in challenge) if opaque else ("opaque" not in challenge)
    retry = [m for m in result.sent() if m.method == "INVITE"][1]
    credentials = retry.header("proxy-authorization") or ""
    assert ("qop=auth" in credentials) is qop
    if opaque:
        assert f'opaque="{opaque}"' in credentials
    invite = next(m for m in callee_result.received() if m.method == "INVITE")
    assert invite.header("proxy-authorization") is None, "kamailio must consume the credentials"
    assert len(invite.header_all("record-route")) == 1
    assert auth == ["challenge", "ok"]
    assert in_dialog == ["ACK", "BYE"]


@peer
def test_kamailio_proxy_rejects_wrong_password(tmp_path: Path) -> None:
    require("sipp", "kamailio")
    with SippProcess(scenario_path("uas_answer"), workdir=tmp_path / "uas", timeout=5) as callee:
        with Kamailio(
            tmp_path / "kamailio", role="proxy", users={"trunk": "pw"}, opaque="op", target=callee.address
        ) as kam:
            result = run_sipp(
                scenario_path("ref_uac_invite_auth"),
                kam.address,
                workdir=tmp_path / "uac",
                service="+15551234567",
                auth=("trunk", "nope"),
                timeout=5,
            )
        callee_result = callee.stop()
    assert not result.ok
    assert 403 in result.statuses_received()
    assert callee_result.requests_received() == []


# --- baresip ---------------------------------------------------------------------------------------------


def _assert_heard_tones(recording: Path, *, min_seconds: float) -> audio.WavStats:
    stats = audio.wav_stats(recording)
    assert stats.active_s >= min_seconds, f"only {stats.active_s:.2f}s of non-silent audio recorded: {stats}"
    assert stats.rms_dbfs > -25, stats
    assert any(abs(stats.dominant_hz - f) < 10 for f in audio.DEFAULT_TONES_HZ), stats
    return stats


@peer
def test_baresip_calls_sipp_echo_and_records_it(tmp_path: Path) -> None:
    require("sipp", "baresip")
    require_capture()
    wav = audio.write_test_wav(tmp_path / "mic.wav", AUDIO_SECONDS)
    with SippProcess(
        scenario_path("uas_answer"), workdir=tmp_path / "uas", rtp_echo=True, timeout=20
    ) as echo:
        with (
            LoopbackCapture(tmp_path, [echo.media_port]) as cap,
            Baresip(tmp_path / "baresip", audio_wav=wav, dial=echo.uri("echo")) as phone,
        ):
            phone.wait_for_event("CALL_ESTABLISHED", timeout=10)
            closed = phone.wait_for_event("CALL_CLOSED", timeout=AUDIO_SECONDS + 10)
        echo_result = echo.wait(15)
    echo_result.assert_ok()
    assert echo_result.requests_received() == ["INVITE", "ACK", "BYE"]
    assert closed.data.get("param") == "end of file", "baresip hangs up when its WAV ends"
    phone_port = next(src for (src, dst) in cap.counts(rtp_only=True) if dst == echo.media_port)
    assert phone.rtp_port_min <= phone_port <= phone.rtp_port_max
    _assert_echo_counts(
        cap, phone_port, echo.media_port, cap.count(phone_port, echo.media_port, rtp_only=True)
    )
    assert cap.count(phone_port, echo.media_port, rtp_only=True) >= 0.9 * PACKETS
    _assert_heard_tones(phone.recording(), min_seconds=AUDIO_SECONDS - 0.5)


@peer
@pytest.mark.parametrize("trust_ca", [True, False], ids=["ca-file", "no-ca-file"])
def test_baresip_tls_through_kamailio_to_sipp(tmp_path: Path, trust_ca: bool) -> None:
    """TLS leg baresip -> kamailio, UDP leg kamailio -> sipp; two Record-Routes like a carrier edge.

    baresip 1.0.0 does not verify the server certificate: the call works without the CA file too.
    """
    require("sipp", "kamailio", "baresip", "openssl")
    pki = make_test_pki(tmp_path / "pki")
    wav = audio.write_test_wav(tmp_path / "mic.wav", 2.0)
    with SippProcess(
        scenario_path("uas_answer"), workdir=tmp_path / "uas", rtp_echo=True, timeout=20
    ) as echo:
        tls = TlsFiles(certificate=pki.cert, private_key=pki.key, ca_file=pki.ca_cert)
        with Kamailio(tmp_path / "kamailio", role="proxy", target=echo.address, tls=tls) as kam:
            with Baresip(
                tmp_path / "baresip",
                audio_wav=wav,
                transport="tls",
                ca_file=pki.ca_cert if trust_ca else None,
                outbound=f"sip:{kam.tls_address};transport=tls",
                dial=f"sip:echo@{kam.tls_address};transport=tls",
            ) as phone:
                phone.wait_for_event("CALL_ESTABLISHED", timeout=10)
                phone.wait_for_event("CALL_CLOSED", timeout=15)
            echo_result = echo.wait(15)
            requests = [(r.get("m"), r.get("proto")) for r in kam.requests() if r.get("m") != "OPTIONS"]
    echo_result.assert_ok()
    assert requests == [("INVITE", "tls"), ("ACK", "tls"), ("BYE", "tls")]
    invite = next(m for m in echo_result.received() if m.method == "INVITE")
    record_route = invite.header_all("record-route")
    assert len(record_route) == 2 and "transport=tls" in record_route[1]
    assert invite.header_all("via")[1].startswith("SIP/2.0/TLS")
    _assert_heard_tones(phone.recording(), min_seconds=1.5)


@peer
def test_baresip_auto_answers_sipp_call(tmp_path: Path) -> None:
    require("sipp", "baresip")
    require_capture()
    # The WAV outlasts the call: baresip would hang up at its end.
    wav = audio.write_test_wav(tmp_path / "mic.wav", AUDIO_SECONDS + 5)
    with Baresip(tmp_path / "baresip", audio_wav=wav, answer_mode="auto") as phone:
        caller_media = free_port_block(4)
        with LoopbackCapture(tmp_path, [caller_media]) as cap:
            result = run_sipp(
                scenario_path("uac_call_echo"),
                f"{HOST}:{phone.sip_port}",
                workdir=tmp_path / "uac",
                service=phone.user,
                media_port=caller_media,
                audio_seconds=AUDIO_SECONDS,
            )
        phone.wait_for_event("CALL_CLOSED", timeout=5)
    result.assert_ok()
    established = [e for e in phone.events() if e.type == "CALL_ESTABLISHED"]
    assert [e.data.get("direction") for e in established] == ["incoming"], [e.data for e in phone.events()]
    phone_ports = range(phone.rtp_port_min, phone.rtp_port_max + 1)
    to_phone = sum(
        n for (src, dst), n in cap.counts(rtp_only=True).items() if src == caller_media and dst in phone_ports
    )
    assert to_phone == PACKETS, cap.describe()
    from_phone = sum(n for (src, dst), n in cap.counts(rtp_only=True).items() if dst == caller_media)
    assert from_phone >= 0.9 * PACKETS, cap.describe()
    _assert_heard_tones(phone.recording(), min_seconds=AUDIO_SECONDS - 0.5)
