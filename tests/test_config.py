"""The config schema: unknown keys at any depth, sweep axes and their values, overrides."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from bnreg.config import AXES, axis_value, default_config, override, validate_config


def test_the_default_config_is_valid():
    validate_config(default_config())


@pytest.mark.parametrize(
    "path",
    ["learning_rate", "model.hiden_sizes", "optimizer.learnig_rate", "evaluation.durng"],
)
def test_an_unknown_key_at_any_depth_is_an_error(path):
    config = default_config()
    *sections, key = path.split(".")
    target = config
    for section in sections:
        target = target[section]
    target[key] = 1
    with pytest.raises(ValueError, match=rf"Unknown config keys \['{path}'\]"):
        validate_config(config)


@pytest.mark.parametrize(
    "axis, values, message",
    [
        ("learnig_rate", (0.1, 0.2), "is not a member axis: member axes are"),
        ("hidden_sizes", ((8,), (16,)), "changes shapes or structure"),
        ("activation", ("relu", "tanh"), "changes shapes or structure"),
        ("seed", (), "must be a non-empty tuple"),
        ("seed", (1, 1), r"repeats a value"),
        ("hidden_dropout", (0.0, 1.0), r"a drop rate in \[0, 1\)"),
        ("learning_rate", (0.1, 0.0), "must be > 0"),
        ("max_norm", (-1.0, 2.0), "≥ 0"),
        ("seed", (0.5, 1.0), "whole numbers"),
        ("train_subset", (100, -5), "whole numbers ≥ 0"),
        ("weight_decay", (float("nan"), 0.1), "finite"),
        # jax.random.key keeps a seed's low 32 bits: these would be seed 0's key again.
        ("seed", (0, 2**32), "below 2³²"),
        ("seed", (0, 2**40), "below 2³²"),
        ("seed", (0, 2**64), "below 2³²"),
    ],
)
def test_a_bad_sweep_is_an_error_naming_the_axis(axis, values, message):
    config = default_config()
    config.sweep[axis] = values
    with pytest.raises(ValueError, match=message):
        validate_config(config)


@pytest.mark.parametrize(
    "zipped, message",
    [
        ((("seed", "learning_rate"),), "different lengths"),
        ((("seed",),), "at least two swept axes"),
        ((("seed", "hidden_dropout"),), r"not swept: \['hidden_dropout'\]"),
        ((("seed", "learning_rate"), ("learning_rate", "seed")), "names an axis twice"),
        ((("learning_rate", "max_norm"),), r"repeats a combination of values \[\(0.1, 2.0\)"),
    ],
)
def test_a_bad_zip_is_an_error(zipped, message):
    config = default_config()
    config.sweep.seed = (0, 1)
    config.sweep.learning_rate = (0.1, 0.2, 0.3)
    if ("learning_rate", "max_norm") in zipped:
        config.sweep.learning_rate = (0.1, 0.2, 0.1)
        config.sweep.max_norm = (2.0, 3.0, 2.0)
    config.sweep_zip = zipped
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_the_papers_dropout_scaling_with_gaussian_noise_is_an_error():
    config = default_config()
    config.model.dropout_scaling = "paper"
    config.model.dropout_noise = "gaussian"
    with pytest.raises(ValueError, match="Gaussian noise has mean 1"):
        validate_config(config)


def test_a_zipped_axis_may_repeat_a_value_when_its_group_does_not():
    """Two nets at the same chosen rate: (0.1, 0.0) and (0.1, 0.5) are different members."""
    config = default_config()
    config.sweep.learning_rate = (0.1, 0.1)
    config.sweep.hidden_dropout = (0.0, 0.5)
    config.sweep_zip = (("learning_rate", "hidden_dropout"),)
    validate_config(config)
    config.sweep_zip = ()
    with pytest.raises(ValueError, match=r"learning_rate \(0.1, 0.1\) repeats a value"):
        validate_config(config)


@pytest.mark.parametrize("axis", list(AXES))
def test_every_axis_has_a_fixed_value_in_the_config(axis):
    assert isinstance(axis_value(default_config(), axis), int | float)


def test_an_unswept_value_out_of_range_is_an_error():
    config = default_config()
    config.model.hidden_dropout = 1.5
    with pytest.raises(ValueError, match=r"config.model.hidden_dropout must be a drop rate"):
        validate_config(config)


@pytest.mark.parametrize(
    "section, value",
    [("during", ("deterministc",)), ("final", ("gauss",))],
)
def test_an_unknown_evaluator_is_an_error(section, value):
    config = default_config()
    config.evaluation[section] = value
    with pytest.raises(ValueError, match="must be one of"):
        validate_config(config)


def test_the_reconstruction_task_needs_the_autoencoder():
    config = default_config()
    config.task.name = "reconstruction"
    with pytest.raises(ValueError, match="do not go together"):
        validate_config(config)


def test_override_sets_dotted_keys_on_a_copy_and_validates():
    config = default_config()
    changed = override(config, {"model.norm": "batch", "sweep.seed": (0, 1), "num_steps": 7})
    assert (changed.model.norm, tuple(changed.sweep.seed), changed.num_steps) == (
        "batch", (0, 1), 7,
    )
    assert config.model.norm is None and "seed" not in config.sweep


@pytest.mark.parametrize(
    "overrides, message",
    [({"model.hiden_sizes": (8,)}, "has no key 'hiden_sizes'"),
     ({"modle.norm": "batch"}, "has no section 'modle'"),
     ({"sweep.hidden_sizes": ((8,), (4,))}, "changes shapes or structure")],
)
def test_override_of_a_missing_key_is_an_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        override(default_config(), overrides)


@pytest.mark.slow
def test_a_study_config_loads_without_matplotlib_absl_app_or_the_engine():
    code = (
        "import sys; from experiments import bn_mnist, bn_ema_momentum; "
        "bn_mnist.get_config(); bn_ema_momentum.get_config('smoke'); "
        "loaded = {'matplotlib', 'absl.app', 'bnreg.engine'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer.name": "adam", "optimizer.momentum_schedule": "linear"}, "Adam has its own"),
        ({"optimizer.name": "adam", "optimizer.nesterov": True}, "Adam has its own"),
        ({"optimizer.nesterov": True}, "nesterov needs a momentum"),
        ({"optimizer.initial_momentum": 1.7}, r"initial_momentum must be in \[0, 1\)"),
        ({"optimizer.decay_rate": 0.0}, "decay_rate and step_factor must be > 0"),
        ({"optimizer.step_boundaries": (300, 100)}, "must be increasing steps"),
        ({"evaluation.monte_carlo_samples": (5, 5)}, "distinct counts"),
        ({"task.name": "reconstruction", "model.name": "autoencoder",
          "standardize": "global"}, "needs targets in \\[0, 1\\]"),
        ({"probe.units": ()}, "must name at least one unit"),
        ({"optimizer.dampening": True}, "dampening scales SGD's momentum"),
        ({"model.activation": "gelu"}, r"config.model.activation must be one of"),
        ({"model.kernel_init": "orthogonal"}, r"config.model.kernel_init must be one of"),
        ({"model.norm": "layer"}, r"config.model.norm must be one of"),
        ({"model.bn_backward": "Paper"}, r"config.model.bn_backward must be one of"),
        ({"model.hidden_sizes": (32, 0)}, r"hidden_sizes must hold whole numbers ≥ 1"),
        ({"model.conv_features": (8.5,)}, r"conv_features must hold whole numbers ≥ 1"),
        ({"model.init_stddev": -1.0}, r"init_stddev must be finite and > 0"),
        ({"model.bn_epsilon": 0.0}, r"bn_epsilon must be finite and > 0"),
        ({"probe.percentiles": (15.0, 150.0)}, r"percentiles must lie in \[0, 100\]"),
        ({"probe.histogram_range": (1.0, 0.0)}, "low < high"),
        ({"optimizer.dampening": True, "optimizer.name": "adam"}, "dampening scales SGD's"),
        ({"nonfinite": "ignore"}, "config.nonfinite"),
        ({"evaluation.train_examples": -1}, "train_examples must be ≥ 0"),
        ({"evaluation.train_examples": 10, "evaluation.during": ("monte_carlo",)},
         "must then be 'deterministic'"),
    ],
)
def test_settings_that_would_silently_do_nothing_or_fail_late_are_errors(overrides, message):
    config = default_config()
    for name, value in overrides.items():
        section, key = name.split(".") if "." in name else (None, name)
        (config[section] if section else config)[key] = value
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_the_configs_model_choices_are_the_models():
    from bnreg import config, models

    assert set(config.ACTIVATIONS) == set(models.ACTIVATIONS)
    assert set(config.NORMS) == set(models.NORMS)
    from bnreg.core.dropout import MASK_BITS

    assert set(config.MASK_BITS) == set(MASK_BITS)
    for name in config.KERNEL_INITS:
        models.kernel_initializer(name)
    with pytest.raises(ValueError, match="must be one of"):
        models.kernel_initializer("orthogonal")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.inception_modules": ((16, 16, 24, 8, 12),)}, "inception_modules a non-empty tuple"),
    ({"model.inception_modules": ()}, "inception_modules a non-empty tuple"),
    ({"model.inception_stem": 0}, "inception_stem must be a whole number ≥ 1"),
    ({"model.inception_pool_after": (2,)}, r"must index the 2 inception modules"),
])
def test_a_bad_inception_net_is_an_error_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        override(default_config(), overrides)


def schema_keys(config=None, prefix=""):
    """Every leaf key of the schema (``default_config()``), dotted; ``sweep`` as one key."""
    config = default_config() if config is None else config
    for key, value in config.items():
        if hasattr(value, "items") and key != "sweep":
            yield from schema_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# Keys with no invalid value of their type (any bool, any path, any address), and why.
FREE_KEYS = {
    "binarize": "True, False or None (the dataset's default)",
    "data_dir": "any directory (tfds's data dir)",
    "manual_dir": "any directory (the raw files)",
    "distributed.coordinator_address": "any host:port",
    "sweep": "its axes are checked as the member axes (test_members.py)",
    "evaluation.test_too": "a bool", "model.dropconnect_per_example": "a bool",
    "model.inception_stem_pool": "a bool", "optimizer.dampening": "a bool",
    "optimizer.nesterov": "a bool", "progress": "a bool", "tensorboard": "a bool",
    "unroll_steps": "a bool",
}
# An invalid value where the type's own (below) is valid.
INVALID = {"distributed.process_id": -2, "probe.layers": (99,), "model.norm": "layer"}


def invalid_value(key, value):
    if key in INVALID:
        return INVALID[key]
    if isinstance(value, int):
        return -1
    if isinstance(value, float):
        return math.nan
    if isinstance(value, str):
        return "no-such-choice"
    if value and isinstance(value[0], tuple):
        return ((-1,),)
    if value and isinstance(value[0], str):
        return ("no-such-choice",)
    return (math.nan,) if value and isinstance(value[0], float) else (-1,)


@pytest.mark.parametrize("key,value", [(key, value) for key, value in schema_keys()
                                       if key not in FREE_KEYS])
def test_every_key_of_the_schema_is_checked_before_anything_is_written(key, value):
    """A new key fails here until it has a check (or a reason in FREE_KEYS): ``engine.check``,
    the pre-flight every run and study makes, refuses an invalid value naming the key."""
    from conftest import tiny_config

    from bnreg import engine

    with pytest.raises((ValueError, TypeError), match=key.rsplit(".", 1)[-1]):
        engine.check(tiny_config(**{key: invalid_value(key, value)}))


def test_the_free_keys_are_keys_of_the_schema():
    assert set(FREE_KEYS) <= {key for key, _ in schema_keys()}
