"""Correlation trees against a brute-force numpy float64 oracle.

Covers Algorithm 7 (MAKEMAXTREE), Theorem 3.1 (DTree: Algorithms 1, 2, 10-12), Theorem 3.2 (WTree:
Algorithms 13-15) and Definition 1.3 (DDFN). Data are integer-valued, so every inner product is
exact in float32 and thresholds equal to leaf values test the strict ">" on exact ties.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxcorr import ddfn, dtree, maxtree, wtree

# Few distinct shapes keep jit compilations (the cost of these tests) down; values vary freely.
SIZES_M = [1, 5, 13, 64]
SIZES_N = [1, 3]
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def int_matrix(rng, rows, cols, lo=-3, hi=4):
    return rng.integers(lo, hi, size=(rows, cols)).astype(np.float32)


def check_frontier(f, row, tau, capacity, sentinel):
    """``f`` (one tree's Frontier) against the oracle ``row`` of float64 leaf values."""
    truth = np.flatnonzero(np.asarray(row, np.float64) > tau)
    idx, valid = np.asarray(f.indices), np.asarray(f.valid)
    count, overflow = int(f.count), bool(f.overflow)
    assert idx.shape == (capacity,) and valid.shape == (capacity,)
    assert idx.dtype == np.int32
    if len(truth) <= capacity:
        assert not overflow
        assert count == len(truth)
        np.testing.assert_array_equal(idx[: len(truth)], truth)
        assert np.all(idx[len(truth) :] == sentinel)
        np.testing.assert_array_equal(valid, np.arange(capacity) < len(truth))
    else:
        assert overflow, "a set larger than capacity must be reported as overflow"
        assert capacity < count <= len(truth)
        got = idx[valid]
        assert set(got.tolist()) <= set(truth.tolist())
        assert np.all(np.diff(got) > 0)
        assert np.all(idx[~valid] == sentinel)


def thresholds(values, rng, k=3):
    """Taus equal to leaf values (exact ties), between them, and outside the range."""
    flat = np.unique(np.asarray(values).ravel())
    picks = list(rng.choice(flat, size=min(k, flat.size), replace=False))
    return [float(t) for t in picks] + [float(flat.min()) - 1.0, float(flat.max()), float(np.median(flat)) + 0.5]


# ----------------------------------------------------------------------------- max-tree (Algorithm 7)


@pytest.mark.parametrize("leaves", [1, 2, 3, 7, 8, 9, 33])
def test_build_invariant_and_padding(leaves, rng):
    vals = rng.normal(size=(3, leaves)).astype(np.float32)
    t = maxtree.build(jnp.asarray(vals))
    assert maxtree.check_invariant(t)
    assert t.num_leaves == leaves and t.padded == maxtree.padded_size(leaves)
    assert [lvl.shape[1] for lvl in t.levels] == [t.padded >> i for i in range(len(t.levels))]
    np.testing.assert_array_equal(np.asarray(t.levels[-1])[:, 0], vals.max(axis=1))
    np.testing.assert_array_equal(np.asarray(maxtree.leaves(t)), vals)


def test_invariant_check_can_fail():
    t = maxtree.build(jnp.array([[1.0, 2.0, 3.0]]))
    broken = maxtree.MaxTree(levels=(t.levels[0].at[0, 0].set(9.0),) + t.levels[1:], num_leaves=3)
    assert not maxtree.check_invariant(broken)
    unpadded = maxtree.MaxTree(levels=(t.levels[0].at[0, 3].set(0.0),) + t.levels[1:], num_leaves=3)
    assert not maxtree.check_invariant(unpadded)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), leaves=st.sampled_from(SIZES_M), cap=st.sampled_from([1, 2, 3, 5, 16, 200]))
