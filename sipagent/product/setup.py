"""The product layer's objects, built once from the settings at start-up.

Phone numbers in the configuration are checked here (``config.py`` stays a leaf): a bad one stops
start-up with a :class:`~sipagent.config.ConfigError` naming its key, like every other bad value.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError, Settings
from ..config_product import parse_key_action
from ..model_paths import resolve_model_path
from ..voice.llm import ToolSpec
from .limits import LimitsConfig
from .numbers import NumberError, normalise
from .policy import InboundPolicy
from .routes import Route, RouteTable
from .tools import (
    END_CALL,
    SEND_DTMF,
    TRANSFER_CALL,
    KeyAction,
    RouteTools,
    WebhookTool,
    end_call_spec,
    send_dtmf_spec,
    transfer_call_spec,
)


def _number(value: str, country: str, key: str) -> str:
    try:
        return normalise(value, country)
    except NumberError as exc:
        raise ConfigError(f"invalid configuration:\n  {key}: {exc}") from None


def inbound_policy(settings: Settings) -> InboundPolicy:
    """``[inbound]``: who may call."""
    inbound = settings.inbound
    country = inbound.default_country
    allow = frozenset(_number(n, country, f"inbound.allow[{i}]") for i, n in enumerate(inbound.allow))
    return InboundPolicy(
        mode=inbound.policy, allow=allow, default_country=country, allow_loopback=inbound.allow_loopback
    )


def route_table(settings: Settings) -> RouteTable:
    """``[[routes]]``, with the agent's own greeting and instructions as the default route."""
    country = settings.inbound.default_country
    routes: list[Route] = []
    default: Route | None = None
    seen: dict[str, int] = {}
    for i, entry in enumerate(settings.routes):
        number = _number(entry.number, country, f"routes[{i}].number") if entry.number else None
        if number is not None:
            if number in seen:
                raise ConfigError(
                    f"invalid configuration:\n  routes[{i}].number: {number} is routes[{seen[number]}]'s too"
                )
            seen[number] = i
        voice = str(resolve_model_path(Path(entry.voice))) if entry.voice else None
        if voice is not None and not Path(voice).is_file():
            raise ConfigError(f"invalid configuration:\n  routes[{i}].voice: {voice} does not exist "
                              "(a Piper .onnx voice, with its .onnx.json beside it)")  # fmt: skip
        _same_model(entry.language, settings.stt.language, f"routes[{i}].language", "[stt] language")
        if entry.memory == "per-caller" and not settings.store.enabled:
            raise ConfigError(
                f"invalid configuration:\n  routes[{i}].memory: per-caller remembers callers in the "
                "call store: set [store] enabled = true, or use per-call"
            )
        route = Route(
            name=entry.name or number or "default",
            number=number,
            greeting=entry.greeting
            if entry.greeting is not None
            else (None if number else settings.agent.greeting),
            instructions=entry.instructions,
            disclosure=entry.disclosure,
            language=entry.language,
            voice=None if voice == str(settings.tts.voice) else voice,
            record=entry.record,
            memory=entry.memory,
            memory_turns=entry.memory_turns,
            memory_days=entry.memory_days,
        )
        if number is None:
            default = route
        else:
            routes.append(route)
    if default is None:
        default = Route(name="default", greeting=settings.agent.greeting)
    return RouteTable(routes, default, default_country=country)


def _same_model(value: str | None, loaded: str | None, key: str, setting: str) -> None:
    """Routes share one speech recogniser: a route may repeat its language, not ask for another
    (Whisper's language is set per model in this version; tiny.en knows only English)."""
    if value is not None and loaded is not None and value not in (loaded, loaded.rsplit("/", 1)[-1]):
        raise ConfigError(
            f"invalid configuration:\n  {key}: {value!r} differs from {setting} ({loaded!r}); every route "
            f"uses the models the server loaded, so leave it out or set {setting}"
        )


def limits_config(settings: Settings) -> LimitsConfig:
    """``[limits]``."""
    limits = settings.limits
    return LimitsConfig(
        max_calls=limits.max_calls,
        calls_per_minute=limits.calls_per_minute,
        retry_after_s=limits.retry_after,
        max_call_duration_s=limits.max_call_duration,
        ring_timeout_s=limits.ring_timeout,
    )


def caller_id(settings: Settings) -> str | None:
    """``trunk.caller_id`` in E.164 (checked)."""
    trunk = settings.trunk
    if trunk is None or trunk.caller_id is None:
        return None
    return _number(trunk.caller_id, settings.inbound.default_country, "trunk.caller_id")


def route_tools(settings: Settings) -> dict[str, RouteTools]:
    """``[[tools]]`` and each route's ``tools``, ``transfer_targets``, ``keys`` and
    ``max_tool_calls``, by route name as :func:`route_table` names them (a route missing from the
    result has no tools: use ``sipagent.product.tools.NO_TOOLS``). Transfer numbers become E.164
    here; a bad one names its key."""
    country = settings.inbound.default_country
    webhooks = {
        tool.name: WebhookTool(
            name=tool.name,
            description=tool.description,
            parameters=json.dumps(tool.parameters),
            url=tool.url,
            method=tool.method,
            headers=tuple(tool.headers.items()),
            timeout_s=tool.timeout,
        )
        for tool in settings.tools
    }
    result: dict[str, RouteTools] = {}
    for i, entry in enumerate(settings.routes):
        targets = {
            name: target if target.lower().startswith(("sip:", "sips:"))
            else _number(target, country, f"routes[{i}].transfer_targets.{name}")
            for name, target in entry.transfer_targets.items()
        }  # fmt: skip
        specs: list[ToolSpec] = []
        for name in entry.tools:
            if name == END_CALL:
                specs.append(end_call_spec())
            elif name == SEND_DTMF:
                specs.append(send_dtmf_spec())
            elif name == TRANSFER_CALL:
                spec = transfer_call_spec(list(targets))
                if spec is not None:  # the settings refuse transfer_call without targets
                    specs.append(spec)
            else:
                specs.append(webhooks[name].spec)
        keys: dict[str, KeyAction] = {}
        for key, action in entry.keys.items():
            kind, argument = parse_key_action(action, key)
            if kind == "transfer":
                keys[key] = KeyAction("transfer", target=argument, uri=targets[argument or ""])
            elif kind == "say":
                keys[key] = KeyAction("say", text=argument)
            else:
                keys[key] = KeyAction("end_call")
        number = _number(entry.number, country, f"routes[{i}].number") if entry.number else None
        result[entry.name or number or "default"] = RouteTools(
            specs=tuple(specs),
            webhooks={name: webhooks[name] for name in entry.tools if name in webhooks},
            keys=keys,
            transfer_targets=targets,
            max_calls_per_turn=entry.max_tool_calls,
        )
    return result
