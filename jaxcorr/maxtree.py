# Over 500 lines: one concept (the batched max-tree: build, update, FIND and its reference, capacity policy).
r"""Batched max-trees (Algorithm 7, MAKEMAXTREE) and the fixed-capacity threshold frontier (FIND).

A :class:`MaxTree` holds ``T`` independent binary max-trees over ``L`` leaves each, stored as one
array per level with a leading axis of trees: ``levels[0]`` has shape ``(T, P)`` (the leaves, padded
to ``P = 2**ceil(log2 L)`` with ``-inf``), ``levels[l]`` has shape ``(T, P >> l)`` and ``levels[-1]``
is the ``(T, 1)`` array of roots. Every parent equals the max of its two children
(:func:`check_invariant`), so a node is ``> tau`` exactly when some leaf below it is ``> tau``.

The query (Algorithm 2 / 12 / 15, FIND) walks the trees top-down breadth-first with a frontier of
static size: a level keeps at most ``min(capacity, nodes at that level)`` slots, so the top levels
cost nothing and the work is about ``capacity * log(P / capacity)``. (The frontier is kept at every
fifth level; in between, the 32 descendants of a node are read as one contiguous row and compared
at once.) Comparisons are strict (``value > tau``), which is what
:math:`\sigma_b(x) = \max(x - b, 0) > 0` needs. If more nodes pass
at some level than the frontier holds, the result says so (``overflow``): DDFN's "report overflow"
(Definition 1.3). Nothing is dropped silently.

Beside the fast query, :func:`query_reference` and :func:`query_forest_reference` run the same
search plainly, one level per step, for the tests to compare against. Capacities are sized on the
host by one policy, :func:`allocate` (jax-md's ``neighbor_list`` idiom: measured count times a
multiplier plus extra, rounded by :func:`bucket` to few distinct static sizes, capped).

The public queries check their arguments eagerly (a tree index out of range, a NaN threshold);
the checks read concrete values only, so under ``jit`` or ``vmap`` they add nothing at run time.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import maxtree
  >>> t = maxtree.build(jnp.array([[1., 5., 3.], [0., -2., 7.]]))
  >>> [lvl.shape for lvl in t.levels]
  [(2, 4), (2, 2), (2, 1)]
  >>> f = maxtree.query(t, 0, 2.0, capacity=4)
  >>> f.indices.tolist(), f.count.item(), f.overflow.item()
  ([1, 2, 3, 3], 2, False)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcorr import _checks

__all__ = [
    "MaxTree",
    "Frontier",
    "ForestFrontier",
    "build",
    "leaves",
    "set_leaves",
    "set_rows",
    "query",
    "query_all",
    "query_all_mask",
    "searches_every_leaf",
    "query_forest",
    "query_reference",
    "query_forest_reference",
    "allocate",
    "bucket",
    "check_invariant",
    "last_occurrence",
    "padded_size",
]

_I32 = jnp.int32


def padded_size(num_leaves: int) -> int:
    """Smallest power of two >= ``num_leaves`` (the padded leaf count P)."""
    return 1 << max(0, int(num_leaves) - 1).bit_length()


@functools.partial(jax.tree_util.register_dataclass, data_fields=["levels"], meta_fields=["num_leaves"])
@dataclasses.dataclass(frozen=True)
class MaxTree:
    """``T`` max-trees over ``num_leaves`` leaves each, one array per level (leaves first).

    Attributes:
      levels: tuple of arrays; ``levels[l]`` has shape ``(T, P >> l)``, dtype float32/float64.
        Padding leaves (index >= ``num_leaves``) hold ``-inf`` and are never reported.
      num_leaves: static int ``L``, the number of real leaves per tree.
    """

    levels: tuple
    num_leaves: int

    @property
    def num_trees(self) -> int:
        return self.levels[0].shape[0]

    @property
    def padded(self) -> int:
        return self.levels[0].shape[1]

    @property
    def dtype(self):
        return self.levels[0].dtype


class Frontier(NamedTuple):
    """Result of a threshold query (leading tree axes are added by :func:`query_all`).

    Without overflow, ``indices[valid]`` is exactly ``{leaves with value > tau}`` and ``count`` is its
    size. With overflow, ``count`` is a lower bound on that size that exceeds ``capacity``.
    """

    indices: jax.Array  # shape=(capacity,), int32, ascending; unused slots = num_leaves (sentinel)
    valid: jax.Array  # shape=(capacity,), bool
    count: jax.Array  # shape=(), int32
    overflow: jax.Array  # shape=(), bool


class ForestFrontier(NamedTuple):
    """Result of :func:`query_forest`: (tree, leaf) pairs sorted by (tree, leaf).

    Without overflow, the valid pairs are exactly ``{(t, leaf): value > tau}`` and ``count`` is their
    number; with overflow, ``count`` is a lower bound on that number that exceeds ``capacity``.
    """

    tree: jax.Array  # shape=(capacity,), int32; unused slots = num_trees (sentinel)
    leaf: jax.Array  # shape=(capacity,), int32; unused slots = num_leaves (sentinel)
    valid: jax.Array  # shape=(capacity,), bool
    count: jax.Array  # shape=(), int32
    overflow: jax.Array  # shape=(), bool


def _parent_levels(level0: jax.Array) -> list:
    """All levels above ``level0`` (shape (..., P)), each the pairwise max of the one below."""
    levels = [level0]
    while levels[-1].shape[-1] > 1:
        x = levels[-1]
        levels.append(jnp.maximum(x[..., 0::2], x[..., 1::2]))
    return levels


def _pad_leaves(values: jax.Array, p: int) -> jax.Array:
    """``values`` (k, L) padded with ``-inf`` to (k, p) columns: a concatenation, no scatter."""
    extra = p - values.shape[1]
    if extra == 0:
        return values
    return jnp.concatenate([values, jnp.full((values.shape[0], extra), -jnp.inf, values.dtype)], axis=1)


@jax.jit
def _build(values: jax.Array) -> MaxTree:
    n_leaves = values.shape[1]
    return MaxTree(levels=tuple(_parent_levels(_pad_leaves(values, padded_size(n_leaves)))), num_leaves=n_leaves)


def build(values: jax.Array) -> MaxTree:
    """MAKEMAXTREE (Algorithm 7) for a batch of trees: ``values`` (T, L) -> :class:`MaxTree`.

    Costs O(T * L). Leaves are padded to a power of two with ``-inf`` (no scatter: the padding is
    concatenated). ``values`` must be float32 or float64 (:func:`jaxcorr._checks.check_dtype`:
    half precision is refused, integers become the default float dtype).
    """
    if not isinstance(values, jax.Array):
        values = jnp.asarray(values)
    _checks.check_dtype("values", values)
    if np.ndim(values) != 2:
        raise ValueError(f"values must be a 2-D array (trees, leaves), got shape {np.shape(values)}")
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(_checks.float_dtype(values))
    return _build(values)


def leaves(tree: MaxTree) -> jax.Array:
    """The ``(T, num_leaves)`` leaf values (padding removed)."""
    return lax.slice_in_dim(tree.levels[0], 0, tree.num_leaves, axis=1)  # static: no index constants


@jax.jit
def last_occurrence(idx: jax.Array) -> jax.Array:
    """Boolean mask, True where ``idx[j]`` does not occur again later in ``idx``.

    Used to resolve a repeated index in a batch update to its last occurrence, deterministically,
    before any scatter (JAX leaves the order of colliding scatters unspecified). O(k log k).
    """
    k = idx.shape[0]
    order = jnp.argsort(idx, stable=True)
    s = idx[order]
    last_sorted = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    # ``order`` is a permutation: its indices are unique (declared, so no scatter serialises them)
    return jnp.zeros((k,), bool).at[order].set(last_sorted, unique_indices=True)


def _set_path_one(levels, cols, vals):
    """Set leaves ``cols`` of ONE tree to ``vals`` and recompute their leaf-to-root paths.

    ``cols`` entries >= P are dropped. Parents are recomputed level by level from the final child
    level, so parents shared by several updated leaves receive identical writes.
    """
    levels = list(levels)
    levels[0] = levels[0].at[cols].set(vals, mode="drop")
    p = cols
    for lvl in range(1, len(levels)):
        p = p >> 1
        child = levels[lvl - 1]
        left = child.at[2 * p].get(mode="fill", fill_value=-jnp.inf)
        right = child.at[2 * p + 1].get(mode="fill", fill_value=-jnp.inf)
        levels[lvl] = levels[lvl].at[p].set(jnp.maximum(left, right), mode="drop")
    return tuple(levels)


@jax.jit
def set_leaves(tree: MaxTree, cols: jax.Array, vals: jax.Array) -> MaxTree:
    """Set leaf ``cols[j]`` of every tree ``t`` to ``vals[t, j]`` and recompute the paths (DTree UPDATE).

    Algorithm 1 / 11 lines 23-30: O(T * k * log P) work, vmapped across the trees. ``cols`` must be
    distinct among entries < P (see :func:`last_occurrence`); entries >= P are ignored. Works in
    place when ``tree`` is a ``lax.scan`` carry or a donated argument.
    """
    cols = jnp.asarray(cols, _I32)
    levels = jax.vmap(_set_path_one, in_axes=(0, None, 0))(tree.levels, cols, vals)
    return MaxTree(levels=levels, num_leaves=tree.num_leaves)


@jax.jit
def set_rows(tree: MaxTree, rows: jax.Array, vals: jax.Array) -> MaxTree:
    """Replace whole trees ``rows[j]`` by MAKEMAXTREE(``vals[j]``) (WTree UPDATE, Algorithm 14).

    ``vals`` has shape (k, num_leaves); O(k * P) work. ``rows`` must be distinct among entries
    < T; entries >= T are ignored.
    """
    rows = jnp.asarray(rows, _I32)
    new = _parent_levels(_pad_leaves(vals.astype(tree.dtype), tree.padded))
    levels = tuple(old.at[rows].set(nw, mode="drop") for old, nw in zip(tree.levels, new))
    return MaxTree(levels=levels, num_leaves=tree.num_leaves)


def _compact(ids, mask, cap: int, sentinel: int):
    """Stable compaction of ``ids[mask]`` into ``cap`` slots (rest = sentinel); returns (out, count)."""
    pos = lax.associative_scan(jnp.add, mask.astype(_I32)) - 1
    count = pos[-1] + 1
    tgt = jnp.where(mask & (pos < cap), pos, cap)
    out = jnp.full((cap,), sentinel, _I32).at[tgt].set(ids.astype(_I32), mode="drop")
    return out, count


#: Most levels descended per frontier step. A step reads the ``2**jump`` descendants of each
#: frontier node as one contiguous row (32 floats: two cache lines) and packs the row's comparisons
#: into one 32-bit mask, so the per-slot costs (the random row read, one prefix sum, one small
#: scatter) are paid once per five levels. On the 2-core CPU this is 2-2.7x faster than two levels
#: per step with per-candidate compaction at |S| ~ 1024 (m = 2^20, 8 trees), and 1.6x at |S| ~ 16k.
JUMP = 5


#: Largest level (all trees) whose rows a single-tree query addresses with flat int32 ids; above
#: it the query indexes (tree, row) pairs instead (a little slower on CPU, never overflows).
_FLAT_INDEX_LIMIT = 2**31 - 1


def _jumps(levels_down: int) -> list:
    """Step sizes from the start level to the leaves: the remainder first, then ``JUMP`` each."""
    full, rem = divmod(levels_down, JUMP)
    return ([rem] if rem else []) + [JUMP] * full


def _select_bit(bits, rank, width: int):
    """Position of the ``rank``-th (0-based) set bit of the uint32 ``bits`` (elementwise).

    Binary search over halves with popcounts; needs ``rank < popcount(bits)``.
    """
    pos = jnp.zeros_like(rank)
    half = width // 2
    while half >= 1:
        low = lax.population_count(bits & jnp.uint32((1 << half) - 1)).astype(_I32)
        high = rank >= low
        rank = jnp.where(high, rank - low, rank)
        bits = jnp.where(high, bits >> half, bits)
        pos = jnp.where(high, pos + half, pos)
        half //= 2
    return pos


def _descend(frontier, level, tau, jump: int, cap: int, t=None):
    """One frontier step: the passing descendants, ``jump`` levels down, of the frontier nodes.

    ``frontier`` holds ascending node ids of the level ``jump`` above ``level`` (sentinel: that
    level's node count, which reads ``-inf``). Row ``f`` of ``level`` viewed as ``(-1, 2**jump)``
    holds the descendants of node ``f``; their comparisons ``> tau`` become one bit mask per slot.
    The output is compacted stably by gathers, without a per-candidate scatter: a prefix sum of
    the popcounts gives each slot's first output position, one scatter-max marks those starts, a
    running max maps every output position to its slot, and the position's rank within the slot
    selects a bit of the mask. Returns ``cap`` ascending node ids of ``level`` (sentinel: its node
    count) and the number that passed (a lower bound on the leaves ``> tau`` under the frontier).
    With a tree index ``t``, ``level`` is the (T, s) level of all trees and only tree ``t``'s rows
    are read.
    """
    size = level.shape[-1]
    branch = 1 << jump
    if branch > 32:  # static: the comparisons of a row are packed into one uint32
        raise ValueError(f"a frontier step descends at most 5 levels, got {jump}")
    fill = dict(mode="fill", fill_value=-jnp.inf)
    if t is None:
        block = level.reshape(-1, branch).at[frontier].get(**fill)
    elif level.size <= _FLAT_INDEX_LIMIT:  # row f of tree t is row t * (s / branch) + f of all rows
        rows, per_tree = level.reshape(-1, branch), size // branch
        block = rows.at[jnp.where(frontier < per_tree, frontier + t * per_tree, rows.shape[0])].get(**fill)
    else:  # flat int32 ids would overflow: index (tree, row)
        block = level.reshape(level.shape[0], -1, branch).at[t, frontier].get(**fill)
    shifts = jnp.arange(branch, dtype=jnp.uint32)
    bits = jnp.sum((block > tau).astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32)
    per_slot = lax.population_count(bits).astype(_I32)
    incl = lax.associative_scan(jnp.add, per_slot)
    first = incl - per_slot
    passed = incl[-1]
    # ``first`` is nondecreasing; among the slots sharing a value p < passed the last one is the
    # slot whose passing descendants start at output p, so a scatter-max of slot ids marks it.
    if frontier.shape[0] == 1:  # one node (a small tree from its root): every output is its descendant
        slot = jnp.zeros((cap,), _I32)
    else:
        slots = jnp.arange(frontier.shape[0], dtype=_I32)
        mark = jnp.full((cap,), -1, _I32).at[first].max(slots, mode="drop", indices_are_sorted=True)
        slot = jnp.maximum(lax.cummax(mark), 0)
    k = jnp.arange(cap, dtype=_I32)
    pos = _select_bit(bits[slot], k - first[slot], branch)
    out = jnp.where(k < passed, branch * frontier[slot] + pos, size)
    return out, passed


def _start_level(sizes, capacity: int) -> int:
    """The level FIND's breadth-first search starts at (static): the largest level with at most
    ``capacity`` nodes, all of them in the frontier. When every leaf fits the capacity it starts up
    to JUMP levels higher instead and reaches the leaves in one step (their comparisons packed into
    bit masks), rather than compacting all leaves by a prefix sum and a scatter."""
    n_lv = len(sizes)
    start = next((lv for lv in range(n_lv) if sizes[lv] <= capacity), n_lv - 1)
    if start == 0 and n_lv > 1:
        start = min(n_lv - 1, JUMP)
    return start


def searches_every_leaf(num_leaves: int, capacity: int) -> bool:
    """Whether FIND on one tree of ``num_leaves`` leaves with this ``capacity`` tests every leaf.

    It does when the level it starts at (``_start_level``: all of that level's nodes in the
    frontier, as they fit the capacity) is at most ``JUMP`` levels above the leaves: one frontier
    step then reads every leaf under every node. Its result is then exactly the leaves ``> tau``,
    which :func:`query_all_mask` returns as a mask. Inside the active rows of training, where about
    one leaf in n fires, this is the usual case (capacity ~ 1.25 |A| / n >= |A| / 32).
    """
    p = padded_size(int(num_leaves))
    sizes = [p >> lv for lv in range(p.bit_length())]
    start = _start_level(sizes, int(capacity))
    return start <= JUMP and (start == 0 or sizes[start] <= capacity)


@functools.partial(jax.jit, static_argnames=("capacity",))
def query_all_mask(tree: MaxTree, tau, capacity: int):
    """FIND (Algorithm 2) in every tree where it tests every leaf (:func:`searches_every_leaf`), its
    result held as a (T, num_leaves) bool mask instead of compacted leaf ids.

    The same sets, count and overflow flag as :func:`query_all`'s frontier: the frontier starts
    with every node of a level at most JUMP levels above the leaves, so its one step tests every
    leaf, and what passes is ``leaves > tau``. Held as a mask, the fire sets need no compaction and
    their consumers (Algorithm 8 lines 13-23) no gather or scatter.

    Returns:
      ``(mask, count, overflow)``: (T, num_leaves) bool; (T,) int32 number of leaves ``> tau``; (T,)
      bool ``count > capacity`` (the frontier's overflow: the DDFN cap of the caller still applies).

    Raises:
      ValueError: FIND would not test every leaf at this capacity (use :func:`query_all`).
    """
    if not searches_every_leaf(tree.num_leaves, capacity):
        raise ValueError(f"FIND at capacity {capacity} does not test every one of {tree.num_leaves} leaves; "
                         "use query_all")
    mask = leaves(tree) > jnp.asarray(tau, tree.dtype)
    count = jnp.sum(mask, axis=1, dtype=_I32)
    return mask, count, count > min(capacity, tree.padded)


def _frontier(levels, tau, capacity: int, t=None):
    """FIND (Algorithm 2) breadth-first over 1-D ``levels`` (sizes s_l = s_0 >> l, leaves first),
    or over tree ``t`` of 2-D ``(T, s_l)`` levels, read in place (no level of tree ``t`` is copied).

    The search starts at the largest level with at most ``capacity`` nodes, all of them in the
    frontier, and descends up to ``JUMP`` levels per step (:func:`_descend`), keeping
    ``min(capacity, s_l)`` slots at each level it visits. The top level may hold several nodes (a
    forest); if even it has more than ``capacity``, it is tested and compacted first. Returns leaf
    ids (min(capacity, s_0),) with sentinel s_0, the count lower bound and the overflow flag.
    """
    start = _start_level([lv.shape[-1] for lv in levels], capacity)
    size = levels[start].shape[-1]
    count, overflow = jnp.zeros((), _I32), jnp.zeros((), bool)
    if size <= capacity and start > 0:
        frontier = jnp.arange(size, dtype=_I32)
    else:
        top = levels[start] if t is None else levels[start][t]
        frontier, count = _compact(jnp.arange(size, dtype=_I32), top > tau, min(capacity, size), size)
        overflow = count > capacity
    lv = start
    for jump in _jumps(start):
        lv -= jump
        cap = min(capacity, levels[lv].shape[-1])
        frontier, passed = _descend(frontier, levels[lv], tau, jump, cap, t)
        count = jnp.maximum(count, passed)
        overflow = overflow | (passed > cap)
    return frontier, count, overflow


def _frontier_reference(levels, tau, capacity: int):
    """Plain FIND (Algorithm 2), the reference beside :func:`_frontier`: one level per step.

    Over 1-D ``levels`` (sizes s_l = s_0 >> l, leaves first). The top level is tested whole; then,
    level by level, the two children of every frontier node are tested and the first
    ``min(capacity, s_l)`` passing ones, in ascending order, become the next frontier (sentinel s_l).
    No bit masks, no multi-level steps, no shared code with the fast path. Keeping the first
    passing nodes commutes with descending, so this returns the same ids and overflow flag as
    :func:`_frontier`, and the same count unless overflow (both counts then exceed ``capacity``).
    """
    top = levels[-1]
    size = top.shape[0]
    cap = min(capacity, size)
    count = jnp.sum(top > tau, dtype=_I32)
    overflow = count > cap
    frontier = jnp.nonzero(top > tau, size=cap, fill_value=size)[0].astype(_I32)
    for level in reversed(levels[:-1]):
        size = level.shape[0]
        cap = min(capacity, size)
        children = jnp.stack([2 * frontier, 2 * frontier + 1], axis=1).reshape(-1)
        passes = level.at[children].get(mode="fill", fill_value=-jnp.inf) > tau
        passed = jnp.sum(passes, dtype=_I32)
        keep = jnp.nonzero(passes, size=cap, fill_value=0)[0]
        frontier = jnp.where(jnp.arange(cap) < passed, children[keep], size).astype(_I32)
        count = jnp.maximum(count, passed)
        overflow = overflow | (passed > cap)
    return frontier, count, overflow


def _pad_to(x, capacity: int, fill):
    extra = capacity - x.shape[0]
    return x if extra == 0 else jnp.concatenate([x, jnp.full((extra,), fill, x.dtype)])


def _as_frontier(found, num_leaves: int, padded: int, capacity: int) -> Frontier:
    """A :class:`Frontier` of ``capacity`` slots from FIND's ``(ids, count, overflow)`` over one tree."""
    ids, count, overflow = found
    valid = ids < padded
    ids = _pad_to(jnp.where(valid, ids, num_leaves), capacity, num_leaves)
    return Frontier(indices=ids, valid=_pad_to(valid, capacity, False), count=count, overflow=overflow)


def _as_forest_frontier(found, tree: MaxTree, capacity: int) -> ForestFrontier:
    """A :class:`ForestFrontier` from FIND's ``(flat ids, count, overflow)`` over the flattened forest."""
    ids, count, overflow = found
    valid = ids < tree.num_trees * tree.padded
    t_idx = _pad_to(jnp.where(valid, ids // tree.padded, tree.num_trees), capacity, tree.num_trees)
    leaf = _pad_to(jnp.where(valid, ids % tree.padded, tree.num_leaves), capacity, tree.num_leaves)
    return ForestFrontier(tree=t_idx, leaf=leaf, valid=_pad_to(valid, capacity, False), count=count,
                          overflow=overflow)


def _query_one(levels, num_leaves: int, tau, capacity: int, t=None) -> Frontier:
    tau = jnp.asarray(tau, levels[0].dtype)
    return _as_frontier(_frontier(levels, tau, capacity, t), num_leaves, levels[0].shape[-1], capacity)


@functools.partial(jax.jit, static_argnames=("capacity",))
def _query(tree: MaxTree, t, tau, capacity: int) -> Frontier:
    return _query_one(tree.levels, tree.num_leaves, tau, capacity, jnp.asarray(t, _I32))


@functools.partial(jax.jit, static_argnames=("capacity",))
def _query_all(tree: MaxTree, tau, capacity: int) -> Frontier:
    tau = jnp.broadcast_to(jnp.asarray(tau, tree.dtype), (tree.num_trees,))
    return jax.vmap(_query_one, in_axes=(0, None, 0, None))(tree.levels, tree.num_leaves, tau, capacity)


def _flat_levels(tree: MaxTree) -> tuple:
    """The forest view: level ``l`` of all trees as one 1-D array of T * (P >> l) nodes (no copy)."""
    return tuple(lvl.reshape(-1) for lvl in tree.levels)


@functools.partial(jax.jit, static_argnames=("capacity",))
def _query_forest(tree: MaxTree, tau, capacity: int) -> ForestFrontier:
    found = _frontier(_flat_levels(tree), jnp.asarray(tau, tree.dtype), capacity)
    return _as_forest_frontier(found, tree, capacity)


def _cast(x, dtype):
    """``x`` in ``dtype``, strongly typed: host values converted by numpy and placed by an explicit
    ``jax.device_put`` (no implicit transfer), a conversion for JAX arrays and tracers of another or
    a weak dtype. Python scalars, numpy scalars and arrays of other dtypes then share one compiled
    query instead of one per (weak) type."""
    if isinstance(x, jax.Array):
        return x if x.dtype == dtype and not x.weak_type else lax.convert_element_type(x, dtype)
    return jax.device_put(np.asarray(x, dtype))


def query(tree: MaxTree, t, tau, capacity: int) -> Frontier:
    """Leaves of tree ``t`` with value strictly ``> tau`` (FIND, Algorithm 2/12/15).

    Args:
      tree: a :class:`MaxTree`.
      t: integer tree index in ``[0, num_trees)`` (may be traced; vmap over it works).
      tau: scalar threshold, not NaN (may be traced); cast to the tree dtype; strict ``>``. An
        infinite ``tau`` is allowed: ``-inf`` reports every leaf above ``-inf``, ``+inf`` none.
      capacity: static int >= 1, the most leaves reported.

    Returns:
      A :class:`Frontier` of length ``capacity``.

    Raises:
      IndexError: a concrete ``t`` out of range (it would read another tree's leaves).
      ValueError: a concrete NaN ``tau`` (nothing is ``> NaN``: the answer would be silently
        empty), a non-scalar ``t`` or ``tau``, or a non-integer ``t``.
      TypeError: ``capacity`` not a Python int.

    The checks look at concrete values only; under ``jit`` or ``vmap`` they cost nothing at run time,
    and a traced ``t`` out of range is not detected (the caller's index must be right by construction).
    """
    cap = _checks.validate_query_args(tau, capacity, t=t, num_trees=tree.num_trees, t_name="t",
                              n_name="num_trees", finite=False)
    return _query(tree, _cast(t, _I32), _cast(tau, tree.dtype), cap)


def query_all(tree: MaxTree, tau, capacity: int) -> Frontier:
    """:func:`query` on every tree at once; ``tau`` is a scalar or has shape (T,), not NaN.

    Fields of the result gain a leading axis of length T. Raises as :func:`query` does.
    """
    cap = _checks.validate_query_all_args(tau, capacity, num_trees=tree.num_trees, n_name="num_trees", finite=False)
    return _query_all(tree, _cast(tau, tree.dtype), cap)


def query_forest(tree: MaxTree, tau, capacity: int) -> ForestFrontier:
    """All (tree, leaf) pairs with value ``> tau`` across all trees, in one frontier of ``capacity``.

    The T trees are viewed as one forest: the flattened level ``l`` has T * (P >> l) nodes and the
    children of flat node ``f`` are ``2f`` and ``2f + 1``, so the search is output-sensitive over
    all trees together. Pairs come sorted by (tree, leaf).

    Args:
      tree: a :class:`MaxTree`.
      tau: scalar threshold, not NaN (may be traced), strict ``>``.
      capacity: static int >= 1, the most pairs reported.

    Returns:
      A :class:`ForestFrontier` (it unpacks as ``t, leaf, valid, count, overflow``).
    """
    cap = _checks.validate_query_args(tau, capacity, finite=False)
    return _query_forest(tree, _cast(tau, tree.dtype), cap)


@functools.partial(jax.jit, static_argnames=("capacity",))
def _query_reference(tree: MaxTree, t, tau, capacity: int) -> Frontier:
    levels = tuple(lvl[t] for lvl in tree.levels)
    tau = jnp.asarray(tau, tree.dtype)
    return _as_frontier(_frontier_reference(levels, tau, capacity), tree.num_leaves, tree.padded, capacity)


@functools.partial(jax.jit, static_argnames=("capacity",))
def _query_forest_reference(tree: MaxTree, tau, capacity: int) -> ForestFrontier:
    found = _frontier_reference(_flat_levels(tree), jnp.asarray(tau, tree.dtype), capacity)
    return _as_forest_frontier(found, tree, capacity)


def query_reference(tree: MaxTree, t, tau, capacity: int) -> Frontier:
    """:func:`query` by the plain level-by-level frontier (one level per step, no bit masks).

    The reference beside the fast path, for tests: the same ``indices``, ``valid`` and ``overflow``
    as :func:`query`, and the same ``count`` unless ``overflow`` (then both are lower bounds above
    ``capacity``). Slower (it copies tree ``t``'s levels and takes a step per level).
    """
    cap = _checks.validate_query_args(tau, capacity, t=t, num_trees=tree.num_trees, t_name="t",
                              n_name="num_trees", finite=False)
    return _query_reference(tree, _cast(t, _I32), _cast(tau, tree.dtype), cap)


def query_forest_reference(tree: MaxTree, tau, capacity: int) -> ForestFrontier:
    """:func:`query_forest` by the plain level-by-level frontier; agrees as :func:`query_reference` does."""
    cap = _checks.validate_query_args(tau, capacity, finite=False)
    return _query_forest_reference(tree, _cast(tau, tree.dtype), cap)


# ------------------------------------------------------------------------------ capacity policy


def bucket(x: int, minimum: int = 8) -> int:
    """``x`` rounded up to a multiple of ``max(minimum, padded_size(x) // 8)``.

    Static sizes drawn from few values (8 per power of two, so a slowly growing count recompiles
    rarely); above ``minimum`` the rounding adds less than ``padded_size(x) / 8``, under ``x / 4``.
    Host side.

    Examples:
      >>> from jaxcorr import maxtree
      >>> [maxtree.bucket(x) for x in (1, 8, 9, 100, 1000)]
      [8, 8, 16, 112, 1024]
    """
    x = max(_checks.check_int("x", x, minimum=0), 1)
    g = max(_checks.check_int("minimum", minimum, minimum=1), padded_size(x) // 8)
    return -(-x // g) * g


def allocate(counts, multiplier: float = 1.25, extra: int = 8, *, ceiling: int | None = None,
             previous: int | None = None) -> int:
    r"""The capacity policy: a static frontier capacity for measured set sizes (host side).

    The capacity is ``bucket(int(max(counts) * multiplier) + extra)``, at least twice ``previous``
    when that is given, and at most ``ceiling``, as jax-md's ``neighbor_list`` allocates. It runs
    outside ``jit``, on concrete counts; the result is a static argument of the jitted queries, so
    a new value recompiles and nothing else does. Used with the overflow flag the usual way:

    .. code-block:: python

        capacity = maxtree.allocate(counts, ceiling=m)          # counts measured at set-up
        while True:
            out = run_chunk(state, capacity)                     # jitted; capacity static
            if not out.overflow.any():
                break                                            # every set fit: keep the result
            capacity = maxtree.allocate(out.count, ceiling=m, previous=capacity)  # rerun the chunk

    Args:
      counts: a non-negative int or array of ints (for example a :class:`Frontier`'s ``count``):
        the set sizes to hold. After an overflow a count is only a lower bound, hence ``previous``.
      multiplier: headroom factor >= 1 on the largest count.
      extra: slots added after the multiplier (int >= 0), so small sets get room to grow too.
      ceiling: the most the capacity can usefully be (the set's universe, or a cap like DDFN's);
        ``None`` for no ceiling.
      previous: a capacity that overflowed; the result is then at least ``2 * previous`` (up to
        ``ceiling``), so a rerun loop ends after O(log(size)) reruns.

    Returns:
      A Python int >= 1 (also when ``counts`` is empty or zero).

    Raises:
      ValueError: a negative or non-integer count, a traced ``counts``, ``multiplier < 1``, or
        ``extra``, ``ceiling``, ``previous`` out of range.

    Examples:
      >>> from jaxcorr import maxtree
      >>> maxtree.allocate([3, 40, 17])            # bucket(int(40 * 1.25) + 8) = bucket(58)
      64
      >>> maxtree.allocate(40, ceiling=50)
      50
      >>> maxtree.allocate(70, previous=64)        # overflowed at 64: at least 128
      128
      >>> maxtree.allocate(0, multiplier=1, extra=0)
      8
    """
    if not _checks.is_concrete(counts):
        raise ValueError("counts must be concrete: allocate sizes static buffers outside jit")
    arr = np.asarray(counts)
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == object):
        raise ValueError(f"counts must be integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"counts must be >= 0, got {int(arr.min())}")
    if not (isinstance(multiplier, (int, float, np.integer, np.floating)) and math.isfinite(multiplier)
            and multiplier >= 1):
        raise ValueError(f"multiplier must be a finite number >= 1, got {multiplier!r}")
    extra = _checks.check_int("extra", extra, minimum=0)
    largest = int(arr.max()) if arr.size else 0
    cap = bucket(max(int(largest * multiplier) + extra, 1))
    if previous is not None:
        cap = max(cap, 2 * _checks.check_int("previous", previous, minimum=1))
    if ceiling is not None:
        cap = min(cap, _checks.check_int("ceiling", ceiling, minimum=1))
    return cap


def check_invariant(tree: MaxTree) -> bool:
    """True iff every parent equals the max of its two children and padding leaves are ``-inf``.

    Host-side (numpy) check for tests; not for hot paths.
    """
    levels = [np.asarray(lvl) for lvl in tree.levels]
    if not np.all(np.isneginf(levels[0][:, tree.num_leaves :])):
        return False
    for lo, hi in zip(levels[:-1], levels[1:]):
        if hi.shape[1] * 2 != lo.shape[1]:
            return False
        if not np.array_equal(hi, np.maximum(lo[:, 0::2], lo[:, 1::2])):
            return False
    return levels[-1].shape[1] == 1
