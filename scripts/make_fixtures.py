#!/usr/bin/env python3
"""Build the synthetic whole-call captures in ``fixtures/`` and their ``manifest.json``.

Every capture is one complete inbound call, as a carrier would deliver it to sipagent: INVITE with
an SDP offer (PCMU 0, PCMA 8, telephone-event 101), 100/180/200 with the answer from a fixed
"sipagent" address, ACK, the caller's RTP leg (20 ms PCMU packets) and BYE/200. Only the caller's
leg is synthetic; captures of real peers talking to sipagent (both legs) come from
``scripts/record_fixtures.py``. The phone agent's fixtures (``agent-*``) are in ``agent_fixtures.py``;
the signal helpers, the fixture type and the builders' inputs shared with it are in ``fixturekit.py``
(this script imports both, and neither imports it back).

The output is deterministic, byte for byte: fixed start time, addresses, ports, Call-IDs and SSRCs,
and seeded noise from numpy's legacy ``RandomState``, whose streams numpy promises never to change
(``Generator`` streams may change between numpy releases). ``tests/test_fixtures.py`` rebuilds a
fixture into a temporary directory and compares bytes with the committed file.

Usage::

    .venv/bin/python scripts/make_fixtures.py                    # every fixture into fixtures/
    .venv/bin/python scripts/make_fixtures.py --only dtmf-1234   # one (repeatable)
    .venv/bin/python scripts/make_fixtures.py --out /tmp/fx --speech-dir ../shared/speech

``synthetic-espeak`` needs the Debian package ``espeak-ng``; without it that fixture is skipped and
the committed file and manifest entry are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import wave
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from agent_fixtures import AGENT_FIXTURES
from fixturekit import (
    FRAME,
    FULL_SCALE,
    LEAD_S,
    TRAIL_S,
    CallAudio,
    DtmfEvent,
    Fixture,
    Signal,
    dbfs,
    fade,
    noise,
    noise_floor,
    pad_to_frames,
    padded_speech,
    resample,
    to_pcm,
    turn_record,
)

# Re-exported (``as``): scripts/record_fixtures.py uses them as ``make_fixtures.<name>``.
from fixturekit import PTIME_MS as PTIME_MS
from fixturekit import RATE as RATE
from fixturekit import BuildContext as BuildContext
from noisy_fixtures import NOISY_FIXTURES
from speech_truth import METHOD, SOURCE_RATE, clip_truth

from sipagent.pcapio import UdpDatagram, write_udp
from sipagent.rtp import g711
from sipagent.rtp.packet import RtpPacket
from sipagent.sip.message import Headers, Request, Response
from sipagent.sip.sdp import Connection, MediaDescription, Origin, SessionDescription

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures"
DEFAULT_SPEECH_DIR = REPO.parent / "shared" / "speech"
MANIFEST = "manifest.json"

Endpoint = tuple[str, int]

PT_PCMU = 0
PT_EVENT = 101

#: 2023-11-14 22:13:20 UTC: every call starts here.
START_TIME = 1_700_000_000.0
# RFC 5737 documentation addresses: a carrier-side caller and the sipagent box.
CALLER_SIP: Endpoint = ("192.0.2.10", 5060)
CALLER_RTP: Endpoint = ("192.0.2.10", 49170)
AGENT_SIP: Endpoint = ("192.0.2.20", 5060)
AGENT_RTP: Endpoint = ("192.0.2.20", 10000)
CALLER_NUMBER = "+15550100"
AGENT_USER = "agent"

# When each part of the call happens, seconds after START_TIME (RTP starts at FIRST_RTP).
T_TRYING, T_RINGING, T_OK, T_ACK, FIRST_RTP = 0.002, 0.030, 0.250, 0.262, 0.300
BYE_AFTER_RTP = 0.200
#: Arrival jitter of each RTP packet, uniform in [0, JITTER_S): a quiet LAN, never reorders.
JITTER_S = 0.0008

#: RFC 4733 events: ~100 ms (5 updates), the end packet sent 3 times, audio paused meanwhile.
EVENT_UPDATES = 5
EVENT_END_REPEATS = 3
EVENT_SLOTS = EVENT_UPDATES + EVENT_END_REPEATS - 1  # the 5th update is the first end packet
EVENT_VOLUME = 10  # -10 dBm0
DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}

ESPEAK = "espeak-ng"
ESPEAK_TEXT = "Hello, I would like to check the balance on account number four five six seven."
ESPEAK_ARGS = ("-v", "en-us", "-s", "150")


# --- a call ---------------------------------------------------------------------------------------


def event_payload(digit: str, duration: int, end: bool) -> bytes:
    """RFC 4733 §2.3: event, E|R|volume, 16-bit duration."""
    return bytes((DTMF_CODES[digit], (0x80 if end else 0) | EVENT_VOLUME)) + duration.to_bytes(2, "big")


def rtp_leg(name: str, audio: CallAudio) -> list[tuple[float, bytes]]:
    """The caller's RTP packets, ``(seconds after the first packet, bytes)``.

    One 20 ms slot per packet; RTP timestamps advance 160 per slot from a random base, sequence
    numbers by one per packet from a random base. Event packets carry the timestamp of the
    event's first slot and growing durations; audio stops while an event is sent.
    """
    seed = zlib.crc32(name.encode())
    rng = np.random.RandomState(seed)
    ssrc = seed or 1
    sequence = int(rng.randint(1000, 30000))
    ts_base = int(rng.randint(0, 2**31))
    slots = len(audio.pcm) // FRAME
    event_at = {e.slot: e for e in audio.events}
    packets: list[tuple[float, bytes]] = []
    slot = 0
    while slot < slots:
        event = event_at.get(slot)
        if event is not None:
            for k in range(EVENT_SLOTS):
                updates = min(k + 1, EVENT_UPDATES)
                packet = RtpPacket(
                    payload_type=PT_EVENT,
                    sequence_number=sequence & 0xFFFF,
                    timestamp=(ts_base + slot * FRAME) & 0xFFFFFFFF,
                    ssrc=ssrc,
                    payload=event_payload(event.digit, updates * FRAME, end=k + 1 >= EVENT_UPDATES),
                    marker=k == 0,
                )
                packets.append(((slot + k) * PTIME_MS / 1000, packet.serialize()))
                sequence += 1
            slot += EVENT_SLOTS
            continue
        chunk = audio.pcm[slot * FRAME : (slot + 1) * FRAME]
        packet = RtpPacket(
            payload_type=PT_PCMU,
            sequence_number=sequence & 0xFFFF,
            timestamp=(ts_base + slot * FRAME) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=g711.encode(chunk, "PCMU"),  # sipagent's codec: Sun reference tables
            marker=slot == 0,
        )
        packets.append((slot * PTIME_MS / 1000, packet.serialize()))
        sequence += 1
        slot += 1
    jitter = rng.uniform(0, JITTER_S, len(packets))
    return [(t + float(j), data) for (t, data), j in zip(packets, jitter, strict=True)]


def _sdp(user: str, session_id: str, rtp: Endpoint, formats: Sequence[str]) -> bytes:
    maps = {"0": "PCMU/8000", "8": "PCMA/8000", str(PT_EVENT): "telephone-event/8000"}
    media = MediaDescription(media="audio", port=rtp[1], proto="RTP/AVP", formats=list(formats))
    for pt in formats:
        media.add_attribute("rtpmap", f"{pt} {maps[pt]}")
    media.add_attribute("fmtp", f"{PT_EVENT} 0-16")
    media.add_attribute("ptime", str(PTIME_MS))
    media.add_attribute("sendrecv")
    sd = SessionDescription(
        origin=Origin(user, session_id, 1, "IN", "IP4", rtp[0]),
        session_name=user,
        connection=Connection("IN", "IP4", rtp[0]),
        media=[media],
    )
    return sd.serialize()


def sip_messages(name: str) -> dict[str, bytes]:
    """INVITE, 100, 180, 200, ACK, BYE and its 200 for the call called ``name``."""
    call_id = f"{name}@fixtures.sipagent.invalid"
    tag = f"{zlib.crc32(name.encode()):08x}"
    caller_uri = f"sip:{CALLER_NUMBER}@{CALLER_SIP[0]}"
    agent_aor = f"sip:{AGENT_USER}@{AGENT_SIP[0]}"
    contact_agent = f"sip:{AGENT_USER}@{AGENT_SIP[0]}:{AGENT_SIP[1]}"

    def request(method: str, uri: str, cseq: int, branch: str, to: str, body: bytes = b"") -> Request:
        headers = Headers.of(
            [
                ("Via", f"SIP/2.0/UDP {CALLER_SIP[0]}:{CALLER_SIP[1]};branch=z9hG4bK{tag}{branch};rport"),
                ("Max-Forwards", "70"),
                ("From", f'"Fixture caller" <{caller_uri}>;tag=c{tag}'),
                ("To", to),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<{caller_uri}:{CALLER_SIP[1]}>"),
                ("User-Agent", "sipagent-fixtures"),
            ]
        )
        if body:
            headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")
            headers.add("Content-Type", "application/sdp")
        return Request(method, uri, headers, body)

    offer = _sdp("caller", str(zlib.crc32(call_id.encode())), CALLER_RTP, ["0", "8", str(PT_EVENT)])
    invite = request("INVITE", f"{agent_aor}:{AGENT_SIP[1]}", 1, "1", f"<{agent_aor}>", offer)
    to_tagged = f"<{agent_aor}>;tag=a{tag}"

    def response(req: Request, status: int, body: bytes = b"") -> bytes:
        resp: Response = req.response(status, to_tag=None if status == 100 else f"a{tag}")
        if status != 100 and req.method == "INVITE":
            resp.headers.add("Contact", f"<{contact_agent}>")
        resp.headers.add("Server", "sipagent")
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp.serialize()

    answer = _sdp("sipagent", str(zlib.crc32(name.encode())), AGENT_RTP, ["0", str(PT_EVENT)])
    bye = request("BYE", contact_agent, 2, "3", to_tagged)
    return {
        "INVITE": invite.serialize(),
        "100": response(invite, 100),
        "180": response(invite, 180),
        "200": response(invite, 200, answer),
        "ACK": request("ACK", contact_agent, 1, "2", to_tagged).serialize(),
        "BYE": bye.serialize(),
        "BYE 200": response(bye, 200),
    }


def call_datagrams(name: str, audio: CallAudio) -> tuple[list[UdpDatagram], int, float]:
    """The whole call in capture order; also the caller's RTP packet count and the call's length."""
    sip = sip_messages(name)
    out: list[UdpDatagram] = []

    def add(offset: float, src: Endpoint, dst: Endpoint, payload: bytes) -> None:
        out.append(UdpDatagram(round(START_TIME + offset, 6), src, dst, payload))

    add(0.0, CALLER_SIP, AGENT_SIP, sip["INVITE"])
    add(T_TRYING, AGENT_SIP, CALLER_SIP, sip["100"])
    add(T_RINGING, AGENT_SIP, CALLER_SIP, sip["180"])
    add(T_OK, AGENT_SIP, CALLER_SIP, sip["200"])
    add(T_ACK, CALLER_SIP, AGENT_SIP, sip["ACK"])
    leg = rtp_leg(name, audio)
    for offset, packet in leg:
        add(FIRST_RTP + offset, CALLER_RTP, AGENT_RTP, packet)
    bye_at = FIRST_RTP + len(audio.pcm) / RATE + BYE_AFTER_RTP
    add(bye_at, CALLER_SIP, AGENT_SIP, sip["BYE"])
    add(bye_at + 0.004, AGENT_SIP, CALLER_SIP, sip["BYE 200"])
    return out, len(leg), bye_at + 0.004


# --- the fixtures -----------------------------------------------------------------------------------


def speech_builder(clip: str) -> Callable[[BuildContext], CallAudio]:
    """The builder of ``speech-<clip>``: the clip padded with noise, and its transcript."""

    def build(ctx: BuildContext) -> CallAudio:
        speech = ctx.speech(clip)
        pcm, info = padded_speech(f"speech-{clip}", speech)
        transcript = ctx.transcript(clip)
        info = {"source": f"shared/speech/{ctx.path(clip).name}", "transcript": transcript, **info}
        if transcript is None:
            info["transcript_note"] = "no reference transcript exists for this clip (spoken numbers)"
        info["turns"] = [turn_record(ctx, clip, speech, LEAD_S)]
        return CallAudio(pcm, manifest=info)

    return build


def build_two_turns(ctx: BuildContext) -> CallAudio:
    """librivox-0880, 1.5 s of background noise, librivox-0890."""
    first, second = ctx.speech("librivox-0880"), ctx.speech("librivox-0890")
    rng = np.random.RandomState(zlib.crc32(b"noise:two-turns"))
    floor = min(noise_floor(first), noise_floor(second))
    pause = 1.5
    parts = [noise(rng, LEAD_S, floor), first, noise(rng, pause, floor), second, noise(rng, TRAIL_S, floor)]
    body = pad_to_frames(np.concatenate(parts), rng, floor)
    turns = []
    at = LEAD_S
    for clip, samples in (("librivox-0880", first), ("librivox-0890", second)):
        turns.append(turn_record(ctx, clip, samples, at))
        at += len(samples) / RATE + pause
    info = {
        "source": "shared/speech/librivox-0880.wav + librivox-0890.wav",
        "transcript": " ".join(str(t["transcript"]) for t in turns),
        "pause_s": pause,
        "turns": turns,
        "noise_dbfs": dbfs(floor),
    }
    return CallAudio(to_pcm(body), manifest=info)


def build_dtmf(ctx: BuildContext) -> CallAudio:
    """Background noise with the digits 1 2 3 4 # every 0.5 s, from 0.6 s."""
    digits = "1234#"
    rng = np.random.RandomState(zlib.crc32(b"noise:dtmf-1234"))
    floor = FULL_SCALE * 10 ** (-60 / 20)
    first_slot, spacing = 30, 25
    slots = first_slot + spacing * len(digits) + round(TRAIL_S * 1000 / PTIME_MS)
    pcm = to_pcm(noise(rng, slots * FRAME / RATE, floor))
    events = [DtmfEvent(d, first_slot + spacing * i) for i, d in enumerate(digits)]
    info = {
        "digits": digits,
        "events": [
            {
                "digit": e.digit,
                "at_s": e.slot * PTIME_MS / 1000,
                "duration_ms": EVENT_UPDATES * PTIME_MS,
                "end_packets": EVENT_END_REPEATS,
            }
            for e in events
        ],
        "event_payload_type": PT_EVENT,
        "noise_dbfs": dbfs(floor),
    }
    return CallAudio(pcm, events, info)


