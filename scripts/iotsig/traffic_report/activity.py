"""The timeline's data: which flows match which signature pattern, the rows of the pattern
strip (folded beyond a readable number), and the device's bytes per time bin."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import detector
from .. import signature as sig
from .inputs import Device, Inputs, text

MATCH_COLUMNS = ["capture", "pattern", "order", "role", "start", "end"]
MAX_TIMELINE_ROWS = 30  # pattern rows in the strip: beyond, the rest share one row


# ---------------------------------------------------------------------------------------
# Signature patterns in the recordings


def match_patterns(mine: pd.DataFrame, patterns: pd.DataFrame | None) -> pd.DataFrame:
    """Which of the device's flows belong to which signature pattern: the detector's rule
    (detector.pattern_matches: fingerprint, remote party, counts and packets), so that the
    report shows the flows event-detector counts."""
    if patterns is None or patterns.empty or mine.empty:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    flows = mine.drop(columns=["side", "remote", "klass"], errors="ignore")
    for name in ("first_frame", "last_frame"):
        if name not in flows:
            flows[name] = np.nan
    for name in sig.REQUIRED:
        if name not in flows:
            flows[name] = "" if name not in detector.COUNT_METRICS else np.nan
    matched = detector.pattern_matches(flows, detector.event_signatures(patterns, "signature"))
    rows = matched["row"].to_numpy(dtype=np.int64)
    start = mine["ts"].to_numpy(dtype=float)[rows]
    duration = np.nan_to_num(pd.to_numeric(mine["duration"], errors="coerce").to_numpy()[rows])
    return pd.DataFrame(
        {
            "capture": text(mine["capture"]).to_numpy()[rows],
            "pattern": matched["pattern"].to_numpy(),
            "order": matched["order"].to_numpy(),
            "role": matched["role"].to_numpy(),
            "start": start,
            "end": start + duration,
        }
    )


def timeline_rows(
    patterns: pd.DataFrame | None, matched: pd.DataFrame, limit: int = MAX_TIMELINE_ROWS
) -> pd.DataFrame:
    """The rows of the timeline's pattern strip: event patterns in event order, then the
    others, numbered. More than `limit`: the limit - 1 with the most matched flows keep a
    row (in that order), the rest share one last row (role 'other', number '+')."""
    if patterns is None or patterns.empty:
        return pd.DataFrame(columns=["pattern", "role", "number"])
    shown = patterns[["pattern", "role", "order"]].copy()
    shown["event"] = shown["role"] == "event"
    shown = shown.sort_values(["event", "order"], ascending=[False, True])
    shown["number"] = np.arange(1, len(shown) + 1)
    shown = shown.reset_index(drop=True)
    if len(shown) <= limit:
        return shown
    flows = matched.groupby("pattern").size() if len(matched) else pd.Series(dtype=int)
    shown["flows"] = shown["pattern"].map(flows).fillna(0)
    top = shown.sort_values(["flows", "number"], ascending=[False, True]).head(limit - 1)
    kept = shown.loc[sorted(top.index)]
    rest = len(shown) - len(kept)
    other = pd.DataFrame(
        [
            {
                "pattern": f"{rest:,} other patterns, fewer flows: in this row",
                "role": "other",
                "number": "+",
            }
        ]
    )
    return pd.concat([kept[["pattern", "role", "number"]], other], ignore_index=True)


def row_of(shown: pd.DataFrame, names: pd.Series) -> np.ndarray:
    """The strip row of each pattern name (a folded one: the last row; -1: none)."""
    position = dict(zip(shown["pattern"], range(len(shown))))
    folded = len(shown) - 1 if len(shown) and shown["role"].iloc[-1] == "other" else -1
    return names.map(position).fillna(folded).to_numpy(dtype=int)


# ---------------------------------------------------------------------------------------
# Activity per time bin


def bin_width(longest: float, at_least: int = 20, at_most: int = 3000) -> float:
    """1 s when that gives at least `at_least` bars; finer for short recordings (the public
    event captures have fake 1 ms packet spacing: a whole recording lasts a fraction of a
    second), coarser for long ones (at most `at_most` bars)."""
    if longest > at_most:
        for width in (10.0, 60.0, 600.0, 3600.0):
            if longest / width <= at_most:
                return width
        return 86400.0
    for width in (1.0, 0.1, 0.01):
        if longest / width >= at_least:
            return width
    return 0.001


def recording_starts(inputs: Inputs) -> pd.Series:
    """Start of each recording (capture): its first packet, else its first flow."""
    starts = []
    if inputs.summary is not None and len(inputs.summary.groups):
        groups = inputs.summary.groups
        starts.append(groups.groupby("capture")["first_ts"].min())
    f = inputs.flows
    if f is not None and len(f):
        starts.append(f.groupby(text(f["capture"]).to_numpy())["ts"].min())
    if not starts:
        return pd.Series(dtype=float)
    return pd.concat(starts).groupby(level=0, sort=False).min()


def recording_ends(inputs: Inputs) -> pd.Series:
    """End of each recording: its last packet, or the end of its last flow if later."""
    ends = []
    if inputs.summary is not None and len(inputs.summary.groups):
        ends.append(inputs.summary.groups.groupby("capture")["last_ts"].max())
    f = inputs.flows
    if f is not None and len(f):
        end = f["ts"] + pd.to_numeric(f["duration"], errors="coerce").fillna(0)
        ends.append(end.groupby(text(f["capture"]).to_numpy()).max())
    if not ends:
        return pd.Series(dtype=float)
    return pd.concat(ends).groupby(level=0, sort=False).max()


def activity(
    inputs: Inputs,
    device: Device,
    starts: pd.Series,
    width: float,
    mine: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The device's volume and activity per time bin of each recording: columns capture,
    bin, sent and received (bytes), pkts (packets either way), flows (flows it started).
    Bytes and packets from the packets where given (read again a chunk at a time:
    packet_summary.py), else spread evenly over each flow's duration."""
    parts = []
    from_packets = set()
    if inputs.summary is not None and len(inputs.summary.groups):
        from_packets = set(inputs.summary.captures())
        chunks = [_packet_bins(p, device, starts, width) for p in inputs.summary.frames()]
        parts.extend([_added(chunks)] if chunks else [])
    if mine is not None and len(mine):
        f = mine[~text(mine["capture"]).isin(from_packets)]
        if len(f):
            parts.append(spread_flows(f, starts, width))
    if mine is not None and len(mine):
        parts.append(_flow_starts(mine, starts, width))
    if not parts:
        return pd.DataFrame(columns=ACTIVITY_COLUMNS)
    bins = pd.concat(parts, ignore_index=True).reindex(columns=ACTIVITY_COLUMNS)
    return bins.fillna(dict.fromkeys(ACTIVITY_COLUMNS[2:], 0.0))


