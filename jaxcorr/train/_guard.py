r"""The idle-row guard's second half: what a sum over the rows would add from the idle rows.

The compacted methods run the optimizer on the rows of ``A`` plus padding rows; the padding rows
hold what every row outside ``A`` holds (zero gradient, the reference state, zero parameters), so
they compute what every idle row computes (:mod:`jaxcorr.train._linearity`). A sum over the rows
inside the update (a global norm, ``clip_by_global_norm``) is the dense sum exactly when its
summand is zero on those rows: dense adds that summand ``m - |A|`` times, the compacted tensor
``L - |A|`` times. :func:`update` evaluates the optimizer's ``update`` equation by equation (the
same primitives, so the same values) and, at every sum over the row axis (``reduce_sum``, or a
``dot_general`` contracting it), reads the summand on the last padding row: a non-zero there flags
the step (the guard fires, :class:`jaxcorr.errors.IdleRowMoved`). O(d) per sum; the set-up's
jaxpr analysis refuses such optimizers up front, so this check is the run-time proof that it did.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

__all__ = ["update"]

_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
                    "custom_vjp_call", "custom_vjp_call_jaxpr"})


def _last_row(x, axes, L):
    """The summand on the last padding row: index -1 along the one reduced axis of length ``L``
    (None when no reduced axis, or more than one, has that length: the row axis is not known)."""
    rows = [a for a in axes if x.shape[a] == L]
    if len(rows) != 1:
        return None
    return jnp.take(x, L - 1, axis=rows[0])


def _flag(eqn, vals, L):
    """A bool scalar: this equation sums over the rows a summand that is not zero on the last row."""
    name = eqn.primitive.name
    if name == "reduce_sum":
        part = _last_row(vals[0], tuple(eqn.params["axes"]), L)
        return None if part is None else jnp.any(part != 0)
    if name == "dot_general":
        (lc, rc), _ = eqn.params["dimension_numbers"]
        lhs, rhs = vals
        lrow = [a for a in lc if lhs.shape[a] == L]
        if len(lrow) != 1:
            return None
        k = list(lc).index(lrow[0])
        a, b = jnp.take(lhs, L - 1, axis=lc[k]), jnp.take(rhs, L - 1, axis=rc[k])
        # the summand on the last row is the outer product of the two slices: zero iff one is zero
        # on every pairing; checked as "some entry of each is non-zero"
        return jnp.any(a != 0) & jnp.any(b != 0)
    return None


def _eval(jaxpr, consts, args, L, flags):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        inner = next((eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params), None)
        if eqn.primitive.name in _CALLS and inner is not None:
            outs = _eval(getattr(inner, "jaxpr", inner), getattr(inner, "consts", ()), vals, L, flags)
        else:
            flag = _flag(eqn, vals, L)
            if flag is not None:
                flags.append(flag)
            outs = eqn.primitive.bind(*vals, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def update(optimizer, grad, state, params):
    """``optimizer.update(grad, state, params)`` and a bool scalar: some sum over the ``L`` rows of
    ``grad`` (rows first) adds a non-zero summand from the last row (an idle padding row)."""
    L = grad.shape[0]
    closed, out_shape = jax.make_jaxpr(optimizer.update, return_shape=True)(grad, state, params)
    flags: list = []
    outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves((grad, state, params)), L, flags)
    updates, new_state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)
    moved = jnp.zeros((), bool)
    for f in flags:
        moved = moved | f
    return updates, new_state, moved
