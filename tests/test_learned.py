"""evaluate.py --method ml|both: the random forest beside the signatures, on a small events
folder built from the shared captures (the same split and scoring as the signatures), and
on a long capture with its times file (--long)."""

from __future__ import annotations

import pytest

from iotsig import csvio
from iotsig.schema import EVALUATION, SCORED_EVENTS

from conftest import SHARED, run_script
from test_evaluate import _events_dir


@pytest.mark.slow
def test_both_methods_side_by_side_on_the_same_split(tmp_path):
    events, devices = _events_dir(tmp_path)
    output = tmp_path / "out"
    result = run_script("evaluate.py", events, devices, "--method", "both", "-o", output)
    table = csvio.read_table(output / "evaluation.csv", EVALUATION)
    assert list(table.columns) == EVALUATION.names
    assert sorted(set(table["method"])) == ["ml", "signature"]
    by_method = {
        m: part.set_index(part["device"] + "/" + part["event"])
        for m, part in table.groupby("method")
    }
    signature, ml = by_method["signature"], by_method["ml"]
    assert list(signature.index) == list(ml.index)
    # the same held-out recordings on both sides
    assert (signature["positives"] == ml["positives"]).all()
    assert (signature["negatives"] == ml["negatives"]).all()
    assert ml["note"].str.contains("random forest").all()
    text = (output / "evaluation.md").read_text()
    assert "## Signatures and the learned classifier, side by side" in text
    assert "- signature: strict" in text and "- ml: strict" in text
    assert "signature: macro F1 strict" in result.stdout and "ml: macro F1 strict" in result.stdout


@pytest.mark.slow
def test_ml_alone_writes_its_own_table(tmp_path):
    events, devices = _events_dir(tmp_path)
    output = tmp_path / "out"
    result = run_script("evaluate.py", events, devices, "--method", "ml", "-o", output)
    table = csvio.read_table(output / "evaluation.csv", EVALUATION)
    assert set(table["method"]) == {"ml"}
    assert (table["event_patterns"] == 0).all()
    assert "Macro F1 over 3 event(s)" in result.stdout
    assert not (output / "signatures").exists()


LONG = SHARED / "pcaps" / "long"


@pytest.mark.slow
def test_a_long_capture_learned_on_its_first_half_scored_on_its_second(tmp_path):
    camera = LONG / "blink-cam-01.pcap"
    if not camera.is_file():
        pytest.skip(f"the shared long captures are not there ({LONG})")
    result = run_script(
        "evaluate.py", "--long", camera, "--events", LONG / "blink-cam-01.ifttt-events.csv",
        "--event-column", "3", "--device-column", "2", "--timezone", "America/New_York",
        "--device-name", "blink-cam-01", "--device-ip", "192.168.1.129", "--method", "both",
        "-o", tmp_path,
    )  # fmt: skip
    for method in ("signature", "ml"):
        scored = csvio.read_table(tmp_path / f"scored-events.{method}.csv", SCORED_EVENTS)
        listed = scored[scored["kind"] == "listed"]
        assert 15 <= len(listed) <= 22  # the second half of the 39 listed times
        assert (listed["status"] == "found").sum() >= 10, method
        assert f"{method}: event_motion: " in result.stdout
    text = (tmp_path / "evaluation.md").read_text()
    assert "| signature | event_motion |" in text and "| ml | event_motion |" in text


def test_long_takes_a_times_file_and_the_devices_address(tmp_path):
    result = run_script("evaluate.py", "--long", tmp_path / "x.pcap", "-o", tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "evaluate.py: error: --long takes --events and --device-ip, and no EVENTS_DIR "
        "(see evaluate.py --help)"
    ]
