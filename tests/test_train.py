"""The training engine: steps, scan-fused chunks, members, Alg. 2, probes, resume, errors."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bnreg import train
from bnreg.batch_norm import BatchNormParams, BatchNormState, batch_norm
from bnreg.config import default_config
from bnreg.data import batch_at_step
from bnreg.models import MLP, OUTPUT_LAYER, ConvNet
from bnreg.tensorboard_events import TENSORBOARD_DIR

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """A run on scikit-learn's digits that takes a few seconds."""
    config = default_config()
    config.dataset = "digits"
    config.model.hidden_sizes = (16, 16)
    config.model.norm = "batch"
    config.model.kernel_init = "lecun_normal"
    config.optimizer.learning_rate = 0.5
    config.batch_size = 32
    config.num_steps = 60
    config.eval_every = 20
    config.eval_batch_size = 128
    config.checkpoint_every = 0
    config.seeds = (0,)
    config.population_batches = 5
    config.progress = False
    for name, value in overrides.items():
        target = config
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def random_batch(seed=0, n=32, features=12, classes=4):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, features)).astype(np.float32)
    labels = rng.integers(0, classes, size=n).astype(np.int32)
    return jnp.asarray(images), jnp.asarray(labels)


def single_state(model, tx, seed=0, learning_rate=0.1, features=12):
    members = [train.Member(learning_rate, seed)]
    return train._unstack_member(train.init_members(model, tx, members, jnp.zeros((1, features))))


@pytest.fixture(scope="module")
def model_and_tx():
    model = MLP(hidden_sizes=(8, 8), num_classes=4, norm="batch", hidden_dropout=0.2)
    config = default_config()
    config.optimizer.momentum = 0.9
    return model, train.build_optimizer(config.optimizer)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
    config = default_config().optimizer
    config.learning_rate = 0.5
    for name, value in overrides.items():
        config[name] = value
    return config


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


@pytest.mark.parametrize(
    "overrides, reference",
    [
        ({}, lambda: optax.sgd(0.5)),
        ({"momentum": 0.9}, lambda: optax.sgd(0.5, momentum=0.9)),
        ({"momentum": 0.9, "nesterov": True}, lambda: optax.sgd(0.5, 0.9, nesterov=True)),
        ({"name": "adam"}, lambda: optax.adam(0.5)),
        (
            {"schedule": "exponential", "decay_rate": 0.5, "decay_steps": 2},
            lambda: optax.sgd(lambda count: 0.5 * 0.5 ** (count / 2)),
        ),
        (
            {"schedule": "step", "step_boundaries": (1, 3), "step_factor": 0.1},
            lambda: optax.sgd(lambda count: 0.5 * 0.1 ** jnp.sum(count >= jnp.array([1, 3]))),
        ),
        (
            {"weight_decay": 0.01},
            # λ·w is added to the kernel's gradient only, not to the bias's.
            lambda: optax.chain(
                optax.masked(optax.add_decayed_weights(0.01), {
                    "Dense_0": {"kernel": True, "bias": False}
                }),
                optax.sgd(0.5),
            ),
        ),
    ],
)
def test_the_configured_optimizer_equals_its_optax_definition(overrides, reference):
    built = optimizer_updates(train.build_optimizer(optimizer_config(**overrides)))
    expected = optimizer_updates(reference())
    for step, (a, b) in enumerate(zip(built, expected, strict=True)):
        jax.tree.map(
            lambda x, y, step=step: np.testing.assert_allclose(x, y, rtol=1e-6, err_msg=str(step)),
            a, b,
        )


def test_jit_and_no_jit_train_step_agree(model_and_tx):
    model, tx = model_and_tx
    state = single_state(model, tx)
    images, labels = random_batch()
    step = functools.partial(train.train_step, model, tx)
    eager_state, eager_loss = step(state, images, labels)
    jit_state, jit_loss = jax.jit(step)(state, images, labels)
    np.testing.assert_allclose(eager_loss, jit_loss, rtol=1e-6)
    assert_trees_close(eager_state, jit_state)


