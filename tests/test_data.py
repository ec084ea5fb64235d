"""Tests for bnreg.data: loading (raw files, tfds, cache, offline errors), preprocessing, batching.

No test touches the network. Raw-file tests write tiny IDX ``.gz`` files and send them through
the real path (validation, gzip-header restoration, sha256 check, tfds preparation, decoding,
cache). tfds registers the sha256 of the *real* upstream files and its MNIST builder hard-codes
60000/10000 examples, so the fixture ``tiny_fashion_mnist`` registers the tiny files' checksums
and counts with tfds for the test's duration (``monkeypatch`` on tfds, nothing in bnreg) — the
production path has no test hook.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnreg import data
from bnreg.data import DataFileError, DatasetUnavailableError, Split, sources

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# The MTIME Debian's dataset-fashion-mnist files carry (its package date, 2020-06-05).
DEBIAN_MTIME = 1591348973
TINY_TRAIN, TINY_TEST = 20, 10  # two and one example per class


# --------------------------------------------------------------------------------------------
# Tiny raw files
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialises an array as IDX: magic 0x0000TTNN, big-endian uint32 sizes, big-endian data."""
    type_codes = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, type_codes[big_endian.dtype], array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + big_endian.tobytes()


def gzip_like_upstream(payload: bytes, original_name: str, mtime: int) -> bytes:
    """A gzip file with FLG.FNAME and MTIME set, as upstream's ``gzip file`` produces."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=original_name, mode="wb", fileobj=buffer, mtime=mtime) as file:
        file.write(payload)
    return buffer.getvalue()


def strip_like_debian(upstream: bytes) -> bytes:
    """Debian's normalisation: FLG = 0, FNAME removed, MTIME = package date; payload unchanged."""
    assert upstream[3] == 0x08, "expected an FNAME-only header"
    name_end = upstream.index(b"\x00", 10)
    return (
        upstream[:3]
        + b"\x00"
        + struct.pack("<I", DEBIAN_MTIME)
        + upstream[8:10]
        + (upstream[name_end + 1 :])
    )


def tiny_fashion_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, num in (("train", TINY_TRAIN), ("test", TINY_TEST)):
        images = rng.integers(0, 256, size=(num, 28, 28), dtype=np.uint8)
        labels = (np.arange(num) % 10).astype(np.uint8)
        arrays[split] = (images, labels)
    return arrays


def upstream_files(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bytes]:
    """The tiny set as upstream-style .gz files, keyed by their registered names."""
    files = {}
    headers = data.UPSTREAM_GZIP_HEADERS["fashion_mnist"]
    for split, (images_name, labels_name) in {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }.items():
        images, labels = arrays[split]
        for filename, array in ((images_name, images), (labels_name, labels)):
            header = headers[filename]
            files[filename] = gzip_like_upstream(
                idx_bytes(array), header.original_name, header.mtime
            )
    return files


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for filename, content in files.items():
        (directory / filename).write_bytes(content)
    return directory


@pytest.fixture(scope="module")
def tiny_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return tiny_fashion_arrays()


@pytest.fixture(scope="module")
def tiny_upstream(tiny_arrays) -> dict[str, bytes]:
    return upstream_files(tiny_arrays)


@pytest.fixture
def tiny_fashion_mnist(tmp_path, monkeypatch, tiny_upstream) -> Path:
    """A manual dir with tiny Debian-style Fashion-MNIST files, registered with tfds.

    Registers the upstream-style tiny files' sha256/size (as tfds's url_checksums do for the
    real ones) and the tiny example counts (which tfds's MNIST builder hard-codes).
    """
    from tensorflow_datasets.core.download import checksums
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    registered = {
        url: checksums.UrlInfo(
            size=len(tiny_upstream[info.filename]),
            checksum=hashlib.sha256(tiny_upstream[info.filename]).hexdigest(),
            filename=info.filename,
        )
        for url, info in tfds_mnist.FashionMNIST.url_infos.items()
    }
    monkeypatch.setattr(tfds_mnist.FashionMNIST, "url_infos", registered)
    monkeypatch.setattr(tfds_mnist, "_TRAIN_EXAMPLES", TINY_TRAIN)
    monkeypatch.setattr(tfds_mnist, "_TEST_EXAMPLES", TINY_TEST)
    stripped = {name: strip_like_debian(content) for name, content in tiny_upstream.items()}
    return write_files(tmp_path / "manual", stripped)


