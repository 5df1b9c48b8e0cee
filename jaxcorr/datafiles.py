"""The user's training data files: ``.npz`` and ``.csv`` read, checked and turned into arrays.

Two formats:

- ``.npz`` with arrays ``X`` (n, d) and ``y`` (n,) (``y`` of shape (n, 1) is accepted);
- ``.csv`` of numbers separated by commas, one data point per row, whose last column is ``y``.
  UTF-8 with or without a byte-order mark; fields may be quoted (``"0.5"``) and padded with
  spaces; blank lines and lines starting with ``#`` are skipped; a first row of text (a field that
  starts like no number) is taken as a header and skipped (``return_info=True`` reports it, so the
  caller can say so). A field is a decimal number: an optional sign, digits with an optional
  decimal point, an optional exponent (``1``, ``-0.5``, ``.5``, ``1e5``, ``2.5E-3``). Python's
  ``float`` also reads ``1_0`` (as 10), ``infinity`` or ``nan``; this reader refuses them, and
  ``0x10`` too, naming the line and the field.

:func:`load_data` checks what the training loop needs (a 2-D ``X`` with at least one row and
column, a ``y`` of the same length, real numbers, all finite) and raises
:class:`jaxcorr.errors.DataError` with one line naming the file and the problem.

Examples:
  >>> import numpy as np, tempfile, os
  >>> from jaxcorr import datafiles
  >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
  >>> _ = open(path, "w").write("x1,x2,y\\n0.6,0.8,1\\n1,0,-1\\n")
  >>> X, y = datafiles.load_data(path)
  >>> X.shape, y.tolist()
  ((2, 2), [1.0, -1.0])
  >>> _ = open(path, "w").write("0.6,0.8,1_0\\n")
  >>> datafiles.load_data(path)
  Traceback (most recent call last):
  ...
  jaxcorr.errors.DataError: data file '...d.csv', line 1: not a row of numbers: field 3 is '1_0' ...
"""

from __future__ import annotations

import csv
import os
import re
import zipfile

import numpy as np

from jaxcorr.errors import DataError

__all__ = ["load_data", "load_inputs", "unit_rows"]


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
      jaxcorr.errors.DataError: no such file, unknown suffix, unreadable or malformed file, a field
        that is not a decimal number (naming its line and field), wrong shapes, X and y of
        different lengths, non-finite values.
    """
    path, ext, info = _open(path)
    if ext == ".npz":
        X, y = _read_npz(path)
    else:
        X, y = _read_csv(path, info)
    X, y = _validate(path, X, y, dtype)
    return (X, y, info) if return_info else (X, y)


def load_inputs(path, d: int | None = None, dtype=np.float32, *, return_info: bool = False):
    """Read the points ``X`` of an ``.npz`` or ``.csv`` file, and its targets ``y`` where it has them:
    the input of a trained model's outputs (``jaxcorr predict``, :func:`jaxcorr.evaluation.predict`).

    - ``.npz``: the array ``X`` (n, d), and ``y`` (n,) when the file holds one.
    - ``.csv``: read as :func:`load_data` reads it; given ``d`` (the model's input dimension), a file
      of ``d`` columns is ``X`` alone and one of ``d + 1`` columns is ``X`` and then ``y``; without
      ``d`` the last column is ``y``, as for :func:`load_data` (a single column: ``X`` alone).

    Args:
      path: the file (``.npz`` or ``.csv``, any case).
      d: the input dimension the points must have (None: any).
      dtype, return_info: as :func:`load_data` (``info`` also says ``targets``: whether ``y`` was read).

    Returns:
      ``(X, y)`` with ``y`` None when the file holds no targets; with ``return_info``, ``(X, y, info)``.

    Raises:
      jaxcorr.errors.DataError: as :func:`load_data`, or points with other than ``d`` coordinates
        (a CSV with neither ``d`` nor ``d + 1`` columns).

    Examples:
      >>> import os, tempfile
      >>> from jaxcorr import datafiles
      >>> path = os.path.join(tempfile.mkdtemp(), "new.csv")
      >>> _ = open(path, "w").write("0.6,0.8\\n1,0\\n")
      >>> X, y = datafiles.load_inputs(path, d=2)
      >>> X.shape, y
      ((2, 2), None)
      >>> datafiles.load_inputs(path, d=3)
      Traceback (most recent call last):
      ...
      jaxcorr.errors.DataError: data file '...new.csv' has 2 columns; ... d=3 needs 3 (X alone) or 4 (X, then y)
    """
    path, ext, info = _open(path)
    if ext == ".npz":
        X, y = _read_npz(path, need_y=False)
    else:
        arr = _read_table(path, info)
        c = arr.shape[1]
        if d is not None and c not in (d, d + 1):
            raise DataError(f"data file {path!r} has {c} columns; a model of input dimension d={d} needs {d} "
                            f"(X alone) or {d + 1} (X, then y)", path)
        if (d is None and c < 2) or c == d:
            X, y = arr, None
        else:
            X, y = arr[:, :-1], arr[:, -1]
    X, y = _validate(path, X, y, dtype)
    if d is not None and X.shape[1] != d:
        raise DataError(f"data file {path!r}: X has {X.shape[1]} columns, but the model's input dimension is "
                        f"d={d}", path)
    info["targets"] = y is not None
    return (X, y, info) if return_info else (X, y)


def _open(path):
    """``(path, suffix, info)`` of a data file that exists and has a known suffix."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path!r} does not exist", path)
    if os.path.isdir(path):
        raise DataError(f"data file {path!r} is a directory", path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".csv"):
        raise DataError(f"data file {path!r}: unknown format {ext or '(no suffix)'!r}; use .npz (arrays X, y) or "
                        f".csv (last column y)", path)
    return path, ext, {"format": ext[1:], "header": None, "header_line": None, "skipped_lines": 0}


