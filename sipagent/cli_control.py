"""The commands that drive a running ``sipagent serve`` through its control API.

``call``, ``calls --live``, ``status``, ``speak``, ``dtmf``, ``end`` and ``tail`` each find the API from
``--api URL``, else from the configuration's ``[api]`` table (``--config FILE``; the defaults
without one: http://127.0.0.1:8060), and send the token held by the environment variable that
``[api] token_env`` names (``SIPAGENT_API_TOKEN``). Every failure is one line on stderr, never a
traceback; ``--json`` prints JSON on stdout and nothing else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .api.client import ApiClient, ApiClientError

#: How often ``call`` asks for the call's state while it follows it (seconds).
POLL_INTERVAL = 0.3
#: ``call``'s exit status when Ctrl-C stopped it (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

_START_SERVER = "It needs a running `sipagent serve` (start one with `sipagent serve --config FILE`)."


def _api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The server's TOML configuration: its [api] bind, port and token_env say where to connect.",
    )(func)
    func = click.option(
        "--api",
        "api",
        metavar="URL",
        envvar="SIPAGENT_API_URL",
        help="The control API's URL (default: from --config, else http://127.0.0.1:8060; "
        "env SIPAGENT_API_URL).",
    )(func)
    return func


def _connect(api: str | None, config: Path | None) -> ApiClient:
    """A client for the API named by ``--api``, else by the configuration's ``[api]`` table."""
    from .config_product import ApiSettings

    settings = ApiSettings.model_validate({})
    if config is not None:
        from .config import ConfigError, load_settings

        try:
            settings = load_settings(config).api
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if api is None:
        if settings.port == 0:
            raise click.ClickException("[api] port is 0 (a random port): pass the server's URL with --api")
        host = settings.bind
        address = ipaddress.ip_address(host)
        if address.is_unspecified:  # the server listens on every address: this machine's will do
            host = "127.0.0.1" if address.version == 4 else "::1"
        api = f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"
    elif not api.startswith(("http://", "https://")):
        raise click.BadParameter(f"{api!r} is not an http:// or https:// URL", param_hint="--api")
    return ApiClient(api, token_env=settings.token_env)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """The API's failures as one line on stderr (exit 1)."""
    try:
        yield
    except ApiClientError as exc:
        raise click.ClickException(str(exc)) from None


