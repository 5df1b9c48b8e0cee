"""Every optax optimizer is exact on the compacted methods, or refused.

The matrix runs, in float64, each optimizer with ``method="dense"`` and with every sparse method
(``active``, ``dtree``, ``wtree``): the losses and the final ``W`` and optimizer state must equal
dense within 1e-9 relative, or ``fit`` must raise ``ValueError`` before any step. Which of the two
is fixed per optimizer below (a test that accepted either would accept anything): the optimizers
that move a row whose gradient and state are zero (weight decay, also switched on late by a
schedule), or that couple rows (sm3's max over rows, adafactor's means over rows and parameter
scale, LAMB's per-tensor norms) are refused; everything else must be exact. ``fallback="dense"``
then equals dense. The idle-row guard (:mod:`jaxcorr.train._linearity`) is checked with an optimizer that
starts moving idle rows at step 3: the error names step 3; with the fallback the result equals
dense. Sizes are tiny (m = 128) and one chunk per run, so the matrix compiles little.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import data, errors, nn, train
from jaxcorr.train import _linearity

M, N, D, B, STEPS = 128, 5, 4, 1.4, 8
SPARSE = tuple(m for m in train.METHODS if m != "dense")


def _late_decay(c):
    return jnp.where(c < 4, 0.0, 1e-2)


def _build():
    """name -> (optimizer factory, expected outcome on the sparse methods)."""
    return {
        "sgd": (lambda: optax.sgd(0.5), "exact"),
        "jaxcorr_sgd": (lambda: train.sgd(0.5), "exact"),
        "momentum": (lambda: optax.sgd(0.2, momentum=0.9), "exact"),
        "jaxcorr_momentum_schedule": (lambda: train.sgd(optax.exponential_decay(0.3, 3, 0.5), momentum=0.9),
                                      "exact"),
        "nesterov": (lambda: optax.sgd(0.2, momentum=0.9, nesterov=True), "exact"),
        "adam": (lambda: optax.adam(0.05), "exact"),
        "radam": (lambda: optax.radam(0.05), "exact"),
        "rmsprop": (lambda: optax.rmsprop(0.02), "exact"),
        "adagrad": (lambda: optax.adagrad(0.1), "exact"),  # accumulators start at 0.1: idle reference
        "multisteps_adam": (lambda: optax.MultiSteps(optax.adam(0.05), every_k_schedule=3), "exact"),
        "clip": (lambda: optax.chain(optax.clip(0.05), optax.sgd(1.0)), "exact"),
        "clip_by_global_norm": (lambda: optax.chain(optax.clip_by_global_norm(0.05), optax.sgd(1.0)), "exact"),
        "bf16_accumulator": (lambda: optax.sgd(0.2, momentum=0.9, accumulator_dtype=jnp.bfloat16), "exact"),
        "adamw": (lambda: optax.adamw(0.05, weight_decay=0.1), "refused"),
        "multisteps_adamw": (lambda: optax.MultiSteps(optax.adamw(0.05, weight_decay=0.1), 3), "refused"),
        "late_decay": (lambda: optax.adamw(_late_decay, weight_decay=0.1), "refused"),
        "adafactor": (lambda: optax.adafactor(0.05), "refused"),
        "sm3": (lambda: optax.sm3(0.1), "refused"),
        "lamb": (lambda: optax.lamb(0.05), "refused"),
        # a non-zero constant inside a sum over rows: dense sums it over m rows, the compacted
        # methods over |A| + padding, so each is coupled (refused); outside the sum it is exact
        "norm_eps_in_max": (lambda: _scaled(lambda g: jnp.sum(jnp.maximum(g * g, 1e-6)), root=True), "refused"),
        "norm_eps_in_add": (lambda: _scaled(lambda g: jnp.sum(g * g + 1e-6), root=True), "refused"),
        "norm_eps_in_clip": (lambda: _scaled(lambda g: jnp.sum(jnp.clip(g * g, 1e-6, 1e6)), root=True), "refused"),
        "abs_sum_minus_const": (lambda: _scaled(lambda g: 1.0 + jnp.sum(jnp.abs(g) - 1e-3) ** 2), "refused"),
        "const_array_in_sum": (lambda: _scaled(lambda g: jnp.sum(g * g + jnp.full(g.shape[1:], 1e-6, g.dtype)),
                                               root=True), "refused"),
        "row_sums_max_const": (lambda: _scaled(lambda g: jnp.sum(jnp.maximum(jnp.sum(g * g, axis=1), 1e-6)),
                                               root=True), "refused"),
        "norm_eps_outside": (lambda: _scaled(lambda g: jnp.sqrt(jnp.sum(g * g)) + 1e-6), "exact"),
        "hand_global_norm_clip": (lambda: _hand_clip(0.05), "exact"),
    }


def _scaled(denominator, root=False, lr=0.05):
    """``-lr * g / denominator(g)`` (``sqrt`` of it with ``root``): a hand-written normalised step."""
    def init(params):
        return optax.EmptyState()

    def update(g, state, params=None):
        den = denominator(g)
        return -lr * g / (jnp.sqrt(den) if root else den), state

    return optax.GradientTransformation(init, update)


def _hand_clip(max_norm, lr=1.0):
    """clip_by_global_norm written by hand, the eps outside the sum: exact on the compacted rows."""
    def init(params):
        return optax.EmptyState()

    def update(g, state, params=None):
        norm = jnp.sqrt(jnp.sum(g * g))
        return -lr * g * jnp.minimum(1.0, max_norm / (norm + 1e-12)), state

    return optax.GradientTransformation(init, update)


OPTS = _build()


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def f64():
    with jax.enable_x64(True):
        X, y = data.synthetic(1, N, D, dtype=jnp.float64)
        p = nn.init(jax.random.key(1), M, D, dtype=jnp.float64)
        fire = np.asarray(nn.fire_mask(p, X, B))
        assert 0 < fire.any(axis=0).sum() < M // 2  # many idle rows: the compaction is real
        yield p, X, y


@pytest.mark.parametrize("name", list(OPTS))
def test_matrix_exact_or_refused(f64, name):
    p, X, y = f64
    make, expected = OPTS[name]
    with jax.enable_x64(True):
        opt = make()
        pd, hd = train.fit(p, X, y, steps=STEPS, method="dense", optimizer=opt, b=B, chunk_size=STEPS)
        assert np.isfinite(hd.loss).all() and rel(pd.W, p.W) > 1e-6  # dense really trains
        for method in SPARSE:
            kw = dict(steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=STEPS)
            if expected == "refused":
                with pytest.raises(errors.OptimizerRefused, match="method='dense' or fallback='dense'") as err:
                    train.fit(p, X, y, **kw)
                assert err.value.method == method and err.value.reason
                pf, hf = train.fit(p, X, y, fallback="dense", **kw)
                assert hf.fallback_step == 0
                np.testing.assert_array_equal(hf.loss, hd.loss)
                np.testing.assert_array_equal(pf.W, pd.W)
                continue
            ps, hs = train.fit(p, X, y, **kw)
            assert hs.fallback_step is None and hs.n_active < M, (method, hs.n_active)
            assert rel(hs.loss, hd.loss) <= 1e-9, (method, rel(hs.loss, hd.loss))
            assert rel(ps.W, pd.W) <= 1e-9, method
            assert ps.W.dtype == jnp.float64
            for s, t in zip(jax.tree_util.tree_leaves(hs.opt_state), jax.tree_util.tree_leaves(hd.opt_state)):
                assert s.dtype == t.dtype and s.shape == t.shape, (method, s.dtype, t.dtype)
                tol = 1e-2 if s.dtype == jnp.bfloat16 else 1e-9  # bf16 rounds the same sums differently
                assert rel(s, t) <= tol, (method, rel(s, t))


def _moves_idle_rows_from(step):
    """sgd plus a constant 1e-3 on every coordinate from ``step`` on: idle rows move then."""
    base = optax.sgd(0.5)

    def init(params):
        return (jnp.zeros((), jnp.int32), base.init(params))

    def update(g, state, params=None):
        count, inner = state
        u, inner = base.update(g, inner, params)
        return u + jnp.where(count >= step, 1e-3, 0.0).astype(u.dtype), (count + 1, inner)

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("method", SPARSE)
def test_idle_row_guard_catches_the_step(f64, method):
    p, X, y = f64
    with jax.enable_x64(True):
        opt = _moves_idle_rows_from(3)
        assert _linearity.analyze(opt, M, D, jnp.float64).ok  # uniform on idle rows: only the guard can tell
        kw = dict(steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=2)
        with pytest.raises(errors.IdleRowMoved, match="at step 3") as err:
            train.fit(p, X, y, **kw)
        assert err.value.step == 3
        pd, hd = train.fit(p, X, y, steps=STEPS, method="dense", optimizer=opt, b=B, chunk_size=2)
        pf, hf = train.fit(p, X, y, fallback="dense", **kw)
        assert hf.fallback_step == 2  # the start of the chunk holding step 3: an exact state
        assert "at step 3" in hf.capacity_events[-1]["reason"]
        assert rel(hf.loss, hd.loss) <= 1e-9 and rel(pf.W, pd.W) <= 1e-9


def test_analysis_verdicts():
    """The structural verdicts, independent of any run (the reasons name what was found)."""
    dt = jnp.float32
    ok = [optax.sgd(0.1), optax.adam(0.1), optax.nadam(0.1), optax.adamax(0.1), optax.amsgrad(0.1),
          optax.novograd(0.1), optax.chain(optax.adam(0.1), optax.clip_by_global_norm(1.0)),
          optax.adamw(0.1, weight_decay=0.0)]
    for opt in ok:
        v = _linearity.analyze(opt, M, D, dt)
        assert v.ok, v.reason
    bad = {"weight decay": optax.lion(0.1), "couples rows": optax.lars(0.1),
           "couples rows: random": optax.chain(optax.add_noise(0.1, 0.5, 0), optax.sgd(0.1)),
           "changes with the number of rows": optax.adafactor(0.1)}
    for why, opt in bad.items():
        v = _linearity.analyze(opt, M, D, dt)
        assert not v.ok and why.split(":")[0] in v.reason or why == "weight decay", (why, v.reason)
    assert _linearity.analyze(optax.sm3(0.1), M, D, dt).row_axes == (0, None, 0)  # (m,), (d,), (m, d) leaves
    assert "reduce_max" in _linearity.analyze(optax.sm3(0.1), M, D, dt).reason
    # adafactor factors its second moment only for dimensions >= 128: a different program on the
    # m = 256 rows of the dense run than on a few compacted rows, so it is refused for that too
    assert "number of rows" in _linearity.analyze(optax.adafactor(0.1, min_dim_size_to_factor=128), 256, 130, dt).reason
    assert _linearity.same_program(optax.adam(0.1), (7, 4096), D, dt)


def test_yogi_moves_idle_rows_and_is_caught():
    """optax.yogi starts its first moment at 1e-6, so dense moves every row: refused at step 0."""
    X, y = data.synthetic(1, N, D)
    p = nn.init(jax.random.key(1), M, D)
    with pytest.raises(ValueError, match="at step 0"):
        train.fit(p, X, y, steps=2, method="active", optimizer=optax.yogi(0.05), b=B)


def test_callback_truthy_values_stop():
    X, y = data.synthetic(1, N, D)
    p = nn.init(jax.random.key(1), M, D)
    for ret in (np.True_, jnp.asarray(True), 1):
        _, h = train.fit(p, X, y, steps=6, b=B, chunk_size=2, callback=lambda info, r=ret: r)
        assert h.loss.shape == (2,)
    _, h = train.fit(p, X, y, steps=6, b=B, chunk_size=2, callback=lambda info: np.False_)
    assert h.loss.shape == (6,)


def test_prng_key_state_dense_runs_and_sparse_refused():
    """optax.noisy_sgd keeps a typed PRNG key in its state and draws per-row noise: dense trains
    (the state-memory count reads the key's data), the sparse methods refuse it before any step."""
    X, y = data.synthetic(1, N, D)
    p = nn.init(jax.random.key(1), M, D)
    opt = optax.noisy_sgd(1e-2)
    _, h = train.fit(p, X, y, steps=2, method="dense", optimizer=opt, b=B)
    assert h.loss.shape == (2,) and h.state_bytes > 0
    for method in SPARSE:
        with pytest.raises(ValueError, match=method):
            train.fit(p, X, y, steps=2, method=method, optimizer=opt, b=B)


def test_linear_optimizer_is_built_not_asserted(f64):
    """Only train.sgd makes a LinearOptimizer; one holding another optimizer's functions (made by
    _replace or tuple.__new__) is refused, so adam never takes the span path."""
    p, X, y = f64
    adam = optax.adam(0.05)
    with pytest.raises(TypeError, match="train.sgd"):
        train.LinearOptimizer(adam.init, adam.update)
    forged = [train.sgd(0.05)._replace(init=adam.init, update=adam.update),
              tuple.__new__(train.LinearOptimizer, (adam.init, adam.update)),
              train.sgd(0.05)._replace(update=adam.update)]
    with jax.enable_x64(True):
        for opt in forged:
            assert isinstance(opt, train.LinearOptimizer)
            with pytest.raises(ValueError, match="did not build"):
                train.fit(p, X, y, steps=2, method="active", optimizer=opt, b=B)
        real = train.sgd(0.05, momentum=0.9)
        assert copy.deepcopy(real) is real
        _, h = train.fit(p, X, y, steps=2, method="active", optimizer=real, b=B)
        assert h.span


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}])
def test_sgd_refuses_non_scalar_rates(kw):
    bad = [np.ones(1), np.full(D, 0.1), jnp.full(N, 0.1), lambda t: 0.1 * jnp.ones(D), lambda t: jnp.full((N,), 0.1),
           lambda t: jnp.full((1,), 0.1)]
    for lr in bad:
        with pytest.raises(ValueError, match="learning_rate must be a scalar"):
            train.sgd(lr, **kw)
    assert isinstance(train.sgd(optax.exponential_decay(0.3, 3, 0.5), **kw), train.LinearOptimizer)
    X, y = data.synthetic(1, N, D)
    p = nn.init(jax.random.key(1), M, D)
    with pytest.raises(ValueError, match="learning_rate must be a scalar"):
        train.fit(p, X, y, steps=2, learning_rate=np.full(D, 0.1), b=B)


