"""timeline.png: one panel per recording (at most MAX_PANELS), bytes the device sent and
received per time bin, and above each a strip with one row per signature pattern (at most
activity.MAX_TIMELINE_ROWS: the rest folded into one row) marking the flows that matched."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from .activity import row_of, timeline_rows
from .figures import human_bytes, new_figure, picture_text, save
from .inputs import Device

MAX_PANELS = 30  # recordings drawn; the picture says how many more there are
PATTERN_COLOURS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#ff7f0e",
    "#393b79",
    "#637939",
    "#843c39",
]
OTHER_COLOUR = "#9a9a9a"
LEFT, RIGHT = 0.09, 0.985


def draw_timeline(
    bins: pd.DataFrame,
    width: float,
    captures: list[str],
    starts: pd.Series,
    ends: pd.Series,
    matched: pd.DataFrame,
    patterns: pd.DataFrame | None,
    device: Device,
    source: str,
) -> bytes:
    """One panel per recording, on a shared time axis from each recording's start: bytes the
    device sent (up) and received (down) per bin, and above them a strip with one row per
    signature pattern, marking the flows that matched it."""
    shown = timeline_rows(patterns, matched)
    rows = len(shown)
    drawn = captures[:MAX_PANELS]
    n = max(len(drawn), 1)
    strip = 0.16 * rows + 0.1 if rows else 0.0
    panel = 1.25 if n <= 6 else 0.95
    gap = 0.55
    legend_lines = math.ceil(rows / 2) if rows else 0
    header = 0.75 + 0.2 * legend_lines
    footer = 0.5 + (0.3 if len(captures) > len(drawn) else 0.0)
    height = header + n * (strip + panel + gap) - gap + footer
    figure = new_figure(12.5, height)
    longest = float(max((ends - starts).reindex(drawn).max(), width)) if drawn else width
    x_max = longest * 1.02
    # Past a day, seconds since the first packet say nothing: each panel is labelled with
    # its own UTC dates and times (its recording's), so the panels no longer share ticks.
    in_utc = longest > DAY
    colours = [
        PATTERN_COLOURS[i % len(PATTERN_COLOURS)] if role == "event" else OTHER_COLOUR
        for i, role in enumerate(shown["role"])
    ]
    _header(figure, height, device, width, source, shown, colours, legend_lines)
    marks = matched.assign(row=row_of(shown, matched["pattern"])) if len(matched) else matched
    by_capture = dict(tuple(bins.groupby("capture"))) if len(bins) else {}
    marks_of = dict(tuple(marks.groupby("capture"))) if len(marks) else {}
    y = height - header
    first_axes = axes = None
    for capture in drawn or ["(no recording)"]:
        band = None
        if in_utc:
            first_axes = None  # (a panel shares its axis with its own strip only)
        if rows:
            y -= strip
            band = figure.add_axes(
                [LEFT, y / height, RIGHT - LEFT, strip / height], sharex=first_axes
            )
            first_axes = first_axes or band
            _draw_marks(band, marks_of.get(capture), shown, colours, x_max)
        y -= panel
        axes = figure.add_axes([LEFT, y / height, RIGHT - LEFT, panel / height], sharex=first_axes)
        first_axes = first_axes or axes
        start = starts.get(capture, np.nan)
        _title(band or axes, capture, start)
        _draw_bytes(axes, by_capture.get(capture), width)
        _first_event_line(axes, marks_of.get(capture), start)
        _style_panel(axes, width)
        if in_utc:
            axes.set_xlim(-x_max * 0.01, x_max)
            if start == start:
                ticks, labels = utc_ticks(start, -x_max * 0.01, x_max)
                axes.set_xticks(ticks, labels)
        y -= gap
    axes.set_xlabel(
        ("UTC date and time" if in_utc else "seconds since the recording's first packet")
        + ("   (dashed: the first event-pattern flow)" if rows else ""),
        fontsize=9,
    )
    if len(captures) > len(drawn):
        figure.text(
            LEFT,
            0.2 / height,
            f"… and {len(captures) - len(drawn):,} more "
            f"recordings, not drawn: the first {len(drawn)} of {len(captures):,} "
            "are shown",
            fontsize=9,
            va="center",
            color="#555555",
        )
    if not in_utc:
        first_axes.set_xlim(-x_max * 0.01, x_max)
    return save(figure, "png")


DAY = 86_400.0
# Tick steps for the UTC axis, seconds: whole hours of a day, then whole days.
UTC_STEPS = [3600 * h for h in (1, 2, 3, 6, 12)] + [DAY * d for d in (1, 2, 7, 14, 28)]
MAX_UTC_TICKS = 8


def utc_ticks(start: float, low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks at round UTC times between start+low and start+high (seconds since the epoch;
    the ticks are placed in seconds since `start`), at most MAX_UTC_TICKS: 'YYYY-MM-DD'
    on whole days, else 'MM-DD HH:MM'."""
    span = high - low
    step = next((s for s in UTC_STEPS if span / s <= MAX_UTC_TICKS), None)
    if step is None:
        step = DAY * math.ceil(span / DAY / MAX_UTC_TICKS)
    first = math.ceil((start + low) / step) * step
    times = np.arange(first, start + high + 1e-9, step)
    daily = step % DAY == 0
    labels = [
        dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(
            "%Y-%m-%d" if daily else "%m-%d %H:%M"
        )
        for t in times
    ]
    return [float(t - start) for t in times], labels


