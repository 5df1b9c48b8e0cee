"""Wide models (jaxcorr.wide): streamed set-up, training, predict and their checkpoints
against the eager network nn.init + train.fit, a numpy float64 oracle and the DTree's own query."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import checkpoint, data, dtree, methods, nn, train, wide

B = nn.BLOCK_ROWS
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def small():
    X, y = data.synthetic(1, n=4, d=8)
    return X, y, 2048


@pytest.fixture(scope="module")
def multi():
    """A width over three chunks of B rows (the last partial), with a low b so many rows fire."""
    X, y = data.synthetic(2, n=3, d=4)
    m = 2 * B + 1000
    model, info = wide.setup(KEY, m, 4, X, b=2.0, chunk_rows=B)
    return X, y, m, model, info


def test_setup_active_set_is_the_union_of_fire_sets(multi):
    # Oracle: numpy float64 inner products of the eager W(0); and the DTree's own query (Theorem 3.1).
    X, _, m, model, info = multi
    assert info["chunks"] == 3 and info["chunk_rows"] == B
    W0 = nn.init(KEY, m, 4)
    ip = np.asarray(X, np.float64) @ np.asarray(W0.W, np.float64).T
    fire = ip > 2.0
    union = np.flatnonzero(fire.any(axis=0))
    idx = np.asarray(model.idx)
    assert np.all(np.diff(idx) > 0)
    assert set(union) <= set(idx)  # no firing neuron is missed
    extra = np.setdiff1d(idx, union)  # kept only for the rounding margin: all within it of b
    assert extra.size <= 3 and np.all(np.abs(ip[:, extra] - 2.0).min(axis=0) < 1e-4)
    np.testing.assert_array_equal(info["k0"], fire.sum(axis=1))
    assert info["n_fire_union"] == union.size and info["n_active"] == idx.size == model.n_active
    tree = dtree.init(W0.W, X)
    fr = dtree.query_all(tree, 2.0, capacity=int(fire.sum(axis=1).max()))
    assert not bool(np.asarray(fr.overflow).any())
    via_tree = np.unique(np.asarray(fr.indices)[np.asarray(fr.valid)])
    np.testing.assert_array_equal(via_tree, union)
    np.testing.assert_array_equal(model.W, W0.W[idx])
    np.testing.assert_array_equal(model.a, W0.a[idx])
    assert model.m == m and model.b == 2.0 and model.d == 4


def test_setup_does_not_depend_on_chunking_and_reports_progress(multi):
    X, _, m, model, _ = multi
    seen = []
    again, info = wide.setup(KEY, m, 4, X, b=2.0, progress=seen.append)
    assert info["chunks"] < 3 or info["chunk_rows"] != B
    np.testing.assert_array_equal(again.idx, model.idx)
    np.testing.assert_array_equal(again.W, model.W)
    assert seen and seen[-1]["rows_done"] == m and seen[-1]["n_active"] == model.n_active


_CHILD = """
import json, jax, numpy as np
from jaxcorr import data, nn, wide
X, _ = data.synthetic(2, n=3, d=4)
m = 3 * nn.BLOCK_ROWS + 5
one, i1 = wide.setup(jax.random.key(3), m, 4, X, b=2.0, chunk_rows=nn.BLOCK_ROWS)
two, i2 = wide.setup(jax.random.key(3), m, 4, X, b=2.0, chunk_rows=nn.BLOCK_ROWS, devices=jax.devices())
print(json.dumps({"devices": i2["devices"], "chunks": i2["chunks"], "same_idx": bool(np.array_equal(one.idx, two.idx)),
                  "same_W": bool(np.array_equal(one.W, two.W)), "same_k0": i1["k0"].tolist() == i2["k0"].tolist(),
                  "W_devices": [str(d) for d in two.W.devices()], "first": str(jax.devices()[0])}))
