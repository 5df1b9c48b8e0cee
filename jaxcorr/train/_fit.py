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
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from jaxcorr import _checks, errors, methods, sharding
from jaxcorr import linear as _sgd
from jaxcorr.nn import Params
from jaxcorr.train import _finalize, _loop, _setup, _validate
from jaxcorr.train._arrays import nbytes
from jaxcorr.train._history import FellBackToDense, History, InitialCapacity, Recorder
from jaxcorr.train._state import Coefficients, Config, TrainState
from jaxcorr.train._validate import AUTO, DEFAULT_LEARNING_RATE, DEFAULT_METHOD

__all__ = ["fit", "setup", "fit_coordinates", "DEFAULT_CHUNK"]

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
        params, X, y, 0, method, optimizer, learning_rate, b, opt_state, None, None, "error", width, auto=False)
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
                                          capacity=(err.cfg.step.capacity if methods.get(method).trees == "dtree"
                                                    else None)))
        info["fallback_step"] = rec.done
        return _run_dense(W_out, a, X, y, b, optimizer, s_out, width, rec, chunk)


# ------------------------------------------------------------------------------ method="auto"
def _x_norms(X) -> list:
    return np.linalg.norm(np.asarray(X, np.float64), axis=1).tolist()


def _choose_method(W, X, optimizer, steps: int, b: float, dt, width: int, *, mesh=None, coefficients=None):
    """``method="auto"``: the :class:`jaxcorr.cost.Choice` among the methods that can run this call.

    The candidates are every method, less those the call rules out: with ``mesh`` the sharded ones
    (:data:`jaxcorr.sharding.SHARDED_METHODS`), with ``coefficients`` the sparse ones, and dense
    alone when the sparse methods refuse the optimizer (:mod:`jaxcorr.train._linearity`, the check
    :func:`setup` makes). The prediction uses the data's norms, the optimizer, ``steps``, the dtype
    and the width (``W`` holds ``W.shape[0]`` of its rows).

    Raises:
      ValueError: no candidate is left (a mesh with a refused optimizer, or every sparse method is
        predicted beyond the DDFN cap while dense is ruled out).
    """
    from jaxcorr import cost

    names = [k for k in methods.names() if mesh is None or k in sharding.SHARDED_METHODS]
    if coefficients is not None:
        names = [k for k in names if methods.get(k).sparse]
    verdict = _setup.analysis(optimizer, W.shape[0], W.shape[1], dt)
    refused = "" if verdict.ok else f" (the sparse methods refuse this optimizer: {verdict.reason})"
    if refused:
        names = [k for k in names if not methods.get(k).sparse]
    if not names:
        raise ValueError("method='auto': no method can run this call" + (refused or " (mesh and coefficients "
                         "leave none)") + "; pass method= explicitly")
    rows = W.shape[0]  # |A| counted on a sample of W's own rows: real data are correlated (cost.sampled_active)
    with jax.transfer_guard("allow"):  # the eager choice, before any step: a sample of W and X to the host
        n_active = cost.sampled_active(X, rows, b, W=W)
    choice = cost.choose(X.shape[0], width, W.shape[1], optimizer=optimizer, steps=steps, b=b, x_norms=_x_norms(X),
                         dtype=np.dtype(dt).name, methods=names, rows=rows, n_active=n_active)
    return choice._replace(reason=choice.reason + refused)


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
        ``"dtree"`` (Algorithm 8), ``"wtree"`` (Algorithm 9), or ``"auto"``: the method
        :func:`jaxcorr.cost.choose` predicts fastest for these ``steps`` from the data's norms, the
        optimizer, the dtype and ``width``, run exactly as if it had been given. Candidates: every
        method (dense included); with ``mesh`` the sharded ones; with ``coefficients`` the sparse
        ones; dense alone when the sparse methods refuse the optimizer. ``history.method`` names
        the one that ran, ``history.method_reason`` says why in one line and ``history.choice``
        holds every candidate's prediction.
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
      ``(params, history)``: the trained :class:`jaxcorr.nn.Params` (same ``a``, same dtype) and a
      :class:`History` of host values, read by attribute: ``loss`` (steps,) with
      ``loss[t] = L(W(t))``; ``fire_mean``, ``fire_max`` (mean / max over i of ``k_{i,t}``,
      Definition 2.4) and ``fire_union`` (:math:`|\bigcup_i S_{i,fire}(t)|`), each (steps,);
      ``events`` (typed: :class:`InitialCapacity`, :class:`CapacityGrown`, :class:`FellBackToDense`;
      ``capacity_events`` gives them as dicts with ``step``, ``old_capacity``, ``new_capacity``,
      ``reason``); ``opt_state`` (the final state, full shape); ``ms_per_step`` (wall time of the
      jitted chunks per step, set-up and compilation excluded); ``setup_s`` (everything else);
      ``method``; ``b``; ``n_active`` (|A|); ``span`` (Gram path used); ``fallback_step`` (None, or
      the step from which the dense method ran); ``loss_rose``; and ``state_bytes`` (bytes of the
      arrays the training loop carries and reads: rows, optimizer state, trees, data; all devices
      together). For a span-path run
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

    Examples:
      >>> import jax
      >>> from jaxcorr import data, nn, train
      >>> X, y = data.synthetic(seed=0, n=8, d=8)
      >>> params = nn.init(jax.random.key(0), m=2**16, d=8)
      >>> p, h = train.fit(params, X, y, steps=200, method="auto")
      >>> h.method, h.method_reason.startswith(h.method + ": predicted")
      ('active', True)
      >>> p2, h2 = train.fit(params, X, y, steps=200, method=h.method)   # the same run, bit for bit
      >>> bool((p.W == p2.W).all()), h2.method_reason is None
      (True, True)
    """
    t_start = time.perf_counter()
    W, a, X, y, steps, b, optimizer, state, chunk_size, dt, width = _validate.arguments(
        params, X, y, steps, method, optimizer, learning_rate, b, opt_state, callback, chunk_size, fallback,
        width)
    choice = None
    if method == AUTO:
        choice = _choose_method(W, X, optimizer, steps, b, dt, width, mesh=mesh, coefficients=coefficients)
        method = choice.method
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
                   setup_s=time.perf_counter() - t_start - rec.run_s, coefficients=coef, **info,
                   method_reason=None if choice is None else choice.reason, choice=choice)
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


# ------------------------------------------------------------------ training in coordinates
def _coordinate_arguments(ip, a, X, y, steps, method, optimizer, learning_rate, b, callback, chunk_size, width):
    """The eager checks of :func:`fit_coordinates`; returns the arguments in the dtype of ``ip``."""
    if np.ndim(ip) != 2 or np.shape(ip)[1] < 1:
        raise ValueError(f"ip must have shape (n, m) with m >= 1 rows to train, got {np.shape(ip)}")
    n, m = np.shape(ip)
    if np.shape(a) != (m,):
        raise ValueError(f"a must have shape (m,)=({m},) to match ip {np.shape(ip)}, got {np.shape(a)}")
    if np.ndim(X) != 2 or np.shape(X)[0] != n:
        raise ValueError(f"X must have shape (n, d) with n={n} rows to match ip {np.shape(ip)}, got {np.shape(X)}")
    if np.shape(y) != (n,):
        raise ValueError(f"y must have shape (n,)=({n},), got {np.shape(y)}")
    for name, arr in (("ip", ip), ("a", a), ("X", X), ("y", y)):
        _checks.check_dtype(name, arr)
    dt = jax.numpy.result_type(ip)
    if not jax.numpy.issubdtype(dt, jax.numpy.floating):
        raise ValueError(f"ip must be floating (the training dtype), got {dt}")
    ip, a, X, y = (jax.numpy.asarray(v, dt) for v in (ip, a, X, y))
    for name, ok in zip(("ip", "a", "X", "y"), np.asarray(_validate.all_finite((ip, a, X, y)))):
        if not ok:
            raise ValueError(f"{name} must be finite, but it holds NaN or infinite values")
    if isinstance(steps, (bool, np.bool_)):
        raise ValueError(f"steps must be an int, got {steps!r}")
    steps = _checks.check_int("steps", steps, minimum=0, type_error=ValueError)
    if method != AUTO and (method not in _validate.METHODS or not methods.get(method).sparse):
        raise ValueError(f"method must be a sparse method {[k for k in _validate.METHODS if methods.get(k).sparse]} "
                         f"or {AUTO!r} (the rows are given by their inner products only), got {method!r}")
    width = _checks.check_int("width", width, minimum=m, type_error=ValueError)
    b = _checks.check_real("b", b)
    optimizer = _validate._optimizer(optimizer, learning_rate, dt)
    if not _sgd.is_linear(optimizer):
        raise ValueError("optimizer must be train.sgd(...) (SGD, momentum, Nesterov: the span path, linear by "
                         "construction); other optimizers need the rows themselves: use train.fit")
    if chunk_size is not None:
        chunk_size = _checks.check_int("chunk_size", chunk_size, minimum=1, what="an int or None",
                                       type_error=ValueError)
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable or None")
    return ip, a, X, y, steps, b, optimizer, chunk_size, dt, width


def fit_coordinates(ip, a, X, y, *, steps: int, width: int, b: float, method: str = DEFAULT_METHOD,
                    optimizer=None, learning_rate: float = DEFAULT_LEARNING_RATE, callback=None,
                    chunk_size: int | None = None, donate_inner_products: bool = False):
    r"""Train rows given by their initial inner products alone, on the span path: no row is ever formed.

    The rows ``r`` of a network of width ``width`` whose initial inner products are
    ``ip[i, r]`` :math:`= \langle w_r(0), x_i\rangle` (all other rows must be rows that never fire,
    the active-set invariant of :mod:`jaxcorr.train`) are trained as :func:`fit` trains them on the
    span path (:func:`sgd`): the optimizer runs on the coefficients ``K`` (m, n) with the Gram matrix
    ``X X^T``, state O(m n), and the trained row ``r`` is :math:`w_r(0) + \sum_i K_{ri} x_i`.
    ``fit(params, X, y, method=method, width=width)`` on rows with these inner products follows the
    same trajectory (the same steps on the same leaves).

    Args:
      ip: (n, m) initial inner products, the training dtype (float32, or float64 under x64).
      a: (m,) the rows' output weights. X: (n, d) points. y: (n,) targets.
      steps, method, learning_rate, callback, chunk_size: as for :func:`fit` (``method`` sparse:
        ``"active"``, ``"dtree"``, ``"wtree"``, or ``"auto"``: the one of these three that
        :func:`jaxcorr.cost.choose` predicts fastest; dense is no candidate, there are no rows); the
        callback's dict has ``"coefficients"``.
      width: the network's width (>= m): the scale :math:`1/\sqrt{width}` and the DDFN cap.
      b: the threshold of :math:`\sigma_b`.
      optimizer: :func:`sgd` (default ``sgd(learning_rate)``); others are refused (they need rows).
      donate_inner_products: delete ``ip`` once the state is set up (its leaves are copied into it),
        to keep the peak memory at one (n, m) array fewer.

    Returns:
      ``(coefficients, history)``: :class:`Coefficients` with ``rows = arange(m)``, ``K`` (m, n) and
      the optimizer's state over ``K`` (no ``base_digest``: there are no base rows), and a
      :class:`History` as :func:`fit`'s (``opt_state`` is the state over ``K``).

    Raises:
      ValueError: bad arguments, or an optimizer other than :func:`sgd`.
      jaxcorr.errors.DDFNCapExceeded: a fire set beyond the DDFN cap (no dense fallback: no rows).

    Examples:
      >>> import jax
      >>> from jaxcorr import _linalg, data, nn, train
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> p = nn.init(jax.random.key(0), m=256, d=8)
      >>> c, h = train.fit_coordinates(_linalg.inner(X, p.W), p.a, X, y, steps=5, width=256, b=1.0)
      >>> p2, h2 = train.fit(p, X, y, steps=5, b=1.0)
      >>> bool(abs(p.W + c.K @ X - p2.W).max() < 1e-5), bool(abs(h.loss - h2.loss).max() < 1e-5)
      (True, True)
      >>> c3, h3 = train.fit_coordinates(_linalg.inner(X, p.W), p.a, X, y, steps=5, width=256, b=1.0,
      ...                                method="auto")
      >>> h3.method in ("active", "dtree", "wtree"), h3.method_reason.startswith(h3.method)
      (True, True)
    """
    t_start = time.perf_counter()
    ip, a, X, y, steps, b, optimizer, chunk_size, dt, width = _coordinate_arguments(
        ip, a, X, y, steps, method, optimizer, learning_rate, b, callback, chunk_size, width)
    choice = None
    if method == AUTO:
        from jaxcorr import cost

        with jax.transfer_guard("allow"):  # the eager choice: |A| itself, from the inner products given
            n_active = int(jax.numpy.any(ip > b, axis=0).sum())
        choice = cost.choose(X.shape[0], width, X.shape[1], optimizer=optimizer, steps=steps, b=b,
                             x_norms=_x_norms(X), dtype=np.dtype(dt).name, rows=ip.shape[1], n_active=n_active,
                             methods=[k for k in methods.names() if methods.get(k).sparse])
        method = choice.method
    cfg, ts = _setup.from_inner_products(method, ip, a, X, y, b, optimizer, width)
    if donate_inner_products:
        ip.delete()
    del ip
    rec = Recorder(steps, callback)
    info = {"n_active": cfg.n_active, "span": True, "fallback_step": None, "state_bytes": nbytes((ts.carry, ts.consts))}
    if methods.get(method).trees == "dtree":
        rec.events.append(InitialCapacity(capacity=cfg.step.capacity, kmax=cfg.kmax0))
    if cfg.kmax0 > cfg.cap_ddfn:
        raise _loop.cap_error(cfg.width, cfg.cap_ddfn, cfg.kmax0, 0)
    try:
        cfg, ts = _loop.loop(cfg, ts, rec, min(max(steps, 1), chunk_size or DEFAULT_CHUNK),
                             donate=methods.get(method).trees != "dtree")
    except _loop.Stop as err:
        raise err.error from None
    coef = _finalize.coefficients(cfg, ts)
    coef = jax.block_until_ready(coef)
    hist = History(**rec.arrays(dt), events=rec.events, opt_state=coef.opt_state, method=method, b=float(b),
                   setup_s=time.perf_counter() - t_start - rec.run_s, coefficients=coef, **info,
                   method_reason=None if choice is None else choice.reason, choice=choice)
    hist.loss_rose = _loss_rose(hist.loss)
    if hist.loss_rose:
        warnings.warn(f"train.fit_coordinates: the loss rose from {float(hist.loss[0]):.6g} to "
                      f"{float(hist.loss[-1]):.6g} over {len(hist.loss)} steps; the learning rate may be too large",
                      UserWarning, stacklevel=2)
    return coef, hist
