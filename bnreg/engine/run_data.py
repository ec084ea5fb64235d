"""A run's data: the configured dataset, preprocessed, and each member's training subset."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from bnreg import data as data_lib
from bnreg.engine.members import Members


@dataclasses.dataclass(frozen=True)
class RunData:
    """A run's data, preprocessed, as host arrays.

    Attributes:
      train: the training split (after the validation split is carved out).
      evaluation: the split every evaluation scores (validation or test).
      evaluation_split: ``"test"`` or ``"validation"``.
      num_classes: label classes.
      source: where the arrays came from (:func:`bnreg.data.load_dataset`).
      test: the test split, preprocessed as the others, when a validation split is evaluated
        and ``config.evaluation.test_too`` asks for the test split beside it; else ``None``.
    """

    train: data_lib.Split
    evaluation: data_lib.Split
    evaluation_split: str
    num_classes: int
    source: str
    test: data_lib.Split | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])


def load_run_data(config: ml_collections.ConfigDict) -> RunData:
    """Loads ``config.dataset`` and applies the configured preprocessing.

    Order: carve the class-stratified validation split (if any, a fixed draw, the same for
    every seed) from train, average-pool (``config.image_pool``), binarize, then standardize
    with statistics of the (final) train split. Members' subsets (:func:`member_subsets`) are
    drawn from that train split.

    Raises:
      ValueError: a validation fraction that leaves no split.
    """
    dataset = data_lib.load_dataset(
        config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir
    )
    train, evaluation, split = dataset.train, dataset.test, "test"
    if config.validation_fraction:
        num_validation = round(config.validation_fraction * len(train.labels))
        if not 1 <= num_validation < len(train.labels):
            raise ValueError(
                f"config.validation_fraction = {config.validation_fraction} of the "
                f"{len(train.labels)} training examples of {config.dataset} is {num_validation} "
                "examples; it must hold at least one and leave at least one for training."
            )
        train, evaluation = data_lib.train_validation_split(train, num_validation, seed=0)
        split = "validation"
    scored = [evaluation] + ([dataset.test] if config.evaluation.test_too else [])
    images = [train.images, *(s.images for s in scored)]
    if config.image_pool > 1:
        images = [data_lib.average_pool(x, config.image_pool) for x in images]
    binarize = config.dataset == "mnist" if config.binarize is None else config.binarize
    if binarize:
        images = [data_lib.binarize(x) for x in images]
    if config.standardize != "none":
        images = list(data_lib.standardize(*images, per_pixel=config.standardize == "per_pixel"))
    evaluation, *test = (data_lib.Split(x, s.labels) for x, s in zip(images[1:], scored,
                                                                       strict=True))
    return RunData(
        train=data_lib.Split(images[0], train.labels),
        evaluation=evaluation,
        evaluation_split=split,
        num_classes=dataset.num_classes,
        source=dataset.source,
        test=test[0] if test else None,
    )


def member_subsets(
    members: Members, labels: np.ndarray, batch_size: int
) -> tuple[np.ndarray, ...] | None:
    """Each member's class-stratified training subset of ``train_subset`` examples (0: the
    whole split) as sorted indices into the training split, drawn from the member's seed
    (:func:`bnreg.data.stratified_indices`, so the subsets of one seed are nested where the class
    allotments allow); ``None`` when every member trains on the whole split.

    Raises:
      ValueError: a subset larger than the split, or smaller than a batch.
    """
    num_examples = len(labels)
    sizes = members.values["train_subset"]
    if not np.any(sizes):
        return None
    counts = np.where(sizes == 0, num_examples, sizes)
    if counts.max() > num_examples or counts.min() < batch_size:
        raise ValueError(
            f"config.train_subset (or config.sweep.train_subset) sizes "
            f"{sorted(set(sizes.tolist()))} must lie between the batch size "
            f"({batch_size}) and the {num_examples} examples of the training split (0: all)."
        )
    return tuple(
        data_lib.stratified_indices(labels, int(count), int(seed)).astype(np.int32)
        for count, seed in zip(counts, members.values["seed"], strict=True)
    )
