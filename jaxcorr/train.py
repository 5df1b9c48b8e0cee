r"""Gradient-descent training of 2NN(m, b): dense, on the active rows, or on the correlation trees.

:func:`fit` trains ``W`` (``a`` stays fixed, Section 2) with any optax optimizer, by one of

- ``"dense"``: plain XLA on all ``m`` neurons, O(nmd) per step (the reference);
- ``"active"`` (the default): the same GD on the active rows ``A`` only (below), with the fire
  sets from the masked comparison :math:`\langle w_r, x_i\rangle > b` over (n, |A|) every step and
  no trees in the loop; the trees find ``A`` at set-up (an output-sensitive DTree query over all
  ``m`` leaves). Inside ``A`` about 1/n of the rows fire per point, so a frontier would cost as much
  as the masked pass it replaces: this is the fastest exact method on one device and on a mesh;
- ``"dtree"``: Algorithm 8 / Theorem 4.1 -- fire sets from Correlation DTree queries (Theorem 3.1),
  forward pass from the stored inner products, sparse gradient, tree updates for the changed rows;
- ``"wtree"``: Algorithm 9 / Theorem 4.2 -- :math:`\tilde S_{r,fire}` from Correlation WTree queries
  (Theorem 3.2) and :math:`S_{i,fire}` derived from them.

All follow the same trajectory (up to float rounding), and the loop runs under ``jit`` as
``lax.scan`` over chunks of steps, with the host between chunks (callbacks, capacity checks).

**The active-set invariant** (what makes the sparse methods cost O(|A| n d), Theorem 4.1's
O(m^{4/5} n^2 d), instead of O(m n d)). At set-up, ``fit`` builds the full tree over all ``m``
neurons (DTree/WTree INIT, Lemmas D.2/D.6), queries the fire sets at ``t = 0`` and forms

.. math:: A = \bigcup_i S_{i,fire}(0) \;\cup\; \{r : \text{the optimizer state of row } r
          \text{ differs from a fresh } \texttt{init}\}.

Claim: rows outside ``A`` never move and never fire. Induction on ``t``: if ``r`` is not in ``A``
and ``w_r(t) = w_r(0)``, then ``r`` fires for no point, so its gradient row is zero (Section 2's
gradient has the factor :math:`1[\langle w_r, x_i\rangle > b]`) and its state is the fresh one by
induction. Whether the optimizer then leaves the row alone, and computes the rows of ``A`` as it
would on all ``m`` rows, is decided by construction, never from numbers (:mod:`jaxcorr._optim`):
its ``init``/``update`` are read as jaxprs and must keep rows apart (cross-row reductions only as
sums of values that are zero on idle rows, e.g. ``clip_by_global_norm``) and compute the same
value, independent of the row's parameters, on every idle row; weight decay, per-tensor norms
(LARS/LAMB, adafactor), ``reduce_max`` over rows (sm3) and per-row randomness are refused up front.
What remains, whether that common value is "no move", is checked every step on a padding row of
the compacted tensor (the idle-row guard, O(d)): if it would move, the step is not kept and ``fit``
raises ``ValueError`` naming the step (or, with ``fallback="dense"``, continues dense from the last
exact state, the start of that chunk). So ``w_r(t+1) = w_r(0)`` and ``r`` still fires for no point.
Hence training runs on the ``|A|`` rows only, trees included, and the result is scattered back at
the end. A capacity never needs to exceed ``|A|``. The span (Gram) path, which runs the optimizer on
the (|A|, n) coefficients of the data instead of (|A|, d) rows, is taken only for :func:`sgd`
(linear by construction).

**Capacity and overflow** (jax-md style). The per-point frontier capacity of the DTree query is
static: sized from the data (``max_i k_{i,0}`` plus 25% headroom), and grown only when needed. Each
chunk reports a sticky overflow flag (FIND found more firing neurons than the capacity holds); the
host then reruns the chunk from its starting state with a larger capacity, and records a capacity
event. A firing neuron is never dropped. Past the DDFN cap :math:`\lceil m^{4/5}\rceil` per point
(Definition 1.3, Theorem 4.1), ``fit`` raises ``ValueError`` naming the cap, or continues with the
dense method if ``fallback="dense"``.

Examples:
  >>> import jax
  >>> from jaxcorr import data, nn, train
  >>> X, y = data.synthetic(seed=0, n=4, d=8)
  >>> params = nn.init(jax.random.key(0), m=256, d=8)
  >>> p1, h1 = train.fit(params, X, y, steps=5, method="active", b=1.0)
  >>> p2, h2 = train.fit(params, X, y, steps=5, method="dense", b=1.0)
  >>> bool(abs(h1["loss"] - h2["loss"]).max() <= 2e-4 * h2["loss"].max())
  True
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcorr import _checks, _linalg, _optim, ddfn, dtree, maxtree, wtree
from jaxcorr import _train_steps as _ts
from jaxcorr.nn import Params, default_threshold

__all__ = ["fit", "sgd", "LinearOptimizer", "METHODS", "DEFAULT_METHOD", "DEFAULT_LEARNING_RATE", "ddfn_cap"]

METHODS = ("dense", "active", "dtree", "wtree")
DEFAULT_METHOD = "active"
FALLBACKS = ("error", "dense")
#: Default SGD step size. The loss is 1/2 sum_i e_i^2 and f carries 1/sqrt(m), so a gradient row is
#: O(n / sqrt(m)); steps of order 1 are stable for the default threshold (the NTK-style kernel has
#: eigenvalues of order n * P[N(0,1) > b] << 1).
DEFAULT_LEARNING_RATE = 1.0
DEFAULT_CHUNK = 100


def ddfn_cap(m: int) -> int:
    r"""The per-point DDFN cap :math:`\lceil m^{4/5} \rceil` (Definition 1.3, Theorem 4.1)."""
    return ddfn.default_cap(1, int(m))


class LinearOptimizer(optax.GradientTransformation):
    """An optax ``GradientTransformation`` that jaxcorr built to be linear in the gradient.

    Made only by :func:`sgd`. Its update is ``-lr(t) * g`` or a momentum / Nesterov trace of the
    gradients times ``-lr(t)``, with ``lr(t)`` a function of the step count alone: linear in the
    gradient, free of the parameters, the same on every coordinate. So when every gradient row is a
    combination of the data points (Section 2), every update and trace row is too, and the
    compacted methods run it on the (|A|, n) coefficients ``K`` of ``W_A = W_A(0) + K X`` (the span,
    or Gram, path: O(|A| n^2) per step instead of O(|A| n d)). Known by construction, never probed.
    """

    __slots__ = ()


def sgd(learning_rate, momentum: float | None = None, nesterov: bool = False) -> LinearOptimizer:
    """``optax.sgd(learning_rate, momentum, nesterov)``, marked linear for the span path.

    Args:
      learning_rate: a finite float >= 0, or a schedule (a function of the step count only).
      momentum: None (plain SGD) or a finite float >= 0 (heavy ball, as in ``optax.sgd``).
      nesterov: Nesterov momentum (needs ``momentum``).

    Returns:
      a :class:`LinearOptimizer` with the same ``init``/``update`` as ``optax.sgd``.

    Examples:
      >>> from jaxcorr import train
      >>> opt = train.sgd(0.1, momentum=0.9)
      >>> isinstance(opt, train.LinearOptimizer)
      True
    """
    if not callable(learning_rate):
        learning_rate = _checks.check_rate("learning_rate", learning_rate)
    if momentum is not None:
        momentum = _checks.check_rate("momentum", momentum)
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum")
    base = optax.sgd(learning_rate, momentum=momentum, nesterov=bool(nesterov))
    return LinearOptimizer(base.init, base.update)


_DEFAULT_OPTIMIZERS: dict = {}
_ANALYSES: dict = {}


def _default_optimizer(learning_rate: float):
    # The same object for the same learning rate, so the compiled chunk runners are reused.
    opt = _DEFAULT_OPTIMIZERS.get(learning_rate)
    if opt is None:
        opt = _DEFAULT_OPTIMIZERS[learning_rate] = sgd(learning_rate)
    return opt


def _cached(fn, *key):
    """``fn(*key)``, cached per key (the optimizer object, sizes, dtype); unhashable: not cached."""
    try:
        hit = _ANALYSES.get((fn,) + key)
    except TypeError:  # unhashable optimizer
        return fn(*key)
    if hit is None:
        hit = _ANALYSES[(fn,) + key] = fn(*key)
    return hit


def _analysis(optimizer, m: int, d: int, dt):
    """:func:`jaxcorr._optim.analyze`, cached per (optimizer object, m, d, dtype)."""
    return _cached(_optim.analyze, optimizer, m, d, np.dtype(dt))


# ------------------------------------------------------------------------------------ validation
def _validate(params, X, y, steps, method, optimizer, learning_rate, b, opt_state, callback,
              chunk_size, fallback, width=None):
    if not (hasattr(params, "W") and hasattr(params, "a")):
        raise ValueError(f"params must be a jaxcorr.nn.Params with fields W and a, got {type(params).__name__}")
    W, a = params.W, params.a
    if np.ndim(W) != 2 or np.shape(W)[0] < 1 or np.shape(W)[1] < 1:
        raise ValueError(f"params.W must have shape (m, d) with m, d >= 1, got {np.shape(W)}")
    m, d = np.shape(W)
    if np.shape(a) != (m,):
        raise ValueError(f"params.a must have shape (m,)=({m},), got {np.shape(a)}")
    if np.ndim(X) != 2 or np.shape(X)[0] < 1:
        raise ValueError(f"X must have shape (n, d) with n >= 1, got {np.shape(X)}")
    if np.shape(X)[1] != d:
        raise ValueError(f"X must have d={d} columns to match params.W {np.shape(W)}, got {np.shape(X)}")
    n = np.shape(X)[0]
    if np.shape(y) != (n,):
        raise ValueError(f"y must have shape (n,)=({n},) to match X {np.shape(X)}, got {np.shape(y)}")
    for name, arr in (("params.W", W), ("params.a", a), ("X", X), ("y", y)):
        _checks.check_dtype(name, arr)
    dt = jnp.result_type(W)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    W, a, X, y = (jnp.asarray(v, dt) for v in (W, a, X, y))
    for name, arr in (("params.W", W), ("params.a", a), ("X", X), ("y", y)):
        if not bool(_all_finite(arr)):
            raise ValueError(f"{name} must be finite, but it holds NaN or infinite values")
    if isinstance(steps, (bool, np.bool_)):
        raise ValueError(f"steps must be an int, got {steps!r}")
    steps = _checks.check_int("steps", steps, minimum=0, type_error=ValueError)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; expected one of {FALLBACKS}")
    if width is None:
        width = m
    else:
        width = _checks.check_int("width", width, minimum=m, type_error=ValueError)
    if b is None:
        b = default_threshold(width)
    else:
        b = _checks.check_real("b", b)
    lr = _checks.check_rate("learning_rate", learning_rate)
    if optimizer is None:
        optimizer = _default_optimizer(lr)
    elif not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError("optimizer must be an optax.GradientTransformation (with init and update)")
    if chunk_size is not None:
        chunk_size = _checks.check_int("chunk_size", chunk_size, minimum=1, what="an int or None",
                                       type_error=ValueError)
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable or None")
    expected = jax.eval_shape(optimizer.init, W)
    if opt_state is None:
        opt_state = optimizer.init(W)
    else:
        got_leaves, got_def = jax.tree_util.tree_flatten(opt_state)
        exp_leaves, exp_def = jax.tree_util.tree_flatten(expected)
        if got_def != exp_def or any(np.shape(g) != e.shape for g, e in zip(got_leaves, exp_leaves)):
            raise ValueError("opt_state does not match optimizer.init(params.W): expected structure "
                             f"{exp_def} with shapes {[e.shape for e in exp_leaves]}")
        opt_state = jax.tree_util.tree_map(lambda g, e: jnp.asarray(g, e.dtype), opt_state, expected)
    return W, a, X, y, steps, b, optimizer, opt_state, chunk_size, dt, width


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


# ------------------------------------------------------------------------------------- recorder
class _Recorder:
    """Collects per-chunk history on the host, times the chunk executions, runs the callback."""

    def __init__(self, steps: int, callback):
        self.steps, self.callback = steps, callback
        self.done, self.run_s, self.stopped = 0, 0.0, False
        self.parts: list = []
        self.events: list = []

    def add(self, stats, n_steps: int, seconds: float) -> None:
        host = jax.tree_util.tree_map(lambda v: np.asarray(v)[:n_steps], stats)
        self.parts.append(host)
        self.done += n_steps
        self.run_s += seconds
        if self.callback is not None:
            info = {"step": self.done, "steps": self.steps, "loss": float(host.loss[-1]),
                    "ms_per_step": 1e3 * self.run_s / max(self.done, 1)}
            ret = self.callback(info)
            if ret is not None and bool(np.asarray(ret)):  # any truthy value (np.True_, a 0-d jax bool)
                self.stopped = True

    @property
    def remaining(self) -> int:
        return 0 if self.stopped else self.steps - self.done

    def history(self, dtype) -> dict:
        def cat(field, dt):
            vals = [getattr(p, field) for p in self.parts]
            return np.concatenate(vals).astype(dt) if vals else np.zeros((0,), dt)

        return {
            "loss": cat("loss", np.dtype(dtype)),
            "fire_mean": cat("fire_mean", np.float64),
            "fire_max": cat("fire_max", np.int64),
            "fire_union": cat("fire_union", np.int64),
            "capacity_events": self.events,
            "ms_per_step": 1e3 * self.run_s / self.done if self.done else float("nan"),
        }


def _nbytes(tree) -> int:
    """Bytes of the arrays the training loop carries and reads (its state memory).

    Typed PRNG keys (in the state of e.g. ``optax.noisy_sgd``) count as their key data.
    """
    def size(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.dtype(x.dtype).itemsize * int(np.prod(np.shape(x)))

    return int(sum(size(x) for x in jax.tree_util.tree_leaves(tree)))


def _timed(ex, carry, consts):
    # Wait for the inputs first: set-up work dispatched asynchronously (gathers, INIT) must count as
    # set-up, not as steps (without this, plain sgd, whose set-up never syncs, timed it as steps).
    jax.block_until_ready((carry, consts))
    t0 = time.perf_counter()
    out = jax.block_until_ready(ex(carry, consts))
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------------------------- dense
def _run_dense(W, a, X, y, b, optimizer, state, rec: _Recorder, chunk: int, width: int):
    m = W.shape[0]
    dt = W.dtype
    consts = _ts.DenseConsts(X=X, y=y, a=a, b=jnp.asarray(b, dt), scale=jnp.asarray(1.0 / math.sqrt(width), dt))
    carry = (W, state)
    while rec.remaining > 0:
        clen = min(chunk, rec.remaining)
        ex = _ts.compiled_runner(_ts.Config("dense", optimizer, clen), carry, consts, size=X.shape[0] * m)
        (carry, stats), secs = _timed(ex, carry, consts)
        rec.add(stats, clen, secs)
    return carry


# ----------------------------------------------------------------------------------- compact
def _gather_rows(x, idx, fill):
    return x.at[idx].get(mode="fill", fill_value=fill)


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


def _scatter_rows(full, part, idx, ax):
    x = _row_first(full, ax).at[idx].set(_row_first(part, ax).astype(full.dtype), mode="drop")
    return jnp.moveaxis(x, 0, ax)


class Compact:
    """Set-up, state and tear-down of the compacted problem over the active rows A.

    Package-internal (not in ``__all__``): used by :func:`fit` and subclassed by
    :class:`jaxcorr.sharding.ShardedCompact`.
    """

    #: method="active" / "dtree" on the span path hold K transposed, (n, L), the layout of their
    #: leaves and coefficients (no transposes per step; one device only).
    transposed_span = True

    def __init__(self, method, W, a, X, y, b, optimizer, state, verdict, width=None):
        self.method, self.optimizer = method, optimizer
        m, d = W.shape
        dt = W.dtype
        self.m, self.d, self.n, self.dt = m, d, X.shape[0], dt
        self.width = width = m if width is None else width  # the network's width (scale, DDFN cap)
        self.cap_ddfn = ddfn_cap(width)
        # --- Theorem 3.1 / 3.2 INIT over all m neurons, then the fire sets at t = 0.
        if method == "wtree":
            ip, kmax, fire_rows = self.wtree_fire_sets(W, X, b)
        else:
            ip, kmax, fire_rows = self.dtree_fire_sets(W, X, b)
        self.kmax0 = kmax
        # --- rows whose optimizer state is not the idle reference (resuming) also move: active.
        s_leaves, self.s_def = jax.tree_util.tree_flatten(state)
        self.row_axes = axes = verdict.row_axes
        self.rows = [i for i, ax in enumerate(axes) if ax is not None]
        refs = _reference_rows(optimizer, d, dt, axes)
        state_rows = np.zeros((0,), np.int64)
        if self.rows:
            off = _rows_off_reference([s_leaves[i] for i in self.rows], refs, tuple(axes[i] for i in self.rows))
            state_rows = np.flatnonzero(np.asarray(off))
        A = np.union1d(fire_rows, state_rows).astype(np.int64)
        self.n_active = L = int(A.size)
        self.L = Lp = maxtree.bucket(L + 1)  # at least one padding row: the idle-row guard reads the last
        if not _cached(_optim.same_program, optimizer, (Lp,), d, np.dtype(dt)):
            raise _Refused(f"its computation on {Lp} rows differs from that on {m} rows beyond shapes")
        idx = np.full((Lp,), m, np.int32)
        idx[:L] = A
        self.idx = idx = jnp.asarray(idx)
        W_A = _gather_rows(W, idx, 0)
        ip_A = ip.at[:, idx].get(mode="fill", fill_value=-jnp.inf)  # (n, Lp), the restricted leaves
        it = iter(refs)
        s_A = [(_restrict(x, idx, ax, next(it)) if ax is not None else x) for x, ax in zip(s_leaves, axes)]
        self.W_A0, self.full_state = W_A, state
        self.span = isinstance(optimizer, LinearOptimizer) and all(axes[i] == 0 for i in self.rows)
        coef = self._span_state(s_A, X, dt) if self.span else None
        self.span = coef is not None
        gram = _linalg.inner(X, X) if self.span else None
        self.kt = self.span and method in ("active", "dtree") and self.transposed_span
        P0 = jnp.zeros((Lp, self.n), dt) if self.span else W_A
        if self.kt:
            P0, coef = P0.T, [(x.T if i in self.rows else x) for i, x in enumerate(coef)]
        state_A = jax.tree_util.tree_unflatten(self.s_def, coef if self.span else s_A)
        leaves0 = ip_A if method != "wtree" else ip_A.T
        if method == "active":
            self.carry = (P0, state_A)
        else:
            self.carry = (maxtree.build(leaves0).levels, P0, state_A)
        self.consts = _ts.CompactConsts(
            X=X, y=y, a=_gather_rows(a, idx, 0), b=jnp.asarray(b, dt),
            scale=jnp.asarray(1.0 / math.sqrt(width), dt), n_real=jnp.asarray(L, jnp.int32), gram=gram,
            ip0=leaves0 if self.span else None, ref=() if self.span else refs)
        self.capacity = None
        if method == "dtree":
            self.capacity_ceiling = min(Lp, self.cap_ddfn)
            self.capacity = maxtree.allocate(kmax, ceiling=max(self.capacity_ceiling, kmax, 1))

    def _span_state(self, s_A, X, dt):
        """The optimizer state in coefficient form (rows (L, n) with ``state = coef X``), or None
        if a resumed state does not lie in the span of the data (then the generic path runs)."""
        Lp, n = self.L, self.n
        tmpl_leaves, tmpl_def = jax.tree_util.tree_flatten(self.optimizer.init(jnp.zeros((Lp, n), dt)))
        if tmpl_def != self.s_def:
            return None
        pinv = jnp.linalg.pinv(X.astype(jnp.float64) if jax.config.jax_enable_x64 else X)
        tol = 1e-5 if np.dtype(dt).itemsize <= 4 else 1e-12
        out = []
        for i, (leaf, tl) in enumerate(zip(s_A, tmpl_leaves)):
            if i not in self.rows:
                if np.shape(leaf) != np.shape(tl):
                    return None
                out.append(leaf)
            elif not bool(jnp.any(leaf != 0)):
                out.append(jnp.zeros((Lp, n), tl.dtype))
            else:
                coef = _linalg.matmul(leaf.astype(pinv.dtype), pinv)
                resid = jnp.abs(_linalg.matmul(coef, X.astype(pinv.dtype)) - leaf).max()
                if not bool(resid <= tol * (jnp.abs(leaf).max() + 1e-30)):
                    return None  # the resumed state is not in span(X): use the generic path
                out.append(coef.astype(tl.dtype))
        return out

    def dtree_fire_sets(self, W, X, b):
        """DTree INIT over all m neurons and the fire sets at t = 0: ``(ip (n, m), max_i k_i, rows)``.

        The sharded subclass in :mod:`jaxcorr.sharding` overrides it to run sharded by points.
        """
        m = W.shape[0]
        full = dtree.init(W, X)  # Lemma D.2, O(nmd)
        ip = dtree.inner_products(full)  # (n, m)
        counts0 = np.asarray(jnp.sum(ip > b, axis=1))
        kmax = int(counts0.max())
        # Algorithm 8 line 12 at t = 0: S_{i,fire}(0) <- CDT.QUERY(i, b).
        fr = maxtree.query_all(full.tree, b, capacity=maxtree.allocate(kmax, 1, 0, ceiling=m))
        fire_rows = np.unique(np.asarray(fr.indices)[np.asarray(fr.valid)])
        return ip, kmax, fire_rows

    def wtree_fire_sets(self, W, X, b):
        """WTree INIT (Lemma D.6) and Algorithm 9 lines 12-17 at t = 0 (capacity n per row)."""
        full = wtree.init(W, X)  # Lemma D.6, O(nmd)
        ipT = wtree.inner_products(full)  # (m, n)
        fr = maxtree.query_all(full.tree, b, capacity=self.n)
        fire_rows = np.flatnonzero(np.asarray(jnp.any(fr.valid, axis=1)))
        kmax = int(np.asarray(jnp.sum(ipT > b, axis=0)).max())
        return ipT.T, kmax, fire_rows

    def config(self, chunk_len: int):
        return _ts.Config(self.method, self.optimizer, chunk_len, self.capacity or 0, self.span,
                          tuple(self.row_axes), self.kt)

    def runner(self, cfg, carry):
        """The compiled chunk runner for ``cfg`` (the sharded subclass in jaxcorr.sharding overrides it)."""
        return _ts.compiled_runner(cfg, carry, self.consts, size=self.n * self.L)

    def gathered(self, carry):
        """``(P, state_A, X)`` of ``carry`` on the default device (the sharded subclass gathers)."""
        P, state_A = carry[-2], carry[-1]
        if self.kt:
            P = P.T
            leaves = [(x.T if i in self.rows else x) for i, x in enumerate(jax.tree_util.tree_leaves(state_A))]
            state_A = jax.tree_util.tree_unflatten(self.s_def, leaves)
        return P, state_A, self.consts.X

    def to_full(self, W, carry):
        """Scatter the compacted rows and optimizer state back to full (m, d) shape (step (c))."""
        P, state_A, X = self.gathered(carry)
        W_A = self.W_A0 + _linalg.matmul(P, X) if self.span else P
        W_new = W.at[self.idx].set(W_A.astype(W.dtype), mode="drop")
        full_leaves = jax.tree_util.tree_leaves(self.full_state)
        out = []
        for i, (fl, leaf) in enumerate(zip(full_leaves, jax.tree_util.tree_leaves(state_A))):
            if i in self.rows:
                rows = _linalg.matmul(leaf, X) if self.span else leaf
                out.append(_scatter_rows(fl, rows, self.idx, self.row_axes[i]))
            else:
                out.append(leaf)
        return W_new, jax.tree_util.tree_unflatten(self.s_def, out)


class _Refused(Exception):
    """The optimizer cannot run on the compacted rows (raised at set-up, before any step)."""


class _Stop(Exception):
    """The compacted run cannot go on exactly (DDFN cap, or the idle-row guard fired)."""


def _cap_message(m, cap, k, step):
    return (f"a data point's fire set reached {k} neurons at step {step}, beyond the DDFN cap "
            f"ceil(m^(4/5)) = {cap} per point for m = {m} (Definition 1.3, Theorem 4.1); the sparse "
            "methods do not apply. Lower the learning rate, raise b, or pass fallback='dense'.")


def _moved_message(step):
    return (f"the optimizer would move rows whose gradient and state are zero at step {step} (the idle-row "
            "guard fired: e.g. a constant added to every update, or a NaN); the compacted methods would "
            "no longer follow the dense trajectory. Training is exact up to that step; use method='dense' "
            "or fallback='dense'.")


def _run_compact(comp: Compact, rec: _Recorder, chunk: int):
    """Host loop over jitted chunks; overflow -> rerun the chunk with a larger capacity.

    On the DDFN cap or the idle-row guard, ``comp.carry`` is left at the start of the chunk (an
    exact state, ``rec.done`` steps in) and :class:`_Stop` is raised.
    """
    carry = comp.carry
    while rec.remaining > 0:
        clen = min(chunk, rec.remaining)
        ex = comp.runner(comp.config(clen), carry)
        (new_carry, stats), secs = _timed(ex, carry, comp.consts)
        overflow = np.asarray(stats.overflow)
        kmax = np.asarray(stats.fire_max)
        moved = np.asarray(stats.moved)
        bad = np.flatnonzero(overflow | (kmax > comp.cap_ddfn) | moved)
        if bad.size:
            j = int(bad[0])
            step = rec.done + j
            if moved[j] and not overflow[j] and kmax[j] <= comp.cap_ddfn:
                comp.carry = carry
                raise _Stop(_moved_message(step))
            if kmax[j] > comp.cap_ddfn:
                comp.carry = carry
                raise _Stop(_cap_message(comp.width, comp.cap_ddfn, int(kmax[j]), step))
            old = comp.capacity
            if old >= comp.capacity_ceiling:  # cannot happen below the cap; defensive
                comp.carry = carry
                raise _Stop(_cap_message(comp.width, comp.cap_ddfn, int(kmax[j]), step))
            new = maxtree.allocate(int(kmax[j]), ceiling=comp.capacity_ceiling, previous=old)
            rec.events.append({"step": step, "old_capacity": old, "new_capacity": new,
                               "reason": f"overflow: a fire set exceeded the capacity {old}; chunk rerun"})
            comp.capacity = new
            continue
        carry = new_carry
        rec.add(stats, clen, secs)
    comp.carry = carry
    return carry


# ----------------------------------------------------------------------------------------- fit
def fit(
    params: Params,
    X: jax.Array,
    y: jax.Array,
    *,
    steps: int,
    method: str = DEFAULT_METHOD,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    b: float | None = None,
    opt_state: Any = None,
    callback: Callable[[dict], bool | None] | None = None,
    chunk_size: int | None = None,
    fallback: str = "error",
    mesh=None,
    width: int | None = None,
):
    r"""Train ``W`` of 2NN(m, b) (Definition 2.1) by gradient descent for ``steps`` steps.

    Args:
      params: :class:`jaxcorr.nn.Params` with ``W`` (m, d) and ``a`` (m,). Only ``W`` is trained.
        Computation runs in ``params.W``'s floating dtype (float32, or float64 with x64).
      X: (n, d) data points, finite.
      y: (n,) targets, finite.
      steps: number of steps (>= 0; 0 returns ``params`` and an empty history).
      method: ``"active"`` (default: GD on the active rows, masked fire sets), ``"dense"``,
        ``"dtree"`` (Algorithm 8) or ``"wtree"`` (Algorithm 9).
      optimizer: any optax ``GradientTransformation``; default :func:`sgd` ``(learning_rate)``. The
        sparse methods run it only when it is exact on the active rows by construction (see the
        module docstring: sgd, momentum, nesterov, adam, radam, rmsprop, adagrad, MultiSteps,
        clipping, schedules, any accumulator dtype, ...), and guard every step; otherwise (weight
        decay, LARS/LAMB, adafactor, sm3, ...) they raise ``ValueError`` before any step, or run
        dense with ``fallback="dense"``. Use :func:`sgd` (not ``optax.sgd``) for the faster span
        path. Reuse the same optimizer object across calls to reuse compiled code.
      learning_rate: step size of the default optimizer (default 1.0, finite, >= 0); ignored if
        ``optimizer`` is given.
      b: threshold of :math:`\sigma_b`; default :func:`jaxcorr.nn.default_threshold` ``(m)`` =
        :math:`\sqrt{0.4 \ln m}`.
      opt_state: optimizer state to resume from, as produced by ``optimizer.init(params.W)`` (full
        (m, d) leaves); default a fresh ``optimizer.init(params.W)``.
      callback: called on the host after every chunk with a dict with keys ``"step"`` (steps done so
        far in this call), ``"steps"``, ``"loss"`` (latest loss) and ``"ms_per_step"``; a truthy
        return (``True``, ``np.True_``, a 0-d JAX bool, 1) stops training after that chunk.
      chunk_size: steps per jitted ``lax.scan`` chunk (default ``min(steps, 100)``).
      fallback: ``"error"`` (default) raises ``ValueError`` when a fire set exceeds the DDFN cap
        :math:`\lceil m^{4/5}\rceil`, the optimizer is refused, or the idle-row guard fires;
        ``"dense"`` continues with the dense method instead from the last exact state (recorded in
        ``capacity_events``).
      mesh: ``None`` (default: one device), or a :class:`jax.sharding.Mesh` / ``NamedSharding`` to run
        ``method="active"`` or ``"dtree"`` with the data points (and the ``n`` trees) split across its devices
        (Section 5's parallel updates; see :mod:`jaxcorr.sharding`). Same trajectory to float
        rounding; the history gains ``"shards"`` (the number of point blocks) and
        ``"bytes_per_device"`` (the sharded training state on the most loaded device).
      width: the network's width m when ``params`` holds only some of its rows (default
        ``params.W.shape[0]``). The scale :math:`1/\sqrt{m}`, the default ``b`` and the DDFN cap use
        ``width``; the rows left out must be rows that never fire (the active-set invariant below),
        as for the implicit wide models built from a key. Must be >= ``params.W.shape[0]``.

    Returns:
      ``(params, history)``: the trained :class:`Params` (same ``a``, same dtype) and a dict of host
      values: ``"loss"`` (steps,) with ``loss[t] = L(W(t))``; ``"fire_mean"``, ``"fire_max"``
      (mean / max over i of ``k_{i,t}``, Definition 2.4) and ``"fire_union"``
      (:math:`|\bigcup_i S_{i,fire}(t)|`), each (steps,); ``"capacity_events"`` (list of dicts with
      ``step``, ``old_capacity``, ``new_capacity``, ``reason``); ``"opt_state"`` (the final state,
      full shape); ``"ms_per_step"`` (wall time of the jitted chunks per step, set-up and
      compilation excluded); ``"setup_s"`` (everything else); ``"method"``; ``"b"``; plus
      ``"n_active"`` (|A|), ``"span"`` (Gram path used), ``"fallback_step"`` (None, or the step
      from which the dense method ran) and ``"state_bytes"`` (bytes of the arrays the training loop
      carries and reads: rows, optimizer state, trees, data; all devices together).

    Raises:
      ValueError: bad shapes, non-finite values, ``steps < 0``, unknown ``method`` or ``fallback``,
        non-finite ``b``, an ``opt_state`` that does not match, and (with ``fallback="error"``) a
        fire set beyond the DDFN cap or an optimizer the sparse methods cannot use.

    Exactness: dense, active, dtree and wtree compute the same fire sets (strict ``>``, Definition 2.4) and
    the same gradients; they differ only by float rounding in the order of sums (and, for the Gram
    path, ``W_A(0) + K X`` instead of a running sum). Resuming (``steps=A`` then ``steps=B`` with
    the returned ``params`` and ``history["opt_state"]``) reproduces ``steps=A+B`` bitwise for
    ``"dense"`` and to rounding (about 1e-6 relative in float32) for ``"dtree"``/``"wtree"``.
    """
    t_start = time.perf_counter()
    W, a, X, y, steps, b, optimizer, state, chunk_size, dt, width = _validate(
        params, X, y, steps, method, optimizer, learning_rate, b, opt_state, callback, chunk_size, fallback,
        width)
    layout = None
    if mesh is not None:
        from jaxcorr import sharding as _sharding  # noqa: PLC0415 (sharding imports this module)

        layout = _sharding.fit_layout(mesh, method)
    rec = _Recorder(steps, callback)
    chunk = min(max(steps, 1), chunk_size or DEFAULT_CHUNK)
    extra = {"n_active": int(W.shape[0]), "span": False, "fallback_step": None,
             "state_bytes": _nbytes((W, state, a, X, y))}
    W_out, state_out = W, state
    if steps > 0 and method == "dense":
        W_out, state_out = _run_dense(W, a, X, y, b, optimizer, state, rec, chunk, width)
    elif steps > 0:
        verdict = _analysis(optimizer, W.shape[0], W.shape[1], dt)
        comp, reason = None, verdict.reason
        if verdict.ok:
            args = (method, W, a, X, y, b, optimizer, state, verdict)
            try:
                if layout is None:
                    comp = Compact(*args, width=width)
                else:
                    comp = _sharding.ShardedCompact(*args, width=width, layout=layout)
            except _Refused as err:
                reason = str(err)
        if comp is None:
            msg = (f"method={method!r} runs the optimizer on the active rows only, which is exact only for "
                   f"an optimizer that keeps rows apart and leaves idle rows alone, but this one does not: "
                   f"{reason}. Use method='dense' or fallback='dense'.")
            if fallback == "error":
                raise ValueError(msg)
            rec.events.append({"step": 0, "old_capacity": None, "new_capacity": None,
                               "reason": "fallback to dense: " + msg})
        else:
            extra.update(n_active=comp.n_active, span=comp.span, state_bytes=_nbytes((comp.carry, comp.consts)))
            if comp.capacity is not None:
                rec.events.append({"step": 0, "old_capacity": None, "new_capacity": comp.capacity,
                                   "reason": f"initial: max_i k_i(0) = {comp.kmax0} with headroom"})
        try:
            if comp is not None:
                if comp.kmax0 > comp.cap_ddfn:
                    raise _Stop(_cap_message(comp.width, comp.cap_ddfn, comp.kmax0, 0))
                _run_compact(comp, rec, chunk)
                W_out, state_out = comp.to_full(W, comp.carry)
        except _Stop as err:
            if fallback == "error":
                raise ValueError(str(err)) from None
            W_out, state_out = comp.to_full(W, comp.carry)
            rec.events.append({"step": rec.done, "old_capacity": comp.capacity, "new_capacity": None,
                               "reason": "fallback to dense: " + str(err)})
        if rec.events and rec.events[-1]["reason"].startswith("fallback to dense"):
            extra["fallback_step"] = rec.done
            W_out, state_out = _run_dense(W_out, a, X, y, b, optimizer, state_out, rec, chunk, width)
    W_out = jax.block_until_ready(W_out)
    if layout is not None:
        extra.update(_sharding.history_info(layout, comp))
    hist = rec.history(dt)
    hist.update(opt_state=state_out, method=method, b=float(b),
                setup_s=time.perf_counter() - t_start - rec.run_s, **extra)
    return Params(W=W_out.astype(dt), a=params.a), hist
