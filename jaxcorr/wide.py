r"""The wide model: 2NN(m, b) wider than memory, held as its key plus the rows that can fire.

(About 700 lines: the wide model's set-up, training, prediction and row bookkeeping are one concept.)

The paper's invariant (Section 2; :mod:`jaxcorr.train`'s module docstring): a neuron that fires for
no data point at :math:`t = 0` never moves and never fires, so its row is forever :math:`w_r(0)`, a
pure function of the PRNG key (:func:`jaxcorr.nn.init_rows`). Only the active rows

.. math:: A = \bigcup_{i=1}^{n} S_{i,fire}(0), \qquad |A| \approx n\, m\, Q(b) \le n \lceil m^{4/5} \rceil

(Definition 2.4, Lemma 2.5) ever need to exist. This module

- :func:`setup`: streams W(0) over ``m`` in chunks generated from the key under ``jit`` (nothing
  larger than a chunk is materialised), computes each chunk's (n, chunk) inner products (INIT,
  Lemma D.2, chunk by chunk) and keeps only the rows of A, their ``a_r`` and indices. Peak memory
  O(|A| d + chunk (n + d)) instead of O(m (n + d)).
- :func:`fit`: trains those rows with :func:`jaxcorr.train.fit` at the full width's scale
  :math:`1/\sqrt m` (``width=m``), any method of :mod:`jaxcorr.methods`; exactly the trajectory
  of the full network.
- :func:`predict`: streams the rows of W(0) chunk by chunk and swaps in the trained ones.
- :func:`from_params` / :func:`expand` (with :func:`active_rows`): a full-width run trained from
  ``nn.init(key, m, d)`` as a wide model (the rows that differ from W(0), and A) and back, bit for bit.

Checkpoints of wide models are :mod:`jaxcorr.checkpoint`'s (forms ``"rows"`` and
``"coefficients"``); the memory a run needs is :mod:`jaxcorr.memory`'s (``wide=True``).

**The fire sets at t = 0 without a tree.** A DTree over a chunk (Theorem 3.1) would cost its INIT,
O(n d) per row (Lemma D.2), and its query would return exactly :math:`\{r : \langle w_r, x_i\rangle
> b\}`, the set the chunk's mask computes directly from the same inner products at the same cost; at
``t = 0`` nothing is updated, so the tree buys nothing. Each chunk's active rows are compacted into
a fixed-capacity buffer (jax-md style): the true count is always computed, and a chunk whose count
exceeds the capacity is rerun with a larger one, so no firing neuron is ever dropped.

**Exact against rounding.** A row is kept when :math:`\langle w_r, x_i \rangle > b - \tau_i` for
some ``i``, with :math:`\tau_i = 2 (d + 2)\, \epsilon\, \sqrt d\, z_{max} \|x_i\|`: twice the worst-case
rounding of a d-term dot product (Higham's :math:`\gamma_d \sum_j |w_{rj} x_{ij}| \le \gamma_d \|w_r\|
\|x_i\|`), with :math:`\|w_r\| \le \sqrt d\, z_{max}` because the generator's normals are bounded
(:func:`jaxcorr.nn.normal_bound`). A row left out then has :math:`\langle w_r, x_i \rangle \le b`
however :func:`jaxcorr.train.fit` rounds its own inner products, so it never fires there either;
the few extra rows kept near the boundary (about :math:`\phi(b)\, \tau\, n m`) are trained like the
others.

**Cost.** Set-up draws all ``m d`` normals once (the Threefry hash dominates); it is embarrassingly
parallel over chunks (``devices=``): each device generates and filters its own chunks and only |A|
rows move. Measured figures: ``BENCHMARKS.md``.

Examples:
  >>> import jax
  >>> from jaxcorr import data, nn, train, wide
  >>> X, y = data.synthetic(seed=0, n=4, d=8)
  >>> model, info = wide.setup(jax.random.key(0), 4096, 8, X)
  >>> model.W.shape[0] == info["n_active"] < 4096
  True
  >>> model, hist = wide.fit(model, X, y, steps=5)
  >>> ref, h2 = train.fit(nn.init(jax.random.key(0), 4096, 8), X, y, steps=5)
  >>> bool(abs(hist.loss - h2.loss).max() < 1e-5)
  True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcorr import _checks, _linalg, methods, nn, train
from jaxcorr.memory import expected_active

__all__ = [
    "WideParams", "setup", "fit", "predict", "materialize", "active_rows", "from_params", "expand",
    "expected_active", "release_host_memory", "CHUNK_BUDGET", "StateLayoutError",
]

#: Chunk working set, bytes -- a chunk of W(0) with its inner products, masks and hash words.
CHUNK_BUDGET = 256 << 20

@partial(jax.tree_util.register_dataclass, data_fields=["key", "idx", "W", "a", "coefficients"],
         meta_fields=["m", "b", "data_sha256", "initial"])
@dataclasses.dataclass(frozen=True)
class WideParams:
    """2NN(m, b) held as its key plus the rows that can move (the active set A of its data).

    Row ``r`` of the network is ``W[j]`` if ``idx[j] == r``, else row ``r`` of
    :func:`jaxcorr.nn.init` ``(key, m, d)``; ``a`` likewise (``a`` is never trained).

    A model trained from its set-up by :func:`jaxcorr.train.sgd` (SGD, momentum, Nesterov: the span
    path) also carries ``coefficients`` (:class:`jaxcorr.train.Coefficients`): its held rows
    ``coefficients.rows`` are ``W(0)`` rows plus ``K X`` on the training data, and
    ``coefficients.opt_state`` is the optimizer's state over ``K``. :func:`fit` goes on from them
    exactly and :func:`jaxcorr.checkpoint.save` checkpoints them: ``n`` numbers per row instead of ``d`` (and the rows
    of W(0) are redrawn from the key, :func:`jaxcorr.nn.rows_at`).
    """

    key: jax.Array  # typed PRNG key given to nn.init
    idx: jax.Array  # shape=(k,), int32 (int64 past 2^31 - 1 under x64): sorted rows of A
    W: jax.Array  # shape=(k, d), float32/float64: the rows w_r, r in idx (trained)
    a: jax.Array  # shape=(k,), same dtype: a_r for r in idx
    m: int  # the width
    b: float  # the threshold A was computed for
    data_sha256: str  # digest of the X that A was computed for
    coefficients: Any = None  # train.Coefficients over the held rows relative to W(0) (span-path runs), or None
    initial: bool = False  # W holds W(0)'s rows bit for bit (a model fresh from setup)

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def n_active(self) -> int:
        return self.W.shape[0]

    def to_params(self) -> nn.Params:
        """The held rows as :class:`jaxcorr.nn.Params` (a sub-network for ``train.fit(width=m)``)."""
        return nn.Params(W=self.W, a=self.a)


class StateLayoutError(ValueError):
    """An optimizer state with an array that does not hold W's rows along axis 0 (no row form)."""


