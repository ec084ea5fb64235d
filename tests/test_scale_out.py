"""Data parallelism over device meshes (bnreg.engine.devices), on forced host CPU devices:
synchronised BN equals one device with the same global batch, ghost BN keeps its statistics
on the device, a members × data mesh trains the members of the members-only layout, several
processes equal one, and bad meshes are errors before anything compiles."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, tiny_config
from test_engine_run import assert_resume_after_sigkill_equals_an_uninterrupted_run

from bnreg import engine

# Losses of runs laid out differently agree to float rounding: XLA sums the batch's terms in
# another order on each layout; over 60 steps of these tiny nets that stays below this.
RTOL = 1e-4
GRADIENT_RTOL = 1e-5

MESH_SCRIPT = """
    import json, re, sys
    import jax
    import numpy as np
    from conftest import tiny_config
    from bnreg import engine
    from bnreg.config import override

    workdir = sys.argv[1]

    def first_batch_gradients(run, state):
        # Member 0's loss, gradients and BN statistics on the first 32 training examples, the
        # batch split over the run's data axis.
        network = run.network
        member = jax.tree.map(lambda x: x[0], state._replace(step=None))
        sharding = run.layout.batch_sharding(False)
        images = jax.device_put(run.data.train.images[:32], sharding)
        labels = jax.device_put(run.data.train.labels[:32], sharding)

        def loss(params):
            outputs, updates = network.model.apply(
                {"params": params, "batch_stats": member.batch_stats}, images, bn_mode="batch",
                noise=False, mutable=["batch_stats"])
            return network.task.loss(outputs, images, labels), updates

        (value, updates), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
            member.params)
        return {"loss": float(value),
                "gradients": [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)],
                "batch_stats": [np.asarray(x).ravel().tolist()
                                for x in jax.tree.leaves(updates)]}
    # Hidden widths unlike the batch shares, so the compiled products say which is which.
    seeds = {"sweep.seed": (0, 1), "model.hidden_sizes": (24, 20), "num_steps": 40}
    layouts = {
        "one_device": ({}, jax.devices()[:1]),
        "data2": ({"mesh.members": 1, "mesh.data": 2}, None),
        "data4": ({"mesh.members": 1, "mesh.data": 4}, None),
        "members2": ({"mesh.members": 2}, None),
        "members2_data2": ({"mesh.members": 2, "mesh.data": 2}, None),
        "ghost_one_device": ({"model.bn_ghost_size": 8}, jax.devices()[:1]),
        "ghost_data4": ({"mesh.members": 1, "mesh.data": 4, "model.bn_ghost_size": 8}, None),
    }
    output = {"histories": {}, "devices": {}, "first_batch": {}, "dot_batches": {},
              "chunk_programs": {},
              "all_reduces": {}, "errors": {}}
    bad = {
        "more_devices": {"mesh.data": 8},
        "members_and_data": {"mesh.members": 4, "mesh.data": 2},
        "batch": {"mesh.data": 3, "mesh.members": 1},
        "members": {"mesh.members": 3},
        "ghost": {"mesh.data": 2, "mesh.members": 1, "model.bn_ghost_size": 32},
    }
    # First, while nothing is compiled (or cached) yet: bad meshes compile nothing.
    compilations = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: compilations.append(event)
        if "compile" in event else None)
    for name, overrides in bad.items():
        try:
            engine.build(tiny_config(**seeds, **overrides))
        except ValueError as error:
            output["errors"][name] = str(error)
    output["compilations_of_bad_meshes"] = len(compilations)
    for name, (overrides, devices) in layouts.items():
        config = tiny_config(**seeds, **overrides)
        run = engine.build(config, devices)
        state, order = run.init(), run.empty_order()
        # The chunk train_and_evaluate compiles next (then a hit in the compilation cache).
        compiled = run.lower_train(state, order, config.eval_every).compile().as_text()
        output["dot_batches"][name] = sorted({int(m) for m in re.findall(
            r"= f32\\[(?:\\d+,)?(\\d+),24\\]\\{[^}]*\\} dot\\(", compiled)})
        output["all_reduces"][name] = compiled.count("all-reduce(")
        output["first_batch"][name] = first_batch_gradients(run, state)
        for _ in range(3):  # the state the chunk returns goes back in without a new program
            state, order, _ = run.train(state, order, config.eval_every)
        output["chunk_programs"][name] = run.train_programs
        result = engine.train_and_evaluate(config, f"{workdir}/{name}", devices=devices)
        output["histories"][name] = result.history
        kernel = result.state.params["Dense_0"]["kernel"]
        output["devices"][name] = len(kernel.sharding.device_set)
    # An Inception's members stay on one device (XLA:CPU computes them wrongly when split).
    conv = tiny_config(**{"sweep.seed": (0, 1, 2, 3), "model.name": "inception",
                          "model.norm": None, "model.inception_stem": 4,
                          "model.inception_modules": ((2, 2, 3, 2, 2, 2),),
                          "probe.layers": (), "optimizer.learning_rate": 0.05})
    output["conv"] = {}
    for name, devices in (("all_devices", None), ("one_device", jax.devices()[:1])):
        run = engine.build(conv, devices)
        state, order, conv_losses = run.train(run.init(), run.empty_order(), 5)
        output["conv"][name] = {"losses": np.asarray(conv_losses).tolist(),
                                "members_axis": run.layout.mesh.shape["members"]}
    try:
        engine.build(override(conv, {"mesh.members": 2}))
    except ValueError as error:
        output["errors"]["conv_members"] = str(error)
    # A run cut after its step-40 checkpoint, resumed on another mesh.
    import shutil
    longer = {**seeds, "num_steps": 60, "checkpoint_every": 20}
    config = tiny_config(**longer, **layouts["data2"][0])
    cut = engine.train_and_evaluate(config, f"{workdir}/moved").history
    shutil.rmtree(f"{workdir}/moved/{engine.CHECKPOINT_DIR}/60")
    moved = tiny_config(**longer, **layouts["members2"][0])
    output["moved"] = {"uninterrupted": cut,
                       "resumed": engine.train_and_evaluate(moved, f"{workdir}/moved").history}
    output["compilations_in_all"] = len(compilations)
    print(json.dumps(output))
