"""TensorBoard events: the metrics records, one TensorBoard run per member."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train import tiny_config

from bnreg import train
from bnreg.tensorboard_events import TENSORBOARD_DIR, member_run_name


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
    workdir = tmp_path_factory.mktemp("events")
    config = tiny_config(
        tensorboard=True, seeds=(0, 1), **{"probe.histogram_bins": 8, "probe.layers": (0, -1)}
    )
    return workdir, config, train.train_and_evaluate(config, workdir)


def test_members_with_close_learning_rates_are_distinct_tensorboard_runs():
    assert member_run_name(0.1, 0) != member_run_name(0.1000001, 0)
    assert member_run_name(0.1, 0) == "lr=0.1,seed=0"


def test_every_member_is_a_tensorboard_run(run_with_events):
    workdir, _, result = run_with_events
    names = {member_run_name(m.learning_rate, m.seed) for m in result.members}
    assert set(read_events(workdir / TENSORBOARD_DIR)) == names


@pytest.mark.parametrize("field", ["train_loss", "test_loss", "test_accuracy"])
def test_scalar_events_equal_the_metrics_records(run_with_events, field):
    workdir, _, result = run_with_events
    runs = read_events(workdir / TENSORBOARD_DIR)
    records = [r for r in result.history if r[field] is not None]
    assert records
    for record in records:
        events = runs[member_run_name(record["learning_rate"], record["seed"])]
        assert events[(field, record["step"])] == pytest.approx(record[field], rel=1e-6)


def test_probe_events_name_their_unit_percentile_and_layer(run_with_events):
    workdir, config, result = run_with_events
    runs = read_events(workdir / TENSORBOARD_DIR)
    for record in result.history:
        events = runs[member_run_name(record["learning_rate"], record["seed"])]
        step = record["step"]
        # The run probes layers (0, -1) of its two hidden layers: tags count them from 0.
        for layer, table in zip((0, 1), record["probe_percentiles"], strict=True):
            for unit, row in zip(config.probe.units, table, strict=True):
                for q, value in zip(config.probe.percentiles, row, strict=True):
                    tag = f"probe_percentiles/layer{layer}/unit{unit}/p{q:g}"
                    assert events[(tag, step)] == pytest.approx(value, rel=1e-6)
        for layer, value in enumerate(record["mean_activation"]):
            assert events[(f"mean_activation/layer{layer}", step)] == pytest.approx(value, rel=1e-6)
        for layer, counts in enumerate(record["activation_histogram"]):
            written = events[(f"activation_histogram/layer{layer}", step)]
            np.testing.assert_allclose(written, counts, rtol=1e-6)


def test_final_accuracies_are_events_at_the_last_step(run_with_events):
    workdir, _, result = run_with_events
    runs = read_events(workdir / TENSORBOARD_DIR)
    summary = result.summary
    names = {"test_accuracy_ema", "test_accuracy_settled_ema", "test_accuracy_population"}
    for member in summary["members"]:
        events = runs[member_run_name(member["learning_rate"], member["seed"])]
        for name in names:
            assert events[(f"final/{name}", summary["num_steps"])] == pytest.approx(member[name])


def test_no_events_unless_asked(tmp_path):
    train.train_and_evaluate(tiny_config(num_steps=20), tmp_path)
    assert (tmp_path / train.METRICS_FILE).exists()
    assert not (tmp_path / TENSORBOARD_DIR).exists()
