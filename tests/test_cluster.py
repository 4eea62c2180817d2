"""Captures as tasks on a Dask cluster (issue 16): a real `dask scheduler` and two `dask
worker` processes on localhost, started from the .venv as a user starts them. Through
--scheduler (or IOTSIG_SCHEDULER) the commands write the same files, byte for byte, as a
local run; progress comes back from the workers; a worker killed in the middle of a task
loses and duplicates no row; Ctrl-C stops the tasks and leaves no partial file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from iotsig import packets
from iotsig.parallel import Workers, run_parallel

from conftest import (
    CAPTURES,
    PLUG_IP,
    SCRIPTS,
    TPLINK_CAPTURES,
    capinfos_count,
    long_tplink_recordings,
    run_script,
    start,
    stop_and_check,
)

DASK = Path(sys.executable).parent / "dask"
EVENTS = CAPTURES / "sweep" / "events"
WRITTEN_BYTES = 1_000  # more than a packets CSV header: its first block of rows is written
SMALL_EVENTS = {("TapoLight", "toggle"): 3, ("TapoLight", "set_brightness"): 3}


# The dask command in a Python that cannot import iotsig (.venv's, the working tree's
# scripts/ taken off its path): a scheduler or worker where the package was not installed.
WITHOUT_PACKAGE = """import sys
sys.path[:] = [p for p in sys.path if p.rstrip("/") != {scripts!r}]
from dask.__main__ import main
sys.argv[0] = "dask"
sys.exit(main())
"""


class Cluster:
    """A scheduler and workers, each in its own process group (their tshark children
    included), all stopped at the end, whatever happened."""

    def __init__(self, folder: Path, without_package: tuple = ()):
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        self.without_package = without_package  # "scheduler", "worker": started without it

    def _start(self, name: str, *args) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        command = [str(DASK)]
        if args[0] in self.without_package:
            command = [sys.executable, str(self.folder / "dask-without-iotsig.py")]
            Path(command[1]).write_text(WITHOUT_PACKAGE.format(scripts=str(SCRIPTS)))
        process = subprocess.Popen(
            [*command, *args],
            cwd=self.folder,  # not the tests' directory: relative paths must not work there
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def start(self, workers: int = 2) -> None:
        scheduler_file = self.folder / "scheduler.json"
        self._start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        assert self.address, "the scheduler did not start: " + self.log("scheduler")
        for _ in range(workers):
            self.add_worker()

    def add_worker(self) -> None:
        count = len(self.workers)
        self.workers.append(
            self._start(
                f"worker{count}",
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-nanny",  # the worker is this process: SIGKILL kills it for good
                "--no-dashboard",
                "--local-directory",
                str(self.folder / f"scratch{count}"),
            )
        )
        self.wait_for_workers(len(self.live_workers()))

    def live_workers(self) -> list[subprocess.Popen]:
        return [w for w in self.workers if w.poll() is None]

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=60)

    def idle(self) -> bool:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            return not any(client.processing().values())

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """The workers first: a worker whose scheduler has gone waits to reconnect."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers, for the module's tests (slow: each starts in seconds)."""
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def two_workers(cluster) -> Cluster:
    """The cluster with two live workers (a test before may have killed one)."""
    while len(cluster.live_workers()) < 2:
        cluster.add_worker()
    return cluster


@pytest.fixture(scope="module")
def long_recordings(tmp_path_factory) -> list[Path]:
    """The TP-Link recordings with ~85,000 packets of other traffic after each."""
    return long_tplink_recordings(tmp_path_factory.mktemp("long"))


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_same_files(local: Path, remote: Path) -> None:
    expected, written = files_of(local), files_of(remote)
    assert sorted(written) == sorted(expected)
    for name, content in expected.items():
        assert written[name] == content, f"{name} differs from the local run's"


def drop_times(output: Path) -> None:
    """evaluate.py's outputs without the seconds each step took: they vary from run to run."""
    table = output / "evaluation.csv"
    table.write_text(pd.read_csv(table).drop(columns=["seconds"]).to_csv(index=False))
    report = output / "evaluation.md"
    lines, column = [], None
    for line in report.read_text().splitlines():
        cells = line.split(" | ")
        if not line.startswith("|"):
            column = None  # the end of a table
        elif line.startswith("| device | event |"):
            column = cells.index("seconds")
        if column is not None:
            line = " | ".join(cells[:column] + cells[column + 1 :])
        if not line.startswith("Time: "):
            lines.append(line)
    report.write_text("\n".join(lines))


