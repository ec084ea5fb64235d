"""EMA statistics vs Alg. 2's population statistics: how the BN momentum sets the gap.

Ioffe & Szegedy (2015, Sec. 3.1, Alg. 2) build the inference network from population statistics
averaged over many training mini-batches *after* training, with the final weights. Frameworks
instead track an exponential moving average (EMA) of the batch statistics *while* training —
``running = momentum · running + (1 − momentum) · batch`` (flax's direction; PyTorch's
``momentum`` is ``1 −`` this) — with flax and Keras defaulting to 0.99 and PyTorch to 0.9. The
EMA trades lag against noise: a high momentum averages many batches but of weights that have
since moved; a low one follows the weights but averages few batches. No paper figure: a finding
of ours, which chose the momentum of ``experiments/bn_mnist.py``'s reported EMA.

Protocol: the BN study's network with BN (784-100-100-100-10 sigmoid, N(0, 0.1²) init, plain
SGD, batch 60, 50,000 steps) at the BN study's three Fashion-MNIST learning rates, 5 seeds
(10–14, disjoint from the BN study's), scored on a validation split (1/12 of train: the study
chooses a momentum, so the test set stays out) with (a) the EMA tracked in training, (b) the same
EMA settled on the final weights and (c) Alg. 2's statistics. Each momentum is a run of its own
(its arms: the rates), so adding momenta to ``study.momenta`` trains only the new ones. The
momentum never enters training (the training forward pass normalises with batch statistics), so
every momentum trains bit-identical weights (checked) and the momenta compare seed by seed. Then,
from the final weights, the members train on for 1, 10 and 100 steps and are scored with their
own Alg. 2 statistics and with the final weights' (:func:`stale_statistics_accuracies`): how
sensitive the network is to statistics of other weights, the kind an EMA averages.

Commands::

  # Fashion-MNIST (Debian's dataset-fashion-mnist offline), ~25 min on 2 cores
  python -m experiments.bn_ema_momentum --workdir=runs/bn_ema_momentum \\
      --config.dataset=fashion_mnist
  # results.md and the figure again from the committed records alone
  python -m experiments.bn_ema_momentum --analyze \\
      --workdir=experiments/results/bn_ema_momentum_fashion_mnist
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.bn_ema_momentum --workdir=/tmp/ema_smoke \\
      --config=experiments/bn_ema_momentum.py:smoke
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.config import default_config, override
from bnreg.study import (
    PROTOCOL_KEYS,
    Arm,
    Claim,
    Results,
    Study,
    Verdict,
    configure,
    final,
)

FIGURE = "ema_gap.png"
# SGD steps by which the final network's Alg. 2 statistics are made stale.
STALENESS_LAGS = (1, 10, 100)
# Within this many points the EMA's and Alg. 2's inference networks "agree".
AGREEMENT_POINTS = 0.3

VARIANTS = {
    "smoke": {
        "dataset": "digits", "num_steps": 200, "eval_every": 50, "checkpoint_every": 100,
        "validation_fraction": 0.2, "evaluation.population_batches": 10,
        "study.learning_rates": (0.1, 2.0), "study.momenta": (0.9, 0.99),
        "study.primary_learning_rate": 2.0, "sweep.seed": (10, 11),
    },
}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The BN study's BN net on a validation split, one run per ``study.momenta``;
    ``variant="smoke"`` runs in seconds on scikit-learn's digits."""
    config = default_config()
    config.update_from_flattened_dict({
        "dataset": "mnist", "model.hidden_sizes": (100, 100, 100), "model.activation": "sigmoid",
        "model.norm": "batch", "model.kernel_init": "normal", "model.init_stddev": 0.1,
        "batch_size": 60, "num_steps": 50_000, "validation_fraction": 1 / 12,
        # Curves are not this study's subject: a few cheap EMA evaluations, Alg. 2 at the end.
        "eval_every": 5_000, "checkpoint_every": 5_000, "evaluation.bn_statistics": "ema",
        "evaluation.final": ("population", "settled_ema"), "evaluation.population_batches": 100,
        "probe.histogram_bins": 0,
    })
    config.sweep.seed = (10, 11, 12, 13, 14)
    config.study = ml_collections.ConfigDict({
        **PROTOCOL_KEYS,
        # The BN study's (iii), (i), (ii) on Fashion-MNIST (its sweep chose them; fixed here).
        "learning_rates": (0.1, 2.0, 10.0), "primary_learning_rate": 2.0,
        "momenta": (0.5, 0.8, 0.9, 0.95, 0.99, 0.999),
        # The momentum of bn_mnist's reported EMA (PyTorch's default) and flax's default.
        "primary_momentum": 0.9, "flax_momentum": 0.99,
    })
    return configure(config, VARIANTS, variant)


