"""jaxcorr.benchmarking: the timing helpers shared by scripts/ (checked on what they compute, not
on how fast anything is)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcorr import benchmarking as bm


def test_times_runs_warmup_then_repeats():
    calls = []

    def f(x):
        calls.append(1)
        return x + 1

    ts = bm.times(f, jnp.zeros(2), repeats=4, warmup=2)
    assert len(ts) == 4 and len(calls) == 6 and all(t >= 0 for t in ts)
    assert bm.median_time(f, jnp.zeros(2), repeats=3, warmup=0) >= 0


def test_chained_times_threads_the_state():
    step = jax.jit(lambda s, k: s + k, donate_argnums=0)
    ts, s = bm.chained_times(step, jnp.zeros(3), 2.0, repeats=3, warmup=1)
    assert len(ts) == 3
    np.testing.assert_array_equal(s, np.full(3, 8.0))  # 1 warm-up + 3 timed calls


def test_amortised_time_applies_every_step_in_place():
    xs = jnp.arange(10, dtype=jnp.float32)
    t, s = bm.amortised_time(lambda c, x: c.at[1].add(x), jnp.zeros(4), xs, repeats=2)
    assert 0 < t < 1
    np.testing.assert_array_equal(s, [0.0, 3 * 45.0, 0.0, 0.0])  # compile call + 2 timed scans


def test_amortised_time_over_a_pytree_of_steps():
    rs = jnp.array([0, 2, 2], jnp.int32)
    zs = jnp.ones((3, 2))
    _, s = bm.amortised_time(lambda c, rz: c.at[rz[0]].add(rz[1]), jnp.zeros((3, 2)), (rs, zs), repeats=1)
    np.testing.assert_array_equal(s, [[2, 2], [0, 0], [4, 4]])


@pytest.mark.parametrize("p", [0.0, 0.8, 1.0, 2.0])
def test_loglog_slope_recovers_the_exponent(p):
    xs = [2.0**k for k in range(3, 9)]
    assert bm.loglog_slope(xs, [3 * x**p for x in xs]) == pytest.approx(p, abs=1e-9)


def test_cache_sizes_and_fallback(monkeypatch):
    sizes = bm.cache_sizes()
    assert all(isinstance(v, int) and v > 0 for v in sizes.values())
    assert all(k.startswith("L") for k in sizes)
    if sizes:
        assert bm.last_level_cache_bytes() == max(sizes.values())
    monkeypatch.setattr(bm, "cache_sizes", lambda: {})
    assert bm.last_level_cache_bytes(default=123) == 123


def test_machine_info_describes_the_machine():
    info = bm.machine_info()
    assert {"cpu", "cores", "platform", "python", "jax", "backend", "device", "x64", "caches"} <= set(info)
    assert info["jax"] == jax.__version__ and info["cores"] >= 1


def test_format_table():
    text = bm.format_table([{"m": 4, "ms": math.pi}, {"m": 16}], ["m", "ms"])
    lines = text.splitlines()
    assert len(lines) == 4 and "3.142" in lines[2] and lines[3].split() == ["16"]
