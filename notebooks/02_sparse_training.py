# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Sparse training with correlation trees
#
# The network is 2NN$(m, b)$ of Definition 2.1,
# $$f(W, x, a) = \frac{1}{\sqrt m}\sum_{r=1}^m a_r\, \sigma_b(\langle w_r, x\rangle), \qquad
#   \sigma_b(x) = \max\{x - b, 0\}, \qquad L(W) = \tfrac12 \sum_{i=1}^n (f(W, x_i, a) - y_i)^2,$$
# with $w_r \sim N(0, I_d)$, $a_r \in \{\pm 1\}$ fixed, unit-norm inputs and the paper's
# threshold $b = \sqrt{0.4 \ln m}$ (Remark 2.6). A neuron contributes to $f(x_i)$ and to the
# gradient only if it *fires*, $\langle w_r, x_i\rangle > b$ (the fire set
# $S_{i,\mathrm{fire}}$ of Definition 2.4), and Lemma 2.5 says only
# $O(m e^{-b^2/2}) = O(m^{4/5})$ neurons fire per point.
#
# `jaxcorr.train.fit` trains $W$ by each of the methods listed in `jaxcorr.train.METHODS`
# (printed below). `"dense"` is plain XLA over all $m$ neurons, $O(nmd)$ per step, the
# reference; `"dtree"` is Algorithm 8 (Theorem 4.1), with fire sets from Correlation DTree
# queries; `"wtree"` is Algorithm 9 (Theorem 4.2), with fire sets from Correlation WTree
# queries. All methods compute the same fire sets and the same gradients (up to float
# rounding), so they follow the same trajectory. This notebook checks that for every method,
# follows the fire-set sizes through training against Lemma 2.5, and times a step against $m$
# on this machine.

# %%
# %matplotlib inline
import math
import os
import statistics

import jax
import matplotlib.pyplot as plt
import numpy as np

import jaxcorr
from jaxcorr import benchmarking, data, nn, train

plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=2, suppress=True, linewidth=110)
print(f"jaxcorr {jaxcorr.__version__}, jax {jax.__version__}, "
      f"backend {jax.default_backend()}, {os.cpu_count()} CPU cores")

# %%
ABOUT = {
    "dense": "every neuron, plain XLA, O(nmd) per step (the reference)",
    "dtree": "Algorithm 8 / Theorem 4.1: fire sets from Correlation DTree queries",
    "wtree": "Algorithm 9 / Theorem 4.2: fire sets from Correlation WTree queries",
    "active": "the active rows A only, fire sets by a masked comparison, no trees in the loop",
}
METHODS = list(train.METHODS)
SPARSE = [k for k in METHODS if k != "dense"]
assert "dense" in METHODS and SPARSE
for k in METHODS:
    print(f"{k:>6}: {ABOUT.get(k, 'see help(jaxcorr.train.fit)')}")

# %% [markdown]
# ## Same data, every method
#
# $n = 16$ seeded synthetic points in $d = 16$ (`data.synthetic`: unit-norm $x_i$, targets
# $y_i = \tanh(2\langle v, x_i\rangle)$), $m = 4096$ neurons, 100 steps of plain gradient
# descent with `fit`'s default optimizer (`train.sgd` at `train.DEFAULT_LEARNING_RATE`,
# printed below). The history records the loss $L(W(t))$ at every step and the fire-set sizes
# $k_{i,t} = |S_{i,\mathrm{fire}}(t)|$.

# %%
n, d, m, STEPS = 16, 16, 4096, 100
X, y = data.synthetic(seed=0, n=n, d=d)
params = nn.init(jax.random.key(0), m, d)
b = nn.default_threshold(m)
print(f"n = {n}, d = {d}, m = {m}, b = sqrt(0.4 ln m) = {b:.3f}, "
      f"learning rate {train.DEFAULT_LEARNING_RATE}; "
      f"initial loss {float(nn.loss(params, X, y, b)):.4f}")

runs = {}
for method in METHODS:
    runs[method] = train.fit(params, X, y, steps=STEPS, method=method)
    h = runs[method][1]
    events = [(e["step"], e["new_capacity"]) for e in h.capacity_events]
    print(f"{method:>6}: loss {h.loss[0]:.4f} -> {h.loss[-1]:.5f}, "
          f"set-up + compile {h.setup_s:5.1f} s, capacity events {events}")

