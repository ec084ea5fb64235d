"""The EMA-momentum study (experiments/bn_ema_momentum.py): end to end in smoke size, and its
analysis."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bnreg.train import RunResult
from experiments import bn_ema_momentum


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.progress = False
    return config, bn_ema_momentum.run_study(config, tmp_path_factory.mktemp("ema_smoke"))


@pytest.mark.slow
def test_smoke_study_writes_a_row_per_momentum_and_rate_and_a_verdict_per_momentum(smoke_study):
    config, result = smoke_study
    results = (result.workdir / "results.md").read_text()
    for momentum in config.study.momenta:
        for lr in config.learning_rates:
            row = re.findall(rf"^\| {momentum:g} \| [0-9.]+ \| {lr:g} \|.*$", results, flags=re.M)
            assert len(row) == 1 and row[0].count("|") == 8 and "| |" not in row[0]
        assert re.search(rf"^- momentum {momentum:g}: (yes|\*\*no\*\*)", results, flags=re.M)
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
        np.testing.assert_array_equal(
            run.state.params["Dense_0"]["kernel"], first.state.params["Dense_0"]["kernel"]
        )
        assert not np.array_equal(
            run.state.batch_stats["BatchNorm_0"]["mean"],
            first.state.batch_stats["BatchNorm_0"]["mean"],
        )


@pytest.mark.slow
def test_statistics_go_stale_only_when_the_weights_move(smoke_study):
    config, result = smoke_study
    state = next(iter(result.runs.values())).state
    lags = (1, 100)
    moving = bn_ema_momentum.stale_statistics_accuracies(config, state, lags)
    hyperparams = dict(state.opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.zeros_like(hyperparams["learning_rate"])
    frozen_state = state._replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))
    frozen = bn_ema_momentum.stale_statistics_accuracies(config, frozen_state, lags)
    for lag in lags:  # a learning rate of 0: the final weights' statistics are the weights' own
        np.testing.assert_array_equal(frozen[lag][0], frozen[lag][1])
    own, stale = moving[100]
    assert not np.array_equal(own, stale)


def _run(members: list[tuple[float, float, float]]) -> RunResult:
    """A run whose summary holds (learning rate, Alg. 2 accuracy, tracked EMA accuracy) members."""
    summary = {
        "evaluation_split": "validation",
        "members": [
            {"learning_rate": lr, "validation_accuracy_population": population,
             "validation_accuracy_ema": ema, "validation_accuracy_settled_ema": population}
            for lr, population, ema in members
        ],
    }
    return RunResult(history=[], summary=summary, state=None, members=[])


def test_gaps_are_alg2_minus_ema_in_points_per_member_at_the_rate():
    run = _run([(0.1, 0.90, 0.88), (0.1, 0.91, 0.92), (1.0, 0.5, 0.0)])
    np.testing.assert_allclose(bn_ema_momentum.gaps_to_alg2(run, 0.1, "ema"), [2.0, -1.0])
    np.testing.assert_allclose(bn_ema_momentum.gaps_to_alg2(run, 0.1, "settled_ema"), [0, 0])


def test_the_closest_momentum_has_the_smallest_mean_absolute_gap_whichever_side():
    study = bn_ema_momentum.MomentumStudy(
        runs={
            0.9: _run([(0.1, 0.90, 0.905), (1.0, 0.90, 0.895)]),  # gaps -0.5, +0.5
            0.99: _run([(0.1, 0.90, 0.896), (1.0, 0.90, 0.896)]),  # gaps +0.4, +0.4
            0.999: _run([(0.1, 0.90, 0.88), (1.0, 0.90, 0.90)]),  # gaps +2, 0
        },
        workdir=None,
        staleness={},
    )
    assert bn_ema_momentum.mean_absolute_gap(study.runs[0.9], (0.1, 1.0)) == pytest.approx(0.5)
    assert bn_ema_momentum.closest_momentum(study, (0.1, 1.0)) == 0.99


@pytest.mark.parametrize("momenta", [(0.9, 0.9), (0.9, 1.0), ()])
def test_repeated_or_never_settling_momenta_are_an_error_before_any_training(tmp_path, momenta):
    config = bn_ema_momentum.get_config("smoke")
    config.unlock()
    config.study.momenta = momenta
    with pytest.raises(ValueError, match="momen"):
        bn_ema_momentum.run_study(config, tmp_path)
    assert not any(tmp_path.iterdir())
