r"""Gradient-descent training of 2NN(m, b): dense, on the active rows, or on the correlation trees.

:func:`fit` trains ``W`` (``a`` stays fixed, Section 2) with any optax optimizer, by one of

- ``"dense"``: plain XLA on all ``m`` neurons, O(nmd) per step (the reference);
- ``"active"`` (the default): the same GD on the active rows ``A`` only (below), with the fire
  sets from the masked comparison :math:`\langle w_r, x_i\rangle > b` over (n, |A|) every step and
  no trees in the loop; ``A`` comes from the same comparison on the leaves of INIT at set-up
  (dtree and wtree find it by QUERY on their trees). Inside ``A`` about 1/n of the rows fire per point, so a frontier would cost as much
  as the masked pass it replaces: this is the fastest exact method on one device and on a mesh;
- ``"dtree"``: Algorithm 8 / Theorem 4.1 -- fire sets from Correlation DTree queries (Theorem 3.1),
  forward pass from the stored inner products, sparse gradient, tree updates for the changed rows;
- ``"wtree"``: Algorithm 9 / Theorem 4.2 -- :math:`\tilde S_{r,fire}` from Correlation WTree queries
  (Theorem 3.2) and :math:`S_{i,fire}` derived from them.

All follow the same trajectory (up to float rounding). Training is three pure pieces over one
:class:`TrainState` pytree: :func:`setup` (host: INIT, the active set, capacities),
:func:`run_chunk` (jitted: a ``lax.scan`` over steps, the state donated) and :func:`finalize` (back
to the caller's shapes); :func:`fit` is the host loop over chunks between them (callbacks,
capacity checks, fallbacks).

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
the end (when ``A`` is every held row, as for the implicit wide models, the held rows are used as
they are and sliced back, with no gathered copy and no scatter). A capacity never needs to exceed ``|A|``. The span (Gram) path, which runs the optimizer on
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

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcorr import _checks, _setup, maxtree, sharding
from jaxcorr import _train_steps as _ts
from jaxcorr._history import CapacityGrown, FellBackToDense, History, InitialCapacity, Recorder
from jaxcorr._state import Coefficients, Config, StepConfig, StepStats, TrainState
from jaxcorr.nn import Params, default_threshold

__all__ = ["fit", "setup", "run_chunk", "finalize", "coefficients", "Coefficients", "TrainState", "Config", "StepConfig", "StepStats", "History",
           "InitialCapacity", "CapacityGrown", "FellBackToDense", "sgd", "LinearOptimizer", "METHODS",
           "DEFAULT_METHOD", "DEFAULT_LEARNING_RATE", "ddfn_cap"]

METHODS = ("dense", "active", "dtree", "wtree")
DEFAULT_METHOD = "active"
FALLBACKS = ("error", "dense")
#: Default SGD step size. The loss is 1/2 sum_i e_i^2 and f carries 1/sqrt(m), so a gradient row is
#: O(n / sqrt(m)); steps of order 1 are stable for the default threshold (the NTK-style kernel has
#: eigenvalues of order n * P[N(0,1) > b] << 1).
DEFAULT_LEARNING_RATE = 1.0
DEFAULT_CHUNK = 100


ddfn_cap = _setup.ddfn_cap


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


def _default_optimizer(learning_rate: float):
    # The same object for the same learning rate, so the compiled chunk runners are reused.
    opt = _DEFAULT_OPTIMIZERS.get(learning_rate)
    if opt is None:
        opt = _DEFAULT_OPTIMIZERS[learning_rate] = sgd(learning_rate)
    return opt


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
    finite = np.asarray(_all_finite((W, a, X, y)))  # one compiled check for the four
    for name, ok in zip(("params.W", "params.a", "X", "y"), finite):
        if not ok:
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


def _check_coefficients(c, method, optimizer, opt_state, mesh, m: int, n: int, dt):
    """``c`` as a validated :class:`Coefficients` (K and its state in ``dt``), or None."""
    if c is None:
        return None
    if not isinstance(c, Coefficients):
        raise ValueError(f"coefficients must be a jaxcorr.train.Coefficients (history.coefficients), got {type(c).__name__}")
    if method == "dense" or mesh is not None or not isinstance(optimizer, LinearOptimizer):
        raise ValueError("coefficients= continues a span-path run: method 'active', 'dtree' or 'wtree' with "
                         f"optimizer=train.sgd(...) on one device (got method={method!r}, "
                         f"optimizer {type(optimizer).__name__}, mesh={'given' if mesh is not None else None})")
    if opt_state is not None:
        raise ValueError("pass the optimizer's state inside coefficients (coefficients.opt_state), not as opt_state")
    rows = np.asarray(c.rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"coefficients.rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
    if rows.size and (rows[0] < 0 or rows[-1] >= m or np.any(np.diff(rows) <= 0)):
        raise ValueError(f"coefficients.rows must be sorted distinct rows of params.W in [0, {m})")
    if np.shape(c.K) != (rows.size, n):
        raise ValueError(f"coefficients.K must have shape (len(rows), n)=({rows.size}, {n}), got {np.shape(c.K)}")
    K = jnp.asarray(c.K, dt)
    exp_leaves, exp_def = jax.tree_util.tree_flatten(jax.eval_shape(optimizer.init, K))
    got_leaves, got_def = jax.tree_util.tree_flatten(c.opt_state)
    if got_def != exp_def or any(np.shape(g) != e.shape for g, e in zip(got_leaves, exp_leaves)):
        raise ValueError("coefficients.opt_state does not match optimizer.init(coefficients.K): expected "
                         f"{exp_def} with shapes {[e.shape for e in exp_leaves]}")
    state = jax.tree_util.tree_unflatten(exp_def, [jnp.asarray(g, e.dtype) for g, e in zip(got_leaves, exp_leaves)])
    if not bool(np.all(np.asarray(_all_finite((K, *jax.tree_util.tree_leaves(state)))))):
        raise ValueError("coefficients must be finite, but K or its state holds NaN or infinite values")
    return Coefficients(rows=rows.astype(np.int64), K=K, opt_state=state)


@jax.jit
def _all_finite(arrays):
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays])


# ----------------------------------------------------------------- setup -> run_chunk -> finalize
def _setup_checked(method, W, a, X, y, b, optimizer, state, width, lay, coefficients=None):
    """:func:`setup` on validated arguments; raises ``_setup.Refused`` for an optimizer the compacted
    methods cannot run."""
    if method == "dense":
        return _setup.dense(W, a, X, y, b, optimizer, state, width)
    verdict = _setup.analysis(optimizer, W.shape[0], W.shape[1], W.dtype)
    if not verdict.ok:
        raise _setup.Refused(verdict.reason)
    return _setup.compact(method, W, a, X, y, b, optimizer, state, verdict, width=width,
                          linear=isinstance(optimizer, LinearOptimizer), lay=lay, coefficients=coefficients)


def _refused_message(method, reason) -> str:
    return (f"method={method!r} runs the optimizer on the active rows only, which is exact only for "
            f"an optimizer that keeps rows apart and leaves idle rows alone, but this one does not: "
            f"{reason}. Use method='dense' or fallback='dense'.")


def setup(params: Params, X, y, *, method: str = DEFAULT_METHOD, optimizer=None,
          learning_rate: float = DEFAULT_LEARNING_RATE, b: float | None = None, opt_state: Any = None,
          mesh=None, width: int | None = None, coefficients: Coefficients | None = None) -> tuple[Config, TrainState]:
    r"""Set up training (host side): INIT, the active set A, the capacities, one :class:`TrainState`.

    For the compacted methods this is the set-up of Algorithm 8 (DTree INIT, Lemma D.2, and
    ``S_{i,fire}(0)`` by QUERY) or Algorithm 9 (WTree INIT, Lemma D.6, and
    :math:`\tilde S_{r,fire}(0)`), restricted to the rows A that can move (module docstring), with
    the DTree frontier capacity sized from the measured ``max_i k_{i,0}`` by
    :func:`jaxcorr.maxtree.allocate`. Every array-valued piece is computed by a few jitted calls.

    Args:
      params, X, y, method, optimizer, learning_rate, b, opt_state, mesh, width, coefficients: as for
        :func:`fit`.

    Returns:
      ``(cfg, state)``: the static :class:`Config` (hashable: sizes, capacity, method, optimizer,
      layout) and the :class:`TrainState` pytree to pass to :func:`run_chunk`.

    Raises:
      ValueError: as :func:`fit` for bad arguments, or an optimizer the compacted methods refuse.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, nn, train
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> params = nn.init(jax.random.key(0), m=256, d=8)
      >>> cfg, state = train.setup(params, X, y, method="dtree", b=1.0)
      >>> state, stats = train.run_chunk(cfg, state, 5)       # Algorithm 8, five steps
      >>> bool(stats.overflow.any())                          # else: re-allocate and rerun
      False
      >>> p1, opt_state = train.finalize(cfg, state)
      >>> p2, h = train.fit(params, X, y, steps=5, method="dtree", b=1.0)
      >>> bool(abs(p1.W - p2.W).max() < 1e-5)
      True
    """
    W, a, X, y, _, b, optimizer, state, _, _, width = _validate(
        params, X, y, 0, method, optimizer, learning_rate, b, opt_state, None, None, "error", width)
    c0 = _check_coefficients(coefficients, method, optimizer, opt_state, mesh, W.shape[0], X.shape[0], W.dtype)
    lay = None if mesh is None else sharding.fit_layout(mesh, method)
    try:
        return _setup_checked(method, W, a, X, y, b, optimizer, state, width, lay, c0)
    except _setup.Refused as err:
        raise ValueError(_refused_message(method, str(err))) from None


def run_chunk(cfg: Config, state: TrainState, steps: int, *, donate: bool = True):
    r"""Run ``steps`` training steps: ``TrainState -> (TrainState, StepStats)``, pure and jitted.

    One ``lax.scan`` over the step of ``cfg.step.method`` (Algorithm 8 for ``"dtree"``, Theorem
    4.1; Algorithm 9 for ``"wtree"``, Theorem 4.2; masked fire sets for ``"active"``; all rows for
    ``"dense"``), under ``jax.shard_map`` when ``cfg`` has a mesh layout. Compiled once per
    ``(cfg.step, steps, shapes)`` by ``jax.jit``'s own cache.

    Args:
      cfg: from :func:`setup` (a new capacity: ``cfg._replace(step=cfg.step._replace(capacity=c))``).
      state: the :class:`TrainState`.
      steps: number of steps (static).
      donate: give ``state``'s changing buffers to the result (``state`` is invalid afterwards);
        pass False to keep ``state`` for a rerun (the overflow loop of :func:`fit`).

    Returns:
      ``(state, stats)`` with :class:`StepStats` stacked over the steps. ``stats.overflow`` (dtree)
      flags a step whose fire set outgrew the capacity: that chunk is not exact and must be rerun
      from the old state with a larger capacity; ``stats.moved`` flags the idle-row guard.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, nn, train
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> cfg, state = train.setup(nn.init(jax.random.key(0), 256, 8), X, y, b=1.0)
      >>> state, stats = train.run_chunk(cfg, state, 3)
      >>> stats.loss.shape
      (3,)
    """
    carry, stats = _ts.run(cfg.step, steps, state.carry, state.consts, donate=donate)
    rows, opt_state, levels = carry
    return state._replace(rows=rows, opt_state=opt_state, levels=levels), stats


def finalize(cfg: Config, state: TrainState) -> tuple[Params, Any]:
    """The trained :class:`~jaxcorr.nn.Params` and optimizer state in the caller's full shapes.

    For the compacted methods the rows of A (and their optimizer state) go back into the held rows;
    rows outside A never moved (the active-set invariant). The result shares no buffer with
    ``state``, so ``state`` may go on training (:func:`run_chunk`) after a checkpoint.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, nn, train
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> params = nn.init(jax.random.key(0), 256, 8)
      >>> cfg, state = train.setup(params, X, y, b=1.0)
      >>> p, opt_state = train.finalize(cfg, state)            # no steps: the same weights
      >>> bool((p.W == params.W).all())
      True
    """
    W, opt_state = _setup.finalize(cfg, state)
    a = state.consts.a if cfg.step.method == "dense" else state.base.a
    return Params(W=W, a=a), opt_state


def coefficients(cfg: Config, state: TrainState) -> Coefficients | None:
    """The trained rows of a span-path run as :class:`Coefficients` (None for other runs).

    Rows ``rows`` of the held ``W`` are ``W_base[rows] + K X`` where ``W_base`` is what
    :func:`setup` was given, and ``opt_state`` is the optimizer's state over ``K``: ``n`` numbers
    per moved row. The result shares no buffer with ``state``. :func:`fit` returns it as
    ``history.coefficients`` and takes it back as ``coefficients=`` to go on exactly.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, nn, train
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> start = nn.init(jax.random.key(0), 256, 8)
      >>> cfg, st = train.setup(start, X, y, b=1.0)
      >>> c = train.coefficients(cfg, train.run_chunk(cfg, st, 3)[0])   # history.coefficients of fit
      >>> trained, _ = train.fit(start, X, y, steps=3, b=1.0)
      >>> bool(abs(trained.W[c.rows] - (start.W[c.rows] + c.K @ X)).max() < 1e-6)
      True
    """
    return _setup.coefficients(cfg, state)


# --------------------------------------------------------------------------------- the host loop
class _Stop(Exception):
    """The compacted run cannot go on exactly (DDFN cap, or the idle-row guard fired); carries the
    exact state at the start of the chunk (valid only when that chunk was not donated)."""

    def __init__(self, msg, cfg=None, state=None):
        super().__init__(msg)
        self.cfg, self.state = cfg, state


def _cap_message(m, cap, k, step):
    return (f"a data point's fire set reached {k} neurons at step {step}, beyond the DDFN cap "
            f"ceil(m^(4/5)) = {cap} per point for m = {m} (Definition 1.3, Theorem 4.1); the sparse "
            "methods do not apply. Lower the learning rate, raise b, or pass fallback='dense'.")


def _moved_message(step):
    return (f"the optimizer would move rows whose gradient and state are zero at step {step} (the idle-row "
            "guard fired: e.g. a constant added to every update, or a NaN); the compacted methods would "
            "no longer follow the dense trajectory. Training is exact up to that step; use method='dense' "
            "or fallback='dense'.")


def _timed_chunk(cfg, state, steps, donate):
    """:func:`run_chunk`, compiled first so that the seconds returned are the run's alone."""
    _ts.compile(cfg.step, steps, state.carry, state.consts, donate=donate)
    # Wait for the inputs first: set-up work dispatched asynchronously (gathers, INIT) counts as
    # set-up, not as steps (without this, plain sgd, whose set-up never syncs, timed it as steps).
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    out = jax.block_until_ready(run_chunk(cfg, state, steps, donate=donate))
    return out, time.perf_counter() - t0


