"""List the functions longer than a limit, in lines of code (the project keeps functions <= ~80).

A function's length is the number of its source lines that hold code, from the ``def`` line (a
multi-line signature counts; decorators do not) to its last line: blank lines, comment lines and the
docstring are not counted; a nested function's lines count towards the enclosing one
as well as towards itself (a long nested helper is a long function either way). Methods are named
``Class.method``, nested functions ``outer.<locals>.inner``.

Usage:
  python scripts/check_function_length.py [--limit 80] PATH [PATH ...]

``PATH`` is a ``.py`` file or a directory (searched recursively for ``.py`` files). Prints one line
per offender, ``path:line: name has N code lines (limit L)``, and exits 1 if there is any, else 0.

Examples:
  $ python scripts/check_function_length.py --limit 80 jaxcorr scripts
  jaxcorr/cli.py:417: _train has 141 code lines (limit 80)
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import sys
import tokenize
from collections.abc import Iterator
from typing import NamedTuple


class Length(NamedTuple):
    """One function: where it is, its qualified name and its count of code lines."""

    path: str
    line: int
    name: str
    code_lines: int


def _code_lines(source: str) -> set[int]:
    """Line numbers of ``source`` that hold a token other than a comment or a line break."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(fn: ast.AST) -> set[int]:
    body = getattr(fn, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return set(range(body[0].lineno, body[0].end_lineno + 1))
    return set()


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + node.name
            yield name, node
            yield from _functions(node, name + ".<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def measure(path: str) -> list[Length]:
    """The length of every function (and method) in the Python file ``path``.

    The counted lines run from the ``def`` line (decorators excluded) to the function's last line,
    less the docstring and the lines without code.
    """
    with open(path, encoding="utf-8") as f:
        source = f.read()
    code = _code_lines(source)
    out = []
    for name, fn in _functions(ast.parse(source, filename=path)):
        lines = set(range(fn.lineno, fn.end_lineno + 1)) - _docstring_lines(fn)
        out.append(Length(path, fn.lineno, name, len(lines & code)))
    return out


def python_files(paths: list[str]) -> list[str]:
    """The ``.py`` files named by ``paths`` (files as given, directories searched), sorted."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                files += [os.path.join(root, n) for n in names if n.endswith(".py")]
        elif os.path.exists(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"path {p!r} does not exist")
    return sorted(files)


def offenders(paths: list[str], limit: int) -> list[Length]:
    """The functions in ``paths`` with more than ``limit`` code lines, in file and line order."""
    return [f for path in python_files(paths) for f in measure(path) if f.code_lines > limit]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("paths", nargs="+", help=".py files or directories")
    ap.add_argument("--limit", type=int, default=80, help="most code lines a function may have (default 80)")
    args = ap.parse_args(argv)
    if args.limit < 1:
        ap.error(f"--limit must be >= 1, got {args.limit}")
    try:
        bad = offenders(args.paths, args.limit)
    except FileNotFoundError as e:
        ap.error(str(e))
    for f in bad:
        print(f"{f.path}:{f.line}: {f.name} has {f.code_lines} code lines (limit {args.limit})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
