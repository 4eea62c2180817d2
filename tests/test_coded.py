"""The coded columns the translator works on: the same values as the pandas code they
replaced, read from tshark's text and written as csvio.write_rows writes them."""

import io

import numpy as np
import pandas as pd
import pyarrow as pa

from iotsig import csvio, flows, pipeline
from iotsig.coded import Coded, Frame, choose, combine, read_fields, select
from iotsig.schema import PACKETS
from iotsig.timefmt import utc_text, utc_text_arrow

NAMES = ["frame.number", "frame.time_epoch", "a", "b"]
NUMBERS = {"frame.number": pa.int64(), "frame.time_epoch": pa.float64()}


def coded_of(values) -> Coded:
    """A text column of Python strings as Coded."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=False)
    return Coded(codes, list(uniques))


def read(data: bytes, block_bytes: int = 1 << 20, cut_lines=None) -> list[Frame]:
    return list(read_fields(io.BytesIO(data), NAMES, NUMBERS, block_bytes, cut_lines))


def test_fields_are_read_as_text_numbers_as_numbers_and_bad_bytes_replaced():
    frames = read(b"1\t1.5\tx;y\t\n2\t\t\xff\xfe\ta,b\n")
    [frame] = frames
    assert frame["frame.number"].tolist() == [1, 2]
    times = frame["frame.time_epoch"]
    assert times[0] == 1.5 and np.isnan(times[1])
    assert frame["a"].values().tolist() == ["x;y", "\ufffd\ufffd"]
    assert frame["b"].values().tolist() == ["", "a,b"]


def test_a_line_cut_short_is_skipped_and_told():
    cut: list[str] = []
    [frame] = read(b"1\t1.0\ta\tb\n2\t2.0\ta\n3\t3.0\tc\td", cut_lines=cut)
    assert frame["frame.number"].tolist() == [1, 3]
    assert cut == ["2\t2.0\ta"]


def test_no_output_is_no_frame():
    assert read(b"") == []


def test_blocks_hold_whole_lines():
    data = b"".join(b"%d\t%d.5\tv%d\t\n" % (n, n, n % 3) for n in range(1, 1001))
    frames = read(data, block_bytes=1000)
    assert len(frames) > 10
    numbers = np.concatenate([f["frame.number"] for f in frames])
    assert numbers.tolist() == list(range(1, 1001))
    values = np.concatenate([f["a"].values() for f in frames])
    assert values.tolist() == [f"v{n % 3}" for n in range(1, 1001)]


def test_select_choose_and_combine_are_numpys_on_the_values():
    rng = np.random.default_rng(7)
    left = coded_of(rng.choice(["", "a", "b;c"], 500))
    right = coded_of(rng.choice(["", "x", "y"], 500))
    first, second = rng.random(500) < 0.3, rng.random(500) < 0.5
    expected = np.select([first, second], [left.values(), "k"], right.values())
    assert select([first, second], [left, "k"], right).values().tolist() == expected.tolist()
    expected = np.where(second, right.values(), "")
    assert choose(second, right, "").values().tolist() == expected.tolist()
    pairs = combine(lambda a, b: f"{a}+{b}", left, right).values()
    assert pairs.tolist() == [f"{a}+{b}" for a, b in zip(left.values(), right.values())]
    assert left.map(str.upper).values().tolist() == [v.upper() for v in left.values()]


def test_frames_are_written_as_write_rows_writes_the_same_rows():
    """Every kind of cell: quoted, formula-escaped text, empty, times of every range."""
    times = [
        1.7e9 + 0.1234565,
        1.7e9 + 0.9999996,
        0.0,
        -0.0,
        -1.25,
        np.nan,
        2.0**33 + 0.5,
        253402300800.5,
        1e-7,
        1.0,
    ]
    count = len(times)
    rows = {name: [""] * count for name in PACKETS.names}
    rows["capture"] = ["a,b.pcap"] * count
    rows["frame_number"] = [str(n) for n in range(1, count + 1)]
    rows["ts"] = np.round(np.array(times), 6)
    rows["time_utc"] = utc_text(np.array(times))
    rows["http_host"] = ["=cmd", 'say "hi"', "line\nbreak", "-1", "plain", "", "+", "@x", "a", "b"]
    rows["src_port"] = ["443", "", "53", "80", "", "1", "2", "3", "4", "5"]
    frame = pd.DataFrame(rows)
    expected = io.BytesIO()
    csvio.write_rows(expected, csvio.to_csv_text(frame, PACKETS), csvio.TIME_FORMAT)

    coded = Frame({name: coded_of(frame[name]) for name in PACKETS.names}, count)
    coded["frame_number"] = np.arange(1, count + 1)
    coded["ts"] = rows["ts"]
    coded["time_utc"] = utc_text_arrow(np.array(times))
    written = io.BytesIO()
    csvio.write_cells(written, csvio.frame_cells(coded, PACKETS))
    assert written.getvalue() == expected.getvalue()


def test_utc_text_arrow_is_utc_text():
    times = np.array([0.0, 1.5e-7, 1.7e9 + 0.0000005, 9.9e9, 253402300799.9999994, -1.0, np.nan])
    assert utc_text_arrow(times).to_pylist() == utc_text(times).tolist()


def packet_frame(count: int, **columns) -> Frame:
    """A coded.Frame of PACKETS' columns: empty text but for `columns` (lists of strings or
    Coded), numbered frames, times a second apart."""
    frame = Frame({name: Coded.constant("", count) for name in PACKETS.names}, count)
    frame["frame_number"] = np.arange(1, count + 1)
    frame["ts"] = 1.7e9 + np.arange(count) + 0.25
    frame["time_utc"] = utc_text_arrow(frame["ts"])
    for name, values in columns.items():
        frame[name] = values if isinstance(values, Coded) else coded_of(values)
    return frame


def write_with_cells(tmp_path, frames: list[Frame]):
    """The CSV of the frames' rows and the CellsFile written with it, as a chunk writes
    them."""
    csv, arrow = tmp_path / "p.csv", tmp_path / "p.arrow"
    cells_file = csvio.CellsFile(arrow, PACKETS, pipeline.FLOW_COLUMNS)
    with open(csv, "wb") as sink:
        sink.write((",".join(PACKETS.names) + "\n").encode())
        for frame in frames:
            cells = csvio.frame_cells(frame, PACKETS)
            csvio.write_cells(sink, cells)
            cells_file.write(cells)
    cells_file.close()
    return csv, arrow, cells_file


def read_cells(csv, arrow, rows: int):
    return csvio.read_cells([arrow], csv, PACKETS, rows, flows.REQUIRED, pipeline.FLOW_COLUMNS)


def test_cells_handed_over_are_the_csv_as_read_back(tmp_path):
    """read_cells gives read_table's frame of the CSV written with them: numbers parsed
    alike ('' missing, a leading zero, an exponent), formula escapes undone, quotes and
    line breaks kept, and categories in the order values first appear in the file (words
    not in that order, repeated or unused, values met again in the next batch)."""
    reversed_words = Coded(np.array([2, 4, 0, 1]), ["=cmd", 'say "hi"', "plain", "unused", "plain"])
    first = packet_frame(
        4,
        http_host=reversed_words,
        src_port=["443", "", "053", "1e3"],
        ip_src=["10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.3"],
        dns_qry_name=["line\nbreak", "a,b", "'quoted", "-1"],
        eth_src_vendor=["Ünïcode", "", "", "x"],
    )
    second = packet_frame(
        3,
        http_host=["new", "=cmd", "plain"],
        src_port=["80", "80", ""],
        ip_src=["10.0.0.9", "10.0.0.1", "10.0.0.2"],
        dns_qry_name=["", "@x", "line\nbreak"],
        eth_src_vendor=["", "y", "Ünïcode"],
    )
    csv, arrow, cells_file = write_with_cells(tmp_path, [first, second])
    assert cells_file.usable
    expected = pipeline.read_packets(csv)
    assert expected["http_host"].cat.categories.tolist() == [
        "plain", "=cmd", 'say "hi"', "new"
    ]  # fmt: skip
    pd.testing.assert_frame_equal(read_cells(csv, arrow, 7), expected)
    assert read_cells(csv, arrow, 8) is None  # not the CSV's rows: read it


def test_a_number_only_the_csv_reader_takes_makes_the_cells_unusable(tmp_path):
    """' 5': the CSV reader skips the spaces, Arrow's cast does not; the CSV is read."""
    frame = packet_frame(2, src_port=[" 5", "6"])
    csv, arrow, cells_file = write_with_cells(tmp_path, [frame])
    assert not cells_file.usable
    assert pipeline.read_packets(csv)["src_port"].tolist() == [5.0, 6.0]
