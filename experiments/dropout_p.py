"""The effect of the retain probability p — Srivastava et al. 2014, Sec. 7.3, Fig. 9.

Two ways to vary p on 784-n-n-n-10 ReLU nets that retain each hidden unit with probability p
(the inputs are all kept). **(a) n fixed** (the paper: n = 2048): fewer units are active as p
falls; the paper finds the test error flat for 0.4 ≤ p ≤ 0.8, underfitting below (training
error rises too) and overfitting above. **(b) p·n fixed** (the paper keeps 256, 256 and 512
units in expectation, so n = 256/p, 256/p, 512/p): at small p the nets are wider, and at p = 0.1
the paper's error is 1.7% against (a)'s 2.7%.

Commands::

  # Fashion-MNIST (Debian's dataset-fashion-mnist offline)
  python -m experiments.dropout_p --workdir=runs/dropout_p --config.dataset=fashion_mnist
  # the paper's widths, for an accelerator
  python -m experiments.dropout_p --workdir=runs/dropout_p_paper \\
      --config=experiments/dropout_p.py:paper
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.dropout_p --workdir=/tmp/dropout_p_smoke \\
      --config=experiments/dropout_p.py:smoke

Outputs in ``--workdir``: ``results.md``, ``fig9.png`` (both panels), and the engine's runs
``sweep/`` (the choice at p = 0.5), ``final/fixed_n`` (every p × seed, one compiled program)
and ``final/fixed_pn_p<p>`` (one run per p: the widths change with p). Rerunning resumes.
Measured: experiments/results/dropout_p_fashion_mnist.

Protocol:

1. The dropout paper's recipe (:mod:`experiments.dropout_recipe`) with max-norm on every
   hidden unit; ``num_steps`` updates, T and T_m 10% of the run. Widths are the paper's ×
   ``study.width_scale`` (⅛ by default: n = 256 in (a), 32, 32, 64 kept units in (b); 1 in
   the ``paper`` variant), each rounded to the nearest unit (halves up, at least one):
   (b)'s widths are ``round(k · width_scale / p)``. The masks are 16-bit Bernoulli draws
   (``model.dropout_mask_bits``: p resolved to 2⁻¹⁶, every p here exact to 10⁻⁵; the program
   is ≈ 13% faster on CPU, benchmarks/results/dropout_throughput.md).
2. Dropout is in the paper's form (``model.dropout_scaling="paper"``: kept units are not
   scaled in training, the outputs are multiplied by p at test), since the claim holds lr0 and
   c fixed across p in the paper's parametrization. With inverted dropout (×1/p in training,
   frameworks' default) the network at test is the same but SGD is not: the weights W after a
   dropout layer are the paper's W′ times p, their gradient is 1/p that of W′, so an update
   moves them 1/p² as far as the paper's would (100× at p = 0.1), and max-norm's ‖W‖ ≤ c is
   ‖W′‖ ≤ c/p. A first run with inverted dropout and the same protocol left the nets at
   p ≤ 0.3 at or near chance (``--config.model.dropout_scaling=inverted`` repeats it).
3. The learning rate lr0 and the max-norm c are chosen once, on (a)'s net at
   ``study.tuning_retain`` (p = 0.5), on a validation split of 10,000 training images
   (class-stratified), by the lowest validation error after the full run, one seed — then held
   fixed for every p of both designs, as is the momentum schedule.
4. Final runs on all training images, seeds ``sweep.seed``: (a) every p × seed as members of
   one program (p enters as a traced drop rate); (b) one run per p (its own widths), the seeds
   its members, all runs trained as a group. Training error on 10,000 training images and test
   error of the deterministic (weight-scaled) net after the last update.
5. Verdicts from 95% intervals over seeds: the p whose mean test error lies within the best
   p's interval (paper: 0.4–0.8); (b) − (a) at p = 0.1 paired by seed (the same data order);
   underfitting at the smallest p (training error above the best p's) and overfitting at the
   largest (its train–test gap above the best p's).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from bnreg import analysis
from bnreg.config import default_config, override
from bnreg.study import Untested
from experiments.dropout_recipe import RECIPE, nearest_unit, schedule_overrides

# The paper claims this study tests: on experiments/results/CLAIMS.md, as not yet tested in
# their regime, until the study is rerun on the study layer (bnreg.study).
_RERUN = ("issue 28 reruns it on the study layer, in the paper's regime (the committed results.md"
          ' predates regime gates: its nets never reached the regime)')
CLAIMS = (
    Untested('p_flat',
             'With n fixed, test error is flat for retain p between 0.4 and 0.8, worse at small p'
             ' (underfitting)',
             'Fig. 9a (MNIST)', _RERUN),
    Untested('pn_fixed',
             'With p·n fixed, small p does better than with n fixed',
             'Fig. 9b (MNIST): 1.7% vs 2.7% at p = 0.1', _RERUN),
)


FIXED_N_WIDTHS = (2048, 2048, 2048)  # Fig. 9a
KEPT_UNITS = (256, 256, 512)  # Fig. 9b: p·n per hidden layer
DESIGNS = {"fixed_n": "(a) n fixed", "fixed_pn": "(b) p·n fixed"}
PAPER_FLAT_RANGE = (0.4, 0.8)
PAPER_AT_SMALLEST = {"fixed_n": 2.7, "fixed_pn": 1.7}  # MNIST test error % at p = 0.1
FIGURE = "fig9.png"


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration: ``"full"`` (the CPU budget), ``"paper"`` (the paper's widths)
    or ``"smoke"`` (scikit-learn's digits, seconds)."""
    config = default_config()
    config.update_from_flattened_dict({
        **RECIPE, "dataset": "mnist", "model.activation": "relu", "num_steps": 10_000,
        "model.dropout_mask_bits": 16, "model.dropout_scaling": "paper",
        "eval_every": 1_000, "checkpoint_every": 2_000, "eval_batch_size": 2_000,
        "evaluation.final": (), "evaluation.train_examples": 10_000, "probe.layers": (),
        "nonfinite": "record",
    })
    config.sweep.seed = (0, 1, 2)
    config.study = ml_collections.ConfigDict({
        "retain_probabilities": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        "width_scale": 1 / 8, "tuning_retain": 0.5,
        "decay_fraction": 0.1, "momentum_fraction": 0.1,
        "sweep_learning_rates": (0.3, 1.0, 3.0), "sweep_max_norms": (1.0, 2.0, 3.0),
        "sweep_seeds": (0,), "validation_fraction": 1 / 6,
    })
    if variant == "paper":
        config.update_from_flattened_dict({
            "num_steps": 1_000_000, "eval_every": 10_000, "checkpoint_every": 50_000,
            "study.width_scale": 1.0, "study.decay_fraction": 0.01,
        })
    elif variant == "smoke":
        config.update_from_flattened_dict({
            "dataset": "digits", "num_steps": 200, "eval_every": 100, "checkpoint_every": 100,
            "eval_batch_size": 256, "evaluation.train_examples": 300,
            "study.retain_probabilities": (0.1, 0.5, 1.0), "study.width_scale": 1 / 32,
            "study.sweep_learning_rates": (0.3, 1.0), "study.sweep_max_norms": (3.0,),
            "study.validation_fraction": 0.2,
        })
        config.sweep.seed = (0, 1)
    elif variant != "full":
        raise ValueError(f"variant must be 'full', 'paper' or 'smoke', got {variant!r}.")
    config.lock()
    return config


