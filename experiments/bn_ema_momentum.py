"""EMA statistics vs Alg. 2's population statistics: how the BN momentum sets the gap.

Ioffe & Szegedy (2015, Sec. 3.1, Alg. 2) build the inference network from population statistics
averaged over many training mini-batches *after* training, with the final weights. Frameworks
instead track an exponential moving average (EMA) of the batch statistics *while* training —
``running = momentum · running + (1 − momentum) · batch`` (flax's direction; PyTorch's
``momentum`` is ``1 −`` this) — with flax and Keras defaulting to 0.99 and PyTorch to 0.9. The
EMA trades lag against noise: a high momentum averages many batches but of weights that have
since moved; a low one follows the weights but averages few batches.

This study trains the BN study's network with BN (experiments/bn_mnist.py: 784-100-100-100-10
sigmoid, N(0, 0.1²) init, plain SGD, batch 60, 50,000 steps) once per momentum (0.5 … 0.999), at
the BN study's three Fashion-MNIST learning rates, and scores on a validation split (1/12 of
train) the final network with (a) the EMA tracked in training, (b) the same EMA settled on the
final weights (:func:`bnreg.train.settled_ema_statistics`) and (c) Alg. 2's statistics. The
momentum never enters training (the EMA is not used by the training forward pass), so every
momentum trains bit-identical weights (checked) and only the inference statistics differ; the
momenta are compared seed by seed, paired.

It is the pilot behind the BN study's momentum (``experiments/bn_mnist.py`` docstring): its seeds
(10–14) and its validation split are disjoint from the BN study's seeds and test set, so the
study's own EMA-vs-Alg. 2 verdict is not measured on the data that chose the momentum.

Findings (Fashion-MNIST, experiments/results/bn_ema_momentum_fashion_mnist; 95% intervals over
the 5 seeds): the tracked EMA trails Alg. 2 at every momentum and rate, by +0.36 to +1.17 points
on average. At no momentum or rate is it shown to agree within 0.3 points; at 5 of the 18 it is
shown not to (all at 0.95 and above), the others are not resolved by 5 seeds. The settled EMA
is shown to agree at 15 of 18 and not resolved at the other 3 (at 0.5 and 0.8, whose settling
takes only 10 and 31 updates): the tracked EMA's gap is its lag behind moving weights, not the
estimators. The mean |gap| is 0.57–0.64 points from 0.5 to 0.9 (0.8 the smallest) and grows to
0.89 at flax's default 0.99 and 1.07 at 0.999; paired seed by seed, only 0.999 is told apart
from 0.8 (+0.50 points, interval +0.10 to +0.90, uncorrected). How sensitive the network is to
statistics of other weights (:func:`stale_statistics_accuracies`): scored with Alg. 2 statistics
of weights 1, 10 and 100 SGD steps older it loses up to 0.3, 1.8 and 2.0 points on average
(single lags; not the size of an EMA's gap, which averages many). PyTorch's ``BatchNorm1d`` in
the benchmark's eager script trails alike (``benchmarks/torch_ema_vs_alg2.py``: +0.53 to +0.89
points with ``momentum`` 0.1 and 0.01, at lr 0.1 and 2, on the test set).

Commands::

  # Fashion-MNIST (Debian's dataset-fashion-mnist offline), ~20 min on 2 cores
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.bn_ema_momentum \\
      --workdir=runs/bn_ema_momentum --config.dataset=fashion_mnist
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_ema_momentum --workdir=/tmp/ema_smoke \\
      --config=experiments/bn_ema_momentum.py:smoke

Outputs in ``--workdir``: ``results.md`` (the gaps per momentum and rate, the agreement verdicts,
the closest momentum and those not told apart from it, the staleness table), ``ema_gap.png``,
and one engine run per momentum (``momentum=<m>/``). Rerunning resumes; adding momenta to
``study.momenta`` trains only the new ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from bnreg import plots, train
from bnreg.metrics import mean_confidence_interval, mean_std
from bnreg.train import RunResult, train_and_evaluate_concurrently
from experiments import bn_mnist
from experiments.bn_mnist import EMA_AGREEMENT_POINTS, agreement, final_accuracies, gaps_to_alg2

FLAGS = flags.FLAGS
FIGURE = "ema_gap.png"
# SGD steps by which the final network's Alg. 2 statistics are made stale.
STALENESS_LAGS = (1, 10, 100)


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The BN study's BN net, scored on a validation split, one run per ``study.momenta``;
    ``variant="smoke"`` runs in seconds on scikit-learn's digits."""
    config = bn_mnist.get_config(variant)
    config.unlock()
    config.model.norm = bn_mnist.NETS["bn"]
    config.validation_fraction = config.study.sweep_validation_fraction
    # Curves are not this study's subject: a few cheap EMA evaluations, Alg. 2 at the end only.
    config.bn_eval_statistics = "ema"
    config.eval_every = 5_000
    config.checkpoint_every = 5_000
    config.seeds = (10, 11, 12, 13, 14)
    # The BN study's (iii), (i), (ii) on Fashion-MNIST (its sweep chose them; fixed here).
    config.learning_rates = (0.1, 2.0, 10.0)
    config.study = ml_collections.ConfigDict(
        {"momenta": (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)}
    )
    if variant == "smoke":
        config.eval_every = 50
        config.checkpoint_every = 100
        config.seeds = (10, 11)
        config.learning_rates = (0.1, 1.0)
        config.study.momenta = (0.9, 0.99)
    config.lock()
    return config


