r"""Command line: ``jaxcorr train`` (also ``python -m jaxcorr train``).

Trains the two-layer ReLU network of Definition 2.1, :math:`f(x) = \frac{1}{\sqrt m}\sum_r a_r
\sigma_b(\langle w_r, x\rangle)`, by gradient descent on :math:`L(W) = \frac12\sum_i (f(x_i) - y_i)^2`
with :func:`jaxcorr.train.fit`, showing progress on stderr and printing a summary on stdout: final
loss, time per step and end to end, and the fire-set sizes :math:`|S_{i,\mathrm{fire}}|` against the
:math:`m^{4/5}` and :math:`m e^{-b^2/2}` bounds of Lemma 2.5.

With no options it trains on :func:`jaxcorr.data.synthetic` (``--seed 0``) with the sizes in
:data:`DEFAULTS` and the default method (:data:`DEFAULT_METHOD`). ``--data FILE`` trains on the
user's ``.npz``/``.csv`` (:func:`jaxcorr.io.load_data`); ``--save``/``--save-every``/``--resume``
write and read :mod:`jaxcorr.checkpoint` files, and a resumed run is matched to its data by content
(SHA-256), not by path. A run holds ``W(0)`` (drawn from ``--seed``), so its checkpoints keep only the
rows that differ from it and the active rows (:func:`jaxcorr.implicit.save_trained`: 58 MB instead of
1 GiB at m = 2^22, d = 64); resuming draws ``W(0)`` again and restores the run bit for bit.

Process behaviour:

- Exit status: 0 done; 1 the run diverged (non-finite loss); 2 bad input, or a run that cannot fit
  in memory (one ``jaxcorr: error: ...`` line on stderr, no traceback); 130 / 143 stopped by Ctrl-C /
  SIGTERM.
- Ctrl-C or SIGTERM stops within about a second at any size (jitted chunks are sized to about
  0.5 s; the checkpoint is compact and its programs are compiled before training), saves a
  checkpoint when ``--save`` is given, says how to continue and exits at once (no interpreter
  teardown); during set-up, when nothing has been trained yet, it exits at once. A second Ctrl-C
  aborts at once.
- The persistent XLA compilation cache (``--cache-dir``, ``JAXCORR_CACHE_DIR``, default
  ``$XDG_CACHE_HOME/jaxcorr/xla`` or ``~/.cache/jaxcorr/xla``; ``--no-cache``) makes a second run of
  the same sizes compile nothing.

Examples:
  $ jaxcorr train
  $ jaxcorr train --n 4 --m 256 --d 4 --steps 5 --json
  $ jaxcorr train --data mydata.csv --normalize --optimizer adam --lr 0.01 --save run.ckpt --save-every 50
  $ jaxcorr train --resume run.ckpt --save run.ckpt --steps 100
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import time

import numpy as np

from jaxcorr import _cli_run, optimizers
from jaxcorr import train as _train_mod

__all__ = ["main", "build_parser", "DEFAULTS", "OPTIMIZERS", "METHODS", "DEFAULT_METHOD", "cache_dir"]

#: The training methods, as :mod:`jaxcorr.train` offers them.
METHODS = tuple(_train_mod.METHODS)
#: ``active`` (exact, tree-free steps on the active rows) where the library has it, else ``dtree``.
DEFAULT_METHOD = "active" if "active" in METHODS else "dtree"

#: Sizes and settings of the default run (``jaxcorr train`` with no options).
DEFAULTS = {
    "n": 8,
    "d": 32,
    "m": 2**17,
    "steps": 100,
    "seed": 0,
    "method": DEFAULT_METHOD,
    "optimizer": "sgd",
}

#: ``--optimizer`` names and the optax transformation over ``W`` each stands for
#: (from :data:`jaxcorr.optimizers.TABLE`, the table the scripts share).
OPTIMIZERS = {k: optimizers.describe(k, "lr") + (" (span path)" if optimizers.spec(k).span else "")
              for k in optimizers.NAMES}

_METHOD_HELP = {
    "dense": "plain GD on all m neurons",
    "active": "exact GD on the rows that can fire, fire sets by comparison (no trees in the loop)",
    "dtree": "GD with the Correlation DTree, Algorithm 8",
    "wtree": "GD with the Correlation WTree, Algorithm 9",
}
_CONFIG_KEYS = ("n", "m", "d", "b", "lr", "optimizer", "seed")  # fixed for a run, checked on --resume
_SEED_MAX = 2**32 - 1  # jax.random.key folds larger seeds onto smaller ones
EXIT_DIVERGED = 1
PAPER = "https://arxiv.org/abs/2211.14227"


def _version() -> str:
    from jaxcorr import __version__

    import jax

    return f"jaxcorr {__version__} (jax {jax.__version__}, Python {sys.version.split()[0]})"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxcorr`` argument parser (subcommand ``train``)."""
    parser = _Parser(
        prog="jaxcorr",
        description="Train wide two-layer ReLU networks exactly and fast with weight-data correlation "
                    "trees (Alman, Liang, Song, Zhang, Zhuo, NeurIPS 2023).",
        epilog=f"Paper: {PAPER}",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    t = sub.add_parser(
        "train",
        help="train a 2NN(m, b) by gradient descent",
        description=(
            "Train the two-layer ReLU network f(x) = 1/sqrt(m) sum_r a_r relu(<w_r, x> - b) (paper, Def. 2.1) "
            "by gradient descent on L = 1/2 sum_i (f(x_i) - y_i)^2. Without --data it trains on seeded "
            "synthetic unit-norm data. Progress goes to stderr, the summary to stdout. Exit status: 0 done, "
            "1 diverged, 2 bad input or too big for memory, 130/143 stopped by Ctrl-C/SIGTERM."
        ),
        epilog=f"Paper: {PAPER}",
    )
    _add_train_arguments(t)
    return parser


def _add_train_arguments(t) -> None:
    d = DEFAULTS
    methods = "; ".join(f"{k}: {_METHOD_HELP.get(k, 'see jaxcorr.train')}" for k in METHODS)
    t.add_argument("--method", choices=METHODS, default=None, help=f"{methods} (default {d['method']}; with --resume: the checkpoint's)")
    t.add_argument("--n", type=int, default=None, help=f"number of synthetic data points (default {d['n']}; with --data: the file's)")
    t.add_argument("--m", type=_width_arg, default=None, help=f"width, number of neurons: an integer or 2^K (default {d['m']})")
    t.add_argument("--d", type=int, default=None, help=f"input dimension of synthetic data (default {d['d']}; with --data: the file's)")
    t.add_argument("--steps", type=int, default=d["steps"], help=f"gradient steps to run; with --resume: steps to add (default {d['steps']})")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default jaxcorr.train.DEFAULT_LEARNING_RATE = 1.0)")
    t.add_argument("--b", type=float, default=None, help="activation threshold b (default sqrt(0.4 ln m), Remark 2.6)")
    t.add_argument("--seed", type=int, default=None, help=f"seed of the initial weights and of the synthetic data, 0..2^32-1 (default {d['seed']})")
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None, help=f"{', '.join(f'{k} = {v}' for k, v in OPTIMIZERS.items())} (default {d['optimizer']})")
    t.add_argument("--data", metavar="FILE", default=None, help="train on FILE: .npz with arrays X (n, d) and y (n,), or .csv whose last column is y")
    t.add_argument("--normalize", action="store_true", help="scale each row of the --data X to unit norm, as the paper assumes")
    t.add_argument("--fallback", choices=("error", "dense"), default="error", help="when a fire set outgrows the DDFN cap ceil(m^(4/5)) of the sparse methods: stop with an error (default) or continue with dense GD")
    t.add_argument("--compare", choices=("dense",), default=None, help="also run dense GD from the same start; report the speed ratio per step and end to end, and the loss difference")
    t.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line of stdout (instead of the summary)")
    t.add_argument("--save", metavar="PATH", default=None, help="write a checkpoint to PATH at the end, on Ctrl-C/SIGTERM and every --save-every steps (atomically); PATH must be new or a checkpoint")
    t.add_argument("--save-every", metavar="K", type=int, default=None, help="with --save: also checkpoint every K steps")
    t.add_argument("--resume", metavar="PATH", default=None, help="continue the run saved in PATH for --steps more steps (same data by content, sizes and hyperparameters); needs --save unless --steps 0")
    t.add_argument("--cache-dir", metavar="DIR", default=None, help="persistent XLA compilation cache (default $JAXCORR_CACHE_DIR, else $XDG_CACHE_HOME/jaxcorr/xla or ~/.cache/jaxcorr/xla)")
    t.add_argument("--no-cache", action="store_true", help="do not read or write the persistent compilation cache")
    t.add_argument("--implicit", choices=("auto", "on", "off"), default="auto",
                   help="hold only the rows that can fire (jaxcorr.implicit: W(0) streamed from the seed, compact "
                        "checkpoints): auto (default) when the full-width run would not fit in memory but this one does")
    t.add_argument("--quiet", action="store_true", help="no progress display (warnings and errors still go to stderr)")
    # several processes (hosts): jaxcorr.distributed; all three or none (none: a detected cluster, else one process)
    t.add_argument("--coordinator", metavar="HOST:PORT", default=None, help="several processes: address of process 0's coordinator (with --num-processes and --process-id; see jaxcorr.distributed)")
    t.add_argument("--num-processes", metavar="N", type=int, default=None, help="several processes: how many take part")
    t.add_argument("--process-id", metavar="I", type=int, default=None, help="several processes: this one's index, 0..N-1 (process 0 writes the checkpoints)")


