"""EMA statistics vs Alg. 2's population statistics: how the BN momentum sets the gap.

Ioffe & Szegedy (2015, Sec. 3.1, Alg. 2) build the inference network from population statistics
averaged over many training mini-batches *after* training, with the final weights. Frameworks
instead track an exponential moving average (EMA) of the batch statistics *while* training —
``running = momentum · running + (1 − momentum) · batch`` (flax's direction; PyTorch's
``momentum`` is ``1 −`` this) — with flax and Keras defaulting to 0.99 and PyTorch to 0.9. The
EMA trades lag against noise: a high momentum averages many batches but of weights that have
since moved; a low one follows the weights but averages few batches.

This study trains the BN study's network with BN (experiments/bn_mnist.py: 784-100-100-100-10
sigmoid, N(0, 0.1²) init, plain SGD, batch 60, 50,000 steps) once per momentum, at the BN study's
three Fashion-MNIST learning rates, and scores on a validation split (1/12 of train) the final
network with (a) the EMA tracked in training, (b) the same EMA settled on the final weights
(:func:`bnreg.train.settled_ema_statistics`) and (c) Alg. 2's statistics. The momentum never
enters training (the EMA is not used by the training forward pass), so every momentum trains
bit-identical weights and only the inference statistics differ.

It is the pilot behind the BN study's momentum (``experiments/bn_mnist.py`` docstring): its seeds
(10–14) and its validation split are disjoint from the BN study's seeds and test set, so the
study's own EMA-vs-Alg. 2 verdict is not measured on the data that chose the momentum.

Findings (Fashion-MNIST, experiments/results/bn_ema_momentum_fashion_mnist): at every momentum
and rate the tracked EMA trails Alg. 2 — by +0.40 to +0.84 points at 0.9, +0.77 to +1.03 at
0.99, +0.95 to +1.17 at 0.999 — while the settled EMA agrees with it (−0.02 to +0.15): the gap is
the lag, not the estimators. Why a lag of a few steps costs this much: the final network scored
with Alg. 2 statistics of its own weights 1 step earlier loses −0.05 to +0.29 points, 10 steps
earlier +1.1 to +1.8, 100 steps earlier +1.3 to +2.0 (:func:`stale_statistics_accuracies`). With
a constant learning rate the weights keep moving, and the trained net turns the small errors
this leaves in its statistics into lost accuracy. PyTorch's ``BatchNorm1d`` in
the benchmark's eager script shows the same (``benchmarks/torch_ema_vs_alg2.py``: its running
statistics trail Alg. 2 by +0.53 to +0.89 points with ``momentum`` 0.1 and 0.01, at lr 0.1 and 2).

Commands::

  # Fashion-MNIST (Debian's dataset-fashion-mnist offline), ~13 min on 2 cores
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.bn_ema_momentum \\
      --workdir=runs/bn_ema_momentum --config.dataset=fashion_mnist
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_ema_momentum --workdir=/tmp/ema_smoke \\
      --config=experiments/bn_ema_momentum.py:smoke

Outputs in ``--workdir``: ``results.md`` (the gaps per momentum and rate, the recommended
momentum), ``ema_gap.png``, and one engine run per momentum (``momentum=<m>/``).
"""

from __future__ import annotations

import dataclasses
import functools
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
from bnreg.metrics import mean_std
from bnreg.train import RunResult, ema_settling_batches, train_and_evaluate_concurrently
from experiments import bn_mnist

FLAGS = flags.FLAGS
FIGURE = "ema_gap.png"
# The agreement the BN study asks of the two inference networks (issue #5), in points.
AGREEMENT_POINTS = 0.3
# SGD steps by which the final network's Alg. 2 statistics are made stale (the EMA's lag).
STALENESS_LAGS = (1, 10, 100)


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The BN study's BN net, scored on a validation split, one run per ``study.momenta``;
    ``variant="smoke"`` runs in seconds on scikit-learn's digits."""
    config = bn_mnist.get_config(variant)
    config.unlock()
    config.model.norm = "batch"
    config.validation_fraction = 1 / 12
    # Curves are not this study's subject: a few cheap EMA evaluations, Alg. 2 at the end only.
    config.bn_eval_statistics = "ema"
    config.eval_every = 5_000
    config.checkpoint_every = 5_000
    config.seeds = (10, 11, 12, 13, 14)
    config.learning_rates = (0.1, 2.0, 10.0)  # the BN study's (iii), (i), (ii) on Fashion-MNIST
    config.study = ml_collections.ConfigDict({"momenta": (0.9, 0.95, 0.99, 0.999)})
    if variant == "smoke":
        config.validation_fraction = 0.2
        config.eval_every = 50
        config.checkpoint_every = 100
        config.seeds = (10, 11)
        config.learning_rates = (0.1, 1.0)
        config.study.momenta = (0.9, 0.99)
    config.lock()
    return config


