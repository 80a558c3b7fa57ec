"""Phone numbers: E.164 from every form that reaches us, and masked for logs (sipagent/product/numbers.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.errors import SipAgentError
from sipagent.product.numbers import NumberError, caller_number, check_country, is_e164, mask, normalise

# -- normalise ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        # E.164 as given, and with visual separators
        ("+15551234567", "US", "+15551234567"),
        ("+1 555 123 4567", "US", "+15551234567"),
        ("+1-555-123-4567", "US", "+15551234567"),
        ("+1.555.123.4567", "US", "+15551234567"),
        ("+1 (555) 123-4567", "US", "+15551234567"),
        ("  +15551234567  ", "US", "+15551234567"),
        # national formats of the default country
        ("(555) 123-4567", "US", "+15551234567"),
        ("555.123.4567", "US", "+15551234567"),
        ("5551234567", "US", "+15551234567"),
        ("1 555 123 4567", "US", "+15551234567"),  # with the US national prefix
        ("020 7946 0958", "GB", "+442079460958"),
        ("07400 123456", "GB", "+447400123456"),
        ("030/12345678", "DE", "+493012345678"),
        ("+44 (0) 20 7946 0958", "US", "+442079460958"),
        # the country's international prefix in place of "+"
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("0015551234567", "DE", "+15551234567"),
        # the fictional 555 range: possible, not valid, and accepted
        ("+15550001111", "US", "+15550001111"),
        ("+15550100199", "US", "+15550100199"),
        # lower-case country
        ("(555) 123-4567", "us", "+15551234567"),
    ],
)
def test_normalise_reads_written_numbers(value: str, country: str, expected: str) -> None:
    assert normalise(value, country) == expected


@pytest.mark.parametrize(
    "value",
    [
        "tel:+15551234567",
        "tel:+1-555-123-4567",
        "TEL:+1-555-123-4567",
        "tel:+1-555-123-4567;phone-context=example.com",
        "tel:+1.555.123.4567;ext=22;isub=1",
        "tel:123-4567;phone-context=+1-555",  # a local number completed by its global prefix
        "tel:(555) 123-4567;phone-context=example.com",  # domain context: the default country reads it
        "sip:+15551234567@trunk.example",
        "sip:+15551234567@trunk.example;user=phone",
        "sip:+15551234567@203.0.113.7:5060;transport=udp;user=phone",
        "SIP:+15551234567@trunk.example",
        "sips:+15551234567@trunk.example",
        "sip:%2B15551234567@trunk.example",  # percent-encoded "+"
        "sip:+1-555-123-4567@trunk.example;user=phone",
        "sip:+15551234567;npdi;rn=+15550009999@trunk.example;user=phone",  # telephone-subscriber params
        "sip:5551234567@pbx.example",
        "sip:15551234567@pbx.example",
        "sip:+15551234567:secret@trunk.example",  # user:password
        "sip:+15551234567@trunk.example?Subject=hi",
        "<sip:+15551234567@trunk.example;user=phone>",
        '"Bob" <sip:+15551234567@trunk.example>;tag=a73kszlfl',
        "Bob <tel:+15551234567>",
        "+15551234567@trunk.example",  # user@host without a scheme
        "+15551234567;ext=12",
    ],
)
def test_normalise_reads_uris_and_user_parts(value: str) -> None:
    assert normalise(value, "US") == "+15551234567"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "only digits"),
        ("   ", "only digits"),
        ("alice", "only digits"),
        ("sip:alice@example.com", "only digits"),
        ("sip:anonymous@anonymous.invalid", "only digits"),
        ("1-800-FLOWERS", "only digits"),  # vanity numbers are not read
        ("*67", "only digits"),
        ("#31#5551234567", "only digits"),
        ("+", "only digits"),
        ("()-.", "only digits"),
        ("+१५५५१२३४५६७", "only digits"),  # digits of another script
        ("sip:trunk.example", "without a user part"),
        ("555-0100", "local number"),  # no area code
        ("+1 555 0100", "local number"),
        ("123", "too short"),
        ("911", "too short"),
        ("+1555123456789012", "too long"),
        ("+999123456", "country code"),
        ("+0123456789", "country code"),
        ("00442079460958", "too long"),  # "00" is not the US international prefix: read as national
        ("+15551234567/89", "too long"),
    ],
)
def test_normalise_refuses_what_is_no_number(value: str, why: str) -> None:
    with pytest.raises(NumberError, match=why) as caught:
        normalise(value, "US")
    assert caught.value.value == value
    assert repr(value) in str(caught.value)


def test_normalise_refuses_a_number_that_would_not_read_back_as_itself() -> None:
    # phonenumbers formats "000000" in DE as +4900000 and reads that back as +49000.
    with pytest.raises(NumberError, match="not a possible number"):
        normalise("000000", "DE")


def test_number_error_is_in_the_tree_and_a_value_error() -> None:
    with pytest.raises(SipAgentError):
        normalise("alice", "US")
    with pytest.raises(ValueError):
        normalise("alice", "US")
    error = NumberError("x", "because")
    assert (error.value, error.reason, str(error)) == ("x", "because", "'x' is not a phone number: because")


@pytest.mark.parametrize("country", ["XX", "", "USA", "001", "1"])
def test_an_unknown_default_country_is_refused_even_for_e164(country: str) -> None:
    with pytest.raises(NumberError, match=f"default country {re.escape(repr(country))}"):
        normalise("+15551234567", country)
    with pytest.raises(NumberError, match="default country"):
        caller_number("+15551234567", country)  # the configuration's fault: not swallowed


def test_check_country() -> None:
    assert check_country("gb") == "GB"
    assert check_country(" US ") == "US"


# -- caller_number, is_e164 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice", None),
        ("sip:alice@192.0.2.1", None),
        ("sip:anonymous@anonymous.invalid", None),
        ("", None),
        ("555-0100", None),
        ("sip:+15551234567@trunk.example;user=phone", "+15551234567"),
        ("(555) 123-4567", "+15551234567"),
    ],
)
def test_caller_number_is_lenient(value: str, expected: str | None) -> None:
    assert caller_number(value, "US") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+15551234567", True),
        ("+15550001111", True),
        ("+442079460958", True),
        ("+1 555 123 4567", False),
        ("+1-555-123-4567", False),
        ("15551234567", False),
        ("tel:+15551234567", False),
        ("+15551234567 ", False),
        ("+1555", False),
        ("+0123456789", False),
        ("+999123456", False),
        ("+1555123456789012", False),
        ("+१५५५१२३४५६७", False),
        ("", False),
    ],
)
def test_is_e164(value: str, expected: bool) -> None:
    assert is_e164(value) is expected


# -- mask --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+15551234567", "+*******4567"),
        ("+442079460958", "+********0958"),
        ("5551234567", "******4567"),
        ("+1 (555) 123-4567", "+************4567"),  # separators masked too: no hint at the format
        ("911", "***"),
        ("+1234567", "+*******"),  # 7 digits: too short to show any
        ("12345678", "****5678"),
        ("", ""),
        ("alice", "*****"),
        ("alice.smith", "*******mith"),
        ("sip:+15551234567@trunk.example;user=phone", "sip:+*******4567@trunk.example"),
        ("sips:+15551234567@trunk.example:5061;transport=tls", "sips:+*******4567@trunk.example:5061"),
        ("sip:%2B15551234567@trunk.example", "sip:+*******4567@trunk.example"),
        ("sip:+15551234567;npdi;rn=+15550009999@h", "sip:+*******4567@h"),  # user params dropped
        ("sip:alice@192.0.2.1", "sip:*****@192.0.2.1"),
        ("sip:alice:hunter22hunter@h", "sip:*****@h"),  # a password never shows
        ("sip:trunk.example", "sip:*********mple"),  # no user: the lot is masked
        ("tel:+1-555-123-4567;phone-context=+1", "tel:+**********4567"),
        ('"Bob Smith" <sip:+15551234567@h>;tag=xyz', "sip:+*******4567@h"),  # no display name
        ("+15551234567@h", "+*******4567@h"),
    ],
)
def test_mask(value: str, expected: str) -> None:
    assert mask(value) == expected


def _alnum(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(exclude_characters="<@:%"), max_size=40))
def test_mask_shows_at_most_the_last_four_characters(value: str) -> None:
    shown = _alnum(mask(value))
    user = _alnum(re.split(r"[;?]", value.strip(), maxsplit=1)[0])
    assert len(shown) <= 4
    assert user.endswith(shown)
    if len(user) < 8:
        assert shown == ""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_mask_never_shows_more_than_four_digits_of_anything(value: str) -> None:
    # Whatever the input (URIs, name-addrs, junk), the masked user part shows at most 4 characters;
    # the scheme and host are shown, so count digits only outside them.
    masked = mask(value)
    host = masked.partition("@")[2]
    user = masked.partition("@")[0] if host else masked
    user = re.sub(r"^(?i:sips?|tel):", "", user)
    assert len(_alnum(user)) <= 4


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\+1[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True))
def test_mask_of_e164_keeps_the_plus_and_the_last_four(number: str) -> None:
    masked = mask(number)
    assert masked == "+" + "*" * (len(number) - 5) + number[-4:]
    assert mask(f"sip:{number}@trunk.example;user=phone") == f"sip:{masked}@trunk.example"


# -- properties of normalise -------------------------------------------------------------------------

_US_NUMBERS = st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True)
_SEPARATOR = st.sampled_from(["", " ", "-", ".", " - "])


@settings(max_examples=300, deadline=None)
@given(
    _US_NUMBERS, _SEPARATOR, st.sampled_from(["{a}{s}{b}{s}{c}", "({a}){s}{b}{s}{c}", "+1{s}{a}{s}{b}{s}{c}"])
)
def test_written_us_numbers_all_become_the_same_e164(digits: str, sep: str, layout: str) -> None:
    written = layout.format(a=digits[:3], b=digits[3:6], c=digits[6:], s=sep)
    expected = "+1" + digits
    assert normalise(written, "US") == expected
    assert normalise(f"sip:{written.replace(' ', '')}@trunk.example;user=phone", "US") == expected
    assert normalise(f"tel:{'+1' + digits}", "GB") == expected


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="0123456789+ -.()", min_size=1, max_size=20), st.sampled_from(["US", "GB", "DE", "FR"])
)
def test_normalise_is_idempotent_and_its_output_is_e164(value: str, country: str) -> None:
    try:
        number = normalise(value, country)
    except NumberError:
        return
    assert is_e164(number)
    assert normalise(number, country) == number
    assert normalise(number, "JP") == number  # E.164 reads the same whatever the default country
    assert caller_number(number, country) == number


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["US", "GB"]))
def test_caller_number_never_raises_for_a_known_country(value: str, country: str) -> None:
    number = caller_number(value, country)
    assert number is None or is_e164(number)
