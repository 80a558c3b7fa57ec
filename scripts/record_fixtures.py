#!/usr/bin/env python3
"""Record whole calls of real SIP peers talking to ``sipagent serve --mode echo`` into ``fixtures/``.

Each recording starts its own sipagent (as the interop tests do, :class:`peers.sipagent_proc.
SipagentServer`), a dumpcap capture on loopback (:class:`peers.capture.LoopbackCapture`) of
sipagent's SIP port, its RTP ports and the peer's media ports, and one call:

* ``recorded-sipp-echo-goforward``: sipp (``peers/scenarios/uac_call_echo.xml``) plays the caller
  RTP of ``fixtures/speech-goforward.pcap`` (``play_pcap_audio``); sipagent echoes it;
* ``recorded-sipp-dtmf``: sipp (``peers/scenarios/uac_call_dtmf.xml``) plays the RFC 2833 digit
  pcaps that ship with sipp (``/usr/share/sip-tester/dtmf_2833_{1,2,3,4,pound}.pcap``);
* ``recorded-baresip-echo-cards``: baresip dials in with ``speech-cards-001``'s 8 kHz audio as its
  microphone (a WAV; baresip hangs up when the file ends) and hears the echo.

The capture's sentinel datagrams are dropped and the rest is rewritten with
:func:`sipagent.pcapio.write_udp`. The manifest entries (``recorded: true``) are merged into
``fixtures/manifest.json``. The recordings are committed, not remade in CI: ports, SSRCs and times
differ on every run. Needs the Debian packages sip-tester, baresip and tshark (dumpcap), and root or
dumpcap's capture capabilities.

Usage::

    .venv/bin/python scripts/record_fixtures.py [--only recorded-sipp-dtmf] [--out fixtures/] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# peers (the real-peer harness the tests use too) and make_fixtures come from the checkout, not an install.
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

import make_fixtures as mf  # noqa: E402

from peers.audio import write_wav  # noqa: E402
from peers.baresip import Baresip  # noqa: E402
from peers.capture import LoopbackCapture  # noqa: E402
from peers.ports import free_port_block  # noqa: E402
from peers.sipagent_proc import SipagentServer  # noqa: E402
from peers.sipp import run_sipp, scenario_path  # noqa: E402
from sipagent.pcapio import UdpDatagram, read_udp, write_udp  # noqa: E402
from sipagent.rtp.packet import RtpPacket, RtpParseError, is_rtcp_packet  # noqa: E402
from sipagent.sip.errors import RemoteProtocolError  # noqa: E402
from sipagent.sip.message import Request, Response, parse_message  # noqa: E402
from sipagent.sip.sdp import parse_sdp  # noqa: E402

SIPP_PCAPS = Path("/usr/share/sip-tester")
DTMF_FILES = ("1", "2", "3", "4", "pound")
ECHO_LEG = (
    "sipagent serve --mode echo sends each caller packet back from its RTP port to the caller's: same "
    "payload type and payload, sipagent's own SSRC and sequence numbers, timestamps rebased with the "
    "caller's spacing kept"
)
Endpoint = tuple[str, int]


def package_version(package: str) -> str:
    """The installed Debian package version, for the manifest."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def _sip(datagram: UdpDatagram) -> Request | Response | None:
    if not datagram.payload or datagram.payload[0] & 0xC0 == 0x80:  # RTP/RTCP; SIP starts with ASCII
        return None
    try:
        return parse_message(datagram.payload)
    except RemoteProtocolError:
        return None


def _sdp_endpoint(body: bytes) -> Endpoint:
    sd = parse_sdp(body)
    media = next(m for m in sd.media if m.media == "audio")
    connection = sd.media_connection(media)
    if connection is None:
        raise SystemExit("SDP without c= for its audio stream")
    return connection.address, media.port


def _rtp_between(
    datagrams: Sequence[UdpDatagram], src: Endpoint, dst: Endpoint
) -> list[tuple[float, RtpPacket]]:
    packets = []
    for d in datagrams:
        if d.src != src or d.dst != dst or is_rtcp_packet(d.payload):
            continue
        try:
            packets.append((d.time, RtpPacket.parse(d.payload)))
        except RtpParseError:
            continue
    return packets


