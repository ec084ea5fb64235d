"""Models: BN placement (before the nonlinearity, no bias before it), conv BN per feature map,
the autoencoder's shape, the registry, traced rates and the ``bn_mode``/``noise`` switches."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnreg.config import default_config
from bnreg.models import (
    MLP,
    MODELS,
    OUTPUT_LAYER,
    Autoencoder,
    ConvNet,
    Inception,
    build_model,
    is_hidden_kernel,
    kernel_initializer,
)

INFERENCE = {"bn_mode": "inference", "noise": False}


def model_config(name: str, **fields):
    config = default_config().model
    config.name = name
    config.hidden_sizes = (5,)
    config.conv_features = (3,)
    # A narrow Inception (the same modules and branches): the default one compiles for 40 s.
    config.inception_stem = 4
    config.inception_modules = ((2, 2, 3, 1, 2, 1), (3, 2, 4, 1, 2, 2))
    for key, value in fields.items():
        config[key] = value
    return config


@pytest.mark.parametrize("norm", [None, "batch"])
def test_dense_layers_have_a_bias_only_without_bn(norm):
    model = MLP(hidden_sizes=(5, 4), num_outputs=3, norm=norm)
    params = model.init(jax.random.key(0), jnp.zeros((2, 6)), **INFERENCE)["params"]
    for index in range(2):
        assert ("bias" in params[f"Dense_{index}"]) == (norm is None)
        assert (f"BatchNorm_{index}" in params) == (norm == "batch")
    assert "bias" in params["Dense_out"]


def test_bn_sits_between_the_linear_map_and_the_nonlinearity():
    model = MLP(hidden_sizes=(4,), num_outputs=2, norm="batch", activation="tanh")
    x = jax.random.normal(jax.random.key(1), (16, 3))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    _, state = model.apply(
        variables, x, bn_mode="batch", noise=True, mutable=["batch_stats", "intermediates"]
    )
    preactivation = state["intermediates"]["preactivation_0"][0]
    activation = state["intermediates"]["activation_0"][0]
    # Normalised in training (γ = 1, β = 0 at init), then the nonlinearity.
    np.testing.assert_allclose(preactivation.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(preactivation.var(0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(activation, jnp.tanh(preactivation), rtol=1e-6)


def test_conv_bn_has_one_scale_and_shift_per_feature_map_normalised_over_positions():
    model = ConvNet(conv_features=(3,), hidden_sizes=(5,), num_outputs=4, norm="batch")
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    assert variables["params"]["BatchNorm_0"]["scale"].shape == (3,)
    assert "bias" not in variables["params"]["Conv_0"]
    logits, state = model.apply(
        variables, x, bn_mode="batch", noise=True, mutable=["batch_stats", "intermediates"]
    )
    assert logits.shape == (4, 4)
    conv_preactivation = state["intermediates"]["preactivation_0"][0]  # (4, 8, 8, 3)
    # Each map normalised over batch and positions together (m' = m·p·q), not per position.
    z = np.asarray(
        nn.Conv(3, (3, 3), use_bias=False).apply(
            {"params": variables["params"]["Conv_0"]}, x
        ),
        np.float64,
    )
    expected = (z - z.mean((0, 1, 2))) / np.sqrt(z.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(conv_preactivation, expected, rtol=1e-4, atol=1e-4)


def test_dropconnect_mlp_with_noise_samples_a_mask_per_key():
    model = MLP(hidden_sizes=(6,), num_outputs=2, dropconnect=0.5)
    x = jnp.ones((3, 4))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    a, b = (
        model.apply(variables, x, bn_mode="batch", noise=True, rngs={"dropout": jax.random.key(k)})
        for k in (1, 2)
    )
    assert not np.allclose(a, b)


def test_dropconnect_mlp_without_noise_is_the_plain_network():
    # Inverted scaling: mean inference is the plain network with the same weights.
    model = MLP(hidden_sizes=(6,), num_outputs=2, dropconnect=0.5)
    x = jnp.ones((3, 4))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    plain = MLP(hidden_sizes=(6,), num_outputs=2)
    np.testing.assert_allclose(
        model.apply(variables, x, **INFERENCE), plain.apply(variables, x, **INFERENCE), rtol=1e-6
    )


@pytest.mark.parametrize("field,value", [("activation", "swish"), ("norm", "layer")])
def test_unknown_model_choices_are_errors(field, value):
    model = MLP(hidden_sizes=(2,), num_outputs=2, **{field: value})
    with pytest.raises(ValueError, match=field):
        model.init(jax.random.key(0), jnp.zeros((2, 3)), **INFERENCE)


def test_hidden_kernels_are_every_kernel_but_the_output_layers():
    model = ConvNet(conv_features=(3,), hidden_sizes=(5,), num_outputs=4)
    params = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), **INFERENCE)["params"]
    selected = jax.tree_util.tree_map_with_path(is_hidden_kernel, params)
    assert selected == {
        "Conv_0": {"kernel": True, "bias": False},
        "Dense_1": {"kernel": True, "bias": False},
        OUTPUT_LAYER: {"kernel": False, "bias": False},
    }


@pytest.mark.parametrize("rate", [-0.1, float("nan"), 1.0])
def test_a_dropconnect_rate_outside_0_1_is_an_error_not_off(rate):
    model = MLP(hidden_sizes=(6,), num_outputs=2, dropconnect=rate)
    with pytest.raises(ValueError, match="rate"):
        model.init(jax.random.key(0), jnp.ones((3, 4)), **INFERENCE)


def test_autoencoder_outputs_one_value_per_input_pixel():
    model = Autoencoder(hidden_sizes=(7,), num_outputs=8 * 8)
    x = jnp.ones((3, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    assert model.apply(variables, x, **INFERENCE).shape == (3, 64)


def test_autoencoder_first_layer_maps_the_pixels_to_the_hidden_units():
    model = Autoencoder(hidden_sizes=(7,), num_outputs=8 * 8)
    params = model.init(jax.random.key(0), jnp.ones((3, 8, 8, 1)), **INFERENCE)["params"]
    assert params["Dense_0"]["kernel"].shape == (64, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_model_gives_the_registry_entry_of_the_config(name):
    model = build_model(model_config(name), (8, 8, 1), num_classes=10)
    assert type(model) is MODELS[name]


@pytest.mark.parametrize("name,num_outputs", [("mlp", 10), ("convnet", 10), ("inception", 10),
                                              ("autoencoder", 64)])
def test_build_model_outputs_the_classes_or_for_an_autoencoder_the_pixels(name, num_outputs):
    model = build_model(model_config(name), (8, 8, 1), num_classes=10)
    x = jnp.ones((2, 8, 8, 1))
    # Jitted: op by op, the default Inception takes most of a minute.
    variables = jax.jit(lambda key: model.init(key, x, **INFERENCE))(jax.random.key(0))
    assert jax.jit(lambda v: model.apply(v, x, **INFERENCE))(variables).shape == (2, num_outputs)


def test_build_model_of_an_unknown_name_is_an_error_that_lists_the_models():
    with pytest.raises(ValueError, match=r"model\.name must be one of .*'mlp'"):
        build_model(model_config("resnet"), (8, 8, 1), num_classes=10)


@pytest.mark.parametrize("name", ["inception", "autoencoder"])
def test_build_model_refuses_dropconnect_outside_the_mlp_and_the_convnet(name):
    with pytest.raises(ValueError, match="dropconnect"):
        build_model(model_config(name, dropconnect=0.5), (8, 8, 1), num_classes=10)


def test_a_convnets_dense_head_is_a_dropconnect_layer_that_is_plain_without_noise():
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
    config = model_config("convnet", dropconnect=0.5, hidden_sizes=(6,), conv_features=(3,))
    model = build_model(config, (8, 8, 1), num_classes=10)
    plain = build_model(model_config("convnet", hidden_sizes=(6,), conv_features=(3,)),
                        (8, 8, 1), num_classes=10)
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    noisy = [model.apply(variables, x, bn_mode="inference", noise=True,
                         rngs={"dropout": jax.random.key(k)}) for k in (0, 1)]
    assert not np.allclose(noisy[0], noisy[1])  # masks drawn from the key
    np.testing.assert_allclose(model.apply(variables, x, **INFERENCE),
                               plain.apply(variables, x, **INFERENCE), rtol=1e-6)


@pytest.mark.parametrize("field", ["input_dropout", "hidden_dropout", "dropconnect"])
def test_a_traced_rate_of_0_with_noise_is_the_network_without_the_layer(field):
    x = jax.random.normal(jax.random.key(1), (4, 6))
    plain = MLP(hidden_sizes=(8, 8), num_outputs=3)
    variables = plain.init(jax.random.key(0), x, **INFERENCE)

    @jax.jit
    def noisy(rate, key):
        model = MLP(hidden_sizes=(8, 8), num_outputs=3, **{field: rate})
        return model.apply(variables, x, bn_mode="inference", noise=True, rngs={"dropout": key})

    np.testing.assert_allclose(
        noisy(jnp.float32(0.0), jax.random.key(2)), plain.apply(variables, x, **INFERENCE),
        rtol=1e-6, atol=1e-6,
    )


def noisy_bn_net():
    """A BN net with dropout after its hidden layer, its batch_stats set away from their
    initial values, and an input batch."""
    model = MLP(hidden_sizes=(5,), num_outputs=3, norm="batch", hidden_dropout=0.5)
    x = jax.random.normal(jax.random.key(1), (8, 4))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    stats = {
        "mean": jax.random.normal(jax.random.key(2), (5,)),
        "var": jax.random.uniform(jax.random.key(3), (5,), minval=0.5, maxval=2.0),
    }
    return model, {"params": variables["params"], "batch_stats": {"BatchNorm_0": stats}}, x


def test_noise_in_inference_mode_leaves_the_batch_stats_unchanged():
    model, variables, x = noisy_bn_net()
    _, state = model.apply(
        variables, x, bn_mode="inference", noise=True, rngs={"dropout": jax.random.key(4)},
        mutable=["batch_stats"],
    )
    jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], variables["batch_stats"])


def test_noise_in_inference_mode_samples_a_mask_per_key():
    model, variables, x = noisy_bn_net()
    a, b = (
        model.apply(variables, x, bn_mode="inference", noise=True,
                    rngs={"dropout": jax.random.key(k)})
        for k in (4, 5)
    )
    assert not np.allclose(a, b)


def test_noise_in_inference_mode_normalises_with_the_stored_statistics():
    model, variables, x = noisy_bn_net()
    _, state = model.apply(
        variables, x, bn_mode="inference", noise=True, rngs={"dropout": jax.random.key(4)},
        mutable=["intermediates"],
    )
    params, stats = variables["params"], variables["batch_stats"]["BatchNorm_0"]
    z = x @ params["Dense_0"]["kernel"]
    expected = (
        params["BatchNorm_0"]["scale"] * (z - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5)
        + params["BatchNorm_0"]["bias"]
    )
    np.testing.assert_allclose(
        state["intermediates"]["preactivation_0"][0], expected, rtol=1e-5, atol=1e-5
    )


def test_gaussian_dropout_is_noise_with_mean_one():
    # The output layer is linear in the dropped units, so its mean over the noise is the
    # deterministic output exactly when the noise has mean one; with 16,000 samples a mean off
    # by 5% is more than 5 standard errors away for most outputs.
    model = MLP(hidden_sizes=(8,), num_outputs=3, hidden_dropout=0.2, dropout_noise="gaussian")
    x = jax.random.normal(jax.random.key(1), (4, 6))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    keys = jax.random.split(jax.random.key(2), 16_000)
    samples = jax.vmap(
        lambda key: model.apply(variables, x, bn_mode="inference", noise=True,
                                rngs={"dropout": key})
    )(keys)
    standard_error = samples.std(0) / np.sqrt(len(keys))
    assert (samples.std(0) > 0.01).all()  # noise, not the deterministic net
    np.testing.assert_array_less(
        np.abs(samples.mean(0) - model.apply(variables, x, **INFERENCE)), 5 * standard_error
    )


@pytest.mark.parametrize("fan_in", [100, 900])
def test_fan_in_normal_init_is_an_untruncated_gaussian_of_std_sigma_over_root_fan_in(fan_in):
    kernel = kernel_initializer("fan_in_normal", 2.0)(jax.random.key(0), (fan_in, 400))
    values = np.asarray(kernel).reshape(-1)
    expected = 2.0 / np.sqrt(fan_in)
    assert abs(values.std() / expected - 1) < 0.01
    assert abs(values.mean()) < 0.01 * expected
    # Untruncated: about 0.27% of a Gaussian lies beyond 3 std (a truncated one has none).
    assert 0.002 < np.mean(np.abs(values) > 3 * expected) < 0.0035


@pytest.mark.parametrize("scaling,factor", [("inverted", 1.0), ("paper", 0.6)])
def test_the_paper_scaling_multiplies_the_hidden_units_by_p_at_test(scaling, factor):
    """Hidden drop rate 0.4 (p = 0.6): with the noise off, the output layer sees the hidden
    activations ×p in the paper's form and as they are when inverted."""
    model = MLP(hidden_sizes=(7,), num_outputs=3, activation="relu", hidden_dropout=0.4,
                dropout_scaling=scaling)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    params = model.init(jax.random.key(0), x, **INFERENCE)["params"]
    hidden = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    expected = factor * hidden @ params[OUTPUT_LAYER]["kernel"] + params[OUTPUT_LAYER]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, x, **INFERENCE), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scaling,factor", [("inverted", 1.0), ("paper", 0.6)])
