r"""``jaxcorr predict`` and ``jaxcorr evaluate``: a checkpoint's model on a data file (private).

Both read the checkpoint with :func:`jaxcorr.evaluation.load_model` (every form
:func:`jaxcorr.checkpoint.restore` reads: full, compact, wide rows or coefficients; no training data
and no optimizer needed: a compact or wide model is applied by streaming W(0) from its key) and
the points with :func:`jaxcorr.datafiles.load_inputs` in the model's dtype:

- ``.npz``: array ``X`` (n, d), and ``y`` (n,) if the file has it;
- ``.csv``: as ``train --data`` reads it (header row, comments, quoting); a file of ``d`` columns
  (the model's input dimension) is ``X`` alone, one of ``d + 1`` columns is ``X`` and then ``y``.

The rows of ``X`` are scaled to unit norm with ``--normalize``, and by default when the checkpoint
records a run trained with ``--normalize`` (a note on stderr says so; ``--no-normalize`` keeps them
as they are).

- ``predict``: the outputs :math:`f(x_i) = \frac{1}{\sqrt m}\sum_r a_r \sigma_b(\langle w_r, x_i\rangle)`
  (Definition 2.1, :func:`jaxcorr.evaluation.predict`): one value per line on stdout (the shortest
  decimal that reads back as the same number of the model's dtype), or with ``--json`` one JSON
  object as the last stdout line (``predictions`` a list); ``--out FILE`` writes them instead, by
  its suffix: ``.csv`` (a header ``prediction``, one value per line), ``.npz`` (array ``predictions``
  in the model's dtype) or ``.json`` (the ``--json`` object), atomically.
- ``evaluate``: :func:`jaxcorr.evaluation.evaluate` on ``(X, y)``: ``n``, the paper's loss
  :math:`L = \frac12\sum_i (f(x_i) - y_i)^2` (Definition 2.1), the mean loss ``L / n`` (comparable
  across data sets), the MSE ``2 L / n`` and, for labels in {-1, +1}, the accuracy.

Exit status as ``train``'s: 0 done; 2 bad input (a missing or damaged checkpoint, a missing or
malformed data file, points of another dimension than the model's, non-finite data or outputs, no
targets for ``evaluate``, an ``--out`` that cannot be written), one ``jaxcorr: error: ...`` line on
stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, NamedTuple

import numpy as np

from jaxcorr import errors
from jaxcorr.cli import _library
from jaxcorr.cli.args import cache_dir, enable_cache

__all__ = ["OUT_FORMATS", "Job", "predict", "evaluate"]

#: ``--out`` suffixes and what each file holds.
OUT_FORMATS = {".csv": "a header 'prediction', then one value per line",
               ".npz": "the array 'predictions' (n,)",
               ".json": "the --json object, 'predictions' a list"}


class Job(NamedTuple):
    """A checkpoint's model and the points it is applied to."""

    loaded: Any  # jaxcorr.evaluation.Loaded
    X: np.ndarray
    y: np.ndarray | None
    normalize: bool
    notes: list


def predict(args, process: bool) -> int:
    """The ``predict`` command; returns the exit status (raises ValueError/OSError with a one-line
    message on bad input)."""
    from jaxcorr import evaluation

    fmt = _check_out(args)
    enable_cache(cache_dir(None, process))
    job = _prepare(args)
    f = _finite_outputs(args, np.asarray(evaluation.predict(job.loaded, job.X)))
    record = dict(_describe(args, job), predictions=[x.item() for x in f])
    _notes(job)
    if args.out is not None:
        _write(args.out, fmt, f, record)
        record = dict(record, out=args.out)
        del record["predictions"]
        print(json.dumps(record) if args.json else f"jaxcorr predict: wrote {f.size} outputs to {args.out}")
        return 0
    print(json.dumps(record) if args.json else "\n".join(str(x) for x in f))
    return 0


def evaluate(args, process: bool) -> int:
    """The ``evaluate`` command; returns the exit status (raises ValueError/OSError with a one-line
    message on bad input)."""
    from jaxcorr import evaluation

    enable_cache(cache_dir(None, process))
    job = _prepare(args)
    if job.y is None:
        raise errors.DataError(f"data file {args.data!r} holds no targets y, and evaluate compares the outputs "
                               f"with them: give an .npz with an array y, or a .csv of d + 1 = {job.loaded.d + 1} "
                               "columns (y last)", args.data)
    e = evaluation.evaluate(job.loaded, job.X, job.y)  # (one pass of the model: a wide one streams all m rows)
    if not math.isfinite(e.loss_sum):  # y is finite and L is summed in float64: some output is not finite
        raise ValueError(f"the model's outputs on {args.data!r} are not finite (they overflow): the data are far "
                         "larger than the training data (--normalize?)")
    record = dict(_describe(args, job), loss_sum=e.loss_sum, loss_mean=e.loss_mean, mse=e.mse, accuracy=e.accuracy)
    _notes(job)
    print(json.dumps(record) if args.json else _summary(args, job, e))
    return 0


