"""The pre-flight's memory estimate (bnreg.engine.memory): exact for the state, and a run that
cannot fit is refused before anything is allocated, instead of hanging."""

from __future__ import annotations

import jax
import pytest
from conftest import tiny_config

from bnreg import engine
from bnreg.engine import memory


def test_the_estimate_is_the_bytes_of_the_initial_state():
    run = engine.build(tiny_config(**{"sweep.seed": (0, 1, 2)}))
    state = run.init()
    actual = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    assert memory.state_bytes(run.network, run.members, run.data.image_shape) == actual


def test_a_run_too_large_for_memory_is_refused_before_anything_is_allocated(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda devices: 8 * memory.GIB)
    with pytest.raises(memory.OutOfMemoryError,
                       match=r"need at least 74\.\d GiB .* 8\.0 GiB free: shrink the model"):
        engine.check(tiny_config(**{"model.hidden_sizes": (100_000, 100_000)}))


def test_a_run_that_fits_passes(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda devices: 8 * memory.GIB)
    engine.check(tiny_config())


def test_the_host_says_how_much_memory_cpu_devices_have():
    available = memory.available_bytes(jax.devices("cpu"))
    assert available is None or available > 0
