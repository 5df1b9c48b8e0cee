"""Figures for scripts/reproduce.py: one PNG per claim group, log-log with the predicted slope drawn.

matplotlib is an optional extra (``pip install 'jaxcorr[plots]'``); :func:`make_figures` raises
``ImportError`` with that hint when it is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"matplotlib is required for the figures ({e})") from None
    return plt


def _guide(ax, xs, ys, slope, label, log_extra=None, style="k--"):
    """Draw y = c x^slope (times log_extra(x) if given) through the first measured point."""
    xs = np.asarray(xs, float)
    f = (lambda x: x**slope) if log_extra is None else (lambda x: x**slope * log_extra(x))
    c = ys[0] / f(xs[0])
    ax.plot(xs, c * f(xs), style, lw=1, alpha=0.7, label=label)


def _holds(claims, name):
    for c in claims:
        if c["name"] == name:
            return "holds" if c["holds"] else "does NOT hold"
    return "n/a"


def _save(fig, out, name, made):
    fig.tight_layout()
    fig.savefig(Path(out) / name, dpi=110)
    made.append(name)


def make_figures(results: dict, out) -> list[str]:
    """Write the figures for whatever claim groups ``results["data"]`` holds; return file names."""
    plt = _plt()
    data, claims, made = results["data"], results["claims"], []
    sub = f"({results['size']} run; {results['machine']['cpu']}, {results['machine']['cores']} cores)"

    if "init" in data:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, axis in ((axes[0], "rows_m", "m"), (axes[1], "rows_n", "n")):
            rows = data["init"][key]
            xs = [r[axis] for r in rows]
            for s, mk in (("dtree", "o-"), ("wtree", "s-")):
                ax.loglog(xs, [r[f"{s}_ms"] for r in rows], mk, label=s)
            _guide(ax, xs, [r["dtree_ms"] for r in rows], 1.0, "slope 1 (O(nmd))")
            fixed = f"n={rows[0]['n']}" if axis == "m" else f"m={rows[0]['m']}"
            ax.set(xlabel=axis, ylabel="INIT time (ms)",
                   title=f"INIT vs {axis} ({fixed}, d={rows[0]['d']}): {_holds(claims, 'init_cost_' + axis)}")
            ax.legend()
        fig.suptitle(f"Theorems 3.1/3.2: INIT is O(nmd) {sub}", fontsize=9)
        _save(fig, out, "init_cost.png", made)

    if "update" in data:
        rows = data["update"]["rows"]
        ms = [r["m"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(ms, [r["dtree_us"] for r in rows], "o-", label=f"DTree ({_holds(claims, 'update_cost_dtree')})")
        ax.loglog(ms, [r["wtree_us"] for r in rows], "s-", label=f"WTree ({_holds(claims, 'update_cost_wtree')})")
        _guide(ax, ms, [rows[0]["dtree_us"]], 0.0, "DTree predicted: ~ log m", log_extra=np.log2)
        _guide(ax, ms, [rows[0]["wtree_us"]], 0.0, "WTree predicted: flat", style="k:")
        _guide(ax, ms, [rows[0]["dtree_us"]], 1.0, "slope 1 (a copy per update)", style="r:")
        ax.set(xlabel="m (neurons)", ylabel="time per UPDATE (us)",
               title=f"Lemmas D.3/D.7: UPDATE cost vs m (n={rows[0]['n']}, d={rows[0]['d']})")
        ax.legend(fontsize=8)
        fig.suptitle(sub, fontsize=8)
        _save(fig, out, "update_cost.png", made)

    if "query" in data:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        rows = data["query"]["rows_s"]
        xs = [r["S"] for r in rows]
        axes[0].loglog(xs, [r["ms"] for r in rows], "o-", label="DTree query (all n trees)")
        _guide(axes[0], xs, [rows[0]["ms"]], 1.0, "slope 1 (O(|S| log m))")
        axes[0].set(xlabel="|S| per tree", ylabel="query time (ms)",
                    title=f"vs |S| (m={rows[0]['m']}, n={rows[0]['n']}): {_holds(claims, 'query_cost_size')}")
        axes[0].legend()
        rows = data["query"]["rows_m"]
        xs = [r["m"] for r in rows]
        axes[1].loglog(xs, [r["ms"] for r in rows], "o-", label="DTree query (all n trees)")
        _guide(axes[1], xs, [rows[0]["ms"]], 0.0, "predicted: ~ log m", log_extra=np.log2)
        axes[1].set(xlabel="m", ylabel="query time (ms)",
                    title=f"vs m (|S|={rows[0]['S']}, n={rows[0]['n']}): {_holds(claims, 'query_cost_m')}")
        axes[1].legend()
        fig.suptitle(f"Lemmas D.4/D.8: QUERY is O(|S| log m) {sub}", fontsize=9)
        _save(fig, out, "query_cost.png", made)

    if "sparsity" in data:
        rows = data["sparsity"]["rows"]
        ms = np.array([r["m"] for r in rows], float)
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.loglog(ms, [r["k_mean"] for r in rows], "o-", label="mean_i k_{i,0} (init)")
        ax.loglog(ms, [r["k_max"] for r in rows], "^-", label="max_i k_{i,0} (init)")
        ax.loglog(ms, [r["m_exp_bound"] for r in rows], "k--", label="m exp(-b^2/2), b = sqrt(0.4 ln m)")
        ax.loglog(ms, ms**0.8, "k:", label="m^{4/5}")
        step = data.get("training", {}).get("step", {})
        if "sparsity_rows" in step:
            sr = step["sparsity_rows"]
            ax.loglog([r["m"] for r in sr], [r["k_max_all_t"] for r in sr], "x", ms=9, mew=2,
                      label=f"max_{{i,t}} k_{{i,t}} over {results['sizes']['train']['steps']} training steps")
        ax.set(xlabel="m (neurons)", ylabel="fired neurons per data point",
               title=f"Lemma 2.5/B.6: sparsity (init: {_holds(claims, 'sparsity_init')}, "
                     f"training: {_holds(claims, 'sparsity_train')})")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        fig.suptitle(sub, fontsize=8)
        _save(fig, out, "sparsity.png", made)

    tr = data.get("training", {})
    if tr and "rows" in tr.get("step", {}):
        rows = tr["step"]["rows"]
        ms = [r["m"] for r in rows]
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for meth, mk in (("dense", "o-"), ("dtree", "s-"), ("wtree", "^-")):
            if f"{meth}_ms" in rows[0]:
                ax.loglog(ms, [r[f"{meth}_ms"] for r in rows], mk, label=meth)
        _guide(ax, ms, [rows[0]["dense_ms"]], 1.0, "slope 1 (dense, O(nmd))")
        _guide(ax, ms, [rows[0]["dtree_ms"]], 0.8, "slope 4/5 (Theorems 4.1/4.2)", style="k:")
        ax.set(xlabel="m (neurons)", ylabel="ms per training step",
               title=f"Per-step cost (n={rows[0]['n']}, d={rows[0]['d']}): dtree {_holds(claims, 'step_cost_dtree')}, "
                     f"wtree {_holds(claims, 'step_cost_wtree')}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        fig.suptitle(sub, fontsize=8)
        _save(fig, out, "step_cost.png", made)
    if tr and "curves" in tr.get("convergence", {}):
        curves = tr["convergence"]["curves"]
        cc = results["sizes"]["convergence"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for meth, st in (("dense", "-"), ("dtree", "--"), ("wtree", ":")):
            axes[0].semilogy(curves[meth], st, label=meth)
        axes[0].set(xlabel="step", ylabel="training loss L(W)",
                    title=f"n={cc['n']}, m={cc['m']}, d={cc['d']}: {_holds(claims, 'convergence')}")
        axes[0].legend()
        d0 = np.asarray(curves["dense"])
        for meth in ("dtree", "wtree"):
            axes[1].semilogy(np.abs(np.asarray(curves[meth]) - d0) / d0[0] + 1e-12, label=f"|{meth} - dense| / L(0)")
        axes[1].set(xlabel="step", ylabel="relative difference (+1e-12)", title="curves coincide")
        axes[1].legend()
        fig.suptitle(f"Convergence in the over-parameterized regime {sub}", fontsize=9)
        _save(fig, out, "convergence.png", made)

    if "reduction" in data:
        rows = data["reduction"]["rows"]
        Ns = [r["n"] for r in rows]
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.loglog(Ns, [r["s"] for r in rows], "o-", label="max_inner_product (DDFN binary search)")
        ax.loglog(Ns, [r["brute_s"] for r in rows], "s-", label="brute force (numpy X @ Y.T)")
        _guide(ax, Ns, [rows[0]["s"]], 2.0, "slope 2")
        ax.set(xlabel="N = n = m", ylabel="seconds",
               title=f"Theorem F.4 reduction (d={rows[0]['d']}): correct {_holds(claims, 'reduction_correct')}, "
                     f"cost {_holds(claims, 'reduction_cost')}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        fig.suptitle(sub, fontsize=8)
        _save(fig, out, "reduction.png", made)
    plt.close("all")
    return made
