"""CSVs opened in a spreadsheet and saved back: every stage reads what LibreOffice and Excel
write where its meaning is plain (a ';' separator, a BOM, CRLF, quotes, 443.0, CoAP codes
made numbers) and warns, naming the file and the column, where something was lost (times
rounded to 15 digits, leading zeros, the apostrophes that keep formulas out).

The recordings: the three TP-Link captures of data/, each merged (mergecap) with frames
built here (text2pcap) and placed inside it (editcap -t): CoAP responses 4.00, 5.00 and 2.05
(a spreadsheet makes 4 and 5 of the first two) and a DNS query for the one-label name 007
(a spreadsheet makes 7 of it). The spreadsheet checks run the real LibreOffice."""

from __future__ import annotations

import csv
import re
import struct
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from iotsig import csvio, fields, inputs
from iotsig.errors import collected
from iotsig.schema import FLOWS

from conftest import PLUG_IP, TPLINK_CAPTURES, run_script
from test_packet_translator import dns_query, udp_frame, write_capture
from test_spreadsheet import SOFFICE, soffice_convert

COAP_ACK, COAP_NON = 2, 1
# (CoAP type, code byte, as the CSVs spell it): class << 5 | detail.
COAP_RESPONSES = [(COAP_ACK, 0x80, "4.00"), (COAP_NON, 0xA0, "5.00"), (COAP_NON, 0x45, "2.05")]
DIGIT_NAME = "007"  # a DNS name a spreadsheet takes for the number 7


def coap_response(kind: int, code: int, message_id: int) -> bytes:
    return struct.pack("!BBH", 0x40 | kind << 4, code, message_id)


def added_frames() -> list[bytes]:
    frames = [
        udp_frame(coap_response(k, c, 100 + i), 5683) for i, (k, c, _) in enumerate(COAP_RESPONSES)
    ]
    return frames + [udp_frame(dns_query(DIGIT_NAME.encode()), 53)]


def first_time(capture: Path) -> float:
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-c", "1", "-T", "fields", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[0])


def timed_capture(frames: list[tuple[float, bytes]], path: Path) -> Path:
    """(epoch time, Ethernet frame) pairs -> a pcap (microsecond times, link type 1)."""
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for when, frame in frames:
            seconds, micros = divmod(round(when * 1e6), 1_000_000)
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    return path


def with_added_frames(capture: Path, folder: Path) -> Path:
    """The capture with added_frames() inside it, one a second from 1.5 s after its first
    packet (tshark's time of it), merged in with mergecap."""
    start = first_time(capture)
    frames = [(start + 1.5 + n, frame) for n, frame in enumerate(added_frames())]
    added = timed_capture(frames, folder / f"{capture.stem}.added.pcap")
    merged = folder / capture.name
    subprocess.run(
        ["mergecap", "-F", "pcap", "-w", str(merged), str(capture), str(added)], check=True
    )
    return merged


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """main.py on the three merged recordings: their packets and flows CSVs and signature."""
    folder = tmp_path_factory.mktemp("resaved")
    built = folder / "captures"
    built.mkdir()
    captures = [with_added_frames(c, built) for c in TPLINK_CAPTURES]
    out = folder / "original"
    run_script("main.py", "plug", PLUG_IP, *captures, "-o", out, "--no-report", "-q")
    flows = sorted(out.glob("*.flows.csv"))
    assert len(flows) == 3
    return SimpleNamespace(
        folder=folder,
        flows=flows,
        packets=sorted(out.glob("*.packets.csv")),
        signature=out / "signature.csv",
    )


def cells(path: Path, delimiter: str = ",") -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def write_cells(path: Path, rows: list[list[str]], **options) -> Path:
    with open(path, "w", newline="", encoding=options.pop("encoding", "utf-8")) as handle:
        csv.writer(handle, **options).writerows(rows)
    return path


def as_a_spreadsheet_saves(value: str) -> str:
    """What LibreOffice's default import and CSV export make of a cell (checked against the
    real one in test_libreoffice_resave_...): a number keeps 15 significant digits, rounded
    half up on its decimal spelling, and loses its leading and trailing zeros."""
    if not re.fullmatch(r"-?[0-9.]+([eE][-+]?[0-9]+)?", value) or value.count(".") > 1:
        return value
    number = Decimal(value)
    if number == 0:
        return "0"
    digits = Decimal(1).scaleb(number.adjusted() - 14)
    return format(number.quantize(digits, ROUND_HALF_UP).normalize(), "f")


