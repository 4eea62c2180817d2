"""packet-translator.py with the real tshark on real captures (data/ and tests/captures/),
plus captures built byte by byte with text2pcap for what no public capture has (spreadsheet
formulas, tabs and newlines in packet text, CoAP, SSDP on port 1900).

The expected values come from tshark itself (-T fields, run here), not from the code under
test, and the script is run as a user runs it."""

from __future__ import annotations

import csv
import ipaddress
import itertools
import os
import shutil
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from iotsig import csvio
from iotsig.schema import PACKETS
from iotsig.tshark import fields_command, tshark_path

from conftest import (
    CAPTURES,
    DATA,
    PLUG_IP,
    PLUG_MAC,
    QUICK_CAPTURES,
    SHARED,
    TPLINK_CAPTURES,
    capinfos_count,
    needed,
    quick_first,
    quick_only,
    run_script,
)
from packet_bytes import transport_packet

TRANSLATOR = "packet-translator.py"
ALL_CAPTURES = TPLINK_CAPTURES + sorted(
    p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng")
)
TPLINK = DATA / "1724059939.pcap"  # the plug resolves use1-api.tplinkra.com, then TLS to it
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ERROR_PREFIX = f"{TRANSLATOR}: error: "
WARNING_PREFIX = f"{TRANSLATOR}: warning: "


def by_name(name: str) -> Path:
    return next(p for p in ALL_CAPTURES if p.name == name)


# --- what tshark itself says ------------------------------------------------------------


def tshark_fields(
    capture: Path,
    *fields: str,
    display_filter: str | None = None,
    preferences: tuple[str, ...] = (),
) -> pd.DataFrame:
    """tshark's own fields export: one row per frame, all occurrences joined by ';'."""
    command = fields_command(capture, list(fields), display_filter)
    for preference in preferences:
        command += ["-o", preference]
    # No check: on a cut capture tshark prints what it could read, then exits non-zero.
    out = subprocess.run(command, capture_output=True, check=False).stdout
    lines = out.decode("utf-8", "replace").split("\n")[:-1]
    return pd.DataFrame([line.split("\t") for line in lines], columns=list(fields), dtype=str)


def first(values: pd.Series) -> pd.Series:
    return values.str.split(";").str[0]


def distinct(values: pd.Series) -> pd.Series:
    return values.map(lambda v: ";".join(dict.fromkeys(v.split(";"))) if v else "")


# --- what the translator wrote ----------------------------------------------------------


def translate(output_dir: Path, *captures, check=True, env=None, options=("-q",)):
    return run_script(TRANSLATOR, *captures, "-o", output_dir, *options, check=check, env=env)


def packets_csv(output_dir: Path, capture: Path) -> Path:
    return Path(output_dir) / f"{Path(capture).name}.packets.csv"


def read_packets(path: Path) -> pd.DataFrame:
    """Read back as the next stage does: text unescaped, numbers as numbers."""
    return csvio.read_table(path, PACKETS)


def as_text(column: pd.Series) -> pd.Series:
    """A column as tshark prints it: 443.0 -> '443', missing -> ''."""
    if pd.api.types.is_float_dtype(column):
        return column.map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    return column


def assert_same(rows: pd.DataFrame, column: str, expected: pd.Series, where=None):
    """rows[column] equals expected (on the rows `where` selects); names the frames that
    differ."""
    actual = as_text(rows[column]).reset_index(drop=True)
    expected = expected.reset_index(drop=True)
    where = pd.Series(True, index=actual.index) if where is None else where.reset_index(drop=True)
    differ = where & (actual != expected)
    assert not differ.any(), (
        f"{column} differs from tshark at frames {list(rows['frame_number'][differ.values][:5])}:"
        f" {list(actual[differ][:3])} != {list(expected[differ][:3])}"
    )


def leftovers(directory: Path) -> list[str]:
    """Everything in the output directory, hidden .part files included."""
    return sorted(os.listdir(directory)) if Path(directory).exists() else []


@pytest.fixture(scope="module")
def translated(request, translations) -> Path:
    """The captures of data/ and tests/captures/ that the selected tests read (every one in
    the full suite), translated in one run (conftest's translations, shared with
    test_stream_identifier.py): a test parametrised by `capture` reads that capture, the
    others may read any."""
    wanted = needed(request, "translated", "capture", ALL_CAPTURES)
    return translations.of([c for c in ALL_CAPTURES if c in wanted])


# --- every capture: one row per packet, the values tshark gives --------------------------


@pytest.mark.parametrize("capture", quick_only(ALL_CAPTURES, QUICK_CAPTURES))
def test_one_row_per_packet_in_capture_order(capture, translated):
    rows = pd.read_csv(packets_csv(translated, capture), dtype=str, keep_default_na=False)
    assert len(rows) == capinfos_count(capture)
    assert list(rows.columns) == PACKETS.names
    assert rows["frame_number"].astype(int).tolist() == list(range(1, len(rows) + 1))
    assert (rows["capture"] == capture.name).all()


