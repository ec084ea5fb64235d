"""bnreg: Batch Normalization and stochastic regularizers as pure JAX functions.

The functional core lives in :mod:`bnreg.core` (one module per method) and is importable from the
top level::

    from bnreg import batch_norm, dropout, dropconnect_dense, max_norm

Everything takes explicit PRNG keys and returns new state instead of mutating it. The flax layers
(:mod:`bnreg.layers`), models (:mod:`bnreg.models`), data (:mod:`bnreg.data`), the training
engine (:mod:`bnreg.engine`), the analysis of its records (:mod:`bnreg.analysis`) and the figures
(:mod:`bnreg.plots`) are imported from their modules.
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
from bnreg.core.max_norm import max_norm, project_max_norm

__version__ = "0.1.0"

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
    "init_batch_norm",
    "max_norm",
    "monte_carlo_average",
    "population_stats_finalize",
    "population_stats_init",
    "population_stats_update",
    "project_max_norm",
]
