"""The engine's configuration: one ``ml_collections.ConfigDict`` schema for every study.

A study's ``get_config()`` starts from :func:`default_config` and changes values; it never adds
keys, except the axes it sweeps (``config.sweep``) and its own ``config.study`` section.
:func:`validate_config` rejects unknown keys at any depth (a typo must not silently fall back to
a default) and values that cannot work together, before any data is loaded or compiled.

The schema and its checks stay in one module (hence its length): every check reads keys that
the schema defines next to it. This module imports no more than ``ml_collections`` and the
package's light core (not the engine, matplotlib or ``absl.app``), so a study's config loads
quickly.

**Members.** A run trains *members* as one compiled program: the cross product of the axes in
``config.sweep`` (``config.sweep.learning_rate = (0.1, 1.0)``, ``config.sweep.seed = (0, 1, 2)``,
…), with the groups named in ``config.sweep_zip`` zipped instead of crossed. Every axis of
:data:`AXES` has a fixed value elsewhere in the config, used when it is not swept. Settings that
change shapes or structure (widths, depth, activation, norm, model, task, dataset) are not axes:
a study trains runs that differ in them as a group (``bnreg.engine.train_group``).

Longer than the project's ~450 lines: one schema, its defaults with their comments and its
checks; issue 31 splits it by owner (each model its keys, one table of sweep axes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from ml_collections import config_dict

from bnreg._checks import check_choice
from bnreg.core.batch_norm import BACKWARDS as BN_BACKWARDS
from bnreg.core.dropout import MASK_BITS
from bnreg.core.dropout import SCALINGS as DROPOUT_SCALINGS
from bnreg.data.sources import DATASET_NAMES

# Member axes -> the config key of the value a run uses when the axis is not swept. Crossing
# order: the first axis varies slowest, the seed fastest, so each setting's seeds are adjacent.
AXES: Mapping[str, str] = {
    "learning_rate": "optimizer.learning_rate",
    "input_dropout": "model.input_dropout",
    "hidden_dropout": "model.hidden_dropout",
    "dropconnect": "model.dropconnect",
    "max_norm": "optimizer.max_norm",
    "weight_decay": "optimizer.weight_decay",
    "final_momentum": "optimizer.momentum",
    "bn_momentum": "model.bn_momentum",
    "train_subset": "train_subset",
    "seed": "seed",
}
INTEGER_AXES = ("seed", "train_subset")
# Seeds are below this: jax.random.key(seed) keeps a seed's low 32 bits.
SEED_LIMIT = 2**32

TASKS = ("classification", "reconstruction")
RECONSTRUCTION_LOSSES = ("squared_error", "bernoulli")
MODELS = ("mlp", "convnet", "inception", "autoencoder")
# bnreg.models' activations, initialisers and norms (named here: the config imports no flax).
ACTIVATIONS = ("sigmoid", "relu", "tanh")
KERNEL_INITS = ("fan_in_normal", "glorot_uniform", "he_normal", "lecun_normal", "normal")
NORMS = (None, "batch")
BRANCH_POOLS = ("max", "avg")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "exponential", "step", "inverse_time")
MOMENTUM_SCHEDULES = ("constant", "linear", "exponential")
STANDARDIZE = ("none", "global", "per_pixel")
DROPOUT_NOISE = ("bernoulli", "gaussian")
CPU_COLLECTIVES = ("gloo", "mpi")
BN_STATISTICS = ("ema", "population")
NONFINITE = ("stop", "record")
# Evaluators by name (bnreg.engine.evaluators); the BN-statistics ones apply to nets with BN.
EVALUATORS = ("deterministic", "ema", "population", "settled_ema", "monte_carlo", "gaussian")


def default_config() -> ml_collections.ConfigDict:
    """Returns the engine's configuration with every key it understands and its default.

    One key a line, each with its comment: the schema in one place, hence the length.
    """
    config = ml_collections.ConfigDict()

    # Data (bnreg.data): dataset name, where to find it, and preprocessing.
    config.dataset = "mnist"
    config.data_dir = config_dict.placeholder(str)
    config.manual_dir = config_dict.placeholder(str)
    # None: binarize MNIST only (the BN paper's input is a binary image), keep grey levels else.
    config.binarize = config_dict.placeholder(bool)
    config.standardize = "none"
    # k > 1: average-pool every image over k×k blocks before the model (28×28 → 14×14 at k = 2),
    # before binarize and standardize; 1: the images as stored.
    config.image_pool = 1
    # >0: hold out this fraction of the training split (class-stratified, rounded to whole
    # examples) as a validation split, and evaluate on it instead of the test split.
    config.validation_fraction = 0.0
    # Member axes without a section of their own (see AXES).
    config.seed = 0
    config.train_subset = 0  # 0: the whole train split; N: a class-stratified N, per seed.

    config.task = ml_collections.ConfigDict()
    config.task.name = "classification"
    config.task.reconstruction_loss = "bernoulli"  # or "squared_error" (reconstruction only)

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.hidden_sizes = (100, 100, 100)
    config.model.conv_features = (32, 64)
    # The inception net (bnreg.models.Inception): its stem's channels, a 2×2 pool after the stem,
    # its modules' branch channels (b1, b3_reduce, b3, b5_reduce, b5, pool_proj) and the modules
    # a 2×2 pool follows.
    config.model.inception_stem = 32
    config.model.inception_stem_pool = False
    config.model.inception_modules = ((16, 16, 24, 8, 12, 8), (32, 24, 48, 12, 24, 16))
    config.model.inception_pool_after = (0,)
    # The pooling branch's 3×3 pool: "max" (GoogLeNet) or "avg" (most of BN-Inception's modules).
    config.model.inception_branch_pool = "max"
    config.model.activation = "sigmoid"
    config.model.norm = config_dict.placeholder(str)  # None or "batch".
    config.model.input_dropout = 0.0  # drop rates; the papers' retain probability is 1 - rate
    config.model.hidden_dropout = 0.0
    config.model.dropout_noise = "bernoulli"  # or "gaussian": N(1, rate/(1-rate)) noise
    # Random bits per Bernoulli mask entry: 32 (jax.random.bernoulli) or 16 (p resolved to
    # 2^-16, half the random bits: bnreg.core.dropout.bernoulli_mask).
    config.model.dropout_mask_bits = 32
    # Where the Bernoulli masks' factor p goes, for dropout's masks on units
    # (bnreg.core.dropout) and DropConnect's on weights (bnreg.core.dropconnect): "inverted"
    # (×1/p in training, frameworks' default) or "paper" (no factor in training, ×p at test).
    # The same network at test, not the same SGD: a layer after the mask gets 1/p² the paper's
    # step and max-norm bounds its weights 1/p more loosely, so a learning rate or c held fixed
    # across p means something else in each (experiments/dropout_p.py). Gaussian dropout keeps
    # its own form.
    config.model.dropout_scaling = "inverted"
    config.model.dropconnect = 0.0
    config.model.dropconnect_per_example = True  # a fresh weight mask per example (the paper)
    # Random bits per DropConnect mask entry, as dropout_mask_bits: 16 halves the random bits,
    # most of a per-example step's time on a CPU.
    config.model.dropconnect_mask_bits = 32
    config.model.kernel_init = "normal"
    config.model.init_stddev = 0.1
    config.model.bn_momentum = 0.99
    config.model.bn_epsilon = 1e-5
    config.model.bn_backward = "autodiff"
    # 0: BN's moments over the member's whole batch (across the data axis of a mesh: global-
    # batch semantics); G: ghost BN, moments over each consecutive G examples of the batch (G
    # must divide each device's share of the batch; bnreg.core.ghost_batch_norm).
    config.model.bn_ghost_size = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.0  # the final momentum of momentum_schedule
    # "linear": from initial_momentum to momentum over momentum_steps, then constant;
    # "exponential": momentum - (momentum - initial_momentum)·exp(-t/momentum_steps).
    config.optimizer.momentum_schedule = "constant"
    config.optimizer.initial_momentum = 0.5
    config.optimizer.momentum_steps = 10_000
    config.optimizer.nesterov = False
    # True: the gradient enters the momentum as (1 − m_t)·g (Srivastava et al. 2014, App. A.1:
    # Δw_t = m_t·Δw_{t−1} − (1 − m_t)·ε_t·∇L), so the step does not grow ×1/(1 − m) with m
    # (the rate scales the velocity: A.1 exactly at a constant rate; bnreg.engine.optimizer).
    config.optimizer.dampening = False
    # Learning-rate decay, as a factor of the (per-member) base rate: exponential
    # rate^(t/decay_steps); step: step_factor at each boundary; inverse_time 1/(1 + t/decay_steps).
    config.optimizer.schedule = "constant"
    config.optimizer.decay_rate = 0.1
    config.optimizer.decay_steps = 10_000
    config.optimizer.step_boundaries = ()
    config.optimizer.step_factor = 0.1
    config.optimizer.weight_decay = 0.0  # L2 on kernels, added to the gradient as λ·w
    config.optimizer.max_norm = 0.0  # 0: off; c > 0: each hidden unit's incoming weights ≤ c

    # Member axes: name -> values, crossed; e.g. config.sweep.seed = (0, 1, 2). Groups of swept
    # axes in sweep_zip are zipped (equal lengths) instead, e.g. (("input_dropout",
    # "hidden_dropout"),).
    config.sweep = ml_collections.ConfigDict()
    config.sweep_zip = ()

    config.batch_size = 60
    config.num_steps = 50_000
    config.eval_every = 500
    # Training steps per compiled call (one lax.scan), at most eval_every (a call never crosses an
    # evaluation); 0: eval_every. Smaller values update the progress bar and catch a non-finite
    # loss sooner, at one host round trip per call.
    config.steps_per_call = 0
    # True: a call's steps are unrolled into straight-line code instead of a lax.scan loop, for
    # convnets on a CPU (XLA:CPU runs convolutions ~4× slower inside a loop); the compile time
    # grows with the steps per call, so pair it with a small steps_per_call (e.g. 1–5).
    config.unroll_steps = False
    config.eval_batch_size = 2_000
    config.checkpoint_every = 5_000  # 0: no checkpoints; else a multiple of eval_every
    # "stop": a NaN/inf loss ends the run with an error; "record": a member that diverges goes on
    # with NaN metrics, recorded as such (a sweep's choice must see which settings diverge).
    config.nonfinite = "stop"

    config.evaluation = ml_collections.ConfigDict()
    # Evaluators at every evaluation (the first is the primary: its metrics are also recorded
    # as plain `loss`, `accuracy`, `error`) and, in addition, at the end only.
    config.evaluation.during = ("deterministic",)
    config.evaluation.final = ("ema",)
    # The BN statistics of the deterministic, Monte-Carlo and Gaussian evaluators: Alg. 2's
    # (the paper's inference network) or the EMA tracked in training.
    config.evaluation.bn_statistics = "population"
    config.evaluation.population_batches = 100  # Alg. 2: training batches averaged
    config.evaluation.monte_carlo_samples = (50,)  # k thinned nets averaged, one result per k
    config.evaluation.gaussian_samples = (100,)  # DropConnect's Z samples, one result per Z
    # >0: the primary (deterministic) evaluator also scores the first N examples of the training
    # split (of each member's train_subset, when it has one) at every evaluation (columns
    # `<metric>_on_train`: the overfitting curves); 0: not.
    config.evaluation.train_examples = 0
    # >0: the evaluations during training score a fixed class-stratified subset of N examples of
    # the evaluation split (cheaper curves); the final evaluation (summary.json) scores all of
    # it, and so does the primary evaluator at the steps of full_steps (columns `<metric>_full`).
    config.evaluation.subset = 0
    config.evaluation.full_steps = ()
    # True (with a validation split): the primary evaluator also scores the test split at every
    # evaluation (columns `<metric>_on_test`), so a study can stop early on validation error
    # and read the test error at that step.
    config.evaluation.test_too = False

    # Probes (bnreg.probes), computed by the primary evaluator at every evaluation.
    config.probe = ml_collections.ConfigDict()
    # Hidden layer indices, negative ones counting from the last; (): no probes.
    config.probe.layers = (-1,)
    config.probe.units = (0, 1, 2)
    config.probe.percentiles = (15.0, 50.0, 85.0)
    # Activation histograms per hidden layer (Srivastava et al. 2014, Fig. 8); 0: none.
    config.probe.histogram_bins = 50
    config.probe.histogram_range = (0.0, 1.0)

    # The device mesh (bnreg.engine.devices): `data` devices split each member's batch, `members`
    # devices share the members (0: all the devices left when they divide the member count).
    config.mesh = ml_collections.ConfigDict()
    config.mesh.members = 0
    config.mesh.data = 1
    # Several processes (jax.distributed, bnreg.engine.devices.initialize_processes): 1 process;
    # N > 1 with the coordinator's host:port and this process's id (unset: the environment's
    # JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID); 0: JAX's cluster detection (SLURM, MPI, TPU).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.num_processes = 1
    config.distributed.coordinator_address = config_dict.placeholder(str)
    config.distributed.process_id = -1
    config.distributed.cpu_collectives = "gloo"
    # Seconds every process waits for the others to join (jax.distributed's
    # initialization_timeout); past it JAX ends the processes.
    config.distributed.timeout_s = 300

    config.progress = True
    # TensorBoard events of the metrics in <workdir>/tensorboard (bnreg.engine.writers).
    config.tensorboard = False
    # A study's own keys (its milestones, ...); the engine ignores them.
    config.study = ml_collections.ConfigDict()
    return config


def axis_value(config: ml_collections.ConfigDict, axis: str) -> Any:
    """The value a run uses for ``axis`` when it is not swept (:data:`AXES`)."""
    section, _, key = AXES[axis].rpartition(".")
    return (config[section] if section else config)[key]


# Config keys that change shapes or structure, which a study varies with a group of runs.
_STRUCTURAL = {
    "hidden_sizes", "conv_features", "activation", "norm", "model", "name", "task", "dataset",
    "batch_size", "kernel_init", "init_stddev", "dropout_noise", "dropout_mask_bits",
    "dropout_scaling", "dropconnect_mask_bits", "bn_ghost_size", "inception_stem",
    "inception_stem_pool", "inception_modules", "inception_pool_after",
    "inception_branch_pool", "num_steps", "image_pool",
}


def _unknown_keys(config: Any, schema: Any, prefix: str = ""):
    for key in config.keys():
        name = f"{prefix}{key}"
        if key not in schema:
            yield name
        elif not prefix and key in ("study", "sweep"):
            continue
        elif isinstance(schema[key], ml_collections.ConfigDict | Mapping):
            value = config[key]
            if isinstance(value, ml_collections.ConfigDict | Mapping):
                yield from _unknown_keys(value, schema[key], prefix=f"{name}.")


def _check_sweep(config: ml_collections.ConfigDict) -> None:
    for axis, values in config.sweep.items():
        if axis not in AXES:
            hint = (
                f"{axis!r} changes shapes or structure, so it cannot be a member axis: train the "
                "settings as a group of runs (bnreg.engine.train_group)"
                if axis in _STRUCTURAL
                else f"member axes are {list(AXES)}"
            )
            raise ValueError(f"config.sweep.{axis} is not a member axis: {hint}.")
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(
                f"config.sweep.{axis} must be a non-empty tuple of values, got {values!r}."
            )
        for value in values:
            _check_axis_value(axis, value, f"config.sweep.{axis}")
    if not all(isinstance(group, tuple | list) and all(isinstance(axis, str) for axis in group)
               for group in config.sweep_zip):
        raise ValueError(f"config.sweep_zip must be groups of axis names, e.g. "
                         f"(('input_dropout', 'hidden_dropout'),), got {config.sweep_zip!r}.")
    zipped = [tuple(group) for group in config.sweep_zip]
    named = [axis for group in zipped for axis in group]
    # A zipped axis may repeat a value (each net of a group at its own rate, two nets at the
    # same one); its group's tuples must differ.
    for axis, values in config.sweep.items():
        if axis not in named and len(set(values)) != len(values):
            raise ValueError(f"config.sweep.{axis} {tuple(values)} repeats a value: members must "
                             "differ.")
    if len(set(named)) != len(named):
        raise ValueError(f"config.sweep_zip {zipped} names an axis twice.")
    for group in zipped:
        missing = [axis for axis in group if axis not in config.sweep]
        if missing or len(group) < 2:
            raise ValueError(
                f"config.sweep_zip group {group} must name at least two swept axes (not swept: "
                f"{missing})."
            )
        lengths = {axis: len(config.sweep[axis]) for axis in group}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"config.sweep_zip group {group} zips axes of different lengths "
                             f"{lengths}.")
        rows = list(zip(*(config.sweep[axis] for axis in group), strict=True))
        if len(set(rows)) != len(rows):
            raise ValueError(f"config.sweep_zip group {group} repeats a combination of values "
                             f"{rows}: members must differ.")


def _check_axis_value(axis: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must hold numbers, got {value!r}.")
    if axis in INTEGER_AXES and (not float(value).is_integer() or value < 0):
        raise ValueError(f"{where} must hold whole numbers ≥ 0, got {value!r}.")
    if axis == "seed" and value >= SEED_LIMIT:
        # jax.random.key keeps a seed's low 32 bits: 2³² would be seed 0 again.
        raise ValueError(f"{where} must hold seeds below 2³² = {SEED_LIMIT}, got {value!r}: "
                         "larger seeds collide with small ones (jax.random.key keeps 32 bits).")
    if not math.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value!r}.")
    ranges = {
        "learning_rate": (value > 0, "> 0"),
        "input_dropout": (0 <= value < 1, "a drop rate in [0, 1)"),
        "hidden_dropout": (0 <= value < 1, "a drop rate in [0, 1)"),
        "dropconnect": (0 <= value < 1, "a drop rate in [0, 1)"),
        "max_norm": (value >= 0, "≥ 0 (0: off)"),
        "weight_decay": (value >= 0, "≥ 0"),
        "final_momentum": (0 <= value < 1, "in [0, 1)"),
        "bn_momentum": (0 <= value <= 1, "in [0, 1] (flax convention)"),
    }
    if axis in ranges and not ranges[axis][0]:
        raise ValueError(f"{where} must be {ranges[axis][1]}, got {value!r}.")


def _check_choices(config: ml_collections.ConfigDict) -> None:
    for name, value, choices in (
        ("dataset", config.dataset, DATASET_NAMES),
        ("task.name", config.task.name, TASKS),
        ("task.reconstruction_loss", config.task.reconstruction_loss, RECONSTRUCTION_LOSSES),
        ("model.name", config.model.name, MODELS),
        ("model.dropout_noise", config.model.dropout_noise, DROPOUT_NOISE),
        ("model.dropout_mask_bits", config.model.dropout_mask_bits, MASK_BITS),
        ("model.dropout_scaling", config.model.dropout_scaling, DROPOUT_SCALINGS),
        ("model.dropconnect_mask_bits", config.model.dropconnect_mask_bits, MASK_BITS),
        ("model.activation", config.model.activation, ACTIVATIONS),
        ("model.inception_branch_pool", config.model.inception_branch_pool, BRANCH_POOLS),
        ("model.kernel_init", config.model.kernel_init, KERNEL_INITS),
        ("model.norm", config.model.norm, NORMS),
        ("model.bn_backward", config.model.bn_backward, BN_BACKWARDS),
        ("optimizer.name", config.optimizer.name, OPTIMIZERS),
        ("optimizer.schedule", config.optimizer.schedule, SCHEDULES),
        ("optimizer.momentum_schedule", config.optimizer.momentum_schedule, MOMENTUM_SCHEDULES),
        ("standardize", config.standardize, STANDARDIZE),
        ("evaluation.bn_statistics", config.evaluation.bn_statistics, BN_STATISTICS),
        ("nonfinite", config.nonfinite, NONFINITE),
        ("distributed.cpu_collectives", config.distributed.cpu_collectives, CPU_COLLECTIVES),
    ):
        check_choice(f"config.{name}", value, choices)
    for section in ("during", "final"):
        for name in config.evaluation[section]:
            check_choice(f"config.evaluation.{section} entry", name, EVALUATORS)
    if not config.evaluation.during:
        raise ValueError("config.evaluation.during must name at least one evaluator.")
    if config.model.dropout_scaling == "paper" and config.model.dropout_noise == "gaussian":
        raise ValueError("config.model.dropout_scaling='paper' places Bernoulli dropout's factor "
                         "p; Gaussian noise has mean 1 and no such factor: use 'inverted'.")
    if (config.task.name == "reconstruction" and config.task.reconstruction_loss == "bernoulli"
            and config.standardize != "none"):
        raise ValueError(
            "The Bernoulli reconstruction loss needs targets in [0, 1]: use "
            "config.standardize='none', or task.reconstruction_loss='squared_error'."
        )
    if (config.task.name == "reconstruction") != (config.model.name == "autoencoder"):
        raise ValueError(
            f"config.task.name {config.task.name!r} and config.model.name "
            f"{config.model.name!r} do not go together: the reconstruction task needs the "
            "autoencoder, and the autoencoder the reconstruction task."
        )


def _check_optimizer(config: ml_collections.ConfigDict) -> None:
    optimizer = config.optimizer
    momentum = optimizer.momentum or "final_momentum" in config.sweep
    if optimizer.name == "adam" and (momentum or optimizer.nesterov
                                     or optimizer.momentum_schedule != "constant"):
        raise ValueError(
            "optimizer.momentum, momentum_schedule and nesterov are SGD's; Adam has its own "
            "moments: leave them at their defaults, or use optimizer.name='sgd'."
        )
    if optimizer.nesterov and not momentum:
        raise ValueError("optimizer.nesterov needs a momentum (optimizer.momentum > 0).")
    if optimizer.dampening and (optimizer.name != "sgd" or not momentum):
        raise ValueError("optimizer.dampening scales SGD's momentum: it needs optimizer.name "
                         "'sgd' and a momentum (optimizer.momentum > 0).")
    if not 0.0 <= optimizer.initial_momentum < 1.0:
        raise ValueError(f"config.optimizer.initial_momentum must be in [0, 1), got "
                         f"{optimizer.initial_momentum}.")
    if not optimizer.decay_rate > 0 or not optimizer.step_factor > 0:
        raise ValueError("config.optimizer.decay_rate and step_factor must be > 0.")
    boundaries = list(optimizer.step_boundaries)
    if any(not isinstance(b, int) or b < 1 for b in boundaries) or boundaries != sorted(
        set(boundaries)
    ):
        raise ValueError(f"config.optimizer.step_boundaries must be increasing steps ≥ 1, got "
                         f"{tuple(boundaries)}.")


def _check_model(config: ml_collections.ConfigDict) -> None:
    model = config.model
    for name in ("hidden_sizes", "conv_features"):
        widths = tuple(model[name])
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"config.model.{name} must hold whole numbers ≥ 1, got {widths}.")
    modules = [tuple(module) for module in model.inception_modules]
    if (isinstance(model.inception_stem, bool) or not isinstance(model.inception_stem, int)
            or model.inception_stem < 1 or not modules
            or any(len(m) != 6 or any(not isinstance(c, int) or c < 1 for c in m)
                   for m in modules)):
        raise ValueError(
            "config.model.inception_stem must be a whole number ≥ 1 and inception_modules a "
            "non-empty tuple of (b1, b3_reduce, b3, b5_reduce, b5, pool_proj) channel counts "
            f"≥ 1, got {model.inception_stem!r} and {tuple(modules)}.")
    if not set(model.inception_pool_after) <= set(range(len(modules))):
        raise ValueError(f"config.model.inception_pool_after {tuple(model.inception_pool_after)} "
                         f"must index the {len(modules)} inception modules.")
    for name in ("init_stddev", "bn_epsilon"):
        if not (math.isfinite(model[name]) and model[name] > 0):
            raise ValueError(f"config.model.{name} must be finite and > 0, got {model[name]}.")
    probe = config.probe
    if not all(0.0 <= q <= 100.0 for q in probe.percentiles):
        raise ValueError(f"config.probe.percentiles must lie in [0, 100], got "
                         f"{tuple(probe.percentiles)}.")
    if len(probe.histogram_range) != 2 or not probe.histogram_range[0] < probe.histogram_range[1]:
        raise ValueError(f"config.probe.histogram_range must be (low, high) with low < high, "
                         f"got {tuple(probe.histogram_range)}.")


def _check_counts(config: ml_collections.ConfigDict) -> None:
    for name in ("batch_size", "num_steps", "eval_every", "eval_batch_size", "image_pool"):
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
    if not 0.0 <= config.validation_fraction < 1.0:
        raise ValueError(
            f"config.validation_fraction must be in [0, 1) (0: evaluate on the test split), got "
            f"{config.validation_fraction}."
        )
    evaluation = config.evaluation
    if evaluation.population_batches < 0:
        raise ValueError("config.evaluation.population_batches must be ≥ 0 (0 skips Alg. 2).")
    for name in ("monte_carlo_samples", "gaussian_samples"):
        samples = tuple(evaluation[name])
        if (not samples or any(not isinstance(k, int) or k < 1 for k in samples)
                or len(set(samples)) < len(samples)):
            raise ValueError(f"config.evaluation.{name} must hold distinct counts ≥ 1, got "
                             f"{samples}.")
    if config.optimizer.momentum_steps < 1 or config.optimizer.decay_steps < 1:
        raise ValueError("config.optimizer.momentum_steps and decay_steps must be ≥ 1.")
    if evaluation.train_examples < 0:
        raise ValueError("config.evaluation.train_examples must be ≥ 0 (0: no training-split "
                         f"evaluation), got {evaluation.train_examples}.")
    if evaluation.train_examples and evaluation.during[0] != "deterministic":
        raise ValueError("config.evaluation.train_examples scores the training split with the "
                         "primary evaluator, which must then be 'deterministic' (the first of "
                         f"config.evaluation.during), not {evaluation.during[0]!r}.")
    if evaluation.subset < 0:
        raise ValueError(f"config.evaluation.subset must be ≥ 0 (0: the whole evaluation split), "
                         f"got {evaluation.subset}.")
    full_steps = tuple(evaluation.full_steps)
    if full_steps and (not evaluation.subset or any(
            not isinstance(s, int) or s < 1 or s > config.num_steps or s % config.eval_every
            for s in full_steps)):
        raise ValueError(
            f"config.evaluation.full_steps {full_steps} must be evaluation steps (multiples of "
            f"config.eval_every {config.eval_every}, at most num_steps {config.num_steps}) of a "
            "run that scores a subset (config.evaluation.subset > 0).")
    if evaluation.test_too and not config.validation_fraction:
        raise ValueError("config.evaluation.test_too scores the test split beside a validation "
                         "split; without one (config.validation_fraction 0) every evaluation "
                         "already scores the test split: leave it False.")
    if evaluation.test_too and evaluation.during[0] != "deterministic":
        raise ValueError("config.evaluation.test_too scores the test split with the primary "
                         "evaluator, which must then be 'deterministic' (the first of "
                         f"config.evaluation.during), not {evaluation.during[0]!r}.")
    if config.probe.layers and not config.probe.units:
        raise ValueError("config.probe.units must name at least one unit (or config.probe.layers "
                         "= () for no probes).")
    if config.probe.histogram_bins < 0:
        raise ValueError(
            f"config.probe.histogram_bins must be ≥ 0 (0: no histograms), got "
            f"{config.probe.histogram_bins}."
        )
    if config.model.norm == "batch" and config.batch_size < 2:
        raise ValueError("Batch Normalization needs config.batch_size ≥ 2 in training.")
    _check_mesh(config)


def _check_mesh(config: ml_collections.ConfigDict) -> None:
    """The mesh, ghost BN and process counts on their own (against the devices: the engine)."""
    mesh, ghost = config.mesh, config.model.bn_ghost_size
    if mesh.data < 1 or mesh.members < 0:
        raise ValueError(f"config.mesh.data must be ≥ 1 and config.mesh.members ≥ 0 (0: as many "
                         f"as fit), got {mesh.data} and {mesh.members}.")
    if ghost < 0 or (ghost and config.model.norm != "batch"):
        raise ValueError(f"config.model.bn_ghost_size ({ghost}) must be ≥ 0, and > 0 only with "
                         "BN (model.norm 'batch').")
    if ghost and (config.batch_size % ghost or ghost < 2):
        raise ValueError(f"config.model.bn_ghost_size ({ghost}) must be ≥ 2 (a ghost of one "
                         "example has no variance in a dense layer) and divide "
                         f"config.batch_size ({config.batch_size}).")
    if config.distributed.timeout_s < 1:
        raise ValueError("config.distributed.timeout_s must be ≥ 1 second, got "
                         f"{config.distributed.timeout_s}.")
    if config.distributed.process_id < -1:
        raise ValueError("config.distributed.process_id must be ≥ 0, or -1 (from the cluster's "
                         f"environment), got {config.distributed.process_id}.")
    if any(unit < 0 for unit in config.probe.units):
        raise ValueError(f"config.probe.units must be unit indices ≥ 0, got "
                         f"{tuple(config.probe.units)}.")
    if config.distributed.num_processes < 0:
        raise ValueError("config.distributed.num_processes must be ≥ 0 (0: from the cluster's "
                         f"environment), got {config.distributed.num_processes}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks a run's configuration against the schema of :func:`default_config`.

    Raises:
      ValueError: unknown keys (all of them listed, at any depth), an unknown or structural
        sweep axis, an empty or repeated sweep, a value out of its range, or values that
        cannot work together.
    """
    unknown = sorted(_unknown_keys(config, default_config()))
    if unknown:
        raise ValueError(
            f"Unknown config keys {unknown}. Every key must exist in "
            "bnreg.config.default_config(); check the spelling."
        )
    _check_choices(config)
    _check_model(config)
    _check_counts(config)
    _check_optimizer(config)
    for axis in AXES:
        if axis not in config.sweep:
            _check_axis_value(axis, axis_value(config, axis), f"config.{AXES[axis]}")
    _check_sweep(config)
    evaluation = config.evaluation
    if "population" in (evaluation.bn_statistics, *evaluation.during, *evaluation.final) and (
        config.model.norm == "batch" and not evaluation.population_batches
    ):
        raise ValueError("Alg. 2's statistics need config.evaluation.population_batches ≥ 1.")


def override(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted keys set (``{"model.norm": "batch"}``), validated.

    Raises:
      ValueError: an override names a key the config does not have.
    """
    result = ml_collections.ConfigDict(config.to_dict())
    for name, value in overrides.items():
        *sections, key = name.split(".")
        target = result
        for section in sections:
            if section not in target:
                raise ValueError(f"Override {name!r}: the config has no section {section!r}.")
            target = target[section]
        if key not in target and sections != ["sweep"]:
            raise ValueError(f"Override {name!r}: the config has no key {key!r}; check the "
                             "spelling.")
        target[key] = value
    validate_config(result)
    return result
