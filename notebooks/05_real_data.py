# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Real data: digits 0 vs 1, the method the cost model picks, and held-out accuracy
#
# The other notebooks use a handful of synthetic points. Here the data are real: scikit-learn's
# handwritten digits (`sklearn.datasets.load_digits`, shipped with scikit-learn, nothing is
# downloaded), the images of a 0 or a 1: $n = 360$ points in $d = 64$ (8x8 pixels). Labels are
# $y_i = -1$ for a 0 and $+1$ for a 1. The paper assumes unit-norm inputs, $\|x_i\| = 1$
# (Definition 2.1, Lemma 2.5), so every image is scaled to norm 1. A seeded 75/25 split keeps a
# quarter of the images out of training to judge the trained network on.
#
# Which method? `jaxcorr.cost.choose(n, m, d, steps=..., x_norms=...)` predicts every method's
# per-step, set-up and compile time from the problem's sizes (the module docstring of
# `jaxcorr.cost` gives the terms and their calibration) and picks the fastest exact one, dense
# included, with a one-line reason. `train.fit(method="auto")` makes the same choice; this
# notebook calls `cost.choose` itself to show it, then trains with `train.fit(method=choice.method)`
# and, from the same $W(0)$, with `method="dense"`. Every method is exact: the two runs must
# end at the same $W$ up to float rounding, and so at the same train and held-out accuracy. What
# the choice buys is time per step, measured at the end and compared with the model's prediction.

# %%
# %matplotlib inline
import math
import os
import statistics

import jax
import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.datasets import load_digits

import jaxcorr
from jaxcorr import benchmarking, cost, evaluation, methods, nn, train

plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "axes.grid": True, "grid.alpha": 0.3})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
print(f"jaxcorr {jaxcorr.__version__}, jax {jax.__version__}, scikit-learn {sklearn.__version__}, "
      f"backend {jax.default_backend()}, {os.cpu_count()} CPU cores")

# %% [markdown]
# ## The data: 0 vs 1, unit norm, a held-out quarter

# %%
images, digit = load_digits(return_X_y=True)
keep = digit <= 1
X = images[keep].astype(np.float32)
X /= np.linalg.norm(X, axis=1, keepdims=True)  # ||x_i|| = 1, the paper's setting
y = np.where(digit[keep] == 1, 1.0, -1.0).astype(np.float32)
n_all, d = X.shape
order = np.random.default_rng(0).permutation(n_all)
cut = (3 * n_all) // 4
Xtr, ytr, Xte, yte = X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]
n = len(Xtr)
assert (n_all, d) == (360, 64) and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
assert set(np.unique(y)) == {-1.0, 1.0}
print(f"{n_all} images of a 0 or a 1, d = {d}: {n} to train on ({int((ytr > 0).sum())} ones), "
      f"{len(Xte)} held out ({int((yte > 0).sum())} ones)")
cos = (Xtr @ Xtr.T)[np.triu_indices(n, 1)]
print(f"cosine between two training images: mean {cos.mean():.2f}, min {cos.min():.2f} "
      "(pixels are >= 0: every pair of images points into the same orthant)")

# %% [markdown]
# ## The method: `method="auto"`, that is `cost.choose` on this data's |A|
#
# The width is $m = 2^{14}$: wide enough for the sparse methods to have work to skip, small
# enough for this notebook to run in seconds with dense training beside it. The threshold is the
# paper's $b = \sqrt{0.4 \ln m}$ (Remark 2.6), `train.fit`'s default, with its default optimizer
# (`train.sgd`, plain gradient descent). A sparse step's cost is proportional to $|A|$, the rows
# that fire for some point, and $|A|$ depends on the data: `cost.sampled_active` counts it on a
# sample of rows (what `train.fit(method="auto")` and `jaxcorr train --method auto` do), where
# `cost.expected_active` assumes points in general position. The cell prints every method's
# prediction both ways and the choice with its reason.

