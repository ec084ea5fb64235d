"""PROTOTYPE of an engine change, for the benchmarks only — not part of bnreg.

:func:`make_train_chunk_prototype` has the signature of :func:`bnreg.train.make_train_chunk`
and two independent changes, each behind a flag so they can be measured one by one:

1. ``cache_permutations`` — **compute each epoch's permutation once.** ``jax.random.permutation``
   of 60000 indices costs ~20 ms on this CPU (two rounds of a key-value sort) per member. The
   engine computes one at the start of every chunk and again inside the scan whenever a step is
   at position 0 of an epoch — also on the first step of a chunk that starts at an epoch
   boundary, where it was just computed. With the study's 500-step chunks (``eval_every``) and
   1000-step epochs that is 3 permutations per epoch instead of 1. Here the scan carries
   ``(permutations, epoch_of_permutations)`` and recomputes only when a step's epoch differs;
   the final carry is kept by the returned Python function between calls (a cache keyed by
   the data keys; the compiled chunk checks the keys on device and recomputes on a mismatch,
   so any state — a resumed checkpoint, another run — is handled). Bit-identical training.
2. ``squeeze_single`` — **no vmap for a single member.** With one member the scan runs the
   step on the member's slice of the state directly (the member axis is dropped before the scan
   and restored after). vmap over a member axis of size 1 makes XLA:CPU emit batched matmuls with
   a batch dimension of 1, measurably slower. Same math; the losses agree to ~1e-7 (a different
   matmul kernel sums in a different order), not bit-for-bit.
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

_DATA = 1  # bnreg.train's data-order stream (train._DATA)


def make_train_chunk_prototype(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    batch_size: int,
    cache_permutations: bool = True,
    squeeze_single: bool = True,
) -> Callable[..., tuple[train.TrainState, jax.Array]]:
    """Same signature and batches as :func:`bnreg.train.make_train_chunk`; see the module
    docstring for the two changes."""
    one_member = functools.partial(train.train_step, model, tx)
    vmapped = jax.vmap(
        one_member, in_axes=(train.MEMBER_AXES, 0, 0), out_axes=(train.MEMBER_AXES, 0)
    )

    def compiled_chunk(state, images, labels, cache, num_steps):
        num_examples = images.shape[0]
        steps_per_epoch = num_examples // batch_size
        data_keys = jax.vmap(lambda key: jax.random.fold_in(key, _DATA))(state.key)
        num_members = data_keys.shape[0]

        def permutations_of(epoch):
            return jax.vmap(
                lambda key: data_lib.epoch_permutation(key, epoch, num_examples)
            )(data_keys)

        cached_keys, cached_epoch, cached_permutations = cache
        # A cache from another run (other keys) is ignored: epoch -1 forces a recompute.
        epoch = jnp.where(jnp.all(cached_keys == data_keys), cached_epoch, -1)

        def batches(permutations, epoch, step):
            step_epoch = step // steps_per_epoch
            permutations, epoch = jax.lax.cond(
                step_epoch == epoch,
                lambda: (permutations, epoch),
                lambda: (permutations_of(step_epoch), step_epoch),
            )
            batch_images, batch_labels = jax.vmap(
                lambda permutation: data_lib.batch_from_permutation(
                    images, labels, permutation, step % steps_per_epoch, batch_size
                )
            )(permutations)
            return permutations, epoch, batch_images, batch_labels

        single = squeeze_single and num_members == 1
        member_state = state
        if single:
            member_state = jax.tree.map(lambda x: x[0], state._replace(step=None))
            member_state = member_state._replace(step=state.step)

        def body(carry, _):
            member_state, permutations, epoch = carry
            permutations, epoch, batch_images, batch_labels = batches(
                permutations, epoch, member_state.step
            )
            if single:
                member_state, loss = one_member(member_state, batch_images[0], batch_labels[0])
                loss = loss[None]
            else:
                member_state, loss = vmapped(member_state, batch_images, batch_labels)
            return (member_state, permutations, epoch), loss

        initial = (member_state, cached_permutations, epoch)
        (member_state, permutations, epoch), losses = jax.lax.scan(
            body, initial, None, length=num_steps
        )
        if single:
            restored = jax.tree.map(lambda x: x[None], member_state._replace(step=None))
            member_state = restored._replace(step=member_state.step)
        return member_state, losses, (data_keys, epoch, permutations)

    jitted = jax.jit(
        compiled_chunk, static_argnames="num_steps", donate_argnames=("state", "cache")
    )
    caches: dict[tuple[int, int], tuple[jax.Array, jax.Array, jax.Array]] = {}

    def chunk(state, images, labels, num_steps):
        num_members, num_examples = state.key.shape[0], images.shape[0]
        shape = (num_members, num_examples)
        cache = caches.pop(shape, None)
        if cache is None or not cache_permutations:
            cache = (
                jnp.zeros(state.key.shape, state.key.dtype),
                jnp.asarray(-1, jnp.int32),
                jnp.zeros(shape, jnp.int32),
            )
        state, losses, caches[shape] = jitted(state, images, labels, cache, num_steps)
        return state, losses

    return chunk


def check_prototype(
    model: nn.Module, tx: optax.GradientTransformation, images: jax.Array, labels: jax.Array,
    seeds: list[int], *, batch_size: int, chunk_steps: int, num_chunks: int, **options: bool,
) -> dict[str, float | bool | int]:
    """Trains ``seeds`` for ``num_chunks`` chunks of ``chunk_steps`` (cross an epoch boundary)
    with the engine and with the prototype; whether losses and parameters are bit-identical,
    and the largest loss difference."""
    members = [train.Member(0.1, seed) for seed in seeds]
    reference = train.make_train_chunk(model, tx, batch_size=batch_size)
    prototype = make_train_chunk_prototype(model, tx, batch_size=batch_size, **options)
    state_a = train.init_members(model, tx, members, images[:1])
    state_b = train.init_members(model, tx, members, images[:1])
    losses_a, losses_b = [], []
    for _ in range(num_chunks):
        state_a, losses = reference(state_a, images, labels, chunk_steps)
        losses_a.append(losses)
        state_b, losses = prototype(state_b, images, labels, chunk_steps)
        losses_b.append(losses)
    losses_a, losses_b = jnp.concatenate(losses_a), jnp.concatenate(losses_b)
    same_params = all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params),
                        strict=True)
    )
    return {
        "members": len(seeds),
        "steps": chunk_steps * num_chunks,
        "chunk_steps": chunk_steps,
        **options,
        "losses_bit_identical": bool(jnp.array_equal(losses_a, losses_b)),
        "params_bit_identical": same_params,
        "max_abs_loss_difference": float(jnp.max(jnp.abs(losses_a - losses_b))),
    }
