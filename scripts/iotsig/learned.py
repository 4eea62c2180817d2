"""A learned detector beside the signatures (evaluate.py --method ml|both).

Per device, a scikit-learn random forest (BehavIoT's classifier) is trained on the units
(flows, and the bursts inside connections already open: the units signatures are learned
from) of the device's training recordings, each labelled with its recording's event. A unit's
features: its counts, bytes, duration and size range each way, its first payload sizes (the
packet profile), and its fingerprint's remote party, server port and protocol (as codes
learned in training; unseen: -1). A held-out recording is detected as the event whose mean
predicted probability over the recording's units of the device is highest: one event per
recording that holds the device's traffic, none where it holds none. The recordings, split
and scoring are evaluate.py's (evaluation.score), so the two methods' figures compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio, detector, evaluation, features, flows, pipeline, windows
from . import signature as sig
from .errors import ToolError
from .schema import BURSTS, DETECTIONS, FLOWS, PACKETS
from .signature import LearnOptions
from .timefmt import utc

NUMERIC = [
    "duration",
    "orig_pkts",
    "resp_pkts",
    "orig_frame_bytes",
    "resp_frame_bytes",
    "orig_size_min",
    "orig_size_max",
    "resp_size_min",
    "resp_size_max",
]
CATEGORIES = ["remote", "server_port", "proto", "device_side", "unit"]
PROFILE = 6  # first payload sizes used
TREES = 100


@dataclass
class Model:
    device: str
    device_ip: str
    forest: object  # sklearn RandomForestClassifier
    vocabulary: dict  # category column -> {value: code}
    seconds: float = 0.0
    units: int = 0


def units_of(capture: evaluation.Capture, read: dict) -> pd.DataFrame:
    """The capture's flows and bursts inside connections already open (read once: `read`
    keeps them by capture name)."""
    if capture.name not in read:
        read[capture.name] = detector.read_flows(
            capture.flows_csv, bursts=detector.bursts_beside(capture.flows_csv).is_file()
        )
    return read[capture.name]


def device_units(units: pd.DataFrame, name: str, device_ip: str) -> pd.DataFrame:
    """The units that involve the device, fingerprinted as the signatures see them."""
    mine = sig.device_flows(sig.Recording(name, units), device_ip, None)
    return mine if mine.empty else sig.fingerprints(mine)


def matrix(units: pd.DataFrame, vocabulary: dict) -> np.ndarray:
    numbers = [pd.to_numeric(units[c], errors="coerce").to_numpy(float) for c in NUMERIC]
    sizes = sig.payload_matrix(units["first_payload_sizes"], PROFILE)
    codes = [units[c].astype(str).map(vocabulary[c]).fillna(-1).to_numpy(float) for c in CATEGORIES]
    return np.nan_to_num(np.column_stack([*numbers, sizes, *codes]), nan=-1.0)


def train(device: str, device_ip: str, captures: list, seed: int, read: dict) -> Model | None:
    """The device's forest, from its training captures (labelled with their events)."""
    from sklearn.ensemble import RandomForestClassifier

    started = time.perf_counter()
    tables, labels = [], []
    for capture in captures:
        units = device_units(units_of(capture, read), capture.name, device_ip)
        if len(units):
            tables.append(units)
            labels += [capture.event] * len(units)
    if not tables:
        return None
    units = pd.concat(tables, ignore_index=True)
    vocabulary = {
        c: {v: i for i, v in enumerate(sorted(units[c].astype(str).unique()))} for c in CATEGORIES
    }
    forest = RandomForestClassifier(n_estimators=TREES, random_state=seed, n_jobs=1)
    forest.fit(matrix(units, vocabulary), np.array(labels))
    return Model(device, device_ip, forest, vocabulary, time.perf_counter() - started, len(units))


def predict(model: Model, capture: evaluation.Capture, read: dict) -> str | None:
    """The event the recording is detected as, or None without the device's traffic."""
    units = device_units(units_of(capture, read), capture.name, model.device_ip)
    if units.empty:
        return None
    probability = model.forest.predict_proba(matrix(units, model.vocabulary)).mean(axis=0)
    return str(model.forest.classes_[int(np.argmax(probability))])


