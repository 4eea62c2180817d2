"""Packets built byte by byte (IPv4 with valid checksums), for captures that no public
capture provides; text2pcap turns them into pcaps."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_packet(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        0,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + payload


def transport_packet(
    src: str, dst: str, protocol: int, header: bytes, checksum_at: int, payload: bytes
) -> bytes:
    segment = header + payload
    pseudo = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!BBH", 0, protocol, len(segment))
    )
    checksum = _checksum(pseudo + segment) or 0xFFFF
    segment = segment[:checksum_at] + struct.pack("!H", checksum) + segment[checksum_at + 2 :]
    return ipv4_packet(src, dst, protocol, segment)


# --- fragments and tunnels (IPv4 and IPv6, Ethernet around them) ----------------------------


def ethernet(payload: bytes, ethertype: int = 0x0800, src: str = "02:00:00:00:00:01") -> bytes:
    destination = bytes.fromhex("020000000002")
    return (
        destination + bytes.fromhex(src.replace(":", "")) + struct.pack("!H", ethertype) + payload
    )


def ipv4_header(
    src: str, dst: str, protocol: int, length: int, ident: int = 1, fragment: int = 0
) -> bytes:
    """20 bytes; `fragment`: the flags and offset word (0x2000 = more fragments)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + length,
        ident,
        fragment,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:]


def ipv6_packet(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def udp_segment(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """UDP header and payload, checksummed over the IPv4 or IPv6 pseudo-header."""
    length = 8 + len(payload)
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        pseudo = a.packed + b.packed + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = a.packed + b.packed + struct.pack("!I3xB", length, 17)
    checksum = _checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, checksum) + payload


def ip_packet(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet, by the addresses' version."""
    if ipaddress.ip_address(src).version == 6:
        return ipv6_packet(src, dst, protocol, payload)
    return ipv4_header(src, dst, protocol, len(payload)) + payload


def ip_fragments(
    src: str, dst: str, protocol: int, payload: bytes, ident: int, size: int = 1200
) -> list[bytes]:
    """The payload (a whole UDP segment, say) cut into IPv4 or IPv6 fragments of `size`
    bytes (a multiple of 8), first to last."""
    pieces = [payload[at : at + size] for at in range(0, len(payload), size)]
    packets = []
    for number, piece in enumerate(pieces):
        more = number < len(pieces) - 1
        offset = number * size // 8
        if ipaddress.ip_address(src).version == 4:
            word = (0x2000 if more else 0) | offset
            packets.append(ipv4_header(src, dst, protocol, len(piece), ident, word) + piece)
        else:
            header = struct.pack("!BxHI", protocol, (offset << 3) | more, ident)
            packets.append(ipv6_packet(src, dst, 44, header + piece))
    return packets


def ether_of(packet: bytes) -> bytes:
    """An IP packet in an Ethernet frame, its ethertype by the IP version."""
    return ethernet(packet, 0x86DD if packet[0] >> 4 == 6 else 0x0800)


# Tunnels around an IP packet: the outer ends (by outer IP version), VXLAN's inner MAC.
OUTER = {4: ("203.0.113.1", "203.0.113.2"), 6: ("2001:db8:ffff::1", "2001:db8:ffff::2")}
INNER_MAC = "02:00:00:00:00:aa"


def gre(inner: bytes, version: int = 4) -> bytes:
    ethertype = 0x86DD if inner[0] >> 4 == 6 else 0x0800
    return ip_packet(*OUTER[version], 47, struct.pack("!HH", 0, ethertype) + inner)


def ip_in_ip(inner: bytes, version: int = 4) -> bytes:
    return ip_packet(*OUTER[version], 41 if inner[0] >> 4 == 6 else 4, inner)


def vxlan(inner: bytes, version: int = 4) -> bytes:
    frame = ethernet(inner, 0x86DD if inner[0] >> 4 == 6 else 0x0800, src=INNER_MAC)
    header = struct.pack("!II", 0x08000000, 42 << 8)  # flags: VNI present; VNI 42
    return ip_packet(*OUTER[version], 17, udp_segment(*OUTER[version], 49152, 4789, header + frame))


TUNNELS = {  # the tunnel column's value -> how to wrap a packet (outer IP version)
    "gre": lambda p: gre(p),
    "ipip": lambda p: ip_in_ip(p),
    "4in6": lambda p: ip_in_ip(p, 6),
    "vxlan": lambda p: vxlan(p),
}


def write_timed_capture(packets: list[tuple[float, bytes]], path: Path) -> Path:
    """(epoch seconds, Ethernet frame) in order -> a pcap, through text2pcap's hex dump."""
    dump = path.with_suffix(".txt")
    with open(dump, "w") as out:
        for t, frame in packets:
            out.write(f"{t:.6f}\n")
            for offset in range(0, len(frame), 16):
                out.write(f"{offset:06x}  {frame[offset : offset + 16].hex(' ')}\n")
            out.write("\n")
    command = ["text2pcap", "-q", "-F", "pcap", "-t", "%s.", str(dump), str(path)]
    subprocess.run(command, check=True, capture_output=True)
    dump.unlink()
    return path
