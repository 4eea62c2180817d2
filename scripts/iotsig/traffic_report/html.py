"""report.html: one self-contained page (pictures as data URIs, styles inline, nothing
fetched), rendered from report.html.j2 by Jinja2 with autoescaping. Every value the template
prints passes through `visible` first (the environment's finalize): control and direction
characters from packet names are shown as \\x1b / \\u202e text, then HTML-escaped."""

from __future__ import annotations

import base64
import math
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from .. import __version__, geo
from ..errors import ToolError
from .figures import CLASS_COLOURS
from .inputs import Device, Inputs, text

OUTPUT_NAMES = {
    "inventory": "inventory.csv",
    "map_png": "endpoint-map.png",
    "map_svg": "endpoint-map.svg",
    "timeline": "timeline.png",
    "report": "report.html",
}
OTHER_FILES = [
    "pattern.txt",
    "profile.yaml",
    OUTPUT_NAMES["map_png"],
    OUTPUT_NAMES["map_svg"],
    OUTPUT_NAMES["timeline"],
]
INVENTORY_SHOWN = [
    ("mac", "MAC"),
    ("vendor", "vendor"),
    ("role", "role"),
    ("ipv4", "IPv4"),
    ("ipv6", "IPv6"),
    ("dhcp_hostname", "DHCP host name"),
    ("pkts_sent", "packets sent"),
    ("bytes_sent", "bytes sent"),
    ("pkts_received", "packets received"),
    ("bytes_received", "bytes received"),
    ("first_time_utc", "first seen (UTC)"),
    ("last_time_utc", "last seen (UTC)"),
]
MAX_TABLE_ROWS = 1000  # rows of a table in the page; the CSV (or the picture) has all
MAX_PATTERN_LINES = 3000  # lines of pattern.txt in the page; the file has all
# C0 but tab and newline, DEL and C1, zero-width and direction marks, the BOM.
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e"
    r"\u2066-\u2069\ufeff]"
)


def visible(value) -> str:
    """A value as text, control characters written out (\\x1b, \\u202e); '' for missing.
    Markup (the template's own macros) passes as it is."""
    from markupsafe import Markup

    if isinstance(value, Markup):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _CONTROL.sub(_written_out, str(value))


def _written_out(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def count(value) -> str:
    """A whole number with thousands separators; '' when it is none."""
    try:
        return f"{int(round(float(value))):,}"
    except (TypeError, ValueError, OverflowError):
        return ""


def spaced(value) -> str:
    """A ';'-separated list with room to wrap after each ';'."""
    return visible(value).replace(";", "; ")


def short_time(value) -> str:
    """2024-08-19T09:32:20.552033Z -> 2024-08-19 09:32:20.552 (the CSV keeps it whole)."""
    return str(value or "").replace("T", " ").rstrip("Z")[:23]


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@lru_cache(maxsize=1)
def environment():
    try:
        import jinja2
    except ImportError:
        raise ToolError("jinja2 is not installed: pip install -r requirements.txt") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        autoescape=True,
        finalize=visible,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(visible=visible, count=count, spaced=spaced, short_time=short_time)
    return env


def render_html(
    device: Device,
    inputs: Inputs,
    inventory_table: pd.DataFrame | None,
    ends: pd.DataFrame,
    pictures: dict[str, bytes],
    pattern_text: str | None,
    csv_links: list[tuple[str, str]],
    matched: pd.DataFrame,
    notes: list[str],
    other_links: list[tuple[str, str]] = (),
    timeline_notes: list[str] = (),
    marked: dict | None = None,
) -> str:
    captures = set(inputs.summary.captures()) if inputs.summary is not None else set()
    if inputs.flows is not None:
        captures |= set(text(inputs.flows["capture"]).unique())
    pattern_lines = pattern_text.splitlines(keepends=True) if pattern_text is not None else []
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=f"Traffic report: {device.name} ({device.ip or device.mac})",
            device=device,
            version=__version__,
            names=OUTPUT_NAMES,
            inputs=inputs,
            recordings=len(captures),
            notes=notes,
            inventory=_records(inventory_table),
            shown=INVENTORY_SHOWN,
            numeric={"pkts_sent", "bytes_sent", "pkts_received", "bytes_received"},
            wrapped={"vendor", "ipv4", "ipv6", "dhcp_hostname"},
            times={"first_time_utc", "last_time_utc"},
            ends=_records(ends),
            colours=CLASS_COLOURS,
            geo_source=geo.source(),
            matched=len(matched),
            timeline_notes=timeline_notes,
            marked=marked or {},
            map_uri=data_uri(pictures["map_svg"], "image/svg+xml"),
            timeline_uri=data_uri(pictures["timeline"], "image/png"),
            pattern_text=pattern_text
            if len(pattern_lines) <= MAX_PATTERN_LINES
            else "".join(pattern_lines[:MAX_PATTERN_LINES]),
            pattern_lines=len(pattern_lines),
            max_pattern_lines=MAX_PATTERN_LINES,
            csv_links=csv_links,
            other_links=list(other_links),
        )
    )


def _records(table: pd.DataFrame | None) -> dict | None:
    """The first MAX_TABLE_ROWS rows of a table, and how many there are."""
    if table is None:
        return None
    return {
        "rows": table.head(MAX_TABLE_ROWS).to_dict("records"),
        "total": len(table),
        "max": MAX_TABLE_ROWS,
    }


def csv_links(output_dir: Path) -> list[tuple[str, str]]:
    """Relative links to every CSV in the output directory (and its subdirectories)."""
    output_dir = Path(output_dir)
    found = sorted(p for p in output_dir.rglob("*.csv") if p.is_file())
    links = []
    for path in found:
        relative = path.relative_to(output_dir).as_posix()
        links.append(("/".join(quote(part) for part in relative.split("/")), relative))
    return links
