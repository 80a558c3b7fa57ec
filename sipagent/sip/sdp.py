"""SDP session descriptions: the model, the parser and the serializer (RFC 8866, ex-RFC 4566).

:func:`parse_sdp` is lenient where real peers are sloppy and strict where a mistake would
mislead us:

* LF-only and CR-only line endings are accepted, as are trailing spaces and blank lines;
* lines of an unknown type (``x=…``) and the types we do not interpret (``z=``, ``k=``…) are kept,
  in order, and written back out (RFC 8866 §5: parsers ignore unknown types, they don't fail);
* a missing ``s=`` or ``t=`` is filled in (``s=-``, ``t=0 0``): no call depends on them;
* anything we would have to guess at (no ``v=``/``o=``/``m=``, a port that is not a number, an
  ``o=`` with five fields…) raises :class:`~sipagent.sip.errors.RemoteProtocolError` with
  ``status_hint=400`` and a message naming the line. No other exception type escapes the parser.

:meth:`SessionDescription.serialize` writes CRLF lines in the canonical RFC 8866 order, so
``parse_sdp(sd.serialize()) == sd`` for anything the parser produced.

Typed helpers (:meth:`MediaDescription.payload_map`, :meth:`~MediaDescription.fmtp`,
:meth:`SessionDescription.media_direction`…) read the attributes the offer/answer code needs;
they never raise on a malformed attribute, they treat it as absent, because one bad line about a
codec we don't use must not fail the call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Bandwidth",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtcpAttribute",
    "RtpMap",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]


class Direction(StrEnum):
    """The media direction attribute of a stream (RFC 8866 §6.7), from the SDP author's side."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """Whether the author of the SDP sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """Whether the author of the SDP receives media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, send: bool, receive: bool) -> Direction:
        """The direction that sends and/or receives as asked."""
        if send:
            return cls.SENDRECV if receive else cls.SENDONLY
        return cls.RECVONLY if receive else cls.INACTIVE

    def mirrored(self) -> Direction:
        """The same stream seen from the other end: sendonly ↔ recvonly (RFC 3264 §6.1)."""
        return Direction.from_flags(send=self.receives, receive=self.sends)

    def restricted_to(self, other: Direction) -> Direction:
        """What both allow: the intersection of the two send/receive permissions."""
        return Direction.from_flags(send=self.sends and other.sends, receive=self.receives and other.receives)


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    #: Kept as text: RFC 8866 calls it numeric, but it is only ever compared, and some stacks
    #: put non-numeric tokens there.
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (a multicast ``/ttl`` stays in ``address``)."""

    nettype: str
    addrtype: str
    address: str

    @property
    def is_null(self) -> bool:
        """``c=IN IP4 0.0.0.0``: the RFC 2543 way of saying "don't send me media" (old-style hold)."""
        return self.address in ("0.0.0.0", "::")


@dataclass(frozen=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (kbit/s for ``AS``/``CT``, bit/s for ``TIAS``)."""

    bwtype: str
    bandwidth: int


@dataclass(frozen=True)
class Timing:
    """``t=<start-time> <stop-time>`` with the ``r=`` repeat lines that follow it (kept raw)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True)
class RtpMap:
    """One ``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (or a static RFC 3551 type)."""

    encoding: str
    clock_rate: int
    channels: int = 1

    def is_codec(self, encoding: str, clock_rate: int) -> bool:
        """Whether this names ``encoding`` (compared case-insensitively, RFC 4855) at that rate."""
        return self.encoding.upper() == encoding.upper() and self.clock_rate == clock_rate

    def __str__(self) -> str:
        base = f"{self.encoding}/{self.clock_rate}"
        return base if self.channels == 1 else f"{base}/{self.channels}"


@dataclass(frozen=True)
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605)."""

    port: int
    connection: Connection | None = None


