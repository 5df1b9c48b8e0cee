r"""Which optax optimizers the compacted training methods may run, decided by construction (private).

The compacted methods (``active``, ``dtree``, ``wtree`` of :func:`jaxcorr.train.fit`) run the
optimizer on the rows ``A`` that can move (plus padding rows) instead of all ``m`` rows. That is the
dense computation exactly when, at every step,

(a) the update and new state of each row in ``A`` do not depend on how many rows the tensor has or
    on the rows outside ``A``, except through sums over rows of quantities that are zero on those
    rows (e.g. the global gradient norm of ``clip_by_global_norm``: the rows outside ``A`` have
    zero gradient, so the compacted sum equals the full one); and
(b) every row outside ``A`` (zero gradient, the reference state of a fresh ``init``) gets a zero
    update and keeps the reference state.

Nothing here is decided from numbers. :func:`analyze` reads the optimizer's ``init`` and ``update``
as jaxprs (traced at a probe row count ``L``) and propagates, for each intermediate value, what it
is on the rows outside ``A``:

- ``ZERO``: exactly zero there (the gradient; state leaves that ``init`` makes zero; a literal or
  captured constant only if it is 0; add/sub/max/min/clamp only of zeros);
- ``UNIF``: the same value on every such row, a function of global (row-free) values only
  (``eps``, ``sqrt(v) + eps``, ``max(g * g, eps)``, a state leaf that ``init`` fills with a
  constant). Every row-free value that is not provably 0 is ``UNIF``: a constant, the step count,
  and a sum over rows (exact when its summands are ``ZERO``, but not zero itself);
- ``PARAM``: depends on the row's own parameters (weight decay ``wd * w_r``);
- ``TAINT``: depends on other rows in a way that is not exact: a reduction over the row axis of
  anything but a ``ZERO`` sum (per-tensor norms of the parameters as in LARS/LAMB/adafactor,
  ``reduce_max`` as in sm3, a sum over rows of a ``UNIF`` value such as ``sum(max(g * g, eps))``,
  which dense sums over ``m`` rows and the compacted methods over fewer), a literal equal to the
  row count (``mean`` over rows), reshapes or
  gathers that mix rows, random numbers drawn per row, and any primitive not known to be safe.

The optimizer is accepted when no output is ``TAINT`` and the update and new row state are at most
``UNIF``: then (a) holds by construction, and on the rows outside ``A`` the update and new state
are the same function of the same global values for every row. Padding rows of the compacted
tensor are such rows (zero gradient, the reference state, parameters zero: ``UNIF`` values do not
read them), so :mod:`jaxcorr.train._steps` checks (b) at run time on the last padding row, every
step, at O(d) cost: if that row's update is not zero or its state leaves the reference, every row
outside ``A`` would move at this step, and the step is flagged before it is kept; likewise if a
sum over rows inside the update reads a non-zero summand on that row (:mod:`jaxcorr.train._guard`:
dense would add it once per idle row). Proof of
exactness: by induction on ``t``, rows outside ``A`` hold ``w_r(0)``, zero gradient (they fire for
no point) and the reference state; the step-``t`` globals equal the dense ones (a); the padding row
computes bit for bit what every such row computes (``UNIF``), and the guard saw zero and the
reference, so (b) holds at ``t`` and the invariant carries to ``t + 1``. ``PARAM`` outputs (weight
decay, also decay that a schedule switches on late) are refused up front, before any step.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import numpy as np

ZERO, UNIF, PARAM, TAINT = 0, 1, 2, 3
_NAMES = {ZERO: "zero", UNIF: "uniform", PARAM: "parameter-dependent", TAINT: "coupled across rows"}
_PROBE_ROWS = (1009, 1013)

#: f(0) = 0 elementwise (with the integer_pow exponent checked separately).
_ZERO_UNARY = frozenset({
    "neg", "abs", "sqrt", "cbrt", "square", "sign", "convert_element_type", "copy", "copy_p", "sin", "tan",
    "tanh", "asin", "atan", "asinh", "atanh", "expm1", "log1p", "erf", "floor", "ceil", "round", "real",
    "imag", "reduce_precision", "stop_gradient", "optimization_barrier", "integer_pow"})
#: zero when every operand is zero.
_ZERO_IF_ALL = frozenset({"add", "add_any", "sub", "max", "min", "or", "xor", "clamp", "nextafter"})
#: zero when some operand is zero (and the others are at most UNIF, i.e. finite on those rows or
#: caught by the run-time guard: the padding row computes the same 0 * inf).
_ZERO_IF_ANY = frozenset({"mul", "and"})
#: other elementwise primitives: their value on the rows outside A is UNIF when the inputs are.
_ELEMENTWISE = frozenset({
    "exp", "exp2", "log", "pow", "rsqrt", "logistic", "cos", "acos", "acosh", "cosh", "sinh", "erfc",
    "erf_inv", "lgamma", "digamma", "is_finite", "not", "eq", "ne", "lt", "le", "gt", "ge", "select_n",
    "rem", "div", "atan2", "shift_left", "shift_right_logical", "shift_right_arithmetic", "population_count",
    "clz", "square", "integer_pow", "max", "min"}) | _ZERO_UNARY | _ZERO_IF_ALL | _ZERO_IF_ANY
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                     "argmax", "argmin"})
#: operations that move values without changing them.
_SHAPE_OPS = frozenset({"broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose", "reduce_sum",
                        "reduce_max", "reduce_min", "select_n", "concatenate", "pad", "slice", "dynamic_slice"})
_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
                    "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin"})


class Verdict(NamedTuple):
    """Outcome of :func:`analyze` (hashable)."""

    ok: bool
    reason: str  # why not, for the error message ("" when ok)
    row_axes: tuple  # per flattened state leaf: the row axis, or None for a row-free leaf
    uniform: bool  # some state leaf is a nonzero constant on idle rows (its reference is not 0)


def _is_zero_literal(v) -> bool:
    if not hasattr(v, "val"):
        return False
    val = np.asarray(v.val)
    return val.size == 1 and val.dtype.kind in "iufb" and float(val) == 0


def _const_class(c) -> int:
    """A captured constant: ZERO if every entry is 0, else UNIF (a constant is not zero)."""
    try:
        return ZERO if not np.any(np.asarray(c)) else UNIF
    except Exception:  # noqa: BLE001 (a typed PRNG key, an opaque constant)
        return UNIF


def _rows(aval, L: int) -> int:
    return sum(1 for s in getattr(aval, "shape", ()) if s == L)


class _Analysis:
    """Abstract interpretation of a jaxpr over the lattice ZERO < UNIF < PARAM < TAINT."""

    def __init__(self, L: int):
        self.L, self.why = L, []

    def read(self, env, v):
        if hasattr(v, "val"):  # a Literal: zero only if it is 0
            val = np.asarray(v.val)
            if val.size == 1 and val.dtype.kind in "iuf" and float(val) == self.L:
                self.why.append("a constant equal to the number of rows (a mean over rows)")
                return TAINT
            return ZERO if _is_zero_literal(v) else UNIF
        return env[v]

    def run(self, jaxpr, consts_cls, in_cls):
        env = {}
        for v, c in zip(jaxpr.constvars, consts_cls):
            env[v] = c
        for v, c in zip(jaxpr.invars, in_cls):
            env[v] = c
        for eqn in jaxpr.eqns:
            outs = self.eqn(env, eqn)
            for v, c in zip(eqn.outvars, outs):
                env[v] = c
        return [self.read(env, v) for v in jaxpr.outvars]

    def sub(self, closed, in_cls):
        jaxpr = getattr(closed, "jaxpr", closed)
        consts = getattr(closed, "consts", ())
        ccls = [TAINT if self.L in np.shape(c) else _const_class(c) for c in consts]
        return self.run(jaxpr, ccls, in_cls)

    def eqn(self, env, eqn):  # noqa: C901 (one dispatch over primitive kinds)
        L, name, p = self.L, eqn.primitive.name, eqn.params
        ins = [self.read(env, v) for v in eqn.invars]
        rin = [_rows(v.aval, L) for v in eqn.invars]
        rout = [_rows(v.aval, L) for v in eqn.outvars]
        n_out = len(eqn.outvars)
        worst = max(ins, default=ZERO)
        if any(r > 1 for r in rin + rout):
            return self.taint(f"{name} pairs rows with rows", n_out)
        if not any(rin) and not any(rout) and name not in _CALLS and name != "cond":
            return [self.row_free(name, ins)] * n_out
        if name in _CALLS:
            inner = p.get("jaxpr") or p.get("call_jaxpr") or p.get("fun_jaxpr")
            if inner is None:
                return self.taint(f"{name} without a readable body", n_out)
            return self.sub(inner, ins)
        if name == "cond":
            if rin[0] or ins[0] == TAINT:
                return self.taint("a branch chosen per row", n_out)
            branches = [self.sub(br, ins[1:]) for br in p["branches"]]
            return [max(cs) for cs in zip(*branches)]
        zeros = [_is_zero_literal(v) for v in eqn.invars]
        if name == "broadcast_in_dim":
            if rin[0] or zeros[0]:
                return [ZERO if zeros[0] else worst]
            return [worst if worst in (ZERO, TAINT) else UNIF]  # a global onto every row
        if name in ("reshape", "squeeze", "expand_dims"):
            same = [s for s in eqn.invars[0].aval.shape if s != 1] == [s for s in eqn.outvars[0].aval.shape if s != 1]
            return [worst] if same else self.taint("a reshape that mixes rows", 1)
        if name == "transpose":
            return [worst]
        if name in _REDUCE:
            return self.reduce(eqn, ins[0])
        if name == "dot_general":
            return self.dot(eqn, ins)
        if name in _ELEMENTWISE and all(rout):
            if name in _ZERO_IF_ANY and any(zeros):  # times a literal 0 (e.g. weight_decay=0.0)
                return [ZERO]
            return [self.elementwise(name, p, ins, rin)]
        return self.taint(f"{name} on rows (not known to keep rows apart)", n_out)

    @staticmethod
    def row_free(name, ins):
        """A value without a row axis (a global): ZERO only when it is exactly zero (built from
        zeros by an operation that keeps 0), TAINT when built from TAINT, else UNIF (the same on
        every row, and not zero: a constant, a step count, a sum over rows)."""
        if TAINT in ins:
            return TAINT
        if ins and all(c == ZERO for c in ins) and name in _ZERO_UNARY | _ZERO_IF_ALL | _ZERO_IF_ANY | _SHAPE_OPS:
            return ZERO
        if name in _ZERO_IF_ANY and ZERO in ins:
            return ZERO
        return UNIF

    def taint(self, why, n):
        self.why.append(why)
        return [TAINT] * n

    def elementwise(self, name, p, ins, rin):
        worst = max(ins)
        if worst == TAINT:
            return TAINT
        if name == "integer_pow" and p.get("y", 0) <= 0:
            return max(UNIF, worst)
        if name in _ZERO_UNARY and len(ins) == 1 and ins[0] == ZERO:
            return ZERO
        if name in _ZERO_IF_ALL and all(c == ZERO for c in ins):
            return ZERO
        if name in _ZERO_IF_ANY and ZERO in [c for c, r in zip(ins, rin) if r] and worst <= UNIF:
            return ZERO
        if name == "div" and ins[0] == ZERO and rin[0] and ins[1] <= UNIF:
            return ZERO
        if name == "select_n" and ins[0] <= UNIF and all(c == ZERO for c in ins[1:]):
            return ZERO
        return max(UNIF, worst)

    def reduce(self, eqn, cls):
        L = self.L
        shape = eqn.invars[0].aval.shape
        axes = tuple(eqn.params.get("axes", ())) or (eqn.params.get("axis"),)
        if shape.index(L) not in axes:  # rows kept apart
            keeps_zero = eqn.primitive.name in ("reduce_sum", "reduce_max", "reduce_min", "reduce_or")
            return [cls if (cls != ZERO or keeps_zero) else UNIF]
        if eqn.primitive.name == "reduce_sum" and cls == ZERO:
            # a sum over rows of values that are zero on the idle rows: exact, but not zero itself
            return [UNIF]
        return self.taint(f"{eqn.primitive.name} over the rows of a {_NAMES[cls]} value", 1)

    def dot(self, eqn, ins):
        L = self.L
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        contracted = [(L in v.aval.shape and v.aval.shape.index(L) in c)
                      for v, c in zip(eqn.invars, (lc, rc))]
        worst = max(ins)
        if any(contracted):
            if ZERO in ins and worst <= UNIF:
                return [UNIF]  # a sum over rows of products that are zero on the idle rows: exact
            return self.taint("a matrix product that sums over rows", 1)
        if worst == TAINT:
            return [TAINT]
        return [ZERO if (ZERO in ins and worst <= UNIF) else max(UNIF, worst)]


_SHAPES = re.compile(r"\[[^\]]*\]|(new_sizes|shape|dimensions|broadcast_dimensions)=\([^)]*\)")


def program(optimizer, rows: int, d: int, dtype) -> str:
    """The optimizer's ``update`` on ``(rows, d)`` parameters as jaxpr text with the shapes removed.

    Equal texts for two row counts mean the same program up to shapes: same primitives, same
    literals (a literal that follows the row count, as in a mean over rows, shows up here).
    """
    g = jax.ShapeDtypeStruct((rows, d), dtype)
    text = str(jax.make_jaxpr(optimizer.update)(g, jax.eval_shape(optimizer.init, g), g))
    return " ".join(_SHAPES.sub("", text).split())  # line breaks follow the text's width


def same_program(optimizer, sizes, d: int, dtype) -> bool:
    """True if ``update`` is the same program (:func:`program`) for every row count in ``sizes``
    and for the probe row count the analysis ran at."""
    L = _probe_rows(d)
    try:
        ref = program(optimizer, L, d, dtype)
        return all(program(optimizer, int(s), d, dtype) == ref for s in sizes)
    except Exception:  # noqa: BLE001
        return False


def _probe_rows(d: int) -> int:
    return _PROBE_ROWS[0] if d not in _PROBE_ROWS else 1019


def _trace(optimizer, L: int, d: int, dtype):
    g = jax.ShapeDtypeStruct((L, d), dtype)
    init = jax.make_jaxpr(optimizer.init)(g)
    state = jax.eval_shape(optimizer.init, g)
    update = jax.make_jaxpr(optimizer.update)(g, state, g)
    return init, state, update


def row_axes(optimizer, d: int, dtype) -> tuple:
    """Per flattened state leaf, the axis whose length is the number of rows (or None).

    Found by building the state for two row counts: an axis that follows the row count is the row
    axis. Raises ``ValueError`` for a leaf with more than one such axis or a structure that changes.
    """
    L1, L2 = _PROBE_ROWS
    s1 = jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct((L1, d), dtype))
    s2 = jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct((L2, d), dtype))
    l1, t1 = jax.tree_util.tree_flatten(s1)
    l2, t2 = jax.tree_util.tree_flatten(s2)
    if t1 != t2:
        raise ValueError("the optimizer's state structure depends on the number of rows")
    axes = []
    for a, b in zip(l1, l2):
        diff = [k for k, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        if len(a.shape) != len(b.shape) or len(diff) > 1 or (diff and (a.shape[diff[0]], b.shape[diff[0]]) != (L1, L2)):
            raise ValueError(f"a state leaf of shape {a.shape} does not follow the rows along one axis")
        axes.append(diff[0] if diff else None)
    return tuple(axes)


def analyze(optimizer, m: int, d: int, dtype) -> Verdict:
    """Decide by construction (see the module docstring) whether the compacted methods may run
    ``optimizer`` on ``(m, d)`` parameters of ``dtype``. Never raises for a well-formed optimizer.

    The analysis runs at a probe row count; :func:`same_program` ties it to the ``m`` rows of the
    dense run here, and :class:`jaxcorr.train` ties it to the compacted row count the same way.
    """
    L = _probe_rows(d)
    try:
        axes = row_axes(optimizer, d, dtype)
        init, state, update = _trace(optimizer, L, d, dtype)
    except Exception as err:  # noqa: BLE001 (an optimizer that cannot be traced on plain arrays)
        return Verdict(False, f"it could not be analysed ({type(err).__name__}: {err})", (), False)
    if not same_program(optimizer, (L + 4, m), d, dtype):
        return Verdict(False, "its computation changes with the number of rows (e.g. a mean over rows, "
                       "or factored moments only past some size)", axes, False)
    an = _Analysis(L)
    init_cls = an.sub(init, [PARAM])
    n_state = len(init_cls)
    uniform = any(c == UNIF for c, ax in zip(init_cls, axes) if ax is not None)
    if any(c > UNIF for c in init_cls):
        return Verdict(False, "its initial state of a row depends on the row's parameters or on other rows",
                       axes, uniform)
    in_cls = [ZERO] + list(init_cls) + [PARAM]  # (gradient, state leaves, parameters)
    out = an.sub(update, in_cls)
    upd_cls, state_cls = out[:len(out) - n_state], out[len(out) - n_state:]
    if TAINT in out:
        return Verdict(False, "it couples rows: " + "; ".join(dict.fromkeys(an.why)), axes, uniform)
    if PARAM in upd_cls or PARAM in state_cls:
        return Verdict(False, "it moves a row whose gradient and state are zero, depending on the row's "
                       "parameters (weight decay, also decay that a schedule switches on later)", axes, uniform)
    return Verdict(True, "", axes, uniform)