# %%
m, STEPS = 2 ** 14, 30
b = nn.default_threshold(m)
A_sampled = cost.sampled_active(Xtr, m, b)  # |A| counted on 4096 rows drawn from N(0, I_d)
blind = cost.choose(n, m, d, steps=STEPS, x_norms=np.linalg.norm(Xtr, axis=1))  # points in general position
choice = cost.choose(n, m, d, steps=STEPS, x_norms=np.linalg.norm(Xtr, axis=1), n_active=A_sampled)
print(f"|A|: {A_sampled:.0f} counted on a sample of rows, {blind.predictions['active'].n_active:.0f} if the "
      f"points were in general position; without the count the model would pick {blind.method!r}")
print(f"m = 2^14 = {m}, b = {b:.3f}, {STEPS} steps of train.sgd at learning rate {train.DEFAULT_LEARNING_RATE}")
print(f"{'method':>7} {'ms/step':>9} {'set-up s':>9} {'compile s':>10} {'total s':>8} {'|A| (est.)':>11}")
for k, p in choice.predictions.items():
    print(f"{k:>7} {p.step_s * 1e3:9.2f} {p.setup_s:9.2f} {p.compile_s:10.2f} {p.total_s:8.2f} "
          f"{p.n_active:11.0f}{'' if p.exact else '  (not exact here: excluded)'}")
print(f"\nchoice: {choice.method!r}  --  {choice.reason}")
if choice.dense_expected_faster:
    print("warning: dense is predicted faster per step than the chosen method")
assert choice.method in methods.names() and choice.predictions[choice.method].exact
assert choice.predictions[choice.method].total_s == min(p.total_s for p in choice.predictions.values() if p.exact)
# the sparse method to compare with dense: the choice, or (if the model picks dense) the best sparse one
SPARSE = choice.method if choice.method != "dense" else min(
    (p for p in choice.predictions.values() if p.exact and p.method != "dense"), key=lambda p: p.total_s).method
print(f"trained below: {SPARSE!r} and 'dense', from the same W(0)")

# %% [markdown]
# ## Training: the chosen method and dense, from the same $W(0)$
#
# `nn.init` draws $W(0)$ with rows $w_r \sim N(0, I_d)$ and fixed signs $a_r \in \{\pm 1\}$.
# Both runs start from it; `train.fit` returns the trained parameters and a history with the
# paper's loss $L = \frac12\sum_i (f(x_i) - y_i)^2$ at every step (divided by $n$ below: the
# mean loss, comparable with the held-out set's).

# %%
params = nn.init(jax.random.key(0), m, d)
auto = train.fit(params, Xtr, ytr, steps=STEPS, method="auto")  # the choice made inside fit
print(f"train.fit(method='auto') ran {auto[1].method!r}: {auto[1].method_reason}")
assert auto[1].method == choice.method
runs = {k: auto if k == auto[1].method else train.fit(params, Xtr, ytr, steps=STEPS, method=k)
        for k in (SPARSE, "dense")}
for k, (_, h) in runs.items():
    print(f"{k:>7}: mean training loss {h.loss[0] / n:.4f} -> {h.loss[-1] / n:.5f}, "
          f"|A| = {h.n_active} trained rows, set-up + compile {h.setup_s:.2f} s")
W0 = np.asarray(params.W)
W_s, W_d = (np.asarray(runs[k][0].W) for k in (SPARSE, "dense"))
L_s, L_d = (np.asarray(runs[k][1].loss, np.float64) for k in (SPARSE, "dense"))
rel = float((np.abs(L_s - L_d) / L_d).max())
gap = np.abs(W_s - W_d).max(axis=1)
print(f"max relative loss difference over {STEPS} steps = {rel:.1e}; rows of W moved by up to "
      f"{np.abs(W_d - W0).max():.2f}; |W_{SPARSE} - W_dense| per row: below 1e-5 in "
      f"{(gap < 1e-5).sum()} of {m} rows, at most {gap.max():.1e}")
