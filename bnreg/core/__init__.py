"""The functional core of bnreg: Batch Normalization and the stochastic regularizers as pure JAX
functions.

* :mod:`bnreg.core.batch_norm` — Batch Normalization (Ioffe & Szegedy 2015): Alg. 1, the EMA and
  exact Alg. 2 population statistics, the paper's backward pass, folding into a linear layer.
* :mod:`bnreg.core.ghost_batch_norm` — ghost BN: Alg. 1 on groups of a batch (Hoffer et al. 2017).
* :mod:`bnreg.core.dropout` — Bernoulli and Gaussian dropout, Monte-Carlo model averaging
  (Srivastava et al. 2014).
* :mod:`bnreg.core.dropconnect` — the DropConnect dense layer and its moment-matching inference
  (Wan et al. 2013).
* :mod:`bnreg.core.max_norm` — the max-norm projection and its optax transformation (Srivastava
  et al. 2014, Sec. 5.1).

Every function takes explicit PRNG keys and returns new state instead of mutating it. Rates and
norm bounds may be traced scalars, so one compiled program can be vmapped over members that
differ in them; the flags that select code paths are static.
"""

from bnreg.core.batch_norm import (
    BatchNormParams,
    BatchNormState,
    PopulationStatsAccumulator,
    batch_norm,
    fold_batch_norm,
    init_batch_norm,
    population_stats_finalize,
    population_stats_init,
    population_stats_update,
)
from bnreg.core.dropconnect import (
    dropconnect_dense,
    dropconnect_gaussian_inference,
    dropconnect_moments,
    gaussian_dropconnect_dense,
)
from bnreg.core.dropout import dropout, gaussian_dropout, monte_carlo_average
from bnreg.core.ghost_batch_norm import ghost_batch_norm
from bnreg.core.max_norm import is_kernel, max_norm, project_max_norm

__all__ = [
    "BatchNormParams",
    "BatchNormState",
    "PopulationStatsAccumulator",
    "batch_norm",
    "dropconnect_dense",
    "dropconnect_gaussian_inference",
    "dropconnect_moments",
    "dropout",
    "fold_batch_norm",
    "gaussian_dropconnect_dense",
    "gaussian_dropout",
    "ghost_batch_norm",
    "init_batch_norm",
    "is_kernel",
    "max_norm",
    "monte_carlo_average",
    "population_stats_finalize",
    "population_stats_init",
    "population_stats_update",
    "project_max_norm",
]