@pytest.mark.parametrize("capture", quick_only(ALL_CAPTURES, QUICK_CAPTURES))
def test_fields_equal_tshark_output(capture, translated):
    rows = read_packets(packets_csv(translated, capture))
    tshark = tshark_fields(
        capture,
        "frame.number",
        "frame.time_epoch",
        "frame.len",
        "frame.protocols",
        "eth.src",
        "eth.src.oui_resolved",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.flags.str",
        "tcp.len",
        "udp.srcport",
        "udp.dstport",
        "icmp.type",
        "icmpv6.type",
        "dns.qry.name",
        "dns.a",
        "dns.aaaa",
        "tls.handshake.extensions_server_name",
        "http.request.method",
        "http.request.uri",
    )
    assert len(rows) == len(tshark)
    assert_same(rows, "frame_number", tshark["frame.number"])
    assert_same(rows, "frame_len", tshark["frame.len"])
    # Time to the microsecond, compared in whole microseconds (no float rounding).
    micros = tshark["frame.time_epoch"].map(lambda t: int(Decimal(t).scaleb(6).to_integral()))
    assert (rows["ts"] * 1e6).round().astype("int64").tolist() == micros.tolist()
    assert_same(
        rows,
        "time_utc",
        micros.map(
            lambda us: (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ),
    )
    assert_same(rows, "highest_layer", tshark["frame.protocols"].str.split(":").str[-1])
    has_eth = tshark["eth.src"] != ""
    assert_same(rows, "eth_src", first(tshark["eth.src"]), where=has_eth)
    assert_same(rows, "eth_src_vendor", first(tshark["eth.src.oui_resolved"]), where=has_eth)
    # Frames of one IP version (a 6in4 packet's are its inner IPv6 ones: the tunnel tests).
    v4 = (tshark["ip.src"] != "") & (tshark["ipv6.src"] == "")
    v6 = (tshark["ip.src"] == "") & (tshark["ipv6.src"] != "")
    assert_same(rows, "ip_src", first(tshark["ip.src"]), where=v4)
    assert_same(rows, "ip_dst", first(tshark["ip.dst"]), where=v4)
    assert_same(rows, "ip_src", first(tshark["ipv6.src"]), where=v6)
    assert_same(rows, "ip_dst", first(tshark["ipv6.dst"]), where=v6)
    # Ports of TCP/UDP packets; an ICMP error quotes the ports of another packet: not its own.
    icmp = (tshark["icmp.type"] != "") | (tshark["icmpv6.type"] != "")
    tcp, udp = (tshark["tcp.srcport"] != "") & ~icmp, (tshark["udp.srcport"] != "") & ~icmp
    assert_same(rows, "src_port", first(tshark["tcp.srcport"]), where=tcp)
    assert_same(rows, "dst_port", first(tshark["tcp.dstport"]), where=tcp)
    assert_same(rows, "src_port", first(tshark["udp.srcport"]), where=udp & ~tcp)
    assert_same(rows, "dst_port", first(tshark["udp.dstport"]), where=udp & ~tcp)
    assert_same(rows, "src_port", pd.Series("", index=rows.index), where=icmp)
    assert_same(rows, "l4_payload_len", first(tshark["tcp.len"]), where=tcp)
    # tcp.flags.str is tshark's own picture of the flags, e.g. "·······AP···"
    letters = first(tshark["tcp.flags.str"]).map(lambda f: set(f) & set("SAFRPUEC"))
    differ = tcp.values & (rows["tcp_flags"].map(set) != letters).values
    assert not differ.any(), rows.loc[differ, ["frame_number", "tcp_flags"]].head()
    answers = [";".join(filter(None, pair)) for pair in zip(tshark["dns.a"], tshark["dns.aaaa"])]
    assert_same(rows, "dns_answer_addrs", pd.Series(answers))
    assert_same(rows, "dns_qry_name", distinct(tshark["dns.qry.name"]))
    assert_same(rows, "tls_server_name", distinct(tshark["tls.handshake.extensions_server_name"]))
    assert_same(rows, "http_request_method", distinct(tshark["http.request.method"]))
    assert_same(rows, "http_request_uri", tshark["http.request.uri"])


SHARED_PROTOCOLS = SHARED / "pcaps" / "protocols"


@pytest.mark.slow  # 45,000 packets, translated and checked against tshark
@pytest.mark.skipif(
    not SHARED_PROTOCOLS.is_dir(), reason=f"../shared not found: {SHARED_PROTOCOLS}"
)
def test_every_shared_protocol_capture_when_present(tmp_path):
    # The big ones too (CoAP/MQTT, QUIC, fragmented garbage, an Alexa session in pcapng).
    shared = sorted(SHARED_PROTOCOLS.glob("*.pcap*"))
    translate(tmp_path, *shared)
    for capture in shared:
        rows = pd.read_csv(packets_csv(tmp_path, capture), dtype=str, keep_default_na=False)
        assert len(rows) == capinfos_count(capture), capture.name
    coap_capture = SHARED_PROTOCOLS / "coap_mqtt.pcap"
    rows = read_packets(packets_csv(tmp_path, coap_capture))
    tshark = tshark_fields(coap_capture, "coap.type", "coap.code", "coap.opt.uri_path_recon")
    coap = (tshark["coap.type"] != "").values
    assert coap.sum() > 10
    assert rows["coap_type"][coap].isin(["CON", "NON", "ACK", "RST"]).all()
    assert_same(rows, "coap_uri", tshark["coap.opt.uri_path_recon"])
    methods = tshark["coap.code"].map({"1": "GET", "2": "POST", "3": "PUT", "4": "DELETE"})
    assert_same(rows, "coap_code", methods, where=methods.notna())
    assert set(methods.dropna()) == {"GET", "POST", "PUT", "DELETE"}


# --- the TP-Link plug: DNS, TLS, direction, MAC vendors ---------------------------------


def test_tplink_dns_query_and_its_answer_addresses(translated):
    rows = read_packets(packets_csv(translated, TPLINK))
    dns = rows[rows["dns_qry_name"] == "use1-api.tplinkra.com"]
    query, answer = dns[dns["dns_flags_response"] == 0], dns[dns["dns_flags_response"] == 1]
    assert len(query) == 1 and len(answer) == 1
    assert query.iloc[0][["ip_src", "dns_qry_type", "l4_proto"]].tolist() == [PLUG_IP, "A", "udp"]
    assert query.iloc[0]["dst_port"] == 53
    tshark = tshark_fields(
        TPLINK, "frame.number", "dns.a", display_filter="dns.flags.response == 1"
    )
    addresses = answer.iloc[0]["dns_answer_addrs"].split(";")
    assert answer.iloc[0]["frame_number"] == int(tshark["frame.number"].item())
    assert sorted(addresses) == sorted(tshark["dns.a"].item().split(";"))
    assert sorted(addresses) == ["3.218.230.180", "3.232.64.134", "34.237.54.215", "52.3.101.168"]
    assert answer.iloc[0]["ip_dst"] == PLUG_IP


def test_tls_server_name_of_the_plug_and_of_a_public_capture(translated):
    rows = read_packets(packets_csv(translated, TPLINK))
    hello = rows[rows["tls_server_name"] != ""]
    assert hello[["frame_number", "ip_src", "dst_port", "tls_server_name"]].values.tolist() == [
        [16, PLUG_IP, 443, "use1-api.tplinkra.com"]
    ]
    capture = by_name("tls_esni_sni_both.pcap")
    rows = read_packets(packets_csv(translated, capture))
    tshark = tshark_fields(
        capture,
        "frame.number",
        "tls.handshake.extensions_server_name",
        display_filter="tls.handshake.extensions_server_name",
    )
    named = rows[rows["tls_server_name"] != ""]
    assert named["frame_number"].tolist() == tshark["frame.number"].astype(int).tolist()
    assert named["tls_server_name"].tolist() == [
        "these-are-not-the-droids-youre-looking-for.com",
        "you-think-thats-normal-tls-traffic-youre-seeing.com",
    ]


@pytest.fixture(scope="module")
def tplink_tshark():
    return {
        capture: tshark_fields(
            capture,
            "eth.src",
            "eth.dst",
            "ip.src",
            "ip.dst",
            "arp.src.proto_ipv4",
            "arp.dst.proto_ipv4",
        )
        for capture in TPLINK_CAPTURES
    }


def expected_direction(sent: pd.Series, received: pd.Series) -> pd.Series:
    return pd.Series(
        ["sent" if s else "received" if r else "other" for s, r in zip(sent, received)]
    )


def test_direction_from_device_ip(tmp_path, tplink_tshark):
    translate(tmp_path, *TPLINK_CAPTURES, "--device-ip", PLUG_IP)
    for capture, tshark in tplink_tshark.items():
        rows = read_packets(packets_csv(tmp_path, capture))
        # The outer IP header decides (an ICMP error quotes the packet it answers), and
        # ARP counts too: the plug's ARP request or reply names its IP as the sender.
        sent = (first(tshark["ip.src"]) == PLUG_IP) | (tshark["arp.src.proto_ipv4"] == PLUG_IP)
        received = (first(tshark["ip.dst"]) == PLUG_IP) | (tshark["arp.dst.proto_ipv4"] == PLUG_IP)
        assert_same(rows, "direction", expected_direction(sent, received))
        assert set(rows["direction"]) == {"sent", "received"}


@pytest.mark.slow  # the plug's captures translated once more (--device-ip is in the quick tier)
def test_direction_from_device_mac(tmp_path, tplink_tshark):
    translate(tmp_path, *TPLINK_CAPTURES, "--device-mac", PLUG_MAC.upper())
    for capture, tshark in tplink_tshark.items():
        rows = read_packets(packets_csv(tmp_path, capture))
        expected = expected_direction(tshark["eth.src"] == PLUG_MAC, tshark["eth.dst"] == PLUG_MAC)
        assert_same(rows, "direction", expected)
        assert (rows["direction"] == "sent").sum() > 10


def test_no_direction_without_a_device(translated):
    rows = read_packets(packets_csv(translated, TPLINK))
    assert (rows["direction"] == "").all()


def test_mac_vendors_come_from_tsharks_oui_database(translated):
    rows = read_packets(packets_csv(translated, TPLINK))
    tshark = tshark_fields(TPLINK, "eth.src.oui_resolved", "eth.dst.oui_resolved")
    assert_same(rows, "eth_src_vendor", tshark["eth.src.oui_resolved"])
    assert_same(rows, "eth_dst_vendor", tshark["eth.dst.oui_resolved"])
    plug_vendors = set(rows.loc[rows["eth_src"] == PLUG_MAC, "eth_src_vendor"])
    assert len(plug_vendors) == 1 and "tp-link" in plug_vendors.pop().lower()


# --- link types, IP versions, file formats, application protocols -----------------------


def test_ipv6_addresses_in_the_same_columns(translated):
    capture = by_name("http_ipv6.pcap")
    rows = read_packets(packets_csv(translated, capture))
    assert (rows["ip_version"] == 6).all()
    assert all(ipaddress.ip_address(a).version == 6 for a in rows["ip_src"])
    assert_same(rows, "ip_src", tshark_fields(capture, "ipv6.src")["ipv6.src"])
    assert set(rows["l4_proto"]) == {"tcp", "udp"}
    assert {"www.ntop.org", "s-static.ak.facebook.com"} <= set(rows["tls_server_name"])


def test_http_over_ipv6_tunnelled_in_ipv4(translated):
    rows = read_packets(packets_csv(translated, by_name("6in4tunnel.pcap")))
    get = rows[rows["http_request_method"] == "GET"]
    assert get[["http_host", "http_request_uri", "l4_proto"]].values.tolist() == [
        ["mail.tomasu.net", "/", "tcp"]
    ]
    # The inner packet is the conversation; the IPv4 header is the tunnel's.
    assert get.iloc[0]["ip_version"] == 6
    assert ipaddress.ip_address(get.iloc[0]["ip_dst"]).version == 6
    assert (get.iloc[0]["tunnel"], get.iloc[0]["outer_ip_dst"]) == ("6in4", "184.105.255.26")
    assert get.iloc[0]["dst_port"] == 80


def test_later_ipv6_fragments_keep_the_transport_protocol(translated):
    capture = by_name("dns_fragmented.pcap")
    rows = read_packets(packets_csv(translated, capture))
    tshark = tshark_fields(capture, "frame.protocols", "ipv6.fraghdr.nxt")
    later_v6 = (tshark["frame.protocols"].str.endswith("ipv6.fraghdr:data")).values
    later_v4 = (tshark["frame.protocols"] == "eth:ethertype:ip:data").values
    assert later_v6.sum() == 3 and later_v4.sum() == 4
    # Fragment header's next header 17: udp, as the IPv4 fragments of the same kind say.
    assert set(tshark["ipv6.fraghdr.nxt"][later_v6]) == {"17"}
    assert set(rows["l4_proto"][later_v6]) == set(rows["l4_proto"][later_v4]) == {"udp"}


def test_pcapng_gives_the_same_rows_as_pcap(translated):
    pcap = read_packets(packets_csv(translated, by_name("dhcp.pcap")))
    pcapng = read_packets(packets_csv(translated, by_name("dhcp.pcapng")))
    pd.testing.assert_frame_equal(pcap.drop(columns="capture"), pcapng.drop(columns="capture"))
    assert pcapng["dhcp_msg_type"].tolist() == ["discover", "offer", "request", "ack"]
    # A vendor name with a comma in it ("Grandstream Networks, Inc."), read back whole.
    vendors = tshark_fields(by_name("dhcp.pcapng"), "eth.src.oui_resolved")
    assert pcapng["eth_src_vendor"].tolist() == vendors["eth.src.oui_resolved"].tolist()
    assert "," in pcapng["eth_src_vendor"][0]


@pytest.mark.slow  # the plug's captures translated once more, merged (pcapng itself is in the
# quick tier: test_pcapng_gives_the_same_rows_as_pcap)
def test_mergecapped_pcapng_is_the_rows_of_its_parts(tmp_path, translated):
    merged = tmp_path / "merged.pcapng"
    subprocess.run(
        ["mergecap", "-F", "pcapng", "-a", "-w", merged, *TPLINK_CAPTURES],
        check=True,
        capture_output=True,
    )
    translate(tmp_path, merged)
    rows = read_packets(packets_csv(tmp_path, merged))
    parts = pd.concat(
        [read_packets(packets_csv(translated, c)) for c in TPLINK_CAPTURES], ignore_index=True
    )
    assert len(rows) == capinfos_count(merged) == len(parts) == 150
    assert rows["frame_number"].tolist() == list(range(1, 151))
    same = [c for c in PACKETS.names if c not in ("capture", "frame_number")]
    pd.testing.assert_frame_equal(rows[same], parts[same])


def test_linux_cooked_capture_takes_the_source_mac_from_sll(translated):
    capture = by_name("mdns.pcap")
    rows = read_packets(packets_csv(translated, capture))
    tshark = tshark_fields(capture, "sll.src.eth", "dns.qry.name")
    assert (rows["eth_src"] != "").all()
    assert_same(rows, "eth_src", tshark["sll.src.eth"])
    assert (rows["eth_dst"] == "").all()  # a cooked header has no destination MAC
    assert {"_airplay._tcp.local", "_raop._tcp.local"} <= set(
        ";".join(rows["dns_qry_name"]).split(";")
    )
    assert set(rows["ip_version"]) == {4, 6}


def test_malformed_dns_keeps_every_packet(translated):
    rows = read_packets(packets_csv(translated, by_name("malformed_dns.pcap")))
    assert len(rows) == 6
    assert set(rows["dns_qry_name"].str.split(";").str[0]) == {"www.xt.com"}
    answers = rows[rows["dns_flags_response"] == 1]
    assert len(answers) == 4 and set(answers["dns_answer_addrs"]) == {"66.66.66.66"}


def test_ssdp_on_an_unusual_port_is_what_tshark_makes_of_it(translated):
    # M-SEARCH to UDP 32412: tshark does not dissect it as SSDP, so neither do we
    # (SSDP on port 1900 is in the generated capture below).
    rows = read_packets(packets_csv(translated, by_name("ssdp-m-search.pcap")))
    assert set(rows["highest_layer"]) == {"data"}
    assert (rows["http_request_method"] == "").all()


# --- a capture built byte by byte: formulas, commas, quotes, tabs, CoAP, SSDP ------------

SERVER_IP, SERVER_MAC = "203.0.113.7", "00:11:22:33:44:55"
FORMULA_DNS_NAME = "=1+2.example.com"
FORMULA_URIS = ['+cmd,"x"', '@SUM(1,2)"q"', '-2+3,"a",b', "'quoted"]
FORMULA_HOST = "=evil,host"
PLAIN_URI = '/search?q=a,b&t="x"'  # a comma and a quote, no formula character
SOURCE_PORTS = itertools.count(40000)


def udp_frame(payload: bytes, dport: int, dst: str = SERVER_IP, dst_mac: str = SERVER_MAC) -> bytes:
    header = struct.pack("!HHHH", next(SOURCE_PORTS), dport, 8 + len(payload), 0)
    return _ethernet(transport_packet(PLUG_IP, dst, 17, header, 6, payload), dst_mac)


def tcp_frame(payload: bytes, dport: int = 80) -> bytes:
    # A new connection (source port) each: the same bytes again would be a retransmission.
    header = struct.pack("!HHIIBBHHH", next(SOURCE_PORTS), dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0)
    return _ethernet(transport_packet(PLUG_IP, SERVER_IP, 6, header, 16, payload), SERVER_MAC)


def _ethernet(packet: bytes, dst_mac: str) -> bytes:
    return (
        bytes.fromhex(dst_mac.replace(":", ""))
        + bytes.fromhex(PLUG_MAC.replace(":", ""))
        + b"\x08\x00"
        + packet
    )


def dns_query(*labels: bytes) -> bytes:
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)


