"""Serve the control API with uvicorn inside the caller's running event loop.

The server's loop already runs every call's media, signalling and conversation; the API's routes
call :class:`~sipagent.product.control.CallControl` methods that must run there too, so the API
runs there rather than on a thread of its own (decision 0020). uvicorn's ``Server.serve()`` is not
used: it installs its own SIGINT/SIGTERM handlers (they belong to ``sipagent serve``) and calls
``sys.exit`` when it cannot bind. This module binds the socket itself, so a busy port is an
:class:`ApiBindError` naming the address, then drives uvicorn's ``startup``/``main_loop``/
``shutdown`` steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

import uvicorn

from ..errors import SipAgentError
from ..product.control import CallControl
from .app import create_app
from .config import ApiConfig

log = logging.getLogger("sipagent.api")

#: Seconds open connections (event streams) get to finish when the API stops, before their tasks
#: are cancelled.
SHUTDOWN_GRACE = 2


class ApiBindError(SipAgentError):
    """The control API cannot listen on its address (port taken, address not on this machine)."""


class ApiServer:
    """The control API over ``control`` on ``config.bind:config.port`` (port 0: a free one, see
    :attr:`bound_port`)."""

    def __init__(
        self,
        control: CallControl,
        config: ApiConfig,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
    ) -> None:
        """Build the application (:func:`~.app.create_app`); nothing is bound before :meth:`start`."""
        self.host = config.bind
        self.port = config.port
        self.app = create_app(control, config, metrics)
        self._config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            log_config=None,  # the server's logging setup stays as it is
            lifespan="off",
            http="h11",
            ws="websockets-sansio",
            access_log=False,
            proxy_headers=False,  # nothing in front of it rewrites client addresses
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._main: asyncio.Task[None] | None = None
        self._bound_port: int | None = None

    @property
    def bound_port(self) -> int:
        """The port listened on (the one picked when asked for port 0)."""
        if self._bound_port is None:
            raise RuntimeError("the control API is not started")
        return self._bound_port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running API."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    async def start(self) -> None:
        """Bind and start answering; raises :class:`ApiBindError` when the address is unusable."""
        if self._server is not None:
            raise RuntimeError("the control API is already started")
        sock = self._bind()
        server = uvicorn.Server(self._config)
        if not self._config.loaded:  # uvicorn loads a config once; a restarted API reuses it
            self._config.load()
        server.lifespan = self._config.lifespan_class(self._config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock
        self._bound_port = int(sock.getsockname()[1])
        # main_loop refreshes the Date header once a second and returns when should_exit is set.
        self._main = asyncio.create_task(server.main_loop(), name="control-api")
        log.info("control API on %s", self.url)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP spelt out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # without it Nagle's algorithm held each response's body behind its headers until the
        # client's delayed ACK (40 ms on Linux) for every request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            # As asyncio's create_server does: a restarted server binds while old connections
            # linger in TIME_WAIT; a port another process listens on still fails.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            raise ApiBindError(f"cannot serve the control API on {self.host}:{self.port}: {reason}") from None
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        """Stop listening, close every connection (event streams get close 1012) and wait for them."""
        server, main = self._server, self._main
        if server is None:
            return
        self._server = self._main = None
        server.should_exit = True
        if main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await main
        await server.shutdown(sockets=None)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