def test_scan_chunk_equals_single_steps_on_the_same_batches(model_and_tx):
    model, tx = model_and_tx
    images, labels = random_batch(n=40)
    batch_size, num_steps = 8, 7  # crosses an epoch boundary (5 steps per epoch)
    members = [train.Member(0.1, 3)]
    state = train.init_members(model, tx, members, images[:1])
    chunk = train.make_train_chunk(model, tx, batch_size=batch_size)
    chunk_state, _, chunk_losses = chunk(
        state, train.empty_data_order(1, len(images)), images, labels, num_steps
    )

    single = single_state(model, tx, seed=3)
    data_key = jax.random.fold_in(single.key, train._DATA)
    step = jax.jit(functools.partial(train.train_step, model, tx))
    losses = []
    for t in range(num_steps):
        batch_images, batch_labels = batch_at_step(
            data_key, images, labels, t, batch_size=batch_size
        )
        single, loss = step(single, batch_images, batch_labels)
        losses.append(loss)
    np.testing.assert_allclose(chunk_losses[:, 0], np.asarray(losses), rtol=1e-5)
    assert_trees_close(jax.tree.map(lambda x: x[0], chunk_state.params), single.params)
    assert int(chunk_state.step) == num_steps


@pytest.mark.parametrize("carry_data_order", [True, False])
def test_splitting_a_chunk_changes_nothing_whether_or_not_the_data_order_is_carried(
    model_and_tx, carry_data_order
):
    model, tx = model_and_tx
    images, labels = random_batch(n=40)
    members = [train.Member(0.1, 0), train.Member(0.2, 1)]
    chunk = train.make_train_chunk(model, tx, batch_size=8)  # 5 steps per epoch
    whole, _, whole_losses = chunk(
        train.init_members(model, tx, members, images[:1]),
        train.empty_data_order(2, 40), images, labels, 12,
    )
    state, data_order, first = chunk(
        train.init_members(model, tx, members, images[:1]),
        train.empty_data_order(2, 40), images, labels, 7,
    )
    if not carry_data_order:
        data_order = train.empty_data_order(2, 40)
    state, _, second = chunk(state, data_order, images, labels, 5)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole_losses)
    assert_trees_equal(state.params, whole.params)


def test_vmapped_members_equal_separate_runs(model_and_tx):
    model, tx = model_and_tx
    images, labels = random_batch(n=48)
    chunk = train.make_train_chunk(model, tx, batch_size=16)
    members = [train.Member(0.1, 0), train.Member(0.3, 1), train.Member(0.05, 2)]
    together, _, together_losses = chunk(
        train.init_members(model, tx, members, images[:1]),
        train.empty_data_order(3, len(images)), images, labels, 10,
    )
    for index, member in enumerate(members):
        alone, _, alone_losses = chunk(
            train.init_members(model, tx, [member], images[:1]),
            train.empty_data_order(1, len(images)), images, labels, 10,
        )
        np.testing.assert_allclose(together_losses[:, index], alone_losses[:, 0], rtol=1e-5)
        assert_trees_close(jax.tree.map(lambda x, i=index: x[i], together.params),
                           jax.tree.map(lambda x: x[0], alone.params))


def test_bn_layer_in_a_model_equals_the_functional_core():
    model = MLP(hidden_sizes=(6,), num_classes=3, norm="batch", bn_momentum=0.9)
    images, _ = random_batch(n=10, features=5)
    variables = model.init(jax.random.key(0), images, train=False)
    _, state = model.apply(variables, images, train=True, mutable=["batch_stats", "intermediates"])
    pre_bn = images @ variables["params"]["Dense_0"]["kernel"]
    bn_params = variables["params"]["BatchNorm_0"]
    expected, expected_state = batch_norm(
        pre_bn,
        BatchNormParams(bn_params["scale"], bn_params["bias"]),
        BatchNormState(jnp.zeros(6), jnp.ones(6)),
        train=True,
        momentum=0.9,
    )
    np.testing.assert_allclose(
        state["intermediates"]["preactivation_0"][0], expected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], expected_state.mean)
    np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["var"], expected_state.var)


def test_batch_stats_change_in_training_and_not_in_evaluation(model_and_tx):
    model, tx = model_and_tx
    state = single_state(model, tx)
    images, labels = random_batch()
    trained, _ = train.train_step(model, tx, state, images, labels)
    assert not np.allclose(
        trained.batch_stats["BatchNorm_0"]["mean"], state.batch_stats["BatchNorm_0"]["mean"]
    )
    _, updates = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        images, train=False, mutable=["batch_stats"],
    )
    assert_trees_equal(updates["batch_stats"], state.batch_stats)


