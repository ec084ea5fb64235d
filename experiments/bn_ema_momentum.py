"""EMA statistics vs Alg. 2's population statistics: how the BN momentum sets the gap.

Ioffe & Szegedy (2015, Sec. 3.1, Alg. 2) build the inference network from population statistics
averaged over many training mini-batches *after* training, with the final weights. Frameworks
instead track an exponential moving average (EMA) of the batch statistics *while* training —
``running = momentum · running + (1 − momentum) · batch`` (flax's direction; PyTorch's
``momentum`` is ``1 −`` this) — with flax and Keras defaulting to 0.99 and PyTorch to 0.9. The
EMA trades lag against noise: a high momentum averages many batches but of weights that have
since moved; a low one follows the weights but averages few batches.

Protocol: the BN study's network with BN (784-100-100-100-10 sigmoid, N(0, 0.1²) init, plain
SGD, batch 60, 50,000 steps; ``experiments/bn_mnist.py``) at the BN study's three Fashion-MNIST
learning rates, 5 seeds (10–14, disjoint from the BN study's, which used the momentum chosen
here), scored on a validation split (1/12 of train) with (a) the EMA tracked in training, (b) the
same EMA settled on the final weights and (c) Alg. 2's statistics. Each momentum is a run of the
group, so adding momenta to ``study.momenta`` trains only the new ones. The momentum never
enters training (the training forward pass normalises with batch statistics), so every momentum
trains bit-identical weights (checked) and the momenta compare seed by seed, paired. Then, from
the final weights, the members train on for 1, 10 and 100 steps and are scored with their own
Alg. 2 statistics and with the final weights' (:func:`stale_statistics_accuracies`): how
sensitive the network is to statistics of other weights, the kind an EMA averages.

Commands::

  # Fashion-MNIST (Debian's dataset-fashion-mnist offline), ~25 min on 2 cores
  python -m experiments.bn_ema_momentum --workdir=runs/bn_ema_momentum \\
      --config.dataset=fashion_mnist
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_ema_momentum --workdir=/tmp/ema_smoke \\
      --config=experiments/bn_ema_momentum.py:smoke

Outputs in ``--workdir``: ``results.md`` (the gaps per momentum and rate, the agreement verdicts,
the closest momentum and those not told apart from it, the staleness table), ``ema_gap.png``,
and one engine run per momentum (``momentum=<m>/``). Measured results:
experiments/results/bn_ema_momentum_fashion_mnist/results.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.config import default_config, override

FIGURE = "ema_gap.png"
# SGD steps by which the final network's Alg. 2 statistics are made stale.
STALENESS_LAGS = (1, 10, 100)
# Within this many points the EMA's and Alg. 2's inference networks "agree" (issue #5).
AGREEMENT_POINTS = 0.3


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The BN study's BN net on a validation split, one run per ``study.momenta``;
    ``variant="smoke"`` runs in seconds on scikit-learn's digits."""
    config = default_config()
    config.dataset = "mnist"
    config.model.hidden_sizes = (100, 100, 100)
    config.model.activation = "sigmoid"
    config.model.norm = "batch"
    config.model.kernel_init = "normal"
    config.model.init_stddev = 0.1
    config.batch_size = 60
    config.num_steps = 50_000
    config.validation_fraction = 1 / 12
    # Curves are not this study's subject: a few cheap EMA evaluations, Alg. 2 at the end only.
    config.eval_every = config.checkpoint_every = 5_000
    config.evaluation.bn_statistics = "ema"
    config.evaluation.final = ("population", "settled_ema")
    config.evaluation.population_batches = 100
    config.probe.histogram_bins = 0
    # The BN study's (iii), (i), (ii) on Fashion-MNIST (its sweep chose them; fixed here).
    config.sweep.learning_rate = (0.1, 2.0, 10.0)
    config.sweep.seed = (10, 11, 12, 13, 14)
    config.study.momenta = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
    if variant == "smoke":
        config.dataset = "digits"
        config.num_steps, config.eval_every, config.checkpoint_every = 200, 50, 100
        config.validation_fraction = 0.2
        config.evaluation.population_batches = 10
        config.sweep.learning_rate, config.sweep.seed = (0.1, 1.0), (10, 11)
        config.study.momenta = (0.9, 0.99)
    elif variant != "full":
        raise ValueError(f"variant must be 'full' or 'smoke', got {variant!r}.")
    config.lock()
    return config


def runs_of(momenta: Sequence[float]) -> dict[str, dict]:
    """The group's runs: one per momentum, named ``momentum=<m>``."""
    return {f"momentum={m:g}": {"model.bn_momentum": m} for m in momenta}


