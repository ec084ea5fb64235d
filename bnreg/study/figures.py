"""Figures every study draws the same way: the tuning sweep."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bnreg.study.results import Results


def sweep_figure(results: Results, path: Path, *, marks: Mapping[str, float] | None = None,
                 objective: str = "error") -> Path:
    """Each tuned arm's final validation ``objective`` (in %) against its one tuned axis,
    mean ± std over the tuning seeds (diverged settings left out), its choice circled; ``marks``
    (label -> value) drawn as dotted lines, e.g. the final runs' rates."""
    from bnreg import plots

    tuned = [arm for arm in results.arms.values() if len(arm.tune) == 1]
    figure, ax = plots.figure(1, 1, width=6.5, height=4)
    axis_name = ""
    for color, arm in enumerate(tuned):
        (axis_name,) = arm.tune
        frame = results.tuning[results.tuning["arm"] == arm.name]
        grid = sorted(value for value, group in frame.groupby(axis_name)
                      if group[objective].notna().all())
        values = np.asarray([100 * frame[frame[axis_name] == value][objective].to_numpy()
                             for value in grid])
        plots.versus(ax[0, 0], grid, values, label=arm.label, color=f"C{color}")
        chosen = results.choices[arm.name].values[axis_name]
        ax[0, 0].plot([chosen], [100 * frame[frame[axis_name] == chosen][objective].mean()],
                      "o", markersize=12, markerfacecolor="none", color=f"C{color}")
    if marks:
        plots.mark(ax[0, 0], dict(marks))
    ax[0, 0].set(xlabel=axis_name, ylabel=f"validation {objective} %")
    ax[0, 0].legend(loc="best")
    seeds = list(results.config.study.tune_seeds)
    figure.suptitle(f"Tuning on the validation split: seeds {seeds}, mean ± std; choices circled")
    return plots.save(figure, path)
