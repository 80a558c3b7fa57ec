"""Events the media engine hands up (frozen dataclasses, like :mod:`sipagent.sip.events`)."""

from __future__ import annotations

from dataclasses import dataclass

DTMF_DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True)
class DtmfReceived:
    """An RFC 4733 telephone-event completed (end packet seen, or inferred after loss).

    ``start`` is the caller-clock time of the event's first packet; ``duration_ms`` from the
    packet's duration field.
    """

    digit: str
    duration_ms: int
    start: float

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {self.digit!r}")


@dataclass(frozen=True)
class MediaTimeout:
    """No RTP (or RTCP) has arrived for ``silent_for`` seconds: the far end is probably gone."""

    silent_for: float


@dataclass(frozen=True)
class SourceChanged:
    """The sender's SSRC changed (re-INVITE, transfer, a media server stepping in)."""

    old_ssrc: int | None
    new_ssrc: int


@dataclass(frozen=True)
class SrtpRejected:
    """An SRTP/SRTCP packet failed authentication or replay checks and was dropped."""

    count: int


MediaEvent = DtmfReceived | MediaTimeout | SourceChanged | SrtpRejected