def example_keys(images: np.ndarray, labels: np.ndarray) -> list[tuple[int, bytes]]:
    """Order-free identity of a split: sorted (label, pixel bytes) pairs (tfds reorders)."""
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8).reshape(len(labels), -1)
    return sorted((int(label), row.tobytes()) for label, row in zip(labels, pixels, strict=True))


# --------------------------------------------------------------------------------------------
# IDX reader and gzip headers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", ["u1", ">i4", ">f4"])
def test_read_idx_round_trips_values_shape_and_byte_order(tmp_path, compressed, dtype):
    offset = 0 if dtype == "u1" else -50  # signed types get negative values too
    array = (np.arange(24) * 7 + offset).reshape(2, 3, 4).astype(dtype)
    payload = idx_bytes(array)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_restore_gzip_header_inverts_debian_stripping(tiny_upstream):
    upstream = tiny_upstream["t10k-labels-idx1-ubyte.gz"]
    header = data.UPSTREAM_GZIP_HEADERS["fashion_mnist"]["t10k-labels-idx1-ubyte.gz"]
    restored = data.restore_gzip_header(
        strip_like_debian(upstream), original_name=header.original_name, mtime=header.mtime
    )
    assert restored == upstream


def test_restore_gzip_header_rejects_a_header_that_already_has_a_name(tiny_upstream):
    with pytest.raises(ValueError, match="optional fields"):
        data.restore_gzip_header(
            tiny_upstream["t10k-labels-idx1-ubyte.gz"], original_name="x", mtime=0
        )


@pytest.mark.skipif(
    not DEBIAN_FASHION_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist "
    "is not installed (apt-get install dataset-fashion-mnist)",
)
@pytest.mark.parametrize("filename", ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_restored_debian_file_has_tfds_registered_sha256(filename):
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    registered = {i.filename: i for i in tfds_mnist.FashionMNIST.url_infos.values()}[filename]
    header = data.UPSTREAM_GZIP_HEADERS["fashion_mnist"][filename]
    restored = data.restore_gzip_header(
        (DEBIAN_FASHION_DIR / filename).read_bytes(),
        original_name=header.original_name,
        mtime=header.mtime,
    )
    assert (hashlib.sha256(restored).hexdigest(), len(restored)) == (
        registered.checksum,
        registered.size,
    )


def _truncate_gzip(files):
    name = "train-images-idx3-ubyte.gz"
    return name, {**files, name: files[name][: len(files[name]) // 2]}


def _truncate_payload(files):
    name = "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(files[name])
    return name, {**files, name: gzip.compress(payload[: -28 * 28])}


def _wrong_magic(files):
    name = "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(files[name]))
    payload[2] = 0x07
    return name, {**files, name: gzip.compress(bytes(payload))}


def _wrong_count(files):
    name = "train-labels-idx1-ubyte.gz"
    labels = np.arange(TINY_TRAIN - 1, dtype=np.uint8) % 10
    return name, {**files, name: gzip.compress(idx_bytes(labels))}


def _label_out_of_range(files):
    name = "t10k-labels-idx1-ubyte.gz"
    labels = np.arange(TINY_TEST, dtype=np.uint8)
    labels[3] = 10
    return name, {**files, name: gzip.compress(idx_bytes(labels))}


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (_truncate_gzip, "gzip"),
        (_truncate_payload, "truncated"),
        (_wrong_magic, "magic number"),
        (_wrong_count, "wrong count"),
        (_label_out_of_range, "out of range"),
    ],
    ids=["truncated-gzip", "truncated-payload", "wrong-magic", "wrong-count", "label-range"],
)
def test_bad_raw_file_raises_naming_the_file_and_leaves_nothing(
    tmp_path, tiny_upstream, corrupt, problem
):
    bad_name, files = corrupt(tiny_upstream)
    manual = write_files(tmp_path / "manual", files)
    data_dir = tmp_path / "data"
    with pytest.raises(DataFileError, match=problem) as caught:
        data.load_dataset("fashion_mnist", data_dir=data_dir, manual_dir=manual, download=False)
    assert bad_name in str(caught.value)
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


# --------------------------------------------------------------------------------------------
# load_dataset: raw files, tfds, cache, errors
# --------------------------------------------------------------------------------------------


def test_tiny_debian_style_files_load_through_tfds_with_their_exact_content(
    tmp_path, tiny_fashion_mnist, tiny_arrays
):
    dataset = data.load_dataset(
        "fashion_mnist", data_dir=tmp_path / "data", manual_dir=tiny_fashion_mnist, download=False
    )
    for split, (images, labels) in tiny_arrays.items():
        loaded = getattr(dataset, split)
        assert loaded.images.shape == (len(labels), 28, 28, 1)
        assert (loaded.images.dtype, loaded.labels.dtype) == (np.float32, np.int32)
        assert example_keys(loaded.images, loaded.labels) == example_keys(images / 255.0, labels)
    assert (dataset.num_classes, dataset.image_shape) == (10, (28, 28, 1))
    assert "upstream gzip headers restored" in dataset.source
    assert str(tiny_fashion_mnist) in dataset.source


def test_second_load_comes_from_cache_equal_and_faster(tmp_path, tiny_fashion_mnist):
    kwargs = dict(data_dir=tmp_path / "data", manual_dir=tiny_fashion_mnist, download=False)
    start = time.perf_counter()
    first = data.load_dataset("fashion_mnist", **kwargs)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = data.load_dataset("fashion_mnist", **kwargs)
    second_s = time.perf_counter() - start
    assert "decoded arrays cached in" in second.source
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(second, split).images, getattr(first, split).images)
        np.testing.assert_array_equal(getattr(second, split).labels, getattr(first, split).labels)
    assert second_s < first_s


