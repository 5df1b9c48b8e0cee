# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Widths dense training cannot hold: the network as its key
#
# The paper's invariant (Section 2, behind Theorems 4.1 and 4.2): a neuron that fires for no
# data point at $t = 0$ has a zero gradient, so it never moves and never fires. Its row stays
# $w_r(0)$, a pure function of the PRNG key. Only the *active rows*
# $$A = \bigcup_{i=1}^n S_{i,\mathrm{fire}}(0), \qquad |A| \approx n\, m\, Q(b)$$
# (Definition 2.4, Lemma 2.5) ever need to exist in memory. `jaxcorr.wide` builds on this:
#
# - `wide.setup(key, m, d, X)` streams $W(0)$ over $m$ in chunks generated from the key and
#   keeps only the rows of $A$;
# - `wide.fit` trains those rows at the full width's scale $1/\sqrt m$: the trajectory of the
#   full network;
# - `wide.predict` streams $W(0)$ again and swaps in the trained rows;
# - `checkpoint.save` / `checkpoint.restore` checkpoint the model. With `train.sgd` (SGD, momentum: the span
#   path) every trained row is $w_r(0) + \sum_i K_{ri} x_i$, so the checkpoint holds
#   $K \in \mathbb R^{|A| \times n}$ instead of the rows.
#
# This notebook checks each of these against the eager network (`nn.init` + `train.fit`) at a
# width small enough to hold, then shows the sizes at widths that cannot be held.

# %%
# %matplotlib inline
import json
import os
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np

import jaxcorr
from jaxcorr import checkpoint, data, memory, nn, train, wide

np.set_printoptions(precision=3, suppress=True, linewidth=110)
print(f"jaxcorr {jaxcorr.__version__}, jax {jax.__version__}, backend {jax.default_backend()}")

# %% [markdown]
# ## Set-up: the active rows, streamed from the key
#
# A width of $m = 2^{20}$ with $n = 8$ points in $d = 64$ dimensions: the eager $W$ is 256 MiB
# here, so the two can be compared.

# %%
m, n, d = 1 << 20, 8, 64
key = jax.random.key(0)
X, y = data.synthetic(0, n, d)
model, info = wide.setup(key, m, d, X)
b = model.b
print(f"b = sqrt(0.4 ln m) = {b:.3f};  |A| = {model.n_active:,} of m = {m:,} rows "
      f"({model.n_active / m:.2%}), set-up {info['setup_s']:.1f} s")
print(f"held rows: {model.W.nbytes / 2**20:.1f} MiB instead of {m * d * 4 / 2**20:.0f} MiB for W")

# the oracle: the eager W(0) in float64 numpy, and the rows that fire for some point
W0 = nn.init(key, m, d)
ip = np.asarray(X, np.float64) @ np.asarray(W0.W, np.float64).T
fires = np.flatnonzero((ip > b).any(axis=0))
held = np.asarray(model.idx)
assert np.isin(fires, held).all(), "a row that fires at t = 0 is missing"
assert np.array_equal(np.asarray(model.W), np.asarray(W0.W)[held]), "held rows are not W(0)'s rows"
print(f"every one of the {fires.size:,} firing rows is held; the other {held.size - fires.size:,} held rows "
      "lie within float rounding of b (kept so that no rounding can hide a firing row)")

# %% [markdown]
# ## Training: the same trajectory as the full network

# %%
opt = train.sgd(0.5, momentum=0.9)
trained, hist = wide.fit(model, X, y, steps=30, optimizer=opt, method="active", chunk_size=10)
eager, hist_e = train.fit(W0, X, y, steps=30, optimizer=opt, method="dense", b=b)
gap = float(np.abs(hist.loss - hist_e.loss).max() / hist_e.loss.max())
print(f"loss {hist.loss[0]:.4f} -> {hist.loss[-1]:.4f};  max relative gap to dense over all m rows: {gap:.1e}")
assert gap < 1e-5
moved = np.asarray(eager.W)[held] - np.asarray(trained.W)
print(f"trained rows vs the dense run's rows: max abs difference {np.abs(moved).max():.1e}")
assert np.abs(moved).max() < 1e-5
rest = np.setdiff1d(np.arange(m), held)
assert np.array_equal(np.asarray(eager.W)[rest], np.asarray(W0.W)[rest]), "a row outside A moved"
print(f"the {rest.size:,} rows outside A are W(0)'s rows, bit for bit, in the dense run too")

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
ax.semilogy(np.asarray(hist_e.loss), "o-", ms=4, label="dense: all m rows (train.fit)")
ax.semilogy(np.asarray(hist.loss), "x--", ms=6, label=f"wide model: the {held.size:,} held rows (wide.fit)")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_title(f"the same trajectory, m = {m:,}")
ax.legend()
plt.show()

# %%
Xt, _ = data.synthetic(1, 16, d)
p_wide = wide.predict(trained, Xt)
p_eager = nn.predict(eager, Xt, b)
print("predict on 16 new points, wide vs eager:", np.abs(np.asarray(p_wide - p_eager)).max())
assert np.allclose(p_wide, p_eager, atol=1e-5)

# %% [markdown]
# ## Checkpoints: the coefficients, not the rows
#
# The run above used `train.sgd` with momentum: every update of a row is a combination of the
# data points, so the trained model carries `coefficients` ($K$, its momentum, the rows they
# belong to). `checkpoint.save` stores those and $X$; `checkpoint.restore` redraws the rows of
# $W(0)$ from the key (`nn.rows_at`: $|A|$ rows, not $m$) and adds $K X$. Training goes on from
# $K$ step for step.

