r"""What the Correlation DTree and WTree share (Theorems 3.1 and 3.2): state fields and set-up helpers.

Both structures store the neurons ``W`` (m, d), the data ``X`` (n, d) and max-trees whose leaves are
the inner products :math:`\langle w_r, x_i \rangle`; they differ only in which side indexes the trees
(:mod:`jaxcorr.dtree`: ``n`` trees over the ``m`` neurons; :mod:`jaxcorr.wtree`: ``m`` trees over the
``n`` points). This package-internal module holds the common part, so neither of them (nor
:mod:`jaxcorr.ddfn`) reads the other's private names:

- :class:`Correlation`: the state base class (fields ``W``, ``X``, ``tree``; sizes ``n``, ``m``, ``d``);
- :func:`as_arrays`, :func:`check_init_args`, :func:`cast_pair`: the eager checks and dtype of INIT;
- :func:`prepare_batch`: the batch form of an UPDATE, repeated indices settled before any scatter.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import _correlation
  >>> cols, Z = _correlation.prepare_batch(jnp.array([2, 0, 2]), jnp.ones((3, 4)), m=3, dtype=jnp.float32)
  >>> cols.tolist()   # the first 2 is superseded by the last: its scatter is dropped (sentinel 4)
  [4, 0, 2]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import _checks, maxtree
from jaxcorr.maxtree import MaxTree

__all__ = ["Correlation", "as_arrays", "check_init_args", "cast_pair", "prepare_batch"]


class Correlation(NamedTuple):
    """Fields shared by the DTree and the WTree: the weights, the data and their max-trees."""

    W: jax.Array  # shape=(m, d), float32/float64: the neurons w_r
    X: jax.Array  # shape=(n, d), same dtype: the data points x_i
    tree: MaxTree  # DTree: n trees over m leaves; WTree: m trees over n leaves

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def m(self) -> int:
        return self.W.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def as_arrays(*xs):
    """Each argument as an array: JAX arrays (and tracers) as they are; host values (Python scalars,
    lists, numpy arrays) placed on the default device by an explicit ``jax.device_put``, so the
    jitted calls after it make no implicit transfer."""
    return tuple(x if isinstance(x, jax.Array) else jax.device_put(np.asarray(x)) for x in xs)


def check_init_args(W, X, *, w_name: str = "W", x_name: str = "X") -> None:
    """Eager checks of INIT: ``W`` (m, d) and ``X`` (n, d) real, finite, non-empty, same ``d``."""
    _checks.check_matrix(w_name, W)
    _checks.check_matrix(x_name, X, cols=W.shape[1] if hasattr(W, "shape") else None)


def cast_pair(W, X):
    """``W`` and ``X`` in their common floating dtype (integers become the default float dtype)."""
    dt = _checks.float_dtype(W, X)
    return jnp.asarray(W, dt), jnp.asarray(X, dt)


def prepare_batch(r, z, m: int, dtype):
    """Batch form of an UPDATE ``(r, z)``, with repeated indices resolved to their last occurrence.

    Args:
      r: a neuron index () or a batch (k,) of indices in [0, m).
      z: the new rows, (d,) or (k, d).
      m: the number of neurons.
      dtype: the state's dtype.

    Returns:
      ``(cols, Z)``: ``cols`` (k,) int32 where superseded entries are replaced by an out-of-range
      sentinel (so their scatters are dropped, see :func:`jaxcorr.maxtree.last_occurrence`), and
      ``Z`` (k, d) in ``dtype``.
    """
    r = jnp.asarray(r, jnp.int32)
    z = jnp.asarray(z, dtype)
    if r.ndim == 0:
        return r[None], z[None]
    sentinel = maxtree.padded_size(m)
    return jnp.where(maxtree.last_occurrence(r), r, sentinel), z
