r"""Set-up and tear-down of the training state (host side, jitted pieces): behind :func:`jaxcorr.train.setup`.

Set-up of the compacted methods (Algorithms 8 and 9 restricted to the active rows A):

1. INIT over all ``m`` held neurons (DTree, Lemma D.2; WTree, Lemma D.6): the leaves
   :math:`\langle w_r, x_i\rangle` and ``max_i k_{i,0}``, one jitted call;
2. the fire sets at ``t = 0`` by FIND on those trees (Algorithm 8 line 12 / Algorithm 9 lines
   12-17) at a capacity from the measured counts (:func:`jaxcorr.maxtree.allocate`), one jitted
   call returning the (m,) union mask. ``method="active"``, whose steps find the fire sets by
   comparison, finds them so at set-up too, inside the INIT call (the same sets: the leaves are
   all there after INIT, and the comparison costs O(nm) against INIT's O(nmd); it saves compiling
   a FIND over all m leaves, most of a cold set-up);
3. A = that union plus the rows whose optimizer state differs from a fresh ``init`` (resuming);
4. the compacted state over ``bucket(|A| + 1)`` rows (one padding row at least, for the idle-row
   guard), one jitted call: rows, optimizer state, trees, constants.

When A is every held row (an implicit wide model, :mod:`jaxcorr.implicit`), the span path keeps
the caller's rows as ``W_A(0)`` without a copy and :func:`jaxcorr.train._finalize.finalize` slices instead of
scattering.
On a mesh, steps 1-2 run sharded by points and the pieces are then padded and placed
(:mod:`jaxcorr.sharding`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcorr import _linalg, ddfn, errors, maxtree, methods, sharding
from jaxcorr import linear as _sgd
from jaxcorr.train import _linearity
from jaxcorr.train._arrays import copy as _copy
from jaxcorr.train._arrays import put, zeros
from jaxcorr.train._arrays import row_first as _row_first
from jaxcorr.train._state import Base, Coefficients, CompactConsts, Config, DenseConsts, StepConfig, TrainState

__all__ = ["build", "dense", "compact", "from_inner_products", "analysis", "ddfn_cap", "refused"]




def ddfn_cap(m: int) -> int:
    r"""The per-point DDFN cap :math:`\lceil m^{4/5} \rceil` (Definition 1.3, Theorem 4.1)."""
    return ddfn.default_cap(1, int(m))


@functools.lru_cache(maxsize=64)
def _analysis(optimizer, m, d, dt):
    return _linearity.analyze(optimizer, m, d, dt)


@functools.lru_cache(maxsize=64)
def _same_program(optimizer, L, d, dt):
    return _linearity.same_program(optimizer, (L,), d, dt)


def analysis(optimizer, m: int, d: int, dt, L: int | None = None):
    """:func:`jaxcorr._linearity.analyze` (or, with ``L``, ``same_program`` at ``L`` rows), remembered per
    hashable optimizer: these trace the optimizer's jaxprs, which costs more than a small step."""
    args = (optimizer, int(m if L is None else L), int(d), np.dtype(dt))
    fn = _analysis if L is None else _same_program
    try:
        hash(optimizer)
    except TypeError:
        return fn.__wrapped__(*args)
    return fn(*args)




# ------------------------------------------------------------------------------------- dense


def dense(W, a, X, y, b, optimizer, state, width: int):
    """``(Config, TrainState)`` of the dense method: all ``m`` rows, the caller's arrays copied once
    (the compiled chunk then reuses those buffers step after step)."""
    m, d = W.shape
    dt = W.dtype
    W, state = _copy((W, state))
    consts = DenseConsts(X=X, y=y, a=a, b=put(b, dt), scale=put(1.0 / math.sqrt(width), dt))
    cap = ddfn_cap(width)
    cfg = Config(step=StepConfig("dense", optimizer), m=m, n=X.shape[0], d=d, width=width, n_active=m, L=m,
                 kmax0=0, cap_ddfn=cap, capacity_ceiling=m, identity=True)
    return cfg, TrainState(rows=W, opt_state=state, levels=(), consts=consts, base=None)


# ------------------------------------------------------------------------- fire sets at t = 0
@functools.partial(jax.jit, static_argnames=("method",))
def _init(W, X, b, method: str):
    """INIT's leaves (n, m) (Lemma D.2; for WTree the same values, Lemma D.6), ``max_i k_{i,0}`` and,
    for ``method="active"`` (fire sets by comparison, no trees), the (m,) mask of the rows that fire."""
    ip = _linalg.inner(X, W)
    fire = ip > b
    by_compare = methods.get(method).finds_active == "compare"
    return ip, jnp.max(jnp.sum(fire, axis=1)), (jnp.any(fire, axis=0) if by_compare else None)


