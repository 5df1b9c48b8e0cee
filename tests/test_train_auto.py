"""train.fit(method="auto") and fit_coordinates(method="auto"): the cost model's pick, run as if given."""

import jax
import numpy as np
import optax
import pytest

from jaxcorr import _linalg, cost, data, methods, nn, train


def _problem(n, m, d, seed=0):
    X, y = data.synthetic(seed=seed, n=n, d=d)
    return nn.init(jax.random.key(seed), m=m, d=d), X, y


def _same(p1, h1, p2, h2):
    assert np.array_equal(np.asarray(p1.W), np.asarray(p2.W))
    assert np.array_equal(h1.loss, h2.loss) and np.array_equal(h1.fire_union, h2.fire_union)
    assert h1.n_active == h2.n_active and h1.span == h2.span


@pytest.mark.parametrize("n, m, d, steps, expect_sparse", [(8, 2**16, 8, 200, True), (200, 64, 4, 4, False)])
def test_auto_runs_the_chosen_method_bit_for_bit(n, m, d, steps, expect_sparse):
    params, X, y = _problem(n, m, d)
    p, h = train.fit(params, X, y, steps=steps, method="auto")
    assert methods.get(h.method).sparse == expect_sparse, h.method_reason
    assert isinstance(h.choice, cost.Choice) and h.choice.method == h.method
    assert h.method_reason == h.choice.reason and h.method_reason.startswith(h.method + ": predicted")
    assert set(h.choice.predictions) == set(methods.names())  # dense is a candidate
    # the same pick as cost.choose called on the same inputs (norms of X, the default sgd, 4 steps)
    b = float(nn.default_threshold(m))  # |A| counted on a sample of params.W's rows (cost.sampled_active)
    direct = cost.choose(n, m, d, steps=steps, b=b, x_norms=np.linalg.norm(np.asarray(X, np.float64), axis=1),
                         dtype="float32", n_active=cost.sampled_active(X, m, b, W=params.W))
    assert direct.method == h.method and direct.reason == h.method_reason
    p2, h2 = train.fit(params, X, y, steps=steps, method=h.method)
    _same(p, h, p2, h2)
    assert h2.method_reason is None and h2.choice is None


def test_auto_with_a_refused_optimizer_picks_dense():
    params, X, y = _problem(4, 2**12, 8)
    opt = optax.adamw(1e-2, weight_decay=0.1)  # decays every row, also those that never fire: refused
    with pytest.raises(Exception, match="method='dense'"):
        train.fit(params, X, y, steps=3, method="active", optimizer=opt)
    p, h = train.fit(params, X, y, steps=3, method="auto", optimizer=opt)
    assert h.method == "dense" and "refuse" in h.method_reason and set(h.choice.predictions) == {"dense"}
    p2, h2 = train.fit(params, X, y, steps=3, method="dense", optimizer=opt)
    _same(p, h, p2, h2)


def test_auto_optimizer_and_width_reach_the_model():
    params, X, y = _problem(4, 2**12, 8)
    opt = optax.adam(1e-2)  # the row path: not the span path's prediction
    _, h = train.fit(params, X, y, steps=3, method="auto", optimizer=opt)
    sparse = h.choice.predictions["active"]
    assert sparse.step_s == pytest.approx(cost.predict(
        "active", n=4, m=2**12, d=8, optimizer=opt, steps=3, b=h.b,
        x_norms=np.linalg.norm(np.asarray(X, np.float64), axis=1),
        n_active=cost.sampled_active(X, 2**12, h.b, W=params.W)).step_s)
    # a wide model given by some of its rows: the width sets b and |A|, dense trains the rows held
    _, hw = train.fit(params, X, y, steps=3, method="auto", width=2**14)
    assert hw.choice.predictions["dense"].n_active == 2**12 and hw.b == pytest.approx(nn.default_threshold(2**14))


def test_few_steps_compile_and_set_up_decide():
    # 4 steps at n = 4, m = 2^14: active is faster per step, dense's compile and set-up are shorter
    c = cost.choose(4, 2**14, 8, steps=4)
    p = c.predictions
    assert c.method == "dense" and p["active"].step_s < p["dense"].step_s < p["active"].total_s
    assert "faster per step, but its compile and set-up" in c.reason, c.reason
    assert cost.choose(4, 2**14, 8, steps=10**4).method != "dense"


def test_auto_names_in_errors():
    params, X, y = _problem(4, 64, 4)
    with pytest.raises(ValueError, match="'auto'"):
        train.fit(params, X, y, steps=1, method="sparse")
    with pytest.raises(ValueError, match="method='auto' needs the number of steps"):
        train.setup(params, X, y, method="auto")
    ip = _linalg.inner(X, params.W)
    with pytest.raises(ValueError, match="or 'auto'"):
        train.fit_coordinates(ip, params.a, X, y, steps=1, width=64, b=1.0, method="dense")
    assert methods.DEFAULT == "active" and "auto" not in methods.names()


def test_fit_coordinates_auto_is_sparse_and_exact():
    params, X, y = _problem(4, 512, 8)
    ip = _linalg.inner(X, params.W)
    c, h = train.fit_coordinates(ip, params.a, X, y, steps=4, width=512, b=1.0, method="auto")
    assert methods.get(h.method).sparse and set(h.choice.predictions) == {"active", "dtree", "wtree"}
    assert h.method_reason.startswith(h.method + ": predicted")
    c2, h2 = train.fit_coordinates(ip, params.a, X, y, steps=4, width=512, b=1.0, method=h.method)
    assert np.array_equal(np.asarray(c.K), np.asarray(c2.K)) and np.array_equal(h.loss, h2.loss)


def test_auto_on_a_mesh_picks_among_the_sharded_methods():
    from jaxcorr import sharding

    params, X, y = _problem(8, 2**12, 8)
    mesh = jax.make_mesh((1,), ("points",))
    _, h = train.fit(params, X, y, steps=3, method="auto", mesh=mesh)
    assert set(h.choice.predictions) == set(sharding.SHARDED_METHODS) and h.method in sharding.SHARDED_METHODS
