"""IP fragments and tunnels: the packets and flows CSVs of real captures (dns_fragmented.pcap,
6in4tunnel.pcap) and of captures built byte by byte with text2pcap and cut with editcap.

Fragments: every fragment's row carries its datagram's conversation (ports included), so
that the datagram is one flow, bytes counted once and whole. Tunnels: the inner packet is
the conversation; the outer header is in tunnel, outer_ip_src, outer_ip_dst."""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import CAPTURES, capinfos_count, run_script
from packet_bytes import (
    INNER_MAC,
    OUTER,
    TUNNELS,
    ether_of,
    gre,
    ip_fragments,
    ip_packet,
    udp_segment,
    write_timed_capture,
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("text2pcap") and shutil.which("editcap")),
    reason="text2pcap and editcap (Wireshark's) are not installed",
)

DNS_FRAGMENTED = CAPTURES / "dns_fragmented.pcap"
DEVICE = {4: "192.0.2.10", 6: "2001:db8::10"}
RESOLVER = {4: "198.51.100.53", 6: "2001:db8::53"}


# --- captures built byte by byte --------------------------------------------------------------


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(name: str, ident: int = 7) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + dns_name(name) + b"\0\1\0\1"


def dns_answer(name: str, answers: int, ident: int = 7) -> bytes:
    """An answer with `answers` A records: 16 bytes each, past one MTU from ~90 on."""
    records = b"".join(
        b"\xc0\x0c\0\1\0\1\0\0\0\x3c\0\4" + bytes([203, 0, 113, n % 250 + 1])
        for n in range(answers)
    )
    header = struct.pack("!HHHHHH", ident, 0x8180, 1, answers, 0, 0)
    return header + dns_name(name) + b"\0\1\0\1" + records


def write_capture(frames: list[bytes], path: Path, start: float = 1_700_000_000.0) -> Path:
    """Ethernet frames -> a pcap through text2pcap's hex dump, a tenth of a second apart."""
    return write_timed_capture([(start + n / 10, f) for n, f in enumerate(frames)], path)


def fragmented_answers(version: int, ports=(40001, 40002)) -> list[bytes]:
    """Two DNS exchanges between the same two hosts, each answer in three fragments, the
    fragments of the two answers interleaved (same addresses, other ports and datagram
    identifications): they must never be merged."""
    device, resolver = DEVICE[version], RESOLVER[version]
    queries, answers = [], []
    for number, port in enumerate(ports):
        name = f"big{number}.example.com"
        query = udp_segment(device, resolver, port, 53, dns_query(name, number))
        queries.append(ether_of(ip_packet(device, resolver, 17, query)))
        answer = udp_segment(resolver, device, 53, port, dns_answer(name, 150, number))
        pieces = ip_fragments(resolver, device, 17, answer, ident=0x1000 + number, size=1200)
        answers.append([ether_of(p) for p in pieces])
    assert all(len(a) == 3 for a in answers)
    interleaved = [frame for pair in zip(*answers) for frame in pair]
    return queries + interleaved


def datagram_bytes(version: int, answers: int = 150) -> tuple[int, int]:
    """(the UDP payload of one answer, the frame bytes of its three fragments)."""
    answer = udp_segment(
        RESOLVER[version], DEVICE[version], 53, 40001, dns_answer("big0.example.com", answers, 0)
    )
    pieces = ip_fragments(RESOLVER[version], DEVICE[version], 17, answer, 0x1000, 1200)
    return len(answer) - 8, sum(len(ether_of(p)) for p in pieces)


# --- running the scripts ------------------------------------------------------------------------


