"""DropConnect against dropout and no drop — Wan et al. 2013, the MNIST table and Fig. 2.

**The table** (Table 2 of the paper, MNIST): 2-hidden-layer fully connected nets (the paper's
784-800-800-10, widths × ``study.width_scale``) × {relu, sigmoid, tanh} × {no drop, dropout,
DropConnect with a fresh weight mask per example as the paper trains, DropConnect with one mask
per batch — the variant the paper says "does not regularize the model enough"}, drop rate 0.5
(the paper's retain p = 0.5) on both hidden layers. Every DropConnect net is scored both ways
(Sec. 3): the mean network a(pWv) and the Gaussian moment matching u ~ N(pWv, p(1−p)(W⊙W)(v⊙v))
averaged over Z samples of a(u), for each Z of ``evaluation.gaussian_samples``. **Fig. 2a**
(part ``sizes``): test error against the hidden layers' width, relu, the three methods.
**Fig. 2b** (part ``rates``): test error against the drop rate of dropout and of DropConnect on
the paper's 400-400 net (× the width scale), the rates and seeds as members of one program per
method. **Fig. 2c**: training and test error against epochs of the relu nets, from the table.

The regime (design §3). The paper trains 784-800-800 nets (~21 weights per training image) for
hundreds of epochs, where a net without drop overfits. A per-example DropConnect step costs one
mask entry per weight per example, so the CPU budget shrinks the *data* and keeps the ratio: a
class-stratified subset of ``train_subset`` images per seed, trained ``num_steps`` updates
(300 epochs), the images average-pooled 2×2 to 14×14 (``image_pool``, a third of the first
layer's weights: the arithmetic is in results.md's setup; the ``pixels28`` variant checks the
relu cells on 28×28 images at one seed, committed beside the study's results), widths × ⅛.
The plain net's overfitting and the regularized nets' plateau are every regularization claim's
gate.

Commands::

  # the full study on Fashion-MNIST, which Debian's dataset-fashion-mnist package provides
  python -m experiments.dropconnect --workdir=runs/dropconnect --config.dataset=fashion_mnist
  # results.md and the figures again from the committed records alone
  python -m experiments.dropconnect --analyze \\
      --workdir=experiments/results/dropconnect_fashion_mnist
  # the pooling's check: the relu cells on 28×28 images, one seed
  python -m experiments.dropconnect --workdir=runs/dropconnect_28 \\
      --config=experiments/dropconnect.py:pixels28 --config.dataset=fashion_mnist
  # the paper's widths on the whole training split, for an accelerator
  python -m experiments.dropconnect --workdir=runs/dropconnect_paper \\
      --config=experiments/dropconnect.py:paper
  # CIFAR-10 through tfds (where a user has it): conv blocks, then a DropConnect head
  python -m experiments.dropconnect --workdir=runs/dropconnect_cifar10 \\
      --config=experiments/dropconnect.py:cifar10
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.dropconnect --workdir=/tmp/dropconnect_smoke \\
      --config=experiments/dropconnect.py:smoke

Protocol (:mod:`bnreg.study`): the dropout paper's recipe for every net (batches of 100,
momentum 0.5 → 0.95, lr0/(1 + t/T), N(0, 1/fan_in) weights, ``experiments/dropout_recipe.py``),
T and T_m fractions of the run; both regularizers in the papers' form (no factor in training,
× p at inference: ``model.dropout_scaling="paper"``), so that one lr0 is one SGD step at every
drop rate (Fig. 2b shares an lr0 across rates). lr0 is tuned per table cell on a validation split
(10,000 training images, class-stratified); Fig. 2a and 2b take the relu cells' choices. Masks
use 16 random bits per entry (p resolved to 2⁻¹⁶; 0.5 exactly). DropConnect masks the hidden
layers' weights and biases; the classifier is plain. The ``cifar10`` variant's dropout net drops
after every layer, conv blocks included (:class:`bnreg.models.ConvNet`); DropConnect masks the
dense head only.

Longer than one figure's study: the table, Fig. 2a, 2b and 2c share its cells and their lr0
choices, and its sections and figures are the paper's five readouts; the protocol, claims and
tables are the library's (:mod:`bnreg.study`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from bnreg import analysis
from bnreg.config import default_config
from bnreg.study import (
    PROTOCOL_KEYS,
    Arm,
    Chosen,
    Claim,
    Gate,
    Results,
    Study,
    Verdict,
    all_of,
    configure,
    final,
    overfits,
    plateaued,
)
from experiments.dropout_recipe import RECIPE, nearest_unit, schedule_overrides

RATE = 0.5  # the paper's retain p = 0.5, on every hidden layer
ACTIVATIONS = ("relu", "sigmoid", "tanh")
# Method -> (label, overrides). The table's arms are f"{activation}_{method}".
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("no drop", {}),
    "dropout": ("dropout", {"model.hidden_dropout": RATE}),
    "dropconnect": ("DropConnect", {"model.dropconnect": RATE}),
    "dropconnect_batch": ("DropConnect, one mask per batch",
                          {"model.dropconnect": RATE, "model.dropconnect_per_example": False}),
}
DROPCONNECT_METHODS = ("dropconnect", "dropconnect_batch")
# Fig. 2a's and 2b's methods, and the member axis of each one's rate.
FIGURE_METHODS = ("none", "dropout", "dropconnect")
RATE_AXES = {"dropout": "hidden_dropout", "dropconnect": "dropconnect"}
PARTS = ("table", "sizes", "rates")
FIGURES = ("sweep.png", "inference.png", "convergence.png", "sizes.png", "rates.png")
# The paper's MNIST test errors (%) of 784-800-800-10 nets: no drop, dropout, DropConnect (as
# recalled in design §4; not verified offline).
PAPER_TABLE = {"relu": (1.62, 1.28, 1.20), "sigmoid": (1.78, 1.38, 1.55),
               "tanh": (1.65, 1.58, 1.36)}

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {  # for an accelerator: the paper's widths, 28×28, the whole split, longer
        "image_pool": 1, "train_subset": 0, "num_steps": 100_000, "eval_every": 2_000,
        "checkpoint_every": 10_000, "evaluation.train_examples": 10_000,
        "study.width_scale": 1.0,
    },
    # The pooling's check: the relu cells at 28×28, one seed.
    "pixels28": {
        "image_pool": 1, "study.parts": ("table",), "study.activations": ("relu",),
        "study.methods": ("none", "dropout", "dropconnect"), "sweep.seed": (0,),
    },
    "cifar10": {
        "dataset": "cifar10", "image_pool": 1, "train_subset": 0, "num_steps": 20_000,
        "eval_every": 1_000, "checkpoint_every": 5_000, "evaluation.train_examples": 10_000,
        "study.feature_extractor": "convnet", "study.widths": (512, 512),
        "study.rates_widths": (256, 256), "study.sizes": (128, 1024), "study.width_scale": 1.0,
        "study.validation_fraction": 0.2,
    },
    "smoke": {
        "dataset": "digits", "image_pool": 1, "train_subset": 0, "num_steps": 60,
        "eval_every": 10, "checkpoint_every": 30, "eval_batch_size": 256,
        "evaluation.train_examples": 300, "evaluation.gaussian_samples": (1, 10),
        "study.width_scale": 1 / 50, "study.validation_fraction": 0.2,
        "study.rates": (0.3, 0.6), "study.sizes": (400,),
        # One activation: each cell is a compilation.
        "study.activations": ("relu",), "study.learning_rates.relu": (0.1, 0.3),
        "sweep.seed": (0, 1),
    },
}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration: ``"full"`` (the CPU budget), ``"pixels28"`` (its relu cells
    on 28×28 images, one seed), ``"paper"`` (an accelerator), ``"cifar10"`` or ``"smoke"``
    (scikit-learn's digits, seconds)."""
    config = default_config()
    config.update_from_flattened_dict({
        **RECIPE, "dataset": "mnist", "image_pool": 2, "train_subset": 1_000,
        "num_steps": 3_000, "eval_every": 100, "checkpoint_every": 1_000,
        "eval_batch_size": 1_000, "evaluation.final": (), "evaluation.train_examples": 1_000,
        "evaluation.gaussian_samples": (1, 10, 100, 1000), "probe.layers": (),
        "nonfinite": "record", "model.dropconnect_mask_bits": 16,
        "model.dropout_scaling": "paper",
        # The released recipe's momentum (velocity = m·velocity + gradient, design §4), not
        # the dampened form, whose step falls with the learning rate.
        "optimizer.dampening": False,
    })
    config.sweep.seed = (0, 1, 2)
    config.study = ml_collections.ConfigDict({
        **PROTOCOL_KEYS,
        "parts": PARTS,
        "activations": ACTIVATIONS,
        "methods": tuple(METHODS),
        "widths": (800, 800),  # the paper's MNIST nets
        "sizes": (200, 400, 1600),  # Fig. 2a's other widths (800 is the table's)
        "rates_widths": (400, 400),  # Fig. 2b's net
        "rates": (0.1, 0.3, 0.5, 0.7, 0.9),
        "width_scale": 1 / 8,
        # "": the MLP; "convnet": conv blocks of conv_features before the dense layers.
        "feature_extractor": "", "conv_features": (32, 64),
        # With undampened momentum the effective step lr_t/(1 − m_t) stays within a small
        # factor of lr0 over the run (results.md's setup gives its range).
        "decay_fraction": 0.1, "momentum_fraction": 0.1,
        "learning_rates": {"relu": (0.1, 0.3, 1.0), "sigmoid": (0.3, 1.0, 3.0),
                           "tanh": (0.1, 0.3, 1.0)},
        # A net overfits when its training accuracy ends this many points above its test's; a
        # regularized net has plateaued when its mean test accuracy over the last fifth of the
        # evaluations is at most plateau_points above the fifth before.
        "overfit_points": 2.0, "plateau_points": 0.3,
    })
    return configure(config, VARIANTS, variant)