"""


def test_setup_over_several_devices_gives_the_same_rows():
    # Chunks round robin over 2 host devices (a child process with XLA's forced device count).
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600,
                          cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 2 and res["chunks"] == 4
    assert res["same_idx"] and res["same_W"] and res["same_k0"]
    assert res["W_devices"] == [res["first"]]


def test_setup_overflow_reruns_the_chunk(monkeypatch, multi):
    # Force the initial capacity far below the true count: every chunk overflows, is rerun with a
    # larger buffer, and the result is still the full active set.
    X, _, m, model, _ = multi
    monkeypatch.setattr(wide, "expected_active", lambda *a, **k: 0.0)
    again, info = wide.setup(KEY, m, 4, X, b=2.0, chunk_rows=B)
    assert info["capacity_events"] and info["capacity_events"][0]["old_capacity"] < info["capacity_events"][0]["count"]
    np.testing.assert_array_equal(again.idx, model.idx)


@pytest.mark.parametrize("method", train.METHODS)
def test_fit_equals_eager_training(small, method):
    # Same network (nn.init's rows), same steps: the wide model trains exactly what the eager one
    # does; rows outside A stay W(0) bit for bit.
    X, y, m = small
    model, info = wide.setup(KEY, m, 8, X)
    assert 0 < info["n_active"] < m
    trained, hist = wide.fit(model, X, y, steps=6, method=method)
    eager, ehist = train.fit(nn.init(KEY, m, 8), X, y, steps=6, method=method)
    np.testing.assert_allclose(hist.loss, ehist.loss, rtol=2e-6, atol=1e-7)
    assert hist.loss[-1] < hist.loss[0]
    full = wide.materialize(trained)
    np.testing.assert_allclose(full.W, eager.W, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(full.a, eager.a)
    outside = np.setdiff1d(np.arange(m), np.asarray(trained.idx))
    np.testing.assert_array_equal(np.asarray(full.W)[outside], np.asarray(nn.init(KEY, m, 8).W)[outside])
    moved = np.any(np.asarray(trained.W) != np.asarray(model.W), axis=1)
    assert moved.any()


def test_predict_streams_and_swaps_in_trained_rows(multi):
    X, y, m, model, _ = multi
    trained, _ = wide.fit(model, X, y, steps=3, method="dense", learning_rate=5.0)
    Xt, _ = data.synthetic(9, n=5, d=4)
    full = wide.materialize(trained)
    W, a = np.asarray(full.W, np.float64), np.asarray(full.a, np.float64)
    oracle = np.maximum(np.asarray(Xt, np.float64) @ W.T - 2.0, 0) @ a / np.sqrt(m)
    for chunk in (B, None):
        got = wide.predict(trained, Xt, chunk_rows=chunk)
        assert got.dtype == jnp.float32 and got.shape == (5,)
        np.testing.assert_allclose(got, oracle, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(wide.predict(trained, Xt[0]), oracle[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(nn.predict(full, Xt, 2.0), oracle, rtol=1e-4, atol=1e-6)
    # the swap matters: the untrained model predicts something else
    assert np.abs(np.asarray(wide.predict(model, Xt)) - oracle).max() > 1e-4


def test_checkpoint_round_trip_and_resume(tmp_path, small):
    X, y, m = small
    opt = optax.adam(1e-2)
    model, _ = wide.setup(KEY, m, 8, X)
    part, h1 = wide.fit(model, X, y, steps=3, optimizer=opt)
    path = tmp_path / "wide.ckpt"
    checkpoint.save(path, part, X=X, y=y, opt_state=h1.opt_state, step=3, config={"lr": 1e-2, "m": m, "d": 8})
    assert os.path.getsize(path) < m * 8 * 4  # active rows and their adam state: less than W alone
    ck = checkpoint.restore(path, X=X, y=y, optimizer=opt)
    got = ck.model
    assert ck.step == 3 and ck.config["lr"] == 1e-2
    assert (got.m, got.b, got.data_sha256) == (part.m, part.b, part.data_sha256)
    np.testing.assert_array_equal(jax.random.key_data(got.key), jax.random.key_data(part.key))
    for f in ("idx", "W", "a"):
        np.testing.assert_array_equal(getattr(got, f), getattr(part, f))
    rest, h2 = wide.fit(got, X, y, steps=2, optimizer=opt, opt_state=ck.opt_state)
    whole, h = wide.fit(model, X, y, steps=5, optimizer=opt)
    np.testing.assert_allclose(np.concatenate([h1.loss, h2.loss]), h.loss, rtol=1e-5)
    np.testing.assert_allclose(rest.W, whole.W, rtol=1e-5, atol=1e-6)
    with pytest.raises(checkpoint.CheckpointError, match="other data"):
        checkpoint.restore(path, X=X + 1, y=y)
    with pytest.raises(checkpoint.CheckpointError, match="optimizer"):
        checkpoint.restore(path, optimizer=optax.sgd(0.1, momentum=0.9))
    eager = tmp_path / "eager.ckpt"
    checkpoint.save(eager, nn.init(KEY, 8, 8), X=X, y=y)
    assert checkpoint.restore(eager).kind == "full" and ck.kind == "wide"
    with pytest.raises(checkpoint.CheckpointError, match="not a wide model"):
        checkpoint.wide.load(eager)


def test_coefficient_checkpoint_is_smaller_and_resumes_bit_for_bit(tmp_path, small):
    # A train.sgd run from set-up carries its coefficients (held rows = W(0) rows + K X); save writes
    # them (form "coefficients": key, indices, K, X, K's state) instead of the rows; load redraws W(0)'s
    # rows from the key (nn.rows_at) and gives the same rows bit for bit; training on from it equals
    # the uninterrupted run bit for bit (same chunk lengths).
    X, y, m = small
    opt = train.sgd(0.5, momentum=0.9)
    model, _ = wide.setup(KEY, m, 8, X)
    assert model.initial and model.coefficients is None
    part, h1 = wide.fit(model, X, y, steps=3, optimizer=opt, chunk_size=3, method="active")
    c = part.coefficients
    assert not part.initial and c.K.shape == (len(c.rows), 4)
    base = np.asarray(nn.init(KEY, m, 8).W)[np.asarray(part.idx)].astype(np.float64)
    base[c.rows] += np.asarray(c.K, np.float64) @ np.asarray(X, np.float64)  # float64 oracle of W(0) + K X
    np.testing.assert_allclose(np.asarray(part.W), base, rtol=1e-6, atol=1e-6)
    coef_path, rows_path = tmp_path / "coef.ckpt", tmp_path / "rows.ckpt"
    checkpoint.save(coef_path, part, X=X, y=y, opt_state=h1.opt_state, step=3)
    checkpoint.save(rows_path, part, X=X, y=y, opt_state=h1.opt_state, step=3, form="rows")
    assert os.path.getsize(coef_path) < 0.75 * os.path.getsize(rows_path)
    ck = checkpoint.restore(coef_path, optimizer=opt)  # stands alone: X is in the file
    got = ck.model
    assert ck.config["wide"]["form"] == "coefficients" and ck.step == 3
    for f in ("idx", "W", "a"):
        np.testing.assert_array_equal(getattr(got, f), getattr(part, f))
    np.testing.assert_array_equal(got.coefficients.rows, c.rows)
    np.testing.assert_array_equal(got.coefficients.K, c.K)
    for u, v in zip(jax.tree_util.tree_leaves(ck.opt_state), jax.tree_util.tree_leaves(h1.opt_state)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-7)
    rest, h2 = wide.fit(got, X, y, steps=3, optimizer=opt, chunk_size=3, method="active")
    whole, h = wide.fit(model, X, y, steps=6, optimizer=opt, chunk_size=3, method="active")
    np.testing.assert_array_equal(np.concatenate([h1.loss, h2.loss]), h.loss)
    np.testing.assert_array_equal(np.asarray(rest.W), np.asarray(whole.W))
    np.testing.assert_array_equal(wide.predict(rest, X), wide.predict(whole, X))
    with pytest.raises(ValueError, match="opt_state=None"):
        wide.fit(got, X, y, steps=1, optimizer=opt, opt_state=ck.opt_state)
    for kwargs in ({"optimizer": optax.adam(1e-2)}, {"optimizer": opt, "method": "dense"}):
        with pytest.raises(ValueError, match="drop them"):
            wide.fit(got, X, y, steps=1, **kwargs)
    plain = dataclasses.replace(got, coefficients=None)  # dropped: trains from its rows and row-form state
    _, h_plain = wide.fit(plain, X, y, steps=3, optimizer=opt, opt_state=ck.opt_state, method="active")
    np.testing.assert_allclose(h_plain.loss, h2.loss, rtol=1e-5)
    with pytest.raises(ValueError, match="coefficients"):
        checkpoint.save(tmp_path / "x.ckpt", model, X=X, y=y, form="coefficients")
    with pytest.raises(checkpoint.CheckpointError, match="other data"):
        checkpoint.restore(coef_path, X=X + 1, y=y)
    adam, _ = wide.fit(model, X, y, steps=2, optimizer=optax.adam(1e-2))
    assert adam.coefficients is None  # not the span path: rows
    snaps = []  # a callback's snapshot is the model after that chunk, with its coefficients
    wide.fit(model, X, y, steps=6, optimizer=opt, chunk_size=3, method="active",
             callback=lambda info: snaps.append(info["snapshot"]()))
    np.testing.assert_array_equal(np.asarray(snaps[0][0].coefficients.K), np.asarray(c.K))
    np.testing.assert_array_equal(np.asarray(snaps[1][0].W), np.asarray(whole.W))


def test_bad_input_is_refused(small):
    X, y, _ = small
    model, _ = wide.setup(KEY, 256, 8, X)
    with pytest.raises(ValueError, match="other rows may fire"):
        wide.fit(model, X[:3], y[:3], steps=1)
    with pytest.raises(ValueError, match="b is fixed"):
        wide.fit(model, X, y, steps=1, b=0.5)
    with pytest.raises(ValueError, match="WideParams"):
        wide.fit(nn.init(KEY, 4, 8), X, y, steps=1)
    with pytest.raises(ValueError, match="X must have d=8"):
        wide.setup(KEY, 256, 8, X[:, :4])
    with pytest.raises(ValueError, match="key"):
        wide.setup(np.zeros(3), 256, 8, X)
    with pytest.raises(ValueError, match="chunk_rows"):
        wide.setup(KEY, 256, 8, X, chunk_rows=0)
    with pytest.raises(ValueError, match="x64"):
        wide.setup(KEY, 2**31, 8, X)
    with pytest.raises(ValueError, match="m must be"):
        wide.setup(KEY, 0, 8, X)


def test_fit_defaults_to_the_registry_default_method():
    import inspect

    assert inspect.signature(wide.fit).parameters["method"].default == methods.DEFAULT


def test_a_model_with_no_active_row_trains_and_predicts(small):
    """Issue 23 item 7: with b so large that no row can fire (|A| = 0), fit returns the model unchanged
    with a constant-loss history of the right length; predict is the full network's (0 here)."""
    X, y, m = small
    model, info = wide.setup(KEY, m, 8, X, b=50.0)
    assert info["n_active"] == 0 and model.n_active == 0
    for method in methods.names():
        got, hist = wide.fit(model, X, y, steps=4, method=method, optimizer=optax.adam(1e-2))
        assert got is model and hist.loss.shape == (4,) and hist.n_active == 0
        full = wide.materialize(model)
        ref = float(nn.loss(full, X, y, model.b))
        np.testing.assert_allclose(hist.loss, ref, rtol=1e-6)
    np.testing.assert_array_equal(wide.predict(model, X), nn.predict(wide.materialize(model), X, model.b))
    Xt = 10.0 * jnp.asarray(data.synthetic(9, n=5, d=8)[0])  # far points: some rows fire there
    np.testing.assert_allclose(wide.predict(model, Xt), nn.predict(wide.materialize(model), Xt, model.b),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        wide.fit(model, X, y, steps=-1)


def test_from_params_device_path_equals_the_host_path(small):
    """Issue 25: the numpy row comparison runs on CPU only; the jitted device path gives the same model."""
    X, y, m = small
    W0 = nn.init(KEY, m, 8)
    b = float(nn.default_threshold(m))
    opt = optax.adam(1e-2)
    p, h = train.fit(W0, X, y, steps=2, optimizer=opt, b=b)
    moved = p._replace(W=p.W.at[np.flatnonzero(~wide.active_rows(W0.W, X, b))[0], 0].set(-0.0))
    outs = [wide.from_params(KEY, moved, X, b=b, W0=W0, opt_state=h.opt_state, optimizer=opt, _host=host)
            for host in (True, False)]
    (m1, s1), (m2, s2) = outs
    for f in ("idx", "W", "a"):
        a1, a2 = np.asarray(getattr(m1, f)), np.asarray(getattr(m2, f))
        assert a1.dtype == a2.dtype and a1.tobytes() == a2.tobytes(), f
    assert all(np.asarray(u).tobytes() == np.asarray(v).tobytes()
               for u, v in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)))
    assert m1.n_active == int(wide.active_rows(W0.W, X, b).sum()) + 1  # the -0.0 row is kept


