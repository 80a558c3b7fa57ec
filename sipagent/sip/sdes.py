"""SDP Security Descriptions (RFC 4568) in offer/answer: the SRTP half of :mod:`.offer_answer`.

The rules, in one place:

* **Policy** (:class:`SrtpPolicy`), per call: ``off`` refuses ``RTP/SAVP`` (as before SRTP existed
  here); ``optional`` accepts ``RTP/AVP`` and ``RTP/SAVP`` offers but offers ``RTP/AVP``;
  ``required`` offers ``RTP/SAVP`` with one ``a=crypto`` line per suite and refuses plain
  ``RTP/AVP``. Only ``RTP/SAVP`` carries SDES: DTLS-SRTP (``UDP/TLS/RTP/SAVP``) and AVPF feedback
  profiles stay unsupported. SDES keys travel in clear inside the SDP, so the policy only means
  something over TLS signalling.
* **Answering** (:func:`choose_offered_crypto`): every offered line is parsed; a line we cannot
  use (MKI, unknown suite, unsupported session parameter, malformed, our own key reflected back)
  is skipped with a reason, not fatal. Among the usable ones the suite we prefer wins (``_80``
  before ``_32`` by default), ties going to the offerer's order. The answer carries exactly one
  line: the same tag and suite with *our* key (RFC 4568 §7.1.2). With no usable line the stream
  is rejected, and the offer with it (488) if nothing else is acceptable.
* **Answers to our offers** (:func:`match_answer_crypto`): the first line whose tag we offered,
  with the suite we offered under that tag, gives the peer's key. A tag we never offered, a
  suite changed under our tag, or no usable line at all rejects the answer.
* **Our keys** (:class:`LocalKeys`): one per suite for the whole call, drawn from the injected
  ``rng_bytes`` the first time it is needed and reused by every later offer and answer, so a
  refresh repeats the same SDP (the o= version stays) and the outbound SRTP context lives on.
  :meth:`LocalKeys.rekey` forgets them when the caller wants new keys (RFC 4568 §7.1.4 allows
  any new offer to carry them).
* **Keys never reach logs**: :func:`redact_crypto_keys` blanks ``inline:`` keys in any SIP or SDP
  text before it is logged or stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from enum import StrEnum
from typing import Final, overload

from ..rtp.srtp import CryptoAttribute, CryptoAttributeError, CryptoSuite, SrtpParams
from .errors import LocalProtocolError, OfferRejected

__all__ = [
    "DEFAULT_SUITES",
    "PLAIN_RTP",
    "SAVP",
    "LocalKeys",
    "SrtpPolicy",
    "choose_offered_crypto",
    "examine_transport",
    "match_answer_crypto",
    "offer_crypto",
    "parse_suites",
    "redact_crypto_keys",
]

#: The one SRTP profile SDES keys: RTP/SAVP (RFC 3711 §12).
SAVP: Final = "RTP/SAVP"
PLAIN_RTP: Final = "RTP/AVP"
#: Secure profiles we recognise; all but RTP/SAVP need DTLS-SRTP or AVPF, which we lack.
_SECURE_PROFILES: Final = frozenset({"RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"})
#: Our preference: the 80-bit tag first (the stronger one), then the 32-bit one.
DEFAULT_SUITES: Final = (CryptoSuite.AES_CM_128_HMAC_SHA1_80, CryptoSuite.AES_CM_128_HMAC_SHA1_32)

_TAG = re.compile(r"[0-9]{1,9}")
_INLINE_KEY = re.compile(r"(?i)(inline:)[A-Za-z0-9+/=]+")
_INLINE_KEY_BYTES = re.compile(rb"(?i)(inline:)[A-Za-z0-9+/=]+")


class SrtpPolicy(StrEnum):
    """Whether a call's audio is SRTP (SDES-keyed): see the module docstring."""

    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"


def parse_suites(suites: Sequence[str]) -> tuple[CryptoSuite, ...]:
    """Validate a configured suite preference list: known suites, no repeats, not empty."""
    try:
        parsed = tuple(CryptoSuite.parse(s) for s in suites)
    except CryptoAttributeError as exc:
        raise LocalProtocolError(str(exc)) from None
    if not parsed or len(set(parsed)) != len(parsed):
        raise LocalProtocolError(f"srtp_suites must be a non-empty list without repeats, got {list(suites)}")
    return parsed


class LocalKeys:
    """Our master key||salt per suite for one call, drawn once from ``rng_bytes`` and kept."""

    def __init__(self, rng_bytes: Callable[[int], bytes] | None) -> None:
        self._rng = rng_bytes
        self._keys: dict[CryptoSuite, bytes] = {}

    def attribute(self, tag: int, suite: CryptoSuite) -> CryptoAttribute:
        """Our ``a=crypto`` line for ``suite`` under ``tag``."""
        key = self._keys.get(suite)
        if key is not None:
            return CryptoAttribute(tag, suite, key)
        if self._rng is None:
            raise LocalProtocolError("SRTP needs a key source: pass srtp_rng=os.urandom")
        generated = CryptoAttribute.generate(tag, suite, self._rng)
        self._keys[suite] = generated.key_salt
        return generated

    @property
    def in_use(self) -> Collection[bytes]:
        """The keys handed out so far (a peer must never send one of them back as its own)."""
        return self._keys.values()

    def rekey(self) -> None:
        """Forget our keys: the next offer or answer carries fresh ones."""
        self._keys.clear()

    def __repr__(self) -> str:
        return f"<LocalKeys for {', '.join(s.value for s in self._keys) or 'no suite yet'}>"


