"""RFC 3264 offer/answer (sipagent.sip.offer_answer), against SDPs real peers send."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipagent.rtp.packet import RtpPacket
from sipagent.rtp.srtp import CryptoAttribute, CryptoSuite, SrtpParams, SrtpSession
from sipagent.sip.errors import LocalProtocolError, OfferRejected, RemoteProtocolError
from sipagent.sip.offer_answer import MediaSession, NegotiatedMedia, SrtpPolicy
from sipagent.sip.sdes import redact_crypto_keys
from sipagent.sip.sdp import Direction, SessionDescription, parse_sdp
from tests.test_sdp import TELNYX, TWILIO, mutate

SIPP = """\
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

BARESIP = """\
v=0
o=- 1860893946 3596436207 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 10000 RTP/AVP 96 9 0 8 101
b=AS:200
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-rsize
a=sendrecv
a=label:1
a=ssrc:1529409129 cname:a0c4f6e2-7d16-4f55-8d2d-3b7c8b0e0f1e
a=ptime:20
"""

PUBLIC = "203.0.113.7"
SESSION_ID = 3_762_291_023


def session(**kwargs: object) -> MediaSession:
    options: dict[str, object] = {"session_id": SESSION_ID, "public_address": PUBLIC}
    options.update(kwargs)
    return MediaSession("10.0.0.5", 40000, **options)  # type: ignore[arg-type]


def twilio_with(
    version: int, direction: str = "sendrecv", address: str = "54.172.60.1"
) -> SessionDescription:
    text = TWILIO.replace("1538443375 1538443375", f"1538443375 {version}").replace(
        "a=sendrecv", f"a={direction}"
    )
    return parse_sdp(text.replace("c=IN IP4 54.172.60.1", f"c=IN IP4 {address}"))


def wire(sd: SessionDescription) -> str:
    return sd.serialize().decode()


# --- answering real offers ----------------------------------------------------------------------


class TestAnswerRealOffers:
    def test_twilio(self) -> None:
        answer, media = session().answer(parse_sdp(TWILIO))
        assert wire(answer) == (
            "v=0\r\n"
            f"o=- {SESSION_ID} {SESSION_ID} IN IP4 {PUBLIC}\r\n"
            "s=sipagent\r\n"
            f"c=IN IP4 {PUBLIC}\r\n"
            "t=0 0\r\n"
            "m=audio 40000 RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        )
        assert media == NegotiatedMedia(
            remote_address="54.172.60.1",
            remote_port=13236,
            remote_rtcp_address="54.172.60.1",
            remote_rtcp_port=13237,
            payload_type=0,
            codec="PCMU",
            clock_rate=8000,
            dtmf_payload_type=101,
            receive_dtmf_payload_type=101,
            remote_dtmf_events="0-16",
            cn_payload_type=None,
            ptime=20,
            send=True,
            receive=True,
            on_hold=False,
            local_direction=Direction.SENDRECV,
            remote_direction=Direction.SENDRECV,
            local_port=40000,
            stream_index=0,
        )

    def test_our_preference_wins_over_offer_order(self) -> None:
        # Twilio lists PCMU first; an operator preferring PCMA gets PCMA.
        _, media = session(codecs=["PCMA", "PCMU"]).answer(parse_sdp(TWILIO))
        assert (media.payload_type, media.codec) == (8, "PCMA")
        # And an offer listing PCMA first still gets our default PCMU.
        _, media = session().answer(parse_sdp(TWILIO.replace("0 8 101", "8 0 101")))
        assert media.codec == "PCMU"

    def test_telnyx_picks_g711_and_telephone_event_at_8000(self) -> None:
        answer, media = session().answer(parse_sdp(TELNYX))
        (m,) = answer.media
        assert m.formats == ["0", "101"]
        assert m.payload_map()[101].is_codec("telephone-event", 8000)
        assert (media.codec, media.dtmf_payload_type) == ("PCMU", 101)

    def test_telnyx_telephone_event_48000_alone_is_not_dtmf_for_g711(self) -> None:
        text = TELNYX.replace("0 8 9 18 96 101 102", "0 96 102")
        answer, media = session().answer(parse_sdp(text))
        assert answer.media[0].formats == ["0"]
        assert media.dtmf_payload_type is None and media.receive_dtmf_payload_type is None
        assert "telephone-event" not in wire(answer)

    def test_telnyx_opus_and_g722_only_is_488(self) -> None:
        text = TELNYX.replace("0 8 9 18 96 101 102", "9 96 101 102")
        with pytest.raises(OfferRejected) as info:
            session().answer(parse_sdp(text))
        assert info.value.status == 488
        assert "no codec in common" in str(info.value)
        assert "opus/48000/2" in str(info.value) and "PCMU, PCMA" in str(info.value)

    def test_sipp_default(self) -> None:
        answer, media = session().answer(parse_sdp(SIPP))
        assert answer.media[0].formats == ["0"]
        assert (media.remote_address, media.remote_port, media.dtmf_payload_type) == ("127.0.0.1", 6000, None)
        assert media.remote_dtmf_events == "0-15"

    def test_baresip(self) -> None:
        answer, media = session().answer(parse_sdp(BARESIP))
        assert answer.media[0].formats == ["0", "101"]
        assert media.remote_dtmf_events == "0-15"
        assert (media.remote_address, media.remote_port, media.ptime) == ("192.168.1.20", 10000, 20)

    def test_unusual_payload_numbers_are_reused(self) -> None:
        text = (
            "v=0\no=- 1 1 IN IP4 198.51.100.9\ns=-\nc=IN IP4 198.51.100.9\nt=0 0\n"
            "m=audio 30000 RTP/AVP 110 96 105\n"
            "a=rtpmap:110 pcmu/8000\na=rtpmap:96 telephone-event/8000\na=fmtp:96 0-15\n"
            "a=rtpmap:105 CN/8000\n"
        )
        answer, media = session().answer(parse_sdp(text))
        (m,) = answer.media
        assert m.formats == ["110", "96", "105"]
        assert m.attribute_values("rtpmap") == ["110 PCMU/8000", "96 telephone-event/8000", "105 CN/8000"]
        assert m.fmtp(96) == "0-16"
        assert (media.payload_type, media.dtmf_payload_type, media.cn_payload_type) == (110, 96, 105)

    def test_static_comfort_noise_is_accepted(self) -> None:
        answer, media = session().answer(parse_sdp(TWILIO.replace("0 8 101", "0 8 13 101")))
        assert answer.media[0].formats == ["0", "101", "13"]
        assert media.cn_payload_type == 13

    def test_dtmf_can_be_disabled(self) -> None:
        answer, media = session(dtmf=False).answer(parse_sdp(TWILIO))
        assert answer.media[0].formats == ["0"]
        assert media.dtmf_payload_type is None

    def test_rtcp_attribute_and_media_level_connection(self) -> None:
        text = TWILIO.replace(
            "a=sendrecv", "a=sendrecv\nc=IN IP4 54.172.60.2\na=rtcp:13300 IN IP4 54.172.60.3"
        )
        _, media = session().answer(parse_sdp(text))
        assert (media.remote_address, media.remote_port) == ("54.172.60.2", 13236)
        assert (media.remote_rtcp_address, media.remote_rtcp_port) == ("54.172.60.3", 13300)

    @pytest.mark.parametrize(
        ("attributes", "expected"),
        [("a=ptime:30", 30), ("a=ptime:1000", 20), ("a=label:1", 20), ("a=ptime:40\na=maxptime:30", 30)],
    )
    def test_send_ptime_follows_the_peer_when_sane(self, attributes: str, expected: int) -> None:
        answer, media = session().answer(parse_sdp(SIPP + attributes + "\n"))
        assert media.ptime == expected
        assert answer.media[0].ptime == 20  # what we want to receive stays ours

    def test_public_address_not_bind_address_goes_into_sdp(self) -> None:
        answer, _ = session().answer(parse_sdp(TWILIO))
        assert "10.0.0.5" not in wire(answer)
        assert answer.origin.address == answer.connection.address == PUBLIC  # type: ignore[union-attr]

    def test_ipv6_public_address(self) -> None:
        s = MediaSession("::1", 40000, session_id=1, public_address="2001:db8::7")
        sd = s.create_offer()
        assert "c=IN IP6 2001:db8::7\r\n" in wire(sd)
        s.cancel_offer()
        with pytest.raises(OfferRejected, match="unreachable from our IN IP6 address"):
            s.answer(parse_sdp(TWILIO))


# --- direction and hold ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "answered", "send", "receive", "on_hold"),
    [
        ("sendrecv", "sendrecv", True, True, False),
        ("sendonly", "recvonly", False, True, True),
        ("recvonly", "sendonly", True, False, False),
        ("inactive", "inactive", False, False, True),
    ],
)
def test_direction_is_mirrored(offered: str, answered: str, send: bool, receive: bool, on_hold: bool) -> None:
    answer, media = session().answer(twilio_with(1, offered))
    assert answer.media[0].direction_attribute == Direction(answered)
    assert (media.send, media.receive, media.on_hold) == (send, receive, on_hold)
    assert media.remote_direction == Direction(offered)