def test_the_paper_scaling_multiplies_a_dropconnect_layers_pre_activation_by_p_at_test(
        scaling, factor):
    """DropConnect rate 0.4 (p = 0.6) on the hidden layer: with the noise off, its
    pre-activation is the paper's mean network p·(Wv + b) in the paper's form, Wv + b
    inverted."""
    model = MLP(hidden_sizes=(7,), num_outputs=3, activation="relu", dropconnect=0.4,
                dropout_scaling=scaling)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    params = model.init(jax.random.key(0), x, **INFERENCE)["params"]
    hidden = jax.nn.relu(factor * (x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]))
    expected = hidden @ params[OUTPUT_LAYER]["kernel"] + params[OUTPUT_LAYER]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, x, **INFERENCE), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scaling,kept", [("inverted", 1 / 0.6), ("paper", 1.0)])
def test_in_training_kept_inputs_are_scaled_by_1_over_p_only_when_inverted(scaling, kept):
    """Input drop rate 0.4 on an identity-like first layer: each input reaches the first
    layer as 0 or x × (1/p inverted, 1 in the paper's form)."""
    model = Autoencoder(hidden_sizes=(4,), num_outputs=4, input_dropout=0.4,
                        dropout_scaling=scaling)
    x = jnp.arange(1.0, 5.0)[None]
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    params = jax.tree.map(jnp.zeros_like, variables["params"])
    params["Dense_0"]["kernel"] = jnp.eye(4)
    _, state = model.apply({"params": params}, x, bn_mode="batch", noise=True,
                           rngs={"dropout": jax.random.key(3)}, mutable=["intermediates"])
    seen = np.asarray(state["intermediates"]["preactivation_0"][0][0])
    for value, original in zip(seen, np.asarray(x[0]), strict=True):
        assert value == 0.0 or value == pytest.approx(kept * original)
    assert np.any(seen != 0.0)


