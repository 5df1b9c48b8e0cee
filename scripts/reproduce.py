r"""Reproduce the paper's claims as measured numbers and figures (the driver).

Usage::

    python scripts/reproduce.py --quick --out results/quick     # a few minutes on 2 cores
    python scripts/reproduce.py --out docs/figures --report BENCHMARKS.md \
        --append docs/benchmarks_discussion.md                   # the full run shown in BENCHMARKS.md

Writes ``OUT/results.json`` and one PNG per claim group (matplotlib is an optional extra:
``pip install jaxcorr[plots]``; without it, ``results.json`` is still written and a note says why
there are no figures).

The paper proves bounds and reports no experiments. Each claim group is one module of
``scripts/claims`` (its sizes, its tolerances, its measurement and its figure); the timing helpers
are :mod:`jaxcorr.benchmarking`. Every tolerance is fixed in the module's ``TOLERANCES`` *before*
anything runs; ``holds`` is computed from the measurement and that tolerance, and every claim that
does not hold carries a note saying why. Each claim says what decides it: wall-clock ``time``, or a
``count`` (operations XLA counts in the compiled program, fire counts, loss values) where the claim
counts operations and time on a CPU with caches is not that count.

The quick run uses the full run's regime (same n and d, sizes drawn from the full sweep, still at
least three sizes spanning 16x or more) with fewer repeats, so both decide every ``holds`` alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import jax  # noqa: E402

from jaxcorr import benchmarking as bm  # noqa: E402
from scripts import claims as claim_modules  # noqa: E402
from scripts.claims import common, report  # noqa: E402

CLAIM_GROUPS = claim_modules.GROUPS
SIZE_NAMES = ("tiny", "quick", "full")


def sizes(size: str) -> dict:
    """The configuration of every claim group at ``size`` ("tiny", "quick" or "full")."""
    if size not in SIZE_NAMES:
        raise ValueError(f"size must be one of {list(SIZE_NAMES)}, got {size!r}")
    return {m.GROUP: m.SIZES[size] for m in claim_modules.MODULES}


def tolerances() -> dict:
    """Every group's tolerances, ``{group: {name: value}}``."""
    return {m.GROUP: {k: list(v) if isinstance(v, tuple) else v for k, v in m.TOLERANCES.items()}
            for m in claim_modules.MODULES}


def _figures(results, out, groups, log):
    from scripts.claims import plotting

    try:
        plt = plotting.pyplot()
    except ImportError as e:
        msg = f"no figures: {e} (install the optional extra: pip install 'jaxcorr[plots]')"
        results["notes"].append(msg)
        log(msg)
        return []
    made = []
    for g in groups:
        made += claim_modules.BY_GROUP[g].figure(results, out, plt)
    plt.close("all")
    return made


def run(size: str = "quick", out: str | os.PathLike = "results", *, groups=None, seed: int = 0,
        plots: bool = True, log=print) -> dict:
    """Measure every claim group at ``size``; write ``out/results.json`` and figures.

    Args:
      size: "tiny" (tests, seconds), "quick" or "full".
      out: output directory (created).
      groups: claim groups to run (default all, in :data:`CLAIM_GROUPS` order).
      seed: PRNG seed of every measurement.
      plots: write the figures.
      log: called with one line per claim as it is decided.

    Returns:
      The results dict written to ``results.json``.
    """
    cfg = sizes(size)
    groups = list(CLAIM_GROUPS if groups is None else groups)
    unknown = set(groups) - set(CLAIM_GROUPS)
    if unknown:
        raise ValueError(f"unknown claim group(s) {sorted(unknown)}; choose from {CLAIM_GROUPS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(seed)
    claims, data, timings = [], {}, {}
    t_all = time.perf_counter()
    for g in groups:
        t0 = time.perf_counter()
        mod = claim_modules.BY_GROUP[g]
        cl, data[g] = mod.measure(cfg[g], jax.random.fold_in(key, CLAIM_GROUPS.index(g)), mod.TOLERANCES)
        claims += cl
        timings[g] = time.perf_counter() - t0
        for c in cl:
            log(f"[{g} {timings[g]:6.1f}s] {c['name']:<22} holds={c['holds']}")
    results = {
        "size": size,
        "command": "python scripts/reproduce.py" + (" --quick" if size == "quick" else f" --size {size}")
        + f" --out {out}",
        "machine": bm.machine_info(),
        "tolerances": tolerances(),
        "sizes": {g: cfg[g] for g in groups},
        "claims": claims,
        "data": data,
        "seconds": {**timings, "total": time.perf_counter() - t_all},
        "notes": [],
        "figures": [],
    }
    if plots:
        results["figures"] = _figures(results, out, groups, log)
    with open(out / "results.json", "w") as fh:
        json.dump(results, fh, indent=1, default=common.json_default)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory for results.json and figures")
    p.add_argument("--quick", action="store_true", help="the full regime with fewer sizes and repeats")
    p.add_argument("--size", choices=SIZE_NAMES, default=None,
                   help="tiny (tests, seconds), quick (= --quick) or full (default)")
    p.add_argument("--only", action="append", choices=CLAIM_GROUPS, help="run only this claim group (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true", help="write results.json only")
    p.add_argument("--report", default=None, help="also write the Markdown results page here (BENCHMARKS.md)")
    p.add_argument("--append", default=None, help="with --report: a Markdown file appended (discussion)")
    args = p.parse_args(argv)
    if args.quick and args.size not in (None, "quick"):
        p.error("--quick conflicts with --size " + args.size)
    size = "quick" if args.quick else (args.size or "full")
    res = run(size, args.out, groups=args.only, seed=args.seed, plots=not args.no_plots)
    cols = ["name", "paper", "decided_by", "holds"]
    print(bm.format_table([{k: c[k] for k in cols} for c in res["claims"]], cols))
    for c in res["claims"]:
        if not c["holds"]:
            print(f"  {c['name']} does not hold: {c['note']}")
    print(f"wrote {Path(args.out) / 'results.json'} in {res['seconds']['total']:.0f}s")
    if args.report:
        report.write(res, args.report, figures=os.path.relpath(args.out, Path(args.report).parent),
                     append=args.append)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
