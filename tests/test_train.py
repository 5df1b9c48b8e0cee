# Over 500 lines: one concept, train.fit against its oracles (every method, optimizer, dtype and event).
"""Training (Algorithms 8 and 9, Theorems 4.1 and 4.2) against dense GD and a numpy float64 oracle.

Every method must follow the dense trajectory: losses within 2e-4 relative in float32 and 1e-9 in
float64 over 25 steps, for optax.sgd, optax.sgd(momentum=0.9) and optax.adam.
Sizes are small and shared between tests so the compiled chunk runners are reused.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import data, errors, maxtree, nn, optimizers, train

M, N, D, B = 512, 6, 5, 1.2
STEPS, CHUNK = 25, 5
SEED = 0
ADAMW = optax.adamw(0.01, weight_decay=0.1)

OPTIMIZERS = {
    "sgd": (train.sgd(2.0), ("sgd", 2.0)),
    "momentum": (train.sgd(0.5, momentum=0.9), ("momentum", 0.5)),
    "adam": (optax.adam(0.05), ("adam", 0.05)),
}


def problem(dtype=jnp.float32):
    X, y = data.synthetic(SEED, N, D, dtype=dtype)
    p = nn.init(jax.random.key(SEED), M, D, dtype=dtype)
    return p, X, y


def reference_fit(W, a, X, y, b, steps, opt):
    """Independent float64 numpy GD on Definition 2.1 (optax semantics for sgd / momentum / adam)."""
    W, a, X, y = (np.asarray(v, np.float64) for v in (W, a, X, y))
    kind, lr = opt
    m = W.shape[0]
    mu, nu = np.zeros_like(W), np.zeros_like(W)
    losses, fires = [], []
    for t in range(steps):
        ip = X @ W.T
        fire = ip > b
        e = np.where(fire, ip - b, 0) @ a / math.sqrt(m) - y
        losses.append(0.5 * np.sum(e * e))
        fires.append(fire.sum(1))
        g = (fire * a[None, :] * e[:, None]).T @ X / math.sqrt(m)  # Section 2 gradient
        if kind == "sgd":
            W = W - lr * g
        elif kind == "momentum":
            mu = g + 0.9 * mu
            W = W - lr * mu
        else:
            mu = 0.9 * mu + 0.1 * g
            nu = 0.999 * nu + 0.001 * g * g
            mh, nh = mu / (1 - 0.9 ** (t + 1)), nu / (1 - 0.999 ** (t + 1))
            W = W - lr * mh / (np.sqrt(nh) + 1e-8)
    return W, np.array(losses), np.array(fires)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


@pytest.fixture(scope="module")
def f32_runs():
    p, X, y = problem()
    out = {}
    for name, (opt, _) in OPTIMIZERS.items():
        for method in train.METHODS:
            out[name, method] = train.fit(p, X, y, steps=STEPS, method=method, optimizer=opt, b=B,
                                          chunk_size=CHUNK)
    return p, X, y, out


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_exact_float32(f32_runs, opt_name):
    p, X, y, runs = f32_runs
    W_ref, loss_ref, fire_ref = reference_fit(p.W, p.a, X, y, B, STEPS, OPTIMIZERS[opt_name][1])
    # the problem is non-trivial: some but not all neurons fire, the fire sets change, loss moves
    assert 0 < fire_ref.min() and fire_ref.max() < M
    assert len({tuple(f) for f in fire_ref}) > 1
    assert loss_ref[-1] < 0.9 * loss_ref[0]
    dense = runs[opt_name, "dense"][1]
    for method in train.METHODS:
        params, h = runs[opt_name, method]
        assert h.loss.shape == (STEPS,) and h.method == method
        assert rel(h.loss, loss_ref) <= 2e-4, method
        assert rel(h.loss, dense.loss) <= 2e-4, method
        np.testing.assert_allclose(params.W, W_ref, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(h.fire_mean, fire_ref.mean(1))
        np.testing.assert_array_equal(h.fire_max, fire_ref.max(1))
        np.testing.assert_array_equal(h.fire_union, dense.fire_union)
        assert params.W.dtype == jnp.float32 and params.a is p.a
        full_state = jax.tree_util.tree_leaves(h.opt_state)
        dense_state = jax.tree_util.tree_leaves(dense.opt_state)
        for s, t in zip(full_state, dense_state):
            assert s.shape == t.shape
            np.testing.assert_allclose(s, t, rtol=2e-3, atol=2e-4)
    assert runs["sgd", "dtree"][1].span and runs["momentum", "wtree"][1].span
    assert runs["sgd", "active"][1].span and runs["momentum", "active"][1].span
    assert not runs["adam", "dtree"][1].span  # adam is not linear: the generic (W_A) path


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_exact_float64(opt_name):
    opt_f = {"sgd": lambda: train.sgd(2.0), "momentum": lambda: train.sgd(0.5, momentum=0.9),
             "adam": lambda: optax.adam(0.05)}[opt_name]
    with jax.enable_x64(True):
        p, X, y = problem(jnp.float64)
        _, loss_ref, _ = reference_fit(p.W, p.a, X, y, B, STEPS, OPTIMIZERS[opt_name][1])
        opt = opt_f()
        for method in train.METHODS:
            params, h = train.fit(p, X, y, steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=STEPS)
            assert params.W.dtype == jnp.float64 and h.loss.dtype == np.float64
            assert rel(h.loss, loss_ref) <= 1e-9, method


def test_overflow_grows_capacity_and_stays_exact():
    # b high, so k_i(0) is small and the capacity is sized small; a large step then grows fire sets.
    p, X, y = problem()
    b, opt, ref_opt = 1.3, optax.sgd(100.0), ("sgd", 100.0)
    _, loss_ref, fire_ref = reference_fit(p.W, p.a, X, y, b, 12, ref_opt)
    assert fire_ref.max() > 1.5 * fire_ref[0].max()  # the fire sets really grow
    params, h = train.fit(p, X, y, steps=12, method="dtree", optimizer=opt, b=b, chunk_size=6)
    over = [e for e in h.events if isinstance(e, train.CapacityGrown)]
    assert over, h.events
    assert isinstance(h.events[0], train.InitialCapacity) and h.events[0].capacity == over[0].old
    assert all(e.new > e.old for e in over)
    # the dict view of earlier releases
    assert [d["new_capacity"] for d in h.capacity_events] == [h.events[0].capacity] + [e.new for e in over]
    assert all(d["reason"].startswith("overflow") for d in h.capacity_events[1:])
    assert rel(h.loss, loss_ref) <= 2e-4
    np.testing.assert_array_equal(h.fire_max, fire_ref.max(1))


def test_active_fire_sets_grow_mid_run():
    # the same growing fire sets as the overflow test: active has no capacity, so no events, exact
    p, X, y = problem()
    b = 1.3
    _, loss_ref, fire_ref = reference_fit(p.W, p.a, X, y, b, 12, ("sgd", 100.0))
    assert fire_ref.max() > 1.5 * fire_ref[0].max()
    for opt in (train.sgd(100.0), optax.sgd(100.0)):  # span path and generic path
        params, h = train.fit(p, X, y, steps=12, method="active", optimizer=opt, b=b, chunk_size=6)
        assert h.events == [] and h.capacity_events == []
        assert rel(h.loss, loss_ref) <= 2e-4
        np.testing.assert_array_equal(h.fire_max, fire_ref.max(1))


def test_ddfn_cap_error_and_dense_fallback():
    p, X, y = problem()
    cap = train.ddfn_cap(M)
    assert cap == math.ceil(M**0.8) == 148
    b = -0.5  # about 69% of the neurons fire per point: beyond ceil(m^{4/5}) at once
    for method in ("active", "dtree", "wtree"):
        with pytest.raises(errors.DDFNCapExceeded, match=r"DDFN cap ceil\(m\^\(4/5\)\) = 148") as err:
            train.fit(p, X, y, steps=3, method=method, b=b)
        assert (err.value.step, err.value.cap, err.value.m) == (0, 148, M) and err.value.k > 148
    params, h = train.fit(p, X, y, steps=3, method="dtree", b=b, fallback="dense")
    params_d, h_d = train.fit(p, X, y, steps=3, method="dense", b=b)
    np.testing.assert_array_equal(h.loss, h_d.loss)
    np.testing.assert_array_equal(params.W, params_d.W)
    assert h.fallback_step == 0 and isinstance(h.events[-1], train.FellBackToDense)
    assert h.events[-1].step == 0 and "DDFN cap" in h.events[-1].reason
    assert h.capacity_events[-1]["reason"].startswith("fallback to dense")


def test_cap_exceeded_mid_run():
    # fire sets start below the cap and grow past it: error names the cap; fallback continues dense
    p, X, y = problem()
    b, opt = 0.8, optax.sgd(50.0)
    _, loss_ref, fire_ref = reference_fit(p.W, p.a, X, y, b, 6, ("sgd", 50.0))
    assert fire_ref[:2].max() <= 148 < fire_ref[2].max()
    for method in ("dtree", "active"):
        with pytest.raises(errors.DDFNCapExceeded, match="148") as err:
            train.fit(p, X, y, steps=6, method=method, optimizer=opt, b=b, chunk_size=2)
        assert err.value.step == 2 and err.value.k == fire_ref[2].max()
        ran: list = []  # the callback is told which method ran each chunk (a progress bar relabels on fallback)
        _, h = train.fit(p, X, y, steps=6, method=method, optimizer=opt, b=b, chunk_size=2, fallback="dense",
                         callback=lambda info, ran=ran: ran.append((info["step"], info["method"])))
        assert h.fallback_step == 2
        assert rel(h.loss, loss_ref) <= 2e-4
        assert ran[0] == (2, method) and ran[-1] == (6, "dense"), ran


def test_optimizer_that_moves_idle_rows_is_rejected():
    p, X, y = problem()
    opt = ADAMW  # weight decay moves rows with zero gradient
    with pytest.raises(errors.OptimizerRefused, match="method='dense'") as err:
        train.fit(p, X, y, steps=2, method="dtree", optimizer=opt, b=B)
    assert err.value.method == "dtree" and "weight decay" in err.value.reason
    _, h = train.fit(p, X, y, steps=2, method="wtree", optimizer=opt, b=B, fallback="dense")
    _, h_d = train.fit(p, X, y, steps=2, method="dense", optimizer=opt, b=B)
    np.testing.assert_array_equal(h.loss, h_d.loss)


def test_span_path_only_by_construction():
    """optax.sgd itself is not marked linear (never guessed): the generic path, same trajectory."""
    p, X, y = problem()
    _, h1 = train.fit(p, X, y, steps=5, method="active", optimizer=optax.sgd(2.0), b=B)
    _, h2 = train.fit(p, X, y, steps=5, method="active", optimizer=train.sgd(2.0), b=B)
    assert not h1.span and h2.span
    assert rel(h1.loss, h2.loss) <= 1e-5
    assert isinstance(train.sgd(0.1, momentum=0.9, nesterov=True), optax.GradientTransformation)
    for kw, msg in ((dict(learning_rate=-1.0), "learning_rate must be a finite float >= 0"),
                    (dict(learning_rate=0.1, momentum=float("nan")), "momentum must be"),
                    (dict(learning_rate=0.1, nesterov=True), "nesterov=True needs a momentum")):
        with pytest.raises(ValueError, match=msg):
            train.sgd(**kw)


@pytest.mark.parametrize("method", train.METHODS)
def test_resume_matches_single_run(method):
    p, X, y = problem()
    opt = OPTIMIZERS["momentum"][0]
    p1, h1 = train.fit(p, X, y, steps=10, method=method, optimizer=opt, b=B, chunk_size=CHUNK)
    p2, h2 = train.fit(p1, X, y, steps=15, method=method, optimizer=opt, b=B, chunk_size=CHUNK,
                       opt_state=h1.opt_state)
    p3, h3 = train.fit(p, X, y, steps=25, method=method, optimizer=opt, b=B, chunk_size=CHUNK)
    losses = np.concatenate([h1.loss, h2.loss])
    if method == "dense":  # bitwise
        np.testing.assert_array_equal(losses, h3.loss)
        np.testing.assert_array_equal(p2.W, p3.W)
    else:
        assert rel(losses, h3.loss) <= 1e-5
        np.testing.assert_allclose(p2.W, p3.W, rtol=1e-5, atol=1e-5)
    for s, t in zip(jax.tree_util.tree_leaves(h2.opt_state), jax.tree_util.tree_leaves(h3.opt_state)):
        np.testing.assert_allclose(s, t, rtol=1e-5, atol=1e-5)


def test_callback_stops_and_reports():
    p, X, y = problem()
    seen = []

    def cb(info):
        seen.append(info)
        return info["step"] >= 10

    params, h = train.fit(p, X, y, steps=STEPS, method="dtree", optimizer=OPTIMIZERS["sgd"][0], b=B,
                          chunk_size=CHUNK, callback=cb)
    assert [s["step"] for s in seen] == [5, 10]
    assert all(s["steps"] == STEPS and isinstance(s["loss"], float) and s["ms_per_step"] > 0 for s in seen)
    assert h.loss.shape == (10,) and h.fire_union.shape == (10,)
    assert seen[-1]["loss"] == pytest.approx(float(h.loss[-1]))


class CompileCounter:
    """Counts XLA backend compilations (``jax.monitoring``) inside a ``with`` block."""

    active = None

    def __init__(self):
        self.count = 0

    def __enter__(self):
        CompileCounter.active = self
        return self

    def __exit__(self, *exc):
        CompileCounter.active = None

    @classmethod
    def listener(cls, name, _dur, **_kw):
        if cls.active is not None and name == "/jax/core/compile/backend_compile_duration":
            cls.active.count += 1


jax.monitoring.register_event_duration_secs_listener(CompileCounter.listener)


def test_second_call_compiles_nothing():
    """jax.jit's own cache: a second fit with the same shapes compiles no program, set-up included."""
    p, X, y = problem()
    opt = OPTIMIZERS["sgd"][0]
    for method in train.METHODS:
        train.fit(p, X, y, steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=CHUNK)
        with CompileCounter() as cc:
            _, h = train.fit(p, X, y, steps=STEPS, method=method, optimizer=opt, b=B, chunk_size=CHUNK)
        assert cc.count == 0, f"{method}: the second call compiled {cc.count} programs"
        assert h.ms_per_step > 0 and h.setup_s >= 0
    # new values of the same shapes compile nothing either (for the sparse methods |A|, hence the
    # compacted shapes, depends on the data; bucketed by maxtree.bucket)
    X2, y2 = data.synthetic(SEED + 1, N, D)
    with CompileCounter() as cc:
        train.fit(p, X2, y2, steps=STEPS, method="dense", optimizer=opt, b=B, chunk_size=CHUNK)
    assert cc.count == 0, cc.count
    # the default optimizer is one object per learning rate, so it does not recompile either
    train.fit(p, X, y, steps=CHUNK, b=B, learning_rate=0.3)
    with CompileCounter() as cc:
        train.fit(p, X, y, steps=CHUNK, b=B, learning_rate=0.3)
    assert cc.count == 0, cc.count


