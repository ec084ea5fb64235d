"""The command line's known environment failures: one line (with the fix), exit code 2, no
traceback — data unavailable offline, a directory that cannot be written, a full disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import REPO

# Runs bn_mnist's command in process, after ``patch`` (Python statements) has run.
COMMAND = """
import sys
{patch}
from bnreg import cli
from experiments import bn_mnist
sys.argv = ["bn_mnist", *sys.argv[1:]]
cli.main("experiments/bn_mnist.py", bn_mnist.STUDY, workdir="runs/bn_mnist")
"""


def command(patch: str, *arguments: str) -> subprocess.CompletedProcess:
    code = COMMAND.format(patch=textwrap.dedent(patch))
    return subprocess.run([sys.executable, "-c", code, *arguments], cwd=REPO, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True)


def test_mnist_offline_ends_with_the_sources_tried_and_exit_code_2(tmp_path):
    (tmp_path / "raw").mkdir()
    completed = command(
        """
        import socket
        def unreachable(*args, **kwargs):
            raise OSError("Network is unreachable")
        socket.create_connection = unreachable
        """,
        f"--workdir={tmp_path / 'run'}", "--config=experiments/bn_mnist.py",
        f"--config.data_dir={tmp_path / 'data'}", f"--config.manual_dir={tmp_path / 'raw'}")
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("error: Dataset 'mnist' is not available.")
    assert "pass --config.manual_dir=" in completed.stderr  # the fixes as flags
    assert "download=True" not in completed.stderr
    assert not (tmp_path / "run").exists()


def test_a_work_dir_that_cannot_be_written_ends_with_one_line_and_exit_code_2(tmp_path):
    completed = command(
        """
        import os
        real_open = os.open
        def read_only(path, *args, **kwargs):
            if str(path).endswith(".bnreg.lock"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)
        os.open = read_only
        """,
        f"--workdir={tmp_path}", "--config=experiments/bn_mnist.py:smoke",
        "--config.progress=False")
    assert completed.returncode == 2, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not writable (Permission denied)" in lines[0], lines


def test_a_full_disk_ends_with_one_line_and_exit_code_2(tmp_path):
    completed = command(
        """
        import errno
        from bnreg.engine import rundir
        def full(workdir, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(workdir))
        rundir.write_config = full
        """,
        f"--workdir={tmp_path}", "--config=experiments/bn_mnist.py:smoke",
        "--config.progress=False")
    assert completed.returncode == 2, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the disk is full"), lines
