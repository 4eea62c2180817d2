"""packet-translator: captures -> one packets CSV each."""

from __future__ import annotations

from .. import tshark
from ..cli import (
    Command,
    add_jobs_argument,
    capture_argument,
    check_distinct_names,
    ensure_output_dir,
    ipv4_or_ipv6,
    jobs_for,
    mac_address,
)


class PacketTranslator(Command):
    prog = "packet-translator.py"
    description = (
        "Run tshark on PCAP/PCAPNG captures and write one CSV row per packet: "
        "timing, addresses, MAC vendors, ports, sizes, TCP flags and the "
        "application fields that identify IoT traffic.\n"
        "Writes OUTPUT_DIR/<capture file name>.packets.csv for each capture."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "captures",
            nargs="+",
            type=capture_argument,
            metavar="PCAP",
            help="pcap or pcapng capture files; - reads one from standard input "
            "(written as stdin.packets.csv)",
        )
        parser.add_argument(
            "--device-mac",
            type=mac_address,
            help="the device under study: fills the direction column",
        )
        parser.add_argument(
            "--device-ip",
            type=ipv4_or_ipv6,
            help="the device under study: fills the direction column",
        )
        add_jobs_argument(parser)

    def run(self, args):
        tshark.tshark_path()  # fail early, with the install hint, if tshark is missing
        check_distinct_names(args.captures, args.output_dir, "captures")
        jobs = jobs_for(args.captures, args.jobs)
        output_dir = ensure_output_dir(args.output_dir)
        _, failed = self.translate_captures(
            args.captures, output_dir, args.device_mac, args.device_ip, jobs
        )
        return 1 if failed else 0
