"""The compact form of a full-width run trained from ``W(0) = nn.init(key, m, d)``: only its rows
that can differ from W(0) (the active rows, and any row that moved) with their optimizer state.

It is stored as a wide ``"rows"`` file with ``full_width`` set (:mod:`jaxcorr.checkpoint.wide`);
:func:`load` redraws W(0) from the key (under the recorded PRNG settings) and swaps the held rows
in (:func:`jaxcorr.wide.expand`): the full-width model and state of the run, bit for bit.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxcorr import nn
from jaxcorr import wide as _wide
from jaxcorr.checkpoint import full
from jaxcorr.checkpoint import wide as _wide_form

__all__ = ["save", "load", "select"]


def select(key, params: nn.Params, X, *, b: float, W0: nn.Params | None = None, opt_state: Any = None,
           optimizer=None, active: np.ndarray | None = None):
    """``(model, opt_rows)`` of :func:`jaxcorr.wide.from_params`, or ``(None, None)`` when the state's
    arrays do not hold W's rows along axis 0 (then only the full form can store it)."""
    if W0 is None:
        W0 = nn.init(key, params.W.shape[0], params.W.shape[1], dtype=params.W.dtype)
    try:
        return _wide.from_params(key, params, X, b=b, W0=W0, opt_state=opt_state, optimizer=optimizer,
                                 active=active)
    except _wide.StateLayoutError:
        return None, None


def save(path, key, params: nn.Params, X, y, *, b: float, W0: nn.Params | None = None, opt_state: Any = None,
         optimizer=None, step: int = 0, config: dict | None = None, active: np.ndarray | None = None,
         max_fraction: float = 0.5, timings: dict | None = None) -> str:
    """Checkpoint a full-width model trained from ``W0 = nn.init(key, m, d)``, compactly when smaller.

    The rows kept by :func:`jaxcorr.wide.from_params` are saved (about ``|A| (d + 2)`` floats plus
    their state instead of ``m (d + 1)``). When more than ``max_fraction`` of the rows would be
    kept, or the state's arrays do not hold rows along axis 0, the full form is written instead.

    Args:
      path, X, y, step, config, timings: as :func:`jaxcorr.checkpoint.save`.
      key, params, b, W0, opt_state, optimizer, active: as :func:`jaxcorr.wide.from_params` (``W0``
        default: drawn from the key).
      max_fraction: the largest share of rows for which the compact form is used.

    Returns:
      ``"compact"`` or ``"full"``: which was written.
    """
    t0 = time.perf_counter()
    m = params.W.shape[0]
    model, rows_state = select(key, params, X, b=b, W0=W0, opt_state=opt_state, optimizer=optimizer, active=active)
    if timings is not None:
        timings["select"] = time.perf_counter() - t0
    if model is None or model.n_active > max_fraction * m:
        full.save(path, params, opt_state, step, dict(config or {}, m=m), X, y, timings=timings)
        return "full"
    _wide_form.save(path, model, X, y, opt_state=rows_state, step=step, config=config, full_width=True,
                    timings=timings, form="rows")
    return "compact"


def load(path, *, X=None, y=None, optimizer=None, as_wide: bool = False) -> dict:
    """Read a compact checkpoint: ``params`` the full-width :class:`jaxcorr.nn.Params` (W(0) redrawn
    under the recorded PRNG settings, the held rows swapped in), ``opt_state`` the full-width state
    (needs ``optimizer`` when the state has arrays), ``W0``, ``step``, ``config``; with ``as_wide``
    also ``model``, the held rows as a :class:`jaxcorr.wide.WideParams`, without expanding."""
    ck = _wide_form.load(path, X=X, y=y, optimizer=optimizer)
    if as_wide:
        return ck
    leaves = ck["opt_state"]
    if optimizer is None and leaves:
        from jaxcorr.errors import CheckpointError  # noqa: PLC0415

        raise CheckpointError(f"checkpoint {path!r} is a compact checkpoint with an optimizer state: pass "
                              "optimizer= to rebuild the state of the rows it does not hold", path)
    with _wide_form.drawing_as(ck["meta"], path):
        params, state, W0 = _wide.expand(ck["model"], leaves if leaves else None, optimizer)
    if state is None:
        state = optimizer.init(params.W) if optimizer is not None else []
    return dict(ck, params=params, opt_state=state, W0=W0)
