"""Crash-safe checkpoints of a training run: params, optimizer state, step, config, data fingerprint.

One checkpoint is one ``.npz`` file (readable with ``numpy.load``) holding

- ``W`` (m, d) and ``a`` (m,): the :class:`jaxcorr.nn.Params`;
- ``opt_000``, ``opt_001``, ...: the leaves of the optax state, in ``jax.tree_util`` order;
- ``meta``: UTF-8 JSON with the format tag, ``step`` (total steps trained), ``config`` (sizes and
  hyperparameters), the data ``fingerprint``, and the shape, dtype and CRC-32 of every array.

Integrity (format ``jaxcorr-checkpoint/2``): every member of the zip carries the CRC-32 of its bytes
(the zip format's own, checked by :func:`load` while it reads each member), ``meta`` repeats each
array's CRC-32 and size, and the zip's directory must list exactly the members ``meta`` names, so a
flipped bit in any array or in ``meta`` and any truncation raise :class:`CheckpointError`. The arrays
are streamed into the file in 64 MiB blocks from their own memory (no serialised copy), the CRC is
computed on the way (about 1 GB/s, the cost of reading the bytes once), and the file is fsynced once.
Format ``jaxcorr-checkpoint/1`` files (a SHA-256 over every array, computed in a separate pass) are
still read.

:func:`save` writes a temporary file in the target directory, flushes and fsyncs it, then renames it
over the target with :func:`os.replace` (atomic on POSIX and Windows), so a crash during a save leaves
the previous checkpoint intact. The temporary file is named ``.<name>.<pid>-<random>.tmp``; a save
killed outright (SIGKILL, power loss) leaves it behind, and the next save of the same path removes
every such file whose process is gone. :func:`check_target` checks before a run that a path can be
written and holds no file other than a checkpoint (so a run never overwrites the user's data).
:func:`load` verifies the checksums (truncation or corruption), the format, the sizes against the
config, and, when given, the data and the optimizer; any failure raises :class:`CheckpointError`
with a message that names the file and the mismatch. :func:`read_meta` reads only the metadata.

A model trained from a seed is better saved with :func:`jaxcorr.implicit.save_trained`: only the
rows that differ from ``W(0)`` (the paper's active rows) and their optimizer state, so a run at
m = 2^22 saves megabytes instead of a gigabyte.

Examples:
  >>> import jax, optax, tempfile, os
  >>> from jaxcorr import checkpoint, nn, data
  >>> X, y = data.synthetic(0, 4, 3)
  >>> params = nn.init(jax.random.key(0), 16, 3)
  >>> opt = optax.adam(1e-2)
  >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
  >>> checkpoint.save(path, params, opt.init(params.W), 7, {"m": 16}, X, y)
  >>> ck = checkpoint.load(path, X=X, y=y, optimizer=opt)
  >>> ck["step"], ck["params"].W.shape
  (7, (16, 3))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
import zlib
from typing import Any

import jax
import numpy as np

from jaxcorr import nn

__all__ = ["CheckpointError", "FORMAT", "save", "load", "read_meta", "fingerprint", "is_checkpoint",
           "check_target"]

FORMAT = "jaxcorr-checkpoint/2"
_FORMAT_V1 = "jaxcorr-checkpoint/1"  # SHA-256 over every array; still read
_FORMATS = (FORMAT, _FORMAT_V1)
#: Bytes handed to one ``write`` (and one CRC-32 update): large enough that per-call costs vanish.
_BLOCK = 64 << 20


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, truncated, or does not match the run that loads it."""


def fingerprint(X, y) -> dict:
    """A short description of the training data that identifies it: shapes, dtypes and SHA-256.

    Two data sets have the same fingerprint exactly when they have the same shapes, dtypes and bytes.
    """
    X = np.ascontiguousarray(np.asarray(X))
    y = np.ascontiguousarray(np.asarray(y))
    h = hashlib.sha256()
    for arr in (X, y):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return {
        "X_shape": list(X.shape),
        "y_shape": list(y.shape),
        "dtype": str(X.dtype),
        "sha256": h.hexdigest(),
    }


def _checksum_v1(meta: bytes, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta)
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _opt_name(i: int) -> str:
    return f"opt_{i:03d}"


