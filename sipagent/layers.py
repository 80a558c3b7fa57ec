"""Each layer's own small configuration object, built from the settings in one place.

``config.py`` is a leaf that knows no layer; the server (and the replay command and the benchmarks,
which run the same layers without a server) turn :class:`~sipagent.config.Settings` into what each
layer takes: the inference process's :class:`InferenceConfig`, each call's
:class:`ConversationConfig` and voice detectors. Start-up checks that concern the whole process
(the media loop's priority, settings that send text off the box) live here too.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .config import Settings
from .logs import log_setup
from .model_paths import resolve_model_path
from .voice.chunker import ChunkerConfig
from .voice.conversation import ConversationConfig
from .voice.echo_guard import EchoConfig
from .voice.inference import InferenceConfig
from .voice.turns import TurnConfig
from .voice.vad import Vad

log = logging.getLogger("sipagent")


def warn_if_text_leaves(settings: Settings) -> bool:
    """Say at start-up when a setting sends what callers say off this machine (a remote LLM server
    gets every transcript and prompt); returns whether one does."""
    llm = settings.llm
    if llm.backend != "openai" or llm.openai is None:
        return False
    host = (urlsplit(llm.openai.base_url).hostname or "").strip("[]")
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if local:
        return False
    log.warning(
        "llm.openai.base_url is %s: every caller's words (transcripts) and the agent's prompts go to that "
        'server; audio stays here. Use the embedded model ([llm] backend = "llama") to keep them on this box',
        host,
    )
    return True


def raise_loop_priority(nice: int) -> bool:
    """Give the calling thread (the event loop's: it paces every call's RTP) the nice value ``nice``
    (decision 0017). Threads it starts afterwards inherit it; the inference process leaves it when
    it starts. Without the privilege (root or CAP_SYS_NICE) it stays as it is and a warning says so;
    returns whether the loop runs at ``nice``."""
    if nice >= 0:
        return nice == 0
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) <= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, thread, nice)
    except (OSError, AttributeError) as exc:
        log.warning(
            "the media loop stays at its nice value (rtp.loop_nice %d needs root or CAP_SYS_NICE: %s); "
            "packets may be late while the models or other programs keep the cores busy",
            nice,
            exc,
        )
        return False
    log.info("media loop at nice %d", nice)
    return True


def vad_factory(settings: Settings) -> Callable[[], Vad] | None:
    """How each call makes its voice detectors (None: the engine's default, WebRTC VAD). Silero's
    network is loaded once here and shared by every call's detectors."""
    agent = settings.agent
    if agent.vad != "silero":
        return None
    from .voice.silero_vad import SileroModel, SileroVad

    model = SileroModel()
    threshold = agent.silero_threshold
    return lambda: SileroVad(model, threshold=threshold)


def conversation_config(settings: Settings) -> ConversationConfig:
    """Each call's conversation behaviour, from ``[agent]`` and ``[llm]``."""
    agent = settings.agent
    return ConversationConfig(
        turn=TurnConfig(
            min_speech_ms=agent.min_speech_ms,
            min_barge_in_ms=agent.min_barge_in_ms,
            pause_ms=agent.pause_ms,
            end_of_turn_ms=agent.end_of_turn_ms,
        ),
        echo=EchoConfig(),
        vad_aggressiveness=agent.vad_aggressiveness,
        hold_after_ms=agent.hold_after_ms,
        greeting=agent.greeting,
        chunker=ChunkerConfig(
            first_min_words=agent.first_chunk_min_words, first_max_chars=agent.first_chunk_max_chars
        ),
        system_prompt=settings.llm.system_prompt,
        predict_turn_end=agent.turn_model != "none",
        end_of_turn_complete_ms=agent.end_of_turn_complete_ms,
        end_of_turn_incomplete_ms=agent.end_of_turn_incomplete_ms,
        turn_complete_threshold=agent.turn_complete_threshold,
    )


def inference_config(settings: Settings) -> InferenceConfig:
    """Where and how the models run, from ``[agent]``, ``[stt]``, ``[llm]`` and ``[tts]``."""
    agent = settings.agent
    return InferenceConfig(
        stt=settings.stt,
        llm=settings.llm,
        tts=settings.tts,
        where=agent.inference,
        workers=agent.workers,
        nice=agent.inference_nice,
        sched=agent.inference_sched,
        cpus=tuple(agent.inference_cpus) if agent.inference_cpus is not None else None,
        turn_model=agent.turn_model == "smart-turn",
        log_level=settings.log_level.upper(),
        logs=log_setup(settings),
        voices=route_voices(settings),
    )


def route_voices(settings: Settings) -> tuple[Path, ...]:
    """The Piper voices routes speak with besides ``[tts] voice`` (each loaded once)."""
    default = settings.tts.voice
    voices = {resolve_model_path(Path(route.voice)) for route in settings.routes if route.voice}
    return tuple(sorted(voice for voice in voices if voice != default))


__all__ = [
    "conversation_config",
    "inference_config",
    "raise_loop_priority",
    "vad_factory",
    "warn_if_text_leaves",
]