@pytest.mark.parametrize("method", train.METHODS)
def test_setup_run_chunk_finalize_equals_fit(f32_runs, method):
    """The three public pieces, driven by hand, give fit's trajectory bitwise; the input survives."""
    p, X, y, runs = f32_runs
    opt = OPTIMIZERS["adam"][0]
    cfg, state = train.setup(p, X, y, method=method, optimizer=opt, b=B)
    assert isinstance(state, train.TrainState) and cfg.step.method == method
    assert cfg.n_active == (M if method == "dense" else runs["adam", method][1].n_active)
    hash(cfg)  # static: usable as a jit static argument
    losses = []
    for _ in range(STEPS // CHUNK):
        state, stats = train.run_chunk(cfg, state, CHUNK)
        assert isinstance(stats, train.StepStats) and not np.asarray(stats.overflow).any()
        losses.append(np.asarray(stats.loss))
    params, opt_state = train.finalize(cfg, state)
    p_fit, h_fit = runs["adam", method]
    np.testing.assert_array_equal(np.concatenate(losses), h_fit.loss)
    np.testing.assert_array_equal(params.W, p_fit.W)
    for s, t in zip(jax.tree_util.tree_leaves(opt_state), jax.tree_util.tree_leaves(h_fit.opt_state)):
        np.testing.assert_array_equal(s, t)
    # donation consumed the state, never the caller's arrays; finalize shares no buffer with state
    assert np.isfinite(np.asarray(p.W)).all() and np.isfinite(np.asarray(X)).all()
    train.run_chunk(cfg, state, 1)  # donates state's buffers
    np.testing.assert_array_equal(params.W, p_fit.W)  # finalize's result does not share them


def test_setup_errors_and_history_type():
    p, X, y = problem()
    with pytest.raises(ValueError, match="method='dense'"):
        train.setup(p, X, y, method="dtree", optimizer=ADAMW, b=B)
    with pytest.raises(ValueError, match="unknown method"):
        train.setup(p, X, y, method="sparse")
    _, h = train.fit(p, X, y, steps=3, method="dtree", b=B)
    assert isinstance(h, train.History) and h.method == "dtree" and h.shards is None
    with pytest.raises(TypeError):  # read by attribute only: no dict-style reads
        h["loss"]


def test_defaults_and_zero_steps():
    p, X, y = problem()
    params, h = train.fit(p, X, y, steps=0)
    assert h.loss.shape == (0,) and h.fire_mean.shape == (0,)
    assert h.b == pytest.approx(nn.default_threshold(M)) and h.method == "active"
    np.testing.assert_array_equal(params.W, p.W)
    assert jax.tree_util.tree_structure(h.opt_state) == jax.tree_util.tree_structure(
        optax.sgd(1.0).init(p.W))


def test_bad_inputs():
    p, X, y = problem()
    ok = dict(steps=2, b=B)
    cases = [
        (dict(X=X[:, :3]), "X must have d=5"),
        (dict(y=y[:3]), r"y must have shape \(n,\)"),
        (dict(X=X.at[0, 0].set(jnp.nan)), "X must be finite"),
        (dict(y=y.at[1].set(jnp.inf)), "y must be finite"),
        (dict(params=nn.Params(p.W.at[0, 0].set(jnp.nan), p.a)), "params.W must be finite"),
        (dict(params=nn.Params(p.W, p.a[:-1])), r"params.a must have shape"),
        (dict(params=nn.Params(p.W[0], p.a)), r"params.W must have shape \(m, d\)"),
        (dict(steps=-1), "steps must be >= 0"),
        (dict(steps=1.5), "steps must be an int"),
        (dict(method="sparse"), "unknown method 'sparse'"),
        (dict(b=float("nan")), "b must be finite"),
        (dict(b=jnp.ones(2)), "b must be a finite real scalar"),
        (dict(fallback="ignore"), "unknown fallback 'ignore'"),
        (dict(chunk_size=0), "chunk_size must be >= 1"),
        (dict(learning_rate=float("inf")), "learning_rate must be a finite float >= 0"),
        (dict(learning_rate=-0.5), "learning_rate must be a finite float >= 0"),
        (dict(steps=True), "steps must be an int"),
        (dict(opt_state=(optax.EmptyState(),)), "opt_state does not match"),
    ]
    for kw, msg in cases:
        args = dict(params=p, X=X, y=y, **ok)
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            train.fit(args.pop("params"), args.pop("X"), args.pop("y"), **args)


@pytest.mark.parametrize("method", train.METHODS)
def test_width_subnetwork_matches_full(method):
    """fit(width=m) on the rows that can fire equals training all m rows (the active-set invariant)."""
    X, y = data.synthetic(seed=3, n=4, d=8, dtype=jnp.float32)
    params = nn.init(jax.random.key(5), m=512, d=8)
    b = 1.0
    fires = np.asarray(nn.fire_mask(params, X, b)).any(axis=0)
    rows = np.flatnonzero(fires)
    sub = nn.Params(W=params.W[rows], a=params.a[rows])
    p_full, h_full = train.fit(params, X, y, steps=6, method=method, b=b)
    p_sub, h_sub = train.fit(sub, X, y, steps=6, method=method, b=b, width=512)
    np.testing.assert_allclose(h_sub.loss, h_full.loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p_sub.W), np.asarray(p_full.W)[rows], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        train.fit(sub, X, y, steps=1, method=method, b=b, width=len(rows) - 1)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["active", "dtree", "wtree"])
