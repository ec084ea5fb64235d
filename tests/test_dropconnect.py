"""Tests for bnreg.core.dropconnect: masked dense layer, its moments, Gaussian inference (Alg. 2).

Statistical tests use fixed seeds and a tolerance of 5 standard errors computed from the variance
of the estimator.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from bnreg.core.dropconnect import (
    _per_example_masked_matmul,
    dropconnect_dense,
    dropconnect_gaussian_inference,
    dropconnect_moments,
    gaussian_dropconnect_dense,
)

RATE = 0.4
NUM_KEYS = 4000
Z = 5.0  # standard errors allowed in statistical checks
X = jax.random.normal(jax.random.key(0), (6, 8))
KERNEL = jax.random.normal(jax.random.key(1), (8, 5))
BIAS = jax.random.normal(jax.random.key(2), (5,))
KEYS = jax.random.split(jax.random.key(3), NUM_KEYS)


def _dense(x, kernel, bias):
    return x @ kernel + bias


@functools.partial(jax.jit, static_argnames=("per_example",))
def _masked_samples(keys, x, *, per_example=True):
    """Pre-activations under NUM_KEYS independent real masks, shape (keys, batch, out)."""
    return jax.vmap(
        lambda k: dropconnect_dense(k, x, KERNEL, BIAS, rate=RATE, per_example=per_example)
    )(keys)


@pytest.fixture(scope="module")
def real_samples():
    """Per-example masked pre-activations of X under NUM_KEYS keys, shape (keys, batch, out)."""
    return np.asarray(_masked_samples(KEYS, X))


def _gaussian(key, activation, num_samples=NUM_KEYS, mask_bias=True):
    return dropconnect_gaussian_inference(
        key, X, KERNEL, BIAS, rate=RATE, activation=activation, num_samples=num_samples,
        mask_bias=mask_bias,
    )


def test_per_example_masks_differ_across_examples():
    repeated = jnp.tile(X[:1], (6, 1))
    out = np.asarray(dropconnect_dense(jax.random.key(4), repeated, KERNEL, BIAS, rate=RATE))
    for i in range(len(out)):
        for j in range(i):
            assert not np.array_equal(out[i], out[j]), (i, j)


@pytest.mark.parametrize("per_example", [True, False])
def test_the_bias_is_masked_like_a_weight_unless_asked_not_to(per_example):
    # With a zero input the pre-activation is the (masked) bias alone: each entry is 0 or b/p,
    # as the paper's bias is the weight of a constant input 1 under its own Bernoulli(p) mask.
    zeros = jnp.zeros((200, 8))
    masked = np.asarray(jax.vmap(
        lambda k: dropconnect_dense(k, zeros, KERNEL, BIAS, rate=RATE, per_example=per_example)
    )(KEYS[:50]))
    scaled = np.broadcast_to(np.asarray(BIAS) / (1 - RATE), masked.shape)
    dropped = masked == 0
    np.testing.assert_allclose(masked[~dropped], scaled[~dropped], rtol=1e-6)
    independent_masks = dropped.size if per_example else dropped.shape[0] * dropped.shape[2]
    standard_error = np.sqrt(RATE * (1 - RATE) / independent_masks)
    assert abs(dropped.mean() - RATE) < Z * standard_error
    unmasked = dropconnect_dense(
        KEYS[0], zeros, KERNEL, BIAS, rate=RATE, per_example=per_example, mask_bias=False
    )
    np.testing.assert_allclose(unmasked, np.broadcast_to(BIAS, unmasked.shape), rtol=1e-6)


@pytest.mark.parametrize("mask_bias", [True, False])
def test_moments_count_the_bias_variance_only_when_the_bias_is_masked(mask_bias):
    _, var = dropconnect_moments(jnp.zeros((2, 8)), KERNEL, BIAS, rate=RATE, mask_bias=mask_bias)
    expected = RATE / (1 - RATE) * np.square(BIAS) if mask_bias else np.zeros(5)
    np.testing.assert_allclose(var, np.broadcast_to(expected, var.shape), rtol=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda flag: dropconnect_dense(KEYS[0], X, KERNEL, BIAS, rate=RATE, mask_bias=flag),
        lambda flag: dropconnect_moments(X, KERNEL, BIAS, rate=RATE, mask_bias=flag),
        lambda flag: _gaussian(KEYS[0], jax.nn.relu, num_samples=2, mask_bias=flag),
    ],
    ids=["dense", "moments", "gaussian_inference"],
)
def test_mask_bias_must_be_a_static_bool(call):
    with pytest.raises(TypeError, match=r"mask_bias must be a Python \(or NumPy\) bool"):
        call(jnp.asarray(True))


def test_per_batch_mask_is_shared_by_every_example():
    repeated = jnp.tile(X[:1], (6, 1))
    out = np.asarray(
        dropconnect_dense(jax.random.key(4), repeated, KERNEL, BIAS, rate=RATE, per_example=False)
    )
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))
    assert not np.allclose(out[0], _dense(X[:1], KERNEL, BIAS)[0])  # a mask was applied


def test_per_batch_output_is_masked_kernel_over_keep():
    out = dropconnect_dense(jax.random.key(4), X, KERNEL, rate=RATE, per_example=False)
    # With one mask M for the batch, out = X (M ⊙ K) / p; the identity input (same key, so the
    # same mask) reads off (M ⊙ K) / p row by row.
    eye = jnp.eye(8)
    masked_kernel = dropconnect_dense(jax.random.key(4), eye, KERNEL, rate=RATE, per_example=False)
    np.testing.assert_allclose(out, X @ masked_kernel, rtol=1e-5, atol=1e-5)
    ratio = np.asarray(masked_kernel / KERNEL)
    np.testing.assert_allclose(ratio[ratio != 0], 1 / (1 - RATE), rtol=1e-6)


@pytest.mark.parametrize("per_example", [True, False])
def test_deterministic_equals_dense(per_example):
    out = dropconnect_dense(
        None, X, KERNEL, BIAS, rate=RATE, deterministic=True, per_example=per_example
    )
    np.testing.assert_allclose(out, _dense(X, KERNEL, BIAS), rtol=1e-6)


def test_rate_zero_equals_dense_without_a_key():
    np.testing.assert_allclose(
        dropconnect_dense(None, X, KERNEL, BIAS, rate=0.0), _dense(X, KERNEL, BIAS), rtol=1e-6
    )


@pytest.mark.parametrize("per_example", [True, False])
def test_mean_over_keys_matches_dense(per_example, real_samples):
    samples = real_samples if per_example else _masked_samples(KEYS, X, per_example=False)
    _, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE)
    standard_error = np.sqrt(var / NUM_KEYS)
    error = np.abs(samples.mean(axis=0) - _dense(X, KERNEL, BIAS))
    np.testing.assert_array_less(error, Z * standard_error)


def _variance_standard_error(samples):
    """Standard error of the sample variance: sqrt((m4 - s^4) / N), moments from the samples."""
    centred = samples - samples.mean(axis=0)
    m4 = np.mean(centred**4, axis=0)
    return np.sqrt((m4 - np.var(samples, axis=0) ** 2) / len(samples))


def test_moments_match_real_masked_pre_activations(real_samples):
    mean, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE)
    np.testing.assert_allclose(mean, _dense(X, KERNEL, BIAS), rtol=1e-6)
    error = np.abs(real_samples.var(axis=0, ddof=1) - var)
    np.testing.assert_array_less(error, Z * _variance_standard_error(real_samples))


def test_gaussian_inference_with_identity_matches_mean_of_real_masks(real_samples):
    gaussian_mean = _gaussian(jax.random.key(5), lambda u: u)
    _, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE)
    # Two independent means of NUM_KEYS samples each, both with variance var.
    standard_error = np.sqrt(2 * var / NUM_KEYS)
    error = np.abs(gaussian_mean - real_samples.mean(axis=0))
    np.testing.assert_array_less(error, Z * standard_error)


def test_gaussian_inference_variance_matches_variance_of_real_masks(real_samples):
    key = jax.random.key(6)
    # The same key draws the same u samples, so E[u²] - E[u]² is their (ddof=0) sample variance.
    gaussian_var = _gaussian(key, jnp.square) - jnp.square(_gaussian(key, lambda u: u))
    _, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE)
    gaussian_standard_error = var * np.sqrt(2.0 / NUM_KEYS)
    standard_error = np.hypot(gaussian_standard_error, _variance_standard_error(real_samples))
    error = np.abs(gaussian_var - real_samples.var(axis=0))
    np.testing.assert_array_less(error, Z * standard_error)


def _relu_closed_form():
    """E[relu u] and its sampling std for u ~ N(mean, var) of X's DropConnect moments: with
    t = μ/σ, E[relu u] = μΦ(t) + σφ(t) and E[relu² u] = (μ² + σ²)Φ(t) + μσφ(t)."""
    mean, var = (np.asarray(a, np.float64) for a in dropconnect_moments(X, KERNEL, BIAS, rate=RATE))
    std = np.sqrt(var)
    t = mean / std
    cdf, pdf = norm.cdf(t), norm.pdf(t)
    expected = mean * cdf + std * pdf
    second_moment = (mean**2 + var) * cdf + mean * std * pdf
    return expected, np.sqrt(second_moment - expected**2)


def test_gaussian_inference_relu_matches_closed_form_expectation():
    relu_mean = np.asarray(_gaussian(jax.random.key(7), jax.nn.relu), np.float64)
    expected, spread = _relu_closed_form()
    np.testing.assert_array_less(np.abs(relu_mean - expected), Z * spread / np.sqrt(NUM_KEYS))


def test_the_z_sample_estimate_converges_as_z_grows():
    expected, spread = _relu_closed_form()
    errors = []
    for num_samples in (16, 256, 4096):
        estimate = np.asarray(_gaussian(jax.random.key(8), jax.nn.relu, num_samples), np.float64)
        error = np.abs(estimate - expected)
        np.testing.assert_array_less(error, Z * spread / np.sqrt(num_samples))  # like 1/√Z
        errors.append(error.mean())
    assert errors[0] > errors[1] > errors[2], errors


def test_mean_inference_is_the_papers_mean_network_p_times_wv(real_samples):
    # The paper's layer has no 1/p: its masked sum (M ⊙ W)v is p × this module's, and its mean
    # network is p·Wv, p times the deterministic (inverted) layer.
    keep = 1 - RATE
    deterministic = dropconnect_dense(None, X, KERNEL, BIAS, rate=RATE, deterministic=True)
    _, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE)
    standard_error = keep * np.sqrt(var / NUM_KEYS)
    error = np.abs((keep * real_samples).mean(axis=0) - keep * np.asarray(deterministic))
    np.testing.assert_array_less(error, Z * standard_error)
    np.testing.assert_allclose(deterministic, _dense(X, KERNEL, BIAS), rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_result_does_not_depend_on_chunk_size(chunk_size):
    key = jax.random.key(8)
    reference = dropconnect_dense(key, X, KERNEL, BIAS, rate=RATE)  # one chunk of all 6 examples
    out = dropconnect_dense(key, X, KERNEL, BIAS, rate=RATE, chunk_size=chunk_size)
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("chunk_size", "mask_bits"), [(1, 32), (4, 16), (6, 16)])
def test_the_stored_mask_backward_is_autodiff_through_the_same_masks(chunk_size, mask_bits):
    """The backward pass reads the forward's masks (one byte per entry) instead of drawing them
    again: its gradients equal autodiff of ``x_b @ (M_b ⊙ K)`` with the masks drawn explicitly,
    for chunks that divide the batch and one that does not (4 of 6: a padded chunk)."""
    from bnreg.core.dropout import bernoulli_mask

    key, keep = jax.random.key(12), 1.0 - RATE
    cotangent = jax.random.normal(jax.random.key(13), (6, 5))
    masks = jnp.stack([bernoulli_mask(k, jnp.float32(keep), KERNEL.shape, bits=mask_bits)
                       for k in jax.random.split(key, 6)])

    def explicit(x, kernel):
        return jnp.sum(jnp.einsum("bi,bio->bo", x, masks * kernel) * cotangent)

    def layer(x, kernel):
        return jnp.sum(_per_example_masked_matmul(
            key, x, kernel, jnp.float32(keep), chunk_size=chunk_size, mask_bits=mask_bits,
            inverted=False) * cotangent)

    expected = jax.grad(explicit, argnums=(0, 1))(X, KERNEL)
    found = jax.jit(jax.grad(layer, argnums=(0, 1)))(X, KERNEL)
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_kernel_gradient_uses_the_forward_masks():
    # The layer is linear in the kernel (no bias), so <f(K), G> = <d<f(K), G>/dK, K> holds only
    # if the backward pass regenerates exactly the forward masks.
    key = jax.random.key(9)
    cotangent = jax.random.normal(jax.random.key(10), (6, 5))

    def inner(kernel):
        return jnp.sum(dropconnect_dense(key, X, kernel, rate=RATE, chunk_size=4) * cotangent)

    value, grad = jax.jit(jax.value_and_grad(inner))(KERNEL)
    np.testing.assert_allclose(jnp.sum(grad * KERNEL), value, rtol=1e-5)


CALLS = {
    "dense_per_example": lambda k: dropconnect_dense(k, X, KERNEL, BIAS, rate=RATE),
    "dense_per_batch": lambda k: dropconnect_dense(
        k, X, KERNEL, BIAS, rate=RATE, per_example=False
    ),
    "moments": lambda k: dropconnect_moments(X, KERNEL, BIAS, rate=RATE),
    "gaussian_inference": lambda k: _gaussian(k, jax.nn.relu, num_samples=16),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_jit_and_no_jit_agree(name):
    call = CALLS[name]
    key = jax.random.key(11)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
        jax.jit(call)(key),
        call(key),
    )


def test_legacy_and_typed_keys_with_same_seed_give_same_output():
    typed = dropconnect_dense(jax.random.key(12), X, KERNEL, rate=RATE)
    legacy = dropconnect_dense(jax.random.PRNGKey(12), X, KERNEL, rate=RATE)
    np.testing.assert_array_equal(typed, legacy)


BAD_SHAPES = {
    "x_inner_dim": (jnp.ones((6, 7)), KERNEL, None),
    "x_rank": (jnp.ones((8,)), KERNEL, None),
    "kernel_rank": (X, jnp.ones((8, 5, 1)), None),
    "bias_shape": (X, KERNEL, jnp.ones((4,))),
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
@pytest.mark.parametrize("jit", [False, True])
def test_shape_mismatch_raises(case, jit):
    x, kernel, bias = BAD_SHAPES[case]
    call = lambda x, kernel: dropconnect_dense(  # noqa: E731
        jax.random.key(0), x, kernel, bias, rate=RATE
    )
    with pytest.raises(ValueError, match="shape"):
        (jax.jit(call) if jit else call)(x, kernel)


@pytest.mark.parametrize("rate", [-0.5, 1.0])
@pytest.mark.parametrize("jit", [False, True])
def test_rate_outside_unit_interval_raises(rate, jit):
    call = lambda x: dropconnect_dense(jax.random.key(0), x, KERNEL, rate=rate)  # noqa: E731
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        (jax.jit(call) if jit else call)(X)


SWEPT_RATES = [0.0, 0.2, 0.3, 0.5]


@pytest.mark.parametrize("per_example", [True, False])
def test_vmap_over_rates_draws_the_masks_of_separate_calls(per_example):
    # On a one-hot input each pre-activation is one weight, 0 or K_ij / p: the zeros are the mask.
    key, eye = jax.random.key(13), jnp.eye(8)
    swept = jax.vmap(
        lambda r: dropconnect_dense(key, eye, KERNEL, rate=r, per_example=per_example)
    )(jnp.asarray(SWEPT_RATES))
    for member, rate in zip(swept, SWEPT_RATES, strict=True):
        alone = dropconnect_dense(key, eye, KERNEL, rate=rate, per_example=per_example)
        np.testing.assert_array_equal(member == 0, alone == 0)
        np.testing.assert_allclose(member, alone, rtol=1e-6)


@pytest.mark.parametrize("per_example", [True, False])
def test_vmap_over_rates_matches_separate_calls(per_example):
    # Same masks (previous test); the vmapped member computes its matvecs as a batched matmul over
    # the rates, which XLA rounds differently, so agreement is to float32 rounding for rate > 0.
    # The rate-0 member is the dense layer bit for bit.
    key = jax.random.key(14)
    swept = jax.vmap(
        lambda r: dropconnect_dense(key, X, KERNEL, BIAS, rate=r, per_example=per_example)
    )(jnp.asarray(SWEPT_RATES))
    np.testing.assert_array_equal(swept[0], _dense(X, KERNEL, BIAS))
    for member, rate in zip(swept, SWEPT_RATES, strict=True):
        alone = dropconnect_dense(key, X, KERNEL, BIAS, rate=rate, per_example=per_example)
        np.testing.assert_allclose(member, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask_bias", [True, False])
@pytest.mark.parametrize("per_example", [True, False])
def test_traced_rate_zero_is_the_dense_layer_bit_for_bit(per_example, mask_bias):
    layer = jax.jit(
        lambda key, x, rate: dropconnect_dense(
            key, x, KERNEL, BIAS, rate=rate, per_example=per_example, mask_bias=mask_bias
        )
    )
    dense = jax.jit(lambda x: _dense(x, KERNEL, BIAS))
    np.testing.assert_array_equal(layer(jax.random.key(15), X, 0.0), dense(X))


def test_traced_rate_without_a_key_raises():
    # A traced rate might be non-zero, so the static no-key fast path cannot be taken.
    with pytest.raises(ValueError, match=r"pass a key.*deterministic=True"):
        jax.jit(lambda x, r: dropconnect_dense(None, x, KERNEL, rate=r))(X, 0.0)


def test_eager_calls_with_new_rates_reuse_one_compilation():
    x = jnp.ones((3, 8))  # a shape no other test uses, so the first call compiles
    dropconnect_dense(jax.random.key(16), x, KERNEL, rate=0.1)
    compiled = _per_example_masked_matmul._cache_size()
    for rate in (0.2, 0.3, np.float32(0.4)):
        dropconnect_dense(jax.random.key(16), x, KERNEL, rate=rate)
    assert _per_example_masked_matmul._cache_size() == compiled


def test_moments_under_vmap_over_rates_match_separate_calls():
    rates = jnp.asarray(SWEPT_RATES)
    means, variances = jax.vmap(lambda r: dropconnect_moments(X, KERNEL, BIAS, rate=r))(rates)
    for mean, var, rate in zip(means, variances, SWEPT_RATES, strict=True):
        expected_mean, expected_var = dropconnect_moments(X, KERNEL, BIAS, rate=rate)
        np.testing.assert_array_equal(mean, expected_mean)
        np.testing.assert_allclose(var, expected_var, rtol=1e-6)


def test_gaussian_inference_with_traced_rate_matches_concrete_rate():
    key = jax.random.key(17)
    traced = jax.jit(
        lambda rate: dropconnect_gaussian_inference(
            key, X, KERNEL, BIAS, rate=rate, activation=jax.nn.relu, num_samples=16
        )
    )(RATE)
    np.testing.assert_allclose(traced, _gaussian(key, jax.nn.relu, num_samples=16), rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_non_scalar_rate_raises(jit):
    call = lambda x, r: dropconnect_dense(jax.random.key(0), x, KERNEL, rate=r)  # noqa: E731
    with pytest.raises(TypeError, match="scalar"):
        (jax.jit(call) if jit else call)(X, jnp.array([0.1, 0.2]))


@pytest.mark.parametrize("jit", [False, True])
def test_missing_key_in_training_mode_raises(jit):
    call = lambda x: dropconnect_dense(None, x, KERNEL, rate=RATE)  # noqa: E731
    with pytest.raises(ValueError, match=r"pass a key.*deterministic=True"):
        (jax.jit(call) if jit else call)(X)


@pytest.mark.parametrize("num_samples", [0, -1])
@pytest.mark.parametrize("jit", [False, True])
def test_gaussian_inference_num_samples_below_one_raises(num_samples, jit):
    call = lambda key: _gaussian(key, jax.nn.relu, num_samples=num_samples)  # noqa: E731
    with pytest.raises(ValueError, match="num_samples"):
        (jax.jit(call) if jit else call)(jax.random.key(0))


def test_chunk_size_below_one_raises():
    with pytest.raises(ValueError, match="chunk_size"):
        dropconnect_dense(jax.random.key(0), X, KERNEL, rate=RATE, chunk_size=0)


def test_16_bit_masks_are_the_cores_16_bit_bernoulli_draws():
    """Per batch, the mask is bernoulli_mask(key, p, shape, bits=16): (M ⊙ K) / p read off an
    identity input equals the kernel masked by that draw."""
    from bnreg.core.dropout import bernoulli_mask

    key, keep = jax.random.key(12), 1 - RATE
    eye = jnp.eye(8)
    masked = dropconnect_dense(key, eye, KERNEL, rate=RATE, per_example=False, mask_bits=16)
    expected = jnp.where(bernoulli_mask(key, jnp.float32(keep), KERNEL.shape, bits=16),
                         KERNEL, 0.0) / keep
    np.testing.assert_allclose(masked, expected, rtol=1e-6)


@pytest.mark.parametrize("per_example", [True, False])
def test_16_bit_masks_are_unbiased(per_example):
    samples = jax.jit(jax.vmap(lambda k: dropconnect_dense(
        k, X, KERNEL, BIAS, rate=RATE, per_example=per_example, mask_bits=16)))(KEYS)
    _, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE)
    error = np.abs(np.asarray(samples).mean(axis=0) - _dense(X, KERNEL, BIAS))
    np.testing.assert_array_less(error, Z * np.sqrt(var / NUM_KEYS))


def test_16_bit_per_example_masks_differ_across_examples_and_repeat_for_a_key():
    repeated = jnp.tile(X[:1], (6, 1))
    out = np.asarray(dropconnect_dense(jax.random.key(4), repeated, KERNEL, BIAS, rate=RATE,
                                       mask_bits=16))
    assert len({row.tobytes() for row in out}) == len(out)
    again = dropconnect_dense(jax.random.key(4), repeated, KERNEL, BIAS, rate=RATE, mask_bits=16)
    np.testing.assert_array_equal(out, again)


def test_16_bit_kernel_gradient_uses_the_forward_masks():
    key = jax.random.key(9)
    cotangent = jax.random.normal(jax.random.key(10), (6, 5))

    def inner(kernel):
        return jnp.sum(dropconnect_dense(key, X, kernel, rate=RATE, chunk_size=4, mask_bits=16)
                       * cotangent)

    value, grad = jax.jit(jax.value_and_grad(inner))(KERNEL)
    np.testing.assert_allclose(jnp.sum(grad * KERNEL), value, rtol=1e-5)


def test_mask_bits_other_than_32_or_16_are_an_error():
    with pytest.raises(ValueError, match="mask_bits"):
        dropconnect_dense(jax.random.key(0), X, KERNEL, rate=RATE, mask_bits=8)


@pytest.mark.parametrize("per_example", [True, False])
@pytest.mark.parametrize("mask_bias", [True, False])
def test_the_papers_form_is_the_inverted_layer_without_its_factor_draw_for_draw(per_example,
                                                                                 mask_bias):
    key, keep = jax.random.key(20), 1 - RATE
    inverted = dropconnect_dense(key, X, KERNEL, BIAS, rate=RATE, per_example=per_example,
                                 mask_bias=mask_bias)
    paper = dropconnect_dense(key, X, KERNEL, BIAS, rate=RATE, per_example=per_example,
                              mask_bias=mask_bias, scaling="paper")
    expected = keep * inverted if mask_bias else keep * (inverted - BIAS) + BIAS
    np.testing.assert_allclose(paper, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_paper_form_kernel_is_the_inverted_layer_with_p_times_the_weights(deterministic):
    # The two forms are one network reparametrised (W_inverted = p W_paper), the bias too.
    key, keep = jax.random.key(21), 1 - RATE
    paper = dropconnect_dense(key, X, KERNEL, BIAS, rate=RATE, deterministic=deterministic,
                              scaling="paper")
    inverted = dropconnect_dense(key, X, keep * KERNEL, keep * BIAS, rate=RATE,
                                 deterministic=deterministic)
    np.testing.assert_allclose(paper, inverted, rtol=1e-5, atol=1e-5)


def test_the_papers_form_at_evaluation_is_its_mean_network_p_wv(real_samples):
    keep = 1 - RATE
    deterministic = dropconnect_dense(None, X, KERNEL, BIAS, rate=RATE, deterministic=True,
                                      scaling="paper")
    np.testing.assert_allclose(deterministic, keep * _dense(X, KERNEL, BIAS), rtol=1e-6)
    mean, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE, scaling="paper")
    samples = keep * real_samples  # the paper's masked sums under the same masks
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - mean),
                                 Z * np.sqrt(var / NUM_KEYS))


def test_the_papers_moments_are_p_wv_and_p_one_minus_p_w2v2(real_samples):
    keep = 1 - RATE
    mean, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE, scaling="paper")
    second = np.square(X) @ np.square(KERNEL) + np.square(BIAS)
    np.testing.assert_allclose(mean, keep * _dense(X, KERNEL, BIAS), rtol=1e-6)
    np.testing.assert_allclose(var, keep * (1 - keep) * second, rtol=1e-5)
    # and the variance of the real masked sums
    sample_var = (keep * real_samples).var(axis=0, ddof=1)
    np.testing.assert_allclose(sample_var, var, rtol=Z * np.sqrt(2 / (NUM_KEYS - 1)))


def test_gaussian_inference_in_the_papers_form_samples_the_papers_moments():
    identity = dropconnect_gaussian_inference(
        jax.random.key(22), X, KERNEL, BIAS, rate=RATE, activation=lambda u: u,
        num_samples=NUM_KEYS, scaling="paper")
    mean, var = dropconnect_moments(X, KERNEL, BIAS, rate=RATE, scaling="paper")
    np.testing.assert_array_less(np.abs(identity - mean), Z * np.sqrt(var / NUM_KEYS))


@pytest.mark.parametrize("call", [
    lambda: dropconnect_dense(jax.random.key(0), X, KERNEL, rate=RATE, scaling="Paper"),
    lambda: dropconnect_moments(X, KERNEL, rate=RATE, scaling="scaled"),
])
def test_an_unknown_scaling_is_an_error(call):
    with pytest.raises(ValueError, match="scaling"):
        call()


# Gaussian DropConnect by the local reparameterization trick -----------------------------------


@pytest.mark.parametrize("scaling", ["inverted", "paper"])
def test_gaussian_dropconnect_draws_dropconnects_moments(scaling):
    """Over many keys, each pre-activation's mean and variance are DropConnect's
    (``dropconnect_moments``): unbiased, and its noise as large as the masks'."""
    keys = jax.random.split(jax.random.key(20), 20_000)
    draws = jax.vmap(lambda k: gaussian_dropconnect_dense(k, X, KERNEL, BIAS, rate=RATE,
                                                          scaling=scaling))(keys)
    mean, variance = dropconnect_moments(X, KERNEL, BIAS, rate=RATE, scaling=scaling)
    standard_error = np.sqrt(variance / len(keys))
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * standard_error)
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.05)