#: Audio payload types with a fixed meaning (RFC 3551 table 4); they need no ``a=rtpmap``.
STATIC_PAYLOAD_TYPES: Final = MappingProxyType({
    0: RtpMap("PCMU", 8000), 3: RtpMap("GSM", 8000), 4: RtpMap("G723", 8000), 5: RtpMap("DVI4", 8000),
    6: RtpMap("DVI4", 16000), 7: RtpMap("LPC", 8000), 8: RtpMap("PCMA", 8000), 9: RtpMap("G722", 8000),
    10: RtpMap("L16", 44100, 2), 11: RtpMap("L16", 44100), 12: RtpMap("QCELP", 8000), 13: RtpMap("CN", 8000),
    14: RtpMap("MPA", 90000), 15: RtpMap("G728", 8000), 16: RtpMap("DVI4", 11025), 17: RtpMap("DVI4", 22050),
    18: RtpMap("G729", 8000),
})  # fmt: skip

Attribute = tuple[str, str | None]

_DIRECTIONS: Final = frozenset(d.value for d in Direction)
_UINT = re.compile(r"[0-9]{1,20}")
_RTPMAP = re.compile(r"([0-9]{1,3})\s+([^\s/]+)/([0-9]{1,9})(?:/([0-9]{1,3}))?")
_PTIME = re.compile(r"([0-9]{1,6})(?:\.[0-9]{1,6})?")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: Line types that may only appear before the first m= (RFC 8866 §5).
_SESSION_ONLY: Final = frozenset("vosueptrz")


class _AttributeAccess:
    """Attribute look-ups shared by the session and media levels.

    Names compare case-insensitively: RFC 8866 does not promise it, but no two registered
    attributes differ only by case and some peers write ``a=sendRecv``.
    """

    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        """Whether an ``a=<name>`` or ``a=<name>:<value>`` line is present."""
        wanted = name.lower()
        return any(n.lower() == wanted for n, _ in self.attributes)

    def get_attribute(self, name: str) -> str | None:
        """The value of the first ``a=<name>[:<value>]``: ``None`` if absent, ``""`` for a flag."""
        values = self.attribute_values(name)
        return values[0] if values else None

    def attribute_values(self, name: str) -> list[str]:
        """The values of every ``a=<name>…`` line, in order (``""`` for a flag)."""
        wanted = name.lower()
        return [v or "" for n, v in self.attributes if n.lower() == wanted]

    def add_attribute(self, name: str, value: str | None = None) -> None:
        """Append ``a=<name>`` (``value is None``) or ``a=<name>:<value>``."""
        self.attributes.append((name, value))

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in whole milliseconds (``20.0`` reads as 20); ``None`` if absent or bad.

        A media-level attribute, but some peers put it at session level, so both levels have it.
        """
        return _parse_ms(self.get_attribute("ptime"))

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in whole milliseconds; ``None`` if absent or bad."""
        return _parse_ms(self.get_attribute("maxptime"))

    @property
    def direction_attribute(self) -> Direction | None:
        """The first direction attribute at this level, if any."""
        for name, _ in self.attributes:
            if name.lower() in _DIRECTIONS:
                return Direction(name.lower())
        return None


