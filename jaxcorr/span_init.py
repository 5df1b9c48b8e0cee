r"""W(0) defined by its key and the data's basis: only the rows that can fire are drawn (``--init span``).

One concept, the second definition of W(0) beside :func:`jaxcorr.nn.init` (``--init rows``); the
module runs long because the law, its proof, its samplers and training in its coordinates belong
together.

Only the law of W(0) matters to gradient descent (Section 2: :math:`w_r \sim N(0, I_d)` i.i.d.).
Let ``U`` (d, k) be an orthonormal basis of span(X), ``k = rank X``, and :math:`c_i = U^T x_i`
(the rows of ``C = X U``). Row ``r`` is

.. math:: w_r = U g_r + (I - U U^T) z_r, \qquad g_r \in R^k, \quad z_r \sim N(0, I_d),

and :math:`(I - UU^T) z_r = U_\perp h_r` with :math:`h_r = U_\perp^T z_r \sim N(0, I_{d-k})` for
any orthonormal completion :math:`U_\perp`, so ``U_perp`` is never formed. With
:math:`g_r \sim N(0, I_k)` independent of :math:`z_r`, :math:`w_r \sim N(0, I_d)`. Since
:math:`\langle w_r, x_i\rangle = \langle g_r, c_i\rangle` (x_i lies in span U), whether a row fires
depends on ``g_r`` alone. Rows split by the *partition thresholds* :math:`\beta_i = b - \tau_i`
(:math:`\tau_i` a rounding margin, below): ``A = {r : max_i <g_r, c_i> - beta_i > 0}``, the
*held* rows, a superset of :math:`\bigcup_i S_{i,fire}(0)` (Definition 2.4). A row outside ``A``
fires for no point however float32 or float64 rounds its inner products, so by the active-set
invariant of :mod:`jaxcorr.train` it never moves: training needs A only (``train.fit(..., width=m)``).

**The draw of A (Karp-Luby-Madras union-bound mixture).** Let :math:`t_i = \beta_i / \|c_i\|`,
:math:`p_i = Q(t_i)` (``Q`` the normal tail; ``p_i = 0`` for ``c_i = 0``) and :math:`q = \sum_i p_i`.

1. Row ``r`` is a *candidate* with probability ``q``, independently (geometric skips within each
   block of :data:`CANDIDATE_BLOCK` rows: the gaps :math:`\lfloor \log u / \log(1 - q)\rfloor`,
   ``u`` uniform with 53 bits, give exactly i.i.d. Bernoulli(q) indicators).
2. A candidate picks ``i`` with probability :math:`p_i / q`, draws :math:`x \sim N(0,1)` truncated
   to :math:`x > t_i` (Robert's exponential rejection sampler, float64: exact in the far tail where
   an inverse CDF is not) and :math:`\xi \sim N(0, I_k)`, and sets
   :math:`g = \xi + (x - \langle u_i, \xi\rangle) u_i`, :math:`u_i = c_i/\|c_i\|`.
3. It is kept with probability :math:`1/N(g)`, :math:`N(g) = \#\{j : \langle g, c_j\rangle > \beta_j\}`
   (``>= 1``: ``i`` counts by construction).

*Proof sketch.* Step 2 draws ``g`` from the mixture :math:`\sum_i (p_i/q)\, \mu_i`, :math:`\mu_i`
= N(0, I_k) given :math:`E_i = \{\langle g, c_i\rangle > \beta_i\}`, whose density is
:math:`\varphi(g) N(g) / q` on :math:`F = \bigcup_i E_i`. So a row is kept with probability
:math:`q \int_F \varphi N / q \cdot 1/N = P(F)`, exactly its probability of firing, and a kept
row has density :math:`\varphi(g) 1_F(g) / P(F)`: N(0, I_k) given ``F``. Candidacy, coins and
variates use disjoint bits per row, so rows are independent. A row not kept (no candidate, or a
candidate rejected in step 3) takes ``g`` from N(0, I_k) given "not F", by rejection with bits of
its own. Its law is :math:`P(F) \mu_F + (1 - P(F)) \mu_{F^c} = N(0, I_k)`: W(0) has exactly the
law N(0, I_d) with independent rows. Tested in ``tests/test_span_init.py`` (counts against an
eager Monte Carlo, KS of projections, independence, exact fire checks).

**q >= 1** (so many points, or so low a threshold, that the mixture does not apply): the *full
draw*, said in ``SpanInit.mode`` (``"full"``): every row's ``g`` is N(0, I_k) from its own
bits and A is found by testing all ``m`` rows, O(m n k) at set-up.

**Cost.** Set-up: O(m q) candidates, each O(n k) plus its rejection rounds (mean
:math:`\le 1/0.76` per truncated normal), and O(|A| k) memory for the held rows' ``g``; nothing
d-dimensional. A row on demand: O(n k + d k) (a row outside A: O(n k) per rejection round, mean
rounds :math:`1/(1 - P(F))`). :func:`setup` divides into fixed blocks of rows that are drawn
independently (``devices=``: blocks round robin over devices; processes can each take a range of
blocks): nothing but the held rows moves.

**Determinism.** Every value is a pure function of (the key, ``U``, ``C``, the thresholds, ``m``,
``r``): Threefry-2x32 counters ``(r mod 2^32, (r >> 32) << 16 | slot)`` per row and purpose
(``(j, block)`` for the candidate gaps, a seed per rejection round), never a sequential stream, so
the bits do not depend on block sizes, on how rows are grouped or on the device count. The draw
computes in float64 (a local ``jax.enable_x64`` scope; on hardware without float64 it is emulated
or slow) and rounds the rows last: the float32 network is the float64 one rounded. ``U`` and ``C``
are computed once on the host (numpy float64 SVD; ``k`` = number of singular values above
``max(n, d) * eps * s_max``, numpy's ``matrix_rank`` rule) and kept in the :class:`SpanInit`, so a
resume that stores them rebuilds the same rows whatever its linear algebra.

**The rounding margin** :math:`\tau_i = 2 (d + 4)\,\epsilon_{32} W_{max} \|x_i\| + Z_{max}
(\rho_i + 4 d\, \epsilon_{64} \|x_i\|)` with :math:`\rho_i = \|x_i - U c_i\|`: the variates are
bounded (53-bit uniforms: normals by :data:`NORMAL_BOUND`, the truncated ones by
:math:`t_{max} + 37`), so :math:`\|g\| \le G_{max}`, :math:`\|z\| \le Z_{max} = \sqrt d\,
\mathrm{NORMAL\_BOUND}`, :math:`W_{max} = G_{max} + Z_{max}`; rounding ``w`` to float32 and a
float32 d-term dot product (Higham's :math:`\gamma_d`) move :math:`\langle w, x_i\rangle` by less
than the first term, the residual of x_i off span U by less than the second. The same margin
(float32's, which covers float64) is used for both dtypes, so A does not depend on the dtype.

Examples:
  >>> import jax, numpy as np
  >>> from jaxcorr import data, nn, span_init
  >>> X, y = data.synthetic(seed=0, n=4, d=8)
  >>> spec = span_init.define(jax.random.key(0), X, m=4096, b=1.5)
  >>> act = span_init.setup(spec)
  >>> W = span_init.materialize(spec, act).W            # all m rows (small m only)
  >>> fires = (nn.fire_mask(nn.Params(W, W[:, 0]), X, 1.5)).any(axis=0)
  >>> held = np.zeros(4096, bool); held[act.idx] = True
  >>> bool((fires <= held).all()), act.mode
  (True, 'mixture')
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p
from jax.scipy.special import ndtri

from jaxcorr import _checks, _linalg, nn, train

__all__ = ["SpanInit", "ActiveSet", "SpanTrained", "SpanModel", "define", "setup", "build", "span_coords", "rows",
           "materialize", "output_weights", "fit", "predict", "CANDIDATE_BLOCK", "MAX_WIDTH", "NORMAL_BOUND"]

#: Rows per candidate block -- the gaps of block ``B`` are hashed from ``(j, B)``; a construction
#: constant (the rows never depend on how many blocks one call draws).
CANDIDATE_BLOCK = 1 << 16
#: Largest width -- a row index has 48 bits (32 in the first counter word, 16 in the second).
MAX_WIDTH = 1 << 48
#: Largest ``d`` (and ``k + 2``) -- a variate's slot has 16 bits of the counter's second word.
_MAX_SLOTS = 1 << 16
#: Bound on every standard normal drawn here -- ndtri of a 53-bit uniform in [2^-54, 1 - 2^-54].
NORMAL_BOUND = 8.3
_EXP_BOUND = 37.5  # Exp(1) variates -log(u), u >= 2^-54: at most 54 ln 2 = 37.43
_MAX_MATERIALIZE = 1 << 24
_SLOTS_PER_CALL = 1 << 15  # candidate slots per jitted set-up call (default: cache-sized)
_FULL_ROWS_PER_CALL = 1 << 16
# purposes: one Threefry seed each, from fold_in(key, purpose)
_GAP, _MIX, _TRUNC, _OUT, _FULL, _Z, _A = range(7)


# ----------------------------------------------------------------------------------- definition
@dataclasses.dataclass(frozen=True, eq=False)
class SpanInit:
    """The network's definition: a key, the data's basis and the thresholds (host values only).

    Everything a checkpoint needs to rebuild the same rows on another machine: ``key_data``, ``m``,
    ``b``, ``U``, ``C``, ``beta`` and ``mode`` (:meth:`to_arrays` / :meth:`from_arrays`).
    """

    key_data: np.ndarray  # shape=(K,), uint32: jax.random.key_data of the key
    key_impl: str  # the key's PRNG implementation name ("threefry2x32", ...)
    m: int  # width
    b: float  # the network's threshold of sigma_b
    U: np.ndarray  # shape=(d, k), float64: orthonormal basis of span(X)
    C: np.ndarray  # shape=(n, k), float64: C = X U, row i is c_i
    beta: np.ndarray  # shape=(n,), float64: partition thresholds b - tau_i
    mode: str  # "mixture" (q < 1) or "full" (q >= 1: every row tested at set-up)
    q: float  # sum_i Q(beta_i / |c_i|): candidates per row of the mixture
    seeds: np.ndarray  # shape=(7, 2), uint32: Threefry seeds per purpose (derived from the key)

    @property
    def n(self) -> int:
        return self.C.shape[0]

    @property
    def d(self) -> int:
        return self.U.shape[0]

    @property
    def k(self) -> int:
        return self.U.shape[1]

    def to_arrays(self) -> dict:
        """The definition as plain numbers (numpy arrays and scalars) for a checkpoint."""
        return {"key_data": self.key_data, "key_impl": self.key_impl, "m": self.m, "b": self.b,
                "U": self.U, "C": self.C, "beta": self.beta, "mode": self.mode}

    @classmethod
    def from_arrays(cls, arrays: dict) -> SpanInit:
        """Rebuild from :meth:`to_arrays`; the rows are the same bits as the original's."""
        key = jax.random.wrap_key_data(jnp.asarray(arrays["key_data"], jnp.uint32), impl=str(arrays["key_impl"]))
        U = np.asarray(arrays["U"], np.float64)
        C = np.asarray(arrays["C"], np.float64)
        return _build(key, int(arrays["m"]), float(arrays["b"]), U, C, np.asarray(arrays["beta"], np.float64),
                      str(arrays["mode"]))


