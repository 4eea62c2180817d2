"""Long test captures built from real captures, with the times file a user would give.

A long capture is real traffic only, put together with Wireshark's own tools (editcap,
mergecap, capinfos; no packet is invented or edited, only timestamps are shifted):

- background: the first `hours` of ../shared/pcaps/long/blink-cam-01.pcap (a real
  week-long capture of a camera; its license is unknown, so it is read from ../shared and
  never copied into the repository), cut with `editcap -B`;
- other traffic all day: the small public captures of tests/captures/ (PROTOCOL_CAPTURES),
  merged into one "round" with each capture's first packet `round_interval / n` seconds
  after the previous one, and the round repeated every `round_interval` seconds
  (`editcap -t` per copy);
- placed events: the recordings of the chosen events of ../shared/pcaps/events/, each used
  once, in file-name order, each shifted with `editcap -t` so that its first packet lands
  on a seeded random whole second, at least `min_gap` seconds from every other placed
  recording and from both ends of the background;
- all of it merged in time order with `mergecap -F pcap`.

Beside the capture: times.csv (`time,event,device`: what a user's event log would say, one
row per placed recording, time in ISO 8601 with the lab's UTC offset), truth.csv (where
each recording really is) and build.json (the parameters and counts; a later call with the
same parameters reuses the files). write_times() writes damaged logs (times to the minute
in local time, shifted, wrong and missing entries) with their own truth listing.

Plain functions (no pytest): tests/test_long_capture.py tests them, the event tests and the
benchmark use them. tests/captures/README.md ("Long captures built by the tests") says the
same for a reader.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CAPTURES = TESTS / "captures"
SHARED = TESTS.parent.parent / "shared" / "pcaps"  # beside the repository, when present
BACKGROUND = SHARED / "long" / "blink-cam-01.pcap"
EVENTS = SHARED / "events"
# The small Ethernet captures of tests/captures/ repeated all day. Left out: dhcp.pcapng
# (the same packets as dhcp.pcap), dns_fragmented.pcap (its packets span 22 days: a copy
# would not fit in a round) and mdns.pcap (Linux cooked link type: a pcap file holds one).
PROTOCOL_CAPTURES = (
    "6in4tunnel.pcap",
    "NTPv4.pcap",
    "dhcp.pcap",
    "http-lines-split.pcap",
    "http_ipv6.pcap",
    "malformed_dns.pcap",
    "ssdp-m-search.pcap",
    "tls_esni_sni_both.pcap",
    "upnp.pcap",
)
# Three events of one device (same-device confusion): the only device of the shared events
# with 20 recordings of each of three events (TapoLight has 18 set_color, 19 set_brightness).
DEFAULT_EVENTS = (
    ("HueLightEssentials", "toggle"),
    ("HueLightEssentials", "set_color"),
    ("HueLightEssentials", "set_brightness"),
)
TAPO_EVENTS = (("TapoLight", "toggle"), ("TapoLight", "set_color"), ("TapoLight", "set_brightness"))
BUILDER_VERSION = 1  # raise when the way a capture is built changes: old caches are rebuilt
FILES = ("long.pcap", "times.csv", "truth.csv")
TIMES_HEADER = ("time", "event", "device")
TRUTH_HEADER = (
    "time",  # where the recording's first packet really is (ISO 8601, the lab's offset)
    "event",
    "device",
    "recording",  # the placed capture, relative to ../shared/pcaps/events
    "first_packet",  # epoch seconds of its first and last packet in the long capture
    "last_packet",
    "packets",
    "listed_time",  # what the times file says (empty: the entry was dropped)
    "damage",  # exact, shifted, wrong or dropped
)
MICRO = 1_000_000


@dataclass(frozen=True)
class Spec:
    """What to build. The defaults are the 24-hour test capture of issue 15."""

    events: tuple[tuple[str, str], ...] = DEFAULT_EVENTS  # (device, event) folders
    # 27 h: the camera's first day and its burst of the next afternoon (at 26 h); it is
    # silent between bursts, the protocol rounds keep traffic in every half hour.
    hours: float = 27
    per_event: int | None = None  # the first N recordings (file-name order); None: all
    seed: int = 0
    min_gap: int = 600  # seconds between placed recordings, and from both ends
    round_interval: int = 1800  # seconds between copies of the protocol captures
    utc_offset: int = -5  # hours: the lab's local time (the camera's IFTTT log is UTC-5)


SMALL = Spec(events=(("TapoLight", "toggle"),), hours=3, per_event=6)


@dataclass(frozen=True)
class LogDamage:
    """What real event logs get wrong, applied by write_times(). Shares are of the placed
    recordings; the rows each damage picks are disjoint (a row is shifted, wrong or dropped,
    never two of them), chosen with `seed`."""

    minute_local: bool = False  # times cut to the minute (2021-03-08T11:08), local, no offset
    shift_share: float = 0.0  # this share of rows moved by 1..shift_seconds s, either way
    shift_seconds: int = 120
    wrong_share: float = 0.0  # this share replaced by times >= wrong_distance s from any
    wrong_distance: int = 600  # placed recording, inside the capture
    drop_share: float = 0.0  # this share left out (missing entries)
    seed: int = 0


@dataclass(frozen=True)
class Placement:
    event: str
    device: str
    recording: Path
    first_us: int  # epoch microseconds of its first and last packet in the long capture
    last_us: int
    packets: int


@dataclass(frozen=True)
class LongCapture:
    directory: Path
    spec: Spec
    start_us: int  # the background window: [start, end) in epoch microseconds
    end_us: int
    placements: tuple[Placement, ...]
    counts: dict = field(default_factory=dict)  # packets: background, protocols, placed, total

    @property
    def pcap(self) -> Path:
        return self.directory / "long.pcap"

    @property
    def times(self) -> Path:
        return self.directory / "times.csv"

    @property
    def truth(self) -> Path:
        return self.directory / "truth.csv"

    @property
    def tz(self) -> timezone:
        return timezone(timedelta(hours=self.spec.utc_offset))


def missing_inputs() -> str | None:
    """Why a long capture cannot be built here (../shared absent), or None."""
    for path in (BACKGROUND, EVENTS, *(CAPTURES / name for name in PROTOCOL_CAPTURES)):
        if not path.exists():
            return f"../shared not found: {path} (the long captures are built from it)"
    return None


def small_long_capture(directory: Path, seed: int = 0) -> LongCapture:
    """A 3-hour capture with 6 TapoLight toggle recordings: for quick tests (~1 s)."""
    return build_long_capture(directory, replace(SMALL, seed=seed))


def build_long_capture(directory: Path, spec: Spec = Spec()) -> LongCapture:
    """The long capture of `spec` in `directory` (long.pcap, times.csv, truth.csv,
    build.json): built, or reused when build.json records the same parameters."""
    directory = Path(directory)
    reason = missing_inputs()
    if reason:
        raise FileNotFoundError(reason)
    recordings = _recordings(spec)
    parameters = _parameters(spec, recordings)
    built = _cached(directory, parameters)
    if built is None:
        built = _build(directory, spec, recordings, parameters)
    return _from_build(directory, spec, built)


# --- building


def _recordings(spec: Spec) -> dict[tuple[str, str], list[Path]]:
    chosen = {}
    for device, event in spec.events:
        files = sorted((EVENTS / device / event).glob("*.pcap"))
        if not files:
            raise FileNotFoundError(f"no recordings in {EVENTS / device / event}")
        chosen[device, event] = files[: spec.per_event]
    return chosen


def _parameters(spec: Spec, recordings: dict) -> dict:
    """Everything the result depends on: the spec, and the inputs' names and sizes."""
    inputs = [BACKGROUND, *(CAPTURES / n for n in PROTOCOL_CAPTURES)]
    inputs += [path for files in recordings.values() for path in files]
    return {
        "builder_version": BUILDER_VERSION,
        "spec": json.loads(json.dumps(asdict(spec))),
        "inputs": [[str(path), path.stat().st_size] for path in inputs],
    }