def _width_arg(text: str) -> int:
    """``--m``: a positive integer or ``2^K`` (``2**K``)."""
    t = text.strip().replace("**", "^")
    try:
        if "^" in t:
            base, exp = t.split("^")
            if int(base) != 2 or not 0 <= int(exp) <= 62:
                raise ValueError
            return 2 ** int(exp)
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 2^K (0 <= K <= 62), got {text!r}") from None


def main(argv=None) -> int:
    """Entry point of ``jaxcorr`` and ``python -m jaxcorr``; returns the exit status.

    ``argv=None`` (the console script, ``python -m jaxcorr``) marks a command-line process: it also
    turns on the persistent compilation cache by default and handles signals with a watchdog thread
    that can end the process at once. Called with a list (tests, notebooks), it changes no
    process-wide state unless ``--cache-dir`` is given.

    Returns:
      0 on success, 1 when training diverged, 2 on bad input (one ``jaxcorr: error: ...`` line on
      stderr), 130 / 143 when stopped by Ctrl-C / SIGTERM, 141 when stdout is a closed pipe.
    """
    process = argv is None
    try:
        rc = _main(argv, process)
        sys.stdout.flush()
        if process and rc in _cli_run.EXIT_CODES.values():
            _cli_run.exit_now(rc)  # a stopped command-line run: skip the interpreter's teardown
        return rc
    except BrokenPipeError:  # `jaxcorr --help | head`: the reader left; say nothing more
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


