"""Reading metrics and summarising over seeds (bnreg/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bnreg.metrics import mean_confidence_interval, mean_std


def test_confidence_interval_is_the_student_t_interval_of_the_mean():
    # Mean 2, standard error 1/√3, t(0.975, 2 dof) = 4.302653: half width 2.484138.
    mean, low, high = mean_confidence_interval(np.array([1.0, 2.0, 3.0]))
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - 2.484138, 2.0 + 2.484138))


def test_a_wider_level_gives_a_wider_interval_and_one_value_bounds_nothing():
    values = np.array([0.1, 0.3, 0.2, 0.5])
    _, low_90, high_90 = mean_confidence_interval(values, level=0.90)
    _, low_99, high_99 = mean_confidence_interval(values, level=0.99)
    assert low_99 < low_90 < high_90 < high_99
    assert mean_confidence_interval(np.array([0.4]))[1:] == (-np.inf, np.inf)


def test_mean_std_uses_the_sample_std_and_zero_for_one_value():
    mean, std = mean_std(np.array([1.0, 3.0]))
    assert (mean, std) == pytest.approx((2.0, np.sqrt(2.0)))
    assert mean_std(np.array([5.0]))[1] == 0.0