assert rel < 1e-4 and L_d[-1] < 0.05 * L_d[0]
assert (gap >= 1e-5).sum() <= 10 and gap.max() < 1e-2

# %% [markdown]
# ### An independent check: float64 gradient descent in numpy
#
# A few rows differ by more than $10^{-5}$ between the two float32 runs. Which run is right? The
# oracle below is plain gradient descent in float64 numpy on the rows of $A$ (the rows that
# fire for some training image at $t = 0$; the others never fire, so they never move and add
# nothing to $f$). It records, per row, how close any inner product
# $\langle w_r(t), x_i\rangle$ came to $b$ during training. The threshold is $b$ as float32
# holds it, the value the float32 runs compare with.

# %%
bf = float(np.float32(b))
X64, y64 = Xtr.astype(np.float64), ytr.astype(np.float64)
A = np.flatnonzero((X64 @ W0.astype(np.float64).T > bf).any(axis=0))
W, a_A, scale = W0[A].astype(np.float64), np.asarray(params.a, np.float64)[A], 1 / np.sqrt(m)
margin, L_o = np.full(A.size, np.inf), []
for _ in range(STEPS):  # L = 1/2 sum_i (f(x_i) - y_i)^2, W <- W - lr dL/dW (train.sgd, lr 1)
    Z = X64 @ W.T
    margin = np.minimum(margin, np.abs(Z - bf).min(axis=0))
    e = np.where(Z > bf, Z - bf, 0) @ a_A * scale - y64
    L_o.append(0.5 * e @ e)
    W -= train.DEFAULT_LEARNING_RATE * (np.where(Z > bf, e[:, None], 0) * (a_A * scale)).T @ X64
W_o = W0.astype(np.float64)
W_o[A] = W
near = A[margin < 1e-5]  # rows with an inner product within 1e-5 of b at some step
print(f"oracle: |A| = {A.size} rows trained in float64; {near.size} of them came within 1e-5 of b")
for k, Wk, Lk in ((SPARSE, W_s, L_s), ("dense", W_d, L_d)):
    dev = np.abs(Wk - W_o).max(axis=1)
    off = np.flatnonzero(dev >= 1e-5)
    print(f"{k:>7} (float32) vs the float64 oracle: loss within {np.abs(Lk / L_o - 1).max():.1e} "
          f"(relative); W within 1e-5 in all rows but {off.tolist()} (up to {dev.max():.1e}), "
          f"each of which came within 1e-5 of b")
    assert np.abs(Lk / L_o - 1).max() < 1e-4 and np.isin(off, near).all()
    assert np.array_equal(Wk[np.setdiff1d(np.arange(m), A)], W0[np.setdiff1d(np.arange(m), A)])
print(f"the rows outside A are W(0)'s rows, bit for bit, in both runs: only the {A.size} rows of A move")

# %% [markdown]
# Both float32 runs agree with the float64 oracle everywhere except at a handful of rows, and
# those are rows where an inner product came within float32 rounding of $b$ during training:
# there the fire test $\langle w_r, x_i\rangle > b$ can go either way in float32, in dense as in
# the sparse method (they compute the inner products in different orders, so they are not
# always the same rows). That is the exactness the methods promise: the same computation, up to
# float rounding.

# %% [markdown]
# ## Evaluation: train and held-out accuracy
#
# `evaluation.evaluate(params, X, y)` reports the paper's loss, its mean over the points, and,
# for labels in $\{-1, +1\}$, the accuracy: the fraction of points with $f(x_i)\, y_i > 0$.

# %%
ev = {(k, split): evaluation.evaluate(runs[k][0], Xs, ys)
      for k in (SPARSE, "dense") for split, Xs, ys in (("train", Xtr, ytr), ("held-out", Xte, yte))}
