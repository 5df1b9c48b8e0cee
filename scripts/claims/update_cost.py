"""UPDATE is O(n(d + log m)) for the DTree and O(nd) for the WTree (Lemmas D.3, D.7): claims
``update_cost_dtree`` and ``update_cost_wtree``.

Decided by **count**: the bytes XLA counts as accessed by one in-place UPDATE of one neuron (the
tree donated, so the update writes its path, not a copy), compiled from shapes alone for m up to
2^22. Upper bounds, tested one-sided: the fitted log-log slope of ``bytes / bound(m)`` may not
exceed ``TOLERANCES["update_excess_max"]`` (a copy of the tree per update would give slope 1).

Wall-clock time is measured beside it, dispatch amortised (512 single-neuron updates inside one
jitted ``lax.scan``, tree as donated carry; :func:`jaxcorr.benchmarking.amortised_time`), and drawn
in the figure, but does not decide: every level of the DTree path below the L2 cache is a random
access that misses, so time per level grows with m while the count of levels grows as log m.
"""

from __future__ import annotations

import math

import jax

from jaxcorr import benchmarking as bm
from jaxcorr import dtree, wtree
from scripts.claims import common
from scripts.claims import plotting as pl

GROUP = "update"
TOLERANCES = {
    # slope of counted bytes / bound in m at most this (a copy per update: slope 1).
    "update_excess_max": 0.1,
}

SIZES = {
    "tiny": dict(count=dict(n=4, d=8, ms=[2**6, 2**10]), time=dict(n=4, d=8, ms=[2**8, 2**10], steps=16),
                 repeats=1, machinery_only=True),
    "quick": dict(count=dict(n=32, d=32, ms=[2**k for k in range(10, 23, 4)]),
                  time=dict(n=32, d=32, ms=[2**10, 2**14, 2**18], steps=512), repeats=3),
    "full": dict(count=dict(n=32, d=32, ms=[2**k for k in range(10, 23, 2)]),
                 time=dict(n=32, d=32, ms=[2**k for k in range(10, 21, 2)], steps=512), repeats=7),
}

_TREES = (("dtree", dtree, "Lemma D.3 (Theorem 3.1)", "O(n(d + log m))"),
          ("wtree", wtree, "Lemma D.7 (Theorem 3.2)", "O(nd)"))


def _bound(name, n, d):
    if name == "dtree":
        return lambda m: n * (d + math.log2(m))
    return lambda m: n * d


def _count_row(n, m, d):
    row = {"n": n, "m": m, "d": d}
    for name, mod, _, _ in _TREES:
        tree = jax.eval_shape(mod.init, common.shape(m, d), common.shape(n, d))
        cost = common.xla_cost(lambda t, r, z, mod=mod: mod.update(t, r, z), tree,
                               common.shape(dtype="int32"), common.shape(d), donate_argnums=0)
        row[f"{name}_bytes"], row[f"{name}_flops"] = cost["bytes"], cost["flops"]
    return row


def _time_rows(c, repeats, key):
    X = jax.random.normal(key, (c["n"], c["d"]))
    rows = []
    for m in c["ms"]:
        W = jax.random.normal(jax.random.fold_in(key, m), (m, c["d"]))
        rs = jax.random.randint(jax.random.fold_in(key, 1), (c["steps"],), 0, m)
        Z = jax.random.normal(jax.random.fold_in(key, 2), (c["steps"], c["d"]))
        row = {"n": c["n"], "m": m, "d": c["d"], "state_MiB": 2 * c["n"] * m * 4 / 2**20}
        for name, mod, _, _ in _TREES:
            step = lambda t, rz, mod=mod: mod.update(t, rz[0], rz[1])  # noqa: E731
            row[f"{name}_us"] = bm.amortised_time(step, mod.init(W, X), (rs, Z), repeats=repeats)[0] * 1e6
        rows.append(row)
        del W
    return rows


def _excess(name, rows):
    return common.excess_slope([r["m"] for r in rows], [r[f"{name}_bytes"] for r in rows],
                               _bound(name, rows[0]["n"], rows[0]["d"]))


def counted(cfg, key, tol) -> dict:
    """What decides each claim, without the timing beside it: ``{claim: (excess slope, holds)}``."""
    c = cfg["count"]
    rows = [_count_row(c["n"], m, c["d"]) for m in c["ms"]]
    return {f"update_cost_{name}": (ex, ex <= tol["update_excess_max"])
            for name in ("dtree", "wtree") for ex in [_excess(name, rows)]}


