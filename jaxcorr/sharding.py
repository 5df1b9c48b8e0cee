r"""Correlation trees across a device mesh: Section 5's parallel tree updates on JAX's SPMD machinery.

Section 5 of the paper observes that the ``n`` trees of the Correlation DTree (one per data point,
Theorem 3.1) are updated independently, so with enough processors a training step of Algorithm 8
costs O(m^{4/5} n d) instead of O(m^{4/5} n^2 d). This module lays the ``n`` trees out across the
devices of a :class:`jax.sharding.Mesh` and runs :func:`jaxcorr.train.fit` (``method="dtree"``, and
``method="active"``, which splits the same point axis of its (n, |A|) masked passes with no trees)
on that layout with :func:`jax.shard_map`; across hosts the same code runs after
:func:`jax.distributed.initialize` on a global mesh. There is no scheduler of our own.

**The axis: data points.** The DTree is indexed by (point ``i``, neuron ``r``). We shard ``i``:

- each device owns ``n / D`` trees (all levels), the rows of ``X`` and ``y`` for those points, and
  (for the Gram path) the matching rows of ``G = X X^T`` and columns of ``K``;
- the fire-set queries (FIND, Lemma D.4), the forward pass (Algorithm 8 line 13, from the stored
  leaves), the coefficients ``P_{i,r}(u_i - y_i)`` and the tree rebuild for the changed rows
  (UPDATE, Lemma D.3) only touch the device's own points: no communication;
- the one place the math sums over points is the gradient of a neuron,
  :math:`\partial L / \partial w_r = \frac{a_r}{\sqrt m}\sum_i (u_i - y_i) x_i
  1[\langle w_r, x_i\rangle > b]`.
  That is one ``psum`` of the (|A|, d) gradient rows per step (generic path), or one
  ``psum_scatter`` of the (|A|, n) partial products ``K G`` (Gram path, where the sum over points
  sits in the new inner products :math:`\langle w_r, x_i\rangle = IP0 + \sum_j K_{rj} G_{ji}`).
  The loss and the step statistics (mean / max fire count, size of the union of the fire sets,
  the overflow flag) add a scalar ``psum``/``pmax`` each and one ``pmax`` over |A| flags.

The trained rows ``W_A`` (|A|, d) and their optimizer state are replicated, as in data-parallel
training: every device applies the same update to the summed gradient. Memory per device is
O(n |A| / D) for the trees plus O(|A| d) for the rows; the trees dominate as soon as n / D > d.

*Why not the neuron axis.* Sharding ``r`` would split every tree's leaves: memory O(n m / D) per
device too, and the update of a neuron would be local, but FIND walks each tree top-down, so the
upper levels (or a frontier that crosses shards) would have to be exchanged, and the forward pass
:math:`u_i = \sum_r a_r \sigma_b(\cdot)` would need a ``psum`` over devices for every point, every
step, before the gradient can even be formed. The point axis is the one Section 5 parallelises, and
it keeps every tree whole on one device. (Both axes at once would compose the two; not needed here.)

**Uneven sizes.** JAX (0.10) only places arrays whose sharded axis is a multiple of the device
count, so the point axis is padded to ``n_pad = D * ceil(n / D)`` with points that can never fire
and never contribute:

- in :func:`fit`'s sharded runner, padding points have zero rows in ``X``, target 0 and a ``valid``
  flag that is False; their leaves are forced to ``-inf`` after every step, so their fire sets are
  empty, their residual is 0 and they add nothing to the loss, the gradient or the statistics;
- in :func:`shard_dtree` / :func:`shard_ddfn`, which return a plain :class:`~jaxcorr.dtree.DTree`
  for the unchanged functional API, a padding point is a row of NaN in ``X`` and a tree whose
  nodes are all NaN. ``NaN > tau`` is False for every ``tau``, so FIND never enters such a tree,
  and :func:`jaxcorr.dtree.update` keeps it NaN (``NaN * z = NaN``), so it stays inert through
  any number of updates (``-inf`` leaves would not: an update recomputes them as ``<w, 0> = 0``).
  Neuron padding already exists: leaves past ``m`` are ``-inf`` up to the power of two.

**What runs where.** ``fit``'s set-up (INIT over all ``m`` neurons, Lemma D.2, and the fire sets
at ``t = 0`` that define the active rows ``A``) runs sharded by points too, so no device ever holds
the full (n, m) inner products; the small per-row pieces (``W_A``, the optimizer state, the Gram
matrix for the span path) are formed on the default device of each process, then placed. Every
training step is sharded. The result is gathered back to full ``(m, d)`` on the default device,
exactly like the single-device path. ``method="dense"`` and ``"wtree"`` do not take a mesh; the
dense fallback past the DDFN cap runs on one device. ``method="active"`` has the same layout minus
the trees: its leaves are recomputed each step from the replicated rows (generic path, local) or
from ``K`` (span path, one ``psum_scatter``), and its gradient is the same one ``psum``.

**Multi-host.** Call :func:`jax.distributed.initialize` in every process first, then build the
mesh over the global devices (``jax.make_mesh((jax.device_count(),), ("data",))`` or
:func:`data_mesh`) and call ``fit`` with the same arguments in every process. Arrays are placed with
:func:`jax.make_array_from_callback`, which is multi-process safe, and everything the host reads
back is replicated. This path is not tested here (one host only). A mesh from ``jax.make_mesh``
(Explicit axes by default in JAX 0.10) is used with the same devices and Auto axes (:func:`layout`).

Examples:
  >>> import jax
  >>> from jaxcorr import data, nn, sharding, train
  >>> mesh = sharding.data_mesh()                 # all devices, one axis named "data"
  >>> X, y = data.synthetic(seed=0, n=6, d=8)
  >>> params = nn.init(jax.random.key(0), m=256, d=8)
  >>> p1, h1 = train.fit(params, X, y, steps=5, method="dtree", b=1.0, mesh=mesh)
  >>> p2, h2 = train.fit(params, X, y, steps=5, method="dtree", b=1.0)
  >>> bool(abs(h1["loss"] - h2["loss"]).max() <= 2e-4 * h2["loss"].max())
  True

References:
  Alman, Liang, Song, Zhang, Zhuo. Bypass Exponential Time Preprocessing: Fast Neural Network
  Training via Weight-Data Correlation Preprocessing. NeurIPS 2023. Section 5 (parallel updates),
  Theorem 3.1 (Correlation DTree), Algorithm 8 / Theorem 4.1.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcorr import _linalg
from jaxcorr import _train_steps as _ts
from jaxcorr import ddfn, maxtree
from jaxcorr import train as _train
from jaxcorr.dtree import DTree

__all__ = [
    "data_mesh",
    "Layout",
    "layout",
    "padded_count",
    "shard_dtree",
    "unshard_dtree",
    "shard_ddfn",
    "bytes_per_device",
]

DEFAULT_AXIS = "data"


# --------------------------------------------------------------------------------------- layout
def data_mesh(devices=None, axis_name: str = DEFAULT_AXIS) -> Mesh:
    """A 1-D :class:`~jax.sharding.Mesh` over ``devices`` (default: all global devices, ``jax.devices()``).

    Args:
      devices: a sequence of devices; default every device of every process.
      axis_name: the name of the mesh axis the data points are sharded along.

    Returns:
      ``Mesh(devices, (axis_name,))``.
    """
    devs = jax.devices() if devices is None else list(devices)
    if not devs:
        raise ValueError("data_mesh needs at least one device")
    return Mesh(np.asarray(devs, dtype=object), (axis_name,))


class Layout(NamedTuple):
    """Where the data-point axis lives: a mesh and the mesh axes it is split along (hashable)."""

    mesh: Mesh
    axis: Any  # str or tuple of str: mesh axis name(s) of the point axis
    shards: int  # number of blocks the point axis is cut into (product of those axis sizes)

    def spec(self, *rest) -> P:
        """PartitionSpec with the point axis first, then ``rest`` (None = replicated)."""
        return P(self.axis, *rest)

    def sharding(self, *rest) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(*rest))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())


def layout(mesh, axis=None) -> Layout:
    """Normalise a mesh (or a :class:`~jax.sharding.NamedSharding`) and axis name(s) to a :class:`Layout`.

    Args:
      mesh: a :class:`~jax.sharding.Mesh`, or a ``NamedSharding`` whose spec's first entry names
        the mesh axes of the point axis (e.g. ``NamedSharding(mesh, P("data"))``).
      axis: mesh axis name, or tuple of names, to split the points along; default the sharding's
        first spec entry, else every axis of the mesh (all devices).

    Raises:
      ValueError: not a mesh, or an axis name the mesh does not have.
    """
    if isinstance(mesh, NamedSharding):
        if axis is None and len(mesh.spec) and mesh.spec[0] is not None:
            axis = mesh.spec[0]
        mesh = mesh.mesh
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh or NamedSharding, got {type(mesh).__name__}")
    mesh = _auto_mesh(mesh)
    if axis is None:
        axis = tuple(mesh.axis_names)
    names = (axis,) if isinstance(axis, str) else tuple(axis)
    for a in names:
        if a not in mesh.shape:
            raise ValueError(f"mesh has axes {tuple(mesh.axis_names)}, not {a!r}")
    axis = names[0] if len(names) == 1 else names
    return Layout(mesh=mesh, axis=axis, shards=int(math.prod(mesh.shape[a] for a in names)))


def _auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis of type Auto.

    ``jax.make_mesh`` gives Explicit axes by default (JAX 0.10), which put shardings into the
    types and reject the unannotated scatters and vmaps of the tree code. jaxcorr states its
    layout itself (``shard_map`` in ``fit``, placed arrays for :func:`shard_dtree`), so it uses the
    mesh's devices with Auto axes, where GSPMD propagates the placement.
    """
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


