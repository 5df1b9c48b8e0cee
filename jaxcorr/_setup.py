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
the caller's rows as ``W_A(0)`` without a copy and :func:`finalize` slices instead of scattering.
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

from jaxcorr import _linalg, _optim, ddfn, maxtree, sharding
from jaxcorr._state import Base, Coefficients, CompactConsts, Config, DenseConsts, StepConfig, TrainState

__all__ = ["Refused", "dense", "compact", "finalize", "coefficients", "analysis", "ddfn_cap", "nbytes"]


class Refused(Exception):
    """The optimizer cannot run on the compacted rows (raised at set-up, before any step)."""


def ddfn_cap(m: int) -> int:
    r"""The per-point DDFN cap :math:`\lceil m^{4/5} \rceil` (Definition 1.3, Theorem 4.1)."""
    return ddfn.default_cap(1, int(m))


@functools.lru_cache(maxsize=64)
def _analysis(optimizer, m, d, dt):
    return _optim.analyze(optimizer, m, d, dt)


@functools.lru_cache(maxsize=64)
def _same_program(optimizer, L, d, dt):
    return _optim.same_program(optimizer, (L,), d, dt)


def analysis(optimizer, m: int, d: int, dt, L: int | None = None):
    """:func:`jaxcorr._optim.analyze` (or, with ``L``, ``same_program`` at ``L`` rows), remembered per
    hashable optimizer: these trace the optimizer's jaxprs, which costs more than a small step."""
    args = (optimizer, int(m if L is None else L), int(d), np.dtype(dt))
    fn = _analysis if L is None else _same_program
    try:
        hash(optimizer)
    except TypeError:
        return fn.__wrapped__(*args)
    return fn(*args)


