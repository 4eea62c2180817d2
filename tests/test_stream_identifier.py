"""stream-identifier: packets CSV -> flows CSV (issue 3).

Real tshark on real captures, through the scripts as a user runs them and through the
library (iotsig.flows.build_flows on frames read by iotsig.csvio.read_table); small
captures are made with text2pcap/editcap and small packets CSVs by hand.
"""

from __future__ import annotations

import csv
import re
import shutil
import struct
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iotsig import csvio
from iotsig.errors import InputError, OutputError
from iotsig.flows import FlowOptions, build_flows, bursts_beside
from iotsig.schema import FLOWS, PACKETS

from conftest import (
    CAPTURES,
    GATEWAY_IP,
    PHONE_IP,
    PLUG_IP,
    PLUG_MAC,
    QUICK_CAPTURES,
    TPLINK_CAPTURES,
    needed,
    quick_first,
    quick_only,
    run_script,
)

CLOUD_NAME = "use1-api.tplinkra.com"
REPO_CAPTURES = TPLINK_CAPTURES + sorted(
    p for p in CAPTURES.glob("*") if p.suffix in (".pcap", ".pcapng", ".cap", ".gz")
)
IPV6_CAPTURE = CAPTURES / "http_ipv6.pcap"
DATA_CAPTURE_WITH_ICMP = next(c for c in TPLINK_CAPTURES if c.name == "1724060140.pcap")


# ---------------------------------------------------------------- helpers


def packets_csv(directory: Path, capture: Path | str) -> Path:
    return Path(directory) / f"{Path(capture).name}.packets.csv"


def flows_csv(directory: Path, capture: Path | str) -> Path:
    return Path(directory) / f"{Path(capture).name}.flows.csv"


def read_packets(path: Path) -> pd.DataFrame:
    return csvio.read_table(path, PACKETS, compact=True)


def read_flows(path: Path) -> pd.DataFrame:
    flows = csvio.read_table(path, FLOWS)
    assert list(flows.columns) == FLOWS.names
    return flows


def translate(directory: Path, *captures: Path, device_ip: str | None = None) -> None:
    extra = ["--device-ip", device_ip] if device_ip else []
    run_script("packet-translator.py", "-q", *extra, *captures, "-o", directory)


def tshark(*args: str) -> str:
    return subprocess.run(
        ["tshark", "-n", *args], capture_output=True, text=True, check=True
    ).stdout


_CONV = re.compile(
    r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+(\d+) (bytes|kB|MB)\s+"
    r"(\d+)\s+(\d+) (bytes|kB|MB)\s"
)


def conversations(capture: Path) -> dict:
    """tshark -z conv,tcp / conv,udp: {(proto, frozenset of the two endpoints):
    {endpoint: (frames sent, (bytes sent, unit))}}, an endpoint being (address, port)."""
    text = tshark("-r", str(capture), "-q", "-z", "conv,tcp", "-z", "conv,udp")
    found, proto = {}, None
    for line in text.splitlines():
        if "Conversations" in line:
            proto = line.split()[0].lower()
        match = _CONV.match(line)
        if match:
            a, b = (match[1], int(match[2])), (match[3], int(match[4]))
            key = (proto, frozenset({a, b}))
            assert key not in found, f"two tshark conversations for {key}: port reuse?"
            # "<-" holds what B sent to A, "->" what A sent to B.
            found[key] = {
                b: (int(match[5]), (int(match[6]), match[7])),
                a: (int(match[8]), (int(match[9]), match[10])),
            }
    assert found, f"no conversation parsed from tshark's output:\n{text}"
    return found


def same_size(ours: int, theirs: tuple[int, str]) -> bool:
    value, unit = theirs  # tshark rounds down to kB / MB above 10 000 bytes
    return int(ours) // {"bytes": 1, "kB": 1000, "MB": 1000**2}[unit] == value


def endpoint(address, port) -> tuple:
    return (str(address), int(port))


def check_against_tshark(flow: pd.Series, convs: dict) -> None:
    """Packets and frame bytes per direction as tshark -z conv counts them."""
    orig, resp = endpoint(flow.orig_h, flow.orig_p), endpoint(flow.resp_h, flow.resp_p)
    conv = convs[(flow.proto, frozenset({orig, resp}))]
    assert (flow.orig_pkts, flow.resp_pkts) == (conv[orig][0], conv[resp][0]), flow.uid
    assert same_size(flow.orig_frame_bytes, conv[orig][1]), (flow.uid, conv)
    assert same_size(flow.resp_frame_bytes, conv[resp][1]), (flow.uid, conv)


def one(frame: pd.DataFrame, **equal) -> pd.Series:
    """The one row of frame whose columns have these values."""
    rows = frame
    for name, value in equal.items():
        rows = rows[rows[name] == value]
    assert len(rows) == 1, f"{len(rows)} rows with {equal}:\n{frame.iloc[:, :12]}"
    return rows.iloc[0]


