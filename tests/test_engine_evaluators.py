"""The evaluators: BN's inference statistics, probes, Monte-Carlo averaging, DropConnect's
Gaussian inference, and the tasks' metrics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_engine_step import model_config, program, random_batch

from bnreg import engine
from bnreg.core.batch_norm import BatchNormParams, BatchNormState, batch_norm
from bnreg.core.dropconnect import dropconnect_gaussian_inference
from bnreg.data import batch_at_step
from bnreg.engine import evaluators
from bnreg.engine.step import unstack_member
from bnreg.layers import DropConnectDense
from bnreg.models import MLP, ConvNet


def one_member(network, members, images):
    return unstack_member(engine.init_members(network, members, images[:1]))


def test_bn_layer_in_a_model_equals_the_functional_core():
    model = MLP(hidden_sizes=(6,), num_outputs=3, norm="batch", bn_momentum=0.9)
    images, _ = random_batch(n=10, features=5)
    variables = model.init(jax.random.key(0), images, bn_mode="inference", noise=False)
    _, state = model.apply(variables, images, bn_mode="batch", noise=False,
                           mutable=["batch_stats", "intermediates"])
    bn_params = variables["params"]["BatchNorm_0"]
    expected, expected_state = batch_norm(
        images @ variables["params"]["Dense_0"]["kernel"],
        BatchNormParams(bn_params["scale"], bn_params["bias"]),
        BatchNormState(jnp.zeros(6), jnp.ones(6)), train=True, momentum=0.9,
    )
    np.testing.assert_allclose(state["intermediates"]["preactivation_0"][0], expected,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], expected_state.mean)
    np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["var"], expected_state.var)


def second_bn_inputs(network, state, images, labels, *, batch_size, num_batches):
    """NumPy: the inputs of ``BatchNorm_1`` on each training batch of the member's population
    stream, with its weights."""
    key = engine.stream_key(state.key, engine.Stream.POPULATION)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    inputs = []
    for step in range(num_batches):
        batch, _ = batch_at_step(key, images, labels, step, batch_size=batch_size)
        _, collections = network.model.apply(variables, batch, bn_mode="batch", noise=False,
                                             mutable=["batch_stats", "intermediates"])
        inputs.append(np.asarray(collections["intermediates"]["activation_0"][0])
                      @ np.asarray(state.params["Dense_1"]["kernel"]))
    return inputs


@pytest.fixture(scope="module")
def bn_member():
    config = model_config(**{"model.hidden_sizes": (5, 4), "optimizer.momentum": 0.0})
    network, members = program(config, features=7, num_classes=3)
    images, labels = random_batch(n=24, features=7)
    return network, one_member(network, members, images), images, labels


def test_population_statistics_equal_numpy_alg2_over_the_same_batches(bn_member):
    network, state, images, labels = bn_member
    m, num_batches = 6, 7
    batches = engine.population_batch_indices(state.key, len(images), batch_size=m,
                                              num_batches=num_batches)
    population = engine.population_statistics(network, state, images, batches)
    inputs = second_bn_inputs(network, state, images, labels, batch_size=m,
                              num_batches=num_batches)
    np.testing.assert_allclose(population["BatchNorm_1"]["mean"],
                               np.mean([h.mean(0) for h in inputs], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(population["BatchNorm_1"]["var"],
                               m / (m - 1) * np.mean([h.var(0) for h in inputs], 0), rtol=1e-4)


def test_settled_ema_equals_numpy_ema_over_the_same_batches(bn_member):
    network, state, images, labels = bn_member
    momentum, m, num_batches = 0.99, 6, 9  # the model's default momentum
    state = state._replace(batch_stats=jax.tree.map(lambda x: x + 0.5, state.batch_stats))
    batches = engine.population_batch_indices(state.key, len(images), batch_size=m,
                                              num_batches=num_batches)
    settled = engine.settled_ema_statistics(network, state, images, batches)
    mean = np.asarray(state.batch_stats["BatchNorm_1"]["mean"])
    var = np.asarray(state.batch_stats["BatchNorm_1"]["var"])
    for h in second_bn_inputs(network, state, images, labels, batch_size=m,
                              num_batches=num_batches):
        mean = momentum * mean + (1 - momentum) * h.mean(0)
        var = momentum * var + (1 - momentum) * m / (m - 1) * h.var(0)
    np.testing.assert_allclose(settled["BatchNorm_1"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(settled["BatchNorm_1"]["var"], var, rtol=1e-4)


@pytest.mark.parametrize("momentum, expected", [(0.99, 688), (0.9, 66), (0.5, 10), (0.0, 1)])
def test_ema_settling_batches_is_the_first_count_below_the_residual(momentum, expected):
    batches = engine.ema_settling_batches(momentum)
    assert batches == expected
    assert momentum**batches <= 1e-3 < momentum ** (batches - 1)


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1])
def test_ema_settling_batches_rejects_an_ema_that_cannot_settle(momentum):
    with pytest.raises(ValueError, match="momentum"):
        engine.ema_settling_batches(momentum)


PROBE = evaluators.ProbeSpec(layers=(-1, 0), units=(0, 3), percentiles=(15.0, 50.0, 85.0),
                             histogram_bins=10, histogram_range=(0.0, 1.0))


@pytest.mark.parametrize(
    "model, images",
    [
        (MLP(hidden_sizes=(6, 5), num_outputs=3), random_batch(n=50, features=7)[0]),
        # A conv layer's unit is a feature map, sampled at each of its 4×4 positions.
        (ConvNet(conv_features=(6,), hidden_sizes=(5,), num_outputs=3),
         jax.random.normal(jax.random.key(1), (50, 4, 4, 2))),
    ],
    ids=["mlp", "convnet"],
)
def test_probe_percentiles_equal_jnp_percentile_of_recorded_preactivations(model, images):
    labels = jnp.zeros(len(images), jnp.int32)
    config = model_config(**{"model.norm": None})
    _, members = program(config)
    network = engine.Network(model, engine.build_task(config.task),
                             engine.build_optimizer(config.optimizer, members))
    state = one_member(network, members, images)
    result = evaluators.evaluate(network, state, state.batch_stats, images, labels,
                                 batch_size=16, probe=PROBE)
    _, collections = model.apply({"params": state.params}, images, bn_mode="inference",
                                 noise=False, mutable=["intermediates"])
    recorded = [collections["intermediates"][f"preactivation_{i}"][0] for i in range(2)]
    expected = [
        jnp.percentile(recorded[layer].reshape(-1, recorded[layer].shape[-1])[:, [0, 3]],
                       jnp.asarray([15.0, 50.0, 85.0]), axis=0).T
        for layer in PROBE.layers
    ]
    np.testing.assert_allclose(result["probe_percentiles"], expected, rtol=1e-5, atol=1e-6)
    # Padding of the last evaluation batch is not counted anywhere.
    sizes = [r[0].size for r in recorded]
    np.testing.assert_array_equal(result["activation_histogram"].sum(1), [50 * n for n in sizes])


@pytest.mark.parametrize(
    "layers, message",
    [((2,), r"must index the model's 2 hidden layers"), ((1, -1), r"names a hidden layer twice")],
)
def test_probed_layers_the_model_does_not_have_or_named_twice_are_an_error(layers, message):
    network, members = program(model_config(**{"model.hidden_sizes": (6, 5)}), features=7)
    images, labels = random_batch(n=20, features=7)
    state = one_member(network, members, images)
    with pytest.raises(ValueError, match=message):
        evaluators.evaluate(network, state, state.batch_stats, images, labels, batch_size=16,
                            probe=PROBE._replace(layers=layers))


def test_zero_histogram_bins_leave_out_the_histograms_and_nothing_else():
    network, members = program(model_config(), features=7)
    images, labels = random_batch(n=50, features=7)
    state = one_member(network, members, images)
    with_histograms, without = (
        evaluators.evaluate(network, state, state.batch_stats, images, labels, batch_size=16,
                            probe=probe)
        for probe in (PROBE, PROBE._replace(histogram_bins=0))
    )
    assert set(with_histograms) - set(without) == {"activation_histogram"}
    for name, value in without.items():
        np.testing.assert_array_equal(value, with_histograms[name], err_msg=name)


def batchwise(apply, images, batch_size, key_of_batch):
    """``apply(batch, key)`` over padded batches of ``batch_size`` as the evaluators cut a split
    (the last padded with zeros), keyed by ``key_of_batch(b)``; the outputs of real examples."""
    outputs = []
    for b, start in enumerate(range(0, len(images), batch_size)):
        batch = images[start:start + batch_size]
        padded = jnp.pad(batch, [(0, batch_size - len(batch))] + [(0, 0)] * (batch.ndim - 1))
        outputs.append(apply(padded, key_of_batch(b))[: len(batch)])
    return jnp.concatenate(outputs)


def test_monte_carlo_equals_a_direct_loop_of_k_sampled_thinned_nets():
    config = model_config(**{"model.hidden_dropout": 0.5})
    network, members = program(config)
    images, labels = random_batch(n=30)
    state = one_member(network, members, images)
    samples = (1, 3, 5)
    # Three batches of 12, the last with 6 padded examples.
    result = evaluators.evaluate_monte_carlo(network, state, state.batch_stats, images, labels,
                                             batch_size=12, samples=samples)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    sample_key = engine.stream_key(state.key, engine.Stream.MONTE_CARLO)

    def thinned(batch, key):
        return jax.nn.softmax(network.model.apply(variables, batch, bn_mode="inference",
                                                  noise=True, rngs={"dropout": key}))

    probabilities = [
        batchwise(thinned, images, 12,
                  lambda b, i=i: jax.random.fold_in(jax.random.fold_in(sample_key, i), b))
        for i in range(max(samples))
    ]
    for position, k in enumerate(samples):
        average = np.mean(probabilities[:k], axis=0)
        np.testing.assert_allclose(result["accuracy"][position],
                                   np.mean(average.argmax(-1) == np.asarray(labels)), rtol=1e-6)
        np.testing.assert_allclose(
            result["loss"][position],
            -np.mean(np.log(average[np.arange(30), np.asarray(labels)])), rtol=1e-5)
    assert len(set(np.asarray(result["loss"]).tolist())) == 3  # the samples differ


def test_the_monte_carlo_loss_stays_finite_when_a_label_probability_underflows():
    config = model_config(**{"model.hidden_dropout": 0.5, "model.norm": None})
    network, members = program(config)
    images, labels = random_batch(n=8)
    state = one_member(network, members, images)
    # Output weights so large that the wrong classes' probabilities underflow float32.
    params = dict(state.params)
    params["Dense_out"] = {"kernel": 1e6 * state.params["Dense_out"]["kernel"],
                           "bias": state.params["Dense_out"]["bias"]}
    state = state._replace(params=params)
    deterministic = evaluators.evaluate(network, state, {}, images, labels, batch_size=8)
    monte_carlo = evaluators.evaluate_monte_carlo(network, state, {}, images, labels,
                                                  batch_size=8, samples=(1, 2))
    assert np.isfinite(deterministic["loss"]) and deterministic["loss"] > 1000  # e^-1000: 0
    assert np.all(np.isfinite(monte_carlo["loss"]))


def test_gaussian_dropconnect_layer_equals_the_core_function():
    layer = DropConnectDense(5, 0.4, gaussian_samples=64)
    x = jax.random.normal(jax.random.key(0), (6, 3))
    variables = DropConnectDense(5, 0.4).init(jax.random.key(1), x, noise=False)
    rngs = {"dropout": jax.random.key(2)}

    class KeyOf(nn.Module):  # the key a top-level layer draws from the stream
        @nn.compact
        def __call__(self):
            return self.make_rng("dropout")

    output = layer.apply(variables, x, noise=False, activation=jax.nn.relu, rngs=rngs)
    params = variables["params"]
    expected = dropconnect_gaussian_inference(
        KeyOf().apply({}, rngs=rngs), x, params["kernel"], params["bias"], rate=0.4,
        activation=jax.nn.relu, num_samples=64,
    )
    np.testing.assert_array_equal(output, expected)


def test_the_gaussian_evaluator_applies_the_model_with_gaussian_dropconnect_layers():
    config = model_config(**{"model.norm": None, "model.dropconnect": 0.5,
                             "model.activation": "relu"})
    network, members = program(config)
    images, labels = random_batch(n=30)
    state = one_member(network, members, images)
    result = evaluators.evaluate_gaussian(network, state, {}, images, labels, batch_size=12,
                                          samples=20)
    gaussian_key = engine.stream_key(state.key, engine.Stream.GAUSSIAN)
    model = network.model.clone(dropconnect_gaussian_samples=20)
    logits = batchwise(
        lambda batch, key: model.apply({"params": state.params}, batch, bn_mode="inference",
                                       noise=False, rngs={"dropout": key}),
        images, 12, lambda b: jax.random.fold_in(gaussian_key, b))
    np.testing.assert_allclose(result["accuracy"],
                               np.mean(np.argmax(logits, -1) == np.asarray(labels)), rtol=1e-6)
    mean_logits = network.model.apply({"params": state.params}, images, bn_mode="inference",
                                      noise=False)
    assert not np.allclose(logits, mean_logits)  # not the mean network a(pWv)


@pytest.mark.parametrize(
    "names, has_bn, expected",
    [
        (("deterministic", "ema", "settled_ema"), True, ["population", "ema", "settled_ema"]),
        (("deterministic", "ema", "population"), False, ["deterministic"]),
        (("deterministic", "population", "monte_carlo"), True, ["population", "mc_k1", "mc_k10"]),
    ],
)
def test_evaluator_names_expand_to_their_columns(names, has_bn, expected):
    found = evaluators.expand(names, has_bn=has_bn, bn_statistics="population",
                              monte_carlo_samples=(1, 10), gaussian_samples=(5,))
    assert [column for evaluator in found for column in evaluator.columns] == expected