def wait_for_part_files(folder: Path, process: subprocess.Popen, count: int) -> None:
    """Until `count` outputs are being written (hidden .part files): as many tasks running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.rglob("*.part"))) >= count:
            return
        assert process.poll() is None, f"finished before: {process.communicate()}"
        time.sleep(0.02)
    raise AssertionError(f"not {count} output files started")


def kill_a_worker_after_its_first_progress(cluster: Cluster, folder: Path, captures) -> None:
    """SIGKILL to the worker whose output (a .part file in FOLDER) has its first chunk of
    packets written, and so reported, as the progress bar shows it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        written = [p for p in folder.rglob("*.part") if p.stat().st_size > WRITTEN_BYTES]
        if written:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("no task wrote its first chunk of packets")
    names = written[0].relative_to(folder).parts  # a capture's chunks are in a folder of its
    capture = next(str(c) for c in captures if any(n.startswith(f".{c.name}.") for n in names))
    for worker in cluster.live_workers():
        children = subprocess.run(
            ["ps", "-o", "args=", "--ppid", str(worker.pid)], capture_output=True, text=True
        ).stdout
        # Its tshark reads the capture, or (tshark done, its last rows read) it still writes
        # the file: the rows are written in several blocks.
        if capture in children or written[0] in open_files(worker.pid):
            time.sleep(0.5)  # for its progress event to reach the command
            worker.kill()
            worker.wait(timeout=30)
            return
    raise AssertionError(f"no worker runs tshark on {capture} or writes {written[0]}")


def open_files(pid: int) -> set[Path]:
    found = set()
    for descriptor in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            found.add(Path(os.readlink(descriptor)))
    return found


# --- the same outputs as a local run -------------------------------------------------------


@pytest.mark.slow
def test_translator_on_the_cluster_writes_the_local_files_and_names_a_bad_capture(
    two_workers, tmp_path
):
    """Relative paths, given in a directory the workers do not run in; one capture that is
    not a capture: its one-line error, the others written."""
    shutil.copytree(TPLINK_CAPTURES[0].parent, tmp_path / "data")
    (tmp_path / "data" / "broken.pcap").write_text("not a capture\n")
    captures = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data").glob("*.pcap"))
    local = run_script("packet-translator.py", *captures, "-o", "local", cwd=tmp_path, check=False)
    remote = run_script(
        "packet-translator.py",
        *captures,
        "-o",
        "remote",
        "--scheduler",
        two_workers.address,
        cwd=tmp_path,
        check=False,
    )
    assert remote.returncode == local.returncode == 1
    assert_same_files(tmp_path / "local", tmp_path / "remote")
    assert len(files_of(tmp_path / "remote")) == len(TPLINK_CAPTURES)
    lines = remote.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in remote.stderr
    assert lines[0].startswith(
        f"packet-translator.py: error: {tmp_path / 'data' / 'broken.pcap'}: "
    )
    assert lines[0].endswith(local.stderr.strip().split("broken.pcap: ", 1)[1])
    assert (
        remote.stdout.strip()
        .splitlines()[-1]
        .startswith(f"packet-translator: 150 packets from {len(TPLINK_CAPTURES)} capture(s)")
    )


@pytest.mark.slow
def test_main_and_event_detector_on_the_cluster_write_the_local_files(two_workers, tmp_path):
    command = ("main.py", "-q", "TpLinkPlug", PLUG_IP, *TPLINK_CAPTURES, "--no-report")
    run_script(*command, "-o", tmp_path / "local")
    remote = run_script(*command, "-o", tmp_path / "remote", "--scheduler", two_workers.address)
    assert remote.stderr == ""
    assert_same_files(tmp_path / "local", tmp_path / "remote")
    assert {"signature.csv", "pattern.txt", "profile.yaml"} <= set(files_of(tmp_path / "remote"))

    # event-detector on the captures, into one output path (detections.csv names the files)
    detect = ("event-detector.py", "-q", tmp_path / "local" / "signature.csv", *TPLINK_CAPTURES)
    run_script(*detect, "-o", tmp_path / "detected")
    (tmp_path / "detected").rename(tmp_path / "detected-local")
    remote = run_script(*detect, "-o", tmp_path / "detected", "--scheduler", two_workers.address)
    assert remote.stderr == ""
    assert_same_files(tmp_path / "detected-local", tmp_path / "detected")
    detections = pd.read_csv(tmp_path / "detected" / "detections.csv")
    assert len(detections) == len(TPLINK_CAPTURES)  # the toggle in each recording


