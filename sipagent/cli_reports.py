"""Reports from the call store: ``sipagent calls``, ``show`` and ``latency`` (decision 0027).

They read the store's SQLite file directly, read-only (:class:`~sipagent.product.store_reads.StoreReader`),
so they work with the server stopped and while it writes. The file is ``--store PATH``, else
``[store] path`` of ``--config FILE``, else ``data/calls.db`` (relative paths: to the working
directory, as the server resolves them). ``calls --live`` lists instead what a running server holds,
through its control API (sipagent/cli_control.py). Numbers are printed as stored (the service
masks them before they are). Every failure is one line on stderr; ``--json`` prints JSON only.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.table import Table
from rich.text import Text

from . import cli_control
from .cli_control import _console, _emit_json
from .latency_report import PERCENTILES, STAGE_LABELS, LatencySummary, Spread, plot_latency, summarize
from .product.store_reads import StoredCall, StoredTurn, StoreError, StoreReader

#: How ``show`` labels a turn's stage timings, in pipeline order.
_SHORT_STAGES = {
    "end_of_turn_wait": "wait",
    "stt": "stt",
    "llm_first_token": "llm",
    "first_sentence": "sentence",
    "tts_first_audio": "tts",
}
#: What happened in a call besides its turns (StoredCall's fields, the store's tables).
_EVENT_KINDS = ("tool_calls", "dtmf", "barge_ins", "transfers")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def _now() -> float:
    return time.time()


def parse_since(value: str) -> float:
    """``2h``, ``30m``, ``7d`` (before now) or an ISO date or date-time (local time unless it has an
    offset) as Unix seconds."""
    text = value.strip()
    ago = _AGO.match(text.lower())
    if ago:
        return _now() - float(ago.group(1)) * _UNITS[ago.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a span like 30m, 2h, 7d nor an ISO date like 2025-01-31 or "
            "2025-01-31T09:00",
            param_hint="--since",
        ) from None


def _store_options(func: Any) -> Any:
    func = click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The server's TOML configuration: its [store] path is the store to read.",
    )(func)
    func = click.option(
        "--store",
        "store",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The call store's file (default: [store] path of --config, else data/calls.db).",
    )(func)
    return func


def _store_path(store: Path | None, config: Path | None) -> Path:
    if store is not None:
        return store
    from .config import ConfigError, load_settings

    try:
        return load_settings(config).store.path
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _open(store: Path | None, config: Path | None) -> StoreReader:
    path = _store_path(store, config)
    try:
        return StoreReader(path)
    except StoreError as exc:
        hint = (
            ""
            if path.exists()
            else " (no call recorded yet? name the file with --store PATH or --config FILE)"
        )
        raise click.ClickException(f"{exc}{hint}") from None


def _when(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(call: StoredCall) -> float | None:
    """Seconds from the answer to the end (None: never answered, or not ended)."""
    if call.answered_at is None or call.ended_at is None:
        return None
    return call.ended_at - call.answered_at


def _outcome(call: StoredCall) -> str:
    if call.ended_at is None:
        return "not ended"
    outcome = call.outcome or "ended"
    return outcome if call.sip_status is None else f"{outcome} ({call.sip_status})"


def _call_summary(call: StoredCall, turns: int) -> dict[str, Any]:
    fields = {f.name: getattr(call, f.name) for f in dataclasses.fields(call) if f.name != "turns"}
    for contents in _EVENT_KINDS:
        del fields[contents]
    return {**fields, "duration": _duration(call), "turn_count": turns}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of the calls.")
@click.option("--since", metavar="WHEN", help="Calls begun since: 30m, 2h, 7d, or an ISO date/time.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many.")
@click.option(
    "--live", is_flag=True, help="What a running server holds (its control API), not the store's history."
)
@click.option(
    "--api",
    "api",
    metavar="URL",
    envvar="SIPAGENT_API_URL",
    help="--live: the control API's URL (implies --live; default: from --config, else "
    "http://127.0.0.1:8060; env SIPAGENT_API_URL).",
)
@_store_options
def calls(
    as_json: bool,
    since: str | None,
    limit: int,
    live: bool,
    api: str | None,
    store: Path | None,
    config: Path | None,
) -> None:
    """List the calls on record, newest first (from the call store: works with the server stopped).

    \b
    sipagent calls --since 2h
    sipagent calls --since 2025-01-31 --limit 500 --json
    sipagent calls --live            # in progress and recent, from a running server
    """
    # An --api typed on the command line asks for the server; one from the environment only
    # serves --live (it must not turn every `sipagent calls` into a request to a server).
    source = click.get_current_context().get_parameter_source("api")
    live = live or (api is not None and source is ParameterSource.COMMANDLINE)
    if live:
        if store is not None or since is not None:
            raise click.UsageError("--live lists what the server holds: --store and --since read the store")
        cli_control.print_live_calls(as_json, api, config)
        return
    started = None if since is None else parse_since(since)
    reader = _open(store, config)
    try:
        listing = reader.calls(started, limit)
        counts = reader.turn_counts([c.id for c in listing])
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _emit_json([_call_summary(c, counts.get(c.id, 0)) for c in listing])
        return
    if not listing:
        click.echo(f"no calls in {reader.path}" + ("" if since is None else f" since {_when(started)}"))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "dir", "from", "to", "route", "started", "duration", "turns", "outcome", "end"):
        table.add_column(column, no_wrap=column in ("id", "from", "to", "started"), overflow="fold")
    for call in listing:
        duration = _duration(call)
        table.add_row(
            call.id,
            "in" if call.direction == "inbound" else "out",
            call.from_number or "",
            call.to_number or "",
            call.route or "",
            _when(call.started_at),
            "" if duration is None else f"{duration:.1f} s",
            str(counts.get(call.id, 0)),
            Text(_outcome(call), style="green" if call.outcome == "answered" else ""),
            call.end_reason or "",
        )
    _console().print(table)


def _find(reader: StoreReader, prefix: str) -> StoredCall:
    """The call whose id is ``prefix``, or the one call whose id begins with it."""
    call = reader.call(prefix)
    if call is not None:
        return call
    matches = reader.ids_starting_with(prefix, limit=11)
    if len(matches) == 1:
        found = reader.call(matches[0])
        if found is not None:
            return found
    if matches:
        shown = ", ".join(matches[:10]) + (", …" if len(matches) > 10 else "")
        raise click.ClickException(f"{prefix!r} begins {len(matches)} call ids: {shown} (give more of it)")
    recent = ", ".join(c.id for c in reader.calls(limit=5))
    latest = f"; the latest: {recent}" if recent else "; it holds no call"
    raise click.ClickException(f"no call id begins with {prefix!r} in {reader.path}{latest}")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _timings(turn: StoredTurn) -> str:
    """``[640 ms · wait 300 · stt 110 · …]``: the wire latency, then each stage (— : not measured);
    empty for a turn that measured nothing (a greeting, a failure before the model)."""
    stages = [getattr(turn, f"{stage}_ms") for stage in _SHORT_STAGES]
    if turn.latency_ms is None and all(value is None for value in stages):
        return ""
    head = "no wire latency" if turn.latency_ms is None else f"{turn.latency_ms:.0f} ms"
    parts = [f"{label} {_ms(value)}" for label, value in zip(_SHORT_STAGES.values(), stages, strict=True)]
    return f"[{head} · " + " · ".join(parts) + "]"


def _turn_lines(turn: StoredTurn, offset: str) -> list[Text]:
    head = Text(f"{offset}  turn {turn.turn}", style="bold")
    notes = [n for n, on in (("scripted", turn.scripted), ("speculative", turn.speculative)) if on]
    if turn.holds:
        notes.append(f"held {turn.holds}×")
    if turn.outcome not in ("answered", "interrupted"):
        notes.append(turn.outcome)
    if notes:
        head.append(f" ({', '.join(notes)})", style="dim")
    timings = _timings(turn)
    if timings:
        head.append(f"  {timings}", style="dim")
    lines = [head]
    if turn.caller:  # empty when the agent spoke unprompted (greeting, disclosure, speak)
        lines.append(Text.assemble(("    caller: ", "cyan"), turn.caller))
    agent = Text.assemble(("    agent:  ", "magenta"), turn.agent_heard)
    if turn.interrupted:
        agent.append("  (interrupted)", style="yellow")
    lines.append(agent)
    if turn.interrupted and turn.agent_said and turn.agent_said != turn.agent_heard:
        lines.append(Text(f"            would have said: {turn.agent_said}", style="dim"))
    if turn.error:
        lines.append(Text(f"    error: {turn.error}", style="red"))
    return lines


def _event_line(kind: str, item: dict[str, Any], offset: str) -> Text:
    line = Text(f"{offset}  ")
    if kind == "tool_calls":
        line.append(f"tool {item['name']}", style="blue")
        if item.get("arguments") is not None:
            line.append(f" {_compact(item['arguments'])}")
        result = "ok" if item.get("ok") else "failed" if item.get("ok") is False else "?"
        line.append(f" → {result}")
        if item.get("status") is not None:
            line.append(f" {item['status']}")
        if item.get("duration_ms") is not None:
            line.append(f" in {item['duration_ms']:.0f} ms")
        for key in ("error", "result"):
            if item.get(key):
                line.append(f" — {key}: {item[key]}")
    elif kind == "dtmf":
        line.append(f"key {item['digit']}", style="blue")
        line.append(" from the caller" if item["direction"] == "received" else " sent by the agent")
    elif kind == "barge_ins":
        line.append(f"barge-in in turn {item['turn']}", style="yellow")
        if item.get("decision_ms") is not None:
            line.append(f": line silenced {item['decision_ms']:.0f} ms after the caller's voice began")
    else:  # transfers
        line.append(f"transfer {item['state']}", style="blue")
        if item.get("target"):
            line.append(f" to {item['target']}")
        if item.get("sip_status") is not None:
            line.append(f" (SIP {item['sip_status']})")
        if item.get("reason"):
            line.append(f" — {item['reason']}")
    return line


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _print_transcript(call: StoredCall) -> None:
    console = _console()

    def offset(at: float) -> str:
        return f"{at - call.started_at:+8.1f} s"

    header = Text(call.id, style="bold")
    direction = (
        "from " + (call.from_number or "?")
        if call.direction == "inbound"
        else "to " + (call.to_number or "?")
    )
    header.append(f"  {call.direction} {direction}")
    if call.direction == "inbound" and call.to_number:
        header.append(f" to {call.to_number}")
    if call.direction == "outbound" and call.from_number:
        header.append(f" from {call.from_number}")
    console.print(header)
    about = [
        f"{name} {value}"
        for name, value in (("route", call.route), ("trunk", call.trunk), ("mode", call.mode))
        if value
    ]
    if about:
        console.print("  " + ", ".join(about))
    console.print(f"  started {_when(call.started_at)}")
    if call.answered_at is not None:
        console.print(f"  answered {offset(call.answered_at).strip()} after")
    if call.amd_result:
        after = "" if call.amd_after_ms is None else f" after {call.amd_after_ms:.0f} ms"
        console.print(f"  answering-machine detection: {call.amd_result}{after}")
    if call.recording:
        console.print(f"  recording: {call.recording}")

    # Turns are stored as they finish; the events in between happened while they were under way.
    entries: list[tuple[float, int, int, list[Text]]] = []
    for turn in call.turns:
        entries.append((turn.at, 0, turn.turn, _turn_lines(turn, offset(turn.at))))
    for rank, kind in enumerate(("barge_ins", "tool_calls", "dtmf", "transfers"), start=1):
        for index, item in enumerate(getattr(call, kind)):
            entries.append((item["at"], rank, index, [_event_line(kind, item, offset(item["at"]))]))
    for *_, lines in sorted(entries, key=lambda e: e[:3]):
        for line in lines:
            console.print(line)
    if not entries:
        console.print(Text("  (no turns)", style="dim"))

    if call.ended_at is None:
        console.print(
            Text("  not ended (in progress, or the server stopped before it ended)", style="yellow")
        )
        return
    end = Text(f"{offset(call.ended_at)}  ended: ", style="bold")
    end.append(_outcome(call), style="green" if call.outcome == "answered" else "red")
    if call.end_reason:
        end.append(f" — {call.end_reason}")
    duration = _duration(call)
    if duration is not None:
        end.append(f", {duration:.1f} s answered")
    console.print(end)


@click.command()
@click.argument("call_id")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the call and everything in it as one JSON object."
)
@_store_options
def show(call_id: str, as_json: bool, store: Path | None, config: Path | None) -> None:
    """Show a stored call: its transcript with timings, interruptions, tool calls, keys, transfers,
    barge-ins and how it ended. CALL_ID may be any unique beginning of the id."""
    reader = _open(store, config)
    try:
        call = _find(reader, call_id)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        # "call" is what `calls --json` lists for it; then what happened in it, each in its order.
        _emit_json(
            {
                "call": _call_summary(call, len(call.turns)),
                "turns": [dataclasses.asdict(turn) for turn in call.turns],
                **{kind: list(getattr(call, kind)) for kind in _EVENT_KINDS},
            }
        )
    else:
        _print_transcript(call)


def _spread_cells(spread: Spread | None) -> list[str]:
    if spread is None:
        return ["—"] * len(PERCENTILES) + ["0"]
    return [_ms(spread.p50), _ms(spread.p90), _ms(spread.p99), str(spread.n)]


def _print_summary(summary: LatencySummary, asked: int) -> None:
    console = _console()
    console.print(f"the last {summary.turns} measured turns (of {asked} asked), in ms")
    table = Table(box=None, pad_edge=False)
    table.add_column("")
    for name in (*(f"p{q}" for q in PERCENTILES), "turns"):
        table.add_column(name, justify="right")
    table.add_row(Text("wire latency", style="bold"), *_spread_cells(summary.wire))
    for stage, spread in summary.stages.items():
        table.add_row(f"  {STAGE_LABELS[stage]}", *_spread_cells(spread))
    console.print(table)


@click.command()
@click.option(
    "--last", type=click.IntRange(1), default=100, show_default=True, help="The last N measured turns."
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False, writable=True),
    metavar="FILE.png",
    help="Also draw a PNG: the wire latency's histogram and the stages' medians.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the percentiles as one JSON object.")
@_store_options
def latency(last: int, plot: Path | None, as_json: bool, store: Path | None, config: Path | None) -> None:
    """p50/p90/p99 of the wire latency (the caller's last word to the reply's first voiced packet) and
    of each stage, over the last N turns that measured it, from the call store."""
    reader = _open(store, config)
    try:
        turns = reader.measured_turns(last)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    summary = summarize(turns)
    if as_json:
        _emit_json(
            {**summary.as_dict(), "last": last, "plot": None if plot is None or not turns else str(plot)}
        )
    elif not turns:
        click.echo(f"no measured turns in {reader.path}")
    else:
        _print_summary(summary, last)
    if plot is not None:
        if not turns:
            click.echo(f"nothing to plot: {plot} not written", err=True)
            return
        try:
            plot_latency(turns, plot)
        except OSError as exc:
            raise click.ClickException(f"cannot write {plot}: {exc.strerror or exc}") from None
        click.echo(f"wrote {plot}", err=as_json)  # --json: stdout holds the JSON only


COMMANDS = (calls, show, latency)