def _header(
    figure,
    height: float,
    device: Device,
    width: float,
    source: str,
    shown: pd.DataFrame,
    colours: list[str],
    legend_lines: int,
) -> None:
    """The title, where the bytes come from, and the legend of the pattern rows."""
    figure.text(
        0.06,
        1 - 0.3 / height,
        f"Activity of {picture_text(device.name, 30)} ({device.ip or device.mac}): "
        f"bytes sent (up) and received (down) per {width_text(width)}",
        fontsize=12,
        va="center",
        parse_math=False,
    )
    figure.text(
        0.985,
        1 - 0.3 / height,
        f"from the {source}",
        fontsize=8.5,
        ha="right",
        va="center",
        color="#555555",
    )
    for i, row in enumerate(shown.itertuples()):
        column, line = divmod(i, legend_lines)
        role = "" if row.role in ("event", "other") else f" ({row.role})"
        figure.text(
            0.06 + 0.46 * column,
            1 - (0.62 + 0.2 * line) / height,
            f"■ {row.number}  {picture_text(row.pattern, 56)}{role}",
            color=colours[i],
            fontsize=9,
            va="center",
            parse_math=False,
        )


def _title(axes, capture: str, start: float) -> None:
    when = (
        ""
        if start != start
        else dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    axes.set_title(
        f"{picture_text(capture, 60)}   (started {when})",
        loc="left",
        fontsize=9.5,
        pad=3,
        parse_math=False,
    )


def _draw_bytes(axes, data: pd.DataFrame | None, width: float) -> None:
    """Bytes sent (up) and received (down) per bin: one filled step outline per direction
    (thousands of bars are one patch each)."""
    if data is not None and len(data):
        grouped = data.groupby("bin")[["sent", "received"]].sum()
        first, last = int(grouped.index.min()), int(grouped.index.max())
        dense = grouped.reindex(range(first, last + 1), fill_value=0.0)
        edges = np.arange(first, last + 2, dtype=float) * width
        axes.stairs(
            dense["sent"].to_numpy(), edges, fill=True, color="#1f6fb4", linewidth=0, label="sent"
        )
        axes.stairs(
            -dense["received"].to_numpy(),
            edges,
            fill=True,
            color="#e6850e",
            linewidth=0,
            label="received",
        )
        top = max(dense["sent"].max(), dense["received"].max(), 1.0)
        axes.set_ylim(-top * 1.1, top * 1.1)
        axes.yaxis.set_major_formatter(_bytes_formatter())
    else:
        axes.text(
            0.5,
            0.5,
            "no traffic of the device",
            transform=axes.transAxes,
            ha="center",
            va="center",
            color="#777777",
        )
        axes.set_yticks([])


def _style_panel(axes, width: float) -> None:
    axes.axhline(0, color="#444444", linewidth=0.6)
    axes.tick_params(labelsize=8, labelbottom=True)  # times under every panel
    axes.set_ylabel(f"bytes/{width_text(width)}", fontsize=8)
    axes.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    axes.set_axisbelow(True)


def _first_event_line(axes, marks: pd.DataFrame | None, start: float) -> None:
    """A dashed line at the recording's first event-pattern flow."""
    if marks is None:
        return
    events = marks[marks["role"] == "event"]
    if len(events):
        axes.axvline(
            events["start"].min() - start, color="#d62728", linewidth=0.9, linestyle="--", zorder=0
        )


def _draw_marks(
    band, marks: pd.DataFrame | None, shown: pd.DataFrame, colours: list[str], x_max: float
) -> None:
    """The pattern strip: one row per shown pattern, a bar per matched flow."""
    rows = len(shown)
    band.set_ylim(rows - 0.5, -0.5)
    band.set_yticks(range(rows))
    band.set_yticklabels([str(n) for n in shown["number"]], fontsize=6.5)
    band.tick_params(axis="y", length=0, pad=2)
    band.tick_params(axis="x", labelbottom=False, length=0)
    for spine in band.spines.values():
        spine.set_visible(False)
    band.set_facecolor("#f6f6f6")
    if marks is None or marks.empty:
        return
    minimum = x_max * 0.004  # an instant flow still shows
    for row, group in marks[marks["row"] >= 0].groupby("row"):
        start = group["rel_start"].to_numpy()
        spans = np.maximum(group["rel_end"].to_numpy() - start, minimum)
        band.broken_barh(
            list(zip(start, spans)), (row - 0.38, 0.76), facecolors=colours[row], linewidth=0
        )


def width_text(width: float) -> str:
    if width >= 3600:
        return f"{width / 3600:g} h"
    if width >= 60:
        return f"{width / 60:g} min"
    if width >= 1:
        return f"{width:g} s" if width != 1 else "s"
    return f"{width * 1000:g} ms"


def _bytes_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: human_bytes(abs(v)).replace(" B", "") if v else "0")
