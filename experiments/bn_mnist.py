"""Batch Normalization on MNIST — Ioffe & Szegedy 2015, Fig. 1 (a, b, c).

The paper's network: 784-100-100-100-10, sigmoid hidden units, weights from a small random
Gaussian (here N(0, 0.1²)), softmax cross-entropy, 50,000 steps of 60 examples, without BN and with
BN before every hidden nonlinearity (the dense layer then has no bias). Fig. 1a: test accuracy vs
steps — BN trains faster and reaches higher accuracy. Fig. 1b,c: the {15, 50, 85}th percentiles of
the input to one sigmoid of the last hidden layer over training — drifting without BN, stable with
BN.

Commands::

  # the full study on MNIST (needs MNIST through tfds: internet or a prepared data dir)
  python -m experiments.bn_mnist --workdir=runs/bn_mnist
  # the same on Fashion-MNIST, which Debian's dataset-fashion-mnist package provides offline
  python -m experiments.bn_mnist --workdir=runs/bn_fashion_mnist --config.dataset=fashion_mnist
  # results.md and the figures again from the committed records alone, without training
  python -m experiments.bn_mnist --analyze --workdir=experiments/results/bn_fashion_mnist
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_mnist --workdir=/tmp/bn_smoke --config=experiments/bn_mnist.py:smoke

Protocol (:mod:`bnreg.study`) — the paper states neither optimizer nor learning rate: plain SGD
for both nets, paired by seed (same initial weights, same batches). Both nets are tuned over a log
grid of learning rates on a validation split; the rates of the final runs come from the
*baseline's* choice only — (i) its best rate, (ii) ``high_lr_factor`` × it (BN's claim that it
tolerates higher rates, the paper's "BN-x5"), (iii) ``low_lr_factor`` × it, a small rate at which
the baseline is still climbing at 50k steps, as in the paper's Fig. 1a — so nothing is tuned in
BN's favour. The BN net is evaluated with Alg. 2's population statistics (the paper's inference
network); the EMA (momentum 0.9, PyTorch's default, chosen in ``experiments/bn_ema_momentum.py``;
it never enters training), as tracked and settled on the final weights, is reported beside it.

The input drift of Fig. 1b,c is measured from ``study.drift_from`` on: the first evaluations are
the nets' climb from their initial weights, the same transient with and without BN, and a
max − min range over the whole run would measure it rather than the drift during training. With
BN the sigmoid's input is γ·x̂ + β, so its percentiles move with the learned γ and β, drawn beside.
"""

from __future__ import annotations

from pathlib import Path

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
    configure,
    final,
    plateaued,
    steps_to_final,
)
from bnreg.study.report import steps_to_thresholds

NETS = {"no_bn": ("without BN", None), "bn": ("with BN", "batch")}
SETTINGS = ("i", "ii", "iii")
FIGURES = ("fig1a.png", "fig1bc.png", "sweep.png")
# Within this many points the EMA's and Alg. 2's inference networks "agree".
EMA_AGREEMENT_POINTS = 0.3

