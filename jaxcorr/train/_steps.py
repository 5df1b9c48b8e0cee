r"""The step functions behind :func:`jaxcorr.train.run_chunk`, one per method, for one device or a mesh.

Four step functions, one per training method, each a pure function ``carry -> (carry, stats)`` that
``lax.scan`` runs for a chunk of steps inside one ``jax.jit`` (:func:`run`). Each is written once for
one device and for a mesh split by data points (:mod:`jaxcorr.sharding`): the sums over points are
the collectives of a :class:`jaxcorr.sharding.Axis`, identities on one device, and the step runs
under ``jax.shard_map`` when a mesh is given. Padding points (a mesh whose device count does not
divide ``n``) carry ``valid = False`` and are masked; on one device ``valid`` is None and no mask is
traced.

- :func:`_dense_step`: plain GD on all ``m`` rows (the reference trajectory).
- :func:`_active_step`: the same GD on the compacted active rows ``A`` only, with the fire sets from
  the masked comparison ``<w_r, x_i> > b`` over (n, |A|): no trees in the loop (one fused pass for
  the forward pass and coefficients, one matrix product for the gradient, one for the new leaves).
- :func:`_dtree_step`: Algorithm 8 (Theorem 4.1) on the compacted active rows ``A``: ``n`` max-trees
  over the ``|A|`` leaves ``<w_r, x_i>``; fire sets ``S_{i,fire}`` from FIND (DTree QUERY, Lemma D.4)
  with a static per-point capacity and a sticky overflow flag, held as a mask where FIND at that
  capacity tests every leaf (the usual case inside A: :func:`jaxcorr.maxtree.query_all_mask`), else
  as leaf ids; forward pass from the stored leaves (line 13); the gradient over the fire sets (lines
  16-23); the optimizer step; the leaves of the changed rows are recomputed and the levels rebuilt
  (line 28, UPDATE for every changed neuron at once).
- :func:`_wtree_step`: Algorithm 9 (Theorem 4.2) on the same rows: ``|A|`` max-trees over ``n``
  leaves; each step queries :math:`\tilde S_{r,fire}` (WTree QUERY, Lemma D.8) and derives
  ``S_{i,fire} = {r : i in S~_r}`` (lines 12-17 / 37-46), then updates the trees of the changed rows.

Two ways to hold the trained rows (``cfg.span``):

- generic: ``W_A`` (|A|, d) and the optimizer state in parameter shape; leaves are recomputed as
  ``X W_A^T`` (O(|A| n d)).
- span: for optimizers that are linear in the gradient, independent of the parameters and identical
  on every coordinate by construction (:func:`jaxcorr.train.sgd`: SGD, momentum, Nesterov, with a
  constant or scheduled step size; never decided numerically), every update of row ``r`` is a combination of the
  ``x_i`` (the gradient
  row is :math:`\sum_i c_{ir} x_i`, Section 2). Then ``W_A = W_A(0) + K X`` with ``K`` (|A|, n), the
  optimizer runs on ``K`` with the coefficient gradient ``C^T``, and the leaves are
  ``<w_r, x_i> = IP0 + (K G)_{ri}`` with the n x n Gram matrix ``G = X X^T``: O(|A| n^2) per step,
  no ``d``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxcorr import _linalg, maxtree, methods
from jaxcorr.sharding import Axis
from jaxcorr.train import _guard
from jaxcorr.train._state import CompactConsts, DenseConsts, StepConfig, StepStats

__all__ = ["run", "compile", "keep_dtypes", "active_forward", "fire_forward", "fire_coefficients"]


def _stats(ax: Axis, c, e, counts, hit, overflow, moved=None, rows=None):
    """Step statistics, summed / maxed over the point blocks (scalar collectives; none on one device).

    ``e`` are the residuals (0 on padding points), ``counts`` the fire-set sizes, ``hit`` an int
    vector marking the rows that fire for some point, ``overflow`` per point. ``rows`` are the
    trained rows this step started from: if one holds a NaN or an infinity (an overflowing step
    size), the loss is NaN, as the dense loss is, instead of the finite loss of the rows that still
    fire (a NaN row never fires: ``NaN > b`` is False).
    """
    if c.valid is None:
        fire_mean = jnp.mean(counts.astype(jnp.float32))
        fire_max, over = jnp.max(counts), jnp.any(overflow)
    else:
        counts = jnp.where(c.valid, counts, 0)
        fire_mean = ax.psum(jnp.sum(counts)).astype(jnp.float32) / c.n_points
        fire_max = ax.pmax(jnp.max(counts))
        over = ax.pmax(jnp.any(overflow & c.valid).astype(jnp.int32)) > 0
    loss = 0.5 * jnp.sum(e * e)
    if rows is not None:  # a NaN on one block reaches every block through the psum
        loss = jnp.where(jnp.all(jnp.isfinite(rows)), loss, jnp.nan)
    return StepStats(
        loss=ax.psum(loss),  # collective: the loss sums over points
        fire_mean=fire_mean,
        fire_max=fire_max.astype(jnp.int32),
        fire_union=jnp.sum(ax.pmax(hit)).astype(jnp.int32),  # |U_i S_{i,fire}|
        overflow=over,
        moved=jnp.zeros((), bool) if moved is None else moved,
    )


def keep_dtypes(new_state, old_state):
    """``new_state`` with the dtypes of ``old_state`` (a scan carry must keep its types; optax may
    promote a counter under x64). Values are unchanged: the casts only undo a promotion."""
    return jax.tree_util.tree_map(lambda n, o: n.astype(o.dtype) if n.dtype != o.dtype else n,
                                  new_state, old_state)


# --------------------------------------------------------------------------------------- dense
def _dense_step(cfg: StepConfig, ax: Axis, c: DenseConsts, carry):
    from jaxcorr.nn import loss_and_grad

    W, state, levels = carry
    loss, grad, fire = loss_and_grad(W, c.a, c.X, c.y, c.b, c.scale)
    updates, new_state = cfg.optimizer.update(grad, state, W)
    state = keep_dtypes(new_state, state)
    W = optax.apply_updates(W, updates)
    stats = StepStats(loss=loss, fire_mean=jnp.mean(jnp.sum(fire, axis=1).astype(jnp.float32)),
                      fire_max=jnp.max(jnp.sum(fire, axis=1)).astype(jnp.int32),
                      fire_union=jnp.sum(jnp.any(fire, axis=0)).astype(jnp.int32),
                      overflow=jnp.zeros((), bool), moved=jnp.zeros((), bool))
    return (W, state, levels), stats


# ------------------------------------------------------------------------------------- compact
def _optimizer_step(cfg: StepConfig, ax: Axis, c: CompactConsts, P, state, coef_t):
    """Line 24 (the optimizer) on the active rows from the coefficients ``coef_t`` (L, n); returns
    ``(P, state, moved)``.

    The one collective of a step sits here: the gradient of a neuron sums over points (``psum`` of
    the (L, d) rows); on the span path nothing (``K``'s columns are this block's points).
    ``moved`` is the idle-row guard (generic path, :mod:`jaxcorr.train._linearity`): the last row is a padding
    row (zero gradient, reference state); if its update is not zero or its state leaves the
    reference, every row outside ``A`` would move at this step. The span path needs no guard: the
    optimizer is linear by construction, so a zero coefficient row stays zero.
    """
    if cfg.span:
        updates, new_state = cfg.optimizer.update(coef_t, state, P)  # gradient coefficients (L, n)
        return optax.apply_updates(P, updates), keep_dtypes(new_state, state), jnp.zeros((), bool)
    grad = ax.psum(_linalg.matmul(coef_t, c.X))  # (L, d): rows a_r/sqrt(m) sum_i e_i x_i
    return apply_rows(cfg, c, P, state, grad)


def apply_rows(cfg: StepConfig, c: CompactConsts, P, state, grad):
    """The optimizer on the rows ``P`` (L, d) with gradient ``grad``, and the idle-row guard.

    The guard reads the last row of the new ``P`` and state (carry outputs, so no extra buffer): the
    padding row's parameters are 0 and stay 0 exactly when its update is zero (``0 + u == 0`` iff
    ``u == 0``; an update too small for the dtype also leaves every idle row unchanged), and a NaN
    shows as ``NaN != 0``. It also fires when a sum over the rows inside the update adds a non-zero
    summand from the padding row (:mod:`jaxcorr.train._guard`): dense would add it ``m - |A|`` times.
    """
    updates, new_state, idle_sum = _guard.update(cfg.optimizer, grad, state, P)
    new_state = keep_dtypes(new_state, state)
    P = optax.apply_updates(P, updates)
    moved = jnp.any(P[-1] != 0) | idle_sum
    rows = [x for x, ax in zip(jax.tree_util.tree_leaves(new_state), cfg.row_axes) if ax is not None]
    for x, ax, r in zip(rows, [ax for ax in cfg.row_axes if ax is not None], c.ref):
        last = lax.index_in_dim(x, x.shape[ax] - 1, axis=ax, keepdims=False)  # a static slice, no gather
        moved = moved | jnp.any(last != r)
    return P, new_state, moved


def _point_leaves(cfg: StepConfig, ax: Axis, c: CompactConsts, P):
    """This block's leaves ``<w_r, x_i>`` (n, L), without masks.

    Span path: ``IP0 + (K G)^T``; the product sums over all points ``j``, so on a mesh each block
    forms its partial (L, n_pad) product and one ``psum_scatter`` sums and splits it (collective).
    """
    if cfg.transposed:  # P = K^T (n, L): <w_r, x_i> = IP0 + (G K^T)_{ir}
        return c.ip0 + _linalg.matmul(c.gram, P)
    if cfg.span:
        ipT = ax.psum_scatter(_linalg.matmul(P, c.gram), 1)  # (L, n): sum over j of K_rj G_ji
        return c.ip0 + ipT.T
    return _linalg.inner(c.X, P)  # (n, L)


def _mask_points(c: CompactConsts, ip, fill):
    """``ip`` (n, L) with padding points (mesh only) set to ``fill``."""
    return ip if c.valid is None else jnp.where(c.valid[:, None], ip, fill)


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
    """Algorithm 8 lines 16-23: trained{i,r} (u_i - y_i) on the fire sets only, scattered to (n, L).

    ``e_scaled`` is ``(u - y) / sqrt(m)``. Returns the (n, L) matrix and the fire columns
    (``num_rows`` in unused slots).
    """
    coef = jnp.where(fr.valid, a_f * e_scaled[:, None], 0)
    cols = jnp.where(fr.valid, fr.indices, num_rows)
    rows = lax.broadcasted_iota(jnp.int32, cols.shape, 0)
    C = jnp.zeros((cols.shape[0], num_rows), dtype).at[rows, cols].set(coef, mode="drop")
    return C, cols


def _fire_sets_from_ids(cfg: StepConfig, c: CompactConsts, levels):
    """Lines 12-23 with the fire sets as FIND's leaf ids: ``(e, C (n, L), hit, count, overflow)``."""
    nl = c.a.shape[0]
    fr, a_f, u = fire_forward(levels, c.a, c.b, c.scale, cfg.capacity)  # lines 12-13, local
    e = u - c.y if c.valid is None else jnp.where(c.valid, u - c.y, 0)
    C, cols = fire_coefficients(fr, a_f, e * c.scale, nl, c.X.dtype)  # lines 16-23, (n, L)
    hit = jnp.zeros((nl,), jnp.int32).at[cols].set(1, mode="drop")
    return e, C, hit, fr.count, fr.overflow


