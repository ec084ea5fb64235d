"""Statistics over seeds: mean ± sample std (ddof=1; 0 for one seed), the two-sided Student-t
interval of the mean (unbounded for one seed), per-group summaries, and a sweep's best setting.
NaN is refused: a diverged seed must be handled, not averaged away."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bnreg.analysis.tables import require_columns


def seed_values(values: Any, what: str = "values") -> np.ndarray:
    """``values`` (one number per seed) as a 1-D float array; ValueError if empty or NaN."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(f"{what} must be one number per seed (1-D), got shape {array.shape}")
    array = array.reshape(-1)
    if array.size == 0:
        raise ValueError(f"no {what}: select rows that hold at least one seed")
    if np.isnan(array).any():
        raise ValueError(f"{what} contain NaN: drop or select the rows that hold a value first")
    return array


def mean_std(values: Any) -> tuple[float, float]:
    """The mean and sample standard deviation (ddof=1) of ``values``, one number per seed; the
    std of a single value is 0.0."""
    values = seed_values(values)
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return float(values.mean()), float(std)


def confidence_interval(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` (one number per seed) and the two-sided
    Student-t interval of that mean at ``level`` (``n − 1`` degrees of freedom, standard error
    with ddof=1). With one value nothing bounds the mean: ``(mean, -inf, inf)``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    values = seed_values(values)
    mean = float(values.mean())
    if values.size < 2:
        return mean, -np.inf, np.inf
    half_width = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * stats.sem(values))
    return mean, mean - half_width, mean + half_width


def describe(
    frame: pd.DataFrame, value: str, by: Sequence[str], *, level: float = 0.95, scale: float = 1.0
) -> pd.DataFrame:
    """``scale × value`` summarised per group of rows with equal ``by`` columns (any columns, or
    one column's name; none: one group of all rows).

    Returns columns ``*by, n, mean, std, low, high``: the number of rows, :func:`mean_std` and
    the :func:`confidence_interval` at ``level``; one row per group, sorted by ``by`` (NaN keys
    last). Every row counts as one seed: select one step (or use :func:`finals`) first. A NaN
    value is an error naming its group.
    """
    by = [by] if isinstance(by, str) else list(by)
    require_columns(frame, [value, *by])
    groups = frame.groupby(by, sort=True, dropna=False) if by else [((), frame)]
    rows = []
    for key, group in groups:
        what = f"{value!r} in the group {dict(zip(by, key, strict=True))}"
        values = scale * seed_values(group[value], what)
        mean, std = mean_std(values)
        _, low, high = confidence_interval(values, level)
        rows.append((*key, values.size, mean, std, low, high))
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "low", "high"])


def scores(frame: pd.DataFrame, value: str, by: str) -> dict[Any, tuple[float, float]]:
    """``{setting: (mean, std)}`` of ``value`` over the rows (seeds) of each setting of the
    column ``by`` (e.g. a sweep's final accuracy per learning rate): :func:`describe`'s."""
    table = describe(frame, value, by)
    return {key: (mean, std) for key, mean, std in zip(table[by], table["mean"], table["std"],
                                                         strict=True)}


def best(scores: Mapping[Any, tuple[float, float]]) -> Any:
    """The setting of :func:`scores` with the highest mean (the first of a tie)."""
    return max(scores, key=lambda setting: scores[setting][0])


def lowest_mean(frame: pd.DataFrame, value: str, by: Sequence[str]) -> dict[str, Any] | None:
    """The setting of the ``by`` columns whose rows (seeds) have the lowest mean ``value`` (the
    first of a tie), as ``{column: value}``; a setting with a NaN row (a diverged seed) is never
    chosen — ``None`` when every setting has one. A sweep's choice: NaN is information here,
    not an error."""
    by = list(by)
    require_columns(frame, [value, *by])
    table = frame.groupby(by)[value].agg(lambda v: np.inf if v.isna().any() else v.mean())
    if not np.isfinite(table.min()):
        return None
    chosen = table.idxmin()
    return dict(zip(by, chosen if isinstance(chosen, tuple) else (chosen,), strict=True))


def tied_with_best(scores: Mapping[Any, tuple[float, float]]) -> list[Any]:
    """The settings whose mean is within the seeds' std of the best one's — the larger of the
    two stds —, the best included, sorted: those a sweep cannot tell from the best."""
    best_mean, best_std = scores[best(scores)]
    return sorted(key for key, (mean, std) in scores.items()
                  if best_mean - mean <= max(best_std, std))


def seed_mean_std(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1; 0 for one seed) over the first axis (the seeds) of
    ``values``, e.g. a ``(seeds, T)`` curve: the bands of :mod:`bnreg.plots`."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(0), values.std(0, ddof=1 if values.shape[0] > 1 else 0)