def test_held_rows_nearly_all_active_are_trained_in_place(method, opt_name):
    """Held rows of which a few do not fire at t = 0 (as jaxcorr.implicit keeps rows within float
    error of b): set-up takes every held row into A (no gathered copy, a slice at the end), and the
    run still equals training all m rows; the rows that never fire stay bit for bit W(0)."""
    X, y = data.synthetic(seed=3, n=4, d=8, dtype=jnp.float32)
    params = nn.init(jax.random.key(5), m=512, d=8)
    b = 1.0
    fires = np.asarray(nn.fire_mask(params, X, b)).any(axis=0)
    rows, idle = np.flatnonzero(fires), np.flatnonzero(~fires)
    assert idle.size >= 1
    held = np.sort(np.concatenate([rows, idle[:1]]))  # one held row that does not fire
    sub = nn.Params(W=params.W[held], a=params.a[held])
    opt = train.sgd(1.0) if opt_name == "sgd" else optax.adam(0.01)  # span path, generic path
    cfg, _ = train.setup(sub, X, y, method=method, b=b, width=512, optimizer=opt)
    assert cfg.identity, "nearly every held row is active: A should be all of them"
    p_full, h_full = train.fit(params, X, y, steps=6, method=method, b=b, optimizer=opt)
    p_sub, h_sub = train.fit(sub, X, y, steps=6, method=method, b=b, width=512, optimizer=opt)
    np.testing.assert_allclose(h_sub.loss, h_full.loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p_sub.W), np.asarray(p_full.W)[held], rtol=1e-5, atol=1e-6)
    k = int(np.searchsorted(held, idle[0]))
    np.testing.assert_array_equal(np.asarray(p_sub.W)[k], np.asarray(params.W)[idle[0]])


