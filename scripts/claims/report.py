"""Render a results.json of scripts/reproduce.py as the Markdown results page (BENCHMARKS.md).

Usage::

    python scripts/claims/report.py docs/figures/results.json BENCHMARKS.md --figures docs/figures \
        --append docs/benchmarks_discussion.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def _cell(v) -> str:
    return _fmt(v).replace("|", "\\|")


def table(rows, cols=None) -> str:
    """A Markdown table of ``rows`` (dicts); columns default to the scalar keys of the first row."""
    cols = cols or [k for k, v in rows[0].items() if not isinstance(v, (list, dict))]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def _header(results, figures):
    m = results["machine"]
    return [
        "# Reproducing the paper's claims",
        "",
        "Alman, Liang, Song, Zhang, Zhuo (NeurIPS 2023) prove bounds and report no experiments. This page",
        "shows each claim measured on a real run of jaxcorr (`scripts/reproduce.py`, one module per claim",
        "group in `scripts/claims/`). Every tolerance was fixed in the module's `TOLERANCES` before the run;",
        "**holds** is computed from the measurement and that tolerance. Upper bounds are tested one-sided",
        "(growing slower than the bound satisfies it), growth only on at least three sizes spanning 16x or",
        "more, in the regime each claim states. *Decided by* says what was compared with the bound:",
        "wall-clock `time`, or a `count` (operations XLA counts in the compiled program, fire counts, loss",
        "values) where the paper's bound counts operations and time on a CPU with caches is not that count;",
        "the figures show the other measure beside it.",
        "",
        f"Regenerate with: `{results['command']} --report BENCHMARKS.md --append docs/benchmarks_discussion.md`",
        "(quick check, same regime with fewer sizes and repeats: `python scripts/reproduce.py --quick --out",
        "/tmp/jaxcorr-quick`; it decides every claim as the full run does).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, caches {_fmt(m.get('caches', {}))} bytes, {m['platform']}; "
        f"Python {m['python']}, jax {m['jax']} ({m['backend']}, {m['device']}, x64={m['x64']}). Run size: "
        f"`{results['size']}`, {results['seconds']['total']:.0f} s in all. Times are medians after "
        "compilation; the machine was shared with other work.",
        "",
    ]


def _summary(claims):
    lines = ["## Summary", "", "| claim | paper | predicted | regime | decided by | measured | tolerance | holds |",
             "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        meas = {k: v for k, v in c["measured"].items() if not isinstance(v, (list, dict)) and k != "method"}
        lines.append(f"| `{c['name']}` | {_cell(c['paper'])} | {_cell(c['predicted'])} | {_cell(c['regime'])} | "
                     f"{c['decided_by']} | {_cell(meas)} | {_cell(c['tolerance'])} | "
                     f"{'**yes**' if c['holds'] else '**no**'} |")
    failed = [c for c in claims if not c["holds"]]
    lines += ["", "**Claims that do not hold:** " + ("none." if not failed else "")]
    lines += [f"- `{c['name']}`: {c['note']}" for c in failed]
    return lines + [""]


def render(results: dict, figures: str = ".") -> str:
    """The Markdown page for ``results``; figure links are ``figures/NAME.png``."""
    claims = results["claims"]
    lines = _header(results, figures) + _summary(claims) + ["## Details", ""]
    seen_fig = set()
    for c in claims:
        lines += [f"### `{c['name']}` ({c['paper']}): {'holds' if c['holds'] else 'does not hold'}", "",
                  f"Regime: {c['regime']}. Decided by: {c['decided_by']}.", ""]
        if c["measured"].get("method"):
            lines += [f"Method: {c['measured']['method']}.", ""]
        if c.get("note"):
            lines += [("Why it does not hold: " if not c["holds"] else "Note: ") + c["note"], ""]
        for key, title in (("rows", None), ("time_rows", "Wall clock (shown, not deciding)")):
            rows = c["measured"].get(key)
            if rows:
                lines += ([f"{title}:", ""] if title else []) + [table(rows), ""]
        fig = c.get("figure")
        if fig and fig not in seen_fig and fig in results.get("figures", []):
            seen_fig.add(fig)
            lines += [f"![{c['name']}]({figures}/{fig})", ""]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines) + "\n"


def write(results: dict, out, *, figures: str = ".", append=None) -> None:
    """Write :func:`render` of ``results`` to ``out``, followed by the text of ``append`` if given."""
    text = render(results, figures)
    if append:
        text += "\n" + Path(append).read_text()
    Path(out).write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results.json written by scripts/reproduce.py")
    p.add_argument("out", help="Markdown file to write")
    p.add_argument("--figures", default=None, help="path of the figures relative to the Markdown file")
    p.add_argument("--append", default=None, help="a Markdown file whose text is appended (discussion)")
    args = p.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    write(results, args.out, figures=args.figures or str(Path(args.results).parent), append=args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