def padded_count(n: int, shards: int) -> int:
    """``n`` rounded up to a multiple of ``shards`` (the padded number of points, ``n_pad``)."""
    return -(-int(n) // int(shards)) * int(shards)


def _place(host, sharding: NamedSharding) -> jax.Array:
    """Place a host array (same value in every process) with a global sharding; multi-process safe."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _pad_rows(x, n_pad: int, fill):
    x = np.asarray(x)
    if x.shape[0] == n_pad:
        return x
    pad = np.full((n_pad - x.shape[0],) + x.shape[1:], fill, x.dtype)
    return np.concatenate([x, pad], axis=0)


def _pad_cols(x, n_pad: int, fill):
    x = np.asarray(x)
    if x.shape[1] == n_pad:
        return x
    pad = np.full((x.shape[0], n_pad - x.shape[1]) + x.shape[2:], fill, x.dtype)
    return np.concatenate([x, pad], axis=1)


def bytes_per_device(tree) -> dict:
    """Bytes of the addressable shards of every array in ``tree``, summed per device.

    Returns:
      ``{str(device): bytes}`` over the devices that hold a shard (replicated arrays count on
      every device that holds a copy).
    """
    out: dict = collections.defaultdict(int)
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array):
            for s in leaf.addressable_shards:
                out[str(s.device)] += int(s.data.nbytes)
    return dict(out)


# ------------------------------------------------------------------------------- DTree / DDFN
def shard_dtree(tree: DTree, mesh, axis=None) -> DTree:
    """Lay a :class:`~jaxcorr.dtree.DTree` out across ``mesh`` along the data-point axis.

    Tree ``i`` (all its levels) and ``X[i]`` go to the device that owns point ``i``; ``W`` is
    replicated. The result is a plain ``DTree`` of ``n_pad = D * ceil(n / D)`` points for the
    unchanged functional API: :func:`jaxcorr.dtree.update` (Lemma D.3) and
    :func:`jaxcorr.dtree.query_all` (Lemma D.4) run shard-local under GSPMD, with no communication,
    which is Section 5's parallel update.

    Padding: points ``n .. n_pad - 1`` are rows of NaN in ``X`` with all-NaN trees. ``NaN > tau``
    is False, so they never report a neuron (in ``query``, ``query_all`` and the DDFN forest
    query), and updates keep them NaN. Use :func:`unshard_dtree` to drop them.

    Args:
      tree: a DTree (on any device).
      mesh: a ``Mesh`` or ``NamedSharding`` (see :func:`layout`).
      axis: mesh axis name(s) for the point axis; default all mesh axes.

    Returns:
      The padded, sharded DTree.
    """
    lay = layout(mesh, axis)
    n_pad = padded_count(tree.n, lay.shards)
    nan = np.nan
    levels = tuple(_place(_pad_rows(lvl, n_pad, nan), lay.sharding(None)) for lvl in tree.tree.levels)
    X = _place(_pad_rows(tree.X, n_pad, nan), lay.sharding(None))
    W = _place(tree.W, lay.replicated)
    return DTree(W=W, X=X, tree=maxtree.MaxTree(levels=levels, num_leaves=tree.tree.num_leaves))


def unshard_dtree(tree: DTree, n: int) -> DTree:
    """The first ``n`` points of a (sharded, padded) DTree, gathered to the default device."""
    get = lambda x: jnp.asarray(np.asarray(x))  # noqa: E731
    levels = tuple(get(lvl)[:n] for lvl in tree.tree.levels)
    return DTree(W=get(tree.W), X=get(tree.X)[:n],
                 tree=maxtree.MaxTree(levels=levels, num_leaves=tree.tree.num_leaves))


def shard_ddfn(state: ddfn.DDFNState, mesh, axis=None) -> ddfn.DDFNState:
    """Lay a DDFN state (Definition 1.3) out across ``mesh``: its DTree by points, ``b`` replicated.

    :func:`jaxcorr.ddfn.update` then runs shard-local; :func:`jaxcorr.ddfn.query` searches all trees
    as one forest with one frontier of ``cap`` pairs, so GSPMD gathers the frontier across shards
    (the output bound is global). Padding points never appear in the result; unused slots hold
    the sentinel ``n_pad`` (the padded number of points) instead of ``n``.
    """
    lay = layout(mesh, axis)
    return dataclasses.replace(state, dtree=shard_dtree(state.dtree, lay.mesh, lay.axis),
                               b=_place(state.b, lay.replicated))


# --------------------------------------------------------------------------------- fit: state
class ShardedConsts(NamedTuple):
    """Constants of the sharded dtree runner; ``(axis)`` marks arrays split along the point axis."""

    X: jax.Array  # shape=(n_pad, d) (axis): padding rows are zero
    y: jax.Array  # shape=(n_pad,) (axis): padding targets are zero
    valid: jax.Array  # shape=(n_pad,) bool (axis): False on padding points
    a: jax.Array  # shape=(L,) replicated: a_r on the active rows, 0 on padding rows
    b: jax.Array  # shape=() replicated
    scale: jax.Array  # shape=() replicated: 1/sqrt(m) with the full width m
    n_real: jax.Array  # shape=() int32 replicated: |A|
    n_points: jax.Array  # shape=() float32 replicated: n (real points), for the mean fire count
    gram: Any  # span path: shape=(n_pad, n_pad) (axis, rows), zero padding; else None
    ip0: Any  # span path: shape=(n_pad, L) (axis): initial leaves, zero padding; else None
    ref: Any  # generic path: reference rows of the row state leaves (idle-row guard), replicated


SHARDED_METHODS = ("active", "dtree")


def fit_layout(mesh, method: str) -> Layout:
    """Validate ``fit``'s ``mesh`` argument (called by :func:`jaxcorr.train.fit`)."""
    if method not in SHARDED_METHODS:
        raise ValueError(f"mesh is supported for method in {SHARDED_METHODS} (the n points, and the n "
                         f"trees, are what Section 5 parallelises), got method={method!r}")
    return layout(mesh)


class ShardedCompact(_train.Compact):
    """The compacted dtree problem over ``A``, laid out along the point axis of a mesh.

    The set-up is ``jaxcorr.train.Compact.__init__`` with the INIT over all ``m`` neurons and
    the fire sets at ``t = 0`` run sharded by points (:meth:`dtree_fire_sets`); then the carry
    and constants are padded to ``n_pad`` points and placed with :class:`ShardedConsts`'s layout.
    """

    transposed_span = False  # K (L, n_pad) with its point columns split across the devices

    def __init__(self, *args, layout: Layout, **kwargs):
        self.layout = lay = layout
        super().__init__(*args, **kwargs)
        n, L = self.n, self.L
        n_pad = self.n_pad
        P0, state_A = self.carry[-2], self.carry[-1]
        c = self.consts
        rows, rep = lay.sharding(None), lay.replicated
        valid = _place(np.arange(n_pad) < n, lay.sharding())
        self.carry_specs, self.consts_specs = self._specs()
        lv, ip0 = _prepare(self.carry[0][0] if self.method == "dtree" else None, c.ip0, valid, L, lay)
        s_leaves, s_def = jax.tree_util.tree_flatten(state_A)
        if self.span:
            cols = NamedSharding(lay.mesh, P(None, lay.axis))
            P0 = _place(_pad_cols(P0, n_pad, 0), cols)
            s_leaves = [_place(_pad_cols(x, n_pad, 0), cols) if i in self.rows else _place(x, rep)
                        for i, x in enumerate(s_leaves)]
            gram = _place(_pad_cols(_pad_rows(c.gram, n_pad, 0), n_pad, 0), rows)
        else:
            P0 = _place(P0, rep)
            s_leaves = [_place(x, rep) for x in s_leaves]
            gram = None
        state_A = jax.tree_util.tree_unflatten(s_def, s_leaves)
        self.carry = (P0, state_A) if self.method == "active" else (lv, P0, state_A)
        self.consts = ShardedConsts(
            X=_place(_pad_rows(c.X, n_pad, 0), rows), y=_place(_pad_rows(c.y, n_pad, 0), lay.sharding()),
            valid=valid, a=_place(c.a, rep), b=_place(c.b, rep),
            scale=_place(c.scale, rep), n_real=_place(c.n_real, rep),
            n_points=_place(np.float32(n), rep), gram=gram, ip0=ip0,
            ref=tuple(_place(r, rep) for r in c.ref))
        # memory of the training state (trees, rows, optimizer state, constants) per device
        self.bytes_per_device = max(bytes_per_device((self.carry, self.consts)).values())

    def dtree_fire_sets(self, W, X, b):
        """INIT over all ``m`` neurons (Lemma D.2) and ``S_{i,fire}(0)``, sharded by points.

        Padding points are NaN rows of ``X``: their inner products are NaN, which never
        exceed ``b``, so they fire nothing. Returns the (n_pad, m) inner products, sharded.
        """
        lay = self.layout
        m = W.shape[0]
        self.n_pad = n_pad = padded_count(X.shape[0], lay.shards)
        rows, rep = lay.sharding(None), lay.replicated
        Xp = _place(_pad_rows(np.asarray(X), n_pad, np.nan), rows)
        Wr = _place(np.asarray(W), rep)
        bb = _place(np.asarray(b, W.dtype), rep)
        ip, kmax = _sharded_init(Xp, Wr, bb)
        kmax = int(kmax)
        cap = maxtree.allocate(kmax, 1, 0, ceiling=m)
        fire_rows = np.flatnonzero(np.asarray(_sharded_fire_rows(ip, bb, cap, lay)))
        return ip, kmax, fire_rows

    def _specs(self):
        lay = self.layout
        pt, rep = lay.spec(None), P()
        col = P(None, lay.axis)
        n_levels = maxtree.padded_size(self.L).bit_length()
        s_leaves, s_def = jax.tree_util.tree_flatten(self.carry[-1])
        s_specs = [(col if (self.span and i in self.rows) else rep) for i in range(len(s_leaves))]
        rows_state = (col if self.span else rep, jax.tree_util.tree_unflatten(s_def, s_specs))
        carry = rows_state if self.method == "active" else ((pt,) * n_levels,) + rows_state
        consts = ShardedConsts(X=pt, y=lay.spec(), valid=lay.spec(), a=rep, b=rep, scale=rep,
                               n_real=rep, n_points=rep, gram=pt if self.span else None,
                               ip0=pt if self.span else None, ref=tuple(rep for _ in self.consts.ref))
        return carry, consts

    def runner(self, cfg, carry):
        return compiled_sharded_runner(cfg, self.layout, carry, self.consts, self.carry_specs,
                                       self.consts_specs, size=self.n_pad * self.L // self.layout.shards)

    def gathered(self, carry):
        """The trained rows, state and (zero-padded) ``X``, replicated first (works across processes)."""
        gather = functools.partial(_replicate, lay=self.layout)
        P_, state_A, X = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(gather(x))),
                                                (carry[-2], carry[-1], self.consts.X))
        return P_, state_A, X  # K's padding columns meet X's zero padding rows