@pytest.mark.parametrize("method", ["active", "dtree", "wtree"])
def test_coefficients_continue_the_run_bit_for_bit(method):
    # history.coefficients (W[rows] = W_base[rows] + K X, the optimizer's state over K) carry a span-path
    # run on exactly: 4 + 4 steps through coefficients= equal 8 steps at once bit for bit (same chunk
    # lengths), for sgd, momentum and Nesterov; the rows outside `rows` are the base's; an oracle in float64
    # numpy rebuilds W from K. dtree: to rounding in general (the frontier capacity, re-allocated at
    # set-up from the current fire sets, sets the order of the forward sum), bit for bit here.
    X, y = data.synthetic(seed=0, n=6, d=8)
    p0 = nn.init(jax.random.key(1), 3000, 8)
    for opt in (train.sgd(1.0), train.sgd(0.3, momentum=0.9), train.sgd(0.3, momentum=0.9, nesterov=True)):
        whole, hw = train.fit(p0, X, y, steps=8, method=method, optimizer=opt, chunk_size=4)
        part, h1 = train.fit(p0, X, y, steps=4, method=method, optimizer=opt, chunk_size=4)
        c = h1.coefficients
        assert c.K.shape == (len(c.rows), 6) and len(c.rows) == h1.n_active < 3000
        K64, X64 = np.asarray(c.K, np.float64), np.asarray(X, np.float64)
        W64 = np.asarray(p0.W, np.float64).copy()
        W64[c.rows] += K64 @ X64
        np.testing.assert_allclose(np.asarray(part.W), W64, rtol=1e-6, atol=1e-6)
        outside = np.setdiff1d(np.arange(3000), c.rows)
        np.testing.assert_array_equal(np.asarray(part.W)[outside], np.asarray(p0.W)[outside])
        rest, h2 = train.fit(p0, X, y, steps=4, method=method, optimizer=opt, coefficients=c, chunk_size=4)
        np.testing.assert_array_equal(np.asarray(rest.W), np.asarray(whole.W))
        np.testing.assert_array_equal(h2.loss, hw.loss[4:])
        np.testing.assert_array_equal(np.asarray(h2.coefficients.K), np.asarray(hw.coefficients.K))
        again, h0 = train.fit(p0, X, y, steps=0, method=method, optimizer=opt, coefficients=c)
        np.testing.assert_array_equal(np.asarray(again.W), np.asarray(part.W))


