"""Flows of several recordings of one event -> the patterns that recur: the signature.

A flow's fingerprint keeps what stays the same when the event is repeated: the device
side, the remote party (domain name, else address, else its class when the address
changes), the L4 protocol, the fixed server port and the application fields. A pattern
is a fingerprint present in at least `support` of the recordings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio, fields
from .errors import InputError, ToolError
from .fields import FINGERPRINT_FIELDS
from .flows import bursts_beside
from .parties import remote_party, server_ports, unspecified_device_sides
from .schema import (
    BURSTS,
    FLOWS,
    RANGE_METRICS,
    SIGNATURE,
    SIGNATURE_V2_DEFAULTS,
    SIGNATURE_V3_DEFAULTS,
    SIGNATURE_VERSION,
)
from .windows import WindowOptions

FINGERPRINT = [
    "unit",
    "device_side",
    "proto",
    "remote",
    "server_port",
    "server_side",
    *FINGERPRINT_FIELDS,
]
OPTIONAL = ["remote_h", "handshake", "device_side"]  # read where the flows CSV has them
# A unit is what a pattern is learned from and matched to: a flow (the flows CSV), or a
# burst inside a connection that was already open (the bursts CSV's rows with opens 0: a
# lock's command inside its days-long link to the cloud), read as a flow of its own.
UNIT_COLUMNS = ["unit", "keepalive"]
REQUIRED = [
    "uid",
    "ts",
    "duration",
    "proto",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "orig_pkts",
    "resp_pkts",
    "orig_frame_bytes",
    "resp_frame_bytes",
    "orig_mac",
    "resp_mac",
    "remote_name",
    "remote_class",
    "orig_size_min",
    "orig_size_max",
    "resp_size_min",
    "resp_size_max",
    "first_payload_sizes",
    *FINGERPRINT_FIELDS,
]
# Packet profiles (PingPong's insight: request/reply sizes tell apart events that share
# every flow). A profile is the packet sizes that recur among the first PROFILE_PACKETS
# payload packets of a pattern's flows; sizes closer than PROFILE_GAP bytes are one item
# (a brightness value's digits vary a request by a few bytes), and a flow carries an item
# when one of its sizes lies in the item's range widened by PROFILE_SLACK bytes.
PROFILE_PACKETS = 6  # items are learned from the first 6 payload packets ...
PROFILE_WINDOW = 10  # ... and found among the first 10 (a packet may come a little later)
PROFILE_GAP = 16
PROFILE_SLACK = 4
KEEP_ALIVE_PACKETS = 2
MIN_VARIANT = 2  # recordings a route of the event needs to be learned on its own
CLASS_NAMES = {"gateway", "broadcast"}  # always written as their class: addresses vary
GENERALISABLE = {"local", "external", "multicast"}


@dataclass
class Recording:
    name: str
    flows: pd.DataFrame
    group: str = ""  # a baseline's kind of recording (quiet time, another event...)


@dataclass
class Signature:
    device_name: str
    device_ip: str
    device_mac: str
    event: str
    recordings: list[str]
    support: float
    patterns: pd.DataFrame  # one row per pattern, SIGNATURE columns
    noise: pd.DataFrame  # fingerprints below the support threshold
    baseline_given: bool = False
    warnings: list[str] = field(default_factory=list)
    variants: list[list[str]] = field(default_factory=list)  # recordings of each route

    @property
    def event_patterns(self) -> pd.DataFrame:
        return self.patterns[self.patterns["role"] == "event"]

    @property
    def background_patterns(self) -> pd.DataFrame:
        return self.patterns[self.patterns["role"] != "event"]


def read_recordings(paths: list[Path], bursts: bool = False) -> list[Recording]:
    """One recording per flows CSV, named after its file (after its path where two files
    share a name: each must count as a recording of its own). With `bursts`, each also
    holds the bursts inside connections already open of the bursts CSV beside it
    (<name>.bursts.csv), where there is one."""
    resolved = [Path(p).resolve() for p in paths]
    for number, path in enumerate(resolved):
        if path in resolved[:number]:
            raise InputError(paths[number], "given twice: each flows CSV is one recording")
    names = [_recording_name(p) for p in paths]
    names = [str(p) if names.count(n) > 1 else n for n, p in zip(names, paths)]
    recordings = []
    for path, name in zip(paths, names):
        recordings.append(Recording(name, read_units(Path(path), bursts)))
    return recordings


def read_units(flows_csv: Path, bursts: bool = False, extra: tuple = ()) -> pd.DataFrame:
    """A flows CSV's flows (the columns a fingerprint needs, named when missing, and the
    `extra` ones where it has them) and, with `bursts`, the bursts inside connections
    already open of the bursts CSV beside it."""
    columns = list(dict.fromkeys(REQUIRED + OPTIONAL + list(extra)))
    flows = csvio.read_table(flows_csv, FLOWS, required=REQUIRED, columns=columns)
    beside = bursts_beside(flows_csv)
    if not bursts or not beside.is_file():
        return flows
    wanted = [c for c in BURSTS.names if c in columns + UNIT_COLUMNS + ["opens", "uid"]]
    return with_bursts(flows, csvio.read_table(beside, BURSTS, columns=wanted))


def with_bursts(flows: pd.DataFrame, bursts: pd.DataFrame) -> pd.DataFrame:
    """Flows and the bursts inside connections already open (opens 0), as units of one
    table: unit 'flow' or 'burst', keepalive 1 for a periodic burst."""
    units = pd.concat(
        [flows.assign(unit="flow", keepalive=0), burst_units(bursts)], ignore_index=True
    )
    return units.sort_values("ts", kind="stable").reset_index(drop=True)


def burst_units(bursts: pd.DataFrame) -> pd.DataFrame:
    """The bursts inside connections already open (opens 0) as units: unit 'burst'."""
    inner = bursts[pd.to_numeric(bursts["opens"], errors="coerce").fillna(1) == 0]
    inner = inner.drop(columns=["opens"]).assign(unit="burst", handshake=0.0)
    keepalive = inner["keepalive"] if "keepalive" in inner else pd.Series(0, index=inner.index)
    inner["keepalive"] = pd.to_numeric(keepalive, errors="coerce").fillna(0).astype(int)
    return inner


def without_keepalives(recording: Recording) -> Recording:
    """The recording less its keep-alive bursts (background: neither the event nor
    evidence against it)."""
    units = recording.flows
    if "keepalive" not in units:
        return recording
    keep = ~((units["unit"] == "burst") & (units["keepalive"] == 1)).to_numpy()
    return Recording(recording.name, units[keep].reset_index(drop=True), recording.group)


def _some_names(recordings: list[Recording], shown: int = 4) -> str:
    names = [r.name for r in recordings]
    more = f" and {len(names) - shown} more" if len(names) > shown + 1 else ""
    return ", ".join(names[:shown] if more else names) + more


def _recording_name(path: Path) -> str:
    name = Path(path).name
    for suffix in (".flows.csv", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def device_flows(recording: Recording, device_ip: str, device_mac: str | None) -> pd.DataFrame:
    """The recording's flows that involve the device, with its side (orig/resp)."""
    flows = recording.flows
    orig = flows["orig_h"] == device_ip
    resp = flows["resp_h"] == device_ip
    unaddressed_orig, unaddressed_resp = unspecified_device_sides(flows, device_ip)
    orig |= unaddressed_orig & ~resp
    resp |= unaddressed_resp & ~orig
    if device_mac:
        orig |= (flows["orig_mac"].str.lower() == device_mac) & ~resp
        resp |= (
            (flows["resp_mac"].str.lower() == device_mac)
            & ~orig
            & (flows["resp_h"] != flows["orig_h"])
        )
    involved = (orig | resp).to_numpy()
    # A shallow frame when every flow is the device's: the columns are copied once, by
    # the caller's concat (a hundred recordings of 10,000 flows are a GB of text).
    mine = flows.copy(deep=False) if involved.all() else flows[involved].copy()
    mine["device_side"] = np.where(orig.to_numpy()[involved], "orig", "resp")
    mine["recording"] = recording.name
    if "unit" not in mine:  # flows alone
        mine["unit"], mine["keepalive"] = "flow", 0
    return mine


