"""How one call's conversation behaves: a small frozen object, built once from the settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...config import DEFAULT_SYSTEM_PROMPT
from ..chunker import ChunkerConfig
from ..echo_guard import EchoConfig
from ..llm import ToolSpec
from ..turns import TurnConfig


@dataclass(frozen=True)
class ConversationConfig:
    """Per-call behaviour of the agent (the models are shared and configured elsewhere)."""

    turn: TurnConfig = field(default_factory=TurnConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
    vad_aggressiveness: int = 2
    #: Caller voice (past the echo guard) over the agent for this long silences the line at once,
    #: keeping the place; the turn detector then decides: barge-in (stop) or a blip (resume).
    hold_after_ms: float = 60.0
    #: Audio kept before the detected speech start, so STT hears the soft onset.
    preroll_ms: float = 200.0
    #: Longest caller turn transcribed (older audio is dropped).
    max_turn_s: float = 30.0
    #: Said when the call starts (None: wait for the caller).
    greeting: str | None = None
    #: The Piper voice this call speaks with (a path the inference process loaded; None: the
    #: default ``[tts] voice``).
    voice: str | None = None
    #: Tools the model may call (:mod:`sipagent.product.tools` builds them per route). The built-in
    #: ``end_call``, ``transfer_call`` and ``send_dtmf`` are carried out by the engine's commands;
    #: any other is a :class:`RunTool`. With tools, the caller's words reach the model quoted, as data.
    tools: tuple[ToolSpec, ...] = ()
    #: Tool calls carried out per reply; more are answered "not run" to the model.
    max_tool_calls: int = 3
    #: Said when a tool has not answered after ``filler_after_ms`` and the line is quiet.
    filler: str = "One moment."
    filler_after_ms: float = 700.0
    #: Keys that act without the model (``"0" -> "transfer:operator"``, ``"9" -> "end_call"``,
    #: ``"1" -> "say:Our hours are nine to five."``), pressed as the first key of an entry.
    keys: tuple[tuple[str, str], ...] = ()
    #: Other keys are collected into one entry, ended by ``#`` or this long without a key, and
    #: reach the model as the caller's turn ("The caller pressed 4 2 #.").
    dtmf_timeout_s: float = 3.0
    #: Said before hanging up when the model calls end_call without words, or the caller's key does.
    goodbye: str = "Goodbye."
    #: Said when a transfer did not happen (the call goes on).
    transfer_failed: str = "I'm sorry, I could not transfer your call. Let's carry on."
    #: Take turns with the caller. False: the call only speaks (a notification): the caller's voice
    #: neither interrupts it nor gets a reply.
    listen: bool = True
    #: How replies are cut for TTS. The first chunk ends at a clause after two words, else at a
    #: word by 16 characters (two or three words): every token waited for before it is ~10 ms more
    #: to the first audio, and Piper's time grows with the chunk (63 ms against 85 ms for the old 3
    #: words / 28 characters, issue 13), while the LLM has the next chunk ready long before those
    #: words have played.
    chunker: ChunkerConfig = field(
        default_factory=lambda: ChunkerConfig(first_min_words=2, first_max_chars=16)
    )
    #: The agent's instructions (the LLM's system prompt).
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    #: A model job that has not answered (or, for a reply, sent its next piece) in this long has
    #: failed: the turn is given up and logged rather than left waiting for ever.
    job_timeout_s: float = 15.0
    #: Frames this much louder than the call's noise floor are speech, for the estimate of where the
    #: caller's speech ended (:attr:`TurnRecord.speech_end_at`).
    speech_end_margin_db: float = 9.0
    #: Ask an end-of-turn model at each pause whether the caller's words so far make a finished
    #: turn (``PredictTurnEnd``); its verdict sets this pause's end-of-turn wait. Without an answer
    #: the wait stays ``turn.end_of_turn_ms``.
    predict_turn_end: bool = False
    #: The wait after a finished-sounding turn (probability at least ``turn_complete_threshold``;
    #: None: ``turn.end_of_turn_ms``), and after an unfinished-sounding one (decision 0015).
    end_of_turn_complete_ms: float | None = None
    end_of_turn_incomplete_ms: float = 800.0
    turn_complete_threshold: float = 0.5

    def __post_init__(self) -> None:
        names = ["hold_after_ms", "preroll_ms", "max_turn_s", "job_timeout_s", "speech_end_margin_db",
                 "end_of_turn_incomplete_ms", "filler_after_ms", "dtmf_timeout_s"]  # fmt: skip
        if self.end_of_turn_complete_ms is not None:
            names.append("end_of_turn_complete_ms")
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"ConversationConfig.{name} must be a positive number, got {value!r}")
        if not 0 <= self.vad_aggressiveness <= 3:
            raise ValueError(
                f"ConversationConfig.vad_aggressiveness must be 0-3, got {self.vad_aggressiveness}"
            )
        if self.greeting is not None and not self.greeting.strip():
            raise ValueError("ConversationConfig.greeting must not be empty (None for no greeting)")
        if not 0 < self.turn_complete_threshold < 1:
            raise ValueError("ConversationConfig.turn_complete_threshold must be between 0 and 1")
        if not self.system_prompt.strip():
            raise ValueError("ConversationConfig.system_prompt must not be empty")
        if self.max_tool_calls < 0:
            raise ValueError("ConversationConfig.max_tool_calls must not be negative")
