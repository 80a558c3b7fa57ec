"""What the phone service asks of SIP and media (its :class:`~sipagent.product.service.Telephony`):
place a call (RFC 3263 for a trunk host, caller ID as the carrier's profile wants it), hang up,
transfer (REFER), and a live call's media and conversation. The server owns the endpoint, the
network and the calls; this is the narrow door the product layer goes through.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .call import Call
from .net.media_sockets import PortRangeExhausted
from .net.sip_resolver import TrunkResolutionError
from .net.sip_transport import _is_ip
from .product.control import ControlError
from .product.ports import Dial
from .product.trunks import TrunkProfileError, caller_identity_headers, request_uri_for_number, transports_for
from .sip.address import Address, Transport
from .sip.uri import SipUri
from .voice.conversation import ConversationConfig

if TYPE_CHECKING:
    from .server import Server


class SipTelephony:
    """The server's calls, as the phone service sees them."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def base_conversation(self) -> ConversationConfig | None:
        """Each call's conversation defaults (None in echo mode)."""
        return self.server.call_options.conversation if self.server.settings.mode == "agent" else None

    def call(self, call_id: str) -> Call | None:
        return self.server.calls.get(call_id)

    def hang_up(self, call_id: str) -> None:
        self.server._hangup(call_id)

    def transfer(self, call_id: str, target: str) -> None:
        """REFER the caller to ``target``: a SIP URI as given, a number as the trunk wants it."""
        assert self.server.endpoint is not None and self.server.network is not None
        uri: SipUri | str = target
        if not target.lower().startswith(("sip:", "sips:")):
            trunk = self.server.settings.trunk
            uri = (
                f"tel:{target}"
                if trunk is None
                else request_uri_for_number(self.server.profile, SipUri.parse(trunk.uri), target)
            )
        try:
            self.server.endpoint.refer(call_id, uri, self.server.network.now())
        except Exception as exc:  # LocalProtocolError: not confirmed, a transfer already under way
            raise ControlError(f"cannot transfer: {exc}") from None
        self.server.network.pump()

    def outbound_target(self, number: str) -> Dial:
        """A number goes to the trunk, as its profile wants the Request-URI."""
        trunk = self.server.settings.trunk
        if trunk is None:
            raise ControlError(
                "a phone number is dialled through a trunk, and none is configured ([trunk]); "
                "dial a SIP URI instead",
                field="target",
            )
        try:
            target = request_uri_for_number(self.server.profile, SipUri.parse(trunk.uri), number)
        except TrunkProfileError as exc:
            raise ControlError(str(exc), field="target") from None
        return Dial(target, None, None)

    def caller_identity(self, dial: Dial, caller_id: str | None) -> Dial:
        """From (and P-Asserted-Identity where the profile uses it) for ``caller_id``, else the
        trunk's, else the endpoint's own ``sip:sipagent@host``."""
        number = caller_id or self.server.caller_id
        if number is None:
            return dial
        trunk = self.server.settings.trunk
        assert self.server.endpoint is not None
        # Carriers read only the user part; register mode names the trunk's domain, static ours.
        registered = trunk is not None and trunk.mode == "register"
        host = (
            SipUri.parse(trunk.uri).host if registered and trunk else self.server.endpoint.config.public_host
        )
        try:
            from_uri, name, headers = caller_identity_headers(
                self.server.profile, number, trunk.caller_name if trunk is not None else None, host
            )
        except TrunkProfileError as exc:
            raise ControlError(str(exc), field="from") from None
        return replace(
            dial, from_uri=from_uri, display_name=name, extra_headers=(*dial.extra_headers, *headers)
        )

    async def dial(self, dial: Dial) -> str:
        """Bind the media ports, find the next hop (RFC 3263 for a trunk host) and send the INVITE."""
        assert self.server.endpoint is not None and self.server.network is not None
        trunk = self.server.settings.trunk
        target = dial.target
        outbound_proxy = SipUri.parse(trunk.outbound_proxy) if trunk and trunk.outbound_proxy else None
        if outbound_proxy is None and trunk is not None and trunk.mode == "static":
            trunk_uri = SipUri.parse(trunk.uri)
            if target.host != trunk_uri.host:
                outbound_proxy = trunk_uri
        destination = await self.locate(outbound_proxy or target)
        call = self.server._new_call("")
        try:
            port = await call.open()
        except PortRangeExhausted:
            raise ControlError(
                "no RTP port free (rtp.port_min..port_max are all in use)", status=503
            ) from None
        call_id = self.server.endpoint.invite(
            target,
            self.server.network.now(),
            rtp_port=port,
            from_uri=dial.from_uri,
            display_name=dial.display_name,
            credentials=self.server._credentials(),
            outbound_proxy=outbound_proxy,
            extra_headers=dial.extra_headers,
            destination=destination,
        )
        call.call_id = call_id
        call.hangup = lambda reason: self.server._hangup(call_id, reason)
        self.server.calls[call_id] = call
        self.server.network.pump()
        return call_id

    def _transports(self) -> tuple[Transport, ...]:
        """What RFC 3263 may pick for the trunk: transports we listen on (TLS alone with SRTP)."""
        if self.server.settings.sip.srtp != "off":
            return ("tls",)
        return transports_for(self.server.profile, tuple(self.server.settings.sip.transports))

    async def locate(self, hop: SipUri) -> Address | None:
        """RFC 3263: where a host name's SIP service is (NAPTR, SRV, else A); None for an address."""
        if _is_ip(hop.host.strip("[]")):
            return None
        try:
            found = await self.server.resolver.resolve(hop, self._transports())
        except TrunkResolutionError as exc:
            raise ControlError(str(exc), field="target", status=502) from None
        if not found:
            return None
        if found[0].transport == "tls" and self.server.network is not None:
            self.server.network.tls_names[found[0]] = hop.host
        return found[0]


__all__ = ["SipTelephony"]
