"""DropConnect against Dropout and no drop — Wan et al. 2013, the MNIST nets and Fig. 2.

**The comparison** (part ``table``): 2-hidden-layer fully connected nets (the paper's MNIST
784-800-800-10, widths × ``study.width_scale``) × {relu, sigmoid, tanh} × {no drop, dropout,
DropConnect}, drop rate 0.5 (the paper's retain p = 0.5) on both hidden layers; DropConnect
draws a fresh weight mask per example as the paper trains, and *DropConnect, one mask per
batch* (the variant the paper says "does not regularize the model enough") runs beside it.
Every DropConnect net is scored both ways (Sec. 3): the mean network a(pWv) and the Gaussian
moment matching u ~ N(pWv, p(1−p)(W⊙W)(v⊙v)) averaged over Z samples of a(u), for each Z of
``study.gaussian_samples``. **Fig. 2b** (part ``rates``): test error against the drop rate of
dropout and of DropConnect on the paper's 400-400 net (× the width scale), the rates and seeds
as members of one program per method. **Fig. 2c**: training and test error against epochs of the
relu nets without drop, with dropout and with DropConnect, read from the comparison's runs.

Commands::

  # both parts on Fashion-MNIST, which Debian's dataset-fashion-mnist package provides offline
  python -m experiments.dropconnect --workdir=runs/dropconnect --config.dataset=fashion_mnist
  # CIFAR-10 through tfds (where a user has it): a conv feature extractor, DropConnect head
  python -m experiments.dropconnect --workdir=runs/dropconnect_cifar10 \\
      --config=experiments/dropconnect.py:cifar10
  # the paper's widths and a longer run, for an accelerator
  python -m experiments.dropconnect --workdir=runs/dropconnect_paper \\
      --config=experiments/dropconnect.py:paper
  # smoke size: scikit-learn's digits, seconds
  python -m experiments.dropconnect --workdir=/tmp/dropconnect_smoke \\
      --config=experiments/dropconnect.py:smoke

Outputs in ``--workdir``: ``results.md``, ``inference.png``, ``rates.png``, ``convergence.png``
and the engine's run directories ``table/sweep/<net>``, ``table/final/<net>`` and
``rates/<method>``. Rerunning resumes. Measured: experiments/results/dropconnect_fashion_mnist.

Protocol, the same for every net:

1. The dropout paper's recipe (``experiments/dropout_recipe.py``): batches of 100, SGD with
   App. A.1's dampened momentum 0.5 → 0.95, lr0/(1 + t/T), weights from N(0, 1/fan_in); T and
   T_m 10% of the run. A per-example DropConnect step costs one mask entry per weight per
   example (``benchmarks/dropconnect_throughput.py``: ~9 ns each on the 2-core CPU), so the CPU
   budget is ``num_steps`` = 1,200 updates (2 epochs) at widths × ⅛ (100-100, and 50-50 for
   Fig. 2b): the paper's ratios, not its training length. Masks use 16 random bits per entry
   (p resolved to 2⁻¹⁶; 0.5 exactly).
2. lr0 of each cell is chosen on a validation split of 10,000 of the 60,000 training images
   (class-stratified; the test set chooses nothing) by the lowest final validation error with
   mean inference, one seed; the grid (``study.sweep_learning_rates``, per activation) is the
   members of one program. Diverged settings are recorded and never chosen.
3. Final runs train on all training images with the chosen lr0, seeds as members, and report
   test error, mean ± std over seeds. Claims are read from the 95% interval of per-seed paired
   differences (the same seed: the same initial weights and data order).
4. Fig. 2b's runs take the relu cells' chosen lr0 (DropConnect's for the DropConnect rates,
   dropout's for the dropout rates, which include rate 0: the net without drop).

DropConnect masks the dense hidden layers (bias included, as the paper); the classifier is
plain. With the ``cifar10`` variant's conv feature extractor the dropout net drops after every
layer, conv blocks included (:class:`bnreg.models.ConvNet`), while DropConnect masks the dense
head only.

One module for the comparison, the inference comparison and Fig. 2b/2c, longer than a study of
one figure: they share the cells, the sweep-then-final protocol and the final runs (Fig. 2c and
the inference table read the comparison's runs, Fig. 2b its choices); the generic pieces
(verdicts, tables, plots) live in ``bnreg.analysis`` and ``bnreg.plots``.
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
from experiments.dropout_recipe import RECIPE, schedule_overrides

# The paper claims this study tests: on experiments/results/CLAIMS.md, as not yet tested in
# their regime, until the study is rerun on the study layer (bnreg.study).
_RERUN = ('issue 29 reruns it on the study layer, in its regime (the committed results.md trained'
          ' 2 epochs, predating regime gates)')
CLAIMS = (
    Untested('beats_no_drop',
             'DropConnect and dropout both lower the test error of a 784-800-800 net',
             'Table (MNIST): relu 1.62 / 1.28 / 1.20%; sigmoid 1.78 / 1.38 / 1.55%; tanh 1.65 / '
             '1.58 / 1.36% (as recalled)', _RERUN),
    Untested('winner_by_activation',
             'Whether DropConnect or dropout wins depends on the activation',
             'Table (MNIST): dropout ahead for sigmoid, DropConnect for relu and tanh (as '
             'recalled)', _RERUN),
    Untested('per_example',
             'A fresh mask per example regularizes more than one per mini-batch',
             'Sec. 3 (MNIST)', _RERUN),
    Untested('gaussian_inference',
             'Gaussian moment-matching inference is at least as good as mean inference',
             'Sec. 3 (MNIST)', _RERUN),
)


RATE = 0.5  # the paper's retain p = 0.5, on every hidden layer
ACTIVATIONS = ("relu", "sigmoid", "tanh")
# Method -> (label, overrides). The cell names are f"{activation}_{method}".
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("no drop", {}),
    "dropout": ("dropout", {"model.hidden_dropout": RATE}),
    "dropconnect": ("DropConnect", {"model.dropconnect": RATE}),
    "dropconnect_batch": ("DropConnect, one mask per batch",
                          {"model.dropconnect": RATE, "model.dropconnect_per_example": False}),
}
DROPCONNECT_METHODS = ("dropconnect", "dropconnect_batch")
FIGURES = ("inference.png", "rates.png", "convergence.png")
# The paper's words on MNIST (Sec. 6.1, Fig. 2), beside each measured claim.
PAPER = {
    "ordering": "which of DropConnect and dropout wins depends on the activation; margins "
                "are small",
    "regularizes": "both beat no drop on MNIST as the layers grow (Fig. 2a)",
    "per_batch": "one mask per mini-batch \"does not regularize the model enough\"",
    "gaussian": "sampling from the matched Gaussian approximates the average over masks, "
                "which the mean network a(pWv) approximates more crudely (Sec. 3)",
}


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """The study's configuration: ``"full"`` (the CPU budget), ``"paper"`` (the paper's
    widths), ``"cifar10"`` (a conv feature extractor with a DropConnect head) or ``"smoke"``
    (scikit-learn's digits, seconds)."""
    config = default_config()
    config.update_from_flattened_dict({
        **RECIPE, "dataset": "mnist", "num_steps": 1_200, "eval_every": 100,
        "checkpoint_every": 600, "eval_batch_size": 1_000, "evaluation.final": (),
        "evaluation.train_examples": 10_000, "evaluation.gaussian_samples": (1, 10, 100, 1000),
        "probe.layers": (), "nonfinite": "record", "model.dropconnect_mask_bits": 16,
    })
    config.sweep.seed = (0, 1, 2)
    config.study = ml_collections.ConfigDict({
        "parts": ("table", "rates"),
        "activations": ACTIVATIONS,
        "methods": tuple(METHODS),
        "widths": (800, 800),  # the paper's MNIST nets
        "rates_widths": (400, 400),  # Fig. 2b's net
        "width_scale": 1 / 8,
        # "": the MLP; "convnet": conv blocks of conv_features before the dense layers.
        "feature_extractor": "", "conv_features": (32, 64),
        "decay_fraction": 0.1, "momentum_fraction": 0.1,
        # lr0 grids per activation; the dropout study chose 0.3 (relu) and 3 (logistic).
        "sweep_learning_rates": {"relu": (0.1, 0.3, 1.0), "sigmoid": (0.3, 1.0, 3.0),
                                 "tanh": (0.1, 0.3, 1.0)},
        "sweep_seeds": (0,),
        "validation_fraction": 1 / 6,  # 10,000 of MNIST's 60,000 training images
        "rates": (0.1, 0.3, 0.5, 0.7, 0.9), "rates_seeds": (0, 1),
    })
    if variant == "paper":
        config.update_from_flattened_dict({
            "num_steps": 100_000, "eval_every": 2_000, "checkpoint_every": 10_000,
            "study.width_scale": 1.0, "study.rates_seeds": (0, 1, 2),
        })
    elif variant == "cifar10":
        config.update_from_flattened_dict({
            "dataset": "cifar10", "num_steps": 20_000, "eval_every": 1_000,
            "checkpoint_every": 5_000, "study.feature_extractor": "convnet",
            "study.widths": (512,), "study.rates_widths": (256,), "study.width_scale": 1.0,
            "study.validation_fraction": 0.2,
        })
    elif variant == "smoke":
        config.update_from_flattened_dict({
            "dataset": "digits", "num_steps": 60, "eval_every": 30, "checkpoint_every": 30,
            "eval_batch_size": 256, "evaluation.train_examples": 300,
            "evaluation.gaussian_samples": (1, 10), "study.width_scale": 1 / 50,
            "study.validation_fraction": 0.2, "study.rates": (0.3, 0.6),
            # One activation (the rates part's): each cell is a compilation.
            "study.activations": ("relu",), "study.sweep_learning_rates.relu": (0.1, 0.3),
        })
        config.sweep.seed = (0, 1)
    elif variant != "full":
        raise ValueError(f"variant must be 'full', 'paper', 'cifar10' or 'smoke', got "
                         f"{variant!r}.")
    config.lock()
    return config


def _scaled(config: ml_collections.ConfigDict, widths) -> tuple[int, ...]:
    return tuple(max(1, round(w * config.study.width_scale)) for w in widths)


def cells(config: ml_collections.ConfigDict) -> dict[str, tuple[str, str]]:
    """The comparison's cells the config runs: ``{name: (activation, method)}``.

    Raises:
      ValueError: an unknown activation or method, or none.
    """
    study = config.study
    for key, known in (("activations", ACTIVATIONS), ("methods", tuple(METHODS))):
        unknown = sorted(set(study[key]) - set(known))
        if unknown or not study[key]:
            raise ValueError(f"config.study.{key} {tuple(study[key])} must name some of "
                             f"{list(known)}.")
    return {f"{a}_{m}": (a, m) for a in study.activations for m in study.methods}


def net_overrides(config: ml_collections.ConfigDict, activation: str, method: str,
                  widths) -> dict[str, Any]:
    """One net's engine overrides: feature extractor, widths, activation, the method's drop,
    the schedules' constants, and Gaussian inference for DropConnect nets."""
    study = config.study
    extractor = ({"model.name": "convnet", "model.conv_features": tuple(study.conv_features)}
                 if study.feature_extractor == "convnet" else {})
    return {**extractor, "model.activation": activation,
            "model.hidden_sizes": _scaled(config, widths), **METHODS[method][1],
            **schedule_overrides(config)}


def sweep_overrides(config: ml_collections.ConfigDict, activation: str,
                    method: str) -> dict[str, Any]:
    """One cell's lr0 grid as members, on the validation split, mean inference only."""
    study = config.study
    return {**net_overrides(config, activation, method, study.widths),
            "sweep.learning_rate": tuple(study.sweep_learning_rates[activation]),
            "sweep.seed": tuple(study.sweep_seeds), "evaluation.train_examples": 0,
            "validation_fraction": study.validation_fraction}


def final_overrides(config: ml_collections.ConfigDict, activation: str, method: str,
                    learning_rate: float) -> dict[str, Any]:
    """One cell's final runs at the chosen lr0 on the whole training split, the config's seeds
    as members; DropConnect nets also scored by Gaussian inference."""
    final = ("gaussian",) if method in DROPCONNECT_METHODS else ()
    return {**net_overrides(config, activation, method, config.study.widths),
            "optimizer.learning_rate": learning_rate, "evaluation.final": final,
            "nonfinite": "stop"}


def rates_overrides(config: ml_collections.ConfigDict, method: str,
                    learning_rate: float) -> dict[str, Any]:
    """Fig. 2b's run of ``method`` (``"dropout"`` or ``"dropconnect"``): relu, the rates ×
    seeds as members (dropout's rates include 0, the net without drop)."""
    study = config.study
    axis = {"dropout": "hidden_dropout", "dropconnect": "dropconnect"}[method]
    rates = (0.0, *study.rates) if method == "dropout" else tuple(study.rates)
    return {**net_overrides(config, "relu", "none", study.rates_widths),
            "optimizer.learning_rate": learning_rate, f"sweep.{axis}": rates,
            "sweep.seed": tuple(study.rates_seeds), "evaluation.train_examples": 0,
            "nonfinite": "stop"}


def choose(sweep: pd.DataFrame, cell: str) -> float:
    """The lr0 with the lowest final validation error (mean over the sweep's seeds); a
    diverged setting (NaN) is never chosen.

    Raises:
      ValueError: every setting diverged.
    """
    chosen = analysis.lowest_mean(analysis.select(sweep, net=cell), "error", ["learning_rate"])
    if chosen is None:
        raise ValueError(f"Every lr0 of {cell}'s sweep diverged: lower "
                         "config.study.sweep_learning_rates.")
    return float(chosen["learning_rate"])


@dataclasses.dataclass
class TableResult:
    """The comparison's tables (a ``net`` column tells the cells apart) and choices."""

    cells: dict[str, tuple[str, str]]
    sweep: pd.DataFrame  # the sweeps' final validation evaluation per member
    chosen: dict[str, float]  # cell -> lr0
    history: pd.DataFrame  # the final runs' metrics
    final: pd.DataFrame  # the final runs' last evaluation (every evaluator) per member
    summary: dict  # a final run's summary.json (data source, split sizes)


def _frames(runs: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    history = {net: analysis.table(run.history) for net, run in runs.items()}
    final = {net: analysis.table(run.summary["members"]) for net, run in runs.items()}
    return analysis.combine(history, "net"), analysis.combine(final, "net")


def run_table(config: ml_collections.ConfigDict, workdir: Path) -> TableResult:
    """The comparison's sweeps (every cell as a group), its choices, its final runs."""
    from bnreg import engine

    table_cells = cells(config)
    sweeps = engine.train_group(
        config, {name: sweep_overrides(config, *cell) for name, cell in table_cells.items()},
        workdir / "table" / "sweep")
    _, sweep = _frames(sweeps)
    chosen = {name: choose(sweep, name) for name in table_cells}
    runs = engine.train_group(
        config, {name: final_overrides(config, *cell, chosen[name])
                 for name, cell in table_cells.items()}, workdir / "table" / "final")
    history, final = _frames(runs)
    return TableResult(table_cells, sweep, chosen, history, final,
                       next(iter(runs.values())).summary)


def rates_learning_rates(config: ml_collections.ConfigDict,
                         table: TableResult | None) -> dict[str, float]:
    """Fig. 2b's lr0 per method: the relu cells' choices.

    Raises:
      ValueError: the comparison did not run its relu dropout and DropConnect cells.
    """
    needed = {method: f"relu_{method}" for method in ("dropout", "dropconnect")}
    if table is None or not set(needed.values()) <= set(table.chosen):
        raise ValueError("The rates part takes lr0 from the comparison's relu dropout and "
                         "DropConnect cells: run config.study.parts with 'table' first and "
                         "'relu' in study.activations, 'dropout' and 'dropconnect' in "
                         "study.methods.")
    return {method: table.chosen[cell] for method, cell in needed.items()}


def run_study(config: ml_collections.ConfigDict, workdir: Path) -> list[Path]:
    """Runs the configured parts, then writes the results and figures. Every run is checked
    before anything trains.

    Raises:
      ValueError: an unknown part, activation or method; a config a net cannot take; the rates
        part without the comparison; a sweep whose every setting diverged.
    """
    from bnreg import engine

    workdir = Path(workdir)
    parts = tuple(config.study.parts)
    if not parts or set(parts) - {"table", "rates"}:
        raise ValueError(f"config.study.parts {parts} must name some of ['table', 'rates'].")
    if "rates" in parts and "table" not in parts:
        rates_learning_rates(config, None)  # raises, naming the fix
    grid = config.study.sweep_learning_rates
    for activation, method in cells(config).values():
        if activation not in grid:
            raise ValueError(f"config.study.sweep_learning_rates has no grid for {activation!r}.")
        for overrides in (sweep_overrides(config, activation, method),
                          final_overrides(config, activation, method, grid[activation][0])):
            engine.check(override(config, overrides))
    if "rates" in parts:
        for method in ("dropout", "dropconnect"):
            engine.check(override(config, rates_overrides(config, method, 0.1)))
    table = run_table(config, workdir) if "table" in parts else None
    rates = None
    if "rates" in parts:
        learning_rates = rates_learning_rates(config, table)
        runs = engine.train_group(
            config, {method: rates_overrides(config, method, lr)
                     for method, lr in learning_rates.items()}, workdir / "rates")
        rates = _frames(runs)[1]
    outputs = [write_results(config, table, rates, workdir)]
    if table is not None:
        outputs += [plot_inference(config, table, workdir), plot_convergence(config, table,
                                                                             workdir)]
    if rates is not None:
        outputs.append(plot_rates(config, rates, workdir))
    return outputs


def final_errors(final: pd.DataFrame, cell: str, column: str = "error") -> pd.Series:
    """A cell's final test ``column`` in %, indexed by seed."""
    return 100 * analysis.select(final, net=cell).set_index("seed")[column].sort_index()


def gaussian_column(samples: int) -> str:
    """The final table's column of Gaussian inference's test error with ``samples`` samples."""
    return f"error_gaussian_z{samples}"


def paired_gap(final: pd.DataFrame, first: str, second: str, first_column: str = "error",
               second_column: str = "error") -> pd.Series:
    """Per seed, ``first``'s test error (its ``first_column``) minus ``second``'s, in points."""
    return final_errors(final, first, first_column) - final_errors(final, second, second_column)


def claims(table: TableResult, gaussian_samples) -> list[str]:
    """The verdicts, one line each: DropConnect vs dropout per activation (two-sided: the paper
    says the winner depends on the activation), each vs no drop, one mask per example vs per
    batch, and Gaussian (the largest Z) vs mean inference per DropConnect net."""
    activations = dict.fromkeys(a for a, _ in table.cells.values())
    methods = {m for _, m in table.cells.values()}
    lines = []

    def claim(gap: pd.Series, expected: str, text: str, first: str, second: str) -> None:
        lines.append(analysis.claim_text(analysis.difference(gap.to_numpy()), expected, text,
                                         first=first, second=second))

    for activation in activations:
        cell = f"{activation}_{{}}".format
        if {"dropconnect", "dropout"} <= methods:
            gap = paired_gap(table.final, cell("dropconnect"), cell("dropout"))
            claim(gap, "below", f"{activation}: DropConnect below dropout", "DropConnect",
                  "dropout")
        for method in ("dropout", "dropconnect"):
            if {method, "none"} <= methods:
                claim(paired_gap(table.final, cell(method), cell("none")), "below",
                      f"{activation}: {METHODS[method][0]} below no drop", METHODS[method][0],
                      "no drop")
        if set(DROPCONNECT_METHODS) <= methods:
            claim(paired_gap(table.final, cell("dropconnect"), cell("dropconnect_batch")),
                  "below", f"{activation}: a mask per example below one per batch",
                  "per example", "per batch")
    largest = max(gaussian_samples)
    for name, (activation, method) in table.cells.items():
        if method in DROPCONNECT_METHODS:
            claim(paired_gap(table.final, name, name, gaussian_column(largest)), "below",
                  f"{activation}, {METHODS[method][0]}: Gaussian inference (Z = {largest}) "
                  "below mean inference", f"Gaussian Z={largest}", "mean")
    return lines


def _comparison_lines(config: ml_collections.ConfigDict, table: TableResult) -> list[str]:
    activations = dict.fromkeys(a for a, _ in table.cells.values())
    methods = list(dict.fromkeys(m for _, m in table.cells.values()))
    rows = []
    for activation in activations:
        row = [activation]
        for method in methods:
            name = f"{activation}_{method}"
            row.append(f"{analysis.cell(final_errors(table.final, name).to_numpy())} "
                       f"(lr0 {table.chosen[name]:g})")
        rows.append(row)
    return [analysis.markdown_table(["activation", *(METHODS[m][0] for m in methods)], rows), ""]


def _train_lines(config: ml_collections.ConfigDict, table: TableResult) -> list[str]:
    examples = config.evaluation.train_examples
    rows = [[activation, METHODS[method][0],
             analysis.cell(final_errors(table.final, name, "error_on_train").to_numpy()),
             analysis.cell(final_errors(table.final, name).to_numpy())]
            for name, (activation, method) in table.cells.items()]
    return [f"Training error (the first {examples:,} training images, mean inference) beside "
            "test error, %:", "", analysis.markdown_table(["activation", "method", "train error %",
                                               "test error %"], rows), ""]


def _sweep_lines(config: ml_collections.ConfigDict, table: TableResult) -> list[str]:
    rows, edges = [], []
    for name, (activation, method) in table.cells.items():
        grid = tuple(config.study.sweep_learning_rates[activation])
        for lr, group in analysis.select(table.sweep, net=name).groupby("learning_rate"):
            error = group["error"]
            cell = "diverged" if error.isna().any() else analysis.cell(100 * error.to_numpy())
            mark = " **← chosen**" if lr == table.chosen[name] else ""
            rows.append([activation, METHODS[method][0], f"{lr:g}", cell + mark])
        if len(grid) > 1 and table.chosen[name] in (min(grid), max(grid)):
            edges.append(f"{activation} {METHODS[method][0]}")
    lines = ["### Sweep (validation split, final validation error %)", "",
             analysis.markdown_table(["activation", "method", "lr0", "validation error %"],
                                     rows), ""]
    if edges:
        lines += [f"**Caution**: the chosen lr0 is at an edge of its grid for "
                  f"{', '.join(edges)}; a wider grid may find a better one.", ""]
    return lines


def inference_rows(config: ml_collections.ConfigDict, table: TableResult) -> list[list[str]]:
    """Per DropConnect cell: mean inference's test error, then Gaussian inference's for each Z
    (mean ± std over seeds, %)."""
    rows = []
    for name, (activation, method) in table.cells.items():
        if method not in DROPCONNECT_METHODS:
            continue
        values = [final_errors(table.final, name)] + [
            final_errors(table.final, name, gaussian_column(z))
            for z in config.evaluation.gaussian_samples]
        rows.append([activation, METHODS[method][0],
                     *(analysis.cell(v.to_numpy()) for v in values)])
    return rows


def _inference_lines(config: ml_collections.ConfigDict, table: TableResult) -> list[str]:
    samples = list(config.evaluation.gaussian_samples)
    header = ["activation", "net", "mean a(pWv)", *(f"Gaussian Z={z}" for z in samples)]
    return ["## Mean against Gaussian inference (`inference.png`)", "",
            "Test error %, mean ± std over seeds. Gaussian inference samples each DropConnect "
            "pre-activation from N(pWv, p(1−p)(W⊙W)(v⊙v)) and averages the activation over Z "
            "samples, layer by layer (Wan et al. 2013, Sec. 3).", "",
            analysis.markdown_table(header, inference_rows(config, table)), ""]


def rates_rows(rates: pd.DataFrame) -> list[list[str]]:
    """Fig. 2b's rows: drop rate, dropout's and DropConnect's test error (%, mean ± std over
    seeds; ``—`` where a method has no such rate)."""
    columns = {"dropout": "hidden_dropout", "dropconnect": "dropconnect"}
    values = sorted({float(v) for method, axis in columns.items()
                     for v in analysis.select(rates, net=method)[axis]})
    rows = []
    for rate in values:
        row = [f"{rate:g}"]
        for method, axis in columns.items():
            frame = analysis.select(analysis.select(rates, net=method), **{axis: rate})
            row.append(analysis.cell(100 * frame["error"].to_numpy()) if len(frame) else "—")
        rows.append(row)
    return rows


def write_results(config: ml_collections.ConfigDict, table: TableResult | None,
                  rates: pd.DataFrame | None, workdir: Path) -> Path:
    """Writes ``results.md``: the comparison, its verdicts, its sweep, the inference comparison,
    training errors and Fig. 2b."""
    study = config.study
    lines = ["# DropConnect against dropout and no drop — Wan et al. 2013, measured", ""]
    if table is not None:
        summary = table.summary
        arch = "-".join(map(str, (int(np.prod(summary["input_shape"])),
                                  *_scaled(config, study.widths), 10)))
        extractor = f"conv blocks {tuple(study.conv_features)}, then " if (
            study.feature_extractor) else ""
        lines += [
            f"Dataset: **{config.dataset}** ({summary['source']}); the paper's statements are "
            f"MNIST's. Nets: {extractor}{arch}, drop rate {RATE:g} (retain p = {1 - RATE:g}) "
            f"on both hidden layers; {config.num_steps:,} updates of batch {config.batch_size} "
            f"(≈ {config.num_steps * config.batch_size / summary['num_train_examples']:.1f} "
            "epochs) with the dropout paper's recipe; lr0 per cell chosen on a validation "
            f"split; final runs on the {summary['num_train_examples']:,} training images, "
            f"seeds {list(config.sweep.seed)}. Verdicts from the 95% interval of paired "
            "per-seed differences of test error (uncorrected for the number of claims).", "",
            "## Test error %, mean inference (the chosen lr0 in brackets)", "",
            *_comparison_lines(config, table),
            "## Verdicts", "",
            *claims(table, config.evaluation.gaussian_samples), "",
            "Paper (MNIST): " + "; ".join(PAPER.values()) + ".", "",
            *_inference_lines(config, table), *_train_lines(config, table),
            *_sweep_lines(config, table),
        ]
    if rates is not None:
        arch = "-".join(map(str, _scaled(config, study.rates_widths)))
        lines += ["## Test error against the drop rate (Fig. 2b, `rates.png`)", "",
                  f"relu {arch} net, the relu cells' chosen lr0, seeds "
                  f"{list(study.rates_seeds)}; test error %, mean inference; rate 0 is the net "
                  "without drop. The paper's Fig. 2b plots the same on MNIST's 400-400 net.",
                  "",
                  analysis.markdown_table(["drop rate", "dropout", "DropConnect"],
                                          rates_rows(rates)), ""]
    lines += ["Figures: `inference.png` (test error against Z, mean inference as a line), "
              "`convergence.png` (train and test error against epochs, relu), `rates.png` "
              "(test error against the drop rate).", ""]
    path = workdir / "results.md"
    path.write_text("\n".join(lines))
    return path


def plot_inference(config: ml_collections.ConfigDict, table: TableResult, workdir: Path) -> Path:
    """Per activation, Gaussian inference's test error against Z for each DropConnect net, its
    mean inference as a dashed line (mean ± std over seeds)."""
    from bnreg import plots

    samples = list(config.evaluation.gaussian_samples)
    activations = list(dict.fromkeys(a for a, m in table.cells.values()
                                     if m in DROPCONNECT_METHODS))
    figure, axes = plots.figure(1, max(1, len(activations)), width=4, height=3.4)
    for ax, activation in zip(axes[0], activations, strict=False):
        for color, method in enumerate(DROPCONNECT_METHODS):
            name = f"{activation}_{method}"
            if name not in table.cells:
                continue
            values = np.stack([final_errors(table.final, name, gaussian_column(z)).to_numpy()
                               for z in samples])
            plots.versus(ax, samples, values, label=f"{METHODS[method][0]}, Gaussian",
                         color=f"C{color}")
            ax.axhline(final_errors(table.final, name).mean(), color=f"C{color}",
                       linestyle="--", label=f"{METHODS[method][0]}, mean")
        ax.set(title=activation, xlabel="Z, samples per pre-activation", ylabel="test error %")
        ax.legend(fontsize=6)
    figure.suptitle(f"{config.dataset}: mean against Gaussian DropConnect inference")
    return plots.save(figure, workdir / "inference.png")


def plot_convergence(config: ml_collections.ConfigDict, table: TableResult,
                     workdir: Path) -> Path:
    """Fig. 2c: train (dashed) and test (solid) error against epochs of the first activation's
    no-drop, dropout and DropConnect nets, mean ± std over seeds."""
    from bnreg import plots

    activation = next(a for a, _ in table.cells.values())
    per_epoch = config.batch_size / table.summary["num_train_examples"]
    figure, ax = plots.figure(1, 1, width=6.5, height=4)
    for color, method in enumerate(("none", "dropout", "dropconnect")):
        name = f"{activation}_{method}"
        if name not in table.cells:
            continue
        frame = analysis.select(table.history, net=name)
        for column, style, kind in (("error", "-", "test"), ("error_on_train", "--", "train")):
            steps, values = analysis.curves(frame, column)
            plots.band(ax[0, 0], steps * per_epoch, 100 * values,
                       label=f"{METHODS[method][0]}, {kind}", color=f"C{color}",
                       linestyle=style)
    ax[0, 0].set(xlabel="epoch", ylabel="error %")
    ax[0, 0].legend(fontsize=7)
    figure.suptitle(f"Fig. 2c: {config.dataset}, {activation}, {len(config.sweep.seed)} seeds")
    return plots.save(figure, workdir / "convergence.png")


def plot_rates(config: ml_collections.ConfigDict, rates: pd.DataFrame, workdir: Path) -> Path:
    """Fig. 2b: test error against the drop rate, dropout and DropConnect, mean ± std."""
    from bnreg import plots

    figure, ax = plots.figure(1, 1, width=6, height=4)
    for method, axis in (("dropout", "hidden_dropout"), ("dropconnect", "dropconnect")):
        frame = analysis.select(rates, net=method)
        values = sorted(frame[axis].unique())
        errors = np.stack([100 * analysis.select(frame, **{axis: v})["error"].to_numpy()
                           for v in values])
        plots.versus(ax[0, 0], values, errors, label=METHODS[method][0], log=False)
    ax[0, 0].set(xlabel="drop rate (1 − p)", ylabel="test error %")
    ax[0, 0].legend()
    figure.suptitle(f"Fig. 2b: {config.dataset}, relu "
                    f"{'-'.join(map(str, _scaled(config, config.study.rates_widths)))}")
    return plots.save(figure, workdir / "rates.png")


if __name__ == "__main__":
    from bnreg import cli

    cli.main(__file__, run_study, workdir="runs/dropconnect")
