"""Sharded trees and sharded training (tests/sharded_cases.py) on 4 CPU devices, in their own process.

The CPU backend's device count is fixed when JAX starts, so the cases run in one child pytest with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and ``JAX_PLATFORMS=cpu`` set before JAX is
imported; each test here reports one case (all its parametrizations) from the child's JUnit XML,
with the child's failure message (what differed, values and steps) as its own.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "sharded_cases.py")
DEVICES = 4


def _case_names() -> list[str]:
    tree = ast.parse(open(CASES).read())
    return [f.name for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    xml = tmp_path_factory.mktemp("sharded") / "cases.xml"
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={DEVICES}"
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", CASES,
                           f"--junitxml={xml}"], env=env, capture_output=True, text=True, timeout=900, cwd=root)
    if not xml.exists():
        pytest.fail(f"the sharded cases did not run (exit "
                    f"{proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    out: dict = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "")
        verdict, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                verdict, text = tag, (el.get("message") or "") + "\n" + (el.text or "")
        out.setdefault(name.split("[")[0], []).append((name, verdict, text))
    return out


@pytest.mark.parametrize("case", _case_names())
def test_sharded(results, case):
    runs = results.get(case)
    assert runs, f"{case} did not run in the 4-device process"
    bad = [f"{name}: {verdict}\n{text[-2500:]}" for name, verdict, text in runs if verdict != "passed"]
    assert not bad, "\n\n".join(bad)
