"""evaluate.py's workflow: learn each event's signature (or a learned classifier) on part of
its recordings, detect on the rest, score and write the tables. The command only parses its
arguments and says what this returns; a notebook can run the same evaluation."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import csvio, detector, evaluation, flows, inputs, learned, pipeline, tshark, windows
from .errors import ToolError, warn
from .schema import DETECTIONS, EVALUATION, SCORED_EVENTS


@dataclass(frozen=True)
class EvaluationOptions:
    """evaluate.py's options (see its --help): the split, the protocol and the method, and
    the detector's settings."""

    protocol: str = "baseline"  # evaluation.PROTOCOLS
    baseline: str | None = None  # evaluation.BASELINES; None: the protocol's own
    train_share: float = 0.5
    seed: int = 0
    support: float = 1.0
    tolerance: float = detector.DEFAULT_TOLERANCE
    min_score: float = detector.DEFAULT_MIN_SCORE
    window: float | None = None
    method: str = "signature"  # signature, ml or both
    jobs: object = 0  # parallel.Workers or a count

    def chosen_baseline(self) -> str:
        if self.protocol == "user" and self.baseline == "other-events":
            raise ToolError(
                "--protocol user learns as main.py does, with no baseline: leave --baseline out"
            )
        return self.baseline or ("other-events" if self.protocol == "baseline" else "none")


@dataclass
class Evaluation:
    """What evaluate_events did: the table (evaluation.csv's rows), the files it wrote, the
    events and captures, the captures that could not be read, and the seconds per step."""

    frame: pd.DataFrame
    results: list[evaluation.EventResult]
    captures: list[evaluation.Capture]
    failures: list[tuple[evaluation.Capture, ToolError]]
    paths: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def evaluated(self) -> int:
        return sum(r.status != "failed" for r in self.results)


