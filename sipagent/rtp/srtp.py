"""SRTP and SRTCP (RFC 3711) keyed by SDP Security Descriptions (SDES, RFC 4568).

Two pieces:

* :class:`CryptoAttribute` is the value of one ``a=crypto`` line,
  ``<tag> <suite> inline:<base64(key||salt)>[|<lifetime>] [<session-param> …]``, parsed and
  serialized. It is pure text handling; choosing a line during offer/answer is
  :mod:`sipagent.sip.sdes`'s job.
* :class:`SrtpSession` protects what we send and unprotects what the peer sends, with two libsrtp
  contexts (through ``pylibsrtp``): outbound keyed with *our* master key, inbound with the
  *peer's*. Each accepts any SSRC (``ssrc_any_outbound`` / ``ssrc_any_inbound``), so an SSRC
  change after a re-INVITE or a transfer needs no re-configuration.

Rules, in one place:

* **Suites.** ``AES_CM_128_HMAC_SHA1_80`` and ``AES_CM_128_HMAC_SHA1_32``: what Twilio offers,
  and RFC 4568 §6.2's suites but F8. Both take a 30-byte master key||salt (16 + 14). SRTCP
  always carries an 80-bit tag, even with ``_32`` (RFC 4568 §6.2; the known-answer tests pin it).
* **Parsing is strict about what would make us decrypt wrongly, lenient about the rest.**
  :meth:`CryptoAttribute.parse` raises :class:`CryptoAttributeError` (a :class:`ValueError`)
  naming the problem for a malformed line, an unknown suite, a key of the wrong length, an MKI
  (``|1:4``: packets would carry a key index we do not implement, so we refuse the line rather
  than fail every packet later), several master keys, and the session parameters that change
  the transform (``UNENCRYPTED_SRTP``/``SRTCP``, ``UNAUTHENTICATED_SRTP``, ``FEC_ORDER``,
  ``FEC_KEY``, a non-zero ``KDR``, or any unknown one without a leading ``-``; RFC 4568 §6.3.7
  makes an unknown mandatory parameter invalidate the line). ``WSH`` (a hint) and ``-``-prefixed
  parameters are kept and ignored. The lifetime is kept but not enforced: it bounds the *sender's*
  use of its own key, so honouring it is the peer's job (by re-keying in a re-INVITE, which
  :meth:`SrtpSession.update` follows); our own lines state none (SRTP's 2^48 applies).
  The error is a ``ValueError`` rather than a SIP error because a bad ``a=crypto`` line is
  not a malformed SDP (400): RFC 4568 has the answerer skip it and reject the stream (488) only
  when no line is usable, which is the SDP layer's decision.
* **Network input never raises.** :meth:`SrtpSession.unprotect` and
  :meth:`~SrtpSession.unprotect_rtcp` return ``None`` for a packet that fails authentication, is
  a replay (or too old for the replay window), or is not SRTP at all, and count it in
  :attr:`SrtpSession.stats`. libsrtp checks the replay window before the tag, so a forged copy of
  an index already seen counts as a replay; a forged packet never enters the replay window, so
  the genuine one still gets through. :meth:`~SrtpSession.protect` raises :class:`SrtpError` on
  failure, because its input is ours: an oversized packet, a non-RTP buffer, or a repeated
  sequence number (which would reuse keystream) is a bug to surface, not traffic to drop.
* **Keys stay out of logs.** Key fields are left out of ``repr``; :class:`SrtpSession` shows
  only the suite and counters. ``str(CryptoAttribute)`` *is* the SDP wire form and so carries the
  key: it belongs in an SDP body, never in a log line (see
  :func:`sipagent.sip.sdes.redact_crypto_keys`).
* **Re-keying keeps crypto contexts alive.** :meth:`SrtpSession.update` rebuilds only the
  direction whose key (or suite) changed. Rebuilding an outbound context under an unchanged key
  would reset its rollover counter and, once the sequence number has wrapped, encrypt new packets
  with keystream already used (a two-time pad); rebuilding an unchanged inbound one would lose
  the peer's rollover counter and drop all its audio.

Sans-IO: no sockets and no clock. Randomness comes in as ``rng_bytes`` (``os.urandom`` at the
call site) for :meth:`CryptoAttribute.generate`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import pylibsrtp

from ..errors import SipAgentError

__all__ = [
    "KEY_SALT_LENGTH",
    "CryptoAttribute",
    "CryptoAttributeError",
    "CryptoSuite",
    "SrtpError",
    "SrtpParams",
    "SrtpSession",
    "SrtpStats",
]

#: Master key (16) plus master salt (14) for the AES_CM_128 suites (RFC 3711 §8.2, RFC 4568 §6.2).
KEY_SALT_LENGTH: Final = 30
#: The longest key lifetime SRTP allows (RFC 3711 §9.2: 2^48 SRTP packets).
_MAX_LIFETIME: Final = 1 << 48
_TAG = re.compile(r"[0-9]{1,9}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,15})")
_UINT = re.compile(r"[0-9]{1,10}")
#: Session parameters that change the transform; we implement none of them (RFC 4568 §6.3).
_UNSUPPORTED_PARAMS: Final = frozenset(
    {"UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP", "FEC_ORDER", "FEC_KEY"}
)
# pylibsrtp raises its Error with libsrtp's status text; these are the ones that mean
# "someone sent a bad packet" rather than "the packet is not SRTP".
_AUTH_FAILURES: Final = frozenset({"authentication failure"})
_REPLAYS: Final = frozenset({"replay check failed (bad index)", "replay check failed (index too old)"})

_Buffer = bytes | bytearray | memoryview


class CryptoAttributeError(SipAgentError, ValueError):
    """An ``a=crypto`` value we cannot use: malformed, or asking for something unsupported."""


class SrtpError(SipAgentError):
    """Protecting one of *our* packets failed: a bug in the caller, never the peer's doing."""


