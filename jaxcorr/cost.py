r"""How long will training take, per method? A calibrated cost model, and the fastest exact method.

For every method of :mod:`jaxcorr.methods` the model predicts the per-step time and the set-up time
of :func:`jaxcorr.train.fit` from the problem's sizes ``(n, m, d)``, the expected active set
:math:`|A|` and fire counts at ``t = 0``, the optimizer (its state slots and whether it takes the
span path, :data:`jaxcorr.optimizers.TABLE`) and the element size. Each time is a sum of terms,
one coefficient (seconds per multiply-add, or per element) times one count:

==========  ===============================================================  =====================================
method      per step                                                         set-up
==========  ===============================================================  =====================================
dense       :math:`c_0 + c_1 nmd + c_2 nm + c_3 (1+s) md + c_4 [\cdot]`      :math:`c_0 + c_1 (1+s) md`
active      :math:`c_0 + c_1 L n^2 + 2 c_2 L n d + c_3 L n + c_4 (1+s) L w`  :math:`c_0 + c_1 nmd + c_2 (md + nm)`
dtree       as active (its own :math:`c_0, c_1, c_3`)                        :math:`c_0 + c_1 nmd + c_2 n P(m)`
wtree       as active :math:`+ c_5 L n^2 [n > 32]`                           :math:`c_0 + c_1 nmd + c_2 m P(n)`
==========  ===============================================================  =====================================

with ``s`` the optimizer's state slots, ``P(x)`` the power of two >= x, and ``L`` the padded
active rows the step really carries (:func:`jaxcorr.maxtree.bucket` ``(|A| + 1)``, at least one
padding row); a term is zero where it does not apply. What one step does
(``jaxcorr.train._steps``): on the **span path** (sgd,
momentum: the optimizer runs on the (|A|, n) coefficients ``K``, :class:`jaxcorr.train.LinearOptimizer`)
the products are the new leaves :math:`G K^T`, :math:`L n^2` multiply-adds with no ``d`` at
all, and ``w = n``; on the **row path** (adam and every other optax optimizer) they are
:math:`X W_A^T` and :math:`C^T X`, :math:`2 L n d` (its coefficient shared by the sparse methods,
as the optimizer's), and ``w = d``. Every method then makes a few
elementwise passes over the (n, L) leaves (the comparison :math:`\langle w_r, x_i\rangle > b`, the
coefficients, the statistics; the trees' levels for dtree and wtree), the :math:`L n` term, and the
optimizer's update over the trained rows and their state, the :math:`(1 + s) L w` term (one
coefficient shared by the sparse methods: the same update on the same rows). The WTree step's fire
sets :math:`S_{i,fire}` from its |A| trees compare every frontier slot with every point when
``n > 32`` (``_members`` in ``jaxcorr.train._steps``), an :math:`L n^2` term; for ``n <= 32`` a bit mask
makes it :math:`L n`. Dense makes two (n, m, d) products and passes over the (n, m) leaves: at
small ``d`` (n = 442, d = 10) the passes, not the products, are its cost; :math:`c_4 [\cdot]` is
:math:`c_4\, n m + c_5 (1 + s) m d`, each counted only where that array exceeds the last-level
cache :data:`CACHE_BYTES` (streamed from memory: at m = 2^18, d = 64 the rows are 64 MiB and
dense's time per element doubles). Set-up counts INIT's
inner products over all ``m`` neurons (Lemmas D.2/D.6) and the tree build. ``total_s`` adds a
per-method compile time (first call) and ``steps`` steps. Not modelled: the DTree's FIND by leaf
ids, used instead of the mask when :math:`L / \text{capacity} > 32` (no measured point has it).

**Expected |A|** (:func:`expected_active`). Rows are :math:`N(0, I_d)`, so
:math:`\langle w_r, x_i\rangle \sim N(0, \|x_i\|^2)` and each point fires
:math:`k_i = m\, Q(b / \|x_i\|)` neurons in expectation (Lemma 2.5). The estimate of |A| treats the
points' fire events as independent: :math:`m (1 - \prod_i (1 - Q(b/\|x_i\|)))`, below the union bound
:math:`m \min(1, \sum_i Q(b / \|x_i\|))` and equal to it to first order when that sum is small (unit
norms are assumed when ``x_norms`` is not given). It is capped by
:math:`m\, P(\chi^2_d > b^2 / \max_i \|x_i\|^2)`: a row with :math:`\|w_r\| \max_i \|x_i\| \le b`
fires for no point, the bound that holds when many points crowd a small ``d``.

**Calibration.** The coefficients are :data:`STEP_COEF`, :data:`SETUP_COEF` and
:data:`COMPILE_S`, fitted by ``scripts/calibrate_cost.py`` (least squares of the log time over every
timed row of ``docs/bench/bench_regime.json``: 13 (n, m, d) points, n = 4 ... 2000, d = 10 ... 64,
and a sweep over n at two widths) and stored in ``docs/bench/cost_calibration.json`` with the
model's error in sample (every point's step time and ratio to dense within 2x) and held out (each
point predicted by a model fitted without it: median 1.3x, max 3.8x; ``docs/regime.md``). They
describe the shared 2-core CPU machine they were measured on; ``float64`` multiplies the compute
terms by 2 (an assumption: twice the bytes moved per multiply-add). **On an accelerator** the same
coefficients are used (an assumption, not a measurement): the ratios between methods are taken to
carry over, absolute times do not. :func:`choose` ranks by total time (compile + set-up + steps),
so for a short run the compile time can decide; its reason says so.

Examples:
  >>> from jaxcorr import cost
  >>> p = cost.predict("dense", n=8, m=2**18, d=64)
  >>> p.step_s > cost.predict("active", n=8, m=2**18, d=64).step_s
  True
  >>> c = cost.choose(8, 2**18, 64, steps=100)
  >>> c.method in ("active", "dtree", "wtree"), c.dense_expected_faster
  (True, False)
  >>> cost.choose(2000, 2**14, 64, steps=100).method
  'dense'
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxcorr import methods as _methods

__all__ = ["Prediction", "Choice", "predict", "choose", "expected_active", "expected_fire", "sampled_active",
           "dense_expected_faster", "STEP_COEF", "STEP_TERMS", "SETUP_COEF", "COMPILE_S", "CACHE_BYTES"]

# Coefficients from docs/bench/cost_calibration.json (scripts/calibrate_cost.py over
# docs/bench/bench_regime.json).
#: Per method, seconds per unit of each per-step feature (in the order of :data:`STEP_TERMS`).
STEP_COEF: dict[str, tuple[float, ...]] = {
    "dense": (5.128e-21, 4.399e-11, 2.716e-09, 1.943e-10, 2.124e-09, 1.753e-10),
    "active": (4.229e-06, 1.383e-11, 5.645e-11, 8.276e-10, 2.896e-10),
    "dtree": (2.455e-05, 1.97e-11, 5.645e-11, 1.388e-09, 2.896e-10),
    "wtree": (7.069e-05, 1.751e-10, 5.645e-11, 3.151e-10, 2.896e-10, 2.587e-10),
}
#: Per method, seconds per unit of each set-up feature.
SETUP_COEF: dict[str, tuple[float, ...]] = {
    "dense": (0.001568, 1.769e-09),
    "active": (0.0004767, 3.515e-10, 3.266e-09),
    "dtree": (0.004082, 3.247e-10, 6.033e-09),
    "wtree": (2.075e-14, 7.887e-10, 1.748e-08),
}
#: Per method, the median compile time of a first call, seconds.
COMPILE_S: dict[str, float] = {"active": 0.81, "dense": 0.562, "dtree": 2.11, "wtree": 0.952}


class Prediction(NamedTuple):
    """The predicted cost of one method on one problem (seconds; bytes from :mod:`jaxcorr.memory`)."""

    method: str
    step_s: float  # one training step (jitted, after compilation)
    setup_s: float  # set-up of train.fit: INIT, the active set, trees (compilation excluded)
    total_s: float  # compile_s + setup_s + steps * step_s
    n_active: float  # expected |A| (m for dense)
    reason: str  # one line: the dominant term, or why the method is excluded
    compile_s: float = 0.0  # first-call compilation
    memory_bytes: int | None = None  # peak memory estimate (jaxcorr.memory), None if unavailable
    exact: bool = True  # False: the method cannot run this problem exactly (e.g. beyond the DDFN cap)


class Choice(NamedTuple):
    """What :func:`choose` picked, the predictions it compared, and why (one line)."""

    method: str
    predictions: dict  # method name -> Prediction
    reason: str
    dense_expected_faster: bool  # the chosen method is sparse but dense is predicted faster per step


# ------------------------------------------------------------------------------ expected counts
def _q(z: float) -> float:
    """Standard normal upper tail Q(z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _norms(n: int, x_norms):
    if x_norms is None:
        return None
    vals = [float(v) for v in x_norms]
    if len(vals) != n:
        raise ValueError(f"x_norms must have n={n} entries (one norm per point), got {len(vals)}")
    if not all(math.isfinite(v) and v >= 0 for v in vals):
        raise ValueError("x_norms must be finite and >= 0")
    return vals


def expected_fire(m: int, b: float, x_norms=None, n: int = 1) -> float:
    r"""Expected total fire count :math:`\sum_i k_{i,0} = m \sum_i Q(b / \|x_i\|)` (Lemma 2.5).

    ``x_norms`` None: ``n`` unit-norm points.
    """
    if x_norms is None:
        return m * n * _q(b)
    return m * sum(_q(b / v) if v > 0 else float(b < 0) for v in x_norms)


def _gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) (series / continued fraction)."""
    if x <= 0:
        return 1.0
    log_pre = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # the series of P(a, x)
        term = total = 1.0 / a
        k = a
        while abs(term) > 1e-15 * abs(total):
            k += 1
            term *= x / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300  # Lentz's continued fraction of Q(a, x)
    bb, c, dd = x + 1 - a, 1 / tiny, 1 / (x + 1 - a)
    h = dd
    for i in range(1, 500):
        an = -i * (i - a)
        bb += 2
        dd = an * dd + bb
        dd = tiny if abs(dd) < tiny else dd
        c = bb + an / c
        c = tiny if abs(c) < tiny else c
        dd = 1 / dd
        h *= dd * c
        if abs(dd * c - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_pre) * h)


def expected_active(m: int, b: float, x_norms=None, n: int = 1, d: int | None = None) -> float:
    r"""Expected :math:`|A| = |\bigcup_i S_{i,fire}(0)|`, at most two bounds.

    The points' fire events taken as independent give :math:`m (1 - \prod_i (1 - Q(b/\|x_i\|)))`,
    at most the union bound :math:`m \min(1, \sum_i Q(b/\|x_i\|))` (Lemma 2.5). With ``d`` given
    it is also capped by :math:`m\,P(\chi^2_d > b^2 / \max_i \|x_i\|^2)`: a row fires for no point
    while :math:`\|w_r\| \max_i \|x_i\| \le b` (Cauchy-Schwarz, :math:`w_r \sim N(0, I_d)`), the
    bound that decides when n points crowd a small d (n = 442, d = 10: 0.92 m instead of m).
    ``x_norms`` None: ``n`` unit-norm points.

    Examples:
      >>> from jaxcorr import cost
      >>> a = cost.expected_active(2**16, 2.1, n=8)
      >>> a <= cost.expected_fire(2**16, 2.1, n=8)
      True
      >>> round(cost.expected_active(2**16, 2.1, n=442, d=10) / 2**16, 2)
      0.93
    """
    qs = [_q(b)] * n if x_norms is None else [(_q(b / v) if v > 0 else float(b < 0)) for v in x_norms]
    log_idle = sum(math.log1p(-min(q, 1.0 - 1e-16)) for q in qs)
    est = m * -math.expm1(log_idle)
    top = 1.0 if x_norms is None else max(x_norms)
    if d is not None and b > 0 and top > 0:
        est = min(est, m * _gamma_q(d / 2.0, (b / top) ** 2 / 2.0))
    return est


# ------------------------------------------------------------------------------------ features
def _pow2(x: float) -> int:
    return 1 << max(int(math.ceil(x)) - 1, 0).bit_length()


def _bucket(x: float) -> int:
    """The padded row count of the compacted state, :func:`jaxcorr.maxtree.bucket` ``(x)`` (host side)."""
    x = max(int(math.ceil(x)), 1)
    g = max(8, _pow2(x) // 8)
    return -(-x // g) * g


#: The last-level cache of the calibration machine, bytes (``docs/bench/bench_regime.json``'s
#: ``machine.caches.L3``): a pass over an array larger than this streams it from memory.
CACHE_BYTES = 33554432

#: Sizes of the step features, in the order of :data:`STEP_COEF` (``L``: the padded active rows;
#: ``[> cache]``: the same count again where that array exceeds :data:`CACHE_BYTES`).
STEP_TERMS: dict[str, tuple[str, ...]] = {
    "dense": ("1", "n m d (two products)", "n m (passes over the (n, m) leaves)", "(1+s) m d (optimizer, rows)",
              "n m [> cache]", "(1+s) m d [> cache]"),
    "active": ("1", "L n^2 (span path: the leaves G K^T)", "2 L n d (row path: X W^T, C^T X)",
               "L n (passes over the (n, L) leaves)", "(1+s) L w (optimizer)"),
    "dtree": ("1", "L n^2 (span path)", "2 L n d (row path)", "L n (passes, the n trees' levels)",
              "(1+s) L w (optimizer)"),
    "wtree": ("1", "L n^2 (span path)", "2 L n d (row path)", "L n (passes, the L trees' levels)",
              "(1+s) L w (optimizer)", "L n^2 [n > 32] (fire-set membership by comparison)"),
}


def _beyond_cache(count: float, itemsize: int) -> float:
    return count if count * itemsize > CACHE_BYTES else 0.0


def _step_features(method: str, *, n, m, d, n_active, slots, span, itemsize=4) -> tuple[float, ...]:
    """The counts that :data:`STEP_COEF` multiplies (:data:`STEP_TERMS`, the module docstring's table)."""
    if method == "dense":
        rows = (1 + slots) * m * d
        return (1.0, n * m * d, n * m, rows, _beyond_cache(n * m, itemsize), _beyond_cache(rows, itemsize))
    L = float(_bucket(min(float(n_active), float(m)) + 1))
    feats = (1.0, L * n * n if span else 0.0, 0.0 if span else 2.0 * L * n * d, L * n,
             (1 + slots) * L * (n if span else d))
    if method in ("active", "dtree"):
        return feats
    if method == "wtree":
        return feats + (L * n * n if n > 32 else 0.0,)
    raise KeyError(method)


def _setup_features(method: str, *, n, m, d, n_active, slots) -> tuple[float, ...]:
    """The counts that :data:`SETUP_COEF` multiplies."""
    if method == "dense":
        return (1.0, (1 + slots) * m * d)
    if method == "active":
        return (1.0, n * m * d, m * d + n * m)
    if method == "dtree":
        return (1.0, n * m * d, n * _pow2(m))
    if method == "wtree":
        return (1.0, n * m * d, m * _pow2(n))
    raise KeyError(method)


# -------------------------------------------------------------------------------------- checks
def _size(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int,)) and not (hasattr(v, "__index__")):
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    v = int(v)
    if v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v}")
    return v