def check_clean_failure(result, output_dir: Path, *words: str) -> None:
    """Exit 1, one line naming the problem, no traceback, no output file, no .part file."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stream-identifier.py: error: "), lines[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not list(output_dir.glob("*.flows.csv")), list(output_dir.iterdir())
    assert not list(output_dir.glob("*.part")) and not list(output_dir.glob(".*.part"))


# Hand-made packets CSVs: every PACKETS column, empty unless set.
def packet(
    ts: float,
    src: str,
    dst: str,
    proto: str = "udp",
    sport=None,
    dport=None,
    flags: str = "",
    length: int = 60,
    payload: int | None = None,
    **fields,
) -> dict:
    row = dict.fromkeys(PACKETS.names, "")
    row.update(
        ts=ts,
        ip_src=src,
        ip_dst=dst,
        l4_proto=proto,
        frame_len=length,
        src_port="" if sport is None else sport,
        dst_port="" if dport is None else dport,
        tcp_flags=flags,
        eth_src="02:00:00:00:00:%02x" % (hash(src) % 256),
        eth_dst="02:00:00:00:00:%02x" % (hash(dst) % 256),
        ip_version=6 if ":" in src else 4,
        highest_layer=proto,
        l4_payload_len=(max(length - 54, 0) if payload is None else payload)
        if proto in ("tcp", "udp")
        else "",
    )
    row.update(fields)
    return row


def write_packets(path: Path, rows: list[dict], capture: str = "hand.pcap") -> Path:
    frame = pd.DataFrame(rows, columns=PACKETS.names)
    frame["capture"] = capture
    frame["frame_number"] = np.arange(1, len(frame) + 1)
    csvio.write_table(frame, PACKETS, path)
    return path


def flows_of(path: Path, **options) -> pd.DataFrame:
    return build_flows(read_packets(path), FlowOptions(**options))


A, B = "192.168.1.135", "192.168.1.1"


def udp_every(seconds: list[float]) -> list[dict]:
    return [
        packet(t, *((A, B, "udp", 50000, 53) if i % 2 == 0 else (B, A, "udp", 53, 50000)))
        for i, t in enumerate(seconds)
    ]


# Small captures written with text2pcap: -4 gives the IPv4 header, the text gives the rest.
T0 = datetime(2024, 8, 19, 10, 0, 0)


def text2pcap(
    path: Path, ip_proto: int, first: str, second: str, packets: list[tuple[float, bool, bytes]]
) -> Path:
    """packets: (seconds from T0, sent by `first`?, bytes after the IP header)."""
    lines = []
    for offset, by_first, data in packets:
        stamp = T0 + timedelta(seconds=offset)
        lines.append(f"{'I' if by_first else 'O'} {stamp:%Y-%m-%d %H:%M:%S.%f}")
        lines.append("0000  " + " ".join(f"{byte:02x}" for byte in data))
    text = path.with_suffix(".txt")
    text.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [
            "text2pcap",
            "-q",
            "-D",
            "-t",
            "%Y-%m-%d %H:%M:%S.%f",
            "-i",
            str(ip_proto),
            "-4",
            f"{first},{second}",
            str(text),
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


def tcp_segment(sport: int, dport: int, flags: str, payload: bytes = b"") -> bytes:
    bits = sum({"F": 1, "S": 2, "R": 4, "P": 8, "A": 16, "E": 64, "C": 128}[f] for f in flags)
    return (
        struct.pack(
            "!HHIIBBHHH", sport, dport, 1, 1 if "A" in flags else 0, 5 << 4, bits, 65535, 0, 0
        )
        + payload
    )


def icmp(kind: int, ident: int = 1, seq: int = 1) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"abcdefgh"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def out(request, translations, tmp_path_factory) -> Path:
    """The captures of the repo that the selected tests read (every one in the full suite;
    a test parametrised by `capture` reads that one, the others the TP-Link captures and
    the IPv6 one), translated once (conftest's translations, shared with
    test_packet_translator.py) and their flows identified by the script in one run."""
    directory = tmp_path_factory.mktemp("flows")
    names = [c.name for c in REPO_CAPTURES]
    assert len(set(names)) == len(names), "two captures with the same file name"
    wanted = needed(request, "out", "capture", [*TPLINK_CAPTURES, IPV6_CAPTURE])
    captures = [c for c in REPO_CAPTURES if c in wanted]
    translated = translations.of(captures)
    for capture in captures:
        shutil.copyfile(packets_csv(translated, capture), packets_csv(directory, capture))
    run_script(
        "stream-identifier.py",
        "-q",
        *(packets_csv(directory, c) for c in captures),
        "-o",
        directory,
        "--device-ip",
        PLUG_IP,
    )
    return directory


@pytest.fixture(scope="module")
def ipv6_capture() -> Path:
    if not IPV6_CAPTURE.exists():
        pytest.fail(f"{IPV6_CAPTURE} is missing (copy it from ../shared/pcaps/protocols/)")
    return IPV6_CAPTURE


# ---------------------------------------------------------------- every capture


def test_the_repo_has_captures_to_check():
    assert len(TPLINK_CAPTURES) == 3
    assert IPV6_CAPTURE in REPO_CAPTURES


@pytest.mark.parametrize("capture", quick_only(REPO_CAPTURES, QUICK_CAPTURES))
def test_every_packet_lands_in_exactly_one_flow(out, capture):
    packets = read_packets(packets_csv(out, capture))
    flows = read_flows(flows_csv(out, capture))
    assert len(packets) > 0 and len(flows) > 0
    assert (flows.orig_pkts + flows.resp_pkts).sum() == len(packets)
    assert (flows.orig_frame_bytes + flows.resp_frame_bytes).sum() == packets.frame_len.sum()
    assert (flows.orig_bytes + flows.resp_bytes).sum() == packets.l4_payload_len.fillna(0).sum()

    # Per conversation (protocol and the two endpoints, either way round), computed here
    # independently of the flow builder: the packets of each land in its flows.
    def side(address, mac, port):
        address = np.where(address.astype(str) != "", address.astype(str), mac.astype(str))
        return pd.Series(address) + "|" + pd.Series(port).astype("Int64").astype(str)

    src = side(packets.ip_src, packets.eth_src, packets.src_port.to_numpy())
    dst = side(packets.ip_dst, packets.eth_dst, packets.dst_port.to_numpy())
    key = (
        packets.l4_proto.astype(str).to_numpy()
        + " "
        + np.minimum(src, dst)
        + " "
        + np.maximum(src, dst)
    )
    orig = flows.orig_h + "|" + flows.orig_p.astype("Int64").astype(str)
    resp = flows.resp_h + "|" + flows.resp_p.astype("Int64").astype(str)
    flow_key = flows.proto + " " + np.minimum(orig, resp) + " " + np.maximum(orig, resp)
    expected = pd.Series(1, index=key).groupby(level=0).sum().sort_index()
    got = (flows.orig_pkts + flows.resp_pkts).groupby(flow_key.to_numpy()).sum().sort_index()
    pd.testing.assert_series_equal(got, expected, check_names=False, check_dtype=False)
    # Each flow starts at its own packet; frame numbers and uids are consistent.
    frames = set(packets.frame_number.astype(int))
    assert flows.first_frame.is_unique and set(flows.first_frame.astype(int)) <= frames
    assert (flows.first_frame <= flows.last_frame).all()
    assert flows.uid.is_unique and (flows.capture == capture.name).all()
    # Default maximum duration: no flow longer than 600 s; flows in time order.
    assert (flows.duration <= 600).all() and (flows.duration >= 0).all()
    assert flows.ts.is_monotonic_increasing


@pytest.mark.parametrize("capture", quick_only(REPO_CAPTURES, QUICK_CAPTURES))
def test_the_script_writes_what_the_library_builds(out, capture):
    packets = read_packets(packets_csv(out, capture))
    library = build_flows(packets, FlowOptions(device_ips=(PLUG_IP,)))
    expected = csvio.to_csv_text(library, FLOWS)
    for column in FLOWS.columns:  # times to the microsecond, trailing zeros written
        if column.spelling == "epoch":
            expected[column.name] = expected[column.name].map("{:.6f}".format)
    text = expected.to_csv(index=False, lineterminator="\n")
    assert flows_csv(out, capture).read_text() == text


def test_times_are_written_to_the_microsecond_even_ending_in_zeros(out, ipv6_capture):
    """A time with fewer decimals is what a spreadsheet's copy has (the re-saved check
    warns then): the tools must never write one themselves. (With repr, about one time in
    ten lost a trailing zero.)"""
    times = []
    for path in out.glob("*.flows.csv"):
        times += [line.split(",")[2] for line in path.read_text().splitlines()[1:]]
    assert len(times) >= 30  # (with repr: all 30 with six decimals one time in 20)
    assert {len(t.split(".")[1]) for t in times} == {6}


# ---------------------------------------------------------------- the TP-Link event


@pytest.mark.parametrize("capture", TPLINK_CAPTURES, ids=lambda c: c.name)
def test_tplink_flows_match_tshark_conversations(out, capture):
    flows = read_flows(flows_csv(out, capture))
    packets = read_packets(packets_csv(out, capture))
    convs = conversations(capture)

    # The phone's TCP/9999 connection to the plug: the phone sent the SYN.
    local = one(flows, proto="tcp", resp_p=9999)
    assert (local.orig_h, local.resp_h) == (PHONE_IP, PLUG_IP)
    check_against_tshark(local, convs)
    syn = one(packets, tcp_flags="S", dst_port=9999)
    assert (syn.ip_src, syn.src_port) == (local.orig_h, local.orig_p)
    assert local.first_frame == syn.frame_number
    assert local.device_side == "resp" and local.remote_h == PHONE_IP
    assert local.remote_class == "local" and local.resp_mac == PLUG_MAC

    # The plug's DNS query for the cloud name, to the gateway.
    dns = one(flows, proto="udp", resp_p=53)
    assert (dns.orig_h, dns.resp_h) == (PLUG_IP, GATEWAY_IP)
    assert (dns.orig_pkts, dns.resp_pkts) == (1, 1)
    check_against_tshark(dns, convs)
    assert dns.service == "dns" and dns.dns_qry_name == CLOUD_NAME and dns.dns_qry_type == "A"
    assert dns.device_side == "orig" and dns.remote_class == "gateway"
    assert dns.orig_mac == PLUG_MAC

    # Its TLS flow to an address the DNS answer gave: named after the query.
    answers = one(packets, dns_flags_response=1).dns_answer_addrs.split(";")
    cloud = one(flows, proto="tcp", resp_p=443)
    assert cloud.orig_h == PLUG_IP and cloud.resp_h in answers
    check_against_tshark(cloud, convs)
    syn = one(packets, tcp_flags="S", dst_port=443)
    assert (syn.ip_src, syn.src_port) == (cloud.orig_h, cloud.orig_p)
    assert cloud.service == "tls" and cloud.tls_server_name == CLOUD_NAME
    assert cloud.remote_name == CLOUD_NAME and cloud.remote_class == "external"
    assert cloud.device_side == "orig" and cloud.remote_h == cloud.resp_h
    assert cloud.ts >= dns.ts

    # Every TCP and UDP flow of the capture agrees with tshark, and nothing is left over.
    ip_flows = flows[flows.proto.isin(["tcp", "udp"])]
    for flow in ip_flows.itertuples():
        check_against_tshark(flow, convs)
    assert len(ip_flows) == len(convs)


def test_tplink_payload_bytes_match_tshark(out):
    """orig_bytes/resp_bytes are TCP/UDP payload bytes (Zeek's meaning), per direction."""
    capture = TPLINK_CAPTURES[0]
    fields = tshark(
        "-r",
        str(capture),
        "-Y",
        "tcp or udp",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "udp.srcport",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
        "-e",
        "udp.dstport",
        "-e",
        "tcp.len",
        "-e",
        "udp.length",
    )
    sent = {}
    for line in fields.splitlines():
        src, tsport, usport, dst, tdport, udport, tlen, ulen = line.split(",")
        size = int(tlen) if tlen else int(ulen) - 8
        key = ((src, int(tsport or usport)), (dst, int(tdport or udport)))
        sent[key] = sent.get(key, 0) + size
    flows = read_flows(flows_csv(out, capture))
    for flow in flows[flows.proto.isin(["tcp", "udp"])].itertuples():
        orig, resp = endpoint(flow.orig_h, flow.orig_p), endpoint(flow.resp_h, flow.resp_p)
        assert flow.orig_bytes == sent.get((orig, resp), 0), flow.uid
        assert flow.resp_bytes == sent.get((resp, orig), 0), flow.uid
    local = one(flows, proto="tcp", resp_p=9999)
    assert local.orig_bytes > 0 and local.resp_bytes > 0


@pytest.mark.parametrize("capture", TPLINK_CAPTURES, ids=lambda c: c.name)
def test_arp_grouped_by_addresses_and_type(out, capture):
    fields = tshark(
        "-r",
        str(capture),
        "-Y",
        "arp",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "arp.src.proto_ipv4",
        "-e",
        "arp.dst.proto_ipv4",
        "-e",
        "arp.opcode",
        "-e",
        "frame.len",
        "-e",
        "eth.src",
    )
    arp = pd.DataFrame(
        [line.split(",") for line in fields.splitlines()],
        columns=["src", "dst", "opcode", "length", "mac"],
    )
    arp["length"] = arp["length"].astype(int)
    arp["pair"] = [tuple(sorted(p)) for p in zip(arp.src, arp.dst)]
    flows = read_flows(flows_csv(out, capture))
    arp_flows = flows[flows.proto == "arp"]
    # One flow per pair of addresses, apart from the other protocols between the same hosts.
    assert len(arp_flows) == arp.pair.nunique()
    assert not (flows.proto.isin(["tcp", "udp"]) & flows.arp_opcode.ne("")).any()
    for _, frames in arp.groupby("pair"):
        first = frames.iloc[0]
        flow = one(arp_flows, orig_h=first.src, resp_h=first.dst)
        by_orig, by_resp = frames[frames.src == first.src], frames[frames.src != first.src]
        assert (flow.orig_pkts, flow.resp_pkts) == (len(by_orig), len(by_resp))
        assert flow.orig_frame_bytes == by_orig.length.sum()
        assert flow.resp_frame_bytes == by_resp.length.sum()
        assert flow.orig_mac == first.mac
        opcodes = {"1": "request", "2": "reply"}
        assert flow.arp_opcode == ";".join(dict.fromkeys(opcodes[o] for o in frames.opcode))
        assert pd.isna(flow.orig_p) and pd.isna(flow.resp_p) and flow.orig_bytes == 0
    if arp.empty:  # 1724060053.pcap caught no ARP
        assert capture.name == "1724060053.pcap"
        return
    # Here: the phone and the gateway ask for the plug, the plug replies.
    for asker in (PHONE_IP, GATEWAY_IP):
        flow = one(arp_flows, orig_h=asker)
        assert flow.resp_h == PLUG_IP and flow.arp_opcode == "request;reply"
        assert flow.device_side == "resp" and flow.resp_mac == PLUG_MAC
    assert one(arp_flows, orig_h=GATEWAY_IP).remote_class == "gateway"


@pytest.mark.slow  # the plug's captures translated with --device-ip and identified again
def test_direction_column_gives_the_device_side(out, tmp_path):
    """Translated with --device-ip, the packets say which side is the device: the flows
    come out as with stream-identifier --device-ip."""
    translate(tmp_path, *TPLINK_CAPTURES, device_ip=PLUG_IP)
    inputs = [packets_csv(tmp_path, c) for c in TPLINK_CAPTURES]
    assert all(read_packets(p).direction.isin(["sent", "received"]).all() for p in inputs)
    run_script("stream-identifier.py", "-q", *inputs, "-o", tmp_path)
    for capture in TPLINK_CAPTURES:
        told = read_flows(flows_csv(out, capture))
        guessed = read_flows(flows_csv(tmp_path, capture))
        assert set(guessed.device_side) == {"orig", "resp"}
        columns = [
            "uid",
            "orig_h",
            "resp_h",
            "device_side",
            "remote_h",
            "remote_name",
            "remote_class",
        ]
        pd.testing.assert_frame_equal(guessed[columns], told[columns])
    # Without either, no side is the device, and the remote is the responder.
    run_script(
        "stream-identifier.py",
        "-q",
        packets_csv(out, TPLINK_CAPTURES[0]),
        "-o",
        tmp_path / "neither",
    )
    neither = read_flows(flows_csv(tmp_path / "neither", TPLINK_CAPTURES[0]))
    assert (neither.device_side == "").all() and (neither.remote_h == neither.resp_h).all()


# ---------------------------------------------------------------- splitting flows


def test_idle_timeout_splits_a_conversation(tmp_path):
    path = write_packets(tmp_path / "idle.packets.csv", udp_every([0, 1, 2, 130, 131, 500]))
    for options, sizes in (
        ({}, [3, 2, 1]),
        ({"idle_timeout": 1000}, [6]),
        ({"idle_timeout": 0.5}, [1] * 6),
        ({"idle_timeout": 150}, [5, 1]),
    ):
        flows = flows_of(path, **options)
        assert list(flows.orig_pkts + flows.resp_pkts) == sizes, options
        assert (flows.orig_h == A).all() and (flows.resp_p == 53).all()
    # The same through the script's options.
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path, "--idle-timeout", "150")
    flows = read_flows(tmp_path / "idle.flows.csv")
    assert list(flows.orig_pkts + flows.resp_pkts) == [5, 1]
    assert list(flows.first_frame) == [1, 6] and list(flows.last_frame) == [5, 6]


