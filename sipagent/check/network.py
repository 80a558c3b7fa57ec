"""Ports free on their bind addresses, the address we advertise, the API's token.

**Ports** are tested by binding them as the server will: UDP without ``SO_REUSEADDR`` (two UDP
sockets with it would share a port, hiding a second server), TCP with it and a ``listen()``, as
asyncio's servers do (so a port left in TIME_WAIT by a stopped server is not reported busy). RTP
gets a sample of its even/odd pairs, spread over the range: binding thousands would take long and
tell little more. Every socket is closed before the next check.

**The advertised address** (``sip.public_address``, else the bind address, else the default
route's interface) must be reachable by the trunk: a private, loopback, link-local or shared (CGNAT)
address is red when a trunk is configured, unless the trunk itself is on such an address (a PBX on
the same LAN, a lab registrar on loopback), where a private address is the right one.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config import Settings
from .result import CheckResult, fail, ok, skip, warn

#: RTP pairs bound to sample the range (the server picks among all of them at random).
RTP_SAMPLE = 16
#: A bearer token shorter than this is guessable.
MIN_TOKEN_CHARS = 16
_WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Bind:
    """One socket the server will bind: protocol, address, port, and the settings that choose it."""

    proto: str  # "udp" or "tcp"
    host: str
    port: int
    keys: str  # e.g. "sip.port (--sip-port)"


def probe(bind: Bind) -> OSError | None:
    """Bind (and for TCP listen on) ``bind`` for a moment; the error, or None when it is free."""
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if bind.proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    try:
        if bind.proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind.host, bind.port))
        if bind.proto == "tcp":
            sock.listen(1)
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None


def _why(bind: Bind, exc: OSError) -> tuple[str, str]:
    """The detail and the fix for a port that cannot be bound."""
    where = f"{bind.proto} {bind.host}:{bind.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where} is in use",
            f"stop what holds it (a `sipagent serve` already running? `ss -lnptu | grep :{bind.port}` "
            f"names it) or choose another port: {bind.keys}",
        )
    if exc.errno == errno.EACCES:
        return (
            f"{where}: permission denied (ports below 1024 need privileges)",
            f"use a port from 1024 up ({bind.keys}), or allow this user: "
            "`setcap cap_net_bind_service=+ep` on the Python binary",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: {bind.host} is not an address of this machine",
            "bind to an address of one of its interfaces (`ip -brief address`), or 0.0.0.0",
        )
    return f"{where}: {exc.strerror or exc}", f"check {bind.keys}"


def _check_binds(name: str, binds: Sequence[Bind]) -> CheckResult:
    for bind in binds:
        exc = probe(bind)
        if exc is not None:
            return fail(name, *_why(bind, exc))
    protos = " and ".join(dict.fromkeys(b.proto for b in binds))
    return ok(name, f"{protos} {binds[0].host}:{binds[0].port} free")


def sip_ports(settings: Settings) -> list[CheckResult]:
    """``ports.sip`` (UDP and TCP on ``sip.port``) and ``ports.tls``."""
    sip = settings.sip
    plain = [
        Bind(t, sip.bind, sip.port, "[sip] port (--sip-port)") for t in ("udp", "tcp") if t in sip.transports
    ]
    results = [_check_binds("ports.sip", plain) if plain else skip("ports.sip", "no udp or tcp transport")]
    if "tls" not in sip.transports:
        results.append(skip("ports.tls", 'no "tls" in sip.transports'))
    elif "tcp" in sip.transports and sip.tls_port == sip.port:
        results.append(
            fail(
                "ports.tls",
                f"tls_port {sip.tls_port} is also the TCP SIP port",
                "give TLS a port of its own: [sip] tls_port (--tls-port), usually 5061",
            )
        )
    else:
        results.append(
            _check_binds("ports.tls", [Bind("tcp", sip.bind, sip.tls_port, "[sip] tls_port (--tls-port)")])
        )
    return results


def _overlap(a: str, b: str) -> bool:
    return a == b or a in _WILDCARDS or b in _WILDCARDS


def api_port(settings: Settings) -> CheckResult:
    """``ports.api``: the control API's TCP port (0: any free one)."""
    api, sip = settings.api, settings.sip
    if not api.enabled:
        return skip("ports.api", "the control API is off ([api] enabled = false)")
    if api.port == 0:
        return skip("ports.api", "[api] port = 0: the system picks a free port")
    taken = {sip.tls_port: "[sip] tls_port"} if "tls" in sip.transports else {}
    if "tcp" in sip.transports:
        taken[sip.port] = "[sip] port"
    if api.port in taken and _overlap(api.bind, sip.bind):
        return fail(
            "ports.api",
            f"tcp {api.bind}:{api.port} is also {taken[api.port]}",
            "give the API a port of its own: [api] port (--api-port), default 8060",
        )
    return _check_binds("ports.api", [Bind("tcp", api.bind, api.port, "[api] port (--api-port)")])