def test_coefficients_are_refused_where_they_do_not_apply():
    X, y = data.synthetic(seed=0, n=4, d=8)
    p0 = nn.init(jax.random.key(1), 512, 8)
    opt = train.sgd(0.5)
    _, h = train.fit(p0, X, y, steps=2, optimizer=opt)
    c = h.coefficients
    assert train.fit(p0, X, y, steps=2, optimizer=optax.adam(1e-2))[1].coefficients is None
    assert train.fit(p0, X, y, steps=2, optimizer=opt, method="dense")[1].coefficients is None
    for kwargs, match in (({"method": "dense"}, "span-path"), ({"optimizer": optax.sgd(0.5)}, "span-path"),
                          ({"opt_state": opt.init(p0.W)}, "inside coefficients")):
        with pytest.raises(ValueError, match=match):
            train.fit(p0, X, y, steps=1, **{"optimizer": opt, **kwargs}, coefficients=c)
    bad = (c._replace(K=c.K[:, :3]), c._replace(rows=c.rows[::-1]), c._replace(opt_state=(optax.EmptyState(),)),
           c._replace(K=c.K.at[0, 0].set(jnp.nan)), (c.rows, c.K))
    for b_, match in zip(bad, ("shape", "sorted", "opt_state", "finite", "Coefficients")):
        with pytest.raises(ValueError, match=match):
            train.fit(p0, X, y, steps=1, optimizer=opt, coefficients=b_)