def describe_call(datagrams: Sequence[UdpDatagram]) -> dict[str, Any]:
    """Manifest fields read back from a captured call: endpoints, Call-ID, counts, durations."""
    invite = answer = None
    invite_dg = None
    last_sip = datagrams[-1].time
    for d in datagrams:
        message = _sip(d)
        if message is None:
            continue
        last_sip = d.time
        if isinstance(message, Request) and message.method == "INVITE" and invite is None:
            invite, invite_dg = message, d
        elif (
            isinstance(message, Response)
            and message.status == 200
            and message.cseq().method == "INVITE"
            and answer is None
        ):
            answer = message
    if invite is None or answer is None or invite_dg is None:
        raise SystemExit("the capture holds no INVITE answered 200")
    caller_rtp, agent_rtp = _sdp_endpoint(invite.body), _sdp_endpoint(answer.body)
    caller = _rtp_between(datagrams, caller_rtp, agent_rtp)
    echo = _rtp_between(datagrams, agent_rtp, caller_rtp)
    if not caller:
        raise SystemExit(f"no RTP from the caller {caller_rtp} to sipagent {agent_rtp} in the capture")
    answer_pts = parse_sdp(answer.body).media[0].payload_types()
    codec = {0: "PCMU", 8: "PCMA"}.get(answer_pts[0], str(answer_pts[0]))
    start = datagrams[0].time
    return {
        "recorded_at": datetime.datetime.fromtimestamp(start, datetime.UTC).strftime("%Y-%m-%d"),
        "duration_s": round(caller[-1][0] - caller[0][0] + mf.PTIME_MS / 1000, 3),
        "call_duration_s": round(last_sip - start, 3),
        "codec": codec,
        "payload_type": answer_pts[0],
        "ptime_ms": mf.PTIME_MS,
        "call_id": invite.call_id(),
        "caller_sip": {"address": invite_dg.src[0], "port": invite_dg.src[1]},
        "agent_sip": {"address": invite_dg.dst[0], "port": invite_dg.dst[1]},
        "caller_rtp": {"address": caller_rtp[0], "port": caller_rtp[1]},
        "agent_rtp": {"address": agent_rtp[0], "port": agent_rtp[1]},
        "packet_count": len(caller),
        "caller_payload_types": sorted({p.payload_type for _, p in caller}),
        "echo_packet_count": len(echo),
        "legs": ["caller", "echo"],
        "echo_leg": ECHO_LEG,
    }


def save_capture(capture: LoopbackCapture, dest: Path) -> list[UdpDatagram]:
    """The capture without its sentinel datagrams, written to ``dest`` with pcapio."""
    datagrams = [d for d in read_udp(capture.pcap_path) if capture.sentinel_port not in (d.src[1], d.dst[1])]
    if not datagrams:
        raise SystemExit(f"empty capture {capture.pcap_path}")
    write_udp(dest, datagrams)
    return datagrams


@dataclass(frozen=True)
class Recording:
    """One recorded call: its name and how to make it."""

    name: str
    description: str
    peer: str  # Debian package of the peer
    record: Callable[[RecordContext, Path], dict[str, Any]]

    @property
    def file(self) -> str:
        """The capture's file name in fixtures/."""
        return f"{self.name}.pcap"


@dataclass(frozen=True)
class RecordContext:
    """Where things are."""

    out: Path
    speech_dir: Path
    workdir: Path