def _check_chunk(cfg: Config, stats, done: int):
    """``None`` if the chunk is exact; else the new capacity after an overflow; raises :class:`_Stop`
    (without state) past the DDFN cap or when the idle-row guard fired. The dense method has none."""
    if cfg.step.method == "dense":
        return None
    overflow, kmax, moved = (np.asarray(v) for v in (stats.overflow, stats.fire_max, stats.moved))
    bad = np.flatnonzero(overflow | (kmax > cfg.cap_ddfn) | moved)
    if not bad.size:
        return None
    j = int(bad[0])
    if moved[j] and not overflow[j] and kmax[j] <= cfg.cap_ddfn:
        raise _Stop(_moved_message(done + j))
    old = cfg.step.capacity
    if kmax[j] > cfg.cap_ddfn or old >= cfg.capacity_ceiling:  # the second cannot happen below the cap
        raise _Stop(_cap_message(cfg.width, cfg.cap_ddfn, int(kmax[j]), done + j))
    return maxtree.allocate(int(kmax[j]), ceiling=cfg.capacity_ceiling, previous=old)


def _loop(cfg: Config, state: TrainState, rec: Recorder, chunk: int, donate: bool):
    """The host loop over chunks, as jax-md's neighbour-list loop: run a chunk; if a fire set
    overflowed its capacity (``did_buffer_overflow``), re-allocate (:func:`jaxcorr.maxtree.allocate`)
    and rerun the chunk from its starting state; else keep it. Returns ``(cfg, state)``; raises
    :class:`_Stop` with the exact state at the start of the failing chunk."""
    while rec.remaining > 0:
        clen = min(chunk, rec.remaining)
        (new, stats), secs = _timed_chunk(cfg, state, clen, donate)
        try:
            capacity = _check_chunk(cfg, stats, rec.done)
        except _Stop as err:
            raise _Stop(str(err), cfg, state) from None
        if capacity is not None:
            rec.events.append(CapacityGrown(step=rec.done + int(np.argmax(np.asarray(stats.overflow))),
                                            old=cfg.step.capacity, new=capacity))
            cfg = cfg._replace(step=cfg.step._replace(capacity=capacity))
            continue
        state = new
        rec.add(stats, clen, secs, snapshot=lambda cfg=cfg, state=state: _setup.finalize(cfg, state),
                coefficients=lambda cfg=cfg, state=state: _setup.coefficients(cfg, state))
    return cfg, state


