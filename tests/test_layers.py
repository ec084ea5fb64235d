"""The flax layers: what the wrappers add to the core — the collections they read and write,
the ``bn_mode``/``noise`` switches, traced momenta, and rates that leave a layer out."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnreg.layers import BatchNorm, DropConnectDense, Dropout

X = jax.random.normal(jax.random.key(0), (16, 3)) * 2.0 + 1.0


def init_bn(bn: BatchNorm) -> dict:
    return bn.init(jax.random.key(0), X, bn_mode="inference")


def test_batch_mode_updates_the_running_statistics_with_the_flax_momentum_convention():
    bn = BatchNorm(momentum=0.9)
    _, state = bn.apply(init_bn(bn), X, bn_mode="batch", mutable=["batch_stats"])
    m = X.shape[0]
    # From mean 0, var 1: running = 0.9·running + 0.1·batch, the variance Bessel-corrected.
    np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        state["batch_stats"]["var"], 0.9 + 0.1 * X.var(0) * m / (m - 1), rtol=1e-5
    )


def test_a_traced_momentum_updates_the_statistics_as_the_same_concrete_momentum():
    variables = init_bn(BatchNorm())

    @jax.jit
    def traced(momentum):
        return BatchNorm(momentum=momentum).apply(
            variables, X, bn_mode="batch", mutable=["batch_stats"]
        )[1]

    concrete = BatchNorm(momentum=0.9).apply(
        variables, X, bn_mode="batch", mutable=["batch_stats"]
    )[1]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), traced(jnp.float32(0.9)),
        concrete,
    )


def test_batch_mode_without_mutable_batch_stats_is_an_error():
    bn = BatchNorm()
    with pytest.raises(flax.errors.ModifyScopeVariableError, match="batch_stats"):
        bn.apply(init_bn(bn), X, bn_mode="batch")


def test_a_mutable_population_stats_collection_accumulates_the_layer_input():
    bn = BatchNorm()
    _, state = bn.apply(init_bn(bn), X, bn_mode="inference", mutable=["population_stats"])
    accumulator = state["population_stats"]["accumulator"]
    assert int(accumulator.num_batches) == 1
    np.testing.assert_allclose(accumulator.sum_batch_mean, X.mean(0), rtol=1e-5)


def test_population_stats_are_not_kept_unless_asked():
    bn = BatchNorm()
    _, state = bn.apply(init_bn(bn), X, bn_mode="batch", mutable=["batch_stats"])
    assert set(state) == {"batch_stats"}


def test_an_unknown_bn_mode_is_an_error():
    bn = BatchNorm()
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        bn.apply(init_bn(bn), X, bn_mode="train")


def test_dropout_with_a_concrete_rate_of_0_is_the_identity_and_needs_no_key():
    np.testing.assert_array_equal(Dropout(0.0).apply({}, X, noise=True), X)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_dropout_without_noise_is_the_identity(kind):
    np.testing.assert_array_equal(Dropout(0.5, kind=kind).apply({}, X, noise=False), X)


def test_dropout_noise_must_be_a_static_bool():
    with pytest.raises(TypeError, match="noise must be a Python"):
        Dropout(0.5).apply({}, X, noise=jnp.asarray(True), rngs={"dropout": jax.random.key(1)})


def test_an_unknown_dropout_kind_is_an_error():
    with pytest.raises(ValueError, match="kind must be one of"):
        Dropout(0.5, kind="uniform").apply({}, X, noise=False)


def test_gaussian_dropconnect_inference_without_an_activation_is_an_error():
    layer = DropConnectDense(4, 0.5, gaussian_samples=10)
    variables = layer.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X,
                           noise=True)
    with pytest.raises(ValueError, match="activation="):
        layer.apply(variables, X, noise=False, rngs={"dropout": jax.random.key(1)})