def http_get(uri: bytes, host: bytes = b"example.com") -> bytes:
    return b"GET " + uri + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"


def coap_get(message_id: int, *path: bytes) -> bytes:
    message = struct.pack("!BBH", 0x40, 1, message_id)  # version 1, CON, no token, GET
    delta = 11  # Uri-Path, repeated with delta 0
    for segment in path:
        message += bytes([(delta << 4) | len(segment)]) + segment
        delta = 0
    return message


def write_capture(frames: list[bytes], path: Path, link_type: int = 1) -> Path:
    """Frames -> a pcap, through text2pcap's hex dump input (link type 1: Ethernet)."""
    dump = path.with_suffix(".txt")
    with open(dump, "w") as out:
        for frame in frames:
            for offset in range(0, len(frame), 16):
                out.write(f"{offset:06x}  {frame[offset : offset + 16].hex(' ')}\n")
            out.write("\n")
    subprocess.run(
        ["text2pcap", "-q", "-F", "pcap", "-l", str(link_type), str(dump), str(path)],
        check=True,
        capture_output=True,
    )
    return path


CRAFTED_FRAMES = [  # frame number = position + 1
    udp_frame(dns_query(b"=1+2", b"example", b"com"), 53),  # 1
    tcp_frame(http_get(FORMULA_URIS[0].encode())),  # 2
    tcp_frame(http_get(FORMULA_URIS[1].encode())),  # 3
    tcp_frame(http_get(FORMULA_URIS[2].encode(), FORMULA_HOST.encode())),  # 4
    tcp_frame(http_get(FORMULA_URIS[3].encode())),  # 5
    tcp_frame(http_get(PLAIN_URI.encode())),  # 6
    udp_frame(dns_query(b"tab\there", b"new\nline", b"com"), 53),  # 7
    tcp_frame(http_get(b"/a\tb")),  # 8
    udp_frame(coap_get(7, b"-led", b"on"), 5683),  # 9
    udp_frame(
        b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"  # 10
        b'MAN: "ssdp:discover"\r\nST: ssdp:all\r\nMX: 1\r\n\r\n',
        1900,
        dst="239.255.255.250",
        dst_mac="01:00:5e:7f:ff:fa",
    ),
]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    capture = write_capture(CRAFTED_FRAMES, folder / "crafted.pcap")
    translate(folder / "out", capture)
    path = packets_csv(folder / "out", capture)
    with open(path, newline="", encoding="utf-8") as handle:
        header, *cells = list(csv.reader(handle))
    raw = pd.DataFrame(cells, columns=header)  # the cells exactly as a spreadsheet gets them
    return SimpleNamespace(capture=capture, path=path, raw=raw, rows=read_packets(path))