def test_query_matches_oracle(seed, leaves, cap):
    rng = np.random.default_rng(seed)
    vals = rng.integers(-4, 5, size=(2, leaves)).astype(np.float32)
    t = maxtree.build(jnp.asarray(vals))
    for tau in thresholds(vals, rng):
        for row in range(2):
            check_frontier(maxtree.query(t, row, tau, cap), vals[row], tau, cap, leaves)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), cap=st.sampled_from([1, 7, 40, 300]))
def test_deep_query_matches_oracle(seed, cap):
    """Trees deep enough for several multi-level frontier steps (Algorithm 2's FIND, descending up
    to five levels at once), with passing sets below, at and above capacity: overflow can first
    appear at an inner level. ``query_all`` and the forest query (``query_forest``) as well."""
    rng = np.random.default_rng(seed)
    leaves = 3000
    vals = rng.integers(-400, 400, size=(3, leaves)).astype(np.float32)
    vals[1, rng.integers(0, leaves, 30)] = 500.0  # a clustered, tied block above everything else
    t = maxtree.build(jnp.asarray(vals))
    flat = np.sort(vals.ravel())
    taus = [float(flat[-k]) for k in (1, 5, 40, 41, 300, 900)] + [499.0, 500.0]
    for tau in taus:
        fa = jax.device_get(maxtree.query_all(t, tau, cap))
        for row in range(3):
            one = jax.tree_util.tree_map(lambda a, r=row: a[r], fa)
            check_frontier(one, vals[row], tau, cap, leaves)
        ti, li, valid, count, overflow = jax.device_get(maxtree.query_forest(t, tau, cap))
        truth = np.argwhere(vals.astype(np.float64) > tau)
        if len(truth) <= cap:
            assert not overflow and int(count) == len(truth)
            np.testing.assert_array_equal(np.stack([ti, li], 1)[valid], truth)
            assert np.all(ti[~valid] == 3) and np.all(li[~valid] == leaves)
        else:
            assert overflow and cap < int(count) <= len(truth)
            got = {tuple(p) for p in np.stack([ti, li], 1)[valid].tolist()}
            assert got <= {tuple(p) for p in truth.tolist()} and len(got) == int(valid.sum())


def _intermediate_sizes(fn, *args):
    """Element counts of every value the traced ``fn`` computes (reshapes, which are views, excluded)."""
    from jax.extend import core as jcore

    sizes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name != "reshape":
                sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars)
            for p in eqn.params.values():
                for q in p if isinstance(p, (tuple, list)) else (p,):
                    if isinstance(q, jcore.ClosedJaxpr):
                        walk(q.jaxpr)
                    elif isinstance(q, jcore.Jaxpr):
                        walk(q)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return sizes


def test_query_work_is_output_sensitive():
    """Issue item 5 / Lemma D.4: no value the query computes grows with the leaf count (no level is
    copied or scanned, for a single tree either); the total grows only with the depth."""
    cap, trees = 4, 3
    stats = {}
    for P in (2**12, 2**18):
        t = maxtree.build(jnp.zeros((trees, P)))
        one = _intermediate_sizes(lambda tr: maxtree.query(tr, 1, 0.5, cap), t)
        every = _intermediate_sizes(lambda tr: maxtree.query_all(tr, 0.5, cap), t)
        stats[P] = (max(one), max(every), sum(one), sum(every))
        assert max(one) <= cap * 2**maxtree._JUMP and max(every) <= trees * cap * 2**maxtree._JUMP
    small, big = stats[2**12], stats[2**18]
    assert big[:2] == small[:2]
    assert big[2] < 2 * small[2] and big[3] < 2 * small[3]  # 64x the leaves, 1.5x the depth


def test_single_query_tree_row_indexing(monkeypatch, rng):
    """The (tree, row) gather used when flat int32 row ids could overflow gives the same answers."""
    monkeypatch.setattr(maxtree, "_FLAT_INDEX_LIMIT", 0)
    jax.clear_caches()
    vals = rng.integers(-50, 50, size=(3, 700)).astype(np.float32)
    t = maxtree.build(jnp.asarray(vals))
    for tau in thresholds(vals, rng):
        for row in range(3):
            for cap in (1, 9, 80):
                check_frontier(maxtree.query(t, row, tau, cap), vals[row], tau, cap, 700)
    jax.clear_caches()


