"""How well do signatures find their event again? Learn on a share of the recordings, detect
on the rest, count.

EVENTS_DIR is laid out DEVICE/EVENT/*.pcap (one capture per recording of the event) and a
device table (name -> ipv4) says which address is each device. Two protocols:

baseline (the default): for each device and event, a reproducible training share of the
  event's recordings (seeded by --seed, the device and the event) is learned into a
  signature, with the training recordings of the same device's other events as the baseline
  (a flow the device also makes in another event is not evidence of this one); the detector
  runs with every learned signature at once, as a user would, on every recording. Positives:
  the event's held-out recordings; negatives: the held-out recordings of the device's other
  events, and every recording of the other devices.
user: what a user with only main.py gets. Each event's signature is learned by main.py's
  code (pipeline.learn) from the training share with no baseline, and event-detector runs
  with that one signature on the held-out recordings of the event (positives) and of the
  device's other events, the same physical device driven by another app included
  (negatives).

A folder DeviceApp with the same address as Device (HueLightEssentials, HueLight) is the same
physical device driven by another app. Two figures: strict, where its recordings are
negatives like any other; per device, where its recordings of an event of the same name
(HueLightEssentials/toggle for HueLight/toggle) are left out: the same physical change,
reached by another route.

A capture counts as a detection of the event when the detector reports it there with status
"detected". An event that cannot be learned (its device never appears in its recordings...)
is reported with the reason, and the others still run.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from . import detector, fields, flows, pipeline
from . import signature as sig
from .errors import InputError
from .schema import EVALUATION, Column, Table

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
BASELINES = ("other-events", "none")
PROTOCOLS = ("baseline", "user")
NOTHING = "nothing"


@dataclass
class Capture:
    device: str
    event: str
    path: Path
    train: bool = False
    flows_csv: Path | None = None
    flows: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return f"{self.device}/{self.event}/{self.path.name}"

    @property
    def recording(self) -> str:
        return self.path.name


@dataclass
class EventResult:
    device: str
    event: str
    captures: list
    signature: sig.Signature | None = None
    event_signatures: list = field(default_factory=list)  # one per variant (route)
    signature_csv: Path | None = None
    learn_seconds: float = 0.0
    detect_seconds: float = 0.0
    tp: list = field(default_factory=list)
    fp: list = field(default_factory=list)
    tn: list = field(default_factory=list)
    fn: list = field(default_factory=list)
    left_out: list = field(default_factory=list)  # negatives left out of the per-device figure
    comparison: list = field(default_factory=list)
    status: str = "evaluated"  # evaluated, no event pattern, failed
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.device}/{self.event}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.event)

    @property
    def detectable(self) -> bool:
        return any(signature.patterns for signature in self.event_signatures)

    @property
    def train(self):
        return [c for c in self.captures if c.train]

    @property
    def test(self):
        return [c for c in self.captures if not c.train]


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


def read_devices(path: Path) -> dict[str, str]:
    """name -> IPv4 address, from a YAML mapping of device name -> {ipv4: ...}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(document, dict):
        raise InputError(path, "not a device table (expected a mapping: name -> {ipv4: ...})")
    devices = {}
    for name, entry in document.items():
        address = entry.get("ipv4") if isinstance(entry, dict) else None
        if address is None:
            continue
        try:
            devices[str(name)] = str(ipaddress.IPv4Address(str(address).strip()))
        except ValueError:
            raise InputError(path, f"device {name}: {address!r} is not an IPv4 address") from None
    if not devices:
        raise InputError(path, "no device with an ipv4 address")
    return devices


def discover(events_dir: Path) -> dict[tuple[str, str], list[Path]]:
    """(device, event) -> its captures, from EVENTS_DIR/DEVICE/EVENT/*.pcap."""
    events_dir = Path(events_dir)
    if not events_dir.is_dir():
        raise InputError(
            events_dir, "no such directory" if not events_dir.exists() else "not a directory"
        )
    found = {}
    for device_dir in sorted(p for p in events_dir.iterdir() if p.is_dir()):
        for event_dir in sorted(p for p in device_dir.iterdir() if p.is_dir()):
            captures = sorted(
                p
                for p in event_dir.iterdir()
                if p.is_file() and p.name.lower().endswith(CAPTURE_SUFFIXES)
            )
            if captures:
                found[(device_dir.name, event_dir.name)] = captures
    if not found:
        raise InputError(events_dir, "no DEVICE/EVENT/*.pcap captures in it")
    return found


