"""stream-identifier: packets CSVs -> one flows CSV each."""

from __future__ import annotations

import time
from pathlib import Path

from .. import csvio, flows
from ..cli import Command, check_distinct_names, ensure_output_dir, ipv4_or_ipv6, positive
from ..errors import ToolError
from ..schema import FLOWS, PACKETS


class StreamIdentifier(Command):
    prog = "stream-identifier.py"
    description = (
        "Merge packet rows (packet-translator's CSVs, or any CSV with the same columns) into "
        "flow rows, Zeek conn.log style: counts, bytes, timing and size statistics, the "
        "remote party's domain name and class, the application fingerprint.\n"
        "Writes OUTPUT_DIR/<name>.flows.csv for each <name>.packets.csv.")

    def add_arguments(self, parser):
        parser.add_argument("packets", nargs="+", type=Path, metavar="PACKETS_CSV")
        parser.add_argument("--device-ip", type=ipv4_or_ipv6, action="append", default=[],
                            metavar="IP", help="address of the device under study (repeatable); "
                            "default: the packets' direction column")
        add_flow_arguments(parser)

    def run(self, args):
        check_distinct_names(args.packets, args.output_dir, "packets CSVs",
                             output_name=lambda p: flows_path(p, ".").name)
        output_dir = ensure_output_dir(args.output_dir)
        options = flows.FlowOptions(args.idle_timeout, args.max_duration, tuple(args.device_ip))
        _, failed = identify_streams(self, args.packets, output_dir, options)
        return 1 if failed else 0


def add_flow_arguments(parser) -> None:
    """--idle-timeout and --max-duration, for every command that builds flows."""
    parser.add_argument("--idle-timeout", type=positive, default=flows.DEFAULT_IDLE_TIMEOUT,
                        metavar="S", help="a flow ends after S seconds without a packet "
                        "(default: %(default)s)")
    parser.add_argument("--max-duration", type=positive, default=flows.DEFAULT_MAX_DURATION,
                        metavar="S", help="a flow is cut into chunks of at most S seconds "
                        "(default: %(default)s)")


def flows_path(packets_csv: Path, output_dir: Path) -> Path:
    name = Path(packets_csv).name
    stem = name[:-len(".packets.csv")] if name.endswith(".packets.csv") else Path(name).stem
    return Path(output_dir) / f"{stem}.flows.csv"


def identify_streams(command: Command, packet_files: list[Path], output_dir: Path,
                     options: flows.FlowOptions):
    """Build and write the flows of each packets CSV; shared with main.py."""
    written, failed = [], []
    started = time.monotonic()
    with command.progress(total=len(packet_files), unit=" file",
                          desc="identifying flows") as bar:
        for packets_csv in packet_files:
            try:
                packets = csvio.read_table(packets_csv, PACKETS, required=flows.REQUIRED,
                                           columns=flows.REQUIRED + flows.OPTIONAL, compact=True)
                _warn_blank_cells(command, packets_csv, packets)
                table = flows.build_flows(packets, options)
                output = flows_path(packets_csv, output_dir)
                csvio.write_table(table, FLOWS, output)
                written.append((output, len(packets), len(table)))
            except ToolError as e:
                command.error(str(e))
                failed.append(packets_csv)
            bar.update()
    for output, n_packets, n_flows in written:
        command.say(f"wrote {output} ({n_flows} flows from {n_packets} packets)")
    command.say(f"stream-identifier: {sum(w[2] for w in written)} flows in {len(written)} "
                f"file(s) in {time.monotonic() - started:.1f} s"
                + (f"; {len(failed)} file(s) failed" if failed else ""))
    return [w[0] for w in written], failed


def _warn_blank_cells(command: Command, packets_csv: Path, packets) -> None:
    """A row whose ts or frame_len was emptied by hand still lands in a flow: say so rather
    than let it open a flow in 1970 or count as an empty frame unnoticed."""
    for name, effect in (("ts", "taken as time 0, their flows start in 1970"),
                         ("frame_len", "counted as 0 bytes")):
        blank = packets[name].isna().to_numpy()
        if blank.any():
            line = int(blank.argmax()) + 2  # the header is line 1
            command.warn(f"{packets_csv}: {int(blank.sum())} row(s) without {name} (first on "
                         f"line {line}): {effect}")
