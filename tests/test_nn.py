"""2NN(m, b) of Definition 2.1 (Section 2) against a numpy float64 oracle, and the synthetic data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcorr import data, nn


def np_forward(W, a, X, y, b):
    """Definition 2.1 and Section 2's gradient, in float64 numpy."""
    W, a, X, y = (np.asarray(v, np.float64) for v in (W, a, X, y))
    m = W.shape[0]
    ip = X @ W.T
    f = np.maximum(ip - b, 0) @ a / math.sqrt(m)
    e = f - y
    grad = ((ip > b) * a[None, :] * e[:, None]).T @ X / math.sqrt(m)
    return f, 0.5 * np.sum(e * e), grad


@pytest.fixture
def problem():
    X, y = data.synthetic(3, n=6, d=5)
    params = nn.init(jax.random.key(0), 64, 5)
    return params, X, y, 0.7


def test_default_threshold():
    assert nn.default_threshold(1) == 0.0
    for m in (2, 2**14, 2**22):
        assert nn.default_threshold(m) == pytest.approx(math.sqrt(0.4 * math.log(m)))
    with pytest.raises(ValueError):
        nn.default_threshold(0)


def test_init_distribution():
    p = nn.init(jax.random.key(1), 4096, 16)
    assert isinstance(p, nn.Params)
    assert p.W.shape == (4096, 16) and p.a.shape == (4096,)
    assert p.W.dtype == jnp.float32 and p.a.dtype == jnp.float32
    assert set(np.unique(np.asarray(p.a)).tolist()) == {-1.0, 1.0}
    assert abs(float(p.a.mean())) < 0.05
    W = np.asarray(p.W)
    assert abs(W.mean()) < 0.02 and abs(W.std() - 1) < 0.02
    with jax.enable_x64(True):
        assert nn.init(jax.random.key(1), 8, 3, dtype=jnp.float64).W.dtype == jnp.float64
    q = nn.init(jax.random.key(1), 4096, 16)
    np.testing.assert_array_equal(p.W, q.W)  # deterministic in the key


def test_relu_b():
    x = jnp.array([-1.0, 0.5, 1.0, 2.5])
    np.testing.assert_array_equal(nn.relu_b(x, 1.0), [0.0, 0.0, 0.0, 1.5])


def test_predict_loss_grad_match_numpy(problem):
    params, X, y, b = problem
    f, L, g = np_forward(params.W, params.a, X, y, b)
    np.testing.assert_allclose(nn.predict(params, X, b), f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nn.predict(params, X[0], b), f[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nn.loss(params, X, y, b), L, rtol=1e-5)
    np.testing.assert_allclose(nn.grad_W(params, X, y, b), g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("x64", [False, True])
def test_grad_equals_jax_grad(problem, x64):
    params, X, y, b = problem
    with jax.enable_x64(x64):
        dt = jnp.float64 if x64 else jnp.float32
        p = nn.Params(W=params.W.astype(dt), a=params.a.astype(dt))
        Xd, yd = X.astype(dt), y.astype(dt)
        ip = np.asarray(Xd @ p.W.T)
        assert np.abs(ip - b).min() > 1e-4  # away from ties
        auto = jax.grad(lambda W: nn.loss(nn.Params(W, p.a), Xd, yd, b))(p.W)
        ana = jax.jit(nn.grad_W)(p, Xd, yd, b)
        assert ana.dtype == dt
        tol = 1e-12 if x64 else 1e-5
        np.testing.assert_allclose(ana, auto, rtol=tol, atol=tol)
        # the gradient is non-trivial: some rows fire, some do not
        nz = np.any(np.asarray(ana) != 0, axis=1)
        assert 0 < nz.sum() < p.W.shape[0]


def test_grad_uses_strict_indicator_at_ties():
    # <w_0, x_0> == b exactly: sigma_b'(b) = 1[b > b] = 0, so row 0 gets no gradient from x_0.
    W = jnp.array([[1.0, 0.0], [2.0, 0.0]])
    a = jnp.array([1.0, -1.0])
    X = jnp.array([[1.0, 0.0]])
    y = jnp.array([3.0])
    g = nn.grad_W(nn.Params(W, a), X, y, 1.0)
    assert np.all(np.asarray(g[0]) == 0)
    assert np.any(np.asarray(g[1]) != 0)


def test_synthetic_data():
    X, y = data.synthetic(7, n=10, d=12)
    assert X.shape == (10, 12) and y.shape == (10,) and X.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(X), axis=1), 1.0, rtol=1e-6)
    assert np.all(np.abs(np.asarray(y)) < 1)
    X2, y2 = data.synthetic(7, n=10, d=12)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(np.asarray(data.synthetic(8, n=10, d=12)[0]), np.asarray(X))
    with jax.enable_x64(True):
        assert data.synthetic(0, 3, 4, dtype=jnp.float64)[0].dtype == jnp.float64
    with pytest.raises(ValueError):
        data.synthetic(0, 0, 4)