@jax.jit
def _sharded_init(X, W, b):
    """DTree INIT (Lemma D.2) on points sharded across the mesh: the leaves and ``max_i k_{i,0}``.

    Placement follows the inputs (rows of ``X`` sharded, ``W`` replicated); only the max is reduced.
    """
    ip = _linalg.inner(X, W)  # (n_pad, m), sharded by rows
    return ip, jnp.max(jnp.sum(ip > b, axis=1))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _prepare(level0, ip0, valid, num_leaves: int, lay: Layout):
    """The sharded carry's levels (None for ``active``) and ``ip0``: padding points get ``-inf``
    leaves and ``ip0 = 0``."""
    rows = lay.sharding(None)
    levels = None
    if level0 is not None:
        lv = jnp.where(valid[:, None], level0[:, :num_leaves], -jnp.inf)
        levels = tuple(lax.with_sharding_constraint(x, rows) for x in maxtree.build(lv).levels)
    if ip0 is not None:
        ip0 = lax.with_sharding_constraint(jnp.where(valid[:, None], ip0, 0), rows)
    return levels, ip0


@functools.partial(jax.jit, static_argnames=("lay",))
def _replicate(x, lay: Layout):
    """``x`` replicated on every device of the mesh (so every process can read it)."""
    return lax.with_sharding_constraint(x, lay.replicated)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sharded_fire_rows(ip, b, capacity: int, lay: Layout):
    """Algorithm 8 line 12 at t = 0 on the sharded full tree; returns the (m,) union mask, replicated."""
    m = ip.shape[1]
    fr = maxtree.query_all(maxtree.build(ip), b, capacity=capacity)
    hit = jnp.zeros((m,), bool).at[jnp.where(fr.valid, fr.indices, m)].set(True, mode="drop")
    return jax.lax.with_sharding_constraint(hit, lay.replicated)