@dataclass(kw_only=True)
class MediaDescription(_AttributeAccess):
    """One ``m=`` section: ``m=<media> <port>[/<count>] <proto> <fmt> …`` and its lines."""

    media: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    encryption_key: str | None = None
    #: Lines we keep but don't interpret (unknown types, extra multicast ``c=``), in order.
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def is_rejected(self) -> bool:
        """Port 0: the stream is rejected or disabled (RFC 3264 §6, §8.2)."""
        return self.port == 0

    def payload_types(self) -> list[int]:
        """The RTP payload types of the ``m=`` line, in order (non-numeric formats skipped)."""
        return [int(f) for f in self.formats if _UINT.fullmatch(f) and int(f) <= 127]

    def rtpmap(self) -> dict[int, RtpMap]:
        """Every well-formed ``a=rtpmap`` of this section (malformed ones are left out)."""
        result: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            match = _RTPMAP.fullmatch(value.strip())
            if match is None or int(match[1]) > 127:
                continue
            channels = int(match[4]) if match[4] else 1
            result.setdefault(int(match[1]), RtpMap(match[2], int(match[3]), channels))
        return result

    def payload_map(self) -> dict[int, RtpMap]:
        """What each payload type of the ``m=`` line means, in ``m=`` order.

        An ``a=rtpmap`` wins; otherwise a static RFC 3551 type; a dynamic type without an
        ``a=rtpmap`` has no known meaning and is left out.
        """
        explicit = self.rtpmap()
        result: dict[int, RtpMap] = {}
        for pt in self.payload_types():
            mapping = explicit.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if mapping is not None:
                result.setdefault(pt, mapping)
        return result

    def fmtp(self, payload_type: int) -> str | None:
        """The format parameters of ``a=fmtp:<payload_type> <params>``, if present."""
        for value in self.attribute_values("fmtp"):
            parts = value.split(None, 1)
            if parts and parts[0] == str(payload_type):
                return parts[1].strip() if len(parts) > 1 else ""
        return None

    @property
    def crypto(self) -> list[str]:
        """The raw values of the ``a=crypto`` lines (RFC 4568 SDES), for the SRTP layer."""
        return self.attribute_values("crypto")

    @property
    def rtcp(self) -> RtcpAttribute | None:
        """``a=rtcp`` (RFC 3605): where the peer wants RTCP when it is not on port + 1."""
        value = self.get_attribute("rtcp")
        if value is None:
            return None
        tokens = value.split()
        if not tokens or not _UINT.fullmatch(tokens[0]) or int(tokens[0]) > 65535:
            return None
        port = int(tokens[0])
        if len(tokens) == 4:
            return RtcpAttribute(port, Connection(tokens[1], tokens[2], tokens[3]))
        return RtcpAttribute(port) if len(tokens) == 1 else None

    @property
    def rtcp_mux(self) -> bool:
        """``a=rtcp-mux`` (RFC 5761): the peer offers RTP and RTCP on one port."""
        return self.has_attribute("rtcp-mux")

    def _lines(self) -> Iterator[tuple[str, str]]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        yield "m", " ".join([self.media, port, self.proto, *self.formats])
        if self.information is not None:
            yield "i", self.information
        if self.connection is not None:
            yield "c", _connection_value(self.connection)
        for bw in self.bandwidths:
            yield "b", f"{bw.bwtype}:{bw.bandwidth}"
        if self.encryption_key is not None:
            yield "k", self.encryption_key
        yield from self.other_lines
        yield from _attribute_lines(self.attributes)


@dataclass(kw_only=True)
class SessionDescription(_AttributeAccess):
    """A whole SDP body: the session-level lines and the ``m=`` sections, in order."""

    version: int = 0
    origin: Origin
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    encryption_key: str | None = None
    #: Lines we keep but don't interpret (unknown types), in order; written after the timing.
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @property
    def direction(self) -> Direction:
        """The session-level direction; ``sendrecv`` when none is given (RFC 8866 §6.7)."""
        return self.direction_attribute or Direction.SENDRECV

    def media_direction(self, media: MediaDescription) -> Direction:
        """A stream's direction: its own attribute, else the session-level one, else sendrecv."""
        return media.direction_attribute or self.direction

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """A stream's effective ``c=``: the media-level one, else the session-level one."""
        return media.connection or self.connection

    def serialize(self) -> bytes:
        """The body as UTF-8 with CRLF line endings, fields in RFC 8866 §5 order.

        Raises :class:`LocalProtocolError` if a field we were given contains CR, LF or NUL,
        which would let a configured value (a session name, say) inject SDP lines.
        """
        out: list[str] = []
        for kind, value in self._lines():
            if "\r" in value or "\n" in value or "\0" in value:
                raise LocalProtocolError(f"SDP {kind}= value contains CR, LF or NUL: {value!r}")
            out.append(f"{kind}={value}\r\n")
        return "".join(out).encode("utf-8")

    def _lines(self) -> Iterator[tuple[str, str]]:
        o = self.origin
        yield "v", str(self.version)
        yield "o", f"{o.username} {o.sess_id} {o.sess_version} {o.nettype} {o.addrtype} {o.address}"
        # "s= " (one space) is RFC 8866's spelling of an empty session name.
        yield "s", self.session_name or " "
        if self.information is not None:
            yield "i", self.information
        if self.uri is not None:
            yield "u", self.uri
        for email in self.emails:
            yield "e", email
        for phone in self.phones:
            yield "p", phone
        if self.connection is not None:
            yield "c", _connection_value(self.connection)
        for bw in self.bandwidths:
            yield "b", f"{bw.bwtype}:{bw.bandwidth}"
        for timing in self.timing or [Timing()]:
            yield "t", f"{timing.start} {timing.stop}"
            for repeat in timing.repeats:
                yield "r", repeat
        if self.time_zones is not None:
            yield "z", self.time_zones
        if self.encryption_key is not None:
            yield "k", self.encryption_key
        yield from self.other_lines
        yield from _attribute_lines(self.attributes)
        for media in self.media:
            yield from media._lines()


