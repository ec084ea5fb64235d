"""Models: BN placement (before the nonlinearity, no bias before it), conv BN per feature map."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnreg.models import MLP, OUTPUT_LAYER, ConvNet, is_hidden_kernel


@pytest.mark.parametrize("norm", [None, "batch"])
def test_dense_layers_have_a_bias_only_without_bn(norm):
    model = MLP(hidden_sizes=(5, 4), num_classes=3, norm=norm)
    params = model.init(jax.random.key(0), jnp.zeros((2, 6)), train=False)["params"]
    for index in range(2):
        assert ("bias" in params[f"Dense_{index}"]) == (norm is None)
        assert (f"BatchNorm_{index}" in params) == (norm == "batch")
    assert "bias" in params["Dense_out"]


def test_bn_sits_between_the_linear_map_and_the_nonlinearity():
    model = MLP(hidden_sizes=(4,), num_classes=2, norm="batch", activation="tanh")
    x = jax.random.normal(jax.random.key(1), (16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    preactivation = state["intermediates"]["preactivation_0"][0]
    activation = state["intermediates"]["activation_0"][0]
    # Normalised in training (γ = 1, β = 0 at init), then the nonlinearity.
    np.testing.assert_allclose(preactivation.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(preactivation.var(0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(activation, jnp.tanh(preactivation), rtol=1e-6)


def test_conv_bn_has_one_scale_and_shift_per_feature_map_normalised_over_positions():
    model = ConvNet(conv_features=(3,), hidden_sizes=(5,), num_classes=4, norm="batch")
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    assert variables["params"]["BatchNorm_0"]["scale"].shape == (3,)
    assert "bias" not in variables["params"]["Conv_0"]
    logits, state = model.apply(
        variables, x, train=True, mutable=["batch_stats", "intermediates"]
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


def test_dropconnect_mlp_is_stochastic_in_training_and_deterministic_in_evaluation():
    model = MLP(hidden_sizes=(6,), num_classes=2, dropconnect=0.5)
    x = jnp.ones((3, 4))
    variables = model.init(jax.random.key(0), x, train=False)
    train_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, train_b)
    # Evaluation is the plain network with the same weights (inverted scaling: mean inference).
    plain = MLP(hidden_sizes=(6,), num_classes=2)
    np.testing.assert_allclose(
        model.apply(variables, x, train=False), plain.apply(variables, x, train=False), rtol=1e-6
    )


@pytest.mark.parametrize("field,value", [("activation", "swish"), ("norm", "layer")])
def test_unknown_model_choices_are_errors(field, value):
    model = MLP(hidden_sizes=(2,), num_classes=2, **{field: value})
    with pytest.raises(ValueError, match=field):
        model.init(jax.random.key(0), jnp.zeros((2, 3)), train=False)


def test_hidden_kernels_are_every_kernel_but_the_output_layers():
    model = ConvNet(conv_features=(3,), hidden_sizes=(5,), num_classes=4)
    params = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), train=False)["params"]
    selected = jax.tree_util.tree_map_with_path(is_hidden_kernel, params)
    assert selected == {
        "Conv_0": {"kernel": True, "bias": False},
        "Dense_1": {"kernel": True, "bias": False},
        OUTPUT_LAYER: {"kernel": False, "bias": False},
    }


@pytest.mark.parametrize("rate", [-0.1, float("nan"), 1.0])
def test_a_dropconnect_rate_outside_0_1_is_an_error_not_off(rate):
    model = MLP(hidden_sizes=(6,), num_classes=2, dropconnect=rate)
    with pytest.raises(ValueError, match="rate"):
        model.init(jax.random.key(0), jnp.ones((3, 4)), train=False)
