"""A run directory: ``config.json``, ``metrics.jsonl``, ``summary.json`` and orbax checkpoints.

A rerun with the same directory and config resumes from the latest checkpoint; metrics written
after that checkpoint (and a line cut by a kill) are dropped, so the result equals an
uninterrupted run bit for bit.

Every checkpoint is verified before a run resumes from it: ``checkpoint_digests.json`` holds,
per saved step, the SHA-256 of the saved state and of ``metrics.jsonl`` as it was then. A
checkpoint that cannot be read, or whose restored state differs from its digest (a flipped
bit, a cut file, a kill while saving), is reported by step and moved to ``corrupt_checkpoints/``,
and the run resumes from the newest one that passes; with none left, it stops and says so.
A checkpoint whose records in ``metrics.jsonl`` differ from what was written by then is
skipped for an older one whose records are intact; with none, the run stops naming the file —
never a silent change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from bnreg.engine.devices import is_main_process, to_host, wait_for_processes

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
SUMMARY_DIGEST_FILE = "summary.sha256"
CHECKPOINT_DIR = "checkpoints"
DIGESTS_FILE = "checkpoint_digests.json"
CORRUPT_DIR = "corrupt_checkpoints"
# Settings that do not change results, which may differ between attempts of one run (a
# study's own keys never reach the engine's arithmetic; `nonfinite` only decides whether a run
# that diverged stops; the mesh, the processes and unrolled steps change where or how the
# arithmetic is compiled, and so its rounding, as another device count does, never the function
# computed).
RESUMABLE_CHANGES = ("progress", "steps_per_call", "tensorboard", "study", "nonfinite", "mesh",
                     "distributed", "unroll_steps")


def write_config(workdir: Path, config: ml_collections.ConfigDict, *, write: bool = True) -> None:
    """Writes ``config.json`` (unless ``write`` is False: only the check), refusing a
    directory that holds a run of another config (one that differs in more than
    :data:`RESUMABLE_CHANGES`).

    Raises:
      ValueError: the directory holds a run with a different configuration.
    """
    path = workdir / CONFIG_FILE
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    outputs = [workdir / name for name in (CHECKPOINT_DIR, METRICS_FILE)
               if (workdir / name).exists()]
    if outputs:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{workdir} holds a run ({', '.join(p.name for p in outputs)}) whose {path.name} "
                f"is missing or damaged ({error}), so it cannot be checked against this config. "
                "Restore that file, or pass a new --workdir (or delete that one)."
            ) from error
        current = json.loads(text)
        # Keys added to the schema after the run was written hold their defaults there.
        saved = _with_defaults(saved, json.loads(_default_config_json()))
        for key in RESUMABLE_CHANGES:
            saved.pop(key, None)
            current.pop(key, None)
        if saved != current:
            raise ValueError(
                f"{workdir} holds a run with a different configuration ({path}). Resume with "
                "the same configuration, or pass a new --workdir (or delete that one)."
            )
    if write:
        write_atomically(path, text)


def _default_config_json() -> str:
    from bnreg.config import default_config

    return default_config().to_json_best_effort(indent=2, sort_keys=True)


def _with_defaults(saved: Any, defaults: Any) -> Any:
    if not isinstance(saved, dict) or not isinstance(defaults, dict):
        return saved
    return {**defaults, **{k: _with_defaults(v, defaults.get(k)) for k, v in saved.items()}}


def read_history(path: Path, last_step: int) -> list[dict]:
    """The metrics records up to ``last_step``; later ones (written after the checkpoint that
    is being resumed from) and a line cut by a kill are dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        # Past the records of the verified checkpoint, anything (a later record, a damaged
        # one) ends the history.
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or (
                record["step"] > last_step):
            break
        records.append(record)
    return records


def write_jsonl(path: Path, records: Sequence[dict], mode: str) -> None:
    with path.open(mode) as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()