def momentum_config(config: ml_collections.ConfigDict, momentum: float):
    """The engine config of the run with EMA ``momentum``."""
    engine = ml_collections.ConfigDict(config.to_dict())
    engine.model.bn_momentum = momentum
    return engine


@dataclasses.dataclass
class MomentumStudy:
    """One engine run per momentum (same members: learning rates × seeds)."""

    runs: dict[float, RunResult]
    workdir: Path
    # lag -> (accuracy with the weights' own Alg. 2 statistics, with those `lag` steps stale),
    # per member, in %: see stale_statistics_accuracies.
    staleness: dict[int, tuple[np.ndarray, np.ndarray]]


def run_study(config: ml_collections.ConfigDict, workdir: str | Path) -> MomentumStudy:
    """Trains one run per momentum, then writes ``results.md`` and the figure.

    Raises:
      ValueError: a momentum outside [0, 1) (an EMA that never settles) or one named twice,
        checked before anything is trained.
    """
    momenta = tuple(config.study.momenta)
    if not momenta or len(set(momenta)) != len(momenta):
        raise ValueError(f"config.study.momenta {momenta} must name distinct momenta.")
    for momentum in momenta:
        ema_settling_batches(momentum)  # raises outside [0, 1)
    workdir = Path(workdir)
    runs = train_and_evaluate_concurrently(
        [(momentum_config(config, m), workdir / f"momentum={m:g}") for m in momenta]
    )
    # The momentum does not change the weights, so any run's final state serves.
    staleness = stale_statistics_accuracies(config, runs[0].state, STALENESS_LAGS)
    result = MomentumStudy(dict(zip(momenta, runs, strict=True)), workdir, staleness)
    write_results(config, result)
    plot_gaps(config, result, workdir / FIGURE)
    return result


