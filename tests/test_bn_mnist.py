"""The BN MNIST study (experiments/bn_mnist.py): end to end in smoke size, results.md and the
figures again from its records alone (``--analyze``), the command line, and its analysis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import assert_figure, constructed_results

from bnreg import engine, study
from bnreg.config import override
from bnreg.study.arms import final_runs, final_settings, tuning_overrides
from bnreg.workdir import mark, study_owner
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


@pytest.mark.integration
@pytest.mark.parametrize("name", bn_mnist.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.integration
def test_smoke_results_hold_every_claim_the_tables_and_the_records(smoke_run):
    workdir, stdout = smoke_run
    results = (workdir / "results.md").read_text()
    assert results in stdout
    config = bn_mnist.get_config("smoke")
    for claim in bn_mnist.claims(config):
        rows = [line for line in results.splitlines() if line.startswith(f"| {claim.statement}")]
        assert len(rows) == 1 and rows[0].count("|") == 7, claim.statement
    assert results.count("(**primary**)") == 1
    for heading in ("## Claims", "## Tuning on the validation split", "## Test accuracy",
                    "## Steps to fixed accuracies", "## EMA vs Alg. 2", "## Drift"):
        assert f"\n{heading}" in results
    for name in ("tune/no_bn", "tune/bn", "final/no_bn", "final/bn"):
        assert (workdir / "records" / name / "metrics.jsonl.gz").is_file(), name
    assert (workdir / "records" / "study.json").is_file()


@pytest.mark.integration
def test_analyze_rewrites_results_and_figures_from_the_records_alone_byte_for_byte(
        smoke_run, tmp_path):
    workdir, _ = smoke_run
    shutil.copytree(workdir / "records", tmp_path / "records")  # no run directories
    completed = run_cli("--analyze", f"--workdir={tmp_path}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("results.md", *bn_mnist.FIGURES):
        assert (tmp_path / name).read_bytes() == (workdir / name).read_bytes(), name


def test_analyze_refuses_config_overrides_and_a_directory_without_records(tmp_path):
    completed = run_cli("--analyze", f"--workdir={tmp_path}", "--config.num_steps=5")
    assert completed.returncode != 0 and "takes the config from the records" in completed.stderr
    completed = run_cli("--analyze", f"--workdir={tmp_path}")
    assert completed.returncode != 0 and "records directory" in completed.stderr
    assert "Traceback" not in completed.stderr


UNKNOWN_KEYS = ("learning_rate", "nonexistent", "model.hiden_sizes", "study.sweep_step")


def test_unknown_config_keys_on_the_command_line_are_one_error_naming_each(tmp_path):
    completed = run_cli(f"--workdir={tmp_path / 'run'}", "--config=experiments/bn_mnist.py:smoke",
                        *(f"--config.{key}=1" for key in UNKNOWN_KEYS))
    assert completed.returncode == 2
    assert f"Unknown config keys {list(UNKNOWN_KEYS)}" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()


def test_a_sweep_axis_the_study_does_not_sweep_is_named_as_such(tmp_path):
    completed = run_cli(f"--workdir={tmp_path / 'run'}", "--config=experiments/bn_mnist.py:smoke",
                        "--config.sweep.hidden_dropout=0.5")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "--config.sweep.hidden_dropout: this study does not sweep 'hidden_dropout' (its "
        "config.sweep holds ['seed']); set config.model.hidden_dropout for one value."]


@pytest.mark.parametrize("key, instead", [
    ("optimizer.learning_rate", "config.study.learning_rates"),
    ("sweep.learning_rate", "config.study.learning_rates"),
    ("seed", "config.sweep.seed"),
    ("model.norm", "it makes arm 'no_bn'"),
    ("validation_fraction", "config.study.validation_fraction"),
])
def test_a_key_the_protocol_sets_is_named_with_what_to_set_instead(key, instead):
    config = bn_mnist.get_config("smoke")
    keys = study.protocol_keys(config, bn_mnist.STUDY.arms(config))
    assert instead in keys[key]
    assert "dataset" not in keys and "num_steps" not in keys


@pytest.mark.parametrize("override, message", [
    ("sweep.learning_rate=1", "--config.sweep.learning_rate is set by the study's protocol"),
    ("num_steps=-5", "config.num_steps must be ≥ 1"),
])
def test_a_command_line_mistake_is_one_line_and_nothing_is_written(tmp_path, override, message):
    completed = run_cli(f"--workdir={tmp_path / 'run'}", "--config=experiments/bn_mnist.py:smoke",
                        f"--config.{override}")
    assert completed.returncode == 2 and message in completed.stderr
    assert completed.stderr.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_overwrite_deletes_the_workdir_before_anything_else(tmp_path):
    mark(tmp_path / "run", study_owner("bn_mnist"))  # the study's own work dir
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
    assert completed.returncode == 2 and "--overwrite refuses to delete" in completed.stderr
    assert "bnreg did not make it" in completed.stderr
    assert (tmp_path / "notes.txt").read_text() == "not a study's output"


def test_the_command_gives_xla_one_cpu_device_per_core():
    code = ("import jax; from bnreg import cli; cli.use_cpu_cores(); import os; "
            "assert jax.local_device_count() == len(os.sched_getaffinity(0)), "
            "jax.local_device_count()")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_the_full_config_on_digits_tunes_on_a_twelfth_of_train():
    config = override(bn_mnist.get_config(), {"dataset": "digits"})  # 1,497 training examples
    tuned = next(arm for arm in bn_mnist.arms(config) if arm.name == "no_bn")
    run_data = engine.load_run_data(override(config, tuning_overrides(config, tuned)))
    total = len(run_data.train.labels) + len(run_data.evaluation.labels)
    assert (run_data.evaluation_split, total) == ("validation", 1497)
    assert len(run_data.evaluation.labels) == 125  # 1497 / 12 = 124.75


def test_the_final_rates_are_the_baselines_choice_times_the_factors_for_both_nets():
    config = bn_mnist.get_config()
    choices = {"no_bn": {"learning_rate": 2.0}, "bn": {"learning_rate": 0.5}}
    settings = {arm.name: final_settings(arm, choices)["learning_rate"]
                for arm in bn_mnist.arms(config) if arm.final}
    assert settings == {"no_bn_i": 2.0, "no_bn_ii": 10.0, "no_bn_iii": 0.1,
                        "bn_i": 2.0, "bn_ii": 10.0, "bn_iii": 0.1}
    runs = final_runs(config, bn_mnist.arms(config), choices)
    assert runs["bn"]["sweep.learning_rate"] == runs["no_bn"]["sweep.learning_rate"]


def test_both_nets_start_from_the_same_weights_and_see_the_same_batches():
    config = bn_mnist.get_config("smoke")
    arms = bn_mnist.arms(config)
    runs = final_runs(config, arms, {"no_bn": {"learning_rate": 0.1},
                                     "bn": {"learning_rate": 0.1}})
    states = {net: engine.build(override(config, overrides), jax.local_devices()[:1]).init()
              for net, overrides in runs.items()}
    for layer in ("Dense_0", "Dense_1", "Dense_2", "Dense_out"):
        np.testing.assert_array_equal(states["bn"].params[layer]["kernel"],
                                      states["no_bn"].params[layer]["kernel"])
    # The data order is drawn from the member key alone.
    np.testing.assert_array_equal(states["bn"].key, states["no_bn"].key)


def test_the_drift_is_the_range_of_the_median_or_spread_from_the_drift_start_on():
    medians = {0: 9.0, 10: 1.0, 20: 3.0, 30: 2.0}
    spreads = {0: 1.0, 10: 1.5, 20: 4.0, 30: 2.0}
    config = override(bn_mnist.get_config("smoke"), {"study.drift_from": 10,
                                                      "num_steps": 30})
    history = [{"arm": "a", "seed": 0, "member": 0, "step": step,
                "probe_percentiles": [[[m - spreads[step] / 2, m, m + spreads[step] / 2]]]}
               for step, m in medians.items()]
    results = constructed_results([{"arm": "a", "seed": 0}], history, config=config)
    # Step 0's median (9, the climb from the initial weights) is left out.
    np.testing.assert_allclose(bn_mnist.drift(results, "a"), [2.0])
    np.testing.assert_allclose(bn_mnist.drift(results, "a", "spread"), [2.5])


@pytest.mark.parametrize("overrides, message", [
    ({"study.high_lr_factor": 1.0, "study.low_lr_factor": 0.05}, "three distinct rates"),
    ({"study.high_lr_factor": 5.0, "study.low_lr_factor": 5.0}, "three distinct rates"),
    ({"num_steps": 40, "study.drift_from": 0}, "must hold a step within"),
    ({"study.drift_from": 400}, "drift_from"),
])
def test_a_study_config_that_cannot_work_is_an_error_before_any_training(tmp_path, overrides,
                                                                         message):
    config = override(bn_mnist.get_config("smoke"), overrides)
    with pytest.raises(study.StudyConfigError, match=message):  # exit code 2 on the command line
        study.run(bn_mnist.STUDY, config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="variant"):
        bn_mnist.get_config("huge")