def test_crafted_capture_is_read_by_tshark_as_built(crafted):
    assert capinfos_count(crafted.capture) == len(CRAFTED_FRAMES)
    checks = ("ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE")
    tshark = tshark_fields(
        crafted.capture,
        "frame.protocols",
        "ip.checksum.status",
        "tcp.checksum.status",
        "udp.checksum.status",
        preferences=checks,
    )
    assert tshark["frame.protocols"].str.rsplit(":", n=1).str[-1].tolist() == ["dns"] + [
        "http"
    ] * 5 + ["dns", "http", "coap", "ssdp"]
    # Lengths and checksums right: 1 is tshark's "Good".
    assert set(tshark["ip.checksum.status"]) == {"1"}
    assert set(tshark["tcp.checksum.status"] + tshark["udp.checksum.status"]) == {"1"}


def test_every_csv_row_has_every_column(crafted):
    with open(crafted.path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert len(lines) == 1 + len(CRAFTED_FRAMES)
    assert {len(line) for line in lines} == {len(PACKETS.names)}


def test_formula_cells_are_written_as_text(crafted):
    raw = crafted.raw
    assert raw.loc[0, "dns_qry_name"] == "'" + FORMULA_DNS_NAME
    assert raw.loc[1:4, "http_request_uri"].tolist() == ["'" + uri for uri in FORMULA_URIS]
    assert raw.loc[3, "http_host"] == "'" + FORMULA_HOST
    text_columns = set(PACKETS.of_type("text"))
    for column in raw.columns:
        formulas = raw[column].str[:1].isin(list("=+-@"))
        assert not formulas.any(), f"{column} has cells a spreadsheet would run as formulas"
        assert column in text_columns or not raw[column].str.startswith("'").any()


def test_no_cell_of_any_capture_would_start_a_formula(translated):
    for capture in ALL_CAPTURES:
        with open(packets_csv(translated, capture), newline="", encoding="utf-8") as handle:
            risky = [
                cell
                for row in csv.reader(handle)
                for cell in row
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r")
            ]
        assert not risky, f"{capture.name}: {risky[:3]}"


def test_formula_cells_read_back_as_the_original_values(crafted):
    rows = crafted.rows
    assert rows.loc[0, "dns_qry_name"] == FORMULA_DNS_NAME
    assert rows.loc[1:4, "http_request_uri"].tolist() == FORMULA_URIS
    assert rows.loc[3, "http_host"] == FORMULA_HOST
    tshark = tshark_fields(crafted.capture, "dns.qry.name", "http.request.uri", "http.host")
    assert_same(rows, "dns_qry_name", tshark["dns.qry.name"])
    assert_same(rows, "http_request_uri", tshark["http.request.uri"])
    assert_same(rows, "http_host", tshark["http.host"])


def test_comma_and_quote_in_an_http_uri(crafted):
    assert crafted.raw.loc[5, "http_request_uri"] == PLAIN_URI  # quoted, not escaped
    assert f'"{PLAIN_URI.replace(chr(34), 2 * chr(34))}"' in crafted.path.read_text()
    plain_pandas = pd.read_csv(crafted.path, dtype=str, keep_default_na=False)
    assert plain_pandas.loc[5, "http_request_uri"] == PLAIN_URI


def test_tab_and_newline_in_packet_text_stay_in_one_row(crafted):
    # tshark's fields export writes a tab or newline inside a value as the two characters
    # \t or \n; the row stays one line, and the CSV holds tshark's text.
    tshark = tshark_fields(crafted.capture, "dns.qry.name", "http.request.uri")
    assert tshark.loc[6, "dns.qry.name"] == "tab\\there.new\\nline.com"
    assert tshark.loc[7, "http.request.uri"] == "/a\\tb"
    assert crafted.rows.loc[6, "dns_qry_name"] == "tab\\there.new\\nline.com"
    assert crafted.rows.loc[7, "http_request_uri"] == "/a\\tb"
    assert len(crafted.rows) == capinfos_count(crafted.capture)
    assert not crafted.raw.apply(lambda c: c.str.contains("[\t\n\r]")).any().any()


def test_coap_type_method_and_uri(crafted):
    coap = crafted.rows.loc[8]
    assert coap[["coap_type", "coap_code", "coap_uri", "highest_layer"]].tolist() == [
        "CON",
        "GET",
        "/-led/on",
        "coap",
    ]
    assert coap["dst_port"] == 5683


def test_ssdp_through_the_http_fields(crafted):
    ssdp = crafted.rows.loc[9]
    assert ssdp[["http_request_method", "http_host", "http_request_uri", "ip_dst"]].tolist() == [
        "M-SEARCH",
        "239.255.255.250:1900",
        "*",
        "239.255.255.250",
    ]


def test_capture_file_name_is_escaped_too(tmp_path):
    capture = tmp_path / '=1+2,"q".pcap'
    shutil.copy(TPLINK, capture)
    translate(tmp_path / "out", capture)
    path = packets_csv(tmp_path / "out", capture)
    assert pd.read_csv(path, dtype=str)["capture"].iloc[0] == "'" + capture.name
    assert (read_packets(path)["capture"] == capture.name).all()


# --- bad inputs: one line each, no traceback, nothing half-written -----------------------


def assert_failed_cleanly(result, output_dir: Path, *words: str, leaves=()):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert leftovers(output_dir) == sorted(leaves)


def first_bytes(source: Path, count: int):
    return lambda path: path.write_bytes(source.read_bytes()[:count])


def header_only_pcapng(path: Path):
    subprocess.run(
        [tshark_path(), "-r", CAPTURES / "dhcp.pcapng", "-Y", "frame.number == 0", "-w", path],
        check=True,
        capture_output=True,
    )


def corrupt_first_record(path: Path):
    """A valid pcap header, then a record claiming a 4 GB packet."""
    header = TPLINK.read_bytes()[:24]
    order = "<" if header[:4] == bytes.fromhex("d4c3b2a1") else ">"
    path.write_bytes(header + struct.pack(order + "IIII", 1, 0, 0xFFFFFF00, 0xFFFFFF00) + b"x" * 64)


BAD_CAPTURES = {  # name: (how to make it, words the error line must contain)
    "notes.pcap": (
        lambda p: p.write_text("hello, this is not a capture\n"),
        "not a pcap or pcapng capture",
    ),
    "zero-bytes.pcap": (lambda p: p.write_bytes(b""), "empty file"),
    "header-only.pcap": (first_bytes(TPLINK, 24), "contains no packets"),
    "header-only.pcapng": (header_only_pcapng, "contains no packets"),
    "cut-in-header.pcap": (first_bytes(TPLINK, 10), "truncated pcap header"),
    "corrupt.pcap": (corrupt_first_record, "damaged or corrupt"),
    "missing.pcap": (lambda p: None, "no such file"),
    "a-directory.pcap": (lambda p: p.mkdir(), "is a directory"),
}


@pytest.mark.parametrize("name", quick_only(BAD_CAPTURES, {"notes.pcap", "corrupt.pcap"}, str))
def test_bad_capture_is_one_error_line_and_no_csv(name, tmp_path):
    make, problem = BAD_CAPTURES[name]
    capture = tmp_path / name
    make(capture)
    result = translate(tmp_path / "out", capture, check=False, options=())
    assert_failed_cleanly(result, tmp_path / "out", name, problem)


@pytest.mark.parametrize("jobs", quick_only(["1", "2"], {"2"}, str))
def test_one_bad_capture_among_good_ones(jobs, tmp_path):
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture")
    result = translate(
        tmp_path / "out",
        TPLINK_CAPTURES[0],
        bad,
        *TPLINK_CAPTURES[1:],
        check=False,
        options=("-j", jobs),
    )
    written = [packets_csv(tmp_path / "out", c).name for c in TPLINK_CAPTURES]
    assert_failed_cleanly(result, tmp_path / "out", "notes.pcap", "not a pcap", leaves=written)
    for capture in TPLINK_CAPTURES:
        assert len(read_packets(packets_csv(tmp_path / "out", capture))) == capinfos_count(capture)
    assert "1 capture(s) failed" in result.stdout


def test_truncated_capture_keeps_every_readable_packet_and_warns(tmp_path, translated):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(TPLINK.read_bytes()[:3000])
    readable = tshark_fields(cut, "frame.number")
    result = translate(tmp_path / "out", cut, options=())  # exit 0: the rows are useful
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING_PREFIX), result.stderr
    assert "cut.pcap" in lines[0] and "cut short" in lines[0]
    assert f"kept the {len(readable)} packets" in lines[0]
    rows = read_packets(packets_csv(tmp_path / "out", cut))
    whole = read_packets(packets_csv(translated, TPLINK))
    assert 0 < len(rows) == len(readable) < len(whole)
    pd.testing.assert_frame_equal(
        rows.drop(columns="capture"), whole.head(len(rows)).drop(columns="capture")
    )
    assert leftovers(tmp_path / "out") == ["cut.pcap.packets.csv"]