def build_tone_sweep(ctx: BuildContext) -> CallAudio:
    """1004 Hz at -10 dBFS, an exponential 100→3800 Hz sweep at -10 dBFS, 1004 Hz at -30 dBFS.

    1004 Hz (not 1 kHz) is the telephony test tone: 1000 Hz would hit only 8 sample phases at
    8 kHz. Gaps are digital silence, so the codec's idle noise can be measured too.
    """
    segments: list[dict[str, Any]] = []
    parts: list[Signal] = []
    at = 0.0

    def add(kind: str, seconds: float, signal: Signal, **info: Any) -> None:
        nonlocal at
        parts.append(signal)
        if kind != "silence":
            pcm = to_pcm(signal)
            decoded = g711.decode(g711.encode(pcm, "PCMU"), "PCMU").astype(np.float64)
            error = decoded - signal
            snr = 10 * math.log10(float(np.sum(signal * signal)) / max(float(np.sum(error * error)), 1e-9))
            info["pcmu_snr_db"] = round(snr, 1)
        segments.append({"kind": kind, "start_s": round(at, 3), "end_s": round(at + seconds, 3), **info})
        at += seconds

    def tone(freq: float, seconds: float, level: float) -> None:
        t = np.arange(round(seconds * RATE)) / RATE
        amplitude = FULL_SCALE * 10 ** (level / 20)
        add("tone", seconds, fade(amplitude * np.sin(2 * np.pi * freq * t)), freq_hz=freq, level_dbfs=level)

    def sweep(f0: float, f1: float, seconds: float, level: float) -> None:
        t = np.arange(round(seconds * RATE)) / RATE
        k = math.log(f1 / f0) / seconds
        phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
        amplitude = FULL_SCALE * 10 ** (level / 20)
        signal = fade(amplitude * np.sin(phase))
        add("sweep", seconds, signal, f0_hz=f0, f1_hz=f1, law="exponential", level_dbfs=level)

    def silence(seconds: float) -> None:
        add("silence", seconds, np.zeros(round(seconds * RATE)))

    silence(0.5)
    tone(1004.0, 2.0, -10.0)
    silence(0.5)
    sweep(100.0, 3800.0, 4.0, -10.0)
    silence(0.5)
    tone(1004.0, 1.0, -30.0)
    silence(0.5)
    info = {
        "segments": segments,
        "level_reference": "dBFS of a sine's peak: amplitude = 32767 * 10**(level/20)",
        "sweep_phase": "2*pi*f0*(exp(k*t)-1)/k, k = ln(f1/f0)/duration, t from the segment start",
        "fade_ms": 10,
    }
    return CallAudio(to_pcm(np.concatenate(parts)), manifest=info)


