"""The checkpoint container: one uncompressed ``.npz`` (zip) file, written atomically, checksummed.

(About 530 lines: writing, reading both formats, temporaries, target checks and the lock are one file format.)

A file holds named ``.npy`` members and ``meta.npy`` (UTF-8 JSON: the format tag, the forms' own
metadata, the shape, dtype and CRC-32 of every array). Every member carries the zip's CRC-32 of its
bytes, ``meta`` repeats each array's CRC-32 and size, and the zip's directory must list exactly the
members ``meta`` names, so a flipped bit anywhere and any truncation raise
:class:`jaxcorr.errors.CheckpointError` (every exception a reader can raise on a damaged file is
turned into it). Arrays of the ``ml_dtypes`` types (bfloat16, float8, ...) are stored as unsigned
integers of their width with the dtype's name in ``meta["views"]`` and come back with their dtype.
Format ``jaxcorr-checkpoint/1`` files (a SHA-256 over every array) are still read.

``write`` writes a temporary file in the target directory, flushes and fsyncs it, then renames it
over the target with :func:`os.replace`, so a crash during a save leaves the previous checkpoint
intact. The temporary file is named ``.<name>.<pid>-<random>.tmp``; the next save of the same path
removes every such file whose process is gone. :func:`lock` holds ``path + ".lock"`` (``flock``) so
that a second writer of the same path is refused with a ``CheckpointError`` instead of losing one
run's work silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcorr.errors import CheckpointError

__all__ = ["FORMAT", "write", "read", "read_meta", "fingerprint", "is_checkpoint", "check_target", "lock",
           "check_data"]

FORMAT = "jaxcorr-checkpoint/2"
_FORMAT_V1 = "jaxcorr-checkpoint/1"  # SHA-256 over every array; still read
_FORMATS = (FORMAT, _FORMAT_V1)
#: Bytes handed to one ``write`` (and one CRC-32 update): large enough that per-call costs vanish.
_BLOCK = 64 << 20


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


def _encode(name: str, arr: np.ndarray, views: dict) -> np.ndarray:
    """``arr`` as numpy can store it: an ``ml_dtypes`` array (bfloat16, float8, ...) as unsigned ints
    of its width, its dtype's name recorded in ``views``."""
    if arr.dtype.type.__module__.split(".")[0] == "ml_dtypes" and arr.dtype.itemsize in (1, 2, 4, 8):
        views[name] = arr.dtype.name
        return arr.view(f"<u{arr.dtype.itemsize}")
    return arr


def _decode(arr: np.ndarray, name: str | None) -> np.ndarray:
    if name is None:
        return arr
    import ml_dtypes  # noqa: PLC0415 -- a dependency of jax

    dt = np.dtype(getattr(ml_dtypes, name))
    if not isinstance(name, str) or dt.itemsize != arr.dtype.itemsize:
        raise ValueError(f"stored view {arr.dtype} cannot hold dtype {name}")
    return arr.view(dt)


def write(path, arrays: dict, meta: dict, *, timings: dict | None = None) -> None:
    """Write ``arrays`` (name -> array) and ``meta`` (JSON) to ``path`` atomically (temporary file,
    fsync, rename), refusing while another process holds :func:`lock` on ``path``.

    ``meta`` gains ``format``, ``arrays`` (dtype and shape of each), ``views`` (``ml_dtypes``
    arrays) and ``crc32``.

    Args:
      path: target file; its directory must exist. Written exactly at this name.
      arrays: the arrays (host or device).
      meta: JSON-serialisable metadata.
      timings: if a dict, it receives the seconds spent in each phase: ``host`` (arrays to host
        memory), ``write`` (CRC-32 and writing, streamed together), ``fsync``, ``rename``, ``bytes``.

    Raises:
      OSError: the file cannot be written (the previous checkpoint, if any, is left as it was).
      ValueError: ``meta`` is not JSON-serialisable.
      CheckpointError: another process holds the path's lock.
    """
    clock = _Clock(timings)
    views: dict = {}
    host = {k: _encode(k, np.asarray(v), views) for k, v in arrays.items()}
    meta = dict(meta, format=FORMAT, arrays={k: [v.dtype.str, list(v.shape)] for k, v in host.items()})
    if views:
        meta["views"] = views
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"config must be JSON-serialisable: {e}") from None
    clock.lap("host")
    path = os.fspath(path)
    with lock(path):
        nbytes = _write_atomic(path, host, meta, clock)
    if timings is not None:
        timings["bytes"] = nbytes


