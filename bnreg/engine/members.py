"""A run's members: the cross (and zip) of its sweep axes, and each member's key streams.

A member is one network of a run, named by a value on every axis of
:data:`bnreg.config.AXES` (seed, learning rate, dropout rates, DropConnect rate, max-norm ``c``,
L2 ``λ``, final momentum, BN momentum, training-subset size). The axes a run sweeps
(``config.sweep``) are crossed in the order of :data:`~bnreg.config.AXES` — the seed varies
fastest — except the groups of ``config.sweep_zip``, which advance together; every other axis
takes its fixed config value.

**Traced or constant.** An axis whose members all share one value is compiled in as a constant,
exactly as a run without a sweep; an axis with several values is traced — an array with one
entry per member, ``vmap``-ed with the rest of the member state — so a whole grid is one
compilation. A rate of 0, ``c`` off (0) and ``λ`` 0 inside a traced axis give exactly the plain
net (:mod:`bnreg.core`), so on/off can be an axis too. A member of a sweep equals the same
member run alone to float rounding, not bit for bit: the two programs are compiled apart (XLA
fuses them differently), and a traced BN momentum's ``1 − m`` is computed in float32 where a
Python one is computed in float64.

**Pairing.** A member's random streams derive from its seed alone (:func:`stream_key`):
initialisation, data order, dropout masks, Alg. 2's batches, the evaluators' samples, and its
training subset. Members that differ only in a hyperparameter therefore start from the same
weights and see the same batches in the same order (and, for the same rates, the same masks):
they are paired by design, and analyses pair them by seed.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bnreg.config import AXES, INTEGER_AXES, axis_value


class Stream(enum.IntEnum):
    """The streams folded into a member's key (``jax.random.fold_in(key, stream)``)."""

    INIT = 0
    DATA = 1
    DROPOUT = 2
    POPULATION = 3
    MONTE_CARLO = 4
    GAUSSIAN = 5


def stream_key(key: jax.Array, stream: Stream) -> jax.Array:
    """The key of one of a member's streams, from the member's (raw ``uint32``) key."""
    return jax.random.fold_in(key, int(stream))


@dataclasses.dataclass(frozen=True)
class Members:
    """The members of a run, in the order of the member axis.

    Attributes:
      values: ``axis -> (members,)`` NumPy array, every axis of :data:`~bnreg.config.AXES`.
      swept: the axes with more than one value among the members (traced in the program).
    """

    values: Mapping[str, np.ndarray]
    swept: tuple[str, ...]

    # Traced even when shared: the optimizer reads the learning rate from the member state.
    ALWAYS_TRACED = ("learning_rate",)

    @property
    def traced_axes(self) -> tuple[str, ...]:
        """The axes held as per-member arrays in the program: the swept ones and the learning
        rate."""
        return tuple(a for a in AXES if a in self.swept or a in self.ALWAYS_TRACED)

    def __len__(self) -> int:
        return len(self.values["seed"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.member(index) for index in range(len(self)))

    def member(self, index: int) -> dict[str, Any]:
        """One member's values as Python numbers, by axis."""
        return {axis: values[index].item() for axis, values in self.values.items()}

    def constant(self, axis: str) -> float | int:
        """The value every member shares on an axis that is not swept.

        Raises:
          ValueError: the axis is swept.
        """
        if axis in self.swept:
            raise ValueError(f"axis {axis!r} is swept: its value differs between members.")
        return self.values[axis][0].item()

    def uses(self, axis: str) -> bool:
        """Whether any member has a non-zero value on ``axis`` (a regularizer compiled in)."""
        return bool(np.any(self.values[axis] != 0))

    def traced(self) -> dict[str, jax.Array]:
        """The :attr:`traced_axes` as float32 (integer axes int32) arrays, one entry per member:
        the part of the member state that is ``vmap``-ed (:class:`bnreg.engine.step.TrainState`)."""
        return {
            axis: jnp.asarray(
                self.values[axis], jnp.int32 if axis in INTEGER_AXES else jnp.float32
            )
            for axis in self.traced_axes
        }

    def keys(self) -> jax.Array:
        """Each member's raw ``uint32`` key data from its seed, ``(members, 2)``."""
        return jnp.stack(
            [jax.random.key_data(jax.random.key(int(seed))) for seed in self.values["seed"]]
        )

    def describe(self, index: int) -> str:
        """A member for messages: its swept values, or its seed when nothing is swept."""
        member = self.member(index)
        shown = self.swept or ("seed",)
        return ", ".join(f"{axis} {member[axis]:g}" for axis in shown)


def members_from_config(config: ml_collections.ConfigDict) -> Members:
    """The run's members: the cross of ``config.sweep``'s axes (in :data:`AXES` order, the seed
    fastest), each ``config.sweep_zip`` group advancing together, every other axis at its fixed
    value. The config must have passed :func:`bnreg.config.validate_config`."""
    zipped = {axis: tuple(group) for group in config.sweep_zip for axis in group}
    factors: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
    for axis in AXES:
        if axis not in config.sweep or (axis in zipped and zipped[axis][0] != axis):
            continue
        group = zipped.get(axis, (axis,))
        factors.append((group, list(zip(*(config.sweep[a] for a in group), strict=True))))
    columns: dict[str, list[Any]] = {axis: [] for axis in AXES}
    for combination in itertools.product(*(points for _, points in factors)):
        chosen = {
            axis: value
            for (group, _), point in zip(factors, combination, strict=True)
            for axis, value in zip(group, point, strict=True)
        }
        for axis in AXES:
            columns[axis].append(chosen.get(axis, axis_value(config, axis)))
    values = {
        axis: np.asarray(column, np.int64 if axis in INTEGER_AXES else np.float64)
        for axis, column in columns.items()
    }
    swept = tuple(axis for axis in AXES if len(np.unique(values[axis])) > 1)
    return Members(values=values, swept=swept)