def second_bn_inputs(model, variables, key, images, labels, *, batch_size, num_batches):
    """NumPy: the inputs of ``BatchNorm_1`` (the second dense layer applied to the first block's
    output) on each training batch that the population stream of ``key`` draws."""
    population_key = jax.random.fold_in(key, train._POPULATION)
    inputs = []
    for step in range(num_batches):
        batch, _ = batch_at_step(population_key, images, labels, step, batch_size=batch_size)
        _, state = model.apply(
            variables, batch, train=True, mutable=["batch_stats", "intermediates"]
        )
        inputs.append(
            np.asarray(state["intermediates"]["activation_0"][0])
            @ np.asarray(variables["params"]["Dense_1"]["kernel"])
        )
    return inputs


def test_population_statistics_equal_numpy_alg2_over_the_same_batches():
    model = MLP(hidden_sizes=(5, 4), num_classes=3, norm="batch")
    images, labels = random_batch(n=24, features=7)
    variables = model.init(jax.random.key(1), images, train=False)
    key = jax.random.key_data(jax.random.key(2))
    m, num_batches = 6, 7
    batches = train.population_batch_indices(
        key, len(images), batch_size=m, num_batches=num_batches
    )
    population = train.population_statistics(
        model, variables["params"], variables["batch_stats"], key, images, batches
    )
    inputs = second_bn_inputs(
        model, variables, key, images, labels, batch_size=m, num_batches=num_batches
    )
    np.testing.assert_allclose(
        population["BatchNorm_1"]["mean"], np.mean([h.mean(0) for h in inputs], 0),
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_allclose(
        population["BatchNorm_1"]["var"], m / (m - 1) * np.mean([h.var(0) for h in inputs], 0),
        rtol=1e-4,
    )


def test_settled_ema_equals_numpy_ema_over_the_same_batches():
    momentum = 0.8
    model = MLP(hidden_sizes=(5, 4), num_classes=3, norm="batch", bn_momentum=momentum)
    images, labels = random_batch(n=24, features=7)
    variables = model.init(jax.random.key(1), images, train=False)
    start = jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])
    key = jax.random.key_data(jax.random.key(2))
    m, num_batches = 6, 9
    batches = train.population_batch_indices(
        key, len(images), batch_size=m, num_batches=num_batches
    )
    settled = train.settled_ema_statistics(
        model, variables["params"], start, key, images, batches
    )
    mean = np.asarray(start["BatchNorm_1"]["mean"])
    var = np.asarray(start["BatchNorm_1"]["var"])
    for h in second_bn_inputs(
        model, variables, key, images, labels, batch_size=m, num_batches=num_batches
    ):
        mean = momentum * mean + (1 - momentum) * h.mean(0)
        var = momentum * var + (1 - momentum) * m / (m - 1) * h.var(0)
    np.testing.assert_allclose(settled["BatchNorm_1"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(settled["BatchNorm_1"]["var"], var, rtol=1e-4)


@pytest.mark.parametrize("momentum, expected", [(0.99, 688), (0.9, 66), (0.5, 10), (0.0, 1)])
def test_ema_settling_batches_is_the_first_count_below_the_residual(momentum, expected):
    batches = train.ema_settling_batches(momentum)
    assert batches == expected
    assert momentum**batches <= 1e-3 < momentum ** (batches - 1)


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1])
def test_ema_settling_batches_rejects_an_ema_that_cannot_settle(momentum):
    with pytest.raises(ValueError, match="momentum"):
        train.ema_settling_batches(momentum)


def test_a_bn_net_whose_ema_never_moves_reports_no_settled_ema(tmp_path):
    result = train.train_and_evaluate(tiny_config(**{"model.bn_momentum": 1.0}), tmp_path)
    member = result.summary["members"][0]
    assert "test_accuracy_settled_ema" not in member
    assert "test_accuracy_population" in member


