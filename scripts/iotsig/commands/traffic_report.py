"""traffic-report: packets and/or flows CSVs -> inventory.csv, endpoint-map.png/.svg,
timeline.png and a self-contained report.html."""

from __future__ import annotations

import time
from pathlib import Path

from .. import traffic_report
from ..cli import Command, ensure_output_dir, ipv4_or_ipv6, mac_address
from ..errors import ToolError


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

    def run(self, args):
        output_dir = ensure_output_dir(args.output_dir)
        write_report(
            self,
            args.inputs,
            output_dir,
            device_ip=args.device_ip,
            device_mac=args.device_mac,
            device_name=args.device_name,
            signature=args.signature,
            pattern=args.pattern,
        )
        return 0


def write_report(
    command: Command,
    csv_files,
    output_dir: Path,
    device_ip=None,
    device_mac=None,
    device_name=None,
    signature=None,
    pattern=None,
):
    """Read the CSVs and write the report files; shared with main.py."""
    started = time.monotonic()
    with command.progress(total=5, unit=" step", desc="traffic report") as bar:
        bar.set_postfix_str("reading")
        inputs = traffic_report.read_inputs(list(csv_files))
        bar.update()

        def step(name):
            bar.set_postfix_str(name)
            bar.update()

        result = traffic_report.build_report(
            inputs,
            output_dir,
            device_ip=device_ip,
            device_mac=device_mac,
            device_name=device_name,
            signature_path=signature,
            pattern_path=pattern,
            step=step,
        )
    for note in result.notes:
        command.warn(note)
    for key in ("inventory", "map_png", "map_svg", "timeline", "report"):
        if key in result.paths:
            command.say(f"wrote {result.paths[key]}")
    macs = (
        "no inventory (no packets CSV)"
        if result.inventory is None
        else f"{len(result.inventory)} MAC(s)"
    )
    parties = f"{'y' if len(result.endpoints) == 1 else 'ies'}"
    command.say(
        f"traffic-report: {macs}, {len(result.endpoints)} remote part{parties} of "
        f"{result.device.ip or result.device.mac}, "
        f"{len(result.matched)} flow(s) matched to signature patterns, in "
        f"{time.monotonic() - started:.1f} s; open {result.paths['report']}"
    )
    return result


def report_after_main(command: Command, flow_files, output_dir: Path, args):
    """main.py's last step: the report of the event recordings it just processed (their
    packets CSVs sit beside the flows CSVs). Returns report.html's path, or None when it
    could not be made: the signature is written by then, so that is a warning, not a failure."""
    packet_files = []
    for flows_csv in flow_files:
        name = Path(flows_csv).name
        stem = name[: -len(".flows.csv")] if name.endswith(".flows.csv") else Path(name).stem
        packets_csv = Path(flows_csv).parent / f"{stem}.packets.csv"
        if packets_csv.is_file():
            packet_files.append(packets_csv)
    command.say("")
    try:
        result = write_report(
            command,
            [*packet_files, *flow_files],
            output_dir,
            device_ip=args.device_ip,
            device_mac=args.device_mac,
            device_name=args.device_name,
            signature=Path(output_dir) / "signature.csv",
            pattern=Path(output_dir) / "pattern.txt",
        )
    except ToolError as e:
        command.warn(f"no traffic report: {e}")
        return None
    return result.paths["report"]