@functools.partial(jax.jit, static_argnames=("capacity", "method"))
def _fire_rows(ip, b, capacity: int, method: str):
    """(m,) mask of :math:`\\bigcup_i S_{i,fire}(0)` by FIND on the full trees built from ``ip`` (n, m)."""
    n, m = ip.shape
    if methods.get(method).trees == "wtree":  # Algorithm 9 lines 12-17: S~_{r,fire} <- CWT.QUERY(r, b), capacity n
        fr = maxtree.query_all(maxtree.build(ip.T), b, capacity=n)
        return jnp.any(fr.valid, axis=1)
    fr = maxtree.query_all(maxtree.build(ip), b, capacity=capacity)  # Algorithm 8 line 12
    return _mark(fr.indices, fr.valid, m)


@functools.partial(jax.jit, static_argnums=(2,))
def _mark(indices, valid, m: int):
    """(m,) mask of the leaves a frontier found."""
    return jnp.zeros((m,), bool).at[jnp.where(valid, indices, m)].set(True, mode="drop")


def _fire_sets(method, W, X, b, lay):
    """``(ip, max_i k_{i,0}, fire rows)``: INIT and the fire sets at ``t = 0`` over all held rows.

    On a mesh the points are split across its devices (padding points are NaN rows of ``X``:
    ``NaN > b`` is False, so they fire nothing) and ``ip`` is (n_pad, m), sharded by points.
    """
    m = W.shape[0]
    bb = put(b, W.dtype)
    if lay is not None:
        n_pad = sharding.padded_count(X.shape[0], lay.shards)
        X = sharding.place(sharding.pad_rows(X, n_pad, np.nan), lay.sharding(None))
        W = sharding.place(np.asarray(W), lay.replicated)
        bb = sharding.place(np.asarray(b, W.dtype), lay.replicated)
    ip, kmax, hit = _init(W, X, bb, method)
    kmax = int(kmax)
    if hit is None:  # the trees' FIND (Algorithm 8 line 12, Algorithm 9 lines 12-17)
        hit = _fire_rows(ip, bb, maxtree.allocate(kmax, 1, 0, ceiling=m), method)
    if lay is not None:
        hit = sharding.replicate(hit, lay)
    return ip, kmax, np.flatnonzero(np.asarray(hit))


# ----------------------------------------------------------------------------- optimizer rows


def _reference_rows(optimizer, d: int, dt, axes) -> tuple:
    """Per row state leaf, the state of a fresh ``init`` on one row (the idle rows' state)."""
    leaves = jax.tree_util.tree_leaves(_fresh_state(optimizer, d, jnp.dtype(dt)))
    return tuple(_first(x, ax) for x, ax in zip(leaves, axes) if ax is not None)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fresh_state(optimizer, d: int, dt):
    """A fresh ``optimizer.init`` on one zero row (compiled once per optimizer object and shape)."""
    return optimizer.init(jnp.zeros((1, d), dt))


@functools.partial(jax.jit, static_argnums=(1,))
def _first(x, ax: int):
    return jnp.take(x, 0, axis=ax)


@functools.partial(jax.jit, static_argnums=2)
def _rows_off_reference(leaves, refs, axes):
    """(m,) bool: rows whose state differs from the reference row in some row leaf (they move)."""
    rows = None
    for x, r, ax in zip(leaves, refs, axes):
        x = _row_first(x, ax)
        nz = jnp.any((x != r[None]).reshape(x.shape[0], -1), axis=1)
        rows = nz if rows is None else rows | nz
    return rows


