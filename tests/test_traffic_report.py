"""traffic-report.py and main.py's report: inventory.csv, the endpoint map (PNG, SVG), the
timeline (PNG) and report.html, on the TP-Link captures and on made-up flows (50 endpoints,
hostile names), as a user runs them; the library where a picture's geometry is checked."""

from __future__ import annotations

import html.parser
import math
import re
import resource
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from iotsig import csvio, traffic_report
from iotsig.schema import FLOWS, INVENTORY, PACKETS, SIGNATURE, SIGNATURE_VERSION

from conftest import (
    CAPTURES,
    GATEWAY_IP,
    PHONE_IP,
    PLUG_IP,
    PLUG_MAC,
    SCRIPTS,
    TPLINK_CAPTURES,
    quick_first,
    run_script,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = [
    "inventory.csv",
    "endpoint-map.png",
    "endpoint-map.svg",
    "timeline.png",
    "report.html",
]
TPLINK_VENDOR = "Tp-Link Technologies Co.,Ltd."
CLOUD = "use1-api.tplinkra.com"


@pytest.fixture(scope="module")
def toggle(plug_toggle):
    """main.py TpLinkPlug 192.168.1.135 data/*.pcap --event toggle: the report included
    (conftest's plug_toggle, run once per session)."""
    return plug_toggle


class StrictParser(html.parser.HTMLParser):
    """html.parser, plus what it lets pass: unclosed or stray tags, and every link and
    picture source collected."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.urls, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "data"):
                self.urls.append(value or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: Path) -> StrictParser:
    parser = StrictParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def assert_offline(parser: StrictParser) -> None:
    """Pictures are data URIs, links are relative or in-page: nothing is fetched."""
    for url in parser.urls:
        assert not re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", url, re.I) or url.startswith(
            ("data:image/png;base64,", "data:image/svg+xml;base64,")
        ), url


def assert_report_files(output: Path, names=REPORT_FILES) -> None:
    for name in names:
        data = (output / name).read_bytes()
        assert data, name
        if name.endswith(".png"):
            assert data.startswith(PNG_MAGIC), name
        elif name.endswith(".svg"):
            assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
    assert not list(output.glob(".*.part")), "a temporary file was left behind"


# --- main.py on the TP-Link captures -------------------------------------------------------


def test_main_writes_every_report_file_valid_and_says_so(toggle):
    output, result = toggle
    assert_report_files(output)
    parser = parse_html(output / "report.html")
    assert_offline(parser)
    for name in REPORT_FILES:
        assert f"wrote {output / name}" in result.stdout
    last = result.stdout.splitlines()[-1]
    assert last.startswith("main: done in ") and last.endswith(f"open {output / 'report.html'}")
    assert result.stderr == ""


def test_report_names_the_cloud_server_and_the_phone(toggle):
    output, _ = toggle
    text = " ".join(parse_html(output / "report.html").text)
    assert CLOUD in text and PHONE_IP in text and GATEWAY_IP in text
    assert "tls-443-use1-api-tplinkra-com" in text  # pattern.txt is in it
    assert "Tp-Link Technologies Co.,Ltd." in text  # and the inventory


def test_report_links_every_csv_of_the_output_dir_relatively(toggle):
    output, _ = toggle
    parser = parse_html(output / "report.html")
    csvs = {p.name for p in output.glob("*.csv")}
    assert len(csvs) == 11  # 3 packets, 3 flows, 3 bursts, signature, inventory
    assert csvs <= set(parser.urls)
    for url in parser.urls:
        if url.endswith(".csv"):
            assert (output / url).is_file()
    # The pictures are inside the page, not beside it.
    assert sum(u.startswith("data:image/") for u in parser.urls) == 2


def test_inventory_rows(toggle):
    output, _ = toggle
    table = csvio.read_table(output / "inventory.csv", INVENTORY)
    assert list(pd.read_csv(output / "inventory.csv", nrows=0).columns) == INVENTORY.names
    rows = table.set_index("mac")
    assert list(table["mac"])[0] == PLUG_MAC  # the device first
    plug = rows.loc[PLUG_MAC]
    assert (plug["is_device"], plug["role"], plug["vendor"], plug["ipv4"]) == (
        1,
        "device",
        TPLINK_VENDOR,
        PLUG_IP,
    )
    assert table["is_device"].sum() == 1
    phone = rows[rows["ipv4"] == PHONE_IP].iloc[0]
    assert (phone["role"], phone["is_device"]) == ("host", 0)
    # The router forwards the cloud server's frames: its own address only, the rest counted.
    router = rows[rows["role"] == "gateway"]
    assert len(router) == 1 and router.iloc[0]["ipv4"] == GATEWAY_IP
    assert router.iloc[0]["relayed_addrs"] == 3  # one server address per recording
    # Every frame is counted once as sent and once as received.
    packets = pd.concat(
        [csvio.read_table(output / f"{c.name}.packets.csv", PACKETS) for c in TPLINK_CAPTURES]
    )
    assert table["pkts_sent"].sum() == len(packets) == table["pkts_received"].sum()
    assert table["bytes_sent"].sum() == packets["frame_len"].sum()
    sent_by_plug = packets[packets["eth_src"] == PLUG_MAC]
    assert plug["pkts_sent"] == len(sent_by_plug)
    assert plug["bytes_sent"] == sent_by_plug["frame_len"].sum()
    assert plug["first_ts"] == packets["ts"].min() and plug["captures"] == 3
    assert plug["first_time_utc"] == packets["time_utc"].min()


def test_a_dhcp_host_name_is_the_client_s_not_the_router_s_that_echoes_it(tmp_path):
    """A booting plug sends its host name (DHCP option 12) in its DISCOVER and REQUEST; the
    router's OFFER and ACK echo it. The inventory gave the name to the router's MAC too."""
    boot = sorted((CAPTURES / "events" / "TpLinkPlug" / "boot").glob("*.pcap"))[0]
    run_script("packet-translator.py", boot, "-o", tmp_path, "-q")
    packets = csvio.read_table(tmp_path / f"{boot.name}.packets.csv", PACKETS)
    named = packets[packets["dhcp_hostname"] != ""]
    senders = named.groupby("dhcp_msg_type")["eth_src"].agg(set)
    client, router = senders["discover"], senders["offer"]  # the capture shows the echo
    assert len(client) == 1 and len(router) == 1 and client != router
    result = run_script(
        "traffic-report.py", tmp_path / f"{boot.name}.packets.csv", "--device-ip", PLUG_IP,
        "-o", tmp_path / "report", "-q",
    )  # fmt: skip
    table = csvio.read_table(tmp_path / "report" / "inventory.csv", INVENTORY).set_index("mac")
    names = table["dhcp_hostname"]
    assert names[next(iter(client))] == named["dhcp_hostname"].iloc[0]
    assert names[next(iter(router))] == ""
    assert table.loc[next(iter(router)), "role"] == "gateway"
    assert (names != "").sum() == 1, result.stderr


def test_timeline_marks_each_event_pattern_once_per_recording(toggle):
    output, _ = toggle
    inputs = traffic_report.read_inputs(sorted(output.glob("*.flows.csv")))
    from iotsig.signature import read_signature_csv

    patterns = read_signature_csv(output / "signature.csv")
    device = traffic_report.find_device(inputs, signature=patterns)
    matched = traffic_report.match_patterns(
        traffic_report.device_flows(inputs.flows, device), patterns
    )
    events = matched[matched["role"] == "event"]
    counts = events.groupby(["pattern", "capture"]).size()
    assert len(counts) == 3 * 3 and set(counts) == {1}
    assert set(matched["pattern"]) == set(patterns["pattern"])


@pytest.mark.slow  # main.py once more, only to see the report left out
def test_no_report_skips_it(tmp_path):
    result = run_script(
        "main.py", "TpLinkPlug", PLUG_IP, *TPLINK_CAPTURES, "-o", tmp_path, "--no-report", "-q"
    )
    assert result.stdout == ""
    assert not any((tmp_path / name).exists() for name in REPORT_FILES)
    assert (tmp_path / "signature.csv").exists()


# --- traffic-report.py on its own ---------------------------------------------------------


def test_flows_only_makes_everything_but_the_inventory(toggle, tmp_path):
    output, _ = toggle
    result = run_script(
        "traffic-report.py",
        *sorted(output.glob("*.flows.csv")),
        "--signature",
        output / "signature.csv",
        "-o",
        tmp_path,
    )
    assert_report_files(tmp_path, [n for n in REPORT_FILES if n != "inventory.csv"])
    assert not (tmp_path / "inventory.csv").exists()
    text = " ".join(parse_html(tmp_path / "report.html").text)
    assert "needs the packets" in text and CLOUD in text
    assert "no inventory" in result.stdout


@pytest.mark.slow  # the script once more, building the flows itself (--flows only,
# test_flows_only_makes_everything_but_the_inventory, is in the quick tier)
def test_packets_only_rebuilds_the_flows(toggle, tmp_path):
    output, _ = toggle
    result = run_script(
        "traffic-report.py",
        *sorted(output.glob("*.packets.csv")),
        "--device-ip",
        PLUG_IP,
        "-o",
        tmp_path,
    )
    assert_report_files(tmp_path)
    assert "rebuilt from the packets" in result.stderr
    assert CLOUD in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    "make, complaint",
    quick_first(
        2,
        [
            (lambda d: d / "missing.flows.csv", "no such file"),
            (lambda d: _write(d / "other.csv", "a,b,c\n1,2,3\n"), "neither a packets CSV"),
            (lambda d: _write(d / "empty.csv", ""), "empty file"),
            (
                lambda d: _write(d / "signature.csv", "signature_version,pattern\n1,x\n"),
                "give it with --signature",
            ),
        ],
    ),
)
def test_bad_input_is_one_error_line(tmp_path, make, complaint):
    path = make(tmp_path)
    result = run_script("traffic-report.py", path, "-o", tmp_path / "out", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"traffic-report.py: error: {path}: ")
    assert complaint in lines[0]
    assert not any((tmp_path / "out" / name).exists() for name in REPORT_FILES)


def test_flows_without_a_device_ask_for_one(tmp_path):
    flows = _synthetic_flows(3)
    flows["device_side"] = ""
    csvio.write_table(flows, FLOWS, tmp_path / "x.flows.csv")
    result = run_script("traffic-report.py", tmp_path / "x.flows.csv", "-o", tmp_path, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "--device-ip" in result.stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- hostile names ------------------------------------------------------------------------


def test_hostile_names_are_escaped_in_the_report(tmp_path):
    hostile = '<script>alert("x")</script>'
    flows = _synthetic_flows(4)
    flows.loc[0, "remote_name"] = hostile + ".example.com"
    flows.loc[1, "remote_name"] = "$\\frac{a}{b}$ \x1b[31m\u202eevil"  # mathtext, control chars
    csvio.write_table(flows, FLOWS, tmp_path / "x.flows.csv")
    (tmp_path / "pattern.txt").write_text(f"1. {hostile}\n   device -> <img src=x onerror=y>\n")
    run_script(
        "traffic-report.py",
        tmp_path / "x.flows.csv",
        "--pattern",
        tmp_path / "pattern.txt",
        "--device-name",
        "<b>plug</b>",
        "-o",
        tmp_path,
    )
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page and "<b>plug" not in page
    text = "".join(parse_html(tmp_path / "report.html").text)  # shown as text, escaped
    assert hostile + ".example.com" in text and "<img src=x onerror=y>" in text
    assert "&lt;img src=x onerror=y&gt;" in page
    assert_offline(parse_html(tmp_path / "report.html"))
    assert_report_files(tmp_path, ["endpoint-map.png", "endpoint-map.svg", "timeline.png"])


def test_control_characters_are_written_out_in_the_report(tmp_path):
    """A DNS name or DHCP host name with control or direction characters: the page shows
    them as text (\\x1b), never raw (a terminal escape, a right-to-left override)."""
    flows = _synthetic_flows(4)
    flows.loc[0, "remote_name"] = "bell\x01.evil\x1b[31m.example.com"
    flows.loc[1, "remote_name"] = "abc\u202egnp.exe"
    csvio.write_table(flows, FLOWS, tmp_path / "x.flows.csv")
    (tmp_path / "pattern.txt").write_text("1. dns-\x1b]0;title\x07\n   line\ttwo\n")
    run_script(
        "traffic-report.py",
        tmp_path / "x.flows.csv",
        "--pattern",
        tmp_path / "pattern.txt",
        "--device-name",
        "plug\u2066",
        "-o",
        tmp_path,
    )
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    raw = re.findall(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]", page)
    assert raw == []
    for shown in [
        r"bell\x01.evil\x1b[31m.example.com",
        r"abc\u202egnp.exe",
        r"dns-\x1b]0;title\x07",
        r"plug\u2066",
    ]:
        assert shown in page, shown
    assert "line\ttwo" in page  # tab and newline are kept in pattern.txt


# --- 50 endpoints: labels must not run into each other ------------------------------------


def _synthetic_flows(n: int, device: str = PLUG_IP) -> pd.DataFrame:
    """One to three flows from the device to each of n remote parties: every class, long
    and short names, several protocols."""
    rows = []
    rng = np.random.default_rng(7)
    for i in range(n):
        klass = (
            "gateway"
            if i == 0
            else ["external", "external", "external", "local", "multicast"][i % 5]
        )
        address = {
            "gateway": "192.168.1.1",
            "local": f"192.168.1.{20 + i}",
            "multicast": f"239.255.{i}.250",
        }.get(klass, f"52.{i}.7.{i + 1}")
        name = (
            ""
            if klass != "external" or i % 4 == 0
            else f"api{i}.eu-west-{i % 3}.iot-cloud-service-{i}.example.com"
        )
        port, proto, service = [
            (443, "tcp", "tls"),
            (53, "udp", "dns"),
            (80, "tcp", "http"),
            (1900, "udp", "ssdp"),
            (8883, "tcp", ""),
        ][i % 5]
        for j in range(1 + i % 3):
            size = int(rng.integers(60, 200_000))
            rows.append(
                {
                    "uid": f"synthetic.pcap#{len(rows) + 1}",
                    "capture": "synthetic.pcap",
                    "ts": 1.7e9 + i * 0.7 + j * 0.2,
                    "duration": 0.4,
                    "proto": proto,
                    "service": service,
                    "orig_h": device,
                    "orig_p": 40000 + i,
                    "resp_h": address,
                    "resp_p": port + j,
                    "orig_pkts": 3,
                    "orig_bytes": size // 3,
                    "orig_frame_bytes": size // 2,
                    "resp_pkts": 2,
                    "resp_bytes": size // 4,
                    "resp_frame_bytes": size // 2,
                    "device_side": "orig",
                    "remote_h": address,
                    "remote_name": name,
                    "remote_class": klass,
                    "orig_mac": PLUG_MAC,
                    "resp_mac": "c0:56:27:73:46:0b",
                }
            )
    return pd.DataFrame(rows)


def _label_boxes(figure):
    """Each endpoint label as the four corners of its (rotated) text box, in pixels."""
    renderer = figure.canvas.get_renderer()
    boxes = []
    for text in figure.findobj(lambda a: isinstance(a, Text) and a.get_label() == "endpoint-label"):
        if text.get_rotation() == 0:  # (horizontal, maybe several lines)
            box = text.get_window_extent(renderer)
            boxes.append(
                np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
            )
            continue
        angle = math.radians(text.get_rotation())
        text.set_rotation(0)
        extent = text.get_window_extent(renderer)
        text.set_rotation(math.degrees(angle))
        width, height = extent.width, extent.height
        ax, ay = text.get_transform().transform(text.get_position())
        ha = text.get_horizontalalignment()
        x0 = {"left": 0, "center": -width / 2, "right": -width}[ha]
        corners = np.array(
            [
                [x0, -height / 2],
                [x0 + width, -height / 2],
                [x0 + width, height / 2],
                [x0, height / 2],
            ]
        )
        rotation = np.array(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        )
        boxes.append(corners @ rotation.T + [ax, ay])
    return boxes


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating axis test for two convex quadrilaterals."""
    for polygon in (a, b):
        for k in range(4):
            edge = polygon[(k + 1) % 4] - polygon[k]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


@pytest.mark.parametrize("n", [3, 12, 50, 80])
def test_endpoint_labels_do_not_overlap_and_stay_in_the_picture(n):
    flows = _synthetic_flows(n)
    device = traffic_report.Device(ip=PLUG_IP, mac=PLUG_MAC, name="TpLinkPlug")
    ends = traffic_report.endpoints(traffic_report.device_flows(flows, device))
    assert len(ends) == n
    figure = traffic_report.endpoint_map_figure(ends, device)
    figure.canvas.draw()
    boxes = _label_boxes(figure)
    assert len(boxes) == n
    clashes = [(i, j) for i in range(n) for j in range(i + 1, n) if _overlap(boxes[i], boxes[j])]
    assert clashes == []
    width, height = figure.get_size_inches() * figure.dpi
    for box in boxes:  # inside the canvas, so nothing is cut off even before tight saving
        assert box[:, 0].min() >= 0 and box[:, 0].max() <= width
        assert box[:, 1].min() >= 0 and box[:, 1].max() <= height


@pytest.mark.slow  # the script once more (the 50-endpoint map drawn in-process,
# test_endpoint_labels_do_not_overlap_and_stay_in_the_picture, is in the quick tier)
def test_fifty_endpoints_through_the_command(tmp_path):
    csvio.write_table(_synthetic_flows(50), FLOWS, tmp_path / "fifty.flows.csv")
    result = run_script("traffic-report.py", tmp_path / "fifty.flows.csv", "-o", tmp_path)
    assert "50 remote parties" in result.stdout
    assert_report_files(tmp_path, ["endpoint-map.png", "endpoint-map.svg", "timeline.png"])
    page = (tmp_path / "report.html").read_text()
    assert "api47.eu-west-2.iot-cloud-service-47.example.com" in page  # the table has all


def test_more_parties_than_fit_are_folded_into_one_node():
    flows = _synthetic_flows(120)
    device = traffic_report.Device(ip=PLUG_IP, name="plug")
    ends = traffic_report.endpoints(traffic_report.device_flows(flows, device))
    folded = traffic_report.fold_small(ends, traffic_report.MAX_MAP_NODES)
    assert len(folded) == traffic_report.MAX_MAP_NODES
    assert folded["bytes"].sum() == ends["bytes"].sum()
    assert folded["remote"].iloc[-1].startswith(f"{120 - traffic_report.MAX_MAP_NODES + 1} more")


# --- time bins ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "longest, width", [(27.0, 1.0), (4.0, 0.1), (0.16, 0.001), (0.0, 0.001), (86400.0, 60.0)]
)
def test_bin_width_fits_real_and_fake_timing(longest, width):
    # The public event captures have fake 1 ms spacing (a recording lasts 0.16 s); the
    # TP-Link ones in data/ real time (about 27 s).
    assert traffic_report.bin_width(longest) == width


