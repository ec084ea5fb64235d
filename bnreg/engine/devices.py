"""Where a run's members and batches live: a device mesh of a ``members`` and a ``data`` axis.

Members spread over the ``members`` axis (each device trains its share of the members); each
member's batch is split over the ``data`` axis (each device computes the step on its share of
the member's examples). The split is JAX's own: the batch is constrained to the mesh inside the
compiled step and XLA's SPMD partitioner inserts the collectives — the gradient's sum over the
batch, BN's moments over the batch — so a member's step on a mesh is the same function as on
one device (global-batch semantics, equal to float rounding). Ghost BN (``model.bn_ghost_size``)
normalises each consecutive group of examples on its own; a ghost size that divides the
per-device batch keeps each group on one device, so BN then needs no communication.

On a CPU, one XLA device per core (``jax_num_cpu_devices``, which :mod:`bnreg.cli` sets for a
study's command) beats XLA's intra-op threading for these small networks
(benchmarks/README.md): by default (``mesh.members`` 0, ``mesh.data`` 1) a run's members spread
over the devices when their count divides the member count, and the runs of a group train at
the same time, one share of the devices each.

Several processes (``jax.distributed``, :func:`initialize_processes`) see one mesh over all
their devices: host arrays are placed with ``jax.device_put`` (every process holds the same
data), and results come back to every process with :func:`to_host`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from bnreg.engine.step import MEMBER_AXES, DataOrder, TrainState

MESH_AXES = ("members", "data")


@dataclasses.dataclass(frozen=True)
class Layout:
    """A run's mesh: ``members`` devices × ``data`` devices.

    Attributes:
      mesh: the ``jax.sharding.Mesh`` of axes :data:`MESH_AXES`.
    """

    mesh: jax.sharding.Mesh

    @property
    def devices(self) -> tuple[jax.Device, ...]:
        return tuple(self.mesh.devices.flat)

    @property
    def data_size(self) -> int:
        return self.mesh.shape["data"]

    def sharding(self, *axes: str | None) -> NamedSharding:
        """The sharding that splits an array's leading axes over the named mesh axes."""
        return NamedSharding(self.mesh, PartitionSpec(*axes))

    def batch_sharding(self, member_axis: bool) -> NamedSharding:
        """A step's batch: ``(members, B, ...)`` (``member_axis``) or one member's ``(B, ...)``
        split over the data axis."""
        return self.sharding("members", "data") if member_axis else self.sharding("data")


def splits_members_correctly(model_name: str) -> bool:
    """Whether XLA computes a run of this model correctly with its members split over several
    devices. Not convolutional nets on a CPU: there, with the members of an Inception run
    split over two CPU devices, the first update already differs from the same members on one
    device by 2% of the loss, and the runs diverge within tens of steps (jax 0.10.2), while the
    same program on one device equals each member run alone; the MLPs agree to rounding
    (``tests/test_scale_out.py``)."""
    return model_name not in ("convnet", "inception") or jax.default_backend() != "cpu"


