"""Loading the user's training data from a file.

Two formats:

- ``.npz`` with arrays ``X`` (n, d) and ``y`` (n,) (``y`` of shape (n, 1) is accepted);
- ``.csv`` of numbers separated by commas, one data point per row, whose last column is ``y``;
  a first row that is not numeric is taken as a header and skipped.

:func:`load_data` checks what the training loop needs (a 2-D ``X`` with at least one row and
column, a ``y`` of the same length, real numbers, all finite) and raises ``ValueError`` (or
``FileNotFoundError``) with one line naming the file and the problem.

Examples:
  >>> import numpy as np, tempfile, os
  >>> from jaxcorr import io
  >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
  >>> _ = open(path, "w").write("x1,x2,y\\n0.6,0.8,1\\n1,0,-1\\n")
  >>> X, y = io.load_data(path)
  >>> X.shape, y.tolist()
  ((2, 2), [1.0, -1.0])
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

__all__ = ["load_data", "unit_rows"]


def load_data(path, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(X, y)`` from an ``.npz`` or ``.csv`` file and validate it.

    Args:
      path: the file; its suffix (``.npz`` or ``.csv``, any case) selects the format.
      dtype: floating dtype of the returned arrays.

    Returns:
      ``X`` of shape (n, d) and ``y`` of shape (n,), both ``dtype``, C-contiguous.

    Raises:
      FileNotFoundError: no such file.
      ValueError: unknown suffix, unreadable or malformed file, wrong shapes, X and y of different
        lengths, non-numeric or non-finite values.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"data file {path!r} is a directory")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        X, y = _read_npz(path)
    elif ext == ".csv":
        X, y = _read_csv(path)
    else:
        raise ValueError(f"data file {path!r}: unknown format {ext or '(no suffix)'!r}; use .npz (arrays X, y) or .csv (last column y)")
    return _validate(path, X, y, dtype)


def _read_npz(path: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("X", "y") if k not in z.files]
            if missing:
                raise ValueError(
                    f"data file {path!r} has no array {' or '.join(missing)} (it holds {sorted(z.files) or 'nothing'}); "
                    "an .npz needs arrays X (n, d) and y (n,)"
                )
            return z["X"], z["y"]
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"data file {path!r} is not a readable .npz ({e})") from None
    except ValueError as e:
        if str(e).startswith(f"data file {path!r}"):
            raise
        raise ValueError(f"data file {path!r} is not a readable .npz ({e})") from None


def _read_csv(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except UnicodeDecodeError:
        raise ValueError(f"data file {path!r} is not a text .csv file") from None
    rows = [(k + 1, ln) for k, ln in enumerate(lines) if ln and not ln.startswith("#")]
    if rows and not _numeric(rows[0][1]):
        rows = rows[1:]  # header
    if not rows:
        raise ValueError(f"data file {path!r} has no data rows")
    values = []
    width = None
    for lineno, ln in rows:
        fields = [s.strip() for s in ln.split(",")]
        try:
            vals = [float(s) for s in fields]
        except ValueError:
            raise ValueError(f"data file {path!r}, line {lineno}: not a row of numbers: {ln[:60]!r}") from None
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise ValueError(f"data file {path!r}, line {lineno}: {len(vals)} columns, the first data row has {width}")
        values.append(vals)
    if width < 2:
        raise ValueError(f"data file {path!r} needs at least 2 columns (features, then y), got {width}")
    arr = np.asarray(values, np.float64)
    return arr[:, :-1], arr[:, -1]


def _numeric(line: str) -> bool:
    try:
        [float(s) for s in line.split(",")]
    except ValueError:
        return False
    return True


def _validate(path: str, X, y, dtype):
    X, y = np.asarray(X), np.asarray(y)
    for name, arr in (("X", X), ("y", y)):
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"data file {path!r}: {name} must hold real numbers, got dtype {arr.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"data file {path!r}: X must be a 2-D array (n, d) with n, d >= 1, got shape {X.shape}")
    if y.ndim != 1:
        raise ValueError(f"data file {path!r}: y must be a 1-D array (n,), got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"data file {path!r}: X has {X.shape[0]} rows but y has {y.shape[0]} entries")
    X = np.ascontiguousarray(X, dtype)
    y = np.ascontiguousarray(y, dtype)
    for name, arr in (("X", X), ("y", y)):
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise ValueError(f"data file {path!r}: {name} holds {bad} NaN or infinite value(s) (as {np.dtype(dtype).name})")
    return X, y


def unit_rows(X: np.ndarray) -> np.ndarray:
    """``X`` with every row scaled to unit Euclidean norm (the paper assumes ``||x_i|| = 1``).

    Raises:
      ValueError: a row is zero.
    """
    norms = np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"cannot normalise: row {int(np.argmin(norms[:, 0]))} of X is zero")
    return np.ascontiguousarray(X / norms, X.dtype)