def test_corrupt_record_after_good_ones_keeps_them_and_warns_once(tmp_path):
    data = TPLINK.read_bytes()
    order = "<" if data[:4] == bytes.fromhex("d4c3b2a1") else ">"
    offset = 24
    for _ in range(10):  # the end of the 10th record
        offset += 16 + struct.unpack(order + "I", data[offset + 8 : offset + 12])[0]
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(data[:offset] + struct.pack(order + "IIII", 1, 0, 1 << 30, 1 << 30))
    result = translate(tmp_path / "out", damaged, options=())
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING_PREFIX), result.stderr
    assert "damaged or corrupt" in lines[0] and "kept the 10 packets" in lines[0]
    assert len(read_packets(packets_csv(tmp_path / "out", damaged))) == 10


@pytest.mark.parametrize(
    "tshark_path_value, on_path",
    quick_first(1, [("", False), ("/nonexistent/tshark", False), ("/nonexistent/tshark", True)]),
    ids=["unset", "TSHARK_PATH-nonexistent", "TSHARK_PATH-nonexistent-tshark-on-PATH"],
)
def test_tshark_missing_says_how_to_install_it(tshark_path_value, on_path, tmp_path):
    # An empty TSHARK_PATH counts as unset. A wrong one is refused even when another
    # tshark is on PATH: never silently run a different tshark than the one asked for.
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {"TSHARK_PATH": tshark_path_value}
    if not on_path:
        env["PATH"] = str(empty_bin)
    result = translate(tmp_path / "out", TPLINK, check=False, env=env, options=())
    assert_failed_cleanly(
        result,
        tmp_path / "out",
        "apt-get install tshark",
        "TSHARK_PATH" if tshark_path_value else "tshark not found",
    )
    assert not (tmp_path / "out").exists()


