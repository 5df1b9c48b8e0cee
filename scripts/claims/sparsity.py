"""Sparsity at initialization (Lemma 2.5 / B.3, Remark 2.6): claim ``sparsity_init``.

With w_r(0) ~ N(0, I_d), unit data and b = sqrt(0.4 ln m), every point fires
k_{i,0} <= m exp(-b^2/2) = m^{4/5} neurons (up to a constant, with high probability). Upper bounds,
tested one-sided: max_i k_{i,0} <= C m exp(-b^2/2) at every m, and the fitted exponent of the mean
k in m at most 4/5 plus slack. Decided by **count** (the fire counts themselves).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import benchmarking as bm
from jaxcorr import data as jdata
from jaxcorr import nn
from scripts.claims import common
from scripts.claims import plotting as pl

GROUP = "sparsity"
TOLERANCES = {
    # max_i k_{i,t} <= C m exp(-b^2/2). For w ~ N(0, I), unit x: E k = m Q(b) <= m e^{-b^2/2} / 2, so
    # C = 1 leaves a factor 2 for fluctuations and drift.
    "sparsity_const": 1.0,
    # the fitted exponent of mean_i k_{i,0} in m at most 4/5 (Remark 2.6) plus slack.
    "sparsity_exponent_max": 0.85,
}

SIZES = {
    "tiny": dict(n=4, d=8, ms=[2**8, 2**10, 2**12], chunk=2**10, machinery_only=True),
    "quick": dict(n=64, d=16, ms=[2**k for k in range(12, 23, 2)], chunk=2**18),
    "full": dict(n=64, d=16, ms=[2**k for k in range(12, 23)], chunk=2**18),
}


@functools.partial(jax.jit, static_argnames=("size",))
def _fire_counts_chunk(key, X, b, size: int):
    """k_i restricted to ``size`` fresh neurons w_r(0) ~ N(0, I_d) (Definition 2.1 / nn.init)."""
    W = jax.random.normal(key, (size, X.shape[1]), X.dtype)
    return nn.fire_mask(nn.Params(W, jnp.ones((size,), X.dtype)), X, b).sum(axis=1)  # a: unused


def fire_counts_at_init(seed, X, m, chunk):
    """k_{i,0} for every row of X with m Gaussian neurons, generated and counted ``chunk`` at a
    time, so memory stays O(n chunk) even at m = 2^22."""
    b = jnp.asarray(common.threshold(m), X.dtype)
    total = np.zeros(X.shape[0], np.int64)
    key = jax.random.PRNGKey(seed)
    for done in range(0, m, chunk):
        total += np.asarray(_fire_counts_chunk(jax.random.fold_in(key, done), X, b, min(chunk, m - done)))
    return total


def counted(cfg, key, tol) -> dict:
    """What decides the claim (it has no timing): ``{claim: (max k / bound, holds)}``."""
    (c,), _ = measure(cfg, key, tol)
    return {c["name"]: (c["measured"]["max_k_over_bound"], c["holds"])}


def measure(cfg, key, tol):
    """Fire counts at initialization over m. Returns (claims, data)."""
    c = cfg
    common.check_sweep(c["ms"], "sparsity_init", c)
    X = jnp.asarray(jdata.synthetic(0, c["n"], c["d"])[0], jnp.float32)
    rows = []
    for m in c["ms"]:
        b = common.threshold(m)
        k = fire_counts_at_init(int(jax.random.randint(key, (), 0, 2**30)) + m, X, m, min(c["chunk"], m))
        bound = common.sparsity_bound(m, b)
        rows.append({"m": m, "b": b, "k_mean": float(k.mean()), "k_max": int(k.max()), "k_min": int(k.min()),
                     "m_exp_bound": bound, "m_4_5": m**0.8, "k_max_over_bound": float(k.max() / bound)})
    ms = [r["m"] for r in rows]
    ex = bm.loglog_slope(ms, [r["k_mean"] for r in rows])
    worst = max(r["k_max_over_bound"] for r in rows)
    C, emax = tol["sparsity_const"], tol["sparsity_exponent_max"]
    holds = worst <= C and ex <= emax
    note = "" if holds else "; ".join(
        s for s, bad in ((f"max_i k_i,0 reaches {worst:.2f} m exp(-b^2/2) > {C}", worst > C),
                         (f"mean k grows with exponent {ex:.2f} > {emax}", ex > emax)) if bad)
    claim = common.claim(
        "sparsity_init", "Lemma 2.5 / B.3, Remark 2.6",
        predicted={"bound": "k_{i,0} = O(m exp(-b^2/2)) = O(m^{4/5}) with b = sqrt(0.4 ln m)", "exponent_in_m": 0.8},
        regime=f"m from {ms[0]} to {ms[-1]}, n={c['n']} unit points, d={c['d']}, w_r(0) ~ N(0, I_d)",
        measured={"max_k_over_bound": worst, "exponent_of_mean_k": ex, "n": c["n"], "d": c["d"], "rows": rows},
        tolerance={"max_k_over_bound_max": C, "exponent_max": emax}, holds=holds, note=note,
        figure="sparsity.png", decided_by="count")
    return [claim], {"rows": rows, "n": c["n"]}


def figure(results, out, plt):
    """sparsity.png: k_{i,0} (and k_{i,t} from training, if measured) against m exp(-b^2/2)."""
    data, claims, made = results["data"]["sparsity"], results["claims"], []
    rows = data["rows"]
    ms = np.array([r["m"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(ms, [r["k_mean"] for r in rows], "o-", label="mean_i k_{i,0} (init)")
    ax.plot(ms, [r["k_max"] for r in rows], "^-", label="max_i k_{i,0} (init)")
    ax.plot(ms, [r["m_exp_bound"] for r in rows], "k--", label="bound m exp(-b^2/2) = m^{4/5}")
    ys = [r["k_mean"] for r in rows] + [r["m_exp_bound"] for r in rows]
    step = results["data"].get("training", {})
    if "sparsity_rows" in step:
        sr = step["sparsity_rows"]
        ax.plot([r["m"] for r in sr], [r["k_max_all_t"] for r in sr], "x", ms=9, mew=2,
                label=f"max_{{i,t}} k_{{i,t}} over {step['steps']} training steps (n={step['n']})")
        ys += [r["k_max_all_t"] for r in sr]
    pl.loglog2(ax, ms, ys)
    ax.set(xlabel="m (neurons)", ylabel="fired neurons per data point",
           title=f"Lemma 2.5/B.6: sparsity (init: {pl.verdict(claims, 'sparsity_init')}, "
                 f"training: {pl.verdict(claims, 'sparsity_train')})")
    pl.finish(fig, ax, results, out, "sparsity.png", made)
    return made
