r"""``fit`` and ``setup``: the way down the training floor, validate -> set up -> loop -> finalize.

Each call goes down the layers and never back up: :mod:`._validate` (the arguments),
:mod:`._setup` (INIT, the active set, the compacted state), :mod:`._loop` (the chunks, the
overflow reruns, the DDFN cap and the idle-row guard), :mod:`._finalize` (back to the caller's
shapes). The fallback to dense starts the dense method's set-up and loop afresh from the last exact
state.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable

import jax
import optax

from jaxcorr import errors, methods, sharding
from jaxcorr.nn import Params
from jaxcorr.train import _finalize, _loop, _setup, _validate
from jaxcorr.train._arrays import nbytes
from jaxcorr.train._history import FellBackToDense, History, InitialCapacity, Recorder
from jaxcorr.train._state import Coefficients, Config, TrainState
from jaxcorr.train._validate import DEFAULT_LEARNING_RATE, DEFAULT_METHOD

__all__ = ["fit", "setup", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 100


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
      ValueError: as :func:`fit` for bad arguments.
      jaxcorr.errors.OptimizerRefused: an optimizer the compacted methods cannot run exactly.

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
    W, a, X, y, _, b, optimizer, state, _, _, width = _validate.arguments(
        params, X, y, 0, method, optimizer, learning_rate, b, opt_state, None, None, "error", width)
    start = _validate.start_coefficients(coefficients, method, optimizer, opt_state, mesh, W, X.shape[0], W.dtype)
    lay = None if mesh is None else sharding.fit_layout(mesh, method)
    return _setup.build(method, W, a, X, y, b, optimizer, state, width, lay, start)


def _run_dense(W, a, X, y, b, optimizer, state, width, rec, chunk):
    cfg, ts = _setup.dense(W, a, X, y, b, optimizer, state, width)
    cfg, ts = _loop.loop(cfg, ts, rec, chunk, donate=True)
    return (*_finalize.rows_and_state(cfg, ts, copy_dense=False), None)


def _run_compacted(method, W, a, X, y, b, optimizer, state, width, lay, fallback, rec, chunk, info, start):
    """The compacted run with its DDFN cap, refused-optimizer and idle-row fallbacks; returns
    ``(W, opt_state, coefficients)``."""
    try:
        cfg, ts = _setup.build(method, W, a, X, y, b, optimizer, state, width, lay, start)
    except errors.OptimizerRefused as err:
        if fallback == "error" or start is not None:  # W holds base rows: nothing dense could start from
            raise
        rec.events.append(FellBackToDense(step=0, reason=str(err)))
        info["fallback_step"] = 0
        return _run_dense(W, a, X, y, b, optimizer, state, width, rec, chunk)
    info.update(n_active=cfg.n_active, span=cfg.step.span, state_bytes=nbytes((ts.carry, ts.consts)))
    if lay is not None:
        info.update(shards=lay.shards, bytes_per_device=max(sharding.bytes_per_device((ts.carry, ts.consts)).values()))
    if methods.get(method).trees == "dtree":
        rec.events.append(InitialCapacity(capacity=cfg.step.capacity, kmax=cfg.kmax0))
    try:
        if cfg.kmax0 > cfg.cap_ddfn:
            raise _loop.Stop(_loop.cap_error(cfg.width, cfg.cap_ddfn, cfg.kmax0, 0), cfg, ts)
        # keep each chunk's input when it may be rerun (overflow) or continued dense (fallback)
        cfg, ts = _loop.loop(cfg, ts, rec, chunk, donate=methods.get(method).trees != "dtree" and fallback == "error")
        return (*_finalize.rows_and_state(cfg, ts), _finalize.coefficients(cfg, ts))
    except _loop.Stop as err:
        if fallback == "error":
            raise err.error from None
        W_out, s_out = _finalize.rows_and_state(err.cfg, err.state)
        rec.events.append(FellBackToDense(step=rec.done, reason=str(err),
                                          capacity=err.cfg.step.capacity if methods.get(method).trees == "dtree" else None))
        info["fallback_step"] = rec.done
        return _run_dense(W_out, a, X, y, b, optimizer, s_out, width, rec, chunk)


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
        decay, LARS/LAMB, adafactor, sm3, a constant inside a sum over rows, ...) they raise
        :class:`jaxcorr.errors.OptimizerRefused` before any step, or run
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
      fallback: ``"error"`` (default) raises :class:`jaxcorr.errors.DDFNCapExceeded` when a fire
        set exceeds the DDFN cap :math:`\lceil m^{4/5}\rceil`, :class:`jaxcorr.errors.OptimizerRefused`
        when the optimizer is refused, :class:`jaxcorr.errors.IdleRowMoved` when the idle-row guard fires;
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
        non-finite ``b``, an ``opt_state`` that does not match, a non-scalar learning rate or one the
        dtype cannot hold, a :class:`LinearOptimizer` not built by :func:`sgd`, ``coefficients``
        whose base rows are not ``params.W[rows]``.
      jaxcorr.errors.DDFNCapExceeded: (``fallback="error"``) a fire set beyond the DDFN cap, with
        ``step``, ``k``, ``cap``, ``m``.
      jaxcorr.errors.OptimizerRefused: (``fallback="error"``) an optimizer the sparse methods cannot
        run exactly, with ``method`` and ``reason``.
      jaxcorr.errors.IdleRowMoved: (``fallback="error"``) the idle-row guard fired, with ``step``.

    Warns:
      UserWarning: the last loss is above the first or not finite (also ``history.loss_rose``).

    Exactness: dense, active, dtree and wtree compute the same fire sets (strict ``>``, Definition 2.4) and
    the same gradients; they differ only by float rounding in the order of sums (and, for the Gram
    path, ``W_A(0) + K X`` instead of a running sum). Resuming (``steps=A`` then ``steps=B`` with
    the returned ``params`` and ``history.opt_state``) reproduces ``steps=A+B`` bitwise for
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
    W, a, X, y, steps, b, optimizer, state, chunk_size, dt, width = _validate.arguments(
        params, X, y, steps, method, optimizer, learning_rate, b, opt_state, callback, chunk_size, fallback,
        width)
    start = _validate.start_coefficients(coefficients, method, optimizer, opt_state, mesh, W, X.shape[0], dt)
    lay = None if mesh is None else sharding.fit_layout(mesh, method)
    rec = Recorder(steps, callback, wrap=lambda W_, s_: (Params(W=W_.astype(dt), a=params.a), s_))
    chunk = min(max(steps, 1), chunk_size or DEFAULT_CHUNK)
    info = {"n_active": int(W.shape[0]), "span": False, "fallback_step": None,
            "state_bytes": nbytes((W, state, a, X, y))}
    if lay is not None:
        info.update(shards=lay.shards, bytes_per_device=None)
    W_out, state_out, coef = W, state, start
    if steps > 0 and not methods.get(method).sparse:
        W_out, state_out, coef = _run_dense(W, a, X, y, b, optimizer, state, width, rec, chunk)
    elif steps > 0 or start is not None:
        W_out, state_out, coef = _run_compacted(method, W, a, X, y, b, optimizer, state, width, lay, fallback,
                                                rec, chunk, info, start)
    W_out = jax.block_until_ready(W_out)
    hist = History(**rec.arrays(dt), events=rec.events, opt_state=state_out, method=method, b=float(b),
                   setup_s=time.perf_counter() - t_start - rec.run_s, coefficients=coef, **info)
    hist.loss_rose = _loss_rose(hist.loss)
    if hist.loss_rose:
        warnings.warn(f"train.fit: the loss rose from {float(hist.loss[0]):.6g} to {float(hist.loss[-1]):.6g} over "
                      f"{len(hist.loss)} steps (method={method!r}); the learning rate may be too large for this "
                      "optimizer (see jaxcorr.optimizers.TABLE for each one's default)", UserWarning, stacklevel=2)
    return Params(W=W_out.astype(dt), a=params.a), hist


def _loss_rose(loss) -> bool:
    """The last loss is above the first, or not finite (a run of at least two steps)."""
    if len(loss) < 2:
        return False
    first, last = float(loss[0]), float(loss[-1])
    return not math.isfinite(last) or last > first
