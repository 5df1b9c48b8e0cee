"""jaxcorr: correlation trees for exact sparse training of wide two-layer ReLU networks in JAX.

Implements "Bypass Exponential Time Preprocessing: Fast Neural Network Training via Weight-Data
Correlation Preprocessing" (Alman, Liang, Song, Zhang, Zhuo, NeurIPS 2023):

- :mod:`jaxcorr.maxtree`: batched max-trees (Algorithm 7) and the fixed-capacity frontier query.
- :mod:`jaxcorr.dtree`: Correlation DTree (Theorem 3.1).
- :mod:`jaxcorr.wtree`: Correlation WTree (Theorem 3.2).
- :mod:`jaxcorr.ddfn`: Dynamic Detection of Firing Neurons (Definition 1.3).
"""

from jaxcorr import ddfn, dtree, maxtree, wtree
from jaxcorr.maxtree import Frontier, MaxTree

__version__ = "0.1.0"

__all__ = ["ddfn", "dtree", "maxtree", "wtree", "Frontier", "MaxTree", "__version__"]