def history_info(lay: Layout, comp) -> dict:
    """Entries ``fit`` adds to its history when it runs sharded."""
    return {"shards": lay.shards, "bytes_per_device": getattr(comp, "bytes_per_device", None)}


# --------------------------------------------------------------------------------- fit: step
def _local_update(cfg: _ts.Config, axis, c: ShardedConsts, Pm, state, C):
    """Line 24 (the optimizer) from this device's coefficients ``C`` (n_loc, L); returns
    ``(Pm, state, moved)``. The one collective of the step sits here: the gradient of a neuron sums
    over points (``psum`` of the (L, d) rows), or, on the span path, nothing (``K``'s columns are
    this device's points)."""
    if cfg.span:
        updates, new_state = cfg.optimizer.update(C.T, state, Pm)
        return optax.apply_updates(Pm, updates), _ts.keep_dtypes(new_state, state), jnp.zeros((), bool)
    grad = lax.psum(_linalg.matmul(C.T, c.X), axis)  # collective: sum over points
    consts = _ts.CompactConsts(X=c.X, y=c.y, a=c.a, b=c.b, scale=c.scale, n_real=c.n_real, gram=None,
                               ip0=None, ref=c.ref)
    return _ts.apply_rows(cfg, consts, Pm, state, grad)  # replicated, identical everywhere