def state_digest(state: Any) -> str:
    """SHA-256 of every leaf of ``state`` (its path, dtype, shape and bytes; PRNG keys by their
    data), in the tree's order."""
    digest = hashlib.sha256()
    state = to_host(state)  # every process's digest is of the whole state
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> dict[str, Any]:
    content = path.read_bytes() if path.exists() else b""
    return {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def write_atomically(path: Path, text: str) -> None:
    """Writes ``path`` whole or not at all (a kill or a full disk leaves the old file)."""
    # A name of this process's own: processes that write the same file do not race on one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_summary(workdir: Path, summary: dict) -> None:
    """Writes ``summary.json`` and then the SHA-256 of its text (``summary.sha256``), each whole
    or not at all: a kill between the two leaves a summary :func:`read_summary` does not
    trust."""
    text = json.dumps(summary, indent=2)
    write_atomically(workdir / SUMMARY_FILE, text)
    write_atomically(workdir / SUMMARY_DIGEST_FILE, hashlib.sha256(text.encode()).hexdigest())


def remove_summary(workdir: Path) -> None:
    """Deletes ``summary.json`` and its digest, the digest first (a kill between the two leaves
    a summary :func:`read_summary` does not trust)."""
    for name in (SUMMARY_DIGEST_FILE, SUMMARY_FILE):
        (workdir / name).unlink(missing_ok=True)


def read_summary(workdir: Path) -> dict | None:
    """The summary :func:`write_summary` wrote, or None when it or its digest is missing, or
    the text differs from the digest (cut, changed, a flipped bit). With several processes
    always None: every process then evaluates again, as the evaluation's collectives need."""
    summary, digest = workdir / SUMMARY_FILE, workdir / SUMMARY_DIGEST_FILE
    if jax.process_count() > 1 or not (summary.is_file() and digest.is_file()):
        return None
    text = summary.read_bytes()
    if hashlib.sha256(text).hexdigest() != digest.read_text().strip():
        return None
    return json.loads(text)


def _agreed(problem: str | None, elsewhere: str) -> str | None:
    """``problem``, or ``elsewhere`` when only another process found one (one process:
    ``problem``)."""
    if jax.process_count() == 1:
        return problem
    found = multihost_utils.process_allgather(np.int32(problem is not None))
    return problem or (elsewhere if np.any(found) else None)


class Checkpoints:
    """The run's orbax checkpoints (the two latest kept) and their digests, or none when
    ``every`` is 0."""

    def __init__(self, workdir: Path, every: int):
        self.every = every
        self.workdir = workdir
        self._manager = None
        if every:
            self._manager = ocp.CheckpointManager(
                (workdir / CHECKPOINT_DIR).absolute(),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=2, enable_async_checkpointing=False
                ),
            )
            if (is_main_process() and not self._manager.all_steps()
                    and not (workdir / DIGESTS_FILE).exists()):
                # From now on a checkpoint without a digest is one cut while it was saved.
                write_atomically(workdir / DIGESTS_FILE, "{}")

    def latest_step(self) -> int | None:
        return self._manager.latest_step() if self._manager else None

    def _digests(self) -> dict[str, Any] | None:
        """The digests by step (``None`` for a run directory written before digests)."""
        path = self.workdir / DIGESTS_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(
                f"{path} is damaged ({error}), so no checkpoint of the run can be verified. "
                "Restore it, or pass a new --workdir (or delete that one) to start over."
            ) from error

    def _problem(self, step: int, state: Any, digests: dict[str, Any] | None) -> str | None:
        """Why the checkpoint of ``step`` restored as ``state`` cannot be trusted (``None``:
        it can)."""
        if digests is None:
            warnings.warn(f"{self.workdir} has no {DIGESTS_FILE} (a run directory of an older "
                          f"bnreg): resuming from step {step} unverified.", stacklevel=3)
            return None
        expected = digests.get(str(step))
        if expected is None:
            return f"{DIGESTS_FILE} holds no digest of it (the run was stopped while saving it)"
        if state_digest(state) != expected["state"]:
            return "the state it restores differs from the digest taken when it was saved"
        return None

    def _set_aside(self, step: int, problem: str) -> None:
        source = self.workdir / CHECKPOINT_DIR / str(step)
        target = self.workdir / CORRUPT_DIR / str(step)
        attempt = 1
        while target.exists():  # keep what an earlier attempt set aside
            attempt += 1
            target = self.workdir / CORRUPT_DIR / f"{step}-{attempt}"
        if is_main_process():
            target.parent.mkdir(exist_ok=True)
            shutil.move(source, target)
            warnings.warn(f"The checkpoint of step {step} in {self.workdir} failed "
                          f"verification ({problem}); it was moved to {target}.", stacklevel=3)
        wait_for_processes(f"set aside {step}")
        self._manager.reload()

    def restore_latest(self, state: Any) -> Any:
        """The newest checkpoint that passes verification, restored into ``state``'s structure
        and shardings (``state`` itself when there is none).

        Raises:
          ValueError: every checkpoint failed verification (each is reported and set aside),
            the digests file is damaged, or ``metrics.jsonl`` differs from what was written
            before the resumed step.
        """
        if not self._manager:
            return state
        digests, failed, metrics_problems = self._digests(), [], []
        for step in sorted(self._manager.all_steps(), reverse=True):
            restored, problem = state, None
            try:
                restored = self._manager.restore(step, args=ocp.args.StandardRestore(state))
            except Exception as error:  # orbax and tensorstore raise many kinds for a damaged file
                problem = f"it cannot be read: {type(error).__name__}: {str(error)[:200]}"
            # Every process must take the same branch: the digest below is a collective.
            problem = _agreed(problem, "another process cannot read it")
            problem = problem or self._problem(step, restored, digests)
            if problem is None:
                if self._metrics_match(step, digests):
                    return restored
                # An intact checkpoint whose records were damaged later: an older one may
                # still have all of its records (the file's prefix) intact.
                metrics_problems.append(step)
                continue
            failed.append(step)
            self._set_aside(step, problem)
        if metrics_problems:
            raise ValueError(
                f"{self.workdir / METRICS_FILE} differs from what the run had written when it "
                f"saved its checkpoints (steps {metrics_problems}; cut or changed, or their "
                f"entries in {DIGESTS_FILE} are): its records cannot be trusted or restored. "
                "Restore the file, or pass a new --workdir (or delete that one) to start over."
            )
        if failed:
            raise ValueError(
                f"No checkpoint of {self.workdir} passed verification (steps {failed}, moved to "
                f"{self.workdir / CORRUPT_DIR}). The run cannot resume: pass a new --workdir "
                "(or delete that one) to start over."
            )
        return state

    def _metrics_match(self, step: int, digests: dict[str, Any] | None) -> bool:
        """Whether ``metrics.jsonl`` begins with the bytes it held when ``step`` was saved."""
        if not digests:
            return True
        expected = digests[str(step)]["metrics"]
        path = self.workdir / METRICS_FILE
        content = path.read_bytes()[: expected["bytes"]] if path.exists() else b""
        return len(content) == expected["bytes"] and (
            hashlib.sha256(content).hexdigest() == expected["sha256"])

    def save_if_due(self, step: int, state: Any, *, last: bool) -> bool:
        """Saves ``state`` at ``step`` when ``step`` is a multiple of ``every`` or ``last``, and
        its digest with that of ``metrics.jsonl`` as it is now."""
        if not self._manager or not (step % self.every == 0 or last):
            return False
        self._manager.save(step, args=ocp.args.StandardSave(state))
        self._manager.wait_until_finished()
        kept = {str(s) for s in self._manager.all_steps()}
        digests = {k: v for k, v in (self._digests() or {}).items() if k in kept}
        digests[str(step)] = {"state": state_digest(state),
                              "metrics": _file_digest(self.workdir / METRICS_FILE)}
        if is_main_process():
            write_atomically(self.workdir / DIGESTS_FILE, json.dumps(digests, indent=1))
        return True

    def note(self, workdir: Path) -> str:
        """For an error message: where the run can resume from."""
        step = self.latest_step()
        if step is None:
            return "No checkpoint was written."
        return f"The last good checkpoint (step {step}) is kept in {workdir}."

    def close(self) -> None:
        if self._manager:
            self._manager.wait_until_finished()
            self._manager.close()
