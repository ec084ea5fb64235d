"""Shared test helpers (plain functions, imported as ``from conftest import tiny_config``) and
the session's persistent XLA compilation cache."""

from __future__ import annotations

import os
import tempfile

import jax
import ml_collections
import pytest

from bnreg.config import default_config, override


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
    """One persistent XLA compilation cache for the session (and the study commands the tests
    start): the suite compiles the same tiny programs many times, and a cache hit replaces a
    compilation by a file read (the fault-injection module: 105 s → 23 s). A fresh directory
    per session, so nothing stale is reused; results are the same executables' either way."""
    directory = tempfile.mkdtemp(prefix="bnreg-test-xla-cache-")
    settings = {"jax_compilation_cache_dir": directory,
                "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": -1}
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)
    yield directory


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
