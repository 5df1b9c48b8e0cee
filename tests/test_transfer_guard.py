"""No implicit host traffic on the device paths (issue 25, item 1).

Every call below runs under ``jax.transfer_guard("disallow")``: its inputs are placed first with an
explicit ``jax.device_put``, its results are read with an explicit ``jax.device_get``, and any
transfer the library makes on its own (a Python scalar or numpy array handed to a jitted call, an
eager constant, ``np.asarray`` of a device array) raises. On the CPU backend the guard flags
host-to-device transfers; device-to-host reads of CPU arrays are zero-copy and not flagged there,
so ``scripts/device_check.py`` repeats the training checks on an accelerator.

Each test also checks the answer (against a run outside the guard or a numpy oracle), so a call
that did nothing cannot pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import data, ddfn, dtree, maxtree, nn, train, wtree


def guard():
    return jax.transfer_guard("disallow")


def _wide():
    """The wide model's module (the one place this file names it)."""
    from jaxcorr import wide as w

    return w


def put(*xs):
    return jax.device_put(xs if len(xs) > 1 else xs[0])


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    W = rng.integers(-3, 4, size=(70, 5)).astype(np.float32)
    X = rng.integers(-3, 4, size=(6, 5)).astype(np.float32)
    return W, X


def test_the_guard_is_on():
    """The guard catches what it should here: a Python scalar into a jitted call raises."""
    f = jax.jit(lambda x: x + 1)
    with guard(), pytest.raises(Exception, match="Disallowed host-to-device"):
        f(np.float32(1.0))


def test_maxtree_build_update_query(small):
    W, X = small
    vals = X @ W.T  # (6, 70)
    v, tau, t0 = put(vals, np.float32(2.5), np.int32(3))
    cols, new = put(np.array([4, 9, 4], np.int32), np.full((6, 3), 50.0, np.float32))
    rows, row_vals = put(np.array([1], np.int32), np.full((1, 70), -9.0, np.float32))
    with guard():
        tree = maxtree.build(v)
        outs = (maxtree.query(tree, t0, tau, 80), maxtree.query_all(tree, tau, 80),
                maxtree.query_forest(tree, tau, 512), maxtree.query_all_mask(tree, tau, 128),
                maxtree.query_reference(tree, t0, tau, 80), maxtree.query_forest_reference(tree, tau, 512))
        keep = maxtree.last_occurrence(cols)
        cols_kept = jax.jit(lambda k, c: jnp.where(k, c, tree.padded))(keep, cols)  # as dtree.update does
        updated = maxtree.set_rows(maxtree.set_leaves(tree, cols_kept, new), rows, row_vals)
        one, every, forest, mask, ref, forest_ref = jax.device_get(outs)
        leaves = jax.device_get(maxtree.leaves(updated))
    want = vals > 2.5
    assert sorted(one.indices[one.valid].tolist()) == np.flatnonzero(want[3]).tolist()
    assert [sorted(i[v].tolist()) for i, v in zip(every.indices,
                                                  every.valid)] == [np.flatnonzero(r).tolist() for r in want]
    assert forest.count == forest_ref.count == want.sum() and np.array_equal(mask[0], want)
    assert np.array_equal(ref.indices, one.indices)
    expect = vals.copy()
    expect[:, [4, 9]] = 50.0
    expect[1] = -9.0
    assert np.array_equal(leaves, expect) and maxtree.check_invariant(updated)


