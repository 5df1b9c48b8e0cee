r"""The host loop over jitted chunks (jax-md's neighbour-list loop) and :func:`run_chunk`.

Run a chunk; if a fire set overflowed its capacity (``did_buffer_overflow``), re-allocate
(:func:`jaxcorr.maxtree.allocate`) and rerun the chunk from its starting state; past the DDFN cap
(:class:`jaxcorr.errors.DDFNCapExceeded`) or when the idle-row guard fired
(:class:`jaxcorr.errors.IdleRowMoved`) stop with the exact state at the start of that chunk.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxcorr import errors, maxtree, methods
from jaxcorr.train import _finalize, _steps
from jaxcorr.train._history import CapacityGrown, Recorder
from jaxcorr.train._state import Config, TrainState

__all__ = ["run_chunk", "Stop", "loop", "cap_error"]


def run_chunk(cfg: Config, state: TrainState, steps: int, *, donate: bool = True):
    r"""Run ``steps`` training steps: ``TrainState -> (TrainState, StepStats)``, pure and jitted.

    One ``lax.scan`` over the step of ``cfg.step.method`` (Algorithm 8 for ``"dtree"``, Theorem
    4.1; Algorithm 9 for ``"wtree"``, Theorem 4.2; masked fire sets for ``"active"``; all rows for
    ``"dense"``), under ``jax.shard_map`` when ``cfg`` has a mesh layout. Compiled once per
    ``(cfg.step, steps, shapes)`` by ``jax.jit``'s own cache.

    Args:
      cfg: from :func:`setup` (a new capacity: ``cfg._replace(step=cfg.step._replace(capacity=c))``).
      state: the :class:`TrainState`.
      steps: number of steps (static).
      donate: give ``state``'s changing buffers to the result (``state`` is invalid afterwards);
        pass False to keep ``state`` for a rerun (the overflow loop of :func:`fit`).

    Returns:
      ``(state, stats)`` with :class:`StepStats` stacked over the steps. ``stats.overflow`` (dtree)
      flags a step whose fire set outgrew the capacity: that chunk is not exact and must be rerun
      from the old state with a larger capacity; ``stats.moved`` flags the idle-row guard.

    Examples:
      >>> import jax
      >>> from jaxcorr import data, nn, train
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> cfg, state = train.setup(nn.init(jax.random.key(0), 256, 8), X, y, b=1.0)
      >>> state, stats = train.run_chunk(cfg, state, 3)
      >>> stats.loss.shape
      (3,)
    """
    carry, stats = _steps.run(cfg.step, steps, state.carry, state.consts, donate=donate)
    rows, opt_state, levels = carry
    return state._replace(rows=rows, opt_state=opt_state, levels=levels), stats


class Stop(Exception):
    """The compacted run cannot go on exactly; ``error`` is the typed error
    (:class:`jaxcorr.errors.DDFNCapExceeded` or :class:`jaxcorr.errors.IdleRowMoved`), ``cfg`` and
    ``state`` the exact state at the start of the chunk (valid only when that chunk was not donated)."""

    def __init__(self, error: errors.TrainingError, cfg=None, state=None):
        super().__init__(str(error))
        self.error, self.cfg, self.state = error, cfg, state


def _cap_message(m, cap, k, step):
    return (f"a data point's fire set reached {k} neurons at step {step}, beyond the DDFN cap "
            f"ceil(m^(4/5)) = {cap} per point for m = {m} (Definition 1.3, Theorem 4.1); the sparse "
            "methods do not apply. Lower the learning rate, raise b, or pass fallback='dense'.")


def cap_error(m, cap, k, step) -> errors.DDFNCapExceeded:
    """The typed DDFN-cap error (Definition 1.3), with :func:`_cap_message`'s text."""
    return errors.DDFNCapExceeded(step=step, k=k, cap=cap, m=m, message=_cap_message(m, cap, k, step))


def _moved_message(step):
    return (f"the optimizer would move rows whose gradient and state are zero at step {step} (the idle-row "
            "guard fired: e.g. a constant added to every update, or a NaN); the compacted methods would "
            "no longer follow the dense trajectory. Training is exact up to that step; use method='dense' "
            "or fallback='dense'.")


def _timed_chunk(cfg, state, steps, donate):
    """:func:`run_chunk`, compiled first so that the seconds returned are the run's alone."""
    _steps.compile(cfg.step, steps, state.carry, state.consts, donate=donate)
    # Wait for the inputs first: set-up work dispatched asynchronously (gathers, INIT) counts as
    # set-up, not as steps.
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    out = jax.block_until_ready(run_chunk(cfg, state, steps, donate=donate))
    return out, time.perf_counter() - t0


def _check_chunk(cfg: Config, stats, done: int):
    """``None`` if the chunk is exact; else the new capacity after an overflow; raises :class:`Stop`
    (without state) past the DDFN cap or when the idle-row guard fired. The dense method has none."""
    if not methods.get(cfg.step.method).sparse:
        return None
    overflow, kmax, moved = (np.asarray(v) for v in (stats.overflow, stats.fire_max, stats.moved))
    bad = np.flatnonzero(overflow | (kmax > cfg.cap_ddfn) | moved)
    if not bad.size:
        return None
    j = int(bad[0])
    if moved[j] and not overflow[j] and kmax[j] <= cfg.cap_ddfn:
        raise Stop(errors.IdleRowMoved(done + j, _moved_message(done + j)))
    old = cfg.step.capacity
    if kmax[j] > cfg.cap_ddfn or old >= cfg.capacity_ceiling:  # the second cannot happen below the cap
        raise Stop(cap_error(cfg.width, cfg.cap_ddfn, int(kmax[j]), done + j))
    return maxtree.allocate(int(kmax[j]), ceiling=cfg.capacity_ceiling, previous=old)


def loop(cfg: Config, state: TrainState, rec: Recorder, chunk: int, donate: bool):
    """The host loop over chunks, as jax-md's neighbour-list loop: run a chunk; if a fire set
    overflowed its capacity (``did_buffer_overflow``), re-allocate (:func:`jaxcorr.maxtree.allocate`)
    and rerun the chunk from its starting state; else keep it. Returns ``(cfg, state)``; raises
    :class:`Stop` with the exact state at the start of the failing chunk."""
    while rec.remaining > 0:
        clen = min(chunk, rec.remaining)
        (new, stats), secs = _timed_chunk(cfg, state, clen, donate)
        try:
            capacity = _check_chunk(cfg, stats, rec.done)
        except Stop as err:
            raise Stop(err.error, cfg, state) from None
        if capacity is not None:
            rec.events.append(CapacityGrown(step=rec.done + int(np.argmax(np.asarray(stats.overflow))),
                                            old=cfg.step.capacity, new=capacity))
            cfg = cfg._replace(step=cfg.step._replace(capacity=capacity))
            continue
        state = new
        rec.add(stats, clen, secs, snapshot=lambda cfg=cfg, state=state: _finalize.rows_and_state(cfg, state),
                coefficients=lambda cfg=cfg, state=state: _finalize.coefficients(cfg, state), method=cfg.step.method)
    return cfg, state
