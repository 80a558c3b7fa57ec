"""Run the real ``sipagent`` command as a subprocess on loopback, for the interop tests and the
fixture recorder (``scripts/record_fixtures.py``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from peers.ports import HOST, free_port_block, free_sip_port, free_tcp_port
from peers.proc import ManagedProcess
from peers.tls import PkiFiles

#: How many RTP ports each test server gets: small, so a capture filter can name them all.
RTP_PORTS = 16


@dataclass
class SipagentServer:
    """``sipagent serve`` with its own SIP port, RTP port block and log directory."""

    workdir: Path
    transports: tuple[str, ...] = ("udp", "tcp")
    extra_args: tuple[str, ...] = ()
    #: ``echo`` unless a test is about the agent (``serve`` defaults to agent mode).
    mode: str = "echo"
    config_text: str | None = None
    sip_port: int = field(default_factory=free_sip_port)
    tls_port: int | None = None
    #: Extra environment variables for the server (a trunk password, the API token).
    env: dict[str, str] | None = None
    #: The control API's port (its own, so servers side by side do not collide).
    api_port: int = field(default_factory=free_tcp_port)
    #: How many RTP ports (even and odd) the server may use.
    rtp_port_count: int = RTP_PORTS
    rtp_min: int = 0
    process: ManagedProcess | None = None

    @classmethod
    def with_tls(cls, workdir: Path, pki: PkiFiles, **kwargs: Any) -> SipagentServer:
        """A server listening on UDP and on TLS (a free port) with the test PKI's certificate."""
        extra = ("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), *kwargs.pop("extra_args", ()))
        return cls(workdir, transports=("udp", "tls"), tls_port=free_tcp_port(), extra_args=extra, **kwargs)

    def __post_init__(self) -> None:
        if not self.rtp_min:
            self.rtp_min = free_port_block(self.rtp_port_count)

    @property
    def rtp_ports(self) -> list[int]:
        """Every port the server may use for RTP."""
        return list(range(self.rtp_min, self.rtp_min + self.rtp_port_count))

    @property
    def api_url(self) -> str:
        """The control API's root (``sipagent call --api URL``)."""
        return f"http://{HOST}:{self.api_port}"

    @property
    def address(self) -> str:
        """``host:port`` for sipp."""
        return f"{HOST}:{self.sip_port}"

    def argv(self, command: str = "serve", *args: str) -> list[str]:
        """The command line (``serve`` by default; ``call TARGET`` for outbound tests)."""
        argv = [sys.executable, "-m", "sipagent", command, *args]
        argv += ["--sip-bind", HOST, "--sip-port", str(self.sip_port), "--log-level", "debug"]
        argv += ["--mode", self.mode]
        if command == "serve":
            argv += ["--api-port", str(self.api_port), "--store-path", str(self.workdir / "calls.db")]
        argv += [
            "--rtp-port-min",
            str(self.rtp_min),
            "--rtp-port-max",
            str(self.rtp_min + self.rtp_port_count),
        ]
        for transport in self.transports:
            argv += ["--transport", transport]
        if self.tls_port is not None:
            argv += ["--tls-port", str(self.tls_port)]
        if self.config_text is not None:
            config = self.workdir / "sipagent.toml"
            config.write_text(self.config_text)
            argv += ["--config", str(config)]
        return argv + list(self.extra_args)

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **self.env) if self.env else None
        self.process = ManagedProcess(self.argv(), name="sipagent", logdir=self.workdir, env=env)
        self.process.start()
        # Agent mode loads the models first (a few seconds, more on a loaded box).
        self.process.wait_for_output(r"listening on", timeout=20 if self.mode == "echo" else 120)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.process is not None
        self.process.stop()

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.process.stderr_text() if self.process is not None else ""
