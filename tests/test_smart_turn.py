"""Smart Turn v3: its input features (pure, no model) and the real model on recorded speech.

Measured (smart-turn-v3.2-cpu, 200 ms of the room after the last word): librivox-0870 whole
("... in his power to do for them.") 0.98 clean and 0.98 under a pub's babble at 10 dB SNR; the same
recording cut after "how much" 0.06 and 0.05; librivox-0880 whole, which ends at a comma (the reader
goes on with "unless ..."), 0.08. The features match pipecat 1.14.0's own numpy implementation to
within 5e-6 (checked when this was written; pipecat is not a dependency).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sipagent.rtp.g711 import ulaw_decode, ulaw_encode
from sipagent.voice.models import resolve_model_path
from sipagent.voice.resample import resample_float, resample_int16
from sipagent.voice.smart_turn import DEFAULT_SMART_TURN_MODEL, SmartTurn, turn_features
from tests.model_gate import require_models

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO.parent / "shared" / "speech"
PUB = REPO / "fixtures" / "noise" / "restaurant-ambience.wav"  # real babble (public domain)
MODEL = resolve_model_path(DEFAULT_SMART_TURN_MODEL)
#: librivox-0870's true end and the end of "how much" (seconds into the clip; the manifest's
#: speech_end_s, and faster-whisper's word end moved to the quietest 10 ms near it).
END, AFTER_MUCH = 6.75, 4.40

Int16 = npt.NDArray[np.int16]


def _telephone(name: str) -> Int16:
    with wave.open(str(SPEECH / f"{name}.wav")) as clip:
        audio = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    return ulaw_decode(ulaw_encode(resample_int16(audio, 16000, 8000)))


def _voice(seconds: float, seed: int = 0) -> Int16:
    rng = np.random.RandomState(seed)
    t = np.arange(round(seconds * 8000)) / 8000
    x = (
        3000 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        + rng.standard_normal(t.size) * 300
    )
    voice: Int16 = x.astype(np.int16)
    return voice


# -- features, no model -----------------------------------------------------------------------------
def test_features_are_80_mels_by_800_frames_for_any_length() -> None:
    for seconds in (0.3, 3.0, 8.0, 11.0):
        features = turn_features(_voice(seconds))
        assert features.shape == (80, 800) and features.dtype == np.float32
        assert np.isfinite(features).all()


def test_a_short_turn_is_padded_in_front_so_its_end_is_the_windows_end() -> None:
    features = turn_features(_voice(2.0))
    # 6 s of padding, then 2 s of sound: the first 600 frames are all the same (padding only),
    # the last ones are not.
    lead = features[:, 10:590]
    assert np.allclose(lead, lead[:, :1], atol=1e-5)
    assert features[:, 700:].std() > 0.05


def test_only_the_last_8_seconds_count() -> None:
    long = np.concatenate([_voice(5.0, seed=1), _voice(8.0, seed=2)])
    np.testing.assert_array_equal(turn_features(long), turn_features(long[-8 * 8000 :]))


def test_the_waveform_is_normalised_so_loudness_does_not_matter() -> None:
    quiet = _voice(3.0)
    assert np.abs(quiet).max() < 8000  # so 4 times louder does not clip
    loud = (quiet.astype(np.int32) * 4).astype(np.int16)
    np.testing.assert_allclose(turn_features(quiet), turn_features(loud), atol=2e-3)


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(0, dtype=np.int16),
        np.zeros(800, dtype=np.float32),
        np.zeros((2, 800), dtype=np.int16),
        [0] * 800,
    ],
)
def test_bad_audio_is_refused(audio: object) -> None:
    with pytest.raises(ValueError, match="turn's audio"):
        turn_features(audio)  # type: ignore[arg-type]


# -- the real model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    require_models(MODEL)
    return SmartTurn(MODEL)


def _pub_at_10db(audio: Int16, speech: Int16) -> Int16:
    """``audio`` under the pub recording, 10 dB below ``speech``'s power."""
    with wave.open(str(PUB)) as noise_file:
        x = np.frombuffer(noise_file.readframes(noise_file.getnframes()), dtype="<i2").astype(np.float32)
    noise = resample_float(x, 16000, 8000).astype(np.float64)[8000 : 8000 + len(audio)]
    power = float(np.mean(speech.astype(np.float64) ** 2))
    gain = np.sqrt(power / (float(np.mean(noise**2)) * 10))
    mixed = np.clip(np.rint(audio + gain * noise), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(mixed))


def test_a_finished_sentence_scores_far_above_the_same_sentence_cut_mid_way(smart_turn: SmartTurn) -> None:
    audio = _telephone("librivox-0870")
    room = audio[round((END + 0.1) * 8000) : round((END + 0.3) * 8000)]  # 200 ms after the last word
    whole = np.concatenate([audio[: round(END * 8000)], room])
    cut = np.concatenate([audio[: round(AFTER_MUCH * 8000)], room])  # "... to consider how much"
    speech = audio[round(0.23 * 8000) : round(END * 8000)]
    for label, (a, b) in {
        "clean": (whole, cut),
        "10 dB": (_pub_at_10db(whole, speech), _pub_at_10db(cut, speech)),
    }.items():
        complete, unfinished = smart_turn.probability(a), smart_turn.probability(b)
        assert complete > 0.7, label
        assert unfinished < 0.3, label
        assert complete - unfinished > 0.5, label
        assert smart_turn.is_complete(a) and not smart_turn.is_complete(b)


def test_a_reader_stopping_at_a_comma_has_not_finished(smart_turn: SmartTurn) -> None:
    """librivox-0880 is a whole clause ("He was not an ill-disposed young man,") but the sentence goes
    on: the reader's voice says so, and the model hears it."""
    audio = _telephone("librivox-0880")  # its speech ends 2.79 s in; 200 ms of the room follow
    assert smart_turn.probability(audio[: round(2.99 * 8000)]) < 0.3


def test_a_bad_threshold_or_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        SmartTurn(MODEL, threshold=1.0)
    with pytest.raises(FileNotFoundError, match="fetch_models"):
        SmartTurn(tmp_path / "absent.onnx")