@pytest.mark.parametrize("bits", [32, 16])
def test_the_dropconnect_mlp_draws_its_masks_with_the_configured_bits(bits, monkeypatch):
    """The model's DropConnect layers call the core with ``dropconnect_mask_bits``."""
    from bnreg import layers

    seen = []
    core = layers.dropconnect_dense
    monkeypatch.setattr(layers, "dropconnect_dense",
                        lambda *args, **kwargs: seen.append(kwargs["mask_bits"])
                        or core(*args, **kwargs))
    model = MLP(hidden_sizes=(4, 3), num_outputs=2, activation="relu", dropconnect=0.5,
                dropconnect_mask_bits=bits)
    x = jax.random.normal(jax.random.key(1), (3, 6))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    seen.clear()
    model.apply(variables, x, bn_mode="batch", noise=True, rngs={"dropout": jax.random.key(5)})
    assert seen == [bits, bits]


SMALL_INCEPTION = dict(stem_features=4, modules=((2, 2, 3, 2, 2, 2), (3, 2, 4, 2, 3, 2)),
                       pool_after=(0,), num_outputs=5)


def test_inception_bn_normalises_every_convolutions_maps_over_batch_and_positions():
    model = Inception(**SMALL_INCEPTION, norm="batch")
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    _, state = model.apply(variables, x, bn_mode="batch", noise=True,
                           mutable=["batch_stats", "intermediates"], capture_intermediates=True)
    captured = state["intermediates"]
    convolutions = [name for name in variables["params"] if name.startswith("Conv_")]
    assert len(convolutions) == 1 + 7 * 2  # the stem; per module 1 + 2 + 3 + 1
    for name in convolutions:
        z = np.asarray(captured[name]["__call__"][0], np.float64)
        normalised = captured[name.replace("Conv", "BatchNorm")]["__call__"][0]
        expected = (z - z.mean((0, 1, 2))) / np.sqrt(z.var((0, 1, 2)) + 1e-5)  # γ 1, β 0
        np.testing.assert_allclose(normalised, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stem_pool, module_pixels", [(False, 8), (True, 4)])
def test_inception_stem_pool_halves_the_maps_the_first_module_sees(stem_pool, module_pixels):
    model = Inception(**SMALL_INCEPTION, stem_pool=stem_pool)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    _, state = model.apply(variables, x, **INFERENCE, mutable=["intermediates"],
                           capture_intermediates=True)
    stem, first_module = (state["intermediates"][f"Conv_{i}"]["__call__"][0] for i in (0, 1))
    assert stem.shape[1:3] == (8, 8)
    assert first_module.shape[1:3] == (module_pixels, module_pixels)


@pytest.mark.parametrize("norm", [None, "batch"])
def test_inception_convolutions_have_a_bias_only_without_bn(norm):
    model = Inception(**SMALL_INCEPTION, norm=norm)
    params = model.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), **INFERENCE)["params"]
    for name, layer in params.items():
        if name.startswith("Conv_"):
            assert ("bias" in layer) == (norm is None)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_inception_takes_mnist_and_cifar_sized_images(shape):
    model = Inception(**SMALL_INCEPTION)
    x = jnp.ones((2, *shape))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    assert model.apply(variables, x, **INFERENCE).shape == (2, 5)
    # The module's four branches concatenated: b1 + b3 + b5 + pool_proj channels.
    kernel = variables["params"][OUTPUT_LAYER]["kernel"]
    assert kernel.shape == (3 + 4 + 3 + 2, 5)