def test_padding_never_reported():
    # 5 leaves padded to 8; a very low threshold must not report the -inf padding.
    t = maxtree.build(jnp.zeros((1, 5)))
    f = maxtree.query(t, 0, -1e30, capacity=8)
    assert int(f.count) == 5 and not bool(f.overflow)
    assert np.asarray(f.indices).tolist() == [0, 1, 2, 3, 4, 5, 5, 5]


def test_last_occurrence():
    idx = jnp.array([3, 1, 3, 2, 1, 3])
    np.testing.assert_array_equal(np.asarray(maxtree.last_occurrence(idx)), [0, 0, 0, 1, 1, 1])


# ----------------------------------------------------------------------------- DTree (Theorem 3.1)


def _oracle_apply(W, r, z):
    W = W.copy()
    r = np.atleast_1d(np.asarray(r))
    z = np.asarray(z, np.float64).reshape(len(r), -1)
    for j, rr in enumerate(r):  # sequential: the last occurrence wins
        W[rr] = z[j]
    return W


def _check_dtree(t, W, X, rng, cap):
    G = X.astype(np.float64) @ W.astype(np.float64).T  # (n, m) oracle
    assert maxtree.check_invariant(t.tree)
    np.testing.assert_array_equal(np.asarray(dtree.inner_products(t), np.float64), G)
    np.testing.assert_array_equal(np.asarray(t.W, np.float64), W)
    for tau in thresholds(G, rng, k=2):
        fa = jax.device_get(dtree.query_all(t, tau, cap))
        for i in range(X.shape[0]):
            check_frontier(jax.tree.map(lambda a: a[i], fa), G[i], tau, cap, W.shape[0])
        i = int(rng.integers(X.shape[0]))
        check_frontier(dtree.query(t, i, tau, cap), G[i], tau, cap, W.shape[0])


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.sampled_from(SIZES_M),
    n=st.sampled_from(SIZES_N),
    d=st.sampled_from([3]),
    cap=st.sampled_from([1, 8, 64]),
)
def test_dtree_update_sequence_matches_oracle(seed, m, n, d, cap):
    rng = np.random.default_rng(seed)
    W, X = int_matrix(rng, m, d), int_matrix(rng, n, d)
    t = dtree.init(W, X)
    W = W.astype(np.float64)
    _check_dtree(t, W, X, rng, cap)
    for _ in range(3):
        if rng.random() < 0.4:
            r, z = int(rng.integers(m)), int_matrix(rng, 1, d)[0]
        else:  # a batch with repeated indices
            k = 4
            r, z = rng.integers(0, m, size=k).astype(np.int32), int_matrix(rng, k, d)
        t = dtree.update(t, r, z)
        W = _oracle_apply(W, r, z)
        _check_dtree(t, W, X, rng, cap)


def test_dtree_duplicate_batch_last_wins():
    W = np.zeros((4, 2), np.float32)
    X = np.array([[1, 0], [0, 1]], np.float32)
    t = dtree.init(W, X)
    r = jnp.array([2, 2, 1, 2], jnp.int32)
    z = jnp.array([[5, 0], [7, 0], [1, 1], [3, 9]], jnp.float32)
    t = dtree.update(t, r, z)
    np.testing.assert_array_equal(np.asarray(t.W)[2], [3, 9])
    np.testing.assert_array_equal(np.asarray(dtree.inner_products(t))[:, 2], [3, 9])
    assert maxtree.check_invariant(t.tree)