@pytest.mark.parametrize("n", [4, 128])
def test_dtree_fire_sets_as_mask_and_as_ids(n):
    # Algorithm 8's FIND gives the fire sets as a mask where its search tests every leaf at the
    # capacity (n = 4: about one active row in n fires, capacity >= |A| / 32) and as compacted leaf
    # ids where it prunes (n = 128, b = 2.9: capacity < |A| / 32); both against the float64 oracle.
    X, y = data.synthetic(SEED, n, 16)
    p = nn.init(jax.random.key(SEED), 16384, 16)
    b = float(nn.default_threshold(16384)) if n == 4 else 2.9
    cfg, _ = train.setup(p, X, y, method="dtree", b=b)
    assert maxtree.searches_every_leaf(cfg.L, cfg.step.capacity) == (n == 4)
    for opt_name in ("sgd", "adam"):
        opt, ref = OPTIMIZERS[opt_name]
        params, h = train.fit(p, X, y, steps=6, method="dtree", optimizer=opt, b=b)
        W_ref, loss_ref, fire_ref = reference_fit(p.W, p.a, X, y, b, 6, ref)
        assert rel(h.loss, loss_ref) <= 2e-4 and fire_ref.max() > 0
        np.testing.assert_array_equal(h.fire_max, fire_ref.max(1))
        np.testing.assert_allclose(params.W, W_ref, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("n", [8, 40])
def test_wtree_members_as_bit_mask_and_by_comparison(n):
    # Algorithm 9 derives S_{i,fire} from the WTree queries: for n <= 32 through one uint32 bit mask per
    # tree, for n > 32 by comparing slots with points; both against the float64 oracle.
    X, y = data.synthetic(SEED, n, 16)
    p = nn.init(jax.random.key(SEED), 8192, 16)
    b = float(nn.default_threshold(8192))
    params, h = train.fit(p, X, y, steps=5, method="wtree", optimizer=OPTIMIZERS["sgd"][0], b=b)
    W_ref, loss_ref, fire_ref = reference_fit(p.W, p.a, X, y, b, 5, OPTIMIZERS["sgd"][1])
    assert rel(h.loss, loss_ref) <= 2e-4 and fire_ref.max() > 0
    np.testing.assert_array_equal(h.fire_max, fire_ref.max(1))
    np.testing.assert_allclose(h.fire_mean, fire_ref.mean(1))
    np.testing.assert_allclose(params.W, W_ref, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("method", ["active", "wtree"])
def test_coefficients_refuse_params_that_are_not_their_base(method):
    """fit(trained, coefficients=h.coefficients) would add K X twice: refused by the base's
    fingerprint; the starting params continue exactly (sgd and momentum)."""
    X, y = data.synthetic(seed=0, n=4, d=8)
    p0 = nn.init(jax.random.key(1), 512, 8)
    for opt in (train.sgd(0.5), train.sgd(0.3, momentum=0.9)):
        trained, h = train.fit(p0, X, y, steps=3, method=method, optimizer=opt)
        c = h.coefficients
        assert c.base_digest is not None and c.base_digest.shape == (2,)
        with pytest.raises(ValueError, match="relative to the rows the run started from"):
            train.fit(trained, X, y, steps=3, method=method, optimizer=opt, coefficients=c)
        one_row = p0._replace(W=p0.W.at[int(c.rows[-1]), 0].add(1e-3))  # one base row off
        with pytest.raises(ValueError, match="K X twice"):
            train.fit(one_row, X, y, steps=3, method=method, optimizer=opt, coefficients=c)
        whole, hw = train.fit(p0, X, y, steps=6, method=method, optimizer=opt, chunk_size=3)
        rest, h2 = train.fit(p0, X, y, steps=3, method=method, optimizer=opt, coefficients=c, chunk_size=3)
        np.testing.assert_allclose(np.asarray(rest.W), np.asarray(whole.W), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(h2.coefficients.base_digest, c.base_digest)


def test_coefficients_of_a_run_where_nothing_fires():
    X, y = data.synthetic(seed=0, n=4, d=8)
    p0 = nn.init(jax.random.key(1), 256, 8)
    for x64 in (False, True):
        with jax.enable_x64(x64):
            p = p0._replace(W=jnp.asarray(p0.W, jnp.float64 if x64 else jnp.float32))
            _, h = train.fit(p, X, y, steps=2, b=10.0)  # no neuron fires: A is empty
            assert h.coefficients.rows.size == 0 and h.coefficients.base_digest.shape == (2,)
            rest, _ = train.fit(p, X, y, steps=2, b=10.0, coefficients=h.coefficients)
            np.testing.assert_array_equal(np.asarray(rest.W), np.asarray(p.W))


def test_loss_rising_warns_and_is_recorded():
    X, y = data.synthetic(seed=0, n=4, d=8)
    p = nn.init(jax.random.key(0), 256, 8)
    with pytest.warns(UserWarning, match="loss rose"):
        _, h = train.fit(p, X, y, steps=4, b=1.0, optimizer=optax.sgd(-0.5))  # ascent
    assert h.loss_rose and h.loss[-1] > h.loss[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, h = train.fit(p, X, y, steps=4, b=1.0)
    assert not h.loss_rose


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_each_optimizer_default_rate_decreases_the_loss(name):
    """The optimizer table's own default rate (what the CLI uses for --optimizer NAME without --lr)
    trains the default synthetic problem downwards, without the loss-rose warning."""
    X, y = data.synthetic(seed=0, n=8, d=64)
    p = nn.init(jax.random.key(0), 4096, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _, h = train.fit(p, X, y, steps=100, optimizer=optimizers.make(name))
    assert h.loss[-1] < 0.5 * h.loss[0] and not h.loss_rose
    assert optimizers.default_learning_rate(name) == optimizers.spec(name).learning_rate
