"""The typed history of :func:`jaxcorr.train.fit`: capacity events and per-step statistics.

Events are small frozen records told apart by type, never by the text of a message:

- :class:`InitialCapacity` -- the DTree frontier capacity sized at set-up from ``max_i k_i(0)``;
- :class:`CapacityGrown` -- a chunk overflowed its capacity and was rerun with a larger one (the
  jax-md neighbour-list loop, :func:`jaxcorr.maxtree.allocate`);
- :class:`FellBackToDense` -- with ``fallback="dense"``, the sparse method stopped being exact
  (DDFN cap, refused optimizer, idle-row guard) and the dense method ran from ``step``.

:class:`History` holds the arrays and the events, read by attribute (``hist.loss``,
``hist.n_active``); ``hist.capacity_events`` gives the events as dicts (``step``, ``old_capacity``,
``new_capacity``, ``reason``) for JSON.

Examples:
  >>> from jaxcorr.train._history import CapacityGrown
  >>> e = CapacityGrown(step=3, old=16, new=32)
  >>> e.as_dict()["reason"].startswith("overflow")
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["InitialCapacity", "CapacityGrown", "FellBackToDense", "History", "Recorder"]


class InitialCapacity(NamedTuple):
    """The DTree frontier capacity chosen at set-up (step 0) from ``max_i k_i(0) = kmax``."""

    capacity: int
    kmax: int
    step: int = 0

    def as_dict(self) -> dict:
        return {"step": self.step, "old_capacity": None, "new_capacity": self.capacity,
                "reason": f"initial: max_i k_i(0) = {self.kmax} with headroom"}


class CapacityGrown(NamedTuple):
    """A fire set outgrew the capacity ``old`` at ``step``; the chunk was rerun with ``new``."""

    step: int
    old: int
    new: int

    def as_dict(self) -> dict:
        return {"step": self.step, "old_capacity": self.old, "new_capacity": self.new,
                "reason": f"overflow: a fire set exceeded the capacity {self.old}; chunk rerun"}


class FellBackToDense(NamedTuple):
    """The dense method ran from ``step`` on; ``reason`` says why the sparse one could not go on."""

    step: int
    reason: str
    capacity: int | None = None  # the DTree capacity at that point (None: none, or refused at set-up)

    def as_dict(self) -> dict:
        return {"step": self.step, "old_capacity": self.capacity, "new_capacity": None,
                "reason": "fallback to dense: " + self.reason}


@dataclasses.dataclass
class History:
    """What :func:`jaxcorr.train.fit` reports (host values).

    Attributes:
      loss: (steps,) ``L(W(t))`` in the parameters' dtype.
      fire_mean, fire_max, fire_union: (steps,) mean / max over i of ``k_{i,t}`` (Definition 2.4)
        and :math:`|\\bigcup_i S_{i,fire}(t)|`.
      events: the capacity events (:class:`InitialCapacity`, :class:`CapacityGrown`,
        :class:`FellBackToDense`) in order.
      opt_state: the final optimizer state (full shape).
      method, b: the method and threshold used.
      ms_per_step: wall time of the jitted chunks per step (set-up and compilation excluded).
      setup_s: everything else.
      n_active: |A| (``m`` for dense); span: the Gram path ran; fallback_step: None or the step the
        dense method ran from; state_bytes: bytes of the arrays the loop carries and reads.
      shards, bytes_per_device: with a mesh, the number of point blocks and the training state's
        bytes on the most loaded device (else None).
      coefficients: a span-path run on one device: the result as :class:`jaxcorr.train.Coefficients`
        relative to the params it started from (else None).
      loss_rose: ``loss[-1] > loss[0]`` or ``loss[-1]`` not finite (``fit`` also warns with a
        ``UserWarning``): the learning rate is likely too large for this optimizer.
      method_reason: with ``method="auto"``, one line saying which method ran and why (the
        :class:`jaxcorr.cost.Choice` reason); None when the method was given.
      choice: with ``method="auto"``, the :class:`jaxcorr.cost.Choice` itself (every candidate's
        predicted step, set-up and total time); None otherwise.
    """

    loss: np.ndarray
    fire_mean: np.ndarray
    fire_max: np.ndarray
    fire_union: np.ndarray
    events: list
    opt_state: Any
    method: str
    b: float
    ms_per_step: float
    setup_s: float
    n_active: int
    span: bool
    fallback_step: int | None
    state_bytes: int
    shards: int | None = None
    bytes_per_device: int | None = None
    coefficients: Any = None
    loss_rose: bool = False  # the last recorded loss is above the first (or not finite): training diverged
    method_reason: str | None = None  # method="auto": which method ran and why (one line)
    choice: Any = None  # method="auto": the jaxcorr.cost.Choice

    @property
    def capacity_events(self) -> list:
        """The events as dicts (``step``, ``old_capacity``, ``new_capacity``, ``reason``), e.g. for JSON."""
        return [e.as_dict() for e in self.events]


class Recorder:
    """Collects the per-chunk statistics on the host, times the chunks and runs ``fit``'s callback."""

    def __init__(self, steps: int, callback: Callable | None, wrap: Callable | None = None):
        self.steps, self.callback = steps, callback
        self.wrap = wrap  # (W, opt_state) -> what the callback's "snapshot" returns
        self.done, self.run_s, self.stopped = 0, 0.0, False
        self.parts: list = []
        self.events: list = []

    def add(self, stats, n_steps: int, seconds: float, snapshot: Callable | None = None,
            coefficients: Callable | None = None, method: str | None = None) -> None:
        """Record one accepted chunk of ``n_steps`` steps (``stats`` stacked by ``lax.scan``);
        ``snapshot()`` gives ``(W, opt_state)`` after it and ``coefficients()`` the run's
        coefficients or None (both valid during the callback only); ``method`` is the method that ran
        the chunk (after a fallback: ``"dense"``), passed on to the callback."""
        host = type(stats)(*(np.asarray(v)[:n_steps] for v in stats))
        self.parts.append(host)
        self.done += n_steps
        self.run_s += seconds
        if self.callback is not None:
            info = {"step": self.done, "steps": self.steps, "loss": float(host.loss[-1]),
                    "ms_per_step": 1e3 * self.run_s / max(self.done, 1)}
            if method is not None:
                info["method"] = method
            if snapshot is not None:
                wrap = self.wrap or (lambda *x: x)
                info["snapshot"] = lambda: wrap(*snapshot())
            if coefficients is not None:
                info["coefficients"] = coefficients
            ret = self.callback(info)
            if ret is not None and bool(np.asarray(ret)):  # any truthy value (np.True_, a 0-d jax bool)
                self.stopped = True

    @property
    def remaining(self) -> int:
        return 0 if self.stopped else self.steps - self.done

    def arrays(self, dtype) -> dict:
        """The concatenated statistics: ``loss`` (in ``dtype``), ``fire_mean``, ``fire_max``, ``fire_union``."""
        def cat(field, dt):
            vals = [getattr(p, field) for p in self.parts]
            return np.concatenate(vals).astype(dt) if vals else np.zeros((0,), dt)

        return {"loss": cat("loss", np.dtype(dtype)), "fire_mean": cat("fire_mean", np.float64),
                "fire_max": cat("fire_max", np.int64), "fire_union": cat("fire_union", np.int64),
                "ms_per_step": 1e3 * self.run_s / self.done if self.done else float("nan")}
