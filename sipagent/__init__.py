"""sipagent: a self-hosted SIP/RTP media server for AI phone agents."""

__version__ = "0.1.0"
