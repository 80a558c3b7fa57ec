"""The phone agent's fixtures: barge-in, interjections that must not interrupt, and echo.

Built by ``scripts/make_fixtures.py`` (which registers :data:`AGENT_FIXTURES` in its ``FIXTURES``)
from the helpers in ``scripts/fixturekit.py``, so they are deterministic to the byte like the
others. Only the caller's leg is in a capture; the agent's voice exists only when a test replays
the call against sipagent. The agent answers ~0.8-1.3 s after the caller's voice stops
(:data:`REPLY_AFTER_S`) and then talks for several seconds, so whatever the caller sends a
couple of seconds after an utterance is heard *while the agent is talking*:

* ``agent-barge-in``: utterance A, 2.5 s of line noise (the agent has been talking for a second or
  more by its end), utterance B over the agent's reply, 4 s of noise for the agent to answer B.
  Outbound speech should stop at ``barge_in_at_s``.
* ``agent-backchannel``: utterance A, then during the reply a single short real word (≤ 200 ms
  voiced, cut from a clip at its energy boundaries) and a synthetic cough, then 5 s of noise. Neither
  should interrupt the agent.
* ``agent-echo``: utterance A and 7 s of noise. The echo is the agent's own live voice, so it is
  added at replay time by a line-echo simulator; the manifest suggests its settings (``echo``).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
from fixturekit import (
    FULL_SCALE,
    LEAD_S,
    RATE,
    BuildContext,
    CallAudio,
    Fixture,
    Signal,
    dbfs,
    fade,
    noise,
    noise_floor,
    pad_to_frames,
    to_pcm,
    turn_record,
    voice_span,
)

#: When the agent starts its reply, seconds after the caller's voice activity ends.
REPLY_AFTER_S = (0.8, 1.3)

BARGE_IN_PAUSE_S = 2.5  # clip A's end to clip B's start
BARGE_IN_TAIL_S = 4.0  # the agent answers B

#: Interjections, seconds after turn A's voice activity ends (the agent is talking by then).
BACKCHANNEL_AFTER_S = 2.3
COUGH_AFTER_S = 3.6
BACKCHANNEL_TAIL_S = 5.0  # noise after the cough
WORD_CLIP, WORD_TEXT = "cards-001", "ten"  # its first word, "ten of clubs"
WORD_MAX_S = 0.2
WORD_ONSET_DBFS = -30.0  # a 10 ms frame this loud starts the word
STEP = RATE // 100  # 10 ms analysis frames for the word's boundaries

COUGH_S = 0.18
COUGH_ATTACK_S = 0.005
COUGH_DECAY_DB = 24.0  # exponential decay over the burst, then a 10 ms fade-out
COUGH_BAND_HZ = (200.0, 3000.0)
COUGH_PEAK_DBFS = -12.0  # sample peak, as the tone levels: amplitude = 32767 * 10**(dBFS/20)
COUGH_TAPS = 101  # band-pass FIR, Kaiser-windowed sinc

ECHO_TAIL_S = 7.0
#: Suggested settings of the replay's line-echo simulator (ITU-T G.168 allows ERL down to 6 dB).
ECHO_SETTINGS = {"return_loss_db": 12, "delay_ms": 120}


def _seed(label: str) -> np.random.RandomState:
    return np.random.RandomState(zlib.crc32(label.encode()))


def _turn(ctx: BuildContext, clip: str, samples: Signal, at: float) -> dict[str, Any]:
    """A caller turn's manifest record, as in ``two-turns``."""
    return turn_record(ctx, clip, samples, at)


def _reply_window(turn: dict[str, Any]) -> list[float]:
    end = float(turn["voice_activity_s"][1])
    return [round(end + REPLY_AFTER_S[0], 2), round(end + REPLY_AFTER_S[1], 2)]


def _entry(turns: list[dict[str, Any]], floor: float, **extra: Any) -> dict[str, Any]:
    clips = " + ".join(f"{t['clip']}.wav" for t in turns)
    return {
        "source": f"shared/speech/{clips}",
        "transcript": " ".join(str(t["transcript"]) for t in turns),
        "turns": turns,
        "agent_reply_expected_s": _reply_window(turns[0]),
        **extra,
        "noise_dbfs": dbfs(floor),
    }