def test_session_level_direction_is_inherited() -> None:
    text = TWILIO.replace("a=sendrecv\n", "").replace("t=0 0\n", "t=0 0\na=sendonly\n")
    answer, media = session().answer(parse_sdp(text))
    assert answer.media[0].direction_attribute is Direction.RECVONLY
    assert media.on_hold


def test_old_style_hold_with_null_address() -> None:
    answer, media = session().answer(twilio_with(2, "sendrecv", "0.0.0.0"))
    assert answer.media[0].direction_attribute is Direction.RECVONLY
    assert (media.on_hold, media.send, media.receive) == (True, False, True)
    assert media.remote_address == "0.0.0.0"


def test_we_keep_holding_when_the_peer_reoffers() -> None:
    s = session()
    s.answer(twilio_with(1))
    answer, media = s.answer(twilio_with(2), direction="sendonly")
    assert answer.media[0].direction_attribute is Direction.SENDONLY
    assert (media.send, media.receive, media.on_hold) == (True, False, False)


# --- rejection ------------------------------------------------------------------------------------

VIDEO_THEN_AUDIO = (
    "v=0\no=- 1 1 IN IP4 198.51.100.9\ns=-\nc=IN IP4 198.51.100.9\nt=0 0\n"
    "m=video 30002 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    "m=audio 0 RTP/AVP 0\n"
    "m=audio 30000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n"
    "m=audio 30004 RTP/AVP 8\n"
)


def test_unsupported_streams_are_rejected_in_place() -> None:
    answer, media = session().answer(parse_sdp(VIDEO_THEN_AUDIO))
    assert [(m.media, m.port, m.formats) for m in answer.media] == [
        ("video", 0, ["96"]),
        ("audio", 0, ["0"]),
        ("audio", 40000, ["0", "101"]),
        ("audio", 0, ["8"]),  # we take one audio stream
    ]
    assert all(m.attributes == [] for m in answer.media if m.port == 0)
    assert media.stream_index == 2


