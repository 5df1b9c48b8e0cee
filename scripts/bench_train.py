#!/usr/bin/env python
r"""Benchmark: dense vs dtree (Algorithm 8) vs wtree (Algorithm 9) training steps over the width m.

Runs :func:`jaxcorr.train.fit` with the three methods side by side in one process, for
m = 2^14 ... 2^22 at n = 8, d = 64 and b = sqrt(0.4 ln m) (Theorem 4.1's setting), on
:func:`jaxcorr.data.synthetic` data and :func:`jaxcorr.nn.init` weights. For each (m, method) it does
one warm-up call (compilation), then ``--repeats`` timed calls, and reports the median of
``history["ms_per_step"]`` (wall time of the jitted steps per step: what one more step costs, with
set-up -- tree INIT, compaction, compilation -- excluded), the median set-up time, the log-log slope of
ms/step against m per method, and each method's largest relative loss difference to dense over the
trajectory. Writes JSON (with a description of the machine) and prints a table.

Example:
  python scripts/bench_train.py --ms 14,16,18,20,22 --steps 20 --repeats 3 --out bench_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def _machine() -> dict:
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def _slope(ms, ts) -> float:
    ms, ts = np.log2(np.asarray(ms, float)), np.log2(np.asarray(ts, float))
    if len(ms) < 2:
        return float("nan")
    return float(np.polyfit(ms, ts, 1)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="14,16,18,20,22", help="comma-separated log2(m) values")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed fit call")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per (m, method) after a warm-up")
    ap.add_argument("--methods", default="dense,dtree,wtree")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "momentum", "adam"])
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_train.json", help="JSON output path")
    args = ap.parse_args(argv)

    import jax
    import optax

    from jaxcorr import data, nn, train

    opt = {"sgd": optax.sgd(args.lr), "momentum": optax.sgd(args.lr, momentum=0.9),
           "adam": optax.adam(args.lr * 1e-2)}[args.optimizer]
    methods = [s for s in args.methods.split(",") if s]
    log_ms = [int(s) for s in args.ms.split(",") if s]
    X, y = data.synthetic(args.seed, args.n, args.d)
    rows = []
    for lm in log_ms:
        m = 1 << lm
        params = nn.init(jax.random.key(args.seed), m, args.d)
        b = nn.default_threshold(m)
        losses = {}
        for meth in methods:
            t0 = time.perf_counter()
            _, h = train.fit(params, X, y, steps=args.steps, method=meth, optimizer=opt)  # warm-up
            warm_s = time.perf_counter() - t0
            ms_list, setup_list = [], []
            for _ in range(args.repeats):
                _, h = train.fit(params, X, y, steps=args.steps, method=meth, optimizer=opt)
                ms_list.append(h["ms_per_step"])
                setup_list.append(h["setup_s"])
            losses[meth] = h["loss"]
            row = {
                "log2_m": lm, "m": m, "method": meth, "b": b,
                "ms_per_step": statistics.median(ms_list), "ms_per_step_all": ms_list,
                "setup_s": statistics.median(setup_list), "first_call_s": warm_s,
                "fire_mean_t0": float(h["fire_mean"][0]), "fire_union_t0": int(h["fire_union"][0]),
                "n_active": int(h["n_active"]), "span": bool(h["span"]),
                "capacity_events": len([e for e in h["capacity_events"] if e["reason"].startswith("overflow")]),
            }
            rows.append(row)
            print(f"m=2^{lm} {meth:6s} {row['ms_per_step']:9.2f} ms/step  setup {row['setup_s']:.2f}s", flush=True)
        if "dense" in losses:
            ref = losses["dense"]
            for row in rows:
                if row["m"] == m:
                    diff = np.abs(losses[row["method"]] - ref) / np.maximum(np.abs(ref), 1e-30)
                    row["max_rel_loss_diff_vs_dense"] = float(diff.max())
    slopes = {}
    for meth in methods:
        sel = [r for r in rows if r["method"] == meth]
        slopes[meth] = _slope([r["m"] for r in sel], [r["ms_per_step"] for r in sel])
    speedup = {}
    for r in rows:
        if r["method"] != "dense":
            dense = [q for q in rows if q["m"] == r["m"] and q["method"] == "dense"]
            if dense:
                speedup.setdefault(r["method"], {})[r["log2_m"]] = dense[0]["ms_per_step"] / r["ms_per_step"]
    out = {"machine": _machine(), "args": vars(args), "rows": rows, "slopes": slopes,
           "speedup_vs_dense": speedup}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    hdr = f"{'m':>8} {'method':>6} {'ms/step':>9} {'x dense':>8} {'setup s':>8} {'k mean':>8} {'|A|':>8} {'max rel diff':>12}"
    print(hdr)
    for r in rows:
        sp = speedup.get(r["method"], {}).get(r["log2_m"], 1.0)
        print(f"{'2^%d' % r['log2_m']:>8} {r['method']:>6} {r['ms_per_step']:9.2f} {sp:8.1f} {r['setup_s']:8.2f} "
              f"{r['fire_mean_t0']:8.0f} {r['n_active']:8d} {r.get('max_rel_loss_diff_vs_dense', float('nan')):12.2e}")
    print("log-log slope of ms/step vs m: " + ", ".join(f"{k} {v:.3f}" for k, v in slopes.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
