r"""Will a training run fit in memory? An estimate per method, the memory available, the largest m.

``jaxcorr train`` calls :func:`check` before it allocates anything, so a run that cannot fit is
refused with one line naming the estimate, the available memory and the largest width that fits,
instead of dying in XLA's allocator (a native abort, or the kernel's OOM killer under a cgroup
limit).

**The estimate** (:func:`estimate_bytes`) is the peak resident memory of a ``jaxcorr train`` process,
as an affine function of the width: ``BASE`` (the Python process, JAX and the compiled programs)
plus ``m`` times a per-row cost that counts, in units of the element size ``s`` (4 bytes in float32,
8 with x64):

- ``W`` (m, d) and its copies alive at the peak: the initial weights kept for the summary, the
  trained weights, the gradient or the scattered-back rows (``w_copies * d``);
- the optimizer state over ``W``: ``slots * d`` (sgd 0, momentum 1, adam 2), and XLA's temporaries of
  the update, about as many again;
- per-point arrays of the method: the dense pre-activations (n, m); the DTree's inner products
  (n, m) and its n max-trees (n, 2P) with ``P`` the power of two >= m (Theorem 3.1 INIT); the
  WTree's m trees over n leaves (m, 2 pow2(n)) (Theorem 3.2), with their (m, n) query results.

The coefficients were calibrated against the peak RSS (``/usr/bin/time -f %M``) of
``jaxcorr train --steps 2`` at m = 2^18, 2^20 and 2^22 with sgd and adam on the 2-core CPU machine,
and are rounded up; :data:`SAFETY` adds a further margin. On an accelerator the same count bounds
the device memory, and the host needs only the checkpoint copies.

**Available memory** (:func:`available_bytes`) is the smallest of the kernel's ``MemAvailable`` and
the room left under the process's cgroup memory limit (v2 ``memory.max`` or v1
``memory.limit_in_bytes``, minus the non-reclaimable usage), and on an accelerator the device's
``bytes_limit - bytes_in_use``.

Examples:
  >>> from jaxcorr import memory
  >>> est = memory.estimate_bytes("dense", n=8, m=2**17, d=32)
  >>> 2**20 < est < 2**31
  True
  >>> memory.max_width("dense", n=8, d=32, available=est) >= 2**17
  True
"""

from __future__ import annotations

import math
import os

__all__ = ["estimate_bytes", "available_bytes", "max_width", "check", "format_bytes", "MAX_WIDTH",
           "SAFETY", "BASE"]

#: Fixed cost of a ``jaxcorr train`` process: Python, JAX, XLA and the compiled programs.
BASE = 600 * 2**20
#: Multiplier on the per-row estimate (the model is calibrated, this is the margin on top).
SAFETY = 1.25
#: The widest network any method accepts: tree indices are int32 with the sentinel m, over
#: power-of-two padded levels of up to 2 m leaves.
MAX_WIDTH = 2**30

def _slots(optimizer: str) -> int:
    """Optimizer-state arrays the size of W for a :mod:`jaxcorr.optimizers` name (2 if unknown)."""
    from jaxcorr import optimizers  # imports jax: only when an estimate is asked for

    return optimizers.spec(optimizer).state_slots if optimizer in optimizers.NAMES else 2


def _pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def _row_elems(method: str, n: int, m: int, d: int, optimizer: str) -> float:
    """Elements per neuron at the peak (times the element size gives bytes per row)."""
    k = _slots(optimizer)
    if method == "dense":
        # W0, W, the gradient and the update; the optimizer state and its temporaries; (n, m)
        # pre-activations, mask and back-propagated coefficients.
        return 4 * d + 2 * k * d + 3 * n
    # The sparse methods hold fewer full-width copies of W at once (the steps run on the active
    # rows), plus the full-width optimizer state, plus their set-up arrays over all m neurons.
    per_row = 2.5 * d + 1.1 * k * d
    if method == "wtree":
        return per_row + n + 2 * _pow2(n) + 2 * n  # (m, n) inner products, m trees, query result
    return per_row + n + 2 * n * _pow2(m) / m + n  # (n, m) inner products, n trees (n, 2P), fire mask


