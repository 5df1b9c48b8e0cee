"""The command line's calls into the training, wide-model, checkpoint and memory modules (private).

Every use the CLI makes of :mod:`jaxcorr.train`, :mod:`jaxcorr.implicit` (the wide model),
:mod:`jaxcorr.checkpoint` and :mod:`jaxcorr.memory` goes through a function here, so that the rest
of the package depends on what it needs, not on where the library keeps it. The functions marked
``# removed at merge`` adapt today's library to the typed errors of :mod:`jaxcorr.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

from jaxcorr import errors

__all__ = [
    "CHECKPOINT_ERRORS",
    "MEMORY_ERRORS",
    "active_rows",
    "available_bytes",
    "capacity_reruns",
    "check_memory",
    "check_target",
    "empty_history",
    "expand",
    "expected_active",
    "fit_function",
    "from_params",
    "is_span",
    "is_wide",
    "load_full",
    "load_wide",
    "read_meta",
    "save_full",
    "save_trained",
    "save_wide",
    "wide_check_fits",
    "wide_fit_function",
    "wide_largest_width",
    "wide_setup",
]


def _train():
    from jaxcorr import train

    return train


def _wide():
    from jaxcorr import implicit

    return implicit


def _checkpoint():
    from jaxcorr import checkpoint

    return checkpoint


def _memory():
    from jaxcorr import memory

    return memory


#: What a checkpoint that cannot be used raises (the shared type, and the checkpoint module's own).
CHECKPOINT_ERRORS: tuple = (errors.CheckpointError,)
#: What a run that cannot fit in memory raises before anything is allocated.
MEMORY_ERRORS: tuple = (errors.InsufficientMemoryError, MemoryError)


def _late_types() -> None:
    """Add the library modules' own error types to the tuples above, once they are imported."""
    global CHECKPOINT_ERRORS, MEMORY_ERRORS
    ck = _checkpoint().CheckpointError
    if ck not in CHECKPOINT_ERRORS:
        CHECKPOINT_ERRORS = (*CHECKPOINT_ERRORS, ck)
    mem = _wide().InsufficientMemoryError
    if mem not in MEMORY_ERRORS:
        MEMORY_ERRORS = (*MEMORY_ERRORS, mem)


# ------------------------------------------------------------------------------------------ train
def fit_function(mesh=None):
    """``train.fit`` (on ``mesh`` when one is given)."""
    fit = _train().fit
    return fit if mesh is None else functools.partial(fit, mesh=mesh)


def is_span(optimizer) -> bool:
    """The optimizer runs on the span path (linear in the gradient by construction)."""
    return isinstance(optimizer, _train().LinearOptimizer)


def capacity_reruns(events) -> int:
    """How many chunks were rerun with a larger frontier capacity (typed events, not their text)."""
    return sum(isinstance(e, _train().CapacityGrown) for e in events)


def empty_history(**fields):
    """A :class:`History` built from ``fields`` (the CLI's merged or untrained histories)."""
    return _train().History(**fields)


# ------------------------------------------------------------------------------------------ wide
def is_wide(params) -> bool:
    """``params`` is a wide model (its key and the rows that can fire), not all m rows."""
    return isinstance(params, _wide().ImplicitParams)


def expected_active(m: int, n: int, b: float) -> float:
    return _wide().expected_active(m, n, b)


def wide_setup(key, m: int, d: int, X, *, b: float, dtype, progress):
    """The wide model's streamed set-up: ``(model, info)`` with ``info["setup_s"]``, ``["n_active"]``."""
    return _wide().setup(key, m, d, X, b=b, dtype=dtype, progress=progress)


def wide_fit_function(mesh):
    """A ``train.fit``-like callable over a wide model (the model fixes ``b`` and the width, so ``b``
    is dropped). A model carrying coefficients (a ``train.sgd`` run, or a checkpoint of one) goes on
    from them and their state, and ``opt_state`` (the same state in row form) is not passed; on a
    mesh, which trains rows, it goes on from its rows."""
    wide = _wide()

    def fit(model, X, y, *, b, **kwargs):
        del b  # model.b
        if mesh is not None:
            kwargs["mesh"] = mesh
            model = dataclasses.replace(model, coefficients=None)
        elif model.coefficients is not None:
            kwargs["opt_state"] = None
        return wide.fit(model, X, y, **kwargs)

    return fit


