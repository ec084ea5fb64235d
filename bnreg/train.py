"""The training engine: one loop for every study.

A *run* trains several *members* — the pairs (learning rate, seed) of ``config.learning_rates ×
config.seeds`` — as one compiled program: every per-member function is written for one member and
``jax.vmap``-ed over a leading member axis, so 3 seeds (or a learning-rate sweep) cost one
compilation and one pass of Python per chunk of steps, not one per member.

Speed comes from fusing whole chunks of steps with ``lax.scan`` (no Python per step; a chunk runs
to the next evaluation, or ``config.steps_per_call`` steps): the training split lives on the
device, each step's batch is drawn inside the compiled loop from a per-epoch permutation
(:mod:`bnreg.data`), and the state buffers are donated to the next chunk.

Keys: each member's key comes from its seed; ``jax.random.fold_in`` derives independent streams
for initialisation, data order, dropout (then folded with the step) and Alg. 2's batches. Two
models trained with the same seed therefore see the same data order, and layers with the same
name get the same initial weights (flax derives parameter keys from module names).

After training, BN's inference statistics are computed three ways — the EMA tracked during
training (``batch_stats``), Alg. 2's population statistics (Ioffe & Szegedy 2015), and the EMA
settled on the final weights (a diagnostic of the EMA's lag) — and the model is evaluated with
each.

Several runs (e.g. the nets a study compares) can train at the same time, one share of the
devices each (:func:`train_and_evaluate_concurrently`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from bnreg import data as data_lib
from bnreg import probes
from bnreg.batch_norm import PopulationStatsAccumulator, population_stats_finalize
from bnreg.config import validate_config
from bnreg.max_norm import is_kernel, max_norm
from bnreg.models import MLP, ConvNet, is_hidden_kernel
from bnreg.tensorboard_events import TENSORBOARD_DIR, TensorBoardEvents

# Streams folded into a member's key.
_INIT, _DATA, _DROPOUT, _POPULATION = range(4)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"


class TrainState(NamedTuple):
    """Everything a run carries from step to step.

    ``step`` is shared by all members (they advance together); every other field has a leading
    member axis when the state describes several members.

    Attributes:
      step: int32 scalar, the number of steps taken.
      params: the flax ``params`` collection.
      batch_stats: the flax ``batch_stats`` collection (BN's EMA statistics; ``{}`` without BN).
      opt_state: the optax state; the learning rate lives in it (``optax.inject_hyperparams``),
        so members may differ in learning rate.
      key: the member's raw ``uint32`` PRNG key data, from its seed.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    key: jax.Array


# vmap axes of a TrainState: the step is shared, everything else is per member.
MEMBER_AXES = TrainState(step=None, params=0, batch_stats=0, opt_state=0, key=0)


class Member(NamedTuple):
    """One trained network of a run: its learning rate and its seed."""

    learning_rate: float
    seed: int


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite training or evaluation loss."""


@dataclasses.dataclass(frozen=True)
class RunData:
    """A run's data, preprocessed, as host arrays."""

    train: data_lib.Split
    evaluation: data_lib.Split
    evaluation_split: str  # "test" or "validation"
    num_classes: int
    source: str


@dataclasses.dataclass
class RunResult:
    """What :func:`train_and_evaluate` returns.

    Attributes:
      history: the metrics records, one per (evaluation, member), as in ``metrics.jsonl``.
      summary: final evaluation per member with the EMA, Alg. 2 and settled EMA statistics
        (``summary.json``).
      state: the final :class:`TrainState` (members on the leading axis).
      members: the members, in the order of the member axis.
    """

    history: list[dict]
    summary: dict
    state: TrainState
    members: list[Member]


def members_from_config(config: ml_collections.ConfigDict) -> list[Member]:
    """The run's members: every learning rate × every seed, learning rate major."""
    learning_rates = tuple(config.learning_rates) or (config.optimizer.learning_rate,)
    return [Member(float(lr), int(seed)) for lr in learning_rates for seed in config.seeds]


def load_run_data(config: ml_collections.ConfigDict) -> RunData:
    """Loads ``config.dataset`` and applies the configured preprocessing.

    Order: carve the validation split (if any) from train, take the stratified train subset (if
    any), binarize, then standardize with statistics of the (final) train split.
    """
    dataset = data_lib.load_dataset(
        config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir
    )
    train, evaluation, split = dataset.train, dataset.test, "test"
    if config.validation_fraction:
        num_validation = round(config.validation_fraction * len(train.labels))
        if not 1 <= num_validation < len(train.labels):
            raise ValueError(
                f"config.validation_fraction = {config.validation_fraction} of the "
                f"{len(train.labels)} training examples of {config.dataset} is {num_validation} "
                "examples; it must hold at least one and leave at least one for training."
            )
        train, evaluation = data_lib.train_validation_split(train, num_validation, seed=0)
        split = "validation"
    if config.train_subset:
        train = data_lib.stratified_subset(train, config.train_subset, seed=0)
    train_images, evaluation_images = train.images, evaluation.images
    binarize = config.dataset == "mnist" if config.binarize is None else config.binarize
    if binarize:
        train_images = data_lib.binarize(train_images)
        evaluation_images = data_lib.binarize(evaluation_images)
    if config.standardize != "none":
        train_images, evaluation_images = data_lib.standardize(
            train_images, evaluation_images, per_pixel=config.standardize == "per_pixel"
        )
    if config.batch_size > len(train_images):
        raise ValueError(
            f"config.batch_size ({config.batch_size}) exceeds the {len(train_images)} training "
            "examples."
        )
    return RunData(
        train=data_lib.Split(train_images, train.labels),
        evaluation=data_lib.Split(evaluation_images, evaluation.labels),
        evaluation_split=split,
        num_classes=dataset.num_classes,
        source=dataset.source,
    )


def build_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The network named by ``model_config.name`` (``"mlp"`` or ``"convnet"``)."""
    common = dict(
        hidden_sizes=tuple(model_config.hidden_sizes),
        num_classes=num_classes,
        activation=model_config.activation,
        norm=model_config.norm,
        input_dropout=model_config.input_dropout,
        hidden_dropout=model_config.hidden_dropout,
        kernel_init=model_config.kernel_init,
        init_stddev=model_config.init_stddev,
        bn_momentum=model_config.bn_momentum,
        bn_epsilon=model_config.bn_epsilon,
        bn_backward=model_config.bn_backward,
    )
    if model_config.name == "mlp":
        return MLP(dropconnect=model_config.dropconnect, **common)
    if model_config.dropconnect:
        raise ValueError("model.dropconnect is implemented for the MLP's dense layers only.")
    return ConvNet(conv_features=tuple(model_config.conv_features), **common)


def _schedule_shape(optimizer_config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning-rate schedule as a multiplier of the base rate (1 at step 0)."""
    if optimizer_config.schedule == "exponential":
        return optax.exponential_decay(
            1.0, optimizer_config.decay_steps, optimizer_config.decay_rate
        )
    if optimizer_config.schedule == "step":
        return optax.piecewise_constant_schedule(
            1.0, {int(b): optimizer_config.step_factor for b in optimizer_config.step_boundaries}
        )
    return optax.constant_schedule(1.0)


def build_optimizer(
    optimizer_config: ml_collections.ConfigDict,
) -> optax.GradientTransformation:
    """The optimizer: ``[L2 weight decay] → SGD(+momentum) or Adam → [max-norm projection]``.

    The base learning rate is an injected hyperparameter (``opt_state.hyperparams
    ["learning_rate"]``) multiplying the schedule, so members of one run can differ in it.
    Weight decay adds ``λ·w`` to the gradient of every kernel (an L2 penalty ``λ/2‖w‖²``);
    max-norm (:func:`bnreg.max_norm.max_norm`) constrains the hidden layers' kernels (each hidden
    unit's incoming weights; :func:`bnreg.models.is_hidden_kernel`) and comes last so the
    constraint holds after ``optax.apply_updates``.
    """
    shape = _schedule_shape(optimizer_config)

    def make(learning_rate: jax.Array) -> optax.GradientTransformation:
        schedule = lambda count: learning_rate * shape(count)  # noqa: E731
        parts = []
        if optimizer_config.weight_decay:
            parts.append(optax.add_decayed_weights(
                    optimizer_config.weight_decay,
                    lambda params: jax.tree_util.tree_map_with_path(is_kernel, params),
                ))
        if optimizer_config.name == "sgd":
            parts.append(
                optax.sgd(
                    schedule,
                    momentum=optimizer_config.momentum or None,
                    nesterov=optimizer_config.nesterov,
                )
            )
        else:
            parts.append(optax.adam(schedule))
        if optimizer_config.max_norm:
            parts.append(max_norm(optimizer_config.max_norm, predicate=is_hidden_kernel))
        return optax.chain(*parts)

    return optax.inject_hyperparams(make, hyperparam_dtype=jnp.float32)(
        learning_rate=optimizer_config.learning_rate
    )


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer ``labels``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def init_member(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    learning_rate: jax.Array,
    sample_images: jax.Array,
) -> TrainState:
    """The initial state of one member (``step`` 0)."""
    variables = model.init(jax.random.fold_in(key, _INIT), sample_images, train=False)
    params = variables["params"]
    opt_state = tx.init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=opt_state,
        key=key,
    )