@pytest.mark.parametrize(
    "model, images, layers",
    [
        (MLP(hidden_sizes=(6, 5), num_classes=3, norm=None), random_batch(n=50, features=7)[0],
         (-1, 0)),
        # A conv layer's unit is a feature map, sampled at each of its 4×4 positions.
        (ConvNet(conv_features=(6,), hidden_sizes=(5,), num_classes=3),
         jax.random.normal(jax.random.key(1), (50, 4, 4, 2)), (0, 1)),
    ],
    ids=["mlp", "convnet"],
)
def test_probe_percentiles_equal_jnp_percentile_of_recorded_preactivations(model, images, layers):
    labels = jnp.zeros(len(images), jnp.int32)
    variables = model.init(jax.random.key(0), images, train=False)
    probe = train.ProbeSpec(
        layers=layers, units=(0, 3), percentiles=(15.0, 50.0, 85.0),
        histogram_bins=10, histogram_range=(0.0, 1.0),
    )
    result = train.evaluate(model, variables, images, labels, probe=probe, batch_size=16)
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    recorded = [state["intermediates"][f"preactivation_{i}"][0] for i in range(2)]
    expected = [
        jnp.percentile(
            recorded[layer].reshape(-1, recorded[layer].shape[-1])[:, jnp.asarray([0, 3])],
            jnp.asarray([15.0, 50.0, 85.0]),
            axis=0,
        ).T
        for layer in layers
    ]
    np.testing.assert_allclose(result["probe_percentiles"], expected, rtol=1e-5, atol=1e-6)
    # Padding of the last evaluation batch is not counted anywhere.
    sizes = [r[0].size for r in recorded]  # values per example in each hidden layer
    np.testing.assert_array_equal(result["activation_histogram"].sum(1), [50 * n for n in sizes])


@pytest.mark.parametrize(
    "layers, message",
    [((2,), r"must index the model's 2 hidden layers"), ((1, -1), r"names a hidden layer twice")],
)
def test_probed_layers_the_model_does_not_have_or_named_twice_are_an_error(layers, message):
    model = MLP(hidden_sizes=(6, 5), num_classes=3, norm=None)
    images, labels = random_batch(n=20, features=7)
    variables = model.init(jax.random.key(0), images, train=False)
    probe = train.ProbeSpec(
        layers=layers, units=(0,), percentiles=(50.0,), histogram_bins=0, histogram_range=(0, 1)
    )
    with pytest.raises(ValueError, match=message):
        train.evaluate(model, variables, images, labels, probe=probe, batch_size=16)


def test_zero_histogram_bins_leave_out_the_histograms_and_nothing_else():
    model = MLP(hidden_sizes=(6, 5), num_classes=3, norm=None)
    images, labels = random_batch(n=50, features=7)
    variables = model.init(jax.random.key(0), images, train=False)
    probe = train.ProbeSpec(
        layers=(-1,), units=(0, 3), percentiles=(50.0,), histogram_bins=10,
        histogram_range=(0.0, 1.0),
    )
    with_histograms, without = (
        train.evaluate(model, variables, images, labels, probe=spec, batch_size=16)
        for spec in (probe, probe._replace(histogram_bins=0))
    )
    assert set(with_histograms) - set(without) == {"activation_histogram"}
    for name, value in without.items():
        np.testing.assert_array_equal(value, with_histograms[name], err_msg=name)


@pytest.mark.parametrize("field", ["probe.layers", "probe.units"])
def test_probing_no_layer_or_no_unit_is_an_error(tmp_path, field):
    with pytest.raises(ValueError, match="must name at least one each"):
        train.train_and_evaluate(tiny_config(**{field: ()}), tmp_path)


def test_negative_histogram_bins_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="histogram_bins must be ≥ 0"):
        train.train_and_evaluate(tiny_config(**{"probe.histogram_bins": -1}), tmp_path)


def test_overfits_a_tiny_dataset(tmp_path):
    config = tiny_config(num_steps=300, eval_every=100, train_subset=100)
    config.model.norm = None
    config.model.activation = "relu"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.05
    result = train.train_and_evaluate(config, tmp_path)
    losses = [r["train_loss"] for r in result.history if r["train_loss"] is not None]
    assert losses[-1] < 0.1 * losses[0]
    state = result.state
    model = train.build_model(config.model, 10)
    run_data = train.load_run_data(config)
    logits = model.apply(
        {"params": jax.tree.map(lambda x: x[0], state.params)}, run_data.train.images, train=False
    )
    assert float(jnp.mean(jnp.argmax(logits, -1) == run_data.train.labels)) == 1.0


