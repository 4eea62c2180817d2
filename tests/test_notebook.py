"""The example notebook (scripts/notebooks/iotsig-tour.ipynb) runs, cell by cell, in a real
Jupyter kernel of this environment: a cell that fails fails the test."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SCRIPTS

NOTEBOOK = SCRIPTS / "notebooks" / "iotsig-tour.ipynb"


@pytest.mark.slow
def test_the_example_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "detected" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figure was drawn
    nbformat.write(notebook, tmp_path / "executed.ipynb")  # (for a look when it fails)
