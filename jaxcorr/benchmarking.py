"""Small timing helpers shared by the benchmarks and reproductions in ``scripts/``.

Measurements follow the project's rules: compile first (a warm-up call), block on the result,
repeat, and report the median; describe the machine next to every figure.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxcorr import benchmarking
  >>> import jax
  >>> f = jax.jit(lambda x: x + 1)  # doctest: +SKIP
  >>> benchmarking.median_time(f, jnp.zeros(3), repeats=3) > 0  # doctest: +SKIP
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

__all__ = ["median_time", "times", "loglog_slope", "machine_info", "format_table"]


def _block(out):
    return jax.block_until_ready(out)


def times(fn, *args, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``fn(*args)`` over ``repeats`` runs after ``warmup`` runs (compile)."""
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


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs): the fitted exponent of a power law."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


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
    }


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given ``columns``; floats get 4 significant digits."""

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
