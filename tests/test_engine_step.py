"""The engine's program: the optimizer, one step, scan-fused chunks, sweeps as one program, and
each member's batches."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import drawn_indices

from bnreg import engine
from bnreg.config import default_config
from bnreg.data import batch_at_step
from bnreg.engine.step import stack_member, unstack_member
from bnreg.models import build_model


def model_config(**overrides) -> ml_collections.ConfigDict:
    """A small MLP with BN and dropout slots; ``overrides`` are dotted keys."""
    config = default_config()
    config.model.hidden_sizes = (8, 8)
    config.model.norm = "batch"
    config.model.kernel_init = "lecun_normal"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.1
    for name, value in overrides.items():
        *sections, key = name.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[key] = value
    return config


def program(config, features: int = 12, num_classes: int = 4):
    """``(network, members)`` of ``config`` for inputs of ``features`` values."""
    members = engine.members_from_config(config)
    network = engine.Network(
        build_model(config.model, (features,), num_classes),
        engine.build_task(config.task),
        engine.build_optimizer(config.optimizer, members),
    )
    return network, members


def random_batch(seed=0, n=32, features=12, classes=4):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, features)).astype(np.float32)
    labels = rng.integers(0, classes, size=n).astype(np.int32)
    return jnp.asarray(images), jnp.asarray(labels)


def run_chunks(config, images, labels, steps, *, batch_size=8):
    """Trains ``config``'s members from init for each of ``steps`` in turn; the final state,
    the losses and the jitted chunk."""
    network, members = program(config, images.shape[1])
    sampler = engine.Sampler(len(images), batch_size)
    chunk = engine.make_train_chunk(network, sampler)
    state = engine.init_members(network, members, images[:1])
    order, losses = sampler.empty_order(len(members)), []
    for num_steps in steps:
        state, order, chunk_losses = chunk(state, order, images, labels, None, num_steps)
        losses.append(chunk_losses)
    return state, np.concatenate(losses), chunk


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def optimizer_updates(optimizer, num_updates=4):
    """The updates of ``optimizer`` over ``num_updates`` steps of fixed gradients, applied."""
    params = {"Dense_0": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)}}
    grads = jax.tree.map(lambda x: jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) - 1, params)
    state = optimizer.init(params)
    history = []
    for _ in range(num_updates):
        updates, state = optimizer.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        history.append(updates)
    return history


def linear_momentum(count):
    return 0.5 + (0.9 - 0.5) * jnp.minimum(count / 2, 1.0)


@pytest.mark.parametrize(
    "overrides, reference",
    [
        ({}, lambda: optax.sgd(0.5)),
        ({"momentum": 0.9}, lambda: optax.sgd(0.5, momentum=0.9)),
        ({"momentum": 0.9, "nesterov": True}, lambda: optax.sgd(0.5, 0.9, nesterov=True)),
        ({"name": "adam"}, lambda: optax.adam(0.5)),
        ({"schedule": "exponential", "decay_rate": 0.5, "decay_steps": 2},
         lambda: optax.sgd(lambda count: 0.5 * 0.5 ** (count / 2))),
        ({"schedule": "step", "step_boundaries": (1, 3), "step_factor": 0.1},
         lambda: optax.sgd(lambda count: 0.5 * 0.1 ** jnp.sum(count >= jnp.array([1, 3])))),
        # The dropout paper's recipe: lr0 / (1 + t/T).
        ({"schedule": "inverse_time", "decay_steps": 2},
         lambda: optax.sgd(lambda count: 0.5 / (1 + count / 2))),
        ({"momentum": 0.9, "momentum_schedule": "linear", "initial_momentum": 0.5,
          "momentum_steps": 2},
         lambda: optax.chain(optax.inject_hyperparams(optax.trace)(decay=linear_momentum),
                             optax.scale_by_learning_rate(0.5))),
        ({"momentum": 0.9, "momentum_schedule": "exponential", "initial_momentum": 0.5,
          "momentum_steps": 2},
         lambda: optax.chain(optax.inject_hyperparams(optax.trace)(
             decay=lambda count: 0.9 - (0.9 - 0.5) * jnp.exp(-count / 2)),
             optax.scale_by_learning_rate(0.5))),
        # App. A.1's SGD: Δw_t = m_t Δw_{t-1} − (1 − m_t) ε g, constant and scheduled momentum.
        ({"momentum": 0.9, "dampening": True},
         lambda: optax.chain(optax.scale(1 - 0.9), optax.trace(decay=0.9),
                             optax.scale_by_learning_rate(0.5))),
        ({"momentum": 0.9, "dampening": True, "momentum_schedule": "linear",
          "initial_momentum": 0.5, "momentum_steps": 2},
         lambda: optax.chain(optax.scale_by_schedule(lambda count: 1 - linear_momentum(count)),
                             optax.inject_hyperparams(optax.trace)(decay=linear_momentum),
                             optax.scale_by_learning_rate(0.5))),
        # λ·w is added to the kernel's gradient only, not to the bias's.
        ({"weight_decay": 0.01},
         lambda: optax.chain(optax.masked(optax.add_decayed_weights(0.01), {
             "Dense_0": {"kernel": True, "bias": False}}), optax.sgd(0.5))),
    ],
)
def test_the_configured_optimizer_equals_its_optax_definition(overrides, reference):
    config = default_config()
    config.optimizer.learning_rate = 0.5
    for name, value in overrides.items():
        config.optimizer[name] = value
    members = engine.members_from_config(config)
    optimizer = engine.build_optimizer(config.optimizer, members)(members.traced())
    for step, (a, b) in enumerate(zip(optimizer_updates(optimizer),
                                      optimizer_updates(reference()), strict=True)):
        jax.tree.map(lambda x, y, s=step: np.testing.assert_allclose(x, y, rtol=1e-6,
                                                                    err_msg=str(s)), a, b)


def test_a_dampened_momentum_steps_at_the_learning_rate_in_the_steady_state():
    config = default_config()
    config.optimizer.update(learning_rate=0.5, momentum=0.9, dampening=True)
    members = engine.members_from_config(config)
    optimizer = engine.build_optimizer(config.optimizer, members)(members.traced())
    last = optimizer_updates(optimizer, num_updates=200)[-1]
    grads = jnp.arange(6.0).reshape(3, 2) - 1  # optimizer_updates' fixed kernel gradient
    np.testing.assert_allclose(last["Dense_0"]["kernel"], -0.5 * grads, rtol=1e-6, atol=1e-6)


def test_jit_and_no_jit_train_step_agree():
    network, members = program(model_config(**{"model.hidden_dropout": 0.2}))
    images, labels = random_batch()
    state = unstack_member(engine.init_members(network, members, images[:1]))
    step = functools.partial(engine.train_step, network)
    eager_state, eager_loss = step(state, images, labels)
    jit_state, jit_loss = jax.jit(step)(state, images, labels)
    np.testing.assert_allclose(eager_loss, jit_loss, rtol=1e-6)
    assert_trees_close(eager_state, jit_state)


def test_scan_chunk_equals_single_steps_on_the_same_batches():
    config = model_config(**{"model.hidden_dropout": 0.2, "seed": 3})
    images, labels = random_batch(n=40)
    # 7 steps of 8 cross an epoch boundary (5 steps per epoch).
    chunk_state, chunk_losses, _ = run_chunks(config, images, labels, [7])
    network, members = program(config)
    single = unstack_member(engine.init_members(network, members, images[:1]))
    data_key = engine.stream_key(single.key, engine.Stream.DATA)
    step = jax.jit(functools.partial(engine.train_step, network))
    losses = []
    for t in range(7):
        batch = batch_at_step(data_key, images, labels, t, batch_size=8)
        single, loss = step(single, *batch)
        losses.append(loss)
    np.testing.assert_allclose(chunk_losses[:, 0], np.asarray(losses), rtol=1e-5)
    assert_trees_close(unstack_member(chunk_state).params, single.params)
    assert int(chunk_state.step) == 7


@pytest.mark.parametrize("carry_data_order", [True, False])
def test_splitting_a_chunk_changes_nothing_whether_or_not_the_data_order_is_carried(
    carry_data_order,
):
    config = model_config(**{"sweep.learning_rate": (0.1, 0.2), "sweep.seed": (0, 1)})
    images, labels = random_batch(n=40)
    whole, whole_losses, _ = run_chunks(config, images, labels, [12])
    network, members = program(config)
    sampler = engine.Sampler(40, 8)
    chunk = engine.make_train_chunk(network, sampler)
    state = engine.init_members(network, members, images[:1])
    state, order, first = chunk(state, sampler.empty_order(4), images, labels, None, 7)
    if not carry_data_order:
        order = sampler.empty_order(4)
    state, _, second = chunk(state, order, images, labels, None, 5)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole_losses)
    assert_trees_equal(state.params, whole.params)


@pytest.mark.parametrize("members", [{}, {"sweep.seed": (0, 1)}])
def test_unrolled_steps_train_as_the_scanned_loop_does(members):
    # Straight-line code is compiled apart from the loop, so it may round differently.
    config = model_config(**members)
    images, labels = random_batch(n=40)
    network, population = program(config)
    sampler = engine.Sampler(40, 8)
    results = []
    for unroll in (False, True):
        chunk = engine.make_train_chunk(network, sampler, unroll=unroll)
        state = engine.init_members(network, population, images[:1])
        state, _, losses = chunk(state, sampler.empty_order(len(population)), images, labels,
                                 None, 6)
        results.append((np.asarray(losses), jax.device_get(state.params)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[0][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def member_alone(config, member: dict) -> ml_collections.ConfigDict:
    """``config`` without its sweep, every axis at ``member``'s value."""
    alone = ml_collections.ConfigDict(config.to_dict())
    alone.sweep = ml_collections.ConfigDict()
    for axis, path in engine.members.AXES.items():
        section, _, key = path.rpartition(".")
        (alone[section] if section else alone)[key] = member[axis]
    return alone


