"""W(0) by key and basis (jaxcorr.span_init): the law against an eager Monte Carlo, exactness, determinism.

Tolerances are fixed here, before any run: means within 4.5 standard errors, KS at alpha = 1e-3
(critical values from the asymptotic Kolmogorov distribution, implemented below), correlations
within 5 / sqrt(N), training equal to dense within 1e-9 relative in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcorr import data, nn, span_init, train

Z_TOL = 4.5  # standard errors for the mean comparisons
KS_ALPHA = 1e-3
CORR_TOL = 5.0  # / sqrt(N) for correlations that should vanish


# ----------------------------------------------------------------------------------- helpers
def _ks_crit(alpha: float) -> float:
    """c(alpha) with P(sqrt(N) D_N > c) ~ alpha: sqrt(-ln(alpha / 2) / 2) (Kolmogorov, asymptotic)."""
    return math.sqrt(-0.5 * math.log(alpha / 2))


def _normal_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(np.asarray(x, np.float64) / math.sqrt(2)))


def _ks_normal(x) -> tuple[float, float]:
    """One-sample KS statistic of x against N(0, 1), and its critical value at KS_ALPHA."""
    x = np.sort(np.asarray(x, np.float64))
    N = x.size
    F = _normal_cdf(x)
    D = max(np.max(np.arange(1, N + 1) / N - F), np.max(F - np.arange(N) / N))
    return float(D), _ks_crit(KS_ALPHA) / math.sqrt(N)


def _ks_two(a, b) -> tuple[float, float]:
    """Two-sample KS statistic and its critical value at KS_ALPHA."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    allv = np.concatenate([a, b])
    D = float(np.max(np.abs(np.searchsorted(a, allv, "right") / a.size - np.searchsorted(b, allv, "right") / b.size)))
    return D, _ks_crit(KS_ALPHA) * math.sqrt((a.size + b.size) / (a.size * b.size))


def _points(kind: str):
    """Data sets: random unit points, correlated ones (the mixture's overlaps N(g) > 1 are common),
    dependent ones (rank X < n, a duplicate, norms != 1)."""
    if kind == "random":
        return np.asarray(data.synthetic(seed=1, n=6, d=12)[0], np.float64)
    rng = np.random.default_rng(7)
    if kind == "correlated":
        base = rng.standard_normal(10)
        X = base + 0.6 * rng.standard_normal((5, 10))
        return X / np.linalg.norm(X, axis=1, keepdims=True)
    v = rng.standard_normal((2, 10))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.stack([v[0], v[0], 0.5 * v[1], 2.0 * v[1], (v[0] + v[1]) / np.linalg.norm(v[0] + v[1])])  # rank 2


def _eager_counts(X, b, m, seeds, rng_seed=123):
    """|union S_fire| and k_i per seed from plain numpy N(0, I_d) rows (float64)."""
    rng = np.random.default_rng(rng_seed)
    unions, ks = [], []
    for _ in range(seeds):
        W = rng.standard_normal((m, X.shape[1]))
        fire = W @ X.T > b
        unions.append(fire.any(axis=1).sum())
        ks.append(fire.sum(axis=0))
    return np.array(unions, np.float64), np.array(ks, np.float64)


def _span_counts(X, b, m, seeds, mode="auto"):
    unions, ks, held = [], [], []
    for s in range(seeds):
        spec = span_init.define(jax.random.key(1000 + s), X, m, b, mode=mode)
        act = span_init.setup(spec)
        unions.append(act.n_fire_union)
        ks.append(act.k0)
        held.append(act.n_active)
    return np.array(unions, np.float64), np.array(ks, np.float64), np.array(held)


def _close(a, b, what):
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) <= Z_TOL * se, (what, a.mean(), b.mean(), se)


def _held_mask(spec, act):
    held = np.zeros(spec.m, bool)
    held[act.idx] = True
    return held


# ----------------------------------------------------------------------------------- the law
@pytest.mark.parametrize("kind,mode", [("random", "auto"), ("correlated", "auto"), ("dependent", "auto"),
                                       ("correlated", "full")])
def test_counts_match_eager_monte_carlo(kind, mode):
    X = _points(kind)
    m, b = 1 << 13, 1.6
    un_s, k_s, held = _span_counts(X, b, m, 60, mode=mode)
    un_e, k_e = _eager_counts(X, b, m, 150)
    _close(un_s, un_e, "union")
    for i in range(X.shape[0]):
        _close(k_s[:, i], k_e[:, i], f"k_{i}")
    assert (held >= un_s).all()


