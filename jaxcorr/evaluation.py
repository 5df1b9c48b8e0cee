r"""Use and judge a trained 2NN(m, b): its outputs on new data, the loss, the error and the accuracy.

One call per task, for every model kind: a full-width :class:`jaxcorr.nn.Params` (what
:func:`jaxcorr.train.fit` returns), a wide model held as its key plus its active rows (the
:class:`jaxcorr.wide.WideParams`, streamed over ``m``) or a span-defined model (the
:class:`jaxcorr.span_init.SpanModel`: rows outside A drawn as they are needed, streamed over ``m``;
on the training points only A is read).

- :func:`predict`: :math:`f(W, x_i, a) = \frac{1}{\sqrt m}\sum_r a_r \sigma_b(\langle w_r, x_i\rangle)`
  (Definition 2.1) for every row of ``X``.
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

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxcorr import _checks, nn

__all__ = ["Evaluation", "predict", "evaluate"]


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
        (``WideParams``: streamed over ``m``, the held rows swapped into W(0)) or a span-defined
        model (``SpanModel``: :func:`jaxcorr.span_init.predict`, its cost stated there).
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
    return nn.predict(nn.Params(W, jnp.asarray(model.a, W.dtype)), jnp.asarray(X, W.dtype),
                      nn.default_threshold(m) if b is None else b)


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