def _local_leaves(cfg: _ts.Config, axis, c: ShardedConsts, Pm):
    """This device's leaves ``<w_r, x_i>`` (n_loc, L), padding points and rows at ``-inf``."""
    if cfg.span:
        part = _linalg.matmul(Pm, c.gram)  # (L, n_pad): sum over local j of K_rj G_ji
        ipT = lax.psum_scatter(part, axis, scatter_dimension=1, tiled=True)  # collective: sum over j
        ip = c.ip0 + ipT.T
    else:
        ip = _linalg.inner(c.X, Pm)  # (n_loc, L): local leaves
    col = lax.broadcasted_iota(jnp.int32, ip.shape, 1)
    return jnp.where(c.valid[:, None] & (col < c.n_real), ip, -jnp.inf)


def _local_stats(axis, c: ShardedConsts, e, counts, hit, overflow, moved):
    """Step statistics summed / maxed over the devices (scalar collectives)."""
    counts = jnp.where(c.valid, counts, 0)
    return _ts.StepStats(
        loss=lax.psum(0.5 * jnp.sum(e * e), axis),  # collective: the loss sums over points
        fire_mean=(lax.psum(jnp.sum(counts), axis).astype(jnp.float32) / c.n_points),
        fire_max=lax.pmax(jnp.max(counts), axis).astype(jnp.int32),
        fire_union=jnp.sum(lax.pmax(hit, axis)).astype(jnp.int32),  # |U_i S_{i,fire}|
        overflow=lax.pmax(jnp.any(overflow & c.valid).astype(jnp.int32), axis) > 0,
        moved=moved,
    )