def scaled(config: ml_collections.ConfigDict, widths) -> tuple[int, ...]:
    """The paper's ``widths`` × ``study.width_scale``, in whole units."""
    return tuple(nearest_unit(w * config.study.width_scale) for w in widths)


def net_overrides(config: ml_collections.ConfigDict, activation: str, method: str,
                  widths) -> dict[str, Any]:
    """One net's overrides: feature extractor, widths, activation, the method's drop and the
    schedules' constants."""
    study = config.study
    extractor = ({"model.name": "convnet", "model.conv_features": tuple(study.conv_features)}
                 if study.feature_extractor == "convnet" else {})
    return {**extractor, "model.activation": activation,
            "model.hidden_sizes": scaled(config, widths), **METHODS[method][1],
            **schedule_overrides(config)}


def table_arms(config: ml_collections.ConfigDict) -> list[Arm]:
    """Each cell tunes its lr0 and trains a run of its own; a DropConnect cell's final run is
    also scored by Gaussian inference."""
    study = config.study
    return [Arm(f"{activation}_{method}", f"{activation}, {METHODS[method][0]}",
                net_overrides(config, activation, method, study.widths),
                tune={"learning_rate": tuple(study.learning_rates[activation])},
                final_overrides={"evaluation.final": ("gaussian",)}
                if method in DROPCONNECT_METHODS else {})
            for activation in study.activations for method in study.methods]