def evaluate(
    results: list[evaluation.EventResult],
    captures: list[evaluation.Capture],
    devices: dict[str, str],
    protocol: str,
    seed: int,
) -> tuple[list[evaluation.EventResult], dict[str, set]]:
    """The learned detector on evaluate.py's split: per event, a result scored as the
    signatures' are (copies of `results`), and what each capture was detected as."""
    ml = [
        replace(
            r,
            signature=None,
            event_signatures=[],
            signature_csv=None,
            learn_seconds=0.0,
            detect_seconds=0.0,
            comparison=[],
            status="evaluated",
            note="",
        )
        for r in results
    ]
    models, read = {}, {}
    for device in dict.fromkeys(r.device for r in ml):
        mine = [r for r in ml if r.device == device]
        for r in mine:
            if not r.train or not r.test:
                r.status = "failed"
                r.note = (
                    f"too few readable captures ({len(r.train)} to learn, {len(r.test)} to test)"
                )
        trained = [c for r in mine if r.status != "failed" for c in r.train]
        model = train(device, devices[device], trained, seed, read)
        if model is None:
            for r in mine:
                r.status, r.note = "failed", "no unit of the device in its training recordings"
            continue
        models[device] = model
        for r in mine:
            r.learn_seconds = model.seconds / len(mine)
            if r.status != "failed":
                r.note = f"random forest of {TREES} trees on {model.units} training units"
    detected = {c.name: set() for c in captures}
    for device, model in models.items():
        started = time.perf_counter()
        for capture in captures:
            if protocol == "user" and (
                capture.train or not evaluation.same_device(devices, capture.device, device)
            ):
                continue
            if capture.train and capture.device == device:
                continue  # (its own training recordings: not scored)
            event = predict(model, capture, read)
            if event is not None:
                detected[capture.name].add((device, event))
        mine = [r for r in ml if r.device == device]
        for r in mine:
            r.detect_seconds = (time.perf_counter() - started) / len(mine)
    for r in ml:
        if r.status != "failed":
            evaluation.score(r, captures, detected, devices, protocol)
    return ml, detected


def side_by_side(frame: pd.DataFrame) -> list[str]:
    """evaluation.md's comparison: per event, each method's F1 (strict and per device),
    and the macro F1 per method."""
    methods = list(dict.fromkeys(frame["method"]))
    lines = [
        "## Signatures and the learned classifier, side by side",
        "",
        "The same split, held-out recordings and scoring; ml: a random forest per device "
        "(BehavIoT's classifier) on its units' features, the remote party and the port "
        "(iotsig/learned.py).",
        "",
        "| device | event | "
        + " | ".join(f"{m} F1 | {m} F1 per device | {m} TP/FP/FN" for m in methods)
        + " | better |",
        "|---|---|" + "---|---|---|" * len(methods) + "---|",
    ]
    keyed = {(r.method, r.device, r.event): r for r in frame.itertuples()}
    for device, event in dict.fromkeys(zip(frame["device"], frame["event"])):
        cells, f1s = [], {}
        for m in methods:
            r = keyed.get((m, device, event))
            if r is None or r.status == "failed":
                cells += ["-", "-", "-"]
                continue
            f1s[m] = r.f1
            cells += [
                evaluation._num(r.f1),
                evaluation._num(r.f1_per_device),
                f"{int(r.tp)}/{int(r.fp)}/{int(r.fn)}",
            ]
        better = "-"
        if len(f1s) == 2 and all(v == v for v in f1s.values()):
            values = list(f1s.values())
            better = "same" if values[0] == values[1] else max(f1s, key=f1s.get)
        lines.append(f"| {device} | {event} | " + " | ".join(cells) + f" | {better} |")
    lines += ["", "Macro F1 per method:", ""]
    for m in methods:
        part = frame[frame["method"] == m]
        lines.append(
            f"- {m}: strict {evaluation._num(evaluation.macro_f1(part, 'f1'))}, per device "
            f"{evaluation._num(evaluation.macro_f1(part, 'f1_per_device'))}"
        )
    return lines + [""]


