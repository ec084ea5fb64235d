"""Accelerating BN networks — Ioffe & Szegedy 2015, Sec. 4.2, Fig. 2 and Fig. 3.

A small Inception-style convnet (:class:`bnreg.models.Inception`: a 3×3 stem and a 2×2 max-pool
(GoogLeNet's stem pools before its first module too), inception modules
of 1×1, 3×3, two-3×3 and pooling-projection branches, global average pooling, softmax), trained
as the paper's six nets:

* *Inception*: no BN, dropout (rate ``study.dropout``) before the classifier, L2 λ, lr0 chosen on
  a validation split for this net only, an exponential decay of the rate;
* *BN-Baseline*: the same with BN before every nonlinearity;
* *BN-x5*, *BN-x30*: lr0 × 5 and × 30 with the accelerating changes (Sec. 4.2.1): no dropout,
  λ ÷ 5, the decay 6× faster;
* *BN-x5-Sigmoid*: BN-x5 with sigmoid nonlinearities;
* *Inception-Sigmoid*: the Inception with sigmoids and no BN (the paper: it never trains).

The other accelerating changes have no counterpart here: there is no local response
normalisation to remove and no photometric distortion to reduce, and the engine already draws a
fresh permutation of the training split every epoch ("more thorough shuffling").

Commands::

  # the full study on Fashion-MNIST, which Debian's dataset-fashion-mnist package provides
  python -m experiments.bn_accelerate --workdir=runs/bn_accelerate \\
      --config.dataset=fashion_mnist
  # CIFAR-10 through tfds (where a user has it), a wider net, more steps
  python -m experiments.bn_accelerate --workdir=runs/bn_accelerate_cifar10 \\
      --config=experiments/bn_accelerate.py:cifar10
  # the default net's full widths and a longer run, for an accelerator (no unrolling)
  python -m experiments.bn_accelerate --workdir=runs/bn_accelerate_accelerator \\
      --config=experiments/bn_accelerate.py:accelerator
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_accelerate --workdir=/tmp/bn_accelerate_smoke \\
      --config=experiments/bn_accelerate.py:smoke

Outputs in ``--workdir``: ``results.md``, ``fig2.png`` (test accuracy against steps),
``sweep.png`` (the Inception's validation accuracy against lr0) and the engine's run
directories ``sweep/inception`` and ``study/<net>``. Rerunning resumes. Measured:
experiments/results/bn_accelerate_fashion_mnist.

Protocol:

1. SGD with momentum 0.9 and batch 32 as the paper; He-normal weights; the rate decays as
   ``lr0 · 0.1^(t/T)`` with T the run's length (6× shorter for the accelerated nets); L2 λ on
   the kernels (``study.weight_decay``, ÷ 5 for the accelerated nets). A CPU budget of
   ``num_steps`` updates on a net of ``model.inception_*`` channels sized for it.
2. The Inception's lr0 is chosen on a validation split of 10,000 training images (the test set
   chooses nothing) by the highest final validation accuracy, one seed; every other net's rate
   is a multiple of it, as in the paper.
3. The six nets train on the whole training split, seeds as members; every ``eval_every``
   steps the test accuracy (BN with Alg. 2's population statistics) and the training accuracy
   on 2,000 training images. Fig. 3's table: the steps each net needs to reach the Inception's
   highest accuracy (that of its seeds' mean curve), per seed; each net's highest accuracy; the
   speed-up ``steps(Inception) / steps(net)``. Claims from 95% intervals of paired per-seed
   differences.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.config import default_config, override


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


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration: ``"full"`` (the CPU budget), ``"cifar10"``, ``"accelerator"``
    or ``"smoke"`` (scikit-learn's digits, seconds)."""
    config = default_config()
    config.update_from_flattened_dict({
        "dataset": "mnist", "binarize": False, "batch_size": 32, "num_steps": 3_000,
        "eval_every": 200, "checkpoint_every": 1_000, "eval_batch_size": 1_000,
        "model.name": "inception", "model.kernel_init": "he_normal",
        # GoogLeNet pools before its first module; here that makes a step 3× cheaper.
        "model.inception_stem": 16, "model.inception_stem_pool": True,
        "model.inception_modules": ((8, 8, 12, 4, 6, 4), (16, 12, 24, 6, 12, 8)),
        "model.inception_pool_after": (0,), "model.bn_momentum": 0.9,
        "optimizer.momentum": 0.9, "optimizer.schedule": "exponential",
        "optimizer.decay_rate": 0.1, "evaluation.final": (), "evaluation.train_examples": 2_000,
        "evaluation.population_batches": 50, "probe.layers": (), "nonfinite": "record",
        # XLA:CPU runs convolutions ~4× slower inside a loop (benchmarks/convnet_throughput.py).
        "unroll_steps": True, "steps_per_call": 5,
    })
    config.sweep.seed = (0, 1, 2)
    config.study = ml_collections.ConfigDict({
        "nets": tuple(NETS),
        "dropout": 0.4,  # before the classifier, Inception's rate
        "weight_decay": 1e-4,
        "sweep_learning_rates": (0.03, 0.1, 0.3), "sweep_seeds": (0,),
        "validation_fraction": 1 / 6,  # 10,000 of the 60,000 training images
    })
    if variant == "cifar10":
        config.update_from_flattened_dict({
            "dataset": "cifar10", "num_steps": 40_000, "eval_every": 1_000,
            "checkpoint_every": 5_000, "model.inception_stem": 32,
            "model.inception_modules": ((16, 16, 24, 8, 12, 8), (32, 24, 48, 12, 24, 16)),
            "study.validation_fraction": 0.2,
        })
    elif variant == "accelerator":
        config.update_from_flattened_dict({
            "num_steps": 50_000, "eval_every": 1_000, "checkpoint_every": 5_000,
            "model.inception_stem": 32,
            "model.inception_modules": ((16, 16, 24, 8, 12, 8), (32, 24, 48, 12, 24, 16)),
            "unroll_steps": False, "steps_per_call": 0,
        })
    elif variant == "smoke":
        config.update_from_flattened_dict({
            "dataset": "digits", "num_steps": 20, "eval_every": 10, "checkpoint_every": 10,
            "eval_batch_size": 256, "evaluation.train_examples": 300,
            "evaluation.population_batches": 2, "model.inception_stem": 4,
            "model.inception_modules": ((2, 2, 3, 2, 2, 2),), "study.validation_fraction": 0.2,
            "study.sweep_learning_rates": (0.01, 0.1), "unroll_steps": False,
            "steps_per_call": 0,
            # Each net is a compilation: the smoke runs the claims' extremes.
            "study.nets": ("inception", "bn_x5", "bn_x5_sigmoid", "inception_sigmoid"),
        })
        config.sweep.seed = (0, 1)
    elif variant != "full":
        raise ValueError(f"variant must be 'full', 'cifar10', 'accelerator' or 'smoke', got "
                         f"{variant!r}.")
    config.lock()
    return config


def nets(config: ml_collections.ConfigDict) -> dict[str, Net]:
    """The nets the config runs, in the paper's order; the Inception always (every claim is
    against it).

    Raises:
      ValueError: unknown nets, or no Inception.
    """
    chosen = tuple(config.study.nets)
    unknown = sorted(set(chosen) - set(NETS))
    if unknown or "inception" not in chosen:
        raise ValueError(f"config.study.nets {chosen} must name nets of {list(NETS)}, "
                         "'inception' among them.")
    return {name: net for name, net in NETS.items() if name in chosen}


def net_overrides(config: ml_collections.ConfigDict, net: Net, lr0: float) -> dict[str, Any]:
    """One net's engine overrides at the Inception's ``lr0``: BN, activation, its rate, and the
    accelerating changes (no dropout, λ ÷ 5, decay 6× faster) where the net takes them."""
    study = config.study
    speedup = DECAY_SPEEDUP if net.accelerated else 1
    return {
        "model.norm": "batch" if net.bn else None, "model.activation": net.activation,
        "model.hidden_dropout": 0.0 if net.accelerated else study.dropout,
        "optimizer.weight_decay": study.weight_decay / (WEIGHT_DECAY_DIVISOR if net.accelerated
                                                        else 1),
        "optimizer.decay_steps": max(1, round(config.num_steps / speedup)),
        "optimizer.learning_rate": lr0 * net.lr_factor,
    }


def sweep_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The Inception's lr0 grid as members, on the validation split."""
    study = config.study
    return {**net_overrides(config, NETS["inception"], 1.0),
            "sweep.learning_rate": tuple(study.sweep_learning_rates),
            "sweep.seed": tuple(study.sweep_seeds), "evaluation.train_examples": 0,
            "validation_fraction": study.validation_fraction}