def test_rates_overflowing_the_dtype_are_refused():
    X, y = data.synthetic(1, N, D, dtype=jnp.float32)
    p = nn.init(jax.random.key(1), M, D, dtype=jnp.float32)
    for kw in ({"learning_rate": 1e39}, {"learning_rate": 1e308}, {"optimizer": train.sgd(1e39)},
               {"optimizer": train.sgd(0.1, momentum=1e39)}):
        with pytest.raises(ValueError, match=r"overflows the parameters' dtype float32 \(its largest finite value "
                                             r"is 3.40282e\+38\)"):
            train.fit(p, X, y, steps=2, b=B, **kw)
    with jax.enable_x64(True):
        p64 = nn.init(jax.random.key(1), M, D, dtype=jnp.float64)
        X64, y64 = data.synthetic(1, N, D, dtype=jnp.float64)
        with pytest.warns(UserWarning, match="loss rose"):
            _, h = train.fit(p64, X64, y64, steps=2, b=B, learning_rate=1e308)  # representable in float64
        assert h.loss.dtype == np.float64 and h.loss_rose


@pytest.mark.parametrize("method", SPARSE)
def test_non_finite_rows_show_in_the_loss(method):
    """A step size that overflows the rows (finite in the dtype): the sparse loss goes non-finite at
    the step the dense one does, and stays so (a NaN row never fires, so without the check the loss
    of the rows still firing would look finite)."""
    X, y = data.synthetic(0, 4, 8, dtype=jnp.float32)
    p = nn.init(jax.random.key(0), 256, 8, dtype=jnp.float32)
    with pytest.warns(UserWarning, match="loss rose"):
        _, hd = train.fit(p, X, y, steps=6, method="dense", b=1.0, learning_rate=1e37)
        _, hs = train.fit(p, X, y, steps=6, method=method, b=1.0, learning_rate=1e37)
    first = int(np.argmin(np.isfinite(hd.loss)))
    assert first > 0 and not np.isfinite(hd.loss[first])
    assert np.isfinite(hs.loss[:first]).all() and not np.isfinite(hs.loss[first:]).any(), hs.loss