def _main(argv, process: bool) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help/--version (0) or a usage error (2, one line already printed)
        return e.code
    try:
        return _train(args, process)
    except KeyboardInterrupt:
        print("jaxcorr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except (ValueError, OSError, MemoryError) as e:  # CheckpointError is a ValueError
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"jaxcorr: error: {msg}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------
# checks that need no JAX


def _check_options(args) -> None:
    """Validate what needs no imports or files, so bad options fail fast."""
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
    if args.seed is not None and not 0 <= args.seed <= _SEED_MAX:
        raise ValueError(f"--seed must be an integer in [0, 2^32 - 1], got {args.seed}")
    if args.save_every is not None:
        if args.save_every < 1:
            raise ValueError(f"--save-every must be >= 1, got {args.save_every}")
        if args.save is None:
            raise ValueError("--save-every needs --save PATH")
    if args.normalize and args.data is None and args.resume is None:
        raise ValueError("--normalize rescales the rows of a --data file; the synthetic data are unit-norm already")
    if args.resume is not None and args.save is None and args.steps > 0:
        raise ValueError(
            f"--resume {args.resume} without --save would train {args.steps} steps and keep none of them: "
            f"add --save {args.resume} to continue in place (or --save NEW to keep {args.resume} as it is), "
            "or --steps 0 to only evaluate the checkpoint")
    if args.method is not None and args.compare == args.method:
        raise ValueError(f"--compare {args.compare} with --method {args.method} compares a method with itself; "
                         f"drop --compare, or train another --method ({', '.join(k for k in METHODS if k != args.compare)})")
    if args.compare and args.steps == 0:
        raise ValueError(f"--compare {args.compare} with --steps 0 has no steps to compare; give --steps N")
    if args.implicit == "on" and args.compare:
        raise ValueError(f"--compare {args.compare} needs the full-width weights in memory; drop --implicit on")
    if args.cache_dir is not None and args.no_cache:
        raise ValueError("--cache-dir and --no-cache contradict each other; give one")


def cache_dir(args=None, process: bool = True) -> str | None:
    """The persistent compilation cache directory for a run, or None for no cache.

    Order: ``--no-cache`` (none); ``--cache-dir DIR``; ``$JAXCORR_CACHE_DIR`` (empty: none); a
    command-line process's default ``$XDG_CACHE_HOME/jaxcorr/xla`` or ``~/.cache/jaxcorr/xla``.
    In-process calls (``main([...])``) use no cache unless told.
    """
    if args is not None and args.no_cache:
        return None
    if args is not None and args.cache_dir is not None:
        return args.cache_dir
    env = os.environ.get("JAXCORR_CACHE_DIR")
    if env is not None:
        return env or None
    if not process:
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxcorr", "xla")


def _enable_cache(path: str | None) -> str | None:
    """Point JAX's persistent compilation cache at ``path`` and cache every program (small ones too:
    the CLI's compile time is many small programs). Returns the directory used, or None (with a
    warning when it cannot be created)."""
    if path is None:
        return None
    import jax

    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path!r} is not writable")
    except OSError as e:
        print(f"jaxcorr: warning: compilation cache off: cannot use {path!r} ({e})", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    try:
        import filelock  # noqa: F401 -- JAX needs it to evict entries; without it the cache is unbounded
    except ImportError:
        pass
    else:
        if jax.config.jax_compilation_cache_max_size == -1:
            jax.config.update("jax_compilation_cache_max_size", 2 * 2**30)  # least recently used go
    return path


# --------------------------------------------------------------------------------------------------
# train


def _train(args, process: bool) -> int:
    _check_options(args)
    cache = _enable_cache(cache_dir(args, process))
    what = f" and saving to {args.save}" if args.save else ""
    with _cli_run.Signals(process, what_on_stop=what, saving=args.save is not None) as sig:
        run = _prepare(args, sig)
        run["cache"] = cache
        return _execute(args, run, sig)


def _prepare(args, sig) -> dict:
    """Everything before training: settings, data, memory check, start state. Raises ValueError /
    OSError / MemoryError with one-line messages."""
    import jax
    import jax.numpy as jnp

    from jaxcorr import checkpoint, distributed, memory, nn

    mesh = distributed.setup(args.coordinator, args.num_processes, args.process_id)  # None: one process
    dtype = np.dtype(jnp.result_type(float))  # float32, or float64 under JAX_ENABLE_X64
    cfg, kind = _resolve_config(args, checkpoint)
    if args.save is not None:
        try:
            checkpoint.check_target(args.save, protect=(cfg["data"],))
        except (ValueError, OSError) as e:
            raise ValueError(f"--save {args.save}: {e}") from None
    X, y, notes = _load_data(args, cfg, dtype)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    if not np.allclose(norms, 1, atol=1e-3):
        notes.append(f"note: the rows of X have norms in [{norms.min():.3g}, {norms.max():.3g}]; the paper's "
                     "bounds assume unit norm (--normalize rescales them)")
    device = jax.devices()[0]
    if cfg["b"] is None:
        cfg["b"] = float(nn.default_threshold(cfg["m"]))
    if cfg["lr"] is None:
        cfg["lr"] = float(_train_mod.DEFAULT_LEARNING_RATE)
    optimizer = _make_optimizer(cfg["optimizer"], cfg["lr"])
    mem, lazy = _memory_plan(args, cfg, dtype, memory.available_bytes(device), norms, resumed=kind)
    params0, state0, step0, W0 = _start_state(args, cfg, kind, lazy, X, y, optimizer, dtype, mesh is None)
    return dict(cfg=cfg, X=X, y=y, norms=norms, optimizer=optimizer, params0=params0, state0=state0,
                step0=step0, dtype=dtype, notes=notes, memory=mem, platform=device.platform, mesh=mesh,
                implicit=lazy, W0=W0)


def _load_data(args, cfg: dict, dtype):
    """``(X, y, notes)``: the --data file (normalised with --normalize), else the synthetic data; sets
    ``cfg["n"]``/``cfg["d"]`` from a file."""
    from jaxcorr import data, io

    notes = []
    if cfg["data"] is None:
        X, y = data.synthetic(cfg["seed"], cfg["n"], cfg["d"], dtype=dtype)
        return np.asarray(X), np.asarray(y), notes
    X, y, info = io.load_data(cfg["data"], dtype, return_info=True)
    if info["header"] is not None:
        notes.append(f"data: skipped the header row (line {info['header_line']}: {info['header'][:60]!r})")
    if cfg["normalize"]:
        X = io.unit_rows(X)
    for name, have in (("n", X.shape[0]), ("d", X.shape[1])):
        if getattr(args, name) is not None and getattr(args, name) != have:
            raise ValueError(f"--{name} {getattr(args, name)} given, but the data file has {name}={have}")
    cfg["n"], cfg["d"] = X.shape
    return X, y, notes


def _start_state(args, cfg: dict, kind, lazy: bool, X, y, optimizer, dtype, one_process: bool = True):
    """``(params0, state0, step0, W0)``: the fresh ``nn.init`` (None for an implicit run, which draws
    its rows in set-up), or the ``--resume`` checkpoint (a compact one of a full-width run expanded
    back to all m rows, unless the run is implicit). ``W0`` is ``nn.init(seed)`` where the run holds
    it (the base of compact checkpoints; several processes save all of W), else None."""
    import jax

    from jaxcorr import checkpoint, implicit, nn

    if kind is None:
        if lazy:
            return None, None, 0, None
        p = nn.init(jax.random.key(cfg["seed"]), cfg["m"], cfg["d"], dtype=dtype)
        return p, None, 0, p
    if kind == "full":  # W(0) drawn again (as a fresh run holds it) so that the next saves are compact
        ck = checkpoint.load(args.resume, X=X, y=y, optimizer=optimizer)  # data matched by content
        again = args.save is not None and one_process
        W0 = nn.init(jax.random.key(cfg["seed"]), cfg["m"], cfg["d"], dtype=dtype) if again else None
        return ck["params"], ck["opt_state"], ck["step"], W0
    ck = implicit.load(args.resume, X=X, y=y, optimizer=optimizer)
    if lazy:  # a model carrying coefficients goes on from their state: the row form is not kept
        state = None if one_process and ck["model"].coefficients is not None else ck["opt_state"]
        return ck["model"], state, ck["step"], None
    params, state, W0 = implicit.expand(ck["model"], ck["opt_state"], optimizer)
    return params, state, ck["step"], W0


def _memory_plan(args, cfg: dict, dtype, available, norms, resumed=None):
    """Check the run's memory before allocating anything and pick the eager or the implicit path.

    The eager path (``nn.init`` + ``train.fit`` over all m rows) is kept whenever it fits and
    ``--implicit`` is not ``on``; otherwise, for a sparse method, the implicit path
    (:mod:`jaxcorr.implicit`: W(0) streamed from the seed, only the rows that can fire held). A run
    that fits neither way raises one line (:func:`jaxcorr.memory.check` for dense,
    :func:`jaxcorr.implicit.check_fits` otherwise) naming the estimate, the memory available and the
    widest m that fits. ``resumed`` is the kind of the ``--resume`` checkpoint (:func:`_resolve_config`):
    an implicit run's stays implicit, a full one stays full width, a compact one of a full-width run
    goes either way.

    Returns:
      ``(memory, implicit)``: the ``estimate``/``available``/``source`` dict, and whether the run is implicit.
    """
    from jaxcorr import implicit, memory

    method, n, m, d = cfg["method"], cfg["n"], cfg["m"], cfg["d"]
    if resumed == "implicit" and args.implicit == "off":
        raise ValueError(f"--resume {args.resume} holds an implicit model (only its active rows); drop --implicit off")
    if resumed == "implicit" and args.compare:  # (the baseline would train the held rows as a narrow network)
        raise ValueError(f"--resume {args.resume} holds an implicit model (only its active rows), but --compare "
                         f"{args.compare} needs the full-width weights; drop --compare")
    if resumed == "full" and args.implicit == "on":
        raise ValueError(f"--resume {args.resume} holds a full-width model; drop --implicit on")
    if not (resumed == "implicit" or args.implicit == "on"):
        try:
            return memory.check(method, n, m, d, itemsize=dtype.itemsize, optimizer=cfg["optimizer"],
                                compare=args.compare, available=available), False
        except (MemoryError, ValueError) as e:
            if method == "dense" and isinstance(e, MemoryError) and not args.compare:
                spec = optimizers.spec(cfg["optimizer"])
                fits = implicit.largest_width(DEFAULT_METHOD, n, d, available[0] or 0, dtype, b=None,
                                              optimizer_slots=spec.state_slots, span=spec.span)
                raise MemoryError(f"{e}; --method {DEFAULT_METHOD} (implicit) fits up to --m {fits}") from None
            if args.implicit == "off" or method == "dense" or args.compare or resumed == "full":
                raise  # (a resumed full checkpoint stays full width)
    spec = optimizers.spec(cfg["optimizer"])
    est = implicit.check_fits(method, n, d, m, dtype, available=available[0] if available[0] is not None else None,
                              b=cfg["b"], x_norm=float(np.max(norms)), optimizer_slots=spec.state_slots,
                              span=spec.span)
    return {"estimate": est["total"], "available": available[0], "source": available[1]}, True


def _execute(args, run: dict, sig) -> int:
    """Train, save, compare and report; returns the exit status."""
    import jax.numpy as jnp

    cfg, X, y = run["cfg"], run["X"], run["y"]
    method, b, step0 = cfg["method"], cfg["b"], run["step0"]
    for note in run["notes"]:
        print(f"jaxcorr: {note}", file=sys.stderr)
    mode = _cli_run.Progress.pick_mode(args.quiet)
    if mode != "off":
        src = cfg["data"] or f"synthetic (jaxcorr.data.synthetic, seed {cfg['seed']})"
        start = f"resuming {args.resume} at step {step0}" if args.resume else "fresh start"
        _report(f"jaxcorr train: method={method}  n={cfg['n']} d={cfg['d']} m={cfg['m']}  b={b:.4g}  "
                f"optimizer={cfg['optimizer']} lr={cfg['lr']:g}  steps={args.steps}  ({start})\ndata: {src}")
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    common = dict(X=Xj, y=yj, b=b, optimizer=run["optimizer"], step0=step0, steps=args.steps, mode=mode,
                  signals=sig, fallback=args.fallback, platform=run["platform"], norms=run["norms"],
                  lr=cfg["lr"])
    t0 = time.perf_counter()
    fit = _train_mod.fit if run["mesh"] is None else functools.partial(_train_mod.fit, mesh=run["mesh"])
    if run["implicit"]:
        fit = _implicit_fit(run["mesh"])
        if run["params0"] is None:
            run["params0"] = _implicit_setup(run, mode, sig)
    save = _saver(args, run, sig) if args.save else None
    out = _run_steps(fit, run["params0"], run["state0"], method=method, save=save,
                     save_every=args.save_every, **common)
    out["wall"] = time.perf_counter() - t0
    return _after_training(args, run, sig, out, save, common)


def _after_training(args, run: dict, sig, out: dict, save, common: dict) -> int:
    """The last save, then the exit status and report of a run that stopped, diverged or finished."""
    cfg, step0 = run["cfg"], run["step0"]
    params, opt_state, hist = out["params"], out["opt_state"], out["history"]
    done = len(hist["loss"])
    step_end = step0 + done
    if out["diverged"] is not None:
        return _diverged(args, out["diverged"], hist, step0, cfg)
    if args.save and out["saved_at"] != step_end:  # at the end, or where a signal stopped the run
        if out["interrupted"]:
            print(f"jaxcorr: saving checkpoint {args.save} at step {step_end}...", file=sys.stderr, flush=True)
        save(params, opt_state, step_end)
    if out["interrupted"]:
        return _interrupted(args, sig, step_end, done)
    if sig.requested:  # during the final save: the run is complete and saved
        print(f"jaxcorr: interrupted by {sig.name} after the training finished (step {step_end}"
              f"{'; saved to ' + args.save if args.save else ''})", file=sys.stderr)
        return sig.exit_code
    sig.phase = "finish"
    result = _result(args, run, hist, params, out["wall"], done)
    result["warnings"] = _warnings(hist, result, run)
    for w in result["warnings"]:
        print(f"jaxcorr: warning: {w}", file=sys.stderr)
    if args.compare:
        sig.phase = "compare"
        cmp = _run_steps(_train_mod.fit, run["params0"], run["state0"], method=args.compare,
                         **common, idle_phase="compare")
        if cmp["interrupted"]:
            print(f"jaxcorr: interrupted by {sig.name} during the {args.compare} comparison run "
                  f"(the {cfg['method']} run is complete{'; saved to ' + args.save if args.save else ''})",
                  file=sys.stderr)
            return sig.exit_code
        result["compare"] = _comparison(args.compare, cmp, hist, result, params, common["X"], common["y"], cfg["b"])
    if args.json:
        print(json.dumps(_jsonable(result)))
    else:
        _print_summary(result, sys.stdout)
    return 0


def _saver(args, run: dict, sig):
    """``save(params, opt_state, step)`` for ``--save``: process 0 writes; an implicit run its compact
    checkpoint (:func:`jaxcorr.implicit.save`); a full-width run that holds ``W(0)`` only the rows
    that differ from it and the active rows (:func:`jaxcorr.implicit.save_trained`: megabytes where
    ``W`` is gigabytes); otherwise (a resumed full checkpoint, several processes) all of ``W``
    (:func:`jaxcorr.checkpoint.save`)."""
    import jax

    from jaxcorr import checkpoint, implicit

    cfg, X, y = run["cfg"], run["X"], run["y"]
    config = {**cfg, "dtype": str(run["dtype"])}
    if cfg["data"] is not None:
        config["data_abspath"] = os.path.abspath(cfg["data"])
    # checkpoint.load checks config["m"] against the held rows: an implicit checkpoint's width is in config["implicit"]
    compact_config = {k: v for k, v in config.items() if k != "m"}
    compact = run["W0"] is not None and run["mesh"] is None and not run["implicit"]
    active = None
    if compact:  # once per run, not per save: the active rows, and the save's programs compiled now
        active = implicit.active_rows(run["W0"].W, X, cfg["b"])
        state0 = run["state0"] if run["state0"] is not None else run["optimizer"].init(run["params0"].W)
        try:
            implicit.from_params(jax.random.key(cfg["seed"]), run["params0"], X, b=cfg["b"], W0=run["W0"],
                                 opt_state=state0, optimizer=run["optimizer"], active=active)
        except ValueError:  # a resumed model whose a is not the seed's: save all of W
            compact = False
        del state0

    def save(p, s, step):
        sig.phase = "save"
        if jax.process_index() != 0:  # one writer across processes
            return
        if run["implicit"]:
            implicit.save(args.save, p, X, y, opt_state=s, step=step, config=compact_config)
        elif compact:
            implicit.save_trained(args.save, jax.random.key(cfg["seed"]), p, X, y, b=cfg["b"], W0=run["W0"],
                                  opt_state=s, optimizer=run["optimizer"], step=step, config=compact_config,
                                  active=active)
        else:
            checkpoint.save(args.save, p, s, step, config, X, y)

    return save


def _implicit_fit(mesh):
    """A :func:`jaxcorr.train.fit`-like callable over an :class:`jaxcorr.implicit.ImplicitParams`
    (the model fixes ``b`` and the width, so ``b`` is dropped). A model carrying coefficients (a
    ``train.sgd`` run, or a checkpoint of one) goes on from them and their state, and ``opt_state``
    (the same state in row form) is not passed; on a mesh, which trains rows, it goes on from its rows."""
    import dataclasses

    from jaxcorr import implicit

    def fit(model, X, y, *, b, **kwargs):
        del b  # model.b
        if mesh is not None:
            kwargs["mesh"] = mesh
            model = dataclasses.replace(model, coefficients=None)
        elif model.coefficients is not None:
            kwargs["opt_state"] = None
        return implicit.fit(model, X, y, **kwargs)

    return fit


def _implicit_setup(run: dict, mode: str, sig):
    """The implicit model's active rows (:func:`jaxcorr.implicit.setup`), with set-up progress."""
    import jax

    from jaxcorr import implicit

    cfg = run["cfg"]
    show = _cli_run.SetupProgress(mode, _report, cfg["m"])

    def progress(p):
        if sig.requested and not sig.process:  # in-process runs: stop between chunks
            raise KeyboardInterrupt
        show.update(p)

    if mode == "lines":
        _report(f"set-up: drawing W(0) from seed {cfg['seed']} and keeping the rows that can fire "
                f"(implicit model, m={cfg['m']}; memory estimate {run['memory']['estimate'] / 2**30:.2f} GiB)")
    try:
        model, info = implicit.setup(jax.random.key(cfg["seed"]), cfg["m"], cfg["d"], run["X"], b=cfg["b"],
                                     dtype=run["dtype"], progress=progress)
    finally:
        show.close()
    run["setup"] = info
    if mode == "lines":
        _report(f"set-up: {info['n_active']} active rows of {cfg['m']} in {info['setup_s']:.1f} s")
    return model


def _interrupted(args, sig, step_end: int, done: int) -> int:
    where = f"saved to {args.save}" if args.save else "not saved (no --save given)"
    print(f"jaxcorr: interrupted by {sig.name} at step {step_end} after {done} of {args.steps} steps; "
          f"state {where}", file=sys.stderr)
    if args.save:
        print(f"jaxcorr: continue with: jaxcorr train --resume {args.save} --save {args.save} "
              f"--steps {args.steps - done}", file=sys.stderr)
    return sig.exit_code


def _diverged(args, info: dict, hist, step0: int, cfg: dict) -> int:
    t, value = info["step"], info["loss"]
    last = f"; the last finite loss was {info['last']:.4g} at step {t - 1}" if info["last"] is not None else ""
    kept = (f"; {args.save} was not updated after step {info['saved']}" if args.save and info["saved"] is not None
            else ("; nothing saved" if args.save else ""))
    print(f"jaxcorr: error: training diverged: the loss L(W({t})) is {value}{last}; lower --lr "
          f"(now {cfg['lr']:g}){kept}", file=sys.stderr)
    return EXIT_DIVERGED


def _resolve_config(args, checkpoint):
    """The run's settings: options given, else the checkpoint's (with --resume), else DEFAULTS.

    A checkpoint names its data file, but the data are matched by content: ``--data`` may give any
    path whose contents have the checkpoint's fingerprint (checked when the checkpoint is loaded).

    Returns:
      ``(cfg, kind)``: the settings, and the kind of the ``--resume`` checkpoint: None (no resume),
      ``"full"`` (all of W), ``"compact"`` (a full-width run's rows that differ from W(0)) or
      ``"implicit"`` (an implicit run's active rows). Only the metadata is read here.
    """
    given = {k: getattr(args, k) for k in _CONFIG_KEYS}
    if args.resume is None:
        cfg = {k: (DEFAULTS.get(k) if v is None else v) for k, v in given.items()}
        cfg.update(method=args.method or DEFAULTS["method"], data=args.data, normalize=args.normalize)
        if args.data is not None:
            cfg["n"] = cfg["d"] = None  # taken from the file
        return cfg, None
    saved = checkpoint.read_meta(args.resume).get("config") or {}
    lazy = saved.get("implicit")
    kind = "full" if not isinstance(lazy, dict) else ("compact" if lazy.get("full_width") else "implicit")
    if kind != "full" and "m" not in saved:  # jaxcorr.implicit.save's width
        saved = {**saved, "m": lazy.get("width")}
    missing = [k for k in (*_CONFIG_KEYS, "data") if k not in saved]
    if missing:
        raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} lacks the run settings {missing}; it was not written by `jaxcorr train`")
    cfg = {k: saved[k] for k in _CONFIG_KEYS}
    for k in _CONFIG_KEYS:
        v = given[k]
        if v is not None and v != saved[k]:
            raise checkpoint.CheckpointError(
                f"checkpoint {args.resume!r} was trained with {k}={saved[k]!r}, but --{k} {v!r} was given; "
                "a resumed run keeps its data, sizes and hyperparameters")
    if args.normalize and not saved.get("normalize"):
        raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} was trained without --normalize")
    cfg["normalize"] = bool(saved.get("normalize"))
    cfg["data"] = _resume_data(args, saved, checkpoint)
    # The method may change on resume: all follow the same trajectory (to float rounding).
    cfg["method"] = args.method or (saved.get("method") if saved.get("method") in METHODS else DEFAULTS["method"])
    return cfg, kind