def resaved(rows: list[list[str]]) -> list[list[str]]:
    return [rows[0]] + [[as_a_spreadsheet_saves(v) for v in row] for row in rows[1:]]


def read(path: Path, table=FLOWS) -> tuple[pd.DataFrame, list[str]]:
    notes = []
    with collected(notes):
        frame = csvio.read_table(path, table)
    return frame, notes


def column_of(rows: list[list[str]], name: str) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


# --- the recordings are what the checks need --------------------------------------------------


def test_the_recordings_hold_coap_codes_and_a_digit_name(recordings):
    rows = cells(recordings.flows[0])
    codes = column_of(rows, "coap_code")
    assert sorted(c for c in codes if c) == ["2.05", "4.00", "5.00"]
    assert DIGIT_NAME in column_of(rows, "dns_qry_name")
    signature = pd.read_csv(recordings.signature, dtype=str, keep_default_na=False)
    assert set(signature["coap_code"]) >= {"4.00", "5.00", "2.05"}
    assert DIGIT_NAME in set(signature["dns_qry_name"])


# --- what is read as meant (quick: the files written here as spreadsheets write them) ----------


def test_semicolons_bom_crlf_quotes_and_443_0_read_as_the_original(recordings, tmp_path):
    rows = cells(recordings.flows[0])
    ports = {rows[0].index(c) for c in ("orig_p", "resp_p", "orig_pkts", "first_frame")}
    changed = [rows[0]] + [
        [f"{v}.0" if i in ports and v else v for i, v in enumerate(row)] for row in rows[1:]
    ]
    path = write_cells(
        tmp_path / "excel.flows.csv",
        changed,
        delimiter=";",
        quoting=csv.QUOTE_ALL,
        lineterminator="\r\n",
        encoding="utf-8-sig",
    )
    assert path.read_bytes().startswith(b'\xef\xbb\xbf"uid";"capture";')
    frame, notes = read(path)
    original, _ = read(recordings.flows[0])
    pd.testing.assert_frame_equal(frame, original)
    assert notes == [
        f"{path}: the separator is ';', not ',' (a spreadsheet's export where the decimal mark "
        "is a comma): read as such"
    ]
    assert inputs.file_kind(path) == "flows"


def test_a_comma_decimal_mark_with_semicolons(recordings, tmp_path):
    rows = cells(recordings.flows[0])
    floats = {rows[0].index(c) for c in FLOWS.of_type("float")}
    commas = [rows[0]] + [
        [v.replace(".", ",") if i in floats else v for i, v in enumerate(row)] for row in rows[1:]
    ]
    path = write_cells(tmp_path / "de.flows.csv", commas, delimiter=";")
    frame, notes = read(path)
    original, _ = read(recordings.flows[0])
    pd.testing.assert_frame_equal(frame, original)
    assert notes == [
        f"{path}: the separator is ';', not ',' (a spreadsheet's export where the decimal mark "
        "is a comma): read as such, with ',' as the decimal mark"
    ]


@pytest.mark.parametrize(
    "cell, spelled",
    [
        ("4", "4.00"),
        ("5", "5.00"),
        ("2.1", "2.10"),
        ("4.0", "4.00"),
        ("2.05", "2.05"),
        ("4.04", "4.04"),
        ("2.31", "2.31"),
        ("GET", "GET"),
        ("GET;2.05", "GET;2.05"),
        ("04.04.2026", None),  # a date a spreadsheet made of 4.04: not told back
        ("8", None),  # no CoAP class 8
        ("2.4", None),  # 2.40: no detail above 31
        ("2.32", None),
    ],
)
def test_coap_codes_made_numbers_are_spelled_back(cell, spelled):
    assert fields.coap_code_respelled(cell) == spelled


def test_coap_codes_in_a_resaved_flows_csv_read_as_written(recordings, tmp_path):
    path = write_cells(tmp_path / "saved.flows.csv", resaved(cells(recordings.flows[0])))
    assert sorted(c for c in column_of(cells(path), "coap_code") if c) == ["2.05", "4", "5"]
    frame, notes = read(path)
    assert sorted(c for c in frame["coap_code"] if c) == ["2.05", "4.00", "5.00"]
    assert (
        f"{path}: column coap_code: 2 value(s) a spreadsheet turned into numbers read back "
        "as written ('4' -> '4.00')" in notes
    )


