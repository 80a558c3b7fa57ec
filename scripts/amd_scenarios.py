"""The labelled answering-machine scenarios ``make_amd_fixtures.py`` builds into ``fixtures/amd/``:
who answers (a person, a voicemail greeting, a carrier's message) and what the callee's audio is made
of (speech from Piper or from recordings, pauses, beeps, SIT tones, music, ringback, a busy room).
Data only: the builder turns each :class:`Scenario` into a capture and a manifest entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --- the scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """Piper's one voice, varied: ``length_scale`` (slower above 1) and ``pitch`` (higher above 1)."""

    length_scale: float = 1.0
    pitch: float = 1.0


@dataclass(frozen=True)
class Say:
    """Piper says ``text`` (sentence by sentence, with short seeded pauses between)."""

    text: str
    voice: Voice = Voice()


@dataclass(frozen=True)
class Clip:
    """A person's recorded speech from shared/speech (cut to ``cut_s``)."""

    clip: str
    text: str
    cut_s: tuple[float, float] | None = None


@dataclass(frozen=True)
class Pause:
    """Nothing but the line (and the room) for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Beep:
    """The answering machine's beep."""

    freq_hz: float = 1000.0
    seconds: float = 0.5
    level_dbfs: float = -14.0


@dataclass(frozen=True)
class SitTones:
    """Special Information Tones: three rising segments back to back (ANSI T1.401 "vacant code")."""

    segments: tuple[tuple[float, float], ...] = ((913.8, 0.274), (1370.6, 0.274), (1776.7, 0.380))
    level_dbfs: float = -18.0


@dataclass(frozen=True)
class Music:
    """A jingle before a greeting."""

    notes: tuple[float, ...] = (523.3, 659.3, 784.0, 1046.5)
    note_s: float = 0.22
    level_dbfs: float = -22.0


@dataclass(frozen=True)
class Ringback:
    """Ringback heard *after* the 200 OK (a carrier that answers before the callee does)."""

    seconds: float


Part = Say | Clip | Pause | Beep | SitTones | Music | Ringback


@dataclass(frozen=True)
class Scenario:
    """One fixture: who answers and how the line sounds."""

    name: str
    label: str  # human | machine
    kind: str  # live-answer | voicemail | carrier
    description: str
    parts: tuple[Part, ...]
    lead_s: float = 0.45  # from the 200 OK to the first part
    tail_s: float = 2.5  # after the last part
    early_media_s: float = 0.0  # ringback before the 200 OK
    room_snr_db: float | None = None  # the restaurant's background under everything after the answer
    loss: float = 0.0
    jitter_ms: float = 0.0
    level_dbfs: float = -20.0  # speech level (RMS of its loud frames)
    split: str = "tune"  # tune | holdout: the detector's defaults were chosen on "tune" alone


SAM, HIGH, LOW = Voice(), Voice(0.95, 1.10), Voice(1.05, 0.90)
FAST, SLOW, ALT = Voice(0.85, 1.04), Voice(1.15, 0.96), Voice(1.0, 1.16)
VM_TAIL, NO_BEEP_TAIL = 0.6, 1.5


def _human(name: str, description: str, *parts: Part, **options: Any) -> Scenario:
    return Scenario(name, "human", "live-answer", description, parts, **options)


def _machine(name: str, kind: str, description: str, *parts: Part, **options: Any) -> Scenario:
    tail = VM_TAIL if any(isinstance(p, Beep) for p in parts) else NO_BEEP_TAIL
    return Scenario(name, "machine", kind, description, parts, **{"tail_s": tail, **options})