class CryptoSuite(StrEnum):
    """The SDES crypto suites we implement, in our default order of preference."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def profile(self) -> int:
        """The libsrtp protection profile."""
        if self is CryptoSuite.AES_CM_128_HMAC_SHA1_80:
            return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32)

    @property
    def rtp_tag_length(self) -> int:
        """Bytes of authentication tag on each SRTP packet."""
        return 10 if self is CryptoSuite.AES_CM_128_HMAC_SHA1_80 else 4

    @property
    def rtcp_tag_length(self) -> int:
        """Bytes of authentication tag on each SRTCP packet: 80 bits for both suites."""
        return 10

    @classmethod
    def parse(cls, text: str) -> CryptoSuite:
        """The suite named ``text`` (ABNF literals are case-insensitive), or an error."""
        try:
            return cls(text.upper())
        except ValueError:
            supported = ", ".join(s.value for s in cls)
            raise CryptoAttributeError(
                f"crypto suite {_shown(text)} is not supported (we support {supported})"
            ) from None


@dataclass(frozen=True)
class CryptoAttribute:
    """One SDES ``a=crypto`` value (RFC 4568 §9.1), for the SRTP transport.

    ``key_salt`` is the 30-byte master key||salt; ``lifetime`` the number of packets the key
    may protect, if stated; ``session_params`` the ignorable parameters we kept (``WSH=…``,
    ``KDR=0``, ``-…``). MKIs are refused at parse time, so no field holds one: every instance
    describes something :class:`SrtpSession` can run.
    """

    tag: int
    suite: CryptoSuite
    key_salt: bytes = field(repr=False)
    lifetime: int | None = None
    session_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:
            raise CryptoAttributeError(f"crypto tag {self.tag} is not 1-9 digits")
        if len(self.key_salt) != KEY_SALT_LENGTH:
            raise CryptoAttributeError(
                f"{self.suite.value} needs a {KEY_SALT_LENGTH}-byte key||salt, got {len(self.key_salt)} bytes"
            )
        if self.lifetime is not None and not 0 < self.lifetime <= _MAX_LIFETIME:
            raise CryptoAttributeError(f"key lifetime {self.lifetime} is outside 1..2^48 packets")
        for param in self.session_params:
            if not param or any(c.isspace() for c in param):
                raise CryptoAttributeError(f"session parameter {param!r} is not one token")

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the text after ``a=crypto:``; raise :class:`CryptoAttributeError` if unusable."""
        tokens = value.split()
        if len(tokens) < 3:
            # Not echoed: a mangled line may be nothing but its key.
            raise CryptoAttributeError(
                f"a=crypto value has {len(tokens)} field(s), not '<tag> <suite> inline:<key||salt>'"
            )
        tag_text, suite_text, key_params, *params = tokens
        if not _TAG.fullmatch(tag_text):
            raise CryptoAttributeError(f"crypto tag {_shown(tag_text)} is not 1-9 digits")
        suite = CryptoSuite.parse(suite_text)
        if ";" in key_params:
            raise CryptoAttributeError("several master keys (each with an MKI) are not supported")
        method, colon, info = key_params.partition(":")
        if not colon:  # no method: the token may be a bare key, so keep it out of the message
            raise CryptoAttributeError("key parameter is not inline:<key||salt>")
        if method.lower() != "inline":
            raise CryptoAttributeError(f"key method {_shown(method)} is not supported (only inline:)")
        key_text, *extras = info.split("|")
        key_salt = _decode_key(key_text, suite)
        lifetime: int | None = None
        for position, extra in enumerate(extras):
            if ":" in extra:
                raise CryptoAttributeError(
                    "a key with an MKI (|<value>:<length>) is not supported; offer one without MKI"
                )
            if position > 0 or lifetime is not None:
                raise CryptoAttributeError("a=crypto key has more '|' fields than lifetime and MKI")
            lifetime = _parse_lifetime(extra)
        return cls(int(tag_text), suite, key_salt, lifetime, tuple(_check_param(p) for p in params))

    @classmethod
    def generate(
        cls, tag: int, suite: CryptoSuite | str, rng_bytes: Callable[[int], bytes]
    ) -> CryptoAttribute:
        """A fresh key of ours: ``rng_bytes`` must be a CSPRNG (``os.urandom`` in production)."""
        chosen = CryptoSuite.parse(suite) if isinstance(suite, str) else suite
        key_salt = bytes(rng_bytes(KEY_SALT_LENGTH))
        if len(key_salt) != KEY_SALT_LENGTH:
            raise CryptoAttributeError(f"rng_bytes({KEY_SALT_LENGTH}) returned {len(key_salt)} bytes")
        return cls(tag, chosen, key_salt)

    def with_key(self, key_salt: bytes) -> CryptoAttribute:
        """The same tag and suite with another key and no lifetime or parameters (an answer)."""
        return CryptoAttribute(self.tag, self.suite, key_salt)

    def __str__(self) -> str:
        """The SDP wire form. It contains the key: put it in SDP bodies, never in logs."""
        key = base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            exponent = self.lifetime.bit_length() - 1
            key += f"|2^{exponent}" if self.lifetime == 1 << exponent else f"|{self.lifetime}"
        return " ".join([str(self.tag), self.suite.value, f"inline:{key}", *self.session_params])


