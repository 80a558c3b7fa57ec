"""Is the configuration one ``serve`` would start with?

The file is loaded exactly as ``serve`` loads it (the same command-line overrides on top), then the
product layer's objects are built as the server builds them before anything listens: numbers in
E.164, routes and their voices, tools, the trunk URI against its carrier's profile. Those are the
errors ``serve`` would stop on at start-up, each naming its key. The lifecycle webhooks' secret is
checked apart (``webhooks``): its fix is an environment variable, not the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ConfigError, Settings, load_settings
from ..errors import SipAgentError
from .result import CheckResult, fail, ok, redact

NAME = "config"


def _fix(config: Path | None) -> str:
    where = str(config) if config is not None else "the command-line options"
    return f"correct the keys named above in {where} (README: Configuration lists every key and its range)"


def load_checked(config: Path | None, overrides: dict[str, Any]) -> tuple[Settings | None, CheckResult]:
    """The settings (None when they are unusable) and the ``config`` line."""
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        return None, fail(NAME, redact(str(exc)), _fix(config))
    problem = product_problem(settings)
    if problem is not None:
        return None, fail(NAME, redact(problem), _fix(config))
    return settings, ok(NAME, describe(config, settings))


def product_problem(settings: Settings) -> str | None:
    """What the server's constructor would refuse (``sipagent/server.py``), or None."""
    # Imported here: the product layer pulls in phonenumbers and jsonschema.
    from ..product.setup import caller_id, inbound_policy, route_table, route_tools
    from ..product.trunks import check_trunk_uri, profile_for
    from ..sip.uri import SipUri

    try:
        if settings.trunk is not None:
            try:
                check_trunk_uri(profile_for(settings.trunk.profile), SipUri.parse(settings.trunk.uri))
            except SipAgentError as exc:
                return f"invalid configuration:\n  trunk.uri: {exc}"
        inbound_policy(settings)
        routes = route_table(settings)
        if settings.outbound.route and routes.named(settings.outbound.route) is None:
            return f"invalid configuration:\n  outbound.route: no route {settings.outbound.route!r}"
        caller_id(settings)
        route_tools(settings)
    except ConfigError as exc:
        return str(exc)
    return None


def describe(config: Path | None, settings: Settings) -> str:
    """One line on what will run: no numbers, no secrets."""
    source = f"{config} is valid" if config is not None else "the built-in defaults (no --config)"
    routes = len(settings.routes)
    trunk = settings.trunk
    attached = f"{trunk.profile} trunk, {trunk.mode} mode" if trunk is not None else "no trunk"
    return f"{source}: {settings.mode} mode, {routes} route{'s' * (routes != 1)}, {attached}"


__all__ = ["describe", "load_checked", "product_problem"]