def test_output_dir_under_a_regular_file(tmp_path):
    # Fails for root too (chmod does not stop root): a file cannot hold a directory.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = translate(blocker / "out", TPLINK, check=False, options=())
    assert_failed_cleanly(result, blocker / "out", "a-file/out", "cannot create output directory")
    assert blocker.read_text() == ""


def test_output_dir_that_is_a_regular_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    result = translate(blocker, TPLINK, check=False, options=())
    assert_failed_cleanly(result, tmp_path, "a-file", "output directory", leaves=["a-file"])
    assert blocker.read_text() == "keep me"


def test_read_only_output_dir(read_only_dir):
    result = translate(read_only_dir, TPLINK, check=False, options=())
    assert_failed_cleanly(result, read_only_dir, "read-only", "not writable")


@pytest.mark.slow  # the plug's captures translated once more (one bad capture among good
# ones, test_one_bad_capture_among_good_ones[2], is in the quick tier)
def test_output_name_taken_by_a_directory_fails_that_capture_only(tmp_path):
    out = tmp_path / "out"
    (out / packets_csv(out, TPLINK).name).mkdir(parents=True)
    result = translate(out, *TPLINK_CAPTURES, check=False, options=("-j", "2"))
    assert_failed_cleanly(
        result,
        out,
        f"{TPLINK.name}.packets.csv",
        "cannot write",
        leaves=[packets_csv(out, c).name for c in TPLINK_CAPTURES],
    )
    assert packets_csv(out, TPLINK).is_dir()
    assert len(read_packets(packets_csv(out, TPLINK_CAPTURES[1]))) == 48


