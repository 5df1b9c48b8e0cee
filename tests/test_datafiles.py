"""jaxcorr.datafiles.load_data: CSV dialects a user's file comes in (BOM, quotes, CRLF, header, comments)."""

import numpy as np
import pytest

from jaxcorr import datafiles

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
