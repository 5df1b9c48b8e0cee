#!/usr/bin/env python
# Over 500 lines: one command a user copies to a device machine, its three parts (correctness, speed, audit) in one
# file.
r"""One command for a machine with an accelerator: a correctness subset and the speed table, one JSON.

On whatever backend JAX finds (CPU, GPU, TPU) this runs

- **correctness** (every row ``{name, ok, detail}``; the script exits 1 if any row fails):
  max-trees, Correlation DTree / WTree (Theorems 3.1, 3.2) and DDFN (Definition 1.3) against numpy
  brute force on integer data (exact in float32); the sparse methods ``active``/``dtree``/``wtree``
  (Algorithms 8, 9) against ``dense`` on a small problem with ``train.sgd`` and ``optax.adam`` in
  float32, and with ``train.sgd`` in float64 (x64); the wide model's law (its set-up holds every row
  that fires at t = 0, brute force over all ``m`` rows, and its streamed predict equals the
  materialized network's, before and after training); ``train.setup -> run_chunk -> finalize`` and
  the tree UPDATE / QUERY under ``jax.transfer_guard("disallow")`` (on an accelerator this also
  catches device-to-host reads, which the CPU backend does not flag);
- **speed**: ``dense``/``active``/``dtree``/``wtree`` at m = 2^18, 2^22, 2^24 and the wide model
  (``jaxcorr.wide``, method ``active``) at m = 2^26, 2^28 (n = 8, d = 64, ``train.sgd``):
  ``setup_s`` (``train.setup``, or the wide model's streamed set-up) and ``ms_per_step``: the steps
  of one jitted ``lax.scan`` chunk (:func:`jaxcorr.train.run_chunk`, compiled first), the median
  of several chained chunks (:func:`jaxcorr.benchmarking.chained_times`). A size whose estimated
  memory exceeds the device's, or that would start past the time budget, is recorded as skipped
  with the reason, never silently dropped.

Sizes: the default is the full table (within about 8 minutes on one GPU); ``--quick`` keeps
m = 2^18 (wide model 2^22); ``--tiny`` (or ``JAXCORR_DEVICE_CHECK=tiny``) is the test suite's size
(m = 2^10, wide 2^14), seconds on a CPU.

Usage (on a machine with a GPU: ``pip install -U "jax[cuda12]"`` first, see docs/accelerators.md):
  python scripts/device_check.py --out device_check.json
  python scripts/device_check.py --quick --out device_check_quick.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback

import numpy as np

SIZES = {
    "tiny": {"ms": [2**10], "wide": [2**14], "steps": 4, "repeats": 2, "n": 8, "d": 16},
    "quick": {"ms": [2**18], "wide": [2**22], "steps": 20, "repeats": 3, "n": 8, "d": 64},
    "full": {"ms": [2**18, 2**22, 2**24], "wide": [2**26, 2**28], "steps": 20, "repeats": 5, "n": 8, "d": 64},
}
METHODS = ("dense", "active", "dtree", "wtree")
#: Losses of the sparse methods within this relative distance of dense (the tests' tolerances).
LOSS_RTOL = {"float32": 2e-4, "float64": 1e-9}


def _wide():
    """The wide model's module (the one place this script names it)."""
    from jaxcorr import wide as w

    return w


# ------------------------------------------------------------------------------------- helpers
def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _int_data(rng, rows, d, lo=-3, hi=4):
    """Small integers as float32: inner products are exact in float32, so brute force is exact."""
    return rng.integers(lo, hi, size=(rows, d)).astype(np.float32)


def _sets_from_frontier(indices, valid):
    idx, val = np.asarray(indices), np.asarray(valid)
    return [sorted(int(j) for j in row[v]) for row, v in zip(idx, val)]


def _brute_sets(ip, tau):
    return [sorted(np.flatnonzero(row > tau).tolist()) for row in ip]