def _restrict(leaf, idx, ax, ref):
    """The rows ``idx`` of a row leaf along its row axis; padding indices (>= m) get ``ref``."""
    x = _row_first(leaf, ax)
    g = x.at[idx].get(mode="fill", fill_value=0)
    pad = (idx >= x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.moveaxis(jnp.where(pad, ref[None].astype(x.dtype), g), 0, ax)


#: A takes every held row when at most 1/NEARLY_ALL of them are outside it (see :func:`compact`).
NEARLY_ALL = 16


def _active_rows(fire_rows, s_leaves, axes, refs):
    """A: the rows that fire at ``t = 0`` and the rows whose optimizer state is not the idle one."""
    rows = [i for i, ax in enumerate(axes) if ax is not None]
    state_rows = np.zeros((0,), np.int64)
    if rows:
        off = _rows_off_reference([s_leaves[i] for i in rows], refs, tuple(axes[i] for i in rows))
        state_rows = np.flatnonzero(np.asarray(off))
    return np.union1d(fire_rows, state_rows).astype(np.int64), state_rows.size == 0


# --------------------------------------------------------------------------------- compaction
@functools.partial(jax.jit, static_argnames=("span", "gather_W", "row_axes"))
def _gather_active(W, a, idx, row_leaves, refs, X, *, span, gather_W, row_axes):
    """The compacted pieces over ``idx`` (L,): rows ``W_A`` (or None), restricted row leaves of the
    optimizer state, ``a_A`` and the Gram matrix ``G = X X^T`` (span path)."""
    W_A = W.at[idx].get(mode="fill", fill_value=0) if gather_W else None
    row_state = [_restrict(x, idx, ax, r) for x, ax, r in zip(row_leaves, row_axes, refs)]
    gram = _linalg.inner(X, X) if span else None
    return W_A, row_state, a.at[idx].get(mode="fill", fill_value=0), gram


@functools.partial(jax.jit, static_argnames=("method", "span", "lay"))
def _trees(ip, idx, valid, P0=None, gram=None, *, method, span, lay=None):
    """The step's trees over the leaves ``ip[:, idx]`` (``-inf`` on padding rows; dtree: n trees over
    the L rows, wtree: L trees over the n points) and ``ip0`` (span path). On a mesh, padding points
    get ``-inf`` leaves and ``ip0 = 0``, and both stay split by points. A run continued from
    coefficients (``P0`` = K, transposed (n, L) for dtree, and ``gram``; one device) has its trees
    over the current leaves ``ip0 + (K G)^T``, as the step computes them."""
    ip_A = ip.at[:, idx].get(mode="fill", fill_value=-jnp.inf)
    lv = ip_A if valid is None else jnp.where(valid[:, None], ip_A, -jnp.inf)
    if P0 is not None:  # in the step's own layout and order of operations: the same bits
        wtree = methods.get(method).trees == "wtree"
        lv = (lv.T + _linalg.matmul(P0, gram)).T if wtree else lv + _linalg.matmul(gram, P0)
    levels = ()
    trees = methods.get(method).trees
    if trees == "dtree":
        levels = maxtree.build(lv).levels
    elif trees == "wtree":
        levels = maxtree.build(lv.T).levels
    ip0 = None
    if span:
        ip0 = ip_A if valid is None else jnp.where(valid[:, None], ip_A, 0)
        ip0 = ip0.T if trees == "wtree" else ip0
    if lay is not None:
        pin = functools.partial(lax.with_sharding_constraint, shardings=lay.sharding(None))
        levels = tuple(pin(x) for x in levels)
        ip0 = None if ip0 is None else pin(ip0)
    return levels, ip0, (lv if P0 is not None else None)


def _span_state(optimizer, s_def, s_leaves, row_state, rows, X, L, fresh):
    """The optimizer state in coefficient form (rows (L, n) with ``state = coef X``), or None if the
    state's structure or a resumed state does not lie in the span of the data (generic path then)."""
    n, dt = X.shape[0], X.dtype
    tmpl = jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct((L, n), dt))
    tmpl_leaves, tmpl_def = jax.tree_util.tree_flatten(tmpl)
    if tmpl_def != s_def:
        return None
    out, it = [], iter(row_state)
    for i, (leaf, tl) in enumerate(zip(s_leaves, tmpl_leaves)):
        if i not in rows:
            if np.shape(leaf) != tl.shape:
                return None
            out.append(leaf)
            continue
        leaf = None if fresh else next(it)
        if fresh or not bool(jnp.any(leaf != 0)):
            out.append(zeros((L, n), tl.dtype))
            continue
        pinv = jnp.linalg.pinv(X.astype(jnp.float64) if jax.config.jax_enable_x64 else X)
        tol = 1e-5 if np.dtype(dt).itemsize <= 4 else 1e-12
        coef = _linalg.matmul(leaf.astype(pinv.dtype), pinv)
        resid = jnp.abs(_linalg.matmul(coef, X.astype(pinv.dtype)) - leaf).max()
        if not bool(resid <= tol * (jnp.abs(leaf).max() + 1e-30)):
            return None  # the resumed state is not in span(X): use the generic path
        out.append(coef.astype(tl.dtype))
    return out