@pytest.mark.parametrize("mod", [dtree, wtree], ids=["dtree", "wtree"])
def test_correlation_trees_init_update_query(mod, small):
    W, X = small
    Wd, Xd, tau, r0 = put(W, X, np.float32(1.5), np.int32(2))
    r, Z = put(np.array([3, 8, 3], np.int32), np.ones((3, 5), np.float32))
    one_r, one_z = put(np.int32(11), np.full((5,), 2.0, np.float32))
    with guard():
        t = mod.init(Wd, Xd)
        t = mod.update(t, r, Z)
        t = mod.update(t, one_r, one_z, donate=True)
        q, qa = jax.device_get((mod.query(t, r0, tau, 80), mod.query_all(t, tau, 80)))
        ip = jax.device_get(mod.inner_products(t))
    W2 = W.copy()
    W2[[3, 8]] = 1.0
    W2[11] = 2.0
    want = X @ W2.T if mod is dtree else W2 @ X.T
    assert np.array_equal(ip, want)
    assert [sorted(i[v].tolist()) for i, v in zip(qa.indices,
                                                  qa.valid)] == [np.flatnonzero(row > 1.5).tolist() for row in want]
    assert sorted(q.indices[q.valid].tolist()) == np.flatnonzero(want[2] > 1.5).tolist()


def test_ddfn_init_update_query(small):
    W, X = small
    Xd, Yd, b = put(X, W, np.float32(4.5))
    j, z = put(np.array([0, 5], np.int32), np.full((2, 5), 3.0, np.float32))
    with guard():
        s = ddfn.init(Xd, Yd, b)
        s = ddfn.update(s, j, z)
        q = jax.device_get(ddfn.query(s))
    Y = W.copy()
    Y[[0, 5]] = 3.0
    want = np.argwhere(X @ Y.T > 4.5).tolist()
    assert [[int(i), int(jj)] for i, jj, v in zip(q.i, q.j, q.valid) if v] == want and not q.overflow


def test_nn_and_data():
    key = put(jax.random.key(0))
    X, y = data.synthetic(seed=0, n=5, d=4)  # placed explicitly by data.synthetic
    b = put(np.float32(0.2))
    with guard():
        p = nn.init(key, 64, 4)
        part = nn.init_rows(key, 16, 4, start=48)
        picked = nn.rows_at(key, np.array([63, 2]), 4)
        out = jax.device_get((nn.predict(p, X, b), nn.loss(p, X, y, b), nn.grad_W(p, X, y, b),
                              nn.fire_mask(p, X, b), p, part, picked))
        X2, _ = data.synthetic(seed=1, n=3, d=4)
    pred, loss, grad, fire, p_h, part_h, picked_h = out
    assert np.array_equal(part_h.W, p_h.W[48:]) and np.array_equal(picked_h.W, p_h.W[[63, 2]])
    Xh, yh = np.asarray(X, np.float64), np.asarray(y, np.float64)
    ip = Xh @ np.asarray(p_h.W, np.float64).T
    f = np.maximum(ip - 0.2, 0) @ np.asarray(p_h.a, np.float64) / 8.0
    np.testing.assert_allclose(pred, f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, 0.5 * np.sum((f - yh) ** 2), rtol=1e-5)
    assert np.array_equal(fire, ip > 0.2) and grad.shape == (64, 4) and X2.shape == (3, 4)
    assert nn.normal_bound() > 5  # computed once, outside the guard here; cached


@pytest.mark.parametrize("method, opt", [("dense", "sgd"), ("active", "adam"), ("dtree", "sgd"), ("dtree", "adam"),
                                         ("wtree", "sgd")])
def test_run_chunk_and_finalize(method, opt):
    """The training chunk and finalize: with the set-up's state on the device, no transfer; the
    result equals the same chunk run outside the guard."""
    X, y = data.synthetic(seed=0, n=6, d=8)
    params = nn.init(jax.random.key(0), 256, 8)
    optimizer = train.sgd(0.5) if opt == "sgd" else optax.adam(0.01)
    cfg, state = train.setup(params, X, y, method=method, b=1.0, optimizer=optimizer)
    cfg2, ref = train.setup(params, X, y, method=method, b=1.0, optimizer=optimizer)
    ref, _ = train.run_chunk(cfg2, ref, 4)
    ref_W = np.asarray(train.finalize(cfg2, ref)[0].W)
    with guard():
        state, stats = train.run_chunk(cfg, state, 4)
        (p, _), loss = jax.device_get((train.finalize(cfg, state), stats.loss))
    assert np.isfinite(loss).all() and not np.array_equal(ref_W, np.asarray(params.W))
    np.testing.assert_array_equal(p.W, ref_W)


