"""event-detector: signature CSVs + captures (or flows CSVs) -> detections CSV."""

from __future__ import annotations

import math
import time
from pathlib import Path

from .. import csvio, detector, flows, live, pipeline, tshark, windows
from ..cli import (
    Command,
    add_event_times_arguments,
    add_flow_arguments,
    add_jobs_argument,
    capture_argument,
    check_distinct_names,
    ensure_output_dir,
    fraction,
    give_back_freed_memory,
    jobs_for,
    non_negative,
    positive,
    read_event_times,
    window_options,
)
from ..errors import InputError, ToolError
from ..schema import DETECTIONS, SCORED_EVENTS

OUTPUT_NAME = "detections.csv"
SCORED_NAME = "scored-events.csv"


class EventDetector(Command):
    prog = "event-detector.py"
    description = (
        "Find the events of one or more signatures (signature-extractor's signature.csv) "
        "in captures. Each argument is recognised by its content: a signature CSV, a "
        "pcap/pcapng capture (translated into OUTPUT_DIR/<capture>.packets.csv and "
        ".flows.csv first), a flows CSV or a packets CSV.\n"
        "A flow matches a pattern when its fingerprint is the pattern's (the remote domain "
        "taken from the capture's own DNS answers) and its packet and byte counts are within "
        "the learned ranges widened by --tolerance. Matched flows are grouped into "
        "occurrence windows, scored by the share of the signature's event patterns they "
        "hold; where occurrences of several events of one device overlap, the more complete "
        "explanation wins.\n"
        f"Writes OUTPUT_DIR/{OUTPUT_NAME} and prints one summary line per capture."
    )
    epilog = (
        "example: event-detector.py toggle/signature.csv boot/signature.csv "
        "new-capture.pcap -o detections/"
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "inputs",
            nargs="+",
            type=capture_argument,
            metavar="SIGNATURE_CSV|PCAP|FLOWS_CSV",
            help="signature CSVs, then captures or flows CSVs (any order)",
        )
        parser.add_argument(
            "--window",
            type=positive,
            metavar="S",
            help="longest occurrence, in seconds (default: per signature, "
            f"{detector.WINDOW_FACTOR:g} times the learned event span, at least "
            f"{detector.MIN_WINDOW:g} s)",
        )
        parser.add_argument(
            "--tolerance",
            type=non_negative,
            default=detector.DEFAULT_TOLERANCE,
            metavar="FRACTION",
            help="widen the learned packet and byte count "
            "ranges by this share (default: %(default)s)",
        )
        parser.add_argument(
            "--min-score",
            type=fraction,
            default=detector.DEFAULT_MIN_SCORE,
            metavar="FRACTION",
            help="share of the event patterns an occurrence "
            "needs to be reported (default: %(default)s)",
        )
        parser.add_argument(
            "--strict-order",
            action="store_true",
            help="count patterns seen out of the signature's order as missing",
        )
        watching = parser.add_argument_group("watching live (see README: event-detector --live)")
        watching.add_argument(
            "--live",
            metavar="SOURCE",
            help="watch SOURCE instead of reading captures: a network interface (eth0), a "
            "named pipe or - (standard input) carrying a pcap/pcapng stream; each detection "
            f"is printed and appended to OUTPUT_DIR/{OUTPUT_NAME} as soon as it is complete, "
            "until the stream ends or Ctrl-C/SIGTERM",
        )
        watching.add_argument(
            "--capture-filter",
            metavar="FILTER",
            help="capture filter on an interface (pcap syntax; default: the packets to or "
            "from the signatures' devices, 'host IP or host IP'; '' for every packet)",
        )
        watching.add_argument(
            "--on-detect",
            metavar="CMD",
            help="run CMD (split as a shell would, but not run by one) for each detection, "
            "the detection as JSON on its standard input (the detections CSV's columns); "
            "its failure is a warning",
        )
        watching.add_argument(
            "--keepalive-wait",
            metavar="S",
            type=non_negative,
            help="at most S seconds that a burst with the sizes of a burst pattern and of a "
            "keep-alive series waits for the series' next keep-alive before it counts as an "
            "event (default: the series' period, as the offline run judges it: the same "
            "detections, an hour late for an hourly look-alike; 0: at once, and a look-alike "
            "with no keep-alive a period or two before it counts as an event)",
        )
        add_event_times_arguments(parser, detecting=True)
        add_flow_arguments(parser, learned=True)  # for captures, as the signatures learned
        add_jobs_argument(parser)

    def check_arguments(self, parser, args):
        if not args.live:
            for flag in ("capture_filter", "on_detect", "keepalive_wait"):
                if getattr(args, flag) is not None:
                    parser.error(f"--{flag.replace('_', '-')} is for --live")
        elif args.events:
            parser.error("--events scores captures; with --live, run it on the capture later")

    def run(self, args):
        started = time.monotonic()
        kinds = {"signature": [], "capture": [], "flows": [], "packets": []}
        unread = []  # inputs that are nothing known (empty, broken...): said, the others go on
        for path in args.inputs:
            try:
                kinds[detector.classify(path)].append(path)
            except ToolError as e:
                self.error(str(e))
                unread.append(path)
        if not kinds["signature"]:
            if unread:
                return 1
            raise ToolError(
                "no signature CSV among the arguments (a CSV with a "
                "signature_version column, as signature-extractor writes)"
            )
        inputs = kinds["capture"] + kinds["flows"] + kinds["packets"]
        if args.live and inputs:
            raise ToolError(
                f"--live {args.live} watches a live source: give signature CSVs only "
                f"(not {inputs[0]})"
            )
        if not inputs and not args.live:
            if unread:
                return 1
            raise ToolError("no capture or flows CSV among the arguments: nothing to search")
        signatures = []
        for path in kinds["signature"]:
            try:
                read = detector.read_signatures(path, args.tolerance)
            except ToolError as e:
                self.error(str(e))
                unread.append(path)
                continue
            for signature in read:
                if not signature.patterns:
                    self.warn(
                        f"{path}: event {signature.event!r} has no event pattern "
                        "(all background): it cannot be detected"
                    )
                    continue
                signatures.append(signature)
        if not signatures:
            if unread:
                return 1
            raise ToolError("none of the signatures has an event pattern")
        if args.live:
            return self.watch(signatures, args, started, failed=unread)
        times = read_event_times(args) if args.events else None
        check_distinct_names(inputs, args.output_dir, "inputs")
        output_dir = ensure_output_dir(args.output_dir)
        sources, failed = self.flow_files(kinds, output_dir, signatures, args)
        failed += unread

        options = detector.DetectOptions(args.min_score, args.window, args.strict_order)
        bursts = any(s.needs_bursts for s in signatures)
        devices = {s.device_ip for s in signatures}
        found, spans = [], {}
        for name, flows_csv in sources:
            try:
                table, extent = detector.read_device_units(flows_csv, devices, bursts)
            except InputError as e:
                self.error(str(e))
                failed.append(name)
                continue
            occurrences = detector.detect(table, name, signatures, options)
            spans[name] = windows.with_extent(table, extent)
            found += occurrences
            self.say(detector.summary_line(name, occurrences))
        output = output_dir / OUTPUT_NAME
        detections = detector.detections_frame(found)
        csvio.write_table(detections, DETECTIONS, output)
        detected = sum(o.status == "detected" for o in found)
        self.say(f"wrote {output}")
        if times is not None:
            self.score(detections, times, spans, signatures, args)
        self.say(
            f"event-detector: {detected} detection(s) of {len(signatures)} event "
            f"signature(s) in {len(sources)} capture(s) in {time.monotonic() - started:.1f} s"
            + (f"; {len(failed)} input(s) failed" if failed else "")
        )
        return 1 if failed else 0

    def watch(self, signatures, args, started, failed) -> int:
        """--live: each detection as it is complete, until the stream ends or a signal."""
        output = ensure_output_dir(args.output_dir) / OUTPUT_NAME
        options = detector.DetectOptions(args.min_score, args.window, args.strict_order)
        building = self.flow_options(signatures, args, building=True)
        capture_filter = (
            live.capture_filter(signatures) if args.capture_filter is None else args.capture_filter
        )
        tshark.tshark_path()
        give_back_freed_memory()
        if live.is_interface(args.live):
            self.say(f"watching {args.live} (capture filter: {capture_filter or 'none'})")

        def said(occurrence, row):
            self.say(
                f"{occurrence.capture}: {occurrence.status} {detector.detection_words(occurrence)}"
            )

        summary = live.watch(
            args.live,
            signatures,
            building,
            options,
            output,
            said,
            self.warn,
            capture_filter,
            args.on_detect,
            keepalive_wait=math.inf if args.keepalive_wait is None else args.keepalive_wait,
        )
        self.say(f"wrote {output}")
        drops = (
            f"; dumpcap: {summary.received} packet(s) received, {summary.dropped} dropped"
            if summary.received is not None
            else ""
        )
        ending = f" ({summary.stopped})" if summary.stopped else ""
        self.say(
            f"event-detector: {summary.detected} detection(s) of {len(signatures)} event "
            f"signature(s) in {summary.packets} packet(s) watched live in "
            f"{time.monotonic() - started:.1f} s{ending}{drops}"
            + (f"; {len(failed)} input(s) failed" if failed else "")
        )
        return 1 if failed else 0

    def score(self, detections, times, spans, signatures, args):
        """--events: each listed event found or missed, each detection matched to one or
        counted false (OUTPUT_DIR/scored-events.csv), and a line per event."""
        devices = {s.event: s.device_ip for s in signatures}
        events = list(devices)
        named = set(times["event"]) - {""}
        unknown = sorted(named - set(events))
        if unknown:
            self.warn(
                f"{args.events}: no signature for the listed event(s) {', '.join(unknown)}: "
                "their lines are not scored"
            )
            times = times[~times["event"].isin(unknown)]
        if named and not set(events) & named:
            raise ToolError(
                f"{args.events}: it names none of the signatures' events ({', '.join(events)})"
            )
        if not named and len(events) == 1:
            self.warn(
                f"{args.events}: no event name column: every line is taken as event {events[0]!r}"
            )
        try:
            scored, scores = windows.score_detections(
                detections, times, spans, window_options(args), devices
            )
        except ToolError as e:
            raise InputError(args.events, str(e)) from None
        outside = int((scored["status"] == "outside").sum())
        if outside:
            self.warn(
                f"{args.events}: {outside} listed time(s) outside every capture given: not scored"
            )
        path = Path(args.output_dir) / SCORED_NAME
        csvio.write_table(scored, SCORED_EVENTS, path)
        self.say(f"wrote {path}")
        for score in scores:
            self.say(score.line())

    def flow_options(self, signatures, args, building: bool) -> flows.FlowOptions:
        """How to build the flows of captures: as told, else as the signatures were
        learned (said when that is not the default), else the defaults."""
        given = {name: getattr(args, name) for name in flows.FlowOptions().settings()}
        options, said, warnings = detector.flow_options(signatures, given)
        for warning in warnings:
            self.warn(warning)
        if said and building:
            self.say("building flows as the signatures were learned: " + ", ".join(said))
        return options

    def flow_files(self, kinds, output_dir, signatures, args):
        """(name, flows CSV) per input, in the order given; pcaps and packets CSVs go
        through packet-translator and stream-identifier first (pipeline), as main.py runs
        them, with the signatures' device addresses."""
        failed = []
        options = self.flow_options(signatures, args, bool(kinds["capture"] + kinds["packets"]))
        flow_files = {}
        started = time.monotonic()
        translations, written = [], []
        if kinds["capture"]:
            tshark.tshark_path()
            with self.progress(
                unit=" packets",
                unit_scale=True,
                desc=f"translating {len(kinds['capture'])} capture(s)",
            ) as bar:
                results = pipeline.captures_to_flows(
                    kinds["capture"],
                    output_dir,
                    # One device: the packets' direction too (a DHCP DISCOVER from 0.0.0.0
                    # is the device's by its MAC, as main.py's translation says).
                    device_ip=options.device_ips[0] if len(options.device_ips) == 1 else None,
                    options=options,
                    jobs=jobs_for(kinds["capture"], args.jobs),
                    on_packets=bar.update,
                )
                for capture, result in self.successes(results, failed):
                    translations.append(result.translation)
                    written.append(result.flows)
                    flow_files[capture] = result.flows_csv
        translate_seconds = time.monotonic() - started
        flows_seconds = sum(w.seconds for w in written)
        if kinds["capture"]:
            for line in pipeline.translated_lines(
                translations, len(failed), translate_seconds - flows_seconds
            ):
                self.say(line)
        if kinds["packets"]:
            with self.progress(
                total=len(kinds["packets"]), unit=" file", desc="identifying flows"
            ) as bar:
                for path in kinds["packets"]:
                    step = time.monotonic()
                    try:
                        result = pipeline.packets_to_flows(path, output_dir, options)
                    except ToolError as e:
                        self.error(str(e))
                        failed.append(path)
                    else:
                        for warning in result.warnings:
                            self.warn(warning)
                        written.append(result)
                        flow_files[path] = result.flows_csv
                    flows_seconds += time.monotonic() - step
                    bar.update()
        if written:
            for line in pipeline.flows_lines(written, 0, flows_seconds):
                self.say(line)
        sources = [
            (Path(p).name, flow_files[p])
            for p in kinds["capture"] + kinds["packets"]
            if p in flow_files
        ]
        sources += [(Path(p).name, p) for p in kinds["flows"]]
        order = {
            Path(p).name: i
            for i, p in enumerate(kinds["capture"] + kinds["flows"] + kinds["packets"])
        }
        return sorted(sources, key=lambda s: order.get(s[0], 0)), failed