def test_steps_per_compiled_call_change_nothing_but_the_calls(tmp_path, monkeypatch):
    calls = []

    def recording_chunk(*args, **kwargs):
        chunk = make_train_chunk(*args, **kwargs)

        def call(state, data_order, images, labels, num_steps):
            calls.append(num_steps)
            return chunk(state, data_order, images, labels, num_steps)

        return call

    make_train_chunk = train.make_train_chunk
    monkeypatch.setattr(train, "make_train_chunk", recording_chunk)
    runs = []
    for steps_per_call in (0, 7):
        calls.clear()
        runs.append(train.train_and_evaluate(
            tiny_config(steps_per_call=steps_per_call), tmp_path / str(steps_per_call)
        ))
        # 60 steps, evaluations every 20: one call per interval, or calls of 7, 7, 6.
        assert calls == ([20] * 3 if steps_per_call == 0 else [7, 7, 6] * 3)
    assert runs[0].history == runs[1].history
    assert runs[0].summary == runs[1].summary
    assert_trees_equal(runs[0].state, runs[1].state)


@pytest.mark.parametrize(
    "first, change, refusal",
    [
        ({}, {"progress": True}, None),
        ({}, {"steps_per_call": 7}, None),
        ({}, {"tensorboard": True}, None),  # the events are written from the kept metrics
        ({}, {"optimizer.learning_rate": 0.25}, "holds a run with a different configuration"),
        # Turning events off would leave those of the first attempt stale.
        ({"tensorboard": True}, {"tensorboard": False}, "holds TensorBoard events"),
    ],
)
def test_a_workdir_resumes_only_a_run_of_the_same_configuration(
    tmp_path, first, change, refusal
):
    uninterrupted = train.train_and_evaluate(tiny_config(checkpoint_every=20, **first), tmp_path)
    # As if stopped after step 40: the last checkpoint and the outputs of the end are gone.
    shutil.rmtree(tmp_path / train.CHECKPOINT_DIR / "60")
    (tmp_path / train.SUMMARY_FILE).unlink()
    again = tiny_config(checkpoint_every=20, **{**first, **change})
    if refusal is None:
        resumed = train.train_and_evaluate(again, tmp_path)
        assert resumed.history == uninterrupted.history
        assert resumed.summary == uninterrupted.summary
    else:
        with pytest.raises(ValueError, match=refusal):
            train.train_and_evaluate(again, tmp_path)


@pytest.mark.parametrize("field", ["seeds", "learning_rates"])
def test_members_that_repeat_a_seed_or_a_learning_rate_are_an_error(tmp_path, field):
    with pytest.raises(ValueError, match=f"config.{field} .* repeats a value"):
        train.train_and_evaluate(tiny_config(**{field: (1, 1)}), tmp_path)


def test_two_runs_with_the_same_seed_give_identical_metrics(tmp_path):
    first = train.train_and_evaluate(tiny_config(), tmp_path / "a")
    second = train.train_and_evaluate(tiny_config(), tmp_path / "b")
    assert first.history == second.history
    assert first.summary == second.summary


