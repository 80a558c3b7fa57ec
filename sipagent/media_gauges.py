"""Line quality and model load for ``/metrics``, sampled from the calls in progress.

The media engine counts everything per call already (RTCP reception statistics per source, the
jitter buffer's late packets); what Prometheus wants is server-wide counters that only go up and a
distribution of jitter. So every few seconds (and once more as a call closes) :class:`MediaSampler`
reads each call's counters, hands the *increase* since its last reading to
:meth:`Metrics.rtp <sipagent.product.metrics.Metrics.rtp>` and observes each source's current
interarrival jitter; it also reads how many model jobs wait on the inference process. Reading a few
integers per call off the event loop's own thread costs microseconds, and nothing here ever touches
a packet: the per-packet path stays as it is.

Loss is RFC 3550's cumulative loss (packets the far end sent that never arrived), not the jitter
buffer's concealed frames, so a caller who pauses sending (DTX, hold) does not count as loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .product.metrics import Metrics
from .rtp.session import RtpSession

__all__ = ["SAMPLE_INTERVAL", "MediaSampler"]

#: Seconds between two samples of the calls in progress.
SAMPLE_INTERVAL = 5.0


class _Pending(Protocol):
    @property
    def pending(self) -> int: ...


@dataclass
class _Seen:
    lost: int = 0
    late: int = 0


class MediaSampler:
    """Feeds a :class:`Metrics` from the media sessions of the calls in progress."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._seen: dict[str, _Seen] = {}

    def sample(self, sessions: Iterable[tuple[str, RtpSession]], inference: _Pending | None) -> None:
        """One reading of every call's session (by call id) and of the inference queue."""
        live = set()
        for call_id, session in sessions:
            live.add(call_id)
            self.call(call_id, session)
        for gone in self._seen.keys() - live:
            del self._seen[gone]  # a call that closed without its final reading
        if inference is not None:
            self.metrics.inference_queue(inference.pending)

    def call(self, call_id: str, session: RtpSession) -> None:
        """Read one call's counters now: their increase since the last reading, its jitter."""
        seen = self._seen.setdefault(call_id, _Seen())
        sources = [source for source in session.rtcp.sources.values() if source.valid]
        lost = sum(max(0, source.cumulative_lost) for source in sources)
        late = session.jitter.stats.late
        self.metrics.rtp(lost=lost - seen.lost, late=late - seen.late)
        seen.lost, seen.late = max(seen.lost, lost), max(seen.late, late)
        for source in sources:
            self.metrics.rtp(jitter_ms=source.jitter_ms)

    def closed(self, call_id: str, session: RtpSession | None) -> None:
        """A call ends: its last reading, then forget it."""
        if session is not None:
            self.call(call_id, session)
        self._seen.pop(call_id, None)