# ----------------------------------------------------------------------------- WTree (Theorem 3.2)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.sampled_from([1, 3, 13]),
    n=st.sampled_from([1, 5, 9]),
    d=st.sampled_from([3]),
    cap=st.sampled_from([1, 4, 16]),
)
def test_wtree_update_sequence_matches_oracle(seed, m, n, d, cap):
    rng = np.random.default_rng(seed)
    W, X = int_matrix(rng, m, d), int_matrix(rng, n, d)
    t = wtree.init(W, X)
    W = W.astype(np.float64)
    for step in range(4):
        if step:
            k = 4
            r, z = rng.integers(0, m, size=k).astype(np.int32), int_matrix(rng, k, d)
            t = wtree.update(t, r, z)
            W = _oracle_apply(W, r, z)
        G = W @ X.astype(np.float64).T  # (m, n)
        assert maxtree.check_invariant(t.tree)
        np.testing.assert_array_equal(np.asarray(wtree.inner_products(t), np.float64), G)
        for tau in thresholds(G, rng, k=2):
            fa = jax.device_get(wtree.query_all(t, tau, cap))
            for r_ in range(m):
                check_frontier(jax.tree.map(lambda a: a[r_], fa), G[r_], tau, cap, n)
            r_ = int(rng.integers(m))
            check_frontier(wtree.query(t, r_, tau, cap), G[r_], tau, cap, n)


def test_wtree_single_update():
    W = np.array([[1, 0], [0, 1]], np.float32)
    X = np.array([[2, 0], [0, 3], [1, 1]], np.float32)
    t = wtree.update(wtree.init(W, X), 0, jnp.array([0.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(wtree.inner_products(t))[0], [0, 6, 2])
    assert maxtree.check_invariant(t.tree)


# ----------------------------------------------------------------------------- DDFN (Definition 1.3)


def _oracle_pairs(X, Y, b):
    G = X.astype(np.float64) @ Y.astype(np.float64).T
    return [tuple(p) for p in np.argwhere(G > b)]  # argwhere is sorted by (i, j)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.sampled_from([1, 13, 40]),
    n=st.sampled_from([1, 7]),
    cap=st.sampled_from([None, 1, 30]),
)
def test_ddfn_matches_oracle(seed, m, n, cap):
    rng = np.random.default_rng(seed)
    d = 3
    X, Y = rng.integers(-3, 4, size=(n, d)), rng.integers(-3, 4, size=(m, d))
    b = float(rng.integers(-2, 4))
    s = ddfn.init(X, Y, b, cap=cap)
    cap_ = ddfn.default_cap(n, m) if cap is None else cap
    for step in range(3):
        if step:
            j = rng.integers(0, m, size=3).astype(np.int32)
            z = rng.integers(-3, 4, size=(3, d))
            s = ddfn.update(s, j, z)
            for jj, zz in zip(j, z):
                Y[jj] = zz
        q = ddfn.query(s)
        truth = _oracle_pairs(X, Y, b)
        assert q.i.shape == (cap_,)
        valid = np.asarray(q.valid)
        got = list(zip(np.asarray(q.i)[valid].tolist(), np.asarray(q.j)[valid].tolist()))
        if len(truth) <= cap_:
            assert not bool(q.overflow) and int(q.count) == len(truth)
            assert got == truth
            assert np.all(np.asarray(q.i)[~valid] == n) and np.all(np.asarray(q.j)[~valid] == m)
        else:
            assert bool(q.overflow) and cap_ < int(q.count) <= len(truth)
            assert set(got) <= set(truth) and got == sorted(got)


def test_ddfn_default_cap():
    assert ddfn.default_cap(8, 1024) == 256 * 8
    s = ddfn.init(np.ones((2, 2)), np.ones((10, 2)), 0.0)
    assert s.cap == 7 * 2  # 6^5 < 10^4 <= 7^5


# ----------------------------------------------------------------------------- jit, vmap, scan, dtype


def test_vmap_over_index_and_threshold(rng):
    W, X = int_matrix(rng, 50, 3), int_matrix(rng, 4, 3)
    t = dtree.init(W, X)
    G = X.astype(np.float64) @ W.T
    idx = jnp.arange(4)
    taus = jnp.array([0.0, 1.0, 2.0, -1.0])
    fs = jax.vmap(lambda i, tau: dtree.query(t, i, tau, 20))(idx, taus)
    for i in range(4):
        check_frontier(jax.tree.map(lambda a: a[i], fs), G[i], float(taus[i]), 20, 50)
    # query_all with per-tree thresholds agrees with the vmapped single queries
    fa = dtree.query_all(t, taus, 20)
    np.testing.assert_array_equal(np.asarray(fa.indices), np.asarray(fs.indices))


def test_scan_carry_updates_and_jit_query(rng):
    m, n, d, k = 37, 3, 4, 5
    W, X = int_matrix(rng, m, d), int_matrix(rng, n, d)
    rs = rng.integers(0, m, size=(6, k)).astype(np.int32)
    zs = int_matrix(rng, 6 * k, d).reshape(6, k, d)

    @jax.jit
    def run(t):
        def body(t, rz):
            t = dtree.update(t, rz[0], rz[1])
            return t, dtree.query(t, 0, 0.5, 8).count

        return jax.lax.scan(body, t, (jnp.asarray(rs), jnp.asarray(zs)))

    t, counts = run(dtree.init(W, X))
    Wo = W.astype(np.float64)
    expect = []
    for s in range(6):
        Wo = _oracle_apply(Wo, rs[s], zs[s])
        expect.append(min(int((X[0] @ Wo.T > 0.5).sum()), 10**9))
    assert maxtree.check_invariant(t.tree)
    np.testing.assert_array_equal(np.asarray(t.W), Wo)
    c = np.asarray(counts)
    for s in range(6):
        assert c[s] == expect[s] or (expect[s] > 8 and c[s] > 8)


def test_donated_update_matches(rng):
    W, X = int_matrix(rng, 20, 3), int_matrix(rng, 2, 3)
    a = dtree.update(dtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)))
    b = dtree.update(dtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)), donate=True)
    for la, lb in zip(a.tree.levels, b.tree.levels):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    c = wtree.update(wtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)), donate=True)
    assert maxtree.check_invariant(c.tree)
    s = ddfn.update(ddfn.init(X, W, 0.5), jnp.array([1, 4]), jnp.ones((2, 3)), donate=True)
    np.testing.assert_array_equal(np.asarray(s.dtree.tree.levels[0]), np.asarray(a.tree.levels[0]))