def _cached(directory: Path, parameters: dict) -> dict | None:
    record = directory / "build.json"
    if not record.is_file() or not all((directory / name).is_file() for name in FILES):
        return None
    built = json.loads(record.read_text())
    return built if built.get("parameters") == parameters else None


def _build(directory: Path, spec: Spec, recordings: dict, parameters: dict) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "build.json").unlink(missing_ok=True)  # a half-done build is never reused
    table = capinfos([BACKGROUND, *(p for files in recordings.values() for p in files)])
    start = table[BACKGROUND][1]
    end = start + round(spec.hours * 3600 * MICRO)
    times = _placement_times(spec, recordings, start, end, table)
    with tempfile.TemporaryDirectory(dir=directory, prefix="build-") as work:
        work = Path(work)
        background = work / "background.pcap"
        editcap("-B", iso_utc(end), BACKGROUND, background)
        rounds = _protocol_rounds(spec, start, end, work)
        placed = []
        for index, (recording, first_us) in enumerate(times):
            copy = work / f"placed-{index:03d}.pcap"
            editcap("-t", seconds(first_us - table[recording][1]), recording, copy)
            placed.append(copy)
        merged = work / "long.pcap"
        run("mergecap", "-F", "pcap", "-w", merged, background, *rounds, *placed)
        counts = {
            "background": capinfos([background])[background][0],
            "protocols": sum(capinfos(rounds)[r][0] for r in rounds),
            "placed": sum(table[recording][0] for recording, _ in times),
        }
        counts["total"] = capinfos([merged])[merged][0]
        if counts["total"] != counts["background"] + counts["protocols"] + counts["placed"]:
            raise RuntimeError(f"mergecap lost packets: {counts}")
        os.replace(merged, directory / "long.pcap")
    placements = [
        {
            "device": recording.parent.parent.name,
            "event": recording.parent.name,
            "recording": str(recording.relative_to(EVENTS)),
            "first_us": first_us,
            "last_us": first_us + table[recording][2] - table[recording][1],
            "packets": table[recording][0],
        }
        for recording, first_us in times
    ]
    built = {
        "parameters": parameters,
        "start_us": start,
        "end_us": end,
        "counts": counts,
        "placements": placements,
    }
    capture = _from_build(directory, spec, built)
    write_times(capture, directory / "times.csv")
    (directory / "build.json").write_text(json.dumps(built, indent=1) + "\n")  # last
    return built


