"""Flows built partition by partition (iotsig.flow_partitions, issue 16): the flows CSV of a
packets CSV read in chunks and built in partitions is the one-pass CSV byte for byte. The
partition and chunk sizes are forced tiny here so that small real captures really are
read in several chunks and built in several partitions."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iotsig import csvio, flow_partitions, flows, pipeline
from iotsig.errors import InputError, OutputError
from iotsig.schema import PACKETS

from conftest import CAPTURES, PLUG_IP, SHARED, TPLINK_CAPTURES, run_script

QUICK = [*TPLINK_CAPTURES, CAPTURES / "http_ipv6.pcap", CAPTURES / "dhcp.pcapng"]
# Its camera's HTTP flows are named by DNS only (no TLS server name, no HTTP Host).
DNS_ONLY = CAPTURES / "sweep" / "events" / "DLinkCamera" / "boot" / "1741796843.anon.pcap"
SHARED_FOLDERS = ["protocols", "events", "tplink-plug-kasa", "long"]


def chunk_bytes_for(packets_csv: Path, chunks: int) -> int:
    """A chunk size that reads the file in about `chunks` chunks (a row must fit in one)."""
    return max(2048, packets_csv.stat().st_size // chunks)


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def one_pass(packets_csv: Path, out: Path, options: flows.FlowOptions) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return pipeline.packets_to_flows(packets_csv, out, options, partitions=1).flows_csv


def partitioned(
    packets_csv: Path, out: Path, options: flows.FlowOptions, partitions=5, chunks=6
) -> tuple[Path, flow_partitions.Written]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "partitioned.flows.csv"
    written = flow_partitions.write_flows(
        packets_csv, path, options, partitions, chunk_bytes_for(packets_csv, chunks)
    )
    return path, written


def assert_same_bytes(packets_csv: Path, out: Path, options: flows.FlowOptions, **sizes):
    whole = one_pass(packets_csv, out / "one", options)
    parts, written = partitioned(packets_csv, out / "parts", options, **sizes)
    assert filecmp.cmp(whole, parts, shallow=False), f"{packets_csv.name}: {options}"
    # The bursts too: renumbered to the merged flows, keep-alives marked across partitions.
    whole_bursts, parts_bursts = flows.bursts_beside(whole), flows.bursts_beside(parts)
    assert filecmp.cmp(whole_bursts, parts_bursts, shallow=False), f"{packets_csv.name} bursts"
    assert written.bursts == len(pd.read_csv(whole_bursts, usecols=["uid"]))
    return written


def joined_csv(files: list[Path], path: Path) -> Path:
    """Several packets CSVs as one (rows of several captures in one file)."""
    lines = [files[0].read_text().splitlines(keepends=True)[0]]
    for f in files:
        lines += f.read_text().splitlines(keepends=True)[1:]
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def quick_packets(tmp_path_factory) -> dict[str, Path]:
    """The quick captures translated with the plug's address (direction filled in); the
    three TP-Link recordings joined in one packets CSV; and one recording joined with a copy
    of itself under another name (each flow has a twin that starts at the same time in
    another conversation: ties in the CSV's order)."""
    out = tmp_path_factory.mktemp("packets")
    twin = out / "twin.pcap"
    shutil.copyfile(TPLINK_CAPTURES[0], twin)
    captures = [*QUICK, twin]
    run_script("packet-translator.py", *captures, "--device-ip", PLUG_IP, "-o", out, "-q")
    found = {c.name: out / f"{c.name}.packets.csv" for c in captures}
    found["joined"] = joined_csv(
        [found[c.name] for c in TPLINK_CAPTURES], out / "joined.packets.csv"
    )
    found["twins"] = joined_csv(
        [found[TPLINK_CAPTURES[0].name], found.pop(twin.name)], out / "twins.packets.csv"
    )
    return found


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(flows.FlowOptions(), marks=pytest.mark.slow, id="by-direction"),
        pytest.param(flows.FlowOptions(device_ips=(PLUG_IP,), idle_timeout=5), id="device-ip"),
    ],
)
def test_partitioned_flows_are_the_one_pass_bytes(quick_packets, options, tmp_path, monkeypatch):
    # Batches of a few flows: the merge takes flows from several partitions in each.
    monkeypatch.setattr(csvio, "WRITE_BATCH_ROWS", 7)
    monkeypatch.setattr(flow_partitions, "MERGE_PIECE_ROWS", 3)
    for name, packets_csv in quick_packets.items():
        written = assert_same_bytes(packets_csv, tmp_path / name, options)
        if written.packets >= 40:  # (tiny ones: one chunk, few conversations)
            assert written.chunks >= 3 and written.filled >= 3, (name, written)
        assert written.packets == len(pd.read_csv(packets_csv, usecols=["frame_number"]))


