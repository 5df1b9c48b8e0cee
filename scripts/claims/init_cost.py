"""INIT is O(nmd) (Theorems 3.1/3.2; Lemmas D.2, D.6): claims ``init_cost_m`` and ``init_cost_n``.

Decided by **count**: the flops XLA counts in the compiled DTree and WTree INIT, over m (n, d fixed)
and over n (m, d fixed), from shapes alone (nothing allocated), so sizes up to m = 2^22 cost
nothing. The bound is an upper bound, tested one-sided: the fitted log-log slope of
``flops / (n m d)`` may not exceed ``TOLERANCES["init_excess_max"]``.

Wall-clock INIT time is measured beside it and drawn in the figure, but does not decide: on a CPU
it crosses the caches (the 2nm floats of tree levels leave the last-level cache inside the sweep),
and time on real hardware is not the operation count the theorem bounds.
"""

from __future__ import annotations

import jax

from jaxcorr import benchmarking as bm
from jaxcorr import dtree, wtree
from scripts.claims import common
from scripts.claims import plotting as pl

GROUP = "init"
PAPER = "Theorem 3.1/3.2 (Lemmas D.2, D.6)"
TREES = ("dtree", "wtree")

TOLERANCES = {
    # slope of flops/(nmd) in m (resp. n) at most this: INIT's count grows no faster than nmd.
    "init_excess_max": 0.1,
}

SIZES = {
    "tiny": dict(count_m=dict(n=8, d=8, ms=[2**6, 2**10]), count_n=dict(m=2**9, d=8, ns=[2, 32]),
                 time_m=dict(n=8, d=8, ms=[2**8, 2**10]), time_n=dict(m=2**9, d=8, ns=[4, 16]), repeats=1,
                 machinery_only=True),
    "quick": dict(count_m=dict(n=64, d=32, ms=[2**k for k in range(12, 23, 2)]),
                  count_n=dict(m=2**14, d=32, ns=[16, 64, 256, 1024]),
                  time_m=dict(n=64, d=32, ms=[2**12, 2**14, 2**16, 2**18]),
                  time_n=dict(m=2**14, d=32, ns=[32, 128, 512]), repeats=3),
    "full": dict(count_m=dict(n=64, d=32, ms=[2**k for k in range(12, 23)]),
                 count_n=dict(m=2**14, d=32, ns=[16, 32, 64, 128, 256, 512, 1024]),
                 time_m=dict(n=64, d=32, ms=[2**k for k in range(12, 19)]),
                 time_n=dict(m=2**14, d=32, ns=[32, 64, 128, 256, 512, 1024]), repeats=7),
}


def _nmd(axis, row):
    """nmd as a function of the swept size ``axis`` ("m" or "n"), the others from ``row``."""
    other = row["n"] if axis == "m" else row["m"]
    return lambda x: x * other * row["d"]


def _count_row(n, m, d):
    W, X = common.shape(m, d), common.shape(n, d)
    row = {"n": n, "m": m, "d": d, "nmd": n * m * d}
    for name, mod in (("dtree", dtree), ("wtree", wtree)):
        row[f"{name}_flops"] = common.xla_cost(mod.init, W, X)["flops"]
    return row


def _time_row(W, X, repeats):
    row = {"n": X.shape[0], "m": W.shape[0], "d": X.shape[1]}
    for name, mod in (("dtree", dtree), ("wtree", wtree)):
        row[f"{name}_ms"] = bm.median_time(mod.init, W, X, repeats=repeats) * 1e3
    return row


def _time_rows(cfg, key):
    c, c2, repeats = cfg["time_m"], cfg["time_n"], cfg["repeats"]
    X = jax.random.normal(key, (c["n"], c["d"]))
    rows_m = [_time_row(jax.random.normal(jax.random.fold_in(key, m), (m, c["d"])), X, repeats) for m in c["ms"]]
    W = jax.random.normal(key, (c2["m"], c2["d"]))
    rows_n = [_time_row(W, jax.random.normal(jax.random.fold_in(key, n), (n, c2["d"])), repeats) for n in c2["ns"]]
    return rows_m, rows_n


def _count_rows(cfg):
    cm, cn = cfg["count_m"], cfg["count_n"]
    return ([_count_row(cm["n"], m, cm["d"]) for m in cm["ms"]], [_count_row(n, cn["m"], cn["d"]) for n in cn["ns"]])


