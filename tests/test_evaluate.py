"""evaluate.py: failure tolerance, the confusion table, strict and per-device figures, and the
user protocol; on small events folders built from the shared captures."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from iotsig import csvio, evaluation
from iotsig.schema import EVALUATION

from conftest import run_script

try:
    from conftest import SHARED
except ImportError:  # before conftest had it
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"

EVENTS = SHARED / "pcaps" / "events"
PLUG_IP = "192.168.1.135"
SMALL = {
    ("TpLinkPlug", "toggle"): 3,
    ("TpLinkPlug", "boot"): 3,
    ("TpLinkPlugSmartThings", "toggle"): 3,
}


def _events_dir(base: Path, wrong: set[str] = frozenset()) -> tuple[Path, Path]:
    """A small EVENTS_DIR (the first recordings of each event, copied) and its devices.yaml;
    the devices in `wrong` get an address that never appears in their captures."""
    if not EVENTS.is_dir():
        pytest.skip(
            f"the shared event captures are not there ({EVENTS}): they sit beside "
            "the repo on the development machines"
        )
    events = base / "events"
    for (device, event), count in SMALL.items():
        folder = events / device / event
        folder.mkdir(parents=True)
        for capture in sorted((EVENTS / device / event).glob("*.pcap"))[:count]:
            shutil.copy(capture, folder / capture.name)
    devices = base / "devices.yaml"
    devices.write_text(
        "".join(
            f"{device}:\n  ipv4: {'192.168.1.99' if device in wrong else PLUG_IP}\n"
            for device in sorted({d for d, _ in SMALL})
        )
    )
    return events, devices


def _table(output: Path) -> pd.DataFrame:
    table = csvio.read_table(output / "evaluation.csv", EVALUATION)
    assert list(table.columns) == EVALUATION.names
    return table.set_index(table["device"] + "/" + table["event"])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _events_dir(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def baseline_run(small, tmp_path_factory):
    events, devices = small
    output = tmp_path_factory.mktemp("baseline") / "out"
    result = run_script("evaluate.py", events, devices, "-o", output)
    return result, output


# --- without captures: who is a negative ----------------------------------------------------


def test_device_app_folders_with_the_same_address_are_one_physical_device():
    devices = {
        "HueLight": "192.168.1.141",
        "HueLightEssentials": "192.168.1.141",
        "TapoLight": "192.168.1.231",
        "TapoLightX": "192.168.1.9",
        "Hue": "192.168.1.7",
    }
    assert evaluation.same_device(devices, "HueLight", "HueLightEssentials")
    assert evaluation.same_device(devices, "HueLightEssentials", "HueLight")
    assert not evaluation.same_device(devices, "TapoLight", "TapoLightX")  # another address
    assert not evaluation.same_device(devices, "HueLight", "Hue")
    assert not evaluation.same_device(devices, "HueLight", "TapoLight")


def _score(protocol: str):
    devices = {"Plug": "10.0.0.2", "PlugApp": "10.0.0.2", "Cam": "10.0.0.3"}
    captures = []
    for device, event in (
        ("Plug", "toggle"),
        ("Plug", "boot"),
        ("PlugApp", "toggle"),
        ("Cam", "boot"),
    ):
        for number, train in enumerate((True, False)):
            captures.append(evaluation.Capture(device, event, Path(f"{event}{number}.pcap"), train))
    result = evaluation.EventResult("Plug", "toggle", captures[:2])
    # detected as Plug/toggle: its held-out recording, and both PlugApp/toggle recordings
    detected = {
        c.name: {("Plug", "toggle")}
        for c in captures
        if (c.device, c.event) == ("PlugApp", "toggle")
        or ((c.device, c.event) == ("Plug", "toggle") and not c.train)
    }
    evaluation.score(result, captures, detected, devices, protocol)
    return result, evaluation.metrics(result), evaluation.metrics(result, per_device=True)


def test_strict_counts_another_apps_recordings_as_negatives_per_device_leaves_them_out():
    result, strict, per_device = _score("baseline")
    # negatives: Plug/boot held out (1), PlugApp/toggle (2), Cam/boot (2)
    assert (strict["tp"], strict["fn"], strict["fp"], strict["tn"]) == (1, 0, 2, 3)
    assert sorted(result.left_out) == ["PlugApp/toggle/toggle0.pcap", "PlugApp/toggle/toggle1.pcap"]
    assert (per_device["fp"], per_device["tn"], per_device["f1"]) == (0, 3, 1.0)
    assert math.isclose(strict["f1"], 0.5)


def test_user_protocol_negatives_are_the_physical_devices_held_out_recordings():
    result, strict, per_device = _score("user")
    # Plug/boot held out (1) and PlugApp/toggle held out (1); Cam is another device
    assert (strict["tp"], strict["fp"], strict["tn"]) == (1, 1, 1)
    assert result.left_out == ["PlugApp/toggle/toggle1.pcap"]
    assert (per_device["fp"], per_device["tn"]) == (0, 1)


# --- real runs ------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_event_that_cannot_be_learned_is_reported_and_the_others_still_run(tmp_path):
    events, devices = _events_dir(tmp_path, wrong={"TpLinkPlugSmartThings"})
    output = tmp_path / "out"
    result = run_script("evaluate.py", events, devices, "-o", output)  # exit status 0
    warnings = [line for line in result.stderr.splitlines() if "not evaluated" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "evaluate.py: warning: TpLinkPlugSmartThings/toggle: not "
        "evaluated: device IP 192.168.1.99 never appears"
    )
    table = _table(output)
    failed = table.loc["TpLinkPlugSmartThings/toggle"]
    assert failed["status"] == "failed" and "never appears" in failed["note"]
    assert pd.isna(failed["f1"]) and pd.isna(failed["tp"])
    for label in ("TpLinkPlug/toggle", "TpLinkPlug/boot"):
        assert table.loc[label, "status"] == "evaluated" and table.loc[label, "tp"] == 1
    markdown = (output / "evaluation.md").read_text()
    assert (
        "| TpLinkPlugSmartThings | toggle | 3 (2 / -) | 0 (+0 background) | failed: device "
        "IP 192.168.1.99 never appears" in markdown
    )
    assert "Macro F1 over 2 event(s)" in markdown and "(1 failed event(s) left out" in markdown
    assert "Macro F1 over 2 event(s)" in result.stdout.splitlines()[-1]


def test_every_event_but_none_learned_is_an_error(tmp_path):
    if not EVENTS.is_dir():
        pytest.skip(f"the shared event captures are not there ({EVENTS})")
    events = tmp_path / "events" / "TpLinkPlug" / "toggle"
    events.mkdir(parents=True)
    for capture in sorted((EVENTS / "TpLinkPlug" / "toggle").glob("*.pcap"))[:2]:
        shutil.copy(capture, events / capture.name)
    devices = tmp_path / "devices.yaml"
    devices.write_text("TpLinkPlug:\n  ipv4: 192.168.1.99\n")
    result = run_script(
        "evaluate.py", tmp_path / "events", devices, "-o", tmp_path / "out", check=False
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "evaluate.py: error: no event could be evaluated (see the warnings above)"
    )
    assert _table(tmp_path / "out").loc["TpLinkPlug/toggle", "status"] == "failed"


@pytest.mark.slow
def test_confusion_table_counts_each_events_held_out_recordings(baseline_run):
    _, output = baseline_run
    table = _table(output)
    confusion = pd.read_csv(output / "confusion.csv").set_index("event")
    labels = list(table.index)
    assert list(confusion.columns) == ["held_out", *labels, "nothing"]
    for label in labels:
        row = confusion.loc[label]
        assert row["held_out"] == table.loc[label, "positives"] == 1
        assert row[label] == table.loc[label, "tp"]
        assert row["nothing"] == int(sum(row[labels]) == 0)
    markdown = (output / "evaluation.md").read_text()
    assert "## Confusion" in markdown
    assert "| event | held out | " + " | ".join(labels) + " | nothing |" in markdown


@pytest.mark.slow
def test_strict_and_per_device_figures(baseline_run):
    result, output = baseline_run
    table = _table(output)
    # strict: the held-out recordings of the device's other event and every recording of
    # the other folders; per device: without the other app's recordings of the same event
    expected = {
        "TpLinkPlug/toggle": (4, 1),
        "TpLinkPlug/boot": (4, 4),
        "TpLinkPlugSmartThings/toggle": (6, 3),
    }
    for label, (strict, per_device) in expected.items():
        row = table.loc[label]
        assert row["protocol"] == "baseline" and row["status"] == "evaluated"
        assert (row["negatives"], row["negatives_per_device"]) == (strict, per_device)
        assert row["fp"] + row["tn"] == strict
        assert row["fp_per_device"] + row["tn_per_device"] == per_device
        assert row["fp_per_device"] <= row["fp"]
        assert row["f1_per_device"] >= row["f1"]
    markdown = (output / "evaluation.md").read_text()
    assert (
        "| F1 | negatives per device | FP per device | precision per device | F1 per "
        "device |" in markdown
    )
    strict_macro = table["f1"].mean()
    per_device_macro = table["f1_per_device"].mean()
    summary = (
        f"Macro F1 over 3 event(s): strict {strict_macro:.3f}, per device {per_device_macro:.3f}."
    )
    assert summary in markdown and result.stdout.splitlines()[-1].endswith(summary)
    assert "left out of the per-device figure" in markdown


@pytest.mark.slow
def test_user_protocol_learns_as_main_py_does_and_reports(small, tmp_path):
    events, devices = small
    output = tmp_path / "out"
    result = run_script("evaluate.py", events, devices, "-o", output, "--protocol", "user")
    table = _table(output)
    assert set(table["protocol"]) == {"user"}
    assert (table["background_patterns"] == 0).all()  # no baseline
    expected = {
        "TpLinkPlug/toggle": (2, 1),
        "TpLinkPlug/boot": (2, 2),
        "TpLinkPlugSmartThings/toggle": (2, 1),
    }
    for label, (strict, per_device) in expected.items():
        assert (table.loc[label, "negatives"], table.loc[label, "negatives_per_device"]) == (
            strict,
            per_device,
        )
    markdown = (output / "evaluation.md").read_text()
    assert "Protocol: user" in markdown and "## Confusion" in markdown
    assert "Macro F1 over 3 event(s): strict" in result.stdout.splitlines()[-1]

    # The signature is main.py's, from the same training recordings.
    learned = output / "signatures" / "TpLinkPlug" / "toggle"
    recordings = (learned / "pattern.txt").read_text().splitlines()[1]
    names = recordings.split("(", 1)[1].rstrip(")").split(", ")
    train = [events / "TpLinkPlug" / "toggle" / name for name in names]
    assert len(train) == 2 and all(p.is_file() for p in train)
    run_script(
        "main.py",
        "TpLinkPlug",
        PLUG_IP,
        *train,
        "--event",
        "toggle",
        "--no-report",
        "-o",
        tmp_path / "main",
        "-q",
    )
    for name in ("signature.csv", "pattern.txt", "profile.yaml"):
        assert (tmp_path / "main" / name).read_bytes() == (learned / name).read_bytes(), name


def test_user_protocol_refuses_a_baseline(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text(f"TpLinkPlug:\n  ipv4: {PLUG_IP}\n")
    result = run_script(
        "evaluate.py",
        tmp_path,
        devices,
        "--protocol",
        "user",
        "--baseline",
        "other-events",
        "-o",
        tmp_path / "out",
        check=False,
    )
    assert result.returncode == 1
    assert "--protocol user learns as main.py does, with no baseline" in result.stderr
