"""What a log line may not show: phone numbers in full, credentials, the configured secrets.

:class:`LogMasker` rewrites a log message (or an exception's text) before any handler writes it; the
logging setup (:mod:`sipagent.logs`) runs it on every record, whatever the format. Most lines already
mask their numbers (:func:`sipagent.product.numbers.mask`); this is the net under them, and the only
thing between the debug level's SIP message traces and the caller's number.

Numbers are masked where their *form* says they are numbers, never by guessing at digit runs: a log
line is full of Call-IDs, branch ids, tags, ports, timestamps, addresses and SDP session ids, all of
them digits, none of them a person. The forms:

* a ``sip:``/``sips:`` URI's user part made only of digits, an optional ``+`` (or ``%2B``) and
  visual separators (``sip:+15551234567@host``, ``sip:5551234567;npdi@host``): From, To, Contact,
  the Request-URI, P-Asserted-Identity, Remote-Party-ID, Diversion… alike;
* a ``tel:`` URI's number (``tel:+1-555-123-4567``);
* a display name that is a number, right before a URI (``"+15551234567" <sip:…>``);
* a named field (``caller=…``, ``"callee": "…"``, ``number: …``);
* an E.164 number anywhere (``+15551234567``, a ``+`` then 7 to 15 digits, not inside a word).

Each is masked as :func:`~sipagent.product.numbers.mask` masks it (the last 4 digits stay), so a
line reads the same whether its author masked the number or this did. A URI user that is not a
number (``sip:alice@…``) is left as it is; a password in a URI (``sip:user:pw@host``) never is.

Credentials: ``Authorization``/``Proxy-Authorization`` values (digest answers, bearer tokens), a
``Bearer`` token and a digest ``response="…"`` anywhere. Secrets: the literal values of the API token,
the webhook signing secret, the trunk password and the tool and LLM credentials, read once at start-up
(:func:`sipagent.logs.configured_secrets`), become ``***``.

Cheap by construction: it runs on every record, the SIP traces are frequent at debug level, so the
patterns are compiled once, each pass is a single ``re`` scan, and a line without a digit skips the
number pass entirely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

from .product.numbers import mask

__all__ = ["MIN_SECRET_LENGTH", "REDACTED", "LogMasker"]

#: What a secret or a credential becomes.
REDACTED = "***"
#: Shorter values are not searched for: a 2-character "secret" would blank ordinary text everywhere.
MIN_SECRET_LENGTH = 4

# The number forms (module docstring), one pattern a form: each starts with a character class or a
# literal, which ``re`` skips to, so a pass over a SIP trace costs a few microseconds (one
# alternation of them all, or a leading look-behind, is several times slower).
#: A SIP URI's userinfo: user (or a telephone-subscriber number), its ;params, a :password, then "@".
_URI_USER = re.compile(
    r"""(?P<scheme>sips?:)(?P<user>[^\s@<>"',;:?/]+)(?P<params>;[^\s@<>"',]*)?(?P<password>:[^\s@<>"',]*)?@""",
    re.IGNORECASE,
)
#: A URI user that is a phone number (after percent-decoding): digits, a leading ``+``, separators.
_NUMBER_USER = re.compile(r"\+?[0-9][0-9\-.()]*")
_TEL = re.compile(r"(?P<scheme>tel:)(?P<number>(?:\+|%2B)?[0-9][0-9\-.()]*[0-9])", re.IGNORECASE)
#: A display name that is a number, right before its URI; the hint says whether to look at all.
_DISPLAY = re.compile(
    r"""(?P<quote>"?)(?<![\w.])(?P<number>\+?[0-9][0-9 \-.()]{5,}[0-9])(?P=quote)(?=[ \t]*<(?:sips?|tel):)""",
    re.IGNORECASE,
)
_DISPLAY_HINT = re.compile(r"""[0-9]"?[ \t]*<(?:sips?|tel):""", re.IGNORECASE)
#: A named field: ``caller=…``, ``"callee": "…"``, ``number: …``.
_KEYS = ("caller", "callee", "number", "phone", "dialled", "dialed", "msisdn")
_KEYED = re.compile(
    r"""\b(?P<key>caller|callee|caller_id|number|phone|phone_number|from_number|to_number|dialled|dialed|msisdn)"""
    r"""(?P<sep>["']?[ \t]*[=:][ \t]*["']?)(?P<number>\+?[0-9][0-9 \-()]{4,}[0-9])""",
    re.IGNORECASE,
)
#: E.164 anywhere: ``+`` (or ``%2B``) not inside a word, a country code, 7 to 15 digits in all.
_E164 = re.compile(
    r"(?:\+(?<![\w+%*]\+)|%2B(?<![\w+%*]%2B))[1-9](?:[ \-.]?[0-9]){6,14}(?![0-9])", re.IGNORECASE
)
_DIGIT = re.compile(r"[0-9]")

#: Credentials: a whole Authorization header value, a bearer token, a digest answer.
_CREDENTIALS = re.compile(
    r"""
    (?P<header>\b(?:proxy-)?authorization[ \t]*+:[ \t]*+)(?!<redacted>)(?P<value>[^\r\n]+)
    | (?P<bearer>\bbearer[ \t]+)[A-Za-z0-9._~+/=-]+
    | (?P<digest>\bresponse[ \t]*=[ \t]*"?)[0-9a-f]{8,}
    """,
    re.IGNORECASE | re.VERBOSE,
)


class LogMasker:
    """Masks numbers, credentials and ``secrets`` (literal values) in log text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = re.compile("|".join(map(re.escape, values))) if values else None

    def mask(self, text: str) -> str:
        """``text`` with every number form masked and every credential and secret redacted."""
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        lowered = text.lower()
        if "authorization" in lowered or "bearer" in lowered or "response" in lowered:
            text = _CREDENTIALS.sub(_redact_credential, text)
        if _DIGIT.search(text) is None:
            return text
        if "sip" in lowered:
            text = _URI_USER.sub(_mask_uri_user, text)
        if "tel:" in lowered:
            text = _TEL.sub(_mask_scheme_number, text)
        if "<" in text and _DISPLAY_HINT.search(text) is not None:
            text = _DISPLAY.sub(_mask_display, text)
        if any(key in lowered for key in _KEYS):
            text = _KEYED.sub(_mask_keyed, text)
        if "+" in text or "%2b" in lowered:
            text = _E164.sub(_mask_whole, text)
        return text


def _redact_credential(match: re.Match[str]) -> str:
    if match.group("header") is not None:
        return match.group("header") + "<redacted>"
    if match.group("bearer") is not None:
        return match.group("bearer") + REDACTED
    return match.group("digest") + REDACTED


def _mask_uri_user(match: re.Match[str]) -> str:
    scheme, user = match.group("scheme"), match.group("user")
    params, password = match.group("params") or "", match.group("password")
    secret = f":{REDACTED}" if password is not None else ""
    if _NUMBER_USER.fullmatch(unquote(user)):
        # The parameters go with the number: a telephone-subscriber's ;rn= carries another.
        return f"{scheme}{mask(user)}{secret}@"
    return f"{scheme}{user}{params}{secret}@"


def _mask_scheme_number(match: re.Match[str]) -> str:
    return match.group("scheme") + mask(match.group("number"))


def _mask_display(match: re.Match[str]) -> str:
    quote = match.group("quote")
    return f"{quote}{mask(match.group('number'))}{quote}"


def _mask_keyed(match: re.Match[str]) -> str:
    return match.group("key") + match.group("sep") + mask(match.group("number"))


def _mask_whole(match: re.Match[str]) -> str:
    return mask(match.group())
