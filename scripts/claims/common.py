"""The claim record and the tests every claim module shares (scripts/claims).

Upper bounds ``T(x) = O(f(x))`` are tested one-sided: the measurement may grow slower than the
bound, never faster. The test is the fitted log-log slope of ``T(x) / f(x)`` against ``x``
(:func:`excess_slope`): at most a tolerance above 0 for the bound to hold. A Theta claim is tested
two-sided (:func:`in_range`). Growth is judged only on a sweep of at least three sizes spanning at
least a factor 16 (:func:`check_sweep`), in the regime the claim states.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import benchmarking as bm

MIN_SIZES = 3  # a growth claim needs at least this many sizes ...
MIN_SPAN = 16  # ... spanning at least this factor


def claim(name, paper, *, predicted, regime, measured, tolerance, holds, note, figure, decided_by):
    """One claim as written to results.json.

    Args:
      name: identifier, e.g. ``"init_cost_m"``.
      paper: where the paper states it (theorem/lemma numbers).
      predicted: the bound or value the paper predicts (dict).
      regime: the sizes and conditions the claim is tested in, in words.
      measured: measured values (dict; ``rows`` holds the table).
      tolerance: the tolerance fixed before the run (dict).
      holds: whether the measurement meets the tolerance (computed, never written by hand).
      note: why it does not hold (required then), or a remark on what was measured; may be "".
      figure: PNG file name.
      decided_by: ``"time"`` (wall clock) or ``"count"`` (operations counted), what ``holds`` uses.

    Returns:
      The claim dict.
    """
    holds = bool(holds)
    if not holds and not note:
        raise ValueError(f"claim {name!r} does not hold and carries no note saying why")
    return {"name": name, "paper": paper, "predicted": predicted, "regime": regime, "measured": measured,
            "tolerance": tolerance, "holds": holds, "note": note, "figure": figure, "decided_by": decided_by}


def count_note(counted: str, about_time: str, failure=None) -> str:
    """The note of a claim decided by an operation count: what was counted, what wall-clock time did
    and why it does not decide, preceded by ``failure`` (why the claim does not hold) if given."""
    note = f"Decided by operation count ({counted}), not time. {about_time}"
    return f"{failure}. {note}" if failure else note


def check_sweep(xs, name: str, cfg=None) -> None:
    """Raise ``ValueError`` unless ``xs`` has >= 3 sizes spanning >= 16x (a growth sweep).

    Skipped for a configuration marked ``machinery_only`` (the "tiny" size the tests run, which
    exercises the code, not the claims)."""
    if cfg is not None and cfg.get("machinery_only"):
        return
    xs = sorted(xs)
    if len(xs) < MIN_SIZES or xs[-1] < MIN_SPAN * xs[0]:
        raise ValueError(f"{name}: a growth claim needs >= {MIN_SIZES} sizes spanning >= {MIN_SPAN}x, got {xs}")


def excess_slope(xs, ys, bound) -> float:
    """Fitted log-log slope of ``ys / bound(xs)`` against ``xs``: how much faster than the bound
    the measurement grows (<= 0 when it grows no faster)."""
    xs = np.asarray(xs, float)
    return bm.loglog_slope(xs, np.asarray(ys, float) / np.array([bound(x) for x in xs], float))


def in_range(x: float, lohi) -> bool:
    return lohi[0] <= x <= lohi[1]


def xla_cost(fn, *args, donate_argnums=()) -> dict:
    """Operations XLA counts in the compiled ``fn(*args)``: ``{"flops": ..., "bytes": ...}``.

    ``args`` may be ``jax.ShapeDtypeStruct`` (nothing is allocated or run). This counts what a
    RAM-model bound counts -- arithmetic and memory traffic of the program as compiled -- without
    the cache and page effects of wall-clock time. Donate a state argument (``donate_argnums``) to
    count an in-place update rather than a copy.
    """
    ca = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {"flops": float(ca.get("flops", 0.0)), "bytes": float(ca.get("bytes accessed", 0.0))}


def shape(*dims, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(dims), dtype)


def threshold(m: int) -> float:
    """b = sqrt(0.4 ln m) (Remark 2.6), :func:`jaxcorr.nn.default_threshold`."""
    from jaxcorr import nn

    return float(nn.default_threshold(m))


def sparsity_bound(m: int, b: float) -> float:
    """m exp(-b^2/2), Lemma 2.5's bound on k_{i,0} (= m^{4/5} at b = sqrt(0.4 ln m))."""
    return m * math.exp(-b * b / 2)


def json_default(o):
    """``json.dump`` fallback for numpy scalars and arrays."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
