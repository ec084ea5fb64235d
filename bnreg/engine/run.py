"""The run itself — train every member, evaluate, record, checkpoint — and groups of runs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from bnreg import workdir as workdirs
from bnreg.config import override
from bnreg.engine import rundir
from bnreg.engine.devices import is_main_process, to_host, wait_for_processes
from bnreg.engine.engine import Engine, Results, build, check
from bnreg.engine.members import Members
from bnreg.engine.step import TrainState
from bnreg.engine.writers import TENSORBOARD_DIR, Progress, TensorBoardEvents, member_run_name

# The primary evaluator's probes (bnreg.engine.evaluators): in metrics.jsonl, not the summary.
PROBE_FIELDS = ("probe_percentiles", "probe_bn_scale", "probe_bn_bias", "mean_activation",
                "activation_histogram")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite training or evaluation loss."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``steps``: each interrupted run's directory -> its last
    evaluated step (a rerun resumes each from its newest checkpoint)."""

    def __init__(self, steps: Mapping[str, int]):
        self.steps = dict(steps)
        super().__init__("interrupted at " + ", ".join(
            f"step {step:,} ({workdir})" for workdir, step in self.steps.items()))


def _last_step(workdir: Path) -> int:
    """The step of the last whole record in ``workdir``'s metrics (0 if none)."""
    records = rundir.read_history(workdir / rundir.METRICS_FILE, 2**62)
    return records[-1]["step"] if records else 0


@dataclasses.dataclass
class RunResult:
    """What :func:`train_and_evaluate` returns.

    Attributes:
      history: the metrics records, one per (evaluation, member), as in ``metrics.jsonl``.
      summary: the run's data and the final evaluation per member with every final evaluator
        (``summary.json``).
      state: the final :class:`~bnreg.engine.step.TrainState` (members on the leading axis);
        None for a run that had ended without checkpoints (``checkpoint_every=0``), returned
        from its records without training again.
      members: the members, in the order of the member axis.
    """

    history: list[dict]
    summary: dict
    state: TrainState | None
    members: Members


def _to_json(value: Any) -> Any:
    array = np.asarray(value)
    return array.tolist() if array.ndim else array.item()


def member_records(
    engine: Engine, step: int, results: Results, train_losses: np.ndarray | None
) -> list[dict]:
    """One record per member: the step, the member's index, the split and its value on every
    axis, the mean training loss since the last evaluation (``None`` at step 0), the primary
    evaluator's metrics under plain names and every evaluator's as ``<metric>_<suffix>``, and
    the primary's probes."""
    primary = engine.primary.columns[0]
    metrics = engine.network.task.metrics
    records = []
    for index, member in enumerate(engine.members):
        record = {"step": step, "member": index, "split": engine.split, **member}
        record["train_loss"] = (
            None if train_losses is None else float(train_losses[:, index].mean())
        )
        record.update({name: _to_json(results[primary][name][index]) for name in metrics})
        for column, values in results.items():
            record.update({f"{name}_{column}": _to_json(values[name][index]) for name in metrics})
        record.update({name: _to_json(value[index]) for name, value in results[primary].items()
                       if name not in metrics})
        records.append(record)
    return records


def _summary(engine: Engine, state: TrainState, records: list[dict]) -> dict:
    data = engine.data
    return {
        "dataset": engine.config.dataset,
        "source": data.source,
        "split": engine.split,
        "input_shape": list(data.image_shape),
        "num_train_examples": len(data.train.labels),
        "num_evaluation_examples": len(data.evaluation.labels),
        "num_steps": int(state.step),
        "bn_statistics": engine.config.evaluation.bn_statistics if engine.has_bn else None,
        "settled_ema_batches": engine.settled_ema_batches,
        "evaluators": [column for e in engine.final for column in e.columns],
        "members": [
            {k: v for k, v in record.items() if k not in ("step", "train_loss", *PROBE_FIELDS)}
            for record in records
        ],
    }


def _check_losses(losses: np.ndarray, first_step: int, engine: Engine, note: str) -> None:
    """Raises on the first non-finite training loss of a chunk (unless ``config.nonfinite`` is
    ``"record"``); ``losses[i]`` is step ``first_step + i``'s, taken before its update."""
    if engine.config.nonfinite == "record":
        return
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
        offset, member = bad[0]
        raise NonFiniteLossError(
            f"Non-finite training loss at step {first_step + offset} for member {member} "
            f"({engine.members.describe(member)}). {note} Lower the learning rate, or add BN or "
            "max-norm."
        )