def test_flow_bytes_are_spread_over_the_bins_they_cover():
    flows = pd.DataFrame(
        {
            "capture": ["c", "c"],
            "ts": [100.0, 102.5],
            "duration": [1.99, 0.0],
            "side": ["orig", "resp"],
            "orig_frame_bytes": [200, 30],
            "resp_frame_bytes": [100, 70],
            "orig_pkts": [3, 1],
            "resp_pkts": [1, 1],
        }
    )
    bins = traffic_report.spread_flows(flows, pd.Series({"c": 100.0}), 1.0)
    by_bin = bins.set_index("bin")
    assert by_bin.loc[0, "sent"] == pytest.approx(100)
    assert by_bin.loc[1, "sent"] == pytest.approx(100)
    assert by_bin.loc[2, "sent"] == pytest.approx(70)
    assert by_bin.loc[2, "received"] == pytest.approx(30)
    assert bins["sent"].sum() == pytest.approx(270) and bins["received"].sum() == pytest.approx(130)
    # Activity apart from volume: the packets spread the same way.
    assert list(by_bin["pkts"]) == pytest.approx([2, 2, 2])


# --- a huge signature: every picture and table bounded, time linear in flows ----------------


def _scan(n: int, folder: Path) -> tuple[Path, Path]:
    """A port scan as signature-extractor sees it: n flows from the device to n addresses in
    two recordings, and a signature with one pattern per address (n patterns)."""
    addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n)]
    flows = pd.DataFrame(
        {
            "uid": [f"scan#{i + 1}" for i in range(n)],
            "capture": ["a.pcap", "b.pcap"] * (n // 2),
            "ts": 1.7e9 + np.arange(n) * 0.001,
            "duration": 0.0005,
            "proto": "tcp",
            "service": "",
            "orig_h": PLUG_IP,
            "orig_p": 40000,
            "resp_h": addresses,
            "resp_p": 80,
            "orig_pkts": 1,
            "orig_bytes": 0,
            "orig_frame_bytes": 60,
            "resp_pkts": 1,
            "resp_bytes": 0,
            "resp_frame_bytes": 60,
            "device_side": "orig",
            "remote_h": addresses,
            "remote_name": "",
            "remote_class": "local",
        }
    )
    patterns = pd.DataFrame(
        {
            "signature_version": SIGNATURE_VERSION,
            "event": "scan",
            "device_name": "scanner",
            "device_ip": PLUG_IP,
            "pattern": [f"tcp-80-{a.replace('.', '-')}" for a in addresses],
            "order": np.arange(1, n + 1),
            "role": "event",
            "device_side": "orig",
            "proto": "tcp",
            "remote": addresses,
            "remote_kind": "address",
            "remote_class": "local",
            "server_port": 80,
            "server_side": "remote",
            "recordings_seen": 1,
            "recordings_total": 2,
            "flows_min": 1,
            "flows_max": 1,
            "remote_addrs": addresses,
        }
    )
    csvio.write_table(flows, FLOWS, folder / "scan.flows.csv")
    csvio.write_table(
        patterns.reindex(columns=SIGNATURE.names), SIGNATURE, folder / "signature.csv"
    )
    return folder / "scan.flows.csv", folder / "signature.csv"


def _limited_memory():
    # A regression (a join of every flow with every pattern) fails fast instead of
    # taking the machine's memory: 4 GB of address space is plenty for this report.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.slow  # a regression check on a 20,000-pattern signature
def test_a_signature_of_twenty_thousand_patterns_is_reported_in_seconds(tmp_path):
    """Two recordings of a scan gave 50,001 patterns and a report that ran 15 minutes; the
    timeline drew a row per pattern and the matching joined every flow with every pattern."""
    flows, signature = _scan(20_000, tmp_path)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "traffic-report.py"),
            flows,
            "--signature",
            signature,
            "-o",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited_memory,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 60, elapsed  # about 4 s; the old code: out of memory
    assert "20000 flow(s) matched" in result.stdout
    out = tmp_path / "out"
    assert_report_files(out, [n for n in REPORT_FILES if n != "inventory.csv"])
    width, height = _png_size(out / "timeline.png")
    assert height < 2500  # 30 pattern rows, whatever the signature
    page = (out / "report.html").read_text()
    assert "The signature has 20,000 patterns" in page
    assert "The first 1,000 of 20,000 remote parties" in page
    assert page.count("<tr>") <= 1001 and len(page) < 2_000_000
    parse_html(out / "report.html")


