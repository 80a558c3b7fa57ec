"""The product layer's configuration: who may call, what the agent does on each number, the tools
it may call, outbound calls, limits and the control API. Part of :mod:`sipagent.config`
(``Settings.inbound``, ``tools``, ``routes``, ``outbound``, ``limits``, ``api``); a leaf like it.
Phone numbers are checked when the server builds its policy and routes from these
(``sipagent.product.setup``), which names the key of a bad one.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

# jsonschema ships no type information (types-jsonschema is not installed); only the two calls below
# touch it, and sipagent.product.tools wraps argument checks the same way.
import jsonschema  # type: ignore[import-untyped, unused-ignore]
from jsonschema.validators import validator_for  # type: ignore[import-untyped, unused-ignore]
from pydantic import Field, ValidationInfo, field_validator

from .config_section import Section
from .sip.errors import RemoteProtocolError
from .sip.uri import SipUri

#: The tools the server carries out itself (sipagent.product.tools); a ``[[tools]]`` webhook may not
#: take their names.
BUILTIN_TOOLS = ("end_call", "transfer_call", "send_dtmf")
#: Tool and transfer-target names: what the model writes back, so plain ASCII words (the function
#: names OpenAI-style servers accept are a superset of these).
_TOOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_TARGET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
#: An environment variable's name (POSIX portable): a header's value is never written in the file.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
#: Headers the HTTP client writes itself; set by hand they would contradict the body it sends.
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})
#: Keypad keys a route's ``keys`` may bind (A-D exist on few phones and no caller's keypad).
KEYPAD_KEYS = frozenset("0123456789*#")
#: Longest ``say:`` text on a key (characters): a sentence or two, like a greeting.
MAX_KEY_SAY_CHARS = 500
#: What a transfer target may be when it is not a SIP URI: a number as people write it (checked and
#: made E.164 by sipagent.product.setup, which knows the default country).
_NUMBER_LIKE = re.compile(r"(tel:)?\+?[0-9 .\-()/]{3,32}")


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
    #: Record this route's calls: one stereo WAV each in ``[recording] directory`` (caller left,
    #: agent right); false: never, even with ``[recording] enabled``; unset: as ``enabled`` says.
    record: bool | None = None

    #: Where the agent (``transfer_call``) and the keypad (``transfer:<name>``) may send a caller:
    #: name → E.164 number (or a national one of ``[inbound] default_country``) or SIP URI. The names
    #: are the only targets the model is told of and may name.
    transfer_targets: dict[str, str] = Field(default_factory=dict)
    #: A keypad menu that works without the model: key (0-9, * or #) → ``transfer:<target name>``,
    #: ``end_call`` or ``say:<text>``.
    keys: dict[str, str] = Field(default_factory=dict)
    #: The tools the agent may call on this route, by name: the built-ins (end_call, transfer_call,
    #: send_dtmf) and ``[[tools]]`` webhooks. None listed: the agent only talks.
    tools: list[str] = Field(default_factory=list)
    #: Most tool calls the model may make in one turn before it must answer in words.
    max_tool_calls: int = Field(3, ge=1, le=20)
    #: What the agent knows of a caller's earlier calls: ``per-call`` nothing; ``per-caller`` the last
    #: ``memory_turns`` turns of this route's calls with the same number in the last ``memory_days``
    #: days (from the call store; never another number's, never an anonymous caller's; decision 0028).
    memory: Literal["per-call", "per-caller"] = "per-call"
    memory_turns: int = Field(6, ge=1, le=20)
    memory_days: int = Field(30, ge=1, le=3650)

    @field_validator("greeting", "instructions", "disclosure", "name", "language", "voice")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out instead)")
        return value

    @field_validator("transfer_targets")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            if not _TARGET_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a target name (a letter, then letters, digits, '_' or '-'; at most 32)"
                )
            check_transfer_target(target, name)
        return value

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # transfer_targets is declared above, so it is validated first; when it was bad, its own error
        # says so and the transfer keys are not checked against it.
        targets = info.data.get("transfer_targets")
        for key, action in value.items():
            if key not in KEYPAD_KEYS:
                raise ValueError(f"{key!r} is not a keypad key (one of 0-9, * or #)")
            kind, argument = parse_key_action(action, key)
            if kind == "transfer" and targets is not None and argument not in targets:
                known = ", ".join(targets) or "none: add transfer_targets"
                raise ValueError(
                    f"{key!r}: {action!r} names no transfer target of this route (transfer_targets: {known})"
                )
        return value

    @field_validator("tools")
    @classmethod
    def _tool_list(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for name in value:
            if value.count(name) > 1:
                raise ValueError(f"{name!r} is listed twice")
        targets = info.data.get("transfer_targets")  # None: it was bad, and its own error says so
        if "transfer_call" in value and targets is not None and not targets:
            raise ValueError(
                "transfer_call needs transfer_targets on this route (the names the agent may transfer to)"
            )
        return value


class ToolSettings(Section):
    """A webhook the agent may call: ``[[tools]]`` tables (docs/tools.md). Routes list the ones their
    agent gets (``routes.tools``)."""

    #: What the model calls it: a letter, then letters, digits or '_' (not a built-in's name).
    name: str
    #: What it does and when to use it, for the model.
    description: str
    #: Its arguments as a JSON Schema ``object`` (a TOML table), checked against the meta-schema at
    #: start-up; the model's arguments are checked against it before anything is sent.
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    #: Where the request goes (http:// or https://; no user or password in it: use ``headers``).
    url: str
    #: ``POST``: the arguments as a JSON body; ``GET``: as query parameters.
    method: Literal["GET", "POST"] = "POST"
    #: Request headers: header name → the NAME of an environment variable holding its value (read at
    #: each call, never written in this file, never logged).
    headers: dict[str, str] = Field(default_factory=dict)
    #: Seconds the whole request may take; then the model hears that it timed out.
    timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOOL_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a tool name (a letter, then letters, digits or '_'; at most 64)"
            )
        if value in BUILTIN_TOOLS:
            raise ValueError(f"{value!r} is a built-in tool's name ({', '.join(BUILTIN_TOOLS)})")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: the model reads it to know when to call the tool")
        return value.strip()

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_parameters_schema(value)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold a user or password: put credentials in headers (by env name)")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header, env in value.items():
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if header.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{header!r} is set by the server itself")
            if not _ENV_NAME.fullmatch(env):
                raise ValueError(
                    f"{header}: the value must be the NAME of an environment variable holding the header's "
                    "value (letters, digits, '_'), never the value itself"
                )
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


class StoreSettings(Section):
    """The call store (SQLite, WAL): every call, turn, tool call, key and transfer, as it happens."""

    enabled: bool = True
    #: The database file (relative: to the working directory); its folder is made 0700, it 0600.
    path: Path = Path("data/calls.db")
    #: Calls older than this are deleted, with their recordings (0: keep them all).
    keep_days: int = Field(90, ge=0)
    #: fsync every commit: also survives a power cut, not just a killed process (slower).
    fsync: bool = False


class WebhookSettings(Section):
    """Lifecycle webhooks: ``call.started``, ``call.answered``, ``call.ended`` (with the end-of-call
    report) POSTed to ``url``, signed with HMAC-SHA256 (decision 0026)."""

    url: str
    #: Name of the environment variable holding the signing secret (never in the file).
    secret_env: str = "SIPAGENT_WEBHOOK_SECRET"
    max_attempts: int = Field(5, ge=1, le=20)
    timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


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


def check_tools(tools: list[ToolSettings]) -> list[ToolSettings]:
    """No tool name twice."""
    names = [tool.name for tool in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"tools[{i}].name: {name!r} is tools[{names.index(name)}]'s too")
    return tools


def check_route_tools(routes: list[RouteSettings], info: ValidationInfo) -> list[RouteSettings]:
    """Every tool a route lists is a built-in or a ``[[tools]]`` table (``Settings.tools`` is declared
    before ``routes``, so it is validated first; when it was bad, its own error is enough)."""
    tools: list[ToolSettings] | None = info.data.get("tools")
    if tools is None:
        return routes
    known = (*BUILTIN_TOOLS, *(tool.name for tool in tools))
    for i, route in enumerate(routes):
        for j, name in enumerate(route.tools):
            if name not in known:
                raise ValueError(
                    f"routes[{i}].tools[{j}]: {name!r} is not a tool (built-in: {', '.join(BUILTIN_TOOLS)}; "
                    f"[[tools]]: {', '.join(tool.name for tool in tools) or 'none'})"
                )
    return routes


def check_parameters_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError unless ``schema`` is a JSON Schema (by its meta-schema: 2020-12, or the draft
    its ``$schema`` names) of an ``object``, with no reference the server would have to fetch."""
    if schema.get("type") != "object":
        raise ValueError('must be a JSON Schema with type = "object" (the arguments are a JSON object)')
    try:
        json.dumps(schema)
    except (TypeError, ValueError):
        raise ValueError("holds a value JSON cannot carry (a TOML date or time?)") from None
    validator = schema_validator_class(schema)
    if validator is None:
        raise ValueError(f"$schema {schema['$schema']!r} is not a JSON Schema draft jsonschema knows")
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = ".".join(str(part) for part in exc.path)
        raise ValueError(f"not a valid JSON Schema{f' at {at}' if at else ''}: {exc.message}") from None
    for path, ref in _refs(schema, ()):
        if not ref.startswith("#"):
            raise ValueError(
                f"{'.'.join(path)}: $ref {ref!r} points outside the schema (only '#/...' references: "
                "the server fetches nothing)"
            )


