"""TensorBoard event files of a run's metrics (``config.tensorboard``), written by
:func:`bnreg.train.train_and_evaluate` beside ``metrics.jsonl``.

Each member is a TensorBoard run of its own, ``<workdir>/tensorboard/lr=<lr>,seed=<seed>``, so
TensorBoard overlays the members' curves. View them with ``tensorboard --logdir
<workdir>/tensorboard`` (``pip install tensorboard``; writing needs only ``tensorboardX``).

Tags, one per value of a metrics record at the record's step: the record's scalars under their
own names (``train_loss``, ``test_loss``, ``test_accuracy``, …); ``probe_percentiles`` as
``probe_percentiles/layer<i>/unit<u>/p<q>``; ``mean_activation`` as ``mean_activation/layer<i>``;
``activation_histogram`` as a histogram per hidden layer, ``activation_histogram/layer<i>``, over
``probe.histogram_range`` (its counts are exact; the sum and sum of squares that TensorBoard's
histogram format also asks for are taken at the bins' centres). ``i`` counts the hidden layers
from 0, also for a probed layer configured as -1. The final accuracies of ``summary.json`` go in
as ``final/<name>`` at the last step.

The files are derived from ``metrics.jsonl``: a resumed run deletes them and writes them again
from the records it kept, so they never hold the evaluations made after the checkpoint it
resumed from.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

TENSORBOARD_DIR = "tensorboard"
# Record fields that identify the member and the step rather than measure it.
_IDENTITY_FIELDS = ("step", "member", "learning_rate", "seed")


def member_run_name(learning_rate: float, seed: int) -> str:
    """The TensorBoard run (sub-directory) of one member; the rate as Python writes it, so two
    members never share one."""
    return f"lr={learning_rate!r},seed={seed}"


def scalar_tags(
    record: Mapping[str, Any], probe: ml_collections.ConfigDict
) -> dict[str, float]:
    """The scalars of one metrics record, by TensorBoard tag (see the module docstring);
    ``None`` values (no training loss before the first step) and histograms are left out."""
    scalars = {}
    for name, value in record.items():
        if name in _IDENTITY_FIELDS or value is None or name == "activation_histogram":
            continue
        if name == "probe_percentiles":
            num_hidden = len(record["mean_activation"])
            layers = [layer % num_hidden for layer in probe.layers]
            for layer, table in zip(layers, value, strict=True):
                for unit, row in zip(probe.units, table, strict=True):
                    for q, percentile in zip(probe.percentiles, row, strict=True):
                        scalars[f"{name}/layer{layer}/unit{unit}/p{q:g}"] = float(percentile)
        elif name == "mean_activation":
            for layer, mean in enumerate(value):
                scalars[f"{name}/layer{layer}"] = float(mean)
        else:
            scalars[name] = float(value)
    return scalars


class TensorBoardEvents:
    """Writes a run's metrics records as TensorBoard events, one writer per member.

    Args:
      directory: the run's TensorBoard directory; whatever it holds is deleted first.
      members: ``(learning_rate, seed)`` per member, in member order.
      probe: the run's ``config.probe`` (names the probed units, percentiles and histogram range).
    """

    def __init__(
        self,
        directory: str | Path,
        members: Sequence[tuple[float, int]],
        probe: ml_collections.ConfigDict,
    ):
        from tensorboardX import SummaryWriter  # imported only for runs that write events

        directory = Path(directory)
        shutil.rmtree(directory, ignore_errors=True)
        self._probe = probe
        self._writers = [
            SummaryWriter(str(directory / member_run_name(lr, seed))) for lr, seed in members
        ]

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Adds metrics records (as in ``metrics.jsonl``) to their members' event files."""
        for record in records:
            writer = self._writers[record["member"]]
            step = record["step"]
            for tag, value in scalar_tags(record, self._probe).items():
                writer.add_scalar(tag, value, step)
            for layer, counts in enumerate(record.get("activation_histogram", ())):
                self._write_histogram(writer, f"activation_histogram/layer{layer}", counts, step)

    def _write_histogram(self, writer: Any, tag: str, counts: Sequence[float], step: int):
        counts = np.asarray(counts, np.float64)
        low, high = self._probe.histogram_range
        edges = np.linspace(low, high, len(counts) + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        occupied = np.flatnonzero(counts)
        if not occupied.size:
            return
        writer.add_histogram_raw(
            tag,
            min=float(edges[occupied[0]]),
            max=float(edges[occupied[-1] + 1]),
            num=float(counts.sum()),
            sum=float(counts @ centres),
            sum_squares=float(counts @ centres**2),
            bucket_limits=edges[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Adds the final accuracies of ``summary.json`` as ``final/<name>`` at its last step."""
        for writer, member in zip(self._writers, summary["members"], strict=True):
            for name, value in member.items():
                if name not in _IDENTITY_FIELDS:
                    writer.add_scalar(f"final/{name}", value, summary["num_steps"])

    def flush(self) -> None:
        for writer in self._writers:
            writer.flush()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