@dataclasses.dataclass
class MomentumStudy:
    """The final evaluation of every run (a ``momentum`` column), the staleness costs and the
    data's summary."""

    final: pd.DataFrame
    # lag -> (accuracy with the weights' own Alg. 2 statistics, with the final weights'), per
    # member of the first momentum's run, with that run's members (learning_rate, seed) columns.
    staleness: pd.DataFrame
    summary: dict
    workdir: Path


def run_study(config: ml_collections.ConfigDict, workdir: Path) -> list[Path]:
    """Trains one run per momentum, then writes ``results.md`` and the figure.

    Raises:
      ValueError: a momentum outside [0, 1) (an EMA that never settles) or one named twice,
        checked before anything is trained.
      RuntimeError: the runs trained different weights (another layout of the members over
        the devices rounds differently), so their EMAs would not be comparable.
    """
    import jax

    from bnreg import engine

    momenta = tuple(config.study.momenta)
    if not momenta or len(set(momenta)) != len(momenta):
        raise ValueError(f"config.study.momenta {momenta} must name distinct momenta.")
    if not all(0.0 <= m < 1.0 for m in momenta):
        raise ValueError(f"config.study.momenta {momenta} must lie in [0, 1) to settle.")
    workdir = Path(workdir)
    runs = engine.train_group(config, runs_of(momenta), workdir)
    first, *others = runs.values()
    if not all(jax.tree.all(jax.tree.map(np.array_equal, r.state.params, first.state.params))
               for r in others):
        raise RuntimeError(
            "The runs of different momenta trained different weights, so their EMAs are not "
            "comparable: their members were laid out over the devices differently (each run "
            "gets an equal share; another device count changes the layout). Use a new "
            "--workdir: runs resumed from a mixed layout keep their weights."
        )
    final = analysis.combine({m: analysis.table(r.summary["members"])
                              for m, r in zip(momenta, runs.values(), strict=True)}, "momentum")
    first_config = override(config, runs_of(momenta)[next(iter(runs))])
    staleness = stale_statistics_accuracies(first_config, first.state, STALENESS_LAGS)
    result = MomentumStudy(final, staleness, first.summary, workdir)
    return [write_results(config, result), plot_gaps(config, result)]


def stale_statistics_accuracies(config, state, lags: Sequence[int]) -> pd.DataFrame:
    """How sensitive the trained network is to statistics of other weights than its own.

    From ``state`` (the final one of the run of ``config``; it is left as it is) the members
    train on for each of ``lags`` steps (0 allowed), with the run's data order and learning
    rates; each then has its accuracy on the run's evaluation split measured with its own Alg. 2
    statistics and with those of ``state``'s weights, ``lag`` steps older — the kind of
    statistics an EMA averages.

    Returns:
      One row per (lag, member): ``lag``, the members' columns, ``own`` and ``stale``
      accuracies in %.
    """
    import jax

    from bnreg import engine

    # On the devices the state's run trained on: the same layout of members.
    devices = sorted(jax.tree.leaves(state.params)[0].sharding.device_set, key=lambda d: d.id)
    run = engine.build(config, devices)
    state = run.adopt(state)
    alg2 = [run.evaluator("population")]
    final_statistics = run.statistics(state, "population")
    order, trained, rows = run.empty_order(), 0, []
    for lag in sorted(lags):
        if lag > trained:
            state, order, _ = run.train(state, order, lag - trained)
            trained = lag
        own = run.evaluate(state, alg2)["population"]["accuracy"]
        stale = run.evaluate(state, alg2, batch_stats=final_statistics)["population"]["accuracy"]
        rows += [{"lag": lag, **member, "own": 100 * float(own[i]), "stale": 100 * float(stale[i])}
                 for i, member in enumerate(run.members)]
    return pd.DataFrame(rows)


def final_accuracies(result: MomentumStudy, momentum: float, lr: float, kind: str) -> np.ndarray:
    """Final accuracy in % with BN statistics ``kind``, per seed, of one momentum and rate."""
    frame = analysis.select(result.final, momentum=momentum, learning_rate=lr)
    return 100 * frame[f"accuracy_{kind}"].to_numpy()


def gaps_to_alg2(result: MomentumStudy, momentum: float, lr: float, kind: str) -> np.ndarray:
    """Alg. 2 − ``kind`` final accuracy in points, per seed."""
    return (final_accuracies(result, momentum, lr, "population")
            - final_accuracies(result, momentum, lr, kind))


def seed_absolute_gaps(result: MomentumStudy, momentum: float, rates: Sequence[float]):
    """Per seed, the mean over ``rates`` of |Alg. 2 − tracked EMA| (points): how far the
    tracked EMA's inference network is from Alg. 2's, whichever side it falls. One number per
    seed, since a seed's members share its init and data order."""
    return np.mean([abs(gaps_to_alg2(result, momentum, lr, "ema")) for lr in rates], axis=0)


