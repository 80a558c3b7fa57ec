"""Media interop with real peers: RFC 4733 DTMF both ways and SRTP (SDES) against ``sipagent serve``.

* sipp plays the RFC 2833 digit captures that ship with it; sipagent must log each digit once, in order,
  with the duration the capture carries.
* baresip presses keys (``sndcode`` over ctrl_tcp); sipagent logs them and echoes them as RFC 4733
  events, which baresip decodes (``CALL_DTMF_START``) and which the capture shows are well formed.
* baresip calls over TLS with ``mediaenc=srtp-mand``: the SDP is RTP/SAVP with SDES keys (redacted in
  sipagent's log), the audio flows both ways, and on the wire it is SRTP: no payload is its plaintext,
  the ciphertext looks random, and it decrypts (with libsrtp, not sipagent's code) only with the key its
  sender's SDP carried, into the played tones. baresip's own SIP trace (``-s``) gives the test the keys.
* Forged SRTP packets (a captured one, moved to a fresh sequence number, one payload bit flipped) sent
  from another port are counted as authentication failures and do not move sipagent's media.
* A plain RTP/AVP offer to an SRTP-required server is refused with 488.

baresip 1.0.0 quirks met here: ``CALL_DTMF_END`` carries no key (only ``CALL_DTMF_START`` does);
``sndcode 123`` works but logs a release for the last key only, so the test presses one key per command
and waits for its echo (each echo then maps to one key); baresip keeps sending audio packets alongside
its own telephone-events; its μ-law encoder differs from the reference one by one step on a few percent
of samples; with SRTP it sends two RTCP packets *unprotected* (an RTCP APP "PING" before its SRTP filter
is attached and the final BYE+SDES after it is removed), which sipagent rightly rejects: a clean SRTP
call already logs a rejection or two, so the forgery test counts rather than looks for the warning.
"""

from __future__ import annotations

import base64
import itertools
import math
import os
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylibsrtp
import pytest

from peers import skips
from peers.audio import read_wav, tone_sequence, ulaw_decode, wav_stats, write_wav
from peers.baresip import Baresip, BaresipEvent
from peers.capture import LoopbackCapture
from peers.pcap import UdpPacket, read_udp_packets
from peers.ports import HOST
from peers.sipagent_proc import SipagentServer
from peers.sipmsg import SipMessage, parse_sip_message
from peers.sipp import run_sipp, scenario_path
from peers.tls import make_test_pki

pytestmark = pytest.mark.peer

