"""Checkpoints of wide-model runs: coefficients vs rows, the save, the resume, the peak memory.

For each optimizer this runs, as a user does,

    jaxcorr train --m 2^K --d D --steps S --optimizer OPT --save CKPT --json
    jaxcorr train --resume CKPT --save CKPT --steps R --json

each under ``/usr/bin/time`` (peak RSS from the OS, wall clock), and records the checkpoint's size
and form (``jaxcorr.checkpoint.save``: ``coefficients`` for the span path, sgd and momentum; ``rows``
otherwise), |A|, ms/step and the memory estimate. Then, in this process, it loads the checkpoint
(timed) and writes it again in the rows form (``form="rows"``) for the size a rows checkpoint of the
same model has. Results as JSON with :func:`jaxcorr.benchmarking.machine_info`.

Usage::

    flock /work/bench.lock python scripts/bench_wide_ckpt.py --logm 26 --out docs/bench/bench_wide_ckpt.json
    python scripts/bench_wide_ckpt.py --quick          # m = 2^20, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

TIME = shutil.which("time") or "/usr/bin/time"


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` under /usr/bin/time; its JSON result plus ``peak_rss_bytes`` and ``wall_s``."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.run([TIME, "-f", "%M %e", "-o", tf.name, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        kib, wall = tf.read().split()[-2:]
    out = json.loads(proc.stdout)
    keep = ("method", "optimizer", "steps", "step_start", "step_end", "loss_final", "ms_per_step", "setup_s",
            "wall_s", "n_active", "memory_estimate_bytes", "wide", "wide_setup_s")
    return {**{k: out.get(k) for k in keep}, "peak_rss_bytes": int(kib) * 1024, "wall_s_os": float(wall)}


def rows_form(path: str, optimizer_name: str, lr: float) -> dict:
    """Load the checkpoint (timed) and save the same model in the rows form: both sizes."""
    from jaxcorr import checkpoint, optimizers

    opt = optimizers.make(optimizer_name, lr)
    t0 = time.perf_counter()
    ck = checkpoint.restore(path, optimizer=opt)
    load_s = time.perf_counter() - t0
    meta = checkpoint.wide.wide_meta(checkpoint.read_meta(path)["config"])
    rows_path = path + ".rows"
    from jaxcorr import data  # the CLI's synthetic data (seed 0) for the fingerprint

    cfg = ck.config
    X, y = data.synthetic(cfg["seed"], cfg["n"], cfg["d"])
    checkpoint.save(rows_path, ck.model, X=X, y=y, opt_state=ck.opt_state, step=ck.step, form="rows")
    out = {"form": meta["form"], "bytes": os.path.getsize(path), "rows_form_bytes": os.path.getsize(rows_path),
           "load_s": load_s}
    os.unlink(rows_path)
    return out


def one(optimizer: str, args, directory: str) -> dict:
    from jaxcorr import optimizers

    lr = args.lr if args.lr is not None else optimizers.spec(optimizer).learning_rate
    ckpt = os.path.join(directory, f"{optimizer}.ckpt")
    base = ["jaxcorr", "train", "--m", f"2^{args.logm}", "--d", str(args.d), "--n", str(args.n), "--json"]
    row = {"optimizer": optimizer, "lr": lr}
    row["train"] = timed([*base, "--steps", str(args.steps), "--optimizer", optimizer, "--lr", str(lr),
                          "--wide", "on", "--save", ckpt])
    row["checkpoint"] = rows_form(ckpt, optimizer, lr)
    row["resume"] = timed(["jaxcorr", "train", "--resume", ckpt, "--save", ckpt, "--steps", str(args.resume_steps),
                           "--json"])
    os.unlink(ckpt)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--logm", type=int, default=26, help="log2 of the width (default 26)")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--resume-steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: each optimizer's)")
    ap.add_argument("--optimizers", default="sgd,momentum,adam")
    ap.add_argument("--quick", action="store_true", help="m = 2^20, 4 + 2 steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.logm, args.steps, args.resume_steps = 20, 4, 2
    from jaxcorr import benchmarking

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as directory:
        rows = [one(o, args, directory) for o in args.optimizers.split(",")]
    result = {"machine": benchmarking.machine_info(), "argv": sys.argv[1:], "logm": args.logm, "n": args.n,
              "d": args.d, "runs": rows}
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