def _optimizer_info(optimizer) -> tuple[int, bool, str]:
    """(state slots, span path, label) of an optimizer name of jaxcorr.optimizers or an optax object."""
    from jaxcorr import optimizers  # imports jax and optax: only when a prediction is asked for

    if isinstance(optimizer, str):
        s = optimizers.spec(optimizer)  # ValueError listing the names
        return s.state_slots, s.span, optimizer
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        import jax
        import jax.numpy as jnp

        from jaxcorr import linear

        probe = jax.ShapeDtypeStruct((3, 5), jnp.float32)
        leaves = jax.tree_util.tree_leaves(jax.eval_shape(optimizer.init, probe))
        slots = sum(1 for x in leaves if tuple(x.shape) == (3, 5))
        return slots, isinstance(optimizer, linear.LinearOptimizer), type(optimizer).__name__
    raise ValueError(f"optimizer must be a name of jaxcorr.optimizers.NAMES or an optax GradientTransformation, "
                     f"got {optimizer!r}")


def _itemsize(dtype) -> int:
    import numpy as np

    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt.itemsize


def _memory_bytes(method: str, n: int, m: int, d: int, itemsize: int, optimizer: str):
    """Peak memory from jaxcorr.memory (one call site; None if the estimate does not apply)."""
    from jaxcorr import memory

    try:
        return int(memory.estimate(method, n=n, m=m, d=d, optimizer=optimizer,
                                   dtype="float64" if itemsize == 8 else "float32").total)
    except (TypeError, ValueError):
        return None


