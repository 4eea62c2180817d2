"""main: captures of one event -> packets CSVs -> flows CSVs -> signature, in one run."""

from __future__ import annotations

import time
from pathlib import Path

from .. import flows, tshark
from ..cli import Command, check_distinct_names, ensure_output_dir, ipv4
from ..errors import ToolError
from .packet_translator import translate_captures
from .signature_extractor import add_signature_arguments, extract_and_write
from .stream_identifier import add_flow_arguments, identify_streams
from .traffic_report import report_after_main


class Main(Command):
    prog = "main.py"
    description = (
        "Run packet-translator, stream-identifier and signature-extractor in order on "
        "captures of one device, each capture one recording of the same user event. Every "
        "intermediate CSV stays in OUTPUT_DIR (recordings without the event, given with "
        "--idle, go to OUTPUT_DIR/idle/).")

    def add_arguments(self, parser):
        parser.add_argument("device_name", metavar="DEVICE", help="device name (profile name)")
        parser.add_argument("device_ip", metavar="IPV4", type=ipv4, help="the device's IPv4 address")
        parser.add_argument("captures", nargs="+", type=Path, metavar="PCAP",
                            help="one capture per recording of the event")
        parser.add_argument("--idle", nargs="+", type=Path, default=[], metavar="PCAP",
                            help="captures of the same device without the event (baseline)")
        add_signature_arguments(parser, device_required=False)
        add_flow_arguments(parser)
        parser.add_argument("-j", "--jobs", type=int, default=0,
                            help="captures translated at once (default: one per core)")
        parser.add_argument("--no-report", action="store_true",
                            help="skip the traffic report (inventory.csv, endpoint map, "
                            "timeline, report.html)")

    def run(self, args):
        started = time.monotonic()
        tshark.tshark_path()
        check_distinct_names(args.captures, args.output_dir, "captures")
        check_distinct_names(args.idle, args.output_dir / "idle", "captures")
        output_dir = ensure_output_dir(args.output_dir)
        options = flows.FlowOptions(args.idle_timeout, args.max_duration, (args.device_ip,))
        event_flows = self.captures_to_flows(args.captures, output_dir, args, options)
        idle_flows = []
        if args.idle:
            idle_dir = ensure_output_dir(output_dir / "idle")
            idle_flows = self.captures_to_flows(args.idle, idle_dir, args, options)
        extract_and_write(self, event_flows, idle_flows, args, output_dir)
        report = None if args.no_report else report_after_main(self, event_flows, output_dir, args)
        self.say(f"main: done in {time.monotonic() - started:.1f} s; every intermediate CSV "
                 f"is in {output_dir}/" + (f"; to look at it all, open {report}" if report else ""))
        return 0

    def captures_to_flows(self, captures, output_dir, args, options) -> list[Path]:
        translated, failed = translate_captures(self, captures, output_dir, args.device_mac,
                                                args.device_ip, args.jobs)
        if failed:
            raise ToolError(f"{len(failed)} of {len(captures)} capture(s) could not be read "
                            "(see above): fix or leave them out, a signature needs every "
                            "recording it is given")
        order = {Path(c): i for i, c in enumerate(captures)}
        packet_files = [t.output for t in sorted(translated, key=lambda t: order[Path(t.capture)])]
        self.say("")
        flow_files, failed = identify_streams(self, packet_files, output_dir, options)
        if failed:
            raise ToolError("could not build the flows of every recording (see above)")
        self.say("")
        return flow_files