def _local_dtree_step(cfg: _ts.Config, axis, c: ShardedConsts, carry):
    """One step of Algorithm 8 on one device's points (inside ``shard_map``).

    Shares the fire-set query, forward pass and coefficient scatter with
    :func:`jaxcorr._train_steps._dtree_step`; the differences are the collectives and the padding
    mask. tests/test_sharding.py checks the two agree.
    """
    levels, Pm, state = carry
    nl = c.a.shape[0]
    # lines 12-13: fire sets and forward pass for this device's points only; local.
    fr, a_f, u = _ts.fire_forward(levels, c.a, c.b, c.scale, cfg.capacity)
    e = jnp.where(c.valid, u - c.y, 0)
    C, cols = _ts.fire_coefficients(fr, a_f, e * c.scale, nl, c.X.dtype)  # lines 16-23, (n_loc, L)
    hit = jnp.zeros((nl,), jnp.int32).at[cols].set(1, mode="drop")
    Pm, state, moved = _local_update(cfg, axis, c, Pm, state, C)  # line 24
    levels = maxtree.build(_local_leaves(cfg, axis, c, Pm)).levels  # lines 26-29: UPDATE, local
    return (levels, Pm, state), _local_stats(axis, c, e, fr.count, hit, fr.overflow, moved)