def test_the_timeline_folds_patterns_beyond_thirty_rows():
    patterns = pd.DataFrame(
        {
            "pattern": [f"p{i}" for i in range(100)],
            "order": range(100),
            "role": ["event"] * 90 + ["background"] * 10,
        }
    )
    matched = pd.DataFrame({"pattern": ["p50"] * 5 + ["p95"] * 3 + ["p1"]})
    shown = traffic_report.timeline_rows(patterns, matched)
    assert len(shown) == traffic_report.MAX_TIMELINE_ROWS
    assert list(shown["pattern"][:3]) == ["p0", "p1", "p2"]  # numbers kept, in order
    assert {"p50", "p95"} <= set(shown["pattern"])  # the most flows kept
    assert shown["pattern"].iloc[-1].startswith("71 other patterns")
    rows = traffic_report.row_of(shown, pd.Series(["p50", "p99", "p0"]))
    assert list(rows) == [list(shown["pattern"]).index("p50"), len(shown) - 1, 0]
    small = traffic_report.timeline_rows(patterns.head(30), matched)
    assert list(small["pattern"]) == [f"p{i}" for i in range(30)]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# --- issue 27: what the page and the pictures show -------------------------------------------


def test_each_nav_link_reads_as_its_section_heading_and_tables_scroll_in_a_box(toggle):
    """The nav said 'Endpoints' for the section 'Remote parties'; the inventory table ran
    past a 1,280 px window, taking the page with it."""
    output, _ = toggle
    page = (output / "report.html").read_text()
    nav = re.search(r"<nav>(.*?)</nav>", page).group(1)
    links = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', nav)
    headings = dict(re.findall(r'<h2 id="([^"]+)">([^<]+)</h2>', page))
    assert [target for target, _ in links] == list(headings)
    for target, label in links:
        assert headings[target].startswith(label), (label, headings[target])
    # Both tables in a box that scrolls sideways; long cells wrap.
    assert page.count('<div class="scroll"><table>') == 2
    assert re.search(r"\.scroll\{[^}]*overflow-x:auto", page)
    assert '<td class="wrap">Tp-Link' in page  # (the vendor)


