"""Finding the caller's RTP leg in a capture.

Whole-call captures (SIP + RTP): the caller leg is the RTP sent *from* the address and port the
INVITE's SDP offer advertised (symmetric RTP), or, for a caller behind NAT whose SDP lies, the flow
sent *to* the answerer's SDP address. RTP-only captures: the first RTP flow, or the one with the
SSRC asked for. The codec and telephone-event payload type come from the SDP when there is one,
else from the RTP payload types themselves (0 → PCMU, 8 → PCMA, 101 → telephone-event guess).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SipAgentError
from ..pcapio import Endpoint, UdpDatagram, read_udp
from ..rtp.packet import RtpPacket, RtpParseError, is_rtcp_packet
from ..sip.errors import RemoteProtocolError
from ..sip.message import Request, Response, parse_message
from ..sip.sdp import SessionDescription, parse_sdp

_STATIC_CODECS = {0: "PCMU", 8: "PCMA"}


class CaptureError(SipAgentError, ValueError):
    """The capture holds no usable caller RTP."""


@dataclass(frozen=True)
class TimedPacket:
    """An RTP packet as captured, with its capture time (seconds from the first packet)."""

    time: float
    packet: RtpPacket


@dataclass
class CallerLeg:
    """The caller's RTP and what the signalling said about it."""

    packets: list[TimedPacket]
    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    source: Endpoint | None
    call_id: str | None = None
    notes: list[str] = field(default_factory=list)


def _sip_messages(datagrams: list[UdpDatagram]) -> list[tuple[UdpDatagram, Request | Response]]:
    found: list[tuple[UdpDatagram, Request | Response]] = []
    for datagram in datagrams:
        head = datagram.payload[:8]
        if not (head.startswith(b"SIP/2.0") or head[:1].isalpha()):
            continue
        try:
            found.append((datagram, parse_message(datagram.payload)))
        except RemoteProtocolError:
            continue
    return found


def _audio_of(sdp: SessionDescription) -> tuple[Endpoint, dict[int, str]] | None:
    for media in sdp.media:
        if media.media == "audio" and media.port:
            connection = sdp.media_connection(media)
            if connection is None:
                return None
            names = {pt: rtpmap.encoding.upper() for pt, rtpmap in media.payload_map().items()}
            return (connection.address, media.port), names
    return None


def _rtp_flows(datagrams: list[UdpDatagram]) -> dict[tuple[Endpoint, Endpoint], list[UdpDatagram]]:
    flows: dict[tuple[Endpoint, Endpoint], list[UdpDatagram]] = {}
    for datagram in datagrams:
        payload = datagram.payload
        if len(payload) < 12 or payload[0] >> 6 != 2 or is_rtcp_packet(payload):
            continue
        flows.setdefault((datagram.src, datagram.dst), []).append(datagram)
    return flows


def load_caller_leg(path: Path, *, ssrc: int | None = None) -> CallerLeg:
    """Read ``path`` and return the caller's RTP leg (see the module docstring for the rules)."""
    datagrams = list(read_udp(path))
    if not datagrams:
        raise CaptureError(f"{path} holds no UDP datagrams")
    flows = _rtp_flows(datagrams)
    if not flows:
        raise CaptureError(f"{path} holds no RTP")
    offer_endpoint: Endpoint | None = None
    answer_endpoint: Endpoint | None = None
    names: dict[int, str] = {}
    call_id: str | None = None
    for _, message in _sip_messages(datagrams):
        if not message.body or message.content_type() not in (None, "application/sdp"):
            continue
        try:
            audio = _audio_of(parse_sdp(message.body))
        except RemoteProtocolError:
            continue
        if audio is None:
            continue
        if isinstance(message, Request) and message.method == "INVITE" and offer_endpoint is None:
            offer_endpoint, names = audio
            call_id = message.call_id()
        elif isinstance(message, Response) and 200 <= message.status < 300 and answer_endpoint is None:
            answer_endpoint = audio[0]
    chosen: list[UdpDatagram] | None = None
    notes: list[str] = []
    if ssrc is not None:
        chosen = [
            d for flow in flows.values() for d in flow if int.from_bytes(d.payload[8:12], "big") == ssrc
        ]
        if not chosen:
            raise CaptureError(f"{path} has no RTP with SSRC {ssrc:#010x}")
        notes.append(f"selected SSRC {ssrc:#010x}")
    elif offer_endpoint is not None:
        by_source = [flow for (src, _), flow in flows.items() if src == offer_endpoint]
        by_destination = [flow for (_, dst), flow in flows.items() if dst == answer_endpoint]
        if by_source:
            chosen = by_source[0]
            notes.append(f"caller leg from the INVITE's SDP: {offer_endpoint[0]}:{offer_endpoint[1]}")
        elif by_destination:
            chosen = by_destination[0]
            notes.append("caller leg is the flow to the answer's SDP address (caller behind NAT)")
    if chosen is None:
        first = min(flows.values(), key=lambda flow: flow[0].time)
        chosen = first
        notes.append("no SDP for the caller: using the first RTP flow")
    packets: list[TimedPacket] = []
    origin = chosen[0].time
    for datagram in chosen:
        try:
            packets.append(TimedPacket(datagram.time - origin, RtpPacket.parse(datagram.payload)))
        except RtpParseError:
            continue
    return _with_codecs(packets, names, chosen[0].src, call_id, notes)


def _with_codecs(
    packets: list[TimedPacket], names: dict[int, str], source: Endpoint, call_id: str | None, notes: list[str]
) -> CallerLeg:
    seen = {p.packet.payload_type for p in packets}
    dtmf = [pt for pt, name in names.items() if name == "TELEPHONE-EVENT"]
    audio = [pt for pt in seen if names.get(pt, _STATIC_CODECS.get(pt, "")) in ("PCMU", "PCMA")]
    if audio:
        # The payload type carrying most packets is the codec in use.
        payload_type = max(audio, key=lambda pt: sum(1 for p in packets if p.packet.payload_type == pt))
    elif seen & set(dtmf) or any(96 <= pt <= 127 for pt in seen):
        # Only telephone-events (a sipp DTMF-only leg): decode the digits, assume PCMU audio.
        offered = [pt for pt, name in names.items() if name in ("PCMU", "PCMA")]
        payload_type = offered[0] if offered else 0
        notes.append("the caller leg carries no audio, only telephone-events")
    else:
        raise CaptureError(f"no PCMU/PCMA audio in the caller leg (payload types {sorted(seen)})")
    codec = names.get(payload_type, _STATIC_CODECS.get(payload_type, "PCMU"))
    if dtmf:
        dtmf_pt: int | None = dtmf[0]
    else:
        dynamic = [pt for pt in seen if 96 <= pt <= 127]
        dtmf_pt = dynamic[0] if dynamic else None
        if dtmf_pt is not None:
            notes.append(f"assuming payload type {dtmf_pt} is telephone-event (no SDP)")
    return CallerLeg(packets, codec, payload_type, dtmf_pt, source, call_id, notes)
