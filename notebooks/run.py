#!/usr/bin/env python
"""Execute the jaxcorr notebooks from their jupytext sources and save them with outputs.

Every notebook is a pair in this folder: ``NN_name.py`` (jupytext percent format: the source you
edit, review and lint) and ``NN_name.ipynb`` (the same cells, executed, saved with outputs: what
readers open). This script rebuilds each ``.ipynb`` from its ``.py``:

    python notebooks/run.py              # execute and save every notebook
    python notebooks/run.py 01 03        # only those whose name starts with 01 or 03
    python notebooks/run.py --check      # execute nothing: exit 1 if a pair is out of sync
    python notebooks/run.py --force      # save even where only volatile output changed

A notebook is saved only when what it says changed: its cells, or their outputs once the volatile
parts are set aside (every digit of a text output, as timings and addresses are; the bytes of an
image; the kernel's version in the metadata). So running this script on an unchanged checkout
leaves the tracked ``.ipynb`` files as they are.

Each notebook runs top to bottom on a fresh ``python3`` kernel with ``notebooks/`` as its working
directory and the repository root first on ``PYTHONPATH`` (so the checkout's ``jaxcorr`` is the one
imported, installed or not). Every claim a notebook's text makes is checked by an ``assert`` in a
cell, so a broken claim stops the run with the failing cell's traceback and nothing is saved.
``tests/test_notebooks.py`` checks that the pairs are in sync and executes the notebooks.
Requirements: ``pip install -e ".[notebooks]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources(prefixes=()) -> list[Path]:
    """The notebook sources ``NN_name.py`` in this folder, sorted, optionally filtered by prefix."""
    paths = sorted(HERE.glob("[0-9][0-9]_*.py"))
    return [p for p in paths if not prefixes or any(p.stem.startswith(s) for s in prefixes)]


def load(source: Path):
    """Read a jupytext ``.py`` source as an unexecuted notebook with stable cell ids.

    Args:
      source: path of a ``NN_name.py`` percent-format file.

    Returns:
      An ``nbformat`` v4 notebook whose cells are ``cell-00``, ``cell-01``, ... (so re-saving only
      changes what really changed) with the ``python3`` kernel.
    """
    import jupytext

    nb = jupytext.read(source, fmt="py:percent")
    for k, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{k:02d}"
        cell["metadata"] = {}
    nb.metadata = {"kernelspec": dict(KERNEL), "language_info": {"name": "python"}}
    return nb


def cells(nb) -> list[tuple[str, str]]:
    """The (cell type, source) of every markdown and code cell: what a pair must agree on."""
    return [(c.cell_type, c.source.strip("\n")) for c in nb.cells
            if c.cell_type in ("markdown", "code")]


def sync_error(source: Path) -> str | None:
    """Why ``source`` and its saved ``.ipynb`` disagree (a message naming the first differing
    cell and the command that fixes it), or ``None`` when their cells match."""
    import nbformat

    saved = source.with_suffix(".ipynb")
    if not saved.exists():
        return f"{saved.name} is missing: run python notebooks/run.py {source.stem[:2]}"
    want, got = cells(load(source)), cells(nbformat.read(saved, as_version=4))
    for k, (w, g) in enumerate(zip(want, got)):
        if w != g:
            return (f"{saved.name} cell {k} differs from {source.name} (a {w[0]} cell starting "
                    f"{w[1][:60]!r}): run python notebooks/run.py {source.stem[:2]}")
    if len(want) != len(got):
        return (f"{saved.name} has {len(got)} cells, {source.name} has {len(want)}: run "
                f"python notebooks/run.py {source.stem[:2]}")
    return None


def _output_shape(out: dict):
    """An output without its volatile parts: digits of text masked, images by their type alone."""
    data = out.get("data", {})
    text = out.get("text", "") if "text" in out else data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return (out.get("output_type"), out.get("name"), re.sub(r"\d", "#", text),
            sorted(k for k in data if k.startswith("image/")), out.get("ename"))


def signature(nb) -> str:
    """What a notebook says, for deciding whether to save it: each cell's type, source and outputs
    (:func:`_output_shape`), and the kernel's name (not its version)."""
    rows = [(c.cell_type, c.source.strip("\n"), [_output_shape(o) for o in c.get("outputs", [])])
            for c in nb.cells]
    return json.dumps([nb.metadata.get("kernelspec", {}).get("name"), rows], sort_keys=True, default=str)


def kernel_env(base=None) -> dict:
    """The kernel's environment: ``base`` (default ``os.environ``) with the repository root first on
    ``PYTHONPATH`` and ``JAX_PLATFORMS=cpu`` unless set."""
    env = dict(os.environ if base is None else base)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + paths)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def execute(nb, *, timeout: int = 600, env=None):
    """Run every cell of ``nb`` in place on a fresh ``python3`` kernel in ``notebooks/``.

    Args:
      nb: an ``nbformat`` notebook (for example from :func:`load`).
      timeout: seconds allowed per cell.
      env: the kernel's environment; default :func:`kernel_env` ``()``.

    Returns:
      ``nb``, with outputs. Raises ``nbclient.exceptions.CellExecutionError`` at the first
      failing cell.
    """
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL["name"], record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    client.execute(env=kernel_env() if env is None else env)
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="name prefixes of the notebooks to run (default: all)")
    ap.add_argument("--check", action="store_true",
                    help="execute nothing; report pairs whose .ipynb does not match the .py")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (600)")
    ap.add_argument("--force", action="store_true",
                    help="save every executed notebook, even where only volatile output (timings) changed")
    args = ap.parse_args(argv)
    todo = sources(args.only)
    if not todo:
        ap.error(f"no notebook source matches {args.only}")
    if args.check:
        errors = [e for e in map(sync_error, todo) if e]
        print("\n".join(errors) or f"{len(todo)} notebook pairs in sync")
        return 1 if errors else 0
    import nbformat

    for source in todo:
        t0 = time.perf_counter()
        nb = execute(load(source), timeout=args.timeout)
        saved = source.with_suffix(".ipynb")
        took = time.perf_counter() - t0
        if not args.force and saved.exists() and signature(nbformat.read(saved, as_version=4)) == signature(nb):
            print(f"{saved.relative_to(ROOT)}: {took:.1f} s, unchanged (not saved; --force saves it)")
            continue
        nbformat.write(nb, saved)
        print(f"{saved.relative_to(ROOT)}: {took:.1f} s, {saved.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
