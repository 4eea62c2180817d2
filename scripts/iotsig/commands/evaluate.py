"""evaluate: learn each event's signature on part of its recordings, detect on the rest."""

from __future__ import annotations

import time
from pathlib import Path

from .. import csvio, detector, evaluation, tshark
from ..cli import Command, ensure_output_dir, fraction, non_negative, positive
from ..errors import ToolError
from ..schema import DETECTIONS, EVALUATION


class Evaluate(Command):
    prog = "evaluate.py"
    description = (
        "Measure how well the project's signatures find their event again. EVENTS_DIR is "
        "laid out DEVICE/EVENT/*.pcap, one capture per recording; DEVICES_YAML maps each "
        "DEVICE to its address (name: {ipv4: ...}).\n"
        "For each device and event: learn the signature from a reproducible training share "
        "of the recordings (the training recordings of the device's other events as its "
        "baseline), then run event-detector with every learned signature on the held-out "
        "recordings of the event (positives), of the device's other events and of the other "
        "devices (negatives).\n"
        "Writes OUTPUT_DIR/evaluation.csv and evaluation.md (the table, each event's "
        "signature, and the comparison with a published analysis where the event folder has "
        "an expected-tree.json), detections.csv, signatures/DEVICE/EVENT/{signature.csv,"
        "pattern.txt}, and every capture's CSVs in captures/.")
    default_output_dir = Path("output/evaluation")

    def add_arguments(self, parser):
        parser.add_argument("events_dir", type=Path, metavar="EVENTS_DIR",
                            help="folder of DEVICE/EVENT/*.pcap")
        parser.add_argument("devices", type=Path, metavar="DEVICES_YAML",
                            help="device table: name -> {ipv4: address}")
        parser.add_argument("--train-share", type=fraction, default=0.5, metavar="FRACTION",
                            help="share of each event's recordings to learn from (default: "
                            "%(default)s; at least one recording each side)")
        parser.add_argument("--seed", type=int, default=0, metavar="N",
                            help="seed of the reproducible split (default: %(default)s)")
        parser.add_argument("--support", type=fraction, default=1.0, metavar="FRACTION",
                            help="signature-extractor's --support (default: %(default)s)")
        parser.add_argument("--baseline", choices=evaluation.BASELINES, default="other-events",
                            help="what a signature is learned against: the training recordings "
                            "of the device's other events (default), or nothing")
        parser.add_argument("--window", type=positive, metavar="S",
                            help="event-detector's --window (default: per signature)")
        parser.add_argument("--tolerance", type=non_negative,
                            default=detector.DEFAULT_TOLERANCE, metavar="FRACTION",
                            help="event-detector's --tolerance (default: %(default)s)")
        parser.add_argument("--min-score", type=fraction, default=detector.DEFAULT_MIN_SCORE,
                            metavar="FRACTION",
                            help="event-detector's --min-score (default: %(default)s)")
        parser.add_argument("-j", "--jobs", type=int, default=0,
                            help="captures translated at once (default: one per core)")

    def run(self, args):
        started = time.monotonic()
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
                self.warn(f"{args.events_dir}/{device}/{event}: {len(paths)} capture: "
                          "needs two at least (one to learn, one to test): left out")
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
        with self.progress(unit=" packets", unit_scale=True,
                           desc=f"translating {len(captures)} capture(s)") as bar:
            failures = evaluation.translate_all(captures, output_dir / "captures", devices,
                                                args.jobs, on_packets=bar.update)
        for capture, problem in failures:
            self.error(str(problem))
        failed = {id(c) for c, _ in failures}
        for result in results:
            result.captures = [c for c in result.captures if id(c) not in failed]
        captures = [c for c in captures if id(c) not in failed]
        for capture in captures:
            capture.flows = detector.read_flows(capture.flows_csv)
        translate_seconds = time.monotonic() - step
        self.say(f"evaluate: {len(captures)} capture(s) translated in {translate_seconds:.1f} s"
                 + (f"; {len(failures)} failed" if failures else ""))

        # 2. Signatures, each against the same device's other events.
        step = time.monotonic()
        for result in results:
            if not result.train or not result.test:
                self.warn(f"{result.device}/{result.event}: too few readable captures: left out")
                continue
            others = [c for r in results if r.device == result.device and r is not result
                      for c in r.train]
            result_ip = devices[result.device]
            evaluation.learn(result, others, result_ip, args.support, args.baseline, output_dir)
            for warning in result.signature.warnings:
                self.warn(f"{result.device}/{result.event}: {warning}")
            signatures = detector.read_signatures(result.signature_csv, args.tolerance)
            result.event_signature = signatures[0] if signatures else None
            if result.event_signature and not result.event_signature.patterns:
                self.warn(f"{result.device}/{result.event}: no event pattern: it cannot be "
                          "detected")
        learn_seconds = time.monotonic() - step
        results = [r for r in results if r.event_signature is not None]

        # 3. Detection with every signature at once, on every capture.
        step = time.monotonic()
        signatures = [r.event_signature for r in results if r.event_signature.patterns]
        options = detector.DetectOptions(args.min_score, args.window)
        per_signature, detected, occurrences = {}, {}, []
        for capture in captures:
            found_here = detector.detect(capture.flows, capture.name, signatures, options,
                                         per_signature)
            occurrences += found_here
            detected[capture.name] = {(o.signature.device_name, o.signature.event)
                                      for o in found_here if o.status == "detected"}
        detect_seconds = time.monotonic() - step
        for result in results:
            result.detect_seconds = per_signature.get(result.event_signature.label, 0.0)
            evaluation.score(result, captures, detected)
            tree = args.events_dir / result.device / result.event / "expected-tree.json"
            if tree.is_file():
                result.comparison = evaluation.compare(evaluation.paper_flows(tree),
                                                       result.signature, devices[result.device])

        frame = evaluation.table(results, output_dir)
        total = time.monotonic() - started
        timings = {"translation": translate_seconds, "learning": learn_seconds,
                   "detection": detect_seconds, "total": total}
        settings = {"train share": args.train_share, "seed": args.seed,
                    "support": args.support, "baseline": args.baseline,
                    "tolerance": args.tolerance, "min score": args.min_score,
                    "window": args.window or "per signature"}
        paths = {name: output_dir / name for name in
                 ("evaluation.csv", "evaluation.md", "detections.csv")}
        csvio.write_table(frame, EVALUATION, paths["evaluation.csv"])
        csvio.write_text(paths["evaluation.md"],
                         evaluation.markdown(frame, results, settings, timings, output_dir))
        csvio.write_table(detector.detections_frame(occurrences), DETECTIONS,
                          paths["detections.csv"])
        for row in frame.itertuples():
            self.say(f"{row.device}/{row.event}: {row.event_patterns} pattern(s), TP {row.tp} "
                     f"FP {row.fp} TN {row.tn} FN {row.fn}, precision {_fmt(row.precision)} "
                     f"recall {_fmt(row.recall)} F1 {_fmt(row.f1)}")
        for path in paths.values():
            self.say(f"wrote {path}")
        self.say(f"evaluate: {len(results)} event(s), {len(captures)} capture(s) in "
                 f"{total:.1f} s (translation {translate_seconds:.1f} s, learning "
                 f"{learn_seconds:.1f} s, detection {detect_seconds:.1f} s)")
        return 1 if failures else 0


def _fmt(value) -> str:
    return "-" if value != value else f"{value:.3f}"
