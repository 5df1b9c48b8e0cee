"""Oracles and helpers shared by the tests of the tree modules (test_maxtree, test_dtree, test_wtree,
test_ddfn): a brute-force numpy float64 check of a query result, integer-valued test data (every
inner product exact in float32) and thresholds that hit leaf values exactly (the strict ``>``)."""

import logging

import jax
import numpy as np
from hypothesis import HealthCheck, settings

# Few distinct shapes keep jit compilations (the cost of these tests) down; values vary freely.
SIZES_M = [1, 5, 13, 64]
SIZES_N = [1, 3]
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (W, X, exception, message) for INIT of the DTree and the WTree.
BAD_INIT = [
    (np.ones(3), np.ones((2, 3)), ValueError, "W must be a 2-D"),
    (np.ones((0, 3)), np.ones((2, 3)), ValueError, "W must have at least one row"),
    (np.ones((4, 3)), np.ones((0, 3)), ValueError, "X must have at least one row"),
    (np.ones((4, 3)), np.ones((2, 2)), ValueError, "d=3"),
    (np.full((4, 3), np.nan), np.ones((2, 3)), ValueError, "W must be finite"),
    (np.ones((4, 3)), np.full((2, 3), np.inf), ValueError, "X must be finite"),
]


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


def check_forest(f, vals, tau, capacity):
    """``f`` (a ForestFrontier) against the oracle: all (tree, leaf) with ``vals[tree, leaf] > tau``."""
    T, L = vals.shape
    ti, li, valid = np.asarray(f.tree), np.asarray(f.leaf), np.asarray(f.valid)
    truth = np.argwhere(np.asarray(vals, np.float64) > tau)  # sorted by (tree, leaf)
    assert ti.shape == li.shape == valid.shape == (capacity,)
    assert np.all(ti[~valid] == T) and np.all(li[~valid] == L)
    got = np.stack([ti, li], 1)[valid]
    if len(truth) <= capacity:
        assert not bool(f.overflow) and int(f.count) == len(truth)
        np.testing.assert_array_equal(got, truth.reshape(-1, 2))
    else:
        assert bool(f.overflow) and capacity < int(f.count) <= len(truth)
        pairs = [tuple(p) for p in got.tolist()]
        assert set(pairs) <= {tuple(p) for p in truth.tolist()} and pairs == sorted(set(pairs))


def thresholds(values, rng, k=3):
    """Taus equal to leaf values (exact ties), between them, and outside the range."""
    flat = np.unique(np.asarray(values).ravel())
    picks = list(rng.choice(flat, size=min(k, flat.size), replace=False))
    return [float(t) for t in picks] + [float(flat.min()) - 1.0, float(flat.max()), float(np.median(flat)) + 0.5]


def oracle_apply(W, r, z):
    """Sequential UPDATE on a numpy copy of ``W``: the last occurrence of a repeated index wins."""
    W = W.copy()
    r = np.atleast_1d(np.asarray(r))
    z = np.asarray(z, np.float64).reshape(len(r), -1)
    for j, rr in enumerate(r):
        W[rr] = z[j]
    return W


def compiled(fn):
    """Names of the functions XLA compiles while ``fn()`` runs (from ``jax.log_compiles``)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(handler)
    return [m.split("jit(")[1].split(")")[0] for m in messages if m.startswith("Compiling jit(")]
