"""packet-translator: captures -> one packets CSV each."""

from __future__ import annotations

import time
from pathlib import Path

from .. import packets, pipeline, tshark
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
        written, failed = translate_captures(
            self, args.captures, output_dir, args.device_mac, args.device_ip, jobs
        )
        return 1 if failed else 0


def translate_captures(
    command: Command,
    captures: list[Path],
    output_dir: Path,
    device_mac=None,
    device_ip=None,
    jobs: int = 0,
):
    """Translate with a progress bar, warn and report per capture."""
    started = time.monotonic()
    written, failed = [], []
    with command.progress(
        unit=" packets", unit_scale=True, desc=f"translating {len(captures)} capture(s)"
    ) as bar:
        results = packets.translate_many(
            captures, output_dir, device_mac, device_ip, jobs, on_packets=bar.update
        )
        written += [result for _, result in command.successes(results, failed)]
    for line in pipeline.translated_lines(written, len(failed), time.monotonic() - started):
        command.say(line)
    return written, failed