def test_maximum_duration_cuts_long_flows(tmp_path):
    seconds = list(np.arange(0, 1501, 10.0))  # one packet every 10 s for 25 minutes
    path = write_packets(tmp_path / "long.packets.csv", udp_every(seconds))
    flows = flows_of(path)  # default: 600 s
    assert list(flows.orig_pkts + flows.resp_pkts) == [60, 60, 31]
    assert list(flows.duration) == [590, 590, 300]
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path, "--max-duration", "100")
    flows = read_flows(tmp_path / "long.flows.csv")
    assert len(flows) == 16 and (flows.duration <= 100).all()
    assert (flows.orig_pkts + flows.resp_pkts).sum() == len(seconds)
    assert list(flows.first_frame) == list(range(1, 152, 10))


def test_flows_nobody_answered(tmp_path):
    """A capture where no flow has a reply (one NTP request; broadcasts): the responder's
    columns are zero or empty, its MAC is where the packets went."""
    rows = [
        packet(0.0, A, "162.159.200.1", "udp", 123, 123, length=90),
        *(
            packet(ts, A, "255.255.255.255", "udp", 68, 67, length=342, eth_dst="ff:ff:ff:ff:ff:ff")
            for ts in (1.0, 2.0)
        ),
    ]
    path = write_packets(tmp_path / "silent.packets.csv", rows)
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path, "--device-ip", A)
    flows = read_flows(tmp_path / "silent.flows.csv")
    assert list(flows.orig_pkts) == [1, 2] and list(flows.resp_pkts) == [0, 0]
    assert list(flows.remote_class) == ["external", "broadcast"]
    assert flows.resp_mac[1] == "ff:ff:ff:ff:ff:ff"
    assert flows.resp_size_mean.isna().all() and flows.resp_iat_mean.isna().all()
    assert flows.orig_iat_mean.isna()[0] and flows.orig_iat_mean[1] == 1.0
    assert list(flows.first_sizes) == ["90", "342 342"]


