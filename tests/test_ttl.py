"""The packets CSV's ip_ttl (IPv4 TTL, IPv6 hop limit) on packets made with known TTLs, and
feature-extractor's --header TTL values built from it."""

from __future__ import annotations

import ipaddress
import shutil
import struct

import pandas as pd
import pytest

from conftest import run_script
from packet_bytes import (
    _checksum,
    ether_of,
    ethernet,
    ip_fragments,
    ip_in_ip,
    ip_packet,
    udp_segment,
    write_timed_capture,
)

pytestmark = pytest.mark.skipif(
    not shutil.which("text2pcap"), reason="text2pcap (Wireshark's) is not installed"
)

DEVICE = {4: "192.0.2.10", 6: "2001:db8::10"}
SERVER = {4: "198.51.100.7", 6: "2001:db8::7"}
START = 1_700_000_000.0


def with_ttl(packet: bytes, ttl: int) -> bytes:
    """An IP packet (20-byte IPv4 header, or IPv6) with its TTL / hop limit set."""
    if packet[0] >> 4 == 6:  # (no header checksum; UDP's pseudo-header leaves it out)
        return packet[:7] + bytes([ttl]) + packet[8:]
    header = packet[:8] + bytes([ttl]) + packet[9:10] + b"\0\0" + packet[12:20]
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + packet[20:]


def udp(version: int, outbound: bool, payload: bytes = b"x" * 20, port: int = 40001) -> bytes:
    a, b = (DEVICE[version], SERVER[version]) if outbound else (SERVER[version], DEVICE[version])
    ports = (port, 5000) if outbound else (5000, port)
    return ip_packet(a, b, 17, udp_segment(a, b, *ports, payload))


def arp_request() -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + bytes.fromhex("020000000001")
    body += ipaddress.IPv4Address(DEVICE[4]).packed + bytes(6)
    return ethernet(body + ipaddress.IPv4Address(SERVER[4]).packed, 0x0806)


def port_unreachable(packet: bytes) -> bytes:
    """The ICMP error answering an IPv4 UDP packet, quoting its header (and its TTL)."""
    body = struct.pack("!BBHI", 3, 3, 0, 0) + packet[:28]
    body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    src, dst = (str(ipaddress.IPv4Address(packet[a : a + 4])) for a in (16, 12))
    return ip_packet(src, dst, 1, body)


# (frame, the ip_ttl its row must have), in capture order
def crafted() -> list[tuple[bytes, str]]:
    sent = with_ttl(udp(4, True), 9)  # quoted below with its TTL 9
    answer = udp_segment(SERVER[4], DEVICE[4], 53, 40009, b"y" * 2000)
    pieces = ip_fragments(SERVER[4], DEVICE[4], 17, answer, ident=0x77, size=1200)
    return [
        (ether_of(with_ttl(udp(4, True), 64)), "64"),
        (ether_of(with_ttl(udp(4, False), 51)), "51"),
        (ether_of(with_ttl(udp(6, True), 255)), "255"),
        (ether_of(with_ttl(udp(6, False), 57)), "57"),
        (arp_request(), ""),
        # tunnels: the conversation's (inner) header's, not the outer one's
        (ether_of(with_ttl(ip_in_ip(with_ttl(udp(4, True, port=40002), 33)), 200)), "33"),
        (ether_of(with_ttl(ip_in_ip(with_ttl(udp(4, True, port=40003), 34), 6), 201)), "34"),
        # an ICMP error: its own TTL, not the quoted header's
        (ether_of(with_ttl(port_unreachable(sent), 250)), "250"),
        # fragments: each its own header's (the last completes the datagram)
        *((ether_of(with_ttl(p, ttl)), str(ttl)) for p, ttl in zip(pieces, (60, 61))),
    ]


@pytest.fixture(scope="module")
def translated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ttl")
    frames = crafted()
    capture = write_timed_capture(
        [(START + n / 10, frame) for n, (frame, _) in enumerate(frames)], folder / "ttl.pcap"
    )
    run_script("packet-translator.py", capture, "-o", folder, "-q")
    packets_csv = folder / "ttl.pcap.packets.csv"
    return packets_csv, [ttl for _, ttl in frames]


