"""TensorBoard events: the metrics records, one TensorBoard run per member."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from bnreg import engine
from bnreg.engine.writers import TENSORBOARD_DIR, member_run_name

# The final metrics of a BN run evaluated with Alg. 2's statistics and, at the end, also the
# EMA's and the settled EMA's: the primary's under plain names, then every evaluator's.
FINAL_METRICS = tuple(
    f"{metric}{suffix}"
    for suffix in ("", "_population", "_ema", "_settled_ema")
    for metric in ("loss", "accuracy", "error")
)


def read_events(directory: Path) -> dict[str, dict[tuple[str, int], object]]:
    """Per TensorBoard run (sub-directory): ``(tag, step) -> value``, the value a float for a
    scalar and the bucket counts for a histogram; read with TensorFlow's own event reader."""
    import tensorflow as tf

    runs = {}
    for run in sorted(p for p in directory.iterdir() if p.is_dir()):
        values = {}
        for path in sorted(run.glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    key = (value.tag, event.step)
                    assert key not in values, f"{key} written twice in {run.name}"
                    values[key] = (
                        tuple(value.histo.bucket) if value.HasField("histo") else value.simple_value
                    )
        runs[run.name] = values
    return runs


@pytest.fixture(scope="module")
def run_with_events(tmp_path_factory):
    """``(workdir, config, result, events)`` of a run of four members (two learning rates ×
    two seeds) with TensorBoard events."""
    workdir = tmp_path_factory.mktemp("events")
    config = tiny_config(**{
        "tensorboard": True,
        "sweep.seed": (0, 1),
        "sweep.learning_rate": (0.5, 0.25),
        "evaluation.final": ("ema", "settled_ema"),
        "probe.histogram_bins": 8,
        "probe.layers": (0, -1),
    })
    result = engine.train_and_evaluate(config, workdir)
    return workdir, config, result, read_events(workdir / TENSORBOARD_DIR)


def member_events(run_with_events, member) -> dict[tuple[str, int], object]:
    """The events of the member (a record or a summary entry) named by its axis values."""
    _, _, result, runs = run_with_events
    return runs[member_run_name(member, result.members.swept)]


@pytest.mark.parametrize(
    "swept,name",
    [(("learning_rate", "seed"), "lr=0.1,seed=0"), (("seed",), "seed=0"), ((), "seed=0"),
     (("hidden_dropout",), "hidden_dropout=0.5,seed=0")],
)
def test_a_member_run_is_named_by_its_swept_values_and_its_seed(swept, name):
    member = {"learning_rate": 0.1, "hidden_dropout": 0.5, "seed": 0}
    assert member_run_name(member, swept) == name


def test_members_with_close_learning_rates_are_distinct_tensorboard_runs():
    swept = ("learning_rate", "seed")
    assert member_run_name({"learning_rate": 0.1, "seed": 0}, swept) != member_run_name(
        {"learning_rate": 0.1000001, "seed": 0}, swept
    )


def test_every_member_is_a_tensorboard_run(run_with_events):
    _, _, result, runs = run_with_events
    assert set(runs) == {"lr=0.5,seed=0", "lr=0.5,seed=1", "lr=0.25,seed=0", "lr=0.25,seed=1"}
    assert {member_run_name(m, result.members.swept) for m in result.members} == set(runs)


@pytest.mark.parametrize(
    "field", ["train_loss", "loss", "accuracy", "error", "loss_population", "accuracy_population"]
)
def test_scalar_events_equal_the_metrics_records(run_with_events, field):
    records = [r for r in run_with_events[2].history if r[field] is not None]
    assert records
    for record in records:
        events = member_events(run_with_events, record)
        assert events[(field, record["step"])] == pytest.approx(record[field], rel=1e-6)


def test_probe_percentile_events_name_their_unit_percentile_and_layer(run_with_events):
    _, config, result, _ = run_with_events
    for record in result.history:
        events = member_events(run_with_events, record)
        # The run probes layers (0, -1) of its two hidden layers: tags count them from 0.
        for layer, table in zip((0, 1), record["probe_percentiles"], strict=True):
            for unit, row in zip(config.probe.units, table, strict=True):
                for q, value in zip(config.probe.percentiles, row, strict=True):
                    tag = f"probe_percentiles/layer{layer}/unit{unit}/p{q:g}"
                    assert events[(tag, record["step"])] == pytest.approx(value, rel=1e-6)


def test_mean_activation_events_are_per_layer(run_with_events):
    for record in run_with_events[2].history:
        events = member_events(run_with_events, record)
        assert len(record["mean_activation"]) == 2
        for layer, value in enumerate(record["mean_activation"]):
            assert events[(f"mean_activation/layer{layer}", record["step"])] == pytest.approx(
                value, rel=1e-6
            )


def test_histogram_events_hold_the_records_counts(run_with_events):
    for record in run_with_events[2].history:
        events = member_events(run_with_events, record)
        assert len(record["activation_histogram"]) == 2
        for layer, counts in enumerate(record["activation_histogram"]):
            written = events[(f"activation_histogram/layer{layer}", record["step"])]
            np.testing.assert_allclose(written, counts, rtol=1e-6)


def test_the_summarys_final_metrics_are_final_events_at_the_last_step(run_with_events):
    summary = run_with_events[2].summary
    for member in summary["members"]:
        events = member_events(run_with_events, member)
        finals = {tag: value for tag, value in events.items() if tag[0].startswith("final/")}
        expected = {(f"final/{name}", summary["num_steps"]): member[name] for name in FINAL_METRICS}
        assert finals == pytest.approx(expected)


def test_no_events_unless_asked(tmp_path):
    engine.train_and_evaluate(tiny_config(num_steps=20), tmp_path)
    assert (tmp_path / engine.METRICS_FILE).exists()
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_a_run_without_events_refuses_a_workdir_with_stale_events(run_with_events, tmp_path):
    shutil.copytree(run_with_events[0] / TENSORBOARD_DIR, tmp_path / TENSORBOARD_DIR)
    shutil.copy(run_with_events[0] / engine.MARKER_FILE, tmp_path)  # an engine run's dir
    with pytest.raises(ValueError, match="TensorBoard events of an earlier attempt"):
        engine.train_and_evaluate(tiny_config(num_steps=20), tmp_path)
