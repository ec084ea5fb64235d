"""Whether a run's members fit in memory, estimated before anything is allocated.

A run whose state cannot fit does not fail cleanly on every backend: on XLA:CPU an allocation
beyond the host's memory can leave the process waiting forever (the first read of the state
never returns). The pre-flight (:func:`bnreg.engine.check`) therefore compares a lower bound of
what training needs — every member's state (parameters, optimizer state, BN statistics) and its
gradients, from the shapes alone (:func:`jax.eval_shape`) — with the memory the devices have
free, and refuses a run that cannot fit, saying what to shrink. Activations and XLA's
temporaries come on top, so passing the check does not promise the run fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from bnreg.engine.members import Members
from bnreg.engine.step import Network, init_members

GIB = 2**30


class OutOfMemoryError(ValueError):
    """A run whose members cannot fit in the devices' memory."""


def state_bytes(network: Network, members: Members, image_shape: Sequence[int]) -> int:
    """Bytes of every member's training state, from its shapes (nothing is allocated)."""
    sample = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    shapes = jax.eval_shape(lambda images: init_members(network, members, images), sample)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))


def available_bytes(devices: Sequence[jax.Device]) -> int | None:
    """Free memory of ``devices``: the accelerators' own (summed), or the host's for CPU
    devices (which share it: counted once); None where the platform does not say."""
    if all(device.platform == "cpu" for device in devices):
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None
    total = 0
    for device in devices:
        stats = device.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        total += stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return total


def check_memory(network: Network, members: Members, image_shape: Sequence[int],
                 devices: Sequence[jax.Device]) -> None:
    """Refuses a run whose members' state and gradients exceed the devices' free memory.

    Raises:
      OutOfMemoryError: with the estimate, what is free, and what to shrink.
    """
    available = available_bytes(devices)
    if available is None:
        return
    state = state_bytes(network, members, image_shape)
    needed = 2 * state  # the state and, while a step runs, its gradients
    if needed > available:
        raise OutOfMemoryError(
            f"The run's {len(members)} member{'s' * (len(members) != 1)} need at least "
            f"{needed / GIB:.1f} GiB (their state, {state / GIB:.1f} GiB, and its gradients) "
            f"and the devices have {available / GIB:.1f} GiB free: shrink the model "
            "(config.model.hidden_sizes or its widths), train fewer members at once "
            "(config.sweep), or use a device with more memory.")
