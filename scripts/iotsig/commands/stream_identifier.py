"""stream-identifier: packets CSVs -> one flows CSV each."""

from __future__ import annotations

import time
from pathlib import Path

from .. import flows, pipeline
from ..cli import (
    Command,
    add_device_ips_argument,
    add_flow_arguments,
    check_distinct_names,
    ensure_output_dir,
)
from ..errors import ToolError


class StreamIdentifier(Command):
    prog = "stream-identifier.py"
    description = (
        "Merge packet rows (packet-translator's CSVs, or any CSV with the same columns) into "
        "flow rows, Zeek conn.log style: counts, bytes, timing and size statistics, the "
        "remote party's domain name and class, the application fingerprint.\n"
        "Writes OUTPUT_DIR/<name>.flows.csv for each <name>.packets.csv."
    )

    def add_arguments(self, parser):
        parser.add_argument("packets", nargs="+", type=Path, metavar="PACKETS_CSV")
        add_device_ips_argument(parser, "its side of each flow (default: the packets' direction)")
        add_flow_arguments(parser)

    def run(self, args):
        check_distinct_names(
            args.packets,
            args.output_dir,
            "packets CSVs",
            output_name=lambda p: pipeline.flows_path(p, ".").name,
        )
        output_dir = ensure_output_dir(args.output_dir)
        options = flows.FlowOptions(
            args.idle_timeout, args.max_duration, tuple(args.device_ip), args.burst_gap
        )
        _, failed = self.identify_streams(args.packets, output_dir, options)
        return 1 if failed else 0

    def identify_streams(
        self, packet_files: list[Path], output_dir: Path, options: flows.FlowOptions
    ):
        """Build and write the flows of each packets CSV, with a progress bar."""
        written, failed = [], []
        started = time.monotonic()
        with self.progress(total=len(packet_files), unit=" file", desc="identifying flows") as bar:
            for packets_csv in packet_files:
                try:
                    result = pipeline.packets_to_flows(packets_csv, output_dir, options)
                    for warning in result.warnings:
                        self.warn(warning)
                    written.append(result)
                except ToolError as e:
                    self.error(str(e))
                    failed.append(packets_csv)
                bar.update()
        for line in pipeline.flows_lines(written, len(failed), time.monotonic() - started):
            self.say(line)
        return [w.flows_csv for w in written], failed