@pytest.mark.parametrize(
    ("media_lines", "reason"),
    [
        (
            "m=video 30002 RTP/AVP 96\na=rtpmap:96 H264/90000\n",
            "m-line 0 (video RTP/AVP): not an audio stream",
        ),
        ("m=audio 0 RTP/AVP 0\n", "disabled by the offerer (port 0)"),
        ("m=audio 30000 RTP/AVP 18\n", "no codec in common (offered G729/8000"),
        ("m=audio 30000 RTP/AVP 97\n", "no codec in common (offered 97"),
        (
            "m=audio 30000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\n",
            "SRTP (RTP/SAVP) is turned off here (srtp policy 'off')",
        ),
        ("m=audio 30000 UDP/TLS/RTP/SAVPF 0\n", "SRTP (UDP/TLS/RTP/SAVPF) is not supported yet"),
        ("m=audio 30000 TCP/RTP/AVP 0\n", "transport TCP/RTP/AVP is not supported"),
        ("", "the offer has no m= lines"),
    ],
)
def test_no_acceptable_audio_stream_is_488(media_lines: str, reason: str) -> None:
    body = "v=0\no=- 1 1 IN IP4 198.51.100.9\ns=-\nc=IN IP4 198.51.100.9\nt=0 0\n" + media_lines
    s = session()
    with pytest.raises(OfferRejected) as info:
        s.answer(parse_sdp(body, require_media=False))
    assert info.value.status == 488
    assert reason in str(info.value)
    assert s.negotiated is None


def test_accepted_stream_without_connection_is_400() -> None:
    body = "v=0\no=- 1 1 IN IP4 198.51.100.9\ns=-\nt=0 0\nm=audio 30000 RTP/AVP 0\n"
    with pytest.raises(RemoteProtocolError) as info:
        session().answer(parse_sdp(body))
    assert info.value.status_hint == 400
    assert "no c= line" in str(info.value)


def test_rejected_reoffer_leaves_the_session_untouched() -> None:
    s = session()
    first, media = s.answer(twilio_with(1))
    with pytest.raises(OfferRejected):
        s.answer(parse_sdp(TWILIO.replace("0 8 101", "18")))
    assert s.negotiated == media
    again, _ = s.answer(twilio_with(1))
    assert again.serialize() == first.serialize()


def test_reoffer_with_fewer_m_lines_is_rejected() -> None:
    s = session()
    s.answer(parse_sdp(VIDEO_THEN_AUDIO))
    with pytest.raises(OfferRejected, match="m-lines are never removed"):
        s.answer(parse_sdp(TWILIO))


# --- o= version rules (RFC 3264 §8) ---------------------------------------------------------------


def test_version_bumps_only_when_our_sdp_changes() -> None:
    s = session()
    initial, _ = s.answer(twilio_with(100))
    assert initial.origin.sess_version == SESSION_ID
    # Session refresh: the same offer again. Our answer must be byte-identical.
    refresh, _ = s.answer(twilio_with(100))
    assert refresh.serialize() == initial.serialize()
    # Hold: our direction changes, so the version goes up by exactly one.
    hold, media = s.answer(twilio_with(101, "sendonly"))
    assert media.on_hold
    assert hold.origin.sess_version == SESSION_ID + 1
    assert hold.origin.sess_id == initial.origin.sess_id == str(SESSION_ID)
    # A repeated hold offer: unchanged.
    hold_again, _ = s.answer(twilio_with(101, "sendonly"))
    assert hold_again.origin.sess_version == SESSION_ID + 1
    # Unhold: changed again.
    unhold, media = s.answer(twilio_with(102))
    assert not media.on_hold
    assert unhold.origin.sess_version == SESSION_ID + 2
    # Peer bumps its version without changing anything: our answer is the same, no bump.
    same, _ = s.answer(twilio_with(103))
    assert same.origin.sess_version == SESSION_ID + 2


def test_local_changes_bump_the_version() -> None:
    s = session(session_version=0)
    first = s.create_offer()
    assert first.origin.sess_version == 0 and s.session_version == 0
    assert s.create_offer().origin.sess_version == 0
    s.set_local_port(40100)
    moved = s.create_offer()
    assert moved.origin.sess_version == 1
    assert moved.media[0].port == 40100
    s.set_public_address("198.51.100.50")
    readdressed = s.create_offer()
    assert readdressed.origin.sess_version == 2
    assert readdressed.origin.address == readdressed.connection.address == "198.51.100.50"  # type: ignore[union-attr]
    assert s.create_offer("sendonly").origin.sess_version == 3


def test_is_unchanged_follows_the_remote_o_line_and_content() -> None:
    s = session()
    assert not s.is_unchanged(twilio_with(5))
    s.answer(twilio_with(5))
    assert s.is_unchanged(twilio_with(5))
    assert not s.is_unchanged(twilio_with(6))  # version bumped: the peer says it changed
    # Same version, different content: the peer broke RFC 3264 §8; we don't trust the version.
    assert not s.is_unchanged(twilio_with(5, "sendonly"))
    # Mutating the caller's copy does not alter what we remember.
    remembered = twilio_with(7)
    s.answer(remembered)
    remembered.media[0].port = 1
    assert s.is_unchanged(twilio_with(7))


# --- our offers and their answers -----------------------------------------------------------------