def test_splitting_a_real_capture(tmp_path, out):
    """The plug sends its UDP/9999 replies about 1 s apart: an idle timeout or a maximum
    duration below that cuts them into more flows; nothing is lost."""
    capture = TPLINK_CAPTURES[0]
    source = packets_csv(out, capture)
    whole = read_flows(flows_csv(out, capture))
    replies = whole[(whole.proto == "udp") & (whole.orig_p == 9999)]
    assert len(replies) >= 2 and (replies.orig_pkts == 3).all() and (replies.duration > 1.5).all()
    for option, value in (("--idle-timeout", "0.5"), ("--max-duration", "0.5")):
        run_script("stream-identifier.py", "-q", source, "-o", tmp_path / option, option, value)
        flows = read_flows(flows_csv(tmp_path / option, capture))
        assert (flows.orig_pkts + flows.resp_pkts).sum() == len(read_packets(source))
        split = flows[(flows.proto == "udp") & (flows.orig_p == 9999)]
        assert len(split) == 3 * len(replies) and (split.orig_pkts == 1).all()
        if option == "--max-duration":
            assert (flows.duration <= 0.5).all()
        # The TCP/9999 exchange lasts about 10 ms: still one flow.
        assert one(flows, proto="tcp", resp_p=9999).orig_pkts == 5


@pytest.mark.slow  # a capture built with text2pcap, translated and identified (port reuse in
# a hand-made CSV, test_port_reuse_in_a_hand_made_csv, is in the quick tier)
def test_new_syn_after_fin_starts_a_new_flow(tmp_path):
    """TCP port reuse, in a capture made with text2pcap and read by tshark: a SYN after the
    connection closed (FIN or RST) starts a new flow; a retransmitted SYN does not, even
    after the SYN-ACK; ECN-setup SYN and SYN-ACK (flags E, C) count as SYN and SYN-ACK."""
    client, server = "192.168.1.135", "192.168.1.20"
    closed_by_fin = [
        (0.0, True, "S"),
        (0.01, False, "SA"),
        (0.02, True, "A"),
        (0.03, True, "PA"),
        (0.04, False, "FA"),
        (0.05, True, "FA"),
        (0.06, False, "A"),
    ]
    ecn_reset = [
        (1.0, True, "SEC"),
        (1.01, True, "SEC"),
        (1.02, False, "SAE"),
        (1.03, True, "SEC"),
        (1.04, True, "A"),
        (1.05, False, "R"),
    ]
    third = [(2.0, True, "S"), (2.01, False, "SA"), (2.02, True, "A")]
    segments = [
        (t, by_client, tcp_segment(40000, 8080, flags, b"hi" if "P" in flags else b""))
        if by_client
        else (t, by_client, tcp_segment(8080, 40000, flags))
        for t, by_client, flags in closed_by_fin + ecn_reset + third
    ]
    capture = text2pcap(tmp_path / "reuse.pcap", 6, client, server, segments)
    translate(tmp_path, capture)
    packets = read_packets(packets_csv(tmp_path, capture))
    assert list(packets.tcp_flags[7:10]) == ["SEC", "SEC", "SAE"]
    run_script(
        "stream-identifier.py",
        "-q",
        packets_csv(tmp_path, capture),
        "-o",
        tmp_path,
        "--device-ip",
        client,
    )
    flows = read_flows(flows_csv(tmp_path, capture))
    assert list(flows.orig_pkts) == [4, 4, 2] and list(flows.resp_pkts) == [3, 2, 1]
    assert list(flows.first_frame) == [1, 8, 14] and list(flows.last_frame) == [7, 13, 16]
    assert (flows.orig_h == client).all() and (flows.orig_p == 40000).all()
    assert (flows.resp_p == 8080).all() and (flows.device_side == "orig").all()
    assert list(flows.orig_bytes) == [2, 0, 0]
    assert flows.first_sizes[0] == "60 -60 60 60 -60 60 -60"  # text2pcap pads to 60


def test_port_reuse_in_a_hand_made_csv(tmp_path):
    def connection(start, retransmit_syn=False, end=("FA", "FA")):
        rows = [
            packet(start, A, B, "tcp", 40000, 80, "S"),
            packet(start + 0.1, B, A, "tcp", 80, 40000, "SA"),
        ]
        if retransmit_syn:  # the SYN-ACK was late: the client sends its SYN again
            rows += [
                packet(start + 0.15, A, B, "tcp", 40000, 80, "S"),
                packet(start + 0.16, B, A, "tcp", 80, 40000, "SA"),
            ]
        return rows + [
            packet(start + 0.2, A, B, "tcp", 40000, 80, "A"),
            packet(start + 0.3, A, B, "tcp", 40000, 80, end[0]),
            packet(start + 0.4, B, A, "tcp", 80, 40000, end[1]),
        ]

    rows = connection(0.0) + connection(5.0, retransmit_syn=True) + connection(9.0, end=("R", "A"))
    rows += [
        packet(12.0, A, B, "tcp", 40000, 80, "S"),
        packet(12.1, B, A, "tcp", 80, 40000, "R"),
        packet(13.0, A, B, "tcp", 40000, 80, "S"),
    ]  # refused, tried again
    flows = flows_of(write_packets(tmp_path / "reuse.packets.csv", rows))
    assert list(flows.ts) == [0.0, 5.0, 9.0, 12.0, 13.0] and (flows.orig_h == A).all()
    assert list(flows.orig_pkts) == [3, 4, 3, 1, 1] and list(flows.resp_pkts) == [2, 3, 2, 1, 0]
    assert list(flows.first_frame) == [1, 6, 13, 18, 20]


