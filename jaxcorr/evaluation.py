r"""Use and judge a trained 2NN(m, b): its outputs on new data, the loss, the error and the accuracy.

One call per task, for every model kind: a full-width :class:`jaxcorr.nn.Params` (what
:func:`jaxcorr.train.fit` returns), a wide model held as its key plus its active rows (the
:class:`jaxcorr.wide.WideParams`, streamed over ``m``) or a span-defined model (the
:class:`jaxcorr.span_init.SpanModel`: rows outside A drawn as they are needed, streamed over ``m``;
on the training points only A is read).

- :func:`predict`: :math:`f(W, x_i, a) = \frac{1}{\sqrt m}\sum_r a_r \sigma_b(\langle w_r, x_i\rangle)`
  (Definition 2.1) for every row of ``X``.
- :func:`load_model`: the model of a checkpoint of any form (:func:`jaxcorr.checkpoint.restore`),
  with the threshold it was trained with; :func:`predict` and :func:`evaluate` also take the
  checkpoint's path, so each task is one call (``evaluation.evaluate("run.ckpt", X, y)``).
- :func:`evaluate`: the paper's loss :math:`L = \frac12 \sum_i (f(x_i) - y_i)^2` (Definition 2.1,
  :func:`jaxcorr.nn.loss`'s convention), its mean over the points (comparable across data sets of
  different ``n``), the mean squared error :math:`\frac1n \sum_i (f(x_i) - y_i)^2` (twice the mean
  loss) and, for labels in {-1, +1}, the accuracy :math:`\frac1n |\{i : f(x_i)\, y_i > 0\}|` (an output
  of exactly 0 counts as wrong).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcorr import data, evaluation, nn
  >>> X, y = data.synthetic(seed=0, n=6, d=4)
  >>> params = nn.init(jax.random.key(0), 64, 4)
  >>> evaluation.predict(params, X).shape
  (6,)
  >>> e = evaluation.evaluate(params, X, jnp.sign(y))
  >>> e.n, abs(e.mse - 2 * e.loss_mean) < 1e-12, 0.0 <= e.accuracy <= 1.0
  (6, True, True)
  >>> evaluation.evaluate(params, X, y).accuracy is None       # y is not +-1
  True
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxcorr import _checks, nn

__all__ = ["Evaluation", "Loaded", "load_model", "predict", "evaluate"]


def _wide():
    """The wide-model module (key + active rows)."""
    from jaxcorr import wide

    return wide


def _span_init():
    """The span-defined model's module (key + basis of span X)."""
    from jaxcorr import span_init

    return span_init


class Evaluation(NamedTuple):
    """What :func:`evaluate` reports (host floats, computed in float64 from the model's outputs)."""

    n: int  # number of points
    loss_sum: float  # L = 1/2 sum_i (f(x_i) - y_i)^2 (Definition 2.1, jaxcorr.nn.loss)
    loss_mean: float  # L / n
    mse: float  # 1/n sum_i (f(x_i) - y_i)^2
    accuracy: float | None  # fraction with f(x_i) y_i > 0 when every y_i is -1 or +1, else None


def _check_b(b):
    if b is None:
        return None
    return _checks.check_real("b", b)


