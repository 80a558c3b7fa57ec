#!/usr/bin/env python3
"""Build the answering-machine detection fixtures in ``fixtures/amd/`` and their ``manifest.json``.

Each capture is one **outbound** call as sipagent places it: our INVITE to the callee, 100, then
180 (no early media) or 183 with SDP and the callee's early media (ringback), 200 OK, ACK, the
callee's RTP leg (20 ms PCMU packets) and our BYE once the analysis is long over. Only the callee's
leg is in the capture, as in ``fixtures/``. What the callee sends is one of

* a **live answer** (label ``human``): "Hello?", "Hi, this is Sam.", "Yeah?", a real person's short
  utterance cut from ``shared/speech`` (cards, numbers: the words differ from a greeting, the sound
  of a person answering does not), silence then "hello", a busy room;
* a **voicemail greeting** (``machine``) of varied length, with or without a beep after it, in
  Piper's voice or a real person's (the LibriVox reader and goforward stand in for a greeting its
  owner recorded), one with a jingle before it;
* a **carrier message** (``machine``): "the person you are calling is not available", with or
  without SIT tones before it.

Telephone realism: a 300-3400 Hz channel, line hiss, levels from -30 to -16 dBFS, G.711 μ-law,
some calls with packet loss and jitter (``sipagent.replay.impair.Impairments``, seeded, applied to
the capture itself: lost packets are not in it, late ones arrive late), a real restaurant's
background (``fixtures/noise/restaurant-ambience.wav``) for the busy rooms, ringback before the
answer (early media, which AMD must ignore) or, once, for a moment after it.

Piper (``models/piper``) speaks with ``noise_scale = noise_w = 0``: its generator's noise cannot
be seeded, and without it the same text gives the same samples on one machine. Voices differ by
``length_scale`` and a pitch factor (the audio resampled as if made at another rate). Everything
else is seeded from the fixture's name (numpy's legacy ``RandomState``), so the script rebuilds the
committed files byte for byte on one machine (onnxruntime's float kernels may differ on another).

Times in the manifest are **seconds after the 200 OK** (what AMD measures from) on the callee's
audio timeline: ``first_rtp_s`` is where its first packet's audio starts (negative with early
media), each part's ``at_s``/``end_s`` where it sits, ``speech_s`` its voice activity (20 ms frames
above -40 dBFS and within 35 dB of the part's loudest), ``beep`` the beep's onset, length and
frequency.

Usage::

    .venv/bin/python scripts/make_amd_fixtures.py              # every fixture into fixtures/amd/
    .venv/bin/python scripts/make_amd_fixtures.py --only h-hello --out /tmp/amd
    .venv/bin/python scripts/make_amd_fixtures.py --list
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from amd_scenarios import SCENARIOS, Beep, Clip, Music, Pause, Ringback, Say, Scenario, SitTones, Voice
from fixturekit import FULL_SCALE, RATE, Signal, fade, frame_rms, read_source, resample, to_pcm

from sipagent.pcapio import UdpDatagram, write_udp
from sipagent.replay.impair import Impairments
from sipagent.rtp import g711
from sipagent.rtp.packet import RtpPacket
from sipagent.sip.message import Headers, Request, Response
from sipagent.sip.sdp import Connection, MediaDescription, Origin, SessionDescription

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures" / "amd"
DEFAULT_SPEECH_DIR = REPO.parent / "shared" / "speech"
NOISE = REPO / "fixtures" / "noise" / "restaurant-ambience.wav"
VOICE = REPO / "models" / "piper" / "en_US-joe-medium.onnx"
MANIFEST = "manifest.json"
FRAME = 160

Endpoint = tuple[str, int]
#: sipagent places the call from the documentation address it has in fixtures/; the callee is the carrier.
AGENT_SIP: Endpoint = ("192.0.2.20", 5060)
AGENT_RTP: Endpoint = ("192.0.2.20", 10000)
CALLEE_SIP: Endpoint = ("192.0.2.10", 5060)
CALLEE_RTP: Endpoint = ("192.0.2.10", 49170)
CALLEE_NUMBER = "+15550100"
START_TIME = 1_700_000_000.0
T_TRYING, T_PROGRESS = 0.030, 0.400  # 100 Trying; 180 Ringing or 183 Session Progress
T_FIRST_RTP_AFTER_OK = 0.040  # without early media the callee's RTP starts this long after the 200
T_ACK_AFTER_OK = 0.012
BYE_AFTER_RTP = 0.100
RING_NO_EARLY_MEDIA_S = 2.0  # 180 to 200 when there is no early media

RINGBACK_HZ = (440.0, 480.0)  # North American ringback: 2 s on, 4 s off
RINGBACK_DBFS = -19.0
LINE_HISS_DBFS = (-62.0, -52.0)
CHANNEL_HZ = (300.0, 3400.0)
CHANNEL_TAPS = 129
SENTENCE_PAUSE_S = (0.22, 0.42)
ACTIVITY_DBFS = -40.0


# --- sources ------------------------------------------------------------------------------------


@cache
def _piper() -> Any:
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    config = PiperConfig.from_dict(json.loads(Path(f"{VOICE}.json").read_text(encoding="utf-8")))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(VOICE), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


def _trim(x: Signal, peak: float = 64.0) -> Signal:
    """Without the near-silence Piper leaves before and after a sentence (10 ms kept each side)."""
    loud = np.flatnonzero(np.abs(x) >= peak)
    if not len(loud):
        return x
    keep = RATE // 100
    return x[max(0, int(loud[0]) - keep) : int(loud[-1]) + keep]


def tts(text: str, voice: Voice) -> Signal:
    """Piper's voice saying one sentence at 8 kHz (float), no leading or trailing silence."""
    from piper.config import SynthesisConfig

    piper = _piper()
    config = SynthesisConfig(
        length_scale=voice.length_scale * voice.pitch,
        noise_scale=0.0,
        noise_w_scale=0.0,
        normalize_audio=True,
        volume=0.5,
    )
    chunks = [c.audio_int16_array for c in piper.synthesize(text, syn_config=config)]
    audio = np.concatenate(chunks).astype(np.float64)
    # Played faster by ``pitch``: higher and shorter; length_scale above made it longer to match.
    rate = round(piper.config.sample_rate * voice.pitch)
    return _trim(resample(audio, rate, RATE))