# %%
L = {k: np.asarray(v[1].loss, np.float64) for k, v in runs.items()}
rel = {k: np.abs(L[k] - L["dense"]) / L["dense"] for k in SPARSE}
dW = {k: float(np.abs(runs[k][0].W - runs["dense"][0].W).max()) for k in SPARSE}
for k in SPARSE:
    print(f"{k}: max relative loss difference to dense over {STEPS} steps = {rel[k].max():.1e}; "
          f"max |W_{k} - W_dense| after training = {dW[k]:.1e}")
    assert rel[k].max() < 1e-4 and dW[k] < 1e-4
assert L["dense"][-1] < 0.05 * L["dense"][0]
print(f"all {len(METHODS)} loss curves agree to float32 rounding; the loss fell by "
      f"{L['dense'][0] / L['dense'][-1]:.0f}x")

# Neurons that fire for no point at t = 0 never move (the active-set argument of jaxcorr.train).
A0 = np.asarray(nn.fire_mask(params, X, b)).any(axis=0)
for k in METHODS:
    assert np.array_equal(np.asarray(runs[k][0].W)[~A0], np.asarray(params.W)[~A0])
assert runs["dtree"][1].n_active == A0.sum()
print(f"|A| = {A0.sum()} of {m} neurons fire for some point at t = 0; in all {len(METHODS)} "
      f"runs the other {m - A0.sum()} rows of W are exactly unchanged after {STEPS} steps")

fig, axes = plt.subplots(1, 2, figsize=(13, 4))
t = np.arange(STEPS)
axes[0].plot(t, L["dense"], label="dense", lw=4, alpha=0.4)
for k, ls in zip(SPARSE, ["--", ":", "-.", (0, (1, 3))]):
    axes[0].plot(t, L[k], label=k, lw=1.5, ls=ls)
    axes[1].semilogy(t, np.maximum(rel[k], 1e-10), label=f"|L_{k} - L_dense| / L_dense")
axes[0].set_yscale("log")
axes[0].set_xlabel("step t")
axes[0].set_ylabel("loss L(W(t))")
axes[0].set_title(f"Training loss, m = {m}, every method of train.METHODS")
axes[0].legend()
axes[1].set_xlabel("step t")
axes[1].set_ylabel("relative difference (1e-10 = equal)")
axes[1].set_title("Difference to the dense trajectory")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Fire-set sizes through training (Lemma 2.5, Lemma B.6)
#
# With $\|x_i\| = 1$ and $w_r \sim N(0, I_d)$, each $\langle w_r, x_i\rangle$ is a standard
# normal, so at initialisation $\mathbb E[k_{i,0}] = m\,\Pr[N(0,1) > b]$. Lemma 2.5 bounds
# $k_{i,0}$ by $O(m e^{-b^2/2})$, which is $O(m^{4/5})$ for $b = \sqrt{0.4\ln m}$
# (Remark 2.6), and Lemma B.6 extends the bound to every iteration. $m^{4/5}$ is also the
# per-point DDFN cap $\lceil m^{4/5}\rceil$ that `fit` enforces (Definition 1.3).
#
# The history holds, per step, the mean and max over $i$ of $k_{i,t}$ and the size of the
# union $|\bigcup_i S_{i,\mathrm{fire}}(t)|$: the neurons that receive a gradient at step $t$.
# The methods compute the inner products in different orders (dense recomputes $XW^\top$,
# the sparse methods update stored values or work on the active rows), so a pair whose inner
# product lies within float rounding of $b$ can fire in one and not another; the cell prints
# how often, for every method against `"dtree"`.

