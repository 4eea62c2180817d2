"""The long-capture builder (tests/long_capture.py), checked with Wireshark's own tools: what
is in the capture (capinfos, tshark), where the placed recordings are, the times file, the
log damage, seeds and the cache."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import CAPTURES, capinfos_count
from long_capture import (
    BACKGROUND,
    DEFAULT_EVENTS,
    EVENTS,
    MICRO,
    PROTOCOL_CAPTURES,
    SMALL,
    TIMES_HEADER,
    TRUTH_HEADER,
    LogDamage,
    Spec,
    build_long_capture,
    missing_inputs,
    small_long_capture,
    write_times,
)

pytestmark = pytest.mark.skipif(missing_inputs() is not None, reason=str(missing_inputs()))
OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-05:00$")
MINUTE_LOCAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d$")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return small_long_capture(tmp_path_factory.mktemp("long-small"))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The 27-hour capture with 20 recordings of each of three events (~2 s to build)."""
    return build_long_capture(tmp_path_factory.mktemp("long-full"))


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def epoch_us(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * MICRO)


def frames(capture: Path) -> list[tuple[int, str]]:
    """[(time in µs, MD5 of the frame's bytes)] of every frame, as tshark reads them."""
    out = subprocess.run(
        ["tshark", "-o", "frame.generate_md5_hash:TRUE", "-r", str(capture), "-T", "fields"]
        + ["-e", "frame.time_epoch", "-e", "frame.md5_hash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        (int(Decimal(time) * MICRO), digest)
        for time, digest in (line.split("\t") for line in out.splitlines())
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- what is in the capture


@pytest.mark.parametrize("which", ["small", pytest.param("full", marks=pytest.mark.slow)], ids=str)
def test_packets_are_background_plus_protocol_rounds_plus_placed(which, request):
    capture = request.getfixturevalue(which)
    hours = capture.spec.hours
    # Counted here from the sources: the camera's frames before start + hours, one copy of
    # the protocol captures per half hour, and each placed recording once.
    camera = [time for time, _ in frames(BACKGROUND)]
    background = sum(time < camera[0] + hours * 3600 * MICRO for time in camera)
    one_round = sum(capinfos_count(CAPTURES / name) for name in PROTOCOL_CAPTURES)
    placed = sum(capinfos_count(p.recording) for p in capture.placements)
    rounds = int(hours * 2)
    assert capinfos_count(capture.pcap) == background + rounds * one_round + placed
    assert capture.counts == {
        "background": background,
        "protocols": rounds * one_round,
        "placed": placed,
        "total": background + rounds * one_round + placed,
    }


@pytest.mark.slow  # (tshark's MD5 of every frame: 2.8 s even on the small capture)
@pytest.mark.parametrize("which", ["small", "full"], ids=str)
def test_each_recording_lies_in_the_capture_at_its_listed_time(which, request):
    """Every frame of every placed recording is in the long capture, byte for byte, shifted
    so that the recording's first frame is at the time its row of times.csv gives."""
    capture = request.getfixturevalue(which)
    long_frames = Counter(frames(capture.pcap))
    listed = rows(capture.times)
    assert len(listed) == len(capture.placements)
    for row, placement in zip(listed, capture.placements):
        recording = frames(placement.recording)
        start = epoch_us(row["time"])
        moved = Counter((time - recording[0][0] + start, digest) for time, digest in recording)
        assert moved - long_frames == Counter(), placement.recording
        assert (row["event"], row["device"]) == (placement.event, placement.device)
        assert placement.recording.parent == EVENTS / row["device"] / row["event"]


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_capture_is_time_ordered_pcap_spanning_the_hours(full):
    info = subprocess.run(
        ["capinfos", "-t", "-E", "-o", "-u", "-S", "-a", "-M", str(full.pcap)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"File type:\s+pcap\n", info)
    assert re.search(r"File encapsulation:\s+ether\n", info)
    assert re.search(r"Strict time order:\s+True\n", info)
    duration = float(re.search(r"Capture duration:\s+([\d.]+) seconds", info).group(1))
    first = Decimal(re.search(r"First packet time:\s+([\d.]+)", info).group(1))
    assert duration >= 24 * 3600
    assert first * MICRO == full.start_us == frames(BACKGROUND)[0][0]


# --- the placements and the times file


@pytest.mark.parametrize("which", ["small", pytest.param("full", marks=pytest.mark.slow)])
def test_times_file_parses_as_written(which, request):
    capture = request.getfixturevalue(which)
    with open(capture.times, newline="") as handle:
        assert handle.readline() == ",".join(TIMES_HEADER) + "\n"
    listed = rows(capture.times)
    assert all(OFFSET.match(row["time"]) for row in listed), listed[:3]
    times = [epoch_us(row["time"]) for row in listed]
    assert times == sorted(times)
    assert times == [p.first_us for p in capture.placements]
    assert times[0] % MICRO == 0
    truth = rows(capture.truth)
    assert list(truth[0]) == list(TRUTH_HEADER)
    assert [row["listed_time"] for row in truth] == [row["time"] for row in listed]
    assert {row["damage"] for row in truth} == {"exact"}


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_placements_are_spread_over_the_hours(full):
    """20 recordings of each of the three events, each used once, in file-name order, at
    least 10 minutes apart and from both ends of the 27 hours."""
    placements = full.placements
    assert Counter((p.device, p.event) for p in placements) == dict.fromkeys(DEFAULT_EVENTS, 20)
    for device, event in DEFAULT_EVENTS:
        used = [p.recording for p in placements if (p.device, p.event) == (device, event)]
        assert used == sorted((EVENTS / device / event).glob("*.pcap"))
    firsts = [p.first_us for p in placements]
    assert min(b - a for a, b in zip(firsts, firsts[1:])) >= 600 * MICRO
    assert firsts[0] >= full.start_us + 600 * MICRO
    assert placements[-1].last_us <= full.end_us - 600 * MICRO
    assert full.end_us - full.start_us == 27 * 3600 * MICRO
    # spread, not bunched: placements in at least 20 of the 27 hours
    assert len({(t - full.start_us) // (3600 * MICRO) for t in firsts}) >= 20


def test_small_variant(small):
    assert [(p.device, p.event) for p in small.placements] == [("TapoLight", "toggle")] * 6
    assert small.end_us - small.start_us == 3 * 3600 * MICRO


# --- seeds and the cache


def test_same_seed_same_bytes_other_seed_other_times(small, tmp_path):
    again = small_long_capture(tmp_path / "again")
    assert sha256(again.pcap) == sha256(small.pcap)
    assert again.times.read_bytes() == small.times.read_bytes()
    other = small_long_capture(tmp_path / "other", seed=1)
    assert [p.first_us for p in other.placements] != [p.first_us for p in small.placements]
    assert capinfos_count(other.pcap) == capinfos_count(small.pcap)


def test_cache_reused_when_parameters_match_rebuilt_otherwise(tmp_path):
    built = small_long_capture(tmp_path)
    stamp = built.pcap.stat().st_mtime_ns
    assert small_long_capture(tmp_path) == built
    assert built.pcap.stat().st_mtime_ns == stamp  # reused, not written again
    other = build_long_capture(tmp_path, replace(SMALL, per_event=4))
    assert len(other.placements) == 4 and len(rows(other.times)) == 4
    assert capinfos_count(other.pcap) < capinfos_count(tmp_path / "long.pcap") + 1
    assert other.pcap.stat().st_mtime_ns != stamp
    (tmp_path / "times.csv").unlink()  # a file missing: built again
    assert build_long_capture(tmp_path, replace(SMALL, per_event=4)) == other
    assert len(rows(tmp_path / "times.csv")) == 4


def test_events_that_do_not_fit_are_refused(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        build_long_capture(tmp_path, Spec(events=DEFAULT_EVENTS, hours=3))


# --- log damage (on the full capture's 60 rows)


def damaged(capture, path: Path, **options) -> tuple[list[dict], list[dict]]:
    truth = write_times(capture, path, LogDamage(**options))
    assert truth == path.with_name(f"{path.stem}.truth.csv")
    return rows(path), rows(truth)


def local_minute(time_us: int) -> str:
    moment = datetime.fromtimestamp(time_us // MICRO, timezone(timedelta(hours=-5)))
    return moment.strftime("%Y-%m-%dT%H:%M")


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_damage_minute_local(full, tmp_path):
    listed, truth = damaged(full, tmp_path / "log.csv", minute_local=True)
    assert all(MINUTE_LOCAL.match(row["time"]) for row in listed), listed[:3]
    assert [row["time"] for row in listed] == [local_minute(p.first_us) for p in full.placements]
    assert any(p.first_us // MICRO % 60 for p in full.placements)  # seconds were dropped
    assert [epoch_us(row["time"]) for row in truth] == [p.first_us for p in full.placements]


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_damage_shift(full, tmp_path):
    listed, truth = damaged(full, tmp_path / "log.csv", shift_share=0.1, shift_seconds=120)
    assert len(listed) == 60
    shifted = [row for row in truth if row["damage"] == "shifted"]
    assert len(shifted) == 6
    for row in truth:
        moved = epoch_us(row["listed_time"]) - epoch_us(row["time"])
        if row["damage"] == "shifted":
            assert 1 * MICRO <= abs(moved) <= 120 * MICRO
        else:
            assert (row["damage"], moved) == ("exact", 0)
    assert sorted(row["time"] for row in listed) == [row["time"] for row in listed]
    assert sorted(epoch_us(row["time"]) for row in listed) == sorted(
        epoch_us(row["listed_time"]) for row in truth
    )


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_damage_wrong(full, tmp_path):
    listed, truth = damaged(full, tmp_path / "log.csv", wrong_share=0.05, wrong_distance=600)
    wrong = [epoch_us(row["listed_time"]) for row in truth if row["damage"] == "wrong"]
    assert len(wrong) == 3 and len(listed) == 60
    for time in wrong:
        assert full.start_us + 600 * MICRO <= time <= full.end_us - 600 * MICRO
        assert min(abs(time - p.first_us) for p in full.placements) >= 600 * MICRO
    assert set(wrong) <= {epoch_us(row["time"]) for row in listed}


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_damage_drop(full, tmp_path):
    listed, truth = damaged(full, tmp_path / "log.csv", drop_share=0.1)
    assert len(listed) == 54 and len(truth) == 60
    dropped = [row for row in truth if row["damage"] == "dropped"]
    assert len(dropped) == 6 and all(row["listed_time"] == "" for row in dropped)
    kept = {epoch_us(row["time"]) for row in truth if row["damage"] != "dropped"}
    assert {epoch_us(row["time"]) for row in listed} == kept


@pytest.mark.slow  # (the full capture: built in the full suite only)
def test_damage_together_is_disjoint_seeded_and_keeps_the_truth(full, tmp_path):
    options = {"minute_local": True, "shift_share": 0.1, "wrong_share": 0.05, "drop_share": 0.05}
    listed, truth = damaged(full, tmp_path / "a.csv", seed=3, **options)
    assert Counter(row["damage"] for row in truth) == {
        "exact": 48,
        "shifted": 6,
        "wrong": 3,
        "dropped": 3,
    }
    assert len(listed) == 57
    assert [epoch_us(row["time"]) for row in truth] == [p.first_us for p in full.placements]
    assert [row["recording"] for row in truth] == [
        p.recording.relative_to(EVENTS).as_posix() for p in full.placements
    ]
    again = damaged(full, tmp_path / "b.csv", seed=3, **options)
    assert again == (listed, truth)
    other = damaged(full, tmp_path / "c.csv", seed=4, **options)
    assert other[1] != truth
    with pytest.raises(ValueError, match="more than the 60"):
        write_times(full, tmp_path / "d.csv", LogDamage(shift_share=0.6, drop_share=0.5))
