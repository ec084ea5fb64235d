"""The run: records and summary, resume, bad input before anything compiles, non-finite
losses, devices, concurrency, and a resume after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from bnreg import data, engine
from bnreg.config import AXES, override
from bnreg.models import OUTPUT_LAYER

REPO = Path(__file__).resolve().parents[1]


def test_records_carry_the_step_the_member_the_split_and_every_member_value(tmp_path):
    config = tiny_config(**{"sweep.seed": (0, 1), "sweep.hidden_dropout": (0.0, 0.3)})
    result = engine.train_and_evaluate(config, tmp_path)
    lines = (tmp_path / engine.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    assert {r["step"] for r in result.history} == {0, 20, 40, 60}
    for record in result.history:
        assert set(AXES) | {"step", "member", "split", "train_loss"} <= set(record)
        assert record["split"] == "test"
        member = result.members.member(record["member"])
        assert all(record[axis] == member[axis] for axis in AXES)
    assert [(r["hidden_dropout"], r["seed"]) for r in result.history[:4]] == [
        (0.0, 0), (0.0, 1), (0.3, 0), (0.3, 1)
    ]


def test_the_summary_holds_every_final_evaluator_of_a_bn_net(tmp_path):
    config = tiny_config(**{"evaluation.final": ("ema", "settled_ema")})
    result = engine.train_and_evaluate(config, tmp_path)
    summary = json.loads((tmp_path / engine.SUMMARY_FILE).read_text())
    assert summary == result.summary
    assert summary["evaluators"] == ["population", "ema", "settled_ema"]
    member = summary["members"][0]
    for column in summary["evaluators"]:
        assert 0.0 <= member[f"accuracy_{column}"] <= 1.0
        assert member[f"error_{column}"] == pytest.approx(1 - member[f"accuracy_{column}"])
    # The primary (Alg. 2) under plain names, equal to the last evaluation's.
    assert member["accuracy"] == member["accuracy_population"] == result.history[-1]["accuracy"]
    assert "probe_percentiles" not in member and "probe_percentiles" in result.history[-1]


def test_curves_on_a_subset_and_the_whole_split_at_full_steps_and_at_the_end(tmp_path):
    config = tiny_config(**{"evaluation.subset": 100, "evaluation.full_steps": (40,)})
    result = engine.train_and_evaluate(config, tmp_path)
    run = engine.build(config)
    state = run.adopt(result.state)
    subset = run.evaluate(state, run.during)["population"]["accuracy"]
    whole = run.evaluate(state, run.full)["full"]["accuracy"]
    final = result.summary["members"][0]
    # The last curve point scores the subset; the summary (and full_steps) the whole split.
    assert result.history[-1]["accuracy"] == pytest.approx(float(subset[0]))
    assert final["accuracy"] == pytest.approx(float(whole[0]))
    assert [r["step"] for r in result.history if "accuracy_full" in r] == [40]
    # 100 of the 300 test examples: accuracies in steps of 1/100.
    assert all(abs(100 * r["accuracy"] - round(100 * r["accuracy"])) < 1e-4
               for r in result.history)


def test_each_member_scores_its_own_training_subset(tmp_path):
    config = tiny_config(**{"sweep.train_subset": (100, 200), "evaluation.train_examples": 50})
    run = engine.build(config)
    state = run.init()
    # The loss, not the accuracy: at init two subsets' accuracies may coincide by chance.
    scored = run.evaluate(state, [run.evaluator("on_train")])["on_train"]["loss"]
    alone = [engine.build(override(config, {"sweep.train_subset": (size,)})) for size in
             (100, 200)]
    for member, single in enumerate(alone):
        own = single.evaluate(single.init(), [single.evaluator("on_train")])
        assert float(scored[member]) == pytest.approx(float(own["on_train"]["loss"][0]))
    assert float(scored[0]) != pytest.approx(float(scored[1]))  # two different subsets


def test_a_bn_nets_probes_record_the_probed_units_gamma_and_beta(tmp_path):
    config = tiny_config(**{"probe.units": (1, 3)})
    result = engine.train_and_evaluate(config, tmp_path)
    params = result.state.params["BatchNorm_1"]
    last = result.history[-1]
    np.testing.assert_allclose(last["probe_bn_scale"], [np.asarray(params["scale"])[0, [1, 3]]],
                               rtol=1e-6)
    np.testing.assert_allclose(last["probe_bn_bias"], [np.asarray(params["bias"])[0, [1, 3]]],
                               rtol=1e-6, atol=1e-7)
    assert result.history[0]["probe_bn_scale"] == [[1.0, 1.0]]
    assert "probe_bn_scale" not in result.summary["members"][0]


def test_a_net_without_bn_reports_only_the_deterministic_network(tmp_path):
    config = tiny_config(**{"model.norm": None, "evaluation.final": ("ema", "settled_ema")})
    result = engine.train_and_evaluate(config, tmp_path)
    assert result.summary["evaluators"] == ["deterministic"]
    assert result.summary["bn_statistics"] is None


@pytest.mark.parametrize("statistics", ["ema", "population"])
def test_evaluations_use_the_configured_bn_statistics(tmp_path, statistics):
    config = tiny_config(**{"evaluation.bn_statistics": statistics,
                            "evaluation.final": ("ema", "population")})
    result = engine.train_and_evaluate(config, tmp_path)
    final = result.summary["members"][0]
    assert result.history[-1]["accuracy"] == final[f"accuracy_{statistics}"]


def test_two_runs_with_the_same_seed_give_identical_metrics(tmp_path):
    first = engine.train_and_evaluate(tiny_config(), tmp_path / "a")
    second = engine.train_and_evaluate(tiny_config(), tmp_path / "b")
    assert first.history == second.history and first.summary == second.summary


def test_overfits_a_tiny_dataset(tmp_path):
    config = tiny_config(**{
        "num_steps": 300, "eval_every": 100, "train_subset": 100, "model.norm": None,
        "model.activation": "relu", "optimizer.momentum": 0.9, "optimizer.learning_rate": 0.05,
    })
    result = engine.train_and_evaluate(config, tmp_path)
    losses = [r["train_loss"] for r in result.history if r["train_loss"] is not None]
    assert losses[-1] < 0.1 * losses[0]


def test_the_reconstruction_task_overfits_a_tiny_set(tmp_path):
    config = tiny_config(**{
        "task.name": "reconstruction", "task.reconstruction_loss": "squared_error",
        "model.name": "autoencoder", "model.norm": None, "model.activation": "relu",
        "model.hidden_sizes": (64,), "train_subset": 64, "optimizer.momentum": 0.9,
        "optimizer.learning_rate": 0.02, "num_steps": 400, "eval_every": 200,
        "evaluation.final": (), "probe.histogram_range": (0.0, 4.0),
    })
    result = engine.train_and_evaluate(config, tmp_path)
    losses = [r["train_loss"] for r in result.history if r["train_loss"] is not None]
    assert losses[-1] < 0.05 * result.history[0]["loss"]
    assert set(result.history[-1]) >= {"loss", "reconstruction_error",
                                       "reconstruction_error_deterministic"}
    assert "accuracy" not in result.history[-1]


def test_monte_carlo_approaches_weight_scaling_as_k_grows(tmp_path):
    config = tiny_config(**{
        "model.norm": None, "model.activation": "relu", "model.hidden_sizes": (64, 64),
        "model.hidden_dropout": 0.5, "optimizer.momentum": 0.9, "optimizer.learning_rate": 0.05,
        "num_steps": 400, "eval_every": 400, "sweep.seed": (0, 1, 2),
        "evaluation.final": ("monte_carlo",), "evaluation.monte_carlo_samples": (1, 100),
    })
    members = engine.train_and_evaluate(config, tmp_path).summary["members"]
    for member in members:
        gap_1, gap_100 = (abs(member[f"error_mc_k{k}"] - member["error"]) for k in (1, 100))
        assert gap_100 < gap_1 and gap_100 < 0.03


def test_steps_per_compiled_call_change_nothing_but_the_calls(tmp_path, monkeypatch):
    calls = []
    train = engine.Engine.train

    def recording(self, state, order, num_steps):
        calls.append(num_steps)
        return train(self, state, order, num_steps)

    monkeypatch.setattr(engine.Engine, "train", recording)
    runs = []
    for steps_per_call in (0, 7):
        calls.clear()
        runs.append(engine.train_and_evaluate(tiny_config(steps_per_call=steps_per_call),
                                              tmp_path / str(steps_per_call)))
        # 60 steps, evaluations every 20: one call per interval, or calls of 7, 7, 6.
        assert calls == ([20] * 3 if steps_per_call == 0 else [7, 7, 6] * 3)
    assert runs[0].history == runs[1].history and runs[0].summary == runs[1].summary


@pytest.mark.parametrize(
    "first, change, refusal",
    [
        ({}, {"progress": True}, None),
        ({}, {"steps_per_call": 7}, None),
        ({}, {"tensorboard": True}, None),  # the events are written from the kept metrics
        ({}, {"optimizer.learning_rate": 0.25}, "holds a run with a different configuration"),
        # Turning events off would leave those of the first attempt stale.
        ({"tensorboard": True}, {"tensorboard": False}, "holds TensorBoard events"),
    ],
)
def test_a_workdir_resumes_only_a_run_of_the_same_configuration(tmp_path, first, change,
                                                                 refusal):
    uninterrupted = engine.train_and_evaluate(tiny_config(checkpoint_every=20, **first), tmp_path)
    # As if stopped after step 40: the last checkpoint and the outputs of the end are gone.
    shutil.rmtree(tmp_path / engine.CHECKPOINT_DIR / "60")
    (tmp_path / engine.SUMMARY_FILE).unlink()
    again = tiny_config(checkpoint_every=20, **{**first, **change})
    if refusal is None:
        resumed = engine.train_and_evaluate(again, tmp_path)
        assert resumed.history == uninterrupted.history
        assert resumed.summary == uninterrupted.summary
    else:
        with pytest.raises(ValueError, match=refusal):
            engine.train_and_evaluate(again, tmp_path)


def test_a_run_written_before_a_config_key_existed_resumes_with_its_default(tmp_path):
    config = tiny_config(checkpoint_every=20)
    first = engine.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / engine.CONFIG_FILE).read_text())
    del saved["nonfinite"], saved["optimizer"]["dampening"]  # as an older bnreg wrote it
    (tmp_path / engine.CONFIG_FILE).write_text(json.dumps(saved))
    assert engine.train_and_evaluate(config, tmp_path).summary == first.summary


def test_a_workdir_without_checkpoints_refuses_another_config(tmp_path):
    engine.train_and_evaluate(tiny_config(), tmp_path)
    with pytest.raises(ValueError, match="holds a run with a different configuration"):
        engine.train_and_evaluate(tiny_config(**{"optimizer.learning_rate": 0.25}), tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sweep.train_subset": (64, 5000)}, "must lie between the batch size"),
        ({"sweep.train_subset": (16, 64)}, "must lie between the batch size"),
        ({"batch_size": 5000}, "exceeds the 1497 training examples"),
        ({"evaluation.final": ("gaussian",)}, "needs a net with DropConnect"),
        ({"model.name": "inception", "model.dropconnect": 0.5}, "masks the dense hidden"),
        ({"model.name": "convnet", "model.hidden_sizes": (), "model.dropconnect": 0.5},
         "masks the dense hidden"),
        ({"validation_fraction": 1e-6}, "is 0 examples"),
        ({"task.name": "reconstruction", "model.name": "autoencoder",
          "evaluation.final": ("monte_carlo",)}, "needs the classification task"),
        # An EMA of momentum 1 never moves, so it never settles.
        ({"model.bn_momentum": 1.0, "evaluation.final": ("settled_ema",)},
         "needs a BN momentum below 1"),
        ({"sweep.bn_momentum": (0.9, 0.99), "model.norm": None}, "the net has no BN"),
        ({"probe.layers": (5,)}, "must index the model's 2 hidden layers"),
        ({"probe.units": (0, 16)}, "the narrowest has 16"),
        ({"evaluation.train_examples": 10_000}, "exceeds the 1497 examples"),
        ({"evaluation.train_examples": 300, "sweep.train_subset": (0, 200)},
         r"exceeds the smallest member's training subset \(200\)"),
        ({"evaluation.subset": 300}, "must be smaller than the 300 examples"),
        ({"evaluation.full_steps": (20,)}, "subset > 0"),
        ({"evaluation.subset": 100, "evaluation.full_steps": (30,)}, "multiples of"),
        ({"train_subset": 5000}, r"config.train_subset \(or config.sweep.train_subset\)"),
        ({"optimizer.learning_rate": float("nan")}, "learning_rate must be finite"),
        ({"model.hidden_sizes": ()}, "must index the model's 0 hidden layers"),
        ({"model.activation": "gelu"}, "config.model.activation must be one of"),
        ({"model.bn_epsilon": 0.0}, "bn_epsilon must be finite and > 0"),
    ],
)
def test_bad_input_is_an_error_before_anything_compiles(tmp_path, overrides, message):
    compiled = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _, **kwargs: compiled.append(event) if "compile" in event else None
    )
    with pytest.raises(ValueError, match=message):
        engine.train_and_evaluate(tiny_config(**overrides), tmp_path / "run")
    assert not compiled
    assert not (tmp_path / "run").exists()


def exploding_learning_rate_at(boundary: int, **overrides):
    """A run whose learning rate jumps to 5e37 at step ``boundary``, whose update blows the
    weights up."""
    return tiny_config(num_steps=100, eval_every=20, checkpoint_every=20, **{
        "optimizer.schedule": "step", "optimizer.step_boundaries": (boundary,),
        "optimizer.step_factor": 1e38, **overrides,
    })


@pytest.mark.parametrize(
    "boundary, message",
    [
        # The update of step 44 breaks the weights: step 45's loss is the first non-finite one.
        (44, "Non-finite training loss at step 45 "),
        # The update of step 59, the last before the evaluation and checkpoint at 60, breaks
        # them: every training loss of the chunk is finite, the evaluation's is not.
        (59, "Non-finite test loss at the evaluation of step 60 "),
    ],
)
@pytest.mark.parametrize("steps_per_call", [0, 7])
def test_non_finite_training_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, boundary, message, steps_per_call
):
    config = exploding_learning_rate_at(boundary, steps_per_call=steps_per_call)
    with pytest.raises(engine.NonFiniteLossError, match=re.escape(message)) as error:
        engine.train_and_evaluate(config, tmp_path)
    assert "The last good checkpoint (step 40) is kept" in str(error.value)
    checkpoints = sorted(int(p.name) for p in (tmp_path / engine.CHECKPOINT_DIR).iterdir())
    assert checkpoints == [20, 40]
    history = [json.loads(line) for line in (tmp_path / engine.METRICS_FILE).open()]
    assert history[-1]["step"] == 40
    assert all(np.isfinite(record["loss"]) for record in history)


def test_a_recorded_divergence_trains_on_with_nan_metrics_beside_the_finite_members(tmp_path):
    config = exploding_learning_rate_at(44, nonfinite="record",
                                        **{"sweep.learning_rate": (0.5, 0.05)})
    result = engine.train_and_evaluate(config, tmp_path)
    last = {record["learning_rate"]: record for record in result.history if record["step"] == 100}
    # Both members' rates jump ×1e38 at step 44; 0.5 blows up, 0.05 (5e36) may not: each is
    # recorded as it is, and the run ends.
    assert np.isnan(last[0.5]["loss"]) and np.isnan(last[0.5]["train_loss"])
    # Not the ~0.9 that the argmax of NaN logits (class 0) would give.
    assert np.isnan(last[0.5]["error"]) and np.isnan(last[0.5]["accuracy"])
    assert [m["learning_rate"] for m in result.summary["members"]] == [0.5, 0.05]


def test_on_train_scores_the_first_training_examples_with_the_deterministic_network():
    config = tiny_config(**{"evaluation.train_examples": 300, "sweep.seed": (0, 1)})
    run = engine.build(config)
    state = run.init()
    state, _, _ = run.train(state, run.empty_order(), 30)
    results = run.evaluate(state, run.during)
    assert [e.name for e in run.during] == ["population", "on_train"]
    statistics = run.statistics(state, "population")
    for member in range(2):
        variables = {"params": jax.tree.map(lambda x, m=member: x[m], state.params),
                     "batch_stats": jax.tree.map(lambda x, m=member: x[m], statistics)}
        logits = run.network.model.apply(variables, run.data.train.images[:300],
                                         bn_mode="inference", noise=False)
        accuracy = np.mean(np.argmax(logits, -1) == run.data.train.labels[:300])
        np.testing.assert_allclose(results["on_train"]["accuracy"][member], accuracy, atol=1e-6)


@pytest.mark.parametrize("standardize", ["none", "per_pixel"])
def test_on_test_scores_the_test_split_beside_the_validation_split(standardize):
    """With a validation split, on_test scores the test split, preprocessed with the training
    split's statistics: a trained state's on_test accuracy is the deterministic network's on
    the dataset's test images."""
    config = tiny_config(**{"validation_fraction": 0.2, "evaluation.test_too": True,
                            "evaluation.train_examples": 100, "standardize": standardize})
    run = engine.build(config)
    state, _, _ = run.train(run.init(), run.empty_order(), 30)
    assert [e.name for e in run.during] == ["population", "on_train", "on_test"]
    results = run.evaluate(state, run.during)
    raw = data.load_dataset("digits")
    train, _ = data.train_validation_split(raw.train, len(run.data.evaluation.labels), seed=0)
    test = raw.test
    if standardize != "none":
        images = data.standardize(train.images, test.images, per_pixel=True)[1]
        test = data.Split(images, test.labels)
    np.testing.assert_array_equal(run.data.test.images, test.images)
    assert run.split == "validation" and len(run.data.evaluation.labels) != len(test.labels)
    statistics = run.statistics(state, "population")
    variables = {"params": jax.tree.map(lambda x: x[0], state.params),
                 "batch_stats": jax.tree.map(lambda x: x[0], statistics)}
    logits = run.network.model.apply(variables, test.images, bn_mode="inference", noise=False)
    np.testing.assert_allclose(results["on_test"]["accuracy"][0],
                               np.mean(np.argmax(logits, -1) == test.labels), atol=1e-6)