def _dot(coef, feats) -> float:
    return float(sum(c * f for c, f in zip(coef, feats)))


# ------------------------------------------------------------------------------------- predict
def sampled_active(X, m: int, b: float, *, W=None, samples: int | None = None, seed: int = 0) -> float:
    r"""|A| of ``X`` estimated from a sample of rows: ``m`` times the fraction that fires for some point.

    :func:`expected_active` assumes unit-norm points in general position; real data are correlated
    (images of one digit: the rows that fire for one point fire for the others), and then |A| is
    far smaller (docs/regime.md). This counts it instead: a row ``w`` is in A
    when :math:`\max_i \langle w, x_i\rangle > b` (Definition 2.4 at ``t = 0``), over ``samples``
    rows (default :math:`\min(2^{16}, \max(2^{12}, 2^{24} / (n d)))`, O(2^24) multiply-adds at
    most), which are ``W``'s first rows when ``W`` is given (its own |A|: rows of W(0) are i.i.d.),
    else N(0, I_d) rows drawn here in float64 from ``seed``. Unbiased; its standard error is
    :math:`m \sqrt{p (1 - p) / s}` with ``p`` the fraction that fires.

    Args:
      X: (n, d) the points. m: the width the estimate is for (``W``'s rows, when ``W`` holds all m).
      b: the threshold. W: the rows (an array (rows, d)), optional. samples, seed: as above.

    Returns:
      the estimate of |A| (a float in [0, m]).

    Examples:
      >>> import numpy as np
      >>> from jaxcorr import cost
      >>> X = np.eye(4, 16)                      # 4 orthogonal unit points
      >>> est = cost.sampled_active(X, 2**16, 2.0, samples=1 << 14)
      >>> abs(est - cost.expected_active(2**16, 2.0, n=4)) < 0.05 * est   # in general position: the two agree
      True
    """
    Xh = np.asarray(X, np.float64)
    if Xh.ndim != 2 or Xh.shape[0] < 1 or not np.isfinite(Xh).all():
        raise ValueError(f"X must be a finite (n, d) array with n >= 1, got shape {Xh.shape}")
    n, d = Xh.shape
    m = _size("m", m)
    s = samples if samples is not None else min(1 << 16, max(1 << 12, (1 << 24) // (n * d)))
    s = _size("samples", s)
    if W is not None:
        rows = np.asarray(W[: min(s, np.shape(W)[0])], np.float64)
        if rows.ndim != 2 or rows.shape[1] != d:
            raise ValueError(f"W must be (rows, d={d}), got {np.shape(W)}")
    else:
        rows = np.random.default_rng(seed).standard_normal((min(s, m), d))
    fires = np.zeros(rows.shape[0], bool)
    for lo in range(0, rows.shape[0], 4096):  # (block, n) products at a time
        fires[lo:lo + 4096] = (rows[lo:lo + 4096] @ Xh.T > b).any(axis=1)
    return float(m * fires.mean()) if rows.shape[0] else 0.0


def predict(method: str, *, n: int, m: int, d: int, optimizer="sgd", b: float | None = None, x_norms=None,
            steps: int = 100, dtype="float32", rows: int | None = None,
            n_active: float | None = None) -> Prediction:
    r"""Predicted step, set-up and total time of ``train.fit(method=method)`` on an (n, m, d) problem.

    Args:
      method: a name of :func:`jaxcorr.methods.names`.
      n, m, d: data points, width, dimension (ints >= 1).
      optimizer: a name of :data:`jaxcorr.optimizers.NAMES` (its state slots and span flag from the
        table), or an optax ``GradientTransformation`` (slots counted from ``init``'s shapes; span
        path only for :class:`jaxcorr.train.LinearOptimizer`).
      b: the threshold; default :func:`jaxcorr.nn.default_threshold` ``(m)``.
      x_norms: the n data norms :math:`\|x_i\|` (default: unit norms, :mod:`jaxcorr.data`'s setting).
      steps: training steps (int >= 0) for ``total_s``.
      dtype: ``"float32"`` or ``"float64"``.
      rows: the rows the parameters hold, ``1 <= rows <= m`` (default ``m``; fewer for a model of
        width ``m`` given by its rows that can fire, ``train.fit(width=m)``): dense trains these
        rows, and |A| is at most ``rows``.
      n_active: |A| measured or estimated from the data (:func:`sampled_active`), in place of
        :func:`expected_active`'s, which assumes unit-norm points in general position: real data
        are correlated (far fewer rows fire), and the sparse steps' cost is proportional to |A|.
        At most ``rows``.

    Returns:
      a :class:`Prediction`. For a sparse method whose expected fire count per point exceeds the
      DDFN cap :math:`\lceil m^{4/5}\rceil` (Definition 1.3; ``train.fit`` would refuse), ``exact``
      is False and the reason says so.

    Raises:
      ValueError: an unknown method or optimizer, sizes that are not ints >= 1, ``steps < 0``,
        bad ``x_norms``, ``b`` or ``dtype``.
    """
    spec = _methods.get(method)
    n, m, d = _size("n", n), _size("m", m), _size("d", d)
    rows = m if rows is None else _size("rows", rows)
    if rows > m:
        raise ValueError(f"rows must be at most m={m} (the rows of a network of width m), got {rows}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if b is None:
        b = math.sqrt(0.4 * math.log(m))  # jaxcorr.nn.default_threshold, without importing jax
    elif not isinstance(b, (int, float)) or not math.isfinite(float(b)):
        raise ValueError(f"b must be a finite real number, got {b!r}")
    b = float(b)
    norms = _norms(n, x_norms)
    slots, span, opt_label = _optimizer_info(optimizer)
    scale = _itemsize(dtype) / 4.0
    if method not in STEP_COEF or method not in SETUP_COEF:
        raise KeyError(f"jaxcorr.cost has no cost terms for method {method!r}: add them (and calibrate)")
    if n_active is not None and (not isinstance(n_active, (int, float)) or not 0 <= n_active <= rows):
        raise ValueError(f"n_active must be a number in [0, rows={rows}], got {n_active!r}")
    est = expected_active(m, b, norms, n, d) if n_active is None else float(n_active)
    n_active = float(rows) if not spec.sparse else min(float(rows), est)
    span = span and spec.sparse
    kw = dict(n=n, m=rows, d=d, n_active=n_active, slots=slots)
    fs = _step_features(method, span=span, itemsize=_itemsize(dtype), **kw)
    gs = _setup_features(method, **kw)
    c, s = STEP_COEF[method], SETUP_COEF[method]
    if len(c) != len(fs) or len(s) != len(gs):
        raise RuntimeError(f"jaxcorr.cost: the coefficients of {method!r} do not match its features "
                           f"({len(c)}/{len(fs)} step, {len(s)}/{len(gs)} set-up): rerun scripts/calibrate_cost.py")
    step_s = c[0] + scale * _dot(c[1:], fs[1:])
    setup_s = s[0] + scale * _dot(s[1:], gs[1:])
    compile_s = COMPILE_S[method]
    terms = [f"{c[k] * fs[k] * scale * 1e3:.3g} ms" for k in range(1, len(fs))]
    reason = f"{method}: {step_s * 1e3:.3g} ms/step (terms {' + '.join(terms)}), set-up {setup_s:.3g} s"
    exact = True
    kmax = expected_fire(m, b, None if norms is None else [max(norms)], 1)
    cap = math.ceil(m ** 0.8)
    if spec.sparse and kmax > cap:
        exact = False
        reason = (f"{method}: excluded, a point's expected fire count {kmax:.0f} exceeds the DDFN cap "
                  f"ceil(m^(4/5)) = {cap} (Definition 1.3)")
    mem = _memory_bytes(method, n, rows, d, _itemsize(dtype), opt_label if isinstance(optimizer, str) else "adam")
    return Prediction(method=method, step_s=step_s, setup_s=setup_s, total_s=compile_s + setup_s + steps * step_s,
                      n_active=n_active, reason=reason, compile_s=compile_s, memory_bytes=mem, exact=exact)


def _fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3g} ms" if ms < 1e4 else f"{s:.3g} s"


def _log2(m: int) -> str:
    return f"2^{m.bit_length() - 1}" if m & (m - 1) == 0 else str(m)


def choose(n: int, m: int, d: int, *, optimizer="sgd", steps: int = 100, b: float | None = None, x_norms=None,
           dtype="float32", methods=None, rows: int | None = None, n_active: float | None = None) -> Choice:
    r"""The fastest exact method for ``steps`` steps by predicted total time (:func:`predict`).

    Args:
      n, m, d, optimizer, steps, b, x_norms, dtype, rows, n_active: as for :func:`predict`.
      methods: the candidates (default every method of :func:`jaxcorr.methods.names`, dense included).

    Returns:
      a :class:`Choice`: ``method``, every candidate's :class:`Prediction`, a one-line ``reason``
      (e.g. ``"active: predicted 3.1 ms/step vs dense 250 ms/step (80x) at n=8, m=2^22"``) and
      ``dense_expected_faster`` (the chosen method is sparse but dense is predicted faster per step:
      the choice rests on set-up or compile time, or dense was not a candidate).

    Raises:
      ValueError: as :func:`predict`, an empty or unknown ``methods``, or no exact candidate.

    Examples:
      >>> from jaxcorr import cost
      >>> cost.choose(8, 2**22, 64).reason.startswith(("active", "dtree", "wtree"))
      True
    """
    names = tuple(_methods.names()) if methods is None else tuple(methods)
    if not names:
        raise ValueError("methods must name at least one method")
    kw = dict(n=n, m=m, d=d, optimizer=optimizer, b=b, x_norms=x_norms, steps=steps, dtype=dtype, rows=rows,
              n_active=n_active)
    preds = {k: predict(k, **kw) for k in names}
    ok = [p for p in preds.values() if p.exact]
    if not ok:
        raise ValueError(f"no exact method among {names}: " + "; ".join(p.reason for p in preds.values()))
    best = min(ok, key=lambda p: p.total_s)
    where = f"at n={n}, m={_log2(m)}, d={d}, {steps} steps"
    if n_active is not None:
        where += f", |A| = {n_active:.3g} from the data"
    dense = preds.get("dense") or predict("dense", **kw)
    slower = _methods.get(best.method).sparse and dense.step_s < best.step_s
    if best.method == "dense":
        rivals = [p for p in ok if p.method != "dense"]
        if not rivals:
            reason = f"dense: the only exact candidate {where}"
        else:
            r = min(rivals, key=lambda p: p.total_s)
            reason = (f"dense: predicted {_fmt_ms(dense.step_s)}/step vs {r.method} {_fmt_ms(r.step_s)}/step "
                      f"({r.step_s / dense.step_s:.2g}x slower) {where}")
            if r.step_s < dense.step_s:  # few steps: the compile and set-up times decide
                reason = (f"dense: predicted {_fmt_ms(dense.total_s)} in all vs {r.method} {_fmt_ms(r.total_s)} "
                          f"{where} ({r.method} is {dense.step_s / r.step_s:.2g}x faster per step, but its "
                          f"compile and set-up take longer than the steps save)")
    else:
        reason = (f"{best.method}: predicted {_fmt_ms(best.step_s)}/step vs dense {_fmt_ms(dense.step_s)}/step "
                  f"({dense.step_s / best.step_s:.2g}x) {where}")
    if slower:
        reason += " (dense is predicted faster per step)"
    return Choice(method=best.method, predictions=preds, reason=reason, dense_expected_faster=bool(slower))


def dense_expected_faster(method: str, *, n: int, m: int, d: int, **kwargs) -> bool:
    """True when ``method`` is predicted slower per step than dense (keywords of :func:`predict`)."""
    p = predict(method, n=n, m=m, d=d, **kwargs)
    q = predict("dense", n=n, m=m, d=d, **kwargs)
    return q.step_s < p.step_s