def _resume_data(args, saved: dict, checkpoint):
    """The data file of a resumed run: --data, else the checkpoint's file where it still is."""
    if saved["data"] is None:
        if args.data is not None:
            raise checkpoint.CheckpointError(f"checkpoint {args.resume!r} was trained on the synthetic data, but --data {args.data!r} was given")
        return None
    if args.data is not None:
        return args.data
    for path in (saved.get("data_abspath"), saved["data"]):
        if path is not None and os.path.exists(path):
            return path
    raise checkpoint.CheckpointError(
        f"checkpoint {args.resume!r} was trained on {saved['data']!r}, which is not there any more; pass "
        "--data FILE (any path holding the same data)")


@functools.lru_cache(maxsize=32)
def _make_optimizer(name: str, lr: float):
    """The optimizer for ``--optimizer name --lr lr``: :func:`jaxcorr.optimizers.make` (the table
    shared with the scripts). One object per (name, lr), so that repeated runs in one process reuse
    :func:`jaxcorr.train.fit`'s compiled code."""
    return optimizers.make(name, lr)


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


_CAP = re.compile(r"reached (\d+) neurons at step (\d+), beyond the DDFN cap ceil\(m\^\(4/5\)\) = (\d+)")


def _cap_error(msg: str, method: str, norms, lr: float) -> str:
    """fit's DDFN-cap error in the CLI's terms: what happened and which options get out of it."""
    if "DDFN cap" not in msg:
        return msg
    outs = ["train with --method dense", "add --fallback dense (switch to dense GD when this happens)"]
    hint = ""
    if not np.allclose(norms, 1, atol=1e-3):
        outs.insert(0, "add --normalize")
        hint = f" The rows of X have norms up to {norms.max():.3g}, but the paper assumes unit norm."
    mt = _CAP.search(msg)
    if mt is None:
        return f"{msg} With the command line: {', '.join(outs)}."
    k, step, cap = (int(g) for g in mt.groups())
    if step > 0:
        outs.insert(0, f"lower --lr (now {lr:g})")
    return (f"with --method {method}, a data point's fire set reached {k} neurons at step {step}, beyond the "
            f"DDFN cap ceil(m^(4/5)) = {cap} that the sparse methods need (Definition 1.3).{hint} Ways out: "
            f"{'; '.join(outs)}.")


