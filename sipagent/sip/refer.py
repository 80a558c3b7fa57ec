"""Blind transfer, the transferor's side (RFC 3515 REFER; RFC 6665 and RFC 4488 where they touch it).

This module holds the pure parts: one transfer's state machine (transitions as data), the
``message/sipfrag`` reader and the ``Refer-To`` writer. :mod:`.session_refer` drives them from a call.

Rules
=====

Sending (``SipEndpoint.refer``)
-------------------------------
* Only on a confirmed call, one transfer at a time. The REFER is an ordinary in-dialog request
  (Request-URI = remote target, Route = route set, the dialog's next CSeq) with our Contact (it
  creates a subscription usage), ``Refer-To: <target>`` (``sip:``, ``sips:`` or ``tel:``) and
  ``Referred-By`` when given. It carries no ``Refer-Sub: false``: we want the NOTIFYs.
* 401/407 to the REFER is answered once per challenge with the call's own credentials (an
  outbound call placed with some): new branch, the dialog's next CSeq.

The transfer (:data:`TRANSFER_TRANSITIONS`)
-------------------------------------------
* a 2xx to the REFER (202 or 200) accepts it and arms the transfer timer (``timeout`` seconds);
  a 2xx with ``Refer-Sub: false`` (RFC 4488) promises no report, so it counts as success at once;
* any other final answer, or none (Timer F: 408), fails it; no subscription exists then;
* a NOTIFY that overtakes the 2xx counts as the acceptance (RFC 6665 §4.1.2.4);
* each NOTIFY's sipfrag status drives it: 1xx is progress, 2xx success, 300-699 failure;
* ``Subscription-State: terminated`` ends the subscription; without a final status before it the
  transfer fails with 487;
* no final status ``timeout`` seconds after the acceptance fails it with 408, and the
  subscription is over for us: a late NOTIFY gets 481, which tells the notifier so (§4.1.3);
* once the outcome is known, NOTIFYs of a live subscription get 200 and report nothing.

Events, in order: :class:`TransferAccepted`, any number of :class:`TransferProgress`, then one
:class:`TransferSucceeded` or :class:`TransferFailed`; or a lone :class:`TransferFailed` when the
REFER itself is refused. The core never ends the call over a transfer, either way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .auth import RequestAuthenticator
from .errors import LocalProtocolError, RemoteProtocolError, TransactionStateError
from .message import REASON_PHRASES, Request
from .transaction import ClientTransaction
from .uri import SipUri

SIPFRAG_TYPE = "message/sipfrag"

#: How long to wait for a final NOTIFY after the REFER is accepted. A transfer target may ring for
#: 30 s or more before the notifier reports 408/480 itself; waiting longer than that lets its own
#: verdict arrive rather than racing it (decision 0022).
DEFAULT_TRANSFER_TIMEOUT = 60.0

#: 487 is the status a transfer fails with when the notifier ends the subscription before saying
#: how it went: the report was terminated, which is all we know.
SUBSCRIPTION_ENDED = 487


class TransferState(enum.Enum):
    """Where one REFER stands."""

    REFERRING = "referring"  # sent; no final answer and no NOTIFY yet
    ACCEPTED = "accepted"  # 2xx (or a NOTIFY) came; waiting for a final NOTIFY
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_S = TransferState

#: What a transfer emits, by name; :mod:`.session_refer` maps them to events.
Output = str

#: ``{state: {input: (next state, outputs in order)}}``. Inputs: ``refer 2xx``, ``refer 2xx
#: no-sub`` (with ``Refer-Sub: false``), ``refer error`` (3xx-6xx or Timer F), ``notify 1xx``,
#: ``notify 2xx``, ``notify error``, ``subscription ended`` (terminated, no final status yet) and
#: ``timeout``. A pair not listed is impossible (a bug) and raises :class:`TransactionStateError`.
TRANSFER_TRANSITIONS: Mapping[TransferState, Mapping[str, tuple[TransferState, tuple[Output, ...]]]] = {
    _S.REFERRING: {
        "refer 2xx": (_S.ACCEPTED, ("accepted",)),
        "refer 2xx no-sub": (_S.SUCCEEDED, ("accepted", "succeeded")),
        "refer error": (_S.FAILED, ("failed",)),
        # A NOTIFY overtook the 2xx: the REFER was accepted (RFC 6665 §4.1.2.4).
        "notify 1xx": (_S.ACCEPTED, ("accepted", "progress")),
        "notify 2xx": (_S.SUCCEEDED, ("accepted", "succeeded")),
        "notify error": (_S.FAILED, ("accepted", "failed")),
        "subscription ended": (_S.FAILED, ("accepted", "failed")),
    },
    _S.ACCEPTED: {
        # The 2xx that a NOTIFY overtook: already counted.
        "refer 2xx": (_S.ACCEPTED, ()),
        "refer 2xx no-sub": (_S.ACCEPTED, ()),
        # A failure that a NOTIFY overtook ends the subscription after all (§4.1.2.4).
        "refer error": (_S.FAILED, ("failed",)),
        "notify 1xx": (_S.ACCEPTED, ("progress",)),
        "notify 2xx": (_S.SUCCEEDED, ("succeeded",)),
        "notify error": (_S.FAILED, ("failed",)),
        "subscription ended": (_S.FAILED, ("failed",)),
        "timeout": (_S.FAILED, ("failed",)),
    },
    # Once the outcome is known, everything is absorbed. "timeout" is absent: the timer is disarmed.
    _S.SUCCEEDED: {
        name: (_S.SUCCEEDED, ())
        for name in (
            "refer 2xx",
            "refer 2xx no-sub",
            "refer error",
            "notify 1xx",
            "notify 2xx",
            "notify error",
            "subscription ended",
        )
    },
    _S.FAILED: {
        name: (_S.FAILED, ())
        for name in (
            "refer 2xx",
            "refer 2xx no-sub",
            "refer error",
            "notify 1xx",
            "notify 2xx",
            "notify error",
            "subscription ended",
        )
    },
}

#: Inputs after which no NOTIFY belongs to the subscription any more.
_ENDS_SUBSCRIPTION = frozenset({"refer 2xx no-sub", "refer error", "subscription ended", "timeout"})


@dataclass
class Transfer:
    """One REFER and the implicit subscription it creates; times are on the caller's clock."""

    #: CSeq number of the REFER the peer accepted: the subscription's ``id`` (RFC 3515 §2.4.6).
    seq: int
    #: Seconds to wait for a final NOTIFY after the acceptance.
    timeout: float
    state: TransferState = TransferState.REFERRING
    #: The subscription is alive: NOTIFYs for it are answered 200 (else 481).
    subscribed: bool = True
    #: When the transfer fails for want of a final NOTIFY (armed while ACCEPTED).
    deadline: float | None = None
    #: The REFER's client transaction (the latest one, after a challenge).
    tx: ClientTransaction | None = field(default=None, repr=False)
    #: Answers challenges to the REFER (made on the first one, from the call's credentials).
    auth: RequestAuthenticator | None = field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        """True until the outcome is known."""
        return self.state in (TransferState.REFERRING, TransferState.ACCEPTED)

    def step(self, name: str, now: float) -> tuple[Output, ...]:
        """Apply input ``name`` at ``now``; returns the outputs to emit, in order."""
        allowed = TRANSFER_TRANSITIONS[self.state]
        if name not in allowed:
            raise TransactionStateError("transfer", self.state.name, name)
        previous = self.state
        self.state, outputs = allowed[name]
        if self.state is TransferState.ACCEPTED and previous is TransferState.REFERRING:
            self.deadline = now + self.timeout
        elif self.state is not TransferState.ACCEPTED:
            self.deadline = None
        if name in _ENDS_SUBSCRIPTION:
            self.subscribed = False
        return outputs


