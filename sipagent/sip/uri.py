"""SIP URIs and the structured header values built on them (RFC 3261 §19.1, §20, §25.1).

Everything here is a small immutable value with ``parse`` and ``__str__``. Parsing is tolerant of
the spacing real carriers send but strict about structure: anything we could not route on raises
:class:`RemoteProtocolError` with status 400 (416 for an unsupported URI scheme).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from .errors import RemoteProtocolError

Params = Mapping[str, str | None]

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token (method names, header names, tags...)."""
    return bool(text) and all(ch in _TOKEN_CHARS for ch in text)


def _parse_params(text: str, sep: str = ";") -> dict[str, str | None]:
    """Parse ``;a=b;c`` style parameters. Names are lower-cased; values keep their case."""
    params: dict[str, str | None] = {}
    for raw in split_outside_quotes(text, sep):
        part = raw.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise RemoteProtocolError(f"empty parameter name in {text!r}")
        params[name] = value.strip() if eq else None
    return params


def _format_params(params: Params, sep: str = ";") -> str:
    return "".join(f"{sep}{k}" if v is None else f"{sep}{k}={v}" for k, v in params.items())


def split_outside_quotes(text: str, sep: str) -> Iterator[str]:
    """Split ``text`` on ``sep`` except inside double quotes or ``<...>``.

    This is what lets ``"Smith, John" <sip:a@b;x=1>, <sip:c@d>`` split into two Contact values.
    """
    depth = 0
    in_quotes = False
    escaped = False
    start = 0
    for i, ch in enumerate(text):
        if in_quotes:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
            continue
        if ch == '"':
            in_quotes = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            yield text[start:i]
            start = i + 1
    if in_quotes:
        raise RemoteProtocolError(f"unterminated quoted string in {text!r}")
    yield text[start:]