def _prepare(args) -> Job:
    """The checkpoint's model and the data file's points (in the model's dtype, normalised as asked)."""
    from jaxcorr import datafiles, evaluation

    loaded = evaluation.load_model(args.checkpoint)
    dtype = np.dtype(getattr(getattr(loaded.model, "W", None), "dtype", np.float32))
    X, y, info = datafiles.load_inputs(args.data, d=loaded.d, dtype=dtype, return_info=True)
    notes = []
    if info["header"] is not None:
        notes.append(f"data: skipped the header row (line {info['header_line']}: {info['header'][:60]!r})")
    trained = bool(loaded.config.get("normalize"))
    normalize = trained if args.normalize is None else args.normalize
    if normalize:
        X = datafiles.unit_rows(X)
        if args.normalize is None:
            notes.append(f"note: {args.checkpoint} was trained with --normalize, so the rows of X are scaled to "
                         "unit norm (--no-normalize: as they are)")
    elif trained:
        notes.append(f"note: {args.checkpoint} was trained with --normalize, but --no-normalize keeps the rows "
                     "of X as they are")
    return Job(loaded=loaded, X=X, y=y, normalize=normalize, notes=notes)


def _finite_outputs(args, f: np.ndarray) -> np.ndarray:
    bad = int(f.size - np.isfinite(f).sum())
    if bad:
        raise ValueError(f"the model's outputs on {args.data!r} are not finite for {bad} of {f.size} points (they "
                         f"overflow {f.dtype}): the data are far larger than the training data (--normalize?)")
    return f


def _describe(args, job: Job) -> dict:
    """What the outputs are of: the command, the checkpoint and the data."""
    ld = job.loaded
    return {"command": args.command, "checkpoint": args.checkpoint, "kind": ld.kind, "step": ld.step, "m": ld.m,
            "d": ld.d, "b": ld.b, "data": args.data, "n": int(job.X.shape[0]), "normalize": job.normalize,
            "targets": job.y is not None}


def _notes(job: Job) -> None:
    for note in job.notes:
        print(f"jaxcorr: {note}", file=sys.stderr)


def _summary(args, job: Job, e) -> str:
    ld = job.loaded
    if e.accuracy is None:
        acc = "-  (the targets are not all -1 or +1)"
    else:
        acc = f"{e.accuracy:.6g}  ({round(e.accuracy * e.n)} of {e.n} with f(x) y > 0)"
    rows = [
        ("n", f"{e.n}"),
        ("loss L = 1/2 sum (f - y)^2", f"{e.loss_sum:.6g}  (the paper's sum, Definition 2.1)"),
        ("mean loss L / n", f"{e.loss_mean:.6g}"),
        ("MSE 1/n sum (f - y)^2", f"{e.mse:.6g}"),
        ("accuracy (+-1 labels)", acc),
    ]
    head = (f"jaxcorr evaluate: {ld.path} ({ld.kind} checkpoint, step {ld.step}: m={ld.m} d={ld.d} b={ld.b:.4g}) "
            f"on {args.data}{' (rows normalised)' if job.normalize else ''}")
    return "\n".join([head, *(f"  {k:<28}{v}" for k, v in rows)])


def _check_out(args) -> str | None:
    """``--out``'s format (its suffix), checked before any work: a known suffix, an existing
    directory, not a directory itself, and neither the data file nor the checkpoint."""
    path = args.out
    if path is None:
        return None
    fmt = os.path.splitext(path)[1].lower()
    if fmt not in OUT_FORMATS:
        raise ValueError(f"--out {path}: unknown format {fmt or '(no suffix)'!r}; use "
                         + ", ".join(f"{k} ({v})" for k, v in OUT_FORMATS.items()))
    if os.path.isdir(path):
        raise ValueError(f"--out {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OSError(f"--out {path}: directory {directory!r} does not exist")
    for what, other in (("data file", args.data), ("checkpoint", args.checkpoint)):
        if os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other):
            raise ValueError(f"--out {path} is the {what}; writing would overwrite it")
    return fmt


def _write(path: str, fmt: str, f: np.ndarray, record: dict) -> None:
    """Write the outputs to ``path`` in format ``fmt``, atomically (a temporary file renamed over it)."""
    def write(out) -> None:
        if fmt == ".npz":
            np.savez(out, predictions=f)
        elif fmt == ".csv":
            out.write(("prediction\n" + "".join(str(x) + "\n" for x in f)).encode())
        else:
            out.write((json.dumps(record) + "\n").encode())

    _library.write_atomically(path, write)