def active_rows(W0, X, b: float):
    return _wide().active_rows(W0, X, b)


def from_params(key, params, X, *, b, W0, opt_state, optimizer, active):
    return _wide().from_params(key, params, X, b=b, W0=W0, opt_state=opt_state, optimizer=optimizer,
                               active=active)


def expand(model, opt_state, optimizer):
    """A wide checkpoint's model back to all m rows: ``(params, opt_state, W0)``."""
    return _wide().expand(model, opt_state, optimizer)


# ------------------------------------------------------------------------------------- checkpoint
@contextlib.contextmanager
def _corrupt_as_checkpoint_error(path):  # removed at merge: checkpoint raises CheckpointError for every corrupt file
    """Today's reader lets some corruptions (a bit flipped in the zip's "version needed" field or
    in a member's .npy header) escape as the parser's own error: raise them as the checkpoint error."""
    import tokenize

    try:
        yield
    except (NotImplementedError, SyntaxError, tokenize.TokenError, EOFError, OverflowError) as e:
        raise errors.CheckpointError(f"checkpoint {str(path)!r} is corrupted or unreadable "
                                     f"({type(e).__name__}: {e})", path) from None


def read_meta(path) -> dict:
    _late_types()
    with _corrupt_as_checkpoint_error(path):
        return _checkpoint().read_meta(path)


def check_target(path, protect=()) -> None:
    _late_types()
    _checkpoint().check_target(path, protect=protect)


def load_full(path, *, X, y, optimizer) -> dict:
    """A full checkpoint (all of W): ``params``, ``opt_state``, ``step``."""
    with _corrupt_as_checkpoint_error(path):
        return _checkpoint().load(path, X=X, y=y, optimizer=optimizer)


def load_wide(path, *, X, y, optimizer) -> dict:
    """A wide or compact checkpoint: ``model``, ``opt_state``, ``step``."""
    with _corrupt_as_checkpoint_error(path):
        return _wide().load(path, X=X, y=y, optimizer=optimizer)


def save_full(path, params, opt_state, step: int, config: dict, X, y) -> None:
    _checkpoint().save(path, params, opt_state, step, config, X, y)


def save_wide(path, model, X, y, *, opt_state, step: int, config: dict) -> None:
    _wide().save(path, model, X, y, opt_state=opt_state, step=step, config=config)


def save_trained(path, key, params, X, y, *, b, W0, opt_state, optimizer, step: int, config: dict, active) -> None:
    """A full-width run's compact checkpoint: the rows that differ from ``W0`` and the active rows."""
    _wide().save_trained(path, key, params, X, y, b=b, W0=W0, opt_state=opt_state, optimizer=optimizer,
                         step=step, config=config, active=active)


# ----------------------------------------------------------------------------------------- memory
def available_bytes(device):
    """``(bytes or None, where the figure comes from)``."""
    _late_types()
    return _memory().available_bytes(device)


def check_memory(method, n, m, d, *, itemsize, optimizer, compare, available) -> dict:
    """The full-width run's memory check: ``estimate``/``available``/``source``; raises a memory error."""
    return _memory().check(method, n, m, d, itemsize=itemsize, optimizer=optimizer, compare=compare,
                           available=available)


def wide_largest_width(method, n, d, available, dtype, *, optimizer_slots, span) -> int:
    return _wide().largest_width(method, n, d, available, dtype, b=None, optimizer_slots=optimizer_slots, span=span)


def wide_check_fits(method, n, d, m, dtype, *, available, b, x_norm, optimizer_slots, span) -> dict:
    """The wide run's memory check: a dict with ``total`` (bytes); raises a memory error."""
    _late_types()
    return _wide().check_fits(method, n, d, m, dtype, available=available, b=b, x_norm=x_norm,
                              optimizer_slots=optimizer_slots, span=span)
