"""Trunk profiles (sipagent/product/trunks.py): each carrier's facts as data, and the INVITE target
and caller identity built from them (sip-trunks.md "Carrier facts")."""

from __future__ import annotations

import ipaddress

import pytest

from sipagent.errors import SipAgentError
from sipagent.product.trunks import (
    GENERIC,
    PROFILES,
    TELNYX,
    TWILIO,
    TrunkProfile,
    TrunkProfileError,
    allow_from_for,
    caller_identity_headers,
    check_trunk_uri,
    is_e164,
    profile_for,
    request_uri_for_number,
    transports_for,
)
from sipagent.sip.message import Headers
from sipagent.sip.uri import NameAddr, SipUri

TWILIO_TRUNK = SipUri.parse("sip:mytrunk.pstn.twilio.com")


def test_the_profiles_the_configuration_names_exist() -> None:
    assert set(PROFILES) == {"twilio", "telnyx", "generic"}
    assert profile_for("telnyx") is TELNYX
    with pytest.raises(TrunkProfileError, match="known: twilio, telnyx, generic"):
        profile_for("vonage")
    with pytest.raises(TypeError):
        PROFILES["x"] = GENERIC  # type: ignore[index]


@pytest.mark.parametrize("profile", [TWILIO, TELNYX, GENERIC], ids=lambda p: p.name)
def test_every_network_is_a_valid_cidr_and_the_defaults_parse(profile: TrunkProfile) -> None:
    for network in profile.signalling_networks + profile.media_networks:
        ipaddress.ip_network(network, strict=True)
    if profile.default_uri is not None:
        SipUri.parse(profile.default_uri)
    assert profile.transports and set(profile.transports) <= {"udp", "tcp", "tls"}


def test_carrier_facts() -> None:
    assert TWILIO.mode == "static" and TWILIO.register_expires is None  # Twilio refuses REGISTER
    assert len(TWILIO.signalling_networks) == 8
    assert all(n.endswith("/30") for n in TWILIO.signalling_networks)
    assert TWILIO.media_networks == ("168.86.128.0/18",) and TWILIO.media_ports == (10000, 60000)
    assert TELNYX.mode == "register" and TELNYX.default_uri == "sip:sip.telnyx.com"
    assert TELNYX.register_expires == 3600 and TELNYX.media_ports == (16384, 32768)
    assert {"192.76.120.10/32", "64.16.250.10/32"} <= set(TELNYX.signalling_networks)
    assert (TWILIO.send_pai, TELNYX.send_pai, GENERIC.send_pai) == (False, True, False)


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("+15551234567", True),
        ("+442071838750", True),
        ("15551234567", False),
        ("+0123", False),
        ("+1", False),
    ],
)
def test_e164(number: str, ok: bool) -> None:
    assert is_e164(number) is ok


# -- the INVITE target ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trunk", "expected"),
    [
        ("sip:mytrunk.pstn.twilio.com", "sip:+15551234567@mytrunk.pstn.twilio.com"),
        ("sip:mytrunk.pstn.ashburn.twilio.com", "sip:+15551234567@mytrunk.pstn.ashburn.twilio.com"),
        (
            "sip:MyTrunk.pstn.twilio.com:5061;transport=tls;lr",
            "sip:+15551234567@mytrunk.pstn.twilio.com:5061;transport=tls",
        ),
    ],
)
def test_twilio_calls_the_number_on_the_trunk_termination_name(trunk: str, expected: str) -> None:
    uri = request_uri_for_number(TWILIO, SipUri.parse(trunk), "+15551234567")
    assert str(uri) == expected
    assert SipUri.parse(str(uri)) == uri


@pytest.mark.parametrize(
    "trunk", ["sip:54.172.60.1", "sip:sip.twilio.com", "sip:mytrunk.pstn.twilio.com.evil.test"]
)
def test_twilio_refuses_a_host_it_would_drop(trunk: str) -> None:
    with pytest.raises(TrunkProfileError, match=r"pstn\.twilio\.com"):
        request_uri_for_number(TWILIO, SipUri.parse(trunk), "+15551234567")
    with pytest.raises(TrunkProfileError):
        check_trunk_uri(TWILIO, SipUri.parse(trunk))


def test_telnyx_calls_the_number_at_sip_telnyx_com_and_drops_the_username() -> None:
    trunk = SipUri.parse("sip:alice@sip.telnyx.com")
    assert str(request_uri_for_number(TELNYX, trunk, "+15551234567")) == "sip:+15551234567@sip.telnyx.com"