def _excess(axis, crows):
    xs = [r[axis] for r in crows]
    return {s: common.excess_slope(xs, [r[f"{s}_flops"] for r in crows], _nmd(axis, crows[0])) for s in TREES}


def counted(cfg, key, tol) -> dict:
    """What decides each claim, without the timing beside it: ``{claim: (excess slope, holds)}``."""
    out = {}
    for axis, crows in zip(("m", "n"), _count_rows(cfg)):
        ex = max(_excess(axis, crows).values())
        out[f"init_cost_{axis}"] = (ex, ex <= tol["init_excess_max"])
    return out


def measure(cfg, key, tol):
    """Count INIT's flops over m and n; time INIT beside it. Returns (claims, data)."""
    cm, cn = cfg["count_m"], cfg["count_n"]
    count_m, count_n = _count_rows(cfg)
    time_m, time_n = _time_rows(cfg, key)
    llc = bm.last_level_cache_bytes()
    claims = []
    for axis, crows, trows, fixed in (("m", count_m, time_m, cm), ("n", count_n, time_n, cn)):
        xs = [r[axis] for r in crows]
        common.check_sweep(xs, f"init_cost_{axis}", cfg)
        ex = _excess(axis, crows)
        txs = [r[axis] for r in trows]
        t_ex = {s: bm.loglog_slope(txs, [r[f"{s}_ms"] for r in trows]) for s in TREES}
        holds = max(ex.values()) <= tol["init_excess_max"]
        other = {"m": f"n={fixed.get('n')}", "n": f"m={fixed.get('m')}"}[axis]
        note = common.count_note(
            "flops in XLA's cost analysis of the compiled INIT",
            f"Wall-clock exponents in {axis}: dtree {t_ex['dtree']:.2f}, wtree {t_ex['wtree']:.2f}; the sweep "
            f"crosses the caches (last-level cache {llc // 2**20} MiB; tree levels hold 2nm floats), so time is "
            "not operation count on this machine.",
            None if holds else f"flops grow faster than nmd (excess slope {max(ex.values()):.3f})")
        claims.append(common.claim(
            f"init_cost_{axis}", PAPER,
            predicted={"bound": "O(nmd)", f"exponent_in_{axis}": 1.0},
            regime=f"{axis} from {xs[0]} to {xs[-1]} ({other}, d={fixed['d']}); counted, so no cache regime",
            measured={"excess_slope_dtree": ex["dtree"], "excess_slope_wtree": ex["wtree"],
                      "flops_exponent_dtree": bm.loglog_slope(xs, [r["dtree_flops"] for r in crows]),
                      "time_exponent_dtree": t_ex["dtree"], "time_exponent_wtree": t_ex["wtree"],
                      "rows": crows, "time_rows": trows},
            tolerance={"excess_slope_max": tol["init_excess_max"]}, holds=holds, note=note,
            figure="init_cost.png", decided_by="count"))
    return claims, {"count_m": count_m, "count_n": count_n, "time_m": time_m, "time_n": time_n}


def figure(results, out, plt):
    """init_cost.png: counted flops against the nmd bound (left), wall-clock time (right)."""
    data, claims, made = results["data"]["init"], results["claims"], []
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for col, axis in enumerate(("m", "n")):
        crows, trows = data[f"count_{axis}"], data[f"time_{axis}"]
        fixed = f"n={crows[0]['n']}" if axis == "m" else f"m={crows[0]['m']}"
        pl.series_with_bound(axes[0, col], [r[axis] for r in crows],
                             {f"{s} INIT flops (XLA count)": [r[f"{s}_flops"] for r in crows] for s in TREES},
                             _nmd(axis, crows[0]), "bound: nmd")
        axes[0, col].set(xlabel=axis, ylabel="flops", title=f"counted vs {axis} ({fixed}, d={crows[0]['d']}): "
                         f"{pl.verdict(claims, 'init_cost_' + axis)}")
        pl.series_with_bound(axes[1, col], [r[axis] for r in trows],
                             {f"{s} INIT time": [r[f"{s}_ms"] for r in trows] for s in TREES},
                             _nmd(axis, trows[0]), "nmd growth")
        axes[1, col].set(xlabel=axis, ylabel="ms (median)", title=f"wall clock vs {axis} (shown, not deciding)")
    for ax in axes.ravel():
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
    fig.suptitle(f"Theorems 3.1/3.2: INIT is O(nmd) {pl.subtitle(results)}", fontsize=9)
    pl.save(fig, out, "init_cost.png", made)
    return made
