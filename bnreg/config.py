"""The engine's configuration: one ``ml_collections.ConfigDict`` schema for every study.

A study's ``get_config()`` starts from :func:`default_config` and changes values; it never adds
keys. :func:`validate_config` rejects unknown keys (a typo must not silently fall back to a
default) and inconsistent values, before any data is loaded or anything is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "exponential", "step")
MODELS = ("mlp", "convnet")
STANDARDIZE = ("none", "global", "per_pixel")
BN_EVAL_STATISTICS = ("ema", "population")


def default_config() -> ml_collections.ConfigDict:
    """Returns the engine's configuration with every key it understands and its default."""
    config = ml_collections.ConfigDict()

    # Data (bnreg.data): dataset name, where to find it, and preprocessing.
    config.dataset = "mnist"
    config.data_dir = config_dict.placeholder(str)
    config.manual_dir = config_dict.placeholder(str)
    # None: binarize MNIST only (the BN paper's input is a binary image), keep grey levels else.
    config.binarize = config_dict.placeholder(bool)
    config.standardize = "none"
    config.train_subset = 0  # 0: the whole train split; N: a stratified subset of N examples.
    # >0: hold out this fraction of the training split (class-stratified, rounded to whole
    # examples) as a validation split, and evaluate on it instead of the test split.
    config.validation_fraction = 0.0

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.hidden_sizes = (100, 100, 100)
    config.model.conv_features = (32, 64)
    config.model.activation = "sigmoid"
    config.model.norm = config_dict.placeholder(str)  # None or "batch".
    config.model.input_dropout = 0.0
    config.model.hidden_dropout = 0.0
    config.model.dropconnect = 0.0
    config.model.kernel_init = "normal"
    config.model.init_stddev = 0.1
    config.model.bn_momentum = 0.99
    config.model.bn_epsilon = 1e-5
    config.model.bn_backward = "autodiff"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.0
    config.optimizer.nesterov = False
    config.optimizer.schedule = "constant"
    config.optimizer.decay_rate = 0.1  # exponential: lr·rate^(step/decay_steps)
    config.optimizer.decay_steps = 10_000
    config.optimizer.step_boundaries = ()  # step: lr·factor at each boundary
    config.optimizer.step_factor = 0.1
    config.optimizer.weight_decay = 0.0  # L2 on kernels, added to the gradient as λ·w
    config.optimizer.max_norm = 0.0  # 0: off; c > 0: each hidden unit's incoming weights ≤ c

    # The run. Members = learning_rates × seeds, trained together by one compiled program.
    config.batch_size = 60
    config.num_steps = 50_000
    config.eval_every = 500
    # Training steps per compiled call (one lax.scan), at most eval_every (a call never crosses an
    # evaluation); 0: eval_every. Smaller values update the progress bar and catch a non-finite
    # loss sooner, at one host round trip per call.
    config.steps_per_call = 0
    config.eval_batch_size = 2_000
    config.checkpoint_every = 5_000  # 0: no checkpoints; else a multiple of eval_every
    config.seeds = (0, 1, 2)
    config.learning_rates = ()  # empty: (optimizer.learning_rate,)
    config.population_batches = 100  # Alg. 2: training batches averaged for inference stats
    # BN statistics used by every evaluation during training: "ema" (tracked while training) or
    # "population" (Alg. 2, recomputed at each evaluation: the paper's inference network).
    config.bn_eval_statistics = "ema"

    # Probes (bnreg.probes), computed on the evaluation split at every evaluation.
    config.probe = ml_collections.ConfigDict()
    config.probe.layers = (-1,)  # hidden layer indices; negative ones count from the last
    config.probe.units = (0, 1, 2)
    config.probe.percentiles = (15.0, 50.0, 85.0)
    # Activation histograms per hidden layer (Srivastava et al. 2014, Fig. 8); 0: none.
    config.probe.histogram_bins = 50
    config.probe.histogram_range = (0.0, 1.0)

    config.progress = True
    # TensorBoard events of the metrics in <workdir>/tensorboard (bnreg.tensorboard_events).
    config.tensorboard = False
    # A study's own keys (its sweep, its milestones, ...); the engine ignores them.
    config.study = ml_collections.ConfigDict()
    return config


def _unknown_keys(config: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = ""):
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in schema:
            yield name
        elif key == "study" and not prefix:
            continue
        elif isinstance(schema[key], Mapping) and isinstance(value, Mapping):
            yield from _unknown_keys(value, schema[key], prefix=f"{name}.")


def _choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"config.{name} must be one of {list(choices)}, got {value!r}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks a run's configuration against the schema of :func:`default_config`.

    Raises:
      ValueError: unknown keys (all of them listed), or values that cannot work together.
    """
    unknown = sorted(_unknown_keys(config, default_config()))
    if unknown:
        raise ValueError(
            f"Unknown config keys {unknown}. Every key must exist in "
            "bnreg.config.default_config(); check the spelling."
        )
    _choice("model.name", config.model.name, MODELS)
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("optimizer.schedule", config.optimizer.schedule, SCHEDULES)
    _choice("standardize", config.standardize, STANDARDIZE)
    _choice("bn_eval_statistics", config.bn_eval_statistics, BN_EVAL_STATISTICS)
    for name in ("batch_size", "num_steps", "eval_every", "eval_batch_size"):
        if config[name] < 1:
            raise ValueError(f"config.{name} must be ≥ 1, got {config[name]}.")
    if config.steps_per_call < 0:
        raise ValueError(
            f"config.steps_per_call must be ≥ 0 (0: eval_every), got {config.steps_per_call}."
        )
    if config.checkpoint_every < 0 or config.checkpoint_every % config.eval_every:
        raise ValueError(
            f"config.checkpoint_every ({config.checkpoint_every}) must be 0 (off) or a multiple "
            f"of config.eval_every ({config.eval_every}): checkpoints are taken after evaluations."
        )
    if not config.seeds:
        raise ValueError("config.seeds must name at least one seed.")
    learning_rates = tuple(config.learning_rates) or (config.optimizer.learning_rate,)
    for name, values in (("seeds", tuple(config.seeds)), ("learning_rates", learning_rates)):
        if len(set(values)) != len(values):
            raise ValueError(f"config.{name} {values} repeats a value: members must differ.")
    if any(lr <= 0 for lr in learning_rates):
        raise ValueError(f"learning rates must be > 0, got {learning_rates}.")
    if not 0.0 <= config.validation_fraction < 1.0:
        raise ValueError(
            f"config.validation_fraction must be in [0, 1) (0: evaluate on the test split), got "
            f"{config.validation_fraction}."
        )
    if config.population_batches < 0:
        raise ValueError("config.population_batches must be ≥ 0 (0 skips Alg. 2).")
    if config.bn_eval_statistics == "population" and not config.population_batches:
        raise ValueError(
            'config.bn_eval_statistics="population" needs config.population_batches ≥ 1.'
        )
    if not config.probe.layers or not config.probe.units:
        raise ValueError("config.probe.layers and config.probe.units must name at least one each.")
    if config.probe.histogram_bins < 0:
        raise ValueError(
            f"config.probe.histogram_bins must be ≥ 0 (0: no histograms), got "
            f"{config.probe.histogram_bins}."
        )
    if config.model.norm == "batch" and config.batch_size < 2:
        raise ValueError("Batch Normalization needs config.batch_size ≥ 2 in training.")