def test_disk_full_leaves_no_partial_csv(mount_tmpfs):
    tiny_disk = mount_tmpfs("size=8k")  # fills up in the middle of the CSV
    result = translate(tiny_disk, TPLINK, check=False, options=())
    assert_failed_cleanly(result, tiny_disk, TPLINK.name, "No space left on device")


# --- several captures at once -------------------------------------------------------------


@pytest.mark.slow  # six captures translated twice (-j 1 and -j 2)
def test_parallel_jobs_write_the_same_csvs(tmp_path):
    captures = TPLINK_CAPTURES + [
        by_name("mdns.pcap"),
        by_name("dhcp.pcapng"),
        by_name("6in4tunnel.pcap"),
    ]
    translate(tmp_path / "j1", *captures, "--device-ip", PLUG_IP, "-j", "1")
    translate(tmp_path / "j2", *captures, "--device-ip", PLUG_IP, "-j", "2")
    names = [packets_csv(tmp_path, c).name for c in captures]
    assert leftovers(tmp_path / "j1") == leftovers(tmp_path / "j2") == sorted(names)
    for name in names:
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes()


def test_chunks_give_the_same_rows_as_one_read(monkeypatch, tmp_path):
    """tshark's output is read in chunks of CHUNK_ROWS rows: a capture read in chunks of 7
    gives byte for byte the CSV of one read (later chunks once lost their addresses)."""
    from iotsig import packets

    capture = TPLINK  # DNS, TLS, TCP, UDP, ARP, ICMP: every kind of column filled
    packets.translate(capture, tmp_path / "whole.csv", device_ip=PLUG_IP)
    monkeypatch.setattr(packets, "CHUNK_ROWS", 7)
    packets.translate(capture, tmp_path / "chunked.csv", device_ip=PLUG_IP)
    assert capinfos_count(capture) > 3 * 7
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_a_line_longer_than_a_block_is_one_error_naming_the_capture(monkeypatch, tmp_path):
    """tshark's output is read in blocks of CHUNK_BYTES: a line that does not fit one (a
    field of megabytes) cannot be read, and says so; nothing is left behind."""
    from iotsig import packets
    from iotsig.errors import InputError

    monkeypatch.setattr(packets, "CHUNK_BYTES", 64)  # shorter than any line
    with pytest.raises(InputError) as error:
        packets.translate(TPLINK, tmp_path / "out.csv")
    assert str(error.value).startswith(f"{TPLINK}: tshark's output could not be read (")
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_captures_with_one_file_name_are_refused(tmp_path):
    """Their CSVs would be one file, the second overwriting the first."""
    copies = []
    for folder, capture in zip(("a", "b"), TPLINK_CAPTURES):
        (tmp_path / folder).mkdir()
        copies.append(tmp_path / folder / "plug.pcap")
        shutil.copy(capture, copies[-1])
    result = translate(tmp_path / "out", *copies, check=False, options=())
    assert_failed_cleanly(
        result,
        tmp_path / "out",
        "2 captures share the name plug.pcap",
        str(copies[0]),
        str(copies[1]),
    )


