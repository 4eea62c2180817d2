"""event-detector.py --live: a capture written to a pipe gives the detections of the offline
run on the same capture, each as soon as it is complete; a live watch on the loopback
interface of traffic the test makes itself (127.0.0.x only)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import live_replay
from iotsig import csvio, detector, live, pipeline
from iotsig.schema import DETECTIONS
from live_replay import replay

import test_bursts
from conftest import CAPTURES, SCRIPTS, run_script, start

lock_halves = test_bursts.lock_halves  # (the fixture: the lock's capture and log cut)
TOGGLES = sorted((CAPTURES / "events" / "TpLinkPlug" / "toggle").glob("*.pcap"))


def detections(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "detections.csv", dtype=str, keep_default_na=False)


def offline(signature: Path, capture: Path, folder: Path) -> pd.DataFrame:
    run_script("event-detector.py", signature, capture, "-o", folder, "-q")
    return detections(folder)


# ---------------------------------------------------------------------------------------
# The watch, in the library: the same occurrences whatever the batches
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch", [pytest.param(1, marks=pytest.mark.slow), 7, 100_000]
)  # (one at a time: 9 s)
def test_packets_fed_in_any_batches_give_the_offline_detections(plug_signatures, tmp_path, batch):
    """The held-out toggle recording fed a few packets at a time: the same occurrences,
    flows (uids), frames and times as event-detector on the capture."""
    capture = TOGGLES[3]
    expected = offline(plug_signatures["toggle"], capture, tmp_path / "offline")
    signatures = detector.read_signatures(plug_signatures["toggle"])
    options, _, _ = detector.flow_options(signatures)
    table = pipeline.read_packets(tmp_path / "offline" / f"{capture.name}.packets.csv")
    watch = live.Watch(signatures, options, detector.DetectOptions(), capture.name)
    found = []
    for first in range(0, len(table), batch):
        watch.feed(table.iloc[first : first + batch])
        found += watch.advance(watch.last_ts)
    found += watch.advance(math.inf)
    csvio.write_table(detector.detections_frame(found), DETECTIONS, tmp_path / "detections.csv")
    got = detections(tmp_path)
    assert len(expected) >= 1
    assert got.equals(expected)


def watched(signature: Path, capture: Path, folder: Path, **options) -> pd.DataFrame:
    """live.watch on a capture file (read as a stream), in this process: its detections."""
    signatures = detector.read_signatures(signature)
    flow_options, _, _ = detector.flow_options(signatures)
    warnings = []
    live.watch(
        str(capture), signatures, flow_options, detector.DetectOptions(),
        folder / "detections.csv", lambda o, row: None, warnings.append, **options,
    )  # fmt: skip
    assert not warnings
    return detections(folder)


@pytest.mark.parametrize("event", ["toggle", pytest.param("boot", marks=pytest.mark.slow)])
def test_tshark_s_new_sessions_every_few_packets_change_no_detection(
    plug_signatures, tmp_path, event
):
    """tshark starts a new session every LIVE_SESSION_PACKETS (-M: its tables do not grow
    with weeks of packets), numbering frames from 1 again and forgetting TCP segments
    seen before. Every 7 packets here (15 sessions in the held-out toggle's 104 packets,
    11 in the boot's 72): the offline detections, frames counted on across them. (The
    boot's DHCP DISCOVER, from 0.0.0.0, is the device's by a MAC a later packet shows.)"""
    capture = sorted((CAPTURES / "events" / "TpLinkPlug" / event).glob("*.pcap"))[3]
    want = offline(plug_signatures[event], capture, tmp_path / "offline")
    got = watched(plug_signatures[event], capture, tmp_path, session_packets=7)
    assert len(want) >= 1
    assert got.equals(want)


# ---------------------------------------------------------------------------------------
# The command on a pipe
# ---------------------------------------------------------------------------------------


def test_a_capture_piped_in_gives_the_offline_detections_csv_and_each_runs_the_hook(
    plug_signatures, tmp_path
):
    capture = TOGGLES[3]
    offline(plug_signatures["toggle"], capture, tmp_path / "offline")
    hooked = tmp_path / "hooked.jsonl"
    with open(capture, "rb") as stream:
        result = subprocess.run(
            [
                sys.executable, str(SCRIPTS / "event-detector.py"), plug_signatures["toggle"],
                "--live", "-", "-o", tmp_path / "live",
                "--on-detect", f"sh -c 'cat >> {hooked}'",
            ],
            stdin=stream, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got, want = detections(tmp_path / "live"), detections(tmp_path / "offline")
    # (the capture column is the source's name: stdin)
    assert got.drop(columns=["capture", "flows"]).equals(want.drop(columns=["capture", "flows"]))
    assert [f.split("#")[-1] for f in got["flows"]] == [f.split("#")[-1] for f in want["flows"]]
    lines = [json.loads(line) for line in hooked.read_text().splitlines()]
    assert [line["start_utc"] for line in lines] == want["start_utc"].tolist()
    assert "detected toggle at" in result.stdout
    assert "watched live" in result.stdout.splitlines()[-1]


@pytest.mark.slow  # (8.5 s: the quick tier keeps the piped watch and its closing line)
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_watch_stopped_by_a_signal_ends_with_its_line_and_a_whole_csv(
    plug_signatures, tmp_path, how
):
    """The capture written into a FIFO that stays open (a quiet link), then Ctrl-C (the
    terminal's process group) or SIGTERM before its flows are idle long enough: the watch
    reports what the packets it read hold, as event-detector on them would."""
    fifo = tmp_path / "link"
    os.mkfifo(fifo)
    watcher = start("event-detector.py", plug_signatures["toggle"], "--live", fifo, "-o", tmp_path)
    with open(fifo, "wb") as sink:
        replay(TOGGLES[3], sink, 0)
        time.sleep(3)  # read
        if how == "ctrl-c":
            os.killpg(watcher.pid, signal.SIGINT)
        else:
            watcher.send_signal(signal.SIGTERM)
        stdout, stderr = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = stdout.splitlines()
    assert "detected toggle" in lines[0]
    assert lines[-1].startswith("event-detector: 1 detection(s)"), lines
    assert ("(interrupted)" if how == "ctrl-c" else "(terminated)") in lines[-1]
    assert len(detections(tmp_path)) == 1


def test_a_failing_hook_is_a_warning_and_the_watch_goes_on(plug_signatures, tmp_path):
    result = run_script(
        "event-detector.py", plug_signatures["toggle"], "--live", TOGGLES[3],
        "-o", tmp_path, "--on-detect", "false",
    )  # fmt: skip
    assert "warning: --on-detect: false failed (exit status 1)" in result.stderr
    assert len(detections(tmp_path)) >= 1


def test_a_missing_interface_is_one_line_naming_the_interfaces(plug_signatures, tmp_path):
    result = run_script(
        "event-detector.py", plug_signatures["toggle"], "--live", "nosuch0", "-o", tmp_path,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no network interface named 'nosuch0'" in result.stderr and " lo" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
    reason="needs root to run the command as a user who may not capture (setpriv)",
)
def test_no_permission_to_capture_is_one_line_naming_the_fix(plug_signatures):
    import tempfile

    # (a folder the other user can reach: pytest's are root's alone)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o777)
        signature = Path(folder) / "signature.csv"
        signature.write_bytes(plug_signatures["toggle"].read_bytes())
        signature.chmod(0o644)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             SCRIPTS / "event-detector.py", signature, "--live", "lo",
             "-o", Path(folder) / "out"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": folder},
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert (
        "error: lo: no permission to capture on lo (socket: Operation not permitted): run as "
        "root, or add the user to the wireshark group" in result.stderr
    ), result.stderr


def test_dumpcap_s_drops_are_warned_as_they_grow_at_most_once_a_minute():
    """dumpcap's counts as it says them (its closing line's form, the interface named
    with a colon in it), read as the watch goes: a warning when the dropped count grew,
    at most every DROPS_EVERY seconds; at the end, any drop. (dumpcap 4.0 says its counts
    when it stops; a fake says them here as they grow.)"""
    said, warnings = [""], []

    def line(received, dropped):
        return (
            "Capturing on 'Loopback: lo'\nPackets received/dropped on interface "
            f"'Loopback: lo': {received}/{dropped} (pcap:{dropped}/dumpcap:0/flushed:0/"
            f"ps_ifdrop:0) (99.0%)\n"
        )

    drops = live.Drops(lambda: said[0], warnings.append, "lo")
    drops.check(0.0)
    said[0] = line(100, 0)
    drops.check(1.0)
    assert warnings == [] and drops.counts == (100, 0)
    said[0] += line(200, 5)
    drops.check(2.0)
    assert warnings == ["lo: dumpcap has dropped 5 of 205 packets so far (the watch may "
                        "miss events: a busy machine, or too small a capture buffer)"]  # fmt: skip
    said[0] += line(300, 9)
    drops.check(2.0 + live.DROPS_EVERY - 1)  # (within the minute: not yet)
    assert len(warnings) == 1
    drops.check(2.0 + live.DROPS_EVERY)
    assert len(warnings) == 2 and "dropped 9 of 309 packets so far" in warnings[-1]
    drops.check(2.0 + 3 * live.DROPS_EVERY)  # (not grown: nothing)
    assert len(warnings) == 2
    drops.check(1e6, final=True)
    assert warnings[-1] == "lo: dumpcap dropped 9 of 309 packets"
    quiet = live.Drops(lambda: line(50, 0), warnings.append, "lo")
    quiet.check(0.0, final=True)
    assert len(warnings) == 3 and quiet.counts == (50, 0)


def test_live_takes_signatures_only(plug_signatures, tmp_path):
    result = run_script(
        "event-detector.py", plug_signatures["toggle"], TOGGLES[3], "--live", "lo",
        "-o", tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "give signature CSVs only" in result.stderr


@pytest.mark.parametrize(
    "arguments, said",
    [
        (["--keepalive-wait", "0"], "--keepalive-wait is for --live"),
        (
            ["--live", "lo", "--keepalive-wait", "-1"],
            "argument --keepalive-wait: must be 0 or more",
        ),
    ],
)
def test_keepalive_wait_is_a_live_option_of_seconds(plug_signatures, tmp_path, arguments, said):
    result = run_script(
        "event-detector.py", plug_signatures["toggle"], *arguments, "-o", tmp_path, check=False
    )
    assert result.returncode == 2
    assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr


# ---------------------------------------------------------------------------------------
# The shared camera week: a day through a FIFO at 1000 times its pace
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_camera_day_at_1000x_through_a_fifo_is_detected_as_offline_within_5_s(tmp_path):
    import test_long_captures as long

    if not long.CAMERA.is_file():
        pytest.skip(f"{long.CAMERA} not there (../shared beside the repo)")
    from iotsig import event_times

    spec = event_times.TimesFormat(event_column="3", device_column="2", timezone="UTC-5")
    parts = long.halves(long.CAMERA, long.IFTTT_LOG, spec, tmp_path)
    first, log = parts["first"]
    long.learn_camera(run_script, first, log, tmp_path / "learn")
    signature = tmp_path / "learn" / "signature.csv"
    # The day of the second half with most of its events (14 motions in 13 minutes).
    day = tmp_path / "day.pcap"
    subprocess.run(
        ["editcap", "-F", "pcap", "-A", "2021-03-13 00:00:00", "-B", "2021-03-14 00:00:00",
         str(parts["second"][0]), str(day)],
        check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    want = offline(signature, day, tmp_path / "offline")
    assert len(want) >= 10
    fifo = tmp_path / "fifo" / "day.pcap"  # (named as the file: the same uids)
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    process = start("event-detector.py", signature, "--live", fifo, "-o", tmp_path / "live")
    seen = []

    def read():
        for line in process.stdout:
            seen.append((time.monotonic(), line))

    reader = threading.Thread(target=read)
    reader.start()
    written = []
    with open(fifo, "wb") as sink:
        replay(day, sink, 1000.0, written)
    assert process.wait(120) == 0, process.stderr.read()
    reader.join()
    got = detections(tmp_path / "live")
    assert got.drop(columns="signature").equals(want.drop(columns="signature"))
    late = []
    for at, line in seen:
        frames = re.search(r"frames (\d+)-(\d+)", line)
        if frames:
            late.append(at - written[int(frames.group(2)) - 1])
    assert len(late) == len(want)
    assert max(late) < 5.0, late


# ---------------------------------------------------------------------------------------
# The shared lock week: its actions look like its hourly status report, a keep-alive
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lock_signature(lock_halves, tmp_path_factory) -> Path:
    """The lock's actions (lock and unlock as one event) learned from the first half."""
    first, _, first_log = lock_halves["first"]
    learn = tmp_path_factory.mktemp("lock-learned")
    run_script(
        "main.py", "lock", test_bursts.LOCK_IP, first, "--events", first_log, "--event",
        "action", *test_bursts.READING, "-o", learn, "--no-report", "-q",
    )  # fmt: skip
    return learn / "signature.csv"