def test_a_zipped_drop_rate_that_repeats_its_value_is_the_models_rate():
    """Two members at learning rates 0.1 and 0.3, both at drop rate 0.5 (a zipped axis that
    repeats its value is not traced): the model drops at 0.5, not at config.model's 0."""
    config = tiny_config(**{"sweep.learning_rate": (0.1, 0.3), "sweep.hidden_dropout": (0.5, 0.5),
                            "sweep_zip": (("learning_rate", "hidden_dropout"),)})
    run = engine.build(config)
    assert "hidden_dropout" not in run.members.traced_axes
    assert config.model.hidden_dropout == 0.0 and run.network.model.hidden_dropout == 0.5


def test_test_too_without_a_validation_split_is_an_error():
    with pytest.raises(ValueError, match="already scores the test split"):
        engine.build(tiny_config(**{"evaluation.test_too": True}))


def test_max_norm_keeps_every_hidden_column_within_c_throughout_training():
    config = tiny_config(**{"model.norm": None, "model.activation": "relu",
                            "optimizer.learning_rate": 5.0, "optimizer.max_norm": 1.5})
    run = engine.build(config)
    state, order = run.init(), run.empty_order()
    largest = {"hidden": 0.0, "output": 0.0}
    for _ in range(40):  # one step per call: the bound is checked after every update
        state, order, _ = run.train(state, order, 1)
        for name, layer in state.params.items():
            norms = jnp.linalg.norm(layer["kernel"][0], axis=0)
            kind = "output" if name == OUTPUT_LAYER else "hidden"
            largest[kind] = max(largest[kind], float(norms.max()))
            if kind == "hidden":
                assert float(norms.max()) <= 1.5 * (1 + 1e-6), name
    # The constraint binds, so the bound is the projection's doing; the output layer is free.
    assert largest["hidden"] >= 1.5 * (1 - 1e-6)
    assert largest["output"] > 1.5 * 2


