"""notebook.ipynb runs from top to bottom (on tiny data, offline, on CPU), shows its pictures and nothing a
reader should not have to scroll past: no progress bars, warnings or log lines, no unrounded numbers."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # executes the notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    with pytest.MonkeyPatch.context() as patch:
        # No weights there: the notebook takes its offline path (random weights with the real layout).
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("empty_torch_home")))
        client = NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _images(cell) -> list[dict]:
    pictures = ("image/png", "image/jpeg")
    return [output for output in cell.outputs if any(kind in output.get("data", {}) for kind in pictures)]


def _stream_text(notebook: nbformat.NotebookNode, name: str) -> str:
    return "".join(o.text for o in _outputs(notebook) if o.output_type == "stream" and o.name == name)


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_notebook_runs_without_errors(executed):
    assert [o.ename for o in _outputs(executed) if o.output_type == "error"] == []


def test_notebook_writes_nothing_to_stderr(executed):
    # Progress bars, Lightning's info lines and Python warnings all arrive on stderr.
    assert _stream_text(executed, "stderr") == ""


def test_notebook_prints_no_warnings(executed):
    assert "Warning" not in _stream_text(executed, "stdout")


def test_notebook_prints_rounded_numbers(executed):
    # A float printed as it is (20.79381561279297) has many decimals; a setting such as 0.0001 has four.
    assert re.findall(r"\d\.\d{5,}", _stream_text(executed, "stdout")) == []


def test_notebook_shows_the_comparison_and_the_age_distribution(executed):
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert len([cell for cell in code_cells[:-1] if _images(cell)]) == 2


def test_notebook_ends_with_the_pictures_of_both_evaluations(executed):
    last = [cell for cell in executed.cells if cell.cell_type == "code"][-1]
    captions = [o.data["text/markdown"] for o in last.outputs if "text/markdown" in o.get("data", {})]
    assert any(caption.startswith("`eval_age/") for caption in captions)
    assert any(caption.startswith("`eval_verify/") for caption in captions)
    assert len(_images(last)) == len(captions)  # every picture written is shown under its name
