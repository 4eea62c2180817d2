"""One run of bench.py windows, in a process of its own so that its peak memory is its own:
cut a packets CSV into windows spread over its time span, the way windows.cut does now
(`chunks`: read in chunks, windows.window_rows) or the way it did before (`whole`: read
whole, sorted by time, sliced), and write each window's packets CSV.

    python tests/bench/cut_windows.py chunks|whole PACKETS.csv OUTPUT_DIR WINDOWS

Prints one JSON line: rows cut, seconds, peak RSS before and after the cut (MB)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from iotsig import csvio, windows
from iotsig.schema import PACKETS

WIDTH = 210.0  # seconds: an event window with the default tolerance and duration


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    how, packets_csv, output, count = (
        sys.argv[1],
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
    )
    times = csvio.read_table(packets_csv, PACKETS, columns=["ts"])["ts"].to_numpy(float)
    starts = np.linspace(np.nanmin(times), np.nanmax(times) - WIDTH, count)
    spans = pd.DataFrame({"start": starts, "end": starts + WIDTH})
    del times
    before, start = peak_mb(), time.perf_counter()
    if how == "whole":
        table = csvio.read_table(packets_csv, PACKETS)
        table = table.sort_values("ts", kind="stable").reset_index(drop=True)
        ordered = table["ts"].to_numpy(float)
        bounds = np.searchsorted(ordered, spans[["start", "end"]].to_numpy(), side="left")
        parts = [table.iloc[first:after] for first, after in bounds]
    else:
        parts = windows.window_rows([packets_csv], spans)
    for number, part in enumerate(parts):
        csvio.write_table(part, PACKETS, output / f"window-{number:03d}.packets.csv")
    seconds = time.perf_counter() - start
    rows = sum(map(len, parts))
    print(json.dumps({"rows": rows, "seconds": seconds, "before": before, "peak": peak_mb()}))


if __name__ == "__main__":
    main()