def _as_key(key):
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(f"key must be a JAX PRNG key (typed, or raw uint32 of shape (2,)), got {key.dtype} "
                         f"{key.shape}")
    return jax.random.wrap_key_data(key)


def _check_x(X) -> np.ndarray:
    try:
        Xh = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"X must be a real (n, d) array, got {type(X).__name__}") from None
    if Xh.ndim != 2 or Xh.shape[0] < 1 or Xh.shape[1] < 1:
        raise ValueError(f"X must be a 2-D array (n, d) with n, d >= 1, got shape {Xh.shape}")
    if not np.isfinite(Xh).all():
        raise ValueError(f"X must be finite, but it holds {int((~np.isfinite(Xh)).sum())} NaN or infinite value(s)")
    if Xh.shape[1] > _MAX_SLOTS:
        raise ValueError(f"X must have d <= {_MAX_SLOTS} columns, got d = {Xh.shape[1]}")
    return Xh


def _check_width(m) -> int:
    try:
        m = operator.index(m)
    except TypeError:
        raise ValueError(f"m must be an int, got {type(m).__name__}") from None
    if not 1 <= m <= MAX_WIDTH:
        raise ValueError(f"m must satisfy 1 <= m <= 2^48 = {MAX_WIDTH}, got {m}")
    return m


