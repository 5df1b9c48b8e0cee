"""The ``jaxcorr`` argument parser and the checks of its options that need no JAX (private)."""

from __future__ import annotations

import argparse
import math
import os
import sys

from jaxcorr import methods, optimizers

__all__ = [
    "AUTO",
    "DEFAULTS",
    "DEFAULT_METHOD",
    "INITS",
    "METHODS",
    "OPTIMIZERS",
    "PAPER",
    "build_parser",
    "cache_dir",
    "check_options",
    "enable_cache",
]

#: The training methods (:mod:`jaxcorr.methods`, the one registry).
METHODS = methods.names()
#: The library's default method (:data:`jaxcorr.methods.DEFAULT`; ``train.fit``'s).
DEFAULT_METHOD = methods.DEFAULT
#: ``--method auto``: the fastest exact method for the run, by :func:`jaxcorr.cost.choose` (the CLI's default).
AUTO = "auto"

#: ``--init``: W(0) by its key and the data's basis (:mod:`jaxcorr.span_init`, the default of a fresh
#: run, on one process or several), or the ``nn.init`` rows of earlier versions.
INITS = ("span", "rows")

#: Sizes and settings of the default run (``jaxcorr train`` with no options).
DEFAULTS = {
    "n": 8,
    "d": 32,
    "m": 2**17,
    "steps": 100,
    "seed": 0,
    "method": AUTO,
    "optimizer": "sgd",
}

#: ``--optimizer`` names and the optax transformation over ``W`` each stands for, at its own default
#: learning rate (from :data:`jaxcorr.optimizers.TABLE`, the table the scripts share).
OPTIMIZERS = {k: optimizers.describe(k) + (" (span path)" if optimizers.spec(k).span else "")
              for k in optimizers.NAMES}

_SEED_MAX = 2**32 - 1  # jax.random.key folds larger seeds onto smaller ones
PAPER = "https://arxiv.org/abs/2211.14227"