def summary_lines(frame: pd.DataFrame) -> list[str]:
    return [
        f"{m}: macro F1 strict {evaluation._num(evaluation.macro_f1(part, 'f1'))}, per device "
        f"{evaluation._num(evaluation.macro_f1(part, 'f1_per_device'))}"
        for m, part in frame.groupby("method", sort=False)
    ]


# ---------------------------------------------------------------------------------------
# Long captures with a times file: learn on the first half of the listed events, score the
# second half as event-detector --events does
# ---------------------------------------------------------------------------------------


@dataclass
class LongResult:
    method: str
    scores: list  # windows.Score per event
    scored: pd.DataFrame  # the scored-events table
    seconds: float


def split_times(times: pd.DataFrame, options: windows.WindowOptions) -> tuple:
    """The listed events in time order cut in two halves (the first has the odd one), and
    the time between them: the end of the first half's last window."""
    ordered = windows.event_windows(times, options)
    half = (len(ordered) + 1) // 2
    train, test = ordered.iloc[:half], ordered.iloc[half:]
    split = float(train["end"].max()) if len(test) else float("inf")
    lines = set(train["line"])
    return times[times["line"].isin(lines)], times[~times["line"].isin(lines)], split


def evaluate_long(
    flows_csvs: list[Path],
    times: pd.DataFrame,
    times_file: Path,
    device_name: str,
    device_ip: str,
    options: windows.WindowOptions,
    methods: tuple[str, ...],
    seed: int,
    output_dir: Path,
) -> tuple[list[LongResult], float, list[str]]:
    """Each method learned from the listed events of the first half (and the traffic
    around them) and scored on the second half's capture with event-detector's rules
    (windows.score_detections: recall over the listed events, false detections per day of
    the second half). Returns the results, the split time and what could not be learned."""
    train_times, test_times, split = split_times(times, options)
    units = pd.concat(
        [detector.read_flows(f, bursts=detector.bursts_beside(f).is_file()) for f in flows_csvs],
        ignore_index=True,
    )
    later = units[units["ts"] >= split].reset_index(drop=True)
    spans = {
        str(c): windows.with_extent(part, (float(part["ts"].min()), float(part["ts"].max())))
        for c, part in later.groupby("capture", observed=True)
    }
    events = sorted(set(times["event"]) - {""}) or ["event"]
    devices = dict.fromkeys(events, device_ip)
    results, notes = [], []
    for method in methods:
        started = time.perf_counter()
        if method == "ml":
            found = _long_ml(units, later, train_times, split, device_ip, options, seed)
        else:
            found = _long_signatures(
                flows_csvs, split, later, train_times, times_file, device_name, device_ip, options,
                events, output_dir, notes,
            )  # fmt: skip
        scored, scores = windows.score_detections(found, test_times, spans, options, devices)
        results.append(LongResult(method, scores, scored, time.perf_counter() - started))
    return results, split, notes


def _long_ml(units, later, train_times, split, device_ip, options, seed) -> pd.DataFrame:
    """The forest learned from the first half's units (labelled by the event window that
    holds them, else idle) and run on the second half's: a run of units predicted as one
    event, each within the event duration of the one before, is one detection."""
    from sklearn.ensemble import RandomForestClassifier

    earlier = device_units(units[units["ts"] < split].reset_index(drop=True), "", device_ip)
    labels = features.window_labels(earlier, windows.event_windows(train_times, options))
    vocabulary = {
        c: {v: i for i, v in enumerate(sorted(earlier[c].astype(str).unique()))} for c in CATEGORIES
    }
    # (idle outnumbers the events by far: weighted so that an event's few units count)
    forest = RandomForestClassifier(
        n_estimators=TREES, random_state=seed, n_jobs=1, class_weight="balanced"
    )
    forest.fit(matrix(earlier, vocabulary), labels)
    test = device_units(later, "", device_ip)
    if test.empty:
        return csvio.empty_frame(DETECTIONS)
    predicted = forest.predict(matrix(test, vocabulary))
    test = test.assign(predicted=predicted).sort_values("ts", kind="stable")
    rows = []
    for event, mine in test[test["predicted"] != features.IDLE].groupby("predicted"):
        ts = mine["ts"].to_numpy(float)
        end = ts + pd.to_numeric(mine["duration"], errors="coerce").fillna(0).to_numpy()
        run = np.cumsum(np.r_[True, np.diff(ts) > options.duration])
        for number in np.unique(run):
            at = run == number
            first = mine.iloc[np.flatnonzero(at)[0]]
            rows.append(
                {
                    "capture": first["capture"],
                    "event": event,
                    "device_name": "",
                    "device_ip": device_ip,
                    "start": round(float(ts[at].min()), 6),
                    "end": round(float(end[at].max()), 6),
                    "start_utc": utc(float(ts[at].min())),
                    "first_frame": first.get("first_frame"),
                    "status": "detected",
                    "flows": ";".join(mine["uid"].astype(str)[at]),
                }
            )
    if not rows:
        return csvio.empty_frame(DETECTIONS)
    return pd.DataFrame(rows).reindex(columns=DETECTIONS.names)