def test_no_recompilation(rng):
    W, X = int_matrix(rng, 30, 3), int_matrix(rng, 4, 3)
    t = dtree.init(W, X)
    dtree.query(t, 0, 0.5, 7)
    t = dtree.update(t, 3, jnp.ones(3, jnp.float32))
    before_q = maxtree.query._cache_size()
    before_u = dtree._update_jit._cache_size()
    with jax.log_compiles(True):
        for i, tau in [(1, 0.0), (2, 1.5), (3, -2.0)]:
            dtree.query(t, i, tau, 7)
            t = dtree.update(t, i, jnp.full(3, float(i), jnp.float32))
    assert maxtree.query._cache_size() == before_q
    assert dtree._update_jit._cache_size() == before_u


def test_float64_keeps_dtype(rng):
    with jax.enable_x64(True):
        W, X = rng.normal(size=(9, 3)), rng.normal(size=(2, 3))
        t = dtree.init(W, X)
        assert t.W.dtype == jnp.float64 and t.tree.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(dtree.inner_products(t)), X @ W.T, rtol=1e-14)
        t = dtree.update(t, jnp.array([0, 8]), jnp.ones((2, 3)))
        assert t.tree.dtype == jnp.float64 and maxtree.check_invariant(t.tree)
        f = dtree.query(t, 0, 0.1, 4)
        check_frontier(f, np.asarray(dtree.inner_products(t))[0], 0.1, 4, 9)
        w = wtree.init(W, X)
        assert w.tree.dtype == jnp.float64
        s = ddfn.init(X, W, 0.1)
        assert s.dtree.W.dtype == jnp.float64 and s.b.dtype == jnp.float64
    t32 = dtree.init(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32))
    assert t32.tree.dtype == jnp.float32


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "W, X, exc, words",
    [
        (np.ones(3), np.ones((2, 3)), ValueError, "W must be a 2-D"),
        (np.ones((0, 3)), np.ones((2, 3)), ValueError, "W must have at least one row"),
        (np.ones((4, 3)), np.ones((0, 3)), ValueError, "X must have at least one row"),
        (np.ones((4, 3)), np.ones((2, 2)), ValueError, "d=3"),
        (np.full((4, 3), np.nan), np.ones((2, 3)), ValueError, "W must be finite"),
        (np.ones((4, 3)), np.full((2, 3), np.inf), ValueError, "X must be finite"),
    ],
)
def test_init_bad_input(W, X, exc, words):
    for mod in (dtree, wtree):
        with pytest.raises(exc, match=words):
            mod.init(W, X)


