"""Trunk profiles: what each carrier needs filled in, as data (sip-trunks.md, decision 0019).

A :class:`TrunkProfile` holds what differs between carriers and nothing else: how the trunk reaches
us (``register`` or ``static``), where outbound INVITEs go and what their Request-URI host must be,
whose networks may send us INVITEs, how caller ID is read, which transports to prefer and what
registration expiry to ask. :data:`PROFILES` names the three the configuration offers
(``trunk.profile``); two functions turn a profile into an outbound INVITE's target and identity.

Carrier address lists change: every list below says where it was read and is marked "check the
carrier's current list". A user's own ``trunk.allow_from`` always wins over a profile's list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ..errors import SipAgentError
from ..sip.address import Transport
from ..sip.uri import NameAddr, SipUri

TrunkMode = Literal["register", "static"]

#: A global number: '+', a country code not starting with 0, at most 15 digits in all (ITU-T E.164).
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
#: What a PBX dial string or SIP user may hold in a Request-URI/From user part (RFC 3261 unreserved
#: characters, no escapes): enough for extensions and names, nothing that could break the header.
_SIP_USER = re.compile(r"[A-Za-z0-9+\-_.!~*'()]{1,64}")


class TrunkProfileError(SipAgentError):
    """A number, caller ID, display name or trunk URI the carrier's profile cannot use; the message
    names the profile and what it expects."""


@dataclass(frozen=True)
class TrunkProfile:
    """What one carrier needs from us (see :data:`PROFILES`)."""

    name: str
    #: ``register``: we REGISTER and calls come down that flow; ``static``: the carrier sends INVITEs
    #: to our fixed address and we accept them from :attr:`signalling_networks`.
    mode: TrunkMode
    #: The trunk URI to use when the configuration gives none (None: it is per account).
    default_uri: str | None
    #: What a trunk URI looks like, for messages (``sip:<trunk>.pstn.twilio.com``).
    uri_hint: str
    #: When set, the outbound Request-URI host must match this (full match, lower case): the carrier
    #: identifies the trunk by it and drops anything else.
    request_uri_host: re.Pattern[str] | None
    #: Networks (CIDR) the carrier signals from: the default for ``trunk.allow_from``.
    signalling_networks: tuple[str, ...]
    #: Networks (CIDR) and UDP port range its media comes from: informational, for firewall rules.
    media_networks: tuple[str, ...]
    media_ports: tuple[int, int] | None
    #: Caller ID must be E.164 with '+'.
    caller_id_e164: bool
    #: What else the carrier demands of caller ID (shown when a call is refused with 403).
    caller_id_rule: str
    #: Send P-Asserted-Identity beside From (RFC 3325), for carriers that read it first.
    send_pai: bool
    #: Add ``;user=phone`` to URIs whose user part is a '+' number (RFC 3261 §19.1.1).
    user_phone: bool
    #: Transports in the order we prefer them toward this carrier (RFC 3263 location uses this).
    transports: tuple[Transport, ...]
    #: Registration expiry to ask for (seconds), None when the carrier takes no REGISTER.
    register_expires: int | None
    #: Where the facts above were read.
    sources: tuple[str, ...] = ()


# Twilio Elastic SIP Trunking. Signalling: one /30 per region, and Twilio asks to allow all of them
# because a trunk can fail over across regions. Read from https://www.twilio.com/docs/sip-trunking/
# ip-addresses (check the carrier's current list). Media: one global range since the 2023-2024
# migration, https://www.twilio.com/docs/voice/voice-media-ip-expansion-security-faq.
TWILIO = TrunkProfile(
    name="twilio",
    mode="static",  # Twilio trunks refuse REGISTER
    default_uri=None,
    uri_hint="sip:<trunk>.pstn.twilio.com (or sip:<trunk>.pstn.<edge>.twilio.com)",
    # https://www.twilio.com/docs/sip-trunking/sending-sip-to-twilio-best-practices: the Request-URI
    # host must be the trunk's termination name, or Twilio cannot tell whose traffic it is.
    request_uri_host=re.compile(r"[a-z0-9][a-z0-9-]*\.pstn(\.[a-z0-9-]+)?\.twilio\.com"),
    signalling_networks=(
        "54.172.60.0/30",  # North America, Virginia
        "54.244.51.0/30",  # North America, Oregon
        "54.171.127.192/30",  # Europe, Ireland
        "35.156.191.128/30",  # Europe, Frankfurt
        "54.65.63.192/30",  # Asia Pacific, Tokyo
        "54.169.127.128/30",  # Asia Pacific, Singapore
        "54.252.254.64/30",  # Asia Pacific, Sydney
        "177.71.206.192/30",  # South America, São Paulo
    ),
    media_networks=("168.86.128.0/18",),
    media_ports=(10000, 60000),
    caller_id_e164=True,
    caller_id_rule="a Twilio number on the account or a verified caller ID (anything else gets 403)",
    # Twilio takes caller ID from the From user part; a P-Asserted-Identity adds nothing there.
    send_pai=False,
    # Twilio's documented examples are sip:+1…@<trunk>.pstn.twilio.com, without user=phone.
    user_phone=False,
    transports=("udp", "tcp", "tls"),
    register_expires=None,
    sources=(
        "https://www.twilio.com/docs/sip-trunking/ip-addresses",
        "https://www.twilio.com/docs/sip-trunking/sending-sip-to-twilio-best-practices",
        "https://www.twilio.com/docs/voice/voice-media-ip-expansion-security-faq",
    ),
)

# Telnyx. Two signalling addresses per region (primary, secondary), read from
# https://developers.telnyx.com/docs/voice/sip-trunking/routing/failover-and-retries; media subnets
# and ports from https://sip.telnyx.com/#media (check the carrier's current list: Telnyx adds media
# ranges over time, and some deployments report inbound INVITEs from other addresses in the
# same /24s, e.g. 192.76.120.14).
TELNYX = TrunkProfile(
    name="telnyx",
    mode="register",  # a credentials connection; IP/FQDN connections are static mode
    default_uri="sip:sip.telnyx.com",
    uri_hint="sip:sip.telnyx.com (US; sip-eu.telnyx.com and others per region)",
    request_uri_host=None,
    signalling_networks=(
        "192.76.120.10/32",  # US primary
        "64.16.250.10/32",  # US secondary
        "5.172.39.10/32",  # Europe primary
        "5.172.39.25/32",  # Europe secondary
        "193.108.220.10/32",  # Canada primary
        "193.108.220.25/32",  # Canada secondary
        "103.135.104.10/32",  # Australia primary
        "103.135.104.25/32",  # Australia secondary
    ),
    media_networks=(
        "36.255.198.128/25",
        "50.114.136.128/25",
        "50.114.144.0/21",
        "64.16.226.0/24",
        "64.16.227.0/24",
        "64.16.228.0/24",
        "64.16.229.0/24",
        "64.16.230.0/24",
        "64.16.248.0/24",
        "64.16.249.0/24",
        "103.115.244.128/25",
        "185.246.41.128/25",
    ),
    media_ports=(16384, 32768),
    caller_id_e164=True,
    caller_id_rule="a number the account may present (the connection's ANI override can replace it)",
    # Telnyx reads P-Preferred-Identity, then P-Asserted-Identity, then Remote-Party-ID, then From:
    # stating the number in PAI keeps it ours even if something between rewrites From.
    send_pai=True,
    # Telnyx's own examples are sip:+1…@sip.telnyx.com, without user=phone.
    user_phone=False,
    transports=("udp", "tcp", "tls"),
    register_expires=3600,  # Telnyx grants a little less (3457): the registration honours the grant
    sources=(
        "https://developers.telnyx.com/docs/voice/sip-trunking/routing/failover-and-retries",
        "https://sip.telnyx.com/",
    ),
)

# Any RFC 3261 carrier or PBX: nothing assumed beyond the RFCs.
GENERIC = TrunkProfile(
    name="generic",
    mode="static",
    default_uri=None,
    uri_hint="sip:<host>[:port][;transport=tcp|tls]",
    request_uri_host=None,
    signalling_networks=(),
    media_networks=(),
    media_ports=None,
    caller_id_e164=False,  # a PBX may want an extension or a user name
    caller_id_rule="whatever the carrier or PBX accepts",
    send_pai=False,
    # RFC 3261 §19.1.1: a telephone number in a SIP URI SHOULD carry user=phone.
    user_phone=True,
    transports=("udp", "tcp", "tls"),
    register_expires=3600,
)

#: The profiles ``trunk.profile`` may name.
PROFILES: Mapping[str, TrunkProfile] = MappingProxyType({p.name: p for p in (TWILIO, TELNYX, GENERIC)})


def profile_for(name: str) -> TrunkProfile:
    """The profile called ``name`` (raises :class:`TrunkProfileError` naming the known ones)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise TrunkProfileError(f"no trunk profile {name!r} (known: {', '.join(PROFILES)})") from None