def test_a_conversation_read_in_several_chunks(quick_packets, tmp_path):
    packets_csv = quick_packets["1724060053.pcap"]
    chunk_bytes = chunk_bytes_for(packets_csv, 8)
    chunk_of_row = np.concatenate(
        [
            np.full(len(frame), number)
            for number, frame in enumerate(
                csvio.read_table_chunks(
                    packets_csv,
                    PACKETS,
                    flows.REQUIRED,
                    flows.REQUIRED + flows.OPTIONAL,
                    chunk_bytes,
                )
            )
        ]
    )
    whole = pd.read_csv(one_pass(packets_csv, tmp_path / "one", flows.FlowOptions()))
    # One capture, nothing dropped: frame N is row N - 1.
    first = chunk_of_row[whole["first_frame"].to_numpy() - 1]
    last = chunk_of_row[whole["last_frame"].to_numpy() - 1]
    across = whole[first != last]
    assert (across["proto"] == "tcp").any(), "no TCP flow spans a chunk border"
    assert_same_bytes(packets_csv, tmp_path, flows.FlowOptions(), chunks=8)


def test_dns_name_from_an_answer_in_another_partition(translations, tmp_path):
    if not DNS_ONLY.exists():
        pytest.skip(f"{DNS_ONLY} is missing (a copy of ../shared/pcaps/events/DLinkCamera/)")
    packets_csv = translations.of([DNS_ONLY]) / f"{DNS_ONLY.name}.packets.csv"
    whole = pd.read_csv(
        one_pass(packets_csv, tmp_path / "one", flows.FlowOptions()), keep_default_na=False
    )
    # Named only by a DNS answer: no TLS server name, no HTTP Host in the flow.
    named = whole[
        (whole["remote_name"] != "")
        & (whole["tls_server_name"] == "")
        & (whole["http_host"] == "")
        & (whole["service"] != "dns")
    ]
    assert len(named), "no flow of the camera is named by DNS alone"
    flow = named.iloc[0]
    packets = pipeline.read_packets(packets_csv)
    answer_rows = np.flatnonzero(
        (packets["dns_flags_response"] == "1")
        & packets["dns_answer_addrs"].astype(str).str.contains(flow["remote_h"], regex=False)
    )
    hashes = flows.conversation_hash(flows.prepare(packets))
    flow_row = int(flow["first_frame"]) - 1
    partitions = next(
        k
        for k in range(2, 20)
        if all(hashes[answer_rows] % np.uint64(k) != hashes[flow_row] % np.uint64(k))
    )
    path, _ = partitioned(packets_csv, tmp_path / "parts", flows.FlowOptions(), partitions)
    got = pd.read_csv(path, keep_default_na=False)
    assert got.loc[got["uid"] == flow["uid"], "remote_name"].tolist() == [flow["remote_name"]]
    assert filecmp.cmp(tmp_path / "one" / f"{DNS_ONLY.name}.flows.csv", path, shallow=False)


def test_stopped_build_leaves_no_partition_folder_and_the_old_csv(
    quick_packets, tmp_path, monkeypatch
):
    """Ctrl-C while partitions are being built: no temporary folder, no half CSV, and the
    flows CSV of an earlier run is still there as it was."""
    packets_csv = quick_packets["joined"]
    earlier = one_pass(packets_csv, tmp_path, flows.FlowOptions())
    before = earlier.read_bytes()
    built = []

    def stopped(*args):
        if built:
            raise KeyboardInterrupt
        built.append(1)
        return build_of(*args)

    build_of = flows.build_of
    monkeypatch.setattr(flows, "build_of", stopped)
    with pytest.raises(KeyboardInterrupt):
        flow_partitions.write_flows(
            packets_csv, earlier, flows.FlowOptions(), 4, chunk_bytes_for(packets_csv, 4)
        )
    assert built, "stopped before any partition was built"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.bursts.csv", earlier.name]
    assert earlier.read_bytes() == before


def test_a_spreadsheet_copy_is_read_whole(quick_packets, tmp_path):
    """A ';'-separated copy (a spreadsheet's, where the decimal mark is a comma) is read
    whole, as read_table reads it: the same flows and the same note as in one pass."""
    packets_csv = quick_packets["joined"]
    copy = tmp_path / "copy.packets.csv"
    pd.read_csv(packets_csv, dtype=str, keep_default_na=False).to_csv(copy, sep=";", index=False)
    whole = pipeline.packets_to_flows(copy, folder(tmp_path / "one"), partitions=1)
    parts = pipeline.packets_to_flows(copy, folder(tmp_path / "parts"), partitions=4)
    assert any("separator is ';'" in w for w in whole.warnings)
    assert parts.warnings == whole.warnings
    assert filecmp.cmp(whole.flows_csv, parts.flows_csv, shallow=False)


