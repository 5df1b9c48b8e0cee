"""Small array helpers shared by the set-up and the tear-down of the training state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["copy", "row_first", "nbytes"]


@jax.jit
def copy(tree):
    """New buffers with the values of ``tree`` (one compiled call)."""
    return jax.tree_util.tree_map(lambda x: x.copy(), tree)


def row_first(x, ax):
    """``x`` with its row axis ``ax`` moved first."""
    return jnp.moveaxis(x, ax, 0)


def nbytes(tree) -> int:
    """Bytes of the arrays in ``tree`` (typed PRNG keys count as their key data)."""
    def size(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.dtype(x.dtype).itemsize * int(np.prod(np.shape(x)))

    return int(sum(size(x) for x in jax.tree_util.tree_leaves(tree)))