def fingerprints(flows: pd.DataFrame) -> pd.DataFrame:
    """Add the fingerprint columns (specific remote, and the generalised one)."""
    f = flows
    device_is_orig = (f["device_side"] == "orig").to_numpy()
    if "remote_h" in f:  # (optional column)
        remote_h, name, klass = remote_party(
            f["orig_h"],
            f["resp_h"],
            device_is_orig,
            f["remote_h"],
            f["remote_name"].fillna(""),
            f["remote_class"].fillna(""),
        )
        f["remote_name"], f["remote_class"] = name, klass
    else:
        remote_h = np.where(device_is_orig, f["resp_h"], f["orig_h"])
    f["remote_h"] = remote_h
    name = f["remote_name"].fillna("")
    klass = f["remote_class"].fillna("")
    use_class = klass.isin(CLASS_NAMES)
    f["remote"] = np.where(name != "", name, np.where(use_class, klass, f["remote_h"]))
    f["remote_kind"] = np.where(name != "", "domain", np.where(use_class, "class", "address"))
    f["remote_general"] = np.where((name == "") & klass.isin(GENERALISABLE), klass, f["remote"])
    port, server_is_orig = server_ports(f["orig_p"], f["resp_p"])
    f["server_port"] = port
    f["server_side"] = np.where(server_is_orig == device_is_orig, "device", "remote")
    f.loc[f["server_port"].isna(), "server_side"] = ""
    # The URI without its query string: queries carry tokens and times that change.
    f["http_request_uri"] = _map_distinct(
        f["http_request_uri"].fillna(""), lambda u: re.sub(r"\?[^;]*", "", u)
    )
    for name in FINGERPRINT_FIELDS:  # a set of values, in one spelling: "reply;request"
        f[name] = _canonical_sets(f[name].fillna("").astype(str))
    f["server_port"] = pd.to_numeric(f["server_port"], errors="coerce").fillna(-1).astype(int)
    return f


def canonical_set(value: str) -> str:
    """A set-valued field in one spelling: 'request;reply' -> 'reply;request'."""
    return ";".join(sorted(set(str(value).split(";")) - {""}))


def _canonical_sets(values: pd.Series) -> pd.Series:
    return _map_distinct(values, canonical_set)


def _map_distinct(values: pd.Series, function) -> pd.Series:
    """function applied once per distinct value (not to "", left as it is): a million
    flows hold a few thousand, and most of these fields are empty."""
    array = values.to_numpy(dtype=object)
    filled = np.flatnonzero(array != "")
    codes, uniques = pd.factorize(array[filled])
    result = array.copy()
    if len(uniques):
        result[filled] = np.array([function(u) for u in uniques], dtype=object)[codes]
    return pd.Series(result, index=values.index, dtype=object)


@dataclass(frozen=True)
class LearnOptions:
    """How a signature is learned: signature-extractor's options, in one place.

    support: the share of the event's recordings a pattern must recur in (1.0: all).
    background_share: a pattern is background when more than this share of the baseline's
        recordings (and at least one) hold it.
    flow_settings: how the flows were built (idle_timeout, max_duration, burst_gap:
        seconds), kept in every pattern so that detection builds them alike.
    windows: how a long capture is cut around listed event times (--events)."""

    support: float = 1.0
    background_share: float = 0.0
    flow_settings: dict = field(default_factory=dict)
    windows: WindowOptions = field(default_factory=WindowOptions)


@dataclass(frozen=True)
class _Task:
    """What one learning is about: the device, the event, the baseline and the options."""

    device_name: str
    device_ip: str
    device_mac: str | None
    event: str
    baseline: list[Recording] | None
    options: LearnOptions


def extract(
    recordings: list[Recording],
    device_name: str,
    device_ip: str,
    device_mac: str | None = None,
    *,
    event: str = "event",
    baseline: list[Recording] | None = None,
    options: LearnOptions | None = None,
) -> Signature:
    """The signature of an event from its recordings (and, to tell background, a baseline:
    a pattern is background when more than options.background_share of the baseline
    recordings, and at least one, hold it).
    The event may take several routes (the app reaches the device directly in some
    recordings, through the cloud in others). With a baseline, where nothing recurs in
    enough recordings that the baseline lacks, the recordings are split by the distinctive
    packets they share (_route_variants); without one, only where a fingerprint and a
    packet size split them the same way (_complementary_routes). Each route gets a
    signature of its own, a variant of the same event."""
    options = options or LearnOptions()
    task = _Task(device_name, device_ip, device_mac, event, baseline, options)
    learned = _extract_routes(recordings, task)
    learned.patterns = learned.patterns.assign(**_settings(options.flow_settings))
    return learned


