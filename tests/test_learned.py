"""evaluate.py --method ml|both: the random forest beside the signatures, on a small events
folder built from the shared captures (the same split and scoring as the signatures)."""

from __future__ import annotations

import pytest

from iotsig import csvio
from iotsig.schema import EVALUATION

from conftest import run_script
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