def init_members(
    model: nn.Module,
    tx: optax.GradientTransformation,
    members: list[Member],
    sample_images: jax.Array,
) -> TrainState:
    """The initial states of ``members``, stacked on a leading member axis."""
    keys = jnp.stack([jax.random.key_data(jax.random.key(m.seed)) for m in members])
    learning_rates = jnp.asarray([m.learning_rate for m in members], jnp.float32)
    init = jax.vmap(
        functools.partial(init_member, model, tx),
        in_axes=(0, 0, None),
        out_axes=MEMBER_AXES,
    )
    return jax.jit(init)(keys, learning_rates, sample_images)


def train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
) -> tuple[TrainState, jax.Array]:
    """One SGD step of one member on one batch; returns the new state and the batch's loss.

    BN normalises with the batch's statistics and updates its EMA statistics; dropout draws its
    masks from ``fold_in(fold_in(key, DROPOUT), step)``.
    """
    dropout_key = jax.random.fold_in(jax.random.fold_in(state.key, _DROPOUT), state.step)

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        return cross_entropy_loss(logits, labels), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        batch_stats=updates.get("batch_stats", state.batch_stats),
        opt_state=opt_state,
        key=state.key,
    )
    return new_state, loss


def _unstack_member(state: TrainState) -> TrainState:
    """The only member of a one-member state, without its member axis."""
    return jax.tree.map(lambda x: x[0], state._replace(step=None))._replace(step=state.step)


