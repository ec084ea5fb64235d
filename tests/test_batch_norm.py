"""Tests for bnreg.core.batch_norm: Alg. 1, EMA statistics, Alg. 2, sync BN, paper backward,
folding."""

import functools
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

import bnreg
import bnreg.core
from bnreg.core.batch_norm import (
    BatchNormParams,
    BatchNormState,
    batch_norm,
    fold_batch_norm,
    init_batch_norm,
    population_stats_finalize,
    population_stats_init,
    population_stats_update,
)

NUM_FEATURES = 4
NUM_SHARDS = 2
EPSILON = 1e-5
# Dense (N, F) and conv (N, H, W, F) activations; m = 12 and m' = N·H·W = 36.
SHAPES = {"dense": (12, NUM_FEATURES), "conv": (4, 3, 3, NUM_FEATURES)}
LAYOUTS = list(SHAPES)
BACKWARDS = ["autodiff", "paper"]
# Per-feature offsets and spreads, so that every feature has its own statistics.
FEATURE_LOC = np.array([-1.0, 0.0, 1.0, 3.0])
FEATURE_SCALE = np.array([0.5, 1.0, 2.0, 3.0])

batch_norm_jit = jax.jit(
    batch_norm, static_argnames=("train", "momentum", "epsilon", "axis_name", "backward")
)


def make_x(layout: str, seed: int = 0, batch: int | None = None) -> np.ndarray:
    shape = SHAPES[layout] if batch is None else (batch, *SHAPES[layout][1:])
    rng = np.random.default_rng(seed)
    return (FEATURE_LOC + FEATURE_SCALE * rng.standard_normal(shape)).astype(np.float32)


def make_params(seed: int = 1) -> BatchNormParams:
    rng = np.random.default_rng(seed)
    return BatchNormParams(
        scale=jnp.asarray(rng.uniform(0.5, 2.0, NUM_FEATURES), jnp.float32),
        bias=jnp.asarray(rng.standard_normal(NUM_FEATURES), jnp.float32),
    )


def make_state(seed: int = 2) -> BatchNormState:
    rng = np.random.default_rng(seed)
    return BatchNormState(
        mean=jnp.asarray(rng.standard_normal(NUM_FEATURES), jnp.float32),
        var=jnp.asarray(rng.uniform(0.5, 2.0, NUM_FEATURES), jnp.float32),
    )


def per_feature(x: np.ndarray) -> np.ndarray:
    """(..., F) -> (m, F) in float64: one row per value of the normalisation group."""
    return np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])