@pytest.mark.parametrize("method", ["dense", "active", "dtree", "wtree"])
def test_setup_makes_no_implicit_transfer(method):
    X, y = data.synthetic(seed=0, n=6, d=8)
    params = jax.device_put(nn.init(jax.random.key(0), 256, 8))
    with guard():
        cfg, state = train.setup(params, X, y, method=method, b=1.0)
        state, _ = train.run_chunk(cfg, state, 2)
        jax.device_get(train.finalize(cfg, state))


def test_wide_setup_makes_no_implicit_transfer():
    X, _ = data.synthetic(seed=0, n=4, d=8)
    key = jax.random.key(0)  # made outside: jax.random.key(0) places its seed itself
    with guard():
        model, _ = _wide().setup(key, 4096, 8, X, b=1.0)
    assert model.W.shape[0] > 0


def test_wide_predict_makes_no_implicit_transfer():
    X, _ = data.synthetic(seed=0, n=4, d=8)
    model, _ = _wide().setup(jax.random.key(0), 4096, 8, X, b=1.0)
    with guard():
        jax.device_get(_wide().predict(model, X))


def test_value_checks_on_an_accelerator_read_one_scalar_explicitly(monkeypatch):
    """The accelerator path of the eager checks (reduce on the device, jax.device_get one scalar),
    forced on the CPU: it passes the guard and still finds a NaN, an infinity and a bad index."""
    from jaxcorr import _checks

    monkeypatch.setattr(_checks, "HOST_PLATFORMS", frozenset())
    W, X = put(np.ones((8, 3), np.float32), np.ones((4, 3), np.float32))
    bad_X = put(np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, 0.0]], np.float32))
    with guard():
        t = dtree.init(W, X)
        with pytest.raises(ValueError, match="X must be finite, but it holds 2 NaN or infinite"):
            dtree.init(W, bad_X)
        with pytest.raises(IndexError, match=r"r must be in \[0, m=8\), got 9"):
            dtree.update(t, put(np.array([1, 9], np.int32)), put(np.ones((2, 3), np.float32)))
        with pytest.raises(ValueError, match="tau must not be NaN"):
            maxtree.query(t.tree, put(np.int32(0)), put(np.float32(np.nan)), 4)
        ok = jax.device_get(dtree.query(t, put(np.int32(1)), put(np.float32(2.5)), 8))
    assert sorted(ok.indices[ok.valid].tolist()) == list(range(8))


def test_host_scalars_and_arrays_are_placed_explicitly(small):
    """Python scalars, lists and numpy arrays given to the tree, DDFN and reduction entry points are
    placed by an explicit device_put at the boundary: no implicit transfer either."""
    from jaxcorr import reductions

    W, X = small
    with guard():
        t = dtree.init(W, X)  # numpy in
        t = dtree.update(t, 3, [1.0, 0.0, 0.0, 0.0, 0.0])
        t = dtree.update(t, np.array([4, 5]), np.zeros((2, 5), np.float32))
        q = jax.device_get(dtree.query(t, 1, 0.5, 80))
        s = ddfn.init(X, W, 4.5)
        s = ddfn.update(s, 0, np.full(5, 3.0, np.float32))
        pairs = jax.device_get(ddfn.query(s))
        f = jax.device_get(maxtree.query(t.tree, 2, 1.5, 80))
        best = reductions.max_inner_product(X.astype(np.int64), W.astype(np.int64))
    W2 = W.copy()
    W2[3], W2[[4, 5]] = [1, 0, 0, 0, 0], 0
    ip = X @ W2.T
    assert sorted(q.indices[q.valid].tolist()) == np.flatnonzero(ip[1] > 0.5).tolist()
    assert sorted(f.indices[f.valid].tolist()) == np.flatnonzero(ip[2] > 1.5).tolist()
    Y = W.copy()
    Y[0] = 3.0
    assert int(pairs.count) == int((X @ Y.T > 4.5).sum()) and best == int((X @ W.T).max())
