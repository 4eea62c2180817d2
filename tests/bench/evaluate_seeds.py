#!/usr/bin/env python3
"""evaluate.py --method both on several seeds and both protocols: macro F1 per seed and method.

    python tests/bench/evaluate_seeds.py [--seeds 0,1,2,3,4] [--protocols baseline,user]
                                         [--events DIR] [--runs DIR]

Each run is `evaluate.py EVENTS EVENTS/devices.yaml --protocol P --seed N --method both -o
RUNS/P-sN` (default EVENTS ../shared/pcaps/events, RUNS tests/.bench/evaluate-seeds). A run
whose evaluation.csv is already there is read, not run again (remove RUNS to run anew).
Writes tests/bench/evaluate-seeds-results.md: per protocol and method the strict and
per-device macro F1 of every seed and their mean, then per event its mean F1 over the seeds
and in how many seeds the forest beats, ties or loses to the signatures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from iotsig import evaluation  # noqa: E402

EVALUATE = REPO / "scripts" / "evaluate.py"
RESULTS = Path(__file__).resolve().parent / "evaluate-seeds-results.md"


def run(events: Path, protocol: str, seed: int, out: Path) -> tuple[pd.DataFrame, float | None]:
    """The run's evaluation.csv (made unless there), and its wall time when made here."""
    csv = out / "evaluation.csv"
    wall = None
    if not csv.is_file():
        started = time.monotonic()
        command = [sys.executable, EVALUATE, events, events / "devices.yaml", "--protocol"]
        command += [protocol, "--seed", str(seed), "--method", "both", "-o", out, "-q"]
        subprocess.run(command, check=True)
        wall = time.monotonic() - started
    frame = pd.read_csv(csv)
    frame["seed"] = seed
    return frame, wall


def _f(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def markdown(frames: dict[str, pd.DataFrame], seeds: list[int], events: Path, walls) -> str:
    lines = [
        f"`evaluate.py --method both` on {os.path.relpath(events, REPO)} "
        f"({datetime.date.today()}), seeds {', '.join(map(str, seeds))}, protocol(s) "
        f"{', '.join(frames)}: the signatures against the learned "
        "classifier (a random forest per device, iotsig/learned.py) on the same splits. "
        "Macro F1: the mean F1 over the events evaluated (evaluation.macro_f1).",
        "",
        "| protocol | method | figure | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | min |",
        "|---|---|---|" + "---:|" * (len(seeds) + 2),
    ]
    for protocol, frame in frames.items():
        for method, part in frame.groupby("method", sort=False):
            for column, name in (("f1", "strict"), ("f1_per_device", "per device")):
                per_seed = [evaluation.macro_f1(part[part["seed"] == s], column) for s in seeds]
                mean, low = sum(per_seed) / len(per_seed), min(per_seed)
                bold = "**" if name == "strict" else ""
                lines.append(
                    f"| {protocol} | {method} | {name} | "
                    + " | ".join(_f(v) for v in per_seed)
                    + f" | {bold}{_f(mean)}{bold} | {_f(low)} |"
                )
    lines += [
        "",
        "Per event: the mean strict F1 over the seeds of each method, and in how many seeds "
        "the forest's strict F1 is above, equal to or below the signatures' (ml +/=/-); "
        "TP/FP/FN summed over the seeds.",
        "",
        "| event | "
        + " | ".join(
            f"{p} signature | {p} ml | {p} ml +/=/- | {p} signature TP/FP/FN | {p} ml TP/FP/FN"
            for p in frames
        )
        + " |",
        "|---|" + "---:|---:|---|---|---|" * len(frames),
    ]
    first = next(iter(frames.values()))
    for device, event in dict.fromkeys(zip(first["device"], first["event"])):
        cells = []
        for frame in frames.values():
            mine = frame[(frame["device"] == device) & (frame["event"] == event)]
            by = {m: part.set_index("seed") for m, part in mine.groupby("method")}
            sig, ml = by["signature"], by["ml"]
            diff = (ml["f1"] - sig["f1"]).round(9)
            cells += [
                _f(sig["f1"].mean()),
                _f(ml["f1"].mean()),
                f"{int((diff > 0).sum())}/{int((diff == 0).sum())}/{int((diff < 0).sum())}",
                "/".join(str(int(sig[c].sum())) for c in ("tp", "fp", "fn")),
                "/".join(str(int(ml[c].sum())) for c in ("tp", "fp", "fn")),
            ]
        lines.append(f"| {device}/{event} | " + " | ".join(cells) + " |")
    made = [w for w in walls if w is not None]
    lines += [
        "",
        "Each run: `python scripts/evaluate.py EVENTS EVENTS/devices.yaml --protocol P --seed N "
        "--method both -o DIR`"
        + (
            f"; {len(made)} run(s) made here, {min(made):.0f}-{max(made):.0f} s wall each."
            if made
            else " (runs read from their output folders)."
        ),
        "",
        "Produced by `python tests/bench/evaluate_seeds.py`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--protocols", default="baseline,user")
    parser.add_argument("--events", type=Path, default=REPO.parent / "shared" / "pcaps" / "events")
    parser.add_argument("--runs", type=Path, default=REPO / "tests" / ".bench" / "evaluate-seeds")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    frames, walls = {}, []
    for protocol in args.protocols.split(","):
        parts = []
        for seed in seeds:
            frame, wall = run(args.events, protocol, seed, args.runs / f"{protocol}-s{seed}")
            parts.append(frame)
            walls.append(wall)
        frames[protocol] = pd.concat(parts, ignore_index=True)
    text = markdown(frames, seeds, args.events, walls)
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
