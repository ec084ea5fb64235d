"""Matplotlib figures shared by the experiments and the notebooks.

Every function draws on an ``Axes`` it is given (so notebooks can compose figures) or returns a
``Figure``; :func:`save` writes a PNG and closes the figure. Spreads over seeds are ±1 sample
std (ddof=1; 0 for one seed), as in :mod:`bnreg.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, NullFormatter

from bnreg.analysis import seed_mean_std


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
    mean, std = seed_mean_std(values)
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


def versus(
    ax: plt.Axes,
    x: Sequence[float],
    values: np.ndarray,
    *,
    label: str,
    color: str | None = None,
    log: bool = True,
    marker: str = "o",
) -> None:
    """Plots a metric against a hyperparameter: ``values`` ``(len(x), seeds)``, the mean over
    seeds at each ``x`` (markers joined in increasing ``x``) with a shaded ±1 std band; a log x
    axis when ``log`` (``x`` must then be positive), ticked at the ``x`` of every ``versus``
    line on ``ax`` (a sweep's few values; matplotlib's minor log labels would overlap)."""
    x = np.asarray(x, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != x.size:
        raise ValueError(
            f"values must be (len(x), seeds) = ({x.size}, seeds), got {values.shape}; one seed "
            "is (len(x), 1)"
        )
    if log and np.any(x <= 0):
        raise ValueError(f"a log x axis needs positive x, got {x.tolist()}: pass log=False")
    order = np.argsort(x)
    mean, std = seed_mean_std(values[order].T)
    (line,) = ax.plot(x[order], mean, label=label, color=color, marker=marker)
    ax.fill_between(x[order], mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    if log:
        locator = ax.xaxis.get_major_locator()  # before set_xscale, which replaces it
        earlier = locator.locs if isinstance(locator, FixedLocator) else []  # fixed: ours
        ticks = np.unique(np.concatenate([earlier, x]))
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels=[f"{tick:g}" for tick in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())


def tiles_from_kernel(kernel: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """A dense layer's kernel ``(in, units)`` as one image per unit, ``(units, h, w)``.

    ``image_shape`` is the input image's ``(h, w)`` or ``(h, w, 1)``, flattened row-major (C
    order) into the ``in = h·w`` inputs, as the models flatten their input: unit ``u``'s weight
    from pixel ``(r, c)`` is ``tile[u, r, c]``.
    """
    kernel = np.asarray(kernel)
    height, width, *channels = image_shape
    if channels not in ([], [1]):
        raise ValueError(f"image_shape must be (h, w) or (h, w, 1), got {tuple(image_shape)}")
    if kernel.ndim != 2 or kernel.shape[0] != height * width:
        raise ValueError(
            f"kernel must be (h·w, units) = ({height * width}, units) for image {height}×{width}, "
            f"got {kernel.shape}"
        )
    return kernel.T.reshape(kernel.shape[1], height, width)


def _normalized(tiles: np.ndarray, normalize: str) -> np.ndarray:
    """``tiles`` rescaled to [0, 1] by each tile's (``"per_tile"``) or all tiles' (``"global"``)
    min..max; a constant range maps to 0.5."""
    if normalize not in ("per_tile", "global"):
        raise ValueError(f"normalize must be 'per_tile' or 'global', got {normalize!r}")
    axes = (1, 2) if normalize == "per_tile" else None
    low = tiles.min(axis=axes, keepdims=True)
    spread = tiles.max(axis=axes, keepdims=True) - low
    flat = spread == 0
    return np.where(flat, 0.5, (tiles - low) / np.where(flat, 1.0, spread))


def image_grid(
    tiles: np.ndarray,
    *,
    columns: int | None = None,
    ax: plt.Axes | None = None,
    cmap: str = "gray",
    normalize: Literal["per_tile", "global"] = "per_tile",
) -> plt.Figure:
    """Draws ``tiles`` ``(n, h, w)`` (e.g. first-layer filters, :func:`tiles_from_kernel`) as a
    grid of images on ``ax`` (a new figure if None) and returns its figure.

    Tile ``i`` is at row ``i // columns``, column ``i % columns`` (``columns`` defaults to
    ⌈√n⌉), each drawn with ``tile[0, 0]`` at its top-left. ``normalize="per_tile"`` rescales
    each tile to its own min..max (shapes comparable, magnitudes not), ``"global"`` to the
    min..max of all tiles. The grid is one image (one ``AxesImage``) in which tiles are separated
    by a one-pixel white gap (NaN in the image's data).
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    if tiles.ndim != 3 or tiles.shape[0] == 0:
        raise ValueError(f"tiles must be (n, h, w) with n ≥ 1, got {tiles.shape}")
    count, height, width = tiles.shape
    columns = math.ceil(math.sqrt(count)) if columns is None else columns
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for index, tile in enumerate(_normalized(tiles, normalize)):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top : top + height, left : left + width] = tile
    if ax is None:
        _, ax = plt.subplots(figsize=(max(2.0, 0.5 * columns), max(2.0, 0.5 * rows)))
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(grid, cmap=colormap, vmin=0.0, vmax=1.0, origin="upper", interpolation="nearest")
    ax.set_axis_off()
    return ax.figure


def figure(
    rows: int, columns: int, *, width: float, height: float, **subplots
) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``rows × columns`` panels of ``width × height`` inches each, with a light
    grid on every panel; the axes always as a 2-D array (``axes[row, column]``)."""
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False,
        layout="constrained", **subplots,
    )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    return fig, axes


def log_scale(ax: plt.Axes, axis: Literal["x", "y"] = "y") -> None:
    """A log scale on ``axis`` whose ticks read as plain numbers (``20``, not ``2×10¹``)."""
    getattr(ax, f"set_{axis}scale")("log")
    ticks = getattr(ax, f"{axis}axis")
    plain = plt.FuncFormatter(lambda value, _: f"{value:g}")
    ticks.set_major_formatter(plain)
    ticks.set_minor_formatter(plain)


def mark(ax: plt.Axes, positions: dict[str, float]) -> None:
    """Dotted vertical lines at the x ``positions``, each labelled above the panel."""
    for label, x in positions.items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), ha="center",
                    va="bottom", fontsize=8)


def save(figure: plt.Figure, path: str | Path) -> Path:
    """Writes ``figure`` as a PNG at ``path`` (parents created) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