def split(
    captures: list[Path], share: float, seed: int, device: str, event: str
) -> tuple[list[Path], list[Path]]:
    """A reproducible training share (at least one, and one left to test)."""
    ordered = sorted(captures, key=lambda p: p.name)
    shuffled = list(ordered)
    random.Random(f"{seed}:{device}:{event}").shuffle(shuffled)
    count = min(len(ordered) - 1, max(1, math.ceil(share * len(ordered) - 1e-9)))
    train = set(shuffled[:count])
    return [p for p in ordered if p in train], [p for p in ordered if p not in train]


# ---------------------------------------------------------------------------------------
# Translation: every capture once, on every core
# ---------------------------------------------------------------------------------------


def translate_all(
    captures: list[Capture],
    cache_dir: Path,
    devices: dict[str, str],
    jobs: int = 0,
    on_packets=None,
) -> list[tuple[Capture, Exception]]:
    """pipeline.captures_to_flows for every capture (as main.py runs it, with the device's
    address), into CACHE_DIR/DEVICE/EVENT/; each capture's flows_csv is set."""
    tasks, by_path = [], {}
    for capture in captures:
        folder = cache_dir / capture.device / capture.event
        folder.mkdir(parents=True, exist_ok=True)
        tasks.append(pipeline.Job(capture.path, folder, devices[capture.device]))
        by_path[capture.path] = capture
    failures = []
    for path, result in pipeline.captures_to_flows(tasks, jobs=jobs, on_packets=on_packets):
        if isinstance(result, Exception):
            failures.append((by_path[path], result))
        else:
            by_path[path].flows_csv = result.flows_csv
    return failures


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------


def learn(
    result: EventResult,
    others_train: list[Capture],
    device_ip: str,
    support: float,
    baseline_mode: str,
    output_dir: Path,
) -> None:
    """pipeline.learn (main.py's) on the training recordings, written by
    pipeline.write_signature into OUTPUT_DIR/signatures/DEVICE/EVENT/."""
    started = time.perf_counter()
    recordings = [sig.Recording(c.recording, c.flows) for c in result.train]
    baseline = None
    if baseline_mode == "other-events" and others_train:
        baseline = [sig.Recording(c.recording, c.flows) for c in others_train]
    learned = pipeline.learn(
        recordings,
        result.device,
        device_ip,
        event=result.event,
        baseline=baseline,
        # (translate_all builds the flows with the default settings)
        options=sig.LearnOptions(support, flow_settings=flows.FlowOptions().settings()),
    )
    folder = output_dir / "signatures" / result.device / result.event
    folder.mkdir(parents=True, exist_ok=True)
    result.signature_csv = pipeline.write_signature(learned, folder)["signature"]
    result.signature = learned
    result.learn_seconds = time.perf_counter() - started


def same_device(devices: dict[str, str], a: str, b: str) -> bool:
    """Two folders of one physical device: the same, or Device and DeviceApp (the same
    ipv4 in the device table, one folder name a prefix of the other)."""
    if a == b:
        return True
    return (
        devices.get(a) is not None
        and devices.get(a) == devices.get(b)
        and (a.startswith(b) or b.startswith(a))
    )


def detect_all(
    results: list[EventResult],
    captures: list[Capture],
    devices: dict[str, str],
    protocol: str,
    options: detector.DetectOptions,
):
    """Run the detector as the protocol says. Returns (capture name -> {(device, event)
    detected}, every occurrence, seconds per signature label)."""
    timings, detected, occurrences = {}, {c.name: set() for c in captures}, []

    def run(capture, signatures):
        found = detector.detect(capture.flows, capture.name, signatures, options, timings)
        occurrences.extend(found)
        detected[capture.name].update(
            (o.signature.device_name, o.signature.event) for o in found if o.status == "detected"
        )

    learned = [r for r in results if r.detectable]
    if protocol == "baseline":  # every signature at once, on every capture
        signatures = [s for r in learned for s in r.event_signatures]
        if signatures:
            for capture in captures:
                run(capture, signatures)
    else:  # each signature alone, on the held-out recordings of its physical device
        for result in learned:
            for capture in captures:
                if not capture.train and same_device(devices, capture.device, result.device):
                    run(capture, result.event_signatures)
    return detected, occurrences, timings


