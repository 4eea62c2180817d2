"""Everything: read the signature, work out the device, write inventory.csv, the pictures
and report.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import csvio
from ..errors import InputError, OutputError
from ..schema import DETECTIONS, INVENTORY
from ..signature import read_signature_csv
from .activity import (
    MAX_TIMELINE_ROWS,
    activity,
    bin_width,
    match_patterns,
    recording_ends,
    recording_starts,
)
from .endpoints import device_flows, endpoints
from .figures import draw_endpoint_map
from .html import OTHER_FILES, OUTPUT_NAMES, csv_links, render_html
from .inputs import Device, Inputs, find_device, flows_from_packets
from .inventory import inventory
from .timeline import MARK_COLUMNS, MAX_PANELS, draw_timeline


@dataclass
class Report:
    paths: dict[str, Path]
    inventory: pd.DataFrame | None
    endpoints: pd.DataFrame
    matched: pd.DataFrame
    device: Device
    notes: list[str]


def write_bytes(path: Path, data: bytes) -> None:
    with csvio.atomic_path(path) as tmp:
        try:
            Path(tmp).write_bytes(data)
        except OSError as e:
            raise OutputError(path, f"cannot write ({e.strerror})") from None


def build_report(
    inputs: Inputs,
    output_dir: Path,
    device_ip: str | None = None,
    device_mac: str | None = None,
    device_name: str | None = None,
    signature_path: Path | None = None,
    pattern_path: Path | None = None,
    step=lambda name: None,
    events: pd.DataFrame | None = None,
    detections_path: Path | None = None,
) -> Report:
    """Write inventory.csv, endpoint-map.png/.svg, timeline.png and report.html. `events`:
    listed event times (event_times.read_event_times); `detections_path`: a detections CSV;
    both drawn on the timeline."""
    output_dir = Path(output_dir)
    notes = []
    times = marked_times(events, detections_path)
    patterns, pattern_text = read_signature(signature_path, pattern_path)
    device = find_device(inputs, device_ip, device_mac, device_name, patterns)
    if inputs.flows is None and inputs.packets is not None:
        inputs.flows = flows_from_packets(inputs.packets, device)
        notes.append(
            "no flows CSV given: flows were rebuilt from the packets with "
            "stream-identifier's default timeouts"
        )
    step("inventory")
    paths = {key: output_dir / name for key, name in OUTPUT_NAMES.items()}
    mine = device_flows(inputs.flows, device)
    gateways = set(mine.loc[mine["klass"] == "gateway", "remote_addr"]) if len(mine) else set()
    inventory_table = None
    if inputs.summary is not None:
        inventory_table = inventory(inputs.summary.groups, device, gateways)
        csvio.write_table(inventory_table, INVENTORY, paths["inventory"])
    else:
        paths.pop("inventory")
    step("endpoint map")
    ends = endpoints(mine)
    pictures = {}
    pictures["map_png"], pictures["map_svg"] = draw_endpoint_map(ends, device)
    write_bytes(paths["map_png"], pictures["map_png"])
    write_bytes(paths["map_svg"], pictures["map_svg"])
    step("timeline")
    matched, timeline_notes = _timeline(inputs, device, mine, patterns, pictures, notes, times)
    write_bytes(paths["timeline"], pictures["timeline"])
    step("report")
    others = [(name, name) for name in OTHER_FILES if (output_dir / name).is_file()]
    page = render_html(
        device,
        inputs,
        inventory_table,
        ends,
        pictures,
        pattern_text,
        csv_links(output_dir),
        matched,
        notes,
        others,
        timeline_notes,
        times.groupby("kind").size().to_dict(),
    )
    csvio.write_text(paths["report"], page)
    return Report(paths, inventory_table, ends, matched, device, notes)


def read_signature(
    signature_path: Path | None, pattern_path: Path | None
) -> tuple[pd.DataFrame | None, str | None]:
    """The signature's patterns, and the text of pattern.txt (by default the one beside it)."""
    patterns = None
    if signature_path is not None:
        patterns = read_signature_csv(signature_path)
        if pattern_path is None and (Path(signature_path).parent / "pattern.txt").is_file():
            pattern_path = Path(signature_path).parent / "pattern.txt"
    if pattern_path is None:
        return patterns, None
    try:
        return patterns, Path(pattern_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(pattern_path, "no such file") from None
    except OSError as e:
        raise InputError(pattern_path, f"cannot read ({e.strerror})") from None


def _timeline(
    inputs: Inputs,
    device: Device,
    mine: pd.DataFrame,
    patterns: pd.DataFrame | None,
    pictures: dict,
    notes: list[str],
    times: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Match the patterns, bin the bytes and draw timeline.png into `pictures`. Returns the
    matched flows and what the page should say about folding."""
    starts, ends_at = recording_starts(inputs), recording_ends(inputs)
    captures = list(starts.index)
    width = bin_width(float((ends_at - starts).max()) if len(starts) else 1.0)
    matched = match_patterns(mine, patterns)
    if patterns is not None and len(patterns) and matched.empty:
        notes.append("no flow of these recordings matches a pattern of the signature")
    if len(matched):
        offset = matched["capture"].map(starts).to_numpy(dtype=float)
        matched["rel_start"] = matched["start"] - offset
        matched["rel_end"] = matched["end"] - offset
    source = (
        "packets"
        if inputs.summary is not None
        else "flows: each flow's bytes spread evenly over its duration"
    )
    bins = activity(inputs, device, starts, width, mine)
    pictures["timeline"] = draw_timeline(
        bins, width, captures, starts, ends_at, matched, patterns, device, source, times
    )
    return matched, _folding_notes(patterns, captures)


def marked_times(events: pd.DataFrame | None, detections_path: Path | None) -> pd.DataFrame:
    """The listed event times and the detections as one table (timeline.MARK_COLUMNS)."""
    parts = []
    if events is not None and len(events):
        parts.append(
            pd.DataFrame(
                {"time": events["time"], "end": events["time"], "event": events["event"]}
            ).assign(kind="listed")
        )
    if detections_path is not None:
        found = csvio.read_table(
            detections_path, DETECTIONS, required=["start"], columns=["start", "end", "event"]
        )
        parts.append(
            pd.DataFrame(
                {
                    "time": pd.to_numeric(found["start"], errors="coerce"),
                    "end": pd.to_numeric(found.get("end", found["start"]), errors="coerce"),
                    "event": found.get("event", pd.Series("", index=found.index)).astype(object),
                }
            ).assign(kind="detected")
        )
    if not parts:
        return pd.DataFrame(columns=MARK_COLUMNS)
    times = pd.concat(parts, ignore_index=True)
    times["event"] = times["event"].astype(object).fillna("").astype(str)
    return times.dropna(subset=["time"]).reset_index(drop=True)


def _folding_notes(patterns: pd.DataFrame | None, captures: list[str]) -> list[str]:
    said = []
    if patterns is not None and len(patterns) > MAX_TIMELINE_ROWS:
        said.append(
            f"The signature has {len(patterns):,} patterns: the timeline gives a row "
            f"to the {MAX_TIMELINE_ROWS - 1} with the most matched flows and marks "
            f"the flows of the other {len(patterns) - MAX_TIMELINE_ROWS + 1:,} in one "
            "last row."
        )
    if len(captures) > MAX_PANELS:
        said.append(f"{len(captures):,} recordings: the timeline draws the first {MAX_PANELS}.")
    return said