def test_a_group_trains_each_override_in_its_own_directory(tmp_path):
    results = engine.train_group(tiny_config(), {"bn": {"model.norm": "batch"},
                                                 "plain": {"model.norm": None}}, tmp_path)
    assert list(results) == ["bn", "plain"]
    assert results["bn"].summary["bn_statistics"] == "population"
    assert results["plain"].summary["bn_statistics"] is None
    assert (tmp_path / "plain" / engine.SUMMARY_FILE).is_file()


def test_a_groups_progress_bars_name_each_run(tmp_path, monkeypatch):
    from bnreg.engine import run as run_module

    descriptions = []

    class Recorded(run_module.Progress):
        def __init__(self, **kwargs):
            descriptions.append(kwargs["description"])
            super().__init__(**kwargs)

    monkeypatch.setattr(run_module, "Progress", Recorded)
    engine.train_group(tiny_config(num_steps=20), {"bn": {}, "plain": {"model.norm": None}},
                       tmp_path / "sweep")
    assert sorted(d.split("/", 1)[1] for d in descriptions) == [
        "sweep/bn: digits × 1 members", "sweep/plain: digits × 1 members"]


def test_a_run_that_had_ended_returns_its_summary_without_evaluating_again(tmp_path,
                                                                          monkeypatch):
    config = tiny_config(checkpoint_every=20)
    first = engine.train_and_evaluate(config, tmp_path)
    evaluated = []
    original = engine.Engine.evaluate
    monkeypatch.setattr(engine.Engine, "evaluate",
                        lambda self, *args: evaluated.append(args) or original(self, *args))
    again = engine.train_and_evaluate(config, tmp_path)
    assert again.summary == first.summary and again.history == first.history
    assert len(evaluated) == 0


