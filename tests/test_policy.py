"""Who may call: the inbound policy (sipagent/product/policy.py)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.product.numbers import NumberError
from sipagent.product.policy import Decision, InboundPolicy, is_loopback

ALICE = "+15551234567"
STRANGER = "+15559876543"
REMOTE = "203.0.113.9"

# -- construction ------------------------------------------------------------------------------------


def test_defaults_are_an_empty_allowlist_with_loopback_allowed() -> None:
    policy = InboundPolicy()
    assert (policy.mode, policy.allow, policy.default_country, policy.allow_loopback) == (
        "allowlist",
        frozenset(),
        "US",
        True,
    )


def test_allow_entries_are_normalised_once_on_construction() -> None:
    policy = InboundPolicy(
        allow=frozenset({"(555) 123-4567", "tel:+1-555-123-4567", "020 7946 0958"}), default_country="gb"
    )
    # "(555) 123-4567" is read in GB, so it is not Alice's US number; the tel: URI is.
    assert policy.default_country == "GB"
    assert ALICE in policy.allow and "+442079460958" in policy.allow
    assert all(entry.startswith("+") for entry in policy.allow)


def test_a_bad_allow_entry_raises_naming_it() -> None:
    with pytest.raises(NumberError, match=r"inbound allow entry 'alice' is not a phone number") as caught:
        InboundPolicy(allow=frozenset({ALICE, "alice"}))
    assert caught.value.value == "alice"
    with pytest.raises(NumberError, match=r"'555-0100'.*local number"):
        InboundPolicy(allow=frozenset({"555-0100"}))


def test_a_bad_default_country_or_mode_is_refused() -> None:
    with pytest.raises(NumberError, match="default country 'XX'"):
        InboundPolicy(default_country="XX")
    with pytest.raises(ValueError, match="'closed' is none of disabled, allowlist, open"):
        InboundPolicy(mode="closed")  # type: ignore[arg-type]


def test_a_string_for_allow_is_a_type_error_not_twelve_numbers() -> None:
    with pytest.raises(TypeError, match="not a string"):
        InboundPolicy(allow=ALICE)  # type: ignore[arg-type]


def test_a_list_works_at_run_time_and_the_policy_stays_frozen() -> None:
    policy = InboundPolicy(allow=[ALICE])  # type: ignore[arg-type]
    assert policy.allow == frozenset({ALICE})
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.mode = "open"  # type: ignore[misc]
    assert InboundPolicy(allow=frozenset({"tel:+15551234567"})) == InboundPolicy(allow=frozenset({ALICE}))


# -- decide ------------------------------------------------------------------------------------------


def test_allowlist_accepts_listed_numbers_in_any_form() -> None:
    policy = InboundPolicy(allow=frozenset({ALICE}))
    for caller in (ALICE, "sip:+15551234567@trunk.example;user=phone", '"Alice" <tel:+1-555-123-4567>',
                   "5551234567"):  # fmt: skip
        decision = policy.decide(caller, REMOTE)
        assert decision == Decision(
            allowed=True,
            status=200,
            reason="inbound policy allowlist: accepted +*******4567 (on the allowlist)",
            number=ALICE,
        )


def test_allowlist_refuses_others_with_403_and_a_masked_reason() -> None:
    policy = InboundPolicy(allow=frozenset({ALICE}))
    decision = policy.decide(f"sip:{STRANGER}@trunk.example", REMOTE)
    assert not decision.allowed and decision.status == 403
    assert decision.number == STRANGER
    assert decision.reason == "inbound policy allowlist: refused +*******6543 (not on the allowlist)"
    assert "9876" not in decision.reason


@pytest.mark.parametrize(
    ("caller", "shown"),
    [
        ("sip:alice@192.0.2.1", "sip:*****@192.0.2.1"),
        ("sip:anonymous@anonymous.invalid", "sip:*****mous@anonymous.invalid"),
        (None, "an anonymous caller"),
        ("", "an anonymous caller"),
    ],
)
def test_allowlist_refuses_a_caller_with_no_number(caller: str | None, shown: str) -> None:
    decision = InboundPolicy(allow=frozenset({ALICE})).decide(caller, REMOTE)
    assert (decision.allowed, decision.status, decision.number) == (False, 403, None)
    assert decision.reason == f"inbound policy allowlist: refused {shown} (no caller number to check)"


@pytest.mark.parametrize(
    "source", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", " 127.0.0.1 "]
)
def test_allowlist_accepts_loopback_sources(source: str) -> None:
    decision = InboundPolicy().decide("sip:alice@127.0.0.1", source)
    assert decision.allowed and decision.status == 200 and decision.number is None
    assert decision.reason == "inbound policy allowlist: accepted sip:*****@127.0.0.1 (loopback source)"


def test_loopback_sources_are_refused_when_allow_loopback_is_off() -> None:
    policy = InboundPolicy(allow=frozenset({ALICE}), allow_loopback=False)
    assert not policy.decide("sip:alice@127.0.0.1", "127.0.0.1").allowed
    assert policy.decide(ALICE, "127.0.0.1").allowed  # a listed number still passes


def test_a_listed_number_is_reported_as_listed_even_from_loopback() -> None:
    decision = InboundPolicy(allow=frozenset({ALICE})).decide(ALICE, "127.0.0.1")
    assert decision.allowed and decision.reason.endswith("(on the allowlist)")


@pytest.mark.parametrize("caller", [ALICE, STRANGER, "sip:alice@h", None])
@pytest.mark.parametrize("source", [REMOTE, "127.0.0.1", "::1"])
def test_disabled_refuses_everyone_loopback_included(caller: str | None, source: str) -> None:
    decision = InboundPolicy(mode="disabled", allow=frozenset({ALICE})).decide(caller, source)
    assert (decision.allowed, decision.status) == (False, 403)
    assert decision.reason.startswith("inbound policy disabled: refused ")


@pytest.mark.parametrize("caller", [ALICE, STRANGER, "sip:alice@h", None])
def test_open_accepts_everyone(caller: str | None) -> None:
    decision = InboundPolicy(mode="open", allow_loopback=False).decide(caller, REMOTE)
    assert (decision.allowed, decision.status) == (True, 200)
    assert decision.reason.startswith("inbound policy open: accepted ")


def test_the_number_is_read_in_the_default_country() -> None:
    policy = InboundPolicy(allow=frozenset({"+442079460958"}), default_country="GB")
    decision = policy.decide("sip:02079460958@pbx.example", REMOTE)
    assert decision.allowed and decision.number == "+442079460958"
    assert not InboundPolicy(allow=frozenset({"+442079460958"})).decide("02079460958", REMOTE).allowed


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # names are not resolved
        ("", False),
        ("not an address", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=40), st.from_regex(r"\+1[2-9][0-9]{9}", fullmatch=True)),
    st.sampled_from([REMOTE, "127.0.0.1", "::1", "198.51.100.4"]),
    st.sampled_from(["disabled", "allowlist", "open"]),
    st.booleans(),
)
def test_decide_is_total_and_consistent(caller: str | None, source: str, mode: str, loopback: bool) -> None:
    policy = InboundPolicy(mode=mode, allow=frozenset({ALICE}), allow_loopback=loopback)  # type: ignore[arg-type]
    decision = policy.decide(caller, source)
    assert decision.status == (200 if decision.allowed else 403)
    assert decision.number is None or decision.number.startswith("+")
    if decision.number is not None and len(decision.number) > 8:
        assert decision.number[1:-4] not in decision.reason  # masked
    expected = {
        "disabled": False,
        "open": True,
        "allowlist": decision.number == ALICE or (loopback and is_loopback(source)),
    }[mode]
    assert decision.allowed is expected


# -- describe ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "line"),
    [
        (InboundPolicy(mode="disabled"), "inbound policy: disabled (no call is answered)"),
        (InboundPolicy(mode="open"), "inbound policy: open (anyone who reaches the SIP port may call)"),
        (InboundPolicy(), "inbound policy: allowlist (no numbers; loopback callers allowed)"),
        (
            InboundPolicy(allow=frozenset({ALICE})),
            "inbound policy: allowlist (1 number; loopback callers allowed)",
        ),
        (
            InboundPolicy(allow=frozenset({ALICE, STRANGER, "+442079460958"}), allow_loopback=False),
            "inbound policy: allowlist (3 numbers; loopback callers refused)",
        ),
        (
            InboundPolicy(allow_loopback=False),
            "inbound policy: allowlist (no numbers; loopback callers refused): no call is answered",
        ),
    ],
)
def test_describe(policy: InboundPolicy, line: str) -> None:
    assert policy.describe() == line


def test_describe_counts_numbers_once_normalised() -> None:
    policy = InboundPolicy(allow=frozenset({ALICE, "tel:+1-555-123-4567", "(555) 123-4567"}))
    assert policy.describe() == "inbound policy: allowlist (1 number; loopback callers allowed)"
