"""Columns of tshark's text as codes into their distinct values, read and written by Arrow.

A packet field repeats a lot (a block of 11,000 frames holds a few hundred distinct
addresses, ports or protocol lists): the translator works on each column's distinct values
once and on the rows as arrays of integers. tshark's output is read into Arrow dictionary
arrays, the packets CSV is joined in Arrow from the spelled values: no Python object is
made per cell, the cost that made pandas' reading, building and writing cost 0.6-0.7x
tshark's CPU (0.2x now).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv


class Coded:
    """A text column: words[codes[i]] is row i's value (words may repeat)."""

    __slots__ = ("codes", "words")

    def __init__(self, codes: np.ndarray, words):
        self.codes = codes
        self.words = words if isinstance(words, np.ndarray) else np.array(words, dtype=object)

    @classmethod
    def constant(cls, value: str, rows: int) -> Coded:
        return cls(np.zeros(rows, np.int32), [value])

    def __len__(self) -> int:
        return len(self.codes)

    def values(self) -> np.ndarray:
        """One Python string per row (the slow paths)."""
        return self.words[self.codes]

    def map(self, function: Callable[[str], str | None]) -> Coded:
        """function applied once per distinct value (None -> '')."""
        return Coded(self.codes, [function(w) or "" for w in self.words])

    def test(self, predicate: Callable[[str], bool]) -> np.ndarray:
        """Per row: predicate(value), asked once per distinct value."""
        return np.array([bool(predicate(w)) for w in self.words], dtype=bool)[self.codes]

    def equals(self, value: str) -> np.ndarray:
        return (self.words == value)[self.codes]

    def filled(self) -> np.ndarray:
        """Per row: the value is not ''."""
        return (self.words != "")[self.codes]

    def take(self, rows) -> Coded:
        return Coded(self.codes[rows], self.words)


def coded(value, rows: int) -> Coded:
    return value if isinstance(value, Coded) else Coded.constant(value, rows)


def select(conditions: list[np.ndarray], choices: list, default) -> Coded:
    """np.select over coded columns (or constant strings)."""
    rows = len(conditions[0])
    columns = [coded(c, rows) for c in [*choices, default]]
    offsets = np.cumsum([0] + [len(c.words) for c in columns[:-1]])
    codes = np.select(
        conditions,
        [c.codes + o for c, o in zip(columns[:-1], offsets[:-1])],
        columns[-1].codes + offsets[-1],
    )
    return Coded(codes, np.concatenate([c.words for c in columns]))


def choose(condition: np.ndarray, where_true, where_false) -> Coded:
    """np.where over coded columns (or constant strings)."""
    return select([condition], [where_true], where_false)


def combine(function: Callable[[str, str], str], left: Coded, right: Coded) -> Coded:
    """function(left's value, right's value) per row, once per distinct pair."""
    width = len(right.words)
    pairs, distinct = pd.factorize(left.codes.astype(np.int64) * width + right.codes)
    words = [function(left.words[p // width], right.words[p % width]) for p in distinct]
    return Coded(pairs, words)


class Frame:
    """Columns of the same length by name: Coded text, numeric arrays (times, numbers)."""

    def __init__(self, columns: dict, rows: int):
        self.columns = columns
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, name: str):
        return self.columns[name]

    def __setitem__(self, name: str, column) -> None:
        self.columns[name] = column

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def take(self, rows: np.ndarray) -> Frame:
        """The rows at these positions (or where the mask is True)."""
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        kept = {
            name: column[rows] if isinstance(column, np.ndarray) else column.take(rows)
            for name, column in self.columns.items()
        }
        return Frame(kept, len(rows))

    @classmethod
    def concat(cls, frames: list[Frame]) -> Frame:
        """The frames' rows one after the other (they have the same columns)."""
        columns = {}
        for name, column in frames[0].columns.items():
            parts = [f[name] for f in frames]
            if isinstance(column, Coded):
                offsets = np.cumsum([0] + [len(p.words) for p in parts[:-1]])
                codes = np.concatenate([p.codes + o for p, o in zip(parts, offsets)])
                columns[name] = Coded(codes, np.concatenate([p.words for p in parts]))
            elif isinstance(column, pa.Array):
                columns[name] = pa.concat_arrays(parts)
            else:
                columns[name] = np.concatenate(parts)
        return cls(columns, sum(len(f) for f in frames))


# ---------------------------------------------------------------------------------------
# Reading tshark's fields export


def read_fields(
    stream,
    names: list[str],
    numbers: dict[str, pa.DataType],
    block_bytes: int,
    cut_lines: list | None = None,
) -> Iterator[Frame]:
    """tshark's tab-separated lines (-E quote=n: tabs and line breaks inside values are
    escaped, a line is a row) as frames of about block_bytes of text each: `numbers`
    columns as numpy arrays (an empty cell: NaN), the others Coded. Values that are not
    UTF-8 are read with U+FFFD in place of the bad bytes. A line without all the fields
    (tshark stopped in the middle of it) is skipped and appended to cut_lines."""

    def skip(row) -> str:
        if cut_lines is not None:
            cut_lines.append(row.text)
        return "skip"

    types = {n: numbers.get(n, pa.dictionary(pa.int32(), pa.binary())) for n in names}
    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(
                column_names=names, block_size=block_bytes, use_threads=False
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter="\t",
                quote_char=False,
                double_quote=False,
                escape_char=False,
                invalid_row_handler=skip,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
        raise
    for batch in reader:
        columns = {}
        for name, array in zip(names, batch.columns):
            if name in numbers:
                columns[name] = array.to_numpy(zero_copy_only=False)
            else:
                columns[name] = Coded(array.indices.to_numpy(), _words(array.dictionary))
        yield Frame(columns, batch.num_rows)


def _words(dictionary: pa.Array) -> list[str]:
    try:
        return dictionary.cast(pa.string()).to_pylist()
    except pa.ArrowInvalid:  # not UTF-8
        return [b.decode("utf-8", "replace") for b in dictionary.to_pylist()]
