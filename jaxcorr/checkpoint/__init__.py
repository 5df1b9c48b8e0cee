"""Crash-safe checkpoints of a training run, in every form: :func:`save` and :func:`restore`.

A checkpoint is one ``.npz`` file (the container, :mod:`jaxcorr.checkpoint._container`: atomic
write, CRC-32 of every member, any damage a :class:`jaxcorr.errors.CheckpointError`) in one of the
forms

- ``"full"`` (:mod:`~jaxcorr.checkpoint.full`): all m rows of W and the optimizer state;
- ``"compact"`` (:mod:`~jaxcorr.checkpoint.compact`): a full-width run trained from
  ``nn.init(key, m, d)``, only the rows that can differ from W(0) (the paper's active rows, and
  any row that moved): megabytes where W is gigabytes;
- ``"rows"`` / ``"coefficients"`` (:mod:`~jaxcorr.checkpoint.wide`): a wide model
  (:class:`jaxcorr.wide.WideParams`), its held rows, or its span-path coefficients;
- ``"span"`` (:mod:`~jaxcorr.checkpoint.span`): a span-defined model
  (:class:`jaxcorr.span_init.SpanModel`, ``--init span``): its definition (key, basis ``U``,
  ``C``, thresholds), held rows and their training (``K`` or ``W``) with the optimizer state.

Every form but ``"span"`` holds a network whose W(0) is ``nn.init`` rows (``init`` ``"rows"``);
``Restored.init`` says which definition a file uses. :func:`restore` reads every form and
returns the model the file describes: an :class:`jaxcorr.nn.Params` of all m rows for ``"full"``
and ``"compact"`` (W(0) redrawn under the PRNG settings recorded at save), a
:class:`jaxcorr.wide.WideParams` for a wide model, a :class:`jaxcorr.span_init.SpanModel` for the
span form.

Examples:
  >>> import jax, optax, tempfile, os
  >>> from jaxcorr import checkpoint, nn, data
  >>> X, y = data.synthetic(0, 4, 3)
  >>> params = nn.init(jax.random.key(0), 16, 3)
  >>> opt = optax.adam(1e-2)
  >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
  >>> checkpoint.save(path, params, X=X, y=y, opt_state=opt.init(params.W), step=7, config={"m": 16})
  'full'
  >>> r = checkpoint.restore(path, X=X, y=y, optimizer=opt)
  >>> r.kind, r.step, r.model.W.shape
  ('full', 7, (16, 3))
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from jaxcorr.checkpoint import compact, full, span, wide
from jaxcorr.checkpoint._container import (
    FORMAT,
    check_target,
    fingerprint,
    is_checkpoint,
    lock,
    read_meta,
)
from jaxcorr.errors import CheckpointError

__all__ = ["save", "restore", "load", "Restored", "kind", "read_meta", "is_checkpoint", "check_target",
           "fingerprint", "lock", "CheckpointError", "FORMAT", "FORMS"]

#: The forms :func:`save` writes.
FORMS = ("smallest", "full", "compact", "rows", "coefficients", "span")


class Restored(NamedTuple):
    """What :func:`restore` read.

    Attributes:
      kind: ``"full"``, ``"compact"`` (both: ``model`` an :class:`jaxcorr.nn.Params` of all m rows),
        ``"wide"`` (``model`` a :class:`jaxcorr.wide.WideParams`) or ``"span"`` (``model`` a
        :class:`jaxcorr.span_init.SpanModel`).
      model: the model the file describes.
      opt_state: the optimizer state over ``model.W`` (in ``optimizer.init``'s structure when the
        optimizer is given, else the flat list of stored leaves); for ``"span"`` the state over
        ``K`` or the held rows ``W`` (``model.trained.opt_state``).
      step: total steps trained.
      config: the run configuration saved with it (a wide file's record under ``config["wide"]``).
      init: the definition of W(0): ``"span"`` (:mod:`jaxcorr.span_init`) or ``"rows"``
        (``nn.init``: every other form, and every file written before the span form existed).
    """

    kind: str
    model: Any
    opt_state: Any
    step: int
    config: dict
    init: str = "rows"


def save(path, model, *, X, y, opt_state: Any = (), step: int = 0, config: dict | None = None,
         form: str = "smallest", key=None, b: float | None = None, W0=None, optimizer=None, active=None,
         max_fraction: float = 0.5, timings: dict | None = None) -> str:
    """Write ``model`` and its training state to ``path`` atomically; returns the form written.

    Args:
      path: target file (its directory must exist); refused while another process holds
        :func:`lock` on it.
      model: an :class:`jaxcorr.nn.Params` (full width), a :class:`jaxcorr.wide.WideParams` or a
        :class:`jaxcorr.span_init.SpanModel` (written in the ``"span"`` form).
      X, y: the training data (its fingerprint is stored and checked by :func:`restore`).
      opt_state: the optax state over ``model.W`` (a span model: default ``model.trained.opt_state``).
      step: total steps trained, >= 0.
      config: JSON-serialisable run configuration, returned by :func:`restore`.
      form: ``"smallest"`` (default: for a full-width model ``"compact"`` when ``key`` is given and
        at most ``max_fraction`` of the rows are kept, else ``"full"``; for a wide model
        ``"coefficients"`` when it carries them and they are smaller, else ``"rows"``; for a span
        model ``"span"``), or one of ``"full"``, ``"compact"``, ``"rows"``, ``"coefficients"``,
        ``"span"``.
      key, b, W0, optimizer, active, max_fraction: the compact form's (:func:`jaxcorr.checkpoint.compact.save`):
        the PRNG key of ``W0 = nn.init(key, m, d)``, the threshold (default
        :func:`jaxcorr.nn.default_threshold`), ``W0`` itself if held, the optimizer of ``opt_state``.
      timings: if a dict, it receives the seconds of each phase and ``bytes``.

    Raises:
      ValueError: a bad ``form`` for this model, ``step`` < 0, a config that is not JSON.
      CheckpointError: another run holds the path's lock.
      OSError: the file cannot be written (the previous checkpoint is left intact).
    """
    from jaxcorr import nn, span_init  # noqa: PLC0415
    from jaxcorr import wide as _wide  # noqa: PLC0415

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if isinstance(model, span_init.SpanModel):
        if form not in ("smallest", "span"):
            raise ValueError(f"form={form!r} is not for a span-defined model (SpanModel): it is saved as 'span'")
        return span.save(path, model, X, y, opt_state=None if opt_state == () else opt_state, step=step,
                         config=config, timings=timings)
    if form == "span":
        raise ValueError(f"form='span' is for a span-defined model (jaxcorr.span_init.SpanModel), got "
                         f"{type(model).__name__}")
    if isinstance(model, _wide.WideParams):
        if form in ("full", "compact"):
            raise ValueError(f"form={form!r} is for a full-width model; a wide model is saved as 'rows' or "
                             "'coefficients' (or materialize it: jaxcorr.wide.materialize)")
        return wide.save(path, model, X, y, opt_state=opt_state, step=step, config=config, timings=timings,
                         form="auto" if form == "smallest" else form)
    if form in ("rows", "coefficients"):
        raise ValueError(f"form={form!r} is for a wide model (jaxcorr.wide.WideParams), got {type(model).__name__}")
    if form == "full" or (form == "smallest" and key is None):
        full.save(path, model, opt_state, step, config, X, y, timings=timings)
        return "full"
    if key is None:
        raise ValueError("form='compact' needs key=, the PRNG key of W(0) = nn.init(key, m, d)")
    b = float(nn.default_threshold(model.W.shape[0])) if b is None else float(b)
    return compact.save(path, key, model, X, y, b=b, W0=W0, opt_state=None if opt_state == () else opt_state,
                        optimizer=optimizer, step=step, config=config, active=active,
                        max_fraction=1.0 if form == "compact" else max_fraction, timings=timings)


def kind(path) -> str:
    """The kind of checkpoint at ``path`` from its metadata alone: ``"full"``, ``"compact"``, ``"wide"``
    or ``"span"`` (a span-defined model: ``init`` ``"span"``; every other kind is ``"rows"``)."""
    top = read_meta(path)
    if span.is_span(top):
        return "span"
    meta = wide.wide_meta(top.get("config") or {})
    return "full" if meta is None else ("compact" if meta.get("full_width") else "wide")


def restore(path, *, X=None, y=None, optimizer=None, as_wide: bool = False) -> Restored:
    """Read and verify a checkpoint of any form: the model the file describes.

    Args:
      path: the checkpoint file.
      X, y: if given, checked to be the data it was trained on (same :func:`fingerprint`).
      optimizer: if given, the stored state is checked against ``optimizer.init(model.W)`` (a span
        file: ``optimizer.init`` of ``K`` or of the held rows) and returned in that structure; a
        compact file with an optimizer state needs it (the state of the rows not held is rebuilt
        from it).
      as_wide: a compact file's held rows as a :class:`jaxcorr.wide.WideParams` (kind
        ``"compact"``), not expanded to all m rows.

    Raises:
      CheckpointError: missing, not a checkpoint, corrupted or truncated, inconsistent, trained on
        other data, or another optimizer's state.
    """
    path = os.fspath(path)
    k = kind(path)
    if k == "span":
        ck = span.load(path, X=X, y=y, optimizer=optimizer)
        return Restored("span", ck["model"], ck["opt_state"], ck["step"], ck["config"], init="span")
    if k == "full":
        ck = full.load(path, X=X, y=y, optimizer=optimizer)
        return Restored("full", ck["params"], ck["opt_state"], ck["step"], ck["config"])
    if k == "compact":
        ck = compact.load(path, X=X, y=y, optimizer=optimizer, as_wide=as_wide)
        return Restored("compact", ck["model"] if as_wide else ck["params"], ck["opt_state"], ck["step"], ck["config"])
    ck = wide.load(path, X=X, y=y, optimizer=optimizer)
    return Restored("wide", ck["model"], ck["opt_state"], ck["step"], ck["config"])


#: The same function as :func:`restore` (every form, the model the file describes).
load = restore
