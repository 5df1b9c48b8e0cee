"""max_inner_product (Theorem F.4's reduction) against brute force."""

import numpy as np
import pytest

from jaxcorr import reductions

# A few fixed shapes so the jitted DDFN functions compile once per shape, not per example.
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 2), (6, 9, 4), (13, 20, 5)]


def _brute_pairs(X, Y):
    G = np.asarray(X, np.int64) @ np.asarray(Y, np.int64).T
    return int(G.max()), G


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(2))
def test_matches_brute_force(shape, seed):
    n, m, d = shape
    rng = np.random.default_rng(1000 * seed + n * 31 + m)
    r = [2, 20][seed]
    X = rng.integers(-r, r + 1, (n, d))
    Y = rng.integers(-r, r + 1, (m, d))
    v, st = reductions.max_inner_product(X, Y, return_stats=True)
    best, G = _brute_pairs(X, Y)
    assert v == best == reductions.max_inner_product_brute(X, Y)
    assert isinstance(v, int)
    i, j = st["pair"]
    assert G[i, j] == best  # the witness attains the maximum
    assert st["lo"] <= best <= st["hi"]
    assert st["iterations"] <= int(np.ceil(np.log2(st["hi"] - st["lo"] + 1)))
    assert st["queries"] == st["iterations"] and st["updates"] == m * st["iterations"]


def test_all_negative_and_ties():
    X = -np.ones((4, 3), int)  # every inner product equal: a full tie
    Y = np.ones((6, 3), int)
    v, st = reductions.max_inner_product(X, Y, return_stats=True)
    assert v == -3 and st["pair"][0] in range(4) and st["pair"][1] in range(6)
    X = np.array([[-2, -1], [-1, -3]])
    Y = np.array([[1, 1], [2, 0], [1, 1]])  # duplicate rows tie
    assert reductions.max_inner_product(X, Y) == reductions.max_inner_product_brute(X, Y) == -2


def test_n_equals_one_and_zero_vectors():
    assert reductions.max_inner_product([[0, 0]], [[5, -4], [3, 2]]) == 0
    assert reductions.max_inner_product([[3]], [[-2], [4], [4]]) == 12


@pytest.mark.parametrize("cap, group_size", [(1, None), (3, 4), (None, 1), (None, None)])
def test_cap_and_paper_grouping_agree(cap, group_size):
    rng = np.random.default_rng(7)
    X = rng.integers(-6, 7, (9, 3))
    Y = rng.integers(-6, 7, (16, 3))
    v, st = reductions.max_inner_product(X, Y, return_stats=True, cap=cap, group_size=group_size)
    assert v == reductions.max_inner_product_brute(X, Y)
    assert st["instances"] == (1 if group_size is None else -(-9 // group_size))


def test_float_integer_valued_and_int_dtypes():
    X = np.array([[1.0, -2.0], [0.0, 4.0]])
    Y = np.array([[3, 1], [-1, -1]], dtype=np.int8)
    assert reductions.max_inner_product(X, Y) == 4


@pytest.mark.parametrize(
    "X, Y, match",
    [
        (np.ones(3), np.ones((2, 3)), "2-D"),
        (np.ones((0, 3)), np.ones((2, 3)), "at least one row"),
        (np.ones((2, 3)), np.ones((2, 0)), "at least one"),
        (np.ones((2, 3)), np.ones((2, 4)), "same dimension"),
        (np.array([[0.5, 1.0]]), np.ones((1, 2)), "integer-valued"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "finite"),
        (np.array([[np.inf, 1.0]]), np.ones((1, 2)), "finite"),
        (np.array([[True, False]]), np.ones((1, 2)), "boolean"),
        (np.array([["a", "b"]]), np.ones((1, 2)), "integers"),
        (np.array([[2**20, 0]]), np.array([[2**20, 0]]), "too large"),
    ],
)
def test_validation(X, Y, match):
    with pytest.raises(ValueError, match=match):
        reductions.max_inner_product(X, Y)


def test_bad_group_size():
    with pytest.raises(ValueError):
        reductions.max_inner_product([[1]], [[1]], group_size=0)


def test_search_bounds_are_valid_and_cheap():
    rng = np.random.default_rng(3)
    X = rng.integers(-50, 51, (30, 4))
    Y = rng.integers(-50, 51, (40, 4))
    lo, hi, B = reductions.search_bounds(X, Y)
    best = reductions.max_inner_product_brute(X, Y)
    assert lo == int(X[0] @ Y[0]) and lo <= best <= hi <= B


def test_half_precision_integers_are_exact_and_bfloat16_is_refused_by_name():
    import jax.numpy as jnp

    X = np.array([[3, -2], [1, 4]], np.float16)
    Y = np.array([[2, 1], [-1, 5]], np.int32)
    assert reductions.max_inner_product(X, Y) == reductions.max_inner_product_brute(X.astype(np.int64), Y) == 19
    with pytest.raises(ValueError, match=r"^X must hold integers \(an integer dtype, or float16/32/64"):
        reductions.max_inner_product(X.astype(jnp.bfloat16), Y)