def choose(sweep: pd.DataFrame) -> float:
    """The lr0 with the lowest final validation error (mean over seeds; never a diverged one).

    Raises:
      ValueError: every setting diverged.
    """
    chosen = analysis.lowest_mean(sweep, "error", ["learning_rate"])
    if chosen is None:
        raise ValueError("Every lr0 of the Inception's sweep diverged: lower "
                         "config.study.sweep_learning_rates.")
    return float(chosen["learning_rate"])


@dataclasses.dataclass
class StudyResult:
    """The sweep, the choice and the six nets' tables (a ``net`` column tells them apart)."""

    nets: dict[str, Net]
    sweep: pd.DataFrame
    lr0: float
    history: pd.DataFrame
    summary: dict


def run_study(config: ml_collections.ConfigDict, workdir: Path) -> list[Path]:
    """The Inception's sweep, then every net at its multiple of the chosen lr0 (a group), then
    the results and figures. Every run is checked before anything trains.

    Raises:
      ValueError: unknown nets, a config a net cannot take, a sweep that diverged everywhere.
    """
    from bnreg import engine

    workdir = Path(workdir)
    study_nets = nets(config)
    engine.check(override(config, sweep_overrides(config)))
    for net in study_nets.values():
        engine.check(override(config, net_overrides(config, net, 0.01)))
    sweep_run = engine.train_group(config, {"inception": sweep_overrides(config)},
                                   workdir / "sweep")["inception"]
    sweep = analysis.table(sweep_run.summary["members"])
    lr0 = choose(sweep)
    runs = engine.train_group(config, {name: net_overrides(config, net, lr0)
                                       for name, net in study_nets.items()}, workdir / "study")
    history = analysis.combine({name: analysis.table(run.history)
                                for name, run in runs.items()}, "net")
    result = StudyResult(study_nets, sweep, lr0, history, runs["inception"].summary)
    return [write_results(config, result, workdir), plot_fig2(config, result, workdir),
            plot_sweep(config, result, workdir)]


def accuracy_curves(history: pd.DataFrame, net: str,
                    column: str = "accuracy") -> tuple[np.ndarray, np.ndarray]:
    """A net's ``column`` against steps: ``steps`` ``(T,)`` and ``(seeds, T)`` values."""
    return analysis.curves(analysis.select(history, net=net), column)


def steps_to_reach(steps: np.ndarray, curves: np.ndarray, target: float) -> np.ndarray:
    """Per seed, the first evaluated step whose accuracy is at least ``target`` (NaN: never)."""
    found = [analysis.first_step_reaching(steps, curve, target) for curve in curves]
    return np.asarray([np.nan if s is None else s for s in found], dtype=np.float64)


class Fig3Row(NamedTuple):
    """One net's Fig. 3 reading, per seed: steps to the Inception's maximum (NaN: never) and
    the highest accuracy; the train − test accuracy gap at the end; and how many seeds' steps
    are a lower bound (the Inception's own seeds that stay below its mean curve's maximum count
    as reaching it at the last evaluation)."""

    steps: np.ndarray
    maximum: np.ndarray
    gap: np.ndarray
    censored: int


def fig3(history: pd.DataFrame, names) -> tuple[float, dict[str, Fig3Row]]:
    """The Inception's maximum accuracy (of its seeds' mean curve) and each net's row. A seed of
    the Inception's that never reaches it counts as reaching it at the last evaluation: a lower
    bound, which only shrinks every speed-up against it."""
    steps, inception = accuracy_curves(history, "inception")
    target = float(inception.mean(0).max())
    rows = {}
    for name in names:
        steps, curves = accuracy_curves(history, name)
        _, train = accuracy_curves(history, name, "accuracy_on_train")
        reached = steps_to_reach(steps, curves, target)
        censored = int(np.isnan(reached).sum()) if name == "inception" else 0
        if censored:
            reached = np.where(np.isnan(reached), steps[-1], reached)
        rows[name] = Fig3Row(reached, curves.max(1), train[:, -1] - curves[:, -1], censored)
    return target, rows


def _steps_cell(row: Fig3Row) -> str:
    reached = row.steps[~np.isnan(row.steps)]
    if not reached.size:
        return "never"
    cell = analysis.cell(reached, digits=0)
    if row.censored:
        return f"≥ {cell} ({row.censored} of {row.steps.size} seeds at the last evaluation)"
    return cell if reached.size == row.steps.size else (
        f"{cell} ({reached.size}/{row.steps.size} seeds)")