# --------------------------------------------------------------------------------- correctness
def check_maxtree(rng):
    import jax

    from jaxcorr import maxtree

    vals = rng.integers(-50, 50, size=(6, 1000)).astype(np.float32)
    tree = maxtree.build(jax.device_put(vals))
    tau = 30.5
    got = maxtree.query_all(tree, tau, 256)
    want = _brute_sets(vals, tau)
    over = maxtree.query_all(tree, tau, 4)  # every tree holds more than 4: all overflow
    forest = maxtree.query_forest(tree, tau, 2048)
    pairs = sorted(zip(*(np.asarray(v)[np.asarray(forest.valid)].tolist() for v in (forest.tree, forest.leaf))))
    ok = (_sets_from_frontier(got.indices, got.valid) == want and not np.asarray(got.overflow).any()
          and bool(np.asarray(over.overflow).all()) and maxtree.check_invariant(tree)
          and pairs == [(t, j) for t, s in enumerate(want) for j in s])
    return ok, f"6 trees x 1000 leaves, tau={tau}: {sum(map(len, want))} leaves above, overflow flagged at capacity 4"


def check_dtree_wtree(rng):
    import jax

    from jaxcorr import dtree, wtree

    m, n, d, tau = 300, 7, 5, 4.5
    W, X = _int_data(rng, m, d), _int_data(rng, n, d)
    r = np.array([3, 17, 3, 299], np.int32)  # 3 twice: the last write wins
    Z = _int_data(rng, 4, d)
    W2 = W.copy()
    for j, row in zip(r, Z):
        W2[j] = row
    ip = X.astype(np.float64) @ W2.T.astype(np.float64)  # (n, m)
    dt = dtree.update(dtree.init(jax.device_put(W), jax.device_put(X)), jax.device_put(r), jax.device_put(Z))
    wt = wtree.update(wtree.init(jax.device_put(W), jax.device_put(X)), jax.device_put(r), jax.device_put(Z))
    qd, qw = dtree.query_all(dt, tau, m), wtree.query_all(wt, tau, n)
    ok_d = _sets_from_frontier(qd.indices, qd.valid) == _brute_sets(ip, tau)
    ok_w = _sets_from_frontier(qw.indices, qw.valid) == _brute_sets(ip.T, tau)
    return ok_d and ok_w, f"m={m}, n={n}, d={d} after a batch UPDATE with a repeated index: dtree {ok_d}, wtree {ok_w}"


def check_ddfn(rng):
    import jax

    from jaxcorr import ddfn

    n, m, d, b = 9, 200, 4, 5.5
    X, Y = _int_data(rng, n, d), _int_data(rng, m, d)
    s = ddfn.init(jax.device_put(X), jax.device_put(Y), b)
    j, Z = np.array([0, 150], np.int32), _int_data(rng, 2, d)
    s = ddfn.update(s, jax.device_put(j), jax.device_put(Z))
    Y[j] = Z
    q = ddfn.query(s)
    v = np.asarray(q.valid)
    got = list(zip(np.asarray(q.i)[v].tolist(), np.asarray(q.j)[v].tolist()))
    want = [tuple(p) for p in np.argwhere(X.astype(np.float64) @ Y.T.astype(np.float64) > b).tolist()]
    return got == want and not bool(q.overflow), f"n={n}, m={m}: {len(want)} pairs, sorted by (i, j)"


def _fit_all(X, y, params, optimizer, steps):
    from jaxcorr import train

    return {meth: train.fit(params, X, y, steps=steps, method=meth, optimizer=optimizer, b=1.0)
            for meth in METHODS}