def _console() -> Console:
    # Looked up at each command: click's test runner swaps sys.stdout. Into a pipe or a file, rich
    # would cut tables to 80 columns; a script reading them wants every cell whole.
    width = None if sys.stdout.isatty() else 240
    return Console(file=sys.stdout, highlight=False, soft_wrap=True, width=width)


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _clock(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _outcome_line(call: dict[str, Any]) -> Text:
    """``c1 to ****4567: answered (SIP 200), 12.3 s — agent ended the call``."""
    line = Text()
    line.append(f"{call['id']} ", style="bold")
    line.append(f"{'to ' + call['to'] if call['direction'] == 'outbound' else 'from ' + call['from']}: ")
    state = call["outcome"] if call["state"] == "ended" and call.get("outcome") else call["state"]
    line.append(
        str(state), style="green" if state == "answered" else "red" if call["state"] == "ended" else ""
    )
    if call.get("sip_status") is not None:
        line.append(f" (SIP {call['sip_status']})")
    if call.get("duration") is not None:
        line.append(f", {_seconds(call['duration'])}")
    if call.get("end_reason"):
        line.append(f" — {call['end_reason']}")
    return line


def _print_call(call: dict[str, Any]) -> None:
    console = _console()
    console.print(_outcome_line(call))
    for turn in call.get("turns", []):
        if turn["caller"]:  # empty for what the agent said unprompted (greeting, disclosure, speak)
            console.print(Text.assemble(("  caller: ", "cyan"), turn["caller"]))
        agent = Text.assemble(("  agent:  ", "magenta"), turn["agent"])
        if turn.get("interrupted"):
            agent.append(" (interrupted)", style="dim")
        if turn.get("latency_ms") is not None:
            agent.append(f" [{turn['latency_ms']:.0f} ms]", style="dim")
        console.print(agent)


@click.command(epilog=_START_SERVER)
@click.argument("target")
@click.option(
    "--mode",
    type=click.Choice(["notify", "conversation"]),
    default="conversation",
    show_default=True,
    help="notify: say --message once answered, then hang up; conversation: the agent talks.",
)
@click.option("--message", help="notify: what to say.")
@click.option("--repeat", type=click.IntRange(1, 5), help="notify: how many times to say it (1-5; 1).")
@click.option("--task", help="conversation: the job, added to the route's instructions (none: the route's).")
@click.option("--from", "from_number", metavar="NUMBER", help="Caller ID (E.164) instead of trunk.caller_id.")
@click.option(
    "--max-duration", type=click.FloatRange(0, min_open=True), metavar="S", help="Hang up after S s answered."
)
@click.option(
    "--ring-timeout", type=click.FloatRange(0, min_open=True), metavar="S", help="Stop ringing after S s."
)
@click.option(
    "--amd",
    type=click.Choice(["hangup", "leave-message", "continue"]),
    help="Answering-machine detection from the answer: hang up on a machine, leave the --message "
    "after the beep, or only report it (default: off).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the call's final status as one JSON object.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow the call until it ends (Ctrl-C hangs it up), or return once it rings.",
)
@_api_options
def call(
    target: str,
    mode: str,
    message: str | None,
    repeat: int | None,
    task: str | None,
    from_number: str | None,
    max_duration: float | None,
    ring_timeout: float | None,
    amd: str | None,
    as_json: bool,
    wait: bool,
    api: str | None,
    config: Path | None,
) -> None:
    """Place an outbound call to TARGET (+E.164 number or SIP URI) through a running server.

    It needs a running `sipagent serve`: this command asks that server's control API to place the
    call (start one with `sipagent serve --config FILE`; point at it with --api URL or --config).
    Exit status: 0 if the call was answered, 1 if not (busy, no answer, rejected, failed) or on an
    error, 2 for bad options.

    \b
    sipagent call +15551234567 --mode notify --message "Your order is ready." --repeat 2
    sipagent call +15551234567 --task "Book a table for two at 8 pm." --json
    """
    if mode == "notify" and not message:
        raise click.UsageError("--mode notify needs --message (what to say)")
    if mode == "notify" and task is not None:
        raise click.UsageError("--task is for --mode conversation; notify says its --message")
    if mode == "conversation" and message is not None:
        raise click.UsageError("--message is for --mode notify; give a conversation a --task")
    if mode == "conversation" and repeat is not None:
        raise click.UsageError("--repeat is for --mode notify")
    with _errors(), _connect(api, config) as client:
        placed = client.place_call(
            target,
            mode=mode,
            message=message,
            repeat=repeat or 1,
            task=task,
            from_number=from_number,
            max_duration=max_duration,
            ring_timeout=ring_timeout,
            amd=amd,
        )
        if not wait:
            if as_json:
                _emit_json(placed)
            else:
                _console().print(_outcome_line(placed))
            return
        try:
            final = _follow(client, placed, quiet=as_json)
        except KeyboardInterrupt:
            with contextlib.suppress(ApiClientError):
                client.hang_up(placed["id"])
            click.echo(f"interrupted: hung up call {placed['id']}", err=True)
            sys.exit(EXIT_INTERRUPTED)
    if as_json:
        _emit_json(final)
    else:
        _print_call(final)
    sys.exit(0 if final.get("outcome") == "answered" else 1)


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _follow(client: ApiClient, call: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Ask for the call's state until it has ended (polling: nothing to miss if it ended before
    a subscription could start); progress goes to stderr unless ``quiet``."""
    errors = Console(stderr=True, highlight=False)
    state = call["state"]
    if not quiet:
        errors.print(_outcome_line(call))
    while call["state"] != "ended":
        _pause(POLL_INTERVAL)
        call = client.get_call(call["id"])
        if call["state"] != state and call["state"] != "ended" and not quiet:
            errors.print(_outcome_line(call))
        state = call["state"]
    return call


def print_live_calls(as_json: bool, api: str | None, config: Path | None) -> None:
    """``sipagent calls --live`` (the command is in cli_reports.py: without --live it reads the store):
    the server's calls, in progress and the most recent ended ones, newest first."""
    with _errors(), _connect(api, config) as client:
        listing = client.list_calls()
    if as_json:
        _emit_json(listing)
        return
    if not listing:
        click.echo("no calls")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "dir", "state", "from", "to", "route", "mode", "started", "duration", "outcome"):
        # Narrow terminals fold the long cells rather than cutting them ("conv…").
        table.add_column(column, no_wrap=column in ("id", "from", "to", "started"), overflow="fold")
    for info in listing:
        outcome = info.get("outcome") or ""
        if info.get("sip_status") is not None and outcome:
            outcome += f" ({info['sip_status']})"
        table.add_row(
            info["id"],
            "in" if info["direction"] == "inbound" else "out",
            info["state"],
            info["from"],
            info["to"],
            info.get("route") or "",
            info["mode"],
            _clock(info["started_at"]),
            _seconds(info.get("duration")),
            outcome,
        )
    _console().print(table)