def _local_active_step(cfg: _ts.Config, axis, c: ShardedConsts, carry):
    """One step of ``method="active"`` on one device's points: masked fire sets, no trees."""
    Pm, state = carry
    ip = _local_leaves(cfg, axis, c, Pm)  # -inf on padding points and rows: they never fire
    e, C, fire = _ts.active_forward(ip, c.a, c.b, c.y, c.scale, c.n_real)
    e = jnp.where(c.valid, e, 0)
    C = jnp.where(c.valid[:, None], C, 0)
    Pm, state, moved = _local_update(cfg, axis, c, Pm, state, C)
    hit = jnp.any(fire, axis=0).astype(jnp.int32)
    no = jnp.zeros(e.shape, bool)
    return (Pm, state), _local_stats(axis, c, e, jnp.sum(fire, axis=1), hit, no, moved)


_LOCAL_STEPS = {"dtree": _local_dtree_step, "active": _local_active_step}


#: Number of times the sharded chunk runner has been traced (for no-recompilation checks).
TRACE_COUNTS: collections.Counter = collections.Counter()
#: Compiled sharded chunk runners, keyed by their static configuration (tests read their HLO).
EXECUTABLES: "collections.OrderedDict" = collections.OrderedDict()
_MAX_EXECUTABLES = 32


def _sharded_chunk_fn(cfg: _ts.Config, lay: Layout, carry_specs, consts_specs):
    stats_specs = _ts.StepStats(*(P(),) * len(_ts.StepStats._fields))

    def run(carry, consts):
        TRACE_COUNTS[cfg.method] += 1
        step = _LOCAL_STEPS[cfg.method]

        def body(carry, _):
            return step(cfg, lay.axis, consts, carry)

        return lax.scan(body, carry, None, length=cfg.chunk_len)

    return jax.shard_map(run, mesh=lay.mesh, in_specs=(carry_specs, consts_specs),
                         out_specs=(carry_specs, stats_specs))


def compiled_sharded_runner(cfg, lay: Layout, carry, consts, carry_specs, consts_specs, size=None):
    """The compiled sharded chunk runner for ``cfg`` on layout ``lay`` (cached like the single one)."""
    fast = size is not None and size < _ts.FAST_COMPILE_BELOW
    key = (cfg, lay, fast, _ts.signature(carry), _ts.signature(consts))
    return _ts.cached_compile(EXECUTABLES, key, lambda: _sharded_chunk_fn(cfg, lay, carry_specs, consts_specs),
                              (carry, consts), fast, _MAX_EXECUTABLES)
