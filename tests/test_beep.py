"""The beep and SIT detector (sipagent/voice/beep.py) and the tone classifier (sipagent/voice/tones.py).

Synthetic tones at 8 kHz through G.711, with line noise; real speech from a fixture's caller leg.
Everything is seeded: the same frames give the same decisions on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sipagent.errors import SipAgentError
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp import g711
from sipagent.rtp.frames import SAMPLES_PER_FRAME
from sipagent.voice.beep import Beep, BeepConfig, BeepDetector, Sit
from sipagent.voice.tones import ToneClassifier, ToneConfig, ToneConfigError, ToneKind, analyse, same_tone

RATE = 8000
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
Signal = npt.NDArray[np.float64]

DTMF = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


def tone(freqs: Sequence[float], seconds: float, dbfs: float = -14.0) -> Signal:
    """Equal sines summing to ``dbfs`` peak, 5 ms raised-cosine ramps."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = (
        sum((np.sin(2 * np.pi * f * t) for f in freqs), np.zeros(len(t)))
        * 32767
        * 10 ** (dbfs / 20)
        / len(freqs)
    )
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 40))
    x[:40] *= ramp
    x[-40:] *= ramp[::-1]
    return np.asarray(x, dtype=np.float64)


def quiet(seconds: float) -> Signal:
    return np.zeros(round(seconds * RATE))


def line(x: Signal, seed: int = 1, hiss_dbfs: float = -55.0) -> npt.NDArray[np.int16]:
    """Add line hiss and pass through G.711 μ-law, padded to whole frames."""
    x = np.concatenate([x, quiet(((-len(x)) % SAMPLES_PER_FRAME) / RATE)])
    noisy = x + np.random.RandomState(seed).standard_normal(len(x)) * 32767 * 10 ** (hiss_dbfs / 20)
    pcm = np.clip(np.rint(noisy), -32768, 32767).astype(np.int16)
    return g711.decode(g711.encode(pcm, "PCMU"), "PCMU")


