r"""Command line: ``jaxcorr train`` (also ``python -m jaxcorr train``).

Trains the two-layer ReLU network of Definition 2.1, :math:`f(x) = \frac{1}{\sqrt m}\sum_r a_r
\sigma_b(\langle w_r, x\rangle)`, by gradient descent on :math:`L(W) = \frac12\sum_i (f(x_i) - y_i)^2`
with :func:`jaxcorr.train.fit`, printing progress on stderr and a summary on stdout: final loss,
ms per step, and the fire-set sizes :math:`|S_{i,\mathrm{fire}}|` against the :math:`m^{4/5}` and
:math:`m e^{-b^2/2}` bounds of Lemma 2.5.

With no options it trains on :func:`jaxcorr.data.synthetic` (``--seed 0``) with the sizes in
:data:`DEFAULTS` and ``--method dtree``. ``--data FILE`` trains on the user's ``.npz``/``.csv``
(:func:`jaxcorr.io.load_data`); ``--save``/``--save-every``/``--resume`` write and read
:mod:`jaxcorr.checkpoint` files; Ctrl-C stops after the current chunk, saves (with ``--save``) and
exits with status 130. Bad input prints one ``jaxcorr: error: ...`` line on stderr and exits 2.

Examples:
  $ jaxcorr train
  $ jaxcorr train --n 4 --m 256 --d 4 --steps 5 --json
  $ jaxcorr train --data mydata.csv --optimizer adam --lr 0.01 --save run.ckpt --save-every 50
  $ jaxcorr train --resume run.ckpt --save run.ckpt --steps 100
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import sys
import time

import numpy as np

__all__ = ["main", "build_parser", "DEFAULTS", "OPTIMIZERS"]

#: Sizes and settings of the default run (``jaxcorr train`` with no options).
DEFAULTS = {
    "n": 8,
    "d": 32,
    "m": 2**17,
    "steps": 100,
    "seed": 0,
    "method": "dtree",
    "optimizer": "sgd",
}

#: ``--optimizer`` names and the optax transformation over ``W`` each stands for.
OPTIMIZERS = {
    "sgd": "optax.sgd(lr)",
    "momentum": "optax.sgd(lr, momentum=0.9)",
    "adam": "optax.adam(lr)",
}

METHODS = ("dense", "dtree", "wtree")
_CONFIG_KEYS = ("n", "m", "d", "b", "lr", "optimizer", "seed")  # fixed for a run, checked on --resume


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxcorr`` argument parser (subcommand ``train``)."""
    parser = _Parser(
        prog="jaxcorr",
        description="Train wide two-layer ReLU networks with correlation trees (Alman et al., NeurIPS 2023).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    t = sub.add_parser(
        "train",
        help="train a 2NN(m, b) by gradient descent",
        description=(
            "Train the two-layer ReLU network f(x) = 1/sqrt(m) sum_r a_r relu(<w_r, x> - b) (paper, Def. 2.1) "
            "by gradient descent on L = 1/2 sum_i (f(x_i) - y_i)^2. Without --data it trains on seeded "
            "synthetic unit-norm data. Progress goes to stderr, the summary to stdout."
        ),
    )
    d = DEFAULTS
    t.add_argument("--method", choices=METHODS, default=None, help=f"dense: plain GD; dtree/wtree: GD with the correlation trees (Thm 3.1/3.2) (default {d['method']}; with --resume: the checkpoint's)")
    t.add_argument("--n", type=int, default=None, help=f"number of synthetic data points (default {d['n']}; with --data: the file's)")
    t.add_argument("--m", type=int, default=None, help=f"width, number of neurons (default {d['m']})")
    t.add_argument("--d", type=int, default=None, help=f"input dimension of synthetic data (default {d['d']}; with --data: the file's)")
    t.add_argument("--steps", type=int, default=d["steps"], help=f"gradient steps to run; with --resume: steps to add (default {d['steps']})")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default jaxcorr.train.DEFAULT_LEARNING_RATE = 1.0)")
    t.add_argument("--b", type=float, default=None, help="activation threshold b (default sqrt(0.4 ln m), Remark 2.6)")
    t.add_argument("--seed", type=int, default=None, help=f"seed of the initial weights and of the synthetic data (default {d['seed']})")
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None, help=f"{', '.join(f'{k} = {v}' for k, v in OPTIMIZERS.items())} (default {d['optimizer']})")
    t.add_argument("--data", metavar="FILE", default=None, help="train on FILE: .npz with arrays X (n, d) and y (n,), or .csv whose last column is y")
    t.add_argument("--normalize", action="store_true", help="scale each row of the --data X to unit norm, as the paper assumes")
    t.add_argument("--compare", choices=("dense",), default=None, help="also run the dense baseline from the same start; report the speed ratio and the largest loss difference")
    t.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line of stdout (instead of the summary)")
    t.add_argument("--save", metavar="PATH", default=None, help="write a checkpoint to PATH at the end, on Ctrl-C and every --save-every steps (atomically)")
    t.add_argument("--save-every", metavar="K", type=int, default=None, help="with --save: also checkpoint every K steps")
    t.add_argument("--resume", metavar="PATH", default=None, help="continue the run saved in PATH for --steps more steps (same data, sizes and hyperparameters)")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    # several processes (hosts): jaxcorr.distributed; all three or none (none: a detected cluster, else one process)
    t.add_argument("--coordinator", metavar="HOST:PORT", default=None, help="several processes: address of process 0's coordinator (with --num-processes and --process-id; see jaxcorr.distributed)")
    t.add_argument("--num-processes", metavar="N", type=int, default=None, help="several processes: how many take part")
    t.add_argument("--process-id", metavar="I", type=int, default=None, help="several processes: this one's index, 0..N-1 (process 0 writes the checkpoints)")
    return parser