def save(path, params, opt_state, step: int, config: dict, X, y, *, timings: dict | None = None) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file, fsync, rename).

    Args:
      path: target file; its directory must exist. Written exactly at this name (no suffix added).
      params: :class:`jaxcorr.nn.Params` ``(W, a)``.
      opt_state: the optax state of the optimizer over ``W`` (any pytree of arrays).
      step: total number of training steps behind ``params``, an int >= 0.
      config: JSON-serialisable run configuration (sizes, hyperparameters); stored as is and returned
        by :func:`load`. Keys ``m`` and ``d``, when present, are checked against the params on load.
      X, y: the training data; only its :func:`fingerprint` is stored.
      timings: if a dict, it receives the seconds spent in each phase: ``host`` (arrays to host
        memory), ``write`` (CRC-32 and writing, streamed together), ``fsync``, ``rename``, ``bytes``.

    Raises:
      OSError: the file cannot be written (the previous checkpoint, if any, is left as it was).
      ValueError: ``step`` < 0 or ``config`` is not JSON-serialisable.
    """
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    clock = _Clock(timings)
    arrays = {"W": np.asarray(params.W), "a": np.asarray(params.a)}
    for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
        arrays[_opt_name(i)] = np.asarray(leaf)
    meta = {
        "format": FORMAT,
        "step": step,
        "config": config,
        "fingerprint": fingerprint(X, y),
        "arrays": {k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()},
        "opt_treedef": str(jax.tree_util.tree_structure(opt_state)),
    }
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"config must be JSON-serialisable: {e}") from None
    clock.lap("host")

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path) + f"{os.getpid()}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            nbytes = _write_npz(f, arrays, meta)
            f.flush()
            clock.lap("write")
            os.fsync(f.fileno())
            clock.lap("fsync")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    clock.lap("rename")
    if timings is not None:
        timings["bytes"] = nbytes


class _Clock:
    """Phase timings for :func:`save` (a no-op without a dict)."""

    def __init__(self, out: dict | None):
        self.out, self.t = out, time.perf_counter()

    def lap(self, name: str) -> None:
        if self.out is not None:
            now = time.perf_counter()
            self.out[name] = self.out.get(name, 0.0) + now - self.t
            self.t = now


def _write_npz(f, arrays: dict[str, np.ndarray], meta: dict) -> int:
    """Stream ``arrays`` and then ``meta`` (with each array's CRC-32 and size) into an uncompressed zip
    that ``numpy.load`` reads; returns the bytes written. Each array goes out in :data:`_BLOCK` pieces
    straight from its memory; :mod:`zipfile` computes each member's CRC-32 on the way."""
    crcs = {}
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as out:
                _write_npy(out, arr)
            got = z.getinfo(name + ".npy")
            crcs[name] = [got.CRC, got.file_size]
        meta = dict(meta, crc32=crcs)
        info = zipfile.ZipInfo("meta.npy", date_time=(1980, 1, 1, 0, 0, 0))
        with z.open(info, "w") as out:
            _write_npy(out, np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8))
    return f.tell()


def _write_npy(out, arr: np.ndarray) -> None:
    """``arr`` in ``.npy`` layout (header, then its bytes in C order) without copying it whole."""
    arr = arr if arr.flags.c_contiguous else np.array(arr, order="C")  # (ascontiguousarray makes 0-d 1-d)
    np.lib.format.write_array_header_2_0(out, np.lib.format.header_data_from_array_1_0(arr))
    mv = memoryview(arr.reshape(-1)).cast("B") if arr.size else memoryview(b"")
    for i in range(0, len(mv), _BLOCK):
        out.write(mv[i:i + _BLOCK])


