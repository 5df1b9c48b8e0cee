"""docs/architecture.md holds every import arrow the code has; the package is layered (no cycle)."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
graph_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph_mod)


def test_the_page_shows_every_import_the_code_has():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    shown = doc.split(graph_mod.BEGIN, 1)[1].split(graph_mod.END, 1)[0].strip()
    assert shown == graph_mod.table(), "run: python scripts/import_graph.py, and paste its table"


def test_no_import_cycle_between_modules():
    assert graph_mod.cycles() == []


def test_the_graph_reads_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The reader is not vacuous: a lazy import inside a function and a package's own modules count."""
    g = graph_mod.graph()
    assert "train" in g["wide"] and "methods" in g["train"]  # wide.fit calls train.fit
    assert "train" not in g["maxtree"] and g["errors"] == set()
    pkg = tmp_path / "jaxcorr"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from jaxcorr import b\n")
    (pkg / "b.py").write_text("from jaxcorr.sub import _x\n")
    (pkg / "sub" / "__init__.py").write_text("from . import _x\n")
    (pkg / "sub" / "_x.py").write_text("import jaxcorr.a\n")
    monkeypatch.setattr(graph_mod, "PKG", pkg)
    g = graph_mod.graph()
    assert g == {"a": {"b"}, "b": {"sub"}, "sub": {"a"}}
    assert graph_mod.cycles()  # a -> b -> sub -> a
