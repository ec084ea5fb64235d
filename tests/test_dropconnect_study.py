"""The DropConnect study (experiments/dropconnect.py): end to end in smoke size, its configs,
the lr0 choice on validation, and its readings of constructed tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_figure, run_smoke_study

from bnreg import engine
from bnreg.config import override
from experiments import dropconnect


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dropconnect_smoke")
    return workdir, run_smoke_study("dropconnect", workdir)


@pytest.mark.integration
@pytest.mark.parametrize("name", dropconnect.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.integration
def test_smoke_results_hold_every_cell_verdict_and_inference_row(smoke_run):
    workdir, _ = smoke_run
    results = (workdir / "results.md").read_text()
    for heading in ("## Test error %, mean inference", "## Verdicts",
                    "## Mean against Gaussian inference", "## Test error against the drop rate"):
        assert f"\n{heading}" in results
    for claim in ("relu: DropConnect below dropout", "relu: dropout below no drop",
                  "relu: a mask per example below one per batch",
                  "relu, DropConnect: Gaussian inference (Z = 10) below mean inference"):
        assert f"- {claim}: " in results
    assert "| relu | DropConnect, one mask per batch | " in results
    summary = (workdir / "table/final/relu_dropconnect/summary.json").read_text()
    assert '"error_gaussian_z1"' in summary and '"error_gaussian_z10"' in summary


# engine.check loads the dataset: the always-there digits stand in for the study's.
ON_DIGITS = {"dataset": "digits", "evaluation.train_examples": 300}


def test_every_cell_of_the_full_config_is_a_valid_run():
    config = override(dropconnect.get_config(), ON_DIGITS)
    assert len(dropconnect.cells(config)) == 3 * 4
    for name, (activation, method) in dropconnect.cells(config).items():
        final = override(config, dropconnect.final_overrides(config, activation, method, 0.1))
        engine.check(final)
        assert final.model.hidden_sizes == (100, 100), name
        expected = ("gaussian",) if method in dropconnect.DROPCONNECT_METHODS else ()
        assert tuple(final.evaluation.final) == expected
    dropconnect_cell = override(config, dropconnect.final_overrides(config, "relu",
                                                                    "dropconnect", 0.1))
    assert (dropconnect_cell.model.dropconnect, dropconnect_cell.model.dropconnect_per_example,
            dropconnect_cell.model.hidden_dropout) == (0.5, True, 0.0)
    batch = override(config, dropconnect.final_overrides(config, "relu", "dropconnect_batch",
                                                         0.1))
    assert not batch.model.dropconnect_per_example


@pytest.mark.parametrize("variant, widths, rates_widths", [
    ("full", (100, 100), (50, 50)), ("paper", (800, 800), (400, 400))])
def test_widths_keep_the_papers_ratios(variant, widths, rates_widths):
    config = dropconnect.get_config(variant)
    assert dropconnect.net_overrides(config, "relu", "none",
                                     config.study.widths)["model.hidden_sizes"] == widths
    rates = override(config, dropconnect.rates_overrides(config, "dropconnect", 0.1))
    assert tuple(rates.model.hidden_sizes) == rates_widths


def test_the_cifar10_variant_is_a_convnet_with_a_dropconnect_head():
    config = dropconnect.get_config("cifar10")
    run = override(config, dropconnect.final_overrides(config, "relu", "dropconnect", 0.01))
    assert (run.dataset, run.model.name, tuple(run.model.hidden_sizes)) == (
        "cifar10", "convnet", (512,))
    engine.check(override(run, ON_DIGITS))


def test_the_dropout_rates_include_the_net_without_drop_and_dropconnects_do_not():
    config = dropconnect.get_config()
    dropout = override(config, dropconnect.rates_overrides(config, "dropout", 0.1))
    connect = override(config, dropconnect.rates_overrides(config, "dropconnect", 0.1))
    assert tuple(dropout.sweep.hidden_dropout) == (0.0, *config.study.rates)
    assert tuple(connect.sweep.dropconnect) == tuple(config.study.rates)


@pytest.mark.parametrize("study, message", [
    ({"parts": ("rates",)}, "run config.study.parts with 'table' first"),
    ({"parts": ("table", "figure")}, "must name some of"),
    ({"activations": ("gelu",)}, "study.activations"),
    ({"methods": ()}, "study.methods"),
])
def test_bad_study_settings_are_errors_before_anything_trains(tmp_path, study, message):
    config = override(dropconnect.get_config("smoke"),
                      {f"study.{key}": value for key, value in study.items()})
    with pytest.raises(ValueError, match=message):
        dropconnect.run_study(config, tmp_path)
    assert not any(tmp_path.iterdir())


def sweep_frame(errors: dict[float, float], cell: str = "relu_dropout") -> pd.DataFrame:
    return pd.DataFrame({"net": cell, "learning_rate": list(errors), "seed": 0,
                         "error": list(errors.values())})


def test_the_lowest_validation_error_is_chosen_and_a_diverged_setting_never():
    assert dropconnect.choose(sweep_frame({0.1: 0.2, 0.3: 0.15, 1.0: np.nan}),
                              "relu_dropout") == 0.3
    with pytest.raises(ValueError, match="Every lr0"):
        dropconnect.choose(sweep_frame({0.1: np.nan}), "relu_dropout")


def constructed_table(errors: dict[str, list[float]], gaussian: list[float]):
    """Final test errors per cell (seeds 0..S-1) and Gaussian errors of the DropConnect cell."""
    rows = []
    for cell, values in errors.items():
        for seed, value in enumerate(values):
            row = {"net": cell, "seed": seed, "error": value}
            if cell.endswith("dropconnect"):
                row["error_gaussian_z100"] = gaussian[seed]
            rows.append(row)
    cells = {name: tuple(name.split("_", 1)) for name in errors}
    return dropconnect.TableResult(cells, pd.DataFrame(), {n: 0.1 for n in cells},
                                   pd.DataFrame(), pd.DataFrame(rows), {})


def test_verdicts_read_the_paired_differences_of_a_constructed_table():
    table = constructed_table({
        "relu_none": [0.120, 0.122, 0.121],
        "relu_dropout": [0.110, 0.113, 0.111],
        "relu_dropconnect": [0.100, 0.102, 0.101],  # 1 point below dropout on every seed
    }, gaussian=[0.104, 0.106, 0.105])  # 0.4 points above mean inference
    lines = dropconnect.claims(table, (100,))
    assert lines[0].startswith("- relu: DropConnect below dropout: **holds**")
    assert lines[1].startswith("- relu: dropout below no drop: **holds**")
    assert lines[2].startswith("- relu: DropConnect below no drop: **holds**")
    assert lines[3].startswith("- relu, DropConnect: Gaussian inference (Z = 100) below mean "
                               "inference: **does not hold**")
    assert len(lines) == 4  # no per-batch cell, no per-batch claim


def test_a_winner_that_changes_sign_across_seeds_is_not_resolved():
    table = constructed_table({"tanh_dropout": [0.11, 0.10, 0.12],
                               "tanh_dropconnect": [0.10, 0.11, 0.115]}, gaussian=[0.1] * 3)
    assert dropconnect.claims(table, (100,))[0].startswith(
        "- tanh: DropConnect below dropout: not resolved")


def test_rates_rows_put_each_methods_rates_side_by_side():
    rates = pd.DataFrame([
        {"net": "dropout", "hidden_dropout": 0.0, "dropconnect": 0.0, "seed": s, "error": 0.2}
        for s in (0, 1)] + [
        {"net": "dropout", "hidden_dropout": 0.5, "dropconnect": 0.0, "seed": s, "error": e}
        for s, e in ((0, 0.1), (1, 0.3))] + [
        {"net": "dropconnect", "hidden_dropout": 0.0, "dropconnect": 0.5, "seed": s,
         "error": 0.15} for s in (0, 1)])
    assert dropconnect.rates_rows(rates) == [["0", "20.00 ± 0.00", "—"],
                                             ["0.5", "20.00 ± 14.14", "15.00 ± 0.00"]]