def _decode_key(text: str, suite: CryptoSuite) -> bytes:
    if not _BASE64.fullmatch(text):
        raise CryptoAttributeError("a=crypto key is not base64")
    try:
        # Some stacks drop the '=' padding; the length check below still catches a short key.
        key_salt = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoAttributeError("a=crypto key is not valid base64") from None
    if len(key_salt) != KEY_SALT_LENGTH:
        raise CryptoAttributeError(
            f"{suite.value} needs a {KEY_SALT_LENGTH}-byte key||salt, the line has {len(key_salt)} bytes"
        )
    return key_salt


def _parse_lifetime(text: str) -> int:
    match = _LIFETIME.fullmatch(text)
    if match is None:
        raise CryptoAttributeError(f"key lifetime {_shown(text)} is neither a number nor 2^<n>")
    lifetime = int(match[2])
    if match[1]:  # 2^n
        lifetime = 1 << lifetime if lifetime <= 48 else 0
    if not 0 < lifetime <= _MAX_LIFETIME:
        raise CryptoAttributeError(f"key lifetime {text} is outside 1..2^48 packets")
    return lifetime


def _shown(token: str) -> str:
    """A token quoted for an error message, unless it is long enough to be a key out of place
    (a base64 key||salt is 40 characters; suite and parameter names are shorter)."""
    return repr(token) if len(token) <= 32 else f"<a {len(token)}-character token>"


def _check_param(param: str) -> str:
    """Keep an ignorable session parameter; refuse one that changes the transform."""
    if param.startswith("-"):
        return param  # optional by definition (RFC 4568 §6.3.7)
    name, _, value = param.partition("=")
    name = name.upper()
    number = int(value) if _UINT.fullmatch(value) else None
    if name == "WSH" and number is not None and number >= 64:
        return param  # a window-size hint; libsrtp's 128-packet window satisfies it
    if name == "KDR" and number == 0:
        return param  # derive once: libsrtp's behaviour
    if name == "KDR":
        raise CryptoAttributeError(f"key derivation rate {_shown(param)} is not supported (only KDR=0)")
    if name in _UNSUPPORTED_PARAMS:
        raise CryptoAttributeError(f"session parameter {name} is not supported")
    raise CryptoAttributeError(f"unknown mandatory session parameter {_shown(param)} (RFC 4568 §6.3.7)")


@dataclass(frozen=True)
class SrtpParams:
    """What one SDES negotiation produced, for :class:`SrtpSession`.

    ``local_key_salt`` is ours (we protect with it; it went out in our SDP), ``remote_key_salt``
    the peer's (we unprotect with it). ``tag`` is the agreed ``a=crypto`` tag. Equality means
    "same crypto contexts": keep the session when a new negotiation yields an equal value.
    """

    suite: CryptoSuite
    local_key_salt: bytes = field(repr=False)
    remote_key_salt: bytes = field(repr=False)
    tag: int = 1

    def __post_init__(self) -> None:
        for name in ("local_key_salt", "remote_key_salt"):
            if len(getattr(self, name)) != KEY_SALT_LENGTH:
                raise CryptoAttributeError(f"SrtpParams.{name} must be {KEY_SALT_LENGTH} bytes")


