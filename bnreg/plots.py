"""Matplotlib figures shared by the experiments and the notebooks.

Every function draws on an ``Axes`` it is given (so notebooks can compose figures) or returns a
``Figure``; :func:`save` writes a PNG and closes the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bnreg.metrics import mean_std


def band(
    ax: plt.Axes,
    steps: np.ndarray,
    values: np.ndarray,
    *,
    label: str,
    color: str | None = None,
    linestyle: str = "-",
) -> None:
    """Plots the mean over members (rows of ``values``) with a ±1 std band."""
    mean, std = mean_std(values)
    (line,) = ax.plot(steps, mean, label=label, color=color, linestyle=linestyle)
    ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def percentile_lines(
    ax: plt.Axes,
    steps: np.ndarray,
    values: np.ndarray,
    percentiles: Sequence[float],
    *,
    color: str = "C0",
) -> None:
    """Plots percentile trajectories ``values`` ``(T, len(percentiles))`` (BN paper Fig. 1b,c):
    the median solid, lower percentiles dotted, upper ones dashed."""
    middle = len(percentiles) // 2
    for index, q in enumerate(percentiles):
        linestyle = "-" if index == middle else (":" if index < middle else "--")
        ax.plot(steps, values[:, index], color=color, linestyle=linestyle, label=f"{q:g}th")


def save(figure: plt.Figure, path: str | Path) -> Path:
    """Writes ``figure`` as a PNG at ``path`` (parents created) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
