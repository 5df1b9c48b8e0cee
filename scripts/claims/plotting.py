"""Plotting helpers shared by the claim modules: log axes in powers of two, the bound drawn beside
the measurement, titles that say whether the claim holds.

matplotlib is an optional extra (``pip install 'jaxcorr[plots]'``); :func:`pyplot` raises
``ImportError`` with that hint when it is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"matplotlib is required for the figures ({e})") from None
    return plt


def _pow2_label(v, _pos=None):
    if v <= 0:
        return ""
    k = math.log2(v)
    if abs(k - round(k)) < 1e-6:
        return f"$2^{{{int(round(k))}}}$"
    return f"$2^{{{k:g}}}$"


def pow2_axis(axis, lo, hi, max_ticks: int = 8) -> None:
    """Log scale in base 2 on ``axis`` (``ax.xaxis`` or ``ax.yaxis``) with ticks at powers of two
    labelled ``2^k``, at most ``max_ticks`` of them (every j-th power), no minor labels."""
    from matplotlib import ticker

    ax = axis.axes
    (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log", base=2)
    k0, k1 = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    if k1 - k0 < 2:  # a narrow range: half powers, so the axis has more than one label
        ticks = [2.0 ** (k0 + j / 2) for j in range(2 * (k1 - k0) + 1)]
        ticks = [t for t in ticks if lo / 2**0.5 <= t <= hi * 2**0.5] or ticks
    else:
        step = max(1, math.ceil((k1 - k0 + 1) / max_ticks))
        ticks = [2.0**k for k in range(k0, k1 + 1, step)]
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(_pow2_label))
    axis.set_minor_locator(ticker.NullLocator())


def loglog2(ax, xs_all, ys_all) -> None:
    """Both axes of ``ax`` log base 2, labelled in powers of two, spanning all the given values."""
    xs = np.asarray([v for v in np.ravel(xs_all) if v > 0], float)
    ys = np.asarray([v for v in np.ravel(ys_all) if v > 0], float)
    pow2_axis(ax.xaxis, xs.min(), xs.max())
    pow2_axis(ax.yaxis, ys.min(), ys.max())


def bound_line(ax, xs, anchor, f, label, *, style="k--"):
    """Draw ``c f(x)`` over ``xs``. ``anchor`` is a number (the line passes through it at ``xs[0]``:
    a growth to compare with) or the list of measured values at ``xs`` (then ``c`` is the smallest
    constant with ``c f(x) >= measured`` at every x: an upper bound drawn touching the measurement).
    Returns the line's values (for the axis limits)."""
    xs = np.asarray(xs, float)
    fx = np.array([f(x) for x in xs], float)
    c = max(np.asarray(anchor, float) / fx) if np.ndim(anchor) else anchor / fx[0]
    ys = c * fx
    ax.plot(xs, ys, style, lw=1.2, alpha=0.8, label=label)
    return ys


def series_with_bound(ax, xs, series: dict, f, bound_label: str, *, anchor=None):
    """Plot each ``{label: ys}`` of ``series`` against ``xs`` and the bound ``c f`` (see
    :func:`bound_line`; ``anchor`` defaults to every measured value: the bound above them all), both
    axes in powers of two."""
    ys_all = []
    for (label, ys), mk in zip(series.items(), ("o-", "s--", "^-", "D-")):
        ax.plot(xs, ys, mk, label=label)
        ys_all += list(ys)
    if anchor is None:
        anchor = np.max(np.asarray(list(series.values()), float), axis=0)
    ys_all += list(bound_line(ax, xs, anchor, f, bound_label))
    loglog2(ax, xs, ys_all)


def tolerance_band(ax, xs, anchor, f, excess: float, label: str):
    """Shade between the bound ``c f(x)`` and ``c f(x) (x/x0)^excess`` (the most a measurement may
    grow past the bound's growth and still hold). Returns the band's upper values."""
    xs = np.asarray(xs, float)
    fx = np.array([f(x) for x in xs], float)
    lo = anchor * fx / fx[0]
    hi = lo * (xs / xs[0]) ** excess
    ax.fill_between(xs, lo, hi, color="0.6", alpha=0.25, lw=0, label=label)
    return hi


def verdict(claims, name) -> str:
    for c in claims:
        if c["name"] == name:
            return "holds" if c["holds"] else "does NOT hold"
    return "n/a"


def subtitle(results) -> str:
    m = results["machine"]
    return f"({results['size']} run; {m['cpu']}, {m['cores']} cores, {m['backend']})"


def save(fig, out, name, made) -> None:
    fig.tight_layout()
    fig.savefig(Path(out) / name, dpi=110)
    made.append(name)


def finish(fig, ax, results, out, name, made, *, legend_fontsize: int = 7) -> None:
    """The common end of a one-axis figure: small title and legend, the run's subtitle, saved as
    ``out/name`` (appended to ``made``)."""
    ax.title.set_fontsize(9)
    ax.legend(fontsize=legend_fontsize)
    fig.suptitle(subtitle(results), fontsize=8)
    save(fig, out, name, made)