def main(argv=None) -> int:
    """Entry point of ``jaxcorr`` and ``python -m jaxcorr``; returns the exit status.

    0 on success, 2 on bad input (one ``jaxcorr: error: ...`` line on stderr), 130 when stopped by
    Ctrl-C.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, one line already printed)
        return e.code
    try:
        return _train(args)
    except KeyboardInterrupt:
        print("jaxcorr: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"jaxcorr: error: {msg}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------
# train


def _train(args) -> int:
    # Validate what needs no imports first, so bad options fail fast.
    for name in ("n", "m", "d"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be >= 1, got {v}")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    for name in ("lr", "b"):
        v = getattr(args, name)
        if v is not None and not math.isfinite(v):
            raise ValueError(f"--{name} must be finite, got {v}")
    if args.lr is not None and args.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.save is not None:  # fail now, not after the training run
        where = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(where) or not os.access(where, os.W_OK):
            raise ValueError(f"--save {args.save}: directory {where!r} does not exist or is not writable")
        if os.path.isdir(args.save):
            raise ValueError(f"--save {args.save}: is a directory; give a file name")
    if args.save_every is not None:
        if args.save_every < 1:
            raise ValueError(f"--save-every must be >= 1, got {args.save_every}")
        if args.save is None:
            raise ValueError("--save-every needs --save PATH")

    import jax
    import jax.numpy as jnp

    from jaxcorr import checkpoint, data, distributed, io, nn, train

    mesh = distributed.setup(args.coordinator, args.num_processes, args.process_id)  # None: one process
    dtype = np.dtype(jnp.result_type(float))  # float32, or float64 under JAX_ENABLE_X64
    cfg, ck = _resolve_config(args, checkpoint)

    # Data.
    if cfg["data"] is not None:
        X, y = io.load_data(cfg["data"], dtype)
        if cfg["normalize"]:
            X = io.unit_rows(X)
        for name, have in (("n", X.shape[0]), ("d", X.shape[1])):
            if getattr(args, name) is not None and getattr(args, name) != have:
                raise ValueError(f"--{name} {getattr(args, name)} given, but the data file has {name}={have}")
        cfg["n"], cfg["d"] = X.shape
        norms = np.linalg.norm(X, axis=1)
        if not args.quiet and not np.allclose(norms, 1, atol=1e-3):
            _report(
                f"note: the rows of X have norms in [{norms.min():.3g}, {norms.max():.3g}]; the paper's bounds "
                "assume unit norm (--normalize rescales them)"
            )
    else:
        X, y = data.synthetic(cfg["seed"], cfg["n"], cfg["d"], dtype=dtype)
        X, y = np.asarray(X), np.asarray(y)
    if cfg["b"] is None:
        cfg["b"] = float(nn.default_threshold(cfg["m"]))
    if cfg["lr"] is None:
        cfg["lr"] = float(train.DEFAULT_LEARNING_RATE)
    optimizer = _make_optimizer(cfg["optimizer"], cfg["lr"])

    # Start: fresh or from the checkpoint.
    if ck is None:
        params0 = nn.init(jax.random.key(cfg["seed"]), cfg["m"], cfg["d"], dtype=dtype)
        state0, step0 = None, 0
    else:
        ck = checkpoint.load(args.resume, X=X, y=y, optimizer=optimizer)
        params0, state0, step0 = ck["params"], ck["opt_state"], ck["step"]
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    b, method = cfg["b"], cfg["method"]
    config = {**cfg, "dtype": str(dtype)}

    if not args.quiet:
        src = cfg["data"] or f"synthetic (jaxcorr.data.synthetic, seed {cfg['seed']})"
        start = f"resuming {args.resume} at step {step0}" if ck is not None else "fresh start"
        _report(
            f"jaxcorr train: method={method}  n={cfg['n']} d={cfg['d']} m={cfg['m']}  b={b:.4g}  "
            f"optimizer={cfg['optimizer']} lr={cfg['lr']:g}  steps={args.steps}  ({start})\n"
            f"data: {src}\n"
            "setting up: building the trees and compiling the training step (seconds; once per run)..."
        )

    def save(p, s, step):
        if jax.process_index() == 0:  # one writer across processes
            checkpoint.save(args.save, p, s, step, config, X, y)

    common = dict(X=Xj, y=yj, b=b, optimizer=optimizer, step0=step0, steps=args.steps, progress=not args.quiet)
    t0 = time.perf_counter()
    params, opt_state, hist, interrupted = _run_steps(
        functools.partial(train.fit, mesh=mesh), params0, state0, method=method, save=save if args.save else None, save_every=args.save_every, **common
    )
    wall = time.perf_counter() - t0
    done = len(hist["loss"])
    step_end = step0 + done
    if args.save:  # at the end, or where Ctrl-C stopped the run
        save(params, opt_state, step_end)
    if interrupted:
        where = f"saved to {args.save}" if args.save else "not saved (no --save given)"
        print(f"jaxcorr: interrupted at step {step_end} after {done} of {args.steps} steps; state {where}", file=sys.stderr)
        if args.save:
            print(
                f"jaxcorr: continue with: jaxcorr train --resume {args.save} --save {args.save} --steps {args.steps - done}",
                file=sys.stderr,
            )
        return 130

    loss_final = float(nn.loss(params, Xj, yj, b))
    result = {
        "method": method,
        "steps": done,
        "step_start": step0,
        "step_end": step_end,
        "loss_initial": float(nn.loss(params0, Xj, yj, b)),
        "loss_final": loss_final,
        "ms_per_step": hist["ms_per_step"],
        "setup_s": hist["setup_s"],
        "wall_s": wall,
        "fire": _fire_stats(hist, params, X, b, cfg["m"]),
        "capacity_events": hist["capacity_events"],
        **{k: cfg[k] for k in ("n", "m", "d", "b", "lr", "optimizer", "seed")},
        "data": cfg["data"] or "synthetic",
        "checkpoint": args.save,
        **distributed.info(mesh),  # "processes", "devices"
    }

    if args.compare:
        bparams, _, bhist, b_interrupted = _run_steps(train.fit, params0, state0, method=args.compare, **common)
        if b_interrupted:
            print(f"jaxcorr: interrupted during the {args.compare} comparison run", file=sys.stderr)
            return 130
        bloss_final = float(nn.loss(bparams, Xj, yj, b))
        diffs = np.abs(np.asarray(hist["loss"], np.float64) - np.asarray(bhist["loss"], np.float64))
        ms, bms = hist["ms_per_step"], bhist["ms_per_step"]
        result["compare"] = {
            "method": args.compare,
            "ms_per_step": bms,
            "speedup": (bms / ms) if (ms and bms) else None,
            "loss_final": bloss_final,
            "max_loss_diff": max(float(diffs.max()) if diffs.size else 0.0, abs(loss_final - bloss_final)),
            "max_weight_diff": float(np.max(np.abs(np.asarray(params.W) - np.asarray(bparams.W)))),
        }

    if args.json:
        print(json.dumps(_jsonable(result)))
    else:
        _print_summary(result, sys.stdout)
    return 0


def _resolve_config(args, checkpoint):
    """The run's settings: options given, else the checkpoint's (with --resume), else DEFAULTS."""
    given = {k: getattr(args, k) for k in _CONFIG_KEYS}
    given["data"] = args.data
    given["normalize"] = args.normalize
    if args.resume is None:
        cfg = {k: (DEFAULTS.get(k) if v is None else v) for k, v in given.items()}
        cfg["method"] = args.method or DEFAULTS["method"]
        if args.data is not None:
            cfg["n"] = cfg["d"] = None  # taken from the file
        return cfg, None
    ck = checkpoint.load(args.resume)
    saved = ck["config"]
    missing = [k for k in (*_CONFIG_KEYS, "data") if k not in saved]
    if missing:
        raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} lacks the run settings {missing}; it was not written by `jaxcorr train`")
    cfg = dict(saved)
    for k in (*_CONFIG_KEYS, "data"):
        v = given[k]
        if v is None or v == saved[k]:
            continue
        if k == "data" and saved[k] is not None and os.path.abspath(v) == os.path.abspath(saved[k]):
            cfg[k] = v
            continue
        if k == "data" and saved[k] is None:
            raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} was trained on the synthetic data, but --data {v!r} was given")
        raise checkpoint.CheckpointError(
            f"checkpoint {args.resume!r} was trained with {k}={saved[k]!r}, but --{k} {v!r} was given; "
            "a resumed run keeps its data, sizes and hyperparameters"
        )
    if args.normalize and not saved.get("normalize"):
        raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} was trained without --normalize")
    if saved["data"] is not None and args.data is None and not os.path.exists(saved["data"]):
        raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} was trained on {saved['data']!r}, which is gone; pass --data FILE")
    cfg["normalize"] = bool(saved.get("normalize"))
    # The method may change on resume: all three follow the same trajectory (to float rounding).
    cfg["method"] = args.method or saved.get("method", DEFAULTS["method"])
    cfg.pop("dtype", None)
    return cfg, ck


@functools.lru_cache(maxsize=None)
def _make_optimizer(name: str, lr: float):
    """The optax optimizer for ``--optimizer name --lr lr``; one object per (name, lr), so that
    repeated runs in one process reuse :func:`jaxcorr.train.fit`'s compiled code."""
    import optax

    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


