"""Where a run's members live: spread over the local devices, or on one.

On a CPU, one XLA device per core (``jax_num_cpu_devices``, which :mod:`bnreg.cli` sets for a
study's command) beats XLA's intra-op threading for these small networks
(benchmarks/README.md): a run's members spread over the devices when their count divides the
member count, and the runs of a group train at the same time, one share of the devices each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bnreg.engine.step import MEMBER_AXES, DataOrder, TrainState


def member_devices(
    num_members: int, devices: Sequence[jax.Device] | None = None
) -> list[jax.Device]:
    """The devices a run of ``num_members`` members uses: all of ``devices`` (default: the local
    devices) when their count divides the member count, else the first one."""
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device (or be None for all).")
    return devices if num_members % len(devices) == 0 else devices[:1]


def _mesh(devices: Sequence[jax.Device]) -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.asarray(devices), ("members",))


def shard_members(tree: TrainState | DataOrder, devices: Sequence[jax.Device]) -> Any:
    """Places a :class:`TrainState` or :class:`DataOrder` on ``devices``: the member axis spread
    over them (the scalar ``step``/shared ``epoch`` replicated), so jit runs each device's
    members there; on one device, all of it there. A :class:`DataOrder` of per-member subsets
    (different lengths) is replicated."""
    if len(devices) == 1:
        return jax.device_put(tree, devices[0])
    mesh = _mesh(devices)
    by_member = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
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


def replicate(tree: Any, devices: Sequence[jax.Device]) -> Any:
    """``tree`` (host arrays) on every one of ``devices`` (the data every member reads)."""
    if len(devices) == 1:
        return jax.device_put(tree, devices[0])
    return jax.device_put(
        tree, jax.sharding.NamedSharding(_mesh(devices), jax.sharding.PartitionSpec())
    )
