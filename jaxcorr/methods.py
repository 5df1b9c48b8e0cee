r"""The training methods, one entry each: every place that branches on a method reads this table.

A method is how ``train.fit`` finds the neurons that fire and which rows it trains:

- ``dense``: every neuron, O(nmd) per step (the reference; no active set, no trees);
- ``active``: the rows that can fire (the active set ``A``), fire sets by comparison
  :math:`\langle w_r, x_i\rangle > b` over (n, |A|) each step, no trees in the loop;
- ``dtree``: Algorithm 8 / Theorem 4.1, fire sets from Correlation DTree queries (Theorem 3.1);
- ``wtree``: Algorithm 9 / Theorem 4.2, fire sets from Correlation WTree queries (Theorem 3.2).

Adding a method is one :class:`Method` here plus its step function in the training floor.

Examples:
  >>> from jaxcorr import methods
  >>> methods.names()
  ('dense', 'active', 'dtree', 'wtree')
  >>> methods.get("dtree").trees, methods.get("dtree").sparse
  ('dtree', True)
  >>> methods.DEFAULT
  'active'
"""

from __future__ import annotations

import dataclasses

__all__ = ["Method", "METHODS", "DEFAULT", "get", "names"]


@dataclasses.dataclass(frozen=True)
class Method:
    """What the rest of jaxcorr needs to know about one training method.

    Attributes:
      name: the method's name (``method=`` of ``train.fit``, ``--method`` of the CLI).
      help: one line for ``--help`` and error messages.
      sparse: trains on the active rows ``A`` only (False: every row, the dense reference).
      trees: the correlation tree the step keeps: ``"dtree"`` (n max-trees over the neurons,
        Theorem 3.1), ``"wtree"`` (m max-trees over the points, Theorem 3.2) or ``None``.
      finds_active: how set-up finds ``A``: ``"all"`` (every row), ``"compare"`` (the comparison on
        INIT's leaves), or by QUERY on the method's trees (``"dtree"``, ``"wtree"``).
      shards: runs on a device mesh with the points split across devices (Section 5).
      step_cost: relative cost of one step per active row and point (chunk sizing; ``active`` is 1).
      paper: the algorithm or theorem of the paper it implements.
    """

    name: str
    help: str
    sparse: bool
    trees: str | None
    finds_active: str
    shards: bool
    step_cost: float
    paper: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dense", "plain GD on all m neurons", sparse=False, trees=None, finds_active="all",
               shards=False, step_cost=1.0, paper="Section 2"),
        Method("active", "exact GD on the rows that can fire, fire sets by comparison (no trees in the loop)",
               sparse=True, trees=None, finds_active="compare", shards=True, step_cost=1.0,
               paper="Theorem 4.1 (the active-set bound)"),
        Method("dtree", "GD with the Correlation DTree, Algorithm 8", sparse=True, trees="dtree",
               finds_active="dtree", shards=True, step_cost=3.0, paper="Algorithm 8, Theorem 4.1"),
        Method("wtree", "GD with the Correlation WTree, Algorithm 9", sparse=True, trees="wtree",
               finds_active="wtree", shards=False, step_cost=3.0, paper="Algorithm 9, Theorem 4.2"),
    )
}

#: The method ``train.fit``, the wide model and the CLI use when none is given.
DEFAULT = "active"


def names() -> tuple[str, ...]:
    """The method names, in table order."""
    return tuple(METHODS)


def get(name: str) -> Method:
    """The :class:`Method` called ``name``; a ``ValueError`` naming the choices otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {names()}, got {name!r}") from None
