"""Correlation WTree (Theorem 3.2: Algorithms 13-15) against a brute-force numpy float64 oracle.

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
from tree_oracles import BAD_INIT, SETTINGS, check_frontier, int_matrix, oracle_apply, thresholds

from jaxcorr import maxtree, wtree


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
            W = oracle_apply(W, r, z)
        G = W @ X.astype(np.float64).T  # (m, n)
        assert maxtree.check_invariant(t.tree)
        np.testing.assert_array_equal(np.asarray(wtree.inner_products(t), np.float64), G)
        for tau in thresholds(G, rng, k=2):
            fa = jax.device_get(wtree.query_all(t, tau, cap))
            for r_ in range(m):
                check_frontier(jax.tree.map(lambda a, r_=r_: a[r_], fa), G[r_], tau, cap, n)
            r_ = int(rng.integers(m))
            check_frontier(wtree.query(t, r_, tau, cap), G[r_], tau, cap, n)


def test_wtree_single_update():
    W = np.array([[1, 0], [0, 1]], np.float32)
    X = np.array([[2, 0], [0, 3], [1, 1]], np.float32)
    t = wtree.update(wtree.init(W, X), 0, jnp.array([0.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(wtree.inner_products(t))[0], [0, 6, 2])
    assert maxtree.check_invariant(t.tree)


def test_donated_update_matches(rng):
    W, X = int_matrix(rng, 20, 3), int_matrix(rng, 2, 3)
    a = wtree.update(wtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)))
    c = wtree.update(wtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)), donate=True)
    assert maxtree.check_invariant(c.tree)
    for la, lc in zip(jax.tree.leaves(a), jax.tree.leaves(c)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lc))


def test_unchecked_cores(rng):
    W, X = int_matrix(rng, 20, 3), int_matrix(rng, 2, 3)
    a = wtree.update(wtree.init(W, X), jnp.array([1, 4, 1]), jnp.ones((3, 3)))
    b = wtree.update_unchecked(wtree.init_unchecked(W, X), jnp.array([1, 4, 1]), jnp.ones((3, 3)), donate=True)
    assert isinstance(b, wtree.WTree)
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


def test_float64_keeps_dtype(rng):
    with jax.enable_x64(True):
        W, X = rng.normal(size=(9, 3)), rng.normal(size=(2, 3))
        w = wtree.init(W, X)
        assert w.W.dtype == jnp.float64 and w.tree.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(wtree.inner_products(w)), W @ X.T, rtol=1e-14)
        w = wtree.update(w, 3, np.ones(3))
        assert w.tree.dtype == jnp.float64 and maxtree.check_invariant(w.tree)
    assert wtree.init(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32)).tree.dtype == jnp.float32


@pytest.mark.parametrize("W, X, exc, words", BAD_INIT)
def test_init_bad_input(W, X, exc, words):
    with pytest.raises(exc, match=words):
        wtree.init(W, X)


def test_update_and_query_bad_input():
    w = wtree.init(np.ones((4, 3)), np.ones((2, 3)))
    with pytest.raises(IndexError, match=r"r must be in \[0, m=4\)"):
        wtree.query(w, 9, 0.0, 3)
    with pytest.raises(IndexError, match=r"r must be in \[0, m=4\)"):
        wtree.update(w, 4, np.ones(3))
    with pytest.raises(ValueError, match="tau must be finite"):
        wtree.query(w, 0, np.nan, 3)
    with pytest.raises(ValueError, match=r"tau must be a scalar or have shape \(m,\)=\(4,\)"):
        wtree.query_all(w, np.zeros(2), 3)


def test_docstring_examples():
    assert doctest.testmod(wtree).failed == 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_data_and_weights_are_refused_by_name(dtype):
    W, X = jnp.ones((8, 3)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"^W has dtype .*float32"):
        wtree.init(W.astype(dtype), X)
    with pytest.raises(ValueError, match=r"^X has dtype .*float32"):
        wtree.init(W, X.astype(dtype))
    with pytest.raises(ValueError, match=r"^z has dtype .*float32"):
        wtree.update(wtree.init(W, X), jnp.array([0, 2]), jnp.ones((2, 3), dtype))
    t = wtree.init(jnp.array([[2, 1]], jnp.int32), jnp.array([[1, -1], [0, 2]], jnp.int32))
    assert t.W.dtype == jnp.result_type(float) and wtree.inner_products(t).tolist() == [[1.0, 2.0]]
