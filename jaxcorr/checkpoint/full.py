"""The full form: all m rows of ``W`` and ``a``, and the optimizer state as it is.

Members: ``W`` (m, d), ``a`` (m,), ``opt_000``, ``opt_001``, ...: the leaves of the optax state in
``jax.tree_util`` order; ``meta``: ``step``, ``config``, the data ``fingerprint``, ``opt_treedef``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import nn
from jaxcorr.checkpoint import _container
from jaxcorr.errors import CheckpointError

__all__ = ["save", "load", "state_leaves", "check_state"]


def _opt_name(i: int) -> str:
    return f"opt_{i:03d}"


def save(path, params, opt_state, step: int, config: dict | None, X, y, *, timings: dict | None = None) -> None:
    """Write ``params`` (:class:`jaxcorr.nn.Params`), the optax state over ``W``, ``step`` and
    ``config`` (JSON; ``m`` and ``d`` in it are checked against W on load) with the data's fingerprint.

    Raises:
      ValueError: ``step`` < 0 or ``config`` not JSON-serialisable.
    """
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    arrays = {"W": params.W, "a": params.a}
    for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
        arrays[_opt_name(i)] = leaf
    meta = {"step": step, "config": config, "fingerprint": _container.fingerprint(X, y),
            "opt_treedef": str(jax.tree_util.tree_structure(opt_state))}
    _container.write(path, arrays, meta, timings=timings)


def state_leaves(arrays: dict) -> list:
    """The stored optimizer-state leaves ``opt_000``, ``opt_001``, ... in order."""
    return [arrays[_opt_name(i)] for i in range(sum(k.startswith("opt_") for k in arrays))]


def check_state(path, ref_leaves, leaves, saved_with=None) -> None:
    """CheckpointError unless the stored state arrays have the count, shapes and dtypes of ``ref_leaves``."""
    path = os.fspath(path)
    if len(ref_leaves) != len(leaves):
        raise CheckpointError(
            f"checkpoint {path!r} holds an optimizer state with {len(leaves)} arrays, but this "
            f"optimizer's state has {len(ref_leaves)} (was it saved with another optimizer? it was "
            f"saved with {saved_with or 'an unrecorded optimizer'!r})", path)
    for i, (have, want) in enumerate(zip(leaves, ref_leaves)):
        if np.shape(have) != np.shape(want) or np.asarray(have).dtype != np.asarray(want).dtype:
            raise CheckpointError(
                f"checkpoint {path!r}: optimizer state array {i} has shape {np.shape(have)} "
                f"{np.asarray(have).dtype}, this optimizer expects {np.shape(want)} {np.asarray(want).dtype}", path)


def load(path, *, X=None, y=None, optimizer=None, meta_arrays=None) -> dict:
    """Read a full checkpoint: ``params``, ``opt_state`` (in ``optimizer.init(W)``'s structure when
    ``optimizer`` is given, else the flat list of leaves), ``step``, ``config``, ``fingerprint``.

    Raises:
      CheckpointError: unreadable, inconsistent with its config, other data, another optimizer's state.
    """
    path = os.fspath(path)
    meta, arrays = meta_arrays if meta_arrays is not None else _container.read(path)
    config = meta.get("config") or {}
    W, a = arrays.get("W"), arrays.get("a")
    if W is None or a is None or W.ndim != 2 or a.shape != (W.shape[0],):
        raise CheckpointError(f"checkpoint {path!r} has malformed params", path)
    m, d = W.shape
    for key, have in (("m", m), ("d", d)):
        if key in config and config[key] != have:
            raise CheckpointError(f"checkpoint {path!r} is inconsistent: config {key}={config[key]} but W is "
                                  f"{W.shape}", path)
    fp = meta.get("fingerprint", {})
    _container.check_data(path, fp, X, y, d)
    leaves = state_leaves(arrays)
    if optimizer is not None:
        ref_leaves, treedef = jax.tree_util.tree_flatten(optimizer.init(jnp.asarray(W)))
        check_state(path, ref_leaves, leaves, config.get("optimizer"))
        opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])
    else:
        opt_state = [jnp.asarray(x) for x in leaves]
    return {"params": nn.Params(W=jnp.asarray(W), a=jnp.asarray(a)), "opt_state": opt_state,
            "step": int(meta["step"]), "config": config, "fingerprint": fp}
