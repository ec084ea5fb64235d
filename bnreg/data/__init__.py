"""Datasets as in-memory arrays: offline-first loading, preprocessing, on-device batching.

Three layers, one submodule each (every public name is re-exported here, so
``from bnreg.data import load_dataset, Split, epoch_permutation`` works):

* **Loading** (:mod:`bnreg.data.sources`) — :func:`load_dataset` returns a :class:`Dataset`
  whose ``train`` and ``test`` :class:`Split` hold whole splits as arrays (images float32 in
  [0, 1], shape (N, H, W, C); labels int32). ``mnist``, ``fashion_mnist`` and ``cifar10`` come
  through tensorflow-datasets (tfds); ``digits`` is scikit-learn's bundled 8×8 set and needs
  neither TensorFlow nor files. A tfds dataset is resolved in this order, first that works:

  1. arrays cached by an earlier load (``<data_dir>/<name>/<version>.bnreg-arrays.npz``);
  2. data already prepared by tfds in the data dir (``data_dir``, else ``$TFDS_DATA_DIR``,
     else tfds's default ``~/tensorflow_datasets``);
  3. tfds prepares it from local raw files (``manual_dir``, else known system locations such as
     Debian's ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``);
  4. tfds downloads it (only with ``download=True`` and a reachable server).

  When everything fails, one :class:`DatasetUnavailableError` lists what was tried and how to
  fix it. Preparing happens once; decoding tfds's PNG records costs seconds, so the decoded
  arrays are cached (uint8, uncompressed) and later loads take a fraction of a second. The
  raw file formats — the IDX reader :func:`read_idx`, their validation, and the upstream gzip
  headers (:func:`restore_gzip_header`) — are in :mod:`bnreg.data.files`, which also defines
  :class:`DataFileError`.

* **Preprocessing** (:mod:`bnreg.data.preprocess`) — pure numpy functions: :func:`flatten`,
  :func:`average_pool`, :func:`binarize`, :func:`standardize`, :func:`stratified_indices`,
  :func:`stratified_subset`, :func:`train_validation_split`.

* **On-device batching** (:mod:`bnreg.data.batching`) — pure jax functions
  (:func:`epoch_permutation`, :func:`batch_from_permutation`, :func:`batch_at_step`,
  :func:`batch_indices`) so that a ``lax.scan`` over training steps draws its mini-batches
  without returning to the host.

:class:`Split` and :class:`Dataset`, the containers all three share, are in
:mod:`bnreg.data.types`.

TensorFlow and tfds are imported inside the functions that need them, so ``import bnreg.data``
and ``load_dataset("digits")`` never load TensorFlow.
"""

from bnreg.data.batching import (
    batch_at_step,
    batch_from_permutation,
    batch_indices,
    epoch_permutation,
)
from bnreg.data.files import (
    UPSTREAM_GZIP_HEADERS,
    DataFileError,
    GzipMemberHeader,
    read_idx,
    restore_gzip_header,
)
from bnreg.data.preprocess import (
    average_pool,
    binarize,
    flatten,
    standardize,
    stratified_indices,
    stratified_subset,
    train_validation_split,
)
from bnreg.data.sources import (
    DATASET_NAMES,
    DIGITS_NUM_TEST,
    DIGITS_SPLIT_SEED,
    SYSTEM_RAW_DIRS,
    TFDS_DATASET_NAMES,
    DatasetUnavailableError,
    load_dataset,
)
from bnreg.data.types import Dataset, Split

__all__ = [
    "DATASET_NAMES",
    "DIGITS_NUM_TEST",
    "DIGITS_SPLIT_SEED",
    "SYSTEM_RAW_DIRS",
    "TFDS_DATASET_NAMES",
    "UPSTREAM_GZIP_HEADERS",
    "DataFileError",
    "Dataset",
    "DatasetUnavailableError",
    "GzipMemberHeader",
    "Split",
    "average_pool",
    "batch_at_step",
    "batch_from_permutation",
    "batch_indices",
    "binarize",
    "epoch_permutation",
    "flatten",
    "load_dataset",
    "read_idx",
    "restore_gzip_header",
    "standardize",
    "stratified_indices",
    "stratified_subset",
    "train_validation_split",
]
