"""The control API: HTTP routes and WebSocket events over the running server's calls.

:func:`~.app.create_app` builds the FastAPI application over a
:class:`~sipagent.product.control.CallControl` (the server); :class:`~.server.ApiServer` runs it
with uvicorn inside the server's own event loop; :class:`~.client.ApiClient` is what the
``sipagent call``, ``calls``, ``status``, ``speak``, ``dtmf``, ``end`` and ``tail`` commands talk
through. Decision 0020 says why it is built this way.

The names below load their module on first use: the CLI's client side should not pay for
importing FastAPI and uvicorn, nor the server for httpx's client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .client import ApiClient, ApiClientError
    from .config import ApiConfig
    from .server import ApiBindError, ApiServer

__all__ = ["ApiBindError", "ApiClient", "ApiClientError", "ApiConfig", "ApiServer", "create_app"]

_MODULES = {
    "create_app": "app",
    "ApiClient": "client",
    "ApiClientError": "client",
    "ApiConfig": "config",
    "ApiBindError": "server",
    "ApiServer": "server",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