def score(
    result: EventResult,
    captures: list[Capture],
    detected: dict[str, set],
    devices: dict[str, str] | None = None,
    protocol: str = "baseline",
) -> None:
    """Positives: the event's held-out recordings. Negatives (strict): baseline protocol,
    the held-out recordings of the device's other events and every recording of the other
    devices; user protocol, the held-out recordings of the same physical device's other
    events. A negative of the same physical device through another app with the same event
    name is also put in left_out: the per-device figure leaves it out."""
    devices = devices or {}
    result.tp, result.fp, result.tn, result.fn, result.left_out = [], [], [], [], []
    for capture in captures:
        hit = result.key in detected.get(capture.name, set())
        if (capture.device, capture.event) == result.key:
            if not capture.train:
                (result.tp if hit else result.fn).append(capture.name)
            continue
        physical = same_device(devices, capture.device, result.device)
        if protocol == "user" and (capture.train or not physical):
            continue
        if capture.device == result.device and capture.train:  # its baseline: not fair
            continue
        (result.fp if hit else result.tn).append(capture.name)
        if physical and capture.device != result.device and capture.event == result.event:
            result.left_out.append(capture.name)


def metrics(result: EventResult, per_device: bool = False) -> dict:
    left_out = set(result.left_out) if per_device else set()
    tp, fn = len(result.tp), len(result.fn)
    fp = len([n for n in result.fp if n not in left_out])
    tn = len([n for n in result.tn if n not in left_out])
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision == precision and recall == recall and precision + recall
        else (0.0 if tp + fn else math.nan)
    )
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _rounded(value):
    return round(value, 4) if value == value else math.nan


