#!/usr/bin/env python
r"""Probe: ``train.fit`` per sparse method and optimizer on the held active rows only (``width=m``).

The rows of W(0) that fire for no point at t = 0 never move and never fire (the active-set
invariant of :mod:`jaxcorr.train`), so ``fit(params_A, ..., width=m)`` on the rows of A alone runs
the same trajectory as on all m rows (that is how :mod:`jaxcorr.wide` trains). Here the rows are
drawn from numpy's generator (w_r ~ N(0, I_d), a_r = +-1, kept where max_i <w_r, x_i> > b), so a
width-m problem costs O(|A| d) memory, not O(m d): the per-step figures of ``history.ms_per_step``
are those of the full-width run (same executable, same |A| in law), without dense's reference.

Modes:
- default: every (method, optimizer) warmed up, then ``--repeats`` timed calls interleaved, medians;
- ``--profile OP``: one method/optimizer under ``jax.profiler``; prints the median duration per XLA
  op (thunk) per step, the op names of the compiled chunk runner.

Example:
  python scripts/probe_fit_held.py --logm 22 --methods active,dtree,wtree --repeats 5
  python scripts/probe_fit_held.py --logm 22 --methods dtree --optimizers sgd --profile /tmp/trace
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import time

import numpy as np

OPTS = {"sgd": lambda t: t.sgd(1.0), "momentum": lambda t: t.sgd(0.1, momentum=0.9),
        "adam": lambda t: __import__("optax").adam(0.01)}


def held_rows(logm: int, X, b: float, seed: int = 0, block: int = 1 << 20):
    """``(W_A (|A|, d) float32, a_A (|A|,))``: the rows of an m = 2^logm network that fire at t = 0."""
    m, d = 1 << logm, X.shape[1]
    rng = np.random.default_rng(seed)
    Xn = np.asarray(X, np.float32)
    keep_w, keep_a = [], []
    for start in range(0, m, block):
        c = min(block, m - start)
        W = rng.standard_normal((c, d), dtype=np.float32)
        a = rng.choice(np.array([-1.0, 1.0], np.float32), size=c)
        hit = (W @ Xn.T > b).any(axis=1)
        keep_w.append(W[hit])
        keep_a.append(a[hit])
    return np.concatenate(keep_w), np.concatenate(keep_a)


def _profile(fn, out_dir: str, steps: int) -> list:
    import jax
    import jax.profiler as jp

    os.system(f"rm -rf {out_dir}")
    with jp.trace(out_dir):
        fn()
    pd = jp.ProfileData.from_file(glob.glob(out_dir + "/**/*.xplane.pb", recursive=True)[0])
    durs = collections.defaultdict(list)
    for plane in pd.planes:
        for line in plane.lines:
            if line.name.startswith("tf_XLA"):
                for ev in line.events:
                    durs[ev.name].append(ev.duration_ns)
    rows = []
    for k, v in durs.items():
        if k.startswith("end:") or "Thunk" in k or "Threadpool" in k or "Slinky" in k or k.startswith("while"):
            continue
        med = statistics.median(v)
        rows.append({"op": k, "median_us": med / 1e3, "per_step": len(v) / steps,
                     "ms_per_step": med * len(v) / steps / 1e6})
    del jax
    return sorted(rows, key=lambda r: -r["ms_per_step"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logm", type=int, default=22)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", default="active,dtree,wtree")
    ap.add_argument("--optimizers", default="sgd,momentum")
    ap.add_argument("--profile", default="", help="trace directory: profile the first method/optimizer")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    import jax

    from jaxcorr import benchmarking, data, nn, train

    m = 1 << args.logm
    X, y = data.synthetic(0, args.n, args.d)
    b = nn.default_threshold(m)
    t0 = time.perf_counter()
    W_A, a_A = held_rows(args.logm, X, b)
    params = nn.Params(W=jax.numpy.asarray(W_A), a=jax.numpy.asarray(a_A))
    gen_s = time.perf_counter() - t0
    methods = [s for s in args.methods.split(",") if s]
    opts = {o: OPTS[o](train) for o in args.optimizers.split(",") if o}
    res = {"machine": benchmarking.machine_info(), "logm": args.logm, "n_active": int(W_A.shape[0]),
           "generate_s": gen_s, "steps": args.steps, "runs": {}}
    if args.profile:
        meth, (oname, opt) = methods[0], next(iter(opts.items()))
        train.fit(params, X, y, steps=args.steps, method=meth, optimizer=opt, width=m)  # compile

        def go():
            for _ in range(args.repeats):
                train.fit(params, X, y, steps=args.steps, method=meth, optimizer=opt, width=m)

        rows = _profile(go, args.profile, args.steps * args.repeats)
        total = sum(r["ms_per_step"] for r in rows)
        print(f"{meth} {oname} |A|={res['n_active']}: sum of op medians {total:.3f} ms/step")
        for r in rows[:25]:
            print(f"  {r['ms_per_step']:8.3f} ms/step  ({r['median_us']:9.1f} us x {r['per_step']:.1f})  {r['op']}")
        res["profile"] = {"method": meth, "optimizer": oname, "ops": rows}
    else:
        times = collections.defaultdict(list)
        for meth in methods:
            for opt in opts.values():
                train.fit(params, X, y, steps=args.steps, method=meth, optimizer=opt, width=m)
        for _ in range(args.repeats):
            for meth in methods:
                for o, opt in opts.items():
                    _, h = train.fit(params, X, y, steps=args.steps, method=meth, optimizer=opt, width=m)
                    times[f"{o}/{meth}"].append(h.ms_per_step)
        res["runs"] = {k: {"ms_per_step": statistics.median(v), "min": min(v), "all": v} for k, v in times.items()}
        print(json.dumps({"logm": args.logm, "n_active": res["n_active"],
                          **{k: round(v["ms_per_step"], 3) for k, v in res["runs"].items()}}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