def test_fingerprints_are_distinct_values_in_time_order(tmp_path):
    """A flow's application fields: each distinct value once, in the order of the packets'
    times (not their rows), multi-valued cells split, generic layers left out of service;
    the DNS answer names the later connection to one of its addresses."""
    server = "93.184.216.34"
    rows = [
        packet(
            2.0,
            A,
            B,
            "udp",
            50000,
            53,
            highest_layer="dns",
            dns_qry_name="b.example;a.example",
            dns_qry_type="A",
        ),
        packet(
            1.0,
            A,
            B,
            "udp",
            50000,
            53,
            highest_layer="dns",
            dns_qry_name="a.example",
            dns_qry_type="A",
        ),
        packet(
            2.5,
            B,
            A,
            "udp",
            53,
            50000,
            highest_layer="dns",
            dns_qry_name="b.example",
            dns_qry_type="A",
            dns_flags_response=1,
            dns_answer_addrs=f"10.9.9.9;{server}",
        ),
        packet(3.0, A, server, "tcp", 40000, 443, "S", highest_layer="tcp"),
        packet(3.1, server, A, "tcp", 443, 40000, "SA", highest_layer="tcp"),
        packet(
            3.2,
            A,
            server,
            "tcp",
            40000,
            443,
            "PA",
            highest_layer="tls",
            tls_server_name="www.example",
        ),
        packet(
            3.3,
            A,
            server,
            "tcp",
            40000,
            443,
            "PA",
            highest_layer="tls",
            tls_server_name="www.example",
        ),
    ]
    flows = flows_of(write_packets(tmp_path / "app.packets.csv", rows), device_ips=(A,))
    dns, tls = one(flows, proto="udp"), one(flows, proto="tcp")
    assert dns.dns_qry_name == "a.example;b.example" and dns.dns_qry_type == "A"
    assert dns.service == "dns" and (dns.orig_pkts, dns.resp_pkts) == (2, 1)
    assert dns.first_frame == 1 and dns.last_frame == 3 and dns.ts == 1.0
    assert tls.service == "tls" and tls.tls_server_name == "www.example"
    assert tls.remote_name == "b.example" and tls.first_sizes == "60 -60 60 60"


def test_cells_that_need_quotes_read_back_whole(tmp_path):
    """Commas, quotes, line feeds and carriage returns in a cell: quoted (RFC 4180), so
    the csv module, pandas and a spreadsheet read the same cell back."""
    uris = ["/a,b", '/say "hi"', "/line\nfeed", "/carriage\rreturn", "/plain"]
    rows = [
        packet(
            float(i),
            A,
            B,
            "tcp",
            40000 + i,
            80,
            "PA",
            highest_layer="http",
            http_request_method="GET",
            http_request_uri=uri,
        )
        for i, uri in enumerate(uris)
    ]
    path = write_packets(tmp_path / "quotes.packets.csv", rows)
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path)
    written = (tmp_path / "quotes.flows.csv").read_bytes().decode()
    assert '"/carriage\rreturn"' in written and '"/a,b"' in written
    with open(tmp_path / "quotes.flows.csv", newline="") as handle:
        cells = [row[FLOWS.names.index("http_request_uri")] for row in csv.reader(handle)][1:]
    assert cells == uris
    assert list(read_flows(tmp_path / "quotes.flows.csv").http_request_uri) == uris


# ---------------------------------------------------------------- IPv6, missed SYN, ICMP


def test_ipv6_flows_match_tshark(tmp_path, out, ipv6_capture):
    flows = read_flows(flows_csv(out, ipv6_capture))
    convs = conversations(ipv6_capture)
    ip_flows = flows[flows.proto.isin(["tcp", "udp"])]
    assert len(ip_flows) == len(convs) >= 10
    for flow in ip_flows.itertuples():
        check_against_tshark(flow, convs)
        assert ":" in flow.orig_h and ":" in flow.resp_h
    # The client opened every connection (its SYN), to port 443 of public addresses.
    assert flows.orig_h.nunique() == 1 and (flows.resp_p == 443).all()
    assert (flows.remote_class == "external").all()
    named = flows[flows.tls_server_name != ""]
    assert len(named) >= 2 and (named.remote_name == named.tls_server_name).all()
    # The device given as an IPv6 address, written out in full.
    client = flows.orig_h[0]
    assert client == "2a00:d40:1:3:7aac:c0ff:fea7:d4c"
    run_script(
        "stream-identifier.py",
        "-q",
        packets_csv(out, ipv6_capture),
        "-o",
        tmp_path,
        "--device-ip",
        "2A00:0D40:0001:0003:7AAC:C0FF:FEA7:0D4C",
    )
    told = read_flows(flows_csv(tmp_path, ipv6_capture))
    assert (told.device_side == "orig").all() and (told.remote_h == told.resp_h).all()


@pytest.mark.slow  # a cut capture translated and identified once more
def test_flows_whose_start_was_not_captured(tmp_path, out):
    """Frames 1-3 (the TCP/9999 handshake) and 11-16 (the DNS exchange and the TLS SYN,
    SYN-ACK, ACK and Client Hello) cut out with editcap."""
    source = TPLINK_CAPTURES[0]
    capture = tmp_path / "late.pcap"
    subprocess.run(
        ["editcap", "-r", str(source), str(capture), "4-10", "17-100000"],
        check=True,
        capture_output=True,
    )
    translate(tmp_path, capture)
    run_script(
        "stream-identifier.py",
        "-q",
        packets_csv(tmp_path, capture),
        "-o",
        tmp_path,
        "--device-ip",
        PLUG_IP,
    )
    flows = read_flows(flows_csv(tmp_path, capture))
    packets = read_packets(packets_csv(tmp_path, capture))
    assert (flows.orig_pkts + flows.resp_pkts).sum() == len(packets)
    convs = conversations(capture)
    # The phone's first captured packet is its request: it stays the originator.
    local = one(flows, proto="tcp", resp_p=9999)
    assert (local.orig_h, local.resp_h, local.device_side) == (PHONE_IP, PLUG_IP, "resp")
    assert (local.orig_pkts, local.resp_pkts) == (3, 4)
    check_against_tshark(local, convs)
    # The first TLS packet captured is the server's ACK (443 -> high port): a reply, so
    # the plug is still the originator.
    cloud = one(flows, proto="tcp", resp_p=443)
    assert (cloud.orig_h, cloud.device_side, cloud.remote_class) == (PLUG_IP, "orig", "external")
    assert (cloud.orig_pkts, cloud.resp_pkts) == (13, 11)
    check_against_tshark(cloud, convs)
    # With neither the DNS answer nor the Client Hello captured, the remote has no name.
    assert cloud.remote_name == "" and cloud.tls_server_name == ""
    # The DNS flow is gone; every other flow is as in the whole capture.
    assert not ((flows.proto == "udp") & (flows.resp_p == 53)).any()
    whole = read_flows(flows_csv(out, source))
    assert len(flows) == len(whole) - 1


