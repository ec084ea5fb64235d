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
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_mnist --workdir=/tmp/bn_smoke --config=experiments/bn_mnist.py:smoke

Outputs in ``--workdir``: ``results.md`` (tables, the paper's claims beside the measurements),
``fig1a.png``, ``fig1bc.png``, ``sweep.png``, and the engine's run directories ``sweep/<net>``
and ``study/<net>``. Rerunning resumes. Measured: experiments/results/bn_fashion_mnist.

Protocol — the paper states neither optimizer nor learning rate, so the comparison is made fair
and shown:

1. Plain SGD (no momentum, no decay), the same for both nets. Both nets start from the same
   weights (same seed, same layer names) and see the same batches in the same order.
2. A learning-rate sweep on a log grid (``study.sweep_learning_rates``, 0.01 … 5.0) for *both*
   nets, ``study.sweep_steps`` (10,000) steps each, 2 seeds, scored on a validation split of
   1/12 of the training set (5,000 of MNIST's 60,000; the test set chooses nothing). A net's
   grid and seeds are the members of one compiled program. ``results.md`` warns when the best
   rate sits at the edge of the grid and names the rates the sweep cannot tell from it.
3. The full study at (i) the no-BN net's best learning rate — the baseline's best shot —,
   (ii) ``study.high_lr_factor`` (5) times it, BN's claim being that it tolerates higher rates
   (the paper's "BN-x5"), and (iii) ``study.low_lr_factor`` (0.05) times it, a small rate at
   which the baseline is still far from converged after 50k steps, as in the paper's Fig. 1a.
   The claims are judged at (i); (ii) and (iii) are reported beside it.
4. The BN net is evaluated — curves, probes, the sweep's score — with Alg. 2's population
   statistics, the paper's inference network. The final accuracy with the EMA statistics is
   reported beside it, and with the EMA *settled* on the final weights, which tells the EMA's
   lag behind moving weights from a difference between the estimators. The EMA's momentum is
   0.9 (PyTorch's default), chosen by ``experiments/bn_ema_momentum.py`` on other seeds and a
   validation split; the EMA never enters training, so it changes no other number here.

Nothing is tuned in BN's favour: the rates are chosen by the baseline's sweep only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.config import default_config, override

NETS = {"no_bn": {"model.norm": None}, "bn": {"model.norm": "batch"}}
NET_LABELS = {"no_bn": "without BN", "bn": "with BN"}
FIGURES = ("fig1a.png", "fig1bc.png", "sweep.png")
# The tolerance within which the EMA's and Alg. 2's inference networks should agree (issue #5).
EMA_AGREEMENT_POINTS = 0.3


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration; ``variant="smoke"`` runs in seconds on scikit-learn's digits."""
    config = default_config()
    config.update_from_flattened_dict({
        "dataset": "mnist", "model.hidden_sizes": (100, 100, 100), "model.activation": "sigmoid",
        "model.kernel_init": "normal", "model.init_stddev": 0.1, "batch_size": 60,
        "num_steps": 50_000, "eval_every": 500, "checkpoint_every": 5_000,
        # The EMA reported beside Alg. 2 (see the docstring); it never enters training.
        "model.bn_momentum": 0.9,
        # Every evaluation of the BN net uses Alg. 2's statistics (the paper's inference
        # network); the EMA, as tracked and settled, is reported beside it at the end.
        "evaluation.bn_statistics": "population", "evaluation.final": ("ema", "settled_ema"),
        "evaluation.population_batches": 100, "probe.layers": (-1,), "probe.units": (0, 1, 2),
        # Fig. 1 needs no activation histograms; on one core they cost a fifth of an evaluation.
        "probe.histogram_bins": 0,
    })
    config.sweep.seed = (0, 1, 2)
    config.study = ml_collections.ConfigDict({
        "sweep_learning_rates": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        "sweep_steps": 10_000, "sweep_eval_every": 2_000, "sweep_seeds": (0, 1),
        "sweep_validation_fraction": 1 / 12,  # 5,000 of MNIST's 60,000 training examples
        "high_lr_factor": 5.0, "low_lr_factor": 0.05,
        "milestones": (5_000, 10_000, 20_000, 50_000),
    })
    if variant == "smoke":
        config.update_from_flattened_dict({
            "dataset": "digits", "num_steps": 200, "eval_every": 50, "checkpoint_every": 100,
            "evaluation.population_batches": 10, "study.sweep_learning_rates": (0.1, 1.0),
            "study.sweep_steps": 100, "study.sweep_eval_every": 50, "study.sweep_seeds": (0,),
            "study.sweep_validation_fraction": 0.2, "study.milestones": (50, 100, 200),
        })
        config.sweep.seed = (0, 1)
    elif variant != "full":
        raise ValueError(f"variant must be 'full' or 'smoke', got {variant!r}.")
    config.lock()
    return config


def sweep_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The engine config of the learning-rate sweep (validation split, short runs)."""
    study = config.study
    return override(config, {
        "num_steps": study.sweep_steps, "eval_every": study.sweep_eval_every,
        "checkpoint_every": study.sweep_steps, "validation_fraction":
        study.sweep_validation_fraction, "sweep.seed": tuple(study.sweep_seeds),
        "sweep.learning_rate": tuple(study.sweep_learning_rates),
    })


def study_config(config: ml_collections.ConfigDict, learning_rates: tuple):
    """The engine config of the full runs at ``learning_rates``."""
    return override(config, {"sweep.learning_rate": tuple(learning_rates)})


@dataclasses.dataclass
class StudyResult:
    """Both phases' tables (a ``net`` column tells the nets apart) and the chosen rates."""

    sweep: pd.DataFrame  # the sweep's final evaluation per member
    history: pd.DataFrame  # the full runs' metrics
    final: pd.DataFrame  # the full runs' final evaluation per member
    summaries: dict  # phase -> the BN net's summary.json (data source, split sizes)
    learning_rates: tuple[float, float, float]  # (i) the baseline's best, (ii) high, (iii) low
    workdir: Path


def sweep_scores(sweep: pd.DataFrame, net: str, column: str = "accuracy") -> dict:
    """Final validation ``column`` per learning rate of ``net``: (mean, std) over seeds."""
    return analysis.scores(analysis.select(sweep, net=net), column, by="learning_rate")


def choose_learning_rates(scores: dict, high_factor: float, low_factor: float) -> tuple:
    """(i) the no-BN net's best learning rate on validation, (ii) ``high_factor`` × it,
    (iii) ``low_factor`` × it."""
    best = analysis.best(scores)
    # Rounded so that 0.1 × 0.05 reads 0.005, not 0.005000000000000001, in every output.
    return best, float(f"{best * high_factor:.12g}"), float(f"{best * low_factor:.12g}")


def percentile_drift(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """How much a probed unit's input distribution moves over training (Fig. 1b,c): the range
    over all evaluations of its median and of its outer-percentile spread, each ``(members,
    units)`` for the first probed layer."""
    _, values = analysis.curves(history, "probe_percentiles")  # (members, T, layers, units, q)
    values = values[:, :, 0]
    median = values[..., values.shape[-1] // 2]
    spread = values[..., -1] - values[..., 0]
    return np.ptp(median, axis=1), np.ptp(spread, axis=1)


def _phase(config: ml_collections.ConfigDict, workdir: Path):
    """One phase: both nets trained as a group; ``(history, final, BN net's summary)``."""
    from bnreg import engine

    runs = engine.train_group(config, NETS, workdir)
    history, final = ({net: analysis.table(part(r)) for net, r in runs.items()}
                      for part in (lambda r: r.history, lambda r: r.summary["members"]))
    return analysis.combine(history, "net"), analysis.combine(final, "net"), runs["bn"].summary


def run_study(config: ml_collections.ConfigDict, workdir: Path) -> list[Path]:
    """Runs the sweep and the full study for both nets, then writes the results and figures.

    Raises:
      ValueError: learning-rate factors that would make two of the settings (i), (ii), (iii)
        the same rate, no milestone within the run, or a config either phase's runs cannot
        take (all checked before anything is trained).
    """
    factors = (1.0, config.study.high_lr_factor, config.study.low_lr_factor)
    if len(set(factors)) < 3:
        raise ValueError(
            f"config.study.high_lr_factor ({factors[1]}) and low_lr_factor ({factors[2]}) must "
            "differ from 1 and from each other: (i), (ii) and (iii) are three distinct rates.")
    if not any(m <= config.num_steps for m in config.study.milestones):
        raise ValueError(f"config.study.milestones {tuple(config.study.milestones)} must hold a "
                         f"step within config.num_steps ({config.num_steps}).")
    from bnreg import engine

    # Both phases' runs are checked before the sweep trains: the full runs' rates are not known
    # yet, so any three distinct ones stand in for them.
    for phase in (sweep_config(config), study_config(config, factors)):
        for overrides in NETS.values():
            engine.check(override(phase, overrides))
    workdir = Path(workdir)
    _, sweep, sweep_summary = _phase(sweep_config(config), workdir / "sweep")
    rates = choose_learning_rates(sweep_scores(sweep, "no_bn"), *factors[1:])
    history, final, summary = _phase(study_config(config, rates), workdir / "study")
    result = StudyResult(sweep, history, final, {"sweep": sweep_summary, "study": summary},
                         rates, workdir)
    return [write_results(config, result), plot_fig1a(config, result),
            plot_fig1bc(config, result), plot_sweep(config, result)]


def setting(result: StudyResult, lr: float) -> str:
    """The learning rate with its setting's label, e.g. ``1 (i)``."""
    return f"{lr:g} ({('i', 'ii', 'iii')[result.learning_rates.index(lr)]})"


def accuracy_curves(result: StudyResult, net: str, lr: float, **fields) -> tuple:
    """``(steps, values (seeds, T, ...))`` of one net's ``accuracy`` at one learning rate
    (``column=`` another metric; further fields select, e.g. ``seed=0``)."""
    column = fields.pop("column", "accuracy")
    frame = analysis.select(result.history, net=net, learning_rate=lr, **fields)
    return analysis.curves(frame, column)


def final_accuracies(final: pd.DataFrame, net: str, lr: float, column: str) -> np.ndarray:
    """Final ``column`` (e.g. ``"accuracy_ema"``) in %, per seed of ``net`` at ``lr``."""
    return 100 * analysis.select(final, net=net, learning_rate=lr)[column].to_numpy()


def gaps_to_alg2(final: pd.DataFrame, lr: float, statistics: str) -> np.ndarray:
    """Alg. 2 − ``statistics`` final accuracy of the BN net in points, per seed at ``lr``."""
    return (final_accuracies(final, "bn", lr, "accuracy_population")
            - final_accuracies(final, "bn", lr, f"accuracy_{statistics}"))


def comparison_verdict(label: str, steps: np.ndarray, curves: dict, from_step: int) -> str:
    """Whether BN is above the baseline beyond the seeds' std at every evaluation from
    ``from_step`` on; ``curves[net]`` is a net's ``(seeds, T)`` accuracy."""
    mask, baseline = steps >= from_step, curves["no_bn"]
    above = analysis.above_beyond_noise(steps[mask], curves["bn"][:, mask], baseline[:, mask])
    note = "" if analysis.learned(baseline) else (
        f"The baseline ended no better than it started: {100 * baseline.mean(0)[-1]:.2f}% at "
        f"step {int(steps[-1]):,}, {100 * baseline.mean(0)[0]:.2f}% at step {int(steps[0]):,}. ")
    return f"- lr {label}: " + analysis.above_text(above, first="BN", second="baseline",
                                                   since=from_step, note=note)


def _agreement(gaps: np.ndarray) -> str:
    return analysis.agreement_text(analysis.agreement(gaps, EMA_AGREEMENT_POINTS))


def _sweep_lines(config: ml_collections.ConfigDict, result: StudyResult) -> list[str]:
    columns = {"no-BN": ("no_bn", "accuracy"),
               f"BN ({config.evaluation.bn_statistics} stats)": ("bn", "accuracy"),
               "BN (EMA stats)": ("bn", "accuracy_ema")}
    rows = [[f"{lr:g}", *(analysis.cell(final_accuracies(result.sweep, net, lr, column))
                          for net, column in columns.values())]
            for lr in sorted(set(result.sweep["learning_rate"]))]
    best, high, low = result.learning_rates
    study = config.study
    lines = [
        f"## Learning-rate sweep ({study.sweep_steps} steps, validation split of "
        f"{result.summaries['sweep']['num_evaluation_examples']} carved from train, seeds "
        f"{list(study.sweep_seeds)})", "",
        f"Final validation accuracy; the BN net with its {config.evaluation.bn_statistics} "
        f"statistics, and with the EMA (momentum {config.model.bn_momentum:g}) tracked in "
        "training.", "",
        analysis.markdown_table(["learning rate", *columns], rows), "",
        f"Chosen: (i) **{best:g}**, the no-BN net's best; (ii) **{high:g}** = "
        f"{study.high_lr_factor:g} × (i), to test BN's tolerance of higher rates; (iii) "
        f"**{low:g}** = {study.low_lr_factor:g} × (i), a small rate at which the baseline is "
        "still far from converged after the full run, as the paper's Fig. 1 shows it. The "
        "claims are judged at (i).",
    ]
    tied = [lr for lr in analysis.tied_with_best(sweep_scores(result.sweep, "no_bn")) if lr != best]
    if tied:
        lines.append(
            f"The sweep cannot tell (i) from {', '.join(f'{lr:g}' for lr in tied)}: their no-BN "
            "scores lie within the seeds' std of the best, so which of them is (i) is partly "
            "chance (another draw of the seeds or the data order may pick another).")
    grid = sorted(study.sweep_learning_rates)
    if best in (grid[0], grid[-1]):
        lines.append(f"**Caution**: (i) is at the edge of the grid {grid}; a wider grid may "
                     "find a better rate for the baseline.")
    return [*lines, ""]


def _accuracy_lines(config: ml_collections.ConfigDict, result: StudyResult) -> list[str]:
    milestones = [m for m in config.study.milestones if m <= config.num_steps]
    claims = {"no_bn": "baseline: slower, lower accuracy", "bn": "BN: faster and higher accuracy"}
    rows, verdicts = [], []
    for lr in result.learning_rates:
        curves = {net: accuracy_curves(result, net, lr)[1] for net in NETS}
        steps, _ = accuracy_curves(result, "no_bn", lr)
        baseline_final = float(curves["no_bn"][:, -1].mean())
        for net in NETS:
            reached = (analysis.first_step_reaching(steps, curves[net].mean(0), baseline_final)
                       if analysis.learned(curves["no_bn"]) else "— (baseline did not learn)")
            at = [analysis.cell(100 * curves[net][:, list(steps).index(m)]) if m in steps
                  else "—" for m in milestones]
            finals = [analysis.cell(final_accuracies(result.final, net, lr, f"accuracy_{kind}"))
                      if net == "bn" else "—" for kind in ("ema", "population")]
            rows.append([NET_LABELS[net], setting(result, lr), *at,
                         "never" if reached is None else reached, *finals, claims[net]])
        verdicts.append(comparison_verdict(setting(result, lr), steps, curves, milestones[0]))
    header = ["net", "lr", *(f"{m:,} steps" for m in milestones), "first step ≥ no-BN final",
              "final, EMA stats", "final, Alg. 2 stats", "paper (Fig. 1a)"]
    settling = result.summaries["study"]["settled_ema_batches"]
    return [
        "## Test accuracy (Fig. 1a)", "", analysis.markdown_table(header, rows), "",
        "### Is BN above the baseline at every evaluation, by more than the seeds' std?", "",
        *verdicts, "",
        f"### Do EMA and Alg. 2 inference agree (within {EMA_AGREEMENT_POINTS:g} points)?", "",
        f"The EMA (momentum {config.model.bn_momentum:g}) as tracked in training, and the same "
        f"EMA *settled*: {settling} more updates with the final weights frozen (the starting "
        "value then weighs ≤ 0.1%). The settled EMA and Alg. 2 estimate the same statistics of "
        "the same weights; the EMA tracked in training averages over past weights too. "
        "Paper (Sec. 3.1): the inference network uses Alg. 2's population statistics; moving "
        "averages are how one tracks a model's accuracy while it trains. How the gap depends on "
        "the momentum, and how fast the trained network's statistics go stale: "
        "`experiments/bn_ema_momentum.py`, which compares momenta on 5 other seeds. With few "
        "seeds the mean gap is uncertain (the 95% interval below): compare it with that study's "
        "before counting on agreement.", "",
        *(f"- lr {setting(result, lr)}: Alg. 2 − EMA tracked in training = "
          f"{_agreement(gaps_to_alg2(result.final, lr, 'ema'))}. Alg. 2 − settled EMA = "
          f"{_agreement(gaps_to_alg2(result.final, lr, 'settled_ema'))}."
          for lr in result.learning_rates), "",
    ]


def drift_verdict(label: str, median_ratio: float, spread_ratio: float) -> str:
    """Whether the median's drift with BN is "well below" the baseline's, read as at most half
    of it (a ratio ≥ 2)."""
    verdict = "well below" if median_ratio >= 2.0 else "**not well below**"
    return (f"- lr {label}: without BN the median drifts {median_ratio:.1f}× as much as with "
            f"BN: {verdict} (the spread: {spread_ratio:.1f}×).")


def _drift_lines(config: ml_collections.ConfigDict, result: StudyResult) -> list[str]:
    rows, verdicts = [], []
    for lr in result.learning_rates:
        drifts = {net: percentile_drift(analysis.select(result.history, net=net, learning_rate=lr))
                  for net in NETS}
        cells, ratios = [], []
        for index in range(2):  # median, spread
            without, with_bn = (drifts[net][index].reshape(-1) for net in ("no_bn", "bn"))
            ratios.append(without.mean() / max(with_bn.mean(), 1e-12))
            cells += [analysis.cell(without, digits=3), analysis.cell(with_bn, digits=3),
                      f"**{ratios[-1]:.1f}×**"]
        rows.append([setting(result, lr), *cells, "without BN: drifts; with BN: much more stable"])
        verdicts.append(drift_verdict(setting(result, lr), *ratios))
    header = ["lr", "median drift, without BN", "median drift, with BN", "ratio",
              "spread drift, without BN", "spread drift, with BN", "ratio", "paper (Fig. 1b,c)"]
    return [
        "## Drift of a last-hidden-layer sigmoid's input (Fig. 1b,c)", "",
        "Range (max − min over all evaluations, step 0 included) of the median pre-activation "
        "and of its 15–85th percentile spread; mean ± std over seeds × probed units "
        f"{list(config.probe.units)}. The BN net is probed with "
        f"{config.evaluation.bn_statistics} statistics. Paper: (b) without BN the distribution "
        "changes significantly over time, (c) with BN it is much more stable.", "",
        analysis.markdown_table(header, rows), "",
        "Ratio = drift without BN / drift with BN. With BN the sigmoid's input is γ·x̂ + β, "
        "and BN holds x̂'s variance near 1: a spread that drifts with BN is mostly the learned "
        "scale γ moving.", "",
        "### Is the drift well below with BN (the median's drift at most half the baseline's)?",
        "", *verdicts, "",
    ]


def write_results(config: ml_collections.ConfigDict, result: StudyResult) -> Path:
    """Writes ``results.md``: the sweep, the accuracy table, the verdicts and the drift."""
    summary = result.summaries["study"]
    binarized = config.dataset == "mnist" if config.binarize is None else config.binarize
    sizes = [int(np.prod(summary["input_shape"])), *config.model.hidden_sizes, 10]
    lines = [
        "# Batch Normalization on MNIST — Ioffe & Szegedy 2015, Fig. 1, measured", "",
        f"Dataset: **{config.dataset}** ({summary['source']}), input "
        f"{'binarized' if binarized else 'grey levels in [0, 1]'}. Network "
        f"{'-'.join(map(str, sizes))} {config.model.activation}, N(0, "
        f"{config.model.init_stddev}²) init, plain SGD, batch {config.batch_size}, "
        f"{config.num_steps} steps, seeds {list(config.sweep.seed)}; accuracies are mean ± std "
        "over seeds, in %.", "", *_sweep_lines(config, result),
        *_accuracy_lines(config, result), *_drift_lines(config, result),
        "Figures: `fig1a.png` (test accuracy, mean ± std band), `fig1bc.png` "
        f"(15/50/85th percentiles, seed {config.sweep.seed[0]}, unit {config.probe.units[0]}, "
        "one row per learning rate), `sweep.png` (the sweep's validation accuracy vs learning "
        "rate, the study's rates marked).", "",
    ]
    path = result.workdir / "results.md"
    path.write_text("\n".join(lines))
    return path


def plot_sweep(config: ml_collections.ConfigDict, result: StudyResult) -> Path:
    """The sweep: final validation accuracy vs learning rate for both nets, mean ± std over the
    sweep's seeds, the study's rates (i), (ii), (iii) marked — the evidence for (i)."""
    from bnreg import plots

    figure, ax = plots.figure(1, 1, width=6.5, height=4)
    for color, net in zip(("C1", "C0"), NETS, strict=True):
        frame = analysis.select(result.sweep, net=net)
        rates = sorted(set(frame["learning_rate"]))
        values = [analysis.select(frame, learning_rate=lr)["accuracy"] for lr in rates]
        plots.versus(ax[0, 0], rates, np.asarray(values), label=NET_LABELS[net], color=color)
    plots.mark(ax[0, 0], {setting(result, lr): lr for lr in result.learning_rates})
    ax[0, 0].set(xlabel="learning rate (plain SGD)", ylabel="validation accuracy")
    ax[0, 0].legend(loc="best")
    figure.suptitle(f"Sweep: {config.study.sweep_steps} steps, seeds "
                    f"{list(config.study.sweep_seeds)}, mean ± std; the study's rates dotted")
    return plots.save(figure, result.workdir / "sweep.png")


def plot_fig1a(config: ml_collections.ConfigDict, result: StudyResult) -> Path:
    """Test accuracy vs steps, both nets, mean ± std over seeds; one panel per learning rate."""
    from bnreg import plots

    figure, axes = plots.figure(1, len(result.learning_rates), width=5.5, height=4)
    for ax, lr in zip(axes[0], result.learning_rates, strict=True):
        lows = []
        for color, net in zip(("C1", "C0"), NETS, strict=True):
            steps, values = accuracy_curves(result, net, lr)
            plots.band(ax, steps, values, label=NET_LABELS[net], color=color)
            lows.append(values[:, steps >= min(config.study.milestones[0], steps[-1])].min())
        # As in the paper's Fig. 1a, the axis starts near the lowest accuracy from the first
        # milestone on: the first steps' climb from chance would squeeze the differences.
        ax.set_ylim(max(0.0, min(lows) - 0.03), None)
        ax.set(title=f"{config.dataset}, SGD lr {setting(result, lr)}", xlabel="training step")
        ax.legend(loc="best")
    axes[0, 0].set_ylabel("test accuracy")
    figure.suptitle(f"Fig. 1a: {len(config.sweep.seed)} seeds, mean ± std")
    return plots.save(figure, result.workdir / "fig1a.png")


def plot_fig1bc(config: ml_collections.ConfigDict, result: StudyResult) -> Path:
    """The 15/50/85th percentiles of one last-hidden-layer sigmoid's input over training,
    without (b) and with (c) BN on one y-axis (the first seed and probed unit), a row per rate."""
    from bnreg import plots

    figure, axes = plots.figure(len(result.learning_rates), 2, width=5.5, height=3.6,
                                sharey="row")
    for row, lr in zip(axes, result.learning_rates, strict=True):
        for ax, (panel, net) in zip(row, (("(b)", "no_bn"), ("(c)", "bn")), strict=True):
            steps, values = accuracy_curves(result, net, lr, seed=config.sweep.seed[0],
                                            column="probe_percentiles")
            plots.percentile_lines(ax, steps, values[0, :, 0, 0, :], config.probe.percentiles)
            ax.set_title(f"{panel} {NET_LABELS[net]}, lr {setting(result, lr)}")
        row[0].set_ylabel(f"input to sigmoid unit {config.probe.units[0]}")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend()
    figure.suptitle(f"Fig. 1b,c: {config.dataset}, last hidden layer, seed {config.sweep.seed[0]}")
    return plots.save(figure, result.workdir / "fig1bc.png")


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, run_study, workdir="runs/bn_mnist")