def test_inception_dropout_acts_before_the_classifier_only():
    model = Inception(**SMALL_INCEPTION, hidden_dropout=0.5)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, **INFERENCE)
    _, state = model.apply(variables, x, bn_mode="batch", noise=True,
                           rngs={"dropout": jax.random.key(3)}, mutable=["intermediates"],
                           capture_intermediates=True)
    dropped = [name for name in state["intermediates"] if name.startswith("Dropout")]
    assert dropped == ["Dropout_input", "Dropout_classifier"]  # the input's is off (rate 0)
    features = state["intermediates"]["Dropout_classifier"]["__call__"][0]
    assert features.shape == (3, 12) and float(jnp.mean(features == 0)) > 0.2


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_an_inception_net_trains_a_step_in_the_engine(activation):
    from conftest import tiny_config

    from bnreg import engine

    run = engine.build(tiny_config(**{
        "model.name": "inception", "model.activation": activation, "model.inception_stem": 4,
        "model.inception_modules": ((2, 2, 3, 2, 2, 2),), "probe.layers": (),
        "model.kernel_init": "he_normal"}))
    state, order = run.init(), run.empty_order()
    before = jax.device_get(state.params)
    state, _, losses = run.train(state, order, 2)
    assert np.isfinite(np.asarray(losses)).all()
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(before),
                                               jax.tree.leaves(state.params), strict=True))


def test_an_inception_net_refuses_probes():
    from conftest import tiny_config

    from bnreg import engine

    with pytest.raises(ValueError, match="inception net records no probes"):
        engine.check(tiny_config(**{"model.name": "inception"}))
