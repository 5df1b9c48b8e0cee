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
- :func:`init_unchecked`, :func:`update_unchecked`: the jitted cores of INIT and UPDATE without the
  eager input checks, for callers that checked already.

The state and set-up helpers shared with the WTree live in :mod:`jaxcorr._correlation`, the inner
products in :mod:`jaxcorr._linalg`.

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

import jax

from jaxcorr import _checks, _correlation, _linalg, maxtree
from jaxcorr.maxtree import Frontier

__all__ = [
    "DTree",
    "init",
    "update",
    "query",
    "query_all",
    "inner_products",
    "init_unchecked",
    "update_unchecked",
    "Frontier",
]


class DTree(_correlation.Correlation):
    """State of the Correlation DTree: fields ``W`` (m, d), ``X`` (n, d) and ``tree`` (n trees).

    ``tree.levels[0][i, r] == <W[r], X[i]>``; padding leaves are ``-inf``.
    """

    __slots__ = ()


@jax.jit
def init_unchecked(W, X) -> DTree:
    """:func:`init` without its eager input checks: the jitted INIT, for callers that checked already."""
    W, X = _correlation.cast_pair(W, X)
    return DTree(W=W, X=X, tree=maxtree.build(_linalg.inner(X, W)))


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
    W, X = _correlation.as_arrays(W, X)
    _correlation.check_init_args(W, X)
    return init_unchecked(W, X)


def _update_impl(tree: DTree, r, z) -> DTree:
    cols, Z = _correlation.prepare_batch(r, z, tree.m, tree.W.dtype)
    W = tree.W.at[cols].set(Z, mode="drop")
    vals = _linalg.inner(tree.X, Z)  # (n, k): O(nkd)
    return DTree(W=W, X=tree.X, tree=maxtree.set_leaves(tree.tree, cols, vals))


_update_jit = jax.jit(_update_impl)
_update_donate = jax.jit(_update_impl, donate_argnums=0)


def update_unchecked(tree: DTree, r, z, *, donate: bool = False) -> DTree:
    """:func:`update` without its eager input checks, for callers that checked ``r`` and ``z`` already
    (:func:`jaxcorr.ddfn.update`) or run under an outer ``jit``. Same arguments as :func:`update`;
    an out-of-range ``r`` is not detected here and leaves the state unspecified."""
    return (_update_donate if donate else _update_jit)(tree, r, z)


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
    r, z = _correlation.as_arrays(r, z)
    _checks.check_update_args(r, z, tree.d, tree.m)
    return update_unchecked(tree, r, z, donate=donate)


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
    cap = _checks.validate_query_args(tau, capacity, t=i, num_trees=tree.n, t_name="i", n_name="n")
    return maxtree.query(tree.tree, i, tau, cap)


def query_all(tree: DTree, tau, capacity: int) -> Frontier:
    """:func:`query` for every data point at once; ``tau`` is a scalar or an (n,) array.

    The fields of the returned Frontier have a leading axis of length ``n``.
    """
    cap = _checks.validate_query_all_args(tau, capacity, num_trees=tree.n, n_name="n")
    return maxtree.query_all(tree.tree, tau, cap)


def inner_products(tree: DTree) -> jax.Array:
    """The stored (n, m) matrix of ``<w_r, x_i>`` (the leaves)."""
    return maxtree.leaves(tree.tree)
