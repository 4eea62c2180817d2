#!/usr/bin/env python3
"""Leave-one-device-out check of the learned constants (not a pytest test).

    python tests/bench/lodo.py [--constants NAME ...] [--seeds 0 1 2] [--shared DIR]

"Signatures are judged on devices you have never seen": for each constant of the signature
(iotsig.signature) and the detector (iotsig.detector), each value of a few around it is set
in this process only (the module attribute, and the function defaults that were bound to it
when the module was imported) and the evaluation is run, both protocols, seeds 0-2, exactly as
evaluate.py runs it (its learn step, evaluation.detect_all, evaluation.score). Then, for each
physical device left out (a folder DeviceApp is grouped with Device, the rule of
evaluation.same_device), the value is picked that is best on the OTHER devices (their macro
F1 over the six runs, counted without the left-out device's recordings), and the left-out
device's F1 with that value is compared with its F1 with the current value.

Every capture is translated once (cached in tests/.bench/lodo/, made again when the
translator's or the flow builder's code changes); a value then costs one learning and one
detection per run. The figures of each value are kept in tests/.bench/lodo/runs.jsonl (a
value already there, for the same code, is not run again: an interrupted sweep resumes).
Writes the table to tests/bench/lodo-results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from iotsig import detector, evaluation
from iotsig import signature as sig
from iotsig.commands.evaluate import Evaluate

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "tests" / ".bench" / "lodo"
RESULTS = Path(__file__).resolve().parent / "lodo-results.md"
PROTOCOLS = ("baseline", "user")

# constant -> (module, values tried, the (function, parameter) defaults bound to it)
CONSTANTS = {
    "PROFILE_PACKETS": (sig, [3, 4, 6, 8, 10], []),
    # the flows CSV keeps the first 10 payload sizes: a wider window sees nothing more
    "PROFILE_WINDOW": (sig, [6, 8, 10], [(sig.payload_matrix, "width")]),
    "PROFILE_GAP": (sig, [8, 16, 24, 32], []),
    "PROFILE_SLACK": (sig, [0, 2, 4, 8, 16], [(sig.profile_matches, "slack")]),
    "KEEP_ALIVE_PACKETS": (sig, [0, 1, 2, 3], []),
    "MIN_VARIANT": (sig, [1, 2, 3, 4], [(sig._item_table, "needed")]),
    "DEFAULT_TOLERANCE": (detector, [0.0, 0.25, 0.5, 1.0, 2.0], []),
    "SLACK_PACKETS": (detector, [0, 1, 2, 4], []),
    "DEFAULT_MIN_SCORE": (detector, [0.5, 0.66, 0.75, 0.85, 1.0], []),
    "WINDOW_FACTOR": (detector, [1.5, 2.0, 3.0, 5.0], []),
}


def code_key(*modules: str) -> str:
    folder = REPO / "scripts" / "iotsig"
    files = [folder / m for m in modules] if modules else sorted(folder.rglob("*.py"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


@contextlib.contextmanager
def patched(name: str, value):
    """The constant set to `value` for the block: the module attribute and the defaults
    bound to it at import (a default is evaluated once, when the function is defined)."""
    module, _, bound = CONSTANTS[name]
    saved = getattr(module, name)
    defaults = [(f, f.__defaults__) for f, _ in bound]
    setattr(module, name, value)
    for function, parameter in bound:
        positional = [
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        values = list(function.__defaults__)
        values[positional.index(parameter) - (len(positional) - len(values))] = value
        function.__defaults__ = tuple(values)
    try:
        yield
    finally:
        setattr(module, name, saved)
        for function, old in defaults:
            function.__defaults__ = old


def physical_groups(names, devices: dict[str, str]) -> dict[str, str]:
    """folder -> its physical device (the shortest folder name of the same device)."""
    names = sorted(names, key=len)
    return {n: next(m for m in names if evaluation.same_device(devices, n, m)) for n in names}


def translated(found, devices, jobs: int) -> dict[Path, Path]:
    """capture -> its flows CSV, translated once per version of the translation code."""
    key = code_key("packets.py", "flows.py", "tshark.py", "pipeline.py", "csvio.py", "schema.py")
    folder = CACHE / f"captures-{key}"
    captures = [evaluation.Capture(d, e, p) for (d, e), paths in found.items() for p in paths]
    index = folder / "index.json"
    if index.is_file():
        return {Path(k): Path(v) for k, v in json.loads(index.read_text()).items()}
    print(f"lodo: translating {len(captures)} captures (once)", file=sys.stderr)
    failures = evaluation.translate_all(captures, folder, devices, jobs)
    if failures:
        sys.exit(f"lodo: {len(failures)} capture(s) could not be translated: {failures[0][1]}")
    mapping = {str(c.path): str(c.flows_csv) for c in captures}
    index.write_text(json.dumps(mapping))
    return {Path(k): Path(v) for k, v in mapping.items()}


def one_run(found, devices, flows, protocol: str, seed: int, workdir: Path):
    """evaluate.py's steps 2 and 3 (learning, detection) with the constants as they are now."""
    results, captures = [], []
    for (device, event), paths in found.items():
        train = set(evaluation.split(paths, 0.5, seed, device, event)[0])
        event_captures = [
            evaluation.Capture(device, event, p, p in train, flows=flows[p]) for p in paths
        ]
        captures += event_captures
        results.append(evaluation.EventResult(device, event, event_captures))
    baseline = "other-events" if protocol == "baseline" else "none"
    args = SimpleNamespace(support=1.0, tolerance=detector.DEFAULT_TOLERANCE)
    command = Evaluate()
    with contextlib.redirect_stderr(io.StringIO()):  # its per-event warnings, every run
        for result in results:
            command.learn(result, results, devices, baseline, workdir, args)
    options = detector.DetectOptions(detector.DEFAULT_MIN_SCORE, None)
    detected = evaluation.detect_all(results, captures, devices, protocol, options)[0]
    return results, captures, detected


