"""traffic-report: packets and/or flows CSVs -> inventory.csv, endpoint-map.png/.svg,
timeline.png and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path

from ..cli import (
    Command,
    add_event_times_arguments,
    ensure_output_dir,
    ipv4_or_ipv6,
    mac_address,
    read_event_times,
)


class TrafficReport(Command):
    prog = "traffic-report.py"
    description = (
        "Look at the traffic before reading it: a device inventory (every MAC, its vendor, "
        "addresses, DHCP host name, traffic), an endpoint map of the device under study, an "
        "activity timeline with the signature's patterns marked, and report.html tying them "
        "together (one file, viewable offline).\n"
        "Give packets CSVs (packet-translator) and/or flows CSVs (stream-identifier), told "
        "apart by their header: the inventory needs packets; the map and timeline use flows "
        "(rebuilt from the packets when only those are given).\n"
        "Writes OUTPUT_DIR/inventory.csv, endpoint-map.png, endpoint-map.svg, timeline.png "
        "and report.html."
    )

    def add_arguments(self, parser):
        parser.add_argument("inputs", nargs="+", type=Path, metavar="PACKETS_OR_FLOWS_CSV")
        parser.add_argument(
            "--device-ip",
            type=ipv4_or_ipv6,
            metavar="IP",
            help="address of the device under study (default: the "
            "signature's, else the CSVs' device_side/direction columns)",
        )
        parser.add_argument(
            "--device-mac",
            type=mac_address,
            metavar="MAC",
            help="MAC of the device under study (default: the MAC that sends from its address)",
        )
        parser.add_argument(
            "--device-name",
            metavar="NAME",
            help="name shown for the device (default: the signature's)",
        )
        parser.add_argument(
            "--signature",
            type=Path,
            metavar="SIGNATURE_CSV",
            help="signature-extractor's signature.csv: its patterns are marked "
            "on the timeline, and pattern.txt beside it goes in the report",
        )
        parser.add_argument(
            "--pattern",
            type=Path,
            metavar="PATTERN_TXT",
            help="pattern.txt to include (default: the one beside --signature)",
        )
        parser.add_argument(
            "--detections",
            type=Path,
            metavar="DETECTIONS_CSV",
            help="event-detector's detections.csv: each detection drawn on the timeline",
        )
        add_event_times_arguments(parser, drawing=True)

    def run(self, args):
        events = read_event_times(args, args.device_name) if args.events else None
        output_dir = ensure_output_dir(args.output_dir)
        self.traffic_report(
            args.inputs,
            output_dir,
            device_ip=args.device_ip,
            device_mac=args.device_mac,
            device_name=args.device_name,
            signature=args.signature,
            pattern=args.pattern,
            events=events,
            detections=args.detections,
        )
        return 0
