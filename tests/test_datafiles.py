"""jaxcorr.datafiles.load_data: CSV dialects a user's file comes in (BOM, quotes, CRLF, header, comments)."""

import numpy as np
import pytest

from jaxcorr import datafiles, errors

ROWS = [[0.6, 0.8, 1.0], [1.0, 0.0, -1.0], [0.0, -1.0, 0.5]]
EXPECTED_X = np.array([r[:-1] for r in ROWS], np.float32)
EXPECTED_Y = np.array([r[-1] for r in ROWS], np.float32)


def _csv(rows, quote=False):
    q = '"' if quote else ""
    return "\n".join(",".join(f"{q}{v}{q}" for v in r) for r in rows) + "\n"


@pytest.mark.parametrize(
    "name, text, header",
    [
        ("plain", _csv(ROWS), None),
        ("bom", "\ufeff" + _csv(ROWS), None),  # a BOM must not turn the first row into a "header"
        ("quoted", _csv(ROWS, quote=True), None),
        ("crlf", _csv(ROWS).replace("\n", "\r\n"), None),
        ("header", "x1,x2,y\n" + _csv(ROWS), "x1,x2,y"),
        ("bom_header_quoted", '\ufeff"x1","x2","y"\n' + _csv(ROWS, quote=True), "x1,x2,y"),
        ("comments_blank", "# made by hand\n\n" + _csv(ROWS) + "\n", None),
    ],
)
def test_csv_dialects(tmp_path, name, text, header):
    path = tmp_path / f"{name}.csv"
    path.write_bytes(text.encode("utf-8"))
    X, y, info = datafiles.load_data(path, return_info=True)
    np.testing.assert_array_equal(X, EXPECTED_X)
    np.testing.assert_array_equal(y, EXPECTED_Y)
    assert info["header"] == header
    assert info["header_line"] == (None if header is None else 1)


def test_load_data_without_info_returns_two_arrays(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(_csv(ROWS))
    X, y = datafiles.load_data(path)
    assert X.shape == (3, 2) and y.shape == (3,)


def test_bad_row_after_quotes_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('"1","2","3"\n"4","five","6"\n')
    with pytest.raises(ValueError, match="line 2: not a row of numbers"):
        datafiles.load_data(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xff\xfe1,2\n")
    with pytest.raises(ValueError, match="not a UTF-8 text"):
        datafiles.load_data(path)


@pytest.mark.parametrize("field, why", [
    ("1_0", "no underscores"),  # Python's float reads it as 10
    ("0x10", "hexadecimal"),
    ("1e", "decimal number"),
    ("", "decimal number"),
    ("1.0.0", "decimal number"),
])
def test_strict_numbers_refuse_what_float_would_guess(tmp_path, field, why):
    path = tmp_path / "d.csv"
    path.write_text(f"0.5,1,2\n1,{field},3\n")
    with pytest.raises(errors.DataError, match=f"line 2: not a row of numbers: field 2 is '{field}'") as e:
        datafiles.load_data(path)
    assert why in str(e.value) and e.value.path == str(path)


@pytest.mark.parametrize("field", ["inf", "-Infinity", "nan", "NaN"])
def test_non_finite_fields_are_refused_by_name(tmp_path, field):
    path = tmp_path / "d.csv"
    path.write_text(f"1,2,3\n4,5,{field}\n")
    with pytest.raises(errors.DataError, match=f"line 2: field 3 is '{field}', NaN or infinite"):
        datafiles.load_data(path)


def test_decimal_siblings_are_read(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(" 1.0 , -0.5,1e5\n.5,+2,2.5E-3\n")
    X, y = datafiles.load_data(path, np.float64)
    np.testing.assert_array_equal(X, [[1.0, -0.5], [0.5, 2.0]])
    np.testing.assert_array_equal(y, [1e5, 2.5e-3])


def test_errors_are_data_errors(tmp_path):
    with pytest.raises(errors.DataError, match="does not exist"):
        datafiles.load_data(tmp_path / "none.csv")
    (tmp_path / "a.npz").write_text("hello")
    with pytest.raises(errors.DataError, match="not a readable .npz"):
        datafiles.load_data(tmp_path / "a.npz")