def _sipp_call(
    ctx: RecordContext, name: str, dest: Path, scenario: str, keys: dict[str, str], duration_ms: int | None
) -> list[UdpDatagram]:
    work = ctx.workdir / name
    with SipagentServer(work / "server") as server:
        media_port = free_port_block(4)
        ports = [server.sip_port, media_port, media_port + 1, *server.rtp_ports]
        with LoopbackCapture(work / "capture", ports) as capture:
            result = run_sipp(
                scenario_path(scenario), server.address, workdir=work / "sipp", media_port=media_port,
                service="echo", keys=keys, duration_ms=duration_ms, timeout=30,
            )  # fmt: skip
        if not result.ok:
            raise SystemExit(f"{name}: the sipp call failed\n{result.describe()}\n{server.log()[-3000:]}")
    return save_capture(capture, dest)


def record_sipp_echo(ctx: RecordContext, dest: Path) -> dict[str, Any]:
    """sipp plays the caller leg of speech-goforward.pcap to the echo service."""
    source = ctx.out / "speech-goforward.pcap"
    if not source.is_file():
        raise SystemExit(f"{source} missing: run scripts/make_fixtures.py first")
    manifest = mf.load_manifest(ctx.out)
    entry = manifest.get("speech-goforward.pcap", {})
    caller = (entry["caller_rtp"]["address"], entry["caller_rtp"]["port"]) if entry else mf.CALLER_RTP
    # sipp plays every UDP datagram of the file as media: give it the caller's RTP only.
    rtp_only = [d for d in read_udp(source) if d.src == caller]
    audio = ctx.workdir / "goforward-rtp.pcap"
    write_udp(audio, rtp_only)
    seconds = len(rtp_only) * mf.PTIME_MS / 1000
    datagrams = _sipp_call(
        ctx, "sipp-echo", dest, "uac_call_echo", {"pcap": str(audio)}, round(seconds * 1000) + 500
    )
    return {
        **describe_call(datagrams),
        "source": "the caller RTP of fixtures/speech-goforward.pcap, played by sipp's play_pcap_audio "
        "(RTP headers as in that file: sipp rewrites addresses and ports only)",
        "transcript": entry.get("transcript", "go forward ten meters"),
    }


def record_sipp_dtmf(ctx: RecordContext, dest: Path) -> dict[str, Any]:
    """sipp sends the digits 1 2 3 4 # from its own RFC 2833 pcaps."""
    files = [SIPP_PCAPS / f"dtmf_2833_{digit}.pcap" for digit in DTMF_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"missing sipp digit pcaps (Debian package sip-tester): {missing}")
    keys = {f"d{i}": str(path) for i, path in enumerate(files, 1)}
    datagrams = _sipp_call(ctx, "sipp-dtmf", dest, "uac_call_dtmf", keys, None)
    return {
        **describe_call(datagrams),
        "source": "sipp's " + ", ".join(f.name for f in files) + " (Debian sip-tester), 500 ms apart",
        "digits": "1234#",
        "event_payload_type": 101,
        "rtp_end_retransmit_same_seq": True,
        "quirks": "sipp's 2005 digit pcaps repeat the end packet with the SAME sequence number (3 times, "
        "within 0.1 ms), count durations 320 per 20 ms packet (2240 at the end of a 140 ms event), and "
        "each digit has its own timestamp/sequence base (increasing for 1 2 3 4 #); there is no audio",
    }