@pytest.mark.parametrize("name", ["norm_eps_in_max", "norm_eps_in_add", "const_array_in_sum"])
def test_guard_catches_a_sum_over_idle_rows_the_analysis_missed(f64, monkeypatch, name):
    """With the up-front analysis switched off, the run-time guard still sees that a sum over rows
    adds a non-zero summand from the idle (padding) rows: the step is refused, never kept."""
    p, X, y = f64
    real = _linearity.analyze

    def trusting(opt, m, d, dtype):
        v = real(opt, m, d, dtype)
        return v._replace(ok=True, reason="") if "couples rows" in v.reason else v

    monkeypatch.setattr(_linearity, "analyze", trusting)
    with jax.enable_x64(True):
        opt = OPTS[name][0]()
        for method in SPARSE:
            with pytest.raises(errors.IdleRowMoved, match="at step 0"):
                train.fit(p, X, y, steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=STEPS)
        good = OPTS["norm_eps_outside"][0]()
        _, hd = train.fit(p, X, y, steps=STEPS, method="dense", optimizer=good, b=B, chunk_size=STEPS)
        _, hs = train.fit(p, X, y, steps=STEPS, method="active", optimizer=good, b=B, chunk_size=STEPS)
        assert rel(hs.loss, hd.loss) <= 1e-9