def closest_momenta(result: MomentumStudy, rates: Sequence[float]) -> list[float]:
    """The momenta, closest to Alg. 2 first (mean over seeds of :func:`seed_absolute_gaps`)."""
    momenta = sorted(set(result.final["momentum"]), key=list(result.final["momentum"]).index)
    return sorted(momenta, key=lambda m: seed_absolute_gaps(result, m, rates).mean())


def staleness_costs(result: MomentumStudy, lag: int, lr: float) -> np.ndarray:
    """Own − stale Alg. 2 accuracy, ``lag`` steps stale, in points, per seed at ``lr``."""
    rows = analysis.select(result.staleness, lag=lag, learning_rate=lr)
    return (rows["own"] - rows["stale"]).to_numpy()


def _agreement(gaps: np.ndarray) -> str:
    return analysis.agreement_text(analysis.agreement(gaps, AGREEMENT_POINTS))


def write_results(config: ml_collections.ConfigDict, result: MomentumStudy) -> Path:
    """Writes ``results.md``: per momentum and rate the three inference networks' accuracies and
    the gaps to Alg. 2, the agreement verdicts, the closest momentum, and the staleness table."""
    rates, momenta = tuple(config.sweep.learning_rate), config.study.momenta
    summary = result.summary
    sizes = [int(np.prod(summary["input_shape"])), *config.model.hidden_sizes, 10]
    rows = [[f"{m:g}", f"{1 - m:.3g}", f"{lr:g}",
             analysis.cell(final_accuracies(result, m, lr, "population")),
             analysis.cell(final_accuracies(result, m, lr, "ema")),
             analysis.cell(gaps_to_alg2(result, m, lr, "ema"), signed=True),
             analysis.cell(gaps_to_alg2(result, m, lr, "settled_ema"), signed=True)]
            for m in momenta for lr in rates]
    lines = [
        "# EMA vs Alg. 2 population statistics — Ioffe & Szegedy 2015, Alg. 2, measured", "",
        f"Dataset: **{config.dataset}** ({summary['source']}); scored on the {summary['split']} "
        f"split ({summary['num_evaluation_examples']} examples held out of train). The BN "
        f"study's BN net: {'-'.join(map(str, sizes))} {config.model.activation}, plain SGD, "
        f"batch {config.batch_size}, {config.num_steps} steps, seeds {list(config.sweep.seed)}; "
        f"Alg. 2 over {config.evaluation.population_batches} training batches; accuracies and "
        "gaps mean ± std over seeds, in % and points. Every momentum trains the same weights "
        "(checked), so only the inference statistics differ.", "",
        "Momentum in flax's direction (`running = momentum · running + (1 − momentum) · batch`; "
        "PyTorch's `momentum` argument is 1 − it). *Settled*: the tracked EMA given enough "
        "further updates with the final weights frozen that its starting value weighs ≤ 0.1% — "
        "it tells the EMA's lag (settled ≈ Alg. 2) from the estimators' difference.", "",
        analysis.markdown_table(["momentum", "PyTorch `momentum`", "lr", "Alg. 2", "tracked EMA",
                                 "Alg. 2 − tracked EMA", "Alg. 2 − settled EMA"], rows), "",
        "### Do the tracked and the settled EMA agree with Alg. 2 (within "
        f"{AGREEMENT_POINTS:g} points)?", "",
        "Alg. 2 − EMA accuracy per seed: mean ± std, the 95% interval of the mean (Student t "
        "over the seeds), and the verdict it allows.", "",
    ]
    for m in momenta:
        lines.append(f"- momentum {m:g} (mean |gap| of the tracked EMA "
                     f"{seed_absolute_gaps(result, m, rates).mean():.2f} points):")
        lines += [f"  - lr {lr:g}: tracked {_agreement(gaps_to_alg2(result, m, lr, 'ema'))}; "
                  f"settled {_agreement(gaps_to_alg2(result, m, lr, 'settled_ema'))}."
                  for lr in rates]
    lines += ["", *closest_lines(result, rates), "", *_staleness_lines(result, rates),
              f"Figure: `{FIGURE}` (left: Alg. 2 − tracked EMA per momentum and rate; right: the "
              "cost of stale statistics per lag and rate; mean ± std over seeds).", ""]
    path = result.workdir / "results.md"
    path.write_text("\n".join(lines))
    return path


