"""Where the data comes from: :func:`load_dataset` and the offline-first resolution behind it.

``digits`` comes from scikit-learn's bundled set; ``mnist``, ``fashion_mnist`` and ``cifar10``
from tfds, resolved from (in order) the decoded-array cache, data tfds already prepared, local
raw files staged for tfds (:data:`SYSTEM_RAW_DIRS`, validated and header-restored by
:mod:`bnreg.data.files`), and last a download, after a quick reachability check. The order and
the cache are documented in :func:`load_dataset`. TensorFlow and tfds are imported inside the
functions that need them.

The module is longer than the others (about 500 lines) for a reason: the resolution order, the
cache and the one error that lists every source tried are one unit, which split over modules
would have to share their private state.

Longer than the project's ~450 lines: the offline resolution (cache, prepared data, staged raw
files, download) is one chain whose steps share the builder and the attempts they report.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnreg.data.files import (
    UPSTREAM_GZIP_HEADERS,
    DataFileError,
    has_bare_gzip_header,
    restore_gzip_header,
    validate_idx_split,
)
from bnreg.data.preprocess import train_validation_split
from bnreg.data.types import Dataset, Split

__all__ = [
    "DATASET_NAMES",
    "DIGITS_NUM_TEST",
    "DIGITS_SPLIT_SEED",
    "SYSTEM_RAW_DIRS",
    "TFDS_DATASET_NAMES",
    "DatasetUnavailableError",
    "load_dataset",
]

TFDS_DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10")
DATASET_NAMES = (*TFDS_DATASET_NAMES, "digits")

# scikit-learn's digits: 1797 examples; a fixed, class-stratified 300 of them form the test split.
DIGITS_NUM_TEST = 300
DIGITS_SPLIT_SEED = 0
_DIGITS_MAX_VALUE = 16.0

# Where operating-system packages put the upstream raw files (tried when `manual_dir` is None).
# Debian ships Fashion-MNIST as `dataset-fashion-mnist`; it has no MNIST or CIFAR package, the
# other entries are conventional places an administrator may have used.
SYSTEM_RAW_DIRS: Mapping[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "cifar10": ("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
}

# The IDX files of the MNIST family (same names for mnist and fashion_mnist), per split.
_IDX_DATASETS = ("mnist", "fashion_mnist")
_IDX_SPLIT_FILES: Mapping[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_CACHE_SUFFIX = ".bnreg-arrays.npz"
_CACHE_FORMAT = 1
_DECODE_BATCH = 4096
_REACHABILITY_TIMEOUT_S = 3.0
_SPLITS = ("train", "test")


class DatasetUnavailableError(RuntimeError):
    """No source could provide the dataset; the message lists what was tried and the fixes.

    Attributes:
      name: the dataset name.
      attempts: one line per source tried, in order, with why it failed.
    """

    def __init__(self, name: str, attempts: Sequence[str], fixes: Sequence[str]) -> None:
        self.name = name
        self.attempts = tuple(attempts)
        tried = "\n".join(f"  {i}. {attempt}" for i, attempt in enumerate(self.attempts, 1))
        how = "\n".join(f"  - {fix}" for fix in fixes)
        super().__init__(
            f"Dataset {name!r} is not available. Tried, in order:\n{tried}\n"
            f"Fix it with any one of:\n{how}"
        )


# --------------------------------------------------------------------------------------------
# Raw files staged for tfds
# --------------------------------------------------------------------------------------------


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stage_raw_files(
    name: str, builder: Any, search_dir: Path, manual_dir: Path
) -> tuple[bool, str]:
    """Puts the upstream files found in ``search_dir`` into ``manual_dir`` for tfds.

    tfds's download manager takes ``manual_dir / <registered file name>`` instead of
    downloading, and checks its sha256 and size against the checksums registered for the
    builder (``builder.url_infos``, read from tfds's url_checksums). We check the same registered
    values first — so a mismatch is reported here, with the file named, rather than deep inside
    tfds — and, for files whose gzip header an OS package normalised, stage a copy with the
    upstream header restored (see :data:`UPSTREAM_GZIP_HEADERS`); tfds then re-verifies it.

    Returns:
      ``(True, description)`` when every registered file was staged, else ``(False, reason)``.
    """
    registered = {info.filename: info for info in (builder.url_infos or {}).values()}
    if not registered or None in registered:
        return False, f"raw files: tfds registers no file names for {name}"
    if not search_dir.is_dir():
        return False, f"raw files in {search_dir}: no such directory"
    missing = sorted(f for f in registered if not (search_dir / f).is_file())
    if missing:
        return False, f"raw files in {search_dir}: missing {', '.join(missing)}"
    if name in _IDX_DATASETS:
        features = builder.info.features
        for images_file, labels_file in _IDX_SPLIT_FILES.values():
            validate_idx_split(
                search_dir / images_file,
                search_dir / labels_file,
                image_hw=tuple(features["image"].shape[:2]),
                num_classes=features["label"].num_classes,
            )
    manual_dir.mkdir(parents=True, exist_ok=True)
    restored, mismatched = [], []
    for filename, info in sorted(registered.items()):
        source = search_dir / filename
        checksum = _sha256_of_file(source)
        if checksum == info.checksum and source.stat().st_size == info.size:
            _link_or_copy(source, manual_dir / filename)
            continue
        header = UPSTREAM_GZIP_HEADERS.get(name, {}).get(filename)
        data = source.read_bytes() if header else b""
        if header and has_bare_gzip_header(data):
            candidate = restore_gzip_header(
                data, original_name=header.original_name, mtime=header.mtime
            )
            if hashlib.sha256(candidate).hexdigest() == info.checksum:
                (manual_dir / filename).write_bytes(candidate)
                restored.append(filename)
                continue
        mismatched.append(f"{filename} (sha256 {checksum[:12]}…, {source.stat().st_size} bytes)")
    if mismatched:
        return False, (
            f"raw files in {search_dir}: not the upstream files tfds registers "
            f"(tensorflow_datasets/url_checksums/{name}.txt): {', '.join(mismatched)}"
        )
    note = f"local raw files in {search_dir}"
    if restored:
        note += f" (upstream gzip headers restored for {', '.join(restored)})"
    return True, note


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        destination.symlink_to(source.resolve())
    except OSError:  # file systems without symlinks
        shutil.copyfile(source, destination)


# --------------------------------------------------------------------------------------------
# tfds resolution, cache, reachability
# --------------------------------------------------------------------------------------------


def _import_tfds() -> Any:
    """Imports tfds (cheap: it imports TensorFlow itself only when it first needs it)."""
    import tensorflow_datasets as tfds  # kept out of `import bnreg.data`

    return tfds


def _configure_tensorflow() -> None:
    """Keeps TensorFlow off the accelerators: decoding needs none, and JAX needs their memory."""
    import tensorflow as tf  # loaded only to read or prepare

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF's devices are already initialised; nothing left to configure
        pass


def _cache_path(data_root: Path, name: str, version: str) -> Path:
    # A sibling of tfds's `<name>/<version>/` directory, never inside it: tfds treats an existing
    # version directory as "already prepared".
    return data_root / name / f"{version}{_CACHE_SUFFIX}"


def _cached(path: Path, num_classes: int, *, rebuild: bool) -> tuple[dict, str] | None:
    """The cache's arrays and source (``None`` when there is none, or it is corrupt). With
    ``rebuild`` (under the preparation lock) a corrupt cache — cut by a full disk or a kill,
    a bad copy — is said, deleted and left to be rebuilt from the source."""
    if not path.is_file():
        return None
    try:
        arrays, source = _read_cache(path, num_classes)
    except DataFileError as error:
        if rebuild:
            warnings.warn(f"{error}; rebuilding it from the source", stacklevel=4)
            try:
                path.unlink()
            except OSError as unlink_error:  # a read-only data dir: the rebuilt one is not kept
                warnings.warn(f"could not delete {path} ({unlink_error})", stacklevel=4)
        return None
    return arrays, f"{source}; decoded arrays cached in {path}"


def _read_cache(path: Path, num_classes: int) -> tuple[dict[str, np.ndarray], str]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as error:
        raise DataFileError(path, f"unreadable array cache ({error})") from error
    expected = {f"{split}_{kind}" for split in _SPLITS for kind in ("images", "labels")}
    if not expected <= arrays.keys() or "source" not in arrays:
        raise DataFileError(
            path, f"array cache lacks {sorted(expected - arrays.keys())}"
        )
    for split in _SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
            raise DataFileError(path, f"array cache has inconsistent {split} arrays")
        if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise DataFileError(
                path, f"array cache has {split} labels outside [0, {num_classes})"
            )
    return arrays, str(arrays["source"])


def _write_cache(path: Path, arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Writes the cache atomically; on failure warns and leaves no partial file behind."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as file:
            np.savez(file, **arrays, source=np.array(source), cache_format=_CACHE_FORMAT)
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(
            f"could not write the array cache {path} ({error}); the next load will "
            "decode the tfds data again",
            stacklevel=3,
        )
    finally:
        temporary.unlink(missing_ok=True)


def _read_prepared(builder: Any, tfds: Any) -> dict[str, np.ndarray]:
    _configure_tensorflow()
    arrays = {}
    for split in _SPLITS:
        dataset = builder.as_dataset(split=split, shuffle_files=False).batch(_DECODE_BATCH)
        batches = list(tfds.as_numpy(dataset))
        if not batches:
            raise DataFileError(builder.data_path, f"the prepared {split!r} split is empty")
        arrays[f"{split}_images"] = np.concatenate([b["image"] for b in batches])
        arrays[f"{split}_labels"] = np.concatenate([b["label"] for b in batches]).astype(np.int32)
    return arrays


def _probe(host: str, port: int, outcome: list[str]) -> None:
    try:
        socket.create_connection((host, port), timeout=_REACHABILITY_TIMEOUT_S).close()
        outcome.append("")
    except OSError as error:
        outcome.append(str(error) or type(error).__name__)


def _unreachable_reason(urls: Sequence[str]) -> str | None:
    """Returns why the download servers (or the proxy) cannot be reached; None if they can.

    A TCP connect per host, in a daemon thread so that a hanging DNS lookup is bounded too.
    This replaces tfds's own behaviour offline, ten HTTP retries with back-off per file.
    """
    proxies = urllib.request.getproxies()
    endpoints = set()
    for url in urls:
        parsed = urllib.parse.urlsplit(proxies.get(urllib.parse.urlsplit(url).scheme, url))
        endpoints.add(
            (parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))
        )
    for host, port in sorted(endpoints):
        outcome: list[str] = []
        probe = threading.Thread(target=_probe, args=(host, port, outcome), daemon=True)
        probe.start()
        probe.join(_REACHABILITY_TIMEOUT_S + 0.5)
        if not outcome or outcome[0]:
            reason = outcome[0] if outcome else f"no answer within {_REACHABILITY_TIMEOUT_S:g} s"
            return f"cannot reach {host}:{port} ({reason})"
    return None


def _fixes(name: str, builder: Any, data_root: Path) -> list[str]:
    registered = sorted(info.filename for info in (builder.url_infos or {}).values())
    fixes = []
    installed = any(Path(d).is_dir() for d in SYSTEM_RAW_DIRS.get(name, ()))
    if name == "fashion_mnist" and not installed:
        fixes.append(
            "install the raw files: `sudo apt-get install dataset-fashion-mnist` (Debian/"
            "Ubuntu; they land in /usr/share/datasets/fashion-mnist and are found there)"
        )
    fixes += [
        f"pass manual_dir=<a directory holding the upstream files {', '.join(registered)}>",
        f"copy a prepared tfds data dir from a machine with internet (it holds "
        f"{name}/{builder.version}/) to {data_root}, or pass data_dir= / set TFDS_DATA_DIR to it",
        "connect to the internet and call with download=True",
    ]
    return fixes


_PREPARING = threading.Lock()


def _load_tfds(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    manual_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    tfds = _import_tfds()
    from tensorflow_datasets.core import constants

    data_root = Path(data_dir if data_dir is not None else constants.get_default_data_dir())
    data_root = data_root.expanduser()
    builder = tfds.builder(name, data_dir=os.fspath(data_root))
    features = builder.info.features
    num_classes = int(features["label"].num_classes)
    image_shape = tuple(int(d) for d in features["image"].shape)
    cache = _cache_path(data_root, name, str(builder.version))

    # Threads of one process (a study's concurrent runs) prepare a dataset one at a time: the
    # first prepares it and writes the cache; the others, waiting, then read the cache, and
    # loads of an already cached dataset never wait for each other.
    found = _cached(cache, num_classes, rebuild=False)
    if found is None:
        with _PREPARING:
            # Read again under the lock: another thread may have just written it.
            found = _cached(cache, num_classes, rebuild=True)
            if found is None:
                source = _prepare(name, builder, tfds, data_root, manual_dir, download)
                arrays = _read_prepared(builder, tfds)
                _write_cache(cache, arrays, source)
                found = arrays, source
    arrays, source = found
    return Dataset(
        name=name,
        train=_to_split(arrays["train_images"], arrays["train_labels"]),
        test=_to_split(arrays["test_images"], arrays["test_labels"]),
        num_classes=num_classes,
        image_shape=image_shape,  # type: ignore[arg-type]
        source=source,
    )


def _prepare(
    name: str,
    builder: Any,
    tfds: Any,
    data_root: Path,
    manual_dir: str | os.PathLike[str] | None,
    download: bool,
) -> str:
    """Makes sure tfds has prepared ``name``; returns where the prepared data came from."""
    full_name = f"tfds {name}:{builder.version}"
    if builder.is_prepared():
        return f"{full_name} prepared in {builder.data_dir}"
    attempts = [f"prepared tfds data: none in {builder.data_dir}"]

    # The given manual_dir first, then where operating-system packages put the files: a wrong
    # manual_dir does not hide an installed copy.
    search_dirs = [] if manual_dir is None else [Path(manual_dir).expanduser()]
    search_dirs += [Path(d) for d in SYSTEM_RAW_DIRS.get(name, ()) if Path(d) not in search_dirs]
    for search_dir in search_dirs:
        with tempfile.TemporaryDirectory(prefix=f"bnreg-{name}-") as staging:
            staged, note = _stage_raw_files(name, builder, search_dir, Path(staging, "manual"))
            if staged:
                _configure_tensorflow()
                # Extracted copies go to the staging dir too, so nothing but the prepared
                # dataset is left in the data dir.
                builder.download_and_prepare(
                    download_dir=os.fspath(Path(staging, "downloads")),
                    download_config=tfds.download.DownloadConfig(
                        manual_dir=os.fspath(Path(staging, "manual")), try_download_gcs=False
                    ),
                )
                return f"{full_name} prepared in {builder.data_dir} from {note}"
        attempts.append(note)
    if not search_dirs:
        attempts.append(f"raw files: no manual_dir given and no known system location for {name}")

    if not download:
        attempts.append("download: not attempted (download=False)")
    elif (unreachable := _unreachable_reason(list(builder.url_infos or {}))) is not None:
        attempts.append(f"download: skipped, {unreachable}")
    else:
        _configure_tensorflow()
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        except Exception as error:  # any failure is reported with the other attempts
            attempts.append(f"download: failed ({type(error).__name__}: {error})")
            fixes = _fixes(name, builder, data_root)
            raise DatasetUnavailableError(name, attempts, fixes) from error
        return f"{full_name} downloaded and prepared in {builder.data_dir}"
    raise DatasetUnavailableError(name, attempts, _fixes(name, builder, data_root))


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    scaled = images.astype(np.float32)
    scaled *= np.float32(1.0 / 255.0)
    return Split(images=scaled, labels=np.asarray(labels, dtype=np.int32))


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # keeps sklearn out of import time

    bunch = load_digits()
    images = (bunch.images / _DIGITS_MAX_VALUE).astype(np.float32)[..., None]
    everything = Split(images=images, labels=bunch.target.astype(np.int32))
    train, test = train_validation_split(everything, DIGITS_NUM_TEST, seed=DIGITS_SPLIT_SEED)
    return Dataset(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        image_shape=(8, 8, 1),
        source=(
            f"scikit-learn load_digits (bundled 8x8 digits, {len(images)} examples, values 0..16 "
            f"scaled by 1/16); stratified test split of {DIGITS_NUM_TEST} with seed "
            f"{DIGITS_SPLIT_SEED}"
        ),
    )


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Dataset:
    """Loads a whole dataset into memory as arrays, preparing it offline when it can.

    For ``mnist``, ``fashion_mnist`` and ``cifar10`` (tensorflow-datasets) the first source that
    works is used:

    1. decoded arrays cached by an earlier load, ``<data_root>/<name>/<version>.bnreg-arrays.npz``
       (keyed by name and tfds version; delete it to re-decode);
    2. data tfds already prepared in ``<data_root>/<name>/<version>/``, where ``data_root`` is
       ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``;
    3. the upstream raw files in ``manual_dir`` — or, when it is None, in the known system
       locations :data:`SYSTEM_RAW_DIRS` (Debian's ``dataset-fashion-mnist``). They are
       validated (IDX headers, counts, label range), checked against the sha256 tfds registers,
       staged in a temporary manual dir — with the upstream gzip headers restored for files an
       OS package normalised (:data:`UPSTREAM_GZIP_HEADERS`) — and tfds prepares from there with
       its own checksum verification on;
    4. a tfds download, when ``download`` is true and a TCP connection to the download server
       (or the configured proxy) opens within 3 s. The quick check is what makes the offline
       failure take seconds rather than tfds's minutes of HTTP retries.

    Decoding tfds's records happens once; the arrays are then cached (uint8, uncompressed), so
    a later load of an MNIST-size dataset takes well under a second. A cache that cannot be
    written (read-only data dir) only costs a warning; a corrupt one (a cut or damaged file) is
    said in a warning, deleted and rebuilt from the source.

    ``digits`` is scikit-learn's bundled 8×8 set: pixel values 0..16 divided by 16, and a
    class-stratified test split of :data:`DIGITS_NUM_TEST` = 300 examples (seed
    :data:`DIGITS_SPLIT_SEED`), leaving 1497 for training. It reads no files and never imports
    TensorFlow; ``data_dir``, ``manual_dir`` and ``download`` are ignored.

    Args:
      name: one of :data:`DATASET_NAMES`.
      data_dir: tfds data directory (also where the array cache lives).
      manual_dir: directory with the upstream raw files, under their upstream names.
      download: whether tfds may download as the last resort.

    Returns:
      The :class:`Dataset`: splits as float32 images in [0, 1] of shape (N, H, W, C) and int32
      labels; ``source`` says where the arrays came from.

    Raises:
      ValueError: ``name`` is unknown.
      DataFileError: a raw file or the array cache is malformed (message names the file).
      DatasetUnavailableError: no source worked; the message lists each one tried and the fixes.
    """
    if name == "digits":
        return _load_digits()
    if name not in TFDS_DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return _load_tfds(name, data_dir, manual_dir, download)