SIPP_PCAPS = Path("/usr/share/sip-tester")
#: RFC 4733 event codes 0-15.
DTMF_DIGITS = "0123456789*#ABCD"
TONES = (440.0, 1000.0, 1500.0)
#: 12-byte RTP header, 160 bytes of 20 ms G.711, 10-byte AES_CM_128_HMAC_SHA1_80 tag.
SRTP_PCMU_PACKET = 12 + 160 + 10
_DTMF_LINE = re.compile(r"sipagent\.call: call (\S+): DTMF (\S) \((\d+) ms\)$", re.MULTILINE)
_SRTP_REJECTED = re.compile(r"call \S+: (\d+) SRTP packets rejected")
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \w+ ([\w.]+): ", re.MULTILINE)
_BARESIP_TRACE = re.compile(r"\x1b\[36;1m#\n(\w+) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.DOTALL)


# -- helpers: logs and SIP traces --------------------------------------------------------------------


def _logged_digits(log: str) -> list[tuple[str, str, int]]:
    """``(call id, digit, ms)`` for every ``call <id>: DTMF <digit> (<n> ms)`` line, in order."""
    return [(m[1], m[2], int(m[3])) for m in _DTMF_LINE.finditer(log)]


def _sipagent_messages(log: str, direction: str) -> list[SipMessage]:
    """The SIP messages sipagent logged as ``send``/``recv`` (debug level), in order."""
    starts = list(_LOG_RECORD.finditer(log))
    messages = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(log)
        record = log[match.end() : end]
        first, _, rest = record.partition("\n")
        if match[1] == "sipagent.sip" and first.startswith(direction + " ") and rest.strip():
            messages.append(parse_sip_message(rest, direction=direction))
    return messages


def _baresip_messages(log: str) -> list[SipMessage]:
    """The SIP messages of baresip's ``-s`` trace (each framed by colour escapes), in order."""
    return [
        parse_sip_message(m[4], transport=m[1], direction=f"{m[2]} -> {m[3]}")
        for m in _BARESIP_TRACE.finditer(log)
    ]


def _invite_and_answer(messages: Iterable[SipMessage]) -> tuple[SipMessage, SipMessage]:
    """The first INVITE and the first 200 OK to an INVITE among ``messages``."""
    listed = list(messages)
    invite = next(m for m in listed if not m.is_response and m.method == "INVITE")
    answer = next(m for m in listed if m.status == 200 and m.method == "INVITE")
    return invite, answer


def _crypto_lines(sdp: str) -> list[str]:
    return [line.strip() for line in sdp.splitlines() if line.startswith("a=crypto:")]


def _audio_proto(sdp: str) -> str:
    line = next(line for line in sdp.splitlines() if line.startswith("m=audio "))
    return line.split()[2]


def _sdes_key(sdp: str) -> tuple[str, bytes]:
    """(base64 text, 30 raw bytes) of the one AES_CM_128_HMAC_SHA1_80 key in ``sdp``."""
    lines = _crypto_lines(sdp)
    assert len(lines) == 1 and " AES_CM_128_HMAC_SHA1_80 inline:" in lines[0], lines
    text = lines[0].split("inline:", 1)[1].split("|", 1)[0].split()[0]
    raw = base64.b64decode(text + "=" * (-len(text) % 4))
    assert len(raw) == 30, text
    return text, raw


# -- helpers: RTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rtp:
    """The clear header fields of one captured RTP/SRTP packet."""

    marker: bool
    pt: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes  # everything after the 12-byte header (SRTP: ciphertext and tag)

    @classmethod
    def parse(cls, data: bytes) -> Rtp:
        assert data[0] >> 6 == 2 and data[0] & 0x3F == 0, f"unexpected RTP header {data[:12].hex()}"
        seq, timestamp, ssrc = struct.unpack_from("!HII", data, 2)
        return cls(bool(data[1] & 0x80), data[1] & 0x7F, seq, timestamp, ssrc, data[12:])


def _flow(capture: LoopbackCapture, src: Iterable[int], dst: Iterable[int]) -> list[UdpPacket]:
    """RTP packets from any of ``src`` to any of ``dst`` ports, in capture order."""
    sources, destinations = set(src), set(dst)
    return [p for p in capture.rtp_packets() if p.src[1] in sources and p.dst[1] in destinations]


def _even(ports: Iterable[int]) -> list[int]:
    return [p for p in ports if p % 2 == 0]


def _entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte (8.0 for uniformly random bytes)."""
    counts = Counter(data)
    return -sum(n / len(data) * math.log2(n / len(data)) for n in counts.values())


def _srtp_inbound(key_salt: bytes) -> pylibsrtp.Session:
    """A libsrtp receive context for AES_CM_128_HMAC_SHA1_80 with ``key_salt``."""
    policy = pylibsrtp.Policy(
        key=key_salt,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy)


def _decrypt_all(packets: Iterable[UdpPacket], key_salt: bytes) -> list[bytes | None]:
    """Each packet unprotected with ``key_salt`` (the RTP payload), or None where libsrtp refuses it."""
    session = _srtp_inbound(key_salt)
    out: list[bytes | None] = []
    for packet in packets:
        try:
            out.append(session.unprotect(packet.payload)[12:])
        except pylibsrtp.Error:
            out.append(None)
    return out


def _tonal(path: Path) -> tuple[float, float]:
    """(seconds of audible audio, share of the spectrum at the played tones) of a recording."""
    samples, rate = read_wav(path)
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    at_tones = sum(spectrum[np.abs(freqs - f) < 15].sum() for f in TONES)
    return wav_stats(path).active_s, float(at_tones / max(spectrum.sum(), 1.0))


# -- helpers: peers -------------------------------------------------------------------------------


class SrtpBaresip(Baresip):
    """baresip with the ``srtp`` module and ``;mediaenc=srtp-mand``: it offers RTP/SAVP with SDES keys
    and insists on SRTP (the call fails rather than fall back to plain RTP)."""

    def account_line(self) -> str:
        return super().account_line() + ";mediaenc=srtp-mand"

    def config_text(self) -> str:
        return super().config_text() + "module\tsrtp.so\n"


def _srtp_server(tmp_path: Path) -> SipagentServer:
    """``sipagent serve`` with ``[sip] srtp = "required"`` on UDP and TLS (a throw-away certificate)."""
    pki = make_test_pki(tmp_path / "pki")
    return SipagentServer.with_tls(tmp_path / "server", pki, config_text='[sip]\nsrtp = "required"\n')


def _srtp_baresip(tmp_path: Path, server: SipagentServer, seconds: float) -> SrtpBaresip:
    """baresip dialling ``server`` over TLS with mandatory SRTP, playing ``seconds`` of tones, with its
    SIP trace (``-s``) on so the test can read both SDES keys."""
    wav = write_wav(tmp_path / "mic.wav", tone_sequence(seconds, tones_hz=TONES))
    return SrtpBaresip(
        tmp_path / "baresip",
        audio_wav=wav,
        transport="tls",
        dial=f"sip:echo@{HOST}:{server.tls_port};transport=tls",
        extra_args=("-s",),
    )


def _wait_count(baresip: Baresip, event_type: str, count: int, timeout: float) -> list[BaresipEvent]:
    """Wait until baresip has reported ``count`` events of ``event_type``; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in baresip.events() if e.type == event_type]
        if len(events) >= count:
            return events
        if time.monotonic() > deadline:
            seen = [(e.type, e.data.get("param")) for e in baresip.events()]
            raise AssertionError(f"baresip: {len(events)}/{count} {event_type} within {timeout}s: {seen}")
        time.sleep(0.02)