@dataclass(frozen=True)
class SrtpStats:
    """Packet counters of one :class:`SrtpSession` (RTP and RTCP together)."""

    protected: int = 0
    unprotected: int = 0
    rejected_auth: int = 0
    rejected_replay: int = 0
    #: Not SRTP at all: too short, not version 2, longer than the 1500-byte buffer.
    rejected_malformed: int = 0

    @property
    def rejected(self) -> int:
        """Every inbound packet dropped, whatever the reason."""
        return self.rejected_auth + self.rejected_replay + self.rejected_malformed


@dataclass
class _Counters:
    protected: int = 0
    unprotected: int = 0
    rejected_auth: int = 0
    rejected_replay: int = 0
    rejected_malformed: int = 0


class SrtpSession:
    """SRTP for one call: protect what we send, unprotect what the peer sends.

    Not thread-safe (libsrtp contexts and pylibsrtp's buffer are shared): use it from the one
    task that owns the RTP socket.
    """

    def __init__(self, params: SrtpParams) -> None:
        self._params = params
        self._outbound = _context(params.suite, params.local_key_salt, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._inbound = _context(params.suite, params.remote_key_salt, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self._counts = _Counters()

    @property
    def params(self) -> SrtpParams:
        """The keys in force."""
        return self._params

    @property
    def suite(self) -> CryptoSuite:
        """The crypto suite in force."""
        return self._params.suite

    @property
    def stats(self) -> SrtpStats:
        """A snapshot of the counters."""
        c = self._counts
        return SrtpStats(c.protected, c.unprotected, c.rejected_auth, c.rejected_replay, c.rejected_malformed)

    def update(self, params: SrtpParams) -> None:
        """Apply a new negotiation, rebuilding only the direction whose key or suite changed.

        An unchanged direction keeps its libsrtp context (rollover counter, replay window), as
        it must: see the module docstring.
        """
        old = self._params
        if (params.suite, params.local_key_salt) != (old.suite, old.local_key_salt):
            self._outbound = _context(params.suite, params.local_key_salt, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        if (params.suite, params.remote_key_salt) != (old.suite, old.remote_key_salt):
            self._inbound = _context(params.suite, params.remote_key_salt, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self._params = params

    def protect(self, rtp: _Buffer) -> bytes:
        """Encrypt and authenticate one of our RTP packets; :class:`SrtpError` on misuse."""
        return self._protect(self._outbound.protect, rtp, "RTP")

    def protect_rtcp(self, rtcp: _Buffer) -> bytes:
        """Encrypt and authenticate one of our RTCP compound packets (SRTCP index added)."""
        return self._protect(self._outbound.protect_rtcp, rtcp, "RTCP")

    def unprotect(self, srtp: _Buffer) -> bytes | None:
        """The RTP packet inside a received SRTP one, or ``None`` (counted) if it is rejected."""
        return self._unprotect(self._inbound.unprotect, srtp)

    def unprotect_rtcp(self, srtcp: _Buffer) -> bytes | None:
        """The RTCP inside a received SRTCP packet, or ``None`` (counted) if it is rejected."""
        return self._unprotect(self._inbound.unprotect_rtcp, srtcp)

    def __repr__(self) -> str:
        return f"<SrtpSession {self._params.suite.value} tag={self._params.tag} {self.stats}>"

    def _protect(self, func: Callable[[bytes], bytes], packet: _Buffer, kind: str) -> bytes:
        try:
            result = func(bytes(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(f"cannot protect our {kind} packet of {len(packet)} bytes: {exc}") from None
        self._counts.protected += 1
        return result

    def _unprotect(self, func: Callable[[bytes], bytes], packet: _Buffer) -> bytes | None:
        try:
            result = func(bytes(packet))
        except pylibsrtp.Error as exc:
            reason = str(exc)
            if reason in _AUTH_FAILURES:
                self._counts.rejected_auth += 1
            elif reason in _REPLAYS:
                self._counts.rejected_replay += 1
            else:
                self._counts.rejected_malformed += 1
            return None
        except ValueError:  # longer than pylibsrtp's 1500-byte buffer
            self._counts.rejected_malformed += 1
            return None
        self._counts.unprotected += 1
        return result


def _context(suite: CryptoSuite, key_salt: bytes, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key_salt, ssrc_type=ssrc_type, srtp_profile=suite.profile)
    # libsrtp copies the key into its own context; the policy (and its copy) can go.
    return pylibsrtp.Session(policy)
