"""A capture translated in chunks (one tshark each, at once) gives the packets CSV of one
tshark over the whole capture, byte for byte: frame numbers, reassembled TCP segments and
IP datagrams across a border, warnings. The chunks are made small here so that every
capture has borders (in use, a chunk is 100,000 to 500,000 packets)."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from iotsig import csvio, flow_partitions, packets, pipeline, tshark

from conftest import CAPTURES, SHARED, TPLINK_CAPTURES, quick_only, run_script

SHARED_PCAPS = SHARED / "pcaps"
CAPTURE_FILES = (
    sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng")) + TPLINK_CAPTURES
)
QUICK = {"http-lines-split.pcap"}  # two chunks, an HTTP request in several segments


def chunks_of(monkeypatch, frames: int = 10**9) -> None:
    """Chunk every capture: in chunks of `frames` frames, or as many as there are jobs."""
    monkeypatch.setattr(packets, "MIN_CHUNKED_BYTES", 0)
    monkeypatch.setattr(packets, "MIN_CHUNK_PACKETS", 1)
    monkeypatch.setattr(packets, "ONE_TSHARK_PACKETS", 1)  # on one core (-j 1) too
    monkeypatch.setattr(packets, "CHUNK_PACKETS", frames)


def translated(capture: Path, output: Path, jobs: int = 1) -> packets.Translation:
    [(_, result)] = list(packets.run_translations([(capture, output, None, None)], jobs))
    assert isinstance(result, packets.Translation), result
    return result


def assert_same_translation(capture: Path, tmp_path: Path, jobs: int = 1):
    whole = packets.translate(capture, tmp_path / "whole.csv")
    ranges = packets.plan_chunks(capture, jobs)
    assert ranges and len(ranges) > 1, "the capture must be cut"
    chunked = translated(capture, tmp_path / "chunked.csv", jobs)
    assert filecmp.cmp(tmp_path / "whole.csv", tmp_path / "chunked.csv", shallow=False)
    assert chunked.warnings == whole.warnings
    assert chunked.packets == whole.packets
    assert not list(tmp_path.glob(".*")), "the chunks' parts are gone"
    return whole, chunked


@pytest.mark.parametrize("capture", quick_only(CAPTURE_FILES, QUICK))
def test_chunked_translation_is_the_whole_one(capture, tmp_path, monkeypatch):
    """Chunks of 7 frames (fewer in a small capture): borders everywhere, across DNS
    answers cut in IP fragments, HTTP requests in several TCP segments, TLS handshakes."""
    count = tshark.packet_count(capture)
    if count < 2:
        pytest.skip("a capture of one packet has no border")
    chunks_of(monkeypatch, frames=min(7, count // 2))
    assert_same_translation(capture, tmp_path)


def test_chunks_run_at_once_on_workers(tmp_path, monkeypatch):
    """Two worker processes, several chunks each: parts joined in frame order."""
    chunks_of(monkeypatch, frames=5)
    assert_same_translation(CAPTURES / "http-lines-split.pcap", tmp_path, jobs=2)


@pytest.mark.slow
def test_a_fragment_waits_past_its_chunk_for_its_datagram(tmp_path, monkeypatch):
    """Every frame its own chunk: a fragment's chunk reads on past its end until the frame
    that completes the datagram, and takes the conversation (ports) from it."""
    chunks_of(monkeypatch, frames=1)
    assert_same_translation(CAPTURES / "dns_fragmented.pcap", tmp_path)
    rows = pd.read_csv(tmp_path / "chunked.csv", dtype=str, keep_default_na=False)
    udp = rows[rows["l4_proto"] == "udp"]
    assert (udp["highest_layer"] == "data").sum() >= 5  # the fragments before the last
    assert (udp["src_port"] != "").all() and (udp["dst_port"] != "").all()


@pytest.mark.slow
def test_a_datagram_ending_past_the_tail_has_its_chunk_read_again(tmp_path, monkeypatch):
    """No tail: each fragment's chunk ends before its datagram does, and is read again
    with the whole capture's wait."""
    chunks_of(monkeypatch, frames=2)  # datagrams of frames 2-3 and 8-9 cross a border
    monkeypatch.setattr(packets, "CHUNK_TAIL_FRAMES", 0)
    assert_same_translation(CAPTURES / "dns_fragmented.pcap", tmp_path)


