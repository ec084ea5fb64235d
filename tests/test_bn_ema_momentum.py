"""The EMA-momentum study (experiments/bn_ema_momentum.py): end to end in smoke size on the study
layer, the staleness measurement, and its analysis on constructed tables."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import constructed_results
from PIL import Image

from bnreg import analysis, engine, study
from bnreg.config import override
from bnreg.study.arms import final_runs
from experiments import bn_ema_momentum


def smoke_config(**overrides):
    return override(bn_ema_momentum.get_config("smoke"), {"progress": False, **overrides})


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    config, workdir = smoke_config(), tmp_path_factory.mktemp("ema_smoke")
    return config, workdir, study.run(bn_ema_momentum.STUDY, config, workdir)


def run_config(config, momentum):
    """The engine config of one momentum's run."""
    runs = final_runs(config, bn_ema_momentum.arms(config), {})
    return override(config, runs[f"momentum={momentum:g}"])


@pytest.mark.integration
def test_smoke_study_writes_every_row_claim_and_a_valid_figure(smoke_study):
    config, workdir, outputs = smoke_study
    assert outputs == [workdir / "results.md", workdir / bn_ema_momentum.FIGURE]
    results = outputs[0].read_text()
    for momentum in config.study.momenta:
        for lr in config.study.learning_rates:
            row = re.findall(rf"^\| {momentum:g} \| [0-9.]+ \| {lr:g} \|.*$", results, flags=re.M)
            assert len(row) == 1 and row[0].count("|") == 8 and "| |" not in row[0]
    for claim in bn_ema_momentum.claims(config):
        assert sum(line.startswith(f"| {claim.statement}") for line in results.splitlines()) == 1
    assert "Closest to Alg. 2: momentum **" in results
    for lr in config.study.learning_rates:  # the staleness table: a cost per lag, all filled
        row = re.findall(rf"^\| {lr:g} \| [0-9.]+ ± .*$", results, flags=re.M)
        assert len(row) == 1 and row[0].count("±") == 1 + len(bn_ema_momentum.STALENESS_LAGS)
    with Image.open(outputs[1]) as image:
        image.verify()
        assert image.format == "PNG"
    assert (workdir / "records" / "extra" / "staleness.jsonl.gz").is_file()


@pytest.mark.integration
def test_the_momentum_changes_the_ema_only_not_training(smoke_study):
    # The EMA is not used by the training forward pass: every momentum trains the same weights,
    # so Alg. 2 (which reads only the weights) scores the same, while the EMAs differ.
    _, workdir, _ = smoke_study
    first, second = (analysis.finals(workdir / "runs" / "final" / name)
                     for name in ("momentum=0.9", "momentum=0.99"))
    for column in ("accuracy_population", "learning_rate", "seed"):
        assert first[column].tolist() == second[column].tolist()
    assert first["loss_ema"].tolist() != second["loss_ema"].tolist()


def final_state(config, workdir, momentum):
    """The final state of one momentum's run (the rerun returns the ended run)."""
    return engine.train_and_evaluate(run_config(config, momentum),
                                     workdir / "runs" / "final" / f"momentum={momentum:g}")


@pytest.mark.integration
def test_staleness_at_lag_0_is_the_runs_own_alg2_accuracy_and_leaves_the_state(smoke_study):
    config, workdir, _ = smoke_study
    result = final_state(config, workdir, 0.9)
    params_before = jax.tree.map(np.asarray, result.state.params)
    table = bn_ema_momentum.stale_statistics_accuracies(run_config(config, 0.9), result.state,
                                                        (0,))
    summary = [100 * m["accuracy_population"] for m in result.summary["members"]]
    np.testing.assert_allclose(table["own"], summary, atol=1e-4)  # same batches and weights
    np.testing.assert_array_equal(table["own"], table["stale"])
    assert jax.tree.all(jax.tree.map(np.array_equal, result.state.params, params_before))


@pytest.mark.integration
def test_statistics_go_stale_only_when_the_weights_move(smoke_study):
    config, workdir, _ = smoke_study
    state = final_state(config, workdir, 0.9).state
    lags = (1, 100)
    moving = bn_ema_momentum.stale_statistics_accuracies(run_config(config, 0.9), state, lags)
    hyperparameters = {**state.hyperparameters,
                       "learning_rate": jnp.zeros_like(state.hyperparameters["learning_rate"])}
    frozen = bn_ema_momentum.stale_statistics_accuracies(
        run_config(config, 0.9), state._replace(hyperparameters=hyperparameters), lags)
    # A learning rate of 0: the final weights' statistics are the weights' own.
    np.testing.assert_array_equal(frozen["own"], frozen["stale"])
    at_100 = moving[moving["lag"] == 100]
    assert not np.array_equal(at_100["own"], at_100["stale"])


@pytest.mark.integration
def test_adding_momenta_trains_only_the_new_ones(tmp_path):
    study.run(bn_ema_momentum.STUDY, smoke_config(**{"study.momenta": (0.9,)}), tmp_path)
    metrics = tmp_path / "runs" / "final" / "momentum=0.9" / engine.METRICS_FILE
    before = metrics.read_bytes()
    study.run(bn_ema_momentum.STUDY, smoke_config(**{"study.momenta": (0.9, 0.99)}), tmp_path)
    assert metrics.read_bytes() == before
    assert (tmp_path / "runs" / "final" / "momentum=0.99" / engine.SUMMARY_FILE).is_file()