def test_an_ended_run_without_checkpoints_returns_its_records_without_training(tmp_path,
                                                                                monkeypatch):
    first = engine.train_and_evaluate(tiny_config(), tmp_path)  # checkpoint_every=0
    monkeypatch.setattr(engine.Engine, "train", lambda *args: pytest.fail("trained again"))
    monkeypatch.setattr(engine.Engine, "evaluate", lambda *args: pytest.fail("evaluated"))
    again = engine.train_and_evaluate(tiny_config(), tmp_path)
    assert again.summary == first.summary and again.history == first.history
    assert again.state is None


def test_a_run_trained_again_drops_its_old_summary_before_training(tmp_path, monkeypatch):
    """A summary whose digest disagrees is retrained; killed in that training, the run leaves no
    summary beside its cut records."""
    engine.train_and_evaluate(tiny_config(), tmp_path)
    (tmp_path / engine.SUMMARY_FILE).write_text("{}")  # its digest no longer agrees

    def killed(*args):
        raise KeyboardInterrupt

    from bnreg.engine import run as run_module

    monkeypatch.setattr(run_module, "_train_interval", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.train_and_evaluate(tiny_config(), tmp_path)
    assert not (tmp_path / engine.SUMMARY_FILE).exists()


def test_more_runs_than_devices_make_one_run_at_a_time_per_share(tmp_path, monkeypatch):
    import threading

    from bnreg.engine import run as run_module

    running, most, made = {}, {}, {}
    lock = threading.Lock()

    def fake_run(config, workdir, *, devices, progress_position):
        (device,) = devices
        with lock:
            running[device] = running.get(device, 0) + 1
            most[device] = max(most.get(device, 0), running[device])
        time.sleep(0.2 if progress_position == 0 else 0.02)  # one long run, five short
        with lock:
            running[device] -= 1
            made[progress_position] = device
        return progress_position

    monkeypatch.setattr(run_module.jax, "local_devices", lambda: ["cpu0", "cpu1"])
    monkeypatch.setattr(run_module, "train_and_evaluate", fake_run)
    results = engine.train_concurrently([(tiny_config(), tmp_path / str(i)) for i in range(6)])
    assert results == list(range(6))
    assert most == {"cpu0": 1, "cpu1": 1}
    # The short runs all went to the share the long run did not hold.
    assert made == {0: "cpu0", **{index: "cpu1" for index in range(1, 6)}}


@pytest.mark.parametrize(
    "bad, message",
    [({"model.nrom": None}, "has no key 'nrom'"),
     # Valid as a config, but its net cannot have the evaluator: found before "good" trains.
     ({"model.norm": "batch"}, "needs a net with DropConnect")],
)
def test_a_group_checks_every_run_before_any_trains(tmp_path, bad, message):
    config = tiny_config(**{"model.norm": None, "model.dropconnect": 0.5,
                            "evaluation.final": ("gaussian",)})
    with pytest.raises(ValueError, match=message):
        engine.train_group(config, {"good": {}, "bad": bad}, tmp_path)
    assert not tmp_path.joinpath("good").exists()


def test_a_net_without_hidden_layers_trains_without_probes(tmp_path):
    config = tiny_config(**{"model.hidden_sizes": (), "model.norm": None, "probe.layers": ()})
    result = engine.train_and_evaluate(config, tmp_path)
    assert "probe_percentiles" not in result.history[-1]
    assert result.history[-1]["accuracy"] > 0.5


def test_an_evaluator_is_found_by_its_column_or_its_config_name():
    run = engine.build(tiny_config(**{"evaluation.final": ("ema",)}))
    assert run.evaluator("deterministic") == run.evaluator("population") == run.primary
    with pytest.raises(ValueError, match=r"has no evaluator 'mc_k5'; it has \['population', "
                                          r"'ema'\]"):
        run.evaluator("mc_k5")


def run_subprocess(script: str, *args: str, devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               XLA_FLAGS=f"{os.environ['XLA_FLAGS']} "
                         f"--xla_force_host_platform_device_count={devices}")
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


SHARDED_SCRIPT = """
    import json, sys
    from conftest import tiny_config
    from bnreg import engine
    result = engine.train_and_evaluate(
        tiny_config(checkpoint_every=20, **{"sweep.seed": (0, 1)}), sys.argv[1])
    kernel = result.state.params["Dense_0"]["kernel"]
    print(json.dumps({"devices": len(kernel.sharding.device_set), "history": result.history}))
"""


@pytest.mark.integration
def test_members_sharded_over_two_cpu_devices_match_one_device(tmp_path):
    outputs = {n: run_subprocess(SHARDED_SCRIPT, str(tmp_path / str(n)), devices=n)
               for n in (1, 2)}
    assert outputs[1]["devices"] == 1 and outputs[2]["devices"] == 2
    for one, two in zip(outputs[1]["history"], outputs[2]["history"], strict=True):
        assert (one["step"], one["member"]) == (two["step"], two["member"])
        np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-4)


