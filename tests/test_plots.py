"""The shared figures (bnreg/plots.py) draw on tiny data, and filter grids put each tile where
it belongs, the right way up."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bnreg import plots


@pytest.fixture
def ax():
    figure, ax = plt.subplots()
    yield ax
    plt.close(figure)


def test_band_and_percentile_lines_draw_on_tiny_data(ax):
    steps = np.array([0, 10, 20])
    plots.band(ax, steps, np.array([[0.1, 0.5, 0.7], [0.2, 0.4, 0.8]]), label="bn")
    plots.percentile_lines(ax, steps, np.arange(9.0).reshape(3, 3), (15, 50, 85))
    assert len(ax.lines) == 4


def test_save_writes_a_png_and_closes_the_figure(tmp_path):
    figure, ax = plt.subplots()
    ax.plot([0, 1])
    path = plots.save(figure, tmp_path / "sub" / "figure.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(figure.number)


@pytest.mark.parametrize("log, scale", [(True, "log"), (False, "linear")])
def test_versus_draws_the_mean_over_seeds_on_a_log_x_axis_when_asked(ax, log, scale):
    values = np.array([[0.8, 0.9], [0.85, 0.87], [0.6, 0.7]])  # (rates, seeds)
    plots.versus(ax, [1.0, 0.01, 0.1], values, label="bn", log=log)
    assert ax.get_xscale() == scale
    x, mean = ax.lines[0].get_data()
    np.testing.assert_allclose(x, [0.01, 0.1, 1.0])
    np.testing.assert_allclose(mean, [0.86, 0.65, 0.85])


def test_versus_ticks_a_log_axis_at_the_x_of_every_versus_line(ax):
    ax.axhline(0.5)  # a reference line's x (axes coordinates) is no tick
    plots.versus(ax, [0.03, 0.1, 0.3], np.ones((3, 2)), label="inception")
    plots.versus(ax, [0.1, 1.0], np.ones((2, 2)), label="bn")
    np.testing.assert_allclose(ax.get_xticks(), [0.03, 0.1, 0.3, 1.0])
    assert [label.get_text() for label in ax.get_xticklabels()] == ["0.03", "0.1", "0.3", "1"]


@pytest.mark.parametrize("x, values", [([1.0, 2.0], np.ones(2)), ([0.0, 1.0], np.ones((2, 3)))])
def test_versus_refuses_values_of_another_shape_and_nonpositive_x_on_a_log_axis(ax, x, values):
    with pytest.raises(ValueError):
        plots.versus(ax, x, values, label="bn")


def test_tiles_from_kernel_puts_pixel_r_c_of_a_flattened_image_at_tile_r_c():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 28, 28))
    kernel = rng.normal(size=(28 * 28, 5))
    tiles = plots.tiles_from_kernel(kernel, (28, 28, 1))
    assert tiles.shape == (5, 28, 28)
    # A unit's response is its tile times the image, pixel by pixel.
    np.testing.assert_allclose(
        images.reshape(4, -1) @ kernel, np.einsum("nrc,urc->nu", images, tiles)
    )
    np.testing.assert_array_equal(tiles.reshape(5, -1).T, kernel)


@pytest.mark.parametrize("shape", [(28, 28, 3), (27, 28)])
def test_tiles_from_kernel_refuses_another_image_shape(shape):
    with pytest.raises(ValueError):
        plots.tiles_from_kernel(np.zeros((28 * 28, 5)), shape)


def bright_pixel_tiles() -> np.ndarray:
    """Three dark 3×4 tiles; tile 1 has one bright pixel at row 0, column 2."""
    tiles = np.zeros((3, 3, 4))
    tiles[1, 0, 2] = 1.0
    return tiles


def test_image_grid_puts_tile_i_at_row_i_div_columns_and_column_i_mod_columns():
    figure = plots.image_grid(bright_pixel_tiles(), columns=2)
    grid = figure.axes[0].images[0].get_array()
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1)  # one-pixel gaps between tiles
    bright = np.argwhere(grid.filled(0.0) == 1.0)
    np.testing.assert_array_equal(bright, [[0, 4 + 1 + 2]])  # tile 1: row 0, column 1
    assert grid.mask[3].all()  # the gap row
    plt.close(figure)


def test_image_grid_draws_each_tile_with_its_first_row_at_the_top():
    figure, ax = plt.subplots(figsize=(4, 4), dpi=50)
    plots.image_grid(bright_pixel_tiles(), columns=3, ax=ax, normalize="global")
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(float)
    height = pixels.shape[0]

    def brightness(row: int, column: int) -> float:  # at a grid cell's centre
        x, y = ax.transData.transform((column, row))
        return pixels[int(height - y), int(x)].mean()

    assert brightness(0, 5 + 2) > 200  # tile 1's pixel (0, 2), in the top row
    assert brightness(2, 5 + 2) < 50  # the same tile's bottom row is dark
    assert brightness(0, 2) < 50  # tile 0 is dark
    plt.close(figure)


@pytest.mark.parametrize("normalize, expected", [("per_tile", 1.0), ("global", 0.5)])
def test_image_grid_normalizes_per_tile_or_over_all_tiles(normalize, expected):
    tiles = np.zeros((2, 2, 2))
    tiles[0, 0, 0], tiles[1, 0, 0] = 1.0, 2.0
    figure = plots.image_grid(tiles, columns=2, normalize=normalize)
    grid = figure.axes[0].images[0].get_array()
    assert grid[0, 0] == expected
    assert grid[0, 3] == 1.0
    plt.close(figure)


def test_image_grid_refuses_an_unknown_normalization():
    with pytest.raises(ValueError, match="per_tile"):
        plots.image_grid(np.zeros((2, 2, 2)), normalize="none")


def test_log_scale_ticks_read_as_plain_numbers():
    figure, ax = plt.subplots()
    ax.plot([1, 2, 3], [8.0, 20.0, 60.0])
    plots.log_scale(ax)
    figure.canvas.draw()
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
    assert labels and all("10^" not in t and "times" not in t for t in labels)
    assert "20" in labels
    plt.close(figure)