@pytest.mark.slow
def test_without_the_overlap_tshark_state_is_lost(tmp_path, monkeypatch):
    """The check above can fail: with no frame read before a chunk, the HTTP request
    split over TCP segments is not reassembled at the border, and the rows differ."""
    chunks_of(monkeypatch, frames=2)
    monkeypatch.setattr(packets, "OVERLAP_FRAMES", 0)
    capture = CAPTURES / "http-lines-split.pcap"
    packets.translate(capture, tmp_path / "whole.csv")
    translated(capture, tmp_path / "chunked.csv")
    assert not filecmp.cmp(tmp_path / "whole.csv", tmp_path / "chunked.csv", shallow=False)


@pytest.mark.slow
def test_flows_of_a_chunked_capture_are_the_whole_ones(tmp_path, monkeypatch):
    """main.py's path (pipeline.captures_to_flows): a capture in chunks, then its flows;
    flows that span a border are one flow, as from one tshark."""
    capture = TPLINK_CAPTURES[0]
    (tmp_path / "whole").mkdir()
    (tmp_path / "chunked").mkdir()
    [(_, whole)] = list(pipeline.captures_to_flows([capture], tmp_path / "whole", jobs=1))
    chunks_of(monkeypatch, frames=9)
    [(_, chunked)] = list(pipeline.captures_to_flows([capture], tmp_path / "chunked", jobs=1))
    assert len(packets.plan_chunks(capture, 1)) > 3 and chunked.flows.flows == whole.flows.flows
    for name in (whole.packets_csv.name, whole.flows_csv.name):
        assert filecmp.cmp(tmp_path / "whole" / name, tmp_path / "chunked" / name, shallow=False)


def test_a_damaged_capture_is_read_whole(tmp_path, monkeypatch):
    """capinfos finds the file cut short: one tshark reads what it can and warns, as
    without chunks."""
    chunks_of(monkeypatch, frames=7)
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(TPLINK_CAPTURES[0].read_bytes()[:-30])
    assert packets.plan_chunks(damaged, 2) is None
    [(_, result)] = list(packets.run_translations([(damaged, tmp_path / "o.csv", None, None)]))
    assert result.packets > 0 and any("cut short" in w for w in result.warnings)


def test_compressed_and_small_captures_are_read_whole(tmp_path):
    compressed = tmp_path / "c.pcap.gz"
    subprocess.run(
        ["gzip", "-c", str(TPLINK_CAPTURES[0])], stdout=compressed.open("wb"), check=True
    )
    assert packets.plan_chunks(compressed, 2) is None
    assert packets.plan_chunks(TPLINK_CAPTURES[0], 2) is None  # a few kilobytes


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_PCAPS.is_dir(), reason="../shared/pcaps is not beside the repo")
def test_every_shared_capture_chunked_is_the_whole_one(tmp_path, monkeypatch):
    """Every shared capture, each in three chunks (the camera's week: 24,022 packets)."""
    chunks_of(monkeypatch)
    captures = (
        sorted(
            p
            for p in SHARED_PCAPS.rglob("*")
            if p.suffix in (".pcap", ".pcapng") and "events" not in p.parts
        )
        + sorted(SHARED_PCAPS.glob("events/*/*/*.pcap"))[::5]
    )
    assert len(captures) > 60
    for capture in [c for c in captures if tshark.packet_count(c) >= 3]:  # 3 chunks of 1 or more
        folder = tmp_path / capture.name
        folder.mkdir()
        assert_same_translation(capture, folder, jobs=3)


@pytest.mark.slow
def test_the_environment_asks_for_chunks_of_n_packets(tmp_path):
    """packet-translator.py as a user runs it, with IOTSIG_CHUNK_PACKETS (a cluster's
    size): a capture of a few kilobytes in chunks of 10 packets, the same file."""
    capture = TPLINK_CAPTURES[1]
    run_script("packet-translator.py", capture, "-o", tmp_path / "whole", "-q")
    chunked = {"IOTSIG_CHUNK_PACKETS": "10"}
    run_script("packet-translator.py", capture, "-o", tmp_path / "chunked", "-q", env=chunked)
    name = f"{capture.name}.packets.csv"
    assert filecmp.cmp(tmp_path / "whole" / name, tmp_path / "chunked" / name, shallow=False)
    assert sorted(p.name for p in (tmp_path / "chunked").iterdir()) == [name]


