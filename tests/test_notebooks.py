"""The notebooks in ``notebooks/``: each jupytext pair is in sync, saved with outputs, and runs.

Every notebook is a pair: ``NN_name.py`` (jupytext percent format, the source) and
``NN_name.ipynb`` (the same cells, executed and saved with outputs by ``python notebooks/run.py``).
These tests check that the two files of every pair hold the same markdown and code cells, that the
saved ``.ipynb`` ran to the end without an error, and execute every notebook top to bottom on a
fresh kernel: the notebooks check their own claims with ``assert`` cells, so a broken claim is an
execution error here. Execution uses ``notebooks/run.py``'s own loader and runner, with
``notebooks/`` as the working directory and the repository root first on the kernel's
``PYTHONPATH``, so the checkout's ``jaxcorr`` is the one tested.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = ["01_correlation_trees", "02_sparse_training", "03_ddfn_lower_bound", "04_wide_models",
            "05_real_data"]
#: Wall-clock limit (seconds) for one cell, and for a whole notebook.
CELL_TIMEOUT = 300
NOTEBOOK_TIMEOUT = 300
#: tests/conftest.py compiles with LLVM optimisation off, which saves compile time in the unit
#: tests but runs compiled code several times slower: the notebooks time training steps, so their
#: kernels compile normally.
_NO_OPT = "--xla_backend_optimization_level=0"


def _load_runner():
    spec = importlib.util.spec_from_file_location("notebooks_run", NOTEBOOK_DIR / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN = _load_runner()
SOURCES = RUN.sources()
IDS = [p.stem for p in SOURCES]


def _kernel_env() -> dict:
    env = RUN.kernel_env()
    flags = [f for f in env.get("XLA_FLAGS", "").split() if f != _NO_OPT]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def test_expected_notebooks_exist():
    assert IDS == EXPECTED
    saved = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert saved == EXPECTED, "every .ipynb must have a jupytext .py source, and vice versa"


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_pair_in_sync(source):
    error = RUN.sync_error(source)
    assert error is None, error


def test_sync_error_reports_an_edited_cell(tmp_path):
    source = tmp_path / SOURCES[0].name
    shutil.copy(SOURCES[0], source)
    shutil.copy(SOURCES[0].with_suffix(".ipynb"), source.with_suffix(".ipynb"))
    assert RUN.sync_error(source) is None
    text = source.read_text()
    last = text.rindex("# %%\n")
    source.write_text(text[:last] + "# %%\nprint('a new cell')\n\n" + text[last:])
    error = RUN.sync_error(source)
    assert error is not None and source.with_suffix(".ipynb").name in error
    assert "run python notebooks/run.py" in error
    source.with_suffix(".ipynb").unlink()
    assert "missing" in RUN.sync_error(source)


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_saved_with_outputs(source):
    import nbformat

    path = source.with_suffix(".ipynb")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    missing = [k for k, c in enumerate(code) if not c.get("execution_count")]
    assert not missing, f"{path.name}: code cells {missing} were never executed"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not run top to bottom"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was saved with an error output"
    assert path.stat().st_size < 1_000_000, f"{path.name} is larger than 1 MB"


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_executes(source):
    # Hard requirements of the test extra: a missing one is a failure, not a skip.
    nb = RUN.load(source)
    t0 = time.perf_counter()
    RUN.execute(nb, timeout=CELL_TIMEOUT, env=_kernel_env())  # raises at the first failing cell
    elapsed = time.perf_counter() - t0
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert elapsed < NOTEBOOK_TIMEOUT, f"{source.name} took {elapsed:.0f} s (limit {NOTEBOOK_TIMEOUT} s)"


@pytest.mark.parametrize("name", EXPECTED)
def test_every_notebook_shows_a_figure(name):
    """People would rather look: each saved notebook holds at least one rendered figure (PNG)."""
    nb = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    images = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{name}.ipynb shows no figure"