def table(
    results: list[EventResult],
    output_dir: Path,
    protocol: str = "baseline",
    method: str = "signature",
) -> pd.DataFrame:
    rows = []
    for r in results:
        patterns = [p for signature in r.event_signatures for p in signature.patterns]
        row = {
            "method": method,
            "device": r.device,
            "event": r.event,
            "protocol": protocol,
            "status": r.status,
            "note": r.note,
            "recordings": len(r.captures),
            "train": len(r.train),
            "event_patterns": len(patterns),
            "background_patterns": sum(len(s.background) for s in r.event_signatures),
            "seconds": round(r.learn_seconds + r.detect_seconds, 3),
            "signature": ";".join(p.name for p in patterns),
            "signature_csv": str(r.signature_csv.relative_to(output_dir))
            if r.signature_csv
            else "",
        }
        if r.status != "failed":
            m, d = metrics(r), metrics(r, per_device=True)
            if not m["fp"] + m["tn"] and not r.note:
                row["note"] = (
                    "no negative: its device has no other recorded event (the "
                    "precision is over its detections in positives only)"
                )
            row.update(
                {
                    "positives": m["tp"] + m["fn"],
                    "negatives": m["fp"] + m["tn"],
                    **{k: m[k] for k in ("tp", "fp", "tn", "fn")},
                    **{k: _rounded(m[k]) for k in ("precision", "recall", "f1")},
                    "negatives_per_device": d["fp"] + d["tn"],
                    "fp_per_device": d["fp"],
                    "tn_per_device": d["tn"],
                    "precision_per_device": _rounded(d["precision"]),
                    "f1_per_device": _rounded(d["f1"]),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=EVALUATION.names)


def macro_f1(frame: pd.DataFrame, column: str = "f1") -> float:
    """The mean F1 of the events that were evaluated (a failed one has no figure)."""
    values = frame.loc[frame["status"] != "failed", column].astype(float).dropna()
    return float(values.mean()) if len(values) else math.nan


def confusion(results: list[EventResult], detected: dict[str, set]) -> pd.DataFrame:
    """For each event (rows), how many of its held-out recordings were detected as each
    learned event (columns), and in how many nothing was (a recording detected as two
    events counts in both columns)."""
    learned = [r for r in results if r.detectable]
    rows = []
    for r in results:
        row = {"event": r.label, "held_out": len(r.test)}
        found = [detected.get(c.name, set()) for c in r.test]
        for other in learned:
            row[other.label] = sum(other.key in f for f in found)
        row[NOTHING] = sum(not f for f in found)
        rows.append(row)
    return pd.DataFrame(rows, columns=["event", "held_out", *(o.label for o in learned), NOTHING])


def confusion_table(frame: pd.DataFrame):
    """The schema of confusion.csv: its columns are the run's learned events."""
    columns = [
        Column("event", "text", "the event whose held-out recordings these are"),
        Column("held_out", "int", "its held-out recordings"),
    ]
    columns += [Column(name, "int", f"of them, detected as {name}") for name in frame.columns[2:-1]]
    columns.append(Column(NOTHING, "int", "of them, with no detection"))
    return Table("confusion", columns)


# ---------------------------------------------------------------------------------------
# The published analysis (expected-tree.json): which flows its authors found
# ---------------------------------------------------------------------------------------


@dataclass
class PaperFlow:
    key: str
    proto: str
    src: str
    dst: str
    port: int | None
    dns_name: str = ""
    dns_type: str = ""
    http_method: str = ""
    http_uri: str = ""
    dns_response: bool = False

    @property
    def device_involved(self) -> bool:
        return "self" in (self.src, self.dst)

    @property
    def remote(self) -> str:
        return self.dst if self.src == "self" else self.src

    def describe(self) -> str:
        ends = f"{self.src} -> {self.dst}".replace("self", "device")
        text = f"{self.proto.upper()}{'/' + str(self.port) if self.port else ''} {ends}"
        if self.dns_name:
            text += f" DNS {self.dns_name}" + (f" {self.dns_type}" if self.dns_type else "")
        if self.http_method:
            text += f" HTTP {self.http_method} {self.http_uri}"
        return text


def paper_flows(path: Path) -> list[PaperFlow]:
    """The root's children of a published event tree: the flows of the event's signature."""
    try:
        tree = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(path, f"not a readable event tree ({e})") from None
    found = []
    for child in tree.get("0_root", {}).get("children", []):
        for key, node in child.items():
            data = node.get("data") or [None, []]
            for policy in data[1] if len(data) > 1 else []:
                found.append(_paper_flow(key, policy.get("protocols", {})))
    return found


def _paper_flow(key: str, protocols: dict) -> PaperFlow:
    ip = protocols.get("ipv4") or protocols.get("ipv6") or {}
    proto = next((p for p in ("tcp", "udp") if p in protocols), "")
    ports = protocols.get(proto, {}) if proto else {}
    port = ports.get("dst-port", ports.get("src-port"))
    flow = PaperFlow(
        key,
        proto,
        str(ip.get("src", "")),
        str(ip.get("dst", "")),
        int(port) if port is not None else None,
    )
    dns = protocols.get("dns") or protocols.get("mdns") or {}
    flow.dns_name, flow.dns_type = str(dns.get("domain-name", "")), str(dns.get("qtype", ""))
    flow.dns_response = bool(dns.get("response", False))
    http = protocols.get("http") or {}
    flow.http_method, flow.http_uri = str(http.get("method", "")), str(http.get("uri", ""))
    return flow


def _same_flow(flow: PaperFlow, row) -> bool:
    """The same device flow: protocol, fixed port and remote party (by name or address)."""
    if not flow.device_involved or flow.proto != str(row.proto) or flow.port is None:
        return False
    if row.server_port != row.server_port or int(row.server_port) != flow.port:
        return False
    remotes = {str(row.remote)} | set(str(getattr(row, "remote_addrs", "") or "").split(";"))
    return flow.remote in remotes


def _matches(flow: PaperFlow, row) -> bool:
    """The same flow with the same application fields (those the paper gives)."""
    if not _same_flow(flow, row):
        return False
    if flow.dns_name and flow.dns_name not in str(row.dns_qry_name).split(";"):
        return False
    if flow.dns_type and flow.dns_type not in str(row.dns_qry_type).split(";"):
        return False
    return not (
        flow.http_method and flow.http_method not in str(row.http_request_method).split(";")
    )


def compare(paper: list[PaperFlow], learned: sig.Signature, device_ip: str) -> list[dict]:
    """Rows: what both found, only the project, only the paper (with what the project
    saw of the paper's flow, when it saw it)."""
    rows, used = [], set()
    patterns = learned.patterns
    noise = learned.noise
    for flow in paper:
        hits = [p for p in patterns.itertuples() if _matches(flow, p)]
        if hits:
            used.update(h.pattern for h in hits)
            roles = {h.role for h in hits}
            rows.append(
                {
                    "found_by": "both",
                    "paper": flow.describe(),
                    "project": ", ".join(f"{h.pattern} ({h.role})" for h in hits),
                    "note": ""
                    if roles == {"event"}
                    else "the project counts it as background: the device's other events "
                    "make it too",
                }
            )
            continue
        near = [p for p in patterns.itertuples() if _same_flow(flow, p)]
        if near:
            used.update(p.pattern for p in near)
            what = (
                "names an mDNS answer record: the packets CSV keeps DNS query names "
                "(dns.qry.name), not answer names"
                if flow.dns_response
                else "its application fields differ"
            )
            rows.append(
                {
                    "found_by": "only the paper",
                    "paper": flow.describe(),
                    "project": ", ".join(f"{p.pattern} ({p.role})" for p in near),
                    "note": f"the project has the flow, but the paper's {what}",
                }
            )
            continue
        rows.append(
            {
                "found_by": "only the paper",
                "paper": flow.describe(),
                "project": "",
                "note": _why_not(flow, noise, learned, device_ip),
            }
        )
    for p in patterns.itertuples():
        if p.pattern not in used and p.role == "event":
            rows.append(
                {
                    "found_by": "only the project",
                    "paper": "",
                    "project": p.pattern,
                    "note": _describe_pattern(p),
                }
            )
    return rows


def _why_not(flow: PaperFlow, noise: pd.DataFrame, learned: sig.Signature, device_ip) -> str:
    if not flow.device_involved:
        if ":" in flow.src or ":" in flow.dst:
            return (
                "IPv6 (the device's link-local address): the project follows the "
                "device's IPv4 address"
            )
        return (
            "not the device's traffic (the phone's own connections): the project's "
            "signatures are the device's flows only"
        )
    total = len(learned.recordings)
    for row in noise.itertuples():
        row_remote = {str(row.remote)}
        if (
            flow.proto == str(row.proto)
            and flow.remote in row_remote | {"self"}
            and (flow.port is None or flow.port == getattr(row, "server_port", None))
            and (not flow.dns_name or flow.dns_name in str(row.dns_qry_name).split(";"))
        ):
            return (
                f"seen in {row.recordings_seen}/{total} training recordings only "
                "(below --support 1)"
            )
    if flow.remote and not flow.remote.replace(".", "").isdigit():
        return (
            "no flow to that name in the training recordings as the project names "
            "remotes (by the capture's own DNS answers)"
        )
    return "no such flow in the training recordings"


def _describe_pattern(p) -> str:
    side = "device opens" if p.device_side == "orig" else "remote opens"
    port = f"/{int(p.server_port)}" if p.server_port == p.server_port else ""
    application = fields.application_text(p, " ")
    return (
        f"{str(p.proto).upper()}{port} {p.remote} ({side})"
        + (f", {application}" if application else "")
        + f", {p.recordings_seen}/{p.recordings_total} recordings"
    )


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------


def markdown(
    frame: pd.DataFrame,
    results: list[EventResult],
    settings: dict,
    timings: dict,
    output_dir: Path,
    confusion_frame: pd.DataFrame | None = None,
    protocol: str = "baseline",
) -> str:
    lines = ["# Event detection: evaluation", ""]
    lines.append("Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".")
    lines.append("")
    lines += [PROTOCOL_TEXT[protocol], ""]
    lines += [summary_text(frame), ""]
    header = [
        "device",
        "event",
        "recordings (train / positives / negatives)",
        "patterns",
        "status",
        "TP",
        "FP",
        "TN",
        "FN",
        "precision",
        "recall",
        "F1",
        "negatives per device",
        "FP per device",
        "precision per device",
        "F1 per device",
        "seconds",
        "signature",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples():
        failed = row.status == "failed"
        counts = (
            ["-"] * 4 if failed else [str(int(getattr(row, k))) for k in ("tp", "fp", "tn", "fn")]
        )
        per_device = (
            ["-", "-"]
            if failed
            else [str(int(row.negatives_per_device)), str(int(row.fp_per_device))]
        )
        split = (
            f"{row.recordings} ({row.train} / -)"
            if failed
            else f"{row.recordings} ({row.train} / {int(row.positives)} / {int(row.negatives)})"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    str(row.device),
                    str(row.event),
                    split,
                    f"{row.event_patterns} (+{row.background_patterns} background)",
                    str(row.status) + (f": {_cell(row.note)}" if failed and row.note else ""),
                    *counts,
                    _num(row.precision),
                    _num(row.recall),
                    _num(row.f1),
                    *per_device,
                    _num(row.precision_per_device),
                    _num(row.f1_per_device),
                    f"{row.seconds:.2f}",
                    "<br>".join(
                        f"{i}. `{p}`" for i, p in enumerate(str(row.signature).split(";"), 1) if p
                    ),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".",
        "Per-event seconds: learning the signature plus matching it in every test "
        "capture (translation is shared and counted once, above).",
        "",
    ]
    if confusion_frame is not None:
        lines += confusion_markdown(confusion_frame, protocol)
    for r in results:
        lines += [f"## {r.device} / {r.event}", ""]
        if r.status == "failed":
            lines += [f"Failed: {r.note}", ""]
        if r.signature_csv:
            lines += [
                f"Signature: `{r.signature_csv.parent.relative_to(output_dir)}/"
                "` (signature.csv, pattern.txt, profile.yaml).",
                "",
            ]
        for label, names in (
            ("missed (false negatives)", r.fn),
            ("false detections (false positives)", r.fp),
            ("left out of the per-device figure", r.left_out),
        ):
            if names:
                lines.append(f"- {label}: " + ", ".join(f"`{n}`" for n in names))
        if r.fn or r.fp or r.left_out:
            lines.append("")
        if r.comparison:
            lines += [
                "Compared with the published analysis (expected-tree.json):",
                "",
                "| found by | paper's flow | project's pattern | note |",
                "|---|---|---|---|",
            ]
            for c in r.comparison:
                lines.append(
                    f"| {c['found_by']} | {_cell(c['paper'])} | "
                    f"{_cell(c['project'])} | {_cell(c['note'])} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


PROTOCOL_TEXT = {
    "baseline": "Protocol: baseline. Each signature is learned from the training share of its "
    "event with the training recordings of the device's other events as baseline; "
    "the detector runs with every signature at once on every recording. Strict "
    "negatives: the held-out recordings of the device's other events and every "
    "recording of the other devices (the same physical device driven by another "
    "app, folder DeviceApp, included); per device: without DeviceApp's recordings "
    "of an event with the same name.",
    "user": "Protocol: user (what main.py and event-detector give a user). Each signature is "
    "learned by main.py's code from the training share of its event with no "
    "baseline; event-detector runs with that one signature on the held-out recordings "
    "of the event (positives) and of the same physical device's other events, "
    "another app's folder (DeviceApp) included (strict negatives); per device: "
    "without DeviceApp's recordings of an event with the same name.",
}


def summary_text(frame: pd.DataFrame) -> str:
    evaluated = int((frame["status"] != "failed").sum())
    failed = len(frame) - evaluated
    return (
        f"Macro F1 over {evaluated} event(s): strict {_num(macro_f1(frame, 'f1'))}, "
        f"per device {_num(macro_f1(frame, 'f1_per_device'))}"
        + (f" ({failed} failed event(s) left out: no figure)" if failed else "")
        + "."
    )


def confusion_markdown(frame: pd.DataFrame, protocol: str) -> list[str]:
    columns = list(frame.columns[2:])
    lines = [
        "## Confusion",
        "",
        "For each event (rows), how many of its held-out recordings were detected as "
        "each learned event (columns), and in how many nothing was detected. A recording "
        "detected as two events counts in both; an event without an event pattern has no "
        "column."
        + (
            " In the user protocol each signature only runs on the recordings of its own "
            "physical device: the other cells are empty."
            if protocol == "user"
            else ""
        ),
        "",
        "| event | held out | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in frame.itertuples(index=False):
        values = list(row)
        lines.append(
            f"| {values[0]} | {values[1]} | "
            + " | ".join(str(v) if v else "·" for v in values[2:])
            + " |"
        )
    return lines + [""]


def _num(value) -> str:
    return "-" if value != value else f"{value:.3f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
