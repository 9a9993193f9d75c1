"""examples/quickstart.ipynb runs from top to bottom (nbclient), so it cannot rot."""

import os

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "examples", "quickstart.ipynb")


def test_notebook_is_saved_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def outputs_text(cell):
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # The kernel is a new process: it imports this checkout of portrait_keras.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in notebook.cells if c.cell_type == "code"]
    everything = "".join(outputs_text(c) for c in code)
    assert "Epoch 1: piq=" in everything  # PIQCallback ran at the end of the epoch
    search_cell = next(c for c in code if "rank_list" in c.source)
    assert "query:" in outputs_text(search_cell)
    assert any("image/png" in o.get("data", {}) for o in search_cell.outputs)
    interpret_cell = next(c for c in code if "format_description" in c.source)
    for aspect in ("appearance", "posture", "emotion"):
        assert aspect in outputs_text(interpret_cell)