# ------------------------------------------------------------------------------------- helpers
def _as_key(key):
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    arr = np.asarray(key)
    if arr.dtype != np.uint32 or arr.shape != (2,):
        raise ValueError(f"key must be a JAX PRNG key (jax.random.key(seed)), got {arr.dtype} {arr.shape}")
    return jax.random.wrap_key_data(jnp.asarray(arr))


def _digest(X) -> str:
    """SHA-256 of X as :func:`jaxcorr.checkpoint.fingerprint` ``(X, zeros(n))`` computes it (stored in files)."""
    X = np.ascontiguousarray(np.asarray(X))
    z = np.zeros((X.shape[0],), X.dtype)
    h = hashlib.sha256()
    for arr in (X, z):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _check_width(m, d):
    m = _checks.check_int("m", m, minimum=1, type_error=ValueError)
    d = _checks.check_int("d", d, minimum=1, type_error=ValueError)
    if m > nn.MAX_WIDTH:
        raise ValueError(f"m must be <= nn.MAX_WIDTH = {nn.MAX_WIDTH}, got {m}")
    if m > np.iinfo(np.int32).max and not jax.config.jax_enable_x64:
        raise ValueError(f"m = {m} > 2^31 - 1 needs 64-bit row indices: enable x64 (jax_enable_x64)")
    return m, d


