"""The ``sipagent`` command: ``serve`` runs the server, ``call`` places one outbound test call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .cli_check import check_command
from .cli_control import COMMANDS
from .cli_reports import COMMANDS as REPORT_COMMANDS
from .config import ConfigError, Settings, load_settings
from .demo import demo as demo_command
from .replay.capture import CallerLeg
from .replay.impair import Impairments
from .replay.runner import ReplayEvent


def _settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _setup_logging(level: str, settings: Settings | None = None) -> None:
    """stderr at ``level``, masked (numbers, credentials, secrets); ``settings`` add the format
    (``log_format``) and the secret values to keep out (decision 0030)."""
    from .logs import LogSetup, install_logging, log_setup

    install_logging(log_setup(settings) if settings is not None else LogSetup(level))


_common = [
    click.option("--config", "config", type=click.Path(path_type=Path), help="TOML configuration file."),
    click.option("--sip-bind", help="Address to bind SIP listeners to (default 0.0.0.0)."),
    click.option("--sip-port", type=int, help="SIP port for UDP and TCP (default 5060)."),
    click.option("--tls-port", type=int, help="SIP port for TLS (default 5061)."),
    click.option(
        "--transport",
        "transports",
        multiple=True,
        type=click.Choice(["udp", "tcp", "tls"]),
        help="Transport to listen on (repeat; default udp and tcp).",
    ),
    click.option("--tls-cert", type=click.Path(path_type=Path), help="PEM certificate for the TLS listener."),
    click.option("--tls-key", type=click.Path(path_type=Path), help="PEM key for the TLS listener."),
    click.option("--public-address", help="Address advertised in Via, Contact and SDP (NAT)."),
    click.option("--rtp-port-min", type=int, help="Lowest RTP port (default 10000)."),
    click.option("--rtp-port-max", type=int, help="Highest RTP port (default 20000)."),
    click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        help="Logging level (default info).",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        help="Log lines as text (default) or JSON Lines with each line's call.",
    ),
]


def common_options(func: Any) -> Any:
    """The options of serve."""
    for option in reversed(_common):
        func = option(func)
    return func


def _overrides(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "sip.bind": options.get("sip_bind"),
        "sip.port": options.get("sip_port"),
        "sip.tls_port": options.get("tls_port"),
        "sip.transports": list(options["transports"]) if options.get("transports") else None,
        "sip.tls_cert": str(options["tls_cert"]) if options.get("tls_cert") else None,
        "sip.tls_key": str(options["tls_key"]) if options.get("tls_key") else None,
        "sip.public_address": options.get("public_address"),
        "rtp.port_min": options.get("rtp_port_min"),
        "rtp.port_max": options.get("rtp_port_max"),
        "log_level": options.get("log_level"),
        "log_format": options.get("log_format"),
        "mode": options.get("mode"),
        "answer_delay": options.get("answer_delay"),
        "api.port": options.get("api_port"),
        "store.path": str(options["store_path"]) if options.get("store_path") else None,
    }


@click.group()
@click.version_option(package_name="sipagent")
def main() -> None:
    """Self-hosted SIP/RTP media server for AI phone agents."""


@main.command()
@common_options
@click.option(
    "--mode",
    type=click.Choice(["echo", "agent"]),
    help="What answered calls get: the phone agent (default) or their own audio back (trunk test).",
)
@click.option("--answer-delay", type=float, help="Seconds to ring before answering (default 0).")
@click.option("--api-port", type=click.IntRange(0, 65535), help="Control API port (default 8060; 0: any).")
@click.option(
    "--store-path", type=click.Path(path_type=Path), help="The call store's database (default data/calls.db)."
)
def serve(config: Path | None, **options: Any) -> None:
    """Answer calls until interrupted (SIGINT/SIGTERM hang up every call cleanly)."""
    settings = _settings(config, _overrides(options))
    _setup_logging(settings.log_level, settings)
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from .api.server import ApiBindError
    from .server import Server
    from .voice.inference import ModelLoadError

    try:
        server = Server(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        await server.start()
    except (ModelLoadError, ConfigError, ApiBindError) as exc:
        await server.stop()
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        await server.stop()
        raise click.ClickException(f"cannot listen: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("sipagent").info("shutting down")
    await server.stop()


@main.command()
@click.argument("capture", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--pipeline/--media-only",
    default=True,
    help="Answer with the voice pipeline (default; real time) or only run the media engine and VAD.",
)
@click.option(
    "--realtime/--fast",
    default=None,
    help="Pace the caller's audio in real time (the default with the pipeline) or as fast as possible "
    "on a simulated clock (the default with --media-only; not with the pipeline).",
)
@click.option(
    "--config", "config", type=click.Path(path_type=Path), help="TOML file: [stt] [llm] [tts] [agent]."
)
@click.option("--loss", type=click.FloatRange(0, 1), default=0.0, help="Drop this fraction of packets.")
@click.option(
    "--jitter-ms", type=click.FloatRange(0, 2000), default=0.0, help="Mean extra delay (exponential)."
)
@click.option(
    "--reorder", type=click.FloatRange(0, 1), default=0.0, help="Hold this fraction behind the next."
)
@click.option("--duplicate", type=click.FloatRange(0, 1), default=0.0, help="Deliver this fraction twice.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the impairments.")
@click.option("--ssrc", type=str, help="Replay the RTP flow with this SSRC (decimal or 0x hex).")
@click.option(
    "--echo-db",
    type=click.FloatRange(0, 60),
    help="Return the agent's voice on the caller leg with this echo return loss (dB), as a far-end hybrid.",
)
@click.option(
    "--echo-delay-ms", type=click.FloatRange(0, 1000), default=120.0, show_default=True, help="Echo delay."
)
@click.option(
    "--amd",
    is_flag=True,
    help="Answering-machine detection on the far end's leg from the 200 OK (fast, simulated clock): "
    "prints the amd result and any beep (docs/amd.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one object per event.")
def replay(
    capture: Path,
    pipeline: bool,
    realtime: bool | None,
    config: Path | None,
    loss: float,
    jitter_ms: float,
    reorder: float,
    duplicate: float,
    seed: int,
    ssrc: str | None,
    echo_db: float | None,
    echo_delay_ms: float,
    amd: bool,
    as_json: bool,
) -> None:
    """Feed CAPTURE's caller RTP through the media engine and the voice pipeline; print what happened."""
    from .pcapio import PcapError
    from .replay.capture import CaptureError, load_caller_leg
    from .replay.runner import Replay

    if amd:
        if realtime or echo_db is not None:
            raise click.UsageError("--amd replays on a simulated clock, without the agent: "
                                   "not with --realtime or --echo-db")  # fmt: skip
        _replay_amd(capture, ssrc, Impairments(loss=loss, jitter_ms=jitter_ms, reorder=reorder,
                                               duplicate=duplicate, seed=seed), as_json)  # fmt: skip
        return
    if pipeline and realtime is False:
        raise click.UsageError("the voice pipeline replays in real time (its models take real time); "
                               "use --media-only with --fast")  # fmt: skip
    if not pipeline and echo_db is not None:
        raise click.UsageError("--echo-db returns the agent's voice: it needs the pipeline")
    try:
        ssrc_value = int(ssrc, 0) if ssrc is not None else None
    except ValueError:
        raise click.BadParameter(f"{ssrc!r} is not a number", param_hint="--ssrc") from None
    try:
        leg = load_caller_leg(capture, ssrc=ssrc_value)
    except (PcapError, CaptureError) as exc:
        raise click.ClickException(str(exc)) from None
    impairments = Impairments(loss=loss, jitter_ms=jitter_ms, reorder=reorder, duplicate=duplicate, seed=seed)

    def emit(event: ReplayEvent) -> None:
        click.echo(event.as_json() if as_json else event.as_text())

    if not as_json:
        click.echo(
            f"{capture}: {len(leg.packets)} caller packets, {leg.codec} (PT {leg.payload_type})"
            f", telephone-event PT {leg.dtmf_payload_type}"
        )
        for note in leg.notes:
            click.echo(f"  {note}")
    if pipeline:
        settings = _settings(config, {})
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        asyncio.run(_replay_pipeline(settings, leg, impairments, emit, echo_db, echo_delay_ms))
        return
    runner = Replay(leg, impairments)
    if realtime:
        asyncio.run(runner.run_realtime(emit))
    else:
        runner.run_fast(emit)


