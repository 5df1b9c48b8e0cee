# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Correlation trees: DTree and WTree
#
# This notebook is a tour of the two data structures of Section 3 of Alman, Liang, Song, Zhang
# and Zhuo, *Bypass Exponential Time Preprocessing* (NeurIPS 2023), as implemented in
# `jaxcorr`:
#
# * the **Correlation DTree** (Theorem 3.1, Algorithms 1, 2, 10-12): one max-tree per data
#   point $x_i$, over the $m$ neurons; leaf $r$ of tree $i$ holds $\langle w_r, x_i\rangle$;
# * the **Correlation WTree** (Theorem 3.2, Algorithms 6, 13-15): one max-tree per neuron
#   $w_r$, over the $n$ data points.
#
# Both are stored as a `jaxcorr.maxtree.MaxTree` (MAKEMAXTREE, Algorithm 7): one array per
# level with a leading axis of trees, leaves first, every parent the max of its two children.
# We build small trees, draw one with its max values, update a neuron and look at the path that
# is recomputed, query at several thresholds, and finally force a query to overflow its
# fixed capacity and re-size it.
#
# Every claim below is checked by an `assert` in the cell that prints it.

# %%
# %matplotlib inline
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxcorr
from jaxcorr import dtree, maxtree, nn, wtree

plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=2, suppress=True, linewidth=110)
print(f"jaxcorr {jaxcorr.__version__}, jax {jax.__version__}, "
      f"backend {jax.default_backend()}, {os.cpu_count()} CPU cores")

# %% [markdown]
# ## A small instance
#
# $m = 6$ neurons and $n = 3$ data points in $d = 3$ dimensions, rounded to one decimal so the
# numbers in the drawings stay readable. `jaxcorr` stores the neurons as the rows of `W`
# (shape `(m, d)`).

# %%
rng = np.random.default_rng(0)
m, n, d = 6, 3, 3
W = np.round(rng.normal(size=(m, d)), 1).astype(np.float32)
X = np.round(rng.normal(size=(n, d)), 1).astype(np.float32)
IP = X @ W.T  # (n, m): <w_r, x_i>
print("W (m, d) =\n", W)
print("X (n, d) =\n", X)
print("<w_r, x_i>, rows i, columns r =\n", IP)

# %% [markdown]
# ## Building a DTree (Lemma D.2)
#
# `dtree.init(W, X)` computes all $nm$ inner products in $O(nmd)$ and builds the $n$ trees.
# The leaves are padded to the next power of two $P$ with $-\infty$, so padding never fires.
# The per-level arrays are the whole state: `levels[0]` has shape `(n, P)`, `levels[l]` has
# shape `(n, P >> l)`, and the last level holds the roots, $\max_r \langle w_r, x_i\rangle$.

# %%
dt = dtree.init(W, X)
P = maxtree.padded_size(m)
print(f"m = {m} leaves padded to P = {P}")
print("level shapes (leaves first):", [lvl.shape for lvl in dt.tree.levels])
for lev, lvl in enumerate(dt.tree.levels):
    print(f"levels[{lev}] =", np.array2string(np.asarray(lvl), prefix=" " * 12))

assert [lvl.shape for lvl in dt.tree.levels] == [(n, P >> lev) for lev in range(P.bit_length())]
assert np.all(np.isneginf(np.asarray(dt.tree.levels[0])[:, m:]))  # padding leaves are -inf
assert np.allclose(dtree.inner_products(dt), IP, atol=1e-6)
assert maxtree.check_invariant(dt.tree)  # every parent is the max of its two children
assert np.allclose(np.asarray(dt.tree.levels[-1])[:, 0], IP.max(axis=1))
print("leaves == X W^T (padding -inf), invariant holds, roots == max_r <w_r, x_i>")


# %% [markdown]
# ### Drawing one tree
#
# A small matplotlib helper draws tree $i$ as text boxes at (leaf position, level). It can
# highlight a path (orange) and the nodes a query examined: green if the node's value is
# $> \tau$ (the search goes below it), grey if it is not (the search stops there).

# %%
def fmt(v):
    return "-inf" if np.isneginf(v) else f"{v:.2f}"