ev0 = {split: evaluation.evaluate(params, Xs, ys) for split, Xs, ys in (("train", Xtr, ytr), ("held-out", Xte, yte))}
print(f"{'':>8} {'split':>9} {'accuracy':>9} {'mean loss':>10}")
for split in ("train", "held-out"):
    print(f"{'W(0)':>8} {split:>9} {ev0[split].accuracy:9.3f} {ev0[split].loss_mean:10.5f}")
for (k, split), e in ev.items():
    print(f"{k:>8} {split:>9} {e.accuracy:9.3f} {e.loss_mean:10.5f}")
for split in ("train", "held-out"):
    a, c = ev[(SPARSE, split)], ev[("dense", split)]
    assert a.accuracy == c.accuracy and abs(a.loss_mean - c.loss_mean) < 1e-4 * c.loss_mean
assert ev[("dense", "held-out")].accuracy >= 0.95 and ev[("dense", "train")].accuracy >= 0.95
pred_s, pred_d = (np.asarray(evaluation.predict(runs[k][0], Xte)) for k in (SPARSE, "dense"))
print(f"the two models' held-out outputs differ by at most {np.abs(pred_s - pred_d).max():.1e}; "
      f"{SPARSE} and dense agree on every held-out label; both classify at least 95% of the held-out images")

# %% [markdown]
# ## Time per step: measured against predicted
#
# As in notebook 2: `fit`'s `ms_per_step` is the wall time of the jitted training steps divided
# by their number, set-up and compilation excluded. The runs above compiled the steps; each
# method now runs `REPEATS` more times, and the median is reported with the spread (min-max).
# The cost model's |A| is the sampled count; the |A| measured on this $W(0)$ is printed beside it.
#
# **Caveat.** The machine is a small shared CPU machine (printed below), so times are noisy:
# read the medians and the spread, and expect them to move between runs as the machine's load
# does. The prediction
# comes from coefficients fitted on this kind of machine (`docs/bench/cost_calibration.json`,
# which records the model's error); the prediction and the measurement are printed side by side.

# %%
REPEATS = 3
ms = {k: [train.fit(params, Xtr, ytr, steps=STEPS, method=k)[1].ms_per_step for _ in range(REPEATS)]
      for k in (SPARSE, "dense")}
med = {k: statistics.median(v) for k, v in ms.items()}
pred = {k: choice.predictions[k].step_s * 1e3 for k in (SPARSE, "dense")}
ratio, ratio_pred = med["dense"] / med[SPARSE], pred["dense"] / pred[SPARSE]
for k in (SPARSE, "dense"):
    print(f"{k:>7}: {med[k]:7.2f} ms/step measured (median of {REPEATS}, min {min(ms[k]):.2f}, "
          f"max {max(ms[k]):.2f}); {pred[k]:7.2f} predicted")
print(f"dense / {SPARSE}: {ratio:.1f}x measured, {ratio_pred:.1f}x predicted by the cost model "
      f"({SPARSE} {'faster' if ratio > 1 else 'slower'} than dense here)")
print(f"|A| = {runs[SPARSE][1].n_active} measured, {choice.predictions[SPARSE].n_active:.0f} sampled "
      f"by the model ({runs[SPARSE][1].n_active / m:.0%} vs {choice.predictions[SPARSE].n_active / m:.0%} of m)")
indep = m * (1 - (1 - 0.5 * math.erfc(b / math.sqrt(2))) ** n)  # |A| if the n points fired independently
print(f"if the {n} points fired independently: |A| = m (1 - (1 - Q(b))^n) = {indep:.0f}")
# the sparse step's terms other than the constant c_0 are proportional to |A| (the table in jaxcorr.cost)
c0 = cost.STEP_COEF[SPARSE][0] * 1e3
pred_A = dict(pred, **{SPARSE: c0 + (pred[SPARSE] - c0) * runs[SPARSE][1].n_active
                       / choice.predictions[SPARSE].n_active})
print(f"the model's {SPARSE} step with the measured |A| in place of its estimate: {pred_A[SPARSE]:.2f} ms "
      f"(measured {med[SPARSE]:.2f}): dense / {SPARSE} = {pred_A['dense'] / pred_A[SPARSE]:.1f}x")
