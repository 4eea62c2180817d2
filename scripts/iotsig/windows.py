"""Long captures with a list of event times: one recording per listed event (a window around
its time), background windows far from every listed time, and detections scored against
the list.

A window is wide enough for the listed time's uncertainty: from `tolerance` before the
listed time to its resolution (a log to the minute: the event happened within that minute)
plus `tolerance` plus the event's own `duration` after it. Flows are built over the whole
capture first (idle timeout and maximum duration as everywhere), and a window holds the
flows that start in it: a flow already open when the event came belongs to the window it
opened in. With the capture's bursts, a window also holds the bursts that start in it
inside connections opened before it (a lock's command inside its days-long link to the
cloud): those of a connection that opened in the window are its flow's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio
from .errors import ToolError
from .schema import BURSTS, FLOWS, PACKETS, SCORED_EVENTS, WINDOWS
from .timefmt import utc, utc_text

DEFAULT_TOLERANCE = 60.0  # seconds a listed time may be off
DEFAULT_DURATION = 30.0  # seconds an event's traffic lasts after it starts
BACKGROUND_SHARE = 0.25  # a pattern in this share of the background windows is background
MAX_BACKGROUND = 60  # background windows taken at most (spread evenly)
DAY = 86400.0
STATUS = {"event": "learned", "other": "baseline (another event)", "background": "background"}


@dataclass(frozen=True)
class WindowOptions:
    tolerance: float = DEFAULT_TOLERANCE
    duration: float = DEFAULT_DURATION


def event_windows(times: pd.DataFrame, options: WindowOptions) -> pd.DataFrame:
    """times (event_times.read_event_times) -> one window per listed event, in time order.
    Windows of events listed close together are cut halfway between them (the middles of
    their listed times), so that each holds its own event; events listed at the very same
    time share one window."""
    windows = times.sort_values(["time", "line"], kind="stable").reset_index(drop=True)
    middle = (windows["time"] + windows["resolution"] / 2).to_numpy(float)
    start = windows["time"].to_numpy(float) - options.tolerance
    end = (windows["time"] + windows["resolution"] + options.tolerance + options.duration).to_numpy(
        float
    )
    distinct = np.unique(middle)
    halfway = (distinct[1:] + distinct[:-1]) / 2
    position = np.searchsorted(distinct, middle)
    lower = np.concatenate([[-np.inf], halfway])[position]
    upper = np.concatenate([halfway, [np.inf]])[position]
    windows["start"] = np.maximum(start, lower)
    windows["end"] = np.minimum(end, upper)
    return windows


def background_windows(events: pd.DataFrame, first: float, last: float) -> pd.DataFrame:
    """Windows as wide as the event windows, at least one width away from every one of
    them, inside the capture (first..last) and the period the list covers (the list says
    nothing of the time before its first event and after its last)."""
    width = float((events["end"] - events["start"]).max())
    low = max(first, float(events["start"].min()) - width)
    high = min(last, float(events["end"].max()) + width)
    starts = np.arange(low, high - width, width)
    if not len(starts):
        return pd.DataFrame({"start": [], "end": []})
    # Clear: no event window within one width of the candidate, on either side.
    reach_start, reach_end = starts - width, starts + 2 * width
    begun = np.searchsorted(np.sort(events["start"].to_numpy()), reach_end, side="left")
    ended = np.searchsorted(np.sort(events["end"].to_numpy()), reach_start, side="right")
    clear = begun == ended
    starts = starts[clear]
    if len(starts) > MAX_BACKGROUND:
        starts = starts[np.linspace(0, len(starts) - 1, MAX_BACKGROUND).round().astype(int)]
    return pd.DataFrame({"start": starts, "end": starts + width})


@dataclass
class Window:
    kind: str  # "event", "other" (another listed event) or "background"
    number: int
    start: float
    end: float
    flows_csv: Path
    packets_csv: Path | None
    flows: int
    packets: int
    listed: pd.Series | None = None  # the times file's row, for an event window

    @property
    def name(self) -> str:
        return self.flows_csv.name[: -len(".flows.csv")]


def window_name(kind: str, number: int, start: float) -> str:
    stamp = utc(start, "s").replace("-", "").replace(":", "")
    return f"{kind}-{number:03d}-{stamp}"


def in_window(table: pd.DataFrame, start: float, end: float, times: np.ndarray) -> pd.DataFrame:
    lo, hi = np.searchsorted(times, [start, end], side="left")
    return table.iloc[lo:hi]


def cut(
    flow_files: list[Path],
    packet_files: list[Path] | None,
    tables: dict[str, pd.DataFrame],
    output_dir: Path,
    burst_files: list[Path] | None = None,
) -> dict[str, list[Window]]:
    """For each kind of window (event, other, background: a table of start and end, and
    for listed events their times file rows), write OUTPUT_DIR/<kind>-NNN-<start>.flows.csv
    (.bursts.csv with the bursts inside connections opened before it, when the bursts CSVs
    are given, and .packets.csv when the packets CSVs are, one of each per capture);
    flows, bursts and packets sorted by time. Every file is read a chunk at a time: memory
    holds the windows' rows, not the captures'."""
    output_dir = Path(output_dir)
    spans = pd.concat([t[["start", "end"]] for t in tables.values()], ignore_index=True)
    names = [
        window_name(kind, number, start)
        for kind, table in tables.items()
        for number, start in enumerate(table["start"], start=1)
    ]
    # One table at a time, each window's rows written and let go before the next table is
    # read: memory holds the windows' packets, not their packets, flows and bursts at once.
    flow_counts = _write_windows(flow_files, spans, FLOWS, output_dir, names, "flows")
    if burst_files:
        _write_windows(
            burst_files, spans, BURSTS, output_dir, names, "bursts",
            lambda rows, at: _inside_connections_opened_before(rows, spans["start"].iat[at]),
        )  # fmt: skip
    packet_counts = (
        _write_windows(packet_files, spans, PACKETS, output_dir, names, "packets")
        if packet_files
        else None
    )
    result, at = {}, 0
    for kind, table in tables.items():
        result[kind] = []
        for number, row in enumerate(table.itertuples(index=False), start=1):
            listed = table.iloc[number - 1] if "line" in table else None
            result[kind].append(
                Window(
                    kind,
                    number,
                    row.start,
                    row.end,
                    output_dir / f"{names[at]}.flows.csv",
                    None if packet_counts is None else output_dir / f"{names[at]}.packets.csv",
                    flow_counts[at],
                    0 if packet_counts is None else packet_counts[at],
                    listed,
                )
            )
            at += 1
    return result


def _write_windows(files, spans, table, output_dir, names, suffix, keep=None) -> list[int]:
    """Each span's rows of the files (window_rows) in OUTPUT_DIR/<name>.<suffix>.csv,
    through keep(rows, span number) where given; the rows written per window."""
    counts, found = [], window_rows(files, spans, table)
    for at in range(len(found)):
        rows, found[at] = found[at], None  # (let go once written)
        rows = keep(rows, at) if keep else rows
        csvio.write_table(rows, table, output_dir / f"{names[at]}.{suffix}.csv")
        counts.append(len(rows))
    return counts


def _inside_connections_opened_before(bursts: pd.DataFrame, start: float) -> pd.DataFrame:
    """The bursts (of a window starting at `start`) inside connections already open, less
    those of a connection the window saw open: its flow's first burst opens it, in the
    window (a flow opens with its first burst, so that burst is among them)."""
    inside = (pd.to_numeric(bursts["opens"], errors="coerce") == 0).to_numpy()
    opening = (bursts["burst"] == 1).to_numpy() & ~inside & (bursts["ts"] >= start).to_numpy()
    opened_here = bursts["flow_uid"].isin(set(bursts.loc[opening, "flow_uid"])).to_numpy()
    return bursts[inside & ~opened_here].reset_index(drop=True)


CHUNK_BYTES = csvio.CHUNK_BYTES  # CSV text read at once (tests cut it small)


def window_rows(files: list[Path], spans: pd.DataFrame, table=PACKETS) -> list[pd.DataFrame]:
    """Each span's rows (start <= ts < end) of all the CSVs of `table` (packets, flows or
    bursts), in time order (stable: file and row order among equal times): the rows, in
    the order, that sorting all the rows by time and slicing gives. The files are read
    chunk by chunk, so memory holds the windows' rows, not the captures'."""
    starts, ends = spans["start"].to_numpy(float), spans["end"].to_numpy(float)
    pieces: list[list[pd.DataFrame]] = [[] for _ in range(len(spans))]
    for path in files:
        found: list[list[pd.DataFrame]] = [[] for _ in range(len(spans))]
        try:
            for frame in csvio.read_table_chunks(path, table, chunk_bytes=CHUNK_BYTES):
                _add_in_spans(frame, starts, ends, found)
        except csvio.NeedsWholeFile:  # (a spreadsheet's copy...): what it found is dropped
            found = [[] for _ in range(len(spans))]
            _add_in_spans(csvio.read_table(path, table), starts, ends, found)
        for kept, new in zip(pieces, found):
            kept.extend(new)
    return [_in_time_order(p, table) for p in pieces]


def extent(flow_files: list[Path]) -> tuple[float, float]:
    """(first packet, last packet) over the flows CSVs, read a chunk at a time."""
    first, last = np.inf, -np.inf
    for path in flow_files:
        try:
            chunks = list(
                csvio.read_table_chunks(
                    path, FLOWS, required=["ts", "duration"], columns=["ts", "duration"]
                )
            )
        except csvio.NeedsWholeFile:
            chunks = [
                csvio.read_table(
                    path, FLOWS, required=["ts", "duration"], columns=["ts", "duration"]
                )
            ]
        for frame in chunks:
            if len(frame):
                first = min(first, float(frame["ts"].min()))
                last = max(last, float((frame["ts"] + frame["duration"].fillna(0)).max()))
    return first, last


def _add_in_spans(frame: pd.DataFrame, starts, ends, found: list[list]) -> None:
    times = frame["ts"].to_numpy(float)
    order = np.argsort(times, kind="stable")  # a missing time sorts last: in no span
    first = np.searchsorted(times[order], starts, side="left")
    after = np.searchsorted(times[order], ends, side="left")
    for span in np.flatnonzero(after > first):
        found[span].append(frame.iloc[order[first[span] : after[span]]])


def _in_time_order(pieces: list[pd.DataFrame], table=PACKETS) -> pd.DataFrame:
    if not pieces:
        return csvio.empty_frame(table)
    rows = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
    return rows.sort_values("ts", kind="stable").reset_index(drop=True)


def windows_frame(
    windows: list[Window], times_file: Path, found: dict, left_out: dict
) -> pd.DataFrame:
    """The index of the cut recordings (windows.csv): what each window is and what became
    of it. found: window name -> time the event was found at; left_out: name -> why."""
    rows = []
    for w in windows:
        listed = w.listed
        at = found.get(w.name)
        rows.append(
            {
                "window": w.name,
                "kind": w.kind,
                "times_file": str(times_file) if listed is not None else "",
                "line": int(listed["line"]) if listed is not None else None,
                "listed": listed["time_text"] if listed is not None else "",
                "listed_utc": utc(listed["time"], "s") if listed is not None else "",
                "event": listed["event"] if listed is not None else "",
                "start_utc": utc(w.start, "s"),
                "end_utc": utc(w.end, "s"),
                "flows": w.flows,
                "packets": w.packets if w.packets_csv is not None else None,
                "found_utc": utc(at) if at is not None else "",
                "offset": round(at - listed["time"], 3)
                if at is not None and listed is not None
                else None,
                "status": left_out.get(w.name, STATUS[w.kind]),
                "flows_csv": w.flows_csv.name,
                "packets_csv": w.packets_csv.name if w.packets_csv else "",
            }
        )
    return pd.DataFrame(rows, columns=WINDOWS.names)


# ---------------------------------------------------------------------------------------
# Detections scored against the list
# ---------------------------------------------------------------------------------------


@dataclass
class Score:
    event: str
    listed: int = 0
    found: int = 0
    false: int = 0
    days: float = 0.0
    silent: int = 0  # listed events without any traffic of the device in their window

    @property
    def recall(self) -> float:
        return self.found / self.listed if self.listed else float("nan")

    @property
    def false_per_day(self) -> float:
        return self.false / self.days if self.days else float("nan")

    def line(self) -> str:
        return (
            f"{self.event}: {self.found} of {self.listed} listed event(s) found "
            f"(recall {self.recall:.2f}), {self.listed - self.found} missed; {self.false} "
            f"detection(s) matched to no listed event in {self.days:.2f} day(s) of capture "
            f"({self.false_per_day:.2f} per day)"
            + (
                f"; {self.silent} more listed without any traffic of the device (not counted)"
                if self.silent
                else ""
            )
        )


def score_detections(
    detections: pd.DataFrame,
    times: pd.DataFrame,
    flows_by_capture: dict[str, pd.DataFrame],
    options: WindowOptions,
    devices: dict[str, str],
) -> tuple[pd.DataFrame, list[Score]]:
    """Match each detection (detections CSV rows, status detected) to at most one listed
    event of the same name whose window it overlaps, nearest first. devices: event name ->
    the device address of its signature. A listed event outside every capture is neither
    found nor missed; one whose window holds no flow of the device at all is counted apart
    (no traffic: nothing to detect). Returns the scored table (scored-events CSV) and one
    Score per event."""
    events = list(devices)
    spans = capture_spans(flows_by_capture)
    listed = event_windows(times, options)
    if not (listed["event"] != "").any():
        if len(events) > 1:
            raise ToolError(
                "it names no event, and there are several signatures "
                f"({', '.join(events)}): each listed time must name its event"
            )
        listed["event"] = events[0]
    inside = np.zeros(len(listed), bool)
    for span in spans.itertuples(index=False):
        inside |= ((listed["end"] >= span.first) & (listed["start"] <= span.last)).to_numpy()
    silent = ~_device_active(listed, flows_by_capture, devices)
    days = float((spans["last"] - spans["first"]).clip(lower=0).sum()) / DAY
    hits = detections[detections["status"] == "detected"].reset_index(drop=True)
    pairs = []
    for i, d in enumerate(hits.itertuples(index=False)):
        near = (
            (listed["event"] == d.event)
            & (listed["start"] <= d.end)
            & (listed["end"] >= d.start)
            & inside
        )
        for j in np.flatnonzero(near.to_numpy()):
            pairs.append((abs(d.start - listed["time"].iat[j]), i, j))
    matched_detection, matched_listed = {}, {}
    for _, i, j in sorted(pairs):
        if i not in matched_detection and j not in matched_listed:
            matched_detection[i], matched_listed[j] = j, i
    rows = []
    for j, entry in enumerate(listed.itertuples(index=False)):
        i = matched_listed.get(j)
        found = hits.iloc[i] if i is not None else None
        rows.append(
            {
                "kind": "listed",
                "line": entry.line,
                "event": entry.event,
                "device": entry.device,
                "listed": entry.time_text,
                "listed_utc": utc(entry.time, "s"),
                "status": "found"
                if found is not None
                else "outside"
                if not inside[j]
                else "no traffic"
                if silent[j]
                else "missed",
                "detection_utc": found["start_utc"] if found is not None else "",
                "offset": round(found["start"] - entry.time, 3) if found is not None else None,
                "capture": found["capture"] if found is not None else "",
                "first_frame": found["first_frame"] if found is not None else None,
            }
        )
    for i, d in enumerate(hits.itertuples(index=False)):
        if i not in matched_detection:
            rows.append(
                {
                    "kind": "detection",
                    "line": None,
                    "event": d.event,
                    "device": d.device_name,
                    "listed": "",
                    "listed_utc": "",
                    "status": "false",
                    "detection_utc": d.start_utc,
                    "offset": None,
                    "capture": d.capture,
                    "first_frame": d.first_frame,
                }
            )
    table = pd.DataFrame(rows, columns=SCORED_EVENTS.names)
    scores = []
    for event in events:
        mine = table[table["event"] == event]
        scores.append(
            Score(
                event,
                int(mine["status"].isin(["found", "missed"]).sum()),
                int((mine["status"] == "found").sum()),
                int((mine["status"] == "false").sum()),
                days,
                int((mine["status"] == "no traffic").sum()),
            )
        )
    return table, scores


def _device_active(
    listed: pd.DataFrame, flows_by_capture: dict[str, pd.DataFrame], devices: dict[str, str]
) -> np.ndarray:
    """For each listed event: does any flow of its device run during its window?"""
    active = np.zeros(len(listed), bool)
    for flows in flows_by_capture.values():
        ends = (flows["ts"] + flows["duration"].fillna(0)).to_numpy(float)
        starts = flows["ts"].to_numpy(float)
        for event, ip in devices.items():
            mine = ((flows["orig_h"] == ip) | (flows["resp_h"] == ip)).to_numpy()
            order = np.argsort(starts[mine])
            first, last = starts[mine][order], np.maximum.accumulate(ends[mine][order])
            rows = np.flatnonzero((listed["event"] == event).to_numpy())
            if not len(rows) or not len(first):
                continue
            # flows started before the window's end, the last of which ends after its start
            upto = np.searchsorted(first, listed["end"].to_numpy(float)[rows], side="right")
            reach = np.where(upto > 0, last[np.maximum(upto - 1, 0)], -np.inf)
            active[rows] |= reach >= listed["start"].to_numpy(float)[rows]
    return active


def with_extent(flows: pd.DataFrame, extent: tuple[float, float]) -> pd.DataFrame:
    """Some of a capture's flows (its devices') and a row that spans the whole capture
    (first to last packet, no address): what scoring needs of it."""
    first, last = extent
    if first > last:
        return flows
    span = pd.DataFrame({"ts": [first], "duration": [last - first], "orig_h": [""], "resp_h": [""]})
    return pd.concat([flows[["ts", "duration", "orig_h", "resp_h"]], span], ignore_index=True)


def capture_spans(flows_by_capture: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for name, flows in flows_by_capture.items():
        if len(flows):
            ends = flows["ts"] + flows["duration"].fillna(0)
            rows.append({"capture": name, "first": flows["ts"].min(), "last": ends.max()})
    return pd.DataFrame(rows, columns=["capture", "first", "last"])


def utc_span(first: float, last: float) -> str:
    return f"{utc_text([first], 's')[0]} to {utc_text([last], 's')[0]}"
