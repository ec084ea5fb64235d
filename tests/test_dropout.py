"""Tests for bnreg.core.dropout: Bernoulli dropout (both scalings), Gaussian dropout, MC averaging.

Statistical tests use fixed seeds and a tolerance of 5 standard errors computed from the known
variance of the estimator, never a hand-tuned constant.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnreg.core.dropconnect import dropconnect_dense
from bnreg.core.dropout import bernoulli_mask, dropout, gaussian_dropout, monte_carlo_average

NUM_KEYS = 4000
Z = 5.0  # standard errors allowed in statistical checks
X = jax.random.uniform(jax.random.key(1), (4, 8), minval=0.5, maxval=2.0)
KEYS = jax.random.split(jax.random.key(2), NUM_KEYS)


@functools.partial(jax.jit, static_argnames=("fn", "rate", "scaling"))
def _samples_over_keys(keys, x, *, fn, rate, scaling=None):
    extra = {} if scaling is None else {"scaling": scaling}
    return jax.vmap(lambda k: fn(k, x, rate=rate, **extra))(keys)


@pytest.mark.parametrize("scaling", ["inverted", "paper"])
def test_train_output_mean_equals_deterministic_output(scaling):
    rate = 0.3
    keep = 1.0 - rate
    samples = _samples_over_keys(KEYS, X, fn=dropout, rate=rate, scaling=scaling)
    expected = dropout(None, X, rate=rate, deterministic=True, scaling=scaling)
    # One sample is c·r·x with r ~ Bernoulli(keep), c = 1/keep (inverted) or 1 (paper).
    factor = 1.0 / keep if scaling == "inverted" else 1.0
    standard_error = factor * np.abs(X) * np.sqrt(keep * rate / NUM_KEYS)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - expected), Z * standard_error)


@pytest.mark.parametrize(("scaling", "test_factor"), [("inverted", 1.0), ("paper", 0.7)])
def test_deterministic_output_follows_scaling_convention(scaling, test_factor):
    out = dropout(None, X, rate=0.3, deterministic=True, scaling=scaling)
    np.testing.assert_allclose(out, test_factor * X, rtol=1e-6)


def test_inverted_kept_units_are_scaled_by_inverse_keep_probability():
    out = dropout(jax.random.key(0), X, rate=0.75)
    kept = out != 0
    np.testing.assert_allclose(out[kept], X[kept] / 0.25, rtol=1e-6)


def test_same_key_gives_same_mask():
    key = jax.random.key(3)
    np.testing.assert_array_equal(dropout(key, X, rate=0.5), dropout(key, X, rate=0.5))


def test_different_keys_give_different_masks():
    a = dropout(jax.random.key(3), X, rate=0.5)
    b = dropout(jax.random.key(4), X, rate=0.5)
    assert not np.array_equal(a != 0, b != 0)


def test_legacy_and_typed_keys_with_same_seed_give_same_output():
    typed = dropout(jax.random.key(5), X, rate=0.5)
    legacy = dropout(jax.random.PRNGKey(5), X, rate=0.5)
    np.testing.assert_array_equal(typed, legacy)


@pytest.mark.parametrize("broadcast_dims", [(1,), (0, 2), (-1,)])
def test_broadcast_dims_share_mask_along_those_axes(broadcast_dims):
    ones = jnp.ones((6, 5, 4))
    kept = np.asarray(dropout(jax.random.key(6), ones, rate=0.5, broadcast_dims=broadcast_dims))
    kept = kept != 0
    for dim in broadcast_dims:
        first = np.take(kept, [0], axis=dim)
        np.testing.assert_array_equal(kept, np.broadcast_to(first, kept.shape))
    assert kept.any() and not kept.all()  # the shared mask is still random


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_fraction_dropped_matches_rate(rate):
    ones = jnp.ones((100, 200))
    dropped = float(jnp.mean(dropout(jax.random.key(7), ones, rate=rate) == 0))
    standard_error = np.sqrt(rate * (1 - rate) / ones.size)
    assert abs(dropped - rate) < Z * standard_error


@pytest.mark.parametrize("scaling", ["inverted", "paper"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_rate_zero_returns_input_without_needing_a_key(scaling, deterministic):
    out = dropout(None, X, rate=0.0, deterministic=deterministic, scaling=scaling)
    np.testing.assert_array_equal(out, X)


def test_gaussian_dropout_mean_is_input():
    rate = 0.4
    sigma2 = rate / (1 - rate)
    samples = _samples_over_keys(KEYS, X, fn=gaussian_dropout, rate=rate)
    standard_error = np.abs(X) * np.sqrt(sigma2 / NUM_KEYS)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - X), Z * standard_error)


def test_gaussian_dropout_variance_is_rate_over_keep_times_x_squared():
    rate = 0.4
    expected = rate / (1 - rate) * np.square(X)
    samples = _samples_over_keys(KEYS, X, fn=gaussian_dropout, rate=rate)
    # Samples are Gaussian: the sample variance has standard error sigma² sqrt(2 / (N - 1)).
    standard_error = expected * np.sqrt(2.0 / (NUM_KEYS - 1))
    np.testing.assert_array_less(np.abs(samples.var(axis=0, ddof=1) - expected), Z * standard_error)


def test_gaussian_dropout_deterministic_returns_input():
    np.testing.assert_array_equal(gaussian_dropout(None, X, rate=0.4, deterministic=True), X)


# A linear-then-softmax net with inverted dropout on its input: logits z = (r ⊙ x / p) W + b.
# Positive inputs and one-signed weight columns make the logits O(1) while their dropout noise is
# small (relative std sqrt(rate / (keep · n_in))), so weight scaling is accurate and a wrong
# scaling (logits off by a factor keep) would be far outside the tolerance.
MC_RATE = 0.2
MC_IN = 256
MC_X = jax.random.uniform(jax.random.key(8), (16, MC_IN), minval=0.5, maxval=1.5)
MC_W = (
    jax.random.uniform(jax.random.key(9), (MC_IN, 5), minval=0.5, maxval=1.5)
    * jnp.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    / MC_IN
)
MC_B = jnp.array([0.3, -0.2, 0.0, 0.1, -0.5])


def _linear_net(key, x, deterministic=False):
    return dropout(key, x, rate=MC_RATE, deterministic=deterministic) @ MC_W + MC_B


_jitted_average = jax.jit(
    monte_carlo_average, static_argnums=(0, 3), static_argnames=("batch_size",)
)


def test_monte_carlo_average_converges_to_deterministic_prediction():
    deterministic = jax.nn.softmax(_linear_net(None, MC_X, deterministic=True), axis=-1)
    # tr Cov(z) per example: Var z_j = (rate / keep) Σ_i x_i² W_ij².
    trace_cov = MC_RATE / (1 - MC_RATE) * (np.square(MC_X) @ np.square(MC_W)).sum(-1, keepdims=True)
    # Softmax has ‖∇s_c‖ ≤ √2/4 and ‖∇²s_c‖ ≤ 2, so for every class c:
    #   |E[s_c(z)] - s_c(E z)| ≤ tr Cov(z)  (Taylor with remainder: the weight-scaling bias), and
    #   Std[s_c(z)] ≤ (√2/4) sqrt(tr Cov(z))  (Lipschitz), the standard error of one sample.
    lipschitz = np.sqrt(2.0) / 4.0
    errors = {}
    for k in (1, 2048):
        average = _jitted_average(_linear_net, jax.random.key(11), MC_X, k)
        errors[k] = np.abs(np.asarray(average) - np.asarray(deterministic))
        tolerance = trace_cov + Z * lipschitz * np.sqrt(trace_cov / k)
        np.testing.assert_array_less(errors[k], np.broadcast_to(tolerance, errors[k].shape))
    assert errors[2048].mean() < errors[1].mean()


def test_monte_carlo_average_is_mean_of_softmax_over_split_keys():
    key = jax.random.key(12)
    average = _jitted_average(_linear_net, key, MC_X, 3)
    keys = jax.random.split(key, 3)
    expected = sum(jax.nn.softmax(_linear_net(k, MC_X), axis=-1) for k in keys) / 3
    np.testing.assert_allclose(average, expected, rtol=1e-5, atol=1e-7)


def test_monte_carlo_average_with_batch_size_matches_vmap():
    key = jax.random.key(13)
    full = _jitted_average(_linear_net, key, MC_X, 5)
    batched = _jitted_average(_linear_net, key, MC_X, 5, batch_size=2)  # 2 + 2 + remainder 1
    np.testing.assert_allclose(batched, full, rtol=1e-5, atol=1e-7)


CALLS = {
    "dropout_inverted": lambda k, x: dropout(k, x, rate=0.5),
    "dropout_paper": lambda k, x: dropout(k, x, rate=0.5, scaling="paper"),
    "dropout_broadcast": lambda k, x: dropout(k, x, rate=0.5, broadcast_dims=(0,)),
    "gaussian_dropout": lambda k, x: gaussian_dropout(k, x, rate=0.5),
    "monte_carlo_average": lambda k, x: monte_carlo_average(_linear_net, k, x, 3),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_jit_and_no_jit_agree(name):
    call = CALLS[name]
    x = MC_X if name == "monte_carlo_average" else X
    key = jax.random.key(14)
    np.testing.assert_allclose(jax.jit(call)(key, x), call(key, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", [dropout, gaussian_dropout])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("jit", [False, True])
def test_rate_outside_unit_interval_raises(fn, rate, jit):
    call = lambda x: fn(jax.random.key(0), x, rate=rate)  # noqa: E731
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        (jax.jit(call) if jit else call)(X)


# name -> call(key, x, rate); the rate-dependent paths of both functions.
RATE_CALLS = {
    "dropout_inverted": lambda k, x, r: dropout(k, x, rate=r),
    "dropout_inverted_deterministic": lambda k, x, r: dropout(k, x, rate=r, deterministic=True),
    "dropout_paper": lambda k, x, r: dropout(k, x, rate=r, scaling="paper"),
    "dropout_paper_deterministic": lambda k, x, r: dropout(
        k, x, rate=r, scaling="paper", deterministic=True
    ),
    "dropout_broadcast": lambda k, x, r: dropout(k, x, rate=r, broadcast_dims=(0,)),
    "gaussian_dropout": lambda k, x, r: gaussian_dropout(k, x, rate=r),
    "gaussian_dropout_deterministic": lambda k, x, r: gaussian_dropout(
        k, x, rate=r, deterministic=True
    ),
}
SWEPT_RATES = [0.0, 0.2, 0.3, 0.5]


@pytest.mark.parametrize("name", sorted(RATE_CALLS))
def test_vmap_over_rates_equals_separate_calls_bit_for_bit(name):
    # p = 1 - rate is computed the same way for a traced and a concrete rate, so each member of a
    # sweep draws the same mask (or noise) and scales by the same number as its own call.
    call, key = RATE_CALLS[name], jax.random.key(15)
    swept = jax.vmap(lambda rate: call(key, X, rate))(jnp.asarray(SWEPT_RATES))
    for member, rate in zip(swept, SWEPT_RATES, strict=True):
        np.testing.assert_array_equal(member, call(key, X, rate))


@pytest.mark.parametrize("name", sorted(RATE_CALLS))
def test_traced_rate_zero_returns_input_bit_for_bit(name):
    call = RATE_CALLS[name]
    out = jax.jit(lambda key, x, rate: call(key, x, rate))(jax.random.key(16), X, 0.0)
    np.testing.assert_array_equal(out, X)


@pytest.mark.parametrize("fn", [dropout, gaussian_dropout])
def test_traced_rate_without_a_key_raises(fn):
    # A traced rate might be non-zero, so the static no-key fast path cannot be taken.
    with pytest.raises(ValueError, match=r"pass a key.*deterministic=True"):
        jax.jit(lambda x, rate: fn(None, x, rate=rate))(X, 0.0)


@functools.partial(jax.jit, static_argnames=("scaling",))
def _samples_over_keys_with_traced_rate(keys, x, rate, *, scaling):
    return jax.vmap(lambda k: dropout(k, x, rate=rate, scaling=scaling))(keys)


@pytest.mark.parametrize("scaling", ["inverted", "paper"])
def test_train_output_mean_equals_deterministic_output_with_traced_rate(scaling):
    rate = 0.3
    keep = 1.0 - rate
    samples = _samples_over_keys_with_traced_rate(KEYS, X, rate, scaling=scaling)
    expected = dropout(None, X, rate=rate, deterministic=True, scaling=scaling)
    factor = 1.0 / keep if scaling == "inverted" else 1.0
    standard_error = factor * np.abs(X) * np.sqrt(keep * rate / NUM_KEYS)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - expected), Z * standard_error)


@pytest.mark.parametrize("fn", [dropout, gaussian_dropout])
@pytest.mark.parametrize("rate", ["0.5", b"0.5", False])
def test_a_rate_that_is_not_a_number_raises(fn, rate):
    with pytest.raises(TypeError, match="must be a number"):
        fn(jax.random.key(0), X, rate=rate)


@pytest.mark.parametrize("fn", [dropout, gaussian_dropout])
@pytest.mark.parametrize("jit", [False, True])
def test_non_scalar_rate_raises(fn, jit):
    call = lambda x, rate: fn(jax.random.key(0), x, rate=rate)  # noqa: E731
    with pytest.raises(TypeError, match="scalar"):
        (jax.jit(call) if jit else call)(X, jnp.array([0.1, 0.2]))


@pytest.mark.parametrize("fn", [dropout, gaussian_dropout])
@pytest.mark.parametrize("jit", [False, True])
def test_missing_key_in_training_mode_raises(fn, jit):
    call = lambda x: fn(None, x, rate=0.5)  # noqa: E731
    with pytest.raises(ValueError, match=r"pass a key.*deterministic=True"):
        (jax.jit(call) if jit else call)(X)


@pytest.mark.parametrize("jit", [False, True])
def test_unknown_scaling_raises(jit):
    call = lambda x: dropout(jax.random.key(0), x, rate=0.5, scaling="weights")  # noqa: E731
    with pytest.raises(ValueError, match="scaling"):
        (jax.jit(call) if jit else call)(X)


def test_broadcast_dim_out_of_range_raises():
    with pytest.raises(ValueError, match="broadcast_dims"):
        dropout(jax.random.key(0), X, rate=0.5, broadcast_dims=(2,))


def test_traced_deterministic_flag_raises():
    with pytest.raises(TypeError, match="deterministic"):
        jax.jit(lambda x, d: dropout(jax.random.key(0), x, rate=0.5, deterministic=d))(X, True)


@pytest.mark.parametrize("num_samples", [0, -3])
@pytest.mark.parametrize("jit", [False, True])
def test_monte_carlo_num_samples_below_one_raises(num_samples, jit):
    call = lambda x: monte_carlo_average(_linear_net, jax.random.key(0), x, num_samples)  # noqa: E731
    with pytest.raises(ValueError, match="num_samples"):
        (jax.jit(call) if jit else call)(MC_X)


def test_monte_carlo_batch_size_below_one_raises():
    with pytest.raises(ValueError, match="batch_size"):
        monte_carlo_average(_linear_net, jax.random.key(0), MC_X, 4, batch_size=0)


# --------------------------------------------------------------------------------------------
# The 16-bit mask sampler (bernoulli_mask(bits=16))
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.8, 0.95])
def test_16_bit_masks_keep_each_entry_with_probability_p(keep):
    mask = bernoulli_mask(jax.random.key(0), jnp.asarray(keep), (1000, 1001), bits=16)
    n = mask.size
    assert abs(float(mask.mean()) - keep) < 5 * np.sqrt(keep * (1 - keep) / n)


@pytest.mark.parametrize("keep, threshold", [(1.0, 65536), (2.0**-16, 1), (0.3, 19661)])
def test_16_bit_masks_resolve_p_to_a_multiple_of_2_to_the_minus_16(keep, threshold):
    # Every 16-bit value below round(p·2^16) keeps: p = 1 keeps all, p = 2^-16 one value.
    mask = bernoulli_mask(jax.random.key(1), jnp.asarray(keep), (4096, 64), bits=16)
    expected = threshold / 65536
    assert abs(float(mask.mean()) - expected) < 5 * np.sqrt(max(expected * (1 - expected),
                                                                1e-12) / mask.size) + 1e-12


def test_16_bit_masks_two_halves_of_a_word_and_neighbours_are_uncorrelated():
    mask = np.asarray(bernoulli_mask(jax.random.key(2), jnp.asarray(0.5), (2_000_000,), bits=16))
    half = mask.size // 2  # entry j and entry j + half come from the same 32-bit word
    bound = 5 / np.sqrt(half)
    assert abs(np.corrcoef(mask[:half], mask[half:])[0, 1]) < bound
    assert abs(np.corrcoef(mask[:-1], mask[1:])[0, 1]) < bound


def test_16_bit_dropout_is_unbiased_and_same_key_gives_same_mask():
    x = jnp.linspace(-2.0, 2.0, 64)
    keys = jax.random.split(jax.random.key(3), 50_000)
    samples = jax.vmap(lambda k: dropout(k, x, rate=0.5, mask_bits=16))(keys)
    np.testing.assert_allclose(samples.mean(0), x, atol=5 * 2.0 / np.sqrt(50_000))
    once, again = (dropout(jax.random.key(4), x, rate=0.5, mask_bits=16) for _ in range(2))
    np.testing.assert_array_equal(once, again)


def test_16_bit_dropout_at_a_traced_rate_equals_the_concrete_calls_and_0_is_identity():
    x = jax.random.normal(jax.random.key(5), (8, 33))
    key = jax.random.key(6)
    rates = jnp.array([0.0, 0.2, 0.5])
    swept = jax.vmap(lambda r: dropout(key, x, rate=r, mask_bits=16))(rates)
    for rate, out in zip([0.0, 0.2, 0.5], swept, strict=True):
        np.testing.assert_array_equal(out, dropout(key, x, rate=rate, mask_bits=16))
    np.testing.assert_array_equal(swept[0], x)


def test_unknown_mask_bits_are_an_error():
    with pytest.raises(ValueError, match="bits must be one of"):
        dropout(jax.random.key(0), jnp.ones(3), rate=0.5, mask_bits=8)


@pytest.mark.parametrize("fn", [
    lambda key, rate: dropout(key, jnp.ones((4, 8)), rate=rate, mask_bits=16),
    lambda key, rate: dropconnect_dense(key, jnp.ones((4, 8)), jnp.ones((8, 3)), rate=rate,
                                        mask_bits=16),
])
def test_a_keep_probability_below_a_16_bit_masks_resolution_is_an_error(fn):
    with pytest.raises(ValueError, match="use mask_bits=32"):
        fn(jax.random.key(0), 1 - 2.0**-18)
