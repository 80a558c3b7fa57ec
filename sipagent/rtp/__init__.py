"""The media plane, sans-IO: RTP/RTCP, G.711, jitter buffer, pacer, DTMF, SRTP (see session.py)."""

from .._compiled import drop_stale_builds

drop_stale_builds()