"""


def run_script(script: str, *args: str, devices: int, extra_env=None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               XLA_FLAGS=f"{os.environ['XLA_FLAGS']} "
                         f"--xla_force_host_platform_device_count={devices}",
               **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def output_of(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    return output_of(run_script(MESH_SCRIPT, str(tmp_path_factory.mktemp("meshes")), devices=4))


def losses(history):
    return np.array([record["loss"] for record in history])


def assert_histories_agree(one, other):
    assert [(r["step"], r["member"]) for r in one] == [(r["step"], r["member"]) for r in other]
    np.testing.assert_allclose(losses(one), losses(other), rtol=RTOL)


@pytest.mark.integration
@pytest.mark.parametrize(("layout", "reference"), [
    ("data2", "one_device"), ("data4", "one_device"),
    # Ghosts of 8 on 4 devices: each device's share is one ghost, normalised by itself.
    ("ghost_data4", "ghost_one_device"),
])
def test_a_batch_split_over_devices_gives_one_devices_forward_and_gradients(meshes, layout,
                                                                            reference):
    one, split = meshes["first_batch"][reference], meshes["first_batch"][layout]
    np.testing.assert_allclose(split["loss"], one["loss"], rtol=GRADIENT_RTOL)
    for name in ("gradients", "batch_stats"):
        for a, b in zip(split[name], one[name], strict=True):
            # Relative to the array's largest entry: summed in another order, a small entry
            # carries the rounding of the large ones.
            assert np.abs(np.subtract(a, b)).max() <= GRADIENT_RTOL * np.abs(b).max()


@pytest.mark.integration
@pytest.mark.parametrize(("layout", "reference", "devices"), [
    # Synchronised BN: as one device with the same global batch.
    ("data2", "one_device", 2), ("data4", "one_device", 4),
    # Ghost BN: the same function on any mesh.
    ("ghost_data4", "ghost_one_device", 4),
    # A members × data mesh: the members of the members-only layout.
    ("members2_data2", "members2", 4),
])
def test_a_run_on_a_mesh_trains_as_on_its_reference_layout(meshes, layout, reference, devices):
    assert meshes["devices"][layout] == devices
    assert_histories_agree(meshes["histories"][layout], meshes["histories"][reference])


@pytest.mark.integration
@pytest.mark.parametrize(("layout", "per_device"), [("one_device", 32), ("data2", 16),
                                                     ("data4", 8), ("members2_data2", 16)])
def test_each_device_computes_its_share_of_the_batch(meshes, layout, per_device):
    # The (rows, 24) products of the compiled program: the first hidden layer's (a share of
    # the batch) and the weights' gradients (64 inputs, 20 units of the next layer).
    rows = set(meshes["dot_batches"][layout])
    assert per_device in rows
    assert not rows & {share for share in (32, 16, 8) if share > per_device}


@pytest.mark.integration
def test_a_run_resumes_on_another_mesh(meshes):
    resumed, uninterrupted = meshes["moved"]["resumed"], meshes["moved"]["uninterrupted"]
    # Steps 0–40 were read back from the file; step 60 was trained on the other mesh.
    assert_histories_agree(resumed, uninterrupted)


@pytest.mark.integration
def test_every_layout_compiles_its_training_chunk_once(meshes):
    assert set(meshes["chunk_programs"].values()) == {1}


@pytest.mark.integration
def test_ghost_bn_statistics_need_no_communication(meshes):
    # Synchronised BN reduces its moments across the data axis; ghosts of one device's share
    # do not, which leaves fewer all-reduces (the gradients', fused).
    assert meshes["all_reduces"]["one_device"] == 0
    assert meshes["all_reduces"]["ghost_data4"] < meshes["all_reduces"]["data4"]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "message"), [
    ("more_devices", r"config.mesh.data is 8, but the run has 4 device"),
    ("members_and_data", r"asks for 4 × 2 = 8 devices"),
    ("batch", r"batch_size \(32\) must divide evenly over the config.mesh.data=3"),
    ("members", r"2 members must divide evenly over the config.mesh.members=3"),
    ("ghost", r"bn_ghost_size \(32\) must divide each device's share of the batch"),
])
def test_a_bad_mesh_is_an_error_naming_it(meshes, name, message):
    assert re.search(message, meshes["errors"][name])


@pytest.mark.integration
def test_bad_meshes_are_refused_before_anything_compiles(meshes):
    assert len(meshes["errors"]) == 6
    assert meshes["compilations_of_bad_meshes"] == 0
    assert meshes["compilations_in_all"] > 0  # the listener hears the good meshes' compilations


@pytest.mark.integration
def test_a_convnets_members_stay_on_one_device_and_train_as_there(meshes):
    # Split over XLA:CPU devices, an Inception's members train wrongly (devices.py); on one
    # device of the four they train exactly as on a run given one device.
    conv = meshes["conv"]
    assert conv["all_devices"]["members_axis"] == conv["one_device"]["members_axis"] == 1
    np.testing.assert_array_equal(conv["all_devices"]["losses"], conv["one_device"]["losses"])
    assert "cannot be split over devices" in meshes["errors"]["conv_members"]


def test_the_mesh_in_a_config_is_checked_without_devices():
    for overrides, message in (({"mesh.data": 0}, "mesh.data must be ≥ 1"),
                               ({"model.bn_ghost_size": 5}, "divide config.batch_size"),
                               ({"model.bn_ghost_size": 8, "model.norm": None}, "only with BN"),
                               ({"distributed.num_processes": -1}, "num_processes must be ≥ 0")):
        with pytest.raises(ValueError, match=message):
            tiny_config(**overrides)


@pytest.mark.parametrize(("distributed", "message"), [
    ({"num_processes": 2}, "coordinator_address"),
    ({"num_processes": 2, "coordinator_address": "localhost:1", "process_id": 2},
     r"a process id in \[0, 2\)"),
])
def test_several_processes_without_a_coordinator_or_an_id_are_an_error(distributed, message,
                                                                      monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    config = tiny_config(**{f"distributed.{key}": value for key, value in distributed.items()})
    with pytest.raises(ValueError, match=message):
        engine.initialize_processes(config.distributed)


ALONE_SCRIPT = """
    import sys
    from conftest import tiny_config
    from bnreg import engine

    config = tiny_config(**{"distributed.num_processes": 2, "distributed.process_id": 0,
                            "distributed.coordinator_address": f"localhost:{sys.argv[1]}",
                            "distributed.timeout_s": 2})
    engine.initialize_processes(config.distributed)
