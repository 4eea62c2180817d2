"""The one pipeline every command runs: capture -> packets CSV -> flows CSV -> signature
(pattern.txt, profile.yaml, signature.csv).

main.py, evaluate.py, event-detector.py, packet-translator.py, stream-identifier.py and
signature-extractor.py all call these functions; the commands keep only their arguments,
progress bars and messages. Each step still writes the CSV a person can open, and each
step reads only the previous step's CSV.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio, detector, flow_partitions, flows, geo, packets, profile, windows
from . import signature as sig
from .errors import ToolError, collected
from .parallel import run_parallel
from .pattern_text import pattern_text
from .schema import BURSTS, FLOWS, PACKETS, WINDOWS

OUTPUT_NAMES = {"pattern": "pattern.txt", "profile": "profile.yaml", "signature": "signature.csv"}


# ---------------------------------------------------------------------------------------
# Names of the intermediate files
# ---------------------------------------------------------------------------------------


def packets_path(capture: Path, output_dir: Path) -> Path:
    """OUTPUT_DIR/<capture file name>.packets.csv"""
    return packets.output_path(capture, output_dir)


def packets_beside(flows_csv: Path) -> Path:
    """The packets CSV main.py writes beside a flows CSV: <name>.packets.csv for
    <name>.flows.csv (any other CSV: its stem)."""
    name = Path(flows_csv).name
    stem = name[: -len(".flows.csv")] if name.endswith(".flows.csv") else Path(name).stem
    return Path(flows_csv).parent / f"{stem}.packets.csv"


def flows_path(packets_csv: Path, output_dir: Path) -> Path:
    """OUTPUT_DIR/<name>.flows.csv for <name>.packets.csv (any other CSV: its stem)."""
    name = Path(packets_csv).name
    stem = name[: -len(".packets.csv")] if name.endswith(".packets.csv") else Path(name).stem
    return Path(output_dir) / f"{stem}.flows.csv"


# ---------------------------------------------------------------------------------------
# packets CSV -> flows CSV
# ---------------------------------------------------------------------------------------


@dataclass
class FlowsWritten:
    packets_csv: Path
    flows_csv: Path
    packets: int
    flows: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bursts: int = 0

    @property
    def bursts_csv(self) -> Path:
        return flows.bursts_beside(self.flows_csv)


FLOW_COLUMNS = flows.REQUIRED + flows.OPTIONAL  # the packets CSV's columns flows use


def read_packets(packets_csv: Path, translation: packets.Translation | None = None) -> pd.DataFrame:
    """The columns of a packets CSV that flows are built from (the required ones named
    when missing): from the translation's CellsFiles where it wrote them, else read."""
    if translation is not None and translation.cells:
        frame = csvio.read_cells(
            translation.cells,
            packets_csv,
            PACKETS,
            translation.packets,
            flows.REQUIRED,
            FLOW_COLUMNS,
        )
        if frame is not None:
            return frame
    return csvio.read_table(
        packets_csv,
        PACKETS,
        required=flows.REQUIRED,
        columns=FLOW_COLUMNS,
        compact=True,
    )


