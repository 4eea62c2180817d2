"""Packets -> one feature vector per unit (flow, uniflow, burst or window), for machine learning.

The feature types are netml's (PyPI netml 0.7.1, pparser/parser.py, itself the
feature-extraction notebook's parser), computed here vectorised on the packets CSV:

- IAT: the seconds between a unit's consecutive packets (L-1 values, `iat_0`...);
- SIZE: its packets' frame lengths (L values, `size_0`...);
- IAT_SIZE: the two interleaved, as netml lays them out: iat_0, size_0, iat_1, size_1, ...,
  and the last packet's size last (2L-1 values, `iat_size_0`...);
- STATS: duration, packets per second, bytes per second, mean, std (population), q1, median,
  q3 (numpy's linear quantiles), min and max of the sizes, packets, bytes (12 values,
  `stats_duration`... in that order; the rates are 0 for a unit of duration 0);
- SAMP_NUM, SAMP_SIZE: the unit cut in sampling windows of S seconds from its first packet
  (S: the 30th percentile of the units' durations, as netml), the packets (bytes) in each
  window (L-1 values, `samp_num_0`..., at most 500 windows).

L (--length) is the packets per unit kept: by default netml's, the 90th percentile of the
units' packet counts, rounded down. Padding rule (netml's): a longer unit is cut to L, a
shorter one is padded with zeros at the end. --fft gives instead the real part of the
FFT of each variable-length vector taken over as many points (numpy's fft with n: the same
cut and padding first); STATS is never transformed. --header adds, first, netml's header
vector: the counts of each TCP flag over the unit's packets (FIN, SYN, RST, PSH, ACK, URG,
ECE, CWR: netml's order), then the TTL (IPv6: hop limit) of its first L packets, cut and
padded as SIZE (0 for a packet without an IP header too); never transformed.

Units are cut from the packets as the flows CSV cuts flows (flows.packets_in_flows): a flow
(both directions, its originator first in the key columns), its bursts (flows.py's rule:
a run of packets without a gap over --burst-gap), a uniflow (one direction of a 5-tuple,
cut by the same idle timeout and maximum duration), or a fixed window of the device's
traffic (--interval seconds from its first packet in the capture). Units with fewer than
`min_packets` packets are dropped (netml's flow_ptks_thres, default 2).

Memory: a big packets CSV is read in partitions by conversation (flow_partitions.route),
each cut into units kept compactly on disk (26 bytes a packet: time, size, unit, flags, TTL)
and turned into features a partition at a time; windows and --signature labels read the
packets whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio, detector, flow_partitions, flows, pipeline
from .errors import InputError, OutputError
from .schema import PACKETS, features_table

FEATURE_TYPES = ("IAT", "SIZE", "IAT_SIZE", "STATS", "SAMP_NUM", "SAMP_SIZE")
UNITS = ("flow", "uniflow", "burst", "window")
STATS = [
    "duration",
    "pkts_rate",
    "bytes_rate",
    "mean",
    "std",
    "q1",
    "q2",
    "q3",
    "min",
    "max",
    "num_pkts",
    "num_bytes",
]
FLAGS = "FSRPAUEC"  # netml's order of the TCP flag counts
FLAG_NAMES = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"]
LENGTH_QUANTILE = 0.9  # netml's q_interval: the default L
SAMPLING_QUANTILE = 0.3  # netml's quantile of the durations: the SAMP_* window
MAX_SAMPLES = 500  # netml stops a unit's SAMP_* values there
DEFAULT_MIN_PACKETS = 2  # netml's flow_ptks_thres
EDGE_SECONDS = 1e-6  # a packet this close to a SAMP_* window's boundary is walked as netml
DEFAULT_INTERVAL = 600.0  # the notebook's chunks
IDLE = "idle"
# The packets CSV's columns the units need (flows.prepare reads the others as empty).
COLUMNS = flows.PACKET_COLUMNS
OPTIONAL_COLUMNS = ["direction"]
HEADER_COLUMNS = ["ip_ttl"]  # needed with --header only (older packets CSVs lack it)


@dataclass
class FeatureOptions:
    unit: str = "flow"
    features: tuple[str, ...] = ("IAT",)
    fft: bool = False
    header: bool = False
    length: int | None = None  # L; None: netml's default
    min_packets: int = DEFAULT_MIN_PACKETS
    interval: float = DEFAULT_INTERVAL
    sampling_rate: float | None = None  # None: netml's default
    flow: flows.FlowOptions = field(default_factory=flows.FlowOptions)


def parse_features(text: str) -> tuple[str, ...]:
    """'IAT_SIZE,STATS' -> ('IAT_SIZE', 'STATS'); ValueError naming an unknown type."""
    names = [t.strip().upper() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FEATURE_TYPES]
    if unknown or not names:
        raise ValueError(
            f"unknown feature type {', '.join(unknown) or repr(text)} (known: "
            f"{', '.join(FEATURE_TYPES)})"
        )
    return tuple(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------
# Units: packets in unit order, compact
# ---------------------------------------------------------------------------------------


PIECE_KEYS = ["capture", "ts", "duration", "proto", "orig_h", "orig_p", "resp_h", "resp_p"]
PIECE_KEYS += ["packets", "rank_ts", "rank_row", "burst"]
TEXT_KEYS = {"capture", "proto", "orig_h", "resp_h"}


@dataclass
class Piece:
    """The units of some packets: per packet in unit order (units numbered from 0, packets
    in time order within one) its time, size, TCP flags (bits of FLAGS) and TTL (0 where
    none, and all 0 without --header); per unit its keys (PIECE_KEYS: rank_ts and rank_row
    are what numbers it in its uid, the time and row of its flow's first packet, or of its
    own)."""

    ts: np.ndarray
    size: np.ndarray
    flags: np.ndarray
    ttl: np.ndarray
    unit: np.ndarray
    keys: pd.DataFrame

    @property
    def starts(self) -> np.ndarray:
        return np.flatnonzero(np.r_[True, self.unit[1:] != self.unit[:-1]])

    def kept(self, min_packets: int) -> Piece:
        """Without the units of fewer than min_packets packets (renumbered)."""
        count = self.keys["packets"].to_numpy()
        keep = count >= min_packets
        if keep.all():
            return self
        new_number = np.cumsum(keep) - 1
        mine = keep[self.unit]
        return Piece(
            self.ts[mine],
            self.size[mine],
            self.flags[mine],
            self.ttl[mine],
            new_number[self.unit[mine]],
            self.keys[keep].reset_index(drop=True),
        )


def _flag_bits(flags: pd.Series) -> np.ndarray:
    """Per packet, its TCP flags as bits of FLAGS (decided once per distinct value)."""
    table = np.array(
        [sum(1 << i for i, f in enumerate(FLAGS) if f in str(c)) for c in flags.cat.categories]
        + [0],
        dtype=np.uint8,
    )
    return table[flags.cat.codes.to_numpy()]


def cut_units(frame: pd.DataFrame, rows, options: FeatureOptions, device_ips=()) -> Piece:
    """The units of packets (read_table's frame; rows: their rows in the whole CSV)."""
    if not len(frame):
        empty = np.zeros(0)
        keys = {k: pd.Series(dtype=object if k in TEXT_KEYS else float) for k in PIECE_KEYS}
        flags = empty.astype(np.uint8)
        return Piece(empty, empty, flags, flags, empty.astype(np.int64), pd.DataFrame(keys))
    p = flows.prepare(frame, rows)
    unit = options.unit
    if unit in ("flow", "burst"):
        order, owner, is_orig = flows.packets_in_flows(p, options.flow)
        flow_start = np.r_[True, owner[1:] != owner[:-1]]
        ts = p["ts"][order]
        if unit == "burst":
            new = flow_start | (np.diff(ts, prepend=-np.inf) > options.flow.burst_gap)
        else:
            new = flow_start
        number = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        first_of_flow = np.flatnonzero(flow_start)[owner[starts]]
        # The originator's side first: the flow's first packet, turned round when the
        # responder sent it.
        turned = ~is_orig[first_of_flow]
        src, dst = p["src_addr"][order[first_of_flow]], p["dst_addr"][order[first_of_flow]]
        sport, dport = p["src_port"][order[first_of_flow]], p["dst_port"][order[first_of_flow]]
        keys = {
            "orig_h": np.where(turned, dst, src),
            "orig_p": np.where(turned, dport, sport),
            "resp_h": np.where(turned, src, dst),
            "resp_p": np.where(turned, sport, dport),
        }
        rank_rows = order[first_of_flow]
        burst_number = (
            np.arange(len(starts))
            - np.flatnonzero(flow_start[starts])[np.cumsum(flow_start[starts]) - 1]
        )
        suffix = burst_number + 1 if unit == "burst" else None
    elif unit == "uniflow":
        order, number, starts = _runs(
            p,
            [
                p["capture"].cat.codes.to_numpy(),
                p["l4_proto"].cat.codes.to_numpy(),
                p["src_key"],
                p["dst_key"],
            ],
            options.flow,
        )
        keys = {
            "orig_h": p["src_addr"][order[starts]],
            "orig_p": p["src_port"][order[starts]],
            "resp_h": p["dst_addr"][order[starts]],
            "resp_p": p["dst_port"][order[starts]],
        }
        rank_rows, suffix = order[starts], None
    else:  # window
        order, number, starts = _windows(p, options.interval, device_ips)
        keys = {
            "orig_h": np.full(len(starts), -1),
            "orig_p": np.full(len(starts), np.nan),
            "resp_h": np.full(len(starts), -1),
            "resp_p": np.full(len(starts), np.nan),
        }
        rank_rows, suffix = order[starts], None
    ts = p["ts"][order]
    size = p["frame_len"][order]
    counts = np.diff(np.r_[starts, len(order)])
    ends = starts + counts - 1
    addresses = np.r_[p.addresses, [""]]  # (-1: none)
    table = {
        "capture": flows.values_at(p["capture"], order[starts]),
        "ts": ts[starts],
        "duration": ts[ends] - ts[starts],
        "proto": flows.values_at(p["l4_proto"], order[starts]) if unit != "window" else "",
        "orig_h": addresses[keys["orig_h"]],
        "orig_p": np.where(keys["orig_p"] >= 0, keys["orig_p"], np.nan),
        "resp_h": addresses[keys["resp_h"]],
        "resp_p": np.where(keys["resp_p"] >= 0, keys["resp_p"], np.nan),
        "packets": counts,
        "rank_ts": p["ts"][rank_rows],
        "rank_row": p.rows[rank_rows],
        "burst": suffix if suffix is not None else np.zeros(len(starts), np.int64),
    }
    if unit == "window" and device_ips:
        table["orig_h"] = np.full(len(starts), ",".join(device_ips), dtype=object)
    flags = _flag_bits(p["tcp_flags"])[order]
    return Piece(ts, size, flags, _ttls(frame, options)[order], number, pd.DataFrame(table))


def _ttls(frame: pd.DataFrame, options: FeatureOptions) -> np.ndarray:
    """Per packet (in the frame's order), its TTL or hop limit, 0 where it has none (or
    without --header: a byte a packet kept on disk, not worth reading the column for)."""
    if not options.header:
        return np.zeros(len(frame), np.uint8)
    ttl = pd.to_numeric(frame["ip_ttl"], errors="coerce").to_numpy(dtype=float)
    return np.nan_to_num(ttl, nan=0).astype(np.uint8)


def _runs(p: flows.Packets, key: list[np.ndarray], options: flows.FlowOptions):
    """Packets grouped by `key`, in time order within a group, cut where they pause over
    the idle timeout and every max_duration from a run's first packet (as flows are):
    (packet rows in unit order, unit number per packet, each unit's first index); units
    numbered by (first packet's time, row)."""
    order = np.lexsort([p["ts"], *reversed(key)])
    same = np.ones(len(order), dtype=bool)
    same[:1] = False
    for column in key:
        in_order = column[order]
        same[1:] &= in_order[1:] == in_order[:-1]
    ts = p["ts"][order]
    new = ~same | (np.diff(ts, prepend=-np.inf) > options.idle_timeout)
    segment_start = ts[np.flatnonzero(new)][np.cumsum(new) - 1]
    chunk = np.floor((ts - segment_start) / options.max_duration).astype(np.int64)
    new |= np.r_[False, (chunk[1:] != chunk[:-1]) & same[1:]]
    return _numbered(order, new, ts)


def _numbered(order: np.ndarray, new: np.ndarray, ts: np.ndarray):
    """Runs (marked by `new` over packets `order`) renumbered by (first time, first row)."""
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    by_first = np.lexsort((order[starts], ts[starts]))
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    moved = np.argsort(rank[run], kind="stable")
    order, run = order[moved], rank[run][moved]
    return order, run, np.flatnonzero(np.r_[True, run[1:] != run[:-1]]) if len(run) else run


def _windows(p: flows.Packets, interval: float, device_ips):
    """The device's packets (to or from one of device_ips; without them, those whose
    direction is sent or received where the packets CSV says it, else all) in windows of
    `interval` seconds from its first packet in each capture."""
    if device_ips:
        codes = [i for i, a in enumerate(p.addresses) if a in set(device_ips)]
        mine = np.isin(p["src_addr"], codes) | np.isin(p["dst_addr"], codes)
    else:
        direction = np.asarray(p["direction"].astype(str))
        mine = np.isin(direction, ["sent", "received"])
        if not mine.any():
            mine = np.ones(len(direction), dtype=bool)
    rows = np.flatnonzero(mine)
    capture = p["capture"].cat.codes.to_numpy()[rows]
    ts = p["ts"][rows]
    order = np.lexsort((ts, capture))
    rows, capture, ts = rows[order], capture[order], ts[order]
    first = np.r_[True, capture[1:] != capture[:-1]] if len(rows) else np.zeros(0, bool)
    origin = ts[np.flatnonzero(first)][np.cumsum(first) - 1]
    window = np.floor((ts - origin) / interval).astype(np.int64)
    new = first | np.r_[False, window[1:] != window[:-1]] if len(rows) else first
    return _numbered(rows, new, ts)


# ---------------------------------------------------------------------------------------
# Feature values
# ---------------------------------------------------------------------------------------


def default_length(counts: np.ndarray) -> int:
    """netml's dimension: the 90th percentile of the units' packet counts, rounded down."""
    if not len(counts):
        return 1
    return max(1, int(np.floor(np.quantile(counts, LENGTH_QUANTILE))))


def default_sampling_rate(durations: np.ndarray) -> float:
    """netml's SAMP_* window: the 30th percentile of the units' durations."""
    return float(np.quantile(durations, SAMPLING_QUANTILE)) if len(durations) else 0.0


def value_names(options: FeatureOptions, length: int) -> list[str]:
    """The value columns, in order, for L = length."""
    fft = "fft_" if options.fft else ""
    widths = {
        "IAT": ("iat", length - 1),
        "SIZE": ("size", length),
        "IAT_SIZE": ("iat_size", 2 * length - 1),
        "SAMP_NUM": ("samp_num", length - 1),
        "SAMP_SIZE": ("samp_size", length - 1),
    }
    names = []
    if options.header:
        names += [f"tcp_{f}" for f in FLAG_NAMES] + [f"ttl_{i}" for i in range(length)]
    for kind in options.features:
        if kind == "STATS":
            names += [f"stats_{s}" for s in STATS]
        else:
            stem, width = widths[kind]
            names += [f"{fft}{stem}_{i}" for i in range(max(width, 0))]
    return names


def values(piece: Piece, options: FeatureOptions, length: int, rate: float) -> dict:
    """Every value column of the piece's units (value_names' order)."""
    n = len(piece.keys)
    starts = piece.starts
    count = np.diff(np.r_[starts, len(piece.unit)])
    pos = np.arange(len(piece.unit)) - starts[piece.unit]
    ts, size = piece.ts, piece.size
    out: dict[str, np.ndarray] = {}
    if options.header:
        bits = piece.flags
        for i, name in enumerate(FLAG_NAMES):
            out[f"tcp_{name}"] = np.bincount(
                piece.unit, weights=(bits >> i) & 1, minlength=n
            ).astype(float)
        ttls = _scattered(piece.unit, pos, piece.ttl.astype(float), n, length)
        out.update({f"ttl_{i}": ttls[:, i] for i in range(length)})
    iat = np.diff(ts, prepend=np.nan)  # (pos 0: not an IAT)
    later = pos > 0
    for kind in options.features:
        if kind == "STATS":
            out.update(_stats(piece, count, starts))
            continue
        if kind == "IAT":
            width, stem = length - 1, "iat"
            slots, vals, unit = pos[later] - 1, iat[later], piece.unit[later]
        elif kind == "SIZE":
            width, stem = length, "size"
            slots, vals, unit = pos, size, piece.unit
        elif kind == "IAT_SIZE":
            width, stem = 2 * length - 1, "iat_size"
            last = pos == count[piece.unit] - 1
            # netml: iat_j at 2j and size_j at 2j+1, the last packet's size at 2(n-1)
            slots = np.r_[2 * (pos[later] - 1), np.where(last, 2 * pos, 2 * pos + 1)]
            vals = np.r_[iat[later], size]
            unit = np.r_[piece.unit[later], piece.unit]
        else:
            width, stem = length - 1, kind.lower()
            unit, slots, vals = _samples(piece, pos, kind, rate)
        if width <= 0:
            continue
        fitted = _scattered(unit, slots, vals, n, width if not options.fft else None)
        if options.fft:
            fitted = np.real(np.fft.fft(fitted, n=width, axis=1)) if n else np.zeros((0, width))
        prefix = "fft_" if options.fft else ""
        for i in range(width):
            out[f"{prefix}{stem}_{i}"] = fitted[:, i]
    return {name: out[name] for name in value_names(options, length)}


def _scattered(unit, slots, vals, n: int, width: int | None) -> np.ndarray:
    """Per unit, its values at their slots: cut at `width` (None: every slot), zeros
    where a unit has none."""
    if width is None:
        width = int(slots.max()) + 1 if len(slots) else 1
    matrix = np.zeros((n, max(width, 1)))
    keep = slots < width
    matrix[unit[keep], slots[keep]] = vals[keep]
    return matrix


def _stats(piece: Piece, count: np.ndarray, starts: np.ndarray) -> dict:
    unit, size = piece.unit, piece.size
    n = len(count)
    ends = starts + count - 1
    duration = piece.ts[ends] - piece.ts[starts]
    total = np.bincount(unit, weights=size, minlength=n)
    mean = total / count
    std = np.sqrt(np.bincount(unit, weights=(size - mean[unit]) ** 2, minlength=n) / count)
    with np.errstate(divide="ignore", invalid="ignore"):
        pkts_rate = np.where(duration > 0, count / duration, 0.0)
        bytes_rate = np.where(duration > 0, total / duration, 0.0)
    ordered = size[np.lexsort((size, unit))]  # sizes sorted within each unit
    quantiles = [_quantile(ordered, starts, count, q) for q in (0.25, 0.5, 0.75)]
    columns = [
        duration,
        pkts_rate,
        bytes_rate,
        mean,
        std,
        *quantiles,
        ordered[starts],
        ordered[ends],
        count.astype(float),
        total,
    ]
    return {f"stats_{name}": column for name, column in zip(STATS, columns)}


def _quantile(ordered, starts, count, q: float) -> np.ndarray:
    """numpy's linear quantile of each unit's sorted values (its lerp, for the same bits)."""
    h = (count - 1) * q
    below = np.floor(h).astype(np.int64)
    above = np.minimum(below + 1, count - 1)
    a, b = ordered[starts + below], ordered[starts + above]
    t = h - below
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _samples(piece: Piece, pos: np.ndarray, kind: str, rate: float):
    """SAMP_NUM / SAMP_SIZE as (unit, slot, value) sums: each packet in its sampling
    window counted from the unit's first packet (floor(offset / rate)). netml walks the
    packets, adding `rate` to the current window's start as it goes: a packet on a window's
    boundary (to float noise) may fall either side, so the few units that have one are
    walked as netml walks them (_walked)."""
    unit, ts = piece.unit, piece.ts
    starts = piece.starts
    offset = ts - ts[starts][unit]
    if rate > 0:
        with np.errstate(invalid="ignore", over="ignore"):
            ratio = offset / rate
        raw = np.floor(ratio)
        # (an epoch time's float holds it to ~2e-7 s: the boundaries are that blurred)
        edge = (ratio >= 0.5) & (np.abs(offset - np.rint(ratio) * rate) <= EDGE_SECONDS)
        for u in np.unique(unit[edge]):
            first, last = starts[u], starts[u] + np.count_nonzero(unit == u)
            raw[first:last] = _walked(ts[first:last], rate)
    else:  # (netml fails there) every packet at the first one's time in one window
        raw = np.where(offset > 0, np.nan, 0)
    slot = np.nan_to_num(raw, nan=MAX_SAMPLES, posinf=MAX_SAMPLES).astype(np.int64)
    keep = slot < MAX_SAMPLES
    weight = np.ones(len(ts)) if kind == "SAMP_NUM" else piece.size
    n = len(piece.keys)
    last = np.zeros(n, np.int64)
    np.maximum.at(last, unit[keep], slot[keep])
    key = unit[keep] * MAX_SAMPLES + slot[keep]
    sums = np.bincount(key, weights=weight[keep], minlength=n * MAX_SAMPLES)
    # every window up to the unit's last one, empty ones as 0
    width = int(last.max()) + 1 if n else 0
    grid = sums.reshape(n, MAX_SAMPLES)[:, :width] if n else np.zeros((0, 0))
    units, slots = np.nonzero(np.arange(width)[None, :] <= last[:, None])
    return units, slots, grid[units, slots]


def _walked(times: np.ndarray, rate: float) -> np.ndarray:
    """The sampling window of each packet of one unit, as netml's _get_SAMP walks them
    (its float sums included); MAX_SAMPLES past its limit."""
    window = np.zeros(len(times))
    current, at = float(times[0]), 0
    for i in range(1, len(times)):
        if times[i] - current > rate:
            current += rate
            skipped = int(np.floor((times[i] - current) // rate))
            if skipped > 0:
                skipped = min(skipped, MAX_SAMPLES)
                current += skipped * rate
            at += 1 + max(skipped, 0)
            if at >= MAX_SAMPLES:
                window[i:] = MAX_SAMPLES
                break
        window[i] = at
    return window


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------


def window_labels(keys: pd.DataFrame, windows: pd.DataFrame, overlap: bool = False) -> np.ndarray:
    """The event whose window (windows.event_windows) holds the unit's first packet, else
    idle (windows are cut so as not to overlap); with `overlap` (window units, minutes
    long), the last event window that overlaps the unit."""
    labels = np.full(len(keys), IDLE, dtype=object)
    if windows.empty or keys.empty:
        return labels
    windows = windows.sort_values("start", kind="stable")
    start, end = windows["start"].to_numpy(float), windows["end"].to_numpy(float)
    names = windows["event"].astype(str).replace("", "event").to_numpy(dtype=object)
    ts = keys["ts"].to_numpy(float)
    last = ts + keys["duration"].to_numpy(float) if overlap else ts
    at = np.searchsorted(start, last, side="right") - 1
    inside = (at >= 0) & (ts <= end[np.maximum(at, 0)])
    labels[inside] = names[at[inside]]
    return labels


def signature_labels(packets: pd.DataFrame, signatures, options: FeatureOptions) -> pd.Series:
    """Per flow (flows.build's numbering, the flows CSV's), the event of the signature
    pattern it matches (detector.match_flows on the device's fingerprinted flows), else
    idle."""
    built = flows.build(packets, options.flow, bursts=False).flows
    labels = pd.Series(IDLE, index=built["uid"].to_numpy(), dtype=object)
    for capture, mine in built.groupby("capture", sort=False, observed=True):
        for signature in signatures:
            view = detector.device_view(mine, str(capture), signature.device_ip)
            if view.empty:
                continue
            matched = detector.match_flows(view, signature.patterns) >= 0
            uids = view["uid"].to_numpy()[matched]
            fresh = uids[labels.loc[uids].to_numpy() == IDLE]
            labels.loc[fresh] = signature.event
    return labels


# ---------------------------------------------------------------------------------------
# The whole: packets CSVs -> features.csv and features.parquet
# ---------------------------------------------------------------------------------------


@dataclass
class Written:
    units: int
    length: int
    sampling_rate: float
    per_label: dict
    csv: Path
    parquet: Path
    warnings: list = field(default_factory=list)


def packet_columns(options: FeatureOptions) -> tuple[list[str], list[str]]:
    """(the packets CSV columns required, those read) for these options."""
    required = COLUMNS + (HEADER_COLUMNS if options.header else [])
    return required, required + OPTIONAL_COLUMNS


def read_packets(packets_csv: Path, options: FeatureOptions) -> pd.DataFrame:
    required, columns = packet_columns(options)
    return csvio.read_table(packets_csv, PACKETS, required=required, columns=columns, compact=True)


def _pieces(packets_csv: Path, folder: Path, options: FeatureOptions, device_ips, whole: bool):
    """Phase 1: the units of one packets CSV, each piece pickled in `folder`; yields the
    pieces' paths and summaries (_saved: the rest stays on disk)."""
    partitions = 1 if whole else flow_partitions.partitions_for(packets_csv)
    if partitions > 1:
        try:
            routed = flow_partitions.route(
                Path(packets_csv),
                folder,
                options.flow,
                partitions,
                csvio.CHUNK_BYTES,
                *packet_columns(options),
            )
        except csvio.NeedsWholeFile:
            partitions = 1
        else:
            for k in np.flatnonzero(routed.rows):
                frame, rows = flow_partitions.read_partition(folder, k)
                yield _saved(cut_units(frame, rows, options, device_ips), folder, f"{k}")
            return
    frame = read_packets(packets_csv, options)
    yield _saved(cut_units(frame, None, options, device_ips), folder, "whole")


SUMMARY = ["packets", "duration", "rank_ts", "rank_row"]  # what phase 1 keeps per unit


def _saved(piece: Piece, folder: Path, name: str):
    """The piece on disk, and the numbers phase 1 keeps of its units in memory (~32 bytes a
    unit: a key's text columns would grow memory with the capture)."""
    path = folder / f"units-{name}.pickle"
    pd.to_pickle(piece, path)
    return path, {c: piece.keys[c].to_numpy() for c in SUMMARY}


def write_features(
    packet_files: list[Path],
    output_dir: Path,
    options: FeatureOptions,
    device_ips=(),
    windows: pd.DataFrame | None = None,
    signatures=None,
) -> Written:
    """features.csv and features.parquet in output_dir from the packets CSVs, written whole
    or not at all; labels from event windows (windows.event_windows) or signatures."""
    csv_path = Path(output_dir) / "features.csv"
    parquet_path = Path(output_dir) / "features.parquet"
    whole = options.unit == "window" or signatures is not None
    with csvio.temporary_folder(csv_path) as folder:
        pieces, flow_labels = [], {}
        try:
            for number, packets_csv in enumerate(packet_files):
                sub = folder / str(number)
                sub.mkdir()
                for path, keys in _pieces(packets_csv, sub, options, device_ips, whole):
                    pieces.append((number, path, keys))
                if signatures is not None:
                    flow_labels.update(
                        # (the flow builder's every column: the remote party's name too)
                        signature_labels(pipeline.read_packets(packets_csv), signatures, options)
                    )
        except OSError as e:
            raise OutputError(folder, f"cannot write ({e.strerror or e})") from None
        uids = _uids(pieces)
        kept = [k["packets"] >= options.min_packets for _, _, k in pieces]
        counts = np.concatenate([[], *(k["packets"][m] for (_, _, k), m in zip(pieces, kept))])
        durations = np.concatenate([[], *(k["duration"][m] for (_, _, k), m in zip(pieces, kept))])
        del kept
        length = options.length or default_length(counts)
        rate = (
            options.sampling_rate
            if options.sampling_rate is not None
            else default_sampling_rate(durations)
        )
        names = value_names(options, length)
        table = features_table(names)
        per_label: dict[str, int] = {}

        def frames():
            mark = {"uniflow": "u", "window": "w"}.get(options.unit, "")
            for (_, path, _), number in zip(pieces, uids):
                piece = pd.read_pickle(path)
                os.unlink(path)
                uid = (
                    piece.keys["capture"].to_numpy(dtype=object)
                    + f"#{mark}"
                    + number.astype(str).astype(object)
                )
                if options.unit == "burst":
                    uid = uid + "/" + piece.keys["burst"].to_numpy().astype(str).astype(object)
                piece.keys["uid"] = uid
                piece = piece.kept(options.min_packets)
                keys = piece.keys
                if keys.empty:
                    continue
                if windows is not None:
                    label = window_labels(keys, windows, options.unit == "window")
                elif signatures is not None:
                    flow_uid = keys["uid"].str.replace(r"/\d+$", "", regex=True)
                    label = flow_uid.map(flow_labels).fillna(IDLE).to_numpy()
                else:
                    label = np.full(len(keys), "", dtype=object)
                for name, n in pd.Series(label).value_counts(sort=False).items():
                    per_label[name] = per_label.get(name, 0) + int(n)
                frame = pd.DataFrame(
                    {
                        "unit": options.unit,
                        **{c: keys[c] for c in ("uid", "capture", "ts", "duration", "proto")},
                        **{c: keys[c] for c in ("orig_h", "orig_p", "resp_h", "resp_p")},
                        "packets": keys["packets"],
                        "label": label,
                        **values(piece, options, length, rate),
                    },
                    columns=table.names,
                )
                yield frame

        written = _write(frames(), table, csv_path, parquet_path)
    warnings = []
    if windows is not None and written and not (set(per_label) - {IDLE}):
        warnings.append("no unit falls in any listed event's window: every unit is idle")
    return Written(written, length, rate, per_label, csv_path, parquet_path, warnings)


def _uids(pieces) -> list[np.ndarray]:
    """Each piece's units' numbers in their uids, per packets CSV by (time, row) of their
    flow's first packet (flows: the flows CSV's uid capture#N; bursts: that, '/', the
    burst's number in its flow; uniflows and windows: 'u' and 'w' before N)."""
    out: list = [None] * len(pieces)
    by_file: dict[int, list[int]] = {}
    for i, (number, _, _) in enumerate(pieces):
        by_file.setdefault(number, []).append(i)
    for indices in by_file.values():
        ts = np.concatenate([pieces[i][2]["rank_ts"] for i in indices])
        row = np.concatenate([pieces[i][2]["rank_row"] for i in indices])
        _, first = np.unique(row, return_inverse=True)  # one number per flow
        rows_first = np.unique(row)
        ts_first = np.zeros(len(rows_first))
        ts_first[first] = ts
        rank = np.empty(len(rows_first), np.int64)
        rank[np.lexsort((rows_first, ts_first))] = np.arange(len(rows_first))
        numbers = rank[first] + 1
        at = 0
        for i in indices:
            count = len(pieces[i][2]["packets"])
            out[i] = numbers[at : at + count]
            at += count
    return out


def _write(frames, table, csv_path: Path, parquet_path: Path) -> int:
    """The frames as one CSV and one Parquet file, each replaced whole at the end."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    formats = {c.name: csvio.TIME_FORMAT for c in table.columns if c.spelling == "epoch"}
    count = 0
    with csvio.atomic_path(csv_path) as csv_tmp, csvio.atomic_path(parquet_path) as pq_tmp:
        schema = pa.schema(
            [
                (
                    c.name,
                    pa.string()
                    if c.type in ("text", "str")
                    else pa.int64()
                    if c.type == "int"
                    else pa.float64(),
                )
                for c in table.columns
            ]
        )
        try:
            with open(csv_tmp, "wb") as sink, pq.ParquetWriter(pq_tmp, schema) as parquet:
                sink.write((",".join(table.names) + "\n").encode())
                for frame in frames:
                    if not len(frame):
                        continue
                    count += len(frame)
                    csvio.write_rows(sink, csvio.to_csv_text(frame, table), formats=formats)
                    parquet.write_table(
                        pa.Table.from_pandas(_typed(frame, table), schema, preserve_index=False)
                    )
        except OSError as e:
            raise OutputError(csv_path, f"cannot write ({e.strerror or e})") from None
    return count


def _typed(frame: pd.DataFrame, table) -> pd.DataFrame:
    """The frame with the Parquet file's types: text as str, ports as numbers."""
    out = frame.copy()
    for c in table.columns:
        if c.type in ("text", "str"):
            out[c.name] = out[c.name].astype(object).where(out[c.name].notna(), "").astype(str)
        elif c.type == "int":
            out[c.name] = pd.to_numeric(out[c.name]).astype("Int64")  # (no port: null)
        else:
            out[c.name] = pd.to_numeric(out[c.name], errors="coerce").astype(float)
    return out


def check_inputs(packet_files: list[Path]) -> None:
    for path in packet_files:
        if not Path(path).is_file():
            raise InputError(path, "no such file")
