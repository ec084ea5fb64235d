"""PROTOTYPES of engine changes, for the benchmarks only — not part of bnreg.

Already merged (bnreg 79f64ed): the data order (each epoch's permutation) carried across chunks,
and a single member trained without vmap. What is left here:

* :func:`make_population_statistics_prototype` — Alg. 2's population statistics, which the BN
  study computes at every evaluation (``bn_eval_statistics="population"``), with the batches'
  indices computed once per run and all batches in one vmapped pass.
* :func:`make_train_chunk_prototype` — the engine's chunk with a single member's axis dropped
  *outside* the scan (the loop carries unbatched arrays) instead of unstacking and restacking
  the state at every step; to measure whether the placement matters.
* :func:`shard_over_members` — the member axis of the state and the data order placed across
  all devices (``--xla_force_host_platform_device_count=N`` on CPU), for the chunk to run the
  members' shards in parallel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bnreg import data as data_lib
from bnreg import train


def make_train_chunk_prototype(
    model: nn.Module, tx: optax.GradientTransformation, *, batch_size: int
) -> Callable[..., tuple[train.TrainState, train.DataOrder, jax.Array]]:
    """:func:`bnreg.train.make_train_chunk` (same signature, same batches) with a single member's
    axis dropped before the scan and restored after it."""
    single_step = functools.partial(train.train_step, model, tx)
    vmapped_step = jax.vmap(
        single_step, in_axes=(train.MEMBER_AXES, 0, 0), out_axes=(train.MEMBER_AXES, 0)
    )

    def chunk(state, data_order, images, labels, num_steps):
        num_examples = images.shape[0]
        steps_per_epoch = num_examples // batch_size
        data_keys = jax.vmap(lambda key: jax.random.fold_in(key, train._DATA))(state.key)
        single = state.key.shape[0] == 1

        def order_of(epoch):
            return train.DataOrder(
                epoch=epoch,
                permutations=jax.vmap(
                    lambda key: data_lib.epoch_permutation(key, epoch, num_examples)
                )(data_keys),
            )

        def body(carry, _):
            member_state, data_order = carry
            epoch = (member_state.step // steps_per_epoch).astype(jnp.int32)
            data_order = jax.lax.cond(
                epoch != data_order.epoch, order_of, lambda _: data_order, epoch
            )
            position = member_state.step % steps_per_epoch
            batch_images, batch_labels = jax.vmap(
                lambda permutation: data_lib.batch_from_permutation(
                    images, labels, permutation, position, batch_size
                )
            )(data_order.permutations)
            if single:
                member_state, loss = single_step(member_state, batch_images[0], batch_labels[0])
                return (member_state, data_order), loss[None]
            member_state, loss = vmapped_step(member_state, batch_images, batch_labels)
            return (member_state, data_order), loss

        carried = train._unstack_member(state) if single else state
        (carried, data_order), losses = jax.lax.scan(
            body, (carried, data_order), None, length=num_steps
        )
        return (train._stack_member(carried) if single else carried), data_order, losses

    return jax.jit(chunk, static_argnames="num_steps", donate_argnames=("state", "data_order"))


def shard_over_members(
    state: train.TrainState, data_order: train.DataOrder, images: jax.Array, labels: jax.Array
) -> tuple[train.TrainState, train.DataOrder, jax.Array, jax.Array]:
    """Places the member axis of ``state`` and ``data_order`` across all devices (a 1-D mesh
    ``'m'``; the member count must be a multiple of the device count); the shared step, the
    data order's epoch and the training data are replicated."""
    mesh = Mesh(np.array(jax.devices()), ("m",))
    per_member = NamedSharding(mesh, P("m"))
    replicated = NamedSharding(mesh, P())

    def place(tree: Any) -> Any:
        return jax.tree.map(lambda x: jax.device_put(x, per_member), tree)

    state = place(state._replace(step=None))._replace(step=jax.device_put(state.step, replicated))
    data_order = train.DataOrder(
        epoch=jax.device_put(data_order.epoch, replicated),
        permutations=place(data_order.permutations),
    )
    return (
        state,
        data_order,
        jax.device_put(images, replicated),
        jax.device_put(labels, replicated),
    )


def check_chunk_prototype(
    model: nn.Module,
    tx: optax.GradientTransformation,
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int,
    chunk_steps: int,
    num_chunks: int,
) -> dict[str, float | bool | int]:
    """One member trained ``num_chunks`` chunks (cross an epoch boundary) by the engine and by
    :func:`make_train_chunk_prototype`: bit-identical losses and parameters?"""
    members = [train.Member(0.1, 0)]
    results = []
    for make in (train.make_train_chunk, make_train_chunk_prototype):
        chunk = make(model, tx, batch_size=batch_size)
        state = train.init_members(model, tx, members, images[:1])
        order = train.empty_data_order(1, images.shape[0])
        losses = []
        for _ in range(num_chunks):
            state, order, chunk_losses = chunk(state, order, images, labels, chunk_steps)
            losses.append(chunk_losses)
        results.append((state, jnp.concatenate(losses)))
    (state_a, losses_a), (state_b, losses_b) = results
    return {
        "steps": chunk_steps * num_chunks,
        "losses_bit_identical": bool(jnp.array_equal(losses_a, losses_b)),
        "params_bit_identical": all(
            bool(jnp.array_equal(a, b))
            for a, b in zip(
                jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params), strict=True
            )
        ),
        "max_abs_loss_difference": float(jnp.max(jnp.abs(losses_a - losses_b))),
    }


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
       cache checked against the keys on device, as in :func:`make_train_chunk_prototype`).
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
