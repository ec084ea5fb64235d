"""The member state, one training step, and chunks of steps fused into one compiled ``lax.scan``.

Every per-member function is written for one member and ``jax.vmap``-ed over the leading member
axis of :class:`TrainState`, so a grid of members costs one compilation and one pass of Python
per chunk of steps. The training split lives on the device and each step's batch is drawn inside
the compiled loop (:class:`Sampler`); the state buffers are donated from chunk to chunk.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from bnreg import data as data_lib
from bnreg.engine.members import Members, Stream, stream_key
from bnreg.engine.optimizer import OptimizerFactory
from bnreg.engine.tasks import Task

# Member axes that are fields of the models (bnreg.models): a traced value replaces the field.
MODEL_AXES = ("input_dropout", "hidden_dropout", "dropconnect", "bn_momentum")


class TrainState(NamedTuple):
    """Everything a run carries from step to step.

    ``step`` is shared by all members (they advance together); every other field has a leading
    member axis when the state describes several members.

    Attributes:
      step: int32 scalar, the number of steps taken.
      params: the flax ``params`` collection.
      batch_stats: the flax ``batch_stats`` collection (BN's EMA statistics; ``{}`` without BN).
      opt_state: the optax state.
      key: the member's raw ``uint32`` PRNG key data, from its seed.
      hyperparameters: the member's traced hyperparameters (:meth:`Members.traced`).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    key: jax.Array
    hyperparameters: Mapping[str, jax.Array]


# vmap axes of a TrainState: the step is shared, everything else is per member.
MEMBER_AXES = TrainState(
    step=None, params=0, batch_stats=0, opt_state=0, key=0, hyperparameters=0
)


@dataclasses.dataclass(frozen=True)
class Network:
    """What a member trains: the model (its structure and shared values), the task and the
    optimizer factory (:func:`bnreg.engine.optimizer.build_optimizer`)."""

    model: nn.Module
    task: Task
    optimizer: OptimizerFactory

    def member_model(self, hyperparameters: Mapping[str, jax.Array]) -> nn.Module:
        """The model with the member's traced rates and BN momentum in place of its fields."""
        traced = {axis: hyperparameters[axis] for axis in MODEL_AXES if axis in hyperparameters}
        return self.model.clone(**traced) if traced else self.model


def init_member(
    network: Network,
    key: jax.Array,
    hyperparameters: Mapping[str, jax.Array],
    sample_images: jax.Array,
) -> TrainState:
    """The initial state of one member (``step`` 0), its weights from its ``INIT`` stream."""
    variables = network.member_model(hyperparameters).init(
        stream_key(key, Stream.INIT), sample_images, bn_mode="inference", noise=False
    )
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=network.optimizer(hyperparameters).init(params),
        key=key,
        hyperparameters=hyperparameters,
    )


def init_members(network: Network, members: Members, sample_images: jax.Array) -> TrainState:
    """The initial states of ``members``, stacked on a leading member axis."""
    init = jax.vmap(
        functools.partial(init_member, network), in_axes=(0, 0, None), out_axes=MEMBER_AXES
    )
    return jax.jit(init)(members.keys(), members.traced(), sample_images)


def train_step(
    network: Network, state: TrainState, images: jax.Array, labels: jax.Array
) -> tuple[TrainState, jax.Array]:
    """One update of one member on one batch; returns the new state and the batch's loss.

    BN normalises with the batch's statistics and updates its EMA statistics; dropout draws its
    masks from ``fold_in(fold_in(key, DROPOUT), step)``.
    """
    dropout_key = jax.random.fold_in(stream_key(state.key, Stream.DROPOUT), state.step)
    model = network.member_model(state.hyperparameters)

    def loss_fn(params):
        outputs, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            bn_mode="batch",
            noise=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        return network.task.loss(outputs, images, labels), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    tx = network.optimizer(state.hyperparameters)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state._replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        batch_stats=updates.get("batch_stats", state.batch_stats),
        opt_state=opt_state,
    )
    return new_state, loss


def unstack_member(state: TrainState) -> TrainState:
    """The only member of a one-member state, without its member axis."""
    return jax.tree.map(lambda x: x[0], state._replace(step=None))._replace(step=state.step)


def stack_member(state: TrainState) -> TrainState:
    """A one-member state (member axis of size 1) from a single member's state."""
    return jax.tree.map(lambda x: x[None], state._replace(step=None))._replace(step=state.step)