def test_what_cannot_be_told_back_is_named_by_file_and_column(recordings, tmp_path):
    path = write_cells(tmp_path / "saved.flows.csv", resaved(cells(recordings.flows[0])))
    assert "7" in column_of(cells(path), "dns_qry_name")
    frame, notes = read(path)
    said = {re.match(rf"{re.escape(str(path))}: column (\w+):", n).group(1) for n in notes}
    assert said == {"ts", "coap_code", "dns_qry_name"}
    (ts,) = [n for n in notes if ": column ts:" in n]
    assert "times have 5 decimal(s), not the 6 (microseconds)" in ts
    (name,) = [n for n in notes if ": column dns_qry_name:" in n]
    assert "1 value(s) such as '7'" in name and "leading zero" in name


def test_a_file_not_converted_by_a_spreadsheet_gets_no_note(recordings, tmp_path):
    # The same digit-only name in a file the tools wrote: nothing was lost, nothing said.
    frame, notes = read(recordings.flows[0])
    assert notes == [] and DIGIT_NAME in set(frame["dns_qry_name"])
    rows = cells(recordings.flows[0])
    name = rows[0].index("dns_qry_name")
    for row in rows[1:]:
        if row[name] == DIGIT_NAME:
            row[name] = "7"
    path = write_cells(tmp_path / "by-hand.flows.csv", rows)
    frame, notes = read(path)
    assert notes == [] and "7" in set(frame["dns_qry_name"])


def test_apostrophes_dropped_by_a_spreadsheet_are_named_and_nothing_is_stripped(
    recordings, tmp_path
):
    # The tools write '=x and ''q; Excel saves them as =x and 'q. Read as saved, and said.
    rows = cells(recordings.flows[0])
    name = rows[0].index("http_request_uri")
    rows[1][name], rows[2][name] = "'=HYPERLINK(1)", "'''quoted"
    escaped = write_cells(tmp_path / "escaped.flows.csv", rows)
    frame, notes = read(escaped)
    assert frame["http_request_uri"][:2].tolist() == ["=HYPERLINK(1)", "''quoted"] and notes == []
    rows[1][name], rows[2][name] = "=HYPERLINK(1)", "''quoted"
    dropped = write_cells(tmp_path / "dropped.flows.csv", rows)
    frame, notes = read(dropped)
    assert frame["http_request_uri"][:2].tolist() == ["=HYPERLINK(1)", "''quoted"]
    assert len(notes) == 1 and notes[0].startswith(
        f"{dropped}: column http_request_uri: the apostrophes that keep cells like "
        "'=HYPERLINK(1)' from being formulas are gone"
    )


def test_packets_csv_times_cut_by_a_spreadsheet_are_named_by_stream_identifier(
    recordings, tmp_path
):
    rows = cells(recordings.packets[0])
    assert all(len(v.split(".")[1]) == 6 for v in column_of(rows, "ts"))
    path = write_cells(tmp_path / "saved.packets.csv", resaved(rows), delimiter=";")
    result = run_script("stream-identifier.py", path, "-o", tmp_path / "out", "-q")
    warnings = result.stderr.splitlines()
    assert f"stream-identifier.py: warning: {path}: the separator is ';', not ','" in warnings[0]
    assert any(
        w.startswith(f"stream-identifier.py: warning: {path}: column ts: times have 5 decimal(s)")
        for w in warnings
    )
    assert any(f"{path}: column coap_code: 2 value(s)" in w for w in warnings)
    assert any(f"{path}: column dns_qry_name: 1 value(s) such as '7'" in w for w in warnings)
    frame, _ = read(tmp_path / "out" / "saved.flows.csv")
    assert sorted(c for c in frame["coap_code"] if c) == ["2.05", "4.00", "5.00"]


# --- the real LibreOffice: open, save, learn again --------------------------------------------