def arm_name(momentum: float, lr: float) -> str:
    return f"momentum={momentum:g},lr={lr:g}"


def arms(config: ml_collections.ConfigDict) -> list[Arm]:
    """One run per momentum (``momentum=<m>``), its arms the learning rates."""
    return [Arm(arm_name(m, lr), f"momentum {m:g}, lr {lr:g}",
                {"model.bn_momentum": m, "validation_fraction": config.validation_fraction},
                settings={"learning_rate": lr}, run=f"momentum={m:g}")
            for m in config.study.momenta for lr in config.study.learning_rates]


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError: momenta repeated or outside [0, 1) (an EMA that never settles), or a
    claim's momentum or rate the study does not run."""
    momenta = tuple(config.study.momenta)
    if not momenta or len(set(momenta)) != len(momenta):
        raise ValueError(f"config.study.momenta {momenta} must name distinct momenta.")
    if not all(0.0 <= m < 1.0 for m in momenta):
        raise ValueError(f"config.study.momenta {momenta} must lie in [0, 1) to settle.")
    if config.study.primary_learning_rate not in config.study.learning_rates:
        raise ValueError("config.study.primary_learning_rate must be one of "
                         f"config.study.learning_rates {tuple(config.study.learning_rates)}.")
    if config.study.primary_momentum not in momenta:
        raise ValueError(f"config.study.primary_momentum ({config.study.primary_momentum}) must "
                         f"be one of config.study.momenta {momenta}: the primary claim's.")


def claims(config: ml_collections.ConfigDict) -> list[Claim]:
    """The tracked EMA of bn_mnist's momentum agrees with Alg. 2 (primary at bn_mnist's (i));
    at its other rates, flax's default, and the settled EMA (secondary)."""
    study = config.study
    paper = ("— (ours; Sec. 3.1, Alg. 2: inference uses population statistics, moving "
             "averages track accuracy during training)")

    def agree(name: str, momentum: float, lr: float, kind: str, primary: bool = False):
        arm = arm_name(momentum, lr)
        return Claim(name, f"The {'tracked' if kind == 'ema' else 'settled'} EMA at momentum "
                     f"{momentum:g} agrees with Alg. 2 within {AGREEMENT_POINTS:g} points, lr "
                     f"{lr:g}", paper, final(arm, "accuracy_population"),
                     final(arm, f"accuracy_{kind}"), "agree", tolerance=AGREEMENT_POINTS,
                     primary=primary)

    found = []
    momenta = [m for m in dict.fromkeys((study.primary_momentum, study.flax_momentum))
               if m in study.momenta]
    for momentum in momenta:
        for lr in study.learning_rates:
            primary = momentum == study.primary_momentum and lr == study.primary_learning_rate
            found.append(agree(f"tracked_{momentum:g}_{lr:g}", momentum, lr, "ema", primary))
    found += [agree(f"settled_{study.primary_momentum:g}_{lr:g}", study.primary_momentum, lr,
                    "settled_ema") for lr in study.learning_rates]
    return found


def measure(config: ml_collections.ConfigDict, runs, results: Results) -> dict:
    """The staleness costs (records ``staleness``), after checking that every momentum trained
    the same weights.

    Raises:
      RuntimeError: the runs trained different weights (another layout of the members over the
        devices rounds differently), so their EMAs would not be comparable.
    """
    import jax

    first, *others = runs.values()
    if not all(jax.tree.all(jax.tree.map(np.array_equal, r.state.params, first.state.params))
               for r in others):
        raise RuntimeError(
            "The runs of different momenta trained different weights, so their EMAs are not "
            "comparable: their members were laid out over the devices differently (each run "
            "gets an equal share; another device count changes the layout). Use a new "
            "--workdir: runs resumed from a mixed layout keep their weights.")
    from bnreg.study.arms import final_runs

    run_name = next(iter(runs))
    run_config = override(config, final_runs(config, list(results.arms.values()), {})[run_name])
    rows = stale_statistics_accuracies(run_config, first.state, STALENESS_LAGS)
    return {"staleness": rows.to_dict("records")}