def sentences(text: str) -> list[str]:
    """``text`` split after . ? ! (each sentence is synthesised alone, then paused between)."""
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+", text) if s.strip()]


def clip(speech_dir: Path, part: Clip) -> Signal:
    """A recorded clip of shared/speech at 8 kHz, cut to ``part.cut_s`` with 10 ms fades."""
    path = next(p for p in (speech_dir / f"{part.clip}.wav", speech_dir / f"{part.clip}.raw") if p.is_file())
    rate, x = read_source(path)
    audio = resample(x, rate, RATE)
    if part.cut_s is not None:
        audio = fade(audio[round(part.cut_s[0] * RATE) : round(part.cut_s[1] * RATE)])
    return audio


def tone(freqs: Sequence[float], seconds: float, level_dbfs: float, ramp_s: float = 0.005) -> Signal:
    """Sines of equal amplitude summing to ``level_dbfs`` (peak of each: level minus 3 dB per extra tone)."""
    t = np.arange(round(seconds * RATE)) / RATE
    amplitude = FULL_SCALE * 10 ** (level_dbfs / 20) / len(freqs)
    x = sum((amplitude * np.sin(2 * np.pi * f * t) for f in freqs), np.zeros(len(t)))
    return fade(np.asarray(x, dtype=np.float64), ramp_s)


def music(rng: np.random.RandomState, notes: Sequence[float], note_s: float, level_dbfs: float) -> Signal:
    """A jingle: legato notes with harmonics (-6, -10, -14 dB) and a 5 Hz vibrato, then a chord."""
    parts = []
    for index, f0 in enumerate([*notes, 0.0]):
        seconds = note_s * (2 if f0 == 0.0 else 1)
        t = np.arange(round(seconds * RATE)) / RATE
        chord = list(notes[-3:]) if f0 == 0.0 else [f0]
        vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.0 * t + index)
        x = np.zeros(len(t))
        for f in chord:
            phase = 2 * np.pi * np.cumsum(f * vibrato) / RATE
            for harmonic, gain_db in ((1, 0.0), (2, -6.0), (3, -10.0), (4, -14.0)):
                if f * harmonic < 3600:
                    x += 10 ** (gain_db / 20) * np.sin(harmonic * phase + rng.uniform(0, np.pi))
        envelope = np.minimum(1.0, np.exp(-t * 1.5) + 0.4)
        parts.append(fade(x * envelope, 0.008))
    jingle = np.concatenate(parts)
    rms = float(np.sqrt(np.mean(jingle * jingle)))
    return np.asarray(jingle * FULL_SCALE * 10 ** (level_dbfs / 20) / rms, dtype=np.float64)


