"""The errors jaxcorr raises on purpose, one type per cause, each carrying what it is about.

Every one is a :class:`ValueError` subclass (bad input, or a run the method cannot carry out
exactly), so ``except ValueError`` still catches them all; callers that decide by the cause (the
command line's exit codes and hints) catch the type and read its fields, never its message.

Examples:
  >>> from jaxcorr import errors
  >>> e = errors.DDFNCapExceeded(step=3, k=70, cap=64, m=180)
  >>> isinstance(e, ValueError), e.step, e.k, e.cap
  (True, 3, 70, 64)
"""

from __future__ import annotations

__all__ = [
    "JaxcorrError",
    "TrainingError",
    "DDFNCapExceeded",
    "IdleRowMoved",
    "OptimizerRefused",
    "CheckpointError",
    "InsufficientMemoryError",
    "DataError",
]


class JaxcorrError(ValueError):
    """Base of every error jaxcorr raises on purpose."""


class TrainingError(JaxcorrError):
    """A training run that cannot go on exactly by the method asked for (see the subclasses)."""


class DDFNCapExceeded(TrainingError):
    """A point fired more neurons than the DDFN cap ``ceil(m^{4/5})`` (Definition 1.3, Theorem 4.1).

    Attributes:
      step: the step (counted from the start of the run) whose fire sets exceeded the cap.
      k: the largest number of neurons that fired for one point at that step.
      cap: the cap.
      m: the width.
    """

    def __init__(self, step: int, k: int, cap: int, m: int, message: str | None = None):
        self.step, self.k, self.cap, self.m = int(step), int(k), int(cap), int(m)
        super().__init__(message or (
            f"a point fired {self.k} neurons at step {self.step}, beyond the DDFN cap "
            f"ceil(m^(4/5)) = {self.cap} for m = {self.m} (Definition 1.3)"))


class IdleRowMoved(TrainingError):
    """The optimizer would move a row that fires for no point (the idle-row guard of ``train.fit``).

    Attributes:
      step: the first step at which an idle row would have moved.
    """

    def __init__(self, step: int, message: str | None = None):
        self.step = int(step)
        super().__init__(message or (
            f"at step {self.step} the optimizer would move rows that fire for no point, so training "
            "on the active rows alone would not be exact"))


class OptimizerRefused(TrainingError):
    """The optimizer cannot run exactly on the active rows (decided from its jaxprs, up front).

    Attributes:
      method: the method asked for.
      reason: why the optimizer is refused.
    """

    def __init__(self, method: str, reason: str, message: str | None = None):
        self.method, self.reason = method, reason
        super().__init__(message or f"method {method!r} cannot run this optimizer exactly: {reason}")


class CheckpointError(JaxcorrError):
    """A checkpoint that cannot be read, is corrupt, or does not belong to the data or run given.

    Attributes:
      path: the checkpoint's path (``None`` when not known).
    """

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(message)


class InsufficientMemoryError(JaxcorrError):
    """A run's estimated peak memory exceeds what is available (raised before anything is allocated).

    Attributes:
      estimate: the estimate (bytes, or the estimate object of :mod:`jaxcorr.memory`).
      available: the bytes available.
      largest: the widest ``m`` that fits with the same settings (0 if none).
    """

    def __init__(self, message: str, estimate=None, available: int | None = None, largest: int | None = None):
        self.estimate, self.available, self.largest = estimate, available, largest
        super().__init__(message)


class DataError(JaxcorrError):
    """A data file or array that cannot be used: unreadable, wrong shape, non-finite, unparsable field.

    Attributes:
      path: the file (``None`` for in-memory arrays).
    """

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(message)
