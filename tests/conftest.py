"""Shared test helpers (plain functions, imported as ``from conftest import tiny_config``)."""

from __future__ import annotations

import ml_collections

from bnreg.config import default_config, override


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """A BN run on scikit-learn's digits that takes seconds; ``overrides`` are dotted keys."""
    return override(default_config(), {
        "dataset": "digits",
        "model.hidden_sizes": (16, 16),
        "model.norm": "batch",
        "model.kernel_init": "lecun_normal",
        "optimizer.learning_rate": 0.5,
        "batch_size": 32,
        "num_steps": 60,
        "eval_every": 20,
        "eval_batch_size": 128,
        "checkpoint_every": 0,
        "evaluation.population_batches": 5,
        "progress": False,
        **overrides,
    })
