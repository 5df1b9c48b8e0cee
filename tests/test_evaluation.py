"""jaxcorr.evaluation against a numpy float64 brute force of Definition 2.1, for both model kinds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcorr import data, evaluation, nn


def _wide():
    from jaxcorr import wide

    return wide


def _oracle(W, a, X, b):
    """f(x_i) = 1/sqrt(m) sum_r a_r max(<w_r, x_i> - b, 0) in float64 (Definition 2.1)."""
    W, a, X = (np.asarray(v, np.float64) for v in (W, a, X))
    return np.maximum(X @ W.T - b, 0.0) @ a / np.sqrt(W.shape[0])


def _oracle_eval(f, y):
    e = f - np.asarray(y, np.float64)
    return 0.5 * e @ e, np.mean(e * e)


@pytest.mark.parametrize("x64", [False, True])
def test_full_params_match_brute_force(x64):
    with jax.enable_x64(x64):
        dt = jnp.float64 if x64 else jnp.float32
        X, y = data.synthetic(seed=1, n=9, d=5, dtype=dt)
        params = nn.init(jax.random.key(3), 200, 5, dtype=dt)
        b = 0.7
        f = evaluation.predict(params, X, b=b)
        assert f.dtype == dt and f.shape == (9,)
        ref = _oracle(params.W, params.a, X, b)
        tol = 1e-12 if x64 else 1e-5
        np.testing.assert_allclose(np.asarray(f), ref, rtol=tol, atol=tol)
        # default b is the paper's sqrt(0.4 ln m)
        np.testing.assert_allclose(np.asarray(evaluation.predict(params, X)),
                                   _oracle(params.W, params.a, X, nn.default_threshold(200)), rtol=tol, atol=tol)
        e = evaluation.evaluate(params, X, y, b=b)
        loss, mse = _oracle_eval(ref, y)
        assert e.n == 9 and e.accuracy is None
        assert e.loss_sum == pytest.approx(loss, rel=1e-4 if not x64 else 1e-10)
        assert e.loss_sum == pytest.approx(float(nn.loss(params, X, y, b)), rel=1e-4)
        assert e.loss_mean == pytest.approx(loss / 9, rel=1e-4 if not x64 else 1e-10)
        assert e.mse == pytest.approx(mse, rel=1e-4 if not x64 else 1e-10)


def test_accuracy_for_pm1_labels():
    X, _ = data.synthetic(seed=2, n=12, d=4)
    params = nn.init(jax.random.key(0), 128, 4)
    f = _oracle(params.W, params.a, X, 0.3)
    y = np.where(np.arange(12) % 3 == 0, 1.0, -1.0)
    e = evaluation.evaluate(params, X, jnp.asarray(y, jnp.float32), b=0.3)
    assert e.accuracy == pytest.approx(np.mean(f * y > 0))
    e2 = evaluation.evaluate(params, X, jnp.asarray(np.where(f > 0, 1.0, -1.0), jnp.float32), b=0.3)
    assert e2.accuracy == pytest.approx(np.mean(f != 0))  # zero outputs count as wrong
    assert evaluation.evaluate(params, X, jnp.asarray(y * 0.5, jnp.float32), b=0.3).accuracy is None


@pytest.mark.parametrize("x64", [False, True])
def test_wide_model_matches_brute_force(x64):
    wide = _wide()
    with jax.enable_x64(x64):
        dt = jnp.float64 if x64 else jnp.float32
        m, d = 3000, 6
        X, y = data.synthetic(seed=4, n=5, d=d, dtype=dt)
        key = jax.random.key(7)
        model, _ = wide.setup(key, m, d, X, dtype=dt)
        full = nn.init(key, m, d, dtype=dt)
        W = np.asarray(full.W, np.float64).copy()
        # trained rows: perturb the held rows and swap them into W(0) for the oracle
        moved = np.asarray(model.W, np.float64) + 0.05 * np.cos(np.arange(model.W.size)).reshape(model.W.shape)
        model = dataclasses.replace(model, W=jnp.asarray(moved, dt), initial=False)
        W[np.asarray(model.idx)] = moved
        f = evaluation.predict(model, X)
        assert f.dtype == dt and f.shape == (5,)
        ref = _oracle(W, full.a, X, model.b)
        tol = 1e-11 if x64 else 2e-5
        np.testing.assert_allclose(np.asarray(f), ref, rtol=tol, atol=tol)
        e = evaluation.evaluate(model, X, y)
        assert e.loss_sum == pytest.approx(_oracle_eval(ref, y)[0], rel=1e-4)
        # X other than the training data: still the full network (rows outside A are W(0))
        X2, _ = data.synthetic(seed=5, n=3, d=d, dtype=dt)
        np.testing.assert_allclose(np.asarray(evaluation.predict(model, X2)), _oracle(W, full.a, X2, model.b),
                                   rtol=tol, atol=tol)
        with pytest.raises(ValueError, match="b="):
            evaluation.predict(model, X, b=model.b + 0.1)


def test_bad_inputs():
    X, y = data.synthetic(seed=0, n=4, d=3)
    params = nn.init(jax.random.key(0), 32, 3)
    with pytest.raises(ValueError, match="d=3 columns"):
        evaluation.predict(params, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        evaluation.predict(params, jnp.ones(3))
    with pytest.raises(ValueError, match="finite"):
        evaluation.predict(params, X.at[1, 2].set(jnp.nan))
    with pytest.raises(ValueError, match="finite"):
        evaluation.evaluate(params, X, y.at[0].set(jnp.inf))
    with pytest.raises(ValueError, match=r"y must have shape \(n,\)=\(4,\)"):
        evaluation.evaluate(params, X, y[:3])
    with pytest.raises(ValueError, match="model must be"):
        evaluation.predict({"W": 1}, X)
    with pytest.raises(ValueError, match="b"):
        evaluation.predict(params, X, b=float("nan"))
    wide = _wide()
    model, _ = wide.setup(jax.random.key(0), 512, 3, X)
    with pytest.raises(ValueError, match="d=3 columns"):
        evaluation.predict(model, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        evaluation.evaluate(model, X.at[0, 0].set(jnp.inf), y)


def test_full_width_predict_goes_through_point_blocks(monkeypatch):
    """A full-width model's outputs are formed over blocks of points (never an n x m matrix beyond
    PREDICT_BLOCK_ELEMENTS); with blocks of 8 points, 37 points (a padded last block) give the
    brute-force outputs, and a block size too small for one point still takes one at a time."""
    X, _ = data.synthetic(seed=3, n=37, d=5)
    params = nn.init(jax.random.key(1), 4096, 5)
    ref = _oracle(params.W, params.a, X, 1.0)
    for elements in (4096 * 8, 1):
        monkeypatch.setattr(evaluation, "PREDICT_BLOCK_ELEMENTS", elements)
        out = np.asarray(evaluation.predict(params, X, b=1.0))
        assert out.shape == (37,)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
