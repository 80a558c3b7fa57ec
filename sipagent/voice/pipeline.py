"""Building the voice pipeline from the configuration: the process-wide models, once, and each
call's agent settings.

The models are loaded at start-up (seconds), warmed up with one tiny job each so the first caller
does not pay for lazy initialisation (CTranslate2 and onnxruntime allocate on their first run), and
shared by every call through one pool of worker threads.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..config import Settings
from .agent import AgentConfig, Models
from .llm import chat_model_from_settings
from .stt import WhisperTranscriber
from .tts import PiperSynthesizer
from .turns import TurnConfig

log = logging.getLogger("sipagent.voice")


def agent_config(settings: Settings) -> AgentConfig:
    """Each call's agent behaviour from ``[agent]`` (and the system prompt from ``[llm]``)."""
    agent = settings.agent
    return AgentConfig(
        turn=TurnConfig(
            min_speech_ms=agent.min_speech_ms,
            min_barge_in_ms=agent.min_barge_in_ms,
            pause_ms=agent.pause_ms,
            end_of_turn_ms=agent.end_of_turn_ms,
        ),
        vad_aggressiveness=agent.vad_aggressiveness,
        hold_after_ms=agent.hold_after_ms,
        greeting=agent.greeting,
        system_prompt=None,  # the model's own default (evaluated once at load): settings.llm.system_prompt
    )


def load_models(settings: Settings) -> Models:
    """Load STT, LLM and TTS (blocking, seconds: call it off the event loop) and warm them up."""
    started = time.perf_counter()
    transcriber = WhisperTranscriber.from_settings(settings.stt)
    synthesizer = PiperSynthesizer.from_settings(settings.tts)
    chat = chat_model_from_settings(settings.llm)
    # Half a second of faint noise: the first transcription allocates the encoder's buffers.
    rng = np.random.default_rng(0)
    transcriber.transcribe((rng.normal(0, 30, 4000)).astype(np.int16))
    for _ in synthesizer.synthesize("Hello."):
        pass
    executor = ThreadPoolExecutor(max_workers=settings.agent.workers, thread_name_prefix="sipagent-infer")
    log.info(
        "voice models ready in %.1f s: stt %s, llm %s, tts %s",
        time.perf_counter() - started,
        settings.stt.model.name,
        settings.llm.model.name if settings.llm.backend == "llama" else f"openai:{settings.llm.openai}",
        settings.tts.voice.name,
    )
    return Models(transcriber=transcriber, chat=chat, synthesizer=synthesizer, executor=executor)


def close_models(models: Models) -> None:
    """Stop the worker threads (after every call's agent closed) and free the models."""
    models.executor.shutdown(wait=True, cancel_futures=True)
    models.chat.close()
