"""The protocol's choice of each tuned arm's hyperparameters on the validation split, its edge
flags, and the sweep table results.md shows.

Each tuned arm's choice is the setting of its tuned axes with the lowest mean objective over the
tuning seeds (the final validation error, or loss), never one at which a seed diverged (a NaN).
A chosen value at the lowest or highest value of its axis's grid is flagged on every tuned axis:
the best setting may lie beyond the grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from bnreg.analysis import markdown_table
from bnreg.study.arms import Arm


class Choice(NamedTuple):
    """A tuned arm's choice.

    Attributes:
      arm: the arm's name.
      values: tuned axis -> chosen value.
      edges: tuned axis -> ``"lowest"`` or ``"highest"`` where the choice is that value of a
        grid of at least two (other axes absent).
      scores: one row per grid point: the tuned axes, ``n`` (seeds), ``mean``, ``std`` of the
        objective over the seeds that did not diverge, and ``diverged`` (seeds with a NaN).
    """

    arm: str
    values: dict[str, float]
    edges: dict[str, str]
    scores: pd.DataFrame


def grid_scores(frame: pd.DataFrame, axes: Sequence[str], objective: str) -> pd.DataFrame:
    """Per setting of ``axes``: the seeds, the mean and std of ``objective`` over those that
    did not diverge, and the number that did."""
    rows = []
    for key, group in frame.groupby(list(axes), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        values = group[objective].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        rows.append((*key, len(values),
                     finite.mean() if finite.size else np.nan,
                     finite.std(ddof=1) if finite.size > 1 else 0.0,
                     int(values.size - finite.size)))
    return pd.DataFrame(rows, columns=[*axes, "n", "mean", "std", "diverged"])


def choose(frame: pd.DataFrame, arm: Arm, objective: str) -> Choice:
    """``arm``'s choice from its tuning run's final evaluations ``frame`` (one row per member).

    Raises:
      ValueError: every setting diverged on some seed.
    """
    axes = list(arm.tune)
    scores = grid_scores(frame, axes, objective)
    eligible = scores[scores["diverged"] == 0]
    if eligible.empty:
        raise ValueError(f"Every setting of arm {arm.name!r}'s grid diverged on some seed: lower "
                         "its grid (e.g. smaller learning rates).")
    best = eligible.loc[eligible["mean"].idxmin()]  # the first of a tie, in grid order
    values = {axis: float(best[axis]) for axis in axes}
    edges = {}
    for axis, grid in arm.tune.items():
        if len(grid) > 1 and values[axis] in (min(grid), max(grid)):
            edges[axis] = "lowest" if values[axis] == min(grid) else "highest"
    return Choice(arm.name, values, edges, scores)


def _score_cell(row: pd.Series, scale: float) -> str:
    if row["diverged"] == row["n"]:
        return "diverged"
    text = f"{row['mean'] * scale:.2f} ± {row['std'] * scale:.2f}"
    return text + (f" ({row['diverged']} of {row['n']} diverged)" if row["diverged"] else "")


def _values(values: Mapping[str, float], axes: Sequence[str]) -> str:
    return ", ".join(f"{axis} {values[axis]:g}" for axis in axes)


def sweep_lines(arms: Sequence[Arm], choices: Mapping[str, Choice], *, objective: str,
                scale: float = 100.0) -> list[str]:
    """results.md's sweep table(s): the validation ``objective`` (× ``scale``) of every grid
    point of every tuned arm, mean ± std over the tuning seeds, "diverged" where a seed did, the
    choice marked; then a line per choice at an edge of its grid."""
    tuned = [arm for arm in arms if arm.tune]
    grids = {(tuple(arm.tune), tuple(map(tuple, arm.tune.values()))) for arm in tuned}
    lines = []
    if len(grids) == 1 and len(tuned[0].tune) == 1:
        (axis,) = tuned[0].tune
        rows = []
        for value in tuned[0].tune[axis]:
            row = [f"{value:g}"]
            for arm in tuned:
                scores = choices[arm.name].scores
                text = _score_cell(scores[scores[axis] == value].iloc[0], scale)
                chosen = choices[arm.name].values[axis] == value
                row.append(text + (" **← chosen**" if chosen else ""))
            rows.append(row)
        lines += [markdown_table([axis, *(arm.label for arm in tuned)], rows), ""]
    else:
        for arm in tuned:
            axes = list(arm.tune)
            choice = choices[arm.name]
            rows = [[*(f"{row[axis]:g}" for axis in axes), _score_cell(row, scale)
                     + (" **← chosen**" if all(row[a] == choice.values[a] for a in axes) else "")]
                    for _, row in choice.scores.iterrows()]
            lines += [f"{arm.label}:", "", markdown_table([*axes, objective], rows), ""]
    for arm in tuned:
        choice = choices[arm.name]
        for axis, edge in choice.edges.items():
            grid = sorted(arm.tune[axis])
            lines.append(f"- **Edge**: {arm.label}'s {axis} {choice.values[axis]:g} is the "
                         f"{edge} value of its grid ({grid[0]:g} … {grid[-1]:g}): a setting "
                         "beyond it may be better.")
    if any(choices[arm.name].edges for arm in tuned):
        lines.append("")
    lines += ["Chosen: " + "; ".join(
        f"{arm.label}: {_values(choices[arm.name].values, list(arm.tune))}" for arm in tuned)
        + ".", ""]
    return lines