def _settings(settings: dict | None) -> dict:
    chosen = dict.fromkeys(("idle_timeout", "max_duration", "burst_gap"), np.nan)
    chosen.update(settings or {})
    return chosen


def _extract_routes(recordings: list[Recording], task: _Task) -> Signature:
    learned, flows = _extract_once(recordings, task)
    routes, baseline = [], task.baseline
    if len(recordings) < 2 * MIN_VARIANT:
        pass
    elif baseline and learned.event_patterns.empty:
        routes = _route_variants(flows, recordings, task.device_ip, task.device_mac, baseline)
    elif not baseline and _partly_shared(learned.noise, len(recordings)):
        routes = _complementary_routes(flows, recordings)
    del flows
    if len(routes) > 1:
        return _with_variants(learned, routes, recordings, task)
    return learned


def _extract_once(recordings: list[Recording], task: _Task) -> tuple[Signature, pd.DataFrame]:
    device_ip, device_mac, baseline = task.device_ip, task.device_mac, task.baseline
    support = task.options.support
    warnings = []
    if len(recordings) == 1:
        warnings.append(
            "only one recording: a signature from one recording cannot tell "
            "stable traffic from accidental traffic; record the event several times"
        )
    per_recording = [device_flows(r, device_ip, device_mac) for r in recordings]
    absent = [r.name for r, f in zip(recordings, per_recording) if f.empty]
    if len(absent) == len(recordings):
        raise ToolError(
            f"device IP {device_ip} never appears in the flows of "
            + ", ".join(r.name for r in recordings)
        )
    if absent:
        warnings.append(f"device IP {device_ip} does not appear in: {', '.join(absent)}")
    flows = pd.concat(per_recording, ignore_index=True)
    del per_recording  # the concat holds the only copy needed from here
    flows = fingerprints(flows)
    mac = device_mac or _device_mac(flows)
    if not mac:
        warnings.append(
            "no --device-mac given and no MAC seen sending from "
            f"{device_ip}: profile.yaml needs device-info.mac"
        )
    n = len(recordings)
    needed = max(1, math.ceil(support * n - 1e-9))
    flows["key"] = _assign_keys(flows, needed)
    keys, profiles = profile_patterns(
        flows["key"].to_numpy(),
        _codes(flows["recording"]),
        payload_matrix(flows["first_payload_sizes"]),
        needed,
    )
    flows["key"] = keys
    counted = flows.groupby("key")["recording"].nunique()
    keep = counted[counted >= needed].index
    in_pattern = flows["key"].isin(keep)

    background_keys = set()
    if baseline:
        base = [device_flows(r, device_ip, device_mac).assign(group=r.group) for r in baseline]
        base = (
            fingerprints(pd.concat(base, ignore_index=True)) if any(len(b) for b in base) else None
        )
        if base is None:
            warnings.append(
                f"device IP {device_ip} does not appear in the baseline "
                f"({_some_names(baseline)}): nothing is background"
            )
        if base is not None:
            background_keys = _background_keys(
                flows[in_pattern],
                profiles,
                base,
                _needed_in_base(baseline, task.options.background_share),
            )
    patterns = _summarise(
        flows[in_pattern],
        n,
        task.device_name,
        device_ip,
        task.event,
        background_keys,
        baseline is not None,
        profiles,
    )
    noise = _noise(flows.loc[~in_pattern, [*FINGERPRINT, "key", "recording"]], n)
    learned = Signature(
        task.device_name,
        device_ip,
        mac or "",
        task.event,
        [r.name for r in recordings],
        support,
        patterns,
        noise,
        baseline is not None,
        warnings,
    )
    return learned, flows


def _item_table(flows: pd.DataFrame, needed: int = MIN_VARIANT) -> pd.DataFrame:
    """The packet items of the fingerprinted flows that recur in `needed` recordings:
    (row, item, size, recording)."""
    labels = pd.factorize(flows["specific_key"])[0]
    recording = _codes(flows["recording"])
    sizes = payload_matrix(flows["first_payload_sizes"])
    rows, values, _, items = _recurring_items(
        labels, _support(labels, recording), recording, sizes, needed
    )
    recording_names = flows["recording"].to_numpy()[rows]
    return pd.DataFrame({"row": rows, "item": items, "size": values, "recording": recording_names})


def _route_variants(
    flows: pd.DataFrame,
    recordings: list[Recording],
    device_ip: str,
    device_mac: str | None,
    baseline: list[Recording],
) -> list[list[str]]:
    """Recordings grouped by route, with a baseline. A distinctive item is a packet size that
    recurs in a fingerprint's flows in at least MIN_VARIANT recordings and that no baseline
    flow of the same fingerprint carries (the bulb's 345-byte colour request, the cloud's
    812-byte command). Greedily, the item shared by the most recordings not yet grouped
    makes a route of those recordings."""
    base = [device_flows(r, device_ip, device_mac) for r in baseline]
    if not any(len(b) for b in base):
        return []
    base = fingerprints(pd.concat(base, ignore_index=True))
    table = _item_table(flows)
    base_sizes = payload_matrix(base["first_payload_sizes"])
    rows_of = {False: _rows_by(base, FINGERPRINT), True: _rows_by(base, _general_columns())}
    shared_by = {}
    for item, part in table.groupby("item"):
        first = flows.iloc[int(part["row"].iat[0])]  # (as _background_keys looks it up)
        in_base = rows_of[bool(first["generalised"])].get(tuple(first[FINGERPRINT]))
        span = ((part["size"].min(), part["size"].max()),)
        if in_base is None or not profile_matches(base_sizes[in_base], span).any():
            shared_by[item] = frozenset(part["recording"])
    routes, left = [], frozenset(r.name for r in recordings)
    while shared_by:
        best = max(shared_by, key=lambda i: (len(shared_by[i] & left), -i))
        route = shared_by[best] & left
        if len(route) < MIN_VARIANT:
            break
        routes.append([r.name for r in recordings if r.name in route])
        left -= route
    return routes


