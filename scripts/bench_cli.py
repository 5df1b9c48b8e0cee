"""End to end as a user runs it: wall clock of ``jaxcorr train`` per method, first and later runs.

Each repeat starts from an empty persistent compilation cache (``--cache-dir`` in a fresh temporary
directory), then runs the same command ``--runs`` times: run 1 compiles everything, later runs read
the compiled programs from the cache. Every figure is the wall clock of the whole process (Python
start, JAX import, set-up, compilation, training, summary), as a user sees it.

``--stop`` measures instead how fast a run stops: it starts ``jaxcorr train --steps 1000000`` per
method, signal (SIGINT, SIGTERM) and with/without ``--save``, waits until training runs, sends the
signal and times, from the signal, the process's own lines on stderr as they arrive: the
acknowledgement, ``saving checkpoint`` (the chunk that was running has ended), the final
``interrupted by`` line (the checkpoint is written) and the exit. Median of ``--repeats``.

``--save-sizes`` measures, in one process, a full-width run's checkpoint both ways: trained 2 steps
(``active``, ``jaxcorr.train.sgd``) at each ``--ms`` width, then saved compactly
(:func:`jaxcorr.checkpoint.save`, ``form="compact"``: the active rows) and in full (``form="full"``:
all of W), interleaved, with the phases of each save and the load time; median of ``--repeats``.

Run it alone on the machine (``flock /work/bench.lock ...`` on a shared one).

Examples:
  $ python scripts/bench_cli.py --quick                      # default sizes, 1 repeat
  $ python scripts/bench_cli.py --repeats 3 --out docs/bench/bench_cli.json
  $ python scripts/bench_cli.py --stop --quick               # stop latency at the default sizes
  $ flock /work/bench.lock python scripts/bench_cli.py --stop --repeats 3 --out docs/bench/bench_stop.json \
      -- --m 2^22 --d 64
  $ flock /work/bench.lock python scripts/bench_cli.py --save-sizes --ms 17,20,22 --d 64 \
      --out docs/bench/bench_save.json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
#: The checkout whose ``jaxcorr`` the measured processes run (``--repo``: a before/after comparison).
RUN_REPO = REPO

from jaxcorr import benchmarking, train  # noqa: E402


def run_once(method: str, cache: str, extra: list[str]) -> dict:
    """One ``python -m jaxcorr train`` process: its wall clock and its JSON result."""
    cmd = [sys.executable, "-m", "jaxcorr", "train", "--method", method, "--cache-dir", cache, "--json",
           "--quiet", *extra]
    env = dict(os.environ, PYTHONPATH=RUN_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "fit_wall_s": r["wall_s"], "setup_s": r["setup_s"], "ms_per_step": r["ms_per_step"]}


def stop_once(method: str, sig: int, save: bool, cache: str, extra: list[str], settle_s: float = 1.0,
              timeout_s: float = 900.0) -> dict:
    """One ``jaxcorr train --steps 1000000`` process stopped by ``sig`` once training runs.

    Returns seconds from the signal to: ``ack_s`` (the "stopping" line), ``saving_s`` (the chunk
    ended, the checkpoint is being written; None without --save), ``saved_s`` (the last line,
    written after the checkpoint), ``exit_s``; the exit status ``rc`` and ``checkpoint_bytes``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        ck = os.path.join(tmp, "x.ckpt")
        cmd = [sys.executable, "-m", "jaxcorr", "train", "--method", method, "--steps", "1000000",
               "--cache-dir", cache, *(["--save", ck] if save else []), *extra]
        env = dict(os.environ, PYTHONPATH=RUN_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp, env=env)
        lines: queue.Queue = queue.Queue()

        def read():
            for line in p.stderr:
                lines.put((time.perf_counter(), line))
            lines.put((time.perf_counter(), None))

        threading.Thread(target=read, daemon=True).start()
        log, end = [], time.perf_counter() + timeout_s
        while True:  # until training runs (the first progress line after set-up)
            t, line = lines.get(timeout=max(end - time.perf_counter(), 0.1))
            if line is None:
                raise RuntimeError(f"{' '.join(cmd)} exited {p.wait()} before training: {''.join(log)[-800:]}")
            log.append(line)
            if "set-up done" in line:
                break
        time.sleep(settle_s)
        t0 = time.perf_counter()
        p.send_signal(sig)
        rc = p.wait(timeout=timeout_s)
        t_exit = time.perf_counter() - t0
        marks = {"ack_s": None, "saving_s": None, "saved_s": None}
        while True:
            t, line = lines.get(timeout=10)
            if line is None:
                break
            log.append(line)
            if t < t0:
                continue
            if "stopping" in line and marks["ack_s"] is None:
                marks["ack_s"] = t - t0
            if line.startswith("jaxcorr: saving checkpoint"):
                marks["saving_s"] = t - t0
            if "interrupted by" in line:
                marks["saved_s"] = t - t0
        size = os.path.getsize(ck) if save and os.path.exists(ck) else None
    return {"rc": rc, "exit_s": t_exit, **marks, "checkpoint_bytes": size, "stderr_tail": "".join(log[-4:])}