def is_e164(number: str) -> bool:
    """True for '+' and 2-15 digits, the first not 0."""
    return _E164.fullmatch(number) is not None


def check_trunk_uri(profile: TrunkProfile, trunk_uri: SipUri) -> None:
    """Raise :class:`TrunkProfileError` if the carrier would drop INVITEs sent with this trunk
    URI's host in the Request-URI (Twilio: not a ``.pstn.twilio.com`` termination name)."""
    pattern = profile.request_uri_host
    if pattern is not None and pattern.fullmatch(trunk_uri.host.lower()) is None:
        raise TrunkProfileError(
            f"{profile.name}: outbound Request-URI host must be {profile.uri_hint}; "
            f"{trunk_uri.host!r} would be dropped"
        )


def _check_number(profile: TrunkProfile, number: str, what: str) -> None:
    if profile.caller_id_e164 and not is_e164(number):
        raise TrunkProfileError(f"{profile.name}: {what} {number!r} is not E.164 ('+' and up to 15 digits)")
    if _SIP_USER.fullmatch(number) is None:
        raise TrunkProfileError(f"{profile.name}: {what} {number!r} cannot be a SIP user part")


def _phone_params(profile: TrunkProfile, user: str) -> dict[str, str | None]:
    return {"user": "phone"} if profile.user_phone and is_e164(user) else {}


