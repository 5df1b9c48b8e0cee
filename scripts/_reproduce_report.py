"""Render a results.json of scripts/reproduce.py as the Markdown results page (BENCHMARKS.md).

Usage::

    python scripts/_reproduce_report.py docs/figures/results.json BENCHMARKS.md --figures docs/figures
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


def _table(rows, cols):
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


_DATA_TABLES = {
    "init_cost_m": ["n", "m", "d", "dtree_ms", "wtree_ms"],
    "init_cost_n": ["n", "m", "d", "dtree_ms", "wtree_ms"],
    "update_cost_dtree": ["n", "m", "d", "dtree_us", "wtree_us"],
    "query_cost_size": ["n", "m", "S", "ms", "us_per_tree"],
    "query_cost_m": ["n", "m", "S", "ms", "us_per_tree"],
    "sparsity_init": ["m", "b", "k_mean", "k_max", "m_exp_bound", "m_4_5", "k_max_over_bound"],
    "sparsity_train": ["m", "b", "k_max_t0", "k_max_all_t", "m_exp_bound", "ratio", "union_max"],
    "step_cost_dtree": ["n", "m", "d", "steps", "dense_ms", "dtree_ms", "wtree_ms"],
    "reduction_cost": ["n", "m", "d", "iterations", "updates", "queries", "s", "s_per_iteration", "brute_s"],
}


def render(results: dict, figures: str = ".") -> str:
    m = results["machine"]
    claims = results["claims"]
    lines = [
        "# Reproducing the paper's claims",
        "",
        "Alman, Liang, Song, Zhang, Zhuo (NeurIPS 2023) prove bounds and report no experiments. This page",
        "shows each claim measured on a real run of jaxcorr. Every tolerance was written down in",
        "`scripts/reproduce.py` (`TOLERANCES`) before the run; **holds** is computed from the measurement",
        "and that tolerance. Claims that do not hold are reported as measured, with the reason below.",
        "",
        f"Regenerate with: `{results['command']}` then "
        f"`python scripts/_reproduce_report.py {figures}/results.json BENCHMARKS.md --figures {figures} "
        f"--append docs/benchmarks_discussion.md`",
        "(quick check, under 5 minutes on 2 cores: `python scripts/reproduce.py --quick --out /tmp/jaxcorr-quick`).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, jax {m['jax']} "
        f"({m['backend']}, {m['device']}, x64={m['x64']}). Run size: `{results['size']}`, "
        f"{results['seconds']['total']:.0f} s in all. Times are medians after compilation; the machine was "
        "shared with other work, so single points carry noise.",
        "",
        "## Summary",
        "",
        "| claim | paper | predicted | measured | tolerance | holds |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        meas = {k: v for k, v in c["measured"].items() if k not in ("rows", "method")}
        lines.append(
            f"| `{c['name']}` | {c['paper']} | {_cell(c['predicted'])} | {_cell(meas)} | {_cell(c['tolerance'])} | "
            f"{'**yes**' if c['holds'] else '**no**'} |"
        )
    lines += ["", "## Details", ""]
    seen_fig = set()
    for c in claims:
        lines += [f"### `{c['name']}` ({c['paper']}): {'holds' if c['holds'] else 'does not hold'}", ""]
        if "method" in c["measured"]:
            lines += [f"Method: {c['measured']['method']}.", ""]
        rows = c["measured"].get("rows")
        if rows and c["name"] in _DATA_TABLES:
            lines += [_table(rows, [k for k in _DATA_TABLES[c["name"]] if k in rows[0]]), ""]
        fig = c.get("figure")
        if fig and fig not in seen_fig and fig in results.get("figures", []):
            seen_fig.add(fig)
            lines += [f"![{c['name']}]({figures}/{fig})", ""]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="results.json written by scripts/reproduce.py")
    p.add_argument("out", help="Markdown file to write")
    p.add_argument("--figures", default=None, help="path of the figures relative to the Markdown file")
    p.add_argument("--append", default=None, help="a Markdown file whose text is appended (discussion)")
    args = p.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    figures = args.figures or str(Path(args.results).parent)
    text = render(results, figures)
    if args.append:
        text += "\n" + Path(args.append).read_text()
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