# %%
h = runs["dtree"][1]
expected = m * 0.5 * math.erfc(b / math.sqrt(2))  # m * P[N(0,1) > b]
bound = m * math.exp(-b * b / 2)                   # = m^(4/5) for b = sqrt(0.4 ln m)
assert abs(bound - m ** 0.8) < 1e-6 * bound
for k in METHODS:
    if k == "dtree":
        continue
    hk = runs[k][1]
    # total number of firing (i, r) pairs per step, and the other statistics, vs dtree
    dsum = np.abs(np.asarray(hk.fire_mean) - np.asarray(h.fire_mean)) * n
    dmax = np.abs(np.asarray(hk.fire_max) - np.asarray(h.fire_max))
    dun = np.abs(np.asarray(hk.fire_union) - np.asarray(h.fire_union))
    print(f"{k} vs dtree: steps where the number of firing pairs differs: "
          f"{np.count_nonzero(dsum > 0.5)} of {STEPS} (largest difference {dsum.max():.0f} pairs); "
          f"max_i k_i,t differs at {np.count_nonzero(dmax)} steps, "
          f"the union at {np.count_nonzero(dun)}")
    assert dsum.max() <= 2 and np.count_nonzero(dsum > 0.5) <= STEPS // 2
    assert dmax.max() <= 1 and dun.max() <= 2
print(f"m P[N(0,1) > b] = {expected:.1f};  m exp(-b^2/2) = m^(4/5) = {bound:.1f};  m = {m}")
print(f"mean_i k_i,t: {h.fire_mean[0]:.1f} at t=0, {h.fire_mean[-1]:.1f} at t={STEPS - 1}; "
      f"max_i,t k_i,t = {h.fire_max.max()}; union: {h.fire_union[0]} at t=0, "
      f"max {h.fire_union.max()} ({100 * h.fire_union.max() / m:.0f}% of m)")
assert h.fire_max.max() <= bound
assert abs(h.fire_mean[0] - expected) < 0.1 * expected
print("max fire set stays below m^(4/5) throughout; k_i,0 is within 10% of its expectation")

fig, ax = plt.subplots(figsize=(10, 4.5))
ax.plot(h.fire_mean, label="mean_i k_i,t")
ax.plot(h.fire_max, label="max_i k_i,t")
ax.plot(h.fire_union, label="|union_i S_i,fire(t)|")
ax.axhline(expected, color="k", ls=":", label="m P[N(0,1) > b] (expected k_i,0)")
ax.axhline(bound, color="r", ls="--", label="m exp(-b^2/2) = m^(4/5) (Lemma 2.5)")
ax.axhline(m, color="0.4", ls="-.", label="m (dense: every neuron)")
ax.set_yscale("log")
ax.set_xlabel("step t")
ax.set_ylabel("number of neurons")
ax.set_title(f"Fire-set sizes during training (m = {m}, n = {n}, b = {b:.2f})")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
plt.tight_layout()
plt.show()

# %% [markdown]
# The same comparison across widths, at initialisation: $k_{i,0}$ for $m = 2^8 \dots 2^{16}$,
# each with its own $b = \sqrt{0.4 \ln m}$, from `nn.init` weights. The fire sets are
# computed densely in numpy (the same test as `nn.fire_mask`), which is cheap at these sizes.

# %%
widths = [2 ** e for e in range(8, 17)]
kmean, kmax, kexp = [], [], []
for mm in widths:
    p_ = nn.init(jax.random.key(1), mm, d)
    bb = nn.default_threshold(mm)
    k0 = (np.asarray(X) @ np.asarray(p_.W).T > bb).sum(axis=1)  # |S_i,fire(0)| per point
    kmean.append(k0.mean())
    kmax.append(k0.max())
    kexp.append(mm * 0.5 * math.erfc(bb / math.sqrt(2)))
widths, kmean, kmax, kexp = map(np.asarray, (widths, kmean, kmax, kexp))
for row in zip(widths, kmean, kmax, kexp, widths ** 0.8):
    print("m = {:6d}: mean k_i,0 = {:7.1f}, max = {:5d}, m P[N(0,1)>b] = {:7.1f}, "
          "m^(4/5) = {:7.1f}".format(*row))
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
ax.set_xlabel("width m")
ax.set_ylabel("neurons firing per data point")
ax.set_title("Fire-set size at initialisation vs width (b = sqrt(0.4 ln m))")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Time per step against $m$ on this machine
#
# Theorem 4.1 bounds a DTree step by $O(m^{4/5} n^2 d)$ in expectation, against $O(mnd)$
# for a dense step. `fit` reports `ms_per_step`: the wall time of the jitted training steps
# divided by the number of steps, with set-up (tree INIT, compaction of the active neurons)
# and compilation excluded. For each width and method we run one warm-up call and then
# `REPEATS` timed calls of `STEPS` steps, and report the median.
#
# **Caveat.** These numbers come from a small shared CPU machine (described at the end of
# the cell); they are noisy, so read the medians and the spread (min-max) rather than single
# values, and treat the fitted exponents as rough. Sizes are kept small so this notebook runs
# in the test suite; the scripts in `scripts/` measure larger widths.