def _replay_amd(capture: Path, ssrc: str | None, impairments: Impairments, as_json: bool) -> None:
    """``replay --amd``: the far end's leg through the media engine and the answering-machine detector."""
    from .pcapio import PcapError
    from .replay.amd_replay import AmdReplay, AmdReplayEvent, load_far_leg, silero_vad_factory
    from .replay.capture import CaptureError

    try:
        ssrc_value = int(ssrc, 0) if ssrc is not None else None
    except ValueError:
        raise click.BadParameter(f"{ssrc!r} is not a number", param_hint="--ssrc") from None
    try:
        far = load_far_leg(capture, ssrc=ssrc_value)
    except (PcapError, CaptureError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        vad = silero_vad_factory()
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None

    def emit(event: AmdReplayEvent) -> None:
        click.echo(event.as_json() if as_json else event.as_text())

    if not as_json:
        click.echo(f"{capture}: {len(far.leg.packets)} packets, 200 OK at {far.answered_at:+.3f} s")
        for note in far.notes:
            click.echo(f"  {note}")
    AmdReplay(far, impairments, vad=vad).run(emit)


async def _replay_pipeline(
    settings: Settings,
    leg: CallerLeg,
    impairments: Impairments,
    emit: Callable[[ReplayEvent], None],
    echo_db: float | None,
    echo_delay_ms: float,
) -> None:
    from .layers import conversation_config, inference_config, vad_factory
    from .replay.agent_replay import AgentReplay
    from .replay.echo_line import EchoLine
    from .voice.inference import ModelLoadError, start_inference

    try:
        inference = await start_inference(inference_config(settings))
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        echo = None
        if echo_db is not None:
            echo = EchoLine(leg.codec, return_loss_db=echo_db, delay_ms=echo_delay_ms)
        config = conversation_config(settings)
        await AgentReplay(leg, impairments, inference, config, echo=echo, vad=vad_factory(settings)).run(emit)
    finally:
        await inference.aclose()


# The commands that talk to a running server through its control API (sipagent/cli_control.py),
# and the reports read from the call store (sipagent/cli_reports.py).
for _command in (*COMMANDS, *REPORT_COMMANDS):
    main.add_command(_command)

# `demo`: a loopback call to an in-process server, nothing configured (sipagent/demo.py).
main.add_command(demo_command)

# `check` takes serve's options, so the line that would start the server checks what it would run.
main.add_command(check_command(serve, _overrides))
