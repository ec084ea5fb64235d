"""Members: the cross and zip of the sweep axes, which axes are traced, and their keys."""

from __future__ import annotations

import numpy as np
import pytest

from bnreg.config import AXES, default_config
from bnreg.engine.members import members_from_config


def test_no_sweep_is_one_member_at_the_fixed_values():
    config = default_config()
    config.seed, config.optimizer.learning_rate = 7, 0.3
    members = members_from_config(config)
    assert len(members) == 1 and members.swept == ()
    assert members.member(0)["seed"] == 7 and members.member(0)["learning_rate"] == 0.3


def test_axes_are_crossed_in_axis_order_with_the_seed_fastest():
    config = default_config()
    config.sweep.seed = (0, 1)
    config.sweep.hidden_dropout = (0.0, 0.5)
    config.sweep.learning_rate = (0.1, 1.0, 2.0)
    members = members_from_config(config)
    got = [(m["learning_rate"], m["hidden_dropout"], m["seed"]) for m in members]
    expected = [(lr, p, s) for lr in (0.1, 1.0, 2.0) for p in (0.0, 0.5) for s in (0, 1)]
    assert got == expected
    assert members.swept == ("learning_rate", "hidden_dropout", "seed")


def test_zipped_axes_advance_together():
    config = default_config()
    config.sweep.seed = (0, 1)
    config.sweep.input_dropout = (0.0, 0.2)
    config.sweep.hidden_dropout = (0.0, 0.5)
    config.sweep_zip = (("input_dropout", "hidden_dropout"),)
    members = members_from_config(config)
    got = [(m["input_dropout"], m["hidden_dropout"], m["seed"]) for m in members]
    assert got == [(0.0, 0.0, 0), (0.0, 0.0, 1), (0.2, 0.5, 0), (0.2, 0.5, 1)]


def test_an_axis_swept_over_one_value_is_a_constant():
    config = default_config()
    config.sweep.seed = (0, 1)
    config.sweep.hidden_dropout = (0.5,)
    members = members_from_config(config)
    assert members.swept == ("seed",)
    assert members.constant("hidden_dropout") == 0.5
    with pytest.raises(ValueError, match="is swept"):
        members.constant("seed")


def test_the_learning_rate_is_always_traced_and_swept_axes_are_per_member_arrays():
    config = default_config()
    config.sweep.seed = (0, 1, 2)
    config.sweep.max_norm = (0.0, 3.0)
    traced = members_from_config(config).traced()
    assert set(traced) == {"learning_rate", "max_norm", "seed"}
    np.testing.assert_array_equal(traced["max_norm"], [0, 0, 0, 3, 3, 3])
    assert traced["seed"].dtype == np.int32 and traced["max_norm"].dtype == np.float32


def test_every_member_has_a_value_on_every_axis():
    config = default_config()
    config.sweep.seed = (0, 1)
    for member in members_from_config(config):
        assert list(member) == list(AXES)


def test_members_of_one_seed_share_their_key():
    config = default_config()
    config.sweep.seed = (3, 4)
    config.sweep.hidden_dropout = (0.0, 0.5)
    keys = np.asarray(members_from_config(config).keys())
    np.testing.assert_array_equal(keys[0], keys[2])
    np.testing.assert_array_equal(keys[1], keys[3])
    assert not np.array_equal(keys[0], keys[1])


def test_uses_tells_whether_any_member_turns_a_regularizer_on():
    config = default_config()
    config.sweep.weight_decay = (0.0, 1e-4)
    members = members_from_config(config)
    assert members.uses("weight_decay") and not members.uses("max_norm")
