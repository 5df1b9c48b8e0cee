"""The lint gate: ``ruff check`` under pyproject.toml's ``[tool.ruff]`` finds nothing in the package,
the tests, the scripts and the notebooks' sources (issue 22, Gates).

ruff comes with the ``test`` extra (``pip install -e '.[test]'``); without it this test fails and
says so, it is never skipped.
"""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["jaxcorr", "tests", "scripts", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.py"))]


def _ruff() -> list[str]:
    try:
        from ruff.__main__ import find_ruff_bin  # the package ships the binary and its finder

        return [str(find_ruff_bin())]
    except ImportError:
        exe = shutil.which("ruff")
        if exe is None:
            raise AssertionError(
                "ruff is not installed: install the test extra (pip install -e '.[test]') to run the lint gate"
            ) from None
        return [exe]


def test_ruff_finds_nothing():
    assert (ROOT / "notebooks").is_dir() and len(TARGETS) > 3
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *TARGETS],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"ruff check found problems (fix, or `ruff check --fix`):\n{proc.stdout}{proc.stderr}"


def test_the_gate_reads_the_project_config():
    """A finding the config selects is reported: the gate is not passing because nothing is checked."""
    bad = "import os\n"  # F401: imported and unused
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--stdin-filename", "jaxcorr/_lint_probe.py", "-"],
                          cwd=ROOT, input=bad, capture_output=True, text=True)
    assert proc.returncode == 1 and "F401" in proc.stdout, proc.stdout + proc.stderr
