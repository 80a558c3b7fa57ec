"""The unit of audio between the media engine and the voice pipeline: one 20 ms frame.

Telephone audio is 8 kHz mono; one frame is 160 signed 16-bit samples in a numpy array. Every
module in :mod:`sipagent.rtp` exchanges these and nothing else, so the jitter buffer, DTMF
detection, VAD and TTS all agree on size, rate and type without converting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
PTIME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * PTIME_MS // 1000  # 160
FRAME_SECONDS = PTIME_MS / 1000

Pcm = npt.NDArray[np.int16]
#: Compared against in AudioFrame's validation: ``dtype != np.int16`` builds a dtype per call.
_INT16 = np.dtype(np.int16)


def silence() -> Pcm:
    """A frame of digital silence (a fresh array: callers may write into it)."""
    return np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)


class FrameKind(enum.Enum):
    """Where a frame's samples came from."""

    VOICE = "voice"  # decoded from a packet that arrived in time
    CONCEALED = "concealed"  # synthesised for a lost or late packet (packet loss concealment)
    COMFORT_NOISE = "comfort-noise"  # generated from a CN packet (RFC 3389) or during DTX
    SILENCE = "silence"  # nothing to play yet (buffer filling, hold, before the first packet)


# init=False and a written-out __init__: mypyc compiles that one, while the dataclass-generated
# one runs as interpreted Python (~1 µs a frame, decision 0013). Not frozen for the same reason
# (a frozen class's __init__ must go through object.__setattr__); nothing assigns to one.
@dataclass(slots=True, init=False)
class AudioFrame:
    """One 20 ms frame out of the jitter buffer, with where it came from (treat it as immutable)."""

    samples: Pcm
    kind: FrameKind
    #: RTP timestamp (8 kHz units) of the frame's first sample in the sender's timeline, or None
    #: for frames not tied to a packet (SILENCE before the first packet).
    timestamp: int | None

    def __init__(self, samples: Pcm, kind: FrameKind, timestamp: int | None = None) -> None:
        if samples.shape != (SAMPLES_PER_FRAME,) or samples.dtype != _INT16:
            got = f"{samples.dtype} {samples.shape}"
            raise ValueError(f"an AudioFrame holds {SAMPLES_PER_FRAME} int16 samples, got {got}")
        self.samples = samples
        self.kind = kind
        self.timestamp = timestamp
