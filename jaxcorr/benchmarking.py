"""Small timing helpers shared by the benchmarks and reproductions in ``scripts/``.

Every helper compiles first (a warm-up call), blocks on the result and repeats; the figures they
return are wall-clock seconds, to be reported beside :func:`machine_info` (and, on a shared
machine, :func:`load_average`).

Two ways to time a function:

- :func:`times` / :func:`median_time`: one call per sample, so each sample includes one dispatch
  from Python. Right for calls much longer than a dispatch.
- :func:`amortised_time`: many applications of a step inside one jitted ``lax.scan`` with the state
  as a donated carry (updated in place), divided by the number of steps. Right for operations that
  take microseconds (a tree UPDATE), where a per-call figure would time Python dispatch instead.

Examples:
  >>> import jax
  >>> import jax.numpy as jnp
  >>> from jaxcorr import benchmarking
  >>> f = jax.jit(lambda x: x + 1)
  >>> benchmarking.median_time(f, jnp.zeros(3), repeats=3) > 0
  True
  >>> round(benchmarking.loglog_slope([1, 2, 4], [3, 6, 12]), 6)
  1.0
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import jax
import numpy as np
from jax import lax

__all__ = [
    "median_time",
    "times",
    "chained_times",
    "amortised_time",
    "loglog_slope",
    "cache_sizes",
    "last_level_cache_bytes",
    "machine_info",
    "format_table",
    "peak_rss_bytes",
    "load_average",
]


def _block(out):
    return jax.block_until_ready(out)


def times(fn, *args, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``fn(*args)`` over ``repeats`` runs after ``warmup`` runs (compile).

    Examples:
      >>> len(times(lambda: 1, repeats=3))
      3
    """
    for _ in range(warmup):
        _block(fn(*args))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(fn(*args))
        out.append(time.perf_counter() - t0)
    return out


def median_time(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn(*args)`` after compilation."""
    return statistics.median(times(fn, *args, repeats=repeats, warmup=warmup))


def chained_times(fn, state, *args, repeats: int = 5, warmup: int = 1):
    """Wall-clock seconds of ``state = fn(state, *args)`` calls, each consuming the previous state.

    For functions that donate ``state`` (its buffers are reused, so it cannot be passed twice).

    Returns:
      ``(seconds, state)``: the list of ``repeats`` timings and the last state.
    """
    for _ in range(warmup):
        state = _block(fn(state, *args))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = _block(fn(state, *args))
        out.append(time.perf_counter() - t0)
    return out, state


def amortised_time(step, state, xs, *, repeats: int = 5):
    """Median seconds per application of ``step`` over ``xs``, dispatch amortised.

    Runs ``state = step(state, x)`` for every ``x`` along the leading axis of ``xs`` inside one
    jitted ``lax.scan`` with ``state`` as a donated carry (updated in place, as a training loop
    would), ``repeats`` times after a compiling call, and divides the median by the number of steps.

    Args:
      step: ``(state, x) -> state``, traceable.
      state: initial state pytree; donated (do not use it afterwards).
      xs: pytree of arrays with a common leading axis (the steps).
      repeats: timed scans.

    Returns:
      ``(seconds, state)``: seconds per step (median over the repeats) and the final state (the
      steps applied ``repeats + 1`` times over ``xs``).

    Examples:
      >>> import jax.numpy as jnp
      >>> t, s = amortised_time(lambda s, x: s.at[0].add(x), jnp.zeros(4), jnp.ones(64), repeats=2)
      >>> 0 < t < 1, float(s[0])
      (True, 192.0)
    """
    steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    run = jax.jit(lambda s, xs: lax.scan(lambda c, x: (step(c, x), None), s, xs)[0], donate_argnums=0)
    ts, state = chained_times(run, state, xs, repeats=repeats, warmup=1)
    return statistics.median(ts) / steps, state


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs): the fitted exponent of a power law.

    Examples:
      >>> round(loglog_slope([1, 4, 16], [1, 2, 4]), 6)
      0.5
    """
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def cache_sizes() -> dict:
    """CPU cache sizes in bytes by name (``{"L1d": ..., "L2": ..., "L3": ...}``), from Linux sysfs.

    Empty where the system does not say (other OSes, some containers).
    """
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out
    for e in entries:
        if not e.startswith("index"):
            continue
        try:
            with open(f"{base}/{e}/level") as fh:
                level = fh.read().strip()
            with open(f"{base}/{e}/type") as fh:
                kind = fh.read().strip()
            with open(f"{base}/{e}/size") as fh:
                size = fh.read().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:].upper(), 1)
        num = size[:-1] if size[-1:].isalpha() else size
        out[f"L{level}" + ("d" if kind == "Data" else "")] = int(num) * mult
    return out


def last_level_cache_bytes(default: int = 32 * 2**20) -> int:
    """Size in bytes of the largest CPU cache (``default`` where the system does not say)."""
    sizes = cache_sizes()
    return max(sizes.values()) if sizes else default


def machine_info() -> dict:
    """A description of the machine and software the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        n_cpu = len(os.sched_getaffinity(0))
    except AttributeError:
        n_cpu = os.cpu_count()
    dev = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": n_cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "caches": cache_sizes(),
    }


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given ``columns``; floats get 4 significant digits.

    Examples:
      >>> print(format_table([{"m": 16, "ms": 1.23456}], ["m", "ms"]))
       m     ms
      --  -----
      16  1.235
    """

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def peak_rss_bytes() -> int:
    """This process's peak resident memory in bytes, from the OS (``VmHWM`` in /proc/self/status on
    Linux, else ``getrusage``'s ``ru_maxrss``, KiB on Linux and bytes on macOS)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # POSIX only, so imported here
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def load_average() -> list:
    """The 1, 5 and 15 minute load averages of the machine (``[]`` where the OS does not say): record
    them beside timings taken on a shared machine."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []

