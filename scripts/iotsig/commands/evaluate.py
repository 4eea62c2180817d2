"""evaluate: learn each event's signature on part of its recordings, detect on the rest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from .. import csvio, detector, evaluation, flows, inputs, learned, pipeline, tshark
from ..cli import (
    Command,
    add_event_times_arguments,
    add_jobs_argument,
    ensure_output_dir,
    fraction,
    ipv4_or_ipv6,
    non_negative,
    positive,
    read_event_times,
    window_options,
)
from ..errors import ToolError
from ..schema import DETECTIONS, EVALUATION, SCORED_EVENTS


class Evaluate(Command):
    prog = "evaluate.py"
    description = (
        "Measure how well the project's signatures find their event again. EVENTS_DIR is "
        "laid out DEVICE/EVENT/*.pcap, one capture per recording; DEVICES_YAML maps each "
        "DEVICE to its address (name: {ipv4: ...}).\n"
        "--protocol baseline (default): for each device and event, learn the signature from "
        "a reproducible training share of the recordings (the training recordings of the "
        "device's other events as its baseline), then run event-detector with every learned "
        "signature on the held-out recordings of the event (positives), of the device's "
        "other events and of the other devices (negatives).\n"
        "--protocol user: learn each signature as main.py does, with no baseline, and run "
        "event-detector with that one signature on the held-out recordings of the event "
        "(positives) and of its physical device's other events (negatives).\n"
        "A folder DeviceApp with Device's address is the same physical device driven by "
        "another app: strict figures count its recordings as negatives; per-device figures "
        "leave out its recordings of an event with the same name. An event that cannot be "
        "learned is reported with the reason; the others still run.\n"
        "Writes OUTPUT_DIR/evaluation.csv and evaluation.md (the table, the macro F1, the "
        "confusion table, each event's signature, and the comparison with a published "
        "analysis where the event folder has an expected-tree.json), confusion.csv, "
        "detections.csv, signatures/DEVICE/EVENT/{signature.csv,pattern.txt,profile.yaml}, "
        "and every capture's CSVs in captures/."
    )
    default_output_dir = Path("output/evaluation")

    def add_arguments(self, parser):
        parser.add_argument(
            "events_dir",
            type=Path,
            nargs="?",
            metavar="EVENTS_DIR",
            help="folder of DEVICE/EVENT/*.pcap",
        )
        parser.add_argument(
            "devices",
            type=Path,
            nargs="?",
            metavar="DEVICES_YAML",
            help="device table: name -> {ipv4: address}",
        )
        parser.add_argument(
            "--train-share",
            type=fraction,
            default=0.5,
            metavar="FRACTION",
            help="share of each event's recordings to learn from (default: "
            "%(default)s; at least one recording each side)",
        )
        parser.add_argument(
            "--protocol",
            choices=evaluation.PROTOCOLS,
            default="baseline",
            help="baseline: every signature learned against the device's "
            "other events, all run at once on every recording (default); "
            "user: each signature learned as main.py does (no baseline), run "
            "alone on its device's held-out recordings",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            metavar="N",
            help="seed of the reproducible split (default: %(default)s)",
        )
        parser.add_argument(
            "--support",
            type=fraction,
            default=1.0,
            metavar="FRACTION",
            help="signature-extractor's --support (default: %(default)s)",
        )
        parser.add_argument(
            "--baseline",
            choices=evaluation.BASELINES,
            help="what a signature is learned against: the training recordings "
            "of the device's other events (the baseline protocol's default), "
            "or nothing (the user protocol's only choice)",
        )
        parser.add_argument(
            "--window",
            type=positive,
            metavar="S",
            help="event-detector's --window (default: per signature)",
        )
        parser.add_argument(
            "--tolerance",
            type=non_negative,
            default=detector.DEFAULT_TOLERANCE,
            metavar="FRACTION",
            help="event-detector's --tolerance (default: %(default)s)",
        )
        parser.add_argument(
            "--min-score",
            type=fraction,
            default=detector.DEFAULT_MIN_SCORE,
            metavar="FRACTION",
            help="event-detector's --min-score (default: %(default)s)",
        )
        parser.add_argument(
            "--method",
            choices=("signature", "ml", "both"),
            default="signature",
            help="signature: the learned signatures and event-detector (default); ml: a "
            "random forest per device on its units' features, remote party and port, on "
            "the same split and scoring; both: the two side by side",
        )
        long = parser.add_argument_group(
            "long captures (instead of EVENTS_DIR DEVICES_YAML): learn from the first half of "
            "the --events file's listed events, score the second half as event-detector does"
        )
        long.add_argument(
            "--long",
            type=Path,
            action="append",
            default=[],
            metavar="PCAP_OR_FLOWS_CSV",
            help="a long capture of the device (or its flows CSV, bursts CSV beside it)",
        )
        long.add_argument("--device-name", metavar="NAME", help="the device (--long)")
        long.add_argument("--device-ip", type=ipv4_or_ipv6, metavar="IP", help="its address")
        add_event_times_arguments(parser, detecting=True)
        add_jobs_argument(parser)

    def check_arguments(self, parser, args):
        if args.long:
            if not (args.events and args.device_ip) or args.events_dir:
                parser.error("--long takes --events and --device-ip, and no EVENTS_DIR")
        elif args.events_dir is None or args.devices is None:
            parser.error("the following arguments are required: EVENTS_DIR DEVICES_YAML")

    def run(self, args):
        if args.long:
            return self.run_long(args)
        started = time.monotonic()
        if args.protocol == "user" and args.baseline == "other-events":
            raise ToolError(
                "--protocol user learns as main.py does, with no baseline: leave --baseline out"
            )
        baseline = args.baseline or ("other-events" if args.protocol == "baseline" else "none")
        devices = evaluation.read_devices(args.devices)
        found = evaluation.discover(args.events_dir)
        tshark.tshark_path()
        output_dir = ensure_output_dir(args.output_dir)

        results, captures = [], []
        for (device, event), paths in found.items():
            if device not in devices:
                self.warn(f"{args.events_dir}/{device}: not in {args.devices}: left out")
                continue
            if len(paths) < 2:
                self.warn(
                    f"{args.events_dir}/{device}/{event}: {len(paths)} capture: "
                    "needs two at least (one to learn, one to test): left out"
                )
                continue
            train, _ = evaluation.split(paths, args.train_share, args.seed, device, event)
            train = set(train)
            event_captures = [evaluation.Capture(device, event, p, p in train) for p in paths]
            captures += event_captures
            results.append(evaluation.EventResult(device, event, event_captures))
        if not results:
            raise ToolError("no event to evaluate (see the warnings above)")

        # 1. Every capture translated once, one tshark per core.
        step = time.monotonic()
        with self.progress(
            unit=" packets", unit_scale=True, desc=f"translating {len(captures)} capture(s)"
        ) as bar:
            failures = evaluation.translate_all(
                captures, output_dir / "captures", devices, args.jobs, on_packets=bar.update
            )
        for _, problem in failures:
            self.error(str(problem))
        failed = {id(c) for c, _ in failures}
        for result in results:
            result.captures = [c for c in result.captures if id(c) not in failed]
        captures = [c for c in captures if id(c) not in failed]
        for capture in captures:
            capture.flows = detector.read_flows(capture.flows_csv)
        translate_seconds = time.monotonic() - step
        self.say(
            f"evaluate: {len(captures)} capture(s) translated in {translate_seconds:.1f} s"
            + (f"; {len(failures)} failed" if failures else "")
        )

        # 2. Signatures: one event that cannot be learned is reported, the others still run.
        step = time.monotonic()
        signatures = args.method != "ml"
        for result in results if signatures else []:
            self.learn(result, results, devices, baseline, output_dir, args)
        learn_seconds = time.monotonic() - step

        # 3. Detection, as the protocol says.
        step = time.monotonic()
        options = detector.DetectOptions(args.min_score, args.window)
        detected, occurrences, per_signature = evaluation.detect_all(
            results if signatures else [], captures, devices, args.protocol, options
        )
        detect_seconds = time.monotonic() - step
        for result in results if signatures else []:
            if result.status == "failed":
                continue
            if result.event_signatures:  # (variants share their label)
                result.detect_seconds = per_signature.get(result.event_signatures[0].label, 0.0)
            evaluation.score(result, captures, detected, devices, args.protocol)
            tree = args.events_dir / result.device / result.event / "expected-tree.json"
            if tree.is_file():
                result.comparison = evaluation.compare(
                    evaluation.paper_flows(tree), result.signature, devices[result.device]
                )

        frame = evaluation.table(results, output_dir, args.protocol)
        confusion = evaluation.confusion(results, detected)
        timings = {
            "translation": translate_seconds,
            "learning": learn_seconds,
            "detection": detect_seconds,
        }
        if args.method != "signature":  # 4. the learned classifier, on the same split
            step = time.monotonic()
            ml_results, ml_detected = learned.evaluate(
                results, captures, devices, args.protocol, args.seed
            )
            timings["ml"] = time.monotonic() - step
            ml_frame = evaluation.table(ml_results, output_dir, args.protocol, "ml")
            if args.method == "ml":
                results, frame = ml_results, ml_frame
                confusion = evaluation.confusion(ml_results, ml_detected)
            else:
                frame = pd.concat([frame, ml_frame], ignore_index=True)
        total = timings["total"] = time.monotonic() - started
        settings = {
            "protocol": args.protocol,
            "train share": args.train_share,
            "seed": args.seed,
            "support": args.support,
            "baseline": baseline,
            "tolerance": args.tolerance,
            "min score": args.min_score,
            "window": args.window or "per signature",
            "method": args.method,
        }
        paths = {
            name: output_dir / name
            for name in ("evaluation.csv", "evaluation.md", "confusion.csv", "detections.csv")
        }
        csvio.write_table(frame, EVALUATION, paths["evaluation.csv"])
        first = frame[frame["method"] == frame["method"].iloc[0]] if len(frame) else frame
        text = evaluation.markdown(
            first, results, settings, timings, output_dir, confusion, args.protocol
        )
        if args.method == "both":
            text += "\n" + "\n".join(learned.side_by_side(frame))
        csvio.write_text(paths["evaluation.md"], text)
        csvio.write_table(confusion, evaluation.confusion_table(confusion), paths["confusion.csv"])
        csvio.write_table(
            detector.detections_frame(occurrences), DETECTIONS, paths["detections.csv"]
        )
        for row in frame.itertuples():
            if row.status == "failed":
                self.say(f"{row.device}/{row.event}: failed: {row.note}")
                continue
            self.say(
                (f"{row.method}: " if args.method == "both" else "")
                + f"{row.device}/{row.event}: {row.event_patterns} pattern(s), TP {row.tp} "
                f"FP {row.fp} TN {row.tn} FN {row.fn}, precision {_fmt(row.precision)} "
                f"recall {_fmt(row.recall)} F1 {_fmt(row.f1)} (per device: FP "
                f"{row.fp_per_device}, F1 {_fmt(row.f1_per_device)})"
            )
        for path in paths.values():
            self.say(f"wrote {path}")
        evaluated = sum(r.status != "failed" for r in results)
        self.say(
            f"evaluate: {len(results)} event(s), {len(captures)} capture(s) in "
            f"{total:.1f} s (translation {translate_seconds:.1f} s, learning "
            f"{learn_seconds:.1f} s, detection {detect_seconds:.1f} s"
            + (f", ml {timings['ml']:.1f} s" if "ml" in timings else "")
            + "); "
            + (
                "; ".join(learned.summary_lines(frame))
                if args.method == "both"
                else evaluation.summary_text(frame)
            )
        )
        if not evaluated:
            raise ToolError("no event could be evaluated (see the warnings above)")
        return 1 if failures else 0

    def run_long(self, args) -> int:
        """--long: the methods on a long capture with its times file."""
        started = time.monotonic()
        times = read_event_times(args, args.device_name)
        output_dir = ensure_output_dir(args.output_dir)
        kinds = [inputs.file_kind(p, ("capture", "flows")) for p in args.long]
        flows_csvs = [p for p, k in zip(args.long, kinds) if k == "flows"]
        captures = [p for p, k in zip(args.long, kinds) if k == "capture"]
        if captures:
            tshark.tshark_path()
            options = flows.FlowOptions(device_ips=(args.device_ip,))
            folder = ensure_output_dir(output_dir / "captures")
            failed = []
            results = pipeline.captures_to_flows(
                captures, folder, args.device_ip, None, options, args.jobs
            )
            flows_csvs += [r.flows_csv for _, r in self.successes(results, failed)]
            if failed:
                raise ToolError(f"{len(failed)} capture(s) could not be read (see above)")
        methods = ("signature", "ml") if args.method == "both" else (args.method,)
        results, split, notes = learned.evaluate_long(
            flows_csvs,
            times,
            args.events,
            args.device_name or "device",
            args.device_ip,
            window_options(args),
            methods,
            args.seed,
            output_dir,
        )
        for note in notes:
            self.warn(note)
        for r in results:
            path = output_dir / f"scored-events.{r.method}.csv"
            csvio.write_table(r.scored, SCORED_EVENTS, path)
            self.say(f"wrote {path}")
            for score in r.scores:
                self.say(f"{r.method}: {score.line()}")
        path = output_dir / "evaluation.md"
        csvio.write_text(path, "\n".join(learned.long_markdown(results, split, args.events, notes)))
        self.say(f"wrote {path}")
        self.say(
            f"evaluate: {len(flows_csvs)} long capture(s) in {time.monotonic() - started:.1f} s"
        )
        return 0

    def learn(self, result, results, devices, baseline, output_dir, args) -> None:
        """Learn one event's signature; when it cannot be, the event is marked failed with
        the reason, and a one-line warning says so."""
        if not result.train or not result.test:
            result.status = "failed"
            result.note = (
                f"too few readable captures ({len(result.train)} to learn, "
                f"{len(result.test)} to test)"
            )
        else:
            others = (
                [
                    c
                    for r in results
                    if r.device == result.device and r is not result
                    for c in r.train
                ]
                if baseline == "other-events"
                else []
            )
            try:
                evaluation.learn(
                    result, others, devices[result.device], args.support, baseline, output_dir
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
            self.warn(f"{result.label}: not evaluated: {result.note}")
            return
        for warning in result.signature.warnings:
            self.warn(f"{result.label}: {warning}")
        result.event_signatures = detector.read_signatures(result.signature_csv, args.tolerance)
        if not result.detectable:
            result.status = "no event pattern"
            result.note = (
                "every flow its training recordings share is background, or they "
                "share none: it cannot be detected"
            )
            self.warn(f"{result.label}: no event pattern: it cannot be detected")


def _fmt(value) -> str:
    return "-" if value != value else f"{value:.3f}"
