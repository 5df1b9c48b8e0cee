#!/usr/bin/env python
r"""Benchmark: where the sparse methods beat dense, over n = 4 ... 2000 (issue 24).

For each (n, m, d) point, on :func:`jaxcorr.data.synthetic` unit-norm data and
:func:`jaxcorr.nn.init` weights at the default threshold :math:`b = \sqrt{0.4 \ln m}`, every method
of :mod:`jaxcorr.methods` runs :func:`jaxcorr.train.fit` side by side in one process: one warm-up call
(compilation), then ``--repeats`` timed calls of ``--steps`` steps, interleaved across methods. Each
row records the median of ``History.ms_per_step`` and ``History.setup_s``, ``n_active`` (|A|), the
mean fire count and the span flag. Methods whose warm-up step is slower than ``--slow-ms`` get a
single timed call (the machine is shared; the whole run stays near ten minutes).

Two sets of points: ``points`` (the six-plus (n, m, d) validation points of the cost model) and
``sweep`` (dense and active at m = 2^14 and 2^17, n = 4 ... 2000, for the regime plot).

Example (takes the shared lock):
  flock /work/bench.lock python scripts/bench_regime.py --out docs/bench/bench_regime.json
  python scripts/bench_regime.py --quick --out /tmp/regime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

POINTS = [(4, 16, 32), (8, 18, 64), (64, 16, 64), (360, 17, 64), (442, 16, 10), (1797, 15, 64), (2000, 14, 32),
          (256, 14, 32), (1000, 12, 32)]
SWEEP_NS = [4, 16, 64, 256, 1000, 2000]
SWEEP_LOG2_MS = [14, 17]
SWEEP_D = 32


def _measure(n, m, d, methods, optimizer_name, steps, repeats, slow_ms, seed=0):
    import jax

    from jaxcorr import benchmarking, data, nn, optimizers, train

    X, y = data.synthetic(seed, n, d)
    params = nn.init(jax.random.key(seed), m, d)
    opt = optimizers.make(optimizer_name)
    recs = {}
    for meth in methods:
        t0 = time.perf_counter()
        try:
            _, h = train.fit(params, X, y, steps=steps, method=meth, optimizer=opt)
        except ValueError as err:  # a refused optimizer or the DDFN cap: recorded, not timed
            recs[meth] = {"error": str(err)[:200]}
            continue
        recs[meth] = {"first_call_s": time.perf_counter() - t0, "ms": [], "setup": [], "h": h,
                      "reps": 1 if h.ms_per_step > slow_ms else repeats}
    for r in range(repeats):
        for meth, rec in recs.items():
            if "error" in rec or r >= rec["reps"]:
                continue
            _, h = train.fit(params, X, y, steps=steps, method=meth, optimizer=opt)
            rec["h"] = h
            rec["ms"].append(h.ms_per_step)
            rec["setup"].append(h.setup_s)
    rows = []
    for meth, rec in recs.items():
        row = {"n": n, "m": m, "log2_m": m.bit_length() - 1, "d": d, "method": meth, "optimizer": optimizer_name,
               "steps": steps, "b": nn.default_threshold(m)}
        if "error" in rec:
            row["error"] = rec["error"]
        else:
            h = rec["h"]
            row.update(ms_per_step=statistics.median(rec["ms"]), ms_per_step_all=rec["ms"],
                       setup_s=statistics.median(rec["setup"]), first_call_s=rec["first_call_s"],
                       n_active=int(h.n_active), fire_mean=float(h.fire_mean.mean()),
                       fire_union=float(h.fire_union.mean()), span=bool(h.span),
                       load=benchmarking.load_average()[:1])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "ms_per_step_all"}), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow-ms", type=float, default=1500.0, help="one timed call above this ms/step")
    ap.add_argument("--tree-max-nm", type=float, default=1.1 * 2**22,
                    help="time dtree/wtree only where n*m <= this (their (n, m) trees exhaust 23 GB beyond)")
    ap.add_argument("--adam-max-n", type=int, default=8, help="also time adam (row path) on points with n <= this")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--out", default="bench_regime.json")
    args = ap.parse_args(argv)

    from jaxcorr import benchmarking, methods

    names = list(methods.names())
    points, sweep_ns, sweep_ms = POINTS, SWEEP_NS, SWEEP_LOG2_MS
    if args.quick:
        points, sweep_ns, sweep_ms, args.repeats = [(4, 10, 8), (64, 10, 8)], [4, 32], [10], 1
    t0 = time.perf_counter()
    rows = []
    out = {"benchmark": "bench_regime", "command": "python scripts/bench_regime.py " + " ".join(argv or []),
           "machine": benchmarking.machine_info(), "steps": args.steps, "repeats": args.repeats, "rows": rows}

    def save():
        out["wall_s"] = time.perf_counter() - t0
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)

    for n, lm, d in points:
        use = [k for k in names if not methods.get(k).trees or n * (1 << lm) <= args.tree_max_nm]
        rows += [dict(r, set="points") for r in _measure(n, 1 << lm, d, use, "sgd", args.steps, args.repeats,
                                                         args.slow_ms)]
        save()
        if n <= args.adam_max_n:
            rows += [dict(r, set="points") for r in _measure(n, 1 << lm, d, ["dense", "active"], "adam", args.steps,
                                                             args.repeats, args.slow_ms)]
    for lm in sweep_ms:
        for n in sweep_ns:
            rows += [dict(r, set="sweep") for r in _measure(n, 1 << lm, SWEEP_D, ["dense", "active"], "sgd",
                                                            args.steps, args.repeats, args.slow_ms)]
            save()
    save()
    print(f"wrote {args.out} ({len(rows)} rows, {out['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
