#!/usr/bin/env python
r"""Benchmark: where the sparse methods beat dense, over n = 4 ... 2000 (issue 24).

For each (n, m, d) point, on :func:`jaxcorr.data.synthetic` unit-norm data and
:func:`jaxcorr.nn.init` weights at the default threshold :math:`b = \sqrt{0.4 \ln m}`, every method
of :mod:`jaxcorr.methods` runs :func:`jaxcorr.train.fit` side by side in one process: one warm-up call
(compilation), then ``--repeats`` timed calls of ``--steps`` steps, interleaved across methods. Each
row records the median of ``History.ms_per_step`` and ``History.setup_s``, ``n_active`` (|A|), the
mean fire count and the span flag. Methods whose warm-up step is slower than ``--slow-ms`` keep the
warm-up call's steps as their one timing (``train.fit`` compiles before it times the steps), so the
whole run stays under ten minutes on the shared machine.

Three sets: ``points`` (the (n, m, d) validation points of the cost model, every method, sgd; the
trees only where ``n m`` is small enough), ``other`` (adam and momentum at a few points: the row
path and an optimizer state slot) and ``sweep`` (dense and active at m = 2^14 and 2^16, d = 32,
n = 4 ... 2000, for the regime plot).

Example (takes the shared lock):
  flock /work/bench.lock python scripts/bench_regime.py --out docs/bench/bench_regime.json
  python scripts/bench_regime.py --quick --out /tmp/regime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

#: (n, log2 m, d): the validation points of the cost model, n = 4 ... 2000, d = 10 ... 64 (digits-like:
#: n = 360 and 1797 at d = 64; diabetes-like: n = 442 at d = 10).
POINTS = [(4, 16, 32), (8, 18, 64), (8, 16, 10), (64, 16, 64), (64, 14, 10), (256, 14, 32), (360, 14, 64),
          (360, 16, 64), (442, 16, 10), (1000, 12, 32), (1797, 14, 64), (2000, 14, 32), (2000, 12, 10)]
#: (n, log2 m, d, optimizer): the other optimizers (adam: the row path; momentum: one state slot on the span path).
OTHER = [(4, 16, 32, "adam"), (8, 18, 64, "adam"), (64, 14, 10, "adam"), (256, 14, 32, "adam"),
         (8, 18, 64, "momentum"), (256, 14, 32, "momentum")]
SWEEP_NS = [4, 16, 64, 256, 1000, 2000]
SWEEP_LOG2_MS = [14, 16]
SWEEP_D = 32


def _measure(n, m, d, methods, optimizer_name, steps, repeats, slow_ms, min_timed_ms=100.0, seed=0):
    import math

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
        # timed calls of at least min_timed_ms (a step of 0.1 ms is timed over 100s of steps, not 5)
        timed = max(steps, min(200, math.ceil(min_timed_ms / max(h.ms_per_step, 1e-3))))
        recs[meth] = {"first_call_s": time.perf_counter() - t0, "ms": [], "setup": [], "h": h, "reps": repeats,
                      "timed_steps": timed}
        if h.ms_per_step > slow_ms:  # the first call's steps ran compiled (History excludes compilation): use them
            recs[meth].update(ms=[h.ms_per_step], setup=[h.setup_s], reps=0)
    for r in range(repeats):
        for meth, rec in recs.items():
            if "error" in rec or r >= rec["reps"]:
                continue
            _, h = train.fit(params, X, y, steps=rec["timed_steps"], method=meth, optimizer=opt)
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
            row.update(timed_steps=rec["timed_steps"] if rec["reps"] else steps,
                       ms_per_step=statistics.median(rec["ms"]), ms_per_step_all=rec["ms"],
                       setup_s=statistics.median(rec["setup"]), first_call_s=rec["first_call_s"],
                       n_active=int(h.n_active), fire_mean=float(h.fire_mean.mean()),
                       fire_union=float(h.fire_union.mean()), span=bool(h.span),
                       load=benchmarking.load_average()[:1])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "ms_per_step_all"}), flush=True)
    return rows


def _key(r):
    return (r["set"], r["n"], r["m"], r["d"], r["method"], r["optimizer"])


def _merged(path, out):
    """The rows of the earlier run at ``path``, those measured now replaced (each keeps its ``command``)."""
    with open(path) as fh:
        old = json.load(fh)
    new = {_key(r): dict(r, command=out["command"]) for r in out["rows"]}
    rows = [new.pop(_key(r), r) for r in old["rows"]] + list(new.values())
    runs = old.get("runs", [{k: old[k] for k in ("command", "wall_s", "steps", "repeats") if k in old}])
    return dict(old, rows=rows, runs=runs + [{k: out[k] for k in ("command", "wall_s", "steps", "repeats")}])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow-ms", type=float, default=1000.0,
                    help="above this ms/step: the warm-up call is the one timing")
    ap.add_argument("--tree-max-nm", type=float, default=1.1 * 2**22,
                    help="time dtree/wtree only where n*m <= this (their (n, m) trees exhaust 23 GB beyond)")
    ap.add_argument("--min-timed-ms", type=float, default=100.0,
                    help="each timed call runs at least this long (more steps, at most 200, for fast steps)")
    ap.add_argument("--max-n", type=int, default=None, help="only the points and sweep entries with n <= this")
    ap.add_argument("--merge", default="", help="a JSON of an earlier run: its rows, with those measured now replaced")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--out", default="bench_regime.json")
    args = ap.parse_args(argv)

    from jaxcorr import benchmarking, methods

    names = list(methods.names())
    points, other, sweep_ns, sweep_ms = POINTS, OTHER, SWEEP_NS, SWEEP_LOG2_MS
    if args.quick:
        points, other, sweep_ns, sweep_ms = [(4, 10, 8), (64, 10, 8)], [(4, 10, 8, "adam")], [4, 32], [10]
        args.repeats = 1
    if args.max_n is not None:
        points = [p for p in points if p[0] <= args.max_n]
        other = [p for p in other if p[0] <= args.max_n]
        sweep_ns = [n for n in sweep_ns if n <= args.max_n]
    t0 = time.perf_counter()
    rows = []
    out = {"benchmark": "bench_regime", "command": "python scripts/bench_regime.py " + " ".join(argv or []),
           "machine": benchmarking.machine_info(), "steps": args.steps, "repeats": args.repeats, "rows": rows}

    def save():
        out["wall_s"] = time.perf_counter() - t0
        with open(args.out, "w") as fh:
            json.dump(out if not args.merge else _merged(args.merge, out), fh, indent=1)

    for n, lm, d in points:
        use = [k for k in names if not methods.get(k).trees or n * (1 << lm) <= args.tree_max_nm]
        rows += [dict(r, set="points") for r in _measure(n, 1 << lm, d, use, "sgd", args.steps, args.repeats,
                                                         args.slow_ms, args.min_timed_ms)]
        save()
    for n, lm, d, opt in other:
        rows += [dict(r, set="other") for r in _measure(n, 1 << lm, d, ["dense", "active"], opt, args.steps,
                                                        args.repeats, args.slow_ms, args.min_timed_ms)]
        save()
    for lm in sweep_ms:
        for n in sweep_ns:
            rows += [dict(r, set="sweep") for r in _measure(n, 1 << lm, SWEEP_D, ["dense", "active"], "sgd",
                                                            args.steps, args.repeats, args.slow_ms, args.min_timed_ms)]
            save()
    save()
    print(f"wrote {args.out} ({len(rows)} rows, {out['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