def _fire_sets_as_mask(cfg: StepConfig, c: CompactConsts, levels):
    """Lines 12-23 with the fire sets as a mask (:func:`jaxcorr.maxtree.query_all_mask`: FIND at this
    capacity tests every leaf), the forward pass from the stored leaves: no gather, no scatter."""
    tree = maxtree.MaxTree(levels=levels, num_leaves=c.a.shape[0])
    fire, count, overflow = maxtree.query_all_mask(tree, c.b, cfg.capacity)  # line 12
    ip = maxtree.leaves(tree)  # the stored <w_r, x_i>
    u = _linalg.matmul(jnp.where(fire, ip - c.b, 0), c.a) * c.scale  # line 13
    e = u - c.y if c.valid is None else jnp.where(c.valid, u - c.y, 0)
    C = jnp.where(fire, c.a[None, :] * (e * c.scale)[:, None], 0)  # lines 16-23
    return e, C, jnp.any(fire, axis=0).astype(jnp.int32), count, overflow


def _dtree_step(cfg: StepConfig, ax: Axis, c: CompactConsts, carry):
    """One step of Algorithm 8 (Theorem 4.1) on the active rows, for this block's points.

    FIND's fire sets come as a mask where its search tests every leaf at this capacity (the usual
    case inside A, :func:`jaxcorr.maxtree.searches_every_leaf`), else as leaf ids."""
    P, state, levels = carry
    nl = c.a.shape[0]
    as_mask = maxtree.searches_every_leaf(nl, cfg.capacity)
    e, C, hit, count, overflow = (_fire_sets_as_mask if as_mask else _fire_sets_from_ids)(cfg, c, levels)
    # line 24 (any optax optimizer) and lines 26-29 (UPDATE of the changed rows: new leaves, levels)
    if cfg.transposed:  # span path with K^T (n, L): C is K's gradient as is; no transposes
        P, state, moved = _transposed_update(cfg, P, state, C)
    else:
        P, state, moved = _optimizer_step(cfg, ax, c, P, state, C.T)
    ip = _mask_points(c, _point_leaves(cfg, ax, c, P), -jnp.inf)
    levels = maxtree.build(_mask_rows(ip, 1, c.n_real)).levels
    return (P, state, levels), _stats(ax, c, e, count, hit, overflow, moved, rows=carry[0])


