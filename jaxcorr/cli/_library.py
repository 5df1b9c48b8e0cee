"""The command line's calls into the training, wide-model, checkpoint, memory, cost and evaluation modules (private).

Every use the CLI makes of :mod:`jaxcorr.train`, :mod:`jaxcorr.wide`, :mod:`jaxcorr.span_init`,
:mod:`jaxcorr.checkpoint`, :mod:`jaxcorr.memory`, :mod:`jaxcorr.cost` and :mod:`jaxcorr.evaluation` goes
through a function here, so that the rest of the package depends on what it needs, not on where the library keeps it.
The modules are imported on first use (the parser and the option checks need no JAX).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings

import numpy as np

__all__ = [
    "MAX_MATERIALIZE",
    "active_rows",
    "available",
    "capacity_reruns",
    "check_target",
    "choose_method",
    "dense_expected_faster",
    "empty_history",
    "evaluate",
    "expected_active",
    "fit_function",
    "from_params",
    "is_span",
    "is_wide",
    "kind",
    "lock",
    "memory_plan",
    "read_meta",
    "restore",
    "sampled_active",
    "save",
    "span_build",
    "span_inner_products",
    "span_train_loss",
    "span_fit_function",
    "span_model",
    "span_rows_start",
    "wide_fit_function",
    "wide_setup",
    "wide_width",
    "write_atomically",
]


def _train():
    from jaxcorr import train

    return train


def _wide():
    from jaxcorr import wide

    return wide


def _checkpoint():
    from jaxcorr import checkpoint

    return checkpoint


def _memory():
    from jaxcorr import memory

    return memory


def _span_init():
    from jaxcorr import span_init

    return span_init


#: The widest span-defined W(0) that is materialised as all its m rows (``--method dense``, ``--compare
#: dense`` under ``--init span``): :meth:`jaxcorr.span_init.SpanModel.params`'s limit (checked in the tests).
MAX_MATERIALIZE = 1 << 24


# ------------------------------------------------------------------------------------------ train
def _once(fit):
    """``fit`` without its "loss rose" UserWarning: the CLI says it once itself, in its own terms."""

    @functools.wraps(fit)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*loss rose", category=UserWarning)
            return fit(*args, **kwargs)

    return quiet


def fit_function(mesh=None):
    """``train.fit`` (on ``mesh`` when one is given)."""
    fit = _train().fit
    return _once(fit if mesh is None else functools.partial(fit, mesh=mesh))


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
    return isinstance(params, _wide().WideParams)


def expected_active(m: int, n: int, b: float) -> float:
    return _memory().expected_active(m, n, b)


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

    return _once(fit)


def active_rows(W0, X, b: float):
    return _wide().active_rows(W0, X, b)


def from_params(key, params, X, *, b, W0, opt_state, optimizer, active):
    """:func:`jaxcorr.wide.from_params` (ValueError: ``params`` did not start from ``W0``, or a
    state that only the full form can hold)."""
    return _wide().from_params(key, params, X, b=b, W0=W0, opt_state=opt_state, optimizer=optimizer,
                               active=active)


# ------------------------------------------------------------------------------------------ span
def span_model(model) -> bool:
    """``model`` is a span-defined model (:class:`jaxcorr.span_init.SpanModel`)."""
    return isinstance(model, _span_init().SpanModel)


def span_build(key, X, m: int, *, b: float, dtype):
    """The untrained span-defined model of ``key`` on ``X`` (:func:`jaxcorr.span_init.build`, then
    ``SpanModel(spec, active, None, X)``): the held rows A drawn, nothing d-dimensional."""
    si = _span_init()
    spec, active = si.build(key, X, m, b, dtype=dtype)
    return si.SpanModel(spec, active, None, X)


def span_inner_products(model, X):
    """``(ip, a)``: the inner products <w_r, x_i> of the rows of A of a span-defined model on its
    training points ``X`` (|A|, n), trained or W(0)'s, and their output weights. From the span
    coordinates, with no d-dimensional row: ``G C^T`` (W(0)), plus ``K X X^T`` (the span path's
    trained rows w_r(0) + K_r X), or ``W X^T`` (the row path's held rows). O(|A| n (k + n)) time,
    a few (|A|, n) arrays; rows outside A fire for no training point, so these are all that count."""
    import jax
    import jax.numpy as jnp

    si, tr = _span_init(), model.trained
    dt = model.dtype
    with jax.transfer_guard("allow"):
        Xd = jnp.asarray(X, dt)
        a = tr.a if tr is not None else si.output_weights(model.spec, model.active.idx, dtype=dt)
        return _inner(model.active.G, jnp.asarray(model.spec.C, dt), Xd, None if tr is None else tr.K,
                      None if tr is None else tr.W), jnp.asarray(a, dt)


def _inner(G, C, X, K, W):
    """(|A|, n) inner products: ``W X^T`` (row path), else ``G C^T`` (+ ``K X X^T``: the span path)."""
    if W is not None:
        return W @ X.T
    ip = G @ C.T
    return ip if K is None else ip + K @ (X @ X.T)


def span_train_loss(model, X, y, b: float) -> tuple[float, np.ndarray]:
    """``(L, fired)``: the loss 1/2 sum_i (f(x_i) - y_i)^2 of a span-defined model on its training
    points and the (|A|, n) fire mask <w_r, x_i> > b, from :func:`span_inner_products` (O(|A| n)
    memory: nothing d-dimensional, whatever m)."""
    import jax
    import jax.numpy as jnp

    ip, a = span_inner_products(model, X)
    with jax.transfer_guard("allow"):
        f = (a @ jnp.maximum(ip - jnp.asarray(b, ip.dtype), 0)) / jnp.sqrt(jnp.asarray(model.m, ip.dtype))
        e = np.asarray(f, np.float64) - np.asarray(y, np.float64)
        return 0.5 * float(e @ e), np.asarray(ip > b)


def span_fit_function(mesh=None):
    """A ``train.fit``-like callable over a :class:`jaxcorr.span_init.SpanModel` for the CLI's loop:
    :func:`jaxcorr.span_init.fit` from the model's training (``start=``; the optimizer state is the
    model's own, so ``opt_state`` is not used) and the trained model back. The callback's
    ``"snapshot"`` gives ``(SpanModel, opt_state)`` after the chunk: from the chunk's coefficients
    ``K`` on the span path, from its rows of A on the row path. ``fallback`` must be ``"error"``
    (no rows to fall back on: the CLI refuses ``--fallback dense`` under ``--init span``).

    With ``mesh`` (several processes) every optimizer trains on the row path, on the mesh
    (``span_init.fit(..., mesh=mesh)``); a model trained on the span path goes on from its rows
    (:func:`span_rows_start`)."""
    si = _span_init()

    def fit(model, X, y, *, steps, method, optimizer, b, opt_state=None, callback=None, chunk_size=None,
            fallback="error"):
        del opt_state  # model.trained.opt_state
        if fallback != "error":
            raise ValueError("a span-defined model has no dense fallback (--init rows has)")
        spec, active, start = model.spec, model.active, model.trained
        if mesh is not None and start is not None and start.K is not None:
            start = span_rows_start(model, optimizer)
        trained, hist = si.fit(spec, active, X, y, steps=steps, method=method, optimizer=optimizer, b=b,
                               callback=None if callback is None else _span_callback(callback, model, b),
                               chunk_size=chunk_size, start=start, mesh=mesh)
        return si.SpanModel(spec, active, trained, model.X), hist

    return _once(fit)


def span_rows_start(model, optimizer):
    """The training of a span-path model (coefficients ``K``, state over ``K``) as the row path's
    start: the trained rows of A (:meth:`jaxcorr.span_init.SpanTrained.trained_rows`, |A| d numbers)
    and the state in row form. The state of :func:`jaxcorr.train.sgd` (SGD, momentum, Nesterov) is
    linear in the gradients, whose rows are combinations of the points (Section 2): each (|A|, n)
    trace over ``K`` is ``trace_K X`` over the rows, exactly; scalars (step counts) stay. Any other
    state is refused (ValueError)."""
    import jax
    import jax.numpy as jnp

    from jaxcorr import _linalg

    tr = model.trained
    if not is_span(optimizer):
        raise ValueError("the checkpoint holds coefficients K of a train.sgd run (the span path): resume it with "
                         "the optimizer it was trained with")
    n_rows, n = tr.K.shape
    Xd = jnp.asarray(model.X, tr.K.dtype)

    def to_rows(leaf):
        shape = np.shape(leaf)
        if shape == ():
            return leaf
        if shape != (n_rows, n):
            raise ValueError(f"the checkpoint's optimizer state has an array of shape {shape}, not (|A|, n)="
                             f"({n_rows}, {n}) over K: it cannot be put in row form to go on across processes; "
                             "resume it on one process")
        return _linalg.matmul(jnp.asarray(leaf, tr.K.dtype), Xd)

    with jax.transfer_guard("allow"):
        p = tr.trained_rows(model.spec, model.active, model.X)
        state = jax.tree_util.tree_map(to_rows, tr.opt_state)
    return dataclasses.replace(tr, K=None, W=p.W, opt_state=state)


def _span_callback(callback, model, b: float):
    """``callback`` with ``info["snapshot"]`` giving the SpanModel after the chunk (see :func:`span_fit_function`)."""
    si = _span_init()
    idx = model.active.idx
    a = model.trained.a if model.trained is not None else None

    def trained_after(info):
        coef = info.get("coefficients", lambda: None)()
        if coef is not None:  # the span path: K over every held row
            if not np.array_equal(coef.rows, np.arange(idx.shape[0])):
                raise RuntimeError("a span-path chunk gave coefficients over a subset of the held rows")
            return si.SpanTrained(idx=idx, a=a_of(coef.K.dtype), K=coef.K, W=None, opt_state=coef.opt_state, b=b)
        W, state = info["snapshot"]()  # the row path: the trained rows of A
        return si.SpanTrained(idx=idx, a=a_of(W.dtype), K=None, W=W, opt_state=state, b=b)

    def a_of(dt):
        return a if a is not None else si.output_weights(model.spec, idx, dtype=dt)

    def on_chunk(info):
        if "snapshot" in info or info.get("coefficients") is not None:
            def snapshot(info=info):
                tr = trained_after(info)
                return si.SpanModel(model.spec, model.active, tr, model.X), tr.opt_state

            info = {**info, "snapshot": snapshot}
        return callback(info)

    return on_chunk


# ------------------------------------------------------------------------------------- checkpoint
def read_meta(path) -> dict:
    return _checkpoint().read_meta(path)


def kind(path) -> str:
    """``"full"``, ``"compact"`` or ``"wide"``: :func:`jaxcorr.checkpoint.kind`."""
    return _checkpoint().kind(path)


def wide_width(config: dict) -> int | None:
    """The width a compact or wide checkpoint's config records (None: a full checkpoint)."""
    from jaxcorr.checkpoint import wide as form

    meta = form.wide_meta(config)
    return None if meta is None else meta.get("width")


def check_target(path, protect=()) -> None:
    _checkpoint().check_target(path, protect=protect)


def lock(path) -> contextlib.AbstractContextManager:
    """The writer's lock of ``path`` (:func:`jaxcorr.checkpoint.lock`), held for a whole run."""
    return _checkpoint().lock(path)


def restore(path, *, X, y, optimizer, as_wide: bool):
    """:func:`jaxcorr.checkpoint.restore`: ``Restored(kind, model, opt_state, step, config)``."""
    return _checkpoint().restore(path, X=X, y=y, optimizer=optimizer, as_wide=as_wide)


def write_atomically(path, write) -> None:
    """``write(file)`` into ``path`` atomically (:func:`jaxcorr.checkpoint._container.write_atomically`)."""
    from jaxcorr.checkpoint._container import write_atomically as _write

    _write(path, write)


def save(path, model, *, X, y, opt_state, step: int, config: dict, **compact) -> str:
    """:func:`jaxcorr.checkpoint.save` in its smallest form (``compact``: the compact form's
    ``key``, ``b``, ``W0``, ``optimizer``, ``active``); returns the form written."""
    return _checkpoint().save(path, model, X=X, y=y, opt_state=opt_state, step=step, config=config, **compact)


# ----------------------------------------------------------------------------------------- memory
def available(device):
    """``(bytes or None, where the figure comes from)``: :func:`jaxcorr.memory.available`."""
    return _memory().available(device)


def memory_plan(method, *, n, m, d, wide, resumed, compare, available, optimizer, dtype, b, x_norm, init="rows"):
    """:func:`jaxcorr.memory.plan`: ``Plan(wide, estimate, available, source, init)``; raises
    :class:`jaxcorr.errors.InsufficientMemoryError` (one line) when the run fits neither way
    (``init="span"``: the span-defined model's estimate, no ``m d`` term)."""
    return _memory().plan(method, n=n, m=m, d=d, wide=wide, resumed=resumed, compare=compare, available=available,
                          optimizer=optimizer, dtype=dtype, b=b, x_norm=x_norm, init=init)


# ------------------------------------------------------------------------------------ cost model
def choose_method(n: int, m: int, d: int, *, optimizer: str, steps: int, b: float, x_norms, dtype, methods,
                  n_active=None):
    """:func:`jaxcorr.cost.choose` among ``methods``: a ``Choice(method, predictions, reason,
    dense_expected_faster)``; ValueError when no candidate can run exactly."""
    from jaxcorr import cost

    return cost.choose(n, m, d, optimizer=optimizer, steps=steps, b=b, x_norms=x_norms, dtype=dtype,
                       methods=tuple(methods), n_active=n_active)


def sampled_active(X, m: int, b: float) -> float:
    """|A| of the data counted on a sample of N(0, I_d) rows (:func:`jaxcorr.cost.sampled_active`)."""
    from jaxcorr import cost

    return cost.sampled_active(X, m, b)


def dense_expected_faster(method: str, *, n: int, m: int, d: int, optimizer: str, b: float, x_norms, dtype,
                          n_active=None) -> bool:
    """:func:`jaxcorr.cost.dense_expected_faster`: ``method`` is predicted slower per step than dense."""
    from jaxcorr import cost

    return cost.dense_expected_faster(method, n=n, m=m, d=d, optimizer=optimizer, b=b, x_norms=x_norms, dtype=dtype,
                                      n_active=n_active)


# ------------------------------------------------------------------------------------ evaluation
def evaluate(model, X, y, *, b):
    """:func:`jaxcorr.evaluation.evaluate`: ``Evaluation(n, loss_sum, loss_mean, mse, accuracy)``."""
    from jaxcorr import evaluation

    return evaluation.evaluate(model, X, y, b=None if is_wide(model) else b)