def test_update_and_query_bad_input():
    t = dtree.init(np.ones((4, 3)), np.ones((2, 3)))
    with pytest.raises(IndexError, match=r"r must be in \[0, m=4\)"):
        dtree.update(t, 4, np.ones(3))
    with pytest.raises(IndexError, match="r must be in"):
        dtree.update(t, np.array([0, -1]), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"z must have shape \(d,\)"):
        dtree.update(t, 1, np.ones(2))
    with pytest.raises(ValueError, match=r"z must have shape \(k, d\)"):
        dtree.update(t, np.array([0, 1]), np.ones((3, 3)))
    with pytest.raises(ValueError, match="z must be finite"):
        dtree.update(t, 1, np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="r must be an integer"):
        dtree.update(t, 1.0, np.ones(3))
    with pytest.raises(IndexError, match=r"i must be in \[0, n=2\)"):
        dtree.query(t, 2, 0.0, 3)
    with pytest.raises(ValueError, match="tau must be finite"):
        dtree.query(t, 0, np.nan, 3)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        dtree.query(t, 0, 0.0, 0)
    with pytest.raises(TypeError, match="capacity must be a Python int"):
        dtree.query(t, 0, 0.0, 2.5)
    with pytest.raises(ValueError, match="tau must be finite"):
        dtree.query_all(t, np.array([0.0, np.inf]), 3)
    w = wtree.init(np.ones((4, 3)), np.ones((2, 3)))
    with pytest.raises(IndexError, match=r"r must be in \[0, m=4\)"):
        wtree.query(w, 9, 0.0, 3)
    with pytest.raises(ValueError, match="b must be finite"):
        ddfn.init(np.ones((2, 3)), np.ones((4, 3)), np.inf)
    with pytest.raises(ValueError, match="cap must be >= 1"):
        ddfn.init(np.ones((2, 3)), np.ones((4, 3)), 0.0, cap=0)
    with pytest.raises(IndexError, match=r"j must be in \[0, m=4\)"):
        ddfn.update(ddfn.init(np.ones((2, 3)), np.ones((4, 3)), 0.0), 4, np.ones(3))


def test_checks_add_nothing_under_jit():
    # Under jit the indices and thresholds are tracers: value checks are skipped, shapes still checked.
    t = dtree.init(np.ones((4, 3), np.float32), np.ones((2, 3), np.float32))
    out = jax.jit(lambda t, i, tau: dtree.query(t, i, tau, 4))(t, 1, 0.5)
    assert int(out.count) == 4 and not bool(out.overflow)  # all 4 neurons have <w, x> = 3 > 0.5
    with pytest.raises(ValueError, match="z must have shape"):
        jax.jit(lambda t, z: dtree.update(t, 0, z))(t, jnp.ones(5))
