"""main: captures of one event -> packets CSVs -> flows CSVs -> signature, in one run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import flows, pipeline, tshark
from ..cli import (
    Command,
    add_event_times_arguments,
    add_flow_arguments,
    add_jobs_argument,
    add_signature_arguments,
    capture_argument,
    check_distinct_names,
    device_name,
    ensure_output_dir,
    event_to_learn,
    ipv4_or_ipv6,
    is_address,
    jobs_for,
    looks_like_capture,
    read_event_times,
)
from ..errors import ToolError


class Main(Command):
    prog = "main.py"
    description = (
        "Run packet-translator, stream-identifier and signature-extractor in order on "
        "captures of one device, each capture one recording of the same user event. Every "
        "intermediate CSV stays in OUTPUT_DIR (recordings without the event, given with "
        "--idle, go to OUTPUT_DIR/idle/)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "device_name", metavar="DEVICE", type=device_name, help="device name (profile name)"
        )
        parser.add_argument(
            "device_ip",
            metavar="IPV4",  # checked with DEVICE (check_arguments): the two swapped
            help="the device's IPv4 address (or IPv6)",
        )
        parser.add_argument(
            "captures",
            nargs="+",
            type=capture_argument,
            metavar="PCAP",
            help="one capture per recording of the event (with --events: long "
            "captures, cut around each listed time; - reads one from standard input)",
        )
        self.add_file_option(
            parser,
            "--idle",
            type=capture_argument,
            metavar="PCAP",
            help="a capture of the same device without the event (baseline); once per "
            "capture: --idle a.pcap --idle b.pcap (after DEVICE IPV4 PCAP..., also "
            "--idle a.pcap b.pcap)",
        )
        add_signature_arguments(parser, device_required=False)
        add_event_times_arguments(parser)
        add_flow_arguments(parser)
        add_jobs_argument(parser)
        parser.add_argument(
            "--no-report",
            action="store_true",
            help="skip the traffic report (inventory.csv, endpoint map, timeline, report.html)",
        )

    def check_arguments(self, parser, args):
        try:
            args.device_ip = ipv4_or_ipv6(args.device_ip)
        except argparse.ArgumentTypeError as e:
            if is_address(args.device_name) and looks_like_capture(args.device_ip):
                parser.error(
                    f"argument DEVICE: {args.device_name!r} is an address and IPV4 "
                    f"{args.device_ip!r} a file: the device's name is missing, it comes "
                    "first (DEVICE IPV4 PCAP ...)"
                )
            if is_address(args.device_name):
                parser.error(
                    f"argument IPV4: {args.device_ip!r} is not an IP address but DEVICE "
                    f"{args.device_name!r} is: they are swapped, the device's name comes "
                    "first (DEVICE IPV4 PCAP ...)"
                )
            parser.error(f"argument IPV4: {e}")

    def run(self, args):
        started = time.monotonic()
        if args.events:
            event_to_learn(args, read_event_times(args, args.device_name))  # errors first
        tshark.tshark_path()
        check_distinct_names(args.captures, args.output_dir, "captures")
        check_distinct_names(args.idle, args.output_dir / "idle", "captures")
        if any(tshark.is_stdin(c) for c in args.captures) and any(
            tshark.is_stdin(c) for c in args.idle
        ):
            raise ToolError("standard input (-) given twice, as a capture and as --idle")
        args.jobs = jobs_for(args.captures + args.idle, args.jobs)
        output_dir = ensure_output_dir(args.output_dir)
        options = flows.FlowOptions(
            args.idle_timeout, args.max_duration, (args.device_ip,), args.burst_gap
        )
        event_flows = self.captures_to_flows(args.captures, output_dir, args, options)
        idle_flows = []
        if args.idle:
            idle_dir = ensure_output_dir(output_dir / "idle")
            idle_flows = self.captures_to_flows(args.idle, idle_dir, args, options)

        self.learn_and_write(event_flows, idle_flows, args, output_dir)

        report = None if args.no_report else self.report(event_flows, output_dir, args)
        self.say(
            f"main: done in {time.monotonic() - started:.1f} s; every intermediate CSV "
            f"is in {output_dir}/" + (f"; to look at it all, open {report}" if report else "")
        )
        return 0

    def captures_to_flows(self, captures, output_dir, args, options) -> list[Path]:
        """Each capture through packet-translator and stream-identifier (one worker per
        core); the flows CSVs in the order the captures were given."""
        started = time.monotonic()
        done, failed = {}, []
        with self.progress(
            unit=" packets", unit_scale=True, desc=f"translating {len(captures)} capture(s)"
        ) as bar:
            results = pipeline.captures_to_flows(
                captures,
                output_dir,
                args.device_ip,
                args.device_mac,
                options,
                args.jobs,
                on_packets=bar.update,
            )
            for capture, result in self.successes(results, failed):
                done[Path(capture)] = result
        if failed:
            raise ToolError(
                f"{len(failed)} of {len(captures)} capture(s) could not be read "
                "(see above): fix or leave them out, a signature needs every "
                "recording it is given"
            )
        converted = [done[Path(c)] for c in captures]
        elapsed = time.monotonic() - started
        flows_seconds = sum(c.flows.seconds for c in converted)
        for line in pipeline.translated_lines(
            [c.translation for c in converted], 0, elapsed - flows_seconds
        ):
            self.say(line)
        self.say("")
        for line in pipeline.flows_lines([c.flows for c in converted], 0, flows_seconds):
            self.say(line)
        self.say("")
        return [c.flows_csv for c in converted]

    def report(self, flow_files, output_dir: Path, args):
        """The last step: the traffic report of the event recordings just processed (their
        packets CSVs beside the flows CSVs). Returns report.html's path, or None when it
        could not be made: the signature is written by then, so that is a warning."""
        packet_files = [p for p in map(pipeline.packets_beside, flow_files) if p.is_file()]
        self.say("")
        try:
            result = self.traffic_report(
                [*packet_files, *flow_files],
                output_dir,
                device_ip=args.device_ip,
                device_mac=args.device_mac,
                device_name=args.device_name,
                signature=output_dir / "signature.csv",
                pattern=output_dir / "pattern.txt",
                events=read_event_times(args, args.device_name) if args.events else None,
            )
        except ToolError as e:
            self.warn(f"no traffic report: {e}")
            return None
        return result.paths["report"]