def node_colour(node, path, passed, failed):
    if node in path:
        return "orange"
    if node in passed:
        return "palegreen"
    return "0.85" if node in failed else "white"


def draw_tree(ax, levels, *, path=(), passed=(), failed=(), title="", leaf_name="r"):
    """Draw one max-tree given its per-level 1-D arrays (leaves first)."""
    levels = [np.asarray(v) for v in levels]
    P = levels[0].shape[0]
    path, passed, failed = set(path), set(passed), set(failed)
    for lev, vals in enumerate(levels):
        span = 2 ** lev
        for k, v in enumerate(vals):
            x = (k + 0.5) * span
            if lev > 0:
                for c in (2 * k, 2 * k + 1):
                    ax.plot([x, (c + 0.5) * 2 ** (lev - 1)], [lev, lev - 1], color="0.6", lw=1,
                            zorder=1)
            face = node_colour((lev, k), path, passed, failed)
            ax.text(x, lev, fmt(v), ha="center", va="center", fontsize=9, zorder=2,
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
    """The per-level 1-D arrays of tree t of a MaxTree."""
    return [np.asarray(lvl[t]) for lvl in tree.levels]


fig, ax = plt.subplots(figsize=(8, 3.2))
draw_tree(ax, tree_levels(dt.tree, 0),
          title="DTree, tree i = 0: leaf r holds <w_r, x_0>; parents hold the max")
plt.show()

# %% [markdown]
# ## Updating one neuron (Lemma D.3, Algorithm 1 lines 23-30)
#
# `dtree.update(dt, r, z)` sets $w_r \leftarrow z$. In each of the $n$ trees only leaf $r$
# changes, so only the leaf-to-root path of $r$, the nodes $(l, \lfloor r / 2^l \rfloor)$, is
# recomputed: $O(n(d + \log m))$ work. The update is functional (it returns a new `DTree`);
# `update(..., donate=True)` donates the old buffers so XLA writes in place.
#
# Below we move neuron $r = 2$ onto $x_0$'s direction, so it becomes the largest leaf of
# tree 0, and compare every level before and after.

# %%
r = 2
z = (1.5 * X[0] / np.linalg.norm(X[0])).astype(np.float32)
dt2 = dtree.update(dt, r, z)
path = [(lev, r >> lev) for lev in range(len(dt.tree.levels))]
print(f"recomputed path of leaf r={r} (level, index):", path)

for i in range(n):
    changed = []
    for lev, (lo, hi) in enumerate(zip(dt.tree.levels, dt2.tree.levels)):
        changed += [(lev, int(k)) for k in np.flatnonzero(np.asarray(lo[i]) != np.asarray(hi[i]))]
    print(f"tree i={i}: nodes whose value changed: {changed}")
    assert set(changed) <= set(path), "an update may only change nodes on the leaf-to-root path"

W2 = W.copy()
W2[r] = z
assert np.allclose(dtree.inner_products(dt2), X @ W2.T, atol=1e-6)
assert maxtree.check_invariant(dt2.tree)
assert int(np.argmax(np.asarray(dtree.inner_products(dt2))[0])) == r
print(f"after the update: leaf {r} is the largest of tree 0, leaves == X W'^T and the invariant "
      f"holds in all {n} trees")

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 3.2))
draw_tree(axes[0], tree_levels(dt.tree, 0), path=path, title=f"tree i = 0 before update(r = {r})")
draw_tree(axes[1], tree_levels(dt2.tree, 0), path=path,
          title=f"tree i = 0 after update(r = {r}): path recomputed")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The WTree (Lemmas D.6-D.8)
#
# The WTree stores the same inner products transposed: $m$ trees, tree $r$ over the $n$ data
# points (padded to the next power of two). Updating $w_r$ rebuilds tree $r$ only
# (Algorithm 14), $O(nd)$, and leaves the other $m - 1$ trees untouched.

# %%
wt = wtree.init(W, X)
print(f"WTree: {m} trees over n = {n} points padded to {maxtree.padded_size(n)} leaves; "
      "level shapes:", [lvl.shape for lvl in wt.tree.levels])