def _start_rows(start, A, L_padded, axes, transposed):
    """``(P0, state leaves)``: the coefficients ``start`` (:class:`Coefficients` over held rows) placed at
    their rows of A in a (L_padded, n) buffer, transposed to (n, L_padded) when ``transposed``; padding rows are zero
    (a fresh span state: :func:`jaxcorr.train.sgd`'s traces start at zero)."""
    pos = put(np.searchsorted(A, start.rows))

    def place(x):
        full = jnp.zeros((L_padded,) + x.shape[1:], x.dtype).at[pos].set(x)
        return full.T if transposed else full

    leaves = jax.tree_util.tree_leaves(start.opt_state)
    return place(start.K), [place(x) if ax is not None else _copy(x) for x, ax in zip(leaves, axes)]


def refused(method: str, reason: str) -> errors.OptimizerRefused:
    """The typed refusal of an optimizer the compacted methods cannot run exactly."""
    return errors.OptimizerRefused(method, reason, message=(
        f"method={method!r} runs the optimizer on the active rows only, which is exact only for an "
        f"optimizer that keeps rows apart and leaves idle rows alone, but this one does not: {reason}. "
        "Use method='dense' or fallback='dense'."))


def build(method, W, a, X, y, b, optimizer, state, width, lay, start=None):
    """``(Config, TrainState)`` of any method on validated arguments.

    Raises:
      jaxcorr.errors.OptimizerRefused: an optimizer the compacted methods cannot run exactly
        (decided from its jaxprs by :mod:`jaxcorr.train._linearity`, before any step).
    """
    if not methods.get(method).sparse:
        return dense(W, a, X, y, b, optimizer, state, width)
    verdict = analysis(optimizer, W.shape[0], W.shape[1], W.dtype)
    if not verdict.ok:
        raise refused(method, verdict.reason)
    return compact(method, W, a, X, y, b, optimizer, state, verdict, width=width,
                   linear=_sgd.is_linear(optimizer), lay=lay, coefficients=start)


