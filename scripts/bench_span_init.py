#!/usr/bin/env python
r"""Benchmark: set-up of W(0) by key and basis (:mod:`jaxcorr.span_init`) against the eager ``rows`` set-up.

For each m = 2^k (``--logms``), n = 8, d = 64, b = sqrt(0.4 ln m) on :func:`jaxcorr.data.synthetic`
data, in its own subprocess (so the peak resident memory is that run's, from the OS: ``VmHWM``):

- ``span``: :func:`jaxcorr.span_init.define` + :func:`jaxcorr.span_init.setup` (the held rows A,
  their span coordinates). ``cold_s`` is the first set-up in the process (compilation included),
  ``warm_s`` the median of ``--repeats`` more (compilation excluded; none at the widest widths);
- ``rows``: today's eager definition, streamed: ``jaxcorr.implicit.setup(key, m, d, X)`` (through
  :func:`_rows_setup`, the one place that names it), at ``--rows-logms``.

With ``--train`` each width instead runs define + setup + ``--steps`` steps of sgd in the data's
coordinates (:func:`jaxcorr.span_init.fit`, ``method="active"``, the span path: no d-dimensional
row), in its own process: ``setup_s`` (define + setup), ``fit_setup_s`` (the training set-up,
compilation included), ``ms_per_step``, |A|, the peak RSS (``VmHWM`` and ``getrusage``) and
``end_to_end_s`` (the child process's wall clock from the parent, imports included). The rows go to
the ``"train"`` entry of ``--out`` (the set-up rows there are kept).

Reports per run: ``cold_s``, ``warm_s``, |A| (``n_active``: held rows for span, kept rows for
rows), ``n_fire_union``, ``n_candidates`` (span), the peak RSS and the load average, and writes
JSON with the machine. Widths whose start would pass ``--budget-s`` of total wall clock are left
out (recorded as skipped).

Example (run it alone):
  flock /work/bench.lock python scripts/bench_span_init.py --out docs/bench/bench_span_init.json
  flock /work/bench.lock python scripts/bench_span_init.py --train --logms 22 26 28 30 32 \
      --out docs/bench/bench_span_init.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

DEFAULT_REPEATS = {18: 5, 22: 5, 26: 3, 28: 1}  # warm repeats per width (0 past these)


def _rows_setup(key, m: int, d: int, X):
    """The eager ``rows`` set-up (W(0) = nn.init(key, m, d), streamed): jaxcorr.wide if present."""
    try:
        from jaxcorr import wide as mod  # noqa: PLC0415 (the module's new name)
    except ImportError:
        from jaxcorr import implicit as mod  # noqa: PLC0415
    return mod.setup(key, m, d, X)


def _one(args) -> dict:
    """One width and definition in this (child) process."""
    import jax  # noqa: PLC0415

    from jaxcorr import benchmarking, data, span_init  # noqa: PLC0415

    m = 1 << args.logm
    X, _ = data.synthetic(args.seed, args.n, args.d)
    key = jax.random.key(args.seed)
    out = {"logm": args.logm, "m": m, "init": args.init, "n": args.n, "d": args.d}

    def span_once():
        t = time.perf_counter()
        spec = span_init.define(key, X, m)
        act = span_init.setup(spec)
        jax.block_until_ready(act.G)
        return time.perf_counter() - t, spec, act

    def rows_once():
        t = time.perf_counter()
        model, info = _rows_setup(key, m, args.d, X)
        jax.block_until_ready(model.W)
        return time.perf_counter() - t, model, info

    once = span_once if args.init == "span" else rows_once
    cold, *res = once()
    warm = [once()[0] for _ in range(args.repeats)]
    out.update(cold_s=cold, warm_s=statistics.median(warm) if warm else None, warm_runs=warm)
    if args.init == "span":
        spec, act = res
        out.update(mode=act.mode, q=spec.q, k=spec.k, n_active=act.n_active, n_fire_union=act.n_fire_union,
                   n_candidates=act.n_candidates, calls=act.calls, capacity_events=len(act.capacity_events))
    else:
        model, info = res
        out.update(n_active=int(info["n_active"]), n_fire_union=int(info["n_fire_union"]))
    out.update(peak_rss_bytes=benchmarking.peak_rss_bytes(), load_average=benchmarking.load_average())
    return out


def _train_one(args) -> dict:
    """define + setup + ``args.steps`` steps of sgd in coordinates, in this (child) process."""
    import resource  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from jaxcorr import benchmarking, data, span_init  # noqa: PLC0415

    m = 1 << args.logm
    X, y = data.synthetic(args.seed, args.n, args.d)
    t0 = time.perf_counter()
    spec = span_init.define(jax.random.key(args.seed), X, m)
    act = span_init.setup(spec)
    jax.block_until_ready(act.G)
    t1 = time.perf_counter()
    out, hist = span_init.fit(spec, act, X, y, steps=args.steps, method="active")
    jax.block_until_ready(out.K)
    t2 = time.perf_counter()
    return {"logm": args.logm, "m": m, "init": "span", "mode": "train", "n": args.n, "d": args.d,
            "steps": int(hist.loss.size), "setup_s": t1 - t0, "fit_s": t2 - t1, "fit_setup_s": hist.setup_s,
            "ms_per_step": hist.ms_per_step, "n_active": act.n_active, "loss_first": float(hist.loss[0]),
            "loss_last": float(hist.loss[-1]), "state_bytes": hist.state_bytes,
            "peak_rss_bytes": benchmarking.peak_rss_bytes(),
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "load_average": benchmarking.load_average()}


def _spawn(args, logm: int, init: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--logm", str(logm), "--init", init, "--repeats", str(repeats),
           "--seed", str(args.seed), "--n", str(args.n), "--d", str(args.d), "--steps", str(args.steps)]
    if args.train:
        cmd.append("--train")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"logm": logm, "init": init, "error": f"exit status {proc.returncode}", "end_to_end_s": wall}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res | {"end_to_end_s": wall} if args.train else res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--logms", type=int, nargs="+", default=[18, 22, 26, 28, 30, 32])
    p.add_argument("--rows-logms", type=int, nargs="*", default=[18, 22])
    p.add_argument("--budget-s", type=float, default=600.0, help="start no width after this much wall clock")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--out", default=None)
    p.add_argument("--train", action="store_true", help="define + setup + --steps steps of sgd in coordinates")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--logm", type=int, help=argparse.SUPPRESS)
    p.add_argument("--init", default="span", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_train_one(args) if args.train else _one(args)))
        return 0
    from jaxcorr import benchmarking  # noqa: PLC0415

    t0 = time.perf_counter()
    runs, skipped = [], []
    plan = ([] if args.train else [(lm, "rows") for lm in args.rows_logms]) + [(lm, "span") for lm in args.logms]
    for logm, init in plan:
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append({"logm": logm, "init": init})
            continue
        r = _spawn(args, logm, init, DEFAULT_REPEATS.get(logm, 0))
        runs.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    result = {"benchmark": "bench_span_init", "machine": benchmarking.machine_info(), "n": args.n, "d": args.d,
              "seed": args.seed, "runs": runs, "skipped": skipped, "wall_s": time.perf_counter() - t0,
              "command": "python scripts/bench_span_init.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    cols = ["init", "logm", "cold_s", "warm_s", "n_active", "n_fire_union", "n_candidates", "peak_rss_bytes"]
    if args.train:
        cols = ["logm", "setup_s", "fit_setup_s", "ms_per_step", "n_active", "peak_rss_bytes", "end_to_end_s"]
    print(benchmarking.format_table(runs, cols))
    if args.out:
        if args.train:  # the training rows join the set-up rows already there
            try:
                with open(args.out) as fh:
                    old = json.load(fh)
            except FileNotFoundError:
                old = {}
            result = old | {"train": result}
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
