"""The tools an agent may call on a route, and the check every call's arguments pass first.

Three tools are built in, carried out by the server itself: ``end_call`` (hang up, with an optional
``reason``), ``transfer_call`` (to one of the route's ``transfer_targets``, by name: the model is
given the names as an ``enum`` and never sees, nor may invent, a number or URI) and ``send_dtmf``
(press keys, e.g. on an IVR an outbound call reached). The others are webhooks, ``[[tools]]``
tables: :class:`WebhookTool`, run by :class:`sipagent.product.webhooks.WebhookRunner`.

:class:`RouteTools` is what one route's calls get: the :class:`~sipagent.voice.llm.ToolSpec` list
for the model, the webhooks by name, the keypad menu (which works without the model) and the
transfer targets resolved to E.164 or SIP URIs. ``sipagent.product.setup.route_tools`` builds one
per route from the settings.

Whatever the model writes as arguments is untrusted: :func:`validate_arguments` (or
:meth:`RouteTools.arguments`) parses and checks it against the tool's schema and returns either the
arguments or a message meant for the model, so it can call again with better ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

# jsonschema ships no type information (types-jsonschema is not installed).
import jsonschema  # type: ignore[import-untyped, unused-ignore]
import referencing
import referencing.exceptions

from ..config_product import BUILTIN_TOOLS, schema_validator_class
from ..voice.llm import ToolCall, ToolSpec

__all__ = [
    "BUILTIN_TOOLS",
    "DTMF_PATTERN",
    "END_CALL",
    "NO_TOOLS",
    "SEND_DTMF",
    "TRANSFER_CALL",
    "KeyAction",
    "RouteTools",
    "WebhookTool",
    "check_arguments",
    "end_call_spec",
    "send_dtmf_spec",
    "transfer_call_spec",
    "validate_arguments",
]

END_CALL, TRANSFER_CALL, SEND_DTMF = BUILTIN_TOOLS
#: What ``send_dtmf`` may press: RFC 4733 events 0-9, *, # and A-D, at most 32 at a time.
DTMF_PATTERN = "^[0-9*#A-D]{1,32}$"
#: Longest ``end_call`` reason (characters): it is logged, not spoken.
MAX_REASON_CHARS = 200
#: How many schema errors a message to the model lists, and how long each may be: enough to correct
#: the call, short enough not to crowd the context of a small model.
_MAX_ERRORS = 3
_MAX_ERROR_CHARS = 200
_MAX_VALUE_CHARS = 40
#: No remote ``$ref`` is ever fetched (the configuration check refuses them, and this registry, with
#: only the meta-schemas jsonschema bundles, could not resolve one anyway).
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()


def end_call_spec() -> ToolSpec:
    """``end_call``: hang up, optionally saying why (for the log and the call's record)."""
    schema = {
        "type": "object",
        "properties": {
            "reason": {
                "type": "string",
                "maxLength": MAX_REASON_CHARS,
                "description": "Why the call ends, in a few words (not spoken).",
            }
        },
        "additionalProperties": False,
    }
    return ToolSpec(
        END_CALL,
        "Hang up the call. Say goodbye first. Use it when the caller is done or asks to end the call.",
        json.dumps(schema),
    )


def transfer_call_spec(targets: Sequence[str]) -> ToolSpec | None:
    """``transfer_call`` to one of ``targets`` (names): an ``enum`` of them, so a valid call can
    only name a configured target. None without targets: the route cannot transfer."""
    if not targets:
        return None
    schema = {
        "type": "object",
        "properties": {
            "target": {
                "type": "string",
                "enum": list(targets),
                "description": "Who to transfer the caller to.",
            }
        },
        "required": ["target"],
        "additionalProperties": False,
    }
    return ToolSpec(
        TRANSFER_CALL,
        "Transfer the caller to a person or team: " + ", ".join(targets) + ". Tell the caller first.",
        json.dumps(schema),
    )


def send_dtmf_spec() -> ToolSpec:
    """``send_dtmf``: press keypad keys (0-9, *, #, A-D) on the call."""
    schema = {
        "type": "object",
        "properties": {
            "digits": {
                "type": "string",
                "pattern": DTMF_PATTERN,
                "description": "The keys to press, in order, e.g. 1 or 4521#.",
            }
        },
        "required": ["digits"],
        "additionalProperties": False,
    }
    return ToolSpec(
        SEND_DTMF,
        "Press keys on the phone keypad (DTMF), e.g. to choose an option in an automated menu.",
        json.dumps(schema),
    )


@dataclass(frozen=True)
class WebhookTool:
    """A ``[[tools]]`` webhook, ready to run (:class:`sipagent.product.webhooks.WebhookRunner`)."""

    name: str
    description: str
    #: The arguments' JSON Schema as JSON text (checked against its meta-schema at start-up).
    parameters: str
    url: str
    method: Literal["GET", "POST"] = "POST"
    #: (header name, name of the environment variable holding its value): values are read at each
    #: call, so a rotated secret needs no restart, and never live in this object or its repr.
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 5.0

    @property
    def spec(self) -> ToolSpec:
        """What the model is told of it."""
        return ToolSpec(self.name, self.description, self.parameters)


@dataclass(frozen=True)
class KeyAction:
    """What a keypad key does on a route, without the model."""

    kind: Literal["transfer", "end_call", "say"]
    #: ``transfer``: the target's name, and where it leads (E.164 number or SIP URI).
    target: str | None = None
    uri: str | None = None
    #: ``say``: the text spoken.
    text: str | None = None

    @property
    def action(self) -> str:
        """The action as the configuration writes it (``transfer:sales``, ``end_call``,
        ``say:<text>``), the form ``ConversationConfig.keys`` takes."""
        if self.kind == "transfer":
            return f"transfer:{self.target}"
        return f"say:{self.text}" if self.kind == "say" else "end_call"


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class RouteTools:
    """One route's tools: what the model gets and how each call of it is carried out."""

    #: The specs given to the model, in the order the route lists them (built-ins included).
    specs: tuple[ToolSpec, ...] = ()
    #: The route's webhooks by name (the ones it lists, not every ``[[tools]]`` table).
    webhooks: Mapping[str, WebhookTool] = field(default_factory=dict)
    #: Keypad key ('0'-'9', '*', '#') → what it does.
    keys: Mapping[str, KeyAction] = field(default_factory=dict)
    #: Transfer target name → E.164 number or SIP URI (for the keypad even when the model has no
    #: ``transfer_call``).
    transfer_targets: Mapping[str, str] = field(default_factory=dict)
    #: Most tool calls the model may make in one turn; past it, the turn must end in words.
    max_calls_per_turn: int = 3

    def __post_init__(self) -> None:
        # Read-only views: one RouteTools serves every call on its route.
        for name in ("webhooks", "keys", "transfer_targets"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def names(self) -> tuple[str, ...]:
        """The tools the model may call."""
        return tuple(spec.name for spec in self.specs)

    @property
    def key_actions(self) -> tuple[tuple[str, str], ...]:
        """The keypad menu as (key, action) pairs, for ``ConversationConfig.keys``."""
        return tuple((key, action.action) for key, action in self.keys.items())

    def spec(self, name: str) -> ToolSpec | None:
        """The spec of a tool the model may call, by name (None: not one of this route's)."""
        return next((spec for spec in self.specs if spec.name == name), None)

    def arguments(self, call: ToolCall) -> dict[str, Any] | str:
        """``call``'s arguments, checked (see :func:`validate_arguments`); a message for the model
        when the tool is not one of this route's or the arguments do not fit."""
        spec = self.spec(call.name)
        if spec is None:
            tools = ", ".join(self.names) or "none"
            return f"There is no tool named {call.name!r} here. The tools are: {tools}."
        return validate_arguments(spec, call.arguments)


#: A route without tools or keys: the agent only talks.
NO_TOOLS = RouteTools()


def validate_arguments(spec: ToolSpec, arguments_json: str) -> dict[str, Any] | str:
    """The arguments the model wrote for ``spec``, parsed and checked against its schema; else a
    message for the model saying what is wrong (bad JSON, not an object, or each schema error, up to
    three). Blank text counts as ``{}``: some servers send it for a call without arguments."""
    text = arguments_json.strip() or "{}"
    try:
        arguments = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        return (
            f"The arguments for {spec.name} are not valid JSON ({reason}). Call {spec.name} again with "
            "a JSON object that matches its parameters."
        )
    if not isinstance(arguments, dict):
        return (
            f"The arguments for {spec.name} must be a JSON object, not {_json_type(arguments)}. Call "
            f"{spec.name} again with a JSON object that matches its parameters."
        )
    problem = check_arguments(spec, arguments)
    return arguments if problem is None else problem


def check_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
    """None when ``arguments`` fit ``spec``'s schema, else a message for the model listing the
    problems. Formats the schema names (``date``, ``email``…) are checked where jsonschema can."""
    schema = json.loads(spec.parameters)
    cls = schema_validator_class(schema) or jsonschema.Draft202012Validator
    # Compiling a validator costs ~30 µs: cheaper than keeping a cache, for a few calls a turn.
    validator = cls(schema, registry=_NO_RETRIEVAL, format_checker=cls.FORMAT_CHECKER)
    try:
        errors = sorted(validator.iter_errors(dict(arguments)), key=lambda error: list(error.path))
    except referencing.exceptions.Unresolvable as exc:  # a schema the configuration check let by
        return f"{spec.name} cannot be called: a reference in its parameters does not resolve ({exc})."
    if not errors:
        return None
    problems = []
    for error in errors[:_MAX_ERRORS]:
        where = ".".join(str(part) for part in error.path)
        # jsonschema's messages open with the value's repr: shorten a long value, keep why it failed.
        value = repr(error.instance)
        message = (
            error.message.replace(value, _cut(value, _MAX_VALUE_CHARS))
            if len(value) > _MAX_VALUE_CHARS
            else error.message
        )
        message = _cut(message, _MAX_ERROR_CHARS)
        problems.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - _MAX_ERRORS} more)" if len(errors) > _MAX_ERRORS else ""
    return (
        f"The arguments for {spec.name} do not match its parameters: {'; '.join(problems)}{more}. "
        f"Call {spec.name} again with corrected arguments."
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"
