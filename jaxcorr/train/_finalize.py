r"""Tear-down of the training state: the caller's full shapes, or the run as coefficients.

:func:`finalize` puts the trained rows of A (and their optimizer state) back into the held rows;
:func:`coefficients` gives a span-path run as :class:`Coefficients` relative to its base rows, with
the base's fingerprint (:func:`base_digest`) so that a continuation can check it starts from them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcorr import _linalg, methods, sharding
from jaxcorr.nn import Params
from jaxcorr.train._arrays import copy, row_first
from jaxcorr.train._state import Base, Coefficients, Config, TrainState

__all__ = ["finalize", "rows_and_state", "coefficients", "base_digest"]


def _scatter_rows(full, part, idx, ax):
    x = row_first(full, ax).at[idx].set(row_first(part, ax).astype(full.dtype), mode="drop")
    return jnp.moveaxis(x, 0, ax)


@functools.partial(jax.jit, static_argnames=("span", "transposed", "identity", "row_axes"))
def _to_full(trained, row_state, X, base: Base, *, span, transposed, identity, row_axes):
    """The trained rows and optimizer state back in the caller's (m, d) shapes (new buffers)."""
    m = base.W.shape[0]
    leaves, s_def = jax.tree_util.tree_flatten(row_state)
    if transposed:
        trained = trained.T
        leaves = [(x.T if ax is not None else x) for x, ax in zip(leaves, row_axes)]
    if identity:  # A is every held row: slice (first, so the product has m rows, not L), no scatter
        W_new = base.W0 + _linalg.matmul(trained[:m], X) if span else trained[:m]
    else:
        W_A = base.W0 + _linalg.matmul(trained, X) if span else trained  # (L, d): W_A(0) + K X on the span path
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


def rows_and_state(cfg: Config, state: TrainState, *, copy_dense: bool = True):
    """``(W, opt_state)`` in the caller's shapes from ``state`` (Algorithm 8/9's result).

    Compacted methods: the rows of A are scattered into the held ``W`` (or, when A is every held
    row, sliced from the compacted rows without a scatter) and likewise the optimizer state; on a
    mesh the pieces are replicated and brought to the default device first. The result shares no
    buffer with ``state`` unless ``copy=False`` for the dense method (then it is ``state``'s own).
    """
    if not methods.get(cfg.step.method).sparse:
        return copy((state.rows, state.opt_state)) if copy_dense else (state.rows, state.opt_state)
    if state.base.W is None:
        raise ValueError("this run was set up from inner products (train.fit_coordinates) and holds no rows: "
                         "its result is train.coefficients(cfg, state), the trained rows w_r(0) + K X")
    trained, row_state, X = state.rows, state.opt_state, state.consts.X
    lay = cfg.step.layout
    if lay is not None:  # replicated first, so every process can read its copy
        trained, row_state, X = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(sharding.replicate(x, lay))),
                                            (trained, row_state, X))
    return _to_full(trained, row_state, X, state.base, span=cfg.step.span, transposed=cfg.step.transposed,
                    identity=cfg.identity,
                    row_axes=cfg.step.row_axes)


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
    W, opt_state = rows_and_state(cfg, state)
    a = state.base.a if methods.get(cfg.step.method).sparse else state.consts.a
    return Params(W=W, a=a), opt_state


@functools.partial(jax.jit, static_argnames=("L", "transposed", "row_axes"))
def _coefficient_rows(trained, row_state, *, L, transposed, row_axes):
    """K (L, n) and its state's per-row arrays (L, n) from the carry (new buffers)."""
    leaves, s_def = jax.tree_util.tree_flatten(row_state)
    K = (trained.T if transposed else trained)[:L]
    out = [((x.T if transposed else x)[:L] if ax is not None else jnp.copy(x)) for x, ax in zip(leaves, row_axes)]
    return K, jax.tree_util.tree_unflatten(s_def, out)


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
    if not methods.get(cfg.step.method).sparse or not cfg.step.span or cfg.step.layout is not None:
        return None
    K, s = _coefficient_rows(state.rows, state.opt_state, L=cfg.n_active, transposed=cfg.step.transposed,
                             row_axes=cfg.step.row_axes)
    rows = np.arange(cfg.m, dtype=np.int64) if cfg.identity else np.asarray(state.base.idx[:cfg.n_active], np.int64)
    digest = None if state.base.W is None else base_digest(state.base.W, rows)  # no rows: nothing to fingerprint
    return Coefficients(rows=rows, K=K, opt_state=s, base_digest=digest)


_MIX = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D), np.uint32(0x27D4EB2F))


@jax.jit
def _digest(W, rows):
    """Two 32-bit integer checksums of the bits of ``W[rows]``, each bit pattern weighted by a
    function of its row and column (exact integer arithmetic: the same on every backend)."""
    part = W.at[rows].get(mode="fill", fill_value=0)
    bits = lax.bitcast_convert_type(part, jnp.uint32)
    bits = bits.reshape(bits.shape[0], math.prod(bits.shape[1:]))  # float64: two words per entry
    r = rows.astype(jnp.uint32)[:, None]
    c = lax.broadcasted_iota(jnp.uint32, bits.shape, 1)
    w1 = (r * _MIX[0] + c * _MIX[1] + jnp.uint32(1)) | jnp.uint32(1)
    w2 = (r * _MIX[2] ^ c * _MIX[3]) | jnp.uint32(1)
    return jnp.stack([jnp.sum(bits * w1, dtype=jnp.uint32), jnp.sum((bits ^ (bits >> 16)) * w2, dtype=jnp.uint32)])


def base_digest(W, rows) -> np.ndarray:
    """(2,) uint32: the fingerprint of the base rows ``W[rows]`` that :class:`Coefficients` add to."""
    return np.asarray(_digest(jnp.asarray(W), jnp.asarray(np.asarray(rows), jnp.int32)))
