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

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcorr import _checks

__all__ = ["Params", "init", "default_threshold", "relu_b", "predict", "loss", "grad_W", "fire_mask"]

_HIGHEST = lax.Precision.HIGHEST


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


def init(key: jax.Array, m: int, d: int, dtype=None) -> Params:
    r"""Random initialisation of Section 2: :math:`w_r \sim N(0, I_d)`, :math:`a_r` uniform in {-1, +1}.

    Args:
      key: a JAX PRNG key.
      m: number of hidden neurons (width).
      d: input dimension.
      dtype: floating dtype; default float32 (float64 when x64 is enabled).

    Returns:
      :class:`Params` with ``W`` (m, d) and ``a`` (m,).
    """
    m, d = int(m), int(d)
    if m < 1 or d < 1:
        raise ValueError(f"m and d must be >= 1, got m={m}, d={d}")
    dtype = _checks.floating_dtype(dtype)
    kw, ka = jax.random.split(key)
    W = jax.random.normal(kw, (m, d), dtype)
    a = jax.random.rademacher(ka, (m,), dtype)
    return Params(W=W, a=a)


def relu_b(x: jax.Array, b) -> jax.Array:
    r"""Shifted ReLU :math:`\sigma_b(x) = \max\{x - b, 0\}` (Definition 2.1)."""
    x = jnp.asarray(x)
    return jnp.maximum(x - jnp.asarray(b, x.dtype), 0)


def _inner(W, X):
    return jnp.matmul(X, W.T, precision=_HIGHEST)  # (n, m): <w_r, x_i>


def fire_mask(params: Params, X: jax.Array, b) -> jax.Array:
    r"""(n, m) boolean matrix of :math:`\langle w_r, x_i \rangle > b`: row i is S_{i,fire} (Def. 2.4)."""
    ip = _inner(params.W, jnp.atleast_2d(X))
    return ip > jnp.asarray(b, ip.dtype)


def predict(params: Params, X: jax.Array, b) -> jax.Array:
    r"""2NN(m, b) output :math:`f(W, x, a)` (Definition 2.1) for ``X`` (n, d) -> (n,), or (d,) -> ()."""
    X = jnp.asarray(X)
    single = X.ndim == 1
    ip = _inner(params.W, jnp.atleast_2d(X))
    out = jnp.matmul(relu_b(ip, b), params.a.astype(ip.dtype), precision=_HIGHEST)
    out = out / jnp.sqrt(jnp.asarray(params.W.shape[0], ip.dtype))
    return out[0] if single else out


def loss(params: Params, X: jax.Array, y: jax.Array, b) -> jax.Array:
    r""":math:`L(W) = \frac12 \sum_i (f(W, x_i, a) - y_i)^2` (Definition 2.1)."""
    e = predict(params, X, b) - jnp.asarray(y)
    return 0.5 * jnp.sum(e * e)


def loss_and_grad(W, a, X, y, b, scale=None):
    """Loss, analytic gradient and fire mask in one pass (shared with the dense training path).

    ``scale`` is 1/sqrt(m) for the network's width m (default ``1/sqrt(W.shape[0])``; smaller when
    ``W`` holds only the rows that can fire). Returns ``(loss, grad (m, d), fire (n, m) bool)``.
    """
    ip = _inner(W, X)
    b = jnp.asarray(b, ip.dtype)
    fire = ip > b
    if scale is None:
        scale = 1.0 / jnp.sqrt(jnp.asarray(W.shape[0], ip.dtype))
    u = jnp.matmul(jnp.where(fire, ip - b, 0), a, precision=_HIGHEST) * scale
    e = u - y
    coef = jnp.where(fire, (a * scale)[None, :] * e[:, None], 0)  # P_{i,r} (f_i - y_i), Alg. 8 l.19-23
    grad = jnp.matmul(coef.T, X, precision=_HIGHEST)
    return 0.5 * jnp.sum(e * e), grad, fire


def grad_W(params: Params, X: jax.Array, y: jax.Array, b) -> jax.Array:
    r"""Analytic :math:`\partial L / \partial W` of Section 2 with the strict indicator ``1[<w_r,x_i> > b]``.

    Equals ``jax.grad`` of :func:`loss` whenever no inner product equals ``b`` exactly.

    Returns:
      (m, d) array, rows :math:`\frac{a_r}{\sqrt m}\sum_i (f(x_i) - y_i) x_i 1[\langle w_r, x_i\rangle > b]`.
    """
    X = jnp.atleast_2d(jnp.asarray(X))
    y = jnp.atleast_1d(jnp.asarray(y))
    W = params.W
    return loss_and_grad(W, params.a.astype(W.dtype), X.astype(W.dtype), y.astype(W.dtype), b)[1]
