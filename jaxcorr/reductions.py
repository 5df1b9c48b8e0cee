r"""The lower-bound reduction of Theorem F.4: integer Max-IP solved with DDFN queries.

Theorem F.4 (informally Theorem 1.4) shows that, under SETH or OVC, no DDFN data structure
(Definition 1.3) can have both :math:`m^{1-c} n^{c - o(1)}` update time and
:math:`m^{1-c} n^{1+c-o(1)}` query time. The proof solves :math:`\mathbb{Z}`-Max-IP with DDFN:

- lift every point by one coordinate, :math:`\tilde x_i = (x_i, -1)` and :math:`\tilde y_j = (y_j, t)`,
  so that :math:`\langle \tilde x_i, \tilde y_j \rangle = \langle x_i, y_j \rangle - t`;
- binary-search the integer ``t``: at each step UPDATE every :math:`\tilde y_j` to carry the new
  ``t`` in its last coordinate (one batch update of all ``m`` rows), then QUERY whether some pair has
  :math:`\langle x_i, y_j \rangle \ge t`. The answer to Max-IP is the largest ``t`` for which the
  query is non-empty.

:func:`max_inner_product` does exactly that on :mod:`jaxcorr.ddfn`, and
:func:`max_inner_product_brute` is the plain O(nmd) reference beside it.

Details that differ from the text of the proof, and why:

- **Strict threshold.** :mod:`jaxcorr.ddfn` reports :math:`\langle \tilde x_i, \tilde y_j\rangle > b`
  (strict, see its docstring). The inner products are integers, so ":math:`\ge 0`" of the proof is
  "> -1/2"; we use ``b = -0.5``, which is exactly representable and half an integer away from
  every value the query can see.
- **One instance.** The proof builds :math:`k = \lfloor m/n \rfloor` copies of an (n, m) DDFN
  instance because the hypothetical data structure is only assumed fast for instances with
  ``m > n``, while the Max-IP hard instance has the same number of points on both sides; cutting
  the first side into ``k`` groups of ``n`` yields such instances. jaxcorr's DDFN accepts any
  ``n`` and ``m``, so a single instance over all of ``X`` and ``Y`` answers the same question with
  the same total work (the ``k`` instances hold the same ``n_X m`` inner products). The grouped
  construction is still available (``group_size``) so the two can be checked to agree.
- **Emptiness only.** The binary search only needs to know whether ``Q`` is empty. A DDFN query
  that overflows has proved ``|Q| > cap >= 1``, so it answers "non-empty" too; hence the default
  ``cap=1``, which makes every QUERY cost about ``n + log m`` (the roots, then one path down to a
  witness) instead of the paper's ``m^{4/5} n`` output bound. The frontier also returns a witness
  pair, so the maximizing pair comes for free.
- **Exact arithmetic.** The trees compute in floating point (float32, or float64 with
  ``jax_enable_x64``). Integer sums are exact while every partial sum stays below
  :math:`2^{p}` (``p`` = 24 or 53 mantissa bits). All partial sums are bounded by
  :math:`B + |t|` with :math:`B = \sum_k \max_i |x_{ik}| \max_j |y_{jk}|`, computed in
  O((n+m)d); inputs beyond that range raise ``ValueError`` rather than return a wrong answer.

Examples:
  >>> import numpy as np
  >>> from jaxcorr import reductions
  >>> X = np.array([[1, -2], [3, 0]])
  >>> Y = np.array([[2, 1], [-1, -4], [0, 5]])
  >>> int(reductions.max_inner_product(X, Y))   # <x_0, y_1> = -1 + 8 = 7
  7
  >>> int(reductions.max_inner_product_brute(X, Y))
  7

References:
  Alman, Liang, Song, Zhang, Zhuo. Bypass Exponential Time Preprocessing: Fast Neural Network
  Training via Weight-Data Correlation Preprocessing. NeurIPS 2023. Theorem F.4 and its proof;
  Definition 1.3 (DDFN).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import _checks, ddfn

__all__ = ["max_inner_product", "max_inner_product_brute", "search_bounds", "THRESHOLD"]

#: The DDFN threshold of the reduction -- ``<x, y> - t > -1/2`` iff ``<x, y> >= t`` for integers.
THRESHOLD = -0.5


def _as_integer_matrix(name: str, a) -> np.ndarray:
    """Validate an integer-valued 2-D array and return it as a numpy ``int64`` array (or object ints)."""
    try:
        arr = np.asarray(a)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot read is a bad input
        raise ValueError(f"{name} must be an array of integers: {e}") from None
    if arr.dtype == bool:
        raise ValueError(f"{name} must hold integers, got a boolean array")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integers (an integer dtype, or float16/32/64 holding integer values), "
                         f"got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (points as rows), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)  # exact for every float16/32/64 value; integer values are checked below
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must be integer-valued (Z-Max-IP), got non-integer entries")
        if np.abs(arr).max() >= 2.0**62:
            raise ValueError(f"{name} has entries too large to handle exactly")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64)


def _validate(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = _as_integer_matrix("X", X)
    Y = _as_integer_matrix("Y", Y)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same dimension d, got X {X.shape} and Y {Y.shape}")
    return X, Y


def _abs_max_cols(a: np.ndarray) -> list[int]:
    return [int(v) for v in np.abs(a).max(axis=0)]


def search_bounds(X, Y) -> tuple[int, int, int]:
    r"""Bounds of the binary search, in O((n + m) d) exact integer arithmetic.

    Returns:
      ``(lo, hi, B)``: ``lo = <x_0, y_0>`` (a value the maximum is at least), ``hi`` the smaller of
      Cauchy-Schwarz :math:`\lfloor\sqrt{\max_i\|x_i\|^2 \max_j\|y_j\|^2}\rfloor` and
      :math:`B = \sum_k \max_i|x_{ik}| \max_j|y_{jk}|`; ``B`` also bounds every partial sum of every
      inner product, which decides whether floating point is exact.
    """
    X, Y = _validate(X, Y)
    lo = sum(int(a) * int(b) for a, b in zip(X[0], Y[0]))
    bx, by = _abs_max_cols(X), _abs_max_cols(Y)
    B = sum(a * b for a, b in zip(bx, by))
    nx = int((X.astype(object) ** 2).sum(axis=1).max())  # exact Python ints, no int64 overflow
    ny = int((Y.astype(object) ** 2).sum(axis=1).max())
    hi = min(B, math.isqrt(nx * ny))
    return lo, max(hi, lo), B


def max_inner_product_brute(X, Y) -> int:
    """Plain O(nmd) reference: ``max_{i,j} <x_i, y_j>`` in exact integer arithmetic."""
    X, Y = _validate(X, Y)
    _, _, B = search_bounds(X, Y)
    if B < 2**62:
        return int((X @ Y.T).max())
    return int((X.astype(object) @ Y.astype(object).T).max())


def _mantissa_bits(dtype) -> int:
    return int(np.finfo(np.dtype(dtype)).nmant) + 1


@jax.jit
def _lift(Yt, t):
    """The lifted points (y_j, t): the last column of ``Yt`` set to ``t``."""
    return Yt.at[:, -1].set(t)


@jax.jit
def _witness(q):
    """A query's count and first pair (the witness when the count is positive)."""
    return q.count, q.i[0], q.j[0]


