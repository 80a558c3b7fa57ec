"""A line-echo simulator for replays: the agent's own voice comes back on the caller's leg.

On a real call the far end's 2-to-4-wire hybrid (or a speakerphone) reflects part of what we send
into what the caller sends us, some tens to hundreds of milliseconds later. A capture cannot hold
that echo, since it is made of the agent's live reply, so the replay adds it: every caller packet
that arrives at time ``t`` gets the agent's audio that left at ``t - delay``, attenuated by the echo
return loss, mixed in before the packet enters the media engine (decoded, summed, re-encoded, as
the far end's codec would).

Pure: times are passed in, nothing is read from a clock.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..rtp.frames import FRAME_SECONDS, SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm
from ..rtp.g711 import decode_table, encode

_HEADER = 12
#: Outbound audio kept for the echo: longer than any delay a line would have.
_HISTORY_S = 2.0


class EchoLine:
    """Mixes the agent's delayed, attenuated audio into the caller's RTP payloads."""

    def __init__(self, codec: str, *, return_loss_db: float = 12.0, delay_ms: float = 120.0) -> None:
        if not 0 <= return_loss_db <= 60:
            raise ValueError(f"echo return loss must be 0-60 dB, got {return_loss_db}")
        if not 0 <= delay_ms <= 1000:
            raise ValueError(f"echo delay must be 0-1000 ms, got {delay_ms}")
        self.gain = 10 ** (-return_loss_db / 20)
        self.delay = delay_ms / 1000
        self._decode = decode_table(codec)
        self._codec = codec
        #: (send time, frame) of what the agent sent, oldest first.
        self._sent: deque[tuple[float, Pcm]] = deque(maxlen=round(_HISTORY_S / FRAME_SECONDS))
        #: Samples of echo mixed in (for tests and summaries).
        self.mixed_peak = 0
        #: The first caller packet's RTP timestamp and arrival: the caller's media clock.
        self._origin: tuple[int, float] | None = None

    def note_sent(self, at: float, frame: Pcm | None) -> None:
        """The agent's frame for the tick at ``at`` (None: nothing sent, the line was quiet)."""
        self._sent.append((at, frame if frame is not None else np.zeros(SAMPLES_PER_FRAME, np.int16)))

    def echo_for(self, heard_at: float) -> Pcm | None:
        """The 20 ms of echo in the caller audio that ends at ``heard_at`` (None: nothing to echo)."""
        if not self._sent:
            return None
        start = heard_at - self.delay - FRAME_SECONDS
        first_at = self._sent[0][0]
        offset = round((start - first_at) * SAMPLE_RATE)
        if offset + SAMPLES_PER_FRAME <= 0:
            return None
        history = np.concatenate([frame for _, frame in self._sent])
        lo, hi = max(0, offset), min(history.size, offset + SAMPLES_PER_FRAME)
        if lo >= hi:
            return None
        echo = np.zeros(SAMPLES_PER_FRAME, dtype=np.float64)
        echo[lo - offset : hi - offset] = history[lo:hi]
        return (echo * self.gain).astype(np.int16)

    def mix(self, packet: bytes, arrival: float) -> bytes:
        """``packet`` (plain RTP, 20 ms G.711) with the echo it would carry on this line.

        The echo is placed by the packet's RTP timestamp (from the first packet's arrival on), not
        by its own arrival: a line's echo is one continuous signal, and arrival jitter of even a
        millisecond would otherwise cut it into pieces that no longer match what we sent.
        """
        if len(packet) < _HEADER:
            return packet
        timestamp = int.from_bytes(packet[4:8], "big")
        if self._origin is None:
            self._origin = (timestamp, arrival)
        first_ts, first_at = self._origin
        echo = self.echo_for(first_at + ((timestamp - first_ts) & 0xFFFFFFFF) / SAMPLE_RATE)
        payload = np.frombuffer(packet, dtype=np.uint8, offset=_HEADER)
        if echo is None or payload.size != SAMPLES_PER_FRAME or not echo.any():
            return packet
        self.mixed_peak = max(self.mixed_peak, int(np.abs(echo).max()))
        caller = self._decode.take(payload).astype(np.int32)
        summed = np.clip(caller + echo, -32768, 32767).astype(np.int16)
        return packet[:_HEADER] + encode(summed, self._codec)
