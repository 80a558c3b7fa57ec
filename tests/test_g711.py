"""G.711 tables: bit-exact against CPython's ``audioop`` for every input, and round trips.

``audioop`` is deprecated (removed in 3.13); there the ``audioop-lts`` package provides it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipagent.rtp import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # on Python >= 3.13 this module comes from the audioop-lts package

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))

LAWS = [
    ("PCMU", g711.ulaw_encode, g711.ulaw_decode, audioop.lin2ulaw, audioop.ulaw2lin),
    ("PCMA", g711.alaw_encode, g711.alaw_decode, audioop.lin2alaw, audioop.alaw2lin),
]


@pytest.mark.parametrize(("codec", "encode", "decode", "ref_encode", "ref_decode"), LAWS)
def test_encode_matches_audioop_for_every_int16(codec, encode, decode, ref_encode, ref_decode) -> None:
    expected = ref_encode(ALL_SAMPLES.tobytes(), 2)
    assert encode(ALL_SAMPLES) == expected
    assert g711.encode(ALL_SAMPLES, codec) == expected


@pytest.mark.parametrize(("codec", "encode", "decode", "ref_encode", "ref_decode"), LAWS)
def test_decode_matches_audioop_for_every_code(codec, encode, decode, ref_encode, ref_decode) -> None:
    expected = np.frombuffer(ref_decode(ALL_CODES, 2), dtype=np.int16)
    for got in (decode(ALL_CODES), g711.decode(ALL_CODES, codec)):
        assert got.dtype == np.int16
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_code_round_trip_is_identity(codec: str) -> None:
    # Decoding then encoding any code gives it back, except μ-law's two zeros (0x7F, 0xFF),
    # which both decode to 0 and re-encode as the positive zero 0xFF.
    round_trip = g711.encode(g711.decode(ALL_CODES, codec), codec)
    differing = {code for code, back in zip(ALL_CODES, round_trip, strict=True) if code != back}
    assert differing == ({0x7F} if codec == "PCMU" else set())


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_sample_round_trip_error_is_bounded_by_the_segment_step(codec: str) -> None:
    decoded = g711.decode(g711.encode(ALL_SAMPLES, codec), codec).astype(np.int32)
    error = np.abs(decoded - ALL_SAMPLES.astype(np.int32))
    # The step doubles per segment: near zero it is 8 (μ-law truncates within it, A-law has
    # no zero level, only ±8); at full scale about one step of the top segment (μ-law also
    # clips magnitudes above 32124).
    assert error[np.abs(ALL_SAMPLES.astype(np.int32)) < 64].max() <= 8
    assert error.max() <= (644 if codec == "PCMU" else 512)
    # Quantisation is monotonic: a larger input never decodes to a smaller value.
    assert (np.diff(decoded) >= 0).all()


@pytest.mark.parametrize(("codec", "level"), [("PCMU", 0), ("PCMA", 8)])
def test_silence_byte_is_the_code_of_zero(codec: str, level: int) -> None:
    silence = bytes([g711.CODEC_SILENCE[codec]]) * 160
    assert g711.encode(np.zeros(160, dtype=np.int16), codec) == silence
    # μ-law has an exact zero; A-law's quietest level is ±8 (of 32768).
    np.testing.assert_array_equal(g711.decode(silence, codec), np.full(160, level, dtype=np.int16))


@given(st.lists(st.integers(-32768, 32767), max_size=480), st.sampled_from(["PCMU", "PCMA", "pcmu"]))
def test_encode_decode_is_stable_after_one_pass(values: list[int], codec: str) -> None:
    pcm = np.array(values, dtype=np.int16)
    once = g711.decode(g711.encode(pcm, codec), codec)
    twice = g711.decode(g711.encode(once, codec), codec)
    np.testing.assert_array_equal(once, twice)  # decoded values are fixed points of the law
    assert len(g711.encode(pcm, codec)) == len(values)


def test_encode_accepts_a_strided_view() -> None:
    pcm = ALL_SAMPLES[::7]
    assert g711.encode(pcm, "PCMU") == g711.encode(pcm.copy(), "PCMU")


def test_unknown_codec_and_bad_dtype_raise() -> None:
    with pytest.raises(ValueError, match="G722"):
        g711.decode(b"\x00", "G722")
    with pytest.raises(ValueError, match="opus"):
        g711.encode(np.zeros(1, dtype=np.int16), "opus")
    with pytest.raises(TypeError, match="int16"):
        g711.encode(np.zeros(4, dtype=np.float32), "PCMU")
    assert {"PCMU", "PCMA"} == g711.CODECS


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        g711.decode_table("PCMU")[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        g711.encode_table("pcma")[0] = 1