def _long_signatures(
    flows_csvs,
    later_from: float,
    later,
    train_times,
    times_file,
    device_name,
    device_ip,
    options,
    events,
    folder,
    notes: list,
) -> pd.DataFrame:
    """main.py --events' learning from the first half's listed events (each event against
    the others' windows), event-detector on the second half's units."""
    signatures = []
    flows_csvs = _before(flows_csvs, later_from, Path(folder) / "first-half")
    for event in events:
        place = Path(folder) / "signatures" / event
        (place / "windows").mkdir(parents=True, exist_ok=True)
        try:
            learned = pipeline.learn_in_windows(
                flows_csvs, train_times, times_file, place / "windows", device_name, device_ip,
                event=event, options=LearnOptions(windows=options),
            )  # fmt: skip
        except ToolError as e:  # (this event cannot be learned: the others still are)
            notes.append(f"signature of {event}: not learned: {e}")
            continue
        path = pipeline.write_signature(learned.signature, place)["signature"]
        signatures += detector.read_signatures(path)
    occurrences = []
    for capture, part in later.groupby("capture", observed=True):
        occurrences += detector.detect(part.reset_index(drop=True), str(capture), signatures)
    return detector.detections_frame(occurrences)


def _before(flows_csvs: list[Path], split: float, folder: Path) -> list[Path]:
    """The flows CSVs cut at `split` (their bursts and packets CSVs too, beside them in
    `folder`), as a user cuts the capture (editcap -B) to learn from its first half: the
    second half's unlisted events are neither background nor 'sizes seen elsewhere'."""
    folder.mkdir(parents=True, exist_ok=True)
    spans = pd.DataFrame({"start": [-np.inf], "end": [split]})
    cut = []
    for flows_csv in map(Path, flows_csvs):
        target = folder / flows_csv.name
        for source, table, written in (
            (flows_csv, FLOWS, target),
            (flows.bursts_beside(flows_csv), BURSTS, flows.bursts_beside(target)),
            (pipeline.packets_beside(flows_csv), PACKETS, pipeline.packets_beside(target)),
        ):
            if source.is_file():
                [rows] = windows.window_rows([source], spans, table)
                csvio.write_table(rows, table, written)
        cut.append(target)
    return cut


def long_markdown(
    results: list[LongResult], split: float, times_file: Path, notes: list[str]
) -> list[str]:
    lines = [
        "# Event detection on a long capture: evaluation",
        "",
        f"Times file {times_file}: the first half of its listed events (to {utc(split)}) "
        "learned, the second half scored as event-detector --events scores (a detection "
        "overlapping a listed event's window finds it; one matched to none is false).",
        "",
        "| method | event | listed | found | recall | false | days | false per day | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for s in r.scores:
            lines.append(
                f"| {r.method} | {s.event} | {s.listed} | {s.found} | "
                f"{evaluation._num(s.recall)} | {s.false} | {s.days:.2f} | "
                f"{evaluation._num(s.false_per_day)} | {r.seconds:.1f} |"
            )
    return lines + [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