def test_run_writes_metrics_summary_and_every_inference_statistics(tmp_path):
    result = train.train_and_evaluate(tiny_config(seeds=(0, 1)), tmp_path)
    lines = (tmp_path / train.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    assert {r["step"] for r in result.history} == {0, 20, 40, 60}
    summary = json.loads((tmp_path / train.SUMMARY_FILE).read_text())
    for member in summary["members"]:
        for statistics in ("population", "ema", "settled_ema"):
            assert 0.0 <= member[f"test_accuracy_{statistics}"] <= 1.0


def test_a_net_without_bn_reports_only_the_ema_accuracy(tmp_path):
    result = train.train_and_evaluate(tiny_config(**{"model.norm": None}), tmp_path)
    assert set(result.summary["members"][0]) == {"learning_rate", "seed", "test_accuracy_ema"}


@pytest.mark.parametrize("statistics", ["ema", "population"])
def test_evaluations_use_the_configured_bn_statistics(tmp_path, statistics):
    result = train.train_and_evaluate(tiny_config(bn_eval_statistics=statistics), tmp_path)
    final = result.history[-1]["test_accuracy"]
    assert final == result.summary["members"][0][f"test_accuracy_{statistics}"]


def exploding_learning_rate_at(boundary: int, **overrides) -> ml_collections.ConfigDict:
    """A run whose learning rate jumps to 5e37 at step ``boundary`` (optax's piecewise-constant
    schedule scales from count ``boundary`` on), whose update blows the weights up."""
    config = tiny_config(num_steps=100, eval_every=20, checkpoint_every=20, **overrides)
    config.optimizer.schedule = "step"
    config.optimizer.step_boundaries = (boundary,)
    config.optimizer.step_factor = 1e38
    return config


@pytest.mark.parametrize(
    "boundary, message",
    [
        # The update of step 44 breaks the weights: step 45's loss is the first non-finite one.
        (44, "Non-finite training loss at step 45 "),
        # The update of step 59, the last before the evaluation and checkpoint at 60, breaks
        # them: every training loss of the chunk is finite, the evaluation's is not.
        (59, "Non-finite test loss at the evaluation of step 60 "),
    ],
)
@pytest.mark.parametrize("steps_per_call", [0, 7])
def test_non_finite_training_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, boundary, message, steps_per_call
):
    config = exploding_learning_rate_at(boundary, steps_per_call=steps_per_call)
    with pytest.raises(train.NonFiniteLossError, match=re.escape(message)) as error:
        train.train_and_evaluate(config, tmp_path)
    assert "The last good checkpoint (step 40) is kept" in str(error.value)
    checkpoints = sorted(int(p.name) for p in (tmp_path / train.CHECKPOINT_DIR).iterdir())
    assert checkpoints == [20, 40]
    history = [json.loads(line) for line in (tmp_path / train.METRICS_FILE).open()]
    assert history[-1]["step"] == 40
    assert all(np.isfinite(record["test_loss"]) for record in history)


@pytest.mark.parametrize(
    "fraction, message", [(1.0, "must be in \\[0, 1\\)"), (1e-6, "is 0 examples")]
)
def test_a_validation_fraction_that_leaves_no_split_is_an_error(tmp_path, fraction, message):
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(tiny_config(validation_fraction=fraction), tmp_path)


def test_unknown_config_key_is_an_error(tmp_path):
    config = tiny_config()
    config.unlock()
    config.learning_rate = 0.1  # belongs in config.optimizer
    with pytest.raises(ValueError, match=r"Unknown config keys \['learning_rate'\]"):
        train.train_and_evaluate(config, tmp_path)


