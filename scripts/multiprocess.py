#!/usr/bin/env python
r"""Train across several JAX processes on this machine, and check the result against one process.

This is the README's "several hosts" example, runnable on one machine. It launches ``--processes``
worker processes on localhost (a free port for the coordinator), each of which runs exactly what a
process on a cluster host would run::

    mesh = distributed.setup(coordinator, num_processes, process_id)   # jax.distributed.initialize
    X, y = data.synthetic(seed, n, d)                                   # the same arrays everywhere
    params = nn.init(jax.random.key(seed), m, d)
    params, hist = train.fit(params, X, y, steps=steps, method=method, mesh=mesh)

plus one single-process run (``mesh=None``) as the reference, and checks that every process ends
with the same weights and that they match the reference (losses and weights within ``--rtol``).
With ``--mode train`` the workers run the main job instead, ``jaxcorr train ... --coordinator
127.0.0.1:PORT --num-processes N --process-id I --json``, and the summaries are compared.

On a cluster, run the worker part on every host yourself (``python scripts/multiprocess.py --worker
I --num-processes N --coordinator HOST:PORT``), or leave the three out under SLURM/Open MPI/TPU
(``srun python scripts/multiprocess.py --worker 0``: the ids come from the environment).

Examples:
  python scripts/multiprocess.py --processes 2
  python scripts/multiprocess.py --processes 4 --mode train --n 8 --m 4096 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jaxcorr import distributed, optimizers  # noqa: E402  (imports no backend: safe before setup)


def worker(args) -> dict:
    """One process of the run: the several-hosts example. Returns what it prints (one JSON line)."""
    if args.coordinator is not None:  # given: HOST:PORT, N and this process's id
        mesh = distributed.setup(args.coordinator, args.num_processes, args.worker)
    elif args.num_processes is None:  # from the cluster environment (SLURM, Open MPI, TPU, ...)
        mesh = distributed.setup()
    else:  # --num-processes 1: the single-process reference
        mesh = None
    import hashlib  # noqa: PLC0415

    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from jaxcorr import data, nn, train  # noqa: PLC0415

    X, y = data.synthetic(args.seed, args.n, args.d)
    params = nn.init(jax.random.key(args.seed), args.m, args.d)
    opt = optimizers.make(args.optimizer, args.lr)  # what `jaxcorr train --optimizer` builds
    method = distributed.mesh_method(args.method)
    params, hist = train.fit(params, X, y, steps=args.steps, method=method, optimizer=opt, b=args.b,
                             mesh=mesh)
    W = np.asarray(params.W)
    if args.out and distributed.is_writer():
        np.save(args.out, W)
    return {"process": jax.process_index(), **distributed.info(mesh), "method": method,
            "loss": [float(v) for v in hist.loss], "ms_per_step": hist.ms_per_step,
            "W_sha256": hashlib.sha256(W.tobytes()).hexdigest(), "W_file": args.out}


def _child_cmd(args, i: int, n: int, port: int, out: str) -> list[str]:
    if args.mode == "train":
        cmd = [sys.executable, "-m", "jaxcorr", "train", "--n", str(args.n), "--m", str(args.m),
               "--d", str(args.d), "--steps", str(args.steps), "--seed", str(args.seed), "--lr", str(args.lr),
               "--optimizer", args.optimizer, "--json", "--quiet", "--save", out]
        cmd += ["--b", str(args.b)] if args.b is not None else []
        cmd += ["--method", args.method] if args.method else []
        if n > 1:
            cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i)]
        return cmd
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(i), "--num-processes", str(n),
           "--out", out] + [f"--{k}={getattr(args, k)}" for k in ("n", "m", "d", "steps", "seed", "lr", "optimizer")]
    cmd += [f"--b={args.b}"] if args.b is not None else []
    cmd += [f"--method={args.method}"] if args.method else []
    return cmd + (["--coordinator", f"127.0.0.1:{port}"] if n > 1 else [])


def _final_weights(args, path):
    import numpy as np  # noqa: PLC0415

    if args.mode == "train":
        from jaxcorr import checkpoint  # noqa: PLC0415

        return np.asarray(checkpoint.load(path).model.W)
    return np.load(path)


def launch(args) -> dict:
    """Run ``args.processes`` workers and one reference process at once; compare. Returns the report."""
    import tempfile  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    tmp = tempfile.mkdtemp(prefix="jaxcorr-mp-")
    ext = ".ckpt" if args.mode == "train" else ".npy"
    N, port = args.processes, distributed.free_port()
    outs = [os.path.join(tmp, f"multi{ext}"), os.path.join(tmp, f"single{ext}")]
    cmds = [_child_cmd(args, i, N, port, outs[0]) for i in range(N)] + [_child_cmd(args, 0, 1, 0, outs[1])]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("JAX_PLATFORMS", "cpu")
    results = distributed.LocalRun(cmds, env=env).wait(args.timeout)
    report = {"processes": N, "mode": args.mode, "runs": []}
    for i, r in enumerate(results):
        ok = r["returncode"] == 0
        last = r["stdout"].strip().splitlines()[-1] if ok and r["stdout"].strip() else None
        report["runs"].append({"process": i if i < N else "reference", "returncode": r["returncode"],
                               "seconds": round(r["seconds"], 2), "result": json.loads(last) if last else None,
                               "stderr_tail": None if ok else r["stderr"][-2000:]})
    if not all(r["returncode"] == 0 for r in results):
        report["agree"] = False
        return report
    res = [run["result"] for run in report["runs"]]
    key = "loss_final" if args.mode == "train" else "loss"
    ref = np.atleast_1d(np.asarray(res[-1][key], np.float64))
    diffs = [float(np.max(np.abs(np.atleast_1d(np.asarray(r[key], np.float64)) - ref)) / np.max(np.abs(ref)))
             for r in res[:-1]]
    W, W1 = _final_weights(args, outs[0]), _final_weights(args, outs[1])
    report["loss_rel_diff"] = max(diffs)
    report["W_rel_diff"] = float(np.max(np.abs(W - W1)) / np.max(np.abs(W1)))
    same = [r.get("W_sha256", r.get("loss_final")) for r in res[:-1]]
    report["processes_identical"] = len(set(map(str, same))) == 1
    report["devices"] = res[0]["devices"]
    report["agree"] = bool(report["processes_identical"] and report["loss_rel_diff"] <= args.rtol
                           and report["W_rel_diff"] <= args.rtol and res[0]["processes"] == N)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2, help="number of worker processes (default 2)")
    ap.add_argument("--mode", choices=("fit", "train"), default="fit",
                    help="fit: the Python example; train: the main job, jaxcorr train (default fit)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--b", type=float, default=None, help="threshold (default sqrt(0.4 ln m))")
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--optimizer", choices=optimizers.NAMES, default="sgd", help="a name of jaxcorr.optimizers.TABLE")
    ap.add_argument("--method", default=None, help="sparse method on the mesh (default: distributed.mesh_method())")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rtol", type=float, default=1e-5, help="agreement required with one process (relative)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before the workers are killed")
    ap.add_argument("--json", metavar="PATH", default=None, help="also write the report to PATH")
    # worker side: what each host of a cluster runs
    ap.add_argument("--worker", type=int, default=None, help="run as process I (the part each host runs)")
    ap.add_argument("--num-processes", type=int, default=None)
    ap.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (worker side)")
    ap.add_argument("--out", default=None, help="worker side: process 0 saves the final W (.npy) here")
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)), flush=True)
        return 0
    if args.processes < 1:
        ap.error("--processes must be >= 1")
    report = launch(args)
    for run in report["runs"]:
        r = run["result"] or {}
        print(f"process {run['process']!s:>9}: exit {run['returncode']}, {run['seconds']:.1f} s"
              + (f", {r.get('processes')} processes / {r.get('devices')} devices, "
                 f"{r.get('ms_per_step') or 0:.2f} ms/step" if r else ""))
        if run["stderr_tail"]:
            print(run["stderr_tail"], file=sys.stderr)
    if "loss_rel_diff" in report:
        print(f"{report['processes']} processes vs 1: losses within {report['loss_rel_diff']:.2e}, weights within "
              f"{report['W_rel_diff']:.2e} (relative; required {args.rtol:g}); every process has the same result: "
              f"{report['processes_identical']}")
    print("AGREE" if report["agree"] else "DISAGREE (or a process failed)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
