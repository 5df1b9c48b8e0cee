#!/usr/bin/env python
r"""Benchmark: dense vs active vs dtree (Algorithm 8) vs wtree (Algorithm 9) training steps over m.

Runs :func:`jaxcorr.train.fit` with every method side by side in one process, for each optimizer
(default: ``jaxcorr.train.sgd(1.0)``, ``jaxcorr.train.sgd(0.1, momentum=0.9)`` and
``optax.adam(0.01)``; each row records the optimizer it really ran, its learning rate and whether
the span (Gram) path was used), for m = 2^14 ... 2^22 at n = 8, d = 64 and b = sqrt(0.4 ln m)
(Theorem 4.1's setting), on :func:`jaxcorr.data.synthetic` data and :func:`jaxcorr.nn.init` weights.
For each (m, optimizer, method) it does one warm-up call (compilation), then ``--repeats`` timed
calls, interleaved across the methods AND the optimizers (so a busy machine slows them alike; the
1-minute load average is recorded beside every timed call), and reports the median
(and the minimum) of ``history.ms_per_step`` (wall time of the jitted steps per step,
set-up -- tree INIT, compaction, compilation -- excluded), the median set-up time, the state memory
of the loop (``history.state_bytes``), the log-log slope of ms/step against m per (optimizer,
method), each method's speed-up over dense and its largest relative loss difference to dense.
Writes JSON (with :func:`jaxcorr.benchmarking.machine_info`) and prints a table.

Example (heavy runs take the shared lock):
  flock /work/bench.lock python scripts/bench_train.py --ms 14,18,22 --out docs/bench/bench_train.json
  python scripts/bench_train.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _parse_lrs(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        out[k.strip()] = float(v)
    return out


def _run_all(params, X, y, methods, built, steps, repeats):
    """Warm up every (optimizer, method) pair, then time them interleaved (repeat r runs every pair
    once), so a busy machine slows all pairs alike, the optimizers included (the sgd and momentum
    rows of one width are comparable). Returns per pair ``(last history, first-call s, ms/step list,
    set-up s list, load averages)``."""
    from jaxcorr import benchmarking, train

    out = {}
    for o, (opt, _) in built.items():
        for meth in methods:
            t0 = time.perf_counter()
            _, h = train.fit(params, X, y, steps=steps, method=meth, optimizer=opt)  # warm-up (compiles)
            out[(o, meth)] = [h, time.perf_counter() - t0, [], [], []]
    for _ in range(repeats):
        for (o, meth), rec in out.items():
            _, h = train.fit(params, X, y, steps=steps, method=meth, optimizer=built[o][0])
            rec[0] = h
            rec[2].append(h.ms_per_step)
            rec[3].append(h.setup_s)
            rec[4].append(benchmarking.load_average()[:1])
    return out


def _summaries(rows, methods, opts):
    from jaxcorr import benchmarking

    slopes, speedup = {}, {}
    for o in opts:
        for meth in methods:
            sel = [r for r in rows if r["method"] == meth and r["optimizer"] == o]
            if len(sel) >= 2:
                slopes[f"{o}/{meth}"] = benchmarking.loglog_slope([r["m"] for r in sel],
                                                                  [r["ms_per_step"] for r in sel])
    for r in rows:
        dense = [q for q in rows if q["m"] == r["m"] and q["optimizer"] == r["optimizer"] and q["method"] == "dense"]
        if r["method"] != "dense" and dense:
            r["speedup_vs_dense"] = dense[0]["ms_per_step"] / r["ms_per_step"]
            r["speedup_vs_dense_min"] = dense[0]["ms_per_step_min"] / r["ms_per_step_min"]
            speedup.setdefault(f"{r['optimizer']}/{r['method']}", {})[r["log2_m"]] = r["speedup_vs_dense"]
    return slopes, speedup


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="14,16,18,20,22", help="comma-separated log2(m) values")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed fit call")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per (m, optimizer, method) after a warm-up")
    ap.add_argument("--methods", default="dense,active,dtree,wtree")
    ap.add_argument("--optimizers", default="sgd,momentum,adam")
    ap.add_argument("--lrs", default="", help="learning rates, e.g. sgd=1.0,momentum=0.1,adam=0.01 (defaults)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke run)")
    ap.add_argument("--out", default="bench_train.json", help="JSON output path")
    args = ap.parse_args(argv)
    if args.quick:
        args.ms, args.steps, args.repeats = "10,12", 5, 1

    import jax

    from jaxcorr import benchmarking, data, nn, optimizers

    lrs = {k: optimizers.spec(k).learning_rate for k in optimizers.NAMES}
    lrs.update(_parse_lrs(args.lrs))
    opts = [s for s in args.optimizers.split(",") if s]
    built = {o: (optimizers.make(o, lrs[o]), optimizers.describe(o, lrs[o])) for o in opts}
    methods = [s for s in args.methods.split(",") if s]
    X, y = data.synthetic(args.seed, args.n, args.d)
    rows = []
    for lm in [int(s) for s in args.ms.split(",") if s]:
        m = 1 << lm
        params = nn.init(jax.random.key(args.seed), m, args.d)
        b = nn.default_threshold(m)
        runs = _run_all(params, X, y, methods, built, args.steps, args.repeats)
        for o in opts:
            label = built[o][1]
            ref = runs[(o, "dense")][0].loss if "dense" in methods else None
            for meth in methods:
                h, warm_s, ms_list, setup_list, loads = runs[(o, meth)]
                row = {
                    "log2_m": lm, "m": m, "method": meth, "optimizer": o, "optimizer_used": label,
                    "learning_rate": lrs[o], "b": b, "span": bool(h.span),
                    "ms_per_step": statistics.median(ms_list), "ms_per_step_min": min(ms_list),
                    "ms_per_step_all": ms_list, "load_average_1min": [v[0] for v in loads if v],
                    "setup_s": statistics.median(setup_list), "first_call_s": warm_s,
                    "state_bytes": int(h.state_bytes),
                    "fire_mean_t0": float(h.fire_mean[0]), "fire_union_t0": int(h.fire_union[0]),
                    "n_active": int(h.n_active),
                    "capacity_events": len([e for e in h.capacity_events if e["reason"].startswith("overflow")]),
                }
                if ref is not None:
                    row["max_rel_loss_diff_vs_dense"] = float(
                        (np.abs(h.loss - ref) / np.maximum(np.abs(ref), 1e-30)).max())
                rows.append(row)
                print(f"m=2^{lm} {o:8s} {meth:6s} {row['ms_per_step']:9.2f} ms/step (min {row['ms_per_step_min']:.2f})"
                      f"  setup {row['setup_s']:.2f}s  state {row['state_bytes'] / 2**20:.1f} MiB", flush=True)
        del params
    slopes, speedup = _summaries(rows, methods, opts)
    out = {"machine": benchmarking.machine_info(), "args": vars(args), "learning_rates": lrs,
           "optimizers_used": {o: built[o][1] for o in opts}, "rows": rows, "slopes": slopes,
           "speedup_vs_dense": speedup}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(benchmarking.format_table(rows, ["log2_m", "optimizer", "method", "ms_per_step", "speedup_vs_dense",
                                           "ms_per_step_min", "speedup_vs_dense_min",
                                           "setup_s", "state_bytes", "n_active", "span",
                                           "max_rel_loss_diff_vs_dense"]))
    print("log-log slope of ms/step vs m: " + ", ".join(f"{k} {v:.3f}" for k, v in slopes.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
