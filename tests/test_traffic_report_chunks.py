"""The traffic report reads the packets CSVs in chunks when flows CSVs are given
(traffic_report/packet_summary.py: small aggregates, and a second pass for the device's
byte bins). Its outputs must be those of reading the packets whole: checked here on real
captures with chunks of a few packets, against the packets read whole by read_table (as
before the chunks, and as the report still reads them to rebuild flows)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from iotsig import csvio, traffic_report
from iotsig.schema import FLOWS, PACKETS
from iotsig.signature import read_signature_csv
from iotsig.traffic_report import packet_summary
from iotsig.traffic_report.inputs import PACKET_COLUMNS, PACKET_OPTIONAL

from conftest import CAPTURES, PLUG_IP, run_script

CHUNK_BYTES = 2048  # of CSV text: about 8 packet rows (a header row alone is ~400 bytes)
PROTOCOL_CAPTURES = [
    CAPTURES / name
    for name in ("6in4tunnel.pcap", "dhcp.pcapng", "http_ipv6.pcap", "mdns.pcap", "upnp.pcap")
]


def chunk_count(path: Path) -> int:
    """How many chunks the report reads path in (0: read whole)."""
    try:
        chunks = csvio.read_table_chunks(path, PACKETS, columns=["ts"], chunk_bytes=CHUNK_BYTES)
        return sum(1 for _ in chunks)
    except csvio.NeedsWholeFile:
        return 0


def read_both_ways(packet_files, flow_files, monkeypatch):
    """(inputs read in small chunks, inputs with the packets read whole)."""
    monkeypatch.setattr(packet_summary, "CHUNK_BYTES", CHUNK_BYTES)
    chunked = traffic_report.read_inputs([*packet_files, *flow_files])
    whole = traffic_report.read_inputs(flow_files)
    whole.packet_files = list(packet_files)
    frames = [
        csvio.read_table(p, PACKETS, columns=PACKET_COLUMNS + PACKET_OPTIONAL, compact=True)
        for p in packet_files
    ]
    whole.summary = packet_summary.summary_of(pd.concat(frames, ignore_index=True))
    return chunked, whole


def assert_same_report(packet_files, flow_files, tmp_path, monkeypatch, **options):
    """Everything the report computes from the packets, and every file it writes, the same
    whether the packets were read in chunks or whole."""
    assert max(map(chunk_count, packet_files)) >= 3  # (a capture spans several chunks)
    chunked, whole = read_both_ways(packet_files, flow_files, monkeypatch)
    # Every packet counted once: a chunk lost or read twice changes frames and bytes.
    packets = sum(len(csvio.read_table(p, PACKETS, columns=["ts"])) for p in packet_files)
    assert chunked.summary.groups["frames"].sum() == packets
    pd.testing.assert_frame_equal(chunked.summary.groups, whole.summary.groups)
    patterns = (
        read_signature_csv(options["signature_path"]) if "signature_path" in options else None
    )
    ip, mac = options.get("device_ip"), options.get("device_mac")
    device = traffic_report.find_device(chunked, ip, mac, signature=patterns)
    assert device == traffic_report.find_device(whole, ip, mac, signature=patterns)
    starts = traffic_report.recording_starts(chunked)
    pd.testing.assert_series_equal(starts, traffic_report.recording_starts(whole))
    pd.testing.assert_series_equal(
        traffic_report.recording_ends(chunked), traffic_report.recording_ends(whole)
    )
    bins = traffic_report.activity(chunked, device, starts, 0.01)  # (fine: many bins)
    assert len(bins) > 10
    pd.testing.assert_frame_equal(bins, traffic_report.activity(whole, device, starts, 0.01))
    # The files: the same bytes (SVG element ids are random unless salted).
    monkeypatch.setitem(matplotlib.rcParams, "svg.hashsalt", "chunks")
    reports = {}
    for name, inputs in (("chunked", chunked), ("whole", whole)):
        (tmp_path / name).mkdir(parents=True)
        reports[name] = traffic_report.build_report(inputs, tmp_path / name, **options)
    pd.testing.assert_frame_equal(reports["chunked"].inventory, reports["whole"].inventory)
    written = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "chunked").iterdir())
    assert "inventory.csv" in written and "timeline.png" in written
    for name in written:
        assert (tmp_path / "chunked" / name).read_bytes() == (
            tmp_path / "whole" / name
        ).read_bytes(), name
    return reports["chunked"]


def test_plug_recordings_in_chunks_report_as_read_whole(plug_toggle, tmp_path, monkeypatch):
    """main.py's three recordings of the plug, the device named by the signature."""
    output, _ = plug_toggle
    report = assert_same_report(
        sorted(output.glob("*.packets.csv")),
        sorted(output.glob("*.flows.csv")),
        tmp_path,
        monkeypatch,
        signature_path=output / "signature.csv",
    )
    assert report.device.ip == PLUG_IP and report.inventory["is_device"].sum() == 1


@pytest.mark.slow
def test_device_found_from_packet_directions_in_chunks(tmp_path, monkeypatch):
    """The plug booting (DHCP host names). No --device-ip, no signature, flows whose
    device_side was emptied: the device is the source the packets' direction column names
    most (counted over the chunks' groups)."""
    boots = sorted((CAPTURES / "events" / "TpLinkPlug" / "boot").glob("*.pcap"))
    run_script("packet-translator.py", *boots, "--device-ip", PLUG_IP, "-o", tmp_path, "-q")
    packet_files = sorted(tmp_path.glob("*.packets.csv"))
    run_script("stream-identifier.py", *packet_files, "-o", tmp_path, "-q")
    flow_files = sorted(tmp_path.glob("*.flows.csv"))
    for path in flow_files:
        flows = csvio.read_table(path, FLOWS)
        csvio.write_table(flows.assign(device_side=""), FLOWS, path)
    report = assert_same_report(packet_files, flow_files, tmp_path / "out", monkeypatch)
    assert report.device.how == "the packets' direction column"
    assert report.device.ip == PLUG_IP
    device = report.inventory[report.inventory["is_device"] == 1]
    assert list(device["mac"]) == [report.device.mac] and device["dhcp_hostname"].iloc[0] != ""


@pytest.mark.slow  # (five more captures translated; the plug's cases are in the quick tier)
def test_protocol_captures_and_a_spreadsheet_copy_in_chunks(tmp_path, monkeypatch):
    """Captures of several hosts, IPv6, tunnels, multicast; one packets CSV saved
    with ';' as a spreadsheet does, which is read whole among the others read in chunks."""
    run_script("packet-translator.py", *PROTOCOL_CAPTURES, "-o", tmp_path, "-q")
    packet_files = sorted(tmp_path.glob("*.packets.csv"))
    run_script("stream-identifier.py", *packet_files, "-o", tmp_path, "-q")
    flow_files = sorted(tmp_path.glob("*.flows.csv"))
    resaved = packet_files[0].with_name("resaved.packets.csv")
    pd.read_csv(packet_files[0], dtype=str, keep_default_na=False).to_csv(
        resaved, sep=";", index=False
    )
    with pytest.raises(csvio.NeedsWholeFile):
        next(csvio.read_table_chunks(resaved, PACKETS))
    packet_files[0].unlink()  # (the copy stands for it)
    packet_files[0] = resaved
    host = "2a00:d40:1:3:7aac:c0ff:fea7:d4c"  # (the client in http_ipv6.pcap)
    report = assert_same_report(
        packet_files, flow_files, tmp_path / "out", monkeypatch, device_ip=host
    )
    assert report.inventory["is_device"].sum() == 1 and len(report.inventory) > 10