@cache
def room_noise() -> Signal:
    """The restaurant's background (a room of people talking, dishes) at 8 kHz."""
    rate, x = read_source(NOISE)
    return resample(x, rate, RATE)


def _bandpass(x: Signal) -> Signal:
    """The telephone channel: a 300-3400 Hz Kaiser-windowed sinc band-pass, same length out."""
    n = np.arange(CHANNEL_TAPS) - (CHANNEL_TAPS - 1) / 2
    low, high = (2 * f / RATE * np.sinc(2 * f / RATE * n) for f in CHANNEL_HZ)
    kernel = (high - low) * np.kaiser(CHANNEL_TAPS, 8.0)
    return np.asarray(np.convolve(x, kernel, mode="same"), dtype=np.float64)


def _active_level(x: Signal) -> float:
    """RMS (16-bit units) of the frames within 20 dB of the loudest: the level of the speech."""
    rms = frame_rms(x)
    if not len(rms):
        return 0.0
    loud = rms[rms >= rms.max() * 0.1]
    return float(np.sqrt(np.mean(loud * loud)))


def voice_activity(x: Signal, at: float) -> list[float]:
    """[first, last] second of 20 ms frames above -40 dBFS and within 35 dB of the loudest."""
    rms = frame_rms(x)
    if not len(rms):
        return []
    floor = max(FULL_SCALE * 10 ** (ACTIVITY_DBFS / 20), float(rms.max()) * 10 ** (-35 / 20))
    active = np.flatnonzero(rms > floor)
    if not len(active):
        return []
    return [round(at + active[0] * 0.02, 2), round(at + (active[-1] + 1) * 0.02, 2)]


# --- one call's audio ----------------------------------------------------------------------------