def _check_evaluation(records: list[dict], engine: Engine, note: str) -> None:
    """Raises on a non-finite evaluation loss that follows finite training losses: the last
    update broke the weights, which must then be neither recorded nor checkpointed (unless
    ``config.nonfinite`` is ``"record"``)."""
    if engine.config.nonfinite == "record":
        return
    for member, record in enumerate(records):
        if not np.isfinite(record["loss"]):
            raise NonFiniteLossError(
                f"Non-finite {engine.split} loss at the evaluation of step {record['step']} for "
                f"member {member} ({engine.members.describe(member)}). {note} Lower the learning "
                "rate, or add BN or max-norm."
            )


def _tensorboard(engine: Engine, workdir: Path, *, write: bool) -> TensorBoardEvents | None:
    """The run's event writer (``None`` off, or when this process does not ``write``); stale
    events of an earlier attempt are an error in every process."""
    directory = workdir / TENSORBOARD_DIR
    if engine.config.tensorboard:
        if not write:
            return None
        names = [member_run_name(m, engine.members.swept) for m in engine.members]
        return TensorBoardEvents(directory, names, engine.config.probe)
    if directory.exists():
        raise ValueError(
            f"{directory} holds TensorBoard events of an earlier attempt, which this run (with "
            "config.tensorboard off) would leave stale. Rerun with --config.tensorboard=True "
            "(the events are rewritten from the metrics), or delete that directory."
        )
    return None


def _train_interval(engine: Engine, state: TrainState, order, until: int, steps_per_call: int,
                    progress: Progress, note) -> tuple[TrainState, Any, np.ndarray]:
    """Trains to step ``until`` in calls of at most ``steps_per_call`` steps, checking each
    call's losses; returns the state, the data order and the interval's losses ``(steps,
    members)``."""
    losses, step = [], int(state.step)
    while step < until:
        num_steps = min(steps_per_call, until - step)
        state, order, chunk_losses = engine.train(state, order, num_steps)
        chunk_losses = np.asarray(to_host(chunk_losses))
        _check_losses(chunk_losses, step, engine, note())
        losses.append(chunk_losses)
        step += num_steps
        progress.advance(num_steps, chunk_losses)
    return state, order, np.concatenate(losses)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    devices: Sequence[jax.Device] | None = None,
    progress_position: int = 0,
) -> RunResult:
    """Trains every member of the run described by ``config`` and evaluates it.

    The run uses a mesh of ``devices`` (default: every device of every process;
    ``config.mesh``, :func:`bnreg.engine.devices.layout`); ``progress_position`` is the line of
    its progress bar. With several processes (``config.distributed``) every process calls this
    with the same config and work dir (a file system they share); process 0 writes the files.

    Writes into ``workdir``: ``config.json``; ``metrics.jsonl`` (one record per evaluation and
    member, every ``config.eval_every`` steps and at step 0, :func:`member_records`); orbax
    checkpoints every ``config.checkpoint_every`` steps and at the end; ``summary.json`` (the
    final evaluation with every final evaluator) and its SHA-256 ``summary.sha256`` (a run that
    had ended returns its summary unevaluated when the two agree); with
    ``config.tensorboard``, the same metrics as TensorBoard events
    (:mod:`bnreg.engine.writers`). Rerunning with the same ``workdir`` and config
    (``progress``, ``steps_per_call``, ``tensorboard`` may differ) resumes from the latest
    checkpoint; the result equals an uninterrupted run bit for bit.

    Reproducibility: the same config on the same devices gives bit-identical results. Another
    layout of the members (another number of members in the run, or of devices) changes how
    XLA batches their arithmetic, hence the rounding, and over tens of thousands of SGD steps
    the runs then differ like different seeds do: equal in distribution, not in bits. Compare
    runs made with the same layout.

    One process at a time, in a directory of its own: the run refuses a ``workdir`` that holds
    anything but an engine run's files, and holds its lock while it works there
    (:mod:`bnreg.workdir`).

    Raises:
      ValueError: an invalid config (:func:`bnreg.engine.build`), or a workdir that holds a run
        with another config.
      DirectoryInUseError: another process works in ``workdir``.
      NotOwnedError: ``workdir`` holds files an engine run did not make.
      NotWritableError: ``workdir`` or its checkpoints cannot be written (before training).
      NonFiniteLossError: a NaN/inf training or evaluation loss; the last good checkpoint is
        kept, and metrics are recorded up to the last finite evaluation. With
        ``config.nonfinite = "record"`` a diverged member trains on instead, its metrics NaN.
    """
    workdir = Path(workdir)
    workdirs.check_owner(workdir, workdirs.RUN)  # before the data is loaded
    engine = build(config, devices)
    # With several processes, every one checks the work dir and process 0 writes it.
    writes = is_main_process()
    with workdirs.held(workdir, hold=writes):
        workdirs.mark(workdir, workdirs.RUN, write=writes)
        if writes:
            for directory in (workdir, workdir / rundir.CHECKPOINT_DIR):
                workdirs.check_writable(directory)
        return _train_and_evaluate(engine, config, workdir, writes, progress_position)