def _run_steps(fit, params, opt_state, *, X, y, b, method, optimizer, step0, steps, save=None,
               save_every=None, mode="off", signals=None, fallback="error", platform="cpu", norms=None,
               lr=1.0, idle_phase="setup"):
    """``steps`` gradient steps as :func:`jaxcorr.train.fit` calls, with progress, stops and saves.

    One fit call (one set-up) runs the whole run; a checkpoint every ``save_every`` steps is written
    from fit's callback, from the state after the chunk that ends there (``info["snapshot"]()``,
    no new set-up): the chunk length is then a divisor of ``save_every``
    (:func:`jaxcorr._cli_run.choose_chunk`). Only when no divisor near the wanted length exists
    does the run fall back to one call per segment. Within a call, the jitted chunks are sized to
    about 0.5 s (:func:`jaxcorr._cli_run.initial_chunk`), so a signal stops the run within a chunk;
    if the first measured chunks are far off that size, the call ends there and the run goes on in
    a new call with a better length (once per run, early; the new call's set-up compiles the new
    length). A non-finite loss stops the run at the first chunk that has one (nothing is saved from
    that chunk on). Splitting a run into calls changes nothing for dense and the trajectory only by
    float rounding for the sparse methods (fit's resume guarantee).

    Returns:
      A dict with ``params``, ``opt_state``, ``history``, ``interrupted`` (a signal stopped the run
      before ``steps``), ``diverged`` (None, or the first non-finite step's details), ``wall_s`` and
      ``saved_at`` (the step of the last checkpoint this call or the resumed run wrote, or None).
    """
    n, d = X.shape
    cmax = _cli_run.initial_chunk(n, d=d, m=params.W.shape[0], steps=steps, platform=platform,
                                  **_step_size(params, method, optimizer, n, b))
    prog = _cli_run.Progress(mode, _report, f"{method}" if step0 == 0 else f"{method} (resumed)")
    if signals is not None:
        signals.on_exit = prog.close
    st = {"hists": [], "done": 0, "resized": False, "saved_at": step0 if step0 else None, "started": False,
          "t_run": time.perf_counter(), "steps": steps}
    diverged = None
    if steps > 0:
        what = "compiling the training step" if method == "dense" else "finding the active rows and compiling the step"
        prog.setup(f"setting up: {what} (once per run; the compiled programs are cached for the next run)...")
    try:
        while st["done"] < steps and not (signals is not None and signals.requested):
            seg, chunk = _segment(cmax, st["done"], steps, save_every)
            timer = _cli_run.ChunkTimer(chunk, seg)
            resize = {"to": None}
            callback = _steps_callback(st, timer, resize, method, step0, prog, signals, save, save_every,
                                       mode, idle_phase)
            if signals is not None:  # "setup": from a saved or reproducible state; a signal ends it
                signals.phase = idle_phase if st["saved_at"] == step0 + st["done"] or st["done"] == 0 else "resetup"
            try:
                params, hist = fit(params, X, y, steps=seg, method=method, optimizer=optimizer, b=b,
                                   opt_state=opt_state, callback=callback, chunk_size=chunk, fallback=fallback)
            except ValueError as e:
                raise ValueError(_cap_error(str(e), method, norms, lr)) from None
            opt_state = hist["opt_state"]
            st["hists"].append(hist)
            diverged = _divergence(hist["loss"], step0 + st["done"], st["saved_at"])
            st["done"] += len(hist["loss"])
            if diverged is not None:
                break
            if resize["to"] is not None:
                st["resized"], cmax = True, resize["to"]
                continue
            if (save is not None and st["done"] < steps and st["saved_at"] != step0 + st["done"]
                    and not (signals is not None and signals.requested)):
                _save_now(save, params, opt_state, step0 + st["done"], st, mode)  # a segment's end
    finally:
        prog.close()
    done = st["done"]
    interrupted = bool(signals is not None and signals.requested) and done < steps and diverged is None
    if opt_state is None:
        opt_state = optimizer.init(params.W)
    return {"params": params, "opt_state": opt_state, "history": _merge(st["hists"]), "interrupted": interrupted,
            "diverged": diverged, "wall_s": time.perf_counter() - st["t_run"], "saved_at": st["saved_at"]}