def made_captures(folder: Path) -> dict[str, Path]:
    """Every capture the quick tests read, by name: real ones and ones built here."""
    made = {"dns_fragmented.pcap": DNS_FRAGMENTED, "6in4tunnel.pcap": CAPTURES / "6in4tunnel.pcap"}
    for version in (4, 6):
        made[f"frag{version}.pcap"] = write_capture(
            fragmented_answers(version), folder / f"frag{version}.pcap"
        )
    cut = folder / "incomplete.pcap"  # dns_fragmented.pcap without frames 2 and 5
    subprocess.run(["editcap", str(DNS_FRAGMENTED), str(cut), "2", "5"], check=True)
    made[cut.name] = cut
    for tunnel, wrap in TUNNELS.items():
        frames = [ether_of(wrap(p)) for p in dns_exchange()]
        made[f"{tunnel}.pcap"] = write_capture(frames, folder / f"{tunnel}.pcap")
    query = dns_exchange()[0]
    frames = [query, icmp_port_unreachable(query)]
    made["icmp.pcap"] = write_capture([ether_of(p) for p in frames], folder / "icmp.pcap")
    frames = [ether_of(gre(p)) for p in frames]
    made["icmp-in-gre.pcap"] = write_capture(frames, folder / "icmp-in-gre.pcap")
    made["gre-frag.pcap"] = write_capture(gre_fragments(), folder / "gre-frag.pcap")
    return made


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The captures through packet-translator (one run) and stream-identifier (one run), as
    a user runs them; of(name) -> (packets, flows, the translator's lines about it)."""
    folder = tmp_path_factory.mktemp("fragments-tunnels")
    captures = made_captures(folder)
    out = folder / "out"
    result = run_script("packet-translator.py", *captures.values(), "-o", out, "-q")
    csvs = [out / f"{c.name}.packets.csv" for c in captures.values()]
    run_script("stream-identifier.py", *csvs, "-o", out, "-q")

    def of(name: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        capture = captures[name]
        read = lambda kind: pd.read_csv(  # noqa: E731
            out / f"{capture.name}.{kind}.csv", dtype=str, keep_default_na=False
        )
        lines = [line for line in result.stderr.splitlines() if f" {capture}: " in line]
        return read("packets"), read("flows"), lines

    return SimpleNamespace(of=of, captures=captures)


def portless(flows: pd.DataFrame) -> pd.DataFrame:
    return flows[
        flows["proto"].isin(["tcp", "udp"]) & ((flows["orig_p"] == "") | (flows["resp_p"] == ""))
    ]


# --- fragments -------------------------------------------------------------------------------


def test_a_fragmented_dns_answer_is_one_flow_with_all_its_bytes(batch):
    """dns_fragmented.pcap (real): the IPv4 answer of frames 2-3 and the IPv6 answer of
    frames 5-6 are each one flow with their query: the fragment's frame counted, the
    datagram's payload once (1702 and 1501 bytes), and no port-less UDP flow."""
    packets, flows, warnings = batch.of("dns_fragmented.pcap")
    assert warnings == []
    assert len(packets) == capinfos_count(DNS_FRAGMENTED)
    assert portless(flows).empty, portless(flows)[["orig_h", "resp_h"]]
    first = packets[packets["frame_number"].isin(["2", "3", "5", "6"])]
    assert first[["l4_proto", "src_port", "dst_port"]].values.tolist() == [
        ["udp", "53", "56680"],
        ["udp", "53", "56680"],
        ["udp", "53", "46433"],
        ["udp", "53", "46433"],
    ]
    # Payload once, in the frame that completes the datagram; none in the fragment.
    assert first["l4_payload_len"].tolist() == ["", "1702", "", "1501"]
    v4 = flows[flows["orig_p"] == "56680"].iloc[0]
    assert (v4["orig_pkts"], v4["resp_pkts"]) == ("1", "2")
    assert (v4["resp_bytes"], v4["resp_frame_bytes"]) == ("1702", str(1514 + 264))
    v6 = flows[flows["orig_p"] == "46433"].iloc[0]
    assert (v6["resp_pkts"], v6["resp_bytes"], v6["resp_frame_bytes"]) == (
        "2",
        "1501",
        str(1510 + 123),
    )
    assert (
        packets["frame_len"].astype(int).sum()
        == flows[["orig_frame_bytes", "resp_frame_bytes"]].astype(int).sum().sum()
    )


@pytest.mark.parametrize("version", [4, 6])
def test_fragments_of_two_datagrams_between_the_same_hosts_are_never_merged(batch, version):
    packets, flows, warnings = batch.of(f"frag{version}.pcap")
    assert warnings == []
    assert portless(flows).empty
    assert sorted(flows["orig_p"]) == ["40001", "40002"]
    payload, frame_bytes = datagram_bytes(version)
    for port in ("40001", "40002"):
        flow = flows[flows["orig_p"] == port].iloc[0]
        assert (flow["orig_pkts"], flow["resp_pkts"]) == ("1", "3")
        assert flow["resp_bytes"] == str(payload)
        assert flow["resp_frame_bytes"] == str(frame_bytes)
    # Each fragment row: its own datagram's ports (frames 3, 5, 7: the first answer's).
    answers = packets.iloc[2:]
    assert answers["dst_port"].tolist() == ["40001", "40002"] * 3
    assert (answers["l4_payload_len"] != "").sum() == 2  # the two completing frames


def test_a_datagram_completed_in_a_later_chunk_joins_its_fragments(tmp_path, monkeypatch):
    """The frame that completes a datagram comes after its fragments, here several chunks
    later: the rows wait for it, and the CSV is byte for byte that of one read."""
    from iotsig import packets

    capture = write_capture(fragmented_answers(6), tmp_path / "frag6.pcap")
    whole = packets.translate(capture, tmp_path / "whole.csv")
    monkeypatch.setattr(packets, "CHUNK_ROWS", 1)
    chunked = packets.translate(capture, tmp_path / "chunked.csv")
    assert whole.warnings == chunked.warnings == []
    text = (tmp_path / "chunked.csv").read_text()
    assert text == (tmp_path / "whole.csv").read_text()
    rows = pd.read_csv(tmp_path / "chunked.csv", dtype=str, keep_default_na=False)
    assert rows["frame_number"].tolist() == [str(n) for n in range(1, 9)]
    assert rows["dst_port"].iloc[2:].tolist() == ["40001", "40002"] * 3


def test_a_fragment_waits_a_bounded_number_of_frames(tmp_path, monkeypatch):
    """Rows wait for a datagram at most FRAGMENT_WAIT_FRAMES frames (memory stays bounded):
    past that, a fragment is kept as tshark gives it and counted as never completed."""
    from iotsig import packets

    capture = write_capture(fragmented_answers(6), tmp_path / "frag6.pcap")
    monkeypatch.setattr(packets, "CHUNK_ROWS", 1)
    # Frames 3-8: the two answers' fragments interleaved, each completed 4 frames after its
    # first fragment: the first fragments (3, 4) wait too long, the second ones do not.
    monkeypatch.setattr(packets, "FRAGMENT_WAIT_FRAMES", 2)
    result = packets.translate(capture, tmp_path / "bounded.csv")
    assert result.warnings == [
        f"{capture}: 2 IP fragment(s) whose datagram never completed (first: frame 3): kept "
        "as tshark gives them, without ports"
    ]
    rows = pd.read_csv(tmp_path / "bounded.csv", dtype=str, keep_default_na=False)
    assert rows["frame_number"].tolist() == [str(n) for n in range(1, 9)]
    assert rows["dst_port"].iloc[2:].tolist() == ["", "", "40001", "40002", "40001", "40002"]


def test_fragments_whose_datagram_never_completes_are_kept_with_one_warning(batch):
    """dns_fragmented.pcap without frames 2 and 5 (editcap): the last fragments of those two
    answers never complete a datagram. Their rows stay, as tshark gives them (udp, no
    ports), the other datagrams are joined, and one warning counts them."""
    packets, flows, warnings = batch.of("incomplete.pcap")
    cut = batch.captures["incomplete.pcap"]
    assert len(packets) == capinfos_count(DNS_FRAGMENTED) - 2
    assert warnings == [
        f"packet-translator.py: warning: {cut}: 2 IP fragment(s) whose datagram never completed "
        "(first: frame 2): kept as tshark gives them, without ports"
    ]
    lonely = packets[packets["frame_number"].isin(["2", "4"])]  # old frames 3 and 6
    assert (
        lonely[["l4_proto", "src_port", "l4_payload_len"]].values.tolist() == [["udp", "", ""]] * 2
    )
    joined = packets[packets["frame_number"] == "9"]  # old frame 11: completed by old 12
    assert joined[["src_port", "dst_port"]].values.tolist() == [["53", "59464"]]
    assert flows[["orig_pkts", "resp_pkts"]].astype(int).sum().sum() == len(packets)


@pytest.mark.slow  # main.py on two recordings
def test_main_on_two_recordings_with_fragmented_answers_gives_policies_with_ports(tmp_path):
    """The issue's case: two recordings of an IPv6 device whose DNS answer comes in fragments.
    The pattern is the DNS exchange with its port; no port-less pattern is left out of
    profile.yaml (before, the fragments made one, with no policy possible)."""
    frames = fragmented_answers(6, ports=(40001,))  # the query, the answer's 3 fragments
    recordings = [
        write_capture(frames, tmp_path / f"rec{n}.pcap", start=1_700_000_000.0 + 3600 * n)
        for n in range(2)
    ]
    out = tmp_path / "out"
    run_script("main.py", "resolver-client", DEVICE[6], *recordings, "-o", out, "-q", "--no-report")
    profile = yaml.safe_load((out / "profile.yaml").read_text())
    policies = profile_policies(profile)
    assert policies, profile
    for rule in policies:
        protocols = rule["protocols"]
        assert "udp" in protocols and protocols["udp"], rule
    pattern = (out / "pattern.txt").read_text()
    assert "no UDP port" not in pattern, pattern


def profile_policies(profile) -> list[dict]:
    """Every policy of a profile.yaml, wherever the format nests them."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "protocols" in node:
                found.append(node)
            else:
                for value in node.values():
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(profile)
    return found


# --- tunnels -----------------------------------------------------------------------------------


def dns_exchange(version: int = 4, port: int = 40001) -> list[bytes]:
    """A device's DNS query and its answer, as IP packets."""
    device, resolver = DEVICE[version], RESOLVER[version]
    query = udp_segment(device, resolver, port, 53, dns_query("iot.example.com"))
    answer = udp_segment(resolver, device, 53, port, dns_answer("iot.example.com", 2))
    return [ip_packet(device, resolver, 17, query), ip_packet(resolver, device, 17, answer)]


def icmp_port_unreachable(packet: bytes) -> bytes:
    """The ICMP error a host sends back for an IPv4 UDP packet: the IP header and the
    first 8 bytes of the datagram quoted (eth:ip:icmp:ip:udp), which is not a tunnel."""
    from packet_bytes import _checksum

    quoted = packet[:28]
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    src, dst = (str(ipaddress.IPv4Address(packet[a : a + 4])) for a in (16, 12))
    return ip_packet(src, dst, 1, body)


@pytest.mark.parametrize("tunnel", list(TUNNELS))
def test_a_dns_exchange_inside_a_tunnel_is_one_flow_of_the_inner_hosts(batch, tunnel):
    packets, flows, warnings = batch.of(f"{tunnel}.pcap")
    assert warnings == []
    outer_src, outer_dst = OUTER[6 if tunnel == "4in6" else 4]
    assert packets[
        ["ip_version", "ip_src", "ip_dst", "l4_proto", "src_port", "dst_port"]
    ].values.tolist() == [
        ["4", DEVICE[4], RESOLVER[4], "udp", "40001", "53"],
        ["4", RESOLVER[4], DEVICE[4], "udp", "53", "40001"],
    ]
    assert (
        packets[["tunnel", "outer_ip_src", "outer_ip_dst"]].values.tolist()
        == [[tunnel, outer_src, outer_dst]] * 2
    )
    assert packets["dns_qry_name"].tolist() == ["iot.example.com"] * 2
    assert packets["l4_payload_len"].tolist() == [
        str(len(dns_query("iot.example.com"))),
        str(len(dns_answer("iot.example.com", 2))),
    ]
    if tunnel == "vxlan":  # the inner Ethernet header's MAC, not the outer one
        assert packets["eth_src"].tolist() == [INNER_MAC] * 2
    assert len(flows) == 1
    flow = flows.iloc[0]
    assert (flow["orig_h"], flow["orig_p"], flow["resp_h"], flow["resp_p"]) == (
        DEVICE[4],
        "40001",
        RESOLVER[4],
        "53",
    )
    assert (flow["proto"], flow["orig_pkts"], flow["resp_pkts"]) == ("udp", "1", "1")
    assert flow["dns_qry_name"] == "iot.example.com"


def test_ipv6_in_ipv4_real_capture_gives_the_inner_conversation(batch):
    """6in4tunnel.pcap (real): IPv6 rows, the IPv4 ends in outer_ip_src/outer_ip_dst; its
    ICMPv6 errors quote an IPv6 TCP packet and stay ICMPv6 rows without ports."""
    packets, flows, warnings = batch.of("6in4tunnel.pcap")
    assert set(packets["ip_version"]) == {"6"} and set(packets["tunnel"]) == {"6in4"}
    assert set(packets["outer_ip_src"]) | set(packets["outer_ip_dst"]) == {
        "174.3.73.24",
        "184.105.255.26",
    }
    error = packets[packets["frame_number"] == "3"].iloc[0]
    assert (error["l4_proto"], error["src_port"], error["ip_src"]) == (
        "icmpv6",
        "",
        "2001:470:1f16:13f::2",
    )
    assert all(":" in h for h in flows["orig_h"]) and all(":" in h for h in flows["resp_h"])


@pytest.mark.parametrize("tunnelled", [False, True], ids=["plain", "in gre"])
def test_an_icmp_error_is_the_icmp_packet_not_the_one_it_quotes(batch, tunnelled):
    """eth:ip:icmp:ip:udp is not a tunnel: the row is the ICMP error, from the resolver,
    without the quoted ports; inside GRE it is the inner ICMP error, tunnel gre."""
    packets, flows, warnings = batch.of("icmp-in-gre.pcap" if tunnelled else "icmp.pcap")
    assert warnings == []
    row = packets.iloc[1]
    assert (row["l4_proto"], row["src_port"], row["dst_port"], row["icmp_type"]) == (
        "icmp",
        "",
        "",
        "3",
    )
    assert (row["ip_src"], row["ip_dst"]) == (RESOLVER[4], DEVICE[4])
    assert row["tunnel"] == ("gre" if tunnelled else "")
    assert packets["l4_payload_len"].tolist() == [str(len(dns_query("iot.example.com"))), ""]


@pytest.mark.slow  # main.py on two recordings
def test_main_finds_a_device_whose_address_is_only_inside_a_gre_tunnel(tmp_path):
    recordings = [
        write_capture(
            [ether_of(gre(p)) for p in dns_exchange(port=40001 + n)],
            tmp_path / f"gre{n}.pcap",
            start=1_700_000_000.0 + 3600 * n,
        )
        for n in range(2)
    ]
    out = tmp_path / "out"
    run_script("main.py", "tunnelled", DEVICE[4], *recordings, "-o", out, "-q", "--no-report")
    pattern = (out / "pattern.txt").read_text()
    assert "iot.example.com" in pattern, pattern
    policies = profile_policies(yaml.safe_load((out / "profile.yaml").read_text()))
    assert any("udp" in p["protocols"] and "53" in str(p["protocols"]["udp"]) for p in policies), (
        policies
    )


def gre_fragments() -> list[bytes]:
    """A DNS query in GRE, and its 2.4 kB answer in a GRE packet cut in three outer IPv4
    fragments on its way."""
    query, _ = dns_exchange()
    answer = udp_segment(RESOLVER[4], DEVICE[4], 53, 40001, dns_answer("iot.example.com", 150))
    inner = ip_packet(RESOLVER[4], DEVICE[4], 17, answer)
    gre_payload = struct.pack("!HH", 0, 0x0800) + inner
    pieces = ip_fragments(*OUTER[4], 47, gre_payload, ident=0x2000, size=1200)
    return [ether_of(gre(query))] + [ether_of(p) for p in pieces]


def test_fragments_of_a_tunnel_packet_belong_to_the_inner_conversation(batch):
    """A GRE packet fragmented on its way (outer IPv4 fragments, a 2.4 kB DNS answer
    inside): every fragment's row is the inner conversation's, one flow with the query."""
    packets, flows, warnings = batch.of("gre-frag.pcap")
    assert warnings == []
    assert len(packets) == 4
    assert (
        packets[["ip_src", "src_port", "tunnel", "outer_ip_src"]].iloc[1:].values.tolist()
        == [[RESOLVER[4], "53", "gre", OUTER[4][0]]] * 3
    )
    assert len(flows) == 1
    flow = flows.iloc[0]
    answer = dns_answer("iot.example.com", 150)
    assert (flow["orig_pkts"], flow["resp_pkts"], flow["resp_bytes"]) == (
        "1",
        "3",
        str(len(answer)),
    )
