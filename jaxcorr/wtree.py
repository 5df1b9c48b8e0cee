r"""Correlation WTree (Theorem 3.2 / D.5; Algorithms 6, 13-15).

``m`` max-trees, one per neuron ``w_r``, each over the ``n`` data points: leaf ``i`` of tree ``r``
holds :math:`\langle w_r, x_i \rangle`.

- :func:`init` (Lemma D.6): O(nmd).
- :func:`update` (Algorithm 14, Lemma D.7): set ``w_r`` to ``z`` and rebuild tree ``r``, O(nd).
- :func:`query` (Algorithm 15, Lemma D.8): data points ``i`` with
  :math:`\langle w_r, x_i \rangle > \tau` (strict), as a fixed-capacity Frontier with overflow flag.
- :func:`init_unchecked`, :func:`update_unchecked`: the jitted cores without the eager input checks.

The state and set-up helpers shared with the DTree live in :mod:`jaxcorr._correlation`, the inner
products in :mod:`jaxcorr._linalg`.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import wtree
  >>> W = jnp.array([[1., 0.], [0., 1.]])
  >>> X = jnp.array([[2., 0.], [0., 3.], [1., 1.]])
  >>> t = wtree.init(W, X)
  >>> wtree.query(t, 1, 0.5, capacity=3).indices.tolist()   # <w_1, x_i> = 0, 3, 1
  [1, 2, 3]
"""

from __future__ import annotations

import jax

from jaxcorr import _checks, _correlation, _linalg, maxtree
from jaxcorr.maxtree import Frontier

__all__ = [
    "WTree",
    "init",
    "update",
    "query",
    "query_all",
    "inner_products",
    "init_unchecked",
    "update_unchecked",
    "Frontier",
]


class WTree(_correlation.Correlation):
    """State of the Correlation WTree: fields ``W`` (m, d), ``X`` (n, d) and ``tree`` (m trees).

    ``tree.levels[0][r, i] == <W[r], X[i]>``; padding leaves are ``-inf``.
    """

    __slots__ = ()


@jax.jit
def init_unchecked(W, X) -> WTree:
    """:func:`init` without its eager input checks: the jitted INIT, for callers that checked already."""
    W, X = _correlation.cast_pair(W, X)
    return WTree(W=W, X=X, tree=maxtree.build(_linalg.inner(W, X)))


def init(W: jax.Array, X: jax.Array) -> WTree:
    """INIT (Algorithm 13, Lemma D.6): build the ``m`` trees in O(nmd).

    Args:
      W: (m, d) neurons, finite.
      X: (n, d) data points, finite.

    Raises:
      ValueError: wrong rank, zero rows, mismatched ``d``, or non-finite values.
    """
    W, X = _correlation.as_arrays(W, X)
    _correlation.check_init_args(W, X)
    return init_unchecked(W, X)


def _update_impl(tree: WTree, r, z) -> WTree:
    rows, Z = _correlation.prepare_batch(r, z, tree.m, tree.W.dtype)
    W = tree.W.at[rows].set(Z, mode="drop")
    vals = _linalg.inner(Z, tree.X)  # (k, n): O(knd)
    return WTree(W=W, X=tree.X, tree=maxtree.set_rows(tree.tree, rows, vals))


_update_jit = jax.jit(_update_impl)
_update_donate = jax.jit(_update_impl, donate_argnums=0)


def update_unchecked(tree: WTree, r, z, *, donate: bool = False) -> WTree:
    """:func:`update` without its eager input checks (see :func:`jaxcorr.dtree.update_unchecked`)."""
    return (_update_donate if donate else _update_jit)(tree, r, z)


def update(tree: WTree, r, z, *, donate: bool = False) -> WTree:
    """UPDATE (Algorithm 14, Lemma D.7): set ``w_r`` to ``z`` and rebuild tree ``r`` in O(nd).

    Args:
      tree: the :class:`WTree`.
      r: a neuron index or a batch (k,); a repeated index resolves to its last occurrence.
      z: (d,) or (k, d) new weights.
      donate: donate ``tree``'s buffers so the update runs in place (see :func:`jaxcorr.dtree.update`).
    """
    r, z = _correlation.as_arrays(r, z)
    _checks.check_update_args(r, z, tree.d, tree.m)
    return update_unchecked(tree, r, z, donate=donate)


def query(tree: WTree, r, tau, capacity: int) -> Frontier:
    """QUERY (Algorithm 15, Lemma D.8): points ``i`` with ``<w_r, x_i> > tau`` (strict).

    ``r`` and ``tau`` may be traced; ``capacity`` is a static int >= 1. Unused slots of
    ``indices`` hold the sentinel ``n``.
    """
    cap = _checks.validate_query_args(tau, capacity, t=r, num_trees=tree.m, t_name="r", n_name="m")
    return maxtree.query(tree.tree, r, tau, cap)


def query_all(tree: WTree, tau, capacity: int) -> Frontier:
    """:func:`query` for every neuron at once; ``tau`` is a scalar or an (m,) array."""
    cap = _checks.validate_query_all_args(tau, capacity, num_trees=tree.m, n_name="m")
    return maxtree.query_all(tree.tree, tau, cap)


def inner_products(tree: WTree) -> jax.Array:
    """The stored (m, n) matrix of ``<w_r, x_i>``."""
    return maxtree.leaves(tree.tree)
