"""The library from Python (iotsig.read_packets / read_flows / learn / detect): the same
frames and files as the commands, on the real captures, and nothing written or changed in
the caller's process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

import pandas as pd
import pytest

import iotsig
from iotsig import csvio
from iotsig.api import typed
from iotsig.schema import BURSTS, DETECTIONS, FLOWS, PACKETS, SIGNATURE

import long_capture
from conftest import CAPTURES, DATA, PLUG_IP, REPO, capinfos_count, run_script

CAPTURE = DATA / "1724059939.pcap"
PLUG_EVENTS = CAPTURES / "events" / "TpLinkPlug"


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """packet-translator, stream-identifier (via main.py's first steps) on one capture."""
    folder = tmp_path_factory.mktemp("commands")
    run_script("packet-translator.py", CAPTURE, "-o", folder, "-q")
    packets_csv = folder / f"{CAPTURE.name}.packets.csv"
    run_script("stream-identifier.py", packets_csv, "--device-ip", PLUG_IP, "-o", folder, "-q")
    return packets_csv, folder / f"{CAPTURE.name}.flows.csv"


def test_read_packets_gives_every_packet_typed_as_the_csv(commands, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written where the caller works
    frame = iotsig.read_packets(CAPTURE)
    assert len(frame) == capinfos_count(CAPTURE)
    assert list(frame.columns) == PACKETS.names
    assert str(frame["frame_number"].dtype) == "Int64"
    assert frame["frame_number"].tolist() == list(range(1, len(frame) + 1))
    same(frame, typed(csvio.read_table(commands[0], PACKETS), PACKETS))
    assert list(tmp_path.iterdir()) == []


def test_read_flows_of_a_capture_a_packets_csv_and_a_dataframe(commands, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packets_csv, flows_csv = commands
    expected = typed(csvio.read_table(flows_csv, FLOWS), FLOWS)
    from_capture = iotsig.read_flows(CAPTURE, device_ip=PLUG_IP)
    same(from_capture, expected)
    assert str(from_capture["first_frame"].dtype) == "Int64"
    same(iotsig.read_flows(packets_csv, device_ip=[PLUG_IP]), expected)
    same(iotsig.read_flows(iotsig.read_packets(CAPTURE), device_ip=(PLUG_IP,)), expected)
    same(iotsig.read_flows(flows_csv), expected)
    bursts = iotsig.read_bursts(CAPTURE, device_ip=PLUG_IP)
    same(bursts, typed(csvio.read_table(iotsig.api.flows.bursts_beside(flows_csv), BURSTS), BURSTS))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="device_ip: 'plug' is not an IPv4 or IPv6 address"):
        iotsig.read_flows(CAPTURE, device_ip="plug")
    with pytest.raises(TypeError, match="device_ip: an address or a sequence"):
        iotsig.read_flows(CAPTURE, device_ip=192)
    with pytest.raises(ValueError, match="idle_timeout: a positive number"):
        iotsig.read_flows(CAPTURE, idle_timeout=0)
    with pytest.raises(TypeError, match="source: a file path"):
        iotsig.read_flows(42)
    with pytest.raises(ValueError, match="device_mac: 'x' is not a MAC address"):
        iotsig.read_packets(CAPTURE, device_mac="x")
    with pytest.raises(ValueError, match="recordings: none given"):
        iotsig.learn([], device="plug", device_ip=PLUG_IP)
    with pytest.raises(ValueError, match="source: the packets DataFrame lacks column"):
        iotsig.read_flows(pd.DataFrame({"ts": [1.0]}))
    with pytest.raises(iotsig.ToolError, match="no-such.pcap"):
        iotsig.read_packets("no-such.pcap")


def test_a_damaged_capture_is_read_with_a_warning(tmp_path):
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(CAPTURE.read_bytes()[:-100])  # the last packet cut short
    with pytest.warns(iotsig.IotsigWarning, match="cut.pcap"):
        frame = iotsig.read_packets(damaged)
    assert len(frame) == capinfos_count(CAPTURE) - 1


@pytest.mark.slow
def test_learn_and_detect_give_the_commands_files(tmp_path, monkeypatch):
    """learn on three recordings of each of the plug's events (the other event as the
    baseline) writes main.py's three files byte for byte; detect on the held-out ones gives
    event-detector's detections."""
    toggle = sorted((PLUG_EVENTS / "toggle").glob("*.pcap"))
    boot = sorted((PLUG_EVENTS / "boot").glob("*.pcap"))
    command = tmp_path / "command"
    run_script(
        "main.py", "TpLinkPlug", PLUG_IP, *toggle[:3], "--idle", *boot[:3], "--event", "toggle",
        "-o", command, "-q", "--no-report",
    )  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with warnings.catch_warnings():
        warnings.simplefilter("error", iotsig.IotsigWarning)  # none expected here
        signature = iotsig.learn(
            toggle[:3], device="TpLinkPlug", device_ip=PLUG_IP, event="toggle", baseline=boot[:3]
        )
    assert list(work.iterdir()) == []
    paths = signature.write(tmp_path / "api")
    for kind, path in paths.items():
        assert path.read_bytes() == (command / path.name).read_bytes(), kind
    assert signature.pattern_text() == (command / "pattern.txt").read_text()
    assert signature.profile()["device-info"]["ipv4"] == PLUG_IP
    assert list(signature.profile()["interactions"]) == ["toggle"]
    same(
        signature.patterns, typed(csvio.read_table(command / "signature.csv", SIGNATURE), SIGNATURE)
    )

    held_out = [toggle[3], boot[3]]
    run_script(
        "event-detector.py", command / "signature.csv", *held_out, "-o", tmp_path / "det", "-q"
    )
    expected = typed(csvio.read_table(tmp_path / "det" / "detections.csv", DETECTIONS), DETECTIONS)
    read = iotsig.read_signature(command / "signature.csv")
    found = pd.concat([iotsig.detect(c, read) for c in held_out], ignore_index=True)
    same(found, expected)
    assert found["status"].eq("detected").sum() == 1  # the toggle, not the boot
    # a learned Signature in memory finds the same, its source column aside
    in_memory = iotsig.detect(toggle[3], signature)
    same(in_memory.drop(columns="signature"), expected.iloc[:1].drop(columns="signature"))
    assert list(work.iterdir()) == []


def test_learn_from_flow_dataframes(tmp_path):
    toggle = sorted((PLUG_EVENTS / "toggle").glob("*.pcap"))[:3]
    frames = []
    for capture in toggle:
        frame = iotsig.read_flows(capture, device_ip=PLUG_IP)
        frame.attrs["name"] = capture.name
        frames.append(frame)
    from_frames = iotsig.learn(frames, device="TpLinkPlug", device_ip=PLUG_IP, event="toggle")
    from_captures = iotsig.learn(toggle, device="TpLinkPlug", device_ip=PLUG_IP, event="toggle")
    settings = ["idle_timeout", "max_duration", "burst_gap"]  # (known only when built here)
    same(
        from_frames.patterns.drop(columns=settings),
        from_captures.patterns.drop(columns=settings),
    )
    assert from_frames.event == "toggle" and "toggle" in repr(from_frames)
    # detect on flows in memory (and their bursts) as on the capture
    held_out = sorted((PLUG_EVENTS / "toggle").glob("*.pcap"))[3]
    packets = iotsig.read_packets(held_out)  # (read once for both)
    flows = iotsig.read_flows(packets, device_ip=PLUG_IP)
    bursts = iotsig.read_bursts(packets, device_ip=PLUG_IP)
    in_memory = iotsig.detect(flows, from_captures, bursts=bursts)
    on_file = iotsig.detect(held_out, from_captures)
    same(in_memory.drop(columns="capture"), on_file.drop(columns="capture"))
    assert list(in_memory["status"]) == ["detected"]


def test_import_changes_nothing_in_the_callers_process():
    """The commands tune the allocator and thread pools for themselves; a notebook that
    imports iotsig keeps its own."""
    code = (
        "import json, os, pyarrow as pa\n"
        "before = (dict(os.environ), pa.default_memory_pool().backend_name)\n"
        "import iotsig\n"
        f"iotsig.read_flows({str(CAPTURE)!r})\n"
        "after = (dict(os.environ), pa.default_memory_pool().backend_name)\n"
        "print(json.dumps([before == after, before[1]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    unchanged, pool = json.loads(result.stdout)
    assert unchanged, "import iotsig changed os.environ or pyarrow's memory pool"
    assert pool != "system"  # (pyarrow's own allocator: what the commands change)


@pytest.mark.slow
def test_the_readme_example_runs():
    """README "From Python": its example, executed as it is written, from the repo."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## From Python") :]
    section = section[: section.index("\n## ", 5)]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "iotsig.learn" in code and "iotsig.detect" in code
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "detected" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    long_capture.missing_inputs() is not None, reason=str(long_capture.missing_inputs())
)
def test_learn_from_a_long_capture_and_its_times(tmp_path, monkeypatch):
    """times=: each listed time a recording cut from the long capture, as main.py --events
    cuts them: the same three files."""
    built = long_capture.small_long_capture(tmp_path / "built")
    run_script(
        "main.py", "TapoLight", "192.168.1.231", built.pcap, "--events", built.times,
        "-o", tmp_path / "command", "-q", "--no-report",
    )  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    signature = iotsig.learn(
        built.pcap, device="TapoLight", device_ip="192.168.1.231", times=built.times
    )
    assert list(work.iterdir()) == []
    for kind, path in signature.write(tmp_path / "api").items():
        assert path.read_bytes() == (tmp_path / "command" / path.name).read_bytes(), kind
    with pytest.raises(TypeError, match="with times=, captures or flows CSVs"):
        iotsig.learn(
            iotsig.read_flows(built.pcap), device="TapoLight", device_ip="192.168.1.231",
            times=built.times,
        )  # fmt: skip