@dataclass
class Built:
    """The callee's audio from its first packet on, and what the manifest says about it."""

    pcm: np.ndarray[Any, np.dtype[np.int16]]
    early_samples: int  # samples before the 200 OK (early media)
    parts: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def build_audio(scenario: Scenario, speech_dir: Path) -> Built:
    """Lay the scenario's parts out after the answer, then add the room, the hiss and the channel."""
    rng = np.random.RandomState(zlib.crc32(f"amd:{scenario.name}".encode()))
    early = round(scenario.early_media_s / 0.02) * FRAME
    speech_level = FULL_SCALE * 10 ** (scenario.level_dbfs / 20)
    timeline: list[tuple[int, Signal, dict[str, Any]]] = []  # (sample after answer, signal, record)
    cursor = round(scenario.lead_s * RATE)
    for part in scenario.parts:
        if isinstance(part, Pause):
            cursor += round(part.seconds * RATE)
            continue
        record: dict[str, Any]
        if isinstance(part, Say):
            pieces = [tts(s, part.voice) for s in sentences(part.text)]
            gaps = [rng.uniform(*SENTENCE_PAUSE_S) for _ in pieces[1:]]
            signal = pieces[0]
            for gap, piece in zip(gaps, pieces[1:], strict=True):
                signal = np.concatenate([signal, np.zeros(round(gap * RATE)), piece])
            signal = signal * speech_level / _active_level(signal)
            record = {
                "type": "speech",
                "text": part.text,
                "source": "piper en_US-joe-medium",
                "voice": {"length_scale": part.voice.length_scale, "pitch": part.voice.pitch},
            }
        elif isinstance(part, Clip):
            signal = clip(speech_dir, part)
            signal = signal * speech_level / _active_level(signal)
            cut = f" {part.cut_s[0]:.2f}-{part.cut_s[1]:.2f} s" if part.cut_s else ""
            record = {
                "type": "speech",
                "text": part.text,
                "source": f"shared/speech/{part.clip}{cut} (recorded)",
            }
        elif isinstance(part, Beep):
            signal = tone([part.freq_hz], part.seconds, part.level_dbfs)
            record = {"type": "beep", "freq_hz": part.freq_hz, "level_dbfs": part.level_dbfs}
        elif isinstance(part, SitTones):
            segments = [tone([f], s, part.level_dbfs, 0.002) for f, s in part.segments]
            signal = np.concatenate(segments)
            record = {"type": "sit", "segments": [{"freq_hz": f, "seconds": s} for f, s in part.segments]}
        elif isinstance(part, Music):
            signal = music(rng, part.notes, part.note_s, part.level_dbfs)
            record = {
                "type": "music",
                "notes_hz": list(part.notes),
                "level_dbfs": part.level_dbfs,
                "note": "legato notes with harmonics and vibrato, ending on a chord",
            }
        else:  # Ringback after the answer (a carrier that answers early)
            assert isinstance(part, Ringback)
            signal = _ringback(part.seconds)
            record = {"type": "ringback", "freq_hz": list(RINGBACK_HZ)}
        timeline.append((cursor, signal, record))
        cursor += len(signal)
    total = cursor + round(scenario.tail_s * RATE)
    total += -total % FRAME
    after = np.zeros(total)
    built = Built(np.zeros(0, dtype=np.int16), early)
    offset = T_FIRST_RTP_AFTER_OK if early == 0 else 0.0
    for start, signal, part_record in timeline:
        after[start : start + len(signal)] += signal
        at = offset + start / RATE
        record = {**part_record, "at_s": round(at, 3), "end_s": round(at + len(signal) / RATE, 3)}
        if record["type"] == "speech":
            record["speech_s"] = voice_activity(signal, at)
        if record["type"] == "beep":
            record["duration_s"] = round(len(signal) / RATE, 3)
        built.parts.append(record)
    body = np.concatenate([_ringback(early / RATE) if early else np.zeros(0), after])
    info: dict[str, Any] = {}
    if scenario.room_snr_db is not None:
        noise = room_noise()
        start = int(rng.randint(0, len(noise) - RATE))
        reps = int(np.ceil((len(after) + start) / len(noise))) + 1
        room = np.tile(noise, reps)[start : start + len(after)]
        room_rms = float(np.sqrt(np.mean(room * room)))
        gain = speech_level / room_rms * 10 ** (-scenario.room_snr_db / 20)
        body[early:] += room * gain
        info["room"] = {
            "source": "fixtures/noise/restaurant-ambience.wav",
            "offset_s": round(start / RATE, 3),
            "snr_db": scenario.room_snr_db,
            "level_dbfs": round(20 * np.log10(room_rms * gain / FULL_SCALE), 1),
        }
    hiss_db = float(rng.uniform(*LINE_HISS_DBFS))
    body = _bandpass(body) + rng.standard_normal(len(body)) * FULL_SCALE * 10 ** (hiss_db / 20)
    built.pcm = to_pcm(body)
    info["line_hiss_dbfs"] = round(hiss_db, 1)
    built.info = info
    return built


def _ringback(seconds: float) -> Signal:
    """North American ringback (440 + 480 Hz, 2 s on, 4 s off) from the start of its cadence."""
    n = round(seconds * RATE)
    if n == 0:
        return np.zeros(0)
    on = (np.arange(n) / RATE % 6.0) < 2.0
    return np.asarray(np.where(on, tone(RINGBACK_HZ, seconds, RINGBACK_DBFS), 0.0), dtype=np.float64)


# --- the call ----------------------------------------------------------------------------------


def _sdp(user: str, session_id: str, rtp: Endpoint) -> bytes:
    media = MediaDescription(media="audio", port=rtp[1], proto="RTP/AVP", formats=["0", "101"])
    media.add_attribute("rtpmap", "0 PCMU/8000")
    media.add_attribute("rtpmap", "101 telephone-event/8000")
    media.add_attribute("fmtp", "101 0-16")
    media.add_attribute("ptime", "20")
    media.add_attribute("sendrecv")
    origin = Origin(user, session_id, 1, "IN", "IP4", rtp[0])
    sd = SessionDescription(
        origin=origin, session_name=user, connection=Connection("IN", "IP4", rtp[0]), media=[media]
    )
    return sd.serialize()