def espeak_version() -> str:
    """``espeak-ng --version`` without its data path."""
    text = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", text)
    return match[1] if match else text.strip()


def build_espeak(ctx: BuildContext) -> CallAudio:
    """espeak-ng (22.05 kHz) speaking ESPEAK_TEXT, resampled to 8 kHz and padded with noise."""
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "espeak.wav"
        subprocess.run([ESPEAK, *ESPEAK_ARGS, "-w", str(wav_path), ESPEAK_TEXT], check=True)
        with wave.open(str(wav_path), "rb") as src:
            rate, raw = src.getframerate(), src.readframes(src.getnframes())
    source = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    speech = resample(source, rate, RATE)
    # Its ground truth, like a recorded clip's, from the clean voice at 16 kHz (before the line noise).
    truth = clip_truth("espeak-ng", resample(source, rate, SOURCE_RATE))
    # espeak-ng's silence is digital zero: give the padding a plausible line noise instead.
    rng = np.random.RandomState(zlib.crc32(b"noise:synthetic-espeak"))
    floor = FULL_SCALE * 10 ** (-55 / 20)
    speech = speech + noise(rng, len(speech) / RATE, floor)[: len(speech)]
    pcm, info = padded_speech("synthetic-espeak", speech)
    words = " ".join(re.sub(r"[^a-z ]", "", ESPEAK_TEXT.lower()).split())
    turn = {
        "clip": "espeak-ng",
        "transcript": words,
        "speech_at_s": info["speech_at_s"],
        "voice_activity_s": info["voice_activity_s"],
        **truth.fields(LEAD_S),
    }
    info = {
        "source": f"espeak-ng {espeak_version()} {' '.join(ESPEAK_ARGS)}",
        "text_spoken": ESPEAK_TEXT,
        "transcript": words,
        **info,
        "turns": [turn],
    }
    return CallAudio(pcm, manifest=info)


