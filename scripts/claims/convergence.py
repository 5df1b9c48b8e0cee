"""Convergence (Theorem 1.1; Section 2): claim ``convergence``.

In the over-parameterized regime (m >> n) gradient descent drives the training loss toward 0, and
the sparse trainers follow the dense trajectory exactly (up to float rounding). Decided by the loss
curves themselves (no timing): loss[T] / loss[0] at most a tolerance, and every sparse curve within
a relative tolerance of the dense one.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxcorr import data as jdata
from jaxcorr import nn, train
from scripts.claims import common
from scripts.claims import plotting as pl
from scripts.claims.training import sparse_methods

GROUP = "convergence"
TOLERANCES = {
    "loss_ratio_max": 0.05,  # loss[T] / loss[0]
    "curve_rel_diff_max": 1e-3,  # max_t |L_method - L_dense| / L_dense[0]
}

SIZES = {
    "tiny": dict(n=4, d=8, m=2**9, steps=30),
    "quick": dict(n=16, d=16, m=2**14, steps=500),
    "full": dict(n=16, d=16, m=2**14, steps=500),
}


def measure(cfg, key, tol):
    """Loss curves of every method from the same start. Returns (claims, data)."""
    c = cfg
    X, y = jdata.synthetic(1, c["n"], c["d"])
    params = nn.init(jax.random.fold_in(key, 7), c["m"], c["d"])
    methods = ["dense"] + sparse_methods()
    curves = {}
    for method in methods:
        _, h = train.fit(params, X, y, steps=c["steps"], method=method)
        curves[method] = np.asarray(h.loss, np.float64)
    d0 = curves["dense"]
    ratio = float(d0[-1] / d0[0])
    diff = {meth: float(np.max(np.abs(curves[meth] - d0)) / d0[0]) for meth in methods[1:]}
    ok_ratio, ok_diff = ratio <= tol["loss_ratio_max"], max(diff.values()) <= tol["curve_rel_diff_max"]
    note = "; ".join(s for s, bad in (
        (f"loss fell only to {ratio:.3g} of its start in {c['steps']} steps", not ok_ratio),
        (f"a sparse curve differs from dense by {max(diff.values()):.3g} of L(0)", not ok_diff)) if bad)
    claim = common.claim(
        "convergence", "Theorem 1.1; Section 2 (training to zero loss, exact sparse GD)",
        predicted={"loss": "-> 0 in the over-parameterized regime m >> n", "sparse_vs_dense": "identical curves"},
        regime=f"n={c['n']}, m={c['m']}, d={c['d']}, {c['steps']} steps of sgd (train.fit default)",
        measured={"loss_first": float(d0[0]), "loss_last": float(d0[-1]), "loss_ratio": ratio,
                  **{f"max_rel_diff_{k}": v for k, v in diff.items()}},
        tolerance={"loss_ratio_max": tol["loss_ratio_max"], "curve_rel_diff_max": tol["curve_rel_diff_max"]},
        holds=ok_ratio and ok_diff, note=note, figure="convergence.png", decided_by="count")
    return [claim], {"curves": {k: v.tolist() for k, v in curves.items()}, "config": dict(c)}


def figure(results, out, plt):
    """convergence.png: loss curves (left) and each sparse curve's difference to dense (right)."""
    data, claims, made = results["data"]["convergence"], results["claims"], []
    curves, c = data["curves"], data["config"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for meth, st in zip(curves, ("-", "--", ":", "-.")):
        axes[0].semilogy(curves[meth], st, label=meth)
    axes[0].set(xlabel="step", ylabel="training loss L(W)",
                title=f"n={c['n']}, m={c['m']}, d={c['d']}: {pl.verdict(claims, 'convergence')}")
    axes[0].legend()
    d0 = np.asarray(curves["dense"])
    for meth in list(curves)[1:]:
        axes[1].semilogy(np.abs(np.asarray(curves[meth]) - d0) / d0[0] + 1e-12, label=f"|{meth} - dense| / L(0)")
    axes[1].axhline(results["tolerances"]["convergence"]["curve_rel_diff_max"], color="k", ls="--", lw=1,
                    label="tolerance")
    axes[1].set(xlabel="step", ylabel="relative difference (+1e-12)", title="curves coincide")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Convergence in the over-parameterized regime {pl.subtitle(results)}", fontsize=9)
    pl.save(fig, out, "convergence.png", made)
    return made
