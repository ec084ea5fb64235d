"""PROTOTYPES of engine changes, for the benchmarks only — not part of bnreg.

Already merged into bnreg: the data order carried across chunks, a single member's axis dropped
outside the scan, members sharded over devices (``bnreg.train.shard_members``), and Alg. 2's
batches drawn once per run (``bnreg.train.population_batch_indices``). What is left here:
:func:`make_population_statistics_prototype` — Alg. 2's population statistics, which the BN
study computes at every evaluation (``bn_eval_statistics="population"``), with all batches in
one vmapped pass instead of a sequential loop.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnreg import train


def check_population_prototype(
    reference: Callable[[nn.Module], Callable[..., dict]],
    model: nn.Module,
    state: train.TrainState,
    images: jax.Array,
    *,
    batch_size: int,
    num_batches: int,
) -> dict[str, float]:
    """The largest relative difference between the statistics of ``reference`` (the engine's
    ``make_population_statistics``, taken before a benchmark patches it) and the prototype's,
    for a trained ``state``."""
    draw = jax.vmap(
        lambda key: train.population_batch_indices(
            key, images.shape[0], batch_size=batch_size, num_batches=num_batches
        )
    )
    arguments = (state.params, state.batch_stats, state.key, images, draw(state.key))
    engine = reference(model)(*arguments)
    prototype = make_population_statistics_prototype(model)(*arguments)
    return {
        "max_relative_difference": max(
            float(jnp.max(jnp.abs(a - b) / (jnp.abs(a) + 1e-6)))
            for a, b in zip(jax.tree.leaves(engine), jax.tree.leaves(prototype), strict=True)
        )
    }


def make_population_statistics_prototype(model: nn.Module) -> Callable[..., dict]:
    """PROTOTYPE of :func:`bnreg.train.make_population_statistics` (same signature and
    batches; sums in another order, so equal to ~1e-7, not bit-for-bit): the engine runs the
    ``num_batches`` 60-row forward passes one after another (``fori_loop``); here one pass
    vmapped over the batch axis (BN still normalises each batch with its own statistics; the
    parameters are shared, so XLA runs ``num_batches × batch_size``-row matmuls), then the
    per-batch Alg. 2 accumulators are summed. Its memory grows with ``num_batches``: an engine
    version needs a bound (e.g. ``lax.map(..., batch_size=)``) before it is safe for conv nets.
    """

    def one_member(params, batch_stats, key, images, batch_indices):
        population_key = jax.random.fold_in(key, train._POPULATION)

        def one_batch(indices, position):
            _, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                jnp.take(images, indices, axis=0),
                train=True,
                rngs={"dropout": jax.random.fold_in(population_key, position)},
                mutable=["batch_stats", "population_stats"],
            )
            return updates["population_stats"]

        per_batch = jax.vmap(one_batch)(batch_indices, jnp.arange(batch_indices.shape[0]))
        # Every accumulator field is a sum over batches (num_batches included).
        return train._finalize_accumulators(jax.tree.map(lambda x: x.sum(0), per_batch))

    return jax.jit(jax.vmap(one_member, in_axes=(0, 0, 0, None, 0)))
