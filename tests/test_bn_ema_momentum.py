"""The EMA-momentum study (experiments/bn_ema_momentum.py): end to end in smoke size, and its
analysis."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bnreg.train import Member, RunResult
from experiments import bn_ema_momentum


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.progress = False
    return config, bn_ema_momentum.run_study(config, tmp_path_factory.mktemp("ema_smoke"))


@pytest.mark.slow
def test_smoke_study_writes_every_row_and_verdict_and_a_valid_figure(smoke_study):
    config, result = smoke_study
    results = (result.workdir / "results.md").read_text()
    for momentum in config.study.momenta:
        for lr in config.learning_rates:
            row = re.findall(rf"^\| {momentum:g} \| [0-9.]+ \| {lr:g} \|.*$", results, flags=re.M)
            assert len(row) == 1 and row[0].count("|") == 8 and "| |" not in row[0]
        assert re.search(rf"^- momentum {momentum:g} \(mean \|gap\|", results, flags=re.M)
    verdicts = re.findall(
        r"^  - lr [0-9.]+: tracked [+-][0-9.]+ ± .*; settled [+-][0-9.]+ ± .*\.$", results,
        flags=re.M,
    )
    assert len(verdicts) == len(config.study.momenta) * len(config.learning_rates)
    assert "Closest to Alg. 2: momentum **" in results
    for lr in config.learning_rates:  # the staleness table: a cost per lag, every cell filled
        row = re.findall(rf"^\| {lr:g} \| [0-9.]+ ± .*$", results, flags=re.M)
        assert len(row) == 1 and row[0].count("±") == 1 + len(bn_ema_momentum.STALENESS_LAGS)
    with Image.open(result.workdir / bn_ema_momentum.FIGURE) as image:
        image.verify()
        assert image.format == "PNG"


@pytest.mark.slow
def test_the_momentum_changes_the_ema_only_not_training(smoke_study):
    # The EMA is not used by the training forward pass: every momentum trains the same weights,
    # so Alg. 2 (which reads only the weights) scores the same, while the EMAs differ.
    _, result = smoke_study
    first, *others = result.runs.values()
    for run in others:
        for key in ("validation_accuracy_population", "learning_rate", "seed"):
            assert [m[key] for m in run.summary["members"]] == [
                m[key] for m in first.summary["members"]
            ]
        assert not np.array_equal(
            run.state.batch_stats["BatchNorm_0"]["mean"],
            first.state.batch_stats["BatchNorm_0"]["mean"],
        )


@pytest.mark.slow
def test_staleness_at_lag_0_is_the_runs_own_alg2_accuracy_and_leaves_the_state(smoke_study):
    config, result = smoke_study
    momentum, run = next(iter(result.runs.items()))
    params_before = jax.tree.map(np.asarray, run.state.params)
    accuracies = bn_ema_momentum.stale_statistics_accuracies(
        bn_ema_momentum.momentum_config(config, momentum), run.state, (0,)
    )
    own, stale = accuracies[0]
    summary = [100 * m["validation_accuracy_population"] for m in run.summary["members"]]
    np.testing.assert_allclose(own, summary, atol=1e-4)  # same batches, split and weights
    np.testing.assert_array_equal(own, stale)
    assert jax.tree.all(jax.tree.map(np.array_equal, run.state.params, params_before))


@pytest.mark.slow
def test_statistics_go_stale_only_when_the_weights_move(smoke_study):
    config, result = smoke_study
    momentum, run = next(iter(result.runs.items()))
    engine = bn_ema_momentum.momentum_config(config, momentum)
    lags = (1, 100)
    moving = bn_ema_momentum.stale_statistics_accuracies(engine, run.state, lags)
    hyperparams = dict(run.state.opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.zeros_like(hyperparams["learning_rate"])
    frozen_state = run.state._replace(
        opt_state=run.state.opt_state._replace(hyperparams=hyperparams)
    )
    frozen = bn_ema_momentum.stale_statistics_accuracies(engine, frozen_state, lags)
    for lag in lags:  # a learning rate of 0: the final weights' statistics are the weights' own
        np.testing.assert_array_equal(frozen[lag][0], frozen[lag][1])
    own, stale = moving[100]
    assert not np.array_equal(own, stale)


@pytest.mark.slow
def test_adding_momenta_trains_only_the_new_ones(tmp_path):
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.progress = False
    config.study.momenta = (0.9,)
    bn_ema_momentum.run_study(config, tmp_path)
    metrics = (tmp_path / "momentum=0.9" / "metrics.jsonl").read_bytes()
    config.study.momenta = (0.9, 0.99)
    result = bn_ema_momentum.run_study(config, tmp_path)  # resumes 0.9, trains 0.99
    assert (tmp_path / "momentum=0.9" / "metrics.jsonl").read_bytes() == metrics
    assert set(result.runs) == {0.9, 0.99}


def test_runs_that_trained_different_weights_are_an_error(tmp_path, monkeypatch):
    def fake_runs(runs):
        return [
            RunResult(history=[], summary={}, members=[],
                      state=SimpleNamespace(params={"w": np.full(2, float(index))}))
            for index, _ in enumerate(runs)
        ]

    monkeypatch.setattr(bn_ema_momentum, "train_and_evaluate_concurrently", fake_runs)
    with pytest.raises(RuntimeError, match="different weights"):
        bn_ema_momentum.run_study(bn_ema_momentum.get_config("smoke"), tmp_path)


def _run(members: list[tuple[float, float, float]], seeds=None) -> RunResult:
    """A run whose summary holds (learning rate, Alg. 2 accuracy, tracked EMA accuracy) members,
    of seeds ``seeds`` (default: one seed per member)."""
    seeds = range(len(members)) if seeds is None else seeds
    summary = {
        "evaluation_split": "validation",
        "members": [
            {"learning_rate": lr, "seed": seed, "validation_accuracy_population": population,
             "validation_accuracy_ema": ema, "validation_accuracy_settled_ema": population}
            for seed, (lr, population, ema) in zip(seeds, members, strict=True)
        ],
    }
    members = [Member(lr, seed) for seed, (lr, _, _) in zip(seeds, members, strict=True)]
    return RunResult(history=[], summary=summary, state=None, members=members)


def _study(runs: dict[float, RunResult], staleness=None) -> bn_ema_momentum.MomentumStudy:
    return bn_ema_momentum.MomentumStudy(runs=runs, workdir=None, staleness=staleness or {})


def test_the_closest_momentum_has_the_smallest_mean_absolute_gap_whichever_side():
    seeds = (0, 0, 1, 1)  # each seed at two rates: its |gaps| are averaged first
    study = _study({
        0.9: _run([(0.1, 0.9, 0.905), (1.0, 0.9, 0.895), (0.1, 0.9, 0.9), (1.0, 0.9, 0.9)],
                  seeds),  # |gaps| 0.5, 0.5 | 0, 0: per seed 0.5, 0
        0.99: _run([(0.1, 0.9, 0.896), (1.0, 0.9, 0.896), (0.1, 0.9, 0.9), (1.0, 0.9, 0.9)],
                   seeds),  # per seed 0.4, 0
        0.999: _run([(0.1, 0.9, 0.88), (1.0, 0.9, 0.9), (0.1, 0.9, 0.898), (1.0, 0.9, 0.9)],
                    seeds),  # per seed 1.0, 0.1
    })
    rates = (0.1, 1.0)
    np.testing.assert_allclose(bn_ema_momentum.seed_absolute_gaps(study.runs[0.999], rates),
                               [1.0, 0.1])
    assert bn_ema_momentum.mean_absolute_gap(study.runs[0.9], rates) == pytest.approx(0.25)
    assert bn_ema_momentum.closest_momenta(study, rates) == [0.99, 0.9, 0.999]
    mean, low, high = bn_ema_momentum.paired_difference(study, 0.99, 0.999, rates)
    assert mean == pytest.approx(0.35)  # (1.0 − 0.4 + 0.1 − 0) / 2, paired seed by seed
    assert low < mean < high
    swapped = bn_ema_momentum.paired_difference(study, 0.999, 0.99, rates)
    assert swapped == pytest.approx((-mean, -high, -low))


@pytest.mark.parametrize("momenta, edge", [((0.9, 0.99, 0.999), False), ((0.99, 0.999), True)])
def test_a_closest_momentum_at_the_edge_of_the_grid_is_flagged(momenta, edge):
    gaps = {0.9: 0.004, 0.99: 0.002, 0.999: 0.01}  # 0.99 closest
    study = _study({m: _run([(0.1, 0.9, 0.9 - gaps[m]), (0.1, 0.9, 0.9 - gaps[m] - 0.001)])
                    for m in momenta})
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.learning_rates = (0.1,)
    lines = bn_ema_momentum._closest_lines(config, study)
    assert lines[0].startswith("Closest to Alg. 2: momentum **0.99**")
    assert "0.999: +0.80 (" in lines[0]  # |gap| 1.0 − 0.2 points, the same for both seeds
    assert any("edge of the grid" in line for line in lines) is edge


def test_momenta_whose_paired_difference_may_be_zero_are_not_told_apart_from_the_closest():
    study = _study({
        0.9: _run([(0.1, 0.9, 0.898), (0.1, 0.9, 0.899), (0.1, 0.9, 0.897)]),  # 0.2, 0.1, 0.3
        0.99: _run([(0.1, 0.9, 0.899), (0.1, 0.9, 0.896), (0.1, 0.9, 0.898)]),  # 0.1, 0.4, 0.2
        0.999: _run([(0.1, 0.9, 0.89), (0.1, 0.9, 0.891), (0.1, 0.9, 0.889)]),  # 1.0, 0.9, 1.1
    })
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.learning_rates = (0.1,)
    lines = bn_ema_momentum._closest_lines(config, study)
    assert lines[0].startswith("Closest to Alg. 2: momentum **0.9**")
    assert "Not told apart from 0.9 (the interval includes zero): 0.99." in lines


def test_staleness_costs_take_the_members_of_the_rate_in_member_order():
    run = _run([(0.1, 0.9, 0.9), (1.0, 0.9, 0.9), (0.1, 0.9, 0.9)])
    own, stale = np.array([90.0, 80.0, 70.0]), np.array([89.0, 70.0, 68.0])
    study = _study({0.9: run}, staleness={10: (own, stale)})
    np.testing.assert_allclose(bn_ema_momentum.staleness_costs(study, 10, 0.1), [1.0, 2.0])
    np.testing.assert_allclose(bn_ema_momentum.staleness_costs(study, 10, 1.0), [10.0])


@pytest.mark.parametrize("values, signed, cell", [
    (np.array([-1e-9, 0.0]), True, "+0.00 ± 0.00"),
    (np.array([1.0, 3.0]), True, "+2.00 ± 1.41"),
    (np.array([88.0, 89.0]), False, "88.50 ± 0.71"),
])
def test_cells_show_mean_and_std_with_no_negative_zero(values, signed, cell):
    assert bn_ema_momentum._cell(values, signed=signed) == cell


@pytest.mark.parametrize("momenta", [(0.9, 0.9), (0.9, 1.0), (-0.1,), ()])
def test_repeated_or_never_settling_momenta_are_an_error_before_any_training(tmp_path, momenta):
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.study.momenta = momenta
    with pytest.raises(ValueError, match="momenta"):
        bn_ema_momentum.run_study(config, tmp_path)
    assert not any(tmp_path.iterdir())


