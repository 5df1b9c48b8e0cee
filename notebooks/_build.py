#!/usr/bin/env python
"""Generate the jaxcorr notebooks from the cell lists below, execute them, save them with outputs.

The notebooks in ``notebooks/`` are build products of this script: edit the cells here, then run

    python notebooks/_build.py            # all notebooks
    python notebooks/_build.py 01 03      # only those whose name starts with 01 or 03
    python notebooks/_build.py --no-execute   # write them without outputs (for a quick look)

Each notebook is executed top to bottom on a fresh ``python3`` kernel with ``notebooks/`` as its
working directory and the repository root first on ``PYTHONPATH`` (so ``import jaxcorr`` works from
a source checkout without ``pip install``). Every claim the prose makes is checked by an ``assert``
in a cell, so a notebook whose claim breaks fails to execute, and ``tests/test_notebooks.py``
(which re-executes the saved notebooks) fails with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip("\n"))


SETUP = code(
    """
    %matplotlib inline
    import os, sys
    try:
        import jaxcorr
    except ImportError:  # a source checkout without `pip install .`: use the repository root
        sys.path.insert(0, os.path.abspath(".."))
        import jaxcorr
    import jax
    import jax.numpy as jnp
    import numpy as np
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "axes.grid": True, "grid.alpha": 0.3})
    np.set_printoptions(precision=2, suppress=True, linewidth=110)
    print(f"jaxcorr {jaxcorr.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{os.cpu_count()} CPU cores")
    """
)


# ============================================================================== 01 correlation trees
NB01 = [
    md(
        r"""
        # 1. Correlation trees: DTree and WTree

        This notebook is a tour of the two data structures of Section 3 of Alman, Liang, Song, Zhang
        and Zhuo, *Bypass Exponential Time Preprocessing* (NeurIPS 2023), as implemented in
        `jaxcorr`:

        * the **Correlation DTree** (Theorem 3.1, Algorithms 1, 2, 10-12): one max-tree per data
          point $x_i$, over the $m$ neurons; leaf $r$ of tree $i$ holds $\langle w_r, x_i\rangle$;
        * the **Correlation WTree** (Theorem 3.2, Algorithms 6, 13-15): one max-tree per neuron
          $w_r$, over the $n$ data points.

        Both are stored as a `jaxcorr.maxtree.MaxTree` (MAKEMAXTREE, Algorithm 7): one array per
        level with a leading axis of trees, leaves first, every parent the max of its two children.
        We build small trees, draw one with its max values, update a neuron and look at the path that
        is recomputed, query at several thresholds, and finally force a query to overflow its
        fixed capacity and re-size it.

        Every claim below is checked by an `assert` in the cell that prints it.
        """
    ),
    SETUP,
    code(
        """
        from jaxcorr import dtree, maxtree, wtree
        """
    ),
    md(
        r"""
        ## A small instance

        $m = 6$ neurons and $n = 3$ data points in $d = 3$ dimensions, rounded to one decimal so the
        numbers in the drawings stay readable. `jaxcorr` stores the neurons as the rows of `W`
        (shape `(m, d)`).
        """
    ),
    code(
        """
        rng = np.random.default_rng(0)
        m, n, d = 6, 3, 3
        W = np.round(rng.normal(size=(m, d)), 1).astype(np.float32)
        X = np.round(rng.normal(size=(n, d)), 1).astype(np.float32)
        IP = X @ W.T  # (n, m): <w_r, x_i>
        print("W (m, d) =\\n", W)
        print("X (n, d) =\\n", X)
        print("<w_r, x_i>, rows i, columns r =\\n", IP)
        """
    ),
    md(
        r"""
        ## Building a DTree (Lemma D.2)

        `dtree.init(W, X)` computes all $nm$ inner products in $O(nmd)$ and builds the $n$ trees.
        The leaves are padded to the next power of two ($P = 8$ here) with $-\infty$, so padding
        never fires. The per-level arrays are the whole state: `levels[0]` has shape `(n, P)`,
        `levels[l]` has shape `(n, P >> l)`, the last level holds the roots,
        $\max_r \langle w_r, x_i\rangle$.
        """
    ),
    code(
        """
        dt = dtree.init(W, X)
        print("level shapes (leaves first):", [lvl.shape for lvl in dt.tree.levels])
        for l, lvl in enumerate(dt.tree.levels):
            print(f"levels[{l}] =", np.array2string(np.asarray(lvl), prefix=" " * 12))

        assert np.allclose(dtree.inner_products(dt), IP, atol=1e-6)
        assert maxtree.check_invariant(dt.tree)  # every parent is the max of its two children
        assert np.allclose(np.asarray(dt.tree.levels[-1])[:, 0], IP.max(axis=1))
        print("leaves == X W^T, invariant holds, roots == max_r <w_r, x_i>")
        """
    ),
    md(
        r"""
        ### Drawing one tree

        A small matplotlib helper draws tree $i$ as text boxes at (leaf position, level). It can
        highlight a path (orange) and the nodes a query examined: green if the node's value is
        $> \tau$ (the search goes below it), grey if it is not (the search stops there).
        """
    ),
    code(
        """
        def fmt(v):
            return "-inf" if np.isneginf(v) else f"{v:.2f}"


        def draw_tree(ax, levels, *, path=(), passed=(), failed=(), title="", leaf_name="r"):
            \"\"\"Draw one max-tree given its per-level 1-D arrays (leaves first).\"\"\"
            levels = [np.asarray(v) for v in levels]
            P = levels[0].shape[0]
            path, passed, failed = set(path), set(passed), set(failed)
            for l, vals in enumerate(levels):
                span = 2 ** l
                for k, v in enumerate(vals):
                    x = (k + 0.5) * span
                    if l > 0:
                        for c in (2 * k, 2 * k + 1):
                            ax.plot([x, (c + 0.5) * 2 ** (l - 1)], [l, l - 1], color="0.6", lw=1, zorder=1)
                    face = ("orange" if (l, k) in path else "palegreen" if (l, k) in passed
                            else "0.85" if (l, k) in failed else "white")
                    ax.text(x, l, fmt(v), ha="center", va="center", fontsize=9, zorder=2,
                            bbox=dict(boxstyle="round,pad=0.3", fc=face, ec="0.3"))
            ax.set_xlim(0, P)
            ax.set_ylim(-0.6, len(levels) - 0.4)
            ax.set_xticks([k + 0.5 for k in range(P)])
            ax.set_xticklabels([str(k) for k in range(P)])
            ax.set_yticks(range(len(levels)))
            ax.set_xlabel(f"leaf index {leaf_name}")
            ax.set_ylabel("level (0 = leaves)")
            ax.set_title(title)
            ax.grid(False)


        def tree_levels(tree, t):
            \"\"\"The per-level 1-D arrays of tree t of a MaxTree.\"\"\"
            return [np.asarray(lvl[t]) for lvl in tree.levels]


        fig, ax = plt.subplots(figsize=(8, 3.2))
        draw_tree(ax, tree_levels(dt.tree, 0), title="DTree, tree i = 0: leaf r holds <w_r, x_0>; parents hold the max")
        plt.show()
        """
    ),
    md(
        r"""
        ## Updating one neuron (Lemma D.3, Algorithm 1 lines 23-30)

        `dtree.update(dt, r, z)` sets $w_r \leftarrow z$. In each of the $n$ trees only leaf $r$
        changes, so only the leaf-to-root path of $r$, the nodes $(l, \lfloor r / 2^l \rfloor)$, is
        recomputed: $O(n(d + \log m))$ work. The update is functional (it returns a new `DTree`);
        `update(..., donate=True)` donates the old buffers so XLA writes in place.

        Below we move neuron $r = 2$ onto $x_0$'s direction, so it becomes the largest leaf of
        tree 0, and compare every level before and after.
        """
    ),
    code(
        """
        r = 2
        z = (1.5 * X[0] / np.linalg.norm(X[0])).astype(np.float32)
        dt2 = dtree.update(dt, r, z)
        path = [(l, r >> l) for l in range(len(dt.tree.levels))]
        print("recomputed path of leaf r=2 (level, index):", path)

        for i in range(n):
            changed = []
            for l, (lo, hi) in enumerate(zip(dt.tree.levels, dt2.tree.levels)):
                changed += [(l, int(k)) for k in np.flatnonzero(np.asarray(lo[i]) != np.asarray(hi[i]))]
            print(f"tree i={i}: nodes whose value changed: {changed}")
            assert set(changed) <= set(path), "an update may only change nodes on the leaf-to-root path"

        W2 = W.copy(); W2[r] = z
        assert np.allclose(dtree.inner_products(dt2), X @ W2.T, atol=1e-6)
        assert maxtree.check_invariant(dt2.tree)
        print("after the update: leaves == X W'^T and the invariant holds in all", n, "trees")
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 2, figsize=(14, 3.2))
        draw_tree(axes[0], tree_levels(dt.tree, 0), path=path, title="tree i = 0 before update(r = 2)")
        draw_tree(axes[1], tree_levels(dt2.tree, 0), path=path, title="tree i = 0 after update(r = 2): path recomputed")
        plt.tight_layout(); plt.show()
        """
    ),
    md(
        r"""
        ## The WTree (Lemmas D.6-D.8)

        The WTree stores the same inner products transposed: $m$ trees, tree $r$ over the $n$ data
        points (padded to 4 leaves here). Updating $w_r$ rebuilds tree $r$ only (Algorithm 14),
        $O(nd)$, and leaves the other $m - 1$ trees untouched.
        """
    ),
    code(
        """
        wt = wtree.init(W, X)
        print("WTree level shapes:", [lvl.shape for lvl in wt.tree.levels])
        assert np.allclose(wtree.inner_products(wt), dtree.inner_products(dt).T)
        print("WTree leaves are the transpose of the DTree leaves")

        wt2 = wtree.update(wt, r, z)
        rows_changed = sorted({int(t) for lo, hi in zip(wt.tree.levels, wt2.tree.levels)
                               for t in np.flatnonzero(np.any(np.asarray(lo) != np.asarray(hi), axis=1))})
        print("trees (rows) that changed after wtree.update(r=2):", rows_changed)
        assert rows_changed == [r]
        assert np.allclose(wtree.inner_products(wt2), dtree.inner_products(dt2).T, atol=1e-6)
        assert maxtree.check_invariant(wt2.tree)

        fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
        draw_tree(axes[0], tree_levels(wt.tree, r), leaf_name="i (data point)", title="WTree, tree r = 2, before")
        draw_tree(axes[1], tree_levels(wt2.tree, r), leaf_name="i (data point)",
                  path=[(l, k) for l, lvl in enumerate(wt2.tree.levels) for k in range(lvl.shape[1])],
                  title="WTree, tree r = 2, after: the whole tree is rebuilt")
        plt.tight_layout(); plt.show()
        """
    ),
    md(
        r"""
        ## Queries at several thresholds (Lemma D.4, Algorithm 2 FIND)

        `dtree.query(dt, i, tau, capacity)` returns the neurons with
        $\langle w_r, x_i\rangle > \tau$ (strict, as $\sigma_b(x) > 0$ needs), i.e. the fire set
        $S_{i,\mathrm{fire}}$ of Definition 2.4 when $\tau = b$. The search starts at the root and
        only descends below nodes whose value is $> \tau$; a node with value $\le \tau$ has no
        firing leaf under it. The result has a static length `capacity`: ascending indices, padded
        with the sentinel $m$, a `valid` mask, the `count` and an `overflow` flag.

        To see the work, `find_host` below replays the same top-down search in numpy and records
        the nodes it examines. (The jitted query finds the same passing nodes with a frontier of
        `capacity` slots. It starts at the first level that fits in the frontier and descends up
        to five levels per step, reading the 32 descendants of a frontier node as one contiguous
        row.)
        """
    ),
    code(
        """
        def find_host(levels, tau):
            \"\"\"Top-down FIND on one tree (numpy): returns (fired leaves, passed nodes, failed nodes).\"\"\"
            frontier = np.array([0])
            passed, failed = [], []
            for l in range(len(levels) - 1, -1, -1):
                ok = levels[l][frontier] > tau
                passed += [(l, int(k)) for k in frontier[ok]]
                failed += [(l, int(k)) for k in frontier[~ok]]
                if l == 0:
                    return frontier[ok], passed, failed
                frontier = np.stack([2 * frontier[ok], 2 * frontier[ok] + 1], axis=1).reshape(-1)


        i = 0
        ip0 = np.asarray(dtree.inner_products(dt2))[i]
        levels0 = tree_levels(dt2.tree, i)
        print("<w_r, x_0> =", ip0)
        print(f"{'tau':>6} | {'query(i=0, tau)':<22} | {'count':>5} | {'overflow':>8} | {'brute force':<18} | nodes examined")
        for tau in [-1.0, 0.0, 0.5, 1.0, 2.0]:
            f = dtree.query(dt2, i, tau, capacity=m)
            got = np.asarray(f.indices)[np.asarray(f.valid)]
            brute = np.flatnonzero(ip0 > tau)
            fired, passed, failed = find_host(levels0, tau)
            print(f"{tau:>6} | {str(got.tolist()):<22} | {int(f.count):>5} | {str(bool(f.overflow)):>8} | "
                  f"{str(brute.tolist()):<18} | {len(passed) + len(failed)}")
            assert np.array_equal(got, brute) and int(f.count) == brute.size and not bool(f.overflow)
            assert np.array_equal(fired, brute)
        print("every query equals the brute-force set {r : <w_r, x_0> > tau}")
        """
    ),
    code(
        """
        taus = [-1.0, 0.5, 2.0]
        fig, axes = plt.subplots(1, 3, figsize=(18, 3.2))
        for ax, tau in zip(axes, taus):
            fired, passed, failed = find_host(levels0, tau)
            draw_tree(ax, levels0, passed=passed, failed=failed,
                      title=f"query(i=0, tau={tau}): fires {fired.tolist()}, examines {len(passed) + len(failed)} nodes")
        plt.tight_layout(); plt.show()
        """
    ),
    md(
        r"""
        The same query on the WTree answers the dual question of Definition 2.4: the data points
        $\tilde S_{r,\mathrm{fire}} = \{i : \langle w_r, x_i\rangle > \tau\}$ of neuron $r$.
        `query_all` runs the query for every tree at once (a `vmap`), with one capacity for all.
        """
    ),
    code(
        """
        tau = 0.5
        fw = wtree.query_all(wt2, tau, capacity=n)
        ipw = np.asarray(wtree.inner_products(wt2))
        for rr in range(m):
            got = np.asarray(fw.indices[rr])[np.asarray(fw.valid[rr])]
            assert np.array_equal(got, np.flatnonzero(ipw[rr] > tau))
            print(f"neuron r={rr}: data points firing at tau={tau}: {got.tolist()}")

        fd = dtree.query_all(dt2, tau, capacity=m)
        S = [np.asarray(fd.indices[ii])[np.asarray(fd.valid[ii])] for ii in range(n)]
        # duality: r in S_{i,fire}  <=>  i in S~_{r,fire}
        pairs_d = {(ii, int(rr)) for ii in range(n) for rr in S[ii]}
        pairs_w = {(int(ii), rr) for rr in range(m) for ii in np.asarray(fw.indices[rr])[np.asarray(fw.valid[rr])]}
        assert pairs_d == pairs_w
        print("DTree and WTree report the same firing pairs (i, r):", sorted(pairs_d))
        """
    ),
    md(
        r"""
        ## A larger instance: query work follows the output size

        Now $m = 4096$ neurons with $w_r \sim N(0, I_d)$ and $n = 64$ unit-norm points, so each
        $\langle w_r, x_i \rangle \sim N(0, 1)$. We query every point at several thresholds,
        including the paper's $b = \sqrt{0.4 \ln m}$ (Remark 2.6), check each answer against
        brute force and count the nodes FIND examines. A full scan would read all $m$ leaves;
        FIND examines at most $2|S|\log_2 P + 1$ nodes (two children per passing node on
        $|S|$ root-to-leaf paths), and fewer when paths share their top.
        """
    ),
    code(
        """
        m_big, n_big, d_big = 4096, 64, 16
        kw, kx = jax.random.split(jax.random.key(0))
        W_big = jax.random.normal(kw, (m_big, d_big))
        X_big = jax.random.normal(kx, (n_big, d_big))
        X_big = X_big / jnp.linalg.norm(X_big, axis=1, keepdims=True)
        dt_big = dtree.init(W_big, X_big)
        ip_big = np.asarray(dtree.inner_products(dt_big))
        b = float(np.sqrt(0.4 * np.log(m_big)))
        logP = int(np.log2(maxtree.padded_size(m_big)))

        levels_big = [np.asarray(lvl) for lvl in dt_big.tree.levels]
        rows = []
        for tau in [1.0, 1.5, b, 2.5, 3.0]:
            f = dtree.query_all(dt_big, tau, capacity=m_big)  # capacity m: can never overflow
            assert not bool(jnp.any(f.overflow))
            idx, valid = np.asarray(f.indices), np.asarray(f.valid)
            for ii in range(n_big):
                got = idx[ii][valid[ii]]
                brute = np.flatnonzero(ip_big[ii] > tau)
                assert np.array_equal(got, brute)
                _, passed, failed = find_host([lvl[ii] for lvl in levels_big], tau)
                rows.append((tau, brute.size, len(passed) + len(failed)))
        rows = np.array(rows)
        assert np.all(rows[:, 2] <= 2 * rows[:, 1] * logP + 1)
        print(f"b = sqrt(0.4 ln m) = {b:.3f}; {len(rows)} queries, all equal to brute force")
        for tau in np.unique(rows[:, 0]):
            sel = rows[rows[:, 0] == tau]
            print(f"tau = {tau:.3f}: |S| median {np.median(sel[:, 1]):6.0f}, nodes examined median "
                  f"{np.median(sel[:, 2]):6.0f} (a full scan reads {m_big} leaves)")
        """
    ),
    code(
        """
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for tau in np.unique(rows[:, 0]):
            sel = rows[rows[:, 0] == tau]
            ax.scatter(sel[:, 1], sel[:, 2], s=12, label=f"tau = {tau:.2f}")
        s = np.logspace(0, np.log10(m_big), 50)
        ax.plot(s, 2 * s * logP + 1, "k--", lw=1, label="2 |S| log2 P + 1")
        ax.axhline(2 * maxtree.padded_size(m_big) - 1, color="r", lw=1, label="all nodes of the tree")
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("|S| = number of firing neurons (query output size)")
        ax.set_ylabel("nodes examined by FIND")
        ax.set_title(f"Query work vs output size (m = {m_big}, n = {n_big})")
        ax.legend(fontsize=8); plt.show()
        """
    ),
    md(
        r"""
        ## Forcing an overflow, and re-sizing the capacity

        The capacity of a query is a static shape (changing it compiles a new version), so the fire
        set may not fit. FIND never drops a firing neuron silently: when more nodes pass at some
        level than the frontier holds, the result has `overflow=True` and `count` is a lower bound
        on $|S|$ that exceeds the capacity; the indices it does return are all genuine.

        The fix follows jax-md's neighbour lists: on the host, re-size the capacity from the
        measured count with 25% headroom, `int(count * 1.25)` (capped at $m$), and rerun. Because
        `count` is only a lower bound under overflow, this may take more than one round; each round
        at least multiplies the capacity by 1.25.
        """
    ),
    code(
        """
        i, tau = 7, 1.0
        brute = np.flatnonzero(ip_big[i] > tau)
        capacity = 256
        rounds = []
        while True:
            f = dtree.query(dt_big, i, tau, capacity=capacity)
            got = np.asarray(f.indices)[np.asarray(f.valid)]
            rounds.append((capacity, int(f.count), bool(f.overflow), got.size))
            assert set(got.tolist()) <= set(brute.tolist())  # reported neurons always fire
            if not bool(f.overflow):
                break
            assert int(f.count) > capacity
            capacity = min(int(int(f.count) * 1.25), m_big)

        print(f"point i={i}, tau={tau}: true |S| = {brute.size}")
        print(f"{'capacity':>8} | {'count':>5} | {'overflow':>8} | indices returned")
        for c, cnt, ov, k in rounds:
            print(f"{c:>8} | {cnt:>5} | {str(ov):>8} | {k}")
        assert rounds[0][2] and rounds[0][1] > rounds[0][0]
        assert np.array_equal(got, brute) and int(f.count) == brute.size
        print("after re-sizing: no overflow, and the result equals brute force")
        """
    ),
    md(
        r"""
        For a batch query the same rule sizes one capacity for all trees from the largest count.
        This is what `jaxcorr.train.fit` does between jitted chunks of training (see notebook 2).
        """
    ),
    code(
        """
        capacity = 400
        for round_ in range(10):
            f = dtree.query_all(dt_big, tau, capacity=capacity)
            n_over = int(jnp.sum(f.overflow))
            print(f"round {round_}: capacity {capacity:4d}: {n_over:2d} of {n_big} points overflow, "
                  f"max count {int(jnp.max(f.count))}")
            if n_over == 0:
                break
            capacity = min(int(int(jnp.max(f.count)) * 1.25), m_big)
        idx, valid = np.asarray(f.indices), np.asarray(f.valid)
        for ii in range(n_big):
            assert np.array_equal(idx[ii][valid[ii]], np.flatnonzero(ip_big[ii] > tau))
        print(f"final capacity {capacity} >= max |S_i| = {int((ip_big > tau).sum(axis=1).max())}; "
              "all results equal brute force")
        """
    ),
    md(
        r"""
        ## Summary

        * `dtree` and `wtree` keep $\langle w_r, x_i\rangle$ in per-level max-tree arrays
          (Algorithm 7); the invariant "parent = max of children" is checked by
          `maxtree.check_invariant`.
        * A DTree update changes only the leaf-to-root path of the neuron in each of the $n$ trees
          (Lemma D.3); a WTree update rebuilds one tree (Lemma D.7).
        * A query returns exactly $\{r : \langle w_r, x_i\rangle > \tau\}$ (Lemmas D.4, D.8) and its
          work follows the output size, not $m$.
        * A fixed capacity that is too small is reported (`overflow`, `count > capacity`), never
          silently truncated; re-sizing from the count and rerunning gives the exact answer.

        Next: notebook 2 trains a network with these trees, notebook 3 looks at DDFN and its lower
        bound.
        """
    ),
]

# ============================================================================== 03 DDFN + lower bound
NB03 = [
    md(
        r"""
        # 3. DDFN and the lower bound

        The correlation DTree solves a clean dynamic problem, stated as Definition 1.3 of the paper:

        > **Dynamic Detection of Firing Neurons (DDFN).** Given $X = \{x_1, \dots, x_n\} \subset
        > \mathbb{Z}^d$, $Y = \{y_1, \dots, y_m\} \subset \mathbb{Z}^d$ and a threshold $b$, support
        > * UPDATE$(j, z)$: set $y_j \leftarrow z$;
        > * QUERY(): output $Q = \{(i, j) : \langle x_i, y_j\rangle \ge b\}$, or report that
        >   $|Q| > m^{4/5} n$.

        `jaxcorr.ddfn` implements it on a DTree whose "neurons" are the $y_j$ and whose "data" are
        the $x_i$: $O(nmd)$ preprocessing, $O(n(d + \log m))$ per update, and a query that walks
        all $n$ trees as one forest with a single fixed-capacity frontier.

        Theorem 1.4 (formally Theorem F.4) says this cannot be improved much: under SETH or OVC,
        no DDFN structure has both $m^{1-c} n^{c - o(1)}$ update time and
        $m^{1-c} n^{1 + c - o(1)}$ query time. The proof turns any DDFN structure into an
        algorithm for integer Maximum Inner Product (Max-IP), which needs $n^{2-o(1)}$ time
        (Theorem F.3). `jaxcorr.reductions.max_inner_product` runs that reduction on our DDFN; we
        run it here on small integer instances and check it against brute force.
        """
    ),
    SETUP,
    code(
        """
        from jaxcorr import ddfn, reductions
        """
    ),
    md(
        r"""
        ## DDFN on a small integer instance (Definition 1.3)

        One detail first. Definition 1.3 asks for $\langle x_i, y_j\rangle \ge b$, while jaxcorr
        compares strictly ($> \tau$), as the ReLU fire sets $\sigma_b(x) > 0$ need (Definition 2.3).
        On integer data the two agree with $\tau = b - 1/2$, which is exactly representable and
        half an integer away from every inner product. `ddfn.init`'s `cap` is the output bound;
        its default is the paper's $\lceil m^{4/5}\rceil n$.
        """
    ),
    code(
        """
        rng = np.random.default_rng(1)
        n, m, d = 4, 12, 3
        X = rng.integers(-3, 4, size=(n, d))
        Y = rng.integers(-3, 4, size=(m, d))
        b = 5                                   # Definition 1.3's threshold: <x_i, y_j> >= 5
        state = ddfn.init(X, Y, b - 0.5)        # strict > 4.5 on integers
        print(f"n = {n}, m = {m}, d = {d}; default cap = ceil(m^(4/5)) * n = {state.cap}")


        def pairs_of(q):
            \"\"\"The reported pairs of a ddfn.Pairs as a sorted list of (i, j).\"\"\"
            v = np.asarray(q.valid)
            return list(zip(np.asarray(q.i)[v].tolist(), np.asarray(q.j)[v].tolist()))


        def brute(X, Y, b):
            return [tuple(p) for p in np.argwhere(X @ Y.T >= b).tolist()]


        q = ddfn.query(state)
        print("QUERY() ->", pairs_of(q), f"count = {int(q.count)}, overflow = {bool(q.overflow)}")
        assert pairs_of(q) == brute(X, Y, b) and not bool(q.overflow)
        print("equals the brute-force Q = {(i, j) : <x_i, y_j> >= b}")
        """
    ),
    code(
        """
        def show_ip(ax, X, Y, b, title, col=None):
            ip = X @ Y.T
            ax.imshow(ip, cmap="coolwarm", vmin=-np.abs(ip).max(), vmax=np.abs(ip).max())
            for (i, j), v in np.ndenumerate(ip):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9,
                        fontweight="bold" if v >= b else "normal")
                if v >= b:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="k", lw=2))
            if col is not None:
                ax.add_patch(plt.Rectangle((col - 0.5, -0.5), 1, ip.shape[0], fill=False, ec="lime", lw=3))
            ax.set_xticks(range(ip.shape[1])); ax.set_yticks(range(ip.shape[0]))
            ax.set_xlabel("j (point y_j)"); ax.set_ylabel("i (point x_i)")
            ax.set_title(title); ax.grid(False)


        fig, ax = plt.subplots(figsize=(7, 3))
        show_ip(ax, X, Y, b, f"<x_i, y_j>; boxed: the pairs of Q (>= b = {b})")
        plt.show()
        """
    ),
    md(
        r"""
        ### UPDATE$(j, z)$

        Updating $y_j$ recomputes one leaf-to-root path in each of the $n$ trees
        (the DTree update, Lemma D.3). The next QUERY reflects it.
        """
    ),
    code(
        """
        j, z = 5, np.array([3, 3, 3])
        state2 = ddfn.update(state, j, z)
        Y2 = Y.copy(); Y2[j] = z
        q2 = ddfn.query(state2)
        print(f"after UPDATE({j}, {z.tolist()}): QUERY() ->", pairs_of(q2))
        print("pairs added:", sorted(set(pairs_of(q2)) - set(pairs_of(q))),
              "| pairs removed:", sorted(set(pairs_of(q)) - set(pairs_of(q2))))
        assert pairs_of(q2) == brute(X, Y2, b)
        assert {p for p in set(pairs_of(q2)) ^ set(pairs_of(q))} <= {(i, j) for i in range(n)}
        print("equals brute force; only pairs with j =", j, "changed")

        fig, ax = plt.subplots(figsize=(7, 3))
        show_ip(ax, X, Y2, b, f"after UPDATE(j = {j}): column {j} (green) recomputed", col=j)
        plt.show()
        """
    ),
    md(
        r"""
        ### "... or report that $|Q| > m^{4/5} n$"

        The query has a static output capacity `cap`. If $Q$ does not fit, it reports overflow
        (with `count`, a lower bound on $|Q|$ above `cap`) instead of a truncated answer. Below,
        first a deliberately small `cap = 3`, then the paper's default cap with a threshold so
        low that every one of the $nm = 48$ pairs is in $Q$.
        """
    ),
    code(
        """
        small = ddfn.init(X, Y, b - 0.5, cap=3)
        qs = ddfn.query(small)
        print(f"cap = 3: overflow = {bool(qs.overflow)}, count = {int(qs.count)} (true |Q| = {len(brute(X, Y, b))})")
        assert bool(qs.overflow) and int(qs.count) > 3
        assert set(pairs_of(qs)) <= set(brute(X, Y, b))  # whatever is reported is genuine

        low = ddfn.init(X, Y, -100.5)            # <x_i, y_j> >= -100 holds for every pair
        ql = ddfn.query(low)
        print(f"b = -100, default cap = {low.cap}: overflow = {bool(ql.overflow)}, "
              f"count = {int(ql.count)}, |Q| = {n * m} > ceil(m^(4/5)) n = {low.cap}")
        assert bool(ql.overflow) and n * m > low.cap == ddfn.default_cap(n, m)
        """
    ),
    md(
        r"""
        ## The reduction of Theorem F.4: Max-IP with DDFN queries

        **Integer Max-IP.** Given $X, Y \subset \mathbb{Z}^d$, find
        $\max_{i,j} \langle x_i, y_j\rangle$. By Theorem F.3 ([Che20]), under SETH or OVC no
        algorithm solves it in $n^{2-\Omega(1)}$ time when $d = c^{\log^* n}$.

        **The reduction.** Lift every point by one coordinate,
        $\tilde x_i = (x_i, -1)$ and $\tilde y_j = (y_j, t)$, so that
        $$\langle \tilde x_i, \tilde y_j\rangle = \langle x_i, y_j\rangle - t \ge 0
          \iff \langle x_i, y_j\rangle \ge t.$$
        With DDFN threshold $b = 0$ (strictly: $> -1/2$), QUERY() is non-empty exactly when some
        pair reaches $t$. So binary-search the integer $t$: each step UPDATEs all $m$ points
        $\tilde y_j$ to carry the new $t$ (here: one batched update of the $m$ rows) and issues
        one QUERY.

        We first write the loop out by hand on `ddfn`, printing every step, with the paper's
        output cap so that QUERY reports all of $Q$ and we can watch $|Q|$ shrink as $t$ grows.
        The instance is $m = 48$ points on each side (as in the proof, both sides of a hard
        Max-IP instance have the same size) in $d = 4$ with entries in $[-8, 8]$.
        """
    ),
    code(
        """
        rng = np.random.default_rng(7)
        N, d = 48, 4
        XA = rng.integers(-8, 9, size=(N, d))
        YA = rng.integers(-8, 9, size=(N, d))
        truth = int((XA @ YA.T).max())
        lo, hi, B = reductions.search_bounds(XA, YA)
        print(f"search range [lo, hi] = [{lo}, {hi}] (lo = <x_0, y_0>, hi from Cauchy-Schwarz / B = {B})")

        Xt = np.concatenate([XA, -np.ones((N, 1), int)], axis=1)    # x~_i = (x_i, -1)
        Yt = np.concatenate([YA, np.full((N, 1), lo)], axis=1)      # y~_j = (y_j, t)
        st = ddfn.init(Xt, Yt, reductions.THRESHOLD)                 # b = 0, i.e. strict > -1/2
        rows = np.arange(N)
        a, c = lo, hi            # invariant: some <x_i, y_j> >= a, and none >= c + 1
        trace = []
        print(f"{'step':>4} | {'[a, c]':>12} | {'t':>4} | {'|Q|':>5} | {'overflow':>8} | {'brute |Q|':>9} | witness (i, j)")
        while a < c:
            t = (a + c + 1) // 2
            Yt[:, d] = t
            st = ddfn.update(st, rows, Yt)                           # UPDATE(j, y~_j) for all j
            q = ddfn.query(st)                                       # QUERY()
            nonempty = int(q.count) > 0
            exact = int(((XA @ YA.T) >= t).sum())
            wit = (int(q.i[0]), int(q.j[0])) if nonempty else None
            trace.append((a, c, t, int(q.count), bool(q.overflow), exact))
            print(f"{len(trace):>4} | {str([a, c]):>12} | {t:>4} | {int(q.count):>5} | {str(bool(q.overflow)):>8} | {exact:>9} | {wit}")
            if not bool(q.overflow):
                assert int(q.count) == exact
            assert nonempty == (exact > 0)
            if nonempty:
                assert XA[wit[0]] @ YA[wit[1]] >= t
                a = t
            else:
                c = t - 1
        print(f"binary search result: {a}; brute-force max <x_i, y_j> = {truth}")
        assert a == truth
        assert len(trace) <= int(np.ceil(np.log2(hi - lo + 1)))
        print(f"{len(trace)} steps <= ceil(log2(hi - lo + 1)) = {int(np.ceil(np.log2(hi - lo + 1)))}")
        """
    ),
    code(
        """
        tr = np.array(trace)
        steps_ = np.arange(1, len(tr) + 1)
        ts = np.arange(lo, hi + 1)
        ipv = (XA @ YA.T).ravel()
        fig, axes = plt.subplots(1, 2, figsize=(13, 4))
        ax = axes[0]
        ax.fill_between(steps_, tr[:, 0], tr[:, 1], step="mid", alpha=0.25, label="search interval [a, c]")
        ok = tr[:, 3] > 0
        ax.scatter(steps_[ok], tr[ok, 2], c="g", marker="^", zorder=3, label="probe t: QUERY non-empty")
        ax.scatter(steps_[~ok], tr[~ok, 2], c="r", marker="v", zorder=3, label="probe t: QUERY empty")
        ax.axhline(truth, color="k", ls="--", lw=1, label=f"true Max-IP = {truth}")
        ax.set_xlabel("binary-search step"); ax.set_ylabel("t")
        ax.set_title("Theorem F.4 reduction: binary search over t"); ax.legend(fontsize=8)
        ax = axes[1]
        ax.plot(ts, [(ipv >= t).sum() for t in ts], color="0.5", label="brute force |{(i, j): <x_i, y_j> >= t}|")
        ax.scatter(tr[:, 2], np.maximum(tr[:, 3], 0.5), c=np.where(ok, "g", "r"), zorder=3,
                   label="|Q| reported by DDFN QUERY (0 drawn at 0.5)")
        ax.set_yscale("log"); ax.set_xlabel("t"); ax.set_ylabel("|Q(t)|")
        ax.set_title("Size of the DDFN answer at each probed t"); ax.legend(fontsize=8)
        plt.tight_layout(); plt.show()
        """
    ),
    md(
        r"""
        ## The library version, and the proof's $k = \lfloor m/n \rfloor$ instances

        `reductions.max_inner_product` is the same loop. Two of its choices differ from the text
        of the proof, and the cell below checks that neither changes the answer:

        * **cap = 1.** The binary search only needs to know whether $Q$ is empty, and an
          overflowing query has proved $|Q| > \mathrm{cap} \ge 1$. So it runs DDFN with
          `cap=1` (one witness pair, cheap queries) instead of the $m^{4/5} n$ bound.
        * **One instance.** The proof assumes the DDFN structure is fast only for $m > n$ and
          therefore cuts $X$ into $k = \lfloor m/n \rfloor$ groups of $n$ points, one DDFN
          instance each, and updates and queries all $k$ every step. `jaxcorr.ddfn` accepts any
          $n, m$, so one instance over all of $X$ does the same work; `group_size=n` builds the
          proof's $k$ instances.
        """
    ),
    code(
        """
        v1, s1 = reductions.max_inner_product(XA, YA, return_stats=True)
        n_group = 16
        v2, s2 = reductions.max_inner_product(XA, YA, return_stats=True, group_size=n_group)
        brute_v = reductions.max_inner_product_brute(XA, YA)
        print(f"{'':>28} | {'value':>5} | {'instances':>9} | {'steps':>5} | {'point UPDATEs':>13} | {'QUERYs':>6} | witness")
        for name, v, s in [("one instance, cap=1", v1, s1), (f"k = {N}//{n_group} instances, cap=1", v2, s2)]:
            print(f"{name:>28} | {v:>5} | {s['instances']:>9} | {s['iterations']:>5} | {s['updates']:>13} | "
                  f"{s['queries']:>6} | {s['pair']}")
        print(f"{'brute force O(nmd)':>28} | {brute_v:>5}")
        assert v1 == v2 == brute_v == truth
        assert s2["instances"] == N // n_group and s2["updates"] == s2["instances"] * N * s2["iterations"]
        assert s1["updates"] == N * s1["iterations"] and s1["queries"] == s1["iterations"]
        for s in (s1, s2):
            i, j = s["pair"]
            assert XA[i] @ YA[j] == truth  # the witness attains the maximum
        """
    ),
    md(
        r"""
        Each binary-search step costs $m$ point updates and one query per instance, and there are
        $O(\log(\text{range}))$ steps (the table above counts them). This is how the proof charges
        a hypothetical DDFN structure with fast updates and queries: summed over the steps, it
        would solve Max-IP faster than Theorem F.3 allows. With $c = 1/5$ the bound reads
        $m^{4/5} n^{1/5 - o(1)}$ per update and $m^{4/5} n^{6/5 - o(1)}$ per query
        (Theorem 1.4). The paper sets this against its tree-based DDFN (Section 1.1): $O(nmd)$
        preprocessing, $\tilde O(nd)$ per update and $O(\min\{|Q|, m^{4/5} n\})$ per query.

        ### Many random instances

        The reduction is exact on every instance we try (same shapes, so one compilation).
        """
    ),
    code(
        """
        results = []
        for seed in range(20):
            r_ = np.random.default_rng(100 + seed)
            scale = int(r_.integers(1, 50))
            Xr = r_.integers(-scale, scale + 1, size=(N, d))
            Yr = r_.integers(-scale, scale + 1, size=(N, d))
            v, s = reductions.max_inner_product(Xr, Yr, return_stats=True)
            results.append((seed, scale, v, reductions.max_inner_product_brute(Xr, Yr), s["iterations"]))
        for seed, scale, v, bv, it in results[:5]:
            print(f"seed {seed:2d}: entries in [-{scale}, {scale}], reduction {v:6d}, brute force {bv:6d}, {it} steps")
        print("...")
        assert all(v == bv for _, _, v, bv, _ in results)
        print(f"all {len(results)} instances: reduction == brute force")
        """
    ),
    md(
        r"""
        ### Exactness guard

        The trees compute in floating point (float32 by default). Integer inner products are
        exact while every partial sum stays below $2^{24}$; `max_inner_product` bounds them by
        $B + |t|$ with $B = \sum_k \max_i |x_{ik}| \max_j |y_{jk}|$ and refuses inputs beyond
        that range rather than return a wrong answer (enable `jax_enable_x64` for 53 bits).
        """
    ),
    code(
        """
        big = np.full((2, 4), 3000)
        try:
            reductions.max_inner_product(big, big)
            raised = None
        except ValueError as e:
            raised = str(e)
        print("ValueError:", raised)
        assert raised is not None
        """
    ),
    md(
        r"""
        ## Summary

        * `jaxcorr.ddfn` solves DDFN (Definition 1.3) on a DTree: QUERY returns exactly
          $\{(i, j): \langle x_i, y_j\rangle \ge b\}$ (with $> b - 1/2$ on integers), UPDATE
          changes one point, and a too-large answer is reported as overflow.
        * The reduction of Theorem F.4 solves integer Max-IP with $O(\log \text{range})$ rounds of
          $m$ updates and one query; it matches brute force here, with one instance or with the
          proof's $k = \lfloor m/n\rfloor$ instances.
        """
    ),
]

# ============================================================================== 02 sparse training
NB02 = [
    md(
        r"""
        # 2. Sparse training with correlation trees

        The network is 2NN$(m, b)$ of Definition 2.1,
        $$f(W, x, a) = \frac{1}{\sqrt m}\sum_{r=1}^m a_r\, \sigma_b(\langle w_r, x\rangle), \qquad
          \sigma_b(x) = \max\{x - b, 0\}, \qquad L(W) = \tfrac12 \sum_{i=1}^n (f(W, x_i, a) - y_i)^2,$$
        with $w_r \sim N(0, I_d)$, $a_r \in \{\pm 1\}$ fixed, unit-norm inputs and the paper's threshold
        $b = \sqrt{0.4 \ln m}$ (Remark 2.6). A neuron contributes to $f(x_i)$ and to the gradient
        only if it *fires*, $\langle w_r, x_i\rangle > b$ (the fire set $S_{i,\mathrm{fire}}$ of
        Definition 2.4), and Lemma 2.5 says only $O(m e^{-b^2/2}) = O(m^{4/5})$ neurons fire per point.

        `jaxcorr.train.fit` trains $W$ three ways:

        * `"dense"`: plain XLA over all $m$ neurons, $O(nmd)$ per step (the reference);
        * `"dtree"`: Algorithm 8 / Theorem 4.1, fire sets from Correlation DTree queries;
        * `"wtree"`: Algorithm 9 / Theorem 4.2, fire sets from Correlation WTree queries.

        They compute the same fire sets and the same gradients (up to float rounding), so they
        follow the same trajectory. This notebook checks that, follows the fire-set sizes through training against Lemma 2.5,
        and times a step against $m$ on this machine.
        """
    ),
    SETUP,
    code(
        """
        import math
        import statistics
        from jaxcorr import benchmarking, data, nn, train
        """
    ),
    md(
        r"""
        ## Same data, three methods

        $n = 16$ seeded synthetic points in $d = 16$ (`data.synthetic`: unit-norm $x_i$, targets
        $y_i = \tanh(2\langle v, x_i\rangle)$), $m = 4096$ neurons, 100 steps of plain gradient
        descent (`optax.sgd`, learning rate 1.0, the default). The history records the loss
        $L(W(t))$ at every step and the fire-set sizes $k_{i,t} = |S_{i,\mathrm{fire}}(t)|$.
        """
    ),
    code(
        """
        n, d, m, STEPS = 16, 16, 4096, 100
        X, y = data.synthetic(seed=0, n=n, d=d)
        params = nn.init(jax.random.key(0), m, d)
        b = nn.default_threshold(m)
        print(f"n = {n}, d = {d}, m = {m}, b = sqrt(0.4 ln m) = {b:.3f}; initial loss {float(nn.loss(params, X, y, b)):.4f}")

        runs = {}
        for method in ["dense", "dtree", "wtree"]:
            runs[method] = train.fit(params, X, y, steps=STEPS, method=method)
            h = runs[method][1]
            print(f"{method:>5}: loss {h['loss'][0]:.4f} -> {h['loss'][-1]:.5f}, set-up + compile {h['setup_s']:5.1f} s, "
                  f"capacity events {[(e['step'], e['new_capacity']) for e in h['capacity_events']]}")
        """
    ),
    code(
        """
        L = {k: np.asarray(v[1]["loss"], np.float64) for k, v in runs.items()}
        rel = {k: np.abs(L[k] - L["dense"]) / L["dense"] for k in ("dtree", "wtree")}
        dW = {k: float(np.abs(runs[k][0].W - runs["dense"][0].W).max()) for k in ("dtree", "wtree")}
        for k in ("dtree", "wtree"):
            print(f"{k}: max relative loss difference to dense over {STEPS} steps = {rel[k].max():.1e}; "
                  f"max |W_{k} - W_dense| after training = {dW[k]:.1e}")
            assert rel[k].max() < 1e-4 and dW[k] < 1e-4
        assert L["dense"][-1] < 0.05 * L["dense"][0]
        print("the three loss curves agree to float32 rounding; the loss fell by "
              f"{L['dense'][0] / L['dense'][-1]:.0f}x")

        # Neurons that fire for no point at t = 0 never move (the active-set argument of jaxcorr.train).
        A0 = np.asarray(nn.fire_mask(params, X, b)).any(axis=0)
        for k in runs:
            assert np.array_equal(np.asarray(runs[k][0].W)[~A0], np.asarray(params.W)[~A0])
        assert runs["dtree"][1]["n_active"] == A0.sum()
        print(f"|A| = {A0.sum()} of {m} neurons fire for some point at t = 0; in all three runs the other "
              f"{m - A0.sum()} rows of W are exactly unchanged after {STEPS} steps")

        fig, axes = plt.subplots(1, 2, figsize=(13, 4))
        t = np.arange(STEPS)
        for k, style in [("dense", dict(lw=4, alpha=0.4)), ("dtree", dict(lw=1.5, ls="--")), ("wtree", dict(lw=1, ls=":"))]:
            axes[0].plot(t, L[k], label=k, **style)
        axes[0].set_yscale("log"); axes[0].set_xlabel("step t"); axes[0].set_ylabel("loss L(W(t))")
        axes[0].set_title(f"Training loss, m = {m}: dense, dtree (Alg. 8), wtree (Alg. 9)"); axes[0].legend()
        for k in ("dtree", "wtree"):
            axes[1].semilogy(t, np.maximum(rel[k], 1e-10), label=f"|L_{k} - L_dense| / L_dense")
        axes[1].set_xlabel("step t"); axes[1].set_ylabel("relative difference (1e-10 = equal)")
        axes[1].set_title("Difference to the dense trajectory"); axes[1].legend()
        plt.tight_layout(); plt.show()
        """
    ),
    md(
        r"""
        ## Fire-set sizes through training (Lemma 2.5, Lemma B.6)

        With $\|x_i\| = 1$ and $w_r \sim N(0, I_d)$, each $\langle w_r, x_i\rangle$ is a standard
        normal, so at initialisation $\mathbb E[k_{i,0}] = m\,\Pr[N(0,1) > b]$. Lemma 2.5 bounds
        $k_{i,0}$ by $O(m e^{-b^2/2})$, which is $O(m^{4/5})$ for $b = \sqrt{0.4\ln m}$
        (Remark 2.6), and Lemma B.6 extends the bound to every iteration. $m^{4/5}$ is also the
        per-point DDFN cap $\lceil m^{4/5}\rceil$ that `fit` enforces (Definition 1.3).

        The history holds, per step, the mean and max over $i$ of $k_{i,t}$ and the size of the
        union $|\bigcup_i S_{i,\mathrm{fire}}(t)|$: the neurons that receive a gradient at step $t$.
        The three methods compute the inner products in different orders (dense recomputes
        $XW^\top$, the sparse methods update stored values), so a pair whose inner product lies
        within float rounding of $b$ can fire in one and not the other; the cell prints how often.
        """
    ),
    code(
        """
        h = runs["dtree"][1]
        expected = m * 0.5 * math.erfc(b / math.sqrt(2))  # m * P[N(0,1) > b]
        bound = m * math.exp(-b * b / 2)                   # = m^(4/5) for b = sqrt(0.4 ln m)
        assert abs(bound - m ** 0.8) < 1e-6 * bound
        for k in ("dense", "wtree"):
            # total number of firing (i, r) pairs per step, and the other statistics, vs dtree
            dsum = np.abs(np.asarray(runs[k][1]["fire_mean"]) - np.asarray(h["fire_mean"])) * n
            dmax = np.abs(np.asarray(runs[k][1]["fire_max"]) - np.asarray(h["fire_max"]))
            dun = np.abs(np.asarray(runs[k][1]["fire_union"]) - np.asarray(h["fire_union"]))
            print(f"{k} vs dtree: steps where the number of firing pairs differs: {np.count_nonzero(dsum > 0.5)} "
                  f"of {STEPS} (largest difference {dsum.max():.0f} pairs); max_i k_i,t differs at "
                  f"{np.count_nonzero(dmax)} steps, the union at {np.count_nonzero(dun)}")
            assert dsum.max() <= 2 and np.count_nonzero(dsum > 0.5) <= STEPS // 2 and dmax.max() <= 1 and dun.max() <= 2
        print(f"m P[N(0,1) > b] = {expected:.1f};  m exp(-b^2/2) = m^(4/5) = {bound:.1f};  m = {m}")
        print(f"mean_i k_i,t: {h['fire_mean'][0]:.1f} at t=0, {h['fire_mean'][-1]:.1f} at t={STEPS - 1}; "
              f"max_i,t k_i,t = {h['fire_max'].max()}; union: {h['fire_union'][0]} at t=0, "
              f"max {h['fire_union'].max()} ({100 * h['fire_union'].max() / m:.0f}% of m)")
        assert h["fire_max"].max() <= bound
        assert abs(h["fire_mean"][0] - expected) < 0.1 * expected
        print("max fire set stays below m^(4/5) throughout; k_i,0 is within 10% of its expectation")

        fig, ax = plt.subplots(figsize=(10, 4.5))
        ax.plot(h["fire_mean"], label="mean_i k_i,t")
        ax.plot(h["fire_max"], label="max_i k_i,t")
        ax.plot(h["fire_union"], label="|union_i S_i,fire(t)|")
        ax.axhline(expected, color="k", ls=":", label="m P[N(0,1) > b] (expected k_i,0)")
        ax.axhline(bound, color="r", ls="--", label="m exp(-b^2/2) = m^(4/5) (Lemma 2.5)")
        ax.axhline(m, color="0.4", ls="-.", label="m (dense: every neuron)")
        ax.set_yscale("log"); ax.set_xlabel("step t"); ax.set_ylabel("number of neurons")
        ax.set_title(f"Fire-set sizes during training (m = {m}, n = {n}, b = {b:.2f})")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        plt.tight_layout(); plt.show()
        """
    ),
    md(
        r"""
        The same comparison across widths, at initialisation: $k_{i,0}$ for $m = 2^8 \dots 2^{16}$,
        each with its own $b = \sqrt{0.4 \ln m}$, from `nn.init` weights. The fire sets are
        computed densely in numpy (the same test as `nn.fire_mask`), which is cheap at these sizes.
        """
    ),
    code(
        """
        widths = [2 ** e for e in range(8, 17)]
        kmean, kmax, kexp = [], [], []
        for mm in widths:
            p_ = nn.init(jax.random.key(1), mm, d)
            bb = nn.default_threshold(mm)
            k0 = (np.asarray(X) @ np.asarray(p_.W).T > bb).sum(axis=1)  # |S_i,fire(0)| per point
            kmean.append(k0.mean()); kmax.append(k0.max())
            kexp.append(mm * 0.5 * math.erfc(bb / math.sqrt(2)))
        widths, kmean, kmax, kexp = map(np.asarray, (widths, kmean, kmax, kexp))
        for row in zip(widths, kmean, kmax, kexp, widths ** 0.8):
            print("m = {:6d}: mean k_i,0 = {:7.1f}, max = {:5d}, m P[N(0,1)>b] = {:7.1f}, m^(4/5) = {:7.1f}".format(*row))
        assert np.all(kmax <= widths ** 0.8)
        slope = benchmarking.loglog_slope(widths, kmean)
        print(f"log-log slope of mean k_i,0 against m: {slope:.2f} (m^(4/5) has slope 0.8; "
              f"m P[N(0,1)>b] has local slope {benchmarking.loglog_slope(widths, kexp):.2f})")
        assert slope < 0.8

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.loglog(widths, kmean, "o-", label="mean_i k_i,0 (measured)")
        ax.loglog(widths, kmax, "s-", ms=4, label="max_i k_i,0 (measured)")
        ax.loglog(widths, kexp, "k:", label="m P[N(0,1) > b]")
        ax.loglog(widths, widths ** 0.8, "r--", label="m^(4/5) = m exp(-b^2/2)")
        ax.loglog(widths, widths, color="0.4", ls="-.", label="m")
        ax.set_xlabel("width m"); ax.set_ylabel("neurons firing per data point")
        ax.set_title("Fire-set size at initialisation vs width (b = sqrt(0.4 ln m))")
        ax.legend(fontsize=8); plt.show()
        """
    ),
    md(
        r"""
        ## Time per step against $m$ on this machine

        Theorem 4.1 bounds a DTree step by $O(m^{4/5} n^2 d)$ in expectation, against $O(mnd)$
        for a dense step. `fit` reports `ms_per_step`: the wall time of the jitted training steps
        divided by the number of steps, with set-up (tree INIT, compaction of the active neurons)
        and compilation excluded. For each width we run one warm-up call and then
        `REPEATS` timed calls of 100 steps, and report the median.

        **Caveat.** These numbers come from a shared 2-core CPU machine while other jobs run; they
        are noisy, so read the medians and the spread (min-max) rather than single values, and
        treat the fitted exponents as rough. Sizes are kept small so this notebook runs in the
        test suite; `scripts/bench_train.py` measures larger widths.
        """
    ),
    code(
        """
        sizes = [2 ** 12, 2 ** 14, 2 ** 16]  # 2^12 reuses the compiled steps of the runs above
        methods = ["dense", "dtree", "wtree"]
        REPEATS = 3
        med = {k: [] for k in methods}
        spread = {k: [] for k in methods}
        active = []
        for mm in sizes:
            p_ = nn.init(jax.random.key(0), mm, d)
            for k in methods:
                hs = [train.fit(p_, X, y, steps=STEPS, method=k)[1] for _ in range(REPEATS + 1)][1:]
                ms_ = [hh["ms_per_step"] for hh in hs]
                med[k].append(statistics.median(ms_)); spread[k].append((min(ms_), max(ms_)))
                if k == "dtree":
                    active.append(hs[0]["n_active"])
            print(f"m = {mm:6d}: " + ", ".join(f"{k} {med[k][-1]:7.3f} ms" for k in methods)
                  + f"  (|A| = {active[-1]} active neurons)")
        assert all(np.isfinite(v) and v > 0 for k in methods for v in med[k])
        print()
        print("machine:", benchmarking.machine_info())
        """
    ),
    code(
        """
        slopes = {k: benchmarking.loglog_slope(sizes, med[k]) for k in methods}
        print("fitted exponent of ms/step against m: " + ", ".join(f"{k} {slopes[k]:.2f}" for k in methods))
        print(f"exponent of |A| (neurons the sparse methods train) against m: {benchmarking.loglog_slope(sizes, active):.2f}")
        for j, mm in enumerate(sizes):
            print(f"m = {mm:6d}: " + ", ".join(
                f"dense / {k} = {med['dense'][j] / med[k][j]:.2f} ({k} {'faster' if med[k][j] < med['dense'][j] else 'slower'})"
                for k in ("dtree", "wtree")))

        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for k, mk in zip(methods, "os^"):
            lo_, hi_ = np.array(spread[k]).T
            ax.errorbar(sizes, med[k], yerr=[np.array(med[k]) - lo_, hi_ - np.array(med[k])], marker=mk,
                        capsize=3, label=f"{k} (slope {slopes[k]:.2f})")
        ax.set_xscale("log", base=2); ax.set_yscale("log")
        ax.set_xlabel("width m"); ax.set_ylabel("ms per training step (median, bars = min-max)")
        ax.set_title(f"Time per step vs width, n = {n}, d = {d}, {REPEATS} runs of {STEPS} steps (CPU, noisy)")
        ax.legend(); plt.show()
        """
    ),
    md(
        r"""
        How to read this: the dense step touches all $m$ neurons, while the sparse methods train
        only the active neurons $A$ (those that fire for some point at the start; the others
        provably never move, see `jaxcorr.train`), whose number is printed above as $|A|$; its
        fitted exponent against $m$ is printed next to those of the step times. The last cell
        prints, width by width, the speed ratio to dense on this machine. The sparse methods pay
        fixed costs per step (tree queries, gathers) that dense does not, so where they overtake
        dense depends on the machine and its load; read it off the printed ratios rather than
        from this text. `BENCHMARKS.md` has measurements at larger widths.

        ## Summary

        * dense, dtree and wtree training follow the same trajectory (loss and weights agree to
          float32 rounding) and record the same fire sets, up to the odd pair whose inner product
          lies within rounding of $b$ (the printed differences are at most a pair or two).
        * Each point's fire set stays far below $m$ and below $m^{4/5}$ through training (Lemma 2.5,
          Lemma B.6). Neurons outside $A$, the union of the fire sets at the start, never move,
          so the sparse methods only ever work on $A$.
        * Time per step against $m$ is measured, with its noise, above.
        """
    ),
]


NOTEBOOKS = {
    "01_correlation_trees": NB01,
    "02_sparse_training": NB02,
    "03_ddfn_lower_bound": NB03,
}


def make(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    for k, cell in enumerate(nb.cells):  # stable ids, so a rebuild only changes what really changed
        cell["id"] = f"cell-{k:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def kernel_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def execute(nb, timeout: int = 600):
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}})
    client.execute(env=kernel_env())
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="name prefixes of the notebooks to build (default: all)")
    ap.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    args = ap.parse_args(argv)
    for name, cells in NOTEBOOKS.items():
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        nb = make([nbformat.from_dict(c) for c in cells])
        t0 = time.perf_counter()
        if not args.no_execute:
            execute(nb)
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(f"{path.relative_to(ROOT)}: {time.perf_counter() - t0:.1f} s, {path.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
