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

from . import csvio
from .errors import InputError, ToolError
from .parties import remote_party, server_ports
from .schema import FLOWS, SIGNATURE, SIGNATURE_VERSION

FINGERPRINT_FIELDS = ["dns_qry_name", "dns_qry_type", "http_request_method", "http_request_uri",
                      "coap_type", "coap_code", "coap_uri", "dhcp_msg_type", "tls_server_name",
                      "icmp_type", "arp_opcode"]
FINGERPRINT = ["device_side", "proto", "remote", "server_port", "server_side",
               *FINGERPRINT_FIELDS]
REQUIRED = ["uid", "ts", "duration", "proto", "orig_h", "orig_p", "resp_h", "resp_p",
            "orig_pkts", "resp_pkts", "orig_frame_bytes", "resp_frame_bytes", "orig_mac",
            "resp_mac", "remote_name", "remote_class", "orig_size_min", "orig_size_max",
            "resp_size_min", "resp_size_max", *[f for f in FINGERPRINT_FIELDS]]
RANGE_METRICS = ["orig_pkts", "resp_pkts", "orig_frame_bytes", "resp_frame_bytes", "duration",
                 "orig_size_min", "orig_size_max", "resp_size_min", "resp_size_max"]
CLASS_NAMES = {"gateway", "broadcast"}   # always written as their class: addresses vary
GENERALISABLE = {"local", "external", "multicast"}


@dataclass
class Recording:
    name: str
    flows: pd.DataFrame


@dataclass
class Signature:
    device_name: str
    device_ip: str
    device_mac: str
    event: str
    recordings: list[str]
    support: float
    patterns: pd.DataFrame                      # one row per pattern, SIGNATURE columns
    noise: pd.DataFrame                         # fingerprints below the support threshold
    baseline_given: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def event_patterns(self) -> pd.DataFrame:
        return self.patterns[self.patterns["role"] == "event"]

    @property
    def background_patterns(self) -> pd.DataFrame:
        return self.patterns[self.patterns["role"] != "event"]


def read_recordings(paths: list[Path]) -> list[Recording]:
    """One recording per flows CSV, named after its file (after its path where two files
    share a name: each must count as a recording of its own)."""
    resolved = [Path(p).resolve() for p in paths]
    for number, path in enumerate(resolved):
        if path in resolved[:number]:
            raise InputError(paths[number], "given twice: each flows CSV is one recording")
    names = [_recording_name(p) for p in paths]
    names = [str(p) if names.count(n) > 1 else n for n, p in zip(names, paths)]
    recordings = []
    for path, name in zip(paths, names):
        flows = csvio.read_table(path, FLOWS, required=REQUIRED, columns=REQUIRED + ["remote_h"])
        recordings.append(Recording(name, flows))
    return recordings


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
    if device_mac:
        orig |= (flows["orig_mac"].str.lower() == device_mac) & ~resp
        resp |= (flows["resp_mac"].str.lower() == device_mac) & ~orig & (flows["resp_h"] != flows["orig_h"])
    involved = (orig | resp).to_numpy()
    # A shallow frame when every flow is the device's: the columns are copied once, by
    # the caller's concat (a hundred recordings of 10,000 flows are a GB of text).
    mine = flows.copy(deep=False) if involved.all() else flows[involved].copy()
    mine["device_side"] = np.where(orig.to_numpy()[involved], "orig", "resp")
    mine["recording"] = recording.name
    return mine


def fingerprints(flows: pd.DataFrame) -> pd.DataFrame:
    """Add the fingerprint columns (specific remote, and the generalised one)."""
    f = flows
    device_is_orig = (f["device_side"] == "orig").to_numpy()
    if "remote_h" in f:  # (optional column)
        remote_h, name, klass = remote_party(f["orig_h"], f["resp_h"], device_is_orig,
                                             f["remote_h"], f["remote_name"].fillna(""),
                                             f["remote_class"].fillna(""))
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
    f["http_request_uri"] = _map_distinct(f["http_request_uri"].fillna(""),
                                          lambda u: re.sub(r"\?[^;]*", "", u))
    for name in FINGERPRINT_FIELDS:  # a set of values, in one spelling: "reply;request"
        f[name] = _canonical_sets(f[name].fillna("").astype(str))
    f["server_port"] = pd.to_numeric(f["server_port"], errors="coerce").fillna(-1).astype(int)
    return f


