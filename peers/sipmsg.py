"""Tiny SIP message helpers for the harness: parsing traced messages and pinging with OPTIONS.

This is *not* a SIP stack (sipagent has one); it only reads what the peers logged and sends the one
OPTIONS request the harness needs to know a peer is up.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass, field

_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
}


@dataclass(frozen=True)
class SipMessage:
    """A parsed SIP request or response (headers keyed by lower-case full name, in order)."""

    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str
    direction: str = ""  # "sent" / "received" when read from a peer's trace, else ""
    transport: str = ""
    timestamp: str = ""

    @property
    def is_response(self) -> bool:
        """True for a response (status line)."""
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        """Status code of a response, None for a request."""
        if not self.is_response:
            return None
        parts = self.start_line.split(" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    @property
    def method(self) -> str:
        """Request method, or for a response the method of its CSeq."""
        if self.is_response:
            cseq = self.header("cseq") or ""
            return cseq.split()[-1] if cseq.split() else ""
        return self.start_line.split(" ", 1)[0]

    @property
    def request_uri(self) -> str | None:
        """Request-URI of a request, None for a response."""
        if self.is_response:
            return None
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) > 1 else None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive, compact forms understood), or None."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """All values of header ``name`` in order (each header line counts once, not split on commas)."""
        key = _COMPACT.get(name.lower(), name.lower())
        return [value for hname, value in self.headers if hname == key]

    @property
    def call_id(self) -> str | None:
        """The Call-ID header."""
        return self.header("call-id")


def parse_sip_message(
    text: str, *, direction: str = "", transport: str = "", timestamp: str = ""
) -> SipMessage:
    """Parse one SIP message (CRLF or LF line ends, folded header lines joined)."""
    text = text.replace("\r\n", "\n").lstrip("\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return SipMessage(lines[0].strip(), tuple(headers), body, direction, transport, timestamp)


# --- OPTIONS ping --------------------------------------------------------------------------------------


@dataclass
class OptionsReply:
    """The answer to an OPTIONS ping."""

    status: int
    message: SipMessage
    raw: bytes = field(repr=False)


def options_request(
    target: tuple[str, int], local: tuple[str, int], *, transport: str = "UDP", user: str | None = None
) -> tuple[bytes, str]:
    """Build an OPTIONS request to ``target`` from ``local``; returns (bytes, branch)."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    host, port = target
    ruri = f"sip:{user + '@' if user else ''}{host}:{port}"
    msg = (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:harness@{local[0]}:{local[1]}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {secrets.token_hex(10)}@{local[0]}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:harness@{local[0]}:{local[1]}>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return msg.encode(), branch


def options_ping_udp(
    target: tuple[str, int], *, timeout: float = 0.5, user: str | None = None
) -> OptionsReply | None:
    """Send one OPTIONS over UDP and return the first final response, or None if none came in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((target[0], 0))
        request, branch = options_request(target, sock.getsockname(), user=user)
        sock.sendto(request, target)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data, _ = sock.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            msg = parse_sip_message(data.decode("utf-8", errors="replace"))
            if msg.status is not None and msg.status >= 200 and branch in (msg.header("via") or ""):
                return OptionsReply(msg.status, msg, data)
    return None


def wait_options_ready(
    target: tuple[str, int], *, timeout: float = 10.0, user: str | None = None
) -> OptionsReply:
    """Ping ``target`` with OPTIONS over UDP until any final response arrives; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = options_ping_udp(target, timeout=0.3, user=user)
        if reply is not None:
            return reply
        time.sleep(0.05)
    raise TimeoutError(f"no answer to OPTIONS from {target[0]}:{target[1]} within {timeout}s")


_TRACE_BLOCK = re.compile(
    r"^-{20,} (?P<ts>[^\n]*)\n(?P<transport>[A-Z]+) message (?P<dir>sent|received)[^\n]*\n\n?",
    re.MULTILINE,
)


def parse_sipp_message_log(text: str) -> list[SipMessage]:
    """Parse a sipp ``-trace_msg`` log into messages with direction, transport and timestamp."""
    messages: list[SipMessage] = []
    matches = list(_TRACE_BLOCK.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        chunk = text[match.end() : end].strip("\n")
        if not chunk or not re.match(r"^(SIP/2\.0 \d{3}|[A-Z]+ \S+ SIP/2\.0)", chunk):
            continue
        messages.append(
            parse_sip_message(
                chunk, direction=match["dir"], transport=match["transport"], timestamp=match["ts"].strip()
            )
        )
    return messages
