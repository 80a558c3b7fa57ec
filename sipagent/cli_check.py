"""``sipagent check [--json] [--register] [--quick]``: green and red lines, a fix under each red one.

It takes every option of ``serve`` (the command is built from ``serve``'s own parameters), so the
command line that would start the server checks exactly what it would run:
``sipagent check --config prod.toml --sip-port 5080``. The exit status is 1 when any line is red.
``--json`` prints one object, ``{"ok": …, "checks": [{"name", "status", "ok", "detail", "fix"}]}``,
and nothing else on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from .check.result import CheckResult

#: Symbol and colour of each status.
_STYLE = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "warn": ("!", "yellow"), "skip": ("-", "dim")}
_NAME_WIDTH = 20


def _console() -> Console:
    # Looked up per run: click's test runner swaps sys.stdout. Into a pipe, rich would wrap at 80.
    return Console(
        file=sys.stdout, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240
    )


def render(result: CheckResult) -> Text:
    """One check as a line (and its fix on the next), symbols and colours by status."""
    symbol, style = _STYLE[result.status]
    line = Text.assemble((f" {symbol} ", style), (result.name.ljust(_NAME_WIDTH), "bold"), " ")
    detail_style = "dim" if result.status == "skip" else ""
    line.append(result.detail.replace("\n", "\n" + " " * (_NAME_WIDTH + 4)), style=detail_style)
    if result.fix and result.status in ("fail", "warn"):
        line.append("\n" + " " * (_NAME_WIDTH + 4))
        line.append("fix: ", style=style)
        line.append(result.fix)
    return line


def summary(results: list[CheckResult]) -> Text:
    """The last line: what failed, or that serve should start."""
    failed = sum(1 for r in results if r.status == "fail")
    warned = sum(1 for r in results if r.status == "warn")
    if failed:
        return Text(
            f"{failed} check{'s' * (failed != 1)} failed: fix the red lines, then run check again.",
            style="bold red",
        )
    note = f" ({warned} warning{'s' * (warned != 1)})" if warned else ""
    return Text(f"All checks passed{note}: `sipagent serve` with these options should start.", style="green")


def check_command(
    serve: click.Command, overrides: Callable[[dict[str, Any]], dict[str, Any]]
) -> click.Command:
    """The ``check`` command, with ``serve``'s options and ``overrides`` mapping them to settings."""

    def callback(config: Path | None, as_json: bool, register: bool, quick: bool, **options: Any) -> None:
        from .check.runner import CheckOptions, run_checks

        console = _console()

        def emit(result: CheckResult) -> None:
            if not as_json:
                console.print(render(result))

        if not as_json:
            console.print(
                Text(f"sipagent check: {config or 'built-in defaults (no --config)'}", style="bold")
            )
        opts = CheckOptions(load_models=not quick, register=register)
        results = asyncio.run(run_checks(config, overrides(options), opts, emit))
        passed = all(r.ok for r in results)
        if as_json:
            click.echo(
                json.dumps({"ok": passed, "checks": [r.as_dict() for r in results]}, ensure_ascii=False)
            )
        else:
            console.print(summary(results))
        if not passed:
            sys.exit(1)

    own = [
        click.Option(["--json", "as_json"], is_flag=True, help="Print one JSON object with every check."),
        click.Option(
            ["--register"],
            is_flag=True,
            help="Send one REGISTER to the trunk with its credentials (then remove the binding).",
        ),
        click.Option(["--quick"], is_flag=True, help="Do not load the models (presence and sha256 only)."),
    ]
    return click.Command(
        "check",
        callback=callback,
        params=[*serve.params, *own],
        help="Find what would stop `serve` or its first call: the configuration, models (present, "
        "sha256, loadable), ports, public address, TLS certificate, trunk DNS, API token, store, "
        "webhooks. Takes serve's options; exit status 1 on any red line.",
    )


__all__ = ["check_command", "render", "summary"]