def _tmp_prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _remove_stale_temporaries(path: str) -> list[str]:
    """Delete the temporary files that earlier saves of ``path`` left behind when they were killed.

    A temporary file ``.<name>.<pid>-<random>.tmp`` is stale when process ``pid`` no longer exists
    (a live process may be writing it right now, so its files are kept). Returns the removed paths.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _tmp_prefix(path)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one save at a time: an old file of ours is stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (owned by someone else), or cannot tell: keep the file
    return True


def is_checkpoint(path) -> bool:
    """True if ``path`` is a file that :func:`save` wrote (a zip with jaxcorr metadata).

    Reads only the metadata, not the arrays, and never raises; a damaged checkpoint whose metadata is
    still readable counts as a checkpoint.
    """
    try:
        with zipfile.ZipFile(os.fspath(path)) as z:
            if "meta.npy" not in z.namelist():
                return False
            with z.open("meta.npy") as f:
                meta = json.loads(np.lib.format.read_array(f, allow_pickle=False).tobytes())
        return meta.get("format") in _FORMATS
    except Exception:  # noqa: BLE001 -- any unreadable file is "not a checkpoint"
        return False


def check_target(path, protect=()) -> None:
    """Check, before training, that :func:`save` can write ``path`` and overwrites nothing precious.

    Args:
      path: the checkpoint path a run will save to.
      protect: paths that must not be overwritten (the run's data file).

    Raises:
      ValueError: ``path`` is a directory, is one of ``protect`` (same file), or is an existing file
        that is not a jaxcorr checkpoint.
      OSError: the directory does not exist or a file cannot be created in it (tried for real, so
        read-only mounts, ``/proc`` and full quotas are caught too).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory; give a file name")
    for other in protect:
        if other is not None and os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other):
            raise ValueError(f"{path!r} is the data file; saving would overwrite the data with a checkpoint")
    if os.path.exists(path) and not is_checkpoint(path):
        raise ValueError(f"{path!r} exists and is not a jaxcorr checkpoint; refusing to overwrite it "
                         "(choose another path, or delete the file)")
    if not os.path.isdir(directory):
        raise OSError(f"directory {directory!r} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(path) + f"{os.getpid()}-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise OSError(f"cannot write in directory {directory!r} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupted or truncated (not a readable .npz: {e})") from None


def _read_member(z: zipfile.ZipFile, name: str) -> np.ndarray:
    """One ``.npy`` member, read in :data:`_BLOCK` pieces into its array; the zip's CRC-32 of the member
    is checked when its last byte is read (zipfile raises ``BadZipFile`` on a mismatch)."""
    with z.open(name) as fp:
        version = np.lib.format.read_magic(fp)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fp)
        if dtype.hasobject:
            raise ValueError("object arrays are not checkpoint data")
        arr = np.empty(shape, dtype, order="F" if fortran else "C")
        mv = memoryview(arr.reshape(-1, order="A")).cast("B") if arr.size else memoryview(bytearray())
        pos = 0
        while pos < len(mv):
            data = fp.read(min(_BLOCK, len(mv) - pos))
            if not data:
                raise EOFError(f"member {name} ends after {pos} of {len(mv)} data bytes")
            mv[pos:pos + len(data)] = data
            pos += len(data)
        if fp.read(1):
            raise ValueError(f"member {name} is longer than its header says")
    return arr


def _read_meta(path: str, z: zipfile.ZipFile) -> dict:
    bad = f"checkpoint {path!r} is corrupted or truncated"
    if "meta.npy" not in z.namelist():
        raise CheckpointError(f"checkpoint {path!r} is not a jaxcorr checkpoint (no meta)")
    try:
        meta = json.loads(_read_member(z, "meta.npy").tobytes())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{bad} (unreadable metadata: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") not in _FORMATS:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {path!r} has format {fmt!r}, expected {FORMAT!r}")
    return meta


def read_meta(path) -> dict:
    """The metadata of a checkpoint (``format``, ``step``, ``config``, ``fingerprint``, ``arrays``)
    without reading its arrays: cheap at any size. The metadata's own CRC-32 is checked; the arrays
    are verified only by :func:`load`.

    Raises:
      CheckpointError: missing, not a checkpoint, or unreadable metadata.

    Examples:
      >>> import jax, optax, tempfile, os
      >>> from jaxcorr import checkpoint, nn, data
      >>> X, y = data.synthetic(0, 4, 3)
      >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
      >>> checkpoint.save(path, nn.init(jax.random.key(0), 16, 3), None, 7, {"m": 16}, X, y)
      >>> meta = checkpoint.read_meta(path)
      >>> meta["step"], meta["arrays"]["W"]
      (7, ['<f4', [16, 3]])
    """
    path = os.fspath(path)
    with _open_zip(path) as z:
        return _read_meta(path, z)


def _read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    bad = f"checkpoint {path!r} is corrupted or truncated"
    with _open_zip(path) as z:
        meta = _read_meta(path, z)
        if meta["format"] == _FORMAT_V1:
            return _read_v1(path)
        listed = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
        crcs = meta.get("crc32") if isinstance(meta.get("crc32"), dict) else {}
        names = set(z.namelist()) - {"meta.npy"}
        if names != {k + ".npy" for k in listed} or set(crcs) != set(listed):
            raise CheckpointError(f"{bad} (its members {sorted(names)} are not the arrays its metadata lists)")
        arrays = {}
        try:
            for k, (dt, shape) in listed.items():
                info = z.getinfo(k + ".npy")
                if [info.CRC, info.file_size] != crcs[k]:
                    raise ValueError(f"the zip directory's CRC-32/size of {k} differ from the metadata's")
                arr = _read_member(z, k + ".npy")
                if arr.dtype.str != dt or list(arr.shape) != shape:
                    raise ValueError(f"{k} is {arr.dtype.str} {arr.shape}, the metadata says {dt} {tuple(shape)}")
                arrays[k] = arr
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{bad} ({e})") from None
    return meta, arrays