ACTIVITY_COLUMNS = ["capture", "bin", "sent", "received", "pkts", "flows"]


def _flow_starts(mine: pd.DataFrame, starts: pd.Series, width: float) -> pd.DataFrame:
    """How many of the device's flows start in each bin."""
    capture = text(mine["capture"])
    offset = mine["ts"].to_numpy(dtype=float) - capture.map(starts).to_numpy(dtype=float)
    frame = pd.DataFrame(
        {"capture": capture.to_numpy(), "bin": np.floor(offset / width).astype(np.int64)}
    )
    return (
        frame.groupby(["capture", "bin"], as_index=False).size().rename(columns={"size": "flows"})
    )


def _added(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    """The bins of several chunks as one (a bin cut by a chunk's end is in both)."""
    whole = pd.concat(chunks, ignore_index=True)
    return whole.groupby(["capture", "bin"], as_index=False)[["sent", "received", "pkts"]].sum()


def _packet_bins(p: pd.DataFrame, device: Device, starts: pd.Series, width: float) -> pd.DataFrame:
    capture, capture_codes = _categories(p["capture"])
    sent = np.zeros(len(p), bool)
    received = np.zeros(len(p), bool)
    if device.ip:
        sent |= _equals(p["ip_src"], device.ip)
        received |= _equals(p["ip_dst"], device.ip)
    if device.mac:
        sent |= _equals(p["eth_src"], device.mac, lower=True)
        received |= _equals(p["eth_dst"], device.mac, lower=True)
    received &= ~sent
    keep = sent | received
    start = capture.map(starts).to_numpy(dtype=float)[capture_codes]
    offset = p["ts"].to_numpy(dtype=float) - start
    size = p["frame_len"].fillna(0).to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "capture": capture.to_numpy()[capture_codes[keep]],
            "bin": np.floor(offset[keep] / width).astype(np.int64),
            "sent": np.where(sent, size, 0)[keep],
            "received": np.where(received, size, 0)[keep],
            "pkts": np.ones(int(keep.sum())),
        }
    )
    return frame.groupby(["capture", "bin"], as_index=False)[["sent", "received", "pkts"]].sum()