assert all(np.isfinite(v) and v > 0 for v in med.values())
assert indep > 0.9 * m and runs[SPARSE][1].n_active < 0.5 * indep
assert abs(A_sampled / runs[SPARSE][1].n_active - 1) < 0.15  # the sampled count is this W's |A|, to sampling error
print("\nmachine:", benchmarking.machine_info())

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
t = np.arange(STEPS)
axes[0].semilogy(t, L_d / n, lw=4, alpha=0.4, label="dense")
axes[0].semilogy(t, L_s / n, "--", label=SPARSE)
axes[0].set_xlabel("step t")
axes[0].set_ylabel("mean training loss L(W(t)) / n")
axes[0].set_title(f"Training on digits 0 vs 1 (n = {n}, m = 2^14)")
axes[0].legend()
x = np.arange(2)
for j, k in enumerate(("W(0)", SPARSE, "dense")):
    accs = [(ev0[s] if k == "W(0)" else ev[(k, s)]).accuracy for s in ("train", "held-out")]
    axes[1].bar(x + (j - 1) * 0.27, accs, 0.27, label=k if k != "W(0)" else "W(0), untrained")
    axes[1].bar_label(axes[1].containers[j], fmt="%.3f", fontsize=8)
axes[1].set_xticks(x, ["train", "held-out"])
axes[1].set_ylim(0.0, 1.3)
axes[1].set_ylabel("accuracy")
axes[1].set_title("Accuracy: the same network either way")
axes[1].legend(loc="upper center", ncol=3, fontsize=8)
bars = (("measured (median, min-max)", med), ("cost model", pred), ("cost model, measured |A|", pred_A))
for j, (lab, vals) in enumerate(bars):
    axes[2].bar(x + (j - 1) * 0.27, [vals[SPARSE], vals["dense"]], 0.27, label=lab)
lo = [med[k] - min(ms[k]) for k in (SPARSE, "dense")]
hi = [max(ms[k]) - med[k] for k in (SPARSE, "dense")]
axes[2].errorbar(x - 0.27, [med[SPARSE], med["dense"]], yerr=[lo, hi], fmt="none", ecolor="k", capsize=4)
axes[2].set_xticks(x, [SPARSE, "dense"])
axes[2].set_ylabel("ms per step")
axes[2].set_title(f"Time per step: dense / {SPARSE} = {ratio:.1f}x measured, {ratio_pred:.1f}x predicted")
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## How to read this
#
# * The cost model's choice is printed above with its reason; training with it and with dense
#   from the same $W(0)$ gives the same weights to float rounding, so the same train and
#   held-out accuracy: a sparse method changes how long a step takes, never what is learned.
# * The measured speed ratio and the predicted one are printed side by side. With $n = 270$
#   training points, $n\, Q(b)$ is large: if the points fired independently, almost every
#   neuron would fire for some point ($|A| \approx m$, printed above), leaving the sparse
#   methods little to skip. The digit images are strongly correlated (they share the positive
#   orthant), so far fewer neurons fire for some image: the measured $|A|$, printed beside the
#   cost model's estimate, is less than half of that, and it is what the sparse methods train.
#   The model's step of a sparse method grows with $|A|$, so `method="auto"` counts it on a
#   sample of rows (`cost.sampled_active`) instead of assuming independent points: with the
#   count the model's ratio is close to the measured one; without it, it would have
#   under-predicted the sparse method's advantage several-fold (both printed above).
# * The paper's bound for a step, $O(m^{4/5} n^2 d)$ (Theorem 4.1), beats dense's $O(mnd)$ only
#   while $n$ is small against $m^{1/5}$; at hundreds of points the advantage the sparse methods
#   keep comes from $|A| < m$, not from the per-point fire sets. Where the cost model predicts
#   dense to be faster, it picks dense, and `fit(method="auto")` does the same.
