"""The event-times file: when each event happened, as the user knows it (an app's activity
log, IFTTT or SmartThings history, their own notes). Read with the csv module (nothing is
converted behind our back) and dateutil (every spelling a log may use)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from dateutil import parser as date_parser
from dateutil import tz

from .errors import InputError, ToolError

# Header names recognised for each column (lower case), in order of preference.
COLUMN_NAMES = {
    "time": ["time", "timestamp", "datetime", "date", "time_utc", "ts", "when", "occurred"],
    "event": ["event", "event_name", "action", "trigger", "label", "name"],
    "device": ["device", "device_name", "device_id", "thing"],
}
EPOCH = re.compile(r"^\s*\d{9,11}(\.\d*)?\s*$")  # epoch seconds (1973 to 5138)
OFFSET = re.compile(r"^\s*(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?\s*$", re.I)
MINUTE = 60.0


@dataclass(frozen=True)
class TimesFormat:
    """How to read a times file: which column is which (a header name or a 1-based
    number; by default found from the header) and the zone of times written without one."""

    time_column: str | None = None
    event_column: str | None = None
    device_column: str | None = None
    timezone: str | None = None


def parse_timezone(text: str):
    """'-05:00', 'UTC-5', '+0530' (fixed offsets, as ISO 8601 writes them: UTC-5 is five
    hours behind UTC) or an IANA name ('America/New_York', daylight saving included)."""
    match = OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        seconds = (int(hours) * 60 + int(minutes or 0)) * 60
        return timezone(timedelta(seconds=-seconds if sign == "-" else seconds))
    if text.strip().upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    zone = tz.gettz(text.strip()) if "/" in text else None
    if zone is None:
        raise ToolError(
            f"--timezone {text!r}: not a UTC offset (like -05:00 or UTC-5) or a time "
            "zone name (like America/New_York)"
        )
    return zone


def read_event_times(path: Path, spec: TimesFormat = TimesFormat()) -> pd.DataFrame:
    """One row per listed event: line (in the file), time (epoch seconds), time_text (as
    written), event, device (empty when the file has no such column), resolution (60 for a
    time written to the minute, else 0: the event happened within it). Raises InputError
    naming the file and line for what cannot be read."""
    rows = _rows(path)
    header, rows, first_line = _split_header(path, rows, spec)
    columns = {
        role: _column_index(path, header, role, getattr(spec, f"{role}_column"), len(rows[0]))
        for role in ("time", "event", "device")
    }
    zone = parse_timezone(spec.timezone) if spec.timezone else None
    records = []
    for number, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        text = _cell(row, columns["time"])
        if not text.strip():
            raise InputError(path, f"line {number}: no time")
        seconds, resolution = _parse_time(path, number, text, zone)
        records.append(
            {
                "line": number,
                "time": seconds,
                "time_text": text.strip(),
                "event": _cell(row, columns["event"]).strip(),
                "device": _cell(row, columns["device"]).strip(),
                "resolution": resolution,
            }
        )
    if not records:
        raise InputError(path, "no event time in it")
    table = pd.DataFrame.from_records(records)
    table.attrs.update(
        has_event=columns["event"] is not None, has_device=columns["device"] is not None
    )
    return table


def _rows(path: Path) -> list[list[str]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text: save the times file as UTF-8 CSV") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    if not text.strip():
        raise InputError(path, "empty file: one line per event, with its time")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(text.splitlines(), dialect))
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    return rows


def _split_header(path, rows, spec) -> tuple[list[str] | None, list[list[str]], int]:
    """A first row whose time cell is not a time is the header (a time cell that reads as
    a time is data, even where another cell is a column name: an event called 'action')."""
    first = rows[0]
    index = _number(spec.time_column)
    probe = first[index] if index is not None and index < len(first) else None
    names = [c.strip().lower() for c in first]
    named = any(n in names for role in COLUMN_NAMES.values() for n in role)
    if probe is not None and _looks_like_time(probe):
        return None, rows, 1
    if probe is None and first and _looks_like_time(first[0]):  # headerless: time first
        return None, rows, 1
    if probe is None and not named and any(_looks_like_time(c) for c in first):
        return None, rows, 1
    if len(rows) < 2:
        raise InputError(path, "only a header line: no event time in it")
    return [c.strip() for c in first], rows[1:], 2


def _column_index(path, header, role: str, chosen: str | None, width: int) -> int | None:
    number = _number(chosen)
    if number is not None:
        if number >= width:
            raise InputError(path, f"--{role}-column {chosen}: the file has {width} column(s)")
        return number
    if header is None:
        if chosen:
            raise InputError(
                path, f"--{role}-column {chosen!r}: the file has no header: give a number"
            )
        return 0 if role == "time" else None  # headerless: the time is the first column
    lowered = [h.lower() for h in header]
    for name in [chosen.lower()] if chosen else COLUMN_NAMES[role]:
        if name in lowered:
            return lowered.index(name)
    if chosen or role == "time":
        looked_for = ", ".join([chosen] if chosen else COLUMN_NAMES[role])
        raise InputError(
            path,
            f"no {role} column (looked for {looked_for} in the header "
            f"{', '.join(header)}): name it with --{role}-column",
        )
    return None


def _number(chosen: str | None) -> int | None:
    if chosen and chosen.strip().isdigit() and int(chosen) >= 1:
        return int(chosen) - 1
    return None


def _cell(row: list[str], index: int | None) -> str:
    return row[index] if index is not None and index < len(row) else ""


def _looks_like_time(text: str) -> bool:
    if EPOCH.match(text):
        return True
    try:
        date_parser.parse(text)
    except (ValueError, OverflowError):
        return False
    return any(ch.isdigit() for ch in text)


def _parse_time(path, number: int, text: str, zone) -> tuple[float, float]:
    if EPOCH.match(text):
        return float(text), 0.0
    try:
        moment = date_parser.parse(text)
    except (ValueError, OverflowError) as e:
        raise InputError(path, f"line {number}: {text.strip()!r} is not a time ({e})") from None
    if moment.tzinfo is None:
        if zone is None:
            raise InputError(
                path,
                f"line {number}: {text.strip()!r} has no UTC offset: give the log's time "
                "zone with --timezone (like -05:00 or America/New_York)",
            )
        moment = moment.replace(tzinfo=zone)
    seconds = moment.timestamp()
    return seconds, MINUTE if _to_the_minute(text, moment) else 0.0


def _to_the_minute(text: str, moment: datetime) -> bool:
    """'01:18PM' or '13:18' say a minute, not its first second."""
    if moment.second or moment.microsecond:
        return False
    return not re.search(r"\d:\d{2}:\d{2}", text)


def for_device(times: pd.DataFrame, path: Path, device: str | None) -> pd.DataFrame:
    """The lines of `device` where the file names several devices (all lines otherwise)."""
    devices = sorted(set(times["device"]) - {""})
    if device and len(devices) > 1:
        if device not in devices:
            raise InputError(
                path,
                f"it lists {len(devices)} devices ({', '.join(devices)}) and not {device!r}: "
                "name the device as the file does",
            )
        times = times[times["device"] == device]
    return times.reset_index(drop=True)


def choose_event(times: pd.DataFrame, path: Path, event: str | None) -> str | None:
    """The event to learn: `event`, or the one event the file names; None when it names
    none."""
    named = sorted(set(times["event"]) - {""})
    if not named:
        return None
    if event is None and len(named) > 1:
        raise InputError(
            path, f"it lists {len(named)} events ({', '.join(named)}): choose one with --event"
        )
    if event is not None and event not in named:
        raise InputError(path, f"no line names event {event!r} (it names {', '.join(named)})")
    return event if event is not None else named[0]