def speedup(inception_steps: np.ndarray, net_steps: np.ndarray) -> str:
    """``steps(Inception) / steps(net)`` per seed, as mean ± std; ``—`` when a seed of either
    never reached the target, or the net reached it at step 0 (no training needed)."""
    if np.isnan(inception_steps).any() or np.isnan(net_steps).any() or (net_steps == 0).any():
        return "—"
    return analysis.cell(inception_steps / net_steps) + "×"


def claims(rows: dict[str, Fig3Row], history: pd.DataFrame, nets_run: dict[str, Net]) -> list[str]:
    """The paper's claims on the nets that ran, one line each, from paired per-seed
    differences; a net that never reached the target on a seed fails "fewer steps"."""
    lines = []

    def claim(first: str, second: str, field: str, expected: str, text: str) -> None:
        if first not in rows or second not in rows:
            return
        values = getattr(rows[first], field) - getattr(rows[second], field)
        if np.isnan(getattr(rows[first], field)).any():
            lines.append(f"- {text}: **does not hold** — {nets_run[first].label} never reached "
                         "the Inception's maximum on some seed.")
            return
        scale, unit = (1.0, "steps") if field == "steps" else (100.0, "points")
        lines.append(analysis.claim_text(analysis.difference(values), expected, text,
                                         scale=scale, unit=unit, first=nets_run[first].label,
                                         second=nets_run[second].label))

    for name in ("bn_baseline", "bn_x5", "bn_x30"):
        label = NETS[name].label
        claim(name, "inception", "steps", "below",
              f"{label} reaches the Inception's maximum in fewer steps")
        claim(name, "inception", "maximum", "above", f"{label} ends higher than the Inception")
    claim("bn_x30", "bn_x5", "maximum", "above", "BN-x30 ends higher than BN-x5")
    claim("bn_x5_sigmoid", "inception_sigmoid", "maximum", "above",
          "BN makes sigmoid trainable: BN-x5-Sigmoid above Inception-Sigmoid")
    if "inception_sigmoid" in rows:
        _, curves = accuracy_curves(history, "inception_sigmoid")
        trained = analysis.learned(curves, by=0.05)
        lines.append("- Inception-Sigmoid never trains (its test accuracy rises by less than 5 "
                     f"points): {'**does not hold**' if trained else '**holds**'} — "
                     f"{100 * curves.mean(0)[0]:.2f}% → {100 * curves.mean(0)[-1]:.2f}%.")
    for name in ("bn_x5", "bn_x30"):
        claim(name, "inception", "gap", "below",
              f"BN as a regularizer: {NETS[name].label} (no dropout) has a smaller train − "
              "test gap than the Inception (dropout)")
    return lines


def _fig3_lines(config: ml_collections.ConfigDict, result: StudyResult) -> list[str]:
    target, rows = fig3(result.history, result.nets)
    header = ["net", "lr0", "steps to the Inception's max", "speed-up", "max test accuracy %",
              "train − test at the end, points", "paper: steps", "paper: max"]
    table = []
    for name, net in result.nets.items():
        row = rows[name]
        table.append([net.label, f"{result.lr0 * net.lr_factor:g}", _steps_cell(row),
                      speedup(rows["inception"].steps, row.steps),
                      analysis.cell(100 * row.maximum), analysis.cell(100 * row.gap),
                      *net.paper])
    return [f"## Fig. 3: steps to the Inception's maximum ({100 * target:.2f}%, its seeds' mean "
            "curve) and each net's maximum", "",
            "Per seed, the first evaluation at or above the target; mean ± std over the seeds "
            "that reached it. The paper's steps are ImageNet training steps of batch 32.", "",
            analysis.markdown_table(header, table), ""]


def _sweep_lines(config: ml_collections.ConfigDict, result: StudyResult) -> list[str]:
    rows = []
    for lr, group in result.sweep.groupby("learning_rate"):
        accuracy = group["accuracy"]
        cell = ("diverged" if accuracy.isna().any()
                else analysis.cell(100 * accuracy.to_numpy()))
        rows.append([f"{lr:g}", cell + (" **← chosen**" if lr == result.lr0 else "")])
    grid = tuple(config.study.sweep_learning_rates)
    edge = ([f"**Caution**: the chosen lr0 is at an edge of the grid {list(grid)}.", ""]
            if result.lr0 in (min(grid), max(grid)) else [])
    return ["## The Inception's lr0 (validation split, final accuracy %)", "",
            analysis.markdown_table(["lr0", "validation accuracy %"], rows), "", *edge]


