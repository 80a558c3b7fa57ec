"""Every check, in the order an operator fixes things: the file, the models, the sockets, the
network around them, then the product's own files and secrets. Each result is handed to ``emit`` as
soon as it is known (loading models takes seconds; the screen should not sit still meanwhile)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_check import load_checked
from .result import CheckResult, skip


@dataclass(frozen=True)
class CheckOptions:
    """What ``sipagent check`` was asked for beyond the configuration."""

    #: Load each model (off: presence and sha256 only, ``--quick``).
    load_models: bool = True
    #: Try one REGISTER against the trunk (``--register``).
    register: bool = False


async def run_checks(
    config: Path | None,
    overrides: dict[str, Any],
    options: CheckOptions,
    emit: Callable[[CheckResult], None],
) -> list[CheckResult]:
    """Run every check on the settings ``serve`` would run with; returns the results in order."""
    from ..net.sip_transport import default_local_address
    from . import models, network, product, tls, trunk

    results: list[CheckResult] = []

    def report(result: CheckResult) -> None:
        results.append(result)
        emit(result)

    settings, config_result = load_checked(config, overrides)
    report(config_result)
    if settings is None:
        return results  # every other check reads the settings
    for line in models.not_loaded(settings):
        report(line)
    for spec in models.configured_models(settings):
        report(models.check_model(spec, load=options.load_models))
    for line in network.sip_ports(settings):
        report(line)
    report(network.rtp_ports(settings))
    report(network.api_port(settings))
    report(tls.check_tls(settings))
    located, found = await trunk.locate_trunk(settings)
    report(located)
    report(network.public_address(settings, [a.host for a in found], default_local_address()))
    report(trunk.credentials(settings))
    if options.register:
        report(await trunk.try_register(settings))
    elif settings.trunk is not None and settings.trunk.mode == "register":
        report(skip("trunk.register", "not tried: add --register to send one REGISTER"))
    report(network.api_token(settings))
    report(product.check_store(settings))
    report(product.check_recordings(settings))
    report(product.check_webhooks(settings))
    report(product.check_tool_headers(settings))
    return results


__all__ = ["CheckOptions", "run_checks"]