def _dense(W, a, X, y, b, optimizer, state, width, rec, chunk):
    cfg, ts = _setup.dense(W, a, X, y, b, optimizer, state, width)
    cfg, ts = _loop(cfg, ts, rec, chunk, donate=True)
    return (*_setup.finalize(cfg, ts, copy=False), None)


def _compact(method, W, a, X, y, b, optimizer, state, width, lay, fallback, rec, chunk, info, c0):
    """The compacted run with its DDFN cap, refused-optimizer and idle-row fallbacks; returns
    ``(W, opt_state, coefficients)``."""
    try:
        cfg, ts = _setup_checked(method, W, a, X, y, b, optimizer, state, width, lay, c0)
    except _setup.Refused as err:
        msg = _refused_message(method, str(err))
        if fallback == "error" or c0 is not None:  # W holds base rows: nothing dense could start from
            raise ValueError(msg) from None
        rec.events.append(FellBackToDense(step=0, reason=msg))
        info["fallback_step"] = 0
        return _dense(W, a, X, y, b, optimizer, state, width, rec, chunk)
    info.update(n_active=cfg.n_active, span=cfg.step.span, state_bytes=_setup.nbytes((ts.carry, ts.consts)))
    if lay is not None:
        info.update(shards=lay.shards, bytes_per_device=max(sharding.bytes_per_device((ts.carry, ts.consts)).values()))
    if method == "dtree":
        rec.events.append(InitialCapacity(capacity=cfg.step.capacity, kmax=cfg.kmax0))
    try:
        if cfg.kmax0 > cfg.cap_ddfn:
            raise _Stop(_cap_message(cfg.width, cfg.cap_ddfn, cfg.kmax0, 0), cfg, ts)
        # keep each chunk's input when it may be rerun (overflow) or continued dense (fallback)
        cfg, ts = _loop(cfg, ts, rec, chunk, donate=method != "dtree" and fallback == "error")
        return (*_setup.finalize(cfg, ts), _setup.coefficients(cfg, ts))
    except _Stop as err:
        if fallback == "error":
            raise ValueError(str(err)) from None
        W_out, s_out = _setup.finalize(err.cfg, err.state)
        rec.events.append(FellBackToDense(step=rec.done, reason=str(err),
                                          capacity=err.cfg.step.capacity if method == "dtree" else None))
        info["fallback_step"] = rec.done
        return _dense(W_out, a, X, y, b, optimizer, s_out, width, rec, chunk)


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
    coefficients: Coefficients | None = None,
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
        far in this call), ``"steps"``, ``"loss"`` (latest loss), ``"ms_per_step"`` and
        ``"snapshot"`` (a function returning ``(params, opt_state)`` after that chunk, as ``fit``
        would return them: a checkpoint without a new set-up; call it during the callback only); a
        truthy return (``True``, ``np.True_``, a 0-d JAX bool, 1) stops training after that chunk.
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
      coefficients: continue a span-path run (:func:`sgd` on one device) exactly where it stopped:
        ``params`` holds the rows it started from (its base) and ``coefficients`` its
        ``history.coefficients``, so training starts from ``W[rows] + K X`` with the optimizer's state
        over ``K`` (``opt_state`` must then be None). The run is the one that was stopped, step for step
        (bit for bit for ``"active"`` on one backend), and its result is again relative to that base.

    Returns:
      ``(params, history)``: the trained :class:`Params` (same ``a``, same dtype) and a
      :class:`History` of host values (dict-style reads ``history["loss"]`` still work, for one
      release): ``"loss"`` (steps,) with ``loss[t] = L(W(t))``; ``"fire_mean"``, ``"fire_max"``
      (mean / max over i of ``k_{i,t}``, Definition 2.4) and ``"fire_union"``
      (:math:`|\bigcup_i S_{i,fire}(t)|`), each (steps,); ``events`` (typed:
      :class:`InitialCapacity`, :class:`CapacityGrown`, :class:`FellBackToDense`; ``"capacity_events"``
      gives them as the dicts of earlier releases, with ``step``, ``old_capacity``, ``new_capacity``,
      ``reason``); ``"opt_state"`` (the final state,
      full shape); ``"ms_per_step"`` (wall time of the jitted chunks per step, set-up and
      compilation excluded); ``"setup_s"`` (everything else); ``"method"``; ``"b"``; plus
      ``"n_active"`` (|A|), ``"span"`` (Gram path used), ``"fallback_step"`` (None, or the step
      from which the dense method ran) and ``"state_bytes"`` (bytes of the arrays the training loop
      carries and reads: rows, optimizer state, trees, data; all devices together). For a span-path run
      on one device ``history.coefficients`` is the result as :class:`Coefficients` relative to
      ``params`` (the rows that moved are ``params.W[rows] + K X``; ``n`` numbers per row instead of
      ``d``); None otherwise. The callback's dict then also has ``"coefficients"`` (a function, as
      ``"snapshot"``).

    Raises:
      ValueError: bad shapes, non-finite values, ``steps < 0``, unknown ``method`` or ``fallback``,
        non-finite ``b``, an ``opt_state`` that does not match, and (with ``fallback="error"``) a
        fire set beyond the DDFN cap or an optimizer the sparse methods cannot use.

    Exactness: dense, active, dtree and wtree compute the same fire sets (strict ``>``, Definition 2.4) and
    the same gradients; they differ only by float rounding in the order of sums (and, for the Gram
    path, ``W_A(0) + K X`` instead of a running sum). Resuming (``steps=A`` then ``steps=B`` with
    the returned ``params`` and ``history["opt_state"]``) reproduces ``steps=A+B`` bitwise for
    ``"dense"`` and to rounding (about 1e-6 relative in float32) for ``"dtree"``/``"wtree"``.

    The loop, as jax-md runs its neighbour lists::

        cfg, state = setup(params, X, y, ...)                  # INIT, A, capacity from the counts
        while steps remain:
            new, stats = run_chunk(cfg, state, chunk)          # jitted lax.scan, capacity static
            if stats.overflow.any():                           # did_buffer_overflow
                cfg = cfg with maxtree.allocate(stats.fire_max, previous=capacity)
                continue                                       # rerun the chunk from `state`
            state = new                                        # (DDFN cap, idle-row guard: stop or
        params, opt_state = finalize(cfg, state)               #  continue dense from `state`)
    """
    t_start = time.perf_counter()
    W, a, X, y, steps, b, optimizer, state, chunk_size, dt, width = _validate(
        params, X, y, steps, method, optimizer, learning_rate, b, opt_state, callback, chunk_size, fallback,
        width)
    c0 = _check_coefficients(coefficients, method, optimizer, opt_state, mesh, W.shape[0], X.shape[0], dt)
    lay = None if mesh is None else sharding.fit_layout(mesh, method)
    rec = Recorder(steps, callback, wrap=lambda W_, s_: (Params(W=W_.astype(dt), a=params.a), s_))
    chunk = min(max(steps, 1), chunk_size or DEFAULT_CHUNK)
    info = {"n_active": int(W.shape[0]), "span": False, "fallback_step": None,
            "state_bytes": _setup.nbytes((W, state, a, X, y))}
    if lay is not None:
        info.update(shards=lay.shards, bytes_per_device=None)
    W_out, state_out, coef = W, state, c0
    if steps > 0 and method == "dense":
        W_out, state_out, coef = _dense(W, a, X, y, b, optimizer, state, width, rec, chunk)
    elif steps > 0 or c0 is not None:
        W_out, state_out, coef = _compact(method, W, a, X, y, b, optimizer, state, width, lay, fallback, rec,
                                          chunk, info, c0)
    W_out = jax.block_until_ready(W_out)
    hist = History(**rec.arrays(dt), events=rec.events, opt_state=state_out, method=method, b=float(b),
                   setup_s=time.perf_counter() - t_start - rec.run_s, coefficients=coef, **info)
    return Params(W=W_out.astype(dt), a=params.a), hist
