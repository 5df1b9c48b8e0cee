"""The span form: a span-defined model (:class:`jaxcorr.span_init.SpanModel`, ``--init span``) as its
definition, its held rows and their training: O(|A| (k + n) + k d) numbers, never O(m d).

Members:

- the definition: ``key_data`` (uint32), ``U`` (d, k), ``C`` (n, k), ``beta`` (n,), float64. The
  basis is stored, not recomputed, so a resume on another machine or backend, whose linear algebra
  rounds differently, rebuilds the same rows bit for bit
  (:meth:`jaxcorr.span_init.SpanInit.from_arrays`);
- the held rows: ``idx`` (|A|,) int64, ``G`` (|A|, k) their span coordinates (the set-up's, so a
  restore does not redraw A) and ``k0`` (n,);
- ``X`` (n, d): the training points (the span path's trained rows are :math:`w_r(0) + K_r X`);
- the training: ``K`` (|A|, n) (span path) or ``W`` (|A|, d) (row path), neither for an untrained
  model, and the optimizer state's leaves ``opt_000``, ``opt_001``, ... (``jax.tree_util`` order).
  The output weights are not stored: they are hashes of the key (:func:`jaxcorr.span_init.output_weights`).

``meta["init"]`` is ``"span"`` (which definition of W(0) the file uses: files of every other form
hold ``nn.init`` rows and have no such entry); ``meta["span"]`` (format ``jaxcorr-span/1``) records
``m``, ``b``, ``mode``, ``key_impl``, the set-up's counts, the training ``path`` (``"span"``,
``"rows"`` or ``"init"``) and the threshold it was trained at.

Examples:
  >>> import jax, os, tempfile
  >>> from jaxcorr import checkpoint, data, span_init, train
  >>> X, y = data.synthetic(seed=0, n=4, d=8)
  >>> spec, act = span_init.build(jax.random.key(0), X, 4096, 1.5)
  >>> opt = train.sgd(0.5, momentum=0.9)
  >>> trained, _ = span_init.fit(spec, act, X, y, steps=3, optimizer=opt)
  >>> path = os.path.join(tempfile.mkdtemp(), "span.ckpt")
  >>> checkpoint.save(path, span_init.SpanModel(spec, act, trained, X), X=X, y=y, step=3)
  'span'
  >>> r = checkpoint.restore(path, X=X, y=y, optimizer=opt)
  >>> r.kind, r.init, r.step, bool((r.model.trained.K == trained.K).all())
  ('span', 'span', 3, True)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr.checkpoint import _container, full
from jaxcorr.errors import CheckpointError

__all__ = ["FORMAT", "save", "load", "is_span"]

FORMAT = "jaxcorr-span/1"


def is_span(meta: dict) -> bool:
    """True if a checkpoint's metadata is the span form's."""
    return isinstance(meta, dict) and meta.get("init") == "span"


def _arrays(model) -> dict:
    spec, act, tr = model.spec, model.active, model.trained
    arrays = {"key_data": np.asarray(spec.key_data, np.uint32), "U": spec.U, "C": spec.C, "beta": spec.beta,
              "idx": np.asarray(act.idx, np.int64), "G": act.G, "k0": np.asarray(act.k0, np.int64),
              "X": np.asarray(model.X)}
    if tr is not None:
        arrays["K" if tr.K is not None else "W"] = tr.K if tr.K is not None else tr.W
    return arrays


def save(path, model, X, y, *, opt_state: Any = None, step: int = 0, config: dict | None = None,
         timings: dict | None = None) -> str:
    """Write the :class:`jaxcorr.span_init.SpanModel` ``model`` in the span form (atomic, checksummed).

    Args:
      path, step, config, timings: as :func:`jaxcorr.checkpoint.save`.
      model: the model.
      X, y: the training data (its fingerprint is stored and checked by :func:`load`); ``X`` must
        be ``model.X`` in value.
      opt_state: the optimizer state to store; default ``model.trained.opt_state`` (none when untrained).

    Returns:
      ``"span"``.

    Raises:
      ValueError: not a ``SpanModel``, ``X`` other than the model's points, ``step < 0``, a config
        that is not JSON.
    """
    from jaxcorr import span_init  # noqa: PLC0415 -- the model's module imports the training package

    if not isinstance(model, span_init.SpanModel):
        raise ValueError(f"model must be a jaxcorr.span_init.SpanModel, got {type(model).__name__}")
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if np.shape(X) != np.shape(model.X) or not np.array_equal(np.asarray(X, np.float64), np.asarray(model.X,
                                                                                                  np.float64)):
        raise ValueError("X must be the model's training points (model.X)")
    tr = model.trained
    state = (tr.opt_state if tr is not None else ()) if opt_state is None else opt_state
    arrays = _arrays(model)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(state)):
        arrays[f"opt_{i:03d}"] = leaf
    spec, act = model.spec, model.active
    rec = {"format": FORMAT, "m": spec.m, "b": spec.b, "mode": spec.mode, "key_impl": spec.key_impl,
           "n_active": act.n_active, "n_fire_union": int(act.n_fire_union), "n_candidates": int(act.n_candidates),
           "active_mode": act.mode, "path": model.path, "train_b": model.b}
    meta = {"init": "span", "span": rec, "step": step, "config": config,
            "fingerprint": _container.fingerprint(X, y), "opt_treedef": str(jax.tree_util.tree_structure(state))}
    _container.write(path, arrays, meta, timings=timings)
    return "span"


def _bad(path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {os.fspath(path)!r} is inconsistent: {what}", path)


def _check_shapes(path, arrays: dict, rec: dict) -> None:
    need = {"key_data", "U", "C", "beta", "idx", "G", "k0", "X"} | ({"K"} if rec.get("path") == "span" else set()) \
        | ({"W"} if rec.get("path") == "rows" else set())
    missing = sorted(need - set(arrays))
    if missing:
        raise _bad(path, f"the span form's arrays {missing} are missing")
    U, C, idx, G, X = (arrays[k] for k in ("U", "C", "idx", "G", "X"))
    d, k = U.shape if U.ndim == 2 else (-1, -1)
    n = C.shape[0] if C.ndim == 2 else -1
    A = idx.shape[0] if idx.ndim == 1 else -1
    checks = [(C.shape == (n, k), f"C {C.shape} for U {U.shape}"), (arrays["beta"].shape == (n,), "beta's shape"),
              (arrays["k0"].shape == (n,), "k0's shape"), (G.shape == (A, k), f"G {G.shape} for {A} held rows"),
              (X.shape == (n, d), f"X {X.shape} for n={n}, d={d}"),
              (A == rec.get("n_active"), f"{A} held rows, the record says {rec.get('n_active')}"),
              (idx.dtype == np.int64 and bool(np.all(np.diff(idx) > 0)) and (A == 0 or 0 <= idx[0] <= idx[-1]
                                                                             < int(rec.get("m", 0))),
               "idx is not sorted int64 rows in [0, m)")]
    for name, cols in (("K", n), ("W", d)):
        if name in arrays:
            checks.append((arrays[name].shape == (A, cols) and arrays[name].dtype == G.dtype,
                           f"{name} {arrays[name].shape} {arrays[name].dtype} for {A} held rows ({G.dtype})"))
    for ok, what in checks:
        if not ok:
            raise _bad(path, what)


def _state(path, optimizer, like, leaves, saved_with):
    """The stored state leaves in ``optimizer.init(like)``'s structure (count, shapes, dtypes checked
    against its abstract value: nothing allocated), or the flat list without an optimizer."""
    if optimizer is None:
        return [jnp.asarray(x) for x in leaves]
    ref, treedef = jax.tree_util.tree_flatten(jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct(like.shape,
                                                                                                  like.dtype)))
    got = [(tuple(np.shape(x)), np.dtype(x.dtype)) for x in leaves]
    want = [(tuple(r.shape), np.dtype(r.dtype)) for r in ref]
    if got != want:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds an optimizer state of {len(got)} arrays {got}, "
                              f"but this optimizer's state is {want} (it was saved with "
                              f"{saved_with or 'an unrecorded optimizer'!r})", path)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])


def load(path, *, X=None, y=None, optimizer=None) -> dict:
    """Read a span checkpoint: ``model`` (:class:`jaxcorr.span_init.SpanModel`, its ``trained`` state
    in ``optimizer.init``'s structure when ``optimizer`` is given, else the flat list of leaves),
    ``opt_state`` (the same state), ``step``, ``config``, ``meta`` (the span record).

    Raises:
      CheckpointError: unreadable, not the span form, inconsistent, other data, another optimizer's state.
    """
    from jaxcorr import span_init  # noqa: PLC0415

    meta, arrays = _container.read(path)
    rec = meta.get("span") if is_span(meta) else None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is not a span-defined model ({FORMAT})", path)
    _check_shapes(path, arrays, rec)
    config = meta.get("config") or {}
    _container.check_data(path, meta.get("fingerprint", {}), X, y, arrays["U"].shape[0])
    try:
        spec = span_init.SpanInit.from_arrays({"key_data": arrays["key_data"], "key_impl": rec["key_impl"],
                                               "m": rec["m"], "b": rec["b"], "U": arrays["U"], "C": arrays["C"],
                                               "beta": arrays["beta"], "mode": rec["mode"]})
        active = span_init.ActiveSet(idx=arrays["idx"], G=jnp.asarray(arrays["G"]), k0=arrays["k0"],
                                     n_fire_union=int(rec["n_fire_union"]), n_candidates=int(rec["n_candidates"]),
                                     mode=str(rec["active_mode"]), setup_s=0.0, calls=0, capacity_events=())
        leaves = full.state_leaves(arrays)
        trained = None
        if rec["path"] in ("span", "rows"):
            like = arrays["K" if rec["path"] == "span" else "W"]
            state = _state(path, optimizer, like, leaves, config.get("optimizer"))
            a = span_init.output_weights(spec, active.idx, dtype=like.dtype)
            K, W = (jnp.asarray(like), None) if rec["path"] == "span" else (None, jnp.asarray(like))
            trained = span_init.SpanTrained(idx=active.idx, a=a, K=K, W=W, opt_state=state, b=float(rec["train_b"]))
        elif leaves:
            raise _bad(path, "an untrained model with an optimizer state")
        model = span_init.SpanModel(spec, active, trained, arrays["X"])
    except (ValueError, KeyError, TypeError) as e:
        raise _bad(path, str(e)) from None
    return {"model": model, "opt_state": trained.opt_state if trained is not None else [], "step": int(meta["step"]),
            "config": config, "meta": rec}