def _basis(Xh: np.ndarray):
    """Orthonormal basis U (d, k) of span(X) by float64 SVD, numpy's matrix_rank rule for k."""
    _, s, Vt = np.linalg.svd(Xh, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(Xh.shape) * np.finfo(np.float64).eps
    k = int((s > tol).sum())
    if k == 0:
        raise ValueError("X must have rank >= 1 (every point is zero: no neuron can fire)")
    U = np.ascontiguousarray(Vt[:k].T)
    return U, Xh @ U


def _q(x: np.ndarray) -> np.ndarray:
    """Normal tail Q(x) = P(N(0,1) > x), float64, accurate far out (erfc)."""
    return np.array([0.5 * math.erfc(v / math.sqrt(2)) if math.isfinite(v) else 0.0 for v in x])


def _norms(A: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(A * A, axis=1))


def _margin(U, C, resid, xnorm, t_max) -> np.ndarray:
    """tau_i of the module docstring, (n,) float64."""
    d, k = U.shape
    z_max = math.sqrt(d) * NORMAL_BOUND
    w_max = math.sqrt(k) * 2 * NORMAL_BOUND + t_max + _EXP_BOUND + z_max
    eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    return 2 * (d + 4) * eps32 * w_max * xnorm + z_max * (resid + 4 * d * eps64 * xnorm)


def define(key, X, m: int, b: float | None = None, *, mode: str = "auto") -> SpanInit:
    r"""Define 2NN(m, b)'s W(0) by ``key`` and the basis of span(X) (host, O(n d min(n, d))).

    Args:
      key: a JAX PRNG key (typed, or raw uint32 (2,)).
      X: (n, d) training points, finite, any real dtype (read in float64).
      m: width, 1 <= m <= :data:`MAX_WIDTH`.
      b: threshold, finite and > 0; default :func:`jaxcorr.nn.default_threshold` ``(m)``.
      mode: ``"auto"`` (the mixture when q < 1, else the full draw), ``"mixture"`` (refused when
        q >= 1) or ``"full"`` (every row drawn from N(0, I_k) and tested: an independent
        construction of the same law, with other bits).

    Returns:
      :class:`SpanInit` (``mode`` says which draw applies).

    Raises:
      ValueError: bad ``key``, ``X``, ``m``, ``b`` or ``mode``, ``b`` not above the rounding margin,
        or ``mode="mixture"`` with q >= 1.
    """
    key = _as_key(key)
    Xh = _check_x(X)
    m = _check_width(m)
    b = nn.default_threshold(m) if b is None else b
    if np.ndim(b) != 0 or not math.isfinite(float(b)) or float(b) <= 0:
        raise ValueError(f"b must be a finite real scalar > 0, got {b!r}")
    if mode not in ("auto", "mixture", "full"):
        raise ValueError(f"mode must be 'auto', 'mixture' or 'full', got {mode!r}")
    U, C = _basis(Xh)
    if U.shape[1] + 2 > _MAX_SLOTS:
        raise ValueError(f"rank X must be <= {_MAX_SLOTS - 2}, got {U.shape[1]}")
    xnorm, cn = _norms(Xh), _norms(C)
    resid = _norms(Xh - C @ U.T)
    with np.errstate(divide="ignore"):
        t_max = float(np.max(np.where(cn > 0, float(b) / np.where(cn > 0, cn, 1), 0.0)))
    beta = float(b) - _margin(U, C, resid, xnorm, t_max)
    if (beta <= 0).any():
        raise ValueError(f"b = {float(b)} must exceed the rounding margin tau (max {float(b) - beta.min():.3g})")
    return _build(key, m, float(b), U, C, beta, mode)


def _build(key, m, b, U, C, beta, mode) -> SpanInit:
    cn = _norms(C)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(cn > 0, beta / np.where(cn > 0, cn, 1), np.inf)
    q = float(np.sum(_q(t)))
    if mode == "auto":
        mode = "mixture" if q < 1 else "full"
    elif mode == "mixture" and q >= 1:
        raise ValueError(f"mode='mixture' needs q = sum_i Q(beta_i/|c_i|) < 1, got q = {q:.4g}: use mode='full'")
    seeds = np.stack([np.asarray(jax.random.bits(jax.random.fold_in(key, p), (2,), jnp.uint32))
                      for p in range(7)])
    return SpanInit(key_data=np.asarray(jax.random.key_data(key)), key_impl=str(jax.random.key_impl(key)),
                    m=int(m), b=float(b), U=U, C=C, beta=np.asarray(beta, np.float64), mode=mode, q=q, seeds=seeds)


# ----------------------------------------------------------------------------------- samplers
def _pad8(x: int) -> int:
    return -(-x // 8) * 8


def _consts(spec: SpanInit) -> dict:
    """Device constants (float64) of the draw; computed inside the x64 scope.

    ``n``, ``k`` and ``d`` are padded to multiples of 8 (one compiled draw serves many data sets):
    padded points have ``c = 0`` and ``beta = inf`` (never over, weight 0), padded basis columns
    and rows are zero. The padded slots only add exact zeros to the fixed-order sums, so every
    value of the first ``n``, ``k``, ``d`` entries is what the unpadded draw computes.
    """
    n, k, d = spec.n, spec.k, spec.d
    n_p, k_p, d_p = _pad8(n), _pad8(k), _pad8(d)
    cn = _norms(spec.C)
    safe = np.where(cn > 0, cn, 1.0)
    t = np.where(cn > 0, spec.beta / safe, np.inf)
    w = _q(t)
    cum = np.cumsum(w) / max(spec.q, 1e-300)
    cum[np.searchsorted(cum, cum[-1]):] = 1.0  # the last positive weight closes at exactly 1
    tf = np.where(np.isfinite(t), t, 0.0)
    lam = (tf + np.sqrt(tf * tf + 4)) / 2

    def pad(a, shape, fill=0.0):
        out = np.full(shape, fill, np.float64)
        out[tuple(slice(0, s_) for s_ in a.shape)] = a
        return jnp.asarray(out, jnp.float64)

    return {"C": pad(spec.C, (n_p, k_p)), "Uc": pad(spec.C / safe[:, None], (n_p, k_p)),
            "beta": pad(spec.beta, (n_p,), np.inf), "t": pad(tf, (n_p,)), "lam": pad(lam, (n_p,), 1.0),
            "cum": pad(cum, (n_p,), 1.0), "U": pad(spec.U, (d_p, k_p)), "b": jnp.asarray(spec.b, jnp.float64),
            "seeds": jnp.asarray(spec.seeds, jnp.uint32)}


def _hash(seed, c0, c1):
    c0, c1 = jnp.broadcast_arrays(jnp.asarray(c0, jnp.uint32), jnp.asarray(c1, jnp.uint32))
    return threefry2x32_p.bind(seed[0], seed[1], c0, c1)


def _u53(w):
    """Uniform in (0, 1) with 53 random bits from a hash's two words: (k + 1/2) 2^-53."""
    bits = (w[0].astype(jnp.uint64) << 32) | w[1].astype(jnp.uint64)
    return ((bits >> 11).astype(jnp.float64) + 0.5) * (2.0 ** -53)


def _row_hash(seed, lo, hi, slot):
    """Hash of rows (lo, hi) (B,) and slots (S,) or scalar: words of shape (B, S) or (B,)."""
    slot = jnp.asarray(slot, jnp.uint32)
    if slot.ndim:
        return _hash(seed, lo[:, None], (hi[:, None] << 16) | slot[None, :])
    return _hash(seed, lo, (hi << 16) | slot)


def _round_seed(seed, rnd):
    return jnp.stack(_hash(seed, rnd, jnp.uint32(0xFFFFFFFF)))


def _normals(seed, lo, hi, num: int, first: int = 0):
    """(B, num) standard normals of slots first .. first + num - 1 (one 1-D hash per slot: faster
    than a 2-D broadcast of the counters)."""
    cols = [ndtri(_u53(_row_hash(seed, lo, hi, first + j))) for j in range(num)]
    return jnp.stack(cols, axis=1)


def _dots(g, C):
    """(B, n) of <g_r, c_j>: an elementwise sum over the k columns in ascending order (a fused loop,
    the same bits for any B; a matmul's blocking could depend on B)."""
    k = C.shape[1]
    if k <= 64:
        acc = g[:, 0, None] * C[None, :, 0]
        for col in range(1, k):
            acc = acc + g[:, col, None] * C[None, :, col]
        return acc
    body = lambda col, acc: acc + lax.dynamic_index_in_dim(g, col, 1, keepdims=True) * \
        lax.dynamic_index_in_dim(C, col, 1, keepdims=False)[None, :]  # noqa: E731
    return lax.fori_loop(1, k, body, g[:, 0, None] * C[None, :, 0])


def _truncated(cs, t, lam, lo, hi, live):
    """N(0, 1) given > t per row (Robert 1995: t + Exp(lam), kept w.p. exp(-(x - lam)^2 / 2))."""
    def body(st):
        rnd, x, done = st
        seed = _round_seed(cs["seeds"][_TRUNC], rnd)
        u1 = _u53(_row_hash(seed, lo, hi, 0))
        u2 = _u53(_row_hash(seed, lo, hi, 1))
        prop = t - jnp.log(u1) / lam
        acc = u2 <= jnp.exp(-0.5 * (prop - lam) ** 2)
        return rnd + 1, jnp.where(done, x, prop), done | acc

    init = (jnp.uint32(0), jnp.zeros_like(t), ~live)
    return lax.while_loop(lambda st: ~jnp.all(st[2]), body, init)[1]


def _candidate_g(cs, lo, hi, live):
    """Step 2 and 3 of the mixture for candidate rows: (g (B, k), kept (B,) bool)."""
    k = cs["U"].shape[1]
    seed = cs["seeds"][_MIX]
    u_pick = _u53(_row_hash(seed, lo, hi, 0))
    i = jnp.minimum(jnp.sum(u_pick[:, None] >= cs["cum"], axis=1), cs["C"].shape[0] - 1)  # first cum > u
    xi = _normals(seed, lo, hi, k, first=2)
    x = _truncated(cs, cs["t"][i], cs["lam"][i], lo, hi, live)
    ui = cs["Uc"][i]
    along = ui[:, 0] * xi[:, 0]
    for col in range(1, k):  # <u_i, xi> in ascending order (a reduce's order may depend on B)
        along = along + ui[:, col] * xi[:, col]
    g = xi + (x - along)[:, None] * ui
    over = _dots(g, cs["C"]) > cs["beta"]
    others = jnp.sum(over & (jnp.arange(over.shape[1]) != i[:, None]), axis=1)  # integers: exact
    kept = _u53(_row_hash(seed, lo, hi, 1)) * (1 + others) < 1
    return g, kept & live


def _outside_g(cs, lo, hi):
    """N(0, I_k) given max_j <g, c_j> - beta_j <= 0, by rejection (a seed per round)."""
    k = cs["U"].shape[1]

    def body(st):
        rnd, g, done = st
        xi = _normals(_round_seed(cs["seeds"][_OUT], rnd), lo, hi, k)
        ok = ~jnp.any(_dots(xi, cs["C"]) > cs["beta"], axis=1)
        return rnd + 1, jnp.where(done[:, None], g, xi), done | ok

    init = (jnp.uint32(0), jnp.zeros((lo.shape[0], k), jnp.float64), jnp.zeros(lo.shape, bool))
    return lax.while_loop(lambda st: ~jnp.all(st[2]), body, init)[1]


def _full_g(cs, lo, hi):
    return _normals(cs["seeds"][_FULL], lo, hi, cs["U"].shape[1])


def _split(r):
    return (r & 0xFFFFFFFF).astype(jnp.uint32), (r >> 32).astype(jnp.uint32)


def _summary(cs, r, g, kept):
    """Compact the kept rows (order kept) and count fires at b: (count, r, g, k0, union)."""
    (sel,) = jnp.nonzero(kept, size=kept.shape[0], fill_value=kept.shape[0] - 1)
    fire = (_dots(g, cs["C"]) > cs["b"]) & kept[:, None]
    return (jnp.sum(kept), r[sel], g[sel], jnp.sum(fire, axis=0), jnp.sum(jnp.any(fire, axis=1)))


@functools.partial(jax.jit, static_argnames=("nb", "cap"))
def _mixture_call(cs, block0, m, logq, *, nb: int, cap: int):
    """Candidates of blocks block0 .. block0 + nb - 1 (cap gaps each), their draw and kept rows."""
    blocks = block0 + jnp.arange(nb, dtype=jnp.int64)
    u = _u53(_hash(cs["seeds"][_GAP], jnp.arange(cap, dtype=jnp.uint32)[None, :], blocks.astype(jnp.uint32)[:, None]))
    gaps = jnp.minimum(jnp.floor(jnp.log(u) / logq), CANDIDATE_BLOCK).astype(jnp.int64)
    pos = jnp.cumsum(gaps + 1, axis=1) - 1  # positions of the candidates in their block
    live_rows = jnp.clip(m - blocks * CANDIDATE_BLOCK, 0, CANDIDATE_BLOCK)
    overflow = jnp.any(pos[:, -1] < live_rows)
    r = (blocks[:, None] * CANDIDATE_BLOCK + pos).reshape(-1)
    live = (pos < live_rows[:, None]).reshape(-1)
    r = jnp.where(live, r, 0)
    lo, hi = _split(r)
    g, kept = _candidate_g(cs, lo, hi, live)
    return overflow, jnp.sum(live), _summary(cs, r, g, kept)


@functools.partial(jax.jit, static_argnames=("rows",))
def _full_call(cs, start, m, *, rows: int):
    r = start + jnp.arange(rows, dtype=jnp.int64)
    live = r < m
    lo, hi = _split(jnp.where(live, r, 0))
    g = _full_g(cs, lo, hi)
    kept = jnp.any(_dots(g, cs["C"]) > cs["beta"], axis=1) & live
    return _summary(cs, r, g, kept)


# ----------------------------------------------------------------------------------- set-up
@dataclasses.dataclass(frozen=True, eq=False)
class ActiveSet:
    """The held rows A of a :class:`SpanInit` at t = 0 (the result of :func:`setup`)."""

    idx: np.ndarray  # shape=(|A|,), int64, sorted: the held rows' indices
    G: jax.Array  # shape=(|A|, k), dtype of the set-up: their span coordinates g_r (<w_r, x_i> = <g_r, c_i>)
    k0: np.ndarray  # shape=(n,), int64: k_{i,0} = #{r : <g_r, c_i> > b} (Definition 2.4, float64)
    n_fire_union: int  # |union_i S_{i,fire}(0)| (<= |A|: A adds the rows within the margin)
    n_candidates: int  # rows drawn as candidates (mixture) or tested (full draw: m)
    mode: str  # "mixture" or "full" (the full draw: q >= 1, every row tested)
    setup_s: float  # wall clock of the set-up, compilation included
    calls: int  # jitted calls (blocks of rows) it took
    capacity_events: tuple  # calls rerun with a larger candidate capacity: dicts (call, old, new)

    @property
    def n_active(self) -> int:
        return int(self.idx.shape[0])


def _pow2(x: float) -> int:
    return 1 << max(6, math.ceil(math.log2(max(x, 1.0))))


def _dtype(dtype):
    dt = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be floating, got {dt}")
    return jax.dtypes.canonicalize_dtype(dt)


def setup(spec: SpanInit, *, dtype=None, rows_per_call: int | None = None, devices=None) -> ActiveSet:
    r"""Draw the held rows A of ``spec`` exactly in law (the module docstring's mixture, or the full draw).

    Time O(m q (n k + rounds)) for the mixture (O(m n k) for the full draw), memory O(|A| k) plus one
    call's candidates; no d-dimensional array. The result does not depend on ``rows_per_call`` or
    ``devices``.

    Args:
      spec: the definition (:func:`define`).
      dtype: floating dtype of ``G``; default float32 (float64 under x64). The draw runs in float64.
      rows_per_call: rows per jitted call (rounded to whole :data:`CANDIDATE_BLOCK` blocks for the
        mixture); default from a working set of about 2^15 candidates.
      devices: devices to spread the calls over, round robin (default: the first local device).
        Calls are independent (each draws whole blocks of rows from their own counters); only the
        held rows move, to the first device.

    Returns:
      :class:`ActiveSet`.
    """
    if not isinstance(spec, SpanInit):
        raise ValueError(f"spec must be a SpanInit (span_init.define), got {type(spec).__name__}")
    dt = _dtype(dtype)
    if rows_per_call is not None and (operator.index(rows_per_call) < 1):
        raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
    devs = list(devices) if devices is not None else jax.local_devices()[:1]
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        consts = [jax.device_put(_consts(spec), dev) for dev in devs]
        m = jnp.int64(spec.m)
        if spec.mode == "full":
            R = _pow2(rows_per_call or min(spec.m, _FULL_ROWS_PER_CALL))
            starts = list(range(0, spec.m, R))
            call = lambda j, s, cap: (False, None, _full_call(consts[j], jnp.int64(s), m, rows=R))  # noqa: E731
            cap = None
        else:
            e = min(CANDIDATE_BLOCK, spec.m) * spec.q  # candidates expected per block
            cap = -(-int(1.1 * e + 6 * math.sqrt(e) + 64) // 64) * 64  # past it: >= 6 sigma, rerun
            blocks = -(-spec.m // CANDIDATE_BLOCK)
            nb = max(1, rows_per_call // CANDIDATE_BLOCK) if rows_per_call else max(1, _SLOTS_PER_CALL // cap)
            nb = -(-blocks // -(-blocks // nb))  # the same calls, evenly filled (no call of padding)
            logq = jnp.float64(math.log1p(-spec.q)) if spec.q > 0 else None
            starts = list(range(0, blocks, nb)) if spec.q > 0 else []
            call = lambda j, s, c: _mixture_call(consts[j], jnp.int64(s), m, logq, nb=nb, cap=c)  # noqa: E731
        out = _run_calls(call, starts, cap, devs, dt, spec.n, spec.k)
    idx, parts, k0, union, ncand, events = out
    G = jax.device_put(np.concatenate(parts, axis=0) if parts else np.zeros((0, spec.k), dt), devs[0])
    return ActiveSet(idx=idx, G=G, k0=k0, n_fire_union=union, n_candidates=spec.m if spec.mode == "full" else ncand,
                     mode=spec.mode, setup_s=time.perf_counter() - t0, calls=len(starts),
                     capacity_events=tuple(events))


def _run_calls(call, starts, cap, devs, dt, n, k):
    """Dispatch one call per device before reading any; rerun a call whose candidates overflowed."""
    idx, parts, events = [], [], []
    k0, union, ncand = np.zeros(n, np.int64), 0, 0
    for wave in range(0, len(starts), len(devs)):
        todo = list(enumerate(starts[wave:wave + len(devs)]))
        outs = [(cap, call(j, s, cap)) for j, s in todo]
        for (j, s), (used, res) in zip(todo, outs):
            while bool(res[0]):  # the cap-th candidate is still inside a block: more may follow
                cap = 2 * used
                events.append({"call": wave + j, "old_capacity": used, "new_capacity": cap})
                used, res = cap, call(j, s, cap)
            live, (cnt, r, g, kf, un) = res[1], res[2]
            cnt = int(cnt)
            ncand += 0 if live is None else int(live)
            idx.append(np.asarray(r)[:cnt])  # whole buffers to the host: no per-count slice to compile
            parts.append(np.asarray(g)[:cnt, :k].astype(dt))
            k0 += np.asarray(kf, np.int64)[:n]
            union += int(un)
    idx = np.concatenate(idx).astype(np.int64) if idx else np.zeros(0, np.int64)
    return idx, parts, k0, union, ncand, events


# ----------------------------------------------------------------------------------- rows on demand
def _check_idx(spec, idx) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ValueError(f"idx must be a 1-D integer array of row indices, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= spec.m):
        raise ValueError(f"idx must lie in [0, m={spec.m}), got rows {int(idx.min())} .. {int(idx.max())}")
    return idx


def _row_values(cs, r, which: str, d: int):
    """(g, w, a) of rows ``r`` drawn as ``which`` (``"cand"``, ``"out"`` or ``"full"``), float64;
    ``w`` has ``d`` (a multiple of 8) columns, or is None for ``d = 0``."""
    lo, hi = _split(r)
    if which == "cand":
        g = _candidate_g(cs, lo, hi, jnp.ones(r.shape, bool))[0]
    elif which == "out":
        g = _outside_g(cs, lo, hi)
    else:
        g = _full_g(cs, lo, hi)
    if d == 0:
        return g, None, None
    U = cs["U"]
    z = _normals(cs["seeds"][_Z], lo, hi, d)
    w = z + _dots(g - _dots(z, U.T), U)  # U g + (I - U U^T) z, fixed-order sums over k
    a = jnp.where((_row_hash(cs["seeds"][_A], lo, hi, 0)[0] & 1) == 1, 1.0, -1.0)
    return g, w, a


@functools.partial(jax.jit, static_argnames=("which", "d"))
def _rows_call(cs, r, *, which: str, d: int):
    return _row_values(cs, r, which, d)


def _by_kind(spec, active, idx, with_rows: bool, chunk: int):
    """Rows ``idx`` grouped by how they are drawn, each group in chunks of exactly ``chunk`` rows
    (one compiled shape): (g, w, a) as float64 numpy (w, a None without ``with_rows``)."""
    if spec.mode == "full" or not active.idx.size:
        held = np.zeros(idx.shape, bool)
    else:
        pos = np.minimum(np.searchsorted(active.idx, idx), active.idx.size - 1)
        held = active.idx[pos] == idx
    groups = [("full", np.arange(idx.size))] if spec.mode == "full" else \
        [("cand", np.nonzero(held)[0]), ("out", np.nonzero(~held)[0])]
    d = spec.d
    g = np.zeros((idx.size, spec.k), np.float64)
    w = np.zeros((idx.size, d), np.float64) if with_rows else None
    a = np.zeros(idx.size, np.float64) if with_rows else None
    with jax.enable_x64(True):
        cs = _consts(spec)
        for which, sel in groups:
            for s in range(0, sel.size, chunk):
                part = sel[s:s + chunk]
                r = np.zeros(chunk, np.int64)
                r[:part.size] = idx[part]
                out = _rows_call(cs, jnp.asarray(r), which=which, d=_pad8(d) if with_rows else 0)
                g[part] = np.asarray(out[0])[:part.size, :spec.k]
                if with_rows:
                    w[part] = np.asarray(out[1])[:part.size, :d]
                    a[part] = np.asarray(out[2])[:part.size]
    return g, w, a


def span_coords(spec: SpanInit, active: ActiveSet, idx) -> np.ndarray:
    r"""The span coordinates :math:`g_r` (float64 (len(idx), k)) of rows ``idx``: :math:`\langle w_r,
    x_i\rangle = \langle g_r, c_i\rangle`. For rows of A these are the set-up's ``G`` (before its
    cast to ``dtype``); rows outside A are drawn on demand (N(0, I_k) given "not held")."""
    idx = _check_idx(spec, idx)
    return _by_kind(spec, active, idx, False, 1 << 12)[0]


def rows(spec: SpanInit, active: ActiveSet, idx, *, dtype=None, chunk: int = 1 << 12):
    r"""Rows ``idx`` of W(0) and their output weights, as :class:`jaxcorr.nn.Params` (in the order given).

    Row ``r`` is :math:`U g_r + (I - UU^T) z_r` computed in float64 and rounded to ``dtype``; its
    ``a_r`` is a sign from its own bits. The same bits on every call, whatever ``chunk`` or the
    grouping of ``idx``. Cost O(len(idx) (n k + d k)) (rows outside A: O(n k) per rejection round).

    Args:
      spec: the definition (:func:`define`).
      active: its :func:`setup` (says which rows are held).
      idx: (len,) integer row indices in [0, m), any order, repeats allowed.
      dtype: floating dtype; default float32 (float64 under x64).
      chunk: rows per jitted call (every call has this shape: one compilation per chunk size).
    """
    dt = _dtype(dtype)
    idx = _check_idx(spec, idx)
    if operator.index(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    _, w, a = _by_kind(spec, active, idx, True, int(chunk))
    return nn.Params(W=jnp.asarray(w, dt), a=jnp.asarray(a, dt))


def materialize(spec: SpanInit, active: ActiveSet, *, dtype=None):
    """All ``m`` rows (``m <= 2^24``): a :class:`jaxcorr.nn.Params` of law N(0, I_d) rows."""
    if spec.m > _MAX_MATERIALIZE:
        raise ValueError(f"materialize holds all m rows: m must be <= {_MAX_MATERIALIZE}, got {spec.m}; use rows()")
    return rows(spec, active, np.arange(spec.m), dtype=dtype)


@jax.jit
def _signs_call(seed, r):
    lo, hi = _split(r)
    return (_row_hash(seed, lo, hi, 0)[0] & 1) == 1


def output_weights(spec: SpanInit, idx, *, dtype=None, chunk: int = 1 << 22) -> jax.Array:
    """The output weights ``a_r`` (+-1, as :func:`rows` gives them) of rows ``idx``, without the rows:
    O(len(idx)) hashes, no d-dimensional value."""
    dt = _dtype(dtype)
    idx = _check_idx(spec, idx)
    out = np.zeros(idx.size, bool)
    with jax.enable_x64(True):
        seed = jnp.asarray(spec.seeds[_A], jnp.uint32)
        size = min(int(chunk), _pow2(idx.size))
        for s in range(0, idx.size, size):
            part = idx[s:s + size]
            r = np.zeros(size, np.int64)
            r[:part.size] = part
            out[s:s + part.size] = np.asarray(_signs_call(seed, jnp.asarray(r)))[:part.size]
    return jnp.asarray(np.where(out, 1.0, -1.0), dt)


# ----------------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True, eq=False)
class SpanTrained:
    r"""The held rows A after :func:`fit`: the trained network is W(0) with rows ``idx`` replaced.

    Span path (:func:`jaxcorr.train.sgd`): ``K`` (|A|, n), the trained row ``idx[j]`` is
    :math:`w_{idx_j}(0) + \sum_i K_{ji} x_i` (``W`` is None: no d-dimensional row was formed).
    Row path (any other optimizer): ``W`` (|A|, d) holds the trained rows and ``K`` is None.
    Rows outside A are W(0)'s, bit for bit (they never fire, so they never move). ``fit(...,
    start=trained)`` goes on from it.
    """

    idx: np.ndarray  # shape=(|A|,), int64, sorted: the held rows (ActiveSet.idx)
    a: jax.Array  # shape=(|A|,): their output weights (never trained)
    K: Any  # shape=(|A|, n) (span path) or None
    W: Any  # shape=(|A|, d) (row path) or None
    opt_state: Any  # the optimizer's state over K (span path) or over the rows of A (row path)
    b: float | None = None  # the threshold it was trained at (fit's b); None: the definition's spec.b

    @property
    def path(self) -> str:
        """``"span"`` (coefficients ``K``) or ``"rows"`` (trained rows ``W``)."""
        return "span" if self.K is not None else "rows"

    @property
    def dtype(self):
        """The training dtype (of ``K`` or ``W``)."""
        return (self.K if self.K is not None else self.W).dtype

    def trained_rows(self, spec: SpanInit, active: ActiveSet, X) -> nn.Params:
        """The trained rows of A as :class:`jaxcorr.nn.Params` (|A| d numbers: at moderate |A|)."""
        if self.W is not None:
            return nn.Params(W=self.W, a=self.a)
        W0 = rows(spec, active, self.idx, dtype=self.K.dtype).W
        return nn.Params(W=W0 + _linalg.matmul(self.K, jnp.asarray(X, self.K.dtype)), a=self.a)


@jax.jit
def _span_inner(C, G):
    """(n, |A|) initial inner products <w_r, x_i> = <g_r, c_i>, from the span coordinates alone."""
    return _linalg.inner(C, G)


def _check_spec(spec, active):
    if not isinstance(spec, SpanInit):
        raise ValueError(f"spec must be a SpanInit (span_init.define), got {type(spec).__name__}")
    if not isinstance(active, ActiveSet) or active.G.shape[1:] != (spec.k,):
        raise ValueError("active must be the ActiveSet of spec (span_init.setup(spec))")


def _check_points(spec: SpanInit, X, name: str = "X") -> np.ndarray:
    """``X`` (host float64) after checking it is the (n, d) points ``spec`` was defined from."""
    Xh = _check_x(X)
    if Xh.shape != (spec.n, spec.d):
        raise ValueError(f"{name} must be the (n, d)=({spec.n}, {spec.d}) points spec was defined from, got "
                         f"{Xh.shape}")
    scale = max(1.0, float(np.abs(Xh).max()))
    if np.abs(Xh - spec.C @ spec.U.T).max() > 1e-9 * scale or np.abs(Xh @ spec.U - spec.C).max() > 1e-9 * scale:
        raise ValueError(f"{name} must be the points spec was defined from ({name} differs from C U^T: the rows' "
                         "inner products <w_r, x_i> = <g_r, c_i> hold only for those points)")
    return Xh


def _check_data(spec: SpanInit, active, X, y):
    _check_spec(spec, active)
    _check_points(spec, X)
    if np.shape(y) != (spec.n,):
        raise ValueError(f"y must have shape (n,)=({spec.n},), got {np.shape(y)}")
    if active.n_active == 0:
        raise ValueError("active holds no rows: no neuron fires at t = 0, so the network is zero and GD never moves it")


def _check_trained(spec: SpanInit, active: ActiveSet, trained, dt, name: str = "start") -> None:
    """``trained`` must be a :class:`SpanTrained` over ``active``'s held rows in the training dtype."""
    if not isinstance(trained, SpanTrained):
        raise ValueError(f"{name} must be a SpanTrained (what span_init.fit returns), got {type(trained).__name__}")
    if not np.array_equal(np.asarray(trained.idx), active.idx):
        raise ValueError(f"{name} must be a result over active's held rows ({name}.idx differs from active.idx)")
    if (trained.K is None) == (trained.W is None):
        raise ValueError(f"{name} must hold exactly one of K (span path) and W (row path)")
    field, arr, cols = ("K", trained.K, spec.n) if trained.K is not None else ("W", trained.W, spec.d)
    want = (active.n_active, cols)
    if tuple(np.shape(arr)) != want or jnp.dtype(arr.dtype) != jnp.dtype(dt):
        raise ValueError(f"{name}.{field} must have shape {want} and dtype {dt} (active's), got {np.shape(arr)} "
                         f"{arr.dtype}")
    if np.shape(trained.a) != (active.n_active,):
        raise ValueError(f"{name}.a must have shape (|A|,)=({active.n_active},), got {np.shape(trained.a)}")


def _state_like(optimizer, state, like):
    """``state`` in the structure of ``optimizer.init(like)`` (a checkpoint read without an optimizer
    gives the flat list of its leaves); counts, shapes and dtypes must match."""
    ref, treedef = jax.tree_util.tree_flatten(jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct(like.shape,
                                                                                                  like.dtype)))
    leaves = jax.tree_util.tree_leaves(state)
    got = [(tuple(np.shape(x)), jnp.dtype(getattr(x, "dtype", np.asarray(x).dtype))) for x in leaves]
    if got != [(tuple(r.shape), jnp.dtype(r.dtype)) for r in ref]:
        raise ValueError(f"start.opt_state does not match this optimizer's state ({len(leaves)} arrays {got}, "
                         f"expected {len(ref)}: {[(r.shape, r.dtype) for r in ref]}); resume with the optimizer "
                         "it was trained with")
    if jax.tree_util.tree_structure(state) == treedef:
        return state
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])


def _check_fit_b(spec: SpanInit, b, start):
    b = (start.b if start is not None and start.b is not None else spec.b) if b is None else b
    if np.ndim(b) != 0 or not math.isfinite(float(b)) or float(b) < spec.b:
        raise ValueError(f"b must be a finite scalar >= spec.b = {spec.b} (A holds the rows that can fire at "
                         f"spec.b), got {b!r}")
    return float(b)


def _resume_span(spec, active, start, yd, optimizer, *, learning_rate, **kw):
    """Go on from coefficients ``K`` in the k coordinates of span X: rows ``G`` (|A|, k), points
    ``C`` (n, k). Inner products and Gram matrix are those of W and X (``<g_r, c_i> = <w_r, x_i>``,
    ``C C^T = X X^T``), so ``K`` is the same matrix: O(|A| (n + k)), no d-dimensional row."""
    if optimizer is not None and not isinstance(optimizer, train.LinearOptimizer):
        raise ValueError("start holds coefficients K (the span path): continue it with train.sgd(...), the "
                         "optimizer it was trained with")
    state = _state_like(optimizer or train.sgd(float(learning_rate)), start.opt_state, start.K)
    coef = train.Coefficients(rows=np.arange(active.n_active, dtype=np.int64), K=start.K, opt_state=state)
    dt = active.G.dtype
    _, hist = train.fit(nn.Params(active.G, jnp.asarray(start.a, dt)), jnp.asarray(spec.C, dt), yd,
                        optimizer=optimizer, learning_rate=learning_rate, width=spec.m, coefficients=coef, **kw)
    c = hist.coefficients
    if c is None or not np.array_equal(c.rows, coef.rows):  # compact() keeps every row continued from
        raise RuntimeError("the continued span-path run did not return coefficients over every held row")
    return SpanTrained(idx=active.idx, a=start.a, K=c.K, W=None, opt_state=c.opt_state, b=kw["b"]), hist


def _resume_rows(spec, start, Xd, yd, optimizer, *, learning_rate, mesh=None, **kw):
    """Go on from the trained rows ``W`` of A and their optimizer state (``train.fit(..., width=m)``)."""
    state = _state_like(optimizer or train.sgd(float(learning_rate)), start.opt_state, start.W)
    trained, hist = train.fit(nn.Params(start.W, jnp.asarray(start.a, start.W.dtype)), Xd, yd, optimizer=optimizer,
                              learning_rate=learning_rate, opt_state=state, width=spec.m, mesh=mesh, **kw)
    return SpanTrained(idx=start.idx, a=start.a, K=None, W=trained.W, opt_state=hist.opt_state, b=kw["b"]), hist


def fit(spec: SpanInit, active: ActiveSet, X, y, *, steps: int, method: str = train.DEFAULT_METHOD,
        optimizer=None, learning_rate: float = train.DEFAULT_LEARNING_RATE, b: float | None = None,
        callback=None, chunk_size: int | None = None, start: SpanTrained | None = None, mesh=None
        ) -> tuple[SpanTrained, train.History]:
    r"""Train the network ``spec`` defines on the points it was defined from: the held rows A only.

    By the active-set invariant (:mod:`jaxcorr.train`) only the rows of A can move, so this is
    gradient descent on all ``m`` rows (Section 2), exactly as ``train.fit`` on the materialised
    W(0) (to float rounding of the inner products).

    - Span path (``optimizer`` None or :func:`jaxcorr.train.sgd`: SGD, momentum, Nesterov):
      :func:`jaxcorr.train.fit_coordinates` from the inner products :math:`\langle w_r, x_i\rangle
      = (G C^T)_{ri}` (O(|A| n k)); state O(|A| n), no d-dimensional row anywhere, O(|A| n^2) per
      step. The result is ``K``.
    - Row path (any other optax optimizer the sparse methods accept): the rows of A are
      materialised (:func:`rows`, O(|A| (n k + d k)) time, |A| d memory) and trained by
      ``train.fit(..., width=m)``.
    - ``start`` (a previous result): the run goes on from it. From ``K`` (span path) it runs
      :func:`jaxcorr.train.fit` with ``coefficients=`` in the k coordinates of span X (rows ``G``,
      points ``C``: the same inner products and Gram matrix, so the same ``K``; O(|A| (n + k))
      memory, no d-dimensional row); from ``W`` (row path) ``train.fit`` with ``opt_state=``.
      ``fit(steps=s + t)`` equals ``fit(steps=s)`` then ``fit(steps=t, start=...)`` to float
      rounding (the resumed run's Gram matrix is ``C C^T``, not ``X X^T``).
      A callback's ``"snapshot"`` then gives the rows in those coordinates (``G + K C``).
    - ``mesh`` (several devices or processes, :func:`jaxcorr.train.fit`'s ``mesh=``): the row path
      for every optimizer, :func:`jaxcorr.train.sgd` included (the rows of A materialised, |A| d, and
      trained by ``train.fit(..., width=m, mesh=mesh)``); ``start`` must then hold rows ``W`` (a
      span-path ``K`` goes on from :meth:`SpanTrained.trained_rows` and its state in row form).

    Args:
      spec, active: the definition and its set-up (:func:`define`, :func:`setup`); the training
        dtype is ``active.G``'s.
      X: (n, d) the points ``spec`` was defined from (checked against ``C U^T``). y: (n,) targets.
      steps, method, optimizer, learning_rate, callback, chunk_size: as :func:`jaxcorr.train.fit`
        (``method`` ``"active"``, ``"dtree"`` or ``"wtree"``). Resuming needs the optimizer of the
        run continued (its state's structure is checked).
      b: threshold; default ``spec.b`` (``start.b`` when resuming). A larger one is allowed (A
        still holds every row that can fire); a smaller one is refused.
      start: a :class:`SpanTrained` over ``active``'s rows to continue (its ``opt_state`` a pytree,
        or the flat list of leaves a checkpoint read without an optimizer gives).
      mesh: None (one device), or the mesh of :func:`jaxcorr.train.fit` (its sharded methods only).

    Returns:
      ``(SpanTrained, History)``.

    Raises:
      ValueError: bad arguments; a ``start`` of other rows, shapes or dtype, or whose state does
        not match the optimizer.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, span_init
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> spec = span_init.define(jax.random.key(0), X, m=4096, b=1.5)
      >>> act = span_init.setup(spec)
      >>> out, hist = span_init.fit(spec, act, X, y, steps=5)
      >>> out.K.shape == (act.n_active, 4), out.W is None, hist.loss.shape
      (True, True, (5,))
      >>> more, h2 = span_init.fit(spec, act, X, y, steps=3, start=out)     # goes on from K
      >>> more.path, h2.loss.shape
      ('span', (3,))
    """
    _check_data(spec, active, X, y)
    dt = active.G.dtype
    if start is not None:
        _check_trained(spec, active, start, dt)
    b = _check_fit_b(spec, b, start)
    Xd, yd = jnp.asarray(X, dt), jnp.asarray(y, dt)
    kw = {"steps": steps, "method": method, "learning_rate": learning_rate, "b": b, "callback": callback,
          "chunk_size": chunk_size}
    if start is not None:
        if start.K is not None:
            if mesh is not None:
                raise ValueError("start holds coefficients K (the span path), which train on one device; on a mesh "
                                 "go on from its rows (SpanTrained.trained_rows and the state in row form)")
            return _resume_span(spec, active, start, yd, optimizer, **kw)
        return _resume_rows(spec, start, Xd, yd, optimizer, mesh=mesh, **kw)
    if mesh is None and (optimizer is None or isinstance(optimizer, train.LinearOptimizer)):
        a = output_weights(spec, active.idx, dtype=dt)
        ip = _span_inner(jnp.asarray(spec.C, dt), active.G)
        coef, hist = train.fit_coordinates(ip, a, Xd, yd, width=spec.m, optimizer=optimizer,
                                           donate_inner_products=True, **kw)
        return SpanTrained(idx=active.idx, a=a, K=coef.K, W=None, opt_state=coef.opt_state, b=b), hist
    p = rows(spec, active, active.idx, dtype=dt)
    trained, hist = train.fit(p, Xd, yd, optimizer=optimizer, width=spec.m, mesh=mesh, **kw)
    return SpanTrained(idx=active.idx, a=p.a, K=None, W=trained.W, opt_state=hist.opt_state, b=b), hist


# ----------------------------------------------------------------------------------- the model
def build(key, X, m: int, b: float | None = None, *, dtype=None, mode: str = "auto",
          devices=None) -> tuple[SpanInit, ActiveSet]:
    """:func:`define` then :func:`setup`: the entry the command line's ``--init span`` calls.

    Args:
      key, X, m, b, mode: as :func:`define`.
      dtype, devices: as :func:`setup`.

    Returns:
      ``(spec, active)``.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, span_init
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> spec, act = span_init.build(jax.random.key(0), X, 4096, 1.5)
      >>> spec.m, act.mode, act.n_active == act.idx.size
      (4096, 'mixture', True)
    """
    spec = define(key, X, m, b, mode=mode)
    return spec, setup(spec, dtype=dtype, devices=devices)


@dataclasses.dataclass(frozen=True, eq=False)
class SpanModel:
    """A span-defined 2NN(m, b) as one value: the definition, its held rows, their training (or
    None: W(0) itself) and the training points (the trained rows of the span path are
    :math:`w_r(0) + K_r X`). What :func:`jaxcorr.checkpoint.save` writes in the ``"span"`` form,
    :func:`jaxcorr.checkpoint.restore` returns, and :func:`jaxcorr.evaluation.predict` /
    ``evaluate`` accept.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, evaluation, span_init
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> spec, act = span_init.build(jax.random.key(0), X, 4096, 1.5)
      >>> trained, _ = span_init.fit(spec, act, X, y, steps=5)
      >>> model = span_init.SpanModel(spec, act, trained, X)
      >>> model.m, model.path, evaluation.predict(model, X).shape
      (4096, 'span', (4,))
    """

    spec: SpanInit
    active: ActiveSet
    trained: SpanTrained | None  # None: the untrained network W(0)
    X: np.ndarray  # shape=(n, d): the training points spec was defined from (as given)

    def __post_init__(self):
        _check_spec(self.spec, self.active)
        _check_points(self.spec, self.X)
        if self.trained is not None:
            _check_trained(self.spec, self.active, self.trained, self.active.G.dtype, name="trained")

    @property
    def m(self) -> int:
        return self.spec.m

    @property
    def n(self) -> int:
        return self.spec.n

    @property
    def d(self) -> int:
        return self.spec.d

    @property
    def n_active(self) -> int:
        return self.active.n_active

    @property
    def b(self) -> float:
        """The network's threshold (the one it was trained at, else the definition's)."""
        return self.spec.b if self.trained is None or self.trained.b is None else float(self.trained.b)

    @property
    def dtype(self):
        return self.active.G.dtype

    @property
    def path(self) -> str:
        """``"span"`` (trained by coefficients K), ``"rows"`` (trained rows W) or ``"init"`` (untrained)."""
        return "init" if self.trained is None else self.trained.path

    def predict(self, X_new, *, b: float | None = None, block: int | None = None) -> jax.Array:
        """:func:`predict` of this model (its ``b`` by default)."""
        return predict(self.spec, self.active, self.trained, self.X, X_new, b=self.b if b is None else b,
                       block=block)

    def params(self, *, dtype=None) -> nn.Params:
        """All ``m`` rows of the trained network (``m <= 2^24``): W(0) with the rows of A trained."""
        p = materialize(self.spec, self.active, dtype=self.dtype if dtype is None else dtype)
        if self.trained is None:
            return p
        held = self.trained.trained_rows(self.spec, self.active, self.X).W
        return nn.Params(W=p.W.at[jnp.asarray(self.active.idx)].set(held.astype(p.W.dtype)), a=p.a)


@jax.jit
def _block_sum(Xn, W, a, b):
    """(n_new,) of sum_r a_r sigma_b(<w_r, x>) over the rows of one block (unscaled)."""
    return _linalg.matmul(nn.relu_b(_linalg.inner(Xn, W), b), a.astype(W.dtype))


@functools.partial(jax.jit, static_argnames=("which", "d", "dt"))
def _outside_rows(cs, r, valid, *, which: str, d: int, dt):
    """Rows ``r`` of W(0) drawn on the device, as :func:`rows` gives them (``a = 0`` where not ``valid``);
    compiled once per block size, whatever the points."""
    _, w, a = _row_values(cs, r, which, _pad8(d))
    return w[:, :d].astype(dt), jnp.where(valid, a, 0.0).astype(dt)


def _held_sum(spec, active, trained, X_train, Xn, b, block):
    """The held rows' share: trained rows (or W(0)'s) in blocks of ``block`` rows."""
    dt, idx = Xn.dtype, active.idx
    out = jnp.zeros((Xn.shape[0],), dt)
    Xd = None if trained is None or trained.K is None else jnp.asarray(X_train, dt)
    for s in range(0, idx.size, block):
        part = slice(s, s + block)
        if trained is not None and trained.W is not None:
            W, a = trained.W[part], trained.a[part]
        else:
            p = rows(spec, active, idx[part], dtype=dt)  # rows()'s own chunk: its compiled draw is shared
            W, a = p.W, p.a
            if Xd is not None:
                W = W + _linalg.matmul(trained.K[part], Xd)
        out = out + _block_sum(Xn, W, a, b)
    return out


def _outside_sum(spec, active, Xn, b, block):
    """The share of the rows outside A: every block of ``block`` rows of [0, m), held rows dropped,
    drawn on the device (one compiled shape) and summed; nothing larger than a block is held."""
    dt = Xn.dtype
    out = jnp.zeros((Xn.shape[0],), dt)
    which = "full" if spec.mode == "full" else "out"
    held = active.idx
    with jax.enable_x64(True):
        cs = _consts(spec)
        for s in range(0, spec.m, block):
            e = min(s + block, spec.m)
            lo, hi = np.searchsorted(held, [s, e])
            r = np.setdiff1d(np.arange(s, e, dtype=np.int64), held[lo:hi], assume_unique=True)
            if not r.size:
                continue
            rp = np.zeros(block, np.int64)
            rp[:r.size] = r
            w, a = _outside_rows(cs, jnp.asarray(rp), jnp.asarray(np.arange(block) < r.size), which=which,
                                 d=spec.d, dt=dt)
            out = out + _block_sum(Xn, w, a, b)
    return out


def _training_points_only(Xn: np.ndarray, X_train) -> bool:
    """Every row of ``Xn`` equals (in value) a row of the training points."""
    known = {row.tobytes() for row in np.asarray(X_train, np.float64)}
    return all(row.tobytes() in known for row in np.asarray(Xn, np.float64))


def predict(spec: SpanInit, active: ActiveSet, trained: SpanTrained | None, X_train, X_new, *,
            b: float | None = None, block: int | None = None) -> jax.Array:
    r"""The network's outputs :math:`f(W, x, a)` (Definition 2.1) on new points, exact for the
    network ``spec`` defines as ``trained`` left it.

    Rows of A take their trained values (``trained``; None: W(0)). A row outside A never moved, but
    may fire for a point off the training set, so those rows are drawn as they are needed:
    :math:`[0, m)` is streamed in blocks of ``block`` rows, each block's rows outside A drawn on the
    device exactly as :func:`rows` gives them and summed. Equals :func:`jaxcorr.nn.predict` on the
    materialised trained W (:meth:`jaxcorr.span_init.SpanModel.params`) to float rounding of the sums over ``r``.

    **Cost.** Streaming: O(m (d k + n k + d n')) time per call for n' points (each row outside A:
    d normals, its ``U g`` and rejection rounds of O(n k), mean :math:`1/(1 - P(held))`), memory
    O(block (d + n')). Points that are all training points (equal in value to rows of
    ``X_train``, at ``b >= spec.b``): no row outside A fires for them (the margin), so only A is
    read: O(|A| (d k + n k + d n')). At ``m = 2^32``, ``d = 64`` a streamed call draws 2^38
    normals: minutes to hours; the shortcut's cost is the held rows' (the training loss).

    Args:
      spec, active: the definition and its set-up.
      trained: :func:`fit`'s result over ``active``'s rows, or None (W(0)).
      X_train: (n, d) the points ``spec`` was defined from (the span path's ``K X``).
      X_new: (n', d) points, finite.
      b: threshold of :math:`\sigma_b`; default ``trained.b`` (else ``spec.b``).
      block: rows per streamed block (default 2^16; one compiled shape per block size).

    Returns:
      (n',) outputs in the training dtype (``active.G``'s).

    Raises:
      ValueError: bad ``spec``/``active``/``trained``, ``X_train`` not the defining points,
        ``X_new`` not 2-D with ``d`` columns or not finite, a bad ``b`` or ``block``.
    """
    _check_spec(spec, active)
    dt = active.G.dtype
    if trained is not None:
        _check_trained(spec, active, trained, dt, name="trained")
    Xt = _check_points(spec, X_train, "X_train")
    _checks.check_matrix("X_new", X_new, cols=spec.d)
    b = (spec.b if trained is None or trained.b is None else trained.b) if b is None else b
    b = _checks.check_real("b", b)
    block = 1 << 16 if block is None else _checks.check_int("block", block, minimum=1, type_error=ValueError)
    Xn = jnp.asarray(X_new, dt)
    bd = jnp.asarray(b, dt)
    out = _held_sum(spec, active, trained, Xt, Xn, bd, block)
    if not (b >= spec.b and _training_points_only(np.asarray(X_new), Xt)):
        out = out + _outside_sum(spec, active, Xn, bd, block)
    return out / jnp.sqrt(jnp.asarray(spec.m, dt))
