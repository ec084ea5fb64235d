"""The directories bnreg works in (bnreg.workdir): one process at a time — a second is
refused naming the holder, before it writes anything; a dead holder's lock is taken over — and
only directories bnreg made for the same owner."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_config

from bnreg import engine, study
from bnreg.workdir import (
    LOCK_FILE,
    MARKER_FILE,
    RUN,
    DirectoryInUseError,
    NotOwnedError,
    check_owner,
    held,
    mark,
    owner_of,
    study_owner,
)
from experiments import bn_mnist

HOLD_SCRIPT = """
import sys, time
from bnreg.workdir import held
with held(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def start_holder(directory) -> subprocess.Popen:
    """A process that holds ``directory``'s lock until killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(directory)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with held(tmp_path), pytest.raises(DirectoryInUseError,
                                       match=rf"in use by process {os.getpid()} on "):
        with held(tmp_path):
            pass


def test_the_lock_is_free_again_after_the_block(tmp_path):
    with held(tmp_path):
        pass
    with held(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with held(tmp_path):  # the kernel released the killed process's lock
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_process_other_than_the_first_of_a_distributed_run_holds_nothing(tmp_path):
    with held(tmp_path, hold=False), held(tmp_path):
        pass


def test_a_run_in_a_directory_another_process_holds_is_refused_before_writing(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(DirectoryInUseError, match=f"process {holder.pid} "):
            engine.train_and_evaluate(tiny_config(), tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(path.name for path in tmp_path.iterdir()) == [LOCK_FILE]


def test_a_study_in_a_work_dir_in_use_is_refused_before_training(tmp_path):
    config = bn_mnist.get_config("smoke")
    with held(tmp_path), pytest.raises(DirectoryInUseError):
        study.run(bn_mnist.STUDY, config, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [LOCK_FILE]


@pytest.mark.parametrize("extra", [(), ("--overwrite",)])
def test_the_command_on_a_work_dir_in_use_ends_with_one_line_and_exit_code_2(tmp_path, extra):
    mark(tmp_path, study_owner("bn_mnist"))  # its own work dir, in use
    (tmp_path / "results.md").write_text("a study's results")
    with held(tmp_path):
        completed = subprocess.run(
            [sys.executable, "-m", "experiments.bn_mnist", f"--workdir={tmp_path}",
             "--config=experiments/bn_mnist.py:smoke", "--config.progress=False", *extra],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
            text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by process {os.getpid()}" in lines[0], lines
    assert (tmp_path / "results.md").exists()


# Ownership: bnreg writes only into a directory that is missing, empty or its own.


def test_a_run_in_a_directory_of_a_users_own_files_is_refused_before_loading_data(tmp_path):
    (tmp_path / "results.md").write_text("my notes")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(NotOwnedError, match=r"files bnreg did not make \(results.md, "
                                            r"summary.json\)"):
        engine.train_and_evaluate(tiny_config(), tmp_path)
    assert (tmp_path / "results.md").read_text() == "my notes"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.md", "summary.json"]


def test_a_run_marks_its_directory_and_resumes_in_it(tmp_path):
    engine.train_and_evaluate(tiny_config(), tmp_path)
    assert owner_of(tmp_path) == RUN
    engine.train_and_evaluate(tiny_config(), tmp_path)  # its own: no refusal


def test_a_run_made_before_markers_is_recognised_by_its_config(tmp_path):
    engine.train_and_evaluate(tiny_config(), tmp_path)
    (tmp_path / MARKER_FILE).unlink()
    check_owner(tmp_path, RUN)


def test_a_study_refuses_another_studys_work_dir_naming_it(tmp_path):
    mark(tmp_path, study_owner("bn_ema_momentum"))
    (tmp_path / "results.md").write_text("bn_ema_momentum's results")
    with pytest.raises(study.StudyConfigError, match="holds the results of study "
                                                     "bn_ema_momentum, not of study bn_mnist"):
        study.run(bn_mnist.STUDY, bn_mnist.get_config("smoke"), tmp_path)
    assert (tmp_path / "results.md").read_text() == "bn_ema_momentum's results"


def test_a_study_work_dir_made_before_markers_is_recognised_by_its_records(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "study.json").write_text(json.dumps({"study": "bn_mnist"}))
    assert owner_of(tmp_path) == study_owner("bn_mnist")
    check_owner(tmp_path, study_owner("bn_mnist"))
    with pytest.raises(NotOwnedError):
        check_owner(tmp_path, study_owner("bn_accelerate"))


def test_a_file_is_not_a_work_dir(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_owner(path, RUN)


def run_command(workdir, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.bn_mnist", f"--workdir={workdir}",
         "--config=experiments/bn_mnist.py:smoke", "--config.progress=False", *extra],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=300)


def test_the_command_on_another_studys_work_dir_is_one_line_and_exit_code_2(tmp_path):
    mark(tmp_path, study_owner("dropout_p"))
    completed = run_command(tmp_path)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the results of study dropout_p" in lines[0], lines


def test_the_command_expands_a_tilde_in_the_work_dir(tmp_path):
    home = tmp_path / "home"
    (home / "taken").mkdir(parents=True)
    (home / "taken" / "mine.txt").write_text("")
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.bn_mnist", "--workdir=~/taken",
         "--config=experiments/bn_mnist.py:smoke", "--config.progress=False"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), HOME=str(home)),
        capture_output=True, text=True, timeout=300)
    # refused as the directory under HOME, not as a new directory named "~"
    assert completed.returncode == 2 and str(home / "taken") in completed.stderr
    assert not (REPO / "~").exists()


@pytest.mark.integration
def test_ctrl_c_ends_the_command_with_one_line_and_exit_code_130_and_a_rerun_resumes(tmp_path):
    arguments = [sys.executable, "-m", "experiments.bn_mnist", f"--workdir={tmp_path}",
                 "--config=experiments/bn_mnist.py:smoke", "--config.progress=False"]
    # As from a terminal: an xdist worker ignores SIGINT, and a child would inherit that.
    command = subprocess.Popen([*arguments, "--config.study.tune_steps=1000"], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = tmp_path / "runs" / "tune" / "no_bn" / "metrics.jsonl"
    # Two evaluations in: the training loop runs.
    while not (metrics.exists() and metrics.read_text().count("\n") >= 4):
        assert command.poll() is None, command.stderr.read()[-2000:]
        time.sleep(0.2)
    command.send_signal(signal.SIGINT)
    stderr = command.communicate(timeout=120)[1]
    assert command.returncode == 130, stderr[-2000:]
    assert re.fullmatch(r"interrupted at step [\d,]+ \(.*runs/tune/no_bn\).*; rerun the same "
                        r"command to resume\.",
                        stderr.strip().splitlines()[-1]), stderr[-2000:]
    assert "Traceback" not in stderr and "Fatal" not in stderr
    resumed = subprocess.run([*arguments, "--config.study.tune_steps=1000"], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_run_whose_checkpoints_cannot_be_written_is_refused_before_training(tmp_path,
                                                                              monkeypatch):
    import tempfile

    from bnreg import workdir as workdirs

    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).name == engine.CHECKPOINT_DIR:
            raise PermissionError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    engine.train_and_evaluate(tiny_config(checkpoint_every=20, num_steps=20), tmp_path)
    monkeypatch.setattr(workdirs.tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(engine.Engine, "train", lambda *args: pytest.fail("trained"))
    with pytest.raises(workdirs.NotWritableError, match="checkpoints is not writable"):
        engine.train_and_evaluate(tiny_config(checkpoint_every=20), tmp_path)
