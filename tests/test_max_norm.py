"""Tests for bnreg.max_norm: per-unit L2 projection and the optax transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnreg.max_norm import is_kernel, max_norm, project_max_norm

C = 3.0
# A projected column has norm c up to float32 rounding of the sum of squares, the sqrt and the
# rescaling: a relative error of a few ulps; 1e-6 is ~8 ulps.
NORM_RTOL = 1e-6


def _column_norms(kernel):
    kernel = np.asarray(kernel, np.float64)
    return np.sqrt(np.sum(kernel**2, axis=tuple(range(kernel.ndim - 1))))


def _params():
    """Flax-like params: a dense and a conv kernel with columns inside and outside the ball."""
    dense = jax.random.normal(jax.random.key(0), (8, 6))
    # Columns 0-2 well inside (norm ~0.3), column 3 zero, columns 4-5 far outside (norm ~28).
    dense = dense * jnp.array([0.1, 0.1, 0.1, 0.0, 10.0, 10.0])
    conv = jax.random.normal(jax.random.key(1), (3, 3, 2, 4)) * jnp.array([0.1, 5.0, 0.1, 5.0])
    return {
        "Dense_0": {"kernel": dense, "bias": jnp.full((6,), 50.0)},
        "Conv_0": {"kernel": conv, "bias": jnp.full((4,), -50.0)},
        "BatchNorm_0": {"scale": jnp.full((6,), 40.0), "bias": jnp.full((6,), 40.0)},
    }


PARAMS = _params()
KERNEL_PATHS = [("Dense_0", "kernel"), ("Conv_0", "kernel")]


@pytest.mark.parametrize("layer", ["Dense_0", "Conv_0"])
def test_every_column_norm_is_at_most_c_after_projection(layer):
    projected = project_max_norm(PARAMS, C)
    assert np.all(_column_norms(projected[layer]["kernel"]) <= C * (1 + NORM_RTOL))


@pytest.mark.parametrize("layer", ["Dense_0", "Conv_0"])
def test_columns_outside_are_rescaled_to_norm_c_along_their_direction(layer):
    kernel = PARAMS[layer]["kernel"]
    outside = _column_norms(kernel) > C
    assert outside.any()
    projected = np.asarray(project_max_norm(PARAMS, C)[layer]["kernel"])[..., outside]
    np.testing.assert_allclose(_column_norms(projected), C, rtol=NORM_RTOL)
    expected = kernel[..., outside] * (C / _column_norms(kernel)[outside])
    np.testing.assert_allclose(projected, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer", ["Dense_0", "Conv_0"])
def test_columns_inside_ball_are_unchanged_bit_for_bit(layer):
    kernel = np.asarray(PARAMS[layer]["kernel"])
    inside = _column_norms(kernel) <= C
    assert inside.any()
    projected = np.asarray(project_max_norm(PARAMS, C)[layer]["kernel"])
    np.testing.assert_array_equal(projected[..., inside], kernel[..., inside])


def test_zero_column_stays_zero_without_nan():
    projected = np.asarray(project_max_norm(PARAMS, C)["Dense_0"]["kernel"])
    np.testing.assert_array_equal(projected[:, 3], 0.0)
    assert np.all(np.isfinite(projected))


def test_biases_and_batch_norm_params_are_untouched():
    projected = project_max_norm(PARAMS, C)
    for layer in PARAMS:
        for name, value in PARAMS[layer].items():
            if (layer, name) not in KERNEL_PATHS:
                np.testing.assert_array_equal(projected[layer][name], value)


def test_default_predicate_selects_only_kernels_of_rank_at_least_two():
    selected = []
    jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            selected.append(jax.tree_util.keystr(path)) if is_kernel(path, leaf) else None
        ),
        {**PARAMS, "odd": {"kernel": jnp.ones((3,))}},
    )
    assert sorted(selected) == ["['Conv_0']['kernel']", "['Dense_0']['kernel']"]


def test_predicate_matching_no_leaf_returns_params_unchanged():
    projected = project_max_norm(PARAMS, C, predicate=lambda path, leaf: False)
    jax.tree.map(np.testing.assert_array_equal, projected, PARAMS)


def test_vmap_over_max_value_projects_to_each_radius():
    radii = jnp.array([0.5, 1.0, 2.0])
    kernels = jax.vmap(lambda c: project_max_norm(PARAMS, c)["Dense_0"]["kernel"])(radii)
    for radius, kernel in zip(radii, kernels, strict=True):
        assert np.all(_column_norms(kernel) <= float(radius) * (1 + NORM_RTOL))


def _mlp(params, x):
    hidden = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return hidden @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


def _max_column_norm_during_sgd(optimizer, steps=100):
    """Trains a 2-layer MLP on random regression; returns per-step max column norm per kernel."""
    keys = jax.random.split(jax.random.key(2), 6)
    x = jax.random.normal(keys[0], (64, 8))
    y = 10.0 * jax.random.normal(keys[1], (64, 3))
    params = {
        "Dense_0": {"kernel": jax.random.normal(keys[2], (8, 16)), "bias": jnp.zeros(16)},
        "Dense_1": {"kernel": jax.random.normal(keys[3], (16, 3)), "bias": jnp.zeros(3)},
    }

    def loss(params):
        return jnp.mean(jnp.square(_mlp(params, x) - y))

    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        norms = [
            jnp.max(jnp.linalg.norm(params[layer]["kernel"], axis=0))
            for layer in ("Dense_0", "Dense_1")
        ]
        return (params, state), jnp.stack(norms)

    _, norms = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return np.asarray(norms)


SGD_LEARNING_RATE = 0.5


def test_sgd_chain_keeps_every_column_within_c_for_100_steps():
    norms = _max_column_norm_during_sgd(optax.chain(optax.sgd(SGD_LEARNING_RATE), max_norm(C)))
    assert np.all(norms <= C * (1 + NORM_RTOL))
    assert np.any(norms >= C * (1 - NORM_RTOL))  # the constraint was active


def test_same_sgd_without_max_norm_leaves_the_ball():
    # Makes the previous test meaningful: unconstrained, this learning rate drives columns far
    # beyond c (and then diverges to NaN, hence nanmax).
    norms = _max_column_norm_during_sgd(optax.sgd(SGD_LEARNING_RATE))
    assert np.nanmax(norms) > 2 * C


def test_max_norm_update_returns_projected_minus_params():
    updates = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), PARAMS)
    new_updates, _ = max_norm(C).update(updates, optax.EmptyState(), PARAMS)
    expected = project_max_norm(jax.tree.map(jnp.add, PARAMS, updates), C)
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6),
        optax.apply_updates(PARAMS, new_updates),
        expected,
    )


def test_project_jit_and_no_jit_agree():
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.jit(lambda p: project_max_norm(p, C))(PARAMS),
        project_max_norm(PARAMS, C),
    )


def test_max_norm_update_jit_and_no_jit_agree():
    transform = max_norm(C)
    updates = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), PARAMS)
    update = lambda u, p: transform.update(u, optax.EmptyState(), p)[0]  # noqa: E731
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
        jax.jit(update)(updates, PARAMS),
        update(updates, PARAMS),
    )


@pytest.mark.parametrize("jit", [False, True])
def test_max_norm_update_without_params_raises(jit):
    transform = max_norm(C)
    update = lambda u: transform.update(u, optax.EmptyState())  # noqa: E731
    with pytest.raises(ValueError, match="needs them"):
        (jax.jit(update) if jit else update)(PARAMS)


@pytest.mark.parametrize("max_value", [0.0, -1.0])
def test_non_positive_max_value_raises_in_transformation(max_value):
    with pytest.raises(ValueError, match="max_value"):
        max_norm(max_value)


@pytest.mark.parametrize("max_value", [0.0, -1.0])
@pytest.mark.parametrize("jit", [False, True])
def test_non_positive_max_value_raises_in_projection(max_value, jit):
    project = lambda p: project_max_norm(p, max_value)  # noqa: E731
    with pytest.raises(ValueError, match="max_value"):
        (jax.jit(project) if jit else project)(PARAMS)


def test_non_scalar_max_value_raises():
    with pytest.raises(TypeError, match="scalar"):
        project_max_norm(PARAMS, jnp.array([1.0, 2.0]))