def _connection_value(connection: Connection) -> str:
    return f"{connection.nettype} {connection.addrtype} {connection.address}"


def _attribute_lines(attributes: list[Attribute]) -> Iterator[tuple[str, str]]:
    for name, value in attributes:
        yield "a", name if value is None else f"{name}:{value}"


def _parse_ms(value: str | None) -> int | None:
    if value is None:
        return None
    match = _PTIME.fullmatch(value.strip())
    if match is None or int(match[1]) == 0:
        return None
    return int(match[1])


# --- parser -------------------------------------------------------------------------------------


def parse_sdp(data: bytes | str, *, require_media: bool = True) -> SessionDescription:
    """Parse an SDP body.

    ``require_media`` rejects a body without any ``m=`` line: RFC 8866 allows one, but as an
    offer or answer for a phone call it means the peer sent something it did not mean to.

    Raises :class:`RemoteProtocolError` (``status_hint=400``) for malformed input, and nothing
    else.
    """
    return _Parser(_decode(data)).parse(require_media=require_media)


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        if not data.isascii():
            try:
                data.encode("utf-8")  # a lone surrogate would only fail later, in serialize()
            except UnicodeEncodeError:
                raise RemoteProtocolError("SDP: text is not valid Unicode", status_hint=400) from None
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Some PBXs write ISO-8859-1 session names; Latin-1 maps every byte, so nothing is lost
        # and the lines that matter (all ASCII) read the same.
        return data.decode("latin-1")