SWEEPS = [
    ("hidden_dropout", (0.0, 0.2, 0.5)),
    ("input_dropout", (0.0, 0.2)),
    ("dropconnect", (0.0, 0.5)),
    ("max_norm", (0.0, 0.5)),
    ("weight_decay", (0.0, 0.05)),
    ("final_momentum", (0.0, 0.9)),
    ("bn_momentum", (0.5, 0.99)),
    ("learning_rate", (0.05, 0.3)),
]


@pytest.mark.parametrize("axis, values", SWEEPS, ids=[axis for axis, _ in SWEEPS])
def test_a_sweep_as_one_program_equals_its_members_run_one_by_one_and_compiles_once(
    axis, values
):
    # Two seeds for one axis (the cross with seeds); one for the others, to keep the suite short.
    seeds = (0, 1) if axis == "hidden_dropout" else (0,)
    config = model_config(**{f"sweep.{axis}": values, "sweep.seed": seeds})
    if axis == "dropconnect":
        config.model.norm = None
    images, labels = random_batch(n=40)
    together, together_losses, chunk = run_chunks(config, images, labels, [6, 6, 6])
    assert chunk._cache_size() == 1  # the grid, over three calls, is one compiled program
    for index, member in enumerate(engine.members_from_config(config)):
        alone, alone_losses, _ = run_chunks(member_alone(config, member), images, labels, [18])
        np.testing.assert_allclose(together_losses[:, index], alone_losses[:, 0], rtol=2e-5)
        assert_trees_close(jax.tree.map(lambda x, i=index: x[i], together.params),
                           unstack_member(alone).params, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("axis, value", [("hidden_dropout", 0.5), ("max_norm", 0.5)])
def test_members_that_differ_only_in_a_rate_share_their_init_and_data_order(axis, value):
    config = model_config(**{f"sweep.{axis}": (0.0, value), "sweep.seed": (0, 1)})
    images, labels = random_batch(n=40)
    network, members = program(config)
    sampler = engine.Sampler(40, 8)
    state = engine.init_members(network, members, images[:1])
    order, _, _ = sampler.batches(sampler.empty_order(4), jnp.asarray(0), jax.vmap(
        lambda key: engine.stream_key(key, engine.Stream.DATA))(state.key), images, labels, None)
    for first, second in ((0, 2), (1, 3)):  # the same seed, the other rate
        assert_trees_equal(jax.tree.map(lambda x, i=first: x[i], state.params),
                           jax.tree.map(lambda x, i=second: x[i], state.params))
        np.testing.assert_array_equal(order.permutations[first], order.permutations[second])
    assert not np.array_equal(order.permutations[0], order.permutations[1])


def test_a_subset_member_draws_only_from_its_own_stratified_subset():
    num, batch_size = 120, 10
    labels = np.repeat(np.arange(4), num // 4).astype(np.int32)
    config = model_config(**{"sweep.train_subset": (40, 80), "sweep.seed": (0, 1)})
    members = engine.members_from_config(config)
    drawn, subsets = drawn_indices(members, labels, batch_size, 16)
    for index, subset in enumerate(subsets):
        size = len(subset)
        assert size == members.member(index)["train_subset"]
        np.testing.assert_array_equal(np.bincount(np.asarray(labels)[subset]), [size // 4] * 4)
        epoch = size // batch_size
        for start in range(0, 16 - epoch + 1, epoch):  # every epoch: the subset, once each
            seen = np.sort(np.asarray(drawn[start:start + epoch, index]).reshape(-1))
            np.testing.assert_array_equal(seen, np.sort(subset))
    assert not np.array_equal(subsets[0], subsets[1])  # each seed its own subset


def test_a_single_member_runs_without_vmap_and_keeps_its_member_axis():
    network, members = program(model_config())
    state = engine.init_members(network, members, jnp.zeros((1, 12)))
    assert_trees_equal(stack_member(unstack_member(state)), state)
    assert jax.tree.leaves(state.params)[0].shape[0] == 1