def test_ephemeral_udp_ports_are_one_label():
    """UDP between two dynamic ports (a phone app's discovery answers, RTP...) gave one
    label per port picked: udp/50123, udp/50177... on the map and in the table."""
    flows = pd.DataFrame(
        {
            "proto": ["udp", "udp", "udp", "udp", "tcp"],
            "orig_p": [50123, 50177, 50000, 40000, 50200],
            "resp_p": [61000, 60001, 53, 9999, 443],
            "service": ["", "", "dns", "", ""],
        }
    )
    labels = list(traffic_report.protocol_labels(flows))
    assert labels == ["udp/ephemeral", "udp/ephemeral", "udp/53 dns", "udp/9999", "tcp/443"]


def test_a_recording_longer_than_a_day_has_utc_dates_and_times_on_its_axis(toggle, tmp_path):
    """Seconds since the first packet (0 to 300,000) said nothing about a capture of days."""
    from iotsig.traffic_report.timeline import utc_ticks

    start = 1724059940.5  # 2024-08-19 09:32:20 UTC
    ticks, labels = utc_ticks(start, 0, 3 * 86400)
    assert labels[:2] == ["08-19 12:00", "08-20 00:00"] and len(labels) <= 8
    assert ticks[0] == pytest.approx(1724068800 - start)
    ticks, labels = utc_ticks(start, 0, 30 * 86400)
    assert labels[0] == "2024-08-22" and len(labels) <= 8  # (weeks from the epoch)
    # Through the command: one flow three days after the others.
    output, _ = toggle
    name = TPLINK_CAPTURES[0].name
    flows = pd.read_csv(output / f"{name}.flows.csv", dtype=str, keep_default_na=False)
    ts = flows["ts"].astype(float)
    ts.iloc[-1] += 3 * 86400
    flows["ts"] = ts.map(repr)
    flows.to_csv(tmp_path / f"{name}.flows.csv", index=False)
    run_script("traffic-report.py", tmp_path / f"{name}.flows.csv", "-o", tmp_path / "out", "-q")
    assert (tmp_path / "out" / "timeline.png").read_bytes().startswith(PNG_MAGIC)


