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
      jaxcorr.errors.DataError: no such file, unknown suffix, unreadable or malformed file, a field
        that is not a decimal number (naming its line and field), wrong shapes, X and y of
        different lengths, non-finite values.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path!r} does not exist", path)
    if os.path.isdir(path):
        raise DataError(f"data file {path!r} is a directory", path)
    ext = os.path.splitext(path)[1].lower()
    info = {"format": ext[1:], "header": None, "header_line": None, "skipped_lines": 0}
    if ext == ".npz":
        X, y = _read_npz(path)
    elif ext == ".csv":
        X, y = _read_csv(path, info)
    else:
        raise DataError(f"data file {path!r}: unknown format {ext or '(no suffix)'!r}; use .npz (arrays X, y) or "
                        f".csv (last column y)", path)
    X, y = _validate(path, X, y, dtype)
    return (X, y, info) if return_info else (X, y)


def _read_npz(path: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("X", "y") if k not in z.files]
            if missing:
                raise DataError(
                    f"data file {path!r} has no array {' or '.join(missing)} (it holds "
                    f"{sorted(z.files) or 'nothing'}); "
                    "an .npz needs arrays X (n, d) and y (n,)", path)
            return z["X"], z["y"]
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise DataError(f"data file {path!r} is not a readable .npz ({e})", path) from None


def _read_csv(path: str, info: dict):
    """Rows of numbers from a CSV file (BOM, quoting and a header row handled); fills ``info``."""
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
    if width < 2:
        raise DataError(f"data file {path!r} needs at least 2 columns (features, then y), got {width}", path)
    arr = np.asarray(values, np.float64)
    return arr[:, :-1], arr[:, -1]


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
    X, y = np.asarray(X), np.asarray(y)
    for name, arr in (("X", X), ("y", y)):
        if arr.dtype.kind not in "biuf":
            raise DataError(f"data file {path!r}: {name} must hold real numbers, got dtype {arr.dtype}", path)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise DataError(f"data file {path!r}: X must be a 2-D array (n, d) with n, d >= 1, got shape {X.shape}", path)
    if y.ndim != 1:
        raise DataError(f"data file {path!r}: y must be a 1-D array (n,), got shape {y.shape}", path)
    if X.shape[0] != y.shape[0]:
        raise DataError(f"data file {path!r}: X has {X.shape[0]} rows but y has {y.shape[0]} entries", path)
    X = np.ascontiguousarray(X, dtype)
    y = np.ascontiguousarray(y, dtype)
    for name, arr in (("X", X), ("y", y)):
        bad = int(arr.size - np.isfinite(arr).sum())
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