#: The human speech clips in shared/speech (16 kHz WAV, or raw for goforward and numbers).
SPEECH_CLIPS: tuple[str, ...] = ("librivox-0870", "librivox-0880", "librivox-0890", "cards-001", "cards-002")
SPEECH_CLIPS = (*SPEECH_CLIPS, "cards-003", "goforward", "numbers")
FIXTURES: tuple[Fixture, ...] = (
    *(
        Fixture(f"speech-{c}", f"human speech: {c} (pocketsphinx test data)", speech_builder(c))
        for c in SPEECH_CLIPS
    ),
    Fixture("dtmf-1234", "RFC 4733 digits 1 2 3 4 # over background noise, no speech", build_dtmf),
    Fixture("tone-sweep", "1004 Hz tones and a 100-3800 Hz sweep: SNR/codec measurements", build_tone_sweep),
    Fixture("two-turns", "two utterances 1.5 s apart (librivox-0880, -0890): turn-taking", build_two_turns),
    Fixture("synthetic-espeak", "espeak-ng synthetic speech of a known sentence", build_espeak, needs=ESPEAK),
    *AGENT_FIXTURES,
    *NOISY_FIXTURES,
)


# --- manifest and main ------------------------------------------------------------------------------


def manifest_entry(fixture: Fixture, audio: CallAudio, count: int, call_seconds: float) -> dict[str, Any]:
    """The manifest record of a synthetic fixture."""
    return {
        "file": fixture.file,
        "description": fixture.description,
        "recorded": False,
        "made_by": "scripts/make_fixtures.py",
        "duration_s": round(len(audio.pcm) / RATE, 3),
        "call_duration_s": round(call_seconds, 3),
        "codec": "PCMU",
        "payload_type": PT_PCMU,
        "ptime_ms": PTIME_MS,
        "call_id": f"{fixture.name}@fixtures.sipagent.invalid",
        "caller_sip": {"address": CALLER_SIP[0], "port": CALLER_SIP[1]},
        "agent_sip": {"address": AGENT_SIP[0], "port": AGENT_SIP[1]},
        "caller_rtp": {"address": CALLER_RTP[0], "port": CALLER_RTP[1]},
        "agent_rtp": {"address": AGENT_RTP[0], "port": AGENT_RTP[1]},
        "packet_count": count,
        "legs": ["caller"],
        **audio.manifest,
    }


