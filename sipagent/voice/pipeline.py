"""Building the voice pipeline from the configuration: the process-wide models, once, and each
call's agent settings.

The models are loaded at start-up (seconds), warmed up with one tiny job each so the first caller
does not pay for lazy initialisation (CTranslate2 and onnxruntime allocate on their first run), and
shared by every call through one pool of worker threads: in a process of their own
(``[agent] inference = "process"``, the default; :mod:`.inference_process`) or in the server's
(``"threads"``). Decision 0011 has the measurements behind the default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..config import Settings
from .agent import AgentConfig, Models
from .llm import chat_model_from_settings
from .spoken import ChunkerConfig
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
        chunker=ChunkerConfig(
            first_min_words=agent.first_chunk_min_words, first_max_chars=agent.first_chunk_max_chars
        ),
        system_prompt=None,  # the model's own default (evaluated once at load): settings.llm.system_prompt
    )


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the file or setting."""


def lower_thread_priority(nice: int) -> None:
    """Give the calling thread the nice value ``nice`` (Linux; elsewhere, or not allowed: nothing).

    Runs first in every inference thread: on Linux the nice value is per thread, and the
    threads CTranslate2, onnxruntime and llama.cpp start from here inherit it. The event loop's
    thread keeps its own, so when models and media want the same core the 20 ms packets win."""
    if nice:
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: run as is
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def load_models(settings: Settings) -> Models:
    """Load STT, LLM and TTS (blocking, seconds: call it off the event loop) and warm them up, where
    ``agent.inference`` says: in the inference process, or here."""
    if settings.agent.inference == "process":
        from .inference_process import start_inference_process

        return start_inference_process(settings)
    return load_models_here(settings)


def load_models_here(settings: Settings) -> Models:
    """Load the models into this process (the inference process calls it too).

    The loading runs in one of the inference threads, so the models' own thread pools are made
    there and share its lower priority (``agent.inference_nice``).
    """
    nice = settings.agent.inference_nice
    if settings.agent.gil_switch_ms is not None:
        # The models' Python parts (llama-cpp-python's per-token loop, tokenizers, Piper's glue)
        # hold the GIL in bursts of up to CPython's 5 ms, which the media loop waits out; a shorter
        # interval trades that for slower inference (decision 0009 has the figures).
        sys.setswitchinterval(settings.agent.gil_switch_ms / 1000)
    executor = ThreadPoolExecutor(
        max_workers=settings.agent.workers,
        thread_name_prefix="sipagent-infer",
        initializer=lower_thread_priority,
        initargs=(nice,),
    )
    try:
        return executor.submit(_load, settings, executor).result()
    except (OSError, RuntimeError, ValueError) as exc:  # missing files, bad template, no CUDA
        executor.shutdown(wait=False, cancel_futures=True)
        raise ModelLoadError(f"cannot load the voice models: {exc}") from exc
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise


def _load(settings: Settings, executor: ThreadPoolExecutor) -> Models:
    started = time.perf_counter()
    transcriber = WhisperTranscriber.from_settings(settings.stt)
    synthesizer = PiperSynthesizer.from_settings(settings.tts)
    chat = chat_model_from_settings(settings.llm)
    # Half a second of faint noise: the first transcription allocates the encoder's buffers.
    rng = np.random.default_rng(0)
    transcriber.transcribe((rng.normal(0, 30, 4000)).astype(np.int16))
    for _ in synthesizer.synthesize("Hello."):
        pass
    log.info(
        "voice models ready in %.1f s: stt %s, llm %s, tts %s",
        time.perf_counter() - started,
        settings.stt.model.name,
        settings.llm.model.name
        if settings.llm.backend == "llama" or settings.llm.openai is None
        else f"openai {settings.llm.openai.model}",
        settings.tts.voice.name,
    )
    return Models(transcriber=transcriber, chat=chat, synthesizer=synthesizer, executor=executor)


def close_models(models: Models) -> None:
    """Stop the worker threads (after every call's agent closed) and free the models (or stop the
    inference process holding them)."""
    models.executor.shutdown(wait=True, cancel_futures=True)
    models.chat.close()
    if models.stop is not None:
        models.stop()
