"""Input validation at the eager API boundary.

Every public entry point of jaxcorr calls these helpers before it hands its arguments to a jitted
implementation. Shape and rank checks only look at static shapes, so they cost nothing under an
outer ``jax.jit``; value checks (finiteness, index ranges) run only when the value is concrete,
i.e. not a tracer, so they never add work or host round trips to a jitted call.

Value checks of an array on an accelerator reduce it there and read back one scalar with an
explicit ``jax.device_get`` (never the whole array, and never an implicit transfer: they pass
under ``jax.transfer_guard("disallow")``); host values, and arrays on the CPU backend (where
reading them is free), are checked by numpy. The choice is by the array's platform
(:data:`HOST_PLATFORMS`).

Dtypes (:func:`check_dtype`): data and weights are float32 (the default on every backend) or
float64 (x64 mode), and keep their dtype. Integer inputs are converted to the default float dtype,
an exact conversion for integers up to 2^24 (2^53 under x64). Half-precision floats (bfloat16,
float16, float8) are refused with an error naming the argument: the max-trees compare inner
products against a threshold, and at 8 or 11 mantissa bits the fire sets would differ from the
float32 network's; widening them silently in one place and not another would hide that.
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds a value we may inspect on the host (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def float_dtype(*arrays):
    """The floating dtype the structures compute in: the promoted dtype of the inputs, made floating.

    Integer inputs (DDFN works over integer points, Definition 1.3) become the default float dtype
    (float32, or float64 in x64 mode); float32 and float64 inputs keep their dtype.
    """
    dt = jnp.result_type(*arrays)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    return dt


@jax.jit
def _nonfinite_count(x):
    return jnp.sum(~jnp.isfinite(x), dtype=jnp.int32)


@jax.jit
def _nan_any(x):
    return jnp.any(jnp.isnan(x))


@jax.jit
def _min_max(x):
    return jnp.min(x), jnp.max(x)


#: Platforms whose arrays the checks read directly with numpy (zero-copy); others are reduced on
#: their device first.
HOST_PLATFORMS = frozenset({"cpu"})


def _on_device(x) -> bool:
    """True for a JAX array to reduce on its device before reading (not on a host platform)."""
    return isinstance(x, jax.Array) and not all(d.platform in HOST_PLATFORMS for d in x.devices())


def _is_inexact(x) -> bool:
    return jnp.issubdtype(_dtype_of(x), jnp.inexact)


def _dtype_of(x):
    """The dtype of ``x`` without reading its values (no device-to-host copy of a JAX array)."""
    dt = getattr(x, "dtype", None)
    return np.asarray(x).dtype if dt is None else np.dtype(dt)


def check_finite(name: str, x) -> None:
    """Raise ``ValueError`` if a concrete ``x`` holds NaN or infinity (a device array is reduced on
    its device and one count read back explicitly)."""
    if not is_concrete(x) or not _is_inexact(x):
        return
    if _on_device(x):
        bad = int(jax.device_get(_nonfinite_count(x))) if x.size else 0
    else:
        arr = np.asarray(x)
        bad = int(np.size(arr) - np.isfinite(arr).sum())
    if bad:
        raise ValueError(f"{name} must be finite, but it holds {bad} NaN or infinite value(s)")


def check_matrix(name: str, x, *, cols: int | None = None, cols_name: str = "d") -> None:
    """``x`` must be a 2-D array with at least one row (and ``cols`` columns if given), all finite."""
    shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got shape {shape}")
    if shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {shape}")
    if cols is not None and shape[1] != cols:
        raise ValueError(f"{name} must have {cols_name}={cols} columns, got shape {shape}")
    check_dtype(name, x)
    check_finite(name, x)


#: The floating dtypes jaxcorr computes in (float64 needs x64 mode); integers are converted.
ACCEPTED_FLOATS = ("float32", "float64")


def check_dtype(name: str, x) -> None:
    """``x`` must be float32, float64 or an integer dtype (static: reads no values).

    Raises:
      ValueError: a half-precision float (bfloat16, float16, float8), a complex, boolean or other
        non-numeric dtype; the message names ``name`` and the accepted dtypes.
    """
    dt = _dtype_of(x)
    if jnp.issubdtype(dt, jnp.integer) or dt.name in ACCEPTED_FLOATS:
        return
    if jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"{name} has dtype {dt.name}, which jaxcorr does not compute in: pass float32 "
                         f"(or float64 with x64 enabled) or integers, e.g. {name}.astype(jnp.float32); "
                         "half precision would change which neurons fire")
    raise ValueError(f"{name} must have a real numeric dtype (float32, float64 or an integer dtype), got {dt}")


def floating_dtype(dtype):
    """``dtype`` as a floating ``jnp.dtype``; ``None`` gives the default float (float64 under x64)."""
    dt = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be floating, got {dt}")
    if dt.name not in ACCEPTED_FLOATS:
        raise ValueError(f"dtype must be one of {ACCEPTED_FLOATS} (float64 with x64 enabled), got {dt.name}")
    return dt


def check_scalar(name: str, x) -> None:
    """A finite real scalar (0-d)."""
    if np.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(x)}")
    check_finite(name, x)


def check_int(name: str, value, *, minimum: int, what: str = "an int", type_error=TypeError) -> int:
    """A Python int (``operator.index``) >= ``minimum``; raises ``type_error`` / ``ValueError``."""
    try:
        v = operator.index(value)
    except TypeError:
        raise type_error(f"{name} must be {what}, got {type(value).__name__}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_capacity(name: str, capacity) -> int:
    """A static Python int >= 1."""
    return check_int(name, capacity, minimum=1, what="a Python int (it is static)")


def check_index(name: str, idx, bound: int, *, bound_name: str) -> None:
    """Integer index (scalar or 1-D) in ``[0, bound)``; range checked only when concrete."""
    dt = _dtype_of(idx)
    if not jnp.issubdtype(dt, jnp.integer):
        raise ValueError(f"{name} must be an integer index, got dtype {dt}")
    if not is_concrete(idx) or not np.size(idx):
        return
    if _on_device(idx):  # reduced on its device; one explicit read of two scalars
        lo, hi = (int(v) for v in jax.device_get(_min_max(idx)))
    else:
        arr = np.asarray(idx)
        lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= bound:
        arr = np.asarray(jax.device_get(idx))  # the error path only
        bad = arr[(arr < 0) | (arr >= bound)].ravel()[0]
        raise IndexError(f"{name} must be in [0, {bound_name}={bound}), got {int(bad)}")


def check_update_args(r, z, d: int, m: int, *, r_name: str = "r", m_name: str = "m") -> None:
    """One neuron (``r`` scalar, ``z`` (d,)) or a batch (``r`` (k,), ``z`` (k, d))."""
    r_nd = np.ndim(r)
    if r_nd == 0:
        if np.shape(z) != (d,):
            raise ValueError(f"z must have shape (d,)=({d},) for a single {r_name}, got {np.shape(z)}")
    elif r_nd == 1:
        k = np.shape(r)[0]
        if np.shape(z) != (k, d):
            raise ValueError(
                f"z must have shape (k, d)=({k}, {d}) for a batch of k={k} indices {r_name}, got {np.shape(z)}"
            )
    else:
        raise ValueError(f"{r_name} must be a scalar or a 1-D array of indices, got shape {np.shape(r)}")
    check_index(r_name, r, m, bound_name=m_name)
    check_dtype("z", z)
    check_finite("z", z)


def check_not_nan(name: str, x) -> None:
    """Raise ``ValueError`` if a concrete ``x`` holds NaN (infinities are allowed)."""
    if is_concrete(x) and _is_inexact(x):
        nan = bool(jax.device_get(_nan_any(x))) if _on_device(x) else bool(np.isnan(np.asarray(x)).any())
        if nan:
            raise ValueError(f"{name} must not be NaN (no value is > NaN: the answer would be silently empty)")


def check_tau(tau, finite: bool) -> None:
    """A scalar threshold ``tau``: finite when ``finite``, else only not NaN (concrete values only)."""
    if type(tau) is float:  # fast path for the common Python float
        if math.isnan(tau) or (finite and math.isinf(tau)):
            check_tau(np.float64(tau), finite)  # the general path raises the message
        return
    if finite:
        check_finite("tau", tau)
    else:
        check_not_nan("tau", tau)


def check_tree_index(t, num_trees: int, t_name: str, n_name: str) -> None:
    """A scalar integer tree index ``t`` in ``[0, num_trees)`` (concrete values only)."""
    if type(t) is int:  # fast path for the common Python int
        if not 0 <= t < num_trees:
            check_index(t_name, np.int64(t), num_trees, bound_name=n_name)  # raises the message
        return
    if np.ndim(t) != 0:
        raise ValueError(f"{t_name} must be a scalar tree index, got shape {np.shape(t)}")
    check_index(t_name, t, num_trees, bound_name=n_name)


def validate_query_args(tau, capacity, *, t=None, num_trees=None, t_name="i", n_name="n", finite=True):
    """Eager checks of a query: ``tau`` a scalar, ``capacity`` a static int >= 1, ``t`` (if given) a
    scalar integer tree index in ``[0, num_trees)``. ``finite=True`` (the DTree and WTree wrappers)
    refuses an infinite ``tau`` too, ``finite=False`` (the max-tree API) only NaN. Value checks run
    only on concrete values. Returns the capacity as an int."""
    cap = check_capacity("capacity", capacity)
    if type(tau) is not float and np.ndim(tau) != 0:
        raise ValueError(f"tau must be a scalar, got shape {np.shape(tau)}")
    check_tau(tau, finite)
    if t is not None:
        check_tree_index(t, num_trees, t_name, n_name)
    return cap


def validate_query_all_args(tau, capacity, *, num_trees: int, n_name: str = "n", finite: bool = True):
    """Eager checks of ``query_all``: ``tau`` a scalar or of shape ``(num_trees,)`` (finite, or with
    ``finite=False`` not NaN); ``capacity`` a static int >= 1. Returns the capacity as an int."""
    cap = check_capacity("capacity", capacity)
    if np.ndim(tau) not in (0, 1) or (np.ndim(tau) == 1 and np.shape(tau)[0] != num_trees):
        raise ValueError(f"tau must be a scalar or have shape ({n_name},)=({num_trees},), got {np.shape(tau)}")
    check_tau(tau, finite)
    return cap


def check_rate(name: str, value) -> float:
    """A finite Python float >= 0 (a learning rate, a momentum); ``bool`` is refused."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {v}")
    return v


def check_real(name: str, value) -> float:
    """A finite real scalar (0-d) as a Python float (a threshold such as ``b``)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a finite real scalar, got shape {np.shape(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real scalar, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v
