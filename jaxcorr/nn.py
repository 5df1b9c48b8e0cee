r"""The two-layer ReLU network 2NN(m, b) of Definition 2.1 (Section 2).

.. math::

    f(W, x, a) = \frac{1}{\sqrt{m}} \sum_{r=1}^{m} a_r \sigma_b(\langle w_r, x \rangle), \qquad
    L(W) = \frac{1}{2} \sum_{i=1}^{n} (f(W, x_i, a) - y_i)^2, \qquad
    \sigma_b(x) = \max\{x - b, 0\}.

Only ``W`` is trained; ``a`` stays fixed after :func:`init` (Section 2, "we only train the weight
parameters W"). Rows of ``W`` are the neurons ``w_r`` (the paper writes ``W`` as d x m; jaxcorr
stores it as (m, d), like :mod:`jaxcorr.dtree`).

The gradient (Section 2, "Gradient computation")

.. math::

    \frac{\partial L}{\partial w_r} = \frac{a_r}{\sqrt{m}} \sum_{i=1}^{n}
        (f(W, x_i, a) - y_i)\, x_i\, \mathbf{1}[\langle w_r, x_i \rangle > b]

uses the strict indicator: :math:`\sigma_b'(x) = 1[x > b]`, which is also what ``jax.grad`` of
``jnp.maximum(x - b, 0)`` gives away from the kink ``x == b`` (at the kink JAX's convention differs;
the sparse training paths in :mod:`jaxcorr.train` and the fire sets of Definition 2.3 all use ``>``).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcorr import nn
  >>> params = nn.init(jax.random.key(0), m=16, d=3)
  >>> params.W.shape, params.a.shape
  ((16, 3), (16,))
  >>> X = jnp.eye(3); y = jnp.zeros(3)
  >>> b = nn.default_threshold(16)
  >>> g = nn.grad_W(params, X, y, b)
  >>> bool(jnp.allclose(g, jax.grad(lambda W: nn.loss(nn.Params(W, params.a), X, y, b))(params.W)))
  True
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p

from jaxcorr import _checks, _linalg

__all__ = ["Params", "init", "init_rows", "rows_at", "BLOCK_ROWS", "MAX_WIDTH", "MAX_DIM", "normal_bound",
           "default_threshold", "relu_b", "predict", "loss", "grad_W", "fire_mask"]


class Params(NamedTuple):
    """Parameters of 2NN(m, b) (Definition 2.1, Remark 2.2)."""

    W: jax.Array  # shape=(m, d), float32/float64: row r is the neuron w_r (trained)
    a: jax.Array  # shape=(m,), same dtype: output weights a_r in {-1, +1} (fixed)


def default_threshold(m: int) -> float:
    r"""The paper's threshold :math:`b = \sqrt{0.4 \ln m}` (Algorithms 8/9 line 4, Theorem 4.1).

    With this ``b``, each point fires O(m^{4/5}) neurons at initialisation (Lemma 2.5).
    """
    if int(m) < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    return math.sqrt(0.4 * math.log(int(m)))


#: Rows per addressing block of W(0) -- traced code names row ``block * BLOCK_ROWS + offset`` with 32-bit
#: integers. A constant of the construction; the rows never depend on it or on memory.
BLOCK_ROWS = 1 << 16
#: Largest width -- a row index has 48 bits (32 in the Threefry counter's first word, 16 in its second).
MAX_WIDTH = 1 << 48
#: Largest input dimension -- a column (pair) index has 16 bits in the counter's second word.
MAX_DIM = 1 << 16


def init(key: jax.Array, m: int, d: int, dtype=None) -> Params:
    r"""Random initialisation of Section 2: :math:`w_r \sim N(0, I_d)`, :math:`a_r` uniform in {-1, +1}.

    Row ``r`` of ``W`` and ``a_r`` are a pure function of ``(key, r, d, dtype)``, whatever ``m`` is
    (see :func:`init_rows`): ``init(key, m, d)`` is ``init_rows(key, m, d)``, so any block of rows
    can be regenerated on demand without materialising ``W`` (:mod:`jaxcorr.wide`), and a
    narrower network's rows are the first rows of a wider one's.

    Args:
      key: a JAX PRNG key (any implementation, typed or raw).
      m: number of hidden neurons (width), 1 <= m <= :data:`MAX_WIDTH`.
      d: input dimension.
      dtype: floating dtype; default float32 (float64 when x64 is enabled).

    Returns:
      :class:`Params` with ``W`` (m, d) and ``a`` (m,).
    """
    m, d = int(m), int(d)
    if m < 1 or d < 1:
        raise ValueError(f"m and d must be >= 1, got m={m}, d={d}")
    return init_rows(key, m, d, dtype=dtype)


def init_rows(key: jax.Array, num: int, d: int, *, start=0, block=0, dtype=None) -> Params:
    r"""Rows ``start .. start + num - 1`` of :func:`init` ``(key, m, d)`` for any ``m >= start + num``.

    Construction (a pure function of the key; the same bits on every backend and device count, and
    each row independent of how rows are grouped): ``k_W, k_a = split(key)`` and ``s_W = bits(k_W,
    2)`` (a Threefry seed). Threefry-2x32 (20 rounds, Salmon et al. 2011, JAX's own generator) hashes
    the 64-bit counter ``(r mod 2^32, (r >> 32) << 16 | j)`` of row ``r`` and column pair ``j``
    under ``s_W`` into two 32-bit words: the uniform bits of ``W[r, j]`` and ``W[r, j + ceil(d/2)]``
    (float32; float64 uses one 64-bit word per entry, ``j < d``). Each word becomes
    :math:`\sqrt 2\,\mathrm{erf}^{-1}(u)`, ``u`` uniform in (-1, 1), as ``jax.random.normal`` does.
    Using both words of each hash, under one scalar seed, costs half the hashing of
    ``jax.random.normal`` (which XORs the two words into one). ``a_r`` is the low bit of the hash of
    ``(r mod 2^32, (r >> 32) << 16)`` under ``s_a = bits(k_a, 2)``.

    Args:
      key: a JAX PRNG key.
      num: number of rows (static).
      d: input dimension (static).
      start: first row, counted from the first row of ``block``: a Python int, or a traced integer
        scalar (jit-friendly).
      block: first block (row ``block * BLOCK_ROWS``): a Python int or a traced integer scalar; lets
        traced code address rows past 2^31 with 32-bit integers.
      dtype: floating dtype; default float32 (float64 when x64 is enabled).

    Returns:
      :class:`Params` with ``W`` (num, d) and ``a`` (num,).

    Examples:
      >>> import jax
      >>> from jaxcorr import nn
      >>> p = nn.init(jax.random.key(0), 300, 4)
      >>> q = nn.init_rows(jax.random.key(0), 100, 4, start=200)
      >>> bool((p.W[200:] == q.W).all() and (p.a[200:] == q.a).all())
      True
    """
    num, d = int(num), int(d)
    if num < 0 or not 1 <= d <= MAX_DIM:
        raise ValueError(f"num must be >= 0 and 1 <= d <= {MAX_DIM}, got num={num}, d={d}")
    dtype = _checks.floating_dtype(dtype)
    if isinstance(start, int) and isinstance(block, int):
        first = block * BLOCK_ROWS + start
        if first < 0 or first + num > MAX_WIDTH:
            raise ValueError(f"rows [start, start + num) must lie in [0, {MAX_WIDTH}), got row {first}, num={num}")
        block, offset = divmod(first, BLOCK_ROWS)  # host values: placed explicitly (no implicit transfer)
        block, offset = jax.device_put((np.uint32(block), np.int32(offset)))
    else:
        block, offset = block + start // BLOCK_ROWS, start % BLOCK_ROWS
    return _init_rows(key, jnp.asarray(block, jnp.uint32), jnp.asarray(offset, jnp.int32), num, d, dtype)


def _seed(key):
    return jax.random.bits(key, (2,), jnp.uint32)


def _row_counters(block, offset, num: int):
    """(lo 32 bits, hi 16 bits) of rows block * BLOCK_ROWS + offset + i, i < num, in uint32."""
    base = block.astype(jnp.uint32) << 16  # BLOCK_ROWS = 2^16: the low 32 bits of the block's first row
    step = offset.astype(jnp.uint32) + lax.iota(jnp.uint32, num)
    lo = base + step  # wraps mod 2^32
    hi = (block.astype(jnp.uint32) >> 16) + (lo < base).astype(jnp.uint32)  # carry into bits 32..47
    return lo, hi


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _init_rows(key, first_block, offset, num: int, d: int, dtype) -> Params:
    lo, hi = _row_counters(first_block, offset, num)
    return _rows_from_counters(key, lo, hi, d, dtype)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _rows_at(key, lo, hi, d: int, dtype) -> Params:
    return _rows_from_counters(key, lo, hi, d, dtype)


def _rows_from_counters(key, lo, hi, d: int, dtype) -> Params:
    """The rows whose indices have low 32 bits ``lo`` and high 16 bits ``hi`` (uint32 vectors)."""
    kw, ka = jax.random.split(key)
    wide = jnp.dtype(dtype).itemsize > 4
    cols = d if wide else (d + 1) // 2
    shape = (lo.shape[0], cols)
    sw = _seed(kw)
    c0 = jnp.broadcast_to(lo[:, None], shape)
    c1 = (hi[:, None] << 16) | lax.broadcasted_iota(jnp.uint32, shape, 1)
    w1, w2 = threefry2x32_p.bind(sw[0], sw[1], c0, c1)
    if wide:
        bits = (w1.astype(jnp.uint64) << 32) | w2.astype(jnp.uint64)
        W = _normal_from_bits(bits, jnp.float64).astype(dtype)
    else:
        W = _normal_from_bits(jnp.concatenate([w1, w2], axis=1)[:, :d], jnp.float32).astype(dtype)
    sa = _seed(ka)
    s1, _ = threefry2x32_p.bind(sa[0], sa[1], lo, hi << 16)
    a = jnp.where((s1 & 1) == 1, 1, -1).astype(dtype)
    return Params(W=W, a=a)


def rows_at(key: jax.Array, idx, d: int, *, dtype=None) -> Params:
    r"""Rows ``idx`` of :func:`init` ``(key, m, d)`` (any ``m > max(idx)``), in the order given.

    The generator of :func:`init_rows` hashes each row's own counter, so rows can be drawn one by
    one: ``len(idx) * ceil(d / 2)`` hashes, whatever the width (a compact model's rows of W(0)
    without a pass over all ``m``, :func:`jaxcorr.checkpoint.restore`).

    Args:
      key: a JAX PRNG key.
      idx: (k,) integer row indices in ``[0, MAX_WIDTH)`` (host array or list; any order, repeats allowed).
      d: input dimension.
      dtype: floating dtype; default float32 (float64 when x64 is enabled).

    Returns:
      :class:`Params` with ``W`` (k, d) and ``a`` (k,), bit for bit rows ``idx`` of ``init``.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxcorr import nn
      >>> p = nn.init(jax.random.key(0), 300, 4)
      >>> rows = np.array([299, 7, 120])
      >>> q = nn.rows_at(jax.random.key(0), rows, 4)
      >>> bool((p.W[rows] == q.W).all() and (p.a[rows] == q.a).all())
      True
    """
    idx = np.asarray(idx)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ValueError(f"idx must be a 1-D integer array of row indices, got {idx.dtype} {idx.shape}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= MAX_WIDTH):
        raise ValueError(f"idx must lie in [0, {MAX_WIDTH}), got rows {int(idx.min())} .. {int(idx.max())}")
    d = int(d)
    if not 1 <= d <= MAX_DIM:
        raise ValueError(f"d must satisfy 1 <= d <= {MAX_DIM}, got {d}")
    idx = idx.astype(np.uint64)
    lo, hi = jax.device_put(((idx & np.uint64(0xFFFFFFFF)).astype(np.uint32), (idx >> np.uint64(32)).astype(np.uint32)))
    return _rows_at(key, lo, hi, d, _checks.floating_dtype(dtype))


def normal_bound(dtype=None) -> float:
    """The largest ``|W[r, j]|`` that :func:`init` can draw in ``dtype``: its normals come from
    uniforms on a finite grid, so they are bounded (about 5.4 in float32, 8.3 in float64)."""
    return _normal_bound(_checks.floating_dtype(dtype))


@functools.cache
def _normal_bound(dtype) -> float:
    wide = jnp.dtype(dtype).itemsize > 4
    udt, fdt = (np.uint64, jnp.float64) if wide else (np.uint32, jnp.float32)
    extremes = jax.device_put(np.array([0, np.iinfo(udt).max], udt))
    top = jax.jit(lambda e: jnp.max(jnp.abs(_normal_from_bits(e, fdt)).astype(dtype)))(extremes)
    return float(jax.device_get(top))


def _normal_from_bits(bits, dtype):
    """Standard normals from uniform bits, as ``jax.random.normal``: sqrt(2) erfinv(u), u in (-1, 1)."""
    info = jnp.finfo(dtype)
    nbits = info.bits
    one = lax.bitcast_convert_type(jnp.asarray(1, dtype), bits.dtype)
    u01 = lax.bitcast_convert_type((bits >> (nbits - info.nmant)) | one, dtype) - 1  # [0, 1)
    lo = jnp.nextafter(jnp.asarray(-1, dtype), jnp.asarray(0, dtype))
    u = jnp.maximum(lo, u01 * (1 - lo) + lo)
    return jnp.asarray(math.sqrt(2), dtype) * lax.erf_inv(u)


def relu_b(x: jax.Array, b) -> jax.Array:
    r"""Shifted ReLU :math:`\sigma_b(x) = \max\{x - b, 0\}` (Definition 2.1)."""
    x = jnp.asarray(x)
    return jnp.maximum(x - jnp.asarray(b, x.dtype), 0)


def _check_inputs(params, X, y=None):
    """Eager dtype checks of the network's inputs (static: no values read, nothing under jit);
    returns ``X`` and ``y`` as arrays (JAX arrays and tracers as they are)."""
    _checks.check_dtype("params.W", params.W)
    _checks.check_dtype("X", X)
    if y is not None:
        _checks.check_dtype("y", y)
    return tuple(None if v is None else v if isinstance(v, jax.Array) else jnp.asarray(v) for v in (X, y))


@jax.jit
def _fire_mask(params: Params, X, b):
    ip = _linalg.inner(jnp.atleast_2d(X), params.W)  # (n, m): <w_r, x_i>
    return ip > jnp.asarray(b, ip.dtype)


def fire_mask(params: Params, X: jax.Array, b) -> jax.Array:
    r"""(n, m) boolean matrix of :math:`\langle w_r, x_i \rangle > b`: row i is S_{i,fire} (Def. 2.4)."""
    X, _ = _check_inputs(params, X)
    return _fire_mask(params, X, b)


@jax.jit
def _predict(params: Params, X, b):
    single = X.ndim == 1
    ip = _linalg.inner(jnp.atleast_2d(X), params.W)
    out = _linalg.matmul(relu_b(ip, b), params.a.astype(ip.dtype))
    out = out / jnp.sqrt(jnp.asarray(params.W.shape[0], ip.dtype))
    return out[0] if single else out


def predict(params: Params, X: jax.Array, b) -> jax.Array:
    r"""2NN(m, b) output :math:`f(W, x, a)` (Definition 2.1) for ``X`` (n, d) -> (n,), or (d,) -> ().

    ``params.W`` and ``X`` must be float32, float64 or integers (half precision is refused,
    :func:`jaxcorr._checks.check_dtype`). One jitted program: with ``params``, ``X`` and ``b`` on
    the device it makes no host transfer.
    """
    X, _ = _check_inputs(params, X)
    return _predict(params, X, b)


@jax.jit
def _loss(params: Params, X, y, b):
    e = _predict(params, X, b) - y
    return 0.5 * jnp.sum(e * e)


def loss(params: Params, X: jax.Array, y: jax.Array, b) -> jax.Array:
    r""":math:`L(W) = \frac12 \sum_i (f(W, x_i, a) - y_i)^2` (Definition 2.1)."""
    X, y = _check_inputs(params, X, y)
    return _loss(params, X, y, b)


def loss_and_grad(W, a, X, y, b, scale=None):
    """Loss, analytic gradient and fire mask in one pass (shared with the dense training path).

    ``scale`` is 1/sqrt(m) for the network's width m (default ``1/sqrt(W.shape[0])``; smaller when
    ``W`` holds only the rows that can fire). Returns ``(loss, grad (m, d), fire (n, m) bool)``.
    """
    ip = _linalg.inner(X, W)  # (n, m): <w_r, x_i>
    b = jnp.asarray(b, ip.dtype)
    fire = ip > b
    if scale is None:
        scale = 1.0 / jnp.sqrt(jnp.asarray(W.shape[0], ip.dtype))
    u = _linalg.matmul(jnp.where(fire, ip - b, 0), a) * scale
    e = u - y
    coef = jnp.where(fire, (a * scale)[None, :] * e[:, None], 0)  # P_{i,r} (f_i - y_i), Alg. 8 l.19-23
    grad = _linalg.matmul(coef.T, X)
    return 0.5 * jnp.sum(e * e), grad, fire


def grad_W(params: Params, X: jax.Array, y: jax.Array, b) -> jax.Array:
    r"""Analytic :math:`\partial L / \partial W` of Section 2 with the strict indicator ``1[<w_r,x_i> > b]``.

    Equals ``jax.grad`` of :func:`loss` whenever no inner product equals ``b`` exactly.

    Returns:
      (m, d) array, rows :math:`\frac{a_r}{\sqrt m}\sum_i (f(x_i) - y_i) x_i 1[\langle w_r, x_i\rangle > b]`.
    """
    X, y = _check_inputs(params, X, y)
    return _grad_W(params, X, y, b)


@jax.jit
def _grad_W(params: Params, X, y, b):
    X = jnp.atleast_2d(X)
    y = jnp.atleast_1d(y)
    W = params.W
    return loss_and_grad(W, params.a.astype(W.dtype), X.astype(W.dtype), y.astype(W.dtype), b)[1]
