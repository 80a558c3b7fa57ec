"""Loading the voice models once per process, warm, and what the inference layer is configured with.

The models are loaded at start-up (seconds), warmed up with one tiny job each so the first caller
does not pay for lazy initialisation (CTranslate2 and onnxruntime allocate on their first run), and
shared by every call. Where they run (a process of their own, or threads of the server's) is
:mod:`.process` and :mod:`.local`; both load through :func:`load_models`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ...errors import SipAgentError
from ..llm import ChatModel
from ..llm_backends import chat_model_from_settings
from ..stt import Transcriber, WhisperTranscriber
from ..tts import PiperSynthesizer, Synthesizer

if TYPE_CHECKING:
    from ...config import LlmSettings, SttSettings, TtsSettings
    from ...logs import LogSetup

log = logging.getLogger("sipagent.voice")


class ModelLoadError(SipAgentError, RuntimeError):
    """A model could not be loaded; the message names the file or setting."""


@dataclass(frozen=True)
class InferenceConfig:
    """What the inference layer needs: the three models' sections and how to run them."""

    stt: SttSettings
    llm: LlmSettings
    tts: TtsSettings
    #: ``process``: the models in a process of their own; ``threads``: in this one.
    where: Literal["process", "threads"] = "process"
    #: Jobs run at once, shared by every call.
    workers: int = 4
    #: Nice value the models run at once loaded (they load at the server's own priority).
    nice: int = 5
    #: ``idle``: the inference process in SCHED_IDLE (only CPU time nothing else wants; starves
    #: when other programs keep the cores busy). ``normal``: the normal class at ``nice``.
    sched: Literal["normal", "idle"] = "normal"
    #: CPUs the inference process may run on (None: all).
    cpus: tuple[int, ...] | None = None
    #: Piper voices loaded besides ``tts.voice`` (routes that speak with another voice).
    voices: tuple[Path, ...] = ()
    #: Load Smart Turn, the end-of-turn model (``PredictTurnEnd`` jobs).
    turn_model: bool = False
    log_level: str = "INFO"
    #: How the inference process logs: the server's format, masking and secrets (None: text at
    #: ``log_level``, masked).
    logs: LogSetup | None = None


@dataclass
class LoadedModels:
    """The models of this process, loaded once and shared by every call."""

    transcriber: Transcriber
    chat: ChatModel
    synthesizer: Synthesizer
    #: Other voices by their path (``Synthesize.voice``).
    voices: dict[str, Synthesizer] = field(default_factory=dict)
    #: The end-of-turn model (Smart Turn), if configured.
    turn: TurnModel | None = None

    def close(self) -> None:
        """Free what the models hold (the LLM's context; the others are freed with the process)."""
        self.chat.close()


def load_models(config: InferenceConfig) -> LoadedModels:
    """Load STT, LLM and TTS here and warm them up (blocking, seconds: call it off the event loop).
    Raises :class:`ModelLoadError` naming what could not be loaded."""
    started = time.perf_counter()
    try:
        transcriber = WhisperTranscriber.from_settings(config.stt)
        synthesizer = PiperSynthesizer.from_settings(config.tts)
        voices: dict[str, Synthesizer] = {
            str(voice): PiperSynthesizer.from_settings(config.tts.model_copy(update={"voice": voice}))
            for voice in config.voices
        }
        chat = chat_model_from_settings(config.llm)
        turn = _load_turn_model() if config.turn_model else None
    except (OSError, RuntimeError, ValueError) as exc:  # missing files, bad template, no CUDA
        raise ModelLoadError(f"cannot load the voice models: {exc}") from exc
    # Half a second of faint noise: the first transcription allocates the encoder's buffers.
    rng = np.random.default_rng(0)
    transcriber.transcribe((rng.normal(0, 30, 4000)).astype(np.int16))
    for _ in synthesizer.synthesize("Hello."):
        pass
    if turn is not None:
        turn.probability(np.zeros(4000, dtype=np.int16) + 1)
    log.info(
        "voice models ready in %.1f s: stt %s, llm %s, tts %s",
        time.perf_counter() - started,
        _name(config.stt.model),
        f"openai {config.llm.openai.model}"
        if config.llm.backend == "openai" and config.llm.openai is not None
        else _name(config.llm.model),
        _name(config.tts.voice),
    )
    return LoadedModels(transcriber=transcriber, chat=chat, synthesizer=synthesizer, voices=voices, turn=turn)


class TurnModel(Protocol):
    """An end-of-turn model: the probability that a turn's 8 kHz audio so far is complete."""

    def probability(self, audio: npt.NDArray[np.int16]) -> float: ...


def _load_turn_model() -> TurnModel:
    from ..smart_turn import SmartTurn

    return SmartTurn()


def _name(path: Path) -> str:
    return path.name


def set_thread_nice(nice: int, thread_id: int | None = None) -> None:
    """Give one thread (default: the calling one) the nice value ``nice`` (Linux: nice is per
    thread; elsewhere, or not allowed: nothing). Threads started later by that thread inherit it."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, thread_id or threading.get_native_id(), nice)


def set_process_nice(nice: int) -> None:
    """Every thread of this process at nice ``nice`` (Linux reads them from /proc/self/task), so
    the pools the model runtimes started while loading follow too."""
    try:
        tasks = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        tasks = [threading.get_native_id()]
    for task in tasks:
        set_thread_nice(nice, task)


__all__ = ["InferenceConfig", "LoadedModels", "ModelLoadError", "load_models", "set_process_nice"]
