"""Count UDP (RTP) packets on loopback with dumpcap, per direction (source port -> destination port).

:class:`LoopbackCapture` starts ``dumpcap -i lo`` with a BPF filter for the given ports before the call
and stops it afterwards; the classic-pcap file it wrote is then read with :mod:`peers.pcap`. On
Linux loopback every datagram is captured exactly once, so ``counts[(a, b)]`` is the number of
datagrams sent from port ``a`` to port ``b``. Capturing needs root or dumpcap's capabilities
(``setcap cap_net_raw,cap_net_admin+eip /usr/bin/dumpcap``); Debian package: wireshark-common (pulled
in by tshark).

Start and stop are synchronised with *sentinel* datagrams sent to a private port included in the
filter. dumpcap prints "Capturing on" before the kernel filter is attached, so ``start`` sends "start"
sentinels until one shows up in the file. And the kernel hands packets to dumpcap in blocks that are
only flushed on a timer, so a SIGINT right after the call would lose its last packets: ``stop`` sends
"end" sentinels until one is in the file (packets arrive in order, so everything before it is there)
and only then stops dumpcap.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from peers.pcap import UdpPacket, read_udp_packets
from peers.ports import HOST, free_udp_port
from peers.proc import Lifecycle, ManagedProcess, ProcessError

DUMPCAP = "dumpcap"

# RTCP packet types (RFC 3550 / 4585): SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR.
_RTCP_TYPES = frozenset(range(200, 208))


def is_rtp(payload: bytes) -> bool:
    """True for an RTP version 2 packet that is not RTCP (RFC 5761 demultiplexing rule)."""
    return len(payload) >= 12 and payload[0] >> 6 == 2 and payload[1] not in _RTCP_TYPES


def is_rtcp(payload: bytes) -> bool:
    """True for an RTCP packet (version 2, packet type 200-207)."""
    return len(payload) >= 8 and payload[0] >> 6 == 2 and payload[1] in _RTCP_TYPES


class LoopbackCapture(Lifecycle):
    """Capture UDP packets to/from ``ports`` on ``lo`` for the duration of a ``with`` block.

    After the block, :meth:`counts` gives ``{(src_port, dst_port): packets}``; :meth:`rtp_count` counts
    only RTP packets in one direction.
    """

    def __init__(
        self,
        workdir: Path,
        ports: Iterable[int],
        *,
        interface: str = "lo",
        name: str = "capture",
        ready_timeout: float = 10.0,
    ) -> None:
        if shutil.which(DUMPCAP) is None:
            raise ProcessError("dumpcap not installed (Debian package wireshark-common / tshark)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.ports = sorted(set(ports))
        self.sentinel_port = free_udp_port()
        self.pcap_path = workdir / f"{name}.pcap"
        self.ready_timeout = ready_timeout
        port_filter = " or ".join(f"port {p}" for p in [*self.ports, self.sentinel_port])
        self.bpf = f"udp and ({port_filter})"
        self.process = ManagedProcess(
            [DUMPCAP, "-i", interface, "-P", "-q", "-f", self.bpf, "-w", str(self.pcap_path)],
            name=name,
            logdir=workdir,
            stop_signal=signal.SIGINT,  # dumpcap finishes the file on SIGINT
            stop_timeout=5.0,
        )
        self._packets: list[UdpPacket] | None = None
        self._sentinel: socket.socket | None = None

    def start(self) -> None:
        """Start dumpcap and return once a "start" sentinel datagram has been captured."""
        self.process.start()
        self._sentinel = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sentinel.bind((HOST, self.sentinel_port))
        try:
            self.process.wait_for_output("Capturing on", timeout=self.ready_timeout)
            self._send_sentinel_until_seen(b"sipagent-capture-start")
        except BaseException:
            self._close()
            raise

    def _send_sentinel_until_seen(self, marker: bytes) -> None:
        assert self._sentinel is not None
        deadline = time.monotonic() + self.ready_timeout
        while not self._marker_seen(marker):
            if not self.process.is_running():
                raise ProcessError(f"dumpcap exited: {self.process.stderr_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"dumpcap did not capture the {marker.decode()} sentinel within {self.ready_timeout}s"
                )
            self._sentinel.sendto(marker, (HOST, self.sentinel_port))
            time.sleep(0.05)

    def _marker_seen(self, marker: bytes) -> bool:
        try:
            return any(p.payload == marker for p in read_udp_packets(self.pcap_path))
        except (FileNotFoundError, ValueError):
            return False

    def _close(self) -> None:
        self.process.stop()
        if self._sentinel is not None:
            self._sentinel.close()
            self._sentinel = None

    def stop(self) -> None:
        """Flush (an "end" sentinel must reach the file), stop dumpcap and load the packets."""
        if self._packets is not None:
            return
        try:
            if self.process.is_running():
                self._send_sentinel_until_seen(b"sipagent-capture-end")
        finally:
            self._close()
        self._packets = [
            p for p in read_udp_packets(self.pcap_path) if self.sentinel_port not in (p.src[1], p.dst[1])
        ]

    # -- results -------------------------------------------------------------------------------------

    def packets(self) -> list[UdpPacket]:
        """All captured UDP packets (sentinels excluded); only valid after the capture stopped."""
        if self._packets is None:
            raise RuntimeError("capture still running: read results after the with-block")
        return list(self._packets)

    def counts(self, *, rtp_only: bool = False) -> dict[tuple[int, int], int]:
        """``{(src_port, dst_port): number of datagrams}``; with ``rtp_only`` RTCP/SIP/other are left out."""
        counter: Counter[tuple[int, int]] = Counter(
            (p.src[1], p.dst[1]) for p in self.packets() if not rtp_only or is_rtp(p.payload)
        )
        return dict(counter)

    def count(self, src_port: int, dst_port: int, *, rtp_only: bool = False) -> int:
        """Datagrams from ``src_port`` to ``dst_port``."""
        return self.counts(rtp_only=rtp_only).get((src_port, dst_port), 0)

    def rtp_count(self, *, src_port: int | None = None, dst_port: int | None = None) -> int:
        """RTP packets matching the given source and/or destination port."""
        return sum(
            1
            for p in self.packets()
            if is_rtp(p.payload)
            and (src_port is None or p.src[1] == src_port)
            and (dst_port is None or p.dst[1] == dst_port)
        )

    def rtp_packets(self, *, src_port: int | None = None, dst_port: int | None = None) -> list[UdpPacket]:
        """The RTP packets matching the given source and/or destination port, in capture order."""
        return [
            p
            for p in self.packets()
            if is_rtp(p.payload)
            and (src_port is None or p.src[1] == src_port)
            and (dst_port is None or p.dst[1] == dst_port)
        ]

    def describe(self) -> str:
        """Per-direction counts as text, for assertion messages."""
        rows = sorted(self.counts().items())
        return "\n".join(f"  {src} -> {dst}: {n}" for (src, dst), n in rows) or "  (no packets)"
