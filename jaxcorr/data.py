r"""Seeded synthetic regression data for 2NN(m, b) training (used by the CLI and the benchmarks).

The data follow the setting of Section 2: unit-norm inputs :math:`\|x_i\|_2 = 1` and bounded targets.
Targets come from a fixed smooth teacher, :math:`y_i = \tanh(2 \langle v, x_i \rangle)` with a random
unit vector ``v``, so :math:`y_i \in (-1, 1)`.

Examples:
  >>> from jaxcorr import data
  >>> X, y = data.synthetic(seed=0, n=8, d=64)
  >>> X.shape, y.shape, str(X.dtype)
  ((8, 64), (8,), 'float32')
"""

from __future__ import annotations

import jax
import numpy as np

from jaxcorr import _checks

__all__ = ["synthetic"]


def synthetic(seed: int, n: int, d: int, dtype=None):
    """Generate ``(X, y)``: ``n`` unit-norm points in R^d and bounded targets in (-1, 1).

    Deterministic in ``seed`` (numpy ``default_rng``, independent of the JAX PRNG and backend).

    Args:
      seed: integer seed.
      n: number of points (>= 1).
      d: dimension (>= 1).
      dtype: floating dtype of the result; default float32 (float64 when x64 is enabled).

    Returns:
      ``X`` (n, d) with unit-norm rows and ``y`` (n,) with ``|y_i| < 1``, as JAX arrays on the
      default device (placed by an explicit ``jax.device_put``: no implicit transfer).
    """
    n, d = int(n), int(d)
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got n={n}, d={d}")
    dtype = _checks.floating_dtype(dtype)
    rng = np.random.default_rng(int(seed))
    X = rng.standard_normal((n, d))
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
    v = rng.standard_normal(d)
    v /= max(np.linalg.norm(v), 1e-300)
    y = np.tanh(2.0 * X @ v)
    return jax.device_put((X.astype(dtype), y.astype(dtype)))