class DataOrder(NamedTuple):
    """Each member's permutation of its training examples for one epoch.

    Carried from chunk to chunk so that a permutation (a sort) is computed once per epoch; a
    function of the members' keys and the epoch alone, so dropping it (as a resumed run does)
    changes no result.

    Attributes:
      epoch: int32, the epoch the permutations belong to (-1: none yet): a scalar shared by the
        members when they train on the whole split, else one per member.
      permutations: ``(members, num_examples)`` int32 on the whole split; with subsets, one
        ``(n_m,)`` permutation of positions in member ``m``'s subset per member.
    """

    epoch: jax.Array
    permutations: jax.Array | tuple[jax.Array, ...]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How each member draws its batches: shuffled epochs, drop-remainder
    (:func:`bnreg.data.batch_at_step`), from the whole training split or, with ``subset_sizes``,
    from the member's own subset (:func:`bnreg.engine.run_data.member_subsets`).

    A subset's size sets the length of the member's epoch permutation, so it is fixed when the
    program is built (sorting only the member's own ``n`` examples per epoch: a padded,
    traced size would sort the largest subset for every member at each of its epochs, ~14 ms for
    50,000 examples on 2 CPU cores, every step for a 100-example member).
    """

    num_examples: int
    batch_size: int
    subset_sizes: tuple[int, ...] | None = None

    def empty_order(self, num_members: int) -> DataOrder:
        """A :class:`DataOrder` that the first chunk replaces."""
        if self.subset_sizes is None:
            return DataOrder(
                epoch=jnp.asarray(-1, jnp.int32),
                permutations=jnp.zeros((num_members, self.num_examples), jnp.int32),
            )
        return DataOrder(
            epoch=jnp.full((num_members,), -1, jnp.int32),
            permutations=tuple(jnp.zeros((n,), jnp.int32) for n in self.subset_sizes),
        )

    def batches(
        self,
        order: DataOrder,
        step: jax.Array,
        data_keys: jax.Array,
        images: jax.Array,
        labels: jax.Array,
        subsets: Sequence[jax.Array] | None,
    ) -> tuple[DataOrder, jax.Array, jax.Array]:
        """Every member's batch at ``step``: ``(order, images (members, B, ...), labels)``."""
        if self.subset_sizes is None:
            return self._whole_split_batches(order, step, data_keys, images, labels)
        epochs, permutations, indices = [], [], []
        for member, size in enumerate(self.subset_sizes):
            steps_per_epoch = size // self.batch_size
            epoch = (step // steps_per_epoch).astype(jnp.int32)
            # The step is shared by all members, so each member's test is a real branch.
            permutation = lax.cond(
                epoch != order.epoch[member],
                lambda e, m=member, n=size: data_lib.epoch_permutation(data_keys[m], e, n),
                lambda _, m=member: order.permutations[m],
                epoch,
            )
            start = (step % steps_per_epoch).astype(jnp.int32) * self.batch_size
            positions = lax.dynamic_slice(permutation, (start,), (self.batch_size,))
            epochs.append(epoch)
            permutations.append(permutation)
            indices.append(jnp.take(subsets[member], positions))
        indices = jnp.stack(indices)
        order = DataOrder(epoch=jnp.stack(epochs), permutations=tuple(permutations))
        return order, jnp.take(images, indices, axis=0), jnp.take(labels, indices, axis=0)

    def _whole_split_batches(self, order, step, data_keys, images, labels):
        steps_per_epoch = self.num_examples // self.batch_size
        epoch = (step // steps_per_epoch).astype(jnp.int32)

        def order_of(epoch):
            return DataOrder(
                epoch=epoch,
                permutations=jax.vmap(
                    lambda key: data_lib.epoch_permutation(key, epoch, self.num_examples)
                )(data_keys),
            )

        # The step is shared by all members, so this stays a real branch under vmap.
        order = lax.cond(epoch != order.epoch, order_of, lambda _: order, epoch)
        position = step % steps_per_epoch
        batch_images, batch_labels = jax.vmap(
            lambda permutation: data_lib.batch_from_permutation(
                images, labels, permutation, position, self.batch_size
            )
        )(order.permutations)
        return order, batch_images, batch_labels


ChunkFn = Callable[..., tuple[TrainState, DataOrder, jax.Array]]


def make_train_chunk(network: Network, sampler: Sampler,
                     batch_sharding: Callable[[bool], Any] | None = None, *,
                     unroll: bool = False) -> ChunkFn:
    """A jitted ``chunk(state, data_order, images, labels, subsets, num_steps) -> (state,
    data_order, losses)`` that advances all members by ``num_steps`` steps in one ``lax.scan``.

    ``subsets`` are the members' subset indices (device arrays) or ``None``; ``losses`` is
    ``(num_steps, members)``; ``state`` and ``data_order`` are donated. A single member runs
    without ``vmap``: XLA:CPU's batched matmuls with a batch of one are measurably slower than
    plain ones (benchmarks/README.md).

    ``batch_sharding(member_axis)``, when given, is the sharding each step's batch is
    constrained to (``(members, B, ...)``, or ``(B, ...)`` for a single member): data
    parallelism, whose collectives XLA's partitioner derives from it
    (:mod:`bnreg.engine.devices`).

    ``unroll`` unrolls the scan into straight-line code (``config.unroll_steps``): XLA:CPU runs
    convolutions several times slower inside a loop's body than outside one (the Inception
    net's step: 111 ms unrolled, 475 ms in a ``lax.scan`` or ``fori_loop``, 2 cores), at a
    compile time that grows with the steps per call.
    """
    single_step = functools.partial(train_step, network)
    vmapped_step = jax.vmap(single_step, in_axes=(MEMBER_AXES, 0, 0), out_axes=(MEMBER_AXES, 0))

    def chunk(state, data_order, images, labels, subsets, num_steps):
        data_keys = jax.vmap(lambda key: stream_key(key, Stream.DATA))(state.key)
        single = state.key.shape[0] == 1

        def body(carry, _):
            state, data_order = carry
            data_order, batch_images, batch_labels = sampler.batches(
                data_order, state.step, data_keys, images, labels, subsets
            )
            if single:
                batch_images, batch_labels = batch_images[0], batch_labels[0]
            if batch_sharding is not None:
                batch_images, batch_labels = lax.with_sharding_constraint(
                    (batch_images, batch_labels), batch_sharding(not single))
            if single:
                state, loss = single_step(state, batch_images, batch_labels)
                return (state, data_order), loss[None]
            state, loss = vmapped_step(state, batch_images, batch_labels)
            return (state, data_order), loss

        carry = (unstack_member(state) if single else state, data_order)
        (state, data_order), losses = lax.scan(body, carry, None, length=num_steps,
                                               unroll=num_steps if unroll else 1)
        return (stack_member(state) if single else state), data_order, losses

    return jax.jit(chunk, static_argnames="num_steps", donate_argnames=("state", "data_order"))
