"""A run directory: ``config.json``, ``metrics.jsonl``, ``summary.json`` and orbax checkpoints.

A rerun with the same directory and config resumes from the latest checkpoint; metrics written
after that checkpoint (and a line cut by a kill) are dropped, so the result equals an
uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
# Settings that do not change results, which may differ between attempts of one run (a
# study's own keys never reach the engine's arithmetic).
RESUMABLE_CHANGES = ("progress", "steps_per_call", "tensorboard", "study")


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Writes ``config.json``, refusing a directory that holds a run of another config (one
    that differs in more than :data:`RESUMABLE_CHANGES`).

    Raises:
      ValueError: the directory holds a run with a different configuration.
    """
    path = workdir / CONFIG_FILE
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if path.exists() and ((workdir / CHECKPOINT_DIR).exists() or (workdir / METRICS_FILE).exists()):
        saved, current = json.loads(path.read_text()), json.loads(text)
        for key in RESUMABLE_CHANGES:
            saved.pop(key, None)
            current.pop(key, None)
        if saved != current:
            raise ValueError(
                f"{workdir} holds a run with a different configuration ({path}). Resume with "
                "the same configuration, or pass a new --workdir (or delete that one)."
            )
    path.write_text(text)


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
        if record["step"] > last_step:
            break
        records.append(record)
    return records


def write_jsonl(path: Path, records: Sequence[dict], mode: str) -> None:
    with path.open(mode) as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()


class Checkpoints:
    """The run's orbax checkpoints (the two latest kept), or none when ``every`` is 0."""

    def __init__(self, workdir: Path, every: int):
        self.every = every
        self._manager = None
        if every:
            self._manager = ocp.CheckpointManager(
                (workdir / CHECKPOINT_DIR).absolute(),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=2, enable_async_checkpointing=False
                ),
            )

    def latest_step(self) -> int | None:
        return self._manager.latest_step() if self._manager else None

    def restore_latest(self, state: Any) -> Any:
        """The latest checkpoint restored into ``state``'s structure and shardings (``state``
        itself when there is none)."""
        step = self.latest_step()
        if step is None:
            return state
        return self._manager.restore(step, args=ocp.args.StandardRestore(state))

    def save_if_due(self, step: int, state: Any, *, last: bool) -> bool:
        """Saves ``state`` at ``step`` when ``step`` is a multiple of ``every`` or ``last``."""
        if not self._manager or not (step % self.every == 0 or last):
            return False
        self._manager.save(step, args=ocp.args.StandardSave(state))
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