def test_mixture_overlaps_happen_and_pick_weights():
    """The correlated case exercises step 3 (N(g) > 1): candidates are rejected there."""
    X = _points("correlated")
    spec = span_init.define(jax.random.key(3), X, 1 << 14, 1.6)
    act = span_init.setup(spec)
    assert spec.mode == "mixture" and act.n_candidates > 1.3 * act.n_active
    # candidates are Bernoulli(q) per row: their count within 4.5 standard errors of m q
    assert abs(act.n_candidates - spec.m * spec.q) <= Z_TOL * math.sqrt(spec.m * spec.q * (1 - spec.q))


@pytest.fixture(scope="module")
def small():
    X = np.asarray(data.synthetic(seed=2, n=4, d=8)[0], np.float64)
    spec = span_init.define(jax.random.key(5), X, 1 << 14, 1.2)
    act = span_init.setup(spec)
    W = np.asarray(span_init.materialize(spec, act).W, np.float64)
    return X, spec, act, W


def _directions(spec, X):
    u = X[0] / np.linalg.norm(X[0])
    rng = np.random.default_rng(11)
    v = rng.standard_normal(spec.d)
    v -= spec.U @ (spec.U.T @ v)
    v /= np.linalg.norm(v)  # orthogonal to span(X)
    r = rng.standard_normal(spec.d)
    return u, v, r / np.linalg.norm(r)


def test_projections_are_normal(small):
    X, spec, act, W = small
    held = _held_mask(spec, act)
    u, v, r = _directions(spec, X)
    for proj in (W @ u, W @ v, W @ r, W[:, 3]):  # all rows: exactly N(0, 1)
        D, crit = _ks_normal(proj)
        assert D <= crit, (D, crit)
    for part in (held, ~held):  # the part orthogonal to span(X) is N(0, 1) inside and outside A
        D, crit = _ks_normal(W[part] @ v)
        assert D <= crit, (D, crit)


def test_conditioned_laws_match_eager(small):
    """Inside A the span part is N(0, I) given "held", outside given "not held": against eager rows."""
    X, spec, act, W = small
    held = _held_mask(spec, act)
    rng = np.random.default_rng(5)
    E = rng.standard_normal((1 << 17, spec.d))
    e_held = (E @ X.T > spec.beta).any(axis=1)
    u, _, r = _directions(spec, X)
    for d_ in (u, r):
        for part, e_part in ((held, e_held), (~held, ~e_held)):
            D, crit = _ks_two(W[part] @ d_, E[e_part] @ d_)
            assert D <= crit, (D, crit)


def test_rows_independent(small):
    X, spec, act, W = small
    held = _held_mask(spec, act)
    N = spec.m - 1
    assert abs(np.mean(np.sum(W[:-1] * W[1:], axis=1)) / spec.d) <= CORR_TOL / math.sqrt(N * spec.d)
    u, v, _ = _directions(spec, X)
    WA = W[held]
    pa = WA @ u
    assert abs(np.corrcoef(pa[:-1], pa[1:])[0, 1]) <= CORR_TOL / math.sqrt(pa.size)  # consecutive rows of A
    pv = WA @ v
    assert abs(np.corrcoef(pa, pv)[0, 1]) <= CORR_TOL / math.sqrt(pa.size)  # g part vs h part
    assert abs(np.corrcoef(pa ** 2, pv ** 2)[0, 1]) <= CORR_TOL / math.sqrt(pa.size)


def test_held_rows_fire_and_others_never(small):
    """Exact: rows of A clear the partition threshold, the others fire for no point in any dtype."""
    X, spec, act, W = small
    held = _held_mask(spec, act)
    g = span_init.span_coords(spec, act, np.arange(spec.m))
    over = g @ spec.C.T > spec.beta
    assert (over.any(axis=1) == held).all()
    W32 = span_init.materialize(spec, act).W
    fire32 = np.asarray(nn.fire_mask(nn.Params(W32, W32[:, 0]), jnp.asarray(X, jnp.float32), spec.b)).any(axis=0)
    assert not fire32[~held].any() and not (W @ X.T > spec.b)[~held].any()
    assert act.n_fire_union == int((g @ spec.C.T > spec.b).any(axis=1).sum())
    assert np.array_equal(act.k0, (g @ spec.C.T > spec.b).sum(axis=0))


