r"""The optimizers jaxcorr's command line and scripts name: one table, one constructor per name.

``jaxcorr train --optimizer NAME``, the benchmarks and the claim scripts all build their optimizer
here, so a name means the same transformation everywhere:

- ``sgd``: ``jaxcorr.train.sgd(lr)``; default lr 1.0; 0 state slots; span path.
- ``momentum``: ``jaxcorr.train.sgd(lr, momentum=0.9)``; default lr 0.1; 1 state slot; span path.
- ``adam``: ``optax.adam(lr)`` (b1=0.9, b2=0.999, eps=1e-8); default lr 0.01; 2 state slots; the
  generic (row) path.

- *default lr*: each optimizer's own step size, what :func:`make` uses when no learning rate is
  given and what the command line should use for ``--optimizer NAME`` without ``--lr``
  (:func:`default_learning_rate`); each one decreases the loss of the default synthetic problem.
- *state slots*: optimizer-state arrays of the size of ``W`` (0 for plain SGD, 1 for the momentum
  trace, 2 for Adam's moments): what a memory estimate counts.
- *span path*: sgd and momentum are :class:`jaxcorr.train.LinearOptimizer` (linear in the gradient
  by construction), which the compacted methods run on the coefficients of the data span (the Gram
  path). Adam runs the generic compacted path; :mod:`jaxcorr.train` proves it exact on idle rows.

Any other optax ``GradientTransformation`` can still be passed to :func:`jaxcorr.train.fit`
directly; this table only fixes what the *names* mean.

Examples:
  >>> from jaxcorr import optimizers, train
  >>> optimizers.NAMES
  ('sgd', 'momentum', 'adam')
  >>> opt = optimizers.make("momentum")          # train.sgd(0.1, momentum=0.9)
  >>> isinstance(opt, train.LinearOptimizer)
  True
  >>> optimizers.describe("adam", 0.001)
  'optax.adam(0.001)'
  >>> optimizers.make("lion")
  Traceback (most recent call last):
  ...
  ValueError: unknown optimizer 'lion'; choose one of sgd, momentum, adam
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import optax

from jaxcorr import linear

__all__ = ["Spec", "TABLE", "NAMES", "make", "describe", "spec", "default_learning_rate"]


class Spec(NamedTuple):
    """One row of :data:`TABLE`: how a name is built and what it costs."""

    build: Callable[[float], optax.GradientTransformation]  # learning rate -> optimizer
    learning_rate: float  # the default learning rate of :func:`make`
    label: str  # what runs, with ``{lr}`` for the learning rate (for reports and JSON rows)
    state_slots: int  # optimizer-state arrays the size of W
    span: bool  # a jaxcorr.train.LinearOptimizer: the compacted methods take the Gram (span) path


#: The optimizer names and what each stands for (see the module docstring's table).
TABLE: dict[str, Spec] = {
    "sgd": Spec(linear.sgd, 1.0, "jaxcorr.train.sgd({lr})", 0, True),
    "momentum": Spec(functools.partial(linear.sgd, momentum=0.9), 0.1,
                     "jaxcorr.train.sgd({lr}, momentum=0.9)", 1, True),
    "adam": Spec(optax.adam, 0.01, "optax.adam({lr})", 2, False),
}

#: The names of :data:`TABLE`, in order (the command line's ``--optimizer`` choices).
NAMES: tuple[str, ...] = tuple(TABLE)


def spec(name: str) -> Spec:
    """The :data:`TABLE` row of ``name``.

    Raises:
      ValueError: ``name`` is not in the table (the message lists the names).
    """
    try:
        return TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(NAMES)}") from None


def default_learning_rate(name: str) -> float:
    """The default learning rate of ``name`` (:data:`TABLE`'s *default lr*).

    Examples:
      >>> from jaxcorr import optimizers
      >>> optimizers.default_learning_rate("adam")
      0.01
    """
    return spec(name).learning_rate


def _rate(name: str, learning_rate: float | None) -> float:
    return spec(name).learning_rate if learning_rate is None else learning_rate


def make(name: str, learning_rate: float | None = None) -> optax.GradientTransformation:
    """A new optimizer for ``name`` (see :data:`TABLE`).

    Args:
      name: one of :data:`NAMES`.
      learning_rate: the step size (a float > 0, or for sgd/momentum also a schedule); None: the
        table's default for ``name``.

    Returns:
      The optax ``GradientTransformation``: a :class:`jaxcorr.train.LinearOptimizer` for sgd and
      momentum, ``optax.adam`` for adam. Each call builds a new object (:func:`jaxcorr.train.fit`
      compiles per optimizer object: reuse the object to reuse the compiled code).

    Raises:
      ValueError: unknown ``name`` (the message lists the names), or a learning rate that
        :func:`jaxcorr.train.sgd` refuses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxcorr import optimizers
      >>> opt = optimizers.make("sgd", 0.5)
      >>> updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
      >>> updates.tolist()                      # -lr * gradient
      [-0.5, -0.5]
    """
    s = spec(name)
    return s.build(_rate(name, learning_rate))


def describe(name: str, learning_rate: float | None = None) -> str:
    """What :func:`make` builds for ``name``, as code: e.g. ``'jaxcorr.train.sgd(1.0)'``.

    Examples:
      >>> from jaxcorr import optimizers
      >>> optimizers.describe("momentum")
      'jaxcorr.train.sgd(0.1, momentum=0.9)'
    """
    return spec(name).label.format(lr=_rate(name, learning_rate))