def stale_statistics_accuracies(config, state, lags: Sequence[int]) -> pd.DataFrame:
    """How sensitive the trained network is to statistics of other weights than its own.

    From ``state`` (the final one of the run of ``config``; it is left as it is) the members
    train on for each of ``lags`` steps (0 allowed), with the run's data order and learning
    rates; each then has its accuracy on the run's evaluation split measured with its own Alg. 2
    statistics and with those of ``state``'s weights, ``lag`` steps older — the kind of
    statistics an EMA averages.

    Returns:
      One row per (lag, member): ``lag``, ``learning_rate``, ``seed``, ``own`` and ``stale``
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
        rows += [{"lag": lag, "learning_rate": member["learning_rate"], "seed": member["seed"],
                  "own": 100 * float(own[i]), "stale": 100 * float(stale[i])}
                 for i, member in enumerate(run.members)]
    return pd.DataFrame(rows)


def gaps_to_alg2(results: Results, momentum: float, lr: float, kind: str) -> np.ndarray:
    """Alg. 2 − ``kind`` final accuracy in points, per seed."""
    arm = arm_name(momentum, lr)
    return 100 * (results.finals(arm, "accuracy_population")
                  - results.finals(arm, f"accuracy_{kind}")).to_numpy()


def seed_absolute_gaps(results: Results, momentum: float) -> np.ndarray:
    """Per seed, the mean over the rates of |Alg. 2 − tracked EMA| (points): how far the
    tracked EMA's inference network is from Alg. 2's, whichever side it falls."""
    return np.mean([abs(gaps_to_alg2(results, momentum, lr, "ema"))
                    for lr in results.config.study.learning_rates], axis=0)


def closest_momenta(results: Results) -> list[float]:
    """The momenta, closest to Alg. 2 first (mean over seeds of :func:`seed_absolute_gaps`)."""
    return sorted(results.config.study.momenta,
                  key=lambda m: seed_absolute_gaps(results, m).mean())


def staleness_costs(results: Results, lag: int, lr: float) -> np.ndarray:
    """Own − stale Alg. 2 accuracy, ``lag`` steps stale, in points, per seed at ``lr``."""
    rows = analysis.select(results.extra["staleness"], lag=lag, learning_rate=lr)
    return (rows["own"] - rows["stale"]).to_numpy()


def setup(results: Results) -> list[str]:
    config = results.config
    summary = results.summary("final", arm_name(config.study.momenta[0],
                                                config.study.learning_rates[0]))
    sizes = [int(np.prod(summary["input_shape"])), *config.model.hidden_sizes, 10]
    return [
        f"Dataset: **{config.dataset}** ({summary['source']}); scored on the {summary['split']} "
        f"split ({summary['num_evaluation_examples']:,} examples held out of train). The BN "
        f"study's BN net: {'-'.join(map(str, sizes))} {config.model.activation}, plain SGD, "
        f"batch {config.batch_size}, {config.num_steps:,} steps, seeds "
        f"{list(config.sweep.seed)}; Alg. 2 over {config.evaluation.population_batches} "
        "training batches; accuracies and gaps mean ± std over seeds, in % and points. Every "
        "momentum trains the same weights (checked), so only the inference statistics differ.",
        "",
        "Momentum in flax's direction (`running = momentum · running + (1 − momentum) · batch`; "
        "PyTorch's `momentum` argument is 1 − it). *Settled*: the tracked EMA given enough "
        "further updates with the final weights frozen that its starting value weighs ≤ 0.1% — "
        "it tells the EMA's lag (settled ≈ Alg. 2) from the estimators' difference.", "",
    ]


def sections(results: Results, verdicts: list[Verdict]) -> list[str]:
    study = results.config.study
    rows = [[f"{m:g}", f"{1 - m:.3g}", f"{lr:g}",
             analysis.cell(100 * results.finals(arm_name(m, lr), "accuracy_population")),
             analysis.cell(100 * results.finals(arm_name(m, lr), "accuracy_ema")),
             analysis.cell(gaps_to_alg2(results, m, lr, "ema"), signed=True),
             analysis.cell(gaps_to_alg2(results, m, lr, "settled_ema"), signed=True)]
            for m in study.momenta for lr in study.learning_rates]
    return [
        "## Every momentum and rate", "",
        analysis.markdown_table(["momentum", "PyTorch `momentum`", "lr", "Alg. 2", "tracked EMA",
                                 "Alg. 2 − tracked EMA", "Alg. 2 − settled EMA"], rows), "",
        *closest_lines(results), "", *staleness_lines(results),
        f"Figure: `{FIGURE}` (left: Alg. 2 − tracked EMA per momentum and rate; right: the "
        "cost of stale statistics per lag and rate; mean ± std over seeds).", "",
    ]


def closest_lines(results: Results) -> list[str]:
    """The momentum closest to Alg. 2, the paired differences of the others to it (uncorrected,
    and the closest was picked on the same seeds), those not told apart from it, and a caution
    when it is at the grid's edge."""
    ranking = closest_momenta(results)
    closest = ranking[0]
    lines = [f"Closest to Alg. 2: momentum **{closest:g}** (the smallest mean |gap| of the "
             "tracked EMA, averaged over the rates per seed, then over the seeds)."]
    if len(ranking) > 1:
        differences = {m: analysis.confidence_interval(seed_absolute_gaps(results, m)
                                                       - seed_absolute_gaps(results, closest))
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
        lines.append(f"**Edge**: {closest:g} is at the edge of the grid {momenta}; beyond it "
                     "an EMA may come closer still.")
    return lines


def staleness_lines(results: Results) -> list[str]:
    staleness = results.extra["staleness"]
    lags = sorted(set(staleness["lag"]))
    steps = lambda lag: f"{lag} step{'s' * (lag != 1)}"  # noqa: E731
    rows = [[f"{lr:g}",
             analysis.cell(analysis.select(staleness, lag=lags[0], learning_rate=lr)["own"]),
             *(analysis.cell(staleness_costs(results, lag, lr), signed=True) for lag in lags)]
            for lr in results.config.study.learning_rates]
    return [
        "## How sensitive is the trained network to statistics of other weights?", "",
        "From the final weights the members train on for k steps, and each is scored with its own "
        "Alg. 2 statistics and with those of the final weights, k steps older: the kind of "
        "statistics an EMA averages. The cost (own − stale, points) shows how sensitive the "
        "network is to statistics of other weights; an EMA averages statistics of many past "
        "weights, so its gap is not the cost of any one lag.", "",
        analysis.markdown_table(["lr", f"accuracy, own Alg. 2 after {steps(lags[0])}",
                                 *(f"cost, {steps(lag)} stale" for lag in lags)], rows), "",
    ]


def figures(results: Results, directory: Path) -> list[Path]:
    """Left: Alg. 2 − tracked-EMA gap vs the EMA's averaging length 1 / (1 − momentum), the
    agreement band shaded; right: the cost of Alg. 2 statistics k steps stale vs k. One line per
    learning rate, mean ± std over seeds."""
    from bnreg import plots

    config = results.config
    figure, axes = plots.figure(1, 2, width=6, height=4)
    ax, stale_ax = axes[0]
    momenta = list(config.study.momenta)
    lags = sorted(set(results.extra["staleness"]["lag"]))
    lengths = [1 / (1 - m) for m in momenta]
    for index, lr in enumerate(config.study.learning_rates):
        gaps = [gaps_to_alg2(results, m, lr, "ema") for m in momenta]
        plots.versus(ax, lengths, np.asarray(gaps), label=f"lr {lr:g}", color=f"C{index}",
                     log=len(momenta) > 1)
        costs = [staleness_costs(results, lag, lr) for lag in lags]
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
    return [plots.save(figure, directory / FIGURE)]


STUDY = Study(
    name="bn_ema_momentum",
    title="EMA vs Alg. 2 population statistics — Ioffe & Szegedy 2015, Alg. 2, measured",
    arms=arms, claims=claims, setup=setup, sections=sections, figures=figures, check=check,
    measure=measure)


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, STUDY, workdir="runs/bn_ema_momentum")
