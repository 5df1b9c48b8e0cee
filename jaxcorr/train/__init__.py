r"""Gradient-descent training of 2NN(m, b): dense, on the active rows, or on the correlation trees.

:func:`fit` trains ``W`` (``a`` stays fixed, Section 2) with any optax optimizer, by one of

- ``"dense"``: plain XLA on all ``m`` neurons, O(nmd) per step (the reference);
- ``"active"`` (the default): the same GD on the active rows ``A`` only (below), with the fire
  sets from the masked comparison :math:`\langle w_r, x_i\rangle > b` over (n, |A|) every step and
  no trees in the loop; ``A`` comes from the same comparison on the leaves of INIT at set-up
  (dtree and wtree find it by QUERY on their trees). Inside ``A`` about 1/n of the rows fire per point, so a
  frontier would cost as much
  as the masked pass it replaces: this is the fastest exact method on one device and on a mesh;
- ``"dtree"``: Algorithm 8 / Theorem 4.1 -- fire sets from Correlation DTree queries (Theorem 3.1),
  forward pass from the stored inner products, sparse gradient, tree updates for the changed rows;
- ``"wtree"``: Algorithm 9 / Theorem 4.2 -- :math:`\tilde S_{r,fire}` from Correlation WTree queries
  (Theorem 3.2) and :math:`S_{i,fire}` derived from them.

All follow the same trajectory (up to float rounding). Training is three pure pieces over one
:class:`TrainState` pytree: :func:`setup` (host: INIT, the active set, capacities),
:func:`run_chunk` (jitted: a ``lax.scan`` over steps, the state donated) and :func:`finalize` (back
to the caller's shapes); :func:`fit` is the host loop over chunks between them (callbacks,
capacity checks, fallbacks).

**The active-set invariant** (what makes the sparse methods cost O(|A| n d), Theorem 4.1's
O(m^{4/5} n^2 d), instead of O(m n d)). At set-up, ``fit`` builds the full tree over all ``m``
neurons (DTree/WTree INIT, Lemmas D.2/D.6), queries the fire sets at ``t = 0`` and forms

.. math:: A = \bigcup_i S_{i,fire}(0) \;\cup\; \{r : \text{the optimizer state of row } r
          \text{ differs from a fresh } \texttt{init}\}.

Claim: rows outside ``A`` never move and never fire. Induction on ``t``: if ``r`` is not in ``A``
and ``w_r(t) = w_r(0)``, then ``r`` fires for no point, so its gradient row is zero (Section 2's
gradient has the factor :math:`1[\langle w_r, x_i\rangle > b]`) and its state is the fresh one by
induction. Whether the optimizer then leaves the row alone, and computes the rows of ``A`` as it
would on all ``m`` rows, is decided by construction, never from numbers (:mod:`jaxcorr.train._linearity`):
its ``init``/``update`` are read as jaxprs and must keep rows apart (cross-row reductions only as
sums of values that are zero on idle rows, e.g. ``clip_by_global_norm``) and compute the same
value, independent of the row's parameters, on every idle row; weight decay, per-tensor norms
(LARS/LAMB, adafactor), ``reduce_max`` over rows (sm3) and per-row randomness are refused up front.
What remains, whether that common value is "no move", is checked every step on a padding row of
the compacted tensor (the idle-row guard, O(d)): if it would move, the step is not kept and ``fit``
raises :class:`jaxcorr.errors.IdleRowMoved` naming the step (or, with ``fallback="dense"``, continues dense from
the last
exact state, the start of that chunk). So ``w_r(t+1) = w_r(0)`` and ``r`` still fires for no point.
Hence training runs on the ``|A|`` rows only, trees included, and the result is scattered back at
the end (when ``A`` is every held row, as for the implicit wide models, the held rows are used as
they are and sliced back, with no gathered copy and no scatter). A capacity never needs to exceed ``|A|``. The span
(Gram) path, which runs the optimizer on
the (|A|, n) coefficients of the data instead of (|A|, d) rows, is taken only for :func:`sgd`
(linear by construction).

**Capacity and overflow** (jax-md style). The per-point frontier capacity of the DTree query is
static: sized from the data (``max_i k_{i,0}`` plus 25% headroom), and grown only when needed. Each
chunk reports a sticky overflow flag (FIND found more firing neurons than the capacity holds); the
host then reruns the chunk from its starting state with a larger capacity, and records a capacity
event. A firing neuron is never dropped. Past the DDFN cap :math:`\lceil m^{4/5}\rceil` per point
(Definition 1.3, Theorem 4.1), ``fit`` raises :class:`jaxcorr.errors.DDFNCapExceeded` naming the cap, or continues
with the
dense method if ``fallback="dense"``.

Examples:
  >>> import jax
  >>> from jaxcorr import data, nn, train
  >>> X, y = data.synthetic(seed=0, n=4, d=8)
  >>> params = nn.init(jax.random.key(0), m=256, d=8)
  >>> p1, h1 = train.fit(params, X, y, steps=5, method="active", b=1.0)
  >>> p2, h2 = train.fit(params, X, y, steps=5, method="dense", b=1.0)
  >>> bool(abs(h1.loss - h2.loss).max() <= 2e-4 * h2.loss.max())
  True
"""

from __future__ import annotations

from jaxcorr.linear import LinearOptimizer, sgd
from jaxcorr.train._finalize import coefficients, finalize
from jaxcorr.train._fit import DEFAULT_CHUNK, fit, fit_coordinates, setup
from jaxcorr.train._history import CapacityGrown, FellBackToDense, History, InitialCapacity
from jaxcorr.train._loop import run_chunk
from jaxcorr.train._setup import ddfn_cap
from jaxcorr.train._state import Coefficients, Config, StepConfig, StepStats, TrainState
from jaxcorr.train._validate import DEFAULT_LEARNING_RATE, DEFAULT_METHOD, FALLBACKS, METHODS

__all__ = ["fit", "fit_coordinates", "setup", "run_chunk", "finalize", "coefficients", "Coefficients", "TrainState",
           "Config",
           "StepConfig", "StepStats", "History", "InitialCapacity", "CapacityGrown", "FellBackToDense", "sgd",
           "LinearOptimizer", "METHODS", "DEFAULT_METHOD", "DEFAULT_LEARNING_RATE", "DEFAULT_CHUNK", "FALLBACKS",
           "ddfn_cap"]
