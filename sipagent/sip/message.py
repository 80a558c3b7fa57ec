"""SIP messages: the model, the parser and the serializer (RFC 3261 §7, §20, §25).

Headers are stored in arrival order under their canonical long name, so compact forms (``v:``,
``i:``…) and odd casing read the same as the long forms. Headers that RFC 3261 allows to be
comma-joined (Via, Route, Record-Route, Contact…) are split on read by :meth:`Headers.get_all`,
which is what a carrier that joins two Record-Route values into one line needs.

:func:`parse_message` takes one datagram; :class:`StreamFramer` cuts a TCP/TLS byte stream into
messages by Content-Length and recognises RFC 5626 keepalives. Anything malformed raises
:class:`RemoteProtocolError` whose ``status_hint`` is the response to send (400, 413, 513…).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import RemoteProtocolError
from .uri import CSeq, NameAddr, SipUri, Via, is_token, split_outside_quotes

#: Largest message we accept. UDP datagrams cannot exceed 65 535 bytes anyway; on a stream this
#: bounds the buffer a misbehaving peer can make us hold.
MAX_MESSAGE_SIZE = 65_535
MAX_HEADERS = 200

COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Names whose canonical spelling is not plain Title-Case per hyphen.
_SPECIAL_NAMES = {
    name.lower(): name
    for name in (
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
        "MIME-Version",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Remote-Party-ID",
        "RSeq",
        "RAck",
        "SIP-ETag",
        "SIP-If-Match",
        "Min-SE",
    )
}

#: Headers whose values may be comma-joined on one line (RFC 3261 §7.3.1). Authorization-style
#: headers are deliberately absent: their params contain commas.
MULTI_VALUE_HEADERS = frozenset(
    {
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
        "Content-Encoding",
        "In-Reply-To",
        "Path",
        "Service-Route",
    }
)

_SINGLE_VALUE_REQUIRED = ("From", "To", "Call-ID", "CSeq")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


def canonical_name(name: str) -> str:
    """Map any spelling or compact form of a header name to its canonical long form."""
    stripped = name.strip()
    if len(stripped) == 1:
        compact = COMPACT_FORMS.get(stripped.lower())
        if compact:
            return compact
    lower = stripped.lower()
    special = _SPECIAL_NAMES.get(lower)
    if special:
        return special
    return "-".join(part.capitalize() for part in lower.split("-"))


@dataclass
class Headers:
    """An ordered, case-insensitive multimap of header lines."""

    _items: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, items: Iterable[tuple[str, str]]) -> Headers:
        """Build from ``(name, value)`` pairs; names are canonicalised."""
        return cls([(canonical_name(n), v) for n, v in items])

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str) -> str | None:
        """The first line's value for ``name`` (unsplit), or None."""
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return None

    def get_lines(self, name: str) -> list[str]:
        """Every line's value for ``name`` as it arrived (no comma splitting)."""
        key = canonical_name(name)
        return [v for n, v in self._items if n == key]

    def get_all(self, name: str) -> list[str]:
        """Every value for ``name``; comma-joined values of list headers are split apart."""
        key = canonical_name(name)
        values: list[str] = []
        for line in self.get_lines(key):
            if key in MULTI_VALUE_HEADERS:
                values.extend(v.strip() for v in split_outside_quotes(line, ",") if v.strip())
            else:
                values.append(line)
        return values

    def add(self, name: str, value: str) -> None:
        """Append a line."""
        self._items.append((canonical_name(name), value))

    def insert_first(self, name: str, value: str) -> None:
        """Insert a line before all others (a new top Via, a first Route)."""
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line (kept at the first one's position)."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [(n2, v2) for n2, v2 in self._items[i + 1 :] if n2 != key]
                return
        self._items.append((key, value))

    def replace_top(self, name: str, value: str) -> None:
        """Replace the first value of a list header, even when its line holds several values."""
        key = canonical_name(name)
        for i, (n, line) in enumerate(self._items):
            if n == key:
                rest = list(split_outside_quotes(line, ","))[1:]
                self._items[i] = (key, ", ".join([value, *(v.strip() for v in rest)]))
                return
        self._items.insert(0, (key, value))

    def pop_top(self, name: str) -> str | None:
        """Remove and return the first value of a list header (a proxy popping its Route)."""
        key = canonical_name(name)
        for i, (n, line) in enumerate(self._items):
            if n == key:
                values = [v.strip() for v in split_outside_quotes(line, ",")]
                if len(values) > 1:
                    self._items[i] = (key, ", ".join(values[1:]))
                else:
                    del self._items[i]
                return values[0]
        return None

    def remove(self, name: str) -> None:
        """Drop every line of ``name``."""
        key = canonical_name(name)
        self._items = [(n, v) for n, v in self._items if n != key]

    def copy(self) -> Headers:
        """A shallow copy (values are strings, so this is a full copy)."""
        return Headers(list(self._items))

    def tokens(self, name: str) -> frozenset[str]:
        """Lower-cased option tags / methods from a list header (Supported, Require, Allow)."""
        return frozenset(v.strip().lower() for v in self.get_all(name) if v.strip())


class Message:
    """Fields and accessors shared by requests and responses."""

    headers: Headers
    body: bytes

    # -- typed accessors; each raises RemoteProtocolError(400) on a malformed value ----------------
    def vias(self) -> list[Via]:
        """All Via values, top first."""
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    def top_via(self) -> Via:
        """The topmost Via (the one that identifies the transaction)."""
        values = self.headers.get_all("Via")
        if not values:
            raise RemoteProtocolError("missing Via")
        return Via.parse(values[0])

    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        return CSeq.parse(self._required("CSeq"))

    def call_id(self) -> str:
        """The Call-ID."""
        return self._required("Call-ID").strip()

    def from_(self) -> NameAddr:
        """The parsed From header."""
        return NameAddr.parse(self._required("From"))

    def to(self) -> NameAddr:
        """The parsed To header."""
        return NameAddr.parse(self._required("To"))

    def contacts(self) -> list[NameAddr]:
        """Parsed Contact values (``*`` is not returned; see REGISTER handling)."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Contact") if v.strip() != "*"]

    def record_routes(self) -> list[NameAddr]:
        """Parsed Record-Route values in header order."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Record-Route")]

    def routes(self) -> list[NameAddr]:
        """Parsed Route values in header order."""
        return [NameAddr.parse(v) for v in self.headers.get_all("Route")]

    def content_type(self) -> str | None:
        """The media type without parameters, lower-cased."""
        value = self.headers.get("Content-Type")
        return value.split(";")[0].strip().lower() if value else None

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise RemoteProtocolError(f"missing {name}")
        return value

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class Request(Message):
    """A SIP request. ``uri`` is kept as text; :meth:`request_uri` parses it."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def request_uri(self) -> SipUri:
        """The parsed Request-URI."""
        return SipUri.parse(self.uri)

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is always written and always true."""
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")

    def response(self, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
        """A response to this request per §8.2.6.2: Via, From, To, Call-ID and CSeq copied.

        ``to_tag`` is added to To when the request's To has none (dialog-creating answers).
        """
        headers = Headers()
        for value in self.headers.get_all("Via"):
            headers.add("Via", value)
        to_value = self.headers.get("To") or ""
        if to_tag is not None and self.to().tag is None:
            to_value = f"{to_value};tag={to_tag}"
        for name, value in (
            ("From", self.headers.get("From") or ""),
            ("To", to_value),
            ("Call-ID", self.headers.get("Call-ID") or ""),
            ("CSeq", self.headers.get("CSeq") or ""),
        ):
            headers.add(name, value)
        reason = reason or REASON_PHRASES.get(status, "Unknown")
        return Response(status=status, reason=reason, headers=headers)


@dataclass
class Response(Message):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is always written and always true."""
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line; accept bare LF line endings from sloppy peers."""
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :]
    idx = data.find(b"\n\n")
    if idx >= 0:
        return data[:idx], data[idx + 2 :]
    raise RemoteProtocolError("no empty line after the headers")