def predict(model, X, *, b=None):
    r"""The network's outputs :math:`f(W, x_i, a)` (Definition 2.1) on the rows of ``X``.

    Args:
      model: a :class:`jaxcorr.nn.Params` (``W`` (m, d), ``a`` (m,)), a wide model
        (``WideParams``: streamed over ``m``, the held rows swapped into W(0)), a span-defined
        model (``SpanModel``: :func:`jaxcorr.span_init.predict`, its cost stated there), or a
        checkpoint: its path or its :class:`Loaded` model (:func:`load_model`; ``b`` then defaults
        to the threshold it was trained with).
      X: (n, d) points, finite, ``d`` matching the model.
      b: the threshold of :math:`\sigma_b`. Default: :func:`jaxcorr.nn.default_threshold` ``(m)``
        for ``Params``; the model's own ``b`` for a wide model (another ``b`` is refused: its held
        rows are exactly the rows that can fire at that ``b``) and for a span model (another ``b``
        is exact too: it streams every row).

    Returns:
      (n,) outputs in the model's dtype (float32, or float64 under x64).

    Raises:
      ValueError: a model of neither kind, ``X`` not 2-D, with other than ``d`` columns or holding
        NaN/inf, a non-finite ``b``, or a wide model asked for another ``b``.
    """
    if isinstance(model, (str, os.PathLike, Loaded)):
        return _predict_loaded(model, X, b)
    b = _check_b(b)
    wide = _wide()
    if isinstance(model, wide.WideParams):
        _checks.check_matrix("X", X, cols=model.d)
        if b is not None and b != float(model.b):
            raise ValueError(f"b={b} differs from the wide model's b={model.b}: its held rows are the rows "
                             "that can fire at its own b; pass b=None")
        return wide.predict(model, jnp.asarray(X, model.W.dtype))
    span_init = _span_init()
    if isinstance(model, span_init.SpanModel):
        _checks.check_matrix("X", X, cols=model.d)
        return model.predict(X, b=b)
    if not (hasattr(model, "W") and hasattr(model, "a")) or np.ndim(model.W) != 2:
        raise ValueError("model must be a jaxcorr.nn.Params (W (m, d), a (m,)), a wide model (WideParams) "
                         f"or a span-defined model (span_init.SpanModel), got {type(model).__name__}")
    m, d = np.shape(model.W)
    if np.shape(model.a) != (m,):
        raise ValueError(f"model.a must have shape (m,)=({m},), got {np.shape(model.a)}")
    _checks.check_matrix("X", X, cols=d)
    W = jnp.asarray(model.W)
    return _by_point_blocks(nn.Params(W, jnp.asarray(model.a, W.dtype)), jnp.asarray(X, W.dtype),
                            nn.default_threshold(m) if b is None else b)


#: Largest (points x neurons) block of pre-activations :func:`predict` forms at once for a full-width
#: model (64 MiB of float32): the points go through in blocks of ``max(1, 2^24 // m)``, the last one
#: padded to the same size (one compiled program per (block, m, d)).
PREDICT_BLOCK_ELEMENTS = 1 << 24


