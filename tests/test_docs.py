"""The front door: the README's snippets run, the performance page is current, the site builds strictly.

The documentation build (Sphinx, autodoc over every public module, MyST pages and the executed
notebooks) runs with warnings as errors and nitpicky references, so a broken reference to a jaxcorr
name, a malformed docstring or a page left out of the table of contents fails the suite.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[3:5] == ['pip install . && jaxcorr train', 'pip install ".[test]" && python -m pytest -q']
    assert len(lines) <= 160, "README is a front page: about 150 lines"


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install ".[test]" && python -m pytest -q' in ci


@pytest.mark.parametrize("index", range(len(_python_blocks((ROOT / "README.md").read_text()))))
def test_readme_python_snippet_runs(index):
    code = _python_blocks((ROOT / "README.md").read_text())[index]
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_performance_page_is_what_the_measurements_give():
    proc = subprocess.run([sys.executable, "scripts/performance_page.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_documentation_site_builds_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                           "docs", str(tmp_path / "html")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert (tmp_path / "html" / "api" / "train.html").exists()
    assert (tmp_path / "html" / "notebooks" / "04_wide_models.html").exists()
