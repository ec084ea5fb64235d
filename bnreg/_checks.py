"""Argument checks shared by the core, the models, the data layer and the config (private).

Each check fails loudly with a message that says what to pass instead, and returns the value in
the form the caller uses (a Python float, bool or int), so a call site reads
``rate = check_rate(rate)``.
"""

from __future__ import annotations

import operator
from collections.abc import Collection
from typing import Any

import jax
import numpy as np


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a tracer (an argument of a jitted, vmapped or differentiated
    function), whose value cannot be checked in Python."""
    return isinstance(value, jax.core.Tracer)


def check_rate(rate: Any, name: str = "rate") -> float | jax.Array:
    """A drop probability: a concrete number in ``[0, 1)`` returned as a Python float, or a
    traced scalar returned as it is (its value cannot be checked; the engine checks its config
    values before tracing them).

    Raises:
      TypeError: not a number, or not a scalar.
      ValueError: a concrete value outside ``[0, 1)`` (NaN included).
    """
    if isinstance(rate, str | bytes | bool | np.bool_):
        # float("0.5") and float(True) would pass: a rate is a number, not its spelling or a flag.
        raise TypeError(f"{name} must be a number in [0, 1), got {rate!r}.")
    if np.ndim(rate) != 0:
        raise TypeError(f"{name} must be a scalar, got shape {np.shape(rate)}.")
    if is_traced(rate):
        return rate
    try:
        value = float(rate)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number in [0, 1), got {rate!r}.") from err
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} is a drop probability and must lie in [0, 1), got {value}. "
            "(The papers' retain probability is p = 1 - rate.)"
        )
    return value


def check_static_bool(value: Any, name: str) -> bool:
    """A flag that selects a code path, so it must be static: a Python or NumPy bool."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"{name} must be a Python (or NumPy) bool, static under jax.jit; got {value!r}."
        )
    return bool(value)


def check_key(key: Any, function_name: str) -> None:
    """A stochastic call needs a key; say how to give one (or how to turn the noise off)."""
    if key is None:
        raise ValueError(
            f"{function_name} needs a jax.random key when deterministic=False: pass a key "
            "(e.g. jax.random.key(0)), or deterministic=True for evaluation."
        )


def check_positive_int(value: Any, name: str) -> int:
    """A static Python int ``>= 1`` (a count that sets a shape or a loop length)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a Python int (static under jax.jit), got {value!r}.")
    try:
        value = operator.index(value)
    except TypeError as err:
        raise TypeError(
            f"{name} must be a Python int (static under jax.jit), got {value!r}."
        ) from err
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return value


def check_count(value: Any, name: str, low: int, high: int) -> int:
    """An int (Python or NumPy, not bool) in ``[low, high]``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """One of ``choices``; the message lists them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value
