"""SDP model, parser and serializer (sipagent.sip.sdp)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipagent.sip.errors import LocalProtocolError, RemoteProtocolError
from sipagent.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    Bandwidth,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtcpAttribute,
    RtpMap,
    SessionDescription,
    Timing,
    parse_sdp,
)


def crlf(text: str) -> bytes:
    """Test SDPs are written with LF for readability; the wire has CRLF."""
    return text.replace("\n", "\r\n").encode()


TWILIO = """\
v=0
o=root 1538443375 1538443375 IN IP4 54.172.60.1
s=Twilio Media Gateway
c=IN IP4 54.172.60.1
t=0 0
m=audio 13236 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
"""

TELNYX = """\
v=0
o=- 1701234567 1701234568 IN IP4 192.76.120.10
s=Telnyx Media Gateway
c=IN IP4 192.76.120.10
t=0 0
m=audio 23456 RTP/AVP 0 8 9 18 96 101 102
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:102 telephone-event/48000
a=fmtp:102 0-16
a=ptime:20
a=sendrecv
"""

# Everything RFC 8866 defines, in canonical order, plus an unknown line type.
EVERYTHING = """\
v=0
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
s=SDP Seminar
i=A Seminar on the session description protocol
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
p=+1 617 555-6011
c=IN IP4 224.2.17.12/127
b=CT:128
t=2873397496 2873404696
r=604800 3600 0 90000
t=0 0
z=2882844526 -1h 2898848070 0
k=prompt
x=an unknown line type
a=recvonly
a=tool:sdpgen 1.0
m=audio 49170/2 RTP/AVP 0
i=voice
c=IN IP4 224.2.17.13/127
b=AS:64
k=prompt
y=another unknown
a=ptime:20
m=video 51372 RTP/AVP 99
a=rtpmap:99 h263-1998/90000
"""


class TestParse:
    def test_twilio_offer(self) -> None:
        sd = parse_sdp(crlf(TWILIO))
        assert sd.version == 0
        assert sd.origin == Origin("root", "1538443375", 1538443375, "IN", "IP4", "54.172.60.1")
        assert sd.session_name == "Twilio Media Gateway"
        assert sd.connection == Connection("IN", "IP4", "54.172.60.1")
        assert sd.timing == [Timing(0, 0)]
        (m,) = sd.media
        assert (m.media, m.port, m.proto, m.formats) == ("audio", 13236, "RTP/AVP", ["0", "8", "101"])
        assert m.rtpmap() == {
            0: RtpMap("PCMU", 8000),
            8: RtpMap("PCMA", 8000),
            101: RtpMap("telephone-event", 8000),
        }
        assert m.fmtp(101) == "0-16"
        assert m.fmtp(0) is None
        assert (m.ptime, m.maxptime) == (20, 150)
        assert sd.media_direction(m) is Direction.SENDRECV
        assert sd.media_connection(m) == sd.connection
        assert m.rtcp is None and not m.rtcp_mux and m.crypto == []
        # Attributes keep their order and their flag/value distinction.
        assert m.attributes[-1] == ("sendrecv", None)
        assert m.attributes[0] == ("rtpmap", "0 PCMU/8000")

    def test_telnyx_offer_payload_map(self) -> None:
        (m,) = parse_sdp(crlf(TELNYX)).media
        assert list(m.payload_map()) == [0, 8, 9, 18, 96, 101, 102]
        assert m.payload_map()[96] == RtpMap("opus", 48000, 2)
        assert str(m.payload_map()[96]) == "opus/48000/2"
        assert m.payload_map()[102].is_codec("TELEPHONE-EVENT", 48000)
        assert m.fmtp(18) == "annexb=no"

    def test_lf_only_cr_only_and_crlf_read_the_same(self) -> None:
        reference = parse_sdp(crlf(TWILIO))
        assert parse_sdp(TWILIO) == reference
        assert parse_sdp(TWILIO.encode()) == reference
        assert parse_sdp(TWILIO.replace("\n", "\r")) == reference
        # Trailing blanks and blank lines, as sloppy peers send them.
        assert parse_sdp(TWILIO.replace("\n", "  \n") + "\n\n") == reference

    def test_static_payload_types_need_no_rtpmap(self) -> None:
        sd = parse_sdp(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 4000 RTP/AVP 0 8 13 97\n"
        )
        (m,) = sd.media
        assert m.rtpmap() == {}
        # 97 is dynamic without a=rtpmap: it has no known meaning.
        assert m.payload_map() == {
            0: STATIC_PAYLOAD_TYPES[0],
            8: RtpMap("PCMA", 8000),
            13: RtpMap("CN", 8000),
        }

    def test_explicit_rtpmap_wins_over_static_table(self) -> None:
        m = MediaDescription(media="audio", port=1, proto="RTP/AVP", formats=["0", "x", "200"])
        m.add_attribute("rtpmap", "0 pcmu/8000")
        m.add_attribute("rtpmap", "broken")
        m.add_attribute("rtpmap", "300 foo/8000")
        assert m.payload_types() == [0]
        assert m.payload_map() == {0: RtpMap("pcmu", 8000)}

    def test_everything_parses_and_round_trips_byte_for_byte(self) -> None:
        sd = parse_sdp(EVERYTHING)
        assert sd.information == "A Seminar on the session description protocol"
        assert sd.uri == "http://www.example.com/seminars/sdp.pdf"
        assert sd.emails == ["j.doe@example.com (Jane Doe)"]
        assert sd.phones == ["+1 617 555-6011"]
        assert sd.bandwidths == [Bandwidth("CT", 128)]
        assert sd.timing == [Timing(2873397496, 2873404696, ("604800 3600 0 90000",)), Timing(0, 0)]
        assert sd.time_zones == "2882844526 -1h 2898848070 0"
        assert sd.encryption_key == "prompt"
        assert sd.other_lines == [("x", "an unknown line type")]
        assert sd.direction is Direction.RECVONLY
        audio, video = sd.media
        assert (audio.port, audio.port_count, audio.information) == (49170, 2, "voice")
        assert audio.connection == Connection("IN", "IP4", "224.2.17.13/127")
        assert audio.bandwidths == [Bandwidth("AS", 64)]
        assert audio.other_lines == [("y", "another unknown")]
        # Session-level direction is inherited by streams that don't say.
        assert sd.media_direction(video) is Direction.RECVONLY
        assert sd.media_connection(video) == sd.connection
        assert sd.serialize() == crlf(EVERYTHING)

    def test_serialize_puts_fields_in_canonical_order(self) -> None:
        scrambled = (
            "v=0\no=- 7 8 IN IP4 192.0.2.1\na=sendonly\nt=0 0\nx=unknown\nc=IN IP4 192.0.2.1\ns=-\n"
            "m=audio 5000 RTP/AVP 0\na=ptime:20\nc=IN IP4 192.0.2.2\nb=AS:80\n"
        )
        out = parse_sdp(scrambled).serialize()
        assert out == crlf(
            "v=0\no=- 7 8 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nx=unknown\na=sendonly\n"
            "m=audio 5000 RTP/AVP 0\nc=IN IP4 192.0.2.2\nb=AS:80\na=ptime:20\n"
        )
        assert parse_sdp(out) == parse_sdp(scrambled)

    def test_missing_s_and_t_are_filled_in(self) -> None:
        sd = parse_sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 1.2.3.4\nm=audio 4000 RTP/AVP 0\n")
        assert sd.session_name == "-"
        assert sd.timing == [Timing(0, 0)]
        assert b"s=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n" in sd.serialize()

    def test_empty_session_name_is_written_as_one_space(self) -> None:
        sd = parse_sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns= \nt=0 0\nm=audio 4000 RTP/AVP 0\n")
        assert sd.session_name == ""
        assert b"\r\ns= \r\n" in sd.serialize()
        assert parse_sdp(sd.serialize()) == sd

    def test_media_level_connection_overrides_session(self) -> None:
        sd = parse_sdp(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\n"
            "m=audio 4000 RTP/AVP 0\nc=IN IP4 5.6.7.8\nm=audio 4002 RTP/AVP 0\n"
        )
        first, second = sd.media
        assert sd.media_connection(first) == Connection("IN", "IP4", "5.6.7.8")
        assert sd.media_connection(second) == Connection("IN", "IP4", "1.2.3.4")

    def test_no_connection_anywhere(self) -> None:
        sd = parse_sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n")
        assert sd.media_connection(sd.media[0]) is None

    def test_media_direction_overrides_session(self) -> None:
        sd = parse_sdp(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\na=inactive\n"
            "m=audio 4000 RTP/AVP 0\na=sendRecv\nm=audio 4002 RTP/AVP 0\n"
        )
        assert [sd.media_direction(m) for m in sd.media] == [Direction.SENDRECV, Direction.INACTIVE]

    def test_crypto_rtcp_and_ptime_helpers(self) -> None:
        sd = parse_sdp(
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\n"
            "m=audio 4000 RTP/SAVP 0\n"
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\n"
            "a=rtcp:53020 IN IP4 126.16.64.4\na=rtcp-mux\na=ptime:20.0\n"
            "m=audio 4002 RTP/AVP 0\na=rtcp:4009\na=ptime:fast\n"
            "m=audio 4004 RTP/AVP 0\na=rtcp:99999\n"
        )
        first, second, third = sd.media
        assert first.crypto == [
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj",
        ]
        assert first.rtcp == RtcpAttribute(53020, Connection("IN", "IP4", "126.16.64.4"))
        assert first.rtcp_mux
        assert first.ptime == 20
        assert second.rtcp == RtcpAttribute(4009)
        assert second.ptime is None
        assert third.rtcp is None

    def test_latin1_session_name_is_tolerated(self) -> None:
        body = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=Sitzung Müller\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
        assert parse_sdp(body.encode("latin-1")).session_name == "Sitzung Müller"
        assert parse_sdp(body.encode("utf-8")).session_name == "Sitzung Müller"

    def test_require_media_can_be_relaxed(self) -> None:
        body = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n"
        assert parse_sdp(body, require_media=False).media == []


HEAD = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\n"
AUDIO = "m=audio 4000 RTP/AVP 0\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty body"),
        ("\r\n\r\n", "empty body"),
        ("o=- 1 1 IN IP4 1.2.3.4\nv=0\n", "line 1: the first line must be v=, got o="),
        ("v=1\no=- 1 1 IN IP4 1.2.3.4\n" + AUDIO, "unsupported SDP version 1"),
        ("v=zero\n", "v= version is not a non-negative integer: 'zero'"),
        ("v=0\ns=-\nt=0 0\n" + AUDIO, "missing o= line"),
        ("v=0\no=- 1 IN IP4 1.2.3.4\n" + AUDIO, "line 2: o= needs 6 fields"),
        ("v=0\no=- 1 v2 IN IP4 1.2.3.4\n" + AUDIO, "o= sess-version is not a non-negative integer: 'v2'"),
        ("v=0\no=- 1 +1 IN IP4 1.2.3.4\n" + AUDIO, "o= sess-version is not a non-negative integer"),
        (HEAD, "no m= line"),
        (HEAD + "m=audio 70000 RTP/AVP 0\n", "line 6: m= port 70000 is out of range (0-65535)"),
        (HEAD + "m=audio -1 RTP/AVP 0\n", "m= port is not a non-negative integer: '-1'"),
        (HEAD + "m=audio ５０００ RTP/AVP 0\n", "m= port is not a non-negative integer"),
        (HEAD + "m=audio 4000/0 RTP/AVP 0\n", "m= port count must be at least 1"),
        (HEAD + "m=audio 4000\n", "m= needs <media> <port> <proto> <fmt>"),
        ("v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN 1.2.3.4\n" + AUDIO, "c= needs 3 fields"),
        (HEAD + "b=AS\n" + AUDIO, "b= needs <bwtype>:<bandwidth>"),
        (HEAD + "b=AS:lots\n" + AUDIO, "b= bandwidth is not a non-negative integer"),
        ("v=0\no=- 1 1 IN IP4 1.2.3.4\nt=0\n" + AUDIO, "t= needs <start> <stop>"),
        ("v=0\no=- 1 1 IN IP4 1.2.3.4\nr=7d 1h 0\n" + AUDIO, "r= line before any t= line"),
        (HEAD + "o=- 2 2 IN IP4 1.2.3.4\n" + AUDIO, "more than one o= line in the session section"),
        (HEAD + "c=IN IP4 1.2.3.5\n" + AUDIO, "more than one c= line"),
        (HEAD + AUDIO + "i=a\ni=b\n", "more than one i= line in the m= section 1"),
        (HEAD + AUDIO + "t=0 0\n", "line 7: t= is only allowed at session level"),
        (HEAD + "garbage\n" + AUDIO, "not of the form <type>=<value>: 'garbage'"),
        (HEAD + "ab=c\n" + AUDIO, "not of the form <type>=<value>"),
        (HEAD + "=x\n" + AUDIO, "not of the form <type>=<value>"),
        (HEAD + "1=x\n" + AUDIO, "not of the form <type>=<value>"),
        (HEAD + AUDIO + "a=\n", "a= line without an attribute name"),
        (HEAD + AUDIO + "a=:x\n", "a= line without an attribute name"),
        (HEAD + AUDIO + "a=ptime:2\x000\n", "contains a NUL character"),
    ],
)
def test_malformed_input_raises_remote_protocol_error(body: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_sdp(body)
    assert info.value.status_hint == 400
    assert message in str(info.value)


def test_serialize_refuses_line_injection() -> None:
    sd = parse_sdp(HEAD + AUDIO)
    sd.session_name = "evil\r\nc=IN IP4 6.6.6.6"
    with pytest.raises(LocalProtocolError):
        sd.serialize()


def test_direction_algebra() -> None:
    assert Direction.SENDONLY.mirrored() is Direction.RECVONLY
    assert Direction.RECVONLY.mirrored() is Direction.SENDONLY
    assert Direction.SENDRECV.mirrored() is Direction.SENDRECV
    assert Direction.INACTIVE.mirrored() is Direction.INACTIVE
    assert Direction.SENDRECV.restricted_to(Direction.RECVONLY) is Direction.RECVONLY
    assert Direction.SENDONLY.restricted_to(Direction.RECVONLY) is Direction.INACTIVE
    assert [(d.sends, d.receives) for d in Direction] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]
    assert Connection("IN", "IP4", "0.0.0.0").is_null
    assert not Connection("IN", "IP4", "10.0.0.1").is_null


# --- property-based tests -------------------------------------------------------------------------

SAMPLES = [TWILIO, TELNYX, EVERYTHING]
FRAGMENTS = [
    "v=0", "v=", "o=- 1 1 IN IP4 1.2.3.4", "o=", "s=-", "c=IN IP4 0.0.0.0", "c=IN", "t=0 0", "t=",
    "r=1 2", "z=0 0", "k=x", "b=AS:64", "b=:", "m=audio 0 RTP/AVP 0", "m=audio 65536 x", "m=a 1/1 p",
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:999 x/1/2", "a=fmtp:101 0-16", "a=rtcp:0", "a=rtcp:1 IN IP4",
    "a=ptime:99999999", "a=ptime:nan", "a=sendonly", "a=crypto", "i=", "x=y", "\x00", "é=1", "",
]  # fmt: skip


def mutate(data: st.DataObject, text: str) -> str:
    lines = text.split("\n")
    for _ in range(data.draw(st.integers(0, 6))):
        action = data.draw(st.sampled_from(["delete", "duplicate", "insert", "edit", "swap"]))
        where = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        if action == "delete" and lines:
            del lines[where]
        elif action == "duplicate" and lines:
            lines.insert(where, lines[where])
        elif action == "insert":
            lines.insert(where, data.draw(st.sampled_from(FRAGMENTS) | st.text(max_size=20)))
        elif action == "edit" and lines:
            line = lines[where]
            cut = data.draw(st.integers(0, len(line)))
            lines[where] = line[:cut] + data.draw(st.text(max_size=5)) + line[cut + 1 :]
        elif action == "swap" and len(lines) > 1:
            other = data.draw(st.integers(0, len(lines) - 1))
            lines[where], lines[other] = lines[other], lines[where]
    return data.draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)


def check_only_remote_protocol_error(body: str | bytes) -> None:
    try:
        sd = parse_sdp(body)
    except RemoteProtocolError as exc:
        assert exc.status_hint == 400
        return
    # Whatever parses must serialize, read back the same, and answer every helper.
    assert parse_sdp(sd.serialize()) == sd
    _ = sd.direction
    for m in sd.media:
        _ = (m.payload_map(), m.fmtp(101), m.ptime, m.maxptime, m.rtcp, m.crypto, m.rtcp_mux)
        _ = (sd.media_direction(m), sd.media_connection(m))


@given(st.text(max_size=300))
def test_fuzz_random_text(body: str) -> None:
    check_only_remote_protocol_error(body)


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(body: bytes) -> None:
    check_only_remote_protocol_error(body)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_sdp(data: st.DataObject) -> None:
    check_only_remote_protocol_error(mutate(data, data.draw(st.sampled_from(SAMPLES))))


@settings(max_examples=200)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25))
def test_fuzz_fragment_soup(lines: list[str]) -> None:
    check_only_remote_protocol_error("\n".join(["v=0", *lines]))


TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)
TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=12
).map(lambda s: s.strip(" \t"))
NUMBER = st.integers(0, 2**63)
CONNECTION = st.builds(Connection, TOKEN, TOKEN, TOKEN)
BANDWIDTHS = st.lists(st.builds(Bandwidth, TOKEN.filter(lambda t: ":" not in t), NUMBER), max_size=2)
ATTRIBUTES = st.lists(
    st.tuples(TOKEN.filter(lambda t: ":" not in t), st.none() | TEXT.filter(lambda t: t == t.rstrip())),
    max_size=4,
)
OTHER = st.lists(st.tuples(st.sampled_from("dfghjlnqwxy"), TEXT), max_size=2)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    return MediaDescription(
        media=draw(TOKEN),
        port=draw(st.integers(0, 65535)),
        port_count=draw(st.none() | st.integers(1, 8)),
        proto=draw(TOKEN),
        formats=draw(st.lists(TOKEN, max_size=4)),
        information=draw(st.none() | TEXT),
        connection=draw(st.none() | CONNECTION),
        bandwidths=draw(BANDWIDTHS),
        encryption_key=draw(st.none() | TEXT),
        other_lines=draw(OTHER),
        attributes=draw(ATTRIBUTES),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    return SessionDescription(
        origin=draw(st.builds(Origin, TOKEN, TOKEN, NUMBER, TOKEN, TOKEN, TOKEN)),
        session_name=draw(TEXT),
        information=draw(st.none() | TEXT),
        uri=draw(st.none() | TEXT),
        emails=draw(st.lists(TEXT, max_size=2)),
        phones=draw(st.lists(TEXT, max_size=2)),
        connection=draw(st.none() | CONNECTION),
        bandwidths=draw(BANDWIDTHS),
        timing=draw(
            st.lists(st.builds(Timing, NUMBER, NUMBER, st.lists(TEXT).map(tuple)), min_size=1, max_size=2)
        ),
        time_zones=draw(st.none() | TEXT),
        encryption_key=draw(st.none() | TEXT),
        other_lines=draw(OTHER),
        attributes=draw(ATTRIBUTES),
        media=draw(st.lists(media_descriptions(), min_size=1, max_size=3)),
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(session_descriptions())
def test_round_trip_of_generated_descriptions(sd: SessionDescription) -> None:
    wire = sd.serialize()
    assert wire.endswith(b"\r\n") and b"\n" not in wire.replace(b"\r\n", b"")
    assert parse_sdp(wire) == sd
    assert parse_sdp(wire.replace(b"\r\n", b"\n")) == sd


def test_dataclasses_are_plain_values() -> None:
    sd = parse_sdp(TWILIO)
    copy = dataclasses.replace(sd, media=[dataclasses.replace(m) for m in sd.media])
    assert copy == sd
    copy.media[0].port = 1
    assert copy != sd


def test_fmtp_edge_cases() -> None:
    m = MediaDescription(media="audio", port=1, proto="RTP/AVP", formats=["101"])
    m.add_attribute("fmtp")
    m.add_attribute("fmtp", "")
    m.add_attribute("fmtp", "101\t0-15 ")
    assert m.fmtp(101) == "0-15"
    assert m.get_attribute("fmtp") == ""
    assert m.get_attribute("absent") is None


def test_lone_surrogate_in_text_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="not valid Unicode"):
        parse_sdp(HEAD + "s=\ud800\n" + AUDIO)
