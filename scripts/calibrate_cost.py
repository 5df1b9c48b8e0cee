#!/usr/bin/env python
r"""Calibrate :mod:`jaxcorr.cost` on ``docs/bench/bench_regime.json`` (least squares in log space).

For each method, the coefficients of :func:`jaxcorr.cost._step_features` (and of
``_setup_features``) minimise :math:`\sum (\log \hat t - \log t)^2` over the timed rows, with
every coefficient kept >= 0. The features use the model's own expected |A|
(:func:`jaxcorr.cost.expected_active`), not the measured one, so the fitted model is the one that
predicts. The coefficients shipped are fitted on every row; the error is reported three ways
(``errors`` of ``--out``): in sample, **leave one point out** (each (n, m, d) point predicted by a
model fitted without any row at that point: the held-out error) and a fixed split (fitted on the
points whose n is in ``--split-ns``, predicting the other n). Prints the constants for
``jaxcorr/cost.py`` and the markdown table of ``docs/regime.md``.

Example:
  python scripts/calibrate_cost.py --bench docs/bench/bench_regime.json --out docs/bench/cost_calibration.json \\
      --plot docs/figures/regime.png
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np


def _features(cost, r, kind):
    from jaxcorr import optimizers

    spec = optimizers.spec(r["optimizer"])
    n, m, d = r["n"], r["m"], r["d"]
    sparse = r["method"] != "dense"
    A = min(float(m), cost.expected_active(m, r["b"], None, n, d)) if sparse else float(m)
    kw = dict(n=n, m=m, d=d, n_active=A, slots=spec.state_slots)
    if kind == "step":
        return cost._step_features(r["method"], span=spec.span and sparse, **kw)
    return cost._setup_features(r["method"], **kw)


def _fit(F, t, fixed=None):
    """Coefficients >= 0 minimising the squared log error; ``fixed``: column -> a coefficient kept as given.

    Started from two points, the best of which is kept (the log error is not convex in the
    coefficients): equal shares of the mean time, and the non-negative least squares of the relative
    error (``scipy.optimize.nnls`` of ``F c / t = 1``)."""
    from scipy.optimize import least_squares, nnls

    F, t = np.asarray(F, float), np.asarray(t, float)
    fixed = fixed or {}
    free = [k for k in range(F.shape[1]) if k not in fixed]
    base = sum((F[:, k] * c for k, c in fixed.items()), np.zeros(len(t)))
    scale = np.maximum(F[:, free].mean(axis=0), 1e-30)
    G = F[:, free] / scale
    seen = np.any(F[:, free] != 0, axis=0)  # a column no row has (e.g. the row path, left out): coefficient 0

    def resid(theta):
        return np.log(G @ np.exp(theta) + base) - np.log(t)

    starts = [np.log(np.full(len(free), t.mean() / len(free)) / np.maximum(G.mean(axis=0), 1e-30))]
    rel = nnls(G / t[:, None], np.maximum(1.0 - base / t, 0.0))[0]
    starts.append(np.log(np.maximum(rel, 1e-8 * max(rel.max(), 1e-30))))
    sols = [least_squares(resid, np.clip(x0, -60, 60), method="trf") for x0 in starts]
    best = min(sols, key=lambda sol: float(np.sum(sol.fun ** 2)))
    out = np.zeros(F.shape[1])
    out[free] = np.where(seen, np.exp(best.x) / scale, 0.0)
    for k, c in fixed.items():
        out[k] = c
    return out


def _factor(pred, meas):
    return max(pred / meas, meas / pred)


def _summary(f):
    return {"rows": len(f), "max_factor": max(f) if f else None, "median_factor": statistics.median(f) if f else None}


def _calibrate(cost, methods, rows):
    """``(step, setup, compile_s)`` coefficients fitted on ``rows``.

    active first: the trees share its row-path and optimizer coefficients (the same products and
    update on the same (L, w) rows; no tree is timed with another optimizer than sgd, on whose span
    path the update term is collinear with the passes)."""
    step, setup, compile_s = {}, {}, {}
    for meth in sorted(methods.names(), key=lambda k: k != "active"):
        cal = [r for r in rows if r["method"] == meth]
        fixed = {k: step["active"][k] for k in (2, 4)} if methods.get(meth).trees else None
        step[meth] = _fit([_features(cost, r, "step") for r in cal], [r["ms_per_step"] / 1e3 for r in cal],
                          fixed).tolist()
        setup[meth] = _fit([_features(cost, r, "setup") for r in cal], [max(r["setup_s"], 1e-4) for r in cal]).tolist()
        compile_s[meth] = statistics.median(max(r["first_call_s"] - r["setup_s"]
                                                - r["steps"] * r["ms_per_step"] / 1e3, 0.0) for r in cal)
    return {k: step[k] for k in methods.names()}, {k: setup[k] for k in methods.names()}, compile_s


def _install(cost, coefs):
    step, setup, compile_s = coefs
    cost.STEP_COEF.update({k: tuple(v) for k, v in step.items()})
    cost.SETUP_COEF.update({k: tuple(v) for k, v in setup.items()})
    cost.COMPILE_S.update(compile_s)


def _predicted(cost, rows):
    """Per row: the predicted ms/step; for sparse rows also the predicted and measured ratio to dense."""
    out, dense = [], {}
    for r in rows:
        p = cost.predict(r["method"], n=r["n"], m=r["m"], d=r["d"], optimizer=r["optimizer"], b=r["b"])
        e = {"set": r["set"], "n": r["n"], "m": r["m"], "d": r["d"], "method": r["method"],
             "optimizer": r["optimizer"], "measured_ms": r["ms_per_step"], "predicted_ms": p.step_s * 1e3}
        e["step_factor"] = _factor(e["predicted_ms"], e["measured_ms"])
        out.append(e)
        if r["method"] == "dense":
            dense[(r["set"], r["n"], r["m"], r["d"], r["optimizer"])] = e
    for e in out:
        ref = dense.get((e["set"], e["n"], e["m"], e["d"], e["optimizer"]))
        if e["method"] != "dense" and ref is not None:
            e["ratio_measured"] = ref["measured_ms"] / e["measured_ms"]
            e["ratio_predicted"] = ref["predicted_ms"] / e["predicted_ms"]
            e["ratio_factor"] = _factor(e["ratio_predicted"], e["ratio_measured"])
    return out


def _point(r):
    return (r["n"], r["m"], r["d"])


def _held_out(cost, methods, rows, held):
    """Every row whose (n, m, d) is in ``held``, predicted by a model fitted on the other rows."""
    _install(cost, _calibrate(cost, methods, [r for r in rows if _point(r) not in held]))
    return _predicted(cost, [r for r in rows if _point(r) in held])


def _errors(cost, methods, rows, split_ns):
    """The model's errors three ways: in sample (fitted on every row), leave one (n, m, d) point out
    (each point of the ``points`` set predicted by a model fitted without it, its sweep and other rows
    included), and a fixed split (fitted on the rows whose n is in ``split_ns``, predicting the rest).
    Installs the in-sample coefficients last; returns ``(rows, summaries)``."""
    pts = sorted({_point(r) for r in rows if r["set"] == "points"})
    loo = [e for p in pts for e in _held_out(cost, methods, rows, {p})]
    split = _held_out(cost, methods, rows, {_point(r) for r in rows if r["n"] not in split_ns})
    full = _calibrate(cost, methods, rows)
    _install(cost, full)
    per_row = _predicted(cost, rows)
    by_key = {(e["set"], e["n"], e["m"], e["d"], e["method"], e["optimizer"]): e for e in per_row}
    for label, sel in (("leave_one_point_out", loo), ("split", split)):
        for e in sel:
            row = by_key[(e["set"], e["n"], e["m"], e["d"], e["method"], e["optimizer"])]
            row[f"{label}_predicted_ms"] = e["predicted_ms"]
            row[f"{label}_step_factor"] = e["step_factor"]
            if "ratio_factor" in e:
                row[f"{label}_ratio_factor"] = e["ratio_factor"]
    summ = {}
    for label, sel in (("in_sample", per_row), ("leave_one_point_out", loo), ("split", split)):
        summ[label] = {"step": _summary([e["step_factor"] for e in sel]),
                       "ratio": _summary([e["ratio_factor"] for e in sel if "ratio_factor" in e])}
    return full, per_row, summ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="docs/bench/bench_regime.json")
    ap.add_argument("--out", default="docs/bench/cost_calibration.json")
    ap.add_argument("--plot", default="", help="also draw the measured speed ratios against n (PNG path)")
    ap.add_argument("--split-ns", default="4,64,256,442,1000,2000",
                    help="the fixed split's calibration rows (by n); the other n are predicted")
    args = ap.parse_args(argv)

    from jaxcorr import cost, methods

    with open(args.bench) as fh:
        bench = json.load(fh)
    rows = [r for r in bench["rows"] if "ms_per_step" in r]
    split_ns = {int(s) for s in args.split_ns.split(",") if s}
    (step, setup, compile_s), per_row, errors = _errors(cost, methods, rows, split_ns)
    out = {"source": args.bench, "command": "python scripts/calibrate_cost.py " + " ".join(argv or []),
           "fitted_on": "every timed row (points, other, sweep)", "split_ns": sorted(split_ns),
           "step_coef": step, "setup_coef": setup, "compile_s": compile_s, "errors": errors,
           "rows": per_row, "machine": bench.get("machine")}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    print("STEP_COEF = {\n" + "".join(f'    "{k}": {fmt(v)},\n' for k, v in step.items()) + "}")
    print("SETUP_COEF = {\n" + "".join(f'    "{k}": {fmt(v)},\n' for k, v in setup.items()) + "}")
    print("COMPILE_S = {" + ", ".join(f'"{k}": {v:.3g}' for k, v in compile_s.items()) + "}")
    print(json.dumps(errors))
    print(_table(per_row))
    if args.plot:
        _plot(rows, args.plot, cost)
    return 0


def _table(per_row):
    """A markdown table of the points: measured and predicted ms/step, the ratio dense/method, the factors
    in sample and left out (the point predicted by a model fitted without it)."""
    lines = ["| n | m | d | optimizer | method | ms/step measured | predicted | factor | left out | "
             "dense/method measured | predicted | factor | left out |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    sel = [e for e in per_row if e["set"] in ("points", "other")]
    for e in sorted(sel, key=lambda e: (e["set"] != "points", e["optimizer"], e["n"], e["m"], e["d"])):
        def fmt(key, spec=".2f", e=e):
            return f"{e[key]:{spec}}" if key in e else ""

        lines.append(f"| {e['n']} | 2^{e['m'].bit_length() - 1} | {e['d']} | {e['optimizer']} | {e['method']} "
                     f"| {e['measured_ms']:.3g} | {e['predicted_ms']:.3g} | {fmt('step_factor')} "
                     f"| {fmt('leave_one_point_out_step_factor')} | {fmt('ratio_measured', '.3g') or 1} "
                     f"| {fmt('ratio_predicted', '.3g') or 1} | {fmt('ratio_factor')} "
                     f"| {fmt('leave_one_point_out_ratio_factor')} |")
    return "\n".join(lines)


def _plot(rows, path, cost):
    """The measured speed ratio dense / active against n at the sweep's widths, with the model's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = {}
    for r in rows:
        if r["set"] == "sweep":
            groups.setdefault((r["m"], r["d"]), {}).setdefault(r["n"], {})[r["method"]] = r
    for ((m, d), by_n), color in zip(sorted(groups.items()), ("C0", "C1", "C2", "C3")):
        pts = sorted((n, v["dense"]["ms_per_step"] / v["active"]["ms_per_step"]) for n, v in by_n.items()
                     if "active" in v and "dense" in v)
        ax.plot(*zip(*pts), "o-", color=color, label=f"measured, m=2^{m.bit_length() - 1}, d={d}")
        ns = np.unique(np.geomspace(min(by_n), max(by_n), 40).astype(int))
        b = next(iter(next(iter(by_n.values())).values()))["b"]
        pred = [cost.predict("dense", n=int(n), m=m, d=d, b=b).step_s / cost.predict("active", n=int(n), m=m, d=d,
                                                                                       b=b).step_s for n in ns]
        ax.plot(ns, pred, "--", color=color, lw=1, label=f"cost model, m=2^{m.bit_length() - 1}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (data points)")
    ax.set_ylabel("speed ratio dense / active (per step)")
    ax.set_title("Where sparsity pays (above 1: active is faster than dense)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
