"""Probes: histogram counts, per-unit percentiles, and the measures of sparsity."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bnreg import probes


def test_histogram_matches_numpy_and_puts_out_of_range_values_in_the_end_bins():
    rng = np.random.default_rng(0)
    # Values away from bin edges (centres ± 0.4 of a bin), plus some outside the range.
    inside = (rng.integers(0, 10, 500) + 0.5 + rng.uniform(-0.4, 0.4, 500)) / 10
    outside = np.array([-3.0, -0.2, 1.7, 9.0])
    counts = probes.histogram(
        jnp.asarray(np.concatenate([inside, outside]), jnp.float32), bins=10,
        value_range=(0.0, 1.0),
    )
    expected, _ = np.histogram(np.clip(np.concatenate([inside, outside]), 0, 1), 10, (0, 1))
    np.testing.assert_array_equal(counts, expected)
    assert int(counts.sum()) == 504


def test_histogram_weights_mask_padding():
    x = jnp.asarray([[0.1, 0.9], [0.5, 0.5]])
    counts = probes.histogram(
        x, bins=2, value_range=(0.0, 1.0), weights=jnp.asarray([[1.0, 1.0], [0.0, 0.0]])
    )
    np.testing.assert_array_equal(counts, [1.0, 1.0])


def test_unit_columns_take_every_spatial_position_as_a_sample():
    x = jnp.arange(2 * 3 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 3, 4)
    columns = probes.unit_columns(x, (1, 3))
    assert columns.shape == (18, 2)
    np.testing.assert_array_equal(columns[:, 0], x[..., 1].reshape(-1))


def test_unit_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="out of range"):
        probes.unit_columns(jnp.zeros((4, 3)), (3,))


def test_sown_without_probes_is_an_error_that_says_what_to_do():
    with pytest.raises(ValueError, match="mutable=\\['intermediates'\\]"):
        probes.sown({}, "preactivation")


@pytest.mark.parametrize("num", [1, 2, 7, 1000])
@pytest.mark.parametrize("q", [(15.0, 50.0, 85.0), (0.0, 100.0), (33.3,)])
def test_percentiles_equal_jnp_percentile(num, q):
    samples = jnp.asarray(np.random.default_rng(num).normal(size=(num, 3)), jnp.float32)
    expected = jnp.percentile(samples, jnp.asarray(q), axis=0).T
    np.testing.assert_allclose(probes.percentiles(samples, q), expected, rtol=1e-6, atol=1e-6)


def test_percentiles_with_ties_and_a_sorted_column():
    samples = jnp.asarray([[1.0, 0.0], [1.0, 1.0], [3.0, 2.0], [1.0, 3.0]])
    np.testing.assert_allclose(probes.percentiles(samples, (50.0, 100.0)), [[1, 3], [1.5, 3]])


@pytest.mark.parametrize("q", [(-1.0,), (101.0,), ()])
def test_percentiles_outside_0_100_are_an_error(q):
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        probes.percentiles(jnp.zeros((5, 2)), q)


def test_percentiles_of_a_column_with_a_nan_are_nan_as_jnp_percentile():
    samples = jnp.asarray([[1.0, 1.0], [jnp.nan, 2.0], [3.0, 3.0]])
    result = probes.percentiles(samples, (15.0, 50.0))
    assert np.isnan(result[0]).all()
    np.testing.assert_allclose(result[1], [1.3, 2.0], rtol=1e-6)


def test_percentiles_of_integers_interpolate_in_float():
    result = probes.percentiles(jnp.asarray([[1], [2], [3], [4]], jnp.int32), (50.0,))
    assert jnp.issubdtype(result.dtype, jnp.floating)
    np.testing.assert_allclose(result, [[2.5]])


@pytest.mark.parametrize(
    "bins, value_range, message",
    [(0, (0.0, 1.0), "bins must be ≥ 1"), (4, (1.0, 1.0), "high > low")],
)
def test_histogram_without_bins_or_with_an_empty_range_is_an_error(bins, value_range, message):
    with pytest.raises(ValueError, match=message):
        probes.histogram(jnp.zeros(3), bins=bins, value_range=value_range)


@pytest.mark.parametrize("row,expected", [
    ([3.0, 0.0, 0.0, 0.0], 1.0),  # one unit alone
    ([2.0, 2.0, 2.0, 2.0], 0.0),  # every unit equally
    ([1.0, 1.0, 0.0, 0.0], (2 - np.sqrt(2)) / (2 - 1)),  # √n = 2, ‖a‖₁/‖a‖₂ = √2
    ([0.0, 0.0, 0.0, 0.0], 1.0),  # no unit active: counted as maximally sparse
])
def test_hoyer_sparsity_of_known_rows(row, expected):
    assert probes.hoyer_sparsity(np.asarray([row]))[0] == pytest.approx(expected)


def test_hoyer_sparsity_does_not_change_when_the_activations_are_scaled():
    rows = np.abs(np.random.default_rng(0).normal(size=(5, 8)))
    np.testing.assert_allclose(probes.hoyer_sparsity(7.5 * rows), probes.hoyer_sparsity(rows))


def test_hoyer_sparsity_needs_two_units():
    with pytest.raises(ValueError, match="at least 2 units"):
        probes.hoyer_sparsity(np.ones((3, 1)))


def test_fraction_at_zero_counts_exact_zeros_only():
    assert probes.fraction_at_zero(np.asarray([[0.0, 1e-30], [0.0, 2.0]])) == 0.5
