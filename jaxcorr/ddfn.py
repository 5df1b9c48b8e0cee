r"""Dynamic Detection of Firing Neurons, DDFN (Definition 1.3), on top of the Correlation DTree.

Given points :math:`X = \{x_1..x_n\}`, :math:`Y = \{y_1..y_m\}` and a threshold ``b``:

- :func:`update` ``(j, z)`` sets ``y_j`` to ``z``: O(n(d + log m)) (the DTree UPDATE, Lemma D.3);
- :func:`query` returns every pair ``(i, j)`` with :math:`\langle x_i, y_j \rangle > b`, sorted by
  ``(i, j)``, or reports overflow when there are more than ``cap`` of them. The default ``cap`` is
  :math:`\lceil m^{4/5} \rceil n`, the paper's bound. The search runs over all ``n`` trees as one
  forest with a single frontier, so it costs O(min(|Q|, cap) log(nm / cap)), not ``n`` full scans.

Note on the comparison: Definition 1.3 writes ``>= b``; jaxcorr uses strict ``> b`` everywhere,
as :math:`\sigma_b(x) > 0` needs (Section 2). For integer data, ``>= b`` is ``> b - 1``, which is
how :func:`jaxcorr.reductions.max_inner_product` uses it.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import ddfn
  >>> X = jnp.array([[1, 0], [0, 1]])
  >>> Y = jnp.array([[2, 1], [0, 3], [1, 1]])
  >>> s = ddfn.init(X, Y, b=1.5)
  >>> q = ddfn.query(s)
  >>> [(int(i), int(j)) for i, j, v in zip(q.i, q.j, q.valid) if v]
  [(0, 0), (1, 1)]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import numpy as np

from jaxcorr import _checks, _correlation, dtree, maxtree

__all__ = ["DDFNState", "Pairs", "init", "update", "query", "default_cap"]


def default_cap(n: int, m: int) -> int:
    """The paper's output bound ceil(m^{4/5}) * n (Definition 1.3)."""
    c = max(1, round(m ** 0.8))
    while c**5 < m**4:  # exact integer ceil(m^{4/5}), free of float rounding
        c += 1
    while c > 1 and (c - 1) ** 5 >= m**4:
        c -= 1
    return c * n


@functools.partial(jax.tree_util.register_dataclass, data_fields=["dtree", "b"], meta_fields=["cap"])
@dataclasses.dataclass(frozen=True)
class DDFNState:
    """DDFN state: a DTree over (Y as neurons, X as data), the threshold and the static output cap."""

    dtree: dtree.DTree  # W = Y (m, d), X = X (n, d)
    b: jax.Array  # shape=(), the threshold, tree dtype
    cap: int  # static: the most pairs reported


class Pairs(NamedTuple):
    """Result of :func:`query`: pairs sorted by (i, j); unused slots hold sentinels n and m."""

    i: jax.Array  # shape=(cap,), int32
    j: jax.Array  # shape=(cap,), int32
    valid: jax.Array  # shape=(cap,), bool
    count: jax.Array  # shape=(), int32; exact without overflow, a lower bound > cap with it
    overflow: jax.Array  # shape=(), bool: more than cap pairs exist


def init(X, Y, b, cap: int | None = None) -> DDFNState:
    """Preprocess ``X`` (n, d) and ``Y`` (m, d) in O(nmd) (Lemma D.2).

    Args:
      X: (n, d) points x_i (integer or real, finite).
      Y: (m, d) points y_j.
      b: finite threshold.
      cap: static int >= 1; default :func:`default_cap` (ceil(m^{4/5}) n).
    """
    X, Y = _correlation.as_arrays(X, Y)
    _checks.check_matrix("X", X)
    _checks.check_matrix("Y", Y, cols=X.shape[1])
    _checks.check_scalar("b", b)
    cap = default_cap(X.shape[0], Y.shape[0]) if cap is None else _checks.check_capacity("cap", cap)
    t = dtree.init_unchecked(Y, X)  # Y as the neurons, X as the data; checked above
    b = b.astype(t.W.dtype) if isinstance(b, jax.Array) else jax.device_put(np.asarray(b, t.W.dtype))
    return DDFNState(dtree=t, b=b, cap=cap)


def update(state: DDFNState, j, z, *, donate: bool = False) -> DDFNState:
    """UPDATE(j, z): set ``y_j`` to ``z`` in O(n(d + log m)) (Lemma D.3).

    ``j`` may be an index with ``z`` (d,), or a batch (k,) with ``z`` (k, d); a repeated index
    resolves to its last occurrence. ``donate=True`` updates ``state``'s buffers in place (the
    ``state`` passed in must not be used afterwards), see :func:`jaxcorr.dtree.update`.
    """
    j, z = _correlation.as_arrays(j, z)
    _checks.check_update_args(j, z, state.dtree.d, state.dtree.m, r_name="j", m_name="m")
    return dataclasses.replace(state, dtree=dtree.update_unchecked(state.dtree, j, z, donate=donate))


@jax.jit
def query(state: DDFNState) -> Pairs:
    """QUERY(): all (i, j) with ``<x_i, y_j> > b``, or overflow if there are more than ``cap``."""
    f = maxtree.query_forest(state.dtree.tree, state.b, state.cap)
    return Pairs(i=f.tree, j=f.leaf, valid=f.valid, count=f.count, overflow=f.overflow)
