"""SIP message parsing and serialization (RFC 3261 §7, §20, §25) and its fuzz test."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.sip.address import Address, response_address, stamp_via
from sipagent.sip.errors import RemoteProtocolError
from sipagent.sip.message import (
    Keepalive,
    MalformedMessage,
    Request,
    Response,
    StreamFramer,
    error_response_for,
    parse_message,
)
from sipagent.sip.uri import NameAddr, SipUri, Via

INVITE = (
    b"INVITE sip:+15551234567@203.0.113.10:5060;transport=udp SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 54.172.60.1:5060;branch=z9hG4bK-a;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-c\r\n"
    b"Record-Route: <sip:54.172.60.1;lr;twnat=sip:1.2.3.4>, <sip:172.18.0.1;lr>\r\n"
    b'f: "Smith, John" <sip:+15550001111@pstn.twilio.com>;tag=from1\r\n'
    b"t: <sip:+15551234567@example.com>\r\n"
    b"i: call-abc@10.0.0.1\r\n"
    b"CSeq: 101 INVITE\r\n"
    b"m: <sip:+15550001111@172.18.0.5:5060>\r\n"
    b"max-forwards: 69\r\n"
    b"k: timer, replaces\r\n"
    b"c: application/sdp\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"v=0\r\nEXTRA BYTES PAST CONTENT-LENGTH"
)


def test_compact_forms_repeated_and_comma_joined_headers() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    vias = msg.vias()
    assert [v.branch for v in vias] == ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]
    assert vias[2].host == "[2001:db8::1]" and vias[2].port == 5070 and vias[2].transport == "TCP"
    assert "rport" in vias[0].params and vias[0].params["rport"] is None
    assert [r.uri.host for r in msg.record_routes()] == ["54.172.60.1", "172.18.0.1"]
    assert msg.from_().display_name == "Smith, John"
    assert msg.from_().tag == "from1"
    assert msg.to().tag is None
    assert msg.call_id() == "call-abc@10.0.0.1"
    assert msg.cseq().seq == 101
    assert msg.headers.get("MAX-FORWARDS") == "69"
    assert msg.headers.tokens("Supported") == {"timer", "replaces"}
    assert msg.content_type() == "application/sdp"
    # UDP: a body longer than Content-Length is truncated to it (§18.3).
    assert msg.body == b"v=0\r\n"


def test_request_uri_and_params() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    uri = msg.request_uri()
    assert uri.user == "+15551234567" and uri.port == 5060 and uri.transport == "udp"


def test_serialize_round_trip_and_content_length_always_true() -> None:
    msg = parse_message(INVITE)
    wire = msg.serialize()
    assert b"Content-Length: 5\r\n" in wire
    again = parse_message(wire)
    assert again.serialize() == wire
    assert [v.branch for v in again.vias()] == ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]


def test_response_copies_dialog_headers_and_adds_to_tag() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    resp = msg.response(180, to_tag="uas1")
    assert resp.status == 180 and resp.reason == "Ringing"
    assert resp.to().tag == "uas1"
    assert len(resp.vias()) == 3
    parsed = parse_message(resp.serialize())
    assert isinstance(parsed, Response) and parsed.cseq().method == "INVITE"


def test_header_folding_and_lf_only_line_endings() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:x@y>;tag=1\n"
        b"To: <sip:a@b>\nCall-ID: c1\nCSeq: 1 OPTIONS\nSubject: folded\n  continues here\n\n"
    )
    msg = parse_message(data)
    assert msg.headers.get("Subject") == "folded continues here"


def test_name_addr_forms() -> None:
    bare = NameAddr.parse("sip:alice@example.com;tag=88")
    assert bare.uri.params == {} and bare.tag == "88"
    quoted = NameAddr.parse('"A \\"quoted\\" name" <sip:alice@example.com;transport=tcp>;tag=1')
    assert quoted.display_name == 'A "quoted" name'
    assert quoted.uri.transport == "tcp"
    assert NameAddr.parse(str(quoted)) == quoted
    unquoted = NameAddr.parse("Alice <sip:alice@example.com>")
    assert unquoted.display_name == "Alice"


def test_sips_and_tel_uris() -> None:
    assert SipUri.parse("sips:bob@example.com").transport == "tls"
    with pytest.raises(RemoteProtocolError) as exc:
        SipUri.parse("tel:+15551234567")
    assert exc.value.status_hint == 416


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (
            b"INVITE sip:a@b SIP/2.0\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\n"
            b"Call-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
            400,
        ),
        (b"INVITE sip:a@b SIP/3.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", 505),
        (
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
            b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: one INVITE\r\n\r\n",
            400,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
            b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n",
            400,
        ),
        (
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
            b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 99\r\n\r\nshort",
            400,
        ),
        (b"INVITE sip:a@b SIP/2.0\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n", 513),
    ],
)
def test_malformed_raises_protocol_error_with_status(data: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(data)
    assert exc.value.status_hint == status


def test_error_response_for_unparseable_request_echoes_what_it_can() -> None:
    data = b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h:5062;branch=z9hG4bK9\r\ni: c9\r\nCSeq: x\r\n\r\n"
    with pytest.raises(RemoteProtocolError) as exc:
        parse_message(data)
    response = error_response_for(data, exc.value)
    assert response is not None and response.status == 400
    assert response.headers.get("Via") == "SIP/2.0/UDP h:5062;branch=z9hG4bK9"
    assert response.headers.get("Call-ID") == "c9"
    # Responses are never answered.
    assert error_response_for(b"SIP/2.0 200 OK\r\n\r\n", exc.value) is None


def test_stream_framer_splits_by_content_length_and_handles_keepalives() -> None:
    msg = parse_message(INVITE).serialize()
    framer = StreamFramer()
    items = framer.feed(b"\r\n\r\n" + msg[:30])
    assert items == [Keepalive(ping=True)]
    items = framer.feed(msg[30:] + msg[:10])
    assert len(items) == 1 and isinstance(items[0], Request)
    items = framer.feed(msg[10:])
    assert len(items) == 1 and isinstance(items[0], Request) and items[0].body == b"v=0\r\n"
    assert framer.feed(b"\r\n") == [Keepalive(ping=False)]


def test_stream_framer_reports_malformed_message_and_keeps_going() -> None:
    bad = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    good = parse_message(INVITE).serialize()
    items = StreamFramer().feed(bad + good)
    assert isinstance(items[0], MalformedMessage) and items[0].error.status_hint == 400
    assert isinstance(items[1], Request)


def test_stream_framer_requires_content_length() -> None:
    with pytest.raises(RemoteProtocolError):
        StreamFramer().feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")


def test_rport_stamping_and_response_routing() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    stamp_via(msg, Address("udp", "198.51.100.7", 40123))
    top = msg.top_via()
    assert top.params["received"] == "198.51.100.7" and top.params["rport"] == "40123"
    # The other Vias are untouched, still in order.
    assert [v.branch for v in msg.vias()] == ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]
    response = msg.response(200)
    assert response_address(response, None) == Address("udp", "198.51.100.7", 40123)
    tcp = Address("tcp", "198.51.100.7", 50000)
    assert response_address(response, tcp) == tcp


def test_via_with_spaces_around_slashes() -> None:
    via = Via.parse("SIP / 2.0 / UDP host.example:5060;branch=z9hG4bKx")
    assert via.transport == "UDP" and via.port == 5060


# -- property / fuzz test: only the protocol error may escape the parser ------------------------

_TOKENS = [
    b"INVITE",
    b"SIP/2.0",
    b"sip:",
    b"@",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\r\n",
    b"\n",
    b" ",
    b"\t",
    b"Via",
    b"v",
    b"CSeq",
    b"Content-Length",
    b"l",
    b"tag=",
    b"branch=",
    b"=",
    b"[",
    b"]",
    b"0",
    b"1",
    b"65536",
    b"\x00",
    b"\xff",
    b"?",
    b"%",
]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_message(data)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_fuzz_mutated_messages(data: st.DataObject) -> None:
    wire = bytearray(INVITE)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        pos = data.draw(st.integers(0, len(wire)))
        if op == "delete" and wire:
            end = min(len(wire), pos + data.draw(st.integers(1, 20)))
            del wire[pos:end]
        elif op == "insert":
            wire[pos:pos] = data.draw(st.sampled_from(_TOKENS))
        elif wire:
            wire[min(pos, len(wire) - 1)] = data.draw(st.integers(0, 255))
    try:
        msg = parse_message(bytes(wire))
    except RemoteProtocolError:
        return
    # Whatever parsed must serialize and answer; lazily parsed headers may raise only the
    # protocol error (the endpoint answers it with its status).
    msg.serialize()
    msg.vias()
    if isinstance(msg, Request):
        msg.response(400).serialize()
    for accessor in (msg.contacts, msg.record_routes, getattr(msg, "request_uri", msg.contacts)):
        with contextlib.suppress(RemoteProtocolError):
            accessor()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_stream_framer(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    for chunk in chunks:
        try:
            framer.feed(chunk)
        except RemoteProtocolError:
            framer = StreamFramer()