def stale_statistics_accuracies(
    config: ml_collections.ConfigDict, state: train.TrainState, lags: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """How fast the trained network's BN statistics go stale — the cost of the EMA's lag.

    From ``state`` (the final one of a run of ``config``) the members train on for each of
    ``lags`` steps, with the run's data order and learning rates; each then has its accuracy on
    the run's evaluation split measured with its own Alg. 2 statistics and with those of
    ``state``'s weights, i.e. ``lag`` steps stale. An EMA tracked in training averages
    statistics of weights that many steps old and older.

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
    population_statistics = train.make_population_statistics(model)
    draw = functools.partial(
        train.population_batch_indices,
        num_examples=len(images),
        batch_size=config.batch_size,
        num_batches=config.population_batches,
    )
    batch_indices = jax.jit(jax.vmap(draw))(state.key)

    def statistics(state):
        return population_statistics(
            state.params, state.batch_stats, state.key, images, batch_indices
        )

    def accuracy(state, batch_stats):
        evaluation = evaluate(state.params, batch_stats, evaluation_images, evaluation_labels)
        return 100 * np.asarray(evaluation["accuracy"])

    stale = statistics(state)
    chunk = train.make_train_chunk(
        model, train.build_optimizer(config.optimizer), batch_size=config.batch_size
    )
    data_order = train.empty_data_order(len(state.key), len(images))
    accuracies, trained = {}, 0
    for lag in sorted(lags):
        state, data_order, _ = chunk(state, data_order, images, labels, lag - trained)
        trained = lag
        accuracies[lag] = (accuracy(state, statistics(state)), accuracy(state, stale))
    return accuracies


def gaps_to_alg2(run: RunResult, learning_rate: float, statistics: str) -> np.ndarray:
    """Alg. 2 − ``statistics`` (``"ema"`` or ``"settled_ema"``) final accuracy, in points, per
    member at ``learning_rate`` (member order)."""
    split = run.summary["evaluation_split"]
    return 100 * np.asarray([
        m[f"{split}_accuracy_population"] - m[f"{split}_accuracy_{statistics}"]
        for m in run.summary["members"]
        if m["learning_rate"] == learning_rate
    ])


def accuracies(run: RunResult, learning_rate: float, statistics: str) -> np.ndarray:
    """Final accuracy in % with ``statistics`` per member at ``learning_rate``."""
    split = run.summary["evaluation_split"]
    return 100 * np.asarray([
        m[f"{split}_accuracy_{statistics}"]
        for m in run.summary["members"]
        if m["learning_rate"] == learning_rate
    ])


def mean_absolute_gap(run: RunResult, learning_rates: Sequence[float]) -> float:
    """The mean over ``learning_rates`` of |mean Alg. 2 − tracked-EMA gap| (points): how far the
    tracked EMA's inference network is from Alg. 2's, whichever side it falls."""
    return float(np.mean([abs(gaps_to_alg2(run, lr, "ema").mean()) for lr in learning_rates]))


def closest_momentum(result: MomentumStudy, learning_rates: Sequence[float]) -> float:
    """The momentum whose tracked EMA is closest to Alg. 2 (:func:`mean_absolute_gap`)."""
    return min(result.runs, key=lambda m: mean_absolute_gap(result.runs[m], learning_rates))


def _cell(values: np.ndarray, signed: bool = False) -> str:
    mean, std = mean_std(values)
    mean = round(float(mean), 2) + 0.0  # no "-0.00"
    return f"{mean:+.2f} ± {std:.2f}" if signed else f"{mean:.2f} ± {std:.2f}"


def write_results(config: ml_collections.ConfigDict, result: MomentumStudy) -> Path:
    """Writes ``results.md``: per momentum and rate the three inference networks' accuracies and
    the gaps to Alg. 2, a verdict per momentum, and the closest momentum."""
    learning_rates = tuple(config.learning_rates)
    any_run = next(iter(result.runs.values()))
    split = any_run.summary["evaluation_split"]
    layer_sizes = [int(np.prod(any_run.summary["input_shape"])), *config.model.hidden_sizes, 10]
    lines = [
        "# EMA vs Alg. 2 population statistics — Ioffe & Szegedy 2015, Alg. 2, measured",
        "",
        f"Dataset: **{config.dataset}** ({any_run.summary['source']}); scored on the "
        f"{split} split ({any_run.summary[f'num_{split}_examples']} examples held out of "
        f"train). The BN study's BN net: {'-'.join(map(str, layer_sizes))} "
        f"{config.model.activation}, plain SGD, batch {config.batch_size}, "
        f"{config.num_steps} steps, seeds {list(config.seeds)}; Alg. 2 over "
        f"{config.population_batches} training batches; accuracies and gaps mean ± std over "
        "seeds, in % and points.",
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
                f"{_cell(accuracies(run, lr, 'population'))} | "
                f"{_cell(accuracies(run, lr, 'ema'))} | "
                f"{_cell(gaps_to_alg2(run, lr, 'ema'), signed=True)} | "
                f"{_cell(gaps_to_alg2(run, lr, 'settled_ema'), signed=True)} |"
            )
    lines += [
        "",
        f"### Does the tracked EMA agree with Alg. 2 within {AGREEMENT_POINTS} points at every "
        "rate?",
        "",
    ]
    for momentum, run in result.runs.items():
        gaps = {lr: gaps_to_alg2(run, lr, "ema").mean() for lr in learning_rates}
        outside = [f"{lr:g} ({gap:+.2f})" for lr, gap in gaps.items()
                   if abs(gap) > AGREEMENT_POINTS]
        verdict = (
            "yes" if not outside else f"**no**, at lr {', '.join(outside)}"
        )
        lines.append(
            f"- momentum {momentum:g}: {verdict}; mean |gap| over the rates "
            f"{mean_absolute_gap(run, learning_rates):.2f} points."
        )
    closest = closest_momentum(result, learning_rates)
    lines += [
        "",
        f"Closest to Alg. 2: momentum **{closest:g}** (the smallest mean |gap|).",
        "",
        *_staleness_lines(config, result),
        f"Figure: `{FIGURE}` (left: Alg. 2 − tracked EMA per momentum and rate; right: the cost "
        "of stale statistics per lag and rate; mean ± std over seeds).",
        "",
    ]
    path = result.workdir / "results.md"
    path.write_text("\n".join(lines))
    return path


def staleness_costs(result: MomentumStudy, lag: int, learning_rate: float) -> np.ndarray:
    """Accuracy with the weights' own Alg. 2 statistics − with those ``lag`` steps stale, in
    points, per member at ``learning_rate``."""
    own, stale = result.staleness[lag]
    members = next(iter(result.runs.values())).members
    at_rate = np.asarray([m.learning_rate == learning_rate for m in members])
    return (own - stale)[at_rate]


def _staleness_lines(config: ml_collections.ConfigDict, result: MomentumStudy) -> list[str]:
    lags = sorted(result.staleness)
    lines = [
        "### Why: the trained network's statistics go stale within steps",
        "",
        "From the final weights the members train on, and each is scored with its own Alg. 2 "
        "statistics and with those of the final weights, k steps stale. The cost (own − stale, "
        "points) is what an EMA pays for averaging statistics of past weights:",
        "",
        "| lr | accuracy, own Alg. 2 after 1 step | "
        + " | ".join(f"cost, {lag} step{'s' * (lag > 1)} stale" for lag in lags)
        + " |",
        "|---|---|" + "---|" * len(lags),
    ]
    members = next(iter(result.runs.values())).members
    for lr in config.learning_rates:
        at_rate = np.asarray([m.learning_rate == lr for m in members])
        own = result.staleness[lags[0]][0][at_rate]
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
    ax.axhspan(-AGREEMENT_POINTS, AGREEMENT_POINTS, color="grey", alpha=0.15, lw=0,
               label=f"±{AGREEMENT_POINTS} points")
    ax.axhline(0.0, color="grey", linewidth=0.8)
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
    stale_ax.set_title("Why: statistics go stale within steps")
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