# %%
sizes = [2 ** 12, 2 ** 14, 2 ** 16]  # 2^12 reuses the compiled steps of the runs above
REPEATS = 3
med = {k: [] for k in METHODS}
spread = {k: [] for k in METHODS}
n_active = []
for mm in sizes:
    p_ = nn.init(jax.random.key(0), mm, d)
    for k in METHODS:
        hs = [train.fit(p_, X, y, steps=STEPS, method=k)[1] for _ in range(REPEATS + 1)][1:]
        ms_ = [hh.ms_per_step for hh in hs]
        med[k].append(statistics.median(ms_))
        spread[k].append((min(ms_), max(ms_)))
        if k == "dtree":
            n_active.append(hs[0].n_active)
    print(f"m = {mm:6d}: " + ", ".join(f"{k} {med[k][-1]:7.3f} ms" for k in METHODS)
          + f"  (|A| = {n_active[-1]} active neurons)")
assert all(np.isfinite(v) and v > 0 for k in METHODS for v in med[k])
print()
print("machine:", benchmarking.machine_info())

# %%
slopes = {k: benchmarking.loglog_slope(sizes, med[k]) for k in METHODS}
print("fitted exponent of ms/step against m: "
      + ", ".join(f"{k} {slopes[k]:.2f}" for k in METHODS))
print("exponent of |A| (neurons the sparse methods train) against m: "
      f"{benchmarking.loglog_slope(sizes, n_active):.2f}")
for j, mm in enumerate(sizes):
    print(f"m = {mm:6d}: " + ", ".join(
        f"dense / {k} = {med['dense'][j] / med[k][j]:.2f} "
        f"({k} {'faster' if med[k][j] < med['dense'][j] else 'slower'})" for k in SPARSE))

fig, ax = plt.subplots(figsize=(7.5, 4.5))
for k, mk in zip(METHODS, "os^dv<>"):
    lo_, hi_ = np.array(spread[k]).T
    mid = np.array(med[k])
    ax.errorbar(sizes, mid, yerr=[mid - lo_, hi_ - mid], marker=mk, capsize=3,
                label=f"{k} (slope {slopes[k]:.2f})")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("width m")
ax.set_ylabel("ms per training step (median, bars = min-max)")
ax.set_title(f"Time per step vs width, n = {n}, d = {d}, {REPEATS} runs of {STEPS} steps "
             "(CPU, noisy)")
ax.legend()
plt.show()

# %% [markdown]
# How to read this: the dense step touches all $m$ neurons, while the sparse methods train
# only the active neurons $A$ (those that fire for some point at the start; the others
# provably never move, see `jaxcorr.train`), whose number is printed above as $|A|$; its
# fitted exponent against $m$ is printed next to those of the step times. The last cell
# prints, width by width, the speed ratio of each sparse method to dense on this machine. The
# sparse methods pay fixed costs per step (queries, gathers) that dense does not, so where
# they overtake dense depends on the machine and its load; read it off the printed ratios
# rather than from this text. `BENCHMARKS.md` has measurements at larger widths.
#
# ## Summary
#
# * Every method of `train.METHODS` follows the dense trajectory (loss and weights agree to
#   float32 rounding) and records the same fire sets, up to the odd pair whose inner product
#   lies within rounding of $b$ (the printed differences are at most a pair or two).
# * Each point's fire set stays far below $m$ and below $m^{4/5}$ through training (Lemma 2.5,
#   Lemma B.6). Neurons outside $A$, the union of the fire sets at the start, never move,
#   so the sparse methods only ever work on $A$.
# * Time per step against $m$ is measured, with its noise, above.