"""


def test_a_process_whose_peers_never_come_ends_after_the_stated_timeout():
    """JAX ends the waiting process (from C++) after ``distributed.timeout_s``, not its 300 s
    default; the wait is announced first."""
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    alone = run_script(ALONE_SCRIPT, str(port), devices=1)
    _, stderr = alone.communicate(timeout=120)
    assert alone.returncode != 0
    assert (f"process 0: waiting up to 2 s for 2 processes at localhost:{port} "
            "(config.distributed.timeout_s)") in stderr.splitlines()


def test_more_devices_than_the_process_has_is_an_error(tmp_path):
    import jax

    count = len(jax.devices())
    with pytest.raises(ValueError, match=f"mesh.data is {count + 1}, but the run has {count}"):
        engine.train_and_evaluate(tiny_config(**{"mesh.data": count + 1}), tmp_path)
    assert not (tmp_path / engine.METRICS_FILE).exists()


PROCESS_SCRIPT = """
    import json, sys
    import jax
    from conftest import tiny_config
    from bnreg import engine

    workdir, processes, process_id, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        sys.argv[4]
    overrides = {"sweep.seed": (0, 1), "mesh.data": 2, "mesh.members": 1,
                 "checkpoint_every": 20}
    if processes > 1:
        overrides.update({"distributed.num_processes": processes,
                          "distributed.process_id": process_id,
                          "distributed.coordinator_address": f"localhost:{port}"})
    result = engine.train_and_evaluate(tiny_config(**overrides), workdir)
    print(json.dumps({"processes": jax.process_count(), "history": result.history,
                      "summary": result.summary}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def two_processes(workdir) -> list[dict]:
    port = str(free_port())
    processes = [run_script(PROCESS_SCRIPT, str(workdir), "2", str(index), port, devices=1)
                 for index in (0, 1)]
    return [output_of(process) for process in processes]


@pytest.mark.integration
def test_two_processes_equal_one_process_with_two_devices_and_resume(tmp_path):
    outputs = two_processes(tmp_path / "two")
    one = output_of(run_script(PROCESS_SCRIPT, str(tmp_path / "one"), "1", "0", "0", devices=2))
    assert [o["processes"] for o in outputs] == [2, 2] and one["processes"] == 1
    for output in outputs:  # every process holds the whole results
        assert output["history"] == one["history"] and output["summary"] == one["summary"]
    for name in (engine.METRICS_FILE, engine.SUMMARY_FILE):  # written once, by process 0
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
    # Cut after the step-40 checkpoint (as a kill would leave it), the two processes resume.
    shutil.rmtree(tmp_path / "two" / engine.CHECKPOINT_DIR / "60")
    (tmp_path / "two" / engine.SUMMARY_FILE).unlink()
    for output in two_processes(tmp_path / "two"):
        assert output["history"] == one["history"] and output["summary"] == one["summary"]
    assert (tmp_path / "two" / engine.SUMMARY_FILE).read_text() == \
        (tmp_path / "one" / engine.SUMMARY_FILE).read_text()


@pytest.mark.integration
def test_resume_after_sigkill_with_a_mesh_equals_an_uninterrupted_run(tmp_path):
    assert_resume_after_sigkill_equals_an_uninterrupted_run(
        tmp_path, {"mesh.members": 1, "mesh.data": 2}, devices=2)


def test_the_accelerator_check_is_a_valid_bash_script():
    script = REPO / "benchmarks" / "accelerator_check.sh"
    completed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
