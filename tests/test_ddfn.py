"""Dynamic Detection of Firing Neurons (Definition 1.3) against a brute-force numpy float64 oracle."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tree_oracles import SETTINGS, int_matrix

from jaxcorr import ddfn, dtree


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
        assert isinstance(q, ddfn.Pairs)
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


def test_donated_update_matches(rng):
    W, X = int_matrix(rng, 20, 3), int_matrix(rng, 2, 3)
    a = dtree.update(dtree.init(W, X), jnp.array([1, 4]), jnp.ones((2, 3)))
    for donate in (False, True):
        s = ddfn.update(ddfn.init(X, W, 0.5), jnp.array([1, 4]), jnp.ones((2, 3)), donate=donate)
        np.testing.assert_array_equal(np.asarray(s.dtree.tree.levels[0]), np.asarray(a.tree.levels[0]))
        np.testing.assert_array_equal(np.asarray(s.dtree.W), np.asarray(a.W))


def test_float64_keeps_dtype(rng):
    with jax.enable_x64(True):
        W, X = rng.normal(size=(9, 3)), rng.normal(size=(2, 3))
        s = ddfn.init(X, W, 0.1)
        assert s.dtree.W.dtype == jnp.float64 and s.b.dtype == jnp.float64


def test_bad_input():
    with pytest.raises(ValueError, match="b must be finite"):
        ddfn.init(np.ones((2, 3)), np.ones((4, 3)), np.inf)
    with pytest.raises(ValueError, match="cap must be >= 1"):
        ddfn.init(np.ones((2, 3)), np.ones((4, 3)), 0.0, cap=0)
    with pytest.raises(ValueError, match=r"Y must have d=3 columns"):
        ddfn.init(np.ones((2, 3)), np.ones((4, 2)), 0.0)
    with pytest.raises(ValueError, match="X must be finite"):
        ddfn.init(np.full((2, 3), np.nan), np.ones((4, 3)), 0.0)
    with pytest.raises(IndexError, match=r"j must be in \[0, m=4\)"):
        ddfn.update(ddfn.init(np.ones((2, 3)), np.ones((4, 3)), 0.0), 4, np.ones(3))


def test_docstring_examples():
    assert doctest.testmod(ddfn).failed == 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_points_are_refused_by_name(dtype):
    X, Y = jnp.ones((4, 3)), jnp.ones((8, 3))
    with pytest.raises(ValueError, match=r"^X has dtype .*float32"):
        ddfn.init(X.astype(dtype), Y, 0.5)
    with pytest.raises(ValueError, match=r"^Y has dtype .*float32"):
        ddfn.init(X, Y.astype(dtype), 0.5)
    with pytest.raises(ValueError, match=r"^z has dtype .*float32"):
        ddfn.update(ddfn.init(X, Y, 0.5), 1, jnp.ones(3, dtype))
