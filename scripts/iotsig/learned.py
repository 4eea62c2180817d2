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

import numpy as np
import pandas as pd

from . import detector, evaluation
from . import signature as sig

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