def drop_rate(retain: float) -> float:
    """The engine's drop rate ``1 − p``, rounded to 10 decimals (``1 − 0.7`` is
    0.30000000000000004 in floating point)."""
    return round(1.0 - retain, 10)


def fixed_n_widths(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """(a)'s widths: the paper's n × ``study.width_scale``."""
    return tuple(nearest_unit(n * config.study.width_scale) for n in FIXED_N_WIDTHS)


def fixed_pn_widths(config: ml_collections.ConfigDict, retain: float) -> tuple[int, ...]:
    """(b)'s widths at retain probability ``retain``: ``round(k · width_scale / p)`` for the
    paper's kept units k, so that p·n stays k · width_scale."""
    return tuple(nearest_unit(k * config.study.width_scale / retain) for k in KEPT_UNITS)


def _check_retains(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    retains = tuple(float(p) for p in config.study.retain_probabilities)
    if not retains or not all(0.0 < p <= 1.0 for p in retains) or len(set(retains)) < len(
            retains):
        raise ValueError(f"config.study.retain_probabilities {retains} must be distinct "
                         "retain probabilities in (0, 1].")
    if not 0.0 < config.study.tuning_retain <= 1.0:
        raise ValueError(f"config.study.tuning_retain must be in (0, 1], got "
                         f"{config.study.tuning_retain}.")
    return retains


def sweep_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The choice of lr0 and c: (a)'s net at ``study.tuning_retain``, the grid as members, on
    the validation split."""
    study = config.study
    return {**schedule_overrides(config), "model.hidden_sizes": fixed_n_widths(config),
            "model.hidden_dropout": drop_rate(study.tuning_retain),
            "sweep.learning_rate": tuple(study.sweep_learning_rates),
            "sweep.max_norm": tuple(study.sweep_max_norms),
            "sweep.seed": tuple(study.sweep_seeds), "evaluation.train_examples": 0,
            "validation_fraction": study.validation_fraction}


def final_runs(config: ml_collections.ConfigDict,
               chosen: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The final runs, name → overrides: ``fixed_n`` (every p as a member axis) and
    ``fixed_pn_p<p>`` per p, all at the ``chosen`` lr0 and c (``{"learning_rate": …,
    "max_norm": …}``); a diverging seed stops them."""
    shared = {**schedule_overrides(config), "optimizer.learning_rate": chosen["learning_rate"],
              "optimizer.max_norm": chosen["max_norm"], "nonfinite": "stop"}
    retains = _check_retains(config)
    runs = {"fixed_n": {**shared, "model.hidden_sizes": fixed_n_widths(config),
                        "sweep.hidden_dropout": tuple(drop_rate(p) for p in retains)}}
    for p in retains:
        runs[f"fixed_pn_p{p:g}"] = {**shared, "model.hidden_sizes": fixed_pn_widths(config, p),
                                    "model.hidden_dropout": drop_rate(p)}
    return runs


def choose(sweep: pd.DataFrame) -> dict[str, float]:
    """The (lr0, c) with the lowest final validation error (mean over the sweep's seeds); a
    setting with a diverged seed (NaN) is never chosen.

    Raises:
      ValueError: every setting diverged.
    """
    chosen = analysis.lowest_mean(sweep, "error", ["learning_rate", "max_norm"])
    if chosen is None:
        raise ValueError("Every setting of the sweep diverged: lower "
                         "config.study.sweep_learning_rates.")
    return {axis: float(value) for axis, value in chosen.items()}


@dataclasses.dataclass
class PStudy:
    """What the results and the figure are made of.

    Attributes:
      sweep: the sweep's final validation evaluation per member.
      chosen: ``{"learning_rate": …, "max_norm": …}``.
      final: per final member: ``design``, ``retain``, ``seed``, ``widths`` and the metrics
        (``error``, ``error_on_train``).
      summary: the ``fixed_n`` run's summary.json (data source, split sizes).
      sweep_summary: the sweep's.
    """

    sweep: pd.DataFrame
    chosen: dict[str, float]
    final: pd.DataFrame
    summary: dict
    sweep_summary: dict


def final_table(config: ml_collections.ConfigDict, runs: dict) -> pd.DataFrame:
    """The final runs' last evaluation, one row per member, with its design and retain p."""
    frames = []
    for name, run in runs.items():
        frame = analysis.table(run.summary["members"])
        design = "fixed_n" if name == "fixed_n" else "fixed_pn"
        retain = [round(1.0 - rate, 10) for rate in frame["hidden_dropout"]]
        widths = [fixed_n_widths(config) if design == "fixed_n" else fixed_pn_widths(config, p)
                  for p in retain]
        frames.append(frame.assign(design=design, retain=retain,
                                   widths=["-".join(map(str, w)) for w in widths]))
    return pd.concat(frames, ignore_index=True)


def run_study(config: ml_collections.ConfigDict, workdir: Path) -> list[Path]:
    """The sweep at p = 0.5, the choice, the final runs of both designs as one group, then
    results.md and the figure. Every run's config is checked before anything trains.

    Raises:
      ValueError: bad retain probabilities, or a config a run cannot take (before any training);
        a sweep whose every setting diverged.
    """
    from bnreg import engine

    workdir = Path(workdir)
    stand_in = {"learning_rate": config.study.sweep_learning_rates[0],
                "max_norm": config.study.sweep_max_norms[0]}
    for overrides in (sweep_overrides(config), *final_runs(config, stand_in).values()):
        engine.check(override(config, overrides))
    sweep_run = engine.train_and_evaluate(override(config, sweep_overrides(config)),
                                          workdir / "sweep")
    sweep = analysis.table(sweep_run.summary["members"])
    chosen = choose(sweep)
    runs = engine.train_group(config, final_runs(config, chosen), workdir / "final")
    study = PStudy(sweep, chosen, final_table(config, runs), runs["fixed_n"].summary,
                   sweep_run.summary)
    return [write_results(config, study, workdir), plot_fig9(config, study, workdir)]


def errors(study: PStudy, design: str, column: str = "error") -> pd.DataFrame:
    """One design's ``column`` in % per retain p: :func:`bnreg.analysis.describe`'s table."""
    frame = analysis.select(study.final, design=design)
    return analysis.describe(frame, column, "retain", scale=100)


def flat_range(study: PStudy, design: str) -> tuple[float, list[float]]:
    """The best p (lowest mean test error) and every p whose mean test error lies within the
    best p's 95% interval (the best included): the p that seeds cannot tell from the best."""
    table = errors(study, design)
    best = table.loc[table["mean"].idxmin()]
    within = table.loc[table["mean"] <= best["high"], "retain"]
    return float(best["retain"]), sorted(float(p) for p in within)


def _at(study: PStudy, design: str, retain: float, column: str) -> pd.Series:
    frame = analysis.select(study.final, design=design, retain=retain)
    return 100 * frame.set_index("seed")[column].sort_index()


def verdict_lines(study: PStudy) -> list[str]:
    """The paper's claims read from the final runs (see the module docstring)."""
    lines = []
    retains = sorted(study.final["retain"].unique())
    smallest, largest = retains[0], retains[-1]
    for design, label in DESIGNS.items():
        best, within = flat_range(study, design)
        lines.append(f"- {label}: the best p is {best:g}; the p within its 95% interval: "
                     f"{', '.join(f'{p:g}' for p in within)} (paper: "
                     f"{PAPER_FLAT_RANGE[0]:g}–{PAPER_FLAT_RANGE[1]:g} flat).")
        if best != smallest:
            lines.append(analysis.claim_text(
                analysis.difference(_at(study, design, smallest, "error_on_train")
                                    - _at(study, design, best, "error_on_train")),
                "above", f"{label}: at p = {smallest:g} the net underfits (its training error "
                f"above the best p's)", scale=1, first=f"p = {smallest:g}",
                second=f"p = {best:g}"))
        if best != largest:
            gap = {p: _at(study, design, p, "error") - _at(study, design, p, "error_on_train")
                   for p in (largest, best)}
            lines.append(analysis.claim_text(
                analysis.difference(gap[largest] - gap[best]), "above",
                f"{label}: at p = {largest:g} the net overfits more (its test − train gap above "
                "the best p's)", first=f"p = {largest:g}", second=f"p = {best:g}"))
    difference = _at(study, "fixed_pn", smallest, "error") - _at(study, "fixed_n", smallest,
                                                                   "error")
    lines.append(analysis.claim_text(
        analysis.difference(difference), "below",
        f"at p = {smallest:g}, (b) p·n fixed beats (a) n fixed (paper, MNIST: "
        f"{PAPER_AT_SMALLEST['fixed_pn']:g}% vs {PAPER_AT_SMALLEST['fixed_n']:g}%)",
        first="(b)", second="(a)"))
    return lines


def _edge_lines(config: ml_collections.ConfigDict, chosen: dict[str, float]) -> list[str]:
    study = config.study
    grids = {"learning_rate": ("lr0", study.sweep_learning_rates),
             "max_norm": ("c", study.sweep_max_norms)}
    edges = [f"{name} {chosen[axis]:g} (grid {list(grid)})" for axis, (name, grid) in
             grids.items() if len(grid) > 1 and chosen[axis] in (min(grid), max(grid))]
    return [f"**Caution**: the chosen {' and '.join(edges)} is at the edge of its grid; a wider "
            "grid may find a better one.", ""] if edges else []


def write_results(config: ml_collections.ConfigDict, study: PStudy, workdir: Path) -> Path:
    """results.md: the set-up, the sweep, the curves of both designs as tables, the
    verdicts."""
    summary, sweep_summary = study.summary, study.sweep_summary
    sweep_rows = []
    for (lr, c), group in study.sweep.groupby(["learning_rate", "max_norm"]):
        error = group["error"]
        cell = "diverged" if error.isna().any() else analysis.cell(100 * error.to_numpy())
        chosen = {"learning_rate": lr, "max_norm": c} == study.chosen
        sweep_rows.append([f"{lr:g}", f"{c:g}", cell + (" **← chosen**" if chosen else "")])
    tables = {design: {column: errors(study, design, column).set_index("retain")
                       for column in ("error", "error_on_train")} for design in DESIGNS}
    rows = []
    for p in sorted(study.final["retain"].unique()):
        widths = analysis.select(study.final, design="fixed_pn", retain=p)["widths"].iloc[0]
        row = [f"{p:g}"]
        for design in DESIGNS:
            for column in ("error", "error_on_train"):
                found = tables[design][column].loc[p]
                row.append(f"{found['mean']:.2f} ± {found['std']:.2f}")
            if design == "fixed_pn":
                row.insert(3, widths)
        rows.append(row)
    chosen = study.chosen
    lines = [
        f"# The retain probability p (Srivastava et al. 2014, Fig. 9) — {config.dataset}", "",
        f"Data: {summary['source']}; {summary['num_train_examples']:,} training and "
        f"{summary['num_evaluation_examples']:,} test images. ReLU nets "
        f"{int(np.prod(summary['input_shape']))}-n-n-n-10, the "
        f"hidden units retained with probability p (dropout scaling "
        f"'{config.model.dropout_scaling}'), the inputs all kept; (a) n = "
        f"{fixed_n_widths(config)[0]}, (b) p·n = "
        f"{', '.join(str(nearest_unit(k * config.study.width_scale)) for k in KEPT_UNITS)} "
        f"(the paper's widths × {config.study.width_scale:g}). {config.num_steps:,} updates of "
        f"batches of {config.batch_size}, lr0 {chosen['learning_rate']:g} and max-norm c "
        f"{chosen['max_norm']:g} for every p; seeds "
        f"{', '.join(map(str, sorted(study.final['seed'].unique())))}. Protocol: "
        "`experiments/dropout_p.py`.", "",
        f"## lr0 and c, chosen at p = {config.study.tuning_retain:g} on a validation split", "",
        f"(a)'s net; {sweep_summary['num_evaluation_examples']:,} images carved from the "
        f"training split, the nets trained on the other "
        f"{sweep_summary['num_train_examples']:,}; validation error in % after the full run.",
        "", analysis.markdown_table(["lr0", "c", "validation error"], sweep_rows), "",
        *_edge_lines(config, chosen),
        "## Test and training error against p (%, mean ± std over seeds)", "",
        analysis.markdown_table(
            ["p", "(a) test", "(a) train", "(b) widths", "(b) test", "(b) train"], rows), "",
        f"Training error on the first {config.evaluation.train_examples:,} training images, "
        "of the deterministic net (dropout off), after the last update.", "",
        "## Verdicts (95% intervals over seeds; differences paired by seed)", "",
        *verdict_lines(study), "",
        f"Figure: `{FIGURE}`.",
    ]
    path = workdir / "results.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_fig9(config: ml_collections.ConfigDict, study: PStudy, workdir: Path) -> Path:
    """Fig. 9: test and training error against p, (a) and (b) side by side, mean ± std over
    seeds on a log axis, the paper's flat range shaded."""
    from bnreg import plots

    figure, axes = plots.figure(1, 2, width=5, height=3.6, sharey=True)
    for ax, (design, label) in zip(axes[0], DESIGNS.items(), strict=True):
        frame = analysis.select(study.final, design=design)
        retains = sorted(frame["retain"].unique())
        for column, name, color in (("error", "test", "C0"), ("error_on_train", "train", "C1")):
            values = np.asarray([100 * analysis.select(frame, retain=p)
                                 .sort_values("seed")[column].to_numpy() for p in retains])
            plots.versus(ax, retains, values, label=f"{name} error", color=color, log=False)
        ax.axvspan(*PAPER_FLAT_RANGE, color="grey", alpha=0.12, lw=0,
                   label="paper's flat range")
        plots.log_scale(ax)  # the errors of small p would flatten the rest of the curve
        ax.set(title=label, xlabel="retain probability p", ylabel="error % (log scale)")
        ax.legend(fontsize=8)
    figure.suptitle(f"The retain probability p ({config.dataset}, {config.num_steps:,} updates, "
                    f"widths × {config.study.width_scale:g}; Fig. 9)")
    return plots.save(figure, workdir / FIGURE)


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, run_study, workdir="runs/dropout_p")