# ----------------------------------------------------------------------------------- exactness
def test_training_on_span_rows_equals_dense_float64():
    with jax.enable_x64(True):
        X, y = data.synthetic(seed=3, n=4, d=6, dtype=jnp.float64)
        m = 1 << 10
        spec = span_init.define(jax.random.key(9), X, m)
        act = span_init.setup(spec, dtype=jnp.float64)
        p = span_init.materialize(spec, act, dtype=jnp.float64)
        assert p.W.dtype == jnp.float64
        ref, h_ref = train.fit(p, X, y, steps=5, method="dense")
        for method in ("active", "dtree"):
            out, h = train.fit(p, X, y, steps=5, method=method)
            np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-9)
            np.testing.assert_allclose(out.W, ref.W, rtol=1e-9, atol=1e-12)
        held = nn.Params(p.W[act.idx], p.a[act.idx])  # the held rows alone at the full width's scale
        out, h = train.fit(held, X, y, steps=5, method="active", width=m)
        np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-9)
        np.testing.assert_allclose(out.W, ref.W[act.idx], rtol=1e-9, atol=1e-12)
        assert np.array_equal(np.asarray(act.G), span_init.span_coords(spec, act, act.idx))


# ----------------------------------------------------------------------------------- determinism
def test_deterministic_across_calls_and_block_sizes():
    X = _points("random")
    spec = span_init.define(jax.random.key(4), X, (1 << 17) + 123, 2.2)
    ref = span_init.setup(spec)
    assert ref.calls == 1
    a = span_init.setup(spec, rows_per_call=1 << 16)
    assert a.calls == 3
    assert np.array_equal(a.idx, ref.idx) and np.array_equal(np.asarray(a.G), np.asarray(ref.G))
    two = span_init.setup(spec, rows_per_call=1 << 16, devices=jax.local_devices()[:1] * 2)
    assert np.array_equal(two.idx, ref.idx)
    assert np.array_equal(ref.idx, np.unique(ref.idx)) and ref.idx.max() < spec.m
    again = span_init.define(jax.random.key(4), X, (1 << 17) + 123, 2.2)
    assert np.array_equal(span_init.setup(again).idx, ref.idx)
    rng = np.random.default_rng(0)
    idx = np.concatenate([ref.idx[rng.permutation(ref.idx.size)[:300]], rng.integers(0, spec.m, 300)])
    base = span_init.rows(spec, ref, idx)
    for chunk in (300,):
        p = span_init.rows(spec, ref, idx, chunk=chunk)
        assert np.array_equal(np.asarray(p.W), np.asarray(base.W))
        assert np.array_equal(np.asarray(p.a), np.asarray(base.a))
    perm = rng.permutation(idx.size)
    p = span_init.rows(spec, ref, idx[perm])
    assert np.array_equal(np.asarray(p.W), np.asarray(base.W)[perm])
    re = span_init.SpanInit.from_arrays(spec.to_arrays())
    assert np.array_equal(np.asarray(span_init.rows(re, ref, idx).W), np.asarray(base.W))
    g = span_init.span_coords(spec, ref, ref.idx)
    assert np.array_equal(g.astype(np.float32), np.asarray(ref.G))


def test_full_draw_deterministic_and_float32_is_float64_rounded():
    X = _points("random")
    spec = span_init.define(jax.random.key(8), X, 5000, 1.6, mode="full")
    a, b = span_init.setup(spec), span_init.setup(spec, rows_per_call=700)
    assert a.mode == "full" and a.n_candidates == 5000 and np.array_equal(a.idx, b.idx)
    assert np.array_equal(np.asarray(a.G), np.asarray(b.G))
    with jax.enable_x64(True):
        W64 = np.asarray(span_init.materialize(spec, a, dtype=jnp.float64).W)
    W32 = np.asarray(span_init.materialize(spec, a).W)
    assert np.array_equal(W64.astype(np.float32), W32)