def test_generic_marks_a_global_number_as_a_telephone_number() -> None:
    trunk = SipUri.parse("sip:pbx.example.test;transport=tcp")
    uri = request_uri_for_number(GENERIC, trunk, "+15551234567")
    assert str(uri) == "sip:+15551234567@pbx.example.test;user=phone;transport=tcp"
    # An extension is not a global number: no user=phone.
    assert str(request_uri_for_number(GENERIC, trunk, "2001")) == "sip:2001@pbx.example.test;transport=tcp"


@pytest.mark.parametrize("profile", [TWILIO, TELNYX], ids=lambda p: p.name)
@pytest.mark.parametrize("number", ["15551234567", "+1 555 123 4567", "0044207", ""])
def test_carriers_want_e164(profile: TrunkProfile, number: str) -> None:
    trunk = TWILIO_TRUNK if profile is TWILIO else SipUri.parse("sip:sip.telnyx.com")
    with pytest.raises(TrunkProfileError, match=r"E\.164"):
        request_uri_for_number(profile, trunk, number)


@pytest.mark.parametrize("number", ["1001@evil", "1001;x=y", "a b", "100\r\nX: y"])
def test_nothing_that_could_break_the_uri_gets_in(number: str) -> None:
    with pytest.raises(TrunkProfileError):
        request_uri_for_number(GENERIC, SipUri.parse("sip:pbx.example.test"), number)


# -- caller identity ---------------------------------------------------------------------------------
def test_twilio_identity_is_the_from_header_alone() -> None:
    from_uri, name, headers = caller_identity_headers(TWILIO, "+15550001111", "Acme Support", "203.0.113.5")
    assert str(from_uri) == "sip:+15550001111@203.0.113.5"
    assert name == "Acme Support"
    assert headers == ()


def test_telnyx_identity_repeats_the_number_in_p_asserted_identity() -> None:
    from_uri, name, headers = caller_identity_headers(TELNYX, "+15550001111", 'Acme "Bots"', "sip.telnyx.com")
    assert str(from_uri) == "sip:+15550001111@sip.telnyx.com"
    ((header, value),) = headers
    assert header == "P-Asserted-Identity"
    parsed = NameAddr.parse(value)
    assert parsed.uri == from_uri and parsed.display_name == 'Acme "Bots"'
    assert name == 'Acme "Bots"'


def test_generic_identity_may_be_an_extension_and_a_blank_name_is_none() -> None:
    from_uri, name, headers = caller_identity_headers(GENERIC, "2001", "  ", "pbx.example.test")
    assert (str(from_uri), name, headers) == ("sip:2001@pbx.example.test", None, ())
    from_uri, _, _ = caller_identity_headers(GENERIC, "+15550001111", None, "pbx.example.test")
    assert str(from_uri) == "sip:+15550001111@pbx.example.test;user=phone"


def test_a_carrier_caller_id_must_be_e164() -> None:
    with pytest.raises(TrunkProfileError, match=r"caller ID '5550001111' is not E\.164") as caught:
        caller_identity_headers(TWILIO, "5550001111", None, "203.0.113.5")
    assert isinstance(caught.value, SipAgentError)


def test_a_display_name_cannot_inject_a_header() -> None:
    with pytest.raises(TrunkProfileError, match="control characters"):
        caller_identity_headers(TELNYX, "+15550001111", "Acme\r\nP-Asserted-Identity: <sip:x@y>", "h")


def test_the_identity_fits_an_invite_from_header() -> None:
    from_uri, name, headers = caller_identity_headers(TELNYX, "+15550001111", "Acme", "sip.telnyx.com")
    h = Headers()
    h.add("From", str(NameAddr(from_uri, display_name=name).with_params(tag="abc")))
    for key, value in headers:
        h.add(key, value)
    assert h.get("From") == '"Acme" <sip:+15550001111@sip.telnyx.com>;tag=abc'
    assert h.get("P-Asserted-Identity") == '"Acme" <sip:+15550001111@sip.telnyx.com>'


# -- transports and allow_from -------------------------------------------------------------------------
def test_transports_follow_the_profile_order_within_what_we_listen_on() -> None:
    assert transports_for(TELNYX, ["tcp", "udp"]) == ("udp", "tcp")
    assert transports_for(TWILIO, ["tls"]) == ("tls",)
    assert transports_for(GENERIC, []) == ()


def test_allow_from_defaults_to_the_carrier_networks_unless_configured() -> None:
    assert allow_from_for(TWILIO, []) == TWILIO.signalling_networks
    assert allow_from_for(TWILIO, ["10.0.0.0/8"]) == ("10.0.0.0/8",)
    assert allow_from_for(GENERIC, []) == ()
