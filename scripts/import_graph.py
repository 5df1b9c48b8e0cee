"""The import graph of the jaxcorr package, read from the code (every import, lazy ones included).

    python scripts/import_graph.py            # prints the table docs/architecture.md holds
    python scripts/import_graph.py --check    # exit 1 if docs/architecture.md's table differs
    python scripts/import_graph.py --write    # writes the table into docs/architecture.md

Modules are named without the ``jaxcorr.`` prefix; a package's private modules count as the
package's own (``train._setup`` is ``train``), so the table shows the arrows between concepts.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxcorr"
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"


def unit(module: str) -> str:
    """The concept a module belongs to: a subpackage as a whole, else the module itself."""
    parts = module.split(".")
    return parts[0] if (PKG / parts[0]).is_dir() else module


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """The jaxcorr modules ``path`` imports, relative names resolved."""
    tree = ast.parse(path.read_text())
    pkg_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxcorr."):
                    found.add(a.name[len("jaxcorr."):])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg_parts[: len(pkg_parts) - node.level + 1])
                mod = ".".join(p for p in (base, node.module) if p)
            elif node.module and (node.module == "jaxcorr" or node.module.startswith("jaxcorr.")):
                mod = node.module[len("jaxcorr"):].lstrip(".")
            else:
                continue
            for a in node.names:
                sub = ".".join(p for p in (mod, a.name) if p)
                path_of = PKG / sub.replace(".", "/")
                target = sub if path_of.with_suffix(".py").exists() or path_of.is_dir() else mod
                if target:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    """``{unit: units it imports}`` over every module of the package (the package root left out)."""
    g: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        if not name or name == "__main__":
            continue
        src = unit(name)
        deps = {unit(t) for t in _imports(path, name)} - {src, ""}
        g.setdefault(src, set()).update(deps)
    return g


def table(g: dict[str, set[str]] | None = None) -> str:
    g = graph() if g is None else g
    rows = ["| module | imports |", "|---|---|"]
    rows += [f"| `{m}` | {', '.join(f'`{d}`' for d in sorted(g[m])) or '(nothing of jaxcorr)'} |" for m in sorted(g)]
    return "\n".join(rows)


def cycles(g: dict[str, set[str]] | None = None) -> list[list[str]]:
    """Every import cycle between units (a layered package has none)."""
    g = graph() if g is None else g
    out, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                out.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(g):
        if u not in state:
            visit(u)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    p.add_argument("--write", action="store_true", help="replace docs/architecture.md's table with the code's")
    args = p.parse_args(argv)
    text = table()
    path = ROOT / "docs" / "architecture.md"
    if args.write:
        doc = path.read_text()
        head, rest = doc.split(BEGIN, 1)
        path.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")
        return 0
    if not args.check:
        print(text)
        return 0
    doc = path.read_text()
    got = doc.split(BEGIN, 1)[1].split(END, 1)[0].strip() if BEGIN in doc else ""
    if got != text:
        print("docs/architecture.md's import table differs from the code: run scripts/import_graph.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