VARIANTS = {
    "smoke": {
        "dataset": "digits", "num_steps": 400, "eval_every": 20, "checkpoint_every": 200,
        "evaluation.population_batches": 10, "study.learning_rates": (0.1, 1.0),
        "study.tune_steps": 100, "study.tune_eval_every": 50, "study.tune_seeds": (0,),
        "study.validation_fraction": 0.2, "study.milestones": (100, 200, 400),
        "study.drift_from": 100, "sweep.seed": (0, 1),
    },
}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration; ``variant="smoke"`` runs in seconds on scikit-learn's digits."""
    config = default_config()
    config.update_from_flattened_dict({
        "dataset": "mnist", "model.hidden_sizes": (100, 100, 100), "model.activation": "sigmoid",
        "model.kernel_init": "normal", "model.init_stddev": 0.1, "batch_size": 60,
        "num_steps": 50_000, "eval_every": 1_000, "checkpoint_every": 5_000,
        "model.bn_momentum": 0.9, "evaluation.bn_statistics": "population",
        "evaluation.final": ("ema", "settled_ema"), "evaluation.population_batches": 100,
        "probe.layers": (-1,), "probe.units": (0, 1, 2), "probe.histogram_bins": 0,
    })
    # As many seeds as keep the study within 15 minutes on a 2-core CPU.
    config.sweep.seed = tuple(range(5))
    config.study = ml_collections.ConfigDict({
        **PROTOCOL_KEYS,
        "tune_seeds": (0, 1), "tune_steps": 10_000, "tune_eval_every": 2_000,
        "validation_fraction": 1 / 12,  # 5,000 of MNIST's 60,000 training examples
        "learning_rates": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        "high_lr_factor": 5.0, "low_lr_factor": 0.05,
        "milestones": (5_000, 10_000, 20_000, 50_000),
        "drift_from": 5_000,
        # A reference "has plateaued" when its mean accuracy over the last fifth of the
        # evaluations is at most this many points above the fifth before.
        "plateau_points": 0.2,
        # Steps to these many points below the no-BN net's final accuracy at (i).
        "threshold_points": (3.0, 2.0, 1.0),
    })
    return configure(config, VARIANTS, variant)


def factors(config: ml_collections.ConfigDict) -> dict[str, float]:
    return {"i": 1.0, "ii": config.study.high_lr_factor, "iii": config.study.low_lr_factor}


def arms(config: ml_collections.ConfigDict) -> list[Arm]:
    """Both nets tuned over ``study.learning_rates``; each trained at (i), (ii), (iii), the
    no-BN net's choice × ``factors`` (one run per net, the three rates its members)."""
    grid = {"learning_rate": tuple(config.study.learning_rates)}
    tuned = [Arm(net, label, {"model.norm": norm}, tune=grid, final=False)
             for net, (label, norm) in NETS.items()]
    finals = [Arm(f"{net}_{setting}", f"{label}, lr ({setting})", {"model.norm": norm},
                  settings={"learning_rate": Chosen("no_bn", "learning_rate", factor)}, run=net)
              for net, (label, norm) in NETS.items()
              for setting, factor in factors(config).items()]
    return tuned + finals


def check(config: ml_collections.ConfigDict) -> None:
    """The study's own keys.

    Raises:
      ValueError: factors that make two of (i), (ii), (iii) one rate; no milestone within the
        run; a drift start outside it.
    """
    if len(set(factors(config).values())) < 3:
        raise ValueError(
            f"config.study.high_lr_factor ({config.study.high_lr_factor}) and low_lr_factor "
            f"({config.study.low_lr_factor}) must differ from 1 and from each other: (i), (ii) "
            "and (iii) are three distinct rates.")
    if not any(m <= config.num_steps for m in config.study.milestones):
        raise ValueError(f"config.study.milestones {tuple(config.study.milestones)} must hold a "
                         f"step within config.num_steps ({config.num_steps}).")
    if not 0 <= config.study.drift_from < config.num_steps:
        raise ValueError(f"config.study.drift_from ({config.study.drift_from}) must be a step "
                         f"within the run (0 to {config.num_steps - 1}).")


def drift(results: Results, arm: str, part: str = "median") -> np.ndarray:
    """How far a probed unit's input moves during training (Fig. 1b,c): per seed, the range
    (max − min over the evaluations from ``study.drift_from`` on) of its median (``part``
    ``"median"``) or of its outer-percentile spread (``"spread"``), averaged over the probed
    units of the first probed layer."""
    steps, values = results.curves(arm, "probe_percentiles")  # (seeds, T, layers, units, q)
    values = values[:, steps >= results.config.study.drift_from, 0]
    measure = values[..., values.shape[-1] // 2] if part == "median" else (
        values[..., -1] - values[..., 0])
    return np.ptp(measure, axis=1).mean(-1)


def drift_measure(arm: str, label: str) -> Measure:
    return Measure(f"median drift of {label}",
                   lambda results: pd.Series(drift(results, arm), index=results.seeds(arm)),
                   unit="", scale=1.0, arms=(arm,))