def test_setup_and_predict_run_under_the_transfer_guard(small):
    """Issue 25 item 1: the streamed set-up and predict move data only where they say so."""
    X, y, m = small
    Xd = jax.device_put(jnp.asarray(X))
    with jax.transfer_guard("disallow"):
        model, _ = wide.setup(KEY, m, 8, Xd)
        out = wide.predict(model, Xd)
    np.testing.assert_allclose(out, nn.predict(wide.materialize(model), X, model.b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("saved_under", [False, True])
def test_checkpoints_redraw_w0_under_the_prng_settings_they_were_saved_with(tmp_path, small, saved_under):
    """Issue 23 item 4: W(0) depends on jax_threefry_partitionable; the setting is recorded at save and
    reproduced on load: the rows, bit for bit, whatever the loading process's setting (compact full-width,
    wide rows form, wide coefficients form)."""
    X, y, m = small
    with jax.threefry_partitionable(saved_under):
        W0 = nn.init(KEY, m, 8)
        b = float(nn.default_threshold(m))
        opt = train.sgd(0.5, momentum=0.9)
        p, h = train.fit(W0, X, y, steps=2, optimizer=opt, b=b)
        model, _ = wide.setup(KEY, m, 8, X)
        trained, h2 = wide.fit(model, X, y, steps=2, optimizer=opt, method="active")
        paths = {f: tmp_path / f"{f}.ckpt" for f in ("compact", "rows", "coefficients")}
        assert checkpoint.save(paths["compact"], p, X=X, y=y, key=KEY, b=b, W0=W0, opt_state=h.opt_state,
                               optimizer=opt, form="compact") == "compact"
        checkpoint.save(paths["rows"], trained, X=X, y=y, opt_state=h2.opt_state, form="rows")
        checkpoint.save(paths["coefficients"], trained, X=X, y=y, form="coefficients")
    with jax.threefry_partitionable(not saved_under):
        assert not np.array_equal(nn.init(KEY, m, 8).W, W0.W)  # the settings do draw other rows
        got = checkpoint.restore(paths["compact"], X=X, y=y, optimizer=opt)
        assert np.asarray(got.model.W).tobytes() == np.asarray(p.W).tobytes()
        for form in ("rows", "coefficients"):
            r = checkpoint.restore(paths[form], X=X, y=y, optimizer=opt)
            assert r.config["wide"]["prng"] == {"jax_threefry_partitionable": saved_under}
            assert np.asarray(r.model.W).tobytes() == np.asarray(trained.W).tobytes(), form
