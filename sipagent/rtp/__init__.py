"""The media plane, sans-IO: RTP/RTCP, G.711, jitter buffer, pacer, DTMF, SRTP (see session.py)."""