def test_a_syn_ack_first_makes_its_receiver_the_originator(tmp_path):
    rows = [
        packet(0.0, B, A, "tcp", 443, 40000, "SA"),
        packet(0.1, A, B, "tcp", 40000, 443, "A"),
        packet(0.2, A, B, "tcp", 40000, 443, "PA", length=300),
    ]
    # A flow between two high ports whose first captured packet is from the server side.
    rows += [
        packet(1.0, B, A, "tcp", 8883, 50001, "PA"),
        packet(1.1, A, B, "tcp", 50001, 8883, "A"),
        packet(1.2, B, A, "tcp", 8883, 50001, "SA"),
    ]  # a late SYN-ACK decides
    # An ECN-setup SYN-ACK (SYN, ACK, ECE) first, between two high ports.
    rows += [
        packet(2.0, B, A, "tcp", 8884, 50002, "SAE"),
        packet(2.1, A, B, "tcp", 50002, 8884, "A"),
    ]
    flows = flows_of(write_packets(tmp_path / "late.packets.csv", rows), device_ips=(A,))
    ecn = one(flows, resp_p=8884)
    assert (ecn.orig_h, ecn.orig_p, ecn.orig_pkts, ecn.resp_pkts) == (A, 50002, 1, 1)
    first = one(flows, resp_p=443)
    assert (first.orig_h, first.orig_p, first.orig_pkts, first.resp_pkts) == (A, 40000, 2, 1)
    second = one(flows, resp_p=8883)
    assert (second.orig_h, second.orig_pkts, second.resp_pkts) == (A, 1, 2)
    assert (flows.device_side == "orig").all()


@pytest.mark.slow  # two captures built with text2pcap, translated and identified (the plug's
# own ICMP, test_icmp_in_a_tplink_capture, is in the quick tier)
def test_icmp_flows(tmp_path):
    """Pings and a port-unreachable, made with text2pcap and read by tshark."""
    pings = text2pcap(
        tmp_path / "ping.pcap",
        1,
        PLUG_IP,
        "8.8.8.8",
        [
            (0.0, True, icmp(8, seq=1)),
            (0.01, False, icmp(0, seq=1)),
            (1.0, True, icmp(8, seq=2)),
            (1.01, False, icmp(0, seq=2)),
            (300.0, True, icmp(8, seq=3)),
            (300.01, False, icmp(0, seq=3)),
        ],
    )  # after the idle timeout
    inner = (
        bytes.fromhex("4500002400010000401100 00c0a80187c0a8016e d4310035 00100000") + b"abcdefgh"
    )  # the datagram that was refused: 192.168.1.135:54321 -> :53
    refused = text2pcap(
        tmp_path / "refused.pcap",
        1,
        PHONE_IP,
        PLUG_IP,
        [(2.0, True, struct.pack("!BBHI", 3, 3, 0, 0) + inner)],
    )
    capture = tmp_path / "icmp.pcap"
    subprocess.run(
        ["mergecap", "-F", "pcap", "-w", str(capture), str(pings), str(refused)],
        check=True,
        capture_output=True,
    )
    translate(tmp_path, capture)
    run_script(
        "stream-identifier.py",
        "-q",
        packets_csv(tmp_path, capture),
        "-o",
        tmp_path,
        "--device-ip",
        PLUG_IP,
    )
    flows = read_flows(flows_csv(tmp_path, capture))
    assert list(flows.proto) == ["icmp"] * 3
    assert (flows.orig_pkts + flows.resp_pkts).sum() == 7
    ping, unreachable, later = flows.itertuples()
    assert (ping.orig_h, ping.resp_h, ping.orig_pkts, ping.resp_pkts) == (PLUG_IP, "8.8.8.8", 2, 2)
    assert ping.icmp_type == "8;0" and ping.device_side == "orig"
    assert ping.remote_class == "external" and pd.isna(ping.orig_p) and pd.isna(ping.resp_p)
    assert (later.orig_h, later.orig_pkts, later.resp_pkts, later.first_frame) == (PLUG_IP, 1, 1, 6)
    assert (unreachable.orig_h, unreachable.resp_h) == (PHONE_IP, PLUG_IP)
    assert unreachable.icmp_type == "3" and unreachable.device_side == "resp"
    assert (unreachable.orig_pkts, unreachable.resp_pkts) == (1, 0)
    assert pd.isna(unreachable.orig_p)  # the refused datagram's ports are not the flow's


def test_icmp_in_a_tplink_capture(out):
    """The phone answers two of the plug's UDP/9999 datagrams with port-unreachable."""
    capture = DATA_CAPTURE_WITH_ICMP
    fields = tshark(
        "-r",
        str(capture),
        "-Y",
        "icmp",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "frame.number",
        "-e",
        "frame.len",
        "-e",
        "icmp.type",
    )
    frames = [line.split(",") for line in fields.splitlines()]
    assert len(frames) == 2
    flow = one(read_flows(flows_csv(out, capture)), proto="icmp")
    assert (flow.orig_h, flow.resp_h, flow.orig_pkts, flow.resp_pkts) == (PHONE_IP, PLUG_IP, 2, 0)
    assert (flow.first_frame, flow.last_frame) == (int(frames[0][0]), int(frames[1][0]))
    assert flow.orig_frame_bytes == sum(int(f[1]) for f in frames)
    assert flow.icmp_type == "3" and pd.isna(flow.orig_p) and pd.isna(flow.resp_p)
    assert (flow.device_side, flow.remote_h, flow.remote_class) == ("resp", PHONE_IP, "local")
    # The refused UDP datagrams are their own flows, not merged with the ICMP ones.
    flows = read_flows(flows_csv(out, capture))
    replies = flows[(flows.proto == "udp") & (flows.orig_p == 9999)]
    assert len(replies) == 3 and (replies.resp_pkts == 0).all()


# ---------------------------------------------------------------- CSVs a person made


def test_a_person_edited_csv(tmp_path, out):
    """Columns reordered, extra columns, optional ones dropped, values typed by hand."""
    source = packets_csv(out, TPLINK_CAPTURES[0])
    original = pd.read_csv(source, dtype=str, keep_default_na=False)
    edited = original.drop(
        columns=["time_utc", "ip_version", "eth_src_vendor", "http_response_code", "dhcp_hostname"]
    )
    edited = edited[list(reversed(edited.columns))]
    edited.insert(3, "note", "checked by hand")
    edited["my score"] = range(len(edited))
    edited["dns_flags_response"] = edited["dns_flags_response"].replace({"1": "true", "0": "false"})
    edited["ts"] = edited["ts"].str.rstrip("0")  # a spreadsheet drops trailing zeros
    ports = edited["src_port"]
    edited["src_port"] = ports.where(ports == "", ports + ".0")
    # A packet typed in at the end: a UDP datagram from the plug to the phone, few fields.
    typed = dict.fromkeys(edited.columns, "")
    typed.update(
        capture=original.capture[0],
        frame_number="51",
        ts="1724059999.5",
        frame_len="100",
        ip_src=PLUG_IP,
        ip_dst=PHONE_IP,
        l4_proto="udp",
        src_port="5000",
        dst_port="6000",
        l4_payload_len="58",
        note="added",
    )
    edited = pd.concat([edited, pd.DataFrame([typed])], ignore_index=True)
    path = tmp_path / "edited.packets.csv"
    edited.to_csv(path, index=False)
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path, "--device-ip", PLUG_IP)
    flows = read_flows(tmp_path / "edited.flows.csv")
    whole = read_flows(flows_csv(out, TPLINK_CAPTURES[0]))
    assert len(flows) == len(whole) + 1
    columns = [
        "uid",
        "orig_h",
        "orig_p",
        "resp_h",
        "resp_p",
        "orig_pkts",
        "resp_pkts",
        "orig_frame_bytes",
        "resp_frame_bytes",
        "orig_bytes",
        "resp_bytes",
        "device_side",
        "remote_name",
        "remote_class",
        "dns_qry_name",
        "tls_server_name",
        "first_sizes",
    ]
    pd.testing.assert_frame_equal(flows[columns].iloc[:-1], whole[columns])
    added = flows.iloc[-1]
    assert (added.orig_h, added.orig_p, added.resp_h, added.resp_p) == (
        PLUG_IP,
        5000,
        PHONE_IP,
        6000,
    )
    assert (added.orig_pkts, added.resp_pkts, added.orig_bytes, added.first_frame) == (1, 0, 58, 51)
    assert added.orig_vendor == "" and added.device_side == "orig"