@click.command()
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="Print the call as one JSON object.")
@_api_options
def status(call_id: str, as_json: bool, api: str | None, config: Path | None) -> None:
    """Show one call: state, outcome, SIP status, duration and its turns so far."""
    with _errors(), _connect(api, config) as client:
        info = client.get_call(call_id)
    if as_json:
        _emit_json(info)
    else:
        _print_call(info)


@click.command()
@click.argument("call_id")
@click.argument("text")
@click.option("--interrupt", is_flag=True, help="Cut what the agent is saying instead of waiting for it.")
@_api_options
def speak(call_id: str, text: str, interrupt: bool, api: str | None, config: Path | None) -> None:
    """Have the agent say TEXT in the answered call CALL_ID."""
    with _errors(), _connect(api, config) as client:
        client.speak(call_id, text, interrupt=interrupt)
    click.echo(f"{call_id}: {'speaking now' if interrupt else 'will say it after the current sentence'}")


@click.command()
@click.argument("call_id")
@click.argument("digits")
@_api_options
def dtmf(call_id: str, digits: str, api: str | None, config: Path | None) -> None:
    """Send DIGITS (0-9 * # A-D) as DTMF tones in the call CALL_ID."""
    with _errors(), _connect(api, config) as client:
        client.send_dtmf(call_id, digits)
    click.echo(f"{call_id}: sent DTMF {digits}")


@click.command()
@click.argument("call_id")
@_api_options
def end(call_id: str, api: str | None, config: Path | None) -> None:
    """Hang up the call CALL_ID (or stop it ringing)."""
    with _errors(), _connect(api, config) as client:
        client.hang_up(call_id)
    click.echo(f"{call_id}: hanging up")


def _event_line(event: dict[str, Any]) -> Text:
    """``12:00:01.250 c1 transcript "hello there"  final=true``."""
    at = event.get("at")
    stamp = datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3] if isinstance(at, float | int) else ""
    line = Text(f"{stamp} ", style="dim")
    line.append(f"{event.get('call_id', '?')} ", style="bold")
    line.append(f"{event.get('type', '?'):<12}", style="cyan")
    rest = {key: value for key, value in event.items() if key not in ("at", "call_id", "type")}
    if "text" in rest:
        line.append(f" {json.dumps(rest.pop('text'), ensure_ascii=False)}")
    for key, value in rest.items():
        line.append(f" {key}={value if isinstance(value, str) else json.dumps(value)}")
    return line


@click.command()
@click.argument("call_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines: one event object per line.")
@_api_options
def tail(call_id: str | None, as_json: bool, api: str | None, config: Path | None) -> None:
    """Print the server's call events as they happen (of CALL_ID only: until that call ends).

    Ctrl-C stops it.
    """
    console = _console()
    with _errors(), _connect(api, config) as client:
        events = client.events(call_id)
        try:
            for event in events:
                if as_json:
                    _emit_json(event)
                else:
                    console.print(_event_line(event))
                sys.stdout.flush()
        except KeyboardInterrupt:
            return  # the way to stop following: not an error
        finally:
            events.close()  # closes the WebSocket now, not when the generator is collected


COMMANDS = (call, status, speak, dtmf, end, tail)
