"""iotsig from Python: captures in, pandas DataFrames out.

What the commands write as CSVs, in memory, with the same columns and the same rules (the
commands and these functions run the same library code). Intermediate files go to a
temporary folder that is removed; nothing is written in the working folder.

    import iotsig
    packets = iotsig.read_packets("capture.pcap")
    flows = iotsig.read_flows("capture.pcap", device_ip="192.0.2.10")
    signature = iotsig.learn(["on-1.pcap", "on-2.pcap"], device="plug", device_ip="192.0.2.10")
    detections = iotsig.detect("week.pcap", signature)

Columns are typed by the schema (README: "CSV columns"): whole numbers as pandas' nullable
Int64, flags as boolean, times as float seconds since 1970 (UTC), text as str ("" for
empty). Problems the library goes on past are warnings of category iotsig.IotsigWarning;
a file it cannot read raises iotsig.ToolError (one line, naming the file); a bad argument
raises ValueError or TypeError naming the argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import yaml

from . import csvio, detector, flows, packets, pipeline, profile
from . import signature as sig
from .csvio import as_read
from .errors import ToolError, warn
from .event_times import TimesFormat, choose_event, for_device, read_event_times
from .inputs import file_kind
from .parties import MAC_PATTERN
from .schema import BURSTS, DETECTIONS, FLOWS, PACKETS, SIGNATURE, Table
from .signature import LearnOptions

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------
# Packets and flows
# ---------------------------------------------------------------------------------------


def read_packets(
    capture: PathLike,
    *,
    device_ip: str | None = None,
    device_mac: str | None = None,
    jobs: int = 0,
) -> pd.DataFrame:
    """The packets of a capture (pcap, pcapng, compressed): packet-translator's CSV.

    Args:
        capture: the capture file.
        device_ip, device_mac: the device under study; its packets get the `direction`
            column (by default the private address that talks the most).
        jobs: processes for a big capture, translated in chunks (0: one per core).

    Returns:
        One row per packet, the packets CSV's columns (README: packets CSV).
    """
    capture = _capture(capture, "capture")
    device_ip = _address(device_ip, "device_ip")
    device_mac = _mac(device_mac, "device_mac")
    with _scratch() as folder:
        output = pipeline.packets_path(capture, folder)
        for _, result in packets.run_translations([(capture, output, device_mac, device_ip)], jobs):
            if isinstance(result, ToolError):
                raise result
            _warn_all(result.warnings)
        return typed(csvio.read_table(output, PACKETS), PACKETS)


def read_flows(
    source: PathLike | pd.DataFrame,
    *,
    device_ip: str | Sequence[str] | None = None,
    device_mac: str | None = None,
    idle_timeout: float = flows.DEFAULT_IDLE_TIMEOUT,
    max_duration: float = flows.DEFAULT_MAX_DURATION,
    burst_gap: float = flows.DEFAULT_BURST_GAP,
    jobs: int = 0,
    bursts: bool = False,
) -> pd.DataFrame:
    """The flows of a capture: stream-identifier's CSV (Zeek conn.log style).

    Args:
        source: a capture, a packets CSV, a packets DataFrame (read_packets') or a flows
            CSV (read as it is).
        device_ip: the device's address, or several; its side of each flow is `direction`.
        device_mac: the device's MAC (a capture only: for the packets' direction).
        idle_timeout, max_duration, burst_gap: seconds, as stream-identifier's flags.
        jobs: processes for a big capture (0: one per core).
        bursts: the bursts CSV's rows instead (read_bursts).

    Returns:
        One row per flow, the flows CSV's columns.
    """
    built = _flows_and_bursts(
        source, device_ip, device_mac, idle_timeout, max_duration, burst_gap, jobs
    )
    return built[1] if bursts else built[0]


def read_bursts(source: PathLike | pd.DataFrame, **arguments) -> pd.DataFrame:
    """The bursts inside long-lived connections: the bursts CSV (README: bursts CSV), of
    the same sources and keyword arguments as read_flows (a flows CSV: the bursts CSV beside
    it)."""
    return read_flows(source, bursts=True, **arguments)


def _flows_and_bursts(source, device_ip, device_mac, idle_timeout, max_duration, burst_gap, jobs):
    addresses = _addresses(device_ip, "device_ip")
    options = flows.FlowOptions(
        _seconds(idle_timeout, "idle_timeout"),
        _seconds(max_duration, "max_duration"),
        addresses,
        _seconds(burst_gap, "burst_gap"),
    )
    if isinstance(source, pd.DataFrame):
        missing = [c for c in flows.REQUIRED if c not in source]
        if missing:
            raise ValueError(f"source: the packets DataFrame lacks column(s) {', '.join(missing)}")
        built = flows.build(as_read(source, PACKETS), options)
        return typed(built.flows, FLOWS), typed(built.bursts, BURSTS)
    path = _path(source, "source")
    kind = file_kind(path, ("capture", "packets", "flows"))
    if kind == "flows":
        return _read_flows_csv(path)
    if kind not in ("capture", "packets"):
        raise ToolError(f"{path}: a {kind} CSV, not a capture, packets CSV or flows CSV")
    with _scratch() as folder:
        if kind == "packets":
            written = pipeline.packets_to_flows(path, folder, options)
        else:
            mac = _mac(device_mac, "device_mac")
            written = _converted([path], folder, addresses, mac, options, jobs)[path]
        _warn_all(written.warnings)
        return _read_flows_csv(written.flows_csv)


def _read_flows_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    beside = flows.bursts_beside(path)
    bursts = csvio.read_table(beside, BURSTS) if beside.is_file() else csvio.empty_frame(BURSTS)
    return typed(csvio.read_table(path, FLOWS), FLOWS), typed(bursts, BURSTS)


def _converted(captures, folder, addresses, device_mac, options, jobs) -> dict:
    """Each capture through packet-translator and stream-identifier into `folder`:
    capture -> pipeline.FlowsWritten (the first capture that fails raises its error)."""
    written = {}
    device_ip = addresses[0] if addresses else None
    for capture, result in pipeline.captures_to_flows(
        captures, folder, device_ip, device_mac, options, jobs
    ):
        if isinstance(result, ToolError):
            raise result
        _warn_all(result.translation.warnings)
        written[capture] = result.flows
    return written


# ---------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------


class Signature:
    """An event's signature: the three files signature-extractor writes, in memory.

    Attributes:
        patterns: one row per pattern, the signature CSV's columns (README: signature CSV).
        event, device_name, device_ip: what it is the signature of.
        source: the signature CSV it was read from ("" when learned here).
        warnings: what learning said (also given as IotsigWarnings).
    """

    def __init__(self, patterns: pd.DataFrame, texts: dict[str, str | None], source: str = ""):
        self.patterns = patterns
        self._texts = texts
        self.source = source
        self.warnings: list[str] = []
        first = patterns.iloc[0] if len(patterns) else {}
        self.event = str(first.get("event", ""))
        self.device_name = str(first.get("device_name", ""))
        self.device_ip = str(first.get("device_ip", ""))

    def __repr__(self) -> str:
        events = int((self.patterns["role"] == "event").sum()) if len(self.patterns) else 0
        return (
            f"<iotsig.Signature of {self.event!r} on {self.device_name} ({self.device_ip}): "
            f"{events} event pattern(s), {len(self.patterns) - events} background>"
        )

    def pattern_text(self) -> str:
        """pattern.txt: each pattern in words, for people."""
        if self._texts.get("pattern") is None:
            raise ValueError(
                f"{self.source}: no pattern.txt beside it (pattern.txt is written when learning)"
            )
        return self._texts["pattern"]

    def profile(self) -> dict:
        """profile.yaml, the smart-home firewall's format (PROFILE-FORMAT.md), as a dict."""
        return yaml.safe_load(self._texts["profile"])

    def write(self, folder: PathLike) -> dict[str, Path]:
        """pattern.txt, profile.yaml and signature.csv in `folder` (made if missing), each
        written whole or not at all: the files signature-extractor writes. Returns their
        paths by kind ('pattern', 'profile', 'signature')."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for kind, name in pipeline.OUTPUT_NAMES.items():
            if self._texts.get(kind) is not None:
                paths[kind] = folder / name
                csvio.write_text(paths[kind], self._texts[kind])
        return paths


def read_signature(path: PathLike) -> Signature:
    """A signature CSV (signature-extractor's signature.csv, version 2 or 3), with the
    pattern.txt and profile.yaml beside it where they are."""
    path = _path(path, "path")
    patterns = sig.read_signature_csv(path)
    texts = {"signature": path.read_text(encoding="utf-8")}
    for kind in ("pattern", "profile"):
        beside = path.parent / pipeline.OUTPUT_NAMES[kind]
        texts[kind] = beside.read_text(encoding="utf-8") if beside.is_file() else None
    if texts["profile"] is None and len(patterns):
        texts["profile"] = profile.dump_profile(profile.build_profile(_as_learned(patterns)))
    return Signature(typed(patterns, SIGNATURE), texts, str(path))


def _as_learned(patterns: pd.DataFrame) -> sig.Signature:
    """A signature read back, as learning left it (what the profile is built from)."""
    first = patterns.iloc[0]
    return sig.Signature(
        str(first["device_name"]),
        str(first["device_ip"]),
        "",
        str(first["event"]),
        [],
        1.0,
        patterns,
        pd.DataFrame(),
    )


def learn(
    recordings: PathLike | pd.DataFrame | Sequence[PathLike | pd.DataFrame],
    *,
    device: str,
    device_ip: str,
    device_mac: str | None = None,
    event: str | None = None,
    baseline: Sequence[PathLike | pd.DataFrame] = (),
    times: PathLike | None = None,
    times_format: TimesFormat | None = None,
    options: LearnOptions | None = None,
    jobs: int = 0,
) -> Signature:
    """What recurs in every recording of an event: signature-extractor (main.py's steps).

    Args:
        recordings: the event's recordings: captures, flows CSVs or flows DataFrames
            (read_flows'; a DataFrame's name is its .attrs["name"], else "recording N").
            With `times`: the long capture(s) (or their flows CSVs) the times are in.
        device: the device's name, as the firewall profile will call it.
        device_ip: its address. device_mac: its MAC (else the one seen sending from it).
        event: the event's name (with `times`: the one to learn among those listed).
        baseline: recordings without the event (quiet time, other events): what they also
            hold is background, not the event.
        times: an event-times CSV (README: event-times CSV): each listed time is a
            recording, cut from the long captures; times_format: how to read it.
        options: LearnOptions (support, background share, how the flows were built...).
        jobs: processes that translate captures (0: one per core).

    Returns:
        The Signature (its warnings are also given as IotsigWarnings).
    """
    device = _text(device, "device")
    device_ip = _address(device_ip, "device_ip")
    if device_ip is None:
        raise ValueError("device_ip: required")
    device_mac = _mac(device_mac, "device_mac")
    options = options or LearnOptions()
    if not isinstance(options, LearnOptions):
        raise TypeError(f"options: a LearnOptions, not {type(options).__name__}")
    items = _sequence(recordings, "recordings")
    base_items = _sequence(baseline, "baseline")
    if not items:
        raise ValueError("recordings: none given")
    building = flows.FlowOptions(device_ips=(device_ip,), **_flow_settings(options))
    with _scratch() as folder:
        event_units = _recordings(items, folder, device_ip, device_mac, building, jobs)
        base_units = _recordings(base_items, folder, device_ip, device_mac, building, jobs)
        if any(isinstance(i, (str, os.PathLike)) and _built_here(i) for i in items):
            # flows built here: the signature says how (as main.py's does), so that
            # detection builds them alike
            options = dataclasses.replace(options, flow_settings=building.settings())
        if times is not None:
            learned = _learn_in_windows(
                event_units,
                base_units,
                times,
                times_format,
                folder,
                device,
                device_ip,
                device_mac,
                event,
                options,
            )
        else:
            learned = pipeline.learn(
                event_units,
                device,
                device_ip,
                device_mac,
                event=event or "event",
                baseline=base_units or None,
                options=options,
            )
        result = _written(learned, folder / "signature")
    _warn_all(result.warnings)
    return result


def _learn_in_windows(
    units, base_units, times, times_format, folder, device, device_ip, device_mac, event, options
) -> sig.Signature:
    if not all(isinstance(u, Path) for u in units + base_units):
        raise TypeError(
            "recordings, baseline: with times=, captures or flows CSVs (not DataFrames)"
        )
    times_path = _path(times, "times")
    listed = read_event_times(times_path, times_format or TimesFormat())
    listed = for_device(listed, times_path, device)
    named = choose_event(listed, times_path, event)
    if named is None:
        warn(
            f"{times_path}: no event name column: every line is taken as event {event or 'event'!r}"
        )
    windows_dir = folder / "windows"
    windows_dir.mkdir()
    return pipeline.learn_in_windows(
        units,
        listed,
        times_path,
        windows_dir,
        device,
        device_ip,
        device_mac,
        event=event or named or "event",
        baseline_files=base_units or None,
        options=options,
    ).signature


def _recordings(items, folder, device_ip, device_mac, building, jobs) -> list:
    """Flows CSV paths or sig.Recordings: captures and packets CSVs through the steps
    main.py runs (into `folder`), flows CSVs as they are, DataFrames as recordings."""
    captures, units = [], []
    for number, item in enumerate(items):
        if isinstance(item, pd.DataFrame):
            missing = [c for c in sig.REQUIRED if c not in item]
            if missing:
                raise ValueError(f"recordings: DataFrame {number + 1} lacks {', '.join(missing)}")
            name = str(item.attrs.get("name") or f"recording {number + 1}")
            units.append(sig.Recording(name, as_read(item, FLOWS)))
            continue
        path = _path(item, "recordings")
        kind = file_kind(path, ("capture", "packets", "flows"))
        if kind == "capture":
            captures.append(path)
        elif kind == "packets":
            written = pipeline.packets_to_flows(path, folder, building)
            _warn_all(written.warnings)
            units.append(written.flows_csv)
        elif kind == "flows":
            units.append(path)
        else:
            raise ToolError(f"{path}: a {kind} CSV, not a capture or flows CSV")
    if captures:
        converted = _converted(captures, folder, (device_ip,), device_mac, building, jobs)
        units += [converted[c].flows_csv for c in captures]
    if any(isinstance(u, sig.Recording) for u in units) and not all(
        isinstance(u, sig.Recording) for u in units
    ):  # one kind of recording: flows CSVs read as signature-extractor reads them
        units = [u if isinstance(u, sig.Recording) else sig.read_recordings([u])[0] for u in units]
    return units


def _built_here(path) -> bool:
    return file_kind(Path(path), ("capture", "packets", "flows")) != "flows"


def _written(learned: sig.Signature, folder: Path) -> Signature:
    """The learned signature's three files as signature-extractor writes them, and its
    patterns as detection reads them back: the same whether in memory or on disk."""
    folder.mkdir()
    paths = pipeline.write_signature(learned, folder)
    texts = {kind: path.read_text(encoding="utf-8") for kind, path in paths.items()}
    result = Signature(typed(sig.read_signature_csv(paths["signature"]), SIGNATURE), texts)
    empty = pipeline.empty_signature_warning(learned)
    result.warnings = learned.warnings + ([empty] if empty else [])
    return result


# ---------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------


def detect(
    source: PathLike | pd.DataFrame,
    signature: Signature | PathLike | Sequence[Signature | PathLike],
    *,
    bursts: pd.DataFrame | None = None,
    min_score: float = detector.DEFAULT_MIN_SCORE,
    window: float | None = None,
    strict_order: bool = False,
    tolerance: float = detector.DEFAULT_TOLERANCE,
    jobs: int = 0,
) -> pd.DataFrame:
    """Where the signatures' events happen in a capture: event-detector.

    Args:
        source: a capture, a packets CSV, a flows CSV or a flows DataFrame (read_flows').
            A capture's flows are built as the signatures were learned.
        signature: a Signature, a signature CSV, or several.
        bursts: with a flows DataFrame, its bursts (read_bursts'), needed by signatures
            with burst patterns.
        min_score, window, strict_order, tolerance: as event-detector's flags.

    Returns:
        One row per occurrence, the detections CSV's columns (README: detections CSV).
    """
    signatures = []
    for item in _sequence(signature, "signature"):
        if not isinstance(item, Signature):
            item = read_signature(item)
        if not len(item.patterns):
            raise ValueError(f"signature: {item.source or item.event!r} has no pattern")
        patterns = as_read(item.patterns, SIGNATURE)
        found = detector.event_signatures(patterns, item.source, tolerance)
        for event_signature in found:
            if not event_signature.patterns:
                warn(
                    f"{item.source or item.event}: event {event_signature.event!r} has no event "
                    "pattern (all background): it cannot be detected"
                )
        signatures += [s for s in found if s.patterns]
    if not signatures:
        raise ValueError("signature: none of the signatures has an event pattern")
    options = detector.DetectOptions(min_score, window, strict_order)
    needs_bursts = any(s.needs_bursts for s in signatures)
    devices = {s.device_ip for s in signatures}
    if isinstance(source, pd.DataFrame):
        units = as_read(source, FLOWS)
        if needs_bursts and bursts is not None:
            units = sig.with_bursts(units, as_read(bursts, BURSTS))
        return _detections(units, "flows", signatures, options)
    path = _path(source, "source")
    kind = file_kind(path, ("capture", "packets", "flows"))
    if kind == "flows":
        units, _ = detector.read_device_units(path, devices, needs_bursts)
        return _detections(units, path.name, signatures, options)
    building, _, notes = detector.flow_options(signatures)
    _warn_all(notes)
    with _scratch() as folder:
        if kind == "packets":
            written = pipeline.packets_to_flows(path, folder, building)
        elif kind == "capture":
            written = _converted([path], folder, building.device_ips, None, building, jobs)[path]
        else:
            raise ToolError(f"{path}: a {kind} CSV, not a capture, packets CSV or flows CSV")
        _warn_all(written.warnings)
        units, _ = detector.read_device_units(written.flows_csv, devices, needs_bursts)
    return _detections(units, path.name, signatures, options)


def _detections(units, name, signatures, options) -> pd.DataFrame:
    occurrences = detector.detect(units, name, signatures, options)
    return typed(detector.detections_frame(occurrences), DETECTIONS)


# ---------------------------------------------------------------------------------------
# Types: the schema's, both ways
# ---------------------------------------------------------------------------------------


def typed(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """A table as a notebook wants it, as the CSV holds it: the schema's columns in its
    order, whole numbers as Int64, flags as boolean, times to the microsecond (as
    written), text as str ("" for empty)."""
    out = frame.reindex(columns=table.names)
    for column in table.columns:
        values = out[column.name]
        if column.type in ("int", "bool"):
            numbers = pd.to_numeric(values, errors="coerce").round()
            out[column.name] = numbers.astype("Int64" if column.type == "int" else "boolean")
        elif column.type == "float":
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
            out[column.name] = numbers.round(6) if column.spelling == "epoch" else numbers
        else:
            text = values.astype(object)
            out[column.name] = text.where(text.notna(), "").astype(str)
    return out


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A temporary folder for the intermediate CSVs, removed however the block ends."""
    with tempfile.TemporaryDirectory(prefix="iotsig-") as folder:
        yield Path(folder)


def _warn_all(messages) -> None:
    for message in messages:
        warn(message)


def _path(value, name: str) -> Path:
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise TypeError(f"{name}: a file path (str or Path), not {type(value).__name__}")


def _capture(value, name: str) -> Path:
    path = _path(value, name)
    kind = file_kind(path, ("capture",))
    if kind != "capture":
        raise ToolError(f"{path}: a {kind} CSV, not a capture")
    return path


def _text(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: a non-empty name is required, not {value!r}")
    return value


def _address(value, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name}: an address as a str, not {type(value).__name__}")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an IPv4 or IPv6 address") from None


def _addresses(value, name: str) -> tuple[str, ...]:
    """One address (a str) or several (any sequence of str)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (_address(value, name),)
    if isinstance(value, (Sequence, set, frozenset)):
        return tuple(_address(v, name) for v in value)
    raise TypeError(f"{name}: an address or a sequence of addresses, not {type(value).__name__}")


def _mac(value, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not MAC_PATTERN.match(value.strip()):
        raise ValueError(f"{name}: {value!r} is not a MAC address (like 50:c7:bf:ed:0a:54)")
    return value.strip().lower().replace("-", ":")


def _seconds(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: a number of seconds, not {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{name}: a positive number of seconds, not {value!r}")
    return number


def _sequence(value, name: str) -> list:
    """One item (a path or a DataFrame) or a sequence of them."""
    if isinstance(value, (str, os.PathLike, pd.DataFrame, Signature)):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    raise TypeError(f"{name}: a path, a DataFrame or a list of them, not {type(value).__name__}")


def _flow_settings(options: LearnOptions) -> dict:
    known = flows.FlowOptions().settings()
    unknown = set(options.flow_settings) - set(known)
    if unknown:
        raise ValueError(f"options.flow_settings: unknown {', '.join(sorted(unknown))}")
    return {k: _seconds(v, k) for k, v in options.flow_settings.items()}