def _step_size(params, method: str, optimizer, n: int, b: float) -> dict:
    """What a step of ``method`` works on, for :func:`jaxcorr._cli_run.initial_chunk`: the active rows
    (the held rows of an implicit model, else the expected |A| of the width), the span path, trees."""
    if method == "dense":
        return {}
    from jaxcorr import implicit

    held = params.W.shape[0]
    rows = held if isinstance(params, implicit.ImplicitParams) else min(held, implicit.expected_active(held, n, b))
    return {"rows": rows, "span": isinstance(optimizer, _train_mod.LinearOptimizer), "trees": method != "active"}


def _segment(cmax: int, done: int, steps: int, save_every):
    """``(steps of the next fit call, chunk length)``: the rest of the run, saving from the callback,
    when the chunk divides ``save_every``; else up to the next save (one call per segment)."""
    rest = steps - done
    if not save_every:
        return rest, _cli_run.choose_chunk(cmax, rest)
    chunk = _cli_run.choose_chunk(cmax, save_every)
    if save_every % chunk == 0:
        return rest, chunk
    seg = min(save_every - done % save_every, rest)
    return seg, _cli_run.choose_chunk(cmax, seg)


def _save_now(save, params, opt_state, step: int, st: dict, mode: str) -> None:
    save(params, opt_state, step)
    st["saved_at"] = step
    if mode == "lines":
        _report(f"saved checkpoint at step {step}")


