#!/usr/bin/env python
r"""Benchmark: sharded ``fit`` across 1, 2 and 4 JAX *processes* (JAX's distributed runtime, gloo on CPU).

For each process count P it launches P processes on this machine (:class:`jaxcorr.distributed.LocalRun`,
a free port for the coordinator), each with one device, and trains the same problem with
:func:`jaxcorr.train.fit` on the global 1-D data mesh (Section 5's parallel tree updates: the ``n``
trees of Theorem 3.1 split by points across processes). Per process it reports the median of
``history.ms_per_step`` over ``--repeats`` timed calls after a warm-up (compilation) call, the
bytes of the sharded training state on its device (``history.bytes_per_device``) and the peak
resident memory of the process (``ru_maxrss``: the JAX runtime, compiled code, the set-up's
(n/P, m) inner products and the state). The P = 1 run also trains with ``mesh=None`` as the
reference for the loss difference.

**Communication per step.** Process 0 of each P > 1 run dumps its optimised HLO
(``--xla_dump_to``); the collectives inside the training loop's body (the ``while`` of the
``lax.scan``) are what every step sends. Their payload (operand bytes) and the bytes a ring
algorithm moves per process (all-reduce 2(P-1)/P of the payload, reduce-scatter and all-gather
(P-1)/P) are reported beside the count derived from the step's code in :mod:`jaxcorr.sharding`.

On one machine the processes share its cores (here: 2), so per-step time cannot show a speed-up;
it shows the cost of the collectives over loopback TCP. Memory per process does split.

Example:
  flock /work/bench.lock python scripts/bench_multiprocess.py --processes 1,2,4 --out docs/bench/bench_multiprocess.json
  python scripts/bench_multiprocess.py --quick
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jaxcorr import distributed, maxtree, optimizers  # noqa: E402  (no backend until setup)

_DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s64": 8, "s32": 4, "u32": 4, "s8": 1, "u8": 1,
                "pred": 1, "s16": 2, "u16": 2, "u64": 8}
_COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")


def worker(args) -> dict:
    """One process: set up the runtime, train (warm-up + repeats), report time and memory."""
    mesh = distributed.setup(args.coordinator, args.num_processes, args.worker) if args.coordinator else None
    import resource  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from jaxcorr import data, nn, sharding, train  # noqa: PLC0415

    if mesh is None:
        mesh = sharding.data_mesh(jax.devices()[:1])
    X, y = data.synthetic(args.seed, args.n, args.d)
    params = nn.init(jax.random.key(args.seed), args.m, args.d)
    opt = optimizers.make(args.optimizer, args.lr)
    method = distributed.mesh_method(args.method)
    configs = [("sharded", mesh)] + ([("single", None)] if jax.process_count() == 1 else [])
    rows = []
    for label, msh in configs:
        kw = dict(steps=args.steps, method=method, optimizer=opt, chunk_size=args.steps, mesh=msh)
        train.fit(params, X, y, **kw)  # warm-up: compile
        ms, hist = [], None
        for _ in range(args.repeats):
            _, hist = train.fit(params, X, y, **kw)
            ms.append(hist.ms_per_step)
        rows.append({"mode": label, "processes": jax.process_count(), "process": jax.process_index(),
                     "method": method, "ms_per_step": statistics.median(ms), "ms_all": ms,
                     "bytes_per_device": hist.bytes_per_device, "n_active": hist.n_active,
                     "span": bool(hist.span), "losses": [float(v) for v in hist.loss]})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    for r in rows:
        r["peak_rss_bytes"] = rss
    return {"rows": rows}


def _shape_bytes(shape_text: str) -> int:
    """Bytes of an HLO shape such as ``f32[512,64]{1,0}`` or a tuple ``(f32[], s32[8])``."""
    total = 0
    for dt, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape_text):
        if dt in _DTYPE_BYTES:
            n = 1
            for s in filter(None, dims.split(",")):
                n *= int(s)
            total += n * _DTYPE_BYTES[dt]
    return total


def hlo_step_collectives(text: str) -> list[dict]:
    """Collectives in the bodies of the ``while`` loops of an optimised HLO module (one step each).

    Returns one dict per collective instruction: ``op``, ``bytes`` (output payload; for a
    reduce-scatter its input, the output times the group size is recovered from the operand).
    """
    comps, cur = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            cur = head.group(1)
            comps[cur] = []
        elif cur is not None:
            comps[cur].append(line)
    bodies = set()
    for lines in comps.values():
        for ln in lines:
            m = re.search(r"\bwhile\(.*body=%?([\w.\-]+)", ln)
            if m:
                bodies.add(m.group(1))
    # computations called from a body (fusions, nested calls) are part of the step too
    todo, seen = list(bodies), set()
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        for ln in comps[c]:
            todo += re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", ln)
    defs = {}  # instruction name -> shape text, for reduce-scatter operands
    for lines in comps.values():
        for ln in lines:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\(?[^=]*?\)?) [\w\-]+\(", ln)
            if m:
                defs[m.group(1)] = m.group(2)
    out = []
    for c in seen:
        for ln in comps[c]:
            m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.*?) (" + "|".join(_COLLECTIVES) + r")(?:-start)?\((.*?)\)", ln)
            if not m:
                continue
            shape, op, operands = m.groups()
            nbytes = _shape_bytes(shape)
            if op == "reduce-scatter":  # payload: the operand (the full partial products)
                nbytes = sum(_shape_bytes(defs.get(o.strip().lstrip("%").split(" ")[-1].lstrip("%"), ""))
                             for o in operands.split(",")) or nbytes
            out.append({"op": op, "bytes": nbytes, "shape": shape.strip()})
    return out


def _comm_summary(dump_dir: str, P: int) -> dict | None:
    """Per-step collectives of the training loop from process 0's HLO dump."""
    best = None
    for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt")):
        with open(path) as fh:
            text = fh.read()
        if "while" not in text:
            continue
        cols = hlo_step_collectives(text)
        if cols and (best is None or sum(c["bytes"] for c in cols) > sum(c["bytes"] for c in best[1])):
            best = (os.path.basename(path), cols)
    if best is None:
        return None
    name, cols = best
    ring = {"all-reduce": 2 * (P - 1) / P, "reduce-scatter": (P - 1) / P, "all-gather": (P - 1) / P}
    return {"module": name, "collectives": cols,
            "payload_bytes_per_step": sum(c["bytes"] for c in cols),
            "ring_bytes_sent_per_process_per_step": sum(ring.get(c["op"], 1.0) * c["bytes"] for c in cols)}


