"""QUERY is O(|S| log m) (Lemmas D.4, D.8): claims ``query_cost_size`` and ``query_cost_m``.

Both are upper bounds, tested one-sided: the fitted log-log slope of ``cost / (|S| log m)`` against
the swept size may not exceed a tolerance above 0 (growing slower than the bound satisfies it).

- ``query_cost_size`` is decided by **time**: the DTree ``query_all`` over all n trees at fixed m,
  each tree's threshold set so exactly |S| leaves lie above it, capacity |S|. Only on sizes where
  the fixed cost does not dominate: the time at the smallest |S| must be at least
  ``TOLERANCES["fixed_cost_share_max"]``^-1 times the time of a query with |S| = 1 (measured).
- ``query_cost_m`` is decided by **count**: flops XLA counts in the compiled query at fixed |S|,
  m up to 2^22 from shapes alone. Time is measured beside it and drawn, but does not decide: each
  level of the search below the caches is a random access that misses, so time per level grows
  with m while the number of levels grows as log m.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax import lax

from jaxcorr import benchmarking as bm
from jaxcorr import dtree
from scripts.claims import common
from scripts.claims import plotting as pl

GROUP = "query"
PAPER = "Lemmas D.4, D.8"
TOLERANCES = {
    "query_size_excess_max": 0.3,  # time: slope of t / |S| in |S| at fixed m at most this
    "fixed_cost_share_max": 0.5,  # time at |S| = 1 at most this share of the time at the smallest |S|
    "query_m_excess_max": 0.1,  # count: slope of flops / (|S| log m) in m at most this
}

SIZES = {
    "tiny": dict(size=dict(n=4, m=2**10, sizes=[4, 16], machinery_only=True),
                 count_m=dict(n=4, size=8, ms=[2**8, 2**12]), time_m=dict(n=4, size=8, ms=[2**8, 2**10]), repeats=1,
                 machinery_only=True),
    "quick": dict(size=dict(n=64, m=2**16, sizes=[64, 256, 1024, 4096]),
                  count_m=dict(n=64, size=64, ms=[2**14, 2**18, 2**22]),
                  time_m=dict(n=64, size=64, ms=[2**10, 2**14, 2**18]), repeats=3),
    "full": dict(size=dict(n=64, m=2**16, sizes=[64, 128, 256, 512, 1024, 2048, 4096]),
                 count_m=dict(n=64, size=64, ms=[2**k for k in range(14, 23, 2)]),
                 time_m=dict(n=64, size=64, ms=[2**k for k in range(10, 21, 2)]), repeats=7),
}
D = 16


def _taus_for_size(leaves, s):
    """Per-tree thresholds with exactly ``s`` leaves strictly above (midpoint of s-th and s+1-th)."""
    top = lax.top_k(leaves, s + 1)[0]
    return 0.5 * (top[:, s - 1] + top[:, s])


def _time_query(tree, leaves, s, repeats):
    taus = _taus_for_size(leaves, s)
    fr = dtree.query_all(tree, taus, s)
    if not (np.asarray(fr.count) == s).all() or bool(np.asarray(fr.overflow).any()):
        raise AssertionError("threshold did not give |S| leaves per tree")
    return bm.median_time(lambda: dtree.query_all(tree, taus, s), repeats=repeats)


def _tree(key, n, m):
    X = jax.random.normal(key, (n, D))
    W = jax.random.normal(jax.random.fold_in(key, m), (m, D))
    t = dtree.init(W, X)
    return t, dtree.inner_products(t)


def _query_flops(n, m, s):
    tree = jax.eval_shape(dtree.init, common.shape(m, D), common.shape(n, D))
    return common.xla_cost(lambda t, tau: dtree.query_all(t, tau, s), tree, common.shape(n))["flops"]


def _measure_size(c, repeats, key, tol):
    common.check_sweep(c["sizes"], "query_cost_size", c)
    t, leaves = _tree(key, c["n"], c["m"])
    fixed = _time_query(t, leaves, 1, repeats)
    rows = [{"n": c["n"], "m": c["m"], "S": s, "ms": _time_query(t, leaves, s, repeats) * 1e3,
             "flops": _query_flops(c["n"], c["m"], s)} for s in c["sizes"]]
    sizes = [r["S"] for r in rows]
    ex = common.excess_slope(sizes, [r["ms"] for r in rows], lambda s: s)
    share = fixed * 1e3 / rows[0]["ms"]
    in_regime = share <= tol["fixed_cost_share_max"]
    holds = in_regime and ex <= tol["query_size_excess_max"]
    note = "" if holds else (
        f"time grows faster than |S| (excess slope {ex:.2f})" if in_regime else
        f"fixed cost dominates: a query with |S| = 1 takes {share:.0%} of the time at |S| = {sizes[0]}")
    if holds and ex < 0:
        note = (f"time grows slower than |S| (exponent {1 + ex:.2f}): the search starts at the level with "
                f"about |S| nodes, so the log(m/|S|) levels left to descend shrink as |S| grows.")
    return common.claim(
        "query_cost_size", PAPER, predicted={"bound": "O(|S| log m)", "exponent_in_S_at_most": 1.0},
        regime=f"|S| from {sizes[0]} to {sizes[-1]} per tree, m={c['m']}, n={c['n']} trees, d={D}; "
               f"fixed cost (|S| = 1) at most {tol['fixed_cost_share_max']:.0%} of the smallest |S|",
        measured={"excess_slope": ex, "exponent_in_S": 1 + ex, "fixed_cost_ms": fixed * 1e3,
                  "fixed_cost_share": share, "rows": rows,
                  "method": "DTree query_all over all n trees, each threshold set so |S| is exact, capacity = |S|"},
        tolerance={"excess_slope_max": tol["query_size_excess_max"],
                   "fixed_cost_share_max": tol["fixed_cost_share_max"]},
        holds=holds, note=note, figure="query_cost.png", decided_by="time"), rows


def _measure_m(cfg, repeats, key, tol):
    c, ct = cfg["count_m"], cfg["time_m"]
    common.check_sweep(c["ms"], "query_cost_m", cfg)
    rows = [{"n": c["n"], "m": m, "S": c["size"], "flops": _query_flops(c["n"], m, c["size"])} for m in c["ms"]]
    trows = []
    for m in ct["ms"]:
        t, leaves = _tree(key, ct["n"], m)
        trows.append({"n": ct["n"], "m": m, "S": ct["size"], "ms": _time_query(t, leaves, ct["size"], repeats) * 1e3})
        del t, leaves
    ms, tms = [r["m"] for r in rows], [r["m"] for r in trows]
    ex = common.excess_slope(ms, [r["flops"] for r in rows], lambda m: math.log2(m))
    holds = ex <= tol["query_m_excess_max"]
    growth = trows[-1]["ms"] / trows[0]["ms"]
    note = common.count_note(
        "flops in XLA's cost analysis of the compiled query",
        f"Time grows {growth:.1f}x from m={tms[0]} to m={tms[-1]} against log m's "
        f"{math.log2(tms[-1]) / math.log2(tms[0]):.1f}x: each level below the caches is a random access that misses.",
        None if holds else f"counted flops grow faster than |S| log m (excess slope {ex:.3f})")
    return common.claim(
        "query_cost_m", PAPER, predicted={"bound": "O(|S| log m)", "shape": "flat in m up to log m at fixed |S|"},
        regime=f"m from {ms[0]} to {ms[-1]} at |S|={c['size']} per tree, n={c['n']} trees (m >= 2^8 |S|); counted",
        measured={"excess_slope": ex, "time_growth": growth,
                  "time_exponent": bm.loglog_slope(tms, [r["ms"] for r in trows]), "rows": rows, "time_rows": trows},
        tolerance={"excess_slope_max": tol["query_m_excess_max"]}, holds=holds, note=note,
        figure="query_cost.png", decided_by="count"), rows, trows


def measure(cfg, key, tol):
    """Time the query against |S|; count it (and time it) against m. Returns (claims, data)."""
    repeats = max(3, cfg["repeats"])
    c_size, rows_s = _measure_size(cfg["size"], repeats, key, tol)
    c_m, rows_m, trows_m = _measure_m(cfg, repeats, key, tol)
    return [c_size, c_m], {"rows_s": rows_s, "rows_m": rows_m, "time_rows_m": trows_m,
                           "fixed_cost_ms": c_size["measured"]["fixed_cost_ms"]}


def figure(results, out, plt):
    """query_cost.png: time vs |S| with the bound (left); counted flops and time vs m (right)."""
    data, claims, made = results["data"]["query"], results["claims"], []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    rows = data["rows_s"]
    xs = [r["S"] for r in rows]
    ax = axes[0]
    ax.plot(xs, [r["ms"] for r in rows], "o-", label="DTree query_all (all n trees)")
    b = pl.bound_line(ax, xs, [r["ms"] for r in rows], lambda s: s, "bound: c |S| log m (slope 1), above all")
    ax.axhline(data["fixed_cost_ms"], color="0.5", lw=1, ls=":", label="fixed cost (|S| = 1)")
    pl.loglog2(ax, xs, [r["ms"] for r in rows] + list(b) + [data["fixed_cost_ms"]])
    ax.set(xlabel="|S| per tree", ylabel="ms (median)",
           title=f"time vs |S| (m={rows[0]['m']}, n={rows[0]['n']}): {pl.verdict(claims, 'query_cost_size')}")
    ax.legend(fontsize=7)
    ax = axes[1]
    rows, trows = data["rows_m"], data["time_rows_m"]
    ms, tms = [r["m"] for r in rows], [r["m"] for r in trows]
    f0 = rows[0]["flops"]
    ax.plot(ms, [r["flops"] / f0 for r in rows], "o-", label="flops (XLA count), relative")
    ax.plot(tms, [r["ms"] / trows[0]["ms"] for r in trows], "s--", label="time (shown, not deciding), relative")
    b = pl.bound_line(ax, ms, [r["flops"] / f0 for r in rows], lambda m: math.log2(m), "bound: c |S| log m, above all")
    ys = [r["flops"] / f0 for r in rows] + [r["ms"] / trows[0]["ms"] for r in trows] + list(b)
    pl.loglog2(ax, ms + tms, ys)
    ax.set(xlabel="m", ylabel="cost relative to the first point",
           title=f"vs m at |S|={rows[0]['S']} (n={rows[0]['n']}): {pl.verdict(claims, 'query_cost_m')}")
    ax.legend(fontsize=7)
    for a in axes:
        a.title.set_fontsize(9)
    fig.suptitle(f"Lemmas D.4/D.8: QUERY is O(|S| log m) {pl.subtitle(results)}", fontsize=9)
    pl.save(fig, out, "query_cost.png", made)
    return made