def _partly_shared(noise: pd.DataFrame, n: int) -> bool:
    """Whether a fingerprint is in some recordings but not all, enough for two routes: the
    cheap test before looking for routes without a baseline."""
    seen = noise["recordings_seen"] if len(noise) else pd.Series(dtype=int)
    return bool(((seen >= MIN_VARIANT) & (seen <= n - MIN_VARIANT)).any())


def _complementary_routes(flows: pd.DataFrame, recordings: list[Recording]) -> list[list[str]]:
    """Two routes, without a baseline, only where the recordings say so twice over: a
    fingerprint that is in every recording of one part and in none of the other (the
    phone's HTTP request straight to the bulb), and a packet size that is in every
    recording of the other part and in none of the first (the cloud's command to the
    bulb). Variation that is not a route (a DNS answer of another size) has no such pair,
    and each part holds at least a quarter of the recordings."""
    n = len(recordings)
    smallest = max(MIN_VARIANT, math.ceil(n / 4))  # a route, not a coincidence
    everyone = frozenset(r.name for r in recordings)
    parts = _recording_sets(flows["specific_key"], flows["recording"], smallest, n - smallest)
    if not parts:
        return []
    table = _item_table(flows, smallest)
    in_items = set(_recording_sets(table["item"], table["recording"], smallest, n - smallest))
    # (largest first; among equals, by name: a set's order changes from run to run)
    for part in sorted(set(parts), key=lambda p: (-len(p), sorted(p))):
        rest = everyone - part
        if rest in in_items:
            return [[r.name for r in recordings if r.name in group] for group in (part, rest)]
    return []


def _recording_sets(groups: pd.Series, recordings: pd.Series, low: int, high: int) -> list:
    """The recordings of each group seen in low to high recordings (counted with numpy:
    most of a busy network's groups are in one recording)."""
    codes = pd.factorize(groups)[0]
    support = _support(codes, _codes(recordings))
    wanted = np.isin(codes, np.flatnonzero((support >= low) & (support <= high)))
    if not wanted.any():
        return []
    names = pd.Series(recordings.to_numpy()[wanted])
    return list(names.groupby(codes[wanted]).agg(frozenset))


def _with_variants(
    learned: Signature, routes: list[list[str]], recordings: list[Recording], task: _Task
) -> Signature:
    """One signature whose patterns are those of each route's own signature, numbered by
    route in the `variant` column; routes without an event pattern of their own are left
    out."""
    parts, kept = [], []
    for names in routes:
        route, _ = _extract_once([r for r in recordings if r.name in names], task)
        if route.event_patterns.empty:
            continue
        parts.append(route.patterns.assign(variant=len(parts) + 1))
        kept.append(names)
    if len(parts) < 2:
        return learned
    patterns = pd.concat(parts, ignore_index=True)
    patterns["pattern"] = policy_names(patterns)
    left_out = len(recordings) - sum(map(len, kept))
    note = (
        f"the event took {len(kept)} routes (recordings that share distinctive flows or "
        "packets the others lack), each learned as a variant of its own ("
        + "; ".join(f"variant {n}: {len(names)} recordings" for n, names in enumerate(kept, 1))
        + (f"; {left_out} recording(s) fit none" if left_out else "")
        + ")"
    )
    return Signature(
        learned.device_name,
        learned.device_ip,
        learned.device_mac,
        task.event,
        learned.recordings,
        task.options.support,
        patterns.reindex(columns=SIGNATURE.names),
        learned.noise,
        task.baseline is not None,
        learned.warnings + [note],
        kept,
    )


def _needed_in_base(baseline: list[Recording], share: float) -> dict[str, int]:
    """Per group of baseline recordings: how many must hold a pattern for it to be
    background (more than `share` of the group, and at least one)."""
    sizes = pd.Series([r.group for r in baseline]).value_counts()
    return {group: math.floor(share * size) + 1 for group, size in sizes.items()}


def _background_keys(
    pattern_flows: pd.DataFrame, profiles: dict, base: pd.DataFrame, needed: dict[str, int]
) -> set:
    """The patterns the baseline also has (in needed[group] recordings of one of its
    groups): a baseline flow with the same fingerprint, at the same level of detail (a
    pattern by class matches a baseline flow by class), whose packets fit the pattern's
    profile. An event that shares all its flows with another event keeps the patterns
    whose packets differ."""
    base_sizes = payload_matrix(base["first_payload_sizes"])
    rows_of = {False: _rows_by(base, FINGERPRINT), True: _rows_by(base, _general_columns())}
    found = set()
    firsts = pattern_flows.groupby("key").first()
    for key, row in firsts.iterrows():
        rows = rows_of[bool(row["generalised"])].get(tuple(row[FINGERPRINT]))
        if rows is None:
            continue
        fits = rows[profile_matches(base_sizes[rows], profiles.get(key, ()))]
        holding = base.iloc[fits].groupby("group")["recording"].nunique()
        if (holding >= holding.index.map(needed)).any():
            found.add(key)
    return found


def _rows_by(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, np.ndarray]:
    return {
        key if isinstance(key, tuple) else (key,): rows
        for key, rows in frame.groupby(columns, sort=False).indices.items()
    }


def payload_matrix(sizes: pd.Series, width: int = PROFILE_WINDOW) -> np.ndarray:
    """first_payload_sizes -> a float matrix, one row per flow, the first `width` signed
    sizes (NaN where a flow has fewer, or where a cell is not a number). Parsed once per
    distinct cell."""
    codes, uniques = pd.factorize(sizes.fillna("").astype(str), use_na_sentinel=False)
    table = np.full((len(uniques) + 1, width), np.nan)
    for row, text in enumerate(uniques):
        for column, item in enumerate(text.split()[:width]):
            try:
                table[row, column] = float(item)
            except ValueError:
                break
    return table[codes]