def evaluate_events(
    events_dir: Path,
    devices_yaml: Path,
    output_dir: Path,
    options: EvaluationOptions | None = None,
    on_packets: Callable[[int], None] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> Evaluation:
    """The evaluation of EVENTS_DIR/DEVICE/EVENT/*.pcap (devices and addresses in
    DEVICES_YAML) into OUTPUT_DIR: evaluation.csv and .md, confusion.csv, detections.csv,
    the signatures and the captures' CSVs. What it leaves out or cannot learn is warned
    (IotsigWarning); `say` gets a line when the translation is done."""
    options = options or EvaluationOptions()
    started = time.monotonic()
    baseline = options.chosen_baseline()
    devices = evaluation.read_devices(devices_yaml)
    results, captures = _events(events_dir, devices_yaml, devices, options)
    tshark.tshark_path()

    # 1. Every capture translated once, one tshark per core.
    step = time.monotonic()
    failures = evaluation.translate_all(
        captures, Path(output_dir) / "captures", devices, options.jobs, on_packets=on_packets
    )
    failed = {id(c) for c, _ in failures}
    for result in results:
        result.captures = [c for c in result.captures if id(c) not in failed]
    captures = [c for c in captures if id(c) not in failed]
    for capture in captures:
        capture.flows = detector.read_flows(capture.flows_csv)
    timings = {"translation": time.monotonic() - step}
    say(
        f"evaluate: {len(captures)} capture(s) translated in {timings['translation']:.1f} s"
        + (f"; {len(failures)} failed" if failures else "")
    )

    # 2. Signatures: one event that cannot be learned is reported, the others still run.
    step = time.monotonic()
    signatures = options.method != "ml"
    for result in results if signatures else []:
        learn_event(result, results, devices, baseline, output_dir, options)
    timings["learning"] = time.monotonic() - step

    # 3. Detection, as the protocol says.
    step = time.monotonic()
    detected, occurrences, per_signature = evaluation.detect_all(
        results if signatures else [],
        captures,
        devices,
        options.protocol,
        detector.DetectOptions(options.min_score, options.window),
    )
    timings["detection"] = time.monotonic() - step
    for result in results if signatures else []:
        if result.status == "failed":
            continue
        if result.event_signatures:  # (variants share their label)
            result.detect_seconds = per_signature.get(result.event_signatures[0].label, 0.0)
        evaluation.score(result, captures, detected, devices, options.protocol)
        tree = Path(events_dir) / result.device / result.event / "expected-tree.json"
        if tree.is_file():
            result.comparison = evaluation.compare(
                evaluation.paper_flows(tree), result.signature, devices[result.device]
            )
    frame = evaluation.table(results, output_dir, options.protocol)
    confusion = evaluation.confusion(results, detected)

    if options.method != "signature":  # 4. the learned classifier, on the same split
        step = time.monotonic()
        ml_results, ml_detected = learned.evaluate(
            results, captures, devices, options.protocol, options.seed
        )
        timings["ml"] = time.monotonic() - step
        ml_frame = evaluation.table(ml_results, output_dir, options.protocol, "ml")
        if options.method == "ml":
            results, frame = ml_results, ml_frame
            confusion = evaluation.confusion(ml_results, ml_detected)
        else:
            frame = pd.concat([frame, ml_frame], ignore_index=True)
    timings["total"] = time.monotonic() - started
    paths = _write(frame, results, confusion, occurrences, timings, baseline, options, output_dir)
    return Evaluation(frame, results, captures, failures, paths, timings)


def _events(events_dir, devices_yaml, devices, options) -> tuple[list, list]:
    """Each event with enough recordings, split into training and held-out ones."""
    results, captures = [], []
    for (device, event), paths in evaluation.discover(events_dir).items():
        if device not in devices:
            warn(f"{events_dir}/{device}: not in {devices_yaml}: left out")
            continue
        if len(paths) < 2:
            warn(
                f"{events_dir}/{device}/{event}: {len(paths)} capture: "
                "needs two at least (one to learn, one to test): left out"
            )
            continue
        train, _ = evaluation.split(paths, options.train_share, options.seed, device, event)
        train = set(train)
        event_captures = [evaluation.Capture(device, event, p, p in train) for p in paths]
        captures += event_captures
        results.append(evaluation.EventResult(device, event, event_captures))
    if not results:
        raise ToolError("no event to evaluate (see the warnings above)")
    return results, captures


def learn_event(result, results, devices, baseline, output_dir, options) -> None:
    """Learn one event's signature; when it cannot be, the event is marked failed with the
    reason, and a warning says so."""
    if not result.train or not result.test:
        result.status = "failed"
        result.note = (
            f"too few readable captures ({len(result.train)} to learn, {len(result.test)} to test)"
        )
    else:
        others = (
            [c for r in results if r.device == result.device and r is not result for c in r.train]
            if baseline == "other-events"
            else []
        )
        try:
            evaluation.learn(
                result, others, devices[result.device], options.support, baseline, output_dir
            )
        except ToolError as e:
            result.status, result.note = "failed", str(e)
        except Exception as e:  # a bug on this event's data: the others still run
            if os.environ.get("IOTSIG_DEBUG"):
                raise
            result.status = "failed"
            result.note = (
                f"internal error: {type(e).__name__}: {e} (run again with "
                "IOTSIG_DEBUG=1 for a traceback, and report it)"
            )
    if result.status == "failed":
        warn(f"{result.label}: not evaluated: {result.note}")
        return
    for warning in result.signature.warnings:
        warn(f"{result.label}: {warning}")
    result.event_signatures = detector.read_signatures(result.signature_csv, options.tolerance)
    if not result.detectable:
        result.status = "no event pattern"
        result.note = (
            "every flow its training recordings share is background, or they "
            "share none: it cannot be detected"
        )
        warn(f"{result.label}: no event pattern: it cannot be detected")


def _write(frame, results, confusion, occurrences, timings, baseline, options, output_dir):
    settings = {
        "protocol": options.protocol,
        "train share": options.train_share,
        "seed": options.seed,
        "support": options.support,
        "baseline": baseline,
        "tolerance": options.tolerance,
        "min score": options.min_score,
        "window": options.window or "per signature",
        "method": options.method,
    }
    paths = {
        name: Path(output_dir) / name
        for name in ("evaluation.csv", "evaluation.md", "confusion.csv", "detections.csv")
    }
    csvio.write_table(frame, EVALUATION, paths["evaluation.csv"])
    first = frame[frame["method"] == frame["method"].iloc[0]] if len(frame) else frame
    text = evaluation.markdown(
        first, results, settings, timings, output_dir, confusion, options.protocol
    )
    if options.method == "both":
        text += "\n" + "\n".join(learned.side_by_side(frame))
    csvio.write_text(paths["evaluation.md"], text)
    csvio.write_table(confusion, evaluation.confusion_table(confusion), paths["confusion.csv"])
    csvio.write_table(detector.detections_frame(occurrences), DETECTIONS, paths["detections.csv"])
    return paths


def result_lines(done: Evaluation, method: str) -> list[str]:
    """A line per event and method (its pattern count and scores), as the command says."""
    lines = []
    for row in done.frame.itertuples():
        if row.status == "failed":
            lines.append(f"{row.device}/{row.event}: failed: {row.note}")
            continue
        lines.append(
            (f"{row.method}: " if method == "both" else "")
            + f"{row.device}/{row.event}: {row.event_patterns} pattern(s), TP {row.tp} "
            f"FP {row.fp} TN {row.tn} FN {row.fn}, precision {_fmt(row.precision)} "
            f"recall {_fmt(row.recall)} F1 {_fmt(row.f1)} (per device: FP "
            f"{row.fp_per_device}, F1 {_fmt(row.f1_per_device)})"
        )
    return lines


def summary_line(done: Evaluation, method: str) -> str:
    t = done.timings
    return (
        f"evaluate: {len(done.results)} event(s), {len(done.captures)} capture(s) in "
        f"{t['total']:.1f} s (translation {t['translation']:.1f} s, learning "
        f"{t['learning']:.1f} s, detection {t['detection']:.1f} s"
        + (f", ml {t['ml']:.1f} s" if "ml" in t else "")
        + "); "
        + (
            "; ".join(learned.summary_lines(done.frame))
            if method == "both"
            else evaluation.summary_text(done.frame)
        )
    )


def _fmt(value) -> str:
    return "-" if value != value else f"{value:.3f}"


# ---------------------------------------------------------------------------------------
# --long: a long capture and its times file
# ---------------------------------------------------------------------------------------


@dataclass
class LongEvaluation:
    results: list[learned.LongResult]
    flows_csvs: list[Path]
    paths: list[Path]
    notes: list[str]


def evaluate_long(
    sources: list[Path],
    times: pd.DataFrame,
    times_file: Path,
    device_name: str,
    device_ip: str,
    output_dir: Path,
    window_options: windows.WindowOptions,
    method: str = "signature",
    seed: int = 0,
    jobs=0,
) -> LongEvaluation:
    """The methods on long captures (or their flows CSVs) with their times file: learned
    from the first half of the listed events, the second half scored as event-detector
    scores (scored-events.METHOD.csv, evaluation.md in OUTPUT_DIR)."""
    kinds = [inputs.file_kind(p, ("capture", "flows")) for p in sources]
    flows_csvs = [p for p, k in zip(sources, kinds) if k == "flows"]
    captures = [p for p, k in zip(sources, kinds) if k == "capture"]
    if captures:
        tshark.tshark_path()
        options = flows.FlowOptions(device_ips=(device_ip,))
        folder = Path(output_dir) / "captures"
        folder.mkdir(parents=True, exist_ok=True)
        failed = 0
        for _, result in pipeline.captures_to_flows(
            captures, folder, device_ip, None, options, jobs
        ):
            if isinstance(result, ToolError):
                warn(str(result))
                failed += 1
                continue
            for message in result.warnings:
                warn(message)
            flows_csvs.append(result.flows_csv)
        if failed:
            raise ToolError(f"{failed} capture(s) could not be read (see above)")
    methods = ("signature", "ml") if method == "both" else (method,)
    results, split, notes = learned.evaluate_long(
        flows_csvs,
        times,
        times_file,
        device_name,
        device_ip,
        window_options,
        methods,
        seed,
        output_dir,
    )
    paths = []
    for r in results:
        path = Path(output_dir) / f"scored-events.{r.method}.csv"
        csvio.write_table(r.scored, SCORED_EVENTS, path)
        paths.append(path)
    path = Path(output_dir) / "evaluation.md"
    csvio.write_text(path, "\n".join(learned.long_markdown(results, split, times_file, notes)))
    paths.append(path)
    return LongEvaluation(results, flows_csvs, paths, notes)