def layout(num_members: int, batch_size: int, mesh_config: ml_collections.ConfigDict,
           devices: Sequence[jax.Device] | None = None, *,
           split_members: bool = True) -> Layout:
    """The mesh of a run of ``num_members`` members and batches of ``batch_size`` on
    ``devices`` (default: every device of every process).

    ``mesh_config.data`` devices split each member's batch; ``mesh_config.members`` devices
    share the members (0: all the devices left, ``len(devices) // data``, when that divides the
    member count, else one; one when not ``split_members``).

    Raises:
      ValueError: the mesh needs more devices than there are, the members or the batch do not
        divide evenly over their axis, or members split over devices that compute such a
        split wrongly (``split_members`` False, :func:`splits_members_correctly`).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device (or be None for all).")
    data, members = mesh_config.data, mesh_config.members
    if data > len(devices):
        raise ValueError(
            f"config.mesh.data is {data}, but the run has {len(devices)} device(s). On a CPU, "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices; or lower "
            "config.mesh.data.")
    if batch_size % data:
        raise ValueError(f"config.batch_size ({batch_size}) must divide evenly over the "
                         f"config.mesh.data={data} devices of the data axis.")
    if members > 1 and not split_members:
        raise ValueError(
            f"config.mesh.members is {members}, but this model's members cannot be split over "
            "devices of this platform (bnreg.engine.devices.splits_members_correctly): XLA "
            "computes such a run wrongly. Set config.mesh.members to 1 (or 0).")
    if members == 0:
        members = len(devices) // data if split_members else 1
        members = members if num_members % members == 0 else 1
    elif members * data > len(devices):
        raise ValueError(
            f"config.mesh asks for {members} × {data} = {members * data} devices (members × "
            f"data), but the run has {len(devices)}.")
    elif num_members % members:
        raise ValueError(f"The run's {num_members} members must divide evenly over the "
                         f"config.mesh.members={members} devices of the members axis.")
    if jax.process_count() > 1 and members * data != len(devices):
        raise ValueError(
            f"With {jax.process_count()} processes the mesh must hold all {len(devices)} "
            f"devices (every process takes part in every step), but config.mesh gives "
            f"{members} × {data}: set config.mesh.members × config.mesh.data = {len(devices)}.")
    grid = np.asarray(devices[:members * data], dtype=object).reshape(members, data)
    return Layout(jax.sharding.Mesh(grid, MESH_AXES))


def check_mesh(config: ml_collections.ConfigDict, num_members: int) -> None:
    """The mesh's checks of :func:`layout` and the ghost size against the per-device batch,
    on every device there is (a group's run may get a share of them)."""
    layout(num_members, config.batch_size, config.mesh,
           split_members=splits_members_correctly(config.model.name))
    ghost, per_device = config.model.bn_ghost_size, config.batch_size // config.mesh.data
    if ghost and per_device % ghost:
        raise ValueError(
            f"config.model.bn_ghost_size ({ghost}) must divide each device's share of the batch "
            f"(config.batch_size {config.batch_size} / config.mesh.data {config.mesh.data} = "
            f"{per_device}), so that every ghost batch lives on one device.")


def shard_members(tree: TrainState | DataOrder, layout: Layout) -> Any:
    """Places a :class:`TrainState` or :class:`DataOrder` on the mesh: the member axis spread
    over the ``members`` axis and replicated over ``data`` (the scalar ``step``/shared
    ``epoch`` replicated everywhere). A :class:`DataOrder` of per-member subsets (different
    lengths) is replicated. On a one-device mesh, all of it on that device (as the compiled
    chunk returns it, so that the next call needs no other compilation)."""
    if len(layout.devices) == 1:
        return jax.device_put(tree, layout.devices[0])
    if jax.process_count() > 1:
        # A process's own device arrays cannot be put on other processes' devices; their
        # values (the same in every process) can.
        tree = jax.tree.map(lambda x: x if isinstance(x, jax.Array) and not x.is_fully_addressable
                            else np.asarray(x), tree)
    replicated = layout.sharding()
    # Split over a members axis of one device is replicated, as the compiled chunk returns it.
    by_member = layout.sharding("members") if layout.mesh.shape["members"] > 1 else replicated
    if isinstance(tree, DataOrder):
        if isinstance(tree.permutations, tuple):
            return jax.device_put(tree, replicated)
        return jax.device_put(tree, DataOrder(replicated, by_member))
    shardings = jax.tree.map(
        lambda axis: replicated if axis is None else by_member,
        MEMBER_AXES,
        is_leaf=lambda axis: axis is None,
    )
    return jax.device_put(tree, shardings)


def replicate(tree: Any, layout: Layout) -> Any:
    """``tree`` (host arrays, the same in every process) on every device of the mesh."""
    if len(layout.devices) == 1:
        return jax.device_put(tree, layout.devices[0])
    return jax.device_put(tree, layout.sharding())


def to_host(tree: Any) -> Any:
    """``tree``'s arrays as NumPy arrays, whole, in every process (an array sharded over other
    processes' devices is gathered)."""
    def whole(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return multihost_utils.process_allgather(leaf, tiled=True)  # every process calls
        return jax.device_get(leaf)

    return jax.tree.map(whole, tree)


def wait_for_processes(name: str) -> None:
    """A barrier of every process (none with one process): e.g. after process 0 moved files
    that the others read next."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_main_process() -> bool:
    """Whether this process writes the run's files (process 0; the only one without
    ``jax.distributed``)."""
    return jax.process_index() == 0


def initialize_processes(distributed: ml_collections.ConfigDict) -> None:
    """Starts ``jax.distributed`` for a run of several processes, before anything touches a
    device; a no-op for one process or when it has already started.

    ``distributed.num_processes`` 1 is one process; ``N > 1`` takes ``coordinator_address``
    and ``process_id`` from the config or, unset, from the standard environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_PROCESS_ID``); 0 leaves all three to JAX's cluster
    detection (SLURM, Open MPI, Kubernetes, Cloud TPU) and ``JAX_COORDINATOR_ADDRESS``. On CPUs
    the processes exchange data through gloo (``jax_cpu_collectives_implementation``). Every
    process waits ``distributed.timeout_s`` for the others; past it JAX aborts the process (a
    C++ abort, not a Python error), so the wait is announced on stderr first.

    Raises:
      ValueError: ``num_processes`` > 1 without a coordinator address or process id.
    """
    if distributed.num_processes == 1 or jax.distributed.is_initialized():
        return
    if distributed.num_processes == 0:
        jax.config.update("jax_cpu_collectives_implementation", distributed.cpu_collectives)
        jax.distributed.initialize(coordinator_address=distributed.coordinator_address,
                                   initialization_timeout=distributed.timeout_s)
        return
    address = distributed.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    process_id = distributed.process_id
    if process_id < 0 and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if not address or not 0 <= process_id < distributed.num_processes:
        raise ValueError(
            f"config.distributed.num_processes is {distributed.num_processes}: each process "
            "needs config.distributed.coordinator_address (host:port of process 0) and its "
            "config.distributed.process_id, or JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID in "
            f"its environment (a process id in [0, {distributed.num_processes})); "
            "num_processes 0 lets JAX detect a cluster (SLURM, MPI, TPU).")
    jax.config.update("jax_cpu_collectives_implementation", distributed.cpu_collectives)
    # Past the timeout JAX aborts the process from C++ (no Python error to catch): say first
    # what it waits for.
    print(f"process {process_id}: waiting up to {distributed.timeout_s} s for "
          f"{distributed.num_processes} processes at {address} (config.distributed.timeout_s)",
          file=sys.stderr, flush=True)
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=distributed.num_processes, process_id=process_id,
                               initialization_timeout=distributed.timeout_s)