def momentum_config(
    config: ml_collections.ConfigDict, momentum: float
) -> ml_collections.ConfigDict:
    """The engine config of the run with EMA ``momentum`` (without the study's keys, so that a
    run can resume after momenta are added to the study)."""
    engine = ml_collections.ConfigDict(config.to_dict())
    engine.model.bn_momentum = momentum
    engine.study = ml_collections.ConfigDict()
    return engine


@dataclasses.dataclass
class MomentumStudy:
    """One engine run per momentum (same members: learning rates × seeds)."""

    runs: dict[float, RunResult]
    workdir: Path
    # lag -> (accuracy with the weights' own Alg. 2 statistics, with the final weights'), per
    # member, in %: see stale_statistics_accuracies.
    staleness: dict[int, tuple[np.ndarray, np.ndarray]]


def run_study(config: ml_collections.ConfigDict, workdir: str | Path) -> MomentumStudy:
    """Trains one run per momentum, then writes ``results.md`` and the figure.

    Raises:
      ValueError: a momentum outside [0, 1) (an EMA that never settles) or one named twice,
        checked before anything is trained.
      RuntimeError: the runs trained different weights (another layout of the members over
        the devices rounds differently), so their EMAs would not be comparable.
    """
    momenta = tuple(config.study.momenta)
    if not momenta or len(set(momenta)) != len(momenta):
        raise ValueError(f"config.study.momenta {momenta} must name distinct momenta.")
    if not all(0.0 <= m < 1.0 for m in momenta):
        raise ValueError(f"config.study.momenta {momenta} must lie in [0, 1) to settle.")
    workdir = Path(workdir)
    runs = train_and_evaluate_concurrently(
        [(momentum_config(config, m), workdir / f"momentum={m:g}") for m in momenta]
    )
    first = runs[0].state.params
    if not all(
        jax.tree.all(jax.tree.map(np.array_equal, run.state.params, first)) for run in runs
    ):
        raise RuntimeError(
            "The runs of different momenta trained different weights: their members were laid "
            "out over the devices differently. Run with one device, or with a device count "
            "that gives every run the same share."
        )
    staleness = stale_statistics_accuracies(
        momentum_config(config, momenta[0]), runs[0].state, STALENESS_LAGS
    )
    result = MomentumStudy(dict(zip(momenta, runs, strict=True)), workdir, staleness)
    write_results(config, result)
    plot_gaps(config, result, workdir / FIGURE)
    return result


