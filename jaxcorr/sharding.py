r"""Correlation trees across a device mesh: Section 5's parallel tree updates on JAX's SPMD machinery.

Section 5 of the paper observes that the ``n`` trees of the Correlation DTree (one per data point,
Theorem 3.1) are updated independently, so with enough processors a training step of Algorithm 8
costs O(m^{4/5} n d) instead of O(m^{4/5} n^2 d). This module says how the ``n`` trees are laid
out across the devices of a :class:`jax.sharding.Mesh` (:class:`Layout`) and what the sums over
points become there (:class:`Axis`: ``psum``/``pmax``/``psum_scatter`` over the mesh axis, the
identity on one device). Training (:func:`jaxcorr.train.fit` with ``mesh=``, ``method="dtree"`` and
``method="active"``, which splits the same point axis of its (n, |A|) masked passes with no trees)
runs the one step function of :mod:`jaxcorr.train._steps` under :func:`jax.shard_map` with that
layout: a sharding is a layout of the same step, not another step. This module imports nothing of
the training floor. Across hosts the same code runs after :func:`jax.distributed.initialize` on a
global mesh. There is no scheduler of our own.

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

- in ``fit``'s sharded steps, padding points have zero rows in ``X``, target 0 and a ``valid``
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
  >>> bool(abs(h1.loss - h2.loss).max() <= 2e-4 * h2.loss.max())
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
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcorr import ddfn, maxtree, methods
from jaxcorr.dtree import DTree

__all__ = [
    "Axis",
    "data_mesh",
    "Layout",
    "layout",
    "padded_count",
    "shard_dtree",
    "unshard_dtree",
    "shard_ddfn",
    "bytes_per_device",
    "fit_layout",
    "place",
    "pad_rows",
    "pad_cols",
    "replicate",
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


class Axis(NamedTuple):
    """The collectives of a step over the point axis: identities on one device.

    The step functions of :mod:`jaxcorr.train._steps` sum over data points in a few places (the
    gradient of a neuron, the loss, the statistics). They call these methods, which are the
    ``lax`` collectives over the mesh axis ``name`` inside ``shard_map``, and the identity when
    ``name`` is None (one device holds every point). One step function thus serves both.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxcorr import sharding
      >>> sharding.Axis(None).psum(jnp.ones(3)).tolist()
      [1.0, 1.0, 1.0]
    """

    name: Any = None  # mesh axis name(s) of the point axis, or None (one device)

    def psum(self, x):
        """Sum over the point blocks."""
        return x if self.name is None else lax.psum(x, self.name)

    def pmax(self, x):
        """Maximum over the point blocks."""
        return x if self.name is None else lax.pmax(x, self.name)

    def psum_scatter(self, x, dim: int):
        """Sum over the point blocks, each keeping its own block of dimension ``dim`` (tiled)."""
        return x if self.name is None else lax.psum_scatter(x, self.name, scatter_dimension=dim, tiled=True)


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


def place(host, sharding: NamedSharding) -> jax.Array:
    """Place a host array (same value in every process) with a global sharding; multi-process safe."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def pad_rows(x, n_pad: int, fill):
    """``x`` (host) with rows of ``fill`` appended up to ``n_pad`` rows."""
    x = np.asarray(x)
    if x.shape[0] == n_pad:
        return x
    pad = np.full((n_pad - x.shape[0],) + x.shape[1:], fill, x.dtype)
    return np.concatenate([x, pad], axis=0)


def pad_cols(x, n_pad: int, fill):
    """``x`` (host) with columns of ``fill`` appended up to ``n_pad`` columns."""
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
    levels = tuple(place(pad_rows(lvl, n_pad, nan), lay.sharding(None)) for lvl in tree.tree.levels)
    X = place(pad_rows(tree.X, n_pad, nan), lay.sharding(None))
    W = place(tree.W, lay.replicated)
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
                               b=place(state.b, lay.replicated))


SHARDED_METHODS = tuple(m.name for m in methods.METHODS.values() if m.shards)  # jaxcorr.methods: "shards"


def fit_layout(mesh, method: str) -> Layout:
    """Validate ``fit``'s ``mesh`` argument for ``method`` and return its :class:`Layout`."""
    if method not in SHARDED_METHODS:
        raise ValueError(f"mesh is supported for method in {SHARDED_METHODS} (the n points, and the n "
                         f"trees, are what Section 5 parallelises), got method={method!r}")
    return layout(mesh)


@functools.partial(jax.jit, static_argnames=("lay",))
def replicate(x, lay: Layout):
    """``x`` replicated on every device of the mesh (so every process can read it)."""
    return lax.with_sharding_constraint(x, lay.replicated)