def _transposed_update(cfg: StepConfig, P, state, coef):
    """The span-path optimizer on ``P = K^T`` (n, L) with K's gradient ``coef`` (n, L), and no guard:
    :func:`jaxcorr.train.sgd` (SGD / momentum / Nesterov) acts coordinate-wise, so the transposed
    layout changes nothing, and it is linear, so a zero coefficient column stays zero."""
    updates, new_state = cfg.optimizer.update(coef, state, P)
    return optax.apply_updates(P, updates), keep_dtypes(new_state, state), jnp.zeros((), bool)


def _wtree_step(cfg: StepConfig, ax: Axis, c: CompactConsts, carry):
    """One step of Algorithm 9 (Theorem 4.2) on the active rows (one device)."""
    P, state, levels = carry
    n = c.X.shape[0]
    tree = maxtree.MaxTree(levels=levels, num_leaves=n)
    # Algorithm 9 lines 13 / 42: S~_{r,fire} <- CWT.QUERY(r, b) (Lemma D.8); capacity n never overflows.
    fr = maxtree.query_all(tree, c.b, capacity=n)
    # lines 14-15 / 43-44: S_{i,fire}.ADD(r) for i in S~_r, as an (L, n) membership matrix.
    member = _members(fr, n)
    ipT = levels[0][:, :n]
    # lines 21-23: forward pass over the fire sets
    u = _linalg.matmul(c.a, jnp.where(member, ipT - c.b, 0)) * c.scale
    e = u - c.y
    coef_t = jnp.where(member, c.a[:, None] * (e * c.scale)[None, :], 0)  # lines 25-32, (L, n)
    hit = jnp.any(member, axis=1).astype(jnp.int32)
    # line 33 (optimizer) and line 41 (CWT.UPDATE for every changed row: rebuild its tree)
    P, state, moved = _optimizer_step(cfg, ax, c, P, state, coef_t)
    ipT_new = _linalg.matmul(P, c.gram) if cfg.span else _linalg.inner(P, c.X)
    ipT_new = ipT_new if c.ip0 is None else c.ip0 + ipT_new
    levels = maxtree.build(_mask_rows(ipT_new, 0, c.n_real)).levels
    no = jnp.zeros((n,), bool)
    return (P, state, levels), _stats(ax, c, e, jnp.sum(member, axis=0), hit, no, moved, rows=carry[0])


