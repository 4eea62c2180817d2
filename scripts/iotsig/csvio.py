"""CSV reading and writing shared by every stage: whole-or-nothing files, spreadsheet-safe
text, and column checks that name what is wrong."""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import csv
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import fields
from .coded import Coded, Frame
from .errors import InputError, OutputError, warn
from .schema import Table

# A spreadsheet takes a cell starting with one of these for a formula (OWASP "CSV
# injection"); a leading apostrophe makes it text. Cells that already start with an
# apostrophe get one more, so reading back strips exactly one and nothing is ambiguous.
FORMULA_CHARS = frozenset("=+-@\t\r'")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
# Set by parallel.py for a task on a Dask cluster: called before atomic_path makes a
# temporary file (a cancelled task stops there), it returns a tag for the file's name, by
# which the command finds the files of a worker that died.
temporary_tag: contextvars.ContextVar = contextvars.ContextVar("temporary_tag", default=None)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on any
    exception (including Ctrl-C) it is removed, so no half-written file ever shows."""
    path = Path(path)
    tag = temporary_tag.get()
    prefix = f".{path.name}.{tag()}." if tag else f".{path.name}."
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=path.parent)
    except OSError as e:
        raise OutputError(path.parent, f"cannot write here ({e.strerror})") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        try:
            Path(tmp).write_text(text, encoding="utf-8")
        except OSError as e:
            raise OutputError(path, f"cannot write ({e.strerror})") from None


def escape_formulas(series: pd.Series) -> pd.Series:
    # Checked once per distinct value: packet fields repeat a lot, and str ops are slow.
    if isinstance(series.dtype, pd.CategoricalDtype):  # (a compact read's rows, written)
        series = series.astype(object)
    codes, uniques = pd.factorize(series, sort=False)
    risky = np.array([isinstance(u, str) and u[:1] in FORMULA_CHARS for u in uniques] + [False])
    if not risky.any():
        return series
    escaped = np.array(["'" + u if r else u for u, r in zip(uniques, risky)] + [""], dtype=object)
    return series.where(~risky[codes], escaped[codes])


def unescape_formulas(series: pd.Series) -> pd.Series:
    """Undo escape_formulas: strip one leading apostrophe (checked once per distinct value)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = series.cat.categories
        if not categories.str.startswith("'").any():
            return series
        return series.cat.rename_categories(categories.str.replace(r"^'", "", regex=True))
    codes, uniques = pd.factorize(series, sort=False)
    escaped = np.array([isinstance(u, str) and u.startswith("'") for u in uniques] + [False])
    if not escaped.any():
        return series
    return series.where(~escaped[codes], series.str.slice(1))


