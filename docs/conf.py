"""Sphinx configuration of the jaxcorr documentation site (built strictly by tests/test_docs.py).

Build: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html`` (needs the ``docs`` extra).
"""

from __future__ import annotations

import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "jaxcorr"
author = "the jaxcorr authors"
copyright = "2026, the jaxcorr authors"  # noqa: A001 (Sphinx's name)

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "bench", "benchmarks_discussion.md", "active_step_changes.md", "figures/*.json", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the notebooks are executed by tests/test_notebooks.py; here they are shown
html_theme = "furo"
html_title = "jaxcorr"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields of the class, not a second description of each member

# Strict build: every reference to jaxcorr must resolve; names of other libraries (no network, so
# no intersphinx inventories) and typing constructs are not checked.
nitpicky = True
suppress_warnings = ["ref.python"]  # a name several classes share (``method``) resolves to one of them
nitpick_ignore_regex = [
    # private modules and names: package rooms, not part of the API reference
    (r"py:.*", r"(jaxcorr\.)?([A-Za-z0-9_]+\.)*_[A-Za-z0-9_]+(\..*)?"),
    (r"py:.*", r"(jax|jaxlib|numpy|np|jnp|optax|typing|collections|argparse|os|pathlib|threading|"
               r"signal|zipfile|io|dataclasses|enum|types|ml_dtypes|tqdm)(\..*)?"),
    (r"py:.*", r"(Array|ArrayLike|PyTree|Any|Callable|Sequence|Iterable|Iterator|Mapping|NamedTuple|"
               r"Optional|Union|Literal|DTypeLike|GradientTransformation|Shape|Mesh|PRNGKey|"
               r"NamedSharding|PartitionSpec|Path|ndarray|dtype|Device|Sharding|KeyArray)"),
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|object|type|None|complex|callable|"
               r"function|iterable|sequence|optional|array|array-like|scalar|pytree|Exception|"
               r"ValueError|TypeError|KeyError|OSError|MemoryError|RuntimeError)"),
]


def _copy_notebooks(app) -> None:
    """Show the executed notebooks (notebooks/*.ipynb) as pages under docs/notebooks/."""
    src, dst = ROOT / "notebooks", pathlib.Path(app.srcdir) / "notebooks"
    dst.mkdir(exist_ok=True)
    for nb in sorted(src.glob("*.ipynb")):
        shutil.copyfile(nb, dst / nb.name)


_BARS = re.compile(r"(?<![\\|])\|([^|`\s][^|`]{0,24}?)\|(?!_)")


def _escape_bars(app, what, name, obj, options, lines) -> None:
    """Docstrings write set sizes as plain text, ``|A|``; outside inline code and roles, escape the
    bars so reStructuredText does not read them as substitution references."""
    for k, line in enumerate(lines):
        parts = re.split(r"(`[^`]*`)", line)  # odd parts: inline code, roles' content
        lines[k] = "".join(p if i % 2 else _BARS.sub(r"\\|\1\\|", p) for i, p in enumerate(parts))


def setup(app):
    app.connect("builder-inited", _copy_notebooks)
    app.connect("autodoc-process-docstring", _escape_bars)
