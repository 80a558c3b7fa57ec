"""Free loopback ports for peers started by tests.

Tests run in parallel (pytest-xdist), so every peer gets ports picked at run time. A port is found by
binding port 0 and reading what the kernel chose; the socket is closed again before the peer binds it,
so there is a small window in which another process could take it. To keep that window harmless,
ports handed out by this process are remembered and never handed out twice, and callers that need a
UDP *and* TCP listener on one number (SIP) get a number free on both.
"""

from __future__ import annotations

import socket
import threading
import time

HOST = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def _probe(kind: int, port: int = 0) -> int | None:
    """Bind ``port`` (0 = any) on loopback for socket ``kind``; return the bound port or None if taken."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        # No SO_REUSEADDR: the port must be really free, not merely free of listeners.
        sock.bind((HOST, port))
        bound: int = sock.getsockname()[1]
        return bound
    except OSError:
        return None
    finally:
        sock.close()


def _claim(port: int) -> bool:
    with _lock:
        if port in _handed_out:
            return False
        _handed_out.add(port)
        return True


def free_udp_port() -> int:
    """Return a UDP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    for _ in range(200):
        port = _probe(socket.SOCK_DGRAM)
        if port is not None and _claim(port):
            return port
    raise RuntimeError("no free UDP port found on loopback")


def free_tcp_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    for _ in range(200):
        port = _probe(socket.SOCK_STREAM)
        if port is not None and _claim(port):
            return port
    raise RuntimeError("no free TCP port found on loopback")


def free_sip_port() -> int:
    """Return a port number free for both UDP and TCP (a SIP listener usually binds both)."""
    for _ in range(200):
        port = _probe(socket.SOCK_DGRAM)
        if port is None or _probe(socket.SOCK_STREAM, port) is None:
            continue
        if _claim(port):
            return port
    raise RuntimeError("no port free for both UDP and TCP found on loopback")


def free_port_block(count: int, *, even: bool = True) -> int:
    """Return the first of ``count`` consecutive free UDP ports; the first one is even if ``even``.

    sipp binds its media port and media port + 2 (video), RTP wants an even port with RTCP on the odd
    port after it: ask for a block of 4 for a sipp media port.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    for _ in range(500):
        base = _probe(socket.SOCK_DGRAM)
        if base is None:
            continue
        if even and base % 2:
            base += 1
        if base + count - 1 > 65535:
            continue
        if all(_probe(socket.SOCK_DGRAM, base + i) is not None for i in range(count)):
            ports = range(base, base + count)
            with _lock:
                if any(p in _handed_out for p in ports):
                    continue
                _handed_out.update(ports)
            return base
    raise RuntimeError(f"no block of {count} free UDP ports found on loopback")


def free_port_pair() -> tuple[int, int]:
    """Return ``(rtp, rtcp)``: an even free UDP port and the odd port after it, both free."""
    base = free_port_block(2, even=True)
    return base, base + 1


def _bound_ports(proto: str) -> set[int]:
    """Local ports with a socket in /proc/net/<proto> (TCP: listening sockets only), IPv4 and IPv6."""
    ports: set[int] = set()
    for table in (proto, proto + "6"):
        try:
            with open(f"/proc/net/{table}") as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) < 4:
                        continue
                    if proto == "tcp" and fields[3] != "0A":  # 0A = LISTEN
                        continue
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def is_port_bound(port: int, proto: str = "udp") -> bool:
    """True if some socket is bound to ``port`` (``proto`` "udp", or "tcp" for a listener).

    Reads /proc/net instead of trying to bind, so it never races with the peer that is starting up.
    """
    return port in _bound_ports(proto)


def wait_port_bound(port: int, proto: str = "udp", *, timeout: float = 10.0) -> None:
    """Wait until :func:`is_port_bound`; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not is_port_bound(port, proto):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing bound {proto} port {port} within {timeout}s")
        time.sleep(0.02)