def notify_input(status: int) -> str:
    """The transfer input for a NOTIFY whose sipfrag carries ``status``."""
    if status < 200:
        return "notify 1xx"
    return "notify 2xx" if status < 300 else "notify error"


# ---------------------------------------------------------------------------------------------
# message/sipfrag (RFC 3420) as RFC 3515 §2.4.5 uses it: a status line, maybe headers after it
# ---------------------------------------------------------------------------------------------
def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """``(status, reason)`` from a sipfrag body such as ``SIP/2.0 200 OK``.

    Tolerates leading blank lines, a missing final CRLF, bare LF, trailing header lines and an
    empty reason (the standard phrase is used). Anything else raises
    :class:`RemoteProtocolError` (400): a request line, a bad version or status, no body.
    """
    text = body.decode("utf-8", "replace").lstrip("\r\n\t ")
    if not text:
        raise RemoteProtocolError("empty sipfrag")
    line = text.split("\n", 1)[0].rstrip("\r").strip()
    version, _, rest = line.partition(" ")
    code, _, reason = rest.strip().partition(" ")
    if version.upper() != "SIP/2.0":
        raise RemoteProtocolError(f"sipfrag without a status line: {line[:60]!r}")
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise RemoteProtocolError(f"bad status in sipfrag {line[:60]!r}")
    status = int(code)
    return status, reason.strip() or REASON_PHRASES.get(status, "Unknown")


