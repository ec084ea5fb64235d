"""PROTOTYPE of an engine change, for the benchmarks only — not part of bnreg.

:func:`make_train_chunk_prototype` is :func:`bnreg.train.make_train_chunk` with two changes:

1. **Batch indices computed before the scan.** The engine's scan body carries every member's
   epoch permutation (``(members, 60000)`` int32) and runs a ``lax.cond`` each step to renew it
   at epoch starts. Here the permutations of every epoch the chunk touches (at most
   ``(num_steps - 1) // steps_per_epoch + 2``) are computed up front and sliced into a
   ``(num_steps, members, batch_size)`` index array that the scan consumes as ``xs``; the body
   only gathers. The batches are the same ones (same keys, same permutations, same positions),
   so the training is bit-identical (checked by :func:`check_prototype`).
2. **No vmap for a single member.** With one member, the step runs on the member's slice of the
   state directly; vmap over a member axis of size 1 makes XLA:CPU emit batched matmuls with a
   batch dimension of 1, measurably slower than plain ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bnreg import data as data_lib
from bnreg import train

_DATA = 1  # bnreg.train's data stream index (train._DATA)


def chunk_batch_indices(
    data_keys: jax.Array, first_step: jax.Array, num_examples: int, num_steps: int,
    batch_size: int,
) -> jax.Array:
    """``(num_steps, members, batch_size)`` example indices of steps ``first_step …
    first_step + num_steps - 1``, as bnreg's engine draws them (per-epoch permutations)."""
    steps_per_epoch = num_examples // batch_size
    first_epoch = first_step // steps_per_epoch
    num_epochs = (num_steps - 1) // steps_per_epoch + 2
    epochs = first_epoch + jnp.arange(num_epochs)
    permutations = jax.vmap(
        lambda key: jax.vmap(
            lambda epoch: data_lib.epoch_permutation(key, epoch, num_examples)
        )(epochs)
    )(data_keys)  # (members, epochs, N)
    steps = first_step + jnp.arange(num_steps)

    def indices_at(epoch_offset, position):
        return jax.vmap(
            lambda member_permutations: jax.lax.dynamic_slice(
                member_permutations[epoch_offset], (position * batch_size,), (batch_size,)
            )
        )(permutations)

    return jax.vmap(indices_at)(steps // steps_per_epoch - first_epoch, steps % steps_per_epoch)


def make_train_chunk_prototype(
    model: nn.Module, tx: optax.GradientTransformation, *, batch_size: int
) -> Callable[..., tuple[train.TrainState, jax.Array]]:
    """Same signature and results as :func:`bnreg.train.make_train_chunk`."""
    one_member = functools.partial(train.train_step, model, tx)
    vmapped = jax.vmap(
        one_member, in_axes=(train.MEMBER_AXES, 0, 0), out_axes=(train.MEMBER_AXES, 0)
    )

    def chunk(state, images, labels, num_steps):
        data_keys = jax.vmap(lambda key: jax.random.fold_in(key, _DATA))(state.key)
        indices = chunk_batch_indices(
            data_keys, state.step, images.shape[0], num_steps, batch_size
        )
        if indices.shape[1] > 1:

            def body(state, step_indices):
                batch_images = jnp.take(images, step_indices, axis=0)
                batch_labels = jnp.take(labels, step_indices, axis=0)
                return vmapped(state, batch_images, batch_labels)

            return jax.lax.scan(body, state, indices)

        # One member: drop the member axis for the whole scan, restore it at the end.
        def single_body(member_state, step_indices):
            batch_images = jnp.take(images, step_indices, axis=0)
            batch_labels = jnp.take(labels, step_indices, axis=0)
            return one_member(member_state, batch_images, batch_labels)

        squeezed = jax.tree.map(lambda x: x[0], state._replace(step=None))
        member_state, losses = jax.lax.scan(
            single_body, squeezed._replace(step=state.step), indices[:, 0]
        )
        expanded = jax.tree.map(lambda x: x[None], member_state._replace(step=None))
        return expanded._replace(step=member_state.step), losses[:, None]

    return jax.jit(chunk, static_argnames="num_steps", donate_argnames="state")


def check_prototype(
    model: nn.Module, tx: optax.GradientTransformation, images: jax.Array, labels: jax.Array,
    seeds: list[int], *, batch_size: int, num_steps: int,
) -> dict[str, float | bool]:
    """Trains ``seeds`` for ``num_steps`` (choose it to cross an epoch boundary) with the engine
    and with the prototype; returns whether the losses and parameters are bit-identical and the
    largest loss difference."""
    members = [train.Member(0.1, seed) for seed in seeds]
    reference = train.make_train_chunk(model, tx, batch_size=batch_size)
    prototype = make_train_chunk_prototype(model, tx, batch_size=batch_size)
    state_a, losses_a = reference(
        train.init_members(model, tx, members, images[:1]), images, labels, num_steps
    )
    state_b, losses_b = prototype(
        train.init_members(model, tx, members, images[:1]), images, labels, num_steps
    )
    same_params = all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params),
                        strict=True)
    )
    return {
        "members": len(seeds),
        "num_steps": num_steps,
        "losses_bit_identical": bool(jnp.array_equal(losses_a, losses_b)),
        "params_bit_identical": same_params,
        "max_abs_loss_difference": float(jnp.max(jnp.abs(losses_a - losses_b))),
    }