def closest_lines(result: MomentumStudy, rates: Sequence[float]) -> list[str]:
    """results.md's lines on the momentum closest to Alg. 2, the paired differences of the
    others to it, those not told apart from it, and a caution when it is at the grid's edge."""
    ranking = closest_momenta(result, rates)
    closest = ranking[0]
    lines = [f"Closest to Alg. 2: momentum **{closest:g}** (the smallest mean |gap| of the "
             "tracked EMA, averaged over the rates per seed, then over the seeds)."]
    if len(ranking) > 1:
        differences = {m: analysis.confidence_interval(seed_absolute_gaps(result, m, rates)
                                                       - seed_absolute_gaps(result, closest, rates))
                       for m in ranking[1:]}
        lines[0] += (
            " The others' mean |gap| − its, paired seed by seed (the same weights), with the 95% "
            "interval over the seeds: "
            + "; ".join(f"{m:g}: {d[0]:+.2f} ({d[1]:+.2f} to {d[2]:+.2f})"
                        for m, d in differences.items())
            + f". The intervals are not corrected for the {len(differences)} comparisons, and "
            "the closest was picked on the same seeds, which flatters it.")
        tied = [m for m, (_, low, high) in differences.items() if low <= 0.0 <= high]
        if tied:
            lines.append(f"Not told apart from {closest:g} (the interval includes zero): "
                         f"{', '.join(f'{m:g}' for m in sorted(tied))}.")
    momenta = sorted(ranking)
    if closest in (momenta[0], momenta[-1]) and len(momenta) > 1:
        lines.append(f"**Caution**: {closest:g} is at the edge of the grid {momenta}; beyond it "
                     "an EMA may come closer still.")
    return lines


def _staleness_lines(result: MomentumStudy, rates: Sequence[float]) -> list[str]:
    lags = sorted(set(result.staleness["lag"]))
    steps = lambda lag: f"{lag} step{'s' * (lag != 1)}"  # noqa: E731
    rows = [[f"{lr:g}",
             analysis.cell(analysis.select(result.staleness, lag=lags[0], learning_rate=lr)["own"]),
             *(analysis.cell(staleness_costs(result, lag, lr), signed=True) for lag in lags)]
            for lr in rates]
    return [
        "### How sensitive is the trained network to statistics of other weights?", "",
        "From the final weights the members train on for k steps, and each is scored with its own "
        "Alg. 2 statistics and with those of the final weights, k steps older: the kind of "
        "statistics an EMA averages. The cost (own − stale, points) shows how sensitive the "
        "network is to statistics of other weights; an EMA averages statistics of many past "
        "weights, so its gap is not the cost of any one lag.", "",
        analysis.markdown_table(["lr", f"accuracy, own Alg. 2 after {steps(lags[0])}",
                                 *(f"cost, {steps(lag)} stale" for lag in lags)], rows), "",
    ]


def plot_gaps(config: ml_collections.ConfigDict, result: MomentumStudy) -> Path:
    """Left: Alg. 2 − tracked-EMA gap vs the EMA's averaging length 1 / (1 − momentum), the
    agreement band shaded; right: the cost of Alg. 2 statistics k steps stale vs k. One line per
    learning rate, mean ± std over seeds."""
    from bnreg import plots

    figure, axes = plots.figure(1, 2, width=6, height=4)
    ax, stale_ax = axes[0]
    momenta, lags = list(config.study.momenta), sorted(set(result.staleness["lag"]))
    lengths = [1 / (1 - m) for m in momenta]
    for index, lr in enumerate(config.sweep.learning_rate):
        gaps = [gaps_to_alg2(result, m, lr, "ema") for m in momenta]
        plots.versus(ax, lengths, np.asarray(gaps), label=f"lr {lr:g}", color=f"C{index}",
                     log=len(momenta) > 1)
        costs = [staleness_costs(result, lag, lr) for lag in lags]
        plots.versus(stale_ax, lags, np.asarray(costs), label=f"lr {lr:g}", color=f"C{index}")
    ax.axhspan(-AGREEMENT_POINTS, AGREEMENT_POINTS, color="grey", alpha=0.15, lw=0,
               label=f"±{AGREEMENT_POINTS:g} points")
    ax.set_xticks(lengths, [f"{m:g}" for m in momenta])
    stale_ax.set_xticks(lags, [str(lag) for lag in lags])
    for axis in (ax, stale_ax):
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.minorticks_off()
        axis.legend(loc="best")
    ax.set(xlabel="EMA momentum (log scale of 1 / (1 − momentum), the batches it averages)",
           ylabel="Alg. 2 − tracked EMA accuracy (points)", title="The tracked EMA's deficit")
    stale_ax.set(xlabel="SGD steps since the statistics' weights", title="How fast statistics "
                 "go stale", ylabel="own Alg. 2 − stale Alg. 2 accuracy (points)")
    figure.suptitle(f"{config.dataset}: {len(config.sweep.seed)} seeds, mean ± std")
    return plots.save(figure, result.workdir / FIGURE)


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, run_study, workdir="runs/bn_ema_momentum")