def compact(method, W, a, X, y, b, optimizer, state, verdict, *, width: int, linear: bool, lay=None,
            coefficients: Coefficients | None = None):
    """``(Config, TrainState)`` of a compacted method (``active``, ``dtree``, ``wtree``) over A.

    With ``coefficients`` (one device, span path), ``W`` holds the base rows and the run starts from
    ``W[rows] + K X`` with the optimizer's state over ``K``: A also holds ``rows``, the carry starts
    at ``K`` and the trees at the current leaves, so the run goes on exactly as the one that
    returned them (:class:`jaxcorr.train.Coefficients`).

    Raises:
      jaxcorr.errors.OptimizerRefused: the optimizer's program on the compacted rows differs from that
        on all rows.
      ValueError: ``coefficients`` where the span path does not run (a mesh, another optimizer).
    """
    m, d = W.shape
    n, dt = X.shape[0], W.dtype
    ip, kmax, fire_rows = _fire_sets(method, W, X, b, lay)  # INIT, Algorithm 8 line 12 at t = 0
    s_leaves, s_def = jax.tree_util.tree_flatten(state)
    axes = tuple(verdict.row_axes)
    rows = [i for i, ax in enumerate(axes) if ax is not None]
    refs = _reference_rows(optimizer, d, dt, axes)
    A, fresh = _active_rows(fire_rows, s_leaves, axes, refs)
    span = linear and all(axes[i] == 0 for i in rows)
    if coefficients is not None:
        if not span or lay is not None:
            raise ValueError("coefficients= continues a run of the span path (train.sgd, one device); "
                             "this run does not take it (another optimizer, or a mesh)")
        A = np.union1d(A, coefficients.rows)  # rows that moved stay in A (their K is not zero)
    if lay is None and 0 < m - A.size <= m // NEARLY_ALL:
        # Nearly every held row is in A (a held-rows model: jaxcorr.implicit keeps the rows within
        # float error of b too): take them all, so that the rows are trained in place of a gathered
        # copy and sliced, not scattered, at the end. Exact: a row of A that does not fire has a zero
        # gradient and a fresh state, so it stays put like every idle row (the run-time guard).
        A = np.arange(m, dtype=np.int64)
    L = int(A.size)
    L_padded = maxtree.bucket(L + 1)  # at least one padding row: the idle-row guard reads the last
    if not analysis(optimizer, m, d, dt, L=L_padded):
        raise refused(method, f"its computation on {L_padded} rows differs from that on {m} rows beyond shapes")
    identity = L == m  # A is every held row, in order
    idx_host = np.full((L_padded,), m, np.int32)
    idx_host[:L] = A
    idx = put(idx_host)
    coef = None
    for attempt_span in ((True, False) if span else (False,)):
        restrict = not (attempt_span and (fresh or coefficients is not None))
        W_A, row_state, a_A, gram = _gather_active(
            W, a, idx, [s_leaves[i] for i in rows] if restrict else [], refs if restrict else (), X,
            span=attempt_span, gather_W=not (attempt_span and identity),
            row_axes=tuple(axes[i] for i in rows) if restrict else ())
        if not attempt_span or coefficients is not None:
            break
        coef = _span_state(optimizer, s_def, s_leaves, row_state, rows, X, L_padded, fresh)
        if coef is not None:
            break
    span = coef is not None or coefficients is not None
    transposed = span and methods.get(method).trees != "wtree" and lay is None
    step = StepConfig(method, optimizer, 0, span, axes, transposed, lay)
    if coefficients is not None:
        P0, coef = _start_rows(coefficients, A, L_padded, axes, step.transposed)
    else:
        if not span:
            it = iter(row_state)
            coef = [next(it) if i in rows else s_leaves[i] for i in range(len(s_leaves))]
        coef = [x if i in rows else _copy(x) for i, x in enumerate(coef)]  # the carry owns its buffers
        P0 = (zeros((n, L_padded), dt) if step.transposed else zeros((L_padded, n), dt)) if span else W_A
        if step.transposed:  # a fresh state's coefficient rows are zeros: made transposed, no transpose to run
            coef = [(x if i not in rows else zeros(x.shape[::-1], x.dtype) if fresh else x.T)
                    for i, x in enumerate(coef)]
    state_A = jax.tree_util.tree_unflatten(s_def, coef)
    base = Base(W=W, a=a, W0=(W if identity else W_A) if span else None, idx=idx, opt_state=state)
    consts = CompactConsts(X=X, y=y, a=a_A, b=put(b, dt), scale=put(1.0 / math.sqrt(width), dt),
                           n_real=put(L, np.int32), gram=gram, ip0=None,
                           ref=() if span else refs, valid=None, n_points=None)
    if lay is not None:
        cfg = _config(method, step, m, n, d, width, L, L_padded, kmax, identity)
        return cfg, _placed(cfg, P0, state_A, ip, idx_host, consts, base, lay)
    start = P0 if coefficients is not None else None
    levels, ip0, current = _trees(ip, idx, None, start, gram if start is not None else None, method=method, span=span)
    if current is not None:  # the fire sets of the state continued from, not of the base rows
        kmax = int(jnp.max(jnp.sum(current > consts.b, axis=1)))
    cfg = _config(method, step, m, n, d, width, L, L_padded, kmax, identity)
    return cfg, TrainState(rows=P0, opt_state=state_A, levels=levels, consts=consts._replace(ip0=ip0), base=base)


def _config(method, step, m, n, d, width, L, L_padded, kmax, identity) -> Config:
    """The :class:`Config` of a compacted run (the DTree capacity from ``max_i k_i``)."""
    cap_ddfn = ddfn_cap(width)
    ceiling = min(L_padded, cap_ddfn)
    if methods.get(method).trees == "dtree":  # the DTree frontier capacity
        step = step._replace(capacity=maxtree.allocate(kmax, ceiling=max(ceiling, kmax, 1)))
    return Config(step=step, m=m, n=n, d=d, width=width, n_active=L, L=L_padded, kmax0=kmax, cap_ddfn=cap_ddfn,
                  capacity_ceiling=ceiling, identity=identity)