def _steps_callback(st, timer, resize, method, step0, prog, signals, save, save_every, mode, idle_phase):
    """fit's callback for :func:`_run_steps`: progress, stop on a signal or a non-finite loss, the
    early chunk-length check, and the checkpoints at multiples of ``save_every`` (no new set-up)."""
    seg_done = st["done"]

    def callback(info):
        rel = seg_done + int(info["step"])  # steps done in this _run_steps call
        abs_step = step0 + rel
        if not st["started"]:
            st["started"] = True
            prog.start(step0 + seg_done, step0 + st["steps"], time.perf_counter() - st["t_run"])
        if signals is not None:
            signals.phase = "train"
        prog.update(abs_step, float(info["loss"]), info["ms_per_step"],
                    _progress_line(method, abs_step, step0 + st["steps"], info))
        if not math.isfinite(float(info["loss"])):
            return True
        stop = bool(signals is not None and signals.requested)
        if (save is not None and save_every and rel % save_every == 0 and rel < st["steps"] and not stop
                and "snapshot" in info):
            p, s = info["snapshot"]()
            _save_now(save, p, s, abs_step, st, mode)
            if signals is not None:
                signals.phase = idle_phase  # a durable state: a signal may end the run at once
        if not st["resized"] and timer.calls < 3:  # decide early, once per run
            resize["to"] = timer.observe(int(info["step"]), info["ms_per_step"])
            if resize["to"] is not None:
                return True  # go on with chunks of the better length (a new fit call)
        return stop

    return callback


def _nonfinite(loss) -> np.ndarray:
    return np.flatnonzero(~np.isfinite(np.asarray(loss, np.float64)))


def _divergence(loss, step_base: int, saved_at):
    """None if every loss is finite; else the first non-finite step, its loss, the loss before it
    and the step of the last checkpoint written."""
    bad = _nonfinite(loss)
    if not bad.size:
        return None
    j = int(bad[0])
    return {"step": step_base + j, "loss": float(loss[j]), "last": float(loss[j - 1]) if j > 0 else None,
            "saved": saved_at}