def rtp_sample(low: int, high: int, count: int = RTP_SAMPLE) -> list[int]:
    """Up to ``count`` even RTP ports spread evenly over ``[low, high)`` (RTCP is the odd one after)."""
    pairs = range(low + low % 2, high - 1, 2)
    if len(pairs) <= count:
        return list(pairs)
    return [pairs[i * (len(pairs) - 1) // (count - 1)] for i in range(count)]


def rtp_ports(settings: Settings) -> CheckResult:
    """``ports.rtp``: a sample of the range's pairs, and whether it holds ``limits.max_calls`` calls."""
    rtp = settings.rtp
    host = rtp.bind or settings.sip.bind
    keys = "[rtp] port_min/port_max (--rtp-port-min/--rtp-port-max)"
    sample = rtp_sample(rtp.port_min, rtp.port_max)
    if not sample:
        return fail("ports.rtp", f"{rtp.port_min}-{rtp.port_max} holds no even/odd RTP pair", f"widen {keys}")
    busy: list[int] = []
    for port in sample:
        for bind in (Bind("udp", host, port, keys), Bind("udp", host, port + 1, keys)):
            exc = probe(bind)
            if exc is None:
                continue
            if exc.errno != errno.EADDRINUSE:
                return fail("ports.rtp", *_why(bind, exc))
            busy.append(bind.port)
            break
    pairs = len(range(rtp.port_min + rtp.port_min % 2, rtp.port_max - 1, 2))
    where = f"udp {host}:{rtp.port_min}-{rtp.port_max}"
    if len(busy) == len(sample):
        return fail(
            "ports.rtp",
            f"{where}: every sampled pair is in use ({len(sample)} tried)",
            f"stop what holds them or move the range: {keys}",
        )
    if busy:
        return warn(
            "ports.rtp",
            f"{where}: {len(busy)} of {len(sample)} sampled pairs in use "
            f"(e.g. {', '.join(map(str, busy[:4]))}); calls take the free ones",
            f"keep other programs out of the range, or move it: {keys}",
        )
    if pairs < settings.limits.max_calls:
        return warn(
            "ports.rtp",
            f"{where}: {pairs} pairs, fewer than limits.max_calls "
            f"({settings.limits.max_calls}): calls past that get 503",
            f"widen {keys}",
        )
    return ok("ports.rtp", f"{where}: {len(sample)} sampled pairs of {pairs} free")


def address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the wider Internet cannot reach ``address`` (None when it is a global address)."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (carrier-grade NAT)"
    if address.is_private:
        return "private"
    return None if address.is_global else "reserved"


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """``host`` as addresses: itself when numeric, else what the system resolver answers."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        return []
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0])) for info in infos))


def public_address(settings: Settings, trunk_hosts: Iterable[str], local_address: str) -> CheckResult:
    """``public_address``: what goes in Via, Contact and SDP, when a trunk is to reach it.

    ``trunk_hosts`` are the trunk's addresses (located by RFC 3263; empty when unresolvable);
    ``local_address`` is the default route's interface, advertised when bound to every interface.
    """
    name = "public_address"
    sip = settings.sip
    advertised = sip.advertised_host(local_address)
    source = (
        "sip.public_address"
        if sip.public_address
        else ("sip.bind" if sip.bind not in _WILDCARDS else "the default route's interface")
    )
    if settings.trunk is None:
        return skip(name, f"no trunk: advertising {advertised} ({source}) to whoever calls in")
    fix = (
        "set [sip] public_address (--public-address) to this host's public IP, the one the trunk "
        "reaches it on (behind NAT: the router's, with the SIP and RTP ports forwarded)"
    )
    found = _addresses(advertised)
    if not found:
        return fail(name, f"{advertised} ({source}) does not resolve to an address", fix)
    hidden = [(a, kind) for a in found if (kind := address_kind(a)) is not None]
    if not hidden:
        return ok(name, f"advertising {advertised} ({source}): a public address")
    trunk = [address_kind(a) for host in trunk_hosts for a in _addresses(host)]
    if trunk and all(kind is not None for kind in trunk):
        return ok(
            name,
            f"advertising {advertised} ({source}), {hidden[0][1]}: the trunk is on a "
            f"{trunk[0]} address too, so it can reach it",
        )
    return fail(
        name,
        f"advertising {advertised} ({source}), a {hidden[0][1]} address: the trunk "
        "cannot send calls or audio back to it",
        fix,
    )


def api_token(settings: Settings, environ: dict[str, str] | None = None) -> CheckResult:
    """``api.token``: required when the control API listens beyond loopback (serve refuses else)."""
    env = dict(os.environ) if environ is None else environ
    api = settings.api
    if not api.enabled:
        return skip("api.token", "the control API is off")
    token = env.get(api.token_env) or ""
    if api.loopback:
        if token:
            return ok("api.token", f"{api.bind}: loopback, bearer token set (${api.token_env})")
        return ok("api.token", f"{api.bind}: loopback, open to this machine's users (no ${api.token_env})")
    if not token:
        return fail(
            "api.token",
            f"the API listens on {api.bind}, beyond loopback, and ${api.token_env} "
            "is not set: serve refuses to start",
            f'export {api.token_env}="$(openssl rand -hex 32)" (the clients send it too), '
            "or bind the API to 127.0.0.1: [api] bind",
        )
    if len(token) < MIN_TOKEN_CHARS:
        return warn(
            "api.token",
            f"${api.token_env} is {len(token)} characters: guessable on {api.bind}",
            "use 32 random bytes: `openssl rand -hex 32`",
        )
    return ok("api.token", f"{api.bind}: bearer token set (${api.token_env})")


__all__ = [
    "Bind",
    "address_kind",
    "api_port",
    "api_token",
    "probe",
    "public_address",
    "rtp_ports",
    "rtp_sample",
    "sip_ports",
]