def load_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """The entries of ``out/manifest.json`` by file name (empty if there is none yet)."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    return {e["file"]: e for e in json.loads(path.read_text())["fixtures"]}


def update_manifest(out: Path, entries: Iterable[dict[str, Any]], *, drop_unknown: bool) -> None:
    """Merge ``entries`` into ``out/manifest.json`` (by file name), keeping recorded fixtures.

    With ``drop_unknown``, synthetic entries this script no longer makes are removed.
    """
    existing = load_manifest(out)
    known = {f.file for f in FIXTURES}
    if drop_unknown:
        existing = {k: v for k, v in existing.items() if v.get("recorded") or k in known}
    for entry in entries:
        existing[entry["file"]] = entry
    ordered = sorted(existing.values(), key=lambda e: (bool(e.get("recorded")), e["file"]))
    document = {
        "about": "Whole-call captures (SIP + RTP). See fixtures/README.md; made by scripts/make_fixtures.py "
        "and scripts/record_fixtures.py.",
        "speech_truth": METHOD,
        "fixtures": ordered,
    }
    (out / MANIFEST).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def make(fixture: Fixture, ctx: BuildContext, out: Path) -> dict[str, Any]:
    """Build one fixture into ``out`` and return its manifest entry."""
    audio = fixture.build(ctx)
    datagrams, count, seconds = call_datagrams(fixture.name, audio)
    write_udp(out / fixture.file, datagrams)
    return manifest_entry(fixture, audio, count, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="build only this fixture (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default fixtures/)")
    parser.add_argument("--speech-dir", type=Path, default=DEFAULT_SPEECH_DIR, help="shared/speech")
    parser.add_argument("--list", action="store_true", help="list the fixtures and exit")
    args = parser.parse_args(argv)
    if args.list:
        for fixture in FIXTURES:
            print(f"{fixture.name:24} {fixture.description}")
        return 0
    by_name = {f.name: f for f in FIXTURES}
    wanted = [name.removesuffix(".pcap") for name in args.only or []]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        parser.error(f"unknown fixture(s) {', '.join(unknown)}; --list shows them")
    selected = [by_name[name] for name in wanted] if wanted else list(FIXTURES)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(args.speech_dir)
    entries = []
    for fixture in selected:
        if fixture.needs is not None and shutil.which(fixture.needs) is None:
            message = (
                f"{fixture.name}: skipped, {fixture.needs} is not installed (apt-get install {fixture.needs})"
            )
            if wanted:
                print(message, file=sys.stderr)
                return 1
            print(message + "; the committed file and manifest entry are kept", file=sys.stderr)
            continue
        entry = make(fixture, ctx, out)
        size = (out / fixture.file).stat().st_size
        print(
            f"{fixture.file:32} {entry['packet_count']:5} packets {entry['duration_s']:6.2f} s {size:8} bytes"
        )
        entries.append(entry)
    update_manifest(out, entries, drop_unknown=not wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