CONCURRENT_SCRIPT = """
    import json, sys
    import jax
    from conftest import tiny_config
    from bnreg import engine
    workdir = sys.argv[1]
    configs = [tiny_config(checkpoint_every=20, **{"sweep.seed": (0, 1)}),
               tiny_config(checkpoint_every=20, **{"model.norm": None})]
    runs = [(config, f"{workdir}/together{i}") for i, config in enumerate(configs)]
    together = engine.train_concurrently(runs)
    again = engine.train_concurrently(runs)  # each run resumes onto its own device
    alone = [engine.train_and_evaluate(config, f"{workdir}/alone{i}", devices=[device])
             for i, (config, device) in enumerate(zip(configs, jax.devices()))]
    try:
        engine.train_concurrently([(tiny_config(), f"{workdir}/good"),
                                   (tiny_config(batch_size=5000), f"{workdir}/bad")])
        error = None
    except ValueError as raised:
        error = str(raised)
    print(json.dumps({
        "error": error,
        "devices": [[d.id for d in r.state.params["Dense_0"]["kernel"].sharding.device_set]
                    for r in together],
        "together": [[r.history, r.summary] for r in together],
        "again": [[r.history, r.summary] for r in again],
        "alone": [[r.history, r.summary] for r in alone],
    }))
"""