def message_matrix(flows: pd.DataFrame, width: int = PROFILE_WINDOW) -> np.ndarray:
    """payload_matrix, and one more column per two neighbouring sizes: in a TCP flow, two
    payload packets in a row from one side may be one message cut in two segments (a request
    that is one frame in most recordings of an event can come as two in another one).
    Their sizes added, less one header (that side's smallest frame in the flow, a bare ACK),
    stand for the message; NaN elsewhere. What a learned profile is matched against, by the
    detector and the report; learning keeps the packets as they came."""
    sizes = payload_matrix(flows["first_payload_sizes"], width)
    if not {"proto", "orig_size_min", "resp_size_min"} <= set(flows.columns):
        return sizes  # a flows CSV without the sizes: the packets alone
    first, second = sizes[:, :-1], sizes[:, 1:]
    tcp = (flows["proto"] == "tcp").to_numpy()[:, None]
    orig_header = pd.to_numeric(flows["orig_size_min"], errors="coerce").to_numpy()[:, None]
    resp_header = pd.to_numeric(flows["resp_size_min"], errors="coerce").to_numpy()[:, None]
    with np.errstate(invalid="ignore"):
        one_side = tcp & (np.sign(first) == np.sign(second))
        header = np.where(first > 0, orig_header, -resp_header)
        messages = np.where(one_side, first + second - header, np.nan)
    return np.hstack([sizes, messages])


def profile_patterns(
    keys: np.ndarray, recordings: np.ndarray, sizes: np.ndarray, needed: int
) -> tuple[np.ndarray, dict]:
    """Fingerprint keys -> (keys of fingerprint and packet profile, {key: profile}).

    An item is a packet size that recurs: the sizes of a key's flows, cut where a gap wider
    than PROFILE_GAP bytes separates them, that appear in `needed` recordings. Each flow
    carries some of its key's items; the flows that carry the same items, where they recur,
    are a pattern whose profile is those items (patterns of one fingerprint with different
    packets are different patterns), and a flow that carries more joins the most specific
    such pattern it contains. A key without a recurring set of items stays one pattern,
    profiled by the items all its flows carry."""
    labels = pd.factorize(keys)[0]
    key_support = _support(labels, recordings)
    rows, values, positions, items = _recurring_items(
        labels, key_support, recordings, sizes, needed
    )
    ranges = (
        pd.DataFrame({"item": items, "low": values, "high": values, "at": positions})
        .groupby("item")
        .agg({"low": "min", "high": "max", "at": "median"})
    )
    carried = _carried_items(rows, items, len(labels))
    groups = _group_ids([labels, pd.factorize(carried)[0]])
    support = _support(groups, recordings)
    firsts = np.unique(groups, return_index=True)[1]  # each group's first flow
    target = np.arange(len(firsts))  # group -> the pattern it joins
    profiles = {}
    owners = labels[firsts]
    recurring_keys = np.flatnonzero(key_support >= needed)
    rare = ~np.isin(owners, recurring_keys)  # noise anyway: one group per key
    target[rare] = pd.Series(np.flatnonzero(rare)).groupby(owners[rare]).transform("first")
    for members in pd.Series(np.flatnonzero(~rare)).groupby(owners[~rare]):
        members = members[1].to_numpy()
        sets = {g: frozenset(carried[firsts[g]].split()) for g in members}
        stable = [g for g in members if support[g] >= needed]
        if not stable:  # one pattern: what all its flows carry
            target[members] = members[0]
            profiles[members[0]] = frozenset.intersection(*sets.values())
            continue
        profiles.update((g, sets[g]) for g in stable)
        for g in set(members) - set(stable):
            within = [h for h in stable if sets[h] <= sets[g]]
            if within:
                target[g] = max(within, key=lambda h: (len(sets[h]), -h))
    final = target[groups]
    profiles = {
        g: tuple(
            _item_range(ranges, i)
            for i in sorted(items_, key=lambda i: (ranges.at[int(i), "at"], int(i)))
        )
        for g, items_ in profiles.items()
    }
    return final, profiles


def _recurring_items(
    labels: np.ndarray,
    key_support: np.ndarray,
    recordings: np.ndarray,
    sizes: np.ndarray,
    needed: int,
) -> tuple[np.ndarray, ...]:
    """(flow row, size, position, item) of every size that belongs to an item recurring in
    `needed` recordings, sorted by item."""
    common = key_support[labels] >= needed  # the other keys are noise whatever they carry
    rows, positions = np.nonzero(~np.isnan(sizes[:, :PROFILE_PACKETS]) & common[:, None])
    values = sizes[rows, positions]
    items = _size_items(labels[rows], rows, values)
    order = np.argsort(items, kind="stable")
    rows, values, positions, items = rows[order], values[order], positions[order], items[order]
    recurring = _support(items, recordings[rows])[items] >= needed if len(items) else items > 0
    return tuple(a[recurring] for a in (rows, values, positions, items))


