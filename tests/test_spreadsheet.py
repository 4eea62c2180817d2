"""Spreadsheet safety, checked in a real spreadsheet: LibreOffice Calc opens a packets CSV
whose DNS names, HTTP URIs and Host values are formulas (=, +, -, @) with commas and quotes,
from a capture whose file name holds a newline, and saves it as .xlsx and .ods. Read back,
no cell is a formula, the rows and columns are those of the CSV, and every cell holds the
CSV's text.

The import runs with formula evaluation on (the dangerous setting, also LibreOffice's
default): the same CSV with the escaping apostrophes taken out does give formulas, so the
check can fail.

What LibreOffice does with the escaping apostrophe (found by running it, 7.4): the CSV
import keeps it as a plain character of the cell, not as a hidden "text" marker, so the
cell shows '=1+1; taking off that one apostrophe gives the value that was in the packet,
as the README says. LibreOffice's CSV import takes only = for a formula; Excel also takes
+, - and @, which is why those are escaped too.

tshark's fields export writes a newline inside a DNS name as the two characters \\n, so the
real newline inside a cell comes from the capture's file name (the `capture` column)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import pytest

from iotsig.schema import PACKETS

from test_packet_translator import (
    dns_query,
    http_get,
    packets_csv,
    tcp_frame,
    translate,
    tshark_fields,
    udp_frame,
    write_capture,
)

SOFFICE = shutil.which("soffice")
pytestmark = [
    pytest.mark.spreadsheet,
    pytest.mark.slow,  # LibreOffice started twice; the escaping itself is checked in the quick
    # tier too (test_packet_translator.py: test_formula_cells_are_written_as_text, ...)
    pytest.mark.skipif(
        SOFFICE is None,
        reason="LibreOffice (soffice) is not installed: "
        "apt-get install libreoffice-calc-nogui (.ci/run does)",
    ),
]

# Tokens (LibreOffice's "CSV Filter Options"): comma, double quote, UTF-8 (76), from line 1,
# no column types, English (1033), quoted fields not forced to text, special numbers
# detected, (2 export-only tokens), spaces kept, (sheet: export only), evaluate formulas ON.
CSV_IMPORT = "Text - txt - csv (StarCalc):44,34,76,1,,1033,false,true,false,false,false,0,true"
SOFFICE_TIMEOUT = 180  # the first start makes a fresh profile

DNS_NAMES = [  # labels of one query each; the frames come in this order, then HTTP_REQUESTS
    (b'=1+1,"quoted"', b"example", b"com"),
    (b"+1+1", b'new\nline,"q"', b"com"),
    (b"@SUM(1,2)", b"com"),
    (b"-2+3", b"com"),
]
HTTP_REQUESTS = [  # (URI, Host)
    ('=HYPERLINK("http://x","y")', '=1+1,"quoted"'),
    ("+1+1", "@SUM(1,2)"),
    ('-2+3,"a",b', "-2+3"),
    ("@SUM(1,2)", '+host,"q"'),
    ("'quoted", "example.com"),  # starts with an apostrophe already: gets a second one
]
CAPTURE_NAME = '=1+1,"cap"\nname.pcap'
HOSTILE_START = ("=", "+", "-", "@", "'")
TEXT_COLUMNS = set(PACKETS.of_type("text"))
NUMBER_COLUMNS = set(PACKETS.of_type("int", "float", "bool"))
FORMATS = ("xlsx", "ods")


# --- reading the spreadsheets back --------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str = ""  # what the cell holds as text ("" for a number)
    number: float | None = None
    formula: str | None = None

    @property
    def empty(self) -> bool:
        return self == Cell()


def _trimmed(cells: list) -> list:
    """Without the empty cells (or rows) at the end."""
    while cells and (cells[-1].empty if isinstance(cells[-1], Cell) else not cells[-1]):
        cells = cells[:-1]
    return cells


def read_xlsx(path: Path) -> list[list[Cell]]:
    import openpyxl

    sheet = openpyxl.load_workbook(path, data_only=False).active  # formulas as formulas
    rows = []
    for row in sheet.iter_rows():
        cells = []
        for cell in row:
            if cell.data_type == "f" or (
                isinstance(cell.value, str) and cell.value.startswith("=")
            ):
                cells.append(Cell(formula=str(cell.value)))
            elif isinstance(cell.value, (int, float)) and not isinstance(cell.value, bool):
                cells.append(Cell(number=float(cell.value)))
            else:
                cells.append(Cell(text="" if cell.value is None else str(cell.value)))
        rows.append(_trimmed(cells))
    return _trimmed(rows)


TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"


def _ods_inline(node) -> str:
    parts = [node.text or ""]
    for child in node:
        if child.tag == f"{TEXT}s":
            parts.append(" " * int(child.get(f"{TEXT}c", "1")))
        elif child.tag == f"{TEXT}tab":
            parts.append("\t")
        elif child.tag == f"{TEXT}line-break":
            parts.append("\n")
        else:
            parts.append(_ods_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _ods_cell(element) -> Cell:
    if element.get(f"{TABLE}formula") is not None:
        return Cell(formula=element.get(f"{TABLE}formula"))
    if element.get(f"{OFFICE}value-type") in ("float", "percentage", "currency"):
        return Cell(number=float(element.get(f"{OFFICE}value")))
    # One <text:p> per line of the cell.
    return Cell(text="\n".join(_ods_inline(p) for p in element.findall(f"{TEXT}p")))


def read_ods(path: Path) -> list[list[Cell]]:
    """The first sheet of content.xml, repeated rows and cells expanded (the trailing empty
    ones dropped first: a sheet may declare a million of them)."""
    with zipfile.ZipFile(path) as archive:
        root = ElementTree.fromstring(archive.read("content.xml"))
    table = next(root.iter(f"{TABLE}table"))
    runs = []
    for row in table.iter(f"{TABLE}table-row"):
        cell_runs = [
            (_ods_cell(c), int(c.get(f"{TABLE}number-columns-repeated", "1")))
            for c in row
            if c.tag in (f"{TABLE}table-cell", f"{TABLE}covered-table-cell")
        ]
        while cell_runs and cell_runs[-1][0].empty:
            cell_runs.pop()
        cells = [cell for cell, count in cell_runs for _ in range(count)]
        runs.append((cells, int(row.get(f"{TABLE}number-rows-repeated", "1"))))
    while runs and not runs[-1][0]:
        runs.pop()
    return [list(cells) for cells, count in runs for _ in range(count)]


READERS = {"xlsx": read_xlsx, "ods": read_ods}


def formula_cells(sheet: list[list[Cell]]) -> dict[tuple[int, int], str]:
    return {
        (r, c): cell.formula
        for r, row in enumerate(sheet)
        for c, cell in enumerate(row)
        if cell.formula is not None
    }


def read_csv_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# --- one capture, one translation, one LibreOffice run per format -----------------------------


def soffice_convert(
    files: list[Path],
    fmt: str,
    outdir: Path,
    profile: Path,
    infilter: str | None = CSV_IMPORT,
    export: str | None = None,
) -> None:
    """Open the CSVs in LibreOffice as a user would (formula evaluation on) and save them
    as `fmt`. A private profile: no clash with a running LibreOffice or another test run.
    infilter None: LibreOffice's default import (what opening the file gives); export: the
    output filter's options (e.g. a CSV's separator)."""
    command = [
        SOFFICE,
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--norestore",
        *([f"--infilter={infilter}"] if infilter else []),
        "--convert-to",
        f"{fmt}:{export}" if export else fmt,
        "--outdir",
        str(outdir),
        *map(str, files),
    ]
    # HOME too: a CI user's may be missing or read-only.
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=SOFFICE_TIMEOUT,
        env={**os.environ, "HOME": str(profile.parent)},
    )
    made = [outdir / f"{f.stem}.{fmt}" for f in files]
    assert result.returncode == 0 and all(p.is_file() for p in made), (
        f"soffice --convert-to {fmt} failed ({result.returncode})\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def unescaped(rows: list[list[str]]) -> list[list[str]]:
    """The CSV as it would be without the escaping: one apostrophe off each text cell."""
    header = rows[0]
    return [header] + [
        [v[1:] if header[i] in TEXT_COLUMNS and v.startswith("'") else v for i, v in enumerate(row)]
        for row in rows[1:]
    ]


@pytest.fixture(scope="module")
def sheets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spreadsheet")
    frames = [udp_frame(dns_query(*labels), 53) for labels in DNS_NAMES]
    frames += [tcp_frame(http_get(uri.encode(), host.encode())) for uri, host in HTTP_REQUESTS]
    capture = write_capture(frames, folder / CAPTURE_NAME)
    translate(folder / "out", capture)
    # Under a plain name: the capture's (with its newline) is no name to hand to soffice.
    escaped = folder / "escaped.csv"
    shutil.copy(packets_csv(folder / "out", capture), escaped)
    rows = read_csv_cells(escaped)
    control = folder / "unescaped.csv"
    with open(control, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(unescaped(rows))
    profile = folder / "lo-profile"
    converted = {}
    for fmt in FORMATS:
        soffice_convert([escaped, control], fmt, folder / fmt, profile)
        converted[fmt] = {
            name: READERS[fmt](folder / fmt / f"{name}.{fmt}") for name in ("escaped", "unescaped")
        }
    tshark = tshark_fields(capture, "dns.qry.name", "http.request.uri", "http.host")
    return SimpleNamespace(
        folder=folder,
        capture=capture,
        rows=rows,
        header=rows[0],
        converted=converted,
        tshark=tshark,
    )


def hostile_cells(sheets) -> list[tuple[int, str, str]]:
    """(CSV row, column, the value in the packet as tshark shows it) of every value that
    starts with a formula character or an apostrophe."""
    found = []
    for index, row in sheets.tshark.iterrows():
        for column, field in (
            ("dns_qry_name", "dns.qry.name"),
            ("http_request_uri", "http.request.uri"),
            ("http_host", "http.host"),
        ):
            if row[field].startswith(HOSTILE_START):
                found.append((index + 1, column, row[field]))
    found += [(r, "capture", CAPTURE_NAME) for r in range(1, len(sheets.rows))]
    return found


# --- the checks -------------------------------------------------------------------------------


def test_the_capture_holds_the_hostile_values(sheets):
    # What the packets say, per tshark: the HTTP values exactly as sent, the DNS names with
    # the newline as tshark writes it.
    assert sheets.tshark["http.request.uri"][len(DNS_NAMES) :].tolist() == [
        uri for uri, _ in HTTP_REQUESTS
    ]
    assert sheets.tshark["http.host"][len(DNS_NAMES) :].tolist() == [
        host for _, host in HTTP_REQUESTS
    ]
    assert sheets.tshark["dns.qry.name"][: len(DNS_NAMES)].tolist() == [
        b".".join(labels).decode().replace("\n", "\\n") for labels in DNS_NAMES
    ]
    columns = [column for _, column, _ in hostile_cells(sheets)]
    assert {c: columns.count(c) for c in set(columns)} == {
        "dns_qry_name": 4,
        "http_request_uri": 5,
        "http_host": 4,
        "capture": 9,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_cell_is_a_formula(sheets, fmt):
    assert formula_cells(sheets.converted[fmt]["escaped"]) == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_rows_and_columns_as_the_csv(sheets, fmt):
    sheet = sheets.converted[fmt]["escaped"]
    width = len(PACKETS.names)
    assert sheets.header == PACKETS.names
    assert {len(row) for row in sheets.rows} == {width}
    assert len(sheets.rows) == 1 + len(DNS_NAMES) + len(HTTP_REQUESTS)
    # A newline inside a quoted cell did not start a new row.
    assert len(sheet) == len(sheets.rows)
    assert len(sheet[0]) == width and max(len(row) for row in sheet) == width
    if fmt == "xlsx":
        import openpyxl

        workbook = openpyxl.load_workbook(sheets.folder / "xlsx" / "escaped.xlsx")
        assert (workbook.active.max_row, workbook.active.max_column) == (len(sheets.rows), width)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_cell_reads_back_as_the_csv_holds_it(sheets, fmt):
    sheet = sheets.converted[fmt]["escaped"]
    differ = []
    for r, row in enumerate(sheets.rows):
        cells = sheet[r] + [Cell()] * (len(row) - len(sheet[r]))
        for column, value, cell in zip(sheets.header, row, cells):
            if cell.number is not None:
                # Numbers only where the schema has them; a spreadsheet keeps 15 digits.
                same = (
                    column in NUMBER_COLUMNS
                    and r > 0
                    and math.isclose(float(value), cell.number, rel_tol=1e-14)
                )
            else:
                same = cell.text == value
            if not same:
                differ.append((r, column, value, cell))
    assert not differ, differ[:5]


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_values_show_with_the_apostrophe_and_unescape_to_the_packet(sheets, fmt):
    # LibreOffice keeps the escaping apostrophe as a character of the cell: the cell is the
    # CSV's text, and one apostrophe off gives the packet's value.
    sheet = sheets.converted[fmt]["escaped"]
    for r, column, value in hostile_cells(sheets):
        c = sheets.header.index(column)
        written = sheets.rows[r][c]
        assert written == "'" + value, (r, column)
        cell = sheet[r][c]
        assert cell.formula is None and cell.number is None, (r, column, cell)
        assert cell.text == written, (r, column, cell.text, written)
        assert cell.text[1:] == value


@pytest.mark.parametrize("fmt", FORMATS)
def test_commas_quotes_and_newlines_stay_in_one_cell(sheets, fmt):
    sheet = sheets.converted[fmt]["escaped"]
    column = sheets.header.index
    for row in sheet[1:]:
        assert row[column("capture")].text == "'" + CAPTURE_NAME  # real newline, comma, quotes
        assert row[column("frame_number")].number is not None  # the next cell: no shift
    assert sheet[1][column("dns_qry_name")].text == "'" + '=1+1,"quoted".example.com'
    assert sheet[2][column("dns_qry_name")].text == "'" + '+1+1.new\\nline,"q".com'
    assert sheet[5][column("http_request_uri")].text == "'" + '=HYPERLINK("http://x","y")'
    assert sheet[5][column("http_host")].text == "'" + '=1+1,"quoted"'
    assert sheet[7][column("http_request_uri")].text == "'" + '-2+3,"a",b'
    assert sheet[8][column("http_host")].text == "'" + '+host,"q"'
    # The MAC vendor (a str column, never escaped) has a comma too.
    assert sheet[1][column("eth_src_vendor")].text == "Tp-Link Technologies Co.,Ltd."


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_the_escaping_libreoffice_makes_formulas(sheets, fmt):
    # The control: the same CSV with the apostrophes taken off, the same import. The check
    # of test_no_cell_is_a_formula finds formulas here, so it can fail.
    sheet = sheets.converted[fmt]["unescaped"]
    plain = unescaped(sheets.rows)
    formulas = formula_cells(sheet)
    assert formulas
    assert all(plain[r][c].startswith("=") for r, c in formulas), formulas
    hyperlink = (5, sheets.header.index("http_request_uri"))
    assert plain[hyperlink[0]][hyperlink[1]] == '=HYPERLINK("http://x","y")'
    assert hyperlink in formulas
    assert "HYPERLINK" in formulas[hyperlink]
    if fmt == "xlsx":  # a formula cell of the file, not only text starting with =
        import openpyxl

        workbook = openpyxl.load_workbook(sheets.folder / "xlsx" / "unescaped.xlsx")
        assert workbook.active.cell(hyperlink[0] + 1, hyperlink[1] + 1).data_type == "f"