def test_a_minimal_csv_with_only_the_columns_the_stage_needs(tmp_path, out):
    from iotsig.flows import REQUIRED

    source = packets_csv(out, TPLINK_CAPTURES[0])
    path = tmp_path / "minimal.packets.csv"
    pd.read_csv(source, dtype=str, keep_default_na=False)[REQUIRED].to_csv(path, index=False)
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path, "--device-ip", PLUG_IP)
    flows = read_flows(tmp_path / "minimal.flows.csv")
    whole = read_flows(flows_csv(out, TPLINK_CAPTURES[0]))
    assert list(flows.uid) == list(whole.uid)
    assert list(flows.orig_pkts + flows.resp_pkts) == list(whole.orig_pkts + whole.resp_pkts)
    assert list(flows.arp_opcode) == [""] * len(flows)  # not given, so not known
    assert (flows.orig_vendor == "").all()


# ---------------------------------------------------------------- bad input


def test_missing_columns_are_named(tmp_path, out):
    source = packets_csv(out, TPLINK_CAPTURES[0])
    path = tmp_path / "cut.packets.csv"
    pd.read_csv(source, dtype=str, keep_default_na=False).drop(columns=["ts", "l4_proto"]).to_csv(
        path, index=False
    )
    result = run_script("stream-identifier.py", path, "-o", tmp_path / "o", check=False)
    check_clean_failure(result, tmp_path / "o", str(path), "missing", "ts", "l4_proto")
    assert "frame_len" not in result.stderr  # only what is missing


def test_header_only_csv_gives_header_only_flows(tmp_path):
    path = tmp_path / "empty.packets.csv"
    path.write_text(",".join(PACKETS.names) + "\n")
    result = run_script("stream-identifier.py", path, "-o", tmp_path)
    assert "0 flows" in result.stdout
    assert (tmp_path / "empty.flows.csv").read_text() == ",".join(FLOWS.names) + "\n"
    assert read_flows(tmp_path / "empty.flows.csv").empty
    assert build_flows(read_packets(path)).columns.tolist() == FLOWS.names


@pytest.mark.parametrize(
    "column, value, problem",
    quick_first(
        1,
        [
            ("frame_len", "abc", "not a number"),
            ("ts", "yesterday", "not a number"),
            ("src_port", "80.5", "not a whole number"),
            ("dns_flags_response", "maybe", "not 1/0"),
        ],
    ),
)
def test_unparsable_values_name_line_and_column(tmp_path, out, column, value, problem):
    source = packets_csv(out, TPLINK_CAPTURES[0])
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[6, column] = value  # line 8: the header is line 1
    path = tmp_path / "bad.packets.csv"
    frame.to_csv(path, index=False)
    result = run_script("stream-identifier.py", path, "-o", tmp_path / "o", check=False)
    check_clean_failure(
        result, tmp_path / "o", str(path), "line 8", f"column {column}", repr(value), problem
    )
    with pytest.raises(InputError, match=f"line 8, column {column}"):
        read_packets(path)


def test_zero_byte_and_missing_files(tmp_path):
    path = tmp_path / "nothing.packets.csv"
    path.write_bytes(b"")
    result = run_script("stream-identifier.py", path, "-o", tmp_path / "o", check=False)
    check_clean_failure(result, tmp_path / "o", str(path), "empty")
    result = run_script(
        "stream-identifier.py", tmp_path / "absent.packets.csv", "-o", tmp_path / "o", check=False
    )
    check_clean_failure(result, tmp_path / "o", "absent.packets.csv", "no such file")


def test_one_bad_input_does_not_stop_the_others(tmp_path, out):
    good = packets_csv(out, TPLINK_CAPTURES[1])
    bad = tmp_path / "bad.packets.csv"
    bad.write_text("capture,ts\nx.pcap,1\n")
    result = run_script(
        "stream-identifier.py", bad, good, "-o", tmp_path / "o", "--device-ip", PLUG_IP, check=False
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "bad.packets.csv" in result.stderr
    written = flows_csv("", TPLINK_CAPTURES[1])
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        [written.name, bursts_beside(written).name]
    )
    assert (
        flows_csv(tmp_path / "o", TPLINK_CAPTURES[1]).read_text()
        == flows_csv(out, TPLINK_CAPTURES[1]).read_text()
    )


def test_inputs_that_would_write_one_flows_csv_are_refused(tmp_path, out):
    """x.packets.csv and x.csv both make x.flows.csv: refused before anything is written."""
    source = packets_csv(out, TPLINK_CAPTURES[0])
    (tmp_path / "a").mkdir()
    first, second = tmp_path / "x.packets.csv", tmp_path / "a" / "x.csv"
    shutil.copy(source, first)
    shutil.copy(source, second)
    result = run_script("stream-identifier.py", first, second, "-o", tmp_path / "o", check=False)
    check_clean_failure(
        result, tmp_path / "o", "2 packets CSVs share the name x.flows.csv", str(first), str(second)
    )
    assert not (tmp_path / "o").exists()


def test_rows_without_a_time_are_kept_with_a_warning(tmp_path, out):
    source = packets_csv(out, TPLINK_CAPTURES[0])
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[[3, 7], "ts"] = ""  # emptied by hand in a spreadsheet
    edited = tmp_path / "x.packets.csv"
    frame.to_csv(edited, index=False)
    result = run_script("stream-identifier.py", "-q", edited, "-o", tmp_path / "o")
    assert result.returncode == 0
    assert result.stderr == (
        f"stream-identifier.py: warning: {edited}: 2 row(s) without ts "
        "(first on line 5): taken as time 0, their flows start in 1970\n"
    )
    flows = read_flows(tmp_path / "o" / "x.flows.csv")
    assert int(flows["orig_pkts"].sum() + flows["resp_pkts"].sum()) == len(frame)


def test_rows_without_a_frame_length_are_counted_with_a_warning(tmp_path, out):
    source = packets_csv(out, TPLINK_CAPTURES[0])
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[[10], "frame_len"] = ""
    edited = tmp_path / "x.packets.csv"
    frame.to_csv(edited, index=False)
    result = run_script("stream-identifier.py", "-q", edited, "-o", tmp_path / "o")
    assert result.stderr == (
        f"stream-identifier.py: warning: {edited}: 1 row(s) without "
        "frame_len (first on line 12): counted as 0 bytes\n"
    )
    flows = read_flows(tmp_path / "o" / "x.flows.csv")
    whole = read_flows(flows_csv(out, TPLINK_CAPTURES[0]))
    lost = int(frame.frame_len.where(frame.frame_len != "", None).isna().sum())
    assert lost == 1 and int((flows.orig_pkts + flows.resp_pkts).sum()) == len(frame)
    total = (flows.orig_frame_bytes + flows.resp_frame_bytes).sum()
    whole_total = (whole.orig_frame_bytes + whole.resp_frame_bytes).sum()
    assert whole_total - total == int(pd.read_csv(source).frame_len[10])