assert np.allclose(wtree.inner_products(wt), dtree.inner_products(dt).T)
print("WTree leaves are the transpose of the DTree leaves")

wt2 = wtree.update(wt, r, z)
rows_changed = sorted({int(t) for lo, hi in zip(wt.tree.levels, wt2.tree.levels)
                       for t in np.flatnonzero(np.any(np.asarray(lo) != np.asarray(hi), axis=1))})
print(f"trees (rows) that changed after wtree.update(r={r}):", rows_changed)
assert rows_changed == [r]
assert np.allclose(wtree.inner_products(wt2), dtree.inner_products(dt2).T, atol=1e-6)
assert maxtree.check_invariant(wt2.tree)

fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
whole = [(lev, k) for lev, lvl in enumerate(wt2.tree.levels) for k in range(lvl.shape[1])]
draw_tree(axes[0], tree_levels(wt.tree, r), leaf_name="i (data point)",
          title=f"WTree, tree r = {r}, before")
draw_tree(axes[1], tree_levels(wt2.tree, r), leaf_name="i (data point)", path=whole,
          title=f"WTree, tree r = {r}, after: the whole tree is rebuilt")
plt.tight_layout()
plt.show()


# %% [markdown]
# ## Queries at several thresholds (Lemma D.4, Algorithm 2 FIND)
#
# `dtree.query(dt, i, tau, capacity)` returns the neurons with
# $\langle w_r, x_i\rangle > \tau$ (strict, as $\sigma_b(x) > 0$ needs), i.e. the fire set
# $S_{i,\mathrm{fire}}$ of Definition 2.4 when $\tau = b$. The search starts at the root and
# only descends below nodes whose value is $> \tau$; a node with value $\le \tau$ has no
# firing leaf under it. The result has a static length `capacity`: ascending indices, padded
# with the sentinel $m$, a `valid` mask, the `count` and an `overflow` flag.
#
# To see the work, `find_host` below replays the same top-down search in numpy and records
# the nodes it examines. (The jitted query finds the same passing nodes with a frontier of
# `capacity` slots, several levels per step; see `jaxcorr.maxtree`.)

# %%
def find_host(levels, tau):
    """Top-down FIND on one tree (numpy): returns (fired leaves, passed nodes, failed nodes)."""
    frontier = np.array([0])
    passed, failed = [], []
    for lev in range(len(levels) - 1, -1, -1):
        ok = levels[lev][frontier] > tau
        passed += [(lev, int(k)) for k in frontier[ok]]
        failed += [(lev, int(k)) for k in frontier[~ok]]
        if lev == 0:
            return frontier[ok], passed, failed
        frontier = np.stack([2 * frontier[ok], 2 * frontier[ok] + 1], axis=1).reshape(-1)


i = 0
ip0 = np.asarray(dtree.inner_products(dt2))[i]
levels0 = tree_levels(dt2.tree, i)
print("<w_r, x_0> =", ip0)
print(f"{'tau':>6} | {'query(i=0, tau)':<22} | {'count':>5} | {'overflow':>8} | "
      f"{'brute force':<18} | nodes examined")
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

# %%
taus = [-1.0, 0.5, 2.0]
fig, axes = plt.subplots(1, 3, figsize=(18, 3.2))
for ax, tau in zip(axes, taus):
    fired, passed, failed = find_host(levels0, tau)
    draw_tree(ax, levels0, passed=passed, failed=failed,
              title=f"query(i=0, tau={tau}): fires {fired.tolist()}, "
                    f"examines {len(passed) + len(failed)} nodes")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same query on the WTree answers the dual question of Definition 2.4: the data points
# $\tilde S_{r,\mathrm{fire}} = \{i : \langle w_r, x_i\rangle > \tau\}$ of neuron $r$.
# `query_all` runs the query for every tree at once (a `vmap`), with one capacity for all.

# %%
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
pairs_w = {(int(ii), rr) for rr in range(m)
           for ii in np.asarray(fw.indices[rr])[np.asarray(fw.valid[rr])]}
assert pairs_d == pairs_w
print("DTree and WTree report the same firing pairs (i, r):", sorted(pairs_d))