def check_methods_agree(m, n, d, *, x64: bool, optimizers=("sgd", "adam")):
    """The sparse methods follow dense: losses within LOSS_RTOL, W to rounding."""
    import jax
    import optax

    from jaxcorr import data, nn, train

    rows = []
    with jax.enable_x64(x64):
        dt = np.float64 if x64 else np.float32
        X, y = data.synthetic(seed=1, n=n, d=d, dtype=dt)
        params = nn.init(jax.random.key(1), m, d, dtype=dt)
        built = {"sgd": train.sgd(0.5), "adam": optax.adam(0.01)}
        for oname in optimizers:
            out = _fit_all(X, y, params, built[oname], steps=8)
            ref_p, ref_h = out["dense"]
            tol = LOSS_RTOL[np.dtype(dt).name]
            for meth in METHODS[1:]:
                p, h = out[meth]
                rl, rw = _rel(h.loss, ref_h.loss), _rel(p.W, ref_p.W)
                ok = (rl <= tol and rw <= (1e-9 if x64 else 2e-3) and str(p.W.dtype) == np.dtype(dt).name
                      and max(h.fire_max) > 0)
                rows.append((f"{meth}_vs_dense_{oname}_{np.dtype(dt).name}", ok,
                             f"m={m}, n={n}, d={d}, 8 steps: loss rel diff {rl:.2e} (tol {tol:g}), W rel diff "
                             f"{rw:.2e}"))
    return rows


def check_wide_law(m, n, d):
    """The wide model holds every row that fires at t = 0; predict equals the materialized network."""
    import jax

    from jaxcorr import data, nn

    w = _wide()
    X, y = data.synthetic(seed=2, n=n, d=d)
    key = jax.random.key(2)
    model, info = w.setup(key, m, d, X)
    full = nn.init(key, m, d)
    b = model.b
    fires = np.flatnonzero(np.asarray(nn.fire_mask(full, X, b)).any(axis=0))
    held = np.asarray(model.idx)
    law = bool(np.isin(fires, held).all()) and info["n_fire_union"] == fires.size
    p0 = _rel(w.predict(model, X), nn.predict(full, X, b))
    trained, _ = w.fit(model, X, y, steps=3, method="active")
    p1 = _rel(w.predict(trained, X), nn.predict(w.materialize(trained), X, b))
    ok = law and p0 <= 1e-5 and p1 <= 1e-5
    return ok, (f"m={m}, n={n}, d={d}: {fires.size} rows fire, {held.size} held (all firing held: {law}); "
                f"predict vs materialized rel diff {p0:.1e} at t=0, {p1:.1e} after 3 steps")