def compacted_rows(n_active: int) -> int:
    """The row count L the compacted step runs on: |A| plus the padding row that the idle-row guard
    reads, in the sizes of the public capacity policy (:func:`jaxcorr.maxtree.bucket`), as
    :mod:`jaxcorr.train` lays the rows out."""
    return maxtree.bucket(int(n_active) + 1)


def derived_bytes(n_pad: int, L: int, d: int, span: bool, itemsize: int = 4) -> dict:
    """The step's collectives in bytes (the dtree step of :mod:`jaxcorr.train._steps` on a mesh, through
    ``sharding.Axis``).

    ``L`` is the padded number of active rows (:func:`compacted_rows`), ``n_pad`` the padded points.

    Gram path (sgd, momentum): ``psum_scatter`` of the (L, n_pad) partial products ``K G``;
    generic path: ``psum`` of the (L, d) gradient rows. Both: the loss, mean and max fire count and
    overflow flag (4 scalars) and a ``pmax`` over the (L,) int32 flags of the union statistic.
    """
    main = {"op": "reduce-scatter", "bytes": L * n_pad * itemsize} if span else \
        {"op": "all-reduce", "bytes": L * d * itemsize}
    return {"n_pad": n_pad, "L": L, "main": main, "union_flags": {"op": "all-reduce", "bytes": L * 4},
            "scalars": {"op": "all-reduce", "bytes": 4 * 4},
            "payload_bytes_per_step": main["bytes"] + L * 4 + 16}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", default="1,2,4", help="comma-separated process counts")
    ap.add_argument("--n", type=int, default=256, help="data points (split across processes)")
    ap.add_argument("--m", type=int, default=65536, help="width")
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed fit call (one chunk)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--optimizer", default="sgd", choices=optimizers.NAMES,
                    help="a name of jaxcorr.optimizers.TABLE: sgd, momentum: Gram path (psum_scatter of K G); "
                         "adam: generic path (psum of the gradient)")
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate (default: the table's, jaxcorr.optimizers.spec(name).learning_rate)")
    ap.add_argument("--method", default=None, help="default: jaxcorr.distributed.mesh_method()")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--quick", action="store_true", help="small sizes (n=32, m=4096, d=16), 1,2 processes")
    ap.add_argument("--out", default="bench_multiprocess.json")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--num-processes", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    return ap


def _print_report(args, out: dict) -> None:
    """The summary on stdout: the rows as a table, the bytes per step derived and from the HLO."""
    from jaxcorr import benchmarking  # noqa: PLC0415

    machine, rows = out["machine"], out["rows"]
    derived, comm = out["communication"]["derived_from_code"], out["communication"]["hlo"]
    print(f"n={args.n} m={args.m} d={args.d} steps={args.steps} optimizer={args.optimizer}; "
          f"{machine.get('cpu')} ({machine.get('cores')} cores), jax {machine.get('jax')}")
    cols = ["processes", "process", "mode", "method", "ms_per_step", "MiB_state", "MiB_peak_rss", "n_active",
            "span", "loss_rel_diff"]
    print(benchmarking.format_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in rows], cols))
    print(f"communication per step, derived: {derived['payload_bytes_per_step']} bytes payload "
          f"({derived['main']['op']} {derived['main']['bytes']} + union flags {derived['union_flags']['bytes']} + "
          f"scalars 16)")
    for P, c in comm.items():
        print(f"  HLO, {P} processes: {c['payload_bytes_per_step']} bytes payload in "
              f"{len(c['collectives'])} collectives; ring estimate {c['ring_bytes_sent_per_process_per_step']:.0f} "
              "bytes sent per process per step")
    print("note:", out["note"])
    print(f"wrote {args.out}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.lr is None:
        args.lr = optimizers.spec(args.optimizer).learning_rate
    if args.worker is not None:
        print(json.dumps(worker(args)), flush=True)
        return 0
    if args.quick:
        args.n, args.m, args.d, args.processes, args.repeats = 32, 4096, 16, "1,2", 2
    from jaxcorr import benchmarking  # noqa: PLC0415

    rows, comm = [], {}
    for P in [int(s) for s in args.processes.split(",") if s]:
        rows_p, comm_p = _run(args, P)
        if rows_p is None:
            return 1
        rows += rows_p
        if comm_p:
            comm[P] = comm_p
        print(f"processes={P} done", file=sys.stderr, flush=True)
    base = next(r for r in rows if r["mode"] == "single")
    ref = list(base["losses"])
    for r in rows:
        losses = r["losses"]
        r["loss_rel_diff"] = max(abs(u - v) for u, v in zip(losses, ref)) / max(map(abs, ref))
        r["MiB_state"] = None if r["bytes_per_device"] is None else r["bytes_per_device"] / 2**20
        r["MiB_peak_rss"] = r["peak_rss_bytes"] / 2**20
    sharded = next((r for r in rows if r["mode"] == "sharded" and r["processes"] > 1), base)
    n_pad = -(-args.n // max(r["processes"] for r in rows)) * max(r["processes"] for r in rows)
    derived = derived_bytes(n_pad, compacted_rows(sharded["n_active"]), args.d, sharded["span"])
    machine = benchmarking.machine_info()
    out = {"config": vars(args) | {"worker": None}, "machine": machine, "rows": rows,
           "communication": {"derived_from_code": derived, "hlo": comm},
           "note": (f"all processes run on this one machine ({machine.get('cores')} cores): they share its cores, "
                    "so per-step time shows the collectives' cost over loopback TCP, not a parallel speed-up; "
                    "memory per process does split")}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    _print_report(args, out)
    return 0


def _run(args, P: int):
    """Launch P worker processes; returns (rows, HLO communication summary or None)."""
    port = distributed.free_port()
    fwd = [f"--{k}={getattr(args, k)}" for k in ("n", "m", "d", "steps", "repeats", "optimizer", "lr", "seed")]
    fwd += [f"--method={args.method}"] if args.method else []
    cmds = [[sys.executable, os.path.abspath(__file__), "--worker", str(i), "--num-processes", str(P)] + fwd
            + (["--coordinator", f"127.0.0.1:{port}"] if P > 1 else []) for i in range(P)]
    dump = tempfile.mkdtemp(prefix="jaxcorr-hlo-")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("JAX_PLATFORMS", "cpu")
    flags = env.get("XLA_FLAGS", "")
    envs = [{"XLA_FLAGS": f"{flags} --xla_dump_to={dump} --xla_dump_hlo_as_text".strip()} if i == 0 and P > 1
            else {} for i in range(P)]
    results = distributed.LocalRun(cmds, env=env, envs=envs).wait(args.timeout)
    if any(r["returncode"] != 0 for r in results):
        for i, r in enumerate(results):
            print(f"process {i} of {P}: exit {r['returncode']}\n{r['stderr'][-3000:]}", file=sys.stderr)
        return None, None
    rows = [row for r in results for row in json.loads(r["stdout"].strip().splitlines()[-1])["rows"]]
    return rows, (_comm_summary(dump, P) if P > 1 else None)


if __name__ == "__main__":
    sys.exit(main())