def test_runs_that_trained_different_weights_are_an_error():
    runs = {name: SimpleNamespace(state=SimpleNamespace(params={"w": np.full(2, float(i))}))
            for i, name in enumerate(("momentum=0.9", "momentum=0.99"))}
    with pytest.raises(RuntimeError, match="different weights"):
        bn_ema_momentum.measure(smoke_config(), runs, None)


def constructed(rows, momenta, rates, staleness=None):
    """Results of (momentum, learning rate, seed, Alg. 2 accuracy, tracked EMA accuracy) rows."""
    config = smoke_config(**{"study.momenta": momenta, "study.learning_rates": rates,
                             "study.primary_learning_rate": rates[0]})
    final = [{"arm": bn_ema_momentum.arm_name(m, lr), "seed": seed, "member": seed,
              "accuracy_population": alg2, "accuracy_ema": ema, "accuracy_settled_ema": alg2}
             for m, lr, seed, alg2, ema in rows]
    return constructed_results(final, config=config,
                               extra={"staleness": staleness} if staleness else None)


def test_the_closest_momentum_has_the_smallest_mean_absolute_gap_whichever_side():
    # Each seed at two rates: its |gaps| (points) are averaged over the rates first.
    ema = {0.9: [0.905, 0.895, 0.9, 0.9],  # per seed 0.5, 0
           0.99: [0.896, 0.896, 0.9, 0.9],  # per seed 0.4, 0
           0.999: [0.88, 0.9, 0.898, 0.9]}  # per seed 1.0, 0.1
    cases = [(0.1, 0), (1.0, 0), (0.1, 1), (1.0, 1)]
    results = constructed([(m, lr, seed, 0.9, values[i]) for m, values in ema.items()
                           for i, (lr, seed) in enumerate(cases)], tuple(ema), (0.1, 1.0))
    np.testing.assert_allclose(bn_ema_momentum.seed_absolute_gaps(results, 0.999), [1.0, 0.1])
    assert bn_ema_momentum.closest_momenta(results) == [0.99, 0.9, 0.999]


@pytest.mark.parametrize("momenta, edge", [((0.9, 0.99, 0.999), False), ((0.99, 0.999), True)])
def test_a_closest_momentum_at_the_edge_of_the_grid_is_flagged(momenta, edge):
    gaps = {0.9: 0.004, 0.99: 0.002, 0.999: 0.01}  # 0.99 closest
    results = constructed([(m, 0.1, seed, 0.9, 0.9 - gaps[m] - 0.001 * seed) for m in momenta
                           for seed in (0, 1)], momenta, (0.1,))
    lines = bn_ema_momentum.closest_lines(results)
    assert lines[0].startswith("Closest to Alg. 2: momentum **0.99**")
    assert "0.999: +0.80 (" in lines[0]  # |gap| 1.0 − 0.2 points, the same for both seeds
    assert any("edge of the grid" in line for line in lines) is edge


def test_momenta_whose_paired_difference_may_be_zero_are_not_told_apart_from_the_closest():
    ema = {0.9: [0.898, 0.899, 0.897],  # |gaps| 0.2, 0.1, 0.3
           0.99: [0.899, 0.896, 0.898],  # 0.1, 0.4, 0.2
           0.999: [0.89, 0.891, 0.889]}  # 1.0, 0.9, 1.1
    results = constructed([(m, 0.1, seed, 0.9, values[seed]) for m, values in ema.items()
                           for seed in range(3)], tuple(ema), (0.1,))
    lines = bn_ema_momentum.closest_lines(results)
    assert lines[0].startswith("Closest to Alg. 2: momentum **0.9**")
    assert "Not told apart from 0.9 (the interval includes zero): 0.99." in lines


def test_staleness_costs_are_own_minus_stale_per_member_of_the_rate():
    staleness = {"lag": [10] * 3, "learning_rate": [0.1, 1.0, 0.1], "seed": [0, 0, 1],
                 "own": [90.0, 80.0, 70.0], "stale": [89.0, 70.0, 68.0]}
    results = constructed([(0.9, 0.1, 0, 0.9, 0.9)], (0.9,), (0.1, 1.0), staleness)
    np.testing.assert_allclose(bn_ema_momentum.staleness_costs(results, 10, 0.1), [1.0, 2.0])
    np.testing.assert_allclose(bn_ema_momentum.staleness_costs(results, 10, 1.0), [10.0])


@pytest.mark.parametrize("momenta", [(0.9, 0.9), (0.9, 1.0), (-0.1,), ()])
def test_repeated_or_never_settling_momenta_are_an_error_before_any_training(tmp_path, momenta):
    with pytest.raises(ValueError, match="momenta"):
        study.run(bn_ema_momentum.STUDY, smoke_config(**{"study.momenta": momenta}), tmp_path)
    assert not any(tmp_path.iterdir())