def test_max_norm_keeps_every_hidden_column_within_c_throughout_training(tmp_path):
    config = tiny_config(num_steps=40, eval_every=10)
    config.model.norm = None
    config.model.activation = "relu"
    config.optimizer.learning_rate = 5.0
    config.optimizer.max_norm = 1.5
    model = train.build_model(config.model, 10)
    tx = train.build_optimizer(config.optimizer)
    run_data = train.load_run_data(config)
    images, labels = jnp.asarray(run_data.train.images), jnp.asarray(run_data.train.labels)
    state = train.init_members(model, tx, [train.Member(5.0, 0)], images[:1])
    chunk = train.make_train_chunk(model, tx, batch_size=32)
    data_order = train.empty_data_order(1, len(images))
    largest = {"hidden": 0.0, "output": 0.0}
    for _ in range(40):  # one step per call: the bound is checked after every update
        state, data_order, _ = chunk(state, data_order, images, labels, 1)
        for name, layer in state.params.items():
            norms = jnp.linalg.norm(layer["kernel"][0], axis=0)
            kind = "output" if name == OUTPUT_LAYER else "hidden"
            largest[kind] = max(largest[kind], float(norms.max()))
            if kind == "hidden":
                assert float(norms.max()) <= 1.5 * (1 + 1e-6), name
    # The constraint binds (columns reach c), so the bound above is the projection's doing; the
    # output layer, whose units are not hidden ones, is left free and grows past c.
    assert largest["hidden"] >= 1.5 * (1 - 1e-6)
    assert largest["output"] > 1.5 * 2


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import jax
    from test_train import tiny_config
    from bnreg.train import train_and_evaluate
    result = train_and_evaluate(tiny_config(seeds=(0, 1), checkpoint_every=20), sys.argv[1])
    kernel = result.state.params["Dense_0"]["kernel"]
    print(json.dumps({{"devices": len(kernel.sharding.device_set), "history": result.history}}))
    """
)


@pytest.mark.slow
def test_members_sharded_over_two_cpu_devices_match_one_device(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT.format(tests=str(REPO / "tests")))
    outputs = {}
    for devices in (1, 2):
        env = dict(
            os.environ, PYTHONPATH=str(REPO),
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        )
        completed = subprocess.run(
            [sys.executable, str(script), str(tmp_path / f"run{devices}")],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        outputs[devices] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outputs[1]["devices"] == 1 and outputs[2]["devices"] == 2
    for one, two in zip(outputs[1]["history"], outputs[2]["history"], strict=True):
        assert one["step"] == two["step"] and one["member"] == two["member"]
        np.testing.assert_allclose(one["test_loss"], two["test_loss"], rtol=1e-4)


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import jax
    from test_train import tiny_config
    from bnreg.train import train_and_evaluate, train_and_evaluate_concurrently
    workdir = sys.argv[1]
    configs = [
        tiny_config(seeds=(0, 1), checkpoint_every=20),
        tiny_config(checkpoint_every=20, **{{"model.norm": None}}),
    ]
    runs = [(config, f"{{workdir}}/together{{i}}") for i, config in enumerate(configs)]
    together = train_and_evaluate_concurrently(runs)
    # Again: each run resumes from its last checkpoint, restored onto its own device.
    again = train_and_evaluate_concurrently(runs)
    alone = [
        train_and_evaluate(config, f"{{workdir}}/alone{{i}}", devices=[device])
        for i, (config, device) in enumerate(zip(configs, jax.devices()))
    ]
    try:
        train_and_evaluate_concurrently(
            [(tiny_config(), f"{{workdir}}/good"), (tiny_config(batch_size=0), f"{{workdir}}/bad")]
        )
        error = None
    except ValueError as raised:
        error = str(raised)
    print(json.dumps({{
        "error": error,
        "devices": [[d.id for d in r.state.params["Dense_0"]["kernel"].sharding.device_set]
                    for r in together],
        "together": [[r.history, r.summary] for r in together],
        "again": [[r.history, r.summary] for r in again],
        "alone": [[r.history, r.summary] for r in alone],
    }}))
    """
)


@pytest.mark.slow
def test_concurrent_runs_on_two_devices_equal_runs_made_alone_and_raise_errors(tmp_path):
    script = tmp_path / "concurrent_runs.py"  # not concurrent.py: it would shadow the stdlib
    script.write_text(CONCURRENT_SCRIPT.format(tests=str(REPO / "tests")))
    env = dict(
        os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    output = json.loads(completed.stdout.strip().splitlines()[-1])
    assert output["devices"] == [[0], [1]]
    assert output["together"] == output["alone"] == output["again"]
    # A failing run raises its error, after the other run has finished.
    assert "batch_size" in output["error"]
    assert (tmp_path / "good" / train.SUMMARY_FILE).is_file()


RUN_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_train import tiny_config
    from bnreg.train import train_and_evaluate
    config = tiny_config(
        num_steps=3000, eval_every=50, checkpoint_every=100, seeds=(0, 1), tensorboard=True
    )
    train_and_evaluate(config, sys.argv[1])
    """
)


def run_script(tmp_path: Path, workdir: Path) -> subprocess.Popen:
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT.format(tests=str(REPO / "tests")))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(script), str(workdir)], env=env)


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    from test_tensorboard_events import read_events  # it imports this module

    uninterrupted = tmp_path / "uninterrupted"
    assert run_script(tmp_path, uninterrupted).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    process = run_script(tmp_path, killed)
    checkpoints = killed / train.CHECKPOINT_DIR
    deadline = time.monotonic() + 120
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0.0, 0.5))
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / train.SUMMARY_FILE).exists()

    assert run_script(tmp_path, killed).wait(timeout=300) == 0
    assert (killed / train.METRICS_FILE).read_text() == (
        uninterrupted / train.METRICS_FILE
    ).read_text()
    assert (killed / train.SUMMARY_FILE).read_text() == (
        uninterrupted / train.SUMMARY_FILE
    ).read_text()
    assert read_events(killed / TENSORBOARD_DIR) == read_events(uninterrupted / TENSORBOARD_DIR)
