"""Find learned events in captures: signature CSVs + flows -> occurrences (detections).

A capture's flows are fingerprinted the way signature-extractor fingerprints its training
recordings (signature.device_flows and signature.fingerprints: one definition of a
fingerprint). A flow matches a pattern when its fingerprint is the pattern's (device side,
L4 protocol, fixed server port, application fields, and the remote party: the domain the
capture's own DNS answers gave its address, else the class or the address the pattern
names) and its packet and byte counts lie within the pattern's learned ranges widened by a
tolerance. Matched flows are grouped into occurrence windows; an occurrence's score is the
share of the signature's event patterns it contains. Where occurrences of several
signatures of one device overlap, the one that accounts for the others' flows and for
more besides (a boot that also does what a toggle does) wins; the others are kept in the
output, marked as explained by it.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio
from . import signature as sig
from .errors import InputError
from .flows import FlowOptions, bursts_beside
from .inputs import file_kind
from .parties import unspecified_device_sides
from .schema import BURSTS, DETECTIONS, FLOWS
from .timefmt import utc

DEFAULT_TOLERANCE = 0.5  # counts may be 50% below the learned minimum / above the maximum
SLACK_PACKETS = 2  # the least a count range is widened by
DEFAULT_MIN_SCORE = 0.75  # share of the event patterns an occurrence needs
MIN_WINDOW = 10.0  # seconds: the shortest automatic occurrence window
WINDOW_FACTOR = 3.0  # automatic window: this many times the learned event span
COUNT_METRICS = ["orig_pkts", "resp_pkts", "orig_frame_bytes", "resp_frame_bytes"]
BYTE_METRICS = {"orig_frame_bytes", "resp_frame_bytes"}  # not used with a packet profile
# The fingerprint but its remote party (matched on its own: by name, class or address).
KEY_COLUMNS = [c for c in sig.FINGERPRINT if c != "remote"]
PORT = KEY_COLUMNS.index("server_port")
DNS_NAME = KEY_COLUMNS.index("dns_qry_name")
SUMMARY_DETECTIONS = 5  # detections named in a capture's summary line
FLOW_EXTRAS = ["capture", "first_frame", "last_frame", *sig.OPTIONAL]


# ---------------------------------------------------------------------------------------
# Inputs: what each argument is, by content
# ---------------------------------------------------------------------------------------


def classify(path: Path) -> str:
    """'capture', 'signature', 'flows' or 'packets': inputs.file_kind, the one rule."""
    return file_kind(path, ("capture", "signature", "flows"))


# ---------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------


def canonical(value) -> str:
    """A set-valued field in one spelling, as signature.fingerprints writes it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return sig.canonical_set(value)


