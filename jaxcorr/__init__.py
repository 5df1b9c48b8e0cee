"""jaxcorr: correlation trees for exact sparse training of wide two-layer ReLU networks in JAX.

Implements "Bypass Exponential Time Preprocessing: Fast Neural Network Training via Weight-Data
Correlation Preprocessing" (Alman, Liang, Song, Zhang, Zhuo, NeurIPS 2023):

- :mod:`jaxcorr.maxtree`: batched max-trees (Algorithm 7) and the fixed-capacity frontier query.
- :mod:`jaxcorr.dtree`: Correlation DTree (Theorem 3.1).
- :mod:`jaxcorr.wtree`: Correlation WTree (Theorem 3.2).
- :mod:`jaxcorr.ddfn`: Dynamic Detection of Firing Neurons (Definition 1.3).
- :mod:`jaxcorr.nn`: the 2NN(m, b) model (Definition 2.1) and its gradient.
- :mod:`jaxcorr.train`: ``fit`` with the dense, dtree (Algorithm 8) and wtree (Algorithm 9) methods.
- :mod:`jaxcorr.optimizers`: the optimizer names (sgd, momentum, adam) shared by the CLI and scripts.
- :mod:`jaxcorr.data`, :mod:`jaxcorr.datafiles`: synthetic data and user data files.
- :mod:`jaxcorr.checkpoint`: atomic save/restore of a training state, every form.
- :mod:`jaxcorr.reductions`: Max-IP through DDFN queries (Theorem F.4).
- :mod:`jaxcorr.sharding`: the trees and `fit` across a device mesh (Section 5).
- :mod:`jaxcorr.wide`: networks wider than memory: W(0) as a function of the key, only the
  rows that can fire held and trained.
- :mod:`jaxcorr.span_init`: W(0) defined by its key and the data's basis; the rows that fire drawn
  directly, exactly in law.
- :mod:`jaxcorr.memory`: the memory a run needs and the memory available.
- :mod:`jaxcorr.methods`: the registry of training methods; :mod:`jaxcorr.errors`: the typed errors.
- :mod:`jaxcorr.distributed`: the main job across JAX processes (hosts).
"""

from jaxcorr import (
                     checkpoint,
                     data,
                     datafiles,
                     ddfn,
                     distributed,
                     dtree,
                     errors,
                     maxtree,
                     memory,
                     methods,
                     nn,
                     optimizers,
                     reductions,
                     sharding,
                     span_init,
                     train,
                     wide,
                     wtree,
)
from jaxcorr.maxtree import Frontier, MaxTree

__version__ = "0.1.0"

__all__ = [
    "checkpoint",
    "data",
    "datafiles",
    "ddfn",
    "distributed",
    "dtree",
    "errors",
    "maxtree",
    "memory",
    "methods",
    "nn",
    "optimizers",
    "reductions",
    "sharding",
    "span_init",
    "train",
    "wide",
    "wtree",
    "Frontier",
    "MaxTree",
    "__version__",
]
