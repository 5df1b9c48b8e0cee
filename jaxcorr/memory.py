r"""The memory a run needs, the memory available, and the plan: full width or the wide model.

``jaxcorr train`` calls :func:`plan` before it allocates anything, so a run that cannot fit is
refused with one line (:class:`jaxcorr.errors.InsufficientMemoryError`) naming the estimate, the
available memory and the largest width that fits, instead of dying in XLA's allocator.

**The estimate** (:func:`estimate`) is the peak resident memory of a training process: :data:`BASE`
(the Python process, JAX and the compiled programs) plus the arrays, in units of the element size
``s``, with per-method terms read from :mod:`jaxcorr.methods` (``sparse``, ``trees``):

- full width (``nn.init`` + ``train.fit`` over all m rows): ``W`` (m, d) and its copies alive at the
  peak, the optimizer state over ``W`` (``slots * d``: sgd 0, momentum 1, adam 2) and the update's
  temporaries, and the per-point arrays of the method: the dense pre-activations (n, m); the DTree's
  inner products (n, m) and its n max-trees (n, 2P), ``P`` the power of two >= m (Theorem 3.1 INIT);
  the WTree's m trees over n leaves (m, 2 pow2(n)) (Theorem 3.2). Calibrated against the peak RSS
  of ``jaxcorr train --steps 2`` and rounded up; :data:`SAFETY` adds a margin on top.
- the wide model (:mod:`jaxcorr.wide`: W(0) streamed from the key, only the active rows held): one
  chunk of W(0) (:data:`jaxcorr.wide.CHUNK_BUDGET`) and the active rows,
  :math:`|A| \le m \min(1, n Q(b/\|x\|))` (:func:`expected_active`, Lemma 2.5, 5% headroom), then
  training on those rows (the span path, :func:`jaxcorr.train.sgd`, holds ``n`` numbers per row and
  state slot instead of ``d``). Calibrated against ``scripts/bench_width.py``'s peaks.
- the span-defined model (``init="span"``, :mod:`jaxcorr.span_init`: W(0) by its key and the basis
  of span X, only the held rows A drawn): no term in ``m d`` or ``m`` at all. Set-up: the held rows'
  span coordinates ``G`` (|A|, k), ``k = min(n, d)`` at most, three copies at its peak (the calls'
  parts, their concatenation, the device copy) and their int64 indices twice, plus one call's
  candidate slots. Training on the span path: ``G``, the indices and ``a``, and per padded row
  (``L`` = :func:`jaxcorr.maxtree.bucket` ``(|A| + 1)``) ``n`` numbers for each of the inner
  products, the initial leaves, ``K``, the step's temporaries (6 together), each state slot and the
  trees' levels; another optimizer (the row path) holds the rows of A, ``|A| d`` in float64 on the
  host while they are drawn, then the wide model's training terms. Calibrated against
  ``scripts/bench_span_init.py --train`` (its measurements: docs/span_init.md).

**Available memory** (:func:`available`) is the smallest of the kernel's ``MemAvailable``, the room
left under every cgroup memory limit on the way to the root (v2 ``memory.max`` or v1
``memory.limit_in_bytes``, minus the non-reclaimable usage), and on an accelerator the device's
``bytes_limit - bytes_in_use``.

**Width limits**: :data:`MAX_TREE_WIDTH` (full-width runs: int32 tree indices with the sentinel m
over power-of-two levels of up to 2 m leaves) and :data:`MAX_WIDE_WIDTH` (the wide model: the row
counter of the key's hash, :data:`jaxcorr.nn.MAX_WIDTH`).

Examples:
  >>> from jaxcorr import memory
  >>> est = memory.estimate("dense", n=8, m=2**17, d=32)
  >>> 2**20 < est.total < 2**31
  True
  >>> memory.largest_width("dense", n=8, d=32, available=est.total) >= 2**17
  True
  >>> memory.estimate("active", n=8, m=2**26, d=64, wide=True).total < 2**33
  True
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

from jaxcorr import methods
from jaxcorr.errors import InsufficientMemoryError

__all__ = ["Estimate", "Plan", "estimate", "available", "largest_width", "check", "plan", "format_bytes",
           "expected_active", "BASE", "SAFETY", "MAX_TREE_WIDTH", "MAX_WIDE_WIDTH"]

#: Fixed cost of a training process -- Python, JAX, XLA and the compiled programs (bytes).
BASE = 640 * 2**20
#: Multiplier on the full-width per-row estimate (the model is calibrated, this is the margin on top).
SAFETY = 1.25
#: The widest full-width network -- tree indices are int32 with the sentinel m, over power-of-two
#: padded levels of up to 2 m leaves.
MAX_TREE_WIDTH = 2**30
#: The widest wide model -- the key-counter limit of the generator, :data:`jaxcorr.nn.MAX_WIDTH`.
MAX_WIDE_WIDTH = 2**48
#: The wide set-up's chunk working set (:data:`jaxcorr.wide.CHUNK_BUDGET`).
_CHUNK_BUDGET = 256 << 20


class Estimate(NamedTuple):
    """An estimated peak: ``total`` bytes, ``parts`` (bytes per phase), ``n_active`` (expected |A|),
    and the ``inputs`` it was computed from."""

    total: int
    parts: dict
    n_active: int
    inputs: dict


class Plan(NamedTuple):
    """:func:`plan`'s decision: ``wide`` (train the wide model, or the span-defined one: only held
    rows), its ``estimate``, the ``available`` bytes (None: unknown), their ``source``, and ``init``
    (the definition of W(0): ``"rows"`` or ``"span"``)."""

    wide: bool
    estimate: Estimate
    available: int | None
    source: str
    init: str = "rows"


def expected_active(m: int, n: int, b: float | None = None, x_norm: float = 1.0) -> float:
    r"""Upper estimate of |A| at t = 0: :math:`m \min(1, n\,Q(b / \|x\|))` (union bound, Lemma 2.5).

    ``Q`` is the standard normal tail; rows are :math:`N(0, I_d)`, so :math:`\langle w_r, x_i\rangle
    \sim N(0, \|x_i\|^2)`. ``b`` defaults to :func:`jaxcorr.nn.default_threshold` ``(m)``.
    """
    b = math.sqrt(0.4 * math.log(m)) if b is None else float(b)  # nn.default_threshold(m)
    q = 0.5 * math.erfc(b / (max(float(x_norm), 1e-30) * math.sqrt(2)))
    return m * min(1.0, n * q)


def _optimizer(optimizer) -> tuple[int, bool]:
    """(state slots, span path) of a :mod:`jaxcorr.optimizers` name (unknown names: adam's 2, no span)."""
    from jaxcorr import optimizers  # noqa: PLC0415 -- imports jax: only when an estimate is asked for

    if optimizer in optimizers.NAMES:
        spec = optimizers.spec(optimizer)
        return int(spec.state_slots), bool(spec.span)
    return 2, False


def _itemsize(dtype) -> int:
    import numpy as np  # noqa: PLC0415

    return np.dtype(dtype).itemsize


def _pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def _row_elems(meth: methods.Method, n: int, m: int, d: int, k: int) -> float:
    """Full width: elements per neuron at the peak (times the element size gives bytes per row)."""
    if not meth.sparse:
        # W0, W, the gradient and the update; the optimizer state and its temporaries; (n, m)
        # pre-activations, mask and back-propagated coefficients.
        return 4 * d + 2 * k * d + 3 * n
    # The sparse methods hold fewer full-width copies of W at once (the steps run on the active
    # rows), plus the full-width optimizer state, plus their set-up arrays over all m neurons
    # (counted as the DTree's unless the method keeps WTrees).
    per_row = 2.5 * d + 1.1 * k * d
    if meth.trees == "wtree":
        return per_row + n + 2 * _pow2(n) + 2 * n  # (m, n) inner products, m trees, query result
    return per_row + n + 2 * n * _pow2(m) / m + n  # (n, m) inner products, n trees (n, 2P), fire mask


def _fit_bytes(meth: methods.Method, n: int, d: int, rows: float, s: int, slots: int, span: bool) -> float:
    """Wide model: peak bytes of train.fit over ``rows`` held rows (W and its copies, inner products,
    trees, state)."""
    if not meth.sparse:  # W, gradient, new W; (n, rows) inner products, fire mask, coefficients
        return rows * (s * (3 * d + slots * d) + n * (3 * s + 1))
    if span:
        # No copy of the rows in the loop: finalize's W_A(0) + K X and, going on from coefficients,
        # W_A(0) redrawn; the state in row form (slots d); (n, rows) arrays: INIT's inner products,
        # ip0, K and its state, the step's temporaries, the trees' levels.
        trees = 2 if meth.trees is not None else 0
        return rows * s * (2 * d + slots * d + n * (8 + slots + trees))
    # Gathered W_A(0), W_A(0) + K X and the scatter back; (n, rows) inner products, max-tree levels,
    # Gram coefficients, fire sets; optimizer state rows (compacted, full, the one scattered back).
    return rows * s * (4 * d + 3 * slots * d + 10 * n)


def _bucket(x: int) -> int:
    """:func:`jaxcorr.maxtree.bucket` (the padded row count of a compacted run), without importing JAX."""
    g = max(8, _pow2(x) // 8)
    return -(-max(int(x), 1) // g) * g


def _span_parts(meth: methods.Method, n: int, d: int, held: float, s: int, slots: int, span: bool) -> dict:
    """The span-defined model's set-up and training bytes over ``held`` rows (the module docstring)."""
    k = min(n, d)
    cand = (1 << 15) * 8 * (6 * (_pad8(n) + _pad8(k)) + 16)  # one call's candidate slots, float64
    setup = held * (3 * k * s + 2 * 8) + cand
    keep = held * (k * s + 8 + s)  # G, idx, a
    if span:
        trees = 2 if meth.trees is not None else 0
        train = keep + _bucket(held + 1) * n * s * (6 + slots + trees)
    else:
        setup = max(setup, held * (8 * (k + d + 1) + d * s) + keep)  # rows(): float64 on the host, then cast
        train = keep + held * d * s + _fit_bytes(meth, n, d, held, s, slots, False)
    return {"setup": setup, "train": train}


def _pad8(x: int) -> int:
    return -(-int(x) // 8) * 8


def estimate(method: str, *, n: int, m: int, d: int, optimizer: str = "sgd", dtype="float32", wide: bool = False,
             b: float | None = None, x_norm: float = 1.0, compare: str | None = None,
             init: str = "rows") -> Estimate:
    r"""Estimated peak memory of training 2NN(m, b) on n points in R^d, before allocating anything.

    Args:
      method: a method of :mod:`jaxcorr.methods`.
      n, m, d: data points, width, dimension.
      optimizer: a :mod:`jaxcorr.optimizers` name (``"sgd"``, ``"momentum"``, ``"adam"``; unknown
        names count as adam, without the span path).
      dtype: floating dtype of the weights (``"float32"``, ``"float64"``).
      wide: the wide model (:mod:`jaxcorr.wide`) instead of full width (ignored for ``init="span"``,
        which holds only the held rows anyway).
      b: threshold (default :func:`jaxcorr.nn.default_threshold` ``(m)``); the wide model's |A|.
      x_norm: the largest :math:`\|x_i\|` (1 for :func:`jaxcorr.data.synthetic`).
      compare: full width only: the baseline method of ``--compare``, whose run holds its own weights
        (with ``init="span"``: the materialised full-width network's baseline, added on top).
      init: ``"rows"`` (W(0) = ``nn.init`` rows: full width or the wide model) or ``"span"`` (the
        span-defined model, :mod:`jaxcorr.span_init`: O(|A| n) state, no ``m d`` term).

    Returns:
      :class:`Estimate`.

    Raises:
      ValueError: an unknown method or ``init``, or ``compare`` with ``wide``.

    Examples:
      >>> from jaxcorr import memory
      >>> est = memory.estimate("active", n=8, m=2**32, d=64, init="span")
      >>> 10 * 2**30 < est.total < 16 * 2**30, sorted(est.parts)
      (True, ['runtime', 'setup', 'train'])
    """
    import numpy as np  # noqa: PLC0415

    meth = methods.get(method)
    n, m, d = int(n), int(m), int(d)
    s = np.dtype(dtype).itemsize
    slots, span = _optimizer(optimizer)
    k = min(float(m), 1.05 * expected_active(m, n, b, x_norm) + 1024)
    inputs = {"method": method, "n": n, "m": m, "d": d, "optimizer": optimizer, "dtype": str(np.dtype(dtype)),
              "wide": bool(wide), "b": b, "x_norm": float(x_norm), "compare": compare, "init": init}
    if init not in ("rows", "span"):
        raise ValueError(f"init must be 'rows' or 'span', got {init!r}")
    if init == "span":
        parts = {"runtime": BASE, **_span_parts(meth, n, d, k, s, slots, span)}
        total = BASE + max(parts["setup"], parts["train"])
        if compare is not None:
            parts["compare"] = SAFETY * s * m * (_row_elems(methods.get(compare), n, m, d, slots) + 2 * d)
            total += parts["compare"]
    elif wide:
        if compare is not None:
            raise ValueError("compare is a full-width baseline; the wide model has none")
        per_row = s * (2 * d + 3 * n) + 16  # XLA's temporaries (hash words, W, ip) hold ~3x this
        chunk = 3 * min(m, _CHUNK_BUDGET // per_row) * per_row
        parts = {"runtime": BASE, "setup": chunk + 2 * k * ((d + 1) * s + 8),
                 "train": k * (d + 1) * s + _fit_bytes(meth, n, d, k, s, slots, span)}
        total = BASE + max(parts["setup"], parts["train"])
    else:
        rows = _row_elems(meth, n, m, d, slots)
        if compare is not None:
            rows = max(rows, _row_elems(methods.get(compare), n, m, d, slots)) + 2 * d
        parts = {"runtime": BASE, "train": SAFETY * s * m * rows}
        total = BASE + parts["train"]
    return Estimate(int(total), {key: int(v) for key, v in parts.items()}, int(k), inputs)


def largest_width(method: str, *, n: int, d: int, available: int, wide: bool = False, **kw) -> int:
    """The largest width m (<= :data:`MAX_WIDE_WIDTH` for the wide and the span-defined model, else
    :data:`MAX_TREE_WIDTH`) whose :func:`estimate` fits in ``available`` bytes; 0 if none does.
    ``kw``: :func:`estimate`'s."""
    lo, hi = 0, MAX_WIDE_WIDTH if wide or kw.get("init") == "span" else MAX_TREE_WIDTH
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(method, n=n, m=mid, d=d, wide=wide, **kw).total <= available:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _read_int(path: str):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _stat_field(path: str, names) -> int:
    try:
        with open(path) as f:
            fields = dict(line.split()[:2] for line in f if len(line.split()) >= 2)
    except OSError:
        return 0
    for name in names:
        if name in fields and fields[name].isdigit():
            return int(fields[name])
    return 0


def _cgroup_dirs(root: str, version: int) -> list[str]:
    """The cgroup directories of this process and their parents under ``root`` (innermost first)."""
    rel = "/"
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hid, controllers, path = line.rstrip("\n").split(":", 2)
                if (version == 2 and hid == "0") or (version == 1 and "memory" in controllers.split(",")):
                    rel = path
    except OSError:
        pass
    dirs, cur = [], rel
    while True:
        d = os.path.join(root, cur.lstrip("/"))
        if os.path.isdir(d):
            dirs.append(d)
        if cur in ("", "/"):
            break
        cur = os.path.dirname(cur)
    if root not in dirs and os.path.isdir(root):
        dirs.append(root)
    return dirs


def _cgroup_room():
    """Bytes left under the tightest cgroup memory limit on the way to the root, or None."""
    best = None
    for d in _cgroup_dirs("/sys/fs/cgroup", 2):
        limit = _read_int(os.path.join(d, "memory.max"))
        used = _read_int(os.path.join(d, "memory.current"))
        if limit is not None and used is not None:
            used -= _stat_field(os.path.join(d, "memory.stat"), ("inactive_file",))
            best = min(best, limit - max(used, 0)) if best is not None else limit - max(used, 0)
    for d in _cgroup_dirs("/sys/fs/cgroup/memory", 1):
        limit = _read_int(os.path.join(d, "memory.limit_in_bytes"))
        used = _read_int(os.path.join(d, "memory.usage_in_bytes"))
        if limit is not None and used is not None and limit < 2**60:
            used -= _stat_field(os.path.join(d, "memory.stat"), ("total_inactive_file", "inactive_file"))
            room = limit - max(used, 0)
            best = room if best is None else min(best, room)
    return best


def available(device=None) -> tuple[int | None, str]:
    """Memory a new run can use, in bytes, and where the figure comes from.

    Args:
      device: a JAX device whose ``memory_stats()`` to consult (accelerators); None for host memory
        only (the CPU backend computes in host memory).

    Returns:
      ``(bytes, source)``: the smallest of the candidates found, and a short description of it
      (``"MemAvailable"``, ``"cgroup memory limit"`` or ``"<platform> device memory"``);
      ``(None, "unknown")`` when nothing can be read.
    """
    found = []
    mem = _meminfo_available()
    if mem is not None:
        found.append((mem, "MemAvailable"))
    room = _cgroup_room()
    if room is not None:
        found.append((max(room, 0), "cgroup memory limit"))
    if device is not None and getattr(device, "platform", "cpu") != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 -- not every backend implements memory_stats
            stats = {}
        if "bytes_limit" in stats:
            found.append((stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"{device.platform} device memory"))
    if not found:
        return None, "unknown"
    return min(found)


def format_bytes(x: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    x = float(x)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(x) < 1024 or unit == "PiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} PiB"


def check(method: str, *, n: int, m: int, d: int, wide: bool = False, available=None, width_option: str = "--m",
          **kw) -> Plan:
    """Refuse a run that cannot fit, before anything is allocated.

    Args:
      method, n, m, d, wide, kw: as :func:`estimate` (``optimizer``, ``dtype``, ``b``, ...).
      available: ``(bytes, source)`` as :func:`available` returns it (default: measured now, host).
      width_option: how the message names the width (the CLI's ``--m``).

    Returns:
      :class:`Plan` when the run fits (or the available memory is unknown).

    Raises:
      ValueError: ``m`` above :data:`MAX_TREE_WIDTH` (full width) or :data:`MAX_WIDE_WIDTH` (wide).
      InsufficientMemoryError: one line with the estimate, the memory available (and where that
        figure comes from) and the widest ``m`` that fits; for a full-width run of a sparse or dense
        method also the widest wide model that fits.
    """
    span = kw.get("init") == "span"
    limit, why = (MAX_WIDE_WIDTH, "the key's row counter") if wide or span else (MAX_TREE_WIDTH, "int32 tree indices")
    if m > limit:
        raise ValueError(f"{width_option} {m} is above the largest supported width 2^{limit.bit_length() - 1} = "
                         f"{limit} ({why})")
    est = estimate(method, n=n, m=m, d=d, wide=wide, **kw)
    avail, source = available if available is not None else globals()["available"]()
    if avail is None or est.total <= avail:
        return Plan(bool(wide) or span, est, avail, source, "span" if span else "rows")
    fits = largest_width(method, n=n, d=d, available=avail, wide=wide, **kw)
    alt = "no width fits" if fits == 0 else f"at most {width_option} {fits} fits (about 2^{math.log2(fits):.1f})"
    mode = "span-defined model" if span else "wide model" if wide else "full width"
    what = f"method {method} ({mode})" + (f" with --compare {kw['compare']}" if kw.get("compare") else "")
    bits = 8 * _itemsize(est.inputs["dtype"])
    msg = (f"{width_option} {m} does not fit in memory: {what} needs about {format_bytes(est.total)} at n={n}, "
           f"d={d} ({kw.get('optimizer', 'sgd')}, {bits}-bit floats), but {format_bytes(avail)} is available "
           f"({source}); {alt}")
    if not wide and not span and not kw.get("compare"):
        other = {k: v for k, v in kw.items() if k != "compare"}
        best = largest_width(methods.DEFAULT, n=n, d=d, available=avail, wide=True, **other)
        msg += f"; the wide model (method {methods.DEFAULT}) fits up to {width_option} {best}"
    raise InsufficientMemoryError(msg, est, avail, fits)


def plan(method: str, *, n: int, m: int, d: int, wide: str = "auto", resumed: str | None = None,
         compare: str | None = None, available=None, width_option: str = "--m", **kw) -> Plan:
    """Full width or the wide model (``--wide auto|on|off``), checked against memory.

    Full width is kept whenever it fits and ``wide`` is not ``"on"``; otherwise, for a sparse
    method without ``compare``, the wide model. ``resumed`` is the kind of the checkpoint a run
    goes on from (:func:`jaxcorr.checkpoint.kind`): a wide one stays wide, a full one full width, a
    compact one goes either way. A span-defined model (``init="span"`` in ``kw``, or ``resumed``
    ``"span"``) holds only its held rows: its estimate (no ``m d`` term) is checked, ``wide="off"``
    refused.

    Args:
      method, n, m, d, compare, kw: as :func:`estimate` (``init``: ``"rows"`` or ``"span"``).
      wide: ``"auto"``, ``"on"`` or ``"off"``.
      resumed: None, ``"full"``, ``"compact"``, ``"wide"`` or ``"span"``.
      available, width_option: as :func:`check`.

    Returns:
      :class:`Plan` (``wide`` says which).

    Raises:
      ValueError: a choice that contradicts the checkpoint, or a width above the limits.
      InsufficientMemoryError: it fits neither way (the message names what fits).
    """
    if wide not in ("auto", "on", "off"):
        raise ValueError(f"wide must be 'auto', 'on' or 'off', got {wide!r}")
    if resumed == "span" and kw.get("init", "span") != "span":
        raise ValueError("the checkpoint holds a span-defined model (--init span); it goes on with init='span'")
    if resumed == "span" or kw.get("init") == "span":
        if wide == "off":
            raise ValueError("a span-defined model (--init span) holds only its held rows; --wide off is for "
                             "--init rows")
        kw["init"] = "span"
        return check(method, n=n, m=m, d=d, compare=compare, available=available, width_option=width_option, **kw)
    if resumed == "wide" and wide == "off":
        raise ValueError("the checkpoint holds a wide model (only its active rows); it cannot go on at full width")
    if resumed == "wide" and compare:
        raise ValueError(f"the checkpoint holds a wide model (only its active rows), but a {compare} baseline "
                         "needs the full-width weights")
    if resumed == "full" and wide == "on":
        raise ValueError("the checkpoint holds a full-width model; it goes on at full width")
    avail = available if available is not None else globals()["available"]()
    sparse = methods.get(method).sparse
    if not (resumed == "wide" or wide == "on"):
        try:
            return check(method, n=n, m=m, d=d, compare=compare, available=avail, width_option=width_option, **kw)
        except (InsufficientMemoryError, ValueError) as e:
            if wide == "off" or not sparse or compare or resumed == "full":
                if not sparse and isinstance(e, InsufficientMemoryError) and not compare:
                    raise InsufficientMemoryError(f"{e}; use --method {methods.DEFAULT} (a sparse method) for it",
                                                  e.estimate, e.available, e.largest) from None
                raise
    return check(method, n=n, m=m, d=d, wide=True, available=avail, width_option=width_option, **kw)