def size_arms(config: ml_collections.ConfigDict) -> list[Arm]:
    """Fig. 2a: relu nets at ``study.sizes`` (the table's width is the table's arm), each at
    its method's relu cell's lr0."""
    return [Arm(f"size{width}_{method}", f"{scaled(config, (width,))[0]} units, "
                f"{METHODS[method][0]}", net_overrides(config, "relu", method, (width, width)),
                settings={"learning_rate": Chosen(f"relu_{method}", "learning_rate")})
            for width in config.study.sizes for method in FIGURE_METHODS]


def rate_arms(config: ml_collections.ConfigDict) -> list[Arm]:
    """Fig. 2b: one run per method, the drop rates its members (dropout's include 0, the net
    without drop), at the method's relu cell's lr0."""
    study, arms = config.study, []
    for method, axis in RATE_AXES.items():
        rates = (0.0, *study.rates) if method == "dropout" else tuple(study.rates)
        arms += [Arm(f"rates_{method}_{rate:g}", f"{METHODS[method][0]}, rate {rate:g}",
                     net_overrides(config, "relu", "none", study.rates_widths),
                     settings={axis: rate,
                               "learning_rate": Chosen(f"relu_{method}", "learning_rate")},
                     run=f"rates_{method}") for rate in rates]
    return arms


def arms(config: ml_collections.ConfigDict) -> list[Arm]:
    parts = config.study.parts
    return [*table_arms(config), *(size_arms(config) if "sizes" in parts else []),
            *(rate_arms(config) if "rates" in parts else [])]


