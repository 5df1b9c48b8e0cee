"""The span-defined model as a whole (issue 27): checkpoints, resuming from K or W, predict on new
points, and its memory estimate.

Tolerances are fixed here, before any run: a resumed run equals the uninterrupted one within 1e-12
relative in float64 (the resumed run's Gram matrix is C C^T, not X X^T: rounding only); the streamed
predict equals nn.predict on the materialised trained W within 1e-9 relative in float64; rows
restored from a checkpoint equal the original's bit for bit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import checkpoint, data, evaluation, memory, nn, span_init, train
from jaxcorr.errors import CheckpointError

RESUME_TOL = 1e-12
PREDICT_TOL = 1e-9
GIB = 2**30
#: One optimizer object per path, shared by every test (compiled chunks are reused across tests).
OPTS = {"span": train.sgd(0.5, momentum=0.9), "rows": optax.adam(0.01)}


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(scope="module")
def setup64():
    """A float64 span-defined network of width 2^11 on n = 4 points in R^6."""
    with jax.enable_x64(True):
        X, y = data.synthetic(seed=3, n=4, d=6, dtype=jnp.float64)
        spec, act = span_init.build(jax.random.key(5), X, 1 << 11, dtype=jnp.float64)
    return X, y, spec, act


@pytest.fixture(scope="module")
def runs(setup64):
    """Per path: 4 steps and 10 steps from W(0) (span path: sgd with momentum; row path: adam)."""
    X, y, spec, act = setup64
    with jax.enable_x64(True):
        return {path: {steps: span_init.fit(spec, act, X, y, steps=steps, optimizer=opt) for steps in (4, 10)}
                for path, opt in OPTS.items()}


def _coef(t: span_init.SpanTrained):
    return t.K if t.K is not None else t.W


def _off_span(d: int, count: int = 6) -> np.ndarray:
    """Unit points in general position: not in span X (k < d), and some at larger norms (more rows fire)."""
    Xn = np.random.default_rng(11).standard_normal((count, d))
    return Xn / np.linalg.norm(Xn, axis=1, keepdims=True) * np.linspace(0.8, 1.6, count)[:, None]


# ----------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("path", ["span", "rows"])
def test_resume_equals_uninterrupted_and_through_a_checkpoint(setup64, runs, tmp_path, path):
    """fit(10) == fit(4) then fit(6, start=...), directly, after a checkpoint round trip with the
    optimizer, and with the flat state a restore without it gives (span path: K; row path: W)."""
    X, y, spec, act = setup64
    opt, opt_name = OPTS[path], path
    with jax.enable_x64(True):
        (full, h10), (part, h4) = runs[path][10], runs[path][4]
        assert full.path == part.path == path
        rest, h6 = span_init.fit(spec, act, X, y, steps=6, optimizer=opt, start=part)
        assert _rel(_coef(rest), _coef(full)) <= RESUME_TOL
        assert _rel(np.concatenate([h4.loss, h6.loss]), h10.loss) <= RESUME_TOL
        assert h10.loss[-1] < h10.loss[0]  # it trains: the comparison is not between zeros
        path = tmp_path / "run.ckpt"
        assert checkpoint.save(path, span_init.SpanModel(spec, act, part, X), X=X, y=y, step=4,
                               config={"optimizer": opt_name}) == "span"
        for with_opt in (opt, None):
            r = checkpoint.restore(path, X=X, y=y, optimizer=with_opt)
            assert (r.kind, r.init, r.step, r.config["optimizer"]) == ("span", "span", 4, opt_name)
            again, _ = span_init.fit(r.model.spec, r.model.active, X, y, steps=6, optimizer=opt,
                                     start=r.model.trained)
            assert _rel(_coef(again), _coef(full)) <= RESUME_TOL
        if path == "span":
            # the trace is restored, not reset: a fresh momentum would give another trajectory
            fresh = span_init.SpanTrained(part.idx, part.a, part.K, None, opt.init(part.K), part.b)
            other, _ = span_init.fit(spec, act, X, y, steps=6, optimizer=opt, start=fresh)
            assert _rel(other.K, full.K) > 1e-6


def test_resume_bad_input(setup64):
    X, y, spec, act = setup64
    with jax.enable_x64(True):
        part = span_init.SpanTrained(act.idx, jnp.ones(act.n_active), jnp.zeros((act.n_active, spec.n)), None,
                                     OPTS["span"].init(jnp.zeros((act.n_active, spec.n))))
        other = span_init.SpanTrained(part.idx[1:], part.a[1:], part.K[1:], None, part.opt_state)
        for start, opt, match in ((other, None, "held rows"), ("x", None, "SpanTrained"),
                                  (part, OPTS["rows"], "train.sgd"),
                                  (part, train.sgd(1.0), "opt_state does not match")):
            with pytest.raises(ValueError, match=match):
                span_init.fit(spec, act, X, y, steps=1, optimizer=opt, start=start)


# ----------------------------------------------------------------------------------- checkpoints
def test_checkpoint_rebuilds_the_same_rows_bit_for_bit(setup64, runs, tmp_path):
    """The restored definition (stored U, C, beta, key) gives the original's rows, trained network
    and predictions bit for bit; a basis recomputed from other-ordered points would not."""
    X, y, spec, act = setup64
    with jax.enable_x64(True):
        trained = runs["span"][4][0]
        model = span_init.SpanModel(spec, act, trained, X)
        path = tmp_path / "m.ckpt"
        checkpoint.save(path, model, X=X, y=y, step=4)
        assert checkpoint.kind(path) == "span" and checkpoint.read_meta(path)["init"] == "span"
        r = checkpoint.restore(path, X=X, y=y, optimizer=OPTS["span"])
        got = r.model
        for name in ("U", "C", "beta", "key_data", "seeds"):
            assert np.array_equal(getattr(got.spec, name), getattr(spec, name)), name
        assert (got.spec.m, got.spec.b, got.spec.mode, got.spec.q) == (spec.m, spec.b, spec.mode, spec.q)
        assert np.array_equal(got.active.idx, act.idx) and np.array_equal(np.asarray(got.active.G), np.asarray(act.G))
        assert got.trained.b == trained.b and np.array_equal(np.asarray(got.trained.a), np.asarray(trained.a))
        for a_, b_ in ((got.params(), model.params()), (span_init.materialize(got.spec, got.active, dtype=jnp.float64),
                                                          span_init.materialize(spec, act, dtype=jnp.float64))):
            assert np.array_equal(np.asarray(a_.W), np.asarray(b_.W)) and np.array_equal(np.asarray(a_.a),
                                                                                         np.asarray(b_.a))
        Xn = _off_span(spec.d)
        assert np.array_equal(np.asarray(got.predict(Xn, block=700)), np.asarray(model.predict(Xn, block=700)))
        # the basis matters: the same key on the same points in another order draws other rows
        perm = span_init.define(jax.random.key(5), np.asarray(X)[::-1], spec.m)
        assert not np.array_equal(perm.U, spec.U)


def test_untrained_and_row_path_models_round_trip(setup64, runs, tmp_path):
    X, y, spec, act = setup64
    with jax.enable_x64(True):
        for trained in (None, runs["rows"][4][0]):
            model = span_init.SpanModel(spec, act, trained, X)
            path = tmp_path / f"{model.path}.ckpt"
            checkpoint.save(path, model, X=X, y=y, step=0 if trained is None else 4)
            got = checkpoint.restore(path).model
            assert got.path == model.path and np.array_equal(np.asarray(got.params().W), np.asarray(model.params().W))
            if trained is not None:
                assert len(checkpoint.restore(path).opt_state) == len(jax.tree_util.tree_leaves(trained.opt_state))


def test_checkpoint_refusals_and_older_forms(setup64, runs, tmp_path):
    X, y, spec, act = setup64
    with jax.enable_x64(True):
        trained = runs["span"][4][0]
        model = span_init.SpanModel(spec, act, trained, X)
        path = tmp_path / "m.ckpt"
        with pytest.raises(ValueError, match="span"):
            checkpoint.save(path, model, X=X, y=y, form="full")
        with pytest.raises(ValueError, match="training points"):
            checkpoint.save(path, model, X=np.asarray(X) + 1.0, y=y)
        with pytest.raises(ValueError, match="SpanModel"):
            checkpoint.save(path, nn.init(jax.random.key(0), 8, 6), X=X, y=y, form="span")
        checkpoint.save(path, model, X=X, y=y, step=1)
        with pytest.raises(CheckpointError, match="other data"):
            checkpoint.restore(path, X=X, y=np.asarray(y) + 1.0)
        with pytest.raises(CheckpointError, match="optimizer state"):
            checkpoint.restore(path, optimizer=train.sgd(1.0))  # saved with momentum: one trace array
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        (tmp_path / "bad.ckpt").write_bytes(bytes(raw))
        with pytest.raises(CheckpointError):
            checkpoint.restore(tmp_path / "bad.ckpt")
    older = tmp_path / "full.ckpt"  # every earlier form still loads, and says its definition is rows
    checkpoint.save(older, nn.init(jax.random.key(0), 16, 3), X=np.ones((2, 3)), y=np.ones(2), step=2)
    r = checkpoint.restore(older)
    assert (r.kind, r.init, r.step) == ("full", "rows", 2)


# ----------------------------------------------------------------------------------- predict
@pytest.mark.parametrize("path", ["init", "span", "rows"])
def test_predict_streamed_equals_materialized(setup64, runs, path):
    """Off span X the rows outside A fire too: the streamed predict equals nn.predict on the
    materialised trained W (small m) within 1e-9, for any block size; on the training points the
    held rows alone give it (the margin), and evaluation.evaluate goes through the same."""
    X, y, spec, act = setup64
    with jax.enable_x64(True):
        trained = None if path == "init" else runs[path][4][0]
        model = span_init.SpanModel(spec, act, trained, X)
        assert model.path == path
        P = model.params()
        Xn = _off_span(spec.d)
        ip = np.asarray(Xn) @ np.asarray(P.W).T
        outside = np.setdiff1d(np.arange(spec.m), act.idx)
        assert (ip[:, outside] > model.b).any()  # the test is not vacuous: rows outside A fire off span X
        ref = nn.predict(P, jnp.asarray(Xn), model.b)
        got = model.predict(Xn, block=700)
        assert got.dtype == jnp.float64 and _rel(got, ref) <= PREDICT_TOL
        if path == "span":  # another block size: other blocks, the same sums to rounding
            assert _rel(span_init.predict(spec, act, trained, X, Xn[:2], block=1 << 11), ref[:2]) <= PREDICT_TOL
        on = model.predict(np.asarray(X))
        assert _rel(on, nn.predict(P, X, model.b)) <= PREDICT_TOL
        e = evaluation.evaluate(model, Xn, np.ones(Xn.shape[0]))
        assert math.isclose(e.loss_sum, 0.5 * float(np.sum((np.asarray(ref) - 1) ** 2)), rel_tol=1e-9)


def test_predict_full_draw_and_float32():
    """q >= 1 (the full draw): every row outside A is a full-draw row; float32 keeps its dtype."""
    X = np.asarray(data.synthetic(seed=4, n=8, d=10)[0], np.float64)
    spec, act = span_init.build(jax.random.key(1), X, 1500, 0.5)
    assert spec.mode == "full"
    model = span_init.SpanModel(spec, act, None, X)
    Xn = _off_span(spec.d, 3)
    got = model.predict(Xn, block=512)
    assert got.dtype == jnp.float32
    assert _rel(got, nn.predict(model.params(), jnp.asarray(Xn, jnp.float32), spec.b)) <= 1e-5
    with pytest.raises(ValueError, match="X_new"):
        model.predict(Xn[:, :3])
    with pytest.raises(ValueError, match="X_train"):
        span_init.predict(spec, act, None, X + 1.0, Xn)


# ----------------------------------------------------------------------------------- memory
def test_memory_estimate_of_the_span_model():
    """2^32, n = 8, d = 64, sgd: below 16 GiB and above the 10.6 GiB measured (docs/span_init.md);
    every measured peak of the table is covered; it scales with |A|, with no m d term."""
    measured = {22: 0.45, 26: 0.76, 28: 1.60, 30: 3.79, 32: 10.6}  # GiB, scripts/bench_span_init.py --train
    for logm, gib in measured.items():
        est = memory.estimate("active", n=8, m=2**logm, d=64, init="span")
        assert gib * GIB <= est.total <= 2.5 * gib * GIB + memory.BASE, (logm, est.total / GIB)
    big = memory.estimate("active", n=8, m=2**32, d=64, init="span")
    assert big.total < 16 * GIB and big.inputs["init"] == "span"
    rows = memory.estimate("active", n=8, m=2**32, d=64, wide=True)
    assert rows.total > big.total + 2**32 * 4  # the rows definition streams m d numbers; this one none
    wide_d = memory.estimate("active", n=8, m=2**32, d=4096, init="span")
    assert wide_d.total == big.total  # d enters only through k = min(n, d): no m d term
    half = memory.estimate("active", n=8, m=2**32, d=64, init="span", b=3.2)  # fewer held rows
    ratio = (half.total - memory.BASE) / (big.total - memory.BASE)
    assert 0.8 * half.n_active / big.n_active <= ratio <= 1.25 * half.n_active / big.n_active
    plan = memory.plan("active", n=8, m=2**32, d=64, init="span", available=(16 * GIB, "test"))
    assert plan.init == "span" and plan.wide
    with pytest.raises(Exception, match="span-defined model"):
        memory.check("active", n=8, m=2**32, d=64, init="span", available=(8 * GIB, "test"))
    with pytest.raises(ValueError, match="wide off"):
        memory.plan("active", n=8, m=2**20, d=64, init="span", wide="off", available=(16 * GIB, "test"))
    with pytest.raises(ValueError, match="init"):
        memory.estimate("active", n=8, m=2**20, d=64, init="x")