def frames(pcm: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    return [
        pcm[i : i + SAMPLES_PER_FRAME] for i in range(0, len(pcm) - SAMPLES_PER_FRAME + 1, SAMPLES_PER_FRAME)
    ]


def detect(x: Signal, config: BeepConfig | None = None, **kwargs: float) -> list[Beep | Sit]:
    detector = BeepDetector(config, started_at=0.0)
    events = []
    for index, frame in enumerate(frames(line(x, **kwargs))):  # type: ignore[arg-type]
        event = detector.push(frame, index * 0.02)
        if event is not None:
            events.append(event)
    return events


def speech() -> Signal:
    """Real speech: the caller leg of speech-librivox-0880 (a man reading), decoded."""
    leg = load_caller_leg(FIXTURES / "speech-librivox-0880.pcap")
    return np.concatenate([g711.decode(p.packet.payload, "PCMU") for p in leg.packets]).astype(np.float64)


BEEPS = [
    (1000.0, 0.5, 0.513),
    (400.0, 0.2, 0.9),
    (1400.0, 0.12, 0.3),
    (1990.0, 1.0, 0.2071),
    (850.0, 2.5, 0.04),
]


@pytest.mark.parametrize(("freq", "seconds", "onset"), BEEPS)
def test_a_beep_is_found_at_its_onset(freq: float, seconds: float, onset: float) -> None:
    events = detect(np.concatenate([quiet(onset), tone([freq], seconds), quiet(0.5)]))
    assert len(events) == 1
    beep = events[0]
    assert isinstance(beep, Beep)
    assert abs(beep.at - onset) <= 0.01, "onset to 10 ms (the brief allows 100)"
    assert abs(beep.at_ms - onset * 1000) <= 10
    assert abs(beep.freq_hz - freq) <= 2
    assert abs(beep.duration_ms - seconds * 1000) <= 30
    # Reported once the tone has ended: within the gap allowance after its end.
    assert beep.end <= onset + seconds + 0.001


def test_a_beep_right_after_speech_and_one_with_a_lost_packet() -> None:
    voice = speech()
    onset = len(voice) / RATE + 0.2037
    events = detect(np.concatenate([voice, quiet(0.2037), tone([1000.0], 0.5), quiet(0.5)]))
    assert [type(e) for e in events] == [Beep]
    assert abs(events[0].at - onset) <= 0.01
    # A packet lost inside the beep (a frame of silence, as before concealment): still one beep.
    signal = np.concatenate([quiet(0.3), tone([1000.0], 0.6), quiet(0.5)])
    signal[round(0.6 * RATE) : round(0.62 * RATE)] = 0.0
    events = detect(signal)
    assert len(events) == 1 and isinstance(events[0], Beep)
    assert abs(events[0].duration_ms - 600) <= 30


def test_a_beep_is_found_over_a_busy_line() -> None:
    # 20 dB over the hiss: the tone still holds far more than 80 % of each frame's energy.
    events = detect(np.concatenate([quiet(0.4), tone([1000.0], 0.4, -30.0), quiet(0.4)]), hiss_dbfs=-50.0)
    assert len(events) == 1 and isinstance(events[0], Beep)


def test_speech_is_never_a_beep() -> None:
    voice = speech()
    assert detect(voice) == []
    assert detect(voice * 2.0) == []  # loud
    assert detect(voice * 0.1) == []  # quiet


@pytest.mark.parametrize("digit", sorted(DTMF))
def test_dtmf_is_no_beep(digit: str) -> None:
    # Each digit held 0.5 s (longer than any keypress) at equal levels, then with 2 dB of twist.
    low, high = DTMF[digit]
    assert detect(np.concatenate([quiet(0.2), tone([low, high], 0.5), quiet(0.3)])) == []
    twisted = tone([low], 0.5, -17.0) + tone([high], 0.5, -15.0)
    assert detect(np.concatenate([quiet(0.2), twisted, quiet(0.3)])) == []


@pytest.mark.parametrize("pair", [(440.0, 480.0), (400.0, 450.0), (480.0, 620.0), (350.0, 440.0)],
                         ids=["us-ringback", "uk-ringback", "busy", "dial"])  # fmt: skip
def test_ringback_busy_and_dial_tones_are_no_beep(pair: tuple[float, float]) -> None:
    # Ringback's cadence (2 s on, 4 s off) and a continuous dial tone.
    cadence = np.concatenate(
        [quiet(0.3), tone(pair, 2.0, -19.0), quiet(4.0), tone(pair, 2.0, -19.0), quiet(0.3)]
    )
    assert detect(cadence) == []


def _note(f0: float, seconds: float, seed: int) -> Signal:
    """A note with harmonics (-6, -10, -14 dB) and a 5 Hz vibrato of 0.6 %."""
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.006 * np.sin(2 * np.pi * 5 * t + seed))) / RATE
    x = sum(10 ** (g / 20) * np.sin(h * phase) for h, g in ((1, 0), (2, -6), (3, -10), (4, -14)))
    return np.asarray(x * 32767 * 0.1, dtype=np.float64)


def test_music_like_greetings_are_no_beep() -> None:
    melody = np.concatenate([_note(f, 0.25, i) for i, f in enumerate((523.3, 659.3, 784.0, 1046.5, 784.0))])
    chord = _note(523.3, 1.0, 1) + _note(659.3, 1.0, 2) + _note(784.0, 1.0, 3)
    assert detect(np.concatenate([quiet(0.2), melody, chord, quiet(0.4)])) == []
    # Pure sine notes back to back are a sequence, not a beep (as SIT segments are).
    pure = np.concatenate([tone([f], 0.25) for f in (523.3, 659.3, 784.0, 1046.5)])
    assert [type(e) for e in detect(np.concatenate([quiet(0.2), pure, quiet(0.4)]))] == []


def test_sit_tones_are_reported_as_sit_not_beeps() -> None:
    segments = [tone([f], s, -18.0) for f, s in ((913.8, 0.274), (1370.6, 0.274), (1776.7, 0.380))]
    events = detect(np.concatenate([quiet(0.3), *segments, quiet(0.5)]))
    assert len(events) == 1
    sit = events[0]
    assert isinstance(sit, Sit)
    assert abs(sit.at - 0.3) <= 0.02
    assert [round(f) for f in sit.freqs] == [914, 1371, 1777]


