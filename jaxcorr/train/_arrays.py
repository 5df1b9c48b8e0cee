"""Small array helpers shared by the set-up and the tear-down of the training state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["copy", "row_first", "nbytes", "put", "zeros"]


@jax.jit
def copy(tree):
    """New buffers with the values of ``tree`` (one compiled call)."""
    return jax.tree_util.tree_map(lambda x: x.copy(), tree)


def put(x, dtype=None) -> jax.Array:
    """A host value (Python scalar or numpy array) placed on the default device by an explicit
    ``jax.device_put``: set-up code stays clean under ``jax.transfer_guard("disallow")``."""
    return jax.device_put(np.asarray(x, dtype))


@functools.partial(jax.jit, static_argnums=(0, 1))
def zeros(shape: tuple, dtype) -> jax.Array:
    """``jnp.zeros(shape, dtype)`` made by a compiled program (no host value crosses to the device)."""
    return jnp.zeros(shape, dtype)


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

