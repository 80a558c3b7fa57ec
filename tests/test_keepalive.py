"""Trunk keepalives: OPTIONS over UDP toward the trunk, RFC 5626 CRLFCRLF pings over TCP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from peers.kamailio import Kamailio
from peers.ports import HOST, free_tcp_port
from peers.sipagent_proc import SipagentServer

pytestmark = pytest.mark.peer


def test_options_keepalive_over_udp(tmp_path: Path) -> None:
    with Kamailio(tmp_path / "kamailio", users={"agent": "pw"}) as kamailio:
        config = f'[trunk]\nmode = "static"\nuri = "{kamailio.uri()}"\nkeepalive_interval = 1\n'
        with SipagentServer(tmp_path / "server", config_text=config) as server:
            time.sleep(3.5)
        options = [
            r for r in kamailio.requests("OPTIONS") if (r.get("src") or "").endswith(f":{server.sip_port}")
        ]
        # One a second, from our listening port (so the NAT binding it refreshes is the right one).
        assert 2 <= len(options) <= 5, kamailio.log_text()[-2000:]


def test_crlf_keepalive_over_tcp(tmp_path: Path) -> None:
    port = free_tcp_port()
    received = bytearray()
    listener = socket.create_server((HOST, port))
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        with conn:
            while len(received) < 8:
                data = conn.recv(100)
                if not data:
                    return
                received.extend(data)
                conn.sendall(b"\r\n")  # the pong

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = f'[trunk]\nmode = "static"\nuri = "sip:{HOST}:{port};transport=tcp"\nkeepalive_interval = 1\n'
    with SipagentServer(tmp_path / "server", config_text=config):
        thread.join(timeout=6)
    listener.close()
    assert bytes(received[:8]) == b"\r\n\r\n\r\n\r\n", bytes(received)