def claims(config: ml_collections.ConfigDict) -> list[Claim]:
    """The paper's claims: faster and higher at (i) and (iii), gated on the baseline's plateau;
    BN's tolerance of a 5× rate; the stable input distribution."""
    points = config.study.plateau_points
    found = []
    for setting in ("i", "iii"):
        gate = plateaued(f"no_bn_{setting}", tolerance=points,
                         label=f"the no-BN net at ({setting})")
        found += [
            Claim(f"faster_{setting}", f"BN reaches the no-BN net's final accuracy in fewer "
                  f"steps, lr ({setting})", "Fig. 1a (MNIST): BN trains faster",
                  steps_to_final(f"bn_{setting}", f"no_bn_{setting}"),
                  steps_to_final(f"no_bn_{setting}", f"no_bn_{setting}"), "below", gate=gate,
                  primary=setting == "i"),
            Claim(f"higher_{setting}", f"BN ends at a higher test accuracy, lr ({setting})",
                  "Fig. 1a (MNIST): BN reaches a higher accuracy",
                  final(f"bn_{setting}"), final(f"no_bn_{setting}"), "above", gate=gate),
        ]
    found.append(Claim(
        "higher_rate", "At 5× the no-BN net's best rate, BN ends above the no-BN net, lr (ii)",
        "Sec. 3.3 (ImageNet): BN enables higher learning rates",
        final("bn_ii"), final("no_bn_ii"), "above"))
    found += [Claim(
        f"stable_{setting}", f"The last layer's sigmoid input drifts less with BN (median, from "
        f"step {config.study.drift_from:,}), lr ({setting})",
        "Fig. 1b,c (MNIST): much more stable with BN",
        drift_measure(f"no_bn_{setting}", "no BN"), drift_measure(f"bn_{setting}", "BN"),
        "above") for setting in ("i", "iii")]
    return found


def rate_label(results: Results, arm: str) -> str:
    setting = arm.rsplit("_", 1)[1]
    return f"{results.settings[arm]['learning_rate']:g} ({setting})"


def setup(results: Results) -> list[str]:
    config = results.config
    summary = results.summary("final", "bn_i")
    binarized = config.dataset == "mnist" if config.binarize is None else config.binarize
    sizes = [int(np.prod(summary["input_shape"])), *config.model.hidden_sizes, 10]
    return [
        f"Dataset: **{config.dataset}** ({summary['source']}), input "
        f"{'binarized' if binarized else 'grey levels in [0, 1]'}. Network "
        f"{'-'.join(map(str, sizes))} {config.model.activation}, N(0, "
        f"{config.model.init_stddev}²) init, plain SGD, batch {config.batch_size}, "
        f"{config.num_steps:,} steps, seeds {list(config.sweep.seed)}. The rates: (i) the "
        f"no-BN net's choice on validation, (ii) {config.study.high_lr_factor:g} × (i), (iii) "
        f"{config.study.low_lr_factor:g} × (i). Test accuracy every {config.eval_every:,} "
        "steps; the BN net with Alg. 2's population statistics "
        f"({config.evaluation.population_batches} training batches). Accuracies in %, mean ± "
        "std over seeds.", "",
    ]


def _milestone_cells(results: Results, arm: str, milestones) -> list[str]:
    steps, values = results.curves(arm)
    return [analysis.cell(100 * values[:, list(steps).index(m)]) if m in steps else "—"
            for m in milestones]


