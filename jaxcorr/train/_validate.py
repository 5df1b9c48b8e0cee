"""Validation at the eager boundary of :func:`jaxcorr.train.fit` and :func:`jaxcorr.train.setup`.

Every argument is checked here, before any set-up, with an error naming the argument and what was
expected; the jitted path checks nothing. The method names come from :mod:`jaxcorr.methods`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import _checks, methods
from jaxcorr import linear as _sgd
from jaxcorr.nn import default_threshold
from jaxcorr.train._finalize import base_digest
from jaxcorr.train._state import Coefficients

__all__ = ["METHODS", "AUTO", "METHOD_CHOICES", "DEFAULT_METHOD", "FALLBACKS", "DEFAULT_LEARNING_RATE", "arguments",
           "start_coefficients", "all_finite"]

#: The training methods (:func:`jaxcorr.methods.names`).
METHODS = methods.names()
#: ``method="auto"``: :func:`jaxcorr.train.fit` picks the fastest exact method with :func:`jaxcorr.cost.choose`.
AUTO = "auto"
#: What ``method=`` of :func:`jaxcorr.train.fit` accepts: a method name or ``"auto"``.
METHOD_CHOICES = METHODS + (AUTO,)
#: The method used when none is given (:data:`jaxcorr.methods.DEFAULT`).
DEFAULT_METHOD = methods.DEFAULT
FALLBACKS = ("error", "dense")
#: Default SGD step size. The loss is 1/2 sum_i e_i^2 and f carries 1/sqrt(m), so a gradient row is
#: O(n / sqrt(m)); steps of order 1 are stable for the default threshold (the NTK-style kernel has
#: eigenvalues of order n * P[N(0,1) > b] << 1).
DEFAULT_LEARNING_RATE = 1.0


def _optimizer(optimizer, learning_rate, dt):
    """The optimizer to run: the default :func:`jaxcorr.train.sgd` at ``learning_rate``, or the one
    given, checked (an optax transformation; a :class:`LinearOptimizer` only as :func:`sgd` built it;
    a constant rate that the parameters' dtype can hold)."""
    if optimizer is None:
        if np.ndim(learning_rate) != 0:
            raise ValueError(f"learning_rate must be a scalar (shape ()), got shape {np.shape(learning_rate)}")
        optimizer = _sgd.default_optimizer(_checks.check_rate("learning_rate", learning_rate))
    elif not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError("optimizer must be an optax.GradientTransformation (with init and update)")
    elif isinstance(optimizer, _sgd.LinearOptimizer) and not _sgd.is_linear(optimizer):
        raise ValueError("optimizer is a train.LinearOptimizer whose init/update train.sgd did not build; "
                         "linearity is not taken from the type: pass the optax transformation itself "
                         "(the sparse methods then decide from its jaxprs) or build it with train.sgd")
    _sgd.check_rates(optimizer, dt)
    return optimizer


def arguments(params, X, y, steps, method, optimizer, learning_rate, b, opt_state, callback,
              chunk_size, fallback, width=None, auto=True):
    """The validated arguments of :func:`jaxcorr.train.fit` (``auto``: ``method="auto"`` is accepted)."""
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
    finite = np.asarray(all_finite((W, a, X, y)))  # one compiled check for the four
    for name, ok in zip(("params.W", "params.a", "X", "y"), finite):
        if not ok:
            raise ValueError(f"{name} must be finite, but it holds NaN or infinite values")
    if isinstance(steps, (bool, np.bool_)):
        raise ValueError(f"steps must be an int, got {steps!r}")
    steps = _checks.check_int("steps", steps, minimum=0, type_error=ValueError)
    if method not in (METHOD_CHOICES if auto else METHODS):
        if method == AUTO:
            raise ValueError(f"method='auto' needs the number of steps (train.fit picks the method for them); "
                             f"expected one of {METHODS} here")
        raise ValueError(f"unknown method {method!r}; expected one of {METHOD_CHOICES if auto else METHODS}")
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
    optimizer = _optimizer(optimizer, learning_rate, dt)
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


def start_coefficients(c, method, optimizer, opt_state, mesh, W, n: int, dt):
    """``c`` as a validated :class:`Coefficients` (K and its state in ``dt``), or None.

    The rule: ``W`` must hold the base rows the coefficients are relative to (the ``params`` given
    to the run that returned them), checked against ``c.base_digest`` when it is set.
    """
    if c is None:
        return None
    if not isinstance(c, Coefficients):
        raise ValueError("coefficients must be a jaxcorr.train.Coefficients (history.coefficients), "
                         f"got {type(c).__name__}")
    if not methods.get(method).sparse or mesh is not None or not _sgd.is_linear(optimizer):
        raise ValueError("coefficients= continues a span-path run: method 'active', 'dtree' or 'wtree' with "
                         f"optimizer=train.sgd(...) on one device (got method={method!r}, "
                         f"optimizer {type(optimizer).__name__}, mesh={'given' if mesh is not None else None})")
    if opt_state is not None:
        raise ValueError("pass the optimizer's state inside coefficients (coefficients.opt_state), not as opt_state")
    m = W.shape[0]
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
    if not bool(np.all(np.asarray(all_finite((K, *jax.tree_util.tree_leaves(state)))))):
        raise ValueError("coefficients must be finite, but K or its state holds NaN or infinite values")
    rows = rows.astype(np.int64)
    if c.base_digest is not None and not np.array_equal(np.asarray(c.base_digest), base_digest(W, rows)):
        raise ValueError("coefficients= are relative to the rows the run started from: params.W[coefficients.rows] "
                         "must be those base rows (the params given to the fit that returned "
                         "history.coefficients), but they differ; pass the starting params, not the trained "
                         "ones (training from trained params with their coefficients would add K X twice)")
    return Coefficients(rows=rows, K=K, opt_state=state, base_digest=c.base_digest)


@jax.jit
def all_finite(arrays):
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays])