def _bucket(x: int, minimum: int = 64) -> int:
    """Round up to a multiple of max(minimum, pow2(x)/8): few distinct static sizes."""
    x = max(int(x), 1)
    g = max(minimum, (1 << (x - 1).bit_length()) // 8)
    return -(-x // g) * g


def _chunk_rows(m: int, n: int, d: int, itemsize: int, chunk_rows: int | None) -> int:
    """Rows per chunk: ``chunk_rows`` or the budget's, a multiple of nn.BLOCK_ROWS, or m if smaller."""
    if chunk_rows is None:
        per_row = itemsize * (2 * d + 3 * n) + 16
        chunk_rows = max(CHUNK_BUDGET // per_row, 1)
    chunk_rows = _checks.check_int("chunk_rows", chunk_rows, minimum=1, type_error=ValueError)
    if chunk_rows >= m:
        return m
    return max(chunk_rows // nn.BLOCK_ROWS, 1) * nn.BLOCK_ROWS


# --------------------------------------------------------------------------------------- setup
@partial(jax.jit, static_argnames=("rows", "cap", "d", "dtype"))
def _scan_chunk(key, block, remaining, X, b, tol, *, rows: int, cap: int, d: int, dtype):
    """One chunk of W(0): its active rows (compacted to ``cap``), true count, and k_i per point."""
    p = nn.init_rows(key, rows, d, block=block, dtype=dtype)
    ip = _linalg.inner(X, p.W)  # (n, rows): INIT of this chunk (Lemma D.2)
    live = jnp.arange(rows) < remaining  # rows past m belong to no network
    fire = (ip > b) & live  # S_{i,fire}(0) restricted to the chunk (Definition 2.4)
    keep = jnp.any(ip > b - tol[:, None], axis=0) & live
    (sel,) = jnp.nonzero(keep, size=cap, fill_value=rows)
    W_sel = p.W.at[sel].get(mode="fill", fill_value=0)
    a_sel = p.a.at[sel].get(mode="fill", fill_value=0)
    return jnp.sum(keep), jnp.sum(fire, axis=1), jnp.sum(jnp.any(fire, axis=0)), sel, W_sel, a_sel


def setup(key, m: int, d: int, X, *, b: float | None = None, dtype=None, chunk_rows: int | None = None,
          progress: Callable[[dict], None] | None = None, devices=None):
    r"""Streamed INIT and fire sets at t = 0 (Algorithm 8 lines 1-12): the model's active rows.

    Args:
      key: the JAX PRNG key of :func:`jaxcorr.nn.init` (the network is ``nn.init(key, m, d, dtype)``).
      m: width, 1 <= m <= :data:`jaxcorr.nn.MAX_WIDTH` (past 2^31 - 1 with x64 enabled).
      d: input dimension.
      X: (n, d) training points, finite.
      b: threshold; default :func:`jaxcorr.nn.default_threshold` ``(m)``.
      dtype: floating dtype of W; default float32 (float64 under x64).
      chunk_rows: rows generated per jitted chunk; default from a 256 MiB working set (a multiple of
        :data:`jaxcorr.nn.BLOCK_ROWS`; the rows themselves never depend on it).
      progress: called on the host after every chunk with a dict: ``rows_done``, ``rows``
        (= m), ``n_active``, ``elapsed_s``, ``rows_per_s``.
      devices: devices to spread the chunks over, round robin (default: the first local device).
        Set-up is embarrassingly parallel over chunks: each device generates and filters its own
        chunks; only their active rows move (to the first device). The result does not depend on it.

    Returns:
      ``(model, info)``: the :class:`WideParams` holding the rows of A (untrained), and a dict with
      ``n_active`` (|A|, rows kept), ``n_fire_union`` (rows that fire for some point at t = 0),
      ``k0`` ((n,) int, k_{i,0}), ``setup_s``, ``rows_per_s``, ``chunk_rows``, ``chunks``, ``devices``,
      ``capacity_events`` (chunks rerun because their active rows overflowed the buffer).

    Raises:
      ValueError: bad ``key``, ``m``, ``d``, ``X``, ``b``, ``dtype`` or ``chunk_rows``.
    """
    t0 = time.perf_counter()
    key = _as_key(key)
    m, d = _check_width(m, d)
    dtype = _checks.floating_dtype(dtype)
    Xh = _host(X)  # every transfer explicit: set-up runs under jax.transfer_guard("disallow")
    _checks.check_matrix("X", Xh, cols=d)
    b = nn.default_threshold(m) if b is None else float(b)
    if not math.isfinite(b):
        raise ValueError(f"b must be finite, got {b}")
    Xh = np.asarray(Xh, dtype)
    n = Xh.shape[0]
    C = _chunk_rows(m, n, d, jnp.dtype(dtype).itemsize, chunk_rows)
    tol, xmax = _margin(Xh, d, dtype)  # (n,): the rounding margin tau_i
    cap = min(C, _bucket(1.25 * expected_active(C, n, b - 1e-3, xmax) + 64))
    chunks = -(-m // C)
    devs = list(devices) if devices is not None else jax.local_devices()[:1]
    consts = [jax.device_put((key, Xh, np.asarray(b, dtype), tol), dev) for dev in devs]
    acc = _Collected(n, devs[0])
    for wave in range(0, chunks, len(devs)):  # one chunk per device, dispatched before any is read
        cs = list(range(wave, min(wave + len(devs), chunks)))
        outs = [(cap, _dispatch(consts[j], c, C, m, cap, d, dtype)) for j, c in enumerate(cs)]
        for j, (c, (used, out)) in enumerate(zip(cs, outs)):
            cnt = int(jax.device_get(out[0]))
            while cnt > used:  # the buffer overflowed: rerun the chunk with a larger one
                cap = max(cap, min(C, _bucket(1.25 * cnt)))
                acc.events.append({"chunk": c, "old_capacity": used, "new_capacity": cap, "count": cnt})
                used, out = cap, _dispatch(consts[j], c, C, m, cap, d, dtype)
                cnt = int(jax.device_get(out[0]))
            acc.add(c * C, cnt, out)
            if progress is not None:
                el = time.perf_counter() - t0
                done = min((c + 1) * C, m)
                progress({"rows_done": done, "rows": m, "n_active": acc.kept, "elapsed_s": el,
                          "rows_per_s": done / max(el, 1e-9)})
    model = _assemble(key, m, b, _digest(_host(X)), acc.idx, acc.W, acc.a)
    del outs, out
    release_host_memory()
    el = time.perf_counter() - t0
    info = {"n_active": acc.kept, "n_fire_union": acc.union, "k0": acc.k0, "setup_s": el,
            "rows_per_s": m / max(el, 1e-9), "chunk_rows": C, "chunks": chunks, "devices": len(devs),
            "capacity_events": acc.events}
    return model, info


def _host(x) -> np.ndarray:
    """``x`` on the host (an explicit ``device_get`` for a device array)."""
    return np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else x)


@functools.cache
def _normal_bound(dtype) -> float:
    with jax.transfer_guard("allow"):  # nn computes it from two constant words: a transfer meant, once
        return float(nn.normal_bound(dtype))


def _margin(X, d: int, dtype):
    """The rounding margin tau_i of the module docstring ((n,) host array in ``dtype``; the norms in
    float64, rounded up by the margin's factor) and max_i ||x_i||."""
    xnorm = np.linalg.norm(np.asarray(X, np.float64), axis=1)
    eps = float(np.finfo(dtype).eps)
    gamma = 2 * (d + 2) * eps * math.sqrt(d) * _normal_bound(np.dtype(dtype)) * (1 + 1e-3)
    return np.asarray(gamma * xnorm, dtype), float(np.max(xnorm)) if xnorm.size else 0.0


def release_host_memory() -> bool:
    """Return the host memory freed by the chunks to the OS (glibc ``malloc_trim``; False elsewhere).

    Set-up frees many chunk-sized buffers; glibc keeps such freed heap memory resident, and the
    large buffers of training are fresh mappings that cannot reuse it, so without this the peak of
    training would stack on the set-up's leftovers.
    """
    try:
        import ctypes  # noqa: PLC0415

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _dispatch(consts, c: int, C: int, m: int, cap: int, d: int, dtype):
    """Start chunk ``c`` (rows c*C ...) on the device its constants live on; returns without waiting."""
    key, X, b, tol = consts
    start = c * C  # C is m (one chunk) or a multiple of BLOCK_ROWS: every chunk starts on a block
    dev = next(iter(X.devices()))
    block, remaining = jax.device_put((np.uint32(start // nn.BLOCK_ROWS), np.int32(min(C, m - start))), dev)
    return _scan_chunk(key, block, remaining, X, b, tol, rows=C, cap=cap, d=d, dtype=dtype)


class _Collected:
    """The chunks' active rows (moved to one device), fire counts and capacity events, in chunk order."""

    def __init__(self, n: int, device):
        self.device = device
        self.idx, self.W, self.a, self.events = [], [], [], []
        self.k0 = np.zeros((n,), np.int64)
        self.union = self.kept = 0

    def add(self, start: int, cnt: int, out) -> None:
        _, k, u, sel, W_sel, a_sel = out
        k, u, sel = jax.device_get((k, u, lax.slice_in_dim(sel, 0, cnt)))
        self.k0 += np.asarray(k, np.int64)
        self.union += int(u)
        self.kept += cnt
        self.idx.append(start + np.asarray(sel, np.int64))
        self.W.append(jax.device_put(lax.slice_in_dim(W_sel, 0, cnt), self.device))
        self.a.append(jax.device_put(lax.slice_in_dim(a_sel, 0, cnt), self.device))


def _assemble(key, m, b, sha, idx_parts, W_parts, a_parts) -> WideParams:
    """Concatenate the chunks' rows (freeing each list as it goes) into one WideParams."""
    idx = np.concatenate(idx_parts)
    idx_dt = np.int64 if m > np.iinfo(np.int32).max else np.int32
    W = jnp.concatenate(W_parts)
    W_parts.clear()
    a = jnp.concatenate(a_parts)
    a_parts.clear()
    idx = jax.device_put(idx.astype(idx_dt), next(iter(W.devices())))
    return WideParams(key=key, idx=idx, W=W, a=a, m=m, b=b, data_sha256=sha, initial=True)


# ----------------------------------------------------------------------------------------- fit
def _check_model(model, X=None, what="model"):
    if not isinstance(model, WideParams):
        raise ValueError(f"{what} must be a jaxcorr.wide.WideParams (from wide.setup), "
                         f"got {type(model).__name__}")
    if X is not None:
        _checks.check_matrix("X", X, cols=model.d)


def fit(model: WideParams, X, y, *, steps: int, method: str = methods.DEFAULT, **kwargs):
    r"""Train the active rows of ``model`` on ``(X, y)``: :func:`jaxcorr.train.fit` with ``width=m``.

    Exactly the trajectory of ``train.fit(nn.init(key, m, d), X, y, ...)`` (to float rounding in the
    order of sums): every row left out of A fires for no point at t = 0, so it never moves (the
    active-set invariant of :mod:`jaxcorr.train`); the scale :math:`1/\sqrt m`, ``b`` and the DDFN
    cap are the full width's.

    Args:
      model: from :func:`setup` on this ``X`` (or a model trained from it, or :func:`jaxcorr.checkpoint.restore`).
      X, y: the training data A was computed for (checked by digest: new data could fire rows
        outside A; run :func:`setup` for it).
      steps: number of steps.
      method: any of :func:`jaxcorr.methods.names` (default :data:`jaxcorr.methods.DEFAULT`).
      **kwargs: passed to :func:`jaxcorr.train.fit` (``optimizer``, ``learning_rate``, ``opt_state``
        over the active rows, ``callback``, ``chunk_size``, ``fallback``, ``mesh``); not ``b`` or
        ``width``, which the model fixes.

    Returns:
      ``(model, history)``: the model with trained rows, and ``train.fit``'s history (its
      ``opt_state`` covers the active rows, ready to resume or :func:`jaxcorr.checkpoint.save`). A
      model with no active row (|A| = 0: no row fires for any point, so none ever moves) is returned
      unchanged with a history of constant losses. The held rows are
      trained in place of a gathered copy when they are the whole active set (the usual case), so
      the memory is one copy of the rows plus the optimizer state; a callback's ``snapshot()``
      returns ``(model, opt_state)``. A span-path run (:func:`jaxcorr.train.sgd`, one device) from a
      model fresh from :func:`setup` or carrying ``coefficients`` returns a model carrying its
      coefficients relative to W(0); a model carrying them is trained on from them (its rows of W(0)
      redrawn from the key, the optimizer's state taken from them: pass no ``opt_state``), step
      for step the run that produced them.

    Raises:
      ValueError: ``model`` is not an :class:`WideParams`, ``X`` is not the data of its set-up,
        ``b`` or ``width`` given, ``opt_state`` given for a model carrying coefficients (or another
        optimizer than ``train.sgd`` for it: drop them with ``dataclasses.replace(model,
        coefficients=None)`` and pass its ``opt_state``), or anything ``train.fit`` refuses.
    """
    _check_model(model, X)
    for name in ("b", "width"):
        if name in kwargs:
            raise ValueError(f"{name} is fixed by the wide model (b={model.b}, width={model.m}); do not pass it")
    if _digest(X) != model.data_sha256:
        raise ValueError("X is not the data this model's active set was computed for (other rows may fire "
                         "for it); run wide.setup(key, m, d, X) for this data")
    if model.n_active == 0:  # no row can ever fire for this data: nothing moves, f = 0 on every x_i
        return model, _history_of_nothing(model, X, y, steps, method, kwargs)
    params, c0 = model.to_params(), model.coefficients
    if c0 is not None:
        if kwargs.get("opt_state") is not None:
            raise ValueError("this model carries its optimizer state in model.coefficients (a span-path run); "
                             "pass opt_state=None, or drop them: dataclasses.replace(model, coefficients=None)")
        opt = kwargs.get("optimizer")  # None: train.fit's default, train.sgd
        span = opt is None or isinstance(opt, train.LinearOptimizer)
        if method == "dense" or kwargs.get("mesh") is not None or not span:
            raise ValueError("this model carries coefficients of a train.sgd run, which go on only with "
                             "train.sgd on one device and a sparse method; to train it otherwise, drop them "
                             "(dataclasses.replace(model, coefficients=None)) and pass its opt_state from "
                             "checkpoint.restore")
        params = nn.Params(W=_initial_rows(model), a=model.a)  # the base the coefficients add to
    from_init = c0 is not None or model.initial

    def _into(W, coef):
        return dataclasses.replace(model, W=W, coefficients=coef if from_init else None, initial=False)

    callback = kwargs.pop("callback", None)
    if callback is not None and callable(callback):  # its snapshot gives the model, not the held rows
        user = callback

        def callback(info):
            if "snapshot" in info:
                snap, coef = info["snapshot"], info.get("coefficients", lambda: None)

                def snapshot():
                    p, s = snap()
                    return _into(p.W, coef()), s

                info = {**info, "snapshot": snapshot}
            return user(info)

    params, hist = train.fit(params, X, y, steps=steps, method=method, b=model.b, width=model.m,
                             callback=callback, coefficients=c0, **kwargs)
    return _into(params.W, hist.coefficients), hist


def _history_of_nothing(model: WideParams, X, y, steps: int, method: str, kwargs: dict) -> train.History:
    """The history of training a network none of whose rows fires for the data (|A| = 0): every row
    stays ``w_r(0)``, every output on the training points is 0, the loss is constant."""
    steps = _checks.check_int("steps", steps, minimum=0, type_error=ValueError)
    methods.get(method)
    _checks.check_matrix("X", X, cols=model.d)
    dt = model.W.dtype
    yj = jnp.asarray(y, dt)
    if yj.shape != (np.shape(X)[0],):
        raise ValueError(f"y must have shape ({np.shape(X)[0]},), got {yj.shape}")
    optimizer = kwargs.get("optimizer") or train.sgd(kwargs.get("learning_rate", train.DEFAULT_LEARNING_RATE))
    state = kwargs.get("opt_state")
    state = optimizer.init(model.W) if state is None else state
    loss = jax.device_get(0.5 * jnp.sum(yj * yj))
    count = np.zeros((steps,), np.int64)
    return train.History(loss=np.full((steps,), loss, dt), fire_mean=np.zeros((steps,)), fire_max=count,
                         fire_union=count.copy(), events=[], opt_state=state, method=method,
                         b=float(model.b), ms_per_step=0.0, setup_s=0.0, n_active=0, span=False,
                         fallback_step=None, state_bytes=0, coefficients=model.coefficients)


def _initial_rows(model: WideParams) -> jax.Array:
    """The held rows of W(0), redrawn from the key (:func:`jaxcorr.nn.rows_at`: |A| rows, not m)."""
    return nn.rows_at(model.key, np.asarray(model.idx), model.d, dtype=model.W.dtype).W


# ------------------------------------------------------------------------------------- predict
@partial(jax.jit, static_argnames=("rows", "d"))
def _predict_chunk(key, block, remaining, X, b, local, W_sw, *, rows: int, d: int):
    """sum_r a_r sigma_b(<w_r, x>) over one chunk, with the held rows swapped into W(0)."""
    p = nn.init_rows(key, rows, d, block=block, dtype=W_sw.dtype)
    W = p.W.at[local].set(W_sw, mode="drop")  # local == rows marks padding: dropped
    a = jnp.where(jnp.arange(rows) < remaining, p.a, 0)
    ip = _linalg.inner(X, W)
    return _linalg.matmul(nn.relu_b(ip, b), a)


@partial(jax.jit, static_argnames=("K",))
def _pad_rows(W, K: int):
    return jnp.concatenate([W, jnp.zeros((K, W.shape[1]), W.dtype)])


@partial(jax.jit, static_argnames=("K",))
def _window(W_pad, lo, *, K: int):
    """Rows lo ... lo + K of the padded held rows."""
    return lax.dynamic_slice_in_dim(W_pad, lo, K)


def _chunk_slices(idx: np.ndarray, m: int, C: int):
    """Per chunk, the positions [lo, hi) of idx inside it, and a common padded length K."""
    edges = np.searchsorted(idx, np.arange(0, m + C, C, dtype=np.int64)[: -(-m // C) + 1])
    counts = np.diff(edges)
    K = _bucket(int(counts.max()) if counts.size else 1, minimum=8)
    return edges, K


def predict(model: WideParams, X, *, chunk_rows: int | None = None,
            progress: Callable[[dict], None] | None = None) -> jax.Array:
    r"""2NN(m, b) output :math:`f(W, x, a)` (Definition 2.1), streaming W over ``m`` in chunks.

    Each chunk of rows of W(0) is regenerated from the key (:func:`jaxcorr.nn.init_rows`), the
    trained rows of the chunk are swapped in, and its share of the sum is added; nothing larger than
    a chunk is held. Equals :func:`jaxcorr.nn.predict` on :func:`materialize` ``(model)`` (to float
    rounding in the order of the sum over ``r``). Costs a full pass of the generator (as :func:`setup`).

    Args:
      model: an :class:`WideParams`.
      X: (n, d) points, or (d,) for one point.
      chunk_rows: rows per chunk (default from a 256 MiB working set).
      progress: as in :func:`setup` (without ``n_active``).

    Returns:
      (n,) outputs, or () for one point, in the model's dtype.
    """
    _check_model(model)
    m, d, dt = model.m, model.d, model.W.dtype
    Xh = np.asarray(_host(X), dt)  # every transfer explicit: predict runs under jax.transfer_guard("disallow")
    single = Xh.ndim == 1
    Xh = np.atleast_2d(Xh)
    _checks.check_matrix("X", Xh, cols=d)
    dev = next(iter(model.W.devices()))
    X = jax.device_put(Xh, dev)
    C = _chunk_rows(m, X.shape[0], d, jnp.dtype(dt).itemsize, chunk_rows)
    idx = np.asarray(jax.device_get(model.idx), np.int64)
    edges, K = _chunk_slices(idx, m, C)
    W_pad = _pad_rows(model.W, K)  # the held rows and K zero rows: each chunk's window is a slice
    out = jax.device_put(np.zeros((X.shape[0],), dt), dev)
    b = jax.device_put(np.asarray(model.b, dt), dev)
    t0 = time.perf_counter()
    for c in range(len(edges) - 1):
        lo, hi = int(edges[c]), int(edges[c + 1])
        local = np.full((K,), C, np.int32)
        local[: hi - lo] = idx[lo:hi] - c * C  # past hi - lo: padding (dropped), whatever the window holds
        blk, rem, lo_d, local_d = jax.device_put(
            (np.uint32(c * C // nn.BLOCK_ROWS), np.int32(min(C, m - c * C)), np.int32(lo), local), dev)
        W_sw = _window(W_pad, lo_d, K=K)
        out = out + _predict_chunk(model.key, blk, rem, X, b, local_d, W_sw, rows=C, d=d)
        if progress is not None:
            done = min((c + 1) * C, m)
            el = time.perf_counter() - t0
            progress({"rows_done": done, "rows": m, "elapsed_s": el, "rows_per_s": done / max(el, 1e-9)})
    out = jax.block_until_ready(out / jax.device_put(np.sqrt(np.asarray(m, dt)), dev))
    release_host_memory()
    return out[0] if single else out


def materialize(model: WideParams) -> nn.Params:
    """The full :class:`jaxcorr.nn.Params` (m, d) of ``model`` (W(0) with the held rows swapped in).

    For small widths (tests, export): it allocates ``m * d`` floats.
    """
    _check_model(model)
    p = nn.init(model.key, model.m, model.d, dtype=model.W.dtype)
    return nn.Params(W=p.W.at[model.idx].set(model.W), a=p.a)



# ------------------------------------------------------------ full-width runs as wide models
@jax.jit
def _near_firing(W, X, b, tol):
    """Rows of W that fire, or come within the rounding margin tau_i of firing, for some x_i."""
    ip = _linalg.inner(X, W)
    return jnp.any(ip > b - tol[:, None], axis=0)


def active_rows(W0, X, b: float, *, block_rows: int = 1 << 20) -> np.ndarray:
    r"""The rows of ``W0`` that :func:`setup` keeps: :math:`\langle w_r, x_i\rangle > b - \tau_i` for
    some ``i`` (A of Definition 2.4 at t = 0, plus the rounding margin of the module docstring).

    Args:
      W0: (m, d) initial weights (``nn.init(key, m, d).W``).
      X: (n, d) training points.
      b: the threshold.
      block_rows: rows per jitted block (bounds the (n, block) inner products held at once).

    Returns:
      (m,) bool numpy array.
    """
    W0 = jnp.asarray(W0)
    m, d = W0.shape
    Xj = jnp.asarray(X, W0.dtype)
    tol, _ = _margin(Xj, d, W0.dtype)
    bj = jnp.asarray(b, W0.dtype)
    return np.concatenate([np.asarray(_near_firing(W0[lo:lo + block_rows], Xj, bj, tol))
                           for lo in range(0, m, block_rows)]) if m else np.zeros(0, bool)


def _bits(x):
    """``x`` as unsigned integers of its width: equality of bits (-0.0 != 0.0, a NaN equals itself)."""
    if x.dtype == jnp.bool_:
        return x
    return lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize])


@partial(jax.jit, static_argnames=("init", "rows"))
def _changed_state_rows(W0, leaves, *, init, rows: tuple):
    """(m,) bool: row r of a row leaf of the state differs in any bit from that of init(W0) (fused:
    the fresh state is never materialised)."""
    ref = jax.tree_util.tree_leaves(init(W0))
    diff = jnp.zeros((W0.shape[0],), bool)
    for i in rows:
        diff = diff | jnp.any((_bits(leaves[i]) != _bits(ref[i])).reshape(W0.shape[0], -1), axis=1)
    return diff


@jax.jit
def _rows_differ_jit(W, W0):
    """(m,) bool on the device: row r of W differs in any bit from row r of W0 (the accelerator path)."""
    return jnp.any((_bits(W) != _bits(W0)).reshape(W.shape[0], -1), axis=1)


def _rows_differ(W: np.ndarray, W0: np.ndarray, block_rows: int = 1 << 20) -> np.ndarray:
    """(m,) bool: row r of W differs in any bit from row r of W0. Compares the rows' bytes as the
    widest unsigned words that tile them (the CPU path: faster there than XLA's compare-and-reduce)."""
    m = W.shape[0]
    W, W0 = np.ascontiguousarray(W).reshape(m, -1), np.ascontiguousarray(W0).reshape(m, -1)
    nbytes = W.shape[1] * W.dtype.itemsize
    word = next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8) if nbytes % np.dtype(w).itemsize == 0)
    a, b = W.view(np.uint8).view(word), W0.view(np.uint8).view(word)
    out = np.empty((m,), bool)
    for lo in range(0, m, block_rows):
        np.any(a[lo:lo + block_rows] != b[lo:lo + block_rows], axis=1, out=out[lo:lo + block_rows])
    return out


def _row_leaves(optimizer, m: int, d: int, dtype) -> tuple:
    """Indices of the state leaves with one entry per row of W along axis 0 (found by building the
    state's shapes for m and m + 1 rows); ValueError if a leaf has its rows along another axis."""
    a = jax.tree_util.tree_leaves(jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct((m, d), dtype)))
    b = jax.tree_util.tree_leaves(jax.eval_shape(optimizer.init, jax.ShapeDtypeStruct((m + 1, d), dtype)))
    rows = []
    for i, (x, z) in enumerate(zip(a, b)):
        if x.shape == z.shape:
            continue
        if x.ndim == 0 or x.shape[1:] != z.shape[1:] or x.shape[0] != m:
            raise StateLayoutError(f"optimizer state array {i} {x.shape} does not hold the rows of W along axis 0")
        rows.append(i)
    return tuple(rows)


def from_params(key, params: nn.Params, X, *, b: float, W0: nn.Params, opt_state: Any = None, optimizer=None,
                active: np.ndarray | None = None, _host: bool | None = None):
    r"""A full-width model (all m rows in memory) as an :class:`WideParams` plus its state's rows.

    Keeps the rows of :func:`active_rows` ``(W0, X, b)`` (the rows that can ever move or fire: the
    paper's invariant) and, so that nothing is ever lost, every other row whose weights differ from
    ``W0`` or whose optimizer state differs from ``optimizer.init(W0)`` in any bit. Every row left
    out is therefore exactly its initial row with a fresh state, and :func:`expand` rebuilds the
    model and the state bit for bit.

    Args:
      key: the PRNG key of ``W0 = nn.init(key, m, d)``.
      params: the trained (m, d) :class:`jaxcorr.nn.Params` (its ``a`` must be ``W0.a``).
      X: (n, d) training data.
      b: threshold.
      W0: ``nn.init(key, m, d, dtype)`` (passed in: the caller holds it; not checked against ``key``).
      opt_state: optax state over ``params.W`` (None: none).
      optimizer: the optax transformation of ``opt_state`` (needed when the state has arrays).
      active: precomputed ``active_rows(W0.W, X, b)`` (a run that saves often computes it once).

    Returns:
      ``(model, opt_rows)``: the model holding the kept rows (sorted indices), and the state with
      each per-row array restricted to those rows (other arrays as they are).

    Raises:
      ValueError: mismatched shapes, ``a`` not the initial one, no ``optimizer`` for a state, or a
        state whose arrays do not hold W's rows along axis 0.
    """
    key = _as_key(key)
    W, a = jnp.asarray(params.W), jnp.asarray(params.a)
    m, d = W.shape
    if W0.W.shape != (m, d) or W0.W.dtype != W.dtype or a.shape != (m,):
        raise ValueError(f"params {W.shape} {W.dtype} and W0 {W0.W.shape} {W0.W.dtype} differ in shape or dtype")
    if not np.array_equal(np.asarray(a), np.asarray(W0.a)):
        raise ValueError("params.a differs from W0.a: a is never trained, so W0 is not this model's start")
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    if leaves and optimizer is None:
        raise ValueError("pass the optimizer of opt_state, to tell its per-row arrays and their fresh values")
    rows = _row_leaves(optimizer, m, d, W.dtype) if leaves else ()
    if active is None:
        active = active_rows(W0.W, X, b)
    host = jax.default_backend() == "cpu" if _host is None else bool(_host)  # the numpy compare: CPU only
    differ = _rows_differ(np.asarray(W), np.asarray(W0.W)) if host else jax.device_get(_rows_differ_jit(W, W0.W))
    changed = differ | np.asarray(active, bool)
    if rows:
        changed |= np.asarray(jax.device_get(_changed_state_rows(jnp.asarray(W0.W), leaves, init=optimizer.init,
                                                                 rows=rows)))
    idx = np.flatnonzero(changed)
    idx = idx.astype(np.int64 if m > np.iinfo(np.int32).max else np.int32)
    idx_dev = jax.device_put(idx)

    def take(x):  # the kept rows: gathered on the host on CPU (a device gather costs more there)
        return jnp.asarray(np.take(np.asarray(x), idx, axis=0)) if host else jnp.take(jnp.asarray(x), idx_dev, axis=0)

    model = WideParams(key=key, idx=jnp.asarray(idx), W=take(W), a=take(a), m=m, b=float(b), data_sha256=_digest(X))
    kept = [take(leaf) if i in rows else leaf for i, leaf in enumerate(leaves)]
    return model, jax.tree_util.tree_unflatten(treedef, kept)


def expand(model: WideParams, opt_state: Any = None, optimizer=None):
    """The full-width model and state of ``model``: the inverse of :func:`from_params`.

    Args:
      model: an :class:`WideParams`.
      opt_state: the state of its rows (as :func:`from_params` or :func:`fit` return it), or None.
      optimizer: the optax transformation (needed when ``opt_state`` has arrays).

    Returns:
      ``(params, state, W0)``: :class:`jaxcorr.nn.Params` (m, d) with the held rows in ``W(0)``;
      ``optimizer.init(W0.W)`` with the held rows' state swapped in (None without ``opt_state``);
      and ``W0 = nn.init(key, m, d)`` itself.
    """
    _check_model(model)
    W0 = nn.init(model.key, model.m, model.d, dtype=model.W.dtype)
    params = nn.Params(W=W0.W.at[model.idx].set(model.W), a=W0.a)
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    if not leaves:
        return params, opt_state, W0
    if optimizer is None:
        raise ValueError("pass the optimizer of opt_state, to rebuild the state of the rows not held")
    rows = _row_leaves(optimizer, model.m, model.d, model.W.dtype)
    full = jax.tree_util.tree_leaves(optimizer.init(W0.W))
    out = [full[i].at[model.idx].set(leaf) if i in rows else leaf for i, leaf in enumerate(leaves)]
    return params, jax.tree_util.tree_unflatten(treedef, out), W0