def test_listed_times_and_detections_are_drawn_on_the_recording_they_fall_in(toggle, tmp_path):
    """--events and --detections: each listed time a dotted line, each detection a span and a
    triangle, on the volume and the activity panels of its recording; the page counts them."""
    output, _ = toggle
    detect = tmp_path / "detect"
    run_script(
        "event-detector.py", output / "signature.csv", *sorted(output.glob("*.flows.csv")),
        "-o", detect, "-q",
    )  # fmt: skip
    detections = pd.read_csv(detect / "detections.csv")
    assert len(detections) == 3
    times = tmp_path / "times.csv"  # each recording's file name is its start, Unix time
    times.write_text(
        "time,event\n"
        + "".join(f"{c.stem},toggle\n" for c in TPLINK_CAPTURES)
        + "1600000000,toggle\n"
    )
    report = tmp_path / "report"
    run_script(
        "traffic-report.py", *sorted(output.glob("*.packets.csv")),
        *sorted(output.glob("*.flows.csv")), "--signature", output / "signature.csv",
        "--events", times, "--detections", detect / "detections.csv", "-o", report, "-q",
    )  # fmt: skip
    page = (report / "report.html").read_text()
    assert "4 listed event time(s) (--events; dotted lines) and 3 detection(s)" in page
    assert (report / "timeline.png").read_bytes() != (output / "timeline.png").read_bytes()

    from iotsig.traffic_report import build, figures, timeline

    marks = build.marked_times(
        pd.read_csv(times).assign(time=lambda t: t["time"].astype(float)), detect / "detections.csv"
    )
    start = float(TPLINK_CAPTURES[0].stem)
    figure = figures.new_figure(6, 2)
    axes = figure.add_axes([0.1, 0.1, 0.8, 0.8])
    colours = {"toggle": "#111111"}
    timeline._draw_times(axes, marks, start, start + 60, colours, top=True)
    dotted = [line for line in axes.lines if line.get_linestyle() == ":"]
    assert len(dotted) == 1  # its own recording's listed time; not the others', nor 2020's
    assert len(axes.patches) == 1  # its detection's span
    triangles = [line for line in axes.lines if line.get_marker() == "v"]
    assert len(triangles) == 1 and len(triangles[0].get_xdata()) == 1