def test_concurrent_first_loads_prepare_once_and_agree(tmp_path, tiny_fashion_mnist, monkeypatch):
    import threading

    prepare, calls = sources._prepare, []

    def counted_prepare(*args, **kwargs):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # a slow preparation: the other thread arrives meanwhile
        return prepare(*args, **kwargs)

    monkeypatch.setattr(sources, "_prepare", counted_prepare)  # _load_tfds looks it up there
    kwargs = dict(data_dir=tmp_path / "data", manual_dir=tiny_fashion_mnist, download=False)
    loaded = {}
    threads = [
        threading.Thread(
            target=lambda i=i: loaded.__setitem__(i, data.load_dataset("fashion_mnist", **kwargs))
        )
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted("decoded arrays cached in" in d.source for d in loaded.values()) == [False, True]
    for split in ("train", "test"):
        first, second = (getattr(loaded[i], split) for i in range(2))
        np.testing.assert_array_equal(first.images, second.images)
        np.testing.assert_array_equal(first.labels, second.labels)


def test_failed_cache_write_warns_and_leaves_no_partial_file(
    tmp_path, tiny_fashion_mnist, monkeypatch
):
    def savez_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    data_dir = tmp_path / "data"
    with pytest.warns(UserWarning, match="array cache"):
        dataset = data.load_dataset(
            "fashion_mnist", data_dir=data_dir, manual_dir=tiny_fashion_mnist, download=False
        )
    assert len(dataset.train.labels) == TINY_TRAIN
    leftovers = [p.name for p in (data_dir / "fashion_mnist").iterdir() if p.is_file()]
    assert leftovers == []


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(path):
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x10  # inside the image arrays, past every header
    path.write_bytes(bytes(content))


def overwrite(path):
    path.write_bytes(b"not an npz archive")


@pytest.mark.parametrize("damage", [truncate, flip_a_bit, overwrite])
def test_a_corrupt_cache_is_said_and_rebuilt_from_the_source(tmp_path, tiny_fashion_mnist, damage):
    kwargs = dict(data_dir=tmp_path / "data", manual_dir=tiny_fashion_mnist, download=False)
    first = data.load_dataset("fashion_mnist", **kwargs)
    (cache,) = (tmp_path / "data" / "fashion_mnist").glob("*.bnreg-arrays.npz")
    damage(cache)
    with pytest.warns(UserWarning, match=f"{re.escape(str(cache))}.*rebuilding it from the "
                                         "source"):
        rebuilt = data.load_dataset("fashion_mnist", **kwargs)
    assert "decoded arrays cached in" not in rebuilt.source
    np.testing.assert_array_equal(rebuilt.train.images, first.train.images)
    again = data.load_dataset("fashion_mnist", **kwargs)  # the rebuilt cache is whole
    assert "decoded arrays cached in" in again.source


def test_mnist_prepared_in_tfds_data_dir_loads_as_unit_range_float_images(tmp_path):
    import tensorflow_datasets as tfds

    metadata_dir = tmp_path / "metadata"
    builder = tfds.builder("mnist", data_dir=metadata_dir)
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)  # what a prepared data dir holds
    with tfds.testing.mock_data(num_examples=6, data_dir=str(metadata_dir)):
        dataset = data.load_dataset("mnist", data_dir=tmp_path / "data", download=False)
    for split in (dataset.train, dataset.test):
        assert split.images.shape == (6, 28, 28, 1)
        assert (split.images.dtype, split.labels.dtype) == (np.float32, np.int32)
        assert 0.0 <= split.images.min() <= split.images.max() <= 1.0
        assert 0 <= split.labels.min() <= split.labels.max() < 10
    assert (dataset.num_classes, dataset.image_shape) == (10, (28, 28, 1))
    assert "prepared in" in dataset.source


