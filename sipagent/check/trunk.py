"""The trunk: its host located as the server locates it, its credentials, and (``--register``) one
REGISTER with them.

**DNS** goes through :class:`~sipagent.net.sip_resolver.SipResolver` (RFC 3263: NAPTR, SRV, then
A) over the transports the server would use toward this trunk (its profile's, limited to what we
listen on; TLS alone with SRTP), for the outbound proxy when there is one, else the trunk URI.

**The REGISTER** is the server's own registration client on a SIP endpoint of its own, listening on
ephemeral ports of ``sip.bind`` (so it runs beside a server that holds the SIP port), advertising
what the server would. It asks for the configured expiry (a carrier may refuse a short one), reports
the registrar's final answer, and on success removes the binding again (``Expires: 0``) so no call is
routed to a port nobody listens on. Neither the password nor the user name is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl

from ..config import ConfigError, Settings
from ..sip.address import Address, Transport
from ..sip.uri import SipUri
from .result import CheckResult, fail, first_line, ok, skip

#: How long ``--register`` waits for the registrar's final answer (the client's own retransmission
#: timer would wait 32 s on UDP).
REGISTER_TIMEOUT = 10.0
#: How long it waits for the un-REGISTER's answer before leaving the binding to expire.
UNREGISTER_TIMEOUT = 3.0


def trunk_transports(settings: Settings) -> tuple[Transport, ...]:
    """What RFC 3263 may pick for the trunk (as ``SipTelephony._transports``)."""
    from ..product.trunks import profile_for, transports_for

    assert settings.trunk is not None
    if settings.sip.srtp != "off":
        return ("tls",)
    return transports_for(profile_for(settings.trunk.profile), tuple(settings.sip.transports))


def trunk_hop(settings: Settings) -> SipUri:
    """Where requests to the trunk go first: the outbound proxy, else the trunk URI."""
    assert settings.trunk is not None
    return SipUri.parse(settings.trunk.outbound_proxy or settings.trunk.uri)


def _numeric(host: str) -> bool:
    from ..sip.locate import is_numeric_host

    return is_numeric_host(host.strip("[]"))


async def locate_trunk(settings: Settings) -> tuple[CheckResult, list[Address]]:
    """``trunk.dns``, and the addresses found (empty when none)."""
    from ..net.sip_resolver import SipResolver, TrunkResolutionError

    name = "trunk.dns"
    if settings.trunk is None:
        return skip(name, "no trunk"), []
    hop = trunk_hop(settings)
    key = "trunk.outbound_proxy" if settings.trunk.outbound_proxy else "trunk.uri"
    if _numeric(hop.host):
        port = hop.port or 5060
        return ok(name, f"{key} is an address ({hop.host}): no DNS needed"), [Address("udp", hop.host, port)]
    transports = trunk_transports(settings)
    if not transports:
        return fail(
            name,
            f"the {settings.trunk.profile} profile's transports and sip.transports "
            f"({', '.join(settings.sip.transports)}) have none in common",
            "listen on a transport the carrier takes: [sip] transports (--transport)",
        ), []
    try:
        found = await SipResolver().resolve(hop, transports)
    except TrunkResolutionError as exc:
        return fail(
            name,
            str(exc),
            f"check the host name in {key} (a typo?) and that this machine's DNS answers "
            "(/etc/resolv.conf; `dig +short " + hop.host + "`)",
        ), []
    first = found[0]
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return ok(name, f"{hop.host} → {first.transport} {first.host}:{first.port}{more}"), found


def credentials(settings: Settings) -> CheckResult:
    """``trunk.credentials``: a password for the user name, from the file or its variable."""
    name = "trunk.credentials"
    trunk = settings.trunk
    if trunk is None:
        return skip(name, "no trunk")
    if not trunk.username:
        return skip(name, "no username: the trunk trusts our address (IP authentication)")
    try:
        password = trunk.resolved_password()
    except ConfigError:
        return fail(
            name,
            f"trunk.password_env names ${trunk.password_env}, which is not set",
            f"export {trunk.password_env}=… in the server's environment (systemd: EnvironmentFile=)",
        )
    if not password:
        return fail(
            name,
            "a username without a password",
            "set trunk.password_env (or trunk.password) to the carrier's SIP password",
        )
    source = f"${trunk.password_env}" if trunk.password_env else "trunk.password"
    return ok(name, f"username and password set (from {source})")


def _register_fix(status: int) -> str:
    if status in (401, 403, 407):
        return (
            "the registrar refused these credentials: check trunk.username and the password "
            "(trunk.password or the variable trunk.password_env names), and trunk.aor if set"
        )
    if status == 404:
        return "the registrar does not know this address-of-record: check trunk.username and trunk.aor"
    if status == 408:
        return (
            "nothing answered: check trunk.uri's host, port and transport, and that the firewall "
            "lets SIP out and the answers back in"
        )
    return "see the carrier's documentation for this answer (the portal often says more)"


async def try_register(settings: Settings, timeout: float = REGISTER_TIMEOUT) -> CheckResult:
    """``trunk.register``: one REGISTER with the configured credentials; its final answer."""
    from ..net.sip_transport import SipNetwork, default_local_address
    from ..product.trunks import profile_for
    from ..sip.context import EndpointConfig
    from ..sip.digest import Credentials
    from ..sip.endpoint import SipEndpoint
    from ..sip.events import Event, RegistrationFailed, RegistrationSucceeded
    from ..sip.registration import RegistrationConfig

    name = "trunk.register"
    trunk = settings.trunk
    if trunk is None:
        return skip(name, "no trunk")
    if trunk.mode != "register":
        return skip(name, "static trunk: nothing to register (the carrier sends calls to our address)")
    try:
        password = trunk.resolved_password()
    except ConfigError:
        return fail(name, f"no password: ${trunk.password_env} is not set", f"export {trunk.password_env}=…")
    registrar = SipUri.parse(trunk.uri)
    aor = SipUri.parse(trunk.aor) if trunk.aor else SipUri(host=registrar.host, user=trunk.username)
    proxy = SipUri.parse(trunk.outbound_proxy) if trunk.outbound_proxy else None
    hop = proxy or registrar
    destination: Address | None = None
    if not _numeric(hop.host):
        located, found = await locate_trunk(settings)
        if not found:
            return fail(name, f"not sent: {located.detail}", located.fix or "")
        destination = found[0]
    outcome: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, RegistrationSucceeded | RegistrationFailed) and not outcome.done():
            outcome.set_result(event)

    client_ssl = ssl.create_default_context()
    if not settings.sip.tls_verify:
        client_ssl.check_hostname = False
        client_ssl.verify_mode = ssl.CERT_NONE
    sip = settings.sip
    network = SipNetwork(on_event, client_ssl=client_ssl)
    target = f"{hop.host}{f':{hop.port}' if hop.port else ''}"
    try:
        ports: dict[Transport, int] = {"udp": await network.listen_udp(sip.bind, 0)}
        ports["tcp"] = await network.listen_stream("tcp", sip.bind, 0, None)
        config = EndpointConfig(
            public_host=sip.advertised_host(default_local_address()), ports=ports, user_agent=sip.user_agent
        )
        endpoint = SipEndpoint(config, srtp_rng=os.urandom)
        network.attach(endpoint)
        if destination is not None and destination.transport == "tls":
            network.tls_names[destination] = hop.host
        registration = endpoint.register(
            RegistrationConfig(
                registrar=registrar,
                aor=aor,
                credentials=Credentials(trunk.username or "", password or "") if trunk.username else None,
                expires=profile_for(trunk.profile).register_expires or trunk.expires,
                outbound_proxy=proxy,
                destination=destination,
            ),
            network.now(),
        )
        network.pump()
        try:
            event = await asyncio.wait_for(asyncio.shield(outcome), timeout)
        except TimeoutError:
            return fail(name, f"no final answer from {target} within {timeout:g} s", _register_fix(408))
        if isinstance(event, RegistrationFailed):
            return fail(name, f"{target} answered {event.status} {event.reason}", _register_fix(event.status))
        assert isinstance(event, RegistrationSucceeded)
        registration.stop(network.now())
        network.pump()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(UNREGISTER_TIMEOUT):
                while registration.registered_until is not None:
                    await asyncio.sleep(0.05)
        left = "" if registration.registered_until is None else " (the un-REGISTER got no answer: it lapses)"
        return ok(name, f"{target} accepted the REGISTER for {event.expires} s; binding removed again{left}")
    except OSError as exc:
        return fail(name, f"cannot send to {target}: {first_line(exc)}", _register_fix(408))
    finally:
        await network.close()


__all__ = ["credentials", "locate_trunk", "trunk_hop", "trunk_transports", "try_register"]