# -- 1. DTMF from sipp ----------------------------------------------------------------------------


def _pcap_digit(path: Path) -> tuple[str, int]:
    """The digit a sipp RFC 2833 pcap presses and its final duration in ms (8 kHz clock)."""
    events = [Rtp.parse(p.payload).payload for p in read_udp_packets(path)]
    ends = [e for e in events if e[1] & 0x80]
    assert ends, path
    code, _, duration = struct.unpack("!BBH", ends[-1][:4])
    return DTMF_DIGITS[code], duration * 1000 // 8000


def test_sipp_rfc2833_digits_are_logged_once_in_order(tmp_path: Path) -> None:
    skips.require("sipp")
    pcaps = [SIPP_PCAPS / f"dtmf_2833_{name}.pcap" for name in ("1", "2", "3", "4", "pound")]
    missing = [str(p) for p in pcaps if not p.is_file()]
    if missing:  # they ship with sip-tester, like sipp itself
        reason = f"sipp's RFC 2833 pcaps are missing: {missing}"
        if os.environ.get("SIPAGENT_REQUIRE_PEERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    expected = [_pcap_digit(p) for p in pcaps]
    assert [d for d, _ in expected] == ["1", "2", "3", "4", "#"]
    with SipagentServer(tmp_path / "server") as server:
        result = run_sipp(
            scenario_path("uac_call_dtmf"), server.address, workdir=tmp_path / "sipp", service="echo",
            keys={f"d{i}": str(p) for i, p in enumerate(pcaps, 1)}, timeout=20,
        )  # fmt: skip
        result.assert_ok()
        log = server.log()
    logged = _logged_digits(log)
    call_ids = {m.call_id for m in result.sent() if not m.is_response and m.method == "INVITE"}
    # Each pcap presses one key for 280 ms and sends its end packet three times (same sequence
    # number): one line per key, in order, with the duration the capture carries.
    assert [(digit, ms) for _, digit, ms in logged] == expected, log[-3000:]
    assert {call for call, _, _ in logged} == call_ids


# -- 2. DTMF from baresip, echoed back, decoded by baresip and checked on the wire -----------------


def _telephone_events(packets: list[UdpPacket], pt: int) -> list[list[tuple[int, UdpPacket, Rtp]]]:
    """Telephone-event packets grouped per event (one RTP timestamp each), in sending order, each
    with its index in ``packets``."""
    groups: dict[int, list[tuple[int, UdpPacket, Rtp]]] = {}
    for index, packet in enumerate(packets):
        rtp = Rtp.parse(packet.payload)
        if rtp.pt == pt:
            groups.setdefault(rtp.timestamp, []).append((index, packet, rtp))
    return list(groups.values())


def test_baresip_dtmf_reaches_sipagent_and_the_echoed_events_reach_baresip(tmp_path: Path) -> None:
    skips.require("baresip")
    skips.require_capture()
    digits = "159#*0"
    with SipagentServer(tmp_path / "server") as server:
        wav = write_wav(tmp_path / "mic.wav", tone_sequence(15.0, tones_hz=TONES))
        baresip = Baresip(tmp_path / "baresip", audio_wav=wav, dial=f"sip:echo@{server.address}")
        ports = [*server.rtp_ports, *range(baresip.rtp_port_min, baresip.rtp_port_max + 1)]
        with LoopbackCapture(tmp_path / "capture", ports) as capture, baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            time.sleep(0.5)
            for count, digit in enumerate(digits, 1):
                # One key per command, each echo back before the next key (see the docstring).
                assert baresip.command("sndcode", digit).data.get("ok"), digit
                # The echo comes back before the next key: each is its own event.
                _wait_count(baresip, "CALL_DTMF_START", count, timeout=5)
            time.sleep(0.3)  # the echo's last end packets
            baresip.hangup()
            baresip.wait_for_event("CALL_CLOSED", timeout=10)
        log = server.log()

    # sipagent heard each key once, in order.
    logged = _logged_digits(log)
    assert "".join(digit for _, digit, _ in logged) == digits, log[-3000:]

    # baresip decoded our events: the same keys, in order, each started and ended once.
    starts = [e.data.get("param") for e in baresip.events() if e.type == "CALL_DTMF_START"]
    assert "".join(str(s) for s in starts) == digits
    assert len([e for e in baresip.events() if e.type == "CALL_DTMF_END"]) == len(digits)

    # On the wire (RFC 4733 §2.5): per key one RTP timestamp; the marker bit on its first packet
    # only; updates with growing durations and no audio in between (audio is held back for the
    # event); the final packet (E bit, the logged length) three times, each a packet of its own;
    # the audio that follows starts a talkspurt (marker bit). (Not checked: the repeats' spacing in
    # time; a late timer legitimately sends missed ticks back to back.)
    te_pts = {m[1] for m in re.finditer(r"a=rtpmap:(\d+) telephone-event/8000", log)}
    assert len(te_pts) == 1, te_pts
    pt = int(te_pts.pop())
    sent = _flow(capture, server.rtp_ports, _even(range(baresip.rtp_port_min, baresip.rtp_port_max + 1)))
    stream = [Rtp.parse(p.payload) for p in sent]
    events = _telephone_events(sent, pt)
    assert len(events) == len(digits), [[rtp.payload[:4].hex() for _, _, rtp in e] for e in events]
    for (_, digit, ms), event in zip(logged, events, strict=True):
        rtps = [rtp for _, _, rtp in event]
        fields = [struct.unpack("!BBH", rtp.payload[:4]) for rtp in rtps]
        assert {DTMF_DIGITS[code] for code, _, _ in fields} == {digit}
        assert [rtp.marker for rtp in rtps] == [True] + [False] * (len(rtps) - 1)
        assert not any(flags & 0x40 for _, flags, _ in fields)  # the R bit is reserved (zero)
        ends = [i for i, (_, flags, _) in enumerate(fields) if flags & 0x80]
        assert ends == [len(fields) - 3, len(fields) - 2, len(fields) - 1], fields
        assert {fields[i][2] for i in ends} == {ms * 8}  # the logged length (8 kHz clock)
        durations = [duration for _, _, duration in fields[: ends[0] + 1]]
        assert durations == sorted(set(durations)), durations
        first, final = event[0][0], event[ends[0]][0]
        assert final - first == ends[0], "audio sent during the event"
        seqs = [rtp.seq for rtp in stream[first : final + 1]]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs
        assert len({rtp.seq for rtp in rtps}) == len(rtps)  # repeats are new packets, not copies
        resumed = next(rtp for rtp in stream[final + 1 :] if rtp.pt != pt)
        assert resumed.marker


# -- 3. SRTP (SDES) with baresip ------------------------------------------------------------------


def test_srtp_call_with_baresip_is_encrypted_on_the_wire(tmp_path: Path) -> None:
    skips.require("baresip", "openssl")
    skips.require_capture()
    with _srtp_server(tmp_path) as server:
        baresip = _srtp_baresip(tmp_path, server, seconds=4.0)
        ports = [*server.rtp_ports, *range(baresip.rtp_port_min, baresip.rtp_port_max + 1)]
        with LoopbackCapture(tmp_path / "capture", ports) as capture, baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            baresip.wait_for_event("CALL_CLOSED", timeout=15)  # the 4 s microphone file ends the call
        log = server.log()

    # Signalling: RTP/SAVP with one SDES key each way; sipagent logged both SDPs with the keys
    # redacted, and neither real key (known from baresip's own trace) appears in its log.
    invite, answer = _invite_and_answer(_sipagent_messages(log, "recv") + _sipagent_messages(log, "send"))
    assert _audio_proto(invite.body) == "RTP/SAVP" and _audio_proto(answer.body) == "RTP/SAVP"
    assert _crypto_lines(invite.body) == ["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***"]
    assert _crypto_lines(answer.body) == ["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***"]
    assert not re.search(r"inline:(?!\*\*\*)", log)
    trace_invite, trace_answer = _invite_and_answer(_baresip_messages(baresip.log_text()))
    offer_text, offer_key = _sdes_key(trace_invite.body)  # baresip's key
    answer_text, answer_key = _sdes_key(trace_answer.body)  # sipagent's key
    assert offer_key != answer_key
    for secret in (offer_text, answer_text, offer_text.rstrip("="), answer_text.rstrip("=")):
        assert secret not in log

    # Audio both ways: baresip heard its tones back.
    active, tonal = _tonal(baresip.recording())
    assert active >= 2.5 and tonal > 0.5, (active, tonal, baresip.log_text()[-2000:])

    # On the wire it is SRTP: 20 ms PCMU plus an 80-bit tag each way, and it opens (with libsrtp,
    # independently of sipagent's code) only with the key its sender's SDP carried.
    agent_port = int(answer.body.split("m=audio ", 1)[1].split()[0])
    baresip_port = int(invite.body.split("m=audio ", 1)[1].split()[0])
    uplink = _flow(capture, [baresip_port], [agent_port])
    downlink = _flow(capture, [agent_port], [baresip_port])
    assert len(uplink) >= 150 and len(downlink) >= 150, capture.describe()
    assert all(Rtp.parse(p.payload).pt == 0 and len(p.payload) == SRTP_PCMU_PACKET for p in uplink + downlink)
    up_clear = _decrypt_all(uplink, offer_key)
    down_clear = _decrypt_all(downlink, answer_key)
    assert None not in up_clear and None not in down_clear
    assert set(_decrypt_all(uplink[:20], answer_key)) == {None}
    assert set(_decrypt_all(downlink[:20], offer_key)) == {None}
    up_plain = [c for c in up_clear if c is not None]
    down_plain = [c for c in down_clear if c is not None]

    # Inside: baresip's tones (its μ-law differs from the harness's by one step here and there, so
    # compare waveforms), and the echo carries exactly the G.711 bytes baresip sent.
    played, _ = read_wav(tmp_path / "mic.wav")
    heard = ulaw_decode(b"".join(up_plain))
    n = min(len(heard), len(played))
    assert np.corrcoef(heard[:n].astype(np.float64), played[:n].astype(np.float64))[0, 1] > 0.99
    assert sum(c in set(up_plain) for c in down_plain) >= 0.95 * len(down_plain)

    # And encrypted: no payload on the wire is its plaintext (plain RTP would carry exactly those
    # bytes), and the ciphertext looks random while the same G.711 tones in clear are far from it.
    for flow, plain in ((uplink, up_plain), (downlink, down_plain)):
        ciphertext = [p.payload[12:-10] for p in flow]
        assert not set(plain).intersection(ciphertext)
        assert _entropy(b"".join(ciphertext)) > 7.9
        assert _entropy(b"".join(plain)) < 7.5


# -- 4. Forged SRTP: rejected, counted, and unable to move the media ---------------------------


def test_forged_srtp_packets_are_rejected_and_do_not_steal_the_media(tmp_path: Path) -> None:
    skips.require("baresip", "openssl")
    skips.require_capture()
    burst, late = 24, 1
    with _srtp_server(tmp_path) as server:
        baresip = _srtp_baresip(tmp_path, server, seconds=10.0)
        baresip_ports = list(range(baresip.rtp_port_min, baresip.rtp_port_max + 1))
        ports = [*server.rtp_ports, *baresip_ports]
        with baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            # A first capture to copy a genuine SRTP packet of baresip's from.
            with LoopbackCapture(tmp_path / "sample", ports, name="sample") as sample:
                time.sleep(1.0)
            genuine = [p for p in sample.rtp_packets() if p.src[1] in baresip_ports]
            assert genuine, sample.describe()
            template = genuine[-1]
            agent_port = template.dst[1]
            baresip_port = template.src[1]
            assert agent_port in server.rtp_ports

            with (
                LoopbackCapture(tmp_path / "capture", ports) as capture,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger,
            ):
                forger.bind((HOST, 0))
                forger_port = forger.getsockname()[1]
                forged = []
                seq = Rtp.parse(template.payload).seq
                for index in range(burst + late):
                    forgery = bytearray(template.payload)
                    # A sequence number sipagent has not seen yet (an exact copy would only be a
                    # replay) and one flipped ciphertext bit: only the authentication tag can tell.
                    struct.pack_into("!H", forgery, 2, (seq + 1000 + index) & 0xFFFF)
                    forgery[12 + index % 160] ^= 0x01
                    forged.append(bytes(forgery))
                for datagram in forged[:burst]:
                    forger.sendto(datagram, (HOST, agent_port))
                    time.sleep(0.02)
                # sipagent reports rejections at most once a second: the late one reports the burst.
                time.sleep(1.3)
                for datagram in forged[burst:]:
                    forger.sendto(datagram, (HOST, agent_port))
                time.sleep(1.0)
                forger.setblocking(False)
                with pytest.raises(BlockingIOError):
                    forger.recv(2048)  # nothing came back to the forger
            baresip.hangup()
            baresip.wait_for_event("CALL_CLOSED", timeout=10)
        log = server.log()

    # The forgeries reached sipagent's RTP port...
    assert capture.count(forger_port, agent_port) == burst + late, capture.describe()
    # ...every one failed authentication and was counted (a clean call logs at most baresip's two
    # unprotected RTCP packets, see the module docstring).
    rejected = sum(int(n) for n in _SRTP_REJECTED.findall(log))
    assert rejected >= burst + late, log[-3000:]
    # ...and did not move the media: nothing went to the forger, the echo kept going to baresip.
    assert capture.count(agent_port, forger_port) == 0
    destinations = {p.dst[1] for p in capture.packets() if p.src[1] == agent_port}
    assert destinations == {baresip_port}, capture.describe()
    window = capture.packets()[-1].timestamp - capture.packets()[0].timestamp
    assert capture.rtp_count(src_port=agent_port, dst_port=baresip_port) >= 0.8 * window / 0.02
    active, tonal = _tonal(baresip.recording())
    assert active >= 3.0 and tonal > 0.5, (active, tonal)


# -- 5. Plain RTP offered to an SRTP-required server ---------------------------------------------


def test_plain_rtp_offer_to_srtp_required_server_gets_488(tmp_path: Path) -> None:
    skips.require("sipp", "openssl")
    with _srtp_server(tmp_path) as server:
        result = run_sipp(
            scenario_path("uac_offer_refused_488"), server.address, workdir=tmp_path / "sipp",
            service="echo", timeout=15,
        )  # fmt: skip
        result.assert_ok()
        log = server.log()
    finals = [m for m in result.received() if m.status is not None and m.status >= 200]
    # One final answer, 488, never retransmitted: sipagent matched the ACK to its transaction.
    assert [m.status for m in finals] == [488], result.describe()
    refusal = finals[0]
    assert (refusal.header("Warning") or "").startswith("304 ")
    assert "SRTP is required" in refusal.start_line
    assert "ended: rejected-488" in log
    # The ports bound for the call were released without a packet either way.
    media = re.findall(r"media: received (\d+), sent (\d+)", log)
    assert media == [("0", "0")], media
