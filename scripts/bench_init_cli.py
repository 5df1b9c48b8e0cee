"""Issue 27's targets as a user meets them: the wall clock and peak memory of ``jaxcorr train``.

    python scripts/bench_init_cli.py --logms 18,20,22,24,26,28,30,32 --rows-logms 18,20,22,24,26 \
        --out docs/bench/bench_init_cli.json

Each run is one ``jaxcorr train --m 2^K --n 8 --d 64 --steps 100 --optimizer sgd --init {span,rows}
--json --quiet --no-cache`` process (synthetic data, seed 0; the compilation cache off, so every run
compiles as a first run does). *End to end* is that process's wall clock, measured from outside
(start to exit); *peak* is its maximum resident set size as the OS reports it (``wait4``'s
``ru_maxrss``). Set-up, ms/step and |A| are the run's own ``--json`` figures. The ratio is the
``rows`` run's end to end over the ``span`` run's at the widths where both ran; the ``rows``
definition draws all m d normals of W(0) at set-up (8 s at 2^22, 8 min at 2^28 on this machine), so
only the narrower widths run it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxcorr import benchmarking  # noqa: E402


def _popen_rusage(cmd, env):
    """(returncode, stdout, stderr, rusage) of ``cmd``, waited for with ``wait4``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, err, usage


def measure(logm: int, init: str, *, n: int, d: int, steps: int, method: str | None) -> dict:
    """One ``jaxcorr train`` process, waited for with ``wait4``: its JSON, wall clock and own peak RSS."""
    cmd = [sys.executable, "-m", "jaxcorr", "train", "--m", f"2^{logm}", "--n", str(n), "--d", str(d),
           "--steps", str(steps), "--optimizer", "sgd", "--init", init, "--json", "--quiet", "--no-cache"]
    if method:
        cmd += ["--method", method]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    t0 = time.perf_counter()
    rc, out, err, usage = _popen_rusage(cmd, env)
    rec = {"logm": logm, "m": 1 << logm, "init": init, "argv": cmd[3:], "rc": rc,
           "e2e_s": time.perf_counter() - t0, "peak_rss_bytes": usage.ru_maxrss * 1024}
    if rc != 0:
        rec["stderr_tail"] = err[-2000:]
        return rec
    res = json.loads(out.strip().splitlines()[-1])
    for k in ("method", "setup_s", "ms_per_step", "n_active", "loss_initial", "loss_final", "process_s",
              "memory_estimate_bytes", "init"):
        rec[k] = res.get(k)
    rec["notes"] = [ln for ln in err.splitlines() if ln.startswith("jaxcorr:")][:6]
    return rec


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logms", type=_ints, default=[18, 20, 22, 24, 26, 28, 30, 32])
    p.add_argument("--rows-logms", type=_ints, default=[18, 20, 22, 24, 26])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--method", default=None, help="default: the CLI's --method auto")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    runs = []
    for init, logms in (("span", args.logms), ("rows", args.rows_logms)):
        for logm in logms:
            rec = measure(logm, init, n=args.n, d=args.d, steps=args.steps, method=args.method)
            runs.append(rec)
            print(json.dumps({k: rec.get(k) for k in ("init", "logm", "rc", "method", "setup_s", "ms_per_step",
                                                      "n_active", "e2e_s", "peak_rss_bytes")}), flush=True)
    span = {r["logm"]: r for r in runs if r["init"] == "span" and r["rc"] == 0}
    rows = {r["logm"]: r for r in runs if r["init"] == "rows" and r["rc"] == 0}
    ratios = {str(k): rows[k]["e2e_s"] / span[k]["e2e_s"] for k in sorted(span.keys() & rows.keys())}
    doc = {"machine": benchmarking.machine_info(), "argv": sys.argv[1:], "n": args.n, "d": args.d,
           "steps": args.steps, "optimizer": "sgd", "runs": runs, "e2e_ratio_rows_over_span": ratios,
           "load_average": os.getloadavg()}
    print(json.dumps({"e2e_ratio_rows_over_span": ratios}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