def request_uri_for_number(profile: TrunkProfile, trunk_uri: SipUri, number_e164: str) -> SipUri:
    """The INVITE target for calling ``number_e164`` through the trunk: the number as user part on
    the trunk's host, port and scheme (``sip:+15551234567@mytrunk.pstn.twilio.com``).

    The trunk URI's ``transport`` parameter is kept (it steers RFC 3263 location of this very URI);
    its other parameters and any user part are not. ``;user=phone`` is added where the profile says.
    """
    check_trunk_uri(profile, trunk_uri)
    _check_number(profile, number_e164, "number")
    params: dict[str, str | None] = _phone_params(profile, number_e164)
    transport = trunk_uri.params.get("transport")
    if transport:
        params["transport"] = transport
    return SipUri(
        host=trunk_uri.host, user=number_e164, port=trunk_uri.port, scheme=trunk_uri.scheme, params=params
    )


def caller_identity_headers(
    profile: TrunkProfile, caller_id_e164: str, display_name: str | None, host: str
) -> tuple[SipUri, str | None, tuple[tuple[str, str], ...]]:
    """Our identity on an outbound INVITE: the From URI, its display name, and extra headers.

    ``host`` is the From host (the AOR's domain in register mode, our public host in static mode;
    carriers read only the user part). Feed the result to ``SipEndpoint.invite(from_uri=…,
    display_name=…, extra_headers=…)``. Where the profile says so, P-Asserted-Identity repeats the
    identity (RFC 3325) for carriers that read it before From.
    """
    _check_number(profile, caller_id_e164, "caller ID")
    name = display_name.strip() if display_name else None
    if name and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        # A CR or LF would end the header and start another: never let one through.
        raise TrunkProfileError(f"{profile.name}: display name {display_name!r} has control characters")
    from_uri = SipUri(host=host, user=caller_id_e164, params=_phone_params(profile, caller_id_e164))
    headers: tuple[tuple[str, str], ...] = ()
    if profile.send_pai:
        headers = (("P-Asserted-Identity", str(NameAddr(from_uri, display_name=name or None))),)
    return from_uri, name or None, headers


def transports_for(profile: TrunkProfile, configured: Sequence[Transport]) -> tuple[Transport, ...]:
    """The transports to locate the trunk over: the profile's order, limited to what we listen on
    (our Via and Contact name that transport's listener, which must exist for the carrier's
    in-dialog requests to reach us)."""
    return tuple(t for t in profile.transports if t in configured)


def allow_from_for(profile: TrunkProfile, configured: Sequence[str]) -> tuple[str, ...]:
    """The networks to accept INVITEs from in static mode: the user's list when given, else the
    profile's published signalling networks (empty for ``generic``: accept any)."""
    return tuple(configured) if configured else profile.signalling_networks