def _merge(hists: list[dict]) -> dict:
    """One history from the histories of consecutive fit calls."""
    out = {k: np.concatenate([np.asarray(h[k]) for h in hists]) if hists else np.zeros(0) for k in ("loss", "fire_mean", "fire_max", "fire_union")}
    n = [len(h["loss"]) for h in hists]
    total = sum(n)
    out["ms_per_step"] = sum(h["ms_per_step"] * k for h, k in zip(hists, n) if k) / total if total else None
    out["setup_s"] = sum(h["setup_s"] for h in hists)
    out["capacity_events"] = [e for h in hists for e in h["capacity_events"]]
    out["n_active"] = hists[-1].get("n_active") if hists else None
    return out


def _result(args, run: dict, hist: dict, params, wall: float, done: int) -> dict:
    """The run's results as one dict (the ``--json`` object)."""
    from jaxcorr import distributed, nn

    cfg, X, y, b = run["cfg"], run["X"], run["y"], run["cfg"]["b"]
    if run["implicit"]:  # rows outside A never fire: the held rows at the full width's scale
        loss_final = float(nn.loss_and_grad(params.W, params.a, X, y, b, scale=1.0 / math.sqrt(cfg["m"]))[0])
    else:
        loss_final = float(nn.loss(params, X, y, b))
    loss_initial = float(hist["loss"][0]) if done else loss_final
    return {
        "method": cfg["method"],
        "steps": done,
        "step_start": run["step0"],
        "step_end": run["step0"] + done,
        "loss_initial": loss_initial,
        "loss_final": loss_final,
        "ms_per_step": hist["ms_per_step"],
        "setup_s": hist["setup_s"] + (run["setup"]["setup_s"] if run.get("setup") else 0.0),
        "wall_s": wall,
        "fire": _fire_stats(hist, params, X, b, cfg["m"]),
        "n_active": params.n_active if run["implicit"] else hist.get("n_active"),
        "capacity_events": hist["capacity_events"],
        **{k: cfg[k] for k in ("n", "m", "d", "b", "lr", "optimizer", "seed")},
        "data": cfg["data"] or "synthetic",
        "checkpoint": args.save,
        "memory_estimate_bytes": run["memory"]["estimate"],
        "memory_available_bytes": run["memory"]["available"],
        "compilation_cache": run.get("cache"),
        "implicit": run["implicit"],
        "implicit_setup_s": run["setup"]["setup_s"] if run.get("setup") else None,
        **distributed.info(run["mesh"]),  # "processes", "devices"
    }


def _warnings(hist: dict, result: dict, run: dict) -> list[str]:
    """Things a user should know about a finished run (printed even with --quiet)."""
    out = []
    if result["steps"] and int(np.max(hist["fire_union"])) == 0:
        b = result["b"]
        from jaxcorr import nn

        out.append(f"no neuron fired for any data point at any step: b = {b:g} is above every <w_r, x_i>, so the "
                   f"output is 0 and W never changed; lower --b (default sqrt(0.4 ln m) = "
                   f"{float(nn.default_threshold(result['m'])):.4g})")
    return out


def _comparison(method: str, cmp: dict, hist: dict, result: dict, params, X, y, b) -> dict:
    """The baseline run against the main one: speed per step and end to end, loss and weight gaps."""
    from jaxcorr import nn

    bh = cmp["history"]
    bloss_final = float(nn.loss(cmp["params"], X, y, b))
    la, lb = np.asarray(hist["loss"], np.float64), np.asarray(bh["loss"], np.float64)
    k = min(la.size, lb.size)
    absd = np.abs(la[:k] - lb[:k])
    ref = np.maximum(np.abs(lb[:k]), 1e-300)
    fin = abs(result["loss_final"] - bloss_final)
    ms, bms = result["ms_per_step"], bh["ms_per_step"]
    return {
        "method": method,
        "ms_per_step": bms,
        "wall_s": cmp["wall_s"],
        "speedup_per_step": (bms / ms) if (ms and bms) else None,
        "speedup_end_to_end": cmp["wall_s"] / result["wall_s"] if result["wall_s"] > 0 else None,
        "loss_final": bloss_final,
        "max_loss_diff_abs": max(float(absd.max()) if k else 0.0, fin),
        "max_loss_diff_rel": max(float((absd / ref).max()) if k else 0.0, fin / max(abs(bloss_final), 1e-300)),
        "max_weight_diff": float(np.max(np.abs(np.asarray(params.W) - np.asarray(cmp["params"].W)))),
    }


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


def _ratio(x: float | None) -> str:
    if not x:
        return "n/a"
    return f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"


def _print_summary(r: dict, out) -> None:
    f = r["fire"]
    ms = f"{r['ms_per_step']:.3f} ms/step (training steps only)" if r["ms_per_step"] else "n/a (0 steps)"
    lines = [
        f"done: {r['steps']} steps of {r['method']} (steps {r['step_start']} -> {r['step_end']}) in {r['wall_s']:.2f} s "
        f"end to end, of which set-up and compilation {r['setup_s']:.2f} s",
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
        lines += [
            f"vs {c['method']:<8} per step:   {c['method']} {c['ms_per_step'] or float('nan'):.3f} ms, {r['method']} "
            f"{r['ms_per_step'] or float('nan'):.3f} ms -> {r['method']} {_ratio(c['speedup_per_step'])} per step "
            "(the jitted training steps only)",
            f"            end to end: {c['method']} {c['wall_s']:.2f} s, {r['method']} {r['wall_s']:.2f} s -> {r['method']} "
            f"{_ratio(c['speedup_end_to_end'])} end to end (set-up, compilation and steps; {c['method']} ran second "
            "and reused programs both compile)",
            f"            loss: largest absolute difference {c['max_loss_diff_abs']:.3g}, largest relative difference "
            f"{c['max_loss_diff_rel']:.3g}; largest weight difference {c['max_weight_diff']:.3g}",
        ]
    if r["checkpoint"]:
        lines.append(f"checkpoint  {r['checkpoint']} (step {r['step_end']})")
    if not c:
        lines.append("next        jaxcorr train --compare dense   (speed and loss against plain GD);  jaxcorr train --help")
    print("\n".join(lines), file=out)