def nbytes(tree) -> int:
    """Bytes of the arrays in ``tree`` (typed PRNG keys count as their key data)."""
    def size(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.dtype(x.dtype).itemsize * int(np.prod(np.shape(x)))

    return int(sum(size(x) for x in jax.tree_util.tree_leaves(tree)))


# ------------------------------------------------------------------------------------- dense
@jax.jit
def _copy(tree):
    return jax.tree_util.tree_map(lambda x: x.copy(), tree)


def dense(W, a, X, y, b, optimizer, state, width: int):
    """``(Config, TrainState)`` of the dense method: all ``m`` rows, the caller's arrays copied once
    (the compiled chunk then reuses those buffers step after step)."""
    m, d = W.shape
    dt = W.dtype
    W, state = _copy((W, state))
    consts = DenseConsts(X=X, y=y, a=a, b=jnp.asarray(b, dt), scale=jnp.asarray(1.0 / math.sqrt(width), dt))
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
    return ip, jnp.max(jnp.sum(fire, axis=1)), (jnp.any(fire, axis=0) if method == "active" else None)


@functools.partial(jax.jit, static_argnames=("capacity", "method"))
def _fire_rows(ip, b, capacity: int, method: str):
    """(m,) mask of :math:`\\bigcup_i S_{i,fire}(0)` by FIND on the full trees built from ``ip`` (n, m)."""
    n, m = ip.shape
    if method == "wtree":  # Algorithm 9 lines 12-17: S~_{r,fire} <- CWT.QUERY(r, b), capacity n
        fr = maxtree.query_all(maxtree.build(ip.T), b, capacity=n)
        return jnp.any(fr.valid, axis=1)
    fr = maxtree.query_all(maxtree.build(ip), b, capacity=capacity)  # Algorithm 8 line 12
    return jnp.zeros((m,), bool).at[jnp.where(fr.valid, fr.indices, m)].set(True, mode="drop")


def _fire_sets(method, W, X, b, lay):
    """``(ip, max_i k_{i,0}, fire rows)``: INIT and the fire sets at ``t = 0`` over all held rows.

    On a mesh the points are split across its devices (padding points are NaN rows of ``X``:
    ``NaN > b`` is False, so they fire nothing) and ``ip`` is (n_pad, m), sharded by points.
    """
    m = W.shape[0]
    bb = jnp.asarray(b, W.dtype)
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
def _row_first(x, ax):
    return jnp.moveaxis(x, ax, 0)


def _reference_rows(optimizer, d: int, dt, axes) -> tuple:
    """Per row state leaf, the state of a fresh ``init`` on one row (the idle rows' state)."""
    leaves = jax.tree_util.tree_leaves(optimizer.init(jnp.zeros((1, d), dt)))
    return tuple(jnp.take(x, 0, axis=ax) for x, ax in zip(leaves, axes) if ax is not None)


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
def _compact(W, a, idx, row_leaves, refs, X, *, span, gather_W, row_axes):
    """The compacted pieces over ``idx`` (L,): rows ``W_A`` (or None), restricted row leaves of the
    optimizer state, ``a_A`` and the Gram matrix ``G = X X^T`` (span path)."""
    W_A = W.at[idx].get(mode="fill", fill_value=0) if gather_W else None
    s_A = [_restrict(x, idx, ax, r) for x, ax, r in zip(row_leaves, row_axes, refs)]
    gram = _linalg.inner(X, X) if span else None
    return W_A, s_A, a.at[idx].get(mode="fill", fill_value=0), gram


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
        lv = lv + _linalg.matmul(gram, P0) if method != "wtree" else (lv.T + _linalg.matmul(P0, gram)).T
    levels = ()
    if method == "dtree":
        levels = maxtree.build(lv).levels
    elif method == "wtree":
        levels = maxtree.build(lv.T).levels
    ip0 = None
    if span:
        ip0 = ip_A if valid is None else jnp.where(valid[:, None], ip_A, 0)
        ip0 = ip0.T if method == "wtree" else ip0
    if lay is not None:
        pin = functools.partial(lax.with_sharding_constraint, shardings=lay.sharding(None))
        levels = tuple(pin(x) for x in levels)
        ip0 = None if ip0 is None else pin(ip0)
    return levels, ip0, (lv if P0 is not None else None)


def _span_state(optimizer, s_def, s_leaves, s_A, rows, X, L, fresh):
    """The optimizer state in coefficient form (rows (L, n) with ``state = coef X``), or None if the
    state's structure or a resumed state does not lie in the span of the data (generic path then)."""
    n, dt = X.shape[0], X.dtype
    tmpl = jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct((L, n), dt))
    tmpl_leaves, tmpl_def = jax.tree_util.tree_flatten(tmpl)
    if tmpl_def != s_def:
        return None
    out, it = [], iter(s_A)
    for i, (leaf, tl) in enumerate(zip(s_leaves, tmpl_leaves)):
        if i not in rows:
            if np.shape(leaf) != tl.shape:
                return None
            out.append(leaf)
            continue
        leaf = None if fresh else next(it)
        if fresh or not bool(jnp.any(leaf != 0)):
            out.append(jnp.zeros((L, n), tl.dtype))
            continue
        pinv = jnp.linalg.pinv(X.astype(jnp.float64) if jax.config.jax_enable_x64 else X)
        tol = 1e-5 if np.dtype(dt).itemsize <= 4 else 1e-12
        coef = _linalg.matmul(leaf.astype(pinv.dtype), pinv)
        resid = jnp.abs(_linalg.matmul(coef, X.astype(pinv.dtype)) - leaf).max()
        if not bool(resid <= tol * (jnp.abs(leaf).max() + 1e-30)):
            return None  # the resumed state is not in span(X): use the generic path
        out.append(coef.astype(tl.dtype))
    return out


def _start_rows(c0, A, Lp, axes, kt):
    """``(P0, state leaves)``: the coefficients ``c0`` (:class:`Coefficients` over held rows) placed at
    their rows of A in a (Lp, n) buffer, transposed to (n, Lp) when ``kt``; padding rows are zero
    (a fresh span state: :func:`jaxcorr.train.sgd`'s traces start at zero)."""
    pos = jnp.asarray(np.searchsorted(A, c0.rows))

    def place(x):
        full = jnp.zeros((Lp,) + x.shape[1:], x.dtype).at[pos].set(x)
        return full.T if kt else full

    leaves = jax.tree_util.tree_leaves(c0.opt_state)
    return place(c0.K), [place(x) if ax is not None else _copy(x) for x, ax in zip(leaves, axes)]


