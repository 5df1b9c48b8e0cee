"""Loading the user's training data from a file.

Two formats:

- ``.npz`` with arrays ``X`` (n, d) and ``y`` (n,) (``y`` of shape (n, 1) is accepted);
- ``.csv`` of numbers separated by commas, one data point per row, whose last column is ``y``.
  UTF-8 with or without a byte-order mark; fields may be quoted (``"0.5"``); blank lines and lines
  starting with ``#`` are skipped; a first row that is not numeric is taken as a header and skipped
  (``return_info=True`` reports it, so the caller can say so).

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

import csv
import os
import zipfile

import numpy as np

__all__ = ["load_data", "unit_rows"]


def load_data(path, dtype=np.float32, *, return_info: bool = False):
    """Read ``(X, y)`` from an ``.npz`` or ``.csv`` file and validate it.

    Args:
      path: the file; its suffix (``.npz`` or ``.csv``, any case) selects the format.
      dtype: floating dtype of the returned arrays.
      return_info: also return a dict describing what was read: ``format`` (``"npz"``/``"csv"``),
        ``header`` (the skipped CSV header row as text, or None), ``header_line`` (its 1-based line
        number, or None) and ``skipped_lines`` (blank and ``#`` comment lines).

    Returns:
      ``X`` of shape (n, d) and ``y`` of shape (n,), both ``dtype``, C-contiguous; with
      ``return_info``, ``(X, y, info)``.

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
    info = {"format": ext[1:], "header": None, "header_line": None, "skipped_lines": 0}
    if ext == ".npz":
        X, y = _read_npz(path)
    elif ext == ".csv":
        X, y = _read_csv(path, info)
    else:
        raise ValueError(f"data file {path!r}: unknown format {ext or '(no suffix)'!r}; use .npz (arrays X, y) or .csv (last column y)")
    X, y = _validate(path, X, y, dtype)
    return (X, y, info) if return_info else (X, y)


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


def _read_csv(path: str, info: dict):
    """Rows of numbers from a CSV file (BOM, quoting and a header row handled); fills ``info``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops a byte-order mark
            records = list(csv.reader(f))
    except UnicodeDecodeError:
        raise ValueError(f"data file {path!r} is not a UTF-8 text .csv file") from None
    except csv.Error as e:
        raise ValueError(f"data file {path!r} is not a readable .csv ({e})") from None
    rows = []
    for k, fields in enumerate(records):
        fields = [s.strip() for s in fields]
        if not any(fields) or fields[0].startswith("#"):
            info["skipped_lines"] += 1
            continue
        rows.append((k + 1, fields))  # csv.reader counts records; equal to lines without quoted newlines
    if rows and _numbers(rows[0][1]) is None:
        info["header_line"], info["header"] = rows[0][0], ",".join(rows[0][1])
        rows = rows[1:]
    if not rows:
        raise ValueError(f"data file {path!r} has no data rows")
    values = []
    width = None
    for lineno, fields in rows:
        vals = _numbers(fields)
        if vals is None:
            text = ",".join(fields)
            raise ValueError(f"data file {path!r}, line {lineno}: not a row of numbers: {text[:60]!r}")
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise ValueError(f"data file {path!r}, line {lineno}: {len(vals)} columns, the first data row has {width}")
        values.append(vals)
    if width < 2:
        raise ValueError(f"data file {path!r} needs at least 2 columns (features, then y), got {width}")
    arr = np.asarray(values, np.float64)
    return arr[:, :-1], arr[:, -1]


def _numbers(fields: list[str]):
    """The fields as floats, or None if one is not a number."""
    try:
        return [float(s) for s in fields]
    except ValueError:
        return None


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
