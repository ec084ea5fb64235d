"""The in-memory containers of the data layer: :class:`Split` and :class:`Dataset`.

Both loading (:mod:`bnreg.data.sources`) and preprocessing (:mod:`bnreg.data.preprocess`) use
them; a module of their own keeps the imports one-way (sources uses preprocess, never the
reverse).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "Split"]


class Split(NamedTuple):
    """One split of a dataset, held whole in memory.

    Attributes:
      images: float32 array of shape (N, H, W, C), values in [0, 1].
      labels: int32 array of shape (N,), values in [0, num_classes).
    """

    images: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset with ``train`` and ``test`` splits and its metadata.

    Attributes:
      name: the name passed to :func:`~bnreg.data.load_dataset`.
      train: the training split.
      test: the test split.
      num_classes: number of label classes; labels lie in [0, num_classes).
      image_shape: (H, W, C) of one image.
      source: human-readable account of where the arrays came from.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    image_shape: tuple[int, int, int]
    source: str