@pytest.mark.slow
def test_evaluate_through_the_environment_variable_writes_the_local_files(two_workers, tmp_path):
    events = tmp_path / "events"
    for (device, event), count in SMALL_EVENTS.items():
        (events / device / event).mkdir(parents=True)
        for capture in sorted((EVENTS / device / event).glob("*.pcap"))[:count]:
            shutil.copy(capture, events / device / event / capture.name)
    devices = EVENTS / "devices.yaml"
    command = ("evaluate.py", "-q", events, devices, "-o", tmp_path / "out")
    # One hash seed for both: signature.py breaks a tie in a packet profile's order by the
    # order of a set of strings, which changes with it (set_brightness here), cluster or not.
    run_script(*command, env={"PYTHONHASHSEED": "0"})
    (tmp_path / "out").rename(tmp_path / "local")  # the same output path: detections.csv names it
    remote = run_script(
        *command, env={"PYTHONHASHSEED": "0", "IOTSIG_SCHEDULER": two_workers.address}
    )
    assert remote.stderr == ""
    for run in ("local", "out"):
        drop_times(tmp_path / run)
    assert_same_files(tmp_path / "local", tmp_path / "out")
    assert len(list((tmp_path / "out" / "captures").rglob("*.flows.csv"))) == 6


@pytest.mark.slow
def test_progress_comes_back_from_the_workers(two_workers, tmp_path):
    """Every packet counted once by the on_progress callback, as the progress bar shows."""
    tasks = [(packets.translate, (c, tmp_path / f"{c.name}.csv")) for c in TPLINK_CAPTURES]
    counts = []
    results = dict(run_parallel(tasks, Workers(scheduler=two_workers.address), counts.append))
    assert sorted(results) == TPLINK_CAPTURES
    assert sum(counts) == sum(r.packets for r in results.values()) == 150
    assert sum(counts) == sum(capinfos_count(c) for c in TPLINK_CAPTURES)


# --- failures ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_loses_and_duplicates_no_row(two_workers, long_recordings, tmp_path):
    """SIGKILL to a worker while it writes: its task runs again on the other worker; each
    capture's packets CSV has every frame exactly once, and no partial file is left."""
    out = tmp_path / "out"
    process = start(
        "packet-translator.py",
        *long_recordings,
        "-o",
        out,
        "--scheduler",
        two_workers.address,
        cwd=tmp_path,
    )
    kill_a_worker_after_its_first_progress(two_workers, out, long_recordings)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert stderr == ""
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{c.name}.packets.csv" for c in long_recordings
    )  # and no .part file
    for capture in long_recordings:
        frames = pd.read_csv(out / f"{capture.name}.packets.csv", usecols=["frame_number"])
        assert frames["frame_number"].tolist() == list(range(1, capinfos_count(capture) + 1))
    assert f"{sum(capinfos_count(c) for c in long_recordings)} packets from 3 capture(s)" in stdout


@pytest.mark.slow
def test_a_capture_in_chunks_on_the_cluster_is_the_local_run(
    two_workers, long_recordings, tmp_path
):
    """IOTSIG_CHUNK_PACKETS: each long recording in chunks of 20,000 packets, the chunks
    tasks on the two workers, then the flows: main.py writes the files of the local run;
    and a worker killed mid-chunk loses and duplicates no row (its chunk runs again).
    (That chunks give one tshark's rows: tests/test_chunks.py; these recordings repeat the
    same background traffic ten times, which tshark takes for retransmissions of the
    first copy, state older than a chunk's overlap.)"""
    command = ("main.py", "-q", "TpLinkPlug", PLUG_IP, *long_recordings, "--no-report")
    chunks = {"IOTSIG_CHUNK_PACKETS": "20000"}
    run_script(*command, "-o", tmp_path / "local", env=chunks)
    out = tmp_path / "remote"
    process = start(
        *command, "-o", out, "--scheduler", two_workers.address, cwd=tmp_path, env=chunks
    )
    kill_a_worker_cutting_a_chunk(two_workers, process)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert_same_files(tmp_path / "local", out)  # and no chunk folder or part left