def _parse_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` with IPv6 references in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteProtocolError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RemoteProtocolError(f"garbage after IPv6 reference in {text!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or any(ch in host for ch in ' \t<>"@;?'):
        raise RemoteProtocolError(f"bad host in {text!r}")
    if not port_text:
        return host.lower(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RemoteProtocolError(f"bad port in {text!r}")
    return host.lower(), int(port_text)


def _format_hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True)
class SipUri:
    """A ``sip:``/``sips:`` URI. ``params`` are URI parameters (``;transport=tcp``, ``;lr``)."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP URI; ``tel:`` and other schemes raise 416 (Unsupported URI Scheme)."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon:
            raise RemoteProtocolError(f"not a URI: {text!r}")
        if scheme not in ("sip", "sips"):
            raise RemoteProtocolError(f"unsupported URI scheme {scheme!r}", status_hint=416)
        rest, qmark, headers = rest.partition("?")
        user: str | None = None
        password: str | None = None
        # The user part may contain ';' (RFC 3261 user-unreserved), so find '@' first.
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, pcolon, pw = userinfo.partition(":")
            password = pw if pcolon else None
            if not user:
                raise RemoteProtocolError(f"empty user in {text!r}")
        hostport, _, param_text = rest.partition(";")
        host, port = _parse_hostport(hostport)
        return cls(
            host=host,
            user=user,
            port=port,
            scheme=scheme,
            password=password,
            params=_parse_params(param_text),
            headers=headers if qmark else None,
        )

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        headers = f"?{self.headers}" if self.headers is not None else ""
        hostport = _format_hostport(self.host, self.port)
        return f"{self.scheme}:{userinfo}{hostport}{_format_params(self.params)}{headers}"

    @property
    def transport(self) -> str:
        """The transport the URI asks for: ``tls`` for sips, else its ``transport`` param, else udp."""
        if self.scheme == "sips":
            return "tls"
        value = self.params.get("transport")
        return (value or "udp").lower()

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with ``params`` merged in."""
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def without_params(self, *names: str) -> SipUri:
        """A copy without the named params."""
        return replace(self, params={k: v for k, v in self.params.items() if k not in names})


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact/Route/Record-Route value: optional display name, URI, header params."""

    uri: SipUri
    display_name: str | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)
    #: Whether the value was (or must be) written with ``<>``. Route values always are.
    bracketed: bool = True

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse ``"Name" <uri>;tag=x``, ``Name <uri>`` or the bare ``uri;tag=x`` form."""
        text = text.strip()
        if not text:
            raise RemoteProtocolError("empty address")
        display: str | None = None
        if "<" in text:
            if text.startswith('"'):
                end = _closing_quote(text)
                display = _unquote(text[: end + 1])
                rest = text[end + 1 :].lstrip()
                if not rest.startswith("<"):
                    raise RemoteProtocolError(f"expected '<' after display name in {text!r}")
            else:
                lt = text.index("<")
                display = text[:lt].strip() or None
                rest = text[lt:]
            gt = rest.find(">")
            if gt < 0:
                raise RemoteProtocolError(f"unterminated '<' in {text!r}")
            uri = SipUri.parse(rest[1:gt])
            params = _parse_params(rest[gt + 1 :])
            return cls(uri=uri, display_name=display, params=params, bracketed=True)
        # addr-spec form: parameters after the URI belong to the header, not to the URI (§20.10).
        uri_text, _, param_text = text.partition(";")
        if "?" in uri_text or "," in uri_text:
            raise RemoteProtocolError(f"URI with headers or commas must be in <> in {text!r}")
        return cls(uri=SipUri.parse(uri_text), params=_parse_params(param_text), bracketed=False)

    def __str__(self) -> str:
        display = f'"{_escape(self.display_name)}" ' if self.display_name else ""
        needs_brackets = self.bracketed or self.display_name or self.uri.params or self.uri.headers
        addr = f"<{self.uri}>" if needs_brackets else str(self.uri)
        return f"{display}{addr}{_format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` header parameter (From/To)."""
        return self.params.get("tag")

    def with_params(self, **params: str | None) -> NameAddr:
        """A copy with ``params`` merged in."""
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)


def _closing_quote(text: str) -> int:
    escaped = False
    for i in range(1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    raise RemoteProtocolError(f"unterminated quoted string in {text!r}")


def _unquote(text: str) -> str:
    inner = text[1:-1]
    out: list[str] = []
    escaped = False
    for ch in inner:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...``."""

    transport: str
    host: str
    port: int | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value (the header may hold several, split them first)."""
        text = text.strip()
        proto, _, rest = text.partition(" ")
        parts = [p.strip() for p in proto.split("/")]
        if len(parts) != 3 or parts[0].upper() != "SIP" or parts[1] != "2.0" or not parts[2]:
            # Some stacks put spaces around the slashes: "SIP / 2.0 / UDP".
            joined = text.replace(" ", "")
            if joined.upper().startswith("SIP/2.0/"):
                tail = text.split("/", 2)[2].strip()
                transport, _, rest = tail.partition(" ")
                parts = ["SIP", "2.0", transport]
            else:
                raise RemoteProtocolError(f"bad Via protocol in {text!r}")
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = _parse_hostport(sent_by.strip())
        return cls(transport=parts[2].upper(), host=host, port=port, params=_parse_params(param_text))

    def __str__(self) -> str:
        hostport = _format_hostport(self.host, self.port)
        return f"SIP/2.0/{self.transport} {hostport}{_format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The transaction branch id."""
        return self.params.get("branch")

    def with_params(self, **params: str | None) -> Via:
        """A copy with ``params`` merged in (``received``/``rport`` stamping)."""
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)


@dataclass(frozen=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``1234 INVITE``; the number must fit in 32 bits (§8.1.1.5)."""
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
            raise RemoteProtocolError(f"bad CSeq {text!r}")
        seq = int(parts[0])
        if seq >= 2**31:
            raise RemoteProtocolError(f"CSeq number out of range in {text!r}")
        return cls(seq=seq, method=parts[1].upper())

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` header parameters (public for headers such as Session-Expires)."""
    return _parse_params(text)
