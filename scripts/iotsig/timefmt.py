"""One way to write a time: ISO 8601 UTC with a Z, to the microsecond (packets, inventory)
or the millisecond (detections)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FIRST_SECOND = -62135596800.0  # 0001-01-01T00:00:00Z
LAST_SECOND = 253402300800.0  # 10000-01-01T00:00:00Z


def utc_text(seconds, unit: str = "us") -> np.ndarray:
    """Epoch seconds -> '2024-08-19T09:32:19.123456Z'; NaN -> ''."""
    values = pd.to_numeric(pd.Series(np.atleast_1d(seconds)), errors="coerce").to_numpy(float)
    text = np.full(len(values), "", dtype=object)
    known = writable(values)
    micros = np.round(values[known] * 1e6).astype("int64").astype("datetime64[us]")
    text[known] = np.char.add(np.datetime_as_string(micros, unit=unit), "Z")
    return text


def writable(values: np.ndarray) -> np.ndarray:
    """The times ISO 8601 can say with four-digit years (0001 to 9999); the rest (a pcapng
    with a time past 9999, an infinity) get an empty cell, never 'NaTZ'."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values >= FIRST_SECOND) & (values < LAST_SECOND)


def utc(seconds: float, unit: str = "ms") -> str:
    """One time, as utc_text."""
    return str(utc_text([seconds], unit)[0])


def utc_text_arrow(seconds: np.ndarray) -> pa.Array:
    """utc_text as an Arrow array, made by Arrow for the times from 1970 to 9999 (the
    packets CSV's: no Python string per row)."""
    with np.errstate(invalid="ignore"):
        usual = (seconds >= 0) & (seconds < LAST_SECOND)
    micros = np.round(np.where(usual, seconds, 0) * 1e6).astype("int64")
    stamps = pc.cast(pa.array(micros.astype("datetime64[us]")), pa.string())
    text = pc.binary_join_element_wise(pc.replace_substring(stamps, " ", "T"), "Z", "")
    if usual.all():
        return text
    spelled = np.array(text.to_pylist(), dtype=object)
    odd = np.flatnonzero(~usual)
    spelled[odd] = utc_text(seconds[odd])
    return pa.array(spelled, pa.string())
