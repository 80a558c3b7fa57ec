"""Free loopback ports for peers started by tests.

Tests run in parallel (pytest-xdist), so every peer gets ports picked at run time. A port is found by
binding it on loopback; the socket is closed again before the peer binds it, so there is a window in
which another socket could take it. To keep that window harmless:

* ports come from below the kernel's ephemeral range (32768-60999 on Linux), which it hands to every
  socket bound to port 0 or connecting out: a port picked in there can be taken by any process's
  outgoing socket before the peer binds it (a Kamailio failed to start that way);
* each pytest-xdist worker picks from its own slice of that range, so two workers never pick the
  same number;
* ports handed out by this process are remembered and never handed out twice, and callers that need
  a UDP *and* TCP listener on one number (SIP) get a number free on both.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

HOST = "127.0.0.1"

#: Where test ports come from: above the well-known services, below the ephemeral range.
PORT_RANGE = (20000, 32000)

_lock = threading.Lock()
_handed_out: set[int] = set()


def _worker_slice() -> range:
    """This process's share of :data:`PORT_RANGE` (the whole of it outside pytest-xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    low, high = PORT_RANGE
    size = (high - low) // max(count, 1)
    start = low + (index % max(count, 1)) * size
    return range(start, start + size)


_SLICE = _worker_slice()
# A random starting point: a rerun right after a crashed one does not walk into its leftovers.
_cursor = random.Random().randrange(len(_SLICE))


def _candidates(step: int = 1) -> list[int]:
    """Every port of this worker's slice once, from where the last search stopped."""
    global _cursor
    with _lock:
        start = _cursor
        _cursor = (_cursor + 7) % len(_SLICE)
    ports = [_SLICE[(start + i) % len(_SLICE)] for i in range(len(_SLICE))]
    return ports if step == 1 else [p for p in ports if p % step == 0]


def _probe(kind: int, port: int) -> bool:
    """Whether ``port`` can be bound on loopback for socket ``kind`` right now."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        # No SO_REUSEADDR: the port must be really free, not merely free of listeners.
        sock.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _claim(ports: range | list[int]) -> bool:
    with _lock:
        if any(p in _handed_out for p in ports):
            return False
        _handed_out.update(ports)
        return True


def _free(kinds: tuple[int, ...], what: str) -> int:
    for port in _candidates():
        if port not in _handed_out and all(_probe(kind, port) for kind in kinds) and _claim([port]):
            return port
    raise RuntimeError(f"no free {what} port found on loopback in {_SLICE}")


def free_udp_port() -> int:
    """Return a UDP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    return _free((socket.SOCK_DGRAM,), "UDP")


def free_tcp_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    return _free((socket.SOCK_STREAM,), "TCP")


def free_sip_port() -> int:
    """Return a port number free for both UDP and TCP (a SIP listener usually binds both)."""
    return _free((socket.SOCK_DGRAM, socket.SOCK_STREAM), "UDP+TCP")


def free_port_block(count: int, *, even: bool = True) -> int:
    """Return the first of ``count`` consecutive free UDP ports; the first one is even if ``even``.

    sipp binds its media port and media port + 2 (video), RTP wants an even port with RTCP on the odd
    port after it: ask for a block of 4 for a sipp media port.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    for base in _candidates(2 if even else 1):
        ports = range(base, base + count)
        if ports[-1] >= _SLICE.stop or any(p in _handed_out for p in ports):
            continue
        if all(_probe(socket.SOCK_DGRAM, p) for p in ports) and _claim(ports):
            return base
    raise RuntimeError(f"no block of {count} free UDP ports found on loopback in {_SLICE}")


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