class _Parser:
    """One pass over the lines, session section first, then one section per ``m=``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lineno = 0
        self.origin: Origin | None = None
        self.version: int | None = None
        self.session_name: str | None = None
        self.seen: set[str] = set()
        self.media_count = 0

    def fail(self, message: str) -> RemoteProtocolError:
        where = f"SDP line {self.lineno}: " if self.lineno else "SDP: "
        return RemoteProtocolError(where + message, status_hint=400)

    def parse(self, *, require_media: bool) -> SessionDescription:
        # A placeholder origin until the real o= line is read; checked below.
        sd = SessionDescription(origin=Origin("-", "0", 0, "IN", "IP4", "0.0.0.0"), timing=[])
        current: MediaDescription | None = None
        for raw in _LINE_BREAK.split(self.text):
            self.lineno += 1
            line = raw.rstrip(" \t")
            if not line:
                continue  # blank lines, usually a trailing one: harmless
            if "\0" in line:
                raise self.fail("contains a NUL character")
            if len(line) < 2 or line[1] != "=" or not (line[0].isascii() and line[0].isalpha()):
                raise self.fail(f"not of the form <type>=<value>: {line[:40]!r}")
            kind, value = line[0], line[2:]
            if self.version is None and kind != "v":
                raise self.fail(f"the first line must be v=, got {kind}=")
            if kind == "m":
                current = self.media_line(value)
                sd.media.append(current)
                self.media_count += 1
            elif current is None:
                self.session_line(sd, kind, value)
            else:
                self.media_section_line(current, kind, value)
        self.lineno = 0
        if self.version is None:
            raise self.fail("empty body: no v= line")
        if self.origin is None:
            raise self.fail("missing o= line")
        if require_media and not sd.media:
            raise self.fail("no m= line: the session describes no media")
        sd.version = self.version
        sd.origin = self.origin
        sd.session_name = "-" if self.session_name is None else self.session_name
        if not sd.timing:
            sd.timing = [Timing()]
        return sd

    def once(self, kind: str, where: str = "session section") -> None:
        key = f"{where}:{kind}"
        if key in self.seen:
            raise self.fail(f"more than one {kind}= line in the {where}")
        self.seen.add(key)

    def session_line(self, sd: SessionDescription, kind: str, value: str) -> None:
        if kind in "vosicuzk":
            self.once(kind)
        if kind == "v":
            self.version = self.uint(value, "v= version")
            if self.version != 0:
                raise self.fail(f"unsupported SDP version {self.version} (only 0 exists)")
        elif kind == "o":
            self.origin = self.origin_line(value)
        elif kind == "s":
            self.session_name = value
        elif kind == "i":
            sd.information = value
        elif kind == "u":
            sd.uri = value
        elif kind == "e":
            sd.emails.append(value)
        elif kind == "p":
            sd.phones.append(value)
        elif kind == "c":
            sd.connection = self.connection_line(value)
        elif kind == "b":
            sd.bandwidths.append(self.bandwidth_line(value))
        elif kind == "t":
            fields = value.split()
            if len(fields) != 2:
                raise self.fail(f"t= needs <start> <stop>, got {value!r}")
            sd.timing.append(Timing(self.uint(fields[0], "t= start"), self.uint(fields[1], "t= stop")))
        elif kind == "r":
            if not sd.timing:
                raise self.fail("r= line before any t= line")
            sd.timing[-1] = replace(sd.timing[-1], repeats=(*sd.timing[-1].repeats, value))
        elif kind == "z":
            sd.time_zones = value
        elif kind == "k":
            sd.encryption_key = value
        elif kind == "a":
            sd.attributes.append(self.attribute_line(value))
        else:
            sd.other_lines.append((kind, value))

    def media_section_line(self, media: MediaDescription, kind: str, value: str) -> None:
        if kind in _SESSION_ONLY:
            raise self.fail(f"{kind}= is only allowed at session level, not inside an m= section")
        if kind in "ik":
            self.once(kind, f"m= section {self.media_count}")
        if kind == "i":
            media.information = value
        elif kind == "c":
            conn = self.connection_line(value)
            if media.connection is None:
                media.connection = conn
            else:
                # Layered multicast may list several; we only use the first.
                media.other_lines.append(("c", value))
        elif kind == "b":
            media.bandwidths.append(self.bandwidth_line(value))
        elif kind == "k":
            media.encryption_key = value
        elif kind == "a":
            media.attributes.append(self.attribute_line(value))
        else:
            media.other_lines.append((kind, value))

    def uint(self, text: str, what: str, maximum: int | None = None) -> int:
        # A regex rather than int(): int() also takes "+1", " 1", "1_0" and non-ASCII digits.
        if not _UINT.fullmatch(text):
            raise self.fail(f"{what} is not a non-negative integer: {text[:40]!r}")
        number = int(text)
        if maximum is not None and number > maximum:
            raise self.fail(f"{what} {number} is out of range (0-{maximum})")
        return number

    def origin_line(self, value: str) -> Origin:
        fields = value.split()
        if len(fields) != 6:
            raise self.fail(
                "o= needs 6 fields (username sess-id sess-version nettype addrtype address), "
                f"got {len(fields)}"
            )
        username, sess_id, version, nettype, addrtype, address = fields
        return Origin(username, sess_id, self.uint(version, "o= sess-version"), nettype, addrtype, address)

    def connection_line(self, value: str) -> Connection:
        fields = value.split()
        if len(fields) != 3:
            raise self.fail(f"c= needs 3 fields (nettype addrtype address), got {len(fields)}")
        return Connection(*fields)

    def bandwidth_line(self, value: str) -> Bandwidth:
        bwtype, colon, amount = value.partition(":")
        if not colon or not bwtype.strip():
            raise self.fail(f"b= needs <bwtype>:<bandwidth>, got {value[:40]!r}")
        return Bandwidth(bwtype.strip(), self.uint(amount.strip(), "b= bandwidth"))

    def attribute_line(self, value: str) -> Attribute:
        name, colon, attr_value = value.partition(":")
        name = name.strip()
        if not name:
            raise self.fail(f"a= line without an attribute name: {value[:40]!r}")
        return (name, attr_value if colon else None)

    def media_line(self, value: str) -> MediaDescription:
        fields = value.split()
        if len(fields) < 3:
            raise self.fail(f"m= needs <media> <port> <proto> <fmt>…, got {value[:60]!r}")
        media, port_text, proto, *formats = fields
        port_part, slash, count_part = port_text.partition("/")
        port = self.uint(port_part, "m= port", 65535)
        count = self.uint(count_part, "m= port count") if slash else None
        if count == 0:
            raise self.fail("m= port count must be at least 1")
        return MediaDescription(media=media, port=port, port_count=count, proto=proto, formats=formats)
