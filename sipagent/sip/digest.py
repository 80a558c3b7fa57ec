"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760, RFC 3261 §22).

Sans-IO: parsing and hashing only. The cnonce comes from an injected callable, and the only
state (nonce counts) lives in a :class:`DigestClient` instance the caller owns.

Rules this module follows (the RFC section is the reason):

- ``uri`` in the answer is the Request-URI string exactly as sent (RFC 3261 §22.4); the
  caller passes it, we never rebuild it.
- ``opaque`` is echoed unchanged whenever the challenge had one (RFC 7616 §3.4); carriers
  such as Twilio reject answers without it.
- With ``qop`` the answer carries ``cnonce`` and ``nc``; ``nc`` is 8 hex digits and counts the
  requests sent with the same nonce (RFC 7616 §3.4). The cnonce stays fixed for a nonce so the
  session key of the ``-sess`` algorithms stays stable (RFC 2617 §3.2.2.2).
- Without ``qop`` the answer is the RFC 2069 form: no ``cnonce``, ``nc`` or ``qop``.
- ``qop=auth`` is preferred over ``auth-int`` when both are offered: in SIP the body can be
  rewritten by B2BUAs (SDP in particular), so ``auth-int`` fails more often for no security gain
  that matters to a phone agent.
- ``algorithm``, ``qop`` and ``nc`` are tokens and sent unquoted; every other value is a
  quoted-string (RFC 7616 §3.4; some servers reject a quoted ``qop="auth"``).
- Among several challenges the strongest supported hash wins (SHA-256 over MD5), the server's
  order breaking ties (RFC 8760 lets local policy override "topmost supported").
- An ACK for a non-2xx final response and a CANCEL must carry the same credentials as the
  INVITE (RFC 3261 §22): copy the INVITE's header value rather than calling
  :meth:`DigestClient.authorization` again, which would advance ``nc``.

Secrets: :class:`Credentials` hides its password from ``repr``/``str``, and no error raised
here ever mentions a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sipagent.sip.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Credentials",
    "DigestChallenge",
    "DigestClient",
    "build_authorization",
    "compute_response",
    "parse_challenge",
    "parse_challenges",
    "response_header_name",
    "verify_authorization",
]


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str  # canonical spelling, for messages
    hash_name: str  # hashlib name
    session: bool  # the "-sess" variant: A1 is re-hashed with nonce and cnonce
    strength: int  # higher is preferred when a server offers several


_ALGORITHMS: dict[str, _Algorithm] = {
    a.name.lower(): a
    for a in (
        _Algorithm("MD5", "md5", False, 1),
        _Algorithm("MD5-sess", "md5", True, 1),
        _Algorithm("SHA-256", "sha256", False, 2),
        _Algorithm("SHA-256-sess", "sha256", True, 2),
    )
}

#: The algorithm names this module can answer (compared case-insensitively).
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(a.name for a in _ALGORITHMS.values())

_SUPPORTED_QOP = ("auth", "auth-int")  # in order of preference

# RFC 3261 §25.1 token characters.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# RFC 7235 token68 (a Basic/Bearer credential blob); only recognised when it is the whole element,
# so that ``realm=...`` is never mistaken for one.
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t\r\n]*(?:,|\Z))")
# CR and LF count as whitespace outside quotes: a header parser may hand us folded lines.
_WS_RE = re.compile(r"[ \t\r\n]*")
# Control characters other than HTAB/CR/LF are never legal in a header value.
_REMOTE_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Values we put into a header must not carry CR, LF or other controls (header injection);
# HTAB is legal inside a quoted-string.
_LOCAL_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Unquoted values: servers send base64 nonces or quoted-looking tokens unquoted, so accept
# anything up to the next separator rather than strict token characters.
_UNQUOTED_RE = re.compile(r'[^ \t\r\n,"]+')
_QDTEXT_RE = re.compile(r'[^"\\\r\n]+')
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_CNONCE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # printable ASCII except '"' and '\'

_MAX_NC = 0xFFFFFFFF