def test_a_chunk_size_that_is_no_number_is_one_line(tmp_path):
    bad = {"IOTSIG_CHUNK_PACKETS": "lots"}
    result = run_script(
        "packet-translator.py", TPLINK_CAPTURES[0], "-o", tmp_path, check=False, env=bad
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "packet-translator.py: error: IOTSIG_CHUNK_PACKETS=lots: give a number of packets "
        "(1 or more)"
    ]


@pytest.mark.parametrize(
    "count, cores, chunks",
    [
        (150_000, 2, None),
        (250_000, 2, 2),
        (1_021_248, 2, 4),
        (700_000, 2, 4),
        (520_000, 2, 2),
        (10_020_996, 2, 40),
        (900_000, 8, 8),
        (319_140, 1, None),
        (2_000_000, 1, 8),
    ],
)
def test_a_plan_covers_every_frame_once_in_whole_rounds(count, cores, chunks, monkeypatch):
    """As many chunks as cores, in whole rounds (3 chunks on 2 cores would leave one core
    idle a third of the time) of chunks a little larger than CHUNK_PACKETS rather than one
    round more, none of more than MAX_CHUNK_PACKETS; a capture of less than twice
    MIN_CHUNK_PACKETS is read whole, and on one core one of up to a million packets."""
    monkeypatch.setattr(packets, "MIN_CHUNKED_BYTES", 0)
    monkeypatch.setattr(packets.tshark, "packet_count", lambda capture: count)
    ranges = packets.plan_chunks(TPLINK_CAPTURES[0], cores)
    if chunks is None:
        assert ranges is None
        return
    assert len(ranges) == chunks
    assert ranges[0][0] == 1 and ranges[-1][1] == count
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    assert max(last - first + 1 for first, last in ranges) <= packets.MAX_CHUNK_PACKETS


@pytest.mark.parametrize("capture", quick_only(CAPTURE_FILES, QUICK))
def test_the_flows_of_chunks_take_their_cells_which_are_the_csv_read(
    capture, tmp_path, monkeypatch
):
    """main.py builds a chunked capture's flows from the cells its chunks wrote with the
    packets CSV (csvio.CellsFile), not from the CSV parsed again: the same frame as the
    CSV read, on every test capture (odd fields, fragments, tunnels, bad bytes); the
    cells are gone after."""
    count = tshark.packet_count(capture)
    if count < 2:
        pytest.skip("a capture of one packet has no border")
    chunks_of(monkeypatch, frames=min(7, count // 2))
    handed = []
    read_cells = csvio.read_cells

    def compared(files, packets_csv, *arguments):
        frame = read_cells(files, packets_csv, *arguments)
        assert frame is not None, "the cells could not stand for the CSV"
        pd.testing.assert_frame_equal(frame, pipeline.read_packets(packets_csv))
        handed.append(packets_csv)
        return frame

    monkeypatch.setattr(csvio, "read_cells", compared)
    [(_, result)] = list(pipeline.captures_to_flows([capture], tmp_path, jobs=1))
    assert handed == [result.packets_csv]
    assert not list(tmp_path.glob(".*")), "the chunks' folder is gone"


def test_the_cells_are_gone_when_the_flows_stage_stops(tmp_path, monkeypatch):
    """Ctrl-C while the flows are built, or before: no chunk folder is left."""
    chunks_of(monkeypatch, frames=25)  # 2 chunks

    def interrupted(*arguments, **options):
        raise KeyboardInterrupt

    for stopped in (pipeline, "packets_to_flows"), (pipeline, "translated_to_flows"):
        monkeypatch.setattr(*stopped, interrupted)
        with pytest.raises(KeyboardInterrupt):
            list(pipeline.captures_to_flows([TPLINK_CAPTURES[0]], tmp_path, jobs=1))
        assert not list(tmp_path.glob(".*"))
        monkeypatch.undo()
        chunks_of(monkeypatch, frames=25)  # 2 chunks


def test_a_capture_too_big_for_flows_in_one_pass_hands_over_no_cells(tmp_path, monkeypatch):
    """Flows built in partitions read the CSV in chunks: no cells are written for them."""
    chunks_of(monkeypatch, frames=25)  # 2 chunks
    monkeypatch.setattr(flow_partitions, "ONE_PASS_PACKETS", 10)
    written = []
    monkeypatch.setattr(csvio.CellsFile, "write", lambda self, cells: written.append(cells))
    [(_, result)] = list(pipeline.captures_to_flows([TPLINK_CAPTURES[0]], tmp_path, jobs=1))
    assert result.flows.flows > 0 and not result.translation.cells and not written
    assert not list(tmp_path.glob(".*"))