# ----------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("case", ["n1", "d_eq_n", "dependent", "zero_point"])
def test_edge_cases_hold_exactly(case):
    rng = np.random.default_rng(3)
    if case == "n1":
        X = rng.standard_normal((1, 5))
        X *= 1.7 / np.linalg.norm(X)
    elif case == "d_eq_n":
        X = rng.standard_normal((6, 6))
        X *= np.linspace(0.6, 1.3, 6)[:, None] / np.linalg.norm(X, axis=1, keepdims=True)
    elif case == "dependent":
        X = _points("dependent")
    else:
        X = np.concatenate([rng.standard_normal((3, 4)), np.zeros((1, 4))])
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
    spec = span_init.define(jax.random.key(2), X, 1 << 12, 2.0)
    assert spec.k == np.linalg.matrix_rank(X) and spec.mode == "mixture"
    act = span_init.setup(spec)
    W = np.asarray(span_init.materialize(spec, act).W, np.float64)
    held = _held_mask(spec, act)
    fire = W @ X.T > spec.b
    assert not fire[~held].any() and act.n_fire_union == int(fire.any(axis=1).sum())
    assert np.allclose(W[held] @ X.T, np.asarray(act.G, np.float64) @ spec.C.T, atol=1e-4)
    if case == "zero_point":
        assert act.k0[-1] == 0


def test_q_at_least_one_is_the_full_draw_said_plainly():
    X = np.asarray(data.synthetic(seed=4, n=8, d=10)[0], np.float64)
    spec = span_init.define(jax.random.key(1), X, 3000, 0.5)
    assert spec.q >= 1 and spec.mode == "full"
    act = span_init.setup(spec)
    assert act.mode == "full" and act.n_candidates == spec.m
    with pytest.raises(ValueError, match="mode='full'"):
        span_init.define(jax.random.key(1), X, 3000, 0.5, mode="mixture")
    W = np.asarray(span_init.materialize(spec, act).W, np.float64)
    held = _held_mask(spec, act)
    assert not (W @ X.T > spec.b)[~held].any()
    D, crit = _ks_normal(W[:, 0])
    assert D <= crit


def test_wide_rows_use_all_index_bits():
    X = _points("random")
    spec = span_init.define(jax.random.key(6), X, 1 << 40, 9.0)  # q ~ 1e-18: A is empty in law
    assert spec.mode == "mixture" and spec.q < 1e-15
    empty = span_init.ActiveSet(np.zeros(0, np.int64), jnp.zeros((0, spec.k)), np.zeros(spec.n, np.int64),
                                0, 0, "mixture", 0.0, 0, ())
    r = np.array([(1 << 40) - 1, (1 << 32) + 5, 5, ((1 << 40) - 1) & 0xFFFFFFFF])
    p = span_init.rows(spec, empty, r)
    W = np.asarray(p.W)
    assert np.isfinite(W).all() and not np.array_equal(W[0], W[3]) and not np.array_equal(W[1], W[2])


def test_bad_input():
    X = _points("random")
    key = jax.random.key(0)
    for bad, match in (({"X": X[0]}, "2-D"), ({"X": np.full((2, 3), np.nan)}, "finite"), ({"m": 0}, "m must"),
                       ({"m": (1 << 48) + 1}, "m must"), ({"m": 2.5}, "m must be an int"), ({"b": 0.0}, "b must"),
                       ({"b": -1.0}, "b must"), ({"b": math.inf}, "b must"), ({"mode": "x"}, "mode"),
                       ({"X": np.zeros((3, 4))}, "rank")):
        kw = {"X": X, "m": 1 << 12, "b": 1.6} | bad
        with pytest.raises(ValueError, match=match):
            span_init.define(key, kw.pop("X"), kw.pop("m"), kw.pop("b"), **kw)
    with pytest.raises(ValueError, match="key"):
        span_init.define(np.zeros(3, np.uint32), X, 16, 1.0)
    spec = span_init.define(key, X, 1 << 12, 1.6)
    act = span_init.setup(spec)
    with pytest.raises(ValueError, match="idx"):
        span_init.rows(spec, act, [1 << 12])
    with pytest.raises(ValueError, match="dtype"):
        span_init.setup(spec, dtype=jnp.int32)
    big = span_init.define(key, X, (1 << 24) + 1, 3.0)
    with pytest.raises(ValueError, match="materialize"):
        span_init.materialize(big, act)


def test_bounds_of_the_margin():
    """NORMAL_BOUND bounds ndtri of the extreme 53-bit uniforms (the margin relies on it)."""
    assert 0.5 * math.erfc(span_init.NORMAL_BOUND / math.sqrt(2)) < 2.0 ** -54


