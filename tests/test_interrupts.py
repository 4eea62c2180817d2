"""Runs that are stopped or cannot write (issue 7): Ctrl-C, SIGTERM, a full disk, a
read-only output directory. Each leaves a clear one-line message, a non-zero exit, no
half-written file, and rerunning finishes the job. Also: tshark is only ever given an
argument list, and file names with spaces, quotes, leading dashes and non-ASCII work."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from iotsig import csvio
from iotsig.schema import PACKETS

from conftest import (
    PLUG_IP,
    SCRIPTS,
    TPLINK_CAPTURES,
    capinfos_count,
    long_tplink_recordings,
    run_script,
    start,
    stop_and_check,
)

MAIN_OUTPUTS = {"pattern.txt", "profile.yaml", "signature.csv"}


@pytest.fixture(scope="module")
def long_recordings(tmp_path_factory) -> list[Path]:
    """The TP-Link recordings with ~85,000 packets of other traffic after each."""
    return long_tplink_recordings(tmp_path_factory.mktemp("long"))


def wait_for_part_file(folder: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until an output file is being written (a hidden .part file shows)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and any(p.name.endswith(".part") for p in folder.rglob("*")):
            return
        assert process.poll() is None, (
            f"finished before it could be stopped: {process.stderr.read()}"
        )
        time.sleep(0.02)
    raise AssertionError("no output file was started")


def live_processes_of_group(group: int) -> list[str]:
    """Processes of the command still running (zombies are dead: left for init to reap)."""
    listing = subprocess.run(
        ["ps", "-o", "stat=,args=", "-g", str(group)], capture_output=True, text=True
    ).stdout.splitlines()
    return [line for line in listing if not line.lstrip().startswith("Z")]


def packet_rows(path: Path) -> int:
    return len(pd.read_csv(path, usecols=["frame_number"]))


@pytest.mark.slow  # main.py on three ~85,000-packet recordings, twice each
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopped_main_leaves_no_half_file_and_a_rerun_finishes(how, long_recordings, tmp_path):
    out = tmp_path / "out"
    process = start("main.py", "TpLinkPlug", PLUG_IP, *long_recordings, "-o", out)
    wait_for_part_file(out, process)
    stdout, stderr = stop_and_check(process, how, timeout=60)
    # What is there is whole: the packets CSV and flows CSV of each capture that finished
    # (each capture's worker writes both), nothing of the signature stage.
    for path in out.rglob("*"):
        assert not path.name.endswith(".part"), f"left behind: {path}"
        assert path.name.endswith((".packets.csv", ".flows.csv", ".bursts.csv")), (
            f"written before the translation ended: {path}"
        )
        capture = next(c for c in long_recordings if path.name.startswith(c.name))
        if path.name.endswith(".packets.csv"):
            assert packet_rows(path) == capinfos_count(capture)
        else:
            assert (out / f"{capture.name}.packets.csv").exists(), f"flows without packets: {path}"
            assert not pd.read_csv(path).empty
    assert live_processes_of_group(process.pid) == []  # workers and tsharks stopped too

    result = run_script(
        "main.py", "-q", "TpLinkPlug", PLUG_IP, *long_recordings, "-o", out, "--no-report"
    )
    assert result.stderr == ""
    assert {p.name for p in out.iterdir()} >= MAIN_OUTPUTS
    for capture in long_recordings:
        assert packet_rows(out / f"{capture.name}.packets.csv") == capinfos_count(capture)
    signature = pd.read_csv(out / "signature.csv")
    assert {9999, 53, 443} <= set(signature["server_port"])


# How a non-interactive shell starts `command &`: with Ctrl-C ignored.
AS_A_BACKGROUND_JOB = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.mark.slow  # main.py on three ~85,000-packet recordings
def test_a_run_started_with_ctrl_c_ignored_goes_on_through_it(long_recordings, tmp_path):
    """A script's background job (nohup too) ignores the terminal's Ctrl-C: so do main.py's
    workers and their tsharks, which otherwise died of it and stopped the run (exit 130),
    where one tshark (-j 1) or a cluster's went on."""
    out = tmp_path / "out"
    command = [SCRIPTS / "main.py", "-q", "TpLinkPlug", PLUG_IP, *long_recordings, "-o", out]
    process = subprocess.Popen(
        [sys.executable, "-c", AS_A_BACKGROUND_JOB, *map(str, command), "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for_part_file(out, process)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert {p.name for p in out.iterdir()} >= MAIN_OUTPUTS
    for capture in long_recordings:
        assert packet_rows(out / f"{capture.name}.packets.csv") == capinfos_count(capture)


@pytest.mark.slow  # builds the ~85,000-packet recordings
def test_translator_stopped_between_captures_keeps_the_finished_ones(long_recordings, tmp_path):
    """One capture at a time (-j 1): SIGTERM while the second is written leaves the first
    CSV whole, nothing of the second."""
    out = tmp_path / "out"
    process = start("packet-translator.py", "-j", "1", *long_recordings, "-o", out)
    first = out / f"{long_recordings[0].name}.packets.csv"
    deadline = time.monotonic() + 60
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    wait_for_part_file(out, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == [first.name]
    assert packet_rows(first) == capinfos_count(long_recordings[0])


@pytest.mark.slow  # main.py twice, on a full then a larger tmpfs
def test_full_disk_then_room_again(mount_tmpfs, tmp_path):
    """main.py on a disk too small for its CSVs: one error naming the file, nothing half
    written; given room, the same command finishes."""
    disk = mount_tmpfs("size=40k")  # room for some packets CSVs, not all outputs
    command = ("main.py", "-q", "TpLinkPlug", PLUG_IP, *TPLINK_CAPTURES, "--no-report", "-o", disk)
    result = run_script(*command, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert any("No space left on device" in line and str(disk) in line for line in lines)
    assert all(line.startswith("main.py: ") for line in lines)
    for path in disk.iterdir():
        assert not path.name.endswith(".part")
        assert path.stat().st_size > 0
    assert not {p.name for p in disk.iterdir()} >= MAIN_OUTPUTS

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    run_script(*command)
    assert {p.name for p in disk.iterdir()} >= MAIN_OUTPUTS
    for capture in TPLINK_CAPTURES:
        assert packet_rows(disk / f"{capture.name}.packets.csv") == capinfos_count(capture)


@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory) -> Path:
    """Packets, flows and signature of the TP-Link captures, for every script's input."""
    out = tmp_path_factory.mktemp("pipeline")
    run_script("main.py", "-q", "TpLinkPlug", PLUG_IP, *TPLINK_CAPTURES, "--no-report", "-o", out)
    return out


def script_runs(inputs: Path) -> dict[str, list]:
    packets = sorted(inputs.glob("*.packets.csv"))
    flows = sorted(inputs.glob("*.flows.csv"))
    return {
        "packet-translator.py": [*TPLINK_CAPTURES],
        "stream-identifier.py": packets,
        "signature-extractor.py": [*flows, "--device-name", "TpLinkPlug", "--device-ip", PLUG_IP],
        "main.py": ["TpLinkPlug", PLUG_IP, *TPLINK_CAPTURES],
        "traffic-report.py": [*packets, *flows, "--device-ip", PLUG_IP],
        "event-detector.py": [inputs / "signature.csv", *flows],
    }


@pytest.mark.slow  # every script; the quick tier has packet-translator's own check
@pytest.mark.parametrize("script", list(script_runs(Path("."))))
def test_read_only_output_dir(script, read_only_dir, pipeline_inputs):
    result = run_script(
        script, *script_runs(pipeline_inputs)[script], "-o", read_only_dir, check=False
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: {read_only_dir}")
    assert "not writable" in lines[0]
    assert os.listdir(read_only_dir) == []


# --- how tshark is called, and the names it is given --------------------------------------


def test_no_shell_anywhere_in_the_code():
    """Every subprocess call in scripts/ takes a list; no shell=True, os.system or popen."""
    for path in SCRIPTS.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            assert name not in (
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            ), f"{path}:{node.lineno}: {name}"
            for keyword in node.keywords:
                assert not (keyword.arg == "shell" and ast.unparse(keyword.value) != "False"), (
                    f"{path}:{node.lineno}: shell=True"
                )
            if name.startswith("subprocess."):
                first = node.args[0] if node.args else None
                assert not isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)), (
                    f"{path}:{node.lineno}: a command string"
                )


def test_tshark_gets_an_argument_list(monkeypatch, tmp_path):
    """In-process, with Popen watched: the capture name reaches tshark as one argument."""
    from iotsig import packets

    calls = []
    real_popen = subprocess.Popen

    def watching(command, *args, **kwargs):
        calls.append((command, kwargs.get("shell", False)))
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", watching)
    capture = tmp_path / "x; touch pwned $(id).pcap"
    capture.write_bytes(TPLINK_CAPTURES[0].read_bytes())
    result = packets.translate(capture, tmp_path / "out.csv")
    assert result.packets == capinfos_count(TPLINK_CAPTURES[0])
    assert calls and all(isinstance(command, list) and not shell for command, shell in calls)
    assert [command for command, _ in calls if str(capture) in command]
    assert not (tmp_path / "pwned").exists() and sorted(os.listdir(tmp_path)) == sorted(
        [capture.name, "out.csv"]
    )


ODD_NAMES = [
    "with space.pcap",
    'it\'s "quoted".pcap',
    "-starts-with-dash.pcap",
    "prise électrique ☃.pcap",
]


def test_odd_file_names_through_every_stage(tmp_path):
    """Captures and an output folder with spaces, quotes, a leading dash and non-ASCII, run
    from their folder with relative names, as a person would."""
    folder = tmp_path / "my captures, 'odd' ☃"
    folder.mkdir()
    for name, source in zip(ODD_NAMES, TPLINK_CAPTURES + [TPLINK_CAPTURES[0]]):
        (folder / name).write_bytes(source.read_bytes())
    out = "-out put é"
    result = run_script(
        "main.py", "-q", "-o", f"./{out}", "TpLinkPlug", PLUG_IP, "--", *ODD_NAMES[:3], cwd=folder
    )
    assert result.stderr == ""
    written = {p.name for p in (folder / out).iterdir()}
    for name in ODD_NAMES[:3]:
        assert f"{name}.packets.csv" in written and f"{name}.flows.csv" in written
        rows = csvio.read_table(folder / out / f"{name}.packets.csv", PACKETS, columns=["capture"])
        assert set(rows["capture"]) == {name}
    assert MAIN_OUTPUTS | {"report.html"} <= written

    translated = run_script("packet-translator.py", "-q", "-o", "t", "--", ODD_NAMES[3], cwd=folder)
    assert translated.stderr == ""
    rows = csvio.read_table(folder / "t" / f"{ODD_NAMES[3]}.packets.csv", PACKETS)
    assert len(rows) == capinfos_count(TPLINK_CAPTURES[0])
    assert set(rows["capture"]) == {ODD_NAMES[3]}
