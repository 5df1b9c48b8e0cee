"""The wide forms: a :class:`jaxcorr.wide.WideParams` as its key plus its held rows (``"rows"``) or
its coefficients (``"coefficients"``), O(|A|) numbers instead of O(m d).

- ``"rows"``: the key, the active indices, their rows and ``a``, the optimizer state of the
  active rows (rows outside A have zero state forever): |A| (d + 2) floats plus the state. In the
  full form's layout ``W``/``a`` are the held rows and the state pytree is
  ``(idx, key_data, opt_state)``.
- ``"coefficients"`` (a model carrying ``coefficients``: a :func:`jaxcorr.train.sgd` run from its
  set-up): the key, the indices, ``K`` (|A|, n) with the optimizer's state over ``K``, and ``X``
  itself (so that the file stands alone); the rows of W(0) are redrawn from the key on load and
  ``K X`` added. ``W``/``a`` are empty and the state pytree is ``(idx, key_data, rows, K, X,
  coefficient state)``.

``config["wide"]`` (format ``jaxcorr-wide/1``) records the width, ``b``, the key's implementation,
the data digest, the form, ``full_width`` (a compact checkpoint of a full-width run,
:mod:`jaxcorr.checkpoint.compact`) and ``prng``: every setting the draw of W(0) depends on
(``jax_threefry_partitionable``). Loading redraws W(0) under the recorded settings, so the rows are
those of the run whatever the loading process's settings. Files of format ``jaxcorr-implicit/1``
(``config["implicit"]``) are read too; they carry no ``prng`` record and were written by JAX
versions whose default is ``jax_threefry_partitionable=True``, which is assumed for them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcorr import _linalg, nn, train
from jaxcorr import wide as _wide
from jaxcorr.checkpoint import full
from jaxcorr.errors import CheckpointError

__all__ = ["FORMAT", "save", "load", "wide_meta", "prng_settings", "drawing_as"]

FORMAT = "jaxcorr-wide/1"
_FORMAT_V0 = "jaxcorr-implicit/1"  # config["implicit"]; still read
#: The settings the draw of W(0) (nn.init, nn.rows_at) depends on, and their value for files without a record.
_PRNG_DEFAULTS = {"jax_threefry_partitionable": True}


def prng_settings() -> dict:
    """The current value of every JAX setting the draw of W(0) depends on."""
    return {k: bool(getattr(jax.config, k)) for k in _PRNG_DEFAULTS}


@contextlib.contextmanager
def drawing_as(meta: dict, path=None):
    """Run the block with the PRNG settings ``meta["prng"]`` records (older files: the defaults).

    Raises:
      CheckpointError: a recorded setting this JAX does not know.
    """
    rec = meta.get("prng")
    rec = dict(_PRNG_DEFAULTS) if not isinstance(rec, dict) else rec
    unknown = sorted(set(rec) - set(_PRNG_DEFAULTS))
    if unknown:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} was drawn under PRNG settings {unknown} this "
                              "version cannot reproduce", path)
    with contextlib.ExitStack() as stack:
        if "jax_threefry_partitionable" in rec:
            stack.enter_context(jax.threefry_partitionable(bool(rec["jax_threefry_partitionable"])))
        yield


def wide_meta(config: dict) -> dict | None:
    """The wide form's record in a checkpoint's config (either format), or None (a full checkpoint)."""
    for key, fmt in (("wide", FORMAT), ("implicit", _FORMAT_V0)):
        meta = (config or {}).get(key)
        if isinstance(meta, dict) and meta.get("format") == fmt:
            return meta
    return None


def save(path, model: _wide.WideParams, X, y, *, opt_state: Any = (), step: int = 0, config: dict | None = None,
         full_width: bool = False, timings: dict | None = None, form: str = "auto"):
    """Write ``model`` in a wide form (the module docstring), atomic and checksummed.

    Args:
      path: target file (its directory must exist).
      model: the :class:`_wide.WideParams`.
      X, y: the training data (its fingerprint is stored and checked by :func:`load`).
      opt_state: optax state over ``model.W`` (``history.opt_state`` of :func:`jaxcorr.wide.fit`).
      step: total steps trained.
      config: extra JSON-serialisable run configuration, returned by :func:`load`. A key ``"m"`` in
        it is not stored (the full layout reads ``"m"`` as the number of stored rows); the width is
        ``config["wide"]["width"]``.
      full_width: recorded as ``config["wide"]["full_width"]``: the run held all m rows
        (:mod:`jaxcorr.checkpoint.compact`), so a resumed run may hold them again
        (:func:`jaxcorr.wide.expand`).
      timings: as :func:`jaxcorr.checkpoint.save`'s.
      form: ``"auto"`` (default: coefficients when the model carries them and they are the smaller
        file, i.e. ``n < d`` about; else rows), ``"rows"`` or ``"coefficients"``.

    Raises:
      ValueError: a bad ``model``, ``X``, or ``form`` (``"coefficients"`` for a model without them).
    """
    _wide._check_model(model, X)
    if form not in ("auto", "rows", "coefficients"):
        raise ValueError(f"form must be 'auto', 'rows' or 'coefficients', got {form!r}")
    c = model.coefficients
    if form == "coefficients" and c is None:
        raise ValueError("form='coefficients' needs a model carrying coefficients (trained from its set-up "
                         "by train.sgd on one device); this one has none")
    use_coef = c is not None and (form == "coefficients" or (form == "auto" and _coefficients_smaller(model, X)))
    key_data = np.asarray(jax.random.key_data(model.key))
    meta = {"format": FORMAT, "prng": prng_settings(), "width": model.m, "d": model.d, "b": model.b,
            "n_active": model.n_active,
            "key_impl": str(jax.random.key_impl(model.key)), "data_sha256": model.data_sha256,
            "full_width": bool(full_width), "form": "coefficients" if use_coef else "rows"}
    cfg = dict(config or {})
    cfg.pop("m", None)
    cfg["wide"] = meta
    idx = np.asarray(model.idx)
    if use_coef:
        rows = np.asarray(c.rows)
        rows = rows.astype(np.int32 if rows.size == 0 or rows[-1] <= np.iinfo(np.int32).max else np.int64)
        empty = nn.Params(W=np.zeros((0, model.d), model.W.dtype), a=np.zeros((0,), model.W.dtype))
        Xs = np.asarray(X, model.W.dtype)
        full.save(path, empty, (idx, key_data, rows, c.K, Xs, c.opt_state), step, cfg, X, y, timings=timings)
        return "coefficients"
    full.save(path, model.to_params(), (idx, key_data, opt_state), step, cfg, X, y, timings=timings)
    return "rows"


def _coefficients_smaller(model: _wide.WideParams, X) -> bool:
    """The coefficients form is the smaller file: (rows, K, X and K's state) against (W and W's state)."""
    c, (n, d), k = model.coefficients, np.shape(X), model.n_active
    per_row = sum(int(np.prod(np.shape(x)[1:])) for x in jax.tree_util.tree_leaves(c.opt_state)
                  if np.ndim(x) == 2 and np.shape(x)[0] == len(c.rows))  # K's state: n per row leaf
    slots = per_row // max(n, 1)
    coef = len(c.rows) * (2 + n * (1 + slots)) + n * d
    rows = k * (1 + d * (1 + slots))
    return coef < rows


@jax.jit
def _add_span(W0, rows, K, X):
    """``W0`` with rows ``rows`` plus ``K X`` (the trained rows of a span-path run, as train.finalize adds them)."""
    return W0.at[rows].set(W0[rows] + _linalg.matmul(K, X))


def _from_coefficients(path, key, idx, leaves, meta, optimizer):  # noqa: PLR0913
    """(model, opt_state) of a coefficients checkpoint: W(0)'s held rows redrawn, plus ``K X``."""
    rows, K, X, state_leaves = leaves[0], jnp.asarray(leaves[1]), leaves[2], leaves[3:]
    k = idx.shape[0]
    if K.ndim != 2 or K.shape != (rows.shape[0], np.shape(X)[0]) or (rows.size and (rows.min() < 0 or rows.max() >= k)):
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is inconsistent: coefficients {K.shape} "
                              f"for rows {rows.shape} of {k} held rows and {np.shape(X)[0]} points", path)
    Xj = jnp.asarray(X, K.dtype)
    with drawing_as(meta, path):
        p0 = nn.rows_at(key, np.asarray(idx), int(meta["d"]), dtype=K.dtype)
    W = _add_span(p0.W, jnp.asarray(rows), K, Xj)
    state_K, opt_state = list(state_leaves), list(state_leaves)
    if optimizer is not None:
        ref_leaves, treedef = jax.tree_util.tree_flatten(optimizer.init(K))
        full.check_state(path, ref_leaves, state_leaves)
        state_K = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in state_leaves])
        row_ids = _wide._row_leaves(optimizer, k, int(meta["d"]), K.dtype)
        fresh = jax.tree_util.tree_leaves(optimizer.init(W))
        opt_state = jax.tree_util.tree_unflatten(treedef, [
            _add_span(fresh[i], jnp.asarray(rows), jnp.asarray(x), Xj) if i in row_ids else jnp.asarray(x)
            for i, x in enumerate(state_leaves)])
    coef = train.Coefficients(rows=np.asarray(rows, np.int64), K=K, opt_state=state_K)
    model = _wide.WideParams(key=key, idx=jnp.asarray(idx), W=W, a=p0.a, m=int(meta["width"]), b=float(meta["b"]),
                           data_sha256=meta["data_sha256"], coefficients=coef)
    return model, opt_state