def read_notify_sipfrag(notify: Request) -> tuple[int, str]:
    """The sipfrag status a refer NOTIFY reports.

    Raises :class:`RemoteProtocolError` with the status to answer: 415 for another body type
    (the caller adds ``Accept``), 400 for no body or no readable status line.
    """
    content_type = notify.content_type()
    if content_type is not None and content_type != SIPFRAG_TYPE:
        raise RemoteProtocolError(f"refer NOTIFY body must be {SIPFRAG_TYPE}", status_hint=415)
    if not notify.body:
        raise RemoteProtocolError("refer NOTIFY without a sipfrag body")
    return parse_sipfrag(notify.body)


# ---------------------------------------------------------------------------------------------
# Refer-To
# ---------------------------------------------------------------------------------------------
_TEL_VISUAL = frozenset("-.()")
_TEL_LOCAL = frozenset("0123456789abcdefABCDEF*#")
#: Characters a tel: URI may carry in its parameters without breaking the header around it.
_TEL_PARAM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!~*'()+=;:&$%_/[]")


def _check_tel(text: str) -> None:
    """RFC 3966: ``tel:+global-number`` or a local number with a ``phone-context``."""
    number, _, params = text[4:].partition(";")
    if params and not set(params) <= _TEL_PARAM:
        raise LocalProtocolError(f"bad parameters in tel URI {text!r}")
    if number.startswith("+"):
        digits = number[1:]
        if not any(ch.isdigit() for ch in digits) or not set(digits) <= set("0123456789") | _TEL_VISUAL:
            raise LocalProtocolError(f"bad global number in tel URI {text!r}")
        return
    if not number or not set(number) <= _TEL_LOCAL | _TEL_VISUAL:
        raise LocalProtocolError(f"bad number in tel URI {text!r}")
    if "phone-context=" not in params.lower():
        raise LocalProtocolError(f"a local tel URI needs a phone-context: {text!r}")


def refer_to_value(target: SipUri | str) -> str:
    """The ``Refer-To`` value for ``target``, always in ``<>`` (RFC 3515 §2.1).

    ``target`` is a :class:`SipUri` or the text of a ``sip:``, ``sips:`` or ``tel:`` URI (the
    latter has no :class:`SipUri`). Raises :class:`LocalProtocolError` for anything else.
    """
    if isinstance(target, SipUri):
        return f"<{target}>"
    text = target.strip()
    scheme, colon, _ = text.partition(":")
    scheme = scheme.lower()
    if colon and scheme in ("sip", "sips"):
        try:
            return f"<{SipUri.parse(text)}>"
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"bad transfer target {text!r}: {exc}") from None
    if colon and scheme == "tel":
        text = "tel:" + text[4:]
        _check_tel(text)
        return f"<{text}>"
    raise LocalProtocolError(f"a transfer target is a sip:, sips: or tel: URI, not {text!r}")