def test_init_rows_any_block_any_start():
    # Row r of W(0) is a function of (key, r, d) alone: any window, across the block boundary,
    # eager or traced, equals the same rows of nn.init; a narrower width is a prefix of a wider one.
    key = jax.random.key(5)
    B = nn.BLOCK_ROWS
    m, d = B + 300, 3
    full = nn.init(key, m, d)
    for start, num in ((0, 7), (B - 5, 10), (B + 290, 10), (17, 1)):
        part = nn.init_rows(key, num, d, start=start)
        np.testing.assert_array_equal(part.W, full.W[start : start + num])
        np.testing.assert_array_equal(part.a, full.a[start : start + num])
    traced = jax.jit(lambda s: nn.init_rows(key, 8, d, start=s))(jnp.int32(B - 4))
    np.testing.assert_array_equal(traced.W, full.W[B - 4 : B + 4])
    by_block = jax.jit(lambda q: nn.init_rows(key, 8, d, block=q, start=2))(jnp.uint32(1))
    np.testing.assert_array_equal(by_block.W, full.W[B + 2 : B + 10])
    np.testing.assert_array_equal(nn.init(key, 40, d).W, full.W[:40])
    # entry (r, j) hashes the counter (r mod B, j // 2): rows for d = 3 are the first columns for d = 4
    np.testing.assert_array_equal(nn.init(key, 40, 4).W[:, :3], full.W[:40])
    assert not np.array_equal(np.asarray(nn.init(jax.random.key(6), 40, d).W), np.asarray(full.W[:40]))
    assert nn.init_rows(key, 0, d).W.shape == (0, d)
    with pytest.raises(ValueError, match="rows"):
        nn.init_rows(key, 4, d, start=-1)
    with pytest.raises(ValueError, match="rows"):
        nn.init_rows(key, 2, d, start=nn.MAX_WIDTH - 1)


