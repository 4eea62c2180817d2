"""A capture read from standard input, as `tshark -r -` reads it: `-` (or /dev/stdin) on
packet-translator.py's and main.py's command lines. Nothing is read from the pipe before
tshark (a header check would take its first bytes); the outputs are named stdin.*."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import PLUG_IP, SCRIPTS, TPLINK_CAPTURES, run_script

CAPTURE = TPLINK_CAPTURES[0]


def piped(script: str, *args, source=CAPTURE, **options) -> subprocess.CompletedProcess:
    """`cat SOURCE | SCRIPT ARGS`: standard input a pipe, as in a shell."""
    cat = subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE)
    try:
        return subprocess.run(
            [sys.executable, str(SCRIPTS / script), *map(str, args)],
            stdin=cat.stdout,
            capture_output=True,
            text=True,
            timeout=300,
            **options,
        )
    finally:
        cat.stdout.close()
        cat.wait()


def packets(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def from_the_file(tmp_path) -> pd.DataFrame:
    run_script("packet-translator.py", CAPTURE, "-o", tmp_path / "file", "-q")
    return packets(tmp_path / "file" / f"{CAPTURE.name}.packets.csv")


def test_a_piped_capture_gives_the_rows_of_the_file(tmp_path):
    result = piped("packet-translator.py", "-", "-o", tmp_path / "pipe")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"wrote {tmp_path / 'pipe' / 'stdin.packets.csv'} (50 packets)" in result.stdout
    rows = packets(tmp_path / "pipe" / "stdin.packets.csv")
    expected = from_the_file(tmp_path)
    assert len(rows) == len(expected) == 50
    assert set(rows["capture"]) == {"stdin"}
    pd.testing.assert_frame_equal(rows.drop(columns="capture"), expected.drop(columns="capture"))


def test_dev_stdin_redirected_from_the_file(tmp_path):
    with open(CAPTURE, "rb") as source:
        result = subprocess.run(
            [sys.executable, str(SCRIPTS / "packet-translator.py"), "/dev/stdin"]
            + ["-o", str(tmp_path / "redirect"), "-q"],
            stdin=source,
            capture_output=True,
            text=True,
        )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = packets(tmp_path / "redirect" / "stdin.packets.csv")
    expected = from_the_file(tmp_path)
    pd.testing.assert_frame_equal(rows.drop(columns="capture"), expected.drop(columns="capture"))


@pytest.mark.slow  # three captures, one after the other (standard input: no workers)
def test_stdin_among_other_captures(tmp_path):
    others = TPLINK_CAPTURES[1:]
    result = piped("packet-translator.py", others[0], "-", others[1], "-o", tmp_path, "-q")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.glob("*.packets.csv"))
    assert names == sorted([f"{c.name}.packets.csv" for c in others] + ["stdin.packets.csv"])
    assert len(packets(tmp_path / "stdin.packets.csv")) == 50


@pytest.mark.slow  # main.py twice
def test_main_reads_its_one_capture_from_stdin(tmp_path):
    result = piped("main.py", "plug", PLUG_IP, "-", "-o", tmp_path / "pipe", "--no-report", "-q")
    assert result.returncode == 0, result.stderr
    run_script("main.py", "plug", PLUG_IP, CAPTURE, "-o", tmp_path / "file", "--no-report", "-q")
    assert sorted(p.name for p in (tmp_path / "pipe").glob("*.csv")) == [
        "signature.csv",
        "stdin.bursts.csv",
        "stdin.flows.csv",
        "stdin.packets.csv",
    ]
    signature = packets(tmp_path / "pipe" / "signature.csv")
    assert signature.equals(packets(tmp_path / "file" / "signature.csv"))
    assert len(signature) > 0


def test_stdin_given_twice_is_one_error_line(tmp_path):
    result = piped("packet-translator.py", "-", "/dev/stdin", "-o", tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "packet-translator.py: error: 2 captures share the name stdin (/dev/stdin, /dev/stdin): "
        f"their outputs would overwrite each other in {tmp_path}/; give each a file name of "
        "its own"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_terminal_on_stdin_is_one_error_line_not_a_wait(tmp_path):
    leader, follower = os.openpty()
    try:
        result = subprocess.run(
            [sys.executable, str(SCRIPTS / "packet-translator.py"), "-", "-o", str(tmp_path)],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "packet-translator.py: error: /dev/stdin: standard input is a terminal: pipe a capture "
        "into it (cat capture.pcap | packet-translator.py - -o DIR)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # main.py, then event-detector
def test_event_detector_finds_the_event_in_a_piped_capture(tmp_path):
    others = TPLINK_CAPTURES[1:]
    run_script("main.py", "plug", PLUG_IP, *others, "-o", tmp_path / "learned", "--no-report")
    signature = tmp_path / "learned" / "signature.csv"
    result = piped("event-detector.py", signature, "-", "-o", tmp_path / "found")
    assert result.returncode == 0, result.stderr
    assert "stdin: 1 detection(s)" in result.stdout
    detections = packets(tmp_path / "found" / "detections.csv")
    assert detections["capture"].tolist() == ["stdin"]
    assert (tmp_path / "found" / "stdin.flows.csv").is_file()


def test_what_is_not_a_capture_is_refused_on_its_way_through_the_pipe(tmp_path):
    # tshark takes text for some format of its own: "hello" gave one packet, silently.
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for source, problem in (
        (text, "not a pcap or pcapng capture (unknown file header 68656c6c)"),
        (empty, "nothing came through the pipe: not a capture"),
    ):
        result = piped("packet-translator.py", "-", "-o", tmp_path / "out", source=source)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [f"packet-translator.py: error: /dev/stdin: {problem}"]
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_fifo_of_text_is_refused_and_a_compressed_pipe_is_read(tmp_path):
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"echo hello > '{fifo}'"])
    try:
        result = run_script("packet-translator.py", fifo, "-o", tmp_path, check=False, timeout=60)
    finally:
        writer.wait(timeout=10)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"packet-translator.py: error: {fifo}: not a pcap or pcapng capture (unknown file "
        "header 68656c6c)"
    ]
    packed = tmp_path / "capture.pcap.gz"
    packed.write_bytes(gzip.compress(CAPTURE.read_bytes()))
    result = piped("packet-translator.py", "-", "-o", tmp_path / "gz", "-q", source=packed)
    assert result.returncode == 0, result.stderr
    rows = packets(tmp_path / "gz" / "stdin.packets.csv")
    expected = from_the_file(tmp_path)
    pd.testing.assert_frame_equal(rows.drop(columns="capture"), expected.drop(columns="capture"))