def stale_statistics_accuracies(
    config: ml_collections.ConfigDict, state: train.TrainState, lags: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """How sensitive the trained network is to statistics of other weights than its own.

    From ``state`` (the final one of the run of ``config``; it is left as it is) the members
    train on for each of ``lags`` steps (0 allowed), with the run's data order and learning
    rates; each then has its accuracy on the run's evaluation split measured with its own Alg. 2
    statistics and with those of ``state``'s weights, ``lag`` steps older — the kind of
    statistics an EMA averages.

    Returns:
      ``{lag: (own, stale)}``, accuracies in % per member (member order).
    """
    run_data = train.load_run_data(config)
    model = train.build_model(config.model, run_data.num_classes)
    device = jax.local_devices()[0]
    # A copy (device_put alone may return the same buffers): the training chunk donates it.
    state = jax.tree.map(jnp.copy, jax.device_put(state, device))
    images, labels, evaluation_images, evaluation_labels = jax.device_put(
        (*run_data.train, *run_data.evaluation), device
    )
    evaluate = train.make_evaluate(
        model, probe=train.ProbeSpec.from_config(config.probe), batch_size=config.eval_batch_size
    )
    inference_statistics = train.make_inference_statistics(config, model, images)

    def accuracy(state, batch_stats):
        evaluation = evaluate(state.params, batch_stats, evaluation_images, evaluation_labels)
        return 100 * np.asarray(evaluation["accuracy"])

    final_statistics = inference_statistics(state, "population")
    chunk = train.make_train_chunk(
        model, train.build_optimizer(config.optimizer), batch_size=config.batch_size
    )
    data_order = train.empty_data_order(len(state.key), len(images))
    by_lag, trained = {}, 0
    for lag in sorted(lags):
        if lag > trained:
            state, data_order, _ = chunk(state, data_order, images, labels, lag - trained)
            trained = lag
        own = inference_statistics(state, "population")
        by_lag[lag] = (accuracy(state, own), accuracy(state, final_statistics))
    return by_lag


def _members_at(run: RunResult, learning_rate: float) -> np.ndarray:
    """A mask over the run's member axis: the members trained at ``learning_rate``."""
    return np.asarray([m.learning_rate == learning_rate for m in run.members])


def _any_run(result: MomentumStudy) -> RunResult:
    """A run of the study: all have the same members and weights."""
    return next(iter(result.runs.values()))


def staleness_costs(result: MomentumStudy, lag: int, learning_rate: float) -> np.ndarray:
    """Accuracy with the weights' own Alg. 2 statistics − with the final weights', ``lag``
    steps older, in points, per member at ``learning_rate``."""
    own, stale = result.staleness[lag]
    return (own - stale)[_members_at(_any_run(result), learning_rate)]


def seed_absolute_gaps(run: RunResult, learning_rates: Sequence[float]) -> np.ndarray:
    """Per seed (the run's seed order), the mean over ``learning_rates`` of |Alg. 2 − tracked
    EMA| final accuracy (points): how far the tracked EMA's inference network is from Alg. 2's,
    whichever side it falls. One number per seed, since a seed's members share its init and
    data order."""
    return np.mean([abs(gaps_to_alg2(run, lr, "ema")) for lr in learning_rates], axis=0)


def mean_absolute_gap(run: RunResult, learning_rates: Sequence[float]) -> float:
    """The mean over seeds of :func:`seed_absolute_gaps`, in points."""
    return float(seed_absolute_gaps(run, learning_rates).mean())


def closest_momenta(result: MomentumStudy, learning_rates: Sequence[float]) -> list[float]:
    """The momenta, closest to Alg. 2 first (:func:`mean_absolute_gap`)."""
    return sorted(result.runs, key=lambda m: mean_absolute_gap(result.runs[m], learning_rates))


def paired_difference(
    result: MomentumStudy, first: float, second: float, learning_rates: Sequence[float]
) -> tuple[float, float, float]:
    """:func:`seed_absolute_gaps` of momentum ``second`` − those of ``first``, paired seed by
    seed (the same weights): the mean and its 95% interval, in points."""
    return mean_confidence_interval(
        seed_absolute_gaps(result.runs[second], learning_rates)
        - seed_absolute_gaps(result.runs[first], learning_rates)
    )


def _cell(values: np.ndarray, signed: bool = False) -> str:
    mean, std = mean_std(values)
    mean = round(float(mean), 2) + 0.0  # no "-0.00"
    return f"{mean:+.2f} ± {std:.2f}" if signed else f"{mean:.2f} ± {std:.2f}"


def write_results(config: ml_collections.ConfigDict, result: MomentumStudy) -> Path:
    """Writes ``results.md``: per momentum and rate the three inference networks' accuracies and
    the gaps to Alg. 2, the agreement verdicts, the closest momentum, and the staleness table."""
    learning_rates = tuple(config.learning_rates)
    summary = _any_run(result).summary
    split = summary["evaluation_split"]
    lines = [
        "# EMA vs Alg. 2 population statistics — Ioffe & Szegedy 2015, Alg. 2, measured",
        "",
        f"Dataset: **{config.dataset}** ({summary['source']}); scored on the {split} split "
        f"({summary[f'num_{split}_examples']} examples held out of train). The BN study's BN "
        f"net: {bn_mnist.network_name(config, summary)} {config.model.activation}, plain SGD, "
        f"batch {config.batch_size}, {config.num_steps} steps, seeds {list(config.seeds)}; "
        f"Alg. 2 over {config.population_batches} training batches; accuracies and gaps mean ± "
        "std over seeds, in % and points. Every momentum trains the same weights (checked), so "
        "only the inference statistics differ.",
        "",
        "Momentum in flax's direction (`running = momentum · running + (1 − momentum) · batch`; "
        "PyTorch's `momentum` argument is 1 − it). *Settled*: the tracked EMA given "
        "enough further updates with the final weights frozen that its starting value weighs "
        "≤ 0.1% — it tells the EMA's lag (settled ≈ Alg. 2) from the estimators' difference.",
        "",
        "| momentum | PyTorch `momentum` | lr | Alg. 2 | tracked EMA | Alg. 2 − tracked EMA |"
        " Alg. 2 − settled EMA |",
        "|---|---|---|---|---|---|---|",
    ]
    for momentum, run in result.runs.items():
        for lr in learning_rates:
            lines.append(
                f"| {momentum:g} | {1 - momentum:.3g} | {lr:g} | "
                f"{_cell(final_accuracies(run, lr, 'population'))} | "
                f"{_cell(final_accuracies(run, lr, 'ema'))} | "
                f"{_cell(gaps_to_alg2(run, lr, 'ema'), signed=True)} | "
                f"{_cell(gaps_to_alg2(run, lr, 'settled_ema'), signed=True)} |"
            )
    lines += [
        "",
        f"### Do the tracked and the settled EMA agree with Alg. 2 (within "
        f"{EMA_AGREEMENT_POINTS:g} points)?",
        "",
        "Alg. 2 − EMA accuracy per seed: mean ± std, the 95% interval of the mean (Student t "
        "over the seeds), and the verdict it allows.",
        "",
    ]
    for momentum, run in result.runs.items():
        lines.append(f"- momentum {momentum:g} (mean |gap| of the tracked EMA "
                     f"{mean_absolute_gap(run, learning_rates):.2f} points):")
        lines += [
            f"  - lr {lr:g}: tracked {agreement(gaps_to_alg2(run, lr, 'ema'))}; settled "
            f"{agreement(gaps_to_alg2(run, lr, 'settled_ema'))}."
            for lr in learning_rates
        ]
    lines += ["", *_closest_lines(config, result), "", *_staleness_lines(config, result)]
    lines += [
        f"Figure: `{FIGURE}` (left: Alg. 2 − tracked EMA per momentum and rate; right: the cost "
        "of stale statistics per lag and rate; mean ± std over seeds).",
        "",
    ]
    path = result.workdir / "results.md"
    path.write_text("\n".join(lines))
    return path


def _closest_lines(config: ml_collections.ConfigDict, result: MomentumStudy) -> list[str]:
    ranking = closest_momenta(result, config.learning_rates)
    closest = ranking[0]
    lines = [
        f"Closest to Alg. 2: momentum **{closest:g}** (the smallest mean |gap| of the tracked "
        "EMA, averaged over the rates per seed, then over the seeds)."
    ]
    if len(ranking) > 1:
        differences = {
            m: paired_difference(result, closest, m, config.learning_rates) for m in ranking[1:]
        }
        lines[0] += (
            " The others' mean |gap| − its, paired seed by seed (the same weights), with the 95% "
            "interval over the seeds: "
            + "; ".join(f"{m:g}: {d[0]:+.2f} ({d[1]:+.2f} to {d[2]:+.2f})"
                        for m, d in differences.items())
            + f". The intervals are not corrected for the {len(differences)} comparisons, and "
            "the closest was picked on the same seeds, which flatters it."
        )
        tied = [m for m, (_, low, high) in differences.items() if low <= 0.0 <= high]
        if tied:
            lines.append(
                f"Not told apart from {closest:g} (the interval includes zero): "
                f"{', '.join(f'{m:g}' for m in sorted(tied))}."
            )
    momenta = sorted(result.runs)
    if closest in (momenta[0], momenta[-1]) and len(momenta) > 1:
        lines.append(
            f"**Caution**: {closest:g} is at the edge of the grid {momenta}; beyond it an "
            "EMA may come closer still."
        )
    return lines


def _staleness_lines(config: ml_collections.ConfigDict, result: MomentumStudy) -> list[str]:
    lags = sorted(result.staleness)
    lines = [
        "### How sensitive is the trained network to statistics of other weights?",
        "",
        "From the final weights the members train on for k steps, and each is scored with its own "
        "Alg. 2 statistics and with those of the final weights, k steps older: the kind of "
        "statistics an EMA averages. The cost (own − stale, points) shows how sensitive the "
        "network is to statistics of other weights; an EMA averages statistics of many past "
        "weights, so its gap is not the cost of any one lag.",
        "",
        f"| lr | accuracy, own Alg. 2 after {lags[0]} step{'s' * (lags[0] != 1)} | "
        + " | ".join(f"cost, {lag} step{'s' * (lag != 1)} stale" for lag in lags)
        + " |",
        "|---|---|" + "---|" * len(lags),
    ]
    run = _any_run(result)
    for lr in config.learning_rates:
        own = result.staleness[lags[0]][0][_members_at(run, lr)]
        costs = [_cell(staleness_costs(result, lag, lr), signed=True) for lag in lags]
        lines.append(f"| {lr:g} | {_cell(own)} | " + " | ".join(costs) + " |")
    lines.append("")
    return lines


def plot_gaps(config: ml_collections.ConfigDict, result: MomentumStudy, path: Path) -> Path:
    """Left: Alg. 2 − tracked-EMA accuracy gap vs the EMA's averaging length 1 / (1 − momentum),
    the agreement band shaded; right: the cost of Alg. 2 statistics k steps stale vs k. One line
    per learning rate, mean ± std over seeds."""
    figure, (ax, stale_ax) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    momenta = list(result.runs)
    lengths = [1 / (1 - m) for m in momenta]
    for index, lr in enumerate(config.learning_rates):
        mean, std = np.asarray(
            [mean_std(gaps_to_alg2(result.runs[m], lr, "ema")) for m in momenta]
        ).T
        ax.errorbar(lengths, mean, yerr=std, marker="o", capsize=3, color=f"C{index}",
                    label=f"lr {lr:g}")
    ax.axhspan(-EMA_AGREEMENT_POINTS, EMA_AGREEMENT_POINTS, color="grey", alpha=0.15, lw=0,
               label=f"±{EMA_AGREEMENT_POINTS:g} points")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if len(momenta) > 1:  # one point has no log range to span
        ax.set_xscale("log")
    ax.set_xticks(lengths, [f"{m:g}" for m in momenta])
    ax.minorticks_off()
    ax.set_xlabel("EMA momentum (log scale of 1 / (1 − momentum), the batches it averages)")
    ax.set_ylabel("Alg. 2 − tracked EMA accuracy (points)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title("The tracked EMA's deficit")
    lags = sorted(result.staleness)
    for index, lr in enumerate(config.learning_rates):
        mean, std = np.asarray([mean_std(staleness_costs(result, lag, lr)) for lag in lags]).T
        stale_ax.errorbar(lags, mean, yerr=std, marker="o", capsize=3, color=f"C{index}",
                          label=f"lr {lr:g}")
    stale_ax.axhline(0.0, color="grey", linewidth=0.8)
    stale_ax.set_xscale("log")
    stale_ax.set_xticks(lags, [str(lag) for lag in lags])
    stale_ax.minorticks_off()
    stale_ax.set_xlabel("SGD steps since the statistics' weights")
    stale_ax.set_ylabel("own Alg. 2 − stale Alg. 2 accuracy (points)")
    stale_ax.set_title("How fast statistics go stale")
    stale_ax.grid(alpha=0.3)
    stale_ax.legend(loc="best")
    figure.suptitle(f"{config.dataset}: {len(config.seeds)} seeds, mean ± std")
    return plots.save(figure, path)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    result = run_study(FLAGS.config, FLAGS.workdir)
    print((result.workdir / "results.md").read_text())
    print(f"Figure: {result.workdir / FIGURE}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", "runs/bn_ema_momentum", "Where results and runs go.")
    config_flags.DEFINE_config_file(
        "config", __file__, "The study's config file (this module; ':smoke' for smoke size)."
    )
    app.run(main)
