"""Phone numbers: whatever a trunk, a softphone or a config file writes, to E.164, and masked for logs.

:func:`normalise` reads a number in any of the forms that reach us and returns it in E.164
(``+15551234567``), the one form the policy, the routes and the store compare:

* a ``tel:`` URI (RFC 3966), parameters and all: ``tel:+1-555-123-4567``; a local number whose
  ``phone-context`` is a global prefix is completed by it (``tel:123-4567;phone-context=+1-555``);
* a ``sip:``/``sips:`` URI, bare or in a name-addr (``"Bob" <sip:+15551234567@host;user=phone>``):
  its user part, percent-decoded (trunks send ``%2B1555…``), with any ``;param`` of a telephone
  subscriber user dropped;
* a bare user part or a number as people write it: national format of ``default_country``
  (``(555) 123-4567`` in the US, ``020 7946 0958`` in GB), visual separators (spaces, dots,
  dashes, parentheses, slashes), and the country's international prefix (``011`` from the US,
  ``00`` from most of Europe) where a ``+`` would be.

Only digits and separators are read as a number: letters (a SIP user such as ``alice``, vanity
numbers such as ``1-800-FLOWERS``) and service codes (``*67``) are not numbers. The digits must make
a *possible* number for their country (right length, known country code), as Google's
libphonenumber metadata says (the ``phonenumbers`` package, decision 0018). Numbers are not required
to be *valid* (allocated to a carrier): the fictional ``+1 555 01xx`` range that tests, demos and
documentation use is possible but not valid, and must work.

:func:`mask` hides a number or a URI's user part in logs and API output, keeping only its last four
characters (see its docstring); every log line and answer that carries a number goes through it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import phonenumbers

from ..errors import SipAgentError

__all__ = ["NumberError", "caller_number", "check_country", "is_e164", "mask", "normalise"]

#: Characters a written number may hold besides digits: RFC 3966 visual separators, plus the spaces
#: and slashes people type. Anything else (letters, ``*``, ``#``) means "not a phone number".
_NUMBER = re.compile(r"\+?[0-9 .\-()/]+")
#: E.164 as :func:`normalise` writes it: ``+``, a country code not starting with 0, at most 15 digits.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
#: URI schemes whose user part (sip, sips) or whole body (tel) carries a number.
_SCHEMES = ("sip:", "sips:", "tel:")
#: How many trailing characters :func:`mask` shows, and how long a value must be to show any.
_SHOWN = 4
_MIN_SHOWN = 2 * _SHOWN

_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number without its area code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
}


class NumberError(SipAgentError, ValueError):
    """A value that cannot become an E.164 number. ``value`` is what was given, ``reason`` why not;
    the message names both (it is for whoever wrote the value: the config or API user)."""

    def __init__(self, value: str, reason: str, *, message: str | None = None) -> None:
        super().__init__(message or f"{value!r} is not a phone number: {reason}")
        self.value = value
        self.reason = reason


def check_country(country: str) -> str:
    """``country`` as an upper-case region code phonenumbers knows (``"us"`` → ``"US"``).

    Raises :class:`NumberError` otherwise: a bad default country is a configuration mistake that
    would silently turn every national number into "not a number", so it is never swallowed.
    """
    region = country.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        reason = "not a country code phonenumbers knows (ISO 3166, e.g. US, GB, DE)"
        raise NumberError(country, reason, message=f"default country {country!r}: {reason}")
    return region


def normalise(value: str, default_country: str) -> str:
    """``value`` in E.164 (``+15551234567``); national numbers are read in ``default_country``.

    Raises :class:`NumberError` naming the value when it holds no possible phone number (see the
    module docstring for the forms read), or when ``default_country`` is unknown.
    """
    region = check_country(default_country)
    number = _number_part(value)
    if not _NUMBER.fullmatch(number) or not any(c.isdigit() for c in number):
        raise NumberError(value, "only digits, an optional leading '+' and separators make a number")
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(value, _parse_reason(exc)) from None
    result = phonenumbers.is_possible_number_with_reason(parsed)
    # IS_POSSIBLE_LOCAL_ONLY counts as "possible" for phonenumbers.is_possible_number, but a number
    # missing its area code cannot be dialled back or compared, so it is refused here.
    if result != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise NumberError(value, _REASONS.get(result, "not a possible number"))
    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    # The output must read back as itself. It does not for degenerate national numbers: "000000" in
    # DE formats as +4900000, which phonenumbers then reads as +49000.
    if not is_e164(number):
        raise NumberError(value, "not a possible number")
    return number


def caller_number(uri_or_user: str, default_country: str) -> str | None:
    """Like :func:`normalise`, but None for a value that is not a number (a From user ``alice``).

    An unknown ``default_country`` still raises: that is the configuration's fault, not the caller's.
    """
    region = check_country(default_country)
    try:
        return normalise(uri_or_user, region)
    except NumberError:
        return None


def is_e164(value: str) -> bool:
    """True if ``value`` is a possible number written exactly in E.164, as :func:`normalise` writes it
    (``+15551234567``, not ``+1 555 123 4567`` nor ``tel:+15551234567``)."""
    if not _E164.fullmatch(value):
        return False
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(
        phonenumbers.is_possible_number_with_reason(parsed) == phonenumbers.ValidationResult.IS_POSSIBLE
        and phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == value
    )


def mask(value: str) -> str:
    """``value`` with all but its last 4 characters hidden, for logs and API output.

    * A number keeps its leading ``+`` and its last 4 digits: ``+15551234567`` → ``+*******4567``;
      separators before them are masked too, so the written layout does not show through.
    * A ``sip:``/``sips:``/``tel:`` URI, bare or in a name-addr, keeps its scheme and host (which
      name the carrier or the address, not the person) and masks its user part by the same rule:
      ``sip:+15551234567@carrier.example;user=phone`` → ``sip:+*******4567@carrier.example``. The
      display name, URI parameters and headers are dropped: they can carry the name or number again.
    * Anything with fewer than 8 letters and digits is masked entirely (``sip:alice@host`` →
      ``sip:*****@host``, ``911`` → ``***``): 4 characters of a short value give too much of it away.

    Whatever the input, the output holds no more than 4 of its letters and digits in the clear.
    """
    text = value.strip()
    if "<" in text:  # name-addr: only the URI between the brackets, never the display name
        text = text.partition("<")[2].partition(">")[0]
    scheme = _scheme(text)
    prefix = "" if scheme is None else scheme
    body = text[len(prefix) :]
    # tel: has no host; a sip: URI without "@" has no user, and the lot is masked rather than
    # guessing whether its host names someone.
    if scheme == "tel:" or "@" not in body:
        return prefix + _mask_user(body)
    user, _, host = body.partition("@")
    return f"{prefix}{_mask_user(user)}@{_host(host)}"


# -- helpers -----------------------------------------------------------------------------------------


def _scheme(text: str) -> str | None:
    lowered = text[:5].lower()
    return next((scheme for scheme in _SCHEMES if lowered.startswith(scheme)), None)


def _strip_params(text: str) -> str:
    """Drop ``;params`` and ``?headers``."""
    return re.split(r"[;?]", text, maxsplit=1)[0]


def _host(host: str) -> str:
    """The host (and port) of a URI, without its parameters or headers."""
    return _strip_params(host).strip()


def _number_part(value: str) -> str:
    """The part of ``value`` that should be a number, with a ``phone-context`` prefix applied."""
    text = value.strip()
    if "<" in text:
        text = text.partition("<")[2].partition(">")[0].strip()
    scheme = _scheme(text)
    if scheme is not None:
        text = text[len(scheme) :]
        if scheme != "tel:":
            if "@" not in text:
                raise NumberError(value, "a SIP URI without a user part")
            # user[:password]@host: the number is the user, and it may be percent-encoded.
            text = unquote(text.partition("@")[0].partition(":")[0])
    elif "@" in text:  # user@host without a scheme
        text = unquote(text.partition("@")[0])
    text = text.partition("?")[0]
    number, *params = text.split(";")
    number = number.strip()
    context = next(
        (p.partition("=")[2].strip() for p in params if p.strip().lower().startswith("phone-context=")), ""
    )
    # RFC 3966 §5.1.5: a local number's phone-context may be the global number prefix it lives under.
    # A domain context (phone-context=example.com) says nothing we can use: the default country reads it.
    if context.startswith("+") and not number.startswith("+"):
        number = context + number
    return number


def _parse_reason(exc: phonenumbers.NumberParseException) -> str:
    reasons = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(exc.error_type, "not a phone number")


def _mask_user(user: str) -> str:
    """Mask everything but a leading ``+`` and the last 4 letters or digits (all of a short value).

    Parameters go first (a telephone-subscriber user carries ``;rn=+1…``), and the user is
    percent-decoded so ``%2B1555…`` keeps its visible ``+`` like any other number.
    """
    user = unquote(_strip_params(user).partition(":")[0]).strip()
    positions = [i for i, c in enumerate(user) if c.isalnum()]
    keep_from = positions[-_SHOWN] if len(positions) >= _MIN_SHOWN else len(user)
    plus = 1 if user.startswith("+") else 0
    return user[:plus] + "*" * (keep_from - plus) + user[keep_from:]