def accuracy_lines(results: Results) -> list[str]:
    config = results.config
    milestones = [m for m in config.study.milestones if m <= config.num_steps]
    rows = []
    for setting in SETTINGS:
        for net, (label, _) in NETS.items():
            arm = f"{net}_{setting}"
            finals = [analysis.cell(100 * results.finals(arm, f"accuracy_{kind}"))
                      if net == "bn" else "—" for kind in ("ema", "settled_ema")]
            rows.append([label, rate_label(results, arm),
                         *_milestone_cells(results, arm, milestones), *finals])
    header = ["net", "lr", *(f"{m:,} steps" for m in milestones), "final, EMA tracked",
              "final, EMA settled"]
    return ["## Test accuracy (Fig. 1a)", "", analysis.markdown_table(header, rows), "",
            "The BN net's accuracies are with Alg. 2's statistics; the last two columns are "
            f"the same final weights with the EMA (momentum {config.model.bn_momentum:g}) as "
            "tracked in training and settled on the final weights.", ""]


def threshold_lines(results: Results) -> list[str]:
    reference = float(results.finals("no_bn_i").mean())
    thresholds = [reference - points / 100 for points in results.config.study.threshold_points]
    arms = [f"{net}_{s}" for s in SETTINGS for net in NETS]
    return ["## Steps to fixed accuracies", "",
            "Fixed thresholds below the no-BN net's final accuracy at (i) "
            f"({100 * reference:.2f}%): speed where a claim's gate fails, read without a "
            "plateaued reference.", "", steps_to_thresholds(results, arms, thresholds), ""]


def ema_lines(results: Results) -> list[str]:
    lines = [f"## EMA vs Alg. 2 inference (within {EMA_AGREEMENT_POINTS:g} points?)", "",
             "Alg. 2 − EMA final accuracy of the BN net per seed: mean ± std, its 95% interval "
             "and whether they agree (`experiments/bn_ema_momentum.py` studies the momentum).",
             ""]
    for setting in SETTINGS:
        arm = f"bn_{setting}"
        gaps = {kind: 100 * (results.finals(arm, "accuracy_population")
                             - results.finals(arm, f"accuracy_{kind}"))
                for kind in ("ema", "settled_ema")}
        texts = {kind: analysis.agreement_text(analysis.agreement(gap, EMA_AGREEMENT_POINTS))
                 for kind, gap in gaps.items()}
        lines.append(f"- lr {rate_label(results, arm)}: tracked {texts['ema']}; settled "
                     f"{texts['settled_ema']}.")
    return [*lines, ""]


def drift_lines(results: Results) -> list[str]:
    config = results.config
    rows = []
    for setting in ("i", "ii", "iii"):
        cells = []
        for part in ("median", "spread"):
            without, with_bn = (drift(results, f"{net}_{setting}", part) for net in NETS)
            cells += [analysis.cell(without), analysis.cell(with_bn),
                      f"{without.mean() / max(with_bn.mean(), 1e-12):.1f}×"]
        steps, scale = results.curves(f"bn_{setting}", "probe_bn_scale")
        _, bias = results.curves(f"bn_{setting}", "probe_bn_bias")
        late = steps >= config.study.drift_from
        cells += [analysis.cell(np.ptp(part[:, late, 0], axis=1).mean(-1)) for part in (scale,
                                                                                     bias)]
        rows.append([rate_label(results, f"bn_{setting}"), *cells])
    header = ["lr", "median drift, no BN", "median drift, BN", "ratio", "spread drift, no BN",
              "spread drift, BN", "ratio", "BN's γ range", "BN's β range"]
    return [
        "## Drift of a last-hidden-layer sigmoid's input (Fig. 1b,c)", "",
        f"From step {config.study.drift_from:,} on (the first evaluations are the climb from the "
        "initial weights): the range (max − min) of the input's median and of its 15–85th "
        "percentile spread, mean ± std over seeds of the mean over probed units "
        f"{list(config.probe.units)}; for the BN net also the range of the units' γ and β, "
        "which move its percentiles (the input is γ·x̂ + β).", "",
        analysis.markdown_table(header, rows), "",
    ]


def sections(results: Results, verdicts: list[Verdict]) -> list[str]:
    return [*accuracy_lines(results), *threshold_lines(results), *ema_lines(results),
            *drift_lines(results),
            "Figures: `fig1a.png` (test accuracy, mean ± std band), `fig1bc.png` "
            f"(percentiles, γ and β of seed {results.config.sweep.seed[0]}'s unit "
            f"{results.config.probe.units[0]}), `sweep.png` (the tuning).", ""]


