r"""The training state of :mod:`jaxcorr.train`: one pytree of arrays, and its static configuration.

``setup -> run_chunk -> finalize`` (:mod:`jaxcorr.train`) pass one :class:`TrainState` along. Its
arrays are never sizes: every size, capacity and choice lives in the hashable :class:`Config`
(:class:`StepConfig` is the part the compiled step depends on, so a new data set of the same shapes
reuses the compiled chunk).

Examples:
  >>> import jax
  >>> from jaxcorr import data, nn, train
  >>> X, y = data.synthetic(seed=0, n=4, d=8)
  >>> cfg, state = train.setup(nn.init(jax.random.key(0), 256, 8), X, y, method="dtree", b=1.0)
  >>> isinstance(state, train.TrainState), cfg.step.method
  (True, 'dtree')
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

__all__ = ["Coefficients", "StepStats", "DenseConsts", "CompactConsts", "Base", "TrainState", "StepConfig", "Config"]


class Coefficients(NamedTuple):
    r"""A span-path run as coefficients: rows ``rows`` of the held ``W`` are ``W_base[rows] + K X``.

    For :func:`jaxcorr.train.sgd` (SGD, momentum, Nesterov) every update of a row is a combination
    of the data points (the gradient row is :math:`\sum_i c_{ir} x_i`, Section 2), so the trained
    rows are their starting rows plus ``K X`` with ``K`` (k, n), and the optimizer's state is a
    state over ``K``. ``n`` numbers per moved row instead of ``d`` (and the same for momentum):
    :func:`jaxcorr.train.fit` returns them as ``history.coefficients`` and continues from them
    exactly (``coefficients=``); :func:`jaxcorr.checkpoint.save` checkpoints a wide model with them.

    Every held row outside ``rows`` is its base row, bit for bit. ``base_digest`` fingerprints the
    base rows ``W_base[rows]``: ``fit(params, coefficients=c)`` refuses a ``params`` whose rows are
    not that base (the trained params, for one: they would add ``K X`` twice).
    """

    rows: Any  # (k,) int64 numpy array: sorted positions in the held rows (params.W) of the rows that may move
    K: jax.Array  # (k, n): the coefficients, in the rows' dtype
    opt_state: Any  # the optimizer's state over K (its per-row arrays (k, n)), the pytree of optimizer.init(K)
    base_digest: Any = None  # (2,) uint32: fingerprint of W_base[rows] (train._finalize.base_digest); None: unchecked


class StepStats(NamedTuple):
    """Per-step outputs stacked by ``lax.scan`` (leading axis = steps of the chunk)."""

    loss: jax.Array  # shape=(), dtype of W: L(W(t)) (Definition 2.1)
    fire_mean: jax.Array  # shape=(), float32: mean_i k_{i,t} (Definition 2.4)
    fire_max: jax.Array  # shape=(), int32: max_i k_{i,t} (a lower bound > capacity on overflow)
    fire_union: jax.Array  # shape=(), int32: |union_i S_{i,fire}(t)|
    overflow: jax.Array  # shape=(), bool: some frontier overflowed at this step
    moved: jax.Array  # shape=(), bool: the idle-row guard fired (an idle row would move at this step)


class DenseConsts(NamedTuple):
    """What the dense step reads and never writes."""

    X: jax.Array  # shape=(n, d)
    y: jax.Array  # shape=(n,)
    a: jax.Array  # shape=(m,)
    b: jax.Array  # shape=()
    scale: jax.Array  # shape=(), 1/sqrt(width)


class CompactConsts(NamedTuple):
    """What the compacted steps read and never write; ``(points)`` marks the axis a mesh splits."""

    X: jax.Array  # shape=(n, d) (points); zero rows on padding points
    y: jax.Array  # shape=(n,) (points)
    a: jax.Array  # shape=(L,): a_r for the active rows, 0 on padding rows
    b: jax.Array  # shape=()
    scale: jax.Array  # shape=(), 1/sqrt(width)
    n_real: jax.Array  # shape=(), int32: number of real active rows |A| <= L
    gram: Any  # span path: (n, n) X X^T (points, rows); else None
    ip0: Any  # span path: initial leaves, (n, L) (points) for active/dtree, (L, n) for wtree; else None
    ref: Any  # generic path: per row state leaf, the idle row's state (the guard compares to it)
    valid: Any  # mesh: (n_pad,) bool (points), False on padding points; one device: None
    n_points: Any  # mesh: () float32, the real number of points; one device: None


class Base(NamedTuple):
    """What :func:`jaxcorr.train.finalize` needs besides the trained rows (never read by a step)."""

    W: jax.Array  # shape=(m, d): the caller's held rows (not copied)
    a: jax.Array  # shape=(m,): the caller's output weights (never trained)
    W0: Any  # span path: W_A(0) (the caller's W itself when A is every held row); else None
    idx: jax.Array  # shape=(L,), int32: row of W for each compacted row; m on padding rows
    opt_state: Any  # the caller's full optimizer state (rows outside A keep it)


class TrainState(NamedTuple):
    r"""The whole training state of :func:`jaxcorr.train.run_chunk`: a pytree of arrays.

    ``rows``, ``opt_state`` and ``levels`` change every step (the scan carry, donated to the
    compiled chunk); ``consts`` and ``base`` are read only.
    """

    rows: jax.Array  # dense: W (m, d); generic: W_A (L, d); span: K (L, n) (K^T (n, L) when transposed)
    opt_state: Any  # the optimizer state over ``rows``
    levels: tuple  # dtree: n max-trees over L leaves; wtree: L trees over n leaves; else ()
    consts: Any  # DenseConsts or CompactConsts
    base: Any  # Base (compacted methods) or None (dense)

    @property
    def carry(self) -> tuple:
        return (self.rows, self.opt_state, self.levels)


class StepConfig(NamedTuple):
    """The static part of a compiled chunk (hashable; a new value compiles a new chunk)."""

    method: str  # "dense" | "active" | "dtree" | "wtree"
    optimizer: Any  # optax.GradientTransformation
    capacity: int = 0  # dtree: per-point frontier capacity
    span: bool = False  # the Gram path: rows hold K with W_A = W_A(0) + K X
    row_axes: tuple = ()  # per flattened optimizer state leaf: its row axis, or None
    transposed: bool = False  # active or dtree span path on one device: K and its state held transposed, (n, L)
    layout: Any = None  # jaxcorr.sharding.Layout (a mesh split by points) or None (one device)


class Config(NamedTuple):
    """Static description of a set-up problem: the compiled step's :class:`StepConfig` and host sizes."""

    step: StepConfig
    m: int  # held rows (params.W.shape[0])
    n: int  # data points
    d: int
    width: int  # the network's width (scale 1/sqrt(width), DDFN cap)
    n_active: int  # |A| (m for dense)
    L: int  # compacted rows, padding included (m for dense)
    kmax0: int  # max_i k_i(0)
    cap_ddfn: int  # ceil(width^(4/5)) (Definition 1.3)
    capacity_ceiling: int  # the most the dtree capacity may grow to
    identity: bool  # A is every held row in order: finalize slices instead of scattering