def _clip(text: str, limit: int = 40) -> str:
    """Quote a piece of remote input for an error message without letting it flood logs."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _RawChallenge(NamedTuple):
    scheme: str
    params: list[tuple[str, str]]  # (lower-cased name, unescaped value), in order
    token68: str | None


def _skip_ws(text: str, pos: int) -> int:
    match = _WS_RE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read the quoted-string starting at ``text[pos] == '"'``; return (unescaped value, end)."""
    pos += 1
    parts: list[str] = []
    end = len(text)
    while True:
        match = _QDTEXT_RE.match(text, pos)
        if match is not None:
            parts.append(match.group())
            pos = match.end()
        if pos >= end:
            raise RemoteProtocolError("unterminated quoted-string in authentication header")
        char = text[pos]
        if char == '"':
            return "".join(parts), pos + 1
        if char == "\\":
            if pos + 1 >= end or text[pos + 1] in "\r\n":
                raise RemoteProtocolError("bad quoted-pair in authentication header")
            parts.append(text[pos + 1])
            pos += 2
            continue
        # A line break inside quotes would be echoed back into our own header: refuse it.
        raise RemoteProtocolError("line break inside a quoted-string in authentication header")


def _parse_auth_list(value: str) -> list[_RawChallenge]:
    """Split a WWW-Authenticate-style value into challenges (RFC 7235 §4.1 grammar, leniently).

    One value may hold several comma-joined challenges; a new one starts where a token follows a
    comma without being followed by ``=``.
    """
    if _REMOTE_CTL_RE.search(value):
        raise RemoteProtocolError("control character in authentication header")
    try:
        # We hash these strings as UTF-8 later; lone surrogates must fail here, as a remote error.
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise RemoteProtocolError("undecodable character in authentication header") from None

    end = len(value)
    challenges: list[_RawChallenge] = []
    pos = _skip_ws(value, 0)
    while pos < end and value[pos] == ",":  # the #rule allows empty list elements
        pos = _skip_ws(value, pos + 1)
    while pos < end:
        match = _TOKEN_RE.match(value, pos)
        if match is None:
            raise RemoteProtocolError(f"expected an auth-scheme at offset {pos}")
        scheme = match.group()
        pos = match.end()
        if pos < end and value[pos] not in " \t\r\n,":
            raise RemoteProtocolError(f"expected whitespace after auth-scheme {_clip(scheme)}")
        pos = _skip_ws(value, pos)
        params: list[tuple[str, str]] = []
        token68: str | None = None
        match68 = _TOKEN68_RE.match(value, pos)
        if match68 is not None:
            token68 = match68.group()
            pos = match68.end()
        saw_comma = False
        while True:
            pos = _skip_ws(value, pos)
            if pos >= end:
                break
            if value[pos] == ",":
                saw_comma = True
                pos += 1
                continue
            if not saw_comma and (params or token68 is not None):
                raise RemoteProtocolError(f"expected ',' at offset {pos} in authentication header")
            start = pos
            match = _TOKEN_RE.match(value, pos)
            if match is None:
                raise RemoteProtocolError(f"expected an auth-param at offset {pos}")
            after = _skip_ws(value, match.end())
            if token68 is None and after < end and value[after] == "=":
                pos = _skip_ws(value, after + 1)
                if pos < end and value[pos] == '"':
                    param_value, pos = _read_quoted(value, pos)
                else:
                    unquoted = _UNQUOTED_RE.match(value, pos)
                    if unquoted is None:
                        raise RemoteProtocolError(f"auth-param {_clip(match.group())} has no value")
                    param_value, pos = unquoted.group(), unquoted.end()
                params.append((match.group().lower(), param_value))
                saw_comma = False
                continue
            if not saw_comma:
                raise RemoteProtocolError(f"expected '=' after {_clip(match.group())}")
            pos = start  # the next challenge's auth-scheme
            break
        challenges.append(_RawChallenge(scheme, params, token68))
    return challenges


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One parsed ``Digest`` challenge from a WWW-Authenticate or Proxy-Authenticate header.

    ``algorithm`` is kept as the server spelled it (``None`` when absent, meaning MD5) because
    some servers compare the echoed token byte for byte. ``qop_options`` are lower-cased;
    an empty tuple means the server sent no ``qop`` (RFC 2069 mode). ``params`` keeps every
    parameter, including unknown ones, with lower-cased names.
    """

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str | None = None
    qop_options: tuple[str, ...] = ()
    stale: bool = False
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """Return the value of parameter ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.params:
            if key == wanted:
                return value
        return None

    @property
    def algorithm_name(self) -> str:
        """The algorithm to echo: as the server spelled it, ``MD5`` when it sent none."""
        return self.algorithm if self.algorithm is not None else "MD5"

    @property
    def supported(self) -> bool:
        """Whether :func:`build_authorization` can answer this challenge."""
        try:
            self._plan()
        except RemoteProtocolError:
            return False
        return True

    @property
    def strength(self) -> int:
        """Preference rank of the algorithm (0 when unsupported); higher is better."""
        algorithm = _ALGORITHMS.get(self.algorithm_name.lower())
        return algorithm.strength if algorithm is not None else 0

    def choose_qop(self) -> str | None:
        """The qop we will answer with: ``auth`` if offered, else ``auth-int``, else ``None``.

        Raises :class:`RemoteProtocolError` if ``qop`` was offered but holds nothing we support.
        """
        return self._plan()[1]

    def _plan(self) -> tuple[_Algorithm, str | None]:
        algorithm = _ALGORITHMS.get(self.algorithm_name.lower())
        if algorithm is None:
            raise RemoteProtocolError(f"unsupported digest algorithm {_clip(self.algorithm_name)}")
        qop: str | None = None
        if self.qop_options:
            qop = next((q for q in _SUPPORTED_QOP if q in self.qop_options), None)
            if qop is None:
                raise RemoteProtocolError(f"no supported qop in {_clip(','.join(self.qop_options))}")
        elif algorithm.session:
            # The -sess key needs a cnonce, and RFC 2617 forbids sending one without qop.
            raise RemoteProtocolError(f"{algorithm.name} challenge without qop cannot be answered")
        return algorithm, qop


