"""The scatter and gather audit (issue 25, item 2): no step gains a scatter the audit does not name.

The audit lives in ONE place, ``docs/scatter_audit.json``, written by
``python scripts/device_check.py --audit docs/scatter_audit.json`` from the jaxprs of one training
step (``train.run_chunk`` over a state from ``train.setup``; methods dense, active, dtree, wtree;
``train.sgd`` and ``optax.adam``) and of the tree UPDATE / QUERY programs. docs/accelerators.md
carries the table generated from it. These tests rebuild the jaxprs through the public API and
fail when a program holds a scatter-family primitive (scatter, scatter-add, scatter-max, ...)
that the JSON does not list for that program and function, or more of them; when a listed scatter
has no verdict; or when the doc's table is not the JSON's.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax import lax

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DC = _load_script()
DOCUMENTED = json.loads((ROOT / DC.AUDIT_JSON).read_text())


@pytest.fixture(scope="module")
def current():
    return DC.audit()


def test_the_walker_finds_scatters_inside_scans_and_jits():
    """The check can fail: a scatter-add two levels down (jit inside scan) is found, with its flags."""

    @jax.jit
    def inner(acc, i):
        return acc.at[i].add(1.0, indices_are_sorted=True)

    def f(acc, idx):
        return lax.scan(lambda a, i: (inner(a, i), None), acc, idx)[0]

    ops = DC.indexed_ops(jax.make_jaxpr(f)(jnp.zeros(8), jnp.arange(3)))
    adds = [o for o in ops if o["primitive"] == "scatter-add"]
    assert len(adds) == 1 and adds[0]["indices_are_sorted"] and adds[0]["operand"] == [8]


def test_the_comparison_flags_a_new_scatter(current):
    """An audit that lost one documented scatter makes the real one look new."""
    entries = [e for e in DOCUMENTED["entries"] if e.get("primitive") != "scatter-max"]
    new = DC.undocumented_scatters(current, {"entries": entries})
    assert new and all(k[2] == "scatter-max" for k in new)


def test_every_program_was_audited(current):
    programs = {e["program"] for e in current["entries"]}
    for meth in DC.METHODS:
        for opt in ("sgd", "adam"):
            assert f"step {meth} {opt}" in programs
    assert {"dtree.update (k=16)", "wtree.update (k=16)", "ddfn.query (forest)"} <= programs
    # config B really takes the DTree's frontier path (else it would audit nothing new)
    notes = {e["note"] for e in current["entries"] if e["program"] == "step dtree sgd" and e["config"] == "B"}
    assert any("by frontier" in n for n in notes)


def test_no_program_gains_a_scatter_the_audit_does_not_name(current):
    new = DC.undocumented_scatters(current, DOCUMENTED)
    assert not new, (f"scatters not in {DC.AUDIT_JSON} (program, config, primitive, function): {new}; review them, "
                     "add a verdict to REASONS in scripts/device_check.py and rerun --audit")


def test_no_training_step_holds_a_scatter_add(current):
    """The GPU trap of jax #38806 (f32 scatter-add as a compare-and-swap loop): none in any step."""
    adds = [e for e in current["entries"] if e["program"].startswith("step ")
            and e.get("primitive") in ("scatter-add", "scatter_add") or "segment" in str(e.get("primitive"))]
    assert not adds


def test_every_documented_scatter_has_a_verdict_and_the_doc_shows_the_json():
    for e in DOCUMENTED["entries"]:
        if e.get("primitive") in DC.SCATTER_FAMILY:
            assert e["verdict"] and e["reason"], e
    doc = (ROOT / "docs" / "accelerators.md").read_text()
    assert DC.audit_markdown(DOCUMENTED) in doc
