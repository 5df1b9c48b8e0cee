#!/usr/bin/env python
r"""Calibrate :mod:`jaxcorr.cost` on ``docs/bench/bench_regime.json`` (least squares in log space).

For each method, the coefficients of :func:`jaxcorr.cost._step_features` (and of
``_setup_features``) minimise :math:`\sum (\log \hat t - \log t)^2` over the calibration rows, with
every coefficient kept >= 0 (fitted as ``exp(theta)``). The features use the model's own expected
|A| (:func:`jaxcorr.cost.expected_active`), not the measured one, so the fitted model is the one
that predicts. Calibration rows: the ``sweep`` set, the adam rows and the ``points`` rows whose n is
in ``--calibrate-ns``; the other points rows are held out. Writes the coefficients and the errors
(factor max / median, calibration and held-out) to ``--out`` and prints the constants for
``jaxcorr/cost.py``.

Example:
  python scripts/calibrate_cost.py --bench docs/bench/bench_regime.json --out docs/bench/cost_calibration.json
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
    A = min(float(m), cost.expected_active(m, r["b"], None, n)) if sparse else float(m)
    kw = dict(n=n, m=m, d=d, n_active=A, slots=spec.state_slots)
    if kind == "step":
        return cost._step_features(r["method"], span=spec.span and sparse, **kw)
    return cost._setup_features(r["method"], **kw)


def _fit(F, t):
    from scipy.optimize import least_squares

    F, t = np.asarray(F, float), np.asarray(t, float)
    scale = F.mean(axis=0)
    G = F / scale

    def resid(theta):
        return np.log(G @ np.exp(theta)) - np.log(t)

    x0 = np.log(np.full(F.shape[1], t.mean() / F.shape[1]) / np.maximum(G.mean(axis=0), 1e-30))
    sol = least_squares(resid, np.clip(x0, -60, 60), method="lm" if len(t) > F.shape[1] else "trf")
    return np.exp(sol.x) / scale


def _factor(pred, meas):
    return max(pred / meas, meas / pred)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="docs/bench/bench_regime.json")
    ap.add_argument("--out", default="docs/bench/cost_calibration.json")
    ap.add_argument("--plot", default="", help="also draw the measured speed ratios against n (PNG path)")
    ap.add_argument("--calibrate-ns", default="4,64,442,1000,2000", help="points rows (by n) used for calibration")
    args = ap.parse_args(argv)

    from jaxcorr import cost, methods

    with open(args.bench) as fh:
        bench = json.load(fh)
    rows = [r for r in bench["rows"] if "ms_per_step" in r]
    cal_ns = {int(s) for s in args.calibrate_ns.split(",") if s}

    def calibrating(r):
        return r["set"] == "sweep" or r["optimizer"] != "sgd" or r["n"] in cal_ns

    step, setup, compile_s, errors = {}, {}, {}, {}
    for meth in methods.names():
        cal = [r for r in rows if r["method"] == meth and calibrating(r)]
        step[meth] = _fit([_features(cost, r, "step") for r in cal], [r["ms_per_step"] / 1e3 for r in cal]).tolist()
        setup[meth] = _fit([_features(cost, r, "setup") for r in cal], [max(r["setup_s"], 1e-4) for r in cal]).tolist()
        compile_s[meth] = statistics.median(max(r["first_call_s"] - r["setup_s"]
                                                - r["steps"] * r["ms_per_step"] / 1e3, 0.0)
                                            for r in cal)
    cost.STEP_COEF.update({k: tuple(v) for k, v in step.items()})
    cost.SETUP_COEF.update({k: tuple(v) for k, v in setup.items()})
    cost.COMPILE_S.update(compile_s)
    per_row = []
    for r in rows:
        p = cost.predict(r["method"], n=r["n"], m=r["m"], d=r["d"], optimizer=r["optimizer"], b=r["b"])
        per_row.append({"set": r["set"], "n": r["n"], "m": r["m"], "d": r["d"], "method": r["method"],
                        "optimizer": r["optimizer"], "calibration": calibrating(r),
                        "measured_ms": r["ms_per_step"], "predicted_ms": p.step_s * 1e3,
                        "step_factor": _factor(p.step_s * 1e3, r["ms_per_step"])})
    for label, sel in (("calibration", [e for e in per_row if e["calibration"]]),
                       ("held_out", [e for e in per_row if not e["calibration"]])):
        f = [e["step_factor"] for e in sel]
        errors[label] = {"rows": len(f), "max_factor": max(f) if f else None,
                         "median_factor": statistics.median(f) if f else None}
    out = {"source": args.bench, "command": "python scripts/calibrate_cost.py " + " ".join(argv or []),
           "calibrate_ns": sorted(cal_ns), "step_coef": step, "setup_coef": setup, "compile_s": compile_s,
           "step_errors": errors, "rows": per_row, "machine": bench.get("machine")}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
    print("STEP_COEF = {\n" + "".join(f'    "{k}": {fmt(v)},\n' for k, v in step.items()) + "}")
    print("SETUP_COEF = {\n" + "".join(f'    "{k}": {fmt(v)},\n' for k, v in setup.items()) + "}")
    print("COMPILE_S = {" + ", ".join(f'"{k}": {v:.3g}' for k, v in compile_s.items()) + "}")
    print(json.dumps(errors))
    print(_table(rows, cost))
    if args.plot:
        _plot(rows, args.plot)
    return 0


def _table(rows, cost):
    """A markdown table of the points: measured ms/step per method, ratio dense/method, predicted ratio."""
    pts = {}
    for r in rows:
        if r["set"] == "points" and r["optimizer"] == "sgd":
            pts.setdefault((r["n"], r["m"], r["d"]), {})[r["method"]] = r
    lines = ["| n | m | d | method | ms/step | set-up s | dense/method measured | predicted |",
             "|---|---|---|---|---|---|---|---|"]
    for (n, m, d), by in sorted(pts.items()):
        pd = cost.predict("dense", n=n, m=m, d=d).step_s
        for meth, r in by.items():
            pr = pd / cost.predict(meth, n=n, m=m, d=d).step_s
            lines.append(f"| {n} | 2^{m.bit_length() - 1} | {d} | {meth} | {r['ms_per_step']:.3g} | {r['setup_s']:.3g} "
                         f"| {by['dense']['ms_per_step'] / r['ms_per_step']:.3g} | {pr:.3g} |")
    return "\n".join(lines)


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = {}
    for r in rows:
        if r["optimizer"] == "sgd" and (r["set"] == "sweep" or r["method"] in ("dtree", "wtree")):
            groups.setdefault((r["set"], r["m"]), {}).setdefault(r["n"], {})[r["method"]] = r["ms_per_step"]
    for (kind, m), by_n in sorted(groups.items()):
        for meth, style in (("active", "o-"), ("dtree", "s--"), ("wtree", "^:")):
            pts = sorted((n, v["dense"] / v[meth]) for n, v in by_n.items() if meth in v and "dense" in v)
            if len(pts) >= 2 and (kind == "sweep") == (meth == "active"):
                ax.plot(*zip(*pts), style, label=f"dense/{meth}, m=2^{m.bit_length() - 1}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (data points)")
    ax.set_ylabel("measured speed ratio dense / method (per step)")
    ax.set_title("Where sparsity pays (above 1: the sparse method is faster)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