def stop_rows(methods: list[str], repeats: int, extra: list[str], signals=("SIGINT", "SIGTERM"),
              saves=(False, True)) -> list[dict]:
    """Median stop latencies per method, signal and --save (each from a warm compilation cache)."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for method in methods:
            run_once(method, cache, ["--steps", "2", *extra])  # fill the cache: time stops, not compiles
            for sig in (getattr(signal, name) for name in signals):
                for save in saves:
                    rs = [stop_once(method, sig, save, cache, extra) for _ in range(repeats)]
                    row = {"method": method, "signal": signal.Signals(sig).name, "save": save,
                           "rc": sorted({r["rc"] for r in rs}), "checkpoint_bytes": rs[-1]["checkpoint_bytes"]}
                    for k in ("exit_s", "ack_s", "saving_s", "saved_s"):
                        vals = [r[k] for r in rs if r[k] is not None]
                        row[k] = statistics.median(vals) if vals else None
                    row["all_exit_s"] = [round(r["exit_s"], 3) for r in rs]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def save_rows(log_ms: list[int], d: int, n: int, repeats: int, directory: str) -> list[dict]:
    """Compact vs full checkpoints of a full-width run at each width 2^K (see the module docstring)."""
    import jax

    from jaxcorr import checkpoint, data, nn, wide

    rows = []
    for k in log_ms:
        m, key = 2 ** k, jax.random.key(0)
        X, y = data.synthetic(0, n, d)
        W0 = nn.init(key, m, d)
        b = float(nn.default_threshold(m))
        opt = train.sgd(1.0)
        p, h = train.fit(W0, X, y, steps=2, method="active", optimizer=opt, b=b)
        t0 = time.perf_counter()
        active = wide.active_rows(W0.W, X, b)
        active_s = time.perf_counter() - t0
        wide.from_params(key, p, X, b=b, W0=W0, opt_state=h.opt_state, optimizer=opt, active=active)  # compile
        paths = {"compact": os.path.join(directory, "compact.ckpt"), "full": os.path.join(directory, "full.ckpt")}
        got = {"compact": [], "full": []}
        for _ in range(repeats):
            for kind, path in paths.items():
                t, t0 = {}, time.perf_counter()
                compact = {"key": key, "b": b, "W0": W0, "optimizer": opt, "active": active}
                written = checkpoint.save(path, p, X=X, y=y, opt_state=h.opt_state, step=2, config={"m": m},
                                          form=kind, timings=t, **(compact if kind == "compact" else {}))
                assert written == kind, (written, kind)
                t["save_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint.restore(path, optimizer=opt, as_wide=kind == "compact")  # compact: the held rows, as before
                t["load_s"] = time.perf_counter() - t0
                got[kind].append(t)
                os.unlink(path)
        row = {"m": m, "log2_m": k, "d": d, "n": n, "n_active": int(active.sum()), "active_rows_s": active_s}
        for kind, ts in got.items():
            for key_ in sorted(ts[0]):
                row[f"{kind}_{key_}"] = statistics.median(t[key_] for t in ts)
        row["bytes_formula_compact"] = row["n_active"] * (d + 2) * 4  # W rows, a, int32 index (float32, sgd)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del W0, p, h
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(train.METHODS),
                    help="comma-separated (default: all of jaxcorr.train.METHODS)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh caches per method (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cache: 1 cold, then warm (default 3)")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 2 runs")
    ap.add_argument("--stop", action="store_true", help="measure signal-to-exit latency instead (see above)")
    ap.add_argument("--save-sizes", action="store_true",
                    help="measure compact vs full checkpoints in process (see above)")
    ap.add_argument("--ms", default="17,20,22", help="with --save-sizes: log2 of the widths (default 17,20,22)")
    ap.add_argument("--d", type=int, default=64, help="with --save-sizes: input dimension (default 64)")
    ap.add_argument("--n", type=int, default=8, help="with --save-sizes: data points (default 8)")
    ap.add_argument("--signals", default="SIGINT,SIGTERM",
                    help="with --stop: signals to send (default SIGINT,SIGTERM)")
    ap.add_argument("--save-modes", default="no,yes", help="with --stop: without/with --save (default no,yes)")
    ap.add_argument("--repo", default=None,
                    help="run the jaxcorr of this checkout (e.g. an older commit, for a before/after comparison)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("extra", nargs="*", help="more `jaxcorr train` options after --, e.g. -- --m 65536")
    args = ap.parse_args(argv)
    repeats, runs = (1, 2) if args.quick else (args.repeats, args.runs)
    global RUN_REPO
    RUN_REPO = os.path.abspath(args.repo) if args.repo else REPO
    if args.save_sizes:
        with tempfile.TemporaryDirectory(dir=REPO) as tmp:  # the repository's disk, as a user's run would
            rows = save_rows([int(v) for v in args.ms.split(",")], args.d, args.n, 1 if args.quick else args.repeats,
                             tmp)
        result = {"machine": benchmarking.machine_info(), "mode": "save-sizes", "repeats": args.repeats, "rows": rows}
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        print(benchmarking.format_table(rows, ["m", "d", "n_active", "compact_bytes", "full_bytes", "compact_save_s",
                                               "full_save_s", "compact_select", "full_write", "full_fsync",
                                               "compact_load_s", "full_load_s"]))
        return 0
    if args.stop:
        saves = [{"no": False, "yes": True}[v] for v in args.save_modes.split(",")]
        rows = stop_rows(args.methods.split(","), repeats, args.extra, args.signals.split(","), saves)
        result = {"machine": benchmarking.machine_info(), "mode": "stop", "repeats": repeats,
                  "options": args.extra, "repo": RUN_REPO, "rows": rows}
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        print(benchmarking.format_table(rows, ["method", "signal", "save", "rc", "exit_s", "ack_s", "saving_s",
                                               "saved_s", "checkpoint_bytes"]))
        return 0
    rows = []
    for method in args.methods.split(","):
        per_run = [[] for _ in range(runs)]
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as cache:
                for k in range(runs):
                    per_run[k].append(run_once(method, cache, args.extra))
        row = {"method": method}
        for k, results in enumerate(per_run):
            row[f"run{k + 1}_wall_s"] = statistics.median(r["wall_s"] for r in results)
            row[f"run{k + 1}_setup_s"] = statistics.median(r["setup_s"] for r in results)
        row["run2_over_run1"] = row["run2_wall_s"] / row["run1_wall_s"] if runs > 1 else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"machine": benchmarking.machine_info(), "repeats": repeats, "runs": runs,
              "options": args.extra, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    cols = ["method"] + [f"run{k + 1}_wall_s" for k in range(runs)] + ["run2_over_run1"]
    print(benchmarking.format_table(rows, cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
