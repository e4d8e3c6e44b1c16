"""The notebooks in notebooks/: committed without outputs, and each runs top to bottom (nbclient).

The notebooks run concurrently, one kernel each, to keep the suite short; each is still reported on its own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
TIMEOUT = 180  # seconds per cell; each notebook takes well under a minute in all


def test_the_notebooks_are_there():
    assert {"01_compile_and_compare", "02_pass_by_pass", "03_engine_build_inspect_save_load", "04_plugins"} <= set(IDS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs; strip them before committing"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run every notebook (concurrently) in its own scratch directory; notebook -> error or None."""

    def run(path: Path) -> str | None:
        nb = nbformat.read(path, as_version=4)
        cwd = tmp_path_factory.mktemp(path.stem)
        client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                         resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()
        except Exception as e:  # CellExecutionError names the cell and carries the traceback
            return f"{type(e).__name__}: {e}"
        return None

    with ThreadPoolExecutor(max_workers=len(NOTEBOOKS) or 1) as pool:
        return dict(zip(NOTEBOOKS, pool.map(run, NOTEBOOKS)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_top_to_bottom(path, executed):
    error = executed[path]
    assert error is None, f"{path.name} failed:\n{error}"
