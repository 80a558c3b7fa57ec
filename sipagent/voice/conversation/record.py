"""What one turn of a call was and how long it took: the engine's report of each exchange.

Every time here is a ``now`` the engine was given (the call's tick or the moment a result came
in), so the same inputs give the same record to the microsecond, and a host that knows when
packets crossed the wire turns the RTP timestamps into on-the-wire figures.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from ...rtp.frames import FRAME_SECONDS


class Outcome(enum.Enum):
    """How a turn ended."""

    ANSWERED = "answered"  # the reply was heard in full
    INTERRUPTED = "interrupted"  # the caller (or the call's end) cut it; ``reply`` is what was heard
    UNANSWERED = "unanswered"  # the turn was heard as silence or noise: nothing to answer
    FAILED = "failed"  # a model failed or did not answer in time (``error`` says which)


@dataclass
class TurnRecord:
    """One exchange and how long it took (times in seconds on the call's clock, durations in ms)."""

    turn: int
    transcript: str = ""
    #: What the caller heard of the reply (whole chunks, and the share of words of a cut one).
    reply: str = ""
    #: The whole reply as the agent made it (every chunk handed to TTS): ``reply`` is its heard part.
    said: str = ""
    outcome: Outcome = Outcome.ANSWERED
    #: The reply started at the pause, before the end of the turn.
    speculative: bool = False
    #: Said by the agent unprompted (a greeting, text spoken from outside the call): no caller turn.
    scripted: bool = False
    error: str | None = None
    end_of_turn_wait_ms: float | None = None
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    #: From the LLM's start to the first chunk of text handed to TTS.
    first_sentence_ms: float | None = None
    tts_first_audio_ms: float | None = None
    #: The caller's last voiced frame (the VAD's, its tick and RTP timestamp).
    last_voiced_at: float | None = None
    last_voiced_rtp_ts: int | None = None
    #: Where the caller's speech really ended, estimated against the call's own noise floor (the
    #: VAD's last voiced frame can trail it by its hangover on a noisy line).
    speech_end_at: float | None = None
    speech_end_rtp_ts: int | None = None
    #: When the reply's first voiced frame left (its tick).
    first_voiced_out_at: float | None = None
    #: From :attr:`speech_end_at` to :attr:`first_voiced_out_at`: what the caller waited, as this
    #: end knows it (the jitter buffer's delay before it is not counted).
    latency_ms: float | None = None
    #: The caller's voice over this reply: when the line was last silenced for it (hold or
    #: barge-in), and the first frame of that voice (its tick and RTP timestamp).
    stop_decided_at: float | None = None
    caller_onset_at: float | None = None
    caller_onset_rtp_ts: int | None = None
    #: How often the line was held for caller voice (a hold that resumed was a blip or backchannel).
    holds: int = 0
    #: The end-of-turn model's probability that the turn was complete (at its last pause), if asked.
    turn_complete_probability: float | None = None

    def voiced_out(self, at: float) -> None:
        """The reply's first voiced frame left at tick ``at``: what the caller waited."""
        self.first_voiced_out_at = at
        if self.speech_end_at is not None:
            # The caller's last loud frame ends a frame after its tick.
            self.latency_ms = (at - self.speech_end_at - FRAME_SECONDS) * 1000

    def stopped(self, at: float, onset: tuple[float | None, int | None]) -> None:
        """The line was silenced at ``at`` for caller voice that began at ``onset`` (tick, RTP ts)."""
        self.stop_decided_at = at
        self.caller_onset_at, self.caller_onset_rtp_ts = onset

    @property
    def interrupted(self) -> bool:
        """The caller heard only part of the reply."""
        return self.outcome is Outcome.INTERRUPTED

    def as_dict(self) -> dict[str, Any]:
        """For JSON logs and ``replay --json`` (floats to 0.1, the outcome by name)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, Outcome):
                value = value.value
            elif isinstance(value, float):
                value = round(value, 1) if key.endswith("_ms") else round(value, 4)
            out[key] = value
        return out


__all__ = ["Outcome", "TurnRecord"]