@pytest.mark.integration
def test_concurrent_runs_on_two_devices_equal_runs_made_alone_and_raise_errors(tmp_path):
    output = run_subprocess(CONCURRENT_SCRIPT, str(tmp_path), devices=2)
    assert output["devices"] == [[0], [1]]
    assert output["together"] == output["alone"] == output["again"]
    # A run with bad input is refused before any run of the group trains.
    assert "batch_size" in output["error"]
    assert not (tmp_path / "good").exists()


RUN_SCRIPT = """
    import json, sys
    from conftest import tiny_config
    from bnreg import engine
    config = tiny_config(num_steps=3000, eval_every=50, checkpoint_every=100, tensorboard=True,
                         **{"sweep.seed": (0, 1), **json.loads(sys.argv[2])})
    engine.train_and_evaluate(config, sys.argv[1])
"""


def start_run(workdir: Path, overrides: dict | None = None, devices: int = 1) -> subprocess.Popen:
    """The run of RUN_SCRIPT (with ``overrides``) in ``workdir``, on ``devices`` CPU devices."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               XLA_FLAGS=f"{os.environ['XLA_FLAGS']} "
                         f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(RUN_SCRIPT), str(workdir),
                             json.dumps(overrides or {})], env=env)


@pytest.mark.integration
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    assert_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path)


def assert_resume_after_sigkill_equals_an_uninterrupted_run(
    tmp_path: Path, overrides: dict | None = None, devices: int = 1
) -> None:
    from test_tensorboard_events import read_events

    uninterrupted = tmp_path / "uninterrupted"
    assert start_run(uninterrupted, overrides, devices).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    process = start_run(killed, overrides, devices)
    checkpoints = killed / engine.CHECKPOINT_DIR
    deadline = time.monotonic() + 120
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0.0, 0.5))
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / engine.SUMMARY_FILE).exists()
    assert start_run(killed, overrides, devices).wait(timeout=300) == 0
    for name in (engine.METRICS_FILE, engine.SUMMARY_FILE):
        assert (killed / name).read_text() == (uninterrupted / name).read_text()
    tensorboard = engine.writers.TENSORBOARD_DIR
    assert read_events(killed / tensorboard) == read_events(uninterrupted / tensorboard)
