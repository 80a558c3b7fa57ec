"""The control API's own small, frozen configuration (built by the server from ``Settings.api``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiConfig:
    """Where the control API listens and the bearer token it demands.

    ``token`` is the token itself, which the server reads from the environment variable named by
    ``[api] token_env`` (never from the file, never logged). ``None`` leaves the API open: the server
    allows that only on a loopback ``bind``, and enforces the rule itself.
    """

    bind: str = "127.0.0.1"
    #: 0 picks a free port (tests, benchmarks); :attr:`ApiServer.bound_port` tells which.
    port: int = 8060
    token: str | None = None

    @property
    def loopback(self) -> bool:
        """Reachable from this machine only (then the OpenAPI document and /docs need no token)."""
        try:
            return ipaddress.ip_address(self.bind).is_loopback
        except ValueError:
            return self.bind == "localhost"

    def __repr__(self) -> str:
        # The token must never reach a log line through a repr.
        token = None if self.token is None else "'**********'"
        return f"ApiConfig(bind={self.bind!r}, port={self.port!r}, token={token})"
