#!/usr/bin/env python
r"""Probe: the ``method="active"`` step in isolation, per optimizer, side by side in one process.

Builds the compacted active-row problem of :func:`jaxcorr.train.fit` at width m = 2^k (n = 8,
d = 64, b = sqrt(0.4 ln m)) WITHOUT the O(nmd) set-up: the initial leaves of the active rows are
drawn directly from their law (``<w_r, x_i>`` ~ N(0, X X^T) for w_r ~ N(0, I_d), the rows kept
where some leaf exceeds b, as the set-up keeps the rows of A), so only (n, |A|) arrays exist. Then
compiles the chunk runner of :mod:`jaxcorr.train._steps` (``lax.scan`` of ``--steps`` steps) for
each optimizer and times the runs interleaved (medians after compilation), optionally dumping the
optimized HLO of each (``--hlo DIR``).

Example:
  python scripts/probe_active_step.py --logm 22 --steps 50 --repeats 7 --hlo /tmp/hlo
  python scripts/probe_active_step.py --logm 14,16,18,20,22 --optimizers sgd1,momentum (a sweep: slopes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np


def active_problem(logm: int, n: int, d: int, seed: int = 0):
    """``(X, y, ip0 (n, L) with -inf padding, a (L,), n_real, b, scale, L)`` for width 2^logm."""
    import jax.numpy as jnp

    from jaxcorr import data, maxtree, nn

    m = 1 << logm
    b = nn.default_threshold(m)
    X, y = data.synthetic(seed, n, d)
    G = np.asarray(X, np.float64) @ np.asarray(X, np.float64).T
    C = np.linalg.cholesky(G + 1e-12 * np.eye(n))
    rng = np.random.default_rng(seed)
    keep = []
    for start in range(0, m, 1 << 20):
        z = rng.standard_normal((min(1 << 20, m - start), n)) @ C.T  # rows ~ N(0, G)
        keep.append(z[(z > b).any(axis=1)])
    ip = np.concatenate(keep).astype(np.float32)
    L = ip.shape[0]
    Lp = maxtree.bucket(L + 1)
    ip0 = np.full((n, Lp), -np.inf, np.float32)
    ip0[:, :L] = ip.T
    a = np.zeros((Lp,), np.float32)
    a[:L] = rng.choice([-1.0, 1.0], size=L)
    return X, y, jnp.asarray(ip0), jnp.asarray(a), L, b, 1.0 / math.sqrt(m), Lp


def build(opt, problem, steps: int):
    """The compiled chunk of :mod:`jaxcorr.train._steps` (span path, K held transposed) and its
    ``(carry, consts)``: a callable ``ex(carry, consts)`` that runs ``steps`` steps, kept (not donated)
    so that it can be timed repeatedly on the same input."""
    import jax.numpy as jnp

    from jaxcorr import _linalg
    from jaxcorr.train import _linearity
    from jaxcorr.train import _steps as ts

    X, y, ip0, a, L, b, scale, L_padded = problem
    n = X.shape[0]
    verdict = _linearity.analyze(opt, 16, X.shape[1], np.dtype(np.float32))
    P0 = jnp.zeros((n, L_padded), jnp.float32)
    state = opt.init(P0)
    consts = ts.CompactConsts(X=X, y=y, a=a, b=jnp.asarray(b, jnp.float32), scale=jnp.asarray(scale, jnp.float32),
                              n_real=jnp.asarray(L, jnp.int32), gram=_linalg.inner(X, X), ip0=ip0, ref=(),
                              valid=None, n_points=None)
    cfg = ts.StepConfig("active", opt, 0, True, tuple(verdict.row_axes), True, None)
    carry = (P0, state, ())
    ts.compile(cfg, steps, carry, consts, donate=False)

    def ex(carry, consts):
        return ts.run(cfg, steps, carry, consts, donate=False)

    return ex, carry, consts


def _one_width(logm, args, variants):
    import jax

    problem = active_problem(logm, args.n, args.d)
    built = {}
    for name, opt in variants.items():
        ex, carry, consts = build(opt, problem, args.steps)
        built[name] = (ex, carry, consts)
        if args.hlo:
            os.makedirs(args.hlo, exist_ok=True)  # the optimized HLO of the same chunk
            with open(os.path.join(args.hlo, f"2^{logm}_{name}.hlo.txt"), "w") as f:
                f.write(jax.jit(ex).lower(carry, consts).compile().as_text())
        jax.block_until_ready(ex(carry, consts))
    wall = {k: [] for k in built}
    cpu = {k: [] for k in built}
    for _ in range(args.repeats):
        for name, (ex, carry, consts) in built.items():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(ex(carry, consts))
            wall[name].append((time.perf_counter() - t0) / args.steps * 1e3)
            cpu[name].append((time.process_time() - c0) / args.steps * 1e3)
    n, Lp = args.n, problem[7]
    return {"logm": logm, "n_active": problem[4], "L_padded": Lp, "nL_bytes": 4 * n * Lp,
            "ms_per_step": {k: statistics.median(v) for k, v in wall.items()},
            "ms_per_step_min": {k: min(v) for k, v in wall.items()},
            "cpu_ms_per_step": {k: statistics.median(v) for k, v in cpu.items()}, "ms_all": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logm", default="22", help="comma-separated log2(m) values")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="steps inside one jitted lax.scan")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--optimizers", default="sgd1,sgd01,momentum",
                    help="sgd1 = train.sgd(1.0), sgd01 = train.sgd(0.1), momentum = train.sgd(0.1, momentum=0.9)")
    ap.add_argument("--hlo", default="", help="directory for the optimized HLO of each variant")
    ap.add_argument("--out", default="", help="JSON output path")
    args = ap.parse_args(argv)

    from jaxcorr import benchmarking, train

    known = {"sgd1": train.sgd(1.0), "sgd01": train.sgd(0.1), "momentum": train.sgd(0.1, momentum=0.9)}
    variants = {k: known[k] for k in args.optimizers.split(",") if k}
    per = []
    for logm in [int(v) for v in args.logm.split(",") if v]:
        r = _one_width(logm, args, variants)
        per.append(r)
        print(json.dumps({k: r[k] for k in ("logm", "n_active", "L_padded", "ms_per_step", "cpu_ms_per_step")}),
              flush=True)
    res = {"machine": benchmarking.machine_info(), "load_average": benchmarking.load_average(),
           "steps": args.steps, "repeats": args.repeats, "widths": per}
    if len(per) >= 2:
        ms = [1 << r["logm"] for r in per]
        A = [r["n_active"] for r in per]
        res["slope_A_vs_m"] = benchmarking.loglog_slope(ms, A)
        res["slopes"] = {k: {"ms_vs_m": benchmarking.loglog_slope(ms, [r["ms_per_step"][k] for r in per]),
                             "ms_vs_A": benchmarking.loglog_slope(A, [r["ms_per_step"][k] for r in per])}
                         for k in variants}
        print(json.dumps({"slope_A_vs_m": res["slope_A_vs_m"], "slopes": res["slopes"]}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
