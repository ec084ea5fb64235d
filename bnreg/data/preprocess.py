"""Preprocessing as pure numpy functions (numpy in, numpy out): :func:`flatten`,
:func:`average_pool`, :func:`binarize`, :func:`standardize`, and the class-stratified draws
:func:`stratified_indices`, :func:`stratified_subset` and :func:`train_validation_split`.
"""

from __future__ import annotations

import numpy as np

from bnreg._checks import check_count
from bnreg.data.types import Split

__all__ = [
    "average_pool",
    "binarize",
    "flatten",
    "standardize",
    "stratified_indices",
    "stratified_subset",
    "train_validation_split",
]


def flatten(images: np.ndarray) -> np.ndarray:
    """Flattens each example to a vector, as fully connected nets take their input.

    Args:
      images: array of shape (N, ...), N >= 0.

    Returns:
      Array of shape (N, prod(...)), same dtype.

    Raises:
      ValueError: ``images`` has no example axis (is 0-d).
    """
    images = np.asarray(images)
    if images.ndim == 0:
        raise ValueError("flatten needs an (N, ...) array, got a scalar")
    return images.reshape(images.shape[0], -1)


def average_pool(images: np.ndarray, factor: int) -> np.ndarray:
    """Averages each image over non-overlapping ``factor`` × ``factor`` blocks of pixels.

    .. math:: y_{n,i,j,c} = \\frac{1}{k^2} \\sum_{a,b=0}^{k-1} x_{n,\\,ki+a,\\,kj+b,\\,c}

    with :math:`x` = ``images`` (N, H, W, C) and :math:`k` = ``factor``: a 28×28 image becomes
    14×14 at k = 2, fewer weights in a net's first layer where the budget needs them.

    Args:
      images: array of shape (N, H, W, C), H and W multiples of ``factor``.
      factor: the block's side k ≥ 1 (1 returns ``images`` as float32).

    Returns:
      float32 array of shape (N, H/k, W/k, C).

    Raises:
      ValueError: ``images`` not 4-d, or H or W not a multiple of ``factor``.
    """
    factor = check_count(factor, "factor", 1, 2**31 - 1)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"average_pool needs images of shape (N, H, W, C), got {images.shape}")
    n, height, width, channels = images.shape
    if height % factor or width % factor:
        raise ValueError(f"average_pool: the {height}×{width} images do not split into "
                         f"{factor}×{factor} blocks: use a factor that divides both sides")
    blocks = images.reshape(n, height // factor, factor, width // factor, factor, channels)
    return blocks.mean(axis=(2, 4))


def binarize(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Thresholds intensities to {0, 1}, giving the binary images of the BN paper's MNIST input.

    .. math:: b = \\mathbb{1}[x > t]

    with :math:`x` = ``images`` and :math:`t` = ``threshold``; a pixel exactly at the threshold
    becomes 0 (strict inequality).

    Args:
      images: array of intensities, typically in [0, 1].
      threshold: the cut :math:`t`.

    Returns:
      float32 array of the same shape with values in {0, 1}.

    Raises:
      TypeError: ``threshold`` is not a real number.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a real number, got {threshold!r}")
    return (np.asarray(images) > threshold).astype(np.float32)


def standardize(
    train_images: np.ndarray, *other_images: np.ndarray, per_pixel: bool = False
) -> tuple[np.ndarray, ...]:
    """Centres and scales images with statistics of the training images only.

    .. math:: x' = \\frac{x - \\mu}{\\sigma}, \\qquad
              \\mu = \\frac{1}{N}\\sum_n x_n, \\quad
              \\sigma = \\sqrt{\\tfrac{1}{N}\\sum_n (x_n - \\mu)^2}

    over ``train_images`` :math:`x_1..x_N` — one scalar :math:`\\mu, \\sigma` over all pixels
    (``per_pixel=False``) or one per pixel position and channel (``per_pixel=True``). The
    standard deviation is the biased (1/N) one. Where :math:`\\sigma = 0` (e.g. MNIST's border
    pixels, always 0) the input is only centred, so no NaN or inf appears. Statistics are
    accumulated in float64.

    Args:
      train_images: array (N, ...) the statistics come from.
      *other_images: arrays (M, ...) with the same per-example shape (validation, test).
      per_pixel: per-position statistics instead of global ones.

    Returns:
      ``(train_images', *other_images')`` as float32.

    Raises:
      ValueError: ``train_images`` is empty or a per-example shape differs.
    """
    train = np.asarray(train_images)
    if train.ndim == 0 or train.shape[0] == 0:
        raise ValueError("standardize needs a non-empty (N, ...) train_images array")
    others = [np.asarray(images) for images in other_images]
    for index, images in enumerate(others):
        if images.shape[1:] != train.shape[1:]:
            raise ValueError(
                f"other_images[{index}] has per-example shape {images.shape[1:]}, "
                f"train_images has {train.shape[1:]}"
            )
    axis = 0 if per_pixel else None
    mean = train.mean(axis=axis, dtype=np.float64)
    std = train.std(axis=axis, dtype=np.float64)
    scale = np.where(std > 0, std, 1.0)
    return tuple(((images - mean) / scale).astype(np.float32) for images in (train, *others))


def stratified_indices(labels: np.ndarray, num: int, seed: int) -> np.ndarray:
    """Sorted indices of ``num`` examples with each class in proportion to its frequency.

    Class ``c`` with ``n_c`` of ``N`` examples gets ``floor(num * n_c / N)`` of them, and the
    ``num - sum(floors)`` left over go one each to the classes with the largest fractional parts
    (ties to the smaller class). Within a class the examples are a uniform draw from
    ``np.random.default_rng(seed)``.

    For a fixed seed the per-class draw order does not depend on ``num``: the generator draws
    one permutation of each class's examples in turn, whose length is ``n_c`` whatever ``num``
    is, and the class contributes the first ones of its permutation. Subsets of different sizes
    from one seed are therefore nested, except where the largest-remainder allotment of a class
    shrinks as ``num`` grows (the Alabama paradox of largest-remainder rounding).

    Args:
      labels: (N,) integer labels.
      num: the number of indices, in [0, N] (not checked here; :func:`stratified_subset` and
        :func:`train_validation_split` check it).
      seed: integer seed for ``np.random.default_rng``.

    Returns:
      Integer array of shape (num,), sorted ascending.
    """
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * num / len(labels)
    allotted = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - allotted), kind="stable")
    allotted[by_remainder[: num - int(allotted.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(allotted)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _check_split(split: Split, what: str) -> int:
    if not isinstance(split, Split):
        raise TypeError(f"{what} must be a bnreg.data.Split, got {type(split).__name__}")
    num = len(split.labels)
    if np.ndim(split.labels) != 1 or len(split.images) != num:
        raise ValueError(
            f"{what} needs labels of shape (N,) and N images, got labels "
            f"{np.shape(split.labels)} and images {np.shape(split.images)}"
        )
    return num


def stratified_subset(split: Split, num_examples: int, *, seed: int) -> Split:
    """Draws a deterministic, class-stratified subset (the dropout data-size study, Fig. 10).

    Class :math:`c`, holding :math:`n_c` of the :math:`N` examples, contributes
    :math:`\\lfloor K n_c / N \\rfloor` or one more of the :math:`K` = ``num_examples``
    (largest-remainder rounding, so the counts sum to :math:`K`); which examples is a uniform
    draw fixed by ``seed``. The subset keeps the original order of the examples.

    Args:
      split: the split to draw from (usually ``dataset.train``).
      num_examples: :math:`K`, in [1, N].
      seed: integer seed; the same seed gives the same subset.

    Returns:
      The subset as a :class:`Split`.

    Raises:
      TypeError: ``split`` is not a :class:`Split` or ``num_examples`` is not an int.
      ValueError: ``num_examples`` is outside [1, N] or the split is malformed.
    """
    num = _check_split(split, "split")
    num_examples = check_count(num_examples, "num_examples", 1, num)
    indices = stratified_indices(np.asarray(split.labels), num_examples, seed)
    return Split(images=split.images[indices], labels=split.labels[indices])


def train_validation_split(split: Split, num_validation: int, *, seed: int) -> tuple[Split, Split]:
    """Carves a class-stratified validation split out of a training split.

    The validation examples are chosen as in :func:`stratified_subset` (``num_validation`` of
    them, class proportions kept); the rest form the new training split. Both keep the original
    order, are disjoint, and together are the whole input.

    Args:
      split: the split to divide (usually ``dataset.train``).
      num_validation: number of validation examples, in [1, N - 1].
      seed: integer seed; the same seed gives the same division.

    Returns:
      ``(train, validation)``.

    Raises:
      TypeError: ``split`` is not a :class:`Split` or ``num_validation`` is not an int.
      ValueError: ``num_validation`` is outside [1, N - 1] or the split is malformed.
    """
    num = _check_split(split, "split")
    num_validation = check_count(num_validation, "num_validation", 1, num - 1)
    validation = stratified_indices(np.asarray(split.labels), num_validation, seed)
    keep = np.ones(num, dtype=bool)
    keep[validation] = False
    return (
        Split(images=split.images[keep], labels=split.labels[keep]),
        Split(images=split.images[validation], labels=split.labels[validation]),
    )
