r"""The one home of jaxcorr's matrix products: full float32 precision, one spelling of ``<w_r, x_i>``.

Every inner product the structures store or compare against a threshold must be the same number
wherever it is computed (the trees' leaves, the dense oracle, the training steps), so every product
runs at :data:`HIGHEST` precision: on TPUs and GPUs the default precision of a float32 ``matmul``
may round the inputs to bfloat16 or TF32, which would move values across ``tau``.

- :func:`inner`: the matrix of inner products of the rows of two matrices,
  :math:`\mathrm{inner}(A, B)_{ij} = \langle a_i, b_j \rangle`, i.e. ``A @ B.T``.
- :func:`matmul`: a plain ``A @ B`` at the same precision.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import _linalg
  >>> W = jnp.array([[1., 0.], [2., 2.]])   # m = 2 neurons
  >>> X = jnp.array([[1., 1.]])             # n = 1 point
  >>> _linalg.inner(X, W).tolist()          # the DTree's leaves, (n, m)
  [[1.0, 4.0]]
  >>> _linalg.inner(W, X).tolist()          # the WTree's leaves, (m, n)
  [[1.0], [4.0]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["HIGHEST", "inner", "matmul"]

#: The precision of every product in jaxcorr (exact float32 products on every backend).
HIGHEST = lax.Precision.HIGHEST


def inner(A: jax.Array, B: jax.Array) -> jax.Array:
    r"""All inner products of the rows of ``A`` with the rows of ``B``: ``A @ B.T`` at :data:`HIGHEST`.

    Args:
      A: (p, d) array.
      B: (q, d) array.

    Returns:
      The (p, q) array :math:`\langle a_i, b_j \rangle` in the promoted dtype of ``A`` and ``B``.
    """
    return jnp.matmul(A, B.T, precision=HIGHEST)


def matmul(A: jax.Array, B: jax.Array) -> jax.Array:
    """``A @ B`` at :data:`HIGHEST` precision (``jnp.matmul`` semantics: batched, 1-D operands)."""
    return jnp.matmul(A, B, precision=HIGHEST)