def max_inner_product(X, Y, *, return_stats: bool = False, cap: int | None = 1, group_size: int | None = None):
    r"""Exact :math:`\max_{i,j} \langle x_i, y_j \rangle` over integer points, by Theorem F.4's reduction.

    Binary search over the integer ``t`` in ``[lo, hi]`` (:func:`search_bounds`); each step does one
    DDFN batch UPDATE of all ``m`` lifted points :math:`\tilde y_j = (y_j, t)` and one QUERY with
    threshold ``-1/2`` against :math:`\tilde x_i = (x_i, -1)`. A non-empty (or overflowing) answer
    means some :math:`\langle x_i, y_j\rangle \ge t`.

    Args:
      X: (n, d) integer-valued points (any integer dtype, or floats holding integers).
      Y: (m, d) integer-valued points, same ``d``.
      return_stats: also return a dict describing the run.
      cap: the DDFN output cap; the default 1 suffices for an emptiness test (an overflowing query
        still proves non-emptiness). ``None`` uses the paper's :math:`\lceil m^{4/5}\rceil n`.
      group_size: ``None`` (default) uses one DDFN instance over all of ``X``. An int ``g`` cuts
        ``X`` into :math:`\lceil n/g \rceil` groups with one DDFN instance each, the proof's
        :math:`k = \lfloor m/n \rfloor` construction; every step then updates and queries every
        instance. The answer is the same.

    Returns:
      The maximum as a Python ``int``; with ``return_stats``, ``(value, stats)`` where ``stats`` has
      ``pair`` (i, j) attaining it, ``iterations`` (binary-search steps), ``updates`` (single-point
      DDFN updates issued, ``m`` per instance per step), ``batch_updates``, ``queries``,
      ``instances``, ``lo``, ``hi`` (initial search range), ``bound`` (``B``), ``cap`` and ``dtype``.

    Raises:
      ValueError: ``X`` or ``Y`` not 2-D, empty, not finite, not integer-valued, of different
        ``d``, or with values so large that the tree's floating point would not be exact
        (enable ``jax_enable_x64`` for a 53-bit range).
    """
    X, Y = _validate(X, Y)
    n, d = X.shape
    m = Y.shape[0]
    if group_size is not None:
        group_size = _checks.check_capacity("group_size", group_size)
    lo, hi, B = search_bounds(X, Y)
    dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64
    bits = _mantissa_bits(dtype)
    # every partial sum of <x~, y~> = <x, y> - t has magnitude <= B + |t| <= 2B
    if 2 * B + 1 >= 2**bits:
        raise ValueError(
            f"entries too large for exact {np.dtype(dtype).name} arithmetic: partial sums may reach "
            f"{2 * B}, beyond 2^{bits}; use smaller integers or enable jax_enable_x64"
        )
    Xt = np.concatenate([X, -np.ones((n, 1), np.int64)], axis=1).astype(dtype)
    Yt = np.concatenate([Y, np.full((m, 1), lo, np.int64)], axis=1).astype(dtype)
    g = n if group_size is None else group_size
    starts = list(range(0, n, g))
    states = [ddfn.init(jax.device_put(Xt[s : s + g]), jax.device_put(Yt), THRESHOLD, cap=cap) for s in starts]
    rows = jax.device_put(np.arange(m, dtype=np.int32))
    Yt = jax.device_put(Yt)

    pair = (0, 0)
    iterations = updates = batch_updates = queries = 0
    a, b = lo, hi  # invariant: some <x_i, y_j> >= a, and none >= b + 1
    while a < b:  # the host binary search: every transfer explicit (t placed, one count read back)
        t = (a + b + 1) // 2
        Z = _lift(Yt, jax.device_put(np.asarray(t, dtype)))
        found = None
        for k, s in enumerate(starts):
            states[k] = ddfn.update(states[k], rows, Z, donate=True)  # UPDATE every (y~_j)_{d+1} to t
            count, qi, qj = jax.device_get(_witness(ddfn.query(states[k])))
            batch_updates += 1
            updates += m
            queries += 1
            if found is None and int(count) > 0:  # overflow implies count > cap >= 1
                found = (s + int(qi), int(qj))
        iterations += 1
        if found is not None:
            a, pair = t, found
        else:
            b = t - 1
    value = a
    if not return_stats:
        return value
    stats = {
        "pair": pair,
        "iterations": iterations,
        "updates": updates,
        "batch_updates": batch_updates,
        "queries": queries,
        "instances": len(starts),
        "lo": lo,
        "hi": hi,
        "bound": B,
        "cap": states[0].cap,
        "dtype": np.dtype(dtype).name,
    }
    return value, stats