# %% [markdown]
# ## A larger instance: query work follows the output size
#
# Now $m = 4096$ neurons with $w_r \sim N(0, I_d)$ and $n = 64$ unit-norm points, so each
# $\langle w_r, x_i \rangle \sim N(0, 1)$. We query every point at several thresholds,
# including the paper's $b = \sqrt{0.4 \ln m}$ (Remark 2.6), check each answer against
# brute force and count the nodes FIND examines. A full scan would read all $m$ leaves;
# FIND examines at most $2|S|\log_2 P + 1$ nodes (two children per passing node on
# $|S|$ root-to-leaf paths), and fewer when paths share their top.

# %%
m_big, n_big, d_big = 4096, 64, 16
kw, kx = jax.random.split(jax.random.key(0))
W_big = jax.random.normal(kw, (m_big, d_big))
X_big = jax.random.normal(kx, (n_big, d_big))
X_big = X_big / jnp.linalg.norm(X_big, axis=1, keepdims=True)
dt_big = dtree.init(W_big, X_big)
ip_big = np.asarray(dtree.inner_products(dt_big))
b = nn.default_threshold(m_big)  # sqrt(0.4 ln m)
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
print(f"b = sqrt(0.4 ln m) = {b:.3f}; {len(rows)} queries, all equal to brute force and within "
      "2 |S| log2 P + 1 nodes")
for tau in np.unique(rows[:, 0]):
    sel = rows[rows[:, 0] == tau]
    print(f"tau = {tau:.3f}: |S| median {np.median(sel[:, 1]):6.0f}, nodes examined median "
          f"{np.median(sel[:, 2]):6.0f} (a full scan reads {m_big} leaves)")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.5))
for tau in np.unique(rows[:, 0]):
    sel = rows[rows[:, 0] == tau]
    ax.scatter(sel[:, 1], sel[:, 2], s=12, label=f"tau = {tau:.2f}")
s = np.logspace(0, np.log10(m_big), 50)
ax.plot(s, 2 * s * logP + 1, "k--", lw=1, label="2 |S| log2 P + 1")
ax.axhline(2 * maxtree.padded_size(m_big) - 1, color="r", lw=1, label="all nodes of the tree")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("|S| = number of firing neurons (query output size)")
ax.set_ylabel("nodes examined by FIND")
ax.set_title(f"Query work vs output size (m = {m_big}, n = {n_big})")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Forcing an overflow, and re-sizing the capacity
#
# The capacity of a query is a static shape (changing it compiles a new version), so the fire
# set may not fit. FIND never drops a firing neuron silently: when more nodes pass at some
# level than the frontier holds, the result has `overflow=True` and `count` is a lower bound
# on $|S|$ that exceeds the capacity; the indices it does return are all genuine.
#
# The fix follows jax-md's neighbour lists: on the host, re-size the capacity from the
# measured count with 25% headroom, `int(count * 1.25)` (capped at $m$), and rerun. Because
# `count` is only a lower bound under overflow, this may take more than one round; each round
# at least multiplies the capacity by 1.25.

# %%
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

# %% [markdown]
# For a batch query the same rule sizes one capacity for all trees from the largest count.
# This is what `jaxcorr.train.fit` does between jitted chunks of training (see notebook 2).

# %%
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

# %% [markdown]
# ## Summary
#
# * `dtree` and `wtree` keep $\langle w_r, x_i\rangle$ in per-level max-tree arrays
#   (Algorithm 7); the invariant "parent = max of children" is checked by
#   `maxtree.check_invariant`.
# * A DTree update changes only the leaf-to-root path of the neuron in each of the $n$ trees
#   (Lemma D.3); a WTree update rebuilds one tree (Lemma D.7).
# * A query returns exactly $\{r : \langle w_r, x_i\rangle > \tau\}$ (Lemmas D.4, D.8) and its
#   work follows the output size, not $m$.
# * A fixed capacity that is too small is reported (`overflow`, `count > capacity`), never
#   silently truncated; re-sizing from the count and rerunning gives the exact answer.
#
# Next: notebook 2 trains a network with these trees, notebook 3 looks at DDFN and its lower
# bound.
