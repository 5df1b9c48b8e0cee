#!/usr/bin/env python
r"""Benchmark: training widths dense GD cannot hold, wide-model set-up + fit vs dense.

For each m = 2^k (``--ms``), at n = 8, d = 64, b = sqrt(0.4 ln m) on :func:`jaxcorr.data.synthetic`
data, runs in its own subprocess (so the peak resident memory is that run's, read from the OS:
``VmHWM`` of /proc/self/status, or ``ru_maxrss``):

- ``implicit``: :func:`jaxcorr.wide.setup` (W(0) streamed from the key, only the active rows
  kept), then :func:`jaxcorr.wide.fit` for ``--steps`` steps (``--steps-at k:s`` overrides per
  width; the issue's targets are 20 steps at 2^26 and 100 at 2^28) with the sparse ``--method``;
- ``dense``: eager :func:`jaxcorr.nn.init` + :func:`jaxcorr.train.fit` ``method="dense"``, only where
  :func:`jaxcorr.memory.estimate` (full width) fits ``--dense-budget-gib``.

Reports per run: set-up seconds (generation + fire sets; for dense, nn.init), the fit's own set-up,
ms per step (median over the run's chunks is not available: ``History.ms_per_step``, compiled
steps only), |A|, the peak RSS, the estimate of :func:`jaxcorr.memory.estimate`, and whether
the issue's memory targets hold. Where both ran, the implicit and dense loss trajectories are
compared (they must agree to float rounding: same network, same steps). Writes JSON with the machine.

Example (the full run takes ~30 min on 2 CPU cores; run it alone):
  flock /work/bench.lock python scripts/bench_width.py --out docs/bench/bench_width.json
  python scripts/bench_width.py --quick --out /tmp/bench_width_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TARGETS_GIB = {26: 4.0, 28: 8.0}  # peak memory targets at m = 2^26 and 2^28


def _one(args) -> dict:
    """One run in this (child) process; returns its figures."""
    import jax
    import numpy as np

    from jaxcorr import benchmarking, data, memory, nn, train, wide

    m = 1 << args.logm
    X, y = data.synthetic(args.seed, args.n, args.d)
    key = jax.random.key(args.seed)
    out = {"logm": args.logm, "m": m, "mode": args.mode, "steps": args.steps, "n": args.n, "d": args.d}
    t0 = time.perf_counter()
    if args.mode == "implicit":
        # wide.fit's default optimizer is train.sgd: the span path
        out["estimate_bytes"] = memory.estimate(args.method, n=args.n, m=m, d=args.d, wide=True, optimizer="sgd").total
        last = [0.0]

        def progress(p):
            if p["elapsed_s"] - last[0] > 30 or p["rows_done"] == p["rows"]:
                last[0] = p["elapsed_s"]
                print(f"  [2^{args.logm}] set-up {p['rows_done'] / p['rows']:.0%} {p['elapsed_s']:.0f}s "
                      f"|A|={p['n_active']}", file=sys.stderr, flush=True)

        model, info = wide.setup(key, m, args.d, X, progress=progress)
        out.update(setup_s=info["setup_s"], n_active=info["n_active"], n_fire_union=info["n_fire_union"],
                   k0_max=int(info["k0"].max()), rows_per_s=info["rows_per_s"], chunk_rows=info["chunk_rows"],
                   capacity_events=len(info["capacity_events"]), peak_after_setup_bytes=benchmarking.peak_rss_bytes())
        model, hist = wide.fit(model, X, y, steps=args.steps, method=args.method)
    else:
        out["estimate_bytes"] = memory.estimate("dense", n=args.n, m=m, d=args.d).total
        params = jax.block_until_ready(nn.init(key, m, args.d))
        out["setup_s"] = time.perf_counter() - t0
        out["n_active"] = m
        params, hist = train.fit(params, X, y, steps=args.steps, method="dense")
    out.update(method=hist.method, fit_setup_s=hist.setup_s, ms_per_step=hist.ms_per_step,
               loss=[float(v) for v in hist.loss], total_s=time.perf_counter() - t0,
               peak_bytes=benchmarking.peak_rss_bytes(), load_average=benchmarking.load_average())
    del np
    return out


def _generator_rates(rows: int = 1 << 18, d: int = 64, repeats: int = 5) -> dict:
    """Words per second of nn.init_rows (both Threefry words used) vs jax.random.normal, same process."""
    import jax
    import jax.numpy as jnp

    from jaxcorr import benchmarking, nn

    key = jax.random.key(0)
    ours = jax.jit(lambda q: nn.init_rows(key, rows, d, block=q).W.sum())
    ref = jax.jit(lambda k: jax.random.normal(k, (rows, d)).sum())
    t_ours = benchmarking.median_time(ours, jnp.uint32(0), repeats=repeats)
    t_ref = benchmarking.median_time(ref, key, repeats=repeats)
    return {"rows": rows, "d": d, "init_rows_words_per_s": rows * d / t_ours,
            "jax_random_normal_words_per_s": rows * d / t_ref, "speedup": t_ref / t_ours}


def _spawn(args, logm: int, mode: str, steps: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--logm", str(logm), "--mode", mode,
           "--steps", str(steps), "--n", str(args.n), "--d", str(args.d), "--seed", str(args.seed),
           "--method", args.method]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        return {"logm": logm, "mode": mode, "error": f"exit {proc.returncode}", "wall_s": time.perf_counter() - t0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(rows: list) -> None:
    """Implicit vs dense loss trajectories at the same m: max relative difference."""
    by = {(r["logm"], r["mode"]): r for r in rows if "loss" in r}
    for (logm, mode), r in by.items():
        other = by.get((logm, "dense"))
        if mode == "implicit" and other and len(other["loss"]) == len(r["loss"]):
            diff = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(r["loss"], other["loss"]))
            r["loss_rel_diff_vs_dense"] = diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", default="22,23,24,25,26,27,28", help="comma-separated log2(m)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--steps-at", default="28:100", help="per-width steps, e.g. 28:100,27:50")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="active", help="sparse method of the implicit runs")
    ap.add_argument("--dense-budget-gib", type=float, default=10.0,
                    help="run dense only where its eager estimate fits this (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="m = 2^16, 2^18, 5 steps (a smoke run)")
    ap.add_argument("--out", default="bench_width.json")
    ap.add_argument("--generator", action="store_true", help="also time nn.init_rows vs jax.random.normal")
    ap.add_argument("--append", action="store_true", help="keep the runs of other widths already in --out")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--logm", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["implicit", "dense"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args)), flush=True)
        return 0
    from jaxcorr import benchmarking, memory

    ms = [16, 18] if args.quick else [int(v) for v in args.ms.split(",") if v]
    steps_at = dict(tuple(int(x) for x in kv.split(":")) for kv in args.steps_at.split(",") if kv)
    rows, prev = [], {}
    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            prev = json.load(f)
        rows = [r for r in prev["runs"] if r["logm"] not in ms]
    gen = _generator_rates() if args.generator else prev.get("generator")
    if args.generator:
        print(json.dumps(gen), flush=True)

    def write():
        _compare(rows)
        rows.sort(key=lambda r: (r["logm"], r["mode"]))
        out = {"machine": benchmarking.machine_info(), "argv": sys.argv[1:], "n": args.n, "d": args.d,
               "method": args.method, "targets_gib": TARGETS_GIB, "generator": gen, "runs": rows}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)

    write()
    for logm in ms:
        steps = 5 if args.quick else steps_at.get(logm, args.steps)
        r = _spawn(args, logm, "implicit", steps)
        if logm in TARGETS_GIB and "peak_bytes" in r:
            r["target_peak_gib"] = TARGETS_GIB[logm]
            r["target_holds"] = r["peak_bytes"] <= TARGETS_GIB[logm] * 2**30
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "loss"}), flush=True)
        write()
        est = memory.estimate("dense", n=args.n, m=1 << logm, d=args.d).total
        if est <= args.dense_budget_gib * 2**30:
            r = _spawn(args, logm, "dense", steps)
        else:
            r = {"logm": logm, "m": 1 << logm, "mode": "dense", "skipped": "eager estimate "
                 f"{est / 2**30:.1f} GiB exceeds the {args.dense_budget_gib} GiB budget", "estimate_bytes": est}
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "loss"}), flush=True)
        write()  # after every width, so a long run keeps what it measured
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
