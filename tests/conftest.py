"""Shared test helpers (plain functions, imported as ``from conftest import tiny_config``) and
the session's persistent XLA compilation cache."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from bnreg.config import default_config, override

# The suite compiles hundreds of tiny programs, and LLVM's optimisations are most of each
# compilation: without them (for this process and the commands it starts) the engine's tests
# take half the time. The same flags compile both sides of every comparison a test makes; the
# studies' results are not made under them.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
    """One persistent XLA compilation cache for the session (and the study commands the tests
    start): the suite compiles the same tiny programs many times, and a cache hit replaces a
    compilation by a file read (the fault-injection module: 105 s → 23 s). A fresh directory
    per session, so nothing stale is reused, shared by the session's xdist workers (a program
    one compiles, the other reads); results are the same executables' either way."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run:
        directory = os.path.join(tempfile.gettempdir(), f"bnreg-test-xla-cache-{run}")
        os.makedirs(directory, exist_ok=True)
    else:
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


REPO = Path(__file__).resolve().parents[1]


def run_smoke_study(study: str, workdir: Path, *arguments: str) -> str:
    """``python -m experiments.<study>`` in its smoke variant (no progress bar) in ``workdir``,
    as a user runs it; returns its standard output, or fails the test with its error's tail."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    completed = subprocess.run(
        [sys.executable, "-m", f"experiments.{study}", f"--workdir={workdir}",
         f"--config=experiments/{study}.py:smoke", "--config.progress=False", *arguments],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def assert_figure(path: Path, stdout: str) -> None:
    """``path`` is a readable PNG wider than 400 pixels that the study's output names."""
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 400
    assert str(path) in stdout


def drawn_indices(members, labels, batch_size: int, steps: int):
    """The training examples (indices into ``labels``) every member's batches hold in its first
    ``steps`` steps, ``(steps, members, batch_size)``, drawn by the engine's sampler from the
    members' subsets (:func:`bnreg.engine.member_subsets`), and those subsets."""
    import jax.numpy as jnp

    from bnreg import engine

    labels = jnp.asarray(labels)
    images = jnp.arange(len(labels), dtype=jnp.float32)[:, None]  # an image is its index
    subsets = engine.member_subsets(members, np.asarray(labels), batch_size)
    sampler = engine.Sampler(len(labels), batch_size, tuple(len(s) for s in subsets))
    keys = jax.vmap(lambda k: engine.stream_key(k, engine.Stream.DATA))(members.keys())

    def body(order, step):
        order, batch_images, _ = sampler.batches(order, step, keys, images, labels, subsets)
        return order, batch_images[..., 0].astype(jnp.int32)

    drawn = jax.jit(lambda: jax.lax.scan(body, sampler.empty_order(len(members)),
                                         jnp.arange(steps))[1])()
    return np.asarray(drawn), subsets


def constructed_results(final_rows, history_rows=(), *, config=None, extra=None, settings=None):
    """:class:`bnreg.study.Results` built from rows (dicts with an ``arm`` and a ``seed``): the
    final evaluations and the curves (``step``, ``member``) of arms named by those rows — a
    study's analysis on constructed numbers, without training."""
    import pandas as pd

    from bnreg.study import Arm, Results

    final = pd.DataFrame(list(final_rows))
    history = pd.DataFrame(list(history_rows))
    names = sorted({*final.get("arm", []), *history.get("arm", [])})
    return Results(config=config or default_config(), arms={n: Arm(n, n) for n in names},
                   choices={}, settings=settings or {}, tuning=pd.DataFrame(), history=history,
                   final=final, summaries={},
                   extra={k: pd.DataFrame(v) for k, v in (extra or {}).items()}, machine={})
