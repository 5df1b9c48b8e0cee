r"""The one optimizer jaxcorr knows to be linear: :func:`sgd`, and the check that an optimizer is it.

The compacted methods run an optimizer on the (|A|, n) coefficients ``K`` of ``W_A = W_A(0) + K X``
(the span, or Gram, path) only when its update is linear in the gradient, free of the parameters
and the same on every coordinate. That is a property of how the update was built, so it is never
asserted by a type alone: :class:`LinearOptimizer` cannot be constructed outside :func:`sgd`, and
:func:`is_linear` also checks that its ``init``/``update`` are the very functions :func:`sgd` made
(a ``_replace`` or a ``tuple.__new__`` of another optimizer's functions is not linear by this test).

Public as :func:`jaxcorr.train.sgd` and :class:`jaxcorr.train.LinearOptimizer`. The module sits
below :mod:`jaxcorr.train`, :mod:`jaxcorr.optimizers` and :mod:`jaxcorr.cost`, so the optimizer table
and the cost model read it without importing the training floor (which calls the cost model for
``method="auto"``).

Examples:
  >>> from jaxcorr import train
  >>> opt = train.sgd(0.1, momentum=0.9)
  >>> isinstance(opt, train.LinearOptimizer)
  True
"""

from __future__ import annotations

import math
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcorr import _checks

__all__ = ["LinearOptimizer", "sgd", "is_linear", "check_rates", "default_optimizer"]

_TOKEN = object()
#: update function -> (init function, learning rate (float or schedule), momentum), for every
#: optimizer :func:`sgd` built (weak keys: a discarded optimizer leaves no entry).
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class LinearOptimizer(optax.GradientTransformation):
    """An optax ``GradientTransformation`` that :func:`sgd` built to be linear in the gradient.

    Its update is ``-lr(t) * g`` or a momentum / Nesterov trace of the gradients times ``-lr(t)``,
    with ``lr(t)`` a scalar function of the step count alone: linear in the gradient, free of the
    parameters, the same on every coordinate. So when every gradient row is a combination of the
    data points (Section 2), every update and trace row is too, and the compacted methods run it on
    the coefficients ``K`` (the span path: O(|A| n^2) per step instead of O(|A| n d)).

    Only :func:`sgd` constructs one; calling the class raises ``TypeError``.
    """

    __slots__ = ()

    def __new__(cls, init, update, *, _token=None):
        if _token is not _TOKEN:
            raise TypeError("train.LinearOptimizer is made by train.sgd(...) only: linearity is a property "
                            "of how the update is built, not something a wrapper can assert")
        return super().__new__(cls, init, update)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def is_linear(optimizer) -> bool:
    """True if ``optimizer`` is a :class:`LinearOptimizer` whose functions :func:`sgd` built."""
    if not isinstance(optimizer, LinearOptimizer):
        return False
    try:
        entry = _BUILT.get(optimizer.update)
    except TypeError:  # not weak-referenceable: not one of ours
        return False
    return entry is not None and entry[0] is optimizer.init


def _check_scalar_rate(learning_rate):
    """A constant rate as a float, or a schedule whose value is a scalar (``jax.eval_shape``)."""
    if callable(learning_rate):
        try:
            out = jax.eval_shape(learning_rate, jax.ShapeDtypeStruct((), jnp.int32))
        except Exception as err:  # noqa: BLE001 (a schedule that cannot be traced at a count)
            raise ValueError(f"learning_rate: the schedule could not be evaluated on a step count "
                             f"({type(err).__name__}: {err})") from None
        shape = getattr(out, "shape", None)
        if shape != ():
            raise ValueError(f"learning_rate must be a scalar: the schedule returns shape {shape}, "
                             "expected () (one step size for every coordinate)")
        return learning_rate
    if np.ndim(learning_rate) != 0:
        raise ValueError(f"learning_rate must be a scalar (shape ()), got shape {np.shape(learning_rate)}")
    return _checks.check_rate("learning_rate", learning_rate)


def sgd(learning_rate, momentum: float | None = None, nesterov: bool = False) -> LinearOptimizer:
    """``optax.sgd(learning_rate, momentum, nesterov)``, built linear for the span path.

    Args:
      learning_rate: a finite float >= 0 (a 0-d value), or a schedule (a function of the step
        count only) returning a scalar.
      momentum: None (plain SGD) or a finite float >= 0 (heavy ball, as in ``optax.sgd``).
      nesterov: Nesterov momentum (needs ``momentum``).

    Returns:
      a :class:`LinearOptimizer` with the same ``init``/``update`` as ``optax.sgd``.

    Raises:
      ValueError: a rate that is not a finite scalar >= 0 (arrays of any shape included), a
        schedule whose value is not a scalar, a bad momentum, or ``nesterov`` without momentum.

    Examples:
      >>> from jaxcorr import train
      >>> opt = train.sgd(0.1, momentum=0.9)
      >>> isinstance(opt, train.LinearOptimizer)
      True
      >>> train.sgd(lambda t: 0.1 * jnp.ones(3))
      Traceback (most recent call last):
      ...
      ValueError: learning_rate must be a scalar: the schedule returns shape (3,), expected () ...
    """
    learning_rate = _check_scalar_rate(learning_rate)
    if momentum is not None:
        if np.ndim(momentum) != 0:
            raise ValueError(f"momentum must be a scalar (shape ()), got shape {np.shape(momentum)}")
        momentum = _checks.check_rate("momentum", momentum)
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum")
    base = optax.sgd(learning_rate, momentum=momentum, nesterov=bool(nesterov))
    opt = LinearOptimizer(base.init, base.update, _token=_TOKEN)
    _BUILT[base.update] = (base.init, learning_rate, momentum)
    return opt


def check_rates(optimizer, dtype) -> None:
    """Refuse a :func:`sgd` whose constant rate or momentum overflows ``dtype`` (finite in Python,
    ``inf`` in the parameters' dtype: 1e39 in float32)."""
    entry = _BUILT.get(optimizer.update) if is_linear(optimizer) else None
    if entry is None:
        return
    big = float(jnp.finfo(dtype).max)
    for name, value in (("learning_rate", entry[1]), ("momentum", entry[2])):
        if value is not None and not callable(value) and not (math.isfinite(value) and value <= big):
            raise ValueError(f"{name} = {value:g} overflows the parameters' dtype {np.dtype(dtype).name} "
                             f"(its largest finite value is {big:g}); use a smaller {name}")


_DEFAULT_OPTIMIZERS: dict = {}


def default_optimizer(learning_rate: float) -> LinearOptimizer:
    """``sgd(learning_rate)``, the same object for the same rate (so compiled chunks are reused)."""
    opt = _DEFAULT_OPTIMIZERS.get(learning_rate)
    if opt is None:
        opt = _DEFAULT_OPTIMIZERS[learning_rate] = sgd(learning_rate)
    return opt
