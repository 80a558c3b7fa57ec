"""sipagent: a self-hosted SIP/RTP media server for AI phone agents."""

from ._compiled import guard_stale_builds

__version__ = "0.1.0"

# First, before anything imports a compiled module: a build older than its source must not run.
guard_stale_builds()