def check_transfer_guard(m, n, d):
    """setup -> run_chunk -> finalize, and the tree UPDATE/QUERY, with no implicit transfer."""
    import jax

    from jaxcorr import data, dtree, nn, train, wtree

    X, y = data.synthetic(seed=3, n=n, d=d)
    params = nn.init(jax.random.key(3), m, d)
    failed = []
    for meth in METHODS:
        cfg, state = train.setup(params, X, y, method=meth, b=1.0)
        jax.block_until_ready(state)
        try:
            with jax.transfer_guard("disallow"):
                state, stats = train.run_chunk(cfg, state, 3)
                out = jax.device_get(train.finalize(cfg, state))
                loss = jax.device_get(stats.loss)
        except Exception as err:  # noqa: BLE001 - reported, not raised
            failed.append(f"{meth}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            continue
        if not (np.isfinite(loss).all() and out[0].W.shape == (m, d)):
            failed.append(f"{meth}: bad result")
    W, Xd = jax.device_put(params.W), jax.device_put(X)
    r, Z = jax.device_put(np.array([1, 5], np.int32)), jax.device_put(np.ones((2, d), np.float32))
    i, tau = jax.device_put(np.int32(0)), jax.device_put(np.float32(0.5))
    for mod in (dtree, wtree):
        t = mod.init(W, Xd)
        try:
            with jax.transfer_guard("disallow"):
                t = mod.update(t, r, Z)
                f = mod.query(t, i, tau, 16)
                jax.device_get((f, mod.query_all(t, tau, 16)))
        except Exception as err:  # noqa: BLE001
            failed.append(f"{mod.__name__}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
    return not failed, "; ".join(failed) or f"train (4 methods) and dtree/wtree UPDATE/QUERY under the guard, m={m}"


def check_audit():
    """On this backend, no program holds a scatter that docs/scatter_audit.json does not name."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", AUDIT_JSON)
    with open(path) as fh:
        documented = json.load(fh)

    new = undocumented_scatters(audit(), documented)
    return not new, "every scatter site documented" if not new else f"not documented: {new}"


def correctness(size: dict) -> list:
    rng = np.random.default_rng(0)
    n, d = 8, 16
    m = 2**12
    checks = [
        ("maxtree_vs_brute_force", lambda: check_maxtree(rng)),
        ("dtree_wtree_vs_brute_force", lambda: check_dtree_wtree(rng)),
        ("ddfn_vs_brute_force", lambda: check_ddfn(rng)),
        ("transfer_guard", lambda: check_transfer_guard(2**10, n, d)),
        ("wide_law", lambda: check_wide_law(size["wide"][0] if size is SIZES["tiny"] else 2**16, n, d)),
    ]
    multi = [
        ("methods_vs_dense_float32", lambda: check_methods_agree(m, n, d, x64=False)),
        ("methods_vs_dense_float64", lambda: check_methods_agree(m, n, d, x64=True, optimizers=("sgd",))),
    ]
    if size is not SIZES["tiny"]:  # the suite runs the audit in tests/test_scatter_audit.py
        checks.append(("scatter_audit", check_audit))
    rows = []
    for name, fn in checks:
        rows.append(_run_check(name, fn))
    for name, fn in multi:
        try:
            rows.extend({"name": nm, "ok": bool(ok), "detail": det} for nm, ok, det in fn())
        except Exception:  # noqa: BLE001 - a crash is a failed row with its traceback
            rows.append({"name": name, "ok": False, "detail": traceback.format_exc(limit=4)[-1500:]})
    return rows


def _run_check(name, fn) -> dict:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception:  # noqa: BLE001
        ok, detail = False, traceback.format_exc(limit=4)[-1500:]
    return {"name": name, "ok": bool(ok), "detail": f"{detail} ({time.perf_counter() - t0:.1f} s)"}


# --------------------------------------------------------------------------------------- speed
def _available(device) -> int:
    from jaxcorr import memory

    have, _ = memory.available(device)
    return int(have) if have is not None else 1 << 62


def _estimate(method: str, n: int, d: int, m: int, *, wide: bool) -> int:
    meth = "active" if wide else method
    from jaxcorr import memory

    return int(memory.estimate(meth, n=n, m=m, d=d, optimizer="sgd", wide=wide).total)


def _time_chunks(cfg, state, steps: int, repeats: int) -> float:
    """Median ms per step of chained jitted chunks (compiled by the warm-up call)."""
    from jaxcorr import benchmarking, train

    # two warm-up chunks: a state fresh from set-up may hold uncommitted arrays, and the chunk's
    # output (committed) then compiles a second time
    secs, state = benchmarking.chained_times(lambda s: train.run_chunk(cfg, s, steps)[0], state,
                                             repeats=repeats, warmup=2)
    del state
    return 1e3 * sorted(secs)[len(secs) // 2] / steps


def speed_row(method: str, m: int, size: dict, *, wide: bool) -> dict:
    import jax

    from jaxcorr import data, nn, train

    n, d, steps = size["n"], size["d"], size["steps"]
    X, y = data.synthetic(seed=0, n=n, d=d)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    if wide:
        model, info = _wide().setup(key, m, d, X)
        jax.block_until_ready(model.W)
        setup_s = time.perf_counter() - t0
        cfg, state = train.setup(model.to_params(), X, y, method="active", b=model.b, width=m)
        extra = {"n_active": int(info["n_active"]), "train_setup_s": None}
    else:
        params = jax.block_until_ready(nn.init(key, m, d))
        t0 = time.perf_counter()
        cfg, state = train.setup(params, X, y, method=method)
        jax.block_until_ready(state)
        setup_s = time.perf_counter() - t0
        extra = {"n_active": int(getattr(cfg, "n_active", m) or m)}
        del params
    ms = _time_chunks(cfg, state, steps, size["repeats"])
    row = {"method": "wide-active" if wide else method, "m": m, "ms_per_step": ms, "setup_s": setup_s,
           "n": n, "d": d, "steps": steps, "repeats": size["repeats"], "optimizer": "train.sgd(1.0)"}
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def speed(size: dict, budget_s: float, t_start: float) -> list:
    import jax

    dev = jax.devices()[0]
    plan = [(meth, m, False) for m in size["ms"] for meth in METHODS] + [("active", m, True) for m in size["wide"]]
    rows = []
    for meth, m, wide in plan:
        name = "wide-active" if wide else meth
        base = {"method": name, "m": m, "ms_per_step": None, "setup_s": None}
        need, have = _estimate(meth, size["n"], size["d"], m, wide=wide), _available(dev)
        if need > 0.8 * have:
            rows.append({**base,
                         "skipped": f"needs about {need / 2**30:.1f} GiB, the device has {have / 2**30:.1f} GiB free"})
            continue
        if time.perf_counter() - t_start > budget_s:
            rows.append({**base, "skipped": f"time budget of {budget_s:.0f} s spent"})
            continue
        try:
            rows.append(speed_row(meth, m, size, wide=wide))
        except Exception:  # noqa: BLE001 - an out-of-memory or a crash is recorded with its reason
            rows.append({**base, "skipped": "failed: " + traceback.format_exc(limit=3)[-800:]})
        gc.collect()
        print(f"  {name:12s} m=2^{int(math.log2(m))}: {rows[-1].get('ms_per_step')} ms/step", file=sys.stderr,
              flush=True)
    return rows


# ------------------------------------------------------------------------ scatter / gather audit
#: The audit's sizes: "A" holds the fire sets as masks (n = 8), "B" makes the DTree step search by
#: frontier (n = 64, b = 2.5: a point fires under 1/32 of the active rows).
AUDIT_CONFIGS = {"A": {"n": 8, "m": 4096, "d": 16, "b": 1.0}, "B": {"n": 64, "m": 16384, "d": 16, "b": 2.5}}
AUDIT_JSON = "docs/scatter_audit.json"
#: What the audit says about each indexed primitive, by (primitive, function): verdict and reason.
#: A scatter-family primitive found in a program must have an entry here (tests/test_scatter_audit.py).
REASONS = {
    ("scatter", "_compact"): ("kept", "stable compaction into the frontier: each kept id is written once "
                              "(positions from a prefix sum), the rest go to one dropped out-of-range slot; a "
                              "set, not an add, so no atomics and no compare-and-swap loop"),
    ("scatter-max", "_descend"): ("kept", "marks each slot's first output position: int32 max (a native atomic on "
                                  "GPUs, no compare-and-swap loop), indices declared sorted (a nondecreasing prefix "
                                  "sum); contention only among runs of slots with no passing descendant, which share "
                                  "a position"),
    ("scatter", "last_occurrence"): ("kept", "writes a permutation (argsort order): indices unique, declared "
                                     "unique_indices=True"),
    ("scatter", "_set_path_one"): ("kept", "DTree UPDATE of the k changed leaves and their paths (Lemma D.3): "
                                   "k entries per level; repeated parents receive identical values (computed from the "
                                   "final child level), superseded entries are out of range and dropped; a set"),
    ("scatter", "set_rows"): ("kept", "WTree UPDATE: replaces k whole trees (rows), distinct by last_occurrence; "
                              "a set of k rows per level"),
    ("scatter", "_update_impl"): ("kept", "the k new rows of W in the Correlation tree's state: a set of k rows, "
                                  "distinct (last_occurrence)"),
    ("scatter", "fire_coefficients"): ("kept", "Algorithm 8 lines 16-23 on the frontier "
                                       "path: (i, r) pairs are unique per point, unused slots out of range and "
                                       "dropped; "
                                       "a set. Only where FIND does not test every leaf (config B)"),
    ("scatter", "_fire_sets_from_ids"): ("kept", "marks the rows hit by any point "
                                         "(frontier path only): every writer stores the same 1, int32 set, contention "
                                         "up to n writers per row; a candidate for a masked pass"),
    ("gather", "_descend"): ("kept", "the frontier reads the 2^JUMP descendants of each slot as one contiguous row"),
    ("gather", "_set_path_one"): ("kept", "the two children of each recomputed parent"),
    ("gather", "_frontier_reference"): ("kept", "the plain reference search (tests only)"),
    ("gather", "fire_forward"): ("kept", "stored inner products and a_r at the frontier "
                                 "slots (frontier path only)"),
    ("gather", "last_occurrence"): ("kept", "the k batch indices in sorted order (k = batch size)"),
}
SCATTER_FAMILY = ("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter-min", "scatter-max")


def _jaxcorr_frame(eqn):
    """``(module, function)`` of the innermost jaxcorr frame that traced ``eqn``, or None."""
    tb = eqn.source_info.traceback
    for fr in (tb.frames if tb is not None else []):
        path = fr.file_name.replace(os.sep, "/")
        # a genexpr's frame: its enclosing function names it
        if "/jaxcorr/" in path and not fr.function_name.split(".")[-1].startswith("<"):
            mod = path.split("/jaxcorr/", 1)[1][:-3].replace("/", ".")
            return mod, fr.function_name.split(".")[-1]
    return None


def indexed_ops(closed_jaxpr) -> list:
    """Every gather / scatter-family primitive of a jaxpr, sub-jaxprs (scan, jit, cond, ...) included.

    Each is a dict: primitive, module and function of the jaxcorr code that traced it (an op traced
    inside a library function, e.g. ``jnp.take``, is named by the jaxcorr call around it), operand /
    indices / updates shapes, ``indices_are_sorted``, ``unique_indices`` and the index mode."""
    out = []

    def walk(jaxpr, outer):
        for eqn in jaxpr.eqns:
            here = _jaxcorr_frame(eqn) or outer
            name = eqn.primitive.name
            if name == "gather" or name in SCATTER_FAMILY or "segment" in name:
                shapes = [list(v.aval.shape) for v in eqn.invars]
                out.append({"primitive": name, "module": here[0] if here else "?", "function": here[1] if here else "?",
                            "operand": shapes[0], "indices": shapes[1] if len(shapes) > 1 else None,
                            "updates": shapes[2] if len(shapes) > 2 else None,
                            "indices_are_sorted": bool(eqn.params.get("indices_are_sorted", False)),
                            "unique_indices": bool(eqn.params.get("unique_indices", False)),
                            "mode": str(eqn.params.get("mode", "")).rsplit(".", 1)[-1]})
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (list, tuple)) else [v]):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner, here)

    walk(closed_jaxpr.jaxpr, None)
    return out


def _step_programs():
    """``(name, config, jaxpr, note)`` of one training step (``train.run_chunk``) per method and optimizer
    (config B with ``train.sgd`` only: it is there for the DTree step's frontier path)."""
    import jax
    import optax

    from jaxcorr import data, maxtree, nn, train

    plan = [("A", meth) for meth in METHODS] + [("B", "dtree"), ("B", "wtree")]
    for cname, meth in plan:
        c = AUDIT_CONFIGS[cname]
        X, y = data.synthetic(seed=0, n=c["n"], d=c["d"])
        params = nn.init(jax.random.key(0), c["m"], c["d"])
        opts = (("sgd", train.sgd(1.0)), ("adam", optax.adam(0.01)))[: 2 if cname == "A" else 1]  # B: the fire sets
        for oname, opt in opts:
            cfg, state = train.setup(params, X, y, method=meth, b=c["b"], optimizer=opt)
            jp = jax.make_jaxpr(lambda s, cfg=cfg: train.run_chunk(cfg, s, 1, donate=False))(state)
            note = f"|A|={cfg.n_active}"
            if meth == "dtree":
                mask = maxtree.searches_every_leaf(cfg.n_active, cfg.step.capacity)
                note += f", capacity {cfg.step.capacity}: fire sets {'as masks' if mask else 'by frontier'}"
            yield f"step {meth} {oname}", cname, jp, note


def _tree_programs():
    """``(name, config, jaxpr, note)`` of the tree UPDATE and QUERY programs at config A (k = 16)."""
    import jax
    import numpy as np

    from jaxcorr import ddfn, dtree, maxtree, wtree

    c = AUDIT_CONFIGS["A"]
    rng = np.random.default_rng(0)
    W = rng.standard_normal((c["m"], c["d"])).astype(np.float32)
    X = rng.standard_normal((c["n"], c["d"])).astype(np.float32)
    r, Z = np.arange(16, dtype=np.int32) * 7, np.ones((16, c["d"]), np.float32)
    dt, wt = dtree.init(W, X), wtree.init(W, X)
    s = ddfn.init(X, W, 2.0)
    yield "dtree.update (k=16)", "A", jax.make_jaxpr(dtree.update_unchecked)(dt, r, Z), "Lemma D.3"
    yield "wtree.update (k=16)", "A", jax.make_jaxpr(wtree.update_unchecked)(wt, r, Z), "Lemma D.7"
    yield ("dtree.query_all (capacity 64)", "A",
           jax.make_jaxpr(lambda t, tau: dtree.query_all(t, tau, 64))(dt, np.float32(2.0)), "frontier")
    yield ("maxtree.query_all_mask", "A",
           jax.make_jaxpr(lambda t, tau: maxtree.query_all_mask(t, tau, 2048))(dt.tree, np.float32(2.0)), "mask")
    yield ("wtree.query (capacity 8)", "A",
           jax.make_jaxpr(lambda t, i, tau: wtree.query(t, i, tau, 8))(wt, np.int32(3), np.float32(2.0)), "frontier")
    yield "ddfn.query (forest)", "A", jax.make_jaxpr(ddfn.query)(s), f"cap {s.cap}"


def audit() -> dict:
    """The audit table: every indexed primitive of every program, grouped, with its verdict."""
    import jax

    entries = {}
    for gen in (_step_programs, _tree_programs):
        for prog, cname, jp, note in gen():
            for op in indexed_ops(jp):
                key = (prog, op["primitive"], op["function"])
                if key in entries:
                    entries[key]["count"] += 1
                    continue
                verdict, reason = REASONS.get((op["primitive"], op["function"]), (None, None))
                entries[key] = {"program": prog, "config": cname, "note": note, **op, "count": 1,
                                "verdict": verdict, "reason": reason}
            if not any(k[0] == prog for k in entries):
                entries[(prog, "-", "-")] = {"program": prog, "config": cname, "note": note, "primitive": None,
                                             "count": 0}
    return {"jax_version": jax.__version__, "configs": AUDIT_CONFIGS, "entries": list(entries.values())}


def scatter_counts(table: dict) -> dict:
    """``{(program, config, primitive, function): count}`` of the scatter-family entries of an audit."""
    out = {}
    for e in table["entries"]:
        if e.get("primitive") in SCATTER_FAMILY:
            key = (e["program"], e["config"], e["primitive"], e["function"])
            out[key] = out.get(key, 0) + e["count"]
    return out


def undocumented_scatters(current: dict, documented: dict) -> dict:
    """The scatter sites of ``current`` that ``documented`` does not name (or names fewer times)."""
    known = scatter_counts(documented)
    return {k: v for k, v in scatter_counts(current).items() if v > known.get(k, 0)}


def audit_markdown(table: dict) -> str:
    """The audit as the markdown table docs/accelerators.md carries (generated, never edited by hand)."""
    lines = ["| program | config | primitive | where | operand / indices / updates | sorted / unique / mode | count "
             "| verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for e in table["entries"]:
        if e.get("primitive") is None:
            lines.append(f"| {e['program']} | {e['config']} | none | ({e['note']}) | | | 0 | nothing to audit |")
            continue
        shapes = " / ".join("x".join(map(str, s)) if s is not None else "-" for s in (e["operand"], e["indices"],
                                                                                      e["updates"]))
        flags = f"{'yes' if e['indices_are_sorted'] else 'no'} / {'yes' if e['unique_indices'] else 'no'} / {e['mode']}"
        lines.append(f"| {e['program']} | {e['config']} | {e['primitive']} | `{e['module']}.{e['function']}` | "
                     f"{shapes} "
                     f"| {flags} | {e['count']} | {e['verdict'] or 'unreviewed'} |")
    lines += ["", "### Verdicts", ""]
    seen = {(e.get("primitive"), e.get("function")) for e in table["entries"]}
    lines += [f"- `{p}` in `{f}`: **{v}**. {r}." for (p, f), (v, r) in REASONS.items() if (p, f) in seen]
    return "\n".join(lines) + "\n"


DOC_BEGIN = "<!-- audit table: generated from docs/scatter_audit.json by scripts/device_check.py; do not edit -->\n"
DOC_END = "<!-- end of the generated audit -->\n"


def write_audit(path: str, doc: str = "docs/accelerators.md") -> dict:
    """Write the audit JSON and regenerate its section of ``doc`` (between DOC_BEGIN and DOC_END)."""
    table = audit()
    with open(path, "w") as fh:
        json.dump(table, fh, indent=1)
        fh.write("\n")
    if os.path.exists(doc):
        with open(doc) as fh:
            text = fh.read()
        head, _, rest = text.partition(DOC_BEGIN)
        _, _, tail = rest.partition(DOC_END)
        with open(doc, "w") as fh:
            fh.write(head + DOC_BEGIN + audit_markdown(table) + DOC_END + tail)
    return table


# ---------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--quick", action="store_true", help="m = 2^18 and a wide model at 2^22 only")
    ap.add_argument("--tiny", action="store_true", help="the test suite's sizes (also JAXCORR_DEVICE_CHECK=tiny)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="no speed row starts after this many seconds")
    ap.add_argument("--no-speed", action="store_true", help="correctness only")
    ap.add_argument("--audit", metavar="JSON", help="write the scatter/gather audit (docs/scatter_audit.json) and exit")
    args = ap.parse_args(argv)
    if args.audit:
        print(audit_markdown(write_audit(args.audit)))
        return 0
    tiny = args.tiny or os.environ.get("JAXCORR_DEVICE_CHECK") == "tiny"
    label = "tiny" if tiny else ("quick" if args.quick else "full")
    size = SIZES[label]
    t_start = time.perf_counter()

    import jax

    from jaxcorr import benchmarking

    dev = jax.devices()[0]
    result = {
        "device": f"{dev.platform}: {getattr(dev, 'device_kind', str(dev))}",
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "size": label,
        "machine": benchmarking.machine_info(),
    }
    result["correctness"] = correctness(size)
    for row in result["correctness"]:
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['name']}: {row['detail']}", file=sys.stderr, flush=True)
    result["speed"] = [] if args.no_speed else speed(size, args.budget_s, t_start)
    result["elapsed_s"] = time.perf_counter() - t_start
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    bad = [r["name"] for r in result["correctness"] if not r["ok"]]
    print(f"wrote {args.out}: {len(result['correctness']) - len(bad)}/{len(result['correctness'])} checks ok, "
          f"{sum(r['ms_per_step'] is not None for r in result['speed'])} speed rows, {result['elapsed_s']:.0f} s",
          file=sys.stderr)
    return exit_status(result)


def exit_status(result: dict) -> int:
    """0 when every correctness row is ok (and there is at least one), else 1."""
    rows = result.get("correctness") or []
    return 0 if rows and all(r.get("ok") is True for r in rows) else 1


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    sys.exit(main())