def _size_items(keys: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Item number of each (key, flow, size): a key's distinct sizes in order, one item
    until a gap wider than PROFILE_GAP, or two sizes one flow carries both of (two
    packets, not one packet whose size varies: the toggle's 265 and 281)."""
    if not len(values):
        return np.zeros(0, np.int64)
    table = pd.DataFrame({"key": keys, "row": rows, "size": values})
    own = table.drop_duplicates().sort_values(["row", "size"])
    same_flow = own["row"].to_numpy()[1:] == own["row"].to_numpy()[:-1]
    both = pd.DataFrame(
        {
            "key": own["key"].to_numpy()[:-1][same_flow],
            "size": own["size"].to_numpy()[:-1][same_flow],
            "next": own["size"].to_numpy()[1:][same_flow],
        }
    ).drop_duplicates()
    sizes = table[["key", "size"]].drop_duplicates().sort_values(["key", "size"])
    sizes["next"] = sizes["size"].shift(-1).where(sizes["key"].shift(-1) == sizes["key"])
    apart = sizes.merge(both.assign(together=True), on=["key", "size", "next"], how="left")
    cut_after = (
        (apart["next"] - apart["size"] > PROFILE_GAP)
        | apart["together"].eq(True)
        | apart["next"].isna()
    )
    apart["item"] = np.r_[0, np.cumsum(cut_after.to_numpy()[:-1])]
    return table.merge(apart[["key", "size", "item"]], on=["key", "size"], how="left")[
        "item"
    ].to_numpy()


def _carried_items(rows: np.ndarray, items: np.ndarray, n: int) -> np.ndarray:
    """Each flow's recurring items as text ('3 7'): one value per distinct set."""
    carried = np.full(n, "", dtype=object)
    if len(rows):
        pairs = np.unique(np.c_[rows, items], axis=0)
        starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
        text = pairs[:, 1].astype(str)
        bounds = np.r_[starts, len(pairs)]
        carried[pairs[starts, 0]] = [" ".join(text[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return carried


def _item_range(ranges: pd.DataFrame, item: str) -> tuple[float, float]:
    return float(ranges.at[int(item), "low"]), float(ranges.at[int(item), "high"])


def _support(groups: np.ndarray, recordings: np.ndarray) -> np.ndarray:
    """Recordings each group appears in."""
    if not len(groups):
        return np.zeros(0, np.int64)
    pairs = np.unique(_group_ids([groups, recordings]), return_index=True)[1]
    return np.bincount(groups[pairs], minlength=groups.max() + 1)


def profile_matches(sizes: np.ndarray, profile: tuple, slack: float = PROFILE_SLACK) -> np.ndarray:
    """Which rows of a payload_matrix carry every item of a learned profile (a size within
    the item's range, widened by `slack` bytes); every row fits an empty profile."""
    fits = np.ones(len(sizes), bool)
    for low, high in profile:
        with np.errstate(invalid="ignore"):
            fits &= ((sizes >= low - slack) & (sizes <= high + slack)).any(axis=1)
    return fits


# Burst patterns of long captures: a message's size varies a little with its content (a
# name, a time, a block cipher's padding: the lock's command is 459 to 507 bytes), so an
# item accepts sizes up to ACCEPT_SHARE of its own size beyond what was seen, but never
# past halfway to a size that the same fingerprint's bursts carry elsewhere in the capture
# (away from the event's listed times, keep-alives aside): what the device sends when
# nothing happens bounds what the event may be.
ACCEPT_SHARE = 0.1


def accepted_profiles(patterns: pd.DataFrame, elsewhere: pd.DataFrame) -> list[str]:
    """accepted_profile for each pattern: its burst event patterns' items widened (see
    ACCEPT_SHARE) against the fingerprinted units `elsewhere`; '' for the others."""
    accepted = []
    for row in patterns.itertuples(index=False):
        profile = parse_profile(row.packet_profile)
        if row.unit != "burst" or row.role != "event" or not profile:
            accepted.append("")
            continue
        same = elsewhere[_same_fingerprint(elsewhere, row)] if len(elsewhere) else elsewhere
        sizes = payload_matrix(same.get("first_payload_sizes", pd.Series(dtype=str))).ravel()
        sizes = sizes[~np.isnan(sizes)]
        accepted.append(profile_text(tuple(_widened(low, high, sizes) for low, high in profile)))
    return accepted


def keepalive_periods(patterns: pd.DataFrame, keepalives: pd.DataFrame) -> list[float]:
    """keepalive_period for each pattern: for a burst event pattern, the median period of
    the fingerprinted keep-alive bursts `keepalives` of its fingerprint whose largest
    frame each way lies in its range (a status report that looks like the event); NaN
    for the others, or where there is none."""
    periods = []
    for row in patterns.itertuples(index=False):
        if row.unit != "burst" or row.role != "event" or not len(keepalives):
            periods.append(math.nan)
            continue
        same = _same_fingerprint(keepalives, row)
        for side in ("orig", "resp"):
            sizes = keepalives[f"{side}_size_max"].to_numpy(float)
            low, high = getattr(row, f"{side}_size_max_min"), getattr(row, f"{side}_size_max_max")
            if low == low and high == high:
                same &= (sizes >= low) & (sizes <= high)
        period = keepalives["period"].to_numpy(float)[same]
        period = period[~np.isnan(period)]
        periods.append(round(float(np.median(period)), 3) if len(period) else math.nan)
    return periods


def _same_fingerprint(units: pd.DataFrame, pattern) -> np.ndarray:
    same = np.ones(len(units), dtype=bool)
    for column in FINGERPRINT:
        if column == "remote":
            continue
        value = getattr(pattern, column)
        if column == "server_port":
            value = -1 if value != value else int(value)
        same &= units[column].to_numpy() == ("" if value != value else value)
    addresses = set(str(pattern.remote_addrs or "").split(";")) - {""}
    remote = (
        (units["remote"] == pattern.remote)
        | (units["remote_general"] == pattern.remote)
        | units["remote_h"].isin(addresses)
    )
    return same & remote.to_numpy()


def _widened(low: float, high: float, sizes: np.ndarray) -> tuple[float, float]:
    sign = 1.0 if low > 0 else -1.0
    mine = sizes[np.sign(sizes) == sign]
    outside = mine[(mine < low - PROFILE_SLACK) | (mine > high + PROFILE_SLACK)]
    lo, hi = low - ACCEPT_SHARE * abs(low), high + ACCEPT_SHARE * abs(high)
    below, above = outside[outside < low], outside[outside > high]
    if len(below):
        lo = max(lo, (below.max() + low) / 2)
    if len(above):
        hi = min(hi, (above.min() + high) / 2)
    # (never across zero: a size's sign is its direction)
    return (max(lo, 1.0), hi) if sign > 0 else (lo, min(hi, -1.0))


def profile_text(profile: tuple) -> str:
    """((178, 182), (-395, -395)) -> '178..182 -395': the signature CSV's spelling."""
    return " ".join(f"{lo:.0f}" if lo == hi else f"{lo:.0f}..{hi:.0f}" for lo, hi in profile)


def parse_profile(text) -> tuple:
    """profile_text's inverse; '' (or a missing cell) is the empty profile."""
    if not isinstance(text, str) or not text.strip():
        return ()
    profile = []
    for item in text.split():
        low, _, high = item.partition("..")
        profile.append((float(low), float(high or low)))
    return tuple(profile)


def _general_columns() -> list[str]:
    return ["remote_general" if c == "remote" else c for c in FINGERPRINT]


def _assign_keys(flows: pd.DataFrame, needed: int) -> np.ndarray:
    """Fingerprint keys: the specific fingerprint where it recurs often enough, else the
    generalised one (a local or external peer by its class, for peers whose address
    changes between recordings, e.g. a cloud server without a DNS name)."""
    codes = {c: _codes(flows[c]) for c in {*FINGERPRINT, *_general_columns(), "recording"}}
    specific = _group_ids([codes[c] for c in FINGERPRINT])
    general = _group_ids([codes[c] for c in _general_columns()])
    pairs = np.unique(_group_ids([specific, codes["recording"]]), return_index=True)[1]
    support = np.bincount(specific[pairs], minlength=specific.max() + 1)[specific]
    stable = support >= needed
    flows["specific_key"] = specific  # (routes compare flows at this level)
    flows["generalised"] = ~stable
    flows["remote"] = np.where(stable, flows["remote"], flows["remote_general"])
    flows.loc[~stable, "remote_kind"] = np.where(
        flows.loc[~stable, "remote"] == flows.loc[~stable, "remote_h"], "address", "class"
    )
    return np.where(stable, specific, general + specific.max() + 1)


def _codes(values: pd.Series) -> np.ndarray:
    """pd.factorize's codes, hashing only the cells that are not "": most application
    fields of most flows are empty."""
    array = values.to_numpy()
    if array.dtype != object:
        return pd.factorize(array, use_na_sentinel=False)[0]
    filled = array != ""
    codes = np.zeros(len(array), np.int64)
    codes[filled] = pd.factorize(array[filled], use_na_sentinel=False)[0] + 1
    return codes


def _group_ids(codes: list[np.ndarray]) -> np.ndarray:
    """Row -> group number (in order of first appearance, as groupby's ngroup) for the
    combination of several factorized columns: one factorization per column, shared by
    the groupings that use it."""
    if not len(codes[0]):
        return codes[0]
    ids, span = codes[0], int(codes[0].max()) + 1
    for column in codes[1:]:
        size = int(column.max()) + 1
        if span * size >= 1 << 62:  # renumber densely before the product overflows
            ids = pd.factorize(ids)[0]
            span = int(ids.max()) + 1
        ids, span = ids * size + column, span * size
    return pd.factorize(ids)[0]


def _device_mac(flows: pd.DataFrame) -> str:
    macs = pd.concat(
        [
            flows.loc[flows["device_side"] == "orig", "orig_mac"],
            flows.loc[flows["device_side"] == "resp", "resp_mac"],
        ]
    )
    counts = macs.value_counts()  # checked once per distinct MAC
    counts.index = counts.index.str.lower()
    counts = counts.groupby(level=0).sum()
    counts = counts[counts.index.str.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", na=False)]
    return counts.sort_index().idxmax() if len(counts) else ""


def _summarise(
    flows: pd.DataFrame,
    n: int,
    device_name: str,
    device_ip: str,
    event: str,
    background_keys: set,
    baseline_given: bool,
    profiles: dict,
) -> pd.DataFrame:
    if flows.empty:
        return csvio.empty_frame(SIGNATURE)
    grouped = flows.groupby("key", sort=False)
    summary = grouped[FINGERPRINT + ["remote_kind"]].first()
    summary["remote_class"] = grouped["remote_class"].first()
    summary["recordings_seen"] = grouped["recording"].nunique()
    per_recording = flows.groupby(["key", "recording"]).agg(
        count=("ts", "size"), first=("ts", "min"), last=("ts", "max")
    )
    summary["flows_min"] = per_recording["count"].groupby("key").min()
    summary["flows_max"] = per_recording["count"].groupby("key").max()
    for metric in RANGE_METRICS:
        values = pd.to_numeric(flows[metric], errors="coerce")
        summary[f"{metric}_min"] = values.groupby(flows["key"]).min()
        summary[f"{metric}_max"] = values.groupby(flows["key"]).max()
    summary["remote_addrs"] = grouped["remote_h"].agg(lambda a: ";".join(sorted(set(a))))
    summary["packet_profile"] = [profile_text(profiles.get(key, ())) for key in summary.index]
    keepalive = pd.to_numeric(flows["keepalive"], errors="coerce").fillna(0)
    summary["periodic"] = (keepalive.groupby(flows["key"]).mean() >= 0.5).astype(int)
    summary["accepted_profile"] = ""
    summary["role"] = "event"
    summary.loc[summary.index.isin(background_keys), "role"] = "background"
    if not baseline_given:
        inferred = (
            _repeating(per_recording, summary)
            | _keep_alives(flows, summary)
            | _already_open(flows, summary)
        )
        summary.loc[inferred, "role"] = "background (inferred)"
    # Event order: median start relative to the first event-pattern flow of each recording.
    event_keys = summary.index[summary["role"] == "event"]
    starts = per_recording["first"].reset_index()
    reference = starts[starts["key"].isin(event_keys)].groupby("recording")["first"].min()
    if reference.empty:
        reference = starts.groupby("recording")["first"].min()
    starts["offset"] = starts["first"] - starts["recording"].map(reference)
    summary["start_offset_median"] = starts.groupby("key")["offset"].median().round(6)
    summary = summary.reset_index(drop=True)

    def events_first(column):
        return column.map({"event": 0}).fillna(1) if column.name == "role" else column

    summary = summary.sort_values(
        ["role", "start_offset_median"], key=events_first, kind="stable"
    ).reset_index(drop=True)
    summary["order"] = np.arange(1, len(summary) + 1)
    summary["recordings_total"] = n
    summary["signature_version"] = SIGNATURE_VERSION
    summary["variant"] = 1
    summary["event"] = event
    summary["device_name"] = device_name
    summary["device_ip"] = device_ip
    summary["pattern"] = policy_names(summary)
    summary["server_port"] = summary["server_port"].where(summary["server_port"] >= 0)
    return summary.reindex(columns=SIGNATURE.names)


def _keep_alives(flows: pd.DataFrame, summary: pd.DataFrame) -> np.ndarray:
    """Without a baseline, a TCP fingerprint whose flows never carry payload and hold at
    most KEEP_ALIVE_PACKETS packets each way is taken for background: the keep-alive of a
    connection opened before the recording, which says nothing about the event (a
    connection the event opens has its handshake, more packets)."""
    quiet = (
        (flows["first_payload_sizes"].fillna("") == "")
        & (flows["proto"] == "tcp")
        & (pd.to_numeric(flows["orig_pkts"], errors="coerce") <= KEEP_ALIVE_PACKETS)
        & (pd.to_numeric(flows["resp_pkts"], errors="coerce") <= KEEP_ALIVE_PACKETS)
    )
    keep_alive = quiet.groupby(flows["key"]).all()
    return summary.index.isin(keep_alive[keep_alive].index)


def _already_open(flows: pd.DataFrame, summary: pd.DataFrame) -> np.ndarray:
    """Without a baseline, a TCP fingerprint whose flows were all open before their
    recording began (no SYN or SYN-ACK seen) and whose packets hold nothing that recurs (no
    packet profile) is taken for background: an idle connection's keep-alives that happened
    to show in every recording. A connection that carries the event's data has recurring
    packets, and stays."""
    if "handshake" not in flows:  # a flows CSV from before the column
        return np.zeros(len(summary), dtype=bool)
    opened = pd.to_numeric(flows["handshake"], errors="coerce")
    never = ((flows["proto"] == "tcp") & (opened == 0)).groupby(flows["key"]).all()
    return summary.index.isin(never[never].index) & (summary["packet_profile"] == "").to_numpy()


def _repeating(per_recording: pd.DataFrame, summary: pd.DataFrame) -> pd.Series:
    """Without a baseline, a fingerprint is taken for background when it recurs as several
    flows in every recording it is in, spread over more time than the event's burst: what a
    device does on its own (keep-alives, polling, discovery) rather than once per event."""
    counts = per_recording["count"].groupby("key").min()
    spread = (per_recording["last"] - per_recording["first"]).groupby("key").median()
    single = counts[counts == 1].index
    burst_spread = per_recording.loc[per_recording.index.get_level_values("key").isin(single)]
    burst = (
        burst_spread.groupby("recording")["first"].agg(lambda s: s.max() - s.min()).median()
        if len(burst_spread)
        else 0.0
    )
    repeating = (counts >= 2) & (spread > max(2 * (burst if burst == burst else 0.0), 1e-6))
    return summary.index.isin(repeating[repeating].index)


def _noise(flows: pd.DataFrame, n: int) -> pd.DataFrame:
    columns = [
        "device_side",
        "proto",
        "remote",
        "server_port",
        "server_side",
        "recordings_seen",
        "flows",
        *FINGERPRINT_FIELDS,
    ]
    if flows.empty:
        return pd.DataFrame(columns=columns)
    # Counted with numpy: a busy network gives as many one-off fingerprints as flows.
    keys = pd.factorize(flows["key"])[0]
    first = np.unique(keys, return_index=True)[1]
    noise = flows.iloc[first][FINGERPRINT].reset_index(drop=True)
    recording = pd.factorize(flows["recording"])[0]
    pairs = np.unique(_group_ids([keys, recording]), return_index=True)[1]
    noise["recordings_seen"] = np.bincount(keys[pairs], minlength=len(first))
    noise["flows"] = np.bincount(keys, minlength=len(first))
    noise["recordings_total"] = n
    return noise.sort_values(
        ["recordings_seen", "flows"], ascending=False, kind="stable"
    ).reset_index(drop=True)


def policy_names(patterns: pd.DataFrame) -> list[str]:
    """C-safe, unique policy names ([A-Za-z0-9_-], never 'backward') that say what the
    policy is: dns-use1-api-tplinkra-com, tls-443-use1-api-tplinkra-com, tcp-9999-phone..."""
    names, used = [], set()
    for row in patterns.itertuples():
        application = _application_label(row)
        port = "" if pd.isna(row.server_port) or row.server_port < 0 else str(int(row.server_port))
        if application in ("dns", "mdns"):
            parts = [application, row.dns_qry_name.split(";")[0]]
        elif application in ("dhcp", "arp", "icmp", "ssdp"):
            parts = [application, str(row.remote)]
        else:
            parts = [application or row.proto, port, str(row.remote)]
        if getattr(row, "unit", "flow") == "burst":  # a message exchange in an open connection
            parts.insert(0, "burst")
        base = c_safe("-".join(p for p in parts if p))[:56].strip("-_") or "policy"
        name, suffix = base, 2
        while name in used:
            name, suffix = f"{base}-{suffix}", suffix + 1
        used.add(name)
        names.append(name)
    return names


# A protocol that is another one's on its well-known port.
PORT_ALIASES = {("dns", 5353): "mdns", ("http", 1900): "ssdp"}


def _application_label(row) -> str:
    """The protocol of the pattern's first application field: dns, http, tls, ..."""
    for name in FINGERPRINT_FIELDS:
        if getattr(row, name):
            protocol = fields.BY_NAME[name].protocol
            return PORT_ALIASES.get((protocol, row.server_port), protocol)
    return ""


def c_safe(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    safe = re.sub(r"-{2,}", "-", safe)
    return re.sub("backward", "back-ward", safe, flags=re.I)


def write_signature_csv(signature: Signature, path: Path) -> None:
    csvio.write_table(signature.patterns, SIGNATURE, path)


def read_signature_csv(path: Path) -> pd.DataFrame:
    """A signature CSV of this version, or of version 2 (its patterns are flows, built with
    the default settings); another version is refused before its columns are checked, so
    that an old file is named as old rather than as broken."""
    versions = csvio.read_table(
        path, SIGNATURE, required=["signature_version"], columns=["signature_version"]
    )["signature_version"]
    versions = set(versions.dropna().astype(int))
    if versions - {SIGNATURE_VERSION, 2}:
        raise InputError(
            path,
            f"signature version {sorted(versions)} is not supported "
            f"(this tool reads versions 2 and {SIGNATURE_VERSION}: learn the "
            "signature again with this version)",
        )
    if versions == {2}:
        older = [c for c in SIGNATURE.names if c not in SIGNATURE_V2_DEFAULTS]
        frame = csvio.read_table(path, SIGNATURE, required=older, columns=older)
        return frame.assign(**SIGNATURE_V2_DEFAULTS).reindex(columns=SIGNATURE.names)
    # (a file of version 3 written before its last columns: those read as they were then)
    older = [c for c in SIGNATURE.names if c not in SIGNATURE_V3_DEFAULTS]
    frame = csvio.read_table(path, SIGNATURE, required=older)
    missing = {k: v for k, v in SIGNATURE_V3_DEFAULTS.items() if k not in frame}
    return frame.assign(**missing).reindex(columns=SIGNATURE.names)
