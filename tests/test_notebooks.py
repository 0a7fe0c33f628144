"""notebooks/*.ipynb run top to bottom in a kernel of this Python (fast mode, JAXGEN_NOTEBOOK_FAST=1: the configs'
:smoke sizes for 2 steps), importing this checkout, and show their figures; the files are what notebooks/build.py
writes, without outputs. A cell that raises fails the test (nbclient's CellExecutionError)."""
import os

import nbclient
import nbformat
import pytest

from notebooks import build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Pictures each notebook must display (its show() calls and plots) when every cell ran.
MIN_IMAGES = {"glow": 4, "nvae": 3, "lmconv": 5, "stylegan2": 5, "compare": 1}


def execute(name, workdir):
  """The notebook `name` executed in fast mode with run directories under `workdir`; raises if a cell raises."""
  notebook = nbformat.read(os.path.join(REPO, "notebooks", f"{name}.ipynb"), as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(workdir)}}).execute()
  return notebook


@pytest.fixture
def fast_kernel_env(tmp_path, monkeypatch):
  """The kernel inherits these: fast mode, this checkout first on the path, JAX_DISABLE_MOST_OPTIMIZATIONS (from
  conftest.py) and, where the user set JAX_COMPILATION_CACHE_DIR, the cache for every compile."""
  monkeypatch.setenv("JAXGEN_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("JAXGEN_NOTEBOOK_DIR", str(tmp_path / "runs"))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("name", build.NOTEBOOKS)
def test_notebook_runs_top_to_bottom_and_shows_its_figures(name, fast_kernel_env):
  notebook = execute(name, fast_kernel_env)
  cells = [c for c in notebook.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in cells)  # every cell ran
  images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
  assert len(images) >= MIN_IMAGES[name], [o.get("text", "")[-300:] for c in cells for o in c.outputs]


def test_notebooks_are_built_by_build_py_without_outputs():
  for name in build.NOTEBOOKS:
    stored = nbformat.read(os.path.join(REPO, "notebooks", f"{name}.ipynb"), as_version=4)
    assert stored.cells == build.build(name).cells, f"notebooks/{name}.ipynb is stale: run python notebooks/build.py"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in stored.cells if c.cell_type == "code")