def _categories(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """A text column as its distinct values (text(): '' for missing) and each row's code:
    what is worked out per value is then done once per value, not per row (a million
    packets hold a few thousand addresses)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = text(pd.Series(column.cat.categories, dtype=object))
        codes = column.cat.codes.to_numpy()  # (-1, missing: the '' appended last)
        return pd.concat([values, pd.Series([""])], ignore_index=True), codes
    codes, values = pd.factorize(text(column))
    return pd.Series(values, dtype=object), codes


def _equals(column: pd.Series, value: str, lower: bool = False) -> np.ndarray:
    """text(column) == value (lower-cased first: lower), row by row."""
    values, codes = _categories(column)
    if lower:
        values = values.str.lower()
    return (values == value).to_numpy()[codes]


def spread_flows(f: pd.DataFrame, starts: pd.Series, width: float) -> pd.DataFrame:
    """Each flow's bytes spread evenly over the bins it covers (a difference array per
    recording: no loop over flows)."""
    capture = text(f["capture"]).to_numpy()
    offset = f["ts"].to_numpy(dtype=float) - pd.Series(capture).map(starts).to_numpy(dtype=float)
    duration = np.nan_to_num(pd.to_numeric(f["duration"], errors="coerce").to_numpy(dtype=float))
    first = np.floor(offset / width).astype(np.int64)
    last = np.maximum(np.floor((offset + duration) / width).astype(np.int64), first)
    count = last - first + 1
    device_orig = (f["side"] == "orig").to_numpy()
    orig_b = pd.to_numeric(f["orig_frame_bytes"], errors="coerce").fillna(0).to_numpy()
    resp_b = pd.to_numeric(f["resp_frame_bytes"], errors="coerce").fillna(0).to_numpy()
    sent = np.where(device_orig, orig_b, resp_b) / count
    received = np.where(device_orig, resp_b, orig_b) / count
    pkts = (
        pd.to_numeric(f["orig_pkts"], errors="coerce").fillna(0).to_numpy()
        + pd.to_numeric(f["resp_pkts"], errors="coerce").fillna(0).to_numpy()
    ) / count
    codes, names = pd.factorize(capture)
    span = int(last.max()) + 2
    key_start = codes.astype(np.int64) * span + first
    key_end = codes.astype(np.int64) * span + last + 1
    out = []
    for values in (sent, received, pkts):
        diff = np.zeros(len(names) * span)
        np.add.at(diff, key_start, values)
        np.add.at(diff, key_end, -values)
        out.append(np.cumsum(diff.reshape(len(names), span), axis=1).ravel())
    total = out[0] + out[1]
    nonzero = np.flatnonzero(np.abs(total) > 1e-9)
    return pd.DataFrame(
        {
            "capture": np.asarray(names, dtype=object)[nonzero // span],
            "bin": nonzero % span,
            "sent": out[0][nonzero],
            "received": out[1][nonzero],
            "pkts": out[2][nonzero],
        }
    )