def test_times_iso_8601_cannot_say_leave_time_utc_empty_with_a_warning(tmp_path, run):
    """A pcapng whose packets are dated past the year 9999 (editcap -t): ts as tshark gives
    it, time_utc empty (it was 'NaTZ'), and one warning line naming the capture."""
    editcap = shutil.which("editcap")
    if not editcap:
        pytest.skip("editcap (Wireshark's) is not installed")
    far = tmp_path / "far-future.pcapng"
    subprocess.run(
        [editcap, "-F", "pcapng", "-t", "252000000000", str(TPLINK_CAPTURES[0]), str(far)],
        check=True,
        capture_output=True,
    )
    result = run("packet-translator.py", far, "-o", tmp_path / "out")
    rows = pd.read_csv(
        tmp_path / "out" / f"{far.name}.packets.csv", dtype=str, keep_default_na=False
    )
    assert len(rows) > 0 and (rows["time_utc"] == "").all()
    assert (rows["ts"].astype(float) > 253402300800).all()  # after 9999-12-31
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"packet-translator.py: warning: {far}: {len(rows)} packet(s) with a time outside the "
        "years 0001-9999 (first: frame 1): ts kept as read, time_utc left empty"
    ]


@pytest.mark.parametrize(
    "tool, suffix",
    [
        ("gzip", ".gz"),
        pytest.param("zstd", ".zst", marks=pytest.mark.slow),
        pytest.param("lz4", ".lz4", marks=pytest.mark.slow),
    ],
)
def test_compressed_captures_are_read_as_tshark_reads_them(tmp_path, run, tool, suffix):
    """A .pcap.gz, .zst or .lz4 gives the same rows as the capture itself (they were
    refused as 'unknown file header'); junk compressed the same way is still refused."""
    program = shutil.which(tool)
    if not program:
        pytest.skip(f"{tool} is not installed")
    capture = TPLINK_CAPTURES[0]
    packed = tmp_path / f"{capture.name}{suffix}"
    junk = tmp_path / f"junk.pcap{suffix}"
    (tmp_path / "junk.pcap").write_text("not a capture at all\n")
    for source, target in ((capture, packed), (tmp_path / "junk.pcap", junk)):
        with open(target, "wb") as sink:
            subprocess.run([program, "-c", str(source)], stdout=sink, check=True)
    run("packet-translator.py", capture, packed, "-o", tmp_path / "out", "-q")
    plain = pd.read_csv(tmp_path / "out" / f"{capture.name}.packets.csv", dtype=str)
    unpacked = pd.read_csv(tmp_path / "out" / f"{packed.name}.packets.csv", dtype=str)
    assert len(plain) > 0
    pd.testing.assert_frame_equal(plain.drop(columns="capture"), unpacked.drop(columns="capture"))
    refused = run("packet-translator.py", junk, "-o", tmp_path / "junk-out", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"packet-translator.py: error: {junk}: {tool}-compressed, but no capture inside: not a "
        "pcap or pcapng capture"
    )


def test_a_pipe_is_read_whole(tmp_path, run):
    """A FIFO (a capture streamed from another program): the header check must not take its
    first bytes from tshark (it hung forever)."""
    capture = TPLINK_CAPTURES[0]
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{capture}' > '{fifo}'"])
    try:
        run("packet-translator.py", fifo, "-o", tmp_path / "out", "-q", timeout=60)
    finally:
        writer.wait(timeout=10)
    rows = pd.read_csv(tmp_path / "out" / "live.pcap.packets.csv", dtype=str)
    plain = run("packet-translator.py", capture, "-o", tmp_path / "plain", "-q")
    assert plain.returncode == 0
    expected = pd.read_csv(tmp_path / "plain" / f"{capture.name}.packets.csv", dtype=str)
    pd.testing.assert_frame_equal(rows.drop(columns="capture"), expected.drop(columns="capture"))


def wifi_frame(transmitter: str, receiver: str, destination: str, ip_packet: bytes) -> bytes:
    """An 802.11 data frame to the access point (ToDS): receiver = BSSID, then LLC/SNAP."""
    header = bytes([0x08, 0x01, 0, 0])
    for mac in (receiver, transmitter, destination):
        header += bytes.fromhex(mac.replace(":", ""))
    return header + b"\x00\x00" + bytes.fromhex("aaaa030000000800") + ip_packet


def test_wifi_frames_give_their_macs_and_vendors(tmp_path, run):
    """802.11 captures carry MACs in wlan.sa/da (ta/ra): they were empty, so the inventory
    was empty and main.py could not find the device's MAC."""
    access_point = "c0:56:27:73:46:0b"
    udp = struct.pack("!HHHH", 40000, 53, 13, 0)
    packet = transport_packet(PLUG_IP, "192.168.1.1", 17, udp, 6, b"hello")
    capture = write_capture(
        [wifi_frame(PLUG_MAC, access_point, access_point, packet)],
        tmp_path / "wifi.pcap",
        link_type=105,  # IEEE 802.11
    )
    run("packet-translator.py", capture, "-o", tmp_path / "out", "-q")
    row = pd.read_csv(tmp_path / "out" / "wifi.pcap.packets.csv", dtype=str).iloc[0]
    assert (row["eth_src"], row["eth_dst"]) == (PLUG_MAC, access_point)
    assert row["eth_src_vendor"] == "Tp-Link Technologies Co.,Ltd."  # as eth.src.oui_resolved
    assert row["eth_dst_vendor"] == "Belkin International Inc."
    assert (row["ip_src"], row["dst_port"]) == (PLUG_IP, "53")