def _train_and_evaluate(engine: Engine, config: ml_collections.ConfigDict, workdir: Path,
                        writes: bool, progress_position: int) -> RunResult:
    rundir.write_config(workdir, config, write=writes)
    metrics_path = workdir / rundir.METRICS_FILE
    if not config.checkpoint_every:
        # An ended run without checkpoints is its records: its summary (digest verified) and
        # every evaluation up to the last step. Training it again would only repeat them.
        ended = rundir.read_summary(workdir)
        history = rundir.read_history(metrics_path, config.num_steps)
        if ended is not None and history and history[-1]["step"] == config.num_steps:
            return RunResult(history=history, summary=ended, state=None,
                             members=engine.members)
    events = _tensorboard(engine, workdir, write=writes)  # refuses stale events first
    checkpoints = rundir.Checkpoints(workdir, config.checkpoint_every)
    state = checkpoints.restore_latest(engine.init())
    order = engine.empty_order()
    step = int(state.step)
    if writes and step < config.num_steps:
        # A summary beside a run that trains again is stale: a kill during the training must
        # not leave it beside records that disagree with it.
        rundir.remove_summary(workdir)
    history = rundir.read_history(metrics_path, step) if step else []
    wait_for_processes("resumed")  # every process has read the records before they are cut
    if writes:
        # Whole or not at all: a kill here must not leave a cut file no resume could verify.
        rundir.write_atomically(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    progress = Progress(
        total=config.num_steps, initial=step, enabled=config.progress and writes,
        # The part, phase and net of a study's run (its directory's last three parts).
        description=f"{'/'.join(workdir.absolute().parts[-3:])}: {config.dataset} × "
                    f"{len(engine.members)} members",
        metric="accuracy" if "accuracy" in engine.network.task.metrics else "loss",
        position=progress_position,
    )

    def log(records):
        history.extend(records)
        if writes:
            rundir.write_jsonl(metrics_path, records, "a")
        if events:
            events.write(records)
        progress.evaluated(records)

    steps_per_call = config.steps_per_call or config.eval_every
    # A run that had ended keeps its summary: its final evaluation can cost minutes (Z samples).
    ended = rundir.read_summary(workdir) if step == config.num_steps else None
    with contextlib.closing(progress), contextlib.closing(checkpoints), (
        contextlib.closing(events) if events else contextlib.nullcontext()
    ):
        if events:
            events.write(history)  # a resumed run's records so far
        if step == 0:
            log(member_records(engine, 0, engine.evaluate(state, engine.during), None))
        else:
            progress.evaluated([r for r in history if r["step"] == step])
        try:
            while step < config.num_steps:
                next_evaluation = min((step // config.eval_every + 1) * config.eval_every,
                                      config.num_steps)
                state, order, losses = _train_interval(
                    engine, state, order, next_evaluation, steps_per_call, progress,
                    lambda: checkpoints.note(workdir),
                )
                step = int(state.step)
                results = engine.evaluate(state, engine.during)
                if step in engine.config.evaluation.full_steps:
                    results.update(engine.evaluate(state, engine.full))
                records = member_records(engine, step, results, losses)
                _check_evaluation(records, engine, checkpoints.note(workdir))
                log(records)
                if checkpoints.save_if_due(step, state, last=step == config.num_steps) and events:
                    events.flush()
        except KeyboardInterrupt:
            raise Interrupted({str(workdir): step}) from None
        summary = ended
        if summary is None:
            final = member_records(engine, step, engine.evaluate(state, engine.final), None)
            summary = _summary(engine, state, final)
            if writes:
                rundir.write_summary(workdir, summary)
        if events:
            events.write_summary(summary)
    return RunResult(history=history, summary=summary, state=state, members=engine.members)


def train_concurrently(
    runs: Sequence[tuple[ml_collections.ConfigDict, str | Path]],
) -> list[RunResult]:
    """:func:`train_and_evaluate` of every ``(config, workdir)`` in ``runs``, at the same time
    when there are several local devices: each run on its own share of them, all shares of one
    size (``devices // runs``, at least one), from a thread per share. When there are more runs
    than shares, each share makes one run at a time and then the next run not yet started, so
    that memory holds one run's compilation and data per share, not every run's (12 runs
    compiling at once on 2 devices peaked at 23 GB), and no share idles while runs wait. Which
    share makes which run then depends on how long runs take; their results do not, on devices
    of one kind. With one device, several processes, or runs that ask for a mesh
    of their own (``config.mesh`` other than its defaults), the runs are made one after another,
    each on every device. Every run is checked (:func:`bnreg.engine.check`) before any trains.

    Each run's results equal those of the same run made alone on the same devices.

    The threads are daemons: an interrupt (Ctrl-C) ends the process at once, as a kill would,
    and rerunning resumes each run from its last checkpoint.

    Raises:
      The error of the first failed run (in the order of ``runs``), after every run has ended.
    """
    for config, _ in runs:  # every run's bad input is an error before any run trains
        check(config)
    devices = jax.local_devices()
    own_mesh = any(config.mesh.data > 1 or config.mesh.members for config, _ in runs)
    if len(runs) < 2 or len(devices) < 2 or own_mesh or jax.process_count() > 1:
        return [train_and_evaluate(config, workdir) for config, workdir in runs]
    outcomes: list[tuple[RunResult | None, BaseException | None]] = [(None, None)] * len(runs)
    # Shares of one size, so that runs of as many members lay them out alike (and round alike).
    size = max(1, len(devices) // len(runs))
    shares = [devices[start:start + size] for start in range(0, len(devices) - size + 1, size)]
    workers = min(len(shares), len(runs))
    # Worker w makes run w, then whichever run is next: a share never idles while runs wait.
    waiting = iter(range(workers, len(runs)))
    next_run = threading.Lock()

    def work(worker: int) -> None:
        index: int | None = worker
        while index is not None:
            config, workdir = runs[index]
            try:
                result = train_and_evaluate(config, workdir, devices=shares[worker],
                                            progress_position=index)
                outcomes[index] = (result, None)
            except BaseException as error:  # handed to the calling thread below
                outcomes[index] = (None, error)
            with next_run:
                index = next(waiting, None)

    threads = [threading.Thread(target=work, args=(worker,), daemon=True)
               for worker in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        raise Interrupted({str(workdir): _last_step(Path(workdir))
                           for (_, workdir), (result, error) in zip(runs, outcomes, strict=True)
                           if result is None and error is None
                           and (Path(workdir) / rundir.METRICS_FILE).exists()}) from None
    for _, error in outcomes:
        if error is not None:
            raise error
    return [result for result, _ in outcomes]


def train_group(
    config: ml_collections.ConfigDict,
    runs: Mapping[str, Mapping[str, Any]],
    workdir: str | Path,
) -> dict[str, RunResult]:
    """Trains a group of runs that differ in structure: run ``name`` is ``config`` with the
    dotted-key ``runs[name]`` overrides (:func:`bnreg.config.override`, e.g. ``{"model.norm":
    "batch"}``), in ``workdir / name``, all at the same time on shares of the devices
    (:func:`train_concurrently`). Every run is checked before any trains.

    Returns:
      ``{name: RunResult}`` in the order of ``runs``.
    """
    configs = {name: override(config, overrides) for name, overrides in runs.items()}
    results = train_concurrently([(configs[name], Path(workdir) / name) for name in runs])
    return dict(zip(runs, results, strict=True))
