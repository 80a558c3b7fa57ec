"""Who may call: the inbound policy, decided before anything is spent on a call.

An INVITE is checked here first, before a port, a conversation or a model job is allocated; a
refused caller gets ``403 Forbidden`` (decision 0018). Three modes:

* ``disabled`` answers no call at all, loopback included: it means "this box takes no calls";
* ``open`` answers anyone who reaches the SIP port;
* ``allowlist`` (the default) answers the numbers in ``allow``, and with ``allow_loopback`` any
  caller whose packets come from this machine, so a newcomer's softphone can call ``make run``'s
  server while the box answers no stranger.

The caller is the number the caller asserts (P-Asserted-Identity, Remote-Party-ID, else From),
read with :func:`.numbers.caller_number`; the policy is only as good as the trunk's caller ID.
Numbers in reasons are masked (:func:`.numbers.mask`): reasons go to the log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, get_args

from .numbers import NumberError, caller_number, check_country, mask, normalise

__all__ = ["Decision", "InboundPolicy", "PolicyMode", "is_loopback"]

PolicyMode = Literal["disabled", "allowlist", "open"]
#: The SIP status that refuses a caller: the server understood and will not answer this caller.
FORBIDDEN = 403
#: The status of a decision that lets the call through: it stands for "carry on", nothing is sent.
ALLOWED = 200


@dataclass(frozen=True)
class Decision:
    """What the policy says about one INVITE."""

    allowed: bool
    #: The SIP status that answers a refused INVITE (403); 200 when allowed (the policy does not
    #: stand in the way; the call goes on to the limits and the route, and nothing is sent for it).
    status: int
    #: One line for the log: the policy that decided and the caller, masked.
    reason: str
    #: The caller's number in E.164, or None when the asserted caller is no number (``sip:alice@…``).
    number: str | None


@dataclass(frozen=True)
class InboundPolicy:
    """Who may call (see the module docstring). ``allow`` entries may be written in any form
    :func:`.numbers.normalise` reads; they are stored in E.164, and a bad one raises
    :class:`.numbers.NumberError` naming it."""

    mode: PolicyMode = "allowlist"
    allow: frozenset[str] = frozenset()
    #: The country whose national format a number without ``+`` is read in.
    default_country: str = "US"
    #: Callers whose source address is loopback (127.0.0.0/8, ::1) pass the allowlist.
    allow_loopback: bool = True

    def __post_init__(self) -> None:
        if self.mode not in get_args(PolicyMode):
            raise ValueError(f"inbound policy {self.mode!r} is none of {', '.join(get_args(PolicyMode))}")
        if isinstance(self.allow, str):  # one number given where a set was meant: not 12 one-digit entries
            raise TypeError("InboundPolicy.allow is a set of numbers, not a string")
        country = check_country(self.default_country)
        allow = set()
        for entry in self.allow:
            try:
                allow.add(normalise(entry, country))
            except NumberError as exc:
                raise NumberError(
                    entry,
                    exc.reason,
                    message=f"inbound allow entry {entry!r} is not a phone number: {exc.reason}",
                ) from None
        # Frozen: the normalised forms replace what was given, once, here.
        object.__setattr__(self, "default_country", country)
        object.__setattr__(self, "allow", frozenset(allow))

    def decide(self, caller: str | None, source_host: str) -> Decision:
        """Whether a call may be answered.

        ``caller`` is the raw asserted caller (a URI or user part from P-Asserted-Identity,
        Remote-Party-ID or From; None if the INVITE had none); ``source_host`` the IP address its
        packets came from.
        """
        number = caller_number(caller, self.default_country) if caller else None
        who = mask(number or caller or "") or "an anonymous caller"
        if self.mode == "disabled":
            return _refuse(f"inbound policy disabled: refused {who}", number)
        if self.mode == "open":
            return _allow(f"inbound policy open: accepted {who}", number)
        if number is not None and number in self.allow:
            return _allow(f"inbound policy allowlist: accepted {who} (on the allowlist)", number)
        if self.allow_loopback and is_loopback(source_host):
            return _allow(f"inbound policy allowlist: accepted {who} (loopback source)", number)
        why = "not on the allowlist" if number is not None else "no caller number to check"
        return _refuse(f"inbound policy allowlist: refused {who} ({why})", number)

    def describe(self) -> str:
        """One line for the start-up log: the policy in force."""
        if self.mode == "disabled":
            return "inbound policy: disabled (no call is answered)"
        if self.mode == "open":
            return "inbound policy: open (anyone who reaches the SIP port may call)"
        count = len(self.allow)
        numbers = "no numbers" if count == 0 else f"{count} number{'' if count == 1 else 's'}"
        loopback = "loopback callers allowed" if self.allow_loopback else "loopback callers refused"
        note = "" if count or self.allow_loopback else ": no call is answered"
        return f"inbound policy: allowlist ({numbers}; {loopback}){note}"


def is_loopback(host: str) -> bool:
    """True for a loopback IP address (127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6).

    Names (``localhost``) are not resolved: the host is a packet's source address, always an IP.
    """
    try:
        address = ipaddress.ip_address(host.strip().strip("[]").partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _allow(reason: str, number: str | None) -> Decision:
    return Decision(allowed=True, status=ALLOWED, reason=reason, number=number)


def _refuse(reason: str, number: str | None) -> Decision:
    return Decision(allowed=False, status=FORBIDDEN, reason=reason, number=number)
