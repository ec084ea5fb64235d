"""Tests for bnreg.core.max_norm: per-unit L2 projection and the optax transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnreg.core.max_norm import is_kernel, max_norm, project_max_norm

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


@pytest.mark.parametrize("max_value", [0.0, -1.0, float("nan")])
def test_non_positive_max_value_raises_in_transformation(max_value):
    with pytest.raises(ValueError, match="max_value"):
        max_norm(max_value)


@pytest.mark.parametrize("max_value", [0.0, -1.0])
@pytest.mark.parametrize("jit", [False, True])
def test_non_positive_max_value_raises_in_projection(max_value, jit):
    project = lambda p: project_max_norm(p, max_value)  # noqa: E731
    with pytest.raises(ValueError, match="max_value"):
        (jax.jit(project) if jit else project)(PARAMS)


@pytest.mark.parametrize("max_value", [0.0, -1.0, float("nan")])
def test_a_traced_non_positive_max_value_is_no_constraint(max_value):
    projected = jax.jit(lambda c: project_max_norm(PARAMS, c))(jnp.float32(max_value))
    jax.tree.map(np.testing.assert_array_equal, projected, PARAMS)


@pytest.mark.parametrize("max_value", ["3.0", True])
def test_a_max_value_that_is_not_a_number_raises(max_value):
    with pytest.raises(TypeError, match="positive number"):
        project_max_norm(PARAMS, max_value)


def test_non_scalar_max_value_raises():
    with pytest.raises(TypeError, match="scalar"):
        project_max_norm(PARAMS, jnp.array([1.0, 2.0]))


# --- c = inf and updates inside the ball ---------------------------------------------------------

INF = float("inf")


def _sgd_momentum():
    return optax.sgd(0.05, momentum=0.9)


def _mlp_problem():
    """A small MLP regression: (params, loss)."""
    keys = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(keys[0], (16, 8))
    y = jax.random.normal(keys[1], (16, 3))
    params = {
        "Dense_0": {"kernel": jax.random.normal(keys[2], (8, 16)), "bias": jnp.zeros(16)},
        "Dense_1": {"kernel": jax.random.normal(keys[3], (16, 3)), "bias": jnp.zeros(3)},
    }
    return params, lambda params: jnp.mean(jnp.square(_mlp(params, x) - y))


def _eager_trajectory(optimizer, steps=4):
    """Per-step (gradients, params before the step, updates) of an eager training run."""
    params, loss = _mlp_problem()
    state = optimizer.init(params)
    trajectory = []
    for _ in range(steps):
        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        trajectory.append((grads, params, updates))
        params = optax.apply_updates(params, updates)
    return trajectory


def _assert_trees_equal(got, want):
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("max_value", [INF, jnp.inf, np.float32(np.inf)], ids=str)
def test_infinite_max_value_is_no_constraint(max_value):
    _assert_trees_equal(project_max_norm(PARAMS, max_value), PARAMS)


def test_infinite_max_value_leaves_sgd_with_momentum_bit_identical():
    plain = _eager_trajectory(_sgd_momentum())
    constrained = _eager_trajectory(optax.chain(_sgd_momentum(), max_norm(INF)))
    for (_, params, updates), (_, want_params, want_updates) in zip(
        constrained, plain, strict=True
    ):
        _assert_trees_equal(params, want_params)
        _assert_trees_equal(updates, want_updates)


def _updates_along(optimizer, grads, params):
    """The optimizer's updates for a given sequence of (stacked) gradients and params."""

    def step(state, grads_and_params):
        step_grads, step_params = grads_and_params
        updates, state = optimizer.update(step_grads, state, step_params)
        return state, updates

    initial = optimizer.init(jax.tree.map(lambda leaf: leaf[0], params))
    return jax.lax.scan(step, initial, (grads, params))[1]


def test_traced_infinite_max_value_under_jit_and_vmap_leaves_sgd_updates_bit_identical():
    # The gradients and params of one run are fed to both optimizers, so the comparison is of the
    # updates alone: two separately trained programs could also differ where XLA fuses sgd's
    # multiply-add into apply_updates differently (an FMA), which max_norm does not control.
    trajectory = _eager_trajectory(_sgd_momentum())
    grads, params = (
        jax.tree.map(lambda *leaves: jnp.stack(leaves), *[step[part] for step in trajectory])
        for part in (0, 1)
    )
    radii = jnp.array([1.0, INF, 3.0])
    swept = jax.jit(
        jax.vmap(lambda c: _updates_along(optax.chain(_sgd_momentum(), max_norm(c)), grads, params))
    )(radii)
    plain = jax.jit(lambda: _updates_along(_sgd_momentum(), grads, params))()
    _assert_trees_equal(jax.tree.map(lambda leaf: leaf[1], swept), plain)
    finite = jax.tree.map(lambda leaf: leaf[0], swept)["Dense_0"]["kernel"]
    assert not np.array_equal(finite, plain["Dense_0"]["kernel"])  # c = 1 was active


def _update_near_the_ball():
    """Small updates with many mantissa bits, so that (θ + Δ) − θ is not always Δ in float32."""
    return jax.tree.map(lambda p: 1e-3 * jax.random.normal(jax.random.key(4), p.shape), PARAMS)


@pytest.mark.parametrize("layer", ["Dense_0", "Conv_0"])
def test_columns_inside_the_ball_keep_their_update_bit_for_bit(layer):
    updates = _update_near_the_ball()
    param, update = np.asarray(PARAMS[layer]["kernel"]), np.asarray(updates[layer]["kernel"])
    inside = _column_norms(param + update) <= C
    assert inside.any() and (~inside).any()
    # What the old rule Π(θ + Δ) − θ would return for these columns, to show the test can fail.
    old_rule = (param + update) - param
    assert not np.array_equal(old_rule[..., inside], update[..., inside])
    new_updates, _ = max_norm(C).update(updates, optax.EmptyState(), PARAMS)
    got = np.asarray(new_updates[layer]["kernel"])
    np.testing.assert_array_equal(got[..., inside], update[..., inside])


@pytest.mark.parametrize("layer", ["Dense_0", "Conv_0"])
def test_projected_columns_have_norm_at_most_c_after_the_update(layer):
    updates = _update_near_the_ball()
    new_updates, _ = max_norm(C).update(updates, optax.EmptyState(), PARAMS)
    new_params = optax.apply_updates(PARAMS, new_updates)
    outside = _column_norms(PARAMS[layer]["kernel"] + updates[layer]["kernel"]) > C
    assert outside.any()
    np.testing.assert_allclose(
        _column_norms(new_params[layer]["kernel"])[outside], C, rtol=NORM_RTOL
    )
    assert np.all(_column_norms(new_params[layer]["kernel"]) <= C * (1 + NORM_RTOL))