# ----------------------------------------------------------------------------------- training in coordinates
def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_fit_in_coordinates_equals_dense_float64(logm=11):
    """span_init.fit on the span path (K from G C^T, no row formed) equals dense on the materialised
    W(0) and train.fit on the materialised held rows with width=m, within 1e-9 relative, for every
    sparse method and sgd / momentum; the rows outside A are W(0)'s."""
    with jax.enable_x64(True):
        X, y = data.synthetic(seed=3, n=4, d=6, dtype=jnp.float64)
        m = 1 << logm
        spec = span_init.define(jax.random.key(logm), X, m)
        act = span_init.setup(spec, dtype=jnp.float64)
        p = span_init.materialize(spec, act, dtype=jnp.float64)
        held = nn.Params(p.W[act.idx], p.a[act.idx])
        a_held = span_init.output_weights(spec, act.idx, dtype=jnp.float64)
        assert np.array_equal(np.asarray(a_held), np.asarray(held.a))
        for opt in (train.sgd(1.0), train.sgd(0.5, momentum=0.9)):
            ref, h_ref = train.fit(p, X, y, steps=6, method="dense", optimizer=opt)
            assert h_ref.loss[-1] < h_ref.loss[0]  # it trains: rows move
            moved = np.flatnonzero(np.any(np.asarray(ref.W) != np.asarray(p.W), axis=1))
            assert moved.size and np.isin(moved, act.idx).all()  # only rows of A move
            for method in ("active", "dtree", "wtree"):
                out, h = span_init.fit(spec, act, X, y, steps=6, method=method, optimizer=opt)
                assert out.W is None and out.K.shape == (act.n_active, spec.n) and h.span
                assert _rel(h.loss, h_ref.loss) <= 1e-9, method
                W_tr = out.trained_rows(spec, act, X).W
                assert _rel(W_tr, ref.W[act.idx]) <= 1e-9, method
                rows_ref, h_rows = train.fit(held, X, y, steps=6, method=method, optimizer=opt, width=m)
                assert _rel(h.loss, h_rows.loss) <= 1e-9 and _rel(W_tr, rows_ref.W) <= 1e-9, method


def test_fit_row_path_and_float32():
    """A row-path optimizer (adam) trains the materialised rows of A, as train.fit on the held rows;
    float32 keeps its dtype and follows float64 to float32 rounding."""
    X, y = data.synthetic(seed=3, n=4, d=6)
    spec = span_init.define(jax.random.key(2), X, 1 << 11)
    act = span_init.setup(spec)
    p = span_init.materialize(spec, act)
    import optax  # noqa: PLC0415
    opt = optax.adam(0.05)
    ref, h_ref = train.fit(p, X, y, steps=4, method="dense", optimizer=opt)
    out, h = span_init.fit(spec, act, X, y, steps=4, optimizer=opt)
    assert out.K is None and out.W.shape == (act.n_active, spec.d) and out.W.dtype == jnp.float32
    assert _rel(h.loss, h_ref.loss) <= 1e-5 and _rel(out.W, ref.W[act.idx]) <= 1e-5
    out, h = span_init.fit(spec, act, X, y, steps=4)
    assert out.K.dtype == jnp.float32 and h.loss.dtype == np.float32
    ref, h_ref = train.fit(p, X, y, steps=4, method="dense")
    assert _rel(h.loss, h_ref.loss) <= 1e-5 and _rel(out.trained_rows(spec, act, X).W, ref.W[act.idx]) <= 1e-5


def test_fit_bad_input():
    X, y = data.synthetic(seed=3, n=4, d=6)
    spec = span_init.define(jax.random.key(2), X, 1 << 11)
    act = span_init.setup(spec)
    for kw, match in (({"X": np.asarray(X) + 0.1}, "defined from"), ({"X": X[:3]}, "defined from"),
                      ({"y": y[:3]}, "y must"), ({"b": spec.b - 0.1}, "b must"), ({"method": "dense"}, "method"),
                      ({"steps": -1}, "steps"), ({"spec": "x"}, "spec")):
        args = {"spec": spec, "X": X, "y": y} | kw
        with pytest.raises(ValueError, match=match):
            span_init.fit(args["spec"], act, args["X"], args["y"], steps=kw.get("steps", 1),
                          **{k: v for k, v in kw.items() if k in ("b", "method")})
    ip0 = X @ nn.init(jax.random.key(0), 64, 6).W.T
    c, _ = train.fit_coordinates(ip0, jnp.ones(64), X, y, steps=1, width=64, b=0.5)
    assert c.base_digest is None
    with pytest.raises(ValueError, match="optimizer must be train.sgd"):
        train.fit_coordinates(X @ nn.init(jax.random.key(0), 64, 6).W.T, jnp.ones(64), X, y, steps=1, width=64,
                              b=0.5, optimizer=__import__("optax").adam(0.1))
