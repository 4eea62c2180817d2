"""A big capture of real traffic in which no conversation repeats: the shared captures,
copied as many times as needed, each copy's IP addresses moved to other subnets.

Concatenating the same captures again (bench.big_capture) replays the same TCP segments
under the same addresses: tshark takes the later copies for retransmissions of the first
(it remembers every conversation of the capture), which no real capture does. A capture
whose chunks are compared with its whole translation must not depend on state that old.

Copy k adds k to the third byte of every IPv4 address (192.168.1.x -> 192.168.1+k.x) and
to the sixth byte of every IPv6 address (its /48 site), tunnelled ones too: private stays
private, external stays external; and to the first byte of QUIC connection IDs. Only
Ethernet, Linux cooked and raw IP frames are rewritten (the other link types are a few
hundred 802.11 frames, copied as they are). Checksums are left as they were: tshark does
not check them by default.
"""

from __future__ import annotations

import struct
from pathlib import Path

LINK_OFFSETS = {1: 14, 113: 16, 101: 0, 228: 0, 229: 0}  # link type -> its header's length


def rewrite_copy(source: Path, target: Path, shift: int) -> None:
    """source (pcapng, little- or big-endian sections) -> target with addresses shifted."""
    data = bytearray(source.read_bytes())
    order, links, at = "<", [], 0
    while at + 12 <= len(data):
        if data[at : at + 4] == b"\x0a\x0d\x0d\x0a":  # section header: its byte order
            order = "<" if data[at + 8 : at + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        kind, length = struct.unpack_from(order + "II", data, at)
        if kind == 1:  # interface description
            links.append(struct.unpack_from(order + "H", data, at + 8)[0])
        elif kind == 6:  # enhanced packet
            interface, _, _, captured = struct.unpack_from(order + "IIII", data, at + 8)
            frame = at + 28
            if interface < len(links):
                _shift_addresses(data, frame, captured, links[interface], shift)
        if length < 12:
            raise ValueError(f"{source}: damaged pcapng block at byte {at}")
        at += length
    target.write_bytes(bytes(data))


def _shift_addresses(data: bytearray, frame: int, size: int, link: int, shift: int) -> None:
    if link not in LINK_OFFSETS:
        return
    header = frame + LINK_OFFSETS[link]
    if link == 1:
        ethertype = int.from_bytes(data[frame + 12 : frame + 14], "big")
        while ethertype in (0x8100, 0x88A8) and header + 4 <= frame + size:  # VLAN tags
            ethertype = int.from_bytes(data[header + 2 : header + 4], "big")
            header += 4
    elif link == 113:
        ethertype = int.from_bytes(data[frame + 14 : frame + 16], "big")
    else:
        ethertype = {4: 0x0800, 6: 0x86DD}.get(data[header] >> 4, 0) if header < frame + size else 0
    end = frame + size
    while True:  # the IP header, then the one it carries (6in4, IP in IP)
        if ethertype == 0x0800 and header + 20 <= end:
            bytes_, protocol, length = (header + 14, header + 18), data[header + 9], 0
            length = (data[header] & 0x0F) * 4
        elif ethertype == 0x86DD and header + 40 <= end:
            bytes_, protocol, length = (header + 13, header + 29), data[header + 6], 40
        else:
            return
        for byte in bytes_:  # the third (IPv4) or sixth (IPv6) byte of both addresses
            data[byte] = (data[byte] + shift) % 256
        header += length
        if protocol in (4, 41):
            ethertype = 0x0800 if protocol == 4 else 0x86DD
            continue
        if protocol == 17 and header + 9 <= end:
            _shift_quic_ids(data, header, end, shift)
        return


def _shift_quic_ids(data: bytearray, udp: int, end: int, shift: int) -> None:
    """QUIC (UDP 443) names its connections by IDs, not addresses: a copy must not reuse
    the IDs of the copy before it. The first byte of each ID is shifted (the Initial
    packets of the copies can then not be decrypted: in the whole and the chunked run
    alike)."""
    ports = (
        int.from_bytes(data[udp : udp + 2], "big"),
        int.from_bytes(data[udp + 2 : udp + 4], "big"),
    )
    payload = udp + 8
    if 443 not in ports or payload >= end:
        return
    if data[payload] & 0x80:  # long header: version, DCID length and DCID, SCID length and SCID
        at = payload + 5
        for _ in range(2):
            if at >= end:
                return
            length = data[at]
            if length and at + 1 < end:
                data[at + 1] = (data[at + 1] + shift) % 256
            at += 1 + length
    elif data[payload] & 0x40 and payload + 1 < end:  # short header: the DCID follows
        data[payload + 1] = (data[payload + 1] + shift) % 256