SPREADSHEET = [
    pytest.mark.spreadsheet,
    pytest.mark.slow,
    pytest.mark.skipif(
        SOFFICE is None,
        reason="LibreOffice (soffice) is not installed: "
        "apt-get install libreoffice-calc-nogui (.ci/run does)",
    ),
]
# What a difference in the learned signature can come from: the flows column it is made of.
SIGNATURE_SOURCES = {
    "start_offset_median": "ts",
    "order": "ts",
    "pattern": "dns_qry_name",
    "dns_qry_name": "dns_qry_name",
}
EXPORTS = {  # LibreOffice's CSV export: separator, quote, UTF-8, first line (then defaults)
    "comma": "Text - txt - csv (StarCalc):44,34,76,1",
    "semicolon": "Text - txt - csv (StarCalc):59,34,76,1",
}


@pytest.fixture(scope="module")
def libreoffice(recordings):
    """The flows CSVs and the signature CSV opened in LibreOffice with its default import
    (numbers converted) and saved as CSV again, once with each separator."""
    saved = {}
    for name, export in EXPORTS.items():
        outdir = recordings.folder / f"libreoffice-{name}"
        soffice_convert(
            [*recordings.flows, recordings.signature],
            "csv",
            outdir,
            recordings.folder / "lo-profile",
            infilter=None,
            export=export,
        )
        saved[name] = outdir
    return saved


def learn(flow_files, output_dir: Path):
    result = run_script(
        "signature-extractor.py",
        *flow_files,
        "--device-name",
        "plug",
        "--device-ip",
        PLUG_IP,
        "-o",
        output_dir,
        "-q",
    )
    return pd.read_csv(output_dir / "signature.csv", dtype=str, keep_default_na=False), result


def spreadsheet_test(test):
    for mark in SPREADSHEET:
        test = mark(test)
    return test


@spreadsheet_test
@pytest.mark.parametrize("export", EXPORTS)
def test_libreoffice_resave_converts_what_the_checks_expect(recordings, libreoffice, export):
    # What LibreOffice did is what the quick tests above write by hand.
    delimiter = ";" if export == "semicolon" else ","
    for path in recordings.flows + [recordings.signature]:
        assert cells(libreoffice[export] / path.name, delimiter) == resaved(cells(path))


@spreadsheet_test
@pytest.mark.parametrize("export", EXPORTS)
def test_signature_from_libreoffice_resaved_flows_equals_or_each_difference_is_warned(
    recordings, libreoffice, export, tmp_path
):
    original, _ = learn(recordings.flows, tmp_path / "original")
    saved_flows = [libreoffice[export] / p.name for p in recordings.flows]
    again, result = learn(saved_flows, tmp_path / "again")
    assert len(again) == len(original)
    # The CoAP codes a spreadsheet made 4 and 5 are the patterns they were.
    assert set(again["coap_code"]) == set(original["coap_code"]) >= {"4.00", "5.00", "2.05"}
    warned = set(re.findall(r"flows\.csv: column (\w+):", result.stderr))
    differ = [c for c in original.columns if not original[c].equals(again[c])]
    assert set(differ) <= set(SIGNATURE_SOURCES), differ
    assert {SIGNATURE_SOURCES[c] for c in differ} <= warned, (differ, result.stderr)
    # Every file's losses are said, each naming the file.
    for path in saved_flows:
        for column in ("ts", "dns_qry_name"):
            assert f"{path}: column {column}:" in result.stderr
    if export == "semicolon":
        assert result.stderr.count("the separator is ';'") == len(saved_flows)


@spreadsheet_test
def test_libreoffice_import_with_every_column_as_text_saves_the_file_unchanged(
    recordings, tmp_path
):
    # The README's way to open a CSV without conversion: column type Text for every column.
    files = [recordings.flows[0], recordings.packets[0], recordings.signature]
    for path in files:
        width = len(cells(path)[0])
        formats = "/".join(f"{n}/2" for n in range(1, width + 1))
        soffice_convert(
            [path],
            "csv",
            tmp_path / path.name,
            tmp_path / "lo-profile",
            infilter=f"Text - txt - csv (StarCalc):44,34,76,1,{formats}",
        )
        saved = tmp_path / path.name / path.name
        assert saved.read_bytes() == path.read_bytes()


# --- the other stages that read CSVs ------------------------------------------------------------


def resave_all(paths: list[Path], folder: Path, delimiter: str = ",") -> list[Path]:
    folder.mkdir(exist_ok=True)
    return [write_cells(folder / p.name, resaved(cells(p)), delimiter=delimiter) for p in paths]


