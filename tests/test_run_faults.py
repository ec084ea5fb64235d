"""Fault injection: each kind of file a run writes is cut, bit-flipped or deleted at a random
point, and the rerun either resumes to the final metrics of an uninterrupted run or stops with
an error naming the file — never a silent change or a lost result. (The decoded-array cache:
tests/test_data.py, ``test_a_corrupt_cache_is_said_and_rebuilt_from_the_source``.)"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from bnreg import engine
from bnreg.engine import rundir

CONFIG = tiny_config(num_steps=60, eval_every=20, checkpoint_every=20,
                     **{"sweep.seed": (0, 1)})


def cut(path: Path, rng: np.random.Generator) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: int(rng.integers(0, max(1, len(content))))])


def flip(path: Path, rng: np.random.Generator) -> None:
    content = bytearray(path.read_bytes())
    content[int(rng.integers(0, len(content)))] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(content))


def delete(path: Path, rng: np.random.Generator) -> None:
    path.unlink()


def largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# What each file is, and what a damaged one must lead to: "resume" (the same final metrics as
# an uninterrupted run) or "error" (a ValueError naming the file).
FILES = {
    "checkpoint data": (lambda run: largest_file(run / "checkpoints" / "60"), "resume"),
    "checkpoint metadata": (lambda run: run / "checkpoints" / "60" / "default" / "_METADATA",
                            "resume"),
    "checkpoint step metadata": (lambda run: run / "checkpoints" / "60" /
                                 "_CHECKPOINT_METADATA", "resume"),
    # Damage past the records of step 40 leaves that checkpoint's records intact.
    "metrics.jsonl": (lambda run: run / rundir.METRICS_FILE, "either"),
    "summary.json": (lambda run: run / rundir.SUMMARY_FILE, "resume"),
    "summary digest": (lambda run: run / rundir.SUMMARY_DIGEST_FILE, "resume"),
    "config.json": (lambda run: run / rundir.CONFIG_FILE, "either"),
    "checkpoint digests": (lambda run: run / rundir.DIGESTS_FILE, "either"),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = engine.train_and_evaluate(CONFIG, workdir)
    return workdir, result.summary["members"], (workdir / rundir.METRICS_FILE).read_text()


def final_metrics(workdir: Path):
    summary = json.loads((workdir / rundir.SUMMARY_FILE).read_text())
    return summary["members"], (workdir / rundir.METRICS_FILE).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("damage", [cut, flip, delete], ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", list(FILES))
def test_a_damaged_file_resumes_to_the_same_results_or_stops_naming_it(
    tmp_path, uninterrupted, kind, damage
):
    original, members, metrics = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    locate, expected = FILES[kind]
    path = locate(workdir)
    # A random point of the file, a different one for each case.
    damage(path, np.random.default_rng([list(FILES).index(kind), damage.__code__.co_firstlineno]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = engine.train_and_evaluate(CONFIG, workdir)
        except ValueError as error:
            assert expected in ("error", "either"), f"a damaged {kind} stopped the run: {error}"
            assert path.name in str(error)
            return
    assert expected in ("resume", "either"), f"a damaged {kind} did not stop the run"
    assert result.summary["members"] == members
    assert final_metrics(workdir) == (members, metrics)
    set_aside = (workdir / rundir.CORRUPT_DIR / "60").is_dir()
    # Cut or deleted data cannot restore the same state: that checkpoint must have been set
    # aside. (Orbax restores without its step metadata, and a flipped bit it never reads
    # changes nothing: such a checkpoint passes verification, rightly.)
    assert set_aside or not (kind == "checkpoint data" and damage is not flip)
    if set_aside:
        assert any(re.search(r"checkpoint of step 60 .* failed verification", str(w.message))
                   for w in caught)


def test_a_state_that_differs_from_its_digest_is_set_aside_and_the_older_one_resumed(
    tmp_path, uninterrupted
):
    original, members, metrics = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    digests = json.loads((workdir / rundir.DIGESTS_FILE).read_text())
    digests["60"]["state"] = "0" * 64  # as if a bit of the saved state had flipped
    (workdir / rundir.DIGESTS_FILE).write_text(json.dumps(digests))
    with pytest.warns(UserWarning, match="step 60 .* differs from the digest"):
        result = engine.train_and_evaluate(CONFIG, workdir)
    assert result.summary["members"] == members
    assert final_metrics(workdir) == (members, metrics)
    assert sorted(p.name for p in (workdir / rundir.CORRUPT_DIR).iterdir()) == ["60"]


def test_records_damaged_after_the_older_checkpoint_resume_from_that_one(tmp_path, uninterrupted):
    original, members, metrics = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    digests = json.loads((workdir / rundir.DIGESTS_FILE).read_text())
    path = workdir / rundir.METRICS_FILE
    content = bytearray(path.read_bytes())
    content[digests["40"]["metrics"]["bytes"] + 5] ^= 0x01  # a record of step 60
    path.write_bytes(bytes(content))
    result = engine.train_and_evaluate(CONFIG, workdir)  # from step 40: 60 is trained again
    assert result.summary["members"] == members
    assert final_metrics(workdir) == (members, metrics)
    assert not (workdir / rundir.CORRUPT_DIR).exists()  # the checkpoint itself was intact


def test_when_no_checkpoint_passes_the_run_stops_and_says_so(tmp_path, uninterrupted):
    original, *_ = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    (workdir / rundir.DIGESTS_FILE).write_text("{}")
    with pytest.warns(UserWarning, match="failed verification"), pytest.raises(
        ValueError, match=r"No checkpoint .* passed verification \(steps \[60, 40\]"
    ):
        engine.train_and_evaluate(CONFIG, workdir)
    assert sorted(p.name for p in (workdir / rundir.CORRUPT_DIR).iterdir()) == ["40", "60"]
