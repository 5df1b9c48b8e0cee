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

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import data, nn, train
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
    }


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
        assert np.isfinite(hd["loss"]).all() and rel(pd.W, p.W) > 1e-6  # dense really trains
        for method in SPARSE:
            kw = dict(steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=STEPS)
            if expected == "refused":
                with pytest.raises(ValueError, match="method='dense' or fallback='dense'"):
                    train.fit(p, X, y, **kw)
                pf, hf = train.fit(p, X, y, fallback="dense", **kw)
                assert hf["fallback_step"] == 0
                np.testing.assert_array_equal(hf["loss"], hd["loss"])
                np.testing.assert_array_equal(pf.W, pd.W)
                continue
            ps, hs = train.fit(p, X, y, **kw)
            assert hs["fallback_step"] is None and hs["n_active"] < M, (method, hs["n_active"])
            assert rel(hs["loss"], hd["loss"]) <= 1e-9, (method, rel(hs["loss"], hd["loss"]))
            assert rel(ps.W, pd.W) <= 1e-9, method
            assert ps.W.dtype == jnp.float64
            for s, t in zip(jax.tree_util.tree_leaves(hs["opt_state"]), jax.tree_util.tree_leaves(hd["opt_state"])):
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
        with pytest.raises(ValueError, match="at step 3"):
            train.fit(p, X, y, **kw)
        pd, hd = train.fit(p, X, y, steps=STEPS, method="dense", optimizer=opt, b=B, chunk_size=2)
        pf, hf = train.fit(p, X, y, fallback="dense", **kw)
        assert hf["fallback_step"] == 2  # the start of the chunk holding step 3: an exact state
        assert "at step 3" in hf["capacity_events"][-1]["reason"]
        assert rel(hf["loss"], hd["loss"]) <= 1e-9 and rel(pf.W, pd.W) <= 1e-9


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
        assert h["loss"].shape == (2,)
    _, h = train.fit(p, X, y, steps=6, b=B, chunk_size=2, callback=lambda info: np.False_)
    assert h["loss"].shape == (6,)


def test_prng_key_state_dense_runs_and_sparse_refused():
    """optax.noisy_sgd keeps a typed PRNG key in its state and draws per-row noise: dense trains
    (the state-memory count reads the key's data), the sparse methods refuse it before any step."""
    X, y = data.synthetic(1, N, D)
    p = nn.init(jax.random.key(1), M, D)
    opt = optax.noisy_sgd(1e-2)
    _, h = train.fit(p, X, y, steps=2, method="dense", optimizer=opt, b=B)
    assert h["loss"].shape == (2,) and h["state_bytes"] > 0
    for method in SPARSE:
        with pytest.raises(ValueError, match=method):
            train.fit(p, X, y, steps=2, method=method, optimizer=opt, b=B)