def kill_a_worker_cutting_a_chunk(cluster: Cluster, process: subprocess.Popen) -> None:
    """SIGKILL to the first worker seen running editcap (it cuts a chunk for its tshark)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"finished before: {process.communicate()}"
        for worker in cluster.live_workers():
            children = subprocess.run(
                ["ps", "-o", "comm=", "--ppid", str(worker.pid)], capture_output=True, text=True
            ).stdout.split()
            if "editcap" in children:
                time.sleep(0.3)  # into its chunk's rows
                worker.kill()
                worker.wait(timeout=30)
                return
        time.sleep(0.05)
    raise AssertionError("no worker cut a chunk")


@pytest.mark.slow
def test_progress_counts_each_packet_once_when_a_worker_dies(
    two_workers, long_recordings, tmp_path
):
    """In process: the on_progress callback (the progress bar) gets the packets of the
    killed run taken back when its task runs again."""
    tasks = [(packets.translate, (c, tmp_path / f"{c.name}.csv")) for c in long_recordings]
    counts = []

    killer = threading.Thread(
        target=kill_a_worker_after_its_first_progress,
        args=(two_workers, tmp_path, long_recordings),
    )
    killer.start()
    try:
        results = dict(run_parallel(tasks, Workers(scheduler=two_workers.address), counts.append))
    finally:
        killer.join()
    assert len(two_workers.live_workers()) == 1
    expected = sum(capinfos_count(c) for c in long_recordings)
    assert sum(r.packets for r in results.values()) == expected
    assert sum(counts) == expected
    assert any(count < 0 for count in counts), "no run was taken back: no worker died in one"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopped_on_the_cluster_leaves_no_partial_file(how, two_workers, long_recordings, tmp_path):
    out = tmp_path / "out"
    process = start(
        "main.py",
        "TpLinkPlug",
        PLUG_IP,
        *long_recordings,
        "-o",
        out,
        "--scheduler",
        two_workers.address,
        cwd=tmp_path,
    )
    wait_for_part_files(out, process, 1)
    stdout, stderr = stop_and_check(process, how, timeout=120)
    assert two_workers.idle(), "the tasks were not cancelled"
    left = sorted(p.name for p in out.rglob("*"))
    time.sleep(2)  # nothing is still being written by a worker either
    assert sorted(p.name for p in out.rglob("*")) == left
    for path in out.rglob("*"):
        assert not path.name.endswith(".part"), f"left behind: {path}"
        assert path.name.endswith((".packets.csv", ".flows.csv")), f"not a capture's: {path}"
        capture = next(c for c in long_recordings if path.name.startswith(c.name))
        if path.name.endswith(".packets.csv"):
            frames = pd.read_csv(path, usecols=["frame_number"])
            assert len(frames) == capinfos_count(capture)


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("tcp://127.0.0.1:9", id="unreachable", marks=pytest.mark.slow),
        pytest.param("nonsense://x", id="unknown scheme"),
        pytest.param("tcp://", id="no host"),
    ],
)
def test_a_scheduler_that_cannot_be_reached_is_one_line_naming_it(address, tmp_path):
    """(unreachable: the discard port, nothing listens; the client tries for
    CONNECT_TIMEOUT seconds: slow)"""
    result = run_script(
        "packet-translator.py", *TPLINK_CAPTURES, "-o", tmp_path, "--scheduler", address,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"packet-translator.py: error: cannot reach the Dask scheduler at {address}: "
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "lacking, where",
    [
        pytest.param("scheduler", "the scheduler", id="scheduler", marks=pytest.mark.slow),
        pytest.param("worker", "1 of 1 worker(s): tcp://127.0.0.1:", id="worker",
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_a_cluster_without_the_package_is_one_line_saying_to_install_it(lacking, where, tmp_path):
    """A scheduler without the package gave, per capture, "RuntimeError: Error during
    deserialization of the task graph..."; a worker without it died unpickling the task,
    and the command waited for a worker for ever."""
    cluster = Cluster(tmp_path / "cluster", without_package=(lacking,))
    cluster.folder.mkdir()
    try:
        cluster.start(workers=1)
        result = run_script(
            "packet-translator.py", *TPLINK_CAPTURES, "-o", tmp_path / "out",
            "--scheduler", cluster.address, check=False, timeout=120,
        )  # fmt: skip
    finally:
        cluster.stop()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"packet-translator.py: error: the Dask cluster at {cluster.address} cannot import "
        f"the iotsig package ({where}"
    ), lines[0]
    assert lines[0].endswith(
        ": install the iotsig package (pip install, as on this machine) in the Python "
        "environment of every worker and of the scheduler"
    )
    assert not list((tmp_path / "out").glob("*.csv"))


def test_an_empty_scheduler_option_runs_here_despite_the_variable(tmp_path):
    result = run_script(
        "packet-translator.py",
        "-q",
        *TPLINK_CAPTURES,
        "-o",
        tmp_path,
        "--scheduler",
        "",
        env={"IOTSIG_SCHEDULER": "tcp://127.0.0.1:9"},
    )
    assert result.stderr == ""
    assert len(list(tmp_path.glob("*.packets.csv"))) == len(TPLINK_CAPTURES)
