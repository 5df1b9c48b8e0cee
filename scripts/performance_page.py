"""Write docs/performance.md and its figures from the measured JSON in docs/bench/.

One table per measure, each with the command that measured it and the machine it ran on; the page is
regenerated, never edited by hand, so it always shows the current files.

    python scripts/performance_page.py            # docs/performance.md, docs/figures/speed_vs_m.png, ...
    python scripts/performance_page.py --check    # exit 1 if docs/performance.md is not what the JSON gives
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "docs" / "bench"
FIGURES = ROOT / "docs" / "figures"
METHODS = ("dense", "active", "dtree", "wtree")


def _load(name: str):
    path = BENCH / name
    return json.loads(path.read_text()) if path.exists() else None


def _machine(m: dict) -> str:
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('backend', '?')} backend, "
            f"JAX {m.get('jax', '?')}, Python {m.get('python', '?')}, x64={m.get('x64', False)}")


def _pow(m: int) -> str:
    k = int(m).bit_length() - 1
    return f"2^{k}" if 1 << k == int(m) else str(m)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _train_section(d: dict) -> list[str]:
    args = d["args"]
    cmd = (f"python scripts/bench_train.py --ms {args['ms']} --steps {args['steps']} --repeats {args['repeats']} "
           f"--out docs/bench/bench_train.json")
    out = ["## Training steps: dense, active, dtree, wtree", "",
           f"Time per training step (`fit`'s `ms_per_step`, set-up excluded), n={args['n']}, d={args['d']}, "
           "b = sqrt(0.4 ln m); every method side by side in one process, interleaved; median (and minimum) "
           f"of {args['repeats']} calls of {args['steps']} steps after compilation. The ratio is dense's median "
           "over the method's median.", "", f"Command: `{cmd}`. Machine: {_machine(d['machine'])}.", ""]
    present = {r["optimizer"] for r in d["rows"]}
    for opt in [o for o in ("sgd", "momentum", "adam") if o in present] + sorted(present - {"sgd", "momentum", "adam"}):
        rows = [r for r in d["rows"] if r["optimizer"] == opt]
        if not rows:
            continue
        used = rows[0].get("optimizer_used", opt)
        body = []
        for m in sorted({r["m"] for r in rows}):
            by = {r["method"]: r for r in rows if r["m"] == m}
            dense = by.get("dense", {}).get("ms_per_step")
            cells = [_pow(m)]
            for meth in METHODS:
                r = by.get(meth)
                if r is None:
                    cells.append("")
                    continue
                ratio = f", {dense / r['ms_per_step']:.0f}x" if dense and meth != "dense" else ""
                cells.append(f"{r['ms_per_step']:.2f} ({r['ms_per_step_min']:.2f}){ratio}")
            any_r = next(iter(by.values()))
            cells += [f"{any_r.get('fire_union_t0', '')}",
                      " / ".join(f"{by[k]['max_rel_loss_diff_vs_dense']:.1e}" for k in METHODS[1:] if k in by)]
            body.append(cells)
        out += [f"**{opt}** (`{used}`), ms/step median (min), x dense:", ""]
        out += _table(["m", *METHODS, "\\|A\\|", "max rel. loss diff to dense (active / dtree / wtree)"], body)
        out.append("")
    out += ["![ms per step against m, every method](figures/speed_vs_m.png)", ""]
    return out


def _width_section(d: dict) -> list[str]:
    runs = [r for r in d["runs"] if r.get("mode") != "dense" and "ms_per_step" in r]
    dense = {r["m"]: r for r in d["runs"] if r.get("mode") == "dense" and "ms_per_step" in r}
    body = []
    for r in sorted(runs, key=lambda r: r["m"]):
        dn = dense.get(r["m"])
        body.append([_pow(r["m"]), f"{r['setup_s']:.1f}", f"{r['ms_per_step']:.1f}", f"{r['n_active']:,}",
                     f"{r['peak_bytes'] / 2**30:.2f}",
                     f"{dn['ms_per_step']:.0f} ms, {dn['peak_bytes'] / 2**30:.2f} GiB" if dn else "does not fit"])
    if any(r.get("steps") != runs[0].get("steps") for r in runs):
        pass
    return ["## Widths beyond memory (the wide model)", "",
            f"{d['method']} method, n={d['n']}, d={d['d']}, the wide model of `jaxcorr.wide` (W(0) a function "
            "of its key, only the rows that can fire held); peak resident memory from the OS.", "",
            "Command: `python scripts/bench_width.py --ms 22,23,24,25,26,27 --out docs/bench/bench_width.json`. "
            f"Machine: {_machine(d['machine'])}.", ""] + _table(
        ["m", "set-up s", "ms/step", "\\|A\\|", "peak GiB", "dense: ms/step, peak"], body) + [
        "", "![set-up and step time against m, wide model](figures/width_vs_m.png)", ""]


def _trees_section(d: dict) -> list[str]:
    init = {r["m"]: r for r in d["init"]}
    upd = {r["m"]: r for r in d["update"]}
    q = {r["m"]: r for r in d["query_vs_m"]}
    body = [[_pow(m), f"{init[m]['dtree_ms']:.1f}", f"{init[m]['wtree_ms']:.1f}", f"{upd[m]['dtree_us']:.1f}",
             f"{upd[m]['wtree_us']:.1f}", f"{q[m]['tree_ms']:.2f}", f"{q[m]['linear_ms']:.1f}",
             f"{q[m]['speedup']:.0f}x"] for m in sorted(init) if m in upd and m in q]
    sbody = [[f"{r['S_mean']:.0f}", r["capacity"], f"{r['tree_ms']:.2f}", f"{r['linear_ms']:.1f}",
              f"{r['speedup']:.0f}x"] for r in d["query_vs_S"]]
    return ["## Correlation trees", "",
            f"n={d['n']}, d={d['d']}. Init: DTree/WTree INIT (Theorems 3.1, 3.2). Update: 16 random neurons, "
            "amortised over 256 batches inside one jitted `lax.scan` with a donated carry. Query: all n "
            "trees, about 1024 leaves above the threshold per tree, against a linear scan of the inner "
            "products.", "",
            f"Command: `python scripts/bench_trees.py --repeats {d['repeats']} --out docs/bench/bench_trees.json`. "
            f"Machine: {_machine(d['machine'])}.", ""] + _table(
        ["m", "init DTree ms", "init WTree ms", "update DTree us", "update WTree us", "query ms",
         "linear scan ms", "speed-up"], body) + [
        "", f"Query against \\|S\\| at m = {_pow(d['query_vs_S'][0]['m'])}:", ""] + _table(
        ["\\|S\\| per tree", "capacity", "tree ms", "linear scan ms", "speed-up"], sbody) + [""]


def _cli_section(d: dict) -> list[str]:
    body = [[f"`jaxcorr train --method {r['method']}`", f"{r['run1_wall_s']:.1f} s", f"{r['run2_wall_s']:.1f} s",
             f"{r['run2_over_run1']:.2f}"] for r in d["rows"]]
    return ["## The main job end to end", "",
            "Wall clock of the whole `jaxcorr train` process at the default sizes, first run with an empty "
            "compilation cache, then a second run reading it; medians over fresh caches.", "",
            "Command: `python scripts/bench_cli.py --methods active,dense --repeats 3 --runs 2 --out "
            f"docs/bench/bench_cli.json`. Machine: {_machine(d['machine'])}.", ""] + _table(
        ["command", "first run", "second run", "second / first"], body) + [""]


def _stop_section(d: dict) -> list[str]:
    body = [[r["method"], r["signal"], "yes" if r["save"] else "no",
             f"{r['checkpoint_bytes'] / 1e6:.0f} MB" if r.get("checkpoint_bytes") else "", f"{r['exit_s']:.2f} s"]
            for r in d["rows"]]
    return ["## Stopping a run", "",
            "Signal to process exit of `jaxcorr train --steps 1000000` at m = 2^22, d = 64 (n = 8), median of "
            f"{d['repeats']} runs; with `--save` the state at the stop is written first.", "",
            "Command: `python scripts/bench_cli.py --stop --repeats 3 --out docs/bench/bench_stop.json`. "
            f"Machine: {_machine(d['machine'])}.", ""] + _table(
        ["method", "signal", "--save", "checkpoint", "signal to exit"], body) + [""]


def _save_section(d: dict) -> list[str]:
    body = [[_pow(r["m"]), f"{r['n_active']:,}", f"{r['compact_bytes'] / 1e6:.0f} MB", f"{r['compact_load_s']:.2f} s",
             f"{r['full_bytes'] / 1e6:.0f} MB", f"{r['full_load_s']:.2f} s"] for r in d["rows"]]
    return ["## Checkpoints of full-width runs", "",
            "A run built from `--seed` saves its active rows and every row that moved (compact form) instead "
            "of all of W; resuming redraws W(0) from the seed.", "",
            "Command: `python scripts/bench_cli.py --save-sizes --ms 22 --out docs/bench/bench_save.json`. "
            f"Machine: {_machine(d['machine'])}.", ""] + _table(
        ["m", "\\|A\\|", "compact", "compact load", "all of W", "full load"], body) + [""]


def _wide_ckpt_section(d: dict) -> list[str]:
    body = []
    for r in d["runs"]:
        t, c, z = r["train"], r["checkpoint"], r["resume"]
        body.append([r["optimizer"], f"{c['bytes'] / 1e6:.0f} MB ({c['form']})", f"{c['rows_form_bytes'] / 1e6:.0f} MB",
                     f"{t['wall_s_os']:.1f} s, {t['peak_rss_bytes'] / 2**30:.2f} GiB",
                     f"{z['wall_s_os']:.1f} s, {z['peak_rss_bytes'] / 2**30:.2f} GiB"])
    return ["## Checkpoints of wide runs", "",
            f"m = {_pow(1 << d['logm'])}, n = {d['n']}, d = {d['d']}: `jaxcorr train --steps 20 --save`, then "
            "`--resume` and 5 more steps, each under `/usr/bin/time`. With sgd and momentum the checkpoint "
            "holds the coefficients K (\\|A\\| x n) instead of the rows.", "",
            f"Command: `python scripts/bench_wide_ckpt.py --logm {d['logm']} --out docs/bench/bench_wide_ckpt.json`. "
            f"Machine: {_machine(d['machine'])}.", ""] + _table(
        ["optimizer", "checkpoint", "as rows", "train: wall, peak", "resume + 5 steps: wall, peak"], body) + [""]


def _figures(train: dict | None, width: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if train:
        present = {r["optimizer"] for r in train["rows"]}
        opts = [o for o in ("sgd", "momentum", "adam") if o in present] + sorted(present - {"sgd", "momentum", "adam"})
        fig, axes = plt.subplots(1, len(opts), figsize=(4 * len(opts), 3.4), sharey=True)
        for ax, opt in zip(axes if len(opts) > 1 else [axes], opts):
            for meth in METHODS:
                rs = sorted((r for r in train["rows"] if r["optimizer"] == opt and r["method"] == meth),
                            key=lambda r: r["m"])
                if rs:
                    ax.loglog([r["m"] for r in rs], [r["ms_per_step"] for r in rs], "o-", label=meth)
            ax.set_title(opt)
            ax.set_xlabel("m (neurons)")
            ax.grid(True, which="both", alpha=0.3)
        (axes[0] if len(opts) > 1 else axes).set_ylabel("ms per step (median)")
        (axes[0] if len(opts) > 1 else axes).legend()
        fig.tight_layout()
        fig.savefig(FIGURES / "speed_vs_m.png", dpi=110)
        plt.close(fig)
    if width:
        runs = sorted((r for r in width["runs"] if r.get("mode") != "dense" and "ms_per_step" in r),
                      key=lambda r: r["m"])
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.loglog([r["m"] for r in runs], [r["setup_s"] for r in runs], "o-", label="set-up s")
        ax.loglog([r["m"] for r in runs], [r["ms_per_step"] / 1e3 for r in runs], "s-", label="s per step")
        ax.loglog([r["m"] for r in runs], [r["peak_bytes"] / 2**30 for r in runs], "^-", label="peak GiB")
        ax.set_xlabel("m (neurons)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(FIGURES / "width_vs_m.png", dpi=110)
        plt.close(fig)


def page() -> str:
    """The text of docs/performance.md from the JSON files present."""
    lines = ["# Performance", "",
             "Every figure on this page is read from a JSON file in `docs/bench/`, written by the script "
             "named with it; `python scripts/performance_page.py` regenerates the page and its figures. "
             "Times are medians after compilation unless said otherwise. The machines are shared and "
             "noisy: repeated runs of one configuration vary by about 20%, so read the ratios measured "
             "side by side in one process. No accelerator figure exists yet: see "
             "[accelerators](accelerators.md) for the check to run on one.", ""]
    for name, section in (("bench_train.json", _train_section), ("bench_trees.json", _trees_section),
                          ("bench_width.json", _width_section), ("bench_wide_ckpt.json", _wide_ckpt_section),
                          ("bench_save.json", _save_section), ("bench_stop.json", _stop_section),
                          ("bench_cli.json", _cli_section)):
        d = _load(name)
        if d is not None:
            lines += section(d)
    lines += ["## The paper's claims", "",
              "Each claim of the paper measured against a tolerance fixed before the run: "
              "[the claims page](claims.md) (`BENCHMARKS.md` in the repository), regenerated by "
              "`python scripts/reproduce.py`.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that docs/performance.md is current")
    args = p.parse_args(argv)
    text = page()
    target = ROOT / "docs" / "performance.md"
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            print("docs/performance.md is not what docs/bench/*.json give: run scripts/performance_page.py")
            return 1
        return 0
    target.write_text(text)
    _figures(_load("bench_train.json"), _load("bench_width.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