def _members(fr, n: int):
    """(L, n) bool: point ``i`` is in tree ``r``'s frontier ``fr`` (ids ``< n``, sentinel ``n``).

    For ``n <= 32`` the ids of a tree become one uint32 bit mask, read back bit by bit: two passes
    over (L, n) instead of comparing every slot with every point, (L, n, n)."""
    if n > 32:
        return jnp.any(fr.indices[:, :, None] == jnp.arange(n, dtype=jnp.int32)[None, None, :], axis=1)
    one = jnp.uint32(1)
    ids = jnp.minimum(fr.indices, n - 1).astype(jnp.uint32)
    bits = jnp.sum(jnp.where(fr.valid, one << ids, 0), axis=1, dtype=jnp.uint32)
    return ((bits[:, None] >> jnp.arange(n, dtype=jnp.uint32)[None, :]) & one) == one


def active_forward(ip, a, b, y, scale, n_real):
    """Fire sets, forward pass and coefficients from the leaves ``ip`` (n, L) by masked comparison.

    ``S_{i,fire} = {r < n_real : <w_r, x_i> > b}`` (Definition 2.4, strict); ``u_i`` as in Algorithm 8
    line 13 and the coefficients ``trained{i,r} (u_i - y_i) / sqrt(m)`` of lines 16-23, all as masked
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


def _active_step(cfg: StepConfig, ax: Axis, c: CompactConsts, carry):
    """Exact GD on the active rows with masked fire sets (``method="active"``): no trees, no scatter."""
    P, state, levels = carry
    ip = _mask_points(c, _point_leaves(cfg, ax, c, P), -jnp.inf)  # padding points never fire
    e, coef, fire = active_forward(ip, c.a, c.b, c.y, c.scale, c.n_real)
    if c.valid is not None:
        e, coef = jnp.where(c.valid, e, 0), jnp.where(c.valid[:, None], coef, 0)
    if cfg.transposed:
        P, state, moved = _transposed_update(cfg, P, state, coef)
    else:
        P, state, moved = _optimizer_step(cfg, ax, c, P, state, coef.T)
    hit = jnp.any(fire, axis=0).astype(jnp.int32)
    no = jnp.zeros(e.shape, bool)
    return (P, state, levels), _stats(ax, c, e, jnp.sum(fire, axis=1), hit, no, moved, rows=carry[0])


_STEPS = {"dense": _dense_step, "active": _active_step, "dtree": _dtree_step, "wtree": _wtree_step}
if set(_STEPS) != set(methods.names()):  # one step per method of the registry, no more
    raise ImportError(f"jaxcorr.train._steps has steps for {sorted(_STEPS)}, the registry names {methods.names()}")


# ---------------------------------------------------------------------------------- the chunk
def _specs(cfg: StepConfig, carry, consts):
    """``shard_map`` specs of the carry and the constants: point axis split, the rest replicated."""
    lay = cfg.layout
    pt, rep, col = lay.spec(None), P(), P(None, lay.axis)
    trained, state, levels = carry
    rows_spec = col if cfg.span else rep
    s_leaves, s_def = jax.tree_util.tree_flatten(state)
    s_specs = [(col if cfg.span and ax is not None else rep) for ax in cfg.row_axes]
    assert len(s_specs) == len(s_leaves)
    carry_specs = (rows_spec, jax.tree_util.tree_unflatten(s_def, s_specs), tuple(pt for _ in levels))
    span = consts.gram is not None
    consts_specs = CompactConsts(X=pt, y=lay.spec(), a=rep, b=rep, scale=rep, n_real=rep,
                                 gram=pt if span else None, ip0=pt if span else None,
                                 ref=tuple(rep for _ in consts.ref), valid=lay.spec(), n_points=rep)
    return carry_specs, consts_specs


def _chunk(cfg: StepConfig, steps: int, carry, consts):
    """``steps`` steps of ``cfg.method`` as one ``lax.scan``; under ``shard_map`` on a mesh."""
    step = _STEPS[cfg.method]
    ax = Axis(None if cfg.layout is None else cfg.layout.axis)

    def scan(carry, consts):
        return lax.scan(lambda cr, _: step(cfg, ax, consts, cr), carry, None, length=steps)

    if cfg.layout is None:
        return scan(carry, consts)
    specs = _specs(cfg, carry, consts)
    stats_specs = StepStats(*(P(),) * len(StepStats._fields))
    return jax.shard_map(scan, mesh=cfg.layout.mesh, in_specs=specs, out_specs=(specs[0], stats_specs))(
        carry, consts)


_run_donated = jax.jit(_chunk, static_argnums=(0, 1), donate_argnums=(2,))
_run_kept = jax.jit(_chunk, static_argnums=(0, 1))


def run(cfg: StepConfig, steps: int, carry, consts, *, donate: bool = True):
    """The compiled chunk: ``(carry, stats)`` after ``steps`` steps; ``jax.jit``'s cache keeps it.

    With ``donate`` the carry's buffers are given to the output (the input carry is then invalid).
    """
    fn = _run_donated if donate else _run_kept
    return fn(cfg, int(steps), carry, consts)


def compile(cfg: StepConfig, steps: int, carry, consts, *, donate: bool = True) -> None:
    """Compile the chunk :func:`run` will call (a no-op when ``jax.jit``'s cache has it), so that
    the caller can time the run apart from the compilation."""
    fn = _run_donated if donate else _run_kept
    fn.lower(cfg, int(steps), carry, consts).compile()