def build_barge_in(ctx: BuildContext) -> CallAudio:
    """librivox-0880, 2.5 s of noise (the agent replies), cards-001 over the agent, 4 s of noise."""
    first, second = ctx.speech("librivox-0880"), ctx.speech("cards-001")
    rng = _seed("noise:agent-barge-in")
    floor = min(noise_floor(first), noise_floor(second))
    parts = [
        noise(rng, LEAD_S, floor),
        first,
        noise(rng, BARGE_IN_PAUSE_S, floor),
        second,
        noise(rng, BARGE_IN_TAIL_S, floor),
    ]
    body = pad_to_frames(np.concatenate(parts), rng, floor)
    second_at = LEAD_S + len(first) / RATE + BARGE_IN_PAUSE_S
    turns = [_turn(ctx, "librivox-0880", first, LEAD_S), _turn(ctx, "cards-001", second, second_at)]
    info = _entry(
        turns,
        floor,
        pause_s=BARGE_IN_PAUSE_S,
        barge_in_at_s=turns[1]["voice_activity_s"][0],
        note="turn B starts while the agent answers turn A (agent_reply_expected_s): outbound speech "
        "should stop at barge_in_at_s; the last 4 s leave room for the answer to B",
    )
    return CallAudio(to_pcm(body), manifest=info)


def _frame_levels(x: Signal, step: int) -> Signal:
    """dBFS of each whole ``step``-sample frame."""
    frames = x[: len(x) // step * step].reshape(-1, step)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9) / FULL_SCALE), dtype=np.float64)


def cut_word(speech: Signal) -> tuple[int, int]:
    """Sample bounds of the clip's first word, from its 10 ms frame levels.

    The cut starts one frame before the first frame above WORD_ONSET_DBFS (that frame is the 10 ms
    fade-in) and ends at the quietest frame between the word's loudest frame and WORD_MAX_S after
    the cut's start: the energy valley before the next word.
    """
    levels = _frame_levels(speech, STEP)
    loud = np.flatnonzero(levels > WORD_ONSET_DBFS)
    if not len(loud):
        raise SystemExit(f"{WORD_CLIP}: no frame above {WORD_ONSET_DBFS} dBFS")
    first = max(int(loud[0]) - 1, 0)
    limit = first + round(WORD_MAX_S * RATE / STEP)
    peak = first + int(np.argmax(levels[first:limit]))
    end = peak + 1 + int(np.argmin(levels[peak + 1 : limit + 1]))
    return first * STEP, end * STEP


def _bandpass(x: Signal, low: float, high: float) -> Signal:
    """Kaiser-windowed sinc band-pass (difference of two low-passes), ``len(x) - COUGH_TAPS + 1`` out."""
    n = np.arange(COUGH_TAPS) - (COUGH_TAPS - 1) / 2
    lowpass = [2 * f / RATE * np.sinc(2 * f / RATE * n) for f in (high, low)]
    kernel = (lowpass[0] - lowpass[1]) * np.kaiser(COUGH_TAPS, 8.0)
    return np.asarray(np.convolve(x, kernel, mode="valid"), dtype=np.float64)


def cough(rng: np.random.RandomState) -> Signal:
    """A synthetic cough: band-limited noise, 5 ms attack, exponential decay, COUGH_PEAK_DBFS peak."""
    n = round(COUGH_S * RATE)
    burst = _bandpass(rng.standard_normal(n + COUGH_TAPS - 1), *COUGH_BAND_HZ)
    attack = round(COUGH_ATTACK_S * RATE)
    t = np.arange(n - attack) / RATE
    tau = (COUGH_S - COUGH_ATTACK_S) / (COUGH_DECAY_DB / 20 * math.log(10))
    envelope = np.concatenate([0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack)), np.exp(-t / tau)])
    tail = round(0.01 * RATE)
    envelope[-tail:] *= 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, tail))
    shaped = burst * envelope
    return np.asarray(shaped * FULL_SCALE * 10 ** (COUGH_PEAK_DBFS / 20) / np.max(np.abs(shaped)))