def _version() -> str:
    import jax

    from jaxcorr import __version__

    return f"jaxcorr {__version__} (jax {jax.__version__}, Python {sys.version.split()[0]})"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxcorr`` argument parser (subcommands ``train``, ``predict`` and ``evaluate``)."""
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
    _add_predict_parser(sub)
    _add_evaluate_parser(sub)
    return parser


_APPLY_EXIT = ("Exit status: 0 done, 2 bad input (a missing or damaged checkpoint or data file, points of another "
               "dimension than the model's, non-finite data), one 'jaxcorr: error: ...' line on stderr.")


def _add_checkpoint_and_data(p) -> None:
    """The arguments ``predict`` and ``evaluate`` share: the checkpoint, the data, normalisation, --json."""
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint written by `jaxcorr train --save` or jaxcorr.checkpoint.save, any form "
                        "(full, compact, wide rows or coefficients); no training data or optimizer needed")
    p.add_argument("--data", metavar="FILE", required=True,
                   help="the points: .npz with array X (n, d) (and y (n,) if it has targets), or .csv as train "
                        "--data reads it: d columns (the model's input dimension) are X alone, d + 1 are X then y")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="scale each row of X to unit norm (default: as the checkpoint's run did, i.e. on when it "
                        "was trained with --normalize)")


def _add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="a checkpoint's outputs f(x) on the points of a data file",
        description=("The outputs f(x_i) = 1/sqrt(m) sum_r a_r relu(<w_r, x_i> - b) (paper, Def. 2.1) of the model "
                     "in CHECKPOINT on the points of --data FILE: one value per line on stdout, or --out FILE. "
                     + _APPLY_EXIT),
        epilog=f"Paper: {PAPER}",
    )
    _add_checkpoint_and_data(p)
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the outputs to FILE, by its suffix: .csv (header 'prediction', one value a line), "
                        ".npz (array 'predictions') or .json (the --json object)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the checkpoint, the data, 'predictions') as the last line of stdout")


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="a checkpoint's loss, mean loss, MSE and accuracy on a data file",
        description=("Evaluate the model in CHECKPOINT on --data FILE (with targets y): n, the paper's loss "
                     "L = 1/2 sum_i (f(x_i) - y_i)^2 (Def. 2.1), the mean loss L/n, the MSE 1/n sum_i (f(x_i) - "
                     "y_i)^2 and, for labels in {-1, +1}, the accuracy (the fraction with f(x_i) y_i > 0). "
                     + _APPLY_EXIT),
        epilog=f"Paper: {PAPER}",
    )
    _add_checkpoint_and_data(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the results as the last line of stdout (instead of the summary)")


def _add_train_arguments(t) -> None:
    d = DEFAULTS
    helps = "; ".join(f"{k}: {methods.get(k).help}" for k in METHODS)
    rates = ", ".join(f"{k} {optimizers.spec(k).learning_rate:g}" for k in optimizers.NAMES)
    t.add_argument("--method", choices=(AUTO, *METHODS), default=None,
                   help=f"{AUTO}: the exact method predicted fastest for this run by the cost model jaxcorr.cost "
                        f"(dense included; one line on stderr says which and why); {helps} (default {d['method']}; "
                        "with --resume: the checkpoint's)")
    t.add_argument("--n", type=int, default=None,
                   help=f"number of synthetic data points (default {d['n']}; with --data: the file's)")
    t.add_argument("--m", type=_width_arg, default=None,
                   help=f"width, number of neurons: an integer or 2^K (default {d['m']})")
    t.add_argument("--d", type=int, default=None,
                   help=f"input dimension of synthetic data (default {d['d']}; with --data: the file's)")
    t.add_argument("--steps", type=int, default=d["steps"],
                   help=f"gradient steps to run; with --resume: steps to add (default {d['steps']})")
    t.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: the optimizer's own, jaxcorr.optimizers.TABLE: {rates})")
    t.add_argument("--b", type=float, default=None, help="activation threshold b (default sqrt(0.4 ln m), Remark 2.6)")
    t.add_argument("--seed", type=int, default=None,
                   help=f"seed of the initial weights and of the synthetic data, 0..2^32-1 (default {d['seed']})")
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None,
                   help=f"{', '.join(f'{k} = {v}' for k, v in OPTIMIZERS.items())} (default {d['optimizer']})")
    t.add_argument("--data", metavar="FILE", default=None,
                   help="train on FILE: .npz with arrays X (n, d) and y (n,), or .csv whose last column is y")
    t.add_argument("--normalize", action="store_true",
                   help="scale each row of the --data (and --eval-data) X to unit norm, as the paper assumes")
    t.add_argument("--eval-data", metavar="FILE", default=None,
                   help="held-out data (read like --data): its mean loss, and its accuracy for +-1 labels, at each "
                        "progress line and at the end (jaxcorr.evaluation.evaluate; not counted in the step times)")
    t.add_argument("--fallback", choices=("error", "dense"), default="error",
                   help="when a fire set outgrows the DDFN cap ceil(m^(4/5)) of the sparse methods: stop with an "
                        "error (default) or continue with dense GD")
    t.add_argument("--compare", choices=("dense",), default=None,
                   help="also run dense GD from the same start; report the speed ratio per step and end to end, and "
                        "the loss difference")
    t.add_argument("--json", action="store_true",
                   help="print one JSON object with the results as the last line of stdout (instead of the summary)")
    t.add_argument("--save", metavar="PATH", default=None,
                   help="write a checkpoint to PATH at the end, on Ctrl-C/SIGTERM and every --save-every steps "
                        "(atomically); PATH must be new or a checkpoint, and no other run may be saving to it")
    t.add_argument("--save-every", metavar="K", type=int, default=None,
                   help="with --save: also checkpoint every K steps")
    t.add_argument("--resume", metavar="PATH", default=None,
                   help="continue the run saved in PATH for --steps more steps (same data by content, sizes and "
                        "hyperparameters); needs --save unless --steps 0")
    t.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="persistent XLA compilation cache (default $JAXCORR_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/jaxcorr/xla or ~/.cache/jaxcorr/xla)")
    t.add_argument("--no-cache", action="store_true", help="do not read or write the persistent compilation cache")
    t.add_argument("--wide", choices=("auto", "on", "off"), default="auto",
                   help="the wide model: hold only the rows that can fire (W(0) streamed from the seed, compact "
                        "checkpoints): auto (default) when the full-width run would not fit in memory but this one "
                        "does")
    t.add_argument("--init", choices=INITS, default=None,
                   help="how W(0) is defined: span = by the --seed key and the basis of span X, only the rows that "
                        "can fire drawn (jaxcorr.span_init; set-up O(|A|), no m*d array); rows = nn.init rows, all m "
                        "drawn (the network of earlier versions, bit for bit). Default span (on one process or "
                        "several); with --resume: the checkpoint's")
    t.add_argument("--quiet", action="store_true", help="no progress display (warnings and errors still go to stderr)")
    # several processes (hosts): jaxcorr.distributed; all three or none (none: a detected cluster, else one process)
    t.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="several processes: address of process 0's coordinator (with --num-processes and "
                        "--process-id; see jaxcorr.distributed)")
    t.add_argument("--num-processes", metavar="N", type=int, default=None, help="several processes: how many take part")
    t.add_argument("--process-id", metavar="I", type=int, default=None,
                   help="several processes: this one's index, 0..N-1 (process 0 writes the checkpoints)")


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


def check_options(args) -> None:
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
    if args.normalize and args.data is None and args.resume is None and args.eval_data is None:
        raise ValueError("--normalize rescales the rows of a --data file; the synthetic data are unit-norm already")
    if args.resume is not None and args.save is None and args.steps > 0:
        raise ValueError(
            f"--resume {args.resume} without --save would train {args.steps} steps and keep none of them: "
            f"add --save {args.resume} to continue in place (or --save NEW to keep {args.resume} as it is), "
            "or --steps 0 to only evaluate the checkpoint")
    if args.method is not None and args.compare == args.method:
        others = ", ".join(k for k in METHODS if k != args.compare)
        raise ValueError(f"--compare {args.compare} with --method {args.method} compares a method with itself; "
                         f"drop --compare, or train another --method ({others})")
    if args.compare and args.steps == 0:
        raise ValueError(f"--compare {args.compare} with --steps 0 has no steps to compare; give --steps N")
    if args.wide == "on" and args.compare:
        raise ValueError(f"--compare {args.compare} needs the full-width weights in memory; drop --wide on")
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


def enable_cache(path: str | None) -> str | None:
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