def figures(results: Results, directory: Path) -> list[Path]:
    from bnreg.study.figures import sweep_figure

    marks = {f"({s})": results.settings[f"no_bn_{s}"]["learning_rate"] for s in SETTINGS}
    return [plot_fig1a(results, directory / "fig1a.png"),
            plot_fig1bc(results, directory / "fig1bc.png"),
            sweep_figure(results, directory / "sweep.png", marks=marks)]


def plot_fig1a(results: Results, path: Path) -> Path:
    """Test accuracy vs steps, both nets, mean ± std over seeds; a panel per learning rate."""
    from bnreg import plots

    config = results.config
    figure, axes = plots.figure(1, len(SETTINGS), width=5.5, height=4)
    for ax, setting in zip(axes[0], SETTINGS, strict=True):
        lows = []
        for color, net in zip(("C1", "C0"), NETS, strict=True):
            steps, values = results.curves(f"{net}_{setting}")
            plots.band(ax, steps, 100 * values, label=NETS[net][0], color=color)
            lows.append(100 * values[:, steps >= min(config.study.milestones[0],
                                                     steps[-1])].min())
        # As in the paper's Fig. 1a, from near the lowest accuracy after the first milestone.
        ax.set_ylim(max(0.0, min(lows) - 3), None)
        ax.set(title=f"lr {rate_label(results, f'no_bn_{setting}')}", xlabel="training step")
        ax.legend(loc="best")
    axes[0, 0].set_ylabel("test accuracy %")
    figure.suptitle(f"Fig. 1a, {config.dataset}: {len(config.sweep.seed)} seeds, mean ± std")
    return plots.save(figure, path)


def plot_fig1bc(results: Results, path: Path) -> Path:
    """Per learning rate: the 15/50/85th percentiles of one last-layer sigmoid's input without
    (b) and with (c) BN (one y-axis), and the BN unit's γ and β; the first seed; the drift's
    start dotted."""
    from bnreg import plots

    config = results.config
    seed, unit = config.sweep.seed[0], config.probe.units[0]
    figure, axes = plots.figure(len(SETTINGS), 3, width=4.6, height=3.4)
    for row, setting in zip(axes, SETTINGS, strict=True):
        for ax, (panel, net) in zip(row[:2], (("(b)", "no_bn"), ("(c)", "bn")), strict=True):
            steps, values = results.curves(f"{net}_{setting}", "probe_percentiles")
            plots.percentile_lines(ax, steps, values[0, :, 0, 0, :], config.probe.percentiles)
            ax.set_title(f"{panel} {NETS[net][0]}, lr {rate_label(results, f'{net}_{setting}')}")
        row[1].sharey(row[0])
        steps, scale = results.curves(f"bn_{setting}", "probe_bn_scale")
        _, bias = results.curves(f"bn_{setting}", "probe_bn_bias")
        row[2].plot(steps, scale[0, :, 0, 0], label="γ", color="C2")
        row[2].plot(steps, bias[0, :, 0, 0], label="β", color="C3")
        row[2].set_title(f"BN's γ and β of the unit, lr {rate_label(results, f'bn_{setting}')}")
        row[0].set_ylabel(f"input to sigmoid unit {unit}")
        for ax in row:
            ax.axvline(config.study.drift_from, color="grey", linestyle=":", linewidth=1)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend()
    axes[0, 2].legend()
    figure.suptitle(f"Fig. 1b,c, {config.dataset}: last hidden layer, seed {seed}; drift "
                    f"measured from the dotted line")
    return plots.save(figure, path)


STUDY = Study(
    name="bn_mnist", title="Batch Normalization on MNIST — Ioffe & Szegedy 2015, Fig. 1, measured",
    arms=arms, claims=claims, setup=setup, sections=sections, figures=figures, check=check)


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, STUDY, workdir="runs/bn_mnist")