def test_external_parties_are_coloured_by_organisation_with_a_legend():
    """The map colours each external party by its autonomous system's organisation (the
    flows looked up where the CSV has no such columns), groups them on the ring, and the
    legend names each with its country; the remote-parties table has both."""
    flows = _synthetic_flows(12)  # external parties in 52.x: two of Amazon's systems
    device = traffic_report.Device(ip=PLUG_IP, mac=PLUG_MAC, name="TpLinkPlug")
    ends = traffic_report.endpoints(traffic_report.device_flows(flows, device))
    external = ends[ends["remote_class"] == "external"]
    assert set(external["org"]) == {"AMAZON-AES", "AMAZON-02"}
    assert set(external["country"]) == {"US"}
    assert set(ends.loc[ends["remote_class"] != "external", "org"]) == {""}
    figure = traffic_report.endpoint_map_figure(ends, device)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "external: AMAZON-AES · US (5)" in legend
    assert "external: AMAZON-02 · US (2)" in legend
    assert not any(entry.startswith("external (") for entry in legend)
    # One organisation's parties sit next to each other on the ring.
    ring = traffic_report.figures._by_organisation(ends)
    groups = ring["group"].tolist()
    assert all(
        groups.index(g) + groups.count(g) - 1 == len(groups) - 1 - groups[::-1].index(g)
        for g in set(groups)
    )


def test_a_detections_csv_of_start_times_alone_is_drawn_and_a_missing_one_is_an_error(
    toggle, tmp_path
):
    """Another tool's detections: a start column is enough; a file that is not there is one
    error line, before anything is written."""
    output, _ = toggle
    flows = sorted(output.glob("*.flows.csv"))
    minimal = tmp_path / "found.csv"
    minimal.write_text(f"start\n{TPLINK_CAPTURES[0].stem}.5\n")
    run_script("traffic-report.py", *flows, "--detections", minimal, "-o", tmp_path / "a", "-q")
    page = (tmp_path / "a" / "report.html").read_text()
    assert "0 listed event time(s) (--events; dotted lines) and 1 detection(s)" in page
    result = run_script(
        "traffic-report.py", *flows, "--detections", tmp_path / "absent.csv",
        "-o", tmp_path / "b", "-q", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().endswith("absent.csv: no such file")
    assert not (tmp_path / "b" / "report.html").exists()
