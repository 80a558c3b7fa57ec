"""The product layer's configuration: who may call, what the agent does on each number, outbound
calls, limits and the control API. Part of :mod:`sipagent.config` (``Settings.inbound``, ``routes``,
``outbound``, ``limits``, ``api``); a leaf like it. Phone numbers are checked when the server builds
its policy and routes from these (``sipagent.product.setup``), which names the key of a bad one.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from .config_section import Section


class InboundSettings(Section):
    """Who may call: by the caller's number (P-Asserted-Identity, Remote-Party-ID, else From)."""

    #: ``disabled``: answer no call; ``allowlist``: only the numbers in ``allow`` (and, with
    #: ``allow_loopback``, callers on this machine); ``open``: anyone who reaches the port.
    policy: Literal["disabled", "allowlist", "open"] = "allowlist"
    #: Caller numbers let through (E.164, or national numbers of ``default_country``).
    allow: list[str] = Field(default_factory=list)
    #: Country whose national format a number without ``+`` is read in (ISO 3166 code).
    default_country: str = "US"
    #: Callers whose packets come from this machine (127.0.0.0/8, ::1) pass the allowlist: a
    #: newcomer's softphone can call ``make run``'s server, while the box answers no stranger.
    allow_loopback: bool = True

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str) -> str:
        if len(value) != 2 or not value.isalpha():
            raise ValueError(f"{value!r} is not a two-letter country code (ISO 3166), e.g. US, GB, DE")
        return value.upper()


class RouteSettings(Section):
    """One agent per dialled number: ``[[routes]]`` tables. A route without ``number`` is the default
    for every other number (at most one)."""

    #: The dialled number (Request-URI user, else To), E.164 or national; none: the default route.
    number: str | None = None
    #: A name for logs and the API (default: the number, or "default").
    name: str | None = None
    #: Said when the call is answered (after the disclosure); none: wait for the caller.
    greeting: str | None = None
    #: The agent's instructions (the LLM's system prompt); none: ``[llm] system_prompt``.
    instructions: str | None = None
    #: Spoken before anything else on this route's calls (an AI disclosure); none: nothing.
    disclosure: str | None = None
    #: The caller's language for speech recognition (Whisper's code, e.g. "en"); none: ``[stt]``'s.
    language: str | None = None
    #: A Piper voice for this route (``.onnx`` with its ``.onnx.json``; relative paths resolve
    #: against the source tree like ``[tts] voice``); none: ``[tts] voice``. Each is loaded once.
    voice: str | None = None

    @field_validator("greeting", "instructions", "disclosure", "name", "language", "voice")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out instead)")
        return value


class OutboundSettings(Section):
    """Calls we place (``sipagent call``, ``POST /v1/calls``)."""

    #: Spoken first on every outbound call, before the message or the conversation: the callee
    #: learns at once that an AI is calling. "" for none.
    disclosure: str = "Hello, this is an automated call from an AI assistant."
    #: The route whose instructions, voice and language outbound calls use (by name or number);
    #: none: the default route.
    route: str | None = None


class LimitsSettings(Section):
    """How many calls, how long, how often."""

    #: Calls at once, inbound and outbound together. Beyond it an INVITE gets 503 Service
    #: Unavailable with Retry-After, before any port or model work is spent on it, and an outbound
    #: call is refused with a clear error.
    max_calls: int = Field(20, ge=1, le=10000)
    #: Calls a minute from one caller (number, else address); beyond it 486 Busy Here. 0: no limit.
    calls_per_minute: int = Field(6, ge=0, le=10000)
    #: The Retry-After (seconds) sent with a 503.
    retry_after: int = Field(30, ge=1, le=3600)
    #: Longest answered call (seconds): then a short goodbye and our BYE.
    max_call_duration: float = Field(3600.0, gt=0, le=86400)
    #: What the agent says when max_call_duration is up.
    goodbye: str = "I'm sorry, we have reached the time limit for this call. Goodbye."
    #: Outbound: give up ringing (CANCEL) after this many seconds.
    ring_timeout: float = Field(45.0, gt=0, le=600)


class ApiSettings(Section):
    """The control API (HTTP and WebSocket events) that ``sipagent call/calls/status/…`` talk to."""

    enabled: bool = True
    #: Loopback by default. Bound beyond it, the token is required (start-up refuses otherwise).
    bind: str = "127.0.0.1"
    port: int = Field(8060, ge=0, le=65535)
    #: Name of the environment variable holding the bearer token (never read from the file, never
    #: logged). Unset on loopback: the API is open to this machine's users.
    token_env: str = "SIPAGENT_API_TOKEN"

    @field_validator("bind")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @property
    def loopback(self) -> bool:
        """Reachable from this machine only."""
        return ipaddress.ip_address(self.bind).is_loopback


def check_routes(routes: list[RouteSettings]) -> list[RouteSettings]:
    """At most one default route, no number twice (as written: the server compares them in E.164)."""
    defaults = [i for i, route in enumerate(routes) if route.number is None]
    if len(defaults) > 1:
        raise ValueError(f"routes[{defaults[1]}]: a second route without number (only one default route)")
    names = [route.name for route in routes if route.name is not None]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"routes: the name {name!r} is used twice")
    return routes
