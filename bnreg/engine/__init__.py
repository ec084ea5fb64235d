"""The training engine: one loop for every study.

A *run* trains *members* — the cross (or zip) of its sweep axes over seed, learning rate,
dropout and DropConnect rates, max-norm ``c``, L2 ``λ``, final momentum, BN momentum and
training-subset size (:mod:`bnreg.engine.members`) — as one compiled program: every per-member
function is written for one member and ``jax.vmap``-ed over a leading member axis, so a grid
costs one compilation and one pass of Python per chunk of steps, not one per member. Settings
that change shapes or structure are a *group* of runs (:func:`train_group`), trained at the same
time on shares of the devices. A run may also split each member's batch over devices: a mesh
of a ``members`` and a ``data`` axis (``config.mesh``, :mod:`bnreg.engine.devices`), over one
process or several (``config.distributed``).

Speed comes from fusing whole chunks of steps with ``lax.scan`` (no Python per step): the
training split lives on the device, each step's batch is drawn inside the compiled loop, and
the state buffers are donated to the next chunk (:mod:`bnreg.engine.step`).

Keys: each member's streams derive from its seed (:class:`bnreg.engine.members.Stream`), so
members that differ only in a hyperparameter are paired: same initial weights, same data order.

Evaluation (:mod:`bnreg.engine.evaluators`): the deterministic network; BN with EMA, Alg. 2 or
settled-EMA statistics (:mod:`bnreg.engine.bn_statistics`); Monte-Carlo averaging of thinned
nets; DropConnect's Gaussian inference — chosen by name in ``config.evaluation``.

Modules: ``members`` (axes, sweeps, key streams), ``run_data`` (data and subsets),
``optimizer`` (schedules, the per-member optimizer), ``tasks`` (losses and metrics), ``step``
(state, train step, compiled chunk, sampling), ``devices`` (the members × data mesh, data
parallelism, several processes), ``bn_statistics``, ``evaluators``, ``checks`` (what a run's
members, model and evaluators must agree on), ``engine`` (:class:`Engine`: build, init, train
k steps, evaluate), ``rundir`` (config check, checkpoints, metrics files), ``writers``
(TensorBoard, progress bar), ``run`` (the run loop and groups). A run's directory is one process's
at a time and bnreg's own (:mod:`bnreg.workdir`).
"""

from bnreg.engine.bn_statistics import (
    ema_settling_batches,
    population_batch_indices,
    population_statistics,
    settled_ema_statistics,
)
from bnreg.engine.devices import Layout, initialize_processes, layout
from bnreg.engine.engine import Engine, build, check
from bnreg.engine.evaluators import Evaluator, ProbeSpec, evaluate
from bnreg.engine.members import Members, Stream, members_from_config, stream_key
from bnreg.engine.optimizer import build_optimizer
from bnreg.engine.run import (
    Interrupted,
    NonFiniteLossError,
    RunResult,
    member_records,
    train_and_evaluate,
    train_concurrently,
    train_group,
)
from bnreg.engine.run_data import RunData, load_run_data, member_subsets
from bnreg.engine.rundir import CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from bnreg.engine.step import (
    DataOrder,
    Network,
    Sampler,
    TrainState,
    init_members,
    make_train_chunk,
    train_step,
)
from bnreg.engine.tasks import Task, build_task
from bnreg.workdir import LOCK_FILE, MARKER_FILE, DirectoryInUseError, NotOwnedError

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LOCK_FILE",
    "MARKER_FILE",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "DataOrder",
    "DirectoryInUseError",
    "Engine",
    "Evaluator",
    "Interrupted",
    "Layout",
    "Members",
    "Network",
    "NonFiniteLossError",
    "NotOwnedError",
    "ProbeSpec",
    "RunData",
    "RunResult",
    "Sampler",
    "Stream",
    "Task",
    "TrainState",
    "build",
    "build_optimizer",
    "build_task",
    "check",
    "ema_settling_batches",
    "evaluate",
    "init_members",
    "initialize_processes",
    "layout",
    "load_run_data",
    "make_train_chunk",
    "member_records",
    "member_subsets",
    "members_from_config",
    "population_batch_indices",
    "population_statistics",
    "settled_ema_statistics",
    "stream_key",
    "train_and_evaluate",
    "train_concurrently",
    "train_group",
    "train_step",
]