def _stack_member(state: TrainState) -> TrainState:
    """A one-member state (member axis of size 1) from a single member's state."""
    return jax.tree.map(lambda x: x[None], state._replace(step=None))._replace(step=state.step)


class DataOrder(NamedTuple):
    """Each member's permutation of the training split for one epoch (:mod:`bnreg.data`).

    Carried from chunk to chunk so that a permutation (a sort of the whole split) is computed
    once per epoch; a function of the members' keys and the epoch alone, so dropping it (as a
    resumed run does) changes no result.

    Attributes:
      epoch: int32 scalar, the epoch the permutations belong to (-1: none yet).
      permutations: ``(members, num_examples)`` int32.
    """

    epoch: jax.Array
    permutations: jax.Array


def empty_data_order(num_members: int, num_examples: int) -> DataOrder:
    """A :class:`DataOrder` that the first chunk replaces."""
    return DataOrder(
        epoch=jnp.asarray(-1, jnp.int32),
        permutations=jnp.zeros((num_members, num_examples), jnp.int32),
    )


def member_devices(
    num_members: int, devices: Sequence[jax.Device] | None = None
) -> list[jax.Device]:
    """The devices a run of ``num_members`` members uses: all of ``devices`` (default: the local
    devices) when their count divides the member count, else the first one."""
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device (or be None for all).")
    return devices if num_members % len(devices) == 0 else devices[:1]


def shard_members(
    tree: TrainState | DataOrder, devices: Sequence[jax.Device] | None = None
) -> TrainState | DataOrder:
    """Places a :class:`TrainState` or :class:`DataOrder` on :func:`member_devices`: the member
    axis spread over them (the scalar ``step``/``epoch`` replicated), so jit runs each device's
    members there; on one device, all of it there.

    On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` makes one device per
    core, which beats XLA's intra-op threading for these small networks (benchmarks/README.md).
    """
    num_members = tree.key.shape[0] if isinstance(tree, TrainState) else len(tree.permutations)
    devices = member_devices(num_members, devices)
    if len(devices) == 1:
        return jax.device_put(tree, devices[0])
    mesh = _member_mesh(devices)
    by_member = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = jax.tree.map(
        lambda axis: replicated if axis is None else by_member,
        MEMBER_AXES if isinstance(tree, TrainState) else DataOrder(None, 0),
        is_leaf=lambda axis: axis is None,
    )
    return jax.device_put(tree, shardings)


def _member_mesh(devices: Sequence[jax.Device]) -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.asarray(devices), ("members",))


def _replicate(array: np.ndarray, devices: Sequence[jax.Device]) -> jax.Array:
    """``array`` on every one of ``devices`` (the data every member of a run reads)."""
    if len(devices) == 1:
        return jax.device_put(array, devices[0])
    replicated = jax.sharding.NamedSharding(_member_mesh(devices), jax.sharding.PartitionSpec())
    return jax.device_put(array, replicated)