def check(config: ml_collections.ConfigDict) -> None:
    """The study's own keys.

    Raises:
      ValueError: unknown parts, activations or methods; a table without the primary claim's
        cells (relu without and with DropConnect); Fig. 2a/2b without the relu cells whose
        lr0 they take; an activation without a learning-rate grid.
    """
    study = config.study
    for key, known in (("parts", PARTS), ("activations", ACTIVATIONS),
                       ("methods", tuple(METHODS))):
        if not set(study[key]) <= set(known) or not study[key]:
            raise ValueError(f"config.study.{key} {tuple(study[key])} must name some of "
                             f"{list(known)}.")
    if "table" not in study.parts:
        raise ValueError("config.study.parts must include 'table': the claims and the lr0 of "
                         "Fig. 2a and 2b come from it.")
    needed = set(FIGURE_METHODS) if set(study.parts) - {"table"} else {"none", "dropconnect"}
    if "relu" not in study.activations or not needed <= set(study.methods):
        raise ValueError(f"config.study.activations must include 'relu' and "
                         f"config.study.methods {sorted(needed)}: the primary claim (and "
                         "Fig. 2a, 2b) read those cells.")
    missing = [a for a in study.activations if a not in study.learning_rates]
    if missing:
        raise ValueError(f"config.study.learning_rates has no grid for {missing}.")


# Claims ------------------------------------------------------------------------------------


def regime(config: ml_collections.ConfigDict, activation: str, *regularized: str) -> Gate:
    """A regularization claim's gate (design §3): the net without drop overfits and each
    ``regularized`` net has plateaued."""
    study = config.study
    return all_of(
        overfits(f"{activation}_none", margin=study.overfit_points,
                 label=f"{activation} without drop"),
        *(plateaued(f"{activation}_{method}", tolerance=study.plateau_points,
                    label=f"{activation} {METHODS[method][0]}") for method in regularized))


def error(arm: str, column: str = "error", *, label: str | None = None):
    return final(arm, column, label=label or arm)


def gaussian_column(samples: int) -> str:
    """The final table's column of Gaussian inference's test error with ``samples`` samples."""
    return f"error_gaussian_z{samples}"


def claims(config: ml_collections.ConfigDict) -> list[Claim]:
    """Each regularizer below no drop, DropConnect against dropout in the paper's direction per
    activation, a mask per example below one per batch — gated on the regime — and Gaussian
    inference below mean inference (no gate: it compares two readings of one net)."""
    study = config.study
    methods = set(study.methods)
    found = []
    for activation in study.activations:
        cell = f"{activation}_{{}}".format
        paper = PAPER_TABLE[activation]
        for index, method in ((1, "dropout"), (2, "dropconnect")):
            if method in methods:
                found.append(Claim(
                    f"{activation}_{method}_below_none",
                    f"{activation}: {METHODS[method][0]} below no drop",
                    f"Table 2 (MNIST): {paper[0]:g} → {paper[index]:g}%",
                    error(cell(method)), error(cell("none")), "below",
                    gate=regime(config, activation, method),
                    primary=(activation, method) == ("relu", "dropconnect")))
        if {"dropout", "dropconnect"} <= methods:
            dropconnect_wins = paper[2] < paper[1]
            found.append(Claim(
                f"{activation}_dropconnect_vs_dropout",
                f"{activation}: DropConnect {'below' if dropconnect_wins else 'above'} dropout",
                f"Table 2 (MNIST): {paper[2]:g} vs {paper[1]:g}%",
                error(cell("dropconnect")), error(cell("dropout")),
                "below" if dropconnect_wins else "above",
                gate=regime(config, activation, "dropout", "dropconnect")))
        if set(DROPCONNECT_METHODS) <= methods:
            found.append(Claim(
                f"{activation}_per_example", f"{activation}: a mask per example below one per "
                "batch", "Sec. 3 (MNIST): one mask per batch does not regularize enough",
                error(cell("dropconnect")), error(cell("dropconnect_batch")), "below",
                gate=regime(config, activation, "dropconnect")))
        if "dropconnect" in methods:
            largest = max(config.evaluation.gaussian_samples)
            found.append(Claim(
                f"{activation}_gaussian", f"{activation}: Gaussian inference (Z = {largest}) "
                "below mean inference, DropConnect", "Sec. 3: the Gaussian approximates the "
                "average over masks, which a(pWv) approximates more crudely",
                error(cell("dropconnect"), gaussian_column(largest),
                      label=f"{cell('dropconnect')}, Gaussian"),
                error(cell("dropconnect")), "below"))
    return found