def offer_crypto(
    keys: LocalKeys,
    policy: SrtpPolicy,
    suites: Sequence[CryptoSuite],
    in_force: SrtpParams | None,
) -> tuple[CryptoAttribute, ...]:
    """Our ``a=crypto`` lines for an offer; empty for a plain ``RTP/AVP`` one.

    SRTP in force stays, under the same tag and suite, with our same key (unless
    :meth:`LocalKeys.rekey` ran), whatever the policy: a refresh or hold changes nothing and
    the outbound context lives on. Otherwise ``required`` offers every suite, tags 1, 2…;
    ``off`` and ``optional`` offer none.
    """
    if in_force is not None:
        return (keys.attribute(in_force.tag, in_force.suite),)
    if policy is SrtpPolicy.REQUIRED:
        return tuple(keys.attribute(tag, suite) for tag, suite in enumerate(suites, 1))
    return ()


def examine_transport(
    proto: str,
    crypto: Sequence[str],
    policy: SrtpPolicy,
    suites: Sequence[CryptoSuite],
    own_keys: Collection[bytes] = (),
) -> tuple[str, CryptoAttribute | None]:
    """Whether an offered stream's transport suits our policy: ``("", line)`` to accept it
    (``line`` is ``None`` for plain RTP), or a reason to reject it and ``None``."""
    upper = proto.upper()
    if upper == SAVP and policy is not SrtpPolicy.OFF:
        chosen, why = choose_offered_crypto(crypto, suites, own_keys)
        return why, chosen
    if upper == SAVP:
        return f"SRTP ({proto}) is turned off here (srtp policy 'off'); offer RTP/AVP", None
    if upper in _SECURE_PROFILES:
        alternative = "RTP/AVP" if policy is SrtpPolicy.OFF else "RTP/SAVP with a=crypto"
        return f"SRTP ({proto}) is not supported yet; offer {alternative}", None
    if upper != PLAIN_RTP:
        return f"transport {proto} is not supported (only RTP/AVP and RTP/SAVP)", None
    if policy is SrtpPolicy.REQUIRED:
        return "plain RTP/AVP is refused: SRTP is required here (offer RTP/SAVP with a=crypto)", None
    return "", None


def choose_offered_crypto(
    values: Sequence[str], suites: Sequence[CryptoSuite], own_keys: Collection[bytes] = ()
) -> tuple[CryptoAttribute | None, str]:
    """The offered line to accept, by our suite preference, or ``None`` and why not.

    ``values`` are the offer's ``a=crypto`` values for one m-line; ``own_keys`` the keys we
    handed out, which a peer must not offer back (that would let it reflect our own packets
    to us as authentic).
    """
    usable: list[CryptoAttribute] = []
    problems: list[str] = []
    for value in values:
        tokens = value.split(maxsplit=1)
        # Only a well-formed tag goes into the reason: a mangled line may start with its key.
        label = f"a=crypto:{tokens[0]}" if tokens and _TAG.fullmatch(tokens[0]) else "a=crypto"
        try:
            attribute = CryptoAttribute.parse(value)
        except CryptoAttributeError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if attribute.suite not in suites:
            problems.append(f"{label}: {attribute.suite.value} is not enabled here")
        elif attribute.key_salt in own_keys:
            problems.append(f"{label}: the offer reuses our own key")
        else:
            usable.append(attribute)
    if usable:
        # min() keeps the first of equal keys: ties go to the offerer's order.
        return min(usable, key=lambda a: suites.index(a.suite)), ""
    if not values:
        return None, "RTP/SAVP without a=crypto (only SDES keying is supported, not DTLS or MIKEY)"
    return None, "no acceptable a=crypto line (" + "; ".join(problems) + ")"


def match_answer_crypto(
    values: Sequence[str], offered: Sequence[CryptoAttribute]
) -> tuple[CryptoAttribute, CryptoAttribute]:
    """The pair (our offered line, the answer's line) the answer selected.

    Raises :class:`OfferRejected` when no answer line names a tag we offered with its suite
    and a usable key of the peer's own.
    """
    ours_by_tag = {a.tag: a for a in offered}
    own_keys = {a.key_salt for a in offered}
    problems: list[str] = []
    for value in values:
        try:
            theirs = CryptoAttribute.parse(value)
        except CryptoAttributeError as exc:
            problems.append(str(exc))
            continue
        ours = ours_by_tag.get(theirs.tag)
        if ours is None:
            offered_tags = " ".join(str(t) for t in ours_by_tag)
            problems.append(f"tag {theirs.tag} is not one we offered ({offered_tags})")
        elif ours.suite is not theirs.suite:
            problems.append(
                f"tag {theirs.tag} came back as {theirs.suite.value}, we offered {ours.suite.value}"
            )
        elif theirs.key_salt in own_keys:
            problems.append(f"tag {theirs.tag} came back with our own key")
        else:
            return ours, theirs
    detail = "; ".join(problems) or "it has no a=crypto line"
    raise OfferRejected(f"the answer to our RTP/SAVP offer has no usable a=crypto line: {detail}")


@overload
def redact_crypto_keys(text: str) -> str: ...
@overload
def redact_crypto_keys(text: bytes) -> bytes: ...
def redact_crypto_keys(text: str | bytes) -> str | bytes:
    """``text`` with every SDES ``inline:`` key replaced by ``***``, for logs and traces."""
    if isinstance(text, bytes):
        return _INLINE_KEY_BYTES.sub(rb"\1***", text)
    return _INLINE_KEY.sub(r"\1***", text)