def test_addresses_typed_by_hand_in_another_spelling(tmp_path):
    """IPv6 in capitals or uncompressed, MACs in capitals, as a person might type them:
    the same endpoints as tshark's spelling, and the DNS answer still names the flow."""
    device, server = "fd00::5", "2001:db8::10"
    rows = [
        packet(
            1.0,
            device,
            "fd00::1",
            "udp",
            50000,
            53,
            highest_layer="dns",
            dns_qry_name="cloud.example",
            dns_qry_type="AAAA",
        ),
        packet(
            1.1,
            "FD00:0:0::1",
            device,
            "udp",
            53,
            50000,
            highest_layer="dns",
            dns_qry_name="cloud.example",
            dns_qry_type="AAAA",
            dns_flags_response=1,
            dns_answer_addrs="2001:DB8:0::10",
        ),
        packet(2.0, device, server, "tcp", 40000, 443, "S"),
        packet(2.1, "2001:DB8::10", device.upper(), "tcp", 443, 40000, "SA"),
        packet(2.2, device, server, "tcp", 40000, 443, "A"),
    ]
    rows[3]["eth_src"] = rows[3]["eth_src"].upper().replace("02:", "0A:", 1)
    rows[4]["eth_dst"] = rows[3]["eth_src"]
    flows = flows_of(write_packets(tmp_path / "typed.packets.csv", rows), device_ips=(device,))
    assert len(flows) == 2
    tls = one(flows, proto="tcp")
    assert (tls.orig_h, tls.resp_h, tls.orig_pkts, tls.resp_pkts) == (device, server, 2, 1)
    assert tls.remote_name == "cloud.example" and tls.resp_mac == rows[3]["eth_src"].lower()
    assert one(flows, proto="udp").resp_h == "fd00::1"


def test_a_failed_run_leaves_the_previous_output_alone(tmp_path, out):
    source = packets_csv(out, TPLINK_CAPTURES[0])
    path = tmp_path / "x.packets.csv"
    path.write_text(source.read_text())
    run_script("stream-identifier.py", "-q", path, "-o", tmp_path)
    before = (tmp_path / "x.flows.csv").read_text()
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[0, "frame_len"] = "abc"
    frame.to_csv(path, index=False)
    result = run_script("stream-identifier.py", path, "-o", tmp_path, check=False)
    assert result.returncode == 1 and "line 2, column frame_len" in result.stderr
    assert (tmp_path / "x.flows.csv").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_an_interrupted_write_leaves_no_file(tmp_path, out, monkeypatch):
    """Whole or nothing: a write that fails half-way (disk full) leaves neither the output
    nor its temporary file."""
    flows = build_flows(read_packets(packets_csv(out, TPLINK_CAPTURES[0])))
    real_write_rows = csvio.write_rows

    def disk_full(sink, frame, *args, **kwargs):
        real_write_rows(sink, frame.head(2), *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csvio, "write_rows", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        csvio.write_table(flows, FLOWS, tmp_path / "x.flows.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    quick_first(
        1,
        [
            ["--idle-timeout", "0"],
            ["--max-duration", "-5"],
            ["--max-duration", "soon"],
            ["--device-ip", "192.168.1.300"],
        ],
    ),
    ids=lambda args: " ".join(args),
)
def test_bad_options_are_usage_errors(tmp_path, out, args):
    source = packets_csv(out, TPLINK_CAPTURES[0])
    result = run_script("stream-identifier.py", source, "-o", tmp_path, *args, check=False)
    assert result.returncode == 2, args
    assert "Traceback" not in result.stderr and args[0] in result.stderr
    assert not list(tmp_path.iterdir())


def test_handshake_tells_a_connection_opened_in_the_capture_from_one_already_open(run, tmp_path):
    """The plug's recording with the SYN and SYN-ACK of the phone's TCP/9999 connection
    cut out (editcap): that connection was open before the capture, as far as it shows."""
    capture = TPLINK_CAPTURES[0]
    opening = subprocess.run(
        ["tshark", "-n", "-r", capture, "-Y", "tcp.port == 9999 && tcp.flags.syn == 1",
         "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(opening) == 2  # the SYN and the SYN-ACK
    midstream = tmp_path / "midstream.pcap"
    subprocess.run(["editcap", capture, midstream, *opening], check=True)
    run("packet-translator.py", capture, midstream, "-o", tmp_path, "-q")
    for path in (packets_csv(tmp_path, capture), packets_csv(tmp_path, midstream)):
        run("stream-identifier.py", path, "-o", tmp_path, "-q")
    for name, expected in ((capture, "1"), (midstream, "0")):
        flows = pd.read_csv(flows_csv(tmp_path, name), dtype=str, keep_default_na=False)
        assert one(flows, proto="tcp", resp_p="9999").handshake == expected
        assert one(flows, proto="tcp", resp_p="443").handshake == "1"
        assert set(flows.loc[flows["proto"] != "tcp", "handshake"]) == {""}


BOOT_CAPTURE = sorted((CAPTURES / "events" / "TpLinkPlug" / "boot").glob("*.pcap"))[0]
BOOT_PLUG_MAC = "50:c7:bf:f5:a0:83"  # the plug of the boot recordings (not data/'s)


def test_a_dhcp_discover_from_the_unspecified_address_is_the_device_s(tmp_path):
    """A booting device asks for its address from 0.0.0.0, with its MAC: given only the
    device's IP, the translator called its DISCOVER and REQUEST frames 'other' and the
    flow 0.0.0.0 -> 255.255.255.255 had no device side, as if another host had asked.
    They are sent by the device (its MAC, the one its IP is sent to and from), and the
    device opens that flow."""
    run_script("packet-translator.py", BOOT_CAPTURE, "--device-ip", PLUG_IP, "-o", tmp_path, "-q")
    packets = read_packets(packets_csv(tmp_path, BOOT_CAPTURE))
    client = packets[packets["dhcp_msg_type"].isin(["discover", "request"])]
    assert len(client) >= 2 and set(client["ip_src"]) == {"0.0.0.0"}
    assert set(client["direction"]) == {"sent"}
    server = packets[packets["dhcp_msg_type"].isin(["offer", "ack"])]
    assert len(server) >= 2 and set(server["direction"]) == {"received"}
    # Another MAC's frames (the other plug's, no IP) stay 'other'.
    others = packets[~packets["eth_src"].isin([BOOT_PLUG_MAC]) & (packets["ip_dst"] == "")]
    assert len(others) and set(others["direction"]) == {"other"}
    run_script(
        "stream-identifier.py", packets_csv(tmp_path, BOOT_CAPTURE), "--device-ip", PLUG_IP,
        "-o", tmp_path, "-q",
    )  # fmt: skip
    flows = csvio.read_table(flows_csv(tmp_path, BOOT_CAPTURE), FLOWS)
    discover = flows[flows["orig_h"] == "0.0.0.0"]
    assert len(discover) == 1
    assert discover.iloc[0]["device_side"] == "orig"
    assert discover.iloc[0]["orig_mac"] == BOOT_PLUG_MAC
    assert discover.iloc[0]["dhcp_msg_type"] == "discover;request"
