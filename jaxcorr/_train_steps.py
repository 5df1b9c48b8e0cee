r"""Jitted per-step kernels and chunk runners behind :func:`jaxcorr.train.fit` (private).

Four step functions, one per training method, each a pure function ``carry -> (carry, stats)`` that
``lax.scan`` runs ``chunk_len`` times inside one compiled executable:

- :func:`_dense_step`: plain GD on all ``m`` rows (the reference trajectory).
- :func:`_active_step`: the same GD on the compacted active rows ``A`` only, with the fire sets from
  the masked comparison ``<w_r, x_i> > b`` over (n, |A|): no trees in the loop (one fused pass for
  the forward pass and coefficients, one matrix product for the gradient, one for the new leaves).
- :func:`_dtree_step`: Algorithm 8 (Theorem 4.1) on the compacted active rows ``A``: ``n`` max-trees
  over the ``|A|`` leaves ``<w_r, x_i>``; fire sets ``S_{i,fire}`` from FIND (DTree QUERY, Lemma D.4)
  with a static per-point capacity and a sticky overflow flag; forward pass from the stored leaves
  (line 13); sparse gradient (lines 16-23); the optimizer step; the leaves of the changed rows are
  recomputed and the levels rebuilt (line 28, UPDATE for every changed neuron at once).
- :func:`_wtree_step`: Algorithm 9 (Theorem 4.2) on the same rows: ``|A|`` max-trees over ``n``
  leaves; each step queries :math:`\tilde S_{r,fire}` (WTree QUERY, Lemma D.8) and derives
  ``S_{i,fire} = {r : i in S~_r}`` (lines 12-17 / 37-46), then updates the trees of the changed rows.

Two ways to hold the trained rows (``cfg.span``):

- generic: ``W_A`` (|A|, d) and the optimizer state in parameter shape; leaves are recomputed as
  ``X W_A^T`` (O(|A| n d)).
- span: for optimizers that are linear in the gradient, independent of the parameters and identical
  on every coordinate by construction (:func:`jaxcorr.train.sgd`: SGD, momentum, Nesterov, with a
  constant or scheduled step size; never decided numerically), every update of row ``r`` is a combination of the ``x_i`` (the gradient
  row is :math:`\sum_i c_{ir} x_i`, Section 2). Then ``W_A = W_A(0) + K X`` with ``K`` (|A|, n), the
  optimizer runs on ``K`` with the coefficient gradient ``C^T``, and the leaves are
  ``<w_r, x_i> = IP0 + (K G)_{ri}`` with the n x n Gram matrix ``G = X X^T``: O(|A| n^2) per step,
  no ``d``.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxcorr import _linalg, maxtree


#: Number of times each chunk runner has been traced (tests use it to check "no recompilation").
TRACE_COUNTS: collections.Counter = collections.Counter()


class StepStats(NamedTuple):
    """Per-step outputs stacked by ``lax.scan`` (leading axis = steps of the chunk)."""

    loss: jax.Array  # shape=(), dtype of W: L(W(t)) (Definition 2.1)
    fire_mean: jax.Array  # shape=(), float32: mean_i k_{i,t} (Definition 2.4)
    fire_max: jax.Array  # shape=(), int32: max_i k_{i,t} (a lower bound > capacity on overflow)
    fire_union: jax.Array  # shape=(), int32: |union_i S_{i,fire}(t)|
    overflow: jax.Array  # shape=(), bool: some frontier overflowed at this step
    moved: jax.Array  # shape=(), bool: the idle-row guard fired (an idle row would move at this step)


class DenseConsts(NamedTuple):
    X: jax.Array  # shape=(n, d)
    y: jax.Array  # shape=(n,)
    a: jax.Array  # shape=(m,)
    b: jax.Array  # shape=()
    scale: jax.Array  # shape=(), 1/sqrt(m)


class CompactConsts(NamedTuple):
    X: jax.Array  # shape=(n, d)
    y: jax.Array  # shape=(n,)
    a: jax.Array  # shape=(L,): a_r for the active rows, 0 on padding rows
    b: jax.Array  # shape=()
    scale: jax.Array  # shape=(), 1/sqrt(m) with the FULL width m
    n_real: jax.Array  # shape=(), int32: number of real active rows |A| <= L
    gram: Any  # shape=(n, n) X X^T (span path) or None
    ip0: Any  # span path: initial leaves, (n, L) for dtree / (L, n) for wtree; else None
    ref: Any  # generic path: per row state leaf, the reference (idle) row; the guard compares to it


class Config(NamedTuple):
    """Static configuration of a chunk runner (hashable; a new value compiles a new executable)."""

    method: str  # "dense" | "active" | "dtree" | "wtree"
    optimizer: Any  # optax.GradientTransformation
    chunk_len: int
    capacity: int = 0  # dtree: per-point frontier capacity
    span: bool = False
    row_axes: tuple = ()  # per flattened optimizer state leaf: its row axis, or None
    kt: bool = False  # active span path: K and its state held transposed, (n, L), no transposes


def _stats(loss, counts, union, overflow, moved=None):
    return StepStats(
        loss=loss,
        fire_mean=jnp.mean(counts.astype(jnp.float32)),
        fire_max=jnp.max(counts).astype(jnp.int32),
        fire_union=union.astype(jnp.int32),
        overflow=overflow,
        moved=jnp.zeros((), bool) if moved is None else moved,
    )


def keep_dtypes(new_state, old_state):
    """``new_state`` with the dtypes of ``old_state`` (a scan carry must keep its types; optax may
    promote a counter under x64). Values are unchanged: the casts only undo a promotion."""
    return jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype) if n.dtype != o.dtype else n,
                                  new_state, old_state)


# --------------------------------------------------------------------------------------- dense
def _dense_step(cfg: Config, c: DenseConsts, carry):
    from jaxcorr.nn import loss_and_grad

    W, state = carry
    loss, grad, fire = loss_and_grad(W, c.a, c.X, c.y, c.b, c.scale)
    updates, new_state = cfg.optimizer.update(grad, state, W)
    state = keep_dtypes(new_state, state)
    W = optax.apply_updates(W, updates)
    stats = _stats(loss, jnp.sum(fire, axis=1), jnp.sum(jnp.any(fire, axis=0)), jnp.zeros((), bool))
    return (W, state), stats


# ------------------------------------------------------------------------------------- compact
def _optimizer_step(cfg: Config, c: CompactConsts, P, state, coef_t):
    """Apply the optimizer to the active rows; return ``(P, state, moved)``.

    ``moved`` is the idle-row guard (generic path, :mod:`jaxcorr._optim`): the last row is a padding
    row (zero gradient, reference state); if its update is not zero or its state leaves the
    reference, every row outside ``A`` would move at this step. The span path needs no guard: the
    optimizer is linear by construction, so a zero coefficient row stays zero.
    """
    if cfg.span:
        updates, new_state = cfg.optimizer.update(coef_t, state, P)  # gradient coefficients (L, n)
        return optax.apply_updates(P, updates), keep_dtypes(new_state, state), jnp.zeros((), bool)
    grad = _linalg.matmul(coef_t, c.X)  # (L, d): rows a_r/sqrt(m) sum_i e_i x_i
    return apply_rows(cfg, c, P, state, grad)


def apply_rows(cfg: Config, c: CompactConsts, P, state, grad):
    """The optimizer on the rows ``P`` (L, d) with gradient ``grad``, and the idle-row guard.

    The guard reads the last row of the new ``P`` and state (carry outputs, so no extra buffer): the
    padding row's parameters are 0 and stay 0 exactly when its update is zero (``0 + u == 0`` iff
    ``u == 0``; an update too small for the dtype also leaves every idle row unchanged), and a NaN
    shows as ``NaN != 0``.
    """
    updates, new_state = cfg.optimizer.update(grad, state, P)
    new_state = keep_dtypes(new_state, state)
    P = optax.apply_updates(P, updates)
    moved = jnp.any(P[-1] != 0)
    rows = [x for x, ax in zip(jax.tree_util.tree_leaves(new_state), cfg.row_axes) if ax is not None]
    for x, ax, r in zip(rows, [ax for ax in cfg.row_axes if ax is not None], c.ref):
        moved = moved | jnp.any(jnp.take(x, x.shape[ax] - 1, axis=ax) != r)
    return P, new_state, moved


def new_leaves(cfg: Config, c: CompactConsts, P):
    """The inner products ``<w_r, x_i>`` of the active rows, (L, n), without ``ip0`` on the span path."""
    if cfg.span:
        return _linalg.matmul(P, c.gram)  # (L, n): (K G)_{ri}
    return _linalg.inner(P, c.X)  # (L, n)


def _mask_rows(ip, row_axis, n_real):
    """Padding rows (index >= n_real) get -inf leaves, so they never fire."""
    rows = lax.broadcasted_iota(jnp.int32, ip.shape, row_axis)
    return jnp.where(rows < n_real, ip, -jnp.inf)


def fire_forward(levels, a, b, scale, capacity: int):
    """Algorithm 8 lines 12-13 from the DTree ``levels`` (one tree per point, leaves = rows of A).

    Line 12: S_{i,fire} <- CDT.QUERY(i, b) for every i (Lemma D.4). Line 13: the forward pass
    u_i = 1/sqrt(m) sum_{r in S_i} a_r sigma_b(<w_r, x_i>) from the stored inner products.
    Returns ``(frontier, a_f, u)`` with ``a_f`` the output weights at the frontier slots.
    """
    nl = a.shape[0]
    fr = maxtree.query_all(maxtree.MaxTree(levels=levels, num_leaves=nl), b, capacity=capacity)
    safe = jnp.minimum(fr.indices, nl - 1)
    ip_f = jnp.take_along_axis(levels[0], safe, axis=1)  # stored <w_r, x_i>, r in S_{i,fire}
    a_f = a[safe]
    u = jnp.sum(jnp.where(fr.valid, (ip_f - b) * a_f, 0), axis=1) * scale
    return fr, a_f, u


def fire_coefficients(fr, a_f, e_scaled, num_rows: int, dtype):
    """Algorithm 8 lines 16-23: P_{i,r} (u_i - y_i) on the fire sets only, scattered to (n, L).

    ``e_scaled`` is ``(u - y) / sqrt(m)``. Returns the (n, L) matrix and the fire columns
    (``num_rows`` in unused slots).
    """
    coef = jnp.where(fr.valid, a_f * e_scaled[:, None], 0)
    cols = jnp.where(fr.valid, fr.indices, num_rows)
    rows = lax.broadcasted_iota(jnp.int32, cols.shape, 0)
    C = jnp.zeros((cols.shape[0], num_rows), dtype).at[rows, cols].set(coef, mode="drop")
    return C, cols


def _dtree_step(cfg: Config, c: CompactConsts, carry):
    levels, P, state = carry
    nl = c.a.shape[0]
    fr, a_f, u = fire_forward(levels, c.a, c.b, c.scale, cfg.capacity)  # lines 12-13
    e = u - c.y
    loss = 0.5 * jnp.sum(e * e)
    C, cols = fire_coefficients(fr, a_f, e * c.scale, nl, c.X.dtype)  # lines 16-23
    union = jnp.sum(jnp.zeros((nl,), bool).at[cols].set(True, mode="drop"))
    # line 24 (any optax optimizer) and lines 26-29 (UPDATE of the changed rows: new leaves, levels)
    if cfg.kt:  # span path with K^T (n, L): C is K's gradient as is, leaves IP0 + G K^T; no transposes
        P, state, moved = _kt_update(cfg, P, state, C)
        ip = c.ip0 + _linalg.matmul(c.gram, P)
    else:
        P, state, moved = _optimizer_step(cfg, c, P, state, C.T)
        ipT = new_leaves(cfg, c, P)
        ip = ipT.T if c.ip0 is None else c.ip0 + ipT.T
    levels = maxtree.build(_mask_rows(ip, 1, c.n_real)).levels
    stats = _stats(loss, fr.count, union, jnp.any(fr.overflow), moved)
    return (levels, P, state), stats


def _kt_update(cfg: Config, P, state, coef):
    """The span-path optimizer on ``P = K^T`` (n, L) with K's gradient ``coef`` (n, L), and no guard:
    :func:`jaxcorr.train.sgd` (SGD / momentum / Nesterov) acts coordinate-wise, so the transposed
    layout changes nothing, and it is linear, so a zero coefficient column stays zero."""
    updates, new_state = cfg.optimizer.update(coef, state, P)
    return optax.apply_updates(P, updates), keep_dtypes(new_state, state), jnp.zeros((), bool)


def _wtree_step(cfg: Config, c: CompactConsts, carry):
    levels, P, state = carry
    n = c.X.shape[0]
    tree = maxtree.MaxTree(levels=levels, num_leaves=n)
    # Algorithm 9 lines 13 / 42: S~_{r,fire} <- CWT.QUERY(r, b) (Lemma D.8); capacity n never overflows.
    fr = maxtree.query_all(tree, c.b, capacity=n)
    # lines 14-15 / 43-44: S_{i,fire}.ADD(r) for i in S~_r, as an (L, n) membership matrix.
    member = jnp.any(fr.indices[:, :, None] == jnp.arange(n, dtype=jnp.int32)[None, None, :], axis=1)
    ipT = levels[0][:, :n]
    # lines 21-23: forward pass over the fire sets
    u = _linalg.matmul(c.a, jnp.where(member, ipT - c.b, 0)) * c.scale
    e = u - c.y
    loss = 0.5 * jnp.sum(e * e)
    coef_t = jnp.where(member, c.a[:, None] * (e * c.scale)[None, :], 0)  # lines 25-32, (L, n)
    counts = jnp.sum(member, axis=0)
    union = jnp.sum(jnp.any(member, axis=1))
    # line 33 (optimizer) and line 41 (CWT.UPDATE for every changed row: rebuild its tree)
    P, state, moved = _optimizer_step(cfg, c, P, state, coef_t)
    ipT_new = new_leaves(cfg, c, P)
    ipT_new = ipT_new if c.ip0 is None else c.ip0 + ipT_new
    levels = maxtree.build(_mask_rows(ipT_new, 0, c.n_real)).levels
    stats = _stats(loss, counts, union, jnp.zeros((), bool), moved)
    return (levels, P, state), stats


def active_forward(ip, a, b, y, scale, n_real):
    """Fire sets, forward pass and coefficients from the leaves ``ip`` (n, L) by masked comparison.

    ``S_{i,fire} = {r < n_real : <w_r, x_i> > b}`` (Definition 2.4, strict); ``u_i`` as in Algorithm 8
    line 13 and the coefficients ``P_{i,r} (u_i - y_i) / sqrt(m)`` of lines 16-23, all as masked
    elementwise passes over (n, L) (padding rows ``r >= n_real`` never fire). Returns
    ``(e, coef (n, L), fire (n, L) bool)`` with ``e = u - y``.

    Memory traffic: the comparison is made once, into ``relu = sigma_b(<w_r, x_i>)`` clamped below
    by the dtype's smallest normal number on the fire set, so ``relu > 0`` exactly where a neuron
    fires (also where ``ip - b`` would be subnormal or flushed to zero). ``fire``, the coefficients
    and the statistics are read off this one materialised (n, L) array instead of recomputing
    ``ip > b`` from ``ip``'s operands in every consumer (XLA fuses an elementwise producer into each
    consumer: at |A| = 2^18 rows that re-read two (n, L) arrays three more times per step). The
    clamp changes ``u`` only where ``0 < ip - b < tiny``, by less than ``tiny |a_r| / sqrt(m)``.
    """
    col = lax.broadcasted_iota(jnp.int32, ip.shape, 1)
    relu = jnp.where((ip > b) & (col < n_real), jnp.maximum(ip - b, jnp.finfo(ip.dtype).tiny), 0)
    fire = relu > 0
    u = _linalg.matmul(relu, a) * scale
    e = u - y
    coef = jnp.where(fire, a[None, :] * (e * scale)[:, None], 0)
    return e, coef, fire


def _active_step(cfg: Config, c: CompactConsts, carry):
    """Exact GD on the active rows with masked fire sets (``method="active"``): no trees, no scatter."""
    P, state = carry
    if cfg.kt:  # P = K^T (n, L): <w_r, x_i> = IP0 + (G K^T)_{ir}, and the coefficients are K's gradient
        ip = c.ip0 + _linalg.matmul(c.gram, P)
    elif cfg.span:
        ip = c.ip0 + _linalg.inner(c.gram, P)
    else:
        ip = _linalg.inner(c.X, P)  # (n, L)
    e, coef, fire = active_forward(ip, c.a, c.b, c.y, c.scale, c.n_real)
    if cfg.kt:
        P, state, moved = _kt_update(cfg, P, state, coef)
    else:
        P, state, moved = _optimizer_step(cfg, c, P, state, coef.T)
    stats = _stats(0.5 * jnp.sum(e * e), jnp.sum(fire, axis=1), jnp.sum(jnp.any(fire, axis=0)),
                   jnp.zeros((), bool), moved)
    return (P, state), stats


_STEPS = {"dense": _dense_step, "active": _active_step, "dtree": _dtree_step, "wtree": _wtree_step}


def _run_chunk(cfg: Config, carry, consts):
    TRACE_COUNTS[cfg.method] += 1
    step = _STEPS[cfg.method]

    def body(carry, _):
        return step(cfg, consts, carry)

    return lax.scan(body, carry, None, length=cfg.chunk_len)


_EXECUTABLES: "collections.OrderedDict" = collections.OrderedDict()
_MAX_EXECUTABLES = 64


def signature(tree):
    """The static part of a pytree of arrays: its structure and each leaf's shape and dtype."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in leaves)