# results.md -----------------------------------------------------------------------------------


def errors(results: Results, arm: str, column: str = "error") -> np.ndarray:
    """``arm``'s final ``column`` in %, one value per seed."""
    return 100 * results.finals(arm, column).to_numpy()


def table_cells(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    return [(a, m) for a in config.study.activations for m in config.study.methods]


def effective_steps(config: ml_collections.ConfigDict) -> np.ndarray:
    """SGD's effective step over the run as a multiple of lr0: ``lr_t/lr0 / (1 − m_t)`` with
    undampened momentum (the step a constant gradient reaches), ``lr_t/lr0`` with dampening."""
    from bnreg.config import override
    from bnreg.engine.optimizer import learning_rate_factor, momentum_schedule

    optimizer = override(config, schedule_overrides(config)).optimizer
    steps = np.arange(config.num_steps + 1)
    factor = np.asarray(learning_rate_factor(optimizer)(steps))
    if optimizer.dampening:
        return factor
    return factor / (1 - np.asarray(momentum_schedule(optimizer, optimizer.momentum)(steps)))


def setup(results: Results) -> list[str]:
    config, study = results.config, results.config.study
    summary = results.summary("final", "relu_none")
    inputs = int(np.prod(summary["input_shape"]))
    widths = scaled(config, study.widths)
    weights = inputs * widths[0] + widths[0] * widths[1]
    images = config.train_subset or summary["num_train_examples"]
    epochs = config.num_steps * config.batch_size / images
    step = effective_steps(config)
    pooled = (f", average-pooled {config.image_pool}×{config.image_pool} to "
              f"{'×'.join(map(str, summary['input_shape'][:2]))}" if config.image_pool > 1 else "")
    subset = (f"a class-stratified subset of {images:,} training images per seed"
              if config.train_subset else f"the {images:,} training images")
    return [
        f"Dataset: **{config.dataset}** ({summary['source']}){pooled}; the paper's numbers are "
        f"MNIST's. Nets {inputs}-{'-'.join(map(str, widths))}-10 (the paper's 784-800-800-10, "
        f"widths × {study.width_scale:g}): {weights:,} hidden-layer weights, "
        f"{weights / images:.1f} per training image (the paper's: "
        f"{(784 * 800 + 800 * 800) / 60_000:.1f}), each a mask entry per example in a "
        f"DropConnect step. Trained on {subset}, {config.num_steps:,} updates of batch "
        f"{config.batch_size} ({epochs:.0f} epochs), seeds {list(config.sweep.seed)}; drop rate "
        f"{RATE:g} on both hidden layers, the papers' form (× p at inference); the dropout "
        f"paper's recipe with T = {study.decay_fraction:.0%} and T_m = "
        f"{study.momentum_fraction:.0%} of the run, momentum "
        f"{'dampened' if config.optimizer.dampening else 'undampened'}: the effective step "
        f"is {step[0]:.1f}·lr0 at the start, at most {step.max():.1f}·lr0 (update "
        f"{int(step.argmax()):,}) and {step[-1]:.1f}·lr0 at the end. Test error on the "
        f"{summary['num_evaluation_examples']:,} test images every {config.eval_every:,} "
        f"updates; training error on each seed's {config.evaluation.train_examples:,} "
        "training images (mean inference). Errors in %, mean ± std over seeds.", "",
    ]


def table_lines(results: Results) -> list[str]:
    config = results.config
    methods = list(config.study.methods)
    header = ["activation", *(METHODS[m][0] for m in methods), "paper (MNIST): none / "
              "dropout / DropConnect"]
    rows = [[activation, *(analysis.cell(errors(results, f"{activation}_{m}")) for m in methods),
             " / ".join(f"{v:g}" for v in PAPER_TABLE[activation])]
            for activation in config.study.activations]
    train = [[activation, METHODS[method][0],
              analysis.cell(errors(results, f"{activation}_{method}", "error_on_train")),
              analysis.cell(errors(results, f"{activation}_{method}"))]
             for activation, method in table_cells(config)]
    return ["## Test error %, mean inference (Table 2)", "",
            analysis.markdown_table(header, rows), "",
            "Training error (each seed's training images) beside test error, %:", "",
            analysis.markdown_table(["activation", "method", "train error %", "test error %"],
                                    train), ""]


def inference_lines(results: Results) -> list[str]:
    config = results.config
    samples = list(config.evaluation.gaussian_samples)
    rows = [[activation, METHODS[method][0], analysis.cell(errors(results, f"{activation}_"
                                                                  f"{method}")),
             *(analysis.cell(errors(results, f"{activation}_{method}", gaussian_column(z)))
               for z in samples)]
            for activation, method in table_cells(config) if method in DROPCONNECT_METHODS]
    header = ["activation", "net", "mean a(pWv)", *(f"Gaussian Z={z}" for z in samples)]
    return ["## Mean against Gaussian inference (`inference.png`)", "",
            "Test error %. Gaussian inference samples each DropConnect pre-activation from "
            "N(pWv, p(1−p)(W⊙W)(v⊙v)) and averages the activation over Z samples, layer by "
            "layer (Wan et al. 2013, Sec. 3).", "", analysis.markdown_table(header, rows), ""]


def size_widths(config: ml_collections.ConfigDict) -> list[tuple[int, str]]:
    """Fig. 2a's widths (scaled) and the arm prefix of each, the table's width among them."""
    table_width = config.study.widths[0]
    entries = [(w, f"size{w}_") for w in config.study.sizes] + [(table_width, "relu_")]
    return [(scaled(config, (w,))[0], prefix) for w, prefix in sorted(entries)]


def sizes_lines(results: Results) -> list[str]:
    config = results.config
    rows = [[str(width), *(analysis.cell(errors(results, prefix + m)) for m in FIGURE_METHODS)]
            for width, prefix in size_widths(config)]
    return ["## Test error against the hidden layers' width (Fig. 2a, `sizes.png`)", "",
            "relu, two hidden layers of the width, each method at its relu cell's lr0; test "
            "error %. The paper (MNIST): both regularizers ahead of no drop as the layers grow.",
            "", analysis.markdown_table(["width", *(METHODS[m][0] for m in FIGURE_METHODS)],
                                        rows), ""]


def rate_values(results: Results, method: str) -> list[float]:
    return [results.settings[name][RATE_AXES[method]] for name in results.arms
            if name.startswith(f"rates_{method}_")]


def rates_lines(results: Results) -> list[str]:
    config = results.config
    values = sorted({v for method in RATE_AXES for v in rate_values(results, method)})
    rows = [[f"{rate:g}", *(analysis.cell(errors(results, f"rates_{method}_{rate:g}"))
                            if rate in rate_values(results, method) else "—"
                            for method in RATE_AXES)] for rate in values]
    widths = "-".join(map(str, scaled(config, config.study.rates_widths)))
    return ["## Test error against the drop rate (Fig. 2b, `rates.png`)", "",
            f"relu {widths} net (the paper's 400-400 × {config.study.width_scale:g}), each "
            "method at its relu cell's lr0 (one SGD step at every rate in the papers' form); "
            "rate 0 is the net without drop; test error %.", "",
            analysis.markdown_table(["drop rate", "dropout", "DropConnect"], rows), ""]


def sections(results: Results, verdicts: list[Verdict]) -> list[str]:
    parts = results.config.study.parts
    return [*table_lines(results), *inference_lines(results),
            *(sizes_lines(results) if "sizes" in parts else []),
            *(rates_lines(results) if "rates" in parts else []),
            "Figures: `sweep.png` (the tuning), `inference.png` (test error against Z), "
            "`convergence.png` (Fig. 2c: train and test error against epochs, relu), "
            "`sizes.png` (Fig. 2a), `rates.png` (Fig. 2b).", ""]


# Figures ------------------------------------------------------------------------------------


def figures(results: Results, directory: Path) -> list[Path]:
    from bnreg.study.figures import sweep_figure

    parts = results.config.study.parts
    return [sweep_figure(results, directory / "sweep.png"),
            plot_inference(results, directory / "inference.png"),
            plot_convergence(results, directory / "convergence.png"),
            *([plot_sizes(results, directory / "sizes.png")] if "sizes" in parts else []),
            *([plot_rates(results, directory / "rates.png")] if "rates" in parts else [])]


def plot_inference(results: Results, path: Path) -> Path:
    """Per activation, Gaussian inference's test error against Z for each DropConnect net, its
    mean inference dashed (mean ± std over seeds)."""
    from bnreg import plots

    config = results.config
    samples = list(config.evaluation.gaussian_samples)
    activations = config.study.activations
    figure, axes = plots.figure(1, len(activations), width=4, height=3.4)
    for ax, activation in zip(axes[0], activations, strict=True):
        for color, method in enumerate(DROPCONNECT_METHODS):
            arm = f"{activation}_{method}"
            if arm not in results.arms:
                continue
            values = np.stack([errors(results, arm, gaussian_column(z)) for z in samples])
            plots.versus(ax, samples, values, label=f"{METHODS[method][0]}, Gaussian",
                         color=f"C{color}")
            ax.axhline(errors(results, arm).mean(), color=f"C{color}", linestyle="--",
                       label=f"{METHODS[method][0]}, mean")
        ax.set(title=activation, xlabel="Z, samples per pre-activation", ylabel="test error %")
        ax.legend(fontsize=6)
    figure.suptitle(f"{config.dataset}: mean against Gaussian DropConnect inference")
    return plots.save(figure, path)


def plot_convergence(results: Results, path: Path) -> Path:
    """Fig. 2c: train (dashed) and test (solid) error against epochs of the relu nets without
    drop, with dropout and with DropConnect, mean ± std over seeds."""
    from bnreg import plots

    config = results.config
    images = config.train_subset or results.summary("final", "relu_none")["num_train_examples"]
    figure, ax = plots.figure(1, 1, width=6.5, height=4)
    for color, method in enumerate(FIGURE_METHODS):
        arm = f"relu_{method}"
        if arm not in results.arms:
            continue
        for column, style, kind in (("accuracy", "-", "test"),
                                    ("accuracy_on_train", "--", "train")):
            steps, values = results.curves(arm, column)
            plots.band(ax[0, 0], steps * config.batch_size / images, 100 * (1 - values),
                       label=f"{METHODS[method][0]}, {kind}", color=f"C{color}",
                       linestyle=style)
    ax[0, 0].set(xlabel="epoch", ylabel="error %")
    ax[0, 0].legend(fontsize=7)
    figure.suptitle(f"Fig. 2c: {config.dataset}, relu, {len(config.sweep.seed)} seeds")
    return plots.save(figure, path)


def plot_sizes(results: Results, path: Path) -> Path:
    """Fig. 2a: test error against the hidden layers' width, the three methods."""
    from bnreg import plots

    entries = size_widths(results.config)
    figure, ax = plots.figure(1, 1, width=6, height=4)
    for method in FIGURE_METHODS:
        values = np.stack([errors(results, prefix + method) for _, prefix in entries])
        plots.versus(ax[0, 0], [w for w, _ in entries], values, label=METHODS[method][0])
    ax[0, 0].set(xlabel="units per hidden layer", ylabel="test error %")
    ax[0, 0].legend()
    figure.suptitle(f"Fig. 2a: {results.config.dataset}, relu, two hidden layers")
    return plots.save(figure, path)


def plot_rates(results: Results, path: Path) -> Path:
    """Fig. 2b: test error against the drop rate, dropout and DropConnect, mean ± std."""
    from bnreg import plots

    config = results.config
    figure, ax = plots.figure(1, 1, width=6, height=4)
    for method in RATE_AXES:
        values = rate_values(results, method)
        errors_by_rate = np.stack([errors(results, f"rates_{method}_{rate:g}")
                                   for rate in values])
        plots.versus(ax[0, 0], values, errors_by_rate, label=METHODS[method][0], log=False)
    ax[0, 0].set(xlabel="drop rate (1 − p)", ylabel="test error %")
    ax[0, 0].legend()
    figure.suptitle(f"Fig. 2b: {config.dataset}, relu "
                    f"{'-'.join(map(str, scaled(config, config.study.rates_widths)))}")
    return plots.save(figure, path)


STUDY = Study(
    name="dropconnect",
    title="DropConnect against dropout and no drop — Wan et al. 2013, measured",
    arms=arms, claims=claims, setup=setup, sections=sections, figures=figures, check=check)


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, STUDY, workdir="runs/dropconnect")