def shard(x: np.ndarray) -> np.ndarray:
    """Splits the batch axis into NUM_SHARDS equal shards: (N, ...) -> (D, N / D, ...)."""
    return x.reshape(NUM_SHARDS, x.shape[0] // NUM_SHARDS, *x.shape[1:])


def linear_loss(y: jax.Array, upstream: jax.Array) -> jax.Array:
    """A loss whose gradient with respect to y is the random ``upstream``."""
    return jnp.sum(y * upstream)


# --- Alg. 1: the training transform -------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_output_has_zero_mean_and_unit_variance_per_feature(layout):
    params, state = init_batch_norm(NUM_FEATURES)
    y, _ = batch_norm_jit(make_x(layout), params, state, train=True)
    y = per_feature(y)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scale_sqrt_var_plus_eps_and_bias_mean_recover_the_identity(layout):
    x = make_x(layout)
    rows = per_feature(x)
    params = BatchNormParams(
        scale=jnp.asarray(np.sqrt(rows.var(axis=0) + EPSILON), jnp.float32),
        bias=jnp.asarray(rows.mean(axis=0), jnp.float32),
    )
    y, _ = batch_norm_jit(x, params, make_state(), train=True, epsilon=EPSILON)
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ema_update_uses_flax_momentum_and_unbiased_batch_variance(layout):
    x, state, momentum = make_x(layout), make_state(), 0.9
    _, new_state = batch_norm_jit(x, make_params(), state, train=True, momentum=momentum)
    rows = per_feature(x)  # m = N (dense) or N·H·W (conv)
    expected_mean = momentum * np.asarray(state.mean) + (1 - momentum) * rows.mean(axis=0)
    expected_var = momentum * np.asarray(state.var) + (1 - momentum) * rows.var(axis=0, ddof=1)
    np.testing.assert_allclose(new_state.mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.var, expected_var, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vmap_over_traced_momenta_equals_separate_calls(layout):
    x, params, state = make_x(layout), make_params(), make_state()
    momenta = [0.0, 0.5, 0.9, 0.99, 1.0]
    ys, new_states = jax.vmap(
        lambda momentum: batch_norm(x, params, state, train=True, momentum=momentum)
    )(jnp.asarray(momenta))
    for i, momentum in enumerate(momenta):
        y, new_state = batch_norm(x, params, state, train=True, momentum=momentum)
        np.testing.assert_array_equal(ys[i], y)
        # A Python momentum forms 1 - momentum in float64 and a traced one in float32: the two
        # weights can differ by an ulp, so the statistics agree to float32 rounding.
        for got, want in zip(new_states, new_state, strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_running_statistics_receive_no_gradient(backward):
    def stats_sum(x):
        _, new_state = batch_norm(x, make_params(), make_state(), train=True, backward=backward)
        return jnp.sum(new_state.mean) + jnp.sum(new_state.var)

    grad = jax.grad(stats_sum)(make_x("dense"))
    np.testing.assert_array_equal(grad, 0.0)


# --- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_eval_mode_returns_the_state_unchanged(layout):
    state = make_state()
    _, new_state = batch_norm_jit(make_x(layout), make_params(), state, train=False)
    np.testing.assert_array_equal(new_state.mean, state.mean)
    np.testing.assert_array_equal(new_state.var, state.var)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_eval_mode_is_the_affine_map_of_the_state(layout):
    x, params, state = make_x(layout), make_params(), make_state()
    y, _ = batch_norm_jit(x, params, state, train=False, epsilon=EPSILON)
    scale, bias, mean, var = (np.asarray(a, np.float64) for a in (*params, *state))
    multiplier = scale / np.sqrt(var + EPSILON)
    expected = multiplier * x + (bias - mean * multiplier)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# --- the paper's backward pass ------------------------------------------------------------------


def loss_of_params(x, scale, bias, upstream, *, backward, state):
    y, _ = batch_norm(x, BatchNormParams(scale, bias), state, train=True, backward=backward)
    return linear_loss(y, upstream)


@functools.partial(jax.jit, static_argnames="backward")
def bn_grads(x, params, upstream, *, backward):
    loss = functools.partial(loss_of_params, backward=backward, state=make_state())
    return jax.grad(loss, argnums=(0, 1, 2))(x, params.scale, params.bias, upstream)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_paper_backward_equals_autodiff_for_x_scale_and_bias(layout):
    x, params = make_x(layout), make_params()
    upstream = make_x(layout, seed=3)
    paper = bn_grads(x, params, upstream, backward="paper")
    autodiff = bn_grads(x, params, upstream, backward="autodiff")
    for name, got, want in zip(("x", "scale", "bias"), paper, autodiff, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_paper_backward_matches_autodiff_under_shard_map_with_replicated_params():
    # A one-device mesh still types the replicated γ, β as invariant over "d", so this checks
    # that the custom backward returns parameter cotangents of the type shard_map expects.
    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    x, params, upstream = make_x("dense"), make_params(), make_x("dense", seed=3)

    def grads(backward):
        def local_grads(x, params, upstream):
            def loss(x, params):
                y, _ = batch_norm(
                    x, params, make_state(), train=True, axis_name="d", backward=backward
                )
                return linear_loss(y, upstream)

            return jax.grad(loss, argnums=(0, 1))(x, params)

        spec = PartitionSpec("d")
        mapped = jax.shard_map(
            local_grads,
            mesh=mesh,
            in_specs=(spec, PartitionSpec(), spec),
            out_specs=(spec, PartitionSpec()),
        )
        return jax.jit(mapped)(x, params, upstream)

    paper, autodiff = grads("paper"), grads("autodiff")
    for got, want in zip(jax.tree.leaves(paper), jax.tree.leaves(autodiff), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


TWO_DEVICE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from bnreg.core.batch_norm import batch_norm
from test_batch_norm import linear_loss, make_params, make_state, make_x

assert len(jax.devices()) == 2
layout = sys.argv[2]
x, params, upstream = make_x(layout), make_params(), make_x(layout, seed=3)

def loss(x, params, upstream, backward, axis_name=None):
    y, _ = batch_norm(
        x, params, make_state(), train=True, axis_name=axis_name, backward=backward
    )
    return linear_loss(y, upstream)

spec = PartitionSpec("d")
sharded = jax.jit(jax.shard_map(
    lambda x, params, upstream: jax.grad(loss, argnums=(0, 1))(
        x, params, upstream, "paper", "d"
    ),
    mesh=Mesh(np.array(jax.devices()), ("d",)),
    in_specs=(spec, PartitionSpec(), spec),
    out_specs=(spec, PartitionSpec()),
))
whole_batch = jax.grad(loss, argnums=(0, 1))(x, params, upstream, "autodiff")
print(json.dumps([
    float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max()))
    for a, b in zip(jax.tree.leaves(sharded(x, params, upstream)),
                    jax.tree.leaves(whole_batch), strict=True)
]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_paper_backward_over_two_devices_equals_autodiff_of_the_whole_batch(layout):
    # Each device holds half the batch; the paper's backward must psum its statistics' sums
    # and the parameter gradients so that both equal the gradient of BN over the whole batch.
    env = dict(
        os.environ,
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        XLA_FLAGS=f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
    )
    completed = subprocess.run(
        [sys.executable, "-c", TWO_DEVICE_SCRIPT, str(Path(__file__).parent), layout],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    relative_errors = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(relative_errors) == 3  # dx, dγ, dβ
    assert max(relative_errors) < 1e-5, relative_errors


# --- synchronised BN (axis_name) ----------------------------------------------------------------


synced_batch_norm = jax.jit(
    jax.vmap(
        functools.partial(batch_norm_jit, train=True, axis_name="d"),
        in_axes=(0, None, None),
        axis_name="d",
    )
)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synced_output_under_vmap_equals_output_on_the_concatenated_batch(layout):
    x, params, state = make_x(layout), make_params(), make_state()
    y_synced, _ = synced_batch_norm(shard(x), params, state)
    y_global, _ = batch_norm_jit(x, params, state, train=True)
    np.testing.assert_allclose(y_synced.reshape(x.shape), y_global, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synced_new_state_under_vmap_equals_new_state_on_the_concatenated_batch(layout):
    x, params, state = make_x(layout), make_params(), make_state()
    _, state_synced = synced_batch_norm(shard(x), params, state)
    _, state_global = batch_norm_jit(x, params, state, train=True)
    for synced, global_ in zip(state_synced, state_global, strict=True):
        for shard_value in synced:  # every shard holds the same, global, statistics
            np.testing.assert_allclose(shard_value, global_, rtol=1e-5, atol=1e-6)


def test_synced_training_accepts_one_example_per_shard_when_the_global_batch_is_larger():
    x = make_x("dense", batch=NUM_SHARDS)
    y_synced, _ = synced_batch_norm(shard(x), make_params(), make_state())
    y_global, _ = batch_norm_jit(x, make_params(), make_state(), train=True)
    np.testing.assert_allclose(y_synced.reshape(x.shape), y_global, rtol=1e-5, atol=1e-5)


@functools.partial(jax.jit, static_argnames="backward")
def synced_bn_grads(x_shards, params, upstream_shards, *, backward):
    def loss(x_shards, scale, bias):
        per_shard = jax.vmap(
            lambda x, upstream: linear_loss(
                batch_norm(
                    x,
                    BatchNormParams(scale, bias),
                    make_state(),
                    train=True,
                    axis_name="d",
                    backward=backward,
                )[0],
                upstream,
            ),
            axis_name="d",
        )(x_shards, upstream_shards)
        return jnp.sum(per_shard)

    return jax.grad(loss, argnums=(0, 1, 2))(x_shards, params.scale, params.bias)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_synced_gradients_under_vmap_equal_gradients_on_the_concatenated_batch(layout, backward):
    x, params, upstream = make_x(layout), make_params(), make_x(layout, seed=3)
    synced = synced_bn_grads(shard(x), params, shard(upstream), backward=backward)
    global_ = bn_grads(x, params, upstream, backward=backward)
    np.testing.assert_allclose(synced[0].reshape(x.shape), global_[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(synced[1], global_[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(synced[2], global_[2], rtol=1e-4, atol=1e-5)


# --- Alg. 2: population statistics --------------------------------------------------------------

NUM_BATCHES = 3


@jax.jit
def population_stats_of(batches):
    def step(acc, x):
        return population_stats_update(acc, x), None

    acc, _ = jax.lax.scan(step, population_stats_init(NUM_FEATURES), batches)
    return population_stats_finalize(acc)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_population_stats_equal_numpy_alg2_over_k_batches(layout):
    batches = np.stack([make_x(layout, seed=seed) for seed in range(NUM_BATCHES)])
    rows = [per_feature(batch) for batch in batches]
    m = rows[0].shape[0]  # N dense, N·H·W conv
    expected_mean = np.mean([r.mean(axis=0) for r in rows], axis=0)
    expected_var = m / (m - 1) * np.mean([r.var(axis=0) for r in rows], axis=0)
    stats = population_stats_of(batches)
    np.testing.assert_allclose(stats.mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.var, expected_var, rtol=1e-5)


def test_population_stats_of_unequal_batches_average_per_batch_unbiased_variances():
    batches = [make_x("dense", seed=0), make_x("dense", seed=1, batch=6)]
    acc = population_stats_init(NUM_FEATURES)
    for batch in batches:
        acc = population_stats_update(acc, batch)
    stats = population_stats_finalize(acc)
    rows = [per_feature(batch) for batch in batches]
    expected_var = np.mean([r.var(axis=0, ddof=1) for r in rows], axis=0)
    np.testing.assert_allclose(stats.var, expected_var, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synced_population_stats_under_vmap_equal_those_of_the_concatenated_batch(layout):
    x = make_x(layout)
    synced_update = jax.vmap(
        functools.partial(population_stats_update, axis_name="d"),
        in_axes=(None, 0),
        axis_name="d",
    )
    acc = synced_update(population_stats_init(NUM_FEATURES), shard(x))
    synced = population_stats_finalize(jax.tree.map(lambda leaf: leaf[0], acc))
    global_ = population_stats_of(x[None])
    np.testing.assert_allclose(synced.mean, global_.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(synced.var, global_.var, rtol=1e-5)


def test_population_stats_finalize_of_an_empty_accumulator_is_nan_under_jit():
    # Documented: the emptiness check needs a concrete count, so under jit it cannot fire.
    stats = jax.jit(population_stats_finalize)(population_stats_init(NUM_FEATURES))
    assert np.all(np.isnan(stats.mean)) and np.all(np.isnan(stats.var))


# --- folding into the preceding layer -----------------------------------------------------------


def conv_nhwc(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


LINEAR_LAYERS = {
    "dense": ((12, 3), (3, NUM_FEATURES), jnp.matmul),
    "conv": ((2, 4, 4, 3), (3, 3, 3, NUM_FEATURES), conv_nhwc),
}


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_folded_layer_equals_bn_inference_of_the_layer(layout, with_bias):
    x_shape, kernel_shape, apply = LINEAR_LAYERS[layout]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    kernel = rng.standard_normal(kernel_shape).astype(np.float32)
    bias = rng.standard_normal(NUM_FEATURES).astype(np.float32) if with_bias else None
    params, state = make_params(), make_state()
    pre_activation = apply(x, kernel) + (0.0 if bias is None else bias)
    expected, _ = batch_norm_jit(pre_activation, params, state, train=False, epsilon=EPSILON)
    folded_kernel, folded_bias = fold_batch_norm(kernel, bias, params, state, epsilon=EPSILON)
    np.testing.assert_allclose(
        apply(x, folded_kernel) + folded_bias, expected, rtol=1e-5, atol=1e-5
    )


# --- jit and eager agree ------------------------------------------------------------------------


def _accumulated(x):
    return population_stats_update(population_stats_init(NUM_FEATURES), x)


EAGER_VS_JIT = {
    "init_batch_norm": (lambda x: init_batch_norm(NUM_FEATURES), "dense"),
    "batch_norm_train_autodiff": (
        lambda x: batch_norm(x, make_params(), make_state(), train=True),
        "conv",
    ),
    "batch_norm_train_paper_grads": (
        lambda x: jax.grad(
            lambda x: jnp.sum(
                batch_norm(x, make_params(), make_state(), train=True, backward="paper")[0] ** 3
            )
        )(x),
        "conv",
    ),
    "batch_norm_eval": (lambda x: batch_norm(x, make_params(), make_state(), train=False), "conv"),
    "population_stats_update": (_accumulated, "conv"),
    "population_stats_finalize": (lambda x: population_stats_finalize(_accumulated(x)), "conv"),
    "fold_batch_norm": (
        lambda x: fold_batch_norm(x[0], x[1, 0, 0], make_params(), make_state()),
        "conv",
    ),
}


@pytest.mark.parametrize("name", list(EAGER_VS_JIT))
def test_jit_and_eager_agree(name):
    fn, layout = EAGER_VS_JIT[name]
    x = make_x(layout)
    eager, jitted = fn(x), jax.jit(fn)(x)
    for got, want in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bfloat16_input_keeps_its_dtype_in_output_and_gradient():
    x = jnp.asarray(make_x("dense"), jnp.bfloat16)
    y, _ = batch_norm(x, make_params(), make_state(), train=True, backward="paper")
    grad = jax.grad(
        lambda x: jnp.sum(batch_norm(x, make_params(), make_state(), train=True)[0] ** 2)
    )(x)
    assert y.dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16


# --- package layout ------------------------------------------------------------------------------


def test_top_level_batch_norm_is_the_core_function_not_a_module():
    core_module = importlib.import_module("bnreg.core.batch_norm")
    assert bnreg.batch_norm is core_module.batch_norm
    assert bnreg.core.batch_norm is core_module.batch_norm  # the bnreg.core re-export
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("bnreg.batch_norm")


# --- errors -------------------------------------------------------------------------------------


def _params(n=NUM_FEATURES):
    return init_batch_norm(n)[0]


def _state(n=NUM_FEATURES):
    return init_batch_norm(n)[1]


# name -> (function of x, x, exception, message fragment); all are static checks.
STATIC_ERRORS = {
    "train_with_one_value_per_feature": (
        lambda x: batch_norm(x, _params(), _state(), train=True),
        np.ones((1, NUM_FEATURES), np.float32),
        ValueError,
        "more than 1 example per feature",
    ),
    "train_with_an_empty_batch": (
        lambda x: batch_norm(x, _params(), _state(), train=True),
        np.ones((0, NUM_FEATURES), np.float32),
        ValueError,
        "got 0 value",
    ),
    "params_feature_size_mismatch": (
        lambda x: batch_norm(x, _params(NUM_FEATURES + 1), _state(), train=True),
        make_x("dense"),
        ValueError,
        "params.scale has shape",
    ),
    "state_feature_size_mismatch": (
        lambda x: batch_norm(x, _params(), _state(NUM_FEATURES + 1), train=False),
        make_x("conv"),
        ValueError,
        "state.mean has shape",
    ),
    "epsilon_zero": (
        lambda x: batch_norm(x, _params(), _state(), train=True, epsilon=0.0),
        make_x("dense"),
        ValueError,
        "epsilon must be > 0",
    ),
    "momentum_above_one": (
        lambda x: batch_norm(x, _params(), _state(), train=True, momentum=1.5),
        make_x("dense"),
        ValueError,
        r"momentum must be in \[0, 1\]",
    ),
    "momentum_below_zero": (
        lambda x: batch_norm(x, _params(), _state(), train=True, momentum=-0.1),
        make_x("dense"),
        ValueError,
        r"momentum must be in \[0, 1\]",
    ),
    "unknown_backward": (
        lambda x: batch_norm(x, _params(), _state(), train=True, backward="pytorch"),
        make_x("dense"),
        ValueError,
        "backward must be one of",
    ),
    "x_with_one_dim": (
        lambda x: batch_norm(x, _params(), _state(), train=False),
        np.ones(NUM_FEATURES, np.float32),
        ValueError,
        "ndim >= 2",
    ),
    "integer_x": (
        lambda x: batch_norm(x, _params(), _state(), train=False),
        np.ones((2, NUM_FEATURES), np.int32),
        TypeError,
        "floating-point",
    ),
    "population_update_with_one_value_per_feature": (
        lambda x: population_stats_update(population_stats_init(NUM_FEATURES), x),
        np.ones((1, NUM_FEATURES), np.float32),
        ValueError,
        "more than 1 example per feature",
    ),
    "population_update_with_an_empty_batch": (
        lambda x: population_stats_update(population_stats_init(NUM_FEATURES), x),
        np.ones((0, NUM_FEATURES), np.float32),
        ValueError,
        "got 0 value",
    ),
    "population_update_feature_size_mismatch": (
        lambda x: population_stats_update(population_stats_init(NUM_FEATURES + 1), x),
        make_x("conv"),
        ValueError,
        "acc.sum_batch_mean has shape",
    ),
    "population_update_x_with_one_dim": (
        lambda x: population_stats_update(population_stats_init(NUM_FEATURES), x),
        np.ones(NUM_FEATURES, np.float32),
        ValueError,
        "ndim >= 2",
    ),
    "fold_kernel_with_one_dim": (
        lambda x: fold_batch_norm(x, None, _params(), _state()),
        np.ones(NUM_FEATURES, np.float32),
        ValueError,
        "dense",
    ),
    "fold_feature_size_mismatch": (
        lambda x: fold_batch_norm(x, None, _params(), _state()),
        np.ones((3, NUM_FEATURES + 1), np.float32),
        ValueError,
        "params.scale has shape",
    ),
    "fold_bias_size_mismatch": (
        lambda x: fold_batch_norm(x, jnp.ones(NUM_FEATURES + 1), _params(), _state()),
        np.ones((3, NUM_FEATURES), np.float32),
        ValueError,
        "bias has shape",
    ),
    "train_traced": (
        lambda x: batch_norm(x, _params(), _state(), train=jnp.sum(x) > 0),
        np.ones((3, NUM_FEATURES), np.float32),
        TypeError,
        "train must be a Python \\(or NumPy\\) bool",
    ),
    "fold_epsilon_negative": (
        lambda x: fold_batch_norm(x, None, _params(), _state(), epsilon=-1.0),
        np.ones((3, NUM_FEATURES), np.float32),
        ValueError,
        "epsilon must be > 0",
    ),
}


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", list(STATIC_ERRORS))
def test_bad_input_raises(name, use_jit):
    fn, x, error, message = STATIC_ERRORS[name]
    with pytest.raises(error, match=message):
        (jax.jit(fn) if use_jit else fn)(x)


def test_synced_training_with_one_value_per_feature_across_all_shards_raises():
    one_shard_of_one_example = np.ones((1, 1, NUM_FEATURES), np.float32)
    synced = jax.vmap(
        lambda x: batch_norm(x, _params(), _state(), train=True, axis_name="d"), axis_name="d"
    )
    with pytest.raises(ValueError, match="more than 1 example per feature"):
        synced(one_shard_of_one_example)


@pytest.mark.parametrize("num_features", [0, -1, 2.0])
def test_init_with_non_positive_int_num_features_raises(num_features):
    with pytest.raises(ValueError, match="positive int"):
        init_batch_norm(num_features)


def test_finalize_of_an_empty_accumulator_raises():
    with pytest.raises(ValueError, match="population_stats_update"):
        population_stats_finalize(population_stats_init(NUM_FEATURES))
