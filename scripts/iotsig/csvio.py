"""CSV reading and writing shared by every stage: whole-or-nothing files, spreadsheet-safe
text, and column checks that name what is wrong."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, OutputError
from .schema import Table

# A spreadsheet takes a cell starting with one of these for a formula (OWASP "CSV
# injection"); a leading apostrophe makes it text. Cells that already start with an
# apostrophe get one more, so reading back strips exactly one and nothing is ambiguous.
FORMULA_CHARS = frozenset("=+-@\t\r'")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on any
    exception (including Ctrl-C) it is removed, so no half-written file ever shows."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
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
    out = frame.reindex(columns=table.names).copy()
    for name in table.of_type("text"):
        if out[name].dtype == object or pd.api.types.is_string_dtype(out[name]):
            out[name] = escape_formulas(out[name])
    for name in table.of_type("bool", "int"):
        column = out[name]
        if column.dtype == bool or pd.api.types.is_float_dtype(column):
            out[name] = column.round().astype("Int64")  # 443, not 443.0
    return out


def write_table(frame: pd.DataFrame, table: Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as sink:
                sink.write(",".join(table.names) + "\n")
                write_rows(sink, to_csv_text(frame, table))
        except OSError as e:
            raise OutputError(path, f"cannot write ({e.strerror})") from None


WRITE_BATCH_ROWS = 50_000  # bounds the memory of the spelled cells


def write_rows(sink, frame: pd.DataFrame, float_format: str | None = None) -> None:
    """The frame's rows (as to_csv_text gives them) as CSV: floats as repr (shortest
    round-trip, as pandas writes them) or float_format, missing values as empty cells, a
    cell quoted when it holds a comma, a quote or a line break (RFC 4180). Each column is
    spelled once per distinct value and rows are joined in C: 2.4 times as fast as
    csv.writer, which checks every cell, and 3.5 times DataFrame.to_csv."""
    for start in range(0, len(frame), WRITE_BATCH_ROWS):
        batch = frame.iloc[start : start + WRITE_BATCH_ROWS]
        columns = [_spelled(batch[name], float_format) for name in batch.columns]
        sink.write("\n".join(map(",".join, zip(*columns))) + "\n")


def _spelled(column: pd.Series, float_format: str | None) -> list[str]:
    codes, uniques = pd.factorize(column)
    if pd.api.types.is_float_dtype(column):
        spell = (lambda x: float_format % x) if float_format else repr
    else:
        spell = _csv_cell
    words = np.array([spell(u) for u in uniques.tolist()] + [""], dtype=object)
    return words[codes].tolist()  # code -1 (missing) is the last word: an empty cell


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
    million-row files."""
    path = Path(path)
    header = _read_header(path, table)
    needed = table.names if required is None else required
    missing = [c for c in needed if c not in header]
    if missing and len(header) == 1 and header[0].count(";") >= len(needed) // 2:
        raise InputError(
            path,
            "the separator is ';', not ',' (a spreadsheet's export where the decimal mark is "
            "a comma): save it again as CSV with ',' between fields",
        )
    if missing:
        raise InputError(path, f"not a {table.name} CSV: missing column(s) {', '.join(missing)}")
    wanted = [c for c in header if columns is None or c in columns]
    numeric = [
        c
        for c in wanted
        if c in table.by_name and table.by_name[c].type in ("int", "float", "bool")
    ]
    text = [c for c in wanted if c in table.by_name and table.by_name[c].type == "text"]
    try:  # numbers parsed by the reader: many times faster than converting strings
        frame, text = _read_fast(path, wanted, numeric, text, compact)
        if frame is None:
            frame = _read(
                path,
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
        frame = _read(path, usecols=wanted, dtype=str, keep_default_na=False, na_filter=False)
        for name in wanted:
            if name in table.by_name:
                frame[name] = _convert(frame[name], table.by_name[name].type, path, name)
        return frame
    for name in numeric:
        _check_numbers(frame[name], table.by_name[name].type, path, name)
    for name in text:
        frame[name] = unescape_formulas(frame[name])
    return frame


def _read_fast(path: Path, wanted: list[str], numeric: list[str], text: list[str], compact: bool):
    """pyarrow's CSV reader, three times faster than pandas' (one thread: the stages run
    on one core each), and the text columns that hold an escaped cell (the others need no
    unescaping). (None, text) when it cannot take the file as it is (a bad number, a ragged
    row, bad UTF-8...): pandas reads it then, and says where the problem is."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    # glibc's allocator, which keeps freed memory (cli._keep_freed_memory), rather than
    # pyarrow's jemalloc: a third less system time in page faults on a million rows.
    pa.set_memory_pool(pa.system_memory_pool())
    kind = pa.dictionary(pa.int32(), pa.string()) if compact else pa.string()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.float64() if c in numeric else kind for c in wanted},
                include_columns=wanted,
                null_values=[""],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError):
        return None, text
    if not compact:  # (categories are checked once each anyway)
        text = [c for c in text if pc.any(pc.starts_with(table[c], "'")).as_py()]
    return table.to_pandas(self_destruct=True, use_threads=False), text


def _read(path: Path, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(path, f"not a readable CSV ({str(e).strip().splitlines()[-1]})") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None


def _read_header(path: Path, table: Table) -> list[str]:
    # The csv module, not pandas: read_csv(nrows=0) costs ~20 ms a file (its parser set-up)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: Excel's BOM
            header = next((row for row in csv.reader(handle) if row), None)
        if not header:
            raise pd.errors.EmptyDataError
        return header
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise InputError(path, f"empty file: not a {table.name} CSV (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(path, f"not a readable CSV ({str(e).strip().splitlines()[-1]})") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None


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


def _convert(raw: pd.Series, kind: str, path: Path, name: str) -> pd.Series:
    if kind == "text":
        return unescape_formulas(raw)
    if kind == "str":
        return raw
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