def _no_network(*args, **kwargs):
    raise OSError("Network is unreachable")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_offline_without_data_fails_fast_listing_each_source_tried(tmp_path, monkeypatch, name):
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(sources, "SYSTEM_RAW_DIRS", {})  # no operating-system package either
    data_dir, manual_dir = tmp_path / "data", tmp_path / "empty"
    manual_dir.mkdir()
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as caught:
        data.load_dataset(name, data_dir=data_dir, manual_dir=manual_dir, download=True)
    assert time.perf_counter() - start < 10.0
    message = str(caught.value)
    assert len(caught.value.attempts) == 3
    for tried in (str(data_dir), f"raw files in {manual_dir}: missing", "download: skipped"):
        assert tried in message
    assert "manual_dir=" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion_mnist")


def test_a_wrong_manual_dir_does_not_hide_the_installed_copy(tmp_path, monkeypatch,
                                                           tiny_fashion_mnist):
    monkeypatch.setattr(sources, "SYSTEM_RAW_DIRS", {"fashion_mnist": (str(tiny_fashion_mnist),)})
    dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path / "data",
                                manual_dir=tmp_path / "typo", download=False)
    assert str(tiny_fashion_mnist) in dataset.source


def test_the_debian_package_is_suggested_only_where_it_is_not_installed(tmp_path, monkeypatch):
    installed = tmp_path / "installed"
    installed.mkdir()  # present, but without the files
    monkeypatch.setattr(sources, "SYSTEM_RAW_DIRS", {"fashion_mnist": (str(installed),)})
    with pytest.raises(DatasetUnavailableError) as caught:
        data.load_dataset("fashion_mnist", data_dir=tmp_path / "data",
                          manual_dir=tmp_path / "none", download=False)
    assert "apt-get install" not in str(caught.value)
    assert f"raw files in {installed}: missing" in str(caught.value)


def test_download_false_reports_that_download_was_not_attempted(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"download=False"):
        data.load_dataset(
            "mnist", data_dir=tmp_path / "data", manual_dir=tmp_path / "none", download=False
        )


def test_unknown_dataset_name_raises_value_error_listing_names():
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load_dataset("imagenet")


def test_digits_loads_1497_300_in_unit_range_with_10_classes():
    dataset = data.load_dataset("digits")
    assert dataset.train.images.shape == (1497, 8, 8, 1)
    assert dataset.test.images.shape == (300, 8, 8, 1)
    assert dataset.train.images.dtype == np.float32 and dataset.test.labels.dtype == np.int32
    assert dataset.train.images.min() == 0.0 and dataset.train.images.max() == 1.0
    assert dataset.num_classes == 10 and set(np.unique(dataset.test.labels)) == set(range(10))