def test_a_bad_cell_late_in_the_file_is_the_one_pass_error(quick_packets, tmp_path):
    packets_csv = quick_packets["joined"]
    lines = packets_csv.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    at = len(lines) - 3
    cells = lines[at].rstrip("\n").split(",")
    cells[header.index("frame_len")] = "12x"
    lines[at] = ",".join(cells) + "\n"
    bad = tmp_path / "bad.packets.csv"
    bad.write_text("".join(lines))
    messages = []
    for partitions in (1, 4):
        with pytest.raises(InputError) as caught:
            pipeline.packets_to_flows(
                bad, folder(tmp_path / str(partitions)), partitions=partitions
            )
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert f"line {at + 1}" in messages[0]
    assert not any((tmp_path / "4").iterdir())


def test_blank_times_are_said_as_in_one_pass(quick_packets, tmp_path):
    packets_csv = quick_packets["1724060053.pcap"]
    table = pd.read_csv(packets_csv, dtype=str, keep_default_na=False)
    table.loc[[40, len(table) - 2], "ts"] = ""
    blanked = tmp_path / "blanked.packets.csv"
    table.to_csv(blanked, index=False)
    whole = pipeline.packets_to_flows(blanked, folder(tmp_path / "one"), partitions=1)
    parts = pipeline.packets_to_flows(blanked, folder(tmp_path / "parts"), partitions=3)
    assert whole.warnings == parts.warnings
    assert "2 row(s) without ts (first on line 42)" in whole.warnings[0]


@pytest.mark.slow  # every shared capture, translated, then built both ways
@pytest.mark.parametrize("folder", SHARED_FOLDERS)
def test_every_shared_capture_partitioned_is_the_one_pass_bytes(folder, tmp_path):
    pcaps = SHARED / "pcaps" / folder
    if not pcaps.is_dir():
        pytest.skip(f"{pcaps} is absent (the shared captures beside the repository)")
    captures = sorted(p for p in pcaps.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    checked = 0
    for directory in sorted({c.parent for c in captures}):
        out = tmp_path / str(directory.relative_to(pcaps))
        here = [c for c in captures if c.parent == directory]
        run_script("packet-translator.py", *here, "-o", out, "-q")
        for capture in here:
            packets_csv = out / f"{capture.name}.packets.csv"
            assert_same_bytes(packets_csv, out / capture.name, flows.FlowOptions(), partitions=4)
            checked += 1
    assert checked == len(captures)


def test_chunks_are_the_whole_read_even_with_a_line_break_in_a_cell(quick_packets, tmp_path):
    """A cell edited by hand to hold a line break (quoted, RFC 4180): wherever a chunk's
    bytes end, chunks are cut at row ends, and together they are the whole read."""
    packets_csv = quick_packets["1724060053.pcap"]
    table = pd.read_csv(packets_csv, dtype=str, keep_default_na=False)
    table.loc[20, "dns_qry_name"] = 'two\nlines, "quoted"'
    edited = tmp_path / "edited.packets.csv"
    table.to_csv(edited, index=False)
    columns = flows.REQUIRED + flows.OPTIONAL
    whole = csvio.read_table(edited, PACKETS, flows.REQUIRED, columns, compact=True)
    assert whole.loc[20, "dns_qry_name"] == 'two\nlines, "quoted"'
    data = edited.read_bytes()
    header = data.index(b"\n") + 1
    inside = data.index(b"two\nlines") + 4  # just after the line break in the cell
    # The first chunk's bytes end inside the quoted cell; then a few other places.
    for chunk_bytes in [inside - header + 2, inside - header + 20, 1000, 1500]:
        chunks = list(
            csvio.read_table_chunks(edited, PACKETS, flows.REQUIRED, columns, chunk_bytes)
        )
        assert len(chunks) >= 3
        together = pd.concat(chunks)
        pd.testing.assert_frame_equal(
            together.astype(object), whole.astype(object), check_index_type=False
        )


def test_a_full_disk_is_one_error_and_leaves_nothing(quick_packets, mount_tmpfs):
    """Room for the flows CSV but not for the partitions: one OutputError naming the disk
    full, no temporary folder, no flows CSV."""
    packets_csv = quick_packets["joined"]
    disk = mount_tmpfs("size=24k")
    with pytest.raises(OutputError) as caught:
        flow_partitions.write_flows(packets_csv, disk / "x.flows.csv", flows.FlowOptions(), 4, 2048)
    assert "No space left on device" in str(caught.value)
    assert str(disk) in str(caught.value)
    assert list(disk.iterdir()) == []