def sip_messages(name: str, early_media: bool) -> dict[str, bytes]:
    """Our INVITE, the callee's 100, 180 or 183, 200, our ACK, BYE, and its 200."""
    call_id = f"{name}@amd.fixtures.sipagent.invalid"
    tag = f"{zlib.crc32(name.encode()):08x}"
    callee_uri = f"sip:{CALLEE_NUMBER}@{CALLEE_SIP[0]}"
    our_uri = f"sip:agent@{AGENT_SIP[0]}"
    callee_contact = f"sip:{CALLEE_NUMBER}@{CALLEE_SIP[0]}:{CALLEE_SIP[1]}"

    def request(method: str, uri: str, cseq: int, branch: str, to: str, body: bytes = b"") -> Request:
        headers = Headers.of(
            [
                ("Via", f"SIP/2.0/UDP {AGENT_SIP[0]}:{AGENT_SIP[1]};branch=z9hG4bK{tag}{branch};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<{our_uri}>;tag=s{tag}"),
                ("To", to),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<{our_uri}:{AGENT_SIP[1]}>"),
                ("User-Agent", "sipagent"),
            ]
        )
        if body:
            headers.add("Content-Type", "application/sdp")
        return Request(method, uri, headers, body)

    offer = _sdp("sipagent", str(zlib.crc32(call_id.encode())), AGENT_RTP)
    invite = request("INVITE", callee_uri, 1, "1", f"<{callee_uri}>", offer)
    answer = _sdp("callee", str(zlib.crc32(name.encode())), CALLEE_RTP)

    def response(status: int, body: bytes = b"") -> bytes:
        resp: Response = invite.response(status, to_tag=None if status == 100 else f"c{tag}")
        if status != 100:
            resp.headers.add("Contact", f"<{callee_contact}>")
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp.serialize()

    to_tagged = f"<{callee_uri}>;tag=c{tag}"
    bye = request("BYE", callee_contact, 2, "3", to_tagged)
    bye_ok: Response = bye.response(200)
    return {
        "INVITE": invite.serialize(),
        "100": response(100),
        "progress": response(183, answer) if early_media else response(180),
        "200": response(200, answer),
        "ACK": request("ACK", callee_contact, 1, "2", to_tagged).serialize(),
        "BYE": bye.serialize(),
        "BYE 200": bye_ok.serialize(),
    }