def _placed(cfg, P0, state_A, ip, idx, c, base, lay):
    """The compacted state padded to ``n_pad`` points and laid out on the mesh (points split)."""
    n, span, rows_axes = cfg.n, cfg.step.span, cfg.step.row_axes
    n_pad = sharding.padded_count(n, lay.shards)
    rows, rep = lay.sharding(None), lay.replicated
    cols = NamedSharding(lay.mesh, P(None, lay.axis))
    valid = sharding.place(np.arange(n_pad) < n, lay.sharding())
    levels, ip0, _ = _trees(ip, idx, valid, method=cfg.step.method, span=span, lay=lay)
    s_leaves, s_def = jax.tree_util.tree_flatten(state_A)
    if span:
        P0 = sharding.place(sharding.pad_cols(P0, n_pad, 0), cols)
        s_leaves = [sharding.place(sharding.pad_cols(x, n_pad, 0), cols) if ax is not None
                    else sharding.place(x, rep) for x, ax in zip(s_leaves, rows_axes)]
        gram = sharding.place(sharding.pad_cols(sharding.pad_rows(c.gram, n_pad, 0), n_pad, 0), rows)
    else:
        P0 = sharding.place(P0, rep)
        s_leaves = [sharding.place(x, rep) for x in s_leaves]
        gram = None
    consts = CompactConsts(
        X=sharding.place(sharding.pad_rows(c.X, n_pad, 0), rows),
        y=sharding.place(sharding.pad_rows(c.y, n_pad, 0), lay.sharding()),
        a=sharding.place(c.a, rep), b=sharding.place(c.b, rep), scale=sharding.place(c.scale, rep),
        n_real=sharding.place(c.n_real, rep), gram=gram, ip0=ip0,
        ref=tuple(sharding.place(r, rep) for r in c.ref), valid=valid,
        n_points=sharding.place(np.float32(n), rep))
    return TrainState(rows=P0, opt_state=jax.tree_util.tree_unflatten(s_def, s_leaves), levels=levels,
                      consts=consts, base=base)


# ----------------------------------------------------------- the span path from inner products
@jax.jit
def _kmax(ip, b):
    return jnp.max(jnp.sum(ip > b, axis=1))


@functools.partial(jax.jit, static_argnums=(2,))
def _coordinate_consts(a, X, L_padded: int):
    """``a`` padded with zeros to ``L_padded`` rows and the Gram matrix ``X X^T`` (span path)."""
    return jnp.zeros((L_padded,), a.dtype).at[:a.shape[0]].set(a), _linalg.inner(X, X)


@functools.partial(jax.jit, static_argnums=(0,))
def _coordinate_state(optimizer, P0):
    """A fresh optimizer state over the zero coefficients ``P0`` (every trace starts at zero)."""
    return optimizer.init(P0)


def from_inner_products(method, ip, a, X, y, b, optimizer, width: int):
    r"""``(Config, TrainState)`` of the span path over rows given only by their initial inner products.

    ``ip`` (n, m) holds :math:`\langle w_r(0), x_i\rangle` of the ``m`` rows to train (A is every
    one of them, in order: ``identity``), ``a`` (m,) their output weights; no ``W`` is read or kept,
    and the optimizer (:func:`jaxcorr.train.sgd`, validated by the caller) starts fresh over
    ``K = 0``. The state is :func:`compact`'s for the same ``ip`` (same steps, trees, constants),
    with a :class:`Base` that holds no rows: the result is :func:`jaxcorr.train.coefficients` only.

    Raises:
      jaxcorr.errors.OptimizerRefused: the optimizer's program on the padded rows differs.
    """
    n, m = ip.shape
    d, dt = X.shape[1], ip.dtype
    verdict = analysis(optimizer, m, d, dt)
    if not verdict.ok:
        raise refused(method, verdict.reason)
    axes = tuple(verdict.row_axes)
    L_padded = maxtree.bucket(m + 1)  # at least one padding row, as compact's
    if not analysis(optimizer, m, d, dt, L=L_padded):
        raise refused(method, f"its computation on {L_padded} rows differs from that on {m} rows beyond shapes")
    idx_host = np.full((L_padded,), m, np.int32)
    idx_host[:m] = np.arange(m, dtype=np.int32)
    idx = put(idx_host)
    transposed = methods.get(method).trees != "wtree"
    step = StepConfig(method, optimizer, 0, True, axes, transposed, None)
    P0 = zeros((n, L_padded), dt) if transposed else zeros((L_padded, n), dt)
    a_A, gram = _coordinate_consts(a, X, L_padded)
    bb = put(b, dt)
    consts = CompactConsts(X=X, y=y, a=a_A, b=bb, scale=put(1.0 / math.sqrt(width), dt), n_real=put(m, np.int32),
                           gram=gram, ip0=None, ref=(), valid=None, n_points=None)
    levels, ip0, _ = _trees(ip, idx, None, method=method, span=True)
    cfg = _config(method, step, m, n, d, width, m, L_padded, int(_kmax(ip, bb)), True)
    base = Base(W=None, a=a, W0=None, idx=idx, opt_state=None)
    return cfg, TrainState(rows=P0, opt_state=_coordinate_state(optimizer, P0), levels=levels,
                           consts=consts._replace(ip0=ip0), base=base)