def f1_per_event(results, captures, detected, devices, protocol, groups, without=None):
    """Each evaluated event's strict F1; `without` a physical device: its events and its
    recordings (as negatives too) are left out, as if it had never been recorded."""
    kept = [c for c in captures if groups[c.device] != without]
    figures = {}
    for result in results:
        if result.status == "failed" or groups[result.device] == without:
            continue
        evaluation.score(result, kept, detected, devices, protocol)
        figures[result.label] = evaluation.metrics(result)["f1"]
    return figures


def sweep_value(name, value, found, devices, flows, groups, seeds) -> dict:
    """Every run of one value: {"protocol seed": {"all": {event: f1}, group: {...}}}."""
    runs = {}
    with patched(name, value), tempfile.TemporaryDirectory(prefix="lodo-") as tmp:
        for protocol in PROTOCOLS:
            for seed in seeds:
                results, captures, detected = one_run(
                    found, devices, flows, protocol, seed, Path(tmp)
                )
                scores = {
                    "all": f1_per_event(results, captures, detected, devices, protocol, groups)
                }
                for group in sorted(set(groups.values())):
                    scores[group] = f1_per_event(
                        results, captures, detected, devices, protocol, groups, without=group
                    )
                runs[f"{protocol} {seed}"] = scores
    return runs


def load_runs(path: Path, key: str) -> dict:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["code"] == key:
                done[(record["constant"], record["value"])] = record["runs"]
    return done


def mean(values) -> float:
    values = [v for v in values if v == v]
    return statistics.fmean(values) if values else float("nan")


def held_out_f1(runs: dict, group: str, groups: dict) -> float:
    """The left-out device's F1: the mean over the runs and its events, scored as
    evaluate.py scores them (every recording)."""
    return mean(
        f1
        for scores in runs.values()
        for event, f1 in scores["all"].items()
        if groups[event.split("/")[0]] == group
    )


def _moved(runs: dict, current_runs: dict, group_names: list, groups: dict) -> str:
    """The devices whose F1 this value changes from the current value's: ' (HueLight -0.050)'."""
    moved = []
    for group in group_names:
        change = held_out_f1(runs, group, groups) - held_out_f1(current_runs, group, groups)
        if abs(change) >= 0.0005:
            moved.append(f"{group} {change:+.3f}")
    return f" ({'; '.join(moved)})" if moved else ""


def others_f1(runs: dict, group: str) -> float:
    """The other devices' macro F1, mean over the runs, without the left-out device."""
    return mean(mean(scores[group].values()) for scores in runs.values())


def choose(by_value: dict, current, group: str) -> tuple[object, list]:
    """The value best on the other devices, and the values tied with it; a tie keeps the
    current value, else the nearest to it."""
    score = {v: round(others_f1(runs, group), 6) for v, runs in by_value.items()}
    best = max(score.values())
    tied = [v for v, s in score.items() if s == best]
    chosen = current if current in tied else min(tied, key=lambda v: (abs(v - current), v))
    return chosen, tied