def test_rows_at_draws_any_rows_bit_for_bit():
    # nn.rows_at(key, idx) is rows idx of nn.init, in the order given, across blocks and past 2^32
    # (against init_rows at that block), in float32 and float64.
    key = jax.random.key(5)
    B = nn.BLOCK_ROWS
    full = nn.init(key, B + 300, 3)
    idx = np.array([B + 299, 0, B - 1, B, 17, 17, 5])
    got = nn.rows_at(key, idx, 3)
    np.testing.assert_array_equal(got.W, np.asarray(full.W)[idx])
    np.testing.assert_array_equal(got.a, np.asarray(full.a)[idx])
    far = (1 << 33) + 12345
    ref = nn.init_rows(key, 1, 3, block=far // B, start=far % B)
    np.testing.assert_array_equal(nn.rows_at(key, [far], 3).W, ref.W)
    with jax.enable_x64(True):
        w64 = nn.init(key, 50, 3, dtype=jnp.float64).W
        got64 = nn.rows_at(key, [49, 3], 3, dtype=jnp.float64).W
        assert got64.dtype == jnp.float64
        np.testing.assert_array_equal(got64, np.asarray(w64)[[49, 3]])
    assert nn.rows_at(key, np.zeros(0, np.int64), 3).W.shape == (0, 3)
    for bad in ([-1], [nn.MAX_WIDTH], [[1, 2]], [0.5]):
        with pytest.raises(ValueError, match="idx"):
            nn.rows_at(key, bad, 3)


def test_init_rows_are_standard_normal_and_independent_of_blocks():
    # Two-sample checks against numpy: moments, tail mass, and no correlation between columns or
    # between the rows at the same offset of two blocks (different block keys).
    key = jax.random.key(11)
    B = nn.BLOCK_ROWS
    W = np.asarray(nn.init_rows(key, 2 * B, 4).W, np.float64)
    assert abs(W.mean()) < 0.01 and abs(W.std() - 1) < 0.01
    assert abs((np.abs(W) > 2).mean() - 0.0455) < 0.003  # P(|N(0,1)| > 2) = 0.0455
    c = np.corrcoef(W[:B, 0], W[B:, 0])[0, 1]
    assert abs(c) < 0.02
    assert abs(np.corrcoef(W[:, 0], W[:, 1])[0, 1]) < 0.02
    with jax.enable_x64(True):
        W64 = nn.init(key, 2000, 3, dtype=jnp.float64).W
        assert W64.dtype == jnp.float64
        assert abs(float(np.asarray(W64).std()) - 1) < 0.05
        np.testing.assert_array_equal(W64[100:200], nn.init_rows(key, 100, 3, start=100, dtype=jnp.float64).W)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_refused_at_every_entry_point(dtype):
    """bf16 / f16 data or weights: a ValueError naming the argument, in nn, data and train alike."""
    from jaxcorr import train

    p = nn.init(jax.random.key(0), 16, 3)
    X, y = data.synthetic(seed=0, n=4, d=3)
    low = nn.Params(W=p.W.astype(dtype), a=p.a.astype(dtype))
    for fn in (lambda P, X_: nn.predict(P, X_, 0.5), lambda P, X_: nn.fire_mask(P, X_, 0.5),
               lambda P, X_: nn.loss(P, X_, y, 0.5), lambda P, X_: nn.grad_W(P, X_, y, 0.5),
               lambda P, X_: train.fit(P, X_, y, steps=1, b=0.5), lambda P, X_: train.setup(P, X_, y, b=0.5)):
        with pytest.raises(ValueError, match=r"^params\.W has dtype .*float32"):
            fn(low, X)
        with pytest.raises(ValueError, match=r"^X has dtype .*float32"):
            fn(p, X.astype(dtype))
    for make in (lambda: nn.init(jax.random.key(0), 4, 3, dtype=dtype), lambda: data.synthetic(0, 4, 3, dtype=dtype),
                 lambda: nn.init_rows(jax.random.key(0), 4, 3, dtype=dtype),
                 lambda: nn.rows_at(jax.random.key(0), np.array([1]), 3, dtype=dtype)):
        with pytest.raises(ValueError, match=r"dtype must be one of \('float32', 'float64'\)"):
            make()


def test_float32_is_the_default_and_integer_data_predict_as_floats():
    p = nn.init(jax.random.key(0), 16, 3)
    X, y = data.synthetic(seed=0, n=4, d=3)
    assert p.W.dtype == X.dtype == jnp.result_type(float)
    Xi = jnp.array([[1, 0, -1], [2, 1, 0]], jnp.int32)
    np.testing.assert_allclose(nn.predict(p, Xi, 0.1), nn.predict(p, Xi.astype(p.W.dtype), 0.1), rtol=0, atol=0)
