"""timeline.png: for each recording (at most MAX_PANELS), its volume (bytes the device sent
and received per time bin) and, on axes of their own, its activity (packets, and flows it
started, per bin); above them a strip with one row per signature pattern (at most
activity.MAX_TIMELINE_ROWS: the rest folded into one row) marking the flows that matched.
The listed event times (--events) and the detections (a detections CSV) are drawn on the
same time axis: a dotted line per listed time, a shaded span and a triangle per detection."""

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
# One colour per event name, for its listed times and its detections.
EVENT_COLOURS = ["#111111", "#c2185b", "#00897b", "#6a1b9a", "#ef6c00", "#1565c0"]
MARK_COLUMNS = ["time", "end", "event", "kind"]  # kind: listed or detected
LEFT, RIGHT = 0.09, 0.91  # (right: room for the flows axis of the activity panel)


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
    times: pd.DataFrame | None = None,
) -> bytes:
    """Two panels per recording, on a shared time axis from each recording's start: bytes the
    device sent (up) and received (down) per bin; packets and flows started per bin. Above
    them a strip with one row per signature pattern, marking the flows that matched it.
    `times` (MARK_COLUMNS, epoch seconds): listed event times and detections, drawn on both
    panels of the recording they fall in."""
    times = pd.DataFrame(columns=MARK_COLUMNS) if times is None else times
    names = list(dict.fromkeys(times["event"]))
    event_colour = {name: EVENT_COLOURS[i % len(EVENT_COLOURS)] for i, name in enumerate(names)}
    shown = timeline_rows(patterns, matched)
    rows = len(shown)
    drawn = captures[:MAX_PANELS]
    n = max(len(drawn), 1)
    strip = 0.16 * rows + 0.1 if rows else 0.0
    panel = 1.25 if n <= 6 else 0.95
    counts = 0.8 if n <= 6 else 0.6  # the activity panel under the volume one
    gap = 0.55
    legend_lines = math.ceil(rows / 2) if rows else 0
    event_lines = math.ceil(2 * len(names) / 4) if names else 0
    header = 0.75 + 0.2 * (legend_lines + event_lines) + (0.1 if event_lines else 0.0)
    footer = 0.5 + (0.3 if len(captures) > len(drawn) else 0.0)
    height = header + n * (strip + panel + 0.3 + counts + gap) - gap + footer
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
    _times_legend(figure, height, times, event_colour, 0.62 + 0.2 * legend_lines)
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
        _style_panel(axes, f"bytes/{width_text(width)}")
        y -= 0.3 + counts  # (room for the volume panel's time labels)
        below = figure.add_axes(
            [LEFT, y / height, RIGHT - LEFT, counts / height], sharex=first_axes
        )
        _draw_counts(below, by_capture.get(capture), width)
        _style_panel(below, f"packets/{width_text(width)}")
        end = ends.get(capture, np.nan)
        for each in (axes, below):
            _draw_times(each, times, start, end, event_colour, each is axes)
            if in_utc:
                each.set_xlim(-x_max * 0.01, x_max)
                if start == start:
                    ticks, labels = utc_ticks(start, -x_max * 0.01, x_max)
                    each.set_xticks(ticks, labels)
        axes = below
        y -= gap
    axes.set_xlabel(
        ("UTC date and time" if in_utc else "seconds since the recording's first packet")
        + ("   (dashed: the first event-pattern flow)" if rows else "")
        + ("   (dotted: a listed event time; shaded, ▼: a detection)" if len(times) else ""),
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
        f"bytes sent (up) and received (down); below, packets and flows started; "
        f"per {width_text(width)}",
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


def _style_panel(axes, label: str) -> None:
    axes.axhline(0, color="#444444", linewidth=0.6)
    axes.tick_params(labelsize=8, labelbottom=True)  # times under every panel
    axes.set_ylabel(label, fontsize=8)
    axes.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    axes.set_axisbelow(True)


def _draw_counts(axes, data: pd.DataFrame | None, width: float) -> None:
    """Activity apart from volume: packets either way per bin (filled, left axis) and the
    flows the device started per bin (a line, right axis)."""
    if data is None or not len(data) or not data[["pkts", "flows"]].to_numpy().any():
        axes.set_yticks([])
        return
    grouped = data.groupby("bin")[["pkts", "flows"]].sum()
    first, last = int(grouped.index.min()), int(grouped.index.max())
    dense = grouped.reindex(range(first, last + 1), fill_value=0.0)
    edges = np.arange(first, last + 2, dtype=float) * width
    axes.stairs(dense["pkts"].to_numpy(), edges, fill=True, color="#5b7290", linewidth=0)
    axes.set_ylim(0, max(dense["pkts"].max(), 1.0) * 1.15)
    flows = axes.twinx()
    flows.stairs(dense["flows"].to_numpy(), edges, color="#2a9d3a", linewidth=0.7, alpha=0.8)
    flows.set_ylim(0, max(dense["flows"].max(), 1.0) * 1.15)
    flows.set_ylabel(f"flows started/{width_text(width)}", fontsize=8, color="#2a9d3a")
    flows.tick_params(labelsize=8, colors="#2a9d3a")


def _draw_times(axes, times: pd.DataFrame, start: float, end: float, colour, top: bool) -> None:
    """The listed times and detections that fall in this recording: a dotted line per
    listed time; a shaded span per detection, with a triangle at the top of the volume
    panel (`top`)."""
    if not len(times) or start != start:
        return
    inside = times[(times["time"] >= start - 1) & (times["time"] <= (end if end == end else start))]
    for kind, group in inside.groupby("kind"):
        for event, rows in group.groupby("event", sort=False):
            at = rows["time"].to_numpy(dtype=float) - start
            if kind == "listed":
                for x in at:
                    axes.axvline(x, color=colour[event], linewidth=1.0, linestyle=":", zorder=3)
                continue
            ends_at = rows["end"].to_numpy(dtype=float) - start
            for x, x_end in zip(at, np.where(np.isnan(ends_at), at, ends_at)):
                axes.axvspan(x, max(x_end, x), color=colour[event], alpha=0.18, linewidth=0)
            if top:
                axes.plot(
                    at,
                    np.full(len(at), 0.97),
                    marker="v",
                    linestyle="",
                    color=colour[event],
                    markersize=6,
                    transform=axes.get_xaxis_transform(),
                    zorder=4,
                    clip_on=False,
                )


def _times_legend(figure, height: float, times: pd.DataFrame, colour, below: float) -> None:
    """One entry per event name and kind: 'listed event_lock (18)', 'detected action (35)'."""
    entries = times.groupby(["kind", "event"], sort=False).size()
    for i, ((kind, event), count) in enumerate(entries.items()):
        line, column = divmod(i, 4)
        sign = "┊" if kind == "listed" else "▼"
        figure.text(
            0.06 + 0.23 * column,
            1 - (below + 0.2 * line) / height,
            f"{sign} {kind} {picture_text(event or 'event', 28)} ({count:,})",
            color=colour[event],
            fontsize=9,
            va="center",
            parse_math=False,
        )


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