def test_too_short_too_long_or_out_of_band_tones_are_no_beep() -> None:
    assert detect(np.concatenate([quiet(0.3), tone([1000.0], 0.08), quiet(0.4)])) == []  # a click of tone
    assert detect(np.concatenate([quiet(0.3), tone([1000.0], 4.0), quiet(0.4)])) == []  # a stuck tone
    assert detect(np.concatenate([quiet(0.3), tone([300.0], 0.5), quiet(0.4)])) == []
    assert detect(np.concatenate([quiet(0.3), tone([2600.0], 0.5), quiet(0.4)])) == []
    # Configurable: a 3 s cap lets a 4 s tone through when raised.
    long_ok = BeepConfig(max_ms=5000.0)
    assert len(detect(np.concatenate([quiet(0.3), tone([1000.0], 4.0), quiet(0.4)]), long_ok)) == 1


def test_two_beeps_apart_are_two_beeps_and_the_detector_keeps_them() -> None:
    detector = BeepDetector(started_at=1.0)
    pcm = line(np.concatenate([quiet(0.3), tone([1000.0], 0.3), quiet(0.5), tone([1000.0], 0.3), quiet(0.4)]))
    for index, frame in enumerate(frames(pcm)):
        detector.push(frame, 1.0 + index * 0.02)
    assert [round(e.at_ms, -1) for e in detector.events] == [300.0, 1100.0]


def test_beep_config_is_validated() -> None:
    with pytest.raises(ToneConfigError, match="min_hz") as caught:
        BeepConfig(min_hz=2500.0, max_hz=2000.0)
    assert isinstance(caught.value, SipAgentError) and isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="min_ms"):
        BeepConfig(min_ms=0.0)
    with pytest.raises(ValueError, match="concentration"):
        ToneConfig(concentration=0.2)


# --- the tone classifier ---------------------------------------------------------------------------


def classify(pcm: npt.NDArray[np.int16]) -> list[bool]:
    classifier = ToneClassifier()
    return [classifier.is_tone(f) for f in frames(pcm)]


def test_analyse_tells_single_dual_and_beating_tones() -> None:
    def look(x: Signal) -> tuple[ToneKind | None, tuple[float, ...]]:
        pcm = line(x)
        result = analyse(pcm[320:480], pcm[160:320])
        return result.kind, result.freqs

    kind, freqs = look(tone([1004.0], 0.2))
    assert kind is ToneKind.SINGLE and abs(freqs[0] - 1004.0) < 1.0
    kind, freqs = look(tone([697.0, 1209.0], 0.2))
    assert kind is ToneKind.DUAL and sorted(round(f) for f in freqs) == [697, 1209]
    kind, _ = look(tone([440.0, 480.0], 0.2))
    assert kind is ToneKind.DUAL, "two tones 40 Hz apart fall in one peak but beat"
    assert analyse(np.zeros(160, dtype=np.int16)).kind is None
    with pytest.raises(ValueError):
        analyse(np.zeros(100, dtype=np.int16))


def test_tones_are_kept_out_of_speech_and_speech_is_not_a_tone() -> None:
    for signal in (tone([1000.0], 0.5), tone(DTMF["5"], 0.2), tone([440.0, 480.0], 1.0, -19.0)):
        flags = classify(line(np.concatenate([quiet(0.1), signal, quiet(0.1)])))
        tone_frames = round(len(signal) / RATE / 0.02)
        # Confirmed from the third full frame of the tone on (its ramps are in the first and last).
        assert sum(flags) >= tone_frames - 4
    voice = classify(line(speech()))
    assert sum(voice) <= 1, "at most a frame of a held vowel, never a run"


def test_classifier_tracks_the_run_and_resets() -> None:
    classifier = ToneClassifier()
    pcm = line(tone([1000.0], 0.3))
    for frame in frames(pcm)[:6]:
        classifier.push(frame)
    assert classifier.in_tone and classifier.tone_kind is ToneKind.SINGLE
    assert classifier.run_frames >= 4
    classifier.reset()
    assert not classifier.in_tone and classifier.last is None
    assert same_tone((1000.0,), (1001.0,)) and not same_tone((1000.0,), (1010.0,))
    assert same_tone((448.0,), (485.0,), loose=True)
