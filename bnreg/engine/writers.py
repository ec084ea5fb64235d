"""Where a run's metrics go besides ``metrics.jsonl``: TensorBoard events and a progress bar.

**TensorBoard** (``config.tensorboard``): each member is a TensorBoard run of its own,
``<workdir>/tensorboard/<member>`` named by its swept values and seed (:func:`member_run_name`),
so TensorBoard overlays the members' curves. View them with ``tensorboard --logdir
<workdir>/tensorboard`` (``pip install tensorboard``; writing needs only ``tensorboardX``).

Tags, one per value of a metrics record at the record's step: the record's scalars under their
own names (``train_loss``, ``loss``, ``accuracy``, ``accuracy_population``, …);
``probe_percentiles`` as ``probe_percentiles/layer<i>/unit<u>/p<q>``; a BN net's
``probe_bn_scale`` and ``probe_bn_bias`` as ``<name>/layer<i>/unit<u>``; ``mean_activation`` as
``mean_activation/layer<i>``; ``activation_histogram`` as a histogram per hidden layer,
``activation_histogram/layer<i>``, over ``probe.histogram_range`` (its counts are exact; the sum
and sum of squares that TensorBoard's histogram format also asks for are taken at the bins'
centres). ``i`` counts the hidden layers from 0, also for a probed layer configured as -1. The
final metrics of ``summary.json`` go in as ``final/<name>`` at the last step.

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
from tqdm.auto import tqdm

from bnreg.config import AXES

TENSORBOARD_DIR = "tensorboard"
# Record fields that identify the member, the step and the split rather than measure them.
IDENTITY_FIELDS = ("step", "member", "split", *AXES)
_SHORT_NAMES = {"learning_rate": "lr"}


def member_run_name(member: Mapping[str, Any], swept: Sequence[str]) -> str:
    """The TensorBoard run (sub-directory) of one member: its swept values and its seed, each
    as Python writes it (so two members never share one), e.g. ``lr=0.1,seed=0``."""
    shown = [axis for axis in swept if axis != "seed"] + ["seed"]
    return ",".join(f"{_SHORT_NAMES.get(axis, axis)}={member[axis]!r}" for axis in shown)


def scalar_tags(
    record: Mapping[str, Any], probe: ml_collections.ConfigDict
) -> dict[str, float]:
    """The scalars of one metrics record, by TensorBoard tag (see the module docstring);
    ``None`` values (no training loss before the first step) and histograms are left out."""
    scalars = {}
    for name, value in record.items():
        if name in IDENTITY_FIELDS or value is None or name == "activation_histogram":
            continue
        if name == "probe_percentiles":
            num_hidden = len(record["mean_activation"])
            layers = [layer % num_hidden for layer in probe.layers]
            for layer, table in zip(layers, value, strict=True):
                for unit, row in zip(probe.units, table, strict=True):
                    for q, percentile in zip(probe.percentiles, row, strict=True):
                        scalars[f"{name}/layer{layer}/unit{unit}/p{q:g}"] = float(percentile)
        elif name in ("probe_bn_scale", "probe_bn_bias"):
            num_hidden = len(record["mean_activation"])
            layers = [layer % num_hidden for layer in probe.layers]
            for layer, row in zip(layers, value, strict=True):
                for unit, parameter in zip(probe.units, row, strict=True):
                    scalars[f"{name}/layer{layer}/unit{unit}"] = float(parameter)
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
      run_names: the members' TensorBoard runs (:func:`member_run_name`), in member order.
      probe: the run's ``config.probe`` (names the probed units, percentiles and histogram range).
    """

    def __init__(
        self, directory: str | Path, run_names: Sequence[str], probe: ml_collections.ConfigDict
    ):
        from tensorboardX import SummaryWriter  # imported only for runs that write events

        directory = Path(directory)
        shutil.rmtree(directory, ignore_errors=True)
        self._probe = probe
        self._writers = [SummaryWriter(str(directory / name)) for name in run_names]

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
        """Adds the final metrics of ``summary.json`` as ``final/<name>`` at its last step."""
        for writer, member in zip(self._writers, summary["members"], strict=True):
            for name, value in member.items():
                if name not in IDENTITY_FIELDS:
                    writer.add_scalar(f"final/{name}", value, summary["num_steps"])

    def flush(self) -> None:
        for writer in self._writers:
            writer.flush()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


class Progress:
    """A run's progress bar: steps done, the last training loss and the primary metric of the
    last evaluation (mean over members)."""

    def __init__(self, *, total: int, initial: int, description: str, metric: str,
                 enabled: bool, position: int):
        self._metric = metric
        self._bar = tqdm(total=total, initial=initial, unit="step", disable=not enabled,
                         desc=description, position=position)
        self._shown: dict[str, str] = {}

    def advance(self, num_steps: int, losses: np.ndarray) -> None:
        self._bar.update(num_steps)
        self._shown["loss"] = f"{losses[-1].mean():.4f}"
        self._bar.set_postfix(self._shown)

    def evaluated(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            self._shown[self._metric] = f"{np.mean([r[self._metric] for r in records]):.4f}"
            self._bar.set_postfix(self._shown)

    def close(self) -> None:
        self._bar.close()
