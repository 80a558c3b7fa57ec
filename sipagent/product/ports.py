"""What the phone service needs of the server (its ports): a :class:`Telephony` to place, end and
transfer calls and reach a live call's media, the :class:`Dial` it places, and the
:class:`Admitted` answer it gives an incoming call. The server implements them
(``sipagent/telephony.py``); tests implement them with fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..call import Call
from ..sip.uri import SipUri
from ..voice.conversation import ConversationConfig
from .routes import Route


@dataclass(frozen=True)
class Dial:
    """An outbound INVITE, ready for the SIP layer."""

    target: SipUri
    #: The From URI and display name (None: the endpoint's own identity).
    from_uri: SipUri | None
    display_name: str | None
    extra_headers: tuple[tuple[str, str], ...] = ()


class Telephony(Protocol):
    """What the service needs of the server."""

    @property
    def base_conversation(self) -> ConversationConfig | None:
        """Each call's conversation defaults (None: the server answers in echo mode, no models)."""
        ...

    def call(self, call_id: str) -> Call | None:
        """A live call's media and conversation."""
        ...

    async def dial(self, dial: Dial) -> str:
        """Send the INVITE (media ports bound first); returns the Call-ID."""
        ...

    def hang_up(self, call_id: str) -> None:
        """BYE, or CANCEL while it rings."""
        ...

    def transfer(self, call_id: str, target: str) -> None:
        """Blind transfer (REFER) to an E.164 number (through the trunk) or a SIP URI; raises
        ControlError when it cannot be asked."""
        ...

    def outbound_target(self, number: str) -> Dial:
        """The INVITE for an E.164 number through the trunk (raises ControlError without one)."""
        ...

    def caller_identity(self, dial: Dial, caller_id: str | None) -> Dial:
        """``dial`` with the caller ID (E.164) as the carrier's profile presents it."""
        ...


@dataclass(frozen=True)
class Admitted:
    """How an incoming call goes on: refused with ``status`` (and ``headers``), or answered."""

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    route: Route | None = None


__all__ = ["Admitted", "Dial", "Telephony"]