def _challenge_from_raw(raw: _RawChallenge) -> DigestChallenge:
    if raw.scheme.lower() != "digest":
        raise RemoteProtocolError(f"unsupported auth-scheme {_clip(raw.scheme)}")
    if raw.token68 is not None:
        raise RemoteProtocolError("Digest challenge must use auth-params")
    values: dict[str, str] = {}
    for name, value in raw.params:
        if name in values:
            # Two realms or nonces would make the answer ambiguous; RFC 7235 §2.1 forbids repeats.
            raise RemoteProtocolError(f"duplicate digest parameter {_clip(name)}")
        values[name] = value
    realm = values.get("realm")
    nonce = values.get("nonce")
    if realm is None:
        raise RemoteProtocolError("digest challenge without realm")
    if nonce is None:
        raise RemoteProtocolError("digest challenge without nonce")
    algorithm = values.get("algorithm")
    if algorithm is not None:
        algorithm = algorithm.strip() or None
    qop = values.get("qop")
    # qop is a quoted comma-separated list in challenges ("auth,auth-int"); some servers send
    # a bare token, which the same split handles.
    qop_options = tuple(q for q in (p.strip().lower() for p in (qop or "").split(",")) if q)
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        opaque=values.get("opaque"),
        algorithm=algorithm,
        qop_options=qop_options,
        stale=values.get("stale", "").strip().lower() == "true",
        params=tuple(raw.params),
    )