# fmt: off
SCENARIOS: tuple[Scenario, ...] = (
    # Live answers: a short greeting, then the person waits for us.
    _human("h-hello", '"Hello?" and a wait', Say("Hello?")),
    _human("h-hello-twice", '"Hello?", 2.2 s of silence, "Hello?" again', Say("Hello?", HIGH), Pause(2.2),
           Say("Hello?", HIGH), tail_s=1.5, split="holdout"),
    _human("h-hi-sam", '"Hi, this is Sam."', Say("Hi, this is Sam.", LOW), lead_s=0.5),
    _human("h-sam-speaking", '"Hello, Sam speaking."', Say("Hello, Sam speaking.", HIGH), lead_s=0.7,
           level_dbfs=-24.0),
    _human("h-yeah", '"Yeah?"', Say("Yeah?", LOW), lead_s=0.35, split="holdout"),
    _human("h-hey", '"Hey."', Say("Hey.", ALT), lead_s=0.6, level_dbfs=-17.0),
    _human("h-hi-there", '"Hi there."', Say("Hi there.", FAST), lead_s=0.5, level_dbfs=-26.0),
    _human("h-good-morning", '"Good morning, this is Alex." (a long live answer)',
           Say("Good morning, this is Alex.", FAST), lead_s=0.55, split="holdout"),
    _human("h-silence-hello", '1.6 s of silence, then "Hello?"', Say("Hello?", SLOW), lead_s=1.6),
    _human("h-silence-hello-who", '2.0 s of silence, then "Hello? Who is this?"',
           Say("Hello? Who is this?", ALT), lead_s=2.0, split="holdout"),
    _human("h-busy-hello", 'a busy restaurant (12 dB SNR) and "Hello?"', Say("Hello?"), room_snr_db=12.0),
    _human("h-busy-hi-sam", 'a busy restaurant (15 dB SNR) and "Hi, this is Sam."',
           Say("Hi, this is Sam.", HIGH), room_snr_db=15.0, lead_s=0.6, split="holdout"),
    _human("h-busy-cards-003", "a busy restaurant (10 dB SNR), a person's short answer (cards-003, recorded)",
           Clip("cards-003", "seven of clubs"), room_snr_db=10.0, lead_s=0.3),
    _human("h-cards-001", "a person's short answer (cards-001, recorded)", Clip("cards-001", "ten of clubs"),
           lead_s=0.3, level_dbfs=-22.0),
    _human("h-cards-002", "a person's 1.5 s answer (cards-002, recorded)",
           Clip("cards-002", "four queen of clubs"), lead_s=0.25, split="holdout"),
    _human("h-numbers", "a person's two words (numbers, recorded, 0.44-1.28 s)",
           Clip("numbers", "(two spoken numbers)", (0.44, 1.28)), lead_s=0.5, level_dbfs=-25.0),
    _human("h-ringback-hello", '3 s of ringback as early media, then "Hello?" after the 200 OK',
           Say("Hello?", LOW), early_media_s=3.0, lead_s=0.4),
    _human("h-ringback-tail", 'ringback goes on 0.8 s after the 200 OK, then "Hello?"', Ringback(0.8),
           Pause(0.3), Say("Hello?", HIGH), lead_s=0.0, early_media_s=1.2, split="holdout"),
    _human("h-lossy-hi-sam", '"Hi, this is Sam." over 5 % loss and 20 ms jitter', Say("Hi, this is Sam."),
           loss=0.05, jitter_ms=20.0),
    _human("h-hello-anyone", '"Hello?", 1.6 s, "Hello, anyone there?"', Say("Hello?", FAST), Pause(1.6),
           Say("Hello, anyone there?", FAST), tail_s=1.5),
    _human("h-lossy-busy-yes", 'a busy restaurant (15 dB), "Yes, hello?" over 3 % loss and 30 ms jitter',
           Say("Yes, hello?", SLOW), room_snr_db=15.0, loss=0.03, jitter_ms=30.0, split="holdout"),
    # Voicemail greetings: short to long, a beep after most.
    _machine("m-vm-sam-beep", "voicemail", "a personal greeting (4.9 s) and a 1000 Hz beep",
             Say("Hi, you've reached Sam. I can't take your call right now. Please leave a message after "
                 "the tone."), Pause(0.35), Beep()),
    _machine("m-vm-alex-beep", "voicemail", "a long personal greeting and an 850 Hz beep",
             Say("Hello, you have reached the voicemail of Alex Chen. Please leave your name, number and a "
                 "short message, and I will call you back as soon as I can.", HIGH), Pause(0.5),
             Beep(850.0, 0.4), split="holdout"),
    _machine("m-vm-short-beep", "voicemail", 'a short greeting ("Sam here. Leave a message.") and a beep',
             Say("Sam here. Leave a message.", FAST), Pause(0.25), Beep(1000.0, 0.3)),
    _machine("m-vm-maria-beep", "voicemail", '"You\'ve reached Maria. Leave a message." and a beep',
             Say("You've reached Maria. Leave a message.", ALT), Pause(0.4), Beep(1200.0, 0.6),
             split="holdout"),
    _machine("m-vm-jordan", "voicemail", "a medium greeting, no beep",
             Say("Hi, it's Jordan. I'm away from my phone right now, so leave a message and I'll get back "
                 "to you.", LOW)),
    _machine("m-vm-long", "voicemail", "a long greeting (10 s), no beep",
             Say("Hello, and thank you for calling. You have reached the desk of Doctor Patel. I am either "
                 "on the other line or away from my desk. Please leave your name, your number, and the "
                 "reason for your call, and I will return it as soon as possible.", SLOW),
             level_dbfs=-23.0, split="holdout"),
    _machine("m-vm-rec-0880-beep", "voicemail",
             "a person's recorded greeting (librivox-0880) and a 1000 Hz beep",
             Clip("librivox-0880", "he was not an ill disposed young man"), Pause(0.3), Beep(), lead_s=0.6),
    _machine("m-vm-rec-0870", "voicemail", "a person's long recorded greeting (librivox-0870), no beep",
             Clip("librivox-0870", "and mister john dashwood had then leisure to consider how much there "
                  "might be prudently in his power to do for them"), lead_s=0.4, level_dbfs=-24.0),
    _machine("m-vm-rec-0890-beep", "voicemail",
             "a person's recorded greeting (librivox-0890) and a 1400 Hz beep",
             Clip("librivox-0890", "unless to be rather cold hearted and rather selfish is to be ill "
                  "disposed"), Pause(0.45), Beep(1400.0, 0.6), split="holdout"),
    _machine("m-vm-rec-goforward-beep", "voicemail",
             "a person's short recorded greeting (goforward, 1.9 s) and a 500 Hz beep",
             Clip("goforward", "go forward ten meters"), Pause(0.3), Beep(500.0, 0.35), lead_s=0.3),
    _machine("m-vm-extension-beep", "voicemail", "a voicemail system's default greeting and a beep",
             Say("The person at extension 4 5 6 7 is not available. Please leave a message after the tone. "
                 "When you are finished, hang up, or press pound for more options."), Pause(0.3), Beep()),
    _machine("m-vm-forwarded-beep", "voicemail", "the carrier's mailbox greeting and a beep",
             Say("Your call has been forwarded to an automated voice message system. 5 5 5, 0 1 0 0, is not "
                 "available. At the tone, please record your message.", HIGH), Pause(0.4), Beep(),
             split="holdout"),
    _machine("m-vm-lead-silence-beep", "voicemail", "1.4 s of silence, a greeting and a beep",
             Say("Hi, this is Dana. Please leave a message.", ALT), Pause(0.3), Beep(), lead_s=1.4),
    _machine("m-vm-music-beep", "voicemail", "a jingle with harmonics, a greeting and a beep",
             Music(), Pause(0.2), Say("Thanks for calling Green Valley Dental. Please leave a message."),
             Pause(0.3), Beep(), lead_s=0.3),
    _machine("m-vm-lossy-beep", "voicemail", "a greeting and a beep over 5 % loss and 30 ms jitter",
             Say("You've reached the Millers. We can't come to the phone. Leave a message.", LOW), Pause(0.3),
             Beep(), loss=0.05, jitter_ms=30.0, split="holdout"),
    _machine("m-vm-quiet-beep", "voicemail", "a quiet greeting (-30 dBFS) and a quiet beep (-24 dBFS)",
             Say("Hello. You have reached Chris. Leave a message after the beep.", FAST), Pause(0.3),
             Beep(1000.0, 0.5, -24.0), level_dbfs=-30.0),
    _machine("m-vm-high-beep", "voicemail", "a greeting and a short 1800 Hz beep (250 ms)",
             Say("Hey, it's Taylor. Tell me what you need and I'll call you back.", HIGH), Pause(0.3),
             Beep(1800.0, 0.25)),
    _machine("m-vm-ringback-beep", "voicemail", "2.5 s of ringback as early media, a greeting and a beep",
             Say("Hi, you have reached Robin. I'm not available right now. Please leave a message.", SLOW),
             Pause(0.3), Beep(), early_media_s=2.5, split="holdout"),
    _machine("m-vm-long-beep", "voicemail", "a greeting, then a long 1 s beep at 440 Hz",
             Say("Please leave your message for Pat after the tone.", LOW), Pause(0.6), Beep(440.0, 1.0)),
    # Carrier messages.
    _machine("c-sit-not-in-service", "carrier", "SIT tones and a not-in-service intercept",
             SitTones(), Pause(0.25), Say("The number you have dialed is not in service. Please check the "
                                          "number and try again."), lead_s=0.2),
    _machine("c-not-available", "carrier", '"The person you are calling is not available."',
             Say("The person you are calling is not available. Please try again later.", HIGH)),
    _machine("c-subscriber", "carrier", "ringback as early media, then the subscriber message",
             Say("The subscriber you have dialed cannot be reached at the moment. Please try again later.",
                 LOW), early_media_s=4.0, split="holdout"),
    _machine("c-wireless", "carrier", '"The wireless customer you are calling is not available."',
             Say("The wireless customer you are calling is not available. Please try your call again later.",
                 FAST), lead_s=0.3),
    _machine("c-sit-cannot-complete", "carrier", "SIT tones and a cannot-be-completed intercept",
             SitTones(((985.2, 0.380), (1428.5, 0.274), (1776.7, 0.380))), Pause(0.3),
             Say("We're sorry, your call cannot be completed as dialed. Please check the number and dial "
                 "again.", ALT), lead_s=0.3, split="holdout"),
    _machine("c-mailbox-full", "carrier", "a full-mailbox message",
             Say("The mailbox of 5 5 5, 0 1 2 3, is full and cannot accept any messages at this time. "
                 "Goodbye.", SLOW)),
    _machine("c-carrier-vm-beep", "voicemail", "a carrier mailbox's default greeting and a beep",
             Say("Please leave a message for 5 5 5, 0 1 2 3."), Pause(0.3), Beep(), split="holdout"),
)
# fmt: on