def measure(cfg, key, tol):
    """Count UPDATE's bytes over m; time it (amortised) beside. Returns (claims, data)."""
    c, ct = cfg["count"], cfg["time"]
    ms = c["ms"]
    common.check_sweep(ms, "update_cost", cfg)
    rows = [_count_row(c["n"], m, c["d"]) for m in ms]
    trows = _time_rows(ct, max(3, cfg["repeats"]), key)
    tms = [r["m"] for r in trows]
    claims = []
    for name, _, paper, bound in _TREES:
        ex = _excess(name, rows)
        growth = trows[-1][f"{name}_us"] / trows[0][f"{name}_us"]
        holds = ex <= tol["update_excess_max"]
        note = common.count_note(
            "bytes accessed in XLA's cost analysis of one in-place update",
            f"Amortised time grows {growth:.1f}x from m={tms[0]} to m={tms[-1]} (counted bytes "
            f"{rows[-1][f'{name}_bytes'] / rows[0][f'{name}_bytes']:.2f}x over the count sweep): the rows an "
            "update writes are random accesses, and those in levels past the L2 cache miss.",
            None if holds else f"counted bytes grow faster than {bound} (excess slope {ex:.3f})")
        claims.append(common.claim(
            f"update_cost_{name}", paper,
            predicted={"bound": bound, "shape": "flat in m up to log m"},
            regime=f"one neuron, m from {ms[0]} to {ms[-1]} (n={c['n']}, d={c['d']}); counted, so no cache regime",
            measured={"excess_slope": ex, "bytes_growth": rows[-1][f"{name}_bytes"] / rows[0][f"{name}_bytes"],
                      "time_growth": growth, "time_exponent": bm.loglog_slope(tms, [r[f"{name}_us"] for r in trows]),
                      "rows": rows, "time_rows": trows,
                      "method": f"count: one update compiled with the tree donated; time: {ct['steps']} "
                                f"single-neuron updates in one jitted lax.scan, tree as donated carry"},
            tolerance={"excess_slope_max": tol["update_excess_max"]}, holds=holds, note=note,
            figure="update_cost.png", decided_by="count"))
    return claims, {"rows": rows, "time_rows": trows}


def figure(results, out, plt):
    """update_cost.png: counted bytes per update against the bounds (left), amortised time (right)."""
    data, claims, made = results["data"]["update"], results["claims"], []
    rows, trows = data["rows"], data["time_rows"]
    n, d = rows[0]["n"], rows[0]["d"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    ms = [r["m"] for r in rows]
    ax, ys = axes[0], []
    for name, mk in (("dtree", "o-"), ("wtree", "s-")):
        y = [r[f"{name}_bytes"] for r in rows]
        ax.plot(ms, y, mk, label=f"{name}: bytes per update ({pl.verdict(claims, 'update_cost_' + name)})")
        ys += y + list(pl.bound_line(ax, ms, y, _bound(name, n, d),
                                     "bound n(d + log m)" if name == "dtree" else "bound nd",
                                     style="k--" if name == "dtree" else "k:"))
    ys += list(pl.bound_line(ax, ms, rows[0]["dtree_bytes"], lambda m: m, "a copy per update (slope 1)",
                             style="r:"))[:2]
    pl.loglog2(ax, ms, ys)
    ax.set_ylim(min(ys) / 1.5, max(rows[-1]["dtree_bytes"], rows[0]["dtree_bytes"]) * 16)
    ax.set(xlabel="m (neurons)", ylabel="bytes accessed (XLA count)", title=f"counted (n={n}, d={d})")
    ax.legend(fontsize=7)
    ax = axes[1]
    tms = [r["m"] for r in trows]
    ys = []
    for name, mk in (("dtree", "o-"), ("wtree", "s-")):
        y = [r[f"{name}_us"] for r in trows]
        ax.plot(tms, y, mk, label=f"{name}: time per update")
        ys += y
    ys += list(pl.bound_line(ax, tms, trows[0]["dtree_us"], _bound("dtree", n, d), "n(d + log m) growth"))
    pl.loglog2(ax, tms, ys)
    ax.set(xlabel="m (neurons)", ylabel="us per update (amortised)", title="wall clock (shown, not deciding)")
    ax.legend(fontsize=7)
    fig.suptitle(f"Lemmas D.3/D.7: UPDATE cost vs m {pl.subtitle(results)}", fontsize=9)
    pl.save(fig, out, "update_cost.png", made)
    return made
