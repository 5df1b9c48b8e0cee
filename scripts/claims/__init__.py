"""The paper's claims, one module per claim group, each measured by ``scripts/reproduce.py``.

Every module defines:

- ``GROUP``: the group's name (``--only GROUP``);
- ``SIZES``: ``{"tiny": ..., "quick": ..., "full": ...}``. ``quick`` uses the regime of ``full``
  (same n, d, sizes drawn from the full sweep, still >= 3 sizes spanning >= 16x) with fewer repeats,
  so quick and full decide every ``holds`` the same way; ``tiny`` is for the tests only;
- ``TOLERANCES``: fixed before any measurement; ``holds`` is computed from them;
- ``measure(cfg, key, tol) -> (claims, data)`` and ``figure(results, out, plt) -> [file names]``.

The shared timing helpers live in :mod:`jaxcorr.benchmarking`; the claim record and the one-sided
bound tests in :mod:`scripts.claims.common`; the plotting helpers in :mod:`scripts.claims.plotting`.
"""

from scripts.claims import (  # noqa: F401 - the registry below
    convergence,
    init_cost,
    query_cost,
    reduction,
    sparsity,
    training,
    update_cost,
)

MODULES = [init_cost, update_cost, query_cost, sparsity, training, convergence, reduction]
GROUPS = [m.GROUP for m in MODULES]
BY_GROUP = {m.GROUP: m for m in MODULES}
