"""``sipagent demo``: the whole thing working in a minute, with nothing configured (decision 0032).

One process, everything on loopback: the real server (:class:`~sipagent.server.Server`, agent mode,
the embedded models, the call store at its default path) and a caller made of the same SIP engine
(:mod:`sipagent.demo_caller`). The caller dials the server, waits for the greeting, then says a few
recorded human utterances from ``fixtures/`` one turn at a time, each once the agent's reply has
been heard to its end, and hangs up. The conversation is printed as the server's call book publishes
it (what the agent transcribed, what it answered, the turn's wire latency); then a table of the
turns' latencies read back from the store, and the ``sipagent show`` line that prints the stored call.

Nothing is mocked: the latencies are those of real RTP through the jitter buffer, the VAD, Whisper,
the language model and Piper, on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .latency_report import LatencySummary, summarize
from .model_paths import ROOT
from .product.store_reads import StoredCall, StoredTurn, StoreError, StoreReader

if TYPE_CHECKING:
    from .config import Settings
    from .product.control import CallEvent

#: Where the bundled speech is (the source tree, as ``make install`` installs it: editable).
FIXTURES = ROOT / "fixtures"
#: What the caller says, one turn each: recorded human speech (pocketsphinx test data) with the
#: words said (fixtures/manifest.json's transcripts). Short lines: each is one turn, never split.
UTTERANCES: tuple[tuple[str, str], ...] = (
    ("speech-cards-001.pcap", "ten of clubs"),
    ("speech-goforward.pcap", "go forward ten meters"),
    ("speech-librivox-0880.pcap", "he was not an ill disposed young man"),
)
#: The default small model (SmolLM2-135M) takes its cue from the greeting: an open question gets
#: replies from it, a plain "I am listening" gets the caller's words repeated back.
GREETING = "Hi, thanks for calling. How can I help you today?"
HOST = "127.0.0.1"
#: Generous: a busy two-core box may take seconds for a turn.
ANSWER_TIMEOUT_S = 20.0
TURN_TIMEOUT_S = 90.0
END_TIMEOUT_S = 10.0
#: A person's pause after the agent's reply has ended, before saying the next thing.
PAUSE_S = 0.8
#: Events that carry a finished turn (published together by the call book, product/calls.py).
_TURN_EVENTS = frozenset({"transcript", "agent_text", "turn_latency", "barge_in"})
_STAGES = {
    "end_of_turn_wait": "wait",
    "stt": "stt",
    "llm_first_token": "llm 1st token",
    "tts_first_audio": "tts 1st audio",
}


def _console() -> Console:
    # Into a pipe or a file rich would cut lines at 80 columns; a reader wants them whole.
    return Console(
        file=sys.stdout, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200
    )


@dataclass
class _Tally:
    """What the demo saw of the call, for its verdict and summary."""

    call_id: str | None = None
    replies: int = 0
    ended: bool = False
    end_reason: str | None = None


class _Events:
    """The call book's events as they are published (its observers hear them synchronously); the
    demo's server has only the demo's call."""

    def __init__(self, observers: list[Callable[[CallEvent], None]]) -> None:
        self._observers = observers
        self._queue: asyncio.Queue[CallEvent] = asyncio.Queue()
        observers.append(self._queue.put_nowait)

    async def next(self, timeout: float) -> CallEvent | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def pending(self) -> CallEvent | None:
        return None if self._queue.empty() else self._queue.get_nowait()

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(self._queue.put_nowait)


class _Printer:
    """One line per event of the conversation."""

    def __init__(self, console: Console, tally: _Tally) -> None:
        self.console = console
        self.tally = tally

    def event(self, event: CallEvent) -> None:
        data = event.data
        if event.type == "transcript":
            self.console.print(Text.assemble(("  heard    ", "cyan"), str(data["text"])))
        elif event.type == "agent_text":
            line = Text.assemble(("agent     ", "bold magenta"), str(data["text"]))
            if data.get("interrupted"):
                line.append("  (interrupted)", style="yellow")
            self.console.print(line)
        elif event.type == "turn_latency":
            self.tally.replies += 1
            self.console.print(
                Text.assemble(("  latency  ", "green"), (f"{data['wire_ms']:.0f} ms", "bold green"),
                              (" from the caller's last word to the agent's first voiced packet", "dim"))
            )  # fmt: skip
        elif event.type == "barge_in":
            self.console.print(Text(f"  the caller talked over the reply: line silenced in "
                                    f"{data['decision_ms']:.0f} ms", style="yellow"))  # fmt: skip
        elif event.type == "call_ended":
            self.tally.ended, self.tally.end_reason = True, str(data.get("reason"))


async def _turn(events: _Events, printer: _Printer, timeout: float) -> bool:
    """Print the call's events until a turn is over (True) or the call ends or nothing comes (False)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        event = await events.next(remaining)
        if event is None:
            break
        printer.event(event)
        if event.type == "call_ended":
            return False
        if event.type in _TURN_EVENTS:
            # The turn's other events were published in the same breath: print them with it.
            while (more := events.pending()) is not None:
                printer.event(more)
                if more.type == "call_ended":
                    return False
            return True
    return False