def build_backchannel(ctx: BuildContext) -> CallAudio:
    """librivox-0880, then (over the agent's reply) the word "ten" and a cough, then 5 s of noise."""
    first, word_clip = ctx.speech("librivox-0880"), ctx.speech(WORD_CLIP)
    rng = _seed("noise:agent-backchannel")
    floor = min(noise_floor(first), noise_floor(word_clip))
    turn = _turn(ctx, "librivox-0880", first, LEAD_S)
    turn_end = float(turn["voice_activity_s"][1])
    start, end = cut_word(word_clip)
    word = fade(word_clip[start:end])
    if len(word) / RATE > WORD_MAX_S:
        raise SystemExit(f"{WORD_CLIP}: the cut word is {len(word) / RATE} s, over {WORD_MAX_S} s")
    burst = cough(_seed("cough:agent-backchannel"))
    events: list[tuple[str, float, Signal, dict[str, Any]]] = [
        (
            "backchannel",
            BACKCHANNEL_AFTER_S,
            word,
            {
                "text": WORD_TEXT,
                "source": f"shared/speech/{WORD_CLIP}.wav {start / RATE:.2f}-{end / RATE:.2f} s, "
                f'its first word "{WORD_TEXT}" (cut at its energy boundaries, 10 ms fades)',
            },
        ),
        (
            "cough",
            COUGH_AFTER_S,
            burst,
            {
                "source": f"synthetic: Gaussian noise band-limited to {COUGH_BAND_HZ[0]:.0f}-"
                f"{COUGH_BAND_HZ[1]:.0f} Hz, {COUGH_ATTACK_S * 1000:.0f} ms attack, exponential "
                f"decay ({-COUGH_DECAY_DB:.0f} dB over the burst), sample peak {COUGH_PEAK_DBFS} dBFS",
                "peak_dbfs": COUGH_PEAK_DBFS,
            },
        ),
    ]
    head = np.concatenate([noise(rng, LEAD_S, floor), first])
    total = round((turn_end + COUGH_AFTER_S + COUGH_S + BACKCHANNEL_TAIL_S) * RATE)
    body = pad_to_frames(np.concatenate([head, noise(rng, (total - len(head)) / RATE, floor)]), rng, floor)
    interjections = []
    for kind, after, signal, extra in events:
        at = round(turn_end + after, 3)
        offset = round(at * RATE)
        body[offset : offset + len(signal)] += signal
        span = voice_span(body[offset : offset + len(signal)], at)
        interjections.append(
            {
                "kind": kind,
                "at_s": at,
                "after_turn_s": after,
                "duration_s": round(len(signal) / RATE, 3),
                "voiced_s": round(span[1] - span[0], 2),
                "voice_activity_s": span,
                **extra,
            }
        )
    info = _entry(
        [turn],
        floor,
        interjections=interjections,
        note="the interjections fall inside the agent's reply to turn A and must not interrupt it; "
        "at_s is where each starts, voiced_s its time above -40 dBFS (20 ms frames)",
    )
    return CallAudio(to_pcm(body), manifest=info)


def build_echo(ctx: BuildContext) -> CallAudio:
    """librivox-0890 and 7 s of noise: the agent's reply, and its echo, are added at replay."""
    speech = ctx.speech("librivox-0890")
    rng = _seed("noise:agent-echo")
    floor = noise_floor(speech)
    parts = [noise(rng, LEAD_S, floor), speech, noise(rng, ECHO_TAIL_S, floor)]
    body = pad_to_frames(np.concatenate(parts), rng, floor)
    info = _entry(
        [_turn(ctx, "librivox-0890", speech, LEAD_S)],
        floor,
        echo=dict(ECHO_SETTINGS),
        echo_note="the caller leg holds no echo: the echo is the agent's own live voice, added at "
        "replay time by a line-echo simulator; return_loss_db and delay_ms are the suggested "
        "settings, and the 7 s of noise after the turn leave room for the reply and its echo",
    )
    return CallAudio(to_pcm(body), manifest=info)


AGENT_FIXTURES: tuple[Fixture, ...] = (
    Fixture("agent-barge-in", "barge-in: the caller talks over the agent's reply", build_barge_in),
    Fixture("agent-backchannel", "a word and a cough over the agent's reply: no barge-in", build_backchannel),
    Fixture("agent-echo", "one utterance (librivox-0890), 7 s for the agent's reply and echo", build_echo),
)