def canonical_set(value: str) -> str:
    """A set-valued field in one spelling: 'request;reply' and 'reply;request' -> 'reply;request'."""
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


def extract(recordings: list[Recording], device_name: str, device_ip: str,
            device_mac: str | None = None, support: float = 1.0, event: str = "event",
            baseline: list[Recording] | None = None) -> Signature:
    warnings = []
    if len(recordings) == 1:
        warnings.append("only one recording: a signature from one recording cannot tell "
                        "stable traffic from accidental traffic; record the event several times")
    per_recording = [device_flows(r, device_ip, device_mac) for r in recordings]
    absent = [r.name for r, f in zip(recordings, per_recording) if f.empty]
    if len(absent) == len(recordings):
        raise ToolError(f"device IP {device_ip} never appears in the flows of "
                        + ", ".join(r.name for r in recordings))
    if absent:
        warnings.append(f"device IP {device_ip} does not appear in: {', '.join(absent)}")
    flows = pd.concat(per_recording, ignore_index=True)
    del per_recording  # the concat holds the only copy needed from here
    flows = fingerprints(flows)
    mac = device_mac or _device_mac(flows)
    if not mac:
        warnings.append("no --device-mac given and no MAC seen sending from "
                        f"{device_ip}: profile.yaml needs device-info.mac")
    n = len(recordings)
    needed = max(1, math.ceil(support * n - 1e-9))
    flows["key"] = _assign_keys(flows, needed)
    counted = flows.groupby("key")["recording"].nunique()
    keep = counted[counted >= needed].index
    in_pattern = flows["key"].isin(keep)

    background_keys = set()
    if baseline:
        base = [device_flows(r, device_ip, device_mac) for r in baseline]
        base = fingerprints(pd.concat(base, ignore_index=True)) if any(len(b) for b in base) else None
        if base is None:
            warnings.append(f"device IP {device_ip} does not appear in the baseline "
                            f"({', '.join(r.name for r in baseline)}): nothing is background")
        if base is not None:
            # A pattern is background when the baseline has the same fingerprint, at the
            # same level of detail (a pattern by class matches a baseline flow by class).
            specific = set(map(tuple, base[FINGERPRINT].to_numpy().tolist()))
            general = set(map(tuple, base[_general_columns()].to_numpy().tolist()))
            firsts = flows[in_pattern].groupby("key").first()
            for key, row in firsts.iterrows():
                fingerprint = tuple(row[FINGERPRINT])
                if fingerprint in (general if row["generalised"] else specific):
                    background_keys.add(key)
    patterns = _summarise(flows[in_pattern], n, device_name, device_ip, event,
                          background_keys, baseline is not None)
    noise = _noise(flows.loc[~in_pattern, [*FINGERPRINT, "key", "recording"]], n)
    return Signature(device_name, device_ip, mac or "", event, [r.name for r in recordings],
                     support, patterns, noise, baseline is not None, warnings)


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
    flows["generalised"] = ~stable
    flows["remote"] = np.where(stable, flows["remote"], flows["remote_general"])
    flows.loc[~stable, "remote_kind"] = np.where(
        flows.loc[~stable, "remote"] == flows.loc[~stable, "remote_h"], "address", "class")
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
    macs = pd.concat([flows.loc[flows["device_side"] == "orig", "orig_mac"],
                      flows.loc[flows["device_side"] == "resp", "resp_mac"]])
    counts = macs.value_counts()  # checked once per distinct MAC
    counts.index = counts.index.str.lower()
    counts = counts.groupby(level=0).sum()
    counts = counts[counts.index.str.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", na=False)]
    return counts.sort_index().idxmax() if len(counts) else ""


def _summarise(flows: pd.DataFrame, n: int, device_name: str, device_ip: str, event: str,
               background_keys: set, baseline_given: bool) -> pd.DataFrame:
    if flows.empty:
        return csvio.empty_frame(SIGNATURE)
    grouped = flows.groupby("key", sort=False)
    summary = grouped[FINGERPRINT + ["remote_kind"]].first()
    summary["remote_class"] = grouped["remote_class"].first()
    summary["recordings_seen"] = grouped["recording"].nunique()
    per_recording = flows.groupby(["key", "recording"]).agg(
        count=("ts", "size"), first=("ts", "min"), last=("ts", "max"))
    summary["flows_min"] = per_recording["count"].groupby("key").min()
    summary["flows_max"] = per_recording["count"].groupby("key").max()
    for metric in RANGE_METRICS:
        values = pd.to_numeric(flows[metric], errors="coerce")
        summary[f"{metric}_min"] = values.groupby(flows["key"]).min()
        summary[f"{metric}_max"] = values.groupby(flows["key"]).max()
    summary["remote_addrs"] = grouped["remote_h"].agg(lambda a: ";".join(sorted(set(a))))
    summary["role"] = "event"
    summary.loc[summary.index.isin(background_keys), "role"] = "background"
    if not baseline_given:
        summary.loc[_repeating(per_recording, summary), "role"] = "background (inferred)"
    # Event order: median start relative to the first event-pattern flow of each recording.
    event_keys = summary.index[summary["role"] == "event"]
    starts = per_recording["first"].reset_index()
    reference = starts[starts["key"].isin(event_keys)].groupby("recording")["first"].min()
    if reference.empty:
        reference = starts.groupby("recording")["first"].min()
    starts["offset"] = starts["first"] - starts["recording"].map(reference)
    summary["start_offset_median"] = starts.groupby("key")["offset"].median().round(6)
    summary = summary.reset_index(drop=True)
    summary = summary.sort_values(["role", "start_offset_median"],
                                  key=lambda c: c.map({"event": 0}).fillna(1) if c.name == "role" else c,
                                  kind="stable").reset_index(drop=True)
    summary["order"] = np.arange(1, len(summary) + 1)
    summary["recordings_total"] = n
    summary["signature_version"] = SIGNATURE_VERSION
    summary["event"] = event
    summary["device_name"] = device_name
    summary["device_ip"] = device_ip
    summary["pattern"] = policy_names(summary)
    summary["server_port"] = summary["server_port"].where(summary["server_port"] >= 0)
    return summary.reindex(columns=SIGNATURE.names)


def _repeating(per_recording: pd.DataFrame, summary: pd.DataFrame) -> pd.Series:
    """Without a baseline, a fingerprint is taken for background when it recurs as several
    flows in every recording it is in, spread over more time than the event's burst: what a
    device does on its own (keep-alives, polling, discovery) rather than once per event."""
    counts = per_recording["count"].groupby("key").min()
    spread = (per_recording["last"] - per_recording["first"]).groupby("key").median()
    single = counts[counts == 1].index
    burst_spread = per_recording.loc[per_recording.index.get_level_values("key").isin(single)]
    burst = (burst_spread.groupby("recording")["first"].agg(lambda s: s.max() - s.min()).median()
             if len(burst_spread) else 0.0)
    repeating = (counts >= 2) & (spread > max(2 * (burst if burst == burst else 0.0), 1e-6))
    return summary.index.isin(repeating[repeating].index)


def _noise(flows: pd.DataFrame, n: int) -> pd.DataFrame:
    columns = ["device_side", "proto", "remote", "server_port", "server_side", "recordings_seen",
               "flows", *FINGERPRINT_FIELDS]
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
    return noise.sort_values(["recordings_seen", "flows"], ascending=False,
                             kind="stable").reset_index(drop=True)


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
        base = c_safe("-".join(p for p in parts if p))[:56].strip("-_") or "policy"
        name, suffix = base, 2
        while name in used:
            name, suffix = f"{base}-{suffix}", suffix + 1
        used.add(name)
        names.append(name)
    return names


def _application_label(row) -> str:
    if row.dns_qry_name:
        return "mdns" if row.server_port == 5353 else "dns"
    if row.http_request_method:
        return "ssdp" if row.server_port == 1900 else "http"
    for label, value in (("coap", row.coap_code), ("dhcp", row.dhcp_msg_type),
                         ("tls", row.tls_server_name), ("icmp", row.icmp_type),
                         ("arp", row.arp_opcode)):
        if value:
            return label
    return ""


def c_safe(text: str) -> str:
    import re
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    safe = re.sub(r"-{2,}", "-", safe)
    return re.sub("backward", "back-ward", safe, flags=re.I)


def write_signature_csv(signature: Signature, path: Path) -> None:
    csvio.write_table(signature.patterns, SIGNATURE, path)


def read_signature_csv(path: Path) -> pd.DataFrame:
    frame = csvio.read_table(path, SIGNATURE)
    versions = set(frame["signature_version"].dropna().astype(int))
    if versions - {SIGNATURE_VERSION}:
        raise InputError(path, f"signature version {sorted(versions)} is not supported "
                               f"(this tool reads version {SIGNATURE_VERSION})")
    return frame