async def _until_ended(events: _Events, printer: _Printer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not printer.tally.ended and (remaining := deadline - time.monotonic()) > 0:
        event = await events.next(remaining)
        if event is None:
            return
        printer.event(event)


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def demo_settings(sip_port: int, log_level: str) -> Settings:
    """Nothing configured but loopback: SIP on ``sip_port`` (UDP only), RTP from the default range,
    no control API, the call store at its default path, the agent greeting the caller."""
    from .config import ConfigError, build_settings

    try:
        return build_settings(
            {
                "sip": {"bind": HOST, "port": sip_port, "transports": ["udp"]},
                # A demo on a desk competes with nothing for the cores, and needs no privilege.
                "rtp": {"loop_nice": 0},
                "api": {"enabled": False},
                "agent": {"greeting": GREETING},
                # Greedy: the same reply to the same words on every run (the default 0.3 makes the
                # small model repeat the caller's words back about half the time).
                "llm": {"temperature": 0.0},
                "log_level": log_level,
            }
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _check_install(turns: int) -> list[Path]:
    """The models and the speech fixtures, or one line saying how to get them."""
    from .voice.models import missing_default_models

    missing = missing_default_models()
    if missing:
        names = ", ".join(str(path.relative_to(ROOT)) for path in missing[:3])
        raise click.ClickException(
            f"the voice models are not installed ({names}{', …' if len(missing) > 3 else ''}): "
            "run `make run` or `make install` first"
        )
    paths = [FIXTURES / name for name, _ in UTTERANCES[:turns]]
    absent = [str(path) for path in paths if not path.is_file()]
    if absent:
        raise click.ClickException(
            f"the demo's recorded speech is missing ({', '.join(absent)}): run it from a source checkout"
        )
    return paths


async def run_demo(turns: int, log_level: str, console: Console) -> str | None:
    """The demo; returns the call's id (None: the call never started)."""
    from .api.server import ApiBindError
    from .config import ConfigError
    from .demo_caller import Answered, DemoCaller, load_utterance
    from .server import Server
    from .sip.uri import SipUri
    from .voice.inference import ModelLoadError

    paths = _check_install(turns)
    audio = [load_utterance(path) for path in paths]
    port = _free_udp_port(HOST)
    settings = demo_settings(port, log_level)
    console.print(Text("sipagent demo", style="bold") + Text(": a server and a caller on loopback, "
                                                             "nothing configured", style="dim"))  # fmt: skip
    console.print(Text("  loading the voice models (Whisper, the language model, Piper)…", style="dim"))
    began = time.monotonic()
    try:
        server = Server(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    caller = DemoCaller(HOST)
    events = _Events(server.service.book.observers)
    tally = _Tally()
    printer = _Printer(console, tally)
    try:
        try:
            await server.start()
        except (ModelLoadError, ConfigError, ApiBindError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {HOST}:{port}: {exc}") from None
        await caller.start()
        loaded = f"  models loaded in {time.monotonic() - began:.1f} s; the server listens on {HOST}:{port}"
        console.print(Text(f"{loaded} (udp), the caller on {HOST}:{caller.sip_port}", style="dim"))
        target = SipUri(host=HOST, port=port, user="agent")
        console.print(Text(f"calling {target}…", style="dim"))
        outcome = await caller.dial(target, ANSWER_TIMEOUT_S)
        if not isinstance(outcome, Answered):
            status = getattr(outcome, "status", None)
            raise click.ClickException(f"the server did not answer the demo's call: {status or ''} "
                                       f"{outcome.reason}".replace("  ", " "))  # fmt: skip
        tally.call_id = outcome.call_id
        console.print(Text(f"answered: call {outcome.call_id}, {outcome.media.codec} over RTP", style="dim"))
        await _turn(events, printer, TURN_TIMEOUT_S)  # the greeting
        for (name, words), pcm in zip(UTTERANCES, audio, strict=False):
            if tally.ended:
                break
            await caller.wait_quiet(PAUSE_S, TURN_TIMEOUT_S)
            await asyncio.sleep(PAUSE_S)
            console.print(Text.assemble(("caller    ", "bold cyan"), (f"▶ fixtures/{name}", "cyan"),
                                        (f"  (a person saying \u201c{words}\u201d)", "dim")))  # fmt: skip
            await caller.say(pcm)
            if not await _turn(events, printer, TURN_TIMEOUT_S) and not tally.ended:
                console.print(Text(f"  no answer within {TURN_TIMEOUT_S:g} s", style="yellow"))
        if not tally.ended:
            await caller.wait_quiet(PAUSE_S, TURN_TIMEOUT_S)
            caller.hang_up()
            await _until_ended(events, printer, END_TIMEOUT_S)
            console.print(Text(f"hung up; the agent's voice came back for {caller.voiced_seconds:.1f} s of "
                               "RTP", style="dim"))  # fmt: skip
        else:
            console.print(Text(f"the server ended the call: {tally.end_reason}", style="yellow"))
        if server.store is not None:
            await asyncio.to_thread(server.store.flush, END_TIMEOUT_S)
    finally:
        events.close()
        caller.hang_up()
        await caller.close()
        await server.stop()  # hangs up what is left, commits the store's queue
    if tally.replies == 0:
        raise click.ClickException(
            "the agent answered no turn of the demo's call; run `sipagent demo --log-level info` to see why"
        )
    _summary(settings.store.path, tally.call_id, console)
    return tally.call_id


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _summary(store: Path, call_id: str | None, console: Console) -> None:
    """The turns' latencies as the store has them, and how to see the whole call again."""
    if call_id is None:
        return
    try:
        stored: StoredCall | None = StoreReader(store).call(call_id)
    except StoreError as exc:
        console.print(Text(f"the call store cannot be read: {exc}", style="yellow"))
        return
    if stored is None:
        console.print(Text(f"the call is not in {store}", style="yellow"))
        return
    turns = [turn for turn in stored.turns if not turn.scripted]
    console.print()
    console.print(latency_table(turns, summarize(turns)))
    console.print()
    console.print(Text.assemble("The call is stored in ", (str(store), "bold"), ". See it again with:"))
    console.print(Text(f"  sipagent show {call_id}", style="bold"))


def latency_table(turns: Sequence[StoredTurn], summary: LatencySummary) -> Table:
    """Each caller turn's wire latency and stages (ms), then their p50 and p90."""
    table = Table(title="latency (ms): the caller's last word to the agent's first voiced packet",
                  title_justify="left", box=None, pad_edge=False)  # fmt: skip
    table.add_column("turn", justify="right")
    table.add_column("the caller said")
    table.add_column("wire", justify="right", style="bold")
    for label in _STAGES.values():
        table.add_column(label, justify="right")
    for turn in turns:
        stages = [_ms(getattr(turn, f"{stage}_ms")) for stage in _STAGES]
        table.add_row(str(turn.turn), turn.caller, _ms(turn.latency_ms), *stages)
    for name in ("p50", "p90"):
        wire = None if summary.wire is None else getattr(summary.wire, name)
        spreads = [summary.stages.get(stage) for stage in _STAGES]
        cells = [_ms(None if s is None else getattr(s, name)) for s in spreads]
        table.add_row("", Text(name, style="bold"), _ms(wire), *cells)
    return table


@click.command()
@click.option(
    "--turns",
    type=click.IntRange(1, len(UTTERANCES)),
    default=len(UTTERANCES),
    show_default=True,
    help="How many things the caller says.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="The server's logging (on stderr).",
)
def demo(turns: int, log_level: str) -> None:
    """Call the agent on loopback with recorded human speech, nothing configured: print the
    conversation live with each turn's latency, the latency table, and how to see the stored call."""
    from .logs import LogSetup, install_logging

    install_logging(LogSetup(log_level))  # masked like serve's (numbers, credentials)
    console = _console()
    try:
        asyncio.run(run_demo(turns, log_level, console))
    except KeyboardInterrupt:
        # asyncio.run cancelled the demo, which hung up and stopped the server on its way out.
        console.print(Text("interrupted: the call was hung up and the server stopped", style="yellow"))
        raise click.exceptions.Exit(130) from None


__all__ = ["UTTERANCES", "demo", "demo_settings", "latency_table", "run_demo"]
