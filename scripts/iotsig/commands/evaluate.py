"""evaluate: learn each event's signature on part of its recordings, detect on the rest."""

from __future__ import annotations

import time
from pathlib import Path

from .. import detector, evaluation
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
from ..evaluate import (
    EvaluationOptions,
    evaluate_events,
    evaluate_long,
    result_lines,
    summary_line,
)


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
        options = EvaluationOptions(
            args.protocol,
            args.baseline,
            args.train_share,
            args.seed,
            args.support,
            args.tolerance,
            args.min_score,
            args.window,
            args.method,
            args.jobs,
        )
        options.chosen_baseline()  # (refused before anything is read)
        output_dir = ensure_output_dir(args.output_dir)
        with self.progress(unit=" packets", unit_scale=True, desc="translating") as bar:
            done = evaluate_events(
                args.events_dir, args.devices, output_dir, options, bar.update, self.say
            )
        for _, problem in done.failures:
            self.error(str(problem))
        for line in result_lines(done, args.method):
            self.say(line)
        for path in done.paths.values():
            self.say(f"wrote {path}")
        self.say(summary_line(done, args.method))
        if not done.evaluated:
            raise ToolError("no event could be evaluated (see the warnings above)")
        return 1 if done.failures else 0

    def run_long(self, args) -> int:
        """--long: the methods on a long capture with its times file."""
        started = time.monotonic()
        times = read_event_times(args, args.device_name)
        done = evaluate_long(
            args.long,
            times,
            args.events,
            args.device_name or "device",
            args.device_ip,
            ensure_output_dir(args.output_dir),
            window_options(args),
            args.method,
            args.seed,
            args.jobs,
        )
        for r in done.results:
            for score in r.scores:
                self.say(f"{r.method}: {score.line()}")
        for path in done.paths:
            self.say(f"wrote {path}")
        self.say(
            f"evaluate: {len(done.flows_csvs)} long capture(s) in "
            f"{time.monotonic() - started:.1f} s"
        )
        return 0