def rtp_packets(name: str, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> list[tuple[float, bytes]]:
    """The callee's RTP: ``(seconds after its first packet's audio, bytes)``, one per 20 ms."""
    seed = zlib.crc32(f"rtp:{name}".encode())
    rng = np.random.RandomState(seed)
    ssrc, sequence, ts_base = seed or 1, int(rng.randint(1000, 30000)), int(rng.randint(0, 2**31))
    packets = []
    for slot in range(len(pcm) // FRAME):
        packet = RtpPacket(
            payload_type=0,
            sequence_number=(sequence + slot) & 0xFFFF,
            timestamp=(ts_base + slot * FRAME) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=g711.encode(pcm[slot * FRAME : (slot + 1) * FRAME], "PCMU"),
            marker=slot == 0,
        )
        packets.append((slot * 0.02, packet.serialize()))
    return packets


def make(scenario: Scenario, speech_dir: Path, out: Path) -> dict[str, Any]:
    """Build one capture into ``out`` and return its manifest entry."""
    built = build_audio(scenario, speech_dir)
    early = built.early_samples > 0
    sip = sip_messages(scenario.name, early)
    # The answer: after the early media, or a ring with no media at all.
    ok_at = T_PROGRESS + (built.early_samples / RATE if early else RING_NO_EARLY_MEDIA_S)
    first_rtp_at = T_PROGRESS if early else ok_at + T_FIRST_RTP_AFTER_OK
    sent = rtp_packets(scenario.name, built.pcm)
    impairments = Impairments(
        loss=scenario.loss, jitter_ms=scenario.jitter_ms, seed=zlib.crc32(scenario.name.encode())
    )
    arrivals = impairments.apply(sent)
    out_datagrams: list[UdpDatagram] = []

    def add(offset: float, src: Endpoint, dst: Endpoint, payload: bytes) -> None:
        out_datagrams.append(UdpDatagram(round(START_TIME + offset, 6), src, dst, payload))

    add(0.0, AGENT_SIP, CALLEE_SIP, sip["INVITE"])
    add(T_TRYING, CALLEE_SIP, AGENT_SIP, sip["100"])
    add(T_PROGRESS - 0.001, CALLEE_SIP, AGENT_SIP, sip["progress"])
    add(ok_at, CALLEE_SIP, AGENT_SIP, sip["200"])
    add(ok_at + T_ACK_AFTER_OK, AGENT_SIP, CALLEE_SIP, sip["ACK"])
    for offset, packet in arrivals:
        add(first_rtp_at + offset, CALLEE_RTP, AGENT_RTP, packet)
    last = first_rtp_at + len(built.pcm) / RATE
    add(last + BYE_AFTER_RTP, AGENT_SIP, CALLEE_SIP, sip["BYE"])
    add(last + BYE_AFTER_RTP + 0.030, CALLEE_SIP, AGENT_SIP, sip["BYE 200"])
    out_datagrams.sort(key=lambda d: d.time)
    write_udp(out / f"{scenario.name}.pcap", out_datagrams)
    beeps = [p for p in built.parts if p["type"] == "beep"]
    speech = [s for p in built.parts if p["type"] == "speech" for s in [p["speech_s"]] if s]
    return {
        "file": f"{scenario.name}.pcap",
        "label": scenario.label,
        "kind": scenario.kind,
        "split": scenario.split,
        "description": scenario.description,
        "made_by": "scripts/make_amd_fixtures.py",
        "call_id": f"{scenario.name}@amd.fixtures.sipagent.invalid",
        "direction": "outbound",
        "codec": "PCMU",
        "duration_s": round(len(built.pcm) / RATE, 3),
        "early_media_s": round(built.early_samples / RATE, 3),
        "first_rtp_s": round(first_rtp_at - ok_at, 3),
        "after_answer_s": round(last - ok_at, 3),
        "packet_count": len(arrivals),
        "packets_sent": len(sent),
        "impairments": {"loss": scenario.loss, "jitter_ms": scenario.jitter_ms, "seed": impairments.seed},
        "level_dbfs": scenario.level_dbfs,
        **built.info,
        "parts": built.parts,
        "speech_s": speech,
        "beep": (
            {"at_s": beeps[0]["at_s"], "duration_s": beeps[0]["duration_s"], "freq_hz": beeps[0]["freq_hz"]}
            if beeps
            else None
        ),
        "sit": any(p["type"] == "sit" for p in built.parts),
    }


ABOUT = (
    "Answering-machine detection fixtures: outbound calls (sipagent's INVITE, the callee's 100, 180 "
    "or 183 with early media, 200, ACK, the callee's RTP leg, BYE). Times are seconds after the 200 OK "
    "on the callee's audio timeline. See docs/amd.md; made by scripts/make_amd_fixtures.py."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="build only this fixture (repeatable)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default fixtures/amd/)"
    )
    parser.add_argument("--speech-dir", type=Path, default=DEFAULT_SPEECH_DIR, help="shared/speech")
    parser.add_argument("--list", action="store_true", help="list the fixtures and exit")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:28} {scenario.label:8} {scenario.description}")
        return 0
    by_name = {s.name: s for s in SCENARIOS}
    wanted = [n.removesuffix(".pcap") for n in args.only or []]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        parser.error(f"unknown fixture(s) {', '.join(unknown)}; --list shows them")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    existing = {e["file"]: e for e in json.loads(path.read_text())["fixtures"]} if path.is_file() else {}
    if not wanted:
        existing = {}
    for scenario in [by_name[n] for n in wanted] if wanted else SCENARIOS:
        entry = make(scenario, args.speech_dir, out)
        existing[entry["file"]] = entry
        size = (out / entry["file"]).stat().st_size
        print(f"{entry['file']:32} {entry['label']:8} {entry['after_answer_s']:6.2f} s {size:8} bytes")
    order = {f"{s.name}.pcap": i for i, s in enumerate(SCENARIOS)}
    fixtures = sorted(existing.values(), key=lambda e: order.get(e["file"], len(order)))
    document = {"about": ABOUT, "fixtures": fixtures}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