def parse_challenge(value: str) -> DigestChallenge:
    """Parse one WWW-Authenticate / Proxy-Authenticate header value holding a Digest challenge.

    Scheme and parameter names are case-insensitive; quoted-strings may contain commas and
    backslash escapes; unknown parameters are kept in :attr:`DigestChallenge.params`.
    Raises :class:`RemoteProtocolError` for malformed input, a non-Digest scheme, a missing
    realm or nonce, or a value holding several challenges (use :func:`parse_challenges`).
    The challenge may still be unsupported (see :attr:`DigestChallenge.supported`).
    """
    raws = _parse_auth_list(value)
    if not raws:
        raise RemoteProtocolError("empty authentication header")
    if len(raws) > 1:
        raise RemoteProtocolError("several challenges in one header value; use parse_challenges")
    return _challenge_from_raw(raws[0])


def parse_challenges(values: Iterable[str], *, realm: str | None = None) -> DigestChallenge:
    """Choose the best supported Digest challenge among all header values of a 401/407.

    Each value may hold several comma-joined challenges. Non-Digest schemes, malformed or
    unsupported challenges, and (when ``realm`` is given) challenges for other realms are
    skipped. The strongest algorithm wins (SHA-256 over MD5, RFC 8760); the server's order
    breaks ties. Raises :class:`RemoteProtocolError` if nothing usable remains.
    """
    candidates: list[DigestChallenge] = []
    first_error: RemoteProtocolError | None = None
    skipped: list[str] = []
    for value in values:
        try:
            raws = _parse_auth_list(value)
        except RemoteProtocolError as exc:
            first_error = first_error or exc
            continue
        for raw in raws:
            if raw.scheme.lower() != "digest":
                skipped.append(raw.scheme)
                continue
            try:
                challenge = _challenge_from_raw(raw)
                challenge.choose_qop()
            except RemoteProtocolError as exc:
                first_error = first_error or exc
                continue
            if realm is not None and challenge.realm != realm:
                skipped.append(f"realm {challenge.realm!r}")
                continue
            candidates.append(challenge)
    if candidates:
        # max() keeps the first of equal maxima, which is the server's preferred order.
        return max(candidates, key=lambda c: c.strength)
    if first_error is not None:
        raise first_error
    detail = f" (skipped: {_clip(', '.join(skipped), 80)})" if skipped else ""
    raise RemoteProtocolError(f"no supported Digest challenge{detail}")


