"""Batched max-trees (Algorithm 7, MAKEMAXTREE) and FIND (Algorithm 2/12/15) against brute force.

The fast frontier query is compared with a numpy float64 oracle and with the plain level-by-level
reference beside it (:func:`maxtree.query_reference`), including overflow; the capacity policy
(:func:`maxtree.allocate`) against its formula. Data are integer-valued, so thresholds equal to leaf
values test the strict ">" on exact ties.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_oracles import SETTINGS, SIZES_M, check_forest, check_frontier, compiled, thresholds

from jaxcorr import maxtree

# ----------------------------------------------------------------------------- build (Algorithm 7)


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


def test_last_occurrence():
    idx = jnp.array([3, 1, 3, 2, 1, 3])
    np.testing.assert_array_equal(np.asarray(maxtree.last_occurrence(idx)), [0, 0, 0, 1, 1, 1])


# ----------------------------------------------------------------------------- query (FIND)


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
        check_forest(jax.device_get(maxtree.query_forest(t, tau, cap)), vals, tau, cap)


def _assert_same(fast, ref):
    """The fast and the reference query agree: ids, mask and overflow always, count unless overflow."""
    fast, ref = jax.device_get(fast), jax.device_get(ref)
    for name in fast._fields:
        if name != "count":
            np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)
    cap = np.shape(fast.valid)[-1]
    over = np.asarray(fast.overflow)
    np.testing.assert_array_equal(np.where(over, 0, fast.count), np.where(over, 0, ref.count))
    assert np.all(np.where(over, fast.count, cap + 1) > cap) and np.all(np.where(over, ref.count, cap + 1) > cap)


@pytest.mark.parametrize("leaves, cap", [(1, 1), (100, 3), (2500, 33), (8, 8), (300, 400)])
def test_fast_query_equals_reference(leaves, cap):
    """The bit-mask frontier (``_descend``, up to five levels per step) equals the plain
    one-level-per-step reference on random trees, at, below and above capacity (overflow), for one
    tree, every tree and the forest; and the reference itself matches the oracle. (8, 8): a WTree's
    trees, every leaf within capacity, searched from the root in one step; (300, 400): the same
    for a deep tree, from five levels above the leaves."""
    rng = np.random.default_rng(leaves + cap)
    for _ in range(2):
        vals = rng.integers(-60, 60, size=(3, leaves)).astype(np.float32)
        vals[2, rng.integers(0, leaves, max(1, leaves // 8))] = 70.0  # a tied block above the rest
        t = maxtree.build(jnp.asarray(vals))
        flat = np.sort(vals.ravel())
        taus = thresholds(vals, rng, k=2) + [float(flat[-min(k, flat.size)]) for k in (cap, cap + 1, 4 * cap)]
        for tau in taus:
            refs = []
            for row in range(3):
                refs.append(jax.device_get(maxtree.query_reference(t, row, tau, cap)))
                check_frontier(refs[-1], vals[row], tau, cap, leaves)
                _assert_same(maxtree.query(t, row, tau, cap), refs[-1])
            _assert_same(maxtree.query_all(t, tau, cap), jax.tree.map(lambda *a: np.stack(a), *refs))
            ref_forest = maxtree.query_forest_reference(t, tau, cap)
            check_forest(jax.device_get(ref_forest), vals, tau, cap)
            _assert_same(maxtree.query_forest(t, tau, cap), ref_forest)


@pytest.mark.parametrize("leaves, cap", [(8, 8), (300, 40), (3000, 100), (3000, 2000), (1, 1)])
def test_query_all_mask_is_find_where_it_tests_every_leaf(leaves, cap):
    """Where FIND's search starts within JUMP levels of the leaves (every node of that level in the
    frontier), it tests every leaf: its result as a mask equals the reference FIND's ids, count and
    overflow (at, below and above capacity); elsewhere query_all_mask refuses."""
    rng = np.random.default_rng(leaves + cap)
    vals = rng.integers(-60, 60, size=(3, leaves)).astype(np.float32)
    t = maxtree.build(jnp.asarray(vals))
    every = maxtree.searches_every_leaf(leaves, cap)
    assert every == (maxtree.padded_size(leaves) <= 32 * cap)
    if not every:
        with pytest.raises(ValueError, match="every"):
            maxtree.query_all_mask(t, 0.0, cap)
        return
    flat = np.sort(vals.ravel())
    for tau in thresholds(vals, rng, k=2) + [float(flat[-min(k, flat.size)]) for k in (cap, cap + 1, 4 * cap)]:
        mask, count, over = jax.device_get(maxtree.query_all_mask(t, tau, cap))
        for row in range(3):
            ref = jax.device_get(maxtree.query_reference(t, row, tau, cap))
            np.testing.assert_array_equal(mask[row], vals[row] > tau)
            assert bool(over[row]) == bool(ref.overflow)
            if not ref.overflow:
                assert count[row] == ref.count
                np.testing.assert_array_equal(np.flatnonzero(mask[row]), np.asarray(ref.indices)[ref.valid])


def test_reference_can_fail_to_match():
    """The equality check above can fail: a reference that kept the last passing leaves would differ."""
    t = maxtree.build(jnp.arange(40.0)[None])
    fast = maxtree.query(t, 0, 10.0, 4)
    ref = maxtree.query_reference(t, 0, 10.0, 4)
    _assert_same(fast, ref)
    assert bool(fast.overflow) and np.asarray(fast.indices).tolist() == [11, 12, 13, 14]
    shifted = ref._replace(indices=ref.indices + 1)
    with pytest.raises(AssertionError):
        _assert_same(fast, shifted)


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
    """Lemma D.4: no value the query computes grows with the leaf count (no level is copied or
    scanned, for a single tree either); the total grows only with the depth."""
    cap, trees = 4, 3
    stats = {}
    for P in (2**12, 2**18):
        t = maxtree.build(jnp.zeros((trees, P)))
        one = _intermediate_sizes(lambda tr: maxtree.query(tr, 1, 0.5, cap), t)
        every = _intermediate_sizes(lambda tr: maxtree.query_all(tr, 0.5, cap), t)
        stats[P] = (max(one), max(every), sum(one), sum(every))
        assert max(one) <= cap * 2**maxtree.JUMP and max(every) <= trees * cap * 2**maxtree.JUMP
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
    f = maxtree.query(t, 0, -np.inf, capacity=8)  # -inf is a valid threshold: every real leaf
    assert int(f.count) == 5 and np.asarray(f.indices).tolist() == [0, 1, 2, 3, 4, 5, 5, 5]


def test_query_forest_is_a_named_tuple():
    t = maxtree.build(jnp.array([[1.0, 5.0, 3.0], [0.0, -2.0, 7.0]]))
    f = maxtree.query_forest(t, 2.0, 4)
    assert isinstance(f, maxtree.ForestFrontier)
    assert f._fields == ("tree", "leaf", "valid", "count", "overflow")
    assert np.asarray(f.tree).tolist() == [0, 0, 1, 2] and np.asarray(f.leaf).tolist() == [1, 2, 2, 3]
    assert int(f.count) == 3 and not bool(f.overflow)
    ti, li, valid, count, overflow = f  # still unpacks as the old 5-tuple
    assert (ti is f.tree) and (li is f.leaf) and (count is f.count) and (overflow is f.overflow)
    assert np.asarray(valid).tolist() == [True, True, True, False]


def test_no_recompilation(rng):
    """Python, numpy and JAX scalars of any int/float dtype share one compiled query per capacity."""
    t = maxtree.build(jnp.asarray(rng.normal(size=(3, 50)), jnp.float32))
    args = [(1, 0.0), (2, 1.5), (np.int64(0), np.float64(-2.0)), (np.int32(1), np.float32(0.5)),
            (jnp.asarray(2), jnp.asarray(0.1)), (jnp.asarray(0, jnp.int32), jnp.asarray(1.0, jnp.float32))]
    maxtree.query(t, 0, 0.5, 7)
    maxtree.query_all(t, 0.5, 7)

    def calls():
        for i, tau in args:
            jax.block_until_ready((maxtree.query(t, i, tau, 7), maxtree.query_all(t, tau, 7)))

    assert not [name for name in compiled(calls) if "query" in name]
    assert "_query" in compiled(lambda: maxtree.query(t, 0, 0.5, 9))  # a new capacity does compile


# ----------------------------------------------------------------------------- bad input


def test_query_checks_tree_index_and_nan_tau():
    """Issue 11 item 4: an out-of-range tree index and a NaN threshold are refused eagerly (before,
    index 2 of 2 trees read an empty set with one capacity and another tree's leaves with another)."""
    t = maxtree.build(jnp.array([[1.0, 5.0, 3.0], [0.0, -2.0, 7.0]]))
    for bad in (2, -1, 10**6, np.int64(2), jnp.asarray(5)):
        for fn in (maxtree.query, maxtree.query_reference):
            with pytest.raises(IndexError, match=r"t must be in \[0, num_trees=2\)"):
                fn(t, bad, 0.0, 4)
    with pytest.raises(ValueError, match="t must be an integer"):
        maxtree.query(t, 1.0, 0.0, 4)
    with pytest.raises(ValueError, match="t must be a scalar"):
        maxtree.query(t, jnp.array([0, 1]), 0.0, 4)
    for fn in (lambda tau: maxtree.query(t, 0, tau, 4), lambda tau: maxtree.query_all(t, tau, 4),
               lambda tau: maxtree.query_forest(t, tau, 4), lambda tau: maxtree.query_forest_reference(t, tau, 4)):
        for nan in (np.nan, jnp.asarray(np.nan), np.float32("nan")):
            with pytest.raises(ValueError, match="tau must not be NaN"):
                fn(nan)
    with pytest.raises(ValueError, match="tau must not be NaN"):
        maxtree.query_all(t, np.array([0.0, np.nan]), 4)
    with pytest.raises(ValueError, match=r"tau must be a scalar or have shape \(num_trees,\)=\(2,\)"):
        maxtree.query_all(t, np.zeros(3), 4)
    with pytest.raises(ValueError, match="tau must be a scalar"):
        maxtree.query_forest(t, np.zeros(2), 4)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        maxtree.query_forest(t, 0.0, 0)
    with pytest.raises(TypeError, match="capacity must be a Python int"):
        maxtree.query_all(t, 0.0, 2.5)
    assert int(maxtree.query(t, 1, np.inf, 4).count) == 0  # +inf: nothing passes, not an error


def test_query_checks_add_nothing_under_jit():
    """Traced indices and thresholds skip the value checks (no host round trip); shapes still checked."""
    t = maxtree.build(jnp.array([[1.0, 5.0, 3.0], [0.0, -2.0, 7.0]]))
    out = jax.jit(lambda t, i, tau: maxtree.query(t, i, tau, 4))(t, 1, 0.5)
    assert np.asarray(out.indices).tolist() == [2, 3, 3, 3]
    out = jax.vmap(lambda i, tau: maxtree.query(t, i, tau, 4))(jnp.arange(2), jnp.array([2.0, -1.0]))
    assert np.asarray(out.count).tolist() == [2, 2]
    forest = jax.jit(lambda t, tau: maxtree.query_forest(t, tau, 4))(t, 2.0)
    assert int(forest.count) == 3
    with pytest.raises(ValueError, match="t must be a scalar"):
        jax.jit(lambda t, i: maxtree.query(t, i, 0.0, 4))(t, jnp.array([0, 1]))


# ----------------------------------------------------------------------------- capacity policy


def test_bucket_few_sizes_little_waste():
    xs = np.arange(1, 20001)
    b = np.array([maxtree.bucket(int(x)) for x in xs])
    assert np.all(b >= xs) and np.all(np.diff(b) >= 0)
    assert np.all(b[xs <= 8] == 8)
    big = xs > 8
    pad = np.array([maxtree.padded_size(int(x)) for x in xs[big]])
    assert np.all(b[big] - xs[big] < np.maximum(8, pad // 8))  # below P/8 (P/2 < x <= P): x/4
    assert len(np.unique(b)) <= 8 * int(np.log2(xs[-1]) + 1)  # 8 sizes per power of two
    assert maxtree.bucket(1, minimum=1) == 1 and maxtree.bucket(12, minimum=1) == 12
    assert maxtree.bucket(100) == 112 and maxtree.bucket(1025) == 1280


def test_allocate_formula_and_bounds():
    for counts in (0, 1, 7, 57, 64, 1000, 12345):
        want = maxtree.bucket(max(int(counts * 1.25) + 8, 1))
        assert maxtree.allocate(counts) == want
        assert maxtree.allocate([counts, 0, counts // 2]) == want  # the largest count decides
        assert maxtree.allocate(np.array([[counts]], np.int32)) == want
        assert maxtree.allocate(counts) >= int(counts * 1.25) + 8  # headroom kept
    assert maxtree.allocate([]) == 8 and maxtree.allocate(0, multiplier=1, extra=0) == 8
    assert maxtree.allocate(100, multiplier=1.0, extra=0) == 112
    assert maxtree.allocate(100, multiplier=2.0, extra=0) == 224
    assert maxtree.allocate(40, ceiling=50) == 50 and maxtree.allocate(1, ceiling=3) == 3
    assert maxtree.allocate(70, previous=64) == 128  # bucket(95) = 96 < 2 * 64
    assert maxtree.allocate(700, previous=64) == maxtree.bucket(883)  # the counts decide
    assert maxtree.allocate(70, previous=64, ceiling=100) == 100
    f = maxtree.query_all(maxtree.build(jnp.arange(24.0).reshape(2, 12)), 5.0, 4)
    assert maxtree.allocate(f.count) == maxtree.bucket(int(12 * 1.25) + 8)  # Frontier counts, (T,)


def test_allocate_sizes_a_query_that_fits():
    """The jax-md loop of the docstring: allocate, query, re-allocate on overflow; ends exact."""
    rng = np.random.default_rng(3)
    vals = rng.normal(size=(4, 3000)).astype(np.float32)
    t = maxtree.build(jnp.asarray(vals))
    cap, reruns = maxtree.allocate(0, ceiling=3000), 0
    while True:
        f = maxtree.query_all(t, 0.5, cap)
        if not bool(f.overflow.any()):
            break
        cap, reruns = maxtree.allocate(f.count, ceiling=3000, previous=cap), reruns + 1
    assert 1 <= reruns <= 8
    for row in range(4):
        check_frontier(jax.tree.map(lambda a, r=row: a[r], f), vals[row], 0.5, cap, 3000)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"counts": -1}, ValueError, "counts must be >= 0"),
        ({"counts": [1.5]}, ValueError, "counts must be integers"),
        ({"counts": 3, "multiplier": 0.5}, ValueError, "multiplier must be a finite number >= 1"),
        ({"counts": 3, "multiplier": float("nan")}, ValueError, "multiplier"),
        ({"counts": 3, "multiplier": "2"}, ValueError, "multiplier"),
        ({"counts": 3, "extra": -1}, ValueError, "extra must be >= 0"),
        ({"counts": 3, "extra": 1.5}, TypeError, "extra must be an int"),
        ({"counts": 3, "ceiling": 0}, ValueError, "ceiling must be >= 1"),
        ({"counts": 3, "previous": 0}, ValueError, "previous must be >= 1"),
    ],
)
def test_allocate_bad_input(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        maxtree.allocate(**kwargs)


def test_allocate_refuses_traced_counts():
    with pytest.raises(ValueError, match="counts must be concrete"):
        jax.jit(lambda c: maxtree.allocate(c))(jnp.asarray(3))


def test_docstring_examples():
    assert doctest.testmod(maxtree).failed == 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_values_are_refused_by_name(dtype):
    with pytest.raises(ValueError, match=r"values has dtype (bfloat16|float16).*float32.*float64"):
        maxtree.build(jnp.ones((2, 5), dtype))


def test_integer_values_build_a_default_float_tree():
    t = maxtree.build(jnp.array([[3, -1, 7]], jnp.int32))
    assert t.dtype == jnp.result_type(float) and maxtree.leaves(t).tolist() == [[3.0, -1.0, 7.0]]
    assert maxtree.check_invariant(t)
