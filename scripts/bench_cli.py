"""End to end as a user runs it: wall clock of ``jaxcorr train`` per method, first and later runs.

Each repeat starts from an empty persistent compilation cache (``--cache-dir`` in a fresh temporary
directory), then runs the same command ``--runs`` times: run 1 compiles everything, later runs read
the compiled programs from the cache. Every figure is the wall clock of the whole process (Python
start, JAX import, set-up, compilation, training, summary), as a user sees it.

Run it alone on the machine (``flock /work/bench.lock ...`` on a shared one).

Examples:
  $ python scripts/bench_cli.py --quick                      # default sizes, 1 repeat
  $ python scripts/bench_cli.py --repeats 3 --out docs/bench/bench_cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxcorr import benchmarking, train  # noqa: E402


def run_once(method: str, cache: str, extra: list[str]) -> dict:
    """One ``python -m jaxcorr train`` process: its wall clock and its JSON result."""
    cmd = [sys.executable, "-m", "jaxcorr", "train", "--method", method, "--cache-dir", cache, "--json",
           "--quiet", *extra]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "fit_wall_s": r["wall_s"], "setup_s": r["setup_s"], "ms_per_step": r["ms_per_step"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(train.METHODS), help="comma-separated (default: all of jaxcorr.train.METHODS)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh caches per method (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cache: 1 cold, then warm (default 3)")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 2 runs")
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("extra", nargs="*", help="more `jaxcorr train` options after --, e.g. -- --m 65536")
    args = ap.parse_args(argv)
    repeats, runs = (1, 2) if args.quick else (args.repeats, args.runs)
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