def test_event_detector_on_a_resaved_signature_and_flows(recordings, tmp_path):
    original = run_script(
        "event-detector.py", recordings.signature, *recordings.flows, "-o", tmp_path / "a", "-q"
    )
    assert original.stderr == ""
    saved = resave_all([recordings.signature, *recordings.flows], tmp_path / "saved", ";")
    again = run_script("event-detector.py", *saved, "-o", tmp_path / "b", "-q")
    found = [pd.read_csv(d / "detections.csv", dtype=str) for d in (tmp_path / "a", tmp_path / "b")]
    assert len(found[0]) == 3  # the event in each recording
    # The same detections; their times come from the flows' ts, rounded to 10 us and said.
    times = ["start", "end", "start_utc", "signature"]  # (signature: its path)
    pd.testing.assert_frame_equal(found[0].drop(columns=times), found[1].drop(columns=times))
    delta = found[0][["start", "end"]].astype(float) - found[1][["start", "end"]].astype(float)
    assert (delta.abs() <= 5e-6 + 1e-9).all().all()
    warnings = again.stderr
    for path in saved:
        assert f"{path}: the separator is ';'" in warnings
    for path in saved[1:]:
        assert f"{path}: column ts: times have 5 decimal(s)" in warnings
    assert f"{saved[0]}: column coap_code: 2 value(s)" in warnings
    assert f"{saved[0]}: column dns_qry_name: 1 value(s) such as '7'" in warnings


@pytest.mark.slow  # the report's pictures, twice
def test_traffic_report_on_resaved_packets_and_flows(recordings, tmp_path):
    inputs = [recordings.packets[0], recordings.flows[0]]
    run_script("traffic-report.py", *inputs, "--device-ip", PLUG_IP, "-o", tmp_path / "a", "-q")
    saved = resave_all(inputs, tmp_path / "saved", ";")
    again = run_script(
        "traffic-report.py", *saved, "--device-ip", PLUG_IP, "-o", tmp_path / "b", "-q"
    )
    for path in saved:
        assert f"{path}: the separator is ';'" in again.stderr
        assert f"{path}: column ts: times have 5 decimal(s)" in again.stderr
    inventory = [
        pd.read_csv(d / "inventory.csv", dtype=str) for d in (tmp_path / "a", tmp_path / "b")
    ]
    times = ["first_ts", "last_ts", "first_time_utc", "last_time_utc"]
    pd.testing.assert_frame_equal(
        inventory[0].drop(columns=times), inventory[1].drop(columns=times)
    )


def test_a_windows_code_page_is_one_line_naming_the_line_and_the_fix(recordings, tmp_path):
    # Excel's "CSV (Comma delimited)": Windows-1252, which cannot be told from another code
    # page by its bytes: refused, saying where and how to save it instead.
    rows = cells(recordings.flows[0])
    vendor = rows[0].index("resp_vendor")
    rows[2][vendor] = "Électronique S.A."
    path = write_cells(tmp_path / "ansi.flows.csv", rows, encoding="cp1252", lineterminator="\r\n")
    problem = (
        f"{path}: not UTF-8 text (line 3, byte 0xc9): a spreadsheet saved it in a Windows code "
        "page (Excel's 'CSV (Comma delimited)'); save it again as 'CSV UTF-8' (Excel) or with "
        "the character set Unicode (UTF-8) (LibreOffice)"
    )
    for script, options in (
        ("signature-extractor.py", ("--device-name", "plug", "--device-ip", PLUG_IP)),
        ("traffic-report.py", ()),
    ):
        result = run_script(script, path, *options, "-o", tmp_path / script, check=False)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [f"{script}: error: {problem}"]


def test_a_coap_code_without_a_method_name_is_spelled_class_detail(tmp_path):
    # Codes 0.08-0.31 have no method name: they stopped the translator (an internal error);
    # spelled as the registry writes codes, they also read back from a spreadsheet's copy.
    frame = udp_frame(coap_response(0, 8, 7), 5683)  # CON, code 0.08
    capture = write_capture([frame], tmp_path / "coap-008.pcap")
    run_script("packet-translator.py", capture, "-o", tmp_path, "-q")
    path = tmp_path / "coap-008.pcap.packets.csv"
    assert column_of(cells(path), "coap_code") == ["0.08"]
    assert fields.coap_code_respelled("0.08") == "0.08"