def _read_npz(path: str, need_y: bool = True):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("X", "y") if k not in z.files and (need_y or k == "X")]
            if missing:
                raise DataError(
                    f"data file {path!r} has no array {' or '.join(missing)} (it holds "
                    f"{sorted(z.files) or 'nothing'}); "
                    f"an .npz needs arrays X (n, d){' and y (n,)' if need_y else ' (and y (n,) if it has targets)'}",
                    path)
            return z["X"], (z["y"] if "y" in z.files else None)
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise DataError(f"data file {path!r} is not a readable .npz ({e})", path) from None


def _read_csv(path: str, info: dict):
    """``(X, y)`` of a CSV file whose last column is ``y``; fills ``info``."""
    arr = _read_table(path, info)
    if arr.shape[1] < 2:
        raise DataError(f"data file {path!r} needs at least 2 columns (features, then y), got {arr.shape[1]}", path)
    return arr[:, :-1], arr[:, -1]


def _read_table(path: str, info: dict) -> np.ndarray:
    """Rows of numbers from a CSV file (BOM, quoting and a header row handled) as one (n, columns)
    float64 array; fills ``info``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops a byte-order mark
            records = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"data file {path!r} is not a UTF-8 text .csv file", path) from None
    except csv.Error as e:
        raise DataError(f"data file {path!r} is not a readable .csv ({e})", path) from None
    rows = []
    for k, fields in enumerate(records):
        fields = [s.strip() for s in fields]
        if not any(fields) or fields[0].startswith("#"):
            info["skipped_lines"] += 1
            continue
        rows.append((k + 1, fields))  # csv.reader counts records; equal to lines without quoted newlines
    if rows and any(_is_text(f) for f in rows[0][1]):
        info["header_line"], info["header"] = rows[0][0], ",".join(rows[0][1])
        rows = rows[1:]
    if not rows:
        raise DataError(f"data file {path!r} has no data rows", path)
    values = []
    width = None
    for lineno, fields in rows:
        vals = [_number(path, lineno, j, f) for j, f in enumerate(fields)]
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise DataError(f"data file {path!r}, line {lineno}: {len(vals)} columns, the first data row has {width}",
                            path)
        values.append(vals)
    return np.asarray(values, np.float64)


#: A decimal number -- sign, digits with an optional point, optional exponent (no underscores, no hex).
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NONFINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def _is_text(field: str) -> bool:
    """A header's field: not a number, and not starting like one (a sign, a digit or a point)."""
    return not (_DECIMAL.fullmatch(field) or _NONFINITE.fullmatch(field) or field[:1] in set("+-.0123456789"))


def _number(path: str, lineno: int, j: int, field: str) -> float:
    """Field ``j`` (0-based) of line ``lineno`` as a float; a :class:`DataError` naming both if it is
    not a finite decimal number."""
    if _DECIMAL.fullmatch(field):
        return float(field)
    where = f"data file {path!r}, line {lineno}"
    if _NONFINITE.fullmatch(field):
        raise DataError(f"{where}: field {j + 1} is {field!r}, NaN or infinite; the training data must be finite", path)
    why = ("a decimal number has no underscores" if "_" in field else
           "hexadecimal is not read; write it in decimal" if field[1:2] in ("x", "X") or field[2:3] in ("x", "X")
           else "expected a decimal number such as 0.5, -1 or 1e-3")
    raise DataError(f"{where}: not a row of numbers: field {j + 1} is {field!r} ({why})", path)


def _validate(path: str, X, y, dtype):
    """``(X, y)`` checked and converted to ``dtype`` (``y`` None: ``X`` alone, ``y`` stays None)."""
    X, y = np.asarray(X), (None if y is None else np.asarray(y))
    for name, arr in (("X", X), ("y", y)):
        if arr is not None and arr.dtype.kind not in "biuf":
            raise DataError(f"data file {path!r}: {name} must hold real numbers, got dtype {arr.dtype}", path)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise DataError(f"data file {path!r}: X must be a 2-D array (n, d) with n, d >= 1, got shape {X.shape}", path)
    if y is None:
        return _finite(path, np.ascontiguousarray(X, dtype), None, dtype)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"data file {path!r}: y must be a 1-D array (n,), got shape {y.shape}", path)
    if X.shape[0] != y.shape[0]:
        raise DataError(f"data file {path!r}: X has {X.shape[0]} rows but y has {y.shape[0]} entries", path)
    return _finite(path, np.ascontiguousarray(X, dtype), np.ascontiguousarray(y, dtype), dtype)


def _finite(path: str, X, y, dtype):
    for name, arr in (("X", X), ("y", y)):
        bad = 0 if arr is None else int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise DataError(f"data file {path!r}: {name} holds {bad} NaN or infinite value(s) (as "
                            f"{np.dtype(dtype).name})", path)
    return X, y


def unit_rows(X: np.ndarray) -> np.ndarray:
    """``X`` with every row scaled to unit Euclidean norm (the paper assumes ``||x_i|| = 1``).

    Raises:
      ValueError: a row is zero.
    """
    norms = np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    if np.any(norms == 0):
        raise DataError(f"cannot normalise: row {int(np.argmin(norms[:, 0]))} of X is zero")
    return np.ascontiguousarray(X / norms, X.dtype)