def test_gaussian_dropconnect_repeats_for_a_key_and_differs_across_keys_and_examples():
    first = gaussian_dropconnect_dense(jax.random.key(21), X, KERNEL, BIAS, rate=RATE)
    np.testing.assert_array_equal(
        first, gaussian_dropconnect_dense(jax.random.key(21), X, KERNEL, BIAS, rate=RATE))
    other = gaussian_dropconnect_dense(jax.random.key(22), X, KERNEL, BIAS, rate=RATE)
    assert not np.allclose(first, other)
    repeated = jnp.tile(X[:1], (6, 1))
    rows = np.asarray(gaussian_dropconnect_dense(jax.random.key(21), repeated, KERNEL, BIAS,
                                                 rate=RATE))
    assert len({row.tobytes() for row in rows}) == len(rows)


def test_gaussian_dropconnect_at_rate_zero_is_the_plain_layer_with_finite_gradients():
    plain = X @ KERNEL + BIAS
    np.testing.assert_array_equal(gaussian_dropconnect_dense(None, X, KERNEL, BIAS, rate=0.0),
                                  plain)

    def loss(kernel, rate):
        return jnp.sum(gaussian_dropconnect_dense(jax.random.key(23), X, kernel, BIAS,
                                                  rate=rate) ** 2)

    rates = jnp.asarray([0.0, 0.3, 0.6])
    values, gradients = jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0)))(
        KERNEL, rates)
    assert np.isfinite(np.asarray(gradients)).all()
    np.testing.assert_allclose(values[0], jnp.sum(plain**2), rtol=1e-6)
    assert len(set(np.asarray(values).tolist())) == 3  # one program, three members, all noisy
    np.testing.assert_array_equal(
        gaussian_dropconnect_dense(None, X, KERNEL, BIAS, rate=RATE, deterministic=True),
        dropconnect_moments(X, KERNEL, BIAS, rate=RATE)[0])


def test_gaussian_dropconnect_in_training_without_a_key_is_an_error():
    with pytest.raises(ValueError, match="key"):
        gaussian_dropconnect_dense(None, X, KERNEL, BIAS, rate=RATE)