#: Problems with fewer leaf values than this compile with LLVM optimisation off: compiling then
#: costs about half as long and dominates the run time anyway (this keeps the test suite fast).
FAST_COMPILE_BELOW = 1 << 12
_FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}


def compiled_runner(cfg: Config, carry, consts, size: int | None = None):
    """The compiled chunk runner for ``cfg`` and these argument shapes (cached at module level).

    Compiling happens once per (config, shapes, dtypes); later ``fit`` calls with the same static
    configuration reuse the executable without tracing (see ``TRACE_COUNTS``). ``size`` (number of
    stored inner products, n x rows) below :data:`FAST_COMPILE_BELOW` selects a quicker compile.
    """
    fast = size is not None and size < FAST_COMPILE_BELOW
    key = (cfg, fast, signature(carry), signature(consts))
    return cached_compile(_EXECUTABLES, key, lambda: functools.partial(_run_chunk, cfg), (carry, consts), fast)


def cached_compile(cache, key, make_fn, args, fast: bool, max_entries: int = _MAX_EXECUTABLES):
    """``jit(make_fn())`` lowered for ``args`` and compiled, kept in the LRU dict ``cache`` by ``key``
    (at most ``max_entries`` entries); ``fast`` selects the quicker compile options."""
    ex = cache.get(key)
    if ex is None:
        ex = jax.jit(make_fn()).lower(*args).compile(_FAST_COMPILE_OPTIONS if fast else None)
        cache[key] = ex
        while len(cache) > max_entries:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return ex
