"""PROTOTYPES of engine changes, for the benchmarks only — not part of bnreg.

Already merged into bnreg: the data order carried across chunks, a single member's axis dropped
outside the scan, and members sharded over devices (``bnreg.train.shard_members``). What is left
here: :func:`make_population_statistics_prototype` — Alg. 2's population statistics, which the BN
study computes at every evaluation (``bn_eval_statistics="population"``), with the batches'
indices computed once per run and all batches in one vmapped pass.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnreg import data as data_lib
from bnreg import train


def check_population_prototype(
    reference: Callable[..., Callable[..., dict]],
    model: nn.Module,
    state: train.TrainState,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int,
    num_batches: int,
) -> dict[str, float]:
    """The largest relative difference between the statistics of ``reference`` (the engine's
    ``make_population_statistics``) and the prototype's, for a trained ``state``."""
    engine = reference(model, batch_size=batch_size, num_batches=num_batches)(
        state.params, state.batch_stats, state.key, images, labels
    )
    prototype = make_population_statistics_prototype(
        model, batch_size=batch_size, num_batches=num_batches
    )(state.params, state.batch_stats, state.key, images, labels)
    return {
        "max_relative_difference": max(
            float(jnp.max(jnp.abs(a - b) / (jnp.abs(a) + 1e-6)))
            for a, b in zip(jax.tree.leaves(engine), jax.tree.leaves(prototype), strict=True)
        )
    }


def make_population_statistics_prototype(
    model: nn.Module, *, batch_size: int, num_batches: int
) -> Callable[..., dict]:
    """PROTOTYPE of :func:`bnreg.train.make_population_statistics` (same signature and
    batches; sums in another order, so equal to ~1e-7, not bit-for-bit), with two changes:

    1. **The batches' indices once per run.** The engine draws the same ``num_batches`` batches
       at every call but recomputes their epoch permutation (a ~20 ms sort per member) each
       time; here the ``(members, num_batches, batch_size)`` indices are kept between calls (a
       cache checked against the keys on device).
    2. **All batches in one pass.** The engine runs ``num_batches`` sequential 60-row forward
       passes (``fori_loop``); here one vmapped pass over the batch axis (BN still normalises
       each batch with its own statistics; the parameters are shared, so XLA runs
       ``num_batches × batch_size``-row matmuls) and the per-batch Alg. 2 accumulators are summed.
    """

    def indices_of(keys, num_examples):
        steps_per_epoch = num_examples // batch_size
        positions = jnp.arange(num_batches)

        def one_member(key):
            population_key = jax.random.fold_in(key, train._POPULATION)
            permutations = jnp.stack(
                [
                    data_lib.epoch_permutation(population_key, epoch, num_examples)
                    for epoch in range(-(-num_batches // steps_per_epoch))
                ]
            )
            return jax.vmap(
                lambda position: jax.lax.dynamic_slice(
                    permutations[position // steps_per_epoch],
                    ((position % steps_per_epoch) * batch_size,),
                    (batch_size,),
                )
            )(positions)

        return jax.vmap(one_member)(keys)

    def one_member(params, batch_stats, key, member_indices, images):
        population_key = jax.random.fold_in(key, train._POPULATION)

        def one_batch(batch_indices, position):
            _, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                jnp.take(images, batch_indices, axis=0),
                train=True,
                rngs={"dropout": jax.random.fold_in(population_key, position)},
                mutable=["batch_stats", "population_stats"],
            )
            return updates["population_stats"]

        per_batch = jax.vmap(one_batch)(member_indices, jnp.arange(num_batches))
        # Every accumulator field is a sum over batches (num_batches included).
        return train._finalize_accumulators(jax.tree.map(lambda x: x.sum(0), per_batch))

    def compiled(params, batch_stats, keys, images, cache):
        cached_keys, cached_indices = cache
        indices = jax.lax.cond(
            jnp.all(cached_keys == keys),
            lambda: cached_indices,
            lambda: indices_of(keys, images.shape[0]),
        )
        statistics = jax.vmap(one_member, in_axes=(0, 0, 0, 0, None))(
            params, batch_stats, keys, indices, images
        )
        return statistics, (keys, indices)

    jitted = jax.jit(compiled, donate_argnames="cache")
    caches: dict[tuple[int, ...], tuple[jax.Array, jax.Array]] = {}

    def population_of(params, batch_stats, keys, images, labels):
        del labels
        shape = (keys.shape[0], num_batches, batch_size)
        cache = caches.pop(shape, None)
        if cache is None:
            # Keys that no run has (all bits set) force the first computation.
            cache = (jnp.full(keys.shape, -1).astype(keys.dtype), jnp.zeros(shape, jnp.int32))
        statistics, caches[shape] = jitted(params, batch_stats, keys, images, cache)
        return statistics

    return population_of
