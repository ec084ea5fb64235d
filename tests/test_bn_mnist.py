"""The BN MNIST study (experiments/bn_mnist.py): end to end in smoke size, and its analysis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bnreg import analysis, engine
from bnreg.config import override
from experiments import bn_mnist

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "experiments.bn_mnist", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bn_smoke")
    completed = run_cli(f"--workdir={workdir}", "--config=experiments/bn_mnist.py:smoke",
                        "--config.progress=False")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return workdir, completed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", bn_mnist.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    with Image.open(workdir / name) as image:
        image.verify()
        assert image.format == "PNG"
        assert image.size[0] > 400 and image.size[1] > 200
    assert str(workdir / name) in stdout


@pytest.mark.slow
def test_smoke_study_writes_results_table_and_run_outputs(smoke_run):
    workdir, stdout = smoke_run
    results = (workdir / "results.md").read_text()
    assert results in stdout
    header = ("| net | lr | 50 steps | 100 steps | 200 steps | first step ≥ no-BN final | "
              "final, EMA stats | final, Alg. 2 stats | paper (Fig. 1a) |")
    assert header + "\n" in results
    for net in ("with BN", "without BN"):
        # One accuracy row per learning rate (i), (ii) and (iii), with every column filled.
        rows = re.findall(rf"^\| {net} \| [0-9.]+ \(i+\) \|.*$", results, flags=re.M)
        assert len(rows) == 3
        assert all(row.count("|") == header.count("|") and "| |" not in row for row in rows)
    drift = r"without BN the median drifts [0-9.]+× as much as with BN"
    for verdict in (r"Alg. 2 − EMA tracked", drift, "BN − baseline from step 50 on"):
        assert len(re.findall(rf"^- lr [0-9.]+ \(i+\): {verdict}", results, flags=re.M)) == 3
    assert "## Learning-rate sweep" in results
    for phase in ("sweep", "study"):
        for net in bn_mnist.NETS:
            for name in (engine.METRICS_FILE, engine.SUMMARY_FILE, engine.CONFIG_FILE):
                assert (workdir / phase / net / name).is_file(), (phase, net, name)


@pytest.mark.parametrize("key", ["learning_rate", "nonexistent", "model.hiden_sizes",
                                 "study.sweep_step"])
def test_unknown_config_key_on_the_command_line_is_an_error_naming_it(tmp_path, key):
    completed = run_cli(f"--workdir={tmp_path / 'run'}", "--config=experiments/bn_mnist.py:smoke",
                        f"--config.{key}=1")
    assert completed.returncode != 0
    assert f"Unknown config keys ['{key}']" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()


def test_overwrite_deletes_the_workdir_before_anything_else(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.md").write_text("an earlier result")
    # A config the study refuses before training: only --overwrite touches the directory.
    args = (f"--workdir={tmp_path / 'run'}", "--config=experiments/bn_mnist.py:smoke",
            "--config.study.high_lr_factor=1.0")
    assert run_cli(*args).returncode != 0
    assert (tmp_path / "run" / "results.md").exists()
    assert run_cli(*args, "--overwrite").returncode != 0
    assert not (tmp_path / "run").exists()


def test_overwrite_refuses_a_directory_that_holds_no_study(tmp_path):
    (tmp_path / "notes.txt").write_text("not a study's output")
    completed = run_cli(f"--workdir={tmp_path}", "--config=experiments/bn_mnist.py:smoke",
                        "--overwrite", "--config.study.high_lr_factor=1.0")
    assert completed.returncode != 0 and "--overwrite refuses to delete" in completed.stderr
    assert (tmp_path / "notes.txt").exists()


def test_the_command_gives_xla_one_cpu_device_per_core():
    code = ("import jax; from bnreg import cli; cli.use_cpu_cores(); import os; "
            "assert jax.local_device_count() == len(os.sched_getaffinity(0)), "
            "jax.local_device_count()")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_the_full_config_on_digits_holds_out_a_twelfth_of_train_for_the_sweep():
    config = override(bn_mnist.get_config(), {"dataset": "digits"})  # 1,497 training examples
    run_data = engine.load_run_data(bn_mnist.sweep_config(config))
    total = len(run_data.train.labels) + len(run_data.evaluation.labels)
    assert (run_data.evaluation_split, total) == ("validation", 1497)
    assert len(run_data.evaluation.labels) == 125  # 1497 / 12 = 124.75


def test_both_nets_start_from_the_same_weights_and_see_the_same_batches():
    config = bn_mnist.study_config(bn_mnist.get_config("smoke"), (0.1,))
    states = {net: engine.build(override(config, overrides), jax.local_devices()[:1]).init()
              for net, overrides in bn_mnist.NETS.items()}
    for layer in ("Dense_0", "Dense_1", "Dense_2", "Dense_out"):
        np.testing.assert_array_equal(states["bn"].params[layer]["kernel"],
                                      states["no_bn"].params[layer]["kernel"])
    # The data order is drawn from the member key alone.
    np.testing.assert_array_equal(states["bn"].key, states["no_bn"].key)


def test_the_baseline_best_learning_rate_is_chosen_and_the_others_are_multiples():
    scores = {0.01: (0.80, 0.01), 0.1: (0.88, 0.01), 1.0: (0.85, 0.02)}
    assert bn_mnist.choose_learning_rates(scores, 5.0, 0.5) == (0.1, 0.5, 0.05)


def test_sweep_scores_are_the_mean_and_std_per_learning_rate_of_one_net():
    sweep = pd.DataFrame({"net": ["bn", "bn", "no_bn", "bn"], "learning_rate": [0.1, 0.1, 0.1, 1],
                          "accuracy": [0.8, 0.9, 0.1, 0.5]})
    scores = bn_mnist.sweep_scores(sweep, "bn")
    assert scores[0.1] == pytest.approx((0.85, np.std([0.8, 0.9], ddof=1)))
    assert scores[1.0] == (0.5, 0.0)


def test_percentile_drift_is_the_range_of_the_median_and_of_the_spread():
    medians = {0: 9.0, 10: 1.0, 20: 3.0, 30: 2.0}
    spreads = {0: 1.0, 10: 1.5, 20: 4.0, 30: 2.0}
    history = analysis.table(
        {"step": step, "member": 0,
         "probe_percentiles": [[[m - spreads[step] / 2, m, m + spreads[step] / 2]]]}
        for step, m in medians.items()
    )
    median_range, spread_range = bn_mnist.percentile_drift(history)
    np.testing.assert_allclose(median_range, [[8.0]])
    np.testing.assert_allclose(spread_range, [[3.0]])


@pytest.mark.parametrize(
    "median_ratio, verdict", [(2.0, ": well below"), (1.99, ": **not well below**")]
)
def test_drift_is_well_below_with_bn_when_the_median_drifts_at_most_half_as_much(
    median_ratio, verdict
):
    assert verdict in bn_mnist.drift_verdict("1 (i)", median_ratio, 1.0)


def test_gaps_to_alg2_are_alg2_minus_the_other_statistics_in_points_at_the_rate():
    final = pd.DataFrame({
        "net": ["bn"] * 3, "learning_rate": [0.1, 1.0, 0.1],
        "accuracy_population": [0.90, 0.50, 0.91], "accuracy_ema": [0.88, 0.60, 0.92],
    })
    np.testing.assert_allclose(bn_mnist.gaps_to_alg2(final, 0.1, "ema"), [2.0, -1.0])
    np.testing.assert_allclose(bn_mnist.gaps_to_alg2(final, 1.0, "ema"), [-10.0])


@pytest.mark.parametrize("baseline_learns", [True, False])
def test_comparison_verdict_counts_evaluations_and_says_when_the_baseline_did_not_learn(
    baseline_learns,
):
    steps = np.array([0, 10, 20, 30])
    baseline = np.array([[0.1, 0.5, 0.6, 0.7]] * 2) if baseline_learns else np.full((2, 4), 0.1)
    bn = np.array([[0.1, 0.8, 0.6, 0.9], [0.1, 0.8, 0.62, 0.9]])
    verdict = bn_mnist.comparison_verdict("1 (i)", steps, {"no_bn": baseline, "bn": bn}, 10)
    assert ("ended no better than it started" in verdict) is not baseline_learns
    if baseline_learns:  # at step 20 the lead (0.01) is within BN's std (0.014)
        assert "at 1 of 3 evaluations (first at step 20; last at step 20)" in verdict
    else:
        assert "every evaluation" in verdict


@pytest.mark.parametrize("factors", [(1.0, 0.05), (5.0, 5.0)])
def test_rate_factors_that_repeat_a_setting_are_an_error_before_any_training(tmp_path, factors):
    config = override(bn_mnist.get_config("smoke"), {"study.high_lr_factor": factors[0],
                                                      "study.low_lr_factor": factors[1]})
    with pytest.raises(ValueError, match="three distinct rates"):
        bn_mnist.run_study(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_milestones_beyond_the_run_are_an_error_before_any_training(tmp_path):
    config = override(bn_mnist.get_config("smoke"), {"num_steps": 40})
    with pytest.raises(ValueError, match="must hold a step within"):
        bn_mnist.run_study(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="variant"):
        bn_mnist.get_config("huge")