def _choice_text(chosen, tied: list, values: list) -> str:
    """'6', '6 (flat)' when the other devices score every value alike, '6 (= 4, 8)'."""
    if len(tied) == len(values):
        return f"{chosen:g} (flat)"
    others = [f"{v:g}" for v in tied if v != chosen]
    return f"{chosen:g}" + (f" (= {', '.join(others)})" if others else "")


def report(done: dict, groups: dict, seeds) -> str:
    group_names = sorted(set(groups.values()))
    lines = [
        "Leave-one-device-out check of the learned constants: for each physical device left "
        "out (DeviceApp grouped with Device), the value best on the other devices (their "
        f"strict macro F1, mean of {2 * len(seeds)} runs: baseline and user protocol, seeds "
        f"{', '.join(map(str, seeds))}, without the left-out device's recordings), and the "
        "left-out device's F1 (mean over its events and the runs) with that value / with the "
        "current one.",
        "",
        "| constant | current | "
        + " | ".join(f"{g} left out" for g in group_names)
        + " | stable |",
        "|---|---|" + "---|" * len(group_names) + "---|",
    ]
    sweeps = []
    for name, (module, values, _) in CONSTANTS.items():
        current = getattr(module, name)
        by_value = {v: done[(name, v)] for v in values if (name, v) in done}
        if current not in by_value:
            continue
        cells, choices = [], []
        for group in group_names:
            chosen, tied = choose(by_value, current, group)
            choices.append(chosen)
            cells.append(
                f"{_choice_text(chosen, tied, list(by_value))}: "
                f"{held_out_f1(by_value[chosen], group, groups):.3f} / "
                f"{held_out_f1(by_value[current], group, groups):.3f}"
            )
        stable = "yes" if len(set(choices)) == 1 else "no"
        lines.append(f"| {name} | {current:g} | " + " | ".join(cells) + f" | {stable} |")
        sweeps.append(
            f"| {name} | "
            + ", ".join(
                f"{'**' if v == current else ''}{v:g}: "
                f"{mean(mean(s['all'].values()) for s in by_value[v].values()):.3f}"
                f"{'**' if v == current else ''}"
                + _moved(by_value[v], by_value[current], group_names, groups)
                for v in by_value
            )
            + " |"
        )
    lines += [
        "",
        "Each value's macro F1 over all events (mean of the runs; the current value in bold), "
        "and the devices whose F1 (mean over their events and the runs) it changes:",
        "",
        "| constant | values |",
        "|---|---|",
        *sweeps,
        "",
        "Produced by `python tests/bench/lodo.py`.",
        "",
    ]
    return "\n".join(lines)


def _current(name: str):
    return getattr(CONSTANTS[name][0], name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "pcaps")
    parser.add_argument("--constants", nargs="+", choices=list(CONSTANTS), default=list(CONSTANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("-j", "--jobs", type=int, default=0)
    args = parser.parse_args()
    events = args.shared / "events"
    if not (events / "devices.yaml").is_file():
        sys.exit(f"lodo: no {events}/devices.yaml: the shared event recordings are needed")
    CACHE.mkdir(parents=True, exist_ok=True)
    devices = evaluation.read_devices(events / "devices.yaml")
    found = {k: v for k, v in evaluation.discover(events).items() if k[0] in devices}
    groups = physical_groups({d for d, _ in found}, devices)
    flows_csv = translated(found, devices, args.jobs)
    flows = {p: detector.read_flows(flows_csv[p]) for paths in found.values() for p in paths}

    key = code_key() + "-" + "-".join(map(str, args.seeds))
    store = CACHE / "runs.jsonl"
    done = load_runs(store, key)
    for name in args.constants:
        current = getattr(CONSTANTS[name][0], name)
        for value in CONSTANTS[name][1]:
            if (name, value) in done:
                continue
            if value == current:  # every constant at its current value: the same runs
                same = next((r for (n, v), r in done.items() if v == _current(n)), None)
                if same is not None:
                    done[(name, value)] = same
                    continue
            started = time.monotonic()
            runs = sweep_value(name, value, found, devices, flows, groups, args.seeds)
            done[(name, value)] = runs
            with store.open("a") as out:
                out.write(
                    json.dumps({"code": key, "constant": name, "value": value, "runs": runs}) + "\n"
                )
            macro = mean(mean(s["all"].values()) for s in runs.values())
            print(
                f"lodo: {name}={value:g}: macro F1 {macro:.3f} (mean of {len(runs)} runs) "
                f"in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    text = report(done, groups, args.seeds)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