@pytest.mark.slow
def test_import_and_digits_never_load_tensorflow():
    script = (
        "import sys, bnreg.data as d; d.load_dataset('digits'); print('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "False"


def test_digits_test_split_is_stratified_and_deterministic():
    first, second = data.load_dataset("digits"), data.load_dataset("digits")
    np.testing.assert_array_equal(first.test.images, second.test.images)
    counts = np.bincount(first.test.labels, minlength=10)
    totals = counts + np.bincount(first.train.labels, minlength=10)
    assert np.all(np.abs(counts - totals * 300 / totals.sum()) < 1)


@pytest.mark.integration
@pytest.mark.skipif(
    not DEBIAN_FASHION_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist "
    "is not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian_files(tmp_path):
    start = time.perf_counter()
    dataset = data.load_dataset("fashion_mnist", data_dir=tmp_path, download=False)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = data.load_dataset("fashion_mnist", data_dir=tmp_path, download=False)
    cached_s = time.perf_counter() - start
    print(f"Fashion-MNIST first prepare {prepare_s:.1f} s, cached load {cached_s:.2f} s")
    assert str(DEBIAN_FASHION_DIR) in dataset.source
    assert len(dataset.train.labels) == 60000 and len(dataset.test.labels) == 10000
    assert np.all(np.bincount(dataset.train.labels, minlength=10) == 6000)
    assert np.all(np.bincount(dataset.test.labels, minlength=10) == 1000)
    assert dataset.train.images.min() == 0.0 and dataset.train.images.max() == 1.0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = data.read_idx(DEBIAN_FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = data.read_idx(DEBIAN_FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        loaded = getattr(dataset, split)
        assert example_keys(loaded.images, loaded.labels) == example_keys(images / 255.0, labels)
    np.testing.assert_array_equal(cached.train.images, dataset.train.images)
    assert cached_s < 2.0


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def imbalanced_split() -> Split:
    """100 examples, classes 0/1/2 with 50/30/20; image i holds the value i (its identity)."""
    labels = np.repeat(np.arange(3, dtype=np.int32), [50, 30, 20])
    images = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1)
    return Split(images=images, labels=labels)


def test_flatten_keeps_examples_and_row_major_order():
    images = np.arange(2 * 3 * 2 * 1, dtype=np.float32).reshape(2, 3, 2, 1)
    np.testing.assert_array_equal(data.flatten(images), np.arange(12).reshape(2, 6))


def test_average_pool_is_the_mean_of_each_block():
    rng = np.random.default_rng(0)
    images = rng.random((3, 6, 4, 2)).astype(np.float32)
    pooled = data.average_pool(images, 2)
    assert pooled.shape == (3, 3, 2, 2)
    np.testing.assert_allclose(pooled[1, 2, 1, 0], images[1, 4:6, 2:4, 0].mean(), rtol=1e-6)
    np.testing.assert_array_equal(data.average_pool(images, 1), images)


def test_average_pool_refuses_blocks_that_do_not_tile_the_image():
    with pytest.raises(ValueError, match="do not split into 4×4 blocks"):
        data.average_pool(np.zeros((1, 6, 6, 1)), 4)


def test_the_run_data_are_pooled_before_the_model_sees_them():
    from conftest import tiny_config

    from bnreg.engine.run_data import load_run_data

    plain = load_run_data(tiny_config())
    pooled = load_run_data(tiny_config(image_pool=2))
    assert plain.image_shape == (8, 8, 1) and pooled.image_shape == (4, 4, 1)
    np.testing.assert_allclose(pooled.evaluation.images,
                               data.average_pool(plain.evaluation.images, 2), rtol=1e-6)


def test_binarize_is_strictly_greater_than_threshold():
    images = np.array([0.0, 0.4999, 0.5, 0.5001, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(data.binarize(images), [0, 0, 0, 1, 1])
    assert data.binarize(images).dtype == np.float32


def test_standardize_global_uses_train_statistics_for_every_array():
    rng = np.random.default_rng(0)
    train, test = rng.uniform(size=(50, 4, 4, 1)), rng.uniform(size=(7, 4, 4, 1))
    train_z, test_z = data.standardize(train, test)
    np.testing.assert_allclose([train_z.mean(), train_z.std()], [0.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(test_z, (test - train.mean()) / train.std(), rtol=1e-5)


def test_standardize_per_pixel_centres_each_pixel_and_keeps_constant_pixels_finite():
    rng = np.random.default_rng(1)
    train = rng.uniform(size=(50, 3, 3, 1))
    train[:, 0, 0, 0] = 0.0  # an always-black border pixel
    (train_z,) = data.standardize(train, per_pixel=True)
    np.testing.assert_allclose(train_z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_z.std(axis=0)[1:, 1:], 1.0, atol=1e-5)
    assert np.all(train_z[:, 0, 0, 0] == 0.0)


def test_standardize_rejects_mismatched_example_shapes():
    with pytest.raises(ValueError, match="per-example shape"):
        data.standardize(np.zeros((3, 2, 2, 1)), np.zeros((3, 2, 3, 1)))


@pytest.mark.parametrize(
    ("num", "expected"), [(10, [5, 3, 2]), (7, [4, 2, 1]), (100, [50, 30, 20])]
)
def test_stratified_subset_keeps_class_proportions(num, expected):
    subset = data.stratified_subset(imbalanced_split(), num, seed=0)
    np.testing.assert_array_equal(np.bincount(subset.labels, minlength=3), expected)


def test_stratified_subset_examples_come_from_the_split_unchanged():
    split = imbalanced_split()
    subset = data.stratified_subset(split, 10, seed=3)
    identities = subset.images.reshape(-1).astype(int)
    assert len(set(identities)) == 10
    np.testing.assert_array_equal(split.labels[identities], subset.labels)


def test_stratified_subset_is_deterministic_per_seed():
    split = imbalanced_split()
    same = [data.stratified_subset(split, 10, seed=5).images for _ in range(2)]
    other = data.stratified_subset(split, 10, seed=6).images
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], other)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_indices_of_one_seed_are_nested_while_allotments_grow(seed):
    labels = imbalanced_split().labels
    sizes = (10, 20, 50, 70, 100)
    drawn = [data.stratified_indices(labels, num, seed) for num in sizes]
    allotments = np.stack([np.bincount(labels[indices], minlength=3) for indices in drawn])
    assert np.all(np.diff(allotments, axis=0) >= 0)  # the case the nesting property covers
    for num, smaller, larger in zip(sizes, drawn, drawn[1:], strict=False):
        assert len(smaller) == num and np.all(np.diff(smaller) > 0)
        assert set(smaller.tolist()) <= set(larger.tolist())


@pytest.mark.parametrize("num", [0, 101])
def test_stratified_subset_rejects_sizes_outside_1_to_n(num):
    with pytest.raises(ValueError, match="num_examples"):
        data.stratified_subset(imbalanced_split(), num, seed=0)


def test_validation_split_is_disjoint_stratified_and_covers_the_train_split():
    train, validation = data.train_validation_split(imbalanced_split(), 20, seed=0)
    train_ids = set(train.images.reshape(-1).astype(int))
    validation_ids = set(validation.images.reshape(-1).astype(int))
    assert not train_ids & validation_ids
    assert train_ids | validation_ids == set(range(100))
    np.testing.assert_array_equal(np.bincount(validation.labels), [10, 6, 4])


# --------------------------------------------------------------------------------------------
# On-device batching
# --------------------------------------------------------------------------------------------

NUM, BATCH = 12, 4
IMAGES = jnp.arange(NUM, dtype=jnp.float32).reshape(NUM, 1) * 10.0
LABELS = jnp.arange(NUM, dtype=jnp.int32)
KEYS = {"typed": jax.random.key(0), "legacy": jax.random.PRNGKey(0)}
batch_at_step_jit = jax.jit(data.batch_at_step, static_argnames="batch_size")


def epoch_labels(key, epoch, num=NUM):
    steps = num // BATCH
    batches = [
        batch_at_step_jit(key, IMAGES[:num], LABELS[:num], step, batch_size=BATCH)[1]
        for step in range(epoch * steps, (epoch + 1) * steps)
    ]
    return np.concatenate(batches)


@pytest.mark.parametrize("key_kind", KEYS)
def test_each_example_appears_exactly_once_per_epoch_when_batch_divides_n(key_kind):
    for epoch in range(2):
        np.testing.assert_array_equal(np.sort(epoch_labels(KEYS[key_kind], epoch)), np.arange(NUM))


def test_drop_remainder_uses_each_example_at_most_once_and_varies_the_left_out():
    epochs = [epoch_labels(KEYS["typed"], epoch, num=10) for epoch in range(4)]
    assert all(len(labels) == 8 and len(set(labels)) == 8 for labels in epochs)
    left_out = {frozenset(set(range(10)) - set(labels.tolist())) for labels in epochs}
    assert len(left_out) > 1


def test_order_differs_between_epochs():
    assert not np.array_equal(epoch_labels(KEYS["typed"], 0), epoch_labels(KEYS["typed"], 1))


def test_batches_pair_each_image_with_its_label():
    images, labels = batch_at_step_jit(KEYS["typed"], IMAGES, LABELS, 5, batch_size=BATCH)
    np.testing.assert_array_equal(images[:, 0], labels * 10.0)


def test_jitted_batch_equals_eager_and_works_inside_scan():
    key = KEYS["typed"]

    def body(carry, step):
        return carry, data.batch_at_step(key, IMAGES, LABELS, step, batch_size=BATCH)[1]

    _, scanned = jax.jit(lambda: jax.lax.scan(body, 0, jnp.arange(6)))()
    eager = [
        data.batch_at_step(key, IMAGES, LABELS, step, batch_size=BATCH)[1] for step in range(6)
    ]
    np.testing.assert_array_equal(scanned, np.stack(eager))


def test_batch_from_permutation_slices_the_permutation_at_the_position():
    permutation = data.epoch_permutation(KEYS["typed"], 3, NUM)
    _, labels = data.batch_from_permutation(IMAGES, LABELS, permutation, 2, BATCH)
    np.testing.assert_array_equal(labels, permutation[2 * BATCH : 3 * BATCH])


@pytest.mark.parametrize("num, num_steps", [(NUM, 7), (10, 9)])  # across epochs; remainder
def test_batch_indices_are_the_batches_of_batch_at_step(num, num_steps):
    indices = data.batch_indices(KEYS["typed"], num, num_steps, batch_size=BATCH)
    expected = [
        batch_at_step_jit(KEYS["typed"], IMAGES[:num], LABELS[:num], step, batch_size=BATCH)[1]
        for step in range(num_steps)
    ]
    np.testing.assert_array_equal(indices, np.stack(expected))


def test_batch_indices_reject_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="batch_size"):
        data.batch_indices(KEYS["typed"], 3, 2, batch_size=4)


def test_epoch_permutation_is_a_permutation_fixed_by_key_and_epoch():
    first = data.epoch_permutation(KEYS["legacy"], 7, NUM)
    np.testing.assert_array_equal(np.sort(first), np.arange(NUM))
    np.testing.assert_array_equal(first, data.epoch_permutation(KEYS["legacy"], 7, NUM))


def test_epoch_permutations_are_uniform_over_all_orders():
    """Each of the 24 orders of 4 examples is equally likely: 24,000 epochs, chi-square."""
    from scipy import stats

    epochs = jnp.arange(24_000)
    drawn = jax.jit(jax.vmap(lambda e: data.epoch_permutation(KEYS["typed"], e, 4)))(epochs)
    codes = np.asarray(drawn) @ np.array([64, 16, 4, 1])  # distinct per order
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 24
    assert stats.chisquare(counts).pvalue > 1e-4


def test_epoch_permutation_differs_between_epochs():
    first, second = (data.epoch_permutation(KEYS["typed"], e, 1000) for e in (0, 1))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_batch_size_larger_than_n_raises(jitted):
    function = batch_at_step_jit if jitted else data.batch_at_step
    with pytest.raises(ValueError, match="batch_size"):
        function(KEYS["typed"], IMAGES, LABELS, 0, batch_size=NUM + 1)


def test_concrete_position_past_the_epoch_raises():
    permutation = data.epoch_permutation(KEYS["typed"], 0, NUM)
    with pytest.raises(ValueError, match="position"):
        data.batch_from_permutation(IMAGES, LABELS, permutation, NUM // BATCH, BATCH)


def test_mismatched_images_and_labels_raise():
    with pytest.raises(ValueError, match="leading"):
        data.batch_at_step(KEYS["typed"], IMAGES, LABELS[:-1], 0, batch_size=BATCH)