ANSWER = """\
v=0
o=root 99 99 IN IP4 54.172.60.1
s=Twilio Media Gateway
c=IN IP4 54.172.60.1
t=0 0
m=audio 15000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""


class TestOffers:
    def test_initial_offer(self) -> None:
        sd = session(codecs=["pcma", "PCMU"]).create_offer()
        assert wire(sd) == (
            "v=0\r\n"
            f"o=- {SESSION_ID} {SESSION_ID} IN IP4 {PUBLIC}\r\n"
            "s=sipagent\r\n"
            f"c=IN IP4 {PUBLIC}\r\n"
            "t=0 0\r\n"
            "m=audio 40000 RTP/AVP 8 0 101\r\n"
            "a=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        )

    def test_answer_to_our_offer(self) -> None:
        s = session()
        s.create_offer()
        assert s.has_pending_offer
        media = s.process_answer(parse_sdp(ANSWER))
        assert not s.has_pending_offer
        assert (media.codec, media.payload_type, media.dtmf_payload_type) == ("PCMU", 0, 101)
        assert (media.remote_address, media.remote_port, media.send, media.receive) == (
            "54.172.60.1",
            15000,
            True,
            True,
        )
        assert s.negotiated == media

    def test_early_media_then_final_answer(self) -> None:
        s = session()
        s.create_offer()
        early = s.process_answer(parse_sdp(ANSWER.replace("a=sendrecv", "a=sendonly")))
        assert (early.send, early.receive) == (False, True)
        final = s.process_answer(parse_sdp(ANSWER))
        assert (final.send, final.receive) == (True, True)

    def test_extra_formats_in_answer_are_ignored(self) -> None:
        s = session()
        s.create_offer()
        media = s.process_answer(parse_sdp(ANSWER.replace("0 101", "9 8 0 101")))
        assert (media.codec, media.payload_type) == ("PCMA", 8)  # the answerer's first usable one

    def test_answerer_renumbering_telephone_event(self) -> None:
        s = session()
        s.create_offer()
        text = (
            ANSWER.replace("0 101", "0 96")
            .replace("101 telephone", "96 telephone")
            .replace("fmtp:101", "fmtp:96")
        )
        media = s.process_answer(parse_sdp(text))
        assert (media.dtmf_payload_type, media.receive_dtmf_payload_type) == (96, 101)
        # Our binding of 101 stays for the rest of the call.
        assert s.create_offer().media[0].formats[-1] == "101"

    @pytest.mark.parametrize(
        ("answer_text", "message"),
        [
            (ANSWER + "m=video 0 RTP/AVP 31\n", "the answer has 2 m-line(s), our offer had 1"),
            (ANSWER.replace("m=audio 15000", "m=audio 0"), "rejected our audio stream (port 0)"),
            (ANSWER.replace("m=audio 15000 RTP/AVP", "m=audio 15000 RTP/SAVP"), "changed our audio stream"),
            (
                ANSWER.replace("RTP/AVP 0 101", "RTP/AVP 18 101"),
                "none of them an audio codec we offered (0 8 101)",
            ),
            (
                ANSWER.replace("rtpmap:0 PCMU", "rtpmap:0 PCMA"),
                "maps payload type 0 to PCMA/8000, we offered it as PCMU/8000",
            ),
        ],
    )
    def test_unusable_answers(self, answer_text: str, message: str) -> None:
        s = session()
        s.create_offer()
        with pytest.raises(OfferRejected) as info:
            s.process_answer(parse_sdp(answer_text))
        assert message in str(info.value)

    def test_codec_we_did_not_offer_is_rejected(self) -> None:
        s = session(codecs=["PCMA"])
        s.create_offer()
        with pytest.raises(OfferRejected, match="none of them an audio codec we offered"):
            s.process_answer(parse_sdp(ANSWER))

    def test_answer_without_offer_is_our_bug(self) -> None:
        with pytest.raises(LocalProtocolError):
            session().process_answer(parse_sdp(ANSWER))

    def test_hold_and_resume_as_offerer(self) -> None:
        s = session()
        s.create_offer()
        s.process_answer(parse_sdp(ANSWER))
        hold = s.create_offer("sendonly")
        assert hold.media[0].direction_attribute is Direction.SENDONLY
        held = s.process_answer(parse_sdp(ANSWER.replace("a=sendrecv", "a=recvonly")))
        assert (held.send, held.receive, held.on_hold) == (True, False, False)
        resume = s.create_offer()
        assert resume.origin.sess_version == hold.origin.sess_version + 1

    def test_offerless_invite_flow(self) -> None:
        # INVITE without SDP: our offer goes in the 200, the answer comes in the ACK.
        s = session()
        in_200 = s.create_offer()
        media = s.process_answer(parse_sdp(SIPP))
        assert in_200.media[0].port == 40000
        assert (media.codec, media.dtmf_payload_type) == ("PCMU", None)

    def test_glare_and_cancel(self) -> None:
        s = session()
        s.create_offer()
        with pytest.raises(LocalProtocolError) as info:
            s.answer(parse_sdp(TWILIO))
        assert info.value.status_hint == 491
        s.cancel_offer()
        _, media = s.answer(parse_sdp(TWILIO))
        assert media.codec == "PCMU"
        with pytest.raises(LocalProtocolError):
            s.process_answer(parse_sdp(ANSWER))  # the answer() cleared our offer

    def test_reoffer_keeps_the_peer_telephone_event_number(self) -> None:
        s = session()
        text = (
            TWILIO.replace("0 8 101", "0 96")
            .replace("101 telephone", "96 telephone")
            .replace("fmtp:101", "fmtp:96")
        )
        s.answer(parse_sdp(text))
        m = s.create_offer("sendonly").media[0]
        assert m.formats == ["0", "8", "96"]
        assert m.fmtp(96) == "0-16"

    def test_reoffer_avoids_numbers_the_peer_bound_elsewhere(self) -> None:
        s = session()
        s.answer(parse_sdp(SIPP.replace("RTP/AVP 0", "RTP/AVP 0 101\na=rtpmap:101 opus/48000/2")))
        assert s.create_offer().media[0].formats == ["0", "8", "96"]

    def test_reoffer_keeps_rejected_m_lines(self) -> None:
        s = session()
        s.answer(parse_sdp(VIDEO_THEN_AUDIO))
        reoffer = s.create_offer("sendonly")
        assert [(m.media, m.port) for m in reoffer.media] == [
            ("video", 0),
            ("audio", 0),
            ("audio", 40000),
            ("audio", 0),
        ]
        reply = parse_sdp(
            VIDEO_THEN_AUDIO.replace("m=video 30002", "m=video 0").replace("m=audio 30004", "m=audio 0")
        )
        media = s.process_answer(reply)
        assert media.stream_index == 2
        assert media.send and not media.receive


def test_constructor_validation() -> None:
    with pytest.raises(LocalProtocolError, match="configure a public address"):
        MediaSession("0.0.0.0", 40000, session_id=1)
    with pytest.raises(LocalProtocolError, match="codecs"):
        MediaSession("10.0.0.5", 40000, session_id=1, codecs=["G729"])
    with pytest.raises(LocalProtocolError, match="codecs"):
        MediaSession("10.0.0.5", 40000, session_id=1, codecs=[])
    with pytest.raises(LocalProtocolError, match="RTP port"):
        MediaSession("10.0.0.5", 0, session_id=1)
    with pytest.raises(LocalProtocolError, match="ptime"):
        MediaSession("10.0.0.5", 40000, session_id=1, ptime=5)
    with pytest.raises(LocalProtocolError, match="session_name"):
        MediaSession("10.0.0.5", 40000, session_id=1, session_name="x\r\nc=IN IP4 6.6.6.6")
    with pytest.raises(LocalProtocolError, match="unknown media direction"):
        session().create_offer("bogus")
    # Binding to any address is fine when a public one is configured.
    assert MediaSession("0.0.0.0", 40000, session_id=1, public_address=PUBLIC).public_address == PUBLIC


def test_negotiated_media_is_frozen_and_validated() -> None:
    _, media = session().answer(parse_sdp(TWILIO))
    with pytest.raises(dataclasses.FrozenInstanceError):
        media.send = False  # type: ignore[misc]
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(media, remote_port=0)
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(media, codec="G729")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_answer_raises_only_protocol_errors(data: st.DataObject) -> None:
    body = mutate(data, data.draw(st.sampled_from([TWILIO, TELNYX, SIPP, BARESIP, VIDEO_THEN_AUDIO])))
    try:
        sd = parse_sdp(body)
    except RemoteProtocolError:
        return
    s = session()
    try:
        answer, media = s.answer(sd)
    except (RemoteProtocolError, OfferRejected):
        return
    assert len(answer.media) == len(sd.media)
    assert parse_sdp(answer.serialize()) == answer
    assert media.codec in ("PCMU", "PCMA")


# --- SRTP (SDES, RFC 4568) ------------------------------------------------------------------------

S80 = CryptoSuite.AES_CM_128_HMAC_SHA1_80
S32 = CryptoSuite.AES_CM_128_HMAC_SHA1_32


def make_key(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()[:30]


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


PEER_80, PEER_32 = make_key("twilio-80"), make_key("twilio-32")

# Twilio over TLS with SRTP enabled on the trunk: RTP/SAVP, both suites, tags 1 and 2.
TWILIO_SRTP = TWILIO.replace("RTP/AVP", "RTP/SAVP").replace(
    "a=sendrecv\n",
    f"a=sendrecv\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)}\n"
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{b64(PEER_32)}\n",
)
# baresip with mediaenc=srtp-mand: one line.
BARESIP_SRTP = BARESIP.replace("RTP/AVP", "RTP/SAVP").replace(
    "a=ptime:20\n", f"a=ptime:20\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)}\n"
)


class FakeRng:
    """Deterministic stand-in for os.urandom: distinct, reproducible keys per call."""

    def __init__(self, seed: str = "ours") -> None:
        self.seed = seed
        self.calls = 0

    def key(self, call: int) -> bytes:
        return make_key(f"{self.seed}-{call}")

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        return self.key(self.calls)[:size]


def srtp_session(policy: str = "optional", rng: FakeRng | None = None, **kwargs: object) -> MediaSession:
    return session(srtp=policy, srtp_rng=rng or FakeRng(), **kwargs)


def crypto_lines(sd: SessionDescription, index: int = 0) -> list[CryptoAttribute]:
    return [CryptoAttribute.parse(v) for v in sd.media[index].crypto]


def srtp_twilio(version: int, offer: str = TWILIO_SRTP) -> SessionDescription:
    return parse_sdp(offer.replace("1538443375 1538443375", f"1538443375 {version}"))


class TestAnswerSrtpOffers:
    def test_twilio_both_suites(self) -> None:
        rng = FakeRng()
        answer, media = srtp_session(rng=rng).answer(parse_sdp(TWILIO_SRTP))
        ours = rng.key(1)
        assert wire(answer) == (
            "v=0\r\n"
            f"o=- {SESSION_ID} {SESSION_ID} IN IP4 {PUBLIC}\r\n"
            "s=sipagent\r\n"
            f"c=IN IP4 {PUBLIC}\r\n"
            "t=0 0\r\n"
            "m=audio 40000 RTP/SAVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(ours)}\r\n"
            "a=sendrecv\r\n"
        )
        assert media.srtp == SrtpParams(S80, local_key_salt=ours, remote_key_salt=PEER_80, tag=1)
        assert rng.calls == 1
        assert (media.codec, media.remote_port) == ("PCMU", 13236)

    def test_our_suite_preference_wins_over_offer_order(self) -> None:
        swapped = TWILIO.replace("RTP/AVP", "RTP/SAVP") + (
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{b64(PEER_32)}\n"
            f"a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)}\n"
        )
        answer, media = srtp_session().answer(parse_sdp(swapped))
        (line,) = crypto_lines(answer)
        assert (line.tag, line.suite) == (9, S80)
        assert media.srtp is not None and media.srtp.remote_key_salt == PEER_80
        # An operator who only wants the 32-bit tag gets it.
        answer, media = srtp_session(srtp_suites=["AES_CM_128_HMAC_SHA1_32"]).answer(parse_sdp(TWILIO_SRTP))
        (line,) = crypto_lines(answer)
        assert (line.tag, line.suite) == (2, S32)
        assert media.srtp is not None and (media.srtp.suite, media.srtp.remote_key_salt) == (S32, PEER_32)

    def test_baresip_single_line(self) -> None:
        rng = FakeRng()
        answer, media = srtp_session("required", rng).answer(parse_sdp(BARESIP_SRTP))
        (m,) = answer.media
        assert (m.proto, m.formats) == ("RTP/SAVP", ["0", "101"])
        assert [str(a) for a in crypto_lines(answer)] == [
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(rng.key(1))}"
        ]
        assert media.srtp == SrtpParams(S80, rng.key(1), PEER_80, 1)

    @pytest.mark.parametrize(
        "bad_line",
        [
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)}|2^20|1:4",  # MKI
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)} UNENCRYPTED_SRTP",
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)} FOO=bar",  # unknown, mandatory
            f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{b64(PEER_80 + PEER_32[:16])}",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "a=crypto:garbage",
            f"a=crypto:inline:{b64(PEER_80)}",
        ],
    )
    def test_unusable_lines_are_skipped_when_another_is_acceptable(self, bad_line: str) -> None:
        offer = TWILIO_SRTP.replace(
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{b64(PEER_32)}\n",
            f"{bad_line}\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{b64(PEER_32)}\n",
        ).replace(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)}\n", "")
        answer, media = srtp_session().answer(parse_sdp(offer))
        (line,) = crypto_lines(answer)
        assert (line.tag, line.suite) == (2, S32)
        assert media.srtp is not None and media.srtp.remote_key_salt == PEER_32

    def test_no_acceptable_crypto_line_is_488_and_keeps_keys_out_of_the_reason(self) -> None:
        offer = TWILIO.replace("RTP/AVP", "RTP/SAVP") + (
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64(PEER_80)}|2^20|1:4\n"
            f"a=crypto:2 AES_256_CM_HMAC_SHA1_32 inline:{b64(PEER_32)}\n"
            f"a=crypto:inline:{b64(PEER_80)}\n"  # mangled: no tag, no suite
            f"a=crypto:{b64(PEER_32)}\n"
        )
        s = srtp_session("required")
        with pytest.raises(OfferRejected) as info:
            s.answer(parse_sdp(offer))
        message = str(info.value)
        assert info.value.status == 488
        assert "no acceptable a=crypto line" in message
        assert "a=crypto:1: a key with an MKI" in message
        assert "a=crypto:2: crypto suite 'AES_256_CM_HMAC_SHA1_32' is not supported" in message
        assert "a=crypto: a=crypto value has 1 field(s), not '<tag> <suite> inline:<key||salt>'" in message
        assert b64(PEER_80) not in message and b64(PEER_32) not in message
        assert s.negotiated is None

    def test_savp_without_crypto_lines_is_488(self) -> None:
        offer = TWILIO.replace("RTP/AVP", "RTP/SAVP")
        with pytest.raises(OfferRejected, match="RTP/SAVP without a=crypto"):
            srtp_session().answer(parse_sdp(offer))

    def test_dtls_srtp_is_still_unsupported(self) -> None:
        offer = TWILIO_SRTP.replace("RTP/SAVP", "UDP/TLS/RTP/SAVP")
        with pytest.raises(
            OfferRejected, match=r"SRTP \(UDP/TLS/RTP/SAVP\) is not supported yet; offer RTP/SAVP"
        ):
            srtp_session().answer(parse_sdp(offer))

    def test_our_own_key_offered_back_is_refused(self) -> None:
        rng = FakeRng()
        s = srtp_session(rng=rng)
        s.answer(srtp_twilio(1))
        reflected = TWILIO_SRTP.replace(b64(PEER_80), b64(rng.key(1))).replace(
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{b64(PEER_32)}\n", ""
        )
        with pytest.raises(OfferRejected, match="the offer reuses our own key"):
            s.answer(srtp_twilio(2, reflected))


@pytest.mark.parametrize(
    ("policy", "offer", "accepted", "secure"),
    [
        ("off", TWILIO, True, False),
        ("off", TWILIO_SRTP, False, False),
        ("optional", TWILIO, True, False),
        ("optional", TWILIO_SRTP, True, True),
        ("required", TWILIO, False, False),
        ("required", TWILIO_SRTP, True, True),
    ],
)
def test_policy_matrix_as_answerer(policy: str, offer: str, accepted: bool, secure: bool) -> None:
    s = srtp_session(policy)
    if not accepted:
        with pytest.raises(OfferRejected) as info:
            s.answer(parse_sdp(offer))
        assert info.value.status == 488
        assert ("SRTP is required" if policy == "required" else "turned off") in str(info.value)
        return
    answer, media = s.answer(parse_sdp(offer))
    assert answer.media[0].proto == ("RTP/SAVP" if secure else "RTP/AVP")
    assert len(answer.media[0].crypto) == (1 if secure else 0)
    assert (media.srtp is not None) == secure


@pytest.mark.parametrize(
    ("policy", "proto", "lines"),
    [("off", "RTP/AVP", 0), ("optional", "RTP/AVP", 0), ("required", "RTP/SAVP", 2)],
)
def test_policy_matrix_as_offerer(policy: str, proto: str, lines: int) -> None:
    rng = FakeRng()
    sd = srtp_session(policy, rng).create_offer()
    assert sd.media[0].proto == proto
    assert len(sd.media[0].crypto) == lines
    if lines:
        assert [(a.tag, a.suite, a.key_salt) for a in crypto_lines(sd)] == [
            (1, S80, rng.key(1)),
            (2, S32, rng.key(2)),
        ]


def test_policy_picks_among_savp_and_avp_streams() -> None:
    # One offer, two ways to take the audio: SRTP first, plain RTP as the fallback.
    both = TWILIO_SRTP + "m=audio 13240 RTP/AVP 0\n"
    _, media = srtp_session("off").answer(parse_sdp(both))
    assert (media.stream_index, media.srtp) == (1, None)
    answer, media = srtp_session("optional").answer(parse_sdp(both))
    assert media.stream_index == 0 and media.srtp is not None
    assert [(m.proto, m.port) for m in answer.media] == [("RTP/SAVP", 40000), ("RTP/AVP", 0)]


def test_constructor_validation_for_srtp() -> None:
    with pytest.raises(LocalProtocolError, match="srtp must be one of"):
        session(srtp="mandatory")
    with pytest.raises(LocalProtocolError, match="needs srtp_rng"):
        session(srtp="required")
    with pytest.raises(LocalProtocolError, match="crypto suite 'AES_256_CM_HMAC_SHA1_80'"):
        srtp_session(srtp_suites=["AES_256_CM_HMAC_SHA1_80"])
    with pytest.raises(LocalProtocolError, match="without repeats"):
        srtp_session(srtp_suites=[])
    assert session().srtp_policy is SrtpPolicy.OFF
    assert srtp_session("required").srtp_policy is SrtpPolicy.REQUIRED


def savp_answer(tag: int, suite: str, key: bytes, extra: str = "") -> str:
    return ANSWER.replace("RTP/AVP", "RTP/SAVP") + f"a=crypto:{tag} {suite} inline:{b64(key)}{extra}\n"


PEER_ANSWER_KEY = make_key("answerer")


class TestSrtpAnswersToOurOffers:
    def test_answer_selects_one_of_our_lines(self) -> None:
        rng = FakeRng()
        s = srtp_session("required", rng)
        s.create_offer()
        media = s.process_answer(parse_sdp(savp_answer(2, "AES_CM_128_HMAC_SHA1_32", PEER_ANSWER_KEY)))
        assert media.srtp == SrtpParams(S32, rng.key(2), PEER_ANSWER_KEY, 2)

    @pytest.mark.parametrize(
        ("answer_text", "message"),
        [
            (savp_answer(3, "AES_CM_128_HMAC_SHA1_80", PEER_ANSWER_KEY), "tag 3 is not one we offered (1 2)"),
            (
                savp_answer(1, "AES_CM_128_HMAC_SHA1_32", PEER_ANSWER_KEY),
                "tag 1 came back as AES_CM_128_HMAC_SHA1_32, we offered AES_CM_128_HMAC_SHA1_80",
            ),
            (savp_answer(1, "AES_CM_128_HMAC_SHA1_80", PEER_ANSWER_KEY, "|1:4"), "MKI"),
            (ANSWER.replace("RTP/AVP", "RTP/SAVP"), "no usable a=crypto line: it has no a=crypto line"),
            (ANSWER, "the answer changed our audio stream to m=audio RTP/AVP"),
        ],
    )
    def test_unusable_answers(self, answer_text: str, message: str) -> None:
        s = srtp_session("required")
        s.create_offer()
        with pytest.raises(OfferRejected) as info:
            s.process_answer(parse_sdp(answer_text))
        assert message in str(info.value)
        assert s.negotiated is None and s.has_pending_offer

    def test_answer_echoing_our_key_is_refused(self) -> None:
        rng = FakeRng()
        s = srtp_session("required", rng)
        s.create_offer()
        with pytest.raises(OfferRejected, match="came back with our own key"):
            s.process_answer(parse_sdp(savp_answer(1, "AES_CM_128_HMAC_SHA1_80", rng.key(1))))

    def test_savp_answer_to_our_plain_offer_is_refused(self) -> None:
        s = srtp_session("optional")
        s.create_offer()
        with pytest.raises(OfferRejected, match="changed our audio stream to m=audio RTP/SAVP"):
            s.process_answer(parse_sdp(savp_answer(1, "AES_CM_128_HMAC_SHA1_80", PEER_ANSWER_KEY)))


class TestSrtpRefreshAndRekey:
    def test_answerer_refresh_keeps_keys_and_version(self) -> None:
        rng = FakeRng()
        s = srtp_session("required", rng)
        first, media = s.answer(srtp_twilio(100))
        # The same offer again (session timer): a byte-identical answer, the same keys.
        again, same = s.answer(srtp_twilio(101))
        assert again.serialize() == first.serialize()
        assert same.srtp == media.srtp
        # Our own refresh re-offers what is in force: same tag, suite, key; o= unchanged.
        refresh = s.refresh_offer()
        assert refresh.origin.sess_version == first.origin.sess_version
        assert refresh.media[0].proto == "RTP/SAVP"
        assert refresh.media[0].crypto == first.media[0].crypto
        reply = savp_answer(1, "AES_CM_128_HMAC_SHA1_80", PEER_80).replace("15000", "13236")
        assert s.process_answer(parse_sdp(reply)).srtp == media.srtp
        assert rng.calls == 1  # one key for the whole call

    def test_offerer_reoffers_keep_the_agreed_line(self) -> None:
        rng = FakeRng()
        s = srtp_session("required", rng)
        s.create_offer()
        agreed = s.process_answer(parse_sdp(savp_answer(2, "AES_CM_128_HMAC_SHA1_32", PEER_ANSWER_KEY)))
        hold = s.create_offer("sendonly")
        assert [str(a) for a in crypto_lines(hold)] == [f"2 AES_CM_128_HMAC_SHA1_32 inline:{b64(rng.key(2))}"]
        held = s.process_answer(
            parse_sdp(
                savp_answer(2, "AES_CM_128_HMAC_SHA1_32", PEER_ANSWER_KEY).replace("sendrecv", "recvonly")
            )
        )
        assert held.srtp == agreed.srtp  # the SrtpSession carries on untouched
        first_refresh = s.refresh_offer()
        s.process_answer(parse_sdp(savp_answer(2, "AES_CM_128_HMAC_SHA1_32", PEER_ANSWER_KEY)))
        second_refresh = s.refresh_offer()
        assert second_refresh.serialize() == first_refresh.serialize()
        assert rng.calls == 2

    def test_optional_policy_keeps_srtp_once_in_force(self) -> None:
        s = srtp_session("optional")
        s.answer(parse_sdp(TWILIO_SRTP))
        reoffer = s.create_offer("sendonly")
        assert reoffer.media[0].proto == "RTP/SAVP" and len(reoffer.media[0].crypto) == 1

    def test_peer_rekey_changes_only_the_remote_key(self) -> None:
        s = srtp_session()
        first, media = s.answer(srtp_twilio(1))
        new_peer_key = make_key("twilio-80-rekeyed")
        answer, rekeyed = s.answer(srtp_twilio(2, TWILIO_SRTP.replace(b64(PEER_80), b64(new_peer_key))))
        assert answer.serialize() == first.serialize()  # our side unchanged: no o= bump
        assert media.srtp is not None and rekeyed.srtp is not None
        assert rekeyed.srtp.local_key_salt == media.srtp.local_key_salt
        assert rekeyed.srtp.remote_key_salt == new_peer_key

    def test_rekey_srtp_draws_new_keys_and_bumps_the_version(self) -> None:
        rng = FakeRng()
        s = srtp_session(rng=rng)
        first, _ = s.answer(srtp_twilio(1))
        s.rekey_srtp()
        second, rekeyed = s.answer(srtp_twilio(1))
        assert second.origin.sess_version == first.origin.sess_version + 1
        assert rekeyed.srtp is not None and rekeyed.srtp.local_key_salt == rng.key(2)
        assert crypto_lines(second)[0].key_salt == rng.key(2)

    def test_rejected_srtp_reoffer_leaves_session_and_keys_alone(self) -> None:
        rng = FakeRng()
        s = srtp_session("required", rng)
        first, media = s.answer(srtp_twilio(1))
        with pytest.raises(OfferRejected, match="SRTP is required"):
            s.answer(twilio_with(2))  # a downgrade to plain RTP
        with pytest.raises(OfferRejected, match="no acceptable a=crypto line"):
            s.answer(srtp_twilio(3, TWILIO_SRTP.replace("AES_CM_128", "AES_256_CM")))
        assert s.negotiated == media
        again, _ = s.answer(srtp_twilio(1))
        assert again.serialize() == first.serialize()
        assert rng.calls == 1


def test_negotiated_media_repr_hides_keys() -> None:
    rng = FakeRng()
    _, media = srtp_session(rng=rng).answer(parse_sdp(TWILIO_SRTP))
    text = repr(media)
    assert "AES_CM_128_HMAC_SHA1_80" in text
    for secret in (rng.key(1), PEER_80):
        assert secret.hex() not in text and b64(secret) not in text and repr(secret) not in text


def test_redact_crypto_keys_for_logs() -> None:
    redacted = redact_crypto_keys(TWILIO_SRTP)
    assert b64(PEER_80) not in redacted and b64(PEER_32) not in redacted
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:***\n" in redacted
    raw = parse_sdp(TWILIO_SRTP).serialize()
    assert b64(PEER_80).encode() not in redact_crypto_keys(raw)
    assert redact_crypto_keys(TWILIO) == TWILIO


@pytest.mark.parametrize(
    ("offerer_policy", "answerer_policy", "answerer_suites", "suite"),
    [
        ("required", "optional", ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"), S80),
        ("required", "required", ("AES_CM_128_HMAC_SHA1_32",), S32),
    ],
)
def test_end_to_end_pair_interoperates(
    offerer_policy: str, answerer_policy: str, answerer_suites: tuple[str, ...], suite: CryptoSuite
) -> None:
    alice = MediaSession("192.0.2.1", 40000, session_id=1, srtp=offerer_policy, srtp_rng=FakeRng("alice"))
    bob = MediaSession(
        "192.0.2.2",
        50000,
        session_id=2,
        srtp=answerer_policy,
        srtp_rng=FakeRng("bob"),
        srtp_suites=answerer_suites,
    )
    offer = parse_sdp(alice.create_offer().serialize())
    answer, bob_media = bob.answer(offer)
    alice_media = alice.process_answer(parse_sdp(answer.serialize()))
    assert alice_media.srtp is not None and bob_media.srtp is not None
    assert alice_media.srtp.suite is bob_media.srtp.suite is suite
    assert alice_media.srtp.local_key_salt == bob_media.srtp.remote_key_salt
    assert alice_media.srtp.remote_key_salt == bob_media.srtp.local_key_salt
    assert alice_media.srtp.local_key_salt != alice_media.srtp.remote_key_salt
    a, b = SrtpSession(alice_media.srtp), SrtpSession(bob_media.srtp)
    for seq in range(5):
        to_bob = RtpPacket(0, seq, seq * 160, 0xA11CE, b"\xff" * 160).serialize()
        to_alice = RtpPacket(0, seq, seq * 160, 0xB0B, b"\x7f" * 160).serialize()
        assert b.unprotect(a.protect(to_bob)) == to_bob
        assert a.unprotect(b.protect(to_alice)) == to_alice
    rr = bytes.fromhex("80c90001000b0b00")
    assert a.unprotect_rtcp(b.protect_rtcp(rr)) == rr
    # A hold re-INVITE from Bob keeps the keys, so both SrtpSessions carry on as they are.
    reoffer = parse_sdp(bob.create_offer("sendonly").serialize())
    reply, alice_held = alice.answer(reoffer)
    bob_held = bob.process_answer(parse_sdp(reply.serialize()))
    assert (alice_held.srtp, bob_held.srtp) == (alice_media.srtp, bob_media.srtp)
    assert alice_held.on_hold


SRTP_SAMPLES = [TWILIO_SRTP, BARESIP_SRTP, TWILIO]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_srtp_answer_raises_only_protocol_errors(data: st.DataObject) -> None:
    body = mutate(data, data.draw(st.sampled_from(SRTP_SAMPLES)))
    try:
        sd = parse_sdp(body)
    except RemoteProtocolError:
        return
    s = srtp_session(data.draw(st.sampled_from(["optional", "required"])))
    try:
        answer, media = s.answer(sd)
    except (RemoteProtocolError, OfferRejected):
        return
    assert parse_sdp(answer.serialize()) == answer
    m = answer.media[media.stream_index]
    assert (m.proto == "RTP/SAVP") == (media.srtp is not None) == (len(m.crypto) == 1)