# --------------------------------------------------------------------------------------------
# Answering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password, optionally restricted to one realm.

    The password is excluded from ``repr``/``str`` so that logging a config or an event that
    holds credentials cannot leak it.
    """

    username: str
    password: str = field(repr=False)
    realm: str | None = None

    def matches(self, realm: str) -> bool:
        """Whether these credentials may answer a challenge for ``realm`` (exact match)."""
        return self.realm is None or self.realm == realm


def _encode(text: str) -> bytes:
    # surrogateescape lets a header decoded that way hash back to the bytes on the wire.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        pass
    # Raised outside the except block on purpose: a chained UnicodeEncodeError would carry the
    # whole string, which for A1 includes the password, into tracebacks and error reporters.
    raise LocalProtocolError("digest input is not encodable as UTF-8")


def _hexdigest(algorithm: _Algorithm, data: bytes) -> str:
    return hashlib.new(algorithm.hash_name, data).hexdigest()


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Compute the ``response`` hex digest (RFC 7616 §3.4.1-3.4.3, RFC 2617 §3.2.2).

    ``qop`` is ``None`` (RFC 2069 form), ``"auth"`` or ``"auth-int"`` (which hashes ``body``).
    Raises :class:`LocalProtocolError` for an unknown algorithm or qop, or a missing cnonce.
    """
    spec = _ALGORITHMS.get(algorithm.lower())
    if spec is None:
        raise LocalProtocolError(f"unsupported digest algorithm {algorithm!r}")
    if qop not in (None, "auth", "auth-int"):
        raise LocalProtocolError(f"unsupported qop {qop!r}")
    if (qop is not None or spec.session) and cnonce is None:
        raise LocalProtocolError("a cnonce is required with qop or a -sess algorithm")
    ha1 = _hexdigest(spec, _encode(f"{username}:{realm}:{password}"))
    if spec.session:
        ha1 = _hexdigest(spec, _encode(f"{ha1}:{nonce}:{cnonce}"))
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 = f"{a2}:{_hexdigest(spec, body)}"
    ha2 = _hexdigest(spec, _encode(a2))
    if qop is None:
        return _hexdigest(spec, _encode(f"{ha1}:{nonce}:{ha2}"))
    return _hexdigest(spec, _encode(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}"))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_local(name: str, text: str) -> None:
    if _LOCAL_CTL_RE.search(text):
        raise LocalProtocolError(f"{name} contains a control character")


def build_authorization(
    challenge: DigestChallenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """Build an Authorization / Proxy-Authorization header value answering ``challenge``.

    Pure: the caller supplies ``cnonce`` and ``nc`` (both needed when the challenge offers
    qop). ``uri`` must be the Request-URI exactly as it appears on the request line. ``body``
    is hashed only for ``qop=auth-int``. Most callers want :class:`DigestClient`, which keeps
    the nonce counts.

    Raises :class:`RemoteProtocolError` if the challenge asks for something unsupported, and
    :class:`LocalProtocolError` for bad local input (realm mismatch, control characters,
    a method that is not a token, a bad cnonce or nc).
    """
    algorithm, qop = challenge._plan()
    if not credentials.matches(challenge.realm):
        raise LocalProtocolError(
            f"credentials for realm {credentials.realm!r} cannot answer realm {challenge.realm!r}"
        )
    if not _TOKEN_RE.fullmatch(method):
        raise LocalProtocolError(f"method {method!r} is not a token")
    if not uri:
        raise LocalProtocolError("digest uri is empty")
    _check_local("digest uri", uri)
    _check_local("username", credentials.username)
    # Echoed values: a parsed challenge cannot hold line breaks, but a hand-built one could.
    _check_local("realm", challenge.realm)
    _check_local("nonce", challenge.nonce)
    if challenge.opaque is not None:
        _check_local("opaque", challenge.opaque)
    if qop is not None:
        if cnonce is None or not _CNONCE_RE.fullmatch(cnonce):
            raise LocalProtocolError(f"cnonce {cnonce!r} must be printable ASCII without quotes")
        if not 1 <= nc <= _MAX_NC:
            raise LocalProtocolError(f"nonce count {nc} out of range")
    response = compute_response(
        algorithm=algorithm.name,
        username=credentials.username,
        realm=challenge.realm,
        password=credentials.password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    parts = [
        f"username={_quote(credentials.username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f'response="{response}"',
        f"algorithm={challenge.algorithm_name}",
    ]
    if qop is not None:
        assert cnonce is not None  # checked above
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


def _default_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Answers Digest challenges, counting ``nc`` per nonce.

    ``cnonce_factory`` is called once per new nonce (inject a deterministic one in tests);
    the default draws 128 random bits. Nonce counts for at most ``max_nonces`` nonces are
    kept, least recently used first out, so a long-lived registration cannot grow memory;
    a forgotten nonce restarts at ``nc=1``, which the server answers with a fresh challenge.

    Typical use on a 401/407: ``challenge = parse_challenges(values, realm=creds.realm)``,
    then ``client.authorization(challenge, creds, method=..., uri=request_uri)`` and resend
    with CSeq+1 and a new branch. If the server challenges again and the new challenge is not
    ``stale``, the credentials are wrong: stop instead of looping.
    """

    def __init__(
        self,
        *,
        cnonce_factory: Callable[[], str] = _default_cnonce,
        max_nonces: int = 64,
    ) -> None:
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        self._cnonce_factory = cnonce_factory
        self._max_nonces = max_nonces
        # (realm, nonce) -> (cnonce, last nc used); dict order doubles as LRU order.
        self._nonces: dict[tuple[str, str], tuple[str, int]] = {}

    def __repr__(self) -> str:
        return f"DigestClient(nonces={len(self._nonces)})"

    def authorization(
        self,
        challenge: DigestChallenge,
        credentials: Credentials,
        *,
        method: str,
        uri: str,
        body: bytes = b"",
    ) -> str:
        """Build the header value for the next request answering ``challenge``.

        Each call with the same nonce advances ``nc`` by one (for qop challenges), so call it
        once per request actually sent. See :func:`build_authorization` for the errors.
        """
        qop = challenge.choose_qop()
        if qop is None:
            return build_authorization(challenge, credentials, method=method, uri=uri, body=body)
        key = (challenge.realm, challenge.nonce)
        entry = self._nonces.get(key)
        cnonce, nc = (self._cnonce_factory(), 1) if entry is None else (entry[0], entry[1] + 1)
        # Build before recording so that a failure (bad method, realm mismatch) leaves the count
        # where it was.
        header = build_authorization(
            challenge, credentials, method=method, uri=uri, cnonce=cnonce, nc=nc, body=body
        )
        self._nonces.pop(key, None)  # re-insert at the end: most recently used
        self._nonces[key] = (cnonce, nc)
        while len(self._nonces) > self._max_nonces:
            del self._nonces[next(iter(self._nonces))]
        return header

    def nonce_count(self, challenge: DigestChallenge) -> int:
        """The last ``nc`` sent for this challenge's nonce (0 if none yet)."""
        entry = self._nonces.get((challenge.realm, challenge.nonce))
        return 0 if entry is None else entry[1]

    def forget(self, challenge: DigestChallenge) -> None:
        """Drop the count for this challenge's nonce (e.g. after the server called it stale)."""
        self._nonces.pop((challenge.realm, challenge.nonce), None)


def response_header_name(status: int) -> str:
    """The header that answers a challenge in a response with ``status`` (RFC 3261 §22.2-22.3)."""
    if status == 401:
        return "Authorization"
    if status == 407:
        return "Proxy-Authorization"
    raise LocalProtocolError(f"status {status} carries no digest challenge")


def verify_authorization(
    header_value: str,
    *,
    method: str,
    password: str,
    body: bytes = b"",
    realm: str | None = None,
    nonce: str | None = None,
    uri: str | None = None,
) -> bool:
    """Check an Authorization header value against ``password`` (a minimal server side).

    Meant for tests and loopback peers: it recomputes the response and compares in constant
    time; it keeps no nonce state, so replay protection (``nc``) is the caller's business.
    ``realm``, ``nonce`` and ``uri``, when given, must match the header. Raises
    :class:`RemoteProtocolError` if the header is malformed; returns ``False`` on mismatch.
    """
    raws = _parse_auth_list(header_value)
    if len(raws) != 1 or raws[0].scheme.lower() != "digest" or raws[0].token68 is not None:
        raise RemoteProtocolError("expected one Digest credentials value")
    values: dict[str, str] = {}
    for name, value in raws[0].params:
        if name in values:
            raise RemoteProtocolError(f"duplicate digest parameter {_clip(name)}")
        values[name] = value
    missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in values]
    if missing:
        raise RemoteProtocolError(f"digest credentials lack {', '.join(missing)}")
    for wanted, name in ((realm, "realm"), (nonce, "nonce"), (uri, "uri")):
        if wanted is not None and values[name] != wanted:
            return False
    algorithm = values.get("algorithm", "MD5")
    if algorithm.lower() not in _ALGORITHMS:
        return False
    qop = values.get("qop")
    nc = 1
    cnonce = values.get("cnonce")
    if qop is not None:
        nc_text = values.get("nc", "")
        if qop not in _SUPPORTED_QOP or cnonce is None or not _NC_RE.fullmatch(nc_text):
            return False
        nc = int(nc_text, 16)
    elif _ALGORITHMS[algorithm.lower()].session:
        return False
    expected = compute_response(
        algorithm=algorithm,
        username=values["username"],
        realm=values["realm"],
        password=password,
        method=method,
        uri=values["uri"],
        nonce=values["nonce"],
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    response = values["response"]
    if not _HEX_RE.fullmatch(response):
        return False
    return hmac.compare_digest(expected, response.lower())
