"""feature-extractor: captures or packets CSVs -> one feature vector per unit."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import detector, features, inputs, pipeline, tshark, windows
from ..cli import (
    Command,
    add_device_ips_argument,
    add_event_times_arguments,
    add_flow_arguments,
    add_jobs_argument,
    capture_argument,
    check_distinct_names,
    ensure_output_dir,
    jobs_for,
    non_negative,
    positive,
    read_event_times,
    window_options,
)
from ..errors import ToolError


def feature_types(text: str) -> tuple[str, ...]:
    try:
        return features.parse_features(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def packets_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more (packets per unit)")
    return value


class FeatureExtractor(Command):
    prog = "feature-extractor.py"
    description = (
        "Cut captures (translated first, as main.py does) or packets CSVs into units (flows, "
        "uniflows, bursts or fixed windows of the device's traffic) and write one feature "
        "vector per unit, netml's definitions (IAT, SIZE, IAT_SIZE, STATS, SAMP_NUM, "
        "SAMP_SIZE, optionally their FFT and the TCP flag counts), labelled by a list of "
        "event times or by a signature.\n"
        "Writes OUTPUT_DIR/features.csv and features.parquet (the same table), and each "
        "capture's packets CSV."
    )
    default_output_dir = Path("output/features")

    def add_arguments(self, parser):
        parser.add_argument(
            "inputs",
            nargs="+",
            type=capture_argument,
            metavar="PCAP_OR_PACKETS_CSV",
            help="captures (pcap/pcapng) or packets CSVs (packet-translator's)",
        )
        parser.add_argument(
            "--unit",
            choices=features.UNITS,
            default="flow",
            help="flow (both directions, as the flows CSV; default), uniflow (one direction "
            "of a 5-tuple, as netml), burst (the bursts of each flow), window (--interval "
            "seconds of the device's traffic)",
        )
        parser.add_argument(
            "--features",
            type=feature_types,
            default=("IAT",),
            metavar="TYPES",
            help=f"comma-separated, any of {', '.join(features.FEATURE_TYPES)} (default: IAT, "
            "as netml)",
        )
        parser.add_argument("--fft", action="store_true", help="the real part of each vector's FFT")
        parser.add_argument(
            "--header",
            action="store_true",
            help="add the counts of each TCP flag in the unit and the TTLs (IPv6: hop limits) "
            "of its first L packets, as netml (the packets CSV's ip_ttl)",
        )
        parser.add_argument(
            "--length",
            type=packets_count,
            metavar="N",
            help="packets per unit kept, L (default: the 90th percentile of the units' "
            "packets, as netml); a longer unit is cut, a shorter padded with zeros",
        )
        parser.add_argument(
            "--min-packets",
            type=packets_count,
            default=features.DEFAULT_MIN_PACKETS,
            metavar="N",
            help="units with fewer packets are left out (default: %(default)s, as netml)",
        )
        parser.add_argument(
            "--interval",
            type=positive,
            default=features.DEFAULT_INTERVAL,
            metavar="S",
            help="--unit window: seconds per window (default: %(default)s)",
        )
        parser.add_argument(
            "--sampling-rate",
            type=non_negative,
            metavar="S",
            help="SAMP_*: seconds per sampling window (default: the 30th percentile of the "
            "units' durations, as netml)",
        )
        add_device_ips_argument(
            parser,
            "fills the packets' direction column and chooses a window's packets (default: "
            "their direction column)",
        )
        parser.add_argument(
            "--signature",
            type=Path,
            metavar="SIGNATURE_CSV",
            help="label each unit with the event whose signature pattern its flow matches "
            "(else idle)",
        )
        add_event_times_arguments(parser, detecting=True)
        add_flow_arguments(parser)
        add_jobs_argument(parser)

    def check_arguments(self, parser, args):
        if args.events and args.signature:
            parser.error("--events and --signature both label the units: give one")

    def run(self, args):
        started = time.monotonic()
        spans = signatures = None
        if args.events:
            spans = windows.event_windows(read_event_times(args), window_options(args))
        if args.signature:
            signatures = detector.read_signatures(args.signature)
        kinds = [inputs.file_kind(p, ("capture", "packets")) for p in args.inputs]
        captures = [p for p, k in zip(args.inputs, kinds) if k == "capture"]
        output_dir = ensure_output_dir(args.output_dir)
        packet_files = [p for p, k in zip(args.inputs, kinds) if k == "packets"]
        if captures:
            tshark.tshark_path()
            check_distinct_names(captures, output_dir, "captures")
            packet_files = self.translate(captures, output_dir, args) + packet_files
        options = features.FeatureOptions(
            unit=args.unit,
            features=args.features,
            fft=args.fft,
            header=args.header,
            length=args.length,
            min_packets=args.min_packets,
            interval=args.interval,
            sampling_rate=args.sampling_rate,
            flow=pipeline.flow_options(None, None),
        )
        options.flow.idle_timeout = args.idle_timeout
        options.flow.max_duration = args.max_duration
        options.flow.burst_gap = args.burst_gap
        written = features.write_features(
            packet_files, output_dir, options, tuple(args.device_ip), spans, signatures
        )
        if not written.units:
            self.warn(
                f"no {args.unit} of {args.min_packets} packet(s) or more "
                "(--min-packets): the features files hold their header only"
            )
        for warning in written.warnings:
            self.warn(f"{args.events}: {warning}" if args.events else warning)
        labels = ", ".join(f"{k or 'unlabelled'} {v}" for k, v in sorted(written.per_label.items()))
        self.say(f"wrote {written.csv}")
        self.say(f"wrote {written.parquet}")
        self.say(
            f"feature-extractor: {written.units} {args.unit}(s) of {len(packet_files)} "
            f"packets CSV(s), L = {written.length}"
            + (
                f", sampling window {written.sampling_rate:.6g} s"
                if {"SAMP_NUM", "SAMP_SIZE"} & set(args.features)
                else ""
            )
            + f", in {time.monotonic() - started:.1f} s"
            + (f"; per label: {labels}" if labels else "")
        )
        return 0

    def translate(self, captures, output_dir: Path, args) -> list[Path]:
        """Each capture to its packets CSV in OUTPUT_DIR, as packet-translator does (one
        tshark per core, its summary said); in the order given."""
        device_ip = args.device_ip[0] if len(args.device_ip) == 1 else None
        jobs = jobs_for(captures, args.jobs)
        written, failed = self.translate_captures(captures, output_dir, None, device_ip, jobs)
        if failed:
            raise ToolError(
                f"{len(failed)} of {len(captures)} capture(s) could not be read (see above)"
            )
        done = {Path(w.capture): w.output for w in written}
        return [done[Path(c)] for c in captures]