def schema_validator_class(schema: dict[str, Any]) -> Any:
    """The jsonschema validator class for ``schema``: the draft its ``$schema`` names, else 2020-12;
    None for a ``$schema`` jsonschema does not know."""
    if "$schema" not in schema:
        return jsonschema.Draft202012Validator
    return validator_for(schema, default=None)


def _refs(node: object, where: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every ``$ref`` string in a schema, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield (*where, key), value
            else:
                yield from _refs(value, (*where, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, (*where, str(i)))


def check_transfer_target(target: str, name: str) -> None:
    """Raise ValueError unless ``target`` is a SIP URI or looks like a phone number (which
    sipagent.product.setup then makes E.164 in the default country)."""
    if target.lower().startswith(("sip:", "sips:")):
        try:
            SipUri.parse(target)
        except RemoteProtocolError as exc:
            raise ValueError(f"{name}: {target!r} is not a SIP URI ({exc})") from None
    elif not _NUMBER_LIKE.fullmatch(target.strip()):
        raise ValueError(
            f"{name}: {target!r} is neither a phone number (E.164, e.g. +15550001234) nor a SIP URI "
            "(sip:user@host)"
        )


def parse_key_action(action: str, key: str) -> tuple[Literal["transfer", "end_call", "say"], str | None]:
    """``transfer:<name>``, ``end_call`` or ``say:<text>`` as (kind, name or text); raise ValueError
    naming ``key`` otherwise."""
    if action == "end_call":
        return "end_call", None
    kind, colon, argument = action.partition(":")
    if colon and kind == "transfer" and argument.strip():
        return "transfer", argument.strip()
    if colon and kind == "say" and argument.strip():
        if len(argument) > MAX_KEY_SAY_CHARS:
            raise ValueError(f"{key!r}: the text to say is longer than {MAX_KEY_SAY_CHARS} characters")
        return "say", argument.strip()
    raise ValueError(
        f"{key!r}: {action!r} is not a key action (transfer:<target name>, end_call or say:<text>)"
    )
