"""Reading a run's metrics history (``metrics.jsonl``) into arrays for analysis and plots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def curves(history: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The values of ``key`` over training, per member.

    Args:
      history: records as written by :func:`bnreg.train.train_and_evaluate`.
      key: a record field, e.g. ``"test_accuracy"`` or ``"probe_percentiles"``.

    Returns:
      ``steps`` ``(T,)`` and ``values`` ``(members, T, ...)``, members in member order.

    Raises:
      KeyError: no record has ``key``.
      ValueError: the members were not evaluated at the same steps.
    """
    if not history or key not in history[0]:
        raise KeyError(f"no metrics field {key!r}; fields: {sorted(history[0]) if history else []}")
    members = sorted({r["member"] for r in history})
    per_member = {m: [r for r in history if r["member"] == m] for m in members}
    steps = [r["step"] for r in per_member[members[0]]]
    if any([r["step"] for r in records] != steps for records in per_member.values()):
        raise ValueError("members were evaluated at different steps")
    values = np.asarray([[r[key] for r in per_member[m]] for m in members], dtype=np.float64)
    return np.asarray(steps), values


def select_members(history: Sequence[dict], **fields) -> list[dict]:
    """The records whose fields equal ``fields`` (e.g. ``learning_rate=0.1``)."""
    return [r for r in history if all(r[name] == value for name, value in fields.items())]


def first_step_reaching(steps: np.ndarray, curve: np.ndarray, threshold: float) -> int | None:
    """The first evaluated step at which ``curve`` is at least ``threshold`` (None if never)."""
    reached = np.flatnonzero(curve >= threshold)
    return int(steps[reached[0]]) if reached.size else None


def mean_std(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1; 0 for a single member) along ``axis``."""
    values = np.asarray(values, dtype=np.float64)
    ddof = 1 if values.shape[axis] > 1 else 0
    return values.mean(axis), values.std(axis, ddof=ddof)


def mean_confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` (e.g. one number per seed) and the two-sided Student-t confidence
    interval of that mean at ``level``: ``(mean, low, high)``. With one value nothing bounds the
    mean, and the interval is ``(-inf, inf)``.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = float(values.mean())
    if values.size < 2:
        return mean, -np.inf, np.inf
    half_width = stats.t.ppf(0.5 + level / 2, values.size - 1) * stats.sem(values)
    return mean, mean - float(half_width), mean + float(half_width)