def write_results(config: ml_collections.ConfigDict, result: StudyResult,
                  workdir: Path) -> Path:
    """Writes ``results.md``: the set-up, Fig. 3's table, the verdicts and the sweep."""
    summary = result.summary
    _, rows = fig3(result.history, result.nets)
    model = config.model
    lines = [
        "# Accelerating BN networks — Ioffe & Szegedy 2015, Fig. 2 and 3, measured", "",
        f"Dataset: **{config.dataset}** ({summary['source']}); the paper's numbers are "
        f"ImageNet's. Net: a {model.inception_stem}-channel stem and "
        f"{len(model.inception_modules)} inception modules "
        f"{tuple(map(tuple, model.inception_modules))}, global average pooling; "
        f"{config.num_steps:,} steps of batch {config.batch_size} (≈ "
        f"{config.num_steps * config.batch_size / summary['num_train_examples']:.1f} epochs), "
        f"SGD momentum {config.optimizer.momentum:g}, rate lr0 · 0.1^(t/T) with T = "
        f"{config.num_steps:,} (÷ {DECAY_SPEEDUP} for the accelerated nets), L2 λ = "
        f"{config.study.weight_decay:g} (÷ {WEIGHT_DECAY_DIVISOR}), dropout "
        f"{config.study.dropout:g} before the classifier (none in the accelerated nets). "
        f"Seeds {list(config.sweep.seed)}; test accuracy with Alg. 2's statistics for the BN "
        "nets. Verdicts from the 95% interval of paired per-seed differences (uncorrected for "
        "the number of claims).", "",
        *_fig3_lines(config, result),
        "## Verdicts", "", *claims(rows, result.history, result.nets), "",
        "Paper (ImageNet): BN-x5 reaches the Inception's 72.2% in 14× fewer steps; BN-x30 ends "
        "at 74.8%; BN-x5-Sigmoid reaches 69.8% while the Inception with sigmoids never trains "
        "(Sec. 4.2.2).", "",
        *_sweep_lines(config, result),
        "Figures: `fig2.png` (test accuracy against steps, mean ± std over seeds), "
        "`sweep.png` (the Inception's validation accuracy against lr0).", "",
    ]
    path = workdir / "results.md"
    path.write_text("\n".join(lines))
    return path


def plot_fig2(config: ml_collections.ConfigDict, result: StudyResult, workdir: Path) -> Path:
    """Fig. 2: test accuracy against steps of every net (mean ± std band), the Inception's
    maximum as a dotted line."""
    from bnreg import plots

    target, _ = fig3(result.history, result.nets)
    figure, ax = plots.figure(1, 1, width=7, height=4.4)
    for color, (name, net) in enumerate(result.nets.items()):
        steps, curves = accuracy_curves(result.history, name)
        plots.band(ax[0, 0], steps, 100 * curves, label=net.label, color=f"C{color}")
    ax[0, 0].axhline(100 * target, color="grey", linestyle=":", label="Inception's max")
    ax[0, 0].set(xlabel="training step", ylabel="test accuracy %")
    ax[0, 0].legend(fontsize=7)
    figure.suptitle(f"Fig. 2: {config.dataset}, batch {config.batch_size}, "
                    f"{len(config.sweep.seed)} seeds")
    return plots.save(figure, workdir / "fig2.png")


def plot_sweep(config: ml_collections.ConfigDict, result: StudyResult, workdir: Path) -> Path:
    """The Inception's final validation accuracy against lr0 (diverged rates left out)."""
    from bnreg import plots

    rates = sorted(lr for lr, group in result.sweep.groupby("learning_rate")
                   if group["accuracy"].notna().all())
    values = np.asarray([100 * analysis.select(result.sweep, learning_rate=lr)["accuracy"]
                         for lr in rates])
    figure, ax = plots.figure(1, 1, width=5, height=3.4)
    plots.versus(ax[0, 0], rates, values, label="Inception")
    ax[0, 0].set(xlabel="lr0", ylabel="validation accuracy %")
    figure.suptitle(f"The Inception's sweep ({config.dataset})")
    return plots.save(figure, workdir / "sweep.png")


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, run_study, workdir="runs/bn_accelerate")
