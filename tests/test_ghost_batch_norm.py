"""Tests for bnreg.core.ghost_batch_norm and the BatchNorm layer's ghost_size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_batch_norm import EPSILON, LAYOUTS, make_params, make_state, make_x

from bnreg.core import batch_norm, ghost_batch_norm
from bnreg.core.batch_norm import BatchNormState
from bnreg.layers import BatchNorm

MOMENTUM = 0.9
BATCH = 12


def ghosts_alone(x, params, state, ghost_size, backward="autodiff"):
    """Alg. 1 on each ghost by itself: outputs concatenated, and each ghost's new state."""
    outputs, states = [], []
    for start in range(0, x.shape[0], ghost_size):
        y, new_state = batch_norm(x[start:start + ghost_size], params, state, train=True,
                                  momentum=MOMENTUM, epsilon=EPSILON, backward=backward)
        outputs.append(y)
        states.append(new_state)
    return np.concatenate(outputs), states


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ghost_size", [2, 3, 6])
@pytest.mark.parametrize("backward", ["autodiff", "paper"])
def test_each_ghost_is_normalised_with_its_own_statistics(layout, ghost_size, backward):
    x, params, state = make_x(layout, batch=BATCH), make_params(), make_state()
    y, _ = jax.jit(ghost_batch_norm, static_argnames=("ghost_size", "train", "backward"))(
        x, params, state, ghost_size=ghost_size, train=True, momentum=MOMENTUM,
        epsilon=EPSILON, backward=backward)
    expected, _ = ghosts_alone(x, params, state, ghost_size, backward)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_ema_takes_one_step_with_the_ghosts_mean_unbiased_moments(layout):
    ghost_size = 4
    x, params, state = make_x(layout, batch=BATCH), make_params(), make_state()
    _, new_state = ghost_batch_norm(x, params, state, ghost_size=ghost_size, train=True,
                                    momentum=MOMENTUM, epsilon=EPSILON)
    ghosts = np.asarray(x, np.float64).reshape(BATCH // ghost_size, -1, x.shape[-1])
    m = ghosts.shape[1]  # values per feature in one ghost (× positions for a conv)
    mean = ghosts.mean(axis=1).mean(axis=0)
    var = (ghosts.var(axis=1) * m / (m - 1)).mean(axis=0)
    np.testing.assert_allclose(new_state.mean, MOMENTUM * state.mean + (1 - MOMENTUM) * mean,
                               rtol=1e-5)
    np.testing.assert_allclose(new_state.var, MOMENTUM * state.var + (1 - MOMENTUM) * var,
                               rtol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_one_ghost_of_the_whole_batch_is_batch_norm(train):
    x, params, state = make_x("dense", batch=BATCH), make_params(), make_state()
    ghost = ghost_batch_norm(x, params, state, ghost_size=BATCH, train=train,
                             momentum=MOMENTUM, epsilon=EPSILON)
    plain = batch_norm(x, params, state, train=train, momentum=MOMENTUM, epsilon=EPSILON)
    for a, b in zip(jax.tree.leaves(ghost), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_ghosts_gradient_is_the_sum_of_each_ghosts_own():
    ghost_size = 4
    x, params, state = make_x("dense", batch=BATCH), make_params(), make_state()
    upstream = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)

    def loss(x, function):
        return jnp.sum(function(x) * upstream)

    grad_ghost = jax.grad(loss)(x, lambda v: ghost_batch_norm(
        v, params, state, ghost_size=ghost_size, train=True, epsilon=EPSILON)[0])
    for start in range(0, BATCH, ghost_size):
        part = slice(start, start + ghost_size)
        grad_alone = jax.grad(lambda v, s=part: jnp.sum(batch_norm(
            v, params, state, train=True, epsilon=EPSILON)[0] * upstream[s]))(x[part])
        np.testing.assert_allclose(grad_ghost[part], grad_alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ghost_size", [0, 5, 24])
def test_a_ghost_size_that_does_not_divide_the_batch_is_an_error(ghost_size):
    x, params, state = make_x("dense", batch=BATCH), make_params(), make_state()
    with pytest.raises(ValueError, match=r"ghost_size \(\d+\) must be ≥ 1 and divide"):
        ghost_batch_norm(x, params, state, ghost_size=ghost_size, train=True)


def test_the_layer_uses_ghosts_in_training_and_the_statistics_at_inference():
    x = jnp.asarray(make_x("dense", batch=BATCH))
    layer = BatchNorm(momentum=MOMENTUM, ghost_size=3)
    variables = layer.init(jax.random.key(0), x, bn_mode="inference")
    y, updates = layer.apply(variables, x, bn_mode="batch", mutable=["batch_stats"])
    params = variables["params"]
    stats = variables["batch_stats"]
    core_params = type(make_params())(params["scale"], params["bias"])
    expected, new_state = ghost_batch_norm(
        x, core_params, BatchNormState(stats["mean"], stats["var"]), ghost_size=3, train=True,
        momentum=MOMENTUM)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], new_state.mean, rtol=1e-6)
    inference = layer.apply(variables, x, bn_mode="inference")
    plain = BatchNorm(momentum=MOMENTUM).apply(variables, x, bn_mode="inference")
    np.testing.assert_array_equal(inference, plain)


def test_the_layer_refuses_ghosts_with_an_axis_name():
    x = jnp.asarray(make_x("dense", batch=BATCH))
    with pytest.raises(ValueError, match="ghost_size or axis_name, not both"):
        BatchNorm(ghost_size=3, axis_name="data").init(jax.random.key(0), x, bn_mode="batch")
