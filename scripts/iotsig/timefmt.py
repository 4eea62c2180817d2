"""One way to write a time: ISO 8601 UTC with a Z, to the microsecond (packets, inventory)
or the millisecond (detections)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def utc_text(seconds, unit: str = "us") -> np.ndarray:
    """Epoch seconds -> '2024-08-19T09:32:19.123456Z'; NaN -> ''."""
    values = pd.to_numeric(pd.Series(np.atleast_1d(seconds)), errors="coerce").to_numpy(float)
    text = np.full(len(values), "", dtype=object)
    known = ~np.isnan(values)
    micros = np.round(values[known] * 1e6).astype("int64").astype("datetime64[us]")
    text[known] = np.char.add(np.datetime_as_string(micros, unit=unit), "Z")
    return text


def utc(seconds: float, unit: str = "ms") -> str:
    """One time, as utc_text."""
    return str(utc_text([seconds], unit)[0])