class _Stop:
    """Ctrl-C handling: the first SIGINT sets a flag that stops training after the current chunk;
    a second one raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._old = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\njaxcorr: stopping after this chunk (Ctrl-C again to abort without saving)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _progress_line(method: str, step: int, total: int, info: dict) -> str:
    """``dtree  step  40/100  L(W(39)) = 0.0447  3.86 ms/step``: fit reports the loss of the weights
    the last step started from."""
    w = len(str(total))
    ms = info.get("ms_per_step")
    speed = f"{ms:8.2f} ms/step" if ms is not None and math.isfinite(ms) else ""
    loss = f"L(W({step - 1})) = {float(info['loss']):.6g}"
    return f"{method:<5}  step {step:>{w}}/{total}  {loss:<{w + 21}} {speed}".rstrip()


def _report(line: str) -> None:
    """Where progress lines go (stderr); a seam for the tests."""
    print(line, file=sys.stderr, flush=True)


def _run_steps(fit, params, opt_state, *, X, y, b, method, optimizer, step0, steps, save=None,
               save_every=None, progress=True):
    """``steps`` gradient steps as consecutive :func:`jaxcorr.train.fit` calls of at most
    ``save_every`` steps, with progress lines and a checkpoint (``save(params, opt_state, step)``)
    after each call but the last; Ctrl-C stops the run after the current chunk.

    Splitting a run into calls changes nothing but set-up time for dense, and the trajectory only by
    float rounding for dtree/wtree (fit's resume guarantee).

    Returns:
      ``(params, opt_state, history, interrupted)``; ``interrupted`` is True when Ctrl-C stopped the
      run before ``steps``.
    """
    seg_len = save_every or max(steps, 1)
    chunk = max(1, math.ceil(steps / 10))  # about ten progress lines
    hists, done = [], 0
    with _Stop() as stop:

        def callback(info):
            if progress:
                _report(_progress_line(method, step0 + done + int(info["step"]), step0 + steps, info))
            return stop.requested

        while done < steps and not stop.requested:
            seg = min(seg_len, steps - done)
            params, hist = fit(
                params, X, y, steps=seg, method=method, optimizer=optimizer, b=b, opt_state=opt_state,
                callback=callback, chunk_size=min(chunk, seg),
            )
            opt_state = hist["opt_state"]
            hists.append(hist)
            done += len(hist["loss"])
            if save is not None and done < steps and not stop.requested:  # the caller saves the last state
                save(params, opt_state, step0 + done)
                if progress:
                    _report(f"saved checkpoint at step {step0 + done}")
        interrupted = stop.requested and done < steps
    if opt_state is None:
        opt_state = optimizer.init(params.W)
    return params, opt_state, _merge(hists), interrupted


def _merge(hists: list[dict]) -> dict:
    """One history from the histories of consecutive fit calls."""
    out = {k: np.concatenate([np.asarray(h[k]) for h in hists]) if hists else np.zeros(0) for k in ("loss", "fire_mean", "fire_max", "fire_union")}
    n = [len(h["loss"]) for h in hists]
    total = sum(n)
    out["ms_per_step"] = sum(h["ms_per_step"] * k for h, k in zip(hists, n)) / total if total else None
    out["setup_s"] = sum(h["setup_s"] for h in hists)
    out["capacity_events"] = [e for h in hists for e in h["capacity_events"]]
    return out


def _fire_stats(hist: dict, params, X, b: float, m: int) -> dict:
    """Fire-set sizes |S_i,fire(t)| = #{r : <w_r, x_i> > b} over the run, and the Lemma 2.5 bounds."""
    if len(hist["loss"]):
        mean, mx, union = hist["fire_mean"], hist["fire_max"], hist["fire_union"]
    else:  # no steps: the sets of the returned weights
        fired = np.asarray(X, np.float64) @ np.asarray(params.W, np.float64).T > b
        sizes = fired.sum(axis=1)
        mean, mx, union = [sizes.mean()], [sizes.max()], [fired.any(axis=0).sum()]
    return {
        "mean": float(np.mean(mean)),
        "max": int(np.max(mx)),
        "union_max": int(np.max(union)),
        "bound_m_4_5": m ** 0.8,
        "bound_m_exp_b2": m * math.exp(-(b**2) / 2),
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _print_summary(r: dict, out) -> None:
    f = r["fire"]
    ms = f"{r['ms_per_step']:.3f} ms/step" if r["ms_per_step"] else "n/a (0 steps)"
    lines = [
        f"done: {r['steps']} steps of {r['method']} (steps {r['step_start']} -> {r['step_end']}) in {r['wall_s']:.2f} s, "
        f"of which setup/compile {r['setup_s']:.2f} s",
        f"loss        {r['loss_initial']:.6g} -> {r['loss_final']:.6g}   (1/2 sum_i (f(x_i) - y_i)^2 of the returned weights)",
        f"speed       {ms}",
        f"fire sets   |S_i,fire| mean {f['mean']:.1f}, max {f['max']}; union over i: max {f['union_max']}   (of m = {r['m']})",
        f"Lemma 2.5   m^(4/5) = {f['bound_m_4_5']:.1f}   m*exp(-b^2/2) = {f['bound_m_exp_b2']:.1f}   (b = {r['b']:.4g});  "
        f"max |S_i,fire| / m^(4/5) = {f['max'] / f['bound_m_4_5']:.3f}",
    ]
    reruns = [e for e in r["capacity_events"] if str(e.get("reason", "")).startswith("overflow")]
    fallback = [e for e in r["capacity_events"] if str(e.get("reason", "")).startswith("fallback")]
    if reruns:
        lines.append(f"capacity    {len(reruns)} chunk(s) rerun with a larger frontier capacity (a fire set outgrew it)")
    if fallback:
        lines.append(f"fallback    ran dense from step {fallback[0]['step']}: {fallback[0]['reason']}")
    c = r.get("compare")
    if c:
        sp = f"{c['speedup']:.2f}x the speed of {c['method']}" if c["speedup"] else "speed ratio n/a"
        lines.append(
            f"vs {c['method']:<8} {c['ms_per_step'] or float('nan'):.3f} ms/step -> {r['method']} runs at {sp}; "
            f"largest loss difference {c['max_loss_diff']:.3g}, largest weight difference {c['max_weight_diff']:.3g}"
        )
    if r["checkpoint"]:
        lines.append(f"checkpoint  {r['checkpoint']} (step {r['step_end']})")
    if not c:
        lines.append("next        jaxcorr train --compare dense   (speed and loss against plain GD);  jaxcorr train --help")
    print("\n".join(lines), file=out)