def record_baresip_echo(ctx: RecordContext, dest: Path) -> dict[str, Any]:
    """baresip calls the echo service with speech-cards-001's audio as its microphone."""
    build = mf.speech_builder("cards-001")(mf.BuildContext(ctx.speech_dir))
    work = ctx.workdir / "baresip-echo"
    work.mkdir(parents=True, exist_ok=True)
    wav = write_wav(work / "cards-001-8k.wav", build.pcm)
    with SipagentServer(work / "server") as server:
        baresip = Baresip(work / "baresip", audio_wav=wav, dial=f"sip:echo@{server.address}")
        ports = [server.sip_port, *server.rtp_ports, *range(baresip.rtp_port_min, baresip.rtp_port_max + 1)]
        with LoopbackCapture(work / "capture", ports) as capture, baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            baresip.wait_for_event("CALL_CLOSED", timeout=20)  # the aufile microphone hangs up at EOF
        if "ended: remote-bye" not in server.log():
            raise SystemExit(f"baresip call did not end with its BYE:\n{server.log()[-3000:]}")
    datagrams = save_capture(capture, dest)
    call = describe_call(datagrams)
    caller = (call["caller_rtp"]["address"], call["caller_rtp"]["port"])
    agent = (call["agent_rtp"]["address"], call["agent_rtp"]["port"])
    sent = [p for _, p in _rtp_between(datagrams, caller, agent)]
    tail = next((i for i, p in enumerate(reversed(sent)) if set(p.payload) != {0xFF}), len(sent))
    return {
        **call,
        "source": "speech-cards-001's 8 kHz audio (before G.711) as baresip's WAV microphone (aufile); "
        "baresip encodes it itself, and hangs up when the file ends",
        "transcript": build.manifest["transcript"],
        "mic_audio_s": round(len(build.pcm) / mf.RATE, 3),
        "trailing_digital_silence_s": round(tail * mf.PTIME_MS / 1000, 3),
        "quirks": "baresip sends the WAV sample-exact, then digital silence (PCMU 0xFF) until its BYE "
        "(trailing_digital_silence_s); RTCP goes to RTP port + 1 both ways (rtcp_mux no): an APP "
        "'PING' right after the 200, SR/SDES + BYE at hang-up",
    }


RECORDINGS: tuple[Recording, ...] = (
    Recording(
        "recorded-sipp-echo-goforward",
        "sipp calls sipagent's echo service and plays 'go forward ten meters'; both legs",
        "sip-tester",
        record_sipp_echo,
    ),
    Recording(
        "recorded-sipp-dtmf",
        "sipp calls sipagent's echo service and sends RFC 2833 digits 1 2 3 4 #; both legs",
        "sip-tester",
        record_sipp_dtmf,
    ),
    Recording(
        "recorded-baresip-echo-cards",
        "baresip calls sipagent's echo service speaking 'ten of clubs' and hears it back; both legs",
        "baresip",
        record_baresip_echo,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", action="append", metavar="NAME", help="record only this call (repeatable)")
    parser.add_argument("--out", type=Path, default=mf.DEFAULT_OUT, help="fixtures directory")
    parser.add_argument("--speech-dir", type=Path, default=mf.DEFAULT_SPEECH_DIR, help="shared/speech")
    parser.add_argument("--keep", type=Path, help="keep the logs and raw captures in this directory")
    args = parser.parse_args(argv)
    by_name = {r.name: r for r in RECORDINGS}
    wanted = [n.removesuffix(".pcap") for n in args.only or []]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        parser.error(f"unknown recording(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    selected = [by_name[n] for n in wanted] if wanted else list(RECORDINGS)
    programs = {"sipp": "sip-tester", "baresip": "baresip", "dumpcap": "tshark (wireshark-common)"}
    missing = [f"{p} (Debian package {pkg})" for p, pkg in programs.items() if shutil.which(p) is None]
    if missing:
        print("missing: " + ", ".join(missing) + "; scripts/install-peers.sh installs them", file=sys.stderr)
        return 1
    out: Path = args.out
    entries = []
    with tempfile.TemporaryDirectory(prefix="record-fixtures-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = RecordContext(out=out, speech_dir=args.speech_dir, workdir=workdir)
        for recording in selected:
            staged = workdir / recording.file
            details = recording.record(ctx, staged)
            shutil.copyfile(staged, out / recording.file)  # only a complete recording replaces a fixture
            entry = {
                "file": recording.file,
                "description": recording.description,
                "recorded": True,
                "made_by": "scripts/record_fixtures.py",
                "peer": f"{recording.peer} {package_version(recording.peer)}",
                "agent": "sipagent serve --mode echo",
                **details,
            }
            size = (out / recording.file).stat().st_size
            counts = f"{entry['packet_count']:4} caller / {entry['echo_packet_count']:4} echo packets"
            print(f"{recording.file:36} {counts} {entry['duration_s']:5.2f} s {size:7} bytes")
            entries.append(entry)
    mf.update_manifest(out, entries, drop_unknown=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
