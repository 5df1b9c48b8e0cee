"""``scripts/device_check.py`` (issue 25, item 3) at the test suite's size, on the CPU.

The script is run as a user runs it, in a subprocess (``--tiny``), and its one JSON is checked:
the schema (``device``, ``jax_version``, ``correctness`` rows ``{name, ok, detail}``, ``speed``
rows with ``method``, ``m``, ``ms_per_step``, ``setup_s``), that every correctness row is ok, that
every check family ran, that the speed table holds every method, and that the exit status says
whether a row failed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check") / "check.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], capture_output=True,
                         text=True, env=env, timeout=300, cwd=ROOT)
    return run, json.loads(out.read_text()) if out.exists() else None


def test_the_json_has_the_schema(report):
    run, res = report
    assert res is not None, run.stderr[-3000:]
    assert isinstance(res["device"], str) and res["device"].startswith("cpu")
    assert isinstance(res["jax_version"], str) and res["size"] == "tiny"
    for row in res["correctness"]:
        assert set(row) == {"name", "ok", "detail"} and isinstance(row["ok"], bool) and isinstance(row["detail"], str)
    for row in res["speed"]:
        assert {"method", "m", "ms_per_step", "setup_s"} <= set(row)
        assert row["ms_per_step"] > 0 and row["setup_s"] >= 0 and isinstance(row["m"], int), row


def test_every_correctness_row_is_ok_and_every_family_ran(report):
    run, res = report
    bad = [r for r in res["correctness"] if not r["ok"]]
    assert not bad and run.returncode == 0, (bad, run.stderr[-2000:])
    names = {r["name"] for r in res["correctness"]}
    assert {"maxtree_vs_brute_force", "dtree_wtree_vs_brute_force", "ddfn_vs_brute_force", "transfer_guard",
            "wide_law"} <= names
    for meth in ("active", "dtree", "wtree"):
        assert {f"{meth}_vs_dense_sgd_float32", f"{meth}_vs_dense_adam_float32",
                f"{meth}_vs_dense_sgd_float64"} <= names


def test_the_speed_table_covers_every_method(report):
    _, res = report
    got = {(r["method"], r["m"]) for r in res["speed"]}
    assert got == {(m, 2**10) for m in ("dense", "active", "dtree", "wtree")} | {("wide-active", 2**14)}


def test_a_failed_row_makes_the_exit_status_nonzero():
    dc = _load_script()
    ok = {"name": "a", "ok": True, "detail": ""}
    assert dc.exit_status({"correctness": [ok]}) == 0
    assert dc.exit_status({"correctness": [ok, {**ok, "ok": False}]}) == 1
    assert dc.exit_status({"correctness": []}) == 1
    row = dc._run_check("boom", lambda: 1 / 0)
    assert row["ok"] is False and "ZeroDivisionError" in row["detail"]


def test_sizes_grow_and_the_full_table_is_the_issues():
    dc = _load_script()
    assert dc.SIZES["full"]["ms"] == [2**18, 2**22, 2**24] and dc.SIZES["full"]["wide"] == [2**26, 2**28]
    assert max(dc.SIZES["tiny"]["ms"]) < min(dc.SIZES["quick"]["ms"]) and dc.SIZES["quick"]["ms"][0] == 2**18