def make_train_chunk(
    model: nn.Module, tx: optax.GradientTransformation, *, batch_size: int
) -> Callable[..., tuple[TrainState, DataOrder, jax.Array]]:
    """A jitted ``chunk(state, data_order, images, labels, num_steps) -> (state, data_order,
    losses)`` that advances all members by ``num_steps`` steps in one ``lax.scan``.

    Each member draws its batches from its own per-epoch permutation of the training split
    (:func:`bnreg.data.epoch_permutation`), computed when a step falls in another epoch than
    ``data_order``'s. ``losses`` is ``(num_steps, members)``. ``state`` and ``data_order`` are
    donated. A single member runs without ``vmap``: XLA:CPU's batched matmuls with a batch of one
    are measurably slower than plain ones (benchmarks/README.md).
    """
    single_step = functools.partial(train_step, model, tx)
    vmapped_step = jax.vmap(single_step, in_axes=(MEMBER_AXES, 0, 0), out_axes=(MEMBER_AXES, 0))

    def chunk(
        state: TrainState,
        data_order: DataOrder,
        images: jax.Array,
        labels: jax.Array,
        num_steps: int,
    ):
        num_examples = images.shape[0]
        steps_per_epoch = num_examples // batch_size
        data_keys = jax.vmap(lambda key: jax.random.fold_in(key, _DATA))(state.key)
        single = state.key.shape[0] == 1

        def order_of(epoch):
            return DataOrder(
                epoch=epoch,
                permutations=jax.vmap(
                    lambda key: data_lib.epoch_permutation(key, epoch, num_examples)
                )(data_keys),
            )

        def body(carry, _):
            state, data_order = carry
            epoch = (state.step // steps_per_epoch).astype(jnp.int32)
            # The step is shared by all members, so this stays a real branch under vmap.
            data_order = jax.lax.cond(
                epoch != data_order.epoch, order_of, lambda _: data_order, epoch
            )
            position = state.step % steps_per_epoch
            batch_images, batch_labels = jax.vmap(
                lambda permutation: data_lib.batch_from_permutation(
                    images, labels, permutation, position, batch_size
                )
            )(data_order.permutations)
            if single:
                state, loss = single_step(state, batch_images[0], batch_labels[0])
                return (state, data_order), loss[None]
            state, loss = vmapped_step(state, batch_images, batch_labels)
            return (state, data_order), loss

        carry = (_unstack_member(state) if single else state, data_order)
        (state, data_order), losses = jax.lax.scan(body, carry, None, length=num_steps)
        return (_stack_member(state) if single else state), data_order, losses

    return jax.jit(chunk, static_argnames="num_steps", donate_argnames=("state", "data_order"))


class ProbeSpec(NamedTuple):
    """What the evaluation records of the hidden layers (see :mod:`bnreg.probes`)."""

    layers: tuple[int, ...]
    units: tuple[int, ...]
    percentiles: tuple[float, ...]
    histogram_bins: int
    histogram_range: tuple[float, float]

    @classmethod
    def from_config(cls, probe_config: ml_collections.ConfigDict) -> ProbeSpec:
        return cls(
            layers=tuple(int(layer) for layer in probe_config.layers),
            units=tuple(int(u) for u in probe_config.units),
            percentiles=tuple(float(q) for q in probe_config.percentiles),
            histogram_bins=int(probe_config.histogram_bins),
            histogram_range=tuple(float(v) for v in probe_config.histogram_range),
        )


def evaluate(
    model: nn.Module,
    variables: Mapping[str, Any],
    images: jax.Array,
    labels: jax.Array,
    *,
    probe: ProbeSpec,
    batch_size: int,
) -> dict[str, jax.Array]:
    """Evaluates one member on a whole split, in batches of ``batch_size``, with probes.

    BN uses the statistics in ``variables["batch_stats"]``; dropout is off.

    Returns:
      ``loss`` and ``accuracy`` over the split; ``probe_percentiles`` ``(layers, units,
      percentiles)`` of the chosen units' pre-activations in each of ``probe.layers`` (a conv
      layer's unit is a feature map, sampled at every position); per hidden layer,
      ``mean_activation`` and, unless ``probe.histogram_bins`` is 0, ``activation_histogram``
      ``(layers, bins)``.
    """
    num_examples = images.shape[0]
    num_batches = math.ceil(num_examples / batch_size)
    padding = num_batches * batch_size - num_examples

    def pad(x):
        return jnp.pad(x, [(0, padding)] + [(0, 0)] * (x.ndim - 1)).reshape(
            (num_batches, batch_size, *x.shape[1:])
        )

    weights = pad(jnp.ones((num_examples,), jnp.float32))

    def one_batch(batch):
        batch_images, batch_labels, batch_weights = batch
        logits, state = model.apply(
            variables, batch_images, train=False, mutable=["intermediates"]
        )
        intermediates = state["intermediates"]
        activations = probes.sown(intermediates, "activation")
        preactivations = probes.sown(intermediates, "preactivation")
        num_hidden = len(preactivations)
        if not all(-num_hidden <= layer < num_hidden for layer in probe.layers):
            raise ValueError(
                f"config.probe.layers {list(probe.layers)} must index the model's "
                f"{num_hidden} hidden layers (negative indices count from the last)."
            )
        if len({layer % num_hidden for layer in probe.layers}) < len(probe.layers):
            raise ValueError(
                f"config.probe.layers {list(probe.layers)} names a hidden layer twice (of "
                f"{num_hidden}; negative indices count from the last)."
            )
        probed = [probes.unit_columns(preactivations[layer], probe.units) for layer in probe.layers]

        def per_example_weights(x):
            return jnp.broadcast_to(
                batch_weights.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape
            )

        sums = {
            "loss_sum": jnp.sum(
                optax.softmax_cross_entropy_with_integer_labels(logits, batch_labels)
                * batch_weights
            ),
            "correct": jnp.sum((jnp.argmax(logits, -1) == batch_labels) * batch_weights),
            "probed": probed,
            "activation_sum": jnp.stack(
                [jnp.sum(a * per_example_weights(a)) / (a.size // a.shape[0]) for a in activations]
            ),
        }
        if probe.histogram_bins:
            sums["histogram"] = jnp.stack(
                [
                    probes.histogram(
                        a,
                        bins=probe.histogram_bins,
                        value_range=probe.histogram_range,
                        weights=per_example_weights(a),
                    )
                    for a in activations
                ]
            )
        return sums

    totals = jax.lax.map(one_batch, (pad(images), pad(labels), weights))

    def layer_percentiles(probed):  # (batches, batch_size · samples per example, units)
        samples_per_example = probed.shape[1] // batch_size
        probed = probed.reshape(-1, probed.shape[-1])[: num_examples * samples_per_example]
        return probes.percentiles(probed, probe.percentiles)

    result = {
        "loss": totals["loss_sum"].sum() / num_examples,
        "accuracy": totals["correct"].sum() / num_examples,
        "probe_percentiles": jnp.stack([layer_percentiles(p) for p in totals["probed"]]),
        "mean_activation": totals["activation_sum"].sum(0) / num_examples,
    }
    if probe.histogram_bins:
        result["activation_histogram"] = totals["histogram"].sum(0)
    return result


def make_evaluate(
    model: nn.Module, *, probe: ProbeSpec, batch_size: int
) -> Callable[..., dict[str, jax.Array]]:
    """A jitted ``evaluate(params, batch_stats, images, labels)`` over all members at once."""

    def one_member(params, batch_stats, images, labels):
        return evaluate(
            model,
            {"params": params, "batch_stats": batch_stats},
            images,
            labels,
            probe=probe,
            batch_size=batch_size,
        )

    return jax.jit(jax.vmap(one_member, in_axes=(0, 0, None, None)))


def _finalize_accumulators(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Maps the ``population_stats`` collection to the ``batch_stats`` layout."""
    result = {}
    for name, value in tree.items():
        if isinstance(value, PopulationStatsAccumulator):
            return dict(population_stats_finalize(value)._asdict())
        result[name] = _finalize_accumulators(value)
    return result


def population_batch_indices(
    key: jax.Array, num_examples: int, *, batch_size: int, num_batches: int
) -> jax.Array:
    """The training batches, ``(num_batches, batch_size)`` example indices, over which a member
    with ``key`` computes its inference statistics (:func:`population_statistics`,
    :func:`settled_ema_statistics`): those :func:`bnreg.data.batch_at_step` draws at steps
    ``0 … num_batches − 1`` from the member's ``POPULATION`` key stream. The same at every
    evaluation, so successive evaluations differ only through the parameters; a run computes
    them once."""
    return data_lib.batch_indices(
        jax.random.fold_in(key, _POPULATION), num_examples, num_batches, batch_size=batch_size
    )


def _frozen_training_passes(
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    key: jax.Array,
    images: jax.Array,
    batch_indices: jax.Array,
) -> dict[str, Any]:
    """Runs the network as in training (BN normalises with each batch's statistics, dropout on)
    with frozen ``params`` over the batches ``images[batch_indices[i]]`` in order, and returns the
    last ``batch_stats`` (the EMA, updated once per batch) and ``population_stats`` (Alg. 2's
    sums)."""
    population_key = jax.random.fold_in(key, _POPULATION)

    def one_batch(position, variables):
        _, updates = model.apply(
            {"params": params, **variables},
            jnp.take(images, batch_indices[position], axis=0),
            train=True,
            rngs={"dropout": jax.random.fold_in(population_key, position)},
            mutable=["batch_stats", "population_stats"],
        )
        return updates

    # The first pass creates the population_stats collection; the loop carries it.
    variables = one_batch(0, {"batch_stats": batch_stats})
    return jax.lax.fori_loop(1, batch_indices.shape[0], one_batch, variables)


def population_statistics(
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    key: jax.Array,
    images: jax.Array,
    batch_indices: jax.Array,
) -> dict[str, Any]:
    """BN's inference statistics of one member by Alg. 2 (Ioffe & Szegedy 2015).

    .. math::
        E[x] = E_B[\\mu_B], \\qquad \\mathrm{Var}[x] = \\frac{m}{m-1} E_B[\\sigma_B^2]

    over the training batches ``images[batch_indices[i]]`` (the engine's:
    :func:`population_batch_indices`), ``m`` being the examples per normalisation group:
    ``batch_indices.shape[1]`` for a dense layer, times the positions for a conv layer. The
    network runs as in training (BN normalises with each batch's statistics, dropout on) with
    frozen parameters; this is the distribution the EMA statistics track too. ``key`` seeds the
    dropout masks.

    Returns:
      A collection in the layout of ``batch_stats`` (``{"BatchNorm_i": {"mean", "var"}}``).
    """
    variables = _frozen_training_passes(model, params, batch_stats, key, images, batch_indices)
    return _finalize_accumulators(variables["population_stats"])


def ema_settling_batches(momentum: float, residual: float = 1e-3) -> int:
    """The number of EMA updates after which the statistics' starting value weighs at most
    ``residual``: the smallest ``n ≥ 1`` with ``momentum**n ≤ residual`` (688 for 0.99).

    Raises:
      ValueError: ``momentum`` outside [0, 1) — with 1 the EMA never moves, so never settles.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"An EMA settles only for a momentum in [0, 1), got {momentum}.")
    if momentum == 0.0:
        return 1
    return max(1, math.ceil(math.log(residual) / math.log(momentum)))


def settled_ema_statistics(
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    key: jax.Array,
    images: jax.Array,
    batch_indices: jax.Array,
) -> dict[str, Any]:
    """The EMA statistics after one more update per batch of ``batch_indices`` with the weights
    frozen: what the EMA tracked in training would become if the weights stopped moving.

    A diagnostic of the EMA's lag. During training the EMA averages statistics of *past*
    weights; Alg. 2 measures the final ones. When the two inference networks differ, this says
    whether the cause is that lag (the settled EMA then agrees with Alg. 2) or the estimators
    themselves (it does not). Give it :func:`ema_settling_batches` batches.
    """
    variables = _frozen_training_passes(model, params, batch_stats, key, images, batch_indices)
    return variables["batch_stats"]


def _over_members(statistics: Callable[..., dict[str, Any]], model: nn.Module):
    # Every argument but the images has a leading member axis.
    return jax.jit(jax.vmap(functools.partial(statistics, model), in_axes=(0, 0, 0, None, 0)))


def make_population_statistics(model: nn.Module) -> Callable[..., dict[str, Any]]:
    """:func:`population_statistics` over all members, jitted:
    ``f(params, batch_stats, keys, images, batch_indices)`` with a leading member axis on all
    but ``images``."""
    return _over_members(population_statistics, model)


def make_settled_ema_statistics(model: nn.Module) -> Callable[..., dict[str, Any]]:
    """:func:`settled_ema_statistics` over all members, jitted, as
    :func:`make_population_statistics`."""
    return _over_members(settled_ema_statistics, model)


def _to_json(value: Any) -> Any:
    array = np.asarray(value)
    return array.tolist() if array.ndim else array.item()


def _metrics_records(
    step: int,
    members: list[Member],
    evaluation: Mapping[str, jax.Array],
    split: str,
    train_losses: np.ndarray | None,
) -> list[dict]:
    evaluation = jax.device_get(dict(evaluation))  # one transfer, then host-side indexing
    records = []
    for index, member in enumerate(members):
        record = {
            "step": step,
            "member": index,
            "learning_rate": member.learning_rate,
            "seed": member.seed,
            "train_loss": None if train_losses is None else float(train_losses[:, index].mean()),
        }
        for name, values in evaluation.items():
            prefix = f"{split}_" if name in ("loss", "accuracy") else ""
            record[prefix + name] = _to_json(values[index])
        records.append(record)
    return records


def _non_finite_error(
    what: str, member: int, members: list[Member], checkpoint_note: Callable[[], str]
) -> NonFiniteLossError:
    m = members[member]
    return NonFiniteLossError(
        f"{what} for member {member} (learning rate {m.learning_rate}, seed {m.seed}). "
        f"{checkpoint_note()} Lower the learning rate, or add BN or max-norm."
    )


def _check_training_losses(
    losses: np.ndarray,
    first_step: int,
    members: list[Member],
    checkpoint_note: Callable[[], str],
) -> None:
    """Raises on the first non-finite loss of a chunk; ``losses[i]`` is step ``first_step + i``'s,
    taken before its update."""
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
        offset, member = bad[0]
        raise _non_finite_error(
            f"Non-finite training loss at step {first_step + offset}",
            member, members, checkpoint_note,
        )


def _check_evaluation(
    records: list[dict], split: str, members: list[Member], checkpoint_note: Callable[[], str]
) -> None:
    """Raises on a non-finite loss in an evaluation that follows finite training losses: the
    last update broke the weights, which must then be neither recorded nor checkpointed."""
    for member, record in enumerate(records):
        if not np.isfinite(record[f"{split}_loss"]):
            raise _non_finite_error(
                f"Non-finite {split} loss at the evaluation of step {record['step']}",
                member, members, checkpoint_note,
            )


def _read_history(path: Path, last_step: int) -> list[dict]:
    """The metrics records up to ``last_step``; later ones (written after the checkpoint that
    is being resumed from) and a line cut by a kill are dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record["step"] > last_step:
            break
        records.append(record)
    return records


def _write_jsonl(path: Path, records: list[dict], mode: str) -> None:
    with path.open(mode) as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()


def _check_config_file(workdir: Path, config: ml_collections.ConfigDict) -> None:
    path = workdir / CONFIG_FILE
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if path.exists() and (workdir / CHECKPOINT_DIR).exists():
        saved = json.loads(path.read_text())
        current = json.loads(text)
        # Settings that do not change results may differ between attempts (a run that turns
        # TensorBoard events off would leave them stale: see _tensorboard_events).
        for key in ("progress", "steps_per_call", "tensorboard"):
            saved.pop(key, None)
            current.pop(key, None)
        if saved != current:
            raise ValueError(
                f"{workdir} holds a run with a different configuration ({path}). Resume with "
                "the same configuration, or pass a new --workdir (or delete that one)."
            )
    path.write_text(text)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    devices: Sequence[jax.Device] | None = None,
    progress_position: int = 0,
) -> RunResult:
    """Trains every member of the run described by ``config`` and evaluates it.

    The run uses :func:`member_devices` of ``devices`` (default: all local devices), its members
    spread over them; ``progress_position`` is the line of its progress bar (for runs made at
    the same time, see :func:`train_and_evaluate_concurrently`).

    Writes into ``workdir``: ``config.json``; ``metrics.jsonl`` (one record per evaluation and
    member, every ``config.eval_every`` steps and at step 0); orbax checkpoints every
    ``config.checkpoint_every`` steps and at the end; ``summary.json`` (final accuracy per member
    with the EMA and, for BN nets, the settled EMA's and Alg. 2's statistics; see
    :func:`_final_summary`); with ``config.tensorboard``, the same metrics as TensorBoard
    events in ``tensorboard/`` (:mod:`bnreg.tensorboard_events`). Rerunning with the same
    ``workdir`` and config (``progress``, ``steps_per_call``, ``tensorboard`` may differ) resumes
    from the latest checkpoint; the result equals an uninterrupted run bit-for-bit.

    Reproducibility: the same config on the same devices gives bit-identical results. Another
    layout of the members (another number of members in the run, or of devices) changes how
    XLA batches their arithmetic, hence the rounding, and over tens of thousands of SGD steps
    the runs then differ like different seeds do (moving the BN study's main phase from 6
    members on 2 devices to 9 on one once moved a 3-seed final accuracy by 0.45 points, within
    the seeds' spread): equal in distribution, not in bits. Compare runs made with the same
    layout.

    Raises:
      ValueError: an invalid config, or a workdir that holds a run with another config.
      NonFiniteLossError: a NaN/inf training or evaluation loss; the last good checkpoint is
        kept, and metrics are recorded up to the last finite evaluation.
    """
    validate_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_config_file(workdir, config)

    run_data = load_run_data(config)
    model = build_model(config.model, run_data.num_classes)
    tx = build_optimizer(config.optimizer)
    members = members_from_config(config)
    events = _tensorboard_events(config, workdir, members)  # refuses stale events before training
    devices = member_devices(len(members), devices)
    train_images = _replicate(run_data.train.images, devices)
    train_labels = _replicate(run_data.train.labels, devices)
    split = run_data.evaluation_split

    state = shard_members(init_members(model, tx, members, train_images[:1]), devices)
    checkpoints = None
    if config.checkpoint_every:
        checkpoints = ocp.CheckpointManager(
            (workdir / CHECKPOINT_DIR).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
        )
        if checkpoints.latest_step() is not None:
            state = checkpoints.restore(
                checkpoints.latest_step(), args=ocp.args.StandardRestore(state)
            )

    metrics_path = workdir / METRICS_FILE
    step = int(state.step)
    history = _read_history(metrics_path, step) if step else []
    _write_jsonl(metrics_path, history, "w")

    train_chunk = make_train_chunk(model, tx, batch_size=config.batch_size)
    data_order = shard_members(empty_data_order(len(members), len(train_images)), devices)
    evaluate_with = _make_evaluate_with(
        config,
        model,
        data_lib.Split(train_images, train_labels),
        data_lib.Split(
            _replicate(run_data.evaluation.images, devices),
            _replicate(run_data.evaluation.labels, devices),
        ),
    )
    has_bn = bool(jax.tree.leaves(state.batch_stats))
    statistics = config.bn_eval_statistics if has_bn else "ema"

    steps_per_call = config.steps_per_call or config.eval_every

    def checkpoint_note() -> str:  # for an error message: where the run can resume from
        last_good = checkpoints.latest_step() if checkpoints else None
        if last_good is None:
            return "No checkpoint was written."
        return f"The last good checkpoint (step {last_good}) is kept in {workdir}."

    def evaluation_records(train_losses):
        evaluation = evaluate_with(state, statistics)
        return _metrics_records(step, members, evaluation, split, train_losses)

    def mean_accuracy(records):
        return float(np.mean([r[f"{split}_accuracy"] for r in records])) if records else None

    def log(records):
        history.extend(records)
        _write_jsonl(metrics_path, records, "a")
        if events:
            events.write(records)
        return mean_accuracy(records)

    def show(losses, accuracy):
        progress.set_postfix(loss=f"{losses[-1].mean():.4f}", **{f"{split}_acc": accuracy})

    progress = tqdm(
        total=config.num_steps, initial=step, unit="step", disable=not config.progress,
        desc=f"{config.dataset} × {len(members)} members", position=progress_position,
    )
    with progress, contextlib.closing(events) if events else contextlib.nullcontext():
        if events:
            events.write(history)  # a resumed run's records so far
        if step == 0:
            accuracy = log(evaluation_records(None))
        else:  # resumed: the last evaluation kept
            accuracy = mean_accuracy([r for r in history if r["step"] == step])
        while step < config.num_steps:
            next_evaluation = min(
                (step // config.eval_every + 1) * config.eval_every, config.num_steps
            )
            interval_losses = []  # per compiled call, the interval's training losses
            while step < next_evaluation:
                num_steps = min(steps_per_call, next_evaluation - step)
                state, data_order, losses = train_chunk(
                    state, data_order, train_images, train_labels, num_steps
                )
                losses = np.asarray(losses)
                _check_training_losses(losses, step, members, checkpoint_note)
                interval_losses.append(losses)
                step = int(state.step)
                progress.update(num_steps)
                show(losses, accuracy)
            records = evaluation_records(np.concatenate(interval_losses))
            _check_evaluation(records, split, members, checkpoint_note)
            accuracy = log(records)
            if checkpoints and (step % config.checkpoint_every == 0 or step == config.num_steps):
                checkpoints.save(step, args=ocp.args.StandardSave(state))
                if events:
                    events.flush()
            show(losses, accuracy)
        if checkpoints:
            checkpoints.wait_until_finished()
            checkpoints.close()

        summary = _final_summary(config, state, members, run_data, evaluate_with, has_bn)
        (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        if events:
            events.write_summary(summary)
    return RunResult(history=history, summary=summary, state=state, members=members)


def _tensorboard_events(
    config: ml_collections.ConfigDict, workdir: Path, members: list[Member]
) -> TensorBoardEvents | None:
    directory = workdir / TENSORBOARD_DIR
    if config.tensorboard:
        return TensorBoardEvents(directory, members, config.probe)
    if directory.exists():
        raise ValueError(
            f"{directory} holds TensorBoard events of an earlier attempt, which this run (with "
            "config.tensorboard off) would leave stale. Rerun with --config.tensorboard=True "
            "(the events are rewritten from the metrics), or delete that directory."
        )
    return None


def train_and_evaluate_concurrently(
    runs: Sequence[tuple[ml_collections.ConfigDict, str | Path]],
) -> list[RunResult]:
    """:func:`train_and_evaluate` of every ``(config, workdir)`` in ``runs``, at the same time
    when there are several local devices: each run on its own share of them (run ``i`` on
    devices ``i, i + len(runs), …``; runs share devices when there are fewer devices than runs),
    from its own thread. With one device the runs are made one after another.

    Each run's results equal those of the same run made alone on the same devices. On a CPU with
    one XLA device per core, the BN study's two nets trained this way took 52–58 s where one after
    another they took 73 s (benchmarks/README.md).

    The threads are daemons: an interrupt (Ctrl-C) ends the process at once, as a kill would,
    and rerunning resumes each run from its last checkpoint.

    Raises:
      The error of the first failed run (in the order of ``runs``), after every run has ended.
    """
    devices = jax.local_devices()
    if len(runs) < 2 or len(devices) < 2:
        return [train_and_evaluate(config, workdir) for config, workdir in runs]
    outcomes: list[tuple[RunResult | None, BaseException | None]] = [(None, None)] * len(runs)

    def run(index: int, config: ml_collections.ConfigDict, workdir: str | Path) -> None:
        share = devices[index :: len(runs)] or [devices[index % len(devices)]]
        try:
            result = train_and_evaluate(
                config, workdir, devices=share, progress_position=index
            )
            outcomes[index] = (result, None)
        except BaseException as error:  # handed to the calling thread below
            outcomes[index] = (None, error)

    threads = [
        threading.Thread(target=run, args=(index, config, workdir), daemon=True)
        for index, (config, workdir) in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _, error in outcomes:
        if error is not None:
            raise error
    return [result for result, _ in outcomes]


def make_inference_statistics(
    config: ml_collections.ConfigDict, model: nn.Module, train_images: jax.Array
) -> Callable[[TrainState, str], Any]:
    """``statistics(state, kind)``: the BN statistics (``batch_stats`` layout, all members) with
    which to evaluate ``state``: ``"ema"``, its own; ``"population"``, Alg. 2's, computed now
    from ``config.population_batches`` batches of ``train_images``; or ``"settled_ema"``
    (:func:`settled_ema_statistics`). The batches depend only on the members' keys, so they are
    drawn once, at the first call, and later calls must come from the same run."""
    recomputed = {
        "population": make_population_statistics(model),
        "settled_ema": make_settled_ema_statistics(model),
    }
    # The training batches each kind runs; an EMA with momentum 1 never settles (no summary).
    num_batches = {"population": config.population_batches}
    if config.model.bn_momentum < 1.0:
        num_batches["settled_ema"] = ema_settling_batches(config.model.bn_momentum)
    # Both kinds run the first batches of one stream that depends only on the members' keys,
    # fixed for the run: drawn once, as many as the longer kind needs, and sliced per kind.
    drawn: list[jax.Array] = []

    def statistics(state: TrainState, kind: str) -> Any:
        if kind not in recomputed:
            return state.batch_stats
        if not drawn:
            draw = functools.partial(
                population_batch_indices,
                num_examples=train_images.shape[0],
                batch_size=config.batch_size,
                num_batches=max(num_batches.values()),
            )
            drawn.append(jax.jit(jax.vmap(draw))(state.key))
        return recomputed[kind](
            state.params,
            state.batch_stats,
            state.key,
            train_images,
            drawn[0][:, : num_batches[kind]],
        )

    return statistics


def _make_evaluate_with(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    train: data_lib.Split,
    evaluation: data_lib.Split,
) -> Callable[[TrainState, str], dict[str, jax.Array]]:
    """``evaluate_with(state, statistics)``: all members on the ``evaluation`` split (device
    arrays), BN using the :func:`make_inference_statistics` of that kind."""
    evaluate_members = make_evaluate(
        model, probe=ProbeSpec.from_config(config.probe), batch_size=config.eval_batch_size
    )
    inference_statistics = make_inference_statistics(config, model, train.images)

    def evaluate_with(state: TrainState, statistics: str) -> dict[str, jax.Array]:
        batch_stats = inference_statistics(state, statistics)
        return evaluate_members(state.params, batch_stats, evaluation.images, evaluation.labels)

    return evaluate_with


def _final_summary(
    config: ml_collections.ConfigDict,
    state: TrainState,
    members: list[Member],
    run_data: RunData,
    evaluate_with: Callable[[TrainState, str], dict[str, jax.Array]],
    has_bn: bool,
) -> dict:
    """Final accuracy per member with the EMA statistics and, for BN nets, with the EMA settled
    on the final weights (:func:`settled_ema_statistics`; not for a momentum of 1, which never
    settles) and with Alg. 2's (unless ``config.population_batches`` is 0)."""
    split = run_data.evaluation_split
    accuracies = {"ema": evaluate_with(state, "ema")["accuracy"]}
    if has_bn and config.model.bn_momentum < 1.0:
        accuracies["settled_ema"] = evaluate_with(state, "settled_ema")["accuracy"]
    if has_bn and config.population_batches:
        accuracies["population"] = evaluate_with(state, "population")["accuracy"]
    return {
        "dataset": config.dataset,
        "source": run_data.source,
        "evaluation_split": split,
        "input_shape": list(run_data.train.images.shape[1:]),
        "num_train_examples": len(run_data.train.labels),
        f"num_{split}_examples": len(run_data.evaluation.labels),
        "num_steps": int(state.step),
        "bn_eval_statistics": config.bn_eval_statistics if has_bn else None,
        "members": [
            {
                "learning_rate": m.learning_rate,
                "seed": m.seed,
                **{
                    f"{split}_accuracy_{name}": float(values[i])
                    for name, values in accuracies.items()
                },
            }
            for i, m in enumerate(members)
        ],
    }
