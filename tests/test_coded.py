"""The coded columns the translator works on: the same values as the pandas code they
replaced, read from tshark's text and written as csvio.write_rows writes them."""

import io

import numpy as np
import pandas as pd
import pyarrow as pa

from iotsig import csvio
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
    csvio.write_frame_rows(written, coded, PACKETS)
    assert written.getvalue() == expected.getvalue()


def test_utc_text_arrow_is_utc_text():
    times = np.array([0.0, 1.5e-7, 1.7e9 + 0.0000005, 9.9e9, 253402300799.9999994, -1.0, np.nan])
    assert utc_text_arrow(times).to_pylist() == utc_text(times).tolist()