def blank_cells(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per column of ts and frame_len: how many rows have it empty, and the first one."""
    found = {}
    for name in ("ts", "frame_len"):
        blank = table[name].isna().to_numpy()
        if blank.any():
            found[name] = (int(blank.sum()), int(blank.argmax()))
    return found


def blank_cell_warnings(packets_csv: Path, blank: dict[str, tuple[int, int]]) -> list[str]:
    """A row whose ts or frame_len was emptied by hand still lands in a flow: say so rather
    than let it open a flow in 1970 or count as an empty frame unnoticed."""
    warnings = []
    for name, effect in (
        ("ts", "taken as time 0, their flows start in 1970"),
        ("frame_len", "counted as 0 bytes"),
    ):
        if name in blank:
            count, first = blank[name]
            warnings.append(
                f"{packets_csv}: {count} row(s) without {name} (first on line {first + 2}): "
                f"{effect}"  # the header is line 1
            )
    return warnings


def packets_to_flows(
    packets_csv: Path,
    output_dir: Path,
    options: flows.FlowOptions | None = None,
    partitions: int | None = None,
    translation: packets.Translation | None = None,
) -> FlowsWritten:
    """stream-identifier for one packets CSV: OUTPUT_DIR/<name>.flows.csv and
    <name>.bursts.csv. A big one is
    built in partitions (flow_partitions: memory stays flat), by default one per
    flow_partitions.PARTITION_BYTES of the file; the same bytes either way. `translation`:
    the one that just wrote it, whose cells are taken rather than read again."""
    started = time.perf_counter()
    geo.prefetch()  # the flows' remote_country etc.: loaded while the packets are read
    options = options or flows.FlowOptions()
    output = flows_path(packets_csv, output_dir)
    if partitions is None:
        partitions = flow_partitions.partitions_for(packets_csv)
    if partitions > 1:
        notes = []
        try:
            with collected(notes):
                written = flow_partitions.write_flows(packets_csv, output, options, partitions)
        except csvio.NeedsWholeFile:
            pass  # (a spreadsheet's copy, a bad cell...): read whole below, as it says
        else:
            warnings = notes + blank_cell_warnings(packets_csv, written.blank)
            seconds = time.perf_counter() - started
            return FlowsWritten(
                Path(packets_csv),
                output,
                written.packets,
                written.flows,
                warnings,
                seconds,
                written.bursts,
            )
    warnings = []
    with collected(warnings):  # what a spreadsheet changed in the packets CSV
        table = read_packets(packets_csv, translation)
    warnings += blank_cell_warnings(packets_csv, blank_cells(table))
    built = flows.build(table, options)
    csvio.write_table(built.flows, FLOWS, output)
    csvio.write_table(built.bursts, BURSTS, flows.bursts_beside(output))
    return FlowsWritten(
        Path(packets_csv),
        output,
        len(table),
        len(built.flows),
        warnings,
        time.perf_counter() - started,
        len(built.bursts),
    )


# ---------------------------------------------------------------------------------------
# capture -> packets CSV -> flows CSV
# ---------------------------------------------------------------------------------------


@dataclass
class Converted:
    """One capture through packet-translator and stream-identifier."""

    capture: Path
    translation: packets.Translation
    flows: FlowsWritten
    translate_seconds: float = 0.0

    @property
    def packets_csv(self) -> Path:
        return self.translation.output

    @property
    def flows_csv(self) -> Path:
        return self.flows.flows_csv

    @property
    def warnings(self) -> list[str]:
        return self.translation.warnings + self.flows.warnings


@dataclass(frozen=True)
class Job:
    """A capture with its own output folder and device (evaluate.py: one folder and one
    address per device and event)."""

    capture: Path
    output_dir: Path
    device_ip: str | None = None
    device_mac: str | None = None


def flow_options(device_ip: str | None, options: flows.FlowOptions | None) -> flows.FlowOptions:
    """The options as given; by default stream-identifier's, with the device's address."""
    if options is not None:
        return options
    return flows.FlowOptions(device_ips=(device_ip,) if device_ip else ())


def capture_to_flows(
    capture: Path,
    output_dir: Path,
    device_ip: str | None = None,
    device_mac: str | None = None,
    options: flows.FlowOptions | None = None,
    on_packets: Callable[[int], None] | None = None,
) -> Converted:
    """packet-translator then stream-identifier for one capture: OUTPUT_DIR/<capture file
    name>.packets.csv and .flows.csv. A module-level function of picklable arguments: it
    runs in a worker process."""
    started = time.perf_counter()
    geo.prefetch()  # loaded while tshark reads the capture
    translation = packets.translate(
        capture, packets_path(capture, output_dir), device_mac, device_ip, on_packets=on_packets
    )
    translated = time.perf_counter() - started
    written = packets_to_flows(translation.output, output_dir, flow_options(device_ip, options))
    return Converted(Path(capture), translation, written, translated)


def translated_to_flows(
    capture: Path,
    translation: packets.Translation,
    output_dir: Path,
    device_ip: str | None = None,
    options: flows.FlowOptions | None = None,
    on_packets: Callable[[int], None] | None = None,
) -> Converted:
    """stream-identifier for a capture translated in chunks (capture_to_flows' second half),
    from the cells its chunks handed over."""
    try:
        written = packets_to_flows(
            translation.output,
            output_dir,
            flow_options(device_ip, options),
            translation=translation,
        )
    finally:
        packets.remove_cells(translation)
    return Converted(Path(capture), translation, written)


def captures_to_flows(
    captures: Iterable,
    output_dir: Path | None = None,
    device_ip: str | None = None,
    device_mac: str | None = None,
    options: flows.FlowOptions | None = None,
    jobs: int = 0,
    on_packets: Callable[[int], None] | None = None,
) -> Iterator[tuple[Path, Converted | ToolError]]:
    """capture_to_flows for each capture, one per core; a big capture is translated in
    chunks on every core first (packets.run_translations), then its flows are built.
    `captures` are paths (all written to OUTPUT_DIR, for DEVICE_IP/DEVICE_MAC) or Job items
    (each with its own). Yields (capture, Converted or the capture's ToolError) as each
    finishes: one bad capture does not stop the others."""
    items = []
    for item in captures:
        job = (
            item
            if isinstance(item, Job)
            else Job(Path(item), Path(output_dir), device_ip, device_mac)
        )
        output = packets_path(job.capture, job.output_dir)
        items.append((job.capture, output, job.device_mac, job.device_ip, job))

    def whole(item):
        job = item[4]
        return capture_to_flows, (
            job.capture,
            job.output_dir,
            job.device_ip,
            job.device_mac,
            options,
        )

    by_output = {item[1]: item[4] for item in items}
    chunked = []
    try:
        for capture, result in packets.run_translations(
            items, jobs, on_packets, whole, FLOW_COLUMNS, flow_partitions.ONE_PASS_PACKETS
        ):
            if isinstance(result, packets.Translation):  # chunked: its flows are still to build
                job = by_output[result.output]
                chunked.append(
                    (translated_to_flows, (capture, result, job.output_dir, job.device_ip, options))
                )
            else:
                yield capture, result
        yield from run_parallel(chunked, jobs=jobs, on_progress=on_packets)
    finally:  # (the tasks that ran removed theirs)
        for _, arguments in chunked:
            packets.remove_cells(arguments[1])


# ---------------------------------------------------------------------------------------
# flows CSVs -> signature
# ---------------------------------------------------------------------------------------


def recordings(items) -> list[sig.Recording]:
    """Recordings from flows CSV paths (read as signature-extractor reads them) or as
    they are (sig.Recording)."""
    items = list(items)
    if all(isinstance(i, sig.Recording) for i in items):
        return items
    if any(isinstance(i, sig.Recording) for i in items):
        raise TypeError("give flows CSV paths or recordings, not both")
    return sig.read_recordings(items)


def learn(
    event_recordings,
    device_name: str,
    device_ip: str,
    device_mac: str | None = None,
    *,
    event: str = "event",
    baseline=None,
    options: sig.LearnOptions | None = None,
) -> sig.Signature:
    """signature-extractor: the patterns that recur in the event's recordings (flows CSV
    paths or sig.Recording), those also in the baseline's as background (in more than
    options.background_share of its recordings). Raises ToolError when the device never
    appears."""
    notes = []
    with collected(notes):  # what a spreadsheet changed in the flows CSVs
        event_recordings = recordings(event_recordings)
        baseline = recordings(baseline) if baseline else None
    signature = sig.extract(
        event_recordings,
        device_name,
        device_ip,
        device_mac,
        event=event,
        baseline=baseline,
        options=options,
    )
    signature.warnings[:0] = notes
    return signature


# ---------------------------------------------------------------------------------------
# long captures + event times -> windows -> signature
# ---------------------------------------------------------------------------------------

FIRST_PASS_SUPPORT = 0.5  # what recurs in most windows shows which windows lack the event


@dataclass
class WindowedLearning:
    signature: sig.Signature
    events: list[windows.Window]
    background: list[windows.Window]
    index: Path  # windows.csv
    left_out: dict[str, str] = field(default_factory=dict)  # window name -> why
    found: dict[str, float] = field(default_factory=dict)  # window name -> event start
    warnings: list[str] = field(default_factory=list)
    others: list[windows.Window] = field(default_factory=list)  # other listed events


def learn_in_windows(
    flows_csvs: list[Path],
    times: pd.DataFrame,
    times_file: Path,
    output_dir: Path,
    device_name: str,
    device_ip: str,
    device_mac: str | None = None,
    *,
    event: str = "event",
    baseline_files=None,
    options: sig.LearnOptions | None = None,
) -> WindowedLearning:
    """Cut long captures (their flows CSVs, and the bursts and packets CSVs beside them
    where there are) into one recording per listed time and background windows far from
    all of them (OUTPUT_DIR/<kind>-NNN-<start>.flows.csv, windows.csv), then learn. A
    recording holds the flows that start in it and, with bursts, the bursts inside
    connections already open that start in it; keep-alive bursts are background (unless
    the event itself recurs on a timer: then only with them does anything recur). A first
    pass on what recurs in most windows finds the windows without the event (a wrong time
    in the log, an event without traffic): they are left out, said, and the signature is
    learned from the others, the background windows as its baseline. windows.csv is
    written before learning, so that it is there when learning fails."""
    options = options or sig.LearnOptions()
    support = options.support
    packet_files, burst_files = _beside_long(flows_csvs)
    first, last = windows.extent(flows_csvs)
    if first > last:
        raise ToolError(f"{', '.join(map(str, flows_csvs))}: no flow in the capture(s)")
    warnings = []
    # Every listed event gets its window (close ones are cut halfway between them, whatever
    # their event); the other events' windows are a baseline of their own.
    listed = windows.event_windows(times, options.windows)
    inside = (listed["end"] >= first) & (listed["start"] <= last)
    named = (listed["event"] != "").any()
    mine = listed["event"] == event if named else pd.Series(True, index=listed.index)
    for row in listed[mine & ~inside].itertuples(index=False):
        warnings.append(
            f"{times_file}: line {row.line} ({row.time_text}): outside the capture "
            f"({windows.utc_span(first, last)}): left out"
        )
    if (mine & inside).sum() < 2:
        raise ToolError(
            f"{times_file}: {int((mine & inside).sum())} listed time(s) inside the capture "
            f"({windows.utc_span(first, last)}): a signature needs at least 2 (check "
            "--timezone and the times)"
        )
    background = windows.background_windows(listed[inside], first, last)
    cut = windows.cut(
        flows_csvs,
        packet_files,
        {
            "event": listed[mine & inside],
            "other": listed[~mine & inside],
            "background": background,
        },
        output_dir,
        burst_files,
    )
    events, quiet = cut["event"], cut["background"]
    index = Path(output_dir) / "windows.csv"
    everything = events + cut["other"] + quiet

    def write_index(found: dict, left_out: dict) -> None:
        frame = windows.windows_frame(everything, times_file, found, left_out)
        csvio.write_table(frame, WINDOWS, index)

    write_index({}, {w.name: "not learned: learning stopped (see its error)" for w in events})
    with_bursts = burst_files is not None
    recorded = {
        kind: _window_recordings(chosen, with_bursts, kind)
        for kind, chosen in (("event", events), ("background", quiet), ("other", cut["other"]))
    }
    extra = sig.read_recordings(baseline_files) if baseline_files else []
    share = windows.BACKGROUND_SHARE

    def learn_on(chosen, at_support, keepalives=False, others=None):
        """others: the other events whose windows are a baseline (None: all of them)."""

        def kept(recordings):
            return recordings if keepalives else [sig.without_keepalives(r) for r in recordings]

        names = {w.name for w in chosen}
        other = [r for r in recorded["other"] if others is None or r.group in others]
        base = kept(recorded["background"] + other) + extra
        return learn(
            kept([r for r in recorded["event"] if r.name in names]),
            device_name,
            device_ip,
            device_mac,
            event=event,
            baseline=base or None,
            options=dataclasses.replace(options, support=at_support, background_share=share),
        )

    rough_support = min(support, FIRST_PASS_SUPPORT)
    rough, keepalives = learn_on(events, rough_support), False
    if rough.event_patterns.empty and with_bursts:
        # An event that recurs on a timer (scheduled) has keep-alive bursts of its own.
        rough, keepalives = learn_on(events, rough_support, keepalives=True), True
    if rough.event_patterns.empty:
        raise ToolError(
            _nothing_learned(
                events,
                recorded,
                lambda groups: learn_on(events, rough_support, others=groups),
                device_ip,
            )
        )
    # A window holding none of the flows that recur in most windows, whatever their
    # packets (the event may take a variant), is not the event's.
    found = _found_in(
        rough, events, detector.DetectOptions(min_score=1e-9), fingerprints=True, bursts=with_bursts
    )
    left_out = {
        w.name: "left out: none of the patterns that recur in the other windows is in it "
        "(a wrong time in the log, or an event without traffic)"
        for w in events
        if w.name not in found
    }
    kept = [w for w in events if w.name not in left_out]
    if len(kept) < 2:
        write_index(found, left_out)
        raise ToolError(f"{times_file}: the event is found in {len(kept)} window(s) only")
    for w in events:
        if w.name in left_out:
            warnings.append(
                f"{times_file}: line {int(w.listed['line'])} ({w.listed['time_text']}): "
                "none of what recurs around the other listed times is there (a wrong "
                f"time, or an event without traffic): left out of the signature ({w.name})"
            )
    learned = rough
    if left_out or support > FIRST_PASS_SUPPORT:
        learned = learn_on(kept, support, keepalives)
        if learned.event_patterns.empty and support > FIRST_PASS_SUPPORT:
            # What tells the event from the others is in most of its windows, not all
            # (a lock's reply that is an unlock's now and then): learned from most.
            learned = learn_on(kept, FIRST_PASS_SUPPORT, keepalives)
            warnings.append(
                f"nothing that the other listed events and the background lack recurs in "
                f"all {len(kept)} windows of {event}: learned from what recurs in at least "
                f"{FIRST_PASS_SUPPORT:g} of them (--support {FIRST_PASS_SUPPORT:g}), which "
                "some of its occurrences will lack"
            )
    if with_bursts and not learned.event_patterns.empty:
        spans = [(w.start, w.end) for w in events]
        learned.patterns["accepted_profile"] = sig.accepted_profiles(
            learned.patterns, _units_elsewhere(burst_files, spans, device_ip, device_mac)
        )
        learned.patterns["keepalive_period"] = sig.keepalive_periods(
            learned.patterns, _keepalive_units(burst_files, device_ip, device_mac)
        )
    if not learned.event_patterns.empty:
        found = _found_in(learned, events, bursts=with_bursts)
    learned.warnings[:0] = warnings
    write_index(found, left_out)
    return WindowedLearning(learned, events, quiet, index, left_out, found, warnings, cut["other"])


def _window_recordings(
    chosen: list[windows.Window], bursts: bool, kind: str
) -> list[sig.Recording]:
    """Windows as recordings (with the bursts inside connections already open that start
    in them); a baseline's in groups (the share rule counts per group: quiet time, and
    each other event)."""
    recordings_read = sig.read_recordings([w.flows_csv for w in chosen], bursts) if chosen else []
    for window, recording in zip(chosen, recordings_read):
        recording.group = (
            ""
            if kind == "event"
            else kind
            if kind != "other"
            else f"event {window.listed['event']}"
        )
    return recordings_read


def _nothing_learned(events, recorded, learn_against, device_ip: str) -> str:
    """Why nothing recurs in half of the event's windows that the baseline lacks, in one
    line: what it shares with other listed events (learn_against(groups): learned with
    only those other events' windows as a baseline), else what the windows hold."""
    groups = sorted({r.group for r in recorded["other"]})
    if groups:
        shared = learn_against(set())
        if not shared.event_patterns.empty:
            what = "; ".join(_pattern_words(row) for row in shared.event_patterns.itertuples())
            # The other events that alone take all of it away.
            alike = [g for g in groups if learn_against({g}).event_patterns.empty] or groups
            names = [g.removeprefix("event ") for g in alike]
            other = ", ".join(n for n in names if n) or "the other listed events"
            return (
                f"{shared.event} cannot be told from {other}: "
                f"what recurs around its listed times ({what}) recurs around theirs too, and "
                "the recordings show no difference between them (list them as one event, "
                "or record where they differ)"
            )
    seen = []
    for recording in recorded["event"]:
        units = recording.flows
        mine = (units["orig_h"] == device_ip) | (units["resp_h"] == device_ip)
        kinds = (
            set(units.loc[mine, "unit"]) if "unit" in units else {"flow"} if mine.any() else set()
        )
        seen.append(kinds)
    inner = sum(k == {"burst"} for k in seen)
    empty = sum(not k for k in seen)
    said = []
    if inner:
        said.append(
            f"{inner} of {len(events)} windows hold only bursts inside connections "
            "opened before them"
        )
    if empty:
        said.append(f"{empty} of {len(events)} windows hold no traffic of {device_ip}")
    return (
        f"nothing recurs in half of the {len(events)} listed times' windows that the "
        "background lacks"
        + (f" ({'; '.join(said)})" if said else "")
        + ": check the times (--timezone), widen --time-tolerance, or give more events"
    )


def _pattern_words(row) -> str:
    port = "" if row.server_port != row.server_port else f"/{int(row.server_port)}"
    profile = f" sizes {row.packet_profile}" if row.packet_profile else ""
    kind = "a burst in" if row.unit == "burst" else "a flow of"
    return f"{kind} {row.proto}{port} with {row.remote}{profile}"


def _units_elsewhere(
    burst_files: list[Path], spans: list, device_ip: str, device_mac
) -> pd.DataFrame:
    """The device's bursts inside connections already open, away from the given windows,
    keep-alives aside, fingerprinted: what the device sends when the event is not listed
    (read a chunk at a time: only these are kept)."""
    pieces = []
    for path in burst_files:
        units, _ = detector.read_device_units(path, {device_ip}, bursts=False, table=BURSTS)
        pieces.append(sig.burst_units(units))
    units = pd.concat(pieces, ignore_index=True)
    ts = units["ts"].to_numpy(float)
    away = np.ones(len(units), dtype=bool)
    for start, end in spans:
        away &= ~((ts >= start) & (ts < end))
    units = units[away & (units["keepalive"] == 0).to_numpy()]
    mine = sig.device_flows(sig.Recording("elsewhere", units), device_ip, device_mac)
    return sig.fingerprints(mine) if len(mine) else mine


def _keepalive_units(burst_files: list[Path], device_ip: str, device_mac) -> pd.DataFrame:
    """The device's keep-alive bursts inside connections already open, with their period,
    fingerprinted (read a chunk at a time: only the device's are kept)."""
    pieces = []
    for path in burst_files:
        units, _ = detector.read_device_units(path, {device_ip}, table=BURSTS, extra=["period"])
        units = sig.burst_units(units)
        pieces.append(units[(units["keepalive"] == 1).to_numpy()])
    units = pd.concat(pieces, ignore_index=True)
    mine = sig.device_flows(sig.Recording("keep-alives", units), device_ip, device_mac)
    return sig.fingerprints(mine) if len(mine) else mine


def _beside_long(flows_csvs: list[Path]) -> tuple[list[Path] | None, list[Path] | None]:
    """The long captures' packets CSVs where every one is beside its flows CSV (main.py
    writes them so), and their bursts CSVs where every one is (stream-identifier writes
    them): windows.cut reads them a chunk at a time."""
    packet_files = [packets_beside(p) for p in flows_csvs]
    burst_files = [flows.bursts_beside(p) for p in flows_csvs]
    return (
        packet_files if all(p.is_file() for p in packet_files) else None,
        burst_files if all(p.is_file() for p in burst_files) else None,
    )


def _found_in(
    signature: sig.Signature,
    chosen: list[windows.Window],
    options: detector.DetectOptions | None = None,
    fingerprints: bool = False,
    bursts: bool = False,
) -> dict[str, float]:
    """Where the signature finds its event in each window, as event-detector would (or,
    with `fingerprints`, by the flows' fingerprints alone, whatever their counts and
    packets): the start of the detection nearest the listed time."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signature.csv"
        sig.write_signature_csv(signature, path)
        signatures = [s for s in detector.read_signatures(path) if s.patterns]
    if fingerprints:
        for s in signatures:
            s.patterns = [dataclasses.replace(p, ranges=(), profile=()) for p in s.patterns]
    found = {}
    for w in chosen:
        units = detector.read_flows(w.flows_csv, bursts)
        occurrences = detector.detect(units, w.name, signatures, options)
        starts = [o.start for o in occurrences if o.status == "detected"]
        if starts:
            middle = w.listed["time"] + w.listed["resolution"] / 2
            found[w.name] = min(starts, key=lambda start: abs(start - middle))
    return found


def write_signature(signature: sig.Signature, output_dir: Path) -> dict[str, Path]:
    """pattern.txt, profile.yaml and signature.csv in OUTPUT_DIR; the profile is checked
    first (a ToolError, and nothing written, if it would be invalid)."""
    document = profile.build_profile(signature)
    problems = profile.validate_profile(document)
    if problems:  # our own bug: never hand the firewall a profile it would misread
        raise ToolError("the generated profile.yaml is invalid: " + "; ".join(problems))
    paths = {key: Path(output_dir) / name for key, name in OUTPUT_NAMES.items()}
    header = (
        f"Device profile generated by signature-extractor from "
        f"{len(signature.recordings)} recording(s) of event '{signature.event}'.\n"
        "See pattern.txt for what each policy was built from."
    )
    bursts = signature.patterns.loc[signature.patterns["unit"] == "burst", "pattern"].tolist()
    if bursts:
        header += (
            f"\n{', '.join(bursts)}: a burst of messages inside a connection opened before "
            "the event (its stats count the burst's packets, not the connection's)."
        )
    csvio.write_text(paths["pattern"], pattern_text(signature))
    csvio.write_text(paths["profile"], profile.dump_profile(document, header))
    sig.write_signature_csv(signature, paths["signature"])
    return paths


def empty_signature_warning(signature: sig.Signature) -> str | None:
    """Said after writing, when nothing is left to detect."""
    if not len(signature.event_patterns) and not len(signature.background_patterns):
        return "the recordings have no flow in common: the outputs hold no pattern"
    if not len(signature.event_patterns):
        return "every flow the recordings have in common is background: no event pattern"
    return None


# ---------------------------------------------------------------------------------------
# What the commands say about each step (the same lines from every command)
# ---------------------------------------------------------------------------------------


def translated_lines(
    translations: list[packets.Translation], failed: int, seconds: float
) -> list[str]:
    lines = [
        f"wrote {t.output} ({t.packets} packets)"
        for t in sorted(translations, key=lambda t: str(t.capture))
    ]
    lines.append(
        f"packet-translator: {sum(t.packets for t in translations)} packets from "
        f"{len(translations)} capture(s) in {seconds:.1f} s"
        + (f"; {failed} capture(s) failed" if failed else "")
    )
    return lines


def flows_lines(written: list[FlowsWritten], failed: int, seconds: float) -> list[str]:
    lines = [
        f"wrote {w.flows_csv} ({w.flows} flows from {w.packets} packets) and "
        f"{w.bursts_csv.name} ({w.bursts} bursts)"
        for w in written
    ]
    lines.append(
        f"stream-identifier: {sum(w.flows for w in written)} flows, "
        f"{sum(w.bursts for w in written)} bursts in {len(written)} "
        f"file(s) in {seconds:.1f} s" + (f"; {failed} file(s) failed" if failed else "")
    )
    return lines


def signature_lines(signature: sig.Signature, paths: dict[str, Path]) -> list[str]:
    lines = [f"wrote {paths[key]}" for key in ("pattern", "profile", "signature")]
    lines.append(
        f"signature-extractor: {len(signature.event_patterns)} event pattern(s), "
        f"{len(signature.background_patterns)} background, {len(signature.noise)} "
        f"fingerprint(s) left out as noise, from {len(signature.recordings)} "
        "recording(s)"
    )
    return lines