def write_atomically(path: str, write: Callable[[Any], Any], *, prefix: str | None = None):
    """``write(file)`` into a temporary file beside ``path``, then rename it over ``path``: a reader
    sees the old file or the new one, never part of one. The new file gets the permissions a newly
    created one would (0o666 less the umask); on any error the temporary file is removed. Returns
    what ``write`` returns."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "." if prefix is None else prefix
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            out = write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def _write_atomic(path: str, arrays: dict, meta: dict, clock) -> int:
    _remove_stale_temporaries(path)

    def write(f) -> int:
        nbytes = _write_npz(f, arrays, meta)
        f.flush()
        clock.lap("write")
        os.fsync(f.fileno())
        clock.lap("fsync")
        return nbytes

    nbytes = write_atomically(path, write, prefix=_tmp_prefix(path) + f"{os.getpid()}-")
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    clock.lap("rename")
    return nbytes


#: Locks this process holds -- absolute path -> [file descriptor, depth] (a holder may save inside its lock).
_HELD: dict = {}


@contextlib.contextmanager
def lock(path):
    """Hold the writer's lock of checkpoint ``path`` (``flock`` on ``path + ".lock"``) for the block.

    A run that saves to ``path`` holds it for its whole life; ``write`` takes it for each save
    (re-entrant within one process). The lock file is removed when the block ends; the lock is
    released when the block ends or the process dies.

    Raises:
      CheckpointError: another process holds the lock (a second run saving to the same path).

    Examples:
      >>> import os, tempfile
      >>> from jaxcorr import checkpoint
      >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
      >>> with checkpoint.lock(path):
      ...     pass
    """
    key = os.path.abspath(os.fspath(path))
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(key + ".lock", path)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        try:
            os.unlink(key + ".lock")  # still holding it: a process that opened this file retries
        except OSError:
            pass
        os.close(fd)


def _acquire(name: str, path) -> int:
    """The locked descriptor of lock file ``name`` (the file at that name when locked: one removed by
    its releasing holder meanwhile is opened again)."""
    while True:
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} is being written by another run (process "
                                  f"{holder} holds {name}); save to another path", path) from None
        try:
            same = os.stat(name).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


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
        if math.prod(shape) * dtype.itemsize > z.getinfo(name).file_size:
            raise ValueError(f"member {name}'s header says {shape} {dtype}, more than its "
                             f"{z.getinfo(name).file_size} bytes")
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
    except Exception as e:  # noqa: BLE001 -- whatever a damaged member makes the readers raise
        raise CheckpointError(f"{bad} (unreadable metadata: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") not in _FORMATS:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {path!r} has format {fmt!r}, expected {FORMAT!r}", path)
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
      >>> checkpoint.save(path, nn.init(jax.random.key(0), 16, 3), X=X, y=y, step=7)
      'full'
      >>> meta = checkpoint.read_meta(path)
      >>> meta["step"], meta["arrays"]["W"]
      (7, ['<f4', [16, 3]])
    """
    path = os.fspath(path)
    try:
        with _open_zip(path) as z:
            return _read_meta(path, z)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 -- a damaged file can make zipfile raise anything
        raise CheckpointError(f"checkpoint {path!r} is corrupted or truncated ({type(e).__name__}: {e})",
                              path) from None


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of the checkpoint at ``path``, every checksum verified.

    Raises:
      CheckpointError: missing, not a checkpoint, corrupted or truncated (whatever the damage).
    """
    path = os.fspath(path)
    try:
        return _read(path)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 -- a damaged file can make zipfile/numpy raise anything
        raise CheckpointError(f"checkpoint {path!r} is corrupted or truncated ({type(e).__name__}: {e})",
                              path) from None


def _read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    bad = f"checkpoint {path!r} is corrupted or truncated"
    with _open_zip(path) as z:
        meta = _read_meta(path, z)
        if meta["format"] == _FORMAT_V1:
            return _read_v1(path)
        listed = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
        views = meta.get("views") if isinstance(meta.get("views"), dict) else {}
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
                arrays[k] = _decode(arr, views.get(k))
        except Exception as e:  # noqa: BLE001 -- whatever a damaged member makes the readers raise
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
    except Exception as e:  # noqa: BLE001 -- whatever a damaged member makes numpy raise
        raise CheckpointError(f"{bad} (not a readable .npz: {e})") from None
    if "meta" not in arrays or "checksum" not in arrays:
        raise CheckpointError(f"checkpoint {path!r} is not a jaxcorr checkpoint (no meta/checksum)")
    meta_bytes = arrays.pop("meta").tobytes()
    stored = arrays.pop("checksum").tobytes().decode("ascii", "replace")
    if _checksum_v1(meta_bytes, arrays) != stored:
        raise CheckpointError(f"{bad} (checksum mismatch)")
    return json.loads(meta_bytes), arrays


def check_data(path, saved: dict, X, y, d: int) -> None:
    """CheckpointError unless ``(X, y)`` has the fingerprint ``saved`` (the data a checkpoint was trained on)."""
    if X is None and y is None:
        return
    if X is None or y is None:
        raise ValueError("pass both X and y, or neither")
    _check_data(os.fspath(path), saved, fingerprint(X, y), d)


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
