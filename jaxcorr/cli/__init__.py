r"""Command line: ``jaxcorr train``, ``jaxcorr predict``, ``jaxcorr evaluate`` (also ``python -m jaxcorr ...``).

Trains the two-layer ReLU network of Definition 2.1, :math:`f(x) = \frac{1}{\sqrt m}\sum_r a_r
\sigma_b(\langle w_r, x\rangle)`, by gradient descent on :math:`L(W) = \frac12\sum_i (f(x_i) - y_i)^2`
with :func:`jaxcorr.train.fit`, showing progress on stderr and printing a summary on stdout: final
loss, time per step and end to end, and the fire-set sizes :math:`|S_{i,\mathrm{fire}}|` against the
:math:`m^{4/5}` and :math:`m e^{-b^2/2}` bounds of Lemma 2.5.

With no options it trains on :func:`jaxcorr.data.synthetic` (``--seed 0``) with the sizes in
``DEFAULTS``, the exact method the cost model predicts fastest (``--method auto``,
:func:`jaxcorr.cost.choose`; one line on stderr says which and why) and each optimizer's own
learning rate (:data:`jaxcorr.optimizers.TABLE`). ``--eval-data FILE`` reports the held-out mean
loss and accuracy (:func:`jaxcorr.evaluation.evaluate`) as it trains. ``--data FILE`` trains on the
user's ``.npz``/``.csv`` (:func:`jaxcorr.datafiles.load_data`);
``--save``/``--save-every``/``--resume`` write and read :mod:`jaxcorr.checkpoint` files, and a
resumed run is matched to its data by content (SHA-256), not by path.

``--init span`` (the default of a fresh run on one process) defines ``W(0)`` by the key of
``--seed`` and the basis of span X (:mod:`jaxcorr.span_init`): only the rows that can fire, A, are
drawn (set-up O(|A| n), no m x d array), trained by :func:`jaxcorr.span_init.fit` and saved in the
``"span"`` checkpoint form; ``--method dense`` and ``--compare dense`` materialise it (m <= 2^24).
``--init rows`` is ``nn.init``'s W(0), all m rows (the network of earlier versions): its
checkpoints keep only the rows that differ from W(0) and the active rows (O(|A| d) numbers instead
of O(m d)); resuming draws ``W(0)`` again and restores the run bit for bit; ``--wide`` holds only
the rows that can fire (the wide model), for widths whose full weights do not fit in memory.
``--resume`` keeps the checkpoint's definition.

``jaxcorr predict CHECKPOINT --data FILE [--out FILE]`` prints (or writes as ``.csv``, ``.npz``
or ``.json``) the outputs of a checkpoint's model on new points, and ``jaxcorr evaluate CHECKPOINT
--data FILE`` its loss (the paper's sum and the mean), mean squared error and accuracy for +-1 labels
(:mod:`~jaxcorr.cli.evaluate`), for every checkpoint form.

Process behaviour:

- Exit status: 0 done; 1 the run diverged (non-finite loss); 2 bad input (including data whose
  loss overflows before any step, and a corrupt or mismatched checkpoint), or a run that cannot fit
  in memory (one ``jaxcorr: error: ...`` line on stderr, no traceback); 130 / 143 stopped by Ctrl-C /
  SIGTERM.
- Ctrl-C or SIGTERM stops within about a second at any size (jitted chunks are sized to about
  half a second; the checkpoint is compact and its programs are compiled before training), saves a
  checkpoint when ``--save`` is given, says how to continue and exits at once (no interpreter
  teardown); during set-up, when nothing has been trained yet, it exits at once. A second Ctrl-C
  aborts at once.
- The persistent XLA compilation cache (``--cache-dir``, ``JAXCORR_CACHE_DIR``, default
  ``$XDG_CACHE_HOME/jaxcorr/xla`` or ``~/.cache/jaxcorr/xla``; ``--no-cache``) makes a second run of
  the same sizes compile nothing.

The package: :mod:`~jaxcorr.cli.args` (parser and checks), :mod:`~jaxcorr.cli.config` (settings,
data, memory plan, resume: the typed :class:`~jaxcorr.cli.config.Run`), :mod:`~jaxcorr.cli.run`
(the fit calls, chunk sizing, saves and stops), :mod:`~jaxcorr.cli.signals`,
:mod:`~jaxcorr.cli.progress`, :mod:`~jaxcorr.cli.report` (result, JSON, warnings, summary),
:mod:`~jaxcorr.cli.execute` (the command from options to exit status) and
:mod:`~jaxcorr.cli.evaluate` (``predict`` and ``evaluate``, over :mod:`jaxcorr.evaluation`); every call into the
training, wide-model, checkpoint and memory modules is in :mod:`jaxcorr.cli._library`.

Examples:
  $ jaxcorr train
  $ jaxcorr train --n 4 --m 256 --d 4 --steps 5 --json
  $ jaxcorr train --m 2^28 --d 64 --n 8 --steps 100       # --init span: only the firing rows drawn
  $ jaxcorr train --init rows --m 2^17                      # nn.init rows (earlier versions' network)
  $ jaxcorr train --data mydata.csv --normalize --optimizer adam --lr 0.01 --save run.ckpt --save-every 50
  $ jaxcorr train --resume run.ckpt --save run.ckpt --steps 100
  $ jaxcorr predict run.ckpt --data new.csv --out predictions.csv
  $ jaxcorr evaluate run.ckpt --data heldout.csv --json
"""

from __future__ import annotations

import os
import sys

from jaxcorr import errors
from jaxcorr.cli import _library, args, config, evaluate, execute, progress, report, run, signals  # noqa: F401
from jaxcorr.cli.args import (
    DEFAULT_METHOD,
    DEFAULTS,
    METHODS,
    OPTIMIZERS,
    build_parser,
    cache_dir,
)
from jaxcorr.cli.config import make_optimizer as _make_optimizer  # noqa: F401 -- shared with the tests
from jaxcorr.cli.report import process_start

__all__ = ["DEFAULTS", "DEFAULT_METHOD", "METHODS", "OPTIMIZERS", "build_parser", "cache_dir", "main"]

EXIT_DIVERGED = 1


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
    t_start = process_start(process)  # "end to end" is the process's wall clock (or this call's)
    try:
        rc = _main(argv, process, t_start)
        sys.stdout.flush()
        if process and rc in signals.EXIT_CODES.values():
            signals.exit_now(rc)  # a stopped command-line run: skip the interpreter's teardown
        return rc
    except BrokenPipeError:  # `jaxcorr --help | head`: the reader left; say nothing more
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


def _main(argv, process: bool, t_start: float) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help/--version (0) or a usage error (2, one line already printed)
        return e.code
    try:
        if args.command == "train":
            return execute.train(args, process, t_start)
        apply = {"predict": evaluate.predict, "evaluate": evaluate.evaluate}[args.command]
        return apply(args, process)
    except KeyboardInterrupt:
        print("jaxcorr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    # By type: a checkpoint or data file that cannot be used or written; other bad input; a run refused
    # by the memory plan (InsufficientMemoryError, a ValueError) or an allocation that failed all the same.
    except (errors.CheckpointError, errors.DataError, errors.InsufficientMemoryError, ValueError, OSError,
            MemoryError) as e:
        return _error(e)


def _error(e: BaseException) -> int:
    msg = " ".join(str(e).split()) or type(e).__name__
    print(f"jaxcorr: error: {msg}", file=sys.stderr)
    return 2