def _unfold(head: str) -> list[str]:
    """Split header lines and join RFC 3261 §7.3.1 continuation lines (leading SP/HT)."""
    lines: list[str] = []
    for raw in head.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw)
    return lines


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    On datagram transports a body longer than Content-Length is truncated (§18.3); a body shorter
    than it is an error. With ``stream=True`` Content-Length is mandatory (the framer needs it).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("message too large", status_hint=513)
    # Leading CRLFs before a message are allowed and ignored (§7.5).
    data = data.lstrip(b"\r\n")
    head_bytes, body = _split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("headers are not UTF-8") from None
    lines = _unfold(head)
    start = lines[0]
    if len(lines) - 1 > MAX_HEADERS:
        raise RemoteProtocolError("too many header lines", status_hint=513)
    headers = Headers()
    for line in lines[1:]:
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not is_token(name.strip()):
            raise RemoteProtocolError(f"bad header line {line[:80]!r}")
        headers.add(name, value.strip())

    message = _parse_start_line(start, headers)
    _check_mandatory(message)
    message.body = _frame_body(headers, body, stream=stream)
    return message


def _parse_start_line(start: str, headers: Headers) -> Request | Response:
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0":
            raise RemoteProtocolError(f"bad status line {start[:80]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise RemoteProtocolError(f"bad status code in {start[:80]!r}")
        return Response(status=int(code), reason=parts[2].strip() if len(parts) > 2 else "", headers=headers)
    parts = start.split(" ")
    if len(parts) != 3:
        raise RemoteProtocolError(f"bad request line {start[:80]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise RemoteProtocolError(f"bad method {method[:40]!r}")
    if version.upper() != "SIP/2.0":
        raise RemoteProtocolError(f"unsupported version {version[:20]!r}", status_hint=505)
    if ":" not in uri:
        raise RemoteProtocolError(f"bad Request-URI {uri[:80]!r}")
    return Request(method=method.upper(), uri=uri, headers=headers)


def _check_mandatory(message: Request | Response) -> None:
    if not message.headers.get_all("Via"):
        raise RemoteProtocolError("missing Via")
    for name in _SINGLE_VALUE_REQUIRED:
        if message.headers.get(name) is None:
            raise RemoteProtocolError(f"missing {name}")
    # Validate the ones every layer relies on now, so later layers never meet a malformed one.
    message.vias()  # all of them: responses copy every Via back
    cseq = message.cseq()
    message.from_()
    message.to()
    if isinstance(message, Request) and cseq.method != message.method:
        raise RemoteProtocolError("CSeq method does not match the request method")


def _frame_body(headers: Headers, body: bytes, *, stream: bool) -> bytes:
    length_text = headers.get("Content-Length")
    if length_text is None:
        if stream:
            raise RemoteProtocolError("missing Content-Length on a stream transport")
        return body
    length_text = length_text.strip()
    if not length_text.isdigit():
        raise RemoteProtocolError(f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > len(body):
        raise RemoteProtocolError("body shorter than Content-Length")
    return body[:length]


@dataclass(frozen=True)
class Keepalive:
    """An RFC 5626 keepalive seen on a stream: ``ping`` (CRLFCRLF) wants a CRLF ``pong``."""

    ping: bool


@dataclass(frozen=True)
class MalformedMessage:
    """A complete, correctly framed message on a stream that failed to parse.

    The stream stays usable: the adapter answers with :func:`error_response_for` and carries on.
    """

    data: bytes
    error: RemoteProtocolError


StreamItem = Request | Response | Keepalive | MalformedMessage


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages by Content-Length.

    ``feed`` returns complete messages and keepalives in order. A framing error (no
    Content-Length, oversize headers) is unrecoverable on a stream: it raises and the adapter
    closes the connection after answering if it can.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[StreamItem]:
        """Add received bytes; return whatever complete items they finish.

        Raises :class:`RemoteProtocolError` only when framing itself is lost (no usable
        Content-Length, oversize): the connection must then be closed.
        """
        self._buffer += data
        out: list[StreamItem] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> StreamItem | None:
        buf = self._buffer
        if buf.startswith(b"\r\n\r\n"):
            del buf[:4]
            return Keepalive(ping=True)
        if buf == b"\r\n":
            # Alone, a CRLF is a pong. A CRLF followed by more is leading garbage to skip.
            del buf[:2]
            return Keepalive(ping=False)
        while buf.startswith(b"\r\n") and len(buf) > 2 and not buf.startswith(b"\r\n\r\n"):
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._max_size:
                raise RemoteProtocolError("header section too large", status_hint=513)
            return None
        head_end = end + 4
        length = _content_length_of(bytes(buf[:end]))
        total = head_end + length
        if total > self._max_size:
            raise RemoteProtocolError("message too large", status_hint=513)
        if len(buf) < total:
            return None
        chunk = bytes(buf[:total])
        del buf[:total]
        try:
            return parse_message(chunk, stream=True)
        except RemoteProtocolError as exc:
            return MalformedMessage(chunk, exc)


def _content_length_of(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise RemoteProtocolError("bad Content-Length")
            return int(text)
    raise RemoteProtocolError("missing Content-Length on a stream transport")


_ECHOED_ON_ERROR = ("Via", "From", "To", "Call-ID", "CSeq")


def error_response_for(data: bytes, error: RemoteProtocolError) -> Response | None:
    """Best-effort error response to a request too malformed to parse (§8.2, h11 style).

    Copies whatever Via/From/To/Call-ID/CSeq lines can be read raw so the sender can match the
    answer. Returns None for responses (never answered) and for requests with no Via line.
    """
    text = data.lstrip(b"\r\n")[:MAX_MESSAGE_SIZE].decode("utf-8", "replace")
    if not text or text.startswith("SIP/"):
        return None
    head = text.replace("\r\n", "\n").split("\n\n", 1)[0]
    headers = Headers()
    for line in _unfold(head)[1:]:
        name, colon, value = line.partition(":")
        if not colon or not is_token(name.strip()):
            continue
        canonical = canonical_name(name)
        if canonical in _ECHOED_ON_ERROR:
            headers.add(canonical, value.strip())
    if not headers.get("Via"):
        return None
    status = error.status_hint if 400 <= error.status_hint <= 699 else 400
    return Response(status=status, reason=error.reason, headers=headers)
