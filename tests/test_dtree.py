"""Correlation DTree (Theorem 3.1: Algorithms 1, 2, 10-12) against a brute-force numpy float64 oracle.

Data are integer-valued, so every inner product is exact in float32 and thresholds equal to leaf
values test the strict ">" on exact ties.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tree_oracles import (
    BAD_INIT,
    SETTINGS,
    SIZES_M,
    SIZES_N,
    check_frontier,
    compiled,
    int_matrix,
    oracle_apply,
    thresholds,
)

from jaxcorr import dtree, maxtree


def _check_dtree(t, W, X, rng, cap):
    G = X.astype(np.float64) @ W.astype(np.float64).T  # (n, m) oracle
    assert maxtree.check_invariant(t.tree)
    np.testing.assert_array_equal(np.asarray(dtree.inner_products(t), np.float64), G)
    np.testing.assert_array_equal(np.asarray(t.W, np.float64), W)
    for tau in thresholds(G, rng, k=2):
        fa = jax.device_get(dtree.query_all(t, tau, cap))
        for i in range(X.shape[0]):
            check_frontier(jax.tree.map(lambda a, i=i: a[i], fa), G[i], tau, cap, W.shape[0])
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
        W = oracle_apply(W, r, z)
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


def test_vmap_over_index_and_threshold(rng):
    W, X = int_matrix(rng, 50, 3), int_matrix(rng, 4, 3)
    t = dtree.init(W, X)
    G = X.astype(np.float64) @ W.T
    idx = jnp.arange(4)
    taus = jnp.array([0.0, 1.0, 2.0, -1.0])
    fs = jax.vmap(lambda i, tau: dtree.query(t, i, tau, 20))(idx, taus)
    for i in range(4):
        check_frontier(jax.tree.map(lambda a, i=i: a[i], fs), G[i], float(taus[i]), 20, 50)
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
        Wo = oracle_apply(Wo, rs[s], zs[s])
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


def test_unchecked_cores(rng):
    """``init_unchecked`` / ``update_unchecked`` are the jitted cores of the checked functions."""
    W, X = int_matrix(rng, 20, 3), int_matrix(rng, 2, 3)
    a = dtree.update(dtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)))
    for donate in (False, True):
        b = dtree.update_unchecked(dtree.init_unchecked(W, X), jnp.array([1, 4]), jnp.ones((2, 3)), donate=donate)
        assert isinstance(b, dtree.DTree)
        for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


def test_no_recompilation(rng):
    W, X = int_matrix(rng, 30, 3), int_matrix(rng, 4, 3)
    t = dtree.init(W, X)
    dtree.query(t, 0, 0.5, 7)
    t = dtree.update(t, 3, jnp.ones(3, jnp.float32))

    def calls():
        nonlocal t
        for i, tau in [(1, 0.0), (2, 1.5), (3, -2.0)]:
            dtree.query(t, i, tau, 7)
            t = dtree.update(t, i, jnp.full(3, float(i), jnp.float32))

    assert not [name for name in compiled(calls) if "query" in name or "update" in name]


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
    t32 = dtree.init(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32))
    assert t32.tree.dtype == jnp.float32


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("W, X, exc, words", BAD_INIT)
def test_init_bad_input(W, X, exc, words):
    with pytest.raises(exc, match=words):
        dtree.init(W, X)


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
    with pytest.raises(ValueError, match="tau must be finite"):
        dtree.query(t, 0, np.inf, 3)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        dtree.query(t, 0, 0.0, 0)
    with pytest.raises(TypeError, match="capacity must be a Python int"):
        dtree.query(t, 0, 0.0, 2.5)
    with pytest.raises(ValueError, match="tau must be finite"):
        dtree.query_all(t, np.array([0.0, np.inf]), 3)
    with pytest.raises(ValueError, match=r"tau must be a scalar or have shape \(n,\)=\(2,\)"):
        dtree.query_all(t, np.zeros(4), 3)


def test_checks_add_nothing_under_jit():
    # Under jit the indices and thresholds are tracers: value checks are skipped, shapes still checked.
    t = dtree.init(np.ones((4, 3), np.float32), np.ones((2, 3), np.float32))
    out = jax.jit(lambda t, i, tau: dtree.query(t, i, tau, 4))(t, 1, 0.5)
    assert int(out.count) == 4 and not bool(out.overflow)  # all 4 neurons have <w, x> = 3 > 0.5
    with pytest.raises(ValueError, match="z must have shape"):
        jax.jit(lambda t, z: dtree.update(t, 0, z))(t, jnp.ones(5))


def test_docstring_examples():
    assert doctest.testmod(dtree).failed == 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_data_and_weights_are_refused_by_name(dtype):
    W, X = jnp.ones((8, 3)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"^W has dtype .*float32"):
        dtree.init(W.astype(dtype), X)
    with pytest.raises(ValueError, match=r"^X has dtype .*float32"):
        dtree.init(W, X.astype(dtype))
    t = dtree.init(W, X)
    with pytest.raises(ValueError, match=r"^z has dtype .*float32"):
        dtree.update(t, 1, jnp.ones(3, dtype))


def test_integer_inputs_become_the_default_float_exactly():
    t = dtree.init(jnp.array([[2, 1], [0, 3]], jnp.int32), np.array([[1, -1]], np.int64))
    assert t.W.dtype == t.X.dtype == jnp.result_type(float)
    assert dtree.inner_products(t).tolist() == [[1.0, -3.0]]
