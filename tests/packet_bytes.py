"""Packets built byte by byte (IPv4 with valid checksums), for captures that no public
capture provides; text2pcap turns them into pcaps."""

from __future__ import annotations

import ipaddress
import struct


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
