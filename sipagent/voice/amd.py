"""Answering-machine detection for outbound calls: human, machine or uncertain from the first seconds.

It starts at the 200 OK, never on early media: ringback and "please hold" announcements before the
answer say nothing about who answers. From then on it is fed every 20 ms frame of the callee with
its time ``now``, as the rest of the voice engine is (sans-IO: no clock, no thread), and decides
once. The rules are Asterisk's ``app_amd`` (its parameters and defaults below; the code is ours, the
algorithm is described in its documentation), on a voice decision per frame:

* **initial silence**: no word within ``initial_silence_ms`` of the answer: a machine (a mailbox
  that takes its time; a person says something at once).
* **greeting**: once the first word is heard, ``greeting_ms`` of voice in total: a machine (a
  person answers "Hello?" or "Hi, this is Sam" and waits; a mailbox keeps talking).
* **after-greeting silence**: a short greeting followed by ``after_greeting_silence_ms`` of silence:
  a human (waiting for us to speak).
* **words**: a run of voice of at least ``min_word_length_ms`` after at least
  ``between_words_silence_ms`` of silence is a word; more than ``maximum_number_of_words``: a
  machine; one word longer than ``maximum_word_length_ms``: a machine.
* **total analysis time**: no decision by ``total_analysis_time_ms``: uncertain.

Beyond Asterisk: tones are not voice (a :class:`~sipagent.voice.tones.ToneClassifier` keeps a
beep, ringback or DTMF from counting as words); a **beep** (:mod:`sipagent.voice.beep`) or carrier
**SIT** tones mean a machine at once; and :meth:`AnsweringMachineDetector.on_transcript` lets the
STT's words decide while the sound has not ("leave a message", "not available", "after the tone"
mean a machine; a lone "hello?" followed by silence, a human).

The voice decision is an injected ``is_speech(frame)`` (Silero VAD in ``sipagent replay --amd``),
or by default :class:`EnergyGate`: a frame ``gate_db`` above the line's noise floor and above
``silence_threshold_dbfs`` (Asterisk's ``silence_threshold``, 256 in 16-bit units of mean
amplitude, is about -42 dBFS).

:class:`AmdSession` wraps the detector, the beep detector and the per-call policy
(``hangup | leave-message | continue``) for the conversation engine: see its docstring.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import SipAgentError
from ..rtp.frames import FRAME_SECONDS, Pcm
from .beep import Beep, BeepConfig, BeepDetector, Sit, ToneEvent
from .tones import ToneClassifier

AmdKind = Literal["human", "machine", "uncertain"]
AmdPolicy = Literal["hangup", "leave-message", "continue"]
POLICIES: tuple[AmdPolicy, ...] = ("hangup", "leave-message", "continue")


class AmdConfigError(SipAgentError, ValueError):
    """An answering-machine detection setting out of range; names the setting."""


@dataclass(frozen=True)
class AmdConfig:
    """The detector's parameters, in Asterisk's names (milliseconds unless said otherwise).

    The defaults were tuned on ``fixtures/amd`` (``scripts/bench_amd.py``; docs/amd.md has the
    table); Asterisk's own defaults are in the comments.
    """

    initial_silence_ms: int = 2500  # Asterisk 2500
    greeting_ms: int = 1200  # Asterisk 1500 (Silero counts less of a word as voice than its DSP)
    after_greeting_silence_ms: int = 800  # Asterisk 800
    total_analysis_time_ms: int = 5000  # Asterisk 5000
    min_word_length_ms: int = 100  # Asterisk 100
    between_words_silence_ms: int = 50  # Asterisk 50
    maximum_number_of_words: int = 3  # Asterisk 2 ("Hi, this is Sam." is two or three)
    maximum_word_length_ms: int = 5000  # Asterisk 5000
    silence_threshold_dbfs: float = -42.0  # Asterisk 256 (mean amplitude, 16-bit)
    #: The energy gate (when no ``is_speech`` is given): this far above the noise floor is voice.
    gate_db: float = 9.0
    #: How fast the gate's floor creeps up under steady noise.
    floor_rise_db_per_s: float = 3.0
    #: A beep (or SIT) before any decision means a machine.
    beep_means_machine: bool = True

    def __post_init__(self) -> None:
        for name in (
            "initial_silence_ms",
            "greeting_ms",
            "after_greeting_silence_ms",
            "total_analysis_time_ms",
            "min_word_length_ms",
            "between_words_silence_ms",
            "maximum_word_length_ms",
        ):
            if getattr(self, name) <= 0:
                raise AmdConfigError(f"amd.{name} must be positive, got {getattr(self, name)}")
        if self.maximum_number_of_words < 1:
            raise AmdConfigError(
                f"amd.maximum_number_of_words must be at least 1, got {self.maximum_number_of_words}"
            )
        if not -90.0 <= self.silence_threshold_dbfs <= 0.0:
            raise AmdConfigError(
                f"amd.silence_threshold_dbfs must be in [-90, 0], got {self.silence_threshold_dbfs}"
            )
        if self.gate_db < 0 or self.floor_rise_db_per_s < 0:
            raise AmdConfigError("amd.gate_db and amd.floor_rise_db_per_s must not be negative")


@dataclass(frozen=True)
class AmdResult:
    """The decision: ``kind``, ``after_ms`` after the 200 OK, and why (Asterisk's AMDCAUSE style)."""

    kind: AmdKind
    after_ms: float
    reason: str
    #: When it was decided, on the clock of ``now``.
    at: float


def _dbfs(frame: Pcm) -> float:
    samples = frame.astype(np.float64)
    rms = math.sqrt(float(np.dot(samples, samples)) / max(len(samples), 1))
    return 20 * math.log10(max(rms, 1e-3) / 32768.0)


class EnergyGate:
    """Voice by level: ``gate_db`` above a floor that drops to quieter frames at once and rises
    slowly under steady noise (so noise becomes the floor while speech, which dips between
    syllables, never does), and never below ``threshold_dbfs``."""

    def __init__(
        self, *, threshold_dbfs: float = -42.0, gate_db: float = 9.0, floor_rise_db_per_s: float = 3.0
    ):
        self.threshold_dbfs = threshold_dbfs
        self.gate_db = gate_db
        self.rise_db = floor_rise_db_per_s * FRAME_SECONDS
        #: The noise floor in dBFS (None before the first frame).
        self.floor: float | None = None

    def is_speech(self, frame: Pcm) -> bool:
        """True when the frame is loud enough over the floor to be voice."""
        level = _dbfs(frame)
        floor = self.floor
        floor = level if floor is None or level < floor else floor + self.rise_db
        self.floor = floor
        return level >= self.threshold_dbfs and level >= floor + self.gate_db


#: Phrases only a recording says (greetings, mailbox prompts, carrier intercepts), as the STT
#: writes them (lower case, punctuation dropped).
MACHINE_PHRASES: tuple[str, ...] = (
    "leave a message", "leave your message", "leave me a message", "leave your name", "leave a brief",
    "after the tone", "after the beep", "at the tone", "at the beep", "record your message",
    "voicemail", "voice mail", "mailbox", "message system", "answering machine",
    "you have reached", "you've reached", "youve reached", "you reached",
    "not available", "unavailable", "can't take your call", "cannot take your call", "cant take your call",
    "can't come to the phone", "unable to take", "unable to answer", "get back to you", "call you back",
    "is not in service", "no longer in service", "cannot be completed", "can't be completed",
    "try again later", "try your call again", "the number you have dialed", "the number you dialed",
    "the person you are calling", "the subscriber", "the wireless customer", "press pound",
)  # fmt: skip
#: Words a person answers the phone with; a transcript of one or two of these alone is a person.
HUMAN_GREETINGS = frozenset({"hello", "hi", "hey", "hiya", "yes", "yeah", "yep", "speaking", "hallo", "allo"})
#: Carrier phrases: no mailbox follows, so there is no message to leave.
CARRIER_PHRASES: tuple[str, ...] = (
    "is not in service", "no longer in service", "cannot be completed", "can't be completed",
    "the number you have dialed", "the number you dialed", "try again later", "try your call again",
    "the wireless customer", "the person you are calling", "the subscriber",
)  # fmt: skip


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def machine_phrase(text: str) -> str | None:
    """The first machine phrase in ``text``, or None."""
    words = _normalise(text)
    return next((p for p in MACHINE_PHRASES if p in words), None)


class AnsweringMachineDetector:
    """One outbound call's answering-machine detection (see the module docstring).

    Feed :meth:`push` every 20 ms frame from the 200 OK on (the jitter buffer's silence frames
    too: time passes in them), each with its ``now``; it returns the :class:`AmdResult` once, then
    None. :meth:`note_tone_event` and :meth:`on_transcript` may decide too.
    """

    def __init__(
        self,
        config: AmdConfig | None = None,
        *,
        answered_at: float = 0.0,
        is_speech: Callable[[Pcm], bool] | None = None,
    ) -> None:
        """``answered_at``: the 200 OK on the clock of ``now``; ``is_speech``: a per-stream VAD
        (called on every frame, so a stateful one stays in step), else :class:`EnergyGate`."""
        self.config = config = config or AmdConfig()
        self.answered_at = answered_at
        gate = EnergyGate(
            threshold_dbfs=config.silence_threshold_dbfs,
            gate_db=config.gate_db,
            floor_rise_db_per_s=config.floor_rise_db_per_s,
        )
        self._vad = is_speech or gate.is_speech
        self._use_threshold = is_speech is not None
        self.tones = ToneClassifier()
        self.result: AmdResult | None = None
        #: The latest frame's voice decision (kept up after the decision, for the policy).
        self.voiced = False
        # Asterisk's state, in milliseconds.
        self.in_initial_silence = True
        self.in_greeting = False
        self.in_word = True  # Asterisk starts "in a word": the first one needs a silence before it
        self.words = 0
        self.voice_ms = 0.0
        self.consecutive_voice_ms = 0.0
        self.silence_ms = 0.0
        self.greeting_started_at: float | None = None

    # -- inputs ------------------------------------------------------------------------------------
    def push(self, frame: Pcm, now: float, *, tone: bool | None = None) -> AmdResult | None:
        """One 20 ms frame starting at ``now``; the decision when this frame makes it.

        ``tone``: whether the frame is a tone, if the caller already knows (an :class:`AmdSession`
        shares its beep detector's analysis); else the detector's own tone classifier says.
        """
        if tone is None:
            tone = self.tones.is_tone(frame)
        speech = self._vad(frame)
        if self._use_threshold and _dbfs(frame) < self.config.silence_threshold_dbfs:
            speech = False
        self.voiced = voiced = speech and not tone
        if self.result is not None or now < self.answered_at:
            return None
        return self._step(voiced, now, tone=tone)

    def note_tone_event(self, event: ToneEvent, now: float) -> AmdResult | None:
        """A beep or SIT was heard: a machine, unless already decided (or ``beep_means_machine`` off)."""
        if self.result is not None or not self.config.beep_means_machine:
            return None
        if isinstance(event, Beep):
            return self._decide("machine", now, f"BEEP-{event.freq_hz:.0f}Hz")
        return self._decide("machine", now, "SIT")

    def on_transcript(self, text: str, now: float) -> AmdResult | None:
        """What the STT heard so far: a machine phrase decides "machine"; one or two greeting words
        alone, once the line has gone quiet after them, decide "human"."""
        if self.result is not None:
            return None
        phrase = machine_phrase(text)
        if phrase is not None:
            return self._decide("machine", now, f"TRANSCRIPT-{phrase}")
        words = _normalise(text).replace("'", "").split()
        quiet = self.in_greeting and self.silence_ms >= self.config.after_greeting_silence_ms / 2
        if words and len(words) <= 2 and set(words) <= HUMAN_GREETINGS and quiet:
            return self._decide("human", now, f"TRANSCRIPT-{' '.join(words)}")
        return None

    # -- Asterisk's rules --------------------------------------------------------------------------
    def _step(self, voiced: bool, now: float, *, tone: bool = False) -> AmdResult | None:
        config = self.config
        frame_ms = FRAME_SECONDS * 1000
        elapsed_ms = (now - self.answered_at) * 1000 + frame_ms
        if elapsed_ms >= config.total_analysis_time_ms:
            return self._decide("uncertain", now, f"TOOLONG-{elapsed_ms:.0f}")
        if tone:
            # A tone is neither a word nor the quiet of a person waiting: a beep after a short
            # greeting must not run the after-greeting silence out before the beep is reported.
            if self.in_initial_silence and elapsed_ms >= config.initial_silence_ms:
                return self._decide(
                    "machine", now, f"INITIALSILENCE-{elapsed_ms:.0f}-{config.initial_silence_ms}"
                )
            return None
        if not voiced:
            self.silence_ms += frame_ms
            if self.silence_ms >= config.between_words_silence_ms:
                self.in_word = False
                self.consecutive_voice_ms = 0.0
            if self.in_initial_silence and elapsed_ms >= config.initial_silence_ms:
                return self._decide(
                    "machine", now, f"INITIALSILENCE-{elapsed_ms:.0f}-{config.initial_silence_ms}"
                )
            if self.in_greeting and self.silence_ms >= config.after_greeting_silence_ms:
                return self._decide(
                    "human", now, f"HUMAN-{self.silence_ms:.0f}-{config.after_greeting_silence_ms}"
                )
            return None
        self.consecutive_voice_ms += frame_ms
        self.voice_ms += frame_ms
        if self.consecutive_voice_ms >= config.min_word_length_ms and not self.in_word:
            self.words += 1
            self.in_word = True
        if self.consecutive_voice_ms >= config.maximum_word_length_ms:
            return self._decide("machine", now, f"MAXWORDLENGTH-{self.consecutive_voice_ms:.0f}")
        if self.words > config.maximum_number_of_words:
            return self._decide("machine", now, f"MAXWORDS-{self.words}-{config.maximum_number_of_words}")
        if self.in_greeting and self.voice_ms >= config.greeting_ms:
            return self._decide("machine", now, f"LONGGREETING-{self.voice_ms:.0f}-{config.greeting_ms}")
        if self.voice_ms >= config.min_word_length_ms:
            self.silence_ms = 0.0
        if self.consecutive_voice_ms >= config.min_word_length_ms and not self.in_greeting:
            self.in_initial_silence = False
            self.in_greeting = True
            self.greeting_started_at = now
        return None

    def _decide(self, kind: AmdKind, now: float, reason: str) -> AmdResult:
        self.result = AmdResult(kind, round((now - self.answered_at) * 1000, 1), reason, now)
        return self.result


@dataclass(frozen=True)
class AmdAction:
    """What the call does about the result, under its policy.

    ``proceed``: go on as with a person (the notify message, or the conversation); ``hang_up``;
    ``leave_message``: speak the message now (after the beep, or once the greeting has ended).
    """

    action: Literal["proceed", "hang_up", "leave_message"]
    at: float
    reason: str


AmdEvent = AmdResult | Beep | Sit | AmdAction


@dataclass(frozen=True)
class MessageTiming:
    """When ``leave-message`` speaks if no beep comes."""

    #: After a beep, wait this long (the recorder starts) before speaking.
    after_beep_ms: int = 200
    #: No beep: this much silence after the greeting's last voice and the message starts.
    after_greeting_silence_ms: int = 1500
    #: No beep and still talking: speak anyway this long after the answer.
    max_wait_ms: int = 30000


@dataclass
class AmdSession:
    """From the 200 OK: the detector, the beep detector and the call's policy, as one sans-IO part.

    The conversation engine creates one when the callee's 200 OK comes (``answered_at`` = its tick
    time), keeps the agent silent, and feeds :meth:`push` every inbound frame; it passes the STT's
    transcripts to :meth:`on_transcript` if it transcribes meanwhile. The events come back in order:
    the :class:`AmdResult` once, each :class:`~sipagent.voice.beep.Beep` or
    :class:`~sipagent.voice.beep.Sit`, and one :class:`AmdAction` that ends the session's say:

    * ``continue``: ``proceed`` at the decision, whatever it is (AMD only reports);
    * ``hangup``: ``hang_up`` on a machine, ``proceed`` on a human or uncertain;
    * ``leave-message``: ``proceed`` on a human or uncertain; on a machine, ``hang_up`` for a
      carrier's intercept (SIT, "not in service": nobody records), else ``leave_message`` once the
      beep has ended (+ ``after_beep_ms``), or after ``after_greeting_silence_ms`` of quiet when no
      beep comes, or at ``max_wait_ms`` at the latest.

    After the action, :meth:`push` still reports beeps but decides nothing more.
    """

    policy: AmdPolicy = "continue"
    config: AmdConfig = field(default_factory=AmdConfig)
    answered_at: float = 0.0
    is_speech: Callable[[Pcm], bool] | None = None
    beep_config: BeepConfig = field(default_factory=BeepConfig)
    timing: MessageTiming = field(default_factory=MessageTiming)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise AmdConfigError(f"amd policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        self.detector = AnsweringMachineDetector(
            self.config, answered_at=self.answered_at, is_speech=self.is_speech
        )
        self.beeps = BeepDetector(self.beep_config, started_at=self.answered_at)
        self.action: AmdAction | None = None
        self._last_voice = self.answered_at
        self._carrier = False
        self._speak_at: float | None = None

    @property
    def result(self) -> AmdResult | None:
        """The decision, once made."""
        return self.detector.result

    def push(self, frame: Pcm, now: float) -> list[AmdEvent]:
        """One 20 ms inbound frame starting at ``now`` (from the 200 OK on)."""
        events: list[AmdEvent] = []
        tone_event = self.beeps.push(frame, now)
        look = self.beeps.last
        if look is not None:
            self.detector.tones.observe(look)
        # A tone under way (a single one for the beep detector, any for the classifier, each from
        # its third frame) keeps the frame out of the detector's words and silences.
        tone = self.detector.tones.in_tone or self.beeps.in_tone
        result = self.detector.push(frame, now, tone=tone)
        if self.detector.voiced:
            self._last_voice = now + FRAME_SECONDS
        if result is not None:
            events.append(result)
        if tone_event is not None:
            events.append(tone_event)
            self._carrier |= isinstance(tone_event, Sit)
            decided = self.detector.note_tone_event(tone_event, now)
            if decided is not None:
                events.append(decided)
            if isinstance(tone_event, Beep) and self._speak_at is None:
                self._speak_at = now + self.timing.after_beep_ms / 1000
        events.extend(self._act(now))
        return events

    def on_transcript(self, text: str, now: float) -> list[AmdEvent]:
        """The STT's words so far (optional): they may decide, and they tell a carrier's message."""
        lowered = _normalise(text)
        self._carrier |= any(p in lowered for p in CARRIER_PHRASES)
        events: list[AmdEvent] = []
        result = self.detector.on_transcript(text, now)
        if result is not None:
            events.append(result)
        events.extend(self._act(now))
        return events

    def _act(self, now: float) -> list[AmdEvent]:
        result = self.detector.result
        if self.action is not None or result is None:
            return []
        if self.policy == "continue" or result.kind != "machine":
            return [self._take("proceed", now, result.reason)]
        if self.policy == "hangup":
            return [self._take("hang_up", now, result.reason)]
        if self._carrier:
            return [self._take("hang_up", now, "carrier message: nobody records")]
        timing = self.timing
        if self._speak_at is not None and now >= self._speak_at:
            return [self._take("leave_message", now, "after the beep")]
        if self._speak_at is None and (now - self._last_voice) * 1000 >= timing.after_greeting_silence_ms:
            return [self._take("leave_message", now, "greeting over, no beep")]
        if (now - self.answered_at) * 1000 >= timing.max_wait_ms:
            return [self._take("leave_message", now, "still talking: waited long enough")]
        return []

    def _take(
        self, action: Literal["proceed", "hang_up", "leave_message"], now: float, reason: str
    ) -> AmdAction:
        self.action = AmdAction(action, now, reason)
        return self.action


__all__ = [
    "CARRIER_PHRASES",
    "HUMAN_GREETINGS",
    "MACHINE_PHRASES",
    "POLICIES",
    "AmdAction",
    "AmdConfig",
    "AmdConfigError",
    "AmdEvent",
    "AmdKind",
    "AmdPolicy",
    "AmdResult",
    "AmdSession",
    "AnsweringMachineDetector",
    "EnergyGate",
    "MessageTiming",
    "machine_phrase",
]