def test_ip_ttl_is_the_conversations_header_ttl_or_hop_limit(translated):
    packets_csv, expected = translated
    packets = pd.read_csv(packets_csv, dtype=str, keep_default_na=False)
    assert packets["ip_ttl"].tolist() == expected
    # (the rows are what the TTLs were set on: the tunnels' inner hosts, the fragments'
    # datagram)
    assert packets["tunnel"].tolist()[5:7] == ["ipip", "4in6"]
    assert packets["l4_proto"].tolist()[4:] == ["arp", "udp", "udp", "icmp", "udp", "udp"]
    assert packets["src_port"].tolist()[-2:] == ["53", "53"]


def test_the_flows_csv_is_unchanged_by_it(translated, tmp_path):
    packets_csv, _ = translated
    run_script("stream-identifier.py", packets_csv, "-o", tmp_path, "-q")
    flows = pd.read_csv(tmp_path / "ttl.pcap.flows.csv")
    assert not any("ttl" in c for c in flows.columns)


def test_header_features_hold_the_first_packets_ttls(tmp_path):
    """A flow of 4 packets (TTLs 64, 51, 64, 51) and one of 2 (128, 120): with L = 3 the
    flow's values are the first 3 TTLs, the uniflows each side's, padded with zeros; and
    the flag counts are still first."""
    frames = [
        with_ttl(udp(4, True), 64),
        with_ttl(udp(4, False), 51),
        with_ttl(udp(4, True), 64),
        with_ttl(udp(4, False), 51),
        with_ttl(udp(6, True, port=40005), 128),
        with_ttl(udp(6, False, port=40005), 120),
    ]
    capture = write_timed_capture(
        [(START + n / 10, ether_of(f)) for n, f in enumerate(frames)], tmp_path / "flows.pcap"
    )
    arguments = ["--features", "SIZE", "--header", "--length", "3", "-q"]
    run_script("feature-extractor.py", capture, *arguments, "-o", tmp_path / "flow")
    run_script(
        "feature-extractor.py",
        tmp_path / "flow" / "flows.pcap.packets.csv",
        "--unit",
        "uniflow",
        "--min-packets",
        "1",
        *arguments,
        "-o",
        tmp_path / "uniflow",
    )
    ttls = ["ttl_0", "ttl_1", "ttl_2"]
    flow = pd.read_csv(tmp_path / "flow" / "features.csv").sort_values("ts")
    values = flow.columns[flow.columns.get_loc("label") + 1 :].tolist()
    assert values == [f"tcp_{f}" for f in features_flags()] + ttls + ["size_0", "size_1", "size_2"]
    assert flow[ttls].values.tolist() == [[64, 51, 64], [128, 120, 0]]
    uniflow = pd.read_csv(tmp_path / "uniflow" / "features.csv").sort_values(["ts", "orig_h"])
    assert uniflow[ttls].values.tolist() == [[64, 64, 0], [51, 51, 0], [128, 0, 0], [120, 0, 0]]


def features_flags() -> list[str]:
    from iotsig import features

    return features.FLAG_NAMES


def test_a_window_counts_a_packet_without_ip_as_ttl_0(tmp_path):
    frames = [ether_of(with_ttl(udp(4, True), 64)), arp_request()]
    frames.append(ether_of(with_ttl(udp(4, False), 51)))
    capture = write_timed_capture(
        [(START + n / 10, f) for n, f in enumerate(frames)], tmp_path / "w.pcap"
    )
    run_script(
        "feature-extractor.py",
        capture,
        "--unit",
        "window",
        "--device-ip",
        DEVICE[4],
        "--header",
        "--length",
        "4",
        "-o",
        tmp_path,
        "-q",
    )
    window = pd.read_csv(tmp_path / "features.csv")
    assert window[["ttl_0", "ttl_1", "ttl_2", "ttl_3"]].values.tolist() == [[64, 0, 51, 0]]


def test_header_on_a_packets_csv_without_ip_ttl_names_the_column(translated, tmp_path):
    packets_csv, _ = translated
    old = tmp_path / "old.packets.csv"
    pd.read_csv(packets_csv, dtype=str, keep_default_na=False).drop(columns="ip_ttl").to_csv(
        old, index=False
    )
    result = run_script("feature-extractor.py", old, "--header", "-o", tmp_path, check=False)
    assert result.returncode != 0
    assert "ip_ttl" in result.stderr
    assert run_script("feature-extractor.py", old, "-o", tmp_path / "plain", "-q").returncode == 0
