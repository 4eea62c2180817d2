"""signature-extractor: flows CSVs of repeated recordings -> pattern.txt, profile.yaml,
signature.csv."""

from __future__ import annotations

from pathlib import Path

from ..cli import (
    Command,
    add_event_times_arguments,
    add_flow_arguments,
    add_signature_arguments,
    ensure_output_dir,
    event_to_learn,
    read_event_times,
)


class SignatureExtractor(Command):
    prog = "signature-extractor.py"
    description = (
        "Find the flow patterns that recur across recordings of one user event (one flows "
        "CSV per recording) and write them as pattern.txt (for people), profile.yaml (for "
        "the smart-home firewall) and signature.csv (for event-detector and other tools)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "flows",
            nargs="+",
            type=Path,
            metavar="FLOWS_CSV",
            help="one flows CSV per recording of the event (with --events: the flows "
            "CSVs of long captures, cut around each listed time)",
        )
        add_signature_arguments(parser)
        add_event_times_arguments(parser)
        self.add_file_option(
            parser,
            "--baseline",
            type=Path,
            metavar="FLOWS_CSV",
            help="a flows CSV of the same device recorded without the event: its "
            "fingerprints are background, not the event; once per file (after the "
            "FLOWS_CSVs, also --baseline a.csv b.csv)",
        )
        group = parser.add_argument_group(
            "how the flows CSVs were built (stream-identifier's values: kept in "
            "signature.csv, so that event-detector builds a capture's flows the same way)"
        )
        add_flow_arguments(group)

    def run(self, args):
        if args.events:
            event_to_learn(args, read_event_times(args, args.device_name))
        output_dir = ensure_output_dir(args.output_dir)
        self.learn_and_write(args.flows, args.baseline, args, output_dir)
        return 0
