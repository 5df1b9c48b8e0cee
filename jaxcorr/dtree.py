r"""Correlation DTree (Theorem 3.1 / D.1; Algorithms 1, 2, 5, 10-12).

``n`` max-trees, one per data point ``x_i``, each over the ``m`` neurons: leaf ``r`` of tree ``i``
holds :math:`\langle w_r, x_i \rangle`. Functional API over one immutable :class:`DTree` pytree:

- :func:`init` (Lemma D.2): O(nmd).
- :func:`update` (Lemma D.3): set ``w_r`` to ``z`` and recompute the ``n`` leaf-to-root paths,
  O(n(d + log m)) per neuron, vmapped across the trees. In place when the tree is a ``lax.scan``
  carry, or with ``donate=True``.
- :func:`query` (Lemma D.4): neurons ``r`` with :math:`\langle w_r, x_i \rangle > \tau` (strict, as
  :math:`\sigma_b(x) > 0` needs), O(|S(tau)| log m), as a fixed-capacity :class:`~jaxcorr.maxtree.Frontier`
  whose ``overflow`` flag reports a set larger than ``capacity``.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import dtree
  >>> W = jnp.array([[1., 0.], [0., 1.], [2., 2.]])   # m=3 neurons
  >>> X = jnp.array([[1., 1.], [1., -1.]])            # n=2 points
  >>> t = dtree.init(W, X)
  >>> dtree.query(t, 0, 1.5, capacity=3).indices.tolist()   # <w_r, x_0> = 1, 1, 4
  [2, 3, 3]
  >>> t = dtree.update(t, 0, jnp.array([3., 0.]))
  >>> dtree.query(t, 0, 1.5, capacity=3).indices.tolist()
  [0, 2, 3]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcorr import _checks, maxtree
from jaxcorr.maxtree import Frontier, MaxTree

__all__ = ["DTree", "init", "update", "query", "query_all", "inner_products", "Frontier"]

_HIGHEST = lax.Precision.HIGHEST


class _Correlation(NamedTuple):
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


class DTree(_Correlation):
    """State of the Correlation DTree: fields ``W`` (m, d), ``X`` (n, d) and ``tree`` (n trees).

    ``tree.levels[0][i, r] == <W[r], X[i]>``; padding leaves are ``-inf``.
    """

    __slots__ = ()


def _check_wx(W, X) -> None:
    _checks.check_matrix("W", W)
    _checks.check_matrix("X", X, cols=W.shape[1] if hasattr(W, "shape") else None)


@jax.jit
def _init(W, X) -> DTree:
    dt = _checks.float_dtype(W, X)
    W, X = jnp.asarray(W, dt), jnp.asarray(X, dt)
    return DTree(W=W, X=X, tree=maxtree.build(jnp.matmul(X, W.T, precision=_HIGHEST)))


def init(W: jax.Array, X: jax.Array) -> DTree:
    """INIT (Algorithm 10, Lemma D.2): build the ``n`` trees in O(nmd).

    Args:
      W: (m, d) neurons, finite. Integer input is converted to the default float dtype.
      X: (n, d) data points, finite.

    Returns:
      A :class:`DTree` in the common floating dtype of ``W`` and ``X``.

    Raises:
      ValueError: wrong rank, zero rows, mismatched ``d``, or non-finite values.
    """
    W, X = _as_arrays(W, X)
    _check_wx(W, X)
    return _init(W, X)


def _as_arrays(*xs):
    return tuple(x if isinstance(x, jax.Array) else jnp.asarray(x) for x in xs)


def _prepare_batch(r, z, m: int, dtype):
    """Batch form of (r, z) with repeated indices resolved to their last occurrence.

    Returns (cols, Z): cols (k,) int32 where superseded entries are replaced by an out-of-range
    sentinel (so their scatters are dropped), Z (k, d).
    """
    r = jnp.asarray(r, jnp.int32)
    z = jnp.asarray(z, dtype)
    if r.ndim == 0:
        return r[None], z[None]
    sentinel = maxtree.padded_size(m)
    return jnp.where(maxtree.last_occurrence(r), r, sentinel), z


def _update_impl(tree: DTree, r, z) -> DTree:
    cols, Z = _prepare_batch(r, z, tree.m, tree.W.dtype)
    W = tree.W.at[cols].set(Z, mode="drop")
    vals = jnp.matmul(tree.X, Z.T, precision=_HIGHEST)  # (n, k): O(nkd)
    return DTree(W=W, X=tree.X, tree=maxtree.set_leaves(tree.tree, cols, vals))


_update_jit = jax.jit(_update_impl)
_update_donate = jax.jit(_update_impl, donate_argnums=0)


def update(tree: DTree, r, z, *, donate: bool = False) -> DTree:
    """UPDATE (Algorithm 1 / 11, Lemma D.3): set ``w_r`` to ``z`` in all ``n`` trees.

    Args:
      tree: the :class:`DTree`.
      r: a neuron index (int) or a batch of indices, shape (k,). Within a batch, a repeated index
        resolves to its last occurrence, deterministically.
      z: the new weights, shape (d,) for one index or (k, d) for a batch.
      donate: donate ``tree``'s buffers so the update runs in place, O(n k (d + log m)) instead of
        copying the (n, m) levels. The ``tree`` passed in must not be used afterwards. Under an outer
        ``jit``/``scan`` this flag has no effect (use the scan carry for in-place updates).

    Returns:
      The updated :class:`DTree`.
    """
    _checks.check_update_args(r, z, tree.d, tree.m)
    return (_update_donate if donate else _update_jit)(tree, r, z)


def query(tree: DTree, i, tau, capacity: int) -> Frontier:
    """QUERY (Algorithm 2 / 12, Lemma D.4): neurons ``r`` with ``<w_r, x_i> > tau`` (strict).

    Args:
      tree: the :class:`DTree`.
      i: data-point index in [0, n) (may be traced: ``jax.vmap`` over ``i`` and ``tau`` works).
      tau: finite threshold (may be traced), compared in the tree's dtype.
      capacity: static Python int >= 1, the most neurons reported.

    Returns:
      A :class:`~jaxcorr.maxtree.Frontier`: ascending ``indices`` (sentinel ``m``), ``valid``,
      ``count`` and ``overflow`` (True when more than ``capacity`` neurons fire; ``count`` is then a
      lower bound greater than ``capacity``).
    """
    cap = maxtree.validate_query_args(tau, capacity, t=i, num_trees=tree.n, t_name="i", n_name="n")
    return maxtree.query(tree.tree, i, tau, cap)


def query_all(tree: DTree, tau, capacity: int) -> Frontier:
    """:func:`query` for every data point at once; ``tau`` is a scalar or an (n,) array.

    The fields of the returned Frontier have a leading axis of length ``n``.
    """
    cap = maxtree.validate_query_all_args(tau, capacity, num_trees=tree.n, n_name="n")
    return maxtree.query_all(tree.tree, tau, cap)


def inner_products(tree: DTree) -> jax.Array:
    """The stored (n, m) matrix of ``<w_r, x_i>`` (the leaves)."""
    return maxtree.leaves(tree.tree)