def _by_point_blocks(params: nn.Params, X, b):
    """``nn.predict`` over blocks of points, so that no more than :data:`PREDICT_BLOCK_ELEMENTS`
    inner products exist at once (each output depends on its own point only: exact)."""
    n, m = X.shape[0], params.W.shape[0]
    block = max(1, PREDICT_BLOCK_ELEMENTS // max(m, 1))
    if n <= block:
        return nn.predict(params, X, b)
    pad = -n % block
    Xp = jnp.concatenate([X, jnp.zeros((pad, X.shape[1]), X.dtype)]) if pad else X
    parts = [nn.predict(params, Xp[s:s + block], b) for s in range(0, n + pad, block)]
    return jnp.concatenate(parts)[:n]


def evaluate(model, X, y, *, b=None) -> Evaluation:
    r"""Loss, mean loss, mean squared error and (for +-1 labels) accuracy of ``model`` on ``(X, y)``.

    Args:
      model, X, b: as for :func:`predict`.
      y: (n,) finite targets.

    Returns:
      an :class:`Evaluation`.

    Raises:
      ValueError: as :func:`predict`, or ``y`` not of shape (n,) or not finite.
    """
    n = np.shape(X)[0] if np.ndim(X) == 2 else None
    if n is not None and np.shape(y) != (n,):
        raise ValueError(f"y must have shape (n,)=({n},) to match X {np.shape(X)}, got {np.shape(y)}")
    _checks.check_dtype("y", y)
    _checks.check_finite("y", y)
    f = np.asarray(predict(model, X, b=b), np.float64)
    t = np.asarray(y, np.float64)
    e = f - t
    sq = float(np.dot(e, e))
    labels = bool(np.all(np.abs(t) == 1.0))
    acc = float(np.mean(f * t > 0)) if labels else None
    return Evaluation(n=int(f.shape[0]), loss_sum=0.5 * sq, loss_mean=0.5 * sq / f.shape[0], mse=sq / f.shape[0],
                      accuracy=acc)


class Loaded(NamedTuple):
    """A trained model read from a checkpoint by :func:`load_model`, ready for :func:`predict` and
    :func:`evaluate` (pass it, or the checkpoint's path, as their ``model``)."""

    kind: str  # the checkpoint's kind: "full", "compact" or "wide" (jaxcorr.checkpoint.restore)
    model: Any  # nn.Params (full), the held rows (compact, wide: a WideParams), or another restored model
    b: float  # the threshold the model was trained with
    m: int  # width
    d: int  # input dimension
    step: int  # steps trained
    config: dict  # the run configuration saved with it
    path: str


def load_model(path) -> Loaded:
    r"""The model in the checkpoint at ``path`` (any form :func:`jaxcorr.checkpoint.restore` reads).

    Reads only what predicting needs: no training data and no optimizer. A ``"full"`` file gives
    its :class:`jaxcorr.nn.Params`; a ``"compact"`` one its held rows (the rows that differ from
    W(0)) and a wide one its :class:`jaxcorr.wide.WideParams`, both applied by streaming W(0) from
    the key under the PRNG settings recorded at save (:func:`jaxcorr.wide.predict`), so a width
    whose W does not fit in memory predicts too. The threshold is the model's own ``b`` (a wide
    model), else ``config["b"]`` (what ``jaxcorr train`` records), else
    :func:`jaxcorr.nn.default_threshold` ``(m)``.

    Raises:
      jaxcorr.errors.CheckpointError: missing, not a checkpoint, corrupted or inconsistent.

    Examples:
      >>> import jax, os, tempfile
      >>> from jaxcorr import checkpoint, data, evaluation, nn
      >>> X, y = data.synthetic(seed=0, n=4, d=3)
      >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
      >>> checkpoint.save(path, nn.init(jax.random.key(0), 16, 3), X=X, y=y, config={"b": 0.25})
      'full'
      >>> r = evaluation.load_model(path)
      >>> r.kind, r.m, r.d, r.b
      ('full', 16, 3, 0.25)
      >>> evaluation.predict(path, X).shape                  # a path works as well
      (4,)
    """
    from jaxcorr import checkpoint  # noqa: PLC0415

    path = os.fspath(path)
    r = checkpoint.restore(path, as_wide=True)  # compact: the held rows, no optimizer needed
    model, config = r.model, dict(r.config or {})
    if hasattr(model, "m") and hasattr(model, "d"):
        m, d = int(model.m), int(model.d)
    else:
        m, d = (int(k) for k in np.shape(model.W))
    if hasattr(model, "b"):
        b = float(model.b)
    elif isinstance(config.get("b"), (int, float)) and not isinstance(config.get("b"), bool):
        b = float(config["b"])
    else:
        b = float(nn.default_threshold(m))
    return Loaded(kind=r.kind, model=model, b=b, m=m, d=d, step=int(r.step), config=config, path=path)


def _drawing(loaded: Loaded):
    """The PRNG settings W(0) of ``loaded`` was drawn under (a file without W(0): no change)."""
    from jaxcorr.checkpoint import wide as wide_form  # noqa: PLC0415

    meta = wide_form.wide_meta(loaded.config)
    return contextlib.nullcontext() if meta is None else wide_form.drawing_as(meta, loaded.path)


def _predict_loaded(model, X, b):
    """:func:`predict` of a checkpoint's path or of a :class:`Loaded` model."""
    loaded = model if isinstance(model, Loaded) else load_model(model)
    with _drawing(loaded):
        return predict(loaded.model, X, b=loaded.b if b is None else b)