def _read_v1(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A ``jaxcorr-checkpoint/1`` file: arrays, ``meta`` and a SHA-256 ``checksum`` over both."""
    with open(path, "rb") as f:
        raw = f.read()
    bad = f"checkpoint {path!r} is corrupted or truncated"
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{bad} (not a readable .npz: {e})") from None
    if "meta" not in arrays or "checksum" not in arrays:
        raise CheckpointError(f"checkpoint {path!r} is not a jaxcorr checkpoint (no meta/checksum)")
    meta_bytes = arrays.pop("meta").tobytes()
    stored = arrays.pop("checksum").tobytes().decode("ascii", "replace")
    if _checksum_v1(meta_bytes, arrays) != stored:
        raise CheckpointError(f"{bad} (checksum mismatch)")
    return json.loads(meta_bytes), arrays


def load(path, *, X=None, y=None, optimizer=None) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save`.

    Args:
      path: the checkpoint file.
      X, y: if given, the data the run continues on; it must be the data the checkpoint was trained on
        (same :func:`fingerprint`).
      optimizer: if given, the optax ``GradientTransformation`` the run continues with; the stored
        state must have the structure, shapes and dtypes of ``optimizer.init(W)``, and is returned in
        that structure. Without it, ``opt_state`` is the flat list of stored leaves.

    Returns:
      A dict with ``params`` (:class:`jaxcorr.nn.Params` of jax arrays), ``opt_state``, ``step``
      (int), ``config`` (dict) and ``fingerprint`` (dict).

    Raises:
      CheckpointError: the file is missing, not a checkpoint, corrupted or truncated, inconsistent
        with its own config, trained on other data, or holds another optimizer's state.
    """
    path = os.fspath(path)
    meta, arrays = _read(path)
    config = meta.get("config") or {}
    W, a = arrays.get("W"), arrays.get("a")
    if W is None or a is None or W.ndim != 2 or a.shape != (W.shape[0],):
        raise CheckpointError(f"checkpoint {path!r} has malformed params")
    m, d = W.shape
    for key, have in (("m", m), ("d", d)):
        if key in config and config[key] != have:
            raise CheckpointError(f"checkpoint {path!r} is inconsistent: config {key}={config[key]} but W is {W.shape}")

    fp = meta.get("fingerprint", {})
    if X is not None or y is not None:
        if X is None or y is None:
            raise ValueError("pass both X and y, or neither")
        _check_data(path, fp, fingerprint(X, y), d)

    leaves = [arrays[_opt_name(i)] for i in range(sum(k.startswith("opt_") for k in arrays))]
    if optimizer is not None:
        ref = optimizer.init(jax.numpy.asarray(W))
        ref_leaves, treedef = jax.tree_util.tree_flatten(ref)
        if len(ref_leaves) != len(leaves):
            raise CheckpointError(
                f"checkpoint {path!r} holds an optimizer state with {len(leaves)} arrays, but this "
                f"optimizer's state has {len(ref_leaves)} (was it saved with another optimizer? it was "
                f"saved with {config.get('optimizer', 'an unrecorded optimizer')!r})"
            )
        for i, (have, want) in enumerate(zip(leaves, ref_leaves)):
            if have.shape != np.shape(want) or have.dtype != np.asarray(want).dtype:
                raise CheckpointError(
                    f"checkpoint {path!r}: optimizer state array {i} has shape {have.shape} {have.dtype}, "
                    f"this optimizer expects {np.shape(want)} {np.asarray(want).dtype}"
                )
        opt_state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
    else:
        opt_state = [jax.numpy.asarray(x) for x in leaves]
    return {
        "params": nn.Params(W=jax.numpy.asarray(W), a=jax.numpy.asarray(a)),
        "opt_state": opt_state,
        "step": int(meta["step"]),
        "config": config,
        "fingerprint": fp,
    }


def _check_data(path: str, saved: dict, given: dict, d: int) -> None:
    if given["X_shape"][1:] != [d]:
        raise CheckpointError(
            f"checkpoint {path!r} has d={d}, but the data has X of shape {tuple(given['X_shape'])}"
        )
    for key in ("X_shape", "y_shape", "dtype"):
        if saved.get(key) != given[key]:
            raise CheckpointError(
                f"checkpoint {path!r} was trained on other data: {key} {saved.get(key)} there, "
                f"{given[key]} here"
            )
    if saved.get("sha256") != given["sha256"]:
        raise CheckpointError(
            f"checkpoint {path!r} was trained on other data of the same shape "
            f"(sha256 {str(saved.get('sha256'))[:12]}... there, {given['sha256'][:12]}... here)"
        )