def estimate_bytes(method: str, n: int, m: int, d: int, *, itemsize: int = 4, optimizer: str = "sgd",
                   compare: str | None = None) -> int:
    """Estimated peak memory in bytes of ``jaxcorr train`` with these settings.

    Args:
      method: the training method (``"dense"``, ``"dtree"``, ``"wtree"``; any other name is counted
        as a tree-based method, like ``"dtree"``).
      n, m, d: data points, width, dimension.
      itemsize: bytes per element (4 for float32, 8 for float64).
      optimizer: ``"sgd"``, ``"momentum"`` or ``"adam"`` (unknown names count as adam).
      compare: the baseline method of ``--compare``, whose run holds its own copy of the weights.

    Returns:
      The estimate in bytes, an int.
    """
    rows = _row_elems(method, n, m, d, optimizer)
    if compare is not None:
        rows = max(rows, _row_elems(compare, n, m, d, optimizer)) + 2 * d
    return int(BASE + SAFETY * itemsize * m * rows)


def max_width(method: str, n: int, d: int, available: int, **kw) -> int:
    """The largest width m (<= :data:`MAX_WIDTH`) whose :func:`estimate_bytes` fits in ``available``;
    0 if none does. Keyword arguments are those of :func:`estimate_bytes`."""
    lo, hi = 0, MAX_WIDTH
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_bytes(method, n, mid, d, **kw) <= available:
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


def available_bytes(device=None) -> tuple[int | None, str]:
    """Memory a new run can use, in bytes, and where the figure comes from.

    Args:
      device: a JAX device whose ``memory_stats()`` to consult (accelerators); None for host memory
        only (the CPU backend computes in host memory).

    Returns:
      ``(bytes, source)``: the smallest of the candidates found, and a short description of it
      (``"MemAvailable"``, ``"cgroup limit"`` or ``"device memory"``); ``(None, "unknown")`` when
      nothing can be read.
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


def check(method: str, n: int, m: int, d: int, *, itemsize: int = 4, optimizer: str = "sgd",
          compare: str | None = None, available=None, width_option: str = "--m") -> dict:
    """Refuse a run that cannot fit: raise ``MemoryError`` with one line naming the estimate, the
    available memory and the largest width that fits.

    Args:
      method, n, m, d, itemsize, optimizer, compare: as for :func:`estimate_bytes`.
      available: ``(bytes, source)`` as returned by :func:`available_bytes` (default: measured now).
      width_option: how the message names the width (the CLI's ``--m``).

    Returns:
      A dict with ``estimate``, ``available`` and ``source`` when the run fits (or when the available
      memory is unknown).

    Raises:
      ValueError: ``m`` above :data:`MAX_WIDTH`.
      MemoryError: the estimate exceeds the available memory.
    """
    if m > MAX_WIDTH:
        raise ValueError(f"{width_option} {m} is above the largest supported width 2^30 = {MAX_WIDTH} "
                         "(int32 tree indices)")
    kw = dict(itemsize=itemsize, optimizer=optimizer, compare=compare)
    est = estimate_bytes(method, n, m, d, **kw)
    avail, source = available if available is not None else available_bytes()
    info = {"estimate": est, "available": avail, "source": source}
    if avail is None or est <= avail:
        return info
    fits = max_width(method, n, d, avail, **kw)
    alt = ("no width fits" if fits == 0 else f"at most {width_option} {fits} fits "
           f"(about 2^{math.log2(fits):.1f})")
    what = f"method {method}" + (f" with --compare {compare}" if compare else "")
    raise MemoryError(
        f"{width_option} {m} does not fit in memory: {what} needs about {format_bytes(est)} at n={n}, d={d} "
        f"({optimizer}, {8 * itemsize}-bit floats), but {format_bytes(avail)} is available ({source}); {alt}")