def _placement_times(spec: Spec, recordings: dict, start: int, end: int, table: dict) -> list:
    """[(recording, first packet time in µs)], sorted by time: whole seconds drawn with
    `spec.seed`, >= min_gap apart and from both ends; the events in a seeded random order,
    each event's recordings in file-name order."""
    rng = random.Random(spec.seed)
    order = [key for key, files in recordings.items() for _ in files]
    rng.shuffle(order)
    longest = max(table[p][2] - table[p][1] for files in recordings.values() for p in files)
    low = -(-start // MICRO) + spec.min_gap  # whole seconds
    high = (end - longest) // MICRO - spec.min_gap
    slack = high - low - (len(order) - 1) * spec.min_gap
    if slack < 0:
        raise ValueError(
            f"{len(order)} recordings {spec.min_gap} s apart do not fit in {spec.hours} h"
        )
    # n sorted draws in [0, slack], the i-th moved by i gaps: uniform among spacings >= gap.
    offsets = sorted(rng.randint(0, slack) for _ in order)
    queues = {key: iter(files) for key, files in recordings.items()}
    return [
        (next(queues[key]), (low + offset + index * spec.min_gap) * MICRO)
        for index, (key, offset) in enumerate(zip(order, offsets))
    ]


def _protocol_rounds(spec: Spec, start: int, end: int, work: Path) -> list[Path]:
    """The protocol captures merged into one round (each first packet round_interval/n s
    after the previous), and one copy of the round every round_interval s from `start`."""
    captures = [CAPTURES / name for name in PROTOCOL_CAPTURES]
    firsts = capinfos(captures)
    step = spec.round_interval * MICRO // len(captures)
    shifted = []
    for index, capture in enumerate(captures):
        copy = work / f"protocol-{index:02d}.pcap"
        editcap("-t", seconds(start + index * step - firsts[capture][1]), capture, copy)
        shifted.append(copy)
    round_zero = work / "round.pcap"
    run("mergecap", "-F", "pcap", "-w", round_zero, *shifted)
    last_packet = capinfos([round_zero])[round_zero][2] - start
    rounds = []
    for index in range((end - start - last_packet - 1) // (spec.round_interval * MICRO) + 1):
        copy = work / f"round-{index:03d}.pcap"
        editcap("-t", seconds(index * spec.round_interval * MICRO), round_zero, copy)
        rounds.append(copy)
    return rounds


def _from_build(directory: Path, spec: Spec, built: dict) -> LongCapture:
    placements = tuple(
        Placement(
            event=p["event"],
            device=p["device"],
            recording=EVENTS / p["recording"],
            first_us=p["first_us"],
            last_us=p["last_us"],
            packets=p["packets"],
        )
        for p in built["placements"]
    )
    return LongCapture(
        directory, spec, built["start_us"], built["end_us"], placements, built["counts"]
    )


# --- the times file


def write_times(capture: LongCapture, path: Path, damage: LogDamage = LogDamage()) -> Path:
    """The times file of `capture` at `path` (`time,event,device`, sorted by time) with
    `damage` applied, and its truth listing at <path stem>.truth.csv (truth.csv beside
    times.csv): the real times, what was listed, and the damage of each row. Returns the
    truth listing's path."""
    path = Path(path)
    rows = _listed(capture, damage)
    tz = capture.tz
    spelled = {
        index: "" if listed is None else _spell(listed, tz, damage.minute_local)
        for index, (listed, _) in rows.items()
    }
    listed_rows = sorted(
        ((rows[i][0], spelled[i], capture.placements[i]) for i in rows if rows[i][0] is not None),
        key=lambda row: row[0],
    )
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(TIMES_HEADER)
        writer.writerows((text, p.event, p.device) for _, text, p in listed_rows)
    truth = path.with_name("truth.csv" if path.name == "times.csv" else f"{path.stem}.truth.csv")
    with open(truth, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(TRUTH_HEADER)
        for index, p in enumerate(capture.placements):
            writer.writerow(
                (
                    _spell(p.first_us, tz, minute_local=False),
                    p.event,
                    p.device,
                    p.recording.relative_to(EVENTS).as_posix(),
                    seconds(p.first_us),
                    seconds(p.last_us),
                    p.packets,
                    spelled[index],
                    rows[index][1],
                )
            )
    return truth


def _listed(capture: LongCapture, damage: LogDamage) -> dict[int, tuple[int | None, str]]:
    """{placement index: (listed time in µs or None when dropped, damage kind)}."""
    rng = random.Random(damage.seed)
    count = len(capture.placements)
    picked = rng.sample(range(count), count)  # disjoint slices of one shuffled order
    sizes = [round(share * count) for share in (damage.drop_share, damage.wrong_share)]
    sizes.append(round(damage.shift_share * count))
    if sum(sizes) > count:
        raise ValueError(f"damage shares add up to more than the {count} placed recordings")
    dropped = set(picked[: sizes[0]])
    wrong = picked[sizes[0] : sizes[0] + sizes[1]]
    shifted = set(picked[sizes[0] + sizes[1] : sum(sizes)])
    wrong_times = _far_times(capture, len(wrong), damage.wrong_distance, rng)
    rows = {}
    for index, placement in enumerate(capture.placements):
        if index in dropped:
            rows[index] = (None, "dropped")
        elif index in shifted:
            step = rng.randint(1, damage.shift_seconds) * rng.choice((-1, 1))
            rows[index] = (placement.first_us + step * MICRO, "shifted")
        else:
            rows[index] = (placement.first_us, "exact")
    for index, time in zip(wrong, wrong_times):
        rows[index] = (time, "wrong")
    return rows


def _far_times(capture: LongCapture, count: int, distance: int, rng: random.Random) -> list:
    """`count` whole-second times inside the capture (min_gap from its ends), each at least
    `distance` s from every placed recording's first and last packet."""
    low = -(-capture.start_us // MICRO) + capture.spec.min_gap
    high = capture.end_us // MICRO - capture.spec.min_gap
    free, cursor = [], low  # the allowed [from, to] stretches, in whole seconds
    for p in sorted(capture.placements, key=lambda p: p.first_us):
        near_from = p.first_us // MICRO - distance  # a time < near_from is far enough
        if near_from > cursor:
            free.append((cursor, min(near_from - 1, high)))
        cursor = max(cursor, -(-p.last_us // MICRO) + distance + 1)
    if cursor <= high:
        free.append((cursor, high))
    free = [(a, b) for a, b in free if a <= b]
    total = sum(b - a + 1 for a, b in free)
    if count and not total:
        raise ValueError(f"no time in the capture is {distance} s from every placed recording")
    times = []
    for _ in range(count):
        position = rng.randrange(total)
        for a, b in free:
            if position <= b - a:
                times.append((a + position) * MICRO)
                break
            position -= b - a + 1
    return times


def _spell(time_us: int, tz: timezone, minute_local: bool) -> str:
    moment = datetime.fromtimestamp(time_us // MICRO, tz)
    if minute_local:  # what app logs write: local time to the minute (no seconds), no offset
        return moment.replace(tzinfo=None).isoformat(timespec="minutes")
    return moment.isoformat(timespec="seconds")


# --- Wireshark's tools


def run(*command) -> str:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr.strip()}")
    return result.stdout


def editcap(option: str, value: str, source: Path, target: Path) -> None:
    run("editcap", "-F", "pcap", option, value, source, target)


def capinfos(captures: list[Path]) -> dict[Path, tuple[int, int, int]]:
    """{capture: (packets, first packet µs, last packet µs)}, from one capinfos run."""
    table = {}
    out = run("capinfos", "-T", "-r", "-M", "-c", "-a", "-e", "-S", *captures)
    for capture, line in zip(captures, out.splitlines()):
        name, packets, first, last = line.split("\t")
        assert name == str(capture), (name, capture)  # capinfos keeps the order it was given
        table[capture] = (int(packets), microseconds(first), microseconds(last))
    return table


def microseconds(text: str) -> int:
    return int(Decimal(text) * MICRO)


def seconds(micro: int) -> str:
    """µs as the seconds editcap -t and a reader take: -12.000345, exactly."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{fraction:06d}"


def iso_utc(micro: int) -> str:
    """µs since the epoch as editcap -A/-B take it: 2021-03-09T18:22:15.831389Z."""
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micro)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
