"""RFC 3264 offer/answer for our audio-only user agent.

One :class:`MediaSession` per call holds the state that spans offer/answer exchanges. The rules,
in one place:

* **What we speak.** G.711 PCMU (PT 0) and PCMA (PT 8), RFC 4733 ``telephone-event/8000`` (we offer
  PT 101, or whatever number is already bound to it in this call), and we accept comfort noise
  ``CN/8000`` when the peer offers it (we never offer it: we don't generate CN).
* **Answering** (:meth:`MediaSession.answer`): one answer m-line per offer m-line, same order
  (RFC 3264 §6). The first audio ``RTP/AVP`` stream with a codec in common is accepted; every other
  stream is rejected with port 0, keeping its media, proto and formats. Among the offered codecs we
  pick by *our* preference list, not the offerer's order: the list is operator policy (PCMA first
  where the carrier would otherwise transcode), and RFC 3264 §6.1 leaves the choice to the answerer.
  The answer lists exactly one codec so both ends send the same one. Payload type numbers are the
  offerer's (§6.1 SHOULD, commonly missed); ``telephone-event`` and ``CN`` are taken only at the
  codec's clock rate (8000), so ``telephone-event/48000`` (meant for Opus) is ignored.
* **Direction** mirrors the offer (sendonly → recvonly, recvonly → sendonly, inactive → inactive),
  restricted by what we want (we may be holding the peer). ``c=0.0.0.0`` (RFC 2543 hold) means the
  peer is holding us: we answer ``recvonly`` and never send.
* **Rejection.** No acceptable audio stream raises :class:`OfferRejected` (488) naming every
  stream's reason. DTLS-SRTP and AVPF profiles (``UDP/TLS/RTP/SAVP``, ``RTP/SAVPF``…) are
  rejected as not supported yet.
* **SRTP** (SDES, RFC 4568; rules in :mod:`.sdes`): the ``srtp`` policy decides whether
  ``RTP/SAVP`` offers are refused (``off``, the default), accepted alongside ``RTP/AVP``
  (``optional``) or demanded, and offered, instead of it (``required``). An accepted SAVP stream
  is answered with one ``a=crypto`` line: the offered tag and suite, our key. Once SRTP is in
  force our re-offers stay ``RTP/SAVP`` with the same tag, suite and key, whatever the policy,
  so a refresh changes nothing. :attr:`NegotiatedMedia.srtp` carries the keys to the RTP layer.
* **Answers to our offers** (:meth:`MediaSession.process_answer`) must keep the m-line count and
  pick an audio payload type we offered, with the mapping we offered; extra formats the answerer
  lists are ignored (§6.1 allows them; we can't send them).
* **o= line** (§8): one sess-id for the call; sess-version rises by one exactly when the SDP we send
  differs from the last one we sent (so answering an identical re-offer, e.g. a session-timer
  refresh, keeps it). :meth:`MediaSession.is_unchanged` tells the caller when the peer's SDP is the
  same as before (same o= version *and* content), so media need not be touched.
* **Dynamic payload types stay bound** (§8.3.2): once telephone-event has a number in this call,
  our later offers reuse it, and we never offer a number the peer bound to another codec.

Sans-IO: no clock, no randomness of its own. The session id and the SRTP key source
(``srtp_rng``, ``os.urandom`` in production) are injected by the caller.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from ..rtp.srtp import CryptoAttribute, SrtpParams
from .errors import LocalProtocolError, OfferRejected, RemoteProtocolError
from .sdes import (
    DEFAULT_SUITES,
    PLAIN_RTP,
    SAVP,
    LocalKeys,
    SrtpPolicy,
    examine_transport,
    match_answer_crypto,
    offer_crypto,
    parse_suites,
)
from .sdp import (
    STATIC_PAYLOAD_TYPES,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
)

__all__ = [
    "DEFAULT_DTMF_PAYLOAD_TYPE",
    "DTMF_EVENTS",
    "SUPPORTED_CODECS",
    "MediaSession",
    "NegotiatedMedia",
    "SrtpParams",
    "SrtpPolicy",
]

#: Codecs we can encode and decode, with their static RFC 3551 payload types.
SUPPORTED_CODECS: Final = MappingProxyType({"PCMU": 0, "PCMA": 8})
G711_CLOCK_RATE: Final = 8000
DEFAULT_DTMF_PAYLOAD_TYPE: Final = 101
#: RFC 4733 events we can receive: DTMF 0-9 * # A-D and flash (16), as Twilio and Telnyx offer.
DTMF_EVENTS: Final = "0-16"
#: What a peer receives when its telephone-event has no fmtp (RFC 4733 §7.1.1).
_DEFAULT_REMOTE_EVENTS: Final = "0-15"
#: Packetizations we agree to send; outside this a peer's a=ptime is more likely a typo than a wish.
_PTIME_MIN, _PTIME_MAX = 10, 120


@dataclass(frozen=True)
class NegotiatedMedia:
    """The outcome of one offer/answer exchange: what the RTP session must do now.

    Payload types are those to *send* with (the peer's numbers); ``receive_dtmf_payload_type`` is
    the number the peer will use towards us, which differs only when an answerer renumbered
    our telephone-event (RFC 3264 §6.1 says SHOULD NOT, not MUST NOT).
    """

    remote_address: str
    remote_port: int
    remote_rtcp_address: str
    remote_rtcp_port: int
    payload_type: int
    codec: str
    clock_rate: int
    dtmf_payload_type: int | None
    receive_dtmf_payload_type: int | None
    #: The RFC 4733 events the peer accepts (its fmtp), e.g. ``"0-16"``.
    remote_dtmf_events: str
    cn_payload_type: int | None
    #: Packetization to send with, in ms: the peer's a=ptime when sane, else ours.
    ptime: int
    #: May we send media (our direction sends, the peer receives, its address is not null)?
    send: bool
    #: Will the peer send us media?
    receive: bool
    #: The peer has put us on hold (sendonly/inactive towards us, or c=0.0.0.0).
    on_hold: bool
    local_direction: Direction
    remote_direction: Direction
    local_port: int
    #: Index of the audio m-line in the SDP, for later re-offers.
    stream_index: int
    #: SDES-SRTP keys (ours to protect with, the peer's to unprotect with), None for plain RTP.
    #: Keep the :class:`~sipagent.rtp.srtp.SrtpSession` while this stays equal; on a change call
    #: its ``update()``, which rebuilds only the direction whose key changed.
    srtp: SrtpParams | None = None

    def __post_init__(self) -> None:
        for name in ("remote_port", "remote_rtcp_port", "local_port"):
            port = getattr(self, name)
            if not 0 < port <= 65535:
                raise LocalProtocolError(f"NegotiatedMedia.{name} out of range: {port}")
        for pt in (self.payload_type, self.dtmf_payload_type, self.receive_dtmf_payload_type):
            if pt is not None and not 0 <= pt <= 127:
                raise LocalProtocolError(f"NegotiatedMedia payload type out of range: {pt}")
        if self.codec not in SUPPORTED_CODECS:
            raise LocalProtocolError(f"NegotiatedMedia.codec {self.codec!r} is not one we support")
        if self.clock_rate <= 0 or self.ptime <= 0:
            raise LocalProtocolError("NegotiatedMedia clock_rate and ptime must be positive")


@dataclass
class _LocalOffer:
    """An offer we sent, kept until the next exchange: a 183 and a 200 may both answer it."""

    sdp: SessionDescription
    audio_index: int
    direction: Direction
    payloads: dict[int, RtpMap]
    dtmf_payload_type: int | None
    #: Our a=crypto lines when the offer is RTP/SAVP.
    crypto: tuple[CryptoAttribute, ...] = ()
    answered: bool = False


@dataclass(frozen=True)
class _Codecs:
    """The payload types picked from the peer's m-line (its numbers), and its a=crypto line."""

    payload_type: int
    codec: str
    dtmf: int | None
    cn: int | None
    crypto: CryptoAttribute | None = None


class MediaSession:
    """SDP offer/answer state for one call (audio only, one stream).

    ``local_address`` is where the RTP socket binds; ``public_address`` (NAT: configured or STUN
    discovered) is what goes into ``o=`` and ``c=``, and defaults to ``local_address``.
    ``session_id`` is injected so the core stays deterministic; the adapter draws it at random
    (RFC 8866 only asks for uniqueness). ``session_version`` defaults to the session id, as the
    RFC 3264 examples and most stacks do.

    ``srtp`` is the SRTP policy (``"off"``, ``"optional"``, ``"required"``; see :mod:`.sdes`),
    ``srtp_suites`` our suite preference, and ``srtp_rng`` the CSPRNG our SRTP keys come from
    (``os.urandom``), required unless the policy is ``off``.
    """

    def __init__(
        self,
        local_address: str,
        port: int,
        *,
        session_id: int,
        public_address: str | None = None,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        dtmf: bool = True,
        dtmf_payload_type: int = DEFAULT_DTMF_PAYLOAD_TYPE,
        ptime: int = 20,
        session_version: int | None = None,
        username: str = "-",
        session_name: str = "sipagent",
        srtp: SrtpPolicy | str = SrtpPolicy.OFF,
        srtp_suites: Sequence[str] = DEFAULT_SUITES,
        srtp_rng: Callable[[int], bytes] | None = None,
    ) -> None:
        names = [c.upper() for c in codecs]
        unknown = [c for c in names if c not in SUPPORTED_CODECS]
        if not names or unknown or len(set(names)) != len(names):
            raise LocalProtocolError(
                f"codecs must be a non-empty list without repeats from {list(SUPPORTED_CODECS)}, "
                f"got {list(codecs)}"
            )
        if not 96 <= dtmf_payload_type <= 127:
            raise LocalProtocolError(f"dtmf_payload_type must be dynamic (96-127), got {dtmf_payload_type}")
        if not _PTIME_MIN <= ptime <= _PTIME_MAX:
            raise LocalProtocolError(f"ptime must be {_PTIME_MIN}-{_PTIME_MAX} ms, got {ptime}")
        if session_id < 0 or (session_version is not None and session_version < 0):
            raise LocalProtocolError("session_id and session_version must be non-negative")
        if not username or any(c.isspace() for c in username) or any(c in "\r\n\0" for c in session_name):
            raise LocalProtocolError("username must be one token; session_name must be one line")
        try:
            self._srtp = SrtpPolicy(srtp)
        except ValueError:
            raise LocalProtocolError(
                f"srtp must be one of {[p.value for p in SrtpPolicy]}, got {srtp!r}"
            ) from None
        if self._srtp is not SrtpPolicy.OFF and srtp_rng is None:
            raise LocalProtocolError(f"srtp={self._srtp.value!r} needs srtp_rng (os.urandom) for our keys")
        self._srtp_suites = parse_suites(srtp_suites)
        self._keys = LocalKeys(srtp_rng)
        self.local_address = local_address
        self._codecs = names
        self._dtmf = dtmf
        self._preferred_dtmf_pt = dtmf_payload_type
        self._ptime = ptime
        self._username = username
        self._session_name = session_name
        self._session_id = session_id
        self._version = session_id if session_version is None else session_version
        self._advertised = ""
        self._addrtype = ""
        self.set_public_address(public_address or local_address)
        self._port = 0
        self.set_local_port(port)
        self._last_sent: bytes | None = None
        self._local_offer: _LocalOffer | None = None
        self._negotiated: NegotiatedMedia | None = None
        self._remote: SessionDescription | None = None
        # Payload type bindings the peer made in this call (RFC 3264 §8.3.2: they must hold).
        self._remote_payloads: dict[int, RtpMap] = {}
        self._dtmf_pt: int | None = None
        # The m-lines of the session so far; a later SDP may add lines but never remove them.
        self._slots: list[MediaDescription] = []

    # --- configuration ------------------------------------------------------------------------

    @property
    def public_address(self) -> str:
        """The address written into ``o=`` and ``c=``."""
        return self._advertised

    @property
    def port(self) -> int:
        """Our RTP port, written into the audio ``m=`` line."""
        return self._port

    @property
    def session_id(self) -> int:
        """The ``o=`` sess-id, fixed for the call."""
        return self._session_id

    @property
    def session_version(self) -> int:
        """The ``o=`` sess-version of the last SDP we produced."""
        return self._version

    @property
    def negotiated(self) -> NegotiatedMedia | None:
        """The media in force after the last successful exchange, if any."""
        return self._negotiated

    @property
    def has_pending_offer(self) -> bool:
        """We sent an offer that no answer has reached yet."""
        return self._local_offer is not None and not self._local_offer.answered

    @property
    def srtp_policy(self) -> SrtpPolicy:
        """Whether SRTP is off, optional or required for this call."""
        return self._srtp

    def rekey_srtp(self) -> None:
        """Use fresh SRTP keys of ours from the next offer or answer on (RFC 4568 §7.1.4).

        Without this our keys stay the same for the whole call, so a refresh changes nothing.
        """
        self._keys.rekey()

    def set_public_address(self, address: str) -> None:
        """Change the advertised address (e.g. STUN found a new one); the next SDP bumps o=."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None  # a host name: RFC 8866 allows one; "IP4" is what carriers expect with it
        if not address or any(c.isspace() for c in address):
            raise LocalProtocolError(f"invalid media address {address!r}")
        if ip is not None and ip.is_unspecified:
            # A bind-to-any address in c= reads as RFC 2543 hold: the peer would never send to us.
            raise LocalProtocolError(f"cannot advertise {address} in SDP; configure a public address")
        self._advertised = address
        self._addrtype = "IP6" if ip is not None and ip.version == 6 else "IP4"

    def set_local_port(self, port: int) -> None:
        """Change our RTP port; takes effect in the next SDP we produce (which bumps o=)."""
        if not 0 < port <= 65535:
            raise LocalProtocolError(f"RTP port out of range: {port}")
        self._port = port

    # --- offers ---------------------------------------------------------------------------------

    def create_offer(self, direction: Direction | str = Direction.SENDRECV) -> SessionDescription:
        """Our offer: an outbound INVITE, a re-INVITE (``sendonly`` to hold), or the 200 to an
        INVITE that came without SDP. Earlier m-lines of the session are kept, rejected, so the
        count never shrinks (RFC 3264 §8)."""
        wanted = _as_direction(direction)
        dtmf_pt = self._local_dtmf_payload_type() if self._dtmf else None
        payloads = {SUPPORTED_CODECS[name]: RtpMap(name, G711_CLOCK_RATE) for name in self._codecs}
        if dtmf_pt is not None:
            payloads[dtmf_pt] = RtpMap("telephone-event", G711_CLOCK_RATE)
        current = self._negotiated
        crypto = offer_crypto(self._keys, self._srtp, self._srtp_suites, current.srtp if current else None)
        audio = self._audio_media(SAVP if crypto else PLAIN_RTP, payloads, dtmf_pt, wanted, crypto)
        index = current.stream_index if current is not None else 0
        media = [_rejected(slot) for slot in self._slots] or [audio]
        media[index] = audio
        sdp = self._stamp(media)
        self._local_offer = _LocalOffer(sdp, index, wanted, payloads, dtmf_pt, crypto)
        return sdp

    def refresh_offer(self) -> SessionDescription:
        """The offer of a session refresh (RFC 4028 re-INVITE): the media already agreed, unchanged.

        It lists only the negotiated codec (and telephone-event/CN as agreed) with our current
        direction, so the o= version stays put when nothing changed and the peer has no reason to
        switch codec mid-call. Before any negotiation it is a plain :meth:`create_offer`.
        """
        current = self._negotiated
        if current is None:
            return self.create_offer()
        payloads = {current.payload_type: RtpMap(current.codec, G711_CLOCK_RATE)}
        if current.dtmf_payload_type is not None:
            payloads[current.dtmf_payload_type] = RtpMap("telephone-event", G711_CLOCK_RATE)
        if current.cn_payload_type is not None:
            payloads[current.cn_payload_type] = RtpMap("CN", G711_CLOCK_RATE)
        crypto = offer_crypto(self._keys, self._srtp, self._srtp_suites, current.srtp)
        audio = self._audio_media(
            SAVP if crypto else PLAIN_RTP,
            payloads,
            current.dtmf_payload_type,
            current.local_direction,
            crypto,
        )
        media = [_rejected(slot) for slot in self._slots] or [audio]
        media[current.stream_index] = audio
        sdp = self._stamp(media)
        self._local_offer = _LocalOffer(
            sdp, current.stream_index, current.local_direction, payloads, current.dtmf_payload_type, crypto
        )
        return sdp

    def cancel_offer(self) -> None:
        """Forget our outstanding offer (the re-INVITE failed, or lost a 491 glare)."""
        self._local_offer = None

    def process_answer(self, answer: SessionDescription) -> NegotiatedMedia:
        """Apply the answer to our last offer (from a 18x, a 2xx or an ACK).

        Raises :class:`OfferRejected` when the answer cannot be used (wrong m-line count, our audio
        stream rejected, no payload type we offered, no a=crypto line matching our SRTP offer),
        :class:`RemoteProtocolError` when it is malformed, :class:`LocalProtocolError` when no
        offer of ours is outstanding.
        """
        offer = self._local_offer
        if offer is None:
            raise LocalProtocolError("an SDP answer arrived but we have no offer outstanding")
        if len(answer.media) != len(offer.sdp.media):
            raise OfferRejected(
                f"the answer has {len(answer.media)} m-line(s), our offer had {len(offer.sdp.media)}"
                " (RFC 3264 §6 requires the same number)"
            )
        m = answer.media[offer.audio_index]
        if m.media.lower() != "audio" or m.proto.upper() != (SAVP if offer.crypto else PLAIN_RTP):
            raise OfferRejected(f"the answer changed our audio stream to m={m.media} {m.proto} (RFC 3264 §6)")
        if m.is_rejected:
            raise OfferRejected("the answer rejected our audio stream (port 0)")
        codecs = self._codecs_from_answer(m, offer)
        srtp: SrtpParams | None = None
        if offer.crypto:
            ours, theirs = match_answer_crypto(m.crypto, offer.crypto)
            srtp = SrtpParams(ours.suite, ours.key_salt, theirs.key_salt, ours.tag)
        remote_direction = answer.media_direction(m)
        connection = _connection(answer, m, offer.audio_index)
        held = connection.is_null or (offer.direction.sends and not remote_direction.receives)
        local = offer.direction.restricted_to(remote_direction.mirrored())
        if connection.is_null:
            local = local.restricted_to(Direction.RECVONLY)
        result = self._negotiate(
            answer, m, offer.audio_index, codecs, offer.dtmf_payload_type, local, remote_direction, held, srtp
        )
        offer.answered = True
        self._slots = [_rejected(x) for x in offer.sdp.media]
        return result

    # --- answers --------------------------------------------------------------------------------

    def answer(
        self, offer: SessionDescription, *, direction: Direction | str = Direction.SENDRECV
    ) -> tuple[SessionDescription, NegotiatedMedia]:
        """Answer a peer's offer; ``direction`` is what we want (``sendonly`` while we hold them).

        Raises :class:`OfferRejected` (488) when no audio stream is acceptable,
        :class:`RemoteProtocolError` (400) when the chosen stream has no ``c=`` address, and
        :class:`LocalProtocolError` (hint 491) when our own offer is still outstanding (glare).
        """
        wanted = _as_direction(direction)
        if self.has_pending_offer:
            raise LocalProtocolError("an SDP offer arrived while ours is outstanding", status_hint=491)
        if len(offer.media) < len(self._slots):
            raise OfferRejected(
                f"the offer has {len(offer.media)} m-line(s), fewer than the {len(self._slots)} of "
                "this session (RFC 3264 §8: m-lines are never removed)"
            )
        reasons: list[str] = []
        chosen: tuple[int, _Codecs, Connection] | None = None
        for index, m in enumerate(offer.media):
            if chosen is not None:
                continue
            reason, codecs = self._examine(offer, m)
            if codecs is None:
                reasons.append(f"m-line {index} ({m.media} {m.proto}): {reason}")
            else:
                chosen = (index, codecs, _connection(offer, m, index))
        if chosen is None:
            detail = "; ".join(reasons) or "the offer has no m= lines"
            raise OfferRejected(f"no acceptable audio stream: {detail}")
        index, codecs, connection = chosen
        m = offer.media[index]
        remote_direction = offer.media_direction(m)
        local = wanted.restricted_to(remote_direction.mirrored())
        if connection.is_null:
            local = local.restricted_to(Direction.RECVONLY)
        held = connection.is_null or not remote_direction.receives
        payloads = {codecs.payload_type: RtpMap(codecs.codec, G711_CLOCK_RATE)}
        if codecs.dtmf is not None:
            payloads[codecs.dtmf] = RtpMap("telephone-event", G711_CLOCK_RATE)
        if codecs.cn is not None:
            payloads[codecs.cn] = RtpMap("CN", G711_CLOCK_RATE)
        # Everything that can reject the offer has run by now, so a rejected re-offer leaves the
        # session state (our keys included) and our o= version untouched.
        srtp: SrtpParams | None = None
        crypto: tuple[CryptoAttribute, ...] = ()
        if codecs.crypto is not None:
            crypto = (self._keys.attribute(codecs.crypto.tag, codecs.crypto.suite),)
            srtp = SrtpParams(
                codecs.crypto.suite, crypto[0].key_salt, codecs.crypto.key_salt, codecs.crypto.tag
            )
        media = [_rejected(x) for x in offer.media]
        media[index] = self._audio_media(m.proto, payloads, codecs.dtmf, local, crypto)
        negotiated = self._negotiate(
            offer, m, index, codecs, codecs.dtmf, local, remote_direction, held, srtp
        )
        self._local_offer = None
        self._slots = [_rejected(x) for x in offer.media]
        return self._stamp(media), negotiated

    def is_unchanged(self, remote: SessionDescription) -> bool:
        """Whether ``remote`` is the peer's previous SDP again, so media need not be reconfigured.

        True only if the o= line (sess-version included) *and* the content are the same. A peer
        that changes its SDP without bumping the version breaks RFC 3264 §8; we treat that as a
        change rather than trust the version and keep stale media (so: False).
        """
        return self._remote is not None and self._remote == remote

    # --- internals ------------------------------------------------------------------------------

    def _examine(self, sd: SessionDescription, m: MediaDescription) -> tuple[str, _Codecs | None]:
        """Whether we can take this offered stream: a reason why not, or the codecs to use."""
        if m.is_rejected:
            return "disabled by the offerer (port 0)", None
        if m.media.lower() != "audio":
            return "not an audio stream", None
        reason, crypto = examine_transport(
            m.proto, m.crypto, self._srtp, self._srtp_suites, self._keys.in_use
        )
        if reason:
            return reason, None
        connection = sd.media_connection(m)
        if connection is not None and (
            connection.nettype.upper() != "IN" or connection.addrtype.upper() != self._addrtype
        ):
            return (
                f"address {connection.nettype} {connection.addrtype} is unreachable from our "
                f"IN {self._addrtype} address",
                None,
            )
        offered = m.payload_map()
        for name in self._codecs:
            pt = _find(offered, name, G711_CLOCK_RATE)
            if pt is not None:
                dtmf = _find(offered, "telephone-event", G711_CLOCK_RATE) if self._dtmf else None
                return "", _Codecs(pt, name, dtmf, _find(offered, "CN", G711_CLOCK_RATE), crypto)
        listed = ", ".join(str(x) for x in offered.values()) or " ".join(m.formats) or "nothing"
        return f"no codec in common (offered {listed}; we support {', '.join(self._codecs)})", None

    def _codecs_from_answer(self, m: MediaDescription, offer: _LocalOffer) -> _Codecs:
        # A dynamic type without a=rtpmap breaks RFC 3264 §6.1 (MUST); assume the number still
        # means what we offered rather than fail the call.
        explicit = m.rtpmap()
        mapping = {
            pt: explicit.get(pt) or STATIC_PAYLOAD_TYPES.get(pt) or offer.payloads.get(pt)
            for pt in m.payload_types()
        }
        chosen: tuple[int, str] | None = None
        for pt, rtpmap in mapping.items():
            ours = offer.payloads.get(pt)
            if ours is None or ours.encoding not in SUPPORTED_CODECS:
                continue  # extra formats (§6.1 allows them) and our telephone-event
            if rtpmap is None or not rtpmap.is_codec(ours.encoding, ours.clock_rate):
                raise OfferRejected(f"the answer maps payload type {pt} to {rtpmap}, we offered it as {ours}")
            chosen = (pt, ours.encoding)
            break
        if chosen is None:
            raise OfferRejected(
                f"the answer lists payload types {' '.join(m.formats) or '(none)'}, none of them an "
                f"audio codec we offered ({' '.join(str(pt) for pt in offer.payloads)})"
            )
        known = {pt: r for pt, r in mapping.items() if r is not None}
        dtmf: int | None = None
        ours_dtmf = offer.dtmf_payload_type
        if ours_dtmf is not None:
            # Prefer our own number; an answerer that renumbered it is still understood.
            same = ours_dtmf in known and known[ours_dtmf].is_codec("telephone-event", G711_CLOCK_RATE)
            dtmf = ours_dtmf if same else _find(known, "telephone-event", G711_CLOCK_RATE)
        # We never offer CN, so CN in the answer is not ours to use.
        return _Codecs(chosen[0], chosen[1], dtmf, None)

    def _negotiate(
        self,
        remote: SessionDescription,
        m: MediaDescription,
        index: int,
        codecs: _Codecs,
        receive_dtmf: int | None,
        local: Direction,
        remote_direction: Direction,
        held: bool,
        srtp: SrtpParams | None,
    ) -> NegotiatedMedia:
        connection = _connection(remote, m, index)
        rtcp = m.rtcp
        if rtcp is not None and rtcp.port > 0:
            rtcp_address = rtcp.connection.address if rtcp.connection else connection.address
            rtcp_port = rtcp.port
        else:
            rtcp_address = connection.address
            rtcp_port = m.port + 1 if m.port < 65535 else m.port
        wanted_ptime = m.ptime or remote.ptime
        ptime = wanted_ptime if wanted_ptime and _PTIME_MIN <= wanted_ptime <= _PTIME_MAX else self._ptime
        max_ptime = m.maxptime or remote.maxptime
        if max_ptime is not None and _PTIME_MIN <= max_ptime < ptime:
            ptime = max_ptime
        result = NegotiatedMedia(
            remote_address=connection.address,
            remote_port=m.port,
            remote_rtcp_address=rtcp_address,
            remote_rtcp_port=rtcp_port,
            payload_type=codecs.payload_type,
            codec=codecs.codec,
            clock_rate=G711_CLOCK_RATE,
            dtmf_payload_type=codecs.dtmf,
            receive_dtmf_payload_type=receive_dtmf if codecs.dtmf is not None else None,
            remote_dtmf_events=(m.fmtp(codecs.dtmf) if codecs.dtmf is not None else None)
            or _DEFAULT_REMOTE_EVENTS,
            cn_payload_type=codecs.cn,
            ptime=ptime,
            send=local.sends,
            receive=local.receives,
            on_hold=held,
            local_direction=local,
            remote_direction=remote_direction,
            local_port=self._port,
            stream_index=index,
            srtp=srtp,
        )
        self._negotiated = result
        self._remote = copy.deepcopy(remote)
        self._remote_payloads.update(m.payload_map())
        if result.receive_dtmf_payload_type is not None:
            self._dtmf_pt = result.receive_dtmf_payload_type
        return result

    def _local_dtmf_payload_type(self) -> int:
        """The number for telephone-event in our offers (RFC 3264 §8.3.2: keep bindings)."""
        if self._dtmf_pt is not None:
            return self._dtmf_pt
        taken = {
            pt
            for pt, r in self._remote_payloads.items()
            if not r.is_codec("telephone-event", G711_CLOCK_RATE)
        }
        candidates = [self._preferred_dtmf_pt, *range(96, 128)]
        return next((pt for pt in candidates if pt not in taken), self._preferred_dtmf_pt)

    def _audio_media(
        self,
        proto: str,
        payloads: dict[int, RtpMap],
        dtmf_pt: int | None,
        direction: Direction,
        crypto: Sequence[CryptoAttribute] = (),
    ) -> MediaDescription:
        m = MediaDescription(
            media="audio", port=self._port, proto=proto, formats=[str(pt) for pt in payloads]
        )
        # rtpmap even for static types: RFC 3264 §6.1 SHOULD, and some SBCs insist.
        for pt, rtpmap in payloads.items():
            m.add_attribute("rtpmap", f"{pt} {rtpmap}")
        if dtmf_pt is not None:
            m.add_attribute("fmtp", f"{dtmf_pt} {DTMF_EVENTS}")
        m.add_attribute("ptime", str(self._ptime))
        for attribute in crypto:
            m.add_attribute("crypto", str(attribute))
        # Always explicit, even sendrecv: some peers treat a missing attribute as "no change".
        m.add_attribute(direction.value)
        return m

    def _stamp(self, media: list[MediaDescription]) -> SessionDescription:
        """Wrap m-lines into our SDP, bumping sess-version iff the content changed (RFC 3264 §8)."""
        sdp = SessionDescription(
            origin=self._origin(0),
            session_name=self._session_name,
            connection=Connection("IN", self._addrtype, self._advertised),
            timing=[Timing(0, 0)],
            media=media,
        )
        content = sdp.serialize()  # with version 0, so only real changes differ
        if self._last_sent is not None and content != self._last_sent:
            self._version += 1
        self._last_sent = content
        sdp.origin = self._origin(self._version)
        return sdp

    def _origin(self, version: int) -> Origin:
        return Origin(self._username, str(self._session_id), version, "IN", self._addrtype, self._advertised)


def _as_direction(value: Direction | str) -> Direction:
    try:
        return Direction(value)
    except ValueError:
        raise LocalProtocolError(f"unknown media direction {value!r}") from None


def _find(payloads: dict[int, RtpMap], encoding: str, clock_rate: int) -> int | None:
    """The first payload type (in m= order) for that codec, mono."""
    return next(
        (pt for pt, r in payloads.items() if r.is_codec(encoding, clock_rate) and r.channels == 1),
        None,
    )


def _connection(sd: SessionDescription, m: MediaDescription, index: int) -> Connection:
    connection = sd.media_connection(m)
    if connection is None:
        raise RemoteProtocolError(
            f"SDP m-line {index} ({m.media}) has no c= line at media or session level", status_hint=400
        )
    return connection


def _rejected(m: MediaDescription) -> MediaDescription:
    """The answer (or re-offer) form of a stream we don't take: port 0, same formats, no lines.

    RFC 3264 §6 wants at least one format even on a rejected line, so an empty list gets "0".
    """
    return MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats) or ["0"])