# %%
c = trained.coefficients
print(f"K: {c.K.shape} ({c.K.nbytes / 2**20:.2f} MiB) for rows of {model.d} floats "
      f"({trained.W.nbytes / 2**20:.1f} MiB)")
tmp = tempfile.mkdtemp()
coef_path, rows_path = os.path.join(tmp, "coef.ckpt"), os.path.join(tmp, "rows.ckpt")
checkpoint.save(coef_path, trained, X=X, y=y, opt_state=hist.opt_state, step=30)
checkpoint.save(rows_path, trained, X=X, y=y, opt_state=hist.opt_state, step=30, form="rows")
sizes = {p: os.path.getsize(p) / 2**20 for p in (coef_path, rows_path)}
print(f"checkpoint: {sizes[coef_path]:.2f} MiB as coefficients, {sizes[rows_path]:.2f} MiB as rows "
      f"(W itself: {m * d * 4 / 2**20:.0f} MiB)")
assert sizes[coef_path] < 0.25 * sizes[rows_path]

ck = checkpoint.restore(coef_path, optimizer=opt)
assert np.array_equal(np.asarray(ck.model.W), np.asarray(trained.W)), "the rows are not restored bit for bit"
more, h2 = wide.fit(ck.model, X, y, steps=10, optimizer=opt, method="active", chunk_size=10)
once, h3 = wide.fit(model, X, y, steps=40, optimizer=opt, method="active", chunk_size=10)
same = np.array_equal(np.asarray(more.W), np.asarray(once.W))
print(f"30 + 10 steps through the checkpoint equal 40 at once, bit for bit: {same}")
assert same and np.array_equal(np.concatenate([hist.loss, h2.loss]), h3.loss)

# %% [markdown]
# ## At widths that cannot be held
#
# `memory.estimate` gives the peak memory of a run before anything is allocated (the CLI
# refuses a run that does not fit with one line naming it). Below: the eager dense run against the
# wide model's run of `method="active"` with `train.sgd`, and the checkpoint sizes, at $n = 8$,
# $d = 64$. Measured on the project's 2-core CPU (README, `docs/bench/`): $m = 2^{26}$ peaks at
# 2.1-2.5 GiB and checkpoints in 76 MB; $m = 2^{28}$ trains 100 steps in 4.9 GiB.

# %%
print(f"{'m':>6} {'|A| (est.)':>12} {'dense peak':>11} {'wide peak':>14} {'W':>9} {'ckpt rows':>10} {'ckpt K':>8}")
for logm in (20, 22, 24, 26, 28, 30):
    mm = 1 << logm
    dense = memory.estimate("dense", n=8, m=mm, d=64).total
    est = memory.estimate("active", n=8, m=mm, d=64, wide=True, optimizer="sgd")
    k = est.n_active
    print(f"  2^{logm} {k:>12,} {dense / 2**30:>9.1f} G {est.total / 2**30:>12.2f} G {mm * 64 * 4 / 2**30:>7.1f} G"
          f" {k * (64 + 2) * 4 / 2**20:>7.0f} M {k * (8 + 2) * 4 / 2**20:>6.0f} M")

# %% [markdown]
# The rows a wide network needs grow as $n\, m\, Q(b) \approx n\, m^{4/5}$: the wide model's
# memory and its checkpoint grow four times slower than $W$'s.

# %%
bench = json.load(open(os.path.join("..", "docs", "bench", "bench_width.json")))
runs = [r for r in bench["runs"] if "peak_bytes" in r]
ms = np.array([1 << lg for lg in range(18, 33)], dtype=float)
fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4))
a1.loglog(ms, [memory.expected_active(int(x), 8) for x in ms], "-", label="expected $|A| = n\\,m\\,Q(b)$ (union bound)")
a1.loglog(ms, ms, ":", label="m (all rows)")
wide_runs = [r for r in runs if r["mode"] != "dense"]
a1.loglog([r["m"] for r in wide_runs], [r["n_active"] for r in wide_runs], "o", label="|A| measured (bench_width)")
a1.set_xlabel("m")
a1.set_ylabel("rows")
a1.set_title("rows held: $|A|$ against the width")
a1.legend()
a2.loglog(ms, [memory.estimate("dense", n=8, m=int(x), d=64).total / 2**30 for x in ms], "-", label="dense, estimate")
a2.loglog(ms, [memory.estimate("active", n=8, m=int(x), d=64, wide=True, optimizer="sgd").total / 2**30 for x in ms],
          "-", label="wide model, estimate")
for mode, mk in (("dense", "s"), ("implicit", "o")):
    rs = [r for r in runs if r["mode"] == mode]
    a2.loglog([r["m"] for r in rs], [r["peak_bytes"] / 2**30 for r in rs], mk,
              label=("dense" if mode == "dense" else "wide model") + ", measured peak")
a2.axhline(24, color="grey", lw=0.8, ls="--")
a2.text(ms[0], 26, "this machine: 24 GiB", fontsize=8)
a2.set_xlabel("m")
a2.set_ylabel("peak memory, GiB")
a2.set_title("peak memory against the width (n = 8, d = 64)")
a2.legend(fontsize=8)
plt.show()