def to_csv_text(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """The frame as it goes on disk: schema column order, text escaped, bools as 1/0."""
    out = frame.reindex(columns=table.names)  # a new frame: the caller's is not changed
    for name in table.of_type("text"):
        if out[name].dtype == object or pd.api.types.is_string_dtype(out[name]):
            out[name] = escape_formulas(out[name])
    for name in table.of_type("bool", "int"):
        column = out[name]
        if column.dtype == bool or pd.api.types.is_float_dtype(column):
            out[name] = column.round().astype("Int64")  # 443, not 443.0
    return out


# Times always to the microsecond: a time with fewer decimals is one a spreadsheet cut (the
# re-saved check), never one that happened to end in a zero.
TIME_FORMAT = "%.6f"


def write_table(frame: pd.DataFrame, table: Table, path: Path) -> None:
    write_table_pieces([frame], table, path)


def write_table_pieces(pieces: Iterable[pd.DataFrame], table: Table, path: Path) -> None:
    """write_table for a table given as consecutive pieces, each written as it comes (a
    table too big to hold at once): the same bytes as the whole table's."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as sink:
                write_header(sink, table)
                for frame in pieces:
                    append_rows(sink, frame, table)
        except OSError as e:
            raise OutputError(path, f"cannot write ({e.strerror})") from None


def write_header(sink, table: Table) -> None:
    sink.write((",".join(table.names) + "\n").encode())


def append_rows(sink, frame: pd.DataFrame, table: Table) -> None:
    """The frame's rows, as write_table writes them, to a binary sink (after write_header:
    a live watch's detections.csv grows a row at a time)."""
    if not len(frame):  # (most of a long capture's windows: no column work for no rows)
        return
    formats = {c.name: TIME_FORMAT for c in table.columns if c.spelling == "epoch"}
    write_rows(sink, to_csv_text(frame, table), formats=formats)


@contextlib.contextmanager
def temporary_folder(path: Path):
    """A hidden folder beside `path` for a command's intermediate files, named as
    atomic_path names its temporary files (.NAME.*.part); removed with all it holds
    however the block ends (Ctrl-C included)."""
    path = Path(path)
    tag = temporary_tag.get()
    prefix = f".{path.name}.{tag()}." if tag else f".{path.name}."
    try:
        folder = tempfile.mkdtemp(prefix=prefix, suffix=".part", dir=path.parent)
    except OSError as e:
        raise OutputError(path.parent, f"cannot write here ({e.strerror})") from None
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


WRITE_BATCH_ROWS = 50_000  # bounds the memory of the spelled cells


def write_rows(
    sink, frame: pd.DataFrame, float_format: str | None = None, formats: dict | None = None
) -> None:
    """The frame's rows (as to_csv_text gives them) as CSV to a binary sink: floats as repr
    (shortest round-trip, as pandas writes them) or float_format (formats: per column),
    missing values as empty cells, a cell quoted when it holds a comma, a quote or a line
    break (RFC 4180). Each column is spelled once per distinct value and the rows are
    joined by Arrow (_write_joined)."""
    for start in range(0, len(frame), WRITE_BATCH_ROWS):
        batch = frame.iloc[start : start + WRITE_BATCH_ROWS]
        pieces = [
            _spelled(batch[name], (formats or {}).get(name, float_format)) for name in batch.columns
        ]
        _write_joined(sink, pieces)


def _spelled(column: pd.Series, float_format: str | None) -> Coded:
    codes, uniques = pd.factorize(column)
    if pd.api.types.is_float_dtype(column):
        spell = (lambda x: float_format % x) if float_format else repr
    else:
        spell = _csv_cell
    words = [spell(u) for u in uniques.tolist()] + [""]  # code -1 (missing): an empty cell
    return Coded(np.where(codes < 0, len(uniques), codes), words)


def frame_cells(frame: Frame, table: Table) -> dict:
    """Each column of `table` in a coded.Frame as the text of its cells before quoting
    (what a CSV reader gives back): Coded words or Arrow arrays of text. write_cells writes
    the bytes write_rows writes for the same values (text escaped against formulas, epoch
    times with microseconds, '' for NaN, integer arrays as integers)."""
    epochs = {c.name for c in table.columns if c.spelling == "epoch"}
    texts = set(table.of_type("text"))
    cells = {}
    for name in table.names:
        column = frame[name]
        if isinstance(column, Coded):
            words = pd.Series(column.words, dtype=object)
            if name in texts:
                words = escape_formulas(words)
            cells[name] = Coded(column.codes, words.to_numpy())
        elif name in epochs:
            cells[name] = _epoch_text(column)
        elif isinstance(column, pa.Array):
            cells[name] = column
        else:
            cells[name] = pc.cast(pa.array(column), pa.string())
    return cells


def write_cells(sink, cells: dict) -> None:
    """frame_cells' rows as CSV lines, quoted where RFC 4180 needs it, to a binary sink."""
    if not len(next(iter(cells.values()))):
        return
    quoted = [
        Coded(c.codes, [_csv_cell(w) for w in c.words]) if isinstance(c, Coded) else c
        for c in cells.values()
    ]
    _write_joined(sink, quoted)


def _write_joined(sink, pieces: list) -> None:
    """Rows of cells given column by column, as Coded of spelled words or Arrow arrays of
    text, joined by Arrow into CSV lines written to a binary sink."""
    words = [list(p.words) if isinstance(p, Coded) else None for p in pieces]
    kept = []
    for index, spelled in enumerate(words):
        if spelled is not None and not any(spelled) and kept and words[kept[-1]] is not None:
            # Empty in every row (most application fields): its comma rides on the column
            # before, which costs no join.
            words[kept[-1]] = [w + "," for w in words[kept[-1]]]
            continue
        kept.append(index)
    last = kept[-1]
    if words[last] is not None:
        words[last] = [w + "\n" for w in words[last]]
    cells = [
        pa.array(words[k], pa.string()).take(pa.array(pieces[k].codes))
        if words[k] is not None
        else pieces[k]
        for k in kept
    ]
    lines = pc.binary_join_element_wise(*cells, ",") if len(cells) > 1 else cells[0]
    if words[last] is None:
        lines = pc.binary_join_element_wise(lines, "\n", "")
    offsets = np.frombuffer(lines.buffers()[1], np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    sink.write(memoryview(lines.buffers()[2])[start:end])


# Times whose microseconds a double holds exactly enough for integer arithmetic to spell
# them as TIME_FORMAT spells the rounded double (2**33 s: the year 2242).
EXACT_SECONDS = 2.0**33


def _epoch_text(seconds: np.ndarray) -> pa.Array:
    """TIME_FORMAT of each time rounded to the microsecond ('' for NaN): integer arithmetic
    on the microseconds for the usual times, Python's formatting for the rest."""
    with np.errstate(invalid="ignore"):
        usual = (seconds >= 0) & (seconds < EXACT_SECONDS)  # -0.0 too: '0.000000'
    micros = np.rint(np.where(usual, seconds, 0) * 1e6).astype(np.int64)
    whole = pc.cast(pa.array(micros // 1_000_000), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(micros % 1_000_000), pa.string()), 6, "0")
    text = pc.binary_join_element_wise(whole, fraction, ".")
    if usual.all():
        return text
    spelled = np.array(text.to_pylist(), dtype=object)
    odd = np.flatnonzero(~usual)
    rounded = np.round(seconds[odd], 6)
    spelled[odd] = ["" if np.isnan(s) else TIME_FORMAT % s for s in rounded]
    return pa.array(spelled, pa.string())


_NEEDS_QUOTES = re.compile('[,"\r\n]').search


def _csv_cell(value) -> str:
    text = value if isinstance(value, str) else str(value)
    if _NEEDS_QUOTES(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def read_table(
    path: Path | str,
    table: Table,
    required: list[str] | None = None,
    columns: list[str] | None = None,
    compact: bool = False,
) -> pd.DataFrame:
    """Read a CSV of `table`: text stays text (no NaN), numbers are checked and converted,
    and a missing column or an unparsable value is an InputError naming it.
    columns: read only these (default all). compact: strings as categories, for
    million-row files. A copy saved back by a spreadsheet is read where its meaning is
    plain (see _Resaved); what it changed is said in warnings (errors.IotsigWarning)."""
    path = Path(path)
    wanted, numeric, text, resaved = _plan(path, table, required, columns)
    separator = resaved.separator
    try:  # numbers parsed by the reader: many times faster than converting strings
        frame, text = _read_fast(path, wanted, numeric, text, compact, resaved)
        if frame is None:
            frame = _read(
                path,
                sep=separator,
                decimal=resaved.decimal,
                usecols=wanted,
                keep_default_na=False,
                memory_map=True,
                na_values={c: [""] for c in numeric},
                dtype={
                    c: ("float64" if c in numeric else "category" if compact else str)
                    for c in wanted
                },
            )
    except ValueError:  # an unparsable number: read again as text to say where
        frame = _read(
            path, sep=separator, usecols=wanted, dtype=str, keep_default_na=False, na_filter=False
        )
        for name in wanted:
            if name in table.by_name:
                raw = frame[name]
                if resaved.decimal == "," and table.by_name[name].type in ("int", "float"):
                    raw = raw.str.replace(",", ".", regex=False)
                frame[name] = _convert(raw, table.by_name[name].type, path, name, resaved)
        _say_notes(resaved)
        return frame
    _checked(frame, path, table, numeric, text, resaved)
    _say_notes(resaved)
    return frame


def _row_blocks(path: Path, size: int) -> Iterator[tuple[list[str], bytes]]:
    """The CSV's column names, and its rows in blocks of about `size` bytes, each cut after
    a whole row. Read here rather than by pyarrow's streaming reader, which reads ahead
    as far as it can: on a big file its memory grows with the file. A line end is a row's
    end where the quotes before it are even in number (RFC 4180 doubles a quote in a
    quoted cell; a line break inside one is in an odd number of quotes)."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode("utf-8").strip()
            if not header or header.startswith("\ufeff"):
                raise NeedsWholeFile(path)  # (read_table's header rules)
            names, _ = split_header(header)
            carried = b""  # the rows cut by the end of the previous block
            while block := handle.read(size):
                block = carried + block  # (starts with a row)
                cut = block.rfind(b"\n")
                quoted = block.find(b'"') >= 0  # (find is many times faster than count)
                while quoted and cut >= 0 and block.count(b'"', 0, cut) % 2:
                    cut = block.rfind(b"\n", 0, cut)
                carried = block[cut + 1 :]
                if cut >= 0:
                    yield names, block[: cut + 1]
            if carried.strip():
                yield names, carried
    except (OSError, UnicodeDecodeError):
        raise NeedsWholeFile(path) from None


def _plan(path: Path, table: Table, required: list[str] | None, columns: list[str] | None):
    """The columns to read (the required ones named when missing), which of them are
    numbers and text, and what a spreadsheet did to the file (_Resaved)."""
    header, separator = _read_header(path, table)
    needed = table.names if required is None else required
    missing = [c for c in needed if c not in header]
    if missing:
        raise InputError(path, f"not a {table.name} CSV: missing column(s) {', '.join(missing)}")
    wanted = [c for c in header if columns is None or c in columns]
    numeric, text = _kinds(table, wanted)
    return wanted, numeric, text, _Resaved.sample(path, table, separator, wanted)


def _kinds(table: Table, names: list[str]) -> tuple[list[str], list[str]]:
    """Which of these columns are read as numbers, and which are text."""
    numeric = [c for c in names if _kind(table, c) in ("int", "float", "bool")]
    return numeric, [c for c in names if _kind(table, c) == "text"]


def _checked(
    frame: pd.DataFrame,
    path: Path,
    table: Table,
    numeric: list[str],
    text: list[str],
    resaved: _Resaved,
) -> None:
    """The frame's numbers checked, the tools' escaping undone and a spreadsheet's
    spellings told back, in place."""
    for name in numeric:
        _check_numbers(frame[name], table.by_name[name].type, path, name)
    for name in text:
        if resaved.keeps_apostrophes(frame[name], name):
            frame[name] = unescape_formulas(frame[name])
    for name in resaved.to_respell(list(frame.columns)):
        frame[name] = resaved.respelled(frame[name], name)


class NeedsWholeFile(Exception):
    """read_table_chunks cannot give the file in chunks exactly as read_table reads it
    whole: a spreadsheet's copy (what it changed is judged on the whole column), a cell
    pyarrow cannot read, a bad number. The caller reads it with read_table, which reads
    what it can and names the problem. (A spreadsheet holds at most 1,048,576 rows, so a
    copy saved by one is never too big to read whole.)"""


CHUNK_BYTES = 16 << 20  # of CSV text per chunk: ~65,000 packet rows


def read_table_chunks(
    path: Path | str,
    table: Table,
    required: list[str] | None = None,
    columns: list[str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[pd.DataFrame]:
    """read_table(compact=True) in consecutive chunks of rows (their index counts on from
    the previous chunk's), for files too big to hold at once. Raises NeedsWholeFile, before
    or between chunks, where the file must be read whole."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    wanted, numeric, text, resaved = _plan(path, table, required, columns)
    if resaved.separator != "," or resaved.converted or resaved.notes:
        raise NeedsWholeFile(path)
    kind = pa.dictionary(pa.int32(), pa.string())
    options = {
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types={c: pa.float64() if c in numeric else kind for c in wanted},
            include_columns=wanted,
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }
    first_row = 0
    for header, block in _row_blocks(path, chunk_bytes):
        try:
            frame = pacsv.read_csv(
                pa.py_buffer(block),
                read_options=pacsv.ReadOptions(use_threads=False, column_names=header),
                **options,
            ).to_pandas(self_destruct=True, use_threads=False)
        except (pa.ArrowException, OSError):
            raise NeedsWholeFile(path) from None
        del block
        frame.index = pd.RangeIndex(first_row, first_row + len(frame))
        try:
            _checked(frame, path, table, numeric, text, resaved)
        except InputError:
            raise NeedsWholeFile(path) from None
        if resaved.notes:  # a column-wide judgement made on one chunk only
            raise NeedsWholeFile(path)
        first_row += len(frame)
        yield frame


# ---------------------------------------------------------------------------------------
# A CSV's cells handed to the next stage already read

TEXT_CODES = pa.dictionary(pa.int32(), pa.string())  # text as the compact reader reads it


class CellsFile:
    """Some columns of a CSV being written, as read_table(compact=True) reads them back
    (numbers parsed by the same Arrow parser, text as dictionaries in the order values first
    appear), in an Arrow IPC stream: the next stage takes them (read_cells) instead of
    parsing the CSV again, a second for a million packets. A cell that reader would not
    take as it is (a number it cannot parse) makes the file unusable: nothing more is
    written and the CSV is read."""

    def __init__(self, path: Path, table: Table, columns: list[str]):
        self.names = [c for c in table.names if c in columns]
        self.numeric = set(_kinds(table, self.names)[0])
        self.schema = pa.schema(
            [(n, pa.float64() if n in self.numeric else TEXT_CODES) for n in self.names]
        )
        self.writer = pa.ipc.new_stream(str(path), self.schema)
        self.usable = True

    def write(self, cells: dict) -> None:
        """frame_cells' rows (the cells of every column of the CSV)."""
        if not self.usable:
            return
        try:
            columns = [_as_read(cells[n], n in self.numeric) for n in self.names]
        except pa.ArrowInvalid:  # (the CSV reader names the cell)
            self.usable = False
            return
        self.writer.write_batch(pa.record_batch(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def _as_read(cells, numeric: bool) -> pa.Array:
    """Cells (Coded words or Arrow text) as the compact reader reads their column."""
    if isinstance(cells, Coded):
        words = pa.array(cells.words, pa.string())
        if numeric:  # (each distinct number parsed once)
            return _numbers(words).take(pa.array(cells.codes))
        distinct = pc.dictionary_encode(words)  # (words may repeat)
        codes = distinct.indices.to_numpy()[cells.codes]
        seen = pc.dictionary_encode(pa.array(codes))  # in the order they first appear
        return pa.DictionaryArray.from_arrays(
            seen.indices, distinct.dictionary.take(seen.dictionary)
        )
    cells = cells.cast(pa.string())
    return _numbers(cells) if numeric else pc.dictionary_encode(cells)


def _numbers(text: pa.Array) -> pa.Array:
    """Text parsed as the CSV reader parses numbers ('' is missing). Its parser, but without
    the spaces around a number the reader skips: such a cell raises, and the CSV is read."""
    return pc.cast(pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text), pa.float64())


def as_read(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """A typed table (or any frame of the table's columns) as the library reads CSVs:
    numbers as float64 (NaN for empty), text as it is."""
    out = frame.copy()
    for name in table.of_type("int", "bool", "float"):
        if name in out:
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    return out


def cells_frame(cells: dict, table: Table, columns: list[str]) -> pd.DataFrame:
    """frame_cells' rows as read_table(compact=True) reads back the file written from
    them (the `columns` among them), with no file: what a live watch builds flows from."""
    names = [c for c in table.names if c in columns and c in cells]
    numeric, text = _kinds(table, names)
    frame = pa.table({n: _as_read(cells[n], n in numeric) for n in names}).to_pandas(
        use_threads=False
    )
    for name in text:  # (the tool's own escaping, undone as its files are read)
        frame[name] = unescape_formulas(frame[name])
    return frame


def read_cells(
    files: list[Path],
    path: Path,
    table: Table,
    rows: int,
    required: list[str] | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame | None:
    """read_table(path, table, required, columns, compact=True) from the CellsFiles written
    with it, in order: the same frame without parsing the CSV again. None when they cannot
    stand for it (missing, unusable, or not `rows` rows: the CSV has them): read the CSV."""
    import pyarrow.ipc as ipc

    wanted, numeric, text, resaved = _plan(path, table, required, columns)
    try:
        tables = []
        for file in files:
            with pa.OSFile(str(file)) as source:  # (not mapped: RSS would count it)
                tables.append(ipc.open_stream(source).read_all())
        cells = pa.concat_tables(tables).select(wanted)
    except (pa.ArrowException, OSError, KeyError, ValueError):
        return None
    if cells.num_rows != rows:
        return None
    del tables
    frame = cells.to_pandas(self_destruct=True, use_threads=False)
    _checked(frame, path, table, numeric, text, resaved)
    _say_notes(resaved)
    return frame


def _say_notes(resaved: _Resaved) -> None:
    """What read_table noticed in a file a spreadsheet saved back: a warning a line."""
    for note in resaved.notes:
        warn(note)


SAMPLE_ROWS = 100  # a spreadsheet converts every row alike: the first rows show what it did
_SIGNIFICANT_DIGITS = 15  # what LibreOffice and Excel keep of a number
_TOOL_DECIMALS = 6  # the tools write times with microseconds
_DECIMAL_COMMA = re.compile(r"-?[0-9]+,[0-9]+")


class _Resaved:
    """What a spreadsheet did to a CSV of ours when it was opened and saved again.

    Read as meant: a ';' separator (with a ',' decimal mark where the numbers have one), a
    BOM, CRLF line ends, quoted numbers, whole numbers as 443.0, CoAP codes made numbers
    ('4.00' -> '4': told back by the field's spelling). Said, since it cannot be told back:
    times rounded to 15 significant digits, text that a spreadsheet took for a number
    ('007' -> '7'), and the apostrophes that keep formula-like text from being formulas
    dropped (Excel). The evidence that numbers were converted: a float column written
    without a decimal point (the tools write 66.0; a spreadsheet 66), or times cut to 15
    significant digits."""

    def __init__(self, path: Path, table: Table, separator: str, sample: dict[str, list[str]]):
        self.path, self.table, self.separator = path, table, separator
        self.notes: list[str] = []
        numbers = [v for c, vs in sample.items() if _kind(table, c) in ("int", "float") for v in vs]
        comma = separator == ";" and any(_DECIMAL_COMMA.fullmatch(v) for v in numbers)
        self.decimal = "," if comma else "."
        if separator == ";":
            self.notes.append(
                f"{path}: the separator is ';', not ',' (a spreadsheet's export where the "
                "decimal mark is a comma): read as such"
                + (", with ',' as the decimal mark" if comma else "")
            )
        self.converted = self._numbers_converted(sample)
        if self.converted:
            self._check_times(sample)

    @classmethod
    def sample(cls, path: Path, table: Table, separator: str, wanted: list[str]):
        """The first SAMPLE_ROWS rows' float cells (with ';', every number's), as written."""
        kinds = ("int", "float") if separator == ";" else ("float",)
        columns = {c: [] for c in wanted if _kind(table, c) in kinds}
        try:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = csv.reader(handle, delimiter=separator)
                header = next(rows, [])
                where = {c: header.index(c) for c in columns}
                for row in itertools.islice(rows, SAMPLE_ROWS):
                    for name, index in where.items():
                        if index < len(row) and row[index].strip():
                            columns[name].append(row[index].strip())
        except (UnicodeDecodeError, csv.Error, OSError):
            pass  # the reader says what is wrong with the file
        return cls(path, table, separator, columns)

    def _numbers_converted(self, sample: dict[str, list[str]]) -> bool:
        for name, values in sample.items():
            column = self.table.by_name[name]
            if column.type != "float":
                continue
            if any(v.lstrip("-").isdigit() for v in values):
                return True  # 66.0 written as 66
            # times cut short of microseconds, some at a spreadsheet's 15 digits
            if (
                column.spelling == "epoch"
                and values
                and max(map(_decimals, values)) < _TOOL_DECIMALS
                and any(_digits(v) >= _SIGNIFICANT_DIGITS for v in values)
            ):
                return True
        return False

    def _check_times(self, sample: dict[str, list[str]]) -> None:
        for name, values in sample.items():
            if self.table.by_name[name].spelling != "epoch" or not values:
                continue
            decimals = max(_decimals(v) for v in values)
            if decimals < _TOOL_DECIMALS:
                self.notes.append(
                    f"{self.path}: column {name}: times have {decimals} decimal(s), not the "
                    f"{_TOOL_DECIMALS} (microseconds) the tools write: a spreadsheet rounded "
                    f"them to {_SIGNIFICANT_DIGITS} significant digits, so times, orders and "
                    f"offsets computed from them may be off by up to {10.0**-decimals:g} s "
                    "(open the CSV with every column as text: see the README)"
                )

    def keeps_apostrophes(self, values: pd.Series, name: str) -> bool:
        """Whether the column's leading apostrophes are the tools' escaping, to strip. A
        cell that starts like a formula without one was written by something else (Excel
        drops them when it saves): then every cell is taken as it is."""
        distinct = _distinct(values)
        bare = [v for v in distinct if isinstance(v, str) and v[:1] in _FORMULA_STARTS]
        if not bare:
            return True
        if self.table.by_name[name].spelling == "numbers":
            return True  # '-66 74' or -66 74: one value either way
        self.notes.append(
            f"{self.path}: column {name}: the apostrophes that keep cells like {bare[0]!r} "
            "from being formulas are gone (a spreadsheet that drops them saved the file): "
            "cells read as they are, and opening it again may run them as formulas"
        )
        return False

    def to_respell(self, names: list[str]) -> list[str]:
        """The columns respelled() may change or say something about."""
        return [
            name
            for name in names
            if name in self.table.by_name
            and (
                self.table.by_name[name].spelling in fields.RESPELLED
                or (self.converted and self.table.by_name[name].type == "text")
            )
        ]

    def respelled(self, values: pd.Series, name: str) -> pd.Series:
        """The column with what a spreadsheet made of its values told back (per the
        column's spelling), and a note for each column where that cannot be done."""
        column = self.table.by_name[name]
        respell = fields.RESPELLED.get(column.spelling)
        if column.type == "text" and self.converted and column.spelling != "numbers":
            self._note_numbers_in_text(values, name)
        if respell is None or column.type not in ("str", "text"):
            return values
        distinct = [v for v in _distinct(values) if isinstance(v, str) and v]
        spelled = {v: respell(v) for v in distinct}
        changed = {v: s for v, s in spelled.items() if s is not None and s != v}
        unknown = [v for v, s in spelled.items() if s is None]
        if changed:
            example = next(iter(changed.items()))
            self.notes.append(
                f"{self.path}: column {name}: {len(changed)} value(s) a spreadsheet turned "
                f"into numbers read back as written ({example[0]!r} -> {example[1]!r})"
            )
        if unknown:
            self.notes.append(
                f"{self.path}: column {name}: {len(unknown)} value(s) such as {unknown[0]!r} "
                "are not in this column's spelling (a spreadsheet may have made dates or "
                "numbers of them): kept as they are"
            )
        if not changed:
            return values
        if isinstance(values.dtype, pd.CategoricalDtype):
            mapping = {v: changed.get(v, v) for v in values.cat.categories}
            return values.map(mapping).astype("category")
        return values.replace(changed)

    def _note_numbers_in_text(self, values: pd.Series, name: str) -> None:
        distinct = pd.Series(
            [v for v in _distinct(values) if isinstance(v, str) and v], dtype=object
        )
        numbers = distinct[pd.to_numeric(distinct, errors="coerce").notna()]
        if len(numbers):
            self.notes.append(
                f"{self.path}: column {name}: {len(numbers)} value(s) such as {numbers.iloc[0]!r} "
                "are numbers to a spreadsheet, which saved this file with its numbers "
                "converted: a leading zero or a trailing decimal zero they had is lost "
                "('007' -> '7') and cannot be told back (open the CSV with every column as "
                "text: see the README)"
            )


_FORMULA_STARTS = FORMULA_CHARS - {"'"}


def _kind(table: Table, name: str) -> str:
    return table.by_name[name].type if name in table.by_name else ""


def _distinct(values: pd.Series):
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.categories
    return pd.unique(values.to_numpy())


def _decimals(number: str) -> int:
    """Digits after the decimal mark as written; a number in scientific notation has lost
    them all."""
    if re.search("[eE]", number):
        return 0
    _, _, fraction = number.replace(",", ".").partition(".")
    return len(fraction)


def _digits(number: str) -> int:
    return len(re.sub("[^0-9]", "", number).lstrip("0"))


def _read_fast(
    path: Path,
    wanted: list[str],
    numeric: list[str],
    text: list[str],
    compact: bool,
    resaved: _Resaved,
):
    """pyarrow's CSV reader, three times faster than pandas' (one thread: the stages run
    on one core each), and the text columns that hold an escaped cell (the others need no
    unescaping). (None, text) when it cannot take the file as it is (a bad number, a ragged
    row, bad UTF-8...): pandas reads it then, and says where the problem is."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    kind = pa.dictionary(pa.int32(), pa.string()) if compact else pa.string()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, delimiter=resaved.separator),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.float64() if c in numeric else kind for c in wanted},
                decimal_point=resaved.decimal,
                include_columns=wanted,
                null_values=[""],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError):
        return None, text
    if not compact:  # (categories are checked once each anyway)
        text = [  # (starts_with: a tenth of a regular expression's time)
            c for c in text if any(pc.any(pc.starts_with(table[c], s)).as_py() for s in "'=-+@")
        ]
    return table.to_pandas(self_destruct=True, use_threads=False), text


def _read(path: Path, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError:
        raise InputError(path, not_utf8(path)) from None
    except pd.errors.ParserError as e:
        raise InputError(path, f"not a readable CSV ({str(e).strip().splitlines()[-1]})") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None


def _read_header(path: Path, table: Table) -> tuple[list[str], str]:
    """The column names and the separator (',', or ';' as spreadsheets write where the
    decimal mark is a comma)."""
    # The csv module, not pandas: read_csv(nrows=0) costs ~20 ms a file (its parser set-up)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: Excel's BOM
            line = next((line for line in handle if line.strip()), None)
        if line is None:
            raise pd.errors.EmptyDataError
        return split_header(line)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise InputError(path, f"empty file: not a {table.name} CSV (no header)") from None
    except UnicodeDecodeError:
        raise InputError(path, not_utf8(path)) from None
    except (pd.errors.ParserError, csv.Error) as e:
        raise InputError(path, f"not a readable CSV ({str(e).strip().splitlines()[-1]})") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None


def not_utf8(path: Path) -> str:
    """The problem with a file that is not UTF-8, where, and what to do: a spreadsheet's
    CSV in a Windows code page (which one cannot be told from the bytes)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                line += block.count(b"\n", 0, e.start)
                where = f"line {line}, byte 0x{block[e.start]:02x}"
                break
            line += block.count(b"\n")
        else:
            where = "at its end"
    return (
        f"not UTF-8 text ({where}): a spreadsheet saved it in a Windows code page (Excel's "
        "'CSV (Comma delimited)'); save it again as 'CSV UTF-8' (Excel) or with the "
        "character set Unicode (UTF-8) (LibreOffice)"
    )


def split_header(line: str) -> tuple[list[str], str]:
    """A header line's column names and its separator: ';' when the line has no comma
    between names but semicolons (our column names hold neither)."""
    header = next(csv.reader([line]), [])
    if len(header) == 1 and ";" in header[0]:
        return [c.strip() for c in next(csv.reader([line], delimiter=";"))], ";"
    return [c.strip() for c in header], ","


def _check_numbers(numbers: pd.Series, kind: str, path: Path, name: str) -> None:
    values = numbers.to_numpy()
    if kind == "int":
        bad, problem = ~np.isnan(values) & (values % 1 != 0), "not a whole number"
    elif kind == "bool":
        bad, problem = ~np.isnan(values) & ~np.isin(values, [0, 1]), "not 1/0"
    else:
        return
    if bad.any():
        _fail_on(pd.Series(bad), numbers.astype(str), path, name, problem)


def _convert(raw: pd.Series, kind: str, path: Path, name: str, resaved: _Resaved) -> pd.Series:
    if kind == "text":
        raw = unescape_formulas(raw) if resaved.keeps_apostrophes(raw, name) else raw
    if kind in ("text", "str"):
        return resaved.respelled(raw, name)
    blank = raw == ""
    if kind == "bool":
        lowered = raw.str.strip().str.lower()
        valid = lowered.isin(["1", "0", "true", "false", ""])
        _fail_on(~valid, raw, path, name, "not 1/0")
        return lowered.map({"1": 1.0, "true": 1.0, "0": 0.0, "false": 0.0, "": np.nan})
    numbers = pd.to_numeric(raw.where(~blank), errors="coerce")
    _fail_on(numbers.isna() & ~blank, raw, path, name, "not a number")
    if kind == "int":
        _fail_on(numbers.notna() & (numbers % 1 != 0), raw, path, name, "not a whole number")
        return numbers.astype("Int64")
    return numbers.astype(float)


def _fail_on(bad: pd.Series, raw: pd.Series, path: Path, name: str, problem: str) -> None:
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        line = position + 2  # header is line 1
        raise InputError(path, f"line {line}, column {name}: {raw.iloc[position]!r} is {problem}")


def empty_frame(table: Table) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in table.names})
