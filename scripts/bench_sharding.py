#!/usr/bin/env python
r"""Benchmark: sharded ``fit(method="dtree" | "active")`` (Section 5's parallel updates) on 1, 2 and 4 devices.

For each device count D this runs a child process (the device count of JAX's CPU backend is fixed
when the process starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=D``; on a GPU/TPU
machine the child uses the first D real devices) that trains the same problem with
:func:`jaxcorr.train.fit` on a 1-D data mesh of D devices, plus the single-device path
(``mesh=None``) in the D = 1 child as the baseline. Per configuration it does one warm-up call
(compilation) and ``--repeats`` timed calls, and reports the median of ``history.ms_per_step``
(wall time of the jitted steps, set-up and compilation excluded), the bytes of the sharded
training state on the most loaded device (``history.bytes_per_device``: the trees over the
active rows, the rows and optimizer state, the constants), the loss difference to the baseline,
and the machine.

Host devices of the CPU backend are not separate processors: they share the machine's cores (and
one XLA thread pool), so on a 2-core machine the step time cannot drop by more than about 2x
however many host devices there are, and it may grow from the collectives. What the CPU numbers do
show is the memory split and the cost of the collectives; speed-ups need real devices.

Example:
  python scripts/bench_sharding.py --devices 1,2,4 --n 64 --m 16384 --d 32 --out bench_sharding.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jaxcorr import optimizers  # noqa: E402  (imports JAX, starts no backend: children set XLA_FLAGS first)


def _child(args) -> dict:
    import jax

    from jaxcorr import benchmarking, data, nn, sharding, train

    D = args.child
    devs = jax.devices()
    if len(devs) < D:
        return {"devices": D, "skipped": f"only {len(devs)} devices"}
    opt = optimizers.make(args.optimizer, args.lr)
    X, y = data.synthetic(args.seed, args.n, args.d)
    params = nn.init(jax.random.key(args.seed), args.m, args.d)
    mesh = sharding.data_mesh(devs[:D])
    rows = []
    configs = [("sharded", mesh)] + ([("single", None)] if D == 1 else [])
    for label, msh in configs:
        kw = dict(steps=args.steps, method=args.method, optimizer=opt, chunk_size=args.steps, mesh=msh)
        train.fit(params, X, y, **kw)  # warm-up: compile
        ms, hist = [], None
        for _ in range(args.repeats):
            _, hist = train.fit(params, X, y, **kw)
            ms.append(hist.ms_per_step)
        rows.append({
            "devices": D if msh is not None else 1,
            "mode": label,
            "method": args.method,
            "optimizer_used": optimizers.describe(args.optimizer, args.lr),
            "ms_per_step": statistics.median(ms),
            "ms_all": ms,
            "bytes_per_device": hist.bytes_per_device,
            "n_active": hist.n_active,
            "span": bool(hist.span),
            "loss_last": float(hist.loss[-1]),
            "losses": [float(v) for v in hist.loss],
        })
    return {"devices": D, "rows": rows, "machine": benchmarking.machine_info(),
            "device_kind": getattr(devs[0], "device_kind", str(devs[0]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="1,2,4", help="comma-separated device counts")
    ap.add_argument("--n", type=int, default=64, help="data points (the sharded axis)")
    ap.add_argument("--m", type=int, default=16384, help="width")
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed fit call (one chunk)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--optimizer", default="sgd", choices=optimizers.NAMES,
                    help="a name of jaxcorr.optimizers.TABLE: sgd and momentum run the Gram path (psum_scatter "
                         "of K G), adam the generic one (psum of grad)")
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate (default: the table's, jaxcorr.optimizers.spec(name).learning_rate)")
    ap.add_argument("--method", default="dtree", choices=["dtree", "active"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_sharding.json")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = optimizers.spec(args.optimizer).learning_rate
    if args.child:
        print(json.dumps(_child(args)))
        return 0

    from jaxcorr import benchmarking

    results = []
    for D in [int(s) for s in args.devices.split(",") if s]:
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={D}"])
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(D)] + [
            f"--{k}={v}" for k, v in (("n", args.n), ("m", args.m), ("d", args.d), ("steps", args.steps),
                                       ("repeats", args.repeats), ("optimizer", args.optimizer),
                                       ("method", args.method),
                                       ("lr", args.lr), ("seed", args.seed))]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"devices={D} done", file=sys.stderr, flush=True)

    rows = [r for res in results for r in res.get("rows", [])]
    base = next((r for r in rows if r["mode"] == "single"), None)
    ref = list(base["losses"]) if base is not None else None
    for r in rows:
        losses = r.pop("losses")
        if ref is not None:
            r["loss_rel_diff"] = max(abs(u - v) for u, v in zip(losses, ref)) / max(abs(v) for v in ref)
            r["speedup"] = base["ms_per_step"] / r["ms_per_step"]
        r["MiB_per_device"] = None if r["bytes_per_device"] is None else r["bytes_per_device"] / 2**20
    machine = results[0]["machine"] if results else {}
    out = {"config": vars(args) | {"child": None}, "machine": machine,
           "device_kind": results[0].get("device_kind") if results else None,
           "note": ("host devices of the CPU backend share the machine's cores; per-step times on "
                    "several host devices show overheads, not parallel speed-up"
                    if machine.get("backend") == "cpu" else ""),
           "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"n={args.n} m={args.m} d={args.d} steps={args.steps} optimizer={args.optimizer}; "
          f"{machine.get('cpu')} ({machine.get('cores')} cores), backend {machine.get('backend')}, "
          f"jax {machine.get('jax')}")
    cols = ["devices", "mode", "method", "ms_per_step", "speedup", "MiB_per_device", "n_active", "span",
            "loss_rel_diff"]
    shown = [{k: ("-" if v is None else v) for k, v in r.items()} for r in rows]
    print(benchmarking.format_table(shown, cols))
    if out["note"]:
        print("note:", out["note"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