def port_number(value) -> int:
    """A port cell as an int (-1: none)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -1
    return -1 if math.isnan(number) else int(number)


@dataclass(frozen=True)
class Pattern:
    name: str
    order: int
    role: str
    key: tuple  # the KEY_COLUMNS: side, proto, server port, app fields
    remote: str
    remote_kind: str
    remote_addrs: frozenset
    ranges: tuple  # ((metric, low, high), ...): NaN bounds are no bound
    flows_max: int
    start_offset: float
    profile: tuple = ()  # ((low, high), ...): sizes of the first payload packets
    unit: str = "flow"  # or "burst": a burst inside a connection already open
    periodic: bool = False  # keep-alive bursts may match it
    slack: float = sig.PROFILE_SLACK  # bytes around each item (none for accepted ranges)
    # The period of the keep-alives that carry its sizes where it was learned (NaN: none),
    # and its largest frame each way, (low, high) of orig then resp, widened by the
    # tolerance: which bursts a live watch gives that period.
    keepalive_period: float = math.nan
    size_max: tuple = ()

    @property
    def general(self) -> bool:
        return self.remote_kind == "class" and self.remote in sig.GENERALISABLE

    @property
    def is_dns(self) -> bool:
        return bool(self.key[DNS_NAME])

    def counts_fit(self, values: dict) -> np.ndarray:
        """Which flows' counts (arrays per metric) lie in the pattern's ranges."""
        fits = np.ones(len(next(iter(values.values()))), dtype=bool)
        for metric, low, high in self.ranges:
            if self.profile and metric in BYTE_METRICS:
                continue  # the profile bounds the packets that matter; the counts, the rest
            value = values[metric]  # NaN: the flow does not say, and fits
            if low == low:
                fits &= ~(value < low)
            # A resolver that gets no answer asks again on the same port: more packets
            # of one DNS query are retries, not another event.
            if high == high and not self.is_dns:
                fits &= ~(value > high)
        return fits


@dataclass
class EventSignature:
    source: str
    event: str
    device_name: str
    device_ip: str
    patterns: list[Pattern]  # event patterns, in event order
    background: list[Pattern]
    span: float  # learned seconds from the first to the last event flow's start
    settings: dict = field(default_factory=dict)  # how its flows were built (learned)

    @property
    def needs_bursts(self) -> bool:
        return any(p.unit == "burst" for p in self.patterns)

    @property
    def label(self) -> str:
        return f"{self.device_name}/{self.event}"

    def window(self, override: float | None) -> float:
        if override:
            return override
        return max(MIN_WINDOW, WINDOW_FACTOR * self.span)

    def fingerprints(self) -> set[tuple]:
        return {(p.key, p.remote, p.remote_kind) for p in self.patterns + self.background}


def read_signatures(path: Path, tolerance: float = DEFAULT_TOLERANCE) -> list[EventSignature]:
    """The signatures in one signature CSV (one per event and device it holds). Refuses a
    file with missing columns or another format version, naming the problem."""
    frame = sig.read_signature_csv(path)  # checks every column and the version
    if frame.empty:
        raise InputError(path, "signature CSV without any pattern")
    return event_signatures(frame, path, tolerance)


def event_signatures(
    frame: pd.DataFrame, path, tolerance: float = DEFAULT_TOLERANCE
) -> list[EventSignature]:
    """The signatures of a signature CSV's rows, as read (read_signature_csv); `path`
    names them (the detections' signature column)."""
    signatures = []
    # One signature per event, device and variant (a route the event takes).
    groups = frame.groupby(
        ["event", "device_name", "device_ip", "variant"], sort=False, dropna=False
    )
    for (event, device_name, device_ip, _), rows in groups:
        if not str(device_ip).strip():
            raise InputError(
                path,
                f"event {event!r}: empty device_ip: the detector cannot "
                "tell which flows are the device's",
            )
        patterns = [_pattern(row, tolerance) for row in rows.itertuples(index=False)]
        events = sorted((p for p in patterns if p.role == "event"), key=lambda p: p.order)
        background = [p for p in patterns if p.role != "event"]
        event_rows = rows[rows["role"] == "event"]
        # Occurrences group flows by when they start: a long upload that follows does not
        # make the event longer (and would merge the next events into it).
        starts = pd.to_numeric(event_rows["start_offset_median"], errors="coerce").fillna(0)
        span = float(starts.max() - starts.min()) if len(event_rows) else 0.0
        first = rows.iloc[0]
        settings = {
            name: float(first[name])
            for name in LEARNED_SETTINGS
            if first[name] == first[name] and float(first[name]) > 0
        }
        signatures.append(
            EventSignature(
                str(path),
                str(event),
                str(device_name),
                str(device_ip).strip(),
                events,
                background,
                max(span, 0.0),
                settings,
            )
        )
    return signatures


LEARNED_SETTINGS = ("idle_timeout", "max_duration", "burst_gap")


def _key(values: dict) -> tuple:
    """A pattern's or a fingerprinted flow's KEY_COLUMNS, spelled one way."""
    return tuple(
        port_number(values[c])
        if c == "server_port"
        else canonical(values[c])
        if c in sig.FINGERPRINT_FIELDS
        else ("" if values[c] != values[c] else str(values[c]))
        for c in KEY_COLUMNS
    )


def _pattern(row, tolerance: float) -> Pattern:
    values = row._asdict()
    values["unit"] = values["unit"] or "flow"  # (an empty cell: a flow, as in version 2)
    key = _key(values)
    ranges = []
    for metric in COUNT_METRICS:
        low, high = values[f"{metric}_min"], values[f"{metric}_max"]
        # Widened by the tolerance, and by at least SLACK_PACKETS either way: a flow of two
        # packets seen once more with a retransmission or a keep-alive is the same flow.
        ranges.append(
            (
                metric,
                min(low * (1 - tolerance), low - SLACK_PACKETS) if low == low else low,
                max(high * (1 + tolerance), high + SLACK_PACKETS) if high == high else high,
            )
        )
    flows_max = values["flows_max"]
    addresses = frozenset(a for a in str(values["remote_addrs"] or "").split(";") if a)
    offset = values["start_offset_median"]
    return Pattern(
        str(values["pattern"]),
        port_number(values["order"]),
        str(values["role"]),
        key,
        str(values["remote"]),
        str(values["remote_kind"]),
        addresses,
        tuple(ranges),
        int(flows_max) if flows_max == flows_max and flows_max >= 1 else 1,
        float(offset) if offset == offset else 0.0,
        sig.parse_profile(values["accepted_profile"] or values["packet_profile"]),
        str(values["unit"]),
        bool(values["periodic"] == values["periodic"] and values["periodic"]),
        0.0 if values["accepted_profile"] else sig.PROFILE_SLACK,
        float(values["keepalive_period"]),
        tuple(
            (
                values[f"{s}_size_max_min"] * (1 - tolerance),
                values[f"{s}_size_max_max"] * (1 + tolerance),
            )
            for s in ("orig", "resp")
        ),
    )


def flow_options(signatures: list[EventSignature], given: dict | None = None):
    """How to build the flows of captures to search: as `given` (idle_timeout,
    max_duration, burst_gap), else as the signatures were learned, else the defaults.
    Also the settings taken from the signatures that are not the defaults (said by the
    caller), and a warning where the signatures disagree."""
    defaults = FlowOptions().settings()
    chosen, learned_not_default, warnings = {}, [], []
    for name, default in defaults.items():
        learned = sorted({s.settings[name] for s in signatures if name in s.settings})
        if (given or {}).get(name) is not None:
            chosen[name] = given[name]
        elif learned:
            chosen[name] = learned[0]
            if len(learned) > 1:
                warnings.append(
                    f"the signatures were learned with different --{name.replace('_', '-')} "
                    f"({', '.join(f'{v:g}' for v in learned)}): using {learned[0]:g}"
                )
            if learned[0] != default:
                learned_not_default.append(f"--{name.replace('_', '-')} {learned[0]:g}")
        else:
            chosen[name] = default
    devices = tuple(dict.fromkeys(s.device_ip for s in signatures))
    return FlowOptions(device_ips=devices, **chosen), learned_not_default, warnings


# ---------------------------------------------------------------------------------------
# Flows of a capture, seen from one device
# ---------------------------------------------------------------------------------------


def read_flows(path: Path, bursts: bool = False) -> pd.DataFrame:
    """A flows CSV: the columns a fingerprint needs (named when missing), and the frame
    numbers and remote address where the file has them; with `bursts`, the bursts inside
    connections already open of the bursts CSV beside it, as units of their own (a missing
    bursts CSV is an InputError naming it)."""
    if bursts and not bursts_beside(path).is_file():
        raise InputError(
            path,
            f"no bursts CSV beside it ({bursts_beside(path).name}), and a signature has "
            "burst patterns: build it with stream-identifier.py from the packets CSV",
        )
    return sig.read_units(Path(path), bursts, tuple(FLOW_EXTRAS))


def read_device_units(
    path: Path, devices: set[str], bursts: bool = False, table=FLOWS, extra: list | None = None
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """read_flows for the flows (and bursts) of the given devices only, read a chunk at a
    time: memory holds the devices' units, not a week of a whole home's flows. Also the
    extent of the capture: (first packet, last packet) over all its flows. (table=BURSTS:
    a bursts CSV's rows of the devices, as they are, with its `extra` columns too.)"""
    if bursts and not bursts_beside(path).is_file():
        read_flows(path, bursts)  # (raises the error that names the missing file)
    if table is BURSTS:
        columns = BURST_COLUMNS + list(extra or [])
        return _devices_rows(path, BURSTS, columns, columns, devices)
    flows, extent = _devices_rows(path, FLOWS, sig.REQUIRED, UNIT_COLUMNS, devices)
    if not bursts:
        return flows, extent
    inner, _ = _devices_rows(bursts_beside(path), BURSTS, BURST_COLUMNS, BURST_COLUMNS, devices)
    return sig.with_bursts(flows, inner), extent


# What a unit is read with: a flow's columns, and a burst's of the same.
UNIT_COLUMNS = list(dict.fromkeys(sig.REQUIRED + sig.OPTIONAL + FLOW_EXTRAS))
BURST_COLUMNS = [c for c in BURSTS.names if c in UNIT_COLUMNS + sig.UNIT_COLUMNS + ["opens", "uid"]]


def _devices_rows(path: Path, table, required, columns, devices: set[str]):
    """The rows of a flows or bursts CSV with a device on either side, read in chunks (a
    file that must be read whole, whole), as read_table reads them; and the extent of
    all rows' times."""
    first, last, kept = math.inf, -math.inf, []

    def take(frame: pd.DataFrame) -> None:
        nonlocal first, last
        if not len(frame):
            return
        ends = frame["ts"] + pd.to_numeric(frame["duration"], errors="coerce").fillna(0)
        first, last = min(first, float(frame["ts"].min())), max(last, float(ends.max()))
        mine = frame["orig_h"].isin(devices) | frame["resp_h"].isin(devices)
        # (a first cut, a chunk at a time: device_flows keeps those of each device's MAC)
        unaddressed_orig, unaddressed_resp = unspecified_device_sides(frame)
        mine |= unaddressed_orig | unaddressed_resp
        kept.append(frame[mine.to_numpy()])

    wanted = list(dict.fromkeys([*columns, "duration"]))
    try:
        for chunk in csvio.read_table_chunks(path, table, required=required, columns=wanted):
            text = [c for c in chunk.columns if isinstance(chunk[c].dtype, pd.CategoricalDtype)]
            take(chunk.astype(dict.fromkeys(text, object)))
    except csvio.NeedsWholeFile:
        first, last, kept = math.inf, -math.inf, []
        take(csvio.read_table(path, table, required=required, columns=wanted))
    frame = pd.concat(kept, ignore_index=True) if kept else csvio.empty_frame(table)[wanted]
    return frame, (first, last)


def device_view(flows: pd.DataFrame, capture: str, device_ip: str) -> pd.DataFrame:
    """The capture's flows that involve the device, fingerprinted as in training."""
    mine = sig.device_flows(sig.Recording(capture, flows), device_ip, None)
    if mine.empty:
        return mine
    view = sig.fingerprints(mine)
    view["end"] = view["ts"] + view["duration"].fillna(0)
    for column in ("first_frame", "last_frame"):
        if column not in view:
            view[column] = np.nan
    if "uid" not in view:
        view["uid"] = [f"{capture}:{i}" for i in range(len(view))]
    return _with_joined_bursts(view)


# Delay and jitter split an exchange: a reply 0.5-2 s late starts a burst of its own. So a
# burst is also tried joined with the next bursts of its flow (up to JOIN_MAX) that start
# within JOIN_HORIZON seconds of the one before; among the tries that match, the fewest
# bursts win, and no burst counts twice (resolve_joined).
JOIN_HORIZON = 3.0
JOIN_MAX = 3
JOINED_SUMS = ["orig_pkts", "resp_pkts", "orig_frame_bytes", "resp_frame_bytes"]


def _with_joined_bursts(view: pd.DataFrame) -> pd.DataFrame:
    """The view, its burst units numbered in `burst_pos` (by flow, then time; -1 for the
    flows), and after them the joined tries: rows that stand for the burst at `burst_pos`
    and the `joins` bursts after it."""
    view = view.assign(burst_pos=-1, joins=0)
    if "unit" not in view or not (view["unit"] == "burst").any():
        return view
    bursts = view[view["unit"] == "burst"]
    flow = bursts["uid"].astype(str).str.rsplit("/", n=1).str[0].to_numpy()
    order = np.lexsort((bursts["ts"].to_numpy(float), flow))
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    view.loc[bursts.index, "burst_pos"] = position
    ordered = bursts.iloc[order].reset_index(drop=True)
    flow = flow[order]
    ts, end = ordered["ts"].to_numpy(float), ordered["end"].to_numpy(float)
    sizes = ordered["first_payload_sizes"].fillna("").astype(str).str.lstrip("'").to_numpy()
    chain = np.ones(len(ordered), dtype=bool)
    tries = []
    for k in range(1, JOIN_MAX + 1):
        last = np.arange(len(ordered)) + k
        inside = last < len(ordered)
        last = np.minimum(last, len(ordered) - 1)
        previous_end = end[np.maximum(last - 1, 0)]
        chain &= (
            inside
            & (flow[last] == flow[np.arange(len(ordered))])
            & (ts[last] - previous_end <= JOIN_HORIZON)
        )
        starts = np.flatnonzero(chain)
        if not len(starts):
            break
        joined = ordered.iloc[starts].copy()
        joined["burst_pos"], joined["joins"] = starts, k
        text = sizes[starts]
        for step in range(1, k + 1):
            text = text + " " + sizes[starts + step]
            for column in JOINED_SUMS:
                joined[column] = (
                    joined[column].to_numpy(float)
                    + pd.to_numeric(ordered[column], errors="coerce").to_numpy(float)[starts + step]
                )
        joined["first_payload_sizes"] = [" ".join(s.split()) for s in text]
        joined["end"] = end[starts + k]
        joined["last_frame"] = ordered["last_frame"].to_numpy(float)[starts + k]
        for side in ("orig", "resp"):
            for stat, pick in (("min", np.fmin), ("max", np.fmax)):
                column = f"{side}_size_{stat}"
                values = ordered[column].to_numpy(float)
                combined = values[starts]
                for step in range(1, k + 1):
                    combined = pick(combined, values[starts + step])
                joined[column] = combined
        tries.append(joined)
    if not tries:
        return view
    return pd.concat([view, *tries], ignore_index=True)


def resolve_joined(view: pd.DataFrame, matches: np.ndarray) -> np.ndarray:
    """matches, with the joined tries settled: of the matched rows that cover the same
    bursts, the one joining the fewest (a burst matched alone first) is kept, and the
    others are unmatched: each burst counts once."""
    if "joins" not in view:
        return matches
    joins = view["joins"].to_numpy()
    matched = np.flatnonzero((matches >= 0) & (view["burst_pos"].to_numpy() >= 0))
    if not len(matched) or not (joins > 0).any():
        return matches
    matches = matches.copy()
    start = view["burst_pos"].to_numpy()[matched]
    taken: set[int] = set()
    for row in matched[np.lexsort((start, joins[matched]))]:
        span = set(
            range(
                int(view["burst_pos"].iat[row]),
                int(view["burst_pos"].iat[row]) + int(joins[row]) + 1,
            )
        )
        if span & taken:
            matches[row] = -1
        else:
            taken |= span
    return matches


# ---------------------------------------------------------------------------------------
# Occurrences
# ---------------------------------------------------------------------------------------


@dataclass
class DetectOptions:
    # (the count tolerance is applied when reading the signatures: read_signatures)
    min_score: float = DEFAULT_MIN_SCORE
    window: float | None = None  # seconds; None: from each signature's learned span
    strict_order: bool = False  # count patterns seen out of order as missing
    # Devices known to send DNS queries though the flows given show none (a live watch
    # that has let its earlier flows go): their DNS patterns stay expected.
    dns_devices: frozenset = frozenset()


@dataclass
class Occurrence:
    capture: str
    signature: EventSignature
    flows: dict = field(default_factory=dict)  # pattern name -> [view row positions]
    matched: list = field(default_factory=list)  # pattern names, in the order seen
    out_of_order: list = field(default_factory=list)
    start: float = math.nan
    end: float = math.nan
    first_frame: float = math.nan
    last_frame: float = math.nan
    uids: list = field(default_factory=list)
    pattern_uids: dict = field(default_factory=dict)  # pattern name -> [flow uids]
    status: str = "detected"
    explained_by: str = ""
    strict: bool = False
    unobservable: frozenset = frozenset()  # patterns the capture cannot show

    @property
    def expected(self) -> list:
        return [p for p in self.signature.patterns if p.name not in self.unobservable]

    @property
    def total(self) -> int:
        return len(self.expected)

    @property
    def counted(self) -> list:
        """The matched patterns that count towards the score."""
        if self.strict:
            return [m for m in self.matched if m not in self.out_of_order]
        return self.matched

    @property
    def score(self) -> float:
        return len(self.counted) / self.total if self.total else 0.0

    @property
    def missing(self) -> list:
        counted = set(self.counted)
        return [p.name for p in self.expected if p.name not in counted]

    def rank(self) -> tuple:
        """More complete first, then more evidence, then the more specific signature."""
        return (round(self.score, 9), len(self.counted), self.total, -len(self.out_of_order))


def match_flows(view: pd.DataFrame, patterns: list[Pattern]) -> np.ndarray:
    """For each flow of the view, the index of the pattern it matches, or -1. Where
    several would match, the one naming the remote most precisely wins (specific remotes
    before classes, then the signature's order). Each pattern is tried at once on the
    flows of its key and remote party: a signature of thousands of patterns to as many
    addresses (a scan) costs thousands of lookups, not patterns times flows. A pattern by
    class takes the flows of its class; by name or address, those of that remote, and a
    domain's also the flows to the addresses it had in training whose remote is no name
    (its DNS answer came before the capture started)."""
    result = np.full(len(view), -1, dtype=np.int64)
    if view.empty or not patterns:
        return result
    keyed = view[KEY_COLUMNS].astype(object)
    keyed["server_port"] = pd.to_numeric(keyed["server_port"]).astype(np.int64)
    remotes = {c: view[c].astype(str) for c in ("remote", "remote_general", "remote_kind")}
    remotes["remote_h"] = view["remote_h"].astype(str)
    rows_of = {
        column: keyed.assign(_remote=remotes[column].to_numpy())
        .groupby([*KEY_COLUMNS, "_remote"], sort=False, dropna=False)
        .indices
        for column in ("remote", "remote_general", "remote_h")
    }
    not_domain = (remotes["remote_kind"] != "domain").to_numpy()
    counts = {
        m: pd.to_numeric(view[m], errors="coerce").to_numpy(dtype=float) for m in COUNT_METRICS
    }
    sizes = sig.message_matrix(view)
    keepalive = (
        pd.to_numeric(view["keepalive"], errors="coerce").fillna(0).to_numpy() > 0
        if "keepalive" in view
        else np.zeros(len(view), dtype=bool)
    )
    empty = np.array([], dtype=np.int64)
    for number in sorted(range(len(patterns)), key=lambda n: (patterns[n].general, n)):
        pattern = patterns[number]
        if pattern.general:
            rows = rows_of["remote_general"].get((*pattern.key, pattern.remote), empty)
        else:
            rows = [rows_of["remote"].get((*pattern.key, pattern.remote), empty)]
            if pattern.remote_kind == "domain":  # a domain the capture never resolved
                for address in pattern.remote_addrs:
                    found = rows_of["remote_h"].get((*pattern.key, address), empty)
                    rows.append(found[not_domain[found]])
            rows = np.unique(np.concatenate(rows))
        rows = rows[result[rows] < 0]  # (a more precise pattern took them)
        if not pattern.periodic:
            rows = rows[~keepalive[rows]]  # a connection's timer, not the event
        if not len(rows):
            continue
        fits = pattern.counts_fit({m: counts[m][rows] for m in COUNT_METRICS})
        fits &= sig.profile_matches(sizes[rows], pattern.profile, pattern.slack)
        result[rows[fits]] = number
    return result


def pattern_matches(flows: pd.DataFrame, signatures: list[EventSignature]) -> pd.DataFrame:
    """Which flows match which pattern, event and background alike, by the rule the
    detector counts them with (match_flows): each matched flow's position in `flows`, and
    the pattern's name, order and role. (The traffic report draws these.)"""
    found = []
    numbered = flows.assign(_row=np.arange(len(flows)))
    for signature in signatures:
        view = device_view(numbered, "", signature.device_ip)
        patterns = signature.patterns + signature.background
        if view.empty or not patterns:
            continue
        matches = match_flows(view, patterns)
        hit = np.flatnonzero(matches >= 0)
        chosen = [patterns[n] for n in matches[hit]]
        found.append(
            pd.DataFrame(
                {
                    "row": view["_row"].to_numpy()[hit].astype(np.int64),
                    "pattern": [p.name for p in chosen],
                    "order": [p.order for p in chosen],
                    "role": [p.role for p in chosen],
                }
            )
        )
    if not found:
        return pd.DataFrame({"row": [], "pattern": [], "order": [], "role": []})
    return pd.concat(found, ignore_index=True).sort_values("row", kind="stable")


def find_occurrences(
    view: pd.DataFrame, signature: EventSignature, capture: str, options: DetectOptions
) -> list[Occurrence]:
    """Group the flows matching the signature's event patterns into occurrences: an
    occurrence spans at most the window from its first flow, and the pattern it opened
    with, seen more often than in any training recording, opens the next one (the event
    starting again: with compressed timestamps two events can fall in one window; other
    patterns may repeat, as retries do)."""
    if view.empty or not signature.patterns:
        return []
    matches = resolve_joined(view, match_flows(view, signature.patterns))
    rows = np.flatnonzero(matches >= 0)
    if not len(rows):
        return []
    order = np.lexsort(
        (view["first_frame"].to_numpy(dtype=float)[rows], view["ts"].to_numpy(dtype=float)[rows])
    )
    rows = rows[order]
    window = signature.window(options.window)
    ts = view["ts"].to_numpy(dtype=float)
    # A device with cached addresses sends no DNS query: where the capture shows none at
    # all, the DNS patterns are not expected (the other patterns still name their remote
    # by the addresses learned in training).
    no_dns = (
        not (view["dns_qry_name"].astype(str) != "").any()
        and signature.device_ip not in options.dns_devices
    )
    unobservable = frozenset(p.name for p in signature.patterns if p.is_dns and no_dns)
    occurrences, current, anchor, opened = [], None, None, 0.0
    for row in rows:
        pattern = signature.patterns[matches[row]]
        # A burst inside an open connection is one message exchange: the event again.
        restart = pattern is anchor and (
            pattern.unit == "burst" or len(current.flows[pattern.name]) >= pattern.flows_max
        )
        if current is None or ts[row] - opened > window or restart:
            current = Occurrence(
                capture, signature, strict=options.strict_order, unobservable=unobservable
            )
            occurrences.append(current)
            anchor, opened = pattern, ts[row]
        current.flows.setdefault(pattern.name, []).append(row)
    for occurrence in occurrences:
        _describe(occurrence, view)
    return occurrences


def _describe(occurrence: Occurrence, view: pd.DataFrame) -> None:
    rows = [r for rs in occurrence.flows.values() for r in rs]
    part = view.iloc[sorted(rows)]
    occurrence.start = float(part["ts"].min())
    occurrence.end = float(part["end"].max())
    occurrence.first_frame = float(part["first_frame"].min())
    occurrence.last_frame = float(part["last_frame"].max())
    occurrence.uids = part.sort_values(["ts", "first_frame"])["uid"].astype(str).tolist()
    uids = view["uid"].astype(str).to_numpy()
    occurrence.pattern_uids = {name: [uids[r] for r in rs] for name, rs in occurrence.flows.items()}
    first_seen = sorted(
        occurrence.flows,
        key=lambda n: (
            view["ts"].iat[occurrence.flows[n][0]],
            view["first_frame"].iat[occurrence.flows[n][0]],
        ),
    )
    occurrence.matched = first_seen
    positions = {p.name: p.order for p in occurrence.signature.patterns}
    occurrence.out_of_order = out_of_order(first_seen, positions)


def out_of_order(seen: list[str], positions: dict) -> list[str]:
    """The fewest patterns to leave out for the rest to appear in the signature's order
    (the complement of a longest increasing subsequence)."""
    sequence = [positions[name] for name in seen]
    tails, tail_index, previous = [], [], [-1] * len(sequence)
    for i, value in enumerate(sequence):
        k = bisect.bisect_left(tails, value)
        if k == len(tails):
            tails.append(value)
            tail_index.append(i)
        else:
            tails[k] = value
            tail_index[k] = i
        previous[i] = tail_index[k - 1] if k else -1
    keep, i = set(), tail_index[-1] if tail_index else -1
    while i >= 0:
        keep.add(i)
        i = previous[i]
    return [name for i, name in enumerate(seen) if i not in keep]


def resolve(occurrences: list[Occurrence]) -> None:
    """Among overlapping occurrences of one device's signatures, keep the best
    explanation. An occurrence is explained by an overlapping one that accounts for all
    its flows (each is a flow the other matched, or one whose fingerprint the other
    signature knows, as an event or a background pattern: it brings no evidence of its
    own) and accounts for more flows, or as many with a better rank (score, patterns)."""
    ranked = sorted(occurrences, key=lambda o: (len(o.uids), o.rank()), reverse=True)
    accepted: list[Occurrence] = []
    for occurrence in ranked:
        for better in accepted:
            if (
                better.signature.device_ip != occurrence.signature.device_ip
                or better.signature is occurrence.signature
            ):
                continue
            larger = len(better.uids) > len(occurrence.uids) or (
                len(better.uids) == len(occurrence.uids) and better.rank() > occurrence.rank()
            )
            if larger and _overlap(occurrence, better) and _explains(better, occurrence):
                occurrence.status = "explained"
                occurrence.explained_by = better.signature.event
                break
        else:
            accepted.append(occurrence)


def _overlap(a: Occurrence, b: Occurrence) -> bool:
    if set(a.uids) & set(b.uids):
        return True
    return a.start <= b.end and b.start <= a.end


def _explains(better: Occurrence, other: Occurrence) -> bool:
    claimed = set(better.uids)
    known = better.signature.fingerprints()
    patterns = {p.name: p for p in other.signature.patterns}
    for name in other.matched:
        pattern = patterns[name]
        if (pattern.key, pattern.remote, pattern.remote_kind) in known:
            continue
        if set(other.pattern_uids[name]) <= claimed:
            continue
        return False
    return True


def detect(
    flows: pd.DataFrame,
    capture: str,
    signatures: list[EventSignature],
    options: DetectOptions | None = None,
    timings: dict | None = None,
) -> list[Occurrence]:
    """Every occurrence scoring at least options.min_score, explained ones marked.
    timings: if given, seconds spent per signature label are added to it (the device's
    fingerprinted view counted for each signature that uses it: as if run alone)."""
    found = candidates(flows, capture, signatures, options, timings)
    return chosen([o for found_of in found for o in found_of], options)


def chosen(occurrences: list[Occurrence], options: DetectOptions | None = None) -> list:
    """Of every occurrence (candidates'), those scoring at least options.min_score,
    explained ones marked, in time order."""
    options = options or DetectOptions()
    found = [o for o in occurrences if o.score >= options.min_score - 1e-9]
    resolve(found)
    return sorted(found, key=lambda o: (o.start, o.signature.event))


def candidates(
    flows: pd.DataFrame,
    capture: str,
    signatures: list[EventSignature],
    options: DetectOptions | None = None,
    timings: dict | None = None,
) -> list[list[Occurrence]]:
    """Every occurrence of each signature whatever its score (find_occurrences), a list
    per signature; timings as detect's."""
    options = options or DetectOptions()
    views: dict[str, tuple[pd.DataFrame, float]] = {}
    found = []
    for signature in signatures:
        started = time.perf_counter()
        if signature.device_ip not in views:
            view = device_view(flows, capture, signature.device_ip)
            views[signature.device_ip] = (view, time.perf_counter() - started)
            started = time.perf_counter()
        view, view_seconds = views[signature.device_ip]
        found.append(find_occurrences(view, signature, capture, options))
        if timings is not None:
            timings[signature.label] = (
                timings.get(signature.label, 0.0) + view_seconds + time.perf_counter() - started
            )
    return found


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def detections_frame(occurrences: list[Occurrence]) -> pd.DataFrame:
    rows = []
    for o in occurrences:
        s = o.signature
        rows.append(
            {
                "capture": o.capture,
                "event": s.event,
                "device_name": s.device_name,
                "device_ip": s.device_ip,
                "start": round(o.start, 6),
                "end": round(o.end, 6),
                "start_utc": utc(o.start),
                "first_frame": o.first_frame,
                "last_frame": o.last_frame,
                "score": round(o.score, 4),
                "patterns_matched": len(o.counted),
                "patterns_total": o.total,
                "matched_patterns": ";".join(o.counted),
                "missing_patterns": ";".join(o.missing),
                "out_of_order": ";".join(o.out_of_order),
                "flows": ";".join(o.uids),
                "status": o.status,
                "explained_by": o.explained_by,
                "signature": s.source,
            }
        )
    if not rows:
        return csvio.empty_frame(DETECTIONS)
    return pd.DataFrame(rows, columns=DETECTIONS.names)


def summary_line(capture: str, occurrences: list[Occurrence]) -> str:
    detected = [o for o in occurrences if o.status == "detected"]
    explained = [o for o in occurrences if o.status != "detected"]
    if not detected:
        text = f"{capture}: no event detected"
    else:
        parts = [detection_words(o) for o in detected[:SUMMARY_DETECTIONS]]
        if len(detected) > SUMMARY_DETECTIONS:  # a long capture: the CSV has them all
            parts.append(f"and {len(detected) - SUMMARY_DETECTIONS} more (see the detections CSV)")
        text = f"{capture}: {len(detected)} detection(s): " + "; ".join(parts)
    if explained:
        text += "; explained by a better match: " + ", ".join(
            f"{o.signature.event} (by {o.explained_by})" for o in explained
        )
    return text


def detection_words(o: Occurrence) -> str:
    """An occurrence in a few words: event, time, frames, score."""
    return (
        f"{o.signature.event} at {utc(o.start)} (frames {_frames(o)}, score "
        f"{o.score:.2f}, {len(o.counted)}/{o.total} patterns)"
    )


def _frames(o: Occurrence) -> str:
    if o.first_frame != o.first_frame:
        return "?"
    return f"{int(o.first_frame)}-{int(o.last_frame)}"
