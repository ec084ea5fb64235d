"""Accelerating BN networks — Ioffe & Szegedy 2015, Sec. 4.2, Fig. 2 and Fig. 3.

A small Inception-style convnet (:class:`bnreg.models.Inception`: a 3×3 stem and a 2×2 max-pool,
inception modules of 1×1, 3×3, two-3×3 and average-pool-projection branches — BN-Inception pools
its projection branches by averaging in most modules (Fig. 5) —, global average pooling,
softmax), trained as the paper's six nets:

* *Inception*: no BN, dropout (rate ``study.dropout``) before the classifier, L2 λ, lr0 chosen on
  a validation split for this net only, the rate decayed ×``study.decay_rate`` every
  ``study.decay_steps`` steps;
* *BN-Baseline*: the same with BN before every nonlinearity;
* *BN-x5*, *BN-x30*: lr0 × 5 and × 30 with the accelerating changes (Sec. 4.2.1): no dropout,
  λ ÷ 5, the decay 6× faster per step;
* *BN-x5-Sigmoid*: BN-x5 with sigmoid nonlinearities;
* *Inception-Sigmoid*: the Inception with sigmoids and no BN (the paper: it never trains).

The other accelerating changes have no counterpart here: no local response normalisation to
remove, no photometric distortion to reduce, and the engine already draws a fresh permutation of
the training data every epoch ("more thorough shuffling").

The regime (design §3, §4). The decay is per step, as GoogLeNet's per-epoch decay (×0.96 every 8
epochs) is, never tied to the run's length: at the step where the paper compares, BN-x5's rate
was still ≈ 0.2·lr0, and a decay fitted to a CPU run's end would freeze the accelerated nets. The
nets train on a class-stratified subset of ``train_subset`` images (per seed) for ~38 epochs, so
that within a CPU budget the Inception can plateau (the speed claims' gate) and the nets can
overfit (the regularization claim's gate); every gate's numbers are in results.md. Test accuracy
is tracked on a fixed 2,000-image subset of the test set (BN with Alg. 2's statistics), on the
whole test set at ``evaluation.full_steps`` and at the end; training accuracy on 500 images of
each seed's subset.

Commands::

  # the full study on Fashion-MNIST, which Debian's dataset-fashion-mnist package provides
  python -m experiments.bn_accelerate --workdir=runs/bn_accelerate \\
      --config.dataset=fashion_mnist
  # results.md and the figures again from the committed records alone
  python -m experiments.bn_accelerate --analyze \\
      --workdir=experiments/results/bn_accelerate_fashion_mnist
  # the paper's regime at a larger scale, for an accelerator: the whole training split, wider
  python -m experiments.bn_accelerate --workdir=runs/bn_accelerate_paper \\
      --config=experiments/bn_accelerate.py:paper
  # CIFAR-10 through tfds (where a user has it)
  python -m experiments.bn_accelerate --workdir=runs/bn_accelerate_cifar10 \\
      --config=experiments/bn_accelerate.py:cifar10
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_accelerate --workdir=/tmp/bn_accelerate_smoke \\
      --config=experiments/bn_accelerate.py:smoke
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.config import default_config
from bnreg.study import (
    PROTOCOL_KEYS,
    Arm,
    Chosen,
    Claim,
    Measure,
    Results,
    Study,
    Verdict,
    all_of,
    configure,
    final,
    gap,
    overfits,
    plateaued,
    steps_to,
)
from bnreg.study.report import cell, steps_to_thresholds


class Net(NamedTuple):
    """One of the paper's nets: its label, BN or not, activation, its lr0 as a multiple of the
    Inception's, whether it takes the accelerating changes, and the paper's Fig. 3 row (steps to
    the Inception's maximum, maximum accuracy)."""

    label: str
    bn: bool
    activation: str
    lr_factor: float
    accelerated: bool
    paper: tuple[str, str]


NETS: dict[str, Net] = {
    "inception": Net("Inception", False, "relu", 1, False, ("31.0M", "72.2%")),
    "bn_baseline": Net("BN-Baseline", True, "relu", 1, False, ("13.3M", "72.7%")),
    "bn_x5": Net("BN-x5", True, "relu", 5, True, ("2.1M", "73.0%")),
    "bn_x30": Net("BN-x30", True, "relu", 30, True, ("2.7M", "74.8%")),
    "bn_x5_sigmoid": Net("BN-x5-Sigmoid", True, "sigmoid", 5, True, ("—", "69.8%")),
    "inception_sigmoid": Net("Inception-Sigmoid", False, "sigmoid", 1, False,
                             ("—", "never trains")),
}
DECAY_SPEEDUP, WEIGHT_DECAY_DIVISOR = 6, 5  # the accelerating changes (Sec. 4.2.1)
FIGURES = ("fig2.png", "sweep.png")

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {  # for an accelerator: the whole training split, the wider net, longer
        "train_subset": 0, "num_steps": 50_000, "eval_every": 1_000, "checkpoint_every": 5_000,
        "evaluation.full_steps": (10_000, 25_000), "model.inception_stem": 32,
        "model.inception_modules": ((16, 16, 24, 8, 12, 8), (32, 24, 48, 12, 24, 16)),
        "unroll_steps": False, "steps_per_call": 0,
        "study.decay_steps": 15_000,  # 8 epochs of 60,000 images at batch 32
    },
    "cifar10": {
        "dataset": "cifar10", "train_subset": 0, "num_steps": 40_000, "eval_every": 1_000,
        "checkpoint_every": 5_000, "evaluation.full_steps": (10_000, 20_000),
        "model.inception_stem": 32,
        "model.inception_modules": ((16, 16, 24, 8, 12, 8), (32, 24, 48, 12, 24, 16)),
        "study.decay_steps": 12_500, "study.validation_fraction": 0.2,
    },
    "smoke": {
        "dataset": "digits", "train_subset": 600, "num_steps": 60, "eval_every": 10,
        "checkpoint_every": 30, "eval_batch_size": 256, "evaluation.train_examples": 100,
        "evaluation.subset": 100, "evaluation.full_steps": (30,),
        "evaluation.population_batches": 2, "model.inception_stem": 4,
        "model.inception_modules": ((2, 2, 3, 2, 2, 2),), "unroll_steps": False,
        "steps_per_call": 0, "study.validation_fraction": 0.2,
        "study.learning_rates": (0.01, 0.1), "study.decay_steps": 30, "sweep.seed": (0, 1),
        # Each net is a compilation: the smoke runs the claims' extremes.
        "study.nets": ("inception", "bn_x5", "bn_x5_sigmoid", "inception_sigmoid"),
    },
}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration: ``"full"`` (the CPU budget), ``"paper"`` (an accelerator),
    ``"cifar10"`` or ``"smoke"`` (scikit-learn's digits, seconds)."""
    config = default_config()
    config.update_from_flattened_dict({
        "dataset": "mnist", "binarize": False, "batch_size": 32, "train_subset": 2_000,
        "num_steps": 2_400, "eval_every": 100, "checkpoint_every": 1_200,
        "eval_batch_size": 1_000, "evaluation.subset": 2_000, "evaluation.full_steps": (1_200,),
        "evaluation.train_examples": 500, "evaluation.final": (),
        "evaluation.population_batches": 50, "model.name": "inception",
        "model.kernel_init": "he_normal", "model.inception_stem": 16,
        "model.inception_stem_pool": True, "model.inception_branch_pool": "avg",
        "model.inception_modules": ((8, 8, 12, 4, 6, 4), (16, 12, 24, 6, 12, 8)),
        "model.inception_pool_after": (0,), "model.bn_momentum": 0.9,
        "optimizer.momentum": 0.9, "optimizer.schedule": "exponential", "probe.layers": (),
        # A diverged net is recorded as such (BN-x30's rate may be too high for a net).
        "nonfinite": "record",
        # XLA:CPU runs convolutions ~4× slower inside a loop (benchmarks/convnet_throughput.py).
        "unroll_steps": True, "steps_per_call": 5,
    })
    config.sweep.seed = (0, 1, 2)
    config.study = ml_collections.ConfigDict({
        **PROTOCOL_KEYS,
        "nets": tuple(NETS),
        "learning_rates": (0.01, 0.03, 0.1, 0.3),
        # Half the run: a convnet's members share one CPU device (bnreg.engine.devices), so the
        # tuning run has one core.
        "tune_steps": 1_200,
        "dropout": 0.4,  # before the classifier, Inception's rate
        "weight_decay": 1e-4,
        # GoogLeNet's decay, ×0.96 every 8 epochs: here 8 epochs of the 2,000-image subset.
        "decay_rate": 0.96, "decay_steps": 500,
        # A net has plateaued when its mean test accuracy over the last fifth of the
        # evaluations is at most this many points above the fifth before.
        "plateau_points": 0.5,
        # A net overfits when its training accuracy ends this many points above its test's.
        "overfit_points": 2.0,
        "thresholds": (0.75, 0.80, 0.825),
    })
    return configure(config, VARIANTS, variant)


def net_overrides(config: ml_collections.ConfigDict, net: Net) -> dict[str, Any]:
    """One net's overrides: BN, activation and the accelerating changes (no dropout, λ ÷ 5,
    the decay 6× faster per step) where the net takes them."""
    study = config.study
    speedup = DECAY_SPEEDUP if net.accelerated else 1
    return {
        "model.norm": "batch" if net.bn else None, "model.activation": net.activation,
        "model.hidden_dropout": 0.0 if net.accelerated else study.dropout,
        "optimizer.weight_decay": study.weight_decay / (WEIGHT_DECAY_DIVISOR if net.accelerated
                                                        else 1),
        "optimizer.decay_rate": study.decay_rate,
        "optimizer.decay_steps": max(1, round(study.decay_steps / speedup)),
    }


def nets(config: ml_collections.ConfigDict) -> dict[str, Net]:
    """The nets ``study.nets`` runs, in the paper's order.

    Raises:
      ValueError: unknown nets, or the Inception or BN-x5 left out (the primary claim's).
    """
    chosen = tuple(config.study.nets)
    if not set(chosen) <= set(NETS) or not {"inception", "bn_x5"} <= set(chosen):
        raise ValueError(f"config.study.nets {chosen} must name nets of {list(NETS)}, "
                         "'inception' and 'bn_x5' among them.")
    return {name: net for name, net in NETS.items() if name in chosen}


def arms(config: ml_collections.ConfigDict) -> list[Arm]:
    """The Inception tuned over ``study.learning_rates``; every net at its multiple of the
    Inception's choice."""
    grid = {"learning_rate": tuple(config.study.learning_rates)}
    return [Arm(name, net.label, net_overrides(config, net),
                tune=grid if name == "inception" else {},
                settings={} if name == "inception" else {
                    "learning_rate": Chosen("inception", "learning_rate", net.lr_factor)})
            for name, net in nets(config).items()]


def learned(arm: str) -> Measure:
    """Per seed, how far ``arm``'s test accuracy ever rose above its start (points)."""
    def read(results: Results) -> pd.Series:
        _, curves = results.curves(arm)
        return pd.Series(curves.max(1) - curves[:, 0], index=results.seeds(arm))

    return Measure(f"rise of {arm}'s test accuracy", read, arms=(arm,))


def nothing(arm: str) -> Measure:
    return Measure("0", lambda results: pd.Series(0.0, index=results.seeds(arm)), arms=(arm,))


def ran(results: Results) -> dict[str, Net]:
    """The nets the results hold, in the paper's order."""
    return {name: net for name, net in NETS.items() if name in results.arms}


def claims(config: ml_collections.ConfigDict) -> list[Claim]:
    """Fig. 3's claims: fewer steps to the Inception's maximum (gated on the Inception's
    plateau), higher final accuracy (gated on both nets' plateaus), BN-x30 above BN-x5, sigmoid
    nets trainable with BN only, and BN as a regularizer (gated on the Inception overfitting)."""
    points = config.study.plateau_points

    def plateau(name: str):
        return plateaued(name, tolerance=points, label=NETS[name].label)

    def faster(name: str, primary: bool = False) -> Claim:
        return Claim(
            f"faster_{name}", f"{NETS[name].label} reaches the Inception's highest test "
            "accuracy in fewer steps", f"Fig. 3 (ImageNet): {NETS[name].paper[0]} vs 31.0M steps",
            steps_to(name, "inception", target="max"),
            steps_to("inception", "inception", target="max"), "below",
            gate=plateau("inception"), primary=primary)

    def higher(name: str, reference: str) -> Claim:
        return Claim(
            f"higher_{name}_{reference}", f"{NETS[name].label} ends at a higher test accuracy "
            f"than {NETS[reference].label}",
            f"Fig. 3 (ImageNet): {NETS[name].paper[1]} vs {NETS[reference].paper[1]}",
            final(name), final(reference), "above",
            gate=all_of(plateau(name), plateau(reference)))

    found = [
        faster("bn_x5", primary=True), faster("bn_baseline"), faster("bn_x30"),
        higher("bn_baseline", "inception"), higher("bn_x5", "inception"),
        higher("bn_x30", "bn_x5"),
        Claim("sigmoid_trainable", "With BN, sigmoid nets train: BN-x5-Sigmoid ends above "
              "Inception-Sigmoid", "Sec. 4.2.2 (ImageNet): 69.8% vs never trains",
              final("bn_x5_sigmoid"), final("inception_sigmoid"), "above"),
        Claim("sigmoid_never", "Inception-Sigmoid never trains: its test accuracy rises less "
              "than 5 points above its start", "Sec. 4.2.2 (ImageNet): never trains",
              learned("inception_sigmoid"), nothing("inception_sigmoid"), "agree",
              tolerance=5.0),
        Claim("regularizer", "Without dropout, BN-x5 overfits less than the Inception with "
              "dropout (train − test accuracy at the end)",
              "Sec. 4.2.1 (ImageNet): removing dropout from BN-Inception does not increase "
              "overfitting", gap("bn_x5"), gap("inception"), "below",
              gate=overfits("inception", margin=config.study.overfit_points,
                            label="Inception")),
    ]
    ran = set(nets(config))
    return [claim for claim in found if {arm for measure in (claim.first, claim.second)
                                          for arm in measure.arms} <= ran]


def setup(results: Results) -> list[str]:
    config, study = results.config, results.config.study
    summary = results.summary("final", "inception")
    model = config.model
    images = config.train_subset or summary["num_train_examples"]
    epochs = config.num_steps * config.batch_size / images
    subset = (f"a class-stratified subset of {images:,} training images per seed"
              if config.train_subset else f"the {images:,} training images")
    return [
        f"Dataset: **{config.dataset}** ({summary['source']}); the paper's numbers are "
        f"ImageNet's. The nets train on {subset}. Net: a {model.inception_stem}-channel stem, "
        f"{len(model.inception_modules)} inception modules "
        f"{tuple(map(tuple, model.inception_modules))} with {model.inception_branch_pool}-pool "
        f"projection branches, global average pooling; {config.num_steps:,} steps of batch "
        f"{config.batch_size} ({epochs:.1f} epochs), SGD momentum "
        f"{config.optimizer.momentum:g}, rate lr0 · {study.decay_rate:g}^(t/"
        f"{study.decay_steps:,}) (T ÷ {DECAY_SPEEDUP} for the accelerated nets), L2 λ = "
        f"{study.weight_decay:g} (÷ {WEIGHT_DECAY_DIVISOR}), dropout "
        f"{study.dropout:g} before the classifier (none in the accelerated nets). Seeds "
        f"{list(config.sweep.seed)}. Curves: test accuracy on {config.evaluation.subset:,} test "
        f"images every {config.eval_every} steps, training accuracy on "
        f"{config.evaluation.train_examples} images of each seed's subset; final accuracies on "
        "the whole test set; BN nets with Alg. 2's statistics.", "",
    ]


def fig3_lines(results: Results) -> list[str]:
    """Fig. 3's table: per net, lr0, the steps to the Inception's highest (subset) test
    accuracy, the speed-up, the final (whole test set) accuracy, the train − test gap."""
    inception_steps = steps_to("inception", "inception", target="max").read(results)
    rows = []
    for name, net in ran(results).items():
        measure = steps_to(name, "inception", target="max")
        found, censored = measure.read(results), measure.censored(results)
        reached = found.to_numpy()
        steps_cell = cell(reached, digits=0) + (
            f" ({censored} never: counted at the last step)" if censored else "")
        speedup = ("—" if censored else
                   cell(inception_steps.to_numpy() / np.maximum(reached, 1)) + "×")
        rows.append([net.label, f"{results.settings[name]['learning_rate']:g}", steps_cell,
                     speedup, cell(100 * results.finals(name)),
                     cell(gap(name).read(results) * 100), *net.paper])
    header = ["net", "lr0", "steps to the Inception's max", "speed-up",
              "final test accuracy %", "train − test, points", "paper: steps", "paper: max"]
    return ["## Fig. 3: steps to the Inception's highest accuracy", "",
            "Per seed, the first evaluation at or above the Inception's highest test accuracy "
            "on the same seed (the test subset's curve); mean ± std over seeds. The paper's "
            "steps are ImageNet training steps of batch 32.", "",
            analysis.markdown_table(header, rows), ""]


def threshold_lines(results: Results) -> list[str]:
    return ["## Steps to fixed accuracies", "",
            "Every net's speed without a reference that must plateau (the test subset's "
            "curves).", "",
            steps_to_thresholds(results, list(ran(results)), results.config.study.thresholds), ""]


def sections(results: Results, verdicts: list[Verdict]) -> list[str]:
    return [*fig3_lines(results), *threshold_lines(results),
            "Figures: `fig2.png` (test accuracy against steps, mean ± std over seeds, the whole "
            "test set's milestones as points; each net's learning rate against steps), "
            "`sweep.png` (the Inception's tuning).", ""]


def learning_rates(results: Results, name: str, steps: np.ndarray) -> np.ndarray:
    """``name``'s learning rate at ``steps`` (the exponential decay of :func:`net_overrides`)."""
    overrides = net_overrides(results.config, NETS[name])
    return (results.settings[name]["learning_rate"]
            * overrides["optimizer.decay_rate"] ** (steps / overrides["optimizer.decay_steps"]))


def figures(results: Results, directory: Path) -> list[Path]:
    from bnreg.study.figures import sweep_figure

    return [plot_fig2(results, directory / "fig2.png"),
            sweep_figure(results, directory / "sweep.png")]


def plot_fig2(results: Results, path: Path) -> Path:
    """Fig. 2: test accuracy against steps of every net (mean ± std band; the whole test set at
    the full-evaluation steps and the end as points), and each net's learning rate against steps
    (log scale): the accelerated nets' rate still high where they overtake."""
    from bnreg import plots

    config = results.config
    figure, axes = plots.figure(1, 2, width=6, height=4.4)
    ax, rate_ax = axes[0]
    for color, (name, net) in enumerate(ran(results).items()):
        steps, curves = results.curves(name)
        plots.band(ax, steps, 100 * curves, label=net.label, color=f"C{color}")
        if config.evaluation.full_steps:
            rows = results.history[(results.history["arm"] == name)
                                   & results.history["accuracy_full"].notna()]
            full = rows.groupby("step")["accuracy_full"].mean()
            ax.plot(full.index, 100 * full.to_numpy(), "o", color=f"C{color}")
        ax.plot([steps[-1]], [100 * results.finals(name).mean()], "o", color=f"C{color}")
        rate_ax.plot(steps, learning_rates(results, name, steps), label=net.label,
                     color=f"C{color}")
    ax.set(xlabel="training step", ylabel="test accuracy %")
    ax.legend(fontsize=7)
    rate_ax.set_yscale("log")
    rate_ax.set(xlabel="training step", ylabel="learning rate", title="The decay, per step")
    figure.suptitle(f"Fig. 2: {config.dataset}, batch {config.batch_size}, "
                    f"{len(config.sweep.seed)} seeds; points: the whole test set")
    return plots.save(figure, path)


STUDY = Study(
    name="bn_accelerate",
    title="Accelerating BN networks — Ioffe & Szegedy 2015, Fig. 2 and 3, measured",
    arms=arms, claims=claims, setup=setup, sections=sections, figures=figures)


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, STUDY, workdir="runs/bn_accelerate")