def compact(method, W, a, X, y, b, optimizer, state, verdict, *, width: int, linear: bool, lay=None,
            coefficients: Coefficients | None = None):
    """``(Config, TrainState)`` of a compacted method (``active``, ``dtree``, ``wtree``) over A.

    With ``coefficients`` (one device, span path), ``W`` holds the base rows and the run starts from
    ``W[rows] + K X`` with the optimizer's state over ``K``: A also holds ``rows``, the carry starts
    at ``K`` and the trees at the current leaves, so the run goes on exactly as the one that
    returned them (:class:`jaxcorr.train.Coefficients`).

    Raises:
      Refused: the optimizer's program on the compacted rows differs from that on all rows.
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
    Lp = maxtree.bucket(L + 1)  # at least one padding row: the idle-row guard reads the last
    if not analysis(optimizer, m, d, dt, L=Lp):
        raise Refused(f"its computation on {Lp} rows differs from that on {m} rows beyond shapes")
    identity = L == m  # A is every held row, in order
    idx_host = np.full((Lp,), m, np.int32)
    idx_host[:L] = A
    idx = jnp.asarray(idx_host)
    coef = None
    for attempt_span in ((True, False) if span else (False,)):
        restrict = not (attempt_span and (fresh or coefficients is not None))
        W_A, s_A, a_A, gram = _compact(
            W, a, idx, [s_leaves[i] for i in rows] if restrict else [], refs if restrict else (), X,
            span=attempt_span, gather_W=not (attempt_span and identity),
            row_axes=tuple(axes[i] for i in rows) if restrict else ())
        if not attempt_span or coefficients is not None:
            break
        coef = _span_state(optimizer, s_def, s_leaves, s_A, rows, X, Lp, fresh)
        if coef is not None:
            break
    span = coef is not None or coefficients is not None
    step = StepConfig(method, optimizer, 0, span, axes, span and method in ("active", "dtree") and lay is None, lay)
    if coefficients is not None:
        P0, coef = _start_rows(coefficients, A, Lp, axes, step.kt)
    else:
        if not span:
            it = iter(s_A)
            coef = [next(it) if i in rows else s_leaves[i] for i in range(len(s_leaves))]
        coef = [x if i in rows else _copy(x) for i, x in enumerate(coef)]  # the carry owns its buffers
        P0 = (jnp.zeros((n, Lp), dt) if step.kt else jnp.zeros((Lp, n), dt)) if span else W_A
        if step.kt:  # a fresh state's coefficient rows are zeros: made transposed, no transpose to run
            coef = [(x if i not in rows else jnp.zeros(x.shape[::-1], x.dtype) if fresh else x.T)
                    for i, x in enumerate(coef)]
    state_A = jax.tree_util.tree_unflatten(s_def, coef)
    base = Base(W=W, a=a, W0=(W if identity else W_A) if span else None, idx=idx, opt_state=state)
    consts = CompactConsts(X=X, y=y, a=a_A, b=jnp.asarray(b, dt), scale=jnp.asarray(1.0 / math.sqrt(width), dt),
                           n_real=jnp.asarray(L, jnp.int32), gram=gram, ip0=None,
                           ref=() if span else refs, valid=None, n_points=None)
    if lay is not None:
        cfg = _config(method, step, m, n, d, width, L, Lp, kmax, identity)
        return cfg, _placed(cfg, P0, state_A, ip, idx_host, consts, base, lay)
    start = P0 if coefficients is not None else None
    levels, ip0, current = _trees(ip, idx, None, start, gram if start is not None else None, method=method, span=span)
    if current is not None:  # the fire sets of the state continued from, not of the base rows
        kmax = int(jnp.max(jnp.sum(current > consts.b, axis=1)))
    cfg = _config(method, step, m, n, d, width, L, Lp, kmax, identity)
    return cfg, TrainState(rows=P0, opt_state=state_A, levels=levels, consts=consts._replace(ip0=ip0), base=base)


def _config(method, step, m, n, d, width, L, Lp, kmax, identity) -> Config:
    """The :class:`Config` of a compacted run (the DTree capacity from ``max_i k_i``)."""
    cap_ddfn = ddfn_cap(width)
    ceiling = min(Lp, cap_ddfn)
    if method == "dtree":
        step = step._replace(capacity=maxtree.allocate(kmax, ceiling=max(ceiling, kmax, 1)))
    return Config(step=step, m=m, n=n, d=d, width=width, n_active=L, L=Lp, kmax0=kmax, cap_ddfn=cap_ddfn,
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


# ----------------------------------------------------------------------------------- finalize
def _scatter_rows(full, part, idx, ax):
    x = _row_first(full, ax).at[idx].set(_row_first(part, ax).astype(full.dtype), mode="drop")
    return jnp.moveaxis(x, 0, ax)


@functools.partial(jax.jit, static_argnames=("span", "kt", "identity", "row_axes"))
def _to_full(P_, s_A, X, base: Base, *, span, kt, identity, row_axes):
    """The trained rows and optimizer state back in the caller's (m, d) shapes (new buffers)."""
    m = base.W.shape[0]
    leaves, s_def = jax.tree_util.tree_flatten(s_A)
    if kt:
        P_ = P_.T
        leaves = [(x.T if ax is not None else x) for x, ax in zip(leaves, row_axes)]
    if identity:  # A is every held row: slice (first, so the product has m rows, not L), no scatter
        W_new = base.W0 + _linalg.matmul(P_[:m], X) if span else P_[:m]
    else:
        W_A = base.W0 + _linalg.matmul(P_, X) if span else P_  # (L, d): W_A(0) + K X on the span path
        W_new = base.W.at[base.idx].set(W_A.astype(base.W.dtype), mode="drop")
    out = []
    for full, leaf, ax in zip(jax.tree_util.tree_leaves(base.opt_state), leaves, row_axes):
        if ax is None:
            out.append(jnp.copy(leaf))
            continue
        if identity:
            rows = lax.slice_in_dim(leaf, 0, m, axis=ax)
            out.append((_linalg.matmul(rows, X) if span else rows).astype(full.dtype))
        else:
            out.append(_scatter_rows(full, _linalg.matmul(leaf, X) if span else leaf, base.idx, ax))
    return W_new.astype(base.W.dtype), jax.tree_util.tree_unflatten(s_def, out)


