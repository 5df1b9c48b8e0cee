"""Sharded correlation trees and sharded training against the one-device code (Section 5).

Run by tests/test_sharding.py in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set before JAX is imported (the CPU backend's
device count is fixed when JAX starts); not collected in the main session (the file name does not
start with ``test_``). Sizes include point counts that 4 devices do not divide (n = 5 and 6: padded
to 8). Every failure names what differed.

Multi-host (``jax.distributed``) is tested by tests/test_multiprocess.py.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from jaxcorr import data, ddfn, dtree, maxtree, nn, sharding, train

DEVICES = 4
M, D, STEPS, CHUNK, B = 512, 8, 10, 5, 1.2
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
OPTS = {"sgd": train.sgd(2.0), "adam": optax.adam(0.05)}

pytestmark = pytest.mark.skipif(jax.device_count() != DEVICES,
                                reason=f"needs {DEVICES} devices (run by tests/test_sharding.py)")


def hlo_collectives(text: str) -> dict:
    return {c: text.count(c + "(") + text.count(c + "-start(") for c in COLLECTIVES}


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def rel(a, b) -> float:
    return maxdiff(a, b) / float(np.abs(np.asarray(b, np.float64)).max())


class CompileCounter:
    """Counts XLA backend compilations while active (``jax.monitoring``)."""

    count = 0
    active = False

    @classmethod
    def listener(cls, name, _dur, **_kw):
        if cls.active and name == "/jax/core/compile/backend_compile_duration":
            cls.count += 1


jax.monitoring.register_event_duration_secs_listener(CompileCounter.listener)


@pytest.fixture(scope="module")
def mesh():
    return sharding.data_mesh()


@pytest.fixture(scope="module")
def params():
    return nn.init(jax.random.key(0), M, D)


# ------------------------------------------------------------------------------------ DTree, DDFN
def tree_pair(n, mesh_kind):
    rng = np.random.default_rng(n)
    m, d = 37, 4
    W = rng.standard_normal((m, d)).astype(np.float32)
    X = rng.standard_normal((n, d)).astype(np.float32)
    mesh = sharding.data_mesh() if mesh_kind == "mesh" else jax.make_mesh((DEVICES,), ("data",))
    t1 = dtree.init(W, X)
    return t1, sharding.shard_dtree(t1, mesh), W, X, mesh, rng


@pytest.mark.parametrize("n,mesh_kind", [(6, "mesh"), (5, "make_mesh")])
def test_dtree_layout_and_queries(n, mesh_kind):
    t1, ts, W, X, _, rng = tree_pair(n, mesh_kind)
    shards = ts.tree.levels[0].addressable_shards
    assert ts.n == 8, ts.n
    assert sorted({s.data.shape[0] for s in shards}) == [2] and len({s.device for s in shards}) == DEVICES
    rr = np.array([3, 10, 3, 36], np.int32)  # a repeated index: the last occurrence wins
    Z = rng.standard_normal((4, W.shape[1])).astype(np.float32)
    u1, us = dtree.update(t1, rr, Z), dtree.update(ts, rr, Z)
    assert us.tree.levels[0].sharding.is_equivalent_to(ts.tree.levels[0].sharding, 2)
    tau = -0.3  # negative: padding points would show up if they could fire
    for label, a, b in (("init", t1, ts), ("update", u1, us)):
        f1, fs = dtree.query_all(a, tau, 64), dtree.query_all(b, tau, 64)
        np.testing.assert_array_equal(np.asarray(fs.indices)[:n], f1.indices, err_msg=label)
        np.testing.assert_array_equal(np.asarray(fs.count)[:n], f1.count, err_msg=label)
        assert not np.asarray(fs.valid)[n:].any() and not np.asarray(fs.count)[n:].any(), label
        for i in range(n):
            np.testing.assert_array_equal(dtree.query(b, i, tau, 8).indices, dtree.query(a, i, tau, 8).indices,
                                          err_msg=f"{label}, point {i}")
    back = sharding.unshard_dtree(us, n)
    assert maxdiff(dtree.inner_products(back), dtree.inner_products(u1)) <= 1e-6
    assert maxtree.check_invariant(back.tree)


@pytest.mark.parametrize("n,mesh_kind", [(6, "mesh"), (5, "make_mesh")])
def test_dtree_update_is_communication_free(n, mesh_kind):
    # Section 5: the n tree updates are independent, so the sharded UPDATE needs no collective.
    _, ts, W, _, _, rng = tree_pair(n, mesh_kind)
    Z = rng.standard_normal((4, W.shape[1])).astype(np.float32)
    text = jax.jit(dtree.update_unchecked).lower(ts, np.array([3, 10, 3, 36], np.int32), Z).compile().as_text()
    found = hlo_collectives(text)
    assert not any(found.values()), found


@pytest.mark.parametrize("n,mesh_kind", [(6, "mesh"), (5, "make_mesh")])
def test_ddfn_sharded_matches(n, mesh_kind):
    _, _, W, X, mesh, rng = tree_pair(n, mesh_kind)
    rr = np.array([3, 10, 3, 36], np.int32)
    Z = rng.standard_normal((4, W.shape[1])).astype(np.float32)
    s1 = ddfn.init(X, W, b=-0.3, cap=200)
    ss = sharding.shard_ddfn(s1, mesh)
    q1, qs = ddfn.query(ddfn.update(s1, rr, Z)), ddfn.query(ddfn.update(ss, rr, Z))

    def pairs(q):
        ok = np.asarray(q.valid)
        return sorted(zip(np.asarray(q.i)[ok].tolist(), np.asarray(q.j)[ok].tolist()))

    assert int(q1.count) > 0
    assert pairs(qs) == pairs(q1) and int(qs.count) == int(q1.count) and bool(qs.overflow) == bool(q1.overflow)


# ------------------------------------------------------------------------------------------- fit
@pytest.fixture(scope="module")
def fits(mesh, params):
    X, y = data.synthetic(0, 6, D)
    out = {}
    for method in ("dtree", "active"):
        for name, opt in OPTS.items():
            kw = dict(steps=STEPS, method=method, b=B, optimizer=opt, chunk_size=CHUNK)
            out[method, name] = (train.fit(params, X, y, **kw), train.fit(params, X, y, mesh=mesh, **kw))
    return X, y, out


@pytest.mark.parametrize("method", ["dtree", "active"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fit_trajectory_matches_single_device(fits, params, opt, method):
    _, _, out = fits
    (p1, h1), (ps, hs) = out[method, opt]
    assert hs.shards == DEVICES and h1.shards is None
    assert rel(hs.loss, h1.loss) <= 2e-4, (hs.loss, h1.loss)
    assert maxdiff(p1.W, params.W) > 1e-3  # the comparison is not vacuous
    assert maxdiff(ps.W, p1.W) <= 1e-4
    for s1, s2 in zip(jax.tree_util.tree_leaves(h1.opt_state), jax.tree_util.tree_leaves(hs.opt_state)):
        assert maxdiff(s2, s1) <= 1e-4
    np.testing.assert_array_equal(hs.fire_max, h1.fire_max)
    np.testing.assert_array_equal(hs.fire_union, h1.fire_union)
    assert maxdiff(hs.fire_mean, h1.fire_mean) <= 1e-5
    assert (h1.span, hs.span) == ((True, True) if opt == "sgd" else (False, False))
    assert ps.W.dtype == np.float32 and len(ps.W.devices()) == 1
    assert hs.bytes_per_device > 0


@pytest.mark.parametrize("method", ["dtree", "active"])
def test_one_step_function_one_device_layout_equals_mesh(fits, params, method):
    """The same step function on a 1-device mesh (collectives over one block) equals the 4-device
    mesh and the plain one-device run."""
    X, y, out = fits
    (p1, h1), (ps, hs) = out[method, "adam"]
    one = sharding.data_mesh(jax.devices()[:1])
    po, ho = train.fit(params, X, y, steps=STEPS, method=method, b=B, optimizer=OPTS["adam"], chunk_size=CHUNK,
                       mesh=one)
    assert ho.shards == 1
    assert rel(ho.loss, hs.loss) <= 2e-4 and rel(ho.loss, h1.loss) <= 2e-4, (ho.loss, hs.loss, h1.loss)
    assert maxdiff(po.W, ps.W) <= 1e-4 and maxdiff(po.W, p1.W) <= 1e-4
    np.testing.assert_array_equal(ho.fire_max, hs.fire_max)


def test_setup_run_chunk_finalize_equals_fit_on_mesh(fits, mesh, params):
    X, y, out = fits
    (_, _), (ps, hs) = out["dtree", "sgd"]
    cfg, state = train.setup(params, X, y, method="dtree", b=B, optimizer=OPTS["sgd"], mesh=mesh)
    losses = []
    for _ in range(STEPS // CHUNK):
        state, stats = train.run_chunk(cfg, state, CHUNK)
        assert not np.asarray(stats.overflow).any()
        losses.append(np.asarray(stats.loss))
    p, _ = train.finalize(cfg, state)
    np.testing.assert_array_equal(np.concatenate(losses), hs.loss)
    np.testing.assert_array_equal(p.W, ps.W)


def test_fit_collectives_only_for_sums(fits, mesh, params):
    # one all-reduce family per sum over points (loss, gradient or K G, statistics); never an all-gather
    X, y, _ = fits
    for method in ("dtree", "active"):
        for name, opt in OPTS.items():
            cfg, state = train.setup(params, X, y, method=method, b=B, optimizer=opt, mesh=mesh)
            text = jax.jit(train.run_chunk, static_argnums=(0, 2)).lower(cfg, state, CHUNK).compile().as_text()
            c = hlo_collectives(text)
            assert c["all-gather"] == 0 and c["all-to-all"] == 0 and c["collective-permute"] == 0, (method, name, c)
            assert c["all-reduce"] + c["reduce-scatter"] >= 2, (method, name, c)


def test_fit_named_sharding_and_no_recompile(fits, params):
    X, y, out = fits
    ns = jax.sharding.NamedSharding(jax.make_mesh((DEVICES,), ("data",)), jax.sharding.PartitionSpec("data"))
    kw = dict(steps=STEPS, method="dtree", b=B, optimizer=OPTS["adam"], chunk_size=CHUNK, mesh=ns)
    train.fit(params, X, y, **kw)
    CompileCounter.count, CompileCounter.active = 0, True
    try:
        _, hn = train.fit(params, X, y, **kw)
    finally:
        CompileCounter.active = False
    assert CompileCounter.count == 0, f"the second call compiled {CompileCounter.count} programs"
    assert rel(hn.loss, out["dtree", "adam"][0][1].loss) <= 2e-4


def test_fit_sharded_overflow_rerun(mesh, params):
    # n = 5, b = 1.6 sizes the capacity small, sgd(300) grows the fire sets: chunks are rerun
    X, y = data.synthetic(0, 5, D)
    kw = dict(steps=STEPS, method="dtree", b=1.6, optimizer=train.sgd(300.0), chunk_size=CHUNK)
    p1, h1 = train.fit(params, X, y, **kw)
    ps, hs = train.fit(params, X, y, mesh=mesh, **kw)
    grown = [e for e in h1.events if isinstance(e, train.CapacityGrown)]
    assert grown, f"no overflow happened (events {h1.events})"
    assert hs.events == h1.events
    assert rel(hs.loss, h1.loss) <= 2e-4 and rel(ps.W, p1.W) <= 1e-5 and hs.span
    np.testing.assert_array_equal(hs.fire_max, h1.fire_max)


@pytest.mark.parametrize("method", ["dtree", "active"])
def test_ddfn_cap_error_and_fallback_as_on_one_device(mesh, params, method):
    X, y = data.synthetic(0, 6, D)
    kw = dict(steps=2, method=method, b=-0.5, chunk_size=2)
    with pytest.raises(ValueError, match="DDFN cap"):
        train.fit(params, X, y, mesh=mesh, **kw)
    pf, hf = train.fit(params, X, y, fallback="dense", mesh=mesh, **kw)
    p1, h1 = train.fit(params, X, y, fallback="dense", **kw)
    np.testing.assert_array_equal(pf.W, p1.W)
    assert hf.fallback_step == h1.fallback_step == 0
    assert isinstance(hf.events[-1], train.FellBackToDense)


def test_fit_mesh_errors(mesh, params):
    X, y = data.synthetic(0, 6, D)
    for method in ("dense", "wtree"):
        with pytest.raises(ValueError, match=r"\('active', 'dtree'\)"):
            train.fit(params, X, y, steps=1, method=method, mesh=mesh)
    with pytest.raises(ValueError, match="Mesh"):
        train.fit(params, X, y, steps=1, mesh="data")
    with pytest.raises(ValueError, match="'model'"):
        sharding.layout(mesh, "model")