@pytest.mark.slow
@pytest.mark.parametrize("wait", [None, 0])
def test_the_lock_s_first_day_at_1000x_through_a_fifo_is_detected_as_offline(
    lock_halves, lock_signature, tmp_path, wait
):
    """The lock's actions learned from the first half of its log; the first day of the
    second half (15 actions, then 24 status reports of the actions' sizes, which are
    keep-alives only by the report an hour after each) written to a FIFO at 1000 times its
    pace: the offline detections, each within 5 s of its last packet. With
    --keepalive-wait 0, each action without the hour's wait (within 2 s), and besides them
    only status reports with no report a period or two before (the watch's first)."""
    second = lock_halves["second"][0]
    signature = lock_signature
    learned = pd.read_csv(signature, dtype=str, keep_default_na=False)
    assert 3500 < float(learned["keepalive_period"].iloc[0]) < 3700  # (the hourly report)
    day = tmp_path / "day.pcap"
    subprocess.run(["editcap", "-F", "pcap", second, day], check=True)  # (the pacer's format)
    start = pd.Timestamp(live_replay.records(day)[1][0][0], unit="s")
    subprocess.run(
        ["editcap", "-B", str(start + pd.Timedelta(days=1)), "-F", "pcap", str(second),
         str(day)],
        check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    want = offline(signature, day, tmp_path / "offline")
    assert len(want) == 15
    fifo = tmp_path / "fifo" / "day.pcap"  # (named as the file: the same uids)
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    command = [sys.executable, SCRIPTS / "event-detector.py", signature, "--live", fifo,
               "-o", tmp_path / "live"]  # fmt: skip
    if wait is not None:
        command += ["--keepalive-wait", str(wait)]
    late = live_replay.watch_through_fifo(command, day, fifo, 1000.0)
    got = detections(tmp_path / "live")
    if wait is None:
        assert got.drop(columns="signature").equals(want.drop(columns="signature"))
        assert len(late) == len(want)
        assert max(late) < 5.0, late
        return
    assert len(late) == len(got)
    actions = got["start_utc"].isin(want["start_utc"]).to_numpy()
    assert actions.sum() == len(want)  # every action, and at once
    assert max(t for t, a in zip(late, actions) if a) < 2.0, late
    # The others: reports that no report precedes within two periods, as in the first hour.
    others = pd.to_datetime(got.loc[~actions, "start_utc"])
    assert 1 <= len(others) <= 3, got.loc[~actions, "start_utc"].tolist()
    assert others.min() - pd.Timestamp(start, tz="UTC") < pd.Timedelta(hours=2)


@pytest.mark.slow
def test_the_lock_s_second_half_across_tshark_s_new_sessions_is_detected_as_offline(
    lock_halves, lock_signature, tmp_path
):
    """tshark's new session every 300 packets (10 of them in 3,152): frame numbers count
    on, and the 18 actions are the offline run's."""
    second = lock_halves["second"][0]
    want = offline(lock_signature, second, tmp_path / "offline")
    got = watched(lock_signature, second, tmp_path, session_packets=300)
    assert len(want) == 18
    assert got.drop(columns="signature").equals(want.drop(columns="signature"))


# ---------------------------------------------------------------------------------------
# Live on the loopback interface: traffic made here, 127.0.0.x only
# ---------------------------------------------------------------------------------------

DEVICE, CLOUD = "127.0.0.2", "127.0.0.3"
KEEPALIVE_PORT, COMMAND_PORT = 5683, 9000
REQUEST, REPLY = 321, 654  # the command's bytes each way (its packet profile)


def can_capture_on_lo() -> str | None:
    """None, or why capturing on lo is not possible here."""
    try:
        probe = subprocess.run(
            ["dumpcap", "-i", "lo", "-c", "1", "-a", "duration:1", "-w", "/dev/null"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"dumpcap cannot run: {e}"
    if probe.returncode != 0:
        return "no permission to capture on lo: " + " ".join(probe.stderr.split())[:200]
    return None


class Device:
    """A device-like pair on lo: a keep-alive every KEEPALIVE seconds (UDP, DEVICE to
    CLOUD and back) and, on command(), a short TCP exchange of REQUEST and REPLY bytes."""

    KEEPALIVE = 1.5

    def __init__(self):
        self.stop = threading.Event()
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((CLOUD, COMMAND_PORT))
        self.server.listen()
        self.echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.echo.bind((CLOUD, KEEPALIVE_PORT))
        self.echo.settimeout(0.2)
        self.threads = [
            threading.Thread(target=self._serve, daemon=True),
            threading.Thread(target=self._echo, daemon=True),
            threading.Thread(target=self._keepalives, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _serve(self):
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            with connection:
                received = 0
                while received < REQUEST:
                    received += len(connection.recv(4096))
                connection.sendall(b"r" * REPLY)

    def _echo(self):
        while not self.stop.is_set():
            try:
                data, peer = self.echo.recvfrom(2048)
            except OSError:
                continue
            self.echo.sendto(b"k" * 20, peer)

    def _keepalives(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind((DEVICE, 0))
            while not self.stop.wait(self.KEEPALIVE):
                sender.sendto(b"p" * 12, (CLOUD, KEEPALIVE_PORT))

    def command(self):
        with socket.create_connection((CLOUD, COMMAND_PORT), source_address=(DEVICE, 0)) as c:
            c.sendall(b"q" * REQUEST)
            received = 0
            while received < REPLY:
                received += len(c.recv(4096))

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(2)
        self.server.close()
        self.echo.close()


def record(path: Path, seconds: float, action=None) -> Path:
    """dumpcap on lo for `seconds`, `action` run in the middle."""
    process = subprocess.Popen(
        ["dumpcap", "-i", "lo", "-f", f"host {DEVICE}", "-w", str(path), "-q",
         "-a", f"duration:{seconds:g}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(seconds / 2)
    if action:
        action()
    process.wait(seconds + 10)
    return path


@pytest.mark.slow
def test_a_command_learned_from_recordings_is_detected_live_on_lo(tmp_path):
    why = can_capture_on_lo()
    if why:
        pytest.skip(why)
    device = Device()
    try:
        recordings = [record(tmp_path / f"command-{i}.pcap", 5, device.command) for i in range(3)]
        idle = record(tmp_path / "idle.pcap", 5)
        run_script(
            "main.py", "made-device", DEVICE, *recordings, "--idle", idle, "--event", "command",
            "--idle-timeout", "4", "--max-duration", "20", "-o", tmp_path / "learn", "-q",
            "--no-report",
        )  # fmt: skip
        signature = tmp_path / "learn" / "signature.csv"
        learned = pd.read_csv(signature, dtype=str, keep_default_na=False)
        assert (learned["role"] == "event").any()
        watcher = start(
            "event-detector.py", signature, "--live", "lo", "-o", tmp_path / "live",
            "--on-detect", f"sh -c 'cat > {tmp_path / 'hook.json'}'",
        )  # fmt: skip
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(watcher.stdout), daemon=True)
        reader.start()
        time.sleep(3)  # dumpcap started
        device.command()
        commanded = time.monotonic()
        deadline = commanded + 60
        while time.monotonic() < deadline and not any("detected command" in x for x in lines):
            time.sleep(0.2)
        found_after = time.monotonic() - commanded
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(30)
        reader.join(5)
        stderr = watcher.stderr.read()
    finally:
        device.close()
    assert any("detected command" in x for x in lines), (lines, stderr)
    print(f"detected {found_after:.1f} s after the command")
    assert found_after < 40, found_after  # window, join reach, the idle timeout
    assert watcher.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert any("watching lo (capture filter: host 127.0.0.2)" in x for x in lines)
    assert "(terminated)" in lines[-1] and "dumpcap:" in lines[-1]
    table = detections(tmp_path / "live")
    assert table["event"].tolist() == ["command"]
    assert json.loads((tmp_path / "hook.json").read_text())["event"] == "command"