def load(path, *, X=None, y=None, optimizer=None) -> dict:
    """Read a checkpoint written by :func:`save` (either wide format).

    Args:
      path: the checkpoint file.
      X, y: if given, checked to be the data it was trained on.
      optimizer: if given, the stored state is checked against ``optimizer.init(model.W)`` and
        returned in that structure; otherwise ``opt_state`` is the flat list of stored leaves (the
        coefficients form: the leaves of the state over ``K``; ``model.coefficients.opt_state`` too).

    Returns:
      dict with ``model`` (:class:`jaxcorr.wide.WideParams`, carrying its ``coefficients`` for that
      form), ``opt_state`` (over ``model.W``), ``step``, ``config`` and ``meta`` (the wide record).

    Raises:
      jaxcorr.errors.CheckpointError: missing, corrupted, not a wide checkpoint, other data,
        or another optimizer's state.

    Examples:
      >>> import jax, os, tempfile
      >>> from jaxcorr import checkpoint, data, train, wide
      >>> X, y = data.synthetic(seed=0, n=4, d=8)
      >>> model, _ = wide.setup(jax.random.key(0), 4096, 8, X)
      >>> opt = train.sgd(0.5, momentum=0.9)
      >>> model, h = wide.fit(model, X, y, steps=3, optimizer=opt)
      >>> path = os.path.join(tempfile.mkdtemp(), "wide.ckpt")
      >>> checkpoint.save(path, model, X=X, y=y, step=3)          # K (|A|, n), not the rows
      'coefficients'
      >>> r = checkpoint.restore(path, X=X, y=y, optimizer=opt)
      >>> r.kind, bool((r.model.W == model.W).all())
      ('wide', True)
    """
    ck = full.load(path, X=X, y=y)
    meta = wide_meta(ck["config"])
    if meta is None:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is not a wide model ({FORMAT})", path)
    leaves = ck["opt_state"]
    idx, key_data, opt_leaves = leaves[0], leaves[1], leaves[2:]
    key = jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32), impl=meta["key_impl"])
    if meta.get("form") == "coefficients":
        model, opt_state = _from_coefficients(path, key, idx, opt_leaves, meta, optimizer)
        return {"model": model, "opt_state": opt_state, "step": ck["step"], "config": ck["config"], "meta": meta}
    W, a = ck["params"]
    if idx.shape != (W.shape[0],) or meta.get("n_active") != W.shape[0]:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} is inconsistent: {idx.shape[0]} "
                              f"indices for {W.shape[0]} rows", path)
    model = _wide.WideParams(key=key, idx=idx, W=W, a=a, m=int(meta["width"]), b=float(meta["b"]),
                           data_sha256=meta["data_sha256"])
    opt_state = list(opt_leaves)
    if optimizer is not None:
        ref_leaves, treedef = jax.tree_util.tree_flatten(optimizer.init(W))
        full.check_state(path, ref_leaves, opt_leaves)
        opt_state = jax.tree_util.tree_unflatten(treedef, opt_leaves)
    return {"model": model, "opt_state": opt_state, "step": ck["step"], "config": ck["config"], "meta": meta}

