"""Pictures with matplotlib's object API (Figure + Agg canvas: no pyplot, no display): the
shared drawing helpers and the endpoint map. Every name drawn comes from packets: control
and direction characters are dropped and mathtext is off."""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import ToolError
from .endpoints import CLASS_ORDER, fold_small
from .inputs import Device

CLASS_COLOURS = {
    "gateway": "#e6850e",
    "local": "#2a9d3a",
    "external": "#1f6fb4",
    "multicast": "#8e5bbf",
    "broadcast": "#d0312d",
    "": "#7f7f7f",
}
# The external parties' organisations, largest first (tab10 without its blue, grey and the
# class colours' near twins); the organisations past these share the external blue.
ORG_COLOURS = ["#17becf", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#ff7f0e", "#2ca02c"]
DEVICE_COLOUR = "#222222"
MAX_MAP_NODES = 80  # more remote parties than this: the smallest are folded into one
LABEL_CHARS = 40  # longest name drawn in a picture (the tables have it whole)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")


# ---------------------------------------------------------------------------------------
# Shared


def new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ToolError("matplotlib is not installed: pip install -r requirements.txt") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # the Agg canvas, whatever backend pyplot would pick
    return figure


def save(figure, kind: str, dpi: int = 100, bbox=None) -> bytes:
    import matplotlib

    buffer = io.BytesIO()
    options = {"bbox_inches": bbox} if bbox is not None else {}
    # SVG text stays text (searchable, a tenth of the size); fonts are the viewer's.
    with warnings.catch_warnings(), matplotlib.rc_context({"svg.fonttype": "none"}):
        warnings.simplefilter("ignore")  # e.g. a glyph a name uses that the font lacks
        figure.savefig(buffer, format=kind, dpi=dpi, metadata=_metadata(kind), **options)
    return buffer.getvalue()


def _tight_box(figure, pad: float = 0.15):
    """The box around everything drawn, in inches: computed once for both formats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = figure.get_tightbbox(figure.canvas.get_renderer())
    return box.padded(pad)


def _metadata(kind: str) -> dict:
    # No creation date: the same input gives the same file.
    if kind == "svg":
        return {"Date": None, "Creator": f"iotsig {__version__} traffic-report"}
    return {"Software": f"iotsig {__version__} traffic-report"}


def picture_text(value: str, limit: int = LABEL_CHARS) -> str:
    """A name from packets made safe to draw: no control or direction characters, and
    shortened in the middle (the two ends of a domain name say the most)."""
    value = _CONTROL.sub(" ", str(value)).strip()
    if len(value) > limit:
        keep = limit - 1
        value = value[: keep - keep // 3] + "…" + value[len(value) - keep // 3 :]
    return value


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------
# The endpoint map


def draw_endpoint_map(ends: pd.DataFrame, device: Device) -> tuple[bytes, bytes]:
    """The endpoint map as PNG and SVG."""
    figure = endpoint_map_figure(ends, device)
    # Should a label still run past the square, the picture grows rather than cut it.
    box = _tight_box(figure)
    return save(figure, "png", bbox=box), save(figure, "svg", bbox=box)


def endpoint_map_figure(ends: pd.DataFrame, device: Device):
    """The device in the middle, its remote parties on a ring around it (grouped by class,
    largest first), one edge each, as wide as its bytes. Few parties: horizontal two-line
    labels; many: one radial line each, which cannot run into its neighbours. Labels carry
    the label "endpoint-label" (tests measure them)."""
    ends = _by_organisation(fold_small(ends, MAX_MAP_NODES))
    n = len(ends)
    radial = n > 8
    # Radial labels need the room all round; horizontal ones only left and right.
    width, height, title_room = (13.0, 13.0, 0.6) if radial else (11.0, 7.8, 0.6)
    figure = new_figure(width, height + title_room)
    axes = figure.add_axes([0, 0, 1, height / (height + title_room)])
    half = 2.6
    axes.set_xlim(-half, half)
    axes.set_ylim(-half * height / width, half * height / width)
    axes.set_aspect("equal")
    axes.axis("off")
    title = (
        f"Endpoints of {picture_text(device.name, 30)} "
        f"({device.ip or device.mac}): {n} remote part{'y' if n == 1 else 'ies'}; "
        "edge width: bytes exchanged"
    )
    figure.text(
        0.5,
        1 - 0.25 / (height + title_room),
        title,
        ha="center",
        va="center",
        fontsize=13,
        parse_math=False,
    )
    if n:
        _draw_ring(axes, ends, radial)
    else:
        axes.text(
            0,
            -0.5,
            "the device talked to no one in these flows",
            ha="center",
            fontsize=12,
            color="#666666",
        )
    axes.scatter([0], [0], s=900, c=DEVICE_COLOUR, zorder=5)
    axes.text(
        0,
        -0.16,
        f"{picture_text(device.name, 30)}\n{device.ip or device.mac}",
        ha="center",
        va="top",
        fontsize=11,
        fontweight="bold",
        zorder=6,
        parse_math=False,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#bbbbbb", "alpha": 0.9},
    )
    _map_legend(axes, ends)
    return figure


def _draw_ring(axes, ends: pd.DataFrame, radial: bool) -> None:
    """The remote parties on the ring: edges, nodes and labels."""
    from matplotlib.collections import LineCollection

    n = len(ends)
    step = 2 * math.pi / n
    angles = math.pi / 2 - step * (np.arange(n) + (0.5 if radial else 0.0))
    x, y = np.cos(angles), np.sin(angles)
    weights = np.log1p(ends["bytes"].to_numpy(dtype=float))
    top = weights.max() if weights.max() > 0 else 1.0
    widths = 0.7 + 7.3 * weights / top
    colours = list(ends["colour"])
    segments = [[(0, 0), (a, b)] for a, b in zip(x, y)]
    axes.add_collection(
        LineCollection(
            segments, linewidths=widths, colors=colours, alpha=0.45, zorder=1, capstyle="round"
        )
    )
    axes.scatter(
        x, y, s=70 if radial else 160, c=colours, zorder=3, edgecolors="white", linewidths=1.2
    )
    # A radial label has the ring's radius again to run in (about 65 characters at
    # these sizes): names and protocol lists are shortened to fit, the tables have them.
    font = 8 if n <= 40 else 7 if n <= 60 else 6.5
    for i, row in enumerate(ends.itertuples()):
        name = picture_text(row.remote, 34 if radial else LABEL_CHARS)
        protocols = picture_text(
            _first_protocols(row.protocols, 1 if radial else 2), 24 if radial else LABEL_CHARS
        )
        detail = f"{protocols} · {human_bytes(row.bytes)}"
        if radial:
            _radial_label(axes, x[i], y[i], angles[i], f"{name}  {detail}", font)
        else:
            _flat_label(axes, x[i], y[i], f"{name}\n{detail}")


def _radial_label(axes, x: float, y: float, angle: float, label: str, font: float) -> None:
    degrees = math.degrees(angle)
    left = x < -1e-9
    axes.text(
        1.07 * x,
        1.07 * y,
        label,
        rotation=degrees + 180 if left else degrees,
        rotation_mode="anchor",
        ha="right" if left else "left",
        va="center",
        fontsize=font,
        parse_math=False,
        zorder=4,
        label="endpoint-label",
    )


def _flat_label(axes, x: float, y: float, label: str) -> None:
    ha = "left" if x > 0.3 else "right" if x < -0.3 else "center"
    va = "bottom" if y > 0.3 else "top" if y < -0.3 else "center"
    axes.text(
        1.1 * x,
        1.1 * y,
        label,
        ha=ha,
        va=va,
        fontsize=10,
        parse_math=False,
        zorder=4,
        linespacing=1.3,
        label="endpoint-label",
        multialignment="left" if ha == "left" else "right" if ha == "right" else "center",
    )


def _by_organisation(ends: pd.DataFrame) -> pd.DataFrame:
    """The parties in class order, the external ones grouped by organisation (the largest
    by bytes first), each with its colour and its legend entry in `colour` and `group`."""
    ends = ends.copy()
    org = ends["org"].fillna("").astype(str) if "org" in ends else pd.Series("", ends.index)
    country = (
        ends["country"].fillna("").astype(str) if "country" in ends else pd.Series("", ends.index)
    )
    external = (ends["remote_class"] == "external") & (org != "")
    sizes = ends[external].groupby(org[external])["bytes"].sum().sort_values(ascending=False)
    coloured = list(sizes.index[: len(ORG_COLOURS)])
    rank = {o: i for i, o in enumerate(sizes.index)}
    countries = (
        country[external]
        .groupby(org[external])
        .agg(lambda v: ", ".join(sorted({c for part in v for c in part.split(";") if c})))
    )
    klass = ends["remote_class"].fillna("")
    ends["colour"] = [CLASS_COLOURS.get(c, CLASS_COLOURS[""]) for c in klass]
    ends["group"] = [c or "unknown" for c in klass]
    for i, name in enumerate(coloured):
        at = external & (org == name)
        ends.loc[at, "colour"] = ORG_COLOURS[i]
        where = countries.get(name, "")
        label = picture_text(name.replace(";", " / "), 40)  # (a name's addresses in two)
        ends.loc[at, "group"] = f"external: {label}" + (f" · {where}" if where else "")
    others = (ends["remote_class"] == "external") & ~org.isin(coloured)
    if coloured and others.any():
        ends.loc[others, "group"] = "external, other or unknown organisation"
    ends["_class"] = klass.map({c: i for i, c in enumerate(CLASS_ORDER)}).fillna(9)
    ends["_org"] = org.map(rank).where(external, len(rank)).fillna(len(rank))
    ends = ends.sort_values(["_class", "_org"], kind="stable")
    return ends.drop(columns=["_class", "_org"]).reset_index(drop=True)


def _map_legend(axes, ends: pd.DataFrame) -> None:
    from matplotlib.lines import Line2D

    groups = ends.groupby(["group", "colour"], sort=False).size()
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markersize=9,
            markerfacecolor=colour,
            markeredgecolor="white",
            label=f"{group} ({count})",
        )
        for (group, colour), count in groups.items()
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markersize=11,
            markerfacecolor=DEVICE_COLOUR,
            label="device under study",
        )
    )
    # Under the ring, in two columns: a dozen organisations and classes never cover a label
    # (the picture is saved to what is drawn, so it grows to hold it).
    axes.legend(
        handles=handles,
        loc="upper center",
        fontsize=10,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
        ncol=2 if len(handles) > 4 else 1,
    )


def _first_protocols(protocols: str, keep: int = 2) -> str:
    items = [p for p in str(protocols).split(", ") if p]
    extra = len(items) - keep
    return ", ".join(items[:keep]) + (f" +{extra}" if extra > 0 else "")