def finalize(cfg: Config, state: TrainState, *, copy: bool = True):
    """``(W, opt_state)`` in the caller's shapes from ``state`` (Algorithm 8/9's result).

    Compacted methods: the rows of A are scattered into the held ``W`` (or, when A is every held
    row, sliced from the compacted rows without a scatter) and likewise the optimizer state; on a
    mesh the pieces are replicated and brought to the default device first. The result shares no
    buffer with ``state`` unless ``copy=False`` for the dense method (then it is ``state``'s own).
    """
    if cfg.step.method == "dense":
        return _copy((state.rows, state.opt_state)) if copy else (state.rows, state.opt_state)
    P_, s_A, X = state.rows, state.opt_state, state.consts.X
    lay = cfg.step.layout
    if lay is not None:  # replicated first, so every process can read its copy
        P_, s_A, X = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(sharding.replicate(x, lay))),
                                            (P_, s_A, X))
    return _to_full(P_, s_A, X, state.base, span=cfg.step.span, kt=cfg.step.kt, identity=cfg.identity,
                    row_axes=cfg.step.row_axes)


@functools.partial(jax.jit, static_argnames=("L", "kt", "row_axes"))
def _coefficient_rows(P_, s_A, *, L, kt, row_axes):
    """K (L, n) and its state's per-row arrays (L, n) from the carry (new buffers)."""
    leaves, s_def = jax.tree_util.tree_flatten(s_A)
    K = (P_.T if kt else P_)[:L]
    out = [((x.T if kt else x)[:L] if ax is not None else jnp.copy(x)) for x, ax in zip(leaves, row_axes)]
    return K, jax.tree_util.tree_unflatten(s_def, out)


def coefficients(cfg: Config, state: TrainState) -> Coefficients | None:
    """The run as :class:`Coefficients` over the held rows (span path on one device; else None)."""
    if cfg.step.method == "dense" or not cfg.step.span or cfg.step.layout is not None:
        return None
    K, s = _coefficient_rows(state.rows, state.opt_state, L=cfg.n_active, kt=cfg.step.kt,
                             row_axes=cfg.step.row_axes)
    rows = np.arange(cfg.m, dtype=np.int64) if cfg.identity else np.asarray(state.base.idx[:cfg.n_active], np.int64)
    return Coefficients(rows=rows, K=K, opt_state=s)
