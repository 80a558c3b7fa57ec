"""G.711 μ-law (PCMU) and A-law (PCMA) codecs through lookup tables (ITU-T G.711).

Every call is one numpy ``take`` over a table built once at import, so a 160-sample frame
costs about a microsecond either way and no Python loop touches a sample:

- decode: a 256-entry int16 table indexed by the code bytes;
- encode: a 65536-entry uint8 table indexed by the uint16 view of the int16 samples (64 KiB
  per law, cheaper than recomputing segments per sample).

The tables come from the standard segment/quantisation rules (the Sun reference
implementation, as in CPython's ``audioop``): μ-law quantises the top 14 bits with a bias of
33 and clips magnitudes above 8159; A-law quantises the top 13 bits and inverts the even bits.
``tests/test_g711.py`` checks both laws bit-exact against ``audioop`` for every input. (On
Python 3.13+, where ``audioop`` is gone, those tests need the ``audioop-lts`` package: dev
dependency ``audioop-lts; python_version>='3.13'``.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .frames import Pcm

__all__ = [
    "CODECS",
    "CODEC_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "decode_table",
    "encode",
    "encode_table",
    "ulaw_decode",
    "ulaw_encode",
]

#: Payload byte values of digital silence (a zero sample) in each law.
CODEC_SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}

_I32 = npt.NDArray[np.int32]


def _signed16() -> _I32:
    """The int16 value of every uint16 index 0..65535 (the encode table's domain)."""
    return np.arange(65536, dtype=np.int32) - (np.arange(65536, dtype=np.int32) >= 32768) * 65536


def _ulaw_decode_table() -> Pcm:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # μ-law transmits every bit inverted
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _alaw_decode_table() -> Pcm:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # A-law transmits the even bits inverted
    segment = (code & 0x70) >> 4
    magnitude = ((code & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude <<= np.maximum(segment - 1, 0)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    value = _signed16() >> 2  # 14-bit input range
    mask = np.where(value < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(value), 8159) + 33  # clip, then add the bias (0x84 >> 2)
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
    segment = np.searchsorted(segment_ends, magnitude).astype(np.int32)
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    value = _signed16() >> 3  # 13-bit input range
    mask = np.where(value >= 0, 0xD5, 0x55)
    magnitude = np.where(value >= 0, value, -value - 1)
    segment_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
    segment = np.searchsorted(segment_ends, magnitude).astype(np.int32)
    code = (segment << 4) | ((magnitude >> np.maximum(segment, 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


_ULAW_DECODE = _ulaw_decode_table()
_ALAW_DECODE = _alaw_decode_table()
_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_ENCODE = _alaw_encode_table()
for _table in (_ULAW_DECODE, _ALAW_DECODE, _ULAW_ENCODE, _ALAW_ENCODE):
    _table.flags.writeable = False  # shared by every call: nobody may scribble on them

_DECODE = {"PCMU": _ULAW_DECODE, "PCMA": _ALAW_DECODE}
_ENCODE = {"PCMU": _ULAW_ENCODE, "PCMA": _ALAW_ENCODE}

#: Codec names this module handles (RTP/AVP encoding names, RFC 3551).
CODECS = frozenset(_DECODE)


def _codec_key(codec: str) -> str:
    if codec in _DECODE:
        return codec
    upper = codec.upper()  # SDP encoding names are case-insensitive
    if upper in _DECODE:
        return upper
    raise ValueError(f"unsupported G.711 codec {codec!r}: expected 'PCMU' or 'PCMA'")


def decode_table(codec: str) -> Pcm:
    """The read-only 256-entry code → int16 table of ``codec`` (for callers that index it directly)."""
    return _DECODE[_codec_key(codec)]


def encode_table(codec: str) -> npt.NDArray[np.uint8]:
    """The read-only 65536-entry table of ``codec``, indexed by ``pcm.view(np.uint16)``."""
    return _ENCODE[_codec_key(codec)]


_INT16 = np.dtype(np.int16)


def _check_pcm(pcm: Pcm) -> None:
    if pcm.dtype != _INT16:
        raise TypeError(f"G.711 encodes int16 samples, got {pcm.dtype}")


def decode(payload: bytes, codec: str) -> Pcm:
    """Decode a G.711 payload to a fresh int16 array (one sample per byte)."""
    table = _DECODE.get(codec)
    if table is None:
        table = _DECODE[_codec_key(codec)]
    return table.take(np.frombuffer(payload, dtype=np.uint8))


def encode(pcm: Pcm, codec: str) -> bytes:
    """Encode int16 samples to a G.711 payload (one byte per sample)."""
    table = _ENCODE.get(codec)
    if table is None:
        table = _ENCODE[_codec_key(codec)]
    _check_pcm(pcm)
    return table.take(pcm.view(np.uint16)).tobytes()


def ulaw_decode(payload: bytes) -> Pcm:
    """Decode μ-law (PCMU) bytes to int16 samples."""
    return _ULAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8))


def alaw_decode(payload: bytes) -> Pcm:
    """Decode A-law (PCMA) bytes to int16 samples."""
    return _ALAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8))


def ulaw_encode(pcm: Pcm) -> bytes:
    """Encode int16 samples to μ-law (PCMU) bytes."""
    _check_pcm(pcm)
    return _ULAW_ENCODE.take(pcm.view(np.uint16)).tobytes()


def alaw_encode(pcm: Pcm) -> bytes:
    """Encode int16 samples to A-law (PCMA) bytes."""
    _check_pcm(pcm)
    return _ALAW_ENCODE.take(pcm.view(np.uint16)).tobytes()
