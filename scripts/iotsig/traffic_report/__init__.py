"""See the traffic before reading it: a device inventory, an endpoint map, an activity
timeline, and one self-contained report.html that ties them to the signature.

Inputs are packets CSVs and/or flows CSVs (told apart by their header: inputs.file_kind).
The inventory needs packets; the endpoint map and the timeline work from flows (the
timeline uses packets for its byte counts when it has them). With flows CSVs, the packets
are never held whole: their aggregates are (packet_summary.py). Flows are matched to a
signature's patterns by recomputing their fingerprints (iotsig.signature.fingerprints).

  inputs.py     reading the CSVs; the device under study
  packet_summary.py  the packets read in chunks into small aggregates (given flows CSVs)
  inventory.py  inventory.csv: one row per MAC
  endpoints.py  the device's flows, their remote parties (iotsig.parties), one row each
  activity.py   pattern matching, the timeline's pattern rows, bytes per time bin
  figures.py    matplotlib helpers and the endpoint map; timeline.py the timeline
  html.py       report.html from report.html.j2 (Jinja2, autoescaped)
  build.py      build_report: all of it

Every name shown comes from packets, so it is treated as hostile: control characters are
dropped and mathtext is off in pictures; in the page they are written out (\\x1b) and
everything is HTML-escaped. Pictures and tables are bounded: at most 80 endpoints on the
map, 30 pattern rows and 30 recordings on the timeline, 1,000 table rows, each saying what
it folded.
"""

from .activity import (
    MAX_TIMELINE_ROWS,
    activity,
    bin_width,
    match_patterns,
    recording_ends,
    recording_starts,
    row_of,
    spread_flows,
    timeline_rows,
)
from .build import Report, build_report, read_signature, write_bytes
from .endpoints import device_flows, endpoints, fold_small, protocol_labels
from .figures import (
    MAX_MAP_NODES,
    draw_endpoint_map,
    endpoint_map_figure,
    human_bytes,
    picture_text,
)
from .html import OUTPUT_NAMES, csv_links, render_html, visible
from .inputs import Device, Inputs, csv_kind, find_device, read_inputs
from .inventory import inventory
from .timeline import MAX_PANELS, draw_timeline

__all__ = [
    "MAX_MAP_NODES",
    "MAX_PANELS",
    "MAX_TIMELINE_ROWS",
    "OUTPUT_NAMES",
    "Device",
    "Inputs",
    "Report",
    "activity",
    "bin_width",
    "build_report",
    "csv_kind",
    "csv_links",
    "device_flows",
    "draw_endpoint_map",
    "draw_timeline",
    "endpoint_map_figure",
    "endpoints",
    "find_device",
    "fold_small",
    "human_bytes",
    "inventory",
    "match_patterns",
    "picture_text",
    "protocol_labels",
    "read_inputs",
    "read_signature",
    "recording_ends",
    "recording_starts",
    "render_html",
    "row_of",
    "spread_flows",
    "timeline_rows",
    "visible",
    "write_bytes",
]
