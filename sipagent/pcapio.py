"""Reading and writing classic pcap files of UDP traffic (SIP and RTP), via dpkt.

Captures are what ``sipagent replay`` consumes and what ``fixtures/`` holds: the standard libpcap
format (Wireshark, tshark and sipp open it). Only IPv4/IPv6 UDP matters to us; everything else in a
capture (ARP, TCP, ICMP) is skipped. Link types: Ethernet, Linux cooked (SLL), raw IP and loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dpkt

from .errors import SipAgentError

Endpoint = tuple[str, int]


class PcapError(SipAgentError, ValueError):
    """The file is not a readable pcap capture."""


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One captured UDP datagram with its capture time (seconds since the epoch)."""

    time: float
    src: Endpoint
    dst: Endpoint
    payload: bytes


def _ip_text(raw: bytes) -> str:
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw)


def _udp_of(ip: dpkt.ip.IP | dpkt.ip6.IP6) -> tuple[str, str, dpkt.udp.UDP] | None:
    udp = ip.data
    if not isinstance(udp, dpkt.udp.UDP):
        return None
    return _ip_text(ip.src), _ip_text(ip.dst), udp


def _network_layer(linktype: int, frame: bytes) -> dpkt.ip.IP | dpkt.ip6.IP6 | None:
    if linktype == dpkt.pcap.DLT_EN10MB:
        packet = dpkt.ethernet.Ethernet(frame).data
    elif linktype == dpkt.pcap.DLT_LINUX_SLL:
        packet = dpkt.sll.SLL(frame).data
    elif linktype in (dpkt.pcap.DLT_RAW, 101):  # 101 = LINKTYPE_RAW on the wire
        packet = dpkt.ip.IP(frame) if frame[:1] and frame[0] >> 4 == 4 else dpkt.ip6.IP6(frame)
    elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        packet = dpkt.loopback.Loopback(frame).data
    else:
        raise PcapError(f"unsupported pcap link type {linktype}")
    return packet if isinstance(packet, dpkt.ip.IP | dpkt.ip6.IP6) else None


def read_udp(path: Path) -> Iterator[UdpDatagram]:
    """Every UDP datagram in ``path``, in capture order. Truncated or foreign frames are skipped."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise PcapError(f"cannot open {path}: {exc.strerror}") from None
    with handle:
        try:
            reader = dpkt.pcap.Reader(handle)
        except (ValueError, dpkt.dpkt.Error) as exc:
            raise PcapError(f"{path} is not a pcap file ({exc})") from None
        linktype = reader.datalink()
        for timestamp, frame in reader:
            try:
                ip = _network_layer(linktype, frame)
            except (dpkt.dpkt.UnpackError, dpkt.dpkt.NeedData, ValueError):
                continue
            if ip is None:
                continue
            parts = _udp_of(ip)
            if parts is None:
                continue
            src, dst, udp = parts
            yield UdpDatagram(float(timestamp), (src, int(udp.sport)), (dst, int(udp.dport)), bytes(udp.data))


def write_udp(path: Path, datagrams: Iterable[UdpDatagram]) -> int:
    """Write ``datagrams`` as an Ethernet/IPv4/UDP pcap (what Wireshark expects). Returns the count."""
    count = 0
    with path.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=dpkt.pcap.DLT_EN10MB, nano=False)
        for datagram in datagrams:
            udp = dpkt.udp.UDP(sport=datagram.src[1], dport=datagram.dst[1], data=datagram.payload)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(
                src=socket.inet_aton(datagram.src[0]),
                dst=socket.inet_aton(datagram.dst[0]),
                p=dpkt.ip.IP_PROTO_UDP,
                data=udp,
                ttl=64,
            )
            ip.len = len(ip)
            frame = dpkt.ethernet.Ethernet(
                src=b"\x02\x00\x00\x00\x00\x01",
                dst=b"\x02\x00\x00\x00\x00\x02",
                type=dpkt.ethernet.ETH_TYPE_IP,
                data=ip,
            )
            writer.writepkt(bytes(frame), ts=datagram.time)
            count += 1
    return count
