"""Minimal classic-pcap reading and writing (no third-party packages).

Reading understands the link types dumpcap/tshark use on Linux loopback (Ethernet with zero MACs),
Linux cooked capture v1/v2, raw IPv4 and BSD loopback, IPv4 only. Writing produces Ethernet/IPv4/UDP
frames, which is what sipp's ``play_pcap_audio`` expects.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276


@dataclass(frozen=True)
class UdpPacket:
    """One UDP datagram seen in a capture."""

    timestamp: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def _ipv4_payload(frame: bytes, linktype: int) -> bytes | None:
    """Strip the link-layer header; return the IPv4 packet or None for anything else."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        offset, ethertype = 12, struct.unpack_from("!H", frame, 12)[0]
        while ethertype == 0x8100 and len(frame) >= offset + 6:  # 802.1Q tags
            offset += 4
            ethertype = struct.unpack_from("!H", frame, offset)[0]
        return frame[offset + 2 :] if ethertype == 0x0800 else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        return frame[16:] if struct.unpack_from("!H", frame, 14)[0] == 0x0800 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        return frame[20:] if struct.unpack_from("!H", frame, 0)[0] == 0x0800 else None
    if linktype == LINKTYPE_RAW:
        return frame if frame[:1] and frame[0] >> 4 == 4 else None
    if linktype == LINKTYPE_NULL:
        if len(frame) < 4:
            return None
        family = struct.unpack_from("=I", frame, 0)[0]
        return frame[4:] if family == socket.AF_INET else None
    return None


def _udp_from_ipv4(ip: bytes) -> tuple[tuple[str, int], tuple[str, int], bytes] | None:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total_len = struct.unpack_from("!H", ip, 2)[0]
    frag = struct.unpack_from("!H", ip, 6)[0]
    if ip[9] != 17 or frag & 0x1FFF:  # not UDP, or a non-first fragment
        return None
    src_ip = socket.inet_ntoa(ip[12:16])
    dst_ip = socket.inet_ntoa(ip[16:20])
    udp = ip[ihl : total_len if total_len else None]
    if len(udp) < 8:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", udp, 0)
    return (src_ip, sport), (dst_ip, dport), udp[8 : ulen if ulen >= 8 else None]


def read_udp_packets(path: Path) -> Iterator[UdpPacket]:
    """Yield the IPv4 UDP packets of a classic pcap file (a truncated last record is ignored)."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic_le = struct.unpack_from("<I", data, 0)[0]
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = "<"
    elif struct.unpack_from(">I", data, 0)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = ">"
    else:
        raise ValueError(f"{path} is not a classic pcap file (pcapng? capture with dumpcap -P)")
    magic = struct.unpack_from(endian + "I", data, 0)[0]
    frac = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    offset = 24
    while offset + 16 <= len(data):
        sec, sub, caplen, _origlen = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        if offset + caplen > len(data):
            break
        frame = data[offset : offset + caplen]
        offset += caplen
        ip = _ipv4_payload(frame, linktype)
        if ip is None:
            continue
        udp = _udp_from_ipv4(ip)
        if udp is None:
            continue
        yield UdpPacket(sec + sub * frac, udp[0], udp[1], udp[2])


def _ip_checksum(header: bytes) -> int:
    total = sum(int(word) for word in struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet_udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int = 0) -> bytes:
    """Build an Ethernet/IPv4/UDP frame (UDP checksum 0 = none, which IPv4 allows)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        ident & 0xFFFF,
        0x4000,
        64,
        17,
        0,
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    ip_header = ip_header[:10] + struct.pack("!H", _ip_checksum(ip_header)) + ip_header[12:]
    ether = b"\x00" * 12 + b"\x08\x00"
    return ether + ip_header + udp


def write_udp_pcap(
    path: Path,
    packets: Iterable[tuple[float, bytes]],
    *,
    src: tuple[str, int],
    dst: tuple[str, int],
) -> int:
    """Write ``(timestamp, udp_payload)`` pairs as an Ethernet pcap from ``src`` to ``dst``; return count."""
    count = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for ts, payload in packets:
            frame = ethernet_udp_frame(src, dst, payload, ident=count)
            sec = int(ts)
            usec = round((ts - sec) * 1_000_000)
            out.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            out.write(frame)
            count += 1
    return count
